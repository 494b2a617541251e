//! The plan: everything the bootstrap writes, computed from a description alone (pure and
//! deterministic: the same description gives the same fids, keys and registrations).
//!
//! Fids: nodes `n`, processes `r`, services `s`, all in container 1, from one counter walking
//! the description in order, so keys are unique across types. Key 1 is reserved (profile);
//! each node takes 4 keys (its own and 3 reserved for its hardware objects); each process
//! takes 3 (the process, then its services at +1 and +2). hax's HA service is process key + 1
//! and its RM service key + 2: the seed RFC's rule FidResolver falls back on. The single-node
//! example thus gets node 0x2, hax 0x6 (HA 0x7, RM 0x8), confd 0x9 (0xa, 0xb), IO servers 0xc
//! and 0xf, as in `scripts/demo`. A node's enclosure `e` and controller `c` take the node's
//! key + 1 and + 2. What came later is numbered from its process's key P, above anything the
//! counter reaches (P << 20): a DTM0 service `s` at P << 20, and drive i of an IO server its
//! sdev `d` at (P << 20) + 2i + 1 and drive `k` at + 2i + 2. Adding a process, a drive or a
//! DTM0 service thus moves no fid that existed before.
use super::description::{
    CheckKind, CheckSpec, Description, ProcessKind, DEFAULT_SCRIPT_INTERVAL, DEFAULT_TTL,
};
use crate::fid::Fid;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The state written with every configuration object.
pub const INITIAL_STATE: &str = "M0_NC_UNKNOWN";

/// Catalog service names the bootstrap owns (a registered service of these names that the
/// plan does not have is "removed").
pub const OWNED_SERVICE_NAMES: [&str; 4] = ["hax", "confd", "ios", "client"];

/// What kind of process a planned process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlannedKind {
    Hax,
    Motr(ProcessKind),
}

impl PlannedKind {
    pub fn service_name(&self) -> &'static str {
        match self {
            PlannedKind::Hax => "hax",
            PlannedKind::Motr(k) => k.service_name(),
        }
    }

    /// Types of the Motr services this process carries (at process key + 1, + 2).
    fn service_types(&self) -> &'static [&'static str] {
        match self {
            PlannedKind::Hax => &["ha", "rms"],
            PlannedKind::Motr(ProcessKind::Confd) => &["confd", "rms"],
            PlannedKind::Motr(ProcessKind::Ios) => &["ios", "rms"],
            PlannedKind::Motr(ProcessKind::Client) => &["rms"],
        }
    }
}

/// The whole plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Where hax learns health from; the agents get watches only for `watches`.
    pub health_from: crate::actors::health_monitor::HealthFrom,
    pub nodes: Vec<NodePlan>,
    /// `m0conf/...` key -> JSON value.
    pub kv: BTreeMap<String, String>,
    /// Catalog registrations, in description order.
    pub services: Vec<ServiceReg>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    pub name: String,
    pub address: String,
    pub fid: Fid,
    pub consul_http_port: u16,
    pub hax_http_port: u16,
    /// hax first, then the description's processes in order.
    pub processes: Vec<ProcessPlan>,
}

impl NodePlan {
    /// This node's agent HTTP URL as the description gives it.
    pub fn agent_url(&self) -> String {
        format!("http://{}:{}", self.address, self.consul_http_port)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessPlan {
    pub name: String,
    pub kind: PlannedKind,
    pub fid: Fid,
    pub port: u16,
    pub endpoint: String,
    /// (service fid, service type).
    pub services: Vec<(Fid, String)>,
    /// Per drive: its sdev (on the IO service), its drive object and its device path.
    pub sdevs: Vec<(Fid, Fid, String)>,
}

/// The health check of one registered service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckPlan {
    Script {
        args: Vec<String>,
        interval: String,
    },
    /// hax's own service under the `script` kind: hax does not record its own process state
    /// in KV (`hax check` would fail forever), so Consul asks hax's `/healthz` instead.
    Http {
        url: String,
        interval: String,
    },
    Ttl {
        ttl: String,
        initial_status: String,
    },
}

impl CheckPlan {
    /// One line saying what the check is (stored in the service's Meta, so a changed check
    /// shows as a changed service).
    pub fn summary(&self) -> String {
        match self {
            CheckPlan::Script { args, interval } => {
                format!("script every {interval}: {}", args.join(" "))
            }
            CheckPlan::Http { url, interval } => format!("http every {interval}: GET {url}"),
            CheckPlan::Ttl {
                ttl,
                initial_status,
            } => format!("ttl {ttl}, initially {initial_status}"),
        }
    }
}

/// One catalog registration (`PUT /v1/agent/service/register` on the node's agent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceReg {
    pub node: String,
    /// The process fid string.
    pub id: String,
    /// `hax`, `confd`, `ios` or `client`.
    pub name: String,
    /// `inet:tcp:<node address>@` (endpoint = Address + Port).
    pub address: String,
    pub port: u16,
    pub check: CheckPlan,
    /// `process` (the description's name) and `check` (the check's summary).
    pub meta: BTreeMap<String, String>,
}

