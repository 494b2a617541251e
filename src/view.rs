//! The cluster as hax knows it, cached in memory and kept fresh by FidResolver's blocking
//! queries: hax's identity, the confds, the RC leader's node and the configuration tree.
//! Entrypoint replies are computed from this view alone (no Consul read per request).
use crate::fid::Fid;
use crate::motr::EntrypointReply;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Who this hax is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub node: String,
    /// The node's UUID as Consul knows it (the catalog's node ID); Motr's node UUID.
    pub node_uuid: Option<String>,
    pub process: Fid,
    pub ha_service: Fid,
    pub rm_service: Fid,
    pub endpoint: String,
}

/// A registered confd process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confd {
    pub node: String,
    pub fid: Fid,
    pub endpoint: String,
}

/// One process of the configuration tree (`m0conf/nodes/<node>/processes/<process>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessConf {
    pub node: Fid,
    pub node_name: String,
    pub name: String,
    pub endpoint: String,
    /// (service fid, service type such as "confd", "rms", "ha", "ios", "dtm0").
    pub services: Vec<(Fid, String)>,
}

/// A node's hardware in the configuration tree: the enclosure and controller it is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeHardware {
    pub enclosure: Option<Fid>,
    pub controller: Option<Fid>,
}

/// A storage device of an IO service
/// (`m0conf/nodes/<node>/processes/<process>/services/<service>/sdevs/<sdev>`) and the drive
/// it sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdevConf {
    pub service: Fid,
    pub drive: Option<Fid>,
}

/// The configuration tree written by the bootstrap under `m0conf/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigTree {
    pub nodes: BTreeMap<Fid, String>,
    pub hardware: BTreeMap<Fid, NodeHardware>,
    pub processes: BTreeMap<Fid, ProcessConf>,
    pub sdevs: BTreeMap<Fid, SdevConf>,
}

impl ConfigTree {
    /// Builds the tree from `m0conf/` KV entries (key, decoded value); bad entries are
    /// skipped with a log line.
    pub fn from_kv(entries: &[(String, String)]) -> ConfigTree {
        let mut t = ConfigTree::default();
        let json = |v: &str| {
            serde_json::from_str::<serde_json::Value>(v).unwrap_or(serde_json::Value::Null)
        };
        let field = |v: &serde_json::Value, k: &str| {
            v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string()
        };
        for (key, value) in entries {
            let parts: Vec<&str> = key.trim_end_matches('/').split('/').collect();
            let fid = |i: usize| parts.get(i).and_then(|p| p.parse::<Fid>().ok());
            match parts.as_slice() {
                ["m0conf", "nodes", _] => {
                    if let Some(n) = fid(2) {
                        let v = json(value);
                        t.nodes.insert(n, field(&v, "name"));
                        let hw = NodeHardware {
                            enclosure: field(&v, "enclosure").parse().ok(),
                            controller: field(&v, "controller").parse().ok(),
                        };
                        if hw != NodeHardware::default() {
                            t.hardware.insert(n, hw);
                        }
                    }
                }
                ["m0conf", "nodes", _, "processes", _, "services", _, "sdevs", _] => {
                    if let (Some(s), Some(d)) = (fid(6), fid(8)) {
                        t.sdevs.insert(
                            d,
                            SdevConf {
                                service: s,
                                drive: field(&json(value), "drive").parse().ok(),
                            },
                        );
                    }
                }
                ["m0conf", "nodes", _, "processes", _] => {
                    if let (Some(n), Some(p)) = (fid(2), fid(4)) {
                        let v = json(value);
                        let e = t.processes.entry(p).or_default();
                        e.node = n;
                        e.name = field(&v, "name");
                        e.endpoint = field(&v, "endpoint");
                    }
                }
                ["m0conf", "nodes", _, "processes", _, "services", _] => {
                    if let (Some(n), Some(p), Some(s)) = (fid(2), fid(4), fid(6)) {
                        let e = t.processes.entry(p).or_default();
                        e.node = n;
                        e.services.push((s, field(&json(value), "type")));
                    }
                }
                _ => log::debug!("config tree: key {key} not understood; skipped"),
            }
        }
        for p in t.processes.values_mut() {
            p.node_name = t.nodes.get(&p.node).cloned().unwrap_or_default();
            p.services.sort();
        }
        t
    }

    pub fn services_of(&self, process: Fid) -> Vec<Fid> {
        self.processes
            .get(&process)
            .map(|p| p.services.iter().map(|(s, _)| *s).collect())
            .unwrap_or_default()
    }

    pub fn service_of_type(&self, process: Fid, ty: &str) -> Option<Fid> {
        self.processes
            .get(&process)?
            .services
            .iter()
            .find(|(_, t)| t == ty)
            .map(|(s, _)| *s)
    }

    /// The process a service belongs to.
    pub fn process_of_service(&self, service: Fid) -> Option<Fid> {
        self.processes
            .iter()
            .find(|(_, p)| p.services.iter().any(|(s, _)| *s == service))
            .map(|(f, _)| *f)
    }

    pub fn node_name_of(&self, node: Fid) -> Option<&str> {
        self.nodes.get(&node).map(|s| s.as_str())
    }
}

/// Everything FidResolver keeps fresh.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    pub identity: Option<Identity>,
    pub confds: Option<Vec<Confd>>,
    pub leader_node: Option<String>,
    /// The node the `leader` key names even while no session holds it (the last leader):
    /// what a reconnecting process is told while a new leader is being elected.
    pub last_leader_node: Option<String>,
    pub config: ConfigTree,
    /// Counts the configuration tree's changes (readers rebuild what they derive from it).
    pub config_generation: u64,
    pub consul_up: bool,
    pub stopping: bool,
}

