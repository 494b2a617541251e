//! Consul transactions for the queues: the operations the RC and the publishers need
//! (`cas`, `check-index`, `check-session`, ...) and how a 409 rollback is read.
use crate::consul::{Consul, ConsulError};
use base64::Engine;
use serde_json::{json, Value};

/// Most operations in one transaction (Consul <= 1.13 allows 64; later versions 128).
pub const MAX_OPS: usize = 64;
/// Most bytes of values in one transaction body (Consul refuses bodies over 512 KiB).
pub const MAX_BYTES: usize = 400 * 1024;

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

    /// Bytes this op adds to the body (for [`MAX_BYTES`]).
    pub fn size(&self) -> usize {
        match self {
            Op::Cas { key, value, .. } | Op::Set { key, value } => {
                key.len() + value.len() * 4 / 3 + 64
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
    #[error(transparent)]
    Consul(#[from] ConsulError),
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
        Err(ConsulError::Status {
            status: 409, body, ..
        }) => {
            let (op, what) = conflict_of(&body);
            Err(TxnError::Conflict { op, what })
        }
        Err(e) => Err(TxnError::Consul(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
