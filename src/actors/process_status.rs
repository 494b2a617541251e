//! ProcessStatus: records what Motr processes report, for Consul and the RC.
//!
//! Every process event becomes `processes/<fid>` = `{state, type, pid}` and a
//! `PROCESS-STATE-UPDATE` entry in `eq/` (for the RC, which tells every node through `bq/`);
//! every STOB I/O error becomes a `STOB_IOQ_ERROR` entry in `eq/`. Each record goes to
//! ConsulWriter with the message's `Ack`, so Motr's message is confirmed only once the record
//! is committed. A process's records replace each other while unsent (only its latest state
//! matters); STOB errors are never replaced. The HA states the events give are
//! HaBroadcaster's business: MeroLink tells it directly, without waiting for Consul.
use super::consul_writer::{ConsulWriter, WriteRecord};
use crate::messages::{ProcessEvent, StobIoEvent};
use crate::rc::envelope::{self, Envelope};
use crate::rc::queue::Queue;
use crate::rc::rules::ProcessUpdate;
use crate::view::SharedView;
use actix::prelude::*;

pub struct ProcessStatus {
    writer: Addr<ConsulWriter>,
    view: SharedView,
}

impl ProcessStatus {
    pub fn new(writer: Addr<ConsulWriter>, view: SharedView) -> Self {
        ProcessStatus { writer, view }
    }

    fn own_node(&self) -> String {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        v.identity
            .as_ref()
            .map(|i| i.node.clone())
            .unwrap_or_default()
    }
}

impl Actor for ProcessStatus {
    type Context = Context<Self>;
}

/// The `processes/<fid>` record of an event.
pub fn process_record(ev: &ProcessEvent) -> Vec<u8> {
    serde_json::json!({
        "state": ev.event.motr_name(),
        "type": ev.process_type.motr_name(),
        "pid": ev.pid,
    })
    .to_string()
    .into_bytes()
}

impl Handler<ProcessEvent> for ProcessStatus {
    type Result = ();
    fn handle(&mut self, ev: ProcessEvent, _: &mut Context<Self>) {
        log::info!(
            "ProcessStatus: {} {} (pid {})",
            ev.process,
            ev.event.motr_name(),
            ev.pid
        );
        let payload =
            ProcessUpdate::payload(ev.process, ev.event, ev.process_type, &self.own_node());
        self.writer.do_send(WriteRecord {
            queue: Queue::Eq,
            entry: Envelope::new(envelope::PROCESS_STATE_UPDATE, payload),
            key: Some((format!("processes/{}", ev.process), process_record(&ev))),
            latest: Some(format!("process/{}", ev.process)),
            acks: ev.ack.into_iter().collect(),
        });
    }
}

impl Handler<StobIoEvent> for ProcessStatus {
    type Result = ();
    fn handle(&mut self, ev: StobIoEvent, _: &mut Context<Self>) {
        // The STOB_IOQ fields (sdev, rc, opcode, ...) and the reporting process.
        let mut payload = serde_json::to_value(&ev.error).unwrap_or_else(|_| serde_json::json!({}));
        payload["process"] = serde_json::json!(ev.from_process);
        payload["node"] = serde_json::json!(self.own_node());
        log::info!(
            "ProcessStatus: drive I/O error rc {} on sdev {}: to the RC",
            ev.error.rc,
            ev.error.sdev
        );
        self.writer.do_send(WriteRecord {
            queue: Queue::Eq,
            entry: Envelope::new(envelope::STOB_IOQ_ERROR, payload),
            key: None,
            latest: None,
            acks: ev.ack.into_iter().collect(),
        });
    }
}
