//! Wire types of the sidecar's HTTP contract (DESIGN.md, "Sidecar (:3001)"). The CLI, the
//! daemon, the hooks and the tests all read and write these shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AgentId, AgentType, IssueId};

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SidecarHealth {
    /// `healthy`, or `unhealthy` when a check fails.
    pub status: String,
    pub service: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub checks: HealthChecks,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthChecks {
    /// `healthy`, `disk_full` or `unwritable`: a probe file was written and removed.
    pub storage: String,
    /// `healthy` or `unhealthy`: the journal answered a query and its writer is alive.
    pub event_bus: String,
    pub memory_usage_mb: f64,
    pub active_agents: u64,
    /// Writes accepted but not yet committed to the journal.
    pub event_queue_size: u64,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SidecarStatus {
    pub agents: AgentCounts,
    pub storage: StorageStats,
    pub events: EventStats,
    pub performance: Performance,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentCounts {
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
    pub by_type: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageStats {
    pub context_cache_entries: u64,
    pub results_stored: u64,
    pub total_size_mb: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventStats {
    pub total_published: u64,
    /// Long polls and SSE streams open right now.
    pub active_subscriptions: u64,
    pub queue_depth: u64,
}

/// Over the last minute; long polls and streams are not timed (they wait on purpose).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    pub avg_response_time_ms: f64,
    pub p99_response_time_ms: f64,
    pub requests_per_second: f64,
}

/// `POST /api/results` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultSubmission {
    pub agent_id: AgentId,
    pub agent_type: AgentType,
    pub issue_id: IssueId,
    /// Free-form, but an object with a `status` string.
    pub result: Value,
}

/// What `results/{issue_id}/{agent_type}.json` holds, and what `GET /api/results/{issue}` lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    pub agent_id: AgentId,
    pub agent_type: AgentType,
    pub issue_id: IssueId,
    pub result: Value,
    /// RFC 3339, UTC.
    pub stored_at: String,
}

/// `201` answer to `POST /api/results` (`200` when `unchanged`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultStored {
    pub stored: bool,
    pub path: String,
    pub issue_id: IssueId,
    pub agent_type: AgentType,
    /// The `agent_completed` event this published; absent when `unchanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The same agent had already stored exactly this result: nothing was written or
    /// published again (Claude Code can report one sub-agent's stop more than once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// `GET /api/results/{issue_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultList {
    pub issue_id: IssueId,
    pub results: Vec<StoredResult>,
}

/// `POST /api/events/{event_type}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub publisher: String,
    pub topic: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// One journal event; also the `201` answer to a publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    /// Strictly increasing over the life of the journal; the cursor of `wait` and `stream`.
    pub seq: u64,
    pub event_type: String,
    pub publisher: String,
    pub topic: String,
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// RFC 3339, UTC.
    pub timestamp: String,
}

/// `GET /api/events/wait/{event_type}`: the matching events, and the cursor to poll with next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub events: Vec<Event>,
    pub next_since: u64,
}

/// Lifecycle states an agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Started,
    Running,
    Completed,
    Failed,
}

impl AgentState {
    pub const ALL: [AgentState; 4] = [
        AgentState::Started,
        AgentState::Running,
        AgentState::Completed,
        AgentState::Failed,
    ];

    /// The wire name (what serde writes; a test keeps the two equal).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Started => "started",
            AgentState::Running => "running",
            AgentState::Completed => "completed",
            AgentState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<AgentState> {
        AgentState::ALL.into_iter().find(|x| x.as_str() == s)
    }
    pub fn is_active(self) -> bool {
        matches!(self, AgentState::Started | AgentState::Running)
    }
}

/// `POST /api/agents/{agent_id}/status` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStatusUpdate {
    pub status: AgentState,
    pub agent_type: AgentType,
    pub issue_id: IssueId,
    #[serde(default)]
    pub message: Option<String>,
}

/// One entry of the agent registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub agent_id: AgentId,
    pub agent_type: AgentType,
    pub issue_id: IssueId,
    pub status: AgentState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub started_at: String,
    pub updated_at: String,
}

/// `GET /api/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentList {
    pub agents: Vec<AgentRecord>,
    pub counts: AgentCounts,
}

/// `GET /api/context/{issue_id}/{agent_type}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub issue_id: IssueId,
    pub agent_type: AgentType,
    pub project: ProjectContext,
    /// Earlier agents' results for this issue, newest first.
    pub previous_results: Vec<StoredResult>,
    /// Something was left out to stay within the byte budget.
    pub truncated: bool,
    pub budget_bytes: u64,
}

/// The part of a context that depends only on the project tree and the agent type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectContext {
    pub root: String,
    pub name: String,
    /// Globs that selected `relevant_files` (the roster's `context:` for the type).
    pub patterns: Vec<String>,
    /// Files of the project (ignored and secret files left out), relative, sorted.
    pub structure: Vec<String>,
    pub relevant_files: Vec<FileContent>,
    pub git: Option<GitState>,
    pub metadata: ProjectMetadata,
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileContent {
    pub path: String,
    pub size: u64,
    pub content: String,
    /// Only the start of the file is included.
    pub truncated: bool,
    /// Why `content` is empty although the file matched: its text looks like a credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitState {
    pub branch: Option<String>,
    pub head: Option<String>,
    pub recent_commits: Vec<Commit>,
    pub dirty_files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub hash: String,
    pub author: String,
    pub date: String,
    pub subject: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectMetadata {
    /// Language → number of files.
    pub languages: BTreeMap<String, u64>,
    pub file_count: u64,
    pub dir_count: u64,
    pub total_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_states_have_one_spelling() {
        for state in AgentState::ALL {
            let wire = serde_json::to_value(state).unwrap();
            assert_eq!(wire, state.as_str(), "serde and as_str agree");
            assert_eq!(AgentState::parse(state.as_str()), Some(state));
        }
    }
}
