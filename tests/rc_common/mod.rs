//! The RC tests' cluster: three Consul servers, a configuration tree of N nodes (each with a
//! hax, a confd and an ios process), the real `hax` binary on some of them, and simulated ios
//! processes linked to those. `mod support; mod rc_common;` in the test file.
#![allow(dead_code)]

use crate::support::*;
use hax::fid::Fid;
use hax_sim::{SimConfig, SimProcess, Timeouts};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// One node of the configuration tree.
pub struct Node {
    pub name: String,
    pub node_fid: Fid,
    pub hax: Fid,
    pub confd: Fid,
    pub rms: Fid,
    pub ios: Fid,
    pub ios_svc: Fid,
    pub hax_port: u16,
    pub confd_port: u16,
    pub ios_port: u16,
    /// The node as registered (the kit's layout: node `i`, keys offset by 0x10 * i).
    pub def: NodeDef,
}

impl Node {
    fn layout(cluster: &ConsulCluster, i: usize) -> Node {
        let def = NodeDef::new(i, cluster.node_name(i))
            .with_hax(free_port())
            .with_confd(free_port())
            .with_ios(free_port());
        let (hax, confd, ios) = (&def.processes[0], &def.processes[1], &def.processes[2]);
        Node {
            name: def.name.clone(),
            node_fid: def.fid,
            hax: hax.fid,
            confd: confd.fid,
            rms: confd.services[1].0,
            ios: ios.fid,
            ios_svc: ios.services[0].0,
            hax_port: hax.port,
            confd_port: confd.port,
            ios_port: ios.port,
            def,
        }
    }

    /// Registers the node's services on its own agent and writes its configuration tree.
    fn register(&self, c: &ConsulClient) {
        self.def.register(c).expect("register the node");
    }

    /// Removes the node from the configuration tree (exact keys).
    pub fn unconfigure(&self, c: &ConsulClient) {
        for (k, _) in self.def.tree().into_iter().rev() {
            c.kv_delete(&k).expect("kv delete");
        }
    }
}

/// Three Consul servers, `nodes` configured, a hax on some of them.
pub struct RcCluster {
    pub consul: ConsulCluster,
    pub nodes: Vec<Node>,
    pub haxes: Vec<Option<HaxProc>>,
    pub dir: PathBuf,
    extra: Vec<String>,
}

