//! ConsulWriter: the only writer to Consul KV.
//!
//! Writes are ordered per key; a later write to a key supersedes an earlier one not yet
//! sent. Pending writes go out as `/v1/txn` batches (at most 64 ops and 512 KiB each).
//! While Consul is down or has no leader the batch is retried with jittered exponential
//! backoff; nothing is lost. Memory is bounded by a semaphore of `capacity` pending writes:
//! producers awaiting `WriterHandle::write` are slowed, never dropped. On shutdown `Flush`
//! tries until its deadline, then reports what was left unwritten.
use super::fid_resolver::Backoff;
use crate::consul::kv::TxnOp;
use crate::consul::{Consul, ConsulError};
use actix::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most operations in one transaction (Consul <= 1.13 allows 64).
pub const TXN_MAX_OPS: usize = 64;
/// Most bytes in one transaction body (Consul refuses bodies over 512 KiB).
pub const TXN_MAX_BYTES: usize = 512 * 1024 - 4096;

/// Set (`Some`) or delete (`None`) one key.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KvWrite {
    pub key: String,
    pub value: Option<Vec<u8>>,
    permit: Option<OwnedSemaphorePermit>,
}

/// Write what is pending until `deadline`; answers the number of writes left unwritten.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Flush {
    pub deadline: Duration,
}

/// Counters for tests and status output.
#[derive(Message)]
#[rtype(result = "WriterStats")]
pub struct StatsReq;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, MessageResponse)]
pub struct WriterStats {
    pub pending: usize,
    pub written: u64,
    pub superseded: u64,
    pub txns: u64,
    pub retries: u64,
}

/// What producers hold: the writer's address and its capacity.
#[derive(Clone)]
pub struct WriterHandle {
    pub addr: Addr<ConsulWriter>,
    slots: Arc<Semaphore>,
}

impl WriterHandle {
    /// Queues a write, waiting while `capacity` writes are already pending.
    pub async fn write(&self, key: String, value: Option<Vec<u8>>) {
        let permit = self.slots.clone().acquire_owned().await.ok();
        self.addr.do_send(KvWrite { key, value, permit });
    }
}

struct Entry {
    value: Option<Vec<u8>>,
    _permit: Option<OwnedSemaphorePermit>,
}

pub struct ConsulWriter {
    consul: Consul,
    /// Keys in the order their oldest pending write arrived.
    order: VecDeque<String>,
    latest: HashMap<String, Entry>,
    in_flight: bool,
    /// Keys of a transaction whose answer never came: Consul may still apply it later (a
    /// frozen agent reads the request when it resumes) and put an older value back.
    uncertain: std::collections::HashSet<String>,
    /// Values written for uncertain keys since, written once more a while later.
    rewrite: HashMap<String, Option<Vec<u8>>>,
    backoff: Backoff,
    stopping: bool,
    stats: WriterStats,
}

impl ConsulWriter {
    /// Starts the writer; `capacity` bounds pending writes.
    pub fn start(consul: Consul, capacity: usize) -> WriterHandle {
        let addr = ConsulWriter {
            consul,
            order: VecDeque::new(),
            latest: HashMap::new(),
            in_flight: false,
            uncertain: Default::default(),
            rewrite: HashMap::new(),
            backoff: Backoff::default(),
            stopping: false,
            stats: WriterStats::default(),
        }
        .start();
        WriterHandle {
            addr,
            slots: Arc::new(Semaphore::new(capacity.max(1))),
        }
    }

