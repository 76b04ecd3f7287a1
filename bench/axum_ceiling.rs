//! The ceiling for `GET /health` (run by `bench/compare.sh`): a minimal axum server on the
//! same runtime shape as cco's services (2 workers, 127.0.0.1) answering a fixed JSON body of
//! the sidecar's size — no Host check, no metrics, no probes. `POST /hooks/<event>` answers
//! `{}` at once: the floor of an http hook as Claude measures it (`bench/hook_latency.sh`).
//! Usage: axum_ceiling PORT

use axum::Router;
use axum::routing::{get, post};

/// The same runtime shape as `cco::cli::daemon::runtime`.
const WORKERS: usize = 2;

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: axum_ceiling PORT");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let app = Router::new().route(
            "/health",
            get(|| async {
                axum::Json(serde_json::json!({
                    "status": "healthy", "service": "axum-ceiling", "version": "0",
                    "uptime_seconds": 0, "checks": {"storage": "healthy", "event_bus": "healthy",
                    "memory_usage_mb": 0, "active_agents": 0, "event_queue_size": 0}
                }))
            }),
        )
        // Claude's "no opinion", without reading the hook's input.
        .route("/hooks/{event}", post(|| async { axum::Json(serde_json::json!({})) }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind 127.0.0.1");
        axum::serve(listener, app).await.expect("serve");
    });
}
