//! The journal's one writer thread: it commits whatever writes are queued in one
//! transaction (group commit), then makes them visible and answers their senders.
//! Retention runs here too, so it never races a commit.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::{JournalError, JournalEvent, NewEvent, Retention, Shared, now_ms, rfc3339_now};
use crate::api::AgentId;
use crate::api::sidecar::{AgentRecord, AgentStatusUpdate, Event};
use crate::sidecar::registry::Registry;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// How often age-based retention runs when nothing is written.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// Count retention lets the journal grow this fraction past its limit before trimming, so
/// it deletes in batches rather than one row per publish.
const RETENTION_SLACK_DIVISOR: u64 = 64;

pub(super) type Reply<T> = oneshot::Sender<Result<T, JournalError>>;

pub(super) enum Command {
    /// Appends an event; `completes` names a pending result the same commit clears.
    Publish {
        event: NewEvent,
        completes: Option<String>,
        reply: Reply<Arc<JournalEvent>>,
    },
    Agent(AgentId, AgentStatusUpdate, Reply<AgentRecord>),
    /// Records (or replaces) a pending result under `key`.
    Intend {
        key: String,
        json: String,
        reply: Reply<()>,
    },
    /// Drops a pending result that will not be announced.
    Forget {
        key: String,
        reply: Reply<()>,
    },
    Stop,
}

/// A command's sender, kept apart from its work so a failed batch can answer every one.
enum Waiting {
    Event(Reply<Arc<JournalEvent>>),
    Agent(Reply<AgentRecord>),
    Unit(Reply<()>),
}

enum Op {
    Publish(NewEvent, Option<String>),
    Agent(AgentId, AgentStatusUpdate),
    Intend(String, String),
    Forget(String),
}

enum Done {
    Event(Arc<JournalEvent>),
    Agent(AgentRecord),
    Unit,
}

fn split(cmd: Command) -> Option<(Op, Waiting)> {
    Some(match cmd {
        Command::Publish {
            event,
            completes,
            reply,
        } => (Op::Publish(event, completes), Waiting::Event(reply)),
        Command::Agent(id, update, reply) => (Op::Agent(id, update), Waiting::Agent(reply)),
        Command::Intend { key, json, reply } => (Op::Intend(key, json), Waiting::Unit(reply)),
        Command::Forget { key, reply } => (Op::Forget(key), Waiting::Unit(reply)),
        Command::Stop => return None,
    })
}

/// The writer's own state besides the connection.
pub(super) struct Writer {
    pub conn: Connection,
    pub shared: Arc<Shared>,
    pub retention: Retention,
    /// The newest `ts_ms` written: timestamps never go backwards, so age retention, which
    /// deletes by time, always deletes a prefix even when the clock steps back.
    pub last_ts: u64,
}

pub(super) fn slack(retention: Retention) -> u64 {
    (retention.max_events / RETENTION_SLACK_DIVISOR).max(1)
}

impl Writer {
    pub fn run(mut self, rx: mpsc::Receiver<Command>) {
        let slack = slack(self.retention);
        let mut last_retention = Instant::now();
        let mut stop = false;
        while !stop {
            let first = match rx.recv_timeout(RETENTION_INTERVAL) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.run_retention();
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
            self.commit_batch(batch);
            self.shared.pending.fetch_sub(n, Ordering::Relaxed);
            let head = self.shared.tail.read().expect("tail lock").head;
            let floor = self.shared.floor.load(Ordering::Acquire);
            if head.saturating_sub(floor) > self.retention.max_events + slack
                || last_retention.elapsed() > RETENTION_INTERVAL
            {
                self.run_retention();
                last_retention = Instant::now();
            }
        }
        self.shared.writer_alive.store(false, Ordering::Relaxed);
    }

    fn run_retention(&mut self) {
        let head = self.shared.tail.read().expect("tail lock").head;
        let floor = self.shared.floor.load(Ordering::Acquire);
        match retain(&mut self.conn, head, floor, self.retention) {
            Ok(new_floor) if new_floor > floor => {
                self.shared.floor.store(new_floor, Ordering::Release);
                self.shared
                    .tail
                    .write()
                    .expect("tail lock")
                    .compact(new_floor);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "journal retention failed"),
        }
    }

