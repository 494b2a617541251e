//! Publishing to `eq/` and `bq/`: sequence numbers without gaps, allocated by the same
//! transaction that writes the entries.
//!
//! Transaction: `cas epochs/<q> = last+k` at the epoch's ModifyIndex (0 when it does not exist
//! yet), then `cas <q>/<last+1> .. <q>/<last+k>` at index 0 (only if absent). Two publishers
//! racing for the same numbers: one commits, the other gets 409 and tries again with the new
//! epoch. An absent epoch, or an entry that exists already (the epoch key was deleted or set
//! back by hand), makes the next attempt start above every entry present (and, for `bq/`,
//! above every consumer offset), so that numbers only ever grow.
//!
//! [`QueueHandle`] is hax's publisher: a task that takes entries in order, batches them (at
//! most 63 per transaction), retries while Consul is down and reports at shutdown what it
//! could not write.
use super::envelope::Envelope;
use super::queue::{parse_counter, seq_of, Queue};
use super::txn::{self, Op, TxnError, MAX_BYTES, MAX_OPS};
use crate::actors::fid_resolver::{jitter, Backoff};
use crate::consul::kv::KvEntry;
use crate::consul::{Consul, ConsulError};
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The last sequence number given out and the epoch key's ModifyIndex (0: absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch {
    pub last: u64,
    pub index: u64,
}

/// Most entries published by one transaction (the epoch takes one op).
pub const MAX_BATCH: usize = MAX_OPS - 1;

/// The highest sequence number among the keys under `q/`.
async fn max_key(consul: &Consul, q: Queue) -> Result<u64, ConsulError> {
    let path = format!("/v1/kv/{}?keys", q.prefix());
    let (keys, _) = consul
        .get_json::<Vec<String>>(&path, None, Duration::ZERO)
        .await?;
    Ok(keys
        .unwrap_or_default()
        .iter()
        .filter_map(|k| seq_of(k, q))
        .max()
        .unwrap_or(0))
}

/// The highest consumer offset (`bq-offsets/<node>`).
async fn max_offset(consul: &Consul) -> Result<u64, ConsulError> {
    let (kv, _) = consul
        .get_json::<Vec<KvEntry>>("/v1/kv/bq-offsets/?recurse", None, Duration::ZERO)
        .await?;
    Ok(kv
        .unwrap_or_default()
        .iter()
        .filter_map(|e| parse_counter(&e.value_string()))
        .max()
        .unwrap_or(0))
}

/// Reads `epochs/<q>`. `repair`: also look above the entries present (and, for bq, the
/// offsets), as when the epoch is absent.
pub async fn read_epoch(consul: &Consul, q: Queue, repair: bool) -> Result<Epoch, ConsulError> {
    let path = format!("/v1/kv/{}", q.epoch_key());
    let (kv, _) = consul
        .get_json::<Vec<KvEntry>>(&path, None, Duration::ZERO)
        .await?;
    let entry = kv.and_then(|v| v.into_iter().next());
    let (stored, index) = match &entry {
        Some(e) => (parse_counter(&e.value_string()), e.modify_index),
        None => (None, 0),
    };
    if entry.is_some() && stored.is_none() {
        log::warn!(
            "queue: {} holds {:?}, not a number; starting above the entries present",
            q.epoch_key(),
            entry.as_ref().map(|e| e.value_string())
        );
    }
    let mut last = stored.unwrap_or(0);
    if stored.is_none() || repair {
        last = last.max(max_key(consul, q).await?);
        if q == Queue::Bq {
            last = last.max(max_offset(consul).await?);
        }
    }
    Ok(Epoch { last, index })
}

/// The operations that publish `values` as the entries after `epoch`, and their keys.
pub fn publish_ops(q: Queue, epoch: Epoch, values: &[Vec<u8>]) -> (Vec<Op>, Vec<String>) {
    let keys: Vec<String> = (1..=values.len() as u64)
        .map(|i| q.key(epoch.last + i))
        .collect();
    let mut ops = vec![Op::Cas {
        key: q.epoch_key(),
        value: (epoch.last + values.len() as u64).to_string().into_bytes(),
        index: epoch.index,
    }];
    ops.extend(keys.iter().zip(values).map(|(k, v)| Op::Cas {
        key: k.clone(),
        value: v.clone(),
        index: 0,
    }));
    (ops, keys)
}

/// Publishes `values` (at most [`MAX_BATCH`], together under [`MAX_BYTES`]) in one
/// transaction, retrying on conflicts; returns their keys in order.
pub async fn publish_values(
    consul: &Consul,
    q: Queue,
    values: &[Vec<u8>],
) -> Result<Vec<String>, ConsulError> {
    publish_values_after(consul, q, values, None)
        .await
        .map(|(keys, _)| keys)
}

