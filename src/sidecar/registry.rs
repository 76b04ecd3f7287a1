//! The agent registry: the latest lifecycle record of every agent, kept in memory and
//! persisted by the journal's writer (table `agents`) in the same commits as events.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;

use crate::api::AgentId;
use crate::api::sidecar::{AgentCounts, AgentRecord, AgentState, AgentStatusUpdate};

#[derive(Debug, Default)]
pub struct Registry {
    agents: RwLock<HashMap<AgentId, AgentRecord>>,
    /// Rows of `agents` that did not parse at start-up (logged with their key).
    skipped: AtomicU64,
}

impl Registry {
    /// Loads every row of `agents`; a row that does not parse is logged with its key and
    /// counted (`skipped`), never silently dropped.
    pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Registry> {
        let mut agents = HashMap::new();
        let mut skipped = 0;
        let mut stmt = conn.prepare("SELECT agent_id, json FROM agents")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (key, json) = row?;
            match serde_json::from_str::<AgentRecord>(&json) {
                Ok(rec) => {
                    agents.insert(rec.agent_id.clone(), rec);
                }
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(agent_id = %key, error = %e,
                        "skipping an agent registry row that does not parse (kept in state.db)");
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "agent registry: {skipped} row(s) could not be read; `GET /api/agents` omits them"
            );
        }
        Ok(Registry {
            agents: RwLock::new(agents),
            skipped: AtomicU64::new(skipped),
        })
    }

    /// Rows left out at start-up because they did not parse.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub fn get(&self, id: &AgentId) -> Option<AgentRecord> {
        self.agents.read().expect("agents lock").get(id).cloned()
    }

    /// Every record, sorted by agent id.
    pub fn list(&self) -> Vec<AgentRecord> {
        let mut v: Vec<AgentRecord> = self
            .agents
            .read()
            .expect("agents lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        v
    }

    pub fn counts(&self) -> AgentCounts {
        counts(self.agents.read().expect("agents lock").values())
    }

    /// The record an update makes: it keeps the agent's first `started_at`.
    pub(crate) fn merge(
        previous: Option<&AgentRecord>,
        id: &AgentId,
        update: AgentStatusUpdate,
        now: &str,
    ) -> AgentRecord {
        AgentRecord {
            agent_id: id.clone(),
            agent_type: update.agent_type,
            issue_id: update.issue_id,
            status: update.status,
            message: update.message,
            started_at: previous.map_or_else(|| now.to_string(), |r| r.started_at.clone()),
            updated_at: now.to_string(),
        }
    }

    /// Makes committed records visible.
    pub(crate) fn apply<'a>(&self, records: impl Iterator<Item = &'a AgentRecord>) {
        let mut agents = self.agents.write().expect("agents lock");
        for rec in records {
            agents.insert(rec.agent_id.clone(), rec.clone());
        }
    }
}

pub fn counts<'a>(agents: impl Iterator<Item = &'a AgentRecord>) -> AgentCounts {
    let mut c = AgentCounts::default();
    for a in agents {
        match a.status {
            AgentState::Started | AgentState::Running => c.active += 1,
            AgentState::Completed => c.completed += 1,
            AgentState::Failed => c.failed += 1,
        }
        *c.by_type.entry(a.agent_type.to_string()).or_default() += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparsable_rows_are_counted_not_dropped_silently() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE agents (agent_id TEXT PRIMARY KEY, json TEXT NOT NULL);
             INSERT INTO agents VALUES('bad-1', '{\"agent_id\":\"bad-1\",\"status\":\"dancing\"}');
             INSERT INTO agents VALUES('good', '{\"agent_id\":\"good\",\"agent_type\":\"t\",\"issue_id\":\"i\",\"status\":\"running\",\"started_at\":\"x\",\"updated_at\":\"x\"}');",
        )
        .unwrap();
        let r = Registry::load(&conn).unwrap();
        assert_eq!(r.skipped(), 1);
        assert_eq!(r.list().len(), 1);
        assert_eq!(r.counts().active, 1);
    }
}
