//! Child processes, ports, scratch directories, logs and waiting: what every harness of the
//! kit (Consul agents, hax daemons) and the benchmark driver build on.
//!
//! - [`spawn_tied`]: children the kernel kills when the test or bench process dies, however it
//!   dies (`PR_SET_PDEATHSIG`), forked by one long-lived thread ([`start_spawner`]);
//! - [`free_port`]: loopback ports never handed out twice in a process;
//! - [`signal`] / [`try_signal`]: `kill -<SIG> <pid>`;
//! - [`scratch_dir`], [`log_tail`], [`wait_until`].
use std::fs;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::raw::{c_int, c_ulong};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Ports

static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A free TCP port on 127.0.0.1 (bind :0, read, release), never the same twice in a process.
/// Someone else may still grab it before the agent binds it: agent start-up retries on that.
pub fn free_port() -> u16 {
    free_port_with(false)
}

/// [`free_port`], free for UDP too (Consul's Serf ports).
pub(crate) fn free_port_with(udp_too: bool) -> u16 {
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

// ---------------------------------------------------------------------------------------------
// Scratch directories and logs

/// A fresh directory `$TMPDIR/hax-consul.<pid>.<tag>.<n>`; directories of dead test processes
/// are swept on first use.
pub fn scratch_dir(tag: &str) -> PathBuf {
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

// ---------------------------------------------------------------------------------------------
// Children tied to this process

extern "C" {
    fn prctl(option: c_int, ...) -> c_int;
    fn getppid() -> c_int;
}
const PR_SET_PDEATHSIG: c_int = 1;
const SIGKILL: c_ulong = 9;

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The thread every tied child is forked by. PR_SET_PDEATHSIG fires when the *thread* that
/// forked exits, so it lives as long as the process (its sender is in a static). Children also
/// take the scheduling of this thread: the bench starts it (first thing) before it lowers the
/// priority of its own threads, so that Consul and hax run at the priority it was started with.
pub fn start_spawner() {
    spawner();
}

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("kit-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and thread) never ends.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the kit-spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that the kernel SIGKILLs it when this process dies, however it dies.
pub fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id() as c_int;
    // SAFETY: the closure only makes async-signal-safe system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if getppid() != parent {
                return Err(io::Error::other("the parent process is already gone"));
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    lock(spawner())
        .send((cmd, reply))
        .map_err(|_| io::Error::other("the kit-spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the kit-spawner thread is gone"))?
}

/// SIGKILLs a child and reaps it.
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `sig` (a name such as "STOP") to `pid`; whether `kill` succeeded.
pub fn try_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends `sig` (a name such as "STOP") to a process this test started; panics if it fails.
pub fn signal(pid: u32, sig: &str) {
    assert!(try_signal(pid, sig), "kill -{sig} {pid} failed");
}
