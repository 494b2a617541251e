//! The connections of a simulated process to HA: the process-wide state its reader threads
//! fill (replies, notes, HA's confirmation mark, whether it died), and one connection (socket,
//! writer, reader thread). The reader receives HA frames, files them for waiting requests,
//! reports events and ACKs every HA message (unless switched off); it polls so that "stop
//! reading" really stops. A process keeps its state across connections (an HA that restarts),
//! so a reader only writes while its connection is the current one (`State::conn_gen`).
use super::config::{ReceivedNote, SimConfig, SimEvent, SimEventKind};
use super::types::*;
use super::wire::{self, WireError};
use super::SimError;
use crossbeam_channel::Sender;
use hax_fid::Fid;
use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Stack size of every simulator thread (readers, fleet workers).
pub const THREAD_STACK: usize = 256 * 1024;
/// How often a blocked reader wakes up to look at its switches.
const READ_POLL: Duration = Duration::from_millis(50);

/// Motr's assertion when a FAILURE_VEC_REP matches no pending request (ha/failvec.c).
pub(crate) const FVEC_ASSERT: &str = "fhr != NULL in m0_ha_fvec_rep_handler()";

/// What the process has seen from HA, over all its connections (a restart starts afresh).
#[derive(Default)]
pub(crate) struct State {
    pub ep_replies: HashMap<u64, EpReply>,
    /// HA's delivered mark: every message of ours up to this tag is confirmed (the ACK frame
    /// carries the mark, see PROTOCOL.md).
    pub ack_mark: u64,
    /// Cookies of FAILURE_VEC_REQs sent and not answered yet.
    pub fvec_pending: HashSet<Cookie>,
    pub fvec_replies: Vec<(Fid, Cookie, Vec<Note>)>,
    pub nvec_answers: HashMap<u64, Vec<Note>>,
    pub notes: Vec<ReceivedNote>,
    pub msgs: Vec<(u64, HaMsg)>,
    /// HA sent DROP on the current connection.
    pub dropped: bool,
    /// Why the current connection ended without the process closing it.
    pub closed: Option<String>,
    /// Why the process died (a Motr assertion): nothing works any more.
    pub dead: Option<String>,
    /// The generation of the current connection; readers of older ones only stop.
    pub conn_gen: u64,
}

/// Shared between a `SimProcess` and the reader threads of its connections.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub cond: Condvar,
    pub acking: AtomicBool,
    pub reading: AtomicBool,
    /// Set when the process closes for good (stop, kill, death).
    pub closing: AtomicBool,
    pub fid: Fid,
    pub events: Option<Sender<SimEvent>>,
}

impl Shared {
    pub fn new(cfg: &SimConfig) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            acking: AtomicBool::new(true),
            reading: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            fid: cfg.process_fid,
            events: cfg.events.clone(),
        })
    }
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn emit(&self, kind: SimEventKind) {
        if let Some(tx) = &self.events {
            let _ = tx.send(SimEvent {
                process: self.fid,
                kind,
            });
        }
    }
    /// Records that the process died (first reason wins); true if it was alive. The caller
    /// closes the connection.
    pub fn die(&self, why: &str) -> bool {
        let mut st = self.lock();
        if st.dead.is_some() {
            return false;
        }
        st.dead = Some(why.to_string());
        self.closing.store(true, Ordering::SeqCst);
        drop(st);
        log::warn!("sim {}: died: {why}", self.fid);
        self.emit(SimEventKind::Died {
            reason: why.to_string(),
        });
        self.cond.notify_all();
        true
    }
}

/// One connection to HA.
pub(crate) struct Conn {
    pub writer: Arc<Mutex<TcpStream>>,
    pub reader: Mutex<Option<JoinHandle<()>>>,
    pub connected_at: Instant,
    /// Set when this side closes the connection: its reader stops quietly.
    pub shut_flag: Arc<AtomicBool>,
    /// A handle on the socket for shutting it down without the writer lock (a writer may be
    /// blocked on an HA that does not read).
    ctl: TcpStream,
}

impl Conn {
    pub fn writer(&self) -> MutexGuard<'_, TcpStream> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Writes one encoded frame.
    pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer().write_all(bytes)
    }
    /// Closes the socket (both directions) and waits for the reader to end.
    pub fn shut(&self) {
        self.shut_flag.store(true, Ordering::SeqCst);
        let _ = self.ctl.shutdown(Shutdown::Both);
        let handle = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

/// Connects, makes the connection the process's current one (generation `gen`) and starts its
/// reader thread.
pub(crate) fn open(
    ha: SocketAddr,
    cfg: &SimConfig,
    shared: &Arc<Shared>,
    gen: u64,
) -> Result<Conn, SimError> {
    let stream = TcpStream::connect_timeout(&ha, cfg.timeouts.connect)
        .map_err(|source| SimError::Connect { addr: ha, source })?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(cfg.timeouts.write))?;
    stream.set_read_timeout(Some(READ_POLL))?;
    let reader_stream = stream.try_clone()?;
    let ctl = stream.try_clone()?;
    let writer = Arc::new(Mutex::new(stream));
    let shut_flag = Arc::new(AtomicBool::new(false));
    {
        let mut st = shared.lock();
        st.conn_gen = gen;
        st.closed = None;
        st.dropped = false;
    }
    let reader = Reader {
        stream: reader_stream,
        writer: writer.clone(),
        shared: shared.clone(),
        gen,
        shut: shut_flag.clone(),
    };
    let handle = std::thread::Builder::new()
        .name(format!("sim-{:x}", cfg.process_fid.key))
        .stack_size(THREAD_STACK)
        .spawn(move || reader.run())
        .map_err(SimError::Thread)?;
    Ok(Conn {
        writer,
        reader: Mutex::new(Some(handle)),
        connected_at: Instant::now(),
        shut_flag,
        ctl,
    })
}

