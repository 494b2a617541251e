//! Real Consul for integration tests: agents and clusters on 127.0.0.1, blocking HTTP helpers
//! and an HTTP sink for watch deliveries.
//!
//! - [`consul_bin`]: `$HAX_CONSUL_BIN`, else the path `scripts/install-consul` prints.
//! - [`shared_dev_agent`]: one dev agent per test binary (use [`unique_prefix`] for KV keys);
//!   [`ConsulAgent::dev`] / [`ConsulAgent::dev_with`] for a dedicated agent (extra HCL, e.g.
//!   watches); [`ConsulCluster::start`] for N servers with kill/restart,
//!   [`ConsulCluster::start_with`] for named servers plus client agents.
//! - Every agent gets fresh loopback ports (retried when a port was taken meanwhile), its own
//!   temp dir (config, data, `consul.log`), is killed and cleaned on drop, prints its log tail
//!   when dropped during a panic, and is tied to the test process with `PR_SET_PDEATHSIG` so no
//!   agent outlives the test binary (not even the never-dropped shared one).
//! - [`ConsulClient`]: small blocking helpers over Consul's HTTP API (ureq 2).
//! - [`WatchSink`]: records the POSTs of `handler_type = "http"` watches.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::raw::{c_int, c_ulong};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// How long an agent or cluster may take to elect a leader before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 60;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The consul binary

/// The consul binary: `$HAX_CONSUL_BIN` if set, else what `scripts/install-consul` prints (it
/// builds Consul on the first run on a machine, which takes minutes; progress on stderr).
pub fn consul_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HAX_CONSUL_BIN").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "HAX_CONSUL_BIN={} is not a file", p.display());
            return p;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-consul");
        // Retried: the script's `consul version | head -1 | grep -q` check under pipefail can
        // fail spuriously (SIGPIPE).
        let mut attempt = 0;
        let out = loop {
            attempt += 1;
            let out = Command::new(&script)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            if out.status.success() {
                break out;
            }
            assert!(attempt < 3, "{} failed ({})", script.display(), out.status);
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let p = PathBuf::from(path);
        assert!(
            p.is_file(),
            "{} printed {stdout:?}, not a binary path",
            script.display()
        );
        p
    })
}

// ---------------------------------------------------------------------------------------------
// Ports

static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A free TCP port on 127.0.0.1 (bind :0, read, release), never the same twice in a process.
/// Someone else may still grab it before the agent binds it: agent start-up retries on that.
pub fn free_port() -> u16 {
    free_port_with(false)
}

fn free_port_with(udp_too: bool) -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if udp_too && UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut used = lock(&HANDED_OUT);
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

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

// ---------------------------------------------------------------------------------------------
// Scratch directories

/// A fresh directory `$TMPDIR/hax-consul.<pid>.<tag>.<n>`; directories of dead test processes
/// are swept on first use.
fn scratch_dir(tag: &str) -> PathBuf {
    static SWEEP: Once = Once::new();
    static N: AtomicUsize = AtomicUsize::new(0);
    let tmp = std::env::temp_dir();
    SWEEP.call_once(|| {
        for e in fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("hax-consul.") else {
                continue;
            };
            let pid = rest.split('.').next().unwrap_or("");
            if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    });
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = tmp.join(format!("hax-consul.{}.{tag}.{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = match fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Spawning agents tied to the test process

extern "C" {
    fn prctl(option: c_int, ...) -> c_int;
    fn getppid() -> c_int;
    fn atexit(cb: extern "C" fn()) -> c_int;
}
const PR_SET_PDEATHSIG: c_int = 1;
const SIGKILL: c_ulong = 9;

/// Spawns `cmd` so that the kernel SIGKILLs it when the test process dies, however it dies.
/// PR_SET_PDEATHSIG fires when the *thread* that forked exits, so every agent is forked by one
/// dedicated thread that lives as long as the process.
fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("consul-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and thread) never ends.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the consul-spawner thread");
        Mutex::new(tx)
    });
    let parent = std::process::id() as c_int;
    // SAFETY: the closure only makes async-signal-safe system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if getppid() != parent {
                return Err(io::Error::other("test process already gone"));
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    lock(spawner)
        .send((cmd, reply))
        .expect("consul-spawner thread is gone");
    answer.recv().expect("consul-spawner thread is gone")
}

