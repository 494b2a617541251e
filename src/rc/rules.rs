//! The RC's rules: what an `eq/` entry turns into. Pure functions, so that every rule is
//! tested without Consul. The RC leader commits a decision together with the deletion of
//! the entry (see `leader.rs`).
use super::envelope::{self, Envelope};
use super::queue::{Queue, QueueEntry};
use crate::fid::Fid;
use crate::motr::{HaState, Note, ProcessEventKind, ProcessType};
use serde_json::json;

/// Where the RC records the states it decided for objects (`states/<fid>` =
/// `{"state": "FAILED", "cause": ...}`), so that a hax that starts later knows them.
pub const STATES_PREFIX: &str = "states/";

/// What to do with one `eq/` entry. Either way the entry is deleted in the same transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Publish `to_bq` (possibly nothing); `what` is the log line's description.
    Act { to_bq: Vec<Envelope>, what: String },
    /// Nothing can be done with it (malformed, unknown type): logged and deleted.
    Skip { why: String },
}

/// A process type from Motr's enum name.
pub fn process_type_of(name: &str) -> Option<ProcessType> {
    use ProcessType::*;
    [Other, Kernel, M0mkfs, M0d]
        .into_iter()
        .find(|t| t.motr_name() == name)
}

/// An HA state from its name (`FAILED`, also `M0_NC_FAILED`).
pub fn ha_state_of(name: &str) -> Option<HaState> {
    let n = name.strip_prefix("M0_NC_").unwrap_or(name);
    (0..8).filter_map(HaState::from_u32).find(|s| s.name() == n)
}

/// A process state update's fields, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessUpdate {
    pub fid: Fid,
    pub event: ProcessEventKind,
    pub ptype: ProcessType,
    /// The Consul node whose hax reported it, when the payload says.
    pub node: Option<String>,
}

impl ProcessUpdate {
    /// Reads a PROCESS-STATE-UPDATE payload (`type` defaults to M0D when absent).
    pub fn from_envelope(e: &Envelope) -> Result<ProcessUpdate, String> {
        let fid = e.field("fid").ok_or("payload has no \"fid\" string")?;
        let fid: Fid = fid.parse().map_err(|err| format!("payload fid: {err}"))?;
        let state = e.field("state").ok_or("payload has no \"state\" string")?;
        let event = ProcessEventKind::from_motr_name(state)
            .ok_or_else(|| format!("unknown process state {state:?}"))?;
        let ptype = match e.field("type") {
            None => ProcessType::M0d,
            Some(t) => process_type_of(t).ok_or_else(|| format!("unknown process type {t:?}"))?,
        };
        let node = e
            .field("node")
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        Ok(ProcessUpdate {
            fid,
            event,
            ptype,
            node,
        })
    }

    /// The payload the hax of `node` publishes for a process event.
    pub fn payload(
        fid: Fid,
        event: ProcessEventKind,
        ptype: ProcessType,
        node: &str,
    ) -> serde_json::Value {
        json!({"fid": fid, "state": event.motr_name(), "type": ptype.motr_name(), "node": node})
    }
}

/// The `states/<fid>` record that goes with a `bq/` entry deciding an object's state (in the
/// same transaction), if it is one.
pub fn state_record(e: &Envelope) -> Option<(String, Vec<u8>)> {
    if e.message_type != envelope::OBJECT_STATE_UPDATE {
        return None;
    }
    let fid: Fid = e.field("fid")?.parse().ok()?;
    let state = ha_state_of(e.field("state")?)?;
    let value = json!({"state": state.name(), "cause": e.field("cause").unwrap_or("")});
    Some((
        format!("{STATES_PREFIX}{fid}"),
        value.to_string().into_bytes(),
    ))
}

