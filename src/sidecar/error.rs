//! The sidecar's one error type: every handler returns `Result<_, ApiError>`, and this file
//! alone decides statuses and codes. Internal causes are logged here and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::{ErrorBody, IdError};
use crate::auth::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error("{0}")]
    InvalidPath(String),
    #[error(transparent)]
    Auth(AuthError),
    #[error("{0}")]
    NotFound(String),
    #[error(
        "cursor {since} is older than the journal's retention (oldest kept: {oldest}); restart from `since={floor}` or without `since`"
    )]
    CursorGone { since: u64, oldest: u64, floor: u64 },
    /// No `floor`: there is no older cursor to restart from.
    #[error(
        "cursor {since} is ahead of the journal's newest event ({head}): the journal was reset (its database lost or replaced); restart without `since` (or from 0) and drop cursors saved before"
    )]
    CursorAhead { since: u64, head: u64 },
    #[error(
        "`{0}` events are published by the sidecar itself (POST /api/results, POST /api/agents/{{id}}/status); publish another event type"
    )]
    ReservedEventType(String),
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("POST bodies must be `Content-Type: application/json`")]
    NotJson,
    #[error(
        "the disk holding the orchestration data is full; nothing was stored — free space and retry"
    )]
    DiskFull,
    #[error("the sidecar is shutting down; retry in a moment")]
    Unavailable,
    /// The journal could not commit; `reason` is SQLite's description (no paths).
    #[error(
        "the event journal could not commit ({reason}); nothing was stored — see `cco logs` for the cause, then retry"
    )]
    JournalFailed { reason: String },
    /// The results store cannot write where it must; the path is the user's own data dir.
    #[error("cannot store the result: {message}")]
    Storage { message: String },
    /// The shared store (NATS) cannot be reached; `reason` says why.
    #[error(
        "the shared store is unavailable ({reason}); nothing was changed — retry when it is back, and see what is wrong with `cco doctor`"
    )]
    StoreUnavailable { reason: String },
    /// The cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(cause.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidId(_) | ApiError::InvalidPath(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Auth(AuthError::MissingScope(_) | AuthError::OutOfScope(_)) => {
                StatusCode::FORBIDDEN
            }
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::ReservedEventType(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::CursorGone { .. } | ApiError::CursorAhead { .. } => StatusCode::GONE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Unavailable
            | ApiError::JournalFailed { .. }
            | ApiError::StoreUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::Storage { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidId(_) | ApiError::InvalidPath(_) => "invalid_id",
            ApiError::Auth(AuthError::MissingScope(_)) => "missing_scope",
            ApiError::Auth(AuthError::OutOfScope(_)) => "out_of_scope",
            ApiError::Auth(AuthError::Expired) => "token_expired",
            ApiError::Auth(AuthError::Missing) => "missing_token",
            ApiError::Auth(_) => "invalid_token",
            ApiError::NotFound(_) => "not_found",
            ApiError::ReservedEventType(_) => "reserved_event_type",
            ApiError::CursorGone { .. } => "cursor_expired",
            ApiError::CursorAhead { .. } => "cursor_ahead",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::NotJson => "unsupported_media_type",
            ApiError::DiskFull => "disk_full",
            ApiError::Unavailable => "unavailable",
            ApiError::JournalFailed { .. } => "journal_failed",
            ApiError::Storage { .. } => "storage_error",
            ApiError::StoreUnavailable { .. } => "store_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Auth(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
            ApiError::DiskFull => tracing::error!("disk full: request refused"),
            ApiError::JournalFailed { .. }
            | ApiError::Storage { .. }
            | ApiError::StoreUnavailable { .. } => {
                tracing::error!(error = %self, "storage failure")
            }
            e if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN => {
                tracing::debug!(error = %e, "request refused")
            }
            _ => {}
        }
        let mut body = ErrorBody::new(self.code(), self.to_string());
        // Clients restart from the floor: a field, not a number inside `message`.
        if let ApiError::CursorGone { floor, .. } = &self {
            body.error.floor = Some(*floor);
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;

    #[test]
    fn statuses_and_codes() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (ApiError::Auth(AuthError::Missing), 401, "missing_token"),
            (ApiError::Auth(AuthError::Expired), 401, "token_expired"),
            (
                ApiError::Auth(AuthError::MissingScope(Scope::ContextRead)),
                403,
                "missing_scope",
            ),
            (
                ApiError::CursorGone {
                    since: 1,
                    oldest: 5,
                    floor: 4,
                },
                410,
                "cursor_expired",
            ),
            (
                ApiError::CursorAhead { since: 9, head: 2 },
                410,
                "cursor_ahead",
            ),
            (ApiError::TooLarge { limit: 10 }, 413, "payload_too_large"),
            (
                ApiError::ReservedEventType("agent_completed".into()),
                403,
                "reserved_event_type",
            ),
            (ApiError::NotJson, 415, "unsupported_media_type"),
            (ApiError::DiskFull, 507, "disk_full"),
            (
                ApiError::JournalFailed {
                    reason: "database is locked".into(),
                },
                503,
                "journal_failed",
            ),
            (
                ApiError::StoreUnavailable {
                    reason: "connection refused".into(),
                },
                503,
                "store_unavailable",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.code(), code);
        }
    }

    #[test]
    fn internal_causes_are_not_sent() {
        let e = ApiError::internal("sqlite: /secret/path is locked");
        assert_eq!(e.to_string(), "internal error");
    }
}
