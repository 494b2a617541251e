//! `hax status`: the cluster as Consul and hax see it, for an operator (or, with `--json`, a
//! script). It reads Consul (the configuration tree, the catalog, every check, `processes/`,
//! the leader key, the queues) and the local hax's `GET /status` (the HA states it last told
//! Motr).
//!
//! Exit codes: 0 every process of the tree is ONLINE to hax; 1 some process is not (or hax has
//! said nothing of it yet); 2 the local hax could not be asked (HA states unknown); 69 Consul
//! could not be read.
use crate::consul::kv::KvEntry;
use crate::consul::{Consul, ConsulConfig, ConsulError};
use crate::fid::Fid;
use crate::view::ConfigTree;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

pub const EXIT_ALL_ONLINE: i32 = 0;
pub const EXIT_NOT_ONLINE: i32 = 1;
pub const EXIT_HAX_UNREACHABLE: i32 = 2;
pub const EXIT_CONSUL_UNREACHABLE: i32 = 69;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Check {
    node: String,
    #[serde(rename = "CheckID")]
    check_id: String,
    status: String,
    #[serde(rename = "ServiceID", default)]
    service_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CatalogNode {
    node: String,
}

/// Everything read, before it is shown.
struct Gathered {
    tree: ConfigTree,
    catalog: Vec<String>,
    checks: Vec<Check>,
    records: BTreeMap<Fid, Value>,
    leader: Option<(String, String)>,
    eq: (usize, u64),
    bq: (usize, u64),
    offsets: BTreeMap<String, u64>,
    hax: Result<Value, String>,
}

async fn kv(consul: &Consul, path: &str) -> Result<Vec<KvEntry>, ConsulError> {
    Ok(consul
        .get_json::<Vec<KvEntry>>(path, None, Duration::ZERO)
        .await?
        .0
        .unwrap_or_default())
}

fn counter(entries: &[KvEntry]) -> u64 {
    entries
        .first()
        .and_then(|e| e.value_string().trim().parse().ok())
        .unwrap_or(0)
}

async fn gather(consul: &Consul, hax_url: &str) -> Result<Gathered, ConsulError> {
    let tree_kv: Vec<(String, String)> = kv(consul, "/v1/kv/m0conf/?recurse")
        .await?
        .iter()
        .map(|e| (e.key.clone(), e.value_string()))
        .collect();
    let catalog = consul
        .get_json::<Vec<CatalogNode>>("/v1/catalog/nodes", None, Duration::ZERO)
        .await?
        .0
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.node)
        .collect();
    let checks = consul
        .get_json::<Vec<Check>>("/v1/health/state/any", None, Duration::ZERO)
        .await?
        .0
        .unwrap_or_default();
    let records = kv(consul, "/v1/kv/processes/?recurse")
        .await?
        .iter()
        .filter_map(|e| {
            let fid = e.key.strip_prefix("processes/")?.parse().ok()?;
            Some((fid, serde_json::from_str(&e.value_string()).ok()?))
        })
        .collect();
    let leader = kv(consul, "/v1/kv/leader")
        .await?
        .into_iter()
        .next()
        .and_then(|e| {
            let s = e.session.clone().filter(|s| !s.is_empty())?;
            Some((e.value_string(), s))
        });
    let eq = (
        kv(consul, "/v1/kv/eq/?recurse").await?.len(),
        counter(&kv(consul, "/v1/kv/epochs/eq").await?),
    );
    let bq = (
        kv(consul, "/v1/kv/bq/?recurse").await?.len(),
        counter(&kv(consul, "/v1/kv/epochs/bq").await?),
    );
    let offsets = kv(consul, "/v1/kv/bq-offsets/?recurse")
        .await?
        .iter()
        .filter_map(|e| {
            let node = e.key.strip_prefix("bq-offsets/")?.to_string();
            Some((node, e.value_string().trim().parse().ok()?))
        })
        .collect();
    Ok(Gathered {
        tree: ConfigTree::from_kv(&tree_kv),
        catalog,
        checks,
        records,
        leader,
        eq,
        bq,
        offsets,
        hax: ask_hax(hax_url).await,
    })
}

async fn ask_hax(url: &str) -> Result<Value, String> {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
    let path = format!("{}/status", url.trim_end_matches('/'));
    let mut resp = client
        .get(&path)
        .send()
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {path}: {}", resp.status()));
    }
    resp.json::<Value>()
        .limit(16 * 1024 * 1024)
        .await
        .map_err(|e| format!("GET {path}: {e}"))
}

/// A check's status, maintenance first (its check is critical too, but says why).
fn worst(checks: &[&Check]) -> &'static str {
    if checks.iter().any(|c| c.check_id.contains("_maintenance")) {
        return "maintenance";
    }
    for s in ["critical", "warning"] {
        if checks.iter().any(|c| c.status == s) {
            return if s == "critical" {
                "critical"
            } else {
                "warning"
            };
        }
    }
    "passing"
}

