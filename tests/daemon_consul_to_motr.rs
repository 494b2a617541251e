//! Consul → Motr through the real `hax` binary, real Consul agents and simulated m0ds:
//! health changes reach every process once and correctly.
mod support;

use hax::fid::Fid;
use hax_sim::SimProcess;
use serde_json::json;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(20);
const TRANSIENT: u32 = 3;
const ONLINE: u32 = 1;
const FAILED: u32 = 2;

fn boot_all(n: &SingleNode) -> (SimProcess, SimProcess, SimProcess) {
    let confd = n.sim(CONFD);
    confd.boot().expect("confd boots");
    let ios1 = n.sim(IOS1);
    ios1.boot().expect("ios1 boots");
    let ios2 = n.sim(IOS2);
    ios2.boot().expect("ios2 boots");
    for f in [CONFD, IOS1, IOS2] {
        assert!(
            n.wait_process_state(f, "DTM_RECOVERED", T),
            "{f} did not reach DTM_RECOVERED"
        );
    }
    (confd, ios1, ios2)
}

/// The last broadcast state a process heard about `fid` (GET answers excluded).
fn last_heard(p: &SimProcess, fid: Fid) -> Option<u32> {
    p.received_notes()
        .iter()
        .rev()
        .find(|n| n.fid == fid && n.id_of_get == 0)
        .map(|n| n.state)
}

fn wait_heard(p: &SimProcess, fid: Fid, state: u32) -> bool {
    wait_until(T, || (last_heard(p, fid) == Some(state)).then_some(())).is_some()
}

/// Waits until `p` has heard nothing new for 600 ms; returns how many notes it has.
fn settled(p: &SimProcess) -> usize {
    let mut last = p.received_notes().len();
    let mut quiet_since = std::time::Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(600) {
        std::thread::sleep(Duration::from_millis(50));
        let now = p.received_notes().len();
        if now != last {
            last = now;
            quiet_since = std::time::Instant::now();
        }
    }
    last
}

fn post(url: &str, body: &[u8]) -> (u16, String) {
    post_with(url, body, None)
}

fn post_with(url: &str, body: &[u8], secret: Option<&str>) -> (u16, String) {
    let mut req = ureq::post(url).set("Content-Type", "application/json");
    if let Some(s) = secret {
        req = req.set("X-Hax-Secret", s);
    }
    match req.send_bytes(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST {url}: {e}"),
    }
}

#[test]
fn a_ttl_check_going_critical_reaches_every_process_as_transient_and_passing_again_as_online() {
    let n = SingleNode::start();
    let (confd, ios1, ios2) = boot_all(&n);
    n.client().check_fail(&format!("service:{IOS1}")).unwrap();
    for p in [&confd, &ios2, &ios1] {
        assert!(
            wait_heard(p, IOS1, TRANSIENT),
            "{} never heard {IOS1} TRANSIENT: {:?}",
            p.fid(),
            last_heard(p, IOS1)
        );
        assert!(
            wait_heard(p, IOS1_SVC, TRANSIENT),
            "{} never heard the ios service TRANSIENT",
            p.fid()
        );
    }
    n.client().check_pass(&format!("service:{IOS1}")).unwrap();
    for p in [&confd, &ios2] {
        assert!(
            wait_heard(p, IOS1, ONLINE),
            "{} never heard {IOS1} ONLINE again",
            p.fid()
        );
    }
    // Each change went out once: no duplicate TRANSIENT broadcasts for the one failure.
    let transients = ios2
        .received_notes()
        .iter()
        .filter(|x| x.fid == IOS1 && x.state == TRANSIENT && x.id_of_get == 0)
        .count();
    assert_eq!(transients, 1, "one failure, one broadcast");
}

