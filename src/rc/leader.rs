//! The RC loop, run by every hax but acting only while this hax's session holds `leader`.
//!
//! Each pass: confirm leadership; move due `timeout/<time>` keys into `eq/`; take `eq/`
//! entries in numeric order and handle them; now and then delete the `bq/` entries every
//! node has handled. Every write is one transaction starting with
//! `check-session leader <our session>`: a deposed leader cannot commit anything. Handling an
//! entry is `check-index <entry> <ModifyIndex>`, `delete <entry>`, the rule's `bq/` entries
//! (and `states/<fid>` records of the states it decides) and `cas epochs/bq` in one
//! transaction, so an entry is either handled and gone or
//! untouched: a new leader (or this one after a crash) resumes at the first entry left, and
//! nothing is handled twice. After an unclear outcome (Consul's answer lost) `eq/` is read again before
//! anything else is done.
use super::campaign::SessionSlot;
use super::envelope::{now_secs, Envelope};
use super::publish::{read_epoch, Epoch};
use super::queue::{parse_counter, seq_of, sorted_entries, Queue, QueueEntry};
use super::rules::{decide, state_record, Decision};
use super::timeouts;
use super::{or_stop, RcConfig};
use crate::consul::backoff::Backoff;
use crate::consul::kv::KvEntry;
use crate::consul::txn::{self, Op, TxnError, MAX_BYTES, MAX_OPS};
use crate::consul::{Consul, ConsulError};
use crate::view::SharedView;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Why a pass ended early.
enum Interrupted {
    /// The `leader` check failed: someone else leads (or nobody does).
    NotLeader,
    /// Entries changed under us: read `eq/` again.
    Reread,
    /// Consul failed; `true` when a transaction's outcome is unknown.
    Consul(ConsulError, bool),
}

/// What one op of a handling transaction is for (to read a 409's OpIndex).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Guard,
    Source,
    NewEntry,
    Epoch,
    Record,
}

/// A handling transaction being built.
struct Plan {
    ops: Vec<Op>,
    roles: Vec<Role>,
    bytes: usize,
    lines: Vec<String>,
}

impl Plan {
    fn new(session: &str) -> Plan {
        Plan {
            ops: vec![Op::leader_guard(session)],
            roles: vec![Role::Guard],
            bytes: 0,
            lines: Vec::new(),
        }
    }
    fn fits(&self, ops: usize, bytes: usize) -> bool {
        // One op is kept for the epoch.
        self.ops.len() + ops < MAX_OPS && self.bytes + bytes < MAX_BYTES
    }
    fn push(&mut self, op: Op, role: Role) {
        self.bytes += op.size();
        self.ops.push(op);
        self.roles.push(role);
    }
    fn role_of(&self, conflict: Option<usize>) -> Option<Role> {
        conflict.and_then(|i| self.roles.get(i).copied())
    }
}

/// The handling transaction for the first entries of `entries` (at most `batch`): returns
/// the plan and how many entries it covers. `epoch` is `epochs/bq` as read.
fn plan_handling(
    session: &str,
    entries: &[QueueEntry],
    batch: usize,
    epoch: Epoch,
) -> (Plan, usize) {
    let mut plan = Plan::new(session);
    let mut next = epoch.last;
    let mut taken = 0;
    for e in entries.iter().take(batch.max(1)) {
        let decision = decide(e);
        let published: &[Envelope] = match &decision {
            Decision::Act { to_bq, .. } => to_bq,
            Decision::Skip { .. } => &[],
        };
        let to_bq: Vec<Vec<u8>> = published.iter().map(Envelope::to_bytes).collect();
        let records: Vec<(String, Vec<u8>)> = published.iter().filter_map(state_record).collect();
        let bytes: usize = to_bq
            .iter()
            .chain(records.iter().map(|(_, v)| v))
            .map(|v| v.len() * 4 / 3 + 96)
            .sum::<usize>()
            + 2 * (e.key.len() + 64);
        if taken > 0 && !plan.fits(2 + to_bq.len() + records.len(), bytes) {
            break;
        }
        plan.push(
            Op::CheckIndex {
                key: e.key.clone(),
                index: e.modify_index,
            },
            Role::Source,
        );
        plan.push(Op::Delete { key: e.key.clone() }, Role::Source);
        let mut keys = Vec::new();
        for v in to_bq {
            next += 1;
            keys.push(Queue::Bq.key(next));
            plan.push(
                Op::Cas {
                    key: Queue::Bq.key(next),
                    value: v,
                    index: 0,
                },
                Role::NewEntry,
            );
        }
        for (key, value) in records {
            plan.push(Op::Set { key, value }, Role::Record);
        }
        plan.lines.push(match decision {
            Decision::Act { what, .. } if keys.is_empty() => {
                format!("RC: Process {} {what}; deleted", e.key)
            }
            Decision::Act { what, .. } => {
                format!("RC: Process {} {what} -> {}", e.key, keys.join(", "))
            }
            Decision::Skip { why } => format!("RC: Process {} skipped: {why}; deleted", e.key),
        });
        taken += 1;
    }
    if next > epoch.last {
        plan.push(
            Op::Cas {
                key: Queue::Bq.epoch_key(),
                value: next.to_string().into_bytes(),
                index: epoch.index,
            },
            Role::Epoch,
        );
    }
    (plan, taken)
}

