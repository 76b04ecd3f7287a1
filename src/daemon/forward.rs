//! `/api/*` on the daemon, forwarded unchanged to the sidecar: agents only know
//! `ORCHESTRATOR_API_URL`. Bodies stream both ways, so long polls and SSE pass through; a
//! daemon stop ends them cleanly (503 before the answer's head, end of stream after it).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use futures_util::StreamExt;
use http_body_util::{BodyStream, StreamBody};

use super::DaemonState;
use crate::server::error_response;

/// Once the daemon stops, how long a forwarded request may still take to get its answer's
/// head: quick requests already sent finish; long polls give up with 503.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

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

/// How long a good owner check of the sidecar's port is trusted before `/proc/net/tcp` is
/// read again (it grows with every connection on the machine).
const OWNER_RECHECK_SECS: u64 = 5;
fn owner_checked(state: &DaemonState, port: u16) -> Result<(), String> {
    let checked_at = &state.inner.sidecar_owner_checked_at;
    use std::sync::atomic::Ordering;
    let now = crate::auth::now_secs();
    if now.saturating_sub(checked_at.load(Ordering::Relaxed)) < OWNER_RECHECK_SECS {
        return Ok(());
    }
    crate::client::check_listener_owner(port)?;
    checked_at.store(now, Ordering::Relaxed);
    Ok(())
}

pub async fn forward(State(state): State<DaemonState>, mut req: Request) -> Response {
    let port = state.inner.config.sidecar.port;
    // Requests carry agents' tokens: never forward them to a listener another user owns.
    if let Err(msg) = owner_checked(&state, port) {
        tracing::warn!(port, "{msg}");
        return error_response(StatusCode::BAD_GATEWAY, "sidecar_untrusted", msg);
    }
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
    let mut stopping = state.inner.stopping.clone();
    let answer = tokio::select! {
        r = state.inner.client.request(req) => r,
        _ = async {
            stopping.wait().await;
            tokio::time::sleep(STOP_GRACE).await;
        } => {
            let mut resp = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the daemon is restarting; retry the request (long polls: poll again with the same `since`)",
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    match answer {
        // A streamed answer (SSE) ends where it is when the daemon stops: the client sees a
        // complete response and reconnects, instead of a reset after the grace period.
        Ok(resp) if !resp.headers().contains_key(header::CONTENT_LENGTH) => {
            let mut stopping = state.inner.stopping.clone();
            resp.map(|body| {
                let frames = BodyStream::new(body).take_until(async move { stopping.wait().await });
                Body::new(StreamBody::new(frames))
            })
            .into_response()
        }
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
