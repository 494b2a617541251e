//! Motr's vocabulary in Rust: object states, process/service events and types, HA notes and
//! the owned form of everything the HA interface hands to hax (`MotrEvent`).
//!
//! Numeric values are Motr's (ha/note.h, conf/ha.h, ha/msg.h); names print as Motr's enum
//! names (`M0_CONF_HA_PROCESS_STARTED`) because that is what hax writes into Consul KV.
use crate::fid::Fid;
use serde::{Deserialize, Serialize};
use std::fmt;

/// `enum m0_ha_obj_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u32)]
pub enum HaState {
    Unknown = 0,
    Online = 1,
    Failed = 2,
    Transient = 3,
    Repair = 4,
    Repaired = 5,
    Rebalance = 6,
    DtmRecovering = 7,
}

impl HaState {
    pub fn from_u32(v: u32) -> Option<HaState> {
        use HaState::*;
        [
            Unknown,
            Online,
            Failed,
            Transient,
            Repair,
            Repaired,
            Rebalance,
            DtmRecovering,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }
    pub fn name(&self) -> &'static str {
        match self {
            HaState::Unknown => "UNKNOWN",
            HaState::Online => "ONLINE",
            HaState::Failed => "FAILED",
            HaState::Transient => "TRANSIENT",
            HaState::Repair => "REPAIR",
            HaState::Repaired => "REPAIRED",
            HaState::Rebalance => "REBALANCE",
            HaState::DtmRecovering => "DTM_RECOVERING",
        }
    }
}

impl fmt::Display for HaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `enum m0_conf_ha_process_event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessEventKind {
    Starting,
    Started,
    Stopping,
    Stopped,
    DtmRecovered,
}

impl ProcessEventKind {
    pub fn from_u64(v: u64) -> Option<Self> {
        use ProcessEventKind::*;
        Some(match v {
            0 => Starting,
            1 => Started,
            2 => Stopping,
            3 => Stopped,
            4 => DtmRecovered,
            _ => return None,
        })
    }
    pub fn motr_name(&self) -> &'static str {
        match self {
            ProcessEventKind::Starting => "M0_CONF_HA_PROCESS_STARTING",
            ProcessEventKind::Started => "M0_CONF_HA_PROCESS_STARTED",
            ProcessEventKind::Stopping => "M0_CONF_HA_PROCESS_STOPPING",
            ProcessEventKind::Stopped => "M0_CONF_HA_PROCESS_STOPPED",
            ProcessEventKind::DtmRecovered => "M0_CONF_HA_PROCESS_DTM_RECOVERED",
        }
    }
    pub fn from_motr_name(s: &str) -> Option<Self> {
        use ProcessEventKind::*;
        [Starting, Started, Stopping, Stopped, DtmRecovered]
            .into_iter()
            .find(|k| k.motr_name() == s)
    }
    /// STARTED or DTM_RECOVERED: the process is up.
    pub fn is_started(&self) -> bool {
        matches!(
            self,
            ProcessEventKind::Started | ProcessEventKind::DtmRecovered
        )
    }
}

/// `enum m0_conf_ha_process_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessType {
    Other,
    Kernel,
    M0mkfs,
    M0d,
}

impl ProcessType {
    pub fn from_u64(v: u64) -> Self {
        match v {
            1 => ProcessType::Kernel,
            2 => ProcessType::M0mkfs,
            3 => ProcessType::M0d,
            _ => ProcessType::Other,
        }
    }
    pub fn motr_name(&self) -> &'static str {
        match self {
            ProcessType::Other => "M0_CONF_HA_PROCESS_OTHER",
            ProcessType::Kernel => "M0_CONF_HA_PROCESS_KERNEL",
            ProcessType::M0mkfs => "M0_CONF_HA_PROCESS_M0MKFS",
            ProcessType::M0d => "M0_CONF_HA_PROCESS_M0D",
        }
    }
}

/// One HA note: an object and its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Note {
    pub fid: Fid,
    pub state: HaState,
}

/// An entrypoint request id (`struct m0_uint128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReqId {
    pub hi: u64,
    pub lo: u64,
}

impl fmt::Display for ReqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{:x}", self.hi, self.lo)
    }
}

/// A Motr HA link handle: valid from link connected/reused until link disconnected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

/// Where a link is in its life, as MeroLink sees it (MeroLink's link table, metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Broadcasts go to it.
    Active,
    /// Its process reported STOPPED: nothing more is sent on it.
    Inactive,
    /// Motr started disconnecting it: nothing may be sent on it, ever.
    Disconnecting,
}

/// Motr's handle on a received message, kept to confirm it later (`ffi::delivered`). Motr
/// keeps the message until it is confirmed, so the handle stays valid until then, or until
/// its link starts disconnecting; hax never uses it after either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsgRef(pub u64);

/// A process asks where its confds and principal RM are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrypointReq {
    pub req_id: ReqId,
    pub remote_ep: String,
    pub process: Fid,
    pub git_rev: String,
    pub pid: u64,
    pub first_request: bool,
    /// When Motr's callback handed the request to hax.
    pub received: std::time::Instant,
}

/// The answer to an entrypoint request.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EntrypointReply {
    /// 0 to consume; anything else makes the process ask again at once.
    pub rc: i32,
    pub confds: Vec<(Fid, String)>,
    pub quorum: u32,
    pub rm_fid: Fid,
    pub rm_ep: String,
}

/// A received HA message, owned and typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HaMsg {
    ProcessEvent {
        process: Fid,
        event: u64,
        process_type: u64,
        pid: u64,
    },
    ServiceEvent {
        service: Fid,
        process: Fid,
        event: u64,
        service_type: u64,
        pid: u64,
    },
    NvecGet {
        id_of_get: u64,
        fids: Vec<Fid>,
    },
    NvecSet {
        notes: Vec<(Fid, u32)>,
    },
    FailureVecReq {
        pool: Fid,
        cookie: (u64, u64),
    },
    StobIoq(StobIoError),
    RpcEvent {
        service: Fid,
        attempts: u64,
        state: u64,
    },
    BeIoErr,
    SnsErr,
    Keepalive,
    Other {
        raw_type: u64,
    },
}

/// A drive I/O error reported by a Motr process (STOB_IOQ).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StobIoError {
    pub sdev: Fid,
    pub stob_domain: Fid,
    pub stob: Fid,
    pub fd: i64,
    pub opcode: u32,
    pub rc: i32,
    pub offset: u64,
    pub size: u64,
    pub bshift: u32,
}

/// Everything the HA interface tells hax, as owned data (no C pointer survives a callback).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MotrEvent {
    /// A message on an incoming link, not confirmed yet: whoever handles it confirms it
    /// with `msg_ref` (once, and only while the link is not disconnecting).
    Received {
        link: LinkId,
        tag: u64,
        msg: HaMsg,
        msg_ref: MsgRef,
    },
    Delivered {
        link: LinkId,
        tag: u64,
    },
    NotDelivered {
        link: LinkId,
        tag: u64,
    },
    LinkConnected {
        req_id: ReqId,
        link: LinkId,
        peer_ep: String,
    },
    LinkReused {
        req_id: ReqId,
        link: LinkId,
    },
    LinkAbsent {
        req_id: ReqId,
    },
    LinkDisconnecting {
        link: LinkId,
    },
    LinkDisconnected {
        link: LinkId,
    },
}

/// Error code Motr processes understand as "ask again later".
pub const EAGAIN: i32 = 11;
/// Most notes one HA message may carry.
pub const NOTES_MAX: usize = 1024;
