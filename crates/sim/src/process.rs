//! One simulated Motr process: blocking, timed requests over its connection to HA
//! (entrypoint, events, failure vector, NVEC GET, waits on ACKs and notes) and fault switches.
//!
//! All methods take `&self` (the process can be shared between test threads); tags are
//! assigned under the queue lock so they reach HA in order. As Motr's HA link, the process
//! keeps every message it sent until HA confirms it (the ACK mark), and when its HA is gone it
//! notices only at its next send, then reconnects and sends the unconfirmed messages again
//! (`recover`). The boot sequence and stop/kill helpers are in `script.rs`, the socket and
//! reader thread in `conn.rs`.
use super::config::{ReceivedNote, SimConfig, SimEventKind};
use super::conn::{open, Conn, Shared, State};
use super::types::*;
use super::{parse_ha_endpoint, SimError};
use hax_fid::Fid;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Motr's assertion when HA says the link "had been disconnected previously" (ha/ha.c:304).
pub(crate) const EP_ASSERT: &str =
    "!rep->hae_disconnected_previously in ha_entrypoint_state_cb(): \
     HA has already decided that this process has failed";

/// The messages the process sent and HA has not confirmed yet (Motr's outgoing link queue).
pub(crate) struct Out {
    /// The next even tag.
    pub next_tag: u64,
    /// (tag, message), oldest first; pruned up to HA's ACK mark.
    pub queue: VecDeque<(u64, HaMsg)>,
}

/// A simulated Motr process connected to HA.
pub struct SimProcess {
    pub(crate) cfg: SimConfig,
    pub(crate) ha: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    conn: Mutex<Arc<Conn>>,
    pub(crate) out: Mutex<Out>,
    seq: AtomicU64,
    next_get: AtomicU64,
    next_cookie: AtomicU64,
    /// The HA cookie of the last entrypoint reply, sent as `cookie_expected`.
    ha_cookie: AtomicU64,
    conn_gen: AtomicU64,
    started_at: Instant,
    pub(crate) stopped: AtomicBool,
}

impl SimProcess {
    /// Connects to HA at `ha_endpoint` (`inet:tcp:127.0.0.1@PORT`) and starts the reader.
    pub fn connect(ha_endpoint: &str, cfg: SimConfig) -> Result<SimProcess, SimError> {
        let ha = parse_ha_endpoint(ha_endpoint)?;
        let shared = Shared::new(&cfg);
        let conn = open(ha, &cfg, &shared, 1)?;
        Ok(SimProcess {
            cfg,
            ha,
            shared,
            conn: Mutex::new(Arc::new(conn)),
            out: Mutex::new(Out {
                next_tag: 2,
                queue: VecDeque::new(),
            }),
            seq: AtomicU64::new(1),
            next_get: AtomicU64::new(100),
            next_cookie: AtomicU64::new(1),
            ha_cookie: AtomicU64::new(0),
            conn_gen: AtomicU64::new(1),
            started_at: Instant::now(),
            stopped: AtomicBool::new(false),
        })
    }

    /// A new incarnation of the process (a restart): the old connection is closed abruptly;
    /// tags, queue, cookies and history start afresh.
    pub(crate) fn reconnect(&mut self) -> Result<(), SimError> {
        self.conn().shut();
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared = Shared::new(&self.cfg);
        let gen = self.conn_gen.fetch_add(1, Ordering::SeqCst) + 1;
        let conn = open(self.ha, &self.cfg, &self.shared, gen)?;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(conn);
        *self.out_lock() = Out {
            next_tag: 2,
            queue: VecDeque::new(),
        };
        self.stopped.store(false, Ordering::SeqCst);
        self.ha_cookie.store(0, Ordering::SeqCst); // a new process knows no HA
        self.started_at = Instant::now();
        Ok(())
    }

    pub(crate) fn conn(&self) -> Arc<Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub(crate) fn out_lock(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }
    pub fn fid(&self) -> Fid {
        self.cfg.process_fid
    }
    /// When the current connection was opened.
    pub fn connected_at(&self) -> Instant {
        self.conn().connected_at
    }

