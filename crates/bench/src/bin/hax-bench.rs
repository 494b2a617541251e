//! `hax-bench`: runs hax's load scenarios against a real Consul dev agent and the real `hax`
//! binary with simulated Motr processes, and writes BENCHMARKS.md, the plot data and the raw
//! results. `scripts/bench` builds and runs it; see `hax-bench --help`. The work is done in
//! the `hax_bench` library.
use clap::Parser;
use hax_bench::{self as bench, report, Config};
use hax_testkit::{consul_version, hax_bin, try_consul_bin};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "hax-bench",
    version,
    about = "Load scenarios and benchmarks of hax (real Consul, real hax, simulated Motr processes)"
)]
struct Args {
    /// CI mode: small sizes, one run, checks that every figure was produced.
    #[arg(long)]
    short: bool,
    /// The consul binary (default: what scripts/install-consul prints).
    #[arg(long, env = "HAX_CONSUL_BIN")]
    consul_bin: Option<PathBuf>,
    /// The hax binary (default: `hax` next to this program).
    #[arg(long)]
    hax_bin: Option<PathBuf>,
    /// Scratch directory (default: a new one under $TMPDIR).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the scratch directory (Consul and hax logs).
    #[arg(long)]
    keep: bool,
    /// Runs of each scenario (memory runs once).
    #[arg(long)]
    runs: Option<usize>,
    /// Cluster sizes of the boot storm and failure propagation, comma-separated.
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Repetitions of each failure-propagation case.
    #[arg(long)]
    fail_reps: Option<usize>,
    /// Seconds of link churn in the memory scenario.
    #[arg(long)]
    churn_secs: Option<f64>,
    /// Profile hax with `perf record` during the biggest boot storm, failure propagation and
    /// payload of the first run (top symbols go into the report).
    #[arg(long)]
    perf: bool,
    /// Run only these scenario groups (comma-separated: sizes, events, ingest, memory,
    /// multinode).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Write the report (Markdown) here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the multi-node scenario's report (Markdown) here.
    #[arg(long)]
    multinode_markdown: Option<PathBuf>,
    /// Write the multi-node figures (gnuplot data) here.
    #[arg(long)]
    multinode_plot_data: Option<PathBuf>,
    /// Cluster sizes of the multi-node scenario (comma-separated node counts, at least 3).
    #[arg(long, value_delimiter = ',')]
    multinode_sizes: Option<Vec<usize>>,
    /// Write the latency-against-size table (gnuplot data) here.
    #[arg(long)]
    plot_data: Option<PathBuf>,
    /// Write every result (JSON) here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Do not run anything: write the report and plot data again from a results file written
    /// by `--json` (to change the report's wording without measuring again).
    #[arg(long)]
    from_json: Option<PathBuf>,
    /// Soak mode instead of the scenarios: this many minutes of steady load with periodic
    /// faults, sampling hax's RSS, file descriptors and threads (report to --markdown/stdout).
    #[arg(long)]
    soak_minutes: Option<f64>,
    /// Soak: events per second.
    #[arg(long, default_value_t = 20.0)]
    soak_rate: f64,
    /// Soak: simulated processes.
    #[arg(long, default_value_t = 20)]
    soak_processes: usize,
    /// Schedule the simulated processes like hax instead of under SCHED_IDLE (by default they
    /// only take the CPU hax and Consul leave: they stand for processes on other machines).
    #[arg(long)]
    peers_compete: bool,
    /// The command line to name in the report.
    #[arg(long, default_value = "scripts/bench")]
    command: String,
}

