//! Handlers of the coordination routes (issue 10): file leases, each agent's inbox and the
//! per-issue join. Every route is scoped by the token's issue binding, like the others.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::SidecarState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery, RequireScope};
use super::leases::{LeaseError, now_ms, relative_to};
use super::routes::{DEFAULT_WAIT_MS, MAX_WAIT_MS};
use super::store::{self, InboxRequest};
use crate::api::leases::{
    AgentOutcome, InboxBatch, Lease, LeaseCheck, LeaseList, ReleaseRequest, Released, RenewRequest,
    ReserveOutcome, ReserveRequest, WaitAllAnswer,
};
use crate::api::sidecar::{AgentRecord, StoredResult};
use crate::api::{AgentId, AgentType, IssueId};
use crate::auth::{AuthError, Claims, Scope};

/// Longest result summary a `wait_all` answer carries per agent.
pub const MAX_SUMMARY_CHARS: usize = 400;

impl From<LeaseError> for ApiError {
    fn from(e: LeaseError) -> Self {
        match e {
            LeaseError::Invalid(m) => ApiError::BadRequest(m),
            LeaseError::NotFound(_) => ApiError::NotFound(e.to_string()),
            LeaseError::NotHolder { .. } => AuthError::OutOfScope(e.to_string()).into(),
            LeaseError::Store(e) => e.into(),
            LeaseError::Conflict(_) => ApiError::BadRequest(e.to_string()),
        }
    }
}

/// The registered agent `agent`, refused when it belongs to another issue or lies outside
/// the token's agent-type binding.
fn registered(
    s: &SidecarState,
    claims: &Claims,
    issue: &IssueId,
    agent: &AgentId,
) -> Result<Option<AgentRecord>, ApiError> {
    let Some(rec) = s.store().agent(agent) else {
        return Ok(None);
    };
    if rec.issue_id != *issue {
        return Err(AuthError::OutOfScope(format!(
            "agent {agent} belongs to issue {}, not {issue}",
            rec.issue_id
        ))
        .into());
    }
    claims.check_binding(None, Some(rec.agent_type.as_str()))?;
    Ok(Some(rec))
}

/// Whether an agent still runs: unregistered agents (a script, a main session) count as
/// running; completed or failed ones do not, so their leases stop blocking.
fn alive(s: &SidecarState) -> impl Fn(&AgentId) -> bool + '_ {
    move |a| s.store().agent(a).is_none_or(|r| r.status.is_active())
}

