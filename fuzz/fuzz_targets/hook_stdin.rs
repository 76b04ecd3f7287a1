//! Fuzz target `hook_stdin`: see [`harness::hook_stdin`] for what it checks.
#![no_main]

#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::hook_stdin(data));
