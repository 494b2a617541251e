//! Property test of the HA model: random process events, health snapshots (from several
//! sources, with indexes that go back and forth), node health, RC decisions, broadcasts,
//! NVEC GETs and hax restarts. Whatever the sequence:
//! - an NVEC GET answers, for every fid, what the last broadcast said about it (or, for a fid
//!   never broadcast since hax started, what the first GET answered);
//! - after a broadcast, every fid Motr was told about holds the function's current value
//!   (broadcasts are exactly its differences), and no broadcast repeats an unchanged state.
use hax::fid::Fid;
use hax::model::health::{Coverage, Health, ServiceHealth, Snapshot};
use hax::model::HaModel;
use hax::motr::{HaState, ProcessEventKind, ProcessType};
use hax::view::{ConfigTree, NodeHardware, ProcessConf, SdevConf};
use proptest::prelude::*;
use std::collections::HashMap;

const NODES: u64 = 3;
const PER_NODE: u64 = 3;

fn node(i: u64) -> Fid {
    Fid::typed(b'n', 1, 100 + i)
}
fn name(i: u64) -> String {
    format!("n{i}")
}
fn process(i: u64) -> Fid {
    Fid::typed(b'r', 1, 200 + i)
}
fn service(i: u64) -> Fid {
    Fid::typed(b's', 1, 300 + i)
}
fn sdev(i: u64) -> Fid {
    Fid::typed(b'd', 1, 400 + i)
}
fn drive(i: u64) -> Fid {
    Fid::typed(b'k', 1, 500 + i)
}

fn tree() -> ConfigTree {
    let mut t = ConfigTree::default();
    for n in 0..NODES {
        t.nodes.insert(node(n), name(n));
        t.hardware.insert(
            node(n),
            NodeHardware {
                enclosure: Some(Fid::typed(b'e', 1, 600 + n)),
                controller: Some(Fid::typed(b'c', 1, 700 + n)),
            },
        );
        for k in 0..PER_NODE {
            let i = n * PER_NODE + k;
            let mut services = vec![(service(i), if k == 0 { "ha" } else { "ios" }.to_string())];
            if k == 2 {
                services.push((Fid::typed(b's', 1, 800 + i), "dtm0".to_string()));
            }
            t.processes.insert(
                process(i),
                ProcessConf {
                    node: node(n),
                    node_name: name(n),
                    name: format!("p{i}"),
                    endpoint: String::new(),
                    services,
                },
            );
            if k != 0 {
                t.sdevs.insert(
                    sdev(i),
                    SdevConf {
                        service: service(i),
                        drive: Some(drive(i)),
                    },
                );
            }
        }
    }
    t
}

fn all_fids(t: &ConfigTree) -> Vec<Fid> {
    let mut v: Vec<Fid> = t.nodes.keys().copied().collect();
    for hw in t.hardware.values() {
        v.extend(hw.enclosure);
        v.extend(hw.controller);
    }
    for (p, pc) in &t.processes {
        v.push(*p);
        v.extend(pc.services.iter().map(|(s, _)| *s));
    }
    for (d, sc) in &t.sdevs {
        v.push(*d);
        v.extend(sc.drive);
    }
    v.push(Fid::typed(b'o', 1, 900)); // a pool: no rule but the RC's
    v.push(Fid::typed(b'r', 1, 999)); // a process the tree does not name
    v
}

#[derive(Clone, Debug)]
enum Op {
    Event(u64, u8),
    Snapshot {
        source: u8,
        index: u64,
        entries: Vec<(u64, bool)>,
        nodes: Vec<(u64, bool)>,
    },
    NodeHealth(u64, u8, u64),
    Decision(u64, u8),
    Broadcast,
    Get(Vec<u64>),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let procs = NODES * PER_NODE;
    prop_oneof![
        4 => (0..procs + 1, 0u8..5).prop_map(|(p, e)| Op::Event(p, e)),
        4 => (
            0u8..3,
            0u64..40,
            prop::collection::vec((0..procs + 1, any::<bool>()), 0..6),
            prop::collection::vec((0..NODES, any::<bool>()), 0..3)
        )
            .prop_map(|(source, index, entries, nodes)| Op::Snapshot { source, index, entries, nodes }),
        1 => (0..NODES, 0u8..3, 0u64..40).prop_map(|(n, h, i)| Op::NodeHealth(n, h, i)),
        1 => (0u64..24, 0u8..4).prop_map(|(f, s)| Op::Decision(f, s)),
        3 => Just(Op::Broadcast),
        3 => prop::collection::vec(0u64..40, 1..8).prop_map(Op::Get),
        1 => Just(Op::Restart),
    ]
}

