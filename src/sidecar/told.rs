//! What each agent was told (issue 12 §2): the SubagentStart context, its note and every
//! inbox delivery, kept durably in the journal's database (table `told`) as hashes and sizes
//! — never the text — and served by `GET /api/agents/{agent_id}`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rusqlite::{Connection, params};

use super::SidecarState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, RequireScope};
use super::journal::{JournalError, rfc3339_now};
use crate::api::inert;
use crate::api::sidecar::{Event, FileContent, ProjectContext, StoredResult};
use crate::api::told::{
    AgentDetail, Told, ToldContext, ToldDelivery, ToldFile, ToldNote, ToldReport, ToldResult, hash,
};
use crate::api::{AgentId, IssueId};
use crate::auth::{Claims, Scope};

/// Most inbox deliveries kept per agent (the newest): each row is ~200 bytes of metadata, so
/// an agent that runs for hours costs at most ~100 KB.
pub const MAX_TOLD_DELIVERIES: usize = 500;
/// Longest `via` label (a hook event's name, `mcp`, `api`).
pub const MAX_VIA: usize = 32;
/// `via` of an inbox read that named no channel: a script calling the REST route.
pub const VIA_API: &str = "api";
/// The first line of every SubagentStart context (`hook::render_context`): what comes before
/// it in the `additionalContext` is the note (issue 10 §1: the agent's id, issue and tools).
pub const CONTEXT_HEADING: &str = "# cco context for ";
/// Where the inbox events pushed with the SubagentStart answer begin (`hook::inbox::render`,
/// after the context); their deliveries are recorded by the inbox route, not as context.
pub const INBOX_MARKER: &str = "\n[cco inbox: ";
/// What `render_context` writes when it cut the context to its budget.
const TRUNCATED_MARK: &str = "[context truncated";

const KIND_CONTEXT: &str = "context";
const KIND_NOTE: &str = "note";
const KIND_INBOX: &str = "inbox";

/// The `told` table, on its own connection to the journal's database.
#[derive(Debug)]
pub struct ToldStore {
    conn: Mutex<Connection>,
}

impl ToldStore {
    /// Opens on the journal's database (migrated by `Journal::open`).
    pub fn open(path: &Path) -> Result<ToldStore, JournalError> {
        Ok(ToldStore {
            conn: Mutex::new(super::journal::schema::open_conn(path)?),
        })
    }

