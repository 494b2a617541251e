//! HealthMonitor: hax's own Consul reads for the HA model, off the HA path (a slow Consul makes
//! only this actor slow; HaBroadcaster never waits on it).
//!
//! 1. **Start**: what a restarted hax must know before it answers Motr (docs/ha-states.md):
//!    the process events recorded under `processes/`, the RC's decisions under `states/`, and
//!    the whole datacenter's health (`/v1/health/state/any`), handed to HaBroadcaster; then
//!    the model is ready (`ModelReady`) and NVEC GETs are answered.
//! 2. Then, by `--health-from` (docs/scaling.md):
//!    - `node` (default): a blocking query on this node's own checks (`/v1/health/node/<node>`);
//!      each answer goes to the model, and what changed for this node's processes is published
//!      to `bq/` (`HEALTH-UPDATE`, through ConsulWriter) for every other hax. Every 30 s a
//!      query of the checks that are not passing is the safety net (O(failures) bytes).
//!    - `watches`: Consul's watches POST snapshots (WatchIngest); a blocking query over every
//!      check, at most once a second, repairs the deliveries Consul lost.
use super::consul_writer::WriteRecord;
use super::ha_broadcaster::ModelReady;
use crate::consul::health::{from_checks, Check};
use crate::consul::kv::KvEntry;
use crate::consul::{encode_query, Consul, ConsulError};
use crate::fid::Fid;
use crate::messages::HealthReport;
use crate::model::health::{Coverage, Health, HealthDelta, Snapshot};
use crate::motr::ProcessEventKind;
use crate::rc::queue::Queue;
use crate::rc::rules::{parse_state_record, process_type_of, STATES_PREFIX};
use crate::rc::RemoteStates;
use actix::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Where hax learns Consul health from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthFrom {
    /// Its own node's checks, and the rest through `bq/` (O(N) per failure).
    #[default]
    Node,
    /// Consul watches POSTing whole snapshots, and a query over every check (O(N²)).
    Watches,
}

/// How the monitor runs.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub mode: HealthFrom,
    /// This hax's Consul node.
    pub node: String,
    /// This hax's own process (its old `processes/` record says nothing about this run).
    pub own: Fid,
    /// `node` mode: the safety net's period; `watches` mode: whether to reconcile at all.
    pub reconcile: bool,
    pub safety_net: Duration,
}

/// Where the monitor's news go.
#[derive(Clone)]
pub struct MonitorOutputs {
    pub reports: Recipient<HealthReport>,
    pub remote: Recipient<RemoteStates>,
    pub ready: Recipient<ModelReady>,
    /// `node` mode: where this node's health news are published (ConsulWriter).
    pub writer: Option<Recipient<WriteRecord>>,
}

pub struct HealthMonitor {
    consul: Consul,
    cfg: MonitorConfig,
    out: MonitorOutputs,
}

impl HealthMonitor {
    pub fn new(consul: Consul, cfg: MonitorConfig, out: MonitorOutputs) -> Self {
        HealthMonitor { consul, cfg, out }
    }
}

impl Actor for HealthMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Owned by this actor: it stops with it.
        let (consul, cfg, out) = (self.consul.clone(), self.cfg.clone(), self.out.clone());
        ctx.spawn(run(consul, cfg, out).into_actor(self));
    }
}

async fn run(consul: Consul, cfg: MonitorConfig, out: MonitorOutputs) {
    let Some(index) = load_start(&consul, &cfg, &out).await else {
        return;
    };
    match cfg.mode {
        HealthFrom::Node => {
            let net = {
                let (consul, out) = (consul.clone(), out.clone());
                let (on, period) = (cfg.reconcile, cfg.safety_net);
                async move {
                    if on {
                        safety_net(consul, period, out).await
                    }
                }
            };
            futures_util::future::join(net, watch_own_node(consul, cfg, out)).await;
        }
        HealthFrom::Watches if cfg.reconcile => reconcile_all(consul, out, index).await,
        HealthFrom::Watches => {}
    }
}

