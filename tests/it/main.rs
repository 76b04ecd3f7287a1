//! Integration tests: one binary, real `cco` processes on ephemeral loopback ports.

mod agents;
mod claude;
mod cli;
mod common;
mod contract;
mod daemon;
mod e2e;
mod edge;
mod events;
mod fake_anthropic;
mod faults;
mod foreign;
mod hooks;
mod launcher;
mod mcp;
mod remedies;
mod service;
mod sidecar;
