//! MeroLink: the actor pinned to the one thread that owns Motr's HA interface.
//!
//! Its thread (`hax-merolink`) calls init (so it is Motr's main thread; it is never adopted
//! again, which would make Motr's fini panic), calls `start` (which blocks until hax's own
//! entrypoint request is answered by the entrypoint responder on another thread), then serves
//! two crossbeam mailboxes, events first: `MotrEvent`s from the C callbacks and `MeroCmd`s from
//! the other actors. It tracks links from connected to disconnected, never sends on a
//! link that is disconnecting or whose process reported STOPPED, splits broadcasts at 1024
//! notes, answers NVEC GET and failure-vector requests on the asking link, and tracks every
//! send until Motr reports it delivered or not delivered (or a bounded wait passes).
pub mod inbox;
pub mod journal;
pub mod links;
pub mod recording;

use crate::ffi;
use crate::fid::Fid;
use crate::messages::{Ack, AckKey, ProcessEvent, StobIoEvent};
use crate::motr::{
    EntrypointReq, HaMsg, HaState, LinkId, MotrEvent, MsgRef, Note, ProcessEventKind, ProcessType,
    ReqId, NOTES_MAX,
};
use actix::Recipient;
use crossbeam_channel::{after, bounded, select_biased, unbounded, Receiver, Sender};
use inbox::{Awaits, Inbox};
use journal::{Entry, Journal, REPLAY_LINK};
use links::{Deliveries, LinkInfo, LinkState, LinkTable, OnDone, SendReport};
use recording::{Offer, Recording, ToRecord};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A failure-vector request: its pool and cookie.
type FvecRequest = (Fid, (u64, u64));

/// What MeroLink needs to start the interface.
#[derive(Clone, Debug)]
pub struct MeroLinkConfig {
    pub endpoint: String,
    pub process: Fid,
    pub ha_service: Fid,
    pub rm_service: Fid,
    /// This node's UUID (Consul's node ID), or None for Motr's nil UUID. Motr refuses
    /// anything that does not parse as a UUID (a node name, say) with EINVAL.
    pub node_uuid: Option<String>,
    /// How long a send may wait for Motr's delivered/not-delivered before it is given up.
    pub delivery_timeout: Duration,
}

/// Answers NVEC GET questions from memory (implemented by the HA state model).
pub trait StateView: Send + Sync {
    /// One note per asked fid; None while the model is not ready (the question waits).
    fn answer(&self, fids: &[Fid]) -> Option<Vec<Note>>;
    /// Every object's state, for a process that reconnected (it heard nothing while its HA
    /// was away); None while the model is not ready.
    fn full_state(&self) -> Option<Vec<Note>> {
        Some(Vec::new())
    }
    /// MeroLink broadcast `state` for `process` on its own (a restart's FAILED): the model
    /// records it as sent, so that the process's next state is a change again.
    fn broadcast_by_merolink(&self, _process: Fid, _state: HaState) {}
}

/// Entrypoint requests answered or being answered: who asked, so that the link Motr makes
/// for the reply (link_connected / reused, in the reply or later) is tied to its process.
/// Bounded: an entry ends when a link callback takes it, or after `ENTRYPOINT_LOG_TTL` when
/// none came (a reply that made no link); at most `ENTRYPOINT_LOG_MAX` entries are kept, the
/// oldest going first.
#[derive(Clone, Default)]
pub struct EntrypointLog(Arc<Mutex<RequestLog>>);

#[derive(Default)]
struct RequestLog {
    by_id: HashMap<ReqId, (Fid, String, bool)>,
    /// Arrival order (entries already taken are skipped when they come up).
    order: std::collections::VecDeque<(ReqId, Instant)>,
}

/// How long an entrypoint request is remembered without a link callback.
pub const ENTRYPOINT_LOG_TTL: Duration = Duration::from_secs(120);
/// Most entrypoint requests remembered.
pub const ENTRYPOINT_LOG_MAX: usize = 16384;

impl EntrypointLog {
    pub fn record(&self, req: &EntrypointReq) {
        let mut l = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        l.by_id.insert(
            req.req_id,
            (req.process, req.remote_ep.clone(), req.first_request),
        );
        l.order.push_back((req.req_id, now));
        while let Some(&(id, at)) = l.order.front() {
            let expired = now.duration_since(at) >= ENTRYPOINT_LOG_TTL;
            if !expired
                && l.by_id.len() <= ENTRYPOINT_LOG_MAX
                && l.order.len() <= 2 * ENTRYPOINT_LOG_MAX
            {
                break;
            }
            l.order.pop_front();
            l.by_id.remove(&id);
        }
    }
    /// Who asked (process, endpoint, whether it was its first request).
    fn take(&self, id: ReqId) -> Option<(Fid, String, bool)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .remove(&id)
    }
    /// Requests remembered now.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).by_id.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Processes MeroLink holds at least one live link to, readable from other threads (the
/// entrypoint responder asks it before sending a restart through MeroLink's queue).
#[derive(Clone, Default)]
pub struct LinkedProcesses(Arc<std::sync::RwLock<HashMap<Fid, usize>>>);

impl LinkedProcesses {
    pub fn contains(&self, p: Fid) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&p)
    }
    fn add(&self, p: Fid) {
        *self
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(p)
            .or_insert(0) += 1;
    }
    fn remove(&self, p: Fid) {
        let mut m = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                m.remove(&p);
            }
        }
    }
}

/// Where MeroLink sends what it hears.
pub struct MeroOutputs {
    /// Records process events; confirms them (through their `Ack`) once durable. None: events
    /// are confirmed as they arrive (tests without Consul).
    pub record: Option<Recipient<ProcessEvent>>,
    /// The HA states process events give (no `Ack`: never waits on Consul).
    pub states: Option<Recipient<ProcessEvent>>,
    /// Records STOB I/O errors; confirms them once durable (None: at once).
    pub stob_errors: Option<Recipient<StobIoEvent>>,
    pub view: Arc<dyn StateView>,
    pub requests: EntrypointLog,
    /// Kept up to date by MeroLink (may be a fresh default when nobody reads it).
    pub linked: LinkedProcesses,
    /// The local journal (`--journal`), opened, with the records it holds from before (to be
    /// recorded again): records are confirmed to Motr once journaled. None: once durable in
    /// Consul.
    pub journal: Option<(Journal, Vec<(u64, Entry)>)>,
}

