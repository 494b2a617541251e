//! The `bq/` consumer every hax runs: entries in numeric order, each turned into HA states for
//! this hax's Motr links (through ProcessStatus), the last one handled remembered in
//! `bq-offsets/<node>` so that a restarted hax resumes after it.
//!
//! The offset is written after each batch of entries (every 32 in a long one, and at
//! shutdown): a hax killed between a broadcast and that write hands the same states to its
//! links once more when it comes back; nothing is skipped. A malformed entry is logged and
//! passed over like any other.
use super::envelope::{self, Envelope};
use super::or_stop;
use super::queue::{parse_counter, sorted_entries, Queue, QueueEntry};
use super::rules::{ha_state_of, parse_state_record, ProcessUpdate, STATES_PREFIX};
use super::RemoteStates;
use crate::consul::backoff::Backoff;
use crate::consul::kv::KvEntry;
use crate::consul::Consul;
use crate::fid::Fid;
use crate::model::health::HealthDelta;
use crate::motr::Note;
use actix::Recipient;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::watch;

/// The offset is written at least every this many entries during a long batch.
const SAVE_EVERY: u64 = 32;

/// At most this many new entries are read one GET each; more (a hax catching up) are read
/// with one query over the whole prefix.
const ONE_BY_ONE: u64 = 16;

/// What this hax does with one `bq/` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BqAction {
    /// Hand these states to ProcessStatus; `what` describes them for the log.
    Apply { states: RemoteStates, what: String },
    /// Nothing to do; `why` says why (logged).
    Pass { why: String },
}

/// Decides what `entry` means for the hax of `own_node`.
pub fn bq_action(entry: &QueueEntry, own_node: &str) -> BqAction {
    let e = match Envelope::decode(&entry.value) {
        Ok(e) => e,
        Err(why) => {
            return BqAction::Pass {
                why: format!("malformed entry: {why}; skipped"),
            }
        }
    };
    let source = entry.key.clone();
    if let Some(news) = super::health_news::decode(&e) {
        return match news {
            Ok(d) => BqAction::Apply {
                what: match &d {
                    HealthDelta::Process { fid, health, index } => {
                        format!("process {fid} {} as of index {index}", health.name())
                    }
                    HealthDelta::Node {
                        node,
                        health,
                        index,
                    } => format!("node {node} {} as of index {index}", health.name()),
                },
                states: RemoteStates {
                    source,
                    processes: Vec::new(),
                    notes: Vec::new(),
                    health: vec![d],
                },
            },
            Err(why) => BqAction::Pass {
                why: format!("malformed {} entry: {why}; skipped", e.message_type),
            },
        };
    }
    match e.message_type.as_str() {
        envelope::PROCESS_STATE_UPDATE => match ProcessUpdate::from_envelope(&e) {
            Ok(u) if u.node.as_deref() == Some(own_node) => BqAction::Pass {
                why: format!(
                    "process {} {}: reported by this hax, applied already",
                    u.fid,
                    u.event.motr_name()
                ),
            },
            Ok(u) => BqAction::Apply {
                what: format!(
                    "process {} {} ({})",
                    u.fid,
                    u.event.motr_name(),
                    u.ptype.motr_name()
                ),
                states: RemoteStates {
                    source,
                    processes: vec![(u.fid, u.event, u.ptype)],
                    notes: Vec::new(),
                    health: Vec::new(),
                },
            },
            Err(why) => BqAction::Pass {
                why: format!("malformed {} entry: {why}; skipped", e.message_type),
            },
        },
        envelope::OBJECT_STATE_UPDATE => {
            let fid = e.field("fid").map(|f| f.parse::<Fid>());
            let state = e.field("state").map(|s| (s, ha_state_of(s)));
            match (fid, state) {
                (Some(Ok(fid)), Some((_, Some(state)))) => {
                    let cause = e
                        .field("cause")
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default();
                    BqAction::Apply {
                        what: format!("{fid} {state}{cause}"),
                        states: RemoteStates {
                            source,
                            processes: Vec::new(),
                            notes: vec![Note { fid, state }],
                            health: Vec::new(),
                        },
                    }
                }
                (Some(Err(err)), _) => BqAction::Pass {
                    why: format!("malformed {} entry: {err}; skipped", e.message_type),
                },
                (_, Some((s, None))) => BqAction::Pass {
                    why: format!(
                        "malformed {} entry: unknown state {s:?}; skipped",
                        e.message_type
                    ),
                },
                _ => BqAction::Pass {
                    why: format!(
                        "malformed {} entry: payload needs \"fid\" and \"state\"; skipped",
                        e.message_type
                    ),
                },
            }
        }
        other => BqAction::Pass {
            why: format!("unknown message type {other:?}; skipped"),
        },
    }
}