/// The JSON document `--json` prints (the human view is rendered from it).
fn document(g: &Gathered, consul_url: &str, hax_url: &str) -> Value {
    let hax_states = g.hax.as_ref().ok().and_then(|h| h.get("states"));
    let mut nodes = Vec::new();
    let mut all_online = g.hax.is_ok();
    for (node_fid, name) in &g.tree.nodes {
        let node_checks: Vec<&Check> = g
            .checks
            .iter()
            .filter(|c| &c.node == name && c.service_id.is_empty())
            .collect();
        let serf = if !g.catalog.contains(name) {
            "absent"
        } else {
            match node_checks.iter().find(|c| c.check_id == "serfHealth") {
                Some(c) if c.status == "passing" => "alive",
                Some(_) => "failed",
                None => "unknown",
            }
        };
        let maintenance = node_checks
            .iter()
            .any(|c| c.check_id == "_node_maintenance");
        let mut processes = Vec::new();
        for (fid, p) in g.tree.processes.iter().filter(|(_, p)| p.node == *node_fid) {
            let mine: Vec<&Check> = g
                .checks
                .iter()
                .filter(|c| c.service_id == fid.to_string())
                .collect();
            let consul = if mine.is_empty() {
                "unregistered"
            } else {
                worst(&mine)
            };
            let record = g.records.get(fid);
            let ha = hax_states
                .and_then(|s| s.get(fid.to_string()))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            all_online &= ha.as_deref() == Some("ONLINE");
            processes.push(json!({
                "fid": fid.to_string(),
                "name": p.name,
                "services": p.services.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>(),
                "endpoint": p.endpoint,
                "consul": consul,
                "kv": record.and_then(|r| r.get("state")).cloned(),
                "kv_type": record.and_then(|r| r.get("type")).cloned(),
                "ha": ha,
            }));
        }
        nodes.push(json!({
            "name": name,
            "fid": node_fid.to_string(),
            "serf": serf,
            "maintenance": maintenance,
            "ha": hax_states.and_then(|s| s.get(node_fid.to_string())).cloned(),
            "processes": processes,
        }));
    }
    json!({
        "consul": consul_url,
        "rc_leader": g.leader.as_ref().map(|(n, s)| json!({"node": n, "session": s})),
        "hax": match &g.hax {
            Ok(h) => json!({"url": hax_url, "reachable": true, "node": h["node"],
                "process": h["process"], "model_ready": h["model_ready"]}),
            Err(e) => json!({"url": hax_url, "reachable": false, "error": e}),
        },
        "nodes": nodes,
        "queues": {
            "eq": {"pending": g.eq.0, "epoch": g.eq.1},
            "bq": {"pending": g.bq.0, "epoch": g.bq.1, "offsets": g.offsets},
        },
        "all_online": all_online,
    })
}

fn short(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s
            .strip_prefix("M0_CONF_HA_PROCESS_")
            .unwrap_or(s)
            .to_string(),
        None => "-".into(),
    }
}

/// The human view.
fn render(d: &Value) -> String {
    let mut out = String::new();
    let leader = match &d["rc_leader"] {
        Value::Null => "none".to_string(),
        l => l["node"].as_str().unwrap_or("?").to_string(),
    };
    out.push_str(&format!(
        "Consul {}  RC leader: {leader}\n",
        d["consul"].as_str().unwrap_or("")
    ));
    let h = &d["hax"];
    if h["reachable"] == true {
        out.push_str(&format!(
            "hax {} on node {} (process {}){}\n",
            h["url"].as_str().unwrap_or(""),
            h["node"].as_str().unwrap_or("?"),
            h["process"].as_str().unwrap_or("?"),
            if h["model_ready"] == true {
                ""
            } else {
                ": still loading its HA model"
            }
        ));
    } else {
        out.push_str(&format!(
            "hax {} could not be asked ({}): HA states unknown\n",
            h["url"].as_str().unwrap_or(""),
            h["error"].as_str().unwrap_or("")
        ));
    }
    for n in d["nodes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\nnode {} ({}): {}{}  HA {}\n",
            n["name"].as_str().unwrap_or(""),
            n["fid"].as_str().unwrap_or(""),
            n["serf"].as_str().unwrap_or(""),
            if n["maintenance"] == true {
                ", in maintenance"
            } else {
                ""
            },
            short(&n["ha"])
        ));
        out.push_str(&format!(
            "  {:<26} {:<10} {:<28} {:<12} {:<15} {}\n",
            "PROCESS", "NAME", "ENDPOINT", "CONSUL", "KV", "HA"
        ));
        for p in n["processes"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:<26} {:<10} {:<28} {:<12} {:<15} {}\n",
                p["fid"].as_str().unwrap_or(""),
                p["name"].as_str().unwrap_or(""),
                p["endpoint"].as_str().unwrap_or(""),
                p["consul"].as_str().unwrap_or(""),
                short(&p["kv"]),
                short(&p["ha"])
            ));
        }
    }
    let q = &d["queues"];
    let offsets: Vec<String> = q["bq"]["offsets"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    out.push_str(&format!(
        "\nqueues: eq/ {} pending (epoch {}); bq/ {} pending (epoch {}); bq offsets: {}\n",
        q["eq"]["pending"],
        q["eq"]["epoch"],
        q["bq"]["pending"],
        q["bq"]["epoch"],
        if offsets.is_empty() {
            "none".into()
        } else {
            offsets.join(", ")
        }
    ));
    out
}

/// `hax status [--json]`: prints the view; answers the exit code (see the module header).
pub fn cmd_status(cfg: &ConsulConfig, hax_url: &str, as_json: bool) -> i32 {
    let consul = Consul::new(cfg);
    let consul_url = consul.base_url().to_string();
    let gathered = actix::System::new().block_on(async { gather(&consul, hax_url).await });
    let g = match gathered {
        Ok(g) => g,
        Err(e) => {
            eprintln!("hax status: cannot read Consul: {e}");
            return EXIT_CONSUL_UNREACHABLE;
        }
    };
    let d = document(&g, &consul_url, hax_url);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
    } else {
        print!("{}", render(&d));
    }
    if g.hax.is_err() {
        EXIT_HAX_UNREACHABLE
    } else if d["all_online"] == true {
        EXIT_ALL_ONLINE
    } else {
        EXIT_NOT_ONLINE
    }
}
