//! Replays Consul watch payloads into a running hax and reports what it answered and how fast.
//!
//! ```sh
//! cargo run --release --example replay_watch -- --url http://127.0.0.1:8008            # the captures, once each
//! cargo run --release --example replay_watch -- --url http://127.0.0.1:8008 --rate 200 --concurrency 4 --duration 10
//! cargo run --release --example replay_watch -- --url http://127.0.0.1:8008 --synthetic-entries 10000 --count 20
//! cargo run --release --example replay_watch -- --url http://127.0.0.1:8008 some/dir file.json ...
//! cargo run --release --example replay_watch -- --url http://127.0.0.1:8008 \
//!     --deliveries tests/fixtures/multinode/main --agent cli-1          # as Consul delivered them
//! ```
//!
//! `--deliveries DIR` replays a multi-node capture (`DIR/deliveries.jsonl`) in arrival order,
//! each body to its recorded path with its recorded `X-Consul-Index`, only those `--agent`
//! sent (default: all), one at a time; it prints the answers per step.
//!
//! Payloads: the files given (directories: their `*.json`), by default
//! `tests/fixtures/consul-watch/`; each is POSTed to the path `headers.jsonl` of its
//! directory names for it (`/watcher/service/ios` ...), else to `/`. `--synthetic-entries N`
//! replays instead one service-health payload of N passing entries shaped like the captures
//! (ServiceIDs are process fids). Requests cycle through the payloads, `--rate` per second
//! overall (0: as fast as the workers go) from `--concurrency` workers, until `--count`
//! requests were sent or `--duration` seconds passed (whichever comes first; default: one pass
//! over the files, or 100 synthetic requests). Prints the answers by HTTP status and the
//! latency percentiles. Only loopback URLs are accepted.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "replay/deliveries.rs"]
mod deliveries;

struct Args {
    url: String,
    rate: f64,
    concurrency: usize,
    count: Option<usize>,
    duration: Option<f64>,
    synthetic: Option<usize>,
    node: String,
    inputs: Vec<PathBuf>,
    deliveries: Option<PathBuf>,
    agent: Option<String>,
}

const USAGE: &str =
    "usage: replay_watch [--url http://127.0.0.1:PORT] [--rate N] [--concurrency N] \
[--count N] [--duration SECONDS] [--synthetic-entries N] [--node NAME] [FILE|DIR ...] \
| [--deliveries DIR [--agent NAME]]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:8008".into(),
        rate: 0.0,
        concurrency: 1,
        count: None,
        duration: None,
        synthetic: None,
        node: "srvnode-1".into(),
        inputs: Vec::new(),
        deliveries: None,
        agent: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let num = |name: &str, v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        match arg.as_str() {
            "--url" => a.url = val("--url")?,
            "--rate" => a.rate = num("--rate", val("--rate")?)?,
            "--concurrency" => {
                a.concurrency = num("--concurrency", val("--concurrency")?)? as usize
            }
            "--count" => a.count = Some(num("--count", val("--count")?)? as usize),
            "--duration" => a.duration = Some(num("--duration", val("--duration")?)?),
            "--synthetic-entries" => {
                a.synthetic =
                    Some(num("--synthetic-entries", val("--synthetic-entries")?)? as usize)
            }
            "--node" => a.node = val("--node")?,
            "--deliveries" => a.deliveries = Some(PathBuf::from(val("--deliveries")?)),
            "--agent" => a.agent = Some(val("--agent")?),
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{USAGE}")),
            s => a.inputs.push(PathBuf::from(s)),
        }
    }
    if a.rate < 0.0 || !a.rate.is_finite() {
        return Err("--rate must be 0 (full speed) or more".into());
    }
    if a.concurrency == 0 || a.concurrency > 256 {
        return Err("--concurrency must be between 1 and 256".into());
    }
    if a.duration.is_some_and(|d| d <= 0.0 || d > 86400.0) {
        return Err("--duration must be between 0 and 86400 seconds".into());
    }
    if a.synthetic.is_some_and(|n| n == 0 || n > 1_000_000) {
        return Err("--synthetic-entries must be between 1 and 1000000".into());
    }
    let host = a
        .url
        .trim_start_matches("http://")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    if !a.url.starts_with("http://") || !matches!(host, "127.0.0.1" | "localhost") {
        return Err(format!(
            "--url {:?}: only http://127.0.0.1:PORT (or localhost) is accepted",
            a.url
        ));
    }
    a.url = a.url.trim_end_matches('/').to_string();
    Ok(a)
}

