//! Cost accounting: Claude Code's `claude_code.api_request` records (forwarded by the daemon
//! from its OTLP export) stored through the store seam — the journal's SQLite (`CostStore`,
//! table `cost_records`) or NATS (`ns_cost`), idempotent on the record's key — and joined to
//! agents, sessions and issues when asked, never at insert, so a record that arrives before
//! its agent's SubagentStart hook still joins.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use axum::Json;
use axum::extract::State;
use rusqlite::{Connection, params};
use serde::Deserialize;

use super::SidecarState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, RequireScope};
use super::journal::JournalError;
use crate::api::IssueId;
use crate::api::cost::{
    CostBy, CostOutcomes, CostRecord, CostRecords, CostRecordsStored, CostReport, CostRow,
    CostSums, OutcomeRow, OutcomeSpend,
};
use crate::api::sidecar::{AgentRecord, AgentState};
use crate::auth::{Claims, Scope};

/// Most records one `POST /api/cost/records` may carry (the daemon sends fewer per call).
pub const MAX_RECORDS_PER_POST: usize = 2_000;
/// Longest id, model or query source kept from a record.
pub const MAX_FIELD_BYTES: usize = 256;
/// The agent type (and agent key prefix) of the main thread's own requests.
pub const ORCHESTRATOR: &str = "orchestrator";
/// The agent type of a sub-agent the registry does not know (no SubagentStart seen).
pub const UNKNOWN_AGENT_TYPE: &str = "unknown";

/// The cost records, on their own connection to the journal's database.
#[derive(Debug)]
pub struct CostStore {
    conn: Mutex<Connection>,
}

impl CostStore {
    /// Opens on the journal's database (migrated by `Journal::open`).
    pub fn open(path: &Path) -> Result<CostStore, JournalError> {
        Ok(CostStore {
            conn: Mutex::new(super::journal::schema::open_conn(path)?),
        })
    }

