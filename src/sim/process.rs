//! One simulated Motr process: blocking, timed requests over its connection to HA
//! (entrypoint, events, failure vector, NVEC GET, waits on ACKs and notes) and fault switches.
//!
//! All methods take `&self` (the process can be shared between test threads); tags are
//! assigned under the writer lock so they reach HA in order. The boot sequence and stop/kill
//! helpers are in `script.rs`, the socket and reader thread in `conn.rs`.
use super::config::{ReceivedNote, SimConfig};
use super::conn::{open, Conn, State};
use super::types::*;
use super::{parse_ha_endpoint, SimError};
use crate::fid::Fid;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A simulated Motr process connected to HA.
pub struct SimProcess {
    pub(crate) cfg: SimConfig,
    pub(crate) ha: SocketAddr,
    pub(crate) conn: Conn,
    seq: AtomicU64,
    next_get: AtomicU64,
    next_cookie: AtomicU64,
    /// The HA cookie of the last entrypoint reply, sent as `cookie_expected`.
    ha_cookie: AtomicU64,
    pub(crate) stopped: AtomicBool,
}

impl SimProcess {
    /// Connects to HA at `ha_endpoint` (`inet:tcp:127.0.0.1@PORT`) and starts the reader.
    pub fn connect(ha_endpoint: &str, cfg: SimConfig) -> Result<SimProcess, SimError> {
        let ha = parse_ha_endpoint(ha_endpoint)?;
        let conn = open(ha, &cfg)?;
        Ok(SimProcess {
            cfg,
            ha,
            conn,
            seq: AtomicU64::new(1),
            next_get: AtomicU64::new(100),
            next_cookie: AtomicU64::new(1),
            ha_cookie: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        })
    }

    /// Replaces the connection with a new one (the old one is closed abruptly).
    pub(crate) fn reconnect(&mut self) -> Result<(), SimError> {
        self.conn.shut();
        self.conn = open(self.ha, &self.cfg)?;
        self.stopped.store(false, Ordering::SeqCst);
        self.ha_cookie.store(0, Ordering::SeqCst); // a new process knows no HA
        Ok(())
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }
    pub fn fid(&self) -> Fid {
        self.cfg.process_fid
    }
    /// When the current connection was opened.
    pub fn connected_at(&self) -> Instant {
        self.conn.connected_at
    }

    /// Sends one frame as is.
    pub fn send_frame(&self, frame: &ToHa) -> Result<(), SimError> {
        let bytes = frame.encode()?;
        self.conn.shared.writer().0.write_all(&bytes)?;
        Ok(())
    }

    /// Sends an HA message with the next even tag; returns the tag.
    pub fn send_msg(&self, msg: HaMsg) -> Result<u64, SimError> {
        let mut w = self.conn.shared.writer();
        let tag = w.1;
        let bytes = ToHa::Msg { tag, msg }.encode()?;
        w.0.write_all(&bytes)?;
        w.1 += 2;
        Ok(tag)
    }

    /// Tags of all messages sent on this connection so far.
    pub fn sent_tags(&self) -> Vec<u64> {
        let next = self.conn.shared.writer().1;
        (1..next / 2).map(|i| i * 2).collect()
    }

