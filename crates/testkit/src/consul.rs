//! Real Consul for tests and benchmarks: agents and clusters on 127.0.0.1.
//!
//! - [`consul_bin`]: `$HAX_CONSUL_BIN`, else the path `scripts/install-consul` prints.
//! - [`shared_dev_agent`]: one dev agent per test binary (use [`unique_prefix`] for KV keys);
//!   [`ConsulAgent::dev`] / [`ConsulAgent::dev_with`] for a dedicated agent (extra HCL, e.g.
//!   watches), [`DevAgent`] to choose its binary, directory and node name and get errors as
//!   values; [`ConsulCluster::start`] for N servers with kill/restart,
//!   [`ConsulCluster::start_with`] for named servers plus client agents.
//! - Every agent gets fresh loopback ports (retried when a port was taken meanwhile), its own
//!   temp dir (config, data, `consul.log`), is killed and cleaned on drop, prints its log tail
//!   when dropped during a panic, and is tied to the test process with `PR_SET_PDEATHSIG` so no
//!   agent outlives it (not even the never-dropped shared one).
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::ConsulClient;
use crate::process::{
    free_port, free_port_with, kill_and_reap, lock, log_tail, scratch_dir, spawn_tied, wait_until,
};

/// How long an agent or cluster may take to elect a leader before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 60;

// ---------------------------------------------------------------------------------------------
// The consul binary

/// The consul binary: `$HAX_CONSUL_BIN` if set, else what `scripts/install-consul` prints (it
/// builds Consul on the first run on a machine, which takes minutes; progress on stderr).
/// Panics when there is none; see [`try_consul_bin`].
pub fn consul_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| try_consul_bin().unwrap_or_else(|e| panic!("{e}")))
}

/// [`consul_bin`], with the reason as the error when there is none.
pub fn try_consul_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("HAX_CONSUL_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("HAX_CONSUL_BIN={} is not a file", p.display()))
        };
    }
    let script = crate::repo_root().join("scripts/install-consul");
    // Retried: the script's `consul version | head -1 | grep -q` check under pipefail can
    // fail spuriously (SIGPIPE).
    let mut attempt = 0;
    let out = loop {
        attempt += 1;
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            break out;
        }
        if attempt >= 3 {
            return Err(format!("{} failed ({})", script.display(), out.status));
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let p = PathBuf::from(path);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} printed {stdout:?}, not a binary path",
            script.display()
        ))
    }
}

/// The first line of `consul version` ("unknown" if it cannot be run).
pub fn consul_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// Ports

/// The ports one agent listens on (DNS and gRPC are disabled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub http: u16,
    pub server: u16,
    pub serf_lan: u16,
    pub serf_wan: u16,
}

impl Ports {
    pub fn allocate() -> Ports {
        Ports {
            http: free_port(),
            server: free_port(),
            serf_lan: free_port_with(true),
            serf_wan: free_port_with(true),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            format!("-http-port={}", self.http),
            "-dns-port=-1".into(),
            format!("-server-port={}", self.server),
            format!("-serf-lan-port={}", self.serf_lan),
            format!("-serf-wan-port={}", self.serf_wan),
            "-grpc-port=-1".into(),
            "-grpc-tls-port=-1".into(),
        ]
    }
}

/// Starts `bin` (consul) with `args`, stdout and stderr appended to `log`.
fn spawn_consul(bin: &Path, args: &[String], log: &Path) -> Result<Child, String> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("open {}: {e}", log.display()))?;
    let _ = writeln!(f, "=== {} {}", bin.display(), args.join(" "));
    let err = f.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(f).stderr(err);
    spawn_tied(cmd).map_err(|e| format!("spawn {}: {e}", bin.display()))
}

enum StartFailure {
    /// A port was taken between allocation and bind: retry with new ports.
    PortConflict,
    Fatal(String),
}

