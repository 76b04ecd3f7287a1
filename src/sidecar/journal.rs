//! The event journal and the agent registry, in SQLite (WAL) so a restart loses nothing.
//! One writer thread commits whatever writes are queued in one transaction (group commit);
//! an in-memory tail of recent events and a `watch` on the head seq wake waiters at once.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;
use tokio::sync::{oneshot, watch};

use crate::api::sidecar::{AgentCounts, AgentRecord, AgentStatusUpdate, Event};
use crate::api::{AgentId, EventType};
use crate::server::Stopping;

/// Recent events kept in memory; waiters further behind read SQLite.
pub const TAIL_CAPACITY: usize = 4096;
/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Most events one `wait` answer carries; the cursor continues from the last one.
pub const MAX_EVENTS_PER_ANSWER: usize = 1000;
/// How often age-based retention runs when nothing is written.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

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
    #[error("journal database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("journal: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Dir(#[from] crate::paths::PathError),
    #[error("cannot start the journal writer: {0}")]
    Thread(std::io::Error),
}

fn classify(e: rusqlite::Error) -> JournalError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => JournalError::DiskFull,
        _ => JournalError::Sqlite(e),
    }
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

enum Command {
    Publish(
        NewEvent,
        oneshot::Sender<Result<Arc<JournalEvent>, JournalError>>,
    ),
    Agent(
        AgentId,
        AgentStatusUpdate,
        oneshot::Sender<Result<AgentRecord, JournalError>>,
    ),
    Stop,
}

/// Events with seq in `(start, head]`, contiguous.
struct Tail {
    events: VecDeque<Arc<JournalEvent>>,
    start: u64,
    head: u64,
}

struct Shared {
    tail: RwLock<Tail>,
    head: watch::Sender<u64>,
    floor: AtomicU64,
    pending: AtomicU64,
    subscribers: AtomicU64,
    writer_alive: AtomicBool,
    agents: RwLock<HashMap<AgentId, AgentRecord>>,
    /// Per (event type, topic filter) wake-ups, so a publish wakes only its own waiters
    /// instead of every parked long poll.
    waiters: Mutex<HashMap<WaitKey, watch::Sender<u64>>>,
}

type WaitKey = (String, Option<String>);

/// A waiter's wake-up channel; unregisters its key when the last waiter on it leaves.
struct Wakeup {
    rx: Option<watch::Receiver<u64>>,
    key: WaitKey,
    shared: Arc<Shared>,
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        self.rx.take();
        let mut waiters = self.shared.waiters.lock().expect("waiters lock");
        if waiters
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            waiters.remove(&self.key);
        }
    }
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

fn open_conn(path: &Path) -> Result<Connection, JournalError> {
    let open = |path: &Path| -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk when `publish` returns; group commit pays for it.
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(conn)
    };
    open(path).map_err(|source| JournalError::Open {
        path: path.display().to_string(),
        source,
    })
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_type TEXT NOT NULL,
    topic TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_type ON events(event_type, seq);