impl ServiceReg {
    pub fn check_id(&self) -> String {
        format!("service:{}", self.id)
    }

    pub fn endpoint(&self) -> String {
        format!("{}{}", self.address, self.port)
    }

    /// The agent API's service definition.
    pub fn definition(&self) -> Value {
        let check = match &self.check {
            CheckPlan::Script { args, interval } => json!({
                "CheckID": self.check_id(),
                "Name": format!("{} {} alive", self.name, self.id),
                "Args": args,
                "Interval": interval,
            }),
            CheckPlan::Http { url, interval } => json!({
                "CheckID": self.check_id(),
                "Name": format!("{} {} alive", self.name, self.id),
                "HTTP": url,
                "Method": "GET",
                "Interval": interval,
                "Timeout": "1s",
            }),
            CheckPlan::Ttl {
                ttl,
                initial_status,
            } => json!({
                "CheckID": self.check_id(),
                "Name": format!("{} {} alive", self.name, self.id),
                "TTL": ttl,
                "Status": initial_status,
            }),
        };
        json!({
            "ID": self.id,
            "Name": self.name,
            "Address": self.address,
            "Port": self.port,
            "Meta": self.meta,
            "Check": check,
        })
    }
}

/// Computes the plan. The description must be valid ([`Description::parse`] checks it).
pub fn plan(d: &Description) -> Plan {
    let mut last = 1u64; // the last key taken; key 1 is the profile's
    let mut take = move |n: u64| {
        let k = last + 1;
        last += n;
        k
    };
    let mut nodes = Vec::new();
    for n in &d.nodes {
        let node_fid = Fid::typed(b'n', 1, take(4));
        let endpoint_prefix = format!("inet:tcp:{}@", n.address);
        let mut processes = Vec::new();
        let hax = std::iter::once((PlannedKind::Hax, "hax", n.hax.endpoint_port));
        let motr = n
            .processes
            .iter()
            .map(|p| (PlannedKind::Motr(p.kind), p.name.as_str(), p.endpoint_port));
        for (kind, name, port) in hax.chain(motr) {
            let key = take(3);
            let services = kind
                .service_types()
                .iter()
                .enumerate()
                .map(|(j, t)| (Fid::typed(b's', 1, key + 1 + j as u64), t.to_string()))
                .collect();
            processes.push(ProcessPlan {
                name: name.to_string(),
                kind,
                fid: Fid::typed(b'r', 1, key),
                port,
                endpoint: format!("{endpoint_prefix}{port}"),
                services,
                sdevs: Vec::new(),
            });
        }
        nodes.push(NodePlan {
            name: n.name.clone(),
            address: n.address.clone(),
            fid: node_fid,
            consul_http_port: n.consul_http_port,
            hax_http_port: n.hax.http_port,
            processes,
        });
    }
    // What hangs below a process, numbered from its key (moves no fid that existed before).
    for (n, spec) in nodes.iter_mut().zip(&d.nodes) {
        // processes[0] is hax; the description's follow in order.
        for (p, ps) in n.processes.iter_mut().skip(1).zip(&spec.processes) {
            let base = p.fid.key << 20;
            if ps.dtm0 {
                p.services
                    .push((Fid::typed(b's', 1, base), "dtm0".to_string()));
            }
            for (i, path) in ps.drives.iter().enumerate() {
                let key = base + 2 * i as u64 + 1;
                p.sdevs.push((
                    Fid::typed(b'd', 1, key),
                    Fid::typed(b'k', 1, key + 1),
                    path.clone(),
                ));
            }
        }
    }
    let mut kv = BTreeMap::new();
    let mut services = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let node_key = format!("m0conf/nodes/{}", n.fid);
        let hw = |t: u8, k: u64| Fid::typed(t, 1, n.fid.key + k).to_string();
        kv.insert(
            node_key.clone(),
            json!({
                "name": n.name,
                "state": INITIAL_STATE,
                "enclosure": hw(b'e', 1),
                "controller": hw(b'c', 2),
            })
            .to_string(),
        );
        let check = d.check_of(i);
        for p in &n.processes {
            let pkey = format!("{node_key}/processes/{}", p.fid);
            kv.insert(
                pkey.clone(),
                json!({"name": p.name, "endpoint": p.endpoint, "state": INITIAL_STATE}).to_string(),
            );
            for (s, t) in &p.services {
                kv.insert(
                    format!("{pkey}/services/{s}"),
                    json!({"type": t, "state": INITIAL_STATE}).to_string(),
                );
            }
            if let Some((ios, _)) = p.services.iter().find(|(_, t)| t == "ios") {
                for (sdev, drive, path) in &p.sdevs {
                    kv.insert(
                        format!("{pkey}/services/{ios}/sdevs/{sdev}"),
                        json!({"drive": drive.to_string(), "path": path, "state": INITIAL_STATE})
                            .to_string(),
                    );
                }
            }
            let check = check_plan(check, n, p);
            let meta = BTreeMap::from([
                ("process".to_string(), p.name.clone()),
                ("check".to_string(), check.summary()),
            ]);
            services.push(ServiceReg {
                node: n.name.clone(),
                id: p.fid.to_string(),
                name: p.kind.service_name().to_string(),
                address: format!("inet:tcp:{}@", n.address),
                port: p.port,
                check,
                meta,
            });
        }
    }
    Plan {
        health_from: d.health_from,
        nodes,
        kv,
        services,
    }
}

