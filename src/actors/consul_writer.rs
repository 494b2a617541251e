//! ConsulWriter: makes Motr's news durable in Consul, then says so.
//!
//! It takes records (an entry for a queue, `eq/` in practice, and optionally one key written
//! with it: `processes/<fid>`) and commits them in order in `/v1/txn` transactions: `cas
//! epochs/<q>` at the epoch's ModifyIndex, then per record the key's `set` and the entry's
//! `cas <q>/<n>` at index 0, packed by ops *and* bytes (`consul::txn::Packer`). A record is
//! durable when its transaction committed; only then are its `Ack`s confirmed, so Motr is told
//! "delivered" only for what Consul holds.
//!
//! - A newer record with the same `latest` key (a process's state) replaces one not sent yet,
//!   and the replaced record's acks are confirmed at once: a burst costs one write per
//!   process, not one per event, and Motr holds at most one unconfirmed state per process.
//!   Nothing is lost by the early confirmation: the newer message, on the same link or on the
//!   link of the process's next incarnation, stays unconfirmed until it commits, so Motr sends
//!   it again to a restarted hax, and it carries everything the replaced one said (a process's
//!   record is its latest state).
//! - Transient failures (Consul down, no leader, 5xx) are retried with backoff. When the
//!   answer may have been lost after a commit, the outcome is read back (the first entry's key
//!   holds exactly its bytes, or the first record's `processes/<fid>` does: the RC leader may
//!   have handled and deleted the entry already) before anything else; the epoch compare-and-set makes a
//!   late apply of the lost transaction impossible once anything else committed.
//! - A 4xx other than 409 never blocks the queue: the batch is sent again one record at a time
//!   and the record Consul refuses is set aside (logged in full, counted in
//!   `hax_consul_writes_rejected_total`) and confirmed, since it can never be written.
//! - Memory: records are held only while Motr holds their messages unconfirmed, and one per
//!   process at most for process states; `Flush` at shutdown tries until its deadline and
//!   reports what was left (Motr sends those messages again to the next hax).
use crate::consul::backoff::Backoff;
use crate::consul::txn::{self, Op, Packer, TxnError};
use crate::consul::{Consul, ConsulError};
use crate::messages::Ack;
use crate::rc::envelope::Envelope;
use crate::rc::publish::{read_epoch, Epoch};
use crate::rc::queue::Queue;
use actix::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A key written with a record: its name and value.
type KeyWrite = Option<(String, Vec<u8>)>;

/// One record to make durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteRecord {
    pub queue: Queue,
    pub entry: Envelope,
    /// A key written in the same transaction (`processes/<fid>` and its value).
    pub key: Option<(String, Vec<u8>)>,
    /// A newer record with the same `latest` replaces this one while it is not sent.
    pub latest: Option<String>,
    pub acks: Vec<Ack>,
}

/// Write what is pending until `deadline`; answers the number of records left unwritten.
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
    pub rejected: u64,
}

struct Rec {
    queue: Queue,
    entry: Vec<u8>,
    what: String,
    key: Option<(String, Vec<u8>)>,
    latest: Option<String>,
    acks: Vec<Ack>,
}

impl Rec {
    /// The ops of this record once its entry is number `n`.
    fn ops(&self, n: u64) -> Vec<Op> {
        let mut ops = Vec::with_capacity(2);
        if let Some((key, value)) = &self.key {
            ops.push(Op::Set {
                key: key.clone(),
                value: value.clone(),
            });
        }
        ops.push(Op::Cas {
            key: self.queue.key(n),
            value: self.entry.clone(),
            index: 0,
        });
        ops
    }
}

/// A transaction whose answer was lost: it may have committed.
struct Uncertain {
    ids: Vec<u64>,
    /// Its first entry's key and bytes: present with exactly these bytes iff it committed
    /// and the RC leader has not handled (deleted) the entry since.
    first_key: String,
    first_bytes: Vec<u8>,
    /// Its first key write (`processes/<fid>` and the record): the second witness, which the
    /// leader never deletes. Nothing else writes a process's record, and this writer sends
    /// no newer one for it before the outcome is known, so holding exactly these bytes means
    /// committed (or an identical record written before: durable either way).
    witness: Option<(String, Vec<u8>)>,
}

pub struct ConsulWriter {
    consul: Consul,
    /// Records in write order (ids), not in flight.
    order: VecDeque<u64>,
    records: HashMap<u64, Rec>,
    by_latest: HashMap<String, u64>,
    next_id: u64,
    in_flight: bool,
    uncertain: Option<Uncertain>,
    /// The epoch this writer's last commit left, per queue (None: read it first).
    epochs: HashMap<Queue, Epoch>,
    /// Read the epoch "above every entry present" next time (an entry key was taken).
    repair: bool,
    /// Records to send one per transaction (after Consul rejected a batch).
    isolate: usize,
    conflicts: u32,
    backoff: Backoff,
    stopping: bool,
    stats: WriterStats,
}

