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
use crate::server::error_response;

/// The header that carries `${ORCHESTRATOR_ISSUE_ID}` (empty when the launcher set none).
pub const ISSUE_HEADER: &str = "x-cco-issue";
/// Largest hook body accepted: the same cap as a command hook's stdin.
pub const MAX_HOOK_BODY: usize = hook::MAX_STDIN as usize;
/// Extra time past the hook's own deadline before the handler answers with the fallback;
/// Claude's timeout for the hook is set seconds above it (`daemon::runtime`).
const HANDLER_GRACE: Duration = Duration::from_millis(500);

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
                Event::ALL.map(Event::http_path).join(", ")
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
    // Which agent fired it: Claude Code names a sub-agent in every hook it fires
    // (`agent_id`, `agent_type`); the main session's hooks carry no `agent_id`.
    tracing::debug!(
        event = event.claude_name(),
        agent_id = input["agent_id"].as_str().unwrap_or("-"),
        agent_type = input["agent_type"].as_str().unwrap_or("-"),
        "hook input"
    );
    let mut env = HookEnv::new(
        s.policy.clone(),
        s.config.sidecar.port,
        Some(token.to_string()),
        issue,
        &s.paths.runtime_dir,
        Instant::now(),
    );
    if super::forward::owner_verified(&state, s.config.sidecar.port) {
        env = env.with_sidecar_owner_verified();
    }
    let fallback = hook::fallback_answer(&env, event);
    // What a sub-agent is told is recorded after the answer leaves (`daemon::told`).
    let told = super::told::Pending::of(
        event,
        &input,
        env.issue.as_ref(),
        s.config.sidecar.port,
        token,
    );
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
    if let (Some(told), Some(out)) = (told, &out) {
        told.send(out);
    }
    // `{}` is Claude's "no opinion": the same as a command hook that prints nothing.
    (StatusCode::OK, axum::Json(out.unwrap_or_else(|| json!({})))).into_response()
}

#[cfg(test)]
mod tests {
    //! The hook route in process, through `oneshot`: no socket, no Claude.
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::{Keys, TokenSpec};
    use crate::config::Config;
    use crate::listen::Origin;
    use crate::paths::Paths;
    use crate::secret::Secret;
    use crate::server::{Stopper, Tracker};

    const PORT: u16 = 3998;

    fn keys() -> Keys {
        Keys::new(&Secret::from_bytes(vec![7; 32])).unwrap()
    }

    fn state(tmp: &std::path::Path, cud: bool) -> DaemonState {
        let mut config = Config::default();
        config.hooks.require_cud_confirmation = cud;
        let paths = Paths {
            config_file: tmp.join("daemon.toml"),
            runtime_dir: tmp.to_path_buf(),
            data_dir: tmp.join("data"),
        };
        DaemonState::new(
            config,
            paths,
            Origin::Bound,
            PORT,
            1,
            Arc::new(Tracker::default()),
            Stopper::default().subscribe(),
        )
        .with_keys(keys())
    }

    async fn post(
        state: DaemonState,
        event: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method("POST")
            .uri(format!("/hooks/{event}"))
            .header(header::HOST, format!("127.0.0.1:{PORT}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(ISSUE_HEADER, "");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Body::from(body.to_string())).unwrap();
        let resp = super::super::router(state).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn write_call(cwd: &std::path::Path) -> Value {
        json!({"session_id": "s1", "hook_event_name": "PreToolUse", "cwd": cwd,
            "tool_name": "Write", "tool_input": {"file_path": cwd.join("x.txt"), "content": "x"}})
    }

    /// A project directory (policy decisions are made only in a project).
    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        dir
    }

    #[tokio::test]
    async fn pre_tool_use_answers_with_the_policy_decision() {
        let dir = project();
        let token = keys().mint(&TokenSpec::session("t", Duration::from_secs(60)));
        let (status, body) = post(
            state(dir.path(), true),
            "pre-tool-use",
            Some(&token.0),
            &write_call(dir.path()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["hookSpecificOutput"]["permissionDecision"], "ask");
        // No opinion is `{}`, as a command hook that prints nothing.
        let (status, body) = post(
            state(dir.path(), false),
            "pre-tool-use",
            Some(&token.0),
            &write_call(dir.path()),
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, json!({})));
    }

    #[tokio::test]
    async fn a_hook_without_a_valid_token_is_refused() {
        let dir = project();
        let s = || state(dir.path(), true);
        let call = write_call(dir.path());
        let (status, body) = post(s(), "pre-tool-use", None, &call).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .ends_with("`cco`"),
            "{body}"
        );
        let other = Keys::new(&Secret::from_bytes(vec![8; 32])).unwrap();
        let forged = other.mint(&TokenSpec::session("t", Duration::from_secs(60)));
        let (status, _) = post(s(), "pre-tool-use", Some(&forged.0), &call).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn unknown_events_are_a_json_404() {
        let dir = project();
        let token = keys().mint(&TokenSpec::session("t", Duration::from_secs(60)));
        let (status, body) =
            post(state(dir.path(), false), "nope", Some(&token.0), &json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/hooks/pre-tool-use"),
            "{body}"
        );
    }

    /// A down sidecar costs the hook nothing but its log line: the answer is still `{}`.
    #[tokio::test]
    async fn a_down_sidecar_is_an_empty_answer_and_a_log_line() {
        let dir = project();
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let s = state(dir.path(), false);
        let mut config = s.inner.config.clone();
        config.sidecar.port = port;
        let s = DaemonState::new(
            config,
            s.inner.paths.clone(),
            Origin::Bound,
            PORT,
            1,
            s.tracker(),
            s.inner.stopping.clone(),
        )
        .with_keys(keys());
        let token = keys().mint(&TokenSpec::session("t", Duration::from_secs(60)));
        let (status, body) = post(
            s,
            "stop",
            Some(&token.0),
            &json!({"session_id": "s1", "hook_event_name": "Stop"}),
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, json!({})));
        let log = std::fs::read_to_string(dir.path().join("hooks.log")).unwrap();
        assert!(log.contains("Stop") && log.contains("refused"), "{log}");
    }
}
