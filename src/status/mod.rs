//! The operator's view: `hax status` (`command`) and the `GET /status` endpoint of the daemon
//! it reads (`endpoint`).
pub mod command;
pub mod endpoint;
