//! What one failure costs a cluster of N nodes (docs/scaling.md): real Consul agents on this
//! machine (3 servers, the rest clients), one hax per agent with its own node name, ports and
//! HA endpoint, one simulated IO server linked to each hax. For `--health-from node` and
//! `--health-from watches` side by side, a check of one node's IO server fails and passes
//! again, a few times; per change the bench takes:
//! - the bytes every hax received from Consul (`hax_consul_received_bytes_total`, all sources:
//!   watch bodies and query answers);
//! - the HTTP requests every agent served (Consul's own `consul_api_http_count`);
//! - the CPU time of the three servers (`/proc`);
//! - the time until the linked process of every node heard the note.
use crate::env::{http_counts, HttpCounts};
use crate::hax_metrics::HaxMetrics;
use crate::http::Http;
use crate::procfs::{cpu_seconds, mem};
use crate::scenarios::say;
use crate::stats::Lat;
use hax_fid::Fid;
use hax_sim::{ObjState, SimConfig, SimProcess, Timeouts};
use hax_testkit::{free_port, ClusterSpec, ConsulCluster, HaxCommand, HaxProc, NodeDef};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// What one kind of change cost, per change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cost {
    /// Changes measured (a process failure and its recovery count as two).
    pub changes: usize,
    /// Bytes all hax received from Consul, per change (idle traffic taken out).
    pub bytes_per_change: f64,
    /// HTTP requests all agents served, per change.
    pub requests_per_change: f64,
    /// CPU milliseconds of the three servers, per change.
    pub server_cpu_ms_per_change: f64,
    /// From the change to the last node's process hearing the note.
    pub heard_all: Lat,
    /// Nodes whose process did not hear a change within the limit (summed over changes).
    pub missed: usize,
}

/// One cluster size, one mode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MultinodeRun {
    pub nodes: usize,
    /// "node" or "watches".
    pub mode: String,
    /// A process's check fails, then passes again.
    pub process: Cost,
    /// A client node dies (its agent and its hax SIGKILLed).
    pub node: Cost,
    /// Idle cost: bytes per second all hax received from Consul with nothing changing.
    pub idle_bytes_per_s: f64,
    /// The same, by source (`hax_consul_received_bytes_total`'s `source` label).
    pub idle_by_source: BTreeMap<String, f64>,
    /// Idle CPU of all Consul agents together, in cores.
    pub agents_idle_cores: f64,
    /// RSS of all Consul agents together, MiB.
    pub agents_rss_mib: f64,
}

/// Bytes received from Consul by one hax, by source (the `source` label of
/// `hax_consul_received_bytes_total`); empty when hax cannot be asked.
fn bytes_received(url: &str) -> BTreeMap<String, f64> {
    HaxMetrics::read(url)
        .map(|m| m.by_label("hax_consul_received_bytes_total", "source"))
        .unwrap_or_default()
}

fn requests(c: &ConsulCluster, skip: Option<usize>) -> u64 {
    (0..c.len())
        .filter(|i| Some(*i) != skip)
        .filter_map(|i| {
            let url = c.http_url(i);
            let mut h = Http::new(&url, Duration::from_secs(5)).ok()?;
            http_counts(&mut h).ok()
        })
        .map(|counts: HttpCounts| counts.values().sum::<u64>())
        .sum()
}

fn servers_cpu(c: &ConsulCluster) -> f64 {
    (0..3).filter_map(|i| c.pid(i).and_then(cpu_seconds)).sum()
}

/// What the cluster has consumed so far: bytes received by hax, requests served by the
/// agents, CPU seconds of the servers.
#[derive(Clone)]
struct Totals {
    at: Instant,
    bytes: f64,
    by_source: BTreeMap<String, f64>,
    requests: u64,
    server_cpu: f64,
}

/// `skip`: a node left out, its agent and its hax (the one a node failure kills).
fn totals(c: &ConsulCluster, haxes: &[HaxProc], skip: Option<usize>) -> Totals {
    let mut by_source = BTreeMap::<String, f64>::new();
    for (_, h) in haxes.iter().enumerate().filter(|(i, _)| Some(*i) != skip) {
        for (k, v) in bytes_received(&h.url()) {
            *by_source.entry(k).or_default() += v;
        }
    }
    Totals {
        at: Instant::now(),
        bytes: by_source.values().sum(),
        by_source,
        requests: requests(c, skip),
        server_cpu: servers_cpu(c),
    }
}