/// The nodes whose offsets bound the `bq/` cleanup, and the bound: every node of the
/// configuration tree (a node without an offset yet counts as 0, so nothing it has not
/// seen is deleted), or every offset present when the tree names no node.
pub fn consumed_by_all(config_nodes: &BTreeSet<String>, offsets: &HashMap<String, u64>) -> u64 {
    if config_nodes.is_empty() {
        return offsets.values().copied().min().unwrap_or(0);
    }
    config_nodes
        .iter()
        .map(|n| offsets.get(n).copied().unwrap_or(0))
        .min()
        .unwrap_or(0)
}

/// The RC loop's state.
pub(super) struct Rc {
    pub consul: Consul,
    pub slot: SessionSlot,
    pub view: SharedView,
    pub cfg: RcConfig,
    pub stop: watch::Receiver<bool>,
}

impl Rc {
    pub async fn run(mut self) {
        let mut leading: Option<String> = None;
        let mut leader_index = 0u64;
        let mut eq_index = 0u64;
        let mut backoff = Backoff::default();
        let mut last_gc: Option<Instant> = None;
        loop {
            if *self.stop.borrow() {
                break;
            }
            let session = self.slot.get();
            // Follower: a blocking query on `leader`; leader: a plain read each pass.
            let block = if leading.is_none() && leader_index > 0 {
                Some(leader_index)
            } else {
                None
            };
            let read = self
                .consul
                .get_json::<Vec<KvEntry>>("/v1/kv/leader", block, self.cfg.poll);
            let (holder, idx) = match or_stop(&mut self.stop, read).await {
                None => break,
                Some(Ok((v, idx))) => (
                    v.and_then(|v| v.into_iter().next()).and_then(|e| e.session),
                    idx,
                ),
                Some(Err(e)) => {
                    log::debug!("RC: reading the leader key: {e}");
                    if or_stop(&mut self.stop, actix_rt::time::sleep(backoff.next_delay()))
                        .await
                        .is_none()
                    {
                        break;
                    }
                    continue;
                }
            };
            leader_index = if idx < leader_index { 0 } else { idx.max(1) };
            let session = match (session, holder) {
                (Some(s), Some(h)) if s == h => s,
                _ => {
                    if leading.take().is_some() {
                        log::warn!("RC: this hax no longer holds the leader key; eq/ is left to the next leader");
                    }
                    if block.is_none()
                        && or_stop(
                            &mut self.stop,
                            actix_rt::time::sleep(Duration::from_millis(200)),
                        )
                        .await
                        .is_none()
                    {
                        break;
                    }
                    continue;
                }
            };
            if leading.as_deref() != Some(session.as_str()) {
                log::info!(
                    "RC: this hax ({}) leads the RC; resuming at the first entry left in eq/",
                    self.cfg.node
                );
                leading = Some(session.clone());
                eq_index = 0;
            }
            match self.pass(&session, &mut eq_index, &mut last_gc).await {
                Ok(()) => backoff.reset(),
                Err(Interrupted::NotLeader) => {
                    log::warn!(
                        "RC: the leader check failed: this hax does not lead the RC any more"
                    );
                    leading = None;
                    leader_index = 0;
                }
                Err(Interrupted::Reread) => eq_index = 0,
                Err(Interrupted::Consul(e, unclear)) => {
                    eq_index = 0;
                    if unclear {
                        log::warn!("RC: the outcome of a transaction is unknown ({e}); reading eq/ again before going on");
                    } else {
                        log::warn!("RC: Consul failed ({e}); trying again");
                    }
                    if or_stop(&mut self.stop, actix_rt::time::sleep(backoff.next_delay()))
                        .await
                        .is_none()
                    {
                        break;
                    }
                }
            }
        }
        log::info!("RC: stopped");
    }

