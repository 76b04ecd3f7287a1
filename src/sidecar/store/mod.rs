//! The storage seam: everything the sidecar keeps — the event journal (seq cursors, long-poll
//! wake, SSE tail, retention floor), results, the agent registry, leases, inbox cursors and
//! cost records —
//! behind one [`Store`], embedded SQLite + files ([`sqlite`]) or NATS JetStream ([`nats`]).
//!
//! `Store` is an enum, not a trait object: there are exactly two backends, both known at
//! compile time, and the handlers' hot paths (lease checks, tail reads) stay statically
//! dispatched and inlinable, with plain `async fn`s instead of boxed `async_trait` futures.

pub mod nats;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::cost::Group;
use super::error::ApiError;
use super::inbox::{Delivery, Limits};
use super::journal::{EventFilter, JournalError, JournalEvent, NewEvent};
use super::leases::LeaseError;
use super::results;
use crate::api::cost::{CostRecord, CostRecordsStored};
use crate::api::leases::{Lease, ReserveRequest};
use crate::api::sidecar::{AgentCounts, AgentRecord, AgentStatusUpdate, StoredResult};
use crate::api::{AgentId, AgentType, EventType, IssueId};
use crate::server::Stopping;

pub use nats::NatsStore;
pub use sqlite::SqliteStore;

/// The event a stored result publishes.
pub const AGENT_COMPLETED: &str = "agent_completed";

/// Why a storage operation failed; each maps to one HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Results(#[from] results::StoreError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The shared store cannot be reached (or refused); `reason` says why.
    #[error("the shared store is unavailable: {0}")]
    Unavailable(String),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Journal(e) => e.into(),
            Error::Results(e) => e.into(),
            Error::Lease(e) => e.into(),
            Error::Unavailable(reason) => ApiError::StoreUnavailable { reason },
        }
    }
}

/// What `put_result` did.
#[derive(Debug)]
pub enum PutResult {
    /// The same agent had stored exactly this result, announced: nothing was written.
    Unchanged { path: String },
    /// Stored and announced by `event`.
    Stored {
        path: String,
        event: Arc<JournalEvent>,
    },
}

/// Who asks for its inbox (owned: the SQLite backend answers on a blocking thread).
#[derive(Debug, Clone)]
pub struct InboxRequest {
    pub issue: IssueId,
    pub agent: AgentId,
    pub agent_type: Option<AgentType>,
    pub registered_at: Option<String>,
}

/// The storage of one sidecar.
#[derive(Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Nats(NatsStore),
}

/// Counts an open long poll or stream for `/status` while it lives.
pub enum Subscription {
    Sqlite(super::journal::Subscription),
    Nats(nats::Subscription),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Nats($s) => $e,
        }
    };
}

