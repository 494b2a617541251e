//! The leader campaign (RcLeader in actors.md): campaigns for the RC `leader` key on behalf of
//! this node; the RC loop (`leader.rs`) acts while the key is ours ([`SessionSlot`]).
//!
//! It holds a Consul session tied to the node's health (`serfHealth`) and to hax's own life
//! (a TTL that only this hax renews), and tries to acquire `leader` with the node name as
//! value. Consul guarantees one holder at a time; when the holder's session dies (node down,
//! or hax gone for 2×TTL), the key is released and, after the session's lock delay, another
//! hax acquires it. On shutdown the key is released and the session destroyed, so another hax
//! (or this one restarted) takes it at once. A hax restarted after a crash takes over its
//! previous incarnation's session when that one still holds the key.
use crate::consul::backoff::Backoff;
use crate::consul::kv::KvEntry;
use crate::consul::{Consul, ConsulError};
use serde::Deserialize;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// How the campaign behaves.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    pub node: String,
    /// Session TTL (Consul: 10 s to 24 h; invalidated after up to 2×TTL without renewal).
    pub ttl: Duration,
    /// Time after a release during which nobody may acquire the key (Consul default 15 s).
    pub lock_delay: Duration,
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

/// The session this hax holds, shared with the shutdown path.
#[derive(Clone, Default)]
pub struct SessionSlot(Rc<RefCell<Option<String>>>);

impl SessionSlot {
    pub fn get(&self) -> Option<String> {
        self.0.borrow().clone()
    }
}

async fn create_session(consul: &Consul, cfg: &CampaignConfig) -> Result<String, ConsulError> {
    let body = serde_json::json!({
        "Name": session_name(&cfg.node),
        "Node": cfg.node,
        "Checks": ["serfHealth"],
        "TTL": format!("{}s", cfg.ttl.as_secs().max(10)),
        "LockDelay": format!("{}s", cfg.lock_delay.as_secs()),
        "Behavior": "release",
    });
    let out = consul
        .put("/v1/session/create", body.to_string().into_bytes())
        .await?;
    serde_json::from_slice::<Created>(&out)
        .map(|c| c.id)
        .map_err(|e| ConsulError::Decode {
            what: "session create".into(),
            reason: e.to_string(),
        })
}

fn session_name(node: &str) -> String {
    format!("hax-leader-{node}")
}

/// The session holding `leader`, when it is this node's hax's own (a previous incarnation of
/// this hax, killed and restarted): the new hax takes it over instead of waiting up to 2×TTL
/// for Consul to invalidate it and then the lock delay. One hax runs per node, so a session
/// of this name on this node is this hax's.
async fn own_leader_session(consul: &Consul, cfg: &CampaignConfig) -> Option<String> {
    #[derive(Deserialize)]
    struct Info {
        #[serde(rename = "Node")]
        node: String,
        #[serde(rename = "Name")]
        name: String,
    }
    let (entries, _) = consul
        .get_json::<Vec<KvEntry>>("/v1/kv/leader", None, Duration::ZERO)
        .await
        .ok()?;
    let session = entries?
        .into_iter()
        .next()?
        .session
        .filter(|s| !s.is_empty())?;
    let (infos, _) = consul
        .get_json::<Vec<Info>>(&format!("/v1/session/info/{session}"), None, Duration::ZERO)
        .await
        .ok()?;
    let info = infos?.into_iter().next()?;
    (info.node == cfg.node && info.name == session_name(&cfg.node)).then_some(session)
}

