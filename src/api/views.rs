//! Wire types of the sidecar's read views for the dashboard (`GET /api/views/*`): one page
//! of the sessions → issues → agents tree, and one page of events, newest first.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::sidecar::{AgentCounts, AgentState};
use super::{AgentId, AgentType, IssueId};

/// `GET /api/views/tree?offset=&limit=`: issues by latest activity, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreePage {
    pub issues: Vec<IssueNode>,
    /// Issues in the registry (the page is `offset..offset + issues.len()` of them).
    pub total_issues: usize,
    pub offset: usize,
    pub limit: usize,
    /// Over every agent, not only this page's.
    pub counts: AgentCounts,
}

/// One issue of the tree, with the session that last started on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueNode {
    pub issue_id: IssueId,
    /// The newest `session_started` naming this issue; `None` when none was recorded.
    pub session_id: Option<String>,
    /// The newest agents first, at most the view's per-issue limit.
    pub agents: Vec<AgentNode>,
    /// All agents of the issue (more than `agents.len()` when cut).
    pub agents_total: usize,
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
    /// RFC 3339: the latest update of any of its agents.
    pub updated_at: String,
}

/// One agent of the tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentNode {
    pub agent_id: AgentId,
    pub agent_type: AgentType,
    pub state: AgentState,
    pub started_at: String,
    /// When it completed or failed; `None` while it runs.
    pub ended_at: Option<String>,
    /// Until `ended_at`, or until now while it runs.
    pub duration_ms: Option<u64>,
    /// `status` of its stored result (`success`, `failed`, …), once there is one.
    pub result_status: Option<String>,
}

/// `GET /api/views/events?before=&type=&topic=&limit=`: newest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventPage {
    /// Events as the journal stored them (the `Event` shape), seq descending.
    pub events: Vec<Box<RawValue>>,
    /// Pass as `before` for the next (older) page; `None` when there is nothing older.
    pub next_before: Option<u64>,
    /// The journal's newest seq when the page was read: stream from here.
    pub head: u64,
}

/// `POST /dashboard/code` on the daemon: the one-time login link `cco dashboard` opens.
#[derive(Serialize, Deserialize)]
pub struct LoginCode {
    /// Carries the code: treat it as a secret until it is used.
    pub url: String,
    pub expires_in_seconds: u64,
}

impl std::fmt::Debug for LoginCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginCode")
            .field("url", &"<hidden>")
            .field("expires_in_seconds", &self.expires_in_seconds)
            .finish()
    }
}