#[test]
fn a_process_killed_abruptly_and_restarted_is_failed_everywhere_and_its_old_link_dropped() {
    let n = SingleNode::start();
    let (confd, mut ios1, ios2) = boot_all(&n);
    ios1.kill();
    n.client().check_fail(&format!("service:{IOS1}")).unwrap();
    assert!(wait_heard(&ios2, IOS1, TRANSIENT));
    // The process comes back: hax must make Motr drop the old link before answering it.
    ios1.restart().expect("ios1 boots again");
    assert!(
        wait_heard(&confd, IOS1, FAILED)
            || confd
                .received_notes()
                .iter()
                .any(|x| x.fid == IOS1 && x.state == FAILED)
    );
    assert!(
        ios2.received_notes()
            .iter()
            .any(|x| x.fid == IOS1 && x.state == FAILED),
        "ios2 never heard {IOS1} FAILED"
    );
    let counted = |name: &str| {
        wait_until(T, || {
            (n.hax.metric(name).unwrap_or(0.0) >= 1.0).then_some(())
        })
        .is_some()
    };
    assert!(
        counted("hax_entrypoint_replies_total{result=\"restart\"}"),
        "hax did not take the new incarnation's request for a restart"
    );
    assert!(
        counted("hax_motr_link_disconnects_total"),
        "the old link was not disconnected:\n{}",
        n.hax.log_text()
    );
    // The new incarnation boots while its check is still critical: the others hear TRANSIENT
    // after the restart's FAILED (hax counts that FAILED as said), not FAILED until it passes.
    let transient_after_failed = || {
        let notes: Vec<_> = ios2
            .received_notes()
            .into_iter()
            .filter(|x| x.fid == IOS1)
            .collect();
        let failed_at = notes.iter().rposition(|x| x.state == FAILED);
        failed_at.is_some_and(|i| notes[i + 1..].iter().any(|x| x.state == TRANSIENT))
    };
    let deadline = std::time::Instant::now() + T;
    while !transient_after_failed() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        transient_after_failed(),
        "ios2 did not hear {IOS1} TRANSIENT after its restart's FAILED: {:?}",
        ios2.received_notes()
            .iter()
            .filter(|x| x.fid == IOS1)
            .map(|x| x.state)
            .collect::<Vec<_>>()
    );
    n.client().check_pass(&format!("service:{IOS1}")).unwrap();
    assert!(n.wait_process_state(IOS1, "DTM_RECOVERED", T));
    assert!(
        wait_heard(&ios2, IOS1, ONLINE),
        "after the restart {IOS1} is ONLINE again"
    );
}

#[test]
fn a_watch_delivery_hax_missed_is_repaired_by_reconciliation() {
    // Watches point at a port where nobody listens: every delivery is lost.
    let n = SingleNode::start_unwatched(&[]);
    let (_confd, _ios1, ios2) = boot_all(&n);
    n.client().check_fail(&format!("service:{IOS1}")).unwrap();
    assert!(
        wait_heard(&ios2, IOS1, TRANSIENT),
        "reconciliation did not repair the lost delivery"
    );
}

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/consul-watch")
}

