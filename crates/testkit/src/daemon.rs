//! The real `hax` daemon as a child process: [`HaxCommand`] says how to start it (binary,
//! Consul, node, flags, environment, log file), [`HaxProc`] is the running daemon (its log,
//! HTTP and HA endpoints, signals), killed on drop. Readiness is hax's own `GET /readyz`, not a
//! line of its log.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cluster::EP;
use crate::process::{lock, log_tail, spawn_tied, try_signal, wait_until};

/// The hax binary: `$HAX_BIN` if set, else `hax` next to the running program or one folder up
/// (a test binary runs from `target/<profile>/deps/`, where cargo builds `hax` for the hax
/// package's integration tests).
pub fn hax_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HAX_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("hax"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("hax"))
}

fn http_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .build()
}

/// `GET <url>/readyz` of a hax (`url`: `http://127.0.0.1:<http port>`): (status, JSON body),
/// or None when nothing answers.
pub fn readyz(url: &str) -> Option<(u16, serde_json::Value)> {
    let resp = match http_agent().get(&format!("{url}/readyz")).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(_) => return None,
    };
    let status = resp.status();
    Some((status, resp.into_json().unwrap_or_default()))
}

/// The value of the metric `name` (a sample without labels) on `GET <url>/metrics` of a hax.
pub fn metric(url: &str, name: &str) -> Option<f64> {
    let text = http_agent()
        .get(&format!("{url}/metrics"))
        .call()
        .ok()?
        .into_string()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The flags the tests run hax with, after `--consul`, `--node` and `--http-port`: short pauses
/// and delays, and a shutdown bound well under the tests' own.
pub const TEST_FLAGS: &[&str] = &[
    "--entrypoint-pause-ms",
    "200",
    "--leader-lock-delay-s",
    "1",
    "--shutdown-ms",
    "4000",
];

/// The environment the tests run hax with: debug logs of hax's own modules, and the stand-in's
/// RPC timeout at 1 s (a peer that is gone is noticed quickly).
pub const TEST_ENV: &[(&str, &str)] = &[
    ("HAX_LOG", "info,hax=debug"),
    ("HAX_STANDIN_RPC_TIMEOUT_MS", "1000"),
];

/// How to start hax.
#[derive(Clone, Debug)]
pub struct HaxCommand {
    pub bin: PathBuf,
    /// `--consul`: the agent's address (`127.0.0.1:P`, `http://...` or `https://...`).
    pub consul: String,
    pub node: String,
    /// `--http-port`: the watch endpoint, `/readyz`, `/metrics`.
    pub http_port: u16,
    /// The port of hax's HA endpoint (registered in Consul; hax reads it from there).
    pub endpoint_port: u16,
    /// Flags after `--consul`, `--node` and `--http-port`.
    pub flags: Vec<String>,
    pub env: Vec<(String, String)>,
    /// stdout and stderr.
    pub log: PathBuf,
}

impl HaxCommand {
    /// hax as the tests run it ([`TEST_FLAGS`], [`TEST_ENV`], [`hax_bin`]), logging to
    /// `dir/hax-<http_port>.log`.
    pub fn new(consul: &str, node: &str, http_port: u16, endpoint_port: u16, dir: &Path) -> Self {
        HaxCommand {
            bin: hax_bin(),
            consul: consul.to_string(),
            node: node.to_string(),
            http_port,
            endpoint_port,
            flags: TEST_FLAGS.iter().map(|s| s.to_string()).collect(),
            env: TEST_ENV
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: dir.join(format!("hax-{http_port}.log")),
        }
    }

    /// Starts hax (tied to this process: it dies with it).
    pub fn spawn(&self) -> Result<HaxProc, String> {
        let out = std::fs::File::create(&self.log)
            .map_err(|e| format!("create {}: {e}", self.log.display()))?;
        let err = out.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--consul",
            &self.consul,
            "--node",
            &self.node,
            "--http-port",
        ])
        .arg(self.http_port.to_string())
        .args(&self.flags)
        .envs(self.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        let child =
            spawn_tied(cmd).map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        Ok(HaxProc {
            child: Mutex::new(Some(child)),
            log: self.log.clone(),
            http_port: self.http_port,
            endpoint_port: self.endpoint_port,
        })
    }
}

/// A running `hax` binary with its log file.
pub struct HaxProc {
    child: Mutex<Option<Child>>,
    pub log: PathBuf,
    pub http_port: u16,
    pub endpoint_port: u16,
}

impl HaxProc {
    /// Starts `hax` against `consul_addr` as the tests run it, with extra arguments.
    pub fn spawn(
        consul_addr: &str,
        node: &str,
        http_port: u16,
        endpoint_port: u16,
        dir: &Path,
        extra: &[&str],
    ) -> HaxProc {
        Self::spawn_env(consul_addr, node, http_port, endpoint_port, dir, extra, &[])
    }

    /// `spawn` with extra environment variables for hax.
    pub fn spawn_env(
        consul_addr: &str,
        node: &str,
        http_port: u16,
        endpoint_port: u16,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> HaxProc {
        let mut cmd = HaxCommand::new(consul_addr, node, http_port, endpoint_port, dir);
        cmd.flags.extend(extra.iter().map(|s| s.to_string()));
        cmd.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        cmd.spawn().unwrap_or_else(|e| panic!("start hax: {e}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_text().contains(needle).then_some(())).is_some()
    }

    /// hax's `GET /readyz`: (status, JSON body), or None when nothing answers (hax not
    /// listening yet, or gone).
    pub fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        readyz(&self.url())
    }

    /// Whether hax is ready: its `GET /readyz` answers 200 (Motr's HA interface is started).
    pub fn is_ready(&self) -> bool {
        self.readyz().is_some_and(|(status, _)| status == 200)
    }

    /// The value of the metric `name` (without labels) on hax's `GET /metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(&self.url(), name)
    }

    /// Waits until hax is ready; the error says why not (it exited, or the time ran out) with
    /// the tail of its log.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_ready() {
                return Ok(());
            }
            if let Some(code) = self.exit_status() {
                return Err(format!(
                    "hax exited ({code}) before it was ready; {}:\n{}",
                    self.log.display(),
                    log_tail(&self.log, 40)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "hax not ready after {timeout:?}; {}:\n{}",
                    self.log.display(),
                    log_tail(&self.log, 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// [`wait_ready`](Self::wait_ready), panicking with the reason (and hax's log tail).
    pub fn assert_ready(&self, timeout: Duration) {
        if let Err(e) = self.wait_ready(timeout) {
            panic!("{e}");
        }
    }

    /// hax's HA endpoint, for simulated processes.
    pub fn endpoint(&self) -> String {
        format!("{EP}{}", self.endpoint_port)
    }

    /// hax's HTTP endpoint: `http://127.0.0.1:<http_port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn pid(&self) -> u32 {
        lock(&self.child).as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal; returns how long the process took to exit (None: still running).
    pub fn signal_and_wait(&self, sig: &str, timeout: Duration) -> Option<Duration> {
        try_signal(self.pid(), sig);
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.exit_status().is_some() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// How the process ended, once it has (None: still running, or never started).
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        lock(&self.child).as_mut()?.try_wait().ok().flatten()
    }

    pub fn exit_code(&self) -> Option<i32> {
        self.exit_status().and_then(|s| s.code())
    }

    pub fn is_running(&self) -> bool {
        lock(&self.child)
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for HaxProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- tail of hax log {} ----\n{}",
                self.log.display(),
                log_tail(&self.log, 60)
            );
        }
        if let Some(mut c) = lock(&self.child).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