/// The view shared between FidResolver (writer) and its readers.
pub type SharedView = Arc<RwLock<ClusterView>>;

impl ClusterView {
    /// The entrypoint reply for a process's first request, or why there is none yet.
    pub fn entrypoint(&self) -> Result<EntrypointReply, String> {
        if self.stopping {
            return Ok(EntrypointReply::default());
        }
        if !self.consul_up {
            return Err("Consul is unreachable".into());
        }
        let leader = self
            .leader_node
            .as_deref()
            .ok_or("no RC leader holds the leader key")?;
        self.reply_with_leader(leader)
    }

    /// The entrypoint reply for a request that is not a process's first (it reconnects to
    /// HA, e.g. after hax restarted): from what hax knows, the last leader included, even
    /// when Consul is unreachable or no session holds the `leader` key right now. Motr kills a
    /// reconnecting process that is told to ask again, so this never says "not yet" while
    /// something true can be said.
    pub fn reconnect_entrypoint(&self) -> Result<EntrypointReply, String> {
        if self.stopping {
            return Ok(EntrypointReply::default());
        }
        let leader = self
            .leader_node
            .as_deref()
            .or(self.last_leader_node.as_deref())
            .ok_or("no RC leader is known yet")?;
        self.reply_with_leader(leader)
    }

    fn reply_with_leader(&self, leader: &str) -> Result<EntrypointReply, String> {
        let confds = match &self.confds {
            Some(c) if !c.is_empty() => c,
            _ => return Err("no confd service is registered".into()),
        };
        let principal = confds
            .iter()
            .find(|c| c.node == leader)
            .ok_or_else(|| format!("no confd on the leader's node {leader}"))?;
        let rm_fid = self
            .config
            .service_of_type(principal.fid, "rms")
            .ok_or_else(|| {
                format!(
                    "the configuration tree has no rms service for confd {}",
                    principal.fid
                )
            })?;
        Ok(EntrypointReply {
            rc: 0,
            confds: confds.iter().map(|c| (c.fid, c.endpoint.clone())).collect(),
            quorum: (confds.len() / 2 + 1) as u32,
            rm_fid,
            rm_ep: principal.endpoint.clone(),
        })
    }
}

/// hax's HA service fid by the seed RFC's rule: type byte 0x73, key + 1.
pub fn derived_ha(process: Fid) -> Fid {
    Fid::typed(b's', process.container, process.key + 1)
}

/// hax's RM service fid by the seed RFC's rule: HA key + 1.
pub fn derived_rm(process: Fid) -> Fid {
    Fid::typed(b's', process.container, process.key + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> ConfigTree {
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        ConfigTree::from_kv(&[
            kv("m0conf/nodes/0x6e00000000000001:0x2", r#"{"name":"node-1"}"#),
            kv("m0conf/nodes/0x6e00000000000001:0x2/processes/0x7200000000000001:0x9", r#"{"name":"confd","endpoint":"inet:tcp:127.0.0.1@22002"}"#),
            kv("m0conf/nodes/0x6e00000000000001:0x2/processes/0x7200000000000001:0x9/services/0x7300000000000001:0xa", r#"{"type":"confd"}"#),
            kv("m0conf/nodes/0x6e00000000000001:0x2/processes/0x7200000000000001:0x9/services/0x7300000000000001:0xb", r#"{"type":"rms"}"#),
            kv("m0conf/garbage/key", "{"),
        ])
    }

    #[test]
    fn entrypoint_carries_confds_quorum_and_the_leaders_rm() {
        let mut v = ClusterView {
            consul_up: true,
            config: tree(),
            ..Default::default()
        };
        let confd = |n: &str, k| Confd {
            node: n.into(),
            fid: Fid::typed(b'r', 1, k),
            endpoint: format!("ep-{k}"),
        };
        v.confds = Some(vec![
            confd("node-1", 9),
            confd("node-2", 20),
            confd("node-3", 30),
        ]);
        assert!(v.entrypoint().unwrap_err().contains("leader"));
        v.leader_node = Some("node-1".into());
        let r = v.entrypoint().unwrap();
        assert_eq!(r.quorum, 2);
        assert_eq!(r.confds.len(), 3);
        assert_eq!(r.rm_fid, Fid::typed(b's', 1, 0xb));
        assert_eq!(r.rm_ep, "ep-9");
        v.leader_node = Some("node-2".into());
        assert!(
            v.entrypoint().unwrap_err().contains("rms"),
            "no rms known for node-2's confd"
        );
        v.stopping = true;
        assert_eq!(v.entrypoint().unwrap(), EntrypointReply::default());
    }

    #[test]
    fn config_tree_maps_services_both_ways_and_skips_garbage() {
        let t = tree();
        let p = Fid::typed(b'r', 1, 9);
        assert_eq!(t.services_of(p).len(), 2);
        assert_eq!(t.process_of_service(Fid::typed(b's', 1, 0xa)), Some(p));
        assert_eq!(t.processes[&p].node_name, "node-1");
    }

    #[test]
    fn ha_and_rm_fids_follow_the_seed_rfc_rule() {
        let p = Fid::typed(b'r', 1, 0x7d);
        assert_eq!(derived_ha(p).to_string(), "0x7300000000000001:0x7e");
        assert_eq!(derived_rm(p).to_string(), "0x7300000000000001:0x7f");
    }
}
