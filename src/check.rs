//! `hax check <fid>`: a Consul script check; `hax leader`: who holds the RC leader key.
//!
//! `hax check`: Exit 0 only when KV says the process started
//! (STARTED or DTM_RECOVERED) and that pid is alive on this node; otherwise exit 2 (Consul's
//! "critical") with a one-line reason.
use crate::consul::kv::KvEntry;
use crate::consul::{Consul, ConsulConfig};
use crate::fid::Fid;
use crate::motr::ProcessEventKind;
use std::time::Duration;

/// Why the check failed, as one line.
pub async fn check(consul_cfg: &ConsulConfig, process: Fid) -> Result<String, String> {
    let consul = Consul::new(consul_cfg);
    let key = format!("/v1/kv/processes/{process}");
    let entry = match consul
        .get_json::<Vec<KvEntry>>(&key, None, Duration::ZERO)
        .await
    {
        Ok((Some(v), _)) => v.into_iter().next(),
        Ok((None, _)) => None,
        Err(e) => return Err(format!("cannot read KV: {e}")),
    };
    let Some(entry) = entry else {
        return Err(format!("no processes/{process} record in KV"));
    };
    let v: serde_json::Value = serde_json::from_str(&entry.value_string())
        .map_err(|e| format!("processes/{process} is not JSON: {e}"))?;
    let state = v.get("state").and_then(|s| s.as_str()).unwrap_or("");
    let pid = v.get("pid").and_then(|p| p.as_u64()).unwrap_or(0);
    match ProcessEventKind::from_motr_name(state) {
        Some(k) if k.is_started() => {}
        _ => return Err(format!("{process} is {state:?} in KV, not started")),
    }
    if pid == 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!("{process} pid {pid} is not alive on this node"));
    }
    Ok(format!("{process} {state} pid {pid} alive"))
}

/// `hax leader`: the node holding the `leader` key and its session, like
/// `consul kv get -detailed leader` shows them.
pub async fn leader(consul_cfg: &ConsulConfig) -> Result<String, String> {
    let consul = Consul::new(consul_cfg);
    let entry = match consul
        .get_json::<Vec<KvEntry>>("/v1/kv/leader", None, Duration::ZERO)
        .await
    {
        Ok((Some(v), _)) => v.into_iter().next(),
        Ok((None, _)) => None,
        Err(e) => return Err(format!("cannot read the leader key: {e}")),
    };
    match entry {
        Some(e) if e.session.as_deref().is_some_and(|s| !s.is_empty()) => Ok(format!(
            "leader: {}\nsession: {}",
            e.value_string(),
            e.session.unwrap_or_default()
        )),
        Some(e) => Err(format!(
            "no RC leader (the key holds {:?} but no session)",
            e.value_string()
        )),
        None => Err("no RC leader (no leader key)".into()),
    }
}
