//! The state table, case by case (docs/ha-states.md).
use super::health::{Coverage, Health, ServiceHealth, Snapshot};
use super::*;
use crate::view::{ConfigTree, NodeHardware, ProcessConf, SdevConf};

const N1: Fid = Fid::typed(b'n', 1, 2);
const N2: Fid = Fid::typed(b'n', 1, 30);
const HAX: Fid = Fid::typed(b'r', 1, 6);
const IOS: Fid = Fid::typed(b'r', 1, 0xc);
const IOS_SVC: Fid = Fid::typed(b's', 1, 0xd);
const DTM: Fid = Fid::typed(b'r', 1, 0x20);
const REMOTE: Fid = Fid::typed(b'r', 1, 0x31);
const SDEV: Fid = Fid::typed(b'd', 1, 0x40);
const DRIVE: Fid = Fid::typed(b'k', 1, 0x41);
const ENCL: Fid = Fid::typed(b'e', 1, 0x50);
const CTRL: Fid = Fid::typed(b'c', 1, 0x51);

fn tree() -> ConfigTree {
    let mut t = ConfigTree::default();
    t.nodes.insert(N1, "n1".into());
    t.nodes.insert(N2, "n2".into());
    t.hardware.insert(
        N1,
        NodeHardware {
            enclosure: Some(ENCL),
            controller: Some(CTRL),
        },
    );
    let proc = |node: Fid, name: &str, services: Vec<(Fid, &str)>| ProcessConf {
        node,
        node_name: if node == N1 { "n1" } else { "n2" }.into(),
        name: name.into(),
        endpoint: String::new(),
        services: services
            .into_iter()
            .map(|(f, t)| (f, t.to_string()))
            .collect(),
    };
    t.processes
        .insert(HAX, proc(N1, "hax", vec![(Fid::typed(b's', 1, 7), "ha")]));
    t.processes
        .insert(IOS, proc(N1, "ios", vec![(IOS_SVC, "ios")]));
    t.processes.insert(
        DTM,
        proc(
            N1,
            "ios-dtm",
            vec![
                (Fid::typed(b's', 1, 0x21), "ios"),
                (Fid::typed(b's', 1, 0x22), "dtm0"),
            ],
        ),
    );
    t.processes.insert(
        REMOTE,
        proc(N2, "ios-2", vec![(Fid::typed(b's', 1, 0x32), "ios")]),
    );
    t.sdevs.insert(
        SDEV,
        SdevConf {
            service: IOS_SVC,
            drive: Some(DRIVE),
        },
    );
    t
}

fn model() -> HaModel {
    let mut m = HaModel::default();
    m.set_config(&tree());
    m.set_own(HAX);
    m
}

fn sh(p: Fid, node: &str, ok: bool) -> ServiceHealth {
    ServiceHealth {
        process: p,
        service_name: "ios".into(),
        node: node.into(),
        healthy: ok,
        node_healthy: true,
    }
}

fn ios_snapshot(index: u64, entries: Vec<ServiceHealth>) -> Snapshot {
    Snapshot {
        source: "/watcher/service/ios".into(),
        index,
        coverage: Coverage::Service("ios".into()),
        entries,
        nodes: vec![],
    }
}

fn ev(m: &mut HaModel, p: Fid, e: ProcessEventKind) {
    m.on_event(p, e, ProcessType::M0d);
}

#[test]
fn started_means_online_unless_the_process_has_a_dtm0_service() {
    let mut m = model();
    ev(&mut m, IOS, ProcessEventKind::Started);
    assert_eq!(m.state(IOS), HaState::Online);
    ev(&mut m, DTM, ProcessEventKind::Started);
    assert_eq!(m.state(DTM), HaState::DtmRecovering);
    ev(&mut m, DTM, ProcessEventKind::DtmRecovered);
    assert_eq!(m.state(DTM), HaState::Online);
    assert_eq!(
        m.state(Fid::typed(b's', 1, 0x22)),
        HaState::Online,
        "services follow"
    );
}

