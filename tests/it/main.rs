//! Integration tests: one binary, real `cco` processes on ephemeral loopback ports.

mod common;
mod daemon;
mod launcher;
mod sidecar;