    /// Stores the records whose key is new, in one transaction; a record seen before (a
    /// retried export) is counted as a duplicate and left as it was.
    pub fn insert(&self, records: &[CostRecord]) -> Result<CostRecordsStored, JournalError> {
        let mut conn = self.conn.lock().expect("cost lock");
        let tx = conn.transaction()?;
        let mut out = CostRecordsStored::default();
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO cost_records(key, session_id, agent_id, model, ts_ms,
                     input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
                     cost_usd, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for r in records {
                let json = serde_json::to_string(r).expect("cost records serialize");
                // SQLite integers are i64: a count past that is clamped, not wrapped.
                let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                let n = stmt.execute(params![
                    r.key,
                    r.session_id,
                    r.agent_id,
                    r.model,
                    int(r.timestamp_ms),
                    int(r.input_tokens),
                    int(r.output_tokens),
                    int(r.cache_read_tokens),
                    int(r.cache_creation_tokens),
                    r.cost_usd,
                    json
                ])?;
                if n == 1 {
                    out.stored += 1;
                } else {
                    out.duplicates += 1;
                }
            }
        }
        if out.stored > 0 {
            let mut sessions: Vec<&str> = records.iter().map(|r| r.session_id.as_str()).collect();
            sessions.sort_unstable();
            sessions.dedup();
            remember_sessions(&tx, &sessions)?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Every record made at or after `since_ms`, oldest first.
    pub fn records(&self, since_ms: Option<u64>) -> Result<Vec<CostRecord>, JournalError> {
        let conn = self.conn.lock().expect("cost lock");
        let mut stmt = conn.prepare_cached(
            "SELECT key, json FROM cost_records WHERE ts_ms >= ?1 ORDER BY ts_ms, key",
        )?;
        let mut rows = stmt.query(params![since_ms.unwrap_or(0) as i64])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let (key, json): (String, String) = (r.get(0)?, r.get(1)?);
            match serde_json::from_str::<CostRecord>(&json) {
                Ok(rec) => out.push(rec),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "cost: skipping a record that does not parse")
                }
            }
        }
        Ok(out)
    }

    /// The records made at or after `since_ms`, summed per (session, agent, model): what
    /// every report is built from, without reading each record.
    pub fn groups(&self, since_ms: Option<u64>) -> Result<Vec<Group>, JournalError> {
        let conn = self.conn.lock().expect("cost lock");
        let mut stmt = conn.prepare_cached(
            "SELECT session_id, agent_id, model, COUNT(*), SUM(input_tokens), SUM(output_tokens),
                    SUM(cache_read_tokens), SUM(cache_creation_tokens), SUM(cost_usd)
             FROM cost_records WHERE ts_ms >= ?1
             GROUP BY session_id, agent_id, model",
        )?;
        let since = i64::try_from(since_ms.unwrap_or(0)).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![since], |r| {
            let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            Ok(Group {
                session_id: r.get(0)?,
                agent_id: r.get(1)?,
                model: r.get(2)?,
                sums: CostSums {
                    requests: n(3)?,
                    input_tokens: n(4)?,
                    output_tokens: n(5)?,
                    cache_read_tokens: n(6)?,
                    cache_creation_tokens: n(7)?,
                    cost_usd: r.get(8)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The issue each session was started for: the SessionStart hooks' `session_started`
    /// events in the journal (the last one wins: a resumed session may change issue), over
    /// what was remembered for costed sessions whose events retention has since dropped.
    pub fn session_issues(&self) -> Result<HashMap<String, String>, JournalError> {
        let conn = self.conn.lock().expect("cost lock");
        let mut out = HashMap::new();
        let mut kept = conn.prepare_cached("SELECT session_id, issue_id FROM cost_sessions")?;
        for row in kept.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
            let (s, i): (String, String) = row?;
            out.insert(s, i);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT json_extract(json, '$.data.session_id'), json_extract(json, '$.data.issue_id')
             FROM events WHERE event_type = 'session_started' ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            if let (Ok(Some(s)), Ok(Some(i))) =
                (r.get::<_, Option<String>>(0), r.get::<_, Option<String>>(1))
            {
                out.insert(s, i);
            }
        }
        Ok(out)
    }
}

/// Copies the issue of each of `sessions` from its latest `session_started` event into
/// `cost_sessions`, so the join outlives the journal's retention of that event.
fn remember_sessions(conn: &Connection, sessions: &[&str]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO cost_sessions(session_id, issue_id)
         SELECT ?1, json_extract(json, '$.data.issue_id') FROM events
         WHERE event_type = 'session_started'
           AND json_extract(json, '$.data.session_id') = ?1
           AND json_extract(json, '$.data.issue_id') IS NOT NULL
         ORDER BY seq DESC LIMIT 1
         ON CONFLICT(session_id) DO UPDATE SET issue_id = excluded.issue_id",
    )?;
    for s in sessions {
        stmt.execute(params![s])?;
    }
    Ok(())
}

/// Checks a decoded record before it is stored: ids and labels bounded and printable,
/// numbers finite and not negative.
pub fn check(r: &CostRecord) -> Result<(), String> {
    let labels = [
        ("key", Some(&r.key)),
        ("session_id", Some(&r.session_id)),
        ("model", Some(&r.model)),
        ("prompt_id", r.prompt_id.as_ref()),
        ("agent_id", r.agent_id.as_ref()),
        ("query_source", r.query_source.as_ref()),
    ];
    for (name, value) in labels {
        if let Some(v) = value {
            let limit = if name == "key" {
                4 * MAX_FIELD_BYTES
            } else {
                MAX_FIELD_BYTES
            };
            if v.len() > limit || v.chars().any(char::is_control) {
                return Err(format!(
                    "{name} must be at most {limit} bytes without control characters"
                ));
            }
        }
    }
    if r.key.is_empty() || r.session_id.is_empty() {
        return Err("key and session_id must not be empty".into());
    }
    if !r.cost_usd.is_finite() || r.cost_usd < 0.0 {
        return Err(format!(
            "cost_usd must be a finite, non-negative number, not {}",
            r.cost_usd
        ));
    }
    Ok(())
}

/// Records summed per (session, agent, model): the unit the join works on.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub session_id: String,
    pub agent_id: Option<String>,
    pub model: String,
    pub sums: CostSums,
}

impl Group {
    /// One record as its own group.
    pub fn of(r: &CostRecord) -> Group {
        let mut sums = CostSums::default();
        sums.add(r);
        Group {
            session_id: r.session_id.clone(),
            agent_id: r.agent_id.clone(),
            model: r.model.clone(),
            sums,
        }
    }
}

/// Where one record belongs once joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub issue: String,
    pub agent_type: String,
    /// The agent id, or `orchestrator:<session id>` for the main thread.
    pub agent: String,
    /// The sub-agent's registry record; `None` for the main thread and unknown agents.
    pub state: Option<AgentState>,
    pub is_orchestrator: bool,
}

