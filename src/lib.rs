//! hax: the HA eXchange of Hare, the per-node bridge between Motr processes and Consul.
//!
//! One hax runs on every node. Motr processes talk to it over Motr's HA link (entrypoints,
//! their lifecycle, questions about object states); Consul tells it about health. hax turns
//! each side's news into the other's language: `processes/<fid>` records in Consul KV, HA state
//! notes broadcast to Motr. This crate is the daemon: this library and `src/bin/hax.rs`.
//!
//! # Layout
//!
//! The workspace around this crate (README.md, "Layout"): `hax-fid` (`crates/fid`, Motr's
//! identifiers, re-exported here as `fid`), `hax-motr-sys` (`ffi/`: the C shim, the stand-in for
//! Motr's HA interface, the raw bindings), `hax-sim` (`crates/sim`, simulated Motr processes),
//! `hax-testkit` (`crates/testkit`, what the tests and benchmarks start their worlds with) and
//! `hax-bench` (`crates/bench`, the benchmark driver). Only `hax-fid` and `hax-motr-sys` are
//! dependencies of the daemon.
//!
//! The modules, lowest layer first: each imports only from modules listed before it
//! (`scripts/module-layers` lists the edges and fails on a cycle).
//!
//! * `fid`: Motr object identifiers (the `hax-fid` crate).
//! * `motr`: Motr's vocabulary: object states, process and service events, HA notes, and the
//!   owned form of what the HA interface's callbacks carry (`MotrEvent`, entrypoints, links).
//! * `ffi`: the only `unsafe` code: the safe layer over `hax-motr-sys` and the trampolines that
//!   turn Motr's callbacks into owned messages, catching panics.
//! * `view`: the cluster as hax knows it: its identity, the confds, the RC leader's node and the
//!   configuration tree; entrypoint replies are computed from it.
//! * `model`: the HA model: one state function over the configuration tree, health and process
//!   events; what is broadcast and what an NVEC GET is answered.
//! * `messages`: the messages that cross actors (`actors.md` maps them).
//! * `metrics`: the Prometheus registry and every metric's name (`GET /metrics`).
//! * `consul`: Consul over HTTP: the shared client, blocking queries, KV, transactions (`txn`),
//!   watch payloads (`health`), catalog entries (`catalog`), retry backoff (`backoff`).
//! * `notify`: readiness: systemd's `READY=1` / `STOPPING=1` and what `GET /readyz` answers.
//! * `supervise`: a panic or an ended task is fatal: the bounded shutdown and exit code 70.
//! * `waiting`: what hax says while it waits for something (Consul, a leader, a registration).
//! * `rc`: the recovery coordinator: the leader campaign (`campaign`), the `eq/` rules run by
//!   the leader (`leader`, `rules`), the `bq/` consumer every hax runs, queues, timeouts, node
//!   liveness and health news.
//! * `actors`: the actors, each with a mailbox and one concern: MeroLink (the thread that owns
//!   Motr's HA interface), the entrypoint responder, FidResolver, ProcessStatus, ConsulWriter,
//!   HaBroadcaster, HealthMonitor, WatchIngest (the HTTP endpoint).
//! * `check`: `hax check <fid>` (a Consul script check) and `hax leader`.
//! * `config`: the command-line flags, each with an environment fallback.
//! * `cluster`: cluster descriptions and `hax bootstrap`: plan, apply, a local agent, systemd
//!   units, `get-entrypoint`.
//! * `status`: the operator's view: `hax status` and the daemon's `GET /status` it reads.
//! * `signals`: the stop signals (SIGTERM, SIGINT, SIGHUP), taken with `sigwait` on a thread of
//!   their own.
//! * `daemon`: wires the actors together, runs until a stop signal, shuts down within a bound.
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
