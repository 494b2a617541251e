//! BENCHMARKS.md and the data behind docs/bench-latency.png, from [`Results`].
use super::stats::Spread;
use super::{Config, Results, Run, SizeRun};
use crate::multinode::{Cost, MultinodeRun};
use std::fmt::Write as _;

/// The machine, as far as /proc says.
pub fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        ("nproc".into(), nproc.to_string()),
        (
            "memory".into(),
            format!("{:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0),
        ),
        ("CPU model".into(), model),
        ("kernel".into(), kernel),
    ]
}

/// Median and spread of `f` over the runs that have it.
fn over_runs(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Spread {
    Spread::of(runs.iter().filter_map(&f).collect())
}

fn size_of(r: &Run, n: usize) -> Option<&SizeRun> {
    r.sizes.iter().find(|s| s.n == n)
}

fn over_size(runs: &[Run], n: usize, f: impl Fn(&SizeRun) -> f64) -> Spread {
    over_runs(runs, |r| size_of(r, n).map(&f))
}

/// One row per cluster size: n, entrypoint p50/p99, one failure p50/p99, node failure
/// p50/p99, full-view failure p50/p99 (medians over runs, ms).
pub fn plot_data(cfg: &Config, res: &Results) -> String {
    let mut out = String::from("# n ep_p50 ep_p99 fail1_p50 fail1_p99 failnode_p50 failnode_p99 failfull_p50 failfull_p99\n");
    for &n in &cfg.sizes {
        let m = |f: &dyn Fn(&SizeRun) -> f64| over_size(&res.runs, n, f).median;
        let _ = writeln!(
            out,
            "{n} {:.3} {:.3} {:.3} {:.3} {:.3} {:.3} {:.3} {:.3}",
            m(&|s| s.boot.entrypoint.p50),
            m(&|s| s.boot.entrypoint.p99),
            m(&|s| s.single.all.p50),
            m(&|s| s.single.all.p99),
            m(&|s| s.node.all.p50),
            m(&|s| s.node.all.p99),
            m(&|s| s.single_full_view.all.p50),
            m(&|s| s.single_full_view.all.p99),
        );
    }
    out
}

/// Checks of `--short`: every figure was produced (not how fast).
pub fn missing_figures(cfg: &Config, res: &Results) -> Vec<String> {
    let mut miss = res.errors.clone();
    let runs = &res.runs;
    for &n in cfg.sizes.iter().filter(|_| cfg.runs_group("sizes")) {
        if over_size(runs, n, |s| s.boot.entrypoint.p99).runs == 0
            || over_size(runs, n, |s| s.boot.booted as f64).median < n as f64
        {
            miss.push(format!(
                "boot storm of {n}: no entrypoint figures or not every process booted"
            ));
        }
        if !over_size(runs, n, |s| s.boot.all_in_kv_ms)
            .median
            .is_finite()
            || over_size(runs, n, |s| s.boot.all_in_kv_ms).runs == 0
        {
            miss.push(format!(
                "boot storm of {n}: KV never showed every process DTM_RECOVERED"
            ));
        }
        if over_size(runs, n, |s| s.probe.entrypoints as f64).median < (2 * n) as f64 {
            miss.push(format!(
                "entrypoints alone at {n}: not every request was answered"
            ));
        }
        if over_size(runs, n, |s| s.boot.hax_requests_total as f64).median <= 0.0 {
            miss.push(format!("boot storm of {n}: no Consul request counted"));
        }
        for (what, f) in [
            (
                "one failure",
                (|s: &SizeRun| s.single.reps) as fn(&SizeRun) -> usize,
            ),
            ("full-view failure", |s: &SizeRun| s.single_full_view.reps),
            ("node failure", |s: &SizeRun| s.node.reps),
        ] {
            if over_size(runs, n, |s| f(s) as f64).median < cfg.fail_reps as f64 {
                miss.push(format!(
                    "{what} at {n} links: not every repetition was heard by every process"
                ));
            }
        }
        if over_size(runs, n, |s| s.single.hax_confirmed.n as f64).median < cfg.fail_reps as f64 {
            miss.push(format!(
                "one failure at {n} links: hax did not log a confirmed broadcast for every repetition"
            ));
        }
    }
    if cfg.runs_group("events")
        && over_runs(runs, |r| {
            r.events.as_ref().filter(|e| !e.timed_out).map(|e| e.ratio)
        })
        .runs
            < runs.len()
    {
        miss.push("process events: KV never reflected every last event".into());
    }
    for &(entries, _, _) in cfg.ingest.iter().filter(|_| cfg.runs_group("ingest")) {
        if over_runs(runs, |r| {
            r.ingest
                .iter()
                .find(|i| {
                    i.entries == entries && i.posted > 0 && i.statuses.keys().all(|s| *s == 200)
                })
                .map(|i| i.payloads_per_s)
        })
        .runs
            < runs.len()
        {
            miss.push(format!(
                "watch ingest of {entries}-entry payloads: no figures or non-200 answers"
            ));
        }
    }
    match &res.memory {
        None if !cfg.runs_group("memory") => {}
        None => miss.push("memory: not measured".into()),
        Some(m) if m.cycles == 0 || m.rss_end_kib == 0 => {
            miss.push("memory: no churn cycle or no RSS sample".into())
        }
        _ => {}
    }
    for &n in cfg
        .multinode_sizes
        .iter()
        .filter(|_| cfg.runs_group("multinode"))
    {
        for mode in ["node", "watches"] {
            match res
                .multinode
                .iter()
                .find(|r| r.nodes == n && r.mode == mode)
            {
                None => miss.push(format!("multinode {n} nodes, {mode}: not measured")),
                Some(r) => {
                    for (kind, c) in [("process failure", &r.process), ("node failure", &r.node)] {
                        if c.missed > 0 || c.heard_all.n == 0 {
                            miss.push(format!(
                                "multinode {n} nodes, {mode}, {kind}: {} node(s) missed a change",
                                c.missed
                            ));
                        }
                    }
                }
            }
        }
    }
    miss
}

/// The multi-node figures for gnuplot: nodes, then bytes per change for a process failure
/// (`node`, `watches`) and a node failure (`node`, `watches`); "?" when missing.
pub fn multinode_plot_data(res: &Results) -> String {
    let mut o = String::from("# nodes proc_node proc_watches nodefail_node nodefail_watches\n");
    let mut sizes: Vec<usize> = res.multinode.iter().map(|r| r.nodes).collect();
    sizes.sort();
    sizes.dedup();
    for n in sizes {
        let f = |mode: &str, g: fn(&MultinodeRun) -> f64| {
            res.multinode
                .iter()
                .find(|r| r.nodes == n && r.mode == mode)
                .map_or("?".to_string(), |r| format!("{:.3}", g(r)))
        };
        let _ = writeln!(
            o,
            "{n} {} {} {} {}",
            f("node", |r| r.process.bytes_per_change),
            f("watches", |r| r.process.bytes_per_change),
            f("node", |r| r.node.bytes_per_change),
            f("watches", |r| r.node.bytes_per_change)
        );
    }
    o
}

/// The multi-node scenario's section: per size and mode, the cost of one change, then the
/// growth exponents fitted over the sizes and their extrapolation to 1000 nodes.
pub fn multinode_markdown(cfg: &Config, res: &Results) -> String {
    use crate::multinode::growth;
    let mut o = String::new();
    let w = &mut o;
    if res.multinode.is_empty() {
        return o;
    }
    let _ = writeln!(
        w,
        "# Scaling across nodes: what one failure costs the cluster\n\n\
         Measured by `hax-bench` (`scripts/bench --only multinode`; CI runs `--short`, 4 nodes) on \
         one machine: {} real Consul agents per size (3 servers, the rest clients, each with its \
         own ports), one hax per agent (its own node name, HTTP port and HA endpoint), one \
         simulated IO server linked to each hax.\n\n\
         - **process failure**: the check of a client node's IO server fails, then passes again \
         ({} time(s) per size and mode; each failure and each recovery is one change); the time \
         runs from the check's update to the last linked process hearing the note.\n\
         - **node failure**: the last client node dies (its Consul agent and its hax SIGKILLed); \
         the time runs from the kill to every other node's process hearing the dead node's IO \
         server TRANSIENT, so it includes Consul's own failure detection (gossip probes and \
         suspicion, seconds).\n\n\
         Per change: the bytes every hax received from Consul (`hax_consul_received_bytes_total`: \
         watch bodies and query answers, idle traffic taken out), the HTTP requests every agent \
         served (Consul's `consul_api_http_count`), the three servers' CPU time (`/proc`). \
         `node`: `--health-from node` (each hax reads its own node's checks, changes travel \
         through `bq/`, the RC leader watches node liveness); `watches`: Consul watches POST every \
         node's hax the whole `ios` snapshot and the checks list, as the original Hare did \
         (docs/scaling.md).\n",
        cfg.multinode_sizes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join("/"),
        cfg.multinode_reps
    );
    let _ = writeln!(
        w,
        "| nodes | mode | change | bytes per change | Consul requests per change | servers' CPU per change | every node heard it: p50 / max | missed |\n|---|---|---|---|---|---|---|---|"
    );
    for r in &res.multinode {
        for (kind, c) in [("process failure", &r.process), ("node failure", &r.node)] {
            let _ = writeln!(
                w,
                "| {} | {} | {kind} | {:.0} | {:.1} | {:.1} ms | {:.1} / {:.1} ms | {} |",
                r.nodes,
                r.mode,
                c.bytes_per_change,
                c.requests_per_change,
                c.server_cpu_ms_per_change,
                c.heard_all.p50,
                c.heard_all.max,
                c.missed,
            );
        }
    }
    let _ = writeln!(
        w,
        "\nWhat the agents cost with nothing changing (all agents of a size together):\n\n\
         | nodes | mode | agents' CPU, idle | agents' RSS | bytes/s all hax receive, idle |\n|---|---|---|---|---|"
    );
    for r in &res.multinode {
        let _ = writeln!(
            w,
            "| {} | {} | {:.2} cores | {:.0} MiB | {:.0} |",
            r.nodes, r.mode, r.agents_idle_cores, r.agents_rss_mib, r.idle_bytes_per_s
        );
    }
    let _ = writeln!(
        w,
        "\nGrowth with the number of nodes N (least squares of log(figure) on log(N); a figure \
         growing as N^k has exponent k) and the fitted value at N = 1000:\n\n\
         | figure | change | mode | exponent | at 1000 nodes |\n|---|---|---|---|---|"
    );
    type Pick = fn(&Cost) -> f64;
    let figures: [(&str, &str, Pick); 4] = [
        ("bytes per change", " B", |c| c.bytes_per_change),
        ("Consul requests per change", "", |c| c.requests_per_change),
        ("servers' CPU per change", " ms", |c| {
            c.server_cpu_ms_per_change
        }),
        ("every node heard it (p50)", " ms", |c| c.heard_all.p50),
    ];
    for (what, unit, f) in figures {
        for (kind, pick) in [
            (
                "process failure",
                (|r: &MultinodeRun| &r.process) as fn(&MultinodeRun) -> &Cost,
            ),
            ("node failure", |r| &r.node),
        ] {
            for mode in ["node", "watches"] {
                let pts: Vec<(f64, f64)> = res
                    .multinode
                    .iter()
                    .filter(|r| r.mode == mode)
                    .map(|r| (r.nodes as f64, f(pick(r))))
                    .collect();
                match growth(&pts, 1000.0) {
                    Some((k, at)) => {
                        let _ =
                            writeln!(w, "| {what} | {kind} | {mode} | {k:.2} | {at:.0}{unit} |");
                    }
                    None => {
                        let _ = writeln!(w, "| {what} | {kind} | {mode} | (one size only) | |");
                    }
                }
            }
        }
    }
    o
}

fn kib_mb(k: u64) -> String {
    format!("{:.1} MB", k as f64 / 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**not met**"
    }
}

/// BENCHMARKS.md.
pub fn markdown(cfg: &Config, res: &Results, consul_version: &str, command: &str) -> String {
    let runs = &res.runs;
    let mut o = String::new();
    let big = *cfg.sizes.iter().max().unwrap_or(&0);
    let w = &mut o;
    let _ = writeln!(w, "# hax benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `{command}` ({} run(s), {:.0} s in all). Regenerate with `scripts/bench` \
         (about 10 minutes; `scripts/bench --short` is the CI check, under a minute). Every figure \
         is the **median over runs with the range (min–max) in brackets**; latency percentiles are \
         nearest-rank over the samples of one run.\n",
        cfg.runs, res.seconds
    );
    let _ = writeln!(w, "## Machine and software\n\n| | |\n|---|---|");
    for (k, v) in machine() {
        let _ = writeln!(w, "| {k} | {v} |");
    }
    let _ = writeln!(
        w,
        "| load average (1, 5, 15 min) | {} before, {} after |",
        res.load_before, res.load_after
    );
    let _ = writeln!(
        w,
        "| Consul | {consul_version} (`consul agent -dev`, in memory) |"
    );
    if !cfg.peers.is_empty() {
        let _ = writeln!(
            w,
            "| scheduling | {} (they stand for processes on other machines; `--peers-compete` schedules them like hax) |",
            cfg.peers
        );
    }
    let _ = writeln!(
        w,
        "| hax | release build (`cargo build --release`), `HAX_LOG=info` to a file |"
    );
    let _ = writeln!(
        w,
        "\nThe machine is shared with other developers: the bench, hax, Consul and up to {big} \
         simulated processes (two threads each) share its cores, so absolute figures carry \
         noise from outside the bench (see the load averages).\n"
    );
    let _ = writeln!(w, "## What runs\n");
    let hax = super::env::hax_command(
        std::path::Path::new("hax"),
        "127.0.0.1:<consul-http>",
        "<node>",
        0,
        std::path::Path::new("."),
    );
    let _ = writeln!(
        w,
        "Each scenario gets a fresh environment, started by `hax-bench`:\n\n\
         - Consul: `consul agent -dev -node=<node> -bind=127.0.0.1 -client=127.0.0.1 -http-port=<free> \
         -dns-port=-1 -server-port=<free> -serf-lan-port=<free> -serf-wan-port=<free> -grpc-port=-1 \
         -grpc-tls-port=-1 -config-file=config.hcl` with `telemetry {{ prometheus_retention_time = \"1h\" }}` \
         (for cumulative request counters); no watches: the bench POSTs payloads to hax itself.\n\
         - The single-node cluster registered by the test kit as the tests register theirs \
         (`hax_testkit::NodeDef`: hax and confd services with passing TTL checks, the `m0conf/` \
         tree); hax campaigns for the RC leader.\n\
         - `{} target/release/hax --consul {} --node {} {}` (`--http-port <free>`).\n\
         - Simulated m0d processes from `hax_sim` in the bench process, each on its own TCP \
         connection to hax's HA endpoint (stand-in wire protocol): boot = first entrypoint, \
         STARTING, second entrypoint, one FAILURE_VEC_REQ, an NVEC GET of 80 objects, one IO \
         service's STARTING/STARTED, STARTED, DTM_RECOVERED (`SimProcess::boot`).\n",
        hax.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        hax.consul,
        hax.node,
        hax.flags.join(" ")
    );

    // Targets.
    let fail_big = over_size(runs, big, |s| s.single.all.p99);
    let fail_big_first = over_size(runs, big, |s| s.single.first.p99);
    let fail_big_hax = over_size(runs, big, |s| s.single.hax_confirmed.p99);
    let fail_big_handed = over_size(runs, big, |s| s.single.hax_handed.p99);
    let ep_big_hax = over_size(runs, big, |s| s.boot.hax_entrypoint.p99);
    let ep_big = over_size(runs, big, |s| s.boot.entrypoint.p99);
    let reads_big = over_size(runs, big, |s| s.probe.reads_beyond_idle);
    let probe_eps = over_size(runs, big, |s| s.probe.entrypoints as f64);
    let ratio = over_runs(runs, |r| r.events.as_ref().map(|e| e.ratio));
    let biggest_payload = cfg.ingest.iter().map(|i| i.0).max().unwrap_or(0);
    let ing_big = over_runs(runs, |r| {
        r.ingest
            .iter()
            .find(|i| i.entries == biggest_payload)
            .map(|i| i.post.p50)
    });
    let handled_big = over_runs(runs, |r| {
        r.ingest
            .iter()
            .find(|i| i.entries == biggest_payload)
            .map(|i| i.handled.p50)
    });
    let _ = writeln!(
        w,
        "## Targets\n\n| target | measured | verdict |\n|---|---|---|"
    );
    let _ = writeln!(
        w,
        "| failure propagation p99 < 10 ms at {big} links (hax's share: the POST reaching hax → every link confirmed delivery) | POST reaching hax → every link confirmed p99 {} ms (→ every send handed to Motr p99 {} ms); end to end (POST sent → the last simulated process heard it) p99 {} ms, first process p99 {} ms | {} |",
        fail_big_hax.show(2),
        fail_big_handed.show(2),
        fail_big.show(2),
        fail_big_first.show(2),
        if fail_big_hax.median < 10.0 {
            verdict(true).to_string()
        } else {
            format!(
                "**not met** to confirmation (see Findings); hax's own part, to every send handed to Motr: {}",
                verdict(fail_big_handed.median < 10.0)
            )
        }
    );
    let _ = writeln!(
        w,
        "| boot storm of {big}: entrypoint p99 < 20 ms, no Consul read per entrypoint | p99 {} ms in the storm as the simulated processes see it (request sent → reply read); hax's own time (Motr's callback → reply handed back) p99 {} ms; entrypoints alone: {} Consul reads beyond hax's idle polling for {} entrypoints | {} |",
        ep_big.show(2),
        ep_big_hax.show(2),
        reads_big.show(1),
        probe_eps.show(0),
        {
            let no_reads = reads_big.median < probe_eps.median / 100.0;
            if ep_big.median < 20.0 || !no_reads {
                verdict(ep_big.median < 20.0 && no_reads).to_string()
            } else {
                format!(
                    "hax's own time: {}; as the simulated processes see it: {}",
                    verdict(ep_big_hax.median < 20.0),
                    verdict(false)
                )
            }
        }
    );
    let _ = writeln!(
        w,
        "| process events ≥ 0.8 × Consul's same-run limit | {} | {} |",
        ratio.show(2),
        verdict(ratio.median >= 0.8)
    );
    let _ = writeln!(
        w,
        "| a {biggest_payload}-entry payload handled in < 50 ms | POST answered in {} ms (p50); through ProcessStatus {} ms (p50) | {} |",
        ing_big.show(1),
        handled_big.show(1),
        verdict(handled_big.median < 50.0)
    );
    if let Some(m) = &res.memory {
        // Flat: no growth over the second half of the churn (the first seconds warm the
        // allocator and the stand-in's graveyard of dead links up).
        let grow = m.rss_end_kib as f64 / m.rss_mid_kib.max(1) as f64;
        let _ = writeln!(
            w,
            "| RSS < 50 MB at {} links, flat under 100000 link cycles | {} with {} links; churn {} → {} (mid) → {} (end) over {} cycles | {} |",
            m.links,
            kib_mb(m.rss_links.rss_kib),
            m.links,
            kib_mb(m.rss_start_kib),
            kib_mb(m.rss_mid_kib),
            kib_mb(m.rss_end_kib),
            m.cycles,
            if m.cycles < 100_000 {
                format!(
                    "{}; only {} cycles fitted in the time bound",
                    verdict(m.rss_links.rss_kib < 50 * 1024 && grow < 1.05),
                    m.cycles
                )
            } else {
                verdict(m.rss_links.rss_kib < 50 * 1024 && grow < 1.05).to_string()
            }
        );
    }

    // Boot storm.
    let _ = writeln!(w, "\n## Boot storm\n");
    let _ = writeln!(
        w,
        "N processes start at once (one thread each, no stagger) against one hax. *All sent*: \
         until every process sent DTM_RECOVERED; *all in KV*: until `processes/<fid>` said \
         DTM_RECOVERED for every one (a blocking query on `processes/` at most every 20 ms). \
         Entrypoint: first request to its rc-0 reply, over processes.\n"
    );
    let _ = writeln!(w, "| N | booted | entrypoint p50 ms | entrypoint p99 ms | entrypoint max ms | all sent ms | all in KV ms | Consul requests by hax | per process | of which reads |");
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    for &n in &cfg.sizes {
        let s = |f: &dyn Fn(&SizeRun) -> f64| over_size(runs, n, f);
        let _ = writeln!(
            w,
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s(&|x| x.boot.booted as f64).show(0),
            s(&|x| x.boot.entrypoint.p50).show(2),
            s(&|x| x.boot.entrypoint.p99).show(2),
            s(&|x| x.boot.entrypoint.max).show(2),
            s(&|x| x.boot.all_sent_ms).show(0),
            s(&|x| x.boot.all_in_kv_ms).show(0),
            s(&|x| x.boot.hax_requests_total as f64).show(0),
            s(&|x| x.boot.requests_per_process).show(3),
            s(&|x| x.boot.hax_reads as f64).show(0),
        );
    }
    let _ = writeln!(w, "\n| N | hax sends given up (no delivery report in 10 s) | broadcasts (`hax_broadcasts_total`) | hax RSS after the storm | until hax was quiet again (s) |");
    let _ = writeln!(w, "|---|---|---|---|---|");
    for &n in &cfg.sizes {
        let s = |f: &dyn Fn(&SizeRun) -> f64| over_size(runs, n, f);
        let _ = writeln!(
            w,
            "| {n} | {} | {} | {} MB | {} |",
            s(&|x| x.boot.sends_timed_out as f64).show(0),
            s(&|x| x.boot.broadcasts as f64).show(0),
            s(&|x| x.boot.hax_mem.rss_kib as f64 / 1024.0).show(1),
            s(&|x| x.settle_ms / 1e3).show(1),
        );
    }
    let _ = writeln!(
        w,
        "\nWhat was counted: Consul's own `consul_api_http_count{{method,path}}` \
         (`GET /v1/agent/metrics?format=prometheus`, cumulative) read before the storm and after \
         KV showed every process; minus the bench's own requests (its KV polls, counted by the \
         bench, and the metrics reads). A request is counted when it completes, so a blocking \
         query hax had open is counted only if it returned during the storm. By path, last run:\n"
    );
    if let Some(last) = runs.last() {
        for s in &last.sizes {
            let by: Vec<String> = s
                .boot
                .hax_requests
                .iter()
                .map(|(k, v)| format!("`{k}` {v}"))
                .collect();
            let _ = writeln!(
                w,
                "- N = {}: {}",
                s.n,
                if by.is_empty() {
                    "none".into()
                } else {
                    by.join(", ")
                }
            );
        }
    }

    let _ = writeln!(
        w,
        "\n*Entrypoints alone*: after the scenarios of each size, N more processes each connect, \
         send a first and a non-first entrypoint request and close (no event, so no KV write and \
         no broadcast), all at once. hax's Consul requests are counted as above, and compared \
         with its reads in an idle second just before (its background polling: leader key, RC \
         queues).\n"
    );
    let _ = writeln!(w, "| N | entrypoints | took s | first reply p50 ms | p99 ms | hax's Consul reads | idle reads/s | reads beyond idle |");
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for &n in &cfg.sizes {
        let s = |f: &dyn Fn(&SizeRun) -> f64| over_size(runs, n, f);
        let _ = writeln!(
            w,
            "| {n} | {} | {} | {} | {} | {} | {} | {} |",
            s(&|x| x.probe.entrypoints as f64).show(0),
            s(&|x| x.probe.secs).show(2),
            s(&|x| x.probe.first.p50).show(2),
            s(&|x| x.probe.first.p99).show(2),
            s(&|x| x.probe.reads as f64).show(0),
            s(&|x| x.probe.idle_reads_per_s).show(1),
            s(&|x| x.probe.reads_beyond_idle).show(1),
        );
    }

    // Failure propagation.
    let _ = writeln!(w, "\n## Failure propagation\n");
    let _ = writeln!(
        w,
        "With N processes booted (N links plus hax's self link), the bench POSTs a service-health \
         payload marking processes critical straight to hax's `/watcher/service/ios` (hax runs \
         with `--health-from watches --reconcile false`, so it acts on the POST alone; a payload \
         listing only the failing processes goes to a path of its own per case and repetition, `/watcher/bench-targets/<k>-<n>`, \
         since a payload is a snapshot of what its path covers) and takes the time from just \
         before the POST to the moment the last simulated process received the TRANSIENT note(s) \
         (each process's reader thread timestamps every note it receives). Then it POSTs them \
         passing and waits for ONLINE before the next repetition ({} repetitions per case, the \
         failing process rotating). *one*: a payload with the failing entry only; *full view*: \
         the payload lists all N processes, one critical (what a Consul watch really sends); \
         *node*: one payload with {} critical entries (fewer when N is smaller). A health \
         snapshot's changes are broadcast at once (no coalescing window; a broadcast still in \
         flight would hold them, which the bench avoids by waiting for the previous one's \
         confirmations). *hax: confirmed* is hax's share, from \
         its metrics (`hax_broadcast_confirmed_seconds`, the sum and count added during the \
         repetition): from the POST reaching hax to Motr's delivered callback for the last \
         link (every simulated process had read and acknowledged the note).\n",
        cfg.fail_reps, cfg.node_failing
    );
    let _ = writeln!(w, "| N | one: hax confirmed p50 ms | p99 ms | last heard p50 ms | p99 ms | first heard p50 ms | full view p50 ms | p99 ms | node: processes | last heard p50 ms | p99 ms |");
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &cfg.sizes {
        let s = |f: &dyn Fn(&SizeRun) -> f64| over_size(runs, n, f);
        let _ = writeln!(
            w,
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s(&|x| x.single.hax_confirmed.p50).show(2),
            s(&|x| x.single.hax_confirmed.p99).show(2),
            s(&|x| x.single.all.p50).show(2),
            s(&|x| x.single.all.p99).show(2),
            s(&|x| x.single.first.p50).show(2),
            s(&|x| x.single_full_view.all.p50).show(2),
            s(&|x| x.single_full_view.all.p99).show(2),
            s(&|x| x.node.failing as f64).show(0),
            s(&|x| x.node.all.p50).show(2),
            s(&|x| x.node.all.p99).show(2),
        );
    }
    let _ = writeln!(
        w,
        "\n![latency against cluster size](docs/bench-latency.png)\n"
    );

    // Events.
    let _ = writeln!(w, "## Process events to KV\n");
    let ev =
        |f: &dyn Fn(&super::EventsResult) -> f64| over_runs(runs, |r| r.events.as_ref().map(f));
    let _ = writeln!(
        w,
        "{} booted processes each send {} process events as fast as they can (STARTING and \
         STOPPING alternating, which change no HA state, so no broadcast: the KV path alone; the \
         pid field numbers the events). hax's rate = events ÷ time from the first event sent \
         until KV `processes/<fid>` holds every process's last event (polled every 50 ms). \
         ConsulWriter keeps one `/v1/txn` of at most 64 ops in flight and lets a newer write to \
         a key replace an unsent older one, so hax may write fewer ops than events. Consul's \
         limit: the same number of records (same size) written straight to `/v1/txn` in 64-op \
         transactions by one client on one kept-alive connection, measured just before and just \
         after hax's turn; the limit is their mean.\n",
        cfg.event_procs, cfg.events_per_proc
    );
    let _ = writeln!(w, "| events | sent in ms | hax: KV reflects all in ms | hax events/s | hax txns | Consul limit keys/s (before / after) | ratio |");
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        w,
        "| {} | {} | {} | {} | {} (direct: {}) | {} ({} / {}) | {} |",
        ev(&|e| e.events as f64).show(0),
        ev(&|e| e.send_ms).show(0),
        ev(&|e| e.hax_ms).show(0),
        ev(&|e| e.hax_events_per_s).show(0),
        ev(&|e| e.hax_txns as f64).show(0),
        ev(&|e| e.direct_txns as f64).show(0),
        ev(&|e| e.consul_limit_keys_per_s).show(0),
        ev(&|e| e.direct_before_keys_per_s).show(0),
        ev(&|e| e.direct_after_keys_per_s).show(0),
        ev(&|e| e.ratio).show(2),
    );

    let _ = writeln!(
        w,
        "\nhax's memory when KV had caught up: {} MB RSS, peak {} MB; `eq/` entries published by then \
         (every event is also published to the RC's event queue, one at a time): {} of {}.",
        ev(&|e| e.hax_mem.rss_kib as f64 / 1024.0).show(0),
        ev(&|e| e.hax_mem.hwm_kib as f64 / 1024.0).show(0),
        ev(&|e| e.eq_published as f64).show(0),
        ev(&|e| e.events as f64).show(0),
    );

    // Ingest.
    let _ = writeln!(w, "\n## Watch ingest\n");
    let _ = writeln!(
        w,
        "Synthetic `service` watch payloads shaped like the captured ones (every entry with the \
         node's serfHealth and the service's TTL check; ServiceIDs are process fids; all passing, \
         for processes hax has no link to, so no broadcast) POSTed to `/watcher/service/ios` back \
         to back on one kept-alive connection, bounded by count and time, as successive \
         deliveries of one watch: each with one check changed since the last (its ModifyIndex) \
         and a newer `X-Consul-Index`. hax decodes a large delivery from what changed since the \
         path's last one (the first one whole). CPU = hax's user+system \
         time ÷ wall time (1.00 = one core). *Handled*: POST one payload, then at once a \
         one-entry payload failing a booted process; time until that process heard TRANSIENT \
         (so the big payload went through WatchIngest and ProcessStatus first). Decoding alone: \
         `cargo bench --bench watch_payload`. Same as `cargo run --release --example replay_watch -- --synthetic-entries N`.\n"
    );
    let _ = writeln!(w, "| entries | bytes | payloads/s | entries/s | POST p50 ms | p99 ms | handled p50 ms | hax CPU (cores) | hax RSS after |");
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|");
    for &(entries, _, _) in &cfg.ingest {
        let s = |f: &dyn Fn(&super::IngestResult) -> f64| {
            over_runs(runs, |r| {
                r.ingest.iter().find(|i| i.entries == entries).map(f)
            })
        };
        let _ = writeln!(
            w,
            "| {entries} | {} | {} | {} | {} | {} | {} | {} | {} MB |",
            s(&|i| i.payload_bytes as f64).show(0),
            s(&|i| i.payloads_per_s).show(1),
            s(&|i| i.entries_per_s).show(0),
            s(&|i| i.post.p50).show(2),
            s(&|i| i.post.p99).show(2),
            s(&|i| i.handled.p50).show(1),
            s(&|i| i.hax_cpu_cores).show(2),
            s(&|i| i.rss_after.rss_kib as f64 / 1024.0).show(1),
        );
    }

    // Memory.
    if let Some(m) = &res.memory {
        let _ = writeln!(w, "\n## Memory\n");
        let _ = writeln!(
            w,
            "One hax: RSS when ready {}, with {} booted links {} (peak so far {}, {} threads). \
             Then link churn with the {} links still connected: {} churners each, in a loop, \
             connect as one of 64 processes of their own, ask the first entrypoint (Motr makes \
             a link to hax), report STOPPED (hax has Motr drop the link: FAILED on the self \
             link), wait for its ACK and close the connection (the stand-in lets the link go \
             after `HAX_STANDIN_RPC_TIMEOUT_MS=200`): a link's whole life. Once each process's \
             FAILED state has been broadcast, a cycle broadcasts nothing. {} cycles in {:.0} s ({:.1}/s; \
             target 100000: {}), {} failed cycles{}. hax counted {} link disconnections \
             (`hax_motr_link_disconnects_total`) and held {} links at the end (`hax_motr_links`; at most {}: the booted ones, the self link \
             and one per churner; no link leaks).\n",
            kib_mb(m.rss_ready.rss_kib),
            m.links,
            kib_mb(m.rss_links.rss_kib),
            kib_mb(m.rss_links.hwm_kib),
            m.rss_links.threads,
            m.links,
            m.churners,
            m.cycles,
            m.churn_secs,
            m.cycles_per_s,
            if m.cycles >= 100_000 { "reached" } else { "not reached in the time bound" },
            m.cycle_errors,
            m.first_cycle_error.as_ref().map_or(String::new(), |e| format!(" (first: {e})")),
            m.disconnects,
            m.links_left_at_end.map_or("?".into(), |n| n.to_string()),
            m.links + 1 + m.churners,
        );
        let _ = writeln!(w, "| seconds into churn | cycles | RSS |\n|---|---|---|");
        for (t, c, k) in &m.samples {
            let _ = writeln!(w, "| {t:.1} | {c} | {} |", kib_mb(*k));
        }
    }
    if !res.multinode.is_empty() {
        // The multi-node section, one heading level down, with its plot.
        let section = multinode_markdown(cfg, res).replacen(
            "# Scaling across nodes",
            "\n## Scaling across nodes",
            1,
        );
        let _ = writeln!(
            w,
            "{}\n![bytes per change against the number of nodes](docs/bench-multinode.png)\n\n\
             Why node mode grows linearly and the watches grow as N², and what 1000 nodes would \
             cost: docs/scaling.md.",
            section.trim_end()
        );
    }
    findings(w, cfg, res);
    if !res.profiles.is_empty() {
        let _ = writeln!(w, "\n## Profiles\n");
        let _ = writeln!(
            w,
            "`perf record -F 499 -g -p <hax>` during the step, then `perf report --no-children \
             --sort comm,dso,symbol --percent-limit 1` (self time; thread name, object, symbol). \
             The stand-in's threads (its I/O thread `io_main`, the localities) are created by \
             MeroLink's thread and inherit its name `hax-merolink`:\n"
        );
        for (what, lines) in &res.profiles {
            let _ = writeln!(w, "{what}:\n\n```");
            for l in lines {
                let l = l
                    .trim_end()
                    .trim_end_matches('-')
                    .trim_end()
                    .trim_end_matches('-')
                    .trim_end();
                let l: Vec<&str> = l.split_whitespace().collect();
                let _ = writeln!(w, "{}", l.join(" "));
            }
            let _ = writeln!(w, "```\n");
        }
    }
    if !res.errors.is_empty() {
        let _ = writeln!(w, "\n## Errors during the run\n");
        for e in &res.errors {
            let _ = writeln!(w, "- {}", e.lines().next().unwrap_or(""));
        }
    }
    o
}

