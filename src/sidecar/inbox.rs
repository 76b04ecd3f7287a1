//! Each agent's inbox: the journal's events addressed to it — topic = its agent id, its
//! agent type, or its issue's id (the broadcast topic) — delivered once, through a cursor per
//! (issue, agent) kept in SQLite (table `inbox_cursors`) and advanced in the same
//! transaction that reads. A delivery with nothing new is answered from memory: hooks ask
//! after every tool call, and that check must cost nothing measurable.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::api::sidecar::Event;
use crate::api::{AgentId, AgentType, IssueId};

use super::journal::JournalError;

/// Most events one delivery carries; the rest are counted in `more`.
pub const MAX_INBOX_EVENTS: usize = 20;
/// Most bytes of event JSON one delivery carries (at least one event is always delivered).
pub const MAX_INBOX_BYTES: usize = 16 * 1024;

/// Most events past an agent's durable cursor that an empty delivery leaves unwritten.
pub const UNWRITTEN_SPAN: u64 = 4096;

/// How much one delivery may carry: at least one event, at most `max_events` and
/// `max_bytes` of event JSON (the first event always goes, whatever its size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_events: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events: MAX_INBOX_EVENTS,
            max_bytes: MAX_INBOX_BYTES,
        }
    }
}

impl Limits {
    /// Clamped to the defaults (a caller may ask for less, never more) and to one event.
    pub fn clamp(self) -> Limits {
        Limits {
            max_events: self.max_events.clamp(1, MAX_INBOX_EVENTS),
            max_bytes: self.max_bytes.min(MAX_INBOX_BYTES),
        }
    }
}

/// One delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub events: Vec<Event>,
    pub more: u64,
    pub cursor: u64,
}

/// The inbox cursors, on their own connection to the journal's database.
#[derive(Debug)]
pub struct Inbox {
    conn: Mutex<Connection>,
    /// Each (issue, agent)'s cursor as last committed: when it is at the journal's head,
    /// there is nothing to deliver and SQLite is not touched.
    known: Mutex<HashMap<(String, String), u64>>,
}

/// Who is asking: the agent, its type if known, and when it was registered (RFC 3339).
#[derive(Debug, Clone)]
pub struct Recipient<'a> {
    pub issue: &'a IssueId,
    pub agent: &'a AgentId,
    pub agent_type: Option<&'a AgentType>,
    pub registered_at: Option<&'a str>,
}

impl Inbox {
    /// Opens on the journal's database (migrated by `Journal::open`).
    pub fn open(path: &Path) -> Result<Inbox, JournalError> {
        Ok(Inbox {
            conn: Mutex::new(super::journal::schema::open_conn(path)?),
            known: Mutex::new(HashMap::new()),
        })
    }

    /// Delivers the events addressed to `to` with seq in (cursor, `head`] and moves its
    /// cursor past them, atomically. An agent's first call starts from its registration
    /// (events published before it existed are not its mail); an unregistered agent's
    /// first call starts at `head`. Lifecycle events (`agent_*`) and the agent's own events
    /// are not delivered.
    pub fn deliver(&self, to: &Recipient<'_>, head: u64) -> Result<Delivery, JournalError> {
        self.deliver_within(to, head, Limits::default())
    }

