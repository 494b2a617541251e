//! The actors of hax, each with a mailbox and one concern; `actors.md` at the top of the
//! repository maps their messages.
//!
//! - [`merolink`]: MeroLink, the thread that owns Motr's HA interface (links, sends,
//!   confirmations; its bookkeeping in `merolink::links` and `merolink::inbox`);
//! - [`entrypoint`]: the entrypoint responder's thread (answers from the cluster view);
//! - [`fid_resolver`]: FidResolver (actix), who hax is and the cluster view, kept fresh;
//! - [`process_status`]: ProcessStatus (actix), Motr's events turned into records;
//! - [`consul_writer`]: ConsulWriter (actix), ordered, batched, retried KV transactions;
//! - [`ha_broadcaster`]: HaBroadcaster (actix), the HA model and its broadcasts;
//! - [`health_monitor`]: HealthMonitor (actix), the Consul reads that keep health true;
//! - [`watch_ingest`]: WatchIngest, the HTTP handlers Consul's watches POST to (and
//!   `/healthz`, `/readyz`, `/metrics`).
pub mod consul_writer;
pub mod entrypoint;
pub mod fid_resolver;
pub mod ha_broadcaster;
pub mod health_monitor;
pub mod merolink;
pub mod process_status;
pub mod watch_ingest;
