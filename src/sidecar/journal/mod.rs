//! The event journal, in SQLite (WAL) so a restart loses nothing: `schema` (layout and
//! versions), `writer` (the one writer thread, group commit, retention), `tail` (recent
//! events in memory and waiter wake-ups). The agent registry lives in `super::registry`.

pub(crate) mod schema;
mod tail;
mod writer;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;
use tokio::sync::{oneshot, watch};

use crate::api::sidecar::{AgentCounts, AgentRecord, AgentStatusUpdate, Event};
use crate::api::{AgentId, EventType};
use crate::server::Stopping;

use super::registry::Registry;
pub use super::registry::counts;
use super::results::RestoreError;
pub use schema::VERSION as SCHEMA_VERSION;
pub use tail::TAIL_CAPACITY;
use tail::{Tail, Waiters, Wakeup};
use writer::{Command, Writer};

/// Most events one `wait` answer carries; the cursor continues from the last one.
pub const MAX_EVENTS_PER_ANSWER: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cursor {since} is older than retention (events up to {floor} were compacted)")]
    Gone { since: u64, floor: u64 },
    /// A cursor no committed event has reached: the journal was reset (state.db lost).
    #[error("cursor {since} is ahead of the newest event {head}")]
    Ahead { since: u64, head: u64 },
    #[error("disk full")]
    DiskFull,
    #[error("the journal writer has stopped")]
    Closed,
    /// A commit failed for a reason other than a full disk; the cause is kept.
    #[error("the journal could not commit: {0}")]
    Commit(#[source] Arc<rusqlite::Error>),
    #[error(
        "journal database {path}: {source} — check its owner, permissions and free space, then `cco sidecar run`"
    )]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "journal database {p} is corrupt (not a readable SQLite database); it was left as it is — move it aside (`mv {p} {p}.corrupt`: events and the agent registry start empty, results are kept) and run `cco sidecar run` again",
        p = path.display()
    )]
    Corrupt { path: PathBuf },
    #[error(
        "journal database {} has schema version {found}, newer than this cco understands ({}); upgrade cco, or move the file aside and run `cco sidecar run` again",
        path.display(), schema::VERSION
    )]
    NewerSchema { path: PathBuf, found: i64 },
    #[error("cannot recover the pending result {key}: {cause}")]
    Recover { key: String, cause: RestoreError },
    #[error("journal: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Dir(#[from] crate::paths::PathError),
    #[error("cannot start the journal writer: {0}")]
    Thread(std::io::Error),
}

/// Retention limits (from `[sidecar]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_events: u64,
    pub max_age: Duration,
}

/// A committed event: its routing keys and its JSON, serialized once.
#[derive(Debug)]
pub struct JournalEvent {
    pub seq: u64,
    pub event_type: String,
    pub topic: String,
    pub json: Box<RawValue>,
}

impl JournalEvent {
    pub fn event(&self) -> Event {
        serde_json::from_str(self.json.get()).expect("journal events are valid JSON")
    }
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: EventType,
    pub publisher: String,
    pub topic: String,
    pub data: serde_json::Value,
    pub correlation_id: Option<String>,
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub topic: Option<String>,
}

impl EventFilter {
    fn matches(&self, e: &JournalEvent) -> bool {
        self.event_type.as_ref().is_none_or(|t| *t == e.event_type)
            && self.topic.as_ref().is_none_or(|t| *t == e.topic)
    }
}

/// A result recorded before its files were written, not yet announced.
#[derive(Debug, Clone)]
pub struct PendingResult {
    pub key: String,
    pub json: String,
}

/// What the writer thread and the readers share.
struct Shared {
    tail: RwLock<Tail>,
    head: watch::Sender<u64>,
    floor: AtomicU64,
    pending: AtomicU64,
    subscribers: AtomicU64,
    writer_alive: AtomicBool,
    registry: Registry,
    /// Keys of results recorded as pending and not yet announced (mirrors the table).
    pending_results: Mutex<HashSet<String>>,
    /// Per (event type, topic filter) wake-ups, so a publish wakes only its own waiters
    /// instead of every parked long poll.
    waiters: Mutex<Waiters>,
}

