//! Replays every saved fuzzing input through the Rust parsers, with the same checks the fuzz
//! targets run (`fuzz/checks.rs`): the regression inputs of `fuzz/regressions/<target>/`
//! (crashes and panics found by fuzzing, kept after the fix) and the committed seeds of
//! `fuzz/corpus/<target>/seed-*`. Runs on stable in the normal suite; no fuzzer needed.
#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn inputs(dir: &Path, seeds_only: bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            !name.starts_with('.')
                && !name.ends_with(".md")
                && (!seeds_only || name.starts_with("seed-"))
        })
        .collect();
    v.sort();
    v
}

/// Runs `check` on every input, catching panics so that every failing file is named.
fn replay(target: &str, check: fn(&[u8]), files: &[PathBuf]) -> Vec<String> {
    let mut failed = Vec::new();
    for f in files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(format!("{target}: {}", f.display()));
        }
    }
    failed
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn every_saved_regression_input_is_refused_or_parsed_without_a_panic() {
    let mut failed = Vec::new();
    let mut count = 0;
    for (target, check) in checks::TARGETS {
        let files = inputs(&fuzz_dir().join("regressions").join(target), false);
        count += files.len();
        failed.extend(replay(target, *check, &files));
    }
    eprintln!("replayed {count} regression inputs");
    assert!(
        failed.is_empty(),
        "inputs that still break a parser:\n{}",
        failed.join("\n")
    );
}

#[test]
fn every_committed_seed_passes_the_checks() {
    let mut failed = Vec::new();
    for (target, check) in checks::TARGETS {
        let files = inputs(&fuzz_dir().join("corpus").join(target), true);
        assert!(!files.is_empty(), "no seeds for fuzz target {target}");
        failed.extend(replay(target, *check, &files));
    }
    assert!(
        failed.is_empty(),
        "seeds that break a parser:\n{}",
        failed.join("\n")
    );
}

#[test]
fn the_seeds_reach_the_interesting_paths() {
    // Seeds that only ever hit the error path would make the fuzzing shallow.
    let read = |t: &str, f: &str| std::fs::read(fuzz_dir().join("corpus").join(t).join(f)).unwrap();
    let p = hax::consul::health::parse_payload(&read(
        "health_payload",
        "seed-22-service-ios-step2-ios-0xc-critical.json",
    ))
    .unwrap();
    assert!(!p.health.is_empty());
    assert!(hax_sim::ToHa::decode(&read("sim_wire", "seed-ep_req")).is_ok());
    assert!(hax_sim::FromHa::decode(&read("sim_wire", "seed-ep_rep")).is_ok());
    assert!(hax_sim::ToHa::decode(&read("sim_wire", "seed-msg_stob_ioq")).is_ok());
    let text = String::from_utf8(read("description", "seed-threenode.yaml")).unwrap();
    assert!(hax::cluster::Description::parse(&text).is_ok());
}