    fn commit_batch(&mut self, batch: Vec<Command>) {
        let shared = self.shared.clone();
        let head = shared.tail.read().expect("tail lock").head;
        let now = rfc3339_now();
        let ts = now_ms().max(self.last_ts);
        let (ops, waiting): (Vec<Op>, Vec<Waiting>) = batch.into_iter().filter_map(split).unzip();
        let mut intended = Vec::new();
        let mut cleared = Vec::new();
        let result = (|| -> Result<(u64, Vec<Done>), rusqlite::Error> {
            let tx = self.conn.transaction()?;
            let mut seq = head;
            let mut done = Vec::with_capacity(ops.len());
            {
                let mut insert_event = tx.prepare_cached(
                    "INSERT INTO events(seq, event_type, topic, ts_ms, json) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let mut upsert_agent = tx.prepare_cached(
                    "INSERT INTO agents(agent_id, json) VALUES (?1, ?2)
                     ON CONFLICT(agent_id) DO UPDATE SET json = excluded.json",
                )?;
                let mut upsert_pending = tx.prepare_cached(
                    "INSERT INTO pending_results(key, json) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET json = excluded.json",
                )?;
                let mut delete_pending =
                    tx.prepare_cached("DELETE FROM pending_results WHERE key = ?1")?;
                // Updates to one agent within this batch build on each other.
                let mut merged: HashMap<AgentId, AgentRecord> = HashMap::new();
                for op in ops {
                    match op {
                        Op::Publish(event, completes) => {
                            seq += 1;
                            let stored = insert(&mut insert_event, event, seq, ts, &now)?;
                            if let Some(key) = completes {
                                delete_pending.execute([&key])?;
                                cleared.push(key);
                            }
                            done.push(Done::Event(stored));
                        }
                        Op::Agent(id, update) => {
                            let previous = merged
                                .get(&id)
                                .cloned()
                                .or_else(|| shared.registry.get(&id));
                            let record = Registry::merge(previous.as_ref(), &id, update, &now);
                            let json = serde_json::to_string(&record).expect("records serialize");
                            upsert_agent.execute(params![id.as_str(), json])?;
                            merged.insert(id, record.clone());
                            done.push(Done::Agent(record));
                        }
                        Op::Intend(key, json) => {
                            upsert_pending.execute(params![key, json])?;
                            cleared.retain(|k| *k != key);
                            intended.push(key);
                            done.push(Done::Unit);
                        }
                        Op::Forget(key) => {
                            delete_pending.execute([&key])?;
                            intended.retain(|k| *k != key);
                            cleared.push(key);
                            done.push(Done::Unit);
                        }
                    }
                }
            }
            tx.commit()?;
            Ok((seq, done))
        })();
        match result {
            Ok((new_head, done)) => {
                self.last_ts = ts;
                let events: Vec<Arc<JournalEvent>> = done
                    .iter()
                    .filter_map(|d| match d {
                        Done::Event(e) => Some(e.clone()),
                        _ => None,
                    })
                    .collect();
                shared
                    .tail
                    .write()
                    .expect("tail lock")
                    .extend(events.iter(), new_head);
                shared.registry.apply(done.iter().filter_map(|d| match d {
                    Done::Agent(rec) => Some(rec),
                    _ => None,
                }));
                {
                    let mut pending = shared.pending_results.lock().expect("pending lock");
                    for key in intended {
                        pending.insert(key);
                    }
                    for key in cleared {
                        pending.remove(&key);
                    }
                }
                shared.head.send_replace(new_head);
                super::tail::wake(&shared.waiters.lock().expect("waiters lock"), &events);
                for (w, d) in waiting.into_iter().zip(done) {
                    match (w, d) {
                        (Waiting::Event(tx), Done::Event(e)) => drop(tx.send(Ok(e))),
                        (Waiting::Agent(tx), Done::Agent(rec)) => drop(tx.send(Ok(rec))),
                        (Waiting::Unit(tx), Done::Unit) => drop(tx.send(Ok(()))),
                        _ => unreachable!("one answer per command, in order"),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = waiting.len(), "journal commit failed");
                let disk_full =
                    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
                let cause = Arc::new(e);
                let err = || {
                    if disk_full {
                        JournalError::DiskFull
                    } else {
                        JournalError::Commit(cause.clone())
                    }
                };
                for w in waiting {
                    match w {
                        Waiting::Event(tx) => drop(tx.send(Err(err()))),
                        Waiting::Agent(tx) => drop(tx.send(Err(err()))),
                        Waiting::Unit(tx) => drop(tx.send(Err(err()))),
                    }
                }
            }
        }
    }
}

/// Inserts one event at `seq`; returns it as waiters will see it.
pub(super) fn insert(
    stmt: &mut rusqlite::CachedStatement<'_>,
    ev: NewEvent,
    seq: u64,
    ts: u64,
    now: &str,
) -> Result<Arc<JournalEvent>, rusqlite::Error> {
    let event = Event {
        event_id: event_id(),
        seq,
        event_type: ev.event_type.to_string(),
        publisher: ev.publisher,
        topic: ev.topic,
        data: ev.data,
        correlation_id: ev.correlation_id,
        timestamp: now.to_string(),
    };
    let json = serde_json::to_string(&event).expect("events serialize");
    stmt.execute(params![
        seq as i64,
        event.event_type,
        event.topic,
        ts as i64,
        json
    ])?;
    Ok(Arc::new(JournalEvent {
        seq,
        event_type: event.event_type,
        topic: event.topic,
        json: RawValue::from_string(json).expect("valid JSON"),
    }))
}

fn event_id() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).expect("the OS random source is available");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("evt_{hex}")
}

/// Removes events beyond the count limit (once past it by the slack) or older than the age
/// limit — always a prefix, so a cursor at or above the new floor never sees a gap.
/// Age is judged by timestamp alone: only the events before the first one young enough go.
/// Returns the new floor.
pub(super) fn retain(
    conn: &mut Connection,
    head: u64,
    floor: u64,
    retention: Retention,
) -> Result<u64, JournalError> {
    let by_count = if head.saturating_sub(floor) > retention.max_events + slack(retention) {
        head - retention.max_events
    } else {
        floor
    };
    let cutoff_ms = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
    let first_young: Option<i64> = conn
        .query_row(
            "SELECT MIN(seq) FROM events WHERE ts_ms >= ?1",
            [cutoff_ms as i64],
            |r| r.get(0),
        )
        .map_err(classify)?;
    let by_age = match first_young {
        Some(seq) => (seq as u64).saturating_sub(1),
        None => head,
    };
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

pub(super) fn classify(e: rusqlite::Error) -> JournalError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => JournalError::DiskFull,
        _ => JournalError::Sqlite(e),
    }
}