CREATE TABLE IF NOT EXISTS agents (agent_id TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

impl Journal {
    /// Opens (creating) the journal at `path` and starts its writer thread.
    pub fn open(path: &Path, retention: Retention) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent() {
            crate::paths::ensure_private_dir(dir)?;
        }
        let mut conn = open_conn(path)?;
        conn.execute_batch(SCHEMA).map_err(classify)?;
        let floor: u64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'floor'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .unwrap_or(0) as u64;
        let max_seq: u64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| {
            r.get::<_, i64>(0)
        })? as u64;
        let head = max_seq.max(floor);
        let floor = retain(&mut conn, head, floor, retention)?;

        let mut events = VecDeque::new();
        {
            let mut stmt = conn.prepare(
                "SELECT seq, event_type, topic, json FROM events ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([TAIL_CAPACITY as i64], row_event)?;
            for r in rows {
                events.push_front(Arc::new(r?));
            }
        }
        let start = if events.len() < TAIL_CAPACITY {
            floor
        } else {
            events.front().map_or(head, |e| e.seq - 1)
        };
        let mut agents = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT json FROM agents")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            for json in rows {
                if let Ok(rec) = serde_json::from_str::<AgentRecord>(&json?) {
                    agents.insert(rec.agent_id.clone(), rec);
                }
            }
        }
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
            agents: RwLock::new(agents),
            waiters: Mutex::new(HashMap::new()),
        });
        let reader = open_conn(path)?;
        let (tx, rx) = mpsc::channel();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("journal-writer".into())
                .spawn(move || writer_loop(conn, rx, shared, retention))
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

    /// Appends an event; returns once it is committed (durable) and visible to waiters.
    pub async fn publish(&self, event: NewEvent) -> Result<Arc<JournalEvent>, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Publish(event, tx))?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Records an agent's lifecycle update (durably) and returns the merged registry entry.
    pub async fn set_agent(
        &self,
        agent_id: AgentId,
        update: AgentStatusUpdate,
    ) -> Result<AgentRecord, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Agent(agent_id, update, tx))?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    pub fn agents(&self) -> Vec<AgentRecord> {
        let mut v: Vec<AgentRecord> = self
            .shared
            .agents
            .read()
            .expect("agents lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        v
    }

    pub fn agent_counts(&self) -> AgentCounts {
        counts(self.shared.agents.read().expect("agents lock").values())
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
                row_event,
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
        let mut wake = match &filter.event_type {
            Some(t) => {
                let key = (t.clone(), filter.topic.clone());
                let rx = self
                    .shared
                    .waiters
                    .lock()
                    .expect("waiters lock")
                    .entry(key.clone())
                    .or_insert_with(|| watch::Sender::new(0))
                    .subscribe();
                Some(Wakeup {
                    rx: Some(rx),
                    key,
                    shared: self.shared.clone(),
                })
            }
            None => None,
        };
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

pub fn counts<'a>(agents: impl Iterator<Item = &'a AgentRecord>) -> AgentCounts {
    let mut c = AgentCounts::default();
    for a in agents {
        use crate::api::sidecar::AgentState::*;
        match a.status {
            Started | Running => c.active += 1,
            Completed => c.completed += 1,
            Failed => c.failed += 1,
        }
        *c.by_type.entry(a.agent_type.to_string()).or_default() += 1;
    }
    c
}

fn row_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<JournalEvent> {
    let json: String = r.get(3)?;
    Ok(JournalEvent {
        seq: r.get::<_, i64>(0)? as u64,
        event_type: r.get(1)?,
        topic: r.get(2)?,
        json: RawValue::from_string(json)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
    })
}

fn event_id() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).expect("the OS random source is available");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("evt_{hex}")
}

/// Removes events beyond the count or past the age limit — always a prefix, so a cursor at
/// or above the new floor never sees a gap. Returns the new floor.
fn retain(
    conn: &mut Connection,
    head: u64,
    floor: u64,
    retention: Retention,
) -> Result<u64, JournalError> {
    let by_count = head.saturating_sub(retention.max_events);
    let cutoff_ms = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
    let by_age: u64 = conn
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE ts_ms < ?1",
            [cutoff_ms as i64],
            |r| r.get::<_, i64>(0),
        )
        .map_err(classify)? as u64;
    let new_floor = by_count.max(by_age).max(floor);
    if new_floor > floor {
        let tx = conn.transaction().map_err(classify)?;
        tx.execute("DELETE FROM events WHERE seq <= ?1", [new_floor as i64])
            .map_err(classify)?;
        tx.execute(
            "INSERT INTO meta(key, value) VALUES('floor', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [new_floor as i64],
        )
        .map_err(classify)?;
        tx.commit().map_err(classify)?;
        tracing::debug!(floor = new_floor, "journal retention");
    }
    Ok(new_floor)
}

enum Reply {
    Event(
        oneshot::Sender<Result<Arc<JournalEvent>, JournalError>>,
        Arc<JournalEvent>,
    ),
    Agent(
        oneshot::Sender<Result<AgentRecord, JournalError>>,
        AgentRecord,
    ),
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    retention: Retention,
) {
    let slack = (retention.max_events / 64).max(1);
    let mut last_retention = Instant::now();
    let mut stop = false;
    while !stop {
        let first = match rx.recv_timeout(RETENTION_INTERVAL) {
            Ok(c) => c,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                run_retention(&mut conn, &shared, retention);
                last_retention = Instant::now();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = Vec::with_capacity(16);
        match first {
            Command::Stop => stop = true,
            c => batch.push(c),
        }
        while !stop && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Command::Stop) => stop = true,
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        commit_batch(&mut conn, &shared, batch);
        shared.pending.fetch_sub(n, Ordering::Relaxed);
        let head = shared.tail.read().expect("tail lock").head;
        if head.saturating_sub(shared.floor.load(Ordering::Acquire)) > retention.max_events + slack
            || last_retention.elapsed() > RETENTION_INTERVAL
        {
            run_retention(&mut conn, &shared, retention);
            last_retention = Instant::now();
        }
    }
    shared.writer_alive.store(false, Ordering::Relaxed);
}

fn run_retention(conn: &mut Connection, shared: &Shared, retention: Retention) {
    let head = shared.tail.read().expect("tail lock").head;
    let floor = shared.floor.load(Ordering::Acquire);
    match retain(conn, head, floor, retention) {
        Ok(new_floor) if new_floor > floor => {
            shared.floor.store(new_floor, Ordering::Release);
            let mut tail = shared.tail.write().expect("tail lock");
            while tail.events.front().is_some_and(|e| e.seq <= new_floor) {
                tail.events.pop_front();
            }
            tail.start = tail.start.max(new_floor);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "journal retention failed"),
    }
}

