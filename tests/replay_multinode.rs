//! What Motr hears equals the cluster's truth, on a real multi-node Consul's deliveries.
//!
//! The captures of `tests/fixtures/multinode/` (5 agents: srv-1..3, cli-1, cli-2; 18
//! processes) are replayed as agent cli-1 delivered them (`examples/replay/deliveries.rs`:
//! recorded paths, `X-Consul-Index` headers, arrival order) into the hax of node cli-1, with
//! cli-1's ios and client processes simulated and linked. After each step every process,
//! node, sdev and drive must be in the state written down by hand below, both as last
//! broadcast to the linked processes and as NVEC GET answers.
//!
//! The Consul agent of this test is a dev agent of another name: it holds the configuration
//! tree and the queues, and its own health (one node, no service) never names a captured node
//! or process, so everything hax knows of the captured cluster's health comes from the replay.
#[path = "../examples/replay/deliveries.rs"]
mod deliveries;
mod support;

use hax::fid::Fid;
use hax_sim::{SimConfig, SimProcess, Timeouts};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

const ONLINE: u32 = 1;
const FAILED: u32 = 2;
const TRANSIENT: u32 = 3;

fn name(s: u32) -> &'static str {
    match s {
        ONLINE => "ONLINE",
        FAILED => "FAILED",
        TRANSIENT => "TRANSIENT",
        _ => "?",
    }
}

const fn process(key: u64) -> Fid {
    Fid::typed(b'r', 1, key)
}
const fn node(key: u64) -> Fid {
    Fid::typed(b'n', 1, key)
}
const fn sdev(key: u64) -> Fid {
    Fid::typed(b'd', 1, key)
}
/// The drive behind an sdev (written by this test: the captures have none).
const fn drive(sdev_key: u64) -> Fid {
    Fid::typed(b'k', 1, 0x100 + sdev_key)
}

