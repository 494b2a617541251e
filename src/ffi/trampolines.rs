//! `extern "C"` trampolines for every shim callback. Each one catches panics (a panic must
//! never unwind into C), copies what it needs out of C memory into an owned message, and
//! hands it to a crossbeam channel without blocking Motr's thread. Received messages are
//! handed over unconfirmed (MeroLink confirms each once it is handled: durable, answered);
//! one that could not be handed over is confirmed here. Disconnecting links are let go
//! (`disconnect`) even when the Rust side panicked.
use super::raw;
use crate::fid::Fid;
use crate::motr::{EntrypointReq, HaMsg, LinkId, MotrEvent, MsgRef, ReqId, StobIoError};
use crossbeam_channel::Sender;
use std::collections::BTreeSet;
use std::ffi::CStr;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::RwLock;

struct Sinks {
    entrypoints: Sender<EntrypointReq>,
    events: Sender<MotrEvent>,
}

static SINKS: RwLock<Option<Sinks>> = RwLock::new(None);
/// Links that may be sent on: added when connected/reused, removed (synchronously, inside
/// Motr's callback) when they start disconnecting. Sends hold the read lock while in C.
pub(super) static SENDABLE: RwLock<BTreeSet<u64>> = RwLock::new(BTreeSet::new());
static PANIC_SITES: AtomicU32 = AtomicU32::new(0);

/// Callback paths where a test can force a panic (to prove none crosses into C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PanicSite {
    EntrypointRequest = 1,
    MsgReceived = 2,
    MsgDelivered = 4,
    MsgNotDelivered = 8,
    LinkConnected = 16,
    LinkReused = 32,
    LinkAbsent = 64,
    LinkIsDisconnecting = 128,
    LinkDisconnected = 256,
}

/// Makes the given callback paths panic inside their Rust body (test hook; 0 sites = none).
pub fn inject_panics(sites: &[PanicSite]) {
    PANIC_SITES.store(sites.iter().fold(0, |m, s| m | *s as u32), Ordering::SeqCst);
}

pub(super) fn install(entrypoints: Sender<EntrypointReq>, events: Sender<MotrEvent>) {
    *SINKS.write().unwrap_or_else(|e| e.into_inner()) = Some(Sinks {
        entrypoints,
        events,
    });
}

pub(super) fn uninstall() {
    *SINKS.write().unwrap_or_else(|e| e.into_inner()) = None;
    SENDABLE.write().unwrap_or_else(|e| e.into_inner()).clear();
}

fn set_sendable(link: u64, yes: bool) {
    let mut s = SENDABLE.write().unwrap_or_else(|e| e.into_inner());
    if yes {
        s.insert(link);
    } else {
        s.remove(&link);
    }
}

pub(super) fn callbacks() -> raw::hax_callbacks {
    raw::hax_callbacks {
        entrypoint_request: Some(on_entrypoint_request),
        msg_received: Some(on_msg_received),
        msg_delivered: Some(on_msg_delivered),
        msg_not_delivered: Some(on_msg_not_delivered),
        link_connected: Some(on_link_connected),
        link_reused: Some(on_link_reused),
        link_absent: Some(on_link_absent),
        link_is_disconnecting: Some(on_link_is_disconnecting),
        link_disconnected: Some(on_link_disconnected),
    }
}

thread_local! {
    /// Set while a callback body runs under `guarded` (its panics are caught there).
    static IN_GUARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread runs a callback body under `guarded` (for the panic hook).
pub fn in_guard() -> bool {
    IN_GUARD.with(|g| g.get())
}

/// Runs `body` with panics caught and logged; `site` lets tests force a panic here.
fn guarded(site: PanicSite, body: impl FnOnce()) {
    IN_GUARD.with(|g| g.set(true));
    let r = catch_unwind(AssertUnwindSafe(|| {
        if PANIC_SITES.load(Ordering::Relaxed) & site as u32 != 0 {
            panic!("injected panic in {site:?}");
        }
        body()
    }));
    IN_GUARD.with(|g| g.set(false));
    if let Err(e) = r {
        let what = e
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        log::error!("panic caught in Motr callback {site:?}: {what}");
    }
}

/// Hands an event to MeroLink; answers whether it was taken.
fn emit(ev: MotrEvent) -> bool {
    if let Some(s) = SINKS.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if s.events.send(ev).is_ok() {
            return true;
        }
        log::warn!("Motr event dropped: MeroLink is gone");
    }
    false
}

