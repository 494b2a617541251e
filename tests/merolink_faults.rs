//! MeroLink in-process under faults: a process vanishing mid-boot, panics inside every Rust
//! callback body, and a dropped process asking again (link absent).
#[allow(unused_imports)] // support re-exports the Consul helpers, unused here
mod support;

use hax::actors::merolink::links::{LinkState, SendReport};
use hax::ffi::{inject_panics, PanicSite};
use hax::fid::Fid;
use hax::motr::{HaState, ProcessEventKind};
use hax_sim::{
    HaMsg, LinkDecision, MsgBody, NvecType, ObjState, ProcessEvent as SimEvent,
    ProcessType as SimType, SimError,
};
use std::sync::Once;
use std::time::{Duration, Instant};
use support::merolink::*;

#[test]
fn a_process_vanishing_mid_boot_leaves_merolink_serving_others() {
    let h = Hax::start(Duration::from_millis(500));
    let p = pfid(0x40);
    let ps = h.sim(sim_config(0x40));
    let r = ps.entrypoint(true).expect("first entrypoint");
    assert_eq!((r.rc, r.link), (0, LinkDecision::Connected));
    let tag = ps
        .send_process_event(SimEvent::Starting, SimType::M0d)
        .expect("STARTING");
    ps.wait_for_ack(tag, T).expect("STARTING confirmed");
    let r = ps.entrypoint(false).expect("second entrypoint");
    assert_eq!(r.link, LinkDecision::Reused);
    // An NVEC GET, and the process dies before the answer comes.
    let get = MsgBody::Nvec {
        nvec_type: NvecType::Get,
        id_of_get: 7,
        ignore_same_state: 0,
        notes: vec![hax_sim::Note {
            fid: CONFD,
            state: 0,
        }],
    };
    ps.send_msg(HaMsg::new(Fid::ZERO, Fid::ZERO, Fid::ZERO, get))
        .expect("GET sent");
    ps.kill();
    h.wait_event(p, ProcessEventKind::Starting);

    // MeroLink still answers; the peerless link stays until HA drops it (as in Motr).
    assert_eq!(h.links_of(p).len(), 1, "{:?}", h.links());

    // Another process boots and is served in full.
    let q = pfid(0x41);
    let mut qc = sim_config(0x41);
    qc.pools = vec![Fid::typed(b'o', 1, 0x4100)];
    qc.get_fids = vec![CONFD, CONFD_RMS, q];
    let (qs, boot) = h.boot(qc.clone()); // every message confirmed, events forwarded
    assert_eq!(boot.nvec_answer.len(), qc.get_fids.len());
    assert_eq!(boot.failure_vecs, vec![(qc.pools[0], Vec::new())]);

    // Broadcasts still end: the send to the vanished process is given up after the timeout.
    let r = h.broadcast_wait(notes(&[p], HaState::Online), None);
    assert_eq!(
        r,
        SendReport {
            sent: 3,
            delivered: 2,
            timed_out: 1,
            ..Default::default()
        }
    );
    qs.wait_for_note(p, ObjState::Online, T)
        .expect("q got the broadcast");

    // Dropping the vanished process (FAILED on the self link) ends its link after the RPC
    // timeout; q is untouched.
    h.broadcast_wait(notes(&[p], HaState::Failed), None);
    h.wait_links("the vanished process's link gone", |l| {
        l.iter().all(|(_, i)| i.process != Some(p))
    });
    assert_eq!(h.links_of(q).len(), 1);
    assert_eq!(qs.nvec_get(&[CONFD]).expect("q still answered").len(), 1);
    assert!(!qs.is_gone());
}

/// Keeps the default panic message for everything but the injected panics.
fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p
                .downcast_ref::<String>()
                .map(|s| s.as_str())
                .or_else(|| p.downcast_ref::<&str>().copied());
            if !msg.is_some_and(|m| m.starts_with("injected panic")) {
                prev(info);
            }
        }));
    });
}

/// Clears injected panics when dropped (also when the test fails).
struct ResetPanics;