fn check_plan(c: &CheckSpec, n: &NodePlan, process: &ProcessPlan) -> CheckPlan {
    let interval = || {
        c.interval
            .clone()
            .unwrap_or_else(|| DEFAULT_SCRIPT_INTERVAL.to_string())
    };
    match c.kind {
        CheckKind::Script if process.kind == PlannedKind::Hax => CheckPlan::Http {
            url: format!("http://127.0.0.1:{}/healthz", n.hax_http_port),
            interval: interval(),
        },
        CheckKind::Script => CheckPlan::Script {
            args: vec![
                c.hax_bin.clone().unwrap_or_else(|| "hax".to_string()),
                "--consul".to_string(),
                format!("{}:{}", n.address, n.consul_http_port),
                "check".to_string(),
                process.fid.to_string(),
            ],
            interval: interval(),
        },
        CheckKind::Ttl => CheckPlan::Ttl {
            ttl: c.ttl.clone().unwrap_or_else(|| DEFAULT_TTL.to_string()),
            initial_status: c.initial_status.unwrap_or_default().as_str().to_string(),
        },
    }
}

impl Plan {
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The Motr service names present in the plan (those hax watches), sorted.
    pub fn watched_service_names(&self) -> Vec<&'static str> {
        let names: BTreeSet<&'static str> = self
            .nodes
            .iter()
            .flat_map(|n| n.processes.iter())
            .filter(|p| p.kind != PlannedKind::Hax)
            .map(|p| p.kind.service_name())
            .collect();
        names.into_iter().collect()
    }
}

/// The Consul agent configuration fragment (JSON: a one-element `header` list in HCL breaks
/// the agent) for node `node` of the plan: script checks enabled, no update check, and with
/// `health_from: watches` a `service` watch per Motr service name posting to that node's hax
/// (in `node` mode hax reads its own node's checks and needs no watch: the watches' whole
/// snapshots to every node are the O(N²) cost docs/scaling.md removes). `None` if the plan has
/// no such node.
///
/// Script checks: the bootstrap registers services over the HTTP API, and Consul runs script
/// checks registered that way only with `enable_script_checks` (`enable_local_script_checks`
/// covers checks in configuration files alone). Agents here listen on loopback only.
pub fn agent_config_json(plan: &Plan, node: &str) -> Option<Value> {
    let n = plan.node(node)?;
    let wanted = plan.health_from == crate::actors::health_monitor::HealthFrom::Watches;
    let watches: Vec<Value> = plan
        .watched_service_names()
        .into_iter()
        .filter(|_| wanted)
        .map(|name| {
            json!({
                "type": "service",
                "service": name,
                "handler_type": "http",
                "http_handler_config": {
                    "path": format!("http://127.0.0.1:{}/watcher/service/{name}", n.hax_http_port),
                    "method": "POST",
                    "timeout": "10s",
                },
            })
        })
        .collect();
    Some(json!({
        "disable_update_check": true,
        "enable_script_checks": true,
        "watches": watches,
    }))
}

