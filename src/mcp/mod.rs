//! cco's MCP server (Streamable HTTP, stateless) at the daemon's `/mcp`: the tools agents
//! coordinate with (`mcp__cco__publish`, `wait`, `inbox`, `reserve`, `release`, …). It sits
//! behind the daemon's Host/Origin guard and the same JWT as `/api`; the sidecar owns state.

/// The server name Claude Code shows cco's tools under (`mcp__cco__publish`, …).
pub const MCP_SERVER_NAME: &str = "cco";

pub mod tools;

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::api::IssueId;
use crate::auth::{AuthError, Keys};
use crate::server::{Stopping, error_response};

pub use tools::CcoTools;

/// The route Claude Code is pointed at by the sealed `mcp.json`.
pub const PATH: &str = "/mcp";

/// The header naming the issue every call is scoped to (`${ORCHESTRATOR_ISSUE_ID}`).
pub const ISSUE_HEADER: &str = "X-Cco-Issue";

/// Largest JSON-RPC message accepted: tool arguments are small; `data` of a publish is the
/// largest, and the sidecar has its own limit behind this one.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the MCP endpoint needs from the daemon.
#[derive(Clone)]
pub struct McpState {
    /// `None` when the daemon was built without the installation secret (router tests):
    /// then `/mcp` answers 503.
    pub keys: Option<Arc<Keys>>,
    pub sidecar_port: u16,
    /// Ends a `wait` when the daemon stops, instead of holding shutdown for its timeout.
    pub stopping: Stopping,
}

/// Who is calling: checked by [`authorize`] before any JSON-RPC is read, and handed to the
/// tools through the request's extensions.
#[derive(Clone)]
pub struct Caller {
    /// The caller's own token, passed on to the sidecar so its scopes apply there too.
    pub token: String,
    pub issue: IssueId,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("token", &"<hidden>")
            .field("issue", &self.issue)
            .finish()
    }
}

/// `/mcp`: the rmcp service behind [`authorize`].
pub fn router(state: McpState) -> Router {
    // Stateless: every POST carries its own auth and issue, so a daemon restart (or idle
    // exit and re-activation) loses nothing and no session id needs to be kept.
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(MAX_BODY_BYTES);
    let tools = CcoTools::new(state.sidecar_port, state.stopping.clone());
    let service = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service(PATH, service)
        .layer(axum::middleware::from_fn_with_state(state, authorize))
}

/// Why a request to `/mcp` was refused before it reached the MCP server.
#[derive(Debug, thiserror::Error)]
pub enum McpRefusal {
    #[error("the daemon has no signing keys, so it cannot check tokens — `cco daemon restart`")]
    NoKeys,
    #[error("{0}")]
    Auth(AuthError),
    #[error(
        "missing {ISSUE_HEADER} header: every MCP call is scoped to an issue — start Claude with `cco --issue ID`"
    )]
    NoIssue,
    #[error("{ISSUE_HEADER}: {0} — start Claude with `cco --issue ID`")]
    BadIssue(crate::api::IdError),
}

