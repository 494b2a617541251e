//! Captures what a real multi-node Consul delivers to hax-style HTTP watches while services
//! flap, go into maintenance and agents die, and stores it as fixtures (data only) under
//! `tests/fixtures/multinode/<scenario>/` for replay tests. Run by hand (about 2-3 minutes):
//!
//! ```sh
//! cargo test --test capture_multinode -- --ignored --nocapture
//! ```
//!
//! - `HAX_CAPTURE_OUT=<dir>`: write there instead of `tests/fixtures/multinode/`.
//! - `HAX_CAPTURE_ONLY=main|leader-kill`: one scenario only.
//! - `HAX_CAPTURE_LOGS=<dir>`: copy the agents' logs there (never into the fixtures).
//!
//! Cluster: servers srv-1..3 and clients cli-1, cli-2 on 127.0.0.1 (see [`layout`]); every
//! node's services are registered on its own agent with TTL checks that this program sets.
//! Two agents (one non-leader server, cli-1) get agent-configuration HTTP watches in the form
//! hax's bootstrap writes (its `service` watches, plus `hax`, `checks` and `keyprefix` ones),
//! each agent's pointing at its own recording sink.
//!
//! Scenario `main`: steps 1-5 (registration, flapping, maintenance, a client killed and
//! restarted, a non-leader server killed for good). Scenario `leader-kill`: step 6 on a fresh
//! cluster (after step 5 the first cluster keeps two raft voters, and killing the leader of two
//! leaves no quorum at all).
mod support;

use hax::fid::Fid;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::*;

const ADDRESS: &str = "inet:tcp:127.0.0.1@";
const TTL: &str = "30s";
/// Quiet time after which a step's deliveries are taken as settled, and the bound.
const QUIET: Duration = Duration::from_secs(3);
const SETTLE_MAX: Duration = Duration::from_secs(25);
const SERVERS: [&str; 3] = ["srv-1", "srv-2", "srv-3"];
const CLIENTS: [&str; 2] = ["cli-1", "cli-2"];
/// Autopilot removes a dead server quickly (it still waits for serf to call it failed).
const AUTOPILOT_HCL: &str = "autopilot {\n  cleanup_dead_servers = true\n  \
                             last_contact_threshold = \"1s\"\n  \
                             server_stabilization_time = \"2s\"\n}\n";

// ---------------------------------------------------------------------------------------------
// The cluster's layout

