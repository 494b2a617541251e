//! Motr → Consul through the real `hax` binary, a real Consul agent and simulated m0ds.
mod support;

use hax_sim::{EpReply, ProcessEvent, ProcessType};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const T: Duration = Duration::from_secs(20);

fn state(n: &SingleNode, fid: hax::fid::Fid) -> String {
    n.process_record(fid)
        .and_then(|v| v["state"].as_str().map(String::from))
        .unwrap_or_default()
}

#[test]
fn a_simulated_m0d_boots_to_dtm_recovered_and_its_kv_record_follows_every_step() {
    let n = SingleNode::start();
    let p = n.sim(CONFD);
    let ep = p
        .entrypoint_until_ok(true, Instant::now() + T)
        .expect("first entrypoint")
        .0;
    assert_eq!(ep.rc, 0);
    for (event, expect) in [
        (ProcessEvent::Starting, "M0_CONF_HA_PROCESS_STARTING"),
        (ProcessEvent::Started, "M0_CONF_HA_PROCESS_STARTED"),
        (
            ProcessEvent::DtmRecovered,
            "M0_CONF_HA_PROCESS_DTM_RECOVERED",
        ),
    ] {
        p.send_process_event(event, ProcessType::M0d)
            .expect("send event");
        assert!(
            wait_until(T, || (state(&n, CONFD) == expect).then_some(())).is_some(),
            "processes/{CONFD} never became {expect}; it is {:?}",
            n.process_record(CONFD)
        );
    }
    let rec = n.process_record(CONFD).unwrap();
    assert_eq!(rec["type"], "M0_CONF_HA_PROCESS_M0D");
    assert_eq!(rec["pid"].as_u64(), Some(std::process::id() as u64));
    // hax's own process is recorded too, from its own events on the self link.
    assert!(wait_until(T, || state(&n, HAX).ends_with("STARTED").then_some(())).is_some());
}

#[test]
fn the_full_m0d_boot_sequence_is_answered_failure_vectors_and_nvec_get_included() {
    let n = SingleNode::start();
    let confd = n.sim(CONFD);
    let report = confd.boot().expect("confd boots");
    assert!(n.wait_process_state(CONFD, "DTM_RECOVERED", T));
    let ios = n.sim(IOS1);
    ios.boot().expect("ios boots");
    // The ios asked about the confd process and its services: the confd is up, so ONLINE.
    let answer = ios
        .nvec_get(&[CONFD, CONFD_SVC, IOS1])
        .expect("NVEC GET answered");
    let states: Vec<u32> = answer.iter().map(|n| n.state).collect();
    assert_eq!(
        answer.iter().map(|n| n.fid).collect::<Vec<_>>(),
        vec![CONFD, CONFD_SVC, IOS1]
    );
    assert_eq!(states[0], 1, "confd ONLINE: {answer:?}");
    assert_eq!(states[1], 1, "confd's service ONLINE: {answer:?}");
    assert!(n.wait_process_state(IOS1, "DTM_RECOVERED", T));
    drop(report);
}

fn check_entrypoint(ep: &EpReply, n: &SingleNode) {
    assert_eq!(ep.rc, 0);
    assert_eq!(ep.confds.len(), 1);
    assert_eq!(ep.confds[0].0, CONFD);
    assert_eq!(ep.confds[0].1, format!("{EP}{}", n.ports.confd));
    assert_eq!(ep.quorum, 1);
    assert_eq!(ep.rm_fid, CONFD_RMS);
    assert_eq!(ep.rm_ep, format!("{EP}{}", n.ports.confd));
}

#[test]
fn entrypoint_replies_carry_the_registered_confds_quorum_and_the_leaders_rm() {
    let n = SingleNode::start();
    let p = n.sim(IOS1);
    let first = p.entrypoint_until_ok(true, Instant::now() + T).unwrap().0;
    check_entrypoint(&first, &n);
    let again = p.entrypoint_until_ok(false, Instant::now() + T).unwrap().0;
    check_entrypoint(&again, &n);
}

