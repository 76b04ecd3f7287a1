//! Integration tests: one binary, real `cco` processes on ephemeral loopback ports.

mod agents;
mod claude;
mod common;
mod daemon;
mod e2e;
mod events;
mod fake_anthropic;
mod foreign;
mod fuzz_corpus;
mod guide;
mod hooks;
mod launcher;
mod props;
mod remedies;
mod service;
mod sidecar;
mod users;