/// Starts consul with `args`, stdout and stderr appended to `log`.
fn spawn_consul(args: &[String], log: &Path) -> Child {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let _ = writeln!(f, "=== {} {}", consul_bin().display(), args.join(" "));
    let err = f.try_clone().expect("dup log fd");
    let mut cmd = Command::new(consul_bin());
    cmd.args(args).stdin(Stdio::null()).stdout(f).stderr(err);
    spawn_tied(cmd).unwrap_or_else(|e| panic!("spawn {}: {e}", consul_bin().display()))
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
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

thread_local! {
    static NAME_OVERRIDE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    static HTTP_OVERRIDE: std::cell::RefCell<Option<u16>> = const { std::cell::RefCell::new(None) };
}

/// A `consul agent -dev` on 127.0.0.1 (in-memory server, its own leader), killed on drop.
pub struct ConsulAgent {
    name: String,
    ports: Ports,
    dir: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    client: ConsulClient,
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
        Self::start_dev(extra_hcl, None)
    }

    /// A dedicated dev agent with extra JSON configuration (a second config file), e.g.
    /// `json!({"watches": [{"type": "key", "key": "k", "handler_type": "http",
    /// "http_handler_config": {"path": sink.url_for("/k"), "header": {"x": ["y"]}}}]})`.
    pub fn dev_with_json(extra: &Value) -> ConsulAgent {
        Self::start_dev("", Some(extra))
    }

    /// A dev agent with JSON configuration, a chosen node name and, when `extra` sets
    /// `ports.http`, that HTTP port (for tests where a client waits for Consul to appear).
    pub fn dev_with_json_named(extra: &Value, node: &str) -> ConsulAgent {
        NAME_OVERRIDE.with(|n| *n.borrow_mut() = Some(node.to_string()));
        HTTP_OVERRIDE.with(|h| *h.borrow_mut() = extra["ports"]["http"].as_u64().map(|p| p as u16));
        let a = Self::start_dev("", Some(extra));
        NAME_OVERRIDE.with(|n| *n.borrow_mut() = None);
        HTTP_OVERRIDE.with(|h| *h.borrow_mut() = None);
        a
    }

    fn start_dev(extra_hcl: &str, extra_json: Option<&Value>) -> ConsulAgent {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = NAME_OVERRIDE
            .with(|n| n.borrow().clone())
            .unwrap_or_else(|| {
                format!(
                    "hax-dev-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                )
            });
        let dir = scratch_dir(&name);
        let config = dir.join("config.hcl");
        fs::write(
            &config,
            format!("disable_update_check = true\n{extra_hcl}\n"),
        )
        .expect("write config.hcl");
        let json_config = dir.join("extra.json");
        if let Some(extra) = extra_json {
            fs::write(&json_config, extra.to_string()).expect("write extra.json");
        }
        let log = dir.join("consul.log");
        for attempt in 1..=START_ATTEMPTS {
            let mut ports = Ports::allocate();
            if let Some(h) = HTTP_OVERRIDE.with(|h| *h.borrow()) {
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
            if extra_json.is_some() {
                args.push(format!("-config-file={}", json_config.display()));
            }
            args.extend(ports.args());
            let mut child = spawn_consul(&args, &log);
            let mut client = ConsulClient::new(&format!("http://127.0.0.1:{}", ports.http));
            // With ACLs on (default deny) the harness itself needs the management token.
            if let Some(t) =
                extra_json.and_then(|j| j["acl"]["tokens"]["initial_management"].as_str())
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
                    return ConsulAgent {
                        name,
                        ports,
                        dir,
                        log,
                        child: Mutex::new(Some(child)),
                        client,
                    };
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
                    let _ = fs::remove_dir_all(&dir);
                    panic!("consul dev agent {name}: ports kept being taken")
                }
                StartFailure::Fatal(msg) => {
                    let _ = fs::remove_dir_all(&dir); // the message has the log tail
                    panic!("{msg}")
                }
            }
        }
        unreachable!()
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
        let _ = fs::remove_dir_all(&self.dir);
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
                s.child = Some(spawn_consul(&s.args, &s.log));
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
        let mut child = spawn_consul(&s.args, &s.log);
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

// ---------------------------------------------------------------------------------------------
// HTTP

/// Polls `f` every 25 ms until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for query values).
pub fn url_encode(s: &str) -> String {
    encode(s, b"-_.~")
}

/// Percent-encodes a KV key for a URL path (keeps '/').
pub fn encode_key(key: &str) -> String {
    encode(key, b"-_.~/")
}

fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn b64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn b64_decode(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("bad base64 {s:?}: {e}"))
}

/// A response of any status (transport failures are the `Err` of the requests).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("{e} in {:?}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// X-Consul-Index
    pub fn consul_index(&self) -> Option<u64> {
        self.header("X-Consul-Index")?.parse().ok()
    }
    /// Self if 2xx, else an error naming `what`, the status and the body.
    pub fn expect_ok(self, what: &str) -> Result<HttpResponse, String> {
        if self.ok() {
            Ok(self)
        } else {
            Err(format!(
                "{what}: HTTP {} {}",
                self.status,
                self.text().trim()
            ))
        }
    }
}