    /// Sends one frame as is on the current connection (no queue, no reconnection).
    pub fn send_frame(&self, frame: &ToHa) -> Result<(), SimError> {
        self.alive()?;
        let bytes = frame.encode()?;
        self.conn().write(&bytes)?;
        Ok(())
    }

    /// Err when the process died.
    fn alive(&self) -> Result<(), SimError> {
        match &self.shared.lock().dead {
            Some(why) => Err(SimError::Died(why.clone())),
            None => Ok(()),
        }
    }

    /// The process dies on a Motr assertion: it reports why and closes its connection at once.
    pub(crate) fn die(&self, why: &str) -> SimError {
        self.shared.die(why);
        self.conn().shut();
        SimError::Died(why.to_string())
    }

    /// Sends an HA message with the next even tag; returns the tag. The message stays queued
    /// until HA confirms it. If the connection to HA is gone (or the write fails), the process
    /// reconnects first as a real one does (see `recover`): the call then takes about
    /// `ha_resend` + `rpc_timeout`.
    pub fn send_msg(&self, msg: HaMsg) -> Result<u64, SimError> {
        let mut out = self.out_lock();
        self.alive()?;
        if self.shared.closing.load(Ordering::SeqCst) {
            return Err(SimError::Closed("closed by the process".into()));
        }
        let tag = out.next_tag;
        out.next_tag += 2;
        let bytes = ToHa::Msg {
            tag,
            msg: msg.clone(),
        }
        .encode()?;
        out.queue.push_back((tag, msg));
        self.prune(&mut out);
        let closed = self.shared.lock().closed.clone();
        if let Some(why) = closed {
            self.recover(&mut out, &why)?;
            return Ok(tag);
        }
        if let Err(e) = self.conn().write(&bytes) {
            if self.shared.closing.load(Ordering::SeqCst) {
                return Err(e.into());
            }
            self.recover(&mut out, &format!("send failed: {e}"))?;
        }
        Ok(tag)
    }

    /// Forgets the messages HA has confirmed.
    fn prune(&self, out: &mut Out) {
        let mark = self.shared.lock().ack_mark;
        while out.queue.front().is_some_and(|(t, _)| *t <= mark) {
            out.queue.pop_front();
        }
    }

