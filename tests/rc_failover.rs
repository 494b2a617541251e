//! The RC leader's hax is killed in the middle of a burst of 200 drive errors: the other
//! hax takes the leader key after the session TTL and resumes where the old leader stopped.
//! Every error becomes exactly one bq/ entry and one FAILED note; none is lost, none is
//! handled twice.
mod rc_common;
mod support;

use hax::fid::Fid;
use hax_sim::StobIoq;
use rc_common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::*;

const FAILED: u32 = 2;
const BURST: u64 = 200;

fn sdev(k: u64) -> Fid {
    Fid::typed(b'd', 7, k)
}

/// How many lines of `log` name each sdev of the burst, among lines containing `needle`.
fn per_sdev(log: &str, needle: &str) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for l in log.lines().filter(|l| l.contains(needle)) {
        for k in 0..BURST {
            if l.contains(&format!("{} ", sdev(k))) {
                *m.entry(k).or_insert(0) += 1;
            }
        }
    }
    m
}

#[test]
fn killing_the_rc_leader_in_a_burst_of_200_events_loses_none_and_handles_none_twice() {
    // One entry per transaction, so that the kill lands while the leader is working.
    let mut c = RcCluster::start("failover", 2, 2, &["--rc-batch", "1"]);
    let old = c.leader().expect("a leader");
    let new = 1 - old;
    let p = c.booted_ios(new);

    let bq_before = c.epoch("bq");
    let t0 = Instant::now();
    for k in 0..BURST / 2 {
        p.send_stob_ioq(StobIoq::write_error(sdev(k), -5))
            .expect("send STOB_IOQ");
    }
    // The leader is working on the burst once it published bq/ entries for 10 errors.
    let started = wait_until(Duration::from_secs(30), || {
        let n = c.epoch("bq") - bq_before;
        (n >= 10).then_some(n)
    });
    assert!(
        started.is_some(),
        "the leader did not start on the burst:\n{}",
        c.log(old)
    );
    c.hax_mut(old)
        .signal_and_wait("KILL", Duration::from_secs(5))
        .expect("the leader's hax is killed");
    let killed = Instant::now();
    for k in BURST / 2..BURST {
        p.send_stob_ioq(StobIoq::write_error(sdev(k), -5))
            .expect("send STOB_IOQ");
    }

    let all = wait_until(Duration::from_secs(90), || {
        (0..BURST)
            .all(|k| heard(&p, sdev(k), FAILED) > 0)
            .then_some(())
    });
    let missing: Vec<u64> = (0..BURST)
        .filter(|k| heard(&p, sdev(*k), FAILED) == 0)
        .collect();
    assert!(
        all.is_some(),
        "never FAILED: sdevs {missing:?}\n{}",
        c.log(new)
    );
    // The surviving hax handled every bq/ entry (its offset: it logs each one before).
    let bq_last = c.epoch("bq");
    let logged = wait_until(Duration::from_secs(10), || {
        c.offset(new).filter(|o| *o >= bq_last)
    });
    assert!(
        logged.is_some(),
        "hax {new} did not handle bq/ up to {bq_last}:\n{}",
        c.log(new)
    );
    std::thread::sleep(Duration::from_millis(500));
    let old_log = c.log(old);
    let new_log = c.log(new);
    let by_old = per_sdev(&old_log, "RC: Process eq/");
    let by_new = per_sdev(&new_log, "RC: Process eq/");
    eprintln!(
        "{} errors handled by the old leader before the kill, {} by the new one; all {BURST} FAILED {:?} after the kill ({:?} in all)",
        by_old.len(),
        by_new.len(),
        killed.elapsed(),
        t0.elapsed()
    );
    let takeover = lines_with(&new_log, &["RC: this hax", "leads the RC"]);
    assert_eq!(
        takeover.len(),
        1,
        "the surviving hax took over once:\n{new_log}"
    );

    // Exactly one bq/ entry per error: the surviving hax consumed each sdev's entry once.
    let consumed = per_sdev(&new_log, "bq: bq/");
    for k in 0..BURST {
        assert_eq!(
            consumed.get(&k),
            Some(&1),
            "sdev {} went through bq/ {:?} times",
            sdev(k),
            consumed.get(&k)
        );
        assert_eq!(heard(&p, sdev(k), FAILED), 1);
    }
    // No error was handled by both leaders, none twice by one.
    for (k, n) in &by_new {
        assert_eq!(*n, 1, "the new leader handled sdev {} {n} times", sdev(*k));
        assert!(
            !by_old.contains_key(k),
            "sdev {} handled by both leaders",
            sdev(*k)
        );
    }
    assert!(by_old.values().all(|n| *n == 1));
    assert!(
        by_new.len() >= (BURST / 2) as usize,
        "the second half of the burst came after the kill"
    );
    // A line lost with the killed process is the only way the counts may fall short.
    assert!(
        by_old.len() + by_new.len() + 1 >= BURST as usize,
        "{} + {}",
        by_old.len(),
        by_new.len()
    );
    let left = wait_until(Duration::from_secs(20), || {
        c.keys("eq/").is_empty().then_some(())
    });
    assert!(left.is_some(), "eq/ not drained: {:?}", c.keys("eq/"));
}
