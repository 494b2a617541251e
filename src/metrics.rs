//! hax's Prometheus metrics: one registry for the process, families named by Prometheus's
//! conventions (`hax_` prefix, `_total` counters, `_seconds` histograms), exposed as text at
//! `GET /metrics` (see `actors::watch_ingest`). Each concern records through the small
//! functions below, so that metric names live in this one file.
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriterLabel {
    /// Which writer: "events" (process events and STOB errors), "rc", "bootstrap".
    pub writer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// Where the bytes came from: "watch" (watch POST bodies), or the API a read was under
    /// ("health", "kv", "catalog", "session", ...)
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TxnErrorLabels {
    pub writer: String,
    /// "conflict", "rejected", "transient".
    pub kind: String,
}

fn latency() -> Histogram {
    // 0.1 ms .. ~13 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Every metric hax exports.
pub struct Metrics {
    registry: Registry,
    pub consul_txn_seconds: Family<WriterLabel, Histogram, fn() -> Histogram>,
    pub consul_txn_errors: Family<TxnErrorLabels, Counter>,
    pub consul_writes_rejected: Family<WriterLabel, Counter>,
    pub kv_queue_depth: Gauge,
    pub consul_bytes: Family<SourceLabel, Counter>,
    pub unconfirmed_messages: Gauge,
    pub broadcasts: Counter,
    pub broadcast_notes: Counter,
    pub broadcast_handover_seconds: Histogram,
    pub broadcast_confirmed_seconds: Histogram,
    pub sends: Family<OutcomeLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// "delivered", "not_delivered", "timed_out", "refused".
    pub outcome: String,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hax");
        let consul_txn_seconds =
            Family::<WriterLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register(
            "consul_txn_seconds",
            "Time from sending a /v1/txn to Consul's answer",
            consul_txn_seconds.clone(),
        );
        let consul_txn_errors = Family::<TxnErrorLabels, Counter>::default();
        registry.register(
            "consul_txn_errors",
            "Consul transactions that did not commit, by kind (conflict, rejected, transient)",
            consul_txn_errors.clone(),
        );
        let consul_writes_rejected = Family::<WriterLabel, Counter>::default();
        registry.register(
            "consul_writes_rejected",
            "Writes Consul refused for good (a 4xx) and hax set aside",
            consul_writes_rejected.clone(),
        );
        let kv_queue_depth = Gauge::default();
        registry.register(
            "kv_write_queue_depth",
            "Records (process events, STOB errors) waiting to be committed to Consul",
            kv_queue_depth.clone(),
        );
        let consul_bytes = Family::<SourceLabel, Counter>::default();
        registry.register(
            "consul_received_bytes",
            "Bytes received from Consul: watch POST bodies and blocking-query answers, by source",
            consul_bytes.clone(),
        );
        let unconfirmed_messages = Gauge::default();
        registry.register(
            "motr_unconfirmed_messages",
            "Messages from Motr processes not yet confirmed (waiting to be durable)",
            unconfirmed_messages.clone(),
        );
        let broadcasts = Counter::default();
        registry.register(
            "broadcasts",
            "Broadcasts of HA state changes handed to MeroLink",
            broadcasts.clone(),
        );
        let broadcast_notes = Counter::default();
        registry.register(
            "broadcast_notes",
            "HA notes in those broadcasts",
            broadcast_notes.clone(),
        );
        let broadcast_handover_seconds = latency();
        registry.register(
            "broadcast_handover_seconds",
            "From a change reaching hax to the last send of its broadcast handed to Motr",
            broadcast_handover_seconds.clone(),
        );
        let broadcast_confirmed_seconds = latency();
        registry.register(
            "broadcast_confirmed_seconds",
            "From a change reaching hax to the last link's confirmation of its broadcast",
            broadcast_confirmed_seconds.clone(),
        );
        let sends = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "broadcast_sends",
            "Per-link sends of broadcasts, by outcome",
            sends.clone(),
        );
        Metrics {
            registry,
            broadcasts,
            broadcast_notes,
            broadcast_handover_seconds,
            broadcast_confirmed_seconds,
            sends,
            consul_txn_seconds,
            consul_txn_errors,
            consul_writes_rejected,
            kv_queue_depth,
            consul_bytes,
            unconfirmed_messages,
        }
    }

    /// The registry, for modules that register families of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The text exposition of every metric (OpenMetrics text format).
pub fn render() -> String {
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &METRICS.registry) {
        log::error!("metrics: encoding failed: {e}");
    }
    out
}

fn writer(w: &str) -> WriterLabel {
    WriterLabel {
        writer: w.to_string(),
    }
}

/// A transaction of `w` took `secs` to be answered.
pub fn consul_txn(w: &str, secs: f64) {
    METRICS
        .consul_txn_seconds
        .get_or_create(&writer(w))
        .observe(secs);
}

/// A transaction of `w` did not commit (`kind`: conflict, rejected, transient).
pub fn consul_txn_error(w: &str, kind: &str) {
    METRICS
        .consul_txn_errors
        .get_or_create(&TxnErrorLabels {
            writer: w.to_string(),
            kind: kind.to_string(),
        })
        .inc();
}

/// A write of `w` was refused by Consul for good and set aside.
pub fn consul_write_rejected(w: &str) {
    METRICS
        .consul_writes_rejected
        .get_or_create(&writer(w))
        .inc();
}

/// `n` bytes were received from Consul for `source`.
pub fn consul_bytes(source: &str, n: usize) {
    METRICS
        .consul_bytes
        .get_or_create(&SourceLabel {
            source: source.to_string(),
        })
        .inc_by(n as u64);
}

/// A broadcast of `notes` notes was handed to MeroLink.
pub fn broadcast_notes(notes: usize) {
    METRICS.broadcasts.inc();
    METRICS.broadcast_notes.inc_by(notes as u64);
}

/// A broadcast ended: how its sends went, when its last send was handed to Motr and when
/// the last link confirmed (seconds from the change reaching hax).
pub fn broadcast_done(r: &crate::actors::links::SendReport, handed: Option<f64>, confirmed: f64) {
    if let Some(h) = handed {
        METRICS.broadcast_handover_seconds.observe(h);
    }
    if r.all_delivered() {
        METRICS.broadcast_confirmed_seconds.observe(confirmed);
    }
    for (outcome, n) in [
        ("delivered", r.delivered),
        ("not_delivered", r.not_delivered),
        ("timed_out", r.timed_out),
        ("refused", r.failed),
    ] {
        if n > 0 {
            METRICS
                .sends
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.to_string(),
                })
                .inc_by(n as u64);
        }
    }
}
