//! Simulated Motr processes (m0d, m0mkfs) that talk to hax over the stand-in's TCP wire
//! protocol (`ffi/standin/PROTOCOL.md`), exactly as a real m0d talks to its HA.
//!
//! - [`wire`] / [`types`]: the frame codec and the typed messages it carries;
//! - [`SimProcess`] ([`process`]): one process, with blocking, timed requests (entrypoint,
//!   events, failure vector, NVEC GET) and fault switches; its [`config`]; its connection and
//!   reader thread (`conn`). Like a real m0d it remembers the HA cookie, keeps every message
//!   until HA confirms it (the ACK mark), notices a dead HA only at its next send and then
//!   reconnects and sends the unconfirmed messages again (`SimConfig::ha_resend`,
//!   `rpc_timeout`), dies where Motr asserts (`SimError::Died`: link_absent, an error reply
//!   to a non-first entrypoint request, a FAILURE_VEC_REP for no pending request), and waits
//!   for STOPPED's confirmation on a clean stop;
//! - [`script`]: the m0d boot sequence ([`SimProcess::boot`]; no second entrypoint request
//!   unless `SimConfig::second_entrypoint`), clean stop, kill, restart;
//! - [`fleet`]: many processes in one OS process, with timings, for load tests;
//! - [`gen`]: plausible fids for generated configurations (CLI `--count`, `--get-count`).
use std::net::{Ipv4Addr, SocketAddr};

pub mod config;
mod conn;
pub mod fleet;
pub mod gen;
pub mod process;
pub mod script;
pub mod types;
pub mod wire;

pub use config::{ReceivedNote, SimConfig, SimEvent, SimEventKind, Timeouts};
pub use conn::THREAD_STACK;
pub use fleet::{boot_many, summarize, FleetOutcome, Percentiles, TimingSummary};
pub use process::SimProcess;
pub use script::BootReport;
pub use types::*;
pub use wire::WireError;

/// Why a simulated process could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("bad HA endpoint {0:?}: expected inet:tcp:127.0.0.1@PORT")]
    BadEndpoint(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode frame: {0}")]
    Wire(#[from] WireError),
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },
    #[error("entrypoint still failing (rc {rc}) after {attempts} attempts")]
    EntrypointFailed { rc: i32, attempts: u32 },
    #[error("HA answered link_absent: the process must exit")]
    LinkAbsent,
    #[error("HA dropped the link")]
    Dropped,
    #[error("the process died: {0}")]
    Died(String),
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// Parses an HA endpoint `inet:tcp:127.0.0.1@PORT`; anything not on 127.0.0.1 is refused.
pub fn parse_ha_endpoint(ep: &str) -> Result<SocketAddr, SimError> {
    let bad = || SimError::BadEndpoint(ep.chars().take(120).collect());
    let rest = ep.trim().strip_prefix("inet:tcp:").ok_or_else(bad)?;
    let (host, port) = rest.split_once('@').ok_or_else(bad)?;
    if host != "127.0.0.1" || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha_endpoint_on_loopback_parses() {
        let a = parse_ha_endpoint("inet:tcp:127.0.0.1@22001").unwrap();
        assert_eq!(a, SocketAddr::from((Ipv4Addr::LOCALHOST, 22001)));
    }

    #[test]
    fn ha_endpoint_elsewhere_or_malformed_is_refused() {
        for bad in [
            "",
            "inet:tcp:10.0.0.1@22001",
            "inet:tcp:localhost@22001",
            "tcp:127.0.0.1@22001",
            "inet:tcp:127.0.0.1:22001",
            "inet:tcp:127.0.0.1@",
            "inet:tcp:127.0.0.1@0",
            "inet:tcp:127.0.0.1@70000",
            "inet:tcp:127.0.0.1@+5",
            "inet:o2ib:127.0.0.1@22001",
        ] {
            assert!(parse_ha_endpoint(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
