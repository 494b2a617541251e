//! `cargo bench --bench watch_payload`: how long hax takes to decode a Consul `service` watch
//! payload of 10, 1000 and 10000 entries (the CPU part of WatchIngest's answer; the HTTP
//! transfer is measured end to end by `hax-bench`'s watch-ingest scenario). Prints the median
//! and spread of repeated decodes; the target is a 10000-entry payload in under 50 ms all told.
use hax::bench::payload::{entry_fid, health_payload};
use hax::consul::health::parse_payload;
use std::time::Instant;

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this too, without it: then
    // only a quick check that decoding works (debug builds are slow).
    let measuring = std::env::args().any(|a| a == "--bench");
    let sizes: &[(usize, usize)] = if measuring {
        &[(10, 2000), (1000, 50), (10000, 15)]
    } else {
        &[(10, 3), (1000, 1)]
    };
    println!("| entries | payload | decode p50 | min | max | MB/s (p50) |");
    println!("|---|---|---|---|---|---|");
    for &(n, reps) in sizes {
        let fids: Vec<_> = (0..n).map(|i| entry_fid(0x1_0000, i)).collect();
        let critical = &fids[..1];
        let body = health_payload("node-1", "ios", &fids, critical, 77);
        let mut times: Vec<f64> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                let parsed = parse_payload(&body).expect("a well-formed payload");
                let ms = t.elapsed().as_secs_f64() * 1e3;
                assert_eq!(parsed.health.len(), n);
                assert_eq!(parsed.health.iter().filter(|h| !h.healthy).count(), 1);
                ms
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let p50 = times[times.len() / 2];
        println!(
            "| {n} | {:.2} MB | {p50:.3} ms | {:.3} ms | {:.3} ms | {:.0} |",
            body.len() as f64 / 1e6,
            times[0],
            times[times.len() - 1],
            body.len() as f64 / 1e6 / (p50 / 1e3)
        );
    }
}
