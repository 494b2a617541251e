//! Soak mode: a steady load with periodic faults for a long time, sampling hax's resident
//! memory, open file descriptors and threads. They must stay flat: a leak shows as growth.
//!
//! Load: `processes` simulated m0ds booted once, then process events at `rate` per second
//! (round robin, alternating STARTED / DTM_RECOVERED, so every event changes a state and is
//! broadcast). Faults, one every `fault_every`, in turn: a process killed and restarted (the
//! restart rule drops its old link), a watch payload marking a process critical then passing,
//! the Consul agent paused (SIGSTOP) for 3 s.
use super::env::Env;
use super::procfs::mem;
use hax_fid::Fid;
use hax_sim::{ProcessEvent, ProcessType, SimConfig, SimProcess};
use hax_testkit::payload::health_payload;
use hax_testkit::try_signal;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct SoakConfig {
    pub duration: Duration,
    pub processes: usize,
    pub rate: f64,
    pub fault_every: Duration,
    pub sample_every: Duration,
}

/// One sample of hax's resources.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    pub at_s: f64,
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: u64,
    pub events_sent: u64,
    pub faults: u64,
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn config(i: usize) -> SimConfig {
    let mut c = SimConfig::new(Fid::typed(b'r', 7, 0x100 + 3 * i as u64));
    c.pools = vec![Fid::typed(b'o', 1, 4)];
    c.get_fids = vec![Fid::typed(b't', 1, 0), Fid::typed(b'o', 1, 4)];
    c.timeouts.reply = Duration::from_secs(20);
    c
}

/// Runs the soak; returns the samples (the first is taken after the processes booted).
pub fn run(
    consul_bin: &Path,
    hax_bin: &Path,
    dir: &Path,
    cfg: &SoakConfig,
) -> Result<Vec<Sample>, String> {
    let env = Env::start(consul_bin, hax_bin, dir, "soak")?;
    let pid = env.hax_pid();
    let mut procs: Vec<SimProcess> = Vec::new();
    for i in 0..cfg.processes {
        let p = SimProcess::connect(&env.endpoint(), config(i)).map_err(|e| e.to_string())?;
        p.boot()
            .map_err(|e| format!("process {i} did not boot: {e}"))?;
        procs.push(p);
    }
    let fids: Vec<Fid> = procs.iter().map(|p| p.fid()).collect();
    let start = Instant::now();
    let (mut sent, mut faults, mut next_fault, mut next_sample) =
        (0u64, 0u64, cfg.fault_every, Duration::ZERO);
    let mut samples = Vec::new();
    let tick = Duration::from_millis(100);
    let per_tick = (cfg.rate * tick.as_secs_f64()).max(1.0) as usize;
    let mut hax_http = env.hax_client();
    while start.elapsed() < cfg.duration {
        let t0 = Instant::now();
        for _ in 0..per_tick {
            let i = (sent as usize) % procs.len();
            let event = if (sent / procs.len() as u64).is_multiple_of(2) {
                ProcessEvent::Started
            } else {
                ProcessEvent::DtmRecovered
            };
            if procs[i]
                .send_process_event_with_pid(event, ProcessType::M0d, std::process::id() as u64)
                .is_ok()
            {
                sent += 1;
            }
        }
        let now = start.elapsed();
        if now >= next_fault {
            next_fault += cfg.fault_every;
            let victim = (faults as usize) % procs.len();
            match faults % 3 {
                0 => {
                    procs[victim].kill();
                    procs[victim]
                        .restart()
                        .map_err(|e| format!("restart of process {victim}: {e}"))?;
                }
                1 => {
                    let bad = health_payload("soak", "ios", &fids, &fids[victim..=victim], 1);
                    let good = health_payload("soak", "ios", &fids, &[], 2);
                    hax_http.post("/watcher/service/ios", &bad)?;
                    std::thread::sleep(Duration::from_secs(1));
                    hax_http.post("/watcher/service/ios", &good)?;
                }
                _ => {
                    try_signal(env.consul_pid(), "STOP");
                    std::thread::sleep(Duration::from_secs(3));
                    try_signal(env.consul_pid(), "CONT");
                }
            }
            faults += 1;
        }
        if now >= next_sample {
            next_sample += cfg.sample_every;
            let m = mem(pid).ok_or("hax is gone")?;
            let s = Sample {
                at_s: now.as_secs_f64(),
                rss_kib: m.rss_kib,
                fds: fds(pid),
                threads: m.threads,
                events_sent: sent,
                faults,
            };
            eprintln!(
                "hax-bench soak: {:>7.1} s  RSS {:>7} KiB  fds {:>4}  threads {:>3}  events {:>8}  faults {:>3}",
                s.at_s, s.rss_kib, s.fds, s.threads, s.events_sent, s.faults
            );
            samples.push(s);
        }
        if let Some(rest) = tick.checked_sub(t0.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(samples)
}

/// Markdown table of the samples and a verdict comparing the last third with the first.
pub fn report(cfg: &SoakConfig, samples: &[Sample]) -> String {
    let mut out = format!(
        "## Soak\n\n{} processes, {} events/s, a fault every {:?} (restart / critical-then-passing / Consul paused 3 s), {:?} in all.\n\n| t (s) | RSS (KiB) | fds | threads | events sent | faults |\n|---|---|---|---|---|---|\n",
        cfg.processes, cfg.rate, cfg.fault_every, cfg.duration
    );
    for s in samples {
        out += &format!(
            "| {:.0} | {} | {} | {} | {} | {} |\n",
            s.at_s, s.rss_kib, s.fds, s.threads, s.events_sent, s.faults
        );
    }
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let tail = &samples[samples.len() * 2 / 3..];
        let max_rss = tail.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let max_fds = tail.iter().map(|s| s.fds).max().unwrap_or(0);
        let max_thr = tail.iter().map(|s| s.threads).max().unwrap_or(0);
        out += &format!(
            "\nFirst sample → highest of the last third: RSS {} → {} KiB ({:+.1}%), fds {} → {}, threads {} → {} (last sample: {} KiB, {} fds, {} threads).\n",
            first.rss_kib,
            max_rss,
            (max_rss as f64 / first.rss_kib.max(1) as f64 - 1.0) * 100.0,
            first.fds,
            max_fds,
            first.threads,
            max_thr,
            last.rss_kib,
            last.fds,
            last.threads
        );
    }
    out
}
