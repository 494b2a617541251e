//! Fault: a network partition between Consul servers. Three servers, each in its own network
//! namespace (created by this test, addresses 10.200.1.x that exist only inside them, joined
//! by veth pairs to a bridge in a fourth namespace and never routed anywhere else). hax runs
//! normally and reaches its server (server 0) through a loopback proxy whose connecting thread
//! lives in server 0's namespace. The partition cuts server 0 (hax's) off from the other two,
//! which keep a quorum; then it heals.
//!
//! hax must keep answering entrypoints (cached view or paced EAGAIN) and confirming Motr's
//! messages; after the heal its queued writes reach KV and it holds the RC leader key again.
//! Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and `ip`; where namespaces cannot be made the
//! test says so and skips.
#[path = "faults_common.rs"]
mod common;
mod support;

use common::*;
use hax::fid::Fid;
use hax_sim::ProcessEvent;
use std::fs;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const SERVERS: usize = 3;
const PARTITION: Duration = Duration::from_secs(15);

extern "C" {
    fn setns(fd: i32, nstype: i32) -> i32;
}
const CLONE_NEWNET: i32 = 0x4000_0000;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves the calling thread into a network namespace made by `ip netns add`.
fn enter_netns(name: &str) -> io::Result<()> {
    let f = fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: setns on a valid namespace fd; it only changes the calling thread's namespace.
    match unsafe { setns(f.as_raw_fd(), CLONE_NEWNET) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The namespaces, the Consul servers in them and the loopback proxies; all removed on drop.
struct Net {
    prefix: String,
    dir: PathBuf,
    servers: Vec<Child>,
    proxies: Vec<u16>,
    stop: Arc<AtomicBool>,
}

impl Net {
    fn hub(&self) -> String {
        format!("{}h", self.prefix)
    }
    fn ns(&self, i: usize) -> String {
        format!("{}s{i}", self.prefix)
    }
    fn addr(i: usize) -> String {
        format!("10.200.1.{}", i + 1)
    }
    fn node(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }
    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.proxies[i])
    }

    /// Namespaces, bridge, veths and addresses; Err when this sandbox cannot make them.
    fn build(&mut self) -> Result<(), String> {
        let hub = self.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..SERVERS {
            let ns = self.ns(i);
            ip(&["netns", "add", &ns])?;
            let v = format!("v{i}");
            ip(&[
                "-n", &hub, "link", "add", &v, "type", "veth", "peer", "name", "e0", "netns", &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &v, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &v, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Net::addr(i)),
                "dev",
                "e0",
            ])?;
            ip(&["-n", &ns, "link", "set", "e0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        // Can a thread of ours enter them? (The proxies need it.)
        let ns = self.ns(0);
        std::thread::spawn(move || enter_netns(&ns))
            .join()
            .map_err(|_| "setns panicked".to_string())?
            .map_err(|e| format!("setns: {e}"))?;
        Ok(())
    }

    /// A proxy 127.0.0.1:<port> (this namespace) -> 127.0.0.1:8500 in server `i`'s namespace.
    fn proxy(&mut self, i: usize) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        self.proxies.push(listener.local_addr().unwrap().port());
        listener.set_nonblocking(true).unwrap();
        let (ns, stop) = (self.ns(i), self.stop.clone());
        std::thread::spawn(move || {
            enter_netns(&ns).expect("enter namespace");
            // Bounded: until the test ends (stop), at most 10 minutes.
            let end = Instant::now() + Duration::from_secs(600);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => break,
                };
                client.set_nonblocking(false).ok();
                // Created on this thread: the socket belongs to the server's namespace.
                let Ok(server) = TcpStream::connect_timeout(
                    &"127.0.0.1:8500".parse().unwrap(),
                    Duration::from_secs(2),
                ) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                        let _ = from.shutdown(Shutdown::Read);
                    });
                }
            }
        });
    }

    fn start_servers(&mut self) {
        let consul = consul_bin();
        fs::write(
            self.dir.join("config.hcl"),
            "disable_update_check = true\nretry_interval = \"1s\"\nperformance { raft_multiplier = 1 }\n",
        )
        .unwrap();
        for i in 0..SERVERS {
            let data = self.dir.join(format!("data-{i}"));
            fs::create_dir_all(&data).unwrap();
            let log = fs::File::create(self.dir.join(format!("consul-{i}.log"))).unwrap();
            let mut args: Vec<String> = vec![
                "netns".into(),
                "exec".into(),
                self.ns(i),
                consul.display().to_string(),
                "agent".into(),
                "-server".into(),
                format!("-bootstrap-expect={SERVERS}"),
                format!("-node={}", self.node(i)),
                format!("-bind={}", Net::addr(i)),
                "-client=127.0.0.1".into(),
                format!("-data-dir={}", data.display()),
                format!("-config-file={}", self.dir.join("config.hcl").display()),
                "-dns-port=-1".into(),
                "-grpc-port=-1".into(),
                "-grpc-tls-port=-1".into(),
            ];
            args.extend(
                (0..SERVERS)
                    .filter(|j| *j != i)
                    .map(|j| format!("-retry-join={}", Net::addr(j))),
            );
            let mut cmd = Command::new("ip");
            cmd.args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log));
            // The servers die with the test process even if it is killed (`ip netns exec`
            // execs consul, which keeps the setting).
            let child = spawn_tied(cmd).expect("start consul in its namespace");
            self.servers.push(child);
        }
    }

    fn leader_of(&self, i: usize) -> String {
        ConsulClient::with_timeout(&self.url(i), Duration::from_secs(2))
            .leader()
            .unwrap_or_default()
    }

    fn log_tail(&self, i: usize) -> String {
        log_tail(&self.dir.join(format!("consul-{i}.log")), 20)
    }

    /// Cuts server `i` off the bridge (or puts it back).
    fn set_link(&self, i: usize, up: bool) {
        ip(&[
            "-n",
            &self.hub(),
            "link",
            "set",
            &format!("v{i}"),
            if up { "up" } else { "down" },
        ])
        .expect("set link");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for i in 0..self.servers.len() {
                eprintln!("---- consul server {i} ----\n{}", self.log_tail(i));
            }
        }
        for i in 0..SERVERS {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Deletes namespaces left by test processes that died before cleaning up.
fn sweep_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("hxp") else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !pid.is_empty() && !std::path::Path::new("/proc").join(&pid).exists() {
            // Servers an earlier run of this test left inside it, then the namespace.
            if let Ok(o) = Command::new("ip").args(["netns", "pids", name]).output() {
                for p in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", p]).status();
                }
            }
            let _ = ip(&["netns", "del", name]);
        }
    }
}

