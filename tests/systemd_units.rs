//! The systemd units `hax bootstrap --systemd-dir` writes: `systemd-analyze verify` accepts
//! them without a word, their stop timeout follows `--shutdown-ms`, and hax under the unit's
//! `Type=notify` reports READY=1 and STOPPING=1 (with MemoryDenyWriteExecute's kernel
//! equivalent on, where the kernel has it).
mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hax-{tag}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `hax bootstrap examples/threenode.yaml --systemd-dir <dir>/units --node <node>` with the
/// binaries linked into `<dir>/bin` (verify checks that ExecStart= binaries exist).
fn write_units(dir: &Path, node: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hax"), bin.join("hax")).unwrap();
    std::os::unix::fs::symlink(consul_bin(), bin.join("consul")).unwrap();
    let units = dir.join("units");
    let out = Command::new(env!("CARGO_BIN_EXE_hax"))
        .arg("bootstrap")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/threenode.yaml"))
        .arg("--systemd-dir")
        .arg(&units)
        .args(["--node", node])
        .arg("--hax-bin")
        .arg(bin.join("hax"))
        .arg("--consul-bin")
        .arg(bin.join("consul"))
        .env_remove("HAX_NODE")
        .env_remove("HAX_SHUTDOWN_MS")
        .output()
        .expect("run hax bootstrap");
    assert!(
        out.status.success(),
        "hax bootstrap --systemd-dir failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    units
}

#[test]
fn the_units_of_a_node_pass_systemd_analyze_verify_without_a_word() {
    let dir = temp_dir("systemd-verify");
    let units = write_units(&dir, "node-2");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(units.join("hax.service"))
        .arg(units.join("consul.service"))
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/setup installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}):\n{said}",
        out.status
    );
    for f in ["hax.env", "consul-watches.json", "watch-secret"] {
        assert!(units.join(f).is_file(), "{f} was not written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_stop_timeout_is_a_little_above_the_shutdown_bound_hax_is_given() {
    let dir = temp_dir("systemd-timeout");
    let units = write_units(&dir, "node-1");
    let text = std::fs::read_to_string(units.join("hax.service")).unwrap();
    let exec = text
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart=");
    let words: Vec<&str> = exec.split_whitespace().collect();
    let shutdown_ms: u64 = words
        .windows(2)
        .find(|w| w[0] == "--shutdown-ms")
        .map(|w| w[1].parse().unwrap())
        .unwrap_or_else(|| panic!("the unit does not pass --shutdown-ms: {exec}"));
    assert_eq!(shutdown_ms, hax::config::DEFAULT_SHUTDOWN_MS);
    let stop_s: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec=")
        .parse()
        .unwrap();
    assert!(
        stop_s * 1000 > shutdown_ms && stop_s * 1000 <= shutdown_ms + 5000,
        "TimeoutStopSec={stop_s} for --shutdown-ms {shutdown_ms}"
    );
    assert!(text.contains("\nType=notify\n") && text.contains("\nKillSignal=SIGTERM\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts hax (its endpoint comes from the registered cluster) with NOTIFY_SOCKET, under PR_SET_MDWE (the kernel's MemoryDenyWriteExecute)
/// when `mdwe`.
fn spawn_hax(
    agent: &ConsulAgent,
    http_port: u16,
    socket: &Path,
    log: &Path,
    mdwe: bool,
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hax"));
    cmd.args(["--consul", &agent.http_addr(), "--node", agent.node_name()])
        .args(["--http-port", &http_port.to_string()])
        .args(["--entrypoint-pause-ms", "200", "--leader-lock-delay-s", "1"])
        .args(["--shutdown-ms", "4000"])
        .env("NOTIFY_SOCKET", socket)
        .env("HAX_LOG", "info")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out));
    if mdwe {
        // SAFETY: prctl is async-signal-safe and touches only the child being exec'd.
        unsafe {
            cmd.pre_exec(|| {
                const PR_SET_MDWE: libc::c_int = 65;
                const PR_MDWE_REFUSE_EXEC_GAIN: libc::c_ulong = 1;
                if libc::prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => format!("(nothing: {e})"),
    }
}

#[test]
fn hax_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let agent = ConsulAgent::dev();
    let ports = ClusterPorts::allocate();
    register_cluster(agent.client(), agent.node_name(), &ports);
    let dir = temp_dir("systemd-notify");
    let socket = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let log = dir.join("hax.log");
    let http_port = free_port();
    let (mut child, mdwe) = match spawn_hax(&agent, http_port, &socket, &log, true) {
        Ok(c) => (c, true),
        Err(e) => {
            eprintln!("note: no PR_SET_MDWE on this kernel ({e}); hax runs without it");
            let c = spawn_hax(&agent, http_port, &socket, &log, false).unwrap();
            (c, false)
        }
    };
    let ready = recv(&sock);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !ready.contains("READY=1") {
        let _ = child.kill();
        panic!("hax sent {ready:?}, not READY=1 (mdwe {mdwe}); its log:\n{text}");
    }
    let readyz = readyz(&format!("http://127.0.0.1:{http_port}"));
    assert!(
        readyz.as_ref().is_some_and(|(status, _)| *status == 200),
        "READY=1 before GET /readyz says ready ({readyz:?}):\n{text}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopping = recv(&sock);
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        stopping.contains("STOPPING=1"),
        "hax sent {stopping:?} after SIGTERM, not STOPPING=1; its log:\n{text}"
    );
    assert!(status.success(), "hax exited with {status}:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