impl Drop for ResetPanics {
    fn drop(&mut self) {
        inject_panics(&[]);
    }
}

fn caught(site: PanicSite) -> String {
    format!("panic caught in Motr callback {site:?}")
}

/// Waits until the log shows a caught panic at every site.
fn wait_caught(mark: usize, sites: &[PanicSite]) {
    let deadline = Instant::now() + T;
    while !sites.iter().all(|s| logged_since(mark, &caught(*s))) {
        let missing: Vec<_> = sites
            .iter()
            .filter(|s| !logged_since(mark, &caught(**s)))
            .collect();
        assert!(
            Instant::now() < deadline,
            "no caught panic logged for {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn panics_in_every_callback_body_are_caught_and_motr_still_gets_its_confirmations() {
    quiet_injected_panics();
    let h = Hax::start(Duration::from_millis(300));
    let _reset = ResetPanics; // dropped before `h`: MeroLink stops without injected panics
    let start = log_mark();

    // q: a process MeroLink knows, which stops confirming (its sends stay in flight).
    let q = pfid(0x50);
    let (qs, _) = h.boot(sim_config(0x50));
    let qlink = h.links_of(q)[0].0;
    qs.set_acking(false);

    // Entrypoint request: the request is lost (never answered), nothing else happens.
    let mark = log_mark();
    inject_panics(&[PanicSite::EntrypointRequest]);
    let mut lost = sim_config(0x51);
    lost.timeouts.reply = Duration::from_secs(1);
    let ls = h.sim(lost);
    assert!(matches!(ls.entrypoint(true), Err(SimError::Timeout { .. })));
    wait_caught(mark, &[PanicSite::EntrypointRequest]);

    // Link connected / reused / absent, message received and delivered.
    let mark = log_mark();
    inject_panics(&[
        PanicSite::LinkConnected,
        PanicSite::LinkReused,
        PanicSite::LinkAbsent,
        PanicSite::MsgReceived,
        PanicSite::MsgDelivered,
    ]);
    let p = pfid(0x52);
    let ps = h.sim(sim_config(0x52));
    let r = ps.entrypoint(true).expect("first entrypoint answered");
    assert_eq!((r.rc, r.link), (0, LinkDecision::Connected));
    let t1 = ps
        .send_process_event(SimEvent::Starting, SimType::M0d)
        .expect("STARTING");
    let r = ps.entrypoint(false).expect("second entrypoint answered");
    assert_eq!((r.rc, r.link), (0, LinkDecision::Reused));
    let t2 = ps
        .send_process_event(SimEvent::Started, SimType::M0d)
        .expect("STARTED");
    for t in [t1, t2] {
        ps.wait_for_ack(t, T)
            .expect("received messages are confirmed although the callback panicked");
    }
    // A note about q (a linked process): the self link takes it too.
    let r = h.broadcast_wait(notes(&[q], HaState::Online), None);
    assert_eq!(
        r,
        SendReport {
            sent: 2,
            timed_out: 2,
            ..Default::default()
        },
        "self link (report lost) and q"
    );
    // A process that knew this HA (its cookie) and has no link: link_absent.
    let absent = h.sim(sim_config(0x53));
    absent.set_ha_cookie(ps.ha_cookie());
    let r = absent.entrypoint(false).expect("entrypoint answered");
    assert_eq!((r.rc, r.link), (0, LinkDecision::Absent));
    wait_caught(
        mark,
        &[
            PanicSite::LinkConnected,
            PanicSite::LinkReused,
            PanicSite::LinkAbsent,
            PanicSite::MsgReceived,
            PanicSite::MsgDelivered,
        ],
    );
    assert!(
        h.events().iter().all(|e| e.process != p),
        "the panics did eat p's events"
    );
    assert!(h.links_of(p).is_empty(), "and its link_connected");

    // Link is disconnecting / disconnected, message not delivered: q is dropped while its
    // sends are unconfirmed; the link is still let go (disconnect called: DROP arrives).
    let mark = log_mark();
    inject_panics(&[
        PanicSite::LinkIsDisconnecting,
        PanicSite::MsgNotDelivered,
        PanicSite::LinkDisconnected,
    ]);
    h.broadcast_wait(notes(&[q], HaState::Online), None);
    h.broadcast_wait(notes(&[q], HaState::Failed), None);
    qs.wait_dropped(T)
        .expect("q's link was let go although link_is_disconnecting panicked");
    wait_caught(
        mark,
        &[
            PanicSite::LinkIsDisconnecting,
            PanicSite::MsgNotDelivered,
            PanicSite::LinkDisconnected,
        ],
    );
    assert!(!hax::ffi::is_sendable(qlink));
    // MeroLink never heard of the disconnection (those events were lost), so it still lists
    // q's link, but the FFI boundary refuses the send instead of letting Motr abort.
    let stale = h.links_of(q);
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].1.state, LinkState::Active);
    let y = svc_fids(0x5100, 1);
    let r = h.broadcast_wait(notes(&y, HaState::Online), None);
    assert_eq!(
        r,
        SendReport {
            failed: 1,
            ..Default::default()
        },
        "q's stale link refused (the self link takes notes about linked processes only)"
    );

    // Back to normal: a new process boots and is served.
    inject_panics(&[]);
    let rfid = pfid(0x54);
    let (rs, _) = h.boot(sim_config(0x54)); // every message confirmed, events forwarded
    assert_eq!(h.links_of(rfid).len(), 1);
    let z = [rfid];
    let r = h.broadcast_wait(notes(&z, HaState::Online), None);
    assert_eq!(
        (r.sent, r.delivered),
        (2, 2),
        "self link and the new process (the note is about it): {r:?}"
    );
    rs.wait_for_note(z[0], ObjState::Online, T)
        .expect("the new process got the broadcast");

    let all = [
        PanicSite::EntrypointRequest,
        PanicSite::MsgReceived,
        PanicSite::MsgDelivered,
        PanicSite::MsgNotDelivered,
        PanicSite::LinkConnected,
        PanicSite::LinkReused,
        PanicSite::LinkAbsent,
        PanicSite::LinkIsDisconnecting,
        PanicSite::LinkDisconnected,
    ];
    wait_caught(start, &all);
}