    /// One pass as leader: timeouts, then `eq/`, then (sometimes) the `bq/` cleanup.
    async fn pass(
        &mut self,
        session: &str,
        eq_index: &mut u64,
        last_gc: &mut Option<Instant>,
    ) -> Result<(), Interrupted> {
        self.move_due_timeouts(session).await?;
        let block = (*eq_index > 0).then_some(*eq_index);
        let read = self
            .consul
            .get_json::<Vec<KvEntry>>("/v1/kv/eq/?recurse", block, self.cfg.poll);
        let (kv, idx) = match or_stop(&mut self.stop, read).await {
            None => return Ok(()),
            Some(r) => r.map_err(|e| Interrupted::Consul(e, false))?,
        };
        *eq_index = if idx < *eq_index { 0 } else { idx.max(1) };
        let entries = sorted_entries(kv.unwrap_or_default(), Queue::Eq);
        crate::metrics::rc_queue("eq", entries.len());
        let handled = self.handle(session, &entries).await?;
        crate::metrics::rc_queue("eq", entries.len().saturating_sub(handled));
        let due = match last_gc {
            None => true,
            Some(t) => {
                t.elapsed() >= self.cfg.gc_every
                    || (handled > 0 && t.elapsed() >= Duration::from_secs(1))
            }
        };
        if due {
            *last_gc = Some(Instant::now());
            self.cleanup_bq(session).await?;
        }
        Ok(())
    }

    /// Handles `entries` in order, in transactions of at most `batch` entries.
    async fn handle(
        &mut self,
        session: &str,
        entries: &[QueueEntry],
    ) -> Result<usize, Interrupted> {
        let mut done = 0;
        let mut repair = false;
        let mut conflicts = 0;
        // Entries per transaction: one at a time after Consul rejected a batch, to find the
        // entry it refuses and set that one aside (never blocking the queue on it).
        let mut batch = self.cfg.batch;
        while done < entries.len() {
            if *self.stop.borrow() {
                break;
            }
            let epoch = read_epoch(&self.consul, Queue::Bq, repair)
                .await
                .map_err(|e| Interrupted::Consul(e, false))?;
            let (plan, n) = plan_handling(session, &entries[done..], batch, epoch);
            match txn::commit(&self.consul, &plan.ops).await {
                Ok(()) => {
                    for l in &plan.lines {
                        log::info!("{l}");
                    }
                    let to_bq = plan
                        .ops
                        .iter()
                        .filter(|o| matches!(o, Op::Cas { key, index: 0, .. } if key.starts_with(&Queue::Bq.prefix())))
                        .count();
                    crate::metrics::queue_written(Queue::Bq.name(), to_bq);
                    done += n;
                    repair = false;
                    conflicts = 0;
                }
                Err(TxnError::Conflict { op, what }) => match plan.role_of(op) {
                    Some(Role::Guard) => return Err(Interrupted::NotLeader),
                    Some(Role::Source) => {
                        log::info!("RC: an entry changed while it was being handled ({what}); reading eq/ again");
                        return Err(Interrupted::Reread);
                    }
                    role => {
                        // Someone published to bq/ meanwhile (epoch), or the epoch is behind.
                        repair = role == Some(Role::NewEntry);
                        conflicts += 1;
                        log::debug!("RC: bq/ epoch conflict ({what}); trying again");
                        if conflicts > 100 {
                            return Err(Interrupted::Reread);
                        }
                    }
                },
                Err(TxnError::Rejected(e)) if n > 1 => {
                    log::warn!("RC: Consul rejected a transaction of {n} entries ({e}); handling them one at a time to find the one it refuses");
                    batch = 1;
                }
                Err(TxnError::Rejected(e)) => {
                    self.set_aside(session, &entries[done], &e).await?;
                    done += 1;
                }
                Err(TxnError::Transient { error, .. }) => {
                    return Err(Interrupted::Consul(error, true))
                }
            }
        }
        Ok(done)
    }

