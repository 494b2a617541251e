//! The load scenarios, each against an [`Env`] (real Consul + real hax) with simulated Motr
//! processes from [`hax_sim`]. Every loop is bounded in count and in time.
use super::env::{counts_delta, http_counts, process_records, Env, HttpCounts};
use super::hax_metrics::{lat_between, mean_between};
use super::http::Http;
use super::procfs::{self, CpuMeter, Mem};
use super::stats::Lat;
use hax_fid::Fid;
use hax_sim::{
    boot_many, gen, service_type, FleetOutcome, ObjState, ProcessEvent, ProcessType, SimConfig,
    SimProcess, Timeouts,
};
use hax_testkit::payload;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Progress lines on stderr.
pub fn say(msg: impl AsRef<str>) {
    eprintln!("hax-bench: {}", msg.as_ref());
}

/// JSON has no NaN (serde_json writes null): read it back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Option::<f64>::deserialize(d).map(|v| v.unwrap_or(f64::NAN))
}

const POOL: Fid = Fid::typed(b'o', 1, 4);

/// The i-th simulated m0d of a fleet: one IO service, one pool (one FAILURE_VEC_REQ), an NVEC
/// GET of 80 configuration objects.
pub fn sim_config(base_key: u64, i: usize) -> SimConfig {
    let fid = Fid::typed(b'r', 1, base_key + 2 * i as u64);
    let mut c = SimConfig::new(fid);
    c.endpoint = format!("inet:tcp:127.0.0.1@{}", 30000 + (i % 30000));
    c.pid = 100_000 + i as u64;
    c.services = vec![(
        Fid::typed(b's', 1, base_key + 2 * i as u64 + 1),
        service_type::IOS,
    )];
    c.pools = vec![POOL];
    c.get_fids = gen::config_fids(80, &c);
    c.timeouts = Timeouts {
        connect: Duration::from_secs(10),
        reply: Duration::from_secs(60),
        ack: Duration::from_secs(30),
        entrypoint: Duration::from_secs(120),
        write: Duration::from_secs(30),
    };
    c
}

