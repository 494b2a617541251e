//! Faults around hax: Consul going away under load.
mod support;

use hax::fid::Fid;
use hax_sim::{ProcessEvent, ProcessType, SimConfig, SimProcess};
use std::time::{Duration, Instant};
use support::*;

const PROCESSES: u64 = 100;
const ROUNDS: u64 = 10;

fn event_with_seq(p: &SimProcess, seq: u64) -> u64 {
    let event = if seq % 2 == 1 {
        ProcessEvent::Starting
    } else {
        ProcessEvent::Started
    };
    p.send_process_event_with_pid(event, ProcessType::M0d, seq)
        .expect("send event")
}

#[test]
fn consul_killed_while_a_thousand_process_events_arrive_is_told_nothing_false_and_loses_none() {
    let mut cluster = ConsulCluster::start(3);
    let http_port = free_port();
    let ports = ClusterPorts::allocate();
    register_cluster(cluster.client(0), cluster.node_name(0), &ports);
    let dir = std::env::temp_dir().join(format!("hax-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let consul0 = cluster.http_url(0);
    let hax = HaxProc::spawn(
        &consul0,
        cluster.node_name(0),
        http_port,
        ports.hax,
        &dir,
        &[],
    );
    hax.assert_ready(Duration::from_secs(30));

    let sims: Vec<SimProcess> = (0..PROCESSES)
        .map(|i| {
            let p = SimProcess::connect(
                &hax.endpoint(),
                SimConfig::new(Fid::typed(b'r', 2, 0x1000 + i)),
            )
            .unwrap();
            p.entrypoint_until_ok(true, Instant::now() + Duration::from_secs(20))
                .expect("entrypoint");
            p
        })
        .collect();
    let mut last_tags = vec![0u64; sims.len()];
    for seq in 1..=3 {
        for (i, p) in sims.iter().enumerate() {
            last_tags[i] = event_with_seq(p, seq);
        }
    }
    // Recorded: confirmed.
    for (p, tag) in sims.iter().zip(&last_tags) {
        p.wait_for_ack(*tag, Duration::from_secs(20))
            .expect("hax confirms what it recorded");
    }
    cluster.kill(0);
    for seq in 4..=ROUNDS {
        for (i, p) in sims.iter().enumerate() {
            last_tags[i] = event_with_seq(p, seq);
        }
    }
    // Consul is down: nothing after the kill is durable, so nothing is confirmed. Motr keeps
    // the messages (and would send them again to another hax).
    std::thread::sleep(Duration::from_secs(2));
    let confirmed: Vec<Fid> = sims
        .iter()
        .zip(&last_tags)
        .filter(|(p, tag)| p.wait_for_ack(**tag, Duration::ZERO).is_ok())
        .map(|(p, _)| p.fid())
        .collect();
    assert!(
        confirmed.is_empty(),
        "hax confirmed events it could not record: {confirmed:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let down_for = Instant::now();
    cluster.restart(0);
    let c = ConsulClient::new(&consul0);
    let all_final = wait_until(Duration::from_secs(60), || {
        let done = sims.iter().all(|p| {
            c.kv_get(&format!("processes/{}", p.fid()))
                .ok()
                .flatten()
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
                .is_some_and(|v| v["pid"].as_u64() == Some(ROUNDS))
        });
        done.then_some(())
    });
    assert!(
        all_final.is_some(),
        "not every process's last event reached KV:\n{}",
        log_tail(&hax.log, 30)
    );
    for (p, tag) in sims.iter().zip(&last_tags) {
        p.wait_for_ack(*tag, Duration::from_secs(20))
            .expect("confirmed once recorded");
    }
    eprintln!(
        "all {} events' final states in KV {:?} after Consul came back",
        PROCESSES * ROUNDS,
        down_for.elapsed()
    );
    // Nothing older overwrote anything newer: every record holds its process's last event.
    for p in &sims {
        let v: serde_json::Value = serde_json::from_slice(
            &c.kv_get(&format!("processes/{}", p.fid()))
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(v["pid"].as_u64(), Some(ROUNDS));
        assert_eq!(v["state"], "M0_CONF_HA_PROCESS_STARTED");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
