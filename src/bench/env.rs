//! What every scenario runs against: a real Consul dev agent (free loopback ports, its own
//! temp dir, Prometheus-style cumulative metrics on) with a single-node cluster registered the
//! way `tests/support/single_node.rs` and `scripts/demo` do it, and the real `hax` binary.
//! Children are started through `setpriv --pdeathsig KILL` when available, so none outlives
//! the bench, and are killed on drop.
use super::http::Http;
use crate::fid::Fid;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const EP: &str = "inet:tcp:127.0.0.1@";
pub const NODE_FID: Fid = Fid::typed(b'n', 1, 2);
pub const HAX: Fid = Fid::typed(b'r', 1, 6);
pub const CONFD: Fid = Fid::typed(b'r', 1, 9);
pub const CONFD_SVC: Fid = Fid::typed(b's', 1, 0xa);
pub const CONFD_RMS: Fid = Fid::typed(b's', 1, 0xb);

/// A free TCP port on 127.0.0.1 (bind :0, read, release; never the same twice).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if port != 0 && !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Starts `cmd` so that the kernel kills it when the bench dies (setpriv --pdeathsig), with
/// stdout and stderr to `log`.
pub fn spawn_logged(
    program: &Path,
    args: &[String],
    envs: &[(&str, String)],
    log: &Path,
) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = if Path::new("/usr/bin/setpriv").exists() {
        let mut c = Command::new("/usr/bin/setpriv");
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    spawner()
        .and_then(|tx| {
            let (reply_tx, reply_rx) = std::sync::mpsc::channel();
            tx.send((cmd, reply_tx)).ok()?;
            reply_rx.recv().ok()
        })
        .unwrap_or_else(|| Err(std::io::Error::other("the spawner thread is gone")))
        .map_err(|e| format!("cannot start {}: {e}", program.display()))
}

