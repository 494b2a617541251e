//! Node liveness, watched once for the whole cluster by the RC leader (`--health-from node`,
//! docs/scaling.md): a node that dies cannot report its own processes, so the leader does.
//!
//! While this hax holds `leader`, two blocking queries: the critical `serfHealth` checks (what
//! failed: O(failed nodes) bytes) and the catalog's node list (changes only when a node joins
//! or is removed). Every node of the configuration tree gets a health, as of the query's
//! Consul index: failing while its serfHealth is critical, gone once it left the catalog
//! after this leader saw it there, passing otherwise. What changed is published to `bq/` as
//! `NODE-HEALTH` entries, every hax (this one too) applies them to its model. A new leader
//! publishes the health of every node once when it takes over.
use super::campaign::SessionSlot;
use super::health_news;
use super::or_stop;
use super::publish::{publish_values_after, Epoch};
use super::queue::Queue;
use crate::consul::backoff::Backoff;
use crate::consul::kv::KvEntry;
use crate::consul::{encode_query, Consul, ConsulError};
use crate::model::health::{Health, HealthDelta};
use crate::view::SharedView;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::watch;

/// What the leader last knew of the nodes.
#[derive(Default, Debug)]
pub struct NodeWatch {
    /// Nodes with a critical serfHealth, as of `critical_index`.
    critical: BTreeSet<String>,
    critical_index: u64,
    /// Nodes in the catalog, as of `catalog_index`.
    catalog: BTreeSet<String>,
    catalog_index: u64,
    /// Nodes this leader saw in the catalog (only those can be gone).
    seen: BTreeSet<String>,
    /// What was published, per node.
    published: BTreeMap<String, Health>,
}

impl NodeWatch {
    pub fn set_critical(&mut self, nodes: BTreeSet<String>, index: u64) {
        self.critical = nodes;
        self.critical_index = index;
    }

    pub fn set_catalog(&mut self, nodes: BTreeSet<String>, index: u64) {
        self.seen.extend(nodes.iter().cloned());
        self.catalog = nodes;
        self.catalog_index = index;
    }

    /// The news for the configured nodes whose health is not what was published; recorded as
    /// published.
    pub fn news(&mut self, configured: &BTreeSet<String>) -> Vec<HealthDelta> {
        let mut out = Vec::new();
        for n in configured {
            let (health, index) = if !self.catalog.contains(n) {
                if !self.seen.contains(n) {
                    continue; // not joined yet (or never seen by this leader): nothing to say
                }
                (Health::Gone, self.catalog_index)
            } else if self.critical.contains(n) {
                (Health::Failing, self.critical_index)
            } else {
                (Health::Passing, self.critical_index.max(self.catalog_index))
            };
            if self.published.get(n) != Some(&health) {
                self.published.insert(n.clone(), health);
                out.push(HealthDelta::Node {
                    node: n.clone(),
                    health,
                    index,
                });
            }
        }
        out
    }
}

#[derive(serde::Deserialize)]
struct CheckNode {
    #[serde(rename = "Node")]
    node: String,
}

pub(super) struct Liveness {
    pub consul: Consul,
    pub slot: SessionSlot,
    pub view: SharedView,
    pub node: String,
    pub stop: watch::Receiver<bool>,
}

/// Whether this hax's session holds `leader`. `index` > 0: a blocking query that answers
/// once the key changed since `index` (or after `wait`): a follower learns of a change of
/// leader without polling. No session (this hax does not campaign): false, without asking.
async fn leading(
    consul: &Consul,
    slot: &SessionSlot,
    index: &mut u64,
    wait: Duration,
) -> Result<bool, ConsulError> {
    let Some(mine) = slot.get() else {
        return Ok(false);
    };
    let (kv, idx) = consul
        .get_json::<Vec<KvEntry>>("/v1/kv/leader", (*index > 0).then_some(*index), wait)
        .await?;
    *index = if idx < *index { 0 } else { idx.max(1) };
    let holder = kv
        .and_then(|v| v.into_iter().next())
        .and_then(|e| e.session);
    Ok(holder.as_deref() == Some(mine.as_str()))
}

impl Liveness {
    fn configured(&self) -> BTreeSet<String> {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        v.config.nodes.values().cloned().collect()
    }