/// Adds the shared secret hax checks (`X-Hax-Secret`) to every watch of an agent
/// configuration made by [`agent_config_json`].
pub fn with_watch_secret(cfg: &mut Value, secret: &str) {
    if let Some(watches) = cfg["watches"].as_array_mut() {
        for w in watches {
            w["http_handler_config"]["header"] = json!({ "X-Hax-Secret": [secret] });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::ConfigTree;

    fn single() -> Description {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/singlenode.yaml");
        Description::load(p).unwrap()
    }

    fn f(t: u8, k: u64) -> Fid {
        Fid::typed(t, 1, k)
    }

    #[test]
    fn singlenode_gets_the_demo_fids() {
        let p = plan(&single());
        let n = &p.nodes[0];
        assert_eq!(n.fid, f(b'n', 2));
        let fids: Vec<(Fid, Vec<Fid>)> = n
            .processes
            .iter()
            .map(|p| (p.fid, p.services.iter().map(|s| s.0).collect()))
            .collect();
        assert_eq!(
            fids,
            vec![
                (f(b'r', 6), vec![f(b's', 7), f(b's', 8)]),
                (f(b'r', 9), vec![f(b's', 0xa), f(b's', 0xb)]),
                (f(b'r', 0xc), vec![f(b's', 0xd), f(b's', 0xe)]),
                (f(b'r', 0xf), vec![f(b's', 0x10), f(b's', 0x11)]),
            ]
        );
        let hax = n.processes[0].fid;
        assert_eq!(crate::view::derived_ha(hax), n.processes[0].services[0].0);
        assert_eq!(crate::view::derived_rm(hax), n.processes[0].services[1].0);
    }

    #[test]
    fn same_description_same_plan_and_keys_unique_across_types() {
        let d = single();
        assert_eq!(plan(&d), plan(&d));
        let three = Description::load(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/threenode.yaml"),
        )
        .unwrap();
        let p = plan(&three);
        let mut keys: Vec<u64> = p.nodes.iter().map(|n| n.fid.key).collect();
        for pr in p.nodes.iter().flat_map(|n| &n.processes) {
            keys.push(pr.fid.key);
            keys.extend(pr.services.iter().map(|s| s.0.key));
        }
        let unique: BTreeSet<u64> = keys.iter().copied().collect();
        assert_eq!(unique.len(), keys.len());
        assert_eq!(p.services.len(), 9);
    }

    #[test]
    fn the_kv_tree_reads_back_through_config_tree() {
        let p = plan(&single());
        let kv: Vec<(String, String)> = p.kv.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let t = ConfigTree::from_kv(&kv);
        assert_eq!(t.nodes.len(), 1);
        assert_eq!(t.processes.len(), 4);
        let confd = f(b'r', 9);
        assert_eq!(t.service_of_type(confd, "confd"), Some(f(b's', 0xa)));
        assert_eq!(t.service_of_type(confd, "rms"), Some(f(b's', 0xb)));
        assert_eq!(t.processes[&confd].endpoint, "inet:tcp:127.0.0.1@22002");
        assert_eq!(t.service_of_type(f(b'r', 6), "ha"), Some(f(b's', 7)));
        assert_eq!(
            p.kv["m0conf/nodes/0x6e00000000000001:0x2"],
            r#"{"controller":"0x6300000000000001:0x4","enclosure":"0x6500000000000001:0x3","name":"node-1","state":"M0_NC_UNKNOWN"}"#
        );
        let hw = t.hardware[&f(b'n', 2)];
        assert_eq!(
            (hw.enclosure, hw.controller),
            (Some(f(b'e', 3)), Some(f(b'c', 4)))
        );
    }

    #[test]
    fn drives_and_dtm0_services_move_no_fid_when_the_cluster_grows_and_read_back() {
        let mut d = single();
        d.nodes[0].processes[1].drives = vec!["/dev/sdb".into(), "/dev/sdc".into()];
        d.nodes[0].processes[2].dtm0 = true;
        let p = plan(&d);
        // A process added later moves no sdev, drive or DTM0 service.
        let mut grown = d.clone();
        let mut extra = grown.nodes[0].processes[1].clone();
        extra.name = "ios-9".into();
        extra.endpoint_port = 23999;
        grown.nodes[0].processes.push(extra);
        let g = plan(&grown);
        for (a, b) in p.nodes[0].processes.iter().zip(&g.nodes[0].processes) {
            assert_eq!(
                (a.fid, &a.services, &a.sdevs),
                (b.fid, &b.services, &b.sdevs)
            );
        }
        let before = plan(&single());
        // No older fid moved.
        for (a, b) in p.nodes[0].processes.iter().zip(&before.nodes[0].processes) {
            assert_eq!(a.fid, b.fid);
            assert_eq!(a.services[..b.services.len()], b.services[..]);
        }
        let kv: Vec<(String, String)> = p.kv.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let t = ConfigTree::from_kv(&kv);
        let ios1 = &p.nodes[0].processes[2];
        assert_eq!(ios1.sdevs.len(), 2);
        for (sdev, drive, _) in &ios1.sdevs {
            assert_eq!(t.sdevs[sdev].drive, Some(*drive));
            assert_eq!(
                Some(t.sdevs[sdev].service),
                t.service_of_type(ios1.fid, "ios")
            );
        }
        let ios2 = &p.nodes[0].processes[3];
        assert!(t.service_of_type(ios2.fid, "dtm0").is_some());
        let all: std::collections::BTreeSet<u64> = p.nodes[0]
            .processes
            .iter()
            .flat_map(|p| {
                std::iter::once(p.fid.key)
                    .chain(p.services.iter().map(|s| s.0.key))
                    .chain(p.sdevs.iter().flat_map(|(s, k, _)| [s.key, k.key]))
            })
            .collect();
        let count = p.nodes[0]
            .processes
            .iter()
            .map(|p| 1 + p.services.len() + 2 * p.sdevs.len())
            .sum::<usize>();
        assert_eq!(all.len(), count, "keys unique across types");
    }

    #[test]
    fn registrations_carry_fid_endpoint_and_the_chosen_check() {
        let mut d = single();
        let p = plan(&d);
        let confd = p.services.iter().find(|s| s.name == "confd").unwrap();
        let def = confd.definition();
        assert_eq!(def["ID"], "0x7200000000000001:0x9");
        assert_eq!(confd.endpoint(), "inet:tcp:127.0.0.1@22002");
        assert_eq!(def["Check"]["CheckID"], "service:0x7200000000000001:0x9");
        assert_eq!(def["Check"]["Interval"], "2s");
        assert_eq!(def["Check"]["Args"][1], "--consul");
        assert_eq!(def["Check"]["Args"][3], "check");
        let hax = p.services[0].definition();
        assert_eq!(hax["Check"]["HTTP"], "http://127.0.0.1:8008/healthz");
        d.check = CheckSpec {
            kind: CheckKind::Ttl,
            ..CheckSpec::default()
        };
        let def = plan(&d).services[1].definition();
        assert_eq!(def["Check"]["TTL"], "3600s");
        assert_eq!(def["Check"]["Status"], "critical");
        assert_eq!(def["Meta"]["check"], "ttl 3600s, initially critical");
    }

    #[test]
    fn agent_config_watches_each_motr_service_name_at_the_nodes_hax_only_in_watches_mode() {
        let mut d = single();
        let p = plan(&d);
        let c = agent_config_json(&p, "node-1").unwrap();
        assert_eq!(c["enable_script_checks"], true);
        assert_eq!(
            c["watches"],
            serde_json::json!([]),
            "node mode needs no watch"
        );
        d.health_from = crate::actors::health_monitor::HealthFrom::Watches;
        let p = plan(&d);
        let c = agent_config_json(&p, "node-1").unwrap();
        let w = c["watches"].as_array().unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0]["service"], "confd");
        assert_eq!(
            w[1]["http_handler_config"]["path"],
            "http://127.0.0.1:8008/watcher/service/ios"
        );
        assert_eq!(w[1]["http_handler_config"]["method"], "POST");
        assert!(agent_config_json(&p, "nobody").is_none());
    }
}
