//! The actors of hax; `actors.md` at the top of the repository maps their messages.
pub mod consul_writer;
pub mod entrypoint;
pub mod fid_resolver;
pub mod ha_broadcaster;
pub mod health_monitor;
pub mod inbox;
pub mod links;
pub mod merolink;
pub mod process_status;
pub mod rc_leader;
pub mod watch_ingest;