/// Commands to MeroLink.
pub enum MeroCmd {
    /// Send notes to every active link (the self link included), except `skip_process`'s.
    Broadcast {
        notes: Vec<Note>,
        skip_process: Option<Fid>,
        done: Option<OnDone>,
    },
    /// A first entrypoint request came from a process hax still holds linked: broadcast
    /// `notes` (its FAILED state) so Motr drops the old link, then call `done`.
    DropRestarted {
        process: Fid,
        notes: Vec<Note>,
        done: OnDone,
    },
    /// Report the link table.
    Links {
        reply: Sender<Vec<(LinkId, LinkInfo)>>,
    },
    /// Shut down: have Motr drop every other process's link, stop, fini.
    Stop,
}

/// What `MeroLink::spawn` hands back: the handle, the entrypoint requests for the responder,
/// and a receiver told when `start` returned.
pub type Spawned = (
    MeroLink,
    Receiver<EntrypointReq>,
    Receiver<Result<(), ffi::MotrError>>,
);

/// A handle to the running MeroLink thread.
pub struct MeroLink {
    cmds: Sender<MeroCmd>,
    thread: Option<JoinHandle<()>>,
    left: LinksLeft,
}

/// The links Motr still holds while it stops (updated by MeroLink as they go).
#[derive(Clone, Default)]
pub struct LinksLeft(Arc<Mutex<Vec<(LinkId, LinkInfo)>>>);

impl LinksLeft {
    fn set(&self, links: Vec<(LinkId, LinkInfo)>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = links;
    }
    fn get(&self) -> Vec<(LinkId, LinkInfo)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How MeroLink's shutdown ended.
#[derive(Debug)]
pub enum Stopped {
    /// Every link is gone and the interface is finalised.
    Clean,
    /// The bound passed while Motr was still stopping: these links were left (typically
    /// to processes that are gone, whose disconnection waits out Motr's RPC timeout).
    Left(Vec<(LinkId, LinkInfo)>),
}

impl MeroLink {
    /// Starts the thread. Returns once `init` succeeded (or failed) — `start` then proceeds
    /// in the background until the own entrypoint is answered — together with the channel
    /// entrypoint requests arrive on (for the responder) and a receiver told when `start`
    /// returned.
    pub fn spawn(cfg: MeroLinkConfig, out: MeroOutputs) -> Result<Spawned, ffi::MotrError> {
        let (ep_tx, ep_rx) = unbounded();
        let (ev_tx, ev_rx) = unbounded();
        let (cmd_tx, cmd_rx) = unbounded();
        let (init_tx, init_rx) = bounded(1);
        let (start_tx, start_rx) = bounded(1);
        let left = LinksLeft::default();
        let left_w = left.clone();
        let thread = std::thread::Builder::new()
            .name("hax-merolink".into())
            .spawn(move || {
                if let Err(e) = ffi::init(cfg.node_uuid.as_deref(), ep_tx, ev_tx) {
                    let _ = init_tx.send(Err(e));
                    return;
                }
                let _ = init_tx.send(Ok(()));
                log::info!(
                    "MeroLink: starting HA interface ({}) at {}",
                    ffi::backend(),
                    cfg.endpoint
                );
                let started = ffi::start(
                    &cfg.endpoint,
                    &cfg.process,
                    &cfg.ha_service,
                    &cfg.rm_service,
                );
                let ok = started.is_ok();
                let _ = start_tx.send(started.clone());
                if ok {
                    log::info!(
                        "MeroLink: HA interface started; own process {}",
                        cfg.process
                    );
                    Worker::new(cfg, out, left_w).run(ev_rx, cmd_rx);
                } else {
                    log::error!("MeroLink: start failed: {:?}", started);
                }
                ffi::fini();
                log::info!("MeroLink: HA interface finalised");
            })
            .map_err(|_| ffi::MotrError::Call {
                call: "spawn",
                errno: 12,
            })?;
        match init_rx.recv() {
            Ok(Ok(())) => Ok((
                MeroLink {
                    cmds: cmd_tx,
                    thread: Some(thread),
                    left,
                },
                ep_rx,
                start_rx,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(ffi::MotrError::Call {
                call: "init",
                errno: 5,
            }),
        }
    }

    /// A cloneable sender for commands.
    pub fn sender(&self) -> Sender<MeroCmd> {
        self.cmds.clone()
    }

    /// The current link table (for tests and status output).
    pub fn links(&self) -> Vec<(LinkId, LinkInfo)> {
        let (tx, rx) = bounded(1);
        if self.cmds.send(MeroCmd::Links { reply: tx }).is_err() {
            return Vec::new();
        }
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
    }

    /// Runs the shutdown sequence and waits up to `bound` for the thread to end. Past the
    /// bound it returns the links Motr was still disconnecting (the thread goes on alone).
    pub fn stop(mut self, bound: Duration) -> Stopped {
        let _ = self.cmds.send(MeroCmd::Stop);
        let deadline = Instant::now() + bound;
        let Some(t) = self.thread.take() else {
            return Stopped::Clean;
        };
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
            Stopped::Clean
        } else {
            Stopped::Left(self.left.get())
        }
    }
}

/// How long MeroLink waits, after a process's STOPPED, for the process to confirm the probe
/// that carries STOPPED's confirmation, before it has Motr drop the link anyway.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Where a stopped process's drain is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drain {
    /// Its STOPPED is not confirmed yet.
    AwaitingConfirmation,
    /// The probe after the confirmation went out at this time.
    Probing(Instant),
}

/// A note about a node that no configuration has (node type, key 2^64-1), ONLINE: Motr skips
/// notes whose object is not in its configuration cache, so it changes nothing (a fid without
/// a type, such as 0:0, would make Motr log "invalid note"). MeroLink sends it to a process
/// that reported STOPPED to carry the confirmation of STOPPED (Motr sends pending
/// confirmations with the next message of the link) before the link is dropped.
pub fn probe_note() -> Note {
    Note {
        fid: Fid::typed(b'n', 0, u64::MAX),
        state: HaState::Online,
    }
}

struct Worker {
    cfg: MeroLinkConfig,
    out: MeroOutputs,
    links: LinkTable,
    deliveries: Deliveries,
    /// Processes the self link has carried a note about: Motr ignores the first note it
    /// sees for a process, so a FAILED meant to drop a link must not be the first.
    noted: std::collections::HashSet<Fid>,
    /// Processes that reported STOPPED, from then until Motr is told to drop their links:
    /// first their STOPPED waits to be confirmed (durable), then the probe that carries the
    /// confirmation to them (see `probe_note`). Meanwhile no note about them goes on the self
    /// link (it would drop the link, and the confirmation with it: the process would hang).
    draining: HashMap<Fid, Drain>,
    drained_tx: Sender<Fid>,
    drained_rx: Receiver<Fid>,
    left: LinksLeft,
    /// Received messages not confirmed yet, per link, in order.
    inbox: Inbox,
    /// Records handed on to be made durable, with a credit (`recording`).
    recording: Recording,
    /// The local journal, when there is one: a record is confirmed once synced there.
    journal: Option<Journal>,
    /// Where `Ack`s report durable messages.
    acks_tx: Sender<AckKey>,
    acks_rx: Receiver<AckKey>,
    /// Each live link's generation (a counter per connection): `Ack`s carry it, so that one
    /// for a message of a link that is gone never confirms a message of a new link Motr gave
    /// the same address.
    gens: HashMap<LinkId, u64>,
    next_gen: u64,
    /// The STOPPED message of a link (its tag) and its process: once it is confirmed, the
    /// link is drained and dropped.
    stopped_on: HashMap<LinkId, (u64, Fid)>,
    /// Failure-vector requests answered on a link (pool, cookie): never answered twice (a
    /// second answer to one request makes m0d panic).
    fvec_answered: HashMap<LinkId, HashSet<FvecRequest>>,
    /// NVEC GETs waiting for the model to be ready (link, id of the GET, fids).
    pending_gets: Vec<(LinkId, u64, Vec<Fid>)>,
    /// Links that reconnected and wait for the whole state.
    pending_full: Vec<LinkId>,
    /// Processes that have had a link here: only their notes go on the self link (Motr
    /// keeps the state of at most 4096 processes noted there, and only linked processes' links
    /// are dropped through it).
    ever_linked: HashSet<Fid>,
}

impl Worker {
    fn new(cfg: MeroLinkConfig, mut out: MeroOutputs, left: LinksLeft) -> Self {
        let journal = out.journal.take();
        let deliveries = Deliveries::new(cfg.delivery_timeout);
        let (drained_tx, drained_rx) = unbounded();
        let (acks_tx, acks_rx) = unbounded();
        let mut w = Worker {
            cfg,
            out,
            links: LinkTable::default(),
            deliveries,
            noted: Default::default(),
            draining: HashMap::new(),
            drained_tx,
            drained_rx,
            left,
            inbox: Inbox::default(),
            recording: Recording::default(),
            journal: None,
            acks_tx,
            acks_rx,
            gens: HashMap::new(),
            next_gen: 1,
            stopped_on: HashMap::new(),
            fvec_answered: HashMap::new(),
            pending_gets: Vec::new(),
            pending_full: Vec::new(),
            ever_linked: HashSet::new(),
        };
        if let Some((j, replay)) = journal {
            w.journal = Some(j);
            w.replay(replay);
        }
        w
    }

