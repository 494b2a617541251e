//! Many simulated processes in one OS process, for load tests: each boots on its own small
//! thread; the caller gets the connected processes back with per-process timings.
use super::config::SimConfig;
use super::conn::THREAD_STACK;
use super::process::SimProcess;
use super::script::BootReport;
use super::SimError;
use hax_fid::Fid;
use serde::Serialize;
use std::time::{Duration, Instant};

/// How one process of a fleet fared.
pub struct FleetOutcome {
    /// Position in the list of configurations.
    pub index: usize,
    pub process_fid: Fid,
    /// TCP connect time (zero when the connection failed).
    pub connect_time: Duration,
    pub result: Result<BootReport, SimError>,
    /// The process, still connected, when it could connect (even if the boot then failed).
    pub process: Option<SimProcess>,
}

/// Connects and boots every configuration concurrently (one thread each, 256 KiB stacks),
/// starting one every `stagger`; waits for all and returns the outcomes in input order.
pub fn boot_many(
    ha_endpoint: &str,
    configs: Vec<SimConfig>,
    stagger: Duration,
) -> Vec<FleetOutcome> {
    let mut handles = Vec::with_capacity(configs.len());
    for (index, cfg) in configs.into_iter().enumerate() {
        if index > 0 && !stagger.is_zero() {
            std::thread::sleep(stagger);
        }
        let fid = cfg.process_fid;
        let ep = ha_endpoint.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("sim-boot-{index}"))
            .stack_size(THREAD_STACK)
            .spawn(move || boot_one(index, &ep, cfg));
        handles.push((index, fid, spawned));
    }
    handles
        .into_iter()
        .map(|(index, process_fid, spawned)| {
            let failed = |e: SimError| FleetOutcome {
                index,
                process_fid,
                connect_time: Duration::ZERO,
                result: Err(e),
                process: None,
            };
            match spawned {
                Err(e) => failed(SimError::Thread(e)),
                Ok(h) => h.join().unwrap_or_else(|_| {
                    failed(SimError::Closed("the boot thread panicked".into()))
                }),
            }
        })
        .collect()
}

fn boot_one(index: usize, ha_endpoint: &str, cfg: SimConfig) -> FleetOutcome {
    let process_fid = cfg.process_fid;
    let t0 = Instant::now();
    match SimProcess::connect(ha_endpoint, cfg) {
        Err(e) => FleetOutcome {
            index,
            process_fid,
            connect_time: Duration::ZERO,
            result: Err(e),
            process: None,
        },
        Ok(p) => {
            let connect_time = t0.elapsed();
            let result = p.boot();
            FleetOutcome {
                index,
                process_fid,
                connect_time,
                result,
                process: Some(p),
            }
        }
    }
}

/// Distribution of a duration over processes, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; all zero for no samples.
    pub fn of(mut samples: Vec<Duration>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort();
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let rank = |p: f64| {
            let i = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            ms(samples[i.clamp(1, samples.len()) - 1])
        };
        Percentiles {
            min: ms(samples[0]),
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: ms(samples[samples.len() - 1]),
        }
    }
}

/// Timings of a fleet boot.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TimingSummary {
    pub processes: usize,
    pub booted: usize,
    pub failed: usize,
    /// First entrypoint request to its rc-0 reply.
    pub entrypoint_ms: Percentiles,
    /// Start of boot to DTM_RECOVERED sent.
    pub boot_ms: Percentiles,
    /// Most entrypoint requests one process needed.
    pub max_ep_attempts: u32,
}

/// Summarizes the outcomes of `boot_many`.
pub fn summarize(outcomes: &[FleetOutcome]) -> TimingSummary {
    let reports: Vec<&BootReport> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .collect();
    TimingSummary {
        processes: outcomes.len(),
        booted: reports.len(),
        failed: outcomes.len() - reports.len(),
        entrypoint_ms: Percentiles::of(reports.iter().map(|r| r.ep_latency).collect()),
        boot_ms: Percentiles::of(reports.iter().map(|r| r.boot_time).collect()),
        max_ep_attempts: reports.iter().map(|r| r.ep_attempts).max().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of((1..=100).map(Duration::from_millis).collect());
        assert_eq!(
            (p.min, p.p50, p.p95, p.p99, p.max),
            (1.0, 50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(vec![]), Percentiles::default());
        let one = Percentiles::of(vec![Duration::from_millis(7)]);
        assert_eq!((one.p50, one.max), (7.0, 7.0));
    }

    #[test]
    fn unreachable_ha_gives_failed_outcomes_not_panics() {
        // Port 1 on loopback: nothing listens there.
        let cfgs = (0..3)
            .map(|i| SimConfig::new(Fid::typed(b'r', 1, 6 + 3 * i)))
            .collect();
        let out = boot_many("inet:tcp:127.0.0.1@1", cfgs, Duration::ZERO);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|o| o.result.is_err() && o.process.is_none()));
        let s = summarize(&out);
        assert_eq!((s.processes, s.booted, s.failed), (3, 0, 3));
    }
}