pub struct Journal {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    reader: Arc<Mutex<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("head", &self.head())
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Finishes a pending result found at start-up: makes its files whole and returns the
/// event announcing it, or a reason it cannot.
pub type Recover<'a> = dyn FnMut(&PendingResult) -> Result<NewEvent, RestoreError> + 'a;

impl Journal {
    /// Opens (creating) the journal at `path` and starts its writer thread. Pending results
    /// stay pending (see [`Journal::open_recovering`]).
    pub fn open(path: &Path, retention: Retention) -> Result<Journal, JournalError> {
        Journal::open_inner(path, retention, None)
    }

    /// Opens the journal and finishes every pending result with `recover` before anything
    /// else can read or write: each one's event and the removal of its pending row commit
    /// together, so a crash during recovery is recovered again on the next start.
    pub fn open_recovering(
        path: &Path,
        retention: Retention,
        recover: &mut Recover<'_>,
    ) -> Result<Journal, JournalError> {
        Journal::open_inner(path, retention, Some(recover))
    }

    fn open_inner(
        path: &Path,
        retention: Retention,
        recover: Option<&mut Recover<'_>>,
    ) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent() {
            crate::paths::ensure_private_dir(dir)?;
        }
        let mut conn = schema::open_conn(path)?;
        schema::migrate(&mut conn, path)?;
        let on_open = |e| schema::on_open(path, e);
        let floor: u64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'floor'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(on_open)?
            .unwrap_or(0) as u64;
        let (max_seq, last_ts): (i64, i64) = conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0), COALESCE(MAX(ts_ms), 0) FROM events",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(on_open)?;
        let mut head = (max_seq as u64).max(floor);
        let mut last_ts = last_ts as u64;
        if let Some(recover) = recover {
            (head, last_ts) = recover_pending(&mut conn, head, last_ts, recover)?;
        }
        let floor = writer::retain(&mut conn, head, floor, retention)?;

