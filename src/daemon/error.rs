//! The daemon's one error type: every handler of its own answers with it, in the sidecar's
//! JSON shape (`{"error":{"code","message"}}`). Causes are logged here and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::server::error_response;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("no route {path} on the daemon; it serves /health, /status, /api/* and /mcp")]
    NotFound { path: String },
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("malformed request path")]
    BadPath,
    #[error(
        "127.0.0.1:{port} is held by another user (uid {uid}), not by your cco sidecar — \
         see `ss -ltnp 'sport = :{port}'`; change sidecar.port in your config if it is legitimately theirs"
    )]
    SidecarUntrusted { port: u16, uid: u32 },
    /// The cause (connect refused, reset, …) is logged, not sent.
    #[error(
        "the orchestration sidecar on 127.0.0.1:{port} is not reachable — check `cco status`; \
         start it with `cco sidecar start` (or `cco install`)"
    )]
    SidecarUnavailable {
        port: u16,
        #[source]
        cause: hyper_util::client::legacy::Error,
    },
    #[error(
        "the daemon is restarting; retry the request (long polls: poll again with the same `since`)"
    )]
    Restarting,
}

impl DaemonError {
    pub fn status(&self) -> StatusCode {
        match self {
            DaemonError::NotFound { .. } => StatusCode::NOT_FOUND,
            DaemonError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            DaemonError::BadPath => StatusCode::BAD_REQUEST,
            DaemonError::SidecarUntrusted { .. } | DaemonError::SidecarUnavailable { .. } => {
                StatusCode::BAD_GATEWAY
            }
            DaemonError::Restarting => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            DaemonError::NotFound { .. } => "not_found",
            DaemonError::MethodNotAllowed { .. } => "method_not_allowed",
            DaemonError::BadPath => "bad_request",
            DaemonError::SidecarUntrusted { .. } => "sidecar_untrusted",
            DaemonError::SidecarUnavailable { .. } => "sidecar_unavailable",
            DaemonError::Restarting => "unavailable",
        }
    }
}

impl IntoResponse for DaemonError {
    fn into_response(self) -> Response {
        match &self {
            DaemonError::SidecarUnavailable { port, cause } => {
                tracing::warn!(port, error = %cause, "sidecar unreachable")
            }
            DaemonError::SidecarUntrusted { .. } => tracing::warn!("{self}"),
            _ => {}
        }
        let mut resp = error_response(self.status(), self.code(), self.to_string());
        if matches!(self, DaemonError::Restarting) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