/// As [`publish_values`], starting from `known` (the epoch this publisher left behind, so
/// that an uncontended publisher does not read it again); answers the keys and the epoch
/// after the commit (`None` when Consul did not report its new index).
pub async fn publish_values_after(
    consul: &Consul,
    q: Queue,
    values: &[Vec<u8>],
    known: Option<Epoch>,
) -> Result<(Vec<String>, Option<Epoch>), ConsulError> {
    let mut repair = false;
    let mut known = known;
    for conflicts in 0u32.. {
        let epoch = match known.take() {
            Some(e) => e,
            None => read_epoch(consul, q, repair).await?,
        };
        let (ops, keys) = publish_ops(q, epoch, values);
        match txn::commit_indexes(consul, &ops).await {
            Ok(indexes) => {
                let epoch_key = q.epoch_key();
                let next = indexes
                    .iter()
                    .find(|(k, _)| *k == epoch_key)
                    .map(|(_, index)| Epoch {
                        last: epoch.last + values.len() as u64,
                        index: *index,
                    });
                return Ok((keys, next));
            }
            Err(TxnError::Consul(e)) => return Err(e),
            Err(TxnError::Conflict { op, what }) => {
                // Op 0 is the epoch (someone else published first); a later op is an entry
                // that exists already: the epoch is behind the entries.
                repair = op.is_some_and(|i| i > 0);
                if repair {
                    log::warn!(
                        "queue: {what}; {} is behind the entries present, moving it past them",
                        q.epoch_key()
                    );
                }
                if conflicts >= 500 {
                    return Err(ConsulError::Status {
                        status: 409,
                        what: format!("publishing to {}", q.prefix()),
                        body: format!("gave up after {conflicts} conflicts: {what}"),
                    });
                }
                // A cached epoch that conflicts is simply stale: read it again at once.
                if conflicts > 0 || op != Some(0) {
                    let ms = 2.0 + f64::from(conflicts.min(25)) * 2.0 * jitter();
                    actix_rt::time::sleep(Duration::from_micros((ms * 1000.0) as u64)).await;
                }
            }
        }
    }
    unreachable!("the loop returns")
}

/// Publishes entries in order (in as many transactions as needed); returns their keys.
pub async fn publish(
    consul: &Consul,
    q: Queue,
    entries: &[Envelope],
) -> Result<Vec<String>, ConsulError> {
    let values: Vec<Vec<u8>> = entries.iter().map(Envelope::to_bytes).collect();
    let mut keys = Vec::with_capacity(values.len());
    let mut rest = &values[..];
    while !rest.is_empty() {
        let n = batch_len(rest.iter().map(|v| v.len()));
        keys.extend(publish_values(consul, q, &rest[..n]).await?);
        rest = &rest[n..];
    }
    Ok(keys)
}

/// How many of the next values go into one transaction (at least one).
fn batch_len(sizes: impl Iterator<Item = usize>) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for s in sizes.take(MAX_BATCH) {
        if n > 0 && bytes + s + 128 > MAX_BYTES {
            break;
        }
        bytes += s + 128;
        n += 1;
    }
    n.max(1)
}

enum Cmd {
    Publish(Queue, Envelope, Option<String>),
    Flush(oneshot::Sender<usize>),
}

/// Least time between two transactions of the publisher while it has a backlog: entries
/// gather (and superseding ones replace each other) instead of competing with hax's other
/// Consul writes one transaction at a time.
pub const PACE: Duration = Duration::from_millis(25);

/// hax's publisher: `publish` queues an entry (never blocks, never drops it); a task on the
/// current arbiter writes entries in the order given.
#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    state: Rc<PubState>,
}

#[derive(Default)]
struct PubState {
    pending: Cell<usize>,
    deadline: Cell<Option<Instant>>,
}