#[test]
fn a_process_whose_link_was_dropped_asks_again_and_gets_link_absent() {
    let h = Hax::start(Duration::from_secs(2));
    let p = pfid(0x58);
    let (ps, _) = h.boot(sim_config(0x58));
    h.broadcast_wait(notes(&[p], HaState::Online), None);
    h.broadcast_wait(notes(&[p], HaState::Failed), None);
    ps.wait_dropped(T).expect("p dropped");
    h.wait_links("p's link gone", |l| {
        l.iter().all(|(_, i)| i.process != Some(p))
    });
    let cookie = ps.ha_cookie();
    drop(ps);

    // The process asks again, not as a first request, knowing this HA (its cookie): there is
    // no link to reuse.
    let mark = log_mark();
    let again = h.sim(sim_config(0x58));
    again.set_ha_cookie(cookie);
    let r = again.entrypoint(false).expect("entrypoint answered");
    assert_eq!((r.rc, r.link), (0, LinkDecision::Absent));
    // MeroLink hears of it (link_absent runs right after the reply is queued).
    wait_logged(mark, "link absent for request");
    assert!(h.links_of(p).is_empty());

    // The process dies of it (as m0d does); only a real restart (a new process, a first
    // request) gets a link again.
    assert!(
        again.entrypoint(true).is_err(),
        "a dead process asks nothing"
    );
    let restarted = h.sim(sim_config(0x58));
    let r = restarted
        .entrypoint(true)
        .expect("first entrypoint answered");
    assert_eq!((r.rc, r.link), (0, LinkDecision::Connected));
    h.wait_links("p linked again", |l| {
        l.iter().any(|(_, i)| i.process == Some(p))
    });
}
