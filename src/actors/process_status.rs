//! ProcessStatus: turns process events and Consul health into KV records and HA states.
//!
//! Every process event becomes `processes/<fid>` in KV (through ConsulWriter, so ordered per
//! process) and updates the HA state model; changes are coalesced for a few milliseconds and
//! broadcast through MeroLink (a process note followed by its services' notes). Health from a
//! watch delivery that reports a new failure is re-checked against current Consul health
//! before it is acted on; a reconciliation loop (a blocking query over all checks, at most
//! one per second) repairs deliveries Consul lost. Every process event and every STOB I/O
//! error is also published to the RC's event queue `eq/`; states other hax reported come back
//! through `bq/` as `RemoteStates` and are broadcast like local ones.
use super::consul_writer::WriterHandle;
use super::merolink::{MeroCmd, StateView};
use crate::consul::health::{from_checks, parse_payload, Check};
use crate::consul::Consul;
use crate::fid::Fid;
use crate::hamodel::HaModel;
use crate::messages::{HaStateUpdate, HealthSource, ProcessEvent, StobIoEvent};
use crate::motr::{HaState, Note};
use crate::rc::envelope::{self, Envelope};
use crate::rc::rules::ProcessUpdate;
use crate::rc::{Queue, QueueHandle, RemoteStates};
use crate::view::SharedView;
use actix::prelude::*;
use crossbeam_channel::Sender;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The model shared with MeroLink, which answers NVEC GET from it.
pub struct SharedModel {
    pub model: RwLock<HaModel>,
    pub view: SharedView,
    /// States the RC decided for objects other than processes and services (an sdev
    /// FAILED), as last broadcast; NVEC GET answers them.
    pub objects: RwLock<HashMap<Fid, HaState>>,
}

impl SharedModel {
    pub fn new(view: SharedView) -> SharedModel {
        SharedModel {
            model: RwLock::new(Default::default()),
            view,
            objects: RwLock::new(HashMap::new()),
        }
    }
}

impl StateView for SharedModel {
    fn answer(&self, fids: &[Fid]) -> Vec<Note> {
        let cfg = self
            .view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .config
            .clone();
        let mut notes = self
            .model
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .answer(fids, &cfg);
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        for n in notes.iter_mut() {
            if let Some(s) = objects.get(&n.fid) {
                n.state = *s;
            }
        }
        notes
    }
}

/// Connects ProcessStatus to MeroLink once MeroLink runs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachMero(pub Sender<MeroCmd>);

pub struct ProcessStatus {
    shared: Arc<SharedModel>,
    writer: WriterHandle,
    consul: Consul,
    mero: Option<Sender<MeroCmd>>,
    dirty: BTreeSet<Fid>,
    flush_scheduled: bool,
    coalesce: Duration,
    queue: Option<QueueHandle>,
    reconcile: bool,
    recheck: bool,
}

impl ProcessStatus {
    /// `reconcile`: run the reconciliation loop; `recheck`: re-check failures from watches.
    pub fn new(
        shared: Arc<SharedModel>,
        writer: WriterHandle,
        consul: Consul,
        reconcile: bool,
        recheck: bool,
    ) -> Self {
        ProcessStatus {
            shared,
            writer,
            consul,
            mero: None,
            dirty: BTreeSet::new(),
            flush_scheduled: false,
            coalesce: Duration::from_millis(5),
            queue: None,
            reconcile,
            recheck,
        }
    }

    /// Publishes process events and STOB I/O errors to the RC's event queue through `queue`.
    pub fn with_queue(mut self, queue: QueueHandle) -> Self {
        self.queue = Some(queue);
        self
    }

    fn publish(&self, entry: Envelope) {
        match &self.queue {
            Some(q) => q.publish(Queue::Eq, entry),
            None => log::warn!(
                "ProcessStatus: no event queue attached; {} not published",
                entry.message_type
            ),
        }
    }

    fn own_node(&self) -> String {
        let v = self.shared.view.read().unwrap_or_else(|e| e.into_inner());
        v.identity
            .as_ref()
            .map(|i| i.node.clone())
            .unwrap_or_default()
    }

