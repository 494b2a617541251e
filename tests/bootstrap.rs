//! The cluster bootstrap against real Consul agents: what it writes, that a re-run changes
//! nothing, that a different description is refused with a diff and then applied, script
//! checks, the local agent, three nodes on three agents, and get-entrypoint.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hax::cluster::{self, BootstrapReport, CheckKind, Description, Outcome, Plan};
use hax::fid::Fid;
use hax::view::ConfigTree;
use serde_json::Value;
use support::*;

fn example(name: &str) -> Description {
    Description::load(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
    )
    .unwrap()
}

/// examples/singlenode.yaml pointed at `agent` (its node name and HTTP port) with TTL checks
/// (the harness's dev agent does not run script checks).
fn singlenode_on(agent: &ConsulAgent) -> Description {
    let mut d = example("singlenode.yaml");
    d.nodes[0].name = agent.node_name().to_string();
    d.nodes[0].consul_http_port = agent.ports().http;
    d.check = cluster::description::CheckSpec {
        kind: CheckKind::Ttl,
        ..Default::default()
    };
    d.validate().unwrap();
    d
}

fn run(plan: &Plan, url: &str, apply: bool) -> BootstrapReport {
    actix::System::new()
        .block_on(cluster::bootstrap(plan, url, None, apply))
        .unwrap_or_else(|e| panic!("bootstrap failed: {e}"))
}

fn json(r: HttpResponse) -> Value {
    r.expect_ok("GET").unwrap().json().unwrap()
}

