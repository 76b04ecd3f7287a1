//! Wire types of the coordination routes (issue 10): file leases, the per-agent inbox and
//! the per-issue join. The sidecar serves them, `SidecarClient` and `cco leases` read them.

use serde::{Deserialize, Serialize};

use super::sidecar::{AgentState, Event};
use super::{AgentId, AgentType, IssueId};

/// Exclusive (the default) conflicts with any overlapping lease of another agent; shared
/// conflicts only with an overlapping exclusive one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseMode {
    #[default]
    Exclusive,
    Shared,
}

impl LeaseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseMode::Exclusive => "exclusive",
            LeaseMode::Shared => "shared",
        }
    }
}

/// One granted lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub lease_id: String,
    pub issue_id: IssueId,
    pub agent_id: AgentId,
    /// The holder's type, when the agent registry knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_type: Option<AgentType>,
    /// Paths or globs relative to the project root, normalized (no `./`, no `..`).
    pub paths: Vec<String>,
    pub mode: LeaseMode,
    pub reason: String,
    /// RFC 3339, UTC.
    pub granted_at: String,
    pub expires_at: String,
    /// `expires_at` in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// `POST /api/leases/{issue}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// The agent taking the lease (its agent id).
    pub agent: AgentId,
    pub paths: Vec<String>,
    #[serde(default)]
    pub mode: LeaseMode,
    /// Lifetime in seconds (default 15 min, at most 2 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Why the agent takes it; shown to agents it blocks.
    #[serde(default)]
    pub reason: String,
}

/// `POST /api/leases/{issue}` answer: 201 with the lease, or 409 with the leases in the way
/// (the 409 body also carries `error`, as every refusal does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveOutcome {
    pub granted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(default)]
    pub conflicts: Vec<Lease>,
}

/// `POST /api/leases/{issue}/{lease_id}/renew` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The holder; only it may renew.
    pub agent: AgentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// `POST /api/leases/{issue}/{lease_id}/release` body (and `DELETE`'s `?agent=`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The holder. Without it the release is forced (an operator, `cco leases release`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
}

/// The lease ids a release ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub released: Vec<String>,
}

/// `GET /api/leases[/{issue}]`: live (unexpired) leases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseList {
    pub leases: Vec<Lease>,
}

/// `GET /api/leases/{issue}/check?path=…&agent=…`: whether another live agent holds `path`
/// exclusively, and which lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseCheck {
    pub path: String,
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Lease>,
}

/// `GET /api/inbox/{issue}/{agent_id}`: the events addressed to that agent since its last
/// delivery; `more` were left for the next call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxBatch {
    pub issue_id: IssueId,
    pub agent_id: AgentId,
    pub events: Vec<Event>,
    pub more: u64,
    /// The agent's cursor after this delivery (a journal seq).
    pub cursor: u64,
}

/// One agent in a `wait_all` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentOutcome {
    pub agent_id: AgentId,
    pub agent_type: AgentType,
    pub status: AgentState,
    /// The stored result's `status`, when it stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_status: Option<String>,
    /// The start of the result's `summary` (or `message`, or its JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// `GET /api/agents/wait_all/{issue}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitAllAnswer {
    pub issue_id: IssueId,
    /// Every awaited agent completed or failed.
    pub done: bool,
    /// The timeout passed first.
    pub timed_out: bool,
    pub agents: Vec<AgentOutcome>,
    /// Named types with no registered agent yet (they keep `done` false).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_types: Vec<AgentType>,
}
