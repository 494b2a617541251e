//! The clusters the tests and benchmarks configure, and the single-node cluster most tests run.
//!
//! - [`NodeDef`]: one node of a configuration, laid out by one rule (node `i`: fids offset by
//!   `0x10 * i`), registered as `hax bootstrap` registers it ([`NodeDef::register`]: services
//!   with passing TTL checks, the `m0conf/` tree with the same keys and values);
//! - [`register_cluster`]: the single-node cluster (hax, a confd, two IO servers);
//! - [`watch_config`]: an agent's watches POSTing to hax;
//! - [`SingleNode`]: a dedicated Consul agent, the cluster registered, the real `hax` running
//!   and ready, simulated Motr processes created on demand.
use std::time::Duration;

use hax_fid::Fid;
use hax_sim::{SimConfig, SimProcess, Timeouts};
use serde_json::{json, Value};

use crate::client::ConsulClient;
use crate::consul::ConsulAgent;
use crate::daemon::HaxProc;
use crate::process::{free_port, wait_until};

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

/// Consul agent + registered cluster + running hax.
pub struct SingleNode {
    pub hax: HaxProc,
    pub ports: ClusterPorts,
    pub agent: ConsulAgent,
}

impl SingleNode {
    /// Starts everything and waits until hax is ready.
    pub fn start() -> SingleNode {
        Self::start_with(&[])
    }

    /// A single node whose agent's watches point at a port nobody listens on: hax hears about
    /// health only from what a test POSTs (or from its own reconciliation).
    pub fn start_unwatched(extra: &[&str]) -> SingleNode {
        Self::start_watching(free_port(), free_port(), None, extra)
    }

    /// Starts everything with extra hax arguments (`--watch-secret S` also goes into the
    /// agent's watch headers).
    pub fn start_with(extra: &[&str]) -> SingleNode {
        let secret = extra
            .windows(2)
            .find(|w| w[0] == "--watch-secret")
            .map(|w| w[1]);
        let port = free_port();
        Self::start_watching(port, port, secret, extra)
    }

    /// Starts everything with extra environment variables for hax.
    pub fn start_with_env(env: &[(&str, &str)]) -> SingleNode {
        let port = free_port();
        Self::start_watching_env(port, port, None, &[], env)
    }

    /// The agent's watches POST to `watch_port`; hax's HTTP server listens on `http_port`.
    fn start_watching(
        watch_port: u16,
        http_port: u16,
        secret: Option<&str>,
        extra: &[&str],
    ) -> SingleNode {
        Self::start_watching_env(watch_port, http_port, secret, extra, &[])
    }

    fn start_watching_env(
        watch_port: u16,
        http_port: u16,
        secret: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> SingleNode {
        let agent = ConsulAgent::dev_with_json(&watch_config_with_secret(watch_port, secret));
        let ports = ClusterPorts::allocate();
        register_cluster(agent.client(), agent.node_name(), &ports);
        let hax = HaxProc::spawn_env(
            &agent.http_addr(),
            agent.node_name(),
            http_port,
            ports.hax,
            agent.dir(),
            extra,
            env,
        );
        let n = SingleNode { hax, ports, agent };
        if let Err(e) = n.hax.wait_ready(Duration::from_secs(30)) {
            panic!("{e}");
        }
        n
    }

    pub fn client(&self) -> &ConsulClient {
        self.agent.client()
    }

    /// A simulated process configured like the cluster's (services, a pool, a GET of its
    /// configuration objects), not yet booted.
    pub fn sim(&self, fid: Fid) -> SimProcess {
        SimProcess::connect(&self.hax.endpoint(), self.sim_config(fid))
            .expect("connect simulated process")
    }

    pub fn sim_config(&self, fid: Fid) -> SimConfig {
        let mut cfg = SimConfig::new(fid);
        let (port, services): (u16, Vec<(Fid, u64)>) = match fid {
            f if f == CONFD => (self.ports.confd, vec![(CONFD_SVC, 3), (CONFD_RMS, 4)]),
            f if f == IOS1 => (self.ports.ios1, vec![(IOS1_SVC, 2)]),
            f if f == IOS2 => (self.ports.ios2, vec![(IOS2_SVC, 2)]),
            _ => (free_port(), vec![]),
        };
        cfg.endpoint = format!("{EP}{port}");
        cfg.services = services;
        cfg.pools = vec![POOL];
        cfg.get_fids = vec![
            CONFD,
            CONFD_SVC,
            CONFD_RMS,
            IOS1,
            IOS2,
            NODE_FID,
            Fid::typed(b't', 1, 0),
            POOL,
        ];
        cfg.timeouts = Timeouts {
            reply: Duration::from_secs(15),
            entrypoint: Duration::from_secs(30),
            ..Timeouts::default()
        };
        cfg
    }

    /// The decoded `processes/<fid>` record.
    pub fn process_record(&self, fid: Fid) -> Option<Value> {
        let v = self.client().kv_get(&format!("processes/{fid}")).ok()??;
        serde_json::from_slice(&v).ok()
    }

    /// Waits until `processes/<fid>` has the given state name suffix (e.g. "DTM_RECOVERED").
    pub fn wait_process_state(&self, fid: Fid, state: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.process_record(fid)
                .and_then(|v| {
                    v.get("state")
                        .and_then(|s| s.as_str())
                        .map(|s| s.ends_with(state))
                })
                .filter(|ok| *ok)
        })
        .is_some()
    }
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