    fn touch(&mut self, fid: Fid, ctx: &mut Context<Self>) {
        self.dirty.insert(fid);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(self.coalesce, |act, _| act.flush());
        }
    }

    fn flush(&mut self) {
        self.flush_scheduled = false;
        let dirty = std::mem::take(&mut self.dirty);
        let cfg = self
            .shared
            .view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .config
            .clone();
        let notes = self
            .shared
            .model
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .changes(dirty, &cfg);
        if notes.is_empty() {
            return;
        }
        for n in notes.iter().filter(|n| n.fid.is_process()) {
            log::info!("ProcessStatus: {} -> {}", n.fid, n.state);
        }
        match &self.mero {
            Some(m) => {
                let count = notes.len();
                let done = Box::new(move |r: super::links::SendReport| {
                    if !r.all_delivered() {
                        log::warn!("ProcessStatus: broadcast of {count} note(s): {r:?}");
                    }
                });
                let _ = m.send(MeroCmd::Broadcast {
                    notes,
                    skip_process: None,
                    done: Some(done),
                });
            }
            None => log::debug!(
                "ProcessStatus: {} note(s) not broadcast: MeroLink not attached yet",
                notes.len()
            ),
        }
    }

    fn mark_special_processes(&self) {
        let v = self.shared.view.read().unwrap_or_else(|e| e.into_inner());
        let mut m = self.shared.model.write().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = &v.identity {
            m.mark_special(id.process);
        }
        for c in v.confds.iter().flatten() {
            m.mark_special(c.fid);
        }
    }
}

impl Actor for ProcessStatus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.reconcile {
            let me = ctx.address();
            actix::spawn(reconcile_loop(self.consul.clone(), me));
        }
    }
}

impl Handler<AttachMero> for ProcessStatus {
    type Result = ();
    fn handle(&mut self, m: AttachMero, _: &mut Context<Self>) {
        self.mero = Some(m.0);
    }
}

impl Handler<ProcessEvent> for ProcessStatus {
    type Result = ();
    fn handle(&mut self, ev: ProcessEvent, ctx: &mut Context<Self>) {
        let record = serde_json::json!({
            "state": ev.event.motr_name(),
            "type": ev.process_type.motr_name(),
            "pid": ev.pid,
        });
        log::info!(
            "ProcessStatus: {} {} (pid {})",
            ev.process,
            ev.event.motr_name(),
            ev.pid
        );
        self.mark_special_processes();
        self.shared
            .model
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .on_event(&ev);
        self.touch(ev.process, ctx);
        let payload =
            ProcessUpdate::payload(ev.process, ev.event, ev.process_type, &self.own_node());
        self.publish(Envelope::new(envelope::PROCESS_STATE_UPDATE, payload));
        // Waiting here (when the writer is full) slows this mailbox: events stay in order.
        let w = self.writer.clone();
        let key = format!("processes/{}", ev.process);
        ctx.wait(
            async move { w.write(key, Some(record.to_string().into_bytes())).await }
                .into_actor(self),
        );
    }
}

impl Handler<HaStateUpdate> for ProcessStatus {
    type Result = ();
    fn handle(&mut self, u: HaStateUpdate, ctx: &mut Context<Self>) {
        let mut recheck = BTreeSet::new();
        {
            let mut m = self.shared.model.write().unwrap_or_else(|e| e.into_inner());
            for h in &u.entries {
                let newly_failed = !h.healthy && m.health(h.process) != Some(false);
                if self.recheck && u.source == HealthSource::Watch && newly_failed {
                    // A delivery can be late: act on current health, not on the snapshot.
                    recheck.insert(h.service_name.clone());
                    continue;
                }
                m.on_health(h);
            }
        }
        for h in u
            .entries
            .iter()
            .filter(|h| !recheck.contains(&h.service_name) || h.healthy)
        {
            self.touch(h.process, ctx);
        }
        for name in recheck {
            let consul = self.consul.clone();
            let me = ctx.address();
            actix::spawn(async move {
                let path = format!("/v1/health/service/{}", crate::consul::encode_query(&name));
                match consul.get_raw(&path, None, Duration::ZERO).await {
                    Ok((Some(body), _)) => match parse_payload(&body) {
                        Ok(p) => me.do_send(HaStateUpdate {
                            entries: p.health,
                            source: HealthSource::Consul,
                        }),
                        Err(e) => log::warn!("ProcessStatus: re-check of {name}: {e}"),
                    },
                    Ok((None, _)) => {}
                    Err(e) => {
                        // Consul cannot confirm: the reconciliation loop will settle it.
                        log::warn!("ProcessStatus: re-check of {name} failed ({e}); waiting for reconciliation");
                    }
                }
            });
        }
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
        self.publish(Envelope::new(envelope::STOB_IOQ_ERROR, payload));
    }
}