/// The reader thread of one connection.
struct Reader {
    stream: TcpStream,
    writer: Arc<Mutex<TcpStream>>,
    shared: Arc<Shared>,
    gen: u64,
    shut: Arc<AtomicBool>,
}

impl Reader {
    fn stopped(&self) -> bool {
        self.shut.load(Ordering::SeqCst) || self.shared.closing.load(Ordering::SeqCst)
    }

    fn run(mut self) {
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        let mut chunk = vec![0u8; 16 * 1024];
        let end = loop {
            if self.stopped() {
                return;
            }
            if !self.shared.reading.load(Ordering::SeqCst) {
                std::thread::sleep(READ_POLL);
                continue;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => break "HA closed the connection".to_string(),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => break format!("read error: {e}"),
            }
            match self.drain(&mut buf) {
                Ok(true) => {}
                Ok(false) => {
                    // The process died on a frame: it stops at once, like a panicking m0d.
                    let _ = self.stream.shutdown(Shutdown::Both);
                    return;
                }
                Err(e) => {
                    let _ = self.stream.shutdown(Shutdown::Both);
                    break format!("protocol error from HA: {e}");
                }
            }
        };
        if self.stopped() {
            return;
        }
        log::info!("sim {}: {end}", self.shared.fid);
        let mut st = self.shared.lock();
        if st.conn_gen != self.gen {
            return;
        }
        st.closed = Some(end.clone());
        drop(st);
        self.shared.emit(SimEventKind::Closed { reason: end });
        self.shared.cond.notify_all();
    }

    /// Handles every complete frame at the start of `buf`; false when the process died.
    fn drain(&mut self, buf: &mut Vec<u8>) -> Result<bool, WireError> {
        let mut used = 0;
        while let Some(n) = wire::frame_size(&buf[used..])? {
            let frame = FromHa::decode(&buf[used..used + n])?;
            used += n;
            if !self.handle(frame) {
                return Ok(false);
            }
        }
        buf.drain(..used);
        Ok(true)
    }

    /// Records a frame and reports it (events are sent before any waiter can see the state
    /// change), then ACKs an HA message unless told not to. False when the process died on it.
    fn handle(&mut self, frame: FromHa) -> bool {
        let mut events = Vec::new();
        let mut ack = None;
        let mut fatal = None;
        {
            let mut st = self.shared.lock();
            if st.conn_gen != self.gen || st.dead.is_some() {
                return false;
            }
            match frame {
                FromHa::EpRep(r) => {
                    st.ep_replies.insert(r.seq, r);
                }
                FromHa::Ack { tag } => {
                    st.ack_mark = st.ack_mark.max(tag);
                }
                FromHa::Drop => {
                    st.dropped = true;
                    events.push(SimEventKind::Dropped);
                }
                FromHa::Msg { tag, msg } => {
                    fatal = record_msg(&mut st, tag, &msg, &mut events);
                    st.msgs.push((tag, msg));
                    if fatal.is_none() && self.shared.acking.load(Ordering::SeqCst) {
                        ack = Some(tag);
                    }
                }
            }
            for kind in events.drain(..) {
                self.shared.emit(kind);
            }
        }
        if let Some(why) = fatal {
            self.shared.die(&why);
            return false;
        }
        self.shared.cond.notify_all();
        if let Some(tag) = ack {
            let sent = ToHa::Ack { tag }
                .encode()
                .map_err(SimError::from)
                .and_then(|bytes| {
                    self.writer
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .write_all(&bytes)
                        .map_err(SimError::from)
                });
            if let Err(e) = sent {
                log::warn!("sim {}: cannot ACK tag {tag}: {e}", self.shared.fid);
            }
        }
        true
    }
}

/// Files an HA message under what the process is waiting for. Returns why the process dies on
/// it, if it does (Motr asserts before it confirms the message).
fn record_msg(
    st: &mut State,
    tag: u64,
    msg: &HaMsg,
    events: &mut Vec<SimEventKind>,
) -> Option<String> {
    match &msg.body {
        MsgBody::Nvec {
            nvec_type: NvecType::Set,
            id_of_get,
            notes,
            ..
        } => {
            let at = Instant::now();
            for n in notes {
                st.notes.push(ReceivedNote {
                    at,
                    tag,
                    id_of_get: *id_of_get,
                    fid: n.fid,
                    state: n.state,
                });
                events.push(SimEventKind::Note {
                    fid: n.fid,
                    state: n.state,
                    id_of_get: *id_of_get,
                });
            }
            if *id_of_get != 0 {
                st.nvec_answers.insert(*id_of_get, notes.clone());
            }
        }
        MsgBody::FailureVecRep {
            pool,
            cookie,
            notes,
        } => {
            // Motr finds the request by its cookie and forgets it: a reply to no pending
            // request (answered already, e.g. a re-sent request answered twice) is fatal.
            if !st.fvec_pending.remove(cookie) {
                return Some(format!(
                    "{FVEC_ASSERT}: FAILURE_VEC_REP (tag {tag}, pool {pool}) for cookie \
                     {:#x}:{:#x}, which no request is waiting for",
                    cookie.hi, cookie.lo
                ));
            }
            st.fvec_replies.push((*pool, *cookie, notes.clone()));
        }
        _ => {}
    }
    None
}
