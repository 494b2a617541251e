//! `cargo bench --bench watch_payload`: how long hax takes to handle a Consul `service` watch
//! payload of 10, 1000 and 10000 entries: decoding it whole (the CPU part of WatchIngest's
//! answer), and from the previous delivery as WatchIngest does for a large body (only the
//! entries that changed are read; each body here has one process failing in turn)
//! and applying it to the HA model (merging by index, the state function over what changed,
//! the notes to broadcast: HaBroadcaster's part). The HTTP transfer is measured end to end by
//! `hax-bench`'s watch-ingest scenario. Prints the median and spread of repeated runs; the
//! target is a 10000-entry snapshot handled in under 20 ms all told.
use hax::consul::health::{from_facts, parse_payload};
use hax::consul::health_delta::{decode as decode_delta, Decoded, How};
use hax::fid::Fid;
use hax::model::health::{Coverage, Snapshot};
use hax::model::HaModel;
use hax::view::{ConfigTree, ProcessConf};
use hax_testkit::payload::{entry_fid, health_payload};
use std::time::Instant;

/// A tree of one node holding the payload's processes, each with one ios service.
fn tree(fids: &[Fid]) -> ConfigTree {
    let node = Fid::typed(b'n', 1, 2);
    let mut t = ConfigTree::default();
    t.nodes.insert(node, "node-1".into());
    for (i, f) in fids.iter().enumerate() {
        t.processes.insert(
            *f,
            ProcessConf {
                node,
                node_name: "node-1".into(),
                name: format!("ios-{i}"),
                endpoint: String::new(),
                services: vec![(Fid::typed(b's', 1, f.key), "ios".into())],
            },
        );
    }
    t
}

/// The p-th percentile in ms, or "-" when nothing was measured.
fn ms(v: &mut [f64], p: usize) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        format!("{:.3} ms", pct(v, p))
    }
}

fn pct(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) * p / 100]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this too, without it: then
    // only a quick check that it works (debug builds are slow).
    let measuring = std::env::args().any(|a| a == "--bench");
    let sizes: &[(usize, usize)] = if measuring {
        &[(10, 2000), (1000, 50), (10000, 15)]
    } else {
        &[(10, 3), (1000, 1)]
    };
    println!("| entries | payload | whole decode p50 | decode from the last p50 | model p50 | handled p50, whole | handled p50, from the last | handled max, from the last | MB/s whole decode (p50) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &(n, reps) in sizes {
        let fids: Vec<_> = (0..n).map(|i| entry_fid(0x1_0000, i)).collect();
        let mut model = HaModel::default();
        model.set_config(&tree(&fids));
        model.changes();
        let (mut decode, mut apply, mut total) = (Vec::new(), Vec::new(), Vec::new());
        // What WatchIngest does with a large body: decode it from the path's last one.
        let mut last: Option<Decoded> = None;
        let mut delta = Vec::new();
        let mut total_delta = Vec::new();
        for rep in 0..reps {
            // Each snapshot newer than the last, one process failing in turn: a change to
            // broadcast every time, as when a watch delivers a flapping check.
            let critical = &fids[rep % n..rep % n + 1];
            let body = health_payload("node-1", "ios", &fids, critical, 77);
            let t = Instant::now();
            let parsed = parse_payload(&body).expect("a well-formed payload");
            let decoded = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(parsed.health.len(), n);
            let copy = body.clone();
            let t1 = Instant::now();
            let (d, how) = decode_delta(last.as_ref(), copy).expect("entries");
            let from_last = from_facts(&d.facts);
            let delta_ms = t1.elapsed().as_secs_f64() * 1e3;
            assert_eq!(from_last.health, parsed.health, "the delta decode agrees");
            if matches!(how, How::Delta { .. }) {
                delta.push(delta_ms);
            }
            last = Some(d);
            let snapshot = Snapshot {
                source: "POST /watcher/service/ios (service ios)".into(),
                index: 100 + rep as u64,
                coverage: Coverage::Service("ios".into()),
                entries: parsed.health,
                nodes: parsed.nodes,
            };
            let t2 = Instant::now();
            assert!(model.on_snapshot(&snapshot), "a newer snapshot is applied");
            let notes = model.changes();
            let applied = t2.elapsed().as_secs_f64() * 1e3;
            assert!(!notes.is_empty(), "the failing process is told");
            decode.push(decoded);
            apply.push(applied);
            total.push(decoded + applied);
            if rep > 0 {
                total_delta.push(delta_ms + applied);
            }
        }
        let bytes = health_payload("node-1", "ios", &fids, &fids[..1], 77).len();
        let d50 = pct(&mut decode, 50);
        println!(
            "| {n} | {:.2} MB | {d50:.3} ms | {} | {:.3} ms | {:.3} ms | {} | {} | {:.0} |",
            bytes as f64 / 1e6,
            ms(&mut delta, 50),
            pct(&mut apply, 50),
            pct(&mut total, 50),
            ms(&mut total_delta, 50),
            ms(&mut total_delta, 100),
            bytes as f64 / 1e6 / (d50 / 1e3)
        );
    }
}
