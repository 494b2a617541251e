//! `hax q eq|bq <type> <json>` against a three-server Consul cluster: the key it prints,
//! the envelope it writes, sequence numbers without gaps under concurrent publishers (on
//! different servers), and an epoch that was lost or set back.
mod rc_common;
mod support;

use rc_common::*;
use std::collections::BTreeSet;
use support::*;

fn envelope(c: &ConsulClient, key: &str) -> serde_json::Value {
    let raw = c
        .kv_get(key)
        .unwrap()
        .unwrap_or_else(|| panic!("{key} is missing"));
    serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"))
}

#[test]
fn hax_q_prints_the_key_it_wrote_and_concurrent_publishers_get_every_number_once() {
    let cluster = ConsulCluster::start(3);
    let url = |i: usize| cluster.http_url(i);
    let c = cluster.client(0);

    let payload = r#"{"fid": "0x7200000000000001:0xc", "state": "M0_CONF_HA_PROCESS_STARTED", "type": "M0_CONF_HA_PROCESS_M0D"}"#;
    let (code, out, err) = hax_q(&url(0), "eq", "PROCESS-STATE-UPDATE", payload);
    assert_eq!((code, out.trim()), (0, "eq/1"), "{err}");
    let (code, out, _) = hax_q(&url(1), "eq", "PROCESS-STATE-UPDATE", payload);
    assert_eq!((code, out.trim()), (0, "eq/2"));
    let (code, out, _) = hax_q(
        &url(2),
        "bq",
        "OBJECT-STATE-UPDATE",
        r#"{"fid": "0x6400000000000001:0x5", "state": "FAILED"}"#,
    );
    assert_eq!(
        (code, out.trim()),
        (0, "bq/1"),
        "each queue has its own numbers"
    );

    let e = envelope(c, "eq/1");
    assert_eq!(e["message_type"], "PROCESS-STATE-UPDATE");
    assert_eq!(e["payload"]["fid"], "0x7200000000000001:0xc");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let stamp = e["timestamp"].as_f64().expect("a numeric timestamp");
    assert!(
        (now - stamp).abs() < 60.0,
        "timestamp {stamp} is not now ({now})"
    );

    // 4 publishers x 10 entries, on three different servers at once.
    let keys: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let u = url(w % 3);
                s.spawn(move || {
                    (0..10)
                        .map(|j| {
                            let p = format!(
                                r#"{{"sdev": "0x6400000000000001:{:#x}", "rc": -5}}"#,
                                0x100 * w + j
                            );
                            let (code, out, err) = hax_q(&u, "eq", "STOB_IOQ_ERROR", &p);
                            assert_eq!(code, 0, "{err}");
                            out.trim().to_string()
                        })
                        .collect::<Vec<String>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let got: BTreeSet<String> = keys.iter().cloned().collect();
    let want: BTreeSet<String> = (3..=42).map(|n| format!("eq/{n}")).collect();
    assert_eq!(got, want, "every number from 3 to 42 exactly once");
    assert_eq!(keys.len(), 40);
    assert_eq!(c.kv_get_string("epochs/eq").unwrap().as_deref(), Some("42"));
    let sdevs: BTreeSet<String> = (3..=42)
        .map(|n| {
            envelope(c, &format!("eq/{n}"))["payload"]["sdev"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        sdevs.len(),
        40,
        "each entry holds its own publisher's payload"
    );

    // An epoch set back by hand: the next entry goes past every entry present.
    let before: Vec<serde_json::Value> =
        (41..=42).map(|n| envelope(c, &format!("eq/{n}"))).collect();
    c.kv_put("epochs/eq", "40").unwrap();
    let (code, out, _) = hax_q(
        &url(1),
        "eq",
        "STOB_IOQ_ERROR",
        r#"{"sdev": "0x6400000000000001:0x1"}"#,
    );
    assert_eq!((code, out.trim()), (0, "eq/43"));
    let after: Vec<serde_json::Value> =
        (41..=42).map(|n| envelope(c, &format!("eq/{n}"))).collect();
    assert_eq!(before, after, "eq/41 and eq/42 were not overwritten");
    assert_eq!(c.kv_get_string("epochs/eq").unwrap().as_deref(), Some("43"));
    // An epoch deleted: numbering continues above the entries (and, for bq, the offsets).
    c.kv_delete("epochs/eq").unwrap();
    assert_eq!(hax_q(&url(2), "eq", "X", "{}").1.trim(), "eq/44");
    c.kv_delete("epochs/bq").unwrap();
    c.kv_put("bq-offsets/some-node", "17").unwrap();
    assert_eq!(
        hax_q(&url(0), "bq", "X", "{}").1.trim(),
        "bq/18",
        "never below what a consumer has handled"
    );
}

#[test]
fn hax_q_refuses_a_payload_that_is_not_json_and_a_bad_queue() {
    let (code, _, err) = hax_q("127.0.0.1:1", "eq", "STOB_IOQ_ERROR", "{not json");
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("not JSON"), "{err}");
    let (code, _, err) = hax_q("127.0.0.1:1", "xq", "T", "{}");
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = hax_q("127.0.0.1:1", "eq", "T", "{}");
    assert_eq!(code, 1, "Consul unreachable: {err}");
    assert!(err.contains("hax q:"), "{err}");
}
