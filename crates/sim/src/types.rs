//! Typed values carried by the stand-in wire protocol: Motr's enums (process/service events,
//! process types, object states), the entrypoint link decision, notes and `m0_ha_msg` bodies.
//!
//! Values follow `shared/design/halon-interface.md`; the numeric codes are Motr's and never
//! reordered. Service types stay plain `u64` (Motr has many, see the `service_type` consts).
use hax_fid::Fid;
use std::fmt;

/// Declares a `u64`/`u32`-coded enum with `code()`, `from_code()` and a Motr-style name.
macro_rules! coded_enum {
    ($(#[$m:meta])* $name:ident : $repr:ty { $($var:ident = $val:expr => $txt:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($var),+ }

        impl $name {
            /// The wire value.
            pub fn code(self) -> $repr {
                match self { $($name::$var => $val),+ }
            }
            /// The enum for a wire value, `None` for an unknown one.
            pub fn from_code(v: $repr) -> Option<$name> {
                match v { $($val => Some($name::$var),)+ _ => None }
            }
            /// Motr's name for the value (`STARTING`, `ONLINE`, ...).
            pub fn name(self) -> &'static str {
                match self { $($name::$var => $txt),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

coded_enum!(
    /// `m0_conf_ha_process_event`.
    ProcessEvent: u64 {
        Starting = 0 => "STARTING",
        Started = 1 => "STARTED",
        Stopping = 2 => "STOPPING",
        Stopped = 3 => "STOPPED",
        DtmRecovered = 4 => "DTM_RECOVERED",
    }
);

coded_enum!(
    /// `m0_conf_ha_process_type`.
    ProcessType: u64 {
        Other = 0 => "OTHER",
        Kernel = 1 => "KERNEL",
        M0mkfs = 2 => "M0MKFS",
        M0d = 3 => "M0D",
    }
);

coded_enum!(
    /// `m0_conf_ha_service_event`.
    ServiceEvent: u64 {
        Starting = 0 => "STARTING",
        Started = 1 => "STARTED",
        Stopping = 2 => "STOPPING",
        Stopped = 3 => "STOPPED",
        Failed = 4 => "FAILED",
    }
);

coded_enum!(
    /// `m0_ha_obj_state`.
    ObjState: u32 {
        Unknown = 0 => "UNKNOWN",
        Online = 1 => "ONLINE",
        Failed = 2 => "FAILED",
        Transient = 3 => "TRANSIENT",
        Repair = 4 => "REPAIR",
        Repaired = 5 => "REPAIRED",
        Rebalance = 6 => "REBALANCE",
        DtmRecovering = 7 => "DTM_RECOVERING",
    }
);

coded_enum!(
    /// The link decision HA made for an entrypoint request (`link` byte of EP_REP).
    LinkDecision: u8 {
        Connected = 0 => "connected",
        Reused = 1 => "reused",
        Absent = 2 => "absent",
        None = 3 => "none",
    }
);

coded_enum!(
    /// `hmnv_type` of an NVEC message.
    NvecType: u64 {
        Set = 0 => "SET",
        Get = 1 => "GET",
    }
);

/// Motr service types (`m0_conf_service_type`), for `EVENT_SERVICE.service_type`.
pub mod service_type {
    pub const MDS: u64 = 1;
    pub const IOS: u64 = 2;
    pub const CONFD: u64 = 3;
    pub const RMS: u64 = 4;
    pub const STATS: u64 = 5;
    pub const HA: u64 = 6;
}

/// Name of an object state code, or the number when unknown.
pub fn state_name(state: u32) -> String {
    ObjState::from_code(state).map_or_else(|| state.to_string(), |s| s.name().to_string())
}

/// `struct m0_ha_note`: an object and its state code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Note {
    pub fid: Fid,
    pub state: u32,
}

impl Note {
    pub fn new(fid: Fid, state: ObjState) -> Note {
        Note {
            fid,
            state: state.code(),
        }
    }
}

/// 128-bit failure-vector cookie (`u64 cookie_hi, u64 cookie_lo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Cookie {
    pub hi: u64,
    pub lo: u64,
}

/// STOB_IOQ payload (`m0_stob_ioq_error`); `hm_fid` is the sdev.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StobIoq {
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

impl StobIoq {
    /// Stob IO opcode WRITE (READ is 1).
    pub const WRITE: u32 = 2;

    /// A failed 4 KiB write on `sdev` with error `rc` (e.g. -5, EIO).
    pub fn write_error(sdev: Fid, rc: i32) -> StobIoq {
        StobIoq {
            sdev,
            stob_domain: Fid::new(0x6f00_0000_0000_0001, 1),
            stob: Fid::new(0x0200_0000_0000_0000, sdev.key),
            fd: 3,
            opcode: StobIoq::WRITE,
            rc,
            offset: 0,
            size: 4096,
            bshift: 12,
        }
    }
}

/// The type-specific part of an `m0_ha_msg` (`hm_data`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MsgBody {
    StobIoq(StobIoq),
    Nvec {
        nvec_type: NvecType,
        id_of_get: u64,
        ignore_same_state: u64,
        notes: Vec<Note>,
    },
    FailureVecReq {
        pool: Fid,
        cookie: Cookie,
    },
    FailureVecRep {
        pool: Fid,
        cookie: Cookie,
        notes: Vec<Note>,
    },
    EventProcess {
        event: ProcessEvent,
        process_type: ProcessType,
        pid: u64,
    },
    EventService {
        event: ServiceEvent,
        service_type: u64,
        pid: u64,
    },
    EventRpc {
        attempts: u64,
        state: u64,
    },
    BeIoErr {
        errcode: u32,
        location: u32,
        io_opcode: u32,
    },
    SnsErr {
        errcode: u32,
        opcode: u32,
    },
}

impl MsgBody {
    /// The `hed_type` code of this body.
    pub fn type_code(&self) -> u64 {
        match self {
            MsgBody::StobIoq(_) => 1,
            MsgBody::Nvec { .. } => 2,
            MsgBody::FailureVecReq { .. } => 3,
            MsgBody::FailureVecRep { .. } => 4,
            MsgBody::EventProcess { .. } => 7,
            MsgBody::EventService { .. } => 8,
            MsgBody::EventRpc { .. } => 9,
            MsgBody::BeIoErr { .. } => 10,
            MsgBody::SnsErr { .. } => 11,
        }
    }
}

/// An `m0_ha_msg` as it crosses the wire (without Motr's private `hm_tag`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaMsg {
    pub fid: Fid,
    pub source_process: Fid,
    pub source_service: Fid,
    /// Nanoseconds since the epoch (`hm_time`).
    pub time: u64,
    pub epoch: u64,
    pub body: MsgBody,
}

impl HaMsg {
    /// A message with the given header fids, `time` = now and epoch 0.
    pub fn new(fid: Fid, source_process: Fid, source_service: Fid, body: MsgBody) -> HaMsg {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        HaMsg {
            fid,
            source_process,
            source_service,
            time,
            epoch: 0,
            body,
        }
    }
}

/// An entrypoint reply (EP_REP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpReply {
    pub seq: u64,
    pub rc: i32,
    pub link: LinkDecision,
    /// The HA's cookie (Motr's `hae_cookie_actual`): never 0, one per HA instance. The process
    /// sends it back as `cookie_expected` in its next request.
    pub cookie_actual: u64,
    /// Confd services: (fid, endpoint).
    pub confds: Vec<(Fid, String)>,
    pub quorum: u32,
    pub rm_fid: Fid,
    pub rm_ep: String,
}

/// An entrypoint request (EP_REQ).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpRequest {
    pub seq: u64,
    pub first_request: bool,
    /// The `cookie_actual` of the last reply the process got (from any HA), 0 for none.
    pub cookie_expected: u64,
    pub pid: u64,
    pub process: Fid,
    pub endpoint: String,
    pub git_rev: String,
}

/// A frame sent by the process to HA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToHa {
    /// 0x01
    EpReq(EpRequest),
    /// 0x02; `tag` even.
    Msg { tag: u64, msg: HaMsg },
    /// 0x03; confirms the HA message with that (odd) tag.
    Ack { tag: u64 },
}

/// A frame sent by HA to the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromHa {
    /// 0x81
    EpRep(EpReply),
    /// 0x82; `tag` odd.
    Msg { tag: u64, msg: HaMsg },
    /// 0x83; HA confirmed the process message with that (even) tag.
    Ack { tag: u64 },
    /// 0x84; HA disconnected this process's link.
    Drop,
}
