//! The FFI boundary: the only module with `unsafe`. It wraps the C shim of `ffi/hax_shim.h`
//! (raw bindings: the `hax-motr-sys` crate) in a safe API and turns Motr's callbacks into owned
//! `MotrEvent`s / `EntrypointReq`s handed to crossbeam channels (see `trampolines`).
//!
//! There is one HA interface per process; `init` installs the channels callbacks write to.
#![allow(unsafe_code)]

use hax_motr_sys as raw;
mod trampolines;

pub use trampolines::{in_guard, inject_panics, PanicSite};

use crate::fid::Fid;
use crate::motr::{
    EntrypointReply, EntrypointReq, LinkId, MotrEvent, MsgRef, Note, ReqId, NOTES_MAX,
};
use crossbeam_channel::Sender;
use std::ffi::{CStr, CString};

/// Errors of the Motr boundary.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MotrError {
    #[error("HA interface call {call} failed: errno {errno}")]
    Call { call: &'static str, errno: i32 },
    #[error("{0} notes do not fit in one HA message (at most 1024)")]
    TooManyNotes(usize),
    #[error("link {0:#x} is disconnecting or gone; nothing may be sent on it")]
    LinkGone(u64),
    #[error("string argument contains a NUL byte: {0:?}")]
    Nul(String),
}

fn check(call: &'static str, rc: i32) -> Result<(), MotrError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(MotrError::Call { call, errno: -rc })
    }
}

fn cstring(s: &str) -> Result<CString, MotrError> {
    CString::new(s).map_err(|_| MotrError::Nul(s.chars().take(64).collect()))
}

fn raw_fid(f: &Fid) -> raw::hax_fid {
    raw::hax_fid {
        container: f.container,
        key: f.key,
    }
}

fn raw_notes(notes: &[Note]) -> Result<Vec<raw::hax_note>, MotrError> {
    if notes.len() > NOTES_MAX {
        return Err(MotrError::TooManyNotes(notes.len()));
    }
    Ok(notes
        .iter()
        .map(|n| raw::hax_note {
            fid: raw_fid(&n.fid),
            state: n.state as u32,
        })
        .collect())
}

/// Creates the process's one HA interface. Callbacks are written to the given channels:
/// entrypoint requests to `entrypoints`, everything else to `events`. `node_uuid` must be a
/// UUID (Motr refuses anything else with EINVAL); None lets Motr use the nil UUID. The
/// calling thread becomes Motr's main thread: it must also call `start` and `fini`.
pub fn init(
    node_uuid: Option<&str>,
    entrypoints: Sender<EntrypointReq>,
    events: Sender<MotrEvent>,
) -> Result<(), MotrError> {
    let uuid = node_uuid.map(cstring).transpose()?;
    trampolines::install(entrypoints, events);
    let cbs = trampolines::callbacks();
    let uuid_ptr = uuid.as_ref().map_or(std::ptr::null(), |u| u.as_ptr());
    // SAFETY: `cbs` holds valid function pointers; the shim copies the struct; `uuid` lives
    // for the duration of the call (or the pointer is NULL, which Motr accepts).
    let rc = unsafe { raw::hax_shim_init(&cbs, uuid_ptr) };
    if rc != 0 {
        trampolines::uninstall();
    }
    check("init", rc)
}

/// Starts the interface: blocks until hax's own entrypoint request has been answered with
/// rc 0 by another thread (see `entrypoint_reply`).
pub fn start(endpoint: &str, process: &Fid, ha: &Fid, rm: &Fid) -> Result<(), MotrError> {
    let ep = cstring(endpoint)?;
    let (p, h, r) = (raw_fid(process), raw_fid(ha), raw_fid(rm));
    // SAFETY: all pointers are valid for the duration of the call.
    check("start", unsafe {
        raw::hax_shim_start(ep.as_ptr(), &p, &h, &r)
    })
}

/// Stops the interface (blocking): own STOPPING..STOPPED events, then every link goes.
pub fn stop() {
    // SAFETY: no arguments; the shim ignores the call when there is no interface.
    unsafe { raw::hax_shim_stop() }
}

/// Frees the interface after `stop`; the channels are released.
pub fn fini() {
    // SAFETY: as for stop.
    unsafe { raw::hax_shim_fini() };
    trampolines::uninstall();
}

/// Answers one entrypoint request (thread-safe; link callbacks fire inside this call).
pub fn entrypoint_reply(req: ReqId, reply: &EntrypointReply) -> Result<(), MotrError> {
    let fids: Vec<raw::hax_fid> = reply.confds.iter().map(|(f, _)| raw_fid(f)).collect();
    let eps: Vec<CString> = reply
        .confds
        .iter()
        .map(|(_, e)| cstring(e))
        .collect::<Result<_, _>>()?;
    let ep_ptrs: Vec<*const std::os::raw::c_char> = eps.iter().map(|e| e.as_ptr()).collect();
    let rm = raw_fid(&reply.rm_fid);
    let rm_ep = cstring(&reply.rm_ep)?;
    let n = u32::try_from(fids.len()).unwrap_or(u32::MAX);
    // SAFETY: arrays have `n` elements and outlive the call; the shim copies what it keeps.
    unsafe {
        raw::hax_shim_entrypoint_reply(
            req.hi,
            req.lo,
            reply.rc,
            n,
            fids.as_ptr(),
            ep_ptrs.as_ptr(),
            reply.quorum,
            &rm,
            rm_ep.as_ptr(),
        )
    };
    Ok(())
}

