//! RC leader election across two hax instances on a 3-server Consul cluster.
mod support;

use hax::fid::Fid;
use hax_sim::{SimConfig, SimProcess};
use std::time::{Duration, Instant};
use support::*;

/// Node `i` of the kit's layout: a hax and a confd.
fn layout(cluster: &ConsulCluster, i: usize) -> NodeDef {
    NodeDef::new(i, cluster.node_name(i))
        .with_hax(free_port())
        .with_confd(free_port())
}

fn leader_value(c: &ConsulClient) -> Option<String> {
    let p = c.kv_get_pair("leader").ok().flatten()?;
    p.session.as_ref().filter(|s| !s.is_empty())?;
    Some(p.value_str())
}

#[test]
fn when_the_leaders_hax_dies_the_other_takes_over_and_entrypoints_follow_the_new_rm() {
    let cluster = ConsulCluster::start(3);
    let nodes = [layout(&cluster, 0), layout(&cluster, 1)];
    for (i, n) in nodes.iter().enumerate() {
        n.register(cluster.client(i)).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("hax-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let haxes: Vec<HaxProc> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            HaxProc::spawn(
                &cluster.http_url(i),
                &n.name,
                free_port(),
                n.process("hax").unwrap().port,
                &dir,
                &[],
            )
        })
        .collect();
    for h in &haxes {
        h.assert_ready(Duration::from_secs(30));
    }
    let c = cluster.client(2);
    let first =
        wait_until(Duration::from_secs(20), || leader_value(c)).expect("a leader is elected");
    // Each hax says whether its campaign holds the key (its hax_rc_leader metric).
    let holders = || -> Vec<usize> {
        haxes
            .iter()
            .enumerate()
            .filter(|(_, h)| h.metric("hax_rc_leader") == Some(1.0))
            .map(|(i, _)| i)
            .collect()
    };
    let holders = wait_until(Duration::from_secs(10), || {
        let h = holders();
        (h.len() == 1).then_some(h)
    })
    .unwrap_or_else(holders);
    assert_eq!(holders.len(), 1, "exactly one hax holds the leader key");
    let (leader, other) = if first == nodes[0].name {
        (0, 1)
    } else {
        (1, 0)
    };
    assert_eq!(holders, vec![leader]);

    // A process asking the surviving hax gets the leader's confd RM.
    let ask = |h: &HaxProc| {
        let p = SimProcess::connect(
            &h.endpoint(),
            SimConfig::new(Fid::typed(b'r', 3, 0x40 + rand_key())),
        )
        .unwrap();
        p.entrypoint_until_ok(true, Instant::now() + Duration::from_secs(45))
            .unwrap()
            .0
    };
    let before = ask(&haxes[other]);
    assert_eq!(
        before.rm_fid,
        nodes[leader].service("confd", "rms").unwrap()
    );
    assert_eq!(before.confds.len(), 2);
    assert_eq!(before.quorum, 2);

    let t0 = Instant::now();
    haxes[leader]
        .signal_and_wait("KILL", Duration::from_secs(5))
        .expect("killed");
    let second = wait_until(Duration::from_secs(45), || {
        leader_value(c).filter(|v| *v == nodes[other].name)
    });
    assert!(
        second.is_some(),
        "the surviving hax did not take over:\n{}",
        haxes[other].log_text()
    );
    eprintln!(
        "leadership moved to {} {:?} after the leader's hax was killed",
        nodes[other].name,
        t0.elapsed()
    );
    let after = wait_until(Duration::from_secs(20), || {
        let r = ask(&haxes[other]);
        (r.rm_fid == nodes[other].service("confd", "rms").unwrap()).then_some(r)
    })
    .expect("entrypoint replies follow the new leader");
    assert_eq!(
        after.rm_ep,
        nodes[other].process("confd").unwrap().endpoint()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn rand_key() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_micros() as u64
}