    fn take_batch(&mut self) -> Vec<(String, Entry)> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < TXN_MAX_OPS {
            let Some(key) = self.order.front() else { break };
            let size = key.len()
                + self
                    .latest
                    .get(key)
                    .and_then(|e| e.value.as_ref())
                    .map_or(0, |v| v.len() * 4 / 3 + 4)
                + 48;
            if !batch.is_empty() && bytes + size > TXN_MAX_BYTES {
                break;
            }
            let key = self.order.pop_front().expect("front exists");
            if let Some(e) = self.latest.remove(&key) {
                bytes += size;
                batch.push((key, e));
            }
        }
        batch
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || self.order.is_empty() {
            return;
        }
        let batch = self.take_batch();
        if batch.is_empty() {
            return;
        }
        self.in_flight = true;
        let ops: Vec<TxnOp> = batch
            .iter()
            .map(|(k, e)| match &e.value {
                Some(v) => TxnOp::set(k, v),
                None => TxnOp::delete(k),
            })
            .collect();
        let body = serde_json::to_vec(&ops).unwrap_or_default();
        let consul = self.consul.clone();
        let fut = async move { consul.put("/v1/txn", body).await };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |r: Result<Vec<u8>, ConsulError>, act, ctx| {
                    act.in_flight = false;
                    act.stats.txns += 1;
                    match r {
                        Ok(_) => {
                            act.stats.written += batch.len() as u64;
                            act.after_success(&batch, ctx);
                            act.backoff.reset();
                            act.pump(ctx);
                        }
                        Err(e) => {
                            act.stats.retries += 1;
                            if matches!(e, ConsulError::Unreachable { .. }) {
                                act.uncertain.extend(batch.iter().map(|(k, _)| k.clone()));
                            }
                            // Put the batch back in front, unless a newer write superseded a key.
                            for (k, e) in batch.into_iter().rev() {
                                if act.latest.contains_key(&k) {
                                    act.stats.superseded += 1;
                                } else {
                                    act.latest.insert(k.clone(), e);
                                    act.order.push_front(k);
                                }
                            }
                            if act.stopping {
                                return;
                            }
                            let d = act.backoff.next_delay();
                            log::warn!(
                                "ConsulWriter: {} write(s) pending; retrying in {d:?}: {e}",
                                act.latest.len()
                            );
                            ctx.run_later(d, |act, ctx| act.pump(ctx));
                        }
                    }
                }),
        );
    }
}

impl ConsulWriter {
    /// After a transaction whose answer was lost, the values written since for its keys are
    /// written again a second later, so that a late apply of the lost one cannot leave an
    /// older value in KV.
    fn after_success(&mut self, batch: &[(String, Entry)], ctx: &mut Context<Self>) {
        if self.uncertain.is_empty() && self.rewrite.is_empty() {
            return;
        }
        let first = self.rewrite.is_empty();
        for (k, e) in batch {
            // A later value for a key already due to be written again replaces the older.
            if self.uncertain.remove(k) || self.rewrite.contains_key(k) {
                self.rewrite.insert(k.clone(), e.value.clone());
            }
        }
        if first && !self.rewrite.is_empty() {
            ctx.run_later(REWRITE_AFTER, |act, ctx| {
                for (key, value) in std::mem::take(&mut act.rewrite) {
                    if !act.latest.contains_key(&key) {
                        log::info!("ConsulWriter: writing {key} again (an earlier write to it got no answer)");
                        act.latest.insert(key.clone(), Entry { value, _permit: None });
                        act.order.push_back(key);
                    }
                }
                act.pump(ctx);
            });
        }
    }
}

/// How long after a lost answer's keys were written again they are written once more.
const REWRITE_AFTER: Duration = Duration::from_secs(1);

impl Actor for ConsulWriter {
    type Context = Context<Self>;
}

impl Handler<KvWrite> for ConsulWriter {
    type Result = ();
    fn handle(&mut self, w: KvWrite, ctx: &mut Context<Self>) {
        let entry = Entry {
            value: w.value,
            _permit: w.permit,
        };
        if self.latest.insert(w.key.clone(), entry).is_some() {
            // The older unsent write is superseded; the key keeps its place in the order.
            self.stats.superseded += 1;
        } else {
            self.order.push_back(w.key);
        }
        self.pump(ctx);
    }
}

impl Handler<StatsReq> for ConsulWriter {
    type Result = WriterStats;
    fn handle(&mut self, _: StatsReq, _: &mut Context<Self>) -> WriterStats {
        WriterStats {
            pending: self.latest.len() + usize::from(self.in_flight),
            ..self.stats
        }
    }
}

impl Handler<Flush> for ConsulWriter {
    type Result = ResponseActFuture<Self, usize>;
    fn handle(&mut self, f: Flush, ctx: &mut Context<Self>) -> Self::Result {
        self.pump(ctx);
        flush_wait(self, Instant::now() + f.deadline)
    }
}

/// Waits in steps of 50 ms for the writer to drain, up to a deadline.
fn flush_wait(act: &mut ConsulWriter, deadline: Instant) -> ResponseActFuture<ConsulWriter, usize> {
    Box::pin(actix_rt::time::sleep(Duration::from_millis(50)).into_actor(act).then(move |_, act, ctx| {
                act.pump(ctx);
                let left = act.latest.len() + usize::from(act.in_flight);
                if left == 0 || Instant::now() >= deadline {
                    if left > 0 {
                        act.stopping = true;
                        let keys: Vec<&String> = act.order.iter().take(10).collect();
                        log::error!("ConsulWriter: shutting down with {left} write(s) unwritten (first keys: {keys:?})");
                    }
                    Box::pin(actix::fut::ready(left)) as ResponseActFuture<ConsulWriter, usize>
                } else {
                    flush_wait(act, deadline)
                }
            }))
}
