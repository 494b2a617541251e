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
    // The node that fails is not Consul's raft leader (killing that one is a leader election,
    // another test's subject); the other two run the listening processes.
    let raft_leader = c.consul.leader_index();
    let v = (0..3).rev().find(|i| Some(*i) != raft_leader).unwrap();
    let (i, j) = match v {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let a = c.booted_ios(i);
    let b = c.booted_ios(j);
    let far = c.nodes[v].ios;
    let t = Duration::from_secs(20);

    // A check on node 2: only node 2's hax reads it, the others hear it through bq/.
    c.client(v).check_fail(&format!("service:{far}")).unwrap();
    for p in [&a, &b] {
        assert!(
            ends_hearing(p, far, TRANSIENT, t),
            "{} did not hear {far} TRANSIENT:\n{}",
            p.fid(),
            c.log(v)
        );
    }
    let published = c.log_with(v, &["changed health: published to bq/"]);
    assert!(!lines_with(&published, &["changed health: published to bq/"]).is_empty());
    let consumed = c.log_with(i, &["bq: ", &format!("process {far} failing")]);
    assert!(
        !lines_with(&consumed, &["bq: ", &format!("process {far} failing")]).is_empty(),
        "node {i} learnt it from a HEALTH-UPDATE in bq/:\n{consumed}"
    );
    c.client(v).check_pass(&format!("service:{far}")).unwrap();
    for p in [&a, &b] {
        assert!(
            ends_hearing(p, far, ONLINE, t),
            "{} did not hear {far} ONLINE",
            p.fid()
        );
    }

    // Node 2's agent dies: its hax cannot tell anyone; the RC leader reports the node.
    let node2 = c.nodes[v].node_fid;
    let name2 = c.nodes[v].name.clone();
    c.consul.kill(v);
    for p in [&a, &b] {
        assert!(
            ends_hearing(p, node2, TRANSIENT, Duration::from_secs(45)),
            "{} did not hear node {node2} TRANSIENT after its agent died:\n{}",
            p.fid(),
            c.log(i)
        );
        assert!(
            ends_hearing(p, far, TRANSIENT, t),
            "its ios follows the node"
        );
    }

    // Removed from the catalog: gone, FAILED, and its processes with it.
    // Retried, through either live agent in turn: under load an agent may answer an error, or
    // not in time, while it still gossips the death.
    let mut last = String::new();
    let mut turn = 0;
    let left = wait_until(Duration::from_secs(60), || {
        turn += 1;
        let via = if turn % 2 == 1 { i } else { j };
        match c
            .client(via)
            .put(&format!("/v1/agent/force-leave/{name2}?prune"), b"")
        {
            Ok(_) => Some(()),
            Err(e) => {
                last = format!("{e:?}");
                None
            }
        }
    });
    assert!(left.is_some(), "force-leave of {name2} refused: {last}");
    for p in [&a, &b] {
        assert!(
            ends_hearing(p, node2, FAILED, Duration::from_secs(30)),
            "{} did not hear node {node2} FAILED once it left the catalog:\n{}",
            p.fid(),
            c.log(i)
        );
        assert!(ends_hearing(p, far, FAILED, t), "its ios follows the node");
    }
}
