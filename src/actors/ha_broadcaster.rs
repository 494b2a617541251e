//! HaBroadcaster: owns the HA model (`model::HaModel`) and sends Motr its changes.
//!
//! Inputs: process events (MeroLink, without waiting for them to be recorded), health reports
//! (WatchIngest, HealthMonitor), states other nodes and the RC report through `bq/`
//! (`RemoteStates`), the configuration tree (read from the shared view). What goes to
//! MeroLink as `Broadcast`s is the model's differences: a health report's at once, process
//! events' after a 2 ms window; while MeroLink still delivers the previous broadcast (at most
//! `hold`), new changes gather and go out together, so a storm costs a few broadcasts, not
//! one per change. It never waits on Consul: it reads nothing from Consul and writes nothing
//! to it, so a failure reaches Motr however slow Consul is. MeroLink answers NVEC GET from the
//! same model (`SharedModel`), once the model is ready (`SharedModel::set_ready`: what a
//! restarted hax must know before it answers).
use super::merolink::{MeroCmd, StateView};
use crate::fid::Fid;
use crate::messages::{HealthReport, ProcessEvent};
use crate::model::health::HealthDelta;
use crate::model::HaModel;
use crate::motr::{HaState, Note};
use crate::rc::RemoteStates;
use crate::view::SharedView;
use actix::prelude::*;
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The model shared with MeroLink, which answers NVEC GET from it.
pub struct SharedModel {
    pub model: RwLock<HaModel>,
    pub view: SharedView,
    ready: AtomicBool,
    /// The configuration tree generation the model was built from.
    config_generation: std::sync::atomic::AtomicU64,
}

