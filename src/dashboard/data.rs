//! The page's data: cookie-protected `/dashboard/api/*` routes that the daemon answers
//! through the sidecar's typed client with a short-lived read-only token it mints itself,
//! and the live event stream, proxied from the sidecar's SSE with a bounded number of readers.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http_body_util::{BodyStream, StreamBody};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::DashboardState;
use crate::api::cost::CostBy;
use crate::api::{AgentId, EventType, IssueId};
use crate::auth::{Scope, TokenSpec};
use crate::client::sidecar::EventPageQuery;
use crate::client::{ServiceError, SidecarClient};
use crate::server::error_response;

/// Most event streams open at once over all dashboard tabs; more answer 503.
pub const MAX_STREAMS: usize = 8;
/// Lifetime of the token minted for one sidecar call (a stream only shows it when it opens).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Each sidecar call's limit.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The only reads the dashboard's token allows.
const SCOPES: [Scope; 3] = [Scope::AgentsRead, Scope::ResultsRead, Scope::EventsWait];

/// A short-lived read-only token for the sidecar; `None` without keys (see [`no_keys`]).
fn token(state: &DashboardState) -> Option<String> {
    let keys = state.inner.keys.as_ref()?;
    let mut spec = TokenSpec::session("cco-dashboard", TOKEN_TTL);
    spec.scopes = SCOPES.to_vec();
    Some(keys.mint(&spec).0)
}

fn no_keys() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the daemon has no signing keys — `cco daemon restart`",
    )
}

/// Runs `f` with a client on the blocking pool and answers its value as JSON, or the
/// sidecar's error (404 for a route it does not have: the page shows "not available").
async fn call<T, F>(state: &DashboardState, f: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(SidecarClient) -> Result<T, ServiceError> + Send + 'static,
{
    let Some(token) = token(state) else {
        return no_keys();
    };
    let port = state.inner.sidecar_port;
    let client = SidecarClient::new(port)
        .with_token(token)
        .with_timeout(CALL_TIMEOUT);
    match tokio::task::spawn_blocking(move || f(client)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => service_error(e, port),
        Err(_) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the dashboard's request failed — see `cco logs`",
        ),
    }
}

fn service_error(e: ServiceError, port: u16) -> Response {
    match e {
        ServiceError::Api { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            Json(body),
        )
            .into_response(),
        ServiceError::Unreachable { .. } => error_response(
            StatusCode::BAD_GATEWAY,
            "sidecar_unavailable",
            format!(
                "the sidecar on 127.0.0.1:{port} does not answer — `cco sidecar start` (or `cco daemon restart`)"
            ),
        ),
        other => {
            tracing::warn!(error = %other, "dashboard: sidecar call failed");
            error_response(
                StatusCode::BAD_GATEWAY,
                "sidecar_error",
                format!("{other} — see `cco logs`"),
            )
        }
    }
}

fn bad_request(message: String) -> Response {
    error_response(StatusCode::BAD_REQUEST, "bad_request", message)
}

#[derive(Deserialize)]
pub struct TreeQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// `GET /dashboard/api/tree`: one page of issues → agents.
pub async fn tree(
    State(state): State<DashboardState>,
    q: Result<Query<TreeQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let offset = q.offset.unwrap_or(0);
    let limit = q
        .limit
        .unwrap_or(crate::sidecar::views::DEFAULT_ISSUES_PER_PAGE);
    call(&state, move |c| c.view_tree(offset, limit)).await
}

#[derive(Deserialize)]
pub struct EventsQuery {
    before: Option<u64>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    topic: Option<String>,
    limit: Option<usize>,
}

/// `GET /dashboard/api/events`: one page of events, newest first.
pub async fn events(
    State(state): State<DashboardState>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let event_type = match q.event_type.filter(|t| !t.is_empty()) {
        Some(t) => match EventType::parse(&t) {
            Ok(t) => Some(t),
            Err(e) => return bad_request(format!("type: {e}")),
        },
        None => None,
    };
    let query = EventPageQuery {
        before: q.before,
        event_type,
        topic: q.topic.filter(|t| !t.is_empty()),
        limit: q.limit,
    };
    call(&state, move |c| c.view_events(&query)).await
}

/// `GET /dashboard/api/agents/{id}`: the agent, what it was told, its result (the sidecar's
/// `GET /api/agents/{id}`).
pub async fn agent(State(state): State<DashboardState>, Path(id): Path<String>) -> Response {
    let id = match AgentId::parse(&id) {
        Ok(id) => id,
        Err(e) => return bad_request(format!("agent id: {e}")),
    };
    call(&state, move |c| c.agent(&id)).await
}