impl Handler<RemoteStates> for ProcessStatus {
    type Result = ();
    fn handle(&mut self, u: RemoteStates, ctx: &mut Context<Self>) {
        if !u.processes.is_empty() {
            self.mark_special_processes();
            // Another node's hax is "hax itself" there: ONLINE once STARTED, here too.
            let v = self.shared.view.read().unwrap_or_else(|e| e.into_inner());
            let mut m = self.shared.model.write().unwrap_or_else(|e| e.into_inner());
            for (p, _, _) in u
                .processes
                .iter()
                .filter(|(p, _, _)| v.config.service_of_type(*p, "ha").is_some())
            {
                m.mark_special(*p);
            }
        }
        for (process, event, process_type) in &u.processes {
            let ev = ProcessEvent {
                process: *process,
                event: *event,
                process_type: *process_type,
                pid: 0,
                link: None,
            };
            self.shared
                .model
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .on_event(&ev);
            self.touch(*process, ctx);
        }
        let changed: Vec<Note> = {
            let mut objects = self
                .shared
                .objects
                .write()
                .unwrap_or_else(|e| e.into_inner());
            u.notes
                .iter()
                .filter(|n| objects.insert(n.fid, n.state) != Some(n.state))
                .copied()
                .collect()
        };
        if changed.is_empty() {
            return;
        }
        for n in &changed {
            log::info!(
                "ProcessStatus: {} -> {} (from {})",
                n.fid,
                n.state,
                u.source
            );
        }
        match &self.mero {
            Some(m) => {
                let count = changed.len();
                let source = u.source.clone();
                let done = Box::new(move |r: super::links::SendReport| {
                    if !r.all_delivered() {
                        log::warn!(
                            "ProcessStatus: broadcast of {count} note(s) from {source}: {r:?}"
                        );
                    }
                });
                let _ = m.send(MeroCmd::Broadcast {
                    notes: changed,
                    skip_process: None,
                    done: Some(done),
                });
            }
            None => log::debug!(
                "ProcessStatus: {} note(s) from {} not broadcast: MeroLink not attached yet",
                changed.len(),
                u.source
            ),
        }
    }
}

/// Repairs lost watch deliveries: a blocking query over every check, at most once a second.
async fn reconcile_loop(consul: Consul, me: Addr<ProcessStatus>) {
    let mut index = 0u64;
    let mut backoff = super::fid_resolver::Backoff::default();
    loop {
        let started = std::time::Instant::now();
        match consul
            .get_json::<Vec<Check>>("/v1/health/state/any", Some(index), Duration::from_secs(30))
            .await
        {
            Ok((checks, idx)) => {
                backoff.reset();
                let parsed = from_checks(&checks.unwrap_or_default());
                me.do_send(HaStateUpdate {
                    entries: parsed.health,
                    source: HealthSource::Consul,
                });
                index = if idx < index { 0 } else { idx.max(1) };
            }
            Err(e) => {
                log::debug!("ProcessStatus: reconciliation query failed: {e}");
                actix_rt::time::sleep(backoff.next_delay()).await;
                continue;
            }
        }
        let spent = started.elapsed();
        if spent < Duration::from_secs(1) {
            actix_rt::time::sleep(Duration::from_secs(1) - spent).await;
        }
    }
}
