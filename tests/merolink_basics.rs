//! MeroLink in-process: start, a simulated m0d's boot conversation, broadcast splitting.
#[allow(unused_imports)] // support re-exports the Consul helpers, unused here
mod support;

use hax::actors::merolink::links::{LinkState, SendReport};
use hax::motr::{HaState, ProcessEventKind, ProcessType};
use hax_sim::{service_type, LinkDecision, MsgBody, NvecType, ObjState, StobIoq};
use std::time::Duration;
use support::merolink::*;

#[test]
fn start_is_answered_by_the_responder_thread_and_reports_the_self_link_and_own_events() {
    // `Hax::start` waits for `start` to return: hax's own entrypoint request, raised inside
    // `start` on the MeroLink thread, was answered by the responder on its own thread.
    let h = Hax::start(Duration::from_secs(2));
    let links = h.links();
    assert_eq!(links.len(), 1, "only the self link exists: {links:?}");
    let (self_link, info) = &links[0];
    assert!(info.is_self);
    assert_eq!(info.process, Some(OWN));
    assert_eq!(info.peer_ep, h.endpoint);
    assert_eq!(info.state, LinkState::Active);
    assert!(hax::ffi::is_sendable(*self_link));

    let starting = h.wait_event(OWN, ProcessEventKind::Starting);
    let started = h.wait_event(OWN, ProcessEventKind::Started);
    for e in [&starting, &started] {
        assert_eq!(e.process_type, ProcessType::M0d);
        assert_eq!(e.pid, std::process::id() as u64);
        assert_eq!(e.link, Some(*self_link), "own events come on the self link");
    }
    let own: Vec<ProcessEventKind> = h
        .events()
        .iter()
        .filter(|e| e.process == OWN)
        .map(|e| e.event)
        .collect();
    assert_eq!(
        own,
        vec![ProcessEventKind::Starting, ProcessEventKind::Started]
    );
}

