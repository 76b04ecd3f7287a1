//! The sidecar's handlers. Each takes `Claims` (so it is authenticated by its signature),
//! checks its scope and bindings, and answers with the wire types of `api::sidecar`.
//! Hot answers are assembled from JSON serialized once (journal events, results, contexts).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::context::{ProjectRefused, check_project};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery, RequireScope};
use super::journal::{EventFilter, JournalError, JournalEvent, NewEvent, Subscription};
use super::results::StoreError;
use super::{SERVICE, SidecarState, VERSION};
use crate::api::sidecar::{
    AgentList, AgentState, AgentStatusUpdate, EventStats, HealthChecks, Performance,
    PublishRequest, ResultStored, ResultSubmission, SidecarHealth, SidecarStatus, StorageStats,
    StoredResult,
};
use crate::api::{AgentId, AgentType, EventType, IssueId};
use crate::auth::{AuthError, Claims, Scope};

/// `wait` without `timeout`, and the most it may ask for.
pub const DEFAULT_WAIT_MS: u64 = 30_000;
pub const MAX_WAIT_MS: u64 = 300_000;
/// Longest `publisher` / `topic` / `correlation_id`.
const MAX_LABEL: usize = 256;
/// The event a stored result publishes.
pub const AGENT_COMPLETED: &str = "agent_completed";
/// The events an agent status update publishes.
pub const AGENT_STARTED: &str = "agent_started";
pub const AGENT_FAILED: &str = "agent_failed";
/// Lifecycle events only the sidecar publishes, so waiters can trust them.
const RESERVED_EVENTS: [&str; 3] = [AGENT_STARTED, AGENT_COMPLETED, AGENT_FAILED];