    /// [`Inbox::deliver`], carrying at most `limits` (clamped to the defaults).
    pub fn deliver_within(
        &self,
        to: &Recipient<'_>,
        head: u64,
        limits: Limits,
    ) -> Result<Delivery, JournalError> {
        let limits = limits.clamp();
        let key = (to.issue.to_string(), to.agent.to_string());
        if let Some(&cursor) = self.known.lock().expect("inbox cache").get(&key)
            && cursor >= head
        {
            return Ok(Delivery {
                events: Vec::new(),
                more: 0,
                cursor,
            });
        }
        let mut conn = self.conn.lock().expect("inbox lock");
        // IMMEDIATE: a read-then-write transaction in WAL mode fails at once (SQLITE_BUSY,
        // no busy wait) when another connection commits between its read and its write.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let saved: Option<i64> = tx
            .query_row(
                "SELECT seq FROM inbox_cursors WHERE issue_id = ?1 AND agent_id = ?2",
                params![to.issue.as_str(), to.agent.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let stored = match saved {
            Some(s) => s as u64,
            None => first_cursor(&tx, to.registered_at, head)?,
        };
        // A cursor known in memory only (an empty delivery left unwritten, below) is as good.
        let known = self.known.lock().expect("inbox cache").get(&key).copied();
        let cursor = stored.max(known.unwrap_or(0)).min(head);
        let ty = to.agent_type.map(|t| t.as_str());
        let matching = "FROM events WHERE seq > ?1 AND seq <= ?2
               AND (topic = ?3 OR topic = ?4 OR topic = ?5)
               AND event_type NOT IN ('agent_started', 'agent_completed', 'agent_failed')
               AND json_extract(json, '$.publisher') IS NOT ?4";
        let mut events = Vec::new();
        let mut last = cursor;
        let mut bytes = 0;
        let mut matched = 0usize;
        {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT seq, json {matching} ORDER BY seq LIMIT ?6"
            ))?;
            let mut rows = stmt.query(params![
                cursor as i64,
                head as i64,
                to.issue.as_str(),
                to.agent.as_str(),
                ty,
                limits.max_events as i64
            ])?;
            while let Some(r) = rows.next()? {
                matched += 1;
                let (seq, json): (i64, String) = (r.get(0)?, r.get(1)?);
                if !events.is_empty() && bytes + json.len() > limits.max_bytes {
                    break;
                }
                bytes += json.len();
                match serde_json::from_str::<Event>(&json) {
                    Ok(e) => events.push(e),
                    Err(e) => {
                        tracing::warn!(seq, error = %e, "inbox: skipping an event that does not parse")
                    }
                }
                last = seq as u64;
            }
        }
        let more: i64 = tx.query_row(
            &format!("SELECT COUNT(*) {matching}"),
            params![
                last as i64,
                head as i64,
                to.issue.as_str(),
                to.agent.as_str(),
                ty
            ],
            |r| r.get(0),
        )?;
        // Everything up to `head` was looked at unless some were left for the next call.
        let next = if more > 0 { last } else { head };
        // Where the cursor starts can be found again: it was written, or it follows from the
        // registration time. (An unregistered agent's starts at the head of its first call.)
        let recoverable = saved.is_some() || to.registered_at.is_some();
        if matched == 0 && recoverable && head.saturating_sub(stored) <= UNWRITTEN_SPAN {
            // Nothing addressed to it: moving the durable cursor would cost a commit (an
            // fsync) on every tool call after any event — and at every SubagentStart — and
            // losing that move costs only a rescan of events that are not its mail. Kept in
            // memory; written once the rescan would grow past `UNWRITTEN_SPAN`.
            drop(tx);
            self.known.lock().expect("inbox cache").insert(key, next);
            return Ok(Delivery {
                events,
                more: 0,
                cursor: next,
            });
        }
        tx.execute(
            "INSERT INTO inbox_cursors(issue_id, agent_id, seq) VALUES (?1, ?2, ?3)
             ON CONFLICT(issue_id, agent_id) DO UPDATE SET seq = excluded.seq",
            params![to.issue.as_str(), to.agent.as_str(), next as i64],
        )?;
        tx.commit()?;
        self.known.lock().expect("inbox cache").insert(key, next);
        Ok(Delivery {
            events,
            more: more as u64,
            cursor: next,
        })
    }
}