/// Reads a `states/<fid>` record back (None: not one).
pub fn parse_state_record(key: &str, value: &[u8]) -> Option<Note> {
    let fid: Fid = key.strip_prefix(STATES_PREFIX)?.parse().ok()?;
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    let state = ha_state_of(v.get("state")?.as_str()?)?;
    Some(Note { fid, state })
}

/// Decides what the RC does with an `eq/` entry.
pub fn decide(entry: &QueueEntry) -> Decision {
    if entry.seq.is_none() {
        return Decision::Skip {
            why: format!(
                "{:?} is not an {}<number> key",
                entry.key,
                Queue::Eq.prefix()
            ),
        };
    }
    let e = match Envelope::decode(&entry.value) {
        Ok(e) => e,
        Err(why) => {
            return Decision::Skip {
                why: format!("malformed entry: {why}"),
            }
        }
    };
    let malformed = |why: String| Decision::Skip {
        why: format!("malformed {} entry: {why}", e.message_type),
    };
    match e.message_type.as_str() {
        envelope::PROCESS_STATE_UPDATE => match ProcessUpdate::from_envelope(&e) {
            Ok(u) => {
                let from = u
                    .node
                    .as_deref()
                    .map(|n| format!(" (node {n})"))
                    .unwrap_or_default();
                let mut fwd = e.clone();
                fwd.payload = json!({"fid": u.fid, "state": u.event.motr_name(), "type": u.ptype.motr_name()});
                if let Some(n) = &u.node {
                    fwd.payload["node"] = json!(n);
                }
                Decision::Act {
                    to_bq: vec![fwd],
                    what: format!(
                        "process {} {}{from}: to every hax",
                        u.fid,
                        u.event.motr_name()
                    ),
                }
            }
            Err(why) => malformed(why),
        },
        envelope::STOB_IOQ_ERROR => {
            let sdev = match e.field("sdev").map(|s| s.parse::<Fid>()) {
                Some(Ok(f)) => f,
                Some(Err(err)) => return malformed(format!("payload sdev: {err}")),
                None => return malformed("payload has no \"sdev\" string".into()),
            };
            let rc = e.payload.get("rc").and_then(|v| v.as_i64());
            let rc = rc.map(|r| format!(" rc {r}")).unwrap_or_default();
            let from = e
                .field("process")
                .map(|p| format!(" reported by {p}"))
                .unwrap_or_default();
            let out = Envelope::new(
                envelope::OBJECT_STATE_UPDATE,
                json!({"fid": sdev, "state": HaState::Failed.name(), "cause": format!("STOB_IOQ_ERROR{rc}")}),
            );
            Decision::Act {
                to_bq: vec![out],
                what: format!("drive I/O error{rc} on sdev {sdev}{from}: sdev FAILED"),
            }
        }
        envelope::OBJECT_STATE_UPDATE => {
            let fid = match e.field("fid").map(|s| s.parse::<Fid>()) {
                Some(Ok(f)) => f,
                Some(Err(err)) => return malformed(format!("payload fid: {err}")),
                None => return malformed("payload has no \"fid\" string".into()),
            };
            let state = match e.field("state") {
                Some(s) => match ha_state_of(s) {
                    Some(st) => st,
                    None => return malformed(format!("unknown state {s:?}")),
                },
                None => return malformed("payload has no \"state\" string".into()),
            };
            let cause = e.field("cause").unwrap_or("");
            let out = Envelope::new(
                envelope::OBJECT_STATE_UPDATE,
                json!({"fid": fid, "state": state.name(), "cause": cause}),
            );
            let why = if cause.is_empty() {
                String::new()
            } else {
                format!(" ({cause})")
            };
            Decision::Act {
                to_bq: vec![out],
                what: format!("{fid} {state}{why}: to every hax"),
            }
        }
        envelope::TIMEOUT => {
            let key = e.field("key").unwrap_or("?");
            let value = e
                .payload
                .get("value")
                .map(|v| v.to_string())
                .unwrap_or_default();
            Decision::Act {
                to_bq: Vec::new(),
                what: format!("{key} fired (value {value})"),
            }
        }
        other => Decision::Skip {
            why: format!(
                "unknown message type {other:?} (payload {})",
                envelope::preview(e.payload.to_string().as_bytes())
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, value: &[u8]) -> QueueEntry {
        QueueEntry {
            key: format!("eq/{seq}"),
            seq: Some(seq),
            value: value.to_vec(),
            modify_index: 5,
        }
    }

    #[test]
    fn a_drive_io_error_marks_its_sdev_failed_through_bq() {
        let sdev = Fid::typed(b'd', 1, 5);
        let e = Envelope::new(
            envelope::STOB_IOQ_ERROR,
            json!({"sdev": sdev, "rc": -5, "process": "0x7200000000000001:0xc"}),
        );
        let Decision::Act { to_bq, what } = decide(&entry(3, &e.to_bytes())) else {
            panic!("not acted on")
        };
        assert_eq!(to_bq.len(), 1);
        assert_eq!(to_bq[0].message_type, envelope::OBJECT_STATE_UPDATE);
        assert_eq!(to_bq[0].field("fid"), Some(sdev.to_string().as_str()));
        assert_eq!(to_bq[0].field("state"), Some("FAILED"));
        assert!(
            what.contains("rc -5") && what.contains(&sdev.to_string()) && what.contains("FAILED"),
            "{what}"
        );
    }

    #[test]
    fn a_process_state_update_goes_to_every_hax_unchanged() {
        let raw = br#"{"message_type": "PROCESS-STATE-UPDATE", "payload": {"fid": "0x7200000000000001:0xc", "state": "M0_CONF_HA_PROCESS_STOPPED", "type": "M0_CONF_HA_PROCESS_M0D"}, "timestamp": 1795378552.052081}"#;
        let Decision::Act { to_bq, what } = decide(&entry(1, raw)) else {
            panic!("not acted on")
        };
        assert_eq!(to_bq.len(), 1);
        assert_eq!(
            to_bq[0],
            Envelope::decode(raw).unwrap(),
            "same payload and timestamp"
        );
        assert!(
            what.contains("0x7200000000000001:0xc M0_CONF_HA_PROCESS_STOPPED"),
            "{what}"
        );
        let with_node = Envelope::new(
            envelope::PROCESS_STATE_UPDATE,
            ProcessUpdate::payload(
                Fid::typed(b'r', 1, 6),
                ProcessEventKind::Started,
                ProcessType::M0d,
                "n1",
            ),
        );
        let Decision::Act { to_bq, .. } = decide(&entry(2, &with_node.to_bytes())) else {
            panic!()
        };
        let u = ProcessUpdate::from_envelope(&to_bq[0]).unwrap();
        assert_eq!(u.node.as_deref(), Some("n1"));
        assert_eq!(
            (u.event, u.ptype),
            (ProcessEventKind::Started, ProcessType::M0d)
        );
    }

    #[test]
    fn unknown_types_and_malformed_entries_are_skipped_with_a_reason() {
        let skip = |e: &QueueEntry| match decide(e) {
            Decision::Skip { why } => why,
            d => panic!("not skipped: {d:?}"),
        };
        assert!(
            skip(&entry(1, br#"{"message_type": "FOO", "payload": {}}"#))
                .contains("unknown message type \"FOO\"")
        );
        assert!(skip(&entry(2, b"wake_RC")).contains("malformed entry: not JSON"));
        assert!(skip(&entry(
            3,
            br#"{"message_type": "STOB_IOQ_ERROR", "payload": {"sdev": "x"}}"#
        ))
        .contains("sdev"));
        assert!(skip(&entry(
            4,
            br#"{"message_type": "STOB_IOQ_ERROR", "payload": {}}"#
        ))
        .contains("no \"sdev\""));
        assert!(skip(&entry(5, br#"{"message_type": "PROCESS-STATE-UPDATE", "payload": {"fid": "0x7200000000000001:0xc", "state": "BAD"}}"#))
            .contains("unknown process state"));
        assert!(skip(&entry(6, br#"{"message_type": "PROCESS-STATE-UPDATE", "payload": {"fid": "0x7200000000000001:0xc", "state": "M0_CONF_HA_PROCESS_STARTED", "type": "T"}}"#))
            .contains("unknown process type"));
        let unnumbered = QueueEntry {
            key: "eq/x".into(),
            seq: None,
            value: Vec::new(),
            modify_index: 1,
        };
        assert!(skip(&unnumbered).contains("not an eq/<number> key"));
    }

    #[test]
    fn a_state_decided_elsewhere_goes_through_the_rc_and_is_recorded() {
        let raw = br#"{"message_type": "OBJECT-STATE-UPDATE", "payload": {"fid": "0x6400000000000001:0x5", "state": "ONLINE", "cause": "drive replaced"}}"#;
        let Decision::Act { to_bq, what } = decide(&entry(1, raw)) else {
            panic!("not acted on")
        };
        assert_eq!(
            what,
            "0x6400000000000001:0x5 ONLINE (drive replaced): to every hax"
        );
        let (key, value) = state_record(&to_bq[0]).unwrap();
        assert_eq!(key, "states/0x6400000000000001:0x5");
        assert_eq!(
            parse_state_record(&key, &value).unwrap().state,
            HaState::Online
        );
        let bad = br#"{"message_type": "OBJECT-STATE-UPDATE", "payload": {"fid": "0x6400000000000001:0x5", "state": "GONE"}}"#;
        assert!(
            matches!(decide(&entry(2, bad)), Decision::Skip { why } if why.contains("unknown state"))
        );
    }

    #[test]
    fn a_timeout_entry_is_handled_without_a_broadcast() {
        let e = Envelope::new(
            envelope::TIMEOUT,
            json!({"key": "timeout/201907221208.00", "value": "tmo1"}),
        );
        assert_eq!(
            decide(&entry(9, &e.to_bytes())),
            Decision::Act {
                to_bq: vec![],
                what: "timeout/201907221208.00 fired (value \"tmo1\")".into()
            }
        );
    }

    #[test]
    fn an_object_state_decision_is_recorded_under_states() {
        let sdev = Fid::typed(b'd', 1, 5);
        let e = Envelope::new(
            envelope::OBJECT_STATE_UPDATE,
            json!({"fid": sdev, "state": "FAILED", "cause": "STOB_IOQ_ERROR rc -5"}),
        );
        let (key, value) = state_record(&e).unwrap();
        assert_eq!(key, format!("states/{sdev}"));
        assert_eq!(
            parse_state_record(&key, &value),
            Some(Note {
                fid: sdev,
                state: HaState::Failed
            })
        );
        let p = Envelope::new(
            envelope::PROCESS_STATE_UPDATE,
            json!({"fid": "0x7200000000000001:0xc"}),
        );
        assert_eq!(state_record(&p), None);
        assert_eq!(
            parse_state_record("states/zz", b"{\"state\": \"FAILED\"}"),
            None
        );
        assert_eq!(parse_state_record(&key, b"FAILED"), None);
    }

    #[test]
    fn names_map_to_motr_types_and_states() {
        assert_eq!(
            process_type_of("M0_CONF_HA_PROCESS_M0MKFS"),
            Some(ProcessType::M0mkfs)
        );
        assert_eq!(process_type_of("M0D"), None);
        assert_eq!(ha_state_of("FAILED"), Some(HaState::Failed));
        assert_eq!(ha_state_of("M0_NC_TRANSIENT"), Some(HaState::Transient));
        assert_eq!(ha_state_of("DTM_RECOVERING"), Some(HaState::DtmRecovering));
        assert_eq!(ha_state_of("failed"), None);
    }
}