/// A node: its name, its fid's key, its processes (process key, sdev keys).
type NodeLayout = (&'static str, u64, &'static [(u64, &'static [u64])]);

/// The captured cluster, by node.
const CLUSTER: &[NodeLayout] = &[
    (
        "srv-1",
        0x2,
        &[
            (0x6, &[]),
            (0x9, &[]),
            (0xc, &[0xf, 0x10]),
            (0x11, &[0x14, 0x15]),
        ],
    ),
    (
        "srv-2",
        0x16,
        &[(0x1a, &[]), (0x1d, &[]), (0x20, &[0x23, 0x24])],
    ),
    (
        "srv-3",
        0x25,
        &[(0x29, &[]), (0x2c, &[]), (0x2f, &[0x32, 0x33])],
    ),
    (
        "cli-1",
        0x34,
        &[(0x38, &[]), (0x3b, &[0x3e, 0x3f]), (0x40, &[])],
    ),
    (
        "cli-2",
        0x43,
        &[
            (0x47, &[]),
            (0x4a, &[0x4d, 0x4e]),
            (0x4f, &[0x52, 0x53]),
            (0x54, &[]),
        ],
    ),
];

/// This hax: cli-1's hax process; its linked processes: cli-1's ios and client.
const OWN: Fid = process(0x38);
const LINKED: [Fid; 2] = [process(0x3b), process(0x40)];

/// Every object the test checks, with the node and process it belongs to.
fn objects() -> Vec<Fid> {
    let mut out = Vec::new();
    for (_, n, procs) in CLUSTER {
        out.push(node(*n));
        for (p, sdevs) in *procs {
            out.push(process(*p));
            for d in *sdevs {
                out.push(sdev(*d));
                out.push(drive(*d));
            }
        }
    }
    out
}

/// What a failing process or node takes with it (its sdevs and their drives TRANSIENT: a
/// process that is not serving takes its devices offline).
fn devices_of(p: u64) -> Vec<Fid> {
    CLUSTER
        .iter()
        .flat_map(|(_, _, procs)| procs.iter())
        .filter(|(k, _)| *k == p)
        .flat_map(|(_, sdevs)| sdevs.iter().flat_map(|d| [sdev(*d), drive(*d)]))
        .collect()
}

/// A state table: everything ONLINE except what is listed.
struct Expect(BTreeMap<Fid, u32>);

impl Expect {
    fn all_online() -> Expect {
        Expect(objects().into_iter().map(|f| (f, ONLINE)).collect())
    }
    /// These processes `state`, their devices TRANSIENT unless ONLINE.
    fn processes(mut self, keys: &[u64], state: u32) -> Expect {
        for k in keys {
            self.0.insert(process(*k), state);
            for d in devices_of(*k) {
                self.0
                    .insert(d, if state == ONLINE { ONLINE } else { TRANSIENT });
            }
        }
        self
    }
    /// A node `state`, and every process on it the same (devices as above).
    fn node(mut self, key: u64, state: u32) -> Expect {
        self.0.insert(node(key), state);
        let procs: Vec<u64> = CLUSTER
            .iter()
            .filter(|(_, n, _)| *n == key)
            .flat_map(|(_, _, ps)| ps.iter().map(|(p, _)| *p))
            .collect();
        self.processes(&procs, state)
    }
}

/// The hand-written table: the state of every object at the end of each step, as the hax of
/// cli-1 must tell it. Before any health is known, a process known neither from its own
/// events nor from Consul is TRANSIENT; hax itself is ONLINE while it runs whatever its
/// Consul check says; cli-1's linked processes are ONLINE from their STARTED events.
fn main_steps() -> Vec<(&'static str, Expect)> {
    let unknown: Vec<u64> = CLUSTER
        .iter()
        .flat_map(|(_, _, ps)| ps.iter().map(|(p, _)| *p))
        .filter(|p| ![0x38, 0x3b, 0x40].contains(p))
        .collect();
    let everyone_but_own: Vec<u64> = CLUSTER
        .iter()
        .flat_map(|(_, _, ps)| ps.iter().map(|(p, _)| *p))
        .filter(|p| *p != 0x38)
        .collect();
    vec![
        // Watches installed, nothing registered: only the nodes' serfHealth (passing).
        ("0", Expect::all_online().processes(&unknown, TRANSIENT)),
        // Every service registered with its check critical: all TRANSIENT but hax itself.
        (
            "1a",
            Expect::all_online().processes(&everyone_but_own, TRANSIENT),
        ),
        ("1b", Expect::all_online()),
        ("1c", Expect::all_online()),
        // cli-2 ios-1 flapping, 300 ms then 50 ms apart: ends passing.
        ("2a", Expect::all_online()),
        ("2b", Expect::all_online()),
        // srv-1 ios-2 and cli-1 ios-1 critical.
        (
            "2c",
            Expect::all_online().processes(&[0x11, 0x3b], TRANSIENT),
        ),
        ("2d", Expect::all_online()),
        // Service maintenance on srv-3 ios-1.
        ("3a", Expect::all_online().processes(&[0x2f], TRANSIENT)),
        ("3b", Expect::all_online()),
        // Node maintenance on cli-2: the node and everything on it.
        ("3c", Expect::all_online().node(0x43, TRANSIENT)),
        ("3d", Expect::all_online()),
        // cli-2's agent killed (serfHealth critical), then back.
        ("4a", Expect::all_online().node(0x43, TRANSIENT)),
        ("4b", Expect::all_online()),
        ("4c", Expect::all_online()),
        // srv-3 killed and removed from the catalog by autopilot: gone, FAILED.
        ("5a", Expect::all_online().node(0x25, FAILED)),
    ]
}

fn leader_kill_steps() -> Vec<(&'static str, Expect)> {
    vec![
        ("0", Expect::all_online()),
        // The leader srv-2 killed: stale re-sends (same index) change nothing; serfHealth
        // critical, then removed by autopilot: FAILED.
        ("6a", Expect::all_online().node(0x16, FAILED)),
        (
            "6c",
            Expect::all_online()
                .node(0x16, FAILED)
                .processes(&[0x4a], TRANSIENT),
        ),
        ("6d", Expect::all_online().node(0x16, FAILED)),
    ]
}

fn fixtures(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/multinode/{scenario}"))
}

/// The captured configuration tree, with fresh endpoint ports for this hax and the linked
/// processes, plus an sdev and drive record for every captured sdev.
fn configuration(scenario: &str, ports: &BTreeMap<Fid, u16>) -> Vec<(String, String)> {
    let cluster: Value = serde_json::from_slice(
        &std::fs::read(fixtures(scenario).join("cluster.json")).expect("cluster.json"),
    )
    .expect("cluster.json is JSON");
    let mut kv: Vec<(String, String)> = Vec::new();
    for (k, v) in cluster["kv"].as_object().expect("kv object") {
        let mut v: Value = serde_json::from_str(v.as_str().expect("kv string")).expect("kv JSON");
        let fid = k.rsplit('/').next().and_then(|f| f.parse::<Fid>().ok());
        if let Some(port) = fid.and_then(|f| ports.get(&f)) {
            v["endpoint"] = json!(format!("inet:tcp:127.0.0.1@{port}"));
        }
        kv.push((k.clone(), v.to_string()));
    }
    for n in cluster["nodes"].as_array().expect("nodes") {
        for p in n["processes"].as_array().expect("processes") {
            let ios = p["services"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["type"] == "ios"))
                .map(|s| s["fid"].as_str().unwrap_or_default().to_string());
            for (i, d) in p["sdevs_not_in_kv"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let d: Fid = d.as_str().unwrap().parse().unwrap();
                let key = format!(
                    "m0conf/nodes/{}/processes/{}/services/{}/sdevs/{d}",
                    n["node_fid"].as_str().unwrap(),
                    p["fid"].as_str().unwrap(),
                    ios.clone().expect("an ios service for the sdevs")
                );
                let v = json!({"drive": drive(d.key), "path": format!("/dev/sd{}", (b'b' + i as u8) as char), "state": "M0_NC_UNKNOWN"});
                kv.push((key, v.to_string()));
            }
        }
    }
    kv
}

/// Every captured service in this agent's catalog, on its captured node, *without* a check:
/// hax finds its own entry and the confds there, and Consul's health of this agent names
/// none of them (their health comes from the replay only).
fn register_in_catalog(c: &ConsulClient, scenario: &str, ports: &BTreeMap<Fid, u16>) {
    let cluster: Value = serde_json::from_slice(
        &std::fs::read(fixtures(scenario).join("cluster.json")).expect("cluster.json"),
    )
    .expect("cluster.json is JSON");
    for (node, regs) in cluster["registrations"].as_object().expect("registrations") {
        for r in regs.as_array().expect("a list") {
            let id = r["ID"].as_str().expect("ID");
            let port = id
                .parse::<Fid>()
                .ok()
                .and_then(|f| ports.get(&f).copied())
                .map_or(r["Port"].clone(), |p| json!(p));
            let body = json!({
                "Node": node, "Address": "127.0.0.1",
                "Service": {"ID": id, "Service": r["Name"], "Address": r["Address"],
                            "Port": port, "Meta": r["Meta"]},
            });
            c.put_json("/v1/catalog/register", &body)
                .and_then(|r| r.expect_ok("catalog register"))
                .expect("registered");
        }
    }
}

struct Replay {
    _agent: ConsulAgent,
    hax: HaxProc,
    sims: Vec<SimProcess>,
    scenario: &'static str,
}

impl Replay {
    fn start(scenario: &'static str) -> Replay {
        let agent =
            ConsulAgent::dev_with_json_named(&json!({}), &format!("replay-{}", std::process::id()));
        let ports: BTreeMap<Fid, u16> = [OWN, LINKED[0], LINKED[1]]
            .into_iter()
            .map(|f| (f, free_port()))
            .collect();
        let ops: Vec<Value> = configuration(scenario, &ports)
            .iter()
            .map(|(k, v)| txn_kv_set(k, v))
            .collect();
        for chunk in ops.chunks(64) {
            agent.client().txn(chunk).expect("configuration written");
        }
        register_in_catalog(agent.client(), scenario, &ports);
        // srv-1 holds the RC leader key (a session of node srv-1, which has no serfHealth
        // here): the RM is its confd's; this hax does not campaign.
        let session = agent
            .client()
            .put_json(
                "/v1/session/create",
                &json!({"Node": "srv-1", "Checks": [], "Name": "replay"}),
            )
            .and_then(|r| r.expect_ok("session"))
            .expect("a session of node srv-1")
            .json()
            .expect("session JSON")["ID"]
            .as_str()
            .expect("session ID")
            .to_string();
        let held = agent
            .client()
            .put(&format!("/v1/kv/leader?acquire={session}"), b"srv-1")
            .expect("leader key");
        assert_eq!(held.text().trim(), "true", "the leader key is taken");
        let hax = HaxProc::spawn(
            &agent.http_addr(),
            "cli-1",
            free_port(),
            ports[&OWN],
            agent.dir(),
            &[
                "--health-from",
                "watches",
                "--reconcile",
                "false",
                "--campaign",
                "false",
            ],
        );
        hax.assert_ready(Duration::from_secs(30));
        let sims = LINKED
            .iter()
            .map(|f| {
                let mut cfg = SimConfig::new(*f);
                cfg.endpoint = format!("inet:tcp:127.0.0.1@{}", ports[f]);
                cfg.timeouts = Timeouts {
                    reply: Duration::from_secs(15),
                    entrypoint: Duration::from_secs(30),
                    ..Timeouts::default()
                };
                let s = SimProcess::connect(&hax.endpoint(), cfg).expect("connect");
                s.boot().expect("boots");
                s
            })
            .collect();
        Replay {
            _agent: agent,
            hax,
            sims,
            scenario,
        }
    }

    /// What `s` last heard about `fid` in a broadcast (GET answers excluded).
    fn heard(s: &SimProcess, fid: Fid) -> Option<u32> {
        s.received_notes()
            .iter()
            .rev()
            .find(|n| n.fid == fid && n.id_of_get == 0)
            .map(|n| n.state)
    }

    /// The differences from `expect`: what the linked processes last heard, and what NVEC
    /// GET answers (a fid never broadcast since a process linked is checked by GET only).
    fn differences(&self, expect: &Expect) -> Vec<String> {
        let fids: Vec<Fid> = expect.0.keys().copied().collect();
        let mut out = Vec::new();
        for s in &self.sims {
            match s.nvec_get(&fids) {
                Ok(notes) => {
                    for n in notes {
                        if expect.0.get(&n.fid) != Some(&n.state) {
                            out.push(format!(
                                "GET from {}: {} is {}, expected {}",
                                s.fid(),
                                n.fid,
                                name(n.state),
                                name(expect.0[&n.fid])
                            ));
                        }
                    }
                }
                Err(e) => out.push(format!("GET from {}: {e}", s.fid())),
            }
            for (fid, want) in &expect.0 {
                if let Some(got) = Self::heard(s, *fid) {
                    if got != *want {
                        out.push(format!(
                            "{} last heard {fid} {}, expected {}",
                            s.fid(),
                            name(got),
                            name(*want)
                        ));
                    }
                }
            }
        }
        out
    }

    fn wait_for(&self, step: &str, expect: &Expect) {
        let mut last = Vec::new();
        let ok = wait_until(Duration::from_secs(10), || {
            last = self.differences(expect);
            last.is_empty().then_some(())
        });
        assert!(
            ok.is_some(),
            "{} step {step}: {} difference(s):\n  {}\nhax's log (tail):\n{}",
            self.scenario,
            last.len(),
            last.join("\n  "),
            log_tail(&self.hax.log, 30)
        );
    }

    /// Replays cli-1's deliveries step by step, checking the table after each step.
    fn run(&self, steps: Vec<(&'static str, Expect)>) {
        let all = deliveries::load(&fixtures(self.scenario)).expect("deliveries");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        for (step, expect) in steps {
            let mine: Vec<_> = all
                .iter()
                .filter(|d| d.agent == "cli-1" && d.step == step)
                .collect();
            for d in mine {
                let (code, body) = deliveries::post(&agent, &self.hax.url(), d).expect("POST");
                assert_eq!(code, 200, "delivery {} ({}): {body}", d.n, d.path);
            }
            self.wait_for(step, &expect);
        }
    }

    /// POSTs an older delivery again (Consul re-sends after a leader change): nothing moves.
    fn resend_is_ignored(&self, n: u64, expect: &Expect) {
        let all = deliveries::load(&fixtures(self.scenario)).expect("deliveries");
        let d = all.iter().find(|d| d.n == n).expect("that delivery");
        let agent = ureq::AgentBuilder::new().build();
        let (code, _) = deliveries::post(&agent, &self.hax.url(), d).expect("POST");
        assert_eq!(code, 200);
        std::thread::sleep(Duration::from_millis(500));
        let diff = self.differences(expect);
        assert!(
            diff.is_empty(),
            "re-sent delivery {n} ({}, index {:?}) changed states:\n  {}",
            d.path,
            d.index,
            diff.join("\n  ")
        );
    }
}

#[test]
fn every_object_ends_each_captured_step_in_its_hand_written_state() {
    let r = Replay::start("main");
    let steps = main_steps();
    let last = Expect(steps.last().unwrap().1 .0.clone());
    r.run(steps);
    // The step-1a snapshots (everything critical) again, with their old indexes.
    let all = deliveries::load(&fixtures("main")).unwrap();
    for d in all
        .iter()
        .filter(|d| d.agent == "cli-1" && d.step == "1a")
        .take(20)
    {
        r.resend_is_ignored(d.n, &last);
    }
}

#[test]
fn after_the_leader_is_killed_stale_re_sends_change_nothing_and_the_removed_node_is_failed() {
    let r = Replay::start("leader-kill");
    let steps = leader_kill_steps();
    let last = Expect(steps.last().unwrap().1 .0.clone());
    r.run(steps);
    // The first snapshots (srv-2 and its processes passing) again, with their old indexes.
    let all = deliveries::load(&fixtures("leader-kill")).unwrap();
    for d in all.iter().filter(|d| d.agent == "cli-1" && d.step == "0") {
        r.resend_is_ignored(d.n, &last);
    }
}
