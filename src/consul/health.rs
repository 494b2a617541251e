//! Consul health payloads: what `GET /v1/health/service/<name>` returns and what a `service`
//! watch POSTs (an array of `{Node, Service, Checks}`), and a `checks` watch (an array of
//! checks). Unknown fields are ignored; `null` is an empty list.
use crate::fid::Fid;
use crate::model::health::ServiceHealth;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// One `{Node, Service, Checks}` entry, decoded with only what hax uses: names borrowed from
/// the body where they need no unescaping, checks folded as they are read (a 10000-entry
/// payload is 14 MB; this keeps its decoding within the ingest budget).
#[derive(Debug, Deserialize)]
struct HealthEntry<'a> {
    #[serde(rename = "Node", borrow)]
    node: NodeName<'a>,
    #[serde(rename = "Service", borrow)]
    service: ServiceName<'a>,
    #[serde(rename = "Checks", default)]
    checks: CheckSummary,
}

#[derive(Debug, Deserialize)]
struct NodeName<'a> {
    #[serde(rename = "Node", borrow)]
    node: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
struct ServiceName<'a> {
    #[serde(rename = "ID", borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "Service", borrow)]
    service: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
struct CheckStatus<'a> {
    #[serde(rename = "Status", borrow)]
    status: Cow<'a, str>,
    #[serde(rename = "ServiceID", default, borrow)]
    service_id: Cow<'a, str>,
}

/// An entry's checks, folded: are all passing, are the node's (no ServiceID) passing.
#[derive(Debug, Clone, Copy)]
struct CheckSummary {
    all_passing: bool,
    node_passing: bool,
}

impl Default for CheckSummary {
    fn default() -> Self {
        CheckSummary {
            all_passing: true,
            node_passing: true,
        }
    }
}

impl<'de> Deserialize<'de> for CheckSummary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fold;
        impl<'de> serde::de::Visitor<'de> for Fold {
            type Value = CheckSummary;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of checks or null")
            }
            fn visit_unit<E>(self) -> Result<CheckSummary, E> {
                Ok(CheckSummary::default())
            }
            fn visit_none<E>(self) -> Result<CheckSummary, E> {
                Ok(CheckSummary::default())
            }
            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<CheckSummary, D::Error> {
                d.deserialize_seq(Fold)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CheckSummary, A::Error> {
                let mut sum = CheckSummary::default();
                while let Some(c) = seq.next_element::<CheckStatus<'de>>()? {
                    let passing = c.status == "passing";
                    sum.all_passing &= passing;
                    if c.service_id.is_empty() {
                        sum.node_passing &= passing;
                    }
                }
                Ok(sum)
            }
        }
        d.deserialize_option(Fold)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    #[serde(default)]
    pub node: String,
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    pub status: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    #[serde(default)]
    pub service_name: String,
}

/// What a watch delivery held, once parsed.
#[derive(Debug)]
pub struct Parsed {
    pub health: Vec<ServiceHealth>,
    /// Service IDs that are not process fids (logged and ignored).
    pub ignored: Vec<String>,
    /// Node checks (serfHealth, node maintenance): (node, all passing).
    pub nodes: Vec<(String, bool)>,
    pub kind: PayloadKind,
}

/// What kind of payload it was (what it covers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    /// Service-health entries (`{Node, Service, Checks}`), all of this service name when they
    /// agree on one.
    Service(Option<String>),
    /// A checks list: every check of the datacenter.
    Checks,
    /// A keyprefix body (KV entries): nothing about health.
    Keys,
    /// `null` or `[]`: an empty snapshot of whatever the watch covers.
    Empty,
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
#[error("malformed health payload: {0}")]
pub struct PayloadError(pub String);

/// A keyprefix watch entry (KV): only its key matters here.
#[derive(Deserialize)]
struct KeyOnly {
    #[serde(rename = "Key")]
    key: String,
}

