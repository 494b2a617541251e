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
    /// ("health", "catalog", "session", ...; KV reads by top-level key: "kv_bq", "kv_m0conf",
    /// "kv_leader", ..., "kv_other")
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
    pub links: Family<StateLabel, Gauge>,
    pub entrypoint_seconds: Histogram,
    pub entrypoint_replies: Family<ResultLabel, Counter>,
    pub watch_posts: Family<StatusLabel, Counter>,
    pub rc_queue_length: Family<QueueLabel, Gauge>,
    pub queue_entries_written: Family<QueueLabel, Counter>,
    pub link_disconnects: Counter,
    pub rc_leader: Gauge,
    pub journal_live: Gauge,
    pub journal_sync_seconds: Histogram,
    pub journal_errors: Counter,
    pub watch_decodes: Family<DecodeLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// "active", "inactive" (its process reported STOPPED), "disconnecting".
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// "ok", "eagain" (first request, asked to ask again), "restart" (a restarted process:
    /// its old link dropped first), "held" (a reconnection waiting until hax can answer).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecodeLabel {
    /// `whole`, or `delta` (from the watch path's last delivery).
    pub how: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The HTTP status hax answered.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// "eq" (entries the RC leader has not handled yet, as it last saw them) or "bq"
    /// (entries this hax has not consumed yet).
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    /// "motr" (libmotr) or "stand-in" (simulated Motr processes only).
    pub backend: String,
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
        let links = Family::<StateLabel, Gauge>::default();
        registry.register(
            "motr_links",
            "Motr HA links this hax holds, by state",
            links.clone(),
        );
        let entrypoint_seconds = latency();
        registry.register(
            "entrypoint_seconds",
            "From Motr's entrypoint request to hax's reply (successful replies)",
            entrypoint_seconds.clone(),
        );
        let entrypoint_replies = Family::<ResultLabel, Counter>::default();
        registry.register(
            "entrypoint_replies",
            "Entrypoint requests by what hax did: ok, eagain, restart, held",
            entrypoint_replies.clone(),
        );
        let watch_posts = Family::<StatusLabel, Counter>::default();
        registry.register(
            "watch_posts",
            "Watch POSTs received, by the HTTP status hax answered",
            watch_posts.clone(),
        );
        let rc_queue_length = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "rc_queue_length",
            "RC queue entries waiting: eq (at the leader) and bq (not consumed by this hax)",
            rc_queue_length.clone(),
        );
        registry.register(
            "build",
            "hax's version and Motr backend",
            prometheus_client::metrics::info::Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                backend: crate::ffi::backend().to_string(),
            }),
        );
        let queue_entries_written = Family::<QueueLabel, Counter>::default();
        registry.register(
            "queue_entries_written",
            "Entries this hax committed to eq/ or bq/ (events for the RC, news for every node)",
            queue_entries_written.clone(),
        );
        let link_disconnects = Counter::default();
        registry.register(
            "motr_link_disconnects",
            "Motr HA links that ended (Motr's link_disconnected)",
            link_disconnects.clone(),
        );
        let rc_leader = Gauge::default();
        registry.register(
            "rc_leader",
            "1 while this hax's campaign holds the RC leader key, else 0",
            rc_leader.clone(),
        );
        let journal_live = Gauge::default();
        registry.register(
            "journal_live_records",
            "Records in the local journal (--journal) not yet committed to Consul",
            journal_live.clone(),
        );
        let journal_sync_seconds = latency();
        registry.register(
            "journal_sync_seconds",
            "Time of one write + fdatasync of the local journal (--journal)",
            journal_sync_seconds.clone(),
        );
        let journal_errors = Counter::default();
        registry.register(
            "journal_errors",
            "Local journal failures (the journal is then given up: confirmation waits for Consul)",
            journal_errors.clone(),
        );
        let watch_decodes = Family::<DecodeLabel, Counter>::default();
        registry.register(
            "watch_decodes",
            "Large watch deliveries decoded, by how: whole, or delta (only what changed since the path's last delivery)",
            watch_decodes.clone(),
        );
        Metrics {
            registry,
            watch_decodes,
            journal_live,
            journal_sync_seconds,
            journal_errors,
            links,
            entrypoint_seconds,
            entrypoint_replies,
            watch_posts,
            rc_queue_length,
            queue_entries_written,
            link_disconnects,
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
            rc_leader,
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

/// This hax's campaign holds the RC leader key (or no longer does).
pub fn rc_leader(holding: bool) {
    METRICS.rc_leader.set(i64::from(holding));
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
pub fn broadcast_done(r: &crate::messages::SendReport, handed: Option<f64>, confirmed: f64) {
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

/// The links MeroLink holds, by state.
pub fn links(counts: &[(crate::motr::LinkState, usize)]) {
    use crate::motr::LinkState;
    for (state, n) in counts {
        let name = match state {
            LinkState::Active => "active",
            LinkState::Inactive => "inactive",
            LinkState::Disconnecting => "disconnecting",
        };
        METRICS
            .links
            .get_or_create(&StateLabel {
                state: name.to_string(),
            })
            .set(*n as i64);
    }
}

/// An entrypoint request was handled: `result` (ok, eagain, restart, held); for ok, how long
/// after Motr's callback the reply was handed back.
pub fn entrypoint(result: &str, secs: Option<f64>) {
    METRICS
        .entrypoint_replies
        .get_or_create(&ResultLabel {
            result: result.to_string(),
        })
        .inc();
    if let Some(s) = secs {
        METRICS.entrypoint_seconds.observe(s);
    }
}

/// A watch POST was answered with `status`.
pub fn watch_post(status: u16) {
    METRICS
        .watch_posts
        .get_or_create(&StatusLabel {
            status: status.to_string(),
        })
        .inc();
}

/// `n` entries were committed to `queue` ("eq", "bq").
pub fn queue_written(queue: &str, n: usize) {
    METRICS
        .queue_entries_written
        .get_or_create(&QueueLabel {
            queue: queue.to_string(),
        })
        .inc_by(n as u64);
}

/// A Motr HA link ended.
pub fn link_disconnected() {
    METRICS.link_disconnects.inc();
}

/// `n` entries wait in `queue` ("eq", "bq").
pub fn rc_queue(queue: &str, n: usize) {
    METRICS
        .rc_queue_length
        .get_or_create(&QueueLabel {
            queue: queue.to_string(),
        })
        .set(n as i64);
}

/// `n` records of the local journal are not committed to Consul yet.
pub fn journal_live(n: usize) {
    METRICS.journal_live.set(n as i64);
}

/// One journal sync took `secs`.
pub fn journal_sync(secs: f64) {
    METRICS.journal_sync_seconds.observe(secs);
}

/// The local journal failed (and is given up).
pub fn journal_error() {
    METRICS.journal_errors.inc();
}

/// A large watch delivery was decoded `how` ("whole" or "delta").
pub fn watch_decode(how: &str) {
    METRICS
        .watch_decodes
        .get_or_create(&DecodeLabel {
            how: how.to_string(),
        })
        .inc();
}
