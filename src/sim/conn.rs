//! The connection of a simulated process to HA: socket, shared state and the reader thread
//! that receives HA frames, files them for waiting requests, reports events and ACKs every HA
//! message (unless switched off). The reader polls so that "stop reading" really stops.
use super::config::{ReceivedNote, SimConfig, SimEvent, SimEventKind};
use super::types::*;
use super::wire::{self, WireError};
use super::SimError;
use crate::fid::Fid;
use crossbeam_channel::Sender;
use std::collections::HashMap;
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

/// What the reader thread has seen on the current connection.
#[derive(Default)]
pub(crate) struct State {
    pub ep_replies: HashMap<u64, EpReply>,
    /// HA's delivered mark: every message of ours up to this tag is confirmed (the ACK frame
    /// carries the mark, see PROTOCOL.md).
    pub ack_mark: u64,
    pub fvec_replies: Vec<(Fid, Cookie, Vec<Note>)>,
    pub nvec_answers: HashMap<u64, Vec<Note>>,
    pub notes: Vec<ReceivedNote>,
    pub msgs: Vec<(u64, HaMsg)>,
    pub dropped: bool,
    pub closed: Option<String>,
}

/// Shared between a `SimProcess` and its reader thread.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub cond: Condvar,
    /// Writing half; the next even tag lives under the same lock.
    pub writer: Mutex<(TcpStream, u64)>,
    pub acking: AtomicBool,
    pub reading: AtomicBool,
    /// Set when this side closes the connection (stop, kill).
    pub closing: AtomicBool,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn writer(&self) -> MutexGuard<'_, (TcpStream, u64)> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One connection to HA.
pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    pub reader: Mutex<Option<JoinHandle<()>>>,
    pub connected_at: Instant,
    /// A handle on the socket for shutting it down without the writer lock (a writer may be
    /// blocked on an HA that does not read).
    ctl: TcpStream,
}

impl Conn {
    /// Closes the socket (both directions) and waits for the reader to end.
    pub fn shut(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        let _ = self.ctl.shutdown(Shutdown::Both);
        self.shared.cond.notify_all();
        let handle = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Connects and starts a reader thread.
pub(crate) fn open(ha: SocketAddr, cfg: &SimConfig) -> Result<Conn, SimError> {
    let stream = TcpStream::connect_timeout(&ha, cfg.timeouts.connect)
        .map_err(|source| SimError::Connect { addr: ha, source })?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(cfg.timeouts.write))?;
    stream.set_read_timeout(Some(READ_POLL))?;
    let reader_stream = stream.try_clone()?;
    let ctl = stream.try_clone()?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        cond: Condvar::new(),
        writer: Mutex::new((stream, 2)),
        acking: AtomicBool::new(true),
        reading: AtomicBool::new(true),
        closing: AtomicBool::new(false),
    });
    let reader = Reader {
        stream: reader_stream,
        shared: shared.clone(),
        fid: cfg.process_fid,
        events: cfg.events.clone(),
    };
    let handle = std::thread::Builder::new()
        .name(format!("sim-{:x}", cfg.process_fid.key))
        .stack_size(THREAD_STACK)
        .spawn(move || reader.run())
        .map_err(SimError::Thread)?;
    Ok(Conn {
        shared,
        reader: Mutex::new(Some(handle)),
        connected_at: Instant::now(),
        ctl,
    })
}

/// The reader thread of one connection.
struct Reader {
    stream: TcpStream,
    shared: Arc<Shared>,
    fid: Fid,
    events: Option<Sender<SimEvent>>,
}

impl Reader {
    fn run(mut self) {
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        let mut chunk = vec![0u8; 16 * 1024];
        let end = loop {
            if self.shared.closing.load(Ordering::SeqCst) {
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
            if let Err(e) = self.drain(&mut buf) {
                let _ = self.stream.shutdown(Shutdown::Both);
                break format!("protocol error from HA: {e}");
            }
        };
        if self.shared.closing.load(Ordering::SeqCst) {
            return;
        }
        log::info!("sim {}: {end}", self.fid);
        let mut st = self.shared.lock();
        st.closed = Some(end.clone());
        self.emit(SimEventKind::Closed { reason: end });
        drop(st);
        self.shared.cond.notify_all();
    }

    /// Handles every complete frame at the start of `buf`.
    fn drain(&mut self, buf: &mut Vec<u8>) -> Result<(), WireError> {
        let mut used = 0;
        while let Some(n) = wire::frame_size(&buf[used..])? {
            let frame = FromHa::decode(&buf[used..used + n])?;
            used += n;
            self.handle(frame);
        }
        buf.drain(..used);
        Ok(())
    }

    /// Records a frame and reports it (events are sent before any waiter can see the state
    /// change), then ACKs an HA message unless told not to.
    fn handle(&mut self, frame: FromHa) {
        let mut events = Vec::new();
        let mut ack = None;
        {
            let mut st = self.shared.lock();
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
                    record_msg(&mut st, tag, &msg, &mut events);
                    st.msgs.push((tag, msg));
                    if self.shared.acking.load(Ordering::SeqCst) {
                        ack = Some(tag);
                    }
                }
            }
            for kind in events.drain(..) {
                self.emit(kind);
            }
        }
        self.shared.cond.notify_all();
        if let Some(tag) = ack {
            let sent = ToHa::Ack { tag }
                .encode()
                .map_err(SimError::from)
                .and_then(|bytes| {
                    self.shared
                        .writer()
                        .0
                        .write_all(&bytes)
                        .map_err(SimError::from)
                });
            if let Err(e) = sent {
                log::warn!("sim {}: cannot ACK tag {tag}: {e}", self.fid);
            }
        }
    }

    fn emit(&self, kind: SimEventKind) {
        if let Some(tx) = &self.events {
            let _ = tx.send(SimEvent {
                process: self.fid,
                kind,
            });
        }
    }
}

/// Files an HA message under what the process is waiting for.
fn record_msg(st: &mut State, tag: u64, msg: &HaMsg, events: &mut Vec<SimEventKind>) {
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
            st.fvec_replies.push((*pool, *cookie, notes.clone()));
        }
        _ => {}
    }
}
