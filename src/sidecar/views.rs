//! Read views for the dashboard, paged so that 1,000 agents and 100,000 events stay cheap:
//! `GET /api/views/tree` (issues → agents, newest activity first, with the session that
//! started each issue) and `GET /api/views/events` (newest first, by type and topic).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use rusqlite::{Connection, params};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::SidecarState;
use super::error::ApiError;
use super::extract::{ApiQuery, RequireScope};
use crate::api::sidecar::{AgentRecord, AgentState};
use crate::api::views::{AgentNode, EventPage, IssueNode, TreePage};
use crate::api::{EventType, IssueId};
use crate::auth::{Claims, Scope};

/// Issues per tree page when the caller does not say.
pub const DEFAULT_ISSUES_PER_PAGE: usize = 50;
/// Most issues one tree page holds.
pub const MAX_ISSUES_PER_PAGE: usize = 200;
/// Most agents listed under one issue (the newest); `agents_total` counts them all.
pub const MAX_AGENTS_PER_ISSUE: usize = 200;
/// Events per page when the caller does not say.
pub const DEFAULT_EVENTS_PER_PAGE: usize = 100;
/// Most events one page holds.
pub const MAX_EVENTS_PER_PAGE: usize = 500;
/// How many of the newest `session_started` events are read to name each issue's session.
pub const SESSIONS_SCANNED: usize = 1000;

/// The event the SessionStart hook publishes (`hook::handle`).
const SESSION_STARTED: &str = "session_started";

