//! An in-process MeroLink for integration tests: the real MeroLink thread and HA interface
//! (stand-in), the real entrypoint `Responder` answering from a hand-built `SharedView` (no
//! Consul), a tiny actix System collecting `ProcessEvent`s / `StobIoEvent`s, a test
//! `StateView`, and simulated Motr processes connected to hax's endpoint.
//!
//! Motr allows one HA interface per process: `Hax::start` takes a global lock that is held
//! until the `Hax` is dropped (which stops MeroLink), so tests of one binary run one at a time.
use actix::{Actor, Context, Handler, Recipient};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use hax::actors::entrypoint::{self, Responder};
use hax::actors::merolink::links::{LinkInfo, SendReport};
use hax::actors::merolink::{
    EntrypointLog, LinkedProcesses, MeroCmd, MeroLink, MeroLinkConfig, MeroOutputs, StateView,
};
use hax::fid::Fid;
use hax::messages::{Ack, ProcessEvent, StobIoEvent};
use hax::motr::{HaState, LinkId, Note, ProcessEventKind};
use hax::view::{ClusterView, Confd, ConfigTree, Identity, ProcessConf, SharedView};
use hax_sim::{BootReport, ProcessType as SimType, SimConfig, SimProcess, Timeouts};
use hax_testkit::free_port;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// hax's own process and services.
pub const OWN: Fid = Fid::typed(b'r', 1, 0x6);
pub const OWN_HA: Fid = Fid::typed(b's', 1, 0x7);
pub const OWN_RM: Fid = Fid::typed(b's', 1, 0x8);
/// The one confd (on the leader's node) and its RM service.
pub const NODE: &str = "node-1";
pub const NODE_FID: Fid = Fid::typed(b'n', 1, 0x2);
pub const CONFD: Fid = Fid::typed(b'r', 1, 0x9);
pub const CONFD_SVC: Fid = Fid::typed(b's', 1, 0xa);
pub const CONFD_RMS: Fid = Fid::typed(b's', 1, 0xb);
pub const CONFD_EP: &str = "inet:tcp:127.0.0.1@22002";

/// How long the tests wait for anything that should happen promptly.
pub const T: Duration = Duration::from_secs(10);

static LOCK: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------- log capture

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static ECHO: AtomicBool = AtomicBool::new(false);
static LOGGER: Capture = Capture;
static LOG_INIT: Once = Once::new();

/// Keeps every log line at Info and above (to assert on), echoing to stderr when
/// `HAX_TEST_LOG` is set (then Debug lines too).
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        let line = format!("{} {}: {}", r.level(), r.target(), r.args());
        if ECHO.load(Ordering::Relaxed) {
            eprintln!("{line}");
        }
        if r.level() <= log::Level::Info {
            LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    }
    fn flush(&self) {}
}

fn init_log() {
    LOG_INIT.call_once(|| {
        let echo = std::env::var_os("HAX_TEST_LOG").is_some();
        ECHO.store(echo, Ordering::Relaxed);
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(if echo {
                log::LevelFilter::Debug
            } else {
                log::LevelFilter::Info
            });
        }
    });
}

