//! FidResolver: learns who this hax is and keeps the cluster view fresh.
//!
//! It waits (with backoff, saying what it waits for) until Consul tells it hax's process
//! fid (catalog service `hax` on this node), endpoint, HA and RM service fids (configuration
//! tree first, else the seed RFC's rule), and then keeps the confd list, the leader's node
//! and the configuration tree fresh with blocking queries. Readers use the `SharedView`.
use crate::consul::backoff::Backoff;
use crate::consul::catalog::CatalogEntry;
use crate::consul::kv::KvEntry;
use crate::consul::{filter_eq, Consul, ConsulError};
use crate::fid::Fid;
use crate::view::{derived_ha, derived_rm, ClusterView, Confd, ConfigTree, Identity, SharedView};
use crate::waiting::Waiting;
use actix::prelude::*;
use serde::Deserialize;
use std::time::Duration;

pub struct FidResolver {
    consul: Consul,
    view: SharedView,
    node: Option<String>,
    wait: Duration,
}

impl FidResolver {
    /// `node`: this node's Consul name (None: ask the agent).
    pub fn new(consul: Consul, view: SharedView, node: Option<String>) -> Self {
        FidResolver {
            consul,
            view,
            node,
            wait: Duration::from_secs(30),
        }
    }
}

impl Actor for FidResolver {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The loops are owned by this actor (they stop with it); none may ever end.
        let (c, v, w) = (self.consul.clone(), self.view.clone(), self.wait);
        let owned =
            |name: &'static str, fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| async move {
                fut.await;
                crate::supervise::fatal(format!("FidResolver's {name} loop ended"));
            };
        ctx.spawn(
            owned(
                "identity",
                Box::pin(watch_identity(c.clone(), v.clone(), self.node.clone(), w)),
            )
            .into_actor(self),
        );
        ctx.spawn(owned("confd", Box::pin(watch_confds(c.clone(), v.clone(), w))).into_actor(self));
        ctx.spawn(
            owned("leader", Box::pin(watch_leader(c.clone(), v.clone(), w))).into_actor(self),
        );
        ctx.spawn(owned("configuration", Box::pin(watch_config(c, v, w))).into_actor(self));
    }
}

fn set(view: &SharedView, f: impl FnOnce(&mut ClusterView)) {
    f(&mut view.write().unwrap_or_else(|e| e.into_inner()))
}

fn failed(view: &SharedView, what: &str, e: &ConsulError, logged: &mut Waiting) {
    if matches!(e, ConsulError::Unreachable { .. }) {
        set(view, |v| v.consul_up = false);
    }
    match logged.failed("FidResolver", what, e) {
        Some((_, line)) => log::warn!("{line}"),
        None => log::debug!("FidResolver: still waiting for {what}: {e}"),
    }
}

/// Runs a blocking-query loop on `path`, calling `apply` with each new answer. When `apply`
/// returns false (the answer is not usable yet, e.g. an empty list right after a server came
/// back), the next read is a plain one a second later instead of a long blocking wait.
async fn watch<T, F>(
    consul: Consul,
    view: SharedView,
    what: &'static str,
    path: String,
    wait: Duration,
    mut apply: F,
) where
    T: serde::de::DeserializeOwned,
    F: FnMut(Option<T>, &SharedView) -> bool,
{
    let mut index = 0u64;
    let mut backoff = Backoff::default();
    let mut logged = Waiting::default();
    loop {
        let started = std::time::Instant::now();
        match consul.get_json::<T>(&path, Some(index), wait).await {
            Ok((value, idx)) => {
                if let Some(waited) = logged.over() {
                    log::info!(
                        "FidResolver: {what} available again (after {:.1} s)",
                        waited.as_secs_f64()
                    );
                }
                backoff.reset();
                set(&view, |v| v.consul_up = true);
                if !apply(value, &view) {
                    index = 0;
                    actix_rt::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                // The index must never go backwards nor be 0 in a blocking query.
                index = if idx < index { 0 } else { idx.max(1) };
            }
            Err(e) => {
                failed(&view, what, &e, &mut logged);
                actix_rt::time::sleep(backoff.next_delay()).await;
                continue;
            }
        }
        // Rate-limit the loop even if Consul answers at once.
        let spent = started.elapsed();
        if spent < Duration::from_millis(100) {
            actix_rt::time::sleep(Duration::from_millis(100) - spent).await;
        }
    }
}

async fn node_name(consul: &Consul, view: &SharedView) -> String {
    let mut backoff = Backoff::default();
    let mut logged = Waiting::default();
    loop {
        match consul.agent_node_name().await {
            Ok(n) => return n,
            Err(e) => failed(view, "the local Consul agent's node name", &e, &mut logged),
        }
        actix_rt::time::sleep(backoff.next_delay()).await;
    }
}

async fn watch_identity(consul: Consul, view: SharedView, node: Option<String>, wait: Duration) {
    let node = match node {
        Some(n) => n,
        None => node_name(&consul, &view).await,
    };
    log::info!("FidResolver: this is node {node}; looking for its hax service");
    let path = format!(
        "/v1/catalog/service/hax?filter={}",
        filter_eq("Node", &node)
    );
    let mut unregistered = Waiting::default();
    watch::<Vec<CatalogEntry>, _>(
        consul,
        view,
        "hax's catalog entry",
        path,
        wait,
        move |entries, view| {
            let entry = entries.unwrap_or_default().into_iter().next();
            let Some(e) = entry else {
                let what = format!("a `hax` service registered on node {node}");
                if let Some((_, line)) = unregistered.failed("FidResolver", &what, &"none yet") {
                    log::warn!("{line}");
                }
                return false;
            };
            unregistered.over();
            let process = match Fid::parse_process_id(&e.service_id) {
                Ok(p) => p,
                Err(err) => {
                    log::error!("FidResolver: hax's ServiceID is not a process fid: {err}");
                    return true;
                }
            };
            set(view, |v| {
                let ha = v
                    .config
                    .service_of_type(process, "ha")
                    .unwrap_or_else(|| derived_ha(process));
                let rm = v
                    .config
                    .service_of_type(process, "rms")
                    .unwrap_or_else(|| derived_rm(process));
                let id = Identity {
                    node: node.clone(),
                    node_uuid: Some(e.id.clone()).filter(|u| !u.is_empty()),
                    process,
                    ha_service: ha,
                    rm_service: rm,
                    endpoint: e.endpoint(),
                };
                if v.identity.as_ref() != Some(&id) {
                    log::info!(
                        "FidResolver: hax is {} (HA {}, RM {}) at {}",
                        id.process,
                        id.ha_service,
                        id.rm_service,
                        id.endpoint
                    );
                    v.identity = Some(id);
                }
            });
            true
        },
    )
    .await
}

async fn watch_confds(consul: Consul, view: SharedView, wait: Duration) {
    let path = "/v1/catalog/service/confd".to_string();
    watch::<Vec<CatalogEntry>, _>(
        consul,
        view,
        "the confd list",
        path,
        wait,
        |entries, view| {
            let mut confds: Vec<Confd> = entries
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| match Fid::parse_process_id(&e.service_id) {
                    Ok(fid) => Some(Confd {
                        node: e.node.clone(),
                        fid,
                        endpoint: e.endpoint(),
                    }),
                    Err(err) => {
                        log::warn!("FidResolver: confd entry ignored: {err}");
                        None
                    }
                })
                .collect();
            confds.sort_by_key(|c| c.fid);
            let any = !confds.is_empty();
            set(view, |v| {
                if v.confds.as_ref() != Some(&confds) {
                    log::info!("FidResolver: {} confd(s) registered", confds.len());
                    v.confds = Some(confds);
                }
            });
            // No confd at all is either a cluster still being registered or a server that just
            // came back: look again soon rather than block on that answer.
            any
        },
    )
    .await
}

