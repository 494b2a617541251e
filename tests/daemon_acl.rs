//! hax against a Consul agent with ACLs enabled and a default-deny policy.
mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

const ROOT: &str = "3f1e2c44-1111-4a6e-9c53-hax-acl-test";

#[test]
fn with_acls_default_deny_hax_works_with_a_token_and_waits_clearly_without_one() {
    let http_port = free_port();
    let mut cfg = watch_config(http_port);
    cfg["acl"] = json!({"enabled": true, "default_policy": "deny", "enable_token_persistence": false,
                        "tokens": {"initial_management": ROOT, "agent": ROOT}});
    let agent = ConsulAgent::dev_with_json(&cfg);
    let ports = ClusterPorts::allocate();
    register_cluster(agent.client(), agent.node_name(), &ports);
    // Anonymous reads see nothing: the catalog entry hax needs is hidden.
    let anon = ConsulClient::new(&agent.http_url());
    assert_eq!(
        anon.get("/v1/catalog/service/hax").unwrap().text().trim(),
        "[]"
    );

    let without = HaxProc::spawn(
        &agent.http_addr(),
        agent.node_name(),
        free_port(),
        free_port(),
        agent.dir(),
        &[],
    );
    assert!(
        without.wait_log("`hax` service registered", Duration::from_secs(20)),
        "{}",
        without.log_text()
    );
    assert!(!without.is_ready());
    drop(without);

    let with = HaxProc::spawn(
        &agent.http_addr(),
        agent.node_name(),
        http_port,
        ports.hax,
        agent.dir(),
        &["--token", ROOT],
    );
    with.assert_ready(Duration::from_secs(30));
    assert!(
        !with.log_text().contains(ROOT),
        "the token must never be logged"
    );
    let p = hax_sim::SimProcess::connect(&with.endpoint(), {
        let mut c = hax_sim::SimConfig::new(CONFD);
        c.endpoint = format!("{EP}{}", ports.confd);
        c
    })
    .unwrap();
    p.boot().expect("boots with ACLs on");
    let rec = wait_until(Duration::from_secs(20), || {
        agent
            .client()
            .kv_get(&format!("processes/{CONFD}"))
            .ok()
            .flatten()
            .filter(|v| String::from_utf8_lossy(v).contains("DTM_RECOVERED"))
    });
    assert!(rec.is_some(), "hax wrote processes/ with its token");
}
