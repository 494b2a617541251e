//! The life scripts of a simulated process: the boot sequence a real m0d follows (observed in
//! `tests/fixtures/motr-traces/probe5..7.log`), clean stop, abrupt kill and restart.
use super::config::SimEventKind;
use super::process::SimProcess;
use super::types::*;
use super::SimError;
use hax_fid::Fid;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What `boot` saw, with its timings.
#[derive(Clone, Debug)]
pub struct BootReport {
    /// The rc-0 reply to the first entrypoint request.
    pub first_reply: EpReply,
    /// The rc-0 reply to the second (non-first) request, when `SimConfig::second_entrypoint`
    /// asked for one (a configured m0d sends none).
    pub second_reply: Option<EpReply>,
    /// Entrypoint requests sent until the first rc-0 reply (1 when HA answered at once).
    pub ep_attempts: u32,
    /// From the first EP_REQ to its rc-0 reply.
    pub ep_latency: Duration,
    /// FAILURE_VEC_REP notes per pool, in request order.
    pub failure_vecs: Vec<(Fid, Vec<Note>)>,
    /// Notes of the NVEC SET answering the boot GET (empty when no GET was made).
    pub nvec_answer: Vec<Note>,
    /// From the start of `boot` to the last boot message sent (DTM_RECOVERED for an m0d,
    /// STOPPED for an m0mkfs, STARTED otherwise).
    pub boot_time: Duration,
}

fn usable(r: &EpReply) -> Result<(), SimError> {
    match r.link {
        LinkDecision::Absent => Err(SimError::LinkAbsent),
        _ => Ok(()),
    }
}

impl SimProcess {
    /// The whole start of a Motr process, in a real m0d's order:
    /// 1. first entrypoint request (asked again at once while rc != 0);
    /// 2. process STARTING;
    /// 3. only with `SimConfig::second_entrypoint`: a second, non-first entrypoint request
    ///    (HA reuses the link; `link_absent` or an error reply kills the process);
    /// 4. one FAILURE_VEC_REQ per pool, waiting for each reply;
    /// 5. one NVEC GET of `get_fids` (if any), waiting for the SET that answers it;
    /// 6. STARTING then STARTED for each service;
    /// 7. process STARTED;
    /// 8. m0d: DTM_RECOVERED. m0mkfs: it has done its job and stops: STOPPING, services
    ///    STOPPING/STOPPED, STOPPED (the connection stays open; call `close`).
    pub fn boot(&self) -> Result<BootReport, SimError> {
        let t0 = Instant::now();
        let deadline = t0 + self.cfg.timeouts.entrypoint;
        let ptype = self.cfg.process_type;
        let (first_reply, ep_attempts) = self.entrypoint_until_ok(true, deadline)?;
        let ep_latency = t0.elapsed();
        usable(&first_reply)?;
        self.send_process_event(ProcessEvent::Starting, ptype)?;
        let second_reply = match self.cfg.second_entrypoint {
            false => None,
            true => {
                let (r, _) = self.entrypoint_until_ok(false, deadline)?;
                usable(&r)?;
                Some(r)
            }
        };
        let mut failure_vecs = Vec::with_capacity(self.cfg.pools.len());
        for pool in &self.cfg.pools {
            failure_vecs.push((*pool, self.failure_vec_req(*pool)?));
        }
        let nvec_answer = match self.cfg.get_fids.is_empty() {
            true => Vec::new(),
            false => self.nvec_get(&self.cfg.get_fids)?,
        };
        for (svc, stype) in &self.cfg.services {
            self.send_service_event(*svc, ServiceEvent::Starting, *stype)?;
            self.send_service_event(*svc, ServiceEvent::Started, *stype)?;
        }
        self.send_process_event(ProcessEvent::Started, ptype)?;
        match ptype {
            ProcessType::M0d => {
                self.send_process_event(ProcessEvent::DtmRecovered, ptype)?;
            }
            ProcessType::M0mkfs => self.send_stop_events()?,
            _ => {}
        }
        let boot_time = t0.elapsed();
        log::info!("sim {}: booted in {boot_time:?}", self.cfg.process_fid);
        Ok(BootReport {
            first_reply,
            second_reply,
            ep_attempts,
            ep_latency,
            failure_vecs,
            nvec_answer,
            boot_time,
        })
    }

    /// Process STOPPING, each service (last first) STOPPING and STOPPED, process STOPPED
    /// (the order Motr uses for its own stop).
    pub fn send_stop_events(&self) -> Result<(), SimError> {
        let ptype = self.cfg.process_type;
        self.send_process_event(ProcessEvent::Stopping, ptype)?;
        for (svc, stype) in self.cfg.services.iter().rev() {
            self.send_service_event(*svc, ServiceEvent::Stopping, *stype)?;
            self.send_service_event(*svc, ServiceEvent::Stopped, *stype)?;
        }
        self.send_process_event(ProcessEvent::Stopped, ptype)?;
        self.stopped.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// A clean exit: the stop events (unless already sent, as by an m0mkfs boot), then
    /// `close`.
    pub fn stop_clean(&self) -> Result<(), SimError> {
        let sent = match self.stopped.load(Ordering::SeqCst) {
            true => Ok(()),
            false => self.send_stop_events(),
        };
        let closed = self.close();
        sent.and(closed)
    }

    /// Waits (up to the ack timeout) until HA confirmed the last message sent, as Motr's
    /// `m0_ha_link_flush` does before a process exits, then closes the socket. When the
    /// confirmation never comes (HA dropped the link before writing it), a real m0d hangs
    /// there: the process reports `SimEventKind::FlushHung` and returns the timeout. The socket
    /// is closed even when waiting fails.
    pub fn close(&self) -> Result<(), SimError> {
        let last = self.out_lock().next_tag - 2;
        let r = self.wait(
            &format!("confirmation of tag {last} (m0_ha_link_flush)"),
            self.cfg.timeouts.ack,
            |st| (st.ack_mark >= last).then_some(()),
        );
        if let Err(e) = &r {
            if !matches!(e, SimError::Died(_)) {
                log::warn!(
                    "sim {}: m0_ha_link_flush: tag {last} never confirmed ({e})",
                    self.cfg.process_fid
                );
                self.shared.emit(SimEventKind::FlushHung { tag: last });
            }
        }
        self.shared.closing.store(true, Ordering::SeqCst);
        self.conn().shut();
        r
    }

    /// Dies abruptly: the socket is closed at once, nothing more is sent.
    pub fn kill(&self) {
        log::info!("sim {}: killed", self.cfg.process_fid);
        self.shared.closing.store(true, Ordering::SeqCst);
        self.conn().shut();
    }

    /// Kills the process and boots it again on a new connection (first entrypoint again,
    /// tags from 2 again, fresh history).
    pub fn restart(&mut self) -> Result<BootReport, SimError> {
        self.reconnect()?;
        self.boot()
    }
}
