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
use std::time::{Duration, Instant};

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
    fn broadcast_by_merolink(&self, process: Fid, state: HaState) {
        self.model
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .record_sent(process, state);
    }

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

/// MeroLink finished delivering ProcessStatus's broadcast with this number.
#[derive(Message)]
#[rtype(result = "()")]
struct BroadcastDone(u64);

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
    /// When the oldest change in `dirty` reached hax.
    dirty_since: Option<Instant>,
    flush_scheduled: bool,
    coalesce: Duration,
    /// The broadcast MeroLink is still delivering (its number): while one is in flight, new
    /// changes accumulate and go out together once it is confirmed (or `hold` has passed),
    /// so a storm of changes costs a few broadcasts, not one per change.
    in_flight: Option<u64>,
    broadcasts: u64,
    hold: Duration,
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
            dirty_since: None,
            flush_scheduled: false,
            coalesce: Duration::from_millis(2),
            in_flight: None,
            broadcasts: 0,
            hold: Duration::from_millis(50),
            queue: None,
            reconcile,
            recheck,
        }
    }

    /// How long a broadcast may hold later changes back when Motr does not confirm it.
    pub fn with_hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// Publishes process events and STOB I/O errors to the RC's event queue through `queue`.
    pub fn with_queue(mut self, queue: QueueHandle) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Publishes to `eq/`; an entry with a `latest` key replaces the one with the same key
    /// still waiting to be written.
    fn publish(&self, entry: Envelope, latest: Option<String>) {
        match &self.queue {
            Some(q) => match latest {
                Some(key) => q.publish_latest(Queue::Eq, key, entry),
                None => q.publish(Queue::Eq, entry),
            },
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

    fn touch(&mut self, fid: Fid, since: Instant, ctx: &mut Context<Self>) {
        self.dirty.insert(fid);
        self.dirty_since = Some(self.dirty_since.map_or(since, |d| d.min(since)));
        self.schedule_flush(ctx);
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_scheduled || self.in_flight.is_some() || self.dirty.is_empty() {
            return;
        }
        self.flush_scheduled = true;
        ctx.run_later(self.coalesce, |act, ctx| {
            act.flush_scheduled = false;
            if act.in_flight.is_none() {
                act.flush(ctx);
            }
        });
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        let dirty = std::mem::take(&mut self.dirty);
        let since = self.dirty_since.take().unwrap_or_else(Instant::now);
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
        let Some(m) = &self.mero else {
            log::debug!(
                "ProcessStatus: {} note(s) not broadcast: MeroLink not attached yet",
                notes.len()
            );
            return;
        };
        self.broadcasts += 1;
        let number = self.broadcasts;
        let count = notes.len();
        let me = ctx.address();
        let done = Box::new(move |r: super::links::SendReport| {
            let ms = since.elapsed().as_secs_f64() * 1e3;
            if r.all_delivered() {
                let sent_ms = r.all_sent.map_or(f64::NAN, |t| {
                    t.saturating_duration_since(since).as_secs_f64() * 1e3
                });
                log::info!(
                    "ProcessStatus: broadcast {number} of {count} note(s) handed to Motr for {} link(s) {sent_ms:.2} ms and confirmed {ms:.2} ms after the change reached hax",
                    r.delivered
                );
            } else {
                log::warn!(
                    "ProcessStatus: broadcast {number} of {count} note(s) after {ms:.2} ms: {r:?}"
                );
            }
            me.do_send(BroadcastDone(number));
        });
        if m.send(MeroCmd::Broadcast {
            notes,
            skip_process: None,
            done: Some(done),
        })
        .is_ok()
        {
            self.in_flight = Some(number);
            // A peer that never confirms must not hold every later change back for long.
            ctx.run_later(self.hold, move |act, ctx| act.broadcast_done(number, ctx));
        }
    }

    fn broadcast_done(&mut self, number: u64, ctx: &mut Context<Self>) {
        if self.in_flight == Some(number) {
            self.in_flight = None;
            self.schedule_flush(ctx);
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

impl Handler<BroadcastDone> for ProcessStatus {
    type Result = ();
    fn handle(&mut self, d: BroadcastDone, ctx: &mut Context<Self>) {
        self.broadcast_done(d.0, ctx);
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
        self.touch(ev.process, Instant::now(), ctx);
        let payload =
            ProcessUpdate::payload(ev.process, ev.event, ev.process_type, &self.own_node());
        // Other nodes need a process's latest state, not every step of a burst.
        self.publish(
            Envelope::new(envelope::PROCESS_STATE_UPDATE, payload),
            Some(format!("process/{}", ev.process)),
        );
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
        let mut changed = Vec::new();
        {
            let mut m = self.shared.model.write().unwrap_or_else(|e| e.into_inner());
            for h in &u.entries {
                let newly_failed = !h.healthy && m.health(h.process) != Some(false);
                if self.recheck && u.source == HealthSource::Watch && newly_failed {
                    // A delivery can be late: act on current health, not on the snapshot.
                    recheck.insert(h.service_name.clone());
                    continue;
                }
                if m.on_health(h) {
                    changed.push(h.process);
                }
            }
        }
        for p in changed {
            self.touch(p, u.received, ctx);
        }
        // A health snapshot arrives whole: nothing to gather, send it now (unless a broadcast
        // is in flight; then it goes out with what gathers meanwhile).
        if self.in_flight.is_none() && !self.dirty.is_empty() {
            self.flush(ctx);
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
                            received: std::time::Instant::now(),
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
        self.publish(Envelope::new(envelope::STOB_IOQ_ERROR, payload), None);
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
            self.touch(*process, Instant::now(), ctx);
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
                    received: std::time::Instant::now(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::consul_writer::ConsulWriter;
    use crate::actors::links::{OnDone, SendReport};
    use crate::consul::ConsulConfig;
    use crate::messages::ServiceHealth;
    use crossbeam_channel::{unbounded, Receiver};

    fn failing(p: Fid) -> HaStateUpdate {
        HaStateUpdate {
            entries: vec![ServiceHealth {
                process: p,
                service_name: "ios".into(),
                node: "n1".into(),
                healthy: false,
                node_healthy: true,
            }],
            source: HealthSource::Watch,
            received: Instant::now(),
        }
    }

    /// ProcessStatus with a channel in MeroLink's place. Nothing listens at its Consul
    /// address: these tests never reach Consul (no recheck, no reconciliation).
    async fn start_status(hold: Duration) -> (Addr<ProcessStatus>, Receiver<MeroCmd>) {
        let consul = Consul::new(&ConsulConfig {
            addr: "127.0.0.1:9".into(),
            token: None,
            ca_file: None,
        });
        let writer = ConsulWriter::start(consul.clone(), 16);
        let shared = Arc::new(SharedModel::new(Default::default()));
        let ps = ProcessStatus::new(shared, writer, consul, false, false)
            .with_hold(hold)
            .start();
        let (tx, rx) = unbounded();
        ps.send(AttachMero(tx)).await.unwrap();
        (ps, rx)
    }

    /// The next broadcast MeroLink would get within `within`: its notes and completion.
    async fn next_broadcast(
        rx: &Receiver<MeroCmd>,
        within: Duration,
    ) -> Option<(Vec<Note>, OnDone)> {
        let rx = rx.clone();
        actix_rt::task::spawn_blocking(move || match rx.recv_timeout(within) {
            Ok(MeroCmd::Broadcast { notes, done, .. }) => Some((notes, done.expect("a callback"))),
            Ok(_) => panic!("only broadcasts are expected"),
            Err(_) => None,
        })
        .await
        .unwrap()
    }

    #[test]
    fn changes_during_an_unconfirmed_broadcast_go_out_together_once_it_is_confirmed() {
        actix::System::new().block_on(async {
            let (ps, rx) = start_status(Duration::from_secs(30)).await;
            let (a, b, c) = (
                Fid::typed(b'r', 1, 10),
                Fid::typed(b'r', 1, 11),
                Fid::typed(b'r', 1, 12),
            );
            ps.send(failing(a)).await.unwrap();
            let (notes, confirm) = next_broadcast(&rx, Duration::from_secs(5))
                .await
                .expect("the first change is broadcast at once");
            assert_eq!(
                notes,
                vec![Note {
                    fid: a,
                    state: HaState::Transient
                }]
            );
            // Two more changes while the first broadcast is unconfirmed: nothing goes out.
            ps.send(failing(b)).await.unwrap();
            ps.send(failing(c)).await.unwrap();
            assert!(
                next_broadcast(&rx, Duration::from_millis(200))
                    .await
                    .is_none(),
                "nothing is sent while a broadcast is in flight"
            );
            // Motr confirms the first: both later changes go out in one broadcast.
            confirm(SendReport {
                sent: 1,
                delivered: 1,
                ..Default::default()
            });
            let (notes, _) = next_broadcast(&rx, Duration::from_secs(5))
                .await
                .expect("the held changes are broadcast after the confirmation");
            assert_eq!(notes.iter().map(|n| n.fid).collect::<Vec<_>>(), vec![b, c]);
            assert!(notes.iter().all(|n| n.state == HaState::Transient));
        });
    }

    #[test]
    fn an_unconfirmed_broadcast_holds_later_changes_back_only_until_the_hold_passes() {
        actix::System::new().block_on(async {
            let (ps, rx) = start_status(Duration::from_millis(100)).await;
            ps.send(failing(Fid::typed(b'r', 1, 20))).await.unwrap();
            let _never_confirmed = next_broadcast(&rx, Duration::from_secs(5))
                .await
                .expect("first broadcast");
            let t = Instant::now();
            ps.send(failing(Fid::typed(b'r', 1, 21))).await.unwrap();
            assert!(
                next_broadcast(&rx, Duration::from_secs(5)).await.is_some(),
                "a peer that never confirms does not stop later broadcasts"
            );
            assert!(t.elapsed() < Duration::from_secs(2));
        });
    }
}