async fn watch_leader(consul: Consul, view: SharedView, wait: Duration) {
    let mut index = 0u64;
    let mut backoff = Backoff::default();
    let mut logged = Waiting::default();
    loop {
        let started = std::time::Instant::now();
        let r = consul
            .get_json::<Vec<KvEntry>>("/v1/kv/leader", Some(index), wait)
            .await;
        let (entry, idx) = match r {
            Ok((e, idx)) => (e.and_then(|v| v.into_iter().next()), idx),
            Err(e) => {
                failed(&view, "the leader key", &e, &mut logged);
                actix_rt::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let named = entry
            .as_ref()
            .map(|e| e.value_string())
            .filter(|v| !v.is_empty());
        let node = match entry.and_then(|e| e.session).filter(|s| !s.is_empty()) {
            None => None,
            Some(session) => {
                #[derive(Deserialize)]
                struct Info {
                    #[serde(rename = "Node")]
                    node: String,
                }
                match consul
                    .get_json::<Vec<Info>>(
                        &format!("/v1/session/info/{session}"),
                        None,
                        Duration::ZERO,
                    )
                    .await
                {
                    Ok((Some(v), _)) => v.into_iter().next().map(|i| i.node),
                    Ok((None, _)) => None,
                    Err(e) => {
                        failed(&view, "the leader's session", &e, &mut logged);
                        actix_rt::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
        };
        backoff.reset();
        logged.over();
        set(&view, |v| {
            v.consul_up = true;
            if let Some(n) = named.clone().or_else(|| node.clone()) {
                v.last_leader_node = Some(n);
            }
            if v.leader_node != node {
                match &node {
                    Some(n) => log::info!("FidResolver: RC leader is on node {n}"),
                    // This hax resigning at shutdown: expected.
                    None if v.stopping => log::info!("FidResolver: no RC leader"),
                    None => log::warn!("FidResolver: no RC leader"),
                }
                v.leader_node = node;
            }
        });
        index = if idx < index { 0 } else { idx.max(1) };
        let spent = started.elapsed();
        if spent < Duration::from_millis(100) {
            actix_rt::time::sleep(Duration::from_millis(100) - spent).await;
        }
    }
}

async fn watch_config(consul: Consul, view: SharedView, wait: Duration) {
    let path = "/v1/kv/m0conf/?recurse".to_string();
    watch::<Vec<KvEntry>, _>(
        consul,
        view,
        "the configuration tree",
        path,
        wait,
        |entries, view| {
            let kv: Vec<(String, String)> = entries
                .unwrap_or_default()
                .iter()
                .map(|e| (e.key.clone(), e.value_string()))
                .collect();
            let tree = ConfigTree::from_kv(&kv);
            set(view, |v| {
                if v.config != tree {
                    log::info!(
                        "FidResolver: configuration tree: {} node(s), {} process(es)",
                        tree.nodes.len(),
                        tree.processes.len()
                    );
                    // Configured HA/RM fids win over the derived ones.
                    if let Some(id) = v.identity.as_mut() {
                        if let Some(ha) = tree.service_of_type(id.process, "ha") {
                            id.ha_service = ha;
                        }
                        if let Some(rm) = tree.service_of_type(id.process, "rms") {
                            id.rm_service = rm;
                        }
                    }
                    v.config = tree;
                    v.config_generation += 1;
                }
            });
            true
        },
    )
    .await
}