fn commit_batch(conn: &mut Connection, shared: &Shared, batch: Vec<Command>) {
    let head = shared.tail.read().expect("tail lock").head;
    let now = rfc3339_now();
    let ts = now_ms();
    let mut replies = Vec::with_capacity(batch.len());
    let result = (|| -> Result<u64, rusqlite::Error> {
        let tx = conn.transaction()?;
        let mut seq = head;
        {
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO events(seq, event_type, topic, ts_ms, json) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut upsert_agent = tx.prepare_cached(
                "INSERT INTO agents(agent_id, json) VALUES (?1, ?2)
                 ON CONFLICT(agent_id) DO UPDATE SET json = excluded.json",
            )?;
            let agents = shared.agents.read().expect("agents lock");
            // Updates to one agent within this batch build on each other.
            let mut merged: HashMap<AgentId, AgentRecord> = HashMap::new();
            for cmd in batch {
                match cmd {
                    Command::Publish(ev, reply) => {
                        seq += 1;
                        let event = Event {
                            event_id: event_id(),
                            seq,
                            event_type: ev.event_type.to_string(),
                            publisher: ev.publisher,
                            topic: ev.topic,
                            data: ev.data,
                            correlation_id: ev.correlation_id,
                            timestamp: now.clone(),
                        };
                        let json = serde_json::to_string(&event).expect("events serialize");
                        insert_event.execute(params![
                            seq as i64,
                            event.event_type,
                            event.topic,
                            ts as i64,
                            json
                        ])?;
                        let stored = Arc::new(JournalEvent {
                            seq,
                            event_type: event.event_type,
                            topic: event.topic,
                            json: RawValue::from_string(json).expect("valid JSON"),
                        });
                        replies.push(Reply::Event(reply, stored));
                    }
                    Command::Agent(id, update, reply) => {
                        let started_at = merged
                            .get(&id)
                            .or_else(|| agents.get(&id))
                            .map_or_else(|| now.clone(), |r| r.started_at.clone());
                        let record = AgentRecord {
                            agent_id: id.clone(),
                            agent_type: update.agent_type,
                            issue_id: update.issue_id,
                            status: update.status,
                            message: update.message,
                            started_at,
                            updated_at: now.clone(),
                        };
                        let json = serde_json::to_string(&record).expect("records serialize");
                        upsert_agent.execute(params![id.as_str(), json])?;
                        merged.insert(id, record.clone());
                        replies.push(Reply::Agent(reply, record));
                    }
                    Command::Stop => {}
                }
            }
        }
        tx.commit()?;
        Ok(seq)
    })();
    match result {
        Ok(new_head) => {
            {
                let mut tail = shared.tail.write().expect("tail lock");
                for r in &replies {
                    if let Reply::Event(_, e) = r {
                        tail.events.push_back(e.clone());
                    }
                }
                while tail.events.len() > TAIL_CAPACITY {
                    if let Some(e) = tail.events.pop_front() {
                        tail.start = e.seq;
                    }
                }
                tail.head = new_head;
            }
            {
                let mut agents = shared.agents.write().expect("agents lock");
                for r in &replies {
                    if let Reply::Agent(_, rec) = r {
                        agents.insert(rec.agent_id.clone(), rec.clone());
                    }
                }
            }
            shared.head.send_replace(new_head);
            {
                let waiters = shared.waiters.lock().expect("waiters lock");
                if !waiters.is_empty() {
                    for r in &replies {
                        if let Reply::Event(_, e) = r {
                            for topic in [Some(e.topic.clone()), None] {
                                if let Some(tx) = waiters.get(&(e.event_type.clone(), topic)) {
                                    tx.send_replace(e.seq);
                                }
                            }
                        }
                    }
                }
            }
            for r in replies {
                match r {
                    Reply::Event(tx, e) => {
                        let _ = tx.send(Ok(e));
                    }
                    Reply::Agent(tx, rec) => {
                        let _ = tx.send(Ok(rec));
                    }
                }
            }
        }
        Err(e) => {
            let disk_full = matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
            tracing::error!(error = %e, "journal commit failed");
            let err = || {
                if disk_full {
                    JournalError::DiskFull
                } else {
                    JournalError::Closed
                }
            };
            for r in replies {
                match r {
                    Reply::Event(tx, _) => {
                        let _ = tx.send(Err(err()));
                    }
                    Reply::Agent(tx, _) => {
                        let _ = tx.send(Err(err()));
                    }
                }
            }
        }
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
}
