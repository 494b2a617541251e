//! Fault: a Motr process that stops reading its socket while hax broadcasts a lot.
//!
//! hax must not block on it (the other processes keep getting broadcasts, entrypoint requests
//! are answered promptly) nor grow without bound (the stand-in closes a connection with more
//! than 8 MiB of unsent output; hax gives up unconfirmed sends after its delivery timeout).
#[path = "faults_common.rs"]
mod common;
mod support;

use common::*;
use hax::fid::Fid;
use hax_sim::{ObjState, ProcessEvent, SimConfig, SimProcess};
use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

/// Extra services of IOS1: each of its state changes is one broadcast of ~5000 notes (~100 KB,
/// five messages).
const SERVICES: u64 = 5000;
/// State changes of IOS1. ProcessStatus keeps one broadcast in flight and holds later changes
/// while the non-reading peer leaves it unconfirmed (at most 50 ms), so about 20 broadcasts a
/// second go out: over 20 MB towards every link, more than the stand-in's 8 MiB cap plus the
/// kernel's socket buffers (4 MiB send + 128 KiB receive).
const EVENTS: u64 = 1000;
/// Spacing of the driver's events: longer than ProcessStatus's 2 ms coalescing window.
const PACE: Duration = Duration::from_millis(15);

#[test]
fn a_process_that_stops_reading_neither_blocks_hax_nor_makes_it_grow() {
    let t_setup = Instant::now();
    let http_port = free_port();
    let agent = ConsulAgent::dev_with_json(&watch_config(http_port));
    let ports = ClusterPorts::allocate();
    register_cluster(agent.client(), agent.node_name(), &ports);
    let base = format!("m0conf/nodes/{NODE_FID}/processes/{IOS1}/services");
    // And a DTM0 service, so that STARTED (DTM_RECOVERING) and DTM_RECOVERED (ONLINE) differ.
    let ops: Vec<serde_json::Value> = (0..SERVICES)
        .map(|i| {
            txn_kv_set(
                &format!("{base}/{}", Fid::typed(b's', 1, 0x10000 + i)),
                json!({"type": "ios"}).to_string(),
            )
        })
        .chain(std::iter::once(txn_kv_set(
            &format!("{base}/{}", Fid::typed(b's', 1, 0xf_0000)),
            json!({"type": "dtm0"}).to_string(),
        )))
        .collect();
    for chunk in ops.chunks(64) {
        agent
            .client()
            .txn(chunk)
            .expect("txn")
            .expect_ok("txn")
            .expect("extra services");
    }
    let hax = HaxProc::spawn(
        &agent.http_addr(),
        agent.node_name(),
        http_port,
        ports.hax,
        agent.dir(),
        &["--delivery-timeout-ms", "3000"],
    );
    hax.assert_ready(Duration::from_secs(30));
    let consul = agent.http_url();

    let connect = |fid: Fid| {
        let p = RawPeer::connect(&hax.endpoint(), fid);
        p.entrypoint_until_ok(Duration::from_secs(20))
            .expect("entrypoint");
        p
    };
    let witness = connect(CONFD);
    let driver = connect(IOS1);
    let slow = SimProcess::connect(&hax.endpoint(), SimConfig::new(IOS2)).expect("connect");
    slow.entrypoint_until_ok(true, Instant::now() + Duration::from_secs(20))
        .expect("entrypoint");
    // The configuration with the extra services is loaded: a first change is one big note set.
    driver.send_event(ProcessEvent::Started, 0).unwrap();
    let big = witness.wait(Duration::from_secs(10), |s| {
        (s.notes_total > SERVICES).then_some(())
    });
    assert!(
        big.is_some(),
        "the broadcast does not carry IOS1's {SERVICES} services"
    );
    std::thread::sleep(Duration::from_millis(500));
    let rss = RssSampler::start(hax.pid(), Duration::from_millis(100));
    std::thread::sleep(Duration::from_millis(300));
    let baseline = rss.samples().iter().map(|s| s.1).max().expect("rss of hax");
    eprintln!(
        "setup took {:?}; hax RSS before the flood: {} KiB",
        t_setup.elapsed(),
        baseline
    );

    slow.set_reading(false);
    let t0 = Instant::now();
    let sender = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            // Bounded: EVENTS events, at most ~60 s.
            let mut last = Instant::now();
            for seq in 1..=EVENTS {
                let ev = if seq % 2 == 1 {
                    ProcessEvent::DtmRecovered
                } else {
                    ProcessEvent::Started
                };
                driver.send_event(ev, seq).expect("driver event");
                last = Instant::now();
                std::thread::sleep(PACE);
                if t0.elapsed() > Duration::from_secs(60) {
                    panic!("the flood took more than 60 s (hax is slowing its peers down)");
                }
            }
            last
        });
        // Meanwhile: new processes keep asking for their entrypoint.
        let mut latencies = Vec::new();
        let mut n = 0;
        while !flood.is_finished() && n < 200 {
            n += 1;
            let p = RawPeer::connect(&hax.endpoint(), Fid::typed(b'r', 3, 0x100 + n));
            let t = Instant::now();
            let r = p.entrypoint(true).expect("an entrypoint reply within 10 s");
            latencies.push(t.elapsed());
            assert_eq!(r.rc, 0, "entrypoint refused during the flood");
            drop(p);
            std::thread::sleep(Duration::from_millis(300));
        }
        (flood.join().expect("flood"), latencies)
    });
    let (last_sent, ep_latencies) = sender;
    let flood_time = t0.elapsed();
    let final_state = if EVENTS % 2 == 1 {
        ObjState::Online
    } else {
        ObjState::DtmRecovering
    };

    // The reading peer ends with IOS1's final state. Changes that gather while a broadcast is
    // in flight are coalesced (two flips may cancel out), so wait until its notes settle.
    let settled = wait_until(Duration::from_secs(10), || {
        let last = witness.with_state(|s| {
            s.process_notes
                .iter()
                .rev()
                .find(|n| n.1 == IOS1)
                .map(|n| (n.0, n.2))
        });
        last.filter(|(at, _)| at.elapsed() > Duration::from_secs(1))
    });
    let (got, state) = settled.expect("the witness's notes about IOS1 settle");
    assert_eq!(
        state,
        final_state.code(),
        "the witness did not get IOS1's final state"
    );
    let last_latency = got.saturating_duration_since(last_sent);
    let changes: Vec<Instant> = witness.with_state(|s| {
        s.process_notes
            .iter()
            .filter(|n| n.1 == IOS1 && n.0 >= t0)
            .map(|n| n.0)
            .collect()
    });
    let max_gap = changes
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let notes_total = witness.with_state(|s| s.notes_total);
    // Every event reached KV (the last one is the record).
    let kv = wait_until(Duration::from_secs(20), || {
        kv_seq(&consul, IOS1).filter(|s| *s == EVENTS)
    });
    assert_eq!(kv, Some(EVENTS), "the last event did not reach KV");

    // Memory after the flood, once the unconfirmed sends were given up (delivery timeout 3 s).
    std::thread::sleep(Duration::from_secs(4));
    let t_end = Instant::now();
    let peak = rss.max_between(t0, t_end).unwrap_or(0);
    let after = rss_kib(hax.pid()).unwrap_or(0);
    drop(rss);
    slow.set_reading(true);
    let slow_closed = wait_until(Duration::from_secs(20), || slow.closed_reason())
        .unwrap_or_else(|| "still open".into());

    let broadcasts = changes.len();
    eprintln!(
        "flood: {EVENTS} events in {flood_time:?}; witness got {broadcasts} changes of IOS1 ({notes_total} notes), largest gap {max_gap:?}, \
         last change {last_latency:?} after the last event; entrypoints during the flood: {} answered, p50 {:?}, max {:?}; \
         hax RSS baseline {baseline} KiB, peak {peak} KiB (+{} KiB), after {after} KiB; slow peer: {slow_closed}",
        ep_latencies.len(),
        pct(&ep_latencies, 50),
        pct(&ep_latencies, 100),
        peak.saturating_sub(baseline)
    );
    figure(
        "a: peer stops reading, ~25 MB of broadcasts",
        &format!(
            "events {EVENTS} | KV last seq {EVENTS} | witness changes {broadcasts}, max gap {max_gap:?}, last +{last_latency:?} | \
             entrypoints {} max {:?} | RSS {baseline}->{peak} KiB (after {after}) | {flood_time:?}",
            ep_latencies.len(),
            pct(&ep_latencies, 100)
        ),
    );
    // The stand-in closed the connection of the peer that does not read.
    assert!(
        hax.log_text().contains("more than 8 MiB of unsent output"),
        "the stand-in never closed the non-reading connection:\n{}",
        log_tail(&hax.log, 30)
    );
    assert!(
        !ep_latencies.is_empty(),
        "no entrypoint was asked during the flood"
    );
    assert!(
        pct(&ep_latencies, 100) < Duration::from_secs(2),
        "entrypoint replies were slow: {:?}",
        pct(&ep_latencies, 100)
    );
    assert!(
        last_latency < Duration::from_secs(2),
        "the reading peer got the last change after {last_latency:?}"
    );
    assert!(
        max_gap < Duration::from_secs(3),
        "the reading peer waited {max_gap:?} between two changes"
    );
    // Bounded: 8 MiB of stand-in output for the slow peer plus what the witness and driver have
    // in flight; anything growing with the ~25 MB sent would exceed this.
    assert!(
        peak.saturating_sub(baseline) < 64 * 1024,
        "hax grew by {} KiB",
        peak - baseline
    );
    assert!(
        after <= peak,
        "hax kept growing after the flood: {after} KiB > {peak} KiB"
    );
}
