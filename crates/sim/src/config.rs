//! What a simulated process is (`SimConfig`, `Timeouts`) and what it reports
//! (`SimEvent` as things happen, `ReceivedNote` in its history).
use super::types::{LinkDecision, ProcessType};
use crossbeam_channel::Sender;
use hax_fid::Fid;
use std::time::{Duration, Instant};

/// Time limits of a simulated process.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// One answer: EP_REP, FAILURE_VEC_REP, the NVEC SET answering a GET.
    pub reply: Duration,
    /// HA's ACK of the process's own messages (`wait_for_ack`, and `close`/`stop_clean`,
    /// which wait for the last message's confirmation like Motr's `m0_ha_link_flush`).
    pub ack: Duration,
    /// Retrying entrypoint requests answered with rc != 0 (`boot`).
    pub entrypoint: Duration,
    /// A blocked socket write (HA not reading).
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            reply: Duration::from_secs(30),
            ack: Duration::from_secs(15),
            entrypoint: Duration::from_secs(60),
            write: Duration::from_secs(15),
        }
    }
}

/// What a simulated process is.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub process_fid: Fid,
    /// The process's own endpoint (only a label in EP_REQ).
    pub endpoint: String,
    pub pid: u64,
    pub process_type: ProcessType,
    /// Its services: (service fid, Motr service type).
    pub services: Vec<(Fid, u64)>,
    /// Pools, one FAILURE_VEC_REQ each during boot.
    pub pools: Vec<Fid>,
    /// Configuration objects asked for in the boot NVEC GET (none: no GET).
    pub get_fids: Vec<Fid>,
    pub git_rev: String,
    pub timeouts: Timeouts,
    /// Where to report notes, DROP, connection loss, reconnection and death as they happen.
    pub events: Option<Sender<SimEvent>>,
    /// Boot sends a second, non-first entrypoint request after STARTING (link reuse). A
    /// configured m0d sends none (the default); one without a configuration once did.
    pub second_entrypoint: bool,
    /// When its HA is gone, a process notices at its next send and keeps re-sending for this
    /// long (Motr: 10 attempts 1 s apart) before it asks for an entrypoint again.
    pub ha_resend: Duration,
    /// After the reply to that request, the old RPC link takes this long to time out (about
    /// 6 s) before the unconfirmed messages are sent again and the queue flows.
    pub rpc_timeout: Duration,
}

impl SimConfig {
    /// An m0d with the given fid, endpoint `inet:tcp:127.0.0.1@<23000+key>`, the OS pid, no
    /// services, pools or GET fids, and default timeouts.
    pub fn new(process_fid: Fid) -> SimConfig {
        SimConfig {
            process_fid,
            endpoint: format!("inet:tcp:127.0.0.1@{}", 23000 + process_fid.key % 40000),
            pid: std::process::id() as u64,
            process_type: ProcessType::M0d,
            services: Vec::new(),
            pools: Vec::new(),
            get_fids: Vec::new(),
            git_rev: "27e7f86ed57aad344d02c426e939add31626034d".to_string(),
            timeouts: Timeouts::default(),
            events: None,
            second_entrypoint: false,
            ha_resend: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(6),
        }
    }
}

/// Something that happened to a process, pushed to `SimConfig::events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEvent {
    pub process: Fid,
    pub kind: SimEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimEventKind {
    /// A note of an NVEC SET (`id_of_get` 0 for a broadcast, else the GET it answers).
    Note {
        fid: Fid,
        state: u32,
        id_of_get: u64,
    },
    /// HA sent DROP: the process must exit.
    Dropped,
    /// The connection ended without the process closing it. The process notices only at its
    /// next send (then it reconnects: `HaLost`, `Reconnected`, `Resent`).
    Closed { reason: String },
    /// A send found the HA gone: the process re-sends for `ha_resend`, then reconnects.
    HaLost { reason: String },
    /// The process asked for an entrypoint again (not first) on a new connection and HA made
    /// this decision (`Connected`: a new HA, or a new link; `Reused`: the same HA and link).
    Reconnected { link: LinkDecision },
    /// After `rpc_timeout`, the unconfirmed messages (from the first one HA did not confirm,
    /// in order) were sent again on the new connection.
    Resent { count: usize, first_tag: u64 },
    /// The process died on a Motr assertion (it closed its connection at once).
    Died { reason: String },
    /// A clean stop waited `timeouts.ack` for the confirmation of its last message (STOPPED),
    /// like `m0_ha_link_flush`, and it never came: a real m0d hangs there.
    FlushHung { tag: u64 },
}

/// A note received in an NVEC SET, with when it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedNote {
    pub at: Instant,
    /// Tag of the HA message that carried it.
    pub tag: u64,
    /// 0 for a broadcast, else the id of the GET this SET answers.
    pub id_of_get: u64,
    pub fid: Fid,
    pub state: u32,
}