/// Why `child` exited during start-up.
fn exited(child: &mut Child, log: &Path) -> Option<StartFailure> {
    let status = child.try_wait().ok().flatten()?;
    let tail = log_tail(log, LOG_TAIL_LINES);
    Some(if tail.contains("address already in use") {
        StartFailure::PortConflict
    } else {
        StartFailure::Fatal(format!(
            "consul exited ({status}) while starting; {}:\n{tail}",
            log.display()
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// One agent

/// A `consul agent -dev` on 127.0.0.1 (in-memory server, its own leader), killed on drop.
pub struct ConsulAgent {
    name: String,
    ports: Ports,
    dir: PathBuf,
    /// Whether `dir` is the kit's (removed on drop) or the caller's.
    own_dir: bool,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    client: ConsulClient,
}

/// How to start a dev agent: [`ConsulAgent::dev`] and its variants for tests, or
/// [`DevAgent::start`] where a failure must not panic (the bench).
#[derive(Clone, Debug, Default)]
pub struct DevAgent {
    /// The node name (default `hax-dev-<pid>-<n>`).
    pub node: Option<String>,
    /// HCL added to the configuration.
    pub hcl: String,
    /// JSON configuration in a second file (its `acl.tokens.initial_management`, if any, is
    /// the token of the agent's client).
    pub json: Option<Value>,
    /// A fixed HTTP port (default: a free one).
    pub http_port: Option<u16>,
    /// Where the configuration and `consul.log` go (default: a scratch directory, removed
    /// when the agent is dropped; a given one is kept).
    pub dir: Option<PathBuf>,
    /// The consul binary (default [`consul_bin`]).
    pub bin: Option<PathBuf>,
}

impl DevAgent {
    fn start_or_panic(&self) -> ConsulAgent {
        self.start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the agent and waits until it is ready (leader elected, own node in the catalog);
    /// a port taken meanwhile is retried with new ports.
    pub fn start(&self) -> Result<ConsulAgent, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = self.node.clone().unwrap_or_else(|| {
            format!(
                "hax-dev-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            )
        });
        let bin = match &self.bin {
            Some(b) => b.clone(),
            None => try_consul_bin()?,
        };
        let (dir, own_dir) = match &self.dir {
            Some(d) => {
                fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
                (d.clone(), false)
            }
            None => (scratch_dir(&name), true),
        };
        let remove_dir = || {
            if own_dir {
                let _ = fs::remove_dir_all(&dir);
            }
        };
        let config = dir.join("config.hcl");
        fs::write(
            &config,
            format!("disable_update_check = true\n{}\n", self.hcl),
        )
        .map_err(|e| format!("write {}: {e}", config.display()))?;
        let json_config = dir.join("extra.json");
        if let Some(extra) = &self.json {
            fs::write(&json_config, extra.to_string())
                .map_err(|e| format!("write {}: {e}", json_config.display()))?;
        }
        let log = dir.join("consul.log");
        for attempt in 1..=START_ATTEMPTS {
            let mut ports = Ports::allocate();
            if let Some(h) = self.http_port {
                ports.http = h;
            }
            let mut args: Vec<String> = vec![
                "agent".into(),
                "-dev".into(),
                format!("-node={name}"),
                "-bind=127.0.0.1".into(),
                "-client=127.0.0.1".into(),
                format!("-config-file={}", config.display()),
            ];
            if self.json.is_some() {
                args.push(format!("-config-file={}", json_config.display()));
            }
            args.extend(ports.args());
            let mut child = spawn_consul(&bin, &args, &log).inspect_err(|_| remove_dir())?;
            let mut client = ConsulClient::new(&format!("http://127.0.0.1:{}", ports.http));
            // With ACLs on (default deny) the harness itself needs the management token.
            if let Some(t) = self
                .json
                .as_ref()
                .and_then(|j| j["acl"]["tokens"]["initial_management"].as_str())
            {
                client = client.with_token(t);
            }
            let deadline = Instant::now() + START_TIMEOUT;
            let failure = loop {
                if let Some(f) = exited(&mut child, &log) {
                    break f;
                }
                let leader = client.leader().unwrap_or_default();
                if !leader.is_empty()
                    && client
                        .get(&format!("/v1/catalog/node/{name}"))
                        .is_ok_and(|r| r.ok() && r.text().trim() != "null")
                {
                    return Ok(ConsulAgent {
                        name,
                        ports,
                        dir,
                        own_dir,
                        log,
                        child: Mutex::new(Some(child)),
                        client,
                    });
                }
                if Instant::now() > deadline {
                    break StartFailure::Fatal(format!(
                        "consul dev agent {name} not ready after {START_TIMEOUT:?}; {}:\n{}",
                        log.display(),
                        log_tail(&log, LOG_TAIL_LINES)
                    ));
                }
                thread::sleep(Duration::from_millis(25));
            };
            kill_and_reap(&mut child);
            match failure {
                StartFailure::PortConflict if attempt < START_ATTEMPTS => {
                    eprintln!("consul dev agent {name}: a port was taken, retrying with new ports");
                }
                StartFailure::PortConflict => {
                    remove_dir();
                    return Err(format!("consul dev agent {name}: ports kept being taken"));
                }
                StartFailure::Fatal(msg) => {
                    remove_dir(); // the message has the log tail
                    return Err(msg);
                }
            }
        }
        unreachable!()
    }
}

impl ConsulAgent {
    /// A dedicated dev agent, ready (leader elected, own node in the catalog).
    pub fn dev() -> ConsulAgent {
        Self::dev_with("")
    }

    /// A dedicated dev agent with extra HCL configuration, e.g. a `watches = [...]` stanza.
    ///
    /// Consul 1.16 quirk: in HCL a watch's `http_handler_config { header = { "h" = ["v"] } }`
    /// with a one-element list fails to decode ("source data must be an array or slice, got
    /// string"); use [`dev_with_json`](Self::dev_with_json) for headers.
    pub fn dev_with(extra_hcl: &str) -> ConsulAgent {
        DevAgent {
            hcl: extra_hcl.to_string(),
            ..DevAgent::default()
        }
        .start_or_panic()
    }

    /// A dedicated dev agent with extra JSON configuration (a second config file), e.g.
    /// `json!({"watches": [{"type": "key", "key": "k", "handler_type": "http",
    /// "http_handler_config": {"path": sink.url_for("/k"), "header": {"x": ["y"]}}}]})`.
    pub fn dev_with_json(extra: &Value) -> ConsulAgent {
        DevAgent {
            json: Some(extra.clone()),
            ..DevAgent::default()
        }
        .start_or_panic()
    }

    /// A dev agent with JSON configuration, a chosen node name and, when `extra` sets
    /// `ports.http`, that HTTP port (for tests where a client waits for Consul to appear).
    pub fn dev_with_json_named(extra: &Value, node: &str) -> ConsulAgent {
        DevAgent {
            node: Some(node.to_string()),
            json: Some(extra.clone()),
            http_port: extra["ports"]["http"].as_u64().map(|p| p as u16),
            ..DevAgent::default()
        }
        .start_or_panic()
    }

    pub fn node_name(&self) -> &str {
        &self.name
    }
    pub fn ports(&self) -> Ports {
        self.ports
    }
    /// "127.0.0.1:P"
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.http)
    }
    /// "http://127.0.0.1:P"
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.http)
    }
    /// A client for this agent's HTTP API (cheap to clone).
    pub fn client(&self) -> &ConsulClient {
        &self.client
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }
    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(|c| c.id())
    }
    /// Prints this agent's log tail if the current test panics while the guard lives (for the
    /// shared agent, which is never dropped).
    pub fn log_on_panic(&self) -> LogOnPanic<'_> {
        LogOnPanic(self)
    }

    /// SIGKILLs the agent (idempotent).
    pub fn kill(&self) {
        if let Some(mut c) = lock(&self.child).take() {
            kill_and_reap(&mut c);
        }
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "---- consul agent {} ({}), last {LOG_TAIL_LINES} lines of {}:\n{}\n----",
                self.name,
                self.http_url(),
                self.log.display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        if self.own_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// See [`ConsulAgent::log_on_panic`].
pub struct LogOnPanic<'a>(&'a ConsulAgent);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "---- consul agent {} ({}), last {LOG_TAIL_LINES} lines of {}:\n{}\n----",
                self.0.name,
                self.0.http_url(),
                self.0.log.display(),
                self.0.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

static SHARED: OnceLock<ConsulAgent> = OnceLock::new();

extern "C" {
    fn atexit(cb: extern "C" fn()) -> c_int;
}

extern "C" fn cleanup_shared_agent() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(a) = SHARED.get() {
            if let Ok(mut child) = a.child.try_lock() {
                if let Some(mut c) = child.take() {
                    kill_and_reap(&mut c);
                }
            }
            let _ = fs::remove_dir_all(&a.dir);
        }
    });
}

