//! Fault: hax's Consul server frozen (SIGSTOP) for longer than the leader session's TTL in a
//! 3-server cluster, then thawed (SIGCONT).
//!
//! While it is frozen every request hax makes to it hangs (the kernel still accepts the
//! connections). hax must keep answering entrypoint requests, from its cached view or with
//! EAGAIN after its pause, and keep confirming Motr's messages; after SIGCONT it must write
//! what it queued, and get the RC leader key back (the other servers declare the frozen node
//! failed, which invalidates the session tied to its serfHealth).
#[path = "faults_common.rs"]
mod common;
mod support;

use common::*;
use hax::fid::Fid;
use hax_sim::ProcessEvent;
use std::time::{Duration, Instant};
use support::*;

/// Longer than the leader session's TTL (10 s).
const PAUSE: Duration = Duration::from_secs(15);

/// SIGCONTs the process when dropped (also when the test fails while it is stopped).
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

#[test]
fn hax_serves_entrypoints_while_its_consul_server_is_frozen_and_recovers_after() {
    let cluster = ConsulCluster::start(3);
    let ports = ClusterPorts::allocate();
    register_cluster(cluster.client(0), cluster.node_name(0), &ports);
    let dir = std::env::temp_dir().join(format!("hax-faults-pause-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hax = HaxProc::spawn(
        &cluster.http_url(0),
        cluster.node_name(0),
        free_port(),
        ports.hax,
        &dir,
        &[],
    );
    hax.assert_ready(Duration::from_secs(30));
    let other = cluster.http_url(1);
    let c1 = ConsulClient::new(&other);
    let holder = |c: &ConsulClient| {
        c.kv_get_pair("leader")
            .ok()
            .flatten()
            .filter(|p| p.session.as_deref().is_some_and(|s| !s.is_empty()))
            .map(|p| (p.value_str(), p.session.clone().unwrap_or_default()))
    };
    let (_, session_before) =
        wait_until(Duration::from_secs(20), || holder(&c1)).expect("an RC leader");
    let driver = RawPeer::connect(&hax.endpoint(), IOS1);
    let before = driver
        .entrypoint_until_ok(Duration::from_secs(20))
        .expect("entrypoint");
    let consul_pid =
        child_with_arg(&format!("-node={}", cluster.node_name(0))).expect("pid of consul server 0");
    let raft_leader_was = cluster.leader_index();

    signal(consul_pid, "STOP");
    let thaw = Thaw(consul_pid);
    let t_stop = Instant::now();
    let mut replies: Vec<(i32, Duration)> = Vec::new();
    let mut seq = 0;
    let mut n = 0;
    let mut last_tag = 0;
    // Bounded: one probe every ~500 ms for PAUSE.
    while t_stop.elapsed() < PAUSE {
        n += 1;
        seq += 1;
        let tag = driver
            .send_event(
                if seq % 2 == 1 {
                    ProcessEvent::Starting
                } else {
                    ProcessEvent::Started
                },
                seq,
            )
            .expect("event");
        let p = RawPeer::connect(&hax.endpoint(), Fid::typed(b'r', 3, 0x200 + n));
        let t = Instant::now();
        let r = p.entrypoint(true);
        let took = t.elapsed();
        let r = r.unwrap_or_else(|| {
            panic!(
                "no entrypoint reply within 10 s, {:?} into the pause",
                t_stop.elapsed()
            )
        });
        replies.push((r.rc, took));
        if r.rc == 0 {
            assert_eq!(
                (r.rm_fid, r.rm_ep.clone()),
                (before.rm_fid, before.rm_ep.clone()),
                "a cached answer is the last known one"
            );
        }
        last_tag = tag;
        drop(p);
        std::thread::sleep(Duration::from_millis(500).saturating_sub(took));
    }
    let paused_for = t_stop.elapsed();
    let during = holder(&c1);
    // hax's Consul server is frozen: nothing hax received meanwhile is durable, so nothing
    // of it may have been confirmed to Motr.
    let confirmed_while_frozen = driver.with_state(|s| s.acked >= last_tag);
    drop(thaw);
    let t_cont = Instant::now();

    // Recovery: entrypoints answered for real, queued writes in KV, the leader key held again.
    // Polled together (bounded: 30 s), each time taken when first seen.
    let (mut first_ok, mut kv, mut leader) = (None, None, None);
    let mut probe = 0x1000;
    while t_cont.elapsed() < Duration::from_secs(30)
        && (first_ok.is_none() || kv.is_none() || leader.is_none())
    {
        if kv.is_none() && kv_seq(&other, IOS1) == Some(seq) {
            kv = Some(t_cont.elapsed());
        }
        if leader.is_none()
            && holder(&c1)
                .is_some_and(|(node, s)| node == cluster.node_name(0) && s != session_before)
        {
            leader = Some(t_cont.elapsed());
        }
        if first_ok.is_none() {
            probe += 1;
            let p = RawPeer::connect(&hax.endpoint(), Fid::typed(b'r', 3, probe));
            if p.entrypoint(true).is_some_and(|r| r.rc == 0) {
                first_ok = Some(t_cont.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let eagain_after = probe - 0x1000 - u64::from(first_ok.is_some());
    let ok = replies.iter().filter(|r| r.0 == 0).count();
    let eagain: Vec<Duration> = replies.iter().filter(|r| r.0 != 0).map(|r| r.1).collect();
    let all: Vec<Duration> = replies.iter().map(|r| r.1).collect();
    eprintln!(
        "consul server 0 (raft leader before: {raft_leader_was:?}) stopped {paused_for:?}: {} entrypoint requests, {ok} answered from the cache, \
         {} EAGAIN (min {:?}), reply p50 {:?} max {:?}; leader key during the pause: {during:?}; {seq} events sent, the last confirmed during the pause: {confirmed_while_frozen}; \
         after SIGCONT: entrypoint ok {first_ok:?} ({eagain_after} EAGAIN before), KV caught up {kv:?}, leader key re-acquired {leader:?}",
        replies.len(),
        eagain.len(),
        eagain.iter().min(),
        pct(&all, 50),
        pct(&all, 100)
    );
    figure(
        "c: Consul server SIGSTOP 15 s (3 servers)",
        &format!(
            "events {seq}, last ACKed while frozen: {confirmed_while_frozen} | in KV {:?} | entrypoints {} ({ok} cached, {} EAGAIN), max {:?} | after SIGCONT: ep {first_ok:?} ({eagain_after} EAGAIN), KV {kv:?}, leader {leader:?}",
            kv_seq(&other, IOS1),
            replies.len(),
            eagain.len(),
            pct(&all, 100)
        ),
    );
    assert!(
        pct(&all, 100) < Duration::from_secs(3),
        "an entrypoint reply took {:?}",
        pct(&all, 100)
    );
    assert!(
        eagain.iter().all(|d| *d >= Duration::from_millis(150)),
        "EAGAIN answered without the pause: {eagain:?}"
    );
    assert!(
        first_ok.is_some(),
        "entrypoints not answered after SIGCONT:\n{}",
        log_tail(&hax.log, 30)
    );
    assert!(
        kv.is_some(),
        "the events sent during the pause did not reach KV:\n{}",
        log_tail(&hax.log, 30)
    );
    assert!(
        !confirmed_while_frozen,
        "hax confirmed an event while it could not record it"
    );
    assert!(
        driver
            .wait(Duration::from_secs(20), |s| (s.acked >= last_tag)
                .then_some(()))
            .is_some(),
        "the events sent during the pause were not confirmed after it"
    );
    assert!(
        leader.is_some(),
        "hax did not get the leader key back:\n{}",
        log_tail(&hax.log, 30)
    );
    drop(hax);
    let _ = std::fs::remove_dir_all(&dir);
}
