//! Fault: Consul frozen (SIGSTOP) while Motr processes report events, with `--journal`.
//!
//! With a local journal hax confirms a process event once it is written and synced there, so
//! Motr's processes are not held by a Consul that cannot take writes (without one, each
//! process's messages stay unconfirmed, in Motr's memory, until Consul commits). The test then
//! SIGKILLs hax while Consul is still frozen, so the confirmed events exist only in the journal,
//! thaws Consul and restarts hax on the same journal: every confirmed event must reach KV, and
//! the journal must end empty.
#[path = "faults_common.rs"]
mod common;
mod support;

use common::*;
use hax::fid::Fid;
use hax_sim::ProcessEvent;
use std::time::{Duration, Instant};
use support::*;

const PROCESSES: u64 = 5;
const EVENTS: u64 = 10;

fn fid(i: u64) -> Fid {
    Fid::typed(b'r', 2, 0x5000 + i)
}

fn event(seq: u64) -> ProcessEvent {
    if seq % 2 == 1 {
        ProcessEvent::Starting
    } else {
        ProcessEvent::Started
    }
}

#[test]
fn with_a_journal_events_are_confirmed_while_consul_is_frozen_and_reach_kv_after_hax_is_killed_and_restarted(
) {
    let journal = std::env::temp_dir().join(format!(
        "hax-test-journal-frozen-{}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&journal);
    let journal_arg = journal.to_string_lossy().into_owned();
    let args = ["--journal", journal_arg.as_str()];
    let mut n = SingleNode::start_with(&args);
    let consul = n.agent.http_url();
    let peers: Vec<RawPeer> = (0..PROCESSES)
        .map(|i| {
            let p = RawPeer::connect(&n.hax.endpoint(), fid(i));
            p.entrypoint_until_ok(Duration::from_secs(20))
                .expect("entrypoint");
            p
        })
        .collect();

    let agent = n.agent.pid().expect("the agent's pid");
    signal(agent, "STOP");
    let thaw = Thaw(agent);
    let frozen_at = Instant::now();
    let mut last_tag = vec![0; PROCESSES as usize];
    for seq in 1..=EVENTS {
        for (i, p) in peers.iter().enumerate() {
            last_tag[i] = p.send_event(event(seq), seq).expect("send");
        }
    }
    for (i, p) in peers.iter().enumerate() {
        let tag = last_tag[i];
        assert!(
            p.wait(Duration::from_secs(5), |s| (s.acked >= tag).then_some(()))
                .is_some(),
            "{}'s events were not confirmed while Consul was frozen (the journal should have made them durable):\n{}",
            fid(i as u64),
            log_tail(&n.hax.log, 30)
        );
    }
    let confirmed_in = frozen_at.elapsed();
    assert!(
        std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0) > 0,
        "the journal holds the confirmed events"
    );

    // Only the journal holds them now: kill hax, then let Consul go on.
    n.hax
        .signal_and_wait("KILL", Duration::from_secs(5))
        .expect("hax killed");
    drop(peers);
    drop(thaw);
    let t_restart = Instant::now();
    n.respawn_hax(&args);
    n.hax.assert_ready(Duration::from_secs(30));
    let in_kv = wait_until(Duration::from_secs(30), || {
        (0..PROCESSES)
            .all(|i| kv_seq(&consul, fid(i)) == Some(EVENTS))
            .then_some(t_restart.elapsed())
    });
    let url = n.hax.url();
    let emptied = wait_until(Duration::from_secs(10), || {
        (metric(&url, "hax_journal_live_records") == Some(0.0)).then_some(())
    });
    let left = std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
    figure(
        "journal: Consul frozen, hax killed, restarted",
        &format!(
            "{} events of {PROCESSES} processes confirmed {confirmed_in:?} after the freeze; in KV {in_kv:?} after the restart; journal {left} bytes at the end",
            PROCESSES * EVENTS
        ),
    );
    let _ = std::fs::remove_file(&journal);
    assert!(
        in_kv.is_some(),
        "the journaled events did not reach KV after the restart: {:?}\n{}",
        (0..PROCESSES)
            .map(|i| kv_seq(&consul, fid(i)))
            .collect::<Vec<_>>(),
        log_tail(&n.hax.log, 30)
    );
    assert!(
        emptied.is_some(),
        "the journal kept live records after they reached KV"
    );
    assert_eq!(left, 0, "the journal file is emptied once nothing is live");
}
