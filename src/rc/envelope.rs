//! The queue entry format: `{"message_type": ..., "payload": ..., "timestamp": ...}`, the
//! same JSON the Python hax wrote under `eq/` and `bq/` (see the keyprefix fixtures).
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A process changed state (eq: reported by the hax it is linked to; bq: for every hax).
/// Payload: `{"fid", "state": "M0_CONF_HA_PROCESS_...", "type": "M0_CONF_HA_PROCESS_...",
/// "node"}` (`node`, the Consul node of the reporting hax, is optional).
pub const PROCESS_STATE_UPDATE: &str = "PROCESS-STATE-UPDATE";
/// A drive I/O error reported by a Motr process (eq). Payload: the STOB_IOQ fields
/// (`sdev`, `rc`, `opcode`, ...) and `process`, the reporting process (or null).
pub const STOB_IOQ_ERROR: &str = "STOB_IOQ_ERROR";
/// An HA state for any object (bq: decided by the RC, and recorded under `states/`; eq: a
/// decision made elsewhere, which the RC passes on and records). Payload: `{"fid", "state":
/// "FAILED", "cause"}` (`state`: an HA state name; `cause` optional, for the log).
pub const OBJECT_STATE_UPDATE: &str = "OBJECT-STATE-UPDATE";
/// A due `timeout/<time>` whose value was not itself an envelope (eq). Payload:
/// `{"key": "timeout/...", "value": "<the key's value>"}`.
pub const TIMEOUT: &str = "TIMEOUT";

/// One queue entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub message_type: String,
    pub payload: Value,
    /// Seconds since the Unix epoch, when the entry was made.
    #[serde(default)]
    pub timestamp: f64,
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Envelope {
    /// A new entry stamped now.
    pub fn new(message_type: &str, payload: Value) -> Envelope {
        Envelope {
            message_type: message_type.to_string(),
            payload,
            timestamp: now_secs(),
        }
    }

    /// The JSON bytes stored as the KV value.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an entry; the reason says what is wrong with a malformed one.
    pub fn decode(raw: &[u8]) -> Result<Envelope, String> {
        let v: Value =
            serde_json::from_slice(raw).map_err(|_| format!("not JSON ({})", preview(raw)))?;
        if !v.is_object() {
            return Err(format!("not a JSON object ({})", preview(raw)));
        }
        let env: Envelope = serde_json::from_value(v)
            .map_err(|e| format!("not an envelope: {e} ({})", preview(raw)))?;
        if env.message_type.trim().is_empty() {
            return Err(format!("empty message_type ({})", preview(raw)));
        }
        Ok(env)
    }

    /// A string field of the payload.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.payload.get(name).and_then(|v| v.as_str())
    }
}

/// The start of a raw value, printable, for log lines.
pub fn preview(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push_str("...");
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// The value of `eq/1` in the keyprefix fixture 46 (Python's json.dumps spacing).
    const FIXTURE_EQ1: &str = "eyJtZXNzYWdlX3R5cGUiOiAiUFJPQ0VTUy1TVEFURS1VUERBVEUiLCAicGF5bG9hZCI6IHsiZmlkIjogIjB4NzIwMDAwMDAwMDAwMDAwMToweGMiLCAic3RhdGUiOiAiTTBfQ09ORl9IQV9QUk9DRVNTX1NUT1BQRUQiLCAidHlwZSI6ICJNMF9DT05GX0hBX1BST0NFU1NfTTBEIn0sICJ0aW1lc3RhbXAiOiAxNzk1Mzc4NTUyLjA1MjA4MX0=";

    #[test]
    fn the_fixture_eq_entry_decodes() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(FIXTURE_EQ1)
            .unwrap();
        let e = Envelope::decode(&raw).unwrap();
        assert_eq!(e.message_type, PROCESS_STATE_UPDATE);
        assert_eq!(e.field("fid"), Some("0x7200000000000001:0xc"));
        assert_eq!(e.field("state"), Some("M0_CONF_HA_PROCESS_STOPPED"));
        assert_eq!(e.field("type"), Some("M0_CONF_HA_PROCESS_M0D"));
        assert!((e.timestamp - 1795378552.052081).abs() < 1e-6);
    }

    #[test]
    fn an_envelope_round_trips_through_its_bytes() {
        let e = Envelope::new(
            STOB_IOQ_ERROR,
            serde_json::json!({"sdev": "0x6400000000000001:0x5"}),
        );
        let back = Envelope::decode(&e.to_bytes()).unwrap();
        assert_eq!(back, e);
        let v: Value = serde_json::from_slice(&e.to_bytes()).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["message_type", "payload", "timestamp"]);
    }

    #[test]
    fn malformed_entries_are_refused_with_a_reason() {
        assert!(Envelope::decode(b"wake_RC")
            .unwrap_err()
            .contains("not JSON"));
        assert!(Envelope::decode(b"[1,2]")
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(Envelope::decode(br#"{"payload": {}}"#)
            .unwrap_err()
            .contains("message_type"));
        assert!(Envelope::decode(br#"{"message_type": " ", "payload": {}}"#)
            .unwrap_err()
            .contains("empty"));
        assert!(Envelope::decode(br#"{"message_type": 7, "payload": {}}"#).is_err());
        let no_stamp = Envelope::decode(br#"{"message_type": "X", "payload": null}"#).unwrap();
        assert_eq!(no_stamp.timestamp, 0.0);
        assert!(preview(&[b'a'; 200]).ends_with("...\""));
    }
}