/// One KV entry with its value decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub session: Option<String>,
}

impl KvPair {
    pub fn from_json(v: &Value) -> Result<KvPair, String> {
        let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        Ok(KvPair {
            key: v
                .get("Key")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("no Key in {v}"))?
                .to_string(),
            value: match v.get("Value").and_then(Value::as_str) {
                Some(s) => b64_decode(s)?,
                None => Vec::new(),
            },
            flags: u("Flags"),
            create_index: u("CreateIndex"),
            modify_index: u("ModifyIndex"),
            lock_index: u("LockIndex"),
            session: v.get("Session").and_then(Value::as_str).map(str::to_string),
        })
    }
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// `/v1/txn` operation builders.
pub fn txn_kv_set(key: &str, value: impl AsRef<[u8]>) -> Value {
    json!({"KV": {"Verb": "set", "Key": key, "Value": b64_encode(value.as_ref())}})
}
pub fn txn_kv_cas(key: &str, value: impl AsRef<[u8]>, index: u64) -> Value {
    json!({"KV": {"Verb": "cas", "Key": key, "Value": b64_encode(value.as_ref()), "Index": index}})
}
pub fn txn_kv_get(key: &str) -> Value {
    json!({"KV": {"Verb": "get", "Key": key}})
}
pub fn txn_kv_delete(key: &str) -> Value {
    json!({"KV": {"Verb": "delete", "Key": key}})
}

/// Blocking client for one Consul agent's HTTP API. Methods take paths ("/v1/...").
#[derive(Clone)]
pub struct ConsulClient {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl ConsulClient {
    /// `base_url` like "http://127.0.0.1:8500"; 2 s connect and 15 s request timeouts.
    pub fn new(base_url: &str) -> ConsulClient {
        Self::with_timeout(base_url, Duration::from_secs(15))
    }

    pub fn with_timeout(base_url: &str, timeout: Duration) -> ConsulClient {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .timeout(timeout)
            .max_idle_connections_per_host(8)
            .build();
        ConsulClient {
            base: base_url.trim_end_matches('/').to_string(),
            agent,
            token: None,
        }
    }

    /// The same client, sending `X-Consul-Token` with every request.
    pub fn with_token(mut self, token: &str) -> ConsulClient {
        self.token = Some(token.to_string());
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Any request; `Err` only when no HTTP response came back.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<HttpResponse, String> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.agent.request(method, &url);
        if let Some(t) = &self.token {
            req = req.set("X-Consul-Token", t);
        }
        let res = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(format!("{method} {url}: {e}")),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let mut body = Vec::new();
        resp.into_reader()
            .read_to_end(&mut body)
            .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    pub fn get(&self, path: &str) -> Result<HttpResponse, String> {
        self.request("GET", path, None)
    }
    pub fn put(&self, path: &str, body: &[u8]) -> Result<HttpResponse, String> {
        self.request("PUT", path, Some(body))
    }
    pub fn put_json(&self, path: &str, body: &Value) -> Result<HttpResponse, String> {
        self.put(path, body.to_string().as_bytes())
    }
    pub fn delete(&self, path: &str) -> Result<HttpResponse, String> {
        self.request("DELETE", path, None)
    }

    /// Writes `key` (errors on non-2xx or a `false` answer).
    pub fn kv_put(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), String> {
        let r = self
            .put(&format!("/v1/kv/{}", encode_key(key)), value.as_ref())?
            .expect_ok("kv put")?;
        match r.text().trim() {
            "true" => Ok(()),
            other => Err(format!("kv put {key}: Consul answered {other}")),
        }
    }

    /// Check-and-set: Ok(true) if written, Ok(false) if `index` was not the key's ModifyIndex
    /// (0: only if the key does not exist).
    pub fn kv_cas(&self, key: &str, value: impl AsRef<[u8]>, index: u64) -> Result<bool, String> {
        let r = self
            .put(
                &format!("/v1/kv/{}?cas={index}", encode_key(key)),
                value.as_ref(),
            )?
            .expect_ok("kv cas")?;
        match r.text().trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("kv cas {key}: unexpected answer {other}")),
        }
    }