impl ConsulWriter {
    pub fn new(consul: Consul) -> ConsulWriter {
        ConsulWriter {
            consul,
            order: VecDeque::new(),
            records: HashMap::new(),
            by_latest: HashMap::new(),
            next_id: 1,
            in_flight: false,
            uncertain: None,
            epochs: HashMap::new(),
            repair: false,
            isolate: 0,
            conflicts: 0,
            backoff: Backoff::default(),
            stopping: false,
            stats: WriterStats::default(),
        }
    }

    fn gauge(&self) {
        crate::metrics::METRICS
            .kv_queue_depth
            .set(self.records.len() as i64);
    }

    /// The ids of the next transaction: the first run of records of one queue that fits.
    fn take_batch(&mut self) -> Vec<u64> {
        let Some(q) = self
            .order
            .front()
            .and_then(|id| self.records.get(id))
            .map(|r| r.queue)
        else {
            return Vec::new();
        };
        let most = if self.isolate > 0 { 1 } else { usize::MAX };
        // Sized with the longest entry key: the numbers are known only with the epoch.
        let mut packer = Packer::with(&[Op::Cas {
            key: q.epoch_key(),
            value: u64::MAX.to_string().into_bytes(),
            index: u64::MAX,
        }]);
        let mut ids = Vec::new();
        while ids.len() < most {
            let Some(&id) = self.order.front() else { break };
            let Some(r) = self.records.get(&id) else {
                self.order.pop_front();
                continue;
            };
            if r.queue != q || !packer.fits(&r.ops(u64::MAX)) {
                break;
            }
            self.order.pop_front();
            if let Some(l) = &r.latest {
                if self.by_latest.get(l) == Some(&id) {
                    self.by_latest.remove(l);
                }
            }
            ids.push(id);
        }
        ids
    }

    /// Puts a batch back at the front, in order. A record superseded meanwhile (a newer one
    /// with its `latest` key is queued) is confirmed and goes: the newer one carries its news.
    fn put_back(&mut self, ids: Vec<u64>) {
        for id in ids.into_iter().rev() {
            let Some(latest) = self.records.get(&id).and_then(|r| r.latest.clone()) else {
                self.order.push_front(id);
                continue;
            };
            match self.by_latest.get(&latest).copied() {
                Some(newer) if newer != id => {
                    if let Some(old) = self.records.remove(&id) {
                        for a in &old.acks {
                            a.confirm();
                        }
                        self.stats.superseded += 1;
                    }
                }
                _ => {
                    self.by_latest.insert(latest, id);
                    self.order.push_front(id);
                }
            }
        }
    }