fn event(e: u8) -> ProcessEventKind {
    [
        ProcessEventKind::Starting,
        ProcessEventKind::Started,
        ProcessEventKind::Stopping,
        ProcessEventKind::Stopped,
        ProcessEventKind::DtmRecovered,
    ][e as usize]
}

fn pfid(p: u64) -> Fid {
    if p == NODES * PER_NODE {
        Fid::typed(b'r', 1, 999)
    } else {
        process(p)
    }
}

fn decision_target(f: u64) -> Fid {
    match f % 4 {
        0 => sdev(f % (NODES * PER_NODE)),
        1 => drive(f % (NODES * PER_NODE)),
        2 => node(f % NODES),
        _ => Fid::typed(b'o', 1, 900),
    }
}

/// What every process was last told about each fid (since hax started).
struct Motr {
    told: HashMap<Fid, HaState>,
}

fn fresh(
    t: &ConfigTree,
    kv_events: &HashMap<Fid, ProcessEventKind>,
    kv_states: &HashMap<Fid, HaState>,
) -> HaModel {
    // A restarted hax starts from KV: processes/ and states/.
    let mut m = HaModel::default();
    m.set_config(t);
    m.set_own(process(0));
    for (p, e) in kv_events {
        m.on_event(*p, *e, ProcessType::M0d);
    }
    for (f, s) in kv_states {
        m.on_decision(*f, *s);
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn get_and_broadcast_never_disagree(ops in prop::collection::vec(op(), 1..80)) {
        let t = tree();
        let fids = all_fids(&t);
        let mut kv_events: HashMap<Fid, ProcessEventKind> = HashMap::new();
        let mut kv_states: HashMap<Fid, HaState> = HashMap::new();
        let mut m = fresh(&t, &kv_events, &kv_states);
        let mut motr = Motr { told: HashMap::new() };
        for op in ops {
            match op {
                Op::Event(p, e) => {
                    let kind = event(e);
                    m.on_event(pfid(p), kind, ProcessType::M0d);
                    kv_events.insert(pfid(p), kind);
                }
                Op::Snapshot { source, index, entries, nodes } => {
                    let (src, coverage) = match source {
                        0 => ("/watcher/service/ios".to_string(), Coverage::Service("ios".into())),
                        1 => ("/watcher/checks".to_string(), Coverage::All),
                        _ => ("/".to_string(), Coverage::Listed),
                    };
                    let entries = entries
                        .into_iter()
                        .map(|(p, ok)| ServiceHealth {
                            process: pfid(p),
                            service_name: "ios".into(),
                            node: name(p / PER_NODE % NODES),
                            healthy: ok,
                            node_healthy: true,
                        })
                        .collect();
                    let nodes = nodes.into_iter().map(|(n, ok)| (name(n), ok)).collect();
                    m.on_snapshot(&Snapshot { source: src, index, coverage, entries, nodes });
                }
                Op::NodeHealth(n, h, index) => {
                    let h = [Health::Passing, Health::Failing, Health::Gone][h as usize];
                    m.on_node_health(&name(n), h, index);
                }
                Op::Decision(f, s) => {
                    let s = [HaState::Failed, HaState::Repair, HaState::Online, HaState::Transient][s as usize];
                    m.on_decision(decision_target(f), s);
                    kv_states.insert(decision_target(f), s);
                }
                Op::Broadcast => {
                    let notes = m.changes();
                    let mut seen = std::collections::HashSet::new();
                    for n in &notes {
                        prop_assert!(seen.insert(n.fid), "{} twice in one broadcast", n.fid);
                        prop_assert_eq!(n.state, m.state(n.fid), "a broadcast note is the function's value");
                        prop_assert_ne!(motr.told.get(&n.fid), Some(&n.state), "an unchanged state broadcast for {}", n.fid);
                        motr.told.insert(n.fid, n.state);
                    }
                    // Nothing Motr was told is left behind the function.
                    for f in &fids {
                        if let Some(s) = motr.told.get(f) {
                            prop_assert_eq!(*s, m.state(*f), "{} not broadcast after a change", f);
                        }
                    }
                }
                Op::Get(which) => {
                    let asked: Vec<Fid> = which.iter().map(|i| fids[*i as usize % fids.len()]).collect();
                    for n in m.answer(&asked) {
                        match motr.told.get(&n.fid) {
                            Some(s) => prop_assert_eq!(*s, n.state, "GET disagrees with the last broadcast for {}", n.fid),
                            None => {
                                motr.told.insert(n.fid, n.state);
                            }
                        }
                    }
                }
                Op::Restart => {
                    m = fresh(&t, &kv_events, &kv_states);
                    motr = Motr { told: HashMap::new() };
                }
            }
        }
    }
}
