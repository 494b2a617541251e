//! Consul KV: entries as Consul returns them, and transaction operations.
use base64::Engine;
use serde::{Deserialize, Serialize};

/// One KV entry of `GET /v1/kv/<key>` (the value is base64 in Consul's JSON).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct KvEntry {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub modify_index: u64,
}

impl KvEntry {
    /// The decoded value ("" when empty or undecodable).
    pub fn value_string(&self) -> String {
        self.value
            .as_deref()
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// One operation of a `/v1/txn` request.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TxnOp {
    #[serde(rename = "KV")]
    pub kv: TxnKv,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct TxnKv {
    pub verb: &'static str,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl TxnOp {
    pub fn set(key: &str, value: &[u8]) -> TxnOp {
        TxnOp {
            kv: TxnKv {
                verb: "set",
                key: key.to_string(),
                value: Some(base64::engine::general_purpose::STANDARD.encode(value)),
            },
        }
    }
    pub fn delete(key: &str) -> TxnOp {
        TxnOp {
            kv: TxnKv {
                verb: "delete",
                key: key.to_string(),
                value: None,
            },
        }
    }
}