/// The consumer's state.
pub(super) struct Consumer {
    pub consul: Consul,
    pub node: String,
    pub status: Recipient<RemoteStates>,
    pub stop: watch::Receiver<bool>,
}

impl Consumer {
    fn offset_key(&self) -> String {
        format!("bq-offsets/{}", self.node)
    }

    async fn read_offset(&mut self) -> Option<u64> {
        let mut backoff = Backoff::default();
        let path = format!("/v1/kv/{}", self.offset_key());
        loop {
            let read = self
                .consul
                .get_json::<Vec<KvEntry>>(&path, None, Duration::ZERO);
            match or_stop(&mut self.stop, read).await? {
                Ok((kv, _)) => {
                    let value = kv
                        .and_then(|v| v.into_iter().next())
                        .map(|e| e.value_string());
                    return Some(match value {
                        None => {
                            log::info!(
                                "bq: no offset for node {} yet: taking every entry in bq/",
                                self.node
                            );
                            0
                        }
                        Some(v) => {
                            match parse_counter(&v) {
                                Some(n) => {
                                    log::info!(
                                        "bq: resuming after bq/{n} ({} says so)",
                                        self.offset_key()
                                    );
                                    n
                                }
                                None => {
                                    log::warn!("bq: {} holds {v:?}, not a number: taking every entry in bq/", self.offset_key());
                                    0
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    log::warn!("bq: cannot read {} yet: {e}", self.offset_key());
                    or_stop(&mut self.stop, actix_rt::time::sleep(backoff.next_delay())).await?;
                }
            }
        }
    }

    /// Writes the offset; `persistent`: retry until written or stopped.
    async fn save_offset(&mut self, n: u64, persistent: bool) -> bool {
        let mut backoff = Backoff::default();
        let path = format!("/v1/kv/{}", self.offset_key());
        loop {
            let put = self.consul.put(&path, n.to_string().into_bytes());
            let r = if persistent {
                match or_stop(&mut self.stop, put).await {
                    Some(r) => r,
                    None => return false,
                }
            } else {
                match tokio::time::timeout(Duration::from_secs(1), put).await {
                    Ok(r) => r,
                    Err(_) => return false,
                }
            };
            match r {
                Ok(_) => return true,
                Err(e) if persistent => {
                    log::warn!("bq: cannot write {} = {n} yet: {e}", self.offset_key());
                    if or_stop(&mut self.stop, actix_rt::time::sleep(backoff.next_delay()))
                        .await
                        .is_none()
                    {
                        return false;
                    }
                }
                Err(e) => {
                    log::warn!("bq: could not write {} = {n}: {e}", self.offset_key());
                    return false;
                }
            }
        }
    }

    /// Hands the states the RC recorded (`states/`) to ProcessStatus, so that a hax started
    /// after a decision knows it too.
    async fn load_states(&mut self) -> Option<()> {
        let mut backoff = Backoff::default();
        let path = format!("/v1/kv/{STATES_PREFIX}?recurse");
        let kv = loop {
            let read = self
                .consul
                .get_json::<Vec<KvEntry>>(&path, None, Duration::ZERO);
            match or_stop(&mut self.stop, read).await? {
                Ok((kv, _)) => break kv.unwrap_or_default(),
                Err(e) => {
                    log::warn!("bq: cannot read {STATES_PREFIX} yet: {e}");
                    or_stop(&mut self.stop, actix_rt::time::sleep(backoff.next_delay())).await?;
                }
            }
        };
        let notes: Vec<Note> = kv
            .iter()
            .filter_map(|e| {
                let n = parse_state_record(&e.key, e.value_string().as_bytes());
                if n.is_none() {
                    log::warn!("bq: {} is not a state record; ignored", e.key);
                }
                n
            })
            .collect();
        if !notes.is_empty() {
            log::info!(
                "bq: {} state(s) recorded by the RC under {STATES_PREFIX}",
                notes.len()
            );
            let states = RemoteStates {
                source: STATES_PREFIX.to_string(),
                processes: Vec::new(),
                notes,
                health: Vec::new(),
            };
            self.status.send(states).await.ok()?;
        }
        Some(())
    }

    /// Waits for entries after `offset` with a blocking query on `epochs/bq` (the number of
    /// the last entry published, one small key that every publication moves), then reads
    /// only the new entries: one GET each, or the whole prefix when more than [`ONE_BY_ONE`]
    /// are new (or the epoch is unreadable). So a change costs every hax O(1) bytes, however
    /// many entries wait for the cleanup. Answers the entries, the epoch's Consul index and
    /// the last number published (None: unknown).
    async fn read_after(
        consul: &Consul,
        offset: u64,
        index: u64,
    ) -> Result<(Vec<KvEntry>, u64, Option<u64>), crate::consul::ConsulError> {
        let block = (index > 0).then_some(index);
        let epoch = format!("/v1/kv/{}", Queue::Bq.epoch_key());
        let (kv, idx) = consul
            .get_json::<Vec<KvEntry>>(&epoch, block, Duration::from_secs(30))
            .await?;
        let last = match kv.and_then(|v| v.into_iter().next()) {
            None => Some(0), // nothing published yet
            Some(e) => parse_counter(&e.value_string()),
        };
        if last.is_some_and(|l| l <= offset) {
            return Ok((Vec::new(), idx, last));
        }
        if last.is_none_or(|l| l - offset > ONE_BY_ONE) {
            let (kv, _) = consul
                .get_json::<Vec<KvEntry>>("/v1/kv/bq/?recurse", None, Duration::ZERO)
                .await?;
            return Ok((kv.unwrap_or_default(), idx, last));
        }
        let mut out = Vec::new();
        for n in offset + 1..=last.unwrap_or(offset) {
            let (kv, _) = consul
                .get_json::<Vec<KvEntry>>(
                    &format!("/v1/kv/{}", Queue::Bq.key(n)),
                    None,
                    Duration::ZERO,
                )
                .await?;
            out.extend(kv.unwrap_or_default());
        }
        Ok((out, idx, last))
    }

    pub async fn run(mut self) {
        if self.load_states().await.is_none() {
            return;
        }
        let Some(mut offset) = self.read_offset().await else {
            return;
        };
        let mut saved = offset;
        let mut index = 0u64;
        let mut backoff = Backoff::default();
        let mut warned: BTreeSet<String> = BTreeSet::new();
        'outer: loop {
            let read = Self::read_after(&self.consul, offset, index);
            let (kv, idx, last) = match or_stop(&mut self.stop, read).await {
                None => break,
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    log::debug!("bq: reading bq/: {e}");
                    if or_stop(&mut self.stop, actix_rt::time::sleep(backoff.next_delay()))
                        .await
                        .is_none()
                    {
                        break;
                    }
                    continue;
                }
            };
            backoff.reset();
            index = if idx < index { 0 } else { idx.max(1) };
            let entries = sorted_entries(kv, Queue::Bq);
            let pending = |offset: u64| match last {
                Some(l) => l.saturating_sub(offset) as usize,
                None => entries
                    .iter()
                    .filter(|e| e.seq.is_some_and(|s| s > offset))
                    .count(),
            };
            crate::metrics::rc_queue("bq", pending(offset));
            for e in entries.iter().cloned() {
                let Some(seq) = e.seq else {
                    if warned.insert(e.key.clone()) {
                        log::warn!("bq: {} is not a bq/<number> key; ignored", e.key);
                    }
                    continue;
                };
                if seq <= offset {
                    continue;
                }
                if *self.stop.borrow() {
                    break 'outer;
                }
                match bq_action(&e, &self.node) {
                    BqAction::Apply { states, what } => {
                        if self.status.send(states).await.is_err() {
                            log::warn!("bq: ProcessStatus is gone; stopping at bq/{offset}");
                            break 'outer;
                        }
                        log::info!("bq: {} {what}: to this hax's Motr links", e.key);
                    }
                    BqAction::Pass { why } => log::info!("bq: {} {why}", e.key),
                }
                offset = seq;
                if offset - saved >= SAVE_EVERY && self.save_offset(offset, true).await {
                    saved = offset;
                }
            }
            crate::metrics::rc_queue("bq", pending(offset));
            if offset != saved && self.save_offset(offset, true).await {
                saved = offset;
            }
        }
        if offset != saved && self.save_offset(offset, false).await {
            saved = offset;
        }
        log::info!("bq: stopped after bq/{saved}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::motr::{HaState, ProcessEventKind, ProcessType};
    use serde_json::json;

    fn entry(n: u64, value: &[u8]) -> QueueEntry {
        QueueEntry {
            key: format!("bq/{n}"),
            seq: Some(n),
            value: value.to_vec(),
            modify_index: n,
        }
    }

    #[test]
    fn an_sdev_failure_becomes_a_failed_note() {
        let e = Envelope::new(
            envelope::OBJECT_STATE_UPDATE,
            json!({"fid": "0x6400000000000001:0x5", "state": "FAILED", "cause": "STOB_IOQ_ERROR rc -5"}),
        );
        let BqAction::Apply { states, what } = bq_action(&entry(4, &e.to_bytes()), "n1") else {
            panic!()
        };
        let sdev = Fid::typed(b'd', 1, 5);
        assert_eq!(
            states.notes,
            vec![Note {
                fid: sdev,
                state: HaState::Failed
            }]
        );
        assert!(states.processes.is_empty());
        assert_eq!(states.source, "bq/4");
        assert_eq!(what, format!("{sdev} FAILED (STOB_IOQ_ERROR rc -5)"));
    }

    #[test]
    fn a_remote_process_update_is_applied_and_an_own_one_passed_over() {
        let p = Fid::typed(b'r', 1, 0xc);
        let e = Envelope::new(
            envelope::PROCESS_STATE_UPDATE,
            ProcessUpdate::payload(p, ProcessEventKind::DtmRecovered, ProcessType::M0d, "n1"),
        );
        let BqAction::Apply { states, .. } = bq_action(&entry(1, &e.to_bytes()), "n2") else {
            panic!()
        };
        assert_eq!(
            states.processes,
            vec![(p, ProcessEventKind::DtmRecovered, ProcessType::M0d)]
        );
        assert!(
            matches!(bq_action(&entry(1, &e.to_bytes()), "n1"), BqAction::Pass { why } if why.contains("applied already"))
        );
        // The fixture's form (no node) is applied everywhere.
        let raw = br#"{"message_type": "PROCESS-STATE-UPDATE", "payload": {"fid": "0x7200000000000001:0xc", "state": "M0_CONF_HA_PROCESS_STARTED", "type": "M0_CONF_HA_PROCESS_M0D"}, "timestamp": 1795378547.526222}"#;
        assert!(matches!(
            bq_action(&entry(1, raw), "n1"),
            BqAction::Apply { .. }
        ));
    }

    #[test]
    fn malformed_and_unknown_bq_entries_are_passed_over_with_a_reason() {
        let why = |raw: &[u8]| match bq_action(&entry(2, raw), "n1") {
            BqAction::Pass { why } => why,
            a => panic!("applied: {a:?}"),
        };
        assert!(why(b"{not json").contains("malformed entry: not JSON"));
        assert!(why(br#"{"message_type": "NEW-THING", "payload": {}}"#)
            .contains("unknown message type \"NEW-THING\""));
        assert!(why(br#"{"message_type": "OBJECT-STATE-UPDATE", "payload": {"fid": "0x1:0x2", "state": "BROKEN"}}"#)
            .contains("unknown state"));
        assert!(why(br#"{"message_type": "OBJECT-STATE-UPDATE", "payload": {"fid": "zz", "state": "FAILED"}}"#)
            .contains("malformed"));
        assert!(
            why(br#"{"message_type": "OBJECT-STATE-UPDATE", "payload": {}}"#).contains("needs")
        );
        assert!(why(br#"{"message_type": "PROCESS-STATE-UPDATE", "payload": {"fid": "0x7200000000000001:0xc"}}"#)
            .contains("state"));
    }
}
