//! Captured watch deliveries, replayed as Consul made them: each body POSTed to its recorded
//! path with its recorded `X-Consul-Index`, in arrival order. Shared by
//! `examples/replay_watch.rs` (`--deliveries DIR`) and the replay tests (included with
//! `#[path]`, so the test replays exactly what the example does).
#![allow(dead_code)]
use std::path::{Path, PathBuf};

/// One recorded delivery (a line of `deliveries.jsonl`).
#[derive(Clone, Debug)]
pub struct Delivery {
    pub n: u64,
    /// The agent that sent it.
    pub agent: String,
    /// The scenario step it arrived in.
    pub step: String,
    pub path: String,
    pub index: Option<u64>,
    pub file: PathBuf,
}

/// The deliveries recorded in `dir/deliveries.jsonl`, in arrival order.
pub fn load(dir: &Path) -> Result<Vec<Delivery>, String> {
    let list = dir.join("deliveries.jsonl");
    let text = std::fs::read_to_string(&list).map_err(|e| format!("{}: {e}", list.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{} line {}: {e}", list.display(), i + 1))?;
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let bad = || {
            format!(
                "{} line {}: needs n, agent, step, path, file",
                list.display(),
                i + 1
            )
        };
        out.push(Delivery {
            n: v["n"].as_u64().ok_or_else(bad)?,
            agent: s("agent").ok_or_else(bad)?,
            step: s("step").ok_or_else(bad)?,
            path: s("path").ok_or_else(bad)?,
            index: v["headers"]["X-Consul-Index"]
                .as_str()
                .and_then(|i| i.parse().ok()),
            file: dir.join(s("file").ok_or_else(bad)?),
        });
    }
    out.sort_by_key(|d| d.n);
    Ok(out)
}

/// POSTs one delivery to hax at `url` (`http://127.0.0.1:PORT`) as Consul did; answers the
/// HTTP status and body.
pub fn post(agent: &ureq::Agent, url: &str, d: &Delivery) -> Result<(u16, String), String> {
    let body = std::fs::read(&d.file).map_err(|e| format!("{}: {e}", d.file.display()))?;
    let mut req = agent
        .post(&format!("{url}{}", d.path))
        .set("Content-Type", "application/json");
    if let Some(i) = d.index {
        req = req.set("X-Consul-Index", &i.to_string());
    }
    match req.send_bytes(&body) {
        Ok(r) => Ok((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
        Err(e) => Err(format!("POST {}{}: {e}", url, d.path)),
    }
}