/// The POST path of each file in `dir`, from its `headers.jsonl` (one JSON object a line with
/// `file` and `path`).
fn paths_of(dir: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("headers.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some((
                v["file"].as_str()?.to_string(),
                v["path"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// (name, POST path, body) of every payload to replay.
fn load(inputs: &[PathBuf]) -> Result<Vec<(String, String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for input in inputs {
        let (dir, files): (PathBuf, Vec<PathBuf>) = if input.is_dir() {
            let mut f: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| format!("{}: {e}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            f.sort();
            (input.clone(), f)
        } else if input.is_file() {
            (
                input.parent().map(Path::to_path_buf).unwrap_or_default(),
                vec![input.clone()],
            )
        } else {
            return Err(format!("{}: no such file or directory", input.display()));
        };
        let paths = paths_of(&dir);
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let body = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            let path = paths.get(&name).cloned().unwrap_or_else(|| "/".into());
            out.push((name, path, body));
        }
    }
    if out.is_empty() {
        return Err("no payload to replay (no *.json in the inputs)".into());
    }
    Ok(out)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("replay_watch: {e}");
            return ExitCode::from(64);
        }
    };
    if let Some(dir) = &args.deliveries {
        return replay_deliveries(&args, dir);
    }
    let payloads = match args.synthetic {
        Some(n) => vec![(
            format!("synthetic-{n}"),
            "/watcher/service/ios".to_string(),
            hax_testkit::payload::synthetic(n, &args.node, 0x10_0000),
        )],
        None => {
            let inputs = if args.inputs.is_empty() {
                vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/consul-watch")]
            } else {
                args.inputs.clone()
            };
            match load(&inputs) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("replay_watch: {e}");
                    return ExitCode::from(66);
                }
            }
        }
    };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(3))
        .timeout(Duration::from_secs(60))
        .build();
    // Is anything there? A clear message rather than N transport errors.
    match agent.get(&format!("{}/healthz", args.url)).call() {
        Ok(_) | Err(ureq::Error::Status(..)) => {}
        Err(ureq::Error::Transport(t)) => {
            eprintln!("replay_watch: cannot reach hax at {}: {t}", args.url);
            return ExitCode::from(69);
        }
    }
    let count = args.count.unwrap_or(match (args.duration, args.synthetic) {
        (Some(_), _) => usize::MAX,
        (None, Some(_)) => 100,
        (None, None) => payloads.len(),
    });
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(3600.0));
    let bytes: usize = payloads.iter().map(|p| p.2.len()).sum();
    eprintln!(
        "replay_watch: {} payload(s) ({} bytes) to {}, rate {}, concurrency {}, up to {} request(s) / {:.0} s",
        payloads.len(),
        bytes,
        args.url,
        if args.rate > 0.0 { format!("{}/s", args.rate) } else { "full speed".into() },
        args.concurrency,
        if count == usize::MAX { "unbounded".into() } else { count.to_string() },
        duration.as_secs_f64()
    );
    let payloads = Arc::new(payloads);
    let next = Arc::new(AtomicUsize::new(0));
    type Answers = (BTreeMap<String, usize>, Vec<f64>);
    let results: Arc<Mutex<Answers>> = Arc::default();
    let t0 = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (payloads, next, results, agent, url) = (
                payloads.clone(),
                next.clone(),
                results.clone(),
                agent.clone(),
                args.url.clone(),
            );
            let rate = args.rate;
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count || t0.elapsed() >= duration {
                    return;
                }
                if rate > 0.0 {
                    let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        if due - t0 >= duration {
                            return;
                        }
                        std::thread::sleep(due - now);
                    }
                }
                let (_, path, body) = &payloads[i % payloads.len()];
                let t = Instant::now();
                let outcome = match agent
                    .post(&format!("{url}{path}"))
                    .set("Content-Type", "application/json")
                    .send_bytes(body)
                {
                    Ok(r) => r.status().to_string(),
                    Err(ureq::Error::Status(code, _)) => code.to_string(),
                    Err(ureq::Error::Transport(t)) => format!("transport error ({})", t.kind()),
                };
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                *r.0.entry(outcome).or_insert(0) += 1;
                r.1.push(ms);
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    let (by_status, mut lat) =
        std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_by(|a, b| a.total_cmp(b));
    let sent = lat.len();
    let accepted: usize = by_status
        .iter()
        .filter(|(s, _)| s.starts_with('2'))
        .map(|(_, n)| n)
        .sum();
    println!(
        "sent {sent} request(s) in {secs:.2} s ({:.1}/s)",
        sent as f64 / secs
    );
    println!("accepted (2xx): {accepted}, rejected: {}", sent - accepted);
    for (status, n) in &by_status {
        println!("  {status}: {n}");
    }
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        pct(&lat, 50.0),
        pct(&lat, 90.0),
        pct(&lat, 99.0),
        lat.last().copied().unwrap_or(0.0)
    );
    if sent > 0 && accepted == 0 {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// `--deliveries`: one pass, in arrival order, as Consul sent them.
fn replay_deliveries(args: &Args, dir: &Path) -> ExitCode {
    let all = match deliveries::load(dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("replay_watch: {e}");
            return ExitCode::from(66);
        }
    };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(3))
        .timeout(Duration::from_secs(60))
        .build();
    let mut per_step: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut failed = 0;
    for d in all
        .iter()
        .filter(|d| args.agent.as_ref().is_none_or(|a| *a == d.agent))
    {
        let outcome = match deliveries::post(&agent, &args.url, d) {
            Ok((code, _)) => code.to_string(),
            Err(e) => {
                eprintln!("replay_watch: {e}");
                failed += 1;
                "transport error".to_string()
            }
        };
        *per_step
            .entry(d.step.clone())
            .or_default()
            .entry(outcome)
            .or_insert(0) += 1;
    }
    for (step, answers) in &per_step {
        println!("step {step}: {answers:?}");
    }
    if failed > 0 {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
