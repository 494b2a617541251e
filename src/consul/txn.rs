//! Consul transactions (`/v1/txn`), the one way hax writes KV: the operations (`set`, `cas`,
//! `check-index`, `check-session`, `delete`), the limits every writer packs to (ops *and*
//! bytes), and what an answer means: committed (with each key's new ModifyIndex), rolled back
//! by a failing op (409), rejected for good (another 4xx: never retried), or worth retrying
//! (Consul down, no leader, overloaded; the answer may have been lost after a commit, which
//! writers resolve with compare-and-set or by reading back, never by timing).
use crate::consul::{Consul, ConsulError};
use base64::Engine;
use serde_json::{json, Value};

/// Most operations in one transaction (Consul <= 1.13 allows 64; later versions 128).
pub const MAX_OPS: usize = 64;
/// Most bytes in one transaction body, as [`Op::size`] counts them (Consul refuses bodies over
/// 512 KiB; the margin covers the JSON around the ops).
pub const MAX_BYTES: usize = 512 * 1024 - 8 * 1024;

/// One KV operation of `/v1/txn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set the key.
    Set { key: String, value: Vec<u8> },
    /// Set only if the key's ModifyIndex is `index` (0: only if the key does not exist).
    Cas {
        key: String,
        value: Vec<u8>,
        index: u64,
    },
    /// Fail unless the key exists with this ModifyIndex.
    CheckIndex { key: String, index: u64 },
    /// Fail unless `session` holds the key's lock.
    CheckSession { key: String, session: String },
    /// Delete the key (nothing happens if it is absent).
    Delete { key: String },
}

impl Op {
    pub fn to_json(&self) -> Value {
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        let kv = match self {
            Op::Set { key, value } => json!({"Verb": "set", "Key": key, "Value": b64(value)}),
            Op::Cas { key, value, index } => {
                json!({"Verb": "cas", "Key": key, "Value": b64(value), "Index": index})
            }
            Op::CheckIndex { key, index } => {
                json!({"Verb": "check-index", "Key": key, "Index": index})
            }
            Op::CheckSession { key, session } => {
                json!({"Verb": "check-session", "Key": key, "Session": session})
            }
            Op::Delete { key } => json!({"Verb": "delete", "Key": key}),
        };
        json!({ "KV": kv })
    }

    /// Bytes this op adds to the body (for [`MAX_BYTES`]): values go base64-encoded.
    pub fn size(&self) -> usize {
        match self {
            Op::Cas { key, value, .. } | Op::Set { key, value } => {
                key.len() + value.len().div_ceil(3) * 4 + 64
            }
            Op::CheckIndex { key, .. } | Op::Delete { key } => key.len() + 64,
            Op::CheckSession { key, session } => key.len() + session.len() + 64,
        }
    }

    /// The guard every RC transaction starts with: only the holder of `leader` commits.
    pub fn leader_guard(session: &str) -> Op {
        Op::CheckSession {
            key: "leader".into(),
            session: session.to_string(),
        }
    }
}

/// Why a transaction did not commit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// Consul rolled it back (409): op number `op` (when Consul said) failed.
    #[error("transaction rolled back at op {op:?}: {what}")]
    Conflict { op: Option<usize>, what: String },
    /// Consul refused it for good (a 4xx other than 409: permission denied, too large,
    /// malformed); sending it again cannot help.
    #[error("transaction rejected: {0}")]
    Rejected(ConsulError),
    /// Worth retrying: Consul is down, has no leader or is overloaded. When the request may
    /// have reached Consul (`maybe_applied`), it may also have committed.
    #[error("transaction not committed (yet): {error}")]
    Transient {
        error: ConsulError,
        maybe_applied: bool,
    },
}

impl TxnError {
    /// The metric label of the error kind.
    pub fn kind(&self) -> &'static str {
        match self {
            TxnError::Conflict { .. } => "conflict",
            TxnError::Rejected(_) => "rejected",
            TxnError::Transient { .. } => "transient",
        }
    }

    /// Consul's error for the non-conflict kinds.
    pub fn consul(&self) -> Option<&ConsulError> {
        match self {
            TxnError::Rejected(e) | TxnError::Transient { error: e, .. } => Some(e),
            TxnError::Conflict { .. } => None,
        }
    }
}

impl From<ConsulError> for TxnError {
    fn from(e: ConsulError) -> TxnError {
        classify(e)
    }
}

