//! Fault: hax SIGKILLed in the middle of a burst of process events, then restarted.
//!
//! The new hax rebuilds its state from Consul (identity, RC leader, configuration: the same
//! entrypoint reply as before), the processes reconnect and send again what hax did not
//! confirm (as Motr does: a message stays queued until the HA confirms it), and KV ends
//! complete. hax confirms a process event only once its record is committed in Consul, so no
//! event hax confirmed may be missing from KV after the kill: the test fails if one is
//! (`lost`), if a re-sent event does not reach KV, or if the state is not rebuilt.
#[path = "faults_common.rs"]
mod common;
mod support;

use common::*;
use hax::fid::Fid;
use hax_sim::ProcessEvent;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;

const PROCESSES: u64 = 50;
/// Rounds of the paced burst (50 × 40 = 2000 events at about 1000 events/s).
const PACED_ROUNDS: u64 = 40;
/// Rounds of the flat-out burst: a backlog of 50 × 1000 = 50000 events.
const BACKLOG_ROUNDS: u64 = 1000;

fn event(seq: u64) -> ProcessEvent {
    if seq % 2 == 1 {
        ProcessEvent::Starting
    } else {
        ProcessEvent::Started
    }
}

fn fid(i: u64) -> Fid {
    Fid::typed(b'r', 2, 0x3000 + i)
}

/// A burst paced at ~1000 events/s (hax keeps up), killed once half of it was sent.
#[test]
fn hax_killed_mid_paced_burst_and_restarted_loses_no_confirmed_event() {
    killed_mid_burst(Some(Duration::from_millis(50)), PACED_ROUNDS, false);
}

/// b1 with `--journal`: events are confirmed once journaled, and those Consul did not hold at
/// the kill are recorded from the journal by the restarted hax.
#[test]
fn hax_with_a_journal_killed_mid_paced_burst_and_restarted_loses_no_confirmed_event() {
    killed_mid_burst(Some(Duration::from_millis(50)), PACED_ROUNDS, true);
}

/// A backlog of 50000 events written at once (hax behind), killed once it confirmed half of
/// it: the case where confirmed events not yet in KV would be most likely.
#[test]
fn hax_killed_with_a_50000_event_backlog_and_restarted_loses_no_confirmed_event() {
    killed_mid_burst(None, BACKLOG_ROUNDS, false);
}

/// b2 with `--journal`: the case where the journal matters most (Motr holds every message
/// until it is confirmed, and Consul is far behind the burst).
#[test]
fn hax_with_a_journal_killed_with_a_50000_event_backlog_and_restarted_loses_no_confirmed_event() {
    killed_mid_burst(None, BACKLOG_ROUNDS, true);
}

