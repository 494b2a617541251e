//! `GET /metrics`, scraped with a Prometheus text parser after hax did some of everything:
//! links, broadcasts, entrypoints (a restart among them), Consul writes, watch POSTs (one
//! refused), the RC queues, and the build info.
mod support;

use prometheus_parse::{Sample, Scrape, Value};
use std::time::Duration;
use support::*;

fn scrape(url: &str) -> Scrape {
    let text = ureq::get(&format!("{url}/metrics"))
        .call()
        .expect("GET /metrics")
        .into_string()
        .expect("text");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the exposition parses")
}

fn samples<'a>(s: &'a Scrape, name: &str) -> Vec<&'a Sample> {
    s.samples.iter().filter(|x| x.metric == name).collect()
}

/// The value of `name` with `label` = `value` (a counter, gauge or a histogram's count).
fn value(s: &Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples(s, name)
        .into_iter()
        .find(|x| label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
}

#[test]
fn every_metric_family_an_operator_needs_is_served_and_parses() {
    let n = SingleNode::start_with(&["--health-from", "watches", "--reconcile", "false"]);
    let url = n.hax.url();
    let confd = n.sim(CONFD);
    confd.boot().expect("confd boots");
    let mut ios1 = n.sim(IOS1);
    ios1.boot().expect("ios1 boots");
    // ios1 restarts: a new incarnation's first request while hax holds its old link.
    ios1.restart().expect("ios1 boots again");
    assert!(n.wait_process_state(IOS1, "DTM_RECOVERED", Duration::from_secs(20)));
    // A watch POST hax takes (an empty snapshot of a service nobody runs: one of `ios` would
    // say every ios is gone), and one it refuses.
    let ok = ureq::post(&format!("{url}/watcher/service/no-such-service")).send_bytes(b"[]");
    assert!(ok.is_ok());
    let bad = ureq::post(&format!("{url}/watcher/service/ios")).send_bytes(b"{");
    assert!(matches!(bad, Err(ureq::Error::Status(400, _))));

    let s = wait_until(Duration::from_secs(10), || {
        let s = scrape(&url);
        (value(&s, "hax_motr_links", Some(("state", "active"))) == Some(3.0)).then_some(s)
    })
    .unwrap_or_else(|| {
        let text = ureq::get(&format!("{url}/metrics")).call().unwrap().into_string().unwrap();
        panic!("hax_motr_links{{state=active}} counts the self link, confd and ios1's new incarnation (its old link dropped):\n{text}")
    });
    let at_least = |name: &str, label: Option<(&str, &str)>, min: f64| {
        let v = value(&s, name, label);
        assert!(
            v.is_some_and(|v| v >= min),
            "{name} {label:?}: {v:?}, expected at least {min}"
        );
    };
    at_least("hax_broadcasts_total", None, 1.0);
    at_least("hax_broadcast_notes_total", None, 1.0);
    at_least("hax_broadcast_confirmed_seconds", None, 1.0);
    at_least(
        "hax_broadcast_sends_total",
        Some(("outcome", "delivered")),
        1.0,
    );
    at_least("hax_entrypoint_seconds", None, 3.0);
    at_least("hax_entrypoint_replies_total", Some(("result", "ok")), 3.0);
    at_least(
        "hax_entrypoint_replies_total",
        Some(("result", "restart")),
        1.0,
    );
    at_least("hax_consul_txn_seconds", Some(("writer", "events")), 1.0);
    at_least("hax_kv_write_queue_depth", None, 0.0);
    at_least("hax_watch_posts_total", Some(("status", "200")), 1.0);
    at_least("hax_watch_posts_total", Some(("status", "400")), 1.0);
    at_least(
        "hax_consul_received_bytes_total",
        Some(("source", "watch")),
        1.0,
    );
    at_least(
        "hax_consul_received_bytes_total",
        Some(("source", "kv_m0conf")),
        1.0,
    );
    at_least(
        "hax_queue_entries_written_total",
        Some(("queue", "eq")),
        1.0,
    );
    at_least("hax_rc_queue_length", Some(("queue", "eq")), 0.0);
    at_least("hax_rc_queue_length", Some(("queue", "bq")), 0.0);
    let build = samples(&s, "hax_build_info");
    assert_eq!(build.len(), 1, "one build info sample");
    assert_eq!(build[0].labels.get("backend"), Some("stand-in"));
    assert_eq!(
        build[0].labels.get("version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
}
