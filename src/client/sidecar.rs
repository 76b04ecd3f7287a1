//! The one typed client of cco's local services (pueue's shape): requests and answers are
//! the `api` types the servers use, errors are decoded `ErrorBody`s, and the check that the
//! port belongs to this user is made once per client, before any token leaves.

use std::io::{self, BufRead, Read};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ClientError, Request, Streaming};
use crate::api::cost::{CostBy, CostOutcomes, CostRecords, CostRecordsStored, CostReport};
use crate::api::inert;
use crate::api::leases::{
    InboxBatch, Lease, LeaseCheck, LeaseList, ReleaseRequest, Released, RenewRequest,
    ReserveOutcome, ReserveRequest, WaitAllAnswer,
};
use crate::api::sidecar::{
    AgentList, AgentRecord, AgentStatusUpdate, Context, Event, EventBatch, PublishRequest,
    ResultList, ResultStored, ResultSubmission, SidecarHealth, SidecarStatus,
};
use crate::api::told::{AgentDetail, ToldContext, ToldReport};
use crate::api::{
    AgentId, AgentType, DaemonHealth, DaemonStatus, ErrorBody, EventType, HealthSummary, IssueId,
};

/// Long enough for a socket-activated cold start, short enough for a script.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest error text kept from an answer that is not an `ErrorBody`.
const MAX_RAW_ERROR: usize = 300;

/// Why a call to a local service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Another local user listens on the port: nothing is sent, nothing it says is trusted.
    #[error(
        "127.0.0.1:{port} is held by another user (uid {uid}), not by your cco — see `ss -ltnp 'sport = :{port}'`; change the port in your config if it is legitimately theirs"
    )]
    Foreign { port: u16, uid: u32 },
    #[error(
        "no token for the sidecar (not launched by cco: ORCHESTRATOR_TOKEN is unset) — start Claude with `cco`, or mint one with `cco token`"
    )]
    NoToken,
    /// No answer: refused, timed out, or the connection broke.
    #[error("{source}")]
    Unreachable {
        port: u16,
        #[source]
        source: ClientError,
    },
    /// The service answered with its JSON error.
    #[error("HTTP {status}: {}", inert::line(&body.error.message))]
    Api { status: u16, body: ErrorBody },
    /// The answer was not the contract's shape.
    #[error("HTTP {status}: {}", inert::line(detail))]
    Protocol { status: u16, detail: String },
}

impl ServiceError {
    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ServiceError::Api { status, .. } | ServiceError::Protocol { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The error's `code`, when the service answered with an `ErrorBody`.
    pub fn code(&self) -> Option<&str> {
        match self {
            ServiceError::Api { body, .. } => Some(&body.error.code),
            _ => None,
        }
    }

    /// No answer in time: the call's limit, or the client's deadline, passed.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ServiceError::Unreachable {
                source: ClientError::Timeout,
                ..
            }
        )
    }

    /// Down, or (re)starting: worth retrying later, unlike a refusal.
    pub fn is_transient(&self) -> bool {
        matches!(self, ServiceError::Unreachable { .. }) || self.status().is_some_and(|s| s >= 500)
    }
}

/// The parts both services' clients share: where, how long, and whose port it is.
struct Local {
    port: u16,
    timeout: Duration,
    deadline: Option<Instant>,
    /// Another user's uid on the port, looked up on first use.
    foreign: OnceLock<Option<u32>>,
}

impl Local {
    /// The same connection settings, allowed `wait` more for a long poll to answer.
    fn waiting(&self, wait: Duration) -> Local {
        Local {
            port: self.port,
            timeout: self.timeout + wait,
            deadline: self.deadline,
            foreign: self.foreign.clone(),
        }
    }

    fn new(port: u16) -> Local {
        Local {
            port,
            timeout: DEFAULT_TIMEOUT,
            deadline: None,
            foreign: OnceLock::new(),
        }
    }

    fn check_owner(&self) -> Result<(), ServiceError> {
        match *self
            .foreign
            .get_or_init(|| super::foreign_listener(self.port))
        {
            Some(uid) => Err(ServiceError::Foreign {
                port: self.port,
                uid,
            }),
            None => Ok(()),
        }
    }

