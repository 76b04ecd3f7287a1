//! cco — Claude Code Orchestra: one binary, four roles (launcher, daemon, sidecar, operator).
//!
//! Map of the crate:
//! - [`cli`]: one file per subcommand; `cli::run` is the single dispatch table.
//! - [`config`]: the one config tree and its loader (defaults < file < `CCO_*` env < flags).
//! - [`paths`]: every on-disk location cco uses (re-exports [`securefs`] for old callers).
//! - [`securefs`]: owner/mode/no-symlink checks, trusted opens, capped reads, atomic writes.
//! - [`secret`]: the per-installation 32-byte secret that signs seals and tokens.
//! - [`untrusted`]: bounded reads of files others can shape (regular files only, size-capped).
//! - [`secrets`]: what is never served to an agent or auto-allowed: credential files by name and content.
//! - [`seal`]: the sealed runtime files the daemon writes and the launcher verifies.
//! - [`auth`]: session and agent JWTs (HS256 under the secret), scopes and bindings.
//! - [`listen`]: socket-activated or self-bound listeners, readiness notification.
//! - [`client`]: a tiny blocking HTTP/1.1 client for the hot paths (launcher, hooks), and the
//!   typed `SidecarClient`/`DaemonClient` built on it from the `api` types.
//! - [`api`]: wire types shared by the CLI, the daemon and the sidecar; `api::inert` makes
//!   untrusted text safe to print.
//! - [`daemon`]: the `:3000` service — health, status, sealed files, `/api/*` forwarding.
//! - [`dashboard`]: the live dashboard the daemon serves at `/` (one-time-code login, cookie session).
//! - [`mcp`]: the daemon's MCP server at `/mcp` — the `mcp__cco__*` tools agents coordinate with.
//! - [`sidecar`]: the `:3001` service — context, results, events, agents, leases, inboxes.
//! - [`server`]: what both services share: serve/shutdown/idle exit, the edge's limits, the Host/Origin guard.
//! - [`startup`]: what both services do before they serve (installation, listener, secret, roster).
//! - [`pidlock`]: one process per directory (an RAII `flock` holding the owner's pid).
//! - [`trust`]: whether a program cco runs or registers could be changed by someone else.
//! - [`service`]: systemd/launchd unit rendering (pure) and operations.
//! - [`hook`]: Claude Code's command hooks (`cco hook <event>`): input, sidecar calls within one deadline, answers.
//! - [`policy`]: the `PreToolUse` permission policy of `cco hook`, and its shell classifier.
//! - [`roster`]: the built-in agent roster and orchestrator rules.
//! - [`marker`]: the mark in every directory cco creates, so a purge deletes only those.
//! - [`logging`]: tracing set-up (journald when the journal owns stderr).

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod hook;
pub mod listen;
pub mod logging;
pub mod marker;
pub mod mcp;
pub mod paths;
pub mod pidlock;
pub mod policy;
pub mod roster;
pub mod seal;
pub mod secret;
pub mod secrets;
pub mod securefs;
pub mod server;
pub mod service;
pub mod sidecar;
pub mod startup;
pub mod trust;
pub mod untrusted;