        let mut events = VecDeque::new();
        {
            let mut stmt = conn.prepare(
                "SELECT seq, event_type, topic, json FROM events ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([TAIL_CAPACITY as i64], schema::row_event)?;
            for r in rows {
                events.push_front(Arc::new(r?));
            }
        }
        let start = if events.len() < TAIL_CAPACITY {
            floor
        } else {
            events.front().map_or(head, |e| e.seq - 1)
        };
        let registry = Registry::load(&conn).map_err(on_open)?;
        let pending_results = {
            let mut stmt = conn
                .prepare("SELECT key FROM pending_results")
                .map_err(on_open)?;
            let keys = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(on_open)?;
            keys.collect::<Result<HashSet<_>, _>>().map_err(on_open)?
        };
        let shared = Arc::new(Shared {
            tail: RwLock::new(Tail {
                events,
                start,
                head,
            }),
            head: watch::Sender::new(head),
            floor: AtomicU64::new(floor),
            pending: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
            writer_alive: AtomicBool::new(true),
            registry,
            pending_results: Mutex::new(pending_results),
            waiters: Mutex::new(HashMap::new()),
        });
        let reader = schema::open_conn(path)?;
        let (tx, rx) = mpsc::channel();
        let writer = {
            let w = Writer {
                conn,
                shared: shared.clone(),
                retention,
                last_ts,
            };
            std::thread::Builder::new()
                .name("journal-writer".into())
                .spawn(move || w.run(rx))
                .map_err(JournalError::Thread)?
        };
        Ok(Journal {
            tx,
            shared,
            reader: Arc::new(Mutex::new(reader)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The seq of the newest committed event (0 when there never was one).
    pub fn head(&self) -> u64 {
        self.shared.tail.read().expect("tail lock").head
    }

    /// Events up to this seq were removed by retention; older cursors get 410.
    pub fn floor(&self) -> u64 {
        self.shared.floor.load(Ordering::Acquire)
    }

    /// Writes queued and not yet committed.
    pub fn pending(&self) -> u64 {
        self.shared.pending.load(Ordering::Relaxed)
    }

    pub fn subscribers(&self) -> u64 {
        self.shared.subscribers.load(Ordering::Relaxed)
    }

    pub fn writer_alive(&self) -> bool {
        self.shared.writer_alive.load(Ordering::Relaxed)
    }

    /// `SELECT 1` on the reader connection: the database file is reachable.
    pub fn ping(&self) -> bool {
        self.reader
            .lock()
            .map(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).is_ok())
            .unwrap_or(false)
    }

    fn send(&self, cmd: Command) -> Result<(), JournalError> {
        self.shared.pending.fetch_add(1, Ordering::Relaxed);
        self.tx.send(cmd).map_err(|_| {
            self.shared.pending.fetch_sub(1, Ordering::Relaxed);
            JournalError::Closed
        })
    }

    async fn call<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> Command,
    ) -> Result<T, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.send(cmd(tx))?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Appends an event; returns once it is committed (durable) and visible to waiters.
    pub async fn publish(&self, event: NewEvent) -> Result<Arc<JournalEvent>, JournalError> {
        self.call(|reply| Command::Publish {
            event,
            completes: None,
            reply,
        })
        .await
    }

    /// Records a result as pending (durably) before its files are written.
    pub async fn intend(&self, pending: PendingResult) -> Result<(), JournalError> {
        self.call(|reply| Command::Intend {
            key: pending.key,
            json: pending.json,
            reply,
        })
        .await
    }

    /// Publishes the event announcing the pending result `key` and clears it, in one commit.
    pub async fn complete(
        &self,
        key: String,
        event: NewEvent,
    ) -> Result<Arc<JournalEvent>, JournalError> {
        self.call(|reply| Command::Publish {
            event,
            completes: Some(key),
            reply,
        })
        .await
    }

    /// Drops the pending result `key` (its files were not written, or were undone).
    pub async fn forget(&self, key: String) -> Result<(), JournalError> {
        self.call(|reply| Command::Forget { key, reply }).await
    }

    /// Records an agent's lifecycle update (durably) and returns the merged registry entry.
    pub async fn set_agent(
        &self,
        agent_id: AgentId,
        update: AgentStatusUpdate,
    ) -> Result<AgentRecord, JournalError> {
        self.call(|reply| Command::Agent(agent_id, update, reply))
            .await
    }

    /// Whether the result `key` was recorded and not yet announced (or dropped): its files
    /// may exist, its `agent_completed` does not.
    pub fn is_pending(&self, key: &str) -> bool {
        self.shared
            .pending_results
            .lock()
            .expect("pending lock")
            .contains(key)
    }

    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The read connection, for the dashboard's paged views (`sidecar::views`).
    pub(crate) fn reader(&self) -> Arc<Mutex<Connection>> {
        self.reader.clone()
    }

    pub fn agent(&self, id: &AgentId) -> Option<AgentRecord> {
        self.shared.registry.get(id)
    }

    pub fn agents(&self) -> Vec<AgentRecord> {
        self.shared.registry.list()
    }

    pub fn agent_counts(&self) -> AgentCounts {
        self.shared.registry.counts()
    }

    /// Matching events with seq > `since`, at most `limit`, and the cursor to continue from.
    pub async fn read(
        &self,
        since: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<(Vec<Arc<JournalEvent>>, u64), JournalError> {
        let floor = self.floor();
        if since < floor {
            return Err(JournalError::Gone { since, floor });
        }
        let head = {
            let tail = self.shared.tail.read().expect("tail lock");
            // Waiting would skip the events that will reuse these seqs.
            if since > tail.head {
                return Err(JournalError::Ahead {
                    since,
                    head: tail.head,
                });
            }
            if since >= tail.start {
                let skip = (since - tail.start) as usize;
                let mut out = Vec::new();
                let mut next = tail.head;
                for e in tail.events.iter().skip(skip) {
                    if filter.matches(e) {
                        out.push(e.clone());
                        if out.len() == limit {
                            next = e.seq;
                            break;
                        }
                    }
                }
                return Ok((out, next));
            }
            tail.head
        };
        // Behind the in-memory tail: read SQLite (everything up to `head` is committed).
        let reader = self.reader.clone();
        let filter = filter.clone();
        let rows = tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("reader lock");
            let mut stmt = conn.prepare_cached(
                "SELECT seq, event_type, topic, json FROM events
                 WHERE seq > ?1 AND seq <= ?2
                   AND (?3 IS NULL OR event_type = ?3) AND (?4 IS NULL OR topic = ?4)
                 ORDER BY seq LIMIT ?5",
            )?;
            let rows = stmt.query_map(
                params![
                    since as i64,
                    head as i64,
                    filter.event_type,
                    filter.topic,
                    limit as i64
                ],
                schema::row_event,
            )?;
            rows.map(|r| r.map(Arc::new)).collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|_| JournalError::Closed)??;
        let floor = self.floor();
        if since < floor {
            // Compacted while we read: the answer may have gaps.
            return Err(JournalError::Gone { since, floor });
        }
        let next = if rows.len() == limit {
            rows.last().map_or(head, |e| e.seq)
        } else {
            head
        };
        Ok((rows, next))
    }

    /// Waits until an event matching `filter` with seq > `since` exists (returning all of
    /// them, up to [`MAX_EVENTS_PER_ANSWER`]), `timeout` passes or the server stops.
    /// Without `since`, only events committed after the call count.
    pub async fn wait(
        &self,
        filter: &EventFilter,
        since: Option<u64>,
        timeout: Duration,
        mut stopping: Stopping,
    ) -> Result<(Vec<Arc<JournalEvent>>, u64), JournalError> {
        // Waiters on one event type park on their own key; only those without a type (none
        // today, but cheap to allow) share the global head.
        let mut wake = filter
            .event_type
            .as_ref()
            .map(|t| Wakeup::register(&self.shared, (t.clone(), filter.topic.clone())));
        let mut global = self.shared.head.subscribe();
        global.borrow_and_update();
        let mut since = since.unwrap_or_else(|| self.head());
        let deadline = tokio::time::Instant::now() + timeout;
        let _sub = Subscription::new(self);
        loop {
            let (events, next) = self.read(since, filter, MAX_EVENTS_PER_ANSWER).await?;
            if !events.is_empty() {
                return Ok((events, next));
            }
            since = next;
            if stopping.is_stopping() {
                return Ok((events, since));
            }
            let changed = async {
                match wake.as_mut().and_then(|w| w.rx.as_mut()) {
                    Some(rx) => rx.changed().await,
                    None => global.changed().await,
                }
            };
            tokio::select! {
                changed = changed => if changed.is_err() { return Ok((Vec::new(), since)) },
                _ = tokio::time::sleep_until(deadline) => return Ok((Vec::new(), since)),
                _ = stopping.wait() => return Ok((Vec::new(), since)),
            }
        }
    }

    /// A receiver that changes whenever new events commit (for streams).
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head.subscribe()
    }

    /// Stops the writer after it has committed everything queued, and waits for it.
    pub fn close(&self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(h) = self.writer.lock().expect("writer lock").take() {
            let _ = h.join();
        }
    }
}

/// Finishes every pending result (before the writer starts): `recover` makes its files
/// whole, then its event is inserted and its row deleted in one transaction.
fn recover_pending(
    conn: &mut Connection,
    mut head: u64,
    mut last_ts: u64,
    recover: &mut Recover<'_>,
) -> Result<(u64, u64), JournalError> {
    let pending: Vec<PendingResult> = {
        let mut stmt = conn.prepare("SELECT key, json FROM pending_results ORDER BY rowid")?;
        let rows = stmt.query_map([], |r| {
            Ok(PendingResult {
                key: r.get(0)?,
                json: r.get(1)?,
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for p in &pending {
        let event = recover(p).map_err(|cause| JournalError::Recover {
            key: p.key.clone(),
            cause,
        })?;
        let tx = conn.transaction().map_err(writer::classify)?;
        let ts = now_ms().max(last_ts);
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events(seq, event_type, topic, ts_ms, json) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            writer::insert(&mut insert, event, head + 1, ts, &rfc3339_now())?;
        }
        tx.execute("DELETE FROM pending_results WHERE key = ?1", params![p.key])?;
        tx.commit().map_err(writer::classify)?;
        head += 1;
        last_ts = ts;
    }
    if !pending.is_empty() {
        tracing::warn!(
            recovered = pending.len(),
            "recovered pending results after an unclean stop: each is now stored and announced"
        );
    }
    Ok((head, last_ts))
}

/// Counts an open long poll or stream for `/status` while it lives.
pub struct Subscription(Arc<Shared>);

impl Subscription {
    pub fn new(journal: &Journal) -> Subscription {
        journal.shared.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription(journal.shared.clone())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
