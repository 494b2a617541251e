//! [`SingleNode`]: a dedicated Consul agent whose watches POST to hax, the single-node cluster
//! registered, the real `hax` running and ready, and simulated Motr processes created on
//! demand.
use std::time::Duration;

use hax_fid::Fid;
use hax_sim::{SimConfig, SimProcess, Timeouts};
use serde_json::Value;

use crate::client::ConsulClient;
use crate::cluster::*;
use crate::consul::ConsulAgent;
use crate::daemon::HaxProc;
use crate::process::{free_port, wait_until};

/// Consul agent + registered cluster + running hax.
pub struct SingleNode {
    pub hax: HaxProc,
    pub ports: ClusterPorts,
    pub agent: ConsulAgent,
}

impl SingleNode {
    /// Starts everything and waits until hax is ready.
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
        n.hax.assert_ready(Duration::from_secs(30));
        n
    }

    pub fn client(&self) -> &ConsulClient {
        self.agent.client()
    }

    /// Starts a new hax in place of the current one (which must be gone: killed or stopped),
    /// on the same HTTP port and Motr endpoint, with `extra` arguments; does not wait for it.
    pub fn respawn_hax(&mut self, extra: &[&str]) {
        self.hax = HaxProc::spawn(
            &self.agent.http_addr(),
            self.agent.node_name(),
            self.hax.http_port,
            self.ports.hax,
            self.agent.dir(),
            extra,
        );
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
        cfg.pools = vec![POOL];
        cfg.get_fids = vec![
            CONFD,
            CONFD_SVC,
            CONFD_RMS,
            IOS1,
            IOS2,
            NODE_FID,
            Fid::typed(b't', 1, 0),
            POOL,
        ];
        cfg.timeouts = Timeouts {
            reply: Duration::from_secs(15),
            entrypoint: Duration::from_secs(30),
            ..Timeouts::default()
        };
        cfg
    }

    /// The decoded `processes/<fid>` record.
    pub fn process_record(&self, fid: Fid) -> Option<Value> {
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
