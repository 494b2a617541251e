//! Fuzz target `health_payload`: see `checks::health_payload` for the input format and the properties checked.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::health_payload(data));
