//! `hax-m0d-sim`: plays one or many Motr processes (m0d, m0mkfs) against hax's HA endpoint over
//! the stand-in wire protocol. Boots them as a real m0d does, then stays (printing the notes HA
//! sends), stops cleanly, dies or exits. `--json` prints one JSON object per line per event.
//! The library (`hax_sim`) does the work; this file only maps flags and prints.
use clap::{Parser, ValueEnum};
use hax_fid::Fid;
use hax_sim::{self as sim, gen, SimConfig, SimEvent, SimEventKind, SimProcess, StobIoq};
use serde_json::json;
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    M0d,
    M0mkfs,
    Other,
}

/// What to do once booted.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Then {
    /// Keep running, printing notes, until HA drops or closes every connection, or stdin
    /// reaches end of file (then stop cleanly), or SIGTERM.
    Stay,
    /// Stop cleanly: STOPPING, services STOPPING/STOPPED, STOPPED; wait for ACKs; close.
    Stop,
    /// Die abruptly: close the socket at once.
    Die,
    /// Wait for HA to ACK everything sent, then close without stop events.
    Exit,
}

#[derive(Parser, Debug)]
#[command(
    name = "hax-m0d-sim",
    version,
    about = "Simulated Motr processes for hax (stand-in wire protocol)"
)]
struct Args {
    /// HA endpoint to connect to: inet:tcp:127.0.0.1@PORT.
    #[arg(long, env = "HAX_SIM_HA_ENDPOINT")]
    ha_endpoint: String,
    /// Process fid (0x7200000000000001:0x6, <7200000000000001:6> or a bare decimal key).
    #[arg(long, value_parser = parse_process_fid)]
    process_fid: Fid,
    /// The process's own endpoint (a label sent in the entrypoint request).
    #[arg(long)]
    endpoint: Option<String>,
    /// Process id reported to HA (default: this OS process's pid).
    #[arg(long)]
    pid: Option<u64>,
    /// Process type.
    #[arg(long = "type", value_enum, default_value_t = Kind::M0d)]
    kind: Kind,
    /// A service of the process, FID:TYPE (TYPE a number or mds|ios|confd|rms|stats|ha).
    #[arg(long = "service", value_parser = gen::parse_service_spec)]
    services: Vec<(Fid, u64)>,
    /// A pool (one FAILURE_VEC_REQ each during boot).
    #[arg(long = "pool", value_parser = parse_fid)]
    pools: Vec<Fid>,
    /// A configuration object for the boot NVEC GET.
    #[arg(long = "get-fid", value_parser = parse_fid, conflicts_with = "get_count")]
    get_fids: Vec<Fid>,
    /// Ask about N generated configuration objects in the boot NVEC GET.
    #[arg(long)]
    get_count: Option<usize>,
    /// Number of processes; the i-th has process and service keys moved by i × --fid-step.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Key distance between consecutive processes of --count.
    #[arg(long, default_value_t = 3)]
    fid_step: u64,
    /// Milliseconds between process starts with --count.
    #[arg(long, default_value_t = 0)]
    stagger_ms: u64,
    /// After boot, report one STOB IO error (write, EIO) on this sdev.
    #[arg(long, value_parser = parse_fid)]
    stob_error: Option<Fid>,
    /// What to do after boot.
    #[arg(long, value_enum, default_value_t = Then::Stay)]
    then: Then,
    /// Print one JSON object per line for every event.
    #[arg(long)]
    json: bool,
    /// Milliseconds to wait for each answer (entrypoint reply, failure vector, GET answer).
    #[arg(long, default_value_t = 30_000)]
    reply_timeout_ms: u64,
    /// Milliseconds to keep retrying entrypoint requests answered with an error.
    #[arg(long, default_value_t = 60_000)]
    entrypoint_timeout_ms: u64,
    /// Boot with a second, non-first entrypoint request after STARTING (link reuse), as an
    /// m0d without a configuration once did; a configured m0d sends none.
    #[arg(long)]
    second_entrypoint: bool,
    /// When a send finds HA gone: milliseconds of re-sending before asking for an entrypoint
    /// again (Motr: 10 × 1 s).
    #[arg(long, default_value_t = 10_000)]
    ha_resend_ms: u64,
    /// Then milliseconds until the old RPC link times out and unconfirmed messages are sent
    /// again (about 6 s).
    #[arg(long, default_value_t = 6_000)]
    rpc_timeout_ms: u64,
    /// Milliseconds a clean stop waits for the confirmation of STOPPED (m0_ha_link_flush).
    #[arg(long, default_value_t = 15_000)]
    flush_timeout_ms: u64,
}

