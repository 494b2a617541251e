//! HaBroadcaster: the HA state model and its broadcasts. It owns the model (process events,
//! Consul health, the states other nodes and the RC report) and sends only its changes to
//! MeroLink as `Broadcast`s: a health snapshot's changes at once, process events' changes after
//! a 2 ms window, and while MeroLink still delivers the previous broadcast (at most `hold`),
//! new changes gather and go out together. It never waits on Consul: it reads nothing from
//! Consul and writes nothing to it (ProcessStatus records events; HealthMonitor re-checks
//! failures and reconciles); a failure reaches Motr however slow Consul is.
use super::health_monitor::Recheck;
use super::merolink::{MeroCmd, StateView};
use crate::fid::Fid;
use crate::hamodel::HaModel;
use crate::messages::{HaStateUpdate, HealthSource, ProcessEvent};
use crate::motr::{HaState, Note};
use crate::rc::RemoteStates;
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

/// MeroLink finished delivering the broadcast with this number.
#[derive(Message)]
#[rtype(result = "()")]
struct BroadcastDone(u64);

/// Connects the broadcaster to MeroLink once MeroLink runs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachMero(pub Sender<MeroCmd>);

/// Connects the broadcaster to HealthMonitor, which re-checks failures reported by watches.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachRecheck(pub Recipient<Recheck>);

pub struct HaBroadcaster {
    shared: Arc<SharedModel>,
    mero: Option<Sender<MeroCmd>>,
    recheck: Option<Recipient<Recheck>>,
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
}

impl HaBroadcaster {
    pub fn new(shared: Arc<SharedModel>) -> Self {
        HaBroadcaster {
            shared,
            mero: None,
            recheck: None,
            dirty: BTreeSet::new(),
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
            log::info!("HaBroadcaster: {} -> {}", n.fid, n.state);
        }
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
        let done = Box::new(move |r: super::links::SendReport| {
            let ms = since.elapsed().as_secs_f64() * 1e3;
            if r.all_delivered() {
                let sent_ms = r.all_sent.map_or(f64::NAN, |t| {
                    t.saturating_duration_since(since).as_secs_f64() * 1e3
                });
                log::info!(
                    "HaBroadcaster: broadcast {number} of {count} note(s) handed to Motr for {} link(s) {sent_ms:.2} ms and confirmed {ms:.2} ms after the change reached hax",
                    r.delivered
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

impl Actor for HaBroadcaster {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {}
}

impl Handler<AttachRecheck> for HaBroadcaster {
    type Result = ();
    fn handle(&mut self, m: AttachRecheck, _: &mut Context<Self>) {
        self.recheck = Some(m.0);
    }
}

impl Handler<AttachMero> for HaBroadcaster {
    type Result = ();
    fn handle(&mut self, m: AttachMero, _: &mut Context<Self>) {
        self.mero = Some(m.0);
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
        self.mark_special_processes();
        self.shared
            .model
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .on_event(&ev);
        self.touch(ev.process, Instant::now(), ctx);
    }
}

impl Handler<HaStateUpdate> for HaBroadcaster {
    type Result = ();
    fn handle(&mut self, u: HaStateUpdate, ctx: &mut Context<Self>) {
        let mut recheck = BTreeSet::new();
        let mut changed = Vec::new();
        {
            let mut m = self.shared.model.write().unwrap_or_else(|e| e.into_inner());
            for h in &u.entries {
                let newly_failed = !h.healthy && m.health(h.process) != Some(false);
                if self.recheck.is_some() && u.source == HealthSource::Watch && newly_failed {
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
        if !recheck.is_empty() {
            match &self.recheck {
                Some(r) => r.do_send(Recheck { services: recheck }),
                None => log::debug!(
                    "HaBroadcaster: {} service(s) to re-check but no HealthMonitor attached",
                    recheck.len()
                ),
            }
        }
    }
}

impl Handler<RemoteStates> for HaBroadcaster {
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
                ack: None,
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
                "HaBroadcaster: {} -> {} (from {})",
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
                            "HaBroadcaster: broadcast of {count} note(s) from {source}: {r:?}"
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
                "HaBroadcaster: {} note(s) from {} not broadcast: MeroLink not attached yet",
                changed.len(),
                u.source
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::links::{OnDone, SendReport};
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

    /// The broadcaster with a channel in MeroLink's place (it needs no Consul at all).
    async fn start_status(hold: Duration) -> (Addr<HaBroadcaster>, Receiver<MeroCmd>) {
        let shared = Arc::new(SharedModel::new(Default::default()));
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
