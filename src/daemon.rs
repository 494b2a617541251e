//! The hax daemon: wires the actors together, runs until SIGTERM/SIGINT, shuts down within
//! a bound (even with Consul down). `run` is what `hax` without a subcommand does.
use crate::actors::consul_writer::{ConsulWriter, Flush};
use crate::actors::entrypoint::{self, Responder};
use crate::actors::fid_resolver::FidResolver;
use crate::actors::merolink::{
    failed, EntrypointLog, LinkedProcesses, MeroLink, MeroLinkConfig, MeroOutputs,
};
use crate::actors::process_status::{AttachMero, ProcessStatus, SharedModel};
use crate::actors::rc_leader::{campaign, resign, CampaignConfig, SessionSlot};
use crate::actors::watch_ingest::{self, IngestState};
use crate::config::Cli;
use crate::consul::Consul;
use crate::messages::ProcessEvent;
use crate::motr::{ProcessEventKind, ProcessType};
use crate::rc::{self, QueueHandle, RcConfig, RcSetup};
use crate::view::{ClusterView, Identity, SharedView};
use actix::prelude::*;
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

/// Runs the daemon; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let sys = actix::System::new();
    sys.block_on(async move { serve(cli).await })
}

async fn serve(cli: Cli) -> i32 {
    let consul_cfg = cli.consul_config();
    let consul = Consul::new(&consul_cfg);
    log::info!(
        "hax {} using Consul at {}",
        env!("CARGO_PKG_VERSION"),
        consul.base_url()
    );
    let view: SharedView = Arc::new(RwLock::new(ClusterView::default()));
    FidResolver::new(consul.clone(), view.clone(), cli.node.clone()).start();

    // Nothing else can start before hax knows who it is (Consul may not be up yet).
    let identity = tokio::select! {
        id = wait_for_identity(&view) => id,
        _ = shutdown_signal() => {
            log::info!("hax: stopped before it learned its identity");
            return 0;
        }
    };

    let leader_slot = SessionSlot::default();
    if cli.campaign {
        let cfg = CampaignConfig {
            node: identity.node.clone(),
            ttl: Duration::from_secs(cli.leader_ttl_s),
            lock_delay: Duration::from_secs(cli.leader_lock_delay_s),
        };
        actix::spawn(campaign(consul.clone(), cfg, leader_slot.clone()));
    }

    let writer = ConsulWriter::start(consul.clone(), cli.write_capacity);
    let model = Arc::new(SharedModel::new(view.clone()));
    let queue = QueueHandle::start(consul.clone());
    let status = ProcessStatus::new(
        model.clone(),
        writer.clone(),
        consul.clone(),
        cli.reconcile,
        cli.recheck_failures,
    )
    .with_queue(queue.clone())
    .start();

    let secret = match cli.secret() {
        Ok(s) => s,
        Err(e) => {
            log::error!("hax: bad configuration: {e}");
            return 64;
        }
    };
    if secret.is_none() {
        log::warn!("hax: no watch secret configured: anyone who can reach the watch endpoint can post health");
    }
    let ingest = IngestState {
        updates: status.clone().recipient(),
        limit: cli.payload_limit,
        secret,
    };
    let server = match actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(actix_web::web::Data::new(ingest.clone()))
            .app_data(actix_web::web::PayloadConfig::new(ingest.limit))
            .configure(watch_ingest::configure)
    })
    .workers(1)
    .disable_signals()
    .bind((cli.http_addr.as_str(), cli.http_port))
    {
        Ok(s) => s,
        Err(e) => {
            log::error!("hax: cannot bind {}:{}: {e}", cli.http_addr, cli.http_port);
            return 64;
        }
    };
    for a in server.addrs() {
        log::info!("hax: watch endpoint listening on http://{a}");
    }
    let server = server.run();
    let server_handle = server.handle();
    actix::spawn(server);

    let requests = EntrypointLog::default();
    let linked = LinkedProcesses::default();
    let mero_cfg = MeroLinkConfig {
        endpoint: identity.endpoint.clone(),
        process: identity.process,
        ha_service: identity.ha_service,
        rm_service: identity.rm_service,
        node_uuid: identity.node.clone(),
        delivery_timeout: Duration::from_millis(cli.delivery_timeout_ms),
    };
    let outputs = MeroOutputs {
        process_events: Some(status.clone().recipient()),
        stob_errors: Some(status.clone().recipient()),
        view: model.clone(),
        requests: requests.clone(),
        linked: linked.clone(),
    };
    let (mero, ep_rx, started) = match MeroLink::spawn(mero_cfg, outputs) {
        Ok(x) => x,
        Err(e) => {
            log::error!("hax: Motr HA interface init failed: {e}");
            return 70;
        }
    };
    status.do_send(AttachMero(mero.sender()));
    // The RC: the bq/ consumer on every hax, the eq/ rules while this hax holds `leader`.
    let rc = rc::spawn(RcSetup {
        consul: consul.clone(),
        view: view.clone(),
        session: cli.campaign.then(|| leader_slot.clone()),
        status: status.clone().recipient(),
        cfg: RcConfig {
            node: identity.node.clone(),
            poll: Duration::from_secs(cli.rc_poll_s),
            batch: cli.rc_batch,
            gc_every: Duration::from_secs(5),
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
            _ = shutdown_signal() => break None,
        }
    };
    let code = match start_result {
        Some(Ok(())) => {
            log::info!(
                "hax: ready (process {}, endpoint {})",
                identity.process,
                identity.endpoint
            );
            shutdown_signal().await;
            0
        }
        Some(Err(e)) => {
            log::error!(
                "hax: Motr HA interface start failed at {}: {e}",
                identity.endpoint
            );
            70
        }
        None => 0,
    };

    // Shutdown: stop taking work, tell Motr hax is going, stop the interface, flush KV.
    log::info!("hax: shutting down");
    let bound = Duration::from_millis(cli.shutdown_ms);
    view.write().unwrap_or_else(|e| e.into_inner()).stopping = true;
    rc.signal_stop();
    status.do_send(ProcessEvent {
        process: identity.process,
        event: ProcessEventKind::Stopped,
        process_type: ProcessType::M0d,
        pid: std::process::id() as u64,
        link: None,
    });
    let own = std::iter::once(identity.process).chain([identity.ha_service, identity.rm_service]);
    let final_notes = failed(own);
    let shutdown_started = std::time::Instant::now();
    let stopper = std::thread::spawn(move || mero.stop(final_notes, bound / 4));
    // Motr's stop waits out the RPC timeout for peers that are gone: do not wait past the bound.
    while !stopper.is_finished() && shutdown_started.elapsed() < bound / 2 {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    if stopper.is_finished() {
        let _ = responder_thread.join();
    } else {
        log::warn!(
            "hax: Motr HA interface still stopping after {:?}; exiting without waiting",
            bound / 2
        );
    }
    let (flushed, unpublished) = tokio::join!(
        writer.addr.send(Flush {
            deadline: bound / 2
        }),
        queue.flush(bound / 2)
    );
    match flushed {
        Ok(0) => log::info!("hax: all KV writes flushed"),
        Ok(n) => log::error!("hax: {n} KV write(s) could not be written before exit"),
        Err(_) => log::error!("hax: KV writer gone before flush"),
    }
    match unpublished {
        0 => log::info!("hax: all queue entries published"),
        n => log::error!("hax: {n} queue entries could not be published before exit"),
    }
    rc.stop(Duration::from_millis(300)).await;
    if cli.campaign {
        let _ = tokio::time::timeout(Duration::from_secs(1), resign(&consul, &leader_slot)).await;
    }
    server_handle.stop(false).await;
    log::info!("hax: stopped");
    code
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
