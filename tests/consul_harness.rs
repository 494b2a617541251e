//! Proves the real-Consul test harness (tests/support) and pins the Consul 1.16 behaviour hax
//! relies on: KV CAS, transaction limits, catalog filters, HTTP watches, leader failover.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const FID: &str = "0x7200000000000001:0xc";

#[test]
fn kv_put_get_roundtrip_and_cas_rejects_stale_index_accepts_current() {
    let agent = shared_dev_agent();
    let _log = agent.log_on_panic();
    let c = agent.client();
    let key = format!("{}epoch", unique_prefix("kv_cas"));

    assert_eq!(c.kv_get(&key).unwrap(), None, "fresh key must be absent");
    c.kv_put(&key, "1").unwrap();
    let first = c.kv_get_pair(&key).unwrap().expect("key after put");
    assert_eq!(first.value_str(), "1");

    c.kv_put(&key, "2").unwrap();
    let second = c.kv_get_pair(&key).unwrap().unwrap();
    assert!(second.modify_index > first.modify_index);

    assert!(
        !c.kv_cas(&key, "stale", first.modify_index).unwrap(),
        "CAS with a stale index must fail"
    );
    assert_eq!(c.kv_get_string(&key).unwrap().as_deref(), Some("2"));
    assert!(
        !c.kv_cas(&key, "exists", 0).unwrap(),
        "cas=0 must fail on an existing key"
    );

    assert!(
        c.kv_cas(&key, "3", second.modify_index).unwrap(),
        "CAS with the current index must succeed"
    );
    assert_eq!(c.kv_get(&key).unwrap().as_deref(), Some(&b"3"[..]));

    // Binary values and key escaping survive the round trip.
    let odd = format!("{}odd key:0x1/ü", unique_prefix("kv_cas"));
    c.kv_put(&odd, [0u8, 255, 10, 13]).unwrap();
    assert_eq!(c.kv_get(&odd).unwrap(), Some(vec![0u8, 255, 10, 13]));
}

#[test]
fn txn_of_64_kv_sets_commits_and_all_keys_read_back() {
    let agent = shared_dev_agent();
    let _log = agent.log_on_panic();
    let c = agent.client();
    let prefix = unique_prefix("txn64");
    let ops: Vec<Value> = (0..64)
        .map(|i| txn_kv_set(&format!("{prefix}k{i:02}"), format!("v{i}")))
        .collect();
    let r = c.txn(&ops).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap()["Results"].as_array().unwrap().len(), 64);

    let got = c.kv_list(&prefix).unwrap();
    assert_eq!(got.len(), 64);
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.key, format!("{prefix}k{i:02}"));
        assert_eq!(p.value_str(), format!("v{i}"));
    }
}

#[test]
fn txn_op_limit_in_consul_1_16_is_128_and_129_is_rejected_with_413() {
    let agent = shared_dev_agent();
    let _log = agent.log_on_panic();
    let c = agent.client();
    let prefix = unique_prefix("txn_limit");
    let ops = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| txn_kv_set(&format!("{prefix}{n}/{i}"), "x"))
            .collect()
    };

    for n in [65, 128] {
        let r = c.txn(&ops(n)).unwrap();
        assert_eq!(r.status, 200, "{n} ops: {}", r.text());
        assert_eq!(c.kv_list(&format!("{prefix}{n}/")).unwrap().len(), n);
    }
    let r = c.txn(&ops(129)).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.text().contains("too many operations (129 > 128)"),
        "{}",
        r.text()
    );
    assert!(
        c.kv_list(&format!("{prefix}129/")).unwrap().is_empty(),
        "a rejected txn writes nothing"
    );
}

#[test]
fn txn_with_a_failing_cas_rolls_back_with_409_and_op_index() {
    let agent = shared_dev_agent();
    let _log = agent.log_on_panic();
    let c = agent.client();
    let prefix = unique_prefix("txn_rollback");
    c.kv_put(&format!("{prefix}guard"), "g").unwrap();
    let ops = vec![
        txn_kv_set(&format!("{prefix}a"), "1"),
        txn_kv_cas(&format!("{prefix}guard"), "h", 1), // stale index
        txn_kv_set(&format!("{prefix}b"), "2"),
    ];
    let r = c.txn(&ops).unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json().unwrap()["Errors"][0]["OpIndex"], 1);
    assert_eq!(
        c.kv_get(&format!("{prefix}a")).unwrap(),
        None,
        "the whole txn must roll back"
    );
    assert_eq!(
        c.kv_get_string(&format!("{prefix}guard"))
            .unwrap()
            .as_deref(),
        Some("g")
    );
}