    pub async fn run(mut self) {
        let critical_path = format!(
            "/v1/health/state/critical?filter={}",
            encode_query("CheckID == \"serfHealth\"")
        );
        let mut watch: Option<NodeWatch> = None;
        let (mut ci, mut ki) = (0u64, 0u64);
        let mut epoch: Option<Epoch> = None;
        let mut backoff = Backoff::default();
        let mut leader_index = 0u64;
        loop {
            // A follower blocks on the leader key; the leader reads it afresh each round.
            let started = std::time::Instant::now();
            if watch.is_some() {
                leader_index = 0;
            }
            let check = leading(
                &self.consul,
                &self.slot,
                &mut leader_index,
                Duration::from_secs(30),
            );
            let leading = match or_stop(&mut self.stop, check).await {
                None => break,
                Some(r) => r,
            };
            match leading {
                Ok(true) => {}
                Ok(false) => {
                    if watch.take().is_some() {
                        log::info!("RC: node liveness left to the next leader");
                    }
                    // At most one look a second (a blocking query that answers at once, or
                    // no session yet).
                    let nap = actix_rt::time::sleep(
                        Duration::from_secs(1).saturating_sub(started.elapsed()),
                    );
                    if or_stop(&mut self.stop, nap).await.is_none() {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    log::debug!("RC: node liveness: {e}");
                    let nap = actix_rt::time::sleep(backoff.next_delay());
                    if or_stop(&mut self.stop, nap).await.is_none() {
                        break;
                    }
                    continue;
                }
            }
            if watch.is_none() {
                log::info!("RC: this hax ({}) watches node liveness", self.node);
                watch = Some(NodeWatch::default());
                (ci, ki) = (0, 0);
            }
            // Both lists once, then whichever changes first (each query wakes on its own).
            let wait = Duration::from_secs(10);
            let critical = self.consul.get_json::<Vec<CheckNode>>(
                &critical_path,
                (ci > 0).then_some(ci),
                wait,
            );
            let catalog = self.consul.get_json::<Vec<CheckNode>>(
                "/v1/catalog/nodes",
                (ki > 0).then_some(ki),
                wait,
            );
            let first = ci == 0 || ki == 0;
            let answers = if first {
                let (a, b) = futures_util::future::join(critical, catalog).await;
                (Some(a), Some(b))
            } else {
                tokio::select! {
                    a = critical => (Some(a), None),
                    b = catalog => (None, Some(b)),
                    _ = self.stop.wait_for(|s| *s) => break,
                }
            };
            let w = watch.as_mut().expect("set above");
            let mut failed = None;
            if let Some(a) = answers.0 {
                match a {
                    Ok((list, idx)) => {
                        let nodes = list
                            .unwrap_or_default()
                            .into_iter()
                            .map(|c| c.node)
                            .collect();
                        w.set_critical(nodes, idx);
                        ci = if idx < ci { 0 } else { idx.max(1) };
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(b) = answers.1 {
                match b {
                    Ok((list, idx)) => {
                        let nodes: BTreeSet<String> = list
                            .unwrap_or_default()
                            .into_iter()
                            .map(|c| c.node)
                            .collect();
                        if nodes.contains(&self.node) {
                            w.set_catalog(nodes, idx);
                        } else {
                            // This node runs: a catalog without it is incomplete (a server
                            // catching up), not a cluster that lost its nodes.
                            log::warn!("RC: the catalog at index {idx} lacks this node; ignored");
                        }
                        ki = if idx < ki { 0 } else { idx.max(1) };
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                log::debug!("RC: node liveness query: {e}");
                let nap = actix_rt::time::sleep(backoff.next_delay());
                if or_stop(&mut self.stop, nap).await.is_none() {
                    break;
                }
                continue;
            }
            backoff.reset();
            if ci == 0 || ki == 0 {
                continue;
            }
            let news = w.news(&self.configured());
            if news.is_empty() {
                continue;
            }
            let values: Vec<Vec<u8>> = news
                .iter()
                .map(|d| health_news::envelope(d, &self.node).to_bytes())
                .collect();
            for d in &news {
                if let HealthDelta::Node {
                    node,
                    health,
                    index,
                } = d
                {
                    log::info!(
                        "RC: node {node} {} as of index {index}: to every hax",
                        health.name()
                    );
                }
            }
            for chunk in values.chunks(super::publish::MAX_BATCH) {
                match publish_values_after(&self.consul, Queue::Bq, chunk, epoch).await {
                    Ok((_, e)) => epoch = e,
                    Err(e) => {
                        // Published again by the next pass: forget what was recorded.
                        log::warn!("RC: node liveness could not be published ({e}); trying again");
                        epoch = None;
                        watch = None;
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_node_fails_comes_back_and_is_gone_only_once_seen_and_then_removed() {
        let mut w = NodeWatch::default();
        let configured = set(&["a", "b", "c"]);
        w.set_catalog(set(&["a", "b"]), 10);
        w.set_critical(set(&[]), 11);
        // c never joined: nothing said about it; a and b passing, said once.
        let n = w.news(&configured);
        assert_eq!(n.len(), 2);
        assert!(w.news(&configured).is_empty());
        w.set_critical(set(&["b"]), 12);
        assert_eq!(
            w.news(&configured),
            vec![HealthDelta::Node {
                node: "b".into(),
                health: Health::Failing,
                index: 12
            }]
        );
        w.set_catalog(set(&["a"]), 13);
        w.set_critical(set(&[]), 13);
        assert_eq!(
            w.news(&configured),
            vec![HealthDelta::Node {
                node: "b".into(),
                health: Health::Gone,
                index: 13
            }]
        );
    }
}
