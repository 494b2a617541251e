//! Health news through the broadcast queue `bq/` (docs/scaling.md): a process's health,
//! published by the hax of its node (`HEALTH-UPDATE`), and a node's, published by the RC
//! leader (`NODE-HEALTH`). Each carries the Consul index it is true as of, so that every hax
//! merges it with what it learnt elsewhere, newest first (model::health).
use super::envelope::Envelope;
use crate::fid::Fid;
use crate::model::health::{Health, HealthDelta};
use serde_json::json;

/// A process's health. Payload: `{"fid", "health": "passing"|"failing"|"gone", "index",
/// "node"}` (`node`: the Consul node of the hax that published it).
pub const HEALTH_UPDATE: &str = "HEALTH-UPDATE";
/// A node's health. Payload: `{"node", "health", "index"}`.
pub const NODE_HEALTH: &str = "NODE-HEALTH";

/// The entry publishing `d`; `by` is the publishing hax's Consul node.
pub fn envelope(d: &HealthDelta, by: &str) -> Envelope {
    match d {
        HealthDelta::Process { fid, health, index } => Envelope::new(
            HEALTH_UPDATE,
            json!({"fid": fid, "health": health.name(), "index": index, "node": by}),
        ),
        HealthDelta::Node {
            node,
            health,
            index,
        } => Envelope::new(
            NODE_HEALTH,
            json!({"node": node, "health": health.name(), "index": index}),
        ),
    }
}

/// Reads a `HEALTH-UPDATE` or `NODE-HEALTH` entry (None: another type; Err: malformed).
pub fn decode(e: &Envelope) -> Option<Result<HealthDelta, String>> {
    let kind = e.message_type.as_str();
    if kind != HEALTH_UPDATE && kind != NODE_HEALTH {
        return None;
    }
    Some((|| {
        let health = e
            .field("health")
            .ok_or("payload has no \"health\" string")?;
        let health =
            Health::from_name(health).ok_or_else(|| format!("unknown health {health:?}"))?;
        let index = e
            .payload
            .get("index")
            .and_then(|v| v.as_u64())
            .ok_or("payload has no \"index\" number")?;
        if kind == HEALTH_UPDATE {
            let fid: Fid = e
                .field("fid")
                .ok_or("payload has no \"fid\" string")?
                .parse()
                .map_err(|err| format!("payload fid: {err}"))?;
            Ok(HealthDelta::Process { fid, health, index })
        } else {
            let node = e.field("node").filter(|n| !n.is_empty());
            let node = node.ok_or("payload has no \"node\" string")?.to_string();
            Ok(HealthDelta::Node {
                node,
                health,
                index,
            })
        }
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_news_reads_back_as_it_was_written() {
        let p = HealthDelta::Process {
            fid: Fid::typed(b'r', 1, 0x2f),
            health: Health::Failing,
            index: 93,
        };
        let n = HealthDelta::Node {
            node: "cli-2".into(),
            health: Health::Gone,
            index: 103,
        };
        for d in [p, n] {
            let e = envelope(&d, "srv-1");
            let back = Envelope::decode(&e.to_bytes()).unwrap();
            assert_eq!(decode(&back), Some(Ok(d)));
        }
    }

    #[test]
    fn malformed_health_news_says_what_is_wrong() {
        let e = Envelope::new(
            HEALTH_UPDATE,
            json!({"fid": "0x7200000000000001:0x2f", "health": "dying", "index": 1}),
        );
        assert!(decode(&e).unwrap().unwrap_err().contains("dying"));
        let e = Envelope::new(NODE_HEALTH, json!({"health": "gone", "index": 1}));
        assert!(decode(&e).unwrap().unwrap_err().contains("node"));
        let e = Envelope::new(HEALTH_UPDATE, json!({"fid": "x", "health": "gone"}));
        assert!(decode(&e).unwrap().unwrap_err().contains("index"));
        assert_eq!(decode(&Envelope::new("OTHER", json!({}))), None);
    }
}