/// The cost of `changes` changes between `a` and `b`, the idle traffic taken out.
fn cost(
    a: &Totals,
    b: &Totals,
    idle: &BTreeMap<String, f64>,
    changes: usize,
    heard: &[Duration],
    missed: usize,
) -> Cost {
    // Source by source: what came beyond that source's idle rate.
    let span = (b.at - a.at).as_secs_f64();
    let bytes: f64 = b
        .by_source
        .iter()
        .map(|(k, v)| {
            let before = a.by_source.get(k).copied().unwrap_or(0.0);
            let idle = idle.get(k).copied().unwrap_or(0.0) * span;
            (v - before - idle).max(0.0)
        })
        .sum();
    let k = changes.max(1) as f64;
    Cost {
        changes,
        bytes_per_change: bytes / k,
        requests_per_change: b.requests.saturating_sub(a.requests) as f64 / k,
        server_cpu_ms_per_change: (b.server_cpu - a.server_cpu) * 1e3 / k,
        heard_all: Lat::of(heard),
        missed,
    }
}

/// When the last process heard `fid` in `state` after `since` (None: some did not, and how
/// many).
fn heard_by_all(
    procs: &[SimProcess],
    fid: Fid,
    state: ObjState,
    since: Instant,
    limit: Duration,
) -> Result<Instant, usize> {
    let mut last = since;
    let mut missed = 0;
    for p in procs {
        match p.wait_for_note_after(fid, state, since, limit) {
            Ok(n) => last = last.max(n.at),
            Err(_) => missed += 1,
        }
    }
    if missed == 0 {
        Ok(last)
    } else {
        Err(missed)
    }
}

/// The agent configuration of `watches` mode for a node: a `service` watch of `ios` and a
/// `checks` watch, POSTing to that node's hax (the watches the original Hare had).
fn watches(hax_http_port: u16) -> serde_json::Value {
    let to = |path: &str| json!({"path": format!("http://127.0.0.1:{hax_http_port}{path}"), "method": "POST", "timeout": "10s"});
    json!({"watches": [
        {"type": "service", "service": "ios", "handler_type": "http", "http_handler_config": to("/watcher/service/ios")},
        {"type": "checks", "handler_type": "http", "http_handler_config": to("/watcher/checks")},
    ]})
}