#[test]
fn without_a_leader_entrypoints_get_paced_eagain_then_succeed_once_one_is_elected() {
    let http_port = free_port();
    let agent = ConsulAgent::dev_with_json(&watch_config(http_port));
    let ports = ClusterPorts::allocate();
    register_cluster(agent.client(), agent.node_name(), &ports);
    let hax = HaxProc::spawn(
        &agent.http_addr(),
        agent.node_name(),
        http_port,
        ports.hax,
        agent.dir(),
        &["--campaign", "false"],
    );
    assert!(
        hax.wait_log("no RC leader", T),
        "hax never said it had no leader:\n{}",
        hax.log_text()
    );
    // hax's own start is blocked on its own entrypoint: it is not ready, and says so.
    let (status, body) = hax.readyz().expect("GET /readyz answers");
    assert_eq!(
        (status, body["state"].as_str()),
        (503, Some("starting")),
        "{body}"
    );
    let cfg = {
        let mut c = hax_sim::SimConfig::new(IOS1);
        c.endpoint = format!("{EP}{}", ports.ios1);
        c
    };
    let p = hax_sim::SimProcess::connect(&hax.endpoint(), cfg).expect("connect");
    let t0 = Instant::now();
    let r1 = p.entrypoint(true).unwrap();
    let r2 = p.entrypoint(true).unwrap();
    let spent = t0.elapsed();
    assert_eq!((r1.rc, r2.rc), (11, 11), "EAGAIN while there is no leader");
    assert!(
        spent >= Duration::from_millis(350),
        "two EAGAIN replies came {spent:?} apart: not paced"
    );
    // Elect a leader by hand: the next request succeeds and hax finishes starting.
    let c = agent.client();
    let sid: serde_json::Value = c
        .put_json("/v1/session/create", &serde_json::json!({"Name": "leader"}))
        .unwrap()
        .json()
        .unwrap();
    let sid = sid["ID"].as_str().unwrap().to_string();
    let acquired = c
        .put(
            &format!("/v1/kv/leader?acquire={sid}"),
            agent.node_name().as_bytes(),
        )
        .unwrap()
        .text();
    assert_eq!(acquired.trim(), "true");
    let ok = p.entrypoint_until_ok(true, Instant::now() + T).unwrap().0;
    assert_eq!(ok.rc, 0);
    hax.assert_ready(T);
    let (_, body) = hax.readyz().expect("GET /readyz answers");
    assert_eq!(body["process"], HAX.to_string(), "{body}");
    assert_eq!(body["endpoint"], hax.endpoint(), "{body}");
}