#[test]
fn starting_and_stopping_change_nothing_stopped_is_failed() {
    let mut m = model();
    ev(&mut m, IOS, ProcessEventKind::Started);
    ev(&mut m, IOS, ProcessEventKind::Stopping);
    assert_eq!(m.state(IOS), HaState::Online);
    ev(&mut m, IOS, ProcessEventKind::Stopped);
    assert_eq!(m.state(IOS), HaState::Failed);
    ev(&mut m, IOS, ProcessEventKind::Starting);
    assert_eq!(m.state(IOS), HaState::Failed, "not usable until STARTED");
}

#[test]
fn a_process_known_only_from_consul_is_online_when_healthy_and_back_online_after_failing() {
    let mut m = model();
    assert_eq!(m.state(REMOTE), HaState::Transient, "nothing known");
    m.on_snapshot(&ios_snapshot(10, vec![sh(REMOTE, "n2", true)]));
    assert_eq!(m.state(REMOTE), HaState::Online);
    m.on_snapshot(&ios_snapshot(11, vec![sh(REMOTE, "n2", false)]));
    assert_eq!(m.state(REMOTE), HaState::Transient);
    m.on_snapshot(&ios_snapshot(12, vec![sh(REMOTE, "n2", true)]));
    assert_eq!(m.state(REMOTE), HaState::Online);
}

#[test]
fn a_process_that_vanishes_from_a_newer_snapshot_is_failed() {
    let mut m = model();
    ev(&mut m, IOS, ProcessEventKind::Started);
    m.on_snapshot(&ios_snapshot(
        10,
        vec![sh(IOS, "n1", true), sh(REMOTE, "n2", true)],
    ));
    m.on_snapshot(&ios_snapshot(11, vec![sh(IOS, "n1", true)]));
    assert_eq!(m.state(REMOTE), HaState::Failed);
    assert_eq!(m.state(IOS), HaState::Online);
}

#[test]
fn a_stale_delivery_changes_nothing() {
    let mut m = model();
    m.on_snapshot(&ios_snapshot(10, vec![sh(REMOTE, "n2", true)]));
    m.on_snapshot(&ios_snapshot(20, vec![sh(REMOTE, "n2", false)]));
    m.changes();
    assert!(!m.on_snapshot(&ios_snapshot(10, vec![sh(REMOTE, "n2", true)])));
    assert_eq!(m.state(REMOTE), HaState::Transient);
    assert!(m.changes().is_empty());
}

#[test]
fn hax_itself_is_online_while_it_runs_whatever_its_lagging_check_says() {
    let mut m = model();
    ev(&mut m, HAX, ProcessEventKind::Started);
    let mut s = ios_snapshot(5, vec![sh(HAX, "n1", false)]);
    s.source = "/watcher/service/hax".into();
    s.coverage = Coverage::Service("hax".into());
    m.on_snapshot(&s);
    assert_eq!(m.state(HAX), HaState::Online);
    let notes = m.changes();
    assert!(notes
        .iter()
        .all(|n| n.fid != HAX || n.state == HaState::Online));
}

#[test]
fn a_node_whose_serf_health_fails_takes_its_processes_and_hardware_to_transient() {
    let mut m = model();
    ev(&mut m, IOS, ProcessEventKind::Started);
    m.on_node_health("n1", Health::Failing, 7);
    assert_eq!(m.state(N1), HaState::Transient);
    assert_eq!(m.state(IOS), HaState::Transient);
    assert_eq!(m.state(ENCL), HaState::Transient);
    assert_eq!(m.state(CTRL), HaState::Transient);
    assert_eq!(m.state(SDEV), HaState::Transient);
    m.on_node_health("n1", Health::Passing, 8);
    assert_eq!(m.state(N1), HaState::Online);
    assert_eq!(m.state(IOS), HaState::Online);
}