/// (ServiceID, ServiceAddress, ServicePort) of the catalog entries of `name`, sorted.
fn catalog(c: &ConsulClient, name: &str) -> Vec<(String, String, u64)> {
    let mut v: Vec<_> = json(c.catalog_service(name, None).unwrap())
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["ServiceID"].as_str().unwrap().to_string(),
                e["ServiceAddress"].as_str().unwrap().to_string(),
                e["ServicePort"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn config_tree(c: &ConsulClient) -> ConfigTree {
    let kv: Vec<(String, String)> = c
        .kv_list("m0conf/")
        .unwrap()
        .into_iter()
        .map(|p| (p.key.clone(), p.value_str()))
        .collect();
    ConfigTree::from_kv(&kv)
}

fn r(key: u64) -> Fid {
    Fid::typed(b'r', 1, key)
}
fn s(key: u64) -> Fid {
    Fid::typed(b's', 1, key)
}

const EP: &str = "inet:tcp:127.0.0.1@";

#[test]
fn singlenode_bootstrap_registers_services_and_writes_the_config_tree() {
    let agent = ConsulAgent::dev();
    let c = agent.client();
    let plan = cluster::plan(&singlenode_on(&agent));
    let report = run(&plan, &agent.http_url(), false);
    assert_eq!(report.outcome, Outcome::Created, "{}", report.render());
    assert_eq!(report.transactions, 1);

    assert_eq!(
        catalog(c, "hax"),
        vec![("0x7200000000000001:0x6".into(), EP.into(), 22001)]
    );
    assert_eq!(
        catalog(c, "confd"),
        vec![("0x7200000000000001:0x9".into(), EP.into(), 22002)]
    );
    assert_eq!(
        catalog(c, "ios"),
        vec![
            ("0x7200000000000001:0xc".into(), EP.into(), 22003),
            ("0x7200000000000001:0xf".into(), EP.into(), 22004)
        ]
    );
    let checks = json(c.health_service("ios", None).unwrap());
    let ids: Vec<&str> = checks[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["CheckID"].as_str())
        .collect();
    assert!(ids.contains(&"service:0x7200000000000001:0xc"), "{ids:?}");

    let node: Value = serde_json::from_str(
        &c.kv_get_string("m0conf/nodes/0x6e00000000000001:0x2")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(node["name"], agent.node_name());
    assert_eq!(node["state"], "M0_NC_UNKNOWN");
    let confd = c
        .kv_get_string("m0conf/nodes/0x6e00000000000001:0x2/processes/0x7200000000000001:0x9")
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&confd).unwrap(),
        serde_json::json!({"name": "confd", "endpoint": "inet:tcp:127.0.0.1@22002", "state": "M0_NC_UNKNOWN"})
    );

    let t = config_tree(c);
    assert_eq!(t.processes.len(), 4);
    assert_eq!(t.service_of_type(r(9), "confd"), Some(s(0xa)));
    assert_eq!(t.service_of_type(r(9), "rms"), Some(s(0xb)));
    assert_eq!(t.service_of_type(r(6), "ha"), Some(s(7)));
    assert_eq!(t.service_of_type(r(6), "rms"), Some(s(8)));
    assert_eq!(t.service_of_type(r(0xc), "ios"), Some(s(0xd)));
    assert_eq!(t.processes[&r(0xf)].node_name, agent.node_name());
}

/// ModifyIndex of every KV key under m0conf/ and of every catalog service.
fn indexes(c: &ConsulClient) -> BTreeMap<String, u64> {
    let mut m: BTreeMap<String, u64> = c
        .kv_list("m0conf/")
        .unwrap()
        .into_iter()
        .map(|p| (p.key, p.modify_index))
        .collect();
    for name in ["hax", "confd", "ios"] {
        for e in json(c.catalog_service(name, None).unwrap())
            .as_array()
            .unwrap()
        {
            m.insert(
                format!("service {}", e["ServiceID"]),
                e["ModifyIndex"].as_u64().unwrap(),
            );
        }
    }
    m
}

#[test]
fn rerunning_the_same_description_changes_nothing() {
    let agent = ConsulAgent::dev();
    let plan = cluster::plan(&singlenode_on(&agent));
    assert_eq!(
        run(&plan, &agent.http_url(), false).outcome,
        Outcome::Created
    );
    let before = indexes(agent.client());
    assert_eq!(before.len(), plan.kv.len() + 4);
    for apply in [false, true] {
        let again = run(&plan, &agent.http_url(), apply);
        assert_eq!(again.outcome, Outcome::Unchanged);
        assert_eq!(again.transactions, 0);
        assert!(
            again.render().contains("nothing changed"),
            "{}",
            again.render()
        );
    }
    assert_eq!(indexes(agent.client()), before);
}

#[test]
fn an_added_io_server_is_refused_with_a_diff_then_applied_and_removed_again() {
    let agent = ConsulAgent::dev();
    let c = agent.client();
    let d = singlenode_on(&agent);
    run(&cluster::plan(&d), &agent.http_url(), false);

    let mut bigger = d.clone();
    bigger.nodes[0]
        .processes
        .push(cluster::description::ProcessSpec {
            kind: cluster::ProcessKind::Ios,
            name: "ios-3".into(),
            endpoint_port: 22005,
            drives: vec![],
            dtm0: false,
        });
    bigger.validate().unwrap();
    let plan = cluster::plan(&bigger);
    let before = indexes(c);
    let refused = run(&plan, &agent.http_url(), false);
    assert_eq!(refused.outcome, Outcome::Refused);
    let text = refused.render();
    let node = agent.node_name();
    assert!(
        text.contains(&format!(
            "+ service ios 0x7200000000000001:0x12 (ios-3) on {node} at inet:tcp:127.0.0.1@22005"
        )),
        "{text}"
    );
    let new_key = "m0conf/nodes/0x6e00000000000001:0x2/processes/0x7200000000000001:0x12";
    assert!(text.contains(&format!("+ kv {new_key} = ")), "{text}");
    assert!(text.contains("--apply"), "{text}");
    assert_eq!(refused.diff.lines().len(), 4, "{text}"); // service, process key, ios and rms keys
    assert_eq!(indexes(c), before, "a refusal writes nothing");

    let applied = run(&plan, &agent.http_url(), true);
    assert_eq!(applied.outcome, Outcome::Applied, "{}", applied.render());
    assert_eq!(catalog(c, "ios").len(), 3);
    assert!(c.kv_get(new_key).unwrap().is_some());
    assert_eq!(
        config_tree(c).service_of_type(r(0x12), "ios"),
        Some(s(0x13))
    );
    assert_eq!(
        run(&plan, &agent.http_url(), false).outcome,
        Outcome::Unchanged
    );

    // Back to the smaller description: ios-3 is deregistered and its keys deleted.
    let smaller = cluster::plan(&d);
    let refused = run(&smaller, &agent.http_url(), false);
    assert!(
        refused
            .render()
            .contains(&format!("- service ios 0x7200000000000001:0x12 on {node}")),
        "{}",
        refused.render()
    );
    assert!(
        refused.render().contains(&format!("- kv {new_key} (was ")),
        "{}",
        refused.render()
    );
    assert_eq!(
        run(&smaller, &agent.http_url(), true).outcome,
        Outcome::Applied
    );
    assert_eq!(catalog(c, "ios").len(), 2);
    assert!(c.kv_get(new_key).unwrap().is_none());
    assert_eq!(c.kv_list("m0conf/").unwrap().len(), smaller.kv.len());
}

#[test]
fn a_changed_port_is_shown_as_a_changed_service_and_key() {
    let agent = ConsulAgent::dev();
    let d = singlenode_on(&agent);
    run(&cluster::plan(&d), &agent.http_url(), false);
    let mut moved = d.clone();
    moved.nodes[0].processes[1].endpoint_port = 22009;
    let text = run(&cluster::plan(&moved), &agent.http_url(), false).render();
    assert!(
        text.contains("endpoint inet:tcp:127.0.0.1@22003 -> inet:tcp:127.0.0.1@22009"),
        "{text}"
    );
    assert!(
        text.contains(
            "~ kv m0conf/nodes/0x6e00000000000001:0x2/processes/0x7200000000000001:0xc: "
        ),
        "{text}"
    );
}

#[test]
fn get_entrypoint_names_the_leaders_node_and_the_confds() {
    let agent = ConsulAgent::dev();
    let c = agent.client();
    let node = agent.node_name();
    run(
        &cluster::plan(&singlenode_on(&agent)),
        &agent.http_url(),
        false,
    );
    let entrypoint =
        || actix::System::new().block_on(cluster::get_entrypoint(&agent.http_url(), None));

    let e = entrypoint().unwrap_err().to_string();
    assert!(e.contains("no RC leader"), "{e}");

    let session = json(
        c.put_json(
            "/v1/session/create",
            &serde_json::json!({"Name": "leader", "Node": node}),
        )
        .unwrap(),
    );
    let id = session["ID"].as_str().unwrap();
    let acquired = c
        .put(&format!("/v1/kv/leader?acquire={id}"), node.as_bytes())
        .unwrap();
    assert_eq!(acquired.text().trim(), "true");

    let yaml = entrypoint().unwrap();
    assert_eq!(
        yaml,
        format!(
            "principal-RM: {node}\nrm-fid: 0x7300000000000001:0xb\nrm-endpoint: inet:tcp:127.0.0.1@22002\nquorum: 1\n\
             confds:\n  - node: {node}\n    fid: 0x7200000000000001:0x9\n    address: inet:tcp:127.0.0.1@22002\n"
        )
    );
    let parsed: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(parsed["confds"][0]["fid"], "0x7200000000000001:0x9");
    assert_eq!(cluster::cmd_get_entrypoint(&agent.http_url(), None), 0);
}

#[test]
fn script_checks_run_hax_check_and_pass_once_kv_says_started() {
    let agent = ConsulAgent::dev_with("enable_script_checks = true");
    let c = agent.client();
    let mut d = singlenode_on(&agent);
    d.check = cluster::description::CheckSpec {
        kind: CheckKind::Script,
        interval: Some("1s".into()),
        hax_bin: Some(env!("CARGO_BIN_EXE_hax").into()),
        ..Default::default()
    };
    run(&cluster::plan(&d), &agent.http_url(), false);
    // The agent's own view: the catalog gets output-only changes late (check_update_interval).
    let status = || {
        let checks = json(c.get("/v1/agent/checks").unwrap());
        let k = &checks["service:0x7200000000000001:0x9"];
        (
            k["Status"].as_str().unwrap_or("").to_string(),
            k["Output"].as_str().unwrap_or("").to_string(),
        )
    };
    let critical = wait_until(Duration::from_secs(15), || {
        let (s, out) = status();
        (s == "critical" && out.contains("no processes/")).then_some(out)
    });
    assert!(
        critical.is_some(),
        "the check never said the process is unknown: {:?}",
        status()
    );
    let record = serde_json::json!({"state": "M0_CONF_HA_PROCESS_STARTED", "type": "M0_CONF_HA_PROCESS_M0D", "pid": std::process::id()});
    c.kv_put("processes/0x7200000000000001:0x9", record.to_string())
        .unwrap();
    let passing = wait_until(Duration::from_secs(15), || {
        (status().0 == "passing").then_some(())
    });
    assert!(passing.is_some(), "the check did not pass: {:?}", status());
}

#[test]
fn script_checks_on_an_agent_without_them_fail_with_a_hint() {
    let agent = ConsulAgent::dev();
    let mut d = singlenode_on(&agent);
    d.check = Default::default();
    let e = actix::System::new()
        .block_on(cluster::bootstrap(
            &cluster::plan(&d),
            &agent.http_url(),
            None,
            false,
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("enable_script_checks = true"), "{e}");
}

#[test]
fn three_nodes_register_their_services_on_their_own_agents() {
    let consul = ConsulCluster::start(3);
    let mut d = example("threenode.yaml");
    for (i, n) in d.nodes.iter_mut().enumerate() {
        n.name = consul.node_name(i).to_string();
        n.consul_http_port = consul.ports(i).http;
    }
    d.check = cluster::description::CheckSpec {
        kind: CheckKind::Ttl,
        ..Default::default()
    };

    // A node whose port leads to another node's agent is refused before anything is written.
    let mut wrong = d.clone();
    wrong.nodes[1].consul_http_port = consul.ports(2).http;
    let e = actix::System::new()
        .block_on(cluster::bootstrap(
            &cluster::plan(&wrong),
            &consul.http_url(0),
            None,
            false,
        ))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "is node {:?}, not {:?}",
            consul.node_name(2),
            consul.node_name(1)
        )),
        "{e}"
    );
    assert!(consul.client(0).kv_list("m0conf/").unwrap().is_empty());

    let plan = cluster::plan(&d);
    assert_eq!(
        run(&plan, &consul.http_url(0), false).outcome,
        Outcome::Created
    );
    for i in 0..3 {
        let own = json(consul.client(i).get("/v1/agent/services").unwrap());
        let names: Vec<&str> = own
            .as_object()
            .unwrap()
            .values()
            .filter_map(|s| s["Service"].as_str())
            .collect();
        assert_eq!(names.len(), 3, "agent {i}: {own}");
        for name in ["hax", "confd", "ios"] {
            assert!(names.contains(&name), "agent {i}: {own}");
        }
    }
    let confds = json(consul.client(1).catalog_service("confd", None).unwrap());
    let nodes: Vec<&str> = confds
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["Node"].as_str())
        .collect();
    assert_eq!(nodes.len(), 3);
    assert_eq!(config_tree(consul.client(2)).nodes.len(), 3);
    assert_eq!(
        run(&plan, &consul.http_url(2), false).outcome,
        Outcome::Unchanged
    );
}