/// What a query joins records with: the agent registry and each session's issue.
#[derive(Debug, Default)]
pub struct Directory {
    pub agents: HashMap<String, AgentRecord>,
    pub sessions: HashMap<String, String>,
}

impl Directory {
    pub fn new(agents: Vec<AgentRecord>, sessions: HashMap<String, String>) -> Directory {
        Directory {
            agents: agents
                .into_iter()
                .map(|a| (a.agent_id.to_string(), a))
                .collect(),
            sessions,
        }
    }

    /// The session's issue: its SessionStart registration, else the issue its hooks use for
    /// a session launched without one (`session-<id>`).
    fn session_issue(&self, session: &str) -> String {
        self.sessions.get(session).cloned().unwrap_or_else(|| {
            let input = serde_json::json!({ "session_id": session });
            crate::hook::issue_of(None, &input).to_string()
        })
    }

    /// The record's agent (id → type, issue, state through the registry) and issue; without
    /// `agent_id` it is the orchestrator's, on its session's issue.
    pub fn owner(&self, r: &Group) -> Owner {
        match r.agent_id.as_deref().filter(|a| !a.is_empty()) {
            None => Owner {
                issue: self.session_issue(&r.session_id),
                agent_type: ORCHESTRATOR.into(),
                agent: format!("{ORCHESTRATOR}:{}", r.session_id),
                state: None,
                is_orchestrator: true,
            },
            Some(id) => match self.agents.get(id) {
                Some(a) => Owner {
                    issue: a.issue_id.to_string(),
                    agent_type: a.agent_type.to_string(),
                    agent: id.to_string(),
                    state: Some(a.status),
                    is_orchestrator: false,
                },
                None => Owner {
                    issue: self.session_issue(&r.session_id),
                    agent_type: UNKNOWN_AGENT_TYPE.into(),
                    agent: id.to_string(),
                    state: None,
                    is_orchestrator: false,
                },
            },
        }
    }
}

/// Sums `groups` by `by`, keeping those `keep` accepts; rows by cost, most first.
pub fn report(
    groups: &[Group],
    dir: &Directory,
    by: CostBy,
    keep: impl Fn(&Owner) -> bool,
) -> CostReport {
    let mut rows: BTreeMap<String, CostSums> = BTreeMap::new();
    let mut total = CostSums::default();
    for r in groups {
        let owner = dir.owner(r);
        if !keep(&owner) {
            continue;
        }
        let key = match by {
            CostBy::AgentType => owner.agent_type,
            CostBy::Issue => owner.issue,
            CostBy::Model => r.model.clone(),
            CostBy::Session => r.session_id.clone(),
            CostBy::Agent => owner.agent,
        };
        rows.entry(key).or_default().merge(&r.sums);
        total.merge(&r.sums);
    }
    let mut rows: Vec<CostRow> = rows
        .into_iter()
        .map(|(key, sums)| CostRow { key, sums })
        .collect();
    rows.sort_by(|a, b| b.sums.cost_usd.total_cmp(&a.sums.cost_usd));
    CostReport { by, rows, total }
}

