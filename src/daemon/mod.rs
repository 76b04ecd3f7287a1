//! The daemon (`:3000`): seals the runtime files at start-up, answers `/health` and
//! `/status`, answers Claude Code's http hooks (`/hooks/<event>`), serves cco's MCP tools at
//! `/mcp`, receives Claude Code's OpenTelemetry export (`/v1/logs`, `/v1/metrics`), and
//! forwards `/api/*` to the sidecar.

pub mod error;
pub mod forward;
pub mod hooks;
pub mod otlp;
pub mod run;
pub mod runtime;
mod told;

pub use error::DaemonError;
pub use run::run;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, Uri};
use axum::routing::{any, get, post};
use axum::{Json, Router};

use crate::api::{DaemonHealth, DaemonStatus};
use crate::config::Config;
use crate::listen::Origin;
use crate::paths::Paths;
use crate::server::{GuardPort, Stopping, Tracker};

pub const SERVICE: &str = "cco-daemon";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone)]
pub struct DaemonState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    /// The hook policy the config seals, parsed once (every http hook decides with it).
    policy: crate::policy::Policy,
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
    /// Verifies the bearer tokens of `/mcp` and of the http hooks (the `/api` ones are the
    /// sidecar's to check); `None` refuses them.
    keys: Option<Arc<crate::auth::Keys>>,
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
                policy: crate::policy::Policy::from_json(&runtime::hooks_policy(&config)),
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
                keys: None,
            }),
        }
    }

    /// Gives `/mcp` the keys to check tokens with; without them it answers 503.
    pub fn with_keys(mut self, keys: crate::auth::Keys) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("keys are set before the state is shared");
        inner.keys = Some(Arc::new(keys));
        self
    }

    fn mcp_state(&self) -> crate::mcp::McpState {
        crate::mcp::McpState {
            keys: self.inner.keys.clone(),
            sidecar_port: self.inner.config.sidecar.port,
            stopping: self.inner.stopping.clone(),
        }
    }

    pub fn tracker(&self) -> Arc<Tracker> {
        self.inner.tracker.clone()
    }
}

/// Every route of the daemon.
pub fn router(state: DaemonState) -> Router {
    let guard_state = (GuardPort(state.inner.port), state.inner.tracker.clone());
    let mcp = crate::mcp::router(state.mcp_state());
    let dashboard = crate::dashboard::router(crate::dashboard::DashboardState::new(
        state.inner.keys.clone(),
        state.inner.config.sidecar.port,
        state.inner.port,
        state.inner.stopping.clone(),
    ));
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route(
            "/hooks/{event}",
            post(hooks::handle).layer(axum::extract::DefaultBodyLimit::max(hooks::MAX_HOOK_BODY)),
        )
        .route(
            "/v1/logs",
            post(otlp::logs).layer(axum::extract::DefaultBodyLimit::max(otlp::MAX_OTLP_BODY)),
        )
        .route(
            "/v1/metrics",
            post(otlp::metrics).layer(axum::extract::DefaultBodyLimit::max(otlp::MAX_OTLP_BODY)),
        )
        .route("/api/{*rest}", any(forward::forward))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .merge(mcp)
        .merge(dashboard)
        .layer(crate::server::GuardLayer::new(guard_state))
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

#[cfg(test)]
mod tests {
    //! The router in process, through `oneshot`: no socket.
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    const PORT: u16 = 3999;

    fn state() -> DaemonState {
        let paths = Paths {
            config_file: "/nonexistent/cco/daemon.toml".into(),
            runtime_dir: "/nonexistent/run/cco".into(),
            data_dir: "/nonexistent/.cco".into(),
        };
        let stopper = crate::server::Stopper::default();
        DaemonState::new(
            Config::default(),
            paths,
            Origin::Bound,
            PORT,
            7,
            Arc::new(Tracker::default()),
            stopper.subscribe(),
        )
    }

    async fn send(method: &str, path: &str, host: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let resp = router(state()).oneshot(req).await.unwrap();
        let status = resp.status();
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/json",
            "{method} {path}"
        );
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn local() -> String {
        format!("127.0.0.1:{PORT}")
    }

    #[tokio::test]
    async fn health_answers_on_the_listening_port() {
        let (status, body) = send("GET", "/health", &local()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["service"], SERVICE);
        assert_eq!(body["settings_generation"], 7);
        let (status, body) = send("GET", "/status", &local()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["port"], PORT);
    }

    /// The Host check uses the port the daemon listens on, not the config's (3000).
    #[tokio::test]
    async fn the_configured_port_is_not_the_one_checked() {
        let (status, body) = send("GET", "/health", "127.0.0.1:3000").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"]["code"], "forbidden_host");
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_json_errors() {
        let (status, body) = send("GET", "/nope", &local()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("/nope"),
            "{body}"
        );
        let (status, body) = send("POST", "/health", &local()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }

    /// The cause of an unreachable sidecar is logged, not sent.
    #[tokio::test]
    async fn a_down_sidecar_is_a_502_without_its_cause() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let mut config = Config::default();
        config.sidecar.port = port;
        let s = state();
        let s = DaemonState::new(
            config,
            s.inner.paths.clone(),
            Origin::Bound,
            PORT,
            1,
            s.tracker(),
            s.inner.stopping.clone(),
        );
        let req = Request::builder()
            .uri("/api/agents")
            .header(header::HOST, local())
            .body(Body::empty())
            .unwrap();
        let resp = router(s).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "sidecar_unavailable");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&port.to_string()) && msg.contains("cco sidecar start"));
        assert!(!msg.to_lowercase().contains("connect"), "{msg}");
    }
}
