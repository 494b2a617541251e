//! The two queues and their keys: `eq/<n>` (events for the RC) and `bq/<n>` (broadcasts
//! for every hax), `n` a decimal sequence number without padding, allocated through the
//! epoch key `epochs/<queue>` (the last number given out).
use crate::consul::kv::KvEntry;
use base64::Engine;

/// Which queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Queue {
    /// The event queue, consumed by the RC leader.
    Eq,
    /// The broadcast queue, consumed by every hax.
    Bq,
}

impl Queue {
    pub fn name(&self) -> &'static str {
        match self {
            Queue::Eq => "eq",
            Queue::Bq => "bq",
        }
    }
    /// `eq/` or `bq/`.
    pub fn prefix(&self) -> String {
        format!("{}/", self.name())
    }
    /// The key of entry `n`.
    pub fn key(&self, n: u64) -> String {
        format!("{}/{n}", self.name())
    }
    /// The key holding the last sequence number given out.
    pub fn epoch_key(&self) -> String {
        format!("epochs/{}", self.name())
    }
}

/// The sequence number of a queue key: `eq/17` → 17 (leading zeros allowed, as the seed's
/// `eq/000000002`); None for anything else (`eq/x`, `eq/`, `eq/1/2`, overflow).
pub fn seq_of(key: &str, queue: Queue) -> Option<u64> {
    let rest = key.strip_prefix(&queue.prefix())?;
    if rest.is_empty() || rest.len() > 40 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// One entry read from a queue prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    pub key: String,
    /// None: the key is not `<queue>/<number>`.
    pub seq: Option<u64>,
    pub value: Vec<u8>,
    pub modify_index: u64,
}

/// The entries of a `GET /v1/kv/<queue>/?recurse` answer in handling order: numbered
/// entries by number (ties, e.g. `eq/2` and `eq/02`, by key), then the unnumbered ones.
pub fn sorted_entries(kv: Vec<KvEntry>, queue: Queue) -> Vec<QueueEntry> {
    let mut out: Vec<QueueEntry> = kv
        .into_iter()
        .map(|e| {
            let value = e
                .value
                .as_deref()
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .unwrap_or_default();
            QueueEntry {
                seq: seq_of(&e.key, queue),
                key: e.key,
                value,
                modify_index: e.modify_index,
            }
        })
        .collect();
    out.sort_by(|a, b| match (a.seq, b.seq) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.key.cmp(&b.key)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.key.cmp(&b.key),
    });
    out
}

/// The number an epoch key holds (None: absent or not a number).
pub fn parse_counter(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, index: u64) -> KvEntry {
        KvEntry {
            key: key.into(),
            value: Some(base64::engine::general_purpose::STANDARD.encode(value)),
            session: None,
            modify_index: index,
        }
    }

    #[test]
    fn sequence_numbers_parse_from_unpadded_and_padded_keys_only() {
        assert_eq!(seq_of("eq/1", Queue::Eq), Some(1));
        assert_eq!(seq_of("eq/000000002", Queue::Eq), Some(2));
        assert_eq!(seq_of("bq/18446744073709551615", Queue::Bq), Some(u64::MAX));
        for bad in [
            "eq/",
            "eq/x",
            "eq/1/2",
            "eq/-1",
            "eq/1.5",
            "bq/1",
            "eq/18446744073709551616",
            "eq",
        ] {
            assert_eq!(seq_of(bad, Queue::Eq), None, "{bad}");
        }
    }

    #[test]
    fn entries_sort_numerically_not_lexically() {
        let got = sorted_entries(
            vec![
                kv("eq/10", "c", 3),
                kv("eq/junk", "x", 9),
                kv("eq/9", "b", 2),
                kv("eq/000000002", "a", 1),
                kv("eq/100", "d", 4),
            ],
            Queue::Eq,
        );
        let keys: Vec<&str> = got.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["eq/000000002", "eq/9", "eq/10", "eq/100", "eq/junk"]);
        assert_eq!(got[0].value, b"a");
        assert_eq!(got[0].modify_index, 1);
        assert_eq!(got[4].seq, None);
    }

    #[test]
    fn keys_and_epochs_have_the_documented_names() {
        assert_eq!(Queue::Eq.key(7), "eq/7");
        assert_eq!(Queue::Bq.epoch_key(), "epochs/bq");
        assert_eq!(parse_counter(" 42\n"), Some(42));
        assert_eq!(parse_counter("x"), None);
    }
}