/// The dev agent shared by all tests of this test binary, started on first use. Keep tests
/// apart with [`unique_prefix`] keys and unique service ids. It is killed (and its directory
/// removed) when the test process exits, and SIGKILLed by the kernel if the process dies.
pub fn shared_dev_agent() -> &'static ConsulAgent {
    SHARED.get_or_init(|| {
        let agent = ConsulAgent::dev();
        // SAFETY: registers a plain extern "C" function that does not unwind.
        unsafe { atexit(cleanup_shared_agent) };
        agent
    })
}

/// A KV prefix private to one test: "hax-test/<test_name>-<pid>-<n>/" (ends with '/').
pub fn unique_prefix(test_name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("hax-test/{name}-{}-{n}/", std::process::id())
}

// ---------------------------------------------------------------------------------------------
// Clusters

struct ClusterMember {
    name: String,
    /// A server (else a client agent joined to the servers).
    server: bool,
    ports: Ports,
    args: Vec<String>,
    /// This agent's own JSON configuration file (`{}` until [`ConsulCluster::configure_agent`]).
    own_config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    client: ConsulClient,
}

/// What [`ConsulCluster::start_with`] starts.
#[derive(Clone, Debug, Default)]
pub struct ClusterSpec {
    /// Node names of the servers (`-server -bootstrap-expect=<their number>`); at least one.
    pub servers: Vec<String>,
    /// Node names of client agents, each retry-joining the servers.
    pub clients: Vec<String>,
    /// HCL added to every agent's configuration (e.g. an `autopilot { ... }` block).
    pub extra_hcl: String,
}

