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

/// Motr's `M0_NC_ONLINE` and `M0_NC_TRANSIENT`.
const ONLINE: u32 = 1;
const TRANSIENT: u32 = 3;

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
    // Four more processes linked to hax: every failure POSTed during the pause must reach
    // them (and the driver).
    let peers: Vec<RawPeer> = (0..4)
        .map(|i| {
            let p = RawPeer::connect(&hax.endpoint(), Fid::typed(b'r', 4, 0x100 + i));
            p.entrypoint_until_ok(Duration::from_secs(20))
                .expect("peer entrypoint");
            p
        })
        .collect();
    // The watch deliveries posted during the pause are newer than anything Consul said so far.
    let index0 = ureq::get(&format!("{other}/v1/health/service/ios"))
        .call()
        .ok()
        .and_then(|r| r.header("X-Consul-Index")?.parse::<u64>().ok())
        .expect("the ios service's Consul index");
    let watch_url = format!("{}/watcher/service/ios", hax.url());
    let confirmed = || {
        (
            hax.metric("hax_broadcast_confirmed_seconds_sum")
                .unwrap_or(0.0),
            hax.metric("hax_broadcast_confirmed_seconds_count")
                .unwrap_or(0.0),
        )
    };
    let mut shares_ms: Vec<f64> = Vec::new();
    let mut probes: Vec<RawPeer> = Vec::new();
    let mut unheard: Vec<String> = Vec::new();
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
        // Kept connected: its link confirms the broadcasts too (a dropped peer's link would
        // leave them unconfirmed until Motr's RPC timeout, and hax's share unmeasured).
        probes.push(p);
        // A failure (odd rounds) or a recovery of IOS2, as the agent's watch would POST it.
        let critical = n % 2 == 1;
        let body = hax_testkit::payload::health_payload(
            cluster.node_name(0),
            "ios",
            &[IOS1, IOS2],
            if critical { &[IOS2] } else { &[] },
            index0 + n,
        );
        let (sum0, count0) = confirmed();
        let t_post = Instant::now();
        let status = ureq::post(&watch_url)
            .set("X-Consul-Index", &(index0 + n).to_string())
            .send_bytes(&body)
            .map(|r| r.status())
            .unwrap_or_else(|e| panic!("watch POST during the pause: {e}"));
        assert_eq!(status, 200, "watch POST during the pause");
        let want = if critical { TRANSIENT } else { ONLINE };
        for p in peers.iter().chain([&driver]) {
            if p.wait_note_after(IOS2, want, t_post, Duration::from_secs(5))
                .is_none()
            {
                unheard.push(format!(
                    "{} did not hear {IOS2} -> {want} (round {n})",
                    p.fid()
                ));
            }
        }
        if let Some((sum, count)) = wait_until(Duration::from_secs(2), || {
            let (s, c) = confirmed();
            (c > count0).then_some((s, c))
        }) {
            shares_ms.push((sum - sum0) / (count - count0) * 1e3);
        }
        std::thread::sleep(Duration::from_millis(500).saturating_sub(took));
    }
    let paused_for = t_stop.elapsed();
    let mut shares = shares_ms.clone();
    shares.sort_by(f64::total_cmp);
    let share_pct = |p: usize| {
        shares
            .get((shares.len() * p).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
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
    // Bounded: 90 s. When Consul's autopilot removed the frozen server during the pause, its
    // node's services (the confd among them) are back only after its agent's next
    // anti-entropy sync (up to a minute): hax answers EAGAIN until then.
    while t_cont.elapsed() < Duration::from_secs(90)
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
    figure(
        "c: failures POSTed while Consul is frozen",
        &format!(
            "{} changes of IOS2, each to 5 watched links (and the probes'): {} not heard | hax's share (change in -> every link confirmed) p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            n,
            unheard.len(),
            share_pct(50),
            share_pct(99),
            share_pct(100)
        ),
    );
    assert!(
        unheard.is_empty(),
        "failures POSTed while Consul was frozen did not reach every link: {unheard:?}"
    );
    assert_eq!(
        shares_ms.len() as u64,
        n,
        "every change POSTed during the pause is broadcast and confirmed once"
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
