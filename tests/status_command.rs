//! `hax status` against a real Consul and a running hax: the human view and `--json` say the
//! same thing, and the exit code follows the HA states (0 all ONLINE, 1 not, 2 hax gone).
mod support;

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::*;

/// Runs `hax status` against the node; (exit code, stdout).
fn status(n: &SingleNode, json: bool) -> (i32, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hax"));
    c.args([
        "--consul",
        &n.agent.http_addr(),
        "--http-port",
        &n.hax.http_port.to_string(),
        "status",
    ]);
    if json {
        c.arg("--json");
    }
    let out = c.output().expect("run hax status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn process<'a>(doc: &'a Value, fid: &str) -> &'a Value {
    doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["processes"].as_array().unwrap().iter())
        .find(|p| p["fid"] == fid)
        .unwrap_or_else(|| panic!("{fid} in {doc}"))
}

#[test]
fn status_shows_every_process_and_exits_by_their_ha_states() {
    let n = SingleNode::start();
    let sims: Vec<_> = [CONFD, IOS1, IOS2]
        .iter()
        .map(|f| {
            let s = n.sim(*f);
            s.boot().expect("boots");
            s
        })
        .collect();
    // Every process ONLINE: exit 0, the same in both views.
    let ok = wait_until(Duration::from_secs(20), || {
        let (code, out) = status(&n, true);
        (code == 0).then_some(out)
    });
    let doc: Value =
        serde_json::from_str(&ok.expect("hax status exits 0 once all are ONLINE")).unwrap();
    assert_eq!(doc["all_online"], true);
    assert_eq!(doc["hax"]["reachable"], true);
    assert_eq!(doc["rc_leader"]["node"], n.agent.node_name());
    let ios1 = process(&doc, &IOS1.to_string());
    assert_eq!(
        (ios1["consul"].as_str(), ios1["ha"].as_str()),
        (Some("passing"), Some("ONLINE"))
    );
    assert!(
        ios1["kv"].as_str().unwrap().ends_with("DTM_RECOVERED"),
        "{ios1}"
    );
    let (code, human) = status(&n, false);
    assert_eq!(code, 0, "{human}");
    for f in [HAX, CONFD, IOS1, IOS2] {
        let line = human
            .lines()
            .find(|l| l.trim_start().starts_with(&f.to_string()))
            .unwrap_or_else(|| panic!("{f} in\n{human}"));
        assert!(line.trim_end().ends_with("ONLINE"), "{line}");
    }
    assert!(
        human.contains(&format!("RC leader: {}", n.agent.node_name())),
        "{human}"
    );
    assert!(human.contains("queues: eq/"), "{human}");

    // ios1's check fails: exit 1, Consul critical and HA TRANSIENT for it.
    n.client().check_fail(&format!("service:{IOS1}")).unwrap();
    let failing = wait_until(Duration::from_secs(20), || {
        let (code, out) = status(&n, true);
        let doc: Value = serde_json::from_str(&out).ok()?;
        (code == 1 && process(&doc, &IOS1.to_string())["ha"] == "TRANSIENT").then_some(doc)
    })
    .expect("hax status exits 1 with ios1 TRANSIENT");
    assert_eq!(process(&failing, &IOS1.to_string())["consul"], "critical");
    assert_eq!(failing["all_online"], false);
    let (code, human) = status(&n, false);
    assert_eq!(code, 1);
    let line = human
        .lines()
        .find(|l| l.trim_start().starts_with(&IOS1.to_string()))
        .unwrap();
    assert!(
        line.contains("critical") && line.trim_end().ends_with("TRANSIENT"),
        "{line}"
    );

    // hax stopped: the HA states are unknown, exit 2.
    drop(sims);
    n.hax
        .signal_and_wait("TERM", Duration::from_secs(10))
        .expect("hax stops");
    let (code, human) = status(&n, false);
    assert_eq!(code, 2, "{human}");
    assert!(human.contains("could not be asked"), "{human}");
}
