//! Integration tests: one binary, real `cco` processes on ephemeral loopback ports.

mod agents;
mod claude;
mod cli;
mod common;
mod context;
mod contract;
mod daemon;
mod diet;
mod e2e;
mod edge;
mod events;
mod fake_anthropic;
mod faults;
mod foreign;
mod fuzz_corpus;
mod guide;
mod hooks;
mod launcher;
mod leases;
mod mcp;
mod nats_cluster;
mod props;
mod remedies;
mod service;
mod sidecar;
mod users;
