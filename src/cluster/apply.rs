//! Bootstrap: compares a plan with what Consul holds (KV under `m0conf/`, catalog services of
//! the names the bootstrap owns) and writes it, changes nothing, or refuses with a diff.
use super::plan::{Plan, ServiceReg, OWNED_SERVICE_NAMES};
use crate::consul::kv::{KvEntry, TxnOp};
use crate::consul::{encode_query, Consul, ConsulConfig, ConsulError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Most operations in one `/v1/txn` (portable across Consul versions).
pub const TXN_MAX_OPS: usize = 64;
/// How long the bootstrap waits for the catalog to show its registrations.
pub const CATALOG_WAIT: Duration = Duration::from_secs(15);

/// Why a bootstrap failed (a refusal is not an error: see [`Outcome::Refused`]).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Consul(#[from] ConsulError),
    #[error("node {node}: {reason}")]
    Agent { node: String, reason: String },
    #[error("the catalog still differs from the plan after {CATALOG_WAIT:?}: {0}")]
    NotConverged(String),
}

impl BootstrapError {
    /// Consul (or a node's agent) could not be reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            BootstrapError::Consul(ConsulError::Unreachable { .. })
        )
    }
}

/// A service as the catalog holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentService {
    pub node: String,
    pub id: String,
    pub name: String,
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
}

impl CurrentService {
    fn matches(&self, r: &ServiceReg) -> bool {
        self.name == r.name
            && self.address == r.address
            && self.port == r.port
            && self.meta == r.meta
    }

    /// What differs from the planned registration, e.g. `port 22003 -> 22004`.
    fn changes_to(&self, r: &ServiceReg) -> Vec<String> {
        let mut v = Vec::new();
        if self.name != r.name {
            v.push(format!("name {} -> {}", self.name, r.name));
        }
        if self.address != r.address || self.port != r.port {
            v.push(format!(
                "endpoint {}{} -> {}",
                self.address,
                self.port,
                r.endpoint()
            ));
        }
        for k in self
            .meta
            .keys()
            .chain(r.meta.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let (old, new) = (self.meta.get(k), r.meta.get(k));
            if old != new {
                let show =
                    |x: Option<&String>| x.map_or("(none)".to_string(), |s| format!("{s:?}"));
                v.push(format!("{k} {} -> {}", show(old), show(new)));
            }
        }
        v
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CatalogService {
    node: String,
    #[serde(rename = "ServiceID")]
    service_id: String,
    service_name: String,
    #[serde(default)]
    service_address: String,
    #[serde(default)]
    service_port: u16,
    #[serde(default)]
    service_meta: Option<BTreeMap<String, String>>,
}

/// What Consul holds of the bootstrap's objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// `m0conf/...` key -> value.
    pub kv: BTreeMap<String, String>,
    pub services: Vec<CurrentService>,
}

impl Current {
    pub fn is_empty(&self) -> bool {
        self.kv.is_empty() && self.services.is_empty()
    }
}

/// Reads the `m0conf/` tree and the catalog services of the owned names.
pub async fn read_current(consul: &Consul) -> Result<Current, ConsulError> {
    let (entries, _) = consul
        .get_json::<Vec<KvEntry>>("/v1/kv/m0conf/?recurse", None, Duration::ZERO)
        .await?;
    let kv = entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.key.clone(), e.value_string()))
        .collect();
    Ok(Current {
        kv,
        services: read_services(consul).await?,
    })
}

async fn read_services(consul: &Consul) -> Result<Vec<CurrentService>, ConsulError> {
    let mut services = Vec::new();
    for name in OWNED_SERVICE_NAMES {
        let path = format!("/v1/catalog/service/{name}");
        let (entries, _) = consul
            .get_json::<Vec<CatalogService>>(&path, None, Duration::ZERO)
            .await?;
        services.extend(
            entries
                .unwrap_or_default()
                .into_iter()
                .map(|e| CurrentService {
                    node: e.node,
                    id: e.service_id,
                    name: e.service_name,
                    address: e.service_address,
                    port: e.service_port,
                    meta: e.service_meta.unwrap_or_default(),
                }),
        );
    }
    services.sort_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
    Ok(services)
}

/// Differences between a plan and what Consul holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub kv_added: Vec<(String, String)>,
    /// (key, value in Consul, planned value)
    pub kv_changed: Vec<(String, String, String)>,
    /// (key, value in Consul)
    pub kv_removed: Vec<(String, String)>,
    pub services_added: Vec<ServiceReg>,
    pub services_changed: Vec<(CurrentService, ServiceReg)>,
    pub services_removed: Vec<CurrentService>,
}

