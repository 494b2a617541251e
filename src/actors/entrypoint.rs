//! The entrypoint responder: FidResolver's thread that answers Motr's entrypoint requests
//! from the cached cluster view. It never waits behind broadcasts or KV writes: requests
//! arrive on their own crossbeam channel straight from the C callback. When the view is not
//! ready (no Consul, no confd, no leader) a first request is answered EAGAIN after a pause
//! (Motr asks again at once otherwise); when it becomes ready before the pause ends, the
//! answer is a real one. A request that is not a process's first (it reconnects, e.g. after
//! hax restarted) is answered from what hax knows, the last leader included, and is held, never
//! answered EAGAIN, while hax knows nothing to say: Motr kills a reconnecting process told to
//! ask again. A first request from a process hax still holds a link to (a restart) waits
//! until its FAILED state has been broadcast (bounded by MeroLink's delivery timeout).
use super::merolink::{EntrypointLog, LinkedProcesses, MeroCmd};
use crate::ffi;
use crate::fid::Fid;
use crate::motr::{EntrypointReply, EntrypointReq, HaState, Note, EAGAIN};
use crate::view::SharedView;
use crossbeam_channel::{after, never, select, unbounded, Receiver, Sender};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub struct Responder {
    pub view: SharedView,
    pub requests: EntrypointLog,
    /// Processes MeroLink holds links to: only those can be restarts.
    pub linked: LinkedProcesses,
    pub mero: Sender<MeroCmd>,
    /// How long an EAGAIN answer waits.
    pub pause: Duration,
}

/// Starts the responder thread; it ends when `requests` closes (MeroLink finalised).
pub fn spawn(r: Responder, requests: Receiver<EntrypointReq>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("hax-entrypoint".into())
        .spawn(move || r.run(requests))
        .expect("spawn entrypoint thread")
}

impl Responder {
    fn run(self, requests: Receiver<EntrypointReq>) {
        let (done_tx, done_rx) = unbounded::<EntrypointReq>();
        let mut deferred: VecDeque<(Instant, EntrypointReq)> = VecDeque::new();
        let mut last_reason = String::new();
        loop {
            let timer = match deferred.front() {
                Some((at, _)) => after(at.saturating_duration_since(Instant::now())),
                None => never(),
            };
            select! {
                recv(requests) -> r => match r {
                    Ok(req) => {
                        self.requests.record(&req);
                        self.handle(req, false, &done_tx, &mut deferred, &mut last_reason);
                    }
                    Err(_) => return,
                },
                recv(done_rx) -> r => if let Ok(req) = r {
                    self.handle(req, true, &done_tx, &mut deferred, &mut last_reason);
                },
                recv(timer) -> _ => {
                    let now = Instant::now();
                    while deferred.front().is_some_and(|(at, _)| *at <= now) {
                        let (_, req) = deferred.pop_front().expect("front exists");
                        self.answer_or_eagain(req, &mut deferred, &mut last_reason);
                    }
                }
            }
        }
    }

    fn handle(
        &self,
        req: EntrypointReq,
        restart_handled: bool,
        done_tx: &Sender<EntrypointReq>,
        deferred: &mut VecDeque<(Instant, EntrypointReq)>,
        last_reason: &mut String,
    ) {
        let (reply, own, services) = {
            let v = self.view.read().unwrap_or_else(|e| e.into_inner());
            let own = v.identity.as_ref().map(|i| i.process);
            let reply = if req.first_request {
                v.entrypoint()
            } else {
                v.reconnect_entrypoint()
            };
            (reply, own, v.config.services_of(req.process))
        };
        match reply {
            Ok(_)
                if req.first_request
                    && !restart_handled
                    && own != Some(req.process)
                    && self.linked.contains(req.process) =>
            {
                // The process may have restarted: let MeroLink drop its old link first.
                let notes = restart_notes(req.process, &services);
                let tx = done_tx.clone();
                let r = req.clone();
                crate::metrics::entrypoint("restart", None);
                let cmd = MeroCmd::DropRestarted {
                    process: req.process,
                    notes,
                    done: Box::new(move |_| {
                        let _ = tx.send(r);
                    }),
                };
                if self.mero.send(cmd).is_err() {
                    self.answer_or_eagain(req, deferred, last_reason);
                }
            }
            Ok(reply) => reply_now(&req, &reply),
            Err(why) => {
                if *last_reason != why {
                    if req.first_request {
                        log::warn!(
                            "entrypoint: cannot answer {} yet ({why}); EAGAIN after {:?}",
                            req.process,
                            self.pause
                        );
                    } else {
                        log::warn!(
                            "entrypoint: cannot answer {}'s reconnection yet ({why}); holding it until hax can",
                            req.process
                        );
                    }
                    *last_reason = why;
                }
                deferred.push_back((Instant::now() + self.pause, req));
            }
        }
    }

    /// A deferred request whose pause is over: answered for real if hax can by now. Else a
    /// first request gets EAGAIN (the process asks again); a reconnecting process is never
    /// told that (Motr kills it: its link was made anyway, and its next request is refused as
    /// "disconnected previously"), so its request waits another pause.
    fn answer_or_eagain(
        &self,
        req: EntrypointReq,
        deferred: &mut VecDeque<(Instant, EntrypointReq)>,
        last_reason: &mut String,
    ) {
        let reply = {
            let v = self.view.read().unwrap_or_else(|e| e.into_inner());
            if req.first_request {
                v.entrypoint()
            } else {
                v.reconnect_entrypoint()
            }
        };
        match reply {
            Ok(r) => reply_now(&req, &r),
            Err(why) if !req.first_request => {
                crate::metrics::entrypoint("held", None);
                log::debug!(
                    "entrypoint: {}'s reconnection still held ({why})",
                    req.process
                );
                *last_reason = why;
                deferred.push_back((Instant::now() + self.pause, req));
            }
            Err(why) => {
                crate::metrics::entrypoint("eagain", None);
                log::debug!("entrypoint: EAGAIN to {} ({why})", req.process);
                *last_reason = why;
                reply_now(
                    &req,
                    &EntrypointReply {
                        rc: EAGAIN,
                        ..Default::default()
                    },
                );
            }
        }
    }
}

fn reply_now(req: &EntrypointReq, reply: &EntrypointReply) {
    if let Err(e) = ffi::entrypoint_reply(req.req_id, reply) {
        log::error!("entrypoint: reply to {} failed: {e}", req.process);
    } else if reply.rc == 0 {
        // The time is hax's: from Motr's callback to the reply handed back to Motr.
        crate::metrics::entrypoint("ok", Some(req.received.elapsed().as_secs_f64()));
        log::info!(
            "entrypoint: {} ({}) -> {} confd(s), quorum {}, RM {} at {}; answered in {:.3} ms",
            req.process,
            req.remote_ep,
            reply.confds.len(),
            reply.quorum,
            reply.rm_fid,
            reply.rm_ep,
            req.received.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// What a restart broadcasts: the process and its services, FAILED.
pub fn restart_notes(process: Fid, services: &[Fid]) -> Vec<Note> {
    std::iter::once(process)
        .chain(services.iter().copied())
        .map(|fid| Note {
            fid,
            state: HaState::Failed,
        })
        .collect()
}
