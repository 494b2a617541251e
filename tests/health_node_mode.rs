//! `--health-from node` (the default) on a real three-server Consul cluster with a hax per
//! node: each hax watches only its own node's checks and publishes what changed to `bq/`; the
//! RC leader watches node liveness for everyone (docs/scaling.md). The processes of the other
//! nodes must hear a failure, its end, a dead node and a node removed from the catalog.
mod rc_common;
mod support;

use hax::fid::Fid;
use hax_sim::SimProcess;
use rc_common::*;
use std::time::Duration;
use support::*;

const ONLINE: u32 = 1;
const FAILED: u32 = 2;
const TRANSIENT: u32 = 3;

/// The last broadcast `p` heard about `fid` is `state` (within `timeout`).
fn ends_hearing(p: &SimProcess, fid: Fid, state: u32, timeout: Duration) -> bool {
    wait_until(timeout, || {
        let last = p
            .received_notes()
            .iter()
            .rev()
            .find(|n| n.fid == fid && n.id_of_get == 0)
            .map(|n| n.state);
        (last == Some(state)).then_some(())
    })
    .is_some()
}

#[test]
fn a_check_on_one_node_a_dead_node_and_a_removed_node_reach_the_processes_of_the_others() {
    let mut c = RcCluster::start("nodemode", 3, 3, &[]);
    let a = c.booted_ios(0);
    let b = c.booted_ios(1);
    let far = c.nodes[2].ios;
    let t = Duration::from_secs(20);

    // A check on node 2: only node 2's hax reads it, the others hear it through bq/.
    c.client(2).check_fail(&format!("service:{far}")).unwrap();
    for p in [&a, &b] {
        assert!(
            ends_hearing(p, far, TRANSIENT, t),
            "{} did not hear {far} TRANSIENT:\n{}",
            p.fid(),
            c.log(2)
        );
    }
    let published = c.log_with(2, &["changed health: published to bq/"]);
    assert!(!lines_with(&published, &["changed health: published to bq/"]).is_empty());
    let consumed = c.log_with(0, &["bq: ", &format!("process {far} failing")]);
    assert!(
        !lines_with(&consumed, &["bq: ", &format!("process {far} failing")]).is_empty(),
        "node 0 learnt it from a HEALTH-UPDATE in bq/:\n{consumed}"
    );
    c.client(2).check_pass(&format!("service:{far}")).unwrap();
    for p in [&a, &b] {
        assert!(
            ends_hearing(p, far, ONLINE, t),
            "{} did not hear {far} ONLINE",
            p.fid()
        );
    }

    // Node 2's agent dies: its hax cannot tell anyone; the RC leader reports the node.
    let node2 = c.nodes[2].node_fid;
    let name2 = c.nodes[2].name.clone();
    c.consul.kill(2);
    for p in [&a, &b] {
        assert!(
            ends_hearing(p, node2, TRANSIENT, Duration::from_secs(45)),
            "{} did not hear node {node2} TRANSIENT after its agent died:\n{}",
            p.fid(),
            c.log(0)
        );
        assert!(
            ends_hearing(p, far, TRANSIENT, t),
            "its ios follows the node"
        );
    }

    // Removed from the catalog: gone, FAILED, and its processes with it.
    c.client(0)
        .put(&format!("/v1/agent/force-leave/{name2}?prune"), b"")
        .expect("force-leave");
    for p in [&a, &b] {
        assert!(
            ends_hearing(p, node2, FAILED, Duration::from_secs(30)),
            "{} did not hear node {node2} FAILED once it left the catalog:\n{}",
            p.fid(),
            c.log(0)
        );
        assert!(ends_hearing(p, far, FAILED, t), "its ios follows the node");
    }
}