    /// The records committed: confirm them.
    fn committed(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(r) = self.records.remove(id) {
                for a in &r.acks {
                    a.confirm();
                }
                self.stats.written += 1;
            }
        }
        if self.isolate > 0 {
            self.isolate = self.isolate.saturating_sub(ids.len());
        }
        self.gauge();
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight {
            return;
        }
        if let Some(u) = self.uncertain.take() {
            return self.read_back(u, ctx);
        }
        let ids = self.take_batch();
        if ids.is_empty() {
            return;
        }
        self.in_flight = true;
        let q = self.records[&ids[0]].queue;
        let items: Vec<(KeyWrite, Vec<u8>)> = ids
            .iter()
            .map(|id| {
                let r = &self.records[id];
                (r.key.clone(), r.entry.clone())
            })
            .collect();
        let known = self.epochs.remove(&q);
        let repair = std::mem::take(&mut self.repair);
        let consul = self.consul.clone();
        let fut = async move {
            let epoch = match known {
                Some(e) => e,
                // A failed read changed nothing: never "maybe applied".
                None => read_epoch(&consul, q, repair).await.map_err(|e| Failed {
                    error: match TxnError::from(e) {
                        TxnError::Transient { error, .. } => TxnError::Transient {
                            error,
                            maybe_applied: false,
                        },
                        other => other,
                    },
                    first_key: String::new(),
                    first_bytes: Vec::new(),
                    ops: Vec::new(),
                })?,
            };
            let mut ops = vec![Op::Cas {
                key: q.epoch_key(),
                value: (epoch.last + items.len() as u64).to_string().into_bytes(),
                index: epoch.index,
            }];
            for (i, (key, entry)) in items.iter().enumerate() {
                if let Some((k, v)) = key {
                    ops.push(Op::Set {
                        key: k.clone(),
                        value: v.clone(),
                    });
                }
                ops.push(Op::Cas {
                    key: q.key(epoch.last + 1 + i as u64),
                    value: entry.clone(),
                    index: 0,
                });
            }
            let t = Instant::now();
            let r = txn::commit_indexes(&consul, &ops).await;
            crate::metrics::consul_txn("events", t.elapsed().as_secs_f64());
            let first_key = q.key(epoch.last + 1);
            let first_bytes = items.first().map(|(_, e)| e.clone()).unwrap_or_default();
            match r {
                Ok(indexes) => {
                    crate::metrics::queue_written(q.name(), items.len());
                    let next =
                        indexes
                            .iter()
                            .find(|(k, _)| *k == q.epoch_key())
                            .map(|(_, index)| Epoch {
                                last: epoch.last + items.len() as u64,
                                index: *index,
                            });
                    Ok(next)
                }
                Err(e) => Err((e, first_key, first_bytes, ops)),
            }
            .map_err(|(e, k, b, ops)| Failed {
                error: e,
                first_key: k,
                first_bytes: b,
                ops,
            })
        };
        ctx.spawn(fut.into_actor(self).map(move |r, act, ctx| {
            act.in_flight = false;
            act.stats.txns += 1;
            match r {
                Ok(next) => {
                    if let Some(e) = next {
                        act.epochs.insert(q, e);
                    }
                    act.committed(&ids);
                    act.backoff.reset();
                    act.conflicts = 0;
                    act.pump(ctx);
                }
                Err(f) => act.failed(q, ids, f, ctx),
            }
        }));
    }

    fn failed(&mut self, q: Queue, ids: Vec<u64>, f: Failed, ctx: &mut Context<Self>) {
        crate::metrics::consul_txn_error("events", f.error.kind());
        self.stats.retries += 1;
        match f.error {
            TxnError::Conflict { op, what } => {
                // Op 0 is the epoch: someone else published first. A later op is an entry
                // that exists: the epoch is behind the entries present.
                let entry_taken = op.is_some_and(|i| {
                    f.ops.get(i).is_some_and(
                        |o| matches!(o, Op::Cas { key, .. } if key.starts_with(&q.prefix())),
                    )
                });
                self.repair = entry_taken;
                if entry_taken {
                    log::warn!("ConsulWriter: {what}; {} is behind the entries present, moving it past them", q.epoch_key());
                }
                self.put_back(ids);
                self.conflicts += 1;
                let wait = if self.conflicts > 1 {
                    Duration::from_micros(
                        (2000.0
                            + f64::from(self.conflicts.min(25))
                                * 2000.0
                                * crate::consul::backoff::jitter()) as u64,
                    )
                } else {
                    Duration::ZERO
                };
                ctx.run_later(wait, |act, ctx| act.pump(ctx));
            }
            TxnError::Rejected(e) if ids.len() > 1 => {
                log::warn!("ConsulWriter: Consul rejected a transaction of {} records ({e}); sending them one at a time to find the one it refuses", ids.len());
                self.isolate = ids.len();
                self.put_back(ids);
                self.pump(ctx);
            }
            TxnError::Rejected(e) => {
                for id in &ids {
                    if let Some(r) = self.records.get(id) {
                        log::error!(
                            "ConsulWriter: Consul refuses to store a {} record{} ({e}); setting it aside and confirming it (it can never be written). The entry was: {}",
                            r.what,
                            r.key.as_ref().map(|(k, _)| format!(" with {k}")).unwrap_or_default(),
                            String::from_utf8_lossy(&r.entry).chars().take(2000).collect::<String>()
                        );
                    }
                    crate::metrics::consul_write_rejected("events");
                    self.stats.rejected += 1;
                }
                self.committed(&ids);
                self.pump(ctx);
            }
            TxnError::Transient {
                error,
                maybe_applied,
            } => {
                if maybe_applied {
                    let witness = f.ops.iter().find_map(|o| match o {
                        Op::Set { key, value } => Some((key.clone(), value.clone())),
                        _ => None,
                    });
                    self.uncertain = Some(Uncertain {
                        ids: ids.clone(),
                        first_key: f.first_key,
                        first_bytes: f.first_bytes,
                        witness,
                    });
                } else {
                    self.put_back(ids);
                }
                self.retry_later(&error, ctx);
            }
        }
    }

    fn retry_later(&mut self, e: &ConsulError, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let d = self.backoff.next_delay();
        log::warn!(
            "ConsulWriter: {} record(s) pending; retrying in {d:?}: {e}",
            self.records.len()
        );
        ctx.run_later(d, |act, ctx| act.pump(ctx));
    }

    /// Resolves a transaction whose answer was lost by reading its first entry back.
    fn read_back(&mut self, u: Uncertain, ctx: &mut Context<Self>) {
        self.in_flight = true;
        let consul = self.consul.clone();
        let path = format!("/v1/kv/{}?raw", u.first_key);
        let witness = u.witness.clone();
        let first_bytes = u.first_bytes.clone();
        ctx.spawn(
            async move {
                // The entry first; if it is not there as written, the record's key.
                let entry = consul.get_raw(&path, None, Duration::ZERO).await?;
                if entry.0.as_deref() == Some(first_bytes.as_slice()) {
                    return Ok(true);
                }
                match witness {
                    Some((key, value)) => {
                        let (held, _) = consul
                            .get_raw(&format!("/v1/kv/{key}?raw"), None, Duration::ZERO)
                            .await?;
                        Ok(held.as_deref() == Some(value.as_slice()))
                    }
                    None => Ok(false),
                }
            }
                .into_actor(self)
                .map(move |r: Result<bool, ConsulError>, act, ctx| {
                    act.in_flight = false;
                    match r {
                        Ok(true) => {
                            log::info!("ConsulWriter: a transaction whose answer was lost did commit ({} or its record holds what it wrote)", u.first_key);
                            act.epochs.clear();
                            act.committed(&u.ids);
                            act.pump(ctx);
                        }
                        Ok(_) => {
                            // Not committed; the epoch compare-and-set of the next commit
                            // makes a late apply of the lost one fail.
                            act.put_back(u.ids);
                            act.pump(ctx);
                        }
                        Err(e) => {
                            act.uncertain = Some(u);
                            act.retry_later(&e, ctx);
                        }
                    }
                }),
        );
    }
}

