//! Fuzz target `rc_envelope`: see `checks::rc_envelope` for the input format and the properties checked.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::rc_envelope(data));
