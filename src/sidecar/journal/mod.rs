//! The event journal, in SQLite (WAL) so a restart loses nothing: `schema` (layout and
//! versions), `writer` (the one writer thread, group commit, retention), `tail` (recent
//! events in memory and waiter wake-ups). The agent registry lives in `super::registry`.

mod schema;
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
    #[error("journal database {path}: {source}")]
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
    Recover { key: String, cause: String },
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
pub type Recover<'a> = dyn FnMut(&PendingResult) -> Result<NewEvent, String> + 'a;

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
mod tests {
    use super::*;
    use crate::server::Stopper;

    fn ev(t: &str, topic: &str) -> NewEvent {
        NewEvent {
            event_type: EventType::parse(t).unwrap(),
            publisher: "p".into(),
            topic: topic.into(),
            data: serde_json::json!({"k": 1}),
            correlation_id: None,
        }
    }

    const KEEP: Retention = Retention {
        max_events: 1_000_000,
        max_age: Duration::from_secs(3600),
    };

    #[tokio::test]
    async fn seqs_increase_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("o").join("state.db");
        let j = Journal::open(&db, KEEP).unwrap();
        let a = j.publish(ev("x", "t")).await.unwrap();
        let b = j.publish(ev("y", "t")).await.unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        j.close();
        drop(j);
        let j = Journal::open(&db, KEEP).unwrap();
        assert_eq!(j.head(), 2);
        let c = j.publish(ev("x", "t")).await.unwrap();
        assert_eq!(c.seq, 3);
        let f = EventFilter {
            event_type: Some("x".into()),
            topic: None,
        };
        let (got, next) = j.read(0, &f, 10).await.unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(next, 3);
        j.close();
    }

    #[tokio::test]
    async fn waiter_wakes_on_publish_and_filters_topic() {
        let dir = tempfile::tempdir().unwrap();
        let j = Arc::new(Journal::open(&dir.path().join("o").join("s.db"), KEEP).unwrap());
        let stopper = Stopper::default();
        let f = EventFilter {
            event_type: Some("arch".into()),
            topic: Some("architecture".into()),
        };
        let waiter = tokio::spawn({
            let (j, f, s) = (j.clone(), f.clone(), stopper.subscribe());
            async move { j.wait(&f, None, Duration::from_secs(10), s).await }
        });
        // Wait until the waiter is registered, so "newer than the request" holds.
        while j.subscribers() == 0 {
            tokio::task::yield_now().await;
        }
        j.publish(ev("arch", "other")).await.unwrap();
        j.publish(ev("arch", "architecture")).await.unwrap();
        let (got, next) = waiter.await.unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].seq, 2);
        assert_eq!(next, 2);
        j.close();
    }

    #[tokio::test]
    async fn stop_ends_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("o").join("s.db"), KEEP).unwrap();
        let stopper = Stopper::default();
        let s = stopper.subscribe();
        let f = EventFilter::default();
        let (got, ()) = tokio::join!(j.wait(&f, Some(0), Duration::from_secs(60), s), async {
            stopper.stop()
        });
        assert!(got.unwrap().0.is_empty());
        j.close();
    }

    #[tokio::test]
    async fn retention_compacts_and_old_cursors_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let ret = Retention {
            max_events: 3,
            max_age: Duration::from_secs(3600),
        };
        let j = Journal::open(&dir.path().join("o").join("s.db"), ret).unwrap();
        for _ in 0..10 {
            j.publish(ev("x", "t")).await.unwrap();
        }
        let floor = j.floor();
        assert!(floor >= 6, "floor {floor}");
        let f = EventFilter::default();
        assert!(matches!(
            j.read(0, &f, 10).await,
            Err(JournalError::Gone { .. })
        ));
        let (got, _) = j.read(floor, &f, 10).await.unwrap();
        assert_eq!(got.first().map(|e| e.seq), Some(floor + 1));
        assert_eq!(got.last().map(|e| e.seq), Some(10));
        j.close();
    }

    /// After state.db is lost, an old cursor is ahead of the new journal: an error, not a
    /// silent wait that would skip the events reusing those seqs.
    #[tokio::test]
    async fn cursors_ahead_of_the_head_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("o").join("s.db"), KEEP).unwrap();
        j.publish(ev("x", "t")).await.unwrap();
        let f = EventFilter::default();
        assert!(matches!(
            j.read(5, &f, 10).await,
            Err(JournalError::Ahead { since: 5, head: 1 })
        ));
        let stopper = Stopper::default();
        let waited = j
            .wait(&f, Some(2), Duration::from_secs(10), stopper.subscribe())
            .await;
        assert!(matches!(waited, Err(JournalError::Ahead { .. })));
        let (got, next) = j.read(1, &f, 10).await.unwrap();
        assert!(got.is_empty());
        assert_eq!(next, 1);
        j.close();
    }

    #[tokio::test]
    async fn reads_behind_the_tail_come_from_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("o").join("s.db");
        let j = Journal::open(&db, KEEP).unwrap();
        let n = TAIL_CAPACITY as u64 + 10;
        // Concurrent publishes commit in a few group transactions, in seq order.
        let mut topics = Vec::new();
        for i in 0..n {
            topics.push(if i % 2 == 0 { "even" } else { "odd" });
        }
        for chunk in topics.chunks(512) {
            let all = chunk.iter().map(|t| j.publish(ev("x", t)));
            for r in futures_util::future::join_all(all).await {
                r.unwrap();
            }
        }
        let f = EventFilter {
            event_type: Some("x".into()),
            topic: Some("odd".into()),
        };
        let (got, next) = j.read(0, &f, 5).await.unwrap();
        // join_all polls in order, so seq i+1 carries topics[i].
        let want: Vec<u64> = (1..=n)
            .filter(|s| topics[(s - 1) as usize] == "odd")
            .take(5)
            .collect();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), want);
        assert_eq!(next, want[4]);
        j.close();
    }

    /// A state.db written by the first release (schema version 0, frozen as SQL in
    /// tests/fixtures) opens, migrates and reads back what it held.
    #[tokio::test]
    async fn opens_a_version_0_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("o").join("state.db");
        crate::paths::ensure_private_dir(db.parent().unwrap()).unwrap();
        let sql = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/state-v0/state.sql"
        ));
        Connection::open(&db).unwrap().execute_batch(sql).unwrap();
        let keep_all = Retention {
            max_events: 1_000_000,
            max_age: Duration::from_secs(100 * 365 * 86_400),
        };
        let j = Journal::open(&db, keep_all).unwrap();
        assert_eq!(j.head(), 3);
        let (got, _) = j.read(0, &EventFilter::default(), 10).await.unwrap();
        let types: Vec<_> = got.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["build", "agent_started", "agent_completed"]);
        assert_eq!(got[0].event().correlation_id.as_deref(), Some("c-1"));
        let agents = j.agents();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].agent_id.as_str(), "agent-1");
        assert_eq!(j.agent_counts().completed, 1);
        assert_eq!(j.publish(ev("x", "t")).await.unwrap().seq, 4);
        j.close();
        let version: i64 = Connection::open(&db)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    /// One event committed while the clock was 8 days behind must not make age retention
    /// delete everything before it.
    #[tokio::test]
    async fn an_event_from_a_clock_behind_does_not_wipe_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("o").join("s.db");
        let week = Retention {
            max_events: 1_000_000,
            max_age: Duration::from_secs(7 * 86_400),
        };
        let j = Journal::open(&db, week).unwrap();
        for _ in 0..3 {
            j.publish(ev("x", "t")).await.unwrap();
        }
        j.close();
        drop(j);
        let behind = now_ms() - 8 * 86_400_000;
        Connection::open(&db)
            .unwrap()
            .execute(
                "UPDATE events SET ts_ms = ?1 WHERE seq = 3",
                [behind as i64],
            )
            .unwrap();
        let j = Journal::open(&db, week).unwrap();
        assert_eq!(j.floor(), 0, "age retention deleted young events");
        // Timestamps never go backwards, whatever the clock says.
        let future = now_ms() + 86_400_000;
        j.close();
        drop(j);
        Connection::open(&db)
            .unwrap()
            .execute(
                "UPDATE events SET ts_ms = ?1 WHERE seq = 3",
                [future as i64],
            )
            .unwrap();
        let j = Journal::open(&db, week).unwrap();
        j.publish(ev("x", "t")).await.unwrap();
        j.close();
        let ts: i64 = Connection::open(&db)
            .unwrap()
            .query_row("SELECT ts_ms FROM events WHERE seq = 4", [], |r| r.get(0))
            .unwrap();
        assert!(ts as u64 >= future);
    }

    /// Count retention keeps its slack across a restart: a cursor valid before the restart
    /// stays valid after it.
    #[tokio::test]
    async fn a_restart_keeps_the_retention_slack() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("o").join("s.db");
        let ret = Retention {
            max_events: 640,
            max_age: Duration::from_secs(3600),
        };
        let j = Journal::open(&db, ret).unwrap();
        let all = (0..645).map(|_| j.publish(ev("x", "t")));
        for r in futures_util::future::join_all(all).await {
            r.unwrap();
        }
        assert_eq!(j.floor(), 0);
        j.close();
        drop(j);
        let j = Journal::open(&db, ret).unwrap();
        assert_eq!(j.floor(), 0, "the restart trimmed the slack");
        assert!(j.read(0, &EventFilter::default(), 10).await.is_ok());
        j.close();
    }

    /// A pending result is finished on the next open: its event commits, its row goes.
    #[tokio::test]
    async fn pending_results_are_recovered_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("o").join("s.db");
        let j = Journal::open(&db, KEEP).unwrap();
        j.publish(ev("x", "t")).await.unwrap();
        let p = PendingResult {
            key: "i/t/a".into(),
            json: "{\"k\":1}".into(),
        };
        j.intend(p.clone()).await.unwrap();
        j.close();
        drop(j);
        // Without a recovery function the row stays pending.
        let j = Journal::open(&db, KEEP).unwrap();
        assert_eq!(j.head(), 1);
        assert!(j.is_pending(&p.key));
        j.close();
        drop(j);
        let mut seen = Vec::new();
        let j = Journal::open_recovering(&db, KEEP, &mut |p| {
            seen.push(p.key.clone());
            Ok(ev("agent_completed", "i"))
        })
        .unwrap();
        assert_eq!(j.head(), 2);
        j.close();
        drop(j);
        assert_eq!(seen, ["i/t/a"]);
        let j = Journal::open_recovering(&db, KEEP, &mut |_| panic!("recovered twice")).unwrap();
        assert_eq!(j.head(), 2);
        // Forget and complete clear rows too.
        j.intend(p.clone()).await.unwrap();
        j.forget(p.key.clone()).await.unwrap();
        j.intend(p.clone()).await.unwrap();
        j.complete(p.key.clone(), ev("agent_completed", "i"))
            .await
            .unwrap();
        j.close();
        drop(j);
        let left: i64 = Connection::open(&db)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM pending_results", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }

    /// A commit that fails keeps its cause and becomes a 503 that names it, not "shutting
    /// down". (Another connection holding the write lock past the busy timeout.)
    #[tokio::test]
    async fn a_failed_commit_keeps_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("o").join("s.db");
        let j = Journal::open(&db, KEEP).unwrap();
        let other = Connection::open(&db).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let e = j.publish(ev("x", "t")).await.unwrap_err();
        assert!(matches!(e, JournalError::Commit(_)), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        let api = crate::sidecar::ApiError::from(e);
        assert_eq!(api.status().as_u16(), 503);
        assert_eq!(api.code(), "journal_failed");
        assert!(api.to_string().contains("locked"), "{api}");
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(j.publish(ev("x", "t")).await.unwrap().seq, 1);
        j.close();
    }
}