#[test]
fn hax_started_before_its_service_is_registered_waits_and_then_works() {
    let http_port = free_port();
    let agent = ConsulAgent::dev_with_json(&watch_config(http_port));
    let ports = ClusterPorts::allocate();
    let hax = HaxProc::spawn(
        &agent.http_addr(),
        agent.node_name(),
        http_port,
        ports.hax,
        agent.dir(),
        &[],
    );
    assert!(
        hax.wait_log("`hax` service registered", T),
        "{}",
        hax.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    register_cluster(agent.client(), agent.node_name(), &ports);
    hax.assert_ready(T);
}

#[test]
fn hax_started_before_consul_waits_and_then_works() {
    let http_port = free_port();
    let consul_port = free_port();
    let dir = std::env::temp_dir().join(format!("hax-before-consul-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ports = ClusterPorts::allocate();
    let hax = HaxProc::spawn(
        &format!("127.0.0.1:{consul_port}"),
        "later-node",
        http_port,
        ports.hax,
        &dir,
        &[],
    );
    assert!(
        hax.wait_log("waiting for", T),
        "hax should say what it waits for:\n{}",
        hax.log_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    let hax = hax;
    assert!(hax.is_running(), "hax must not exit while Consul is down");
    let mut cfg = watch_config(http_port);
    cfg["ports"] = serde_json::json!({"http": consul_port});
    let agent = ConsulAgent::dev_with_json_named(&cfg, "later-node");
    register_cluster(agent.client(), agent.node_name(), &ports);
    hax.assert_ready(Duration::from_secs(40));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_exits_cleanly_and_releases_leadership() {
    let n = SingleNode::start();
    let took = n
        .hax
        .signal_and_wait("TERM", Duration::from_secs(10))
        .expect("hax exits after SIGTERM");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(n.hax.exit_code(), Some(0));
    let log = n.hax.log_text();
    assert!(
        log.contains("hax: stopped") && log.contains("session") && log.contains("destroyed"),
        "{log}"
    );
}

/// Builds tests/preload/hostile_signals.c (a library that, like libinfinipath, makes SIGTERM
/// and SIGINT call exit(1) from its load-time constructor) into `dir`.
fn hostile_signals_library(dir: &std::path::Path) -> std::path::PathBuf {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/preload/hostile_signals.c");
    let out = dir.join("libhostile_signals.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run cc (scripts/setup installs gcc)");
    assert!(status.success(), "cc failed to build {}", src.display());
    out
}

#[test]
fn sigterm_ends_in_the_bounded_shutdown_even_when_a_loaded_library_made_it_call_exit() {
    let dir = std::env::temp_dir().join(format!("hax-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let lib = hostile_signals_library(&dir);
    let n = SingleNode::start_with_env(&[("LD_PRELOAD", lib.to_str().expect("utf-8 path"))]);
    let took = n
        .hax
        .signal_and_wait("TERM", Duration::from_secs(10))
        .expect("hax exits after SIGTERM");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(
        n.hax.exit_code(),
        Some(0),
        "exit(1) from the preloaded handler instead of hax's shutdown"
    );
    // The shutdown ran: hax's own STOPPED (from Motr's stop, through the self link) was
    // recorded, and the leader key was released.
    assert_eq!(
        n.process_record(HAX)
            .and_then(|v| v["state"].as_str().map(String::from)),
        Some("M0_CONF_HA_PROCESS_STOPPED".to_string())
    );
    let leader = n.client().kv_get_pair("leader").expect("read leader");
    assert!(
        leader.is_none_or(|e| e.session.is_none()),
        "the leader key is still held"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_while_consul_is_down_exits_within_its_bound() {
    let n = SingleNode::start();
    n.agent.kill();
    std::thread::sleep(Duration::from_millis(300));
    let took = n
        .hax
        .signal_and_wait("TERM", Duration::from_secs(15))
        .expect("hax exits while Consul is down");
    assert!(
        took < Duration::from_secs(7),
        "shutdown with Consul down took {took:?} (bound 4 s + margin)"
    );
}

fn hax_check(consul: &str, fid: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hax"))
        .args(["--consul", consul, "check", fid])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[test]
fn hax_check_passes_only_for_a_started_process_whose_pid_is_alive() {
    let agent = shared_dev_agent();
    let c = agent.client();
    let prefix_fid = |k: u64| {
        hax::fid::Fid::typed(b'r', 0x77, k + (std::process::id() as u64 % 1000) * 10).to_string()
    };
    let (alive, dead, starting, missing): (String, String, String, String) =
        (prefix_fid(1), prefix_fid(2), prefix_fid(3), prefix_fid(4));
    let rec = |state: &str, pid: u32| {
        serde_json::json!({"state": state, "type": "M0_CONF_HA_PROCESS_M0D", "pid": pid})
            .to_string()
    };
    c.kv_put(
        &format!("processes/{alive}"),
        rec("M0_CONF_HA_PROCESS_DTM_RECOVERED", std::process::id()),
    )
    .unwrap();
    c.kv_put(
        &format!("processes/{dead}"),
        rec("M0_CONF_HA_PROCESS_STARTED", 4_000_000),
    )
    .unwrap();
    c.kv_put(
        &format!("processes/{starting}"),
        rec("M0_CONF_HA_PROCESS_STARTING", std::process::id()),
    )
    .unwrap();
    let addr = agent.http_addr();
    let (code, line) = hax_check(&addr, &alive);
    assert_eq!(code, 0, "{line}");
    for (fid, why) in [
        (&dead, "not alive"),
        (&starting, "not started"),
        (&missing, "no processes/"),
    ] {
        let (code, line) = hax_check(&addr, fid);
        assert_ne!(code, 0, "{fid}: {line}");
        assert!(
            line.contains(why),
            "{fid}: reason {line:?} should say {why:?}"
        );
        assert_eq!(line.lines().count(), 1);
    }
    let (code, line) = hax_check("127.0.0.1:1", &alive);
    assert_ne!(code, 0);
    assert!(line.contains("cannot read KV"), "{line}");
}

#[test]
fn bad_configuration_exits_64_with_a_clear_message() {
    for args in [
        &["--http-addr", "not-an-ip"][..],
        &["--leader-ttl-s", "3"],
        &["--no-such-flag"],
        &["check", "zz:1"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_hax"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{args:?} printed no reason");
    }
}

#[test]
fn a_process_stopping_cleanly_gets_its_stopped_confirmed_before_its_link_is_dropped() {
    // A real m0d/m0mkfs waits in m0_ha_link_flush for its STOPPED's confirmation: hax must
    // not let Motr drop the link (FAILED on the self link) before that confirmation, which
    // comes only once STOPPED is recorded in Consul, went out to the process.
    let n = SingleNode::start();
    for round in 0..3 {
        let p = n.sim(IOS2);
        p.boot().expect("boots");
        p.stop_clean()
            .unwrap_or_else(|e| panic!("round {round}: STOPPED never confirmed: {e}"));
        assert!(n.wait_process_state(IOS2, "STOPPED", Duration::from_secs(10)));
    }
}
