//! The clusters the tests and benchmarks configure (the single-node cluster most tests run is
//! [`SingleNode`](crate::SingleNode)).
//!
//! - [`NodeDef`]: one node of a configuration, laid out by one rule (node `i`: fids offset by
//!   `0x10 * i`), registered as `hax bootstrap` registers it ([`NodeDef::register`]: services
//!   with passing TTL checks, the `m0conf/` tree with the same keys and values);
//! - [`register_cluster`]: the single-node cluster (hax, a confd, two IO servers);
//! - [`watch_config`]: an agent's watches POSTing to hax.
use hax_fid::Fid;
use serde_json::{json, Value};

use crate::client::ConsulClient;
use crate::process::free_port;

/// The address part of every endpoint on this machine (the port follows).
pub const EP: &str = "inet:tcp:127.0.0.1@";
/// The state `hax bootstrap` writes for every object of the configuration tree.
pub const INITIAL_STATE: &str = "M0_NC_UNKNOWN";

// The single-node cluster: node 0 of the layout.
pub const NODE_FID: Fid = Fid::typed(b'n', 1, 2);
pub const HAX: Fid = Fid::typed(b'r', 1, 6);
pub const CONFD: Fid = Fid::typed(b'r', 1, 9);
pub const CONFD_SVC: Fid = Fid::typed(b's', 1, 0xa);
pub const CONFD_RMS: Fid = Fid::typed(b's', 1, 0xb);
pub const IOS1: Fid = Fid::typed(b'r', 1, 0xc);
pub const IOS1_SVC: Fid = Fid::typed(b's', 1, 0xd);
pub const IOS2: Fid = Fid::typed(b'r', 1, 0xf);
pub const IOS2_SVC: Fid = Fid::typed(b's', 1, 0x10);
/// The pool of the simulated processes' failure-vector requests.
pub const POOL: Fid = Fid::typed(b'o', 1, 4);

/// One process of a node: its Consul service (ID = fid, Name = `name`) and its configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessDef {
    pub fid: Fid,
    /// "hax", "confd" or "ios": the Consul service name and the configuration's process name.
    pub name: String,
    /// The port of its endpoint (`inet:tcp:127.0.0.1@<port>`).
    pub port: u16,
    /// (service fid, service type such as "ha", "rms", "confd", "ios").
    pub services: Vec<(Fid, String)>,
}

impl ProcessDef {
    pub fn endpoint(&self) -> String {
        format!("{EP}{}", self.port)
    }
}

/// One node of a configuration. Node `i` is laid out with every key offset by `0x10 * i`:
/// node `n:0x2`; hax `r:0x6` (services ha `s:0x7`, rms `s:0x8`); confd `r:0x9` (confd `s:0xa`,
/// rms `s:0xb`); IO servers `r:0xc`, `r:0xf`, ... (one ios service each, key + 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDef {
    /// The Consul node name.
    pub name: String,
    pub fid: Fid,
    pub processes: Vec<ProcessDef>,
    base: u64,
}

impl NodeDef {
    /// Node `index`, without processes yet.
    pub fn new(index: usize, name: &str) -> NodeDef {
        let base = 0x10 * index as u64;
        NodeDef {
            name: name.to_string(),
            fid: Fid::typed(b'n', 1, 2 + base),
            processes: Vec::new(),
            base,
        }
    }

    fn with(mut self, key: u64, name: &str, port: u16, services: &[(u64, &str)]) -> NodeDef {
        let k = self.base + key;
        self.processes.push(ProcessDef {
            fid: Fid::typed(b'r', 1, k),
            name: name.to_string(),
            port,
            services: services
                .iter()
                .map(|(s, t)| (Fid::typed(b's', 1, k + s), t.to_string()))
                .collect(),
        });
        self
    }

    /// Adds the node's hax.
    pub fn with_hax(self, port: u16) -> NodeDef {
        self.with(6, "hax", port, &[(1, "ha"), (2, "rms")])
    }

    /// Adds the node's confd.
    pub fn with_confd(self, port: u16) -> NodeDef {
        self.with(9, "confd", port, &[(1, "confd"), (2, "rms")])
    }

    /// Adds an IO server (the first at `r:0xc`, the next 3 keys further).
    pub fn with_ios(self, port: u16) -> NodeDef {
        let n = self.processes.iter().filter(|p| p.name == "ios").count() as u64;
        self.with(0xc + 3 * n, "ios", port, &[(1, "ios")])
    }

    /// The first process named `name`.
    pub fn process(&self, name: &str) -> Option<&ProcessDef> {
        self.processes.iter().find(|p| p.name == name)
    }

    /// The service of type `kind` of the first process named `process`.
    pub fn service(&self, process: &str, kind: &str) -> Option<Fid> {
        let p = self.process(process)?;
        p.services.iter().find(|(_, t)| t == kind).map(|(f, _)| *f)
    }

