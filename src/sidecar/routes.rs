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

use super::context::{ContextError, ProjectRefused, check_project};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery, RequireScope};
use super::journal::{EventFilter, JournalError, JournalEvent, NewEvent};
use super::metrics::HealthInputs;
use super::results::StoreError;
use super::store::{PutResult, Subscription};
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
pub use super::store::AGENT_COMPLETED;
/// The events an agent status update publishes.
pub const AGENT_STARTED: &str = "agent_started";
pub const AGENT_FAILED: &str = "agent_failed";
/// Deepest JSON a result or event may carry: contexts and event batches embed it a few
/// levels down, and JSON parsers (serde_json among them) stop at 128.
pub const MAX_JSON_DEPTH: usize = 64;
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
            JournalError::Commit(cause) => ApiError::JournalFailed {
                reason: cause
                    .sqlite_error()
                    .map_or_else(|| "database error".to_string(), |f| f.to_string()),
            },
            e => ApiError::internal(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull(_) => ApiError::DiskFull,
            e => ApiError::Storage {
                message: e.to_string(),
            },
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

pub async fn health(State(s): State<SidecarState>) -> Response {
    let mut probes = s.inner.probes.read().expect("probes lock").clone();
    // The last result write failed where the probe succeeded (a blocked or foreign path).
    if probes.storage == "healthy" && s.store().results_failing() {
        probes.storage = "degraded";
    }
    let healthy = probes.storage == "healthy" && probes.event_bus == "healthy";
    let inputs = HealthInputs {
        probes,
        uptime_seconds: s.inner.started.elapsed().as_secs(),
        active_agents: s.store().agent_counts().active,
        event_queue_size: s.store().pending(),
    };
    let body = s.inner.health.body(inputs, |i| {
        let health = SidecarHealth {
            status: if healthy { "healthy" } else { "unhealthy" }.into(),
            service: SERVICE.into(),
            version: VERSION.into(),
            uptime_seconds: i.uptime_seconds,
            checks: HealthChecks {
                storage: i.probes.storage.into(),
                event_bus: i.probes.event_bus.into(),
                memory_usage_mb: i.probes.memory_mb,
                active_agents: i.active_agents,
                event_queue_size: i.event_queue_size,
            },
        };
        serde_json::to_vec(&health).expect("the health body serializes")
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub async fn status(State(s): State<SidecarState>) -> Json<SidecarStatus> {
    let j = s.store();
    let bytes = j.bytes();
    let perf = s.metrics().summary();
    Json(SidecarStatus {
        agents: j.agent_counts(),
        storage: StorageStats {
            context_cache_entries: s.inner.context.cache_entries() as u64,
            results_stored: j.results_stored(),
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
pub(super) fn project_root(
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
    // A project whose context is not ready in time (huge, hostile, or many waiting) is
    // answered with an empty, truncated project part rather than holding the agent.
    let project = match s
        .inner
        .context
        .project(root.clone(), agent_type.clone())
        .await
    {
        Ok(built) => Some(built),
        Err(ContextError::NoProject(p)) => {
            return Err(ApiError::NotFound(ContextError::NoProject(p).to_string()));
        }
        Err(e @ ContextError::Busy(_)) => {
            tracing::warn!(error = %e, "answering without the project's context");
            None
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let results = s.store().results(&issue_id).await?;
    let body = blocking(move || -> Result<String, ApiError> {
        let degraded;
        let (project_json, project_truncated) = match &project {
            Some(b) => (b.json.as_str(), b.truncated),
            None => {
                degraded = s.inner.context.degraded(&root, &agent_type);
                (degraded.as_str(), true)
            }
        };
        let budget = s.inner.context.budget();
        let mut out = String::with_capacity(project_json.len() + 512);
        out.push_str("{\"issue_id\":\"");
        out.push_str(issue_id.as_str()); // validated: nothing to escape
        out.push_str("\",\"agent_type\":\"");
        out.push_str(agent_type.as_str());
        out.push_str("\",\"project\":");
        out.push_str(project_json);
        out.push_str(",\"previous_results\":[");
        let mut truncated = project_truncated;
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

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`]: it could not be embedded again in a
/// context or an event batch that clients parse.
fn check_depth(what: &str, v: &serde_json::Value) -> Result<(), ApiError> {
    fn depth(v: &serde_json::Value, limit: usize) -> bool {
        if limit == 0 {
            return false;
        }
        match v {
            serde_json::Value::Array(a) => a.iter().all(|x| depth(x, limit - 1)),
            serde_json::Value::Object(o) => o.values().all(|x| depth(x, limit - 1)),
            _ => true,
        }
    }
    if depth(v, MAX_JSON_DEPTH) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "`{what}` is nested deeper than {MAX_JSON_DEPTH} levels; flatten it and retry"
        )))
    }
}

pub async fn store_result(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiJson(sub): ApiJson<ResultSubmission>,
) -> Result<Response, ApiError> {
    claims.require(Scope::ResultsWrite)?;
    claims.check_binding(Some(sub.issue_id.as_str()), Some(sub.agent_type.as_str()))?;
    match sub.result.get("status") {
        Some(serde_json::Value::String(st)) if !st.is_empty() => {}
        _ => {
            return Err(ApiError::BadRequest(
                "`result` must be an object with a `status` string".into(),
            ));
        }
    }
    check_depth("result", &sub.result)?;
    let stored = StoredResult {
        agent_id: sub.agent_id,
        agent_type: sub.agent_type,
        issue_id: sub.issue_id,
        result: sub.result,
        stored_at: super::journal::rfc3339_now(),
    };
    let (issue_id, agent_type) = (stored.issue_id.clone(), stored.agent_type.clone());
    let (status, path, event) = match s.store().put_result(stored).await? {
        PutResult::Unchanged { path } => (StatusCode::OK, path, None),
        PutResult::Stored { path, event } => (StatusCode::CREATED, path, Some(event)),
    };
    let body = ResultStored {
        stored: true,
        path,
        issue_id,
        agent_type,
        event_id: event.as_ref().map(|e| e.event().event_id),
        seq: event.as_ref().map(|e| e.seq),
        unchanged: event.is_none(),
    };
    Ok((status, Json(body)).into_response())
}

pub async fn list_results(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath(issue_id): ApiPath<IssueId>,
) -> Result<Response, ApiError> {
    claims.require(Scope::ResultsRead)?;
    claims.check_binding(Some(issue_id.as_str()), None)?;
    let results = s.store().results(&issue_id).await?;
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
    if !topic_allowed(&claims, &req.topic) {
        return Err(AuthError::OutOfScope(format!(
            "token is bound to {}; publish with \"topic\": {}",
            binding_label(&claims),
            allowed_topics(&claims)
        ))
        .into());
    }
    if let Some(c) = &req.correlation_id {
        check_label("correlation_id", c, false)?;
    }
    check_depth("data", &req.data)?;
    let event = s
        .store()
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

/// Topics a bound token may publish to and wait on: an issue-bound token its issue's
/// (the broadcast topic), an agent-type-bound token its type's (its inbox), a token bound
/// to both either one. An unbound token any.
fn topic_allowed(claims: &Claims, topic: &str) -> bool {
    match (&claims.issue_id, &claims.agent_type) {
        (None, None) => true,
        (issue, ty) => issue.as_deref() == Some(topic) || ty.as_deref() == Some(topic),
    }
}

fn allowed_topics(claims: &Claims) -> String {
    [&claims.issue_id, &claims.agent_type]
        .into_iter()
        .flatten()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(" or ")
}

fn binding_label(claims: &Claims) -> String {
    let mut parts = Vec::new();
    if let Some(i) = &claims.issue_id {
        parts.push(format!("issue {i}"));
    }
    if let Some(t) = &claims.agent_type {
        parts.push(format!("agent type {t}"));
    }
    parts.join(" and ")
}

/// The topic a reader may see: a bound token reads only its topics (see `topic_allowed`);
/// without a filter it reads its issue's topic, or its type's when bound to no issue.
pub(super) fn scoped_topic(
    claims: &Claims,
    asked: Option<String>,
) -> Result<Option<String>, ApiError> {
    match asked {
        Some(topic) if !topic_allowed(claims, &topic) => Err(AuthError::OutOfScope(format!(
            "token is bound to {}; wait with filter=topic:NAME for {} or without a filter",
            binding_label(claims),
            allowed_topics(claims)
        ))
        .into()),
        Some(topic) => Ok(Some(topic)),
        None => Ok(claims
            .issue_id
            .clone()
            .or_else(|| claims.agent_type.clone())),
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
        .store()
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
    let mut rx = s.store().watch_head();
    rx.borrow_and_update();
    let since = q.since.or(last_id).unwrap_or_else(|| s.store().head());
    s.store().check_cursor(since)?;
    let state = StreamState {
        _sub: s.store().subscription(),
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
                .store()
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
    // A bound token may only touch records of its own issue and type: it could otherwise
    // move another issue's agent to its own and mark it failed.
    if let Some(existing) = s.store().agent(&agent_id) {
        claims
            .check_binding(
                Some(existing.issue_id.as_str()),
                Some(existing.agent_type.as_str()),
            )
            .map_err(|_| {
                AuthError::OutOfScope(format!(
                    "agent {agent_id} belongs to issue {} ({}), outside this token's binding",
                    existing.issue_id, existing.agent_type
                ))
            })?;
    }
    let topic = update.issue_id.to_string();
    let record = s.store().set_agent(agent_id.clone(), update).await?;
    if let Some(event_type) = lifecycle {
        s.store()
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
        .store()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Keys;
    use crate::paths::Paths;
    use crate::roster::Roster;
    use crate::secret::Secret;
    use crate::server::{Stopper, Tracker};

    fn state(dir: &Path, stopper: &Stopper) -> SidecarState {
        let paths = Paths {
            config_file: dir.join("cfg/daemon.toml"),
            runtime_dir: dir.join("run"),
            data_dir: dir.join("data"),
        };
        SidecarState::open(
            crate::config::SidecarConfig::default(),
            &paths,
            Keys::new(&Secret::from_bytes(vec![7; 32])).unwrap(),
            Roster::builtin().unwrap(),
            Arc::new(Tracker::default()),
            stopper.subscribe(),
        )
        .unwrap()
    }

    fn claims() -> Claims {
        Claims {
            iss: "cco".into(),
            aud: "cco-sidecar".into(),
            sub: "test".into(),
            iat: 0,
            exp: u64::MAX,
            scope: Scope::ALL.map(|s| s.as_str()).join(" "),
            project: None,
            issue_id: None,
            agent_type: None,
        }
    }

    /// `unchanged` only when the result's event exists: a result still pending (its event
    /// failed and its undo too) is announced on the next identical submission.
    #[tokio::test]
    async fn unchanged_only_when_the_event_exists() {
        let dir = tempfile::tempdir().unwrap();
        let stopper = Stopper::default();
        let s = state(dir.path(), &stopper);
        let sub: ResultSubmission = serde_json::from_value(json!({
            "agent_id": "a-1", "agent_type": "t", "issue_id": "i",
            "result": {"status": "ok"}
        }))
        .unwrap();
        let post = || store_result(claims(), State(s.clone()), ApiJson(sub.clone()));
        assert_eq!(post().await.unwrap().status(), StatusCode::CREATED);
        assert_eq!(post().await.unwrap().status(), StatusCode::OK);
        // What a failed announcement with a failed undo leaves: stored, still pending.
        let super::super::store::Store::Sqlite(sq) = s.store() else {
            unreachable!("SidecarState::open is the SQLite backend")
        };
        let stored = sq
            .results_store()
            .get_agent(&sub.issue_id, &sub.agent_type, &sub.agent_id)
            .unwrap();
        let key = format!("{}/{}/{}", sub.issue_id, sub.agent_type, sub.agent_id);
        sq.journal()
            .intend(crate::sidecar::journal::PendingResult {
                key: key.clone(),
                json: stored.to_string(),
            })
            .await
            .unwrap();
        let head = sq.journal().head();
        assert_eq!(post().await.unwrap().status(), StatusCode::CREATED);
        assert_eq!(sq.journal().head(), head + 1);
        assert!(!sq.journal().is_pending(&key));
        assert_eq!(post().await.unwrap().status(), StatusCode::OK);
        s.close();
    }
}