/// Runs a send while the link is known sendable (it cannot start disconnecting meanwhile).
fn with_sendable<T>(
    link: LinkId,
    send: impl FnOnce() -> Result<T, MotrError>,
) -> Result<T, MotrError> {
    let live = trampolines::SENDABLE
        .read()
        .unwrap_or_else(|e| e.into_inner());
    if !live.contains(&link.0) {
        return Err(MotrError::LinkGone(link.0));
    }
    send()
}

/// Confirms a received message to Motr (once). Refused, and nothing called, once its link
/// has started disconnecting: Motr drops unconfirmed messages with the link, and the process
/// sends them again on its next link.
pub fn delivered(link: LinkId, msg: MsgRef) -> Result<(), MotrError> {
    with_sendable(link, || {
        // SAFETY: `msg` is Motr's pointer to a message of this link given by msg_received and
        // not confirmed yet (MeroLink confirms each once); the link is not disconnecting
        // (checked under the lock `with_sendable` holds), so Motr still keeps the message.
        unsafe { raw::hax_shim_delivered(link.0, msg.0 as *const std::os::raw::c_void) };
        Ok(())
    })
}

/// Whether a link may still be sent on.
pub fn is_sendable(link: LinkId) -> bool {
    trampolines::SENDABLE
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&link.0)
}

/// Sends one NVEC SET on a link; returns Motr's tag for delivery tracking.
pub fn send_nvec_set(link: LinkId, id_of_get: u64, notes: &[Note]) -> Result<u64, MotrError> {
    let raw = raw_notes(notes)?;
    let mut tag = 0u64;
    let ignore_same = if id_of_get == 0 { 1 } else { 0 };
    with_sendable(link, || {
        // SAFETY: `raw` has `len` notes and outlives the call; `tag` is a valid out pointer.
        let rc = unsafe {
            raw::hax_shim_send_nvec_set(
                link.0,
                id_of_get,
                ignore_same,
                raw.len() as u32,
                raw.as_ptr(),
                &mut tag,
            )
        };
        check("send", rc).map(|_| tag)
    })
}

/// Links sent to under one hold of the sendable-set lock: a link that starts disconnecting
/// (or a new one connecting: an entrypoint reply) waits for at most this many sends.
const BROADCAST_STRIDE: usize = 32;

/// Sends the same NVEC SET broadcast on every link of `links` that is still sendable,
/// building the message once per stride of links. Answers each link's outcome, in the order
/// given: its tag, or why nothing was sent on it.
pub fn broadcast_nvec_set(links: &[LinkId], notes: &[Note]) -> Vec<Result<u64, MotrError>> {
    let raw = match raw_notes(notes) {
        Ok(r) => r,
        Err(_) => {
            return links
                .iter()
                .map(|_| Err(MotrError::TooManyNotes(notes.len())))
                .collect()
        }
    };
    let mut out = Vec::with_capacity(links.len());
    for stride in links.chunks(BROADCAST_STRIDE) {
        // Held for the stride: none of these links can start disconnecting meanwhile.
        let live = trampolines::SENDABLE
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let ok: Vec<bool> = stride.iter().map(|l| live.contains(&l.0)).collect();
        let sendable: Vec<u64> = stride
            .iter()
            .zip(&ok)
            .filter(|(_, ok)| **ok)
            .map(|(l, _)| l.0)
            .collect();
        let mut tags = vec![0u64; sendable.len()];
        // SAFETY: `sendable` and `tags` have the same length and outlive the call; `raw` has
        // `raw.len()` notes.
        let rc = unsafe {
            raw::hax_shim_broadcast_nvec_set(
                sendable.as_ptr(),
                sendable.len() as u32,
                raw.len() as u32,
                raw.as_ptr(),
                tags.as_mut_ptr(),
            )
        };
        drop(live);
        let sent = check("send", rc);
        let mut tags = tags.into_iter();
        out.extend(stride.iter().zip(ok).map(|(l, ok)| {
            if !ok {
                return Err(MotrError::LinkGone(l.0));
            }
            match &sent {
                Ok(_) => Ok(tags.next().unwrap_or(0)),
                Err(e) => Err(e.clone()),
            }
        }));
    }
    out
}

/// Answers a failure-vector request for `pool`, echoing its cookie.
pub fn send_failure_vec_rep(
    link: LinkId,
    pool: &Fid,
    cookie: (u64, u64),
    notes: &[Note],
) -> Result<u64, MotrError> {
    let raw = raw_notes(notes)?;
    let p = raw_fid(pool);
    let mut tag = 0u64;
    with_sendable(link, || {
        // SAFETY: as for send_nvec_set.
        let rc = unsafe {
            raw::hax_shim_send_failure_vec_rep(
                link.0,
                &p,
                cookie.0,
                cookie.1,
                raw.len() as u32,
                raw.as_ptr(),
                &mut tag,
            )
        };
        check("send", rc).map(|_| tag)
    })
}

/// Ends the process at once with `code`, without running exit handlers: used when Motr is
/// still stopping past hax's shutdown bound (libmotr's and libfabric's exit handlers would
/// wait for it). Standard output and error are flushed first.
pub fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// The peer endpoint of a live link.
pub fn link_endpoint(link: LinkId) -> Result<String, MotrError> {
    let mut buf = vec![0u8; raw::HAX_ENDPOINT_MAX as usize + 1];
    // SAFETY: buf is writable for its length; the shim NUL-terminates within it.
    let rc = unsafe { raw::hax_shim_link_endpoint(link.0, buf.as_mut_ptr() as *mut _, buf.len()) };
    check("link_endpoint", rc)?;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Which library the shim was built against ("stand-in" or "motr").
pub fn backend() -> &'static str {
    // SAFETY: returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(raw::hax_shim_backend()) }
        .to_str()
        .unwrap_or("?")
}