    /// Records the journal kept from before (a killed hax's confirmed records that Consul
    /// may not hold): recorded again, as Motr would have sent them again had they not been
    /// confirmed. Each is retired once durable in Consul.
    fn replay(&mut self, replay: Vec<(u64, Entry)>) {
        if replay.is_empty() {
            return;
        }
        log::info!(
            "MeroLink: recording again {} record(s) of the journal not known to be in Consul",
            replay.len()
        );
        for (seq, e) in replay {
            let ack = Some(Ack::new(REPLAY_LINK, 0, seq, self.acks_tx.clone()));
            match e {
                Entry::Event {
                    process,
                    kind,
                    process_type,
                    pid,
                } => {
                    let ev = ProcessEvent {
                        process,
                        event: kind,
                        process_type,
                        pid,
                        link: None,
                        ack,
                    };
                    if let Some(r) = &self.out.states {
                        r.do_send(ProcessEvent {
                            ack: None,
                            ..ev.clone()
                        });
                    }
                    if self.out.record.is_some() {
                        self.record(ToRecord::Event(ev));
                    }
                }
                Entry::Stob {
                    from_process,
                    error,
                } => {
                    if self.out.stob_errors.is_some() {
                        self.record(ToRecord::Stob(StobIoEvent {
                            from_process,
                            error,
                            ack,
                        }));
                    }
                }
            }
        }
    }

    /// Appends a record to the journal, if there is one; a failing journal is given up
    /// (its records are then confirmed once durable in Consul, as without one).
    fn journal_append(&mut self, key: AckKey, e: Entry) {
        let Some(j) = &mut self.journal else {
            return;
        };
        if let Err(err) = j.append(key, &e) {
            self.journal_failed("append", err);
        }
    }

    /// Syncs the journal and confirms what it made durable (in each link's order).
    fn journal_sync(&mut self) {
        let Some(j) = &mut self.journal else {
            return;
        };
        if j.pending() == 0 {
            return;
        }
        match j.sync() {
            Ok(keys) => {
                let mut touched = HashSet::new();
                for key in keys {
                    if self.inbox_acked(key) {
                        touched.insert(key.0);
                    }
                }
                for link in touched {
                    self.confirm_due(link);
                }
            }
            Err(err) => self.journal_failed("sync", err),
        }
    }

    /// The message of `key` is durable: marked so in the inbox if its link is still the one
    /// it came on. Whether that made something confirmable.
    fn inbox_acked(&mut self, (link, gen, tag): AckKey) -> bool {
        self.gens.get(&link) == Some(&gen) && self.inbox.acked(link, tag)
    }