/// Consul servers on 127.0.0.1 (`-server -bootstrap-expect=N`, own data dirs and ports,
/// `raft_multiplier = 1`), each retry-joining the others, and optionally client agents joined to
/// them. Agents are indexed servers first, then clients. Killed and removed on drop.
pub struct ConsulCluster {
    dir: PathBuf,
    servers: Vec<ClusterMember>,
}

impl ConsulCluster {
    /// Starts `n` servers and waits until all of them know the same leader.
    pub fn start(n: usize) -> ConsulCluster {
        assert!(n >= 1);
        Self::start_inner(n, &ClusterSpec::default())
    }

    /// Starts the servers and clients of `spec` (node names as given) and waits until every
    /// agent knows the same leader and every client is in the catalog.
    pub fn start_with(spec: &ClusterSpec) -> ConsulCluster {
        assert!(!spec.servers.is_empty(), "a cluster needs a server");
        Self::start_inner(spec.servers.len(), spec)
    }

    fn start_inner(n: usize, spec: &ClusterSpec) -> ConsulCluster {
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let names: Vec<(String, bool)> = (0..n)
            .map(|i| {
                let name = spec
                    .servers
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("hax-srv-{id}-{i}"));
                (name, true)
            })
            .chain(spec.clients.iter().map(|c| (c.clone(), false)))
            .collect();
        for attempt in 1..=START_ATTEMPTS {
            let dir = scratch_dir(&format!("cluster-{id}"));
            let ports: Vec<Ports> = names.iter().map(|_| Ports::allocate()).collect();
            let config = dir.join("config.hcl");
            fs::write(
                &config,
                format!(
                    "disable_update_check = true\n\
                     retry_interval = \"1s\"\n\
                     performance {{ raft_multiplier = 1 }}\n{}\n",
                    spec.extra_hcl
                ),
            )
            .expect("write config.hcl");
            let mut servers = Vec::new();
            for (i, (p, (name, server))) in ports.iter().zip(&names).enumerate() {
                let data = dir.join(format!("data-{i}"));
                fs::create_dir_all(&data).expect("create data dir");
                let own_config = dir.join(format!("agent-{i}.json"));
                fs::write(&own_config, "{}").expect("write the agent's own config");
                let mut args: Vec<String> = vec!["agent".into()];
                if *server {
                    args.push("-server".into());
                    args.push(format!("-bootstrap-expect={n}"));
                }
                args.extend([
                    format!("-node={name}"),
                    "-bind=127.0.0.1".into(),
                    "-client=127.0.0.1".into(),
                    format!("-data-dir={}", data.display()),
                    format!("-config-file={}", config.display()),
                    format!("-config-file={}", own_config.display()),
                ]);
                args.extend(p.args());
                for (j, q) in ports.iter().enumerate().take(n) {
                    if j != i {
                        args.push(format!("-retry-join=127.0.0.1:{}", q.serf_lan));
                    }
                }
                let log = dir.join(format!("consul-{i}.log"));
                let client = ConsulClient::new(&format!("http://127.0.0.1:{}", p.http));
                servers.push(ClusterMember {
                    name: name.clone(),
                    server: *server,
                    ports: *p,
                    args,
                    own_config,
                    log,
                    child: None,
                    client,
                });
            }
            let mut cluster = ConsulCluster { dir, servers };
            for s in &mut cluster.servers {
                s.child = Some(
                    spawn_consul(consul_bin(), &s.args, &s.log).unwrap_or_else(|e| panic!("{e}")),
                );
            }
            let deadline = Instant::now() + START_TIMEOUT;
            let failure = loop {
                let dead = cluster
                    .servers
                    .iter_mut()
                    .find_map(|s| exited(s.child.as_mut()?, &s.log));
                if let Some(f) = dead {
                    break f;
                }
                if cluster.agreed_leader().is_some() && cluster.clients_in_catalog() {
                    return cluster;
                }
                if Instant::now() > deadline {
                    break StartFailure::Fatal(format!(
                        "{n}-server cluster ({} clients): no leader after {START_TIMEOUT:?}",
                        spec.clients.len()
                    ));
                }
                thread::sleep(Duration::from_millis(50));
            };
            match failure {
                StartFailure::PortConflict if attempt < START_ATTEMPTS => {
                    eprintln!("consul cluster: a port was taken, restarting with new ports");
                    drop(cluster);
                }
                StartFailure::PortConflict => panic!("consul cluster: ports kept being taken"),
                StartFailure::Fatal(msg) => panic!("{msg}"), // the cluster's drop prints logs
            }
        }
        unreachable!()
    }

    /// Every client agent is registered in the catalog (as its servers see it).
    fn clients_in_catalog(&self) -> bool {
        let c = &self.servers[0].client;
        self.servers.iter().filter(|m| !m.server).all(|m| {
            c.get(&format!("/v1/catalog/node/{}", m.name))
                .is_ok_and(|r| r.ok() && r.text().trim() != "null")
        })
    }

    /// Writes agent `i`'s own JSON configuration file (kept across [`restart`](Self::restart))
    /// and, if it runs, has it reload its configuration (e.g. to add `watches`).
    pub fn configure_agent(&self, i: usize, config: &Value) -> Result<(), String> {
        let m = &self.servers[i];
        fs::write(&m.own_config, config.to_string())
            .map_err(|e| format!("write {}: {e}", m.own_config.display()))?;
        if m.child.is_some() {
            m.client
                .put("/v1/agent/reload", b"")?
                .expect_ok("agent reload")?;
        }
        Ok(())
    }

    /// Whether agent `i` is a server (else a client agent).
    pub fn is_server(&self, i: usize) -> bool {
        self.servers[i].server
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The pid of agent `i` (None: killed).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].child.as_ref().map(|c| c.id())
    }
    pub fn node_name(&self, i: usize) -> &str {
        &self.servers[i].name
    }
    pub fn ports(&self, i: usize) -> Ports {
        self.servers[i].ports
    }
    pub fn http_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.servers[i].ports.http)
    }
    pub fn client(&self, i: usize) -> &ConsulClient {
        &self.servers[i].client
    }
    pub fn is_live(&self, i: usize) -> bool {
        self.servers[i].child.is_some()
    }
    pub fn live_indices(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.is_live(i)).collect()
    }
    /// The HTTP URL of some running server.
    pub fn any_live_http_url(&self) -> String {
        let i = *self
            .live_indices()
            .first()
            .expect("no live server in the cluster");
        self.http_url(i)
    }
    pub fn any_live_client(&self) -> &ConsulClient {
        let i = *self
            .live_indices()
            .first()
            .expect("no live server in the cluster");
        self.client(i)
    }

    fn index_of_server_addr(&self, addr: &str) -> Option<usize> {
        let port: u16 = addr.rsplit(':').next()?.parse().ok()?;
        self.servers
            .iter()
            .position(|s| s.server && s.ports.server == port)
    }

    /// The current leader as seen by the first live server that knows one.
    pub fn leader_index(&self) -> Option<usize> {
        self.live_indices().into_iter().find_map(|i| {
            let leader = self.client(i).leader().ok()?;
            self.index_of_server_addr(&leader)
        })
    }

    /// Some(leader) if every live agent reports the same, live, leader.
    fn agreed_leader(&self) -> Option<usize> {
        let mut seen = None;
        for i in self.live_indices() {
            let leader = self.client(i).leader().ok()?;
            let l = self.index_of_server_addr(&leader)?;
            if seen.is_some_and(|s| s != l) || !self.is_live(l) {
                return None;
            }
            seen = Some(l);
        }
        seen
    }

    /// Waits until all live agents agree on a live leader; returns its index.
    pub fn wait_for_leader(&self, timeout: Duration) -> usize {
        wait_until(timeout, || self.agreed_leader()).unwrap_or_else(|| {
            let views: Vec<String> = self
                .live_indices()
                .into_iter()
                .map(|i| format!("{}: {:?}", i, self.client(i).leader()))
                .collect();
            panic!("no agreed leader after {timeout:?}: {}", views.join(", "))
        })
    }

    /// `/v1/status/peers` as seen by server `i` (raft voters, "127.0.0.1:<server port>").
    pub fn raft_peers(&self, i: usize) -> Result<Vec<String>, String> {
        self.client(i).peers()
    }

    /// SIGKILLs agent `i` (its data dir stays for [`restart`](Self::restart)).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            kill_and_reap(&mut c);
        }
    }

    /// Starts agent `i` again with the same data dir, ports and configuration; returns once its HTTP API
    /// answers (rejoining the cluster is the caller's to wait for).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let s = &mut self.servers[i];
        let mut child =
            spawn_consul(consul_bin(), &s.args, &s.log).unwrap_or_else(|e| panic!("{e}"));
        let ok = wait_until(START_TIMEOUT, || {
            if let Some(f) = exited(&mut child, &s.log) {
                return Some(Err(match f {
                    StartFailure::PortConflict => {
                        format!("agent {i}: its port was taken meanwhile")
                    }
                    StartFailure::Fatal(m) => m,
                }));
            }
            s.client.get("/v1/status/leader").ok().map(|_| Ok(()))
        });
        s.child = Some(child);
        match ok {
            Some(Ok(())) => {}
            Some(Err(m)) => panic!("restart of agent {i}: {m}"),
            None => panic!("restart of agent {i}: HTTP API not up after {START_TIMEOUT:?}"),
        }
    }

    pub fn log_path(&self, i: usize) -> &Path {
        &self.servers[i].log
    }
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        log_tail(&self.servers[i].log, n)
    }
}

impl Drop for ConsulCluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
        if thread::panicking() {
            for (i, s) in self.servers.iter().enumerate() {
                eprintln!(
                    "---- consul {} {i} {} (http {}, server {}), last {} lines of {}:\n{}\n----",
                    if s.server { "server" } else { "client" },
                    s.name,
                    s.ports.http,
                    s.ports.server,
                    LOG_TAIL_LINES / 2,
                    s.log.display(),
                    log_tail(&s.log, LOG_TAIL_LINES / 2)
                );
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