    /// The node's `m0conf/` entries (node, processes, services), as `hax bootstrap` writes them.
    pub fn tree(&self) -> Vec<(String, Value)> {
        let base = format!("m0conf/nodes/{}", self.fid);
        let mut out = vec![(
            base.clone(),
            json!({"name": self.name, "state": INITIAL_STATE}),
        )];
        for p in &self.processes {
            let key = format!("{base}/processes/{}", p.fid);
            out.push((
                key.clone(),
                json!({"name": p.name, "endpoint": p.endpoint(), "state": INITIAL_STATE}),
            ));
            for (s, t) in &p.services {
                out.push((
                    format!("{key}/services/{s}"),
                    json!({"type": t, "state": INITIAL_STATE}),
                ));
            }
        }
        out
    }

    /// Registers the node's services on `c` (its own agent) with passing TTL checks
    /// (`service:<fid>`), then writes its configuration tree.
    pub fn register(&self, c: &ConsulClient) -> Result<(), String> {
        for p in &self.processes {
            c.register_service(&json!({"ID": p.fid.to_string(), "Name": p.name,
                "Address": EP, "Port": p.port,
                "Check": {"CheckID": format!("service:{}", p.fid), "TTL": "3600s", "Status": "passing"}}))?;
        }
        for (k, v) in self.tree() {
            c.kv_put(&k, v.to_string())?;
        }
        Ok(())
    }
}

/// Endpoint ports of the single-node cluster's processes.
#[derive(Clone, Copy, Debug)]
pub struct ClusterPorts {
    pub hax: u16,
    pub confd: u16,
    pub ios1: u16,
    pub ios2: u16,
}

impl ClusterPorts {
    pub fn allocate() -> ClusterPorts {
        ClusterPorts {
            hax: free_port(),
            confd: free_port(),
            ios1: free_port(),
            ios2: free_port(),
        }
    }
}

/// The single-node cluster on node `node`: hax, a confd and two IO servers.
pub fn single_node(node: &str, ports: &ClusterPorts) -> NodeDef {
    NodeDef::new(0, node)
        .with_hax(ports.hax)
        .with_confd(ports.confd)
        .with_ios(ports.ios1)
        .with_ios(ports.ios2)
}

/// Registers the single-node cluster: services with TTL checks (passing) and the m0conf tree.
pub fn register_cluster(c: &ConsulClient, node: &str, ports: &ClusterPorts) {
    single_node(node, ports)
        .register(c)
        .unwrap_or_else(|e| panic!("register the cluster: {e}"));
}

/// The JSON agent configuration: service watches for confd and ios POSTing to hax.
pub fn watch_config(hax_http_port: u16) -> Value {
    watch_config_with_secret(hax_http_port, None)
}

/// The same, with the shared secret header the watches send (JSON: a one-element header
/// list in HCL makes the agent refuse to start).
pub fn watch_config_with_secret(hax_http_port: u16, secret: Option<&str>) -> Value {
    let watch = |svc: &str| {
        let mut cfg = json!({"path": format!("http://127.0.0.1:{hax_http_port}/watcher/service/{svc}"),
                             "method": "POST", "timeout": "10s"});
        if let Some(s) = secret {
            cfg["header"] = json!({"X-Hax-Secret": [s]});
        }
        json!({"type": "service", "service": svc, "handler_type": "http", "http_handler_config": cfg})
    };
    json!({"watches": [watch("confd"), watch("ios")]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_single_node_layout_is_node_zero_of_the_rule() {
        let ports = ClusterPorts {
            hax: 1,
            confd: 2,
            ios1: 3,
            ios2: 4,
        };
        let n = single_node("n", &ports);
        assert_eq!(n.fid, NODE_FID);
        let fids: Vec<Fid> = n.processes.iter().map(|p| p.fid).collect();
        assert_eq!(fids, [HAX, CONFD, IOS1, IOS2]);
        assert_eq!(
            n.process("confd").unwrap().services,
            [(CONFD_SVC, "confd".into()), (CONFD_RMS, "rms".into())]
        );
        assert_eq!(n.processes[3].services, [(IOS2_SVC, "ios".into())]);
        assert_eq!(
            n.tree()[0],
            (
                "m0conf/nodes/0x6e00000000000001:0x2".to_string(),
                json!({"name": "n", "state": "M0_NC_UNKNOWN"})
            )
        );
        let second = NodeDef::new(1, "m").with_hax(5);
        assert_eq!(second.processes[0].fid, Fid::typed(b'r', 1, 0x16));
        assert_eq!(second.processes[0].services[1].0, Fid::typed(b's', 1, 0x18));
    }
}