    fn journal_retire(&mut self, key: AckKey) {
        let Some(j) = &mut self.journal else {
            return;
        };
        if let Err(err) = j.retire(key) {
            self.journal_failed("retire", err);
        }
    }

    fn journal_failed(&mut self, what: &str, err: std::io::Error) {
        crate::metrics::journal_error();
        log::error!(
            "MeroLink: the journal failed ({what}: {err}); going on without it: process events are confirmed once durable in Consul"
        );
        self.journal = None;
    }

    fn run(mut self, events: Receiver<MotrEvent>, cmds: Receiver<MeroCmd>) {
        let tick = Duration::from_millis(200);
        let mut last_expiry = Instant::now();
        let drained = self.drained_rx.clone();
        let acks = self.acks_rx.clone();
        loop {
            // Events first: a command must see every link that connected and every STOPPED
            // that arrived before it was taken.
            select_biased! {
                recv(events) -> ev => match ev {
                    Ok(ev) => self.on_event(ev),
                    Err(_) => break,
                },
                recv(acks) -> a => if let Ok(key) = a {
                    self.on_ack(key);
                },
                recv(drained) -> p => if let Ok(p) = p {
                    self.drain_done(p);
                },
                recv(cmds) -> cmd => match cmd {
                    Ok(MeroCmd::Stop) | Err(_) => {
                        // Err: every handle is gone; shut down as if told to.
                        self.shutdown(&events);
                        return;
                    }
                    Ok(cmd) => self.on_cmd(cmd),
                },
                recv(after(tick)) -> _ => {},
            }
            // Group commit: the journal is synced once the events at hand are taken in (or
            // after a batch of them), and what it made durable is confirmed.
            if self.journal.as_ref().is_some_and(|j| j.pending() > 0)
                && (events.is_empty() || self.journal.as_ref().is_some_and(|j| j.pending() >= 1024))
            {
                self.journal_sync();
            }
            if !self.pending_gets.is_empty() || !self.pending_full.is_empty() {
                self.serve_pending();
            }
            // Scanning every pending send is O(links); do it once per tick, not per event.
            if last_expiry.elapsed() >= tick {
                last_expiry = Instant::now();
                crate::metrics::links(&self.links.count_by_state());
                let expired = self.deliveries.expire(last_expiry);
                if expired > 0 {
                    log::warn!(
                        "MeroLink: {expired} send(s) got no delivery report within {:?}",
                        self.cfg.delivery_timeout
                    );
                }
                let overdue: Vec<Fid> = self
                    .draining
                    .iter()
                    .filter(|(_, d)| matches!(d, Drain::Probing(since) if since.elapsed() >= DRAIN_WAIT))
                    .map(|(p, _)| *p)
                    .collect();
                for p in overdue {
                    log::info!("MeroLink: {p} did not confirm the probe after its STOPPED within {DRAIN_WAIT:?}; dropping its link anyway");
                    self.drain_done(p);
                }
            }
        }
    }

    fn on_cmd(&mut self, cmd: MeroCmd) {
        match cmd {
            MeroCmd::Broadcast {
                notes,
                skip_process,
                done,
            } => self.broadcast(&notes, skip_process, done),
            MeroCmd::DropRestarted {
                process,
                notes,
                done,
            } => self.drop_restarted(process, notes, done),
            MeroCmd::Links { reply } => {
                let _ = reply.send(self.links.snapshot());
            }
            MeroCmd::Stop => unreachable!("handled in run"),
        }
    }

    /// A restarted process: Motr must drop its old link before the new incarnation is
    /// answered. The self link gets TRANSIENT then FAILED (Motr ignores an unchanged state:
    /// after an earlier restart it may hold FAILED already, and it ignores the first note about
    /// a process), and `done` runs once the self link confirmed them, that is once Motr
    /// acted on them. The other links learn the same notes without being waited for.
    fn drop_restarted(&mut self, process: Fid, notes: Vec<Note>, done: OnDone) {
        if self.links.of_process(process).is_empty() {
            done(SendReport::default());
            return;
        }
        log::info!("MeroLink: {process} restarted; Motr drops its old link before it is answered");
        self.links.deactivate_process(process);
        self.draining.remove(&process);
        let transient = Note {
            fid: process,
            state: HaState::Transient,
        };
        let mut to_self = vec![transient];
        to_self.extend(notes.iter().copied());
        match self.links.self_link() {
            Some(own) => {
                let batch = self.deliveries.open(Some(done));
                self.send_tracked(batch, own, 0, &to_self);
                self.deliveries.seal(batch);
            }
            None => done(SendReport::default()),
        }
        let others: Vec<LinkId> = self
            .links
            .active(Some(process))
            .into_iter()
            .filter(|l| Some(*l) != self.links.self_link())
            .collect();
        self.send_to(&others, &to_self, None);
        if let Some(n) = notes.iter().find(|n| n.fid == process) {
            self.out.view.broadcast_by_merolink(process, n.state);
        }
    }

    /// Sends `notes` (split at 1024) to every active link except `skip`'s; `done` is called
    /// once every send has been answered or timed out. Notes about a process whose STOPPED
    /// confirmation is still on its way are kept off the self link (they would drop its link
    /// too early); its link is dropped once the confirmation got there.
    fn broadcast(&mut self, notes: &[Note], skip: Option<Fid>, done: Option<OnDone>) {
        let links = self.links.active(skip);
        let own = match self.links.self_link() {
            Some(own) if links.contains(&own) => own,
            _ => return self.send_to(&links, notes, done),
        };
        let others: Vec<LinkId> = links.into_iter().filter(|l| *l != own).collect();
        // The self link is where Motr drops links: it needs only the notes about processes
        // linked here, never hax's own (Motr would drop its local link and abort), and none
        // about a process whose STOPPED confirmation is still on its way.
        let to_self: Vec<Note> = notes
            .iter()
            .filter(|n| {
                n.fid.is_process()
                    && n.fid != self.cfg.process
                    && self.ever_linked.contains(&n.fid)
                    && !self.draining.contains_key(&n.fid)
            })
            .copied()
            .collect();
        let batch = self.deliveries.open(done);
        self.send_batch(batch, &others, notes);
        self.send_batch(batch, &[own], &to_self);
        self.deliveries.seal(batch);
    }