#[test]
fn a_node_fails_once_every_io_process_on_it_failed_and_a_removed_node_fails_at_once() {
    let mut m = model();
    ev(&mut m, IOS, ProcessEventKind::Stopped);
    assert_eq!(m.state(N1), HaState::Online, "DTM's ios still counts");
    ev(&mut m, DTM, ProcessEventKind::Stopped);
    assert_eq!(m.state(N1), HaState::Failed);
    assert_eq!(m.state(ENCL), HaState::Failed);
    m.on_node_health("n2", Health::Gone, 9);
    assert_eq!(m.state(N2), HaState::Failed);
    assert_eq!(
        m.state(REMOTE),
        HaState::Failed,
        "a vanished node's processes fail"
    );
}

#[test]
fn drives_go_offline_with_their_process_but_sticky_rc_states_stay() {
    let mut m = model();
    ev(&mut m, IOS, ProcessEventKind::Started);
    assert_eq!(
        (m.state(SDEV), m.state(DRIVE)),
        (HaState::Online, HaState::Online)
    );
    ev(&mut m, IOS, ProcessEventKind::Stopped);
    assert_eq!(
        (m.state(SDEV), m.state(DRIVE)),
        (HaState::Transient, HaState::Transient)
    );
    m.on_decision(SDEV, HaState::Failed);
    assert_eq!(
        (m.state(SDEV), m.state(DRIVE)),
        (HaState::Failed, HaState::Failed)
    );
    ev(&mut m, IOS, ProcessEventKind::Started);
    assert_eq!(m.state(SDEV), HaState::Failed, "FAILED stays");
    m.on_decision(SDEV, HaState::Repair);
    assert_eq!(m.state(SDEV), HaState::Repair);
    m.on_decision(SDEV, HaState::Online);
    assert_eq!(m.state(SDEV), HaState::Online, "cleared by the RC");
}

#[test]
fn broadcasts_are_the_differences_and_get_answers_what_was_last_said() {
    let mut m = model();
    ev(&mut m, IOS, ProcessEventKind::Started);
    let first = m.changes();
    assert!(first.contains(&Note {
        fid: IOS,
        state: HaState::Online
    }));
    assert!(m.changes().is_empty(), "nothing new");
    m.on_snapshot(&ios_snapshot(3, vec![sh(IOS, "n1", false)]));
    // Not broadcast yet: GET still answers what was said.
    assert_eq!(m.answer(&[IOS])[0].state, HaState::Online);
    let notes = m.changes();
    assert!(notes.contains(&Note {
        fid: IOS,
        state: HaState::Transient
    }));
    assert!(notes.contains(&Note {
        fid: SDEV,
        state: HaState::Transient
    }));
    assert_eq!(m.answer(&[IOS])[0].state, HaState::Transient);
    // A fid never said yet is said by the answer, and remembered.
    let pool = Fid::typed(b'o', 1, 4);
    assert_eq!(m.answer(&[pool])[0].state, HaState::Online);
}

#[test]
fn a_node_snapshot_that_no_longer_lists_hax_itself_removes_nothing() {
    let mut m = model();
    let node = |index: u64, entries: Vec<ServiceHealth>| Snapshot {
        source: "query/node".into(),
        index,
        coverage: Coverage::Node("n1".into()),
        entries,
        nodes: vec![("n1".into(), true)],
    };
    m.on_snapshot(&node(10, vec![sh(HAX, "n1", true), sh(IOS, "n1", true)]));
    assert_eq!(m.state(IOS), HaState::Online);
    // Consul catching up after a partition: the node without its services.
    m.on_snapshot(&node(11, vec![]));
    assert_eq!(m.state(IOS), HaState::Online, "not taken as removed");
    // A complete answer without the ios: it was deregistered.
    m.on_snapshot(&node(12, vec![sh(HAX, "n1", true)]));
    assert_eq!(m.state(IOS), HaState::Failed);
}
