//! `/api/*` on the daemon, forwarded unchanged to the sidecar: agents only know
//! `ORCHESTRATOR_API_URL`. Bodies stream both ways, so long polls and SSE pass through.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::DaemonState;
use crate::server::error_response;

pub type HttpClient = Client<HttpConnector, Body>;

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded; neither is `Origin`, which the
/// daemon's guard has already checked and which would look foreign on the sidecar's port.
const DROP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::ORIGIN,
];

pub async fn forward(State(state): State<DaemonState>, mut req: Request) -> Response {
    let port = state.inner.config.sidecar.port;
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let uri: Uri = match format!("http://127.0.0.1:{port}{path}").parse() {
        Ok(u) => u,
        Err(_) => return error_response(StatusCode::BAD_REQUEST, "bad_request", "malformed path"),
    };
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    for h in DROP {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    headers.insert(
        header::HOST,
        HeaderValue::from_str(&format!("127.0.0.1:{port}")).expect("valid host"),
    );
    match state.inner.client.request(req).await {
        Ok(resp) => resp.map(Body::new).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, port, "sidecar unreachable");
            error_response(
                StatusCode::BAD_GATEWAY,
                "sidecar_unavailable",
                format!(
                    "the orchestration sidecar on 127.0.0.1:{port} is not reachable — check `cco status`; \
                     start it with `cco sidecar start` (or `cco install`)"
                ),
            )
        }
    }
}
