//! Fuzz target `post_body`: see [`harness::post_body`] for what it checks.
#![no_main]

#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::post_body(data));