impl IntoResponse for McpRefusal {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            McpRefusal::NoKeys => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            McpRefusal::Auth(AuthError::OutOfScope(_) | AuthError::MissingScope(_)) => {
                (StatusCode::FORBIDDEN, "out_of_scope")
            }
            McpRefusal::Auth(AuthError::Missing) => (StatusCode::UNAUTHORIZED, "missing_token"),
            McpRefusal::Auth(AuthError::Expired) => (StatusCode::UNAUTHORIZED, "token_expired"),
            McpRefusal::Auth(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            McpRefusal::NoIssue | McpRefusal::BadIssue(_) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
        };
        let mut resp = error_response(status, code, self.to_string());
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3, as the MCP authorization spec asks of a protected resource.
            let challenge = if matches!(self, McpRefusal::Auth(AuthError::Missing)) {
                "Bearer realm=\"cco\""
            } else {
                "Bearer realm=\"cco\", error=\"invalid_token\""
            };
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

/// Checks the bearer token and the issue header, then hands a [`Caller`] to the tools.
pub async fn authorize(State(state): State<McpState>, mut req: Request, next: Next) -> Response {
    match caller(&state, req.headers()) {
        Ok(caller) => {
            let h = req.headers();
            tracing::debug!(
                method = header_text(h, "mcp-method"),
                protocol = header_text(h, "mcp-protocol-version"),
                issue = %caller.issue,
                "MCP request"
            );
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => {
            tracing::debug!(error = %refusal, "MCP request refused");
            refusal.into_response()
        }
    }
}

fn header_text<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

fn caller(state: &McpState, headers: &axum::http::HeaderMap) -> Result<Caller, McpRefusal> {
    let keys = state.keys.as_ref().ok_or(McpRefusal::NoKeys)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(McpRefusal::Auth(AuthError::Missing))?;
    let claims = keys.verify(token).map_err(McpRefusal::Auth)?;
    let asked = headers
        .get(ISSUE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let issue = match (asked, claims.issue_id.as_deref()) {
        (Some(s), _) => IssueId::parse(s).map_err(McpRefusal::BadIssue)?,
        (None, Some(bound)) => IssueId::parse(bound).map_err(McpRefusal::BadIssue)?,
        (None, None) => return Err(McpRefusal::NoIssue),
    };
    claims
        .check_binding(Some(issue.as_str()), None)
        .map_err(McpRefusal::Auth)?;
    Ok(Caller {
        token: token.to_string(),
        issue,
    })
}

#[cfg(test)]
mod tests {
    //! `/mcp` through the daemon's whole router, in process (`oneshot`, no socket).
    use super::*;
    use crate::auth::TokenSpec;
    use crate::config::Config;
    use crate::daemon::{DaemonState, router as daemon_router};
    use crate::listen::Origin;
    use crate::paths::Paths;
    use crate::secret::Secret;
    use crate::server::{Stopper, Tracker};
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::{Value, json};
    use std::time::Duration;
    use tower::ServiceExt;

    const PORT: u16 = 3998;
    const ISSUE: &str = "issue-7";

    fn keys() -> Keys {
        Keys::new(&Secret::from_bytes(vec![7; 32])).unwrap()
    }

    /// The daemon's router with keys; its sidecar port has nobody listening.
    fn app() -> Router {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = Config::default();
        config.sidecar.port = free.local_addr().unwrap().port();
        drop(free);
        let paths = Paths {
            config_file: "/nonexistent/cco/daemon.toml".into(),
            runtime_dir: "/nonexistent/run/cco".into(),
            data_dir: "/nonexistent/.cco".into(),
        };
        let stopper = Stopper::default();
        let state = DaemonState::new(
            config,
            paths,
            Origin::Bound,
            PORT,
            1,
            Arc::new(Tracker::default()),
            stopper.subscribe(),
        )
        .with_keys(keys());
        daemon_router(state)
    }

    fn token(issue: Option<&str>) -> String {
        let mut spec = TokenSpec::session("test", Duration::from_secs(60));
        spec.issue_id = issue.map(String::from);
        keys().mint(&spec).0
    }

    struct Call<'a> {
        host: &'a str,
        token: Option<String>,
        issue: Option<&'a str>,
        /// `MCP-Protocol-Version`, as Claude Code sends it.
        version: &'a str,
        body: Value,
    }

    impl<'a> Call<'a> {
        fn new(body: Value) -> Call<'a> {
            Call {
                host: "127.0.0.1:3998",
                token: Some(token(None)),
                issue: Some(ISSUE),
                version: "2025-11-25",
                body,
            }
        }
    }

    async fn send(call: Call<'_>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder()
            .method("POST")
            .uri(PATH)
            .header(header::HOST, call.host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header("MCP-Protocol-Version", call.version);
        if let Some(t) = &call.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(i) = call.issue {
            req = req.header(ISSUE_HEADER, i);
        }
        if let Some(method) = call.body["method"].as_str() {
            req = req.header("Mcp-Method", method);
        }
        let req = req.body(Body::from(call.body.to_string())).unwrap();
        let resp = app().oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, body)
    }

    fn rpc(id: u64, method: &str, params: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    }

    fn initialize() -> Value {
        rpc(
            1,
            "initialize",
            json!({
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"},
            }),
        )
    }

    #[tokio::test]
    async fn initialize_names_the_server_and_offers_tools() {
        let (status, _, body) = send(Call::new(initialize())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let result = &body["result"];
        assert_eq!(result["protocolVersion"], "2025-11-25", "{body}");
        assert_eq!(result["serverInfo"]["name"], "cco");
        assert!(result["capabilities"]["tools"].is_object(), "{body}");
    }

    /// Claude Code 2.1.332 first probes `server/discover` at 2026-07-28 (stateless, no
    /// `initialize`) and falls back to `initialize` at 2025-11-25: both are served.
    #[tokio::test]
    async fn server_discover_offers_the_versions_claude_code_speaks() {
        let discover = json!({
            "jsonrpc": "2.0",
            "id": "probe",
            "method": "server/discover",
            "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "claude-code", "version": "2.1.332"},
                "io.modelcontextprotocol/clientCapabilities": {},
            }},
        });
        let mut call = Call::new(discover);
        call.version = "2026-07-28";
        let (status, _, body) = send(call).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let text = body.to_string();
        for version in ["2026-07-28", "2025-11-25"] {
            assert!(text.contains(version), "{version} not offered: {body}");
        }
    }

