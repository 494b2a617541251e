//! Fuzz target `sim_wire`: see `checks::sim_wire` for the input format and the properties checked.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::sim_wire(data));