/// A position in the captured log.
pub fn log_mark() -> usize {
    LINES.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Whether a log line captured since `mark` contains `needle`.
pub fn logged_since(mark: usize, needle: &str) -> bool {
    LINES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .skip(mark)
        .any(|l| l.contains(needle))
}

/// Waits (up to `T`) until a log line captured since `mark` contains `needle`.
pub fn wait_logged(mark: usize, needle: &str) {
    let deadline = Instant::now() + T;
    while !logged_since(mark, needle) {
        assert!(Instant::now() < deadline, "nothing logged with {needle:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------- collectors

/// Acks the collector holds instead of confirming them (see `Hax::hold_acks`).
#[derive(Clone, Default)]
pub struct HeldAcks {
    holding: Arc<std::sync::atomic::AtomicBool>,
    acks: Arc<std::sync::Mutex<Vec<Ack>>>,
}

impl HeldAcks {
    fn take(&self, ack: Option<Ack>) {
        let Some(a) = ack else { return };
        if self.holding.load(std::sync::atomic::Ordering::SeqCst) {
            self.acks.lock().unwrap().push(a);
        } else {
            a.confirm();
        }
    }
}

/// Stands for ProcessStatus: collects what MeroLink records, and confirms it at once (a
/// recorder whose every record is durable immediately) unless told to hold the acks.
struct Collector {
    events: Sender<ProcessEvent>,
    stob: Sender<StobIoEvent>,
    acks: HeldAcks,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<ProcessEvent> for Collector {
    type Result = ();
    fn handle(&mut self, m: ProcessEvent, _: &mut Context<Self>) {
        self.acks.take(m.ack.clone());
        let _ = self.events.send(m);
    }
}

impl Handler<StobIoEvent> for Collector {
    type Result = ();
    fn handle(&mut self, m: StobIoEvent, _: &mut Context<Self>) {
        self.acks.take(m.ack.clone());
        let _ = self.stob.send(m);
    }
}

type Recipients = (
    Recipient<ProcessEvent>,
    Recipient<StobIoEvent>,
    actix::System,
);

/// Runs an actix System with a `Collector` on its own thread.
fn spawn_collector(
    acks: HeldAcks,
) -> (
    Recipients,
    Receiver<ProcessEvent>,
    Receiver<StobIoEvent>,
    JoinHandle<()>,
) {
    let (ev_tx, ev_rx) = unbounded();
    let (stob_tx, stob_rx) = unbounded();
    let (tx, rx) = bounded::<Recipients>(1);
    let th = std::thread::Builder::new()
        .name("test-actix".into())
        .spawn(move || {
            let sys = actix::System::new();
            sys.block_on(async move {
                let addr = Collector {
                    events: ev_tx,
                    stob: stob_tx,
                    acks,
                }
                .start();
                let _ = tx.send((
                    addr.clone().recipient(),
                    addr.recipient(),
                    actix::System::current(),
                ));
            });
            let _ = sys.run();
        })
        .expect("spawn actix thread");
    let r = rx.recv_timeout(T).expect("actix system started");
    (r, ev_rx, stob_rx, th)
}

/// The state answers to NVEC GET come from: a fixed function of the fid.
pub struct TestView;

/// The state `TestView` reports for a fid.
pub fn state_of(fid: Fid) -> HaState {
    match fid.key % 3 {
        0 => HaState::Online,
        1 => HaState::Failed,
        _ => HaState::Transient,
    }
}

impl StateView for TestView {
    fn answer(&self, fids: &[Fid]) -> Option<Vec<Note>> {
        Some(
            fids.iter()
                .map(|f| Note {
                    fid: *f,
                    state: state_of(*f),
                })
                .collect(),
        )
    }
}

/// A ready cluster view: hax's identity, one confd with an rms service, its node the leader.
pub fn ready_view(endpoint: &str) -> SharedView {
    let mut config = ConfigTree::default();
    config.nodes.insert(NODE_FID, NODE.into());
    config.processes.insert(
        CONFD,
        ProcessConf {
            node: NODE_FID,
            node_name: NODE.into(),
            name: "confd".into(),
            endpoint: CONFD_EP.into(),
            services: vec![(CONFD_SVC, "confd".into()), (CONFD_RMS, "rms".into())],
        },
    );
    Arc::new(RwLock::new(ClusterView {
        identity: Some(Identity {
            node: NODE.into(),
            node_uuid: None,
            process: OWN,
            ha_service: OWN_HA,
            rm_service: OWN_RM,
            endpoint: endpoint.into(),
        }),
        confds: Some(vec![Confd {
            node: NODE.into(),
            fid: CONFD,
            endpoint: CONFD_EP.into(),
        }]),
        leader_node: Some(NODE.into()),
        last_leader_node: Some(NODE.into()),
        config,
        consul_up: true,
        config_generation: 1,
        stopping: false,
    }))
}

// ---------------------------------------------------------------------------- the harness

/// A running MeroLink with its responder and collectors. Dropping it stops everything.
pub struct Hax {
    mero: Option<MeroLink>,
    pub endpoint: String,
    pub view: SharedView,
    events: Receiver<ProcessEvent>,
    seen: Mutex<Vec<ProcessEvent>>,
    pub stob: Receiver<StobIoEvent>,
    held: HeldAcks,
    responder: Option<JoinHandle<()>>,
    system: Option<(actix::System, JoinHandle<()>)>,
    _guard: MutexGuard<'static, ()>,
}

impl Hax {
    /// From now on the recorder holds the acks of what MeroLink records (the records are
    /// not durable yet) until `release_acks`.
    pub fn hold_acks(&self) {
        self.held.holding.store(true, Ordering::SeqCst);
    }

    /// Confirms the held acks (in the order given, oldest first or reversed) and stops
    /// holding; answers how many.
    pub fn release_acks(&self, reversed: bool) -> usize {
        self.held.holding.store(false, Ordering::SeqCst);
        let mut acks = std::mem::take(&mut *self.held.acks.lock().unwrap());
        if reversed {
            acks.reverse();
        }
        for a in &acks {
            a.confirm();
        }
        acks.len()
    }

    /// Takes the binary-wide lock, then starts MeroLink on a free port (up to 3 ports are
    /// tried) and waits until `start` returned.
    pub fn start(delivery_timeout: Duration) -> Hax {
        let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        init_log();
        std::env::set_var("HAX_STANDIN_RPC_TIMEOUT_MS", "500");
        let held = HeldAcks::default();
        let ((ev_rcp, stob_rcp, system), events, stob, sys_thread) = spawn_collector(held.clone());
        let mut last_err = String::new();
        for _ in 0..3 {
            let endpoint = format!("inet:tcp:127.0.0.1@{}", free_port());
            let view = ready_view(&endpoint);
            let requests = EntrypointLog::default();
            let cfg = MeroLinkConfig {
                endpoint: endpoint.clone(),
                process: OWN,
                ha_service: OWN_HA,
                rm_service: OWN_RM,
                node_uuid: Some("00000000-0000-0000-0000-000000000001".into()),
                delivery_timeout,
            };
            let linked = LinkedProcesses::default();
            let out = MeroOutputs {
                record: Some(ev_rcp.clone()),
                states: None,
                stob_errors: Some(stob_rcp.clone()),
                view: Arc::new(TestView),
                requests: requests.clone(),
                linked: linked.clone(),
                journal: None,
            };
            let (mero, ep_rx, started) = MeroLink::spawn(cfg, out).expect("MeroLink init");
            let responder = entrypoint::spawn(
                Responder {
                    view: view.clone(),
                    requests,
                    linked,
                    mero: mero.sender(),
                    pause: Duration::from_millis(100),
                },
                ep_rx,
            );
            match started.recv_timeout(T) {
                Ok(Ok(())) => {
                    let h = Hax {
                        mero: Some(mero),
                        endpoint,
                        view,
                        events,
                        seen: Mutex::new(Vec::new()),
                        stob,
                        held: held.clone(),
                        responder: Some(responder),
                        system: Some((system, sys_thread)),
                        _guard: guard,
                    };
                    // The self link's events are queued before `start` returns, but commands
                    // are served from another channel: wait until they were handled.
                    h.wait_event(OWN, ProcessEventKind::Started);
                    return h;
                }
                Ok(Err(e)) => {
                    last_err = format!("start failed: {e}");
                    mero.stop(Duration::from_secs(5));
                    let _ = responder.join();
                }
                Err(_) => panic!(
                    "MeroLink start did not return within {T:?} (own entrypoint unanswered?)"
                ),
            }
        }
        system.stop();
        let _ = sys_thread.join();
        panic!("MeroLink could not start: {last_err}");
    }

    pub fn mero(&self) -> &MeroLink {
        self.mero.as_ref().expect("MeroLink running")
    }

    pub fn cmd(&self, c: MeroCmd) {
        self.mero()
            .sender()
            .send(c)
            .expect("MeroLink takes commands");
    }

    pub fn links(&self) -> Vec<(LinkId, LinkInfo)> {
        self.mero().links()
    }

    /// The (non-self) links MeroLink holds for `process`.
    pub fn links_of(&self, process: Fid) -> Vec<(LinkId, LinkInfo)> {
        self.links()
            .into_iter()
            .filter(|(_, i)| !i.is_self && i.process == Some(process))
            .collect()
    }

    /// Waits until the link table satisfies `pred`; returns it.
    pub fn wait_links(
        &self,
        what: &str,
        pred: impl Fn(&[(LinkId, LinkInfo)]) -> bool,
    ) -> Vec<(LinkId, LinkInfo)> {
        let deadline = Instant::now() + T;
        loop {
            let l = self.links();
            if pred(&l) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "link table never got {what}: {l:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Broadcasts `notes`; the receiver gets the batch's report.
    pub fn broadcast(&self, notes: Vec<Note>, skip: Option<Fid>) -> Receiver<SendReport> {
        let (tx, rx) = bounded(1);
        self.cmd(MeroCmd::Broadcast {
            notes,
            skip_process: skip,
            done: Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        });
        rx
    }

    /// Broadcasts and waits (up to `T`) for the batch's report.
    pub fn broadcast_wait(&self, notes: Vec<Note>, skip: Option<Fid>) -> SendReport {
        self.broadcast(notes, skip)
            .recv_timeout(T)
            .expect("broadcast reported how it ended")
    }

    fn drain_events(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.extend(self.events.try_iter());
    }

    /// Every ProcessEvent received so far.
    pub fn events(&self) -> Vec<ProcessEvent> {
        self.drain_events();
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the ProcessEvent `kind` for `process` arrived.
    pub fn wait_event(&self, process: Fid, kind: ProcessEventKind) -> ProcessEvent {
        let deadline = Instant::now() + T;
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e.process == process && e.event == kind)
            {
                return e;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {kind:?} event for {process}; got {:?}",
                self.events()
            );
            if let Ok(e) = self
                .events
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                self.seen.lock().unwrap_or_else(|e| e.into_inner()).push(e);
            }
        }
    }

    /// A simulated process connected to this hax.
    pub fn sim(&self, cfg: SimConfig) -> SimProcess {
        SimProcess::connect(&self.endpoint, cfg).expect("simulated process connects")
    }

    /// Connects and boots a simulated process, waits until every message it sent was
    /// confirmed and until MeroLink forwarded its last boot event (so MeroLink has handled
    /// its link events too: they precede its messages on MeroLink's event channel).
    pub fn boot(&self, cfg: SimConfig) -> (SimProcess, BootReport) {
        let fid = cfg.process_fid;
        let last = match cfg.process_type {
            SimType::M0d => ProcessEventKind::DtmRecovered,
            SimType::M0mkfs => ProcessEventKind::Stopped,
            _ => ProcessEventKind::Started,
        };
        let sim = self.sim(cfg);
        let report = sim.boot().unwrap_or_else(|e| panic!("{fid} boots: {e}"));
        for tag in sim.sent_tags() {
            sim.wait_for_ack(tag, T)
                .unwrap_or_else(|e| panic!("{fid}: tag {tag} not confirmed: {e}"));
        }
        self.wait_event(fid, last);
        (sim, report)
    }
}

impl Drop for Hax {
    fn drop(&mut self) {
        if let Some(m) = self.mero.take() {
            m.stop(Duration::from_secs(30));
        }
        if let Some(r) = self.responder.take() {
            let _ = r.join();
        }
        if let Some((sys, th)) = self.system.take() {
            sys.stop();
            let _ = th.join();
        }
    }
}

/// A process fid for a simulated process.
pub fn pfid(key: u64) -> Fid {
    Fid::typed(b'r', 1, key)
}

/// An m0d simulator config with short timeouts (failures show up in seconds, not minutes).
pub fn sim_config(key: u64) -> SimConfig {
    let mut c = SimConfig::new(pfid(key));
    c.timeouts = Timeouts {
        connect: Duration::from_secs(5),
        reply: Duration::from_secs(5),
        ack: Duration::from_secs(5),
        entrypoint: Duration::from_secs(10),
        write: Duration::from_secs(5),
    };
    c
}

/// `n` distinct service fids starting at key `from`.
pub fn svc_fids(from: u64, n: usize) -> Vec<Fid> {
    (0..n as u64)
        .map(|i| Fid::typed(b's', 2, from + i))
        .collect()
}

/// One note per fid, all in `state`.
pub fn notes(fids: &[Fid], state: HaState) -> Vec<Note> {
    fids.iter().map(|f| Note { fid: *f, state }).collect()
}