type SpawnReq = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// The thread that starts Consul and hax: created before [`lower_peer_priority`] lowers the
/// main thread's priority, so that they run at the priority the bench was started with (a
/// process inherits the nice value of the thread that forks it).
fn spawner() -> Option<std::sync::mpsc::Sender<SpawnReq>> {
    static SPAWNER: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<SpawnReq>>> =
        std::sync::OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnReq>();
        let _ = std::thread::Builder::new()
            .name("bench-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        Mutex::new(tx)
    });
    Some(tx.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

/// The simulated Motr processes stand for processes on other machines: run them (every thread
/// the main thread creates from now on) under `SCHED_IDLE`, so that they only take the CPU
/// hax and Consul leave, and hax's figures are not its share of two cores among a thousand
/// simulator threads. Call it first thing in `main`, before other threads exist; answers
/// what was done.
pub fn lower_peer_priority(idle: bool) -> String {
    if !idle {
        return "simulated processes scheduled like hax".into();
    }
    let _ = spawner();
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

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A `consul agent -dev` on loopback.
pub struct ConsulAgent {
    child: Option<Child>,
    pub node: String,
    pub http_port: u16,
    pub log: PathBuf,
    pub args: Vec<String>,
}

impl ConsulAgent {
    pub fn start(bin: &Path, dir: &Path, node: &str) -> Result<ConsulAgent, String> {
        let config = dir.join("consul.hcl");
        // HAX_BENCH_CONSUL_DEBUG=1: Consul logs every HTTP request (to see who asks what).
        let debug = std::env::var("HAX_BENCH_CONSUL_DEBUG").is_ok_and(|v| v == "1");
        std::fs::write(
            &config,
            format!(
                "disable_update_check = true\n{}\
                 telemetry {{\n  prometheus_retention_time = \"1h\"\n  disable_hostname = true\n}}\n",
                if debug { "log_level = \"debug\"\n" } else { "" }
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = dir.join("consul.log");
        for attempt in 1..=3 {
            let http_port = free_port();
            let args: Vec<String> = vec![
                "agent".into(),
                "-dev".into(),
                format!("-node={node}"),
                "-bind=127.0.0.1".into(),
                "-client=127.0.0.1".into(),
                format!("-http-port={http_port}"),
                "-dns-port=-1".into(),
                format!("-server-port={}", free_port()),
                format!("-serf-lan-port={}", free_port()),
                format!("-serf-wan-port={}", free_port()),
                "-grpc-port=-1".into(),
                "-grpc-tls-port=-1".into(),
                format!("-config-file={}", config.display()),
            ];
            let child = spawn_logged(bin, &args, &[], &log)?;
            let mut agent = ConsulAgent {
                child: Some(child),
                node: node.to_string(),
                http_port,
                log: log.clone(),
                args,
            };
            let mut http = agent.client();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(Ok(Some(status))) = agent.child.as_mut().map(|c| c.try_wait()) {
                    let t = tail(&agent.log, 20);
                    if t.contains("address already in use") && attempt < 3 {
                        break;
                    }
                    return Err(format!("consul exited ({status}) while starting:\n{t}"));
                }
                let leader = http
                    .get("/v1/status/leader")
                    .map(|r| r.text())
                    .unwrap_or_default();
                let registered = http
                    .get(&format!("/v1/catalog/node/{node}"))
                    .is_ok_and(|r| r.ok() && r.text().trim() != "null");
                if leader.contains("127.0.0.1") && registered {
                    return Ok(agent);
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "consul not ready after 30 s:\n{}",
                        tail(&agent.log, 20)
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err("consul: ports kept being taken".into())
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// A new client (its own kept-alive connection).
    pub fn client(&self) -> Http {
        Http::new(&self.addr(), Duration::from_secs(30)).expect("loopback address")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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

/// Endpoint ports of the registered processes.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub hax: u16,
    pub confd: u16,
}

/// Registers hax and a confd (services with passing TTL checks) and the configuration tree,
/// as `tests/support/single_node.rs::register_cluster` does.
pub fn register_cluster(http: &mut Http, node: &str, ports: &Ports) -> Result<(), String> {
    let mut put = |path: &str, body: &Value| -> Result<(), String> {
        let r = http.put(path, body.to_string().as_bytes())?;
        if !r.ok() {
            return Err(format!("PUT {path}: HTTP {} {}", r.status, r.text()));
        }
        Ok(())
    };
    for (id, name, port) in [(HAX, "hax", ports.hax), (CONFD, "confd", ports.confd)] {
        put(
            "/v1/agent/service/register",
            &json!({"ID": id.to_string(), "Name": name, "Address": EP, "Port": port,
                    "Check": {"CheckID": format!("service:{id}"), "TTL": "3600s", "Status": "passing"}}),
        )?;
    }
    let base = format!("m0conf/nodes/{NODE_FID}");
    let mut kv = |k: String, v: Value| put(&format!("/v1/kv/{k}"), &v);
    kv(
        base.clone(),
        json!({"name": node, "state": "M0_NC_UNKNOWN"}),
    )?;
    let procs: [(Fid, &str, u16, Vec<(Fid, &str)>); 2] = [
        (
            HAX,
            "hax",
            ports.hax,
            vec![
                (Fid::typed(b's', 1, 7), "ha"),
                (Fid::typed(b's', 1, 8), "rms"),
            ],
        ),
        (
            CONFD,
            "confd",
            ports.confd,
            vec![(CONFD_SVC, "confd"), (CONFD_RMS, "rms")],
        ),
    ];
    for (p, name, port, svcs) in procs {
        kv(
            format!("{base}/processes/{p}"),
            json!({"name": name, "endpoint": format!("{EP}{port}"), "state": "M0_NC_UNKNOWN"}),
        )?;
        for (s, t) in svcs {
            kv(
                format!("{base}/processes/{p}/services/{s}"),
                json!({"type": t, "state": "M0_NC_UNKNOWN"}),
            )?;
        }
    }
    Ok(())
}

/// The arguments and environment hax runs with in every scenario.
pub fn hax_command(
    consul: &str,
    node: &str,
    http_port: u16,
) -> (Vec<String>, Vec<(&'static str, String)>) {
    let args = [
        "--consul",
        consul,
        "--node",
        node,
        "--http-port",
        &http_port.to_string(),
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
    .collect();
    let envs = vec![
        ("HAX_LOG", "info".to_string()),
        ("HAX_STANDIN_RPC_TIMEOUT_MS", "200".to_string()),
    ];
    (args, envs)
}

/// Consul + registered cluster + a running hax.
pub struct Env {
    pub consul: ConsulAgent,
    hax: Option<Child>,
    pub hax_log: PathBuf,
    pub hax_http_port: u16,
    pub ports: Ports,
    pub dir: PathBuf,
}

impl Env {
    /// Starts Consul, registers the cluster, starts hax and waits for `hax: ready`.
    pub fn start(consul_bin: &Path, hax_bin: &Path, dir: &Path, tag: &str) -> Result<Env, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let node = format!("bench-{tag}");
        let consul = ConsulAgent::start(consul_bin, dir, &node)?;
        let ports = Ports {
            hax: free_port(),
            confd: free_port(),
        };
        register_cluster(&mut consul.client(), &node, &ports)?;
        let hax_http_port = free_port();
        let (args, envs) = hax_command(&consul.addr(), &node, hax_http_port);
        let hax_log = dir.join("hax.log");
        let child = spawn_logged(hax_bin, &args, &envs, &hax_log)?;
        let mut env = Env {
            consul,
            hax: Some(child),
            hax_log,
            hax_http_port,
            ports,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&env.hax_log).unwrap_or_default();
            if text.contains("hax: ready") {
                return Ok(env);
            }
            if let Some(Ok(Some(st))) = env.hax.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "hax exited ({st}) before it was ready:\n{}",
                    tail(&env.hax_log, 30)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "hax not ready after 30 s:\n{}",
                    tail(&env.hax_log, 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn hax_pid(&self) -> u32 {
        self.hax.as_ref().map(|c| c.id()).unwrap_or(0)
    }
    /// hax's HA endpoint, for simulated processes.
    pub fn endpoint(&self) -> String {
        format!("{EP}{}", self.ports.hax)
    }
    pub fn hax_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.hax_http_port)
    }
    /// A client of hax's watch endpoint.
    pub fn hax_client(&self) -> Http {
        Http::new(&self.hax_url(), Duration::from_secs(30)).expect("loopback address")
    }
    pub fn hax_running(&mut self) -> bool {
        self.hax
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
    pub fn hax_log_text(&self) -> String {
        std::fs::read_to_string(&self.hax_log).unwrap_or_default()
    }

    /// Bytes in hax's log so far (an offset for [`Env::hax_log_since`]).
    pub fn hax_log_len(&self) -> usize {
        std::fs::metadata(&self.hax_log).map_or(0, |m| m.len() as usize)
    }

    /// hax's log from byte `offset` on (polled while waiting: no rereading of the whole log).
    pub fn hax_log_since(&self, offset: usize) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut text = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.hax_log) {
            if f.seek(SeekFrom::Start(offset as u64)).is_ok() {
                let _ = f.read_to_end(&mut text);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut c) = self.hax.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `processes/<fid>` records: fid string → (state, pid), from one recursive GET.
pub fn process_records(
    http: &mut Http,
    index: Option<u64>,
) -> Result<(BTreeMap<String, (String, u64)>, u64), String> {
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
