//! The properties every fuzz target checks, shared with `tests/regressions.rs` (included there
//! with `#[path]`) so that a saved input is replayed through exactly the code that found it.
//!
//! Each function takes raw bytes and panics only when a property of hax's parsers is broken:
//! a panic inside hax itself (any input must be refused with an error, never a panic) or a
//! result that contradicts what the parser promises (round trips, invariants).
#![allow(dead_code)]

use hax::cluster::description::Description;
use hax::consul::catalog::endpoint_of;
use hax::consul::health::parse_payload;
use hax::fid::Fid;
use hax::rc::envelope::Envelope;
use hax::rc::queue::{parse_counter, seq_of, Queue, QueueEntry};
use hax::rc::rules::{decide, parse_state_record, state_record, ProcessUpdate};
use hax::view::ConfigTree;
use hax_sim::wire::{frame_size, read_frame, MAX_FRAME};
use hax_sim::{FromHa, ToHa};

/// The fuzz targets, by name (the names of `fuzz/fuzz_targets/*.rs` and of the corpus and
/// regression folders).
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: &[Target] = &[
    ("health_payload", health_payload),
    ("fid", fid),
    ("config_tree", config_tree),
    ("description", description),
    ("sim_wire", sim_wire),
    ("rc_envelope", rc_envelope),
];

/// A Consul watch body (`service`, `checks` or `keyprefix` watch) as WatchIngest gets it.
pub fn health_payload(data: &[u8]) {
    if let Ok(p) = parse_payload(data) {
        for h in &p.health {
            assert!(
                h.process.is_process(),
                "a non-process fid {} was accepted",
                h.process
            );
        }
    }
}

/// Fid parsing, both the general form and a process id from Consul's catalog.
pub fn fid(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(f) = s.parse::<Fid>() {
        let back: Fid = f.to_string().parse().expect("a printed fid parses");
        assert_eq!(back, f, "fid {s:?} does not survive print and parse");
    }
    if let Ok(f) = Fid::parse_process_id(&s) {
        assert_eq!(Fid::parse_process_id(&f.to_string()).ok(), Some(f));
    }
    // The serde path (KV values and catalog JSON carry fids as strings).
    let _ = serde_json::from_value::<Fid>(serde_json::Value::String(s.into_owned()));
    let _ = serde_json::from_slice::<Fid>(data);
}

/// `endpoint_of` and `ConfigTree::from_kv` on arbitrary entries. Input: line 1 the node
/// address, line 2 the service address, line 3 the port (decimal, wrapped to u16), then one
/// `key<TAB>value` entry per line (a line without a tab is a key with an empty value).
pub fn config_tree(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let node = lines.next().unwrap_or("");
    let service = lines.next().unwrap_or("");
    let port = lines
        .next()
        .and_then(|p| p.trim().parse::<u64>().ok())
        .unwrap_or(0) as u16;
    let ep = endpoint_of(node, service, port);
    assert!(
        ep.ends_with(&port.to_string()),
        "{ep:?} does not end with its port {port}"
    );
    let entries: Vec<(String, String)> = lines
        .map(|l| match l.split_once('\t') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    let tree = ConfigTree::from_kv(&entries);
    for (p, conf) in &tree.processes {
        assert!(
            conf.services.windows(2).all(|w| w[0] <= w[1]),
            "services of {p} not sorted"
        );
        assert_eq!(tree.services_of(*p).len(), conf.services.len());
        for (s, ty) in &conf.services {
            let owner = tree
                .process_of_service(*s)
                .expect("a listed service has a process");
            assert!(tree.processes[&owner].services.iter().any(|(x, _)| x == s));
            assert!(tree.service_of_type(*p, ty).is_some());
        }
        assert_eq!(tree.node_name_of(conf.node).unwrap_or(""), conf.node_name);
    }
}

/// The cluster description (YAML) of `hax bootstrap`.
pub fn description(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = Description::parse(text) {
        d.validate().expect("a parsed description validates");
        for i in 0..d.nodes.len() {
            let _ = d.check_of(i);
        }
    }
}

/// The stand-in's frames as the Rust codec (the simulator) reads them: one complete frame,
/// and the same bytes as a stream split with `frame_size` / `read_frame`.
pub fn sim_wire(data: &[u8]) {
    if let Ok(f) = ToHa::decode(data) {
        // Strings are decoded lossily, so re-encoding may legitimately refuse an expanded
        // string; when it encodes, it must decode to the same frame.
        if let Ok(bytes) = f.encode() {
            assert_eq!(ToHa::decode(&bytes).as_ref(), Ok(&f), "ToHa round trip");
        }
    }
    if let Ok(f) = FromHa::decode(data) {
        if let Ok(bytes) = f.encode() {
            assert_eq!(FromHa::decode(&bytes).as_ref(), Ok(&f), "FromHa round trip");
        }
    }
    // As a stream: frame after frame until an error or the end.
    let mut rest = data;
    let mut n = 0;
    while let Ok(Some(size)) = frame_size(rest) {
        assert!((5..=4 + MAX_FRAME).contains(&size) && size <= rest.len());
        let mut reader = rest;
        let frame = read_frame(&mut reader).expect("read_frame reads what frame_size saw");
        assert_eq!(frame.len(), size);
        let _ = ToHa::decode(&frame);
        let _ = FromHa::decode(&frame);
        rest = &rest[size..];
        n += 1;
        if n > 10_000 {
            break;
        }
    }
    let mut reader = rest;
    let _ = read_frame(&mut reader);
}

/// An RC queue entry (`eq/<n>`, `bq/<n>`) as the RC leader and every hax read it. Input: the
/// key up to the first newline, then the value (no newline: the whole input is the value of
/// `eq/1`).
pub fn rc_envelope(data: &[u8]) {
    let (key, value) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("eq/1".to_string(), data),
    };
    for q in [Queue::Eq, Queue::Bq] {
        if let Some(n) = seq_of(&key, q) {
            assert_eq!(seq_of(&q.key(n), q), Some(n), "{key:?}");
        }
    }
    let _ = parse_counter(&String::from_utf8_lossy(value));
    let _ = parse_state_record(&key, value);
    if let Ok(e) = Envelope::decode(value) {
        let again = Envelope::decode(&e.to_bytes()).expect("an encoded envelope decodes");
        assert_eq!(again, e, "envelope round trip");
        let _ = ProcessUpdate::from_envelope(&e);
        if let Some((k, v)) = state_record(&e) {
            assert!(
                parse_state_record(&k, &v).is_some(),
                "a state record reads back"
            );
        }
    }
    let entry = QueueEntry {
        seq: seq_of(&key, Queue::Eq),
        key,
        value: value.to_vec(),
        modify_index: 1,
    };
    let _ = decide(&entry);
}