fn killed_mid_burst(pace: Option<Duration>, rounds: u64, journaled: bool) {
    let scenario = match (pace, journaled) {
        (Some(_), false) => "b1: hax SIGKILL mid-burst (paced, 1000 ev/s) + restart",
        (None, false) => "b2: hax SIGKILL with a 50000-event backlog + restart",
        (Some(_), true) => "b1j: the same with --journal",
        (None, true) => "b2j: the same with --journal",
    };
    let journal = std::env::temp_dir().join(format!(
        "hax-test-journal-{}-{}.jsonl",
        std::process::id(),
        if pace.is_some() { "paced" } else { "backlog" }
    ));
    let _ = std::fs::remove_file(&journal);
    let journal_arg = journal.to_string_lossy().into_owned();
    let mut args = vec!["--leader-ttl-s", "10"];
    if journaled {
        args.extend(["--journal", journal_arg.as_str()]);
    }
    let mut n = SingleNode::start_with(&args);
    let consul = n.agent.http_url();
    let c = n.client().clone();
    let leader_holder = |c: &ConsulClient| {
        c.kv_get_pair("leader")
            .ok()
            .flatten()
            .filter(|p| p.session.as_deref().is_some_and(|s| !s.is_empty()))
            .map(|p| p.value_str())
    };
    assert!(
        wait_until(Duration::from_secs(20), || leader_holder(&c)).is_some(),
        "no RC leader"
    );
    let probe = RawPeer::connect(&n.hax.endpoint(), Fid::typed(b'r', 3, 1));
    let before = probe
        .entrypoint_until_ok(Duration::from_secs(20))
        .expect("entrypoint before the kill");
    drop(probe);

    let peers: Vec<RawPeer> = (0..PROCESSES)
        .map(|i| {
            let p = RawPeer::connect(&n.hax.endpoint(), fid(i));
            p.entrypoint_until_ok(Duration::from_secs(20))
                .expect("entrypoint");
            p
        })
        .collect();
    let sent: Vec<AtomicU64> = (0..PROCESSES).map(|_| AtomicU64::new(0)).collect();
    let total = PROCESSES * rounds;
    // hax's memory under the burst (the first hax until the kill, then the restarted one
    // taking the re-sent backlog).
    let rss_first = RssSampler::start(n.hax.pid(), Duration::from_millis(50));
    let (killed_at, kill_time) = std::thread::scope(|s| {
        s.spawn(|| {
            // The burst: a round (one event per process) every `pace` (or flat out), until hax
            // is gone.
            'burst: for seq in 1..=rounds {
                for (p, count) in peers.iter().zip(&sent) {
                    if p.send_event(event(seq), seq).is_err() {
                        break 'burst;
                    }
                    count.store(seq, Ordering::SeqCst);
                }
                if let Some(p) = pace {
                    std::thread::sleep(p);
                }
            }
        });
        // SIGKILL once half of the burst is out (paced) or confirmed (flat out); bounded wait.
        let sent_so_far = || sent.iter().map(|c| c.load(Ordering::SeqCst)).sum::<u64>();
        let acked_so_far = || {
            peers
                .iter()
                .map(|p| p.with_state(|s| s.acked / 2))
                .sum::<u64>()
        };
        let _ = wait_until(Duration::from_secs(30), || match pace {
            Some(_) => (sent_so_far() >= total / 2).then_some(()),
            None => (acked_so_far() >= total / 2).then_some(()),
        });
        let at = sent_so_far();
        let t = n
            .hax
            .signal_and_wait("KILL", Duration::from_secs(5))
            .expect("hax killed");
        (at, t)
    });
    // What each process knows: the events HA confirmed before the connection broke.
    assert!(
        wait_until(Duration::from_secs(5), || peers
            .iter()
            .all(|p| p.with_state(|s| s.closed.is_some()))
            .then_some(()))
        .is_some(),
        "the processes did not see hax die"
    );
    let acked: Vec<u64> = peers
        .iter()
        .map(|p| p.with_state(|s| s.acked / 2))
        .collect();
    let sent_before: Vec<u64> = sent.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    drop(peers);
    let at_kill: Vec<u64> = (0..PROCESSES)
        .map(|i| kv_seq(&consul, fid(i)).unwrap_or(0))
        .collect();
    let acked_total: u64 = acked.iter().sum();
    // Lost: a confirmed state KV does not hold, with nothing newer that Motr still holds
    // unconfirmed. hax confirms a process's superseded event early (its newer event carries
    // the state and is confirmed only once committed); a process whose confirmed events run
    // ahead of KV but that sent more than was confirmed re-sends the rest, newer than KV.
    // With a journal, a confirmed event may be only there at the kill: it counts as lost
    // only if KV still lacks it once the restarted hax has recorded the journal (below).
    let only_journaled: u64 = (0..PROCESSES as usize)
        .filter(|&i| acked[i] >= sent_before[i])
        .map(|i| acked[i].saturating_sub(at_kill[i]))
        .sum();
    let mut lost = if journaled { 0 } else { only_journaled };
    let behind = (0..PROCESSES as usize)
        .filter(|&i| acked[i] >= sent_before[i] && at_kill[i] < acked[i])
        .count();
    let covered = (0..PROCESSES as usize)
        .filter(|&i| at_kill[i] < acked[i] && acked[i] < sent_before[i])
        .count();
    let unacked_in_kv: u64 = acked
        .iter()
        .zip(&at_kill)
        .map(|(a, k)| k.saturating_sub(*a))
        .sum();
    eprintln!(
        "killed after {killed_at} of {total} events were sent (kill took {kill_time:?}); sent before the connections broke: {}; \
         ACKed: {acked_total}; in KV at the kill: {}; ACKed but not in KV: {only_journaled} events of {behind} processes (and {covered} processes confirmed early, \
         their newer event unconfirmed); in KV but not ACKed: {unacked_in_kv}",
        sent_before.iter().sum::<u64>(),
        at_kill.iter().sum::<u64>()
    );

    // Restart on the same ports; the state comes back from Consul alone.
    let t_restart = Instant::now();
    n.respawn_hax(&args);
    let rss_first_peak = rss_first.samples().iter().map(|s| s.1).max().unwrap_or(0);
    drop(rss_first);
    let rss_second = RssSampler::start(n.hax.pid(), Duration::from_millis(50));
    let url = n.hax.url();
    let leader_wait = std::thread::spawn(move || {
        wait_until(Duration::from_secs(45), || {
            (metric(&url, "hax_rc_leader") == Some(1.0)).then_some(t_restart.elapsed())
        })
    });
    n.hax.assert_ready(Duration::from_secs(30));
    let ready = t_restart.elapsed();
    assert_eq!(
        n.hax.readyz().expect("GET /readyz").1["process"],
        HAX.to_string(),
        "identity not rebuilt"
    );
    let probe = RawPeer::connect(&n.hax.endpoint(), Fid::typed(b'r', 3, 2));
    let after = probe
        .entrypoint_until_ok(Duration::from_secs(30))
        .expect("entrypoint after the restart");
    let first_ep = t_restart.elapsed();
    drop(probe);
    assert_eq!(
        (
            after.confds.clone(),
            after.quorum,
            after.rm_fid,
            after.rm_ep.clone()
        ),
        (
            before.confds.clone(),
            before.quorum,
            before.rm_fid,
            before.rm_ep.clone()
        )
    );

    // The processes reconnect and re-send what was not confirmed (at-least-once).
    let mut resent = 0;
    let mut duplicates = 0;
    let peers: Vec<RawPeer> = (0..PROCESSES)
        .map(|i| {
            let p = RawPeer::connect(&n.hax.endpoint(), fid(i));
            p.entrypoint_until_ok(Duration::from_secs(20))
                .expect("entrypoint after the restart");
            let from = acked[i as usize] + 1;
            for seq in from..=rounds {
                p.send_event(event(seq), seq).expect("re-send");
                resent += 1;
                if seq <= at_kill[i as usize] {
                    duplicates += 1;
                }
            }
            p
        })
        .collect();
    let links = t_restart.elapsed();
    // Every re-sent event is confirmed and written; the processes whose events were all ACKed
    // re-sent nothing, and those whose ACKed events were lost keep a stale record.
    for (i, p) in peers.iter().enumerate() {
        let resent_here = rounds - acked[i];
        if resent_here > 0 {
            assert!(
                p.wait(Duration::from_secs(10), |s| (s.acked >= 2 * resent_here)
                    .then_some(()))
                    .is_some(),
                "re-sent events not confirmed"
            );
        }
    }
    // Without a journal, a process whose events were all confirmed re-sends nothing, so one
    // whose last confirmed event was superseded-but-unwritten keeps a stale record; with one,
    // the journal holds that event and every record ends at `rounds`.
    let settled = wait_until(Duration::from_secs(30), || {
        (0..PROCESSES as usize)
            .all(|i| {
                (acked[i] == rounds && !journaled) || kv_seq(&consul, fid(i as u64)) == Some(rounds)
            })
            .then_some(())
    });
    if journaled {
        lost = (0..PROCESSES as usize)
            .map(|i| acked[i].saturating_sub(kv_seq(&consul, fid(i as u64)).unwrap_or(0)))
            .sum();
    }
    assert!(
        settled.is_some(),
        "re-sent events did not reach KV (process: confirmed before the kill, KV now): {:?}\n{}",
        (0..PROCESSES as usize)
            .map(|i| (i, acked[i], kv_seq(&consul, fid(i as u64))))
            .filter(|(_, _, kv)| *kv != Some(rounds))
            .collect::<Vec<_>>(),
        log_tail(&n.hax.log, 30)
    );
    let stale = (0..PROCESSES)
        .filter(|i| kv_seq(&consul, fid(*i)) != Some(rounds))
        .count();
    // The next event of every process repairs its record.
    for p in &peers {
        p.send_event(event(rounds + 1), rounds + 1)
            .expect("next event");
    }
    let complete = wait_until(Duration::from_secs(60), || {
        (0..PROCESSES)
            .all(|i| kv_seq(&consul, fid(i)) == Some(rounds + 1))
            .then_some(())
    });
    let kv_done = t_restart.elapsed();
    let rss_second_peak = rss_second.samples().iter().map(|s| s.1).max().unwrap_or(0);
    drop(rss_second);
    // The new hax takes the leader key once the dead one's session expires (TTL 10 s, which
    // Consul may stretch to 2 x TTL).
    let leader = leader_wait.join().expect("leader wait");
    let holder = leader_holder(&c);
    eprintln!(
        "restart: ready {ready:?}, first entrypoint {first_ep:?}, {PROCESSES} links back {links:?}, KV complete {kv_done:?} \
         ({resent} re-sent, {duplicates} already in KV; {stale} records stale until the next event), leader key re-acquired \
         {leader:?} (holder {holder:?})"
    );
    figure(
        scenario,
        &format!(
            "sent {} | ACKed {acked_total} | in KV at kill {} | ACKed-not-in-KV at the kill {only_journaled} ({behind} procs; {covered} confirmed early, newer event pending), after the restart {lost} | re-sent {resent}, dup {duplicates}, stale {stale} | \
             ready {ready:?}, entrypoint {first_ep:?}, KV complete {kv_done:?}, leader {leader:?} | \
             hax RSS peak {rss_first_peak} KiB under the burst, {rss_second_peak} KiB after the restart",
            sent_before.iter().sum::<u64>(),
            at_kill.iter().sum::<u64>()
        ),
    );
    let _ = std::fs::remove_file(&journal);
    assert_eq!(
        lost,
        0,
        "{lost} events hax had confirmed were not in KV {} ({behind} processes)",
        if journaled {
            "once the restarted hax had recorded its journal"
        } else {
            "when it died"
        }
    );
    assert_eq!(
        stale, 0,
        "records stale after the re-sent events were written"
    );
    assert!(
        complete.is_some(),
        "the next events did not reach KV:\n{}",
        log_tail(&n.hax.log, 30)
    );
    assert!(
        leader.is_some(),
        "the restarted hax never became the RC leader again:\n{}",
        log_tail(&n.hax.log, 30)
    );
    assert_eq!(holder.as_deref(), Some(n.agent.node_name()));
}