    #[tokio::test]
    async fn tools_list_has_exactly_the_ten_tools() {
        let (status, _, body) = send(Call::new(rpc(2, "tools/list", json!({})))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let names: Vec<&str> = body["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "publish",
                "wait",
                "results",
                "context",
                "wait_all",
                "agents",
                "inbox",
                "reserve",
                "release",
                "reservations"
            ]
        );
        let wait = &body["result"]["tools"][1]["inputSchema"];
        assert_eq!(wait["properties"]["timeout_ms"]["maximum"], 55_000);
        assert_eq!(wait["required"], json!(["event_type"]));
    }

    /// A sidecar that cannot be reached is the tool's error text (the model reads it), not a
    /// protocol failure, and it says how to fix it.
    #[tokio::test]
    async fn a_tool_call_with_the_sidecar_down_is_a_tool_error() {
        let call = rpc(3, "tools/call", json!({"name": "agents", "arguments": {}}));
        let (status, _, body) = send(Call::new(call)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["result"]["isError"], true, "{body}");
        let text = body["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("refused"), "{text}");
    }

    #[tokio::test]
    async fn bad_arguments_are_a_tool_error_naming_the_field() {
        let call = rpc(
            4,
            "tools/call",
            json!({"name": "publish", "arguments": {"event_type": "../etc"}}),
        );
        let (_, _, body) = send(Call::new(call)).await;
        assert_eq!(body["result"]["isError"], true, "{body}");
        let text = body["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("event_type:"), "{text}");
    }

    #[tokio::test]
    async fn a_missing_or_bad_token_is_401_with_a_bearer_challenge() {
        for (token, code) in [
            (None, "missing_token"),
            (Some("not-a-jwt".to_string()), "invalid_token"),
            (
                Some(
                    Keys::new(&Secret::from_bytes(vec![8; 32]))
                        .unwrap()
                        .mint(&TokenSpec::session("x", Duration::from_secs(60)))
                        .0,
                ),
                "invalid_token",
            ),
        ] {
            let mut call = Call::new(initialize());
            call.token = token;
            let (status, headers, body) = send(call).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
            assert_eq!(body["error"]["code"], code);
            let challenge = headers[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(challenge.starts_with("Bearer "), "{challenge}");
        }
    }

    #[tokio::test]
    async fn a_foreign_host_or_origin_is_refused() {
        let mut call = Call::new(initialize());
        call.host = "evil.example:3998";
        let (status, _, body) = send(call).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"]["code"], "forbidden_host");
    }

    /// A token bound to one issue cannot act on another; without the header it acts on its own.
    #[tokio::test]
    async fn a_token_bound_to_another_issue_is_refused() {
        let mut call = Call::new(initialize());
        call.token = Some(token(Some("issue-other")));
        let (status, _, body) = send(call).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "out_of_scope");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("issue-other")
        );

        let mut call = Call::new(initialize());
        call.token = Some(token(Some(ISSUE)));
        call.issue = None;
        let (status, _, _) = send(call).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn no_issue_at_all_is_a_400_that_says_how() {
        let mut call = Call::new(initialize());
        call.issue = None;
        let (status, _, body) = send(call).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.ends_with("start Claude with `cco --issue ID`"), "{msg}");
    }

    /// What the tool definitions cost a model request: `tools/list` as Claude Code sends it on.
    #[test]
    fn tool_definitions_stay_small() {
        let bytes = serde_json::to_string(tools::definitions()).unwrap().len();
        println!("the ten tool definitions: {bytes} bytes");
        assert!(bytes < MAX_DEFINITION_BYTES, "{bytes} bytes");
    }

    /// A budget for the ten definitions: Claude Code 2.1.332 defers them (a main request
    /// carries their names only) until `ToolSearch` loads one, which then rides on every turn.
    const MAX_DEFINITION_BYTES: usize = 3584;
}
