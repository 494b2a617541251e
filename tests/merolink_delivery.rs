//! MeroLink in-process: delivery tracking, inactive (STOPPED) links, links dropped by a
//! FAILED note on the self link, restarted processes.
#[allow(unused_imports)] // support re-exports the Consul helpers, unused here
mod support;

use crossbeam_channel::bounded;
use hax::actors::entrypoint::restart_notes;
use hax::actors::merolink::links::{LinkState, SendReport};
use hax::actors::merolink::MeroCmd;
use hax::motr::{HaState, ProcessEventKind};
use hax_sim::{LinkDecision, ObjState};
use std::time::{Duration, Instant};
use support::merolink::*;

#[test]
fn a_send_the_process_never_confirms_is_reported_timed_out_after_the_delivery_timeout() {
    let h = Hax::start(Duration::from_millis(300));
    let (sim, _) = h.boot(sim_config(0x30));
    sim.set_acking(false);
    let x = svc_fids(0x2000, 2);
    let t0 = Instant::now();
    let report = h
        .broadcast(notes(&x[..1], HaState::Online), None)
        .recv_timeout(Duration::from_secs(5))
        .expect("the batch ends although the process never confirms");
    let took = t0.elapsed();
    assert_eq!(
        report,
        SendReport {
            sent: 1,
            timed_out: 1,
            ..Default::default()
        },
        "the process link (the self link takes notes about linked processes only)"
    );
    assert!(
        took >= Duration::from_millis(300),
        "given up only after the delivery timeout ({took:?})"
    );
    assert!(
        took < Duration::from_secs(2),
        "given up soon after the delivery timeout ({took:?})"
    );
    // The message did arrive; it was only never confirmed.
    sim.wait_for_note(x[0], ObjState::Online, T)
        .expect("the note arrived");

    // A late confirmation of the given-up send is harmless; later sends are tracked normally.
    sim.set_acking(true);
    let report = h.broadcast_wait(notes(&x[1..], HaState::Online), None);
    assert_eq!(
        report,
        SendReport {
            sent: 1,
            delivered: 1,
            ..Default::default()
        }
    );
}

#[test]
fn a_process_that_reports_stopped_gets_no_more_broadcasts() {
    let h = Hax::start(Duration::from_secs(2));
    let (p, q) = (pfid(0x32), pfid(0x33));
    let (ps, _) = h.boot(sim_config(0x32));
    let (qs, _) = h.boot(sim_config(0x33));

    ps.send_stop_events().expect("p stops");
    // MeroLink marks the link inactive before it forwards the STOPPED event, and has Motr
    // drop it (FAILED on the self link).
    h.wait_event(p, ProcessEventKind::Stopped);
    let pl = h.links_of(p);
    assert!(
        pl.iter().all(|(_, i)| i.state != LinkState::Active),
        "p's link takes no broadcasts: {pl:?}"
    );
    assert_eq!(h.links_of(q)[0].1.state, LinkState::Active);
    let gone_by = std::time::Instant::now() + T;
    while !h.links_of(p).is_empty() && std::time::Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        h.links_of(p).is_empty(),
        "Motr dropped the stopped process's link"
    );

    let x = svc_fids(0x2100, 1)[0];
    let report = h.broadcast_wait(notes(&[x], HaState::Online), None);
    assert_eq!(
        report,
        SendReport {
            sent: 1,
            delivered: 1,
            ..Default::default()
        },
        "q only (the self link takes notes about linked processes only)"
    );
    qs.wait_for_note(x, ObjState::Online, T)
        .expect("q still gets broadcasts");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        ps.received_notes().iter().all(|n| n.fid != x),
        "the stopped process got nothing more"
    );
    for tag in ps.sent_tags() {
        ps.wait_for_ack(tag, T)
            .unwrap_or_else(|e| panic!("p's tag {tag} not confirmed: {e}"));
    }
}

