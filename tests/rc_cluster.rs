//! The RC across hax instances on a three-server Consul cluster, with simulated ios
//! processes: drive errors and process states reach every node through eq/ → RC → bq/,
//! timeouts fire once at their time, bad entries never block a queue, a restarted hax
//! resumes after what it handled, and bq/ is cleaned up once every node has handled it.
mod rc_common;
mod support;

use hax::fid::Fid;
use hax::rc::timeouts;
use hax_sim::StobIoq;
use rc_common::*;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;

const T: Duration = Duration::from_secs(30);
const ONLINE: u32 = 1;
const FAILED: u32 = 2;

fn sdev(k: u64) -> Fid {
    Fid::typed(b'd', 1, k)
}

fn seq(key: &str) -> u64 {
    key.rsplit('/').next().unwrap().parse().unwrap()
}

fn all_logs(c: &RcCluster) -> String {
    (0..c.nodes.len())
        .map(|i| c.log(i))
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait_eq_empty(c: &RcCluster) {
    let drained = wait_until(T, || c.keys("eq/").is_empty().then_some(()));
    assert!(drained.is_some(), "eq/ still holds {:?}", c.keys("eq/"));
}

#[test]
fn a_stob_io_error_reported_on_node_a_reaches_the_processes_of_node_b_as_a_failed_sdev() {
    let c = RcCluster::start("stob", 2, 2, &[]);
    let a = c.booted_ios(0);
    let b = c.booted_ios(1);
    let t0 = Instant::now();
    let d = sdev(0x51);
    a.send_stob_ioq(StobIoq::write_error(d, -5))
        .expect("send STOB_IOQ");
    assert!(
        wait_heard(&b, d, FAILED, T),
        "node B's process never heard sdev {d} FAILED:\n{}",
        all_logs(&c)
    );
    eprintln!(
        "sdev FAILED reached node B's process {:?} after the error on node A",
        t0.elapsed()
    );
    assert!(
        wait_heard(&a, d, FAILED, T),
        "node A's own process hears it too"
    );
    // A process state from node A reached node B through bq/ (mapped as the behaviour table
    // says). B may have learnt it before its own process linked: its answers say it.
    let (ios, svc) = (c.nodes[0].ios, c.nodes[0].ios_svc);
    let online = wait_until(T, || {
        let states: Vec<u32> = b
            .nvec_get(&[ios, svc])
            .ok()?
            .iter()
            .map(|n| n.state)
            .collect();
        (states == [ONLINE, ONLINE]).then_some(())
    });
    assert!(
        online.is_some(),
        "node B does not hold node A's ios and its service ONLINE"
    );
    // Node B answers questions from what it learnt: the sdev, and node A's hax (ONLINE once
    // STARTED, like a hax on its own node).
    let answer = b
        .nvec_get(&[d, c.nodes[0].hax, c.nodes[0].ios])
        .expect("NVEC GET");
    assert_eq!(
        answer.iter().map(|n| n.state).collect::<Vec<_>>(),
        [FAILED, ONLINE, ONLINE]
    );

    let leader = c.leader().expect("a leader");
    let leader_log = c.log_with(leader, &["drive I/O error rc -5", &d.to_string()]);
    let rc_lines = lines_with(
        &leader_log,
        &[
            "RC: Process eq/",
            "drive I/O error rc -5",
            &d.to_string(),
            "sdev FAILED -> bq/",
        ],
    );
    assert_eq!(
        rc_lines.len(),
        1,
        "one RC line for the error:\n{leader_log}"
    );
    let bq_key = rc_lines[0].rsplit("-> ").next().unwrap().to_string();
    for i in 0..2 {
        let log = c.log_after_bq(i, &bq_key);
        let consumed = lines_with(&log, &[&format!("bq: {bq_key} {d} FAILED")]);
        assert_eq!(consumed.len(), 1, "hax {i} handles {bq_key} once:\n{log}");
    }
    wait_eq_empty(&c);
    assert_eq!(heard(&b, d, FAILED), 1, "one FAILED note for one error");
    let recorded = c.client(0).kv_get_string(&format!("states/{d}")).unwrap();
    assert!(
        recorded.is_some_and(|v| v.contains("FAILED")),
        "the RC records its decision"
    );

    // A decision made elsewhere (the drive was replaced) goes through the RC the same way.
    let k = c.q_ok(
        1,
        "eq",
        "OBJECT-STATE-UPDATE",
        &format!(r#"{{"fid": "{d}", "state": "ONLINE", "cause": "replaced"}}"#),
    );
    assert!(
        wait_heard(&a, d, ONLINE, T) && wait_heard(&b, d, ONLINE, T),
        "{}",
        all_logs(&c)
    );
    let log = c.log_with(
        leader,
        &[&format!(
            "RC: Process {k} {d} ONLINE (replaced): to every hax"
        )],
    );
    let line = format!("RC: Process {k} {d} ONLINE (replaced)");
    assert_eq!(lines_with(&log, &[&line]).len(), 1, "{log}");
    let recorded = c.client(0).kv_get_string(&format!("states/{d}")).unwrap();
    assert!(
        recorded.is_some_and(|v| v.contains("ONLINE")),
        "the RC records it too"
    );
}

#[test]
fn a_timeout_fires_once_at_its_time() {
    let c = RcCluster::start("timeout", 2, 2, &[]);
    let b = c.booted_ios(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let due = now.ceil() as i64 + 3;
    let plain = timeouts::key_for(due);
    let with_entry = timeouts::key_for(due + 1);
    let d = sdev(0x77);
    let entry = format!(
        r#"{{"message_type": "STOB_IOQ_ERROR", "payload": {{"sdev": "{d}", "rc": -5}}, "timestamp": {now}}}"#
    );
    c.client(0).kv_put(&plain, "tmo1").unwrap();
    c.client(1).kv_put(&with_entry, &entry).unwrap();
    let second_due_at = Instant::now() + Duration::from_secs_f64((due + 1) as f64 - now);

    assert!(
        wait_heard(&b, d, FAILED, Duration::from_secs(20)),
        "the timeout's entry had no effect:\n{}",
        all_logs(&c)
    );
    let at = b
        .received_notes()
        .iter()
        .find(|n| n.fid == d && n.state == FAILED)
        .unwrap()
        .at;
    assert!(
        at + Duration::from_millis(50) >= second_due_at,
        "fired {:?} early",
        second_due_at - at
    );
    let late = at.saturating_duration_since(second_due_at);
    eprintln!("the timeout's sdev FAILED reached a process {late:?} after its time");
    assert!(late < Duration::from_secs(4), "fired {late:?} late");

    // Once: nothing more happens while we wait, and both keys are gone.
    std::thread::sleep(Duration::from_secs(3));
    let logs = all_logs(&c);
    assert_eq!(
        lines_with(&logs, &[&format!("RC: {plain} is due")]).len(),
        1,
        "{logs}"
    );
    assert_eq!(
        lines_with(&logs, &[&format!("RC: {with_entry} is due")]).len(),
        1,
        "{logs}"
    );
    assert_eq!(
        lines_with(
            &logs,
            &[
                "RC: Process eq/",
                &format!("{plain} fired (value \"tmo1\")")
            ]
        )
        .len(),
        1,
        "{logs}"
    );
    assert!(c.keys("timeout/").is_empty(), "{:?}", c.keys("timeout/"));
    assert_eq!(heard(&b, d, FAILED), 1);
    wait_eq_empty(&c);
}

#[test]
fn malformed_and_unknown_entries_are_logged_and_skipped_and_never_block_either_queue() {
    let c = RcCluster::start("malformed", 2, 2, &[]);
    let a = c.booted_ios(0);
    let b = c.booted_ios(1);

    // eq/: an unknown type, a value that is not an envelope, then a real error behind them.
    let unknown = c.q_ok(0, "eq", "NO-SUCH-TYPE", r#"{"x": 1}"#);
    let garbage = c.raw_publish("eq", b"wake_RC");
    let d1 = sdev(0x91);
    let real = c.q_ok(
        1,
        "eq",
        "STOB_IOQ_ERROR",
        &format!(r#"{{"sdev": "{d1}", "rc": -5}}"#),
    );
    assert!(seq(&unknown) < seq(&garbage) && seq(&garbage) < seq(&real));
    assert!(
        wait_heard(&a, d1, FAILED, T) && wait_heard(&b, d1, FAILED, T),
        "the queue is stuck:\n{}",
        all_logs(&c)
    );
    let leader = c.leader().expect("a leader");
    let log = c.log_with(leader, &[&format!("RC: Process {real} drive I/O error")]);
    assert_eq!(
        lines_with(
            &log,
            &[&format!(
                "RC: Process {unknown} skipped: unknown message type \"NO-SUCH-TYPE\""
            )]
        )
        .len(),
        1,
        "{log}"
    );
    assert_eq!(
        lines_with(
            &log,
            &[&format!(
                "RC: Process {garbage} skipped: malformed entry: not JSON"
            )]
        )
        .len(),
        1,
        "{log}"
    );
    assert_eq!(
        lines_with(&log, &[&format!("RC: Process {real} drive I/O error")]).len(),
        1,
        "{log}"
    );
    wait_eq_empty(&c);

    // bq/: garbage, an unknown type, then a real state behind them; every hax goes on.
    let garbage = c.raw_publish("bq", b"{garbage");
    let unknown = c.q_ok(2, "bq", "NO-SUCH-TYPE", "{}");
    let d2 = sdev(0x92);
    let real = c.q_ok(
        0,
        "bq",
        "OBJECT-STATE-UPDATE",
        &format!(r#"{{"fid": "{d2}", "state": "FAILED"}}"#),
    );
    assert!(
        wait_heard(&a, d2, FAILED, T) && wait_heard(&b, d2, FAILED, T),
        "a bq consumer is stuck:\n{}",
        all_logs(&c)
    );
    for i in 0..2 {
        let log = c.log_after_bq(i, &real);
        assert_eq!(
            lines_with(&log, &[&format!("bq: {garbage} malformed entry: not JSON")]).len(),
            1,
            "{log}"
        );
        assert_eq!(
            lines_with(
                &log,
                &[&format!(
                    "bq: {unknown} unknown message type \"NO-SUCH-TYPE\""
                )]
            )
            .len(),
            1,
            "{log}"
        );
        assert_eq!(
            lines_with(&log, &[&format!("bq: {real} {d2} FAILED")]).len(),
            1,
            "{log}"
        );
        let past = wait_until(T, || c.offset(i).filter(|o| *o >= seq(&real)));
        assert!(
            past.is_some(),
            "hax {i}'s offset did not move past {real}: {:?}",
            c.offset(i)
        );
    }
}

#[test]
fn a_restarted_hax_does_not_replay_what_it_handled_and_bq_is_cleaned_once_every_node_has_it() {
    // Node 2 is configured but runs no hax: until it leaves the tree, nothing is cleaned up.
    let mut c = RcCluster::start("restart", 3, 2, &[]);
    let a = c.booted_ios(0);
    let _b = c.booted_ios(1);
    let d1 = sdev(0xa1);
    c.q_ok(0, "eq", "STOB_IOQ_ERROR", &format!(r#"{{"sdev": "{d1}"}}"#));
    assert!(wait_heard(&a, d1, FAILED, T));
    let settled = wait_until(T, || {
        let e = c.epoch("bq");
        (c.offset(0) == Some(e) && c.offset(1) == Some(e)).then_some(e)
    });
    assert!(
        settled.is_some(),
        "offsets {:?} {:?} never reached epochs/bq {}",
        c.offset(0),
        c.offset(1),
        c.epoch("bq")
    );

    c.hax_mut(1)
        .signal_and_wait("TERM", Duration::from_secs(10))
        .expect("hax B exits on SIGTERM");
    let handled = c.offset(1).expect("hax B's offset");
    let old_log = c.log(1);
    assert!(
        lines_with(&old_log, &[&format!("bq: bq/{handled} ")]).len() == 1,
        "{old_log}"
    );
    assert!(
        c.keys("bq/").contains(&"bq/1".to_string()),
        "node 2 has handled nothing: bq/1 must stay"
    );

    // Entries published while hax B is down are handled after its restart, and only those.
    let d3 = sdev(0xa3);
    let d4 = sdev(0xa4);
    let k3 = c.q_ok(
        0,
        "bq",
        "OBJECT-STATE-UPDATE",
        &format!(r#"{{"fid": "{d3}", "state": "FAILED"}}"#),
    );
    let k4 = c.q_ok(
        2,
        "bq",
        "OBJECT-STATE-UPDATE",
        &format!(r#"{{"fid": "{d4}", "state": "FAILED"}}"#),
    );
    c.spawn_hax(1);
    c.wait_ready(1);
    let caught_up = wait_until(T, || c.offset(1).filter(|o| *o >= seq(&k4)));
    assert!(
        caught_up.is_some(),
        "the restarted hax did not handle {k4}:\n{}",
        c.log(1)
    );
    let log = c.log(1);
    assert!(
        log.contains(&format!("bq: resuming after bq/{handled}")),
        "{log}"
    );
    for n in 1..=handled {
        assert!(
            !log.contains(&format!("bq: bq/{n} ")),
            "bq/{n} was handled again after the restart:\n{log}"
        );
    }
    assert_eq!(
        lines_with(&log, &[&format!("bq: {k3} {d3} FAILED")]).len(),
        1,
        "{log}"
    );
    assert_eq!(
        lines_with(&log, &[&format!("bq: {k4} {d4} FAILED")]).len(),
        1,
        "{log}"
    );
    // What it learnt before the restart it knows again: the RC recorded d1 under states/.
    let b2 = c.booted_ios(1);
    assert_eq!(
        b2.nvec_get(&[d1, d3, d4])
            .unwrap()
            .iter()
            .map(|n| n.state)
            .collect::<Vec<_>>(),
        [FAILED, FAILED, FAILED]
    );
    assert!(c
        .client(0)
        .kv_get_string(&format!("states/{d1}"))
        .unwrap()
        .is_some_and(|v| v.contains("FAILED")));

    // Node 2 leaves the configuration: what both hax have handled goes, by exact keys.
    c.nodes[2].unconfigure(c.client(0));
    let cleaned = wait_until(T, || {
        let keys = c.keys("bq/");
        keys.iter().all(|k| seq(k) > seq(&k4)).then_some(keys)
    });
    assert!(
        cleaned.is_some(),
        "bq/ was not cleaned up: {:?}\n{}",
        c.keys("bq/"),
        all_logs(&c)
    );
    let logged = wait_until(Duration::from_secs(5), || {
        let logs = all_logs(&c);
        (!lines_with(&logs, &["RC: bq/ cleanup: deleted", "entries (bq/1 .."]).is_empty())
            .then_some(())
    });
    assert!(logged.is_some(), "no cleanup line:\n{}", all_logs(&c));
    assert!(
        c.keys("bq-offsets/").len() >= 2,
        "the offsets themselves stay"
    );
}