struct Proc {
    /// Consul service name.
    service: &'static str,
    /// Process name (KV `name`, Meta `process`).
    name: String,
    fid: Fid,
    port: u16,
    /// Motr services (fid, type) under the process in `m0conf/`.
    services: Vec<(Fid, &'static str)>,
    /// Invented sdev fids of an ios (the configuration tree format has no place for them).
    sdevs: Vec<Fid>,
}

struct NodeDef {
    name: &'static str,
    server: bool,
    fid: Fid,
    procs: Vec<Proc>,
}

/// Fids follow the bootstrap's allocation (docs/cluster-description.md): container 1, one key
/// counter, key 1 the profile's, 4 keys per node, 3 per process (process, then its two
/// services); an ios takes 2 more for its invented sdevs (type 'd').
fn layout() -> Vec<NodeDef> {
    let mut key = 1u64;
    let mut take = |n: u64| {
        let k = key + 1;
        key += n;
        k
    };
    let mut port = 21000u16;
    let mut next_port = || {
        port += 1;
        port
    };
    // (node, server, ios count, has m0_client)
    let shape: [(&'static str, bool, usize, bool); 5] = [
        ("srv-1", true, 2, false),
        ("srv-2", true, 1, false),
        ("srv-3", true, 1, false),
        ("cli-1", false, 1, true),
        ("cli-2", false, 2, true),
    ];
    let mut nodes = Vec::new();
    for (name, server, ios, client) in shape {
        let fid = Fid::typed(b'n', 1, take(4));
        let mut kinds: Vec<(&'static str, String, &'static [&'static str])> =
            vec![("hax", "hax".into(), &["ha", "rms"])];
        if server {
            kinds.push(("confd", "confd".into(), &["confd", "rms"]));
        }
        for i in 1..=ios {
            kinds.push(("ios", format!("ios-{i}"), &["ios", "rms"]));
        }
        if client {
            kinds.push(("m0_client", "m0_client".into(), &["rms"]));
        }
        let procs = kinds
            .into_iter()
            .map(|(service, pname, types)| {
                let k = take(if service == "ios" { 5 } else { 3 });
                Proc {
                    service,
                    name: pname,
                    fid: Fid::typed(b'r', 1, k),
                    port: next_port(),
                    services: types
                        .iter()
                        .enumerate()
                        .map(|(j, t)| (Fid::typed(b's', 1, k + 1 + j as u64), *t))
                        .collect(),
                    sdevs: if service == "ios" {
                        vec![Fid::typed(b'd', 1, k + 3), Fid::typed(b'd', 1, k + 4)]
                    } else {
                        vec![]
                    },
                }
            })
            .collect();
        nodes.push(NodeDef {
            name,
            server,
            fid,
            procs,
        });
    }
    nodes
}

fn kv_tree(nodes: &[NodeDef]) -> BTreeMap<String, String> {
    let mut kv = BTreeMap::new();
    for n in nodes {
        let nk = format!("m0conf/nodes/{}", n.fid);
        kv.insert(
            nk.clone(),
            json!({"name": n.name, "state": "M0_NC_UNKNOWN"}).to_string(),
        );
        for p in &n.procs {
            let pk = format!("{nk}/processes/{}", p.fid);
            kv.insert(
                pk.clone(),
                json!({"name": p.name, "endpoint": format!("{ADDRESS}{}", p.port),
                       "state": "M0_NC_UNKNOWN"})
                .to_string(),
            );
            for (s, t) in &p.services {
                kv.insert(
                    format!("{pk}/services/{s}"),
                    json!({"type": t, "state": "M0_NC_UNKNOWN"}).to_string(),
                );
            }
        }
    }
    kv
}

/// What hax would write under `processes/` once every Motr process reported STARTED.
fn processes_kv(nodes: &[NodeDef]) -> BTreeMap<String, String> {
    let mut kv = BTreeMap::new();
    let mut pid = 4000;
    for p in nodes.iter().flat_map(|n| &n.procs) {
        if p.service == "hax" {
            continue;
        }
        pid += 1;
        let ty = if p.service == "m0_client" {
            "M0_CONF_HA_PROCESS_OTHER"
        } else {
            "M0_CONF_HA_PROCESS_M0D"
        };
        kv.insert(
            format!("processes/{}", p.fid),
            json!({"state": "M0_CONF_HA_PROCESS_STARTED", "type": ty, "pid": pid}).to_string(),
        );
    }
    kv
}

fn registration(p: &Proc) -> Value {
    json!({
        "ID": p.fid.to_string(),
        "Name": p.service,
        "Address": ADDRESS,
        "Port": p.port,
        "Meta": {"process": p.name},
        "Check": {
            "CheckID": check_id(p),
            "Name": format!("{} {} alive", p.service, p.fid),
            "TTL": TTL,
            "Status": "critical",
        },
    })
}

fn check_id(p: &Proc) -> String {
    format!("service:{}", p.fid)
}

/// The watches of one agent: a `service` watch per service name (as hax's bootstrap writes
/// them, plus `hax`), a `checks` watch and `keyprefix` watches on `eq/`, `bq/`, `processes/`.
fn watches(sink: &WatchSink) -> Value {
    let w = |kind: &str, extra: Value, path: &str| {
        let mut v = json!({
            "type": kind,
            "handler_type": "http",
            "http_handler_config": {"path": sink.url_for(path), "method": "POST", "timeout": "10s"},
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let mut all: Vec<Value> = ["confd", "hax", "ios", "m0_client"]
        .iter()
        .map(|s| {
            w(
                "service",
                json!({"service": s}),
                &format!("/watcher/service/{s}"),
            )
        })
        .collect();
    all.push(w("checks", json!({}), "/watcher/checks"));
    for prefix in ["eq", "bq", "processes"] {
        all.push(w(
            "keyprefix",
            json!({"prefix": format!("{prefix}/")}),
            &format!("/watcher/{prefix}"),
        ));
    }
    json!({ "watches": all })
}

/// "service-ios", "checks", "keyprefix-eq" from a watch path.
fn watch_name(path: &str) -> String {
    let p = path.trim_start_matches("/watcher/");
    if let Some(s) = p.strip_prefix("service/") {
        format!("service-{s}")
    } else if p == "checks" {
        "checks".into()
    } else {
        format!("keyprefix-{p}")
    }
}

// ---------------------------------------------------------------------------------------------
// The running cluster and its TTL checks

struct Live {
    cluster: ConsulCluster,
    nodes: Vec<NodeDef>,
    /// Desired TTL check states (check id -> (agent index, passing)), refreshed every 10 s by a
    /// thread so that no 30 s TTL expires by itself. Held while a state is set, so the
    /// refresher never races a change.
    checks: Arc<Mutex<BTreeMap<String, (usize, bool)>>>,
    /// Per agent: false while it is down on purpose (the refresher skips it).
    up: Arc<Mutex<Vec<bool>>>,
    stop: Arc<AtomicBool>,
    refresher: Option<thread::JoinHandle<()>>,
}

impl Live {
    fn start(nodes: Vec<NodeDef>) -> Live {
        let t = Instant::now();
        let cluster = ConsulCluster::start_with(&ClusterSpec {
            servers: SERVERS.iter().map(|s| s.to_string()).collect(),
            clients: CLIENTS.iter().map(|s| s.to_string()).collect(),
            extra_hcl: AUTOPILOT_HCL.into(),
        });
        println!("cluster up in {:?}", t.elapsed());
        for (i, n) in nodes.iter().enumerate() {
            assert_eq!(cluster.node_name(i), n.name);
            assert_eq!(cluster.is_server(i), n.server);
        }
        let clients: Vec<ConsulClient> = (0..cluster.len())
            .map(|i| ConsulClient::with_timeout(&cluster.http_url(i), Duration::from_secs(3)))
            .collect();
        let checks: Arc<Mutex<BTreeMap<String, (usize, bool)>>> = Default::default();
        let up = Arc::new(Mutex::new(vec![true; cluster.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let refresher = {
            let (checks, up, stop) = (checks.clone(), up.clone(), stop.clone());
            thread::spawn(move || {
                let mut last = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(200));
                    if last.elapsed() < Duration::from_secs(10) {
                        continue;
                    }
                    last = Instant::now();
                    let c = checks.lock().unwrap();
                    let up = up.lock().unwrap().clone();
                    for (id, (agent, pass)) in c.iter() {
                        if *pass && up[*agent] {
                            let _ = clients[*agent].check_pass(id);
                        }
                    }
                }
            })
        };
        Live {
            cluster,
            nodes,
            checks,
            up,
            stop,
            refresher: Some(refresher),
        }
    }

    fn index_of(&self, node: &str) -> usize {
        self.nodes.iter().position(|n| n.name == node).unwrap()
    }

    fn proc_(&self, node: &str, name: &str) -> &Proc {
        self.nodes[self.index_of(node)]
            .procs
            .iter()
            .find(|p| p.name == name)
            .unwrap()
    }

    /// Registers every service on its own node's agent (checks critical) and writes the
    /// configuration tree.
    fn register_all(&self) {
        let kv = kv_tree(&self.nodes);
        let ops: Vec<Value> = kv.iter().map(|(k, v)| txn_kv_set(k, v)).collect();
        for chunk in ops.chunks(64) {
            let r = self.cluster.any_live_client().txn(chunk).unwrap();
            assert!(r.ok(), "txn: {} {}", r.status, r.text());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            self.register_node(i, n);
        }
    }

    fn register_node(&self, i: usize, n: &NodeDef) {
        let mut c = self.checks.lock().unwrap();
        for p in &n.procs {
            self.cluster
                .client(i)
                .register_service(&registration(p))
                .unwrap();
            c.insert(check_id(p), (i, false));
        }
    }

    /// Sets checks (by node and process name) passing or critical, in this order, with no pause.
    fn set(&self, which: &[(&str, &str)], pass: bool) {
        let mut c = self.checks.lock().unwrap();
        for (node, name) in which {
            let i = self.index_of(node);
            let id = check_id(self.proc_(node, name));
            let client = self.cluster.client(i);
            if pass {
                client.check_pass(&id).unwrap();
            } else {
                client.check_fail(&id).unwrap();
            }
            c.insert(id, (i, pass));
        }
    }

    /// Every check of every live agent passing.
    fn all_passing(&self) {
        let mut c = self.checks.lock().unwrap();
        let up = self.up.lock().unwrap().clone();
        for (i, n) in self.nodes.iter().enumerate() {
            if !up[i] {
                continue;
            }
            for p in &n.procs {
                self.cluster.client(i).check_pass(&check_id(p)).unwrap();
                c.insert(check_id(p), (i, true));
            }
        }
    }

    fn kill(&mut self, node: &str) {
        let i = self.index_of(node);
        self.up.lock().unwrap()[i] = false;
        self.cluster.kill(i);
    }

    fn restart(&mut self, node: &str) {
        let i = self.index_of(node);
        self.cluster.restart(i);
        self.up.lock().unwrap()[i] = true;
    }

    fn copy_logs(&self, scenario: &str) {
        let Some(dir) = std::env::var_os("HAX_CAPTURE_LOGS") else {
            return;
        };
        let dir = PathBuf::from(dir).join(scenario);
        fs::create_dir_all(&dir).unwrap();
        for (i, n) in self.nodes.iter().enumerate() {
            let _ = fs::copy(
                self.cluster.log_path(i),
                dir.join(format!("{}.log", n.name)),
            );
        }
        println!("agent logs copied to {}", dir.display());
    }

    fn cluster_json(&self, watched: &[(String, Value)]) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let p = self.cluster.ports(i);
                json!({
                    "name": n.name,
                    "role": if n.server { "server" } else { "client" },
                    "node_fid": n.fid.to_string(),
                    "agent_ports_in_this_run": {"http": p.http, "server": p.server,
                                                "serf_lan": p.serf_lan},
                    "processes": n.procs.iter().map(|p| json!({
                        "name": p.name,
                        "service": p.service,
                        "fid": p.fid.to_string(),
                        "endpoint": format!("{ADDRESS}{}", p.port),
                        "services": p.services.iter()
                            .map(|(s, t)| json!({"fid": s.to_string(), "type": t}))
                            .collect::<Vec<_>>(),
                        "sdevs_not_in_kv": p.sdevs.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let registrations: Map<String, Value> = self
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.to_string(),
                    Value::Array(n.procs.iter().map(registration).collect()),
                )
            })
            .collect();
        json!({
            "consul_version": consul_version(consul_bin()),
            "datacenter": "dc1",
            "agent_config": {
                "shared_hcl": format!("disable_update_check = true\nretry_interval = \"1s\"\n\
                                       performance {{ raft_multiplier = 1 }}\n{AUTOPILOT_HCL}"),
                "servers": "-server -bootstrap-expect=3, each -retry-join the other two",
                "clients": "-retry-join each server",
            },
            "nodes": nodes,
            "kv": kv_tree(&self.nodes),
            "kv_processes_step_1c": processes_kv(&self.nodes),
            "registrations": registrations,
            "check_updates": "PUT /v1/agent/check/pass|fail/service:<fid> on the node's own agent",
            "watched_agents": watched.iter().map(|(a, w)| json!({"agent": a, "config": w}))
                .collect::<Vec<_>>(),
        })
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recording

struct Capture {
    scenario: &'static str,
    t0: Instant,
    /// (agent name, its sink)
    sinks: Vec<(String, WatchSink)>,
    steps: Vec<Value>,
    events: Vec<Value>,
    current_step: String,
    /// How many deliveries had come when the current step started.
    step_start_count: usize,
}

impl Capture {
    fn new(scenario: &'static str, agents: &[&str]) -> Capture {
        Capture {
            scenario,
            t0: Instant::now(),
            sinks: agents
                .iter()
                .map(|a| (a.to_string(), WatchSink::start()))
                .collect(),
            steps: vec![],
            events: vec![],
            current_step: String::new(),
            step_start_count: 0,
        }
    }

    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn step(&mut self, id: &str, description: &str) {
        let t = self.ms();
        println!("[{}] {t:>7} ms  step {id}: {description}", self.scenario);
        self.steps
            .push(json!({"t_ms": t, "step": id, "description": description}));
        self.current_step = id.to_string();
        self.step_start_count = self.count();
    }

    /// Something the capture saw (not a delivery): a failure detected, a leader elected...
    fn event(&mut self, what: &str, extra: Value) {
        let t = self.ms();
        println!("[{}] {t:>7} ms    {what} {extra}", self.scenario);
        let mut v = json!({"t_ms": t, "step": self.current_step, "event": what});
        if let Some(o) = extra.as_object() {
            for (k, x) in o {
                v[k] = x.clone();
            }
        }
        self.events.push(v);
    }

    fn count(&self) -> usize {
        self.sinks.iter().map(|(_, s)| s.count()).sum()
    }

    /// Waits until no delivery came for [`QUIET`] (at most `max`); returns how many came
    /// since the step started.
    fn settle_max(&self, max: Duration) -> usize {
        let start = Instant::now();
        let (mut seen, mut since) = (self.count(), Instant::now());
        while start.elapsed() < max {
            thread::sleep(Duration::from_millis(100));
            let n = self.count();
            if n != seen {
                seen = n;
                since = Instant::now();
            } else if since.elapsed() >= QUIET {
                break;
            }
        }
        let n = self.count() - self.step_start_count;
        println!(
            "[{}]            settled: {n} deliveries in the step; quiet after {:?}",
            self.scenario,
            start.elapsed()
        );
        n
    }

    fn settle(&self) -> usize {
        self.settle_max(SETTLE_MAX)
    }

    /// Writes the scenario's directory: one file per delivery, deliveries.jsonl, steps.jsonl,
    /// events.jsonl and cluster.json. Returns the deliveries in arrival order.
    fn write(&self, out: &Path, cluster: &Value) -> Vec<Value> {
        let dir = out.join(self.scenario);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let mut all: Vec<(&str, Delivery)> = self
            .sinks
            .iter()
            .flat_map(|(a, s)| s.deliveries().into_iter().map(move |d| (a.as_str(), d)))
            .collect();
        all.sort_by_key(|(_, d)| d.received);
        let mut lines = Vec::new();
        let mut index = String::new();
        for (n, (agent, d)) in all.iter().enumerate() {
            let n = n + 1;
            let t_ms = d.received.saturating_duration_since(self.t0).as_millis() as u64;
            let file = format!("{n:03}-{agent}-{}.json", watch_name(&d.path));
            fs::write(dir.join(&file), &d.body).unwrap();
            let headers: Map<String, Value> = d
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let step = self
                .steps
                .iter()
                .rev()
                .find(|s| s["t_ms"].as_u64().unwrap() <= t_ms)
                .map(|s| s["step"].clone())
                .unwrap_or(Value::Null);
            let line = json!({
                "n": n, "t_ms": t_ms, "agent": agent, "method": d.method, "path": d.path,
                "headers": headers, "file": file, "step": step,
            });
            index.push_str(&line.to_string());
            index.push('\n');
            lines.push(line);
        }
        fs::write(dir.join("deliveries.jsonl"), index).unwrap();
        let jsonl = |v: &[Value]| v.iter().map(|x| format!("{x}\n")).collect::<String>();
        fs::write(dir.join("steps.jsonl"), jsonl(&self.steps)).unwrap();
        fs::write(dir.join("events.jsonl"), jsonl(&self.events)).unwrap();
        let mut f = fs::File::create(dir.join("cluster.json")).unwrap();
        writeln!(f, "{}", serde_json::to_string_pretty(cluster).unwrap()).unwrap();
        println!(
            "[{}] wrote {} deliveries to {}",
            self.scenario,
            lines.len(),
            dir.display()
        );
        lines
    }
}

/// Per (agent, path): the X-Consul-Index sequence, with older-than-before and same-body-as-before
/// deliveries pointed out (the summary the README is written from).
fn summarize(scenario: &str, out: &Path, lines: &[Value]) {
    let dir = out.join(scenario);
    let mut last: BTreeMap<(String, String), (u64, Vec<u8>, u64)> = BTreeMap::new();
    let mut per_step: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines {
        *per_step
            .entry(l["step"].as_str().unwrap_or("-").to_string())
            .or_default() += 1;
        let key = (
            l["agent"].as_str().unwrap().to_string(),
            l["path"].as_str().unwrap().to_string(),
        );
        let idx: u64 = l["headers"]["X-Consul-Index"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = fs::read(dir.join(l["file"].as_str().unwrap())).unwrap();
        let t = l["t_ms"].as_u64().unwrap();
        if let Some((pidx, pbody, pt)) = last.get(&key) {
            let mut notes = vec![];
            if idx < *pidx {
                notes.push(format!("OLDER index {idx} < {pidx}"));
            } else if idx == *pidx {
                notes.push(format!("same index {idx}"));
            }
            if body == *pbody {
                notes.push("same body as the previous one".into());
            }
            if !notes.is_empty() || t - pt > 5000 {
                println!(
                    "  {} {} at {t} ms (step {}): index {idx} after {pidx} (gap {} ms) {}",
                    l["file"].as_str().unwrap(),
                    key.1,
                    l["step"],
                    t - pt,
                    notes.join("; ")
                );
            }
        }
        last.insert(key, (idx, body, t));
    }
    println!("[{scenario}] deliveries per step: {per_step:?}");
}

fn out_dir() -> PathBuf {
    std::env::var_os("HAX_CAPTURE_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/multinode"))
}

fn wanted(scenario: &str) -> bool {
    std::env::var("HAX_CAPTURE_ONLY").map_or(true, |s| s.is_empty() || s == scenario)
}

// ---------------------------------------------------------------------------------------------
// Polls (stale reads on the watched server, so they answer without a leader)

fn serf_health(c: &ConsulClient, node: &str) -> Option<String> {
    let v = c
        .get(&format!("/v1/health/node/{node}?stale"))
        .ok()?
        .json()
        .ok()?;
    v.as_array()?
        .iter()
        .find(|c| c["CheckID"] == "serfHealth")
        .and_then(|c| c["Status"].as_str().map(str::to_string))
}

fn catalog_nodes(c: &ConsulClient) -> Option<Vec<String>> {
    let v = c.get("/v1/catalog/nodes?stale").ok()?.json().ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter_map(|n| n["Node"].as_str().map(str::to_string))
            .collect(),
    )
}

fn leader_name(live: &Live, c: &ConsulClient) -> Option<String> {
    let addr = c.leader().ok()?;
    (0..live.cluster.len())
        .find(|&i| {
            live.cluster.is_server(i)
                && addr == format!("127.0.0.1:{}", live.cluster.ports(i).server)
        })
        .map(|i| live.nodes[i].name.to_string())
}

/// Polls `f` every 200 ms until it is true or `bound` passes; the time it took.
fn poll(bound: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < bound {
        if f() {
            return Some(t.elapsed());
        }
        thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Starts a cluster, picks the watched server (a non-leader) and installs the watches on it
/// and on cli-1; with `registered`, after registering everything (unrecorded).
/// Returns (live, capture, leader name, watched server name, the watched agents' configs).
fn setup(
    scenario: &'static str,
    registered: bool,
) -> (Live, Capture, String, String, Vec<(String, Value)>) {
    let live = Live::start(layout());
    let li = live.cluster.wait_for_leader(Duration::from_secs(30));
    let leader = live.nodes[li].name.to_string();
    let watched = SERVERS.iter().find(|s| **s != leader).unwrap().to_string();
    if registered {
        bring_up(&live, None);
        thread::sleep(Duration::from_secs(2));
    }
    let mut cap = Capture::new(scenario, &[&watched, "cli-1"]);
    cap.event("leader", json!({"leader": leader}));
    cap.step(
        "0",
        &format!(
            "watches installed on {watched} and cli-1 (agent config reload); {}",
            if registered {
                "the cluster is already registered, all checks passing, processes/ written"
            } else {
                "nothing registered"
            }
        ),
    );
    let mut configs = Vec::new();
    for (agent, sink) in &cap.sinks {
        let cfg = watches(sink);
        live.cluster
            .configure_agent(live.index_of(agent), &cfg)
            .unwrap();
        configs.push((agent.clone(), cfg));
    }
    cap.settle();
    (live, cap, leader, watched, configs)
}

/// Step 1: registration, all passing, `processes/` (recorded as steps 1a-1c with `cap`).
fn bring_up(live: &Live, mut cap: Option<&mut Capture>) {
    let mut step = |id: &str, what: &str, act: &dyn Fn()| {
        if let Some(c) = cap.as_deref_mut() {
            c.step(id, what);
        }
        act();
        if let Some(c) = cap.as_deref() {
            c.settle();
        }
    };
    step(
        "1a",
        "configuration tree written under m0conf/ (txn); every service registered on its own \
         node's agent, TTL checks critical",
        &|| live.register_all(),
    );
    step("1b", "all checks passing", &|| live.all_passing());
    step(
        "1c",
        "processes/<fid> written STARTED for every Motr process (txn)",
        &|| {
            let ops: Vec<Value> = processes_kv(&live.nodes)
                .iter()
                .map(|(k, v)| txn_kv_set(k, v))
                .collect();
            let r = live.cluster.any_live_client().txn(&ops).unwrap();
            assert!(r.ok(), "txn: {}", r.text());
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The scenarios

fn scenario_main(out: &Path) {
    let (mut live, mut cap, leader, watched, configs) = setup("main", false);
    let wc = ConsulClient::with_timeout(
        &live.cluster.http_url(live.index_of(&watched)),
        Duration::from_secs(3),
    );
    // The server killed in step 5: neither the leader nor the watched one.
    let victim = SERVERS
        .iter()
        .find(|s| **s != leader && **s != watched)
        .unwrap()
        .to_string();
    cap.event(
        "roles",
        json!({"leader": leader, "watched_server": watched, "step5_victim": victim}),
    );

    // 1
    bring_up(&live, Some(&mut cap));

    // 2
    cap.step(
        "2a",
        "cli-2 ios-1 flapping: critical, passing, 4 times, 300 ms apart",
    );
    for _ in 0..4 {
        live.set(&[("cli-2", "ios-1")], false);
        thread::sleep(Duration::from_millis(300));
        live.set(&[("cli-2", "ios-1")], true);
        thread::sleep(Duration::from_millis(300));
    }
    cap.settle();
    cap.step(
        "2b",
        "cli-2 ios-1 flapping faster: critical, passing, 4 times, 50 ms apart",
    );
    for _ in 0..4 {
        live.set(&[("cli-2", "ios-1")], false);
        thread::sleep(Duration::from_millis(50));
        live.set(&[("cli-2", "ios-1")], true);
        thread::sleep(Duration::from_millis(50));
    }
    cap.settle();
    cap.step(
        "2c",
        "srv-1 ios-2 and cli-1 ios-1 critical back to back (no pause)",
    );
    live.set(&[("srv-1", "ios-2"), ("cli-1", "ios-1")], false);
    cap.settle();
    cap.step("2d", "all checks passing");
    live.all_passing();
    cap.settle();

    // 3
    let ios = live.proc_("srv-3", "ios-1").fid.to_string();
    let srv3 = live.cluster.client(live.index_of("srv-3")).clone();
    cap.step(
        "3a",
        &format!("service maintenance on srv-3 ios-1 ({ios}) enabled"),
    );
    srv3.put(
        &format!(
            "/v1/agent/service/maintenance/{ios}?enable=true&reason={}",
            url_encode("capture: drive replacement")
        ),
        b"",
    )
    .unwrap()
    .expect_ok("service maintenance on")
    .unwrap();
    cap.settle();
    cap.step("3b", "service maintenance on srv-3 ios-1 disabled");
    srv3.put(
        &format!("/v1/agent/service/maintenance/{ios}?enable=false"),
        b"",
    )
    .unwrap()
    .expect_ok("service maintenance off")
    .unwrap();
    cap.settle();
    let cli2 = live.cluster.client(live.index_of("cli-2")).clone();
    cap.step("3c", "node maintenance on cli-2 enabled");
    cli2.put(
        &format!(
            "/v1/agent/maintenance?enable=true&reason={}",
            url_encode("capture: node reboot")
        ),
        b"",
    )
    .unwrap()
    .expect_ok("node maintenance on")
    .unwrap();
    cap.settle();
    cap.step("3d", "node maintenance on cli-2 disabled");
    cli2.put("/v1/agent/maintenance?enable=false", b"")
        .unwrap()
        .expect_ok("node maintenance off")
        .unwrap();
    cap.settle();

    // 4
    cap.step("4a", "cli-2 agent killed (SIGKILL)");
    live.kill("cli-2");
    match poll(Duration::from_secs(60), || {
        serf_health(&wc, "cli-2").as_deref() == Some("critical")
    }) {
        Some(d) => cap.event(
            "cli-2 serfHealth critical as the watched server sees it",
            json!({"after_kill_ms": d.as_millis() as u64}),
        ),
        None => cap.event(
            "cli-2 serfHealth never went critical within 60 s",
            json!({}),
        ),
    }
    cap.settle();
    cap.step(
        "4b",
        "cli-2 agent restarted (same data dir, node name and ports)",
    );
    let t = Instant::now();
    live.restart("cli-2");
    match poll(Duration::from_secs(60), || {
        serf_health(&wc, "cli-2").as_deref() == Some("passing")
    }) {
        Some(_) => cap.event(
            "cli-2 serfHealth passing again as the watched server sees it",
            json!({"after_restart_ms": t.elapsed().as_millis() as u64}),
        ),
        None => cap.event("cli-2 serfHealth not passing 60 s after restart", json!({})),
    }
    let services = cli2
        .get("/v1/agent/services")
        .and_then(|r| r.json())
        .unwrap_or(Value::Null);
    let checks = cli2
        .get("/v1/agent/checks")
        .and_then(|r| r.json())
        .unwrap_or(Value::Null);
    let restored: Vec<String> = services
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let states: BTreeMap<String, String> = checks
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v["Status"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    cap.event(
        "cli-2 agent after restart: services and check states it restored",
        json!({"services": restored, "checks": states}),
    );
    let n = &live.nodes[live.index_of("cli-2")];
    let missing = n
        .procs
        .iter()
        .filter(|p| !restored.contains(&p.fid.to_string()))
        .count();
    if missing > 0 {
        cap.event("cli-2 services re-registered", json!({"missing": missing}));
        live.register_node(live.index_of("cli-2"), n);
    }
    cap.settle();
    cap.step("4c", "all checks passing (cli-2's set passing again)");
    live.all_passing();
    cap.settle();

    // 5
    cap.step(
        "5a",
        &format!("{victim} (a non-leader server) killed (SIGKILL), not restarted"),
    );
    let killed = Instant::now();
    live.kill(&victim);
    let mut seen_critical = false;
    let gone = poll(Duration::from_secs(90), || {
        if !seen_critical && serf_health(&wc, &victim).as_deref() == Some("critical") {
            seen_critical = true;
            cap.event(
                &format!("{victim} serfHealth critical as the watched server sees it"),
                json!({"after_kill_ms": killed.elapsed().as_millis() as u64}),
            );
        }
        catalog_nodes(&wc).is_some_and(|n| !n.contains(&victim))
    });
    match gone {
        Some(d) => cap.event(
            &format!("{victim} gone from the catalog (autopilot removed it)"),
            json!({"after_kill_ms": d.as_millis() as u64,
                   "raft_peers": wc.peers().unwrap_or_default()}),
        ),
        None => cap.event(
            &format!("{victim} still in the catalog 90 s after the kill"),
            json!({"raft_peers": wc.peers().unwrap_or_default()}),
        ),
    }
    cap.settle();

    cap.step("end", "capture ends");
    live.copy_logs("main");
    let cj = live.cluster_json(&configs);
    let lines = cap.write(out, &cj);
    summarize("main", out, &lines);
}

fn scenario_leader_kill(out: &Path) {
    let (mut live, mut cap, leader, watched, configs) = setup("leader-kill", true);
    let wc = ConsulClient::with_timeout(
        &live.cluster.http_url(live.index_of(&watched)),
        Duration::from_secs(2),
    );
    cap.event(
        "roles",
        json!({"leader": leader, "watched_server": watched}),
    );

    cap.step("6a", &format!("the leader {leader} killed (SIGKILL)"));
    let killed = Instant::now();
    live.kill(&leader);
    let mut new_leader: Option<String> = None;
    let mut critical = false;
    let mut gone = false;
    while killed.elapsed() < Duration::from_secs(30) {
        if new_leader.is_none() {
            if let Some(l) = leader_name(&live, &wc).filter(|l| *l != leader) {
                cap.event(
                    "new leader as the watched server sees it",
                    json!({"leader": l, "after_kill_ms": killed.elapsed().as_millis() as u64}),
                );
                new_leader = Some(l);
            }
        }
        if !critical && serf_health(&wc, &leader).as_deref() == Some("critical") {
            critical = true;
            cap.event(
                &format!("{leader} serfHealth critical as the watched server sees it"),
                json!({"after_kill_ms": killed.elapsed().as_millis() as u64}),
            );
        }
        if !gone && catalog_nodes(&wc).is_some_and(|n| !n.contains(&leader)) {
            gone = true;
            cap.event(
                &format!("{leader} gone from the catalog (autopilot removed it)"),
                json!({"after_kill_ms": killed.elapsed().as_millis() as u64}),
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    if !gone {
        cap.step(
            "6b",
            &format!("30 s after the kill: waiting (at most 60 s more) for {leader} to leave the catalog"),
        );
        match poll(Duration::from_secs(60), || {
            catalog_nodes(&wc).is_some_and(|n| !n.contains(&leader))
        }) {
            Some(_) => cap.event(
                &format!("{leader} gone from the catalog (autopilot removed it)"),
                json!({"after_kill_ms": killed.elapsed().as_millis() as u64}),
            ),
            None => cap.event(
                &format!("{leader} still in the catalog 90 s after the kill"),
                json!({}),
            ),
        }
        cap.settle();
    }
    cap.step("6c", "after the failover: cli-2 ios-1 critical");
    live.set(&[("cli-2", "ios-1")], false);
    cap.settle();
    cap.step("6d", "cli-2 ios-1 passing");
    live.set(&[("cli-2", "ios-1")], true);
    cap.settle();
    cap.step("end", "capture ends");
    live.copy_logs("leader-kill");
    let cj = live.cluster_json(&configs);
    let lines = cap.write(out, &cj);
    summarize("leader-kill", out, &lines);
}

#[test]
#[ignore = "captures fixtures from a real 5-agent Consul cluster (minutes); run by hand"]
fn capture_multinode() {
    let out = out_dir();
    println!(
        "consul: {}; writing under {}",
        consul_version(consul_bin()),
        out.display()
    );
    if wanted("main") {
        scenario_main(&out);
    }
    if wanted("leader-kill") {
        scenario_leader_kill(&out);
    }
}