    fn send_to(&mut self, links: &[LinkId], notes: &[Note], done: Option<OnDone>) {
        let batch = self.deliveries.open(done);
        self.send_batch(batch, links, notes);
        self.deliveries.seal(batch);
    }

    fn send_batch(&mut self, batch: u64, links: &[LinkId], notes: &[Note]) {
        if notes.is_empty() || links.is_empty() {
            return;
        }
        let self_link = self.links.self_link();
        for chunk in notes.chunks(NOTES_MAX) {
            for (link, sent) in links.iter().zip(ffi::broadcast_nvec_set(links, chunk)) {
                match sent {
                    Ok(tag) => {
                        if self_link == Some(*link) {
                            self.noted
                                .extend(chunk.iter().filter(|n| n.fid.is_process()).map(|n| n.fid));
                        }
                        self.deliveries.sent(batch, *link, tag);
                    }
                    Err(e) => {
                        log::warn!("MeroLink: send on link {:#x} refused: {e}", link.0);
                        self.deliveries.failed(batch);
                    }
                }
            }
        }
    }

    /// A process reported STOPPED: its links get nothing more but a probe that carries the
    /// confirmation of STOPPED to it (a process waits for that confirmation before it exits;
    /// a link dropped before Motr sent it would leave the process hanging), then Motr drops
    /// them (`drain_done`).
    fn start_drain(&mut self, process: Fid) {
        if matches!(self.draining.get(&process), Some(Drain::Probing(_))) {
            return;
        }
        self.draining
            .insert(process, Drain::Probing(Instant::now()));
        let tx = self.drained_tx.clone();
        let batch = self.deliveries.open(Some(Box::new(move |_| {
            let _ = tx.send(process);
        })));
        for link in self.links.of_process(process) {
            self.send_tracked(batch, link, 0, &[probe_note()]);
        }
        self.deliveries.seal(batch);
    }

    fn drain_done(&mut self, process: Fid) {
        if self.draining.remove(&process).is_some() && !self.links.of_process(process).is_empty() {
            self.drop_on_self_link(process);
        }
    }

    /// Makes Motr drop a stopped process's links now: FAILED on the self link, after a
    /// TRANSIENT so that it is a change (Motr ignores an unchanged state and the first note
    /// about a process). The other links learn the state from ProcessStatus's broadcast, which
    /// may coalesce a quick STARTED..STOPPED into no change at all; the link would then stay.
    fn drop_on_self_link(&mut self, process: Fid) {
        let Some(own) = self.links.self_link() else {
            return;
        };
        if process == self.cfg.process {
            // Motr would drop its own local link and abort on the re-request that follows.
            return;
        }
        let notes = [
            Note {
                fid: process,
                state: HaState::Transient,
            },
            Note {
                fid: process,
                state: HaState::Failed,
            },
        ];
        let batch = self.deliveries.open(None);
        self.send_tracked(batch, own, 0, &notes);
        self.deliveries.seal(batch);
    }

    fn send_tracked(&mut self, batch: u64, link: LinkId, id_of_get: u64, notes: &[Note]) {
        match ffi::send_nvec_set(link, id_of_get, notes) {
            Ok(tag) => {
                if id_of_get == 0 && self.links.self_link() == Some(link) {
                    self.noted
                        .extend(notes.iter().filter(|n| n.fid.is_process()).map(|n| n.fid));
                }
                self.deliveries.sent(batch, link, tag)
            }
            Err(e) => {
                log::warn!("MeroLink: send on link {:#x} refused: {e}", link.0);
                self.deliveries.failed(batch);
            }
        }
    }

    fn on_event(&mut self, ev: MotrEvent) {
        match ev {
            MotrEvent::Received {
                link,
                tag,
                msg,
                msg_ref,
            } => self.on_message(link, tag, msg, msg_ref),
            MotrEvent::Delivered { link, tag } => {
                self.deliveries.resolve(link, tag, true);
            }
            MotrEvent::NotDelivered { link, tag } => {
                if self.deliveries.resolve(link, tag, false) {
                    log::info!(
                        "MeroLink: message tag {tag} on link {:#x} not delivered",
                        link.0
                    );
                }
            }
            MotrEvent::LinkConnected {
                req_id,
                link,
                peer_ep,
            } => {
                let who = self.out.requests.take(req_id);
                let process = who.as_ref().map(|(p, _, _)| *p);
                let reconnected = who.as_ref().is_some_and(|(_, _, first)| !first);
                let is_self = process == Some(self.cfg.process) && self.links.self_link().is_none();
                log::info!(
                    "MeroLink: link {:#x} connected: process {} at {}{}",
                    link.0,
                    process.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    peer_ep,
                    if is_self { " (self link)" } else { "" }
                );
                if let Some(p) = process {
                    self.out.linked.add(p);
                    self.ever_linked.insert(p);
                }
                self.gens.insert(link, self.next_gen);
                self.next_gen += 1;
                self.links.connect(
                    link,
                    LinkInfo {
                        process,
                        peer_ep,
                        state: LinkState::Active,
                        is_self,
                    },
                );
                if reconnected && !is_self {
                    // A process of an HA that restarted (Motr's reconnect case): it heard
                    // nothing while its HA was away.
                    self.pending_full.push(link);
                    self.serve_pending();
                }
            }
            MotrEvent::LinkReused { req_id, link } => {
                let who = self.out.requests.take(req_id);
                if let Some(info) = self.links.get_mut(link) {
                    if info.state == LinkState::Inactive {
                        info.state = LinkState::Active;
                    }
                    if info.process.is_none() {
                        info.process = who.map(|(p, _, _)| p);
                        if let Some(p) = info.process {
                            self.out.linked.add(p);
                            self.ever_linked.insert(p);
                        }
                    }
                }
                log::debug!("MeroLink: link {:#x} reused", link.0);
            }
            MotrEvent::LinkAbsent { req_id } => {
                let who = self
                    .out
                    .requests
                    .take(req_id)
                    .map(|(p, _, _)| p.to_string())
                    .unwrap_or_else(|| "?".into());
                log::info!("MeroLink: link absent for request {req_id} (process {who}): the process must restart");
            }
            MotrEvent::LinkDisconnecting { link } => {
                if let Some(info) = self.links.get_mut(link) {
                    info.state = LinkState::Disconnecting;
                }
                let dropped = self.inbox.drop_link(link);
                if dropped > 0 {
                    log::info!("MeroLink: link {:#x} disconnecting with {dropped} message(s) unconfirmed (the process sends them again on its next link)", link.0);
                }
                self.stopped_on.remove(&link);
                self.fvec_answered.remove(&link);
                self.gauge();
                log::info!("MeroLink: link {:#x} disconnecting", link.0);
            }
            MotrEvent::LinkDisconnected { link } => {
                crate::metrics::link_disconnected();
                self.gens.remove(&link);
                if let Some(p) = self.links.remove(link).and_then(|i| i.process) {
                    self.out.linked.remove(p);
                    if self.links.of_process(p).is_empty() {
                        self.draining.remove(&p);
                    }
                }
                log::info!(
                    "MeroLink: link {:#x} disconnected ({} links left)",
                    link.0,
                    self.links.len()
                );
            }
        }
    }

