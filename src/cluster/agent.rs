//! A local Consul agent for a single-node cluster: a one-server datacenter on the node's
//! loopback address, configured with the watches and script checks hax needs.
use super::plan::{agent_config_json, with_watch_secret, Plan};
use serde_json::{json, Value};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh agent may take to elect itself leader.
pub const AGENT_START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("a local agent serves a single-node cluster; the description has {0} nodes")]
    NotSingleNode(usize),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("port {port} is taken by {by}; pick another consul_http_port")]
    PortTaken { port: u16, by: String },
    #[error("consul exited while starting ({status}); last lines of {log}:\n{tail}")]
    Exited {
        status: String,
        log: String,
        tail: String,
    },
    #[error("consul agent of node {node} had no leader after {AGENT_START_TIMEOUT:?}; see {log}")]
    Timeout { node: String, log: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

/// A running local agent.
#[derive(Debug)]
pub struct LocalAgent {
    pub node: String,
    /// The agent's pid (None when an already running agent was found and no pid file names it).
    pub pid: Option<u32>,
    /// `http://<address>:<port>`
    pub http_url: String,
    pub config: PathBuf,
    pub log: PathBuf,
    /// false when an agent of this node already answered at the port and was reused.
    pub started: bool,
    child: Option<Child>,
}

impl LocalAgent {
    /// Kills the agent if this call started it (a reused agent keeps running).
    pub fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A small blocking HTTP/1.0 request (the agent closes the connection after the answer).
fn http(addr: SocketAddr, method: &str, path: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            io::Error::other(format!(
                "not an HTTP answer: {:?}",
                head.chars().take(80).collect::<String>()
            ))
        })?;
    Ok((status, body.to_string()))
}

/// The node name of the Consul agent at `addr`; Err(description) if something else answers.
fn node_at(addr: SocketAddr) -> io::Result<Result<String, String>> {
    let (status, body) = http(addr, "GET", "/v1/agent/self")?;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    Ok(match v["Config"]["NodeName"].as_str() {
        Some(n) if status == 200 => Ok(n.to_string()),
        _ => Err(format!(
            "something that is not a Consul agent (HTTP {status})"
        )),
    })
}

fn ready(addr: SocketAddr, node: &str) -> bool {
    let leader =
        http(addr, "GET", "/v1/status/leader").is_ok_and(|(s, b)| s == 200 && b.trim().len() > 2);
    leader
        && http(addr, "GET", &format!("/v1/catalog/node/{node}"))
            .is_ok_and(|(s, b)| s == 200 && b.trim() != "null")
}

/// A free TCP+UDP port on `ip`.
fn free_port(ip: std::net::IpAddr) -> io::Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind((ip, 0))?.local_addr()?.port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free TCP+UDP port"))
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The file holding the watch secret of a local agent's directory.
pub fn watch_secret_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("watch-secret")
}

/// Reads the directory's watch secret, making a random one (readable by its owner only) the
/// first time. hax must be started with `--watch-secret-file <dir>/watch-secret`.
pub(crate) fn watch_secret(data_dir: &Path) -> Result<String, AgentError> {
    let path = watch_secret_path(data_dir);
    if let Ok(s) = fs::read_to_string(&path) {
        if let Some(line) = s.lines().next().filter(|l| !l.trim().is_empty()) {
            return Ok(line.trim().to_string());
        }
    }
    let mut bytes = [0u8; 24];
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err("read /dev/urandom"))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    fs::create_dir_all(data_dir).map_err(io_err(format!("create {}", data_dir.display())))?;
    write_private(&path, &format!("{secret}\n"))?;
    Ok(secret)
}

/// Writes a file only its owner may read (it holds the watch secret).
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), AgentError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("write {}", path.display())))?;
    use std::io::Write;
    f.write_all(text.as_bytes())
        .map_err(io_err(format!("write {}", path.display())))
}