impl QueueHandle {
    /// Starts the publisher task (on the current actix arbiter).
    pub fn start(consul: Consul) -> QueueHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Rc::new(PubState::default());
        actix::spawn(run(consul, rx, state.clone()));
        QueueHandle { tx, state }
    }

    /// Queues `entry` for `q`.
    pub fn publish(&self, q: Queue, entry: Envelope) {
        self.queue(q, entry, None);
    }

    /// Queues `entry` for `q`, replacing the entry queued earlier with the same `key` if that
    /// one is not written yet (it keeps its place in the order). For news where only the
    /// latest matters (a process's state): a burst costs one entry per key, not one per event.
    pub fn publish_latest(&self, q: Queue, key: String, entry: Envelope) {
        self.queue(q, entry, Some(key));
    }

    fn queue(&self, q: Queue, entry: Envelope, key: Option<String>) {
        let what = entry.message_type.clone();
        if entry.to_bytes().len() + 256 > MAX_BYTES {
            log::error!(
                "queue: a {what} entry of {} bytes cannot be stored in Consul; not published",
                entry.to_bytes().len()
            );
            return;
        }
        self.state.pending.set(self.state.pending.get() + 1);
        if self.tx.send(Cmd::Publish(q, entry, key)).is_err() {
            log::error!(
                "queue: publisher gone; {what} entry for {} lost",
                q.prefix()
            );
        }
    }

    /// Entries not yet written.
    pub fn pending(&self) -> usize {
        self.state.pending.get()
    }

    /// Shutdown: writes what is queued until `within` has passed; answers how many entries
    /// were left unwritten.
    pub async fn flush(&self, within: Duration) -> usize {
        self.state.deadline.set(Some(Instant::now() + within));
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Flush(tx)).is_err() {
            return self.pending();
        }
        match tokio::time::timeout(within + Duration::from_millis(500), rx).await {
            Ok(Ok(n)) => n,
            _ => self.pending(),
        }
    }
}

/// The publisher's queue: entries in order, each numbered, with the superseding keys of the
/// entries still queued.
#[derive(Default)]
struct Backlog {
    entries: VecDeque<Queued>,
    by_key: HashMap<String, u64>,
    next: u64,
}

struct Queued {
    no: u64,
    q: Queue,
    entry: Envelope,
    key: Option<String>,
}