#[derive(Debug, Deserialize)]
pub struct TreeQuery {
    pub offset: Option<usize>,
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Only events with a smaller seq (the previous page's `next_before`).
    pub before: Option<u64>,
    #[serde(rename = "type")]
    pub event_type: Option<EventType>,
    pub topic: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /api/views/tree`.
pub async fn tree(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiQuery(q): ApiQuery<TreeQuery>,
) -> Result<Json<TreePage>, ApiError> {
    claims.require(Scope::AgentsRead)?;
    let limit = q
        .limit
        .unwrap_or(DEFAULT_ISSUES_PER_PAGE)
        .clamp(1, MAX_ISSUES_PER_PAGE);
    let offset = q.offset.unwrap_or(0);
    // A token bound to an issue or agent type sees only those agents.
    let agents: Vec<AgentRecord> = storage::agents(&s)
        .into_iter()
        .filter(|a| {
            claims
                .check_binding(Some(a.issue_id.as_str()), Some(a.agent_type.as_str()))
                .is_ok()
        })
        .collect();
    let counts = super::registry::counts(agents.iter());
    let started =
        storage::newest(&s, u64::MAX, Some(SESSION_STARTED), None, SESSIONS_SCANNED).await?;
    let (mut issues, total_issues) = build_tree(
        agents,
        &sessions_by_issue(&started),
        offset,
        limit,
        SystemTime::now(),
    );
    // Results are read only for this page's finished agents.
    let finished: Vec<(usize, usize)> = issues
        .iter()
        .enumerate()
        .flat_map(|(i, issue)| {
            issue
                .agents
                .iter()
                .enumerate()
                .filter(|(_, a)| matches!(a.state, AgentState::Completed | AgentState::Failed))
                .map(move |(j, _)| (i, j))
        })
        .collect();
    let keys = finished
        .iter()
        .map(|&(i, j)| {
            let a = &issues[i].agents[j];
            (
                issues[i].issue_id.clone(),
                a.agent_type.clone(),
                a.agent_id.clone(),
            )
        })
        .collect();
    let statuses = storage::result_statuses(&s, keys).await?;
    for ((i, j), status) in finished.into_iter().zip(statuses) {
        issues[i].agents[j].result_status = status;
    }
    Ok(Json(TreePage {
        issues,
        total_issues,
        offset,
        limit,
        counts,
    }))
}

/// `GET /api/views/events`.
pub async fn events(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    claims.require(Scope::EventsWait)?;
    let topic = super::routes::scoped_topic(&claims, q.topic.filter(|t| !t.is_empty()))?;
    let limit = q
        .limit
        .unwrap_or(DEFAULT_EVENTS_PER_PAGE)
        .clamp(1, MAX_EVENTS_PER_PAGE);
    let head = storage::head(&s);
    let before = q.before.unwrap_or(u64::MAX).min(head.saturating_add(1));
    let event_type = q.event_type.map(|t| t.to_string());
    let events =
        storage::newest(&s, before, event_type.as_deref(), topic.as_deref(), limit).await?;
    let next_before = if events.len() == limit {
        events.last().map(|(seq, _)| *seq)
    } else {
        None
    };
    Ok(Json(EventPage {
        events: events.into_iter().map(|(_, json)| json).collect(),
        next_before,
        head,
    }))
}

/// Everything the views read from the sidecar's storage, in one place: the only part to
/// change when the storage moves behind another interface.
mod storage {
    use super::*;
    use crate::api::{AgentId, AgentType};

    pub fn agents(s: &SidecarState) -> Vec<AgentRecord> {
        s.store().agents()
    }

    pub fn head(s: &SidecarState) -> u64 {
        s.store().head()
    }

    /// Events with seq < `before`, newest first (see [`newest_events`]).
    pub async fn newest(
        s: &SidecarState,
        before: u64,
        event_type: Option<&str>,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(u64, Box<RawValue>)>, ApiError> {
        let filter = crate::sidecar::journal::EventFilter {
            event_type: event_type.map(str::to_string),
            topic: topic.map(str::to_string),
        };
        Ok(s.store().newest(before, &filter, limit).await?)
    }

    /// The `status` of each agent's stored result, in order (`None`: no result, or none).
    /// Each issue's results are read once: one store call per issue, not per agent.
    pub async fn result_statuses(
        s: &SidecarState,
        agents: Vec<(IssueId, AgentType, AgentId)>,
    ) -> Result<Vec<Option<String>>, ApiError> {
        let mut by_issue: HashMap<IssueId, HashMap<(String, String), String>> = HashMap::new();
        for (issue, _, _) in &agents {
            if !by_issue.contains_key(issue) {
                let results = s.store().results(issue).await?;
                by_issue.insert(issue.clone(), super::statuses_of(&results));
            }
        }
        Ok(agents
            .iter()
            .map(|(issue, agent_type, agent)| {
                by_issue[issue]
                    .get(&(agent_type.to_string(), agent.to_string()))
                    .cloned()
            })
            .collect())
    }
}

/// (agent type, agent id) → the `status` of that agent's result, from an issue's stored
/// results (JSON texts); results without a string `status` are left out.
fn statuses_of(results: &[std::sync::Arc<str>]) -> HashMap<(String, String), String> {
    // Only the keys and the status: a result's summary can be long.
    #[derive(Deserialize)]
    struct Head {
        agent_id: String,
        agent_type: String,
        result: Status,
    }
    #[derive(Deserialize)]
    struct Status {
        status: String,
    }
    results
        .iter()
        .filter_map(|json| serde_json::from_str::<Head>(json).ok())
        .map(|h| ((h.agent_type, h.agent_id), h.result.status))
        .collect()
}

/// Events with seq < `before`, newest first. One statement per filter combination, so that
/// SQLite walks an index backwards (`events_by_type` for a type; the primary key otherwise)
/// and stops after `limit` rows.
pub(crate) fn newest_events(
    conn: &Connection,
    before: u64,
    event_type: Option<&str>,
    topic: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<(u64, Box<RawValue>)>> {
    const COLS: &str = "SELECT seq, json FROM events WHERE seq < ?1";
    const TAIL: &str = "ORDER BY seq DESC LIMIT ?2";
    let before = before.min(i64::MAX as u64) as i64;
    let limit = limit as i64;
    let row = |r: &rusqlite::Row<'_>| {
        let seq: i64 = r.get(0)?;
        let json: String = r.get(1)?;
        let raw = RawValue::from_string(json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?;
        Ok((seq as u64, raw))
    };
    match (event_type, topic) {
        (None, None) => {
            let mut st = conn.prepare_cached(&format!("{COLS} {TAIL}"))?;
            st.query_map(params![before, limit], row)?.collect()
        }
        (Some(t), None) => {
            let mut st = conn.prepare_cached(&format!("{COLS} AND event_type = ?3 {TAIL}"))?;
            st.query_map(params![before, limit, t], row)?.collect()
        }
        (None, Some(topic)) => {
            let mut st = conn.prepare_cached(&format!("{COLS} AND topic = ?3 {TAIL}"))?;
            st.query_map(params![before, limit, topic], row)?.collect()
        }
        (Some(t), Some(topic)) => {
            let mut st =
                conn.prepare_cached(&format!("{COLS} AND event_type = ?3 AND topic = ?4 {TAIL}"))?;
            st.query_map(params![before, limit, t, topic], row)?
                .collect()
        }
    }
}

/// issue → the newest session that started on it, from `session_started` events (newest
/// first).
fn sessions_by_issue(started: &[(u64, Box<RawValue>)]) -> HashMap<String, String> {
    #[derive(Deserialize)]
    struct Started {
        data: StartedData,
    }
    #[derive(Deserialize)]
    struct StartedData {
        session_id: String,
        issue_id: String,
    }
    let mut out = HashMap::new();
    for (_, json) in started {
        if let Ok(e) = serde_json::from_str::<Started>(json.get()) {
            // Newest first: the first session seen for an issue is its latest.
            out.entry(e.data.issue_id).or_insert(e.data.session_id);
        }
    }
    out
}

/// Groups `agents` by issue, orders issues by their latest update (newest first) and cuts
/// the page; returns the page and the number of issues in all.
pub(crate) fn build_tree(
    agents: Vec<AgentRecord>,
    sessions: &HashMap<String, String>,
    offset: usize,
    limit: usize,
    now: SystemTime,
) -> (Vec<IssueNode>, usize) {
    let mut by_issue: HashMap<IssueId, Vec<AgentRecord>> = HashMap::new();
    for a in agents {
        by_issue.entry(a.issue_id.clone()).or_default().push(a);
    }
    let mut issues: Vec<(String, IssueId, Vec<AgentRecord>)> = by_issue
        .into_iter()
        .map(|(id, mut agents)| {
            // RFC 3339 UTC stamps of one format sort as text.
            agents.sort_by(|a, b| {
                b.started_at
                    .cmp(&a.started_at)
                    .then_with(|| a.agent_id.cmp(&b.agent_id))
            });
            let latest = agents
                .iter()
                .map(|a| a.updated_at.clone())
                .max()
                .unwrap_or_default();
            (latest, id, agents)
        })
        .collect();
    issues.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let total = issues.len();
    let page = issues
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(updated_at, issue_id, agents)| {
            let c = super::registry::counts(agents.iter());
            IssueNode {
                session_id: sessions.get(issue_id.as_str()).cloned(),
                agents_total: agents.len(),
                agents: agents
                    .iter()
                    .take(MAX_AGENTS_PER_ISSUE)
                    .map(|a| agent_node(a, now))
                    .collect(),
                issue_id,
                active: c.active,
                completed: c.completed,
                failed: c.failed,
                updated_at,
            }
        })
        .collect();
    (page, total)
}

fn agent_node(a: &AgentRecord, now: SystemTime) -> AgentNode {
    let ended_at = matches!(a.status, AgentState::Completed | AgentState::Failed)
        .then(|| a.updated_at.clone());
    let started = humantime::parse_rfc3339_weak(&a.started_at).ok();
    let until = match &ended_at {
        Some(t) => humantime::parse_rfc3339_weak(t).ok(),
        None => Some(now),
    };
    let duration_ms = match (started, until) {
        (Some(s), Some(u)) => Some(
            u.duration_since(s)
                .unwrap_or(Duration::ZERO)
                .as_millis()
                .min(u64::MAX as u128) as u64,
        ),
        _ => None,
    };
    AgentNode {
        agent_id: a.agent_id.clone(),
        agent_type: a.agent_type.clone(),
        state: a.status,
        started_at: a.started_at.clone(),
        ended_at,
        duration_ms,
        result_status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AgentId, AgentType};

    #[test]
    fn result_statuses_match_each_agent_by_type_and_id() {
        let stored = |agent: &str, ty: &str, result: serde_json::Value| -> std::sync::Arc<str> {
            serde_json::json!({"agent_id": agent, "agent_type": ty, "issue_id": "i-1",
                               "result": result, "stored_at": "2026-12-01T10:00:00Z"})
            .to_string()
            .into()
        };
        let results = [
            stored(
                "a-1",
                "coder",
                serde_json::json!({"status": "success", "summary": "x"}),
            ),
            stored("a-2", "coder", serde_json::json!({"status": "failed"})),
            stored("a-3", "tester", serde_json::json!({"summary": "no status"})),
            stored("a-4", "tester", serde_json::json!(["not", "an", "object"])),
        ];
        let got = statuses_of(&results);
        let status = |ty: &str, id: &str| got.get(&(ty.to_string(), id.to_string())).cloned();
        assert_eq!(status("coder", "a-1").as_deref(), Some("success"));
        assert_eq!(status("coder", "a-2").as_deref(), Some("failed"));
        // Another type's agent with the same id is another result.
        assert_eq!(status("tester", "a-1"), None);
        assert_eq!(status("tester", "a-3"), None);
        assert_eq!(status("tester", "a-4"), None);
        assert_eq!(got.len(), 2);
    }

    fn rec(id: &str, issue: &str, status: AgentState, started: &str, updated: &str) -> AgentRecord {
        AgentRecord {
            agent_id: AgentId::parse(id).unwrap(),
            agent_type: AgentType::parse("coder").unwrap(),
            issue_id: IssueId::parse(issue).unwrap(),
            status,
            message: None,
            started_at: started.into(),
            updated_at: updated.into(),
        }
    }

    #[test]
    fn the_tree_pages_issues_by_latest_activity_with_durations() {
        let agents = vec![
            rec(
                "a1",
                "old",
                AgentState::Completed,
                "2026-01-01T00:00:00.000Z",
                "2026-01-01T00:00:02.500Z",
            ),
            rec(
                "b1",
                "new",
                AgentState::Running,
                "2026-01-02T00:00:00.000Z",
                "2026-01-02T00:00:01.000Z",
            ),
            rec(
                "b2",
                "new",
                AgentState::Failed,
                "2026-01-02T00:00:05.000Z",
                "2026-01-02T00:00:06.000Z",
            ),
        ];
        let sessions = HashMap::from([("new".to_string(), "s-9".to_string())]);
        let now = humantime::parse_rfc3339("2026-01-02T00:00:10Z").unwrap();
        let (page, total) = build_tree(agents.clone(), &sessions, 0, 1, now);
        assert_eq!(total, 2);
        assert_eq!(page.len(), 1);
        let new = &page[0];
        assert_eq!(new.issue_id.as_str(), "new");
        assert_eq!(new.session_id.as_deref(), Some("s-9"));
        assert_eq!((new.active, new.failed, new.agents_total), (1, 1, 2));
        // Newest agent first; a running one is timed until now.
        assert_eq!(new.agents[0].agent_id.as_str(), "b2");
        assert_eq!(new.agents[0].duration_ms, Some(1000));
        assert_eq!(new.agents[1].duration_ms, Some(10_000));
        assert_eq!(new.agents[1].ended_at, None);
        let (page, _) = build_tree(agents, &sessions, 1, 1, now);
        assert_eq!(page[0].issue_id.as_str(), "old");
        assert_eq!(page[0].session_id, None);
        assert_eq!(page[0].agents[0].duration_ms, Some(2500));
    }

    fn journal_with(n: u64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, event_type TEXT NOT NULL,
               topic TEXT NOT NULL, ts_ms INTEGER NOT NULL, json TEXT NOT NULL);
             CREATE INDEX events_by_type ON events(event_type, seq);",
        )
        .unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for seq in 1..=n {
            let (t, topic) = if seq % 10 == 0 {
                ("rare", "t-rare")
            } else {
                ("common", "t-common")
            };
            tx.execute(
                "INSERT INTO events VALUES (?1, ?2, ?3, 0, ?4)",
                params![seq as i64, t, topic, format!("{{\"seq\":{seq}}}")],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        conn
    }

    #[test]
    fn events_come_newest_first_by_type_and_topic() {
        let conn = journal_with(100);
        let seqs = |v: Vec<(u64, Box<RawValue>)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        assert_eq!(
            seqs(newest_events(&conn, u64::MAX, None, None, 3).unwrap()),
            [100, 99, 98]
        );
        assert_eq!(
            seqs(newest_events(&conn, 98, None, None, 2).unwrap()),
            [97, 96]
        );
        assert_eq!(
            seqs(newest_events(&conn, 100, Some("rare"), None, 2).unwrap()),
            [90, 80]
        );
        assert_eq!(
            seqs(newest_events(&conn, 31, None, Some("t-rare"), 5).unwrap()),
            [30, 20, 10]
        );
        assert_eq!(
            seqs(newest_events(&conn, u64::MAX, Some("common"), Some("t-rare"), 5).unwrap()),
            Vec::<u64>::new()
        );
    }

    /// A type filter walks `events_by_type`, not the whole table.
    #[test]
    fn a_type_filter_uses_the_index() {
        let conn = journal_with(10);
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT seq, json FROM events WHERE seq < ?1 AND event_type = ?3 ORDER BY seq DESC LIMIT ?2",
                params![5, 5, "rare"],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("events_by_type"), "{plan}");
    }
}