    /// Blocks until `pick` finds something in the state, the link is dropped or closed, or
    /// `timeout` passes.
    pub(crate) fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T, SimError> {
        let deadline = Instant::now() + timeout;
        let sh = &self.conn.shared;
        let mut st = sh.lock();
        loop {
            if let Some(v) = pick(&mut st) {
                return Ok(v);
            }
            if st.dropped {
                return Err(SimError::Dropped);
            }
            if let Some(why) = &st.closed {
                return Err(SimError::Closed(why.clone()));
            }
            if sh.closing.load(Ordering::SeqCst) {
                return Err(SimError::Closed("closed by the process".into()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(SimError::Timeout {
                    what: what.to_string(),
                    after: timeout,
                });
            }
            st = sh
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// One entrypoint request; waits for its reply (whatever its rc).
    pub fn entrypoint(&self, first: bool) -> Result<EpReply, SimError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        self.send_frame(&ToHa::EpReq(EpRequest {
            seq,
            first_request: first,
            cookie_expected: self.ha_cookie.load(Ordering::SeqCst),
            pid: self.cfg.pid,
            process: self.cfg.process_fid,
            endpoint: self.cfg.endpoint.clone(),
            git_rev: self.cfg.git_rev.clone(),
        }))?;
        let r = self.wait("entrypoint reply", self.cfg.timeouts.reply, |st| {
            st.ep_replies.remove(&seq)
        })?;
        // Motr's h_cookie_remote: remembered from every reply, whatever its rc.
        self.ha_cookie.store(r.cookie_actual, Ordering::SeqCst);
        Ok(r)
    }

    /// The HA cookie of the last entrypoint reply (0 before the first one).
    pub fn ha_cookie(&self) -> u64 {
        self.ha_cookie.load(Ordering::SeqCst)
    }

    /// Asks again at once while HA answers rc != 0, as m0d does, until `deadline`.
    /// Returns the rc-0 reply and the number of requests sent.
    pub fn entrypoint_until_ok(
        &self,
        first: bool,
        deadline: Instant,
    ) -> Result<(EpReply, u32), SimError> {
        let mut attempts = 0;
        loop {
            let r = self.entrypoint(first)?;
            attempts += 1;
            if r.rc == 0 {
                return Ok((r, attempts));
            }
            if Instant::now() >= deadline {
                return Err(SimError::EntrypointFailed { rc: r.rc, attempts });
            }
        }
    }

    /// EVENT_PROCESS for this process (`hm_fid` = process, sources 0 as m0d sends it).
    pub fn send_process_event(
        &self,
        event: ProcessEvent,
        ptype: ProcessType,
    ) -> Result<u64, SimError> {
        let body = MsgBody::EventProcess {
            event,
            process_type: ptype,
            pid: self.cfg.pid,
        };
        self.send_msg(HaMsg::new(self.cfg.process_fid, Fid::ZERO, Fid::ZERO, body))
    }

    /// EVENT_SERVICE (`hm_fid` = service, source process and service set).
    pub fn send_service_event(
        &self,
        service: Fid,
        event: ServiceEvent,
        stype: u64,
    ) -> Result<u64, SimError> {
        let body = MsgBody::EventService {
            event,
            service_type: stype,
            pid: self.cfg.pid,
        };
        self.send_msg(HaMsg::new(service, self.cfg.process_fid, service, body))
    }

    /// STOB_IOQ (`hm_fid` = the sdev); returns the tag.
    pub fn send_stob_ioq(&self, ioq: StobIoq) -> Result<u64, SimError> {
        self.send_msg(HaMsg::new(
            ioq.sdev,
            self.cfg.process_fid,
            Fid::ZERO,
            MsgBody::StobIoq(ioq),
        ))
    }

    /// FAILURE_VEC_REQ for `pool`; waits for the FAILURE_VEC_REP with the same pool and cookie.
    pub fn failure_vec_req(&self, pool: Fid) -> Result<Vec<Note>, SimError> {
        let cookie = Cookie {
            hi: 0x5555_0000_0000 | (self.cfg.pid & 0xffff_ffff),
            lo: self.next_cookie.fetch_add(1, Ordering::SeqCst),
        };
        let body = MsgBody::FailureVecReq { pool, cookie };
        self.send_msg(HaMsg::new(Fid::ZERO, Fid::ZERO, Fid::ZERO, body))?;
        let what = format!("FAILURE_VEC_REP for pool {pool}");
        self.wait(&what, self.cfg.timeouts.reply, |st| {
            let i = st
                .fvec_replies
                .iter()
                .position(|(p, c, _)| *p == pool && *c == cookie)?;
            Some(st.fvec_replies.remove(i).2)
        })
    }

    /// NVEC GET of `fids` (states 0, a fresh `id_of_get`); waits for the NVEC SET carrying the
    /// same `id_of_get` and returns its notes.
    pub fn nvec_get(&self, fids: &[Fid]) -> Result<Vec<Note>, SimError> {
        let id = self.next_get.fetch_add(1, Ordering::SeqCst);
        let body = MsgBody::Nvec {
            nvec_type: NvecType::Get,
            id_of_get: id,
            ignore_same_state: 0,
            notes: fids.iter().map(|f| Note { fid: *f, state: 0 }).collect(),
        };
        self.send_msg(HaMsg::new(Fid::ZERO, Fid::ZERO, Fid::ZERO, body))?;
        let what = format!("NVEC SET answering GET {id}");
        self.wait(&what, self.cfg.timeouts.reply, |st| {
            st.nvec_answers.remove(&id)
        })
    }

    /// Waits until HA confirmed the message with `tag` (an ACK with that tag or a later one:
    /// HA confirms a contiguous mark).
    pub fn wait_for_ack(&self, tag: u64, timeout: Duration) -> Result<(), SimError> {
        self.wait(&format!("ACK of tag {tag}"), timeout, |st| {
            (st.ack_mark >= tag).then_some(())
        })
    }

    /// Waits until some NVEC SET received on this connection (now or earlier) set `fid` to
    /// `state`; returns the first such note.
    pub fn wait_for_note(
        &self,
        fid: Fid,
        state: ObjState,
        timeout: Duration,
    ) -> Result<ReceivedNote, SimError> {
        self.wait_for_note_after(fid, state, self.conn.connected_at, timeout)
    }

    /// As `wait_for_note`, counting only notes that arrived at or after `after`.
    pub fn wait_for_note_after(
        &self,
        fid: Fid,
        state: ObjState,
        after: Instant,
        timeout: Duration,
    ) -> Result<ReceivedNote, SimError> {
        let what = format!("note {fid} -> {state}");
        let code = state.code();
        self.wait(&what, timeout, |st| {
            st.notes
                .iter()
                .find(|n| n.fid == fid && n.state == code && n.at >= after)
                .cloned()
        })
    }

    /// Waits for HA's DROP frame (or the connection closing).
    pub fn wait_dropped(&self, timeout: Duration) -> Result<(), SimError> {
        match self.wait("DROP", timeout, |st| st.dropped.then_some(())) {
            Err(SimError::Dropped) => Ok(()),
            r => r,
        }
    }

    /// Every note received in NVEC SETs on this connection, in arrival order.
    pub fn received_notes(&self) -> Vec<ReceivedNote> {
        self.conn.shared.lock().notes.clone()
    }
    /// Every HA message received on this connection: (tag, message).
    pub fn received_msgs(&self) -> Vec<(u64, HaMsg)> {
        self.conn.shared.lock().msgs.clone()
    }
    /// HA sent DROP on this connection.
    pub fn is_dropped(&self) -> bool {
        self.conn.shared.lock().dropped
    }
    /// Why the connection ended, if it ended without the process closing it.
    pub fn closed_reason(&self) -> Option<String> {
        self.conn.shared.lock().closed.clone()
    }
    /// The connection is gone (dropped by HA, closed by either side).
    pub fn is_gone(&self) -> bool {
        let st = self.conn.shared.lock();
        st.dropped || st.closed.is_some() || self.conn.shared.closing.load(Ordering::SeqCst)
    }

    /// Fault switch: when false, HA messages are no longer ACKed.
    pub fn set_acking(&self, on: bool) {
        self.conn.shared.acking.store(on, Ordering::SeqCst);
    }
    /// Fault switch: when false, the socket is no longer read (HA's sends pile up).
    pub fn set_reading(&self, on: bool) {
        self.conn.shared.reading.store(on, Ordering::SeqCst);
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        self.conn.shut();
    }
}