/// Runs the campaign forever (spawn it on the actix system).
pub async fn campaign(consul: Consul, cfg: CampaignConfig, slot: SessionSlot) {
    let mut backoff = Backoff::default();
    let mut index = 0u64;
    let mut holding = false;
    let mut locked_since: Option<std::time::Instant> = None;
    if let Some(s) = own_leader_session(&consul, &cfg).await {
        log::info!(
            "RcLeader: the leader key is held by this node's previous session {s}; taking it over"
        );
        *slot.0.borrow_mut() = Some(s);
    }
    loop {
        let session = match slot.get() {
            Some(s) => s,
            None => match create_session(&consul, &cfg).await {
                Ok(s) => {
                    log::info!("RcLeader: session {s} created for node {}", cfg.node);
                    *slot.0.borrow_mut() = Some(s.clone());
                    s
                }
                Err(e) => {
                    log::warn!("RcLeader: cannot create a session yet: {e}");
                    actix_rt::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
        };
        // Keep the session alive; a 404 means Consul invalidated it.
        if let Err(e) = consul
            .put(&format!("/v1/session/renew/{session}"), Vec::new())
            .await
        {
            log::warn!("RcLeader: session {session} lost ({e}); making a new one");
            *slot.0.borrow_mut() = None;
            if holding {
                log::warn!("RcLeader: this node is no longer the RC leader");
                holding = false;
                crate::metrics::rc_leader(false);
            }
            actix_rt::time::sleep(backoff.next_delay()).await;
            continue;
        }
        let current = consul
            .get_json::<Vec<KvEntry>>("/v1/kv/leader", Some(index), cfg.ttl / 3)
            .await;
        let (holder, idx) = match current {
            Ok((v, idx)) => (
                v.and_then(|v| v.into_iter().next())
                    .and_then(|e| e.session)
                    .filter(|s| !s.is_empty()),
                idx,
            ),
            Err(e) => {
                log::debug!("RcLeader: reading the leader key: {e}");
                actix_rt::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        index = if idx < index { 0 } else { idx.max(1) };
        match holder {
            Some(h) if h == session => {
                if !holding {
                    log::info!("RcLeader: this node ({}) is the RC leader", cfg.node);
                    holding = true;
                    crate::metrics::rc_leader(true);
                }
            }
            Some(_) => {
                if holding {
                    log::warn!("RcLeader: another session holds the leader key now");
                    holding = false;
                    crate::metrics::rc_leader(false);
                }
            }
            None => {
                // Free: try to take it (refused during the lock delay; then we try again).
                let path = format!("/v1/kv/leader?acquire={session}");
                match consul.put(&path, cfg.node.clone().into_bytes()).await {
                    Ok(b) if b.starts_with(b"true") => {
                        log::info!(
                            "RcLeader: acquired the leader key: this node ({}) is the RC leader",
                            cfg.node
                        );
                        holding = true;
                        crate::metrics::rc_leader(true);
                        locked_since = None;
                    }
                    Ok(_) => {
                        // Nobody holds it, yet it is refused: the lock delay of the session
                        // that held it last (Consul's default is 15 s) is not over.
                        let since = *locked_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() < Duration::from_millis(600) {
                            log::info!(
                                "RcLeader: the leader key is free but still locked (the lock delay of its last holder, up to {:?}); waiting",
                                cfg.lock_delay
                            );
                        } else {
                            log::debug!(
                                "RcLeader: still waiting for the leader key's lock delay ({:.0?} so far)",
                                since.elapsed()
                            );
                        }
                        index = 0;
                        actix_rt::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => log::warn!("RcLeader: acquire failed: {e}"),
                }
            }
        }
    }
}

/// Releases the leader key and destroys the session at shutdown. The explicit release comes
/// first: a key released by its holder is free at once, while one freed by destroying its
/// session stays locked for the lock delay.
pub async fn resign(consul: &Consul, slot: &SessionSlot, node: &str) {
    crate::metrics::rc_leader(false);
    if let Some(s) = slot.get() {
        // The value stays the node's name: reconnecting processes are told the last leader.
        if let Err(e) = consul
            .put(
                &format!("/v1/kv/leader?release={s}"),
                node.as_bytes().to_vec(),
            )
            .await
        {
            log::warn!("RcLeader: could not release the leader key: {e}");
        }
        match consul
            .put(&format!("/v1/session/destroy/{s}"), Vec::new())
            .await
        {
            Ok(_) => log::info!("RcLeader: session {s} destroyed"),
            Err(e) => log::warn!("RcLeader: could not destroy session {s}: {e}"),
        }
    }
}