/// What the figures say about hax's bottlenecks (numbers from this run).
fn findings(w: &mut String, cfg: &Config, res: &Results) {
    let runs = &res.runs;
    let big = *cfg.sizes.iter().max().unwrap_or(&0);
    let mut items: Vec<String> = Vec::new();
    let ep99 = over_size(runs, big, |s| s.boot.entrypoint.p99);
    let ep99_hax = over_size(runs, big, |s| s.boot.hax_entrypoint.p99);
    let probe99 = over_size(runs, big, |s| s.probe.first.p99);
    if ep99.median >= 20.0 && ep99_hax.median < 20.0 {
        items.push(format!(
            "**Boot storm: the simulated processes wait for CPU, not for hax.** hax answers an \
             entrypoint {} ms (p99, from the buckets of `hax_entrypoint_seconds`) after Motr's callback hands it over, but the \
             simulated processes see {} ms (p99) from sending the request to reading the reply: \
             {big} of them boot on the same two cores, under SCHED_IDLE, so a reply waits in the \
             socket until its reader thread runs. Entrypoints alone ({big} processes asking at \
             once, nothing else to do) take {} ms (p99).",
            ep99_hax.show(2),
            ep99.show(0),
            probe99.show(1)
        ));
    } else if ep99_hax.median >= 20.0 {
        items.push(format!(
            "**Boot storm: hax's own entrypoint time.** hax took {} ms (p99) from Motr's \
             callback to handing the reply back; the responder answers from memory on its own \
             thread, so the time is spent waiting for the CPU or the stand-in's lock while \
             broadcasts and received messages are processed (see the profiles).",
            ep99_hax.show(1)
        ));
    }
    let confirmed = over_size(runs, big, |s| s.single.hax_confirmed.p99);
    let handed = over_size(runs, big, |s| s.single.hax_handed.p99);
    let handed50 = over_size(runs, big, |s| s.single.hax_handed.p50);
    if confirmed.median >= 10.0 {
        items.push(format!(
            "**Failure propagation at {big} links: the confirmations are Motr's transport and \
             the peers.** From the watch POST reaching hax to the last of {big} sends handed to \
             Motr takes {} ms (p50; p99 {} ms): parsing, the HA model, one NVEC SET built once \
             and given to Motr for each link. The rest, up to the last delivered callback ({} ms \
             p99), is the stand-in writing {big} sockets, {big} simulated processes reading and \
             acknowledging on the same two cores, and the stand-in reading {big} ACKs back. {}",
            handed50.show(1),
            handed.show(1),
            confirmed.show(1),
            match res.standin_floor {
                Some((n, ms)) => format!(
                    "The stand-in alone in the same run, without hax (ffi/tests/standin_bench: \
                     one message to {n} peers served by one thread that acknowledges at once), \
                     needs {ms:.1} ms (median) from the first send to the last delivered \
                     callback{}.",
                    if ms >= 10.0 {
                        "; so under 10 ms to confirmation is out of reach here whatever hax \
                         does, and hax's own part is what can be held to it"
                    } else {
                        ""
                    }
                ),
                None => String::new(),
            }
        ));
    }
    let ratio = over_runs(runs, |r| r.events.as_ref().map(|e| e.ratio));
    if ratio.median >= 1.0 {
        items.push(format!(
            "**Process events faster than Consul's write limit.** The ratio is {} because \
             `processes/<fid>` holds a process's latest event: while one transaction is in \
             flight, newer events replace the unsent older ones (ConsulWriter), and `eq/` keeps \
             one pending PROCESS-STATE-UPDATE per process (the RC publisher), so hax writes far \
             fewer keys than it receives events. The direct client writes every record.",
            ratio.show(2)
        ));
    } else if ratio.median < 0.8 {
        items.push(format!(
            "**Process events below 0.8 of Consul's limit ({}).** Every event is written to \
             `processes/` and (as the latest per process) to `eq/`; both compete for Consul, and \
             hax's event handling shares the two cores with the simulated processes. The \
             profile of the events step shows where hax's time went.",
            ratio.show(2)
        ));
    }
    if let Some(&(n, _, _)) = cfg.ingest.iter().max_by_key(|i| i.0) {
        let handled = over_runs(runs, |r| {
            r.ingest
                .iter()
                .find(|i| i.entries == n)
                .map(|i| i.handled.p50)
        });
        if handled.median >= 50.0 {
            items.push(format!(
                "**Watch ingest of {n}-entry payloads: {} ms.** A whole decode takes about 25 ms \
                 for 14 MB (`cargo bench --bench watch_payload`); a delivery is decoded from what \
                 changed since the last, and the rest is receiving the body on the one \
                 actix-web worker and the two cores shared with Consul and the bench.",
                handled.show(1)
            ));
        }
    }
    let idle = over_size(runs, big, |s| s.probe.idle_reads_per_s);
    if idle.median > 0.0 {
        items.push(format!(
            "**Background Consul reads.** Idle, hax reads Consul {} times a second (its leader \
             watch, the RC loop's look at the leader key, `eq/` and `timeout/` every \
             `--rc-poll-s`, its `bq/` consumer); during the boot storm the RC pipeline (each \
             event → `eq/` → rules → `bq/` → every hax's consumer and `bq-offsets/`) makes most \
             of the Consul requests counted per booted process. Entrypoints themselves read \
             nothing (see *Entrypoints alone*).",
            idle.show(1)
        ));
    }
    if items.is_empty() {
        return;
    }
    let _ = writeln!(w, "\n## Findings\n");
    for i in items {
        let _ = writeln!(w, "- {i}\n");
    }
}