    /// Sleeps up to `d`, or until the process closes or dies.
    fn pause(&self, d: Duration) -> Result<(), SimError> {
        let deadline = Instant::now() + d;
        let mut st = self.shared.lock();
        loop {
            if let Some(why) = &st.dead {
                return Err(SimError::Died(why.clone()));
            }
            if self.shared.closing.load(Ordering::SeqCst) {
                return Err(SimError::Closed("closed by the process".into()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// What a real m0d does when a send finds its HA gone: the RPC layer re-sends for
    /// `ha_resend` (10 × 1 s), then the process asks for an entrypoint again, not first, with
    /// the dead HA's cookie, on a new connection (retried until `timeouts.entrypoint`). An
    /// error reply or `link_absent` kills it (`!rep->hae_disconnected_previously`). Otherwise
    /// the old RPC link times out `rpc_timeout` later, and every unconfirmed message (from the
    /// first one HA did not confirm, in order, including ones confirmed out of order and
    /// requests already answered) is sent again. Called with the queue locked.
    fn recover(&self, out: &mut Out, why: &str) -> Result<(), SimError> {
        log::info!("sim {}: HA is gone ({why}); re-sending", self.fid());
        self.shared.emit(SimEventKind::HaLost {
            reason: why.to_string(),
        });
        self.pause(self.cfg.ha_resend)?;
        let deadline = Instant::now() + self.cfg.timeouts.entrypoint;
        loop {
            self.conn().shut();
            let gen = self.conn_gen.fetch_add(1, Ordering::SeqCst) + 1;
            match open(self.ha, &self.cfg, &self.shared, gen) {
                Ok(c) => {
                    *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
                    break;
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => self.pause(Duration::from_millis(200))?,
            }
        }
        let r = self.entrypoint(false)?;
        self.alive()?; // an error reply or link_absent killed it
        log::info!(
            "sim {}: reconnected (link {}); re-sending after {:?}",
            self.fid(),
            r.link,
            self.cfg.rpc_timeout
        );
        self.shared.emit(SimEventKind::Reconnected { link: r.link });
        self.pause(self.cfg.rpc_timeout)?;
        self.prune(out);
        let conn = self.conn();
        for (tag, msg) in &out.queue {
            let bytes = ToHa::Msg {
                tag: *tag,
                msg: msg.clone(),
            }
            .encode()?;
            conn.write(&bytes)?;
        }
        let first_tag = out.queue.front().map_or(0, |(t, _)| *t);
        self.shared.emit(SimEventKind::Resent {
            count: out.queue.len(),
            first_tag,
        });
        Ok(())
    }

    /// Tags of all messages this process sent so far (since it connected or restarted).
    pub fn sent_tags(&self) -> Vec<u64> {
        let next = self.out_lock().next_tag;
        (1..next / 2).map(|i| i * 2).collect()
    }

    /// Tags of the messages HA has not confirmed yet (kept for re-sending).
    pub fn unconfirmed_tags(&self) -> Vec<u64> {
        let mut out = self.out_lock();
        self.prune(&mut out);
        out.queue.iter().map(|(t, _)| *t).collect()
    }

    /// Blocks until `pick` finds something in the state, the process dies, the link is
    /// dropped or closed, or `timeout` passes.
    pub(crate) fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T, SimError> {
        let deadline = Instant::now() + timeout;
        let sh = &self.shared;
        let mut st = sh.lock();
        loop {
            if let Some(v) = pick(&mut st) {
                return Ok(v);
            }
            if let Some(why) = &st.dead {
                return Err(SimError::Died(why.clone()));
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

    /// One entrypoint request (with the HA cookie of the last reply); waits for its reply
    /// (whatever its rc) and remembers the reply's cookie. As in Motr, a reply that says the
    /// link "had been disconnected previously" kills the process: `link_absent`, and any
    /// error reply to a non-first request (HA made a link for it that the process's next
    /// request does not match). The reply is returned all the same; the process is dead.
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
        if r.link == LinkDecision::Absent {
            self.die(&format!("{EP_ASSERT} (link_absent)"));
        } else if !first && r.rc != 0 && r.link == LinkDecision::Connected {
            // Motr's "reconnect case" (a new link made for a process HA did not know) with an
            // error reply: the link HA made will not match the process's next request.
            self.die(&format!(
                "{EP_ASSERT} (a reconnecting entrypoint request was answered rc {}; the link \
                 HA made for it will not match the next request)",
                r.rc
            ));
        }
        Ok(r)
    }

    /// The HA cookie of the last entrypoint reply (0 before the first one).
    pub fn ha_cookie(&self) -> u64 {
        self.ha_cookie.load(Ordering::SeqCst)
    }

    /// Sets the HA cookie the next request carries: a new connection of a process that
    /// talked to that HA before (tests).
    pub fn set_ha_cookie(&self, cookie: u64) {
        self.ha_cookie.store(cookie, Ordering::SeqCst);
    }

    /// Asks again at once while HA answers rc != 0, as m0d does, until `deadline`; like
    /// Motr's entrypoint client, every request after the first reply is not first (the reply
    /// made the link, whatever its rc). Returns the rc-0 reply and the number of requests
    /// sent. An error reply to a reconnecting request kills the process (`SimError::Died`).
    pub fn entrypoint_until_ok(
        &self,
        first: bool,
        deadline: Instant,
    ) -> Result<(EpReply, u32), SimError> {
        let mut attempts = 0;
        loop {
            // Like Motr's entrypoint client: once its first request got a reply (any rc: Motr
            // made the link with it), the process asks again with a request that is not first.
            let r = self.entrypoint(first && attempts == 0)?;
            attempts += 1;
            if r.rc == 0 {
                return Ok((r, attempts));
            }
            self.alive()?;
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
        self.send_process_event_with_pid(event, ptype, self.cfg.pid)
    }

    /// EVENT_PROCESS with another `pid` than the process's (tests and benchmarks write a
    /// sequence number there, to read back from `processes/<fid>` which event was recorded).
    pub fn send_process_event_with_pid(
        &self,
        event: ProcessEvent,
        ptype: ProcessType,
        pid: u64,
    ) -> Result<u64, SimError> {
        let body = MsgBody::EventProcess {
            event,
            process_type: ptype,
            pid,
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

    /// FAILURE_VEC_REQ for `pool`; waits for the FAILURE_VEC_REP with the same cookie. As in
    /// Motr (ha/failvec.c), the request is found by its cookie: a reply to a request that is
    /// not pending (a second reply to one request) kills the process.
    pub fn failure_vec_req(&self, pool: Fid) -> Result<Vec<Note>, SimError> {
        let cookie = Cookie {
            hi: 0x5555_0000_0000 | (self.cfg.pid & 0xffff_ffff),
            lo: self.next_cookie.fetch_add(1, Ordering::SeqCst),
        };
        self.shared.lock().fvec_pending.insert(cookie);
        let body = MsgBody::FailureVecReq { pool, cookie };
        self.send_msg(HaMsg::new(Fid::ZERO, Fid::ZERO, Fid::ZERO, body))?;
        let what = format!("FAILURE_VEC_REP for pool {pool}");
        self.wait(&what, self.cfg.timeouts.reply, |st| {
            let i = st.fvec_replies.iter().position(|(_, c, _)| *c == cookie)?;
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

    /// HA's confirmation mark: every message up to this tag is confirmed.
    pub fn ack_mark(&self) -> u64 {
        self.shared.lock().ack_mark
    }

    /// Waits until some NVEC SET received by this process (now or earlier, since it connected
    /// or restarted) set `fid` to `state`; returns the first such note.
    pub fn wait_for_note(
        &self,
        fid: Fid,
        state: ObjState,
        timeout: Duration,
    ) -> Result<ReceivedNote, SimError> {
        self.wait_for_note_after(fid, state, self.started_at, timeout)
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

    /// Every note received in NVEC SETs (since the process connected or restarted), in
    /// arrival order.
    pub fn received_notes(&self) -> Vec<ReceivedNote> {
        self.shared.lock().notes.clone()
    }
    /// Every HA message received (since the process connected or restarted): (tag, message).
    pub fn received_msgs(&self) -> Vec<(u64, HaMsg)> {
        self.shared.lock().msgs.clone()
    }
    /// HA sent DROP on the current connection.
    pub fn is_dropped(&self) -> bool {
        self.shared.lock().dropped
    }
    /// Why the current connection ended, if it ended without the process closing it.
    pub fn closed_reason(&self) -> Option<String> {
        self.shared.lock().closed.clone()
    }
    /// Why the process died (a Motr assertion), if it did.
    pub fn died(&self) -> Option<String> {
        self.shared.lock().dead.clone()
    }
    /// The connection is gone (dropped by HA, closed by either side) or the process died.
    pub fn is_gone(&self) -> bool {
        let st = self.shared.lock();
        st.dropped
            || st.closed.is_some()
            || st.dead.is_some()
            || self.shared.closing.load(Ordering::SeqCst)
    }

    /// Fault switch: when false, HA messages are no longer ACKed.
    pub fn set_acking(&self, on: bool) {
        self.shared.acking.store(on, Ordering::SeqCst);
    }
    /// Fault switch: when false, the socket is no longer read (HA's sends pile up).
    pub fn set_reading(&self, on: bool) {
        self.shared.reading.store(on, Ordering::SeqCst);
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.conn().shut();
    }
}