#[test]
fn failed_on_the_self_link_drops_the_process_link_and_nothing_is_sent_on_it_afterwards() {
    let h = Hax::start(Duration::from_secs(2));
    let p = pfid(0x34);
    let (ps, _) = h.boot(sim_config(0x34));
    let (qs, _) = h.boot(sim_config(0x35));
    let plink = h.links_of(p)[0].0;

    // Motr ignores the first note it sees for a process: ONLINE first, then FAILED.
    let r = h.broadcast_wait(notes(&[p], HaState::Online), None);
    assert_eq!(
        r,
        SendReport {
            sent: 3,
            delivered: 3,
            ..Default::default()
        }
    );
    assert!(!ps.is_dropped());
    let r = h.broadcast_wait(notes(&[p], HaState::Failed), None);
    assert_eq!(r.sent + r.failed, 3, "{r:?}");

    ps.wait_dropped(T)
        .expect("the process link is dropped (DROP frame)");
    h.wait_links("p's link gone", |l| l.iter().all(|(id, _)| *id != plink));
    assert!(!hax::ffi::is_sendable(plink));

    // A later broadcast does not try the dropped link (a send on it would abort the process).
    let y = svc_fids(0x2200, 1)[0];
    let r = h.broadcast_wait(notes(&[y], HaState::Online), None);
    assert_eq!(
        r,
        SendReport {
            sent: 1,
            delivered: 1,
            ..Default::default()
        },
        "q only (the self link takes notes about linked processes only)"
    );
    qs.wait_for_note(y, ObjState::Online, T)
        .expect("q still served");
    assert!(ps.received_notes().iter().all(|n| n.fid != y));
}

#[test]
fn drop_restarted_broadcasts_the_failed_state_and_calls_done() {
    let h = Hax::start(Duration::from_secs(2));
    let (p, never) = (pfid(0x36), pfid(0x3f));
    let svc = hax::fid::Fid::typed(b's', 1, 0x3601);
    let (ps, _) = h.boot(sim_config(0x36));
    let (qs, _) = h.boot(sim_config(0x37));

    // No link for the process: done at once, nothing sent.
    let (tx, rx) = bounded(1);
    h.cmd(MeroCmd::DropRestarted {
        process: never,
        notes: restart_notes(never, &[]),
        done: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(1))
            .expect("done at once"),
        SendReport::default()
    );

    // A live link: TRANSIENT then FAILED go to every other link (the self link included);
    // `done` waits for the self link only (Motr acted on them), not for q.
    h.broadcast_wait(notes(&[p], HaState::Online), None); // as ProcessStatus would have
    let (tx, rx) = bounded(1);
    let t0 = Instant::now();
    h.cmd(MeroCmd::DropRestarted {
        process: p,
        notes: restart_notes(p, &[svc]),
        done: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    });
    let r = rx.recv_timeout(T).expect("done called");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "done once delivered, not after the timeout"
    );
    assert_eq!(
        r,
        SendReport {
            sent: 1,
            delivered: 1,
            ..Default::default()
        },
        "the self link's confirmation"
    );
    qs.wait_for_note(p, ObjState::Transient, T)
        .expect("q hears p transient first");
    qs.wait_for_note(p, ObjState::Failed, T)
        .expect("q hears p failed");
    qs.wait_for_note(svc, ObjState::Failed, T)
        .expect("q hears p's service failed");
    // The FAILED note on the self link made Motr drop p's old link.
    ps.wait_dropped(T).expect("p's old link dropped");
    h.wait_links("p's link gone", |l| {
        l.iter().all(|(_, i)| i.process != Some(p))
    });
    assert!(
        ps.received_notes()
            .iter()
            .all(|n| n.state != ObjState::Failed.code()),
        "p itself was skipped"
    );
}

#[test]
fn a_restarted_process_is_answered_after_its_old_link_is_failed() {
    let h = Hax::start(Duration::from_secs(2));
    let p = pfid(0x38);
    let (mut ps, _) = h.boot(sim_config(0x38));
    let old = h.links_of(p)[0].0;
    h.broadcast_wait(notes(&[p], HaState::Online), None);

    let report = ps.restart().expect("the restarted process boots");
    assert_eq!(report.first_reply.link, LinkDecision::Connected);
    let links = h.wait_links("only p's new link", |l| {
        let mine: Vec<_> = l.iter().filter(|(_, i)| i.process == Some(p)).collect();
        mine.len() == 1 && mine[0].0 != old
    });
    let new = links
        .iter()
        .find(|(_, i)| i.process == Some(p))
        .expect("new link");
    assert_eq!(new.1.state, LinkState::Active);
    for tag in ps.sent_tags() {
        ps.wait_for_ack(tag, T)
            .unwrap_or_else(|e| panic!("tag {tag} not confirmed: {e}"));
    }
}