    /// The time one call may take: the timeout, cut to what is left before the deadline.
    fn budget(&self) -> Result<Duration, ServiceError> {
        let Some(deadline) = self.deadline else {
            return Ok(self.timeout);
        };
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left.min(self.timeout)),
            _ => Err(ServiceError::Unreachable {
                port: self.port,
                source: ClientError::Timeout,
            }),
        }
    }

    fn unreachable(&self, source: ClientError) -> ServiceError {
        ServiceError::Unreachable {
            port: self.port,
            source,
        }
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<T, ServiceError> {
        let (status, body) = self.raw(method, path, token, body)?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&body).map_err(|e| ServiceError::Protocol {
                status,
                detail: format!("{method} {path}: the answer does not match the contract: {e}"),
            })
        } else {
            Err(decode_error(status, &body))
        }
    }

    /// One request; the status and body of whatever answered.
    fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), ServiceError> {
        self.check_owner()?;
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let req = Request {
            method,
            path,
            headers: &headers,
            body: body.as_deref(),
        };
        let resp = super::send(super::local(self.port), &req, self.budget()?)
            .map_err(|e| self.unreachable(e))?;
        Ok((resp.status, resp.body))
    }
}

/// An error answer: its `ErrorBody`, else its text, else the status's reason.
pub fn decode_error(status: u16, body: &[u8]) -> ServiceError {
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(body) {
        return ServiceError::Api { status, body };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let detail = if text.is_empty() {
        axum::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no reason given")
            .to_string()
    } else {
        text.chars().take(MAX_RAW_ERROR).collect()
    };
    ServiceError::Protocol { status, detail }
}

fn to_json(body: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(body).expect("wire types serialize")
}

/// `GET /health` of whichever cco service listens on `port`: what both answer.
pub fn health_summary(port: u16, timeout: Duration) -> Result<HealthSummary, ServiceError> {
    let mut local = Local::new(port);
    local.timeout = timeout;
    local.call("GET", "/health", None, None)
}

/// The daemon's open routes (`/health`, `/status`).
pub struct DaemonClient {
    local: Local,
}

impl DaemonClient {
    pub fn new(port: u16) -> DaemonClient {
        DaemonClient {
            local: Local::new(port),
        }
    }
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.local.timeout = timeout;
        self
    }
    pub fn port(&self) -> u16 {
        self.local.port
    }
    pub fn health(&self) -> Result<DaemonHealth, ServiceError> {
        self.local.call("GET", "/health", None, None)
    }
    pub fn status(&self) -> Result<DaemonStatus, ServiceError> {
        self.local.call("GET", "/status", None, None)
    }
    /// `POST /dashboard/code`: a one-time dashboard login link (`cco dashboard`).
    pub fn login_code(&self, token: &str) -> Result<crate::api::views::LoginCode, ServiceError> {
        self.local
            .call("POST", "/dashboard/code", Some(token), Some(b"{}".to_vec()))
    }
}

/// The sidecar's HTTP contract (DESIGN.md, "Sidecar (:3001)"), one method per route.
pub struct SidecarClient {
    local: Local,
    token: Option<String>,
}

impl std::fmt::Debug for SidecarClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarClient")
            .field("port", &self.local.port)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("timeout", &self.local.timeout)
            .finish()
    }
}