/// Where a new agent's cursor starts: just before the first event committed at or after its
/// registration, else `head`.
fn first_cursor(
    conn: &Connection,
    registered_at: Option<&str>,
    head: u64,
) -> Result<u64, JournalError> {
    let Some(ms) = registered_at
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
    else {
        return Ok(head);
    };
    let first: Option<i64> =
        conn.query_row("SELECT MIN(seq) FROM events WHERE ts_ms >= ?1", [ms], |r| {
            r.get(0)
        })?;
    Ok(first.map_or(head, |s| (s as u64).saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::EventType;
    use crate::sidecar::journal::{Journal, NewEvent, Retention};

    fn ev(topic: &str, publisher: &str) -> NewEvent {
        NewEvent {
            event_type: EventType::parse("note").unwrap(),
            publisher: publisher.into(),
            topic: topic.into(),
            data: serde_json::json!({}),
            correlation_id: None,
        }
    }

    /// A journal in `dir`, and its database's path.
    fn journal(dir: &Path) -> (Journal, std::path::PathBuf) {
        let db = dir.join("o").join("state.db");
        let keep = Retention {
            max_events: 1000,
            max_age: Duration::from_secs(3600),
        };
        (Journal::open(&db, keep).unwrap(), db)
    }

    /// The cursor is durable: a reopened inbox does not deliver an event twice.
    #[tokio::test]
    async fn each_event_is_delivered_once_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (j, db) = journal(dir.path());
        let (issue, agent, ty) = (
            IssueId::parse("i-1").unwrap(),
            AgentId::parse("a-1").unwrap(),
            AgentType::parse("reviewer").unwrap(),
        );
        let to = Recipient {
            issue: &issue,
            agent: &agent,
            agent_type: Some(&ty),
            registered_at: Some("1970-01-01T00:00:00Z"),
        };
        for (topic, publisher) in [
            ("a-1", "m"),
            ("reviewer", "m"),
            ("i-1", "a-1"),
            ("i-2", "m"),
        ] {
            j.publish(ev(topic, publisher)).await.unwrap();
        }
        let first = Inbox::open(&db).unwrap().deliver(&to, j.head()).unwrap();
        let seqs: Vec<u64> = first.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2], "own and other-issue events are not its mail");
        assert_eq!(first.cursor, 4);
        j.publish(ev("i-1", "m")).await.unwrap();
        let again = Inbox::open(&db).unwrap().deliver(&to, j.head()).unwrap();
        let seqs: Vec<u64> = again.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [5]);
        j.close();
    }

    /// Nothing addressed to the agent: no commit (no fsync on the hook path), and after a
    /// restart the next delivery is still exactly its mail.
    #[tokio::test]
    async fn an_empty_delivery_writes_nothing_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (j, db) = journal(dir.path());
        let (issue, agent) = (
            IssueId::parse("i-1").unwrap(),
            AgentId::parse("a-1").unwrap(),
        );
        let to = Recipient {
            issue: &issue,
            agent: &agent,
            agent_type: None,
            registered_at: Some("1970-01-01T00:00:00Z"),
        };
        let cursors = || -> i64 {
            Connection::open(&db)
                .unwrap()
                .query_row("SELECT COUNT(*) FROM inbox_cursors", [], |r| r.get(0))
                .unwrap()
        };
        j.publish(ev("i-2", "m")).await.unwrap();
        j.publish(ev("someone-else", "m")).await.unwrap();
        let inbox = Inbox::open(&db).unwrap();
        let first = inbox.deliver(&to, j.head()).unwrap();
        assert_eq!((first.events.len(), first.cursor), (0, 2));
        j.publish(ev("i-2", "m")).await.unwrap();
        let none = inbox.deliver(&to, j.head()).unwrap();
        assert_eq!((none.events.len(), none.cursor), (0, 3));
        assert_eq!(cursors(), 0, "an empty delivery commits nothing");
        j.publish(ev("a-1", "m")).await.unwrap();
        let mail = Inbox::open(&db).unwrap().deliver(&to, j.head()).unwrap();
        let seqs: Vec<u64> = mail.events.iter().map(|e| e.seq).collect();
        assert_eq!((seqs.as_slice(), mail.cursor), (&[4][..], 4));
        assert_eq!(cursors(), 1, "a delivery with mail is durable");
        // An unregistered agent starts at the head of its first call: that is written.
        let main = AgentId::parse("main").unwrap();
        let unregistered = Recipient {
            agent: &main,
            registered_at: None,
            ..to
        };
        let start = inbox.deliver(&unregistered, j.head()).unwrap();
        assert_eq!((start.events.len(), start.cursor), (0, 4));
        assert_eq!(
            cursors(),
            2,
            "an unregistered agent's first cursor is durable"
        );
        j.close();
    }

    /// A hook's small push: the limits cut the delivery, the rest is counted and comes next;
    /// with nothing new the answer is empty and the cursor stays.
    #[tokio::test]
    async fn limits_cut_a_delivery_and_nothing_new_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (j, db) = journal(dir.path());
        let (issue, agent) = (
            IssueId::parse("i-1").unwrap(),
            AgentId::parse("a-1").unwrap(),
        );
        let to = Recipient {
            issue: &issue,
            agent: &agent,
            agent_type: None,
            registered_at: Some("1970-01-01T00:00:00Z"),
        };
        for _ in 0..5 {
            j.publish(ev("a-1", "m")).await.unwrap();
        }
        let inbox = Inbox::open(&db).unwrap();
        let small = Limits {
            max_events: 2,
            max_bytes: 1 << 20,
        };
        let first = inbox.deliver_within(&to, j.head(), small).unwrap();
        assert_eq!((first.events.len(), first.more, first.cursor), (2, 3, 2));
        // One byte: still one event, never none.
        let tiny = Limits {
            max_events: 5,
            max_bytes: 1,
        };
        let second = inbox.deliver_within(&to, j.head(), tiny).unwrap();
        assert_eq!((second.events.len(), second.more), (1, 2));
        let rest = inbox.deliver(&to, j.head()).unwrap();
        assert_eq!((rest.events.len(), rest.more, rest.cursor), (2, 0, 5));
        let none = inbox.deliver(&to, j.head()).unwrap();
        assert_eq!((none.events.len(), none.more, none.cursor), (0, 0, 5));
        // Asking for more than the defaults gets the defaults.
        let huge = Limits {
            max_events: usize::MAX,
            max_bytes: usize::MAX,
        };
        assert_eq!(huge.clamp(), Limits::default());
        j.close();
    }
}