/// What the bench's own requests to Consul were, to subtract from Consul's counters.
fn own_delta(delta: &HttpCounts, own_kv_gets: u64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((m, p), n) in delta {
        if p.contains("agent_metrics") {
            continue;
        }
        let mut n = *n;
        if m == "GET" && p == "v1_kv_" {
            n = n.saturating_sub(own_kv_gets);
        }
        if n > 0 {
            out.insert(format!("{m} /{}", p.replace('_', "/")), n);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Boot storm

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BootResult {
    pub processes: usize,
    pub booted: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    /// Start of the storm until every simulated process had sent DTM_RECOVERED.
    pub all_sent_ms: f64,
    /// Start of the storm until KV `processes/<fid>` said DTM_RECOVERED for every process.
    #[serde(deserialize_with = "nan_if_null")]
    pub all_in_kv_ms: f64,
    /// First entrypoint request to its rc-0 reply, over processes.
    pub entrypoint: Lat,
    pub max_ep_attempts: u32,
    /// Requests hax made to Consul during the storm, by method and path (Consul's counters
    /// minus the bench's own).
    pub hax_requests: BTreeMap<String, u64>,
    pub hax_requests_total: u64,
    pub hax_reads: u64,
    pub requests_per_process: f64,
    /// hax's metrics at the end of the storm: sends given up without a delivery report
    /// (`--delivery-timeout-ms`), broadcasts.
    pub sends_timed_out: u64,
    /// hax's own time per entrypoint in the storm (`hax_entrypoint_seconds`: Motr's callback
    /// → reply handed back to Motr), estimated from the histogram's buckets.
    #[serde(default)]
    pub hax_entrypoint: Lat,
    #[serde(default)]
    pub broadcasts: usize,
    pub hax_mem: Mem,
}

/// Boots `n` processes at once; returns the result and the processes (still connected).
pub fn boot_storm(
    env: &Env,
    n: usize,
    base_key: u64,
    stagger: Duration,
) -> (BootResult, Vec<SimProcess>) {
    let mut metrics = env.consul_http();
    let before = http_counts(&mut metrics).unwrap_or_default();
    let hax_before = env.hax_metrics();
    let cfgs: Vec<SimConfig> = (0..n).map(|i| sim_config(base_key, i)).collect();
    let fids: Vec<String> = cfgs.iter().map(|c| c.process_fid.to_string()).collect();
    let t0 = Instant::now();
    // The KV watcher: blocking queries on processes/, at most one every 20 ms.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let mut http = env.consul_http();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut index = 0u64;
            let deadline = t0 + Duration::from_secs(180);
            let mut seen_all = None;
            while Instant::now() < deadline && !done.load(Ordering::SeqCst) {
                let asked = Instant::now();
                if let Ok((recs, idx)) = process_records(&mut http, (index > 0).then_some(index)) {
                    index = if idx < index { 0 } else { idx };
                    let all = fids.iter().all(|f| {
                        recs.get(f)
                            .is_some_and(|(s, _)| s.ends_with("DTM_RECOVERED"))
                    });
                    if all {
                        seen_all = Some(t0.elapsed());
                        break;
                    }
                }
                let spent = asked.elapsed();
                if spent < Duration::from_millis(20) {
                    std::thread::sleep(Duration::from_millis(20) - spent);
                }
            }
            (seen_all, http.sent)
        })
    };
    let outcomes: Vec<FleetOutcome> = boot_many(&env.endpoint(), cfgs, stagger);
    let all_sent = t0.elapsed();
    let booted: Vec<&FleetOutcome> = outcomes.iter().filter(|o| o.result.is_ok()).collect();
    if booted.len() < n {
        done.store(true, Ordering::SeqCst);
    }
    let (seen_all, own_gets) = watcher.join().unwrap_or((None, 0));
    let after = http_counts(&mut metrics).unwrap_or_default();
    let hax_requests = own_delta(&counts_delta(&before, &after), own_gets);
    let total: u64 = hax_requests.values().sum();
    let reads: u64 = hax_requests
        .iter()
        .filter(|(k, _)| k.starts_with("GET"))
        .map(|(_, v)| v)
        .sum();
    let eps: Vec<Duration> = booted
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .map(|r| r.ep_latency)
        .collect();
    let hax_after = env.hax_metrics();
    let result = BootResult {
        processes: n,
        booted: booted.len(),
        failed: n - booted.len(),
        first_error: outcomes
            .iter()
            .find_map(|o| o.result.as_ref().err().map(|e| e.to_string())),
        all_sent_ms: all_sent.as_secs_f64() * 1e3,
        all_in_kv_ms: seen_all.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        entrypoint: Lat::of(&eps),
        max_ep_attempts: outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .map(|r| r.ep_attempts)
            .max()
            .unwrap_or(0),
        hax_requests,
        hax_requests_total: total,
        hax_reads: reads,
        requests_per_process: total as f64 / n.max(1) as f64,
        sends_timed_out: hax_after
            .value("hax_broadcast_sends_total", Some(("outcome", "timed_out")))
            as u64,
        hax_entrypoint: lat_between(&hax_before, &hax_after, "hax_entrypoint_seconds"),
        broadcasts: hax_after.value("hax_broadcasts_total", None) as usize,
        hax_mem: procfs::mem(env.hax_pid()).unwrap_or_default(),
    };
    let procs = outcomes
        .into_iter()
        .filter(|o| o.result.is_ok())
        .filter_map(|o| o.process)
        .collect();
    (result, procs)
}

/// Entrypoints only: does answering them read Consul?
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EntrypointProbe {
    pub processes: usize,
    pub entrypoints: usize,
    pub secs: f64,
    /// First request to its rc-0 reply.
    pub first: Lat,
    /// Requests hax made to Consul during the probe (Consul's counters minus the bench's).
    pub requests: BTreeMap<String, u64>,
    pub reads: u64,
    /// Reads hax made in an idle second just before (its background polling).
    pub idle_reads_per_s: f64,
    /// `reads` minus the idle rate over the probe's duration (at least 0).
    pub reads_beyond_idle: f64,
}