impl SidecarClient {
    pub fn new(port: u16) -> SidecarClient {
        SidecarClient {
            local: Local::new(port),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` on `/api/*` calls.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Each call's own limit (connect, and each read or write).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.local.timeout = timeout;
        self
    }

    /// The port is known to be this user's (the daemon checked it moments ago): no
    /// `/proc/net/tcp` read before the first call.
    pub fn with_owner_verified(mut self) -> Self {
        self.local.foreign = OnceLock::from(None);
        self
    }

    /// One limit for every call this client makes (a hook's whole budget).
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.local.deadline = Some(deadline);
        self
    }

    pub fn port(&self) -> u16 {
        self.local.port
    }

    fn api<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ServiceError> {
        let token = self.token.as_deref().ok_or(ServiceError::NoToken)?;
        self.local.call(method, path, Some(token), body)
    }

    /// `GET /health` (open).
    pub fn health(&self) -> Result<SidecarHealth, ServiceError> {
        self.local.call("GET", "/health", None, None)
    }

    /// `GET /status` (open).
    pub fn status(&self) -> Result<SidecarStatus, ServiceError> {
        self.local.call("GET", "/status", None, None)
    }

    /// `GET /api/context/{issue}/{agent_type}`.
    pub fn context(
        &self,
        issue: &IssueId,
        agent_type: &AgentType,
    ) -> Result<Context, ServiceError> {
        self.api("GET", &format!("/api/context/{issue}/{agent_type}"), None)
    }

    /// `GET /api/results/{issue}`.
    pub fn results(&self, issue: &IssueId) -> Result<ResultList, ServiceError> {
        self.api("GET", &format!("/api/results/{issue}"), None)
    }

    /// `GET /api/views/tree`: one page of issues → agents (the dashboard's tree).
    pub fn view_tree(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<crate::api::views::TreePage, ServiceError> {
        self.api(
            "GET",
            &format!("/api/views/tree?offset={offset}&limit={limit}"),
            None,
        )
    }

    /// `GET /api/views/events`: one page of events, newest first.
    pub fn view_events(
        &self,
        q: &EventPageQuery,
    ) -> Result<crate::api::views::EventPage, ServiceError> {
        self.api("GET", &q.path(), None)
    }

    /// A GET under `/api/` whose answer is handed on unread (the dashboard passes the
    /// agent and cost views to the page as the sidecar wrote them).
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value, ServiceError> {
        debug_assert!(path.starts_with("/api/"), "{path}");
        self.api("GET", path, None)
    }

    /// `POST /api/results`.
    pub fn store_result(&self, result: &ResultSubmission) -> Result<ResultStored, ServiceError> {
        self.api("POST", "/api/results", Some(to_json(result)))
    }

    /// `POST /api/events/{event_type}`: the stored event.
    pub fn publish(
        &self,
        event_type: &EventType,
        event: &PublishRequest,
    ) -> Result<Event, ServiceError> {
        self.api(
            "POST",
            &format!("/api/events/{event_type}"),
            Some(to_json(event)),
        )
    }

    /// `GET /api/events/wait/{event_type}`: events after `since` (or newer than the
    /// request), waiting up to `timeout` for one. The call's own limit is raised to cover the
    /// wait.
    pub fn wait(
        &self,
        event_type: &EventType,
        since: Option<u64>,
        topic: Option<&str>,
        timeout: Duration,
    ) -> Result<EventBatch, ServiceError> {
        let mut query = vec![format!("timeout={}", timeout.as_millis())];
        if let Some(s) = since {
            query.push(format!("since={s}"));
        }
        if let Some(t) = topic {
            query.push(format!("filter={}", encode(&format!("topic:{t}"))));
        }
        let path = format!("/api/events/wait/{event_type}?{}", query.join("&"));
        let token = self.token.as_deref().ok_or(ServiceError::NoToken)?;
        self.local
            .waiting(timeout)
            .call("GET", &path, Some(token), None)
    }

    /// `POST /api/agents/{agent_id}/status`: the registry's record after the update.
    pub fn set_agent_status(
        &self,
        agent_id: &AgentId,
        update: &AgentStatusUpdate,
    ) -> Result<AgentRecord, ServiceError> {
        self.api(
            "POST",
            &format!("/api/agents/{agent_id}/status"),
            Some(to_json(update)),
        )
    }

    /// `GET /api/agents`.
    pub fn agents(&self) -> Result<AgentList, ServiceError> {
        self.api("GET", "/api/agents", None)
    }

    /// `POST /api/cost/records`: how many were new and how many already stored.
    pub fn store_cost_records(
        &self,
        records: &CostRecords,
    ) -> Result<CostRecordsStored, ServiceError> {
        self.api("POST", "/api/cost/records", Some(to_json(records)))
    }

    /// `GET /api/cost`: spend grouped `by`, for one issue or all, since a time (RFC 3339 or
    /// unix milliseconds).
    pub fn cost(
        &self,
        issue: Option<&IssueId>,
        by: CostBy,
        since: Option<&str>,
    ) -> Result<CostReport, ServiceError> {
        let mut query = vec![format!("by={by}")];
        if let Some(i) = issue {
            query.push(format!("issue={i}"));
        }
        if let Some(s) = since {
            query.push(format!("since={}", encode(s)));
        }
        self.api("GET", &format!("/api/cost?{}", query.join("&")), None)
    }

    /// `GET /api/cost/outcomes`: per issue, the spend of completed and failed agents.
    pub fn cost_outcomes(&self, issue: Option<&IssueId>) -> Result<CostOutcomes, ServiceError> {
        let path = match issue {
            Some(i) => format!("/api/cost/outcomes?issue={i}"),
            None => "/api/cost/outcomes".to_string(),
        };
        self.api("GET", &path, None)
    }

    /// `GET /api/agents/{agent_id}`: the registry entry, what cco told the agent, its result.
    pub fn agent(&self, agent: &AgentId) -> Result<AgentDetail, ServiceError> {
        self.api("GET", &format!("/api/agents/{agent}"), None)
    }

    /// `POST /api/agents/{agent_id}/told`: records the SubagentStart text the agent received.
    pub fn report_told(
        &self,
        agent: &AgentId,
        report: &ToldReport,
    ) -> Result<ToldContext, ServiceError> {
        self.api(
            "POST",
            &format!("/api/agents/{agent}/told"),
            Some(to_json(report)),
        )
    }

    /// `POST /api/leases/{issue}`: the granted lease (`granted: true`), or the live leases
    /// of other agents in the way (`granted: false`, the 409 answer).
    pub fn reserve(
        &self,
        issue: &IssueId,
        req: &ReserveRequest,
    ) -> Result<ReserveOutcome, ServiceError> {
        let token = self.token.as_deref().ok_or(ServiceError::NoToken)?;
        let path = format!("/api/leases/{issue}");
        let (status, body) = self
            .local
            .raw("POST", &path, Some(token), Some(to_json(req)))?;
        if (200..300).contains(&status) || status == 409 {
            serde_json::from_slice(&body).map_err(|e| ServiceError::Protocol {
                status,
                detail: format!("POST {path}: the answer does not match the contract: {e}"),
            })
        } else {
            Err(decode_error(status, &body))
        }
    }

    /// `GET /api/leases/{issue}`, or every issue's (`GET /api/leases`) without one.
    pub fn leases(&self, issue: Option<&IssueId>) -> Result<LeaseList, ServiceError> {
        match issue {
            Some(i) => self.api("GET", &format!("/api/leases/{i}"), None),
            None => self.api("GET", "/api/leases", None),
        }
    }

    /// `GET /api/leases/{issue}/check`: whether another running agent holds `path`
    /// exclusively (`agent`: who is asking; its own leases never block it).
    pub fn check_lease(
        &self,
        issue: &IssueId,
        path: &str,
        agent: Option<&AgentId>,
    ) -> Result<LeaseCheck, ServiceError> {
        let mut q = format!("path={}", encode(path));
        if let Some(a) = agent {
            q.push_str(&format!("&agent={}", encode(a.as_str())));
        }
        self.api("GET", &format!("/api/leases/{issue}/check?{q}"), None)
    }

    /// `POST /api/leases/{issue}/{lease_id}/release`: `agent` must hold it; `None` forces.
    pub fn release_lease(
        &self,
        issue: &IssueId,
        lease_id: &str,
        agent: Option<&AgentId>,
    ) -> Result<Released, ServiceError> {
        let body = ReleaseRequest {
            agent: agent.cloned(),
        };
        self.api(
            "POST",
            &format!("/api/leases/{issue}/{}/release", encode(lease_id)),
            Some(to_json(&body)),
        )
    }

    /// `POST /api/leases/{issue}/{lease_id}/renew`.
    pub fn renew_lease(
        &self,
        issue: &IssueId,
        lease_id: &str,
        req: &RenewRequest,
    ) -> Result<Lease, ServiceError> {
        self.api(
            "POST",
            &format!("/api/leases/{issue}/{}/renew", encode(lease_id)),
            Some(to_json(req)),
        )
    }

    /// `POST /api/leases/{issue}/agents/{agent}/release`: everything the agent holds
    /// (SubagentStop).
    pub fn release_agent_leases(
        &self,
        issue: &IssueId,
        agent: &AgentId,
    ) -> Result<Released, ServiceError> {
        self.api(
            "POST",
            &format!("/api/leases/{issue}/agents/{agent}/release"),
            Some(b"{}".to_vec()),
        )
    }

    /// `GET /api/inbox/{issue}/{agent}`: the events addressed to the agent since its last
    /// delivery (each delivered once). `agent_type` is used when the registry does not
    /// know the agent yet.
    pub fn inbox(
        &self,
        issue: &IssueId,
        agent: &AgentId,
        agent_type: Option<&AgentType>,
    ) -> Result<InboxBatch, ServiceError> {
        self.inbox_within(issue, agent, agent_type, None, None)
    }

    /// [`SidecarClient::inbox`] carrying at most `(max_events, max_bytes)` (a hook's push),
    /// naming the channel that carries the delivery (`PostToolUse`, `SubagentStart`,
    /// `UserPromptSubmit`, `mcp`): `GET /api/agents/{id}` shows it.
    pub fn inbox_within(
        &self,
        issue: &IssueId,
        agent: &AgentId,
        agent_type: Option<&AgentType>,
        limits: Option<(usize, usize)>,
        via: Option<&str>,
    ) -> Result<InboxBatch, ServiceError> {
        let mut q = Vec::new();
        if let Some(t) = agent_type {
            q.push(format!("agent_type={t}"));
        }
        if let Some((events, bytes)) = limits {
            q.push(format!("max_events={events}&max_bytes={bytes}"));
        }
        if let Some(v) = via {
            q.push(format!("via={}", encode(v)));
        }
        let q = if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        };
        self.api("GET", &format!("/api/inbox/{issue}/{agent}{q}"), None)
    }

    /// `GET /api/agents/wait_all/{issue}`: waits (up to `timeout`) until every agent of the
    /// issue, or of `types`, completed or failed. The call's limit is raised to cover it.
    pub fn wait_all(
        &self,
        issue: &IssueId,
        types: &[AgentType],
        timeout: Duration,
    ) -> Result<WaitAllAnswer, ServiceError> {
        let mut path = format!(
            "/api/agents/wait_all/{issue}?timeout={}",
            timeout.as_millis()
        );
        if !types.is_empty() {
            let names: Vec<&str> = types.iter().map(AgentType::as_str).collect();
            path.push_str(&format!("&types={}", encode(&names.join(","))));
        }
        let token = self.token.as_deref().ok_or(ServiceError::NoToken)?;
        self.local
            .waiting(timeout)
            .call("GET", &path, Some(token), None)
    }

    /// `GET /api/events/stream`: the journal as Server-Sent Events, read as they arrive.
    pub fn stream(&self, query: &StreamQuery) -> Result<EventStream, ServiceError> {
        self.local.check_owner()?;
        let token = self.token.as_deref().ok_or(ServiceError::NoToken)?;
        let auth = format!("Bearer {token}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Accept", "text/event-stream"),
        ];
        let path = query.path();
        let req = Request {
            method: "GET",
            path: &path,
            headers: &headers,
            body: None,
        };
        let mut s = super::open(super::local(self.local.port), &req, self.local.budget()?)
            .map_err(|e| self.local.unreachable(e))?;
        if s.status == 200 {
            return Ok(EventStream { inner: s });
        }
        let mut body = Vec::new();
        let _ = s.body.by_ref().take(64 * 1024).read_to_end(&mut body);
        Err(decode_error(s.status, &body))
    }
}

/// What `GET /api/events/stream` is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    /// Keep the stream open for new events (else it ends after the retained ones).
    pub follow: bool,
    pub since: Option<u64>,
    pub event_type: Option<EventType>,
    pub topic: Option<String>,
}

impl StreamQuery {
    /// The stream's path and query, every value percent-encoded.
    pub fn path(&self) -> String {
        let mut query = vec![format!("follow={}", self.follow)];
        if let Some(s) = self.since {
            query.push(format!("since={s}"));
        }
        if let Some(t) = &self.event_type {
            query.push(format!("event_type={}", encode(t.as_str())));
        }
        if let Some(t) = &self.topic {
            query.push(format!("filter={}", encode(&format!("topic:{t}"))));
        }
        format!("/api/events/stream?{}", query.join("&"))
    }
}

/// What `view_events` asks for.
#[derive(Debug, Clone, Default)]
pub struct EventPageQuery {
    pub before: Option<u64>,
    pub event_type: Option<EventType>,
    pub topic: Option<String>,
    pub limit: Option<usize>,
}

impl EventPageQuery {
    /// The view's path and query, every value percent-encoded.
    pub fn path(&self) -> String {
        let mut query = Vec::new();
        if let Some(b) = self.before {
            query.push(format!("before={b}"));
        }
        if let Some(t) = &self.event_type {
            query.push(format!("type={}", encode(t.as_str())));
        }
        if let Some(t) = &self.topic {
            query.push(format!("topic={}", encode(t)));
        }
        if let Some(l) = self.limit {
            query.push(format!("limit={l}"));
        }
        format!("/api/views/events?{}", query.join("&"))
    }
}

/// Percent-encodes a query value: everything but RFC 3986 unreserved characters.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One message of the event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Event(Box<Event>),
    /// The sidecar ended the stream with an `event: error` (its message).
    Error(String),
    /// A message whose data is not an event (kept for the reader to show as it is).
    Other(String),
}

/// An open event stream.
pub struct EventStream {
    inner: Streaming,
}

impl EventStream {
    /// Reads messages, calling `each` until it returns false or the stream ends.
    pub fn read(&mut self, mut each: impl FnMut(StreamItem) -> bool) -> io::Result<()> {
        read_sse(&mut self.inner.body, |msg| {
            let item = if msg.event.as_deref() == Some("error") {
                StreamItem::Error(msg.data)
            } else {
                match serde_json::from_str::<Event>(&msg.data) {
                    Ok(e) => StreamItem::Event(Box::new(e)),
                    Err(_) => StreamItem::Other(msg.data),
                }
            };
            each(item)
        })
    }
}

/// One `id:`/`event:`/`data:` block of a Server-Sent Events stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads SSE messages from `reader`, calling `each` until it returns false or the stream ends.
pub fn read_sse(
    reader: &mut dyn BufRead,
    mut each: impl FnMut(SseMessage) -> bool,
) -> io::Result<()> {
    let mut msg = SseMessage::default();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            if (!msg.data.is_empty() || msg.event.is_some()) && !each(std::mem::take(&mut msg)) {
                return Ok(());
            }
            continue;
        }
        if l.starts_with(':') {
            continue; // keep-alive comment
        }
        let (field, value) = l
            .split_once(':')
            .map_or((l, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "id" => msg.id = Some(value.to_string()),
            "event" => msg.event = Some(value.to_string()),
            "data" => {
                if !msg.data.is_empty() {
                    msg.data.push('\n');
                }
                msg.data.push_str(value);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;

    #[test]
    fn parses_sse_blocks_and_skips_comments() {
        let text = ": keep-alive\n\nid: 1\nevent: a\ndata: {\"x\":1}\n\nid: 2\nevent: b\ndata: line1\ndata: line2\n\n";
        let mut got = Vec::new();
        read_sse(&mut text.as_bytes(), |m| {
            got.push(m);
            true
        })
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id.as_deref(), Some("1"));
        assert_eq!(got[1].data, "line1\nline2");
    }

    #[test]
    fn query_values_are_encoded() {
        let q = StreamQuery {
            follow: true,
            since: Some(7),
            event_type: Some(EventType::parse("agent_completed").unwrap()),
            topic: Some("a b&since=0#x".into()),
        };
        assert_eq!(
            q.path(),
            "/api/events/stream?follow=true&since=7&event_type=agent_completed\
             &filter=topic%3Aa%20b%26since%3D0%23x"
        );
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn an_error_answer_always_says_something() {
        let json =
            br#"{"error":{"code":"bad_request","message":"`topic` must be 1-256 characters"}}"#;
        let e = decode_error(400, json);
        assert_eq!(e.code(), Some("bad_request"));
        assert_eq!(e.to_string(), "HTTP 400: `topic` must be 1-256 characters");
        assert_eq!(
            decode_error(400, b"plain words\n").to_string(),
            "HTTP 400: plain words"
        );
        assert_eq!(decode_error(400, b"").to_string(), "HTTP 400: Bad Request");
        assert_eq!(
            decode_error(599, b"").to_string(),
            "HTTP 599: no reason given"
        );
        let hostile = decode_error(500, "x\u{9b}2J".as_bytes()).to_string();
        assert!(!hostile.chars().any(inert::is_unsafe), "{hostile:?}");
    }

    /// The sidecar's 410 carries the floor as a field; nothing parses the message.
    #[tokio::test]
    async fn the_expired_cursor_error_carries_the_floor() {
        let resp = crate::sidecar::error::ApiError::CursorGone {
            since: 3,
            oldest: 42,
            floor: 41,
        }
        .into_response();
        assert_eq!(resp.status().as_u16(), 410);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let e = decode_error(410, &bytes);
        match &e {
            ServiceError::Api { body, .. } => {
                assert_eq!(body.error.code, "cursor_expired");
                assert_eq!(body.error.floor, Some(41));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_passed_deadline_fails_without_sending() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = SidecarClient::new(port)
            .with_token("t")
            .with_deadline(Instant::now());
        let e = c.agents().unwrap_err();
        assert!(
            matches!(
                e,
                ServiceError::Unreachable {
                    source: ClientError::Timeout,
                    ..
                }
            ),
            "{e:?}"
        );
        l.set_nonblocking(true).unwrap();
        assert!(l.accept().is_err(), "nothing was sent");
        assert!(
            !format!("{c:?}").contains("\"t\""),
            "the token stays hidden"
        );
    }
}