/// The bytes of a fixture file; a missing or unreadable one fails the test naming its path.
fn read_fixture(name: &str) -> Vec<u8> {
    let p = fixture_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

#[test]
fn replaying_every_captured_watch_payload_gives_the_expected_notes() {
    // The captures describe another agent's health: hax takes them at their word here, and
    // hears nothing else (this agent's own watch deliveries would race with the replay).
    let n = SingleNode::start_unwatched(&["--health-from", "watches", "--reconcile", "false"]);
    // confd listens: ios2 (0xf) is deregistered on the way (FAILED, and its link dropped).
    let (confd, _ios1, _ios2) = boot_all(&n);
    let headers = String::from_utf8(read_fixture("headers.jsonl")).expect("headers.jsonl is UTF-8");
    let mut expect: Vec<(&str, Fid, u32)> = vec![
        (
            "22-service-ios-step2-ios-0xc-critical.json",
            IOS1,
            TRANSIENT,
        ),
        ("25-service-ios-step4-ios-0xc-passing.json", IOS1, ONLINE),
        (
            "28-service-ios-step5-burst-confd-ios-0xf-critical.json",
            IOS2,
            TRANSIENT,
        ),
        (
            "29-service-confd-step5-burst-confd-ios-0xf-critical.json",
            CONFD,
            TRANSIENT,
        ),
        ("32-service-confd-step6-all-passing.json", CONFD, ONLINE),
        ("33-service-ios-step6-all-passing.json", IOS2, ONLINE),
        // Absent from a newer snapshot of its service: gone from Consul, FAILED to Motr.
        (
            "35-service-ios-step7-ios-0xf-deregistered.json",
            IOS2,
            FAILED,
        ),
        (
            "37-service-ios-step8-ios-0xc-critical-answered-500.json",
            IOS1,
            TRANSIENT,
        ),
        ("39-service-ios-step9-ios-0xc-passing.json", IOS1, ONLINE),
    ];
    expect.reverse();
    for line in headers.lines() {
        let h: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = h["file"].as_str().unwrap();
        let body = read_fixture(file);
        let (code, answer) = post(
            &format!("{}{}", n.hax.url(), h["path"].as_str().unwrap()),
            &body,
        );
        assert_eq!(code, 200, "{file}: {answer}");
        if expect.last().is_some_and(|(f, _, _)| *f == file) {
            let (_, fid, state) = expect.pop().unwrap();
            assert!(
                wait_heard(&confd, fid, state),
                "after {file}: {fid} should be {state}, confd heard {:?}; hax's lines about it:\n{}",
                last_heard(&confd, fid),
                n.hax
                    .log_text()
                    .lines()
                    .filter(|l| l.contains(&fid.to_string()) || l.contains("broadcast"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    assert!(expect.is_empty());
}

#[test]
fn malformed_and_oversized_bodies_get_400_and_413_and_change_nothing() {
    let n = SingleNode::start_with(&["--payload-limit", "4096", "--health-from", "watches"]);
    let (_confd, _ios1, ios2) = boot_all(&n);
    let before = settled(&ios2);
    for bad in [
        &b"{not json"[..],
        b"{}",
        b"[{\"Node\": 7}]",
        b"\xff\xfe\x00",
    ] {
        let (code, body) = post(&format!("{}/", n.hax.url()), bad);
        assert_eq!(code, 400, "{:?} -> {body}", String::from_utf8_lossy(bad));
        let err: serde_json::Value = serde_json::from_str(&body).expect("error body is JSON");
        assert!(err["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let mut huge = b"[".to_vec();
    huge.extend(std::iter::repeat_n(b' ', 8192));
    huge.push(b']');
    let (code, body) = post(&format!("{}/watcher/service/ios", n.hax.url()), &huge);
    assert_eq!(code, 413, "{body}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ios2.received_notes().len(),
        before,
        "refused bodies changed nothing"
    );
    let live = ureq::get(&format!("{}/healthz", n.hax.url()))
        .call()
        .unwrap();
    assert_eq!(live.status(), 200);
}

#[test]
fn a_thousand_and_twenty_five_changed_fids_go_out_as_two_messages() {
    let n = SingleNode::start_with(&["--health-from", "watches", "--reconcile", "false"]);
    let (_confd, _ios1, ios2) = boot_all(&n);
    let fids: Vec<Fid> = (0..1025).map(|i| Fid::typed(b'r', 9, 1000 + i)).collect();
    let entries: Vec<serde_json::Value> = fids
        .iter()
        .map(|f| json!({"Node": {"Node": "n1"}, "Service": {"ID": f.to_string(), "Service": "ios"},
                        "Checks": [{"CheckID": format!("service:{f}"), "Status": "critical", "ServiceID": f.to_string()}]}))
        .collect();
    let (code, body) = post(
        &format!("{}/", n.hax.url()),
        serde_json::to_string(&entries).unwrap().as_bytes(),
    );
    assert_eq!(code, 200, "{body}");
    let set: std::collections::HashSet<Fid> = fids.iter().copied().collect();
    let got = wait_until(T, || {
        let notes: Vec<_> = ios2
            .received_notes()
            .into_iter()
            .filter(|x| set.contains(&x.fid))
            .collect();
        (notes.len() >= 1025).then_some(notes)
    })
    .expect("all 1025 notes arrive");
    let mut tags: Vec<u64> = got.iter().map(|x| x.tag).collect();
    tags.dedup();
    assert_eq!(got.len(), 1025);
    assert_eq!(tags.len(), 2, "1025 notes in two messages (1024 + 1)");
    assert!(got.iter().all(|x| x.state == TRANSIENT));
}

#[test]
fn an_m0d_like_nvec_get_of_81_objects_is_answered_from_memory_with_one_note_each() {
    let n = SingleNode::start();
    let (_confd, _ios1, ios2) = boot_all(&n);
    let mut fids: Vec<Fid> = vec![
        CONFD,
        CONFD_SVC,
        CONFD_RMS,
        IOS1,
        IOS1_SVC,
        NODE_FID,
        Fid::typed(b'r', 1, 0x999),
    ];
    fids.extend((0..74).map(|i| Fid::typed(b'd', 1, 0x100 + i)));
    let t0 = std::time::Instant::now();
    let answer = ios2.nvec_get(&fids).expect("answered");
    let took = t0.elapsed();
    assert_eq!(answer.len(), 81);
    assert_eq!(answer.iter().map(|x| x.fid).collect::<Vec<_>>(), fids);
    let state = |f: Fid| answer.iter().find(|x| x.fid == f).unwrap().state;
    assert_eq!(state(CONFD), ONLINE);
    assert_eq!(state(IOS1_SVC), ONLINE);
    assert_eq!(
        state(Fid::typed(b'r', 1, 0x999)),
        TRANSIENT,
        "unknown process"
    );
    assert!(answer
        .iter()
        .filter(|x| x.fid.type_byte() == b'd')
        .all(|x| x.state == ONLINE));
    assert!(took < Duration::from_secs(2), "GET took {took:?}");
    let fv = ios2
        .failure_vec_req(Fid::typed(b'o', 1, 5))
        .expect("failure vector answered");
    assert!(fv.is_empty(), "an empty failure vector");
}

#[test]
fn with_a_watch_secret_posts_without_it_get_401_and_the_agents_own_watches_still_work() {
    let secret = "s3cret-for-watches";
    let n = SingleNode::start_with(&["--watch-secret", secret]);
    let (_confd, _ios1, ios2) = boot_all(&n);
    let before = settled(&ios2);
    let forged =
        std::fs::read(fixture_dir().join("22-service-ios-step2-ios-0xc-critical.json")).unwrap();
    let url = format!("{}/watcher/service/ios", n.hax.url());
    for wrong in [None, Some("s3cret-for-watcheS"), Some("")] {
        let (code, body) = post_with(&url, &forged, wrong);
        assert_eq!(code, 401, "{wrong:?}: {body}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ios2.received_notes().len(),
        before,
        "a forged critical changed nothing"
    );
    // Consul's own watch carries the secret: a real failure still gets through.
    n.client().check_fail(&format!("service:{IOS1}")).unwrap();
    assert!(
        wait_heard(&ios2, IOS1, TRANSIENT),
        "the agent's watch delivery was refused"
    );
    let log = n.hax.log_text();
    assert!(log.contains("refused: missing or wrong X-Hax-Secret"));
    assert!(!log.contains(secret), "the secret must never be logged");
}

#[test]
fn metrics_are_served_in_the_text_format_and_unknown_paths_are_named() {
    let n = SingleNode::start_unwatched(&[]);
    let url = n.hax.url();
    let text = ureq::get(&format!("{url}/metrics"))
        .call()
        .expect("GET /metrics")
        .into_string()
        .expect("text");
    assert!(
        text.contains("hax_consul_received_bytes_total{source=\"kv_m0conf\"}"),
        "{text}"
    );
    // A watch POST on /watch/<name> is served like /watcher/<name>.
    let (status, _) = post(&format!("{url}/watch/ios"), b"[]");
    assert_eq!(status, 200);
    let r = ureq::post(&format!("{url}/hax/health"))
        .send_bytes(b"[]")
        .unwrap_err();
    let ureq::Error::Status(404, resp) = r else {
        panic!("expected 404, got {r:?}")
    };
    let body = resp.into_string().unwrap();
    assert!(body.contains("/watcher/<name>"), "{body}");
}

/// A large `service` delivery is decoded from what changed since the path's last one
/// (`consul::health_delta`): the failing check in the second delivery and its recovery in the
/// third reach the processes, as a whole decode would have them.
#[test]
fn large_watch_deliveries_decoded_from_the_last_one_report_each_changed_check() {
    let n = SingleNode::start_with(&["--health-from", "watches", "--reconcile", "false"]);
    let (_confd, _ios1, ios2) = boot_all(&n);
    let node = n.agent.node_name().to_string();
    let mut fids = vec![IOS1, IOS2];
    fids.extend((0..300).map(|i| Fid::typed(b'r', 9, 5000 + i)));
    let url = format!("{}/watcher/service/ios", n.hax.url());
    let deliver = |critical: &[Fid], index: u64| {
        let body = hax_testkit::payload::health_payload(&node, "ios", &fids, critical, index);
        assert!(
            body.len() >= hax::consul::health_delta::DELTA_FROM,
            "{} bytes: large enough to be kept",
            body.len()
        );
        let r = ureq::post(&url)
            .set("Content-Type", "application/json")
            .set("X-Consul-Index", &index.to_string())
            .send_bytes(&body)
            .expect("POST");
        assert_eq!(r.status(), 200);
    };
    deliver(&[], 100);
    deliver(&[IOS1], 101);
    assert!(
        wait_heard(&ios2, IOS1, TRANSIENT),
        "IOS1's failing check, in a delivery decoded from the last, was not told"
    );
    deliver(&[], 102);
    assert!(
        wait_heard(&ios2, IOS1, ONLINE),
        "IOS1's recovery, in a delivery decoded from the last, was not told"
    );
    assert_eq!(
        metric(&n.hax.url(), "hax_watch_decodes_total{how=\"delta\"}"),
        Some(2.0),
        "the second and third deliveries were decoded from the last"
    );
    // IOS2, listed passing in every delivery, was never told anything else.
    assert!(ios2
        .received_notes()
        .iter()
        .filter(|x| x.fid == IOS2 && x.id_of_get == 0)
        .all(|x| x.state == ONLINE));
}