impl Backlog {
    /// Adds an entry; answers whether it replaced a queued one.
    fn push(&mut self, q: Queue, entry: Envelope, key: Option<String>) -> bool {
        if let Some(k) = &key {
            if let Some(&no) = self.by_key.get(k) {
                if let Ok(i) = self.entries.binary_search_by_key(&no, |e| e.no) {
                    if self.entries[i].q == q {
                        self.entries[i].entry = entry;
                        return true;
                    }
                }
            }
        }
        self.next += 1;
        if let Some(k) = &key {
            self.by_key.insert(k.clone(), self.next);
        }
        self.entries.push_back(Queued {
            no: self.next,
            q,
            entry,
            key,
        });
        false
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The next run of entries for one queue (at most one transaction's worth).
    fn next_batch(&self) -> Option<(Queue, Vec<Vec<u8>>)> {
        let q = self.entries.front()?.q;
        let values: Vec<Vec<u8>> = self
            .entries
            .iter()
            .take_while(|e| e.q == q)
            .take(MAX_BATCH)
            .map(|e| e.entry.to_bytes())
            .collect();
        let n = batch_len(values.iter().map(|v| v.len()));
        Some((q, values.into_iter().take(n).collect()))
    }

    /// Removes the first `n` entries (written).
    fn drain(&mut self, n: usize) -> Vec<Envelope> {
        let mut out = Vec::with_capacity(n);
        for e in self.entries.drain(..n.min(self.entries.len())) {
            if let Some(k) = e.key {
                if self.by_key.get(&k) == Some(&e.no) {
                    self.by_key.remove(&k);
                }
            }
            out.push(e.entry);
        }
        out
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.by_key.clear();
    }
}

async fn run(consul: Consul, mut rx: mpsc::UnboundedReceiver<Cmd>, state: Rc<PubState>) {
    let mut backlog = Backlog::default();
    let mut waiters: Vec<oneshot::Sender<usize>> = Vec::new();
    let mut backoff = Backoff::default();
    // The epoch each queue was left at by this publisher's last commit.
    let mut epochs: HashMap<Queue, Epoch> = HashMap::new();
    let mut last_commit: Option<Instant> = None;
    let take = |cmd: Cmd, backlog: &mut Backlog, waiters: &mut Vec<_>| match cmd {
        Cmd::Publish(q, e, key) => {
            if backlog.push(q, e, key) {
                state.pending.set(state.pending.get().saturating_sub(1));
            }
        }
        Cmd::Flush(w) => waiters.push(w),
    };
    loop {
        if backlog.len() == 0 {
            for w in waiters.drain(..) {
                let _ = w.send(0);
            }
            match rx.recv().await {
                Some(cmd) => take(cmd, &mut backlog, &mut waiters),
                None => return,
            }
        }
        // Pace transactions while busy (not when shutting down): what arrives meanwhile
        // joins the next one.
        if let Some(t) = last_commit.filter(|_| state.deadline.get().is_none()) {
            let wait = PACE.saturating_sub(t.elapsed());
            if !wait.is_zero() {
                actix_rt::time::sleep(wait).await;
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            take(cmd, &mut backlog, &mut waiters);
        }
        let Some((q, values)) = backlog.next_batch() else {
            continue;
        };
        let n = values.len();
        let known = epochs.remove(&q);
        match publish_values_after(&consul, q, &values, known).await {
            Ok((keys, next)) => {
                backoff.reset();
                last_commit = Some(Instant::now());
                if let Some(e) = next {
                    epochs.insert(q, e);
                }
                for (key, e) in keys.iter().zip(backlog.drain(n)) {
                    log::info!("queue: {key} {} published", e.message_type);
                }
                state.pending.set(state.pending.get().saturating_sub(n));
            }
            Err(e) => {
                let now = Instant::now();
                if state.deadline.get().is_some_and(|d| now >= d) {
                    while let Ok(cmd) = rx.try_recv() {
                        take(cmd, &mut backlog, &mut waiters);
                    }
                    log::error!(
                        "queue: {} entries could not be published before exit: {e}",
                        backlog.len()
                    );
                    let left = backlog.len();
                    backlog.clear();
                    state.pending.set(0);
                    for w in waiters.drain(..) {
                        let _ = w.send(left);
                    }
                    continue;
                }
                let mut d = backoff.next_delay();
                if let Some(deadline) = state.deadline.get() {
                    d = d.min(deadline.saturating_duration_since(now));
                }
                let level = if e.is_transient() {
                    log::Level::Warn
                } else {
                    log::Level::Error
                };
                log::log!(
                    level,
                    "queue: {} entries waiting; retrying in {d:?}: {e}",
                    backlog.len()
                );
                actix_rt::time::sleep(d).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_claims_the_numbers_after_the_epoch_in_one_transaction() {
        let (ops, keys) = publish_ops(
            Queue::Eq,
            Epoch { last: 9, index: 77 },
            &[b"a".to_vec(), b"b".to_vec()],
        );
        assert_eq!(keys, ["eq/10", "eq/11"]);
        assert_eq!(
            ops,
            vec![
                Op::Cas {
                    key: "epochs/eq".into(),
                    value: b"11".to_vec(),
                    index: 77
                },
                Op::Cas {
                    key: "eq/10".into(),
                    value: b"a".to_vec(),
                    index: 0
                },
                Op::Cas {
                    key: "eq/11".into(),
                    value: b"b".to_vec(),
                    index: 0
                },
            ]
        );
        let (first, keys) = publish_ops(Queue::Bq, Epoch { last: 0, index: 0 }, &[b"x".to_vec()]);
        assert_eq!(keys, ["bq/1"]);
        assert_eq!(
            first[0],
            Op::Cas {
                key: "epochs/bq".into(),
                value: b"1".to_vec(),
                index: 0
            }
        );
    }

    fn env(t: &str, n: u64) -> Envelope {
        Envelope::new(t, serde_json::json!({ "n": n }))
    }

    #[test]
    fn a_newer_entry_with_the_same_key_replaces_the_queued_one_in_its_place() {
        let mut b = Backlog::default();
        assert!(!b.push(Queue::Eq, env("P", 1), Some("p1".into())));
        assert!(!b.push(Queue::Eq, env("S", 2), None));
        assert!(!b.push(Queue::Eq, env("P", 3), Some("p2".into())));
        assert!(b.push(Queue::Eq, env("P", 4), Some("p1".into())));
        assert!(
            !b.push(Queue::Eq, env("S", 5), None),
            "unkeyed entries are never replaced"
        );
        assert_eq!(b.len(), 4);
        let got: Vec<u64> = b
            .drain(4)
            .iter()
            .map(|e| e.payload["n"].as_u64().unwrap())
            .collect();
        assert_eq!(
            got,
            [4, 2, 3, 5],
            "p1's newest value, in p1's original place"
        );
        assert!(
            !b.push(Queue::Eq, env("P", 6), Some("p1".into())),
            "a written entry is not replaced: the key starts a new entry"
        );
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn a_batch_is_one_queue_at_a_time() {
        let mut b = Backlog::default();
        b.push(Queue::Eq, env("A", 1), None);
        b.push(Queue::Eq, env("A", 2), None);
        b.push(Queue::Bq, env("B", 3), None);
        let (q, values) = b.next_batch().unwrap();
        assert_eq!((q, values.len()), (Queue::Eq, 2));
        b.drain(2);
        assert_eq!(b.next_batch().unwrap().0, Queue::Bq);
    }

    #[test]
    fn batches_respect_the_op_and_byte_limits() {
        assert_eq!(batch_len(std::iter::repeat_n(100, 500)), MAX_BATCH);
        assert_eq!(batch_len([10, 10].into_iter()), 2);
        assert_eq!(batch_len(std::iter::repeat_n(100 * 1024, 10)), 3);
        assert_eq!(
            batch_len([MAX_BYTES * 2].into_iter()),
            1,
            "one entry always goes (Consul judges it)"
        );
    }
}