/// Sorts Consul's answer into the kinds above.
pub fn classify(e: ConsulError) -> TxnError {
    match e {
        ConsulError::Status {
            status: 409, body, ..
        } => {
            let (op, what) = conflict_of(&body);
            TxnError::Conflict { op, what }
        }
        e if e.is_transient() => {
            // A connection refused never reached Consul; anything else may have.
            let maybe_applied = match &e {
                ConsulError::Unreachable { reason, .. } => !reason.contains("refused"),
                _ => false,
            };
            TxnError::Transient {
                error: e,
                maybe_applied,
            }
        }
        e => TxnError::Rejected(e),
    }
}

/// Packs ops into transactions: at most [`MAX_OPS`] ops and [`MAX_BYTES`] bytes each. A
/// group of ops that must commit together (`fits` of several ops) is never split.
#[derive(Clone, Copy, Debug, Default)]
pub struct Packer {
    ops: usize,
    bytes: usize,
}

impl Packer {
    /// A packer whose transaction already holds `ops` (e.g. a guard or an epoch).
    pub fn with(ops: &[Op]) -> Packer {
        Packer {
            ops: ops.len(),
            bytes: ops.iter().map(Op::size).sum(),
        }
    }

    /// Adds `group` if it fits; answers whether it did. A group alone in an otherwise empty
    /// transaction always fits (Consul judges it).
    pub fn fits(&mut self, group: &[Op]) -> bool {
        let (ops, bytes) = (group.len(), group.iter().map(Op::size).sum::<usize>());
        let empty = self.ops == 0;
        if !empty && (self.ops + ops > MAX_OPS || self.bytes + bytes > MAX_BYTES) {
            return false;
        }
        self.ops += ops;
        self.bytes += bytes;
        true
    }

    pub fn ops(&self) -> usize {
        self.ops
    }
}

/// The first failing op of a 409 body (`{"Errors": [{"OpIndex": 1, "What": "..."}]}`, possibly
/// pretty-printed or cut short) and what Consul said about it.
pub fn conflict_of(body: &str) -> (Option<usize>, String) {
    let op = body.find("\"OpIndex\"").and_then(|i| {
        let rest = body[i + "\"OpIndex\"".len()..].trim_start();
        let rest = rest.strip_prefix(':')?.trim_start();
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    });
    let what = body
        .find("\"What\"")
        .and_then(|i| {
            let rest = body[i + "\"What\"".len()..]
                .trim_start()
                .strip_prefix(':')?
                .trim_start();
            let rest = rest.strip_prefix('"')?;
            let mut out = String::new();
            let mut escaped = false;
            for c in rest.chars() {
                match (escaped, c) {
                    (true, c) => {
                        out.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (false, c) => out.push(c),
                }
            }
            Some(out)
        })
        .unwrap_or_else(|| body.chars().take(200).collect());
    (op, what)
}

/// The request body of `ops`.
pub fn body(ops: &[Op]) -> Vec<u8> {
    serde_json::to_vec(&ops.iter().map(Op::to_json).collect::<Vec<_>>()).unwrap_or_default()
}

/// Commits `ops` as one transaction.
pub async fn commit(consul: &Consul, ops: &[Op]) -> Result<(), TxnError> {
    commit_indexes(consul, ops).await.map(|_| ())
}

/// The ModifyIndex Consul reports for each key a committed transaction wrote (its
/// `Results`), in op order; keys it did not report are left out.
pub fn result_indexes(body: &[u8]) -> Vec<(String, u64)> {
    #[derive(serde::Deserialize)]
    struct Kv {
        #[serde(rename = "Key")]
        key: String,
        #[serde(rename = "ModifyIndex")]
        modify_index: u64,
    }
    #[derive(serde::Deserialize)]
    struct One {
        #[serde(rename = "KV")]
        kv: Option<Kv>,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Results", default)]
        results: Option<Vec<One>>,
    }
    serde_json::from_slice::<Answer>(body)
        .ok()
        .and_then(|a| a.results)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| r.kv.map(|kv| (kv.key, kv.modify_index)))
        .collect()
}