/// `POST /api/leases/{issue}`: 201 with the lease, 409 with the leases in the way.
pub async fn reserve(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath(issue): ApiPath<IssueId>,
    ApiJson(req): ApiJson<ReserveRequest>,
) -> Result<Response, ApiError> {
    claims.require(Scope::AgentsWrite)?;
    claims.check_binding(Some(issue.as_str()), None)?;
    let agent_type = registered(&s, &claims, &issue, &req.agent)?.map(|r| r.agent_type);
    // Leases of finished agents are dropped first: they would refuse for nobody.
    let finished: Vec<AgentId> = s
        .store()
        .leases(Some(&issue), now_ms())
        .into_iter()
        .map(|l| l.agent_id)
        .filter(|a| !alive(&s)(a))
        .collect();
    for a in &finished {
        s.store().release_agent(&issue, a).await?;
    }
    let out = s.store().reserve(&issue, &req, agent_type, now_ms()).await;
    match out {
        Ok(lease) => Ok((
            StatusCode::CREATED,
            Json(ReserveOutcome {
                granted: true,
                lease: Some(lease),
                conflicts: Vec::new(),
            }),
        )
            .into_response()),
        Err(store::Error::Lease(LeaseError::Conflict(conflicts))) => {
            let message = LeaseError::Conflict(conflicts.clone()).to_string();
            Ok((
                StatusCode::CONFLICT,
                Json(json!({
                    "error": {"code": "lease_conflict", "message": message},
                    "granted": false,
                    "conflicts": conflicts,
                })),
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/leases`: every live lease the token may see.
pub async fn list_all(
    claims: Claims,
    State(s): State<SidecarState>,
) -> Result<Json<LeaseList>, ApiError> {
    claims.require(Scope::AgentsRead)?;
    let leases = s
        .store()
        .leases(None, now_ms())
        .into_iter()
        .filter(|l| {
            claims
                .check_binding(Some(l.issue_id.as_str()), None)
                .is_ok()
        })
        .collect();
    Ok(Json(LeaseList { leases }))
}

/// `GET /api/leases/{issue}`.
pub async fn list(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath(issue): ApiPath<IssueId>,
) -> Result<Json<LeaseList>, ApiError> {
    claims.require(Scope::AgentsRead)?;
    claims.check_binding(Some(issue.as_str()), None)?;
    Ok(Json(LeaseList {
        leases: s.store().leases(Some(&issue), now_ms()),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckQuery {
    path: String,
    agent: Option<AgentId>,
}

/// `GET /api/leases/{issue}/check?path=…&agent=…`: the live exclusive lease of another
/// running agent covering `path` (relative to the project, or absolute inside the token's
/// project).
pub async fn check(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath(issue): ApiPath<IssueId>,
    ApiQuery(q): ApiQuery<CheckQuery>,
) -> Result<Json<LeaseCheck>, ApiError> {
    claims.require(Scope::AgentsRead)?;
    claims.check_binding(Some(issue.as_str()), None)?;
    if s.store().leases_empty() {
        return Ok(Json(LeaseCheck {
            path: q.path,
            blocked: false,
            holder: None,
        }));
    }
    // A path outside the project cannot be leased, so nothing blocks it.
    let root = claims.project.as_deref().map(std::path::Path::new);
    let canonical = root.and_then(|r| std::fs::canonicalize(r).ok());
    let Some(rel) =
        relative_to(root, &q.path).or_else(|| relative_to(canonical.as_deref(), &q.path))
    else {
        return Ok(Json(LeaseCheck {
            path: q.path,
            blocked: false,
            holder: None,
        }));
    };
    let holder = s
        .store()
        .exclusive_holder(&issue, &rel, q.agent.as_ref(), &alive(&s), now_ms());
    Ok(Json(LeaseCheck {
        path: rel,
        blocked: holder.is_some(),
        holder,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseQuery {
    agent: Option<AgentId>,
}

async fn release_one(
    claims: Claims,
    s: SidecarState,
    issue: IssueId,
    lease_id: String,
    agent: Option<AgentId>,
) -> Result<Json<Released>, ApiError> {
    claims.require(Scope::AgentsWrite)?;
    claims.check_binding(Some(issue.as_str()), None)?;
    let lease: Lease = s
        .store()
        .release(&issue, &lease_id, agent.as_ref(), now_ms())
        .await?;
    Ok(Json(Released {
        released: vec![lease.lease_id],
    }))
}

/// `DELETE /api/leases/{issue}/{lease_id}?agent=…` (without `agent`: forced).
pub async fn release_delete(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath((issue, lease_id)): ApiPath<(IssueId, String)>,
    ApiQuery(q): ApiQuery<ReleaseQuery>,
) -> Result<Json<Released>, ApiError> {
    release_one(claims, s, issue, lease_id, q.agent).await
}

/// `POST /api/leases/{issue}/{lease_id}/release` with `{"agent": …}` (or `{}`: forced).
pub async fn release_post(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath((issue, lease_id)): ApiPath<(IssueId, String)>,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<Json<Released>, ApiError> {
    release_one(claims, s, issue, lease_id, req.agent).await
}

/// `POST /api/leases/{issue}/{lease_id}/renew`.
pub async fn renew(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath((issue, lease_id)): ApiPath<(IssueId, String)>,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<Lease>, ApiError> {
    claims.require(Scope::AgentsWrite)?;
    claims.check_binding(Some(issue.as_str()), None)?;
    let lease = s
        .store()
        .renew(&issue, &lease_id, &req.agent, req.ttl_secs, now_ms())
        .await?;
    Ok(Json(lease))
}

/// `POST /api/leases/{issue}/agents/{agent_id}/release`: everything the agent holds
/// (SubagentStop calls it).
pub async fn release_agent(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath((issue, agent)): ApiPath<(IssueId, AgentId)>,
) -> Result<Json<Released>, ApiError> {
    claims.require(Scope::AgentsWrite)?;
    claims.check_binding(Some(issue.as_str()), None)?;
    registered(&s, &claims, &issue, &agent)?;
    let released = s.store().release_agent(&issue, &agent).await?;
    Ok(Json(Released { released }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxQuery {
    /// The agent's type when the registry does not know it yet.
    agent_type: Option<AgentType>,
}

/// `GET /api/inbox/{issue}/{agent_id}`: the events addressed to the agent since its last
/// delivery (cursor advanced atomically).
pub async fn inbox(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath((issue, agent)): ApiPath<(IssueId, AgentId)>,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> Result<Json<InboxBatch>, ApiError> {
    claims.require(Scope::EventsWait)?;
    claims.check_binding(Some(issue.as_str()), None)?;
    let rec = registered(&s, &claims, &issue, &agent)?;
    let head = s.store().head();
    let delivery = s
        .store()
        .deliver(
            InboxRequest {
                issue: issue.clone(),
                agent: agent.clone(),
                agent_type: rec.as_ref().map(|r| r.agent_type.clone()).or(q.agent_type),
                registered_at: rec.as_ref().map(|r| r.started_at.clone()),
            },
            head,
        )
        .await?;
    Ok(Json(InboxBatch {
        issue_id: issue,
        agent_id: agent,
        events: delivery.events,
        more: delivery.more,
        cursor: delivery.cursor,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitAllQuery {
    /// Comma-separated agent types; without it, every agent of the issue.
    types: Option<String>,
    timeout: Option<u64>,
}

/// The start of a stored result's `summary`, `message` or JSON.
fn summarize(json: &str) -> (Option<String>, Option<String>) {
    let Ok(stored) = serde_json::from_str::<StoredResult>(json) else {
        return (None, None);
    };
    let r = &stored.result;
    let status = r.get("status").and_then(|v| v.as_str()).map(String::from);
    let text = ["summary", "message", "output"]
        .iter()
        .find_map(|k| r.get(*k).and_then(|v| v.as_str()).map(String::from))
        .unwrap_or_else(|| r.to_string());
    let summary = if text.chars().count() > MAX_SUMMARY_CHARS {
        let mut t: String = text.chars().take(MAX_SUMMARY_CHARS - 1).collect();
        t.push('…');
        t
    } else {
        text
    };
    (status, Some(summary))
}

/// The awaited agents now, and whether the join is complete.
fn snapshot(
    s: &SidecarState,
    claims: &Claims,
    issue: &IssueId,
    types: &[AgentType],
) -> (Vec<AgentRecord>, Vec<AgentType>, bool) {
    let agents: Vec<AgentRecord> = s
        .store()
        .agents()
        .into_iter()
        .filter(|a| a.issue_id == *issue)
        .filter(|a| types.is_empty() || types.contains(&a.agent_type))
        .filter(|a| {
            claims
                .check_binding(None, Some(a.agent_type.as_str()))
                .is_ok()
        })
        .collect();
    let missing: Vec<AgentType> = types
        .iter()
        .filter(|t| !agents.iter().any(|a| a.agent_type == **t))
        .cloned()
        .collect();
    let done = missing.is_empty() && agents.iter().all(|a| !a.status.is_active());
    (agents, missing, done)
}

/// `GET /api/agents/wait_all/{issue}?types=a,b&timeout=MS`: returns when every awaited
/// agent completed or failed (named types need at least one registered agent each), or at
/// the timeout. Woken by the journal's commits, not by polling.
pub async fn wait_all(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath(issue): ApiPath<IssueId>,
    ApiQuery(q): ApiQuery<WaitAllQuery>,
) -> Result<Json<WaitAllAnswer>, ApiError> {
    claims.require(Scope::AgentsRead)?;
    claims.check_binding(Some(issue.as_str()), None)?;
    let types = q
        .types
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(AgentType::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = Duration::from_millis(q.timeout.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut commits = s.store().watch_head();
    let mut stopping = s.inner.stopping.clone();
    let _sub = s.store().subscription();
    let (agents, missing, done, timed_out) = loop {
        commits.borrow_and_update();
        let (agents, missing, done) = snapshot(&s, &claims, &issue, &types);
        if done || stopping.is_stopping() {
            break (agents, missing, done, false);
        }
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { break (agents, missing, done, false) },
            _ = tokio::time::sleep_until(deadline) => {
                let (agents, missing, done) = snapshot(&s, &claims, &issue, &types);
                break (agents, missing, done, !done);
            }
            _ = stopping.wait() => break (agents, missing, done, false),
        }
    };
    let mut outcomes = Vec::with_capacity(agents.len());
    for a in agents {
        let (result_status, summary) = s
            .store()
            .result_of(&issue, &a.agent_type, &a.agent_id)
            .await?
            .map_or((None, None), |j| summarize(&j));
        outcomes.push(AgentOutcome {
            agent_id: a.agent_id,
            agent_type: a.agent_type,
            status: a.status,
            result_status,
            summary,
        });
    }
    Ok(Json(WaitAllAnswer {
        issue_id: issue,
        done,
        timed_out,
        agents: outcomes,
        missing_types: missing,
    }))
}
