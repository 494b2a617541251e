//! MeroLink: the actor pinned to the one thread that owns Motr's HA interface.
//!
//! Its thread (`hax-merolink`) calls init, adopts itself, calls `start` (which blocks until
//! hax's own entrypoint request is answered by the entrypoint responder on another thread),
//! then serves two crossbeam mailboxes: `MotrEvent`s from the C callbacks and `MeroCmd`s
//! from the other actors. It tracks links from connected to disconnected, never sends on a
//! link that is disconnecting or whose process reported STOPPED, splits broadcasts at 1024
//! notes, answers NVEC GET and failure-vector requests on the asking link, and tracks every
//! send until Motr reports it delivered or not delivered (or a bounded wait passes).
use super::links::{Deliveries, LinkInfo, LinkState, LinkTable, OnDone, SendReport};
use crate::ffi;
use crate::fid::Fid;
use crate::messages::{ProcessEvent, StobIoEvent};
use crate::motr::{
    EntrypointReq, HaMsg, HaState, LinkId, MotrEvent, Note, ProcessEventKind, ProcessType, ReqId,
    NOTES_MAX,
};
use actix::Recipient;
use crossbeam_channel::{after, bounded, select, unbounded, Receiver, Sender};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What MeroLink needs to start the interface.
#[derive(Clone, Debug)]
pub struct MeroLinkConfig {
    pub endpoint: String,
    pub process: Fid,
    pub ha_service: Fid,
    pub rm_service: Fid,
    pub node_uuid: String,
    /// How long a send may wait for Motr's delivered/not-delivered before it is given up.
    pub delivery_timeout: Duration,
}

/// Answers NVEC GET questions from memory (implemented by the HA state model).
pub trait StateView: Send + Sync {
    fn answer(&self, fids: &[Fid]) -> Vec<Note>;
    /// MeroLink broadcast `state` for `process` on its own (a restart's FAILED): the model
    /// records it as sent, so that the process's next state is a change again.
    fn broadcast_by_merolink(&self, _process: Fid, _state: HaState) {}
}

/// Entrypoint requests in flight: who asked, so that a new link can be tied to its process.
#[derive(Clone, Default)]
pub struct EntrypointLog(Arc<Mutex<HashMap<ReqId, (Fid, String)>>>);