/// Equal strings, or equal JSON documents (key order and spacing do not matter).
fn same_value(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (serde_json::from_str::<serde_json::Value>(a), serde_json::from_str::<serde_json::Value>(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

impl Diff {
    pub fn compute(plan: &Plan, current: &Current) -> Diff {
        let mut d = Diff::default();
        for (k, v) in &plan.kv {
            match current.kv.get(k) {
                None => d.kv_added.push((k.clone(), v.clone())),
                Some(old) if !same_value(old, v) => {
                    d.kv_changed.push((k.clone(), old.clone(), v.clone()))
                }
                Some(_) => {}
            }
        }
        for (k, v) in &current.kv {
            if !plan.kv.contains_key(k) {
                d.kv_removed.push((k.clone(), v.clone()));
            }
        }
        d.services_diff(plan, &current.services);
        d
    }

    fn services_diff(&mut self, plan: &Plan, current: &[CurrentService]) {
        let by_key: BTreeMap<(&str, &str), &CurrentService> = current
            .iter()
            .map(|s| ((s.node.as_str(), s.id.as_str()), s))
            .collect();
        for r in &plan.services {
            match by_key.get(&(r.node.as_str(), r.id.as_str())) {
                None => self.services_added.push(r.clone()),
                Some(c) if !c.matches(r) => self.services_changed.push(((*c).clone(), r.clone())),
                Some(_) => {}
            }
        }
        for c in current {
            if !plan
                .services
                .iter()
                .any(|r| r.node == c.node && r.id == c.id)
            {
                self.services_removed.push(c.clone());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kv_added.is_empty()
            && self.kv_changed.is_empty()
            && self.kv_removed.is_empty()
            && self.services_added.is_empty()
            && self.services_changed.is_empty()
            && self.services_removed.is_empty()
    }

    /// One line per difference: `+` added, `~` changed, `-` removed.
    pub fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        for r in &self.services_added {
            let process = r
                .meta
                .get("process")
                .map_or(String::new(), |p| format!(" ({p})"));
            v.push(format!(
                "+ service {} {}{process} on {} at {}",
                r.name,
                r.id,
                r.node,
                r.endpoint()
            ));
        }
        for (c, r) in &self.services_changed {
            v.push(format!(
                "~ service {} {} on {}: {}",
                r.name,
                r.id,
                r.node,
                c.changes_to(r).join(", ")
            ));
        }
        for c in &self.services_removed {
            v.push(format!(
                "- service {} {} on {} at {}{}",
                c.name, c.id, c.node, c.address, c.port
            ));
        }
        for (k, val) in &self.kv_added {
            v.push(format!("+ kv {k} = {val}"));
        }
        for (k, old, new) in &self.kv_changed {
            v.push(format!("~ kv {k}: {old} -> {new}"));
        }
        for (k, old) in &self.kv_removed {
            v.push(format!("- kv {k} (was {old})"));
        }
        v
    }
}

/// What the bootstrap did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Consul held nothing of the cluster; everything was written.
    Created,
    /// Consul already held exactly the plan; nothing was written.
    Unchanged,
    /// Consul holds something else; nothing was written (`apply` was false).
    Refused,
    /// Consul held something else; the differences were applied.
    Applied,
}

#[derive(Clone, Debug)]
pub struct BootstrapReport {
    pub consul: String,
    pub outcome: Outcome,
    /// Plan versus what Consul held before (everything is "added" when created).
    pub diff: Diff,
    pub kv_keys: usize,
    pub services: usize,
    /// `/v1/txn` requests sent.
    pub transactions: usize,
}

impl BootstrapReport {
    /// A readable report for the terminal.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let (k, n) = (self.kv_keys, self.services);
        match self.outcome {
            Outcome::Created => {
                let _ = writeln!(
                    s,
                    "bootstrap: Consul at {} held no cluster; created it:",
                    self.consul
                );
                let _ = writeln!(
                    s,
                    "  {k} KV keys under m0conf/ in {} transaction(s), {n} services registered:",
                    self.transactions
                );
                for r in &self.diff.services_added {
                    let _ = writeln!(
                        s,
                        "    {:<6} {} on {} at {}",
                        r.name,
                        r.id,
                        r.node,
                        r.endpoint()
                    );
                }
            }
            Outcome::Unchanged => {
                let _ = writeln!(
                    s,
                    "bootstrap: Consul at {} already holds this cluster ({k} KV keys, {n} services); nothing changed",
                    self.consul
                );
            }
            Outcome::Refused | Outcome::Applied => {
                let lines = self.diff.lines();
                let _ = writeln!(
                    s,
                    "bootstrap: Consul at {} holds a different cluster ({} difference(s)):",
                    self.consul,
                    lines.len()
                );
                for l in lines {
                    let _ = writeln!(s, "  {l}");
                }
                if self.outcome == Outcome::Refused {
                    let _ = writeln!(
                        s,
                        "refused: nothing changed; run again with --apply to apply these changes"
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "applied ({} transaction(s)); Consul now holds the description",
                        self.transactions
                    );
                }
            }
        }
        s
    }
}

/// Writes `plan` into Consul at `consul_url` (KV through any agent, services through each
/// node's agent): creates it when Consul holds nothing of it, does nothing when it holds
/// exactly it, and otherwise refuses with a diff unless `apply` is true.
pub async fn bootstrap(
    plan: &Plan,
    consul_url: &str,
    token: Option<&str>,
    apply: bool,
) -> Result<BootstrapReport, BootstrapError> {
    let consul = Consul::new(&ConsulConfig::with_env_ca(consul_url, token));
    let current = read_current(&consul).await?;
    let diff = Diff::compute(plan, &current);
    let mut report = BootstrapReport {
        consul: consul.base_url().to_string(),
        outcome: Outcome::Unchanged,
        diff,
        kv_keys: plan.kv.len(),
        services: plan.services.len(),
        transactions: 0,
    };
    if report.diff.is_empty() {
        return Ok(report);
    }
    report.outcome = if current.is_empty() {
        Outcome::Created
    } else if apply {
        Outcome::Applied
    } else {
        return Ok(BootstrapReport {
            outcome: Outcome::Refused,
            ..report
        });
    };
    report.transactions = write(&consul, token, plan, &report.diff).await?;
    Ok(report)
}

/// The node name of the agent `consul` talks to.
async fn agent_node(consul: &Consul) -> Result<String, ConsulError> {
    consul.agent_node_name().await
}

/// The agents the services of `nodes` are (de)registered through: the agent at the bootstrap's
/// URL for its own node, `http://<address>:<consul_http_port>` for the others (checked to be
/// that node's agent). Nodes not in the plan are left out (their services are deregistered
/// from the catalog directly).
async fn agents(
    main: &Consul,
    token: Option<&str>,
    plan: &Plan,
    nodes: &[&str],
) -> Result<BTreeMap<String, Consul>, BootstrapError> {
    let mut out = BTreeMap::new();
    if nodes.is_empty() {
        return Ok(out);
    }
    let main_node = agent_node(main).await?;
    for &node in nodes {
        if out.contains_key(node) {
            continue;
        }
        if node == main_node {
            out.insert(node.to_string(), main.clone());
            continue;
        }
        let Some(n) = plan.node(node) else { continue };
        let c = Consul::new(&ConsulConfig::with_env_ca(&n.agent_url(), token));
        let found = agent_node(&c).await.map_err(|e| match e {
            ConsulError::Unreachable { addr, reason } => ConsulError::Unreachable {
                addr,
                reason: format!("node {node}'s agent: {reason}"),
            }
            .into(),
            e => BootstrapError::Agent {
                node: node.into(),
                reason: e.to_string(),
            },
        })?;
        if found != node {
            return Err(BootstrapError::Agent {
                node: node.into(),
                reason: format!(
                    "the agent at {} is node {found:?}, not {node:?} (check the node's name and consul_http_port)",
                    n.agent_url()
                ),
            });
        }
        out.insert(node.to_string(), c);
    }
    Ok(out)
}

/// Sends KV operations in transactions of at most [`TXN_MAX_OPS`]; returns how many.
async fn txn(consul: &Consul, ops: Vec<TxnOp>) -> Result<usize, ConsulError> {
    let mut n = 0;
    for chunk in ops.chunks(TXN_MAX_OPS) {
        let body = serde_json::to_vec(chunk).map_err(|e| ConsulError::Decode {
            what: "txn".into(),
            reason: e.to_string(),
        })?;
        consul.put("/v1/txn", body).await?;
        n += 1;
    }
    Ok(n)
}

/// Applies `diff`: KV sets, service registrations, deregistrations, KV deletes (exact keys),
/// then waits until the catalog shows the planned services.
async fn write(
    consul: &Consul,
    token: Option<&str>,
    plan: &Plan,
    diff: &Diff,
) -> Result<usize, BootstrapError> {
    let touched: Vec<&str> = diff
        .services_added
        .iter()
        .map(|r| r.node.as_str())
        .chain(diff.services_changed.iter().map(|(_, r)| r.node.as_str()))
        .chain(diff.services_removed.iter().map(|c| c.node.as_str()))
        .collect();
    // Every agent is found before anything is written.
    let agents = agents(consul, token, plan, &touched).await?;
    let sets = diff
        .kv_added
        .iter()
        .map(|(k, v)| TxnOp::set(k, v.as_bytes()))
        .chain(
            diff.kv_changed
                .iter()
                .map(|(k, _, v)| TxnOp::set(k, v.as_bytes())),
        );
    let mut transactions = txn(consul, sets.collect()).await?;
    for r in diff
        .services_added
        .iter()
        .chain(diff.services_changed.iter().map(|(_, r)| r))
    {
        let agent = &agents[&r.node];
        let body = r.definition().to_string().into_bytes();
        agent.put("/v1/agent/service/register", body).await.map_err(|e| match e {
            ConsulError::Status { status, body, .. } => BootstrapError::Agent {
                node: r.node.clone(),
                reason: format!(
                    "registering {} {} failed ({status}: {}){}",
                    r.name,
                    r.id,
                    body.trim(),
                    if body.contains("cript") {
                        "; script checks registered over the HTTP API need `enable_script_checks = true` in the agent's configuration (`enable_local_script_checks` only covers checks in configuration files)"
                    } else {
                        ""
                    }
                ),
            },
            e => e.into(),
        })?;
    }
    for c in &diff.services_removed {
        match agents.get(&c.node) {
            Some(agent) => {
                let path = format!("/v1/agent/service/deregister/{}", encode_query(&c.id));
                agent.put(&path, Vec::new()).await?;
            }
            None => {
                let body = serde_json::json!({"Node": c.node, "ServiceID": c.id})
                    .to_string()
                    .into_bytes();
                consul.put("/v1/catalog/deregister", body).await?;
            }
        }
    }
    let deletes: Vec<TxnOp> = diff
        .kv_removed
        .iter()
        .map(|(k, _)| TxnOp::delete(k))
        .collect();
    transactions += txn(consul, deletes).await?;
    wait_for_catalog(consul, plan).await?;
    Ok(transactions)
}

async fn wait_for_catalog(consul: &Consul, plan: &Plan) -> Result<(), BootstrapError> {
    let deadline = Instant::now() + CATALOG_WAIT;
    loop {
        let mut d = Diff::default();
        d.services_diff(plan, &read_services(consul).await?);
        if d.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BootstrapError::NotConverged(d.lines().join("; ")));
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{plan, Description};

    fn single_plan() -> Plan {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/singlenode.yaml");
        plan(&Description::load(p).unwrap())
    }

    fn as_current(p: &Plan) -> Current {
        let services = p
            .services
            .iter()
            .map(|r| CurrentService {
                node: r.node.clone(),
                id: r.id.clone(),
                name: r.name.clone(),
                address: r.address.clone(),
                port: r.port,
                meta: r.meta.clone(),
            })
            .collect();
        Current {
            kv: p.kv.clone(),
            services,
        }
    }

    #[test]
    fn nothing_in_consul_means_everything_is_added() {
        let p = single_plan();
        let d = Diff::compute(&p, &Current::default());
        assert_eq!(d.kv_added.len(), p.kv.len());
        assert_eq!(d.services_added.len(), 4);
        assert!(d.kv_changed.is_empty() && d.services_removed.is_empty());
    }

    #[test]
    fn the_same_cluster_is_no_difference_even_with_reordered_json() {
        let p = single_plan();
        let mut cur = as_current(&p);
        assert!(Diff::compute(&p, &cur).is_empty());
        cur.kv.insert(
            "m0conf/nodes/0x6e00000000000001:0x2".into(),
            r#"{ "state": "M0_NC_UNKNOWN", "enclosure": "0x6500000000000001:0x3",
                 "controller": "0x6300000000000001:0x4", "name": "node-1" }"#
                .into(),
        );
        assert!(Diff::compute(&p, &cur).is_empty());
    }

    #[test]
    fn changes_are_listed_per_key_and_service() {
        let p = single_plan();
        let mut cur = as_current(&p);
        cur.kv.insert("m0conf/stale".into(), "x".into());
        cur.services[2].port = 1;
        cur.services.push(CurrentService {
            node: "node-9".into(),
            id: "0x7200000000000001:0x99".into(),
            ..cur.services[3].clone()
        });
        let d = Diff::compute(&p, &cur);
        let lines = d.lines().join("\n");
        assert!(lines.contains("~ service ios 0x7200000000000001:0xc on node-1: endpoint inet:tcp:127.0.0.1@1 -> inet:tcp:127.0.0.1@22003"), "{lines}");
        assert!(
            lines.contains("- service ios 0x7200000000000001:0x99 on node-9"),
            "{lines}"
        );
        assert!(lines.contains("- kv m0conf/stale (was x)"), "{lines}");
        assert_eq!(d.lines().len(), 3);
    }
}