    /// A message from a process: handed on, answered or held, then confirmed in its link's
    /// order once handled (see `inbox`). The self link's (hax's own events) are confirmed at
    /// once: a restarted hax has a new Motr instance, nothing of the old one is sent again.
    fn on_message(&mut self, link: LinkId, tag: u64, msg: HaMsg, msg_ref: MsgRef) {
        let own = self.links.self_link() == Some(link);
        let gen = self.gens.get(&link).copied().unwrap_or(0);
        let ack = |w: &Worker| (!own).then(|| Ack::new(link, gen, tag, w.acks_tx.clone()));
        let awaits = match msg {
            HaMsg::ProcessEvent {
                process,
                event,
                process_type,
                pid,
            } => match ProcessEventKind::from_u64(event) {
                None => {
                    log::warn!("MeroLink: process {process} sent unknown event {event}; ignored");
                    Awaits::Nothing
                }
                Some(kind) => {
                    if kind == ProcessEventKind::Stopped && process != self.cfg.process {
                        let n = self.links.deactivate_process(process);
                        log::info!("MeroLink: {process} STOPPED: {n} link(s) inactive");
                        if n > 0 {
                            // Drained and dropped once STOPPED is confirmed (`confirm_due`).
                            self.stopped_on.insert(link, (tag, process));
                            self.draining
                                .entry(process)
                                .or_insert(Drain::AwaitingConfirmation);
                        }
                    }
                    let recorded = self.out.record.is_some() && !own;
                    let ev = ProcessEvent {
                        process,
                        event: kind,
                        process_type: ProcessType::from_u64(process_type),
                        pid,
                        link: Some(link),
                        ack: if recorded { ack(self) } else { None },
                    };
                    if let Some(r) = &self.out.states {
                        r.do_send(ProcessEvent {
                            ack: None,
                            ..ev.clone()
                        });
                    }
                    match &self.out.record {
                        Some(_) if recorded => {
                            self.journal_append(
                                (link, gen, tag),
                                Entry::Event {
                                    process,
                                    kind,
                                    process_type: ev.process_type,
                                    pid,
                                },
                            );
                            self.record(ToRecord::Event(ev));
                            Awaits::Ack
                        }
                        Some(r) => {
                            r.do_send(ev);
                            Awaits::Nothing
                        }
                        None => Awaits::Nothing,
                    }
                }
            },
            HaMsg::NvecGet { id_of_get, fids } => {
                // Answering the same GET twice (after a re-send) is harmless. While the model
                // is not ready (a restarted hax rebuilding it), the question waits.
                self.pending_gets.push((link, id_of_get, fids));
                self.serve_pending();
                Awaits::Nothing
            }
            HaMsg::FailureVecReq { pool, cookie } => Awaits::Head { pool, cookie },
            HaMsg::StobIoq(error) => {
                let from = self.links.get_mut(link).and_then(|i| i.process);
                log::warn!(
                    "MeroLink: STOB I/O error on sdev {} from {:?}",
                    error.sdev,
                    from
                );
                match &self.out.stob_errors {
                    Some(_) if !own => {
                        self.journal_append(
                            (link, gen, tag),
                            Entry::Stob {
                                from_process: from,
                                error: error.clone(),
                            },
                        );
                        let ev = StobIoEvent {
                            from_process: from,
                            error,
                            ack: ack(self),
                        };
                        self.record(ToRecord::Stob(ev));
                        Awaits::Ack
                    }
                    _ => Awaits::Nothing,
                }
            }
            HaMsg::ServiceEvent {
                service,
                process,
                event,
                service_type,
                ..
            } => {
                log::debug!("MeroLink: service {service} of {process}: event {event} type {service_type} (tag {tag})");
                Awaits::Nothing
            }
            other => {
                log::debug!(
                    "MeroLink: message on link {:#x} tag {tag} ignored: {other:?}",
                    link.0
                );
                Awaits::Nothing
            }
        };
        self.inbox.push(link, tag, msg_ref, awaits);
        self.confirm_due(link);
    }

    /// Hands a record on, or keeps it waiting for credit (`recording`); a waiting event it
    /// replaced is handled: it is confirmed in its link's order.
    fn record(&mut self, r: ToRecord) {
        match self.recording.offer(r) {
            Offer::Send(r) => self.hand_on(r),
            Offer::Waits { replaced } => {
                if let Some(key) = replaced {
                    self.journal_retire(key);
                    if self.inbox_acked(key) {
                        self.confirm_due(key.0);
                    }
                }
            }
        }
    }

    fn hand_on(&self, r: ToRecord) {
        match r {
            ToRecord::Event(ev) => {
                if let Some(to) = &self.out.record {
                    to.do_send(ev);
                }
            }
            ToRecord::Stob(ev) => {
                if let Some(to) = &self.out.stob_errors {
                    to.do_send(ev);
                }
            }
        }
    }

    /// A message became durable (an `Ack` of a record handed on came back): the records
    /// waiting for credit may go.
    fn on_ack(&mut self, key: AckKey) {
        for r in self.recording.acked() {
            self.hand_on(r);
        }
        self.journal_retire(key);
        if self.inbox_acked(key) {
            self.confirm_due(key.0);
        }
    }

