//! `POST /hooks/<event>`: Claude Code's `type: "http"` hooks. Claude's hook JSON in, Claude's
//! hook JSON out, computed by the same [`crate::hook::answer`] as `cco hook <event>`; the
//! token and issue arrive as headers (`Authorization`, [`ISSUE_HEADER`]).

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::DaemonState;
use crate::api::IssueId;
use crate::hook::{self, Event, HookEnv};
use crate::policy::Policy;
use crate::server::error_response;

/// The header that carries `${ORCHESTRATOR_ISSUE_ID}` (empty when the launcher set none).
pub const ISSUE_HEADER: &str = "x-cco-issue";
/// Largest hook body accepted: the same cap as a command hook's stdin.
pub const MAX_HOOK_BODY: usize = hook::MAX_STDIN as usize;
/// Extra time past the hook's own deadline before the handler answers with the fallback;
/// Claude's timeout for the hook is set seconds above it (`daemon::runtime`).
const HANDLER_GRACE: Duration = Duration::from_millis(500);

/// The URL path of an event's http hook.
pub fn path(event: Event) -> String {
    format!("/hooks/{}", event.subcommand())
}

pub async fn handle(
    State(state): State<DaemonState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(event) = Event::ALL.into_iter().find(|e| e.subcommand() == name) else {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no hook event {name:?}; the daemon serves {}",
                Event::ALL.map(|e| path(e)).join(", ")
            ),
        );
    };
    let s = &state.inner;
    let Some(keys) = s.keys.clone() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this daemon has no signing key for hook tokens; restart it: `cco daemon restart`",
        );
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token (ORCHESTRATOR_TOKEN was not passed); start Claude with `cco`",
        );
    };
    let claims = match keys.verify(token) {
        Ok(c) => c,
        Err(e) => {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("{e}; start a new session with `cco`"),
            );
        }
    };
    let issue = headers
        .get(ISSUE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let issue = match issue.map(IssueId::parse).transpose() {
        Ok(i) => i,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{ISSUE_HEADER}: {e}; set ORCHESTRATOR_ISSUE_ID to a valid id"),
            );
        }
    };
    if let Err(e) = claims.check_binding(issue.as_ref().map(|i| i.as_str()), None) {
        return error_response(StatusCode::FORBIDDEN, "forbidden", e.to_string());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "hook bodies must be application/json",
        );
    }
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the hook body is not JSON: {e}"),
            );
        }
    };
    let policy = Policy::from_json(&super::runtime::hooks_policy(&s.config));
    let env = HookEnv::new(
        policy,
        s.config.sidecar.port,
        Some(token.to_string()),
        issue,
        &s.paths.runtime_dir,
        Instant::now(),
    );
    let fallback = hook::fallback_answer(&env, event);
    let limit = env.policy.timeout + HANDLER_GRACE;
    // The hook library is blocking (loopback calls, file reads for the policy).
    let work = tokio::task::spawn_blocking(move || hook::answer(event, &input, &env));
    let out = match tokio::time::timeout(limit, work).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            tracing::warn!(event = event.claude_name(), error = %e, "hook handler failed");
            fallback
        }
        Err(_) => {
            tracing::warn!(
                event = event.claude_name(),
                "hook deadline passed; answering without it (raise hooks.timeout_ms if this repeats)"
            );
            fallback
        }
    };
    // `{}` is Claude's "no opinion": the same as a command hook that prints nothing.
    (StatusCode::OK, axum::Json(out.unwrap_or_else(|| json!({})))).into_response()
}