impl EntrypointLog {
    pub fn record(&self, req: &EntrypointReq) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req.req_id, (req.process, req.remote_ep.clone()));
    }
    fn take(&self, id: ReqId) -> Option<(Fid, String)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
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
    pub process_events: Option<Recipient<ProcessEvent>>,
    pub stob_errors: Option<Recipient<StobIoEvent>>,
    pub view: Arc<dyn StateView>,
    pub requests: EntrypointLog,
    /// Kept up to date by MeroLink (may be a fresh default when nobody reads it).
    pub linked: LinkedProcesses,
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
    /// Shut down: broadcast `final_notes`, wait up to `wait` for delivery, stop, fini.
    Stop {
        final_notes: Vec<Note>,
        wait: Duration,
    },
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
        let thread = std::thread::Builder::new()
            .name("hax-merolink".into())
            .spawn(move || {
                if let Err(e) = ffi::init(&cfg.node_uuid, ep_tx, ev_tx) {
                    let _ = init_tx.send(Err(e));
                    return;
                }
                let _ = init_tx.send(Ok(()));
                if let Err(e) = ffi::thread_adopt() {
                    log::warn!("MeroLink: thread adoption failed ({e}); continuing unadopted");
                }
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
                    Worker::new(cfg, out).run(ev_rx, cmd_rx);
                } else {
                    log::error!("MeroLink: start failed: {:?}", started);
                }
                ffi::thread_shun();
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

    /// Runs the shutdown sequence and waits for the thread to end.
    pub fn stop(mut self, final_notes: Vec<Note>, wait: Duration) {
        let _ = self.cmds.send(MeroCmd::Stop { final_notes, wait });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
}

impl Worker {
    fn new(cfg: MeroLinkConfig, out: MeroOutputs) -> Self {
        let deliveries = Deliveries::new(cfg.delivery_timeout);
        Worker {
            cfg,
            out,
            links: LinkTable::default(),
            deliveries,
            noted: Default::default(),
        }
    }

    fn run(mut self, events: Receiver<MotrEvent>, cmds: Receiver<MeroCmd>) {
        let tick = Duration::from_millis(200);
        let mut last_expiry = Instant::now();
        loop {
            select! {
                recv(events) -> ev => match ev {
                    Ok(ev) => self.on_event(ev),
                    Err(_) => break,
                },
                recv(cmds) -> cmd => match cmd {
                    Ok(MeroCmd::Stop { final_notes, wait }) => {
                        self.shutdown(final_notes, wait, &events);
                        return;
                    }
                    Ok(cmd) => self.on_cmd(cmd),
                    // Every handle is gone: shut down as if told to.
                    Err(_) => {
                        self.shutdown(Vec::new(), Duration::from_secs(1), &events);
                        return;
                    }
                },
                recv(after(tick)) -> _ => {},
            }
            // Scanning every pending send is O(links); do it once per tick, not per event.
            if last_expiry.elapsed() >= tick {
                last_expiry = Instant::now();
                let expired = self.deliveries.expire(last_expiry);
                if expired > 0 {
                    log::warn!(
                        "MeroLink: {expired} send(s) got no delivery report within {:?}",
                        self.cfg.delivery_timeout
                    );
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
            } => {
                if self.links.of_process(process).is_empty() {
                    done(SendReport::default());
                } else {
                    log::info!("MeroLink: {process} restarted; broadcasting its FAILED state before it is answered");
                    self.links.deactivate_process(process);
                    if !self.noted.contains(&process) {
                        // Motr ignores the first note about a process: make FAILED the second.
                        self.broadcast(
                            &[Note {
                                fid: process,
                                state: HaState::Transient,
                            }],
                            Some(process),
                            None,
                        );
                    }
                    self.broadcast(&notes, Some(process), Some(done));
                    if let Some(n) = notes.iter().find(|n| n.fid == process) {
                        self.out.view.broadcast_by_merolink(process, n.state);
                    }
                }
            }
            MeroCmd::Links { reply } => {
                let _ = reply.send(self.links.snapshot());
            }
            MeroCmd::Stop { .. } => unreachable!("handled in run"),
        }
    }

    /// Sends `notes` (split at 1024) to every active link except `skip`'s; `done` is called
    /// once every send has been answered or timed out.
    fn broadcast(&mut self, notes: &[Note], skip: Option<Fid>, done: Option<OnDone>) {
        let batch = self.deliveries.open(done);
        if !notes.is_empty() {
            let links = self.links.active(skip);
            let self_link = self.links.self_link();
            for chunk in notes.chunks(NOTES_MAX) {
                for (link, sent) in links.iter().zip(ffi::broadcast_nvec_set(&links, chunk)) {
                    match sent {
                        Ok(tag) => {
                            if self_link == Some(*link) {
                                self.noted.extend(
                                    chunk.iter().filter(|n| n.fid.is_process()).map(|n| n.fid),
                                );
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
        self.deliveries.seal(batch);
    }

    /// Makes Motr drop a stopped process's links now: FAILED on the self link, after a
    /// TRANSIENT so that it is a change (Motr ignores an unchanged state and the first note
    /// about a process). The other links learn the state from ProcessStatus's broadcast, which
    /// may coalesce a quick STARTED..STOPPED into no change at all; the link would then stay.
    fn drop_on_self_link(&mut self, process: Fid) {
        let Some(own) = self.links.self_link() else {
            return;
        };
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
            MotrEvent::Received { link, tag, msg } => self.on_message(link, tag, msg),
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
                let process = who.as_ref().map(|(p, _)| *p);
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
                }
                self.links.connect(
                    link,
                    LinkInfo {
                        process,
                        peer_ep,
                        state: LinkState::Active,
                        is_self,
                    },
                );
            }
            MotrEvent::LinkReused { req_id, link } => {
                let who = self.out.requests.take(req_id);
                if let Some(info) = self.links.get_mut(link) {
                    if info.state == LinkState::Inactive {
                        info.state = LinkState::Active;
                    }
                    if info.process.is_none() {
                        info.process = who.map(|(p, _)| p);
                        if let Some(p) = info.process {
                            self.out.linked.add(p);
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
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_else(|| "?".into());
                log::info!("MeroLink: link absent for request {req_id} (process {who}): the process must restart");
            }
            MotrEvent::LinkDisconnecting { link } => {
                if let Some(info) = self.links.get_mut(link) {
                    info.state = LinkState::Disconnecting;
                }
                log::info!("MeroLink: link {:#x} disconnecting", link.0);
            }
            MotrEvent::LinkDisconnected { link } => {
                if let Some(p) = self.links.remove(link).and_then(|i| i.process) {
                    self.out.linked.remove(p);
                }
                log::info!(
                    "MeroLink: link {:#x} disconnected ({} links left)",
                    link.0,
                    self.links.len()
                );
            }
        }
    }

    fn on_message(&mut self, link: LinkId, tag: u64, msg: HaMsg) {
        match msg {
            HaMsg::ProcessEvent {
                process,
                event,
                process_type,
                pid,
            } => {
                let Some(kind) = ProcessEventKind::from_u64(event) else {
                    log::warn!("MeroLink: process {process} sent unknown event {event}; ignored");
                    return;
                };
                if kind == ProcessEventKind::Stopped {
                    let n = self.links.deactivate_process(process);
                    log::info!("MeroLink: {process} STOPPED: {n} link(s) inactive");
                    if n > 0 {
                        self.drop_on_self_link(process);
                    }
                }
                let ev = ProcessEvent {
                    process,
                    event: kind,
                    process_type: ProcessType::from_u64(process_type),
                    pid,
                    link: Some(link),
                };
                if let Some(r) = &self.out.process_events {
                    r.do_send(ev);
                }
            }
            HaMsg::NvecGet { id_of_get, fids } => {
                let notes = self.out.view.answer(&fids);
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
            HaMsg::FailureVecReq { pool, cookie } => {
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
            HaMsg::StobIoq(error) => {
                let from = self.links.get_mut(link).and_then(|i| i.process);
                log::warn!(
                    "MeroLink: STOB I/O error on sdev {} from {:?}",
                    error.sdev,
                    from
                );
                if let Some(r) = &self.out.stob_errors {
                    r.do_send(StobIoEvent {
                        from_process: from,
                        error,
                    });
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
            }
            other => log::debug!(
                "MeroLink: message on link {:#x} tag {tag} ignored: {other:?}",
                link.0
            ),
        }
    }

    fn shutdown(&mut self, final_notes: Vec<Note>, wait: Duration, events: &Receiver<MotrEvent>) {
        let (tx, rx) = bounded::<SendReport>(1);
        self.broadcast(
            &final_notes,
            None,
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(r) = rx.try_recv() {
                log::info!(
                    "MeroLink: final broadcast: {}/{} delivered",
                    r.delivered,
                    r.sent
                );
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "MeroLink: final broadcast not confirmed within {wait:?}; stopping anyway"
                );
                break;
            }
            if let Ok(ev) = events.recv_timeout(left.min(Duration::from_millis(50))) {
                self.on_event(ev);
            }
        }
        log::info!("MeroLink: stopping HA interface");
        // Events keep flowing while stop runs (own STOPPING..STOPPED, link teardown); drain
        // them on a helper thread so that bookkeeping sees them, and finish afterwards.
        ffi::stop();
        while let Ok(ev) = events.try_recv() {
            self.on_event(ev);
        }
        log::info!(
            "MeroLink: HA interface stopped ({} links left)",
            self.links.len()
        );
    }
}

/// The HA state a process note carries when hax stops or drops a process.
pub fn failed(fids: impl IntoIterator<Item = Fid>) -> Vec<Note> {
    fids.into_iter()
        .map(|fid| Note {
            fid,
            state: HaState::Failed,
        })
        .collect()
}