/// Per issue: what completed, failed and still active sub-agents spent, and the
/// orchestrator's own spend. Agents of an issue that spent nothing are counted too.
pub fn outcomes(groups: &[Group], dir: &Directory, keep: impl Fn(&Owner) -> bool) -> CostOutcomes {
    #[derive(Default)]
    struct Acc {
        row: Option<OutcomeRow>,
        agents: HashMap<String, AgentState>,
    }
    let empty = |issue: &str| OutcomeRow {
        issue: issue.to_string(),
        completed: OutcomeSpend::default(),
        failed: OutcomeSpend::default(),
        active: OutcomeSpend::default(),
        orchestrator: CostSums::default(),
        total: CostSums::default(),
    };
    let mut by_issue: BTreeMap<String, Acc> = BTreeMap::new();
    // Every known agent counts in its outcome, spend or not.
    for a in dir.agents.values() {
        let owner = Owner {
            issue: a.issue_id.to_string(),
            agent_type: a.agent_type.to_string(),
            agent: a.agent_id.to_string(),
            state: Some(a.status),
            is_orchestrator: false,
        };
        if !keep(&owner) {
            continue;
        }
        let acc = by_issue.entry(owner.issue.clone()).or_default();
        acc.agents.insert(owner.agent, a.status);
    }
    for r in groups {
        let owner = dir.owner(r);
        if !keep(&owner) {
            continue;
        }
        let acc = by_issue.entry(owner.issue.clone()).or_default();
        let row = acc.row.get_or_insert_with(|| empty(&owner.issue));
        row.total.merge(&r.sums);
        if owner.is_orchestrator {
            row.orchestrator.merge(&r.sums);
            continue;
        }
        // An agent the registry does not know yet is still running as far as cco knows.
        let state = owner.state.unwrap_or(AgentState::Running);
        acc.agents.entry(owner.agent).or_insert(state);
        let spend = match state {
            AgentState::Completed => &mut row.completed,
            AgentState::Failed => &mut row.failed,
            AgentState::Started | AgentState::Running => &mut row.active,
        };
        spend.sums.merge(&r.sums);
    }
    let rows = by_issue
        .into_iter()
        .map(|(issue, acc)| {
            let mut row = acc.row.unwrap_or_else(|| empty(&issue));
            for state in acc.agents.values() {
                match state {
                    AgentState::Completed => row.completed.agents += 1,
                    AgentState::Failed => row.failed.agents += 1,
                    AgentState::Started | AgentState::Running => row.active.agents += 1,
                }
            }
            row
        })
        .collect();
    CostOutcomes { rows }
}

/// `since=`: RFC 3339 (UTC, `Z`) or unix milliseconds.
pub fn parse_since(s: &str) -> Result<u64, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("since={s:?} is out of range"));
    }
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| {
            format!(
                "since={:?} is neither RFC 3339 (e.g. 2026-01-31T09:00:00Z) nor unix milliseconds",
                crate::api::inert::line(s)
            )
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    issue: Option<IssueId>,
    by: Option<String>,
    since: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomesQuery {
    issue: Option<IssueId>,
}

/// A token bound to an issue (or agent type) sees only that issue's (type's) records.
fn visible<'a>(claims: &'a Claims, issue: Option<&IssueId>) -> impl Fn(&Owner) -> bool + use<'a> {
    let wanted = issue.map(|i| i.to_string());
    move |o: &Owner| {
        wanted.as_ref().is_none_or(|w| *w == o.issue)
            && claims
                .check_binding(Some(&o.issue), Some(&o.agent_type))
                .is_ok()
    }
}

async fn directory(s: &SidecarState) -> Result<Directory, ApiError> {
    let agents = s.store().agents();
    let sessions = s.store().cost_session_issues().await?;
    Ok(Directory::new(agents, sessions))
}

/// `POST /api/cost/records`: the daemon's forward of Claude Code's api_request records.
pub async fn store_records(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiJson(body): ApiJson<CostRecords>,
) -> Result<Json<CostRecordsStored>, ApiError> {
    claims.require(Scope::EventsPublish)?;
    claims.require(Scope::AgentsWrite)?;
    if body.records.len() > MAX_RECORDS_PER_POST {
        return Err(ApiError::BadRequest(format!(
            "{} records in one call; send at most {MAX_RECORDS_PER_POST}",
            body.records.len()
        )));
    }
    for (i, r) in body.records.iter().enumerate() {
        check(r).map_err(|e| ApiError::BadRequest(format!("records[{i}]: {e}")))?;
    }
    let out = s.store().cost_insert(body.records).await?;
    Ok(Json(out))
}

/// `GET /api/cost?issue=I&by=agent-type|issue|model|session|agent&since=…`.
pub async fn get_report(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<CostReport>, ApiError> {
    claims.require(Scope::AgentsRead)?;
    let by = match q.by.as_deref() {
        None => CostBy::default(),
        Some(b) => CostBy::parse(b).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "by={:?} is not one of {}",
                crate::api::inert::line(b),
                CostBy::ALL.map(CostBy::as_str).join(", ")
            ))
        })?,
    };
    let since = q
        .since
        .as_deref()
        .map(parse_since)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let dir = directory(&s).await?;
    let groups = s.store().cost_groups(since).await?;
    Ok(Json(report(
        &groups,
        &dir,
        by,
        visible(&claims, q.issue.as_ref()),
    )))
}