/// Stops a local agent when the test ends, however it ends.
struct Stop(Option<cluster::LocalAgent>);
impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            if std::thread::panicking() {
                eprintln!("---- {}:\n{}", a.log.display(), log_tail(&a.log, 40));
            }
            a.stop();
        }
    }
}

#[test]
fn a_local_agent_runs_the_watches_and_the_bootstrap_reaches_hax_through_them() {
    let sink = WatchSink::start();
    let mut d = example("singlenode.yaml");
    d.nodes[0].name = format!("hax-local-{}", std::process::id());
    d.nodes[0].consul_http_port = free_port();
    d.nodes[0].hax.http_port = sink.addr().port();
    d.check = cluster::description::CheckSpec {
        kind: CheckKind::Ttl,
        ..Default::default()
    };
    // The agent gets watches only for `health_from: watches` (node mode needs none).
    d.health_from = hax::actors::health_monitor::HealthFrom::Watches;
    let plan = cluster::plan(&d);
    let dir = std::env::temp_dir().join(format!("hax-bootstrap-local.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let agent = Stop(Some(
        cluster::start_local_agent(&plan, &dir, consul_bin()).unwrap(),
    ));
    let a = agent.0.as_ref().unwrap();
    assert!(a.started);
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&a.config).unwrap()).unwrap();
    assert_eq!(config["ports"]["dns"], -1);
    assert_eq!(config["ports"]["http"], d.nodes[0].consul_http_port);
    let again = cluster::start_local_agent(&plan, &dir, consul_bin()).unwrap();
    assert!(!again.started, "a running agent of the node is reused");
    assert_eq!(again.pid, a.pid);

    let start = sink.count();
    assert_eq!(run(&plan, &a.http_url, false).outcome, Outcome::Created);
    let got = sink.wait_for_since(
        start,
        |d| d.path == "/watcher/service/confd" && d.text().contains("0x7200000000000001:0x9"),
        Duration::from_secs(20),
    );
    assert!(
        got.is_some(),
        "no confd watch delivery reached hax's port: {:?}",
        sink.deliveries()
    );
    // The watches carry the directory's secret, kept in a file only its owner can read.
    let secret_file = dir.join("watch-secret");
    let secret = std::fs::read_to_string(&secret_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(secret.len(), 48, "a random 24-byte secret in hex");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the secret file is private");
    assert_eq!(
        got.as_ref().unwrap().header("X-Hax-Secret"),
        Some(secret.as_str())
    );
    assert_eq!(got.unwrap().method, "POST");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn commands_exit_with_the_documented_codes() {
    let dir = std::env::temp_dir().join(format!("hax-bootstrap-cmd.{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "nodes: []\n").unwrap();
    assert_eq!(
        cluster::cmd_bootstrap(&bad, "127.0.0.1:1", None, false, None),
        64
    );

    let nobody = format!("127.0.0.1:{}", free_port());
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/singlenode.yaml");
    assert_eq!(
        cluster::cmd_bootstrap(&good, &nobody, None, false, None),
        69
    );
    assert_eq!(cluster::cmd_get_entrypoint(&nobody, None), 69);

    let agent = ConsulAgent::dev();
    let mut d = singlenode_on(&agent);
    run(&cluster::plan(&d), &agent.http_url(), false);
    assert_eq!(
        cluster::cmd_get_entrypoint(&agent.http_url(), None),
        1,
        "no leader yet"
    );
    // The same file with one more IO server: refused (1) without --apply.
    d.nodes[0]
        .processes
        .push(cluster::description::ProcessSpec {
            kind: cluster::ProcessKind::Ios,
            name: "ios-3".into(),
            endpoint_port: 22005,
            drives: vec![],
            dtm0: false,
        });
    let file = dir.join("changed.yaml");
    std::fs::write(&file, to_yaml(&d)).unwrap();
    assert_eq!(
        cluster::cmd_bootstrap(&file, &agent.http_url(), None, false, None),
        1
    );
    assert_eq!(
        cluster::cmd_bootstrap(&file, &agent.http_url(), None, true, None),
        0
    );
    assert_eq!(
        cluster::cmd_bootstrap(&file, &agent.http_url(), None, false, None),
        0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A description as YAML (TTL checks, as `singlenode_on` makes them).
fn to_yaml(d: &Description) -> String {
    let mut s = String::from("check: { kind: ttl }\nnodes:\n");
    for n in &d.nodes {
        s += &format!(
            "  - name: {}\n    address: {}\n    consul_http_port: {}\n    hax: {{ http_port: {}, endpoint_port: {} }}\n    processes:\n",
            n.name, n.address, n.consul_http_port, n.hax.http_port, n.hax.endpoint_port
        );
        for p in &n.processes {
            s += &format!(
                "      - {{ kind: {}, name: {}, endpoint_port: {} }}\n",
                p.kind.service_name(),
                p.name,
                p.endpoint_port
            );
        }
    }
    s
}

/// Kills the agent whose pid `<dir>/agent/consul.pid` holds, and removes `dir`.
struct KillByPidFile(std::path::PathBuf);
impl Drop for KillByPidFile {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("agent/consul.pid")) {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.trim())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn cmd_bootstrap_with_a_local_agent_dir_starts_the_agent_then_writes_the_cluster() {
    let dir = std::env::temp_dir().join(format!("hax-bootstrap-cmd-local.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = KillByPidFile(dir.clone());
    std::env::set_var("HAX_CONSUL_BIN", consul_bin());
    let http = free_port();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/singlenode.yaml"),
    )
    .unwrap()
    .replace(
        "name: node-1 ",
        &format!("name: hax-cmd-{} ", std::process::id()),
    )
    .replace(
        "consul_http_port: 8500",
        &format!("consul_http_port: {http}"),
    );
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, text).unwrap();
    let agent_dir = dir.join("agent");
    // The URL given is not used: the local agent's is.
    assert_eq!(
        cluster::cmd_bootstrap(&file, "127.0.0.1:1", None, false, Some(&agent_dir)),
        0
    );
    assert!(agent_dir.join("consul.pid").is_file());
    let c = ConsulClient::new(&format!("http://127.0.0.1:{http}"));
    assert_eq!(catalog(&c, "ios").len(), 2);
    let checks = json(c.get("/v1/agent/checks").unwrap());
    assert_eq!(
        checks["service:0x7200000000000001:0xc"]["Type"], "script",
        "{checks}"
    );
    assert_eq!(
        checks["service:0x7200000000000001:0x6"]["Type"], "http",
        "{checks}"
    );
    // Again: the running agent is reused and nothing changes.
    assert_eq!(
        cluster::cmd_bootstrap(&file, "127.0.0.1:1", None, false, Some(&agent_dir)),
        0
    );
}

#[test]
fn a_large_cluster_is_written_in_transactions_of_at_most_64_ops() {
    let agent = ConsulAgent::dev();
    let mut d = singlenode_on(&agent);
    for i in 3..=27u16 {
        d.nodes[0]
            .processes
            .push(cluster::description::ProcessSpec {
                kind: cluster::ProcessKind::Ios,
                name: format!("ios-{i}"),
                endpoint_port: 22002 + i,
                drives: vec![],
                dtm0: false,
            });
    }
    d.validate().unwrap();
    let plan = cluster::plan(&d);
    let sdevs: usize = plan.nodes[0].processes.iter().map(|p| p.sdevs.len()).sum();
    // The node (naming its enclosure and controller), 29 processes with 2 services each, the
    // sdevs of the IO servers' drives.
    assert_eq!(plan.kv.len(), 1 + 29 * 3 + sdevs);
    let report = run(&plan, &agent.http_url(), false);
    assert_eq!(report.outcome, Outcome::Created);
    assert_eq!(report.transactions, 2);
    assert_eq!(
        agent.client().kv_list("m0conf/").unwrap().len(),
        plan.kv.len()
    );
    assert_eq!(catalog(agent.client(), "ios").len(), 27);
}
