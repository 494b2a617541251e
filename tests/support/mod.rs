//! Shared helpers for the integration tests: `mod support;` at the top of a test file, then
//! `use support::*;`. Everything touching Consul talks to a real agent (see `consul`).
#![allow(dead_code)]

pub mod consul;
pub mod merolink;
pub mod single_node;

pub use consul::*;
