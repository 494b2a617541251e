//! hax-testkit: the one kit the integration tests (`tests/` of the hax package) and the
//! benchmark driver (`hax-bench`) start their worlds with: real Consul agents and clusters,
//! the real `hax` binary, simulated Motr processes, and the helpers around them. Library code:
//! everything a test or a benchmark starts is killed when it is dropped, and dies with the
//! process that started it.
//!
//! Layout:
//! - [`process`]: children tied to this process, free ports, scratch directories, log tails,
//!   signals, [`wait_until`];
//! - [`consul`]: the consul binary, dev agents ([`ConsulAgent`], [`DevAgent`]), the agent shared
//!   by a test binary, multi-server clusters with client agents, kill and restart;
//! - [`client`]: [`ConsulClient`], blocking helpers over Consul's HTTP API;
//! - [`sink`]: [`WatchSink`], an HTTP server recording what watches POST;
//! - [`daemon`]: the `hax` daemon as a child ([`HaxCommand`], [`HaxProc`]) and its readiness;
//! - [`cluster`]: the configurations the tests and benchmarks register ([`NodeDef`],
//!   [`register_cluster`]) and the agent watches that POST to hax;
//! - [`single_node`]: [`SingleNode`], agent + cluster + hax + simulated processes;
//! - [`payload`]: synthetic service-health watch payloads shaped like the captured ones;
//!
//! It runs `hax` by path ([`hax_bin`]) and does not link the daemon's library.
pub mod client;
pub mod cluster;
pub mod consul;
pub mod daemon;
pub mod payload;
pub mod process;
pub mod single_node;
pub mod sink;

pub use client::*;
pub use cluster::*;
pub use consul::*;
pub use daemon::*;
pub use process::*;
pub use single_node::*;
pub use sink::*;

use std::path::{Path, PathBuf};

/// The repository's top folder (for `scripts/` and `ffi/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