/// Starts (or finds already running) the Consul agent of the plan's single node:
/// `consul agent -server -bootstrap-expect=1 -data-dir=<dir>/data -node=<name>
/// -bind=<address> -client=<address> -config-file=<dir>/consul.json`, its HTTP port from the
/// description, DNS and gRPC disabled, server and serf ports free ones (kept in the config
/// file across restarts); waits until it is its own leader. Its log is `<dir>/consul.log`, its
/// pid in `<dir>/consul.pid`; it runs in its own process group and outlives the caller.
pub fn start_local_agent(
    plan: &Plan,
    data_dir: &Path,
    consul_bin: &Path,
) -> Result<LocalAgent, AgentError> {
    if plan.nodes.len() != 1 {
        return Err(AgentError::NotSingleNode(plan.nodes.len()));
    }
    let node = &plan.nodes[0];
    let ip: std::net::IpAddr = node.address.parse().map_err(|_| AgentError::Io {
        what: format!("node {}", node.name),
        source: io::Error::other(format!("{:?} is not an IP address", node.address)),
    })?;
    let addr = SocketAddr::new(ip, node.consul_http_port);
    let data = data_dir.join("data");
    fs::create_dir_all(&data).map_err(io_err(format!("create {}", data.display())))?;
    let config = data_dir.join("consul.json");
    let log = data_dir.join("consul.log");
    let pid_file = data_dir.join("consul.pid");

    // Keep the ports of an earlier run: a server's raft peers remember its address.
    let old: Value = fs::read_to_string(&config)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let port = |name: &str| -> Result<u16, AgentError> {
        match old["ports"][name].as_u64() {
            Some(p) if p > 0 && p <= u16::MAX as u64 => Ok(p as u16),
            _ => free_port(ip).map_err(io_err("find a free port")),
        }
    };
    let (server, serf_lan, serf_wan) = (port("server")?, port("serf_lan")?, port("serf_wan")?);
    let mut cfg = agent_config_json(plan, &node.name).expect("the plan's own node");
    with_watch_secret(&mut cfg, &watch_secret(data_dir)?);
    cfg["ports"] = json!({
        "http": node.consul_http_port, "dns": -1, "grpc": -1, "grpc_tls": -1,
        "server": server, "serf_lan": serf_lan, "serf_wan": serf_wan,
    });
    cfg["performance"] = json!({"raft_multiplier": 1});
    let text = serde_json::to_string_pretty(&cfg).expect("JSON");
    let changed = fs::read_to_string(&config).ok().as_deref() != Some(text.as_str());
    if changed {
        write_private(&config, &text)?;
    }
    let http_url = format!("http://{addr}");

    if let Ok(found) = node_at(addr) {
        return match found {
            Ok(name) if name == node.name => {
                if changed {
                    http(addr, "PUT", "/v1/agent/reload")
                        .map_err(io_err("reload the running agent"))?;
                }
                let pid = fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
                Ok(LocalAgent {
                    node: name,
                    pid,
                    http_url,
                    config,
                    log,
                    started: false,
                    child: None,
                })
            }
            Ok(name) => Err(AgentError::PortTaken {
                port: addr.port(),
                by: format!("the Consul agent of node {name:?}"),
            }),
            Err(what) => Err(AgentError::PortTaken {
                port: addr.port(),
                by: what,
            }),
        };
    }

    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(io_err(format!("open {}", log.display())))?;
    let err = out.try_clone().map_err(io_err("dup the log"))?;
    let mut child = Command::new(consul_bin)
        .args([
            "agent".to_string(),
            "-server".into(),
            "-bootstrap-expect=1".into(),
            format!("-data-dir={}", data.display()),
            format!("-node={}", node.name),
            format!("-bind={ip}"),
            format!("-client={ip}"),
            format!("-config-file={}", config.display()),
        ])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(io_err(format!("start {}", consul_bin.display())))?;
    let pid = child.id();
    let deadline = Instant::now() + AGENT_START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(AgentError::Exited {
                status: status.to_string(),
                log: log.display().to_string(),
                tail: tail(&log, 20),
            });
        }
        if ready(addr, &node.name) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(AgentError::Timeout {
                node: node.name.clone(),
                log: log.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    fs::write(&pid_file, format!("{pid}\n"))
        .map_err(io_err(format!("write {}", pid_file.display())))?;
    Ok(LocalAgent {
        node: node.name.clone(),
        pid: Some(pid),
        http_url,
        config,
        log,
        started: true,
        child: Some(child),
    })
}
