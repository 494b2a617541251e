//! The recovery coordinator (RC) layer: the event queue `eq/`, the broadcast queue `bq/`,
//! timeouts, and the rules that turn events into broadcasts.
//!
//! Keys in Consul KV:
//! - `eq/<n>`, `bq/<n>`: entries `{"message_type", "payload", "timestamp"}` (JSON), `n` a
//!   decimal number without padding; `epochs/eq`, `epochs/bq`: the last number given out.
//!   [`publish`] writes entries (epoch CAS + entries in one transaction).
//! - `timeout/<YYYYmmddHHMM.SS>` (UTC): moved into `eq/` by the RC leader when due.
//! - `bq-offsets/<node>`: the last `bq/` entry the hax of Consul node `<node>` handled.
//!
//! Who does what (see actors.md): every hax publishes its process events and drive errors
//! to `eq/` (ConsulWriter, with their `processes/` records) and consumes `bq/`
//! (`consumer.rs`); the hax holding the
//! `leader` key, won by the campaign (`campaign.rs`), runs the rules over `eq/` and cleans
//! `bq/` up (`leader.rs`).
//! `hax q eq|bq <type> <json>` publishes by hand ([`cmd_q`]).
pub mod campaign;
pub mod consumer;
pub mod envelope;
pub mod health_news;
pub mod leader;
pub mod liveness;
pub mod publish;
pub mod queue;
pub mod rules;
pub mod timeouts;

pub use envelope::Envelope;
pub use publish::publish;
pub use queue::Queue;

use crate::consul::{Consul, ConsulConfig};
use crate::fid::Fid;
use crate::motr::{Note, ProcessEventKind, ProcessType};
use crate::view::SharedView;
use actix::Recipient;
use campaign::SessionSlot;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// States learnt from a `bq/` entry, for ProcessStatus to apply and broadcast to this hax's
/// Motr links (bq consumer → ProcessStatus; answered once applied).
#[derive(Clone, Debug, PartialEq, Eq, actix::Message)]
#[rtype(result = "()")]
pub struct RemoteStates {
    /// The entry they came from (`bq/<n>`), for the log.
    pub source: String,
    /// Process events reported to another hax: the HA model maps them to states.
    pub processes: Vec<(Fid, ProcessEventKind, ProcessType)>,
    /// States decided by the RC for other objects (an sdev FAILED).
    pub notes: Vec<Note>,
    /// Health reported through `bq/` (a process's by its node's hax, a node's by the leader).
    pub health: Vec<crate::model::health::HealthDelta>,
}

/// How the RC loop runs.
#[derive(Clone, Debug)]
pub struct RcConfig {
    /// This hax's Consul node name.
    pub node: String,
    /// Longest wait between two looks at the leader key, `eq/` and `timeout/` (Consul's
    /// blocking queries count whole seconds: at least 1 s).
    pub poll: Duration,
    /// Most `eq/` entries handled by one transaction (at most 20 fit in 64 ops).
    pub batch: usize,
    /// How often the leader looks for `bq/` entries every node has handled.
    pub gc_every: Duration,
    /// The leader watches node liveness for everyone (`--health-from node`).
    pub node_liveness: bool,
}

/// Awaits `fut` unless `stop` turns true (or its sender is gone) first.
pub(crate) async fn or_stop<T>(
    stop: &mut watch::Receiver<bool>,
    fut: impl Future<Output = T>,
) -> Option<T> {
    if *stop.borrow() {
        return None;
    }
    tokio::select! {
        r = fut => Some(r),
        _ = stop.wait_for(|s| *s) => None,
    }
}

/// The running RC tasks of this hax.
pub struct RcHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the RC tasks need.
pub struct RcSetup {
    pub consul: Consul,
    pub view: SharedView,
    /// The campaign's session (None: this hax does not campaign, so never leads).
    pub session: Option<SessionSlot>,
    pub status: Recipient<RemoteStates>,
    pub cfg: RcConfig,
}

/// Starts the `bq/` consumer and (when this hax campaigns) the RC loop on the current
/// arbiter.
pub fn spawn(setup: RcSetup) -> RcHandle {
    let (stop, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let consumer = consumer::Consumer {
        consul: setup.consul.clone(),
        node: setup.cfg.node.clone(),
        status: setup.status,
        stop: rx.clone(),
    };
    tasks.push(crate::supervise::spawn_task("bq consumer", consumer.run()));
    if let (Some(slot), true) = (&setup.session, setup.cfg.node_liveness) {
        let l = liveness::Liveness {
            consul: setup.consul.clone(),
            slot: slot.clone(),
            view: setup.view.clone(),
            node: setup.cfg.node.clone(),
            stop: rx.clone(),
        };
        tasks.push(crate::supervise::spawn_task("node liveness", l.run()));
    }
    if let Some(slot) = setup.session {
        let rc = leader::Rc {
            consul: setup.consul,
            slot,
            view: setup.view,
            cfg: setup.cfg,
            stop: rx,
        };
        tasks.push(crate::supervise::spawn_task("RC loop", rc.run()));
    }
    RcHandle { stop, tasks }
}

impl RcHandle {
    /// Tells the tasks to stop (they finish the step they are in).
    pub fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops the tasks, waiting for them up to `within`; the ones still running are aborted.
    pub async fn stop(self, within: Duration) {
        self.signal_stop();
        let deadline = tokio::time::Instant::now() + within;
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                log::warn!("RC: a task did not stop within {within:?}; aborted");
                abort.abort();
            }
        }
    }
}

/// `hax q eq|bq <type> <json>`: publishes one entry and prints its key. Exit code: 0, 1
/// when Consul refused or could not be reached, 64 for a payload that is not JSON.
pub fn cmd_q(cfg: &ConsulConfig, queue: Queue, message_type: &str, payload: &str) -> i32 {
    let payload: serde_json::Value = match serde_json::from_str(payload) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("hax q: the payload is not JSON: {e}");
            return 64;
        }
    };
    let entry = Envelope::new(message_type, payload);
    let cfg = cfg.clone();
    let out = actix::System::new().block_on(async move {
        let consul = Consul::new(&cfg);
        publish(&consul, queue, &[entry]).await
    });
    match out {
        Ok(keys) => {
            for k in keys {
                println!("{k}");
            }
            0
        }
        Err(e) => {
            eprintln!("hax q: {e}");
            1
        }
    }
}