#[test]
fn a_partition_between_consul_servers_leaves_hax_serving_and_it_recovers_after_the_heal() {
    sweep_stale_namespaces();
    let prefix = format!("hxp{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("hax-partition-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let mut net = Net {
        prefix,
        dir: dir.clone(),
        servers: vec![],
        proxies: vec![],
        stop: Arc::new(AtomicBool::new(false)),
    };
    if let Err(why) = net.build() {
        eprintln!("SKIPPED: network namespaces are not available in this sandbox ({why}); the partition test did not run");
        figure(
            "d: partition between Consul servers",
            &format!("SKIPPED: {why}"),
        );
        return;
    }
    for i in 0..SERVERS {
        net.proxy(i);
    }
    net.start_servers();
    let t_start = Instant::now();
    let agreed = wait_until(Duration::from_secs(60), || {
        let l: Vec<String> = (0..SERVERS).map(|i| net.leader_of(i)).collect();
        (!l[0].is_empty() && l.iter().all(|x| *x == l[0])).then(|| l[0].clone())
    });
    assert!(
        agreed.is_some(),
        "the namespaced cluster elected no leader:\n{}",
        net.log_tail(0)
    );
    eprintln!(
        "3 servers in their namespaces agree on leader {agreed:?} after {:?}",
        t_start.elapsed()
    );

    let c0 = ConsulClient::new(&net.url(0));
    let c1 = ConsulClient::with_timeout(&net.url(1), Duration::from_secs(5));
    let ports = ClusterPorts::allocate();
    let node0 = net.node(0);
    register_cluster(&c0, &node0, &ports);
    let hax = HaxProc::spawn(
        &format!("127.0.0.1:{}", net.proxies[0]),
        &node0,
        free_port(),
        ports.hax,
        &dir,
        &[],
    );
    hax.assert_ready(Duration::from_secs(40));
    let holder = |c: &ConsulClient| {
        c.kv_get_pair("leader")
            .ok()
            .flatten()
            .filter(|p| p.session.as_deref().is_some_and(|s| !s.is_empty()))
            .map(|p| (p.value_str(), p.session.clone().unwrap_or_default()))
    };
    let (_, session_before) =
        wait_until(Duration::from_secs(30), || holder(&c1)).expect("an RC leader");
    let driver = RawPeer::connect(&hax.endpoint(), IOS1);
    let before = driver
        .entrypoint_until_ok(Duration::from_secs(20))
        .expect("entrypoint");

    net.set_link(0, false);
    let mut last_tag = 0;
    let t_cut = Instant::now();
    let mut replies: Vec<(i32, Duration)> = Vec::new();
    let (mut seq, mut n) = (0, 0);
    let (mut majority_leader, mut key_released) = (None, None);
    // Bounded: one probe every ~500 ms for PARTITION.
    while t_cut.elapsed() < PARTITION {
        n += 1;
        seq += 1;
        let tag = driver
            .send_event(
                if seq % 2 == 1 {
                    ProcessEvent::Starting
                } else {
                    ProcessEvent::Started
                },
                seq,
            )
            .expect("event");
        let p = RawPeer::connect(&hax.endpoint(), Fid::typed(b'r', 3, 0x300 + n));
        let t = Instant::now();
        let r = p.entrypoint(true).unwrap_or_else(|| {
            panic!(
                "no entrypoint reply within 10 s, {:?} into the partition",
                t_cut.elapsed()
            )
        });
        let took = t.elapsed();
        replies.push((r.rc, took));
        if r.rc == 0 {
            assert_eq!(
                (r.rm_fid, r.rm_ep.clone()),
                (before.rm_fid, before.rm_ep.clone())
            );
        }
        last_tag = tag;
        drop(p);
        let l1 = net.leader_of(1);
        if majority_leader.is_none() && !l1.is_empty() && !l1.starts_with(&Net::addr(0)) {
            majority_leader = Some(t_cut.elapsed());
        }
        if key_released.is_none() && holder(&c1).is_none_or(|(_, s)| s != session_before) {
            key_released = Some(t_cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500).saturating_sub(t.elapsed()));
    }
    let cut_for = t_cut.elapsed();
    net.set_link(0, true);
    let t_heal = Instant::now();

    // Recovery, polled together (bounded: 45 s), each time taken when first seen.
    let (mut first_ok, mut kv, mut leader, mut agreed) = (None, None, None, None);
    let mut probe = 0x1000;
    while t_heal.elapsed() < Duration::from_secs(45)
        && (first_ok.is_none() || kv.is_none() || leader.is_none() || agreed.is_none())
    {
        if kv.is_none() && kv_seq(&net.url(1), IOS1) == Some(seq) {
            kv = Some(t_heal.elapsed());
        }
        if leader.is_none()
            && holder(&c1).is_some_and(|(node, s)| node == node0 && s != session_before)
        {
            leader = Some(t_heal.elapsed());
        }
        if agreed.is_none() {
            let l: Vec<String> = (0..SERVERS).map(|i| net.leader_of(i)).collect();
            if !l[0].is_empty() && l.iter().all(|x| *x == l[0]) {
                agreed = Some(t_heal.elapsed());
            }
        }
        if first_ok.is_none() {
            probe += 1;
            let p = RawPeer::connect(&hax.endpoint(), Fid::typed(b'r', 3, probe));
            if p.entrypoint(true).is_some_and(|r| r.rc == 0) {
                first_ok = Some(t_heal.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ok = replies.iter().filter(|r| r.0 == 0).count();
    let eagain: Vec<Duration> = replies.iter().filter(|r| r.0 != 0).map(|r| r.1).collect();
    let all: Vec<Duration> = replies.iter().map(|r| r.1).collect();
    eprintln!(
        "server 0 cut off {cut_for:?}: majority leader after {majority_leader:?}, leader key released after {key_released:?}; \
         {} entrypoint requests ({ok} from the cache, {} EAGAIN, min {:?}), reply max {:?}; {seq} events; \
         after the heal: raft agreed {agreed:?}, entrypoint ok {first_ok:?}, KV caught up {kv:?}, leader key re-acquired {leader:?}",
        replies.len(),
        eagain.len(),
        eagain.iter().min(),
        pct(&all, 100)
    );
    figure(
        "d: partition (hax's server cut off 15 s)",
        &format!(
            "events {seq} | in KV {:?} | entrypoints {} ({ok} cached, {} EAGAIN), max {:?} | majority leader {majority_leader:?}, \
             key released {key_released:?} | after heal: raft {agreed:?}, ep {first_ok:?}, KV {kv:?}, leader {leader:?}",
            kv_seq(&net.url(1), IOS1),
            replies.len(),
            eagain.len(),
            pct(&all, 100)
        ),
    );
    assert!(
        pct(&all, 100) < Duration::from_secs(3),
        "an entrypoint reply took {:?}",
        pct(&all, 100)
    );
    assert!(
        eagain.iter().all(|d| *d >= Duration::from_millis(150)),
        "EAGAIN answered without the pause: {eagain:?}"
    );
    assert!(
        first_ok.is_some(),
        "entrypoints not answered after the heal:\n{}",
        log_tail(&hax.log, 30)
    );
    assert!(
        kv.is_some(),
        "the events sent during the partition did not reach KV:\n{}",
        log_tail(&hax.log, 30)
    );
    assert!(
        driver
            .wait(Duration::from_secs(20), |s| (s.acked >= last_tag)
                .then_some(()))
            .is_some(),
        "the events sent during the partition were not confirmed after it"
    );
    assert!(
        leader.is_some(),
        "hax did not get the leader key back:\n{}",
        log_tail(&hax.log, 30)
    );
    drop(hax);
}