/// Copies a C string; NULL becomes "".
///
/// SAFETY: `p` must be NULL or a NUL-terminated string valid for the call.
unsafe fn owned(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

fn fid(f: &raw::hax_fid) -> Fid {
    Fid::new(f.container, f.key)
}

extern "C" fn on_entrypoint_request(req: *const raw::hax_entrypoint_req) {
    guarded(PanicSite::EntrypointRequest, || {
        // SAFETY: the shim passes a valid struct whose strings live during the callback.
        let r = unsafe { &*req };
        let owned_req = EntrypointReq {
            req_id: ReqId {
                hi: r.req_hi,
                lo: r.req_lo,
            },
            remote_ep: unsafe { owned(r.remote_ep) },
            process: fid(&r.process),
            git_rev: unsafe { owned(r.git_rev) },
            pid: r.pid,
            first_request: r.first_request != 0,
            received: std::time::Instant::now(),
        };
        if let Some(s) = SINKS.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if s.entrypoints.send(owned_req).is_err() {
                log::warn!("entrypoint request dropped: its responder is gone");
            }
        }
    });
}

/// Copies a flattened shim message into an owned `HaMsg`.
///
/// SAFETY: `m` must come from the shim during a msg_received callback.
unsafe fn convert(m: &raw::hax_msg) -> HaMsg {
    let notes = || -> Vec<(Fid, u32)> {
        if m.notes.is_null() || m.nr == 0 {
            return Vec::new();
        }
        let n = (m.nr as usize).min(crate::motr::NOTES_MAX);
        std::slice::from_raw_parts(m.notes, n)
            .iter()
            .map(|x| (fid(&x.fid), x.state))
            .collect()
    };
    match m.kind {
        raw::hax_msg_kind_HAX_MSG_PROCESS_EVENT => HaMsg::ProcessEvent {
            process: fid(&m.fid),
            event: m.event,
            process_type: m.obj_type,
            pid: m.pid,
        },
        raw::hax_msg_kind_HAX_MSG_SERVICE_EVENT => HaMsg::ServiceEvent {
            service: fid(&m.fid),
            process: fid(&m.src_process),
            event: m.event,
            service_type: m.obj_type,
            pid: m.pid,
        },
        raw::hax_msg_kind_HAX_MSG_NVEC_GET => HaMsg::NvecGet {
            id_of_get: m.id_of_get,
            fids: notes().into_iter().map(|(f, _)| f).collect(),
        },
        raw::hax_msg_kind_HAX_MSG_NVEC_SET => HaMsg::NvecSet { notes: notes() },
        raw::hax_msg_kind_HAX_MSG_FAILURE_VEC_REQ => HaMsg::FailureVecReq {
            pool: fid(&m.pool),
            cookie: (m.cookie_hi, m.cookie_lo),
        },
        raw::hax_msg_kind_HAX_MSG_STOB_IOQ => HaMsg::StobIoq(StobIoError {
            sdev: fid(&m.sdev),
            stob_domain: fid(&m.stob_domain),
            stob: fid(&m.stob_fid),
            fd: m.fd,
            opcode: m.opcode,
            rc: m.rc,
            offset: m.offset,
            size: m.size,
            bshift: m.bshift,
        }),
        raw::hax_msg_kind_HAX_MSG_RPC_EVENT => HaMsg::RpcEvent {
            service: fid(&m.fid),
            attempts: m.rpc_attempts,
            state: m.rpc_state,
        },
        raw::hax_msg_kind_HAX_MSG_BE_IO_ERR => HaMsg::BeIoErr,
        raw::hax_msg_kind_HAX_MSG_SNS_ERR => HaMsg::SnsErr,
        raw::hax_msg_kind_HAX_MSG_KEEPALIVE => HaMsg::Keepalive,
        _ => HaMsg::Other {
            raw_type: m.raw_type,
        },
    }
}