/// `n` new processes each connect, send a first and a non-first entrypoint request and close
/// (no events, so no KV write and no broadcast); counts hax's Consul requests meanwhile.
pub fn entrypoint_probe(env: &Env, n: usize, base_key: u64) -> EntrypointProbe {
    let mut metrics = env.consul_http();
    let reads_of = |d: &BTreeMap<String, u64>| {
        d.iter()
            .filter(|(k, _)| k.starts_with("GET"))
            .map(|(_, v)| *v)
            .sum::<u64>()
    };
    let i0 = http_counts(&mut metrics).unwrap_or_default();
    let idle = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let i1 = http_counts(&mut metrics).unwrap_or_default();
    let idle_reads_per_s =
        reads_of(&own_delta(&counts_delta(&i0, &i1), 0)) as f64 / idle.elapsed().as_secs_f64();
    let ep = env.endpoint();
    let t0 = Instant::now();
    let lat: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .filter_map(|i| {
                let ep = ep.clone();
                std::thread::Builder::new()
                    .stack_size(hax_sim::THREAD_STACK)
                    .spawn_scoped(s, move || {
                        let mut cfg = SimConfig::new(Fid::typed(b'r', 1, base_key + 2 * i as u64));
                        cfg.timeouts.reply = Duration::from_secs(30);
                        let p = SimProcess::connect(&ep, cfg).ok()?;
                        let t = Instant::now();
                        p.entrypoint_until_ok(true, t + Duration::from_secs(30))
                            .ok()?;
                        let d = t.elapsed();
                        p.entrypoint(false).ok()?;
                        Some(d)
                    })
                    .ok()
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    let after = http_counts(&mut metrics).unwrap_or_default();
    let requests = own_delta(&counts_delta(&i1, &after), 0);
    let reads = reads_of(&requests);
    EntrypointProbe {
        processes: n,
        entrypoints: 2 * lat.len(),
        secs,
        first: Lat::of(&lat),
        requests,
        reads,
        idle_reads_per_s,
        reads_beyond_idle: (reads as f64 - idle_reads_per_s * secs).max(0.0),
    }
}

// ---------------------------------------------------------------------------------------------
// Failure propagation

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PropagationResult {
    pub links: usize,
    pub failing: usize,
    /// Entries in each payload (the failing ones, or every process for a full view).
    pub payload_entries: usize,
    pub reps: usize,
    /// Per repetition: POST sent → the last simulated process has every TRANSIENT note.
    pub all: Lat,
    /// Per repetition: POST sent → the first simulated process has them.
    pub first: Lat,
    /// Processes that did not hear it within the time limit, summed over repetitions.
    pub missed: usize,
    /// hax's share, from its metrics (`hax_broadcast_confirmed_seconds`): the change reached
    /// hax → every link confirmed the broadcast (Motr's delivered callbacks), per repetition.
    #[serde(default)]
    pub hax_confirmed: Lat,
    /// hax's own part, from its metrics (`hax_broadcast_handover_seconds`): the change reached
    /// hax → the last link's send handed to Motr (what remains until confirmation is Motr's
    /// transport and the peers).
    #[serde(default)]
    pub hax_handed: Lat,
}

/// Waits until every process heard `state` for every fid in `fids` after `t0`; returns
/// (first, last) arrival after `t0` and how many processes did not hear it in time.
fn wait_all_heard(
    procs: &[SimProcess],
    fids: &[Fid],
    state: ObjState,
    t0: Instant,
    limit: Duration,
) -> (Duration, Duration, usize) {
    let deadline = t0 + limit;
    let mut first = Duration::MAX;
    let mut last = Duration::ZERO;
    let mut missed = 0;
    for p in procs {
        let mut latest = None;
        for f in fids {
            let left = deadline.saturating_duration_since(Instant::now());
            match p.wait_for_note_after(*f, state, t0, left.max(Duration::from_millis(1))) {
                Ok(n) => latest = Some(latest.map_or(n.at, |l: Instant| l.max(n.at))),
                Err(_) => {
                    latest = None;
                    break;
                }
            }
        }
        match latest {
            Some(at) => {
                let d = at.saturating_duration_since(t0);
                first = first.min(d);
                last = last.max(d);
            }
            None => missed += 1,
        }
    }
    (
        if first == Duration::MAX {
            Duration::ZERO
        } else {
            first
        },
        last,
        missed,
    )
}

/// `reps` times: POST a payload where `failing` processes are critical straight to hax's
/// watch endpoint, time until every process heard TRANSIENT for all of them; then POST them
/// passing and wait for ONLINE before the next repetition. `full_view`: the payload lists
/// every process (as Consul's watch does), else only the failing ones.
pub fn propagation(
    env: &Env,
    node: &str,
    procs: &[SimProcess],
    failing: usize,
    reps: usize,
    full_view: bool,
) -> PropagationResult {
    let mut hax = env.hax_client();
    let all_fids: Vec<Fid> = procs.iter().map(|p| p.fid()).collect();
    let failing = failing.min(procs.len());
    let mut alls = Vec::new();
    let mut firsts = Vec::new();
    let mut confirmed = Vec::new();
    let mut handed = Vec::new();
    let mut missed = 0;
    let mut entries = 0;
    let limit = Duration::from_secs(15);
    let bound = Instant::now() + Duration::from_secs(240);
    for rep in 0..reps {
        if Instant::now() > bound {
            say(format!(
                "failure propagation: stopped after {rep} repetitions (time bound)"
            ));
            break;
        }
        let start = (rep * failing) % procs.len().max(1);
        let targets: Vec<Fid> = (0..failing)
            .map(|k| all_fids[(start + k) % all_fids.len()])
            .collect();
        let listed: &[Fid] = if full_view { &all_fids } else { &targets };
        entries = listed.len();
        let crit = payload::health_payload(node, "ios", listed, &targets, 1000 + 2 * rep as u64);
        let ok = payload::health_payload(node, "ios", listed, &[], 1001 + 2 * rep as u64);
        // A payload is a snapshot of what its path covers: one that lists only the targets
        // goes to a path of its own, or the processes it leaves out would be taken as gone.
        let path = if full_view {
            "/watcher/service/ios".to_string()
        } else {
            format!("/watcher/bench-targets/{failing}-{rep}")
        };
        let m0 = env.hax_metrics();
        let t0 = Instant::now();
        match hax.post(&path, &crit) {
            Ok(r) if r.ok() => {}
            Ok(r) => say(format!(
                "failure propagation: hax answered {} {}",
                r.status,
                r.text()
            )),
            Err(e) => say(format!("failure propagation: {e}")),
        }
        let (first, last, m) = wait_all_heard(procs, &targets, ObjState::Transient, t0, limit);
        missed += m;
        if m == 0 {
            alls.push(last);
            firsts.push(first);
        }
        match env.wait_confirmed_after(&m0, Duration::from_secs(3)) {
            Some(m1) => {
                if let Some((h, _)) = mean_between(&m0, &m1, "hax_broadcast_handover_seconds") {
                    handed.push(Duration::from_secs_f64(h));
                }
                if let Some((c, _)) = mean_between(&m0, &m1, "hax_broadcast_confirmed_seconds") {
                    confirmed.push(Duration::from_secs_f64(c));
                }
            }
            None => say("failure propagation: hax counted no confirmed broadcast"),
        }
        let t1 = Instant::now();
        let online_from = env.hax_metrics();
        let _ = hax.post(&path, &ok);
        let (_, _, m2) = wait_all_heard(procs, &targets, ObjState::Online, t1, limit);
        if m2 > 0 {
            say(format!(
                "failure propagation: {m2} process(es) did not hear ONLINE again"
            ));
        }
        // Each repetition is an isolated failure: wait until hax has every confirmation of
        // the ONLINE broadcast too (it holds new changes while one is in flight).
        let _ = env.wait_confirmed_after(&online_from, Duration::from_secs(3));
    }
    PropagationResult {
        links: procs.len(),
        failing,
        payload_entries: entries,
        reps: alls.len(),
        all: Lat::of(&alls),
        first: Lat::of(&firsts),
        missed,
        hax_confirmed: Lat::of(&confirmed),
        hax_handed: Lat::of(&handed),
    }
}

// ---------------------------------------------------------------------------------------------
// Process events → KV

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EventsResult {
    pub processes: usize,
    pub events_per_process: usize,
    pub events: usize,
    /// Time the simulated processes took to send every event.
    pub send_ms: f64,
    /// First event sent → every `processes/<fid>` holds its process's last event.
    #[serde(deserialize_with = "nan_if_null")]
    pub hax_ms: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub hax_events_per_s: f64,
    /// `/v1/txn` requests hax made meanwhile (Consul's counter).
    pub hax_txns: u64,
    /// The same number of writes (same keys' shape, same values) straight to `/v1/txn` in
    /// 64-op transactions from one client, before and after hax's run: keys/s.
    pub direct_before_keys_per_s: f64,
    pub direct_after_keys_per_s: f64,
    pub direct_txns: u64,
    /// Mean of the two direct measurements.
    pub consul_limit_keys_per_s: f64,
    /// hax events/s ÷ Consul's limit.
    #[serde(deserialize_with = "nan_if_null")]
    pub ratio: f64,
    pub timed_out: bool,
    /// hax's memory when KV reflected every event, and `eq/` entries its log says were
    /// published by then (each event is also published to the RC's event queue).
    pub hax_mem: Mem,
    pub eq_published: usize,
}

fn event_record(event: ProcessEvent, pid: u64) -> Vec<u8> {
    serde_json::json!({
        "state": format!("M0_CONF_HA_PROCESS_{}", event.name()),
        "type": "M0_CONF_HA_PROCESS_M0D",
        "pid": pid,
    })
    .to_string()
    .into_bytes()
}

/// The event and pid of the j-th event (1-based) of `e`: STARTING and STOPPING alternate
/// (neither changes the HA state, so no broadcast: the KV path alone is measured); the pid
/// numbers the events, the last one (STARTING, pid `PID0 + e`) marks the end.
fn nth_event(j: usize, e: usize) -> (ProcessEvent, u64) {
    let ev = if (e - j).is_multiple_of(2) {
        ProcessEvent::Starting
    } else {
        ProcessEvent::Stopping
    };
    (ev, PID0 + j as u64)
}
const PID0: u64 = 5_000_000;

/// Writes `procs × e` records to `prefix<fid>` in 64-op transactions, one client; keys/s.
fn direct_txn_rate(http: &mut Http, prefix: &str, fids: &[Fid], e: usize) -> (f64, u64) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ops = Vec::with_capacity(fids.len() * e);
    for j in 1..=e {
        let (ev, pid) = nth_event(j, e);
        for f in fids {
            ops.push(serde_json::json!({"KV": {"Verb": "set", "Key": format!("{prefix}{f}"), "Value": b64.encode(event_record(ev, pid))}}));
        }
    }
    // Batches of 64 distinct keys, as ConsulWriter makes them.
    let per = 64.min(fids.len()).max(1);
    let bodies: Vec<Vec<u8>> = ops
        .chunks(per)
        .map(|c| serde_json::to_vec(c).expect("JSON"))
        .collect();
    let t0 = Instant::now();
    let mut txns = 0;
    for b in &bodies {
        match http.put("/v1/txn", b) {
            Ok(r) if r.ok() => txns += 1,
            Ok(r) => say(format!("direct txn: HTTP {} {}", r.status, r.text())),
            Err(e) => say(format!("direct txn: {e}")),
        }
        if t0.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    ((txns as usize * per) as f64 / secs, txns)
}

/// `procs` processes each send `e` events as fast as they can; time until KV reflects every
/// process's last event; compared with Consul's own limit measured in the same run.
pub fn process_events(env: &Env, procs: &[SimProcess], e: usize) -> EventsResult {
    let fids: Vec<Fid> = procs.iter().map(|p| p.fid()).collect();
    let mut direct = env.consul_http();
    let (before_rate, direct_txns) =
        direct_txn_rate(&mut direct, "bench-direct/processes/", &fids, e);
    // Let Consul settle after the direct burst.
    std::thread::sleep(Duration::from_millis(500));
    let mut metrics = env.consul_http();
    let m0 = http_counts(&mut metrics).unwrap_or_default();
    let hax_m0 = env.hax_metrics();
    let final_pid = PID0 + e as u64;
    let t0 = Instant::now();
    let send_ms = std::thread::scope(|s| {
        let handles: Vec<_> = procs
            .iter()
            .map(|p| {
                s.spawn(move || {
                    for j in 1..=e {
                        let (ev, pid) = nth_event(j, e);
                        if let Err(err) = p.send_process_event_with_pid(ev, ProcessType::M0d, pid) {
                            say(format!("events: {} cannot send: {err}", p.fid()));
                            return;
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        t0.elapsed().as_secs_f64() * 1e3
    });
    let mut poll = env.consul_http();
    let mut timed_out = true;
    let mut hax_ms = f64::NAN;
    let bound = t0 + Duration::from_secs(180);
    while Instant::now() < bound {
        if let Ok((recs, _)) = process_records(&mut poll, None) {
            let done = fids.iter().all(|f| {
                recs.get(&f.to_string())
                    .is_some_and(|(_, pid)| *pid == final_pid)
            });
            if done {
                hax_ms = t0.elapsed().as_secs_f64() * 1e3;
                timed_out = false;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let hax_mem = procfs::mem(env.hax_pid()).unwrap_or_default();
    let eq_published = (env
        .hax_metrics()
        .value("hax_queue_entries_written_total", Some(("queue", "eq")))
        - hax_m0.value("hax_queue_entries_written_total", Some(("queue", "eq"))))
        as usize;
    let m1 = http_counts(&mut metrics).unwrap_or_default();
    let hax_txns = counts_delta(&m0, &m1)
        .get(&("PUT".to_string(), "v1_txn".to_string()))
        .copied()
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(500));
    let (after_rate, _) = direct_txn_rate(&mut direct, "bench-direct2/processes/", &fids, e);
    let events = procs.len() * e;
    let hax_rate = events as f64 / (hax_ms / 1e3);
    let limit = (before_rate + after_rate) / 2.0;
    EventsResult {
        processes: procs.len(),
        events_per_process: e,
        events,
        send_ms,
        hax_ms,
        hax_events_per_s: hax_rate,
        hax_txns,
        direct_before_keys_per_s: before_rate,
        direct_after_keys_per_s: after_rate,
        direct_txns,
        consul_limit_keys_per_s: limit,
        ratio: hax_rate / limit,
        timed_out,
        hax_mem,
        eq_published,
    }
}

// ---------------------------------------------------------------------------------------------
// Watch ingest

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IngestResult {
    pub entries: usize,
    pub payload_bytes: usize,
    pub posted: usize,
    pub statuses: BTreeMap<u16, usize>,
    pub secs: f64,
    pub payloads_per_s: f64,
    pub entries_per_s: f64,
    /// POST latency (send to answer) over payloads.
    pub post: Lat,
    /// CPU hax used during the replay ÷ wall time (1.0 = one core busy).
    pub hax_cpu_cores: f64,
    pub rss_before: Mem,
    pub rss_after: Mem,
    /// POST of one payload, then at once a one-entry failure payload: send → a simulated
    /// process heard the failure (the payload went through WatchIngest and ProcessStatus).
    pub handled: Lat,
}

/// Successive deliveries of one `service` watch, as Consul makes them: the whole snapshot
/// each time, one check changed since the last (its `ModifyIndex`), and a newer
/// `X-Consul-Index`.
struct Deliveries {
    body: Vec<u8>,
    /// Where each service check's 3-digit ModifyIndex is (the synthetic payload's `100`).
    marks: Vec<usize>,
    n: u64,
}

impl Deliveries {
    fn new(body: Vec<u8>) -> Deliveries {
        let needle = b"\"ModifyIndex\":100,";
        let marks = body
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i + needle.len() - 4)
            .collect();
        Deliveries { body, marks, n: 0 }
    }

    /// The next delivery and its index.
    fn next(&mut self) -> (&[u8], u64) {
        if !self.marks.is_empty() {
            let k = self.marks[self.n as usize % self.marks.len()];
            let digits = format!("{:03}", 100 + self.n % 900);
            self.body[k..k + 3].copy_from_slice(digits.as_bytes());
        }
        self.n += 1;
        (&self.body, 1000 + self.n)
    }
}

/// Replays `size`-entry payloads at full speed (one connection, up to `max_count` or
/// `max_secs`), then measures `handled_reps` payloads end to end.
pub fn watch_ingest(
    env: &Env,
    node: &str,
    procs: &[SimProcess],
    size: usize,
    max_count: usize,
    max_secs: f64,
    handled_reps: usize,
) -> IngestResult {
    let mut deliveries = Deliveries::new(payload::synthetic(size, node, 0x20_0000));
    let pid = env.hax_pid();
    let mut hax = env.hax_client();
    let rss_before = procfs::mem(pid).unwrap_or_default();
    let cpu = CpuMeter::start(pid);
    let t0 = Instant::now();
    let mut lat = Vec::new();
    let mut statuses = BTreeMap::new();
    while lat.len() < max_count && t0.elapsed().as_secs_f64() < max_secs {
        let (body, index) = deliveries.next();
        let t = Instant::now();
        let status = match hax.post_indexed("/watcher/service/ios", body, index) {
            Ok(r) => r.status,
            Err(e) => {
                say(format!("ingest: {e}"));
                0
            }
        };
        lat.push(t.elapsed());
        *statuses.entry(status).or_insert(0) += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (cpu_s, wall_s) = cpu.read();
    let rss_after = procfs::mem(pid).unwrap_or_default();
    let mut handled = Vec::new();
    if let Some(p) = procs.first() {
        let marker = p.fid();
        let crit = payload::health_payload(node, "ios", &[marker], &[marker], 50_000);
        let ok = payload::health_payload(node, "ios", &[marker], &[], 50_001);
        // The marker must be ONLINE-able again (the events scenario left it STARTING) and
        // passing, so that each failure below is a change hax broadcasts.
        let _ = p.send_process_event(ProcessEvent::DtmRecovered, ProcessType::M0d);
        // The marker's payloads have a path of their own (a snapshot of what they list only).
        let _ = hax.post("/watcher/marker", &ok);
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..handled_reps {
            let (body, index) = deliveries.next();
            let t = Instant::now();
            let _ = hax.post_indexed("/watcher/service/ios", body, index);
            let _ = hax.post("/watcher/marker", &crit);
            match p.wait_for_note_after(marker, ObjState::Transient, t, Duration::from_secs(10)) {
                Ok(n) => handled.push(n.at.saturating_duration_since(t)),
                Err(e) => say(format!(
                    "ingest: the failure after a {size}-entry payload was not heard: {e}"
                )),
            }
            let t1 = Instant::now();
            let _ = hax.post("/watcher/marker", &ok);
            let _ = p.wait_for_note_after(marker, ObjState::Online, t1, Duration::from_secs(10));
        }
    }
    IngestResult {
        entries: size,
        payload_bytes: deliveries.body.len(),
        posted: lat.len(),
        statuses,
        secs,
        payloads_per_s: lat.len() as f64 / secs,
        entries_per_s: (lat.len() * size) as f64 / secs,
        post: Lat::of(&lat),
        hax_cpu_cores: cpu_s / wall_s,
        rss_before,
        rss_after,
        handled: Lat::of(&handled),
    }
}

// ---------------------------------------------------------------------------------------------
// Memory under link churn

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemoryResult {
    pub links: usize,
    pub booted: usize,
    pub rss_ready: Mem,
    pub rss_links: Mem,
    pub churners: usize,
    pub cycles: u64,
    pub cycle_errors: u64,
    pub first_cycle_error: Option<String>,
    pub churn_secs: f64,
    pub cycles_per_s: f64,
    /// (seconds into the churn, cycles done, RSS KiB).
    pub samples: Vec<(f64, u64, u64)>,
    pub rss_start_kib: u64,
    pub rss_mid_kib: u64,
    pub rss_end_kib: u64,
    /// hax's own count of links after the churn (`hax_motr_links`, every state).
    pub links_left_at_end: Option<u64>,
    /// Links that ended during the scenario (`hax_motr_link_disconnects_total`).
    #[serde(default)]
    pub disconnects: usize,
}

/// Processes each churner cycles through: by the time one comes back, Motr has dropped its
/// previous link (so its first entrypoint is not a restart), and hax's per-process state
/// stays bounded.
const CHURN_POOL: u64 = 64;

/// One link connect/disconnect cycle: a process connects, asks its first entrypoint (Motr
/// makes a link), reports STOPPED (hax has Motr drop the link: FAILED on the self link) and
/// closes. Nothing is broadcast to the other links once the process's FAILED state is known.
fn churn_cycle(ep: &str, cfg: &SimConfig) -> Result<(), String> {
    let p = SimProcess::connect(ep, cfg.clone()).map_err(|e| e.to_string())?;
    p.entrypoint_until_ok(true, Instant::now() + Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let tag = p
        .send_process_event(ProcessEvent::Stopped, ProcessType::M0d)
        .map_err(|e| e.to_string())?;
    p.wait_for_ack(tag, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    p.kill();
    Ok(())
}

pub fn memory(
    env: &Env,
    links: usize,
    churners: usize,
    churn_secs: f64,
    max_cycles: u64,
) -> MemoryResult {
    let pid = env.hax_pid();
    let rss_ready = procfs::mem(pid).unwrap_or_default();
    // Staggered (10 ms): this scenario is about memory, not the storm.
    let (boot, procs) = boot_storm(env, links, 0x40_0000, Duration::from_millis(10));
    if boot.failed > 0 {
        say(format!(
            "memory: {} of {links} processes failed to boot: {:?}",
            boot.failed, boot.first_error
        ));
    }
    let settle = procfs::wait_quiet(pid, 0.05, Duration::from_secs(120));
    say(format!(
        "  {} links booted; hax quiet after {:.1} s more",
        procs.len(),
        settle.as_secs_f64()
    ));
    let rss_links = procfs::mem(pid).unwrap_or_default();
    let cycles = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ep = env.endpoint();
    let t0 = Instant::now();
    let mut samples = vec![(0.0, 0, procfs::mem(pid).unwrap_or_default().rss_kib)];
    std::thread::scope(|s| {
        for c in 0..churners {
            let (cycles, errors, stop, first_error, ep) = (
                cycles.clone(),
                errors.clone(),
                stop.clone(),
                first_error.clone(),
                ep.clone(),
            );
            s.spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = 0x100_0000 + 2 * ((k % CHURN_POOL) * churners as u64 + c as u64);
                    let mut cfg = SimConfig::new(Fid::typed(b'r', 1, key));
                    cfg.pid = 700_000 + c as u64;
                    cfg.timeouts.reply = Duration::from_secs(10);
                    match churn_cycle(&ep, &cfg) {
                        Ok(()) => {
                            k += 1;
                            if cycles.fetch_add(1, Ordering::SeqCst) + 1 >= max_cycles {
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::SeqCst);
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            });
        }
        let step = (churn_secs / 20.0).clamp(0.25, 3.0);
        while t0.elapsed().as_secs_f64() < churn_secs && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs_f64(step));
            let m = procfs::mem(pid).unwrap_or_default();
            samples.push((
                t0.elapsed().as_secs_f64(),
                cycles.load(Ordering::SeqCst),
                m.rss_kib,
            ));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let churn = t0.elapsed().as_secs_f64();
    // Let the last dropped links go (the RPC timeout is 200 ms), then the final sample.
    std::thread::sleep(Duration::from_secs(1));
    let end = procfs::mem(pid).unwrap_or_default();
    samples.push((
        t0.elapsed().as_secs_f64(),
        cycles.load(Ordering::SeqCst),
        end.rss_kib,
    ));
    let hax_m = env.hax_metrics();
    let links_left = Some(hax_m.value("hax_motr_links", None) as u64);
    let mid = samples
        .iter()
        .min_by(|a, b| {
            (a.0 - churn / 2.0)
                .abs()
                .total_cmp(&(b.0 - churn / 2.0).abs())
        })
        .map_or(0, |s| s.2);
    let n_cycles = cycles.load(Ordering::SeqCst);
    let first_cycle_error = first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    drop(procs);
    MemoryResult {
        links,
        booted: boot.booted,
        rss_ready,
        rss_links,
        churners,
        cycles: n_cycles,
        cycle_errors: errors.load(Ordering::SeqCst),
        first_cycle_error,
        churn_secs: churn,
        cycles_per_s: n_cycles as f64 / churn,
        rss_start_kib: samples.first().map_or(0, |s| s.2),
        rss_mid_kib: mid,
        rss_end_kib: end.rss_kib,
        samples,
        links_left_at_end: links_left,
        disconnects: hax_m.value("hax_motr_link_disconnects_total", None) as usize,
    }
}