    /// Confirms the messages of `link` whose turn has come, in order; answers a
    /// failure-vector request right after confirming it (so that a request Motr could send
    /// again is one never answered).
    fn confirm_due(&mut self, link: LinkId) {
        for due in self.inbox.due(link) {
            if let Err(e) = ffi::delivered(link, due.msg) {
                log::debug!("MeroLink: message tag {} not confirmed: {e}", due.tag);
                self.inbox.drop_link(link);
                break;
            }
            if let Some((pool, cookie)) = due.answer {
                self.answer_failure_vector(link, pool, cookie);
            }
            if let Some((tag, process)) = self.stopped_on.get(&link).copied() {
                if tag == due.tag {
                    self.stopped_on.remove(&link);
                    self.start_drain(process);
                }
            }
        }
        self.gauge();
    }

    /// Answers the NVEC GETs and sends the whole state to reconnected links, once the model
    /// is ready (otherwise they wait; `run` tries again every tick).
    fn serve_pending(&mut self) {
        let gets = std::mem::take(&mut self.pending_gets);
        for (link, id_of_get, fids) in gets {
            let Some(notes) = self.out.view.answer(&fids) else {
                self.pending_gets.push((link, id_of_get, fids));
                continue;
            };
            let batch = self.deliveries.open(None);
            for chunk in notes.chunks(NOTES_MAX) {
                self.send_tracked(batch, link, id_of_get, chunk);
            }
            self.deliveries.seal(batch);
            log::debug!(
                "MeroLink: NVEC GET {id_of_get} ({} fids) answered on link {:#x}",
                fids.len(),
                link.0
            );
        }
        if self.pending_full.is_empty() {
            return;
        }
        let Some(notes) = self.out.view.full_state() else {
            return;
        };
        for link in std::mem::take(&mut self.pending_full) {
            if !ffi::is_sendable(link) {
                continue;
            }
            log::info!(
                "MeroLink: link {:#x} reconnected: sending it the state of {} object(s)",
                link.0,
                notes.len()
            );
            self.send_to(&[link], &notes, None);
        }
    }

    fn answer_failure_vector(&mut self, link: LinkId, pool: Fid, cookie: (u64, u64)) {
        if !self
            .fvec_answered
            .entry(link)
            .or_default()
            .insert((pool, cookie))
        {
            log::info!("MeroLink: failure-vector request for {pool} (cookie {cookie:x?}) on link {:#x} answered already; not again", link.0);
            return;
        }
        let batch = self.deliveries.open(None);
        match ffi::send_failure_vec_rep(link, &pool, cookie, &[]) {
            Ok(t) => self.deliveries.sent(batch, link, t),
            Err(e) => {
                log::warn!("MeroLink: failure-vector reply for {pool} refused: {e}");
                self.deliveries.failed(batch);
            }
        }
        self.deliveries.seal(batch);
    }

    fn gauge(&self) {
        crate::metrics::METRICS
            .unconfirmed_messages
            .set(self.inbox.held() as i64);
    }