    /// The entry at `key` (value decoded), None if absent.
    pub fn kv_get_pair(&self, key: &str) -> Result<Option<KvPair>, String> {
        let r = self.get(&format!("/v1/kv/{}", encode_key(key)))?;
        if r.status == 404 {
            return Ok(None);
        }
        let v = r.expect_ok("kv get")?.json()?;
        let first = v
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| format!("kv get {key}: {v}"))?;
        KvPair::from_json(first).map(Some)
    }

    /// The decoded value at `key`, None if absent.
    pub fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.kv_get_pair(key)?.map(|p| p.value))
    }

    pub fn kv_get_string(&self, key: &str) -> Result<Option<String>, String> {
        Ok(self.kv_get_pair(key)?.map(|p| p.value_str()))
    }

    /// All entries under `prefix` (values decoded), sorted by key.
    pub fn kv_list(&self, prefix: &str) -> Result<Vec<KvPair>, String> {
        let r = self.get(&format!("/v1/kv/{}?recurse", encode_key(prefix)))?;
        if r.status == 404 {
            return Ok(Vec::new());
        }
        let v = r.expect_ok("kv list")?.json()?;
        v.as_array()
            .ok_or_else(|| format!("kv list: {v}"))?
            .iter()
            .map(KvPair::from_json)
            .collect()
    }

    pub fn kv_delete(&self, key: &str) -> Result<(), String> {
        self.delete(&format!("/v1/kv/{}", encode_key(key)))?
            .expect_ok("kv delete")
            .map(drop)
    }

    pub fn kv_delete_tree(&self, prefix: &str) -> Result<(), String> {
        self.delete(&format!("/v1/kv/{}?recurse", encode_key(prefix)))?
            .expect_ok("kv delete tree")
            .map(drop)
    }

    /// `PUT /v1/txn` with `ops`; the raw response (200, 409 on a failed op, 413 when too many).
    pub fn txn(&self, ops: &[Value]) -> Result<HttpResponse, String> {
        self.put_json("/v1/txn", &Value::Array(ops.to_vec()))
    }

    /// `PUT /v1/agent/service/register` with a service definition.
    pub fn register_service(&self, definition: &Value) -> Result<(), String> {
        self.put_json("/v1/agent/service/register", definition)?
            .expect_ok("service register")
            .map(drop)
    }

    pub fn deregister_service(&self, id: &str) -> Result<(), String> {
        self.put(
            &format!("/v1/agent/service/deregister/{}", encode_key(id)),
            b"",
        )?
        .expect_ok("service deregister")
        .map(drop)
    }

    /// Sets a TTL check: `state` is "pass", "warn" or "fail".
    pub fn check_ttl(&self, check_id: &str, state: &str, note: &str) -> Result<(), String> {
        self.put(
            &format!(
                "/v1/agent/check/{state}/{}?note={}",
                encode_key(check_id),
                url_encode(note)
            ),
            b"",
        )?
        .expect_ok("check update")
        .map(drop)
    }
    pub fn check_pass(&self, check_id: &str) -> Result<(), String> {
        self.check_ttl(check_id, "pass", "")
    }
    pub fn check_fail(&self, check_id: &str) -> Result<(), String> {
        self.check_ttl(check_id, "fail", "")
    }

    fn with_filter(path: String, filter: Option<&str>) -> String {
        match filter {
            Some(f) => format!("{path}?filter={}", url_encode(f)),
            None => path,
        }
    }

    /// `GET /v1/catalog/service/<name>[?filter=...]`, raw (a bad filter is a 4xx/5xx).
    pub fn catalog_service(
        &self,
        name: &str,
        filter: Option<&str>,
    ) -> Result<HttpResponse, String> {
        self.get(&Self::with_filter(
            format!("/v1/catalog/service/{}", encode_key(name)),
            filter,
        ))
    }

    /// `GET /v1/health/service/<name>[?filter=...]`, raw.
    pub fn health_service(&self, name: &str, filter: Option<&str>) -> Result<HttpResponse, String> {
        self.get(&Self::with_filter(
            format!("/v1/health/service/{}", encode_key(name)),
            filter,
        ))
    }

    /// `/v1/status/leader`: "127.0.0.1:<server port>", or "" while there is none.
    pub fn leader(&self) -> Result<String, String> {
        let v = self
            .get("/v1/status/leader")?
            .expect_ok("status leader")?
            .json()?;
        Ok(v.as_str().unwrap_or("").to_string())
    }

    /// `/v1/status/peers`: the raft voters.
    pub fn peers(&self) -> Result<Vec<String>, String> {
        let v = self
            .get("/v1/status/peers")?
            .expect_ok("status peers")?
            .json()?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

// ---------------------------------------------------------------------------------------------
// Watch sink

/// One HTTP request received by a [`WatchSink`].
#[derive(Debug, Clone)]
pub struct Delivery {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received: Instant,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn consul_index(&self) -> Option<u64> {
        self.header("X-Consul-Index")?.parse().ok()
    }
}

struct SinkState {
    deliveries: Mutex<Vec<Delivery>>,
    arrived: Condvar,
    status: AtomicU16,
    stop: AtomicBool,
}

/// A minimal HTTP/1.1 server on 127.0.0.1:0 recording every request (method, path, headers,
/// body) and answering with an empty body and the configured status (200 by default). Point
/// `http_handler_config { path = sink.url_for("/x") }` of a watch at it.
pub struct WatchSink {
    addr: SocketAddr,
    state: Arc<SinkState>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl WatchSink {
    pub fn start() -> WatchSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind watch sink");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(SinkState {
            deliveries: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            status: AtomicU16::new(200),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let acceptor = thread::Builder::new()
            .name(format!("watch-sink-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let st = st.clone();
                    let _ =
                        thread::Builder::new()
                            .name("watch-sink-conn".into())
                            .spawn(move || {
                                let _ = serve_connection(conn, &st);
                            });
                }
            })
            .expect("spawn watch sink");
        WatchSink {
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// "http://127.0.0.1:P"
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// "http://127.0.0.1:P<path>"
    pub fn url_for(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    /// The status later requests are answered with (e.g. 500 to make deliveries fail).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.state.deliveries).clone()
    }
    pub fn count(&self) -> usize {
        lock(&self.state.deliveries).len()
    }

    /// The first delivery (already received or arriving within `timeout`) matching `pred`.
    pub fn wait_for(
        &self,
        pred: impl Fn(&Delivery) -> bool,
        timeout: Duration,
    ) -> Option<Delivery> {
        self.wait_for_since(0, pred, timeout)
    }

    /// Like [`wait_for`](Self::wait_for) but only considers deliveries number `start` and later
    /// (take `start` from [`count`](Self::count) before causing the change).
    pub fn wait_for_since(
        &self,
        start: usize,
        pred: impl Fn(&Delivery) -> bool,
        timeout: Duration,
    ) -> Option<Delivery> {
        let deadline = Instant::now() + timeout;
        let mut got = lock(&self.state.deliveries);
        let mut checked = start;
        loop {
            if let Some(d) = got.iter().skip(checked).find(|d| pred(d)) {
                return Some(d.clone());
            }
            checked = checked.max(got.len());
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            got = self
                .state
                .arrived
                .wait_timeout(got, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for WatchSink {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the acceptor
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn serve_connection(conn: TcpStream, st: &SinkState) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || st.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let mut body = Vec::new();
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                let mut chunk = vec![0; size + 2];
                r.read_exact(&mut chunk)?;
                if size == 0 {
                    break; // (trailers are not supported)
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            r.read_exact(&mut body)?;
        }
        let close = header("connection").is_some_and(|v| v.contains("close"));
        let status = st.status.load(Ordering::SeqCst);
        {
            let mut got = lock(&st.deliveries);
            got.push(Delivery {
                method,
                path,
                headers,
                body,
                received: Instant::now(),
            });
            st.arrived.notify_all();
        }
        write!(out, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n")?;
        out.flush()?;
        if close {
            let _ = out.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}
