//! ProcessStatus: turns process events and Consul health into KV records and HA states.
//!
//! Every process event becomes `processes/<fid>` in KV (through ConsulWriter, so ordered per
//! process) and updates the HA state model; changes are coalesced for a few milliseconds and
//! broadcast through MeroLink (a process note followed by its services' notes). Health from a
//! watch delivery that reports a new failure is re-checked against current Consul health
//! before it is acted on; a reconciliation loop (a blocking query over all checks, at most
//! one per second) repairs deliveries Consul lost. STOB I/O errors are queued under `eq/`.
use super::consul_writer::WriterHandle;
use super::merolink::{MeroCmd, StateView};
use crate::consul::health::{from_checks, parse_payload, Check};
use crate::consul::Consul;
use crate::fid::Fid;
use crate::hamodel::HaModel;
use crate::messages::{HaStateUpdate, HealthSource, ProcessEvent, StobIoEvent};
use crate::motr::Note;
use crate::view::SharedView;
use actix::prelude::*;
use crossbeam_channel::Sender;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The model shared with MeroLink, which answers NVEC GET from it.
pub struct SharedModel {
    pub model: RwLock<HaModel>,
    pub view: SharedView,
}

impl StateView for SharedModel {
    fn answer(&self, fids: &[Fid]) -> Vec<Note> {
        let cfg = self.view.read().unwrap_or_else(|e| e.into_inner()).config.clone();
        self.model.read().unwrap_or_else(|e| e.into_inner()).answer(fids, &cfg)
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
    eq_counter: u64,
    reconcile: bool,
    recheck: bool,
}

impl ProcessStatus {
    /// `reconcile`: run the reconciliation loop; `recheck`: re-check failures from watches.
    pub fn new(shared: Arc<SharedModel>, writer: WriterHandle, consul: Consul, reconcile: bool, recheck: bool) -> Self {
        ProcessStatus {
            shared,
            writer,
            consul,
            mero: None,
            dirty: BTreeSet::new(),
            flush_scheduled: false,
            coalesce: Duration::from_millis(5),
            eq_counter: 0,
            reconcile,
            recheck,
        }
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
        let cfg = self.shared.view.read().unwrap_or_else(|e| e.into_inner()).config.clone();
        let notes = self.shared.model.write().unwrap_or_else(|e| e.into_inner()).changes(dirty, &cfg);
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
                let _ = m.send(MeroCmd::Broadcast { notes, skip_process: None, done: Some(done) });
            }
            None => log::debug!("ProcessStatus: {} note(s) not broadcast: MeroLink not attached yet", notes.len()),
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
        log::info!("ProcessStatus: {} {} (pid {})", ev.process, ev.event.motr_name(), ev.pid);
        self.mark_special_processes();
        self.shared.model.write().unwrap_or_else(|e| e.into_inner()).on_event(&ev);
        self.touch(ev.process, ctx);
        // Waiting here (when the writer is full) slows this mailbox: events stay in order.
        let w = self.writer.clone();
        let key = format!("processes/{}", ev.process);
        ctx.wait(async move { w.write(key, Some(record.to_string().into_bytes())).await }.into_actor(self));
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
        for h in u.entries.iter().filter(|h| !recheck.contains(&h.service_name) || h.healthy) {
            self.touch(h.process, ctx);
        }
        for name in recheck {
            let consul = self.consul.clone();
            let me = ctx.address();
            actix::spawn(async move {
                let path = format!("/v1/health/service/{}", crate::consul::encode_query(&name));
                match consul.get_raw(&path, None, Duration::ZERO).await {
                    Ok((Some(body), _)) => match parse_payload(&body) {
                        Ok(p) => me.do_send(HaStateUpdate { entries: p.health, source: HealthSource::Consul }),
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
    fn handle(&mut self, ev: StobIoEvent, ctx: &mut Context<Self>) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.eq_counter += 1;
        let key = format!("eq/{:020}{:06}", now.as_nanos() / 1000, self.eq_counter % 1_000_000);
        let value = serde_json::json!({
            "message_type": "STOB_IOQ_ERROR",
            "payload": { "process": ev.from_process, "error": ev.error },
            "timestamp": now.as_secs_f64(),
        });
        let w = self.writer.clone();
        ctx.wait(async move { w.write(key, Some(value.to_string().into_bytes())).await }.into_actor(self));
    }
}

/// Repairs lost watch deliveries: a blocking query over every check, at most once a second.
async fn reconcile_loop(consul: Consul, me: Addr<ProcessStatus>) {
    let mut index = 0u64;
    let mut backoff = super::fid_resolver::Backoff::default();
    loop {
        let started = std::time::Instant::now();
        match consul.get_json::<Vec<Check>>("/v1/health/state/any", Some(index), Duration::from_secs(30)).await {
            Ok((checks, idx)) => {
                backoff.reset();
                let parsed = from_checks(&checks.unwrap_or_default());
                me.do_send(HaStateUpdate { entries: parsed.health, source: HealthSource::Consul });
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