#[test]
fn a_simulated_m0d_boots_and_every_request_is_answered_on_its_link() {
    let h = Hax::start(Duration::from_secs(2));
    let p = pfid(0x20);
    let pool = hax::fid::Fid::typed(b'o', 1, 0x30);
    let pool2 = hax::fid::Fid::typed(b'o', 1, 0x31);
    let ios = hax::fid::Fid::typed(b's', 1, 0x21);
    let mut cfg = sim_config(0x20);
    cfg.services = vec![(ios, service_type::IOS)];
    cfg.pools = vec![pool];
    cfg.get_fids = vec![
        CONFD,
        CONFD_RMS,
        hax::fid::Fid::typed(b't', 1, 1),
        pool,
        ios,
        p,
        hax::fid::Fid::typed(b'd', 1, 0x40),
    ];
    // Like an m0d started without a configuration (a configured one sends no second request).
    cfg.second_entrypoint = true;
    let sim = h.sim(cfg.clone());
    let boot = sim.boot().expect("the simulated m0d boots");
    // Its last event was forwarded: MeroLink has handled everything the boot caused.
    h.wait_event(p, ProcessEventKind::DtmRecovered);

    // Entrypoint: answered from the view; the first request connects, the second reuses.
    let r = &boot.first_reply;
    assert_eq!((r.rc, r.link), (0, LinkDecision::Connected));
    assert_eq!(r.confds, vec![(CONFD, CONFD_EP.to_string())]);
    assert_eq!(
        (r.quorum, r.rm_fid, r.rm_ep.as_str()),
        (1, CONFD_RMS, CONFD_EP)
    );
    let second = boot.second_reply.as_ref().expect("a second request");
    assert_eq!((second.rc, second.link), (0, LinkDecision::Reused));

    // The link is known with its process and endpoint.
    let mine = h.links_of(p);
    assert_eq!(mine.len(), 1, "one link for {p}: {:?}", h.links());
    let (link, info) = mine[0].clone();
    assert_eq!(info.peer_ep, cfg.endpoint);
    assert_eq!(info.state, LinkState::Active);
    assert!(!info.is_self);
    assert!(hax::ffi::is_sendable(link));

    // Failure vector: empty, for the same pool (the sim matches pool and cookie).
    assert_eq!(boot.failure_vecs, vec![(pool, Vec::new())]);
    assert_eq!(
        sim.failure_vec_req(pool2).expect("second failure vector"),
        Vec::new()
    );

    // NVEC GET: one note per fid, in order, from the state view, with the GET's id.
    let expect: Vec<(hax::fid::Fid, u32)> = cfg
        .get_fids
        .iter()
        .map(|f| (*f, state_of(*f) as u32))
        .collect();
    let got: Vec<(hax::fid::Fid, u32)> =
        boot.nvec_answer.iter().map(|n| (n.fid, n.state)).collect();
    assert_eq!(got, expect);
    let answers: Vec<u64> = sim
        .received_notes()
        .iter()
        .filter(|n| n.id_of_get != 0)
        .map(|n| n.id_of_get)
        .collect();
    assert_eq!(
        answers,
        vec![100; cfg.get_fids.len()],
        "the SET carries the GET's id_of_get (the first GET is 100)"
    );

    // A STOB I/O error reaches the StobIoEvent recipient with the sender's process.
    let sdev = hax::fid::Fid::typed(b'd', 1, 0x40);
    sim.send_stob_ioq(StobIoq::write_error(sdev, -5))
        .expect("send STOB_IOQ");
    let stob = h.stob.recv_timeout(T).expect("StobIoEvent arrives");
    assert_eq!(
        (stob.from_process, stob.error.sdev, stob.error.rc),
        (Some(p), sdev, -5)
    );

    // A further non-first entrypoint reuses the same link.
    let again = sim.entrypoint(false).expect("third entrypoint");
    assert_eq!((again.rc, again.link), (0, LinkDecision::Reused));
    let after = h.links_of(p);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].0, link, "the link was reused, not replaced");
    assert_eq!(after[0].1.state, LinkState::Active);

    // Every message the process sent was confirmed.
    let tags = sim.sent_tags();
    assert!(tags.len() >= 9, "boot sent its messages: {tags:?}");
    for tag in tags {
        sim.wait_for_ack(tag, T)
            .unwrap_or_else(|e| panic!("tag {tag} not confirmed: {e}"));
    }

    // Its process events arrived as ProcessEvents, tied to its link.
    for kind in [
        ProcessEventKind::Starting,
        ProcessEventKind::Started,
        ProcessEventKind::DtmRecovered,
    ] {
        let e = h.wait_event(p, kind);
        assert_eq!(
            (e.process_type, e.pid, e.link),
            (ProcessType::M0d, cfg.pid, Some(link))
        );
    }
}

#[test]
fn a_broadcast_of_1025_notes_reaches_a_process_as_two_messages() {
    let h = Hax::start(Duration::from_secs(2));
    let (sim, _) = h.boot(sim_config(0x22));
    let before = sim.received_msgs().len();
    let fids = svc_fids(0x1000, 1025);
    let report = h.broadcast_wait(notes(&fids, HaState::Online), None);
    assert_eq!(
        report,
        SendReport {
            sent: 2,
            delivered: 2,
            ..Default::default()
        },
        "the process link, two messages, all delivered (the self link takes notes about linked processes only)"
    );
    let msgs = sim.received_msgs();
    let sets: Vec<Vec<hax_sim::Note>> = msgs[before..]
        .iter()
        .filter_map(|(_, m)| match &m.body {
            MsgBody::Nvec {
                nvec_type: NvecType::Set,
                id_of_get: 0,
                notes,
                ..
            } => Some(notes.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sets.iter().map(|s| s.len()).collect::<Vec<_>>(),
        vec![1024, 1]
    );
    let all: Vec<(hax::fid::Fid, u32)> = sets.concat().iter().map(|n| (n.fid, n.state)).collect();
    let expect: Vec<(hax::fid::Fid, u32)> =
        fids.iter().map(|f| (*f, ObjState::Online.code())).collect();
    assert_eq!(all, expect, "every note, once, in order");
}
