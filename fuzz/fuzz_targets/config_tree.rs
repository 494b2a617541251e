//! Fuzz target `config_tree`: see `checks::config_tree` for the input format and the properties checked.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config_tree(data));