/// Parses a `service` watch body (or a `/v1/health/service` answer), a `checks` watch body,
/// or a keyprefix body (recognised and ignored). The common shape is decoded straight into
/// typed entries; the others are tried only when that fails.
pub fn parse_payload(body: &[u8]) -> Result<Parsed, PayloadError> {
    // Validating UTF-8 once for the whole body is cheaper than string by string.
    let text = std::str::from_utf8(body)
        .map_err(|e| PayloadError(format!("the body is not UTF-8 ({e})")))?;
    let entries_err = match serde_json::from_str::<Option<Vec<HealthEntry>>>(text) {
        Ok(entries) => return Ok(from_entries(&entries.unwrap_or_default())),
        Err(e) => e,
    };
    if let Ok(checks) = serde_json::from_str::<Vec<Check>>(text) {
        if !checks.is_empty() {
            return Ok(from_checks(&checks));
        }
    }
    if let Ok(keys) = serde_json::from_str::<Vec<KeyOnly>>(text) {
        return Ok(Parsed {
            health: vec![],
            ignored: keys.into_iter().map(|k| k.key).collect(),
            nodes: vec![],
            kind: PayloadKind::Keys,
        });
    }
    Err(PayloadError(entries_err.to_string()))
}

/// What hax keeps of one `{Node, Service, Checks}` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryFacts {
    /// The Consul ServiceID (a process fid for Motr processes).
    pub id: String,
    /// The service name.
    pub service: String,
    /// The node name.
    pub node: String,
    /// Every check of the entry is passing.
    pub all_passing: bool,
    /// The node's checks (no ServiceID) are passing.
    pub node_passing: bool,
}

impl From<&HealthEntry<'_>> for EntryFacts {
    fn from(e: &HealthEntry<'_>) -> EntryFacts {
        EntryFacts {
            id: e.service.id.to_string(),
            service: e.service.service.to_string(),
            node: e.node.node.to_string(),
            all_passing: e.checks.all_passing,
            node_passing: e.checks.node_passing,
        }
    }
}

/// One entry's facts, from its JSON text (an element of a `service` payload).
pub fn entry_facts(json: &str) -> Result<EntryFacts, serde_json::Error> {
    serde_json::from_str::<HealthEntry>(json).map(|e| EntryFacts::from(&e))
}

fn from_entries(entries: &[HealthEntry]) -> Parsed {
    let facts: Vec<EntryFacts> = entries.iter().map(EntryFacts::from).collect();
    from_facts(&facts)
}

/// The health a `service` payload's entries give: a service instance is healthy when every
/// check of its entry is passing.
pub fn from_facts(facts: &[EntryFacts]) -> Parsed {
    let mut out = Parsed {
        health: Vec::with_capacity(facts.len()),
        ignored: vec![],
        nodes: vec![],
        kind: PayloadKind::Empty,
    };
    let mut name: Option<&str> = None;
    let mut one_name = true;
    let mut nodes: BTreeMap<&str, bool> = BTreeMap::new();
    for e in facts {
        match name {
            None => name = Some(&e.service),
            Some(n) if n != e.service => one_name = false,
            _ => {}
        }
        *nodes.entry(&e.node).or_insert(true) &= e.node_passing;
        match Fid::parse_process_id(&e.id) {
            Ok(fid) if fid.is_process() => out.health.push(ServiceHealth {
                process: fid,
                service_name: e.service.clone(),
                node: e.node.clone(),
                healthy: e.all_passing,
                node_healthy: e.node_passing,
            }),
            _ => out.ignored.push(e.id.clone()),
        }
    }
    if !facts.is_empty() {
        out.kind = PayloadKind::Service(name.filter(|_| one_name).map(str::to_string));
    }
    out.nodes = nodes
        .into_iter()
        .map(|(n, ok)| (n.to_string(), ok))
        .collect();
    out
}

