//! The embedded backend: the journal, leases and inbox cursors in `state.db` (SQLite, WAL)
//! and results as files, wrapping `journal`, `leases`, `inbox`, `results` and `registry`.
//! A result is recorded as pending, written, then announced in the commit that clears it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::{Error, InboxRequest, PutResult, completed_event};
use crate::api::cost::{CostRecord, CostRecordsStored};
use crate::api::leases::{Lease, ReserveRequest};
use crate::api::sidecar::{AgentCounts, AgentRecord, AgentStatusUpdate, StoredResult};
use crate::api::{AgentId, AgentType, IssueId};
use crate::server::Stopping;
use crate::sidecar::cost::{CostStore, Group};
use crate::sidecar::inbox::{Delivery, Inbox, Limits, Recipient};
use crate::sidecar::journal::{
    self, EventFilter, Journal, JournalError, JournalEvent, NewEvent, PendingResult,
};
use crate::sidecar::leases::{self, LeaseStore};
use crate::sidecar::results::{ResultsStore, pending_key};
use std::collections::HashMap;

#[derive(Debug)]
pub struct SqliteStore {
    journal: Journal,
    leases: Arc<LeaseStore>,
    inbox: Arc<Inbox>,
    results: Arc<ResultsStore>,
    state_db: PathBuf,
    cost: Arc<CostStore>,
    /// `state.db` and its WAL, measured by the health probes (not per request).
    db_bytes: AtomicU64,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Journal(JournalError::Closed))
}

impl SqliteStore {
    /// Opens `state.db` and the results directory; results recorded as pending before a
    /// crash are written and announced before anything is served.
    pub fn open(
        state_db: &Path,
        results_dir: PathBuf,
        retention: journal::Retention,
    ) -> Result<SqliteStore, crate::sidecar::OpenError> {
        let results = ResultsStore::open(results_dir)?;
        let journal = Journal::open_recovering(state_db, retention, &mut |p| {
            let (result, stored) = results.restore_pending(&p.json)?;
            Ok(completed_event(
                &result,
                &stored.path.display().to_string(),
                &stored.agent_path.display().to_string(),
            ))
        })?;
        // On the journal's database, which `open_recovering` has migrated.
        let leases = LeaseStore::open(state_db, leases::now_ms())?;
        let inbox = Inbox::open(state_db)?;
        let cost = CostStore::open(state_db)?;
        Ok(SqliteStore {
            cost: Arc::new(cost),
            journal,
            leases: Arc::new(leases),
            inbox: Arc::new(inbox),
            results: Arc::new(results),
            state_db: state_db.to_owned(),
            db_bytes: AtomicU64::new(0),
        })
    }

    /// The journal itself (health probes and tests).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }
    pub fn results_store(&self) -> &ResultsStore {
        &self.results
    }
    pub fn state_db(&self) -> &Path {
        &self.state_db
    }

