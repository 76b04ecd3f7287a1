//! The daemon (`:3000`): seals the runtime files at start-up, answers `/health` and
//! `/status`, and forwards `/api/*` to the sidecar.

pub mod error;
pub mod forward;
pub mod run;
pub mod runtime;

pub use error::DaemonError;
pub use run::run;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, Uri};
use axum::routing::{any, get};
use axum::{Json, Router};

use crate::api::{DaemonHealth, DaemonStatus};
use crate::config::Config;
use crate::listen::Origin;
use crate::paths::Paths;
use crate::server::{GuardPort, Stopping, Tracker, guard};

pub const SERVICE: &str = "cco-daemon";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone)]
pub struct DaemonState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    paths: Paths,
    origin: Origin,
    /// The port the listener really has: the Host check and `/status` use it.
    port: u16,
    started: Instant,
    generation: u64,
    tracker: Arc<Tracker>,
    client: forward::HttpClient,
    /// Ends forwarded long polls and streams when the daemon stops.
    stopping: Stopping,
    /// When the sidecar port's owner was last found to be this user (unix seconds).
    sidecar_owner_checked_at: std::sync::atomic::AtomicU64,
}

impl DaemonState {
    pub fn new(
        config: Config,
        paths: Paths,
        origin: Origin,
        port: u16,
        generation: u64,
        tracker: Arc<Tracker>,
        stopping: Stopping,
    ) -> Self {
        DaemonState {
            inner: Arc::new(Inner {
                config,
                paths,
                origin,
                port,
                started: Instant::now(),
                generation,
                tracker,
                client: forward::client(),
                stopping,
                sidecar_owner_checked_at: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    pub fn tracker(&self) -> Arc<Tracker> {
        self.inner.tracker.clone()
    }
}

/// Every route of the daemon.
pub fn router(state: DaemonState) -> Router {
    let guard_state = (GuardPort(state.inner.port), state.inner.tracker.clone());
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/api/{*rest}", any(forward::forward))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(guard_state, guard))
}

async fn health(State(state): State<DaemonState>) -> Json<DaemonHealth> {
    let s = &state.inner;
    Json(DaemonHealth {
        status: "healthy".into(),
        service: SERVICE.into(),
        version: VERSION.into(),
        uptime_seconds: s.started.elapsed().as_secs(),
        runtime_dir: s.paths.runtime_dir.display().to_string(),
        settings_generation: s.generation,
    })
}

async fn status(State(state): State<DaemonState>) -> Json<DaemonStatus> {
    let s = &state.inner;
    Json(DaemonStatus {
        service: SERVICE.into(),
        version: VERSION.into(),
        pid: std::process::id(),
        uptime_seconds: s.started.elapsed().as_secs(),
        listener: s.origin.as_str().into(),
        port: s.port,
        sidecar_port: s.config.sidecar.port,
        runtime_dir: s.paths.runtime_dir.display().to_string(),
        config_file: s.paths.config_file.display().to_string(),
        data_dir: s.paths.data_dir.display().to_string(),
        settings_generation: s.generation,
        connections_open: s.tracker.open_connections(),
        requests_served: s.tracker.requests_served(),
        idle_exit_after_seconds: s.config.idle_exit_after.map(|d: Duration| d.as_secs()),
        memory_rss_mb: (crate::api::rss_mb() * 10.0).round() / 10.0,
    })
}

async fn not_found(uri: Uri) -> DaemonError {
    DaemonError::NotFound {
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> DaemonError {
    DaemonError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// The path hooks call back into: this very binary, even if it was replaced on disk since.
pub fn current_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cco"));
    let s = exe.to_string_lossy();
    match s.strip_suffix(" (deleted)") {
        Some(stripped) => PathBuf::from(stripped),
        None => exe,
    }
}