/// The report and plot data again from `--json` output.
fn from_json(a: &Args, path: &std::path::Path) -> ExitCode {
    #[derive(serde::Deserialize)]
    struct Saved {
        config: Config,
        results: bench::Results,
    }
    let saved: Saved = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hax-bench: {}: {e}", path.display());
            return ExitCode::from(66);
        }
    };
    let version = consul_version(&saved.config.consul_bin);
    if let Some(p) = &a.markdown {
        let _ = std::fs::write(
            p,
            report::markdown(&saved.config, &saved.results, &version, &a.command),
        );
    }
    if let Some(p) = &a.plot_data {
        let _ = std::fs::write(p, report::plot_data(&saved.config, &saved.results));
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let a = Args::parse();
    let priority = bench::env::lower_peer_priority(a.from_json.is_none() && !a.peers_compete);
    if let Some(p) = &a.from_json {
        return from_json(&a, p);
    }
    let consul_bin = match a.consul_bin.clone().map(Ok).unwrap_or_else(try_consul_bin) {
        Ok(p) if p.is_file() => p,
        Ok(p) => {
            eprintln!("hax-bench: consul binary {} not found", p.display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("hax-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let hax_bin = a.hax_bin.clone().unwrap_or_else(hax_bin);
    if !hax_bin.is_file() {
        eprintln!(
            "hax-bench: hax binary {} not found (cargo build --release --bins)",
            hax_bin.display()
        );
        return ExitCode::from(2);
    }
    let work = a
        .work
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("hax-bench.{}", std::process::id())));
    if let Some(minutes) = a.soak_minutes {
        let sc = bench::soak::SoakConfig {
            duration: Duration::from_secs_f64(minutes.max(0.1) * 60.0),
            processes: a.soak_processes.max(1),
            rate: a.soak_rate.max(1.0),
            fault_every: Duration::from_secs(20),
            sample_every: Duration::from_secs(10),
        };
        return match bench::soak::run(&consul_bin, &hax_bin, &work, &sc) {
            Ok(samples) => {
                let md = bench::soak::report(&sc, &samples);
                match &a.markdown {
                    Some(p) => {
                        let _ = std::fs::write(p, &md);
                    }
                    None => println!("{md}"),
                }
                if !a.keep {
                    let _ = std::fs::remove_dir_all(&work);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hax-bench soak: {e}");
                ExitCode::from(1)
            }
        };
    }
    let mut cfg = if a.short {
        Config::short(consul_bin, hax_bin, work)
    } else {
        Config::full(consul_bin, hax_bin, work)
    };
    cfg.keep = a.keep;
    cfg.perf = a.perf;
    if let Some(r) = a.runs {
        cfg.runs = r.max(1);
    }
    if let Some(s) = a.sizes.clone() {
        cfg.sizes = s.into_iter().filter(|n| *n > 0).collect();
    }
    if let Some(o) = a.only.clone() {
        cfg.only = o;
    }
    if let Some(s) = a.multinode_sizes.clone() {
        cfg.multinode_sizes = s.into_iter().filter(|n| *n >= 3).collect();
    }
    if let Some(r) = a.fail_reps {
        cfg.fail_reps = r.max(1);
    }
    if let Some(s) = a.churn_secs {
        cfg.churn_secs = s.clamp(1.0, 600.0);
    }
    cfg.peers = priority;
    let version = consul_version(&cfg.consul_bin);
    bench::scenarios::say(format!(
        "{} mode, {} run(s), sizes {:?}; {version}; hax {}",
        if cfg.short { "short" } else { "full" },
        cfg.runs,
        cfg.sizes,
        cfg.hax_bin.display()
    ));
    let res = bench::run_all(&cfg);
    let write = |path: &Option<PathBuf>, text: String| {
        if let Some(p) = path {
            if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(d);
            }
            if let Err(e) = std::fs::write(p, text) {
                eprintln!("hax-bench: cannot write {}: {e}", p.display());
            }
        }
    };
    write(
        &a.markdown,
        report::markdown(&cfg, &res, &version, &a.command),
    );
    write(&a.plot_data, report::plot_data(&cfg, &res));
    if !res.multinode.is_empty() {
        write(
            &a.multinode_markdown,
            report::multinode_markdown(&cfg, &res),
        );
        write(&a.multinode_plot_data, report::multinode_plot_data(&res));
    }
    write(
        &a.json,
        serde_json::to_string_pretty(&serde_json::json!({"config": cfg, "results": res}))
            .unwrap_or_default(),
    );
    let missing = report::missing_figures(&cfg, &res);
    for m in &missing {
        eprintln!("hax-bench: MISSING: {m}");
    }
    bench::scenarios::say(format!("done in {:.0} s", res.seconds));
    if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
