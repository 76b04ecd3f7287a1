//! The journal's unit tests: ordering, wake-ups, retention, recovery, schema fixtures.

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

/// A pending result that cannot be finished stops the open, names its key, keeps the typed
/// cause, and stays pending for the next try.
#[tokio::test]
async fn a_pending_result_that_cannot_be_recovered_keeps_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o").join("s.db");
    let j = Journal::open(&db, KEEP).unwrap();
    let p = PendingResult {
        key: "i/t/a".into(),
        json: "not json".into(),
    };
    j.intend(p.clone()).await.unwrap();
    j.close();
    drop(j);
    let results = super::super::results::ResultsStore::open(dir.path().join("results")).unwrap();
    let e = match Journal::open_recovering(&db, KEEP, &mut |p| {
        results
            .restore_pending(&p.json)
            .map(|_| ev("agent_completed", "i"))
    }) {
        Err(e) => e,
        Ok(_) => panic!("a pending row that is not JSON was recovered"),
    };
    assert!(
        matches!(&e, JournalError::Recover { key, cause: RestoreError::Parse(_) } if key == "i/t/a"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("cannot recover the pending result i/t/a: not a stored result: "),
        "{e}"
    );
    let j = Journal::open(&db, KEEP).unwrap();
    assert!(j.is_pending(&p.key));
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