/// Commits `ops` as one transaction; answers the ModifyIndex of each key written.
pub async fn commit_indexes(consul: &Consul, ops: &[Op]) -> Result<Vec<(String, u64)>, TxnError> {
    debug_assert!(ops.len() <= MAX_OPS, "{} ops in one transaction", ops.len());
    match consul.put("/v1/txn", body(ops)).await {
        Ok(answer) => Ok(result_indexes(&answer)),
        Err(e) => Err(classify(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, n: usize) -> Op {
        Op::Set {
            key: key.into(),
            value: vec![b'x'; n],
        }
    }

    #[test]
    fn the_packer_stops_at_64_ops_or_the_byte_limit_and_never_splits_a_group() {
        let mut p = Packer::with(&[set("epochs/eq", 2)]);
        let mut groups = 0;
        while p.fits(&[set("processes/x", 60), set("eq/1", 200)]) {
            groups += 1;
        }
        assert_eq!(groups, 31, "1 + 31 x 2 = 63 ops; a 32nd pair would make 65");
        let mut p = Packer::default();
        assert!(p.fits(&[set("big", 300 * 1024)]));
        assert!(!p.fits(&[set("big2", 300 * 1024)]), "bytes: 2 x 400 KiB");
        let mut p = Packer::default();
        assert!(
            p.fits(&[set("huge", 900 * 1024)]),
            "alone it goes: Consul judges it"
        );
    }

    #[test]
    fn answers_are_sorted_into_conflict_rejected_and_transient() {
        let status = |status: u16, body: &str| ConsulError::Status {
            status,
            what: "PUT /v1/txn".into(),
            body: body.into(),
        };
        assert!(matches!(
            classify(status(409, r#"{"Errors":[{"OpIndex":3,"What":"x"}]}"#)),
            TxnError::Conflict { op: Some(3), .. }
        ));
        for s in [400, 403, 404, 413] {
            assert_eq!(classify(status(s, "no")).kind(), "rejected", "{s}");
        }
        for s in [500, 503, 429] {
            assert!(matches!(
                classify(status(s, "x")),
                TxnError::Transient {
                    maybe_applied: false,
                    ..
                }
            ));
        }
        let refused = ConsulError::Unreachable {
            addr: "a".into(),
            reason: "Connection refused (os error 111)".into(),
        };
        assert!(matches!(
            classify(refused),
            TxnError::Transient {
                maybe_applied: false,
                ..
            }
        ));
        let reset = ConsulError::Unreachable {
            addr: "a".into(),
            reason: "timeout".into(),
        };
        assert!(matches!(
            classify(reset),
            TxnError::Transient {
                maybe_applied: true,
                ..
            }
        ));
    }

    #[test]
    fn a_committed_transaction_tells_the_new_modify_index_of_each_key() {
        let body = br#"{"Results":[{"KV":{"LockIndex":0,"Key":"epochs/eq","Flags":0,"Value":null,"CreateIndex":5,"ModifyIndex":42}},{"KV":{"Key":"eq/7","ModifyIndex":42}}],"Errors":null}"#;
        assert_eq!(
            result_indexes(body),
            vec![("epochs/eq".to_string(), 42), ("eq/7".to_string(), 42)]
        );
        assert!(result_indexes(b"not json").is_empty());
        assert!(result_indexes(br#"{"Results":null,"Errors":null}"#).is_empty());
    }

    #[test]
    fn ops_serialise_as_consul_expects() {
        let ops = [
            Op::leader_guard("sid"),
            Op::CheckIndex {
                key: "eq/3".into(),
                index: 17,
            },
            Op::Delete { key: "eq/3".into() },
            Op::Cas {
                key: "epochs/bq".into(),
                value: b"8".to_vec(),
                index: 0,
            },
            Op::Set {
                key: "states/0x1:0x2".into(),
                value: b"{}".to_vec(),
            },
        ];
        let v: Value = serde_json::from_slice(&body(&ops)).unwrap();
        assert_eq!(
            v,
            json!([
                {"KV": {"Verb": "check-session", "Key": "leader", "Session": "sid"}},
                {"KV": {"Verb": "check-index", "Key": "eq/3", "Index": 17}},
                {"KV": {"Verb": "delete", "Key": "eq/3"}},
                {"KV": {"Verb": "cas", "Key": "epochs/bq", "Value": "OA==", "Index": 0}},
                {"KV": {"Verb": "set", "Key": "states/0x1:0x2", "Value": "e30="}},
            ])
        );
    }

    #[test]
    fn a_409_body_names_the_failing_op_compact_pretty_or_cut() {
        let compact = r#"{"Results":null,"Errors":[{"OpIndex":2,"What":"failed to set key \"epochs/eq\", index is stale"}]}"#;
        assert_eq!(
            conflict_of(compact),
            (
                Some(2),
                "failed to set key \"epochs/eq\", index is stale".into()
            )
        );
        let pretty = "{\n    \"Results\": null,\n    \"Errors\": [\n        {\n            \"OpIndex\": 0,\n            \"What\": \"failed to check session, key \\\"leader\\\" doesn't exist\"\n        },\n        {\n            \"OpIndex\": 1,";
        assert_eq!(
            conflict_of(pretty),
            (
                Some(0),
                "failed to check session, key \"leader\" doesn't exist".into()
            )
        );
        assert_eq!(conflict_of("garbage").0, None);
    }
}