/// Retries `read` until it succeeds, saying what hax waits for (`waiting::Waiting`).
async fn patiently<T, F, Fut>(what: &str, mut read: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ConsulError>>,
{
    let mut waiting = crate::waiting::Waiting::default();
    let mut backoff = crate::consul::backoff::Backoff::default();
    loop {
        match read().await {
            Ok(v) => {
                if let Some(w) = waiting.over() {
                    log::info!("HealthMonitor: read {what} after {:.1} s", w.as_secs_f64());
                }
                return v;
            }
            Err(e) => {
                let what = format!("{what} (the HA model needs it before hax answers Motr)");
                if let Some((_, line)) = waiting.failed("HealthMonitor", &what, &e) {
                    log::warn!("{line}");
                }
                actix_rt::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

async fn kv_prefix(consul: &Consul, prefix: &str) -> Vec<KvEntry> {
    let path = format!("/v1/kv/{prefix}?recurse");
    patiently(prefix, || {
        consul.get_json::<Vec<KvEntry>>(&path, None, Duration::ZERO)
    })
    .await
    .0
    .unwrap_or_default()
}

/// A health query's answer as a snapshot (a body that is not a checks list: an error, and
/// the read is tried again).
async fn query(
    consul: &Consul,
    path: &str,
    index: Option<u64>,
    source: &str,
    coverage: Coverage,
) -> Result<Snapshot, ConsulError> {
    let (body, idx) = consul.get_raw(path, index, Duration::from_secs(30)).await?;
    let checks: Vec<Check> = match body {
        None => Vec::new(),
        Some(b) => serde_json::from_slice::<Option<Vec<Check>>>(&b)
            .map_err(|e| ConsulError::Decode {
                what: format!("GET {path}"),
                reason: e.to_string(),
            })?
            .unwrap_or_default(),
    };
    let parsed = from_checks(&checks);
    Ok(Snapshot {
        source: source.to_string(),
        index: idx,
        coverage,
        entries: parsed.health,
        nodes: parsed.nodes,
    })
}

/// Reads what the model needs before hax answers Motr, hands it over and declares the model
/// ready. Answers the health index it read (None: HaBroadcaster is gone).
async fn load_start(consul: &Consul, cfg: &MonitorConfig, out: &MonitorOutputs) -> Option<u64> {
    let started = Instant::now();
    let mut processes = Vec::new();
    for e in kv_prefix(consul, "processes/").await {
        let fid = e
            .key
            .strip_prefix("processes/")
            .and_then(|f| f.parse::<Fid>().ok());
        let v: Option<serde_json::Value> = serde_json::from_str(&e.value_string()).ok();
        let event = v
            .as_ref()
            .and_then(|v| v.get("state")?.as_str())
            .and_then(ProcessEventKind::from_motr_name);
        let ptype = v
            .as_ref()
            .and_then(|v| v.get("type")?.as_str())
            .and_then(process_type_of)
            .unwrap_or(crate::motr::ProcessType::M0d);
        match (fid, event) {
            (Some(fid), _) if fid == cfg.own => {}
            (Some(fid), Some(event)) => processes.push((fid, event, ptype)),
            _ => log::warn!("HealthMonitor: {} is not a process record; ignored", e.key),
        }
    }
    let notes: Vec<_> = kv_prefix(consul, STATES_PREFIX)
        .await
        .iter()
        .filter_map(|e| parse_state_record(&e.key, e.value_string().as_bytes()))
        .collect();
    let snapshot = patiently("the datacenter's health", || {
        query(
            consul,
            "/v1/health/state/any",
            None,
            "query/all",
            Coverage::All,
        )
    })
    .await;
    let index = snapshot.index;
    log::info!(
        "HealthMonitor: start state read in {:.0} ms: {} process record(s), {} RC decision(s), health of {} service instance(s) as of index {index}",
        started.elapsed().as_secs_f64() * 1e3,
        processes.len(),
        notes.len(),
        snapshot.entries.len()
    );
    let own_now = own_deltas(&snapshot, &cfg.node);
    out.remote
        .send(RemoteStates {
            source: "processes/ and states/ at start".into(),
            processes,
            notes,
            health: Vec::new(),
        })
        .await
        .ok()?;
    out.reports
        .send(HealthReport {
            snapshot,
            received: Instant::now(),
        })
        .await
        .ok()?;
    out.ready.send(ModelReady).await.ok()?;
    if cfg.mode == HealthFrom::Node {
        // What this hax published before it restarted is unknown: publish the present.
        publish(out, &cfg.node, own_now);
    }
    Some(index)
}

/// The health of this node's processes in `s`, as news for the other nodes.
fn own_deltas(s: &Snapshot, node: &str) -> HashMap<Fid, HealthDelta> {
    s.entries
        .iter()
        .filter(|e| e.node == node)
        .map(|e| {
            let health = if e.healthy {
                Health::Passing
            } else {
                Health::Failing
            };
            let d = HealthDelta::Process {
                fid: e.process,
                health,
                index: s.index,
            };
            (e.process, d)
        })
        .collect()
}

fn publish(out: &MonitorOutputs, node: &str, news: impl IntoIterator<Item = (Fid, HealthDelta)>) {
    let Some(writer) = &out.writer else { return };
    for (fid, d) in news {
        writer.do_send(WriteRecord {
            queue: Queue::Bq,
            entry: crate::rc::health_news::envelope(&d, node),
            key: None,
            // Only the newest news of a process is worth writing.
            latest: Some(format!("health/{fid}")),
            acks: Vec::new(),
        });
    }
}

fn health_of(d: &HealthDelta) -> Option<Health> {
    match d {
        HealthDelta::Process { health, .. } => Some(*health),
        HealthDelta::Node { .. } => None,
    }
}

/// `node` mode: a blocking query on this node's checks; the model hears every answer, the
/// other nodes hear what changed for this node's processes.
async fn watch_own_node(consul: Consul, cfg: MonitorConfig, out: MonitorOutputs) {
    let path = format!("/v1/health/node/{}", encode_query(&cfg.node));
    let mut published: HashMap<Fid, Health> = HashMap::new();
    let mut index = 0u64;
    let mut backoff = crate::consul::backoff::Backoff::default();
    loop {
        let block = (index > 0).then_some(index);
        let coverage = Coverage::Node(cfg.node.clone());
        let s = match query(&consul, &path, block, "query/node", coverage).await {
            Ok(s) => s,
            Err(e) => {
                log::debug!("HealthMonitor: query of node {}: {e}", cfg.node);
                actix_rt::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        index = if s.index < index { 0 } else { s.index.max(1) };
        let mut now = own_deltas(&s, &cfg.node);
        // A process listed before and absent now was deregistered; unless the answer lacks
        // this hax too (it runs, so it is registered): Consul's view of the node is
        // incomplete for a while (seen after a partition healed), and nothing is removed.
        let complete = now.contains_key(&cfg.own) || !published.contains_key(&cfg.own);
        if !complete {
            log::warn!(
                "HealthMonitor: Consul's answer for node {} at index {} lacks this hax's own service: not taken as removals",
                cfg.node,
                s.index
            );
        }
        for fid in published.keys().filter(|_| complete) {
            now.entry(*fid).or_insert(HealthDelta::Process {
                fid: *fid,
                health: Health::Gone,
                index: s.index,
            });
        }
        let news: Vec<(Fid, HealthDelta)> = now
            .into_iter()
            .filter(|(fid, d)| published.get(fid).copied() != health_of(d))
            .collect();
        if out
            .reports
            .send(HealthReport {
                snapshot: s,
                received: Instant::now(),
            })
            .await
            .is_err()
        {
            return;
        }
        for (fid, d) in &news {
            match health_of(d) {
                Some(Health::Gone) => published.remove(fid),
                Some(h) => published.insert(*fid, h),
                None => None,
            };
        }
        if !news.is_empty() {
            log::info!(
                "HealthMonitor: {} process(es) of node {} changed health: published to bq/",
                news.len(),
                cfg.node
            );
        }
        publish(&out, &cfg.node, news);
    }
}

/// `node` mode's safety net: the checks that are not passing, every `period`.
async fn safety_net(consul: Consul, period: Duration, out: MonitorOutputs) {
    let filter = encode_query("Status != \"passing\"");
    let path = format!("/v1/health/state/any?filter={filter}");
    loop {
        actix_rt::time::sleep(period).await;
        match query(
            &consul,
            &path,
            None,
            "query/not-passing",
            Coverage::NotPassing,
        )
        .await
        {
            Ok(s) => {
                let report = HealthReport {
                    snapshot: s,
                    received: Instant::now(),
                };
                if out.reports.send(report).await.is_err() {
                    return;
                }
            }
            Err(e) => log::debug!("HealthMonitor: safety-net query: {e}"),
        }
    }
}

/// `watches` mode: repairs lost watch deliveries with a blocking query over every check, at
/// most once a second.
async fn reconcile_all(consul: Consul, out: MonitorOutputs, mut index: u64) {
    let mut backoff = crate::consul::backoff::Backoff::default();
    loop {
        let started = Instant::now();
        let block = (index > 0).then_some(index);
        match query(
            &consul,
            "/v1/health/state/any",
            block,
            "query/all",
            Coverage::All,
        )
        .await
        {
            Ok(s) => {
                backoff.reset();
                index = if s.index < index { 0 } else { s.index.max(1) };
                let report = HealthReport {
                    snapshot: s,
                    received: Instant::now(),
                };
                // Awaited: a slow HaBroadcaster slows this loop, not the other way round.
                if out.reports.send(report).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                log::debug!("HealthMonitor: reconciliation query failed: {e}");
                actix_rt::time::sleep(backoff.next_delay()).await;
                continue;
            }
        }
        let spent = started.elapsed();
        if spent < Duration::from_secs(1) {
            actix_rt::time::sleep(Duration::from_secs(1) - spent).await;
        }
    }
}
