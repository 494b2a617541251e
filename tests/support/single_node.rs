//! A single-node hax cluster for integration tests: a dedicated real Consul agent whose
//! watches POST to hax, the services and configuration tree registered, the real `hax`
//! binary running, and simulated Motr processes created on demand.
use super::consul::*;
use hax::fid::Fid;
use hax_sim::{SimConfig, SimProcess, Timeouts};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const EP: &str = "inet:tcp:127.0.0.1@";
pub const NODE_FID: Fid = Fid::typed(b'n', 1, 2);
pub const HAX: Fid = Fid::typed(b'r', 1, 6);
pub const CONFD: Fid = Fid::typed(b'r', 1, 9);
pub const CONFD_SVC: Fid = Fid::typed(b's', 1, 0xa);
pub const CONFD_RMS: Fid = Fid::typed(b's', 1, 0xb);
pub const IOS1: Fid = Fid::typed(b'r', 1, 0xc);
pub const IOS1_SVC: Fid = Fid::typed(b's', 1, 0xd);
pub const IOS2: Fid = Fid::typed(b'r', 1, 0xf);
pub const IOS2_SVC: Fid = Fid::typed(b's', 1, 0x10);

/// A running `hax` binary with its log file.
pub struct HaxProc {
    child: Option<Child>,
    pub log: PathBuf,
    pub http_port: u16,
    pub endpoint_port: u16,
}