/// Like real Motr after its HA restarted: a running m0d notices only at its next send, asks
/// for an entrypoint again (not first, with the dead HA's cookie) after ~10 s of re-sends, and
/// sends its unconfirmed messages again ~6 s later (scaled down here). hax must answer that
/// request for real (an EAGAIN would kill the m0d: Motr made the link for it anyway), confirm
/// what the m0d sends again, and let it stop cleanly.
#[test]
fn a_running_m0d_survives_hax_killed_and_restarted_and_stops_cleanly() {
    running_m0d_across_a_hax_restart(false);
}

/// The same while no RC leader holds the `leader` key (the restarted hax neither campaigns
/// nor finds one): the reconnecting m0d is answered from the last leader the key names, not
/// told EAGAIN.
#[test]
fn a_running_m0d_reconnecting_while_no_leader_is_elected_is_answered_not_told_eagain() {
    running_m0d_across_a_hax_restart(true);
}

fn running_m0d_across_a_hax_restart(no_leader: bool) {
    let mut n = SingleNode::start_with(&["--leader-ttl-s", "10"]);
    let mut cfg = n.sim_config(IOS1);
    cfg.ha_resend = Duration::from_millis(500);
    cfg.rpc_timeout = Duration::from_millis(300);
    let (tx, rx) = crossbeam_channel::unbounded();
    cfg.events = Some(tx);
    let m0d = hax_sim::SimProcess::connect(&n.hax.endpoint(), cfg).expect("connect");
    m0d.boot().expect("the m0d boots");
    assert!(n.wait_process_state(IOS1, "DTM_RECOVERED", Duration::from_secs(10)));

    n.hax
        .signal_and_wait("KILL", Duration::from_secs(5))
        .expect("hax killed");
    let mut args = vec!["--leader-ttl-s", "10"];
    if no_leader {
        // The dead hax's session goes: the key keeps its value (the node) but no holder.
        let leader = n
            .client()
            .kv_get_pair("leader")
            .unwrap()
            .expect("leader key");
        let session = leader.session.expect("held");
        n.client()
            .put(&format!("/v1/session/destroy/{session}"), b"")
            .expect("destroy the session");
        args.extend(["--campaign", "false"]);
    }
    n.respawn_hax(&args);
    n.hax.assert_ready(Duration::from_secs(30));
    // The idle m0d has not noticed. Its clean stop is its next send: it finds the HA gone,
    // reconnects to the new hax and sends its stop events again there.
    m0d.stop_clean()
        .expect("the m0d stops cleanly: its STOPPED is confirmed by the new hax");
    let events: Vec<hax_sim::SimEventKind> = rx.try_iter().map(|e| e.kind).collect();
    assert!(
        events.iter().any(|e| matches!(
            e,
            hax_sim::SimEventKind::Reconnected {
                link: hax_sim::LinkDecision::Connected
            }
        )),
        "the m0d reconnected to the new hax with a new link: {events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, hax_sim::SimEventKind::Died { .. })),
        "the m0d died: {events:?}"
    );
    assert!(n.wait_process_state(IOS1, "STOPPED", Duration::from_secs(10)));
}