/// Registers an `ios` service with a TTL check under a unique fid-like id on the shared agent.
fn register_ios(c: &ConsulClient, id: &str) {
    c.register_service(&json!({
        "ID": id,
        "Name": "ios",
        "Tags": ["hax-test"],
        "Meta": {"fid": FID},
        "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "10m"},
    }))
    .unwrap();
}

#[test]
fn service_with_ttl_check_is_found_by_quoted_node_filter_and_unquoted_dashed_value_is_an_error() {
    let agent = shared_dev_agent();
    let _log = agent.log_on_panic();
    let c = agent.client();
    let node = agent.node_name();
    assert!(
        node.contains('-'),
        "the scenario needs a node name with a dash: {node}"
    );
    let id = format!("{FID}-filter");
    register_ios(c, &id);

    // The agent syncs the registration to the catalog asynchronously (anti-entropy).
    let quoted = format!(r#"Node == "{node}" and ServiceID == "{id}""#);
    let found = wait_until(Duration::from_secs(10), || {
        let v = c
            .catalog_service("ios", Some(&quoted))
            .unwrap()
            .expect_ok("catalog")
            .unwrap()
            .json()
            .unwrap();
        (v.as_array()?.len() == 1).then_some(v)
    })
    .expect("service never appeared in the catalog");
    assert_eq!(found[0]["ServiceID"], id.as_str());
    assert_eq!(found[0]["Node"], node);
    assert_eq!(found[0]["ServiceMeta"]["fid"], FID);

    // The check exists, named after the service, critical until the first pass.
    let health = c
        .health_service("ios", Some(&format!(r#"Service.ID == "{id}""#)))
        .unwrap()
        .json()
        .unwrap();
    let check = health[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["CheckID"] == format!("service:{id}"));
    assert_eq!(check.expect("service check")["Status"], "critical");

    // Consul 1.16: an unquoted value made of [A-Za-z0-9_] is accepted as a string...
    let r = c
        .catalog_service("ios", Some("ServiceName == ios"))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.json().unwrap().as_array().unwrap().is_empty());
    // ...but a dash does not parse: HTTP 500 "Failed to create boolean expression evaluator".
    let r = c
        .catalog_service("ios", Some(&format!("Node == {node}")))
        .unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text()
            .contains("Failed to create boolean expression evaluator"),
        "{}",
        r.text()
    );

    c.deregister_service(&id).unwrap();
}

#[test]
fn http_watch_on_service_posts_health_array_when_ttl_check_passes_then_fails() {
    let sink = WatchSink::start();
    let agent = ConsulAgent::dev_with(&format!(
        r#"
watches = [{{
  type = "service"
  service = "ios"
  handler_type = "http"
  http_handler_config {{
    path = "{}"
    method = "POST"
    timeout = "10s"
  }}
}}]
"#,
        sink.url_for("/watch/ios")
    ));
    let c = agent.client();
    let check_id = format!("service:{FID}");
    let status_in = |d: &Delivery| -> Option<String> {
        let checks = d
            .json()
            .as_array()?
            .first()?
            .get("Checks")?
            .as_array()?
            .clone();
        let k = checks.iter().find(|k| k["CheckID"] == check_id.as_str())?;
        Some(k["Status"].as_str()?.to_string())
    };

    // The watch fires once at agent start, with the (empty) current view.
    let first = sink
        .wait_for(|_| true, Duration::from_secs(15))
        .expect("no delivery at agent start");
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/watch/ios");
    assert!(
        first.consul_index().is_some(),
        "deliveries carry X-Consul-Index"
    );

    register_ios(c, FID);
    let mark = sink.count();
    let t = Instant::now();
    c.check_pass(&check_id).unwrap();
    let pass = sink
        .wait_for_since(
            mark,
            |d| status_in(d).as_deref() == Some("passing"),
            Duration::from_secs(15),
        )
        .unwrap_or_else(|| {
            panic!(
                "no passing delivery; got {:?}",
                sink.deliveries()
                    .iter()
                    .map(Delivery::text)
                    .collect::<Vec<_>>()
            )
        });
    println!("passing delivered {:?} after the check update", t.elapsed());
    let body = pass.json();
    assert_eq!(
        body.as_array().unwrap().len(),
        1,
        "one ios instance: {body}"
    );
    assert_eq!(body[0]["Service"]["ID"], FID);
    assert_eq!(body[0]["Node"]["Node"], agent.node_name());

    let mark = sink.count();
    let t = Instant::now();
    c.check_fail(&check_id).unwrap();
    sink.wait_for_since(
        mark,
        |d| status_in(d).as_deref() == Some("critical"),
        Duration::from_secs(15),
    )
    .expect("no critical delivery after /fail");
    println!(
        "critical delivered {:?} after the check update",
        t.elapsed()
    );
}

#[test]
fn json_configured_key_watch_posts_null_for_missing_key_then_the_entry_with_custom_header() {
    let sink = WatchSink::start();
    let agent = ConsulAgent::dev_with_json(&json!({"watches": [{
        "type": "key",
        "key": "hax/epoch",
        "handler_type": "http",
        "http_handler_config": {
            "path": sink.url_for("/watch/epoch"),
            "method": "POST",
            "header": {"x-hax-test": ["watch"]},
            "timeout": "10s",
        },
    }]}));
    let first = sink
        .wait_for(|_| true, Duration::from_secs(15))
        .expect("no delivery at agent start");
    assert_eq!(first.path, "/watch/epoch");
    assert_eq!(first.header("x-hax-test"), Some("watch"));
    assert_eq!(
        first.text().trim(),
        "null",
        "a missing key is delivered as null"
    );

    let mark = sink.count();
    agent.client().kv_put("hax/epoch", "42").unwrap();
    let d = sink
        .wait_for_since(
            mark,
            |d| d.json().get("Key").is_some(),
            Duration::from_secs(15),
        )
        .expect("no delivery after the put");
    let entry = KvPair::from_json(&d.json()).unwrap();
    assert_eq!(
        (entry.key.as_str(), entry.value_str().as_str()),
        ("hax/epoch", "42")
    );
    assert_eq!(d.consul_index(), Some(entry.modify_index));
}

#[test]
fn dedicated_agent_is_killed_and_its_dir_removed_on_drop() {
    let agent = ConsulAgent::dev();
    let pid = agent.pid().unwrap();
    let dir = agent.dir().to_path_buf();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert!(agent.log_path().exists());
    agent.client().kv_put("x", "y").unwrap();
    assert_ne!(agent.http_url(), shared_dev_agent().http_url());
    drop(agent);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "agent process {pid} survived drop"
    );
    assert!(!dir.exists(), "{} survived drop", dir.display());
}

#[test]
fn three_server_cluster_resumes_writes_after_leader_kill_and_old_leader_rejoins() {
    let t = Instant::now();
    let mut cluster = ConsulCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    println!(
        "3-server cluster up with leader {leader} in {:?}",
        t.elapsed()
    );
    for i in 0..3 {
        assert_eq!(cluster.raft_peers(i).unwrap().len(), 3);
    }
    assert_eq!(cluster.leader_index(), Some(leader));
    cluster.any_live_client().kv_put("hax/before", "1").unwrap();

    cluster.kill(leader);
    let killed = Instant::now();
    let survivor = (0..3).find(|&i| i != leader).unwrap();
    let c = ConsulClient::with_timeout(&cluster.http_url(survivor), Duration::from_secs(10));
    let old_addr = format!("127.0.0.1:{}", cluster.ports(leader).server);
    let (mut attempts, mut elected) = (0, None);
    wait_until(Duration::from_secs(30), || {
        attempts += 1;
        let new_leader_known =
            |c: &ConsulClient| c.leader().is_ok_and(|l| !l.is_empty() && l != old_addr);
        if elected.is_none() && new_leader_known(&c) {
            elected = Some(killed.elapsed());
        }
        let written = c.kv_put("hax/after", "2").ok();
        if elected.is_none() && written.is_some() && new_leader_known(&c) {
            elected = Some(killed.elapsed());
        }
        written
    })
    .expect("writes never resumed after the leader was killed");
    let resumed = killed.elapsed();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    println!(
        "writes resumed {resumed:?} after SIGKILL of leader {leader} ({attempts} attempts; \
         survivor {survivor} saw new leader {new_leader} after {elected:?})"
    );
    assert!(
        resumed < Duration::from_secs(20),
        "failover took {resumed:?}"
    );

    let t = Instant::now();
    cluster.restart(leader);
    // Rejoined: it follows the new leader and has replicated what was written without it.
    wait_until(Duration::from_secs(30), || {
        let old = cluster.client(leader);
        let l = old.leader().ok()?;
        let v = old.get("/v1/kv/hax/after?stale").ok()?;
        (l.ends_with(&format!(":{}", cluster.ports(new_leader).server)) && v.ok()).then_some(())
    })
    .expect("restarted server did not rejoin");
    assert_eq!(cluster.wait_for_leader(Duration::from_secs(10)), new_leader);
    assert_eq!(cluster.raft_peers(leader).unwrap().len(), 3);
    assert_eq!(
        cluster
            .client(leader)
            .kv_get_string("hax/after")
            .unwrap()
            .as_deref(),
        Some("2")
    );
    println!("old leader {leader} rejoined in {:?}", t.elapsed());
}