impl SharedModel {
    pub fn new(view: SharedView) -> SharedModel {
        SharedModel {
            model: RwLock::new(Default::default()),
            view,
            ready: AtomicBool::new(false),
            config_generation: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// The model holds what hax must know before it answers Motr (configuration tree,
    /// `processes/`, `states/`, a first health snapshot): NVEC GETs are answered from now on.
    pub fn set_ready(&self) {
        if !self.ready.swap(true, Ordering::SeqCst) {
            log::info!("HA model ready: NVEC GETs are answered");
        }
    }

    /// hax is shutting down.
    pub fn stopping(&self) -> bool {
        self.view.read().unwrap_or_else(|e| e.into_inner()).stopping
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Brings the model's configuration tree and own process up to date with the view.
    /// Answers whether anything changed.
    pub fn sync_view(&self) -> bool {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        let generation = v.config_generation;
        if self.config_generation.swap(generation, Ordering::SeqCst) == generation {
            return false;
        }
        let mut m = self.model.write().unwrap_or_else(|e| e.into_inner());
        m.set_config(&v.config);
        if let Some(id) = &v.identity {
            m.set_own(id.process);
        }
        true
    }
}

impl SharedModel {
    /// What Motr was last told of each fid (None: nothing yet), for `GET /status`.
    pub fn last_said(&self, fids: &[Fid]) -> Vec<(Fid, Option<HaState>)> {
        let m = self.model.read().unwrap_or_else(|e| e.into_inner());
        fids.iter().map(|f| (*f, m.last_said(*f))).collect()
    }
}

impl StateView for SharedModel {
    fn broadcast_by_merolink(&self, process: Fid, state: HaState) {
        self.model
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .record_said(process, state);
    }

    fn answer(&self, fids: &[Fid]) -> Option<Vec<Note>> {
        if !self.ready.load(Ordering::SeqCst) {
            return None;
        }
        self.sync_view();
        Some(
            self.model
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .answer(fids),
        )
    }

    fn full_state(&self) -> Option<Vec<Note>> {
        if !self.ready.load(Ordering::SeqCst) {
            return None;
        }
        self.sync_view();
        Some(
            self.model
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .full_state(),
        )
    }
}

/// MeroLink finished delivering the broadcast with this number.
#[derive(Message)]
#[rtype(result = "()")]
struct BroadcastDone(u64);

/// The model holds what hax must know before it answers Motr (HealthMonitor, once it read
/// the start state): NVEC GETs are answered and changes broadcast from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ModelReady;

/// Connects the broadcaster to MeroLink once MeroLink runs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachMero(pub Sender<MeroCmd>);

pub struct HaBroadcaster {
    shared: Arc<SharedModel>,
    mero: Option<Sender<MeroCmd>>,
    /// When the oldest change not broadcast yet reached hax.
    dirty_since: Option<Instant>,
    flush_scheduled: bool,
    coalesce: Duration,
    /// The broadcast MeroLink is still delivering (its number): while one is in flight, new
    /// changes accumulate and go out together once it is confirmed (or `hold` has passed),
    /// so a storm of changes costs a few broadcasts, not one per change.
    in_flight: Option<u64>,
    broadcasts: u64,
    hold: Duration,
}

impl HaBroadcaster {
    pub fn new(shared: Arc<SharedModel>) -> Self {
        HaBroadcaster {
            shared,
            mero: None,
            dirty_since: None,
            flush_scheduled: false,
            coalesce: Duration::from_millis(2),
            in_flight: None,
            broadcasts: 0,
            hold: Duration::from_millis(50),
        }
    }

    /// How long a broadcast may hold later changes back when Motr does not confirm it.
    pub fn with_hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    fn model(&self) -> std::sync::RwLockWriteGuard<'_, HaModel> {
        self.shared.model.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Inputs changed the model at `since` (when the news reached hax).
    fn changed(&mut self, since: Instant, at_once: bool, ctx: &mut Context<Self>) {
        if !self.model().has_changes() {
            return;
        }
        self.dirty_since = Some(self.dirty_since.map_or(since, |d| d.min(since)));
        if at_once && self.in_flight.is_none() {
            self.flush(ctx);
        } else {
            self.schedule_flush(ctx);
        }
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_scheduled || self.in_flight.is_some() || !self.model().has_changes() {
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
        if self.shared.stopping() {
            // MeroLink is dropping every link: nobody would hear it.
            return;
        }
        if !self.shared.is_ready() {
            // Nothing false in between: what the model says before it read the start state
            // (a process known only from the configuration, say) is not told to Motr.
            return;
        }
        self.shared.sync_view();
        let since = self.dirty_since.take().unwrap_or_else(Instant::now);
        let notes = self.model().changes();
        if notes.is_empty() {
            return;
        }
        for n in notes.iter().filter(|n| n.fid.is_process()) {
            log::info!("HaBroadcaster: {} -> {}", n.fid, n.state);
        }
        crate::metrics::broadcast_notes(notes.len());
        let Some(m) = &self.mero else {
            log::debug!(
                "HaBroadcaster: {} note(s) not broadcast: MeroLink not attached yet",
                notes.len()
            );
            return;
        };
        self.broadcasts += 1;
        let number = self.broadcasts;
        let count = notes.len();
        let me = ctx.address();
        let stopping = self.shared.clone();
        let done = Box::new(move |r: super::merolink::links::SendReport| {
            let ms = since.elapsed().as_secs_f64() * 1e3;
            let sent = r
                .all_sent
                .map(|t| t.saturating_duration_since(since).as_secs_f64());
            crate::metrics::broadcast_done(&r, sent, since.elapsed().as_secs_f64());
            if r.all_delivered() {
                let sent_ms = sent.map_or(f64::NAN, |s| s * 1e3);
                log::info!(
                    "HaBroadcaster: broadcast {number} of {count} note(s) handed to Motr for {} link(s) {sent_ms:.2} ms and confirmed {ms:.2} ms after the change reached hax",
                    r.delivered
                );
            } else if stopping.stopping() {
                log::info!(
                    "HaBroadcaster: broadcast {number} of {count} note(s) after {ms:.2} ms, hax stopping: {r:?}"
                );
            } else {
                log::warn!(
                    "HaBroadcaster: broadcast {number} of {count} note(s) after {ms:.2} ms: {r:?}"
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
}

impl Actor for HaBroadcaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The configuration tree can change under the model (FidResolver keeps the view).
        ctx.run_interval(Duration::from_millis(500), |act, ctx| {
            if act.shared.sync_view() {
                act.changed(Instant::now(), false, ctx);
            }
        });
    }
}

impl Handler<AttachMero> for HaBroadcaster {
    type Result = ();
    fn handle(&mut self, m: AttachMero, _: &mut Context<Self>) {
        self.mero = Some(m.0);
    }
}

impl Handler<ModelReady> for HaBroadcaster {
    type Result = ();
    fn handle(&mut self, _: ModelReady, ctx: &mut Context<Self>) {
        self.shared.set_ready();
        self.changed(Instant::now(), true, ctx);
    }
}

impl Handler<BroadcastDone> for HaBroadcaster {
    type Result = ();
    fn handle(&mut self, d: BroadcastDone, ctx: &mut Context<Self>) {
        self.broadcast_done(d.0, ctx);
    }
}

impl Handler<ProcessEvent> for HaBroadcaster {
    type Result = ();
    fn handle(&mut self, ev: ProcessEvent, ctx: &mut Context<Self>) {
        self.shared.sync_view();
        self.model().on_event(ev.process, ev.event, ev.process_type);
        self.changed(Instant::now(), false, ctx);
    }
}

impl Handler<HealthReport> for HaBroadcaster {
    type Result = ();
    fn handle(&mut self, r: HealthReport, ctx: &mut Context<Self>) {
        self.shared.sync_view();
        let fresh = self.model().on_snapshot(&r.snapshot);
        if !fresh {
            log::info!(
                "HaBroadcaster: health from {} at index {} is stale (not newer than the last from it); ignored",
                r.snapshot.source,
                r.snapshot.index
            );
            return;
        }
        // A health snapshot arrives whole: nothing to gather, send it now (unless a broadcast
        // is in flight; then it goes out with what gathers meanwhile).
        self.changed(r.received, true, ctx);
    }
}

impl Handler<RemoteStates> for HaBroadcaster {
    type Result = ();
    fn handle(&mut self, u: RemoteStates, ctx: &mut Context<Self>) {
        self.shared.sync_view();
        {
            let mut m = self.model();
            for (process, event, ptype) in &u.processes {
                m.on_event(*process, *event, *ptype);
            }
            for n in &u.notes {
                m.on_decision(n.fid, n.state);
            }
            for d in &u.health {
                match d {
                    HealthDelta::Process { fid, health, index } => {
                        m.on_process_health(*fid, *health, *index)
                    }
                    HealthDelta::Node {
                        node,
                        health,
                        index,
                    } => m.on_node_health(node, *health, *index),
                }
            }
        }
        self.changed(Instant::now(), true, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::merolink::links::{OnDone, SendReport};
    use crate::model::health::{Coverage, ServiceHealth, Snapshot};
    use crossbeam_channel::{unbounded, Receiver};

    /// A snapshot listing `p` failing (indexes grow: each is newer than the last).
    fn failing(p: Fid) -> HealthReport {
        static INDEX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        HealthReport {
            snapshot: Snapshot {
                source: "/".into(),
                index: INDEX.fetch_add(1, Ordering::SeqCst),
                coverage: Coverage::Listed,
                entries: vec![ServiceHealth {
                    process: p,
                    service_name: "ios".into(),
                    node: "n1".into(),
                    healthy: false,
                    node_healthy: true,
                }],
                nodes: vec![],
            },
            received: Instant::now(),
        }
    }

    /// The broadcaster with a channel in MeroLink's place (it needs no Consul at all).
    async fn start_status(hold: Duration) -> (Addr<HaBroadcaster>, Receiver<MeroCmd>) {
        let shared = Arc::new(SharedModel::new(Default::default()));
        shared.set_ready();
        let ps = HaBroadcaster::new(shared).with_hold(hold).start();
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