impl From<JournalError> for ApiError {
    fn from(e: JournalError) -> Self {
        match e {
            JournalError::Gone { since, floor } => ApiError::CursorGone {
                since,
                oldest: floor + 1,
                floor,
            },
            JournalError::Ahead { since, head } => ApiError::CursorAhead { since, head },
            JournalError::DiskFull => ApiError::DiskFull,
            JournalError::Closed => ApiError::Unavailable,
            e => ApiError::internal(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull(_) => ApiError::DiskFull,
            e => ApiError::internal(e),
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    // `/api/results/` or `/api/context//x`: an empty ID, not an unknown route.
    let path = uri.path();
    if path.starts_with("/api/") && (path.contains("//") || path.ends_with('/')) {
        return ApiError::InvalidPath("IDs must not be empty".into());
    }
    ApiError::NotFound("no such route; see DESIGN.md for the sidecar's routes".into())
}

pub async fn method_not_allowed() -> Response {
    crate::server::error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

pub async fn health(State(s): State<SidecarState>) -> (StatusCode, Json<SidecarHealth>) {
    let probes = s.inner.probes.read().expect("probes lock").clone();
    let healthy = probes.storage == "healthy" && probes.event_bus == "healthy";
    let body = SidecarHealth {
        status: if healthy { "healthy" } else { "unhealthy" }.into(),
        service: SERVICE.into(),
        version: VERSION.into(),
        uptime_seconds: s.inner.started.elapsed().as_secs(),
        checks: HealthChecks {
            storage: probes.storage.into(),
            event_bus: probes.event_bus.into(),
            memory_usage_mb: probes.memory_mb,
            active_agents: s.journal().agent_counts().active,
            event_queue_size: s.journal().pending(),
        },
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

pub async fn status(State(s): State<SidecarState>) -> Json<SidecarStatus> {
    let j = s.journal();
    let bytes =
        s.inner.results.bytes() + s.inner.db_bytes.load(std::sync::atomic::Ordering::Relaxed);
    let perf = s.metrics().summary();
    Json(SidecarStatus {
        agents: j.agent_counts(),
        storage: StorageStats {
            context_cache_entries: s.inner.context.cache_entries() as u64,
            results_stored: s.inner.results.files(),
            total_size_mb: (bytes as f64 / (1024.0 * 1024.0) * 1000.0).round() / 1000.0,
        },
        events: EventStats {
            total_published: j.head(),
            active_subscriptions: j.subscribers(),
            queue_depth: j.pending(),
        },
        performance: Performance {
            avg_response_time_ms: perf.avg_ms,
            p99_response_time_ms: perf.p99_ms,
            requests_per_second: perf.per_second,
        },
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextQuery {
    project: Option<String>,
}

/// The project a context request reads: the token's `project`, or `?project=` inside it;
/// for a token bound to no project, `?project=` naming a real project (see
/// `context::check_project`). Never `/`, a system directory or the home directory itself.
fn project_root(
    claims: &Claims,
    asked: Option<&str>,
    home: Option<&Path>,
) -> Result<PathBuf, ApiError> {
    let canon = |p: &str| {
        std::fs::canonicalize(p)
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| ApiError::NotFound(format!("project directory {p:?} does not exist")))
    };
    let refused = |e: ProjectRefused| ApiError::from(AuthError::OutOfScope(e.to_string()));
    let (root, unbound) = match (claims.project.as_deref(), asked) {
        (Some(bound), Some(asked)) => {
            let (bound, asked) = (canon(bound)?, canon(asked)?);
            if !asked.starts_with(&bound) {
                return Err(AuthError::OutOfScope(format!(
                    "token is bound to project {}, not {}",
                    bound.display(),
                    asked.display()
                ))
                .into());
            }
            (asked, false)
        }
        (Some(bound), None) => (canon(bound)?, false),
        (None, Some(asked)) => (canon(asked)?, true),
        (None, None) => {
            return Err(ApiError::BadRequest(
                "no project: pass ?project=DIR or use a token bound to one (`cco token --project DIR`)"
                    .into(),
            ));
        }
    };
    check_project(&root, home, unbound).map_err(refused)?;
    Ok(root)
}

pub async fn get_context(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath((issue_id, agent_type)): ApiPath<(IssueId, AgentType)>,
    ApiQuery(q): ApiQuery<ContextQuery>,
) -> Result<Response, ApiError> {
    claims.require(Scope::ContextRead)?;
    claims.check_binding(Some(issue_id.as_str()), Some(agent_type.as_str()))?;
    let root = project_root(&claims, q.project.as_deref(), s.inner.home.as_deref())?;
    let body = blocking(move || -> Result<String, ApiError> {
        let built = s
            .inner
            .context
            .project(&root, &agent_type)
            .map_err(|e| ApiError::NotFound(e.to_string()))?;
        let results = s.inner.results.list(&issue_id);
        let budget = s.inner.context.budget();
        let mut out = String::with_capacity(built.json.len() + 512);
        out.push_str("{\"issue_id\":\"");
        out.push_str(issue_id.as_str()); // validated: nothing to escape
        out.push_str("\",\"agent_type\":\"");
        out.push_str(agent_type.as_str());
        out.push_str("\",\"project\":");
        out.push_str(&built.json);
        out.push_str(",\"previous_results\":[");
        let mut truncated = built.truncated;
        let mut first = true;
        for r in results.iter() {
            if out.len() + r.len() + 128 > budget {
                truncated = true;
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(r);
        }
        out.push_str("],\"truncated\":");
        out.push_str(if truncated { "true" } else { "false" });
        out.push_str(",\"budget_bytes\":");
        out.push_str(&budget.to_string());
        out.push('}');
        Ok(out)
    })
    .await??;
    Ok(json_response(StatusCode::OK, body))
}

pub async fn store_result(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiJson(sub): ApiJson<ResultSubmission>,
) -> Result<Response, ApiError> {
    claims.require(Scope::ResultsWrite)?;
    claims.check_binding(Some(sub.issue_id.as_str()), Some(sub.agent_type.as_str()))?;
    let status = match sub.result.get("status") {
        Some(serde_json::Value::String(st)) if !st.is_empty() => st.clone(),
        _ => {
            return Err(ApiError::BadRequest(
                "`result` must be an object with a `status` string".into(),
            ));
        }
    };
    // A repeat of what this agent already stored (a retried hook, a stop reported twice) is
    // acknowledged without a second write or a second `agent_completed`.
    let existing = {
        let (s, issue, ty) = (s.clone(), sub.issue_id.clone(), sub.agent_type.clone());
        blocking(move || s.inner.results.get(&issue, &ty)).await?
    };
    if let Some(json) = existing
        && let Ok(prev) = serde_json::from_str::<StoredResult>(&json)
        && prev.agent_id == sub.agent_id
        && prev.result == sub.result
    {
        let body = ResultStored {
            stored: true,
            path: s
                .inner
                .results
                .path_of(&sub.issue_id, &sub.agent_type)
                .display()
                .to_string(),
            issue_id: sub.issue_id,
            agent_type: sub.agent_type,
            event_id: None,
            seq: None,
            unchanged: true,
        };
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let stored = StoredResult {
        agent_id: sub.agent_id,
        agent_type: sub.agent_type,
        issue_id: sub.issue_id,
        result: sub.result,
        stored_at: super::journal::rfc3339_now(),
    };
    // Written first, then announced; if the announcement fails the write is undone, so a 5xx
    // means "nothing happened" and a retry is safe.
    let written = {
        let (s, stored) = (s.clone(), stored.clone());
        blocking(move || s.inner.results.store(&stored)).await??
    };
    let path = written.path.clone();
    let published = s
        .journal()
        .publish(NewEvent {
            event_type: EventType::parse(AGENT_COMPLETED).expect("valid event type"),
            publisher: stored.agent_id.to_string(),
            topic: stored.issue_id.to_string(),
            data: json!({
                "issue_id": stored.issue_id,
                "agent_type": stored.agent_type,
                "agent_id": stored.agent_id,
                "status": status,
                "path": path.display().to_string(),
            }),
            correlation_id: None,
        })
        .await;
    let event = match published {
        Ok(event) => event,
        Err(e) => {
            let s = s.clone();
            match blocking(move || s.inner.results.undo(written)).await {
                Ok(Ok(())) => {}
                Ok(Err(undo)) => {
                    tracing::error!(error = %undo, "cannot undo a result whose event failed")
                }
                Err(undo) => {
                    tracing::error!(error = %undo, "cannot undo a result whose event failed")
                }
            }
            return Err(e.into());
        }
    };
    let body = ResultStored {
        stored: true,
        path: path.display().to_string(),
        issue_id: stored.issue_id,
        agent_type: stored.agent_type,
        event_id: Some(event.event().event_id),
        seq: Some(event.seq),
        unchanged: false,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn list_results(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath(issue_id): ApiPath<IssueId>,
) -> Result<Response, ApiError> {
    claims.require(Scope::ResultsRead)?;
    claims.check_binding(Some(issue_id.as_str()), None)?;
    let results = if s.inner.results.is_loaded(&issue_id) {
        s.inner.results.list(&issue_id)
    } else {
        let (s, id) = (s.clone(), issue_id.clone());
        blocking(move || s.inner.results.list(&id)).await?
    };
    let mut out = format!("{{\"issue_id\":\"{issue_id}\",\"results\":[");
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r);
    }
    out.push_str("]}");
    Ok(json_response(StatusCode::OK, out))
}

fn check_label(what: &str, v: &str, required: bool) -> Result<(), ApiError> {
    if (required && v.is_empty()) || v.len() > MAX_LABEL || v.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "`{what}` must be 1-{MAX_LABEL} characters without control characters"
        )));
    }
    Ok(())
}

pub async fn publish_event(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath(event_type): ApiPath<EventType>,
    body: Result<ApiJson<PublishRequest>, ApiError>,
) -> Result<Response, ApiError> {
    claims.require(Scope::EventsPublish)?;
    // Reserved names are refused before the body is looked at, so the answer names the
    // replacement even for the guide's `curl -d` without a JSON content type.
    if RESERVED_EVENTS.contains(&event_type.as_str()) {
        return Err(ApiError::ReservedEventType(event_type.to_string()));
    }
    let ApiJson(req) = body?;
    check_label("publisher", &req.publisher, true)?;
    check_label("topic", &req.topic, true)?;
    if let Some(issue) = &claims.issue_id
        && req.topic != *issue
    {
        return Err(AuthError::OutOfScope(format!(
            "token is bound to issue {issue}; publish with \"topic\": \"{issue}\""
        ))
        .into());
    }
    if let Some(c) = &req.correlation_id {
        check_label("correlation_id", c, false)?;
    }
    let event = s
        .journal()
        .publish(NewEvent {
            event_type,
            publisher: req.publisher,
            topic: req.topic,
            data: req.data,
            correlation_id: req.correlation_id,
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        event.json.get().to_string(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    since: Option<u64>,
    filter: Option<String>,
    timeout: Option<u64>,
}

/// `filter=topic:NAME` (the only filter so far).
fn parse_filter(filter: Option<&str>) -> Result<Option<String>, ApiError> {
    match filter {
        None | Some("") => Ok(None),
        Some(f) => match f.split_once(':') {
            Some(("topic", name)) if !name.is_empty() => {
                check_label("topic", name, true)?;
                Ok(Some(name.to_string()))
            }
            _ => Err(ApiError::BadRequest(format!(
                "unknown filter {f:?}; use filter=topic:NAME"
            ))),
        },
    }
}

/// The topic a reader may see: a token bound to an issue reads only that issue's topic
/// (forced when no filter is given; another topic is 403).
fn scoped_topic(claims: &Claims, asked: Option<String>) -> Result<Option<String>, ApiError> {
    match (&claims.issue_id, asked) {
        (Some(issue), Some(topic)) if topic != *issue => Err(AuthError::OutOfScope(format!(
            "token is bound to issue {issue}; wait with filter=topic:{issue} or without a filter"
        ))
        .into()),
        (Some(issue), _) => Ok(Some(issue.clone())),
        (None, topic) => Ok(topic),
    }
}

fn batch_json(events: &[Arc<JournalEvent>], next_since: u64) -> String {
    let size: usize = events.iter().map(|e| e.json.get().len() + 1).sum();
    let mut out = String::with_capacity(size + 40);
    out.push_str("{\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e.json.get());
    }
    out.push_str("],\"next_since\":");
    out.push_str(&next_since.to_string());
    out.push('}');
    out
}

pub async fn wait_events(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath(event_type): ApiPath<EventType>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Response, ApiError> {
    claims.require(Scope::EventsWait)?;
    let filter = EventFilter {
        event_type: Some(event_type.to_string()),
        topic: scoped_topic(&claims, parse_filter(q.filter.as_deref())?)?,
    };
    let timeout = Duration::from_millis(q.timeout.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
    let (events, next) = s
        .journal()
        .wait(&filter, q.since, timeout, s.inner.stopping.clone())
        .await?;
    Ok(json_response(StatusCode::OK, batch_json(&events, next)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    since: Option<u64>,
    event_type: Option<EventType>,
    filter: Option<String>,
    /// `false`: end the stream once the journal's current events are sent.
    follow: Option<bool>,
}

struct StreamState {
    s: SidecarState,
    since: u64,
    filter: EventFilter,
    buf: VecDeque<Arc<JournalEvent>>,
    rx: tokio::sync::watch::Receiver<u64>,
    follow: bool,
    done: bool,
    _sub: Subscription,
}

pub async fn stream_events(
    claims: Claims,
    State(s): State<SidecarState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    claims.require(Scope::EventsWait)?;
    let filter = EventFilter {
        event_type: q.event_type.map(|t| t.to_string()),
        topic: scoped_topic(&claims, parse_filter(q.filter.as_deref())?)?,
    };
    // A reconnecting EventSource sends the last id it saw.
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut rx = s.journal().watch_head();
    rx.borrow_and_update();
    let since = q.since.or(last_id).unwrap_or_else(|| s.journal().head());
    let floor = s.journal().floor();
    if since < floor {
        return Err(JournalError::Gone { since, floor }.into());
    }
    let head = s.journal().head();
    if since > head {
        return Err(JournalError::Ahead { since, head }.into());
    }
    let state = StreamState {
        _sub: Subscription::new(s.journal()),
        s,
        since,
        filter,
        buf: VecDeque::new(),
        rx,
        follow: q.follow.unwrap_or(true),
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let mut stopping = st.s.inner.stopping.clone();
        loop {
            if st.done {
                return None;
            }
            if let Some(e) = st.buf.pop_front() {
                let ev = SseEvent::default()
                    .id(e.seq.to_string())
                    .event(e.event_type.as_str())
                    .data(e.json.get());
                return Some((Ok::<_, Infallible>(ev), st));
            }
            if stopping.is_stopping() {
                return None;
            }
            match st
                .s
                .journal()
                .read(st.since, &st.filter, super::journal::MAX_EVENTS_PER_ANSWER)
                .await
            {
                Ok((events, next)) => {
                    st.since = next;
                    if !events.is_empty() {
                        st.buf.extend(events);
                        continue;
                    }
                    if !st.follow {
                        return None;
                    }
                }
                Err(e) => {
                    // Report once, then end: the client reconnects with a fresh cursor.
                    st.done = true;
                    let ev = SseEvent::default()
                        .event("error")
                        .data(ApiError::from(e).to_string());
                    return Some((Ok(ev), st));
                }
            }
            tokio::select! {
                changed = st.rx.changed() => if changed.is_err() { return None },
                _ = stopping.wait() => return None,
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

pub async fn agent_status(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath(agent_id): ApiPath<AgentId>,
    ApiJson(update): ApiJson<AgentStatusUpdate>,
) -> Result<Response, ApiError> {
    claims.require(Scope::AgentsWrite)?;
    claims.check_binding(
        Some(update.issue_id.as_str()),
        Some(update.agent_type.as_str()),
    )?;
    if let Some(m) = &update.message
        && m.len() > 4096
    {
        return Err(ApiError::BadRequest(
            "`message` must be at most 4096 bytes".into(),
        ));
    }
    // Lifecycle edges other agents may wait for; `agent_completed` comes from the stored
    // result, which carries what the agent produced.
    let lifecycle = match update.status {
        AgentState::Started => Some(AGENT_STARTED),
        AgentState::Failed => Some(AGENT_FAILED),
        AgentState::Running | AgentState::Completed => None,
    };
    let data = json!({
        "agent_id": agent_id,
        "agent_type": update.agent_type,
        "issue_id": update.issue_id,
        "status": update.status.as_str(),
        "message": update.message,
    });
    let topic = update.issue_id.to_string();
    let record = s.journal().set_agent(agent_id.clone(), update).await?;
    if let Some(event_type) = lifecycle {
        s.journal()
            .publish(NewEvent {
                event_type: EventType::parse(event_type).expect("valid event type"),
                publisher: agent_id.to_string(),
                topic,
                data,
                correlation_id: None,
            })
            .await?;
    }
    Ok(Json(record).into_response())
}

pub async fn list_agents(
    claims: Claims,
    State(s): State<SidecarState>,
) -> Result<Json<AgentList>, ApiError> {
    claims.require(Scope::AgentsRead)?;
    // A token bound to an issue or agent type sees only those agents.
    let agents: Vec<_> = s
        .journal()
        .agents()
        .into_iter()
        .filter(|a| {
            claims
                .check_binding(Some(a.issue_id.as_str()), Some(a.agent_type.as_str()))
                .is_ok()
        })
        .collect();
    let counts = super::journal::counts(agents.iter());
    Ok(Json(AgentList { agents, counts }))
}