fn parse_fid(s: &str) -> Result<Fid, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_process_fid(s: &str) -> Result<Fid, String> {
    Fid::parse_process_id(s).map_err(|e| format!("{e}"))
}

/// Prints one event: a JSON line with `--json`, else a human line.
fn say(as_json: bool, value: serde_json::Value, human: impl FnOnce() -> String) {
    if as_json {
        println!("{value}");
    } else {
        println!("{}", human());
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn print_event(as_json: bool, ev: &SimEvent) {
    let p = ev.process;
    match &ev.kind {
        SimEventKind::Note {
            fid,
            state,
            id_of_get,
        } => say(
            as_json,
            json!({"event": "note", "process": p, "fid": fid, "state": sim::state_name(*state),
                   "state_code": state, "id_of_get": id_of_get}),
            || match id_of_get {
                0 => format!("sim {p}: note {fid} -> {}", sim::state_name(*state)),
                g => format!(
                    "sim {p}: note {fid} -> {} (answer to GET {g})",
                    sim::state_name(*state)
                ),
            },
        ),
        SimEventKind::Dropped => say(as_json, json!({"event": "dropped", "process": p}), || {
            format!("sim {p}: dropped by HA")
        }),
        SimEventKind::Closed { reason } => say(
            as_json,
            json!({"event": "closed", "process": p, "reason": reason}),
            || format!("sim {p}: connection closed: {reason}"),
        ),
        SimEventKind::HaLost { reason } => say(
            as_json,
            json!({"event": "ha_lost", "process": p, "reason": reason}),
            || format!("sim {p}: HA is gone ({reason}); re-sending, then reconnecting"),
        ),
        SimEventKind::Reconnected { link } => say(
            as_json,
            json!({"event": "reconnected", "process": p, "link": link.name()}),
            || format!("sim {p}: reconnected to HA (link {link})"),
        ),
        SimEventKind::Resent { count, first_tag } => say(
            as_json,
            json!({"event": "resent", "process": p, "count": count, "first_tag": first_tag}),
            || format!("sim {p}: re-sent {count} unconfirmed message(s) from tag {first_tag}"),
        ),
        SimEventKind::Died { reason } => say(
            as_json,
            json!({"event": "died", "process": p, "reason": reason}),
            || format!("sim {p}: died: {reason}"),
        ),
        SimEventKind::FlushHung { tag } => say(
            as_json,
            json!({"event": "flush_hung", "process": p, "tag": tag}),
            || format!("sim {p}: hangs in m0_ha_link_flush: tag {tag} never confirmed"),
        ),
    }
}

fn base_config(a: &Args, events: crossbeam_channel::Sender<SimEvent>) -> SimConfig {
    let mut cfg = SimConfig::new(a.process_fid);
    if let Some(ep) = &a.endpoint {
        cfg.endpoint = ep.clone();
    }
    if let Some(pid) = a.pid {
        cfg.pid = pid;
    }
    cfg.process_type = match a.kind {
        Kind::M0d => sim::ProcessType::M0d,
        Kind::M0mkfs => sim::ProcessType::M0mkfs,
        Kind::Other => sim::ProcessType::Other,
    };
    cfg.services = a.services.clone();
    cfg.pools = a.pools.clone();
    cfg.get_fids = a.get_fids.clone();
    cfg.timeouts.reply = Duration::from_millis(a.reply_timeout_ms);
    cfg.timeouts.entrypoint = Duration::from_millis(a.entrypoint_timeout_ms);
    cfg.timeouts.ack = Duration::from_millis(a.flush_timeout_ms);
    cfg.second_entrypoint = a.second_entrypoint;
    cfg.ha_resend = Duration::from_millis(a.ha_resend_ms);
    cfg.rpc_timeout = Duration::from_millis(a.rpc_timeout_ms);
    cfg.events = Some(events);
    cfg
}

/// True when stdin is /dev/null (then its end of file means nothing).
fn stdin_is_null() -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata("/dev/stdin"),
        std::fs::metadata("/dev/null"),
    ) {
        (Ok(a), Ok(b)) => a.rdev() == b.rdev() && a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Waits until every process is gone (stdin EOF: stops them cleanly first).
fn stay(procs: &[SimProcess], as_json: bool) {
    let eof = Arc::new(AtomicBool::new(false));
    if !stdin_is_null() {
        let eof = eof.clone();
        let _ = std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    if line.is_err() {
                        break;
                    }
                }
                eof.store(true, Ordering::SeqCst);
            });
    }
    while !procs.iter().all(|p| p.is_gone()) {
        if eof.load(Ordering::SeqCst) {
            finish(procs, Then::Stop, as_json);
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Applies `--then stop|die|exit` to every live process.
fn finish(procs: &[SimProcess], then: Then, as_json: bool) {
    for p in procs.iter().filter(|p| !p.is_gone()) {
        let (what, r) = match then {
            Then::Stop => ("stopped", p.stop_clean()),
            Then::Exit => ("exited", p.close()),
            Then::Die | Then::Stay => {
                p.kill();
                ("died", Ok(()))
            }
        };
        let f = p.fid();
        let err = r.as_ref().err().map(|e| e.to_string());
        say(
            as_json,
            json!({"event": what, "process": f, "error": err}),
            || match &err {
                None => format!("sim {f}: {what}"),
                Some(e) => format!("sim {f}: {what} ({e})"),
            },
        );
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let a = Args::parse();
    let (tx, rx) = crossbeam_channel::unbounded::<SimEvent>();
    let as_json = a.json;
    let printer = std::thread::spawn(move || rx.iter().for_each(|ev| print_event(as_json, &ev)));

    let base = base_config(&a, tx);
    let configs: Vec<SimConfig> = (0..a.count.max(1))
        .map(|i| {
            let mut cfg = gen::nth_config(&base, i, a.fid_step);
            if let Some(n) = a.get_count {
                cfg.get_fids = gen::config_fids(n, &cfg);
            }
            cfg
        })
        .collect();
    drop(base);
    let outcomes = sim::boot_many(&a.ha_endpoint, configs, Duration::from_millis(a.stagger_ms));
    let summary = sim::summarize(&outcomes);
    let mut procs = Vec::new();
    for o in outcomes {
        let f = o.process_fid;
        match &o.result {
            Ok(r) => say(
                as_json,
                json!({"event": "booted", "process": f, "boot_ms": ms(r.boot_time),
                       "entrypoint_ms": ms(r.ep_latency), "connect_ms": ms(o.connect_time),
                       "ep_attempts": r.ep_attempts, "link": r.first_reply.link.name(),
                       "confds": r.first_reply.confds.iter().map(|(f, ep)| json!({"fid": f, "ep": ep})).collect::<Vec<_>>(),
                       "rm": r.first_reply.rm_fid, "rm_ep": r.first_reply.rm_ep,
                       "get_answer": r.nvec_answer.len()}),
                || {
                    format!(
                        "sim {f}: booted in {} ms (entrypoint {} ms, {} request(s), link {})",
                        ms(r.boot_time),
                        ms(r.ep_latency),
                        r.ep_attempts,
                        r.first_reply.link
                    )
                },
            ),
            Err(e) => say(
                as_json,
                json!({"event": "boot_failed", "process": f, "error": e.to_string()}),
                || format!("sim {f}: boot failed: {e}"),
            ),
        }
        if let (Ok(_), Some(p)) = (&o.result, o.process) {
            procs.push(p);
        }
    }
    if a.count > 1 || as_json {
        say(
            as_json,
            json!({"event": "timings", "summary": summary}),
            || {
                format!(
                "{} of {} booted; entrypoint ms p50 {} p95 {} max {}; boot ms p50 {} p95 {} max {}",
                summary.booted,
                summary.processes,
                summary.entrypoint_ms.p50,
                summary.entrypoint_ms.p95,
                summary.entrypoint_ms.max,
                summary.boot_ms.p50,
                summary.boot_ms.p95,
                summary.boot_ms.max
            )
            },
        );
    }
    if let Some(sdev) = a.stob_error {
        for p in &procs {
            let f = p.fid();
            let r = p.send_stob_ioq(StobIoq::write_error(sdev, -5));
            let err = r.as_ref().err().map(|e| e.to_string());
            say(
                as_json,
                json!({"event": "stob_error_sent", "process": f, "sdev": sdev, "error": err}),
                || {
                    format!(
                        "sim {f}: STOB IO error on {sdev} sent{}",
                        err.as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    )
                },
            );
        }
    }
    match a.then {
        Then::Stay => stay(&procs, as_json),
        t => finish(&procs, t, as_json),
    }
    drop(procs);
    let _ = printer.join();
    match summary.failed {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
