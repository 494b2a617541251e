//! Shared helpers for the integration tests: `mod support;` at the top of a test file, then
//! `use support::*;`. Consul agents and clusters, hax daemons and simulated processes come from
//! the test kit (`hax-testkit`, re-exported here); `merolink` is the in-process MeroLink
//! harness, which uses hax's internals and so lives with hax's tests.
#![allow(dead_code)]

pub mod merolink;

pub use hax_testkit::*;
