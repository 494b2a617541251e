//! The hax daemon: wires the actors together, runs until SIGTERM/SIGINT, shuts down within
//! a bound (even with Consul down). `run` is what `hax` without a subcommand does.
use crate::actors::consul_writer::{ConsulWriter, Flush};
use crate::actors::entrypoint::{self, Responder};
use crate::actors::fid_resolver::FidResolver;
use crate::actors::ha_broadcaster::{AttachMero, HaBroadcaster, SharedModel};
use crate::actors::health_monitor::{HealthMonitor, MonitorConfig, MonitorOutputs};
use crate::actors::merolink::{
    EntrypointLog, LinkedProcesses, MeroLink, MeroLinkConfig, MeroOutputs, Stopped,
};
use crate::actors::process_status::ProcessStatus;
use crate::actors::watch_ingest::{self, IngestState};
use crate::config::Cli;
use crate::consul::Consul;
use crate::rc::campaign::{campaign, resign, CampaignConfig, SessionSlot};
use crate::rc::{self, RcConfig, RcSetup};
use crate::signals::StopSignal;
use crate::view::{ClusterView, Identity, SharedView};
use actix::prelude::*;
use futures_util::FutureExt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

async fn wait_for_identity(view: &SharedView) -> Identity {
    loop {
        if let Some(id) = view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .identity
            .clone()
        {
            return id;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the daemon; returns the process exit code. The stop signals must have been blocked
/// in every thread before (`signals::block`, first thing in `main`): hax takes them with
/// `sigwait`, so no handler a loaded library installed ever runs.
pub fn run(cli: Cli) -> i32 {
    crate::supervise::install_panic_hook();
    let stop = match crate::signals::spawn_waiter() {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot start the signal thread: {e}");
            return 70;
        }
    };
    let sys = actix::System::new();
    sys.block_on(async move { serve(cli, stop).await })
}

/// Says which Motr library hax is linked against, first thing: a daemon built on the stand-in
/// can only talk to simulated processes, and must not pass unnoticed in production.
fn log_backend() {
    match crate::ffi::backend() {
        "motr" => log::info!(
            "hax {}: Motr backend: libmotr (real Motr processes)",
            env!("CARGO_PKG_VERSION")
        ),
        other => log::warn!(
            "hax {}: Motr backend: {other}; this build can only talk to SIMULATED Motr processes (build with --features motr for a real cluster)",
            env!("CARGO_PKG_VERSION")
        ),
    }
}

async fn serve(cli: Cli, mut stop: StopSignal) -> i32 {
    log_backend();
    let consul_cfg = cli.consul_config();
    let consul = Consul::new(&consul_cfg);
    log::info!("using Consul at {}", consul.base_url());
    let view: SharedView = Arc::new(RwLock::new(ClusterView::default()));
    let resolver = FidResolver::new(consul.clone(), view.clone(), cli.node.clone()).start();

    // Nothing else can start before hax knows who it is (Consul may not be up yet).
    let identity = tokio::select! {
        id = wait_for_identity(&view) => id,
        _ = stop.wait() => {
            log::info!("stopped before it learned its identity");
            return 0;
        }
        _ = crate::supervise::wait_fatal() => return crate::supervise::EXIT_FATAL,
    };

    let leader_slot = SessionSlot::default();
    let campaign_task = if cli.campaign {
        let cfg = CampaignConfig {
            node: identity.node.clone(),
            ttl: Duration::from_secs(cli.leader_ttl_s),
            lock_delay: Duration::from_secs(cli.leader_lock_delay_s),
        };
        Some(crate::supervise::spawn_task(
            "leader campaign",
            campaign(consul.clone(), cfg, leader_slot.clone()),
        ))
    } else {
        None
    };

    // Motr's news: recorded (ProcessStatus → ConsulWriter, confirmed once durable) and
    // turned into HA states (HaBroadcaster, which never waits on Consul; HealthMonitor does
    // its Consul reads).
    let writer = ConsulWriter::new(consul.clone()).start();
    let model = Arc::new(SharedModel::new(view.clone()));
    let status = ProcessStatus::new(writer.clone(), view.clone()).start();
    let broadcaster = HaBroadcaster::new(model.clone()).start();
    let monitor = HealthMonitor::new(
        consul.clone(),
        MonitorConfig {
            mode: cli.health_from,
            node: identity.node.clone(),
            own: identity.process,
            reconcile: cli.reconcile,
            safety_net: Duration::from_secs(30),
        },
        MonitorOutputs {
            reports: broadcaster.clone().recipient(),
            remote: broadcaster.clone().recipient(),
            ready: broadcaster.clone().recipient(),
            writer: Some(writer.clone().recipient()),
        },
    )
    .start();

    let secret = match cli.secret() {
        Ok(s) => s,
        Err(e) => {
            log::error!("bad configuration: {e}");
            return 64;
        }
    };
    if secret.is_none() {
        log::warn!(
            "no watch secret configured: anyone who can reach the watch endpoint can post health"
        );
    }
    let status_state = crate::status::endpoint::StatusState {
        view: view.clone(),
        model: model.clone(),
    };
    let ingest = IngestState {
        updates: broadcaster.clone().recipient(),
        limit: cli.payload_limit,
        secret,
        last: Default::default(),
    };
    let server = match actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(actix_web::web::Data::new(ingest.clone()))
            .app_data(actix_web::web::Data::new(status_state.clone()))
            .configure(crate::status::endpoint::configure)
            .app_data(actix_web::web::PayloadConfig::new(ingest.limit))
            .configure(watch_ingest::configure)
    })
    .workers(1)
    .disable_signals()
    .bind((cli.http_addr.as_str(), cli.http_port))
    {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot bind {}:{}: {e}", cli.http_addr, cli.http_port);
            return 64;
        }
    };
    for a in server.addrs() {
        log::info!("watch endpoint listening on http://{a}");
    }
    let server = server.run();
    let server_handle = server.handle();
    crate::supervise::spawn_task("HTTP server", async move {
        if let Err(e) = server.await {
            log::error!("HTTP server: {e}");
        }
    });

    let journal = match &cli.journal {
        None => None,
        Some(path) => match crate::actors::merolink::journal::Journal::open(path) {
            Ok((j, replay)) => {
                log::info!(
                    "journal {}: process events are confirmed to Motr once written there; {} record(s) from before to record again",
                    path.display(),
                    replay.len()
                );
                Some((j, replay))
            }
            Err(e) => {
                log::error!("journal {} cannot be opened: {e}", path.display());
                return 73;
            }
        },
    };
    let requests = EntrypointLog::default();
    let linked = LinkedProcesses::default();
    let mero_cfg = MeroLinkConfig {
        endpoint: identity.endpoint.clone(),
        process: identity.process,
        ha_service: identity.ha_service,
        rm_service: identity.rm_service,
        node_uuid: identity.node_uuid.clone(),
        delivery_timeout: Duration::from_millis(cli.delivery_timeout_ms),
    };
    let outputs = MeroOutputs {
        record: Some(status.clone().recipient()),
        states: Some(broadcaster.clone().recipient()),
        stob_errors: Some(status.clone().recipient()),
        view: model.clone(),
        requests: requests.clone(),
        linked: linked.clone(),
        journal,
    };
    let (mero, ep_rx, started) = match MeroLink::spawn(mero_cfg, outputs) {
        Ok(x) => x,
        Err(e) => {
            log::error!("Motr HA interface init failed: {e}");
            return 70;
        }
    };
    broadcaster.do_send(AttachMero(mero.sender()));
    // The RC: the bq/ consumer on every hax, the eq/ rules while this hax holds `leader`.
    let rc = rc::spawn(RcSetup {
        consul: consul.clone(),
        view: view.clone(),
        session: cli.campaign.then(|| leader_slot.clone()),
        status: broadcaster.clone().recipient(),
        cfg: RcConfig {
            node: identity.node.clone(),
            poll: Duration::from_secs(cli.rc_poll_s),
            batch: cli.rc_batch,
            gc_every: Duration::from_secs(5),
            node_liveness: cli.health_from == crate::actors::health_monitor::HealthFrom::Node,
        },
    });
    let responder = Responder {
        view: view.clone(),
        requests,
        linked,
        mero: mero.sender(),
        pause: Duration::from_millis(cli.entrypoint_pause_ms),
    };
    let responder_thread = entrypoint::spawn(responder, ep_rx);

    // `start` returns once hax's own entrypoint request is answered (needs a leader).
    let start_result = loop {
        match started.try_recv() {
            Ok(r) => break Some(r),
            Err(crossbeam_channel::TryRecvError::Disconnected) => break None,
            Err(_) => {}
        }
        tokio::select! {
            _ = actix_rt::time::sleep(Duration::from_millis(50)) => {},
            _ = stop.wait() => break None,
            _ = crate::supervise::wait_fatal() => break None,
        }
    };
    let code = match start_result {
        Some(Ok(())) => {
            log::info!(
                "hax: ready (process {}, endpoint {})",
                identity.process,
                identity.endpoint
            );
            crate::notify::ready(identity.process, &identity.endpoint);
            tokio::select! {
                _ = stop.wait() => 0,
                _ = crate::supervise::wait_fatal() => crate::supervise::EXIT_FATAL,
            }
        }
        Some(Err(e)) => {
            log::error!(
                "Motr HA interface start failed at {}: {e}",
                identity.endpoint
            );
            70
        }
        None if crate::supervise::wait_fatal().now_or_never().is_some() => {
            crate::supervise::EXIT_FATAL
        }
        None => 0,
    };

    // Shutdown: stop taking work, have Motr drop every link and stop (hax's own STOPPING and
    // STOPPED come through the self link meanwhile and are recorded), flush KV.
    log::info!("shutting down");
    crate::notify::stopping();
    let bound = Duration::from_millis(cli.shutdown_ms);
    let shutdown_started = std::time::Instant::now();
    crate::supervise::stopping();
    view.write().unwrap_or_else(|e| e.into_inner()).stopping = true;
    rc.signal_stop();
    // Motr's stop waits out the RPC timeout for each peer that is gone: never past the bound.
    let motr_bound = bound.mul_f64(0.6);
    let stopper = std::thread::spawn(move || mero.stop(motr_bound));
    while !stopper.is_finished() {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let mut motr_left = false;
    match stopper.join() {
        Ok(Stopped::Clean) => {
            let _ = responder_thread.join();
        }
        Ok(Stopped::Left(links)) => {
            motr_left = true;
            log::warn!(
                "Motr HA interface still stopping after {motr_bound:?}; exiting without waiting for {} link(s):",
                links.len()
            );
            for (link, info) in links {
                log::warn!(
                    "  link {:#x}: process {} at {} ({:?}{})",
                    link.0,
                    info.process
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "?".into()),
                    info.peer_ep,
                    info.state,
                    if info.is_self { ", self link" } else { "" }
                );
            }
        }
        Err(_) => log::error!("MeroLink's stop panicked"),
    }
    let left = bound.saturating_sub(shutdown_started.elapsed());
    match writer.send(Flush { deadline: left }).await {
        Ok(0) => log::info!("all records written"),
        Ok(n) => log::error!("{n} record(s) could not be written before exit"),
        Err(_) => log::error!("ConsulWriter gone before flush"),
    }
    drop((status, monitor, broadcaster, resolver));
    rc.stop(Duration::from_millis(300)).await;
    if let Some(task) = campaign_task {
        // Stopped first: it would take the key again the moment resign releases it.
        task.abort();
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            resign(&consul, &leader_slot, &identity.node),
        )
        .await;
    }
    server_handle.stop(false).await;
    log::info!("hax: stopped");
    if motr_left {
        // Motr is still stopping on another thread; the exit handlers of the libraries it
        // loaded would wait for it (until the RPC timeout of the peers that are gone).
        crate::ffi::exit_now(code);
    }
    code
}
