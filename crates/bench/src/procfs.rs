//! CPU time and memory of a process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.
use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds used so far by `pid`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// Memory figures of `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
}

pub fn mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Mem {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
    })
}

/// CPU use of `pid` between two points in time.
pub struct CpuMeter {
    pid: u32,
    cpu0: f64,
    t0: Instant,
}

impl CpuMeter {
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            cpu0: cpu_seconds(pid).unwrap_or(0.0),
            t0: Instant::now(),
        }
    }
    /// (CPU seconds used, wall seconds) since `start`.
    pub fn read(&self) -> (f64, f64) {
        let cpu = cpu_seconds(self.pid).unwrap_or(self.cpu0) - self.cpu0;
        (cpu, self.t0.elapsed().as_secs_f64())
    }
}

/// Waits (at most `max`) until `pid` uses less than `cores` CPU over half a second: the
/// backlog of a previous step has drained. Returns how long it waited.
pub fn wait_quiet(pid: u32, cores: f64, max: std::time::Duration) -> std::time::Duration {
    let t0 = Instant::now();
    while t0.elapsed() < max {
        let m = CpuMeter::start(pid);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (cpu, wall) = m.read();
        if cpu / wall < cores {
            break;
        }
    }
    t0.elapsed()
}

/// A `perf record -g` of a process, stopped with SIGINT; `report` gives the top symbols.
pub struct Perf {
    child: Option<std::process::Child>,
    pub data: std::path::PathBuf,
}

impl Perf {
    /// Starts recording `pid` into `data` (None when perf is missing or refuses).
    pub fn start(pid: u32, data: &std::path::Path) -> Option<Perf> {
        let child = std::process::Command::new("perf")
            .args(["record", "-F", "499", "-g", "-p", &pid.to_string(), "-o"])
            .arg(data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        std::thread::sleep(std::time::Duration::from_millis(300));
        Some(Perf {
            child: Some(child),
            data: data.to_path_buf(),
        })
    }

    /// Stops recording; the hottest symbols (self time, at least 1%), one per line.
    pub fn report(mut self) -> Vec<String> {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        let out = std::process::Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "-g",
                "none",
                "--percent-limit",
                "1",
                "--sort",
                "comm,dso,symbol",
                "-i",
            ])
            .arg(&self.data)
            .output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.trim_start()
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
            .take(20)
            .map(|l| l.trim().to_string())
            .collect()
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        let m = mem(me).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib && m.threads >= 1);
    }
}