/// A transaction that did not commit, with what is needed to resolve it.
struct Failed {
    error: TxnError,
    first_key: String,
    first_bytes: Vec<u8>,
    ops: Vec<Op>,
}

impl Actor for ConsulWriter {
    type Context = Context<Self>;
}

impl Handler<WriteRecord> for ConsulWriter {
    type Result = ();
    fn handle(&mut self, w: WriteRecord, ctx: &mut Context<Self>) {
        let entry = w.entry.to_bytes();
        if let Some(l) = &w.latest {
            if let Some(r) = self
                .by_latest
                .get(l)
                .and_then(|id| self.records.get_mut(id))
            {
                // Not sent yet: the newer record takes its place; the replaced one's
                // messages are confirmed (the newer, unconfirmed until it commits, says more).
                for a in &r.acks {
                    a.confirm();
                }
                r.entry = entry;
                r.what = w.entry.message_type;
                r.key = w.key;
                r.acks = w.acks;
                self.stats.superseded += 1;
                return;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        if let Some(l) = &w.latest {
            self.by_latest.insert(l.clone(), id);
        }
        self.records.insert(
            id,
            Rec {
                queue: w.queue,
                entry,
                what: w.entry.message_type,
                key: w.key,
                latest: w.latest,
                acks: w.acks,
            },
        );
        self.order.push_back(id);
        self.gauge();
        self.pump(ctx);
    }
}

impl Handler<StatsReq> for ConsulWriter {
    type Result = WriterStats;
    fn handle(&mut self, _: StatsReq, _: &mut Context<Self>) -> WriterStats {
        WriterStats {
            pending: self.records.len(),
            ..self.stats
        }
    }
}

impl Handler<Flush> for ConsulWriter {
    type Result = ResponseActFuture<Self, usize>;
    fn handle(&mut self, f: Flush, ctx: &mut Context<Self>) -> Self::Result {
        self.backoff.reset();
        self.pump(ctx);
        flush_wait(self, Instant::now() + f.deadline)
    }
}

/// Waits in steps of 20 ms for the writer to drain, up to a deadline.
fn flush_wait(act: &mut ConsulWriter, deadline: Instant) -> ResponseActFuture<ConsulWriter, usize> {
    Box::pin(
        actix_rt::time::sleep(Duration::from_millis(20))
            .into_actor(act)
            .then(move |_, act, ctx| {
                act.pump(ctx);
                let left = act.records.len();
                if left == 0 || Instant::now() >= deadline {
                    if left > 0 {
                        act.stopping = true;
                        log::error!("ConsulWriter: shutting down with {left} record(s) unwritten; Motr keeps their messages unconfirmed and sends them to the next hax");
                    }
                    Box::pin(actix::fut::ready(left)) as ResponseActFuture<ConsulWriter, usize>
                } else {
                    flush_wait(act, deadline)
                }
            }),
    )
}
