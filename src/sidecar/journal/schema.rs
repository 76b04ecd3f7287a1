//! The journal's SQLite layout and its versions: `PRAGMA user_version` names the layout a
//! file has, and `migrate` brings an older file up to [`VERSION`] in one transaction.
//! Version 0 is the layout of the first release (no `user_version` set).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use serde_json::value::RawValue;

use super::{JournalError, JournalEvent};

/// The layout this build writes.
pub const VERSION: i64 = 4;
/// How long a statement waits for a lock held by another connection of this process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Version 0: events, the agent registry and the retention floor.
const V0: &str = "
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

/// Version 1: results whose files may be written but whose `agent_completed` is not yet
/// committed; finished on start-up so a crash cannot leave a result unannounced.
const V1: &str = "
CREATE TABLE IF NOT EXISTS pending_results (key TEXT PRIMARY KEY, json TEXT NOT NULL);
";

/// Version 2: file leases (`sidecar::leases`) and each agent's inbox cursor
/// (`sidecar::inbox`).
const V2: &str = "
CREATE TABLE IF NOT EXISTS leases (
    lease_id TEXT PRIMARY KEY,
    issue_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_agent ON leases(issue_id, agent_id);
CREATE TABLE IF NOT EXISTS inbox_cursors (
    issue_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (issue_id, agent_id)
);
";

/// Version 3: the `claude_code.api_request` records of Claude Code's OpenTelemetry export
/// (`sidecar::cost`), keyed for idempotent inserts, and each costed session's issue (kept
/// past the journal's retention of its `session_started` event).
const V3: &str = "
CREATE TABLE IF NOT EXISTS cost_records (
    key TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    agent_id TEXT,
    model TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cost_records_by_time ON cost_records(ts_ms);
CREATE TABLE IF NOT EXISTS cost_sessions (session_id TEXT PRIMARY KEY, issue_id TEXT NOT NULL);
";

/// Version 4: what cco injected into each agent (`sidecar::told`): one row per context,
/// note or inbox delivery, as JSON of hashes and sizes, never the text. `issue_id` keeps
/// apart the issues of an id that is not unique to one (the main session's `main`).
const V4: &str = "
CREATE TABLE IF NOT EXISTS told (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    issue_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS told_by_agent ON told(agent_id, kind, id);
";

/// Migrations, in order: `MIGRATIONS[n]` takes a file from version `n` to `n + 1`.
const MIGRATIONS: [&str; VERSION as usize] = [V1, V2, V3, V4];

/// Opens a connection with the journal's pragmas. A file that is not a database says so.
pub(crate) fn open_conn(path: &Path) -> Result<Connection, JournalError> {
    let open = || -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk when `publish` returns; group commit pays for it.
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(conn)
    };
    open().map_err(|e| on_open(path, e))
}

/// Classifies an error met while opening or migrating `path`.
pub(super) fn on_open(path: &Path, source: rusqlite::Error) -> JournalError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => JournalError::Corrupt {
            path: path.to_owned(),
        },
        Some(ErrorCode::DiskFull) => JournalError::DiskFull,
        _ => JournalError::Open {
            path: path.display().to_string(),
            source,
        },
    }
}

/// Brings the file to [`VERSION`]; a file from a newer cco is refused, not rewritten.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), JournalError> {
    let err = |e| on_open(path, e);
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if found > VERSION {
        return Err(JournalError::NewerSchema {
            path: path.to_owned(),
            found,
        });
    }
    if found == VERSION {
        return Ok(());
    }
    let tx = conn.transaction().map_err(err)?;
    // Version 0 files may predate any table (a fresh file); `IF NOT EXISTS` covers both.
    tx.execute_batch(V0).map_err(err)?;
    for m in &MIGRATIONS[found as usize..] {
        tx.execute_batch(m).map_err(err)?;
    }
    tx.pragma_update(None, "user_version", VERSION)
        .map_err(err)?;
    tx.commit().map_err(err)?;
    if found > 0 || has_events(conn) {
        tracing::info!(from = found, to = VERSION, "journal schema migrated");
    }
    Ok(())
}

fn has_events(conn: &Connection) -> bool {
    conn.query_row("SELECT EXISTS(SELECT 1 FROM events)", [], |r| r.get(0))
        .unwrap_or(false)
}

pub(super) fn row_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<JournalEvent> {
    let json: String = r.get(3)?;
    Ok(JournalEvent {
        seq: r.get::<_, i64>(0)? as u64,
        event_type: r.get(1)?,
        topic: r.get(2)?,
        json: RawValue::from_string(json)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_file_gets_the_current_version_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = open_conn(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn, &path),
            Err(JournalError::NewerSchema { .. })
        ));
    }

    /// A version-2 file (leases, inbox cursors) keeps its rows and gains the `told` table.
    #[test]
    fn a_version_2_file_gains_the_told_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = open_conn(&path).unwrap();
        conn.execute_batch(&format!("{V0}{V1}{V2}")).unwrap();
        conn.execute(
            "INSERT INTO inbox_cursors(issue_id, agent_id, seq) VALUES ('i', 'a', 7)",
            [],
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        migrate(&mut conn, &path).unwrap();
        let told: i64 = conn
            .query_row("SELECT COUNT(*) FROM told", [], |r| r.get(0))
            .unwrap();
        let seq: i64 = conn
            .query_row("SELECT seq FROM inbox_cursors", [], |r| r.get(0))
            .unwrap();
        assert_eq!((told, seq), (0, 7));
    }

    #[test]
    fn garbage_is_called_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let e = open_conn(&path)
            .and_then(|mut c| migrate(&mut c, &path))
            .unwrap_err();
        assert!(matches!(e, JournalError::Corrupt { .. }), "{e}");
    }
}