/// Runs one size in one mode; `reps` failures (each followed by its recovery).
pub fn run(
    consul_bin: &Path,
    hax_bin: &Path,
    dir: &Path,
    n: usize,
    mode: &str,
    reps: usize,
) -> Result<MultinodeRun, String> {
    let _ = consul_bin; // the kit finds the same binary (HAX_CONSUL_BIN)
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let names: Vec<String> = (0..n).map(|i| format!("mn{i:02}")).collect();
    let spec = ClusterSpec {
        servers: names[..3.min(n)].to_vec(),
        clients: names[3.min(n)..].to_vec(),
        extra_hcl: crate::env::consul_hcl(),
    };
    say(format!(
        "multinode: {n} Consul agents, --health-from {mode}"
    ));
    let mut cluster = ConsulCluster::start_with(&spec);
    let defs: Vec<NodeDef> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let d = NodeDef::new(i, name)
                .with_hax(free_port())
                .with_ios(free_port());
            if i < 3 {
                d.with_confd(free_port())
            } else {
                d
            }
        })
        .collect();
    for (i, d) in defs.iter().enumerate() {
        d.register(cluster.client(i))?;
    }
    let mut haxes = Vec::new();
    for (i, d) in defs.iter().enumerate() {
        let hax_def = d.process("hax").ok_or("no hax")?;
        let http = free_port();
        if mode == "watches" {
            cluster.configure_agent(i, &watches(http))?;
        }
        let mut cmd = HaxCommand::new(&cluster.http_url(i), &d.name, http, hax_def.port, dir);
        cmd.bin = hax_bin.to_path_buf();
        cmd.env = vec![("HAX_LOG".into(), "info".into())];
        cmd.flags
            .extend(["--health-from".to_string(), mode.to_string()]);
        // Only the three servers campaign: the leader's node has a confd.
        if i >= 3 {
            cmd.flags
                .extend(["--campaign".to_string(), "false".to_string()]);
        }
        haxes.push(cmd.spawn()?);
    }
    for h in &haxes {
        h.wait_ready(Duration::from_secs(90))?;
    }
    let mut procs = Vec::new();
    for (d, h) in defs.iter().zip(&haxes) {
        let ios = d.process("ios").ok_or("no ios")?;
        let mut cfg = SimConfig::new(ios.fid);
        cfg.endpoint = ios.endpoint();
        cfg.services = ios.services.iter().map(|(f, _)| (*f, 2)).collect();
        cfg.timeouts = Timeouts {
            reply: Duration::from_secs(20),
            entrypoint: Duration::from_secs(60),
            ..Timeouts::default()
        };
        let p = SimProcess::connect(&h.endpoint(), cfg).map_err(|e| e.to_string())?;
        p.boot().map_err(|e| format!("{} boots: {e}", ios.fid))?;
        procs.push(p);
    }
    // Let the boot's own traffic settle, then the idle cost over 5 s.
    std::thread::sleep(Duration::from_secs(3));
    let agent_cpu = || {
        (0..cluster.len())
            .filter_map(|i| cluster.pid(i).and_then(cpu_seconds))
            .sum::<f64>()
    };
    let idle0 = totals(&cluster, &haxes, None);
    let cpu0 = agent_cpu();
    std::thread::sleep(Duration::from_secs(5));
    let idle1 = totals(&cluster, &haxes, None);
    let idle_s = (idle1.at - idle0.at).as_secs_f64();
    let idle_bytes_per_s = (idle1.bytes - idle0.bytes) / idle_s;
    let idle_by_source: BTreeMap<String, f64> = idle1
        .by_source
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - idle0.by_source.get(k).copied().unwrap_or(0.0)) / idle_s,
            )
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let agents_idle_cores = (agent_cpu() - cpu0) / idle_s;
    let agents_rss_mib = (0..cluster.len())
        .filter_map(|i| cluster.pid(i).and_then(mem))
        .map(|m| m.rss_kib as f64 / 1024.0)
        .sum();

    // A process failure: a client node's IO server check fails, then passes again.
    let limit = Duration::from_secs(30);
    let mut heard = Vec::new();
    let mut missed = 0;
    for rep in 0..reps {
        let victim = 3 + rep % (n - 3).max(1);
        let ios = defs[victim.min(n - 1)].process("ios").ok_or("no ios")?.fid;
        let check = format!("service:{ios}");
        for (state, pass) in [(ObjState::Transient, false), (ObjState::Online, true)] {
            let t0 = Instant::now();
            let c = cluster.client(victim.min(n - 1));
            if pass {
                c.check_pass(&check)
            } else {
                c.check_fail(&check)
            }?;
            match heard_by_all(&procs, ios, state, t0, limit) {
                Ok(at) => heard.push(at - t0),
                Err(m) => missed += m,
            }
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let p1 = totals(&cluster, &haxes, None);
    let process = cost(&idle1, &p1, &idle_by_source, 2 * reps, &heard, missed);

    // A node failure: the last node (a client) dies with its hax; every other node's process
    // hears its IO server TRANSIENT (Consul's failure detection included: serfHealth turns
    // critical after the gossip's probes and suspicion).
    let victim = n - 1;
    let ios = defs[victim].process("ios").ok_or("no ios")?.fid;
    let n0 = totals(&cluster, &haxes, Some(victim));
    let t0 = Instant::now();
    haxes[victim].signal_and_wait("KILL", Duration::from_secs(5));
    cluster.kill(victim);
    let others: Vec<SimProcess> = procs
        .drain(..)
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, p)| p)
        .collect();
    let (heard, missed) = match heard_by_all(
        &others,
        ios,
        ObjState::Transient,
        t0,
        Duration::from_secs(60),
    ) {
        Ok(at) => (vec![at - t0], 0),
        Err(m) => (vec![], m),
    };
    std::thread::sleep(Duration::from_secs(1));
    let n1 = totals(&cluster, &haxes, Some(victim));
    let node = cost(&n0, &n1, &idle_by_source, 1, &heard, missed);
    drop(others);
    for h in haxes.iter().filter(|h| h.exit_status().is_none()) {
        h.signal_and_wait("TERM", Duration::from_secs(10));
    }
    Ok(MultinodeRun {
        nodes: n,
        mode: mode.to_string(),
        process,
        node,
        idle_bytes_per_s,
        idle_by_source,
        agents_idle_cores,
        agents_rss_mib,
    })
}

/// The least-squares slope of log(y) on log(n): y grows as n^slope. Answers (slope, the fitted
/// y at `at`).
pub fn growth(points: &[(f64, f64)], at: f64) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let k = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / k;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / k;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let at_y = (my + slope * (at.ln() - mx)).exp();
    Some((slope, at_y))
}

#[cfg(test)]
mod tests {
    use super::growth;

    #[test]
    fn the_growth_of_a_power_law_is_its_exponent() {
        let pts: Vec<(f64, f64)> = [4.0, 8.0, 16.0, 32.0]
            .iter()
            .map(|n: &f64| (*n, 3.0 * n * n))
            .collect();
        let (slope, at) = growth(&pts, 1000.0).unwrap();
        assert!((slope - 2.0).abs() < 1e-9);
        assert!((at - 3.0e6).abs() / 3.0e6 < 1e-9);
        assert!(growth(&pts[..1], 10.0).is_none());
    }
}
