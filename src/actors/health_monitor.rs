//! HealthMonitor: the Consul reads that keep the HA model's health true, off the HA path.
//!
//! - `Recheck`: a watch delivery reported a new failure; deliveries can be late, so the
//!   failure is acted on only once a fresh read of the service's health confirms it
//!   (`GET /v1/health/service/<name>`, sent to HaBroadcaster as Consul's own answer).
//! - The reconciliation loop (a task this actor owns): a blocking query over every check, at
//!   most once a second, repairs the deliveries Consul lost (it never retries a failed one).
//!
//! Both hand `HaStateUpdate`s to HaBroadcaster and never hold it up: a slow Consul makes only
//! this actor slow.
use crate::consul::health::{from_checks, parse_payload, Check};
use crate::consul::Consul;
use crate::messages::{HaStateUpdate, HealthSource};
use actix::prelude::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Services whose health a watch reported failing: read it again from Consul.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Recheck {
    pub services: BTreeSet<String>,
}

pub struct HealthMonitor {
    consul: Consul,
    updates: Recipient<HaStateUpdate>,
    reconcile: bool,
}

impl HealthMonitor {
    /// `reconcile`: run the reconciliation loop.
    pub fn new(consul: Consul, updates: Recipient<HaStateUpdate>, reconcile: bool) -> Self {
        HealthMonitor {
            consul,
            updates,
            reconcile,
        }
    }
}

impl Actor for HealthMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.reconcile {
            // Owned by this actor: it stops with it.
            ctx.spawn(reconcile_loop(self.consul.clone(), self.updates.clone()).into_actor(self));
        }
    }
}

impl Handler<Recheck> for HealthMonitor {
    type Result = ();
    fn handle(&mut self, r: Recheck, ctx: &mut Context<Self>) {
        for name in r.services {
            let consul = self.consul.clone();
            let updates = self.updates.clone();
            ctx.spawn(
                async move {
                    let path = format!("/v1/health/service/{}", crate::consul::encode_query(&name));
                    match consul.get_raw(&path, None, Duration::ZERO).await {
                        Ok((Some(body), _)) => {
                            match parse_payload(&body) {
                                Ok(p) => updates.do_send(HaStateUpdate {
                                    entries: p.health,
                                    source: HealthSource::Consul,
                                    received: Instant::now(),
                                }),
                                Err(e) => log::warn!("HealthMonitor: re-check of {name}: {e}"),
                            }
                        }
                        Ok((None, _)) => {}
                        Err(e) => {
                            // Consul cannot confirm: the reconciliation loop will settle it.
                            log::warn!("HealthMonitor: re-check of {name} failed ({e}); waiting for reconciliation");
                        }
                    }
                }
                .into_actor(self),
            );
        }
    }
}

/// Repairs lost watch deliveries: a blocking query over every check, at most once a second.
async fn reconcile_loop(consul: Consul, updates: Recipient<HaStateUpdate>) {
    let mut index = 0u64;
    let mut backoff = crate::actors::fid_resolver::Backoff::default();
    loop {
        let started = Instant::now();
        match consul
            .get_raw("/v1/health/state/any", Some(index), Duration::from_secs(30))
            .await
        {
            Ok((body, idx)) => {
                backoff.reset();
                let body = body.unwrap_or_default();
                let checks: Vec<Check> = serde_json::from_slice(&body).unwrap_or_default();
                let parsed = from_checks(&checks);
                // Awaited: a slow HaBroadcaster slows this loop, not the other way round.
                let _ = updates
                    .send(HaStateUpdate {
                        entries: parsed.health,
                        source: HealthSource::Consul,
                        received: Instant::now(),
                    })
                    .await;
                index = if idx < index { 0 } else { idx.max(1) };
            }
            Err(e) => {
                log::debug!("HealthMonitor: reconciliation query failed: {e}");
                actix_rt::time::sleep(backoff.next_delay()).await;
                continue;
            }
        }
        let spent = started.elapsed();
        if spent < Duration::from_secs(1) {
            actix_rt::time::sleep(Duration::from_secs(1) - spent).await;
        }
    }
}
