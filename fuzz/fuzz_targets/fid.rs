//! Fuzz target `fid`: see `checks::fid` for the input format and the properties checked.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::fid(data));
