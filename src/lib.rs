//! hax: the HA eXchange of Hare, the per-node bridge between Motr processes and Consul.
//!
//! Layout: `fid` (Motr identifiers), `ffi` (the only unsafe code: the C shim over Motr's HA
//! interface), `sim` (a simulated Motr process speaking the stand-in's wire protocol).
#![deny(unsafe_code)]

pub mod actors;
pub mod check;
pub mod cluster;
pub mod config;
pub mod consul;
pub mod daemon;
pub mod ffi;
pub use hax_fid as fid;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod motr;
pub mod notify;
pub mod rc;
pub mod signals;
pub mod status;
pub mod supervise;
pub mod view;
pub mod waiting;