impl HaxProc {
    /// Starts `hax` against `consul_addr` with extra arguments.
    pub fn spawn(
        consul_addr: &str,
        node: &str,
        http_port: u16,
        endpoint_port: u16,
        dir: &std::path::Path,
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
        dir: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> HaxProc {
        let log = dir.join(format!("hax-{http_port}.log"));
        let out = std::fs::File::create(&log).expect("hax log file");
        let child = Command::new(env!("CARGO_BIN_EXE_hax"))
            .args([
                "--consul",
                consul_addr,
                "--node",
                node,
                "--http-port",
                &http_port.to_string(),
            ])
            .args([
                "--entrypoint-pause-ms",
                "200",
                "--leader-lock-delay-s",
                "1",
                "--shutdown-ms",
                "4000",
            ])
            .args(extra)
            .env("HAX_LOG", "info,hax=debug")
            .env("HAX_STANDIN_RPC_TIMEOUT_MS", "1000")
            .envs(env.iter().copied())
            .stdout(Stdio::from(out.try_clone().expect("dup log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start hax");
        HaxProc {
            child: Some(child),
            log,
            http_port,
            endpoint_port,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_text().contains(needle).then_some(())).is_some()
    }

    pub fn endpoint(&self) -> String {
        format!("{EP}{}", self.endpoint_port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal; returns how long the process took to exit (None: still running).
    pub fn signal_and_wait(&mut self, sig: &str, timeout: Duration) -> Option<Duration> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status();
        let start = Instant::now();
        let child = self.child.as_mut()?;
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn exit_code(&mut self) -> Option<i32> {
        self.child
            .as_mut()?
            .try_wait()
            .ok()
            .flatten()
            .and_then(|s| s.code())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The JSON agent configuration: service watches for confd and ios POSTing to hax.
pub fn watch_config(hax_http_port: u16) -> serde_json::Value {
    watch_config_with_secret(hax_http_port, None)
}

/// The same, with the shared secret header the watches send (JSON: a one-element header
/// list in HCL makes the agent refuse to start).
pub fn watch_config_with_secret(hax_http_port: u16, secret: Option<&str>) -> serde_json::Value {
    let watch = |svc: &str| {
        let mut cfg = json!({"path": format!("http://127.0.0.1:{hax_http_port}/watcher/service/{svc}"),
                             "method": "POST", "timeout": "10s"});
        if let Some(s) = secret {
            cfg["header"] = json!({"X-Hax-Secret": [s]});
        }
        json!({"type": "service", "service": svc, "handler_type": "http", "http_handler_config": cfg})
    };
    json!({"watches": [watch("confd"), watch("ios")]})
}

/// Registers the single-node cluster: services with TTL checks (passing) and the m0conf tree.
pub fn register_cluster(c: &ConsulClient, node: &str, ports: &ClusterPorts) {
    let reg = |id: Fid, name: &str, port: u16| {
        c.register_service(
            &json!({"ID": id.to_string(), "Name": name, "Address": EP, "Port": port,
            "Check": {"CheckID": format!("service:{id}"), "TTL": "3600s", "Status": "passing"}}),
        )
        .expect("register service");
    };
    reg(HAX, "hax", ports.hax);
    reg(CONFD, "confd", ports.confd);
    reg(IOS1, "ios", ports.ios1);
    reg(IOS2, "ios", ports.ios2);
    let base = format!("m0conf/nodes/{NODE_FID}");
    let kv = |k: String, v: serde_json::Value| c.kv_put(&k, v.to_string()).expect("kv put");
    kv(
        base.clone(),
        json!({"name": node, "state": "M0_NC_UNKNOWN"}),
    );
    let proc_ = |p: Fid, name: &str, port: u16, svcs: &[(Fid, &str)]| {
        kv(
            format!("{base}/processes/{p}"),
            json!({"name": name, "endpoint": format!("{EP}{port}"), "state": "M0_NC_UNKNOWN"}),
        );
        for (s, t) in svcs {
            kv(
                format!("{base}/processes/{p}/services/{s}"),
                json!({"type": t, "state": "M0_NC_UNKNOWN"}),
            );
        }
    };
    proc_(
        HAX,
        "hax",
        ports.hax,
        &[
            (Fid::typed(b's', 1, 7), "ha"),
            (Fid::typed(b's', 1, 8), "rms"),
        ],
    );
    proc_(
        CONFD,
        "confd",
        ports.confd,
        &[(CONFD_SVC, "confd"), (CONFD_RMS, "rms")],
    );
    proc_(IOS1, "ios", ports.ios1, &[(IOS1_SVC, "ios")]);
    proc_(IOS2, "ios", ports.ios2, &[(IOS2_SVC, "ios")]);
}

/// Endpoint ports of the single-node cluster's processes.
#[derive(Clone, Copy, Debug)]
pub struct ClusterPorts {
    pub hax: u16,
    pub confd: u16,
    pub ios1: u16,
    pub ios2: u16,
}

impl ClusterPorts {
    pub fn allocate() -> ClusterPorts {
        ClusterPorts {
            hax: free_port(),
            confd: free_port(),
            ios1: free_port(),
            ios2: free_port(),
        }
    }
}

/// Consul agent + registered cluster + running hax.
pub struct SingleNode {
    pub hax: HaxProc,
    pub ports: ClusterPorts,
    pub agent: ConsulAgent,
}

impl SingleNode {
    /// Starts everything and waits for hax's `ready` line.
    pub fn start() -> SingleNode {
        Self::start_with(&[])
    }

    /// A single node whose agent's watches point at a port nobody listens on: hax hears about
    /// health only from what a test POSTs (or from its own reconciliation).
    pub fn start_unwatched(extra: &[&str]) -> SingleNode {
        Self::start_watching(free_port(), free_port(), None, extra)
    }

    /// Starts everything with extra hax arguments (`--watch-secret S` also goes into the
    /// agent's watch headers).
    pub fn start_with(extra: &[&str]) -> SingleNode {
        let secret = extra
            .windows(2)
            .find(|w| w[0] == "--watch-secret")
            .map(|w| w[1]);
        let port = free_port();
        Self::start_watching(port, port, secret, extra)
    }

    /// Starts everything with extra environment variables for hax.
    pub fn start_with_env(env: &[(&str, &str)]) -> SingleNode {
        let port = free_port();
        Self::start_watching_env(port, port, None, &[], env)
    }

    /// The agent's watches POST to `watch_port`; hax's HTTP server listens on `http_port`.
    fn start_watching(
        watch_port: u16,
        http_port: u16,
        secret: Option<&str>,
        extra: &[&str],
    ) -> SingleNode {
        Self::start_watching_env(watch_port, http_port, secret, extra, &[])
    }

    fn start_watching_env(
        watch_port: u16,
        http_port: u16,
        secret: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> SingleNode {
        let agent = ConsulAgent::dev_with_json(&watch_config_with_secret(watch_port, secret));
        let ports = ClusterPorts::allocate();
        register_cluster(agent.client(), agent.node_name(), &ports);
        let hax = HaxProc::spawn_env(
            &agent.http_addr(),
            agent.node_name(),
            http_port,
            ports.hax,
            agent.dir(),
            extra,
            env,
        );
        let n = SingleNode { hax, ports, agent };
        assert!(
            n.hax.wait_log("hax: ready", Duration::from_secs(30)),
            "hax did not become ready:\n{}",
            log_tail(&n.hax.log, 40)
        );
        n
    }

    pub fn client(&self) -> &ConsulClient {
        self.agent.client()
    }

    /// A simulated process configured like the cluster's (services, a pool, a GET of its
    /// configuration objects), not yet booted.
    pub fn sim(&self, fid: Fid) -> SimProcess {
        SimProcess::connect(&self.hax.endpoint(), self.sim_config(fid))
            .expect("connect simulated process")
    }

    pub fn sim_config(&self, fid: Fid) -> SimConfig {
        let mut cfg = SimConfig::new(fid);
        let (port, services): (u16, Vec<(Fid, u64)>) = match fid {
            f if f == CONFD => (self.ports.confd, vec![(CONFD_SVC, 3), (CONFD_RMS, 4)]),
            f if f == IOS1 => (self.ports.ios1, vec![(IOS1_SVC, 2)]),
            f if f == IOS2 => (self.ports.ios2, vec![(IOS2_SVC, 2)]),
            _ => (free_port(), vec![]),
        };
        cfg.endpoint = format!("{EP}{port}");
        cfg.services = services;
        cfg.pools = vec![Fid::typed(b'o', 1, 4)];
        cfg.get_fids = vec![
            CONFD,
            CONFD_SVC,
            CONFD_RMS,
            IOS1,
            IOS2,
            NODE_FID,
            Fid::typed(b't', 1, 0),
            Fid::typed(b'o', 1, 4),
        ];
        cfg.timeouts = Timeouts {
            reply: Duration::from_secs(15),
            entrypoint: Duration::from_secs(30),
            ..Timeouts::default()
        };
        cfg
    }

    /// The decoded `processes/<fid>` record.
    pub fn process_record(&self, fid: Fid) -> Option<serde_json::Value> {
        let v = self.client().kv_get(&format!("processes/{fid}")).ok()??;
        serde_json::from_slice(&v).ok()
    }

    /// Waits until `processes/<fid>` has the given state name suffix (e.g. "DTM_RECOVERED").
    pub fn wait_process_state(&self, fid: Fid, state: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.process_record(fid)
                .and_then(|v| {
                    v.get("state")
                        .and_then(|s| s.as_str())
                        .map(|s| s.ends_with(state))
                })
                .filter(|ok| *ok)
        })
        .is_some()
    }
}