    /// Shuts the interface down. Every other process's link is dropped first, all at once
    /// (TRANSIENT then FAILED on the self link, never for hax's own process: Motr would drop
    /// its local link and abort): Motr's `stop` disconnects links one after the other and
    /// waits out the RPC timeout for each peer that is gone, so a dead peer queued first would
    /// hold the live ones back. Then `stop` runs on a helper thread while this thread goes on
    /// handling Motr's events (own STOPPING..STOPPED, link teardown), and `fini` follows.
    fn shutdown(&mut self, events: &Receiver<MotrEvent>) {
        for r in self.recording.drain() {
            self.hand_on(r);
        }
        let own = self.cfg.process;
        let others: Vec<Fid> = {
            let mut v: Vec<Fid> = self
                .links
                .snapshot()
                .into_iter()
                .filter(|(_, i)| !i.is_self && i.state != LinkState::Disconnecting)
                .filter_map(|(_, i)| i.process)
                .filter(|p| *p != own)
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if let Some(self_link) = self.links.self_link() {
            let notes: Vec<Note> = others
                .iter()
                .flat_map(|p| {
                    [HaState::Transient, HaState::Failed].map(|state| Note { fid: *p, state })
                })
                .collect();
            if !notes.is_empty() {
                log::info!(
                    "MeroLink: shutting down: Motr drops the links of {} process(es)",
                    others.len()
                );
            }
            self.send_to(&[self_link], &notes, None);
        }
        self.left.set(self.links.snapshot());
        log::info!("MeroLink: stopping HA interface");
        let stopper = std::thread::Builder::new()
            .name("hax-motr-stop".into())
            .spawn(ffi::stop);
        match stopper {
            Ok(t) => {
                while !t.is_finished() {
                    if let Ok(ev) = events.recv_timeout(Duration::from_millis(20)) {
                        self.on_event(ev);
                        self.left.set(self.links.snapshot());
                    }
                    while let Ok(key) = self.acks_rx.try_recv() {
                        self.on_ack(key);
                    }
                    self.journal_sync();
                }
                let _ = t.join();
            }
            Err(e) => {
                log::warn!("MeroLink: no thread for stop ({e}); stopping on this one");
                ffi::stop();
            }
        }
        while let Ok(ev) = events.try_recv() {
            self.on_event(ev);
        }
        self.left.set(self.links.snapshot());
        log::info!(
            "MeroLink: HA interface stopped ({} links left)",
            self.links.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::motr::HaMsg;

    struct NoView;
    impl StateView for NoView {
        fn answer(&self, fids: &[Fid]) -> Option<Vec<Note>> {
            Some(
                fids.iter()
                    .map(|&fid| Note {
                        fid,
                        state: HaState::Online,
                    })
                    .collect(),
            )
        }
    }

    /// Runs a Worker over events and commands queued before it starts (no Motr interface:
    /// every send is refused, which the reports count as `failed`, one per target link).
    fn run_queued(events: Vec<MotrEvent>, cmds: Vec<MeroCmd>, requests: EntrypointLog) {
        let (ev_tx, ev_rx) = unbounded();
        let (cmd_tx, cmd_rx) = unbounded();
        for e in events {
            ev_tx.send(e).unwrap();
        }
        for c in cmds {
            cmd_tx.send(c).unwrap();
        }
        cmd_tx.send(MeroCmd::Stop).unwrap();
        test_worker(requests).run(ev_rx, cmd_rx);
    }

    /// A Worker with no Motr interface and nothing recording.
    fn test_worker(requests: EntrypointLog) -> Worker {
        let cfg = MeroLinkConfig {
            endpoint: "inet:tcp:127.0.0.1@1".into(),
            process: Fid::typed(b'r', 1, 6),
            ha_service: Fid::typed(b's', 1, 7),
            rm_service: Fid::typed(b's', 1, 8),
            node_uuid: None,
            delivery_timeout: Duration::from_secs(1),
        };
        let out = MeroOutputs {
            record: None,
            states: None,
            stob_errors: None,
            view: Arc::new(NoView),
            requests,
            linked: LinkedProcesses::default(),
            journal: None,
        };
        Worker::new(cfg, out, LinksLeft::default())
    }

    #[test]
    fn a_late_ack_for_a_link_that_is_gone_does_not_confirm_a_new_link_at_the_same_address() {
        let requests = EntrypointLog::default();
        let mut w = test_worker(requests.clone());
        let p = Fid::typed(b'r', 1, 20);
        // A process event on link 0x1000 waits for its commit...
        w.on_event(connected(&requests, 1, 0x1000, p));
        let old = (LinkId(0x1000), w.gens[&LinkId(0x1000)], 2);
        w.inbox.push(LinkId(0x1000), 2, MsgRef(1), Awaits::Ack);
        // ...the link goes, and Motr gives a new link of the process the same address; its
        // first message has the same tag and waits too.
        w.on_event(MotrEvent::LinkDisconnecting {
            link: LinkId(0x1000),
        });
        w.on_event(MotrEvent::LinkDisconnected {
            link: LinkId(0x1000),
        });
        w.on_event(connected(&requests, 2, 0x1000, p));
        let new = (LinkId(0x1000), w.gens[&LinkId(0x1000)], 2);
        assert_ne!(old.1, new.1, "a new connection, a new generation");
        w.inbox.push(LinkId(0x1000), 2, MsgRef(2), Awaits::Ack);
        // The old message's commit comes back late: it must not make the new one durable.
        assert!(!w.inbox_acked(old));
        assert_eq!(w.inbox.due(LinkId(0x1000)), vec![]);
        // The new message's own commit does.
        assert!(w.inbox_acked(new));
        assert_eq!(w.inbox.due(LinkId(0x1000)).len(), 1);
    }

    fn connected(requests: &EntrypointLog, lo: u64, link: u64, process: Fid) -> MotrEvent {
        requests.record(&EntrypointReq {
            req_id: ReqId { hi: 0, lo },
            remote_ep: "ep".into(),
            process,
            git_rev: String::new(),
            pid: 1,
            first_request: true,
            received: Instant::now(),
        });
        MotrEvent::LinkConnected {
            req_id: ReqId { hi: 0, lo },
            link: LinkId(link),
            peer_ep: "ep".into(),
        }
    }

    /// A broadcast and where its report went.
    fn broadcast() -> (MeroCmd, Receiver<SendReport>) {
        let (tx, rx) = bounded(1);
        let cmd = MeroCmd::Broadcast {
            notes: vec![Note {
                fid: Fid::typed(b'r', 1, 0x99),
                state: HaState::Failed,
            }],
            skip_process: None,
            done: Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        };
        (cmd, rx)
    }

    #[test]
    fn a_broadcast_taken_after_a_link_connected_reaches_that_link() {
        // Both queued before the worker looks: the event must be handled first (a random
        // choice between the two channels would miss the link about half the time).
        for _ in 0..20 {
            let requests = EntrypointLog::default();
            let ev = connected(&requests, 2, 0x10, Fid::typed(b'r', 1, 0x20));
            let (cmd, rx) = broadcast();
            run_queued(vec![ev], vec![cmd], requests);
            let r = rx.recv_timeout(Duration::from_secs(5)).expect("reported");
            assert_eq!(r.failed, 1, "the new link was a target: {r:?}");
        }
    }

    #[test]
    fn a_broadcast_taken_after_a_stopped_skips_that_process() {
        for _ in 0..20 {
            let requests = EntrypointLog::default();
            let p = Fid::typed(b'r', 1, 0x21);
            let ev = connected(&requests, 2, 0x11, p);
            let stopped = MotrEvent::Received {
                link: LinkId(0x11),
                tag: 2,
                msg: HaMsg::ProcessEvent {
                    process: p,
                    event: ProcessEventKind::Stopped as u64,
                    process_type: 3,
                    pid: 1,
                },
                msg_ref: MsgRef(0),
            };
            let (cmd, rx) = broadcast();
            run_queued(vec![ev, stopped], vec![cmd], requests);
            let r = rx.recv_timeout(Duration::from_secs(5)).expect("reported");
            assert_eq!(r.failed + r.sent, 0, "the stopped process got it: {r:?}");
        }
    }

    fn req(lo: u64) -> EntrypointReq {
        EntrypointReq {
            req_id: ReqId { hi: 0, lo },
            remote_ep: "ep".into(),
            process: Fid::typed(b'r', 1, lo),
            git_rev: String::new(),
            pid: 1,
            first_request: true,
            received: Instant::now(),
        }
    }

    #[test]
    fn the_entrypoint_log_stays_bounded_under_a_storm_of_replies_that_make_no_link() {
        let log = EntrypointLog::default();
        for i in 0..(ENTRYPOINT_LOG_MAX as u64 + 5000) {
            log.record(&req(i));
        }
        assert!(log.len() <= ENTRYPOINT_LOG_MAX, "{}", log.len());
        // The newest are kept; a link callback takes its entry.
        let last = ENTRYPOINT_LOG_MAX as u64 + 4999;
        assert!(log.take(ReqId { hi: 0, lo: last }).is_some());
        assert!(
            log.take(ReqId { hi: 0, lo: 0 }).is_none(),
            "the oldest went first"
        );
    }
}