    /// Replaces the agent's context record (a SubagentStart repeated for one id keeps the
    /// last) and its note (dropped when this start had none).
    pub fn set_start(
        &self,
        agent: &AgentId,
        issue: &IssueId,
        context: &ToldContext,
        note: Option<&ToldNote>,
    ) -> Result<(), JournalError> {
        let mut conn = self.conn.lock().expect("told lock");
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM told WHERE agent_id = ?1 AND issue_id = ?2 AND kind IN (?3, ?4)",
            params![agent.as_str(), issue.as_str(), KIND_CONTEXT, KIND_NOTE],
        )?;
        let json = serde_json::to_string(context).expect("told serializes");
        tx.execute(
            "INSERT INTO told(agent_id, issue_id, kind, json) VALUES (?1, ?2, ?3, ?4)",
            params![agent.as_str(), issue.as_str(), KIND_CONTEXT, json],
        )?;
        if let Some(note) = note {
            let json = serde_json::to_string(note).expect("told serializes");
            tx.execute(
                "INSERT INTO told(agent_id, issue_id, kind, json) VALUES (?1, ?2, ?3, ?4)",
                params![agent.as_str(), issue.as_str(), KIND_NOTE, json],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Appends inbox deliveries, keeping the newest [`MAX_TOLD_DELIVERIES`] of the agent.
    pub fn add_deliveries(
        &self,
        agent: &AgentId,
        issue: &IssueId,
        deliveries: &[ToldDelivery],
    ) -> Result<(), JournalError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.lock().expect("told lock");
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO told(agent_id, issue_id, kind, json) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for d in deliveries {
                let json = serde_json::to_string(d).expect("told serializes");
                insert.execute(params![agent.as_str(), issue.as_str(), KIND_INBOX, json])?;
            }
        }
        tx.execute(
            "DELETE FROM told WHERE agent_id = ?1 AND issue_id = ?2 AND kind = ?3 AND id <= (
                 SELECT id FROM told WHERE agent_id = ?1 AND issue_id = ?2 AND kind = ?3
                 ORDER BY id DESC LIMIT 1 OFFSET ?4)",
            params![
                agent.as_str(),
                issue.as_str(),
                KIND_INBOX,
                MAX_TOLD_DELIVERIES as i64
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Everything recorded for `agent` (empty when nothing was).
    pub fn get(&self, agent: &AgentId) -> Result<Told, JournalError> {
        let conn = self.conn.lock().expect("told lock");
        let mut stmt =
            conn.prepare_cached("SELECT kind, json FROM told WHERE agent_id = ?1 ORDER BY id")?;
        let mut rows = stmt.query([agent.as_str()])?;
        let mut told = Told::default();
        while let Some(r) = rows.next()? {
            let (kind, json): (String, String) = (r.get(0)?, r.get(1)?);
            // A row this build cannot read (written by a newer one) is skipped, not fatal.
            let skip = |e: serde_json::Error| {
                tracing::warn!(agent = %agent, kind, error = %e, "told: skipping an unreadable row");
            };
            match kind.as_str() {
                KIND_CONTEXT => match serde_json::from_str(&json) {
                    Ok(c) => told.context = Some(c),
                    Err(e) => skip(e),
                },
                KIND_NOTE => match serde_json::from_str(&json) {
                    Ok(n) => told.note = Some(n),
                    Err(e) => skip(e),
                },
                KIND_INBOX => match serde_json::from_str(&json) {
                    Ok(d) => told.inbox.push(d),
                    Err(e) => skip(e),
                },
                _ => {}
            }
        }
        Ok(told)
    }
}

/// Splits a SubagentStart `additionalContext` — `[note\n]context[\ninbox events]` — into
/// its context and its note.
pub fn split_note(text: &str) -> (&str, Option<&str>) {
    let (note, rest) = match text.find(CONTEXT_HEADING) {
        Some(at) if at > 0 => {
            let note = &text[..at];
            (Some(note.strip_suffix('\n').unwrap_or(note)), &text[at..])
        }
        _ => (None, text),
    };
    // The events come last; a result quoting the marker sits before them.
    let context = rest.rfind(INBOX_MARKER).map_or(rest, |at| &rest[..at]);
    (context, note.filter(|n| !n.is_empty()))
}

/// What a SubagentStart text contained: its size and hash, and which of the files and
/// results the sidecar offered for it made it in (`render_context` writes a `### path`
/// heading and fenced content per file, a `- path (content withheld` line per withheld
/// one, and a ``- `agent_type`: `` line per result).
pub fn analyse(
    text: &str,
    budget: u64,
    files: &[FileContent],
    results: &[Arc<str>],
    at: String,
) -> (ToldContext, Option<ToldNote>) {
    let (context, note) = split_note(text);
    let files = files
        .iter()
        .filter(|f| {
            // Whole blocks only: a file whose content the budget cut is not claimed. The
            // text went through `inert::block`, a per-character escape, so the needle does.
            let needle = match f.withheld {
                None => format!("\n### {}\n```\n{}\n```\n", f.path, f.content.trim_end()),
                Some(_) => format!("- {} (content withheld", f.path),
            };
            context.contains(inert::block(&needle).as_ref())
        })
        .map(|f| ToldFile {
            path: f.path.clone(),
            bytes: f.content.len() as u64,
            hash: hash(f.content.as_bytes()),
        })
        .collect();
    let results_part = context
        .find("\n## Earlier agents' results")
        .map_or("", |at| &context[at..]);
    let mut results: Vec<ToldResult> = results
        .iter()
        .filter_map(|json| {
            let r: StoredResult = serde_json::from_str(json).ok()?;
            results_part
                .contains(&format!("- `{}`: ", r.agent_type))
                .then(|| ToldResult {
                    issue_id: r.issue_id,
                    agent_type: r.agent_type,
                    hash: hash(json.as_bytes()),
                })
        })
        .collect();
    results.sort_by(|a, b| a.agent_type.as_str().cmp(b.agent_type.as_str()));
    let told = ToldContext {
        bytes: context.len() as u64,
        truncated: context.contains(TRUNCATED_MARK),
        budget,
        hash: hash(context.as_bytes()),
        files,
        results,
        at,
    };
    let note = note.map(|n| ToldNote {
        bytes: n.len() as u64,
        hash: hash(n.as_bytes()),
    });
    (told, note)
}

/// A checked `via` label: [`VIA_API`] when none was given.
pub fn via_label(via: Option<&str>) -> Result<String, ApiError> {
    match via {
        None | Some("") => Ok(VIA_API.to_string()),
        Some(v)
            if v.len() <= MAX_VIA
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) =>
        {
            Ok(v.to_string())
        }
        Some(_) => Err(ApiError::BadRequest(format!(
            "`via` must be 1-{MAX_VIA} letters, digits, `_`, `.` or `-`, e.g. via=PostToolUse"
        ))),
    }
}

/// Records the events just delivered to `agent`, after the answer: the write runs on a
/// blocking thread nobody waits for, so it adds nothing to the hook that asked.
pub fn record_deliveries(
    s: &SidecarState,
    agent: &AgentId,
    issue: &IssueId,
    events: &[Event],
    via: String,
) -> tokio::task::JoinHandle<()> {
    let delivered_at = rfc3339_now();
    let rows: Vec<ToldDelivery> = events
        .iter()
        .map(|e| ToldDelivery {
            seq: e.seq,
            event_type: e.event_type.clone(),
            topic: e.topic.clone(),
            delivered_at: delivered_at.clone(),
            via: via.clone(),
        })
        .collect();
    let (s, agent, issue) = (s.clone(), agent.clone(), issue.clone());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = s.inner.told.add_deliveries(&agent, &issue, &rows) {
            tracing::warn!(agent = %agent, error = %e, "could not record the inbox delivery");
        }
    })
}