impl Store {
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Nats(_) => "nats",
        }
    }

    // --- events -------------------------------------------------------------------------

    /// The seq of the newest stored event (0 when there never was one).
    pub fn head(&self) -> u64 {
        each!(self, s => s.head())
    }
    /// Events up to this seq are gone (retention); older cursors get 410.
    pub fn floor(&self) -> u64 {
        each!(self, s => s.floor())
    }
    /// Writes accepted and not yet stored.
    pub fn pending(&self) -> u64 {
        each!(self, s => s.pending())
    }
    pub fn subscribers(&self) -> u64 {
        each!(self, s => s.subscribers())
    }
    pub fn subscription(&self) -> Subscription {
        match self {
            Store::Sqlite(s) => Subscription::Sqlite(s.subscription()),
            Store::Nats(s) => Subscription::Nats(s.subscription()),
        }
    }
    /// A receiver that changes whenever new events are stored (here or, on NATS, anywhere).
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        each!(self, s => s.watch_head())
    }
    /// 410 for a cursor below the floor or above the head.
    pub fn check_cursor(&self, since: u64) -> Result<(), Error> {
        let floor = self.floor();
        if since < floor {
            return Err(JournalError::Gone { since, floor }.into());
        }
        let head = self.head();
        if since > head {
            return Err(JournalError::Ahead { since, head }.into());
        }
        Ok(())
    }
    /// Appends an event; returns once it is durable and visible to waiters.
    pub async fn publish(&self, event: NewEvent) -> Result<Arc<JournalEvent>, Error> {
        each!(self, s => s.publish(event).await)
    }
    /// Matching events with seq > `since`, at most `limit`, and the cursor to continue from.
    pub async fn read(
        &self,
        since: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<(Vec<Arc<JournalEvent>>, u64), Error> {
        each!(self, s => s.read(since, filter, limit).await)
    }
    /// Waits until a matching event with seq > `since` exists (all of them, up to
    /// `MAX_EVENTS_PER_ANSWER`), `timeout` passes or the server stops. Without `since`
    /// only events stored after the call count.
    pub async fn wait(
        &self,
        filter: &EventFilter,
        since: Option<u64>,
        timeout: Duration,
        stopping: Stopping,
    ) -> Result<(Vec<Arc<JournalEvent>>, u64), Error> {
        each!(self, s => s.wait(filter, since, timeout, stopping).await)
    }

    /// Matching events with seq < `before`, newest first, at most `limit` (the dashboard's
    /// paged listing). On NATS the walk back is bounded by `nats::NEWEST_SCAN_SPAN`.
    pub async fn newest(
        &self,
        before: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<(u64, Box<RawValue>)>, Error> {
        each!(self, s => s.newest(before, filter, limit).await)
    }

    // --- agent registry -----------------------------------------------------------------

    pub fn agent(&self, id: &AgentId) -> Option<AgentRecord> {
        each!(self, s => s.agent(id))
    }
    pub fn agents(&self) -> Vec<AgentRecord> {
        each!(self, s => s.agents())
    }
    pub fn agent_counts(&self) -> AgentCounts {
        each!(self, s => s.agent_counts())
    }
    /// Records an agent's lifecycle update durably; returns the merged entry.
    pub async fn set_agent(
        &self,
        id: AgentId,
        update: AgentStatusUpdate,
    ) -> Result<AgentRecord, Error> {
        each!(self, s => s.set_agent(id, update).await)
    }

    // --- results ------------------------------------------------------------------------

    /// Stores `result` and publishes its `agent_completed` atomically: after any crash
    /// there is never a result without its event. An identical, announced repeat of the
    /// same agent is `Unchanged`.
    pub async fn put_result(&self, result: StoredResult) -> Result<PutResult, Error> {
        each!(self, s => s.put_result(result).await)
    }
    /// Every agent's result on the issue, as JSON texts.
    pub async fn results(&self, issue: &IssueId) -> Result<Vec<Arc<str>>, Error> {
        each!(self, s => s.results(issue).await)
    }
    /// `agent`'s own result of `agent_type` on `issue`.
    pub async fn result_of(
        &self,
        issue: &IssueId,
        agent_type: &AgentType,
        agent: &AgentId,
    ) -> Result<Option<Arc<str>>, Error> {
        each!(self, s => s.result_of(issue, agent_type, agent).await)
    }
    /// Results stored, and the bytes the store occupies (for `/status`).
    pub fn results_stored(&self) -> u64 {
        each!(self, s => s.results_stored())
    }
    pub fn bytes(&self) -> u64 {
        each!(self, s => s.bytes())
    }
    /// The last result write failed where the probes succeeded.
    pub fn results_failing(&self) -> bool {
        each!(self, s => s.results_failing())
    }

    // --- leases -------------------------------------------------------------------------

    /// Whether no lease exists at all (the hot check's first question).
    pub fn leases_empty(&self) -> bool {
        each!(self, s => s.leases_empty())
    }
    pub fn leases(&self, issue: Option<&IssueId>, now: u64) -> Vec<Lease> {
        each!(self, s => s.leases(issue, now))
    }
    /// The live exclusive lease of another running agent covering `path`.
    pub fn exclusive_holder(
        &self,
        issue: &IssueId,
        path: &str,
        asking: Option<&AgentId>,
        alive: &dyn Fn(&AgentId) -> bool,
        now: u64,
    ) -> Option<Lease> {
        each!(self, s => s.exclusive_holder(issue, path, asking, alive, now))
    }
    /// Grants a lease unless a live lease of another agent conflicts (compare-and-set:
    /// two sidecars can never both grant conflicting exclusive leases).
    pub async fn reserve(
        &self,
        issue: &IssueId,
        req: &ReserveRequest,
        agent_type: Option<AgentType>,
        now: u64,
    ) -> Result<Lease, Error> {
        each!(self, s => s.reserve(issue, req, agent_type, now).await)
    }
    pub async fn renew(
        &self,
        issue: &IssueId,
        lease_id: &str,
        agent: &AgentId,
        ttl_secs: Option<u64>,
        now: u64,
    ) -> Result<Lease, Error> {
        each!(self, s => s.renew(issue, lease_id, agent, ttl_secs, now).await)
    }
    pub async fn release(
        &self,
        issue: &IssueId,
        lease_id: &str,
        agent: Option<&AgentId>,
        now: u64,
    ) -> Result<Lease, Error> {
        each!(self, s => s.release(issue, lease_id, agent, now).await)
    }
    /// Releases everything `agent` holds on `issue`; returns the lease ids.
    pub async fn release_agent(
        &self,
        issue: &IssueId,
        agent: &AgentId,
    ) -> Result<Vec<String>, Error> {
        each!(self, s => s.release_agent(issue, agent).await)
    }

    // --- inbox --------------------------------------------------------------------------

    /// Delivers the events addressed to the agent with seq in (cursor, `head`] and moves
    /// its cursor past them.
    pub async fn deliver(
        &self,
        to: InboxRequest,
        head: u64,
        limits: Limits,
    ) -> Result<Delivery, Error> {
        each!(self, s => s.deliver(to, head, limits).await)
    }

    // --- cost records -------------------------------------------------------------------

    /// Stores the records whose key is new; a record seen before (a retried export, from
    /// any machine on NATS) counts as a duplicate and is left as it was.
    pub async fn cost_insert(&self, records: Vec<CostRecord>) -> Result<CostRecordsStored, Error> {
        each!(self, s => s.cost_insert(records).await)
    }
    /// The records made at or after `since_ms`, summed per (session, agent, model).
    pub async fn cost_groups(&self, since_ms: Option<u64>) -> Result<Vec<Group>, Error> {
        each!(self, s => s.cost_groups(since_ms).await)
    }
    /// The issue each costed (or started) session belongs to.
    pub async fn cost_session_issues(&self) -> Result<HashMap<String, String>, Error> {
        each!(self, s => s.cost_session_issues().await)
    }

    // --- lifecycle ----------------------------------------------------------------------

    /// Whether the event bus answers (health's `event_bus`; blocking on SQLite).
    pub fn event_bus_healthy(&self) -> bool {
        each!(self, s => s.event_bus_healthy())
    }
    /// Where results are written on this machine, if anywhere (the storage probe).
    pub fn results_dir(&self) -> Option<&std::path::Path> {
        each!(self, s => s.results_dir())
    }
    /// Measures what the store occupies (blocking; the health probes call it).
    pub fn measure(&self) {
        each!(self, s => s.measure())
    }
    /// Stores what is queued and stops background work.
    pub fn close(&self) {
        each!(self, s => s.close())
    }
}

/// The `agent_completed` event announcing a stored result; `path` and `agent_path` say
/// where it is kept.
pub fn completed_event(r: &StoredResult, path: &str, agent_path: &str) -> NewEvent {
    let status = r
        .result
        .get("status")
        .and_then(|s| s.as_str())
        .unwrap_or_default();
    NewEvent {
        event_type: EventType::parse(AGENT_COMPLETED).expect("valid event type"),
        publisher: r.agent_id.to_string(),
        topic: r.issue_id.to_string(),
        data: json!({
            "issue_id": r.issue_id,
            "agent_type": r.agent_type,
            "agent_id": r.agent_id,
            "status": status,
            "path": path,
            "agent_path": agent_path,
        }),
        correlation_id: None,
    }
}