#[test]
fn a_process_restarted_before_hax_ever_broadcast_about_it_still_loses_its_old_link() {
    // Motr ignores the first note about a process: MeroLink must not let FAILED be it.
    let h = Hax::start(Duration::from_secs(2));
    let p = pfid(0x3b);
    let (mut ps, _) = h.boot(sim_config(0x3b));
    let old = h.links_of(p)[0].0;
    let report = ps.restart().expect("the restarted process boots");
    assert_eq!(report.first_reply.link, LinkDecision::Connected);
    let links = h.wait_links("only p's new link", |l| {
        let mine: Vec<_> = l.iter().filter(|(_, i)| i.process == Some(p)).collect();
        mine.len() == 1 && mine[0].0 != old
    });
    assert!(
        links.iter().all(|(l, _)| *l != old),
        "the old link was dropped"
    );
}

#[test]
fn a_process_restarted_three_times_without_ever_starting_loses_its_old_link_each_time() {
    // Like m0ham, which never reports STARTED: after the first restart Motr holds FAILED for
    // it, and a second FAILED alone would be ignored as unchanged (the old link would stay).
    let h = Hax::start(Duration::from_secs(2));
    let p = pfid(0x3c);
    let (mut ps, _) = h.boot(sim_config(0x3c));
    for round in 1..=3 {
        let old = h.links_of(p)[0].0;
        ps.restart()
            .unwrap_or_else(|e| panic!("restart {round}: the process boots again: {e}"));
        h.wait_links(&format!("restart {round}: only p's new link"), |l| {
            let mine: Vec<_> = l.iter().filter(|(_, i)| i.process == Some(p)).collect();
            mine.len() == 1 && mine[0].0 != old
        });
    }
}

#[test]
fn a_peer_that_never_confirms_does_not_delay_a_restarted_process_s_answer() {
    // Dropping the old link needs the self link only: q, which confirms nothing, is told
    // too, but nobody waits for it.
    let h = Hax::start(Duration::from_secs(10));
    let p = pfid(0x3d);
    let (mut ps, _) = h.boot(sim_config(0x3d));
    let (qs, _) = h.boot(sim_config(0x3e));
    qs.set_acking(false);
    let t0 = Instant::now();
    ps.restart().expect("the restarted process boots");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the restart waited {:?} (the delivery timeout is 10 s)",
        t0.elapsed()
    );
    qs.wait_for_note(p, ObjState::Failed, T)
        .expect("q still hears that p failed");
}

#[test]
fn a_process_event_is_confirmed_only_once_recorded_and_the_messages_after_it_wait_in_order() {
    let h = Hax::start(Duration::from_secs(2));
    let (ps, _) = h.boot(sim_config(0x3f));
    h.hold_acks();
    let started = ps
        .send_process_event(hax_sim::ProcessEvent::Stopping, hax_sim::ProcessType::M0d)
        .expect("send");
    let pool = hax::fid::Fid::typed(b'o', 1, 4);
    // A question after the unconfirmed event: answered only once everything before it is
    // confirmed (a request Motr could send again is one never answered).
    let asked = std::thread::scope(|s| {
        let q = s.spawn(|| ps.failure_vec_req(pool));
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            ps.wait_for_ack(started, Duration::ZERO).is_err(),
            "confirmed before it was recorded"
        );
        assert!(
            !q.is_finished(),
            "answered while an earlier message is unconfirmed"
        );
        assert_eq!(h.release_acks(false), 1);
        q.join().expect("thread")
    });
    asked.expect("answered once the event was recorded");
    ps.wait_for_ack(started, T)
        .expect("confirmed once recorded");
}

#[test]
fn a_failed_broadcast_for_a_process_whose_stopped_is_not_recorded_yet_does_not_drop_its_link() {
    // The broadcaster says FAILED as soon as it hears STOPPED; the recorder confirms STOPPED
    // only once it is durable. Were FAILED to reach the self link first, Motr would drop the
    // link and the confirmation with it: a real m0d hangs in m0_ha_link_flush.
    let h = Hax::start(Duration::from_secs(2));
    let p = pfid(0x41);
    let (ps, _) = h.boot(sim_config(0x41));
    h.broadcast_wait(notes(&[p], HaState::Online), None);
    h.hold_acks();
    ps.send_stop_events().expect("stop events");
    h.wait_event(p, ProcessEventKind::Stopped);
    h.broadcast_wait(notes(&[p], HaState::Failed), None);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !ps.is_dropped(),
        "the link went before STOPPED was confirmed"
    );
    h.release_acks(false);
    ps.close()
        .expect("STOPPED confirmed (m0_ha_link_flush returns)");
    h.wait_links("p's link dropped after its STOPPED was confirmed", |l| {
        l.iter().all(|(_, i)| i.process != Some(p))
    });
}