/// `GET /dashboard/api/issues/{id}`: the issue's results, leases and spend by outcome.
pub async fn issue(State(state): State<DashboardState>, Path(id): Path<String>) -> Response {
    let id = match IssueId::parse(&id) {
        Ok(id) => id,
        Err(e) => return bad_request(format!("issue id: {e}")),
    };
    call(&state, move |c| {
        let results = c.results(&id)?;
        // Leases are shown when the sidecar has them; results alone still make the page.
        let leases = c.leases(Some(&id)).ok();
        // Spend of its completed and failed agents ("cost per outcome"), when there is any.
        let outcomes = c
            .cost_outcomes(Some(&id))
            .ok()
            .and_then(|o| o.rows.into_iter().find(|r| r.issue == id.as_str()));
        Ok(
            json!({"issue_id": id, "results": results.results, "leases": leases,
                  "outcomes": outcomes}),
        )
    })
    .await
}

#[derive(Deserialize)]
pub struct CostQuery {
    by: Option<String>,
    issue: Option<String>,
}

/// `GET /dashboard/api/cost?by=&issue=`: the sidecar's cost table (by issue when unsaid).
pub async fn cost(
    State(state): State<DashboardState>,
    q: Result<Query<CostQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let by = match q.by.as_deref() {
        None => CostBy::Issue,
        Some(b) => match CostBy::parse(b) {
            Some(by) => by,
            None => {
                let all: Vec<&str> = CostBy::ALL.iter().map(|b| b.as_str()).collect();
                return bad_request(format!("by: use one of {}", all.join(", ")));
            }
        },
    };
    let issue = match q
        .issue
        .filter(|i| !i.is_empty())
        .map(|i| IssueId::parse(&i))
    {
        None => None,
        Some(Ok(i)) => Some(i),
        Some(Err(e)) => return bad_request(format!("issue: {e}")),
    };
    call(&state, move |c| c.cost(issue.as_ref(), by, None)).await
}

/// `GET /dashboard/api/health`: the sidecar's health and status numbers (the daemon's own
/// are its open `/status`).
pub async fn health(State(state): State<DashboardState>) -> Response {
    call(&state, |c| {
        Ok(json!({"health": c.health()?, "status": c.status()?}))
    })
    .await
}

#[derive(Deserialize)]
pub struct StreamQuery {
    since: Option<u64>,
}

/// `GET /dashboard/api/events/stream?since=`: the sidecar's SSE, passed through. A stream
/// holds one of [`MAX_STREAMS`] permits until it ends; the daemon's stop ends it.
pub async fn stream(
    State(state): State<DashboardState>,
    q: Result<Query<StreamQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let Ok(permit) = state.inner.streams.clone().try_acquire_owned() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!(
                "{MAX_STREAMS} dashboard event streams are open already — close other dashboard tabs"
            ),
        );
    };
    let port = state.inner.sidecar_port;
    // The token must not go to a listener another user owns.
    if let Some(uid) = crate::client::foreign_listener(port) {
        return service_error(ServiceError::Foreign { port, uid }, port);
    }
    let Some(token) = token(&state) else {
        return no_keys();
    };
    let mut path = "/api/events/stream?follow=true".to_string();
    if let Some(since) = q.since {
        path.push_str(&format!("&since={since}"));
    }
    let uri: Uri = format!("http://127.0.0.1:{port}{path}")
        .parse()
        .expect("a valid URI");
    let req = axum::http::Request::get(uri)
        .header(header::HOST, format!("127.0.0.1:{port}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::ACCEPT, "text/event-stream")
        .body(Body::empty())
        .expect("a valid request");
    let resp = match tokio::time::timeout(CALL_TIMEOUT, state.inner.http.request(req)).await {
        Ok(Ok(resp)) => resp,
        _ => {
            return service_error(
                ServiceError::Unreachable {
                    port,
                    source: crate::client::ClientError::Timeout,
                },
                port,
            );
        }
    };
    if !resp.status().is_success() {
        let status = resp.status();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return service_error(
            crate::client::sidecar::decode_error(status.as_u16(), &bytes),
            port,
        );
    }
    let mut stopping = state.inner.stopping.clone();
    let frames = BodyStream::new(resp.into_body())
        .take_until(async move { stopping.wait().await })
        .map(move |frame| {
            let _held = &permit;
            frame
        });
    let mut out = Response::new(Body::new(StreamBody::new(frames)));
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    out.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out
}
