//! `get-entrypoint`: what an entrypoint reply from hax would carry now, computed the way hax
//! computes it (`ClusterView::entrypoint`) from what Consul holds.
use crate::consul::catalog::CatalogEntry;
use crate::consul::kv::KvEntry;
use crate::consul::{Consul, ConsulConfig, ConsulError};
use crate::fid::Fid;
use crate::view::{ClusterView, Confd, ConfigTree};
use serde::Deserialize;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EntrypointError {
    #[error(transparent)]
    Consul(#[from] ConsulError),
    /// hax would answer EAGAIN, for this reason.
    #[error("no entrypoint yet: {0}")]
    NotYet(String),
}

/// The leader's node: `leader` key -> its session -> the session's node.
async fn leader_node(consul: &Consul) -> Result<Option<String>, ConsulError> {
    let (entries, _) = consul
        .get_json::<Vec<KvEntry>>("/v1/kv/leader", None, Duration::ZERO)
        .await?;
    let Some(session) = entries
        .and_then(|v| v.into_iter().next())
        .and_then(|e| e.session)
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Info {
        #[serde(rename = "Node")]
        node: String,
    }
    let path = format!("/v1/session/info/{session}");
    let (info, _) = consul
        .get_json::<Vec<Info>>(&path, None, Duration::ZERO)
        .await?;
    Ok(info.and_then(|v| v.into_iter().next()).map(|i| i.node))
}

/// The entrypoint as YAML, like Hare's `get-entrypoint`:
///
/// ```text
/// principal-RM: node-1
/// rm-fid: 0x7300000000000001:0xb
/// rm-endpoint: inet:tcp:127.0.0.1@22002
/// quorum: 1
/// confds:
///   - node: node-1
///     fid: 0x7200000000000001:0x9
///     address: inet:tcp:127.0.0.1@22002
/// ```
pub async fn get_entrypoint(
    consul_url: &str,
    token: Option<&str>,
) -> Result<String, EntrypointError> {
    let consul = Consul::new(&ConsulConfig::with_env_ca(consul_url, token));
    let (entries, _) = consul
        .get_json::<Vec<CatalogEntry>>("/v1/catalog/service/confd", None, Duration::ZERO)
        .await?;
    let mut confds: Vec<Confd> = Vec::new();
    for e in entries.unwrap_or_default() {
        let fid = Fid::parse_process_id(&e.service_id)
            .map_err(|err| EntrypointError::NotYet(format!("confd entry on {}: {err}", e.node)))?;
        confds.push(Confd {
            node: e.node.clone(),
            fid,
            endpoint: e.endpoint(),
        });
    }
    confds.sort_by_key(|c| c.fid);
    let (kv, _) = consul
        .get_json::<Vec<KvEntry>>("/v1/kv/m0conf/?recurse", None, Duration::ZERO)
        .await?;
    let kv: Vec<(String, String)> = kv
        .unwrap_or_default()
        .iter()
        .map(|e| (e.key.clone(), e.value_string()))
        .collect();
    let view = ClusterView {
        confds: Some(confds),
        leader_node: leader_node(&consul).await?,
        config: ConfigTree::from_kv(&kv),
        consul_up: true,
        ..Default::default()
    };
    let reply = view.entrypoint().map_err(EntrypointError::NotYet)?;
    let leader = view.leader_node.as_deref().unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "principal-RM: {leader}");
    let _ = writeln!(s, "rm-fid: {}", reply.rm_fid);
    let _ = writeln!(s, "rm-endpoint: {}", reply.rm_ep);
    let _ = writeln!(s, "quorum: {}", reply.quorum);
    let _ = writeln!(s, "confds:");
    for c in view.confds.iter().flatten() {
        let _ = writeln!(
            s,
            "  - node: {}\n    fid: {}\n    address: {}",
            c.node, c.fid, c.endpoint
        );
    }
    Ok(s)
}