extern "C" fn on_msg_received(link: raw::hax_link_t, msg: *const raw::hax_msg, tag: u64) {
    // SAFETY: `msg` is valid for the duration of the callback; motr_msg is Motr's own pointer
    // for this message, which Motr keeps until the message is confirmed.
    let motr_msg = if msg.is_null() {
        std::ptr::null()
    } else {
        unsafe { (*msg).motr_msg }
    };
    let mut handed = false;
    guarded(PanicSite::MsgReceived, || {
        // SAFETY: the shim passes a valid message for the duration of the callback.
        let owned_msg = unsafe { convert(&*msg) };
        handed = emit(MotrEvent::Received {
            link: LinkId(link),
            tag,
            msg: owned_msg,
            msg_ref: MsgRef(motr_msg as u64),
        });
    });
    // Whoever took the message confirms it once it is handled (durable, answered). A message
    // nobody took (MeroLink gone, or the body above panicked) is confirmed here: Motr would
    // otherwise hold it, and every later one of the link, forever.
    if !handed {
        // SAFETY: `msg` is still valid here.
        unsafe { raw::hax_shim_delivered(link, motr_msg) };
    }
}

extern "C" fn on_msg_delivered(link: raw::hax_link_t, tag: u64) {
    guarded(PanicSite::MsgDelivered, || {
        emit(MotrEvent::Delivered {
            link: LinkId(link),
            tag,
        });
    });
}

extern "C" fn on_msg_not_delivered(link: raw::hax_link_t, tag: u64) {
    guarded(PanicSite::MsgNotDelivered, || {
        emit(MotrEvent::NotDelivered {
            link: LinkId(link),
            tag,
        });
    });
}

extern "C" fn on_link_connected(hi: u64, lo: u64, link: raw::hax_link_t, peer_ep: *const c_char) {
    set_sendable(link, true);
    guarded(PanicSite::LinkConnected, || {
        // SAFETY: peer_ep is NULL or a string valid during the callback.
        let peer_ep = unsafe { owned(peer_ep) };
        emit(MotrEvent::LinkConnected {
            req_id: ReqId { hi, lo },
            link: LinkId(link),
            peer_ep,
        });
    });
}

extern "C" fn on_link_reused(hi: u64, lo: u64, link: raw::hax_link_t) {
    set_sendable(link, true);
    guarded(PanicSite::LinkReused, || {
        emit(MotrEvent::LinkReused {
            req_id: ReqId { hi, lo },
            link: LinkId(link),
        });
    });
}

extern "C" fn on_link_absent(hi: u64, lo: u64) {
    guarded(PanicSite::LinkAbsent, || {
        emit(MotrEvent::LinkAbsent {
            req_id: ReqId { hi, lo },
        });
    });
}

extern "C" fn on_link_is_disconnecting(link: raw::hax_link_t) {
    // From here on nothing may be sent on this link: waits for sends in flight to return.
    set_sendable(link, false);
    guarded(PanicSite::LinkIsDisconnecting, || {
        emit(MotrEvent::LinkDisconnecting { link: LinkId(link) });
    });
    // hax lets the link go inside this callback, as Motr expects, whatever happened above.
    // SAFETY: the link is valid until link_disconnected.
    unsafe { raw::hax_shim_disconnect(link) };
}

extern "C" fn on_link_disconnected(link: raw::hax_link_t) {
    set_sendable(link, false);
    guarded(PanicSite::LinkDisconnected, || {
        emit(MotrEvent::LinkDisconnected { link: LinkId(link) });
    });
}
