//! hax-bench: hax's load scenarios and benchmarks (the `hax-bench` binary): a real Consul dev
//! agent and the real `hax` binary, started with the test kit (`hax-testkit`), driven by
//! simulated Motr processes ([`hax_sim`]) and watch payloads (`hax_testkit::payload`); figures
//! from the simulated processes' own timestamps, Consul's own request counters and `/proc`.
//!
//! - [`env`]: Consul + registered single-node cluster + hax, from the kit, and Consul's
//!   request counters;
//! - [`hax_metrics`]: hax's own figures from its `GET /metrics`;
//! - [`http`]: a small blocking HTTP/1.1 client (loopback only) whose timings are the bench's;
//! - [`procfs`]: hax's CPU and memory from `/proc`, `perf` profiles;
//! - [`scenarios`]: boot storm, failure propagation, process events → KV, watch ingest,
//!   memory under link churn;
//! - [`multinode`]: what one failure costs a cluster of N nodes, `--health-from node` against
//!   `watches`;
//! - [`soak`]: steady load with periodic faults for a long time;
//! - [`stats`]: percentiles and spreads;
//! - [`report`]: BENCHMARKS.md and the plot data.
pub mod env;
pub mod hax_metrics;
pub mod http;
pub mod multinode;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod soak;
pub mod stats;

use scenarios::{say, BootResult, EventsResult, IngestResult, MemoryResult, PropagationResult};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to run, how big and how long.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub consul_bin: PathBuf,
    pub hax_bin: PathBuf,
    /// Scratch directory (Consul data, logs); removed afterwards unless `keep`.
    pub work: PathBuf,
    pub keep: bool,
    pub short: bool,
    pub runs: usize,
    /// Cluster sizes of the boot storm and failure propagation.
    pub sizes: Vec<usize>,
    pub fail_reps: usize,
    /// Processes failing at once in the node-failure case.
    pub node_failing: usize,
    pub event_procs: usize,
    pub events_per_proc: usize,
    /// (entries, most payloads, most seconds).
    pub ingest: Vec<(usize, usize, f64)>,
    pub handled_reps: usize,
    pub mem_links: usize,
    pub churners: usize,
    pub churn_secs: f64,
    pub churn_max_cycles: u64,
    /// Profile hax with `perf record` during the biggest boot storm, propagation and payload.
    pub perf: bool,
    /// Cluster sizes (nodes) of the multi-node scenario, and its failures per size and mode.
    #[serde(default)]
    pub multinode_sizes: Vec<usize>,
    #[serde(default)]
    pub multinode_reps: usize,
    /// Scenario groups to run (`sizes`, `events`, `ingest`, `memory`, `multinode`); empty: all.
    #[serde(default)]
    pub only: Vec<String>,
    /// How the simulated processes were scheduled against hax (see `--peer-nice`).
    #[serde(default)]
    pub peers: String,
}

impl Config {
    /// Whether the scenario group `what` runs.
    pub fn runs_group(&self, what: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == what)
    }

    pub fn full(consul_bin: PathBuf, hax_bin: PathBuf, work: PathBuf) -> Config {
        Config {
            consul_bin,
            hax_bin,
            work,
            keep: false,
            short: false,
            runs: 3,
            sizes: vec![10, 100, 1000],
            fail_reps: 20,
            node_failing: 20,
            event_procs: 200,
            events_per_proc: 250,
            ingest: vec![(10, 5000, 5.0), (1000, 1000, 5.0), (10000, 40, 8.0)],
            handled_reps: 5,
            mem_links: 1000,
            churners: 4,
            churn_secs: 180.0,
            churn_max_cycles: 100_000,
            perf: false,
            multinode_sizes: vec![4, 8, 16, 32],
            multinode_reps: 3,
            only: Vec::new(),
            peers: String::new(),
        }
    }

    /// CI mode: small sizes, one run, seconds instead of minutes.
    pub fn short(consul_bin: PathBuf, hax_bin: PathBuf, work: PathBuf) -> Config {
        Config {
            short: true,
            runs: 1,
            sizes: vec![10, 50],
            fail_reps: 3,
            event_procs: 64,
            events_per_proc: 20,
            ingest: vec![(10, 200, 1.0), (1000, 20, 1.0), (10000, 2, 2.0)],
            handled_reps: 1,
            mem_links: 50,
            churners: 2,
            churn_secs: 4.0,
            churn_max_cycles: 1000,
            multinode_sizes: vec![4],
            multinode_reps: 1,
            ..Config::full(consul_bin, hax_bin, work)
        }
    }
}