impl RcCluster {
    /// `configured` nodes in the tree (at most 3), hax running on the first `running`;
    /// waits until every hax is ready and one holds the leader key.
    pub fn start(tag: &str, configured: usize, running: usize, extra: &[&str]) -> RcCluster {
        let consul = ConsulCluster::start(3);
        let nodes: Vec<Node> = (0..configured).map(|i| Node::layout(&consul, i)).collect();
        for (i, n) in nodes.iter().enumerate() {
            n.register(consul.client(i));
        }
        let dir = std::env::temp_dir().join(format!("hax-rc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = RcCluster {
            consul,
            nodes,
            haxes: Vec::new(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..configured {
            c.haxes.push(None);
            if i < running {
                c.spawn_hax(i);
            }
        }
        for i in 0..running {
            c.wait_ready(i);
        }
        c.wait_leader(Duration::from_secs(30))
            .expect("a hax holds the leader key");
        c
    }

    /// Starts (or starts again) the hax of node `i` with a fresh log file.
    pub fn spawn_hax(&mut self, i: usize) {
        let extra: Vec<&str> = self.extra.iter().map(|s| s.as_str()).collect();
        let n = &self.nodes[i];
        let h = HaxProc::spawn(
            &self.consul.http_url(i),
            &n.name,
            free_port(),
            n.hax_port,
            &self.dir,
            &extra,
        );
        self.haxes[i] = Some(h);
    }

    pub fn wait_ready(&self, i: usize) {
        let h = self.hax(i);
        if let Err(e) = h.wait_ready(Duration::from_secs(40)) {
            panic!("hax {i}: {e}");
        }
    }

    pub fn hax(&self, i: usize) -> &HaxProc {
        self.haxes[i].as_ref().expect("that hax is not running")
    }

    pub fn hax_mut(&mut self, i: usize) -> &mut HaxProc {
        self.haxes[i].as_mut().expect("that hax is not running")
    }

    pub fn log(&self, i: usize) -> String {
        self.haxes[i]
            .as_ref()
            .map(|h| h.log_text())
            .unwrap_or_default()
    }

    /// Hax `i`'s log once it has a line containing every one of `needles` (or as it is after
    /// 10 s): a line is written just after what it describes, which a test may see first.
    pub fn log_with(&self, i: usize, needles: &[&str]) -> String {
        let found = wait_until(Duration::from_secs(10), || {
            let log = self.log(i);
            (!lines_with(&log, needles).is_empty()).then_some(log)
        });
        found.unwrap_or_else(|| self.log(i))
    }

    /// Hax `i`'s log once its `bq-offsets/<node>` says it handled the bq/ entry `key` (the
    /// consumer logs an entry before it saves the offset past it); after 30 s, as it is.
    pub fn log_after_bq(&self, i: usize, key: &str) -> String {
        let n: u64 = key.rsplit('/').next().unwrap().parse().unwrap();
        wait_until(Duration::from_secs(30), || {
            self.offset(i).filter(|o| *o >= n)
        });
        self.log(i)
    }

    /// A client of server `i`'s agent.
    pub fn client(&self, i: usize) -> &ConsulClient {
        self.consul.client(i)
    }

    /// The node index whose hax holds the leader key (None: no holder).
    pub fn leader(&self) -> Option<usize> {
        let p = self.client(0).kv_get_pair("leader").ok().flatten()?;
        p.session.as_ref().filter(|s| !s.is_empty())?;
        let name = p.value_str();
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn wait_leader(&self, timeout: Duration) -> Option<usize> {
        wait_until(timeout, || self.leader())
    }

    /// The simulated ios process of node `i`, connected to that node's hax (not booted).
    pub fn ios(&self, i: usize) -> SimProcess {
        let n = &self.nodes[i];
        let mut cfg = SimConfig::new(n.ios);
        cfg.endpoint = format!("{EP}{}", n.ios_port);
        cfg.services = vec![(n.ios_svc, 2)];
        cfg.pools = vec![POOL];
        cfg.get_fids = vec![n.confd, n.ios, n.node_fid];
        cfg.timeouts = Timeouts {
            reply: Duration::from_secs(15),
            entrypoint: Duration::from_secs(40),
            ..Timeouts::default()
        };
        SimProcess::connect(&self.hax(i).endpoint(), cfg).expect("connect the simulated ios")
    }

    /// A booted ios process on node `i`.
    pub fn booted_ios(&self, i: usize) -> SimProcess {
        let p = self.ios(i);
        p.boot().expect("the simulated ios boots");
        p
    }

    /// `hax q <queue> <type> <payload>` against server `i`: (exit code, stdout, stderr).
    pub fn q(
        &self,
        i: usize,
        queue: &str,
        message_type: &str,
        payload: &str,
    ) -> (i32, String, String) {
        hax_q(&self.consul.http_url(i), queue, message_type, payload)
    }

    /// `hax q` that must succeed; returns the key written.
    pub fn q_ok(&self, i: usize, queue: &str, message_type: &str, payload: &str) -> String {
        let (code, out, err) = self.q(i, queue, message_type, payload);
        assert_eq!(code, 0, "hax q {queue} {message_type} {payload}: {err}");
        out.trim().to_string()
    }

    /// Writes `value` as the next entry of `queue` the way publishers do (epoch CAS + entry),
    /// whatever the value is (to plant malformed entries); returns the key.
    pub fn raw_publish(&self, queue: &str, value: &[u8]) -> String {
        let c = self.client(0);
        for _ in 0..100 {
            let epoch = c.kv_get_pair(&format!("epochs/{queue}")).unwrap();
            let (last, index) = epoch
                .map(|p| (p.value_str().parse::<u64>().unwrap(), p.modify_index))
                .unwrap_or((0, 0));
            let key = format!("{queue}/{}", last + 1);
            let r = c
                .txn(&[
                    txn_kv_cas(&format!("epochs/{queue}"), (last + 1).to_string(), index),
                    txn_kv_cas(&key, value, 0),
                ])
                .unwrap();
            if r.status == 200 {
                return key;
            }
        }
        panic!("could not publish to {queue}");
    }

    /// Keys under `prefix` (e.g. "bq/").
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.client(0)
            .kv_list(prefix)
            .unwrap()
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

    /// `bq-offsets/<node name of i>`.
    pub fn offset(&self, i: usize) -> Option<u64> {
        let v = self
            .client(0)
            .kv_get_string(&format!("bq-offsets/{}", self.nodes[i].name))
            .ok()??;
        v.trim().parse().ok()
    }

    /// The value of `epochs/<queue>`.
    pub fn epoch(&self, queue: &str) -> u64 {
        self.client(0)
            .kv_get_string(&format!("epochs/{queue}"))
            .unwrap()
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

impl Drop for RcCluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `hax --consul <url> q <queue> <type> <payload>`: (exit code, stdout, stderr).
pub fn hax_q(
    consul: &str,
    queue: &str,
    message_type: &str,
    payload: &str,
) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hax"))
        .args(["--consul", consul, "q", queue, message_type, payload])
        .env("HAX_LOG", "warn")
        .output()
        .expect("run hax q");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Lines of `log` containing every one of `needles`.
pub fn lines_with<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

/// Broadcast notes (`id_of_get` 0) `p` received about `fid` in `state`.
pub fn heard(p: &SimProcess, fid: Fid, state: u32) -> usize {
    p.received_notes()
        .iter()
        .filter(|n| n.fid == fid && n.state == state && n.id_of_get == 0)
        .count()
}

/// Waits until `p` heard `fid` in `state` (broadcast); true if it did within `timeout`.
pub fn wait_heard(p: &SimProcess, fid: Fid, state: u32, timeout: Duration) -> bool {
    wait_until(timeout, || (heard(p, fid, state) > 0).then_some(())).is_some()
}

/// Sleeps until `at`.
pub fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}
