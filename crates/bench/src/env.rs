//! What every scenario runs against, started with the test kit: a real Consul dev agent (free
//! loopback ports, Prometheus-style cumulative metrics on) with hax and a confd registered the
//! way the tests register their single-node cluster, and the real `hax` binary, ready. Children
//! die with the bench and are killed on drop.
use super::hax_metrics::HaxMetrics;
use super::http::Http;
use hax_testkit::{free_port, start_spawner, ConsulAgent, DevAgent, HaxCommand, HaxProc, NodeDef};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The simulated Motr processes stand for processes on other machines: run them (every thread
/// the main thread creates from now on) under `SCHED_IDLE`, so that they only take the CPU
/// hax and Consul leave, and hax's figures are not its share of two cores among a thousand
/// simulator threads. Call it first thing in `main`, before other threads exist; answers
/// what was done. Consul and hax are started by the kit's spawner thread, created here before
/// the priority is lowered, so they run at the priority the bench was started with (a process
/// inherits the scheduling of the thread that forks it).
pub fn lower_peer_priority(idle: bool) -> String {
    if !idle {
        return "simulated processes scheduled like hax".into();
    }
    start_spawner();
    // The policy of `chrt -p <pid>` is the main thread's; threads it creates inherit it.
    match Command::new("chrt")
        .args(["--idle", "-p", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {
            "simulated processes under SCHED_IDLE (hax and Consul: normal scheduling)".into()
        }
        Ok(s) => format!("chrt failed ({s}): simulated processes scheduled like hax"),
        Err(e) => format!("chrt not run ({e}): simulated processes scheduled like hax"),
    }
}

/// The Consul agent's configuration: cumulative request counters kept for an hour
/// (HAX_BENCH_CONSUL_DEBUG=1: Consul logs every HTTP request, to see who asks what).
pub fn consul_hcl() -> String {
    let debug = std::env::var("HAX_BENCH_CONSUL_DEBUG").is_ok_and(|v| v == "1");
    format!(
        "{}telemetry {{\n  prometheus_retention_time = \"1h\"\n  disable_hostname = true\n}}\n",
        if debug { "log_level = \"debug\"\n" } else { "" }
    )
}

/// Consul's cumulative HTTP request counters: (method, path label) → count
/// (`consul_api_http_count` of `/v1/agent/metrics?format=prometheus`).
pub type HttpCounts = BTreeMap<(String, String), u64>;

/// Reads Consul's own HTTP request counters.
pub fn http_counts(http: &mut Http) -> Result<HttpCounts, String> {
    let r = http.get("/v1/agent/metrics?format=prometheus")?;
    if !r.ok() {
        return Err(format!("metrics: HTTP {}", r.status));
    }
    Ok(parse_http_counts(&r.text()))
}

/// Parses `consul_api_http_count{method="PUT",path="v1_txn"} 3` lines.
pub fn parse_http_counts(text: &str) -> HttpCounts {
    let mut out = HttpCounts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("consul_api_http_count{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        let (Some(m), Some(p)) = (label("method"), label("path")) else {
            continue;
        };
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        out.insert((m, p), v as u64);
    }
    out
}

/// `after - before`, without zero entries.
pub fn counts_delta(before: &HttpCounts, after: &HttpCounts) -> HttpCounts {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// How hax runs in every scenario: `bin` against the agent at `consul`, its log in `dir`.
pub fn hax_command(bin: &Path, consul: &str, node: &str, http_port: u16, dir: &Path) -> HaxCommand {
    HaxCommand {
        bin: bin.to_path_buf(),
        flags: [
            // Health comes from what the bench POSTs (no Consul watch or query competes).
            "--health-from",
            "watches",
            "--reconcile",
            "false",
            "--entrypoint-pause-ms",
            "200",
            "--leader-lock-delay-s",
            "1",
            "--shutdown-ms",
            "2000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        env: vec![
            ("HAX_LOG".into(), "info".into()),
            ("HAX_STANDIN_RPC_TIMEOUT_MS".into(), "200".into()),
        ],
        log: dir.join("hax.log"),
        ..HaxCommand::new(consul, node, http_port, 0, dir)
    }
}

/// Consul + registered cluster (hax and a confd) + a running hax.
pub struct Env {
    // Dropped first: hax goes before its Consul agent.
    pub hax: HaxProc,
    pub consul: ConsulAgent,
    pub dir: PathBuf,
}

impl Env {
    /// Starts Consul, registers the cluster, starts hax and waits until it is ready.
    pub fn start(consul_bin: &Path, hax_bin: &Path, dir: &Path, tag: &str) -> Result<Env, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let node = format!("bench-{tag}");
        let consul = DevAgent {
            node: Some(node.clone()),
            hcl: consul_hcl(),
            dir: Some(dir.to_path_buf()),
            bin: Some(consul_bin.to_path_buf()),
            ..DevAgent::default()
        }
        .start()?;
        let hax_port = free_port();
        NodeDef::new(0, &node)
            .with_hax(hax_port)
            .with_confd(free_port())
            .register(consul.client())?;
        let mut cmd = hax_command(hax_bin, &consul.http_addr(), &node, free_port(), dir);
        cmd.endpoint_port = hax_port;
        let hax = cmd.spawn()?;
        hax.wait_ready(Duration::from_secs(30))?;
        Ok(Env {
            hax,
            consul,
            dir: dir.to_path_buf(),
        })
    }

    /// The agent's node name.
    pub fn node(&self) -> String {
        self.consul.node_name().to_string()
    }
    /// A new client of the agent (its own kept-alive connection).
    pub fn consul_http(&self) -> Http {
        Http::new(&self.consul.http_addr(), Duration::from_secs(30)).expect("loopback address")
    }
    pub fn consul_pid(&self) -> u32 {
        self.consul.pid().unwrap_or(0)
    }
    pub fn hax_pid(&self) -> u32 {
        self.hax.pid()
    }
    /// hax's HA endpoint, for simulated processes.
    pub fn endpoint(&self) -> String {
        self.hax.endpoint()
    }
    pub fn hax_url(&self) -> String {
        self.hax.url()
    }
    /// A client of hax's watch endpoint.
    pub fn hax_client(&self) -> Http {
        Http::new(&self.hax_url(), Duration::from_secs(30)).expect("loopback address")
    }
    /// hax's metrics now (an empty scrape when hax cannot be asked: its figures read 0).
    pub fn hax_metrics(&self) -> HaxMetrics {
        HaxMetrics::read(&self.hax_url()).unwrap_or_else(|e| {
            eprintln!("hax-bench: hax's metrics: {e}");
            HaxMetrics::parse("# EOF\n").expect("an empty scrape parses")
        })
    }

    /// Waits until hax counted a confirmed broadcast after scrape `since`
    /// (`hax_broadcast_confirmed_seconds_count` grew); answers the scrape that shows it.
    pub fn wait_confirmed_after(&self, since: &HaxMetrics, limit: Duration) -> Option<HaxMetrics> {
        let name = "hax_broadcast_confirmed_seconds_count";
        let was = since.value(name, None);
        let until = Instant::now() + limit;
        loop {
            let m = self.hax_metrics();
            if m.value(name, None) > was {
                return Some(m);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// fid string → (state, pid).
pub type ProcessRecords = BTreeMap<String, (String, u64)>;

/// `processes/<fid>` records, from one recursive GET, and the Consul index.
pub fn process_records(
    http: &mut Http,
    index: Option<u64>,
) -> Result<(ProcessRecords, u64), String> {
    let path = match index {
        Some(i) => format!("/v1/kv/processes/?recurse&index={i}&wait=2s"),
        None => "/v1/kv/processes/?recurse".to_string(),
    };
    let r = http.get(&path)?;
    let idx = r
        .header("x-consul-index")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if r.status == 404 {
        return Ok((BTreeMap::new(), idx));
    }
    if !r.ok() {
        return Err(format!("GET {path}: HTTP {}", r.status));
    }
    let items: Vec<Value> =
        serde_json::from_slice(&r.body).map_err(|e| format!("GET {path}: {e}"))?;
    let mut out = BTreeMap::new();
    for it in items {
        let key = it["Key"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("processes/")
            .to_string();
        let raw = it["Value"].as_str().unwrap_or("");
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        out.insert(
            key,
            (
                v["state"].as_str().unwrap_or("").to_string(),
                v["pid"].as_u64().unwrap_or(0),
            ),
        );
    }
    Ok((out, idx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_http_counts_parse_and_subtract() {
        let a = parse_http_counts(
            "# TYPE consul_api_http summary\nconsul_api_http_count 0\n\
             consul_api_http_count{method=\"PUT\",path=\"v1_txn\"} 3\n\
             consul_api_http_count{method=\"GET\",path=\"v1_kv_\"} 10\n",
        );
        assert_eq!(a.get(&("PUT".into(), "v1_txn".into())), Some(&3));
        let mut b = a.clone();
        b.insert(("PUT".into(), "v1_txn".into()), 7);
        let d = counts_delta(&a, &b);
        assert_eq!(d.len(), 1);
        assert_eq!(d.get(&("PUT".into(), "v1_txn".into())), Some(&4));
    }
}