    pub fn head(&self) -> u64 {
        self.journal.head()
    }
    pub fn floor(&self) -> u64 {
        self.journal.floor()
    }
    pub fn pending(&self) -> u64 {
        self.journal.pending()
    }
    pub fn subscribers(&self) -> u64 {
        self.journal.subscribers()
    }
    pub fn subscription(&self) -> journal::Subscription {
        journal::Subscription::new(&self.journal)
    }
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.journal.watch_head()
    }
    pub async fn publish(&self, event: NewEvent) -> Result<Arc<JournalEvent>, Error> {
        Ok(self.journal.publish(event).await?)
    }
    pub async fn read(
        &self,
        since: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<(Vec<Arc<JournalEvent>>, u64), Error> {
        Ok(self.journal.read(since, filter, limit).await?)
    }
    pub async fn newest(
        &self,
        before: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<(u64, Box<serde_json::value::RawValue>)>, Error> {
        let reader = self.journal.reader();
        let filter = filter.clone();
        blocking(move || {
            let conn = reader.lock().expect("reader lock");
            crate::sidecar::views::newest_events(
                &conn,
                before,
                filter.event_type.as_deref(),
                filter.topic.as_deref(),
                limit,
            )
        })
        .await?
        .map_err(|e| Error::Journal(e.into()))
    }
    pub async fn wait(
        &self,
        filter: &EventFilter,
        since: Option<u64>,
        timeout: Duration,
        stopping: Stopping,
    ) -> Result<(Vec<Arc<JournalEvent>>, u64), Error> {
        Ok(self.journal.wait(filter, since, timeout, stopping).await?)
    }

    pub fn agent(&self, id: &AgentId) -> Option<AgentRecord> {
        self.journal.agent(id)
    }
    pub fn agents(&self) -> Vec<AgentRecord> {
        self.journal.agents()
    }
    pub fn agent_counts(&self) -> AgentCounts {
        self.journal.agent_counts()
    }
    pub async fn set_agent(
        &self,
        id: AgentId,
        update: AgentStatusUpdate,
    ) -> Result<AgentRecord, Error> {
        Ok(self.journal.set_agent(id, update).await?)
    }

    pub async fn put_result(&self, stored: StoredResult) -> Result<PutResult, Error> {
        let results = &self.results;
        // One submission of this agent at a time: the check below and the write cannot
        // interleave with a concurrent retry.
        let _turn = results.lock_agent(&stored.issue_id, &stored.agent_id).await;
        // A repeat of what this agent already stored (a retried hook, a stop reported
        // twice) is acknowledged without a second write or a second `agent_completed` —
        // only when its event exists: a result still pending (its undo failed) is stored
        // and announced again.
        let existing = {
            let (r, s) = (self.results.clone(), stored.clone());
            blocking(move || r.get_agent(&s.issue_id, &s.agent_type, &s.agent_id)).await?
        };
        if let Some(json) = existing
            && let Ok(prev) = serde_json::from_str::<StoredResult>(&json)
            && prev.result == stored.result
            && !self.journal.is_pending(&pending_key(&prev))
        {
            return Ok(PutResult::Unchanged {
                path: results
                    .path_of(&stored.issue_id, &stored.agent_type)
                    .display()
                    .to_string(),
            });
        }
        // Recorded as pending first, then written, then announced in the commit that
        // clears the pending row: a crash anywhere is finished on the next start
        // (`SqliteStore::open`). If writing or announcing fails, the write is undone and
        // the pending row dropped, so an error means "nothing happened" and a retry is safe.
        let key = pending_key(&stored);
        self.journal
            .intend(PendingResult {
                key: key.clone(),
                json: serde_json::to_string(&stored).expect("results serialize"),
            })
            .await?;
        let written = {
            let (r, s) = (self.results.clone(), stored.clone());
            blocking(move || r.store(&s)).await?
        };
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                self.forget(key).await;
                return Err(e.into());
            }
        };
        let path = written.path.display().to_string();
        let agent_path = written.agent_path.display().to_string();
        let published = self
            .journal
            .complete(key.clone(), completed_event(&stored, &path, &agent_path))
            .await;
        match published {
            Ok(event) => Ok(PutResult::Stored { path, event }),
            Err(e) => {
                let r = self.results.clone();
                match blocking(move || r.undo(written)).await {
                    Ok(Ok(())) => self.forget(key).await,
                    Ok(Err(undo)) => {
                        tracing::error!(error = %undo, "cannot undo a result whose event failed; it is announced on the next start")
                    }
                    Err(undo) => {
                        tracing::error!(error = %undo, "cannot undo a result whose event failed; it is announced on the next start")
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Drops a pending result whose files were not (or no longer) written; if even that
    /// fails, the next start finishes it, which a retry would have done anyway.
    async fn forget(&self, key: String) {
        if let Err(e) = self.journal.forget(key.clone()).await {
            tracing::error!(key, error = %e, "cannot drop a pending result; it is announced on the next start");
        }
    }

    pub async fn results(&self, issue: &IssueId) -> Result<Vec<Arc<str>>, Error> {
        if self.results.is_loaded(issue) {
            return Ok(self.results.list(issue));
        }
        let (r, issue) = (self.results.clone(), issue.clone());
        blocking(move || r.list(&issue)).await
    }
    pub async fn result_of(
        &self,
        issue: &IssueId,
        agent_type: &AgentType,
        agent: &AgentId,
    ) -> Result<Option<Arc<str>>, Error> {
        let r = self.results.clone();
        let (issue, agent_type, agent) = (issue.clone(), agent_type.clone(), agent.clone());
        blocking(move || r.get_agent(&issue, &agent_type, &agent)).await
    }
    pub fn results_stored(&self) -> u64 {
        self.results.files()
    }
    pub fn bytes(&self) -> u64 {
        self.results.bytes() + self.db_bytes.load(Ordering::Relaxed)
    }
    /// Measures `state.db` (blocking; the health probes call it).
    pub fn measure(&self) {
        let wal = self.state_db.with_extension("db-wal");
        let db: u64 = [self.state_db.as_path(), wal.as_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        self.db_bytes.store(db, Ordering::Relaxed);
    }
    pub fn results_failing(&self) -> bool {
        self.results.failing()
    }

    pub fn leases_empty(&self) -> bool {
        self.leases.is_empty()
    }
    pub fn leases(&self, issue: Option<&IssueId>, now: u64) -> Vec<Lease> {
        self.leases.list(issue, now)
    }
    pub fn exclusive_holder(
        &self,
        issue: &IssueId,
        path: &str,
        asking: Option<&AgentId>,
        alive: &dyn Fn(&AgentId) -> bool,
        now: u64,
    ) -> Option<Lease> {
        self.leases
            .exclusive_holder(issue, path, asking, alive, now)
    }
    pub async fn reserve(
        &self,
        issue: &IssueId,
        req: &ReserveRequest,
        agent_type: Option<AgentType>,
        now: u64,
    ) -> Result<Lease, Error> {
        let (l, issue, req) = (self.leases.clone(), issue.clone(), req.clone());
        Ok(blocking(move || l.reserve(&issue, &req, agent_type, now)).await??)
    }
    pub async fn renew(
        &self,
        issue: &IssueId,
        lease_id: &str,
        agent: &AgentId,
        ttl_secs: Option<u64>,
        now: u64,
    ) -> Result<Lease, Error> {
        let (l, issue, id, agent) = (
            self.leases.clone(),
            issue.clone(),
            lease_id.to_owned(),
            agent.clone(),
        );
        Ok(blocking(move || l.renew(&issue, &id, &agent, ttl_secs, now)).await??)
    }
    pub async fn release(
        &self,
        issue: &IssueId,
        lease_id: &str,
        agent: Option<&AgentId>,
        now: u64,
    ) -> Result<Lease, Error> {
        let (l, issue, id, agent) = (
            self.leases.clone(),
            issue.clone(),
            lease_id.to_owned(),
            agent.cloned(),
        );
        Ok(blocking(move || l.release(&issue, &id, agent.as_ref(), now)).await??)
    }
    pub async fn release_agent(
        &self,
        issue: &IssueId,
        agent: &AgentId,
    ) -> Result<Vec<String>, Error> {
        let (l, issue, agent) = (self.leases.clone(), issue.clone(), agent.clone());
        Ok(blocking(move || l.release_agent(&issue, &agent)).await??)
    }

    pub async fn deliver(
        &self,
        to: InboxRequest,
        head: u64,
        limits: Limits,
    ) -> Result<Delivery, Error> {
        let inbox = self.inbox.clone();
        blocking(move || {
            inbox.deliver_within(
                &Recipient {
                    issue: &to.issue,
                    agent: &to.agent,
                    agent_type: to.agent_type.as_ref(),
                    registered_at: to.registered_at.as_deref(),
                },
                head,
                limits,
            )
        })
        .await?
        .map_err(Error::from)
    }

    pub async fn cost_insert(&self, records: Vec<CostRecord>) -> Result<CostRecordsStored, Error> {
        let cost = self.cost.clone();
        Ok(blocking(move || cost.insert(&records)).await??)
    }
    pub async fn cost_groups(&self, since_ms: Option<u64>) -> Result<Vec<Group>, Error> {
        let cost = self.cost.clone();
        Ok(blocking(move || cost.groups(since_ms)).await??)
    }
    pub async fn cost_session_issues(&self) -> Result<HashMap<String, String>, Error> {
        let cost = self.cost.clone();
        Ok(blocking(move || cost.session_issues()).await??)
    }

    pub fn results_dir(&self) -> Option<&Path> {
        Some(self.results.dir())
    }

    pub fn event_bus_healthy(&self) -> bool {
        self.journal.writer_alive() && self.journal.ping()
    }

    pub fn close(&self) {
        self.journal.close();
    }
}