/// `GET /api/cost/outcomes?issue=I`.
pub async fn get_outcomes(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiQuery(q): ApiQuery<OutcomesQuery>,
) -> Result<Json<CostOutcomes>, ApiError> {
    claims.require(Scope::AgentsRead)?;
    let dir = directory(&s).await?;
    let groups = s.store().cost_groups(None).await?;
    Ok(Json(outcomes(
        &groups,
        &dir,
        visible(&claims, q.issue.as_ref()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AgentId, AgentType};

    fn record(key: &str, session: &str, agent: Option<&str>, cost: f64) -> CostRecord {
        CostRecord {
            key: key.into(),
            session_id: session.into(),
            prompt_id: Some("p".into()),
            agent_id: agent.map(Into::into),
            query_source: None,
            model: "claude-test".into(),
            input_tokens: 10,
            output_tokens: 5,
            cache_read_tokens: 2,
            cache_creation_tokens: 1,
            cost_usd: cost,
            duration_ms: 30,
            timestamp_ms: 1_000,
        }
    }

    fn agent(id: &str, ty: &str, issue: &str, status: AgentState) -> AgentRecord {
        AgentRecord {
            agent_id: AgentId::parse(id).unwrap(),
            agent_type: AgentType::parse(ty).unwrap(),
            issue_id: IssueId::parse(issue).unwrap(),
            status,
            message: None,
            started_at: "t".into(),
            updated_at: "t".into(),
        }
    }

    fn directory() -> Directory {
        Directory::new(
            vec![
                agent(
                    "a-done",
                    "rust-specialist",
                    "issue-1",
                    AgentState::Completed,
                ),
                agent("a-bad", "debugger", "issue-1", AgentState::Failed),
                agent("a-idle", "debugger", "issue-1", AgentState::Running),
            ],
            [("s-1".to_string(), "issue-1".to_string())].into(),
        )
    }

    #[test]
    fn records_join_to_agents_and_the_main_thread_to_its_session() {
        let dir = directory();
        let owner = |r: CostRecord| dir.owner(&Group::of(&r));
        let main = owner(record("k1", "s-1", None, 1.0));
        assert_eq!(
            (main.issue.as_str(), main.agent_type.as_str()),
            ("issue-1", ORCHESTRATOR)
        );
        assert_eq!(main.agent, "orchestrator:s-1");
        let sub = owner(record("k2", "s-1", Some("a-done"), 1.0));
        assert_eq!(
            (sub.issue.as_str(), sub.agent_type.as_str()),
            ("issue-1", "rust-specialist")
        );
        assert_eq!(sub.state, Some(AgentState::Completed));
        // Before its SubagentStart: its session's issue, type unknown — and it joins later.
        let early = Group::of(&record("k3", "s-1", Some("a-later"), 1.0));
        assert_eq!(dir.owner(&early).agent_type, UNKNOWN_AGENT_TYPE);
        let mut agents: Vec<AgentRecord> = dir.agents.values().cloned().collect();
        agents.push(agent("a-later", "debugger", "issue-1", AgentState::Running));
        let later = Directory::new(agents, dir.sessions.clone());
        assert_eq!(later.owner(&early).agent_type, "debugger");
        // A session without a registration: the issue its hooks would use.
        assert_eq!(owner(record("k4", "s-2", None, 1.0)).issue, "session-s-2");
    }

    #[test]
    fn the_report_groups_filters_and_sorts_by_cost() {
        let dir = directory();
        let records = [
            record("k1", "s-1", None, 0.5),
            record("k2", "s-1", Some("a-done"), 2.0),
            record("k3", "s-1", Some("a-done"), 1.0),
            record("k4", "s-2", None, 4.0),
        ];
        let records: Vec<Group> = records.iter().map(Group::of).collect();
        let r = report(&records, &dir, CostBy::AgentType, |_| true);
        let keys: Vec<&str> = r.rows.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(keys, ["orchestrator", "rust-specialist"]);
        assert_eq!(r.rows[0].sums.cost_usd, 4.5);
        assert_eq!(r.rows[1].sums.requests, 2);
        assert_eq!(r.rows[1].sums.input_tokens, 20);
        assert_eq!(r.total.requests, 4);
        assert_eq!(r.total.cost_usd, 7.5);

        let only = |o: &Owner| o.issue == "issue-1";
        let r = report(&records, &dir, CostBy::Issue, only);
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].key, "issue-1");
        assert_eq!(r.total.cost_usd, 3.5);
        let r = report(&records, &dir, CostBy::Agent, only);
        assert_eq!(r.rows[0].key, "a-done");
        assert_eq!(r.rows[1].key, "orchestrator:s-1");
    }

    #[test]
    fn outcomes_split_spend_by_how_agents_ended() {
        let dir = directory();
        let records = [
            record("k1", "s-1", None, 0.5),
            record("k2", "s-1", Some("a-done"), 2.0),
            record("k3", "s-1", Some("a-bad"), 1.0),
        ];
        let records: Vec<Group> = records.iter().map(Group::of).collect();
        let o = outcomes(&records, &dir, |_| true);
        assert_eq!(o.rows.len(), 1);
        let row = &o.rows[0];
        assert_eq!(row.issue, "issue-1");
        assert_eq!(
            (row.completed.agents, row.completed.sums.cost_usd),
            (1, 2.0)
        );
        assert_eq!((row.failed.agents, row.failed.sums.cost_usd), (1, 1.0));
        // The running agent spent nothing yet but is counted.
        assert_eq!((row.active.agents, row.active.sums.requests), (1, 0));
        assert_eq!(row.orchestrator.cost_usd, 0.5);
        assert_eq!(row.total.cost_usd, 3.5);
    }

    #[test]
    fn the_store_counts_a_retried_record_once() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.db");
        let mut conn = super::super::journal::schema::open_conn(&path).unwrap();
        super::super::journal::schema::migrate(&mut conn, &path).unwrap();
        let store = CostStore::open(&path).unwrap();
        let a = record("s-1#5", "s-1", None, 0.5);
        let b = record("s-1#6", "s-1", Some("a-done"), 1.0);
        let got = store.insert(&[a.clone(), b.clone()]).unwrap();
        assert_eq!((got.stored, got.duplicates), (2, 0));
        let got = store.insert(&[b.clone(), a.clone()]).unwrap();
        assert_eq!((got.stored, got.duplicates), (0, 2));
        assert_eq!(store.records(None).unwrap(), vec![a.clone(), b]);
        assert!(store.records(Some(1_001)).unwrap().is_empty());
        let c = record("s-1#7", "s-1", None, 0.25);
        store.insert(std::slice::from_ref(&c)).unwrap();
        let mut groups = store.groups(None).unwrap();
        groups.sort_by(|x, y| x.agent_id.cmp(&y.agent_id));
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].agent_id, None);
        assert_eq!(groups[0].sums.requests, 2);
        assert_eq!(groups[0].sums.input_tokens, 20);
        assert_eq!(groups[0].sums.cost_usd, 0.75);
        assert_eq!(
            groups[1].sums,
            Group::of(&record("x", "s-1", None, 1.0)).sums
        );
        assert!(store.groups(Some(1_001)).unwrap().is_empty());
        assert!(store.session_issues().unwrap().is_empty());

        // The session's issue is kept once it has costed records, past the event's retention.
        let event = serde_json::json!({"event_id": "e", "seq": 1, "event_type": "session_started",
            "publisher": "session", "topic": "session-s-9", "timestamp": "t",
            "data": {"session_id": "s-9", "issue_id": "issue-9"}});
        conn.execute(
            "INSERT INTO events(seq, event_type, topic, ts_ms, json) VALUES (1, 'session_started', 'session-s-9', 0, ?1)",
            params![event.to_string()],
        )
        .unwrap();
        assert_eq!(store.session_issues().unwrap()["s-9"], "issue-9");
        store.insert(&[record("s-9#1", "s-9", None, 0.1)]).unwrap();
        conn.execute("DELETE FROM events", []).unwrap();
        assert_eq!(store.session_issues().unwrap()["s-9"], "issue-9");
    }

    #[test]
    fn records_are_checked_and_since_parses_both_forms() {
        let mut r = record("k", "s", None, 0.1);
        assert!(check(&r).is_ok());
        r.cost_usd = f64::NAN;
        assert!(check(&r).is_err());
        r.cost_usd = 0.1;
        r.model = "x\n".into();
        assert!(check(&r).unwrap_err().contains("model"));
        assert_eq!(parse_since("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_since("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert!(parse_since("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