/// Results of one size in one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SizeRun {
    pub n: usize,
    pub boot: BootResult,
    /// After the storm: until hax used under 0.1 core (its backlog drained), at most 60 s.
    pub settle_ms: f64,
    pub probe: scenarios::EntrypointProbe,
    pub single: PropagationResult,
    pub single_full_view: PropagationResult,
    pub node: PropagationResult,
}

/// Results of one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Run {
    pub sizes: Vec<SizeRun>,
    pub events: Option<EventsResult>,
    pub ingest: Vec<IngestResult>,
}

/// Everything measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub runs: Vec<Run>,
    pub memory: Option<MemoryResult>,
    /// (what was profiled, hottest symbols of `perf report`).
    pub profiles: Vec<(String, Vec<String>)>,
    pub errors: Vec<String>,
    pub seconds: f64,
    pub load_before: String,
    pub load_after: String,
    /// The stand-in alone (ffi/tests/standin_bench, no hax): links, and the median ms from the
    /// first send of a one-message broadcast to the last delivered callback.
    #[serde(default)]
    pub standin_floor: Option<(usize, f64)>,
    /// The multi-node scenario, per size and mode.
    #[serde(default)]
    pub multinode: Vec<multinode::MultinodeRun>,
}

/// Builds and runs the stand-in's own broadcast bench for `n` peers (one reader thread for all
/// of them, acknowledging at once): the floor under hax's broadcast confirmation times.
pub fn standin_floor(n: usize) -> Result<f64, String> {
    let dir = hax_testkit::repo_root().join("ffi/tests");
    let built = std::process::Command::new("make")
        .args(["-s", "-C"])
        .arg(&dir)
        .arg("build/standin_bench")
        .output()
        .map_err(|e| format!("make: {e}"))?;
    if !built.status.success() {
        return Err(format!(
            "make build/standin_bench: {}",
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    let out = std::process::Command::new(dir.join("build/standin_bench"))
        .args([n.to_string(), "10".into(), "0".into()])
        .output()
        .map_err(|e| format!("standin_bench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("broadcast to "))
        .and_then(|l| l.split_once("median ")?.1.split_once(" ms")?.0.parse().ok())
        .ok_or_else(|| format!("standin_bench printed no broadcast figure: {text}"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs every scenario; errors of one environment are recorded and the others go on.
pub fn run_all(cfg: &Config) -> Results {
    let started = Instant::now();
    let mut res = Results {
        load_before: loadavg(),
        ..Results::default()
    };
    let mut env_no = 0;
    let mut new_env = |tag: &str| {
        env_no += 1;
        let dir = cfg.work.join(format!("{env_no:02}-{tag}"));
        say(format!(
            "starting Consul and hax ({tag}) in {}",
            dir.display()
        ));
        env::Env::start(&cfg.consul_bin, &cfg.hax_bin, &dir, &format!("{env_no}"))
    };
    for run in 0..cfg.runs {
        let mut r = Run::default();
        for &n in cfg.sizes.iter().filter(|_| cfg.runs_group("sizes")) {
            let env = match new_env(&format!("run{run}-n{n}")) {
                Ok(e) => e,
                Err(e) => {
                    res.errors.push(format!("run {run}, {n} processes: {e}"));
                    continue;
                }
            };
            let node = env.node();
            say(format!(
                "run {}/{}: boot storm of {n} processes",
                run + 1,
                cfg.runs
            ));
            let profiling = cfg.perf && run == 0 && Some(&n) == cfg.sizes.iter().max();
            let perf = |what: &str| {
                profiling
                    .then(|| {
                        procfs::Perf::start(
                            env.hax_pid(),
                            &cfg.work.join(format!("perf-{what}.data")),
                        )
                    })
                    .flatten()
            };
            let p = perf("boot");
            let (boot, procs) = scenarios::boot_storm(&env, n, 0x1_0000, Duration::ZERO);
            if let Some(p) = p {
                res.profiles
                    .push((format!("boot storm of {n} processes"), p.report()));
            }
            say(format!(
                "  booted {}/{n}; entrypoint p50 {:.2} ms p99 {:.2} ms; all DTM_RECOVERED in KV after {:.0} ms; {:.2} Consul requests per process",
                boot.booted, boot.entrypoint.p50, boot.entrypoint.p99, boot.all_in_kv_ms, boot.requests_per_process
            ));
            if let Some(e) = &boot.first_error {
                res.errors.push(format!(
                    "run {run}, boot storm of {n}: {} failed, first: {e}",
                    boot.failed
                ));
            }
            let mut sr = SizeRun {
                n,
                boot,
                ..SizeRun::default()
            };
            sr.settle_ms =
                procfs::wait_quiet(env.hax_pid(), 0.1, Duration::from_secs(60)).as_secs_f64() * 1e3;
            if !procs.is_empty() {
                say(format!(
                    "  failure propagation over {} links ({} repetitions)",
                    procs.len(),
                    cfg.fail_reps
                ));
                let p = perf("propagation");
                sr.single = scenarios::propagation(&env, &node, &procs, 1, cfg.fail_reps, false);
                if let Some(p) = p {
                    res.profiles.push((
                        format!(
                            "failure propagation over {n} links (one failure, {} repetitions)",
                            cfg.fail_reps
                        ),
                        p.report(),
                    ));
                }
                sr.single_full_view =
                    scenarios::propagation(&env, &node, &procs, 1, cfg.fail_reps, true);
                sr.node = scenarios::propagation(
                    &env,
                    &node,
                    &procs,
                    cfg.node_failing,
                    cfg.fail_reps,
                    false,
                );
                say(format!(
                    "  one failure: p50 {:.2} ms p99 {:.2} ms (full view {:.2}/{:.2}); {} at once: p50 {:.2} ms p99 {:.2} ms",
                    sr.single.all.p50,
                    sr.single.all.p99,
                    sr.single_full_view.all.p50,
                    sr.single_full_view.all.p99,
                    sr.node.failing,
                    sr.node.all.p50,
                    sr.node.all.p99
                ));
            }
            say(format!(
                "  entrypoints only: {n} more processes ask and close"
            ));
            sr.probe = scenarios::entrypoint_probe(&env, n, 0x8_0000);
            say(format!(
                "  {} entrypoints in {:.2} s: first p99 {:.2} ms; hax's Consul reads {} ({:.1}/s when idle)",
                sr.probe.entrypoints, sr.probe.secs, sr.probe.first.p99, sr.probe.reads, sr.probe.idle_reads_per_s
            ));
            r.sizes.push(sr);
            drop(procs);
            drop(env);
        }
        match if cfg.runs_group("events") {
            new_env(&format!("run{run}-events"))
        } else {
            Err("skipped".into())
        } {
            Err(e) if e == "skipped" => {}
            Err(e) => res.errors.push(format!("run {run}, events: {e}")),
            Ok(env) => {
                let (boot, procs) =
                    scenarios::boot_storm(&env, cfg.event_procs, 0x2_0000, Duration::ZERO);
                procfs::wait_quiet(env.hax_pid(), 0.1, Duration::from_secs(30));
                if boot.failed > 0 {
                    res.errors.push(format!(
                        "run {run}, events: {} processes failed to boot",
                        boot.failed
                    ));
                }
                std::thread::sleep(Duration::from_millis(500));
                say(format!(
                    "run {}/{}: {} processes × {} events",
                    run + 1,
                    cfg.runs,
                    procs.len(),
                    cfg.events_per_proc
                ));
                let p = (cfg.perf && run == 0)
                    .then(|| procfs::Perf::start(env.hax_pid(), &cfg.work.join("perf-events.data")))
                    .flatten();
                let ev = scenarios::process_events(&env, &procs, cfg.events_per_proc);
                if let Some(p) = p {
                    res.profiles.push((
                        format!(
                            "process events ({} processes × {})",
                            procs.len(),
                            cfg.events_per_proc
                        ),
                        p.report(),
                    ));
                }
                say(format!(
                    "  hax {:.0} events/s ({} txns), Consul limit {:.0} keys/s (before {:.0}, after {:.0}): ratio {:.2}",
                    ev.hax_events_per_s, ev.hax_txns, ev.consul_limit_keys_per_s, ev.direct_before_keys_per_s, ev.direct_after_keys_per_s, ev.ratio
                ));
                r.events = Some(ev);
            }
        }
        // Watch ingest on its own hax: the events scenario leaves work behind.
        match if cfg.runs_group("ingest") {
            new_env(&format!("run{run}-ingest"))
        } else {
            Err("skipped".into())
        } {
            Err(e) if e == "skipped" => {}
            Err(e) => res.errors.push(format!("run {run}, ingest: {e}")),
            Ok(env) => {
                let node = env.node();
                let (_, procs) = scenarios::boot_storm(&env, 4, 0x3_0000, Duration::ZERO);
                procfs::wait_quiet(env.hax_pid(), 0.05, Duration::from_secs(10));
                let biggest = cfg.ingest.iter().map(|i| i.0).max().unwrap_or(0);
                for &(entries, count, secs) in &cfg.ingest {
                    say(format!(
                        "run {}/{}: watch ingest, {entries}-entry payloads",
                        run + 1,
                        cfg.runs
                    ));
                    let p = (cfg.perf && run == 0 && entries == biggest)
                        .then(|| {
                            procfs::Perf::start(env.hax_pid(), &cfg.work.join("perf-ingest.data"))
                        })
                        .flatten();
                    let ing = scenarios::watch_ingest(
                        &env,
                        &node,
                        &procs,
                        entries,
                        count,
                        secs,
                        cfg.handled_reps,
                    );
                    if let Some(p) = p {
                        res.profiles.push((
                            format!("watch ingest of {entries}-entry payloads"),
                            p.report(),
                        ));
                    }
                    say(format!(
                        "  {:.1} payloads/s, {:.0} entries/s, POST p50 {:.2} ms p99 {:.2} ms, handled p50 {:.2} ms, hax CPU {:.2} cores, RSS {} KiB",
                        ing.payloads_per_s, ing.entries_per_s, ing.post.p50, ing.post.p99, ing.handled.p50, ing.hax_cpu_cores, ing.rss_after.rss_kib
                    ));
                    r.ingest.push(ing);
                }
            }
        }
        res.runs.push(r);
    }
    match if cfg.runs_group("memory") {
        new_env("memory")
    } else {
        Err("skipped".into())
    } {
        Err(e) if e == "skipped" => {}
        Err(e) => res.errors.push(format!("memory: {e}")),
        Ok(env) => {
            say(format!(
                "memory: {} links, then link churn for {:.0} s ({} churners, at most {} cycles)",
                cfg.mem_links, cfg.churn_secs, cfg.churners, cfg.churn_max_cycles
            ));
            let m = scenarios::memory(
                &env,
                cfg.mem_links,
                cfg.churners,
                cfg.churn_secs,
                cfg.churn_max_cycles,
            );
            say(format!(
                "  RSS ready {} KiB, with links {} KiB; churn {} cycles ({:.0}/s): start {} mid {} end {} KiB; {} links left",
                m.rss_ready.rss_kib,
                m.rss_links.rss_kib,
                m.cycles,
                m.cycles_per_s,
                m.rss_start_kib,
                m.rss_mid_kib,
                m.rss_end_kib,
                m.links_left_at_end.map_or("?".into(), |n| n.to_string())
            ));
            res.memory = Some(m);
        }
    }
    if cfg.runs_group("sizes") {
        let n = *cfg.sizes.iter().max().unwrap_or(&10);
        say(format!("the stand-in alone: a broadcast to {n} peers"));
        match standin_floor(n) {
            Ok(ms) => res.standin_floor = Some((n, ms)),
            Err(e) => res.errors.push(format!("stand-in floor: {e}")),
        }
    }
    if cfg.runs_group("multinode") {
        for &n in &cfg.multinode_sizes {
            for mode in ["node", "watches"] {
                let dir = cfg.work.join(format!("multinode-{n}-{mode}"));
                match multinode::run(
                    &cfg.consul_bin,
                    &cfg.hax_bin,
                    &dir,
                    n,
                    mode,
                    cfg.multinode_reps,
                ) {
                    Ok(r) => {
                        for (kind, c) in
                            [("process failure", &r.process), ("node failure", &r.node)]
                        {
                            say(format!(
                                "  {n} nodes, {mode}, {kind}: {:.0} bytes and {:.1} Consul requests per change, servers' CPU {:.1} ms, every node heard it p50 {:.1} ms (max {:.1} ms), {} missed",
                                c.bytes_per_change, c.requests_per_change, c.server_cpu_ms_per_change, c.heard_all.p50, c.heard_all.max, c.missed
                            ));
                        }
                        say(format!(
                            "  {n} nodes, {mode}, idle: agents {:.2} cores, {:.0} MiB; hax receive {:.0} bytes/s ({})",
                            r.agents_idle_cores, r.agents_rss_mib, r.idle_bytes_per_s,
                            r.idle_by_source.iter().map(|(k, v)| format!("{k} {v:.0}")).collect::<Vec<_>>().join(", ")
                        ));
                        res.multinode.push(r);
                    }
                    Err(e) => res.errors.push(format!("multinode {n} nodes, {mode}: {e}")),
                }
            }
        }
    }
    res.seconds = started.elapsed().as_secs_f64();
    res.load_after = loadavg();
    if !cfg.keep {
        let _ = std::fs::remove_dir_all(&cfg.work);
    }
    res
}