    /// An entry whose handling Consul refuses for good (a 4xx, e.g. a `bq/` entry too large
    /// for KV): logged in full and deleted (under the leader guard), so that the entries after
    /// it are handled.
    async fn set_aside(
        &mut self,
        session: &str,
        entry: &QueueEntry,
        why: &ConsulError,
    ) -> Result<(), Interrupted> {
        crate::metrics::consul_write_rejected("rc");
        log::error!(
            "RC: Consul refuses to handle {} ({why}); setting it aside (deleted). Its value was: {}",
            entry.key,
            String::from_utf8_lossy(&entry.value).chars().take(2000).collect::<String>()
        );
        let ops = [
            Op::leader_guard(session),
            Op::Delete {
                key: entry.key.clone(),
            },
        ];
        match txn::commit(&self.consul, &ops).await {
            Ok(()) => Ok(()),
            Err(TxnError::Conflict { op: Some(0), .. }) => Err(Interrupted::NotLeader),
            Err(TxnError::Conflict { .. }) => Err(Interrupted::Reread),
            Err(e) => Err(Interrupted::Consul(
                e.consul().cloned().unwrap_or(ConsulError::Decode {
                    what: "set aside".into(),
                    reason: e.to_string(),
                }),
                false,
            )),
        }
    }

    /// Moves every due `timeout/<time>` into `eq/` (and deletes keys that name no time).
    async fn move_due_timeouts(&mut self, session: &str) -> Result<(), Interrupted> {
        let read = self
            .consul
            .get_json::<Vec<KvEntry>>("/v1/kv/timeout/?recurse", None, Duration::ZERO)
            .await;
        let kv = read
            .map_err(|e| Interrupted::Consul(e, false))?
            .0
            .unwrap_or_default();
        let now = now_secs();
        let mut due: Vec<(KvEntry, Option<i64>)> = kv
            .into_iter()
            .filter_map(|e| match timeouts::due_at(&e.key) {
                Some(t) if (t as f64) <= now => Some((e, Some(t))),
                Some(_) => None,
                None => Some((e, None)),
            })
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        due.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.key.cmp(&b.0.key)));
        let mut repair = false;
        for _attempt in 0..20 {
            let epoch = read_epoch(&self.consul, Queue::Eq, repair)
                .await
                .map_err(|e| Interrupted::Consul(e, false))?;
            let mut plan = Plan::new(session);
            let mut next = epoch.last;
            for (e, at) in &due {
                let raw = base64_value(e);
                let value = timeouts::eq_value(&e.key, &raw);
                if !plan.lines.is_empty() && !plan.fits(3, value.len() * 4 / 3 + 200) {
                    break;
                }
                plan.push(
                    Op::CheckIndex {
                        key: e.key.clone(),
                        index: e.modify_index,
                    },
                    Role::Source,
                );
                plan.push(Op::Delete { key: e.key.clone() }, Role::Source);
                match at {
                    Some(at) => {
                        next += 1;
                        plan.push(
                            Op::Cas {
                                key: Queue::Eq.key(next),
                                value,
                                index: 0,
                            },
                            Role::NewEntry,
                        );
                        let late = now - *at as f64;
                        plan.lines.push(format!(
                            "RC: {} is due ({late:.1} s ago): moved to {}",
                            e.key,
                            Queue::Eq.key(next)
                        ));
                    }
                    None => plan.lines.push(format!(
                        "RC: {} names no time (timeout/YYYYmmddHHMM.SS, UTC): deleted",
                        e.key
                    )),
                }
            }
            if next > epoch.last {
                plan.push(
                    Op::Cas {
                        key: Queue::Eq.epoch_key(),
                        value: next.to_string().into_bytes(),
                        index: epoch.index,
                    },
                    Role::Epoch,
                );
            }
            match txn::commit(&self.consul, &plan.ops).await {
                Ok(()) => {
                    for l in &plan.lines {
                        log::info!("{l}");
                    }
                    return Ok(());
                }
                Err(TxnError::Conflict { op, what }) => {
                    match plan.role_of(op) {
                        Some(Role::Guard) => return Err(Interrupted::NotLeader),
                        // The key changed: the next pass sees it as it is now.
                        Some(Role::Source) => return Ok(()),
                        role => {
                            repair = role == Some(Role::NewEntry);
                            log::debug!("RC: eq/ epoch conflict while moving timeouts ({what}); trying again");
                        }
                    }
                }
                Err(TxnError::Rejected(e)) => {
                    crate::metrics::consul_write_rejected("rc");
                    log::error!("RC: Consul rejected moving due timeouts into eq/ ({e}); trying again at the next pass");
                    return Ok(());
                }
                Err(TxnError::Transient { error, .. }) => {
                    return Err(Interrupted::Consul(error, true))
                }
            }
        }
        Ok(())
    }

    /// Deletes the `bq/` entries every node has handled, by their exact keys.
    async fn cleanup_bq(&mut self, session: &str) -> Result<(), Interrupted> {
        let consul = &self.consul;
        let read = consul
            .get_json::<Vec<KvEntry>>("/v1/kv/bq-offsets/?recurse", None, Duration::ZERO)
            .await;
        let offsets: HashMap<String, u64> = read
            .map_err(|e| Interrupted::Consul(e, false))?
            .0
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                let node = e.key.strip_prefix("bq-offsets/")?.to_string();
                Some((node, parse_counter(&e.value_string()).unwrap_or(0)))
            })
            .collect();
        let nodes: BTreeSet<String> = {
            let v = self.view.read().unwrap_or_else(|e| e.into_inner());
            v.config
                .nodes
                .values()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect()
        };
        if nodes.is_empty() {
            // No node in the view: either the tree names none (then every offset present
            // counts) or FidResolver has not read it yet (then wait: deleting now could take
            // entries from a node that has no offset yet).
            let read = consul
                .get_json::<Vec<String>>(
                    "/v1/kv/m0conf/nodes/?keys&separator=/",
                    None,
                    Duration::ZERO,
                )
                .await;
            let tree = read
                .map_err(|e| Interrupted::Consul(e, false))?
                .0
                .unwrap_or_default();
            if !tree.is_empty() {
                log::debug!("RC: bq/ cleanup waits for the configuration tree");
                return Ok(());
            }
        }
        let bound = consumed_by_all(&nodes, &offsets);
        let read = consul
            .get_json::<Vec<String>>("/v1/kv/bq/?keys", None, Duration::ZERO)
            .await;
        let keys = read
            .map_err(|e| Interrupted::Consul(e, false))?
            .0
            .unwrap_or_default();
        let mut numbered: Vec<(u64, String)> = Vec::new();
        let mut junk: Vec<String> = Vec::new();
        for k in keys {
            match seq_of(&k, Queue::Bq) {
                Some(n) if n <= bound => numbered.push((n, k)),
                Some(_) => {}
                None => junk.push(k),
            }
        }
        numbered.sort();
        for k in &junk {
            log::warn!("RC: {k} is not a bq/<number> key and can never be handled; deleting it");
        }
        let doomed: Vec<String> = numbered
            .iter()
            .map(|(_, k)| k.clone())
            .chain(junk)
            .collect();
        for chunk in doomed.chunks(MAX_OPS - 1) {
            let mut ops = vec![Op::leader_guard(session)];
            ops.extend(chunk.iter().map(|k| Op::Delete { key: k.clone() }));
            match txn::commit(consul, &ops).await {
                Ok(()) => {}
                Err(TxnError::Conflict { op: Some(0), .. }) => return Err(Interrupted::NotLeader),
                Err(TxnError::Conflict { what, .. }) => {
                    log::warn!("RC: bq/ cleanup refused: {what}");
                    return Ok(());
                }
                Err(TxnError::Rejected(e)) => {
                    crate::metrics::consul_write_rejected("rc");
                    log::error!("RC: bq/ cleanup rejected by Consul ({e}); trying again later");
                    return Ok(());
                }
                Err(TxnError::Transient { error, .. }) => {
                    return Err(Interrupted::Consul(error, false))
                }
            }
        }
        if let (Some((first, _)), Some((last, _))) = (numbered.first(), numbered.last()) {
            log::info!(
                "RC: bq/ cleanup: deleted {} entries (bq/{first} .. bq/{last}); every node has handled up to bq/{bound}",
                numbered.len()
            );
        }
        Ok(())
    }
}

