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
//! hax's own entries (process events, STOB errors) are published by ConsulWriter, in the same
//! transactions as the `processes/` records; these functions serve `hax q` and the tests.
use super::envelope::Envelope;
use super::queue::{parse_counter, seq_of, Queue};
use crate::consul::backoff::jitter;
use crate::consul::kv::KvEntry;
use crate::consul::txn::{self, Op, TxnError, MAX_BYTES, MAX_OPS};
use crate::consul::{Consul, ConsulError};
use std::time::Duration;

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
                crate::metrics::queue_written(q.name(), values.len());
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
            Err(TxnError::Rejected(e)) | Err(TxnError::Transient { error: e, .. }) => {
                return Err(e)
            }
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

    #[test]
    fn batches_respect_the_op_and_byte_limits() {
        assert_eq!(batch_len(std::iter::repeat_n(100, 500)), MAX_BATCH);
        assert_eq!(batch_len([10, 10].into_iter()), 2);
        assert_eq!(batch_len(std::iter::repeat_n(100 * 1024, 10)), 5);
        assert_eq!(
            batch_len([MAX_BYTES * 2].into_iter()),
            1,
            "one entry always goes (Consul judges it)"
        );
    }
}