/// `GET /api/agents/{agent_id}`: the registry entry, what it was told, and its result.
pub async fn agent_detail(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath(agent_id): ApiPath<AgentId>,
) -> Result<Json<AgentDetail>, ApiError> {
    claims.require(Scope::AgentsRead)?;
    let Some(agent) = s.store().agent(&agent_id) else {
        return Err(ApiError::NotFound(format!(
            "no agent {agent_id} is registered; `cco agents show` needs an id from GET /api/agents"
        )));
    };
    claims.check_binding(
        Some(agent.issue_id.as_str()),
        Some(agent.agent_type.as_str()),
    )?;
    let result = s
        .store()
        .result_of(&agent.issue_id, &agent.agent_type, &agent.agent_id)
        .await?
        .and_then(|json| serde_json::from_str::<StoredResult>(&json).ok());
    let s2 = s.clone();
    let id = agent.agent_id.clone();
    let told = tokio::task::spawn_blocking(move || s2.inner.told.get(&id))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(AgentDetail {
        agent,
        told,
        result,
    }))
}

/// `POST /api/agents/{agent_id}/told`: the daemon's report of the SubagentStart text it
/// answered with; 201 with the record. The files and results are matched against what the context broker and the
/// results store offer for the agent's project, type and issue (warm caches: no rescan).
pub async fn report(
    claims: Claims,
    State(s): State<SidecarState>,
    ApiPath(agent_id): ApiPath<AgentId>,
    ApiJson(rep): ApiJson<ToldReport>,
) -> Result<(StatusCode, Json<ToldContext>), ApiError> {
    claims.require(Scope::AgentsWrite)?;
    claims.check_binding(Some(rep.issue_id.as_str()), Some(rep.agent_type.as_str()))?;
    via_label(Some(&rep.via))?;
    // A registered agent is reported only under its own issue and type: a token could
    // otherwise overwrite what another issue's agent was told.
    if let Some(rec) = s.store().agent(&agent_id)
        && (rec.issue_id != rep.issue_id || rec.agent_type != rep.agent_type)
    {
        return Err(crate::auth::AuthError::OutOfScope(format!(
            "agent {agent_id} is {} on issue {}, not {} on {}",
            rec.agent_type, rec.issue_id, rep.agent_type, rep.issue_id
        ))
        .into());
    }
    let files = match super::routes::project_root(&claims, None, s.inner.home.as_deref()) {
        Ok(root) => match s.inner.context.project(root, rep.agent_type.clone()).await {
            Ok(built) => serde_json::from_str::<ProjectContext>(&built.json)
                .map(|p| p.relevant_files)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        // No project (a token bound to none): the text can carry no files.
        Err(_) => Vec::new(),
    };
    let results = s.store().results(&rep.issue_id).await?;
    let s2 = s.clone();
    let context = tokio::task::spawn_blocking(move || {
        let (context, note) = analyse(&rep.text, rep.budget, &files, &results, rfc3339_now());
        s2.inner
            .told
            .set_start(&agent_id, &rep.issue_id, &context, note.as_ref())
            .map(|()| context)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, Json(context)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AgentType;
    use crate::hook::{CONTEXT_BUDGET, render_context};

    /// A delivery of an event on the issue's broadcast topic (its id).
    fn delivery(seq: u64, issue: &IssueId, via: &str) -> ToldDelivery {
        ToldDelivery {
            seq,
            event_type: "note".into(),
            topic: issue.to_string(),
            delivered_at: "2026-01-01T00:00:00.000Z".into(),
            via: via.into(),
        }
    }

    fn store(dir: &Path) -> ToldStore {
        let db = dir.join("state.db");
        let mut conn = super::super::journal::schema::open_conn(&db).unwrap();
        super::super::journal::schema::migrate(&mut conn, &db).unwrap();
        ToldStore::open(&db).unwrap()
    }

    fn file(path: &str, content: &str, withheld: Option<&str>) -> FileContent {
        FileContent {
            path: path.into(),
            size: content.len() as u64,
            content: content.into(),
            truncated: false,
            withheld: withheld.map(String::from),
        }
    }

    fn project(files: Vec<FileContent>) -> ProjectContext {
        serde_json::from_value(serde_json::json!({
            "root": "/p", "name": "p", "patterns": [], "truncated": false, "git": null,
            "metadata": {"languages": {}, "file_count": 2, "dir_count": 1, "total_bytes": 10},
            "relevant_files": files, "structure": ["src/lib.rs"],
        }))
        .unwrap()
    }

    fn result(agent_type: &str, summary: &str) -> Arc<str> {
        serde_json::json!({"agent_id": "a0", "agent_type": agent_type, "issue_id": "i-1",
            "stored_at": "2026-01-01T00:00:00Z", "result": {"status": "success", "summary": summary}})
        .to_string()
        .into()
    }

    /// The record names exactly the files and results the rendered text carried, and its
    /// hash is the text's: what `render_context` leaves out is not claimed.
    #[test]
    fn the_record_matches_the_rendered_text() {
        let files = vec![
            file("src/lib.rs", "pub fn f() {}", None),
            file("config.yml", "", Some("looks like a secret")),
            file("big.rs", &"x".repeat(4000), None),
        ];
        let p = project(files.clone());
        let results = [result("chief-architect", "use REST")];
        let stored: Vec<StoredResult> = results
            .iter()
            .map(|j| serde_json::from_str(j).unwrap())
            .collect();
        let (issue, ty) = (
            IssueId::parse("i-1").unwrap(),
            AgentType::parse("rust-specialist").unwrap(),
        );
        // A budget the first files fit in and the big one starts in but is cut.
        let budget = 600;
        let text = render_context(Some(&p), &stored, false, &issue, &ty, budget);
        assert!(text.contains("### big.rs"), "{text}");
        let (told, note) = analyse(&text, budget as u64, &files, &results, "t".into());
        assert_eq!(note, None);
        assert_eq!(told.hash, hash(text.as_bytes()));
        assert_eq!(told.bytes, text.len() as u64);
        let paths: Vec<&str> = told.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["src/lib.rs", "config.yml"]);
        assert_eq!(told.files[0].hash, hash(b"pub fn f() {}"));
        assert_eq!(told.results.len(), 1);
        assert_eq!(told.results[0].agent_type.as_str(), "chief-architect");
        assert_eq!(told.results[0].hash, hash(results[0].as_bytes()));
        assert!(told.truncated, "a cut context says so");
        let full = render_context(Some(&p), &stored, false, &issue, &ty, CONTEXT_BUDGET);
        let (told, _) = analyse(&full, CONTEXT_BUDGET as u64, &files, &results, "t".into());
        assert_eq!(told.files.len(), 3);
        assert!(!told.truncated);
    }

    /// The hook's layout: the note, the context, then the events pushed with it.
    #[test]
    fn the_note_and_the_pushed_events_are_not_the_context() {
        let note = "[cco] You are agent `a-1` (reviewer) on issue `i-1`.";
        let context = "# cco context for `reviewer` on issue `i-1`\nbody\n";
        let mail = "[cco inbox: 1 new event(s) addressed to you; answer with mcp__cco__publish]\n";
        let text = format!("{note}\n{context}\n{mail}");
        let (told, n) = analyse(&text, 100, &[], &[], "t".into());
        assert_eq!(told.hash, hash(context.as_bytes()));
        assert_eq!(told.bytes, context.len() as u64);
        assert_eq!(
            n,
            Some(ToldNote {
                bytes: note.len() as u64,
                hash: hash(note.as_bytes())
            })
        );
        // Without a note or events (a hook that adds neither), the text is the context.
        let (told, n) = analyse(context, 100, &[], &[], "t".into());
        assert_eq!((told.hash, n), (hash(context.as_bytes()), None));
    }

    /// Durable: a reopened store has the context, the note and the deliveries, oldest first;
    /// a repeated start replaces the context; the deliveries stay capped.
    #[test]
    fn records_survive_a_reopen_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, issue) = (
            AgentId::parse("a-1").unwrap(),
            IssueId::parse("i-1").unwrap(),
        );
        let (ctx, note) = analyse("first", 10, &[], &[], "t".into());
        let s = store(dir.path());
        s.set_start(&agent, &issue, &ctx, None).unwrap();
        let (ctx, _) = analyse("second", 10, &[], &[], "t".into());
        let note = note.or(Some(ToldNote {
            bytes: 3,
            hash: hash(b"abc"),
        }));
        s.set_start(&agent, &issue, &ctx, note.as_ref()).unwrap();
        let many: Vec<ToldDelivery> = (1..=MAX_TOLD_DELIVERIES as u64 + 5)
            .map(|seq| delivery(seq, &issue, "PostToolUse"))
            .collect();
        s.add_deliveries(&agent, &issue, &many[..3]).unwrap();
        s.add_deliveries(&agent, &issue, &many[3..]).unwrap();
        drop(s);
        let told = store(dir.path()).get(&agent).unwrap();
        assert_eq!(told.context.unwrap().hash, hash(b"second"));
        assert_eq!(told.note.unwrap().hash, hash(b"abc"));
        assert_eq!(told.inbox.len(), MAX_TOLD_DELIVERIES);
        assert_eq!(told.inbox[0].seq, 6, "the oldest are dropped first");
        assert_eq!(
            told.inbox.last().unwrap().seq,
            MAX_TOLD_DELIVERIES as u64 + 5
        );
        let other = AgentId::parse("a-2").unwrap();
        assert_eq!(store(dir.path()).get(&other).unwrap(), Told::default());
    }

    #[test]
    fn via_is_checked() {
        assert_eq!(via_label(None).unwrap(), VIA_API);
        assert_eq!(via_label(Some("PostToolUse")).unwrap(), "PostToolUse");
        assert!(via_label(Some("a b")).is_err());
        assert!(via_label(Some(&"x".repeat(MAX_VIA + 1))).is_err());
    }
}