/// A `checks` watch lists every check of the datacenter: group them per service instance,
/// adding the node's serfHealth to each.
pub fn from_checks(checks: &[Check]) -> Parsed {
    let node_ok: BTreeMap<&str, bool> =
        checks
            .iter()
            .filter(|c| c.service_id.is_empty())
            .fold(BTreeMap::new(), |mut m, c| {
                let e = m.entry(c.node.as_str()).or_insert(true);
                *e &= c.status == "passing";
                m
            });
    let mut per: BTreeMap<(&str, &str), (String, bool)> = BTreeMap::new();
    for c in checks.iter().filter(|c| !c.service_id.is_empty()) {
        let e = per
            .entry((c.node.as_str(), c.service_id.as_str()))
            .or_insert((c.service_name.clone(), true));
        e.1 &= c.status == "passing";
    }
    let mut out = Parsed {
        health: vec![],
        ignored: vec![],
        nodes: node_ok.iter().map(|(n, ok)| (n.to_string(), *ok)).collect(),
        kind: PayloadKind::Checks,
    };
    for ((node, id), (name, ok)) in per {
        match Fid::parse_process_id(id) {
            Ok(fid) if fid.is_process() => out.health.push(ServiceHealth {
                process: fid,
                service_name: name,
                node: node.to_string(),
                healthy: ok && node_ok.get(node).copied().unwrap_or(true),
                node_healthy: node_ok.get(node).copied().unwrap_or(true),
            }),
            _ => out.ignored.push(id.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = format!(
            "{}/tests/fixtures/consul-watch/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {p}: {e}"))
    }

    #[test]
    fn a_critical_ios_check_makes_only_that_instance_unhealthy() {
        let p = parse_payload(&fixture("22-service-ios-step2-ios-0xc-critical.json")).unwrap();
        let by: BTreeMap<String, bool> = p
            .health
            .iter()
            .map(|h| (h.process.to_string(), h.healthy))
            .collect();
        assert_eq!(by.get("0x7200000000000001:0xc"), Some(&false));
        assert_eq!(by.get("0x7200000000000001:0xf"), Some(&true));
    }

    #[test]
    fn a_warning_is_not_passing() {
        let p = parse_payload(&fixture("24-service-ios-step3-ios-0xc-warning.json")).unwrap();
        assert!(p
            .health
            .iter()
            .any(|h| h.process.to_string() == "0x7200000000000001:0xc" && !h.healthy));
    }

    #[test]
    fn checks_payloads_are_grouped_per_service_instance() {
        let p = parse_payload(&fixture("21-checks-step2-ios-0xc-critical.json")).unwrap();
        let bad: Vec<String> = p
            .health
            .iter()
            .filter(|h| !h.healthy)
            .map(|h| h.process.to_string())
            .collect();
        assert_eq!(bad, vec!["0x7200000000000001:0xc".to_string()]);
        assert_eq!(p.health.len(), 4);
    }

    #[test]
    fn keyprefix_payloads_are_recognised_and_ignored() {
        let p = parse_payload(&fixture("46-keyprefix-eq-kv6-eq-1.json")).unwrap();
        assert!(p.health.is_empty());
        assert_eq!(p.ignored, vec!["eq/1".to_string()]);
    }

    #[test]
    fn null_and_empty_arrays_are_empty_snapshots() {
        assert!(parse_payload(b"null").unwrap().health.is_empty());
        assert!(parse_payload(b"[]").unwrap().health.is_empty());
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for bad in [&b"{"[..], b"{}", b"[1,2]", b"[{\"Node\":1}]", b"\xff\xfe"] {
            assert!(
                parse_payload(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The benchmarks' synthetic payloads (the test kit's) are what a watch posts.
    #[test]
    fn synthetic_payloads_parse_as_health_with_fids() {
        use hax_testkit::payload::{entry_fid, health_payload, synthetic};
        let body = synthetic(3, "srvnode-1", 0x100);
        let p = parse_payload(&body).unwrap();
        assert_eq!(p.health.len(), 3);
        assert!(p.ignored.is_empty());
        assert!(p.health.iter().all(|h| h.healthy && h.node_healthy));
        assert_eq!(p.health[2].process, Fid::typed(b'r', 1, 0x102));
        let f = entry_fid(0x100, 1);
        let crit = health_payload("n", "ios", &[entry_fid(0x100, 0), f], &[f], 5);
        let p = parse_payload(&crit).unwrap();
        assert_eq!(
            p.health.iter().map(|h| h.healthy).collect::<Vec<_>>(),
            vec![true, false]
        );
    }

    #[test]
    fn a_payload_says_what_it_covers_and_carries_the_node_checks() {
        let p = parse_payload(&fixture("22-service-ios-step2-ios-0xc-critical.json")).unwrap();
        assert_eq!(p.kind, PayloadKind::Service(Some("ios".into())));
        assert_eq!(p.nodes, vec![("srvnode-1".to_string(), true)]);
        let c = parse_payload(&fixture("21-checks-step2-ios-0xc-critical.json")).unwrap();
        assert_eq!(c.kind, PayloadKind::Checks);
        assert_eq!(c.nodes, vec![("srvnode-1".to_string(), true)]);
        assert_eq!(parse_payload(b"[]").unwrap().kind, PayloadKind::Empty);
        assert_eq!(
            parse_payload(&fixture("46-keyprefix-eq-kv6-eq-1.json"))
                .unwrap()
                .kind,
            PayloadKind::Keys
        );
    }
}