fn base64_value(e: &KvEntry) -> Vec<u8> {
    use base64::Engine;
    e.value
        .as_deref()
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::envelope;
    use super::*;
    use serde_json::json;

    fn entry(n: u64, value: Vec<u8>) -> QueueEntry {
        QueueEntry {
            key: format!("eq/{n}"),
            seq: Some(n),
            value,
            modify_index: 100 + n,
        }
    }

    fn stob(k: u64) -> Vec<u8> {
        Envelope::new(
            envelope::STOB_IOQ_ERROR,
            json!({"sdev": format!("0x6400000000000001:{k:#x}")}),
        )
        .to_bytes()
    }

    #[test]
    fn handling_is_guard_then_check_delete_and_publish_per_entry_then_the_bq_epoch() {
        let entries = [
            entry(1, stob(1)),
            entry(2, b"garbage".to_vec()),
            entry(3, stob(3)),
        ];
        let (plan, n) = plan_handling("sid", &entries, 16, Epoch { last: 40, index: 9 });
        assert_eq!(n, 3);
        let verbs: Vec<String> = plan
            .ops
            .iter()
            .map(|o| match o {
                Op::CheckSession { key, .. } => format!("check-session {key}"),
                Op::CheckIndex { key, index } => format!("check-index {key} {index}"),
                Op::Delete { key } => format!("delete {key}"),
                Op::Cas { key, index, value } if key.starts_with("epochs/") => {
                    format!("cas {key} {index} {}", String::from_utf8_lossy(value))
                }
                Op::Cas { key, index, .. } => format!("cas {key} {index}"),
                Op::Set { key, .. } => format!("set {key}"),
            })
            .collect();
        assert_eq!(
            verbs,
            [
                "check-session leader",
                "check-index eq/1 101",
                "delete eq/1",
                "cas bq/41 0",
                "set states/0x6400000000000001:0x1",
                "check-index eq/2 102",
                "delete eq/2",
                "check-index eq/3 103",
                "delete eq/3",
                "cas bq/42 0",
                "set states/0x6400000000000001:0x3",
                "cas epochs/bq 9 42",
            ]
        );
        assert_eq!(plan.lines.len(), 3);
        assert!(
            plan.lines[0].starts_with("RC: Process eq/1 drive I/O error")
                && plan.lines[0].ends_with("-> bq/41"),
            "{}",
            plan.lines[0]
        );
        assert!(
            plan.lines[1].contains("eq/2 skipped: malformed entry"),
            "{}",
            plan.lines[1]
        );
        assert_eq!(plan.role_of(Some(0)), Some(Role::Guard));
        assert_eq!(plan.role_of(Some(2)), Some(Role::Source));
        assert_eq!(plan.role_of(Some(3)), Some(Role::NewEntry));
        assert_eq!(plan.role_of(Some(4)), Some(Role::Record));
        assert_eq!(plan.role_of(Some(11)), Some(Role::Epoch));
    }

    #[test]
    fn a_transaction_stays_within_64_ops_and_the_batch_bound() {
        let entries: Vec<QueueEntry> = (1..=100).map(|n| entry(n, stob(n))).collect();
        let (plan, n) = plan_handling("sid", &entries, 1000, Epoch { last: 0, index: 0 });
        assert_eq!(
            n, 15,
            "1 guard + 15 x 4 + 1 epoch = 62 ops; a 16th entry would need 66"
        );
        assert!(plan.ops.len() <= MAX_OPS);
        let (_, n) = plan_handling("sid", &entries, 5, Epoch { last: 0, index: 0 });
        assert_eq!(n, 5);
        let skips: Vec<QueueEntry> = (1..=100).map(|n| entry(n, b"x".to_vec())).collect();
        let (plan, n) = plan_handling("sid", &skips, 1000, Epoch { last: 0, index: 0 });
        assert_eq!((n, plan.ops.len()), (31, 63), "no bq entry, no epoch op");
    }

    #[test]
    fn bq_cleanup_waits_for_every_configured_node() {
        let nodes: BTreeSet<String> = ["a", "b"].into_iter().map(String::from).collect();
        let mut offsets: HashMap<String, u64> = HashMap::new();
        offsets.insert("a".into(), 10);
        assert_eq!(
            consumed_by_all(&nodes, &offsets),
            0,
            "b has handled nothing yet"
        );
        offsets.insert("b".into(), 7);
        offsets.insert("gone".into(), 1);
        assert_eq!(
            consumed_by_all(&nodes, &offsets),
            7,
            "nodes outside the tree do not count"
        );
        assert_eq!(
            consumed_by_all(&BTreeSet::new(), &offsets),
            1,
            "no tree: every offset present counts"
        );
        assert_eq!(consumed_by_all(&BTreeSet::new(), &HashMap::new()), 0);
    }
}
