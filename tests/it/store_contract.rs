//! The sidecar's storage contract, run against both backends (`contract!` makes one test
//! per backend): cursors, long-poll, SSE, retention, results, the registry, leases, the
//! inbox — on SQLite, and on a real single-node NATS JetStream (`nats_server.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Env, Service, http};
use crate::nats_server::NatsServer;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Nats,
}

/// One installation on one backend (and the NATS server it uses, stopped last).
struct World {
    _env: Env,
    _sidecar: Service,
    token: String,
    port: u16,
    _nats: Option<NatsServer>,
}

/// A namespace no other test uses.
fn namespace() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl World {
    /// `None` when NATS is wanted and nats-server is missing (a failure in CI).
    fn start(backend: Backend, config: &str) -> Option<World> {
        let mut env = Env::new();
        let nats = match backend {
            Backend::Sqlite => None,
            Backend::Nats => {
                let server = NatsServer::start()?;
                env.set("CCO_STORE_BACKEND", "nats")
                    .set("CCO_NATS_SERVERS", server.url())
                    .set("CCO_STORE_NAMESPACE", namespace());
                Some(server)
            }
        };
        std::fs::create_dir_all(env.config_dir()).unwrap();
        std::fs::write(env.config_file(), config).unwrap();
        let sidecar = env.start("sidecar");
        let out = env.run(["token"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let port = env.sidecar_port;
        Some(World {
            _env: env,
            _sidecar: sidecar,
            token,
            port,
            _nats: nats,
        })
    }

    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        api(self.port, &self.token, method, path, body)
    }

    fn publish(&self, event_type: &str, topic: &str, publisher: &str) -> u64 {
        let (status, ev) = self.api(
            "POST",
            &format!("/api/events/{event_type}"),
            Some(json!({"publisher": publisher, "topic": topic, "data": {"n": 1}})),
        );
        assert_eq!(status, 201, "{ev}");
        ev["seq"].as_u64().unwrap()
    }
}

fn api(port: u16, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let text = body.map(|b| b.to_string());
    let mut headers = vec![("Authorization", auth.as_str())];
    if text.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let (status, body) = http(port, method, path, &headers, text.as_deref());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn seqs(batch: &Value) -> Vec<u64> {
    batch["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// One test per backend, with the same body.
macro_rules! contract {
    ($name:ident, $config:expr, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn sqlite() {
                if let Some(w) = World::start(Backend::Sqlite, $config) {
                    ($body)(&w, Backend::Sqlite);
                }
            }
            #[test]
            fn nats() {
                if let Some(w) = World::start(Backend::Nats, $config) {
                    ($body)(&w, Backend::Nats);
                }
            }
        }
    };
}

contract!(cursors_filters_and_410s, "", |w: &World, _| {
    let mut published = Vec::new();
    for i in 0..6 {
        let topic = if i % 2 == 0 { "a" } else { "b.c d" };
        published.push((w.publish("build", topic, "p"), topic));
    }
    let other = w.publish("other", "a", "p");
    assert!(
        published.windows(2).all(|p| p[1].0 == p[0].0 + 1),
        "{published:?}"
    );
    assert_eq!(other, published[5].0 + 1);

    // Every matching event once, in order, with the cursor to continue from.
    let (status, batch) = w.api("GET", "/api/events/wait/build?since=0&timeout=1000", None);
    assert_eq!(status, 200, "{batch}");
    let all: Vec<u64> = published.iter().map(|p| p.0).collect();
    assert_eq!(seqs(&batch), all);
    assert_eq!(batch["next_since"], other);
    let (_, batch) = w.api(
        "GET",
        "/api/events/wait/build?since=0&filter=topic:b.c%20d&timeout=1000",
        None,
    );
    let odd: Vec<u64> = published
        .iter()
        .filter(|p| p.1 != "a")
        .map(|p| p.0)
        .collect();
    assert_eq!(seqs(&batch), odd);
    assert!(batch["events"][0]["topic"] == "b.c d", "{batch}");
    // From the middle: only what follows.
    let (_, batch) = w.api(
        "GET",
        &format!("/api/events/wait/build?since={}&timeout=1000", all[2]),
        None,
    );
    assert_eq!(seqs(&batch), all[3..]);
    // Nothing newer: the timeout answers empty, the cursor stays.
    let (_, batch) = w.api(
        "GET",
        &format!("/api/events/wait/build?since={other}&timeout=200"),
        None,
    );
    assert_eq!(seqs(&batch), Vec::<u64>::new());
    assert_eq!(batch["next_since"], other);

    // SSE from a cursor: the same events, ids are the seqs.
    let auth = format!("Bearer {}", w.token);
    let (status, body) = http(
        w.port,
        "GET",
        "/api/events/stream?since=0&follow=false&event_type=build",
        &[("Authorization", auth.as_str())],
        None,
    );
    assert_eq!(status, 200);
    let ids: Vec<u64> = body
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(ids, all);

    // A cursor ahead of the newest event: 410 at once, for wait and stream.
    for path in [
        format!("/api/events/wait/build?since={}&timeout=60000", other + 5),
        format!("/api/events/stream?since={}", other + 5),
    ] {
        let started = Instant::now();
        let (status, e) = w.api("GET", &path, None);
        assert_eq!(
            (status, error_code(&e)),
            (410, "cursor_ahead"),
            "{path}: {e}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
});

contract!(
    retention_turns_old_cursors_into_410,
    "[sidecar]\nretention_events = 3\n",
    |w: &World, _| {
        let seqs_published: Vec<u64> = (0..10).map(|_| w.publish("e", "t", "p")).collect();
        assert_eq!(seqs_published, (1..=10).collect::<Vec<_>>());
        let (status, e) = w.api("GET", "/api/events/wait/e?since=0", None);
        assert_eq!((status, error_code(&e)), (410, "cursor_expired"), "{e}");
        assert!(e["error"]["floor"].as_u64().is_some(), "{e}");
        let (status, batch) = w.api("GET", "/api/events/wait/e?since=9", None);
        assert_eq!(status, 200, "{batch}");
        assert_eq!(seqs(&batch), [10]);
    }
);

contract!(long_poll_wakes_on_a_publish, "", |w: &World, _| {
    let head = w.publish("warmup", "t", "p");
    let (port, token) = (w.port, w.token.clone());
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = api(
            port,
            &token,
            "GET",
            &format!("/api/events/wait/ping?since={head}&filter=topic:x&timeout=30000"),
            None,
        );
        (answer, started.elapsed())
    });
    // Another topic does not answer the waiter; its own does.
    w.publish("ping", "y", "p");
    let seq = w.publish("ping", "x", "p");
    let ((status, batch), took) = waiter.join().unwrap();
    assert_eq!(status, 200, "{batch}");
    assert_eq!(seqs(&batch), [seq]);
    assert!(took < Duration::from_secs(20), "woken late: {took:?}");
});

contract!(results_are_idempotent_and_announced, "", |w: &World, _| {
    let submit = |status_text: &str| {
        w.api(
            "POST",
            "/api/results",
            Some(json!({
                "agent_id": "rev-1", "agent_type": "code-reviewer", "issue_id": "issue-9",
                "result": {"status": status_text, "summary": "looked"}
            })),
        )
    };
    let (status, first) = submit("done");
    assert_eq!(status, 201, "{first}");
    let seq = first["seq"].as_u64().unwrap();
    assert!(
        first["path"].as_str().unwrap().contains("code-reviewer"),
        "{first}"
    );
    // The same result again: acknowledged, nothing stored or announced twice.
    let (status, again) = submit("done");
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["unchanged"], true);
    assert!(again.get("seq").is_none(), "{again}");
    let (status, changed) = submit("redone");
    assert_eq!(status, 201, "{changed}");
    assert_eq!(changed["seq"].as_u64().unwrap(), seq + 1);

    let (_, list) = w.api("GET", "/api/results/issue-9", None);
    let results = list["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{list}");
    assert_eq!(results[0]["result"]["status"], "redone");
    let (_, batch) = w.api(
        "GET",
        "/api/events/wait/agent_completed?since=0&timeout=1000",
        None,
    );
    assert_eq!(seqs(&batch), [seq, seq + 1]);
    assert_eq!(batch["events"][1]["data"]["status"], "redone");
    assert_eq!(batch["events"][1]["data"]["agent_type"], "code-reviewer");
    assert_eq!(batch["events"][1]["topic"], "issue-9");
});

contract!(registry_and_wait_all, "", |w: &World, _| {
    let status = |agent: &str, s: &str| {
        let (code, rec) = w.api(
            "POST",
            &format!("/api/agents/{agent}/status"),
            Some(json!({"status": s, "agent_type": "tester", "issue_id": "issue-3"})),
        );
        assert_eq!(code, 200, "{rec}");
        rec
    };
    let started = status("t-1", "started");
    let done = status("t-1", "completed");
    assert_eq!(
        done["started_at"], started["started_at"],
        "first start kept"
    );
    let (_, agents) = w.api("GET", "/api/agents", None);
    assert_eq!(agents["agents"][0]["agent_id"], "t-1");
    assert_eq!(agents["counts"]["completed"], 1);
    let (_, join) = w.api(
        "GET",
        "/api/agents/wait_all/issue-3?types=tester&timeout=5000",
        None,
    );
    assert_eq!(join["done"], true, "{join}");
    let (_, batch) = w.api(
        "GET",
        "/api/events/wait/agent_started?since=0&timeout=1000",
        None,
    );
    assert_eq!(batch["events"][0]["publisher"], "t-1", "{batch}");
});

contract!(exclusive_leases_exclude, "", |w: &World, _| {
    let reserve = |agent: &str, path: &str| {
        w.api(
            "POST",
            "/api/leases/issue-4",
            Some(json!({"agent": agent, "paths": [path], "mode": "exclusive", "reason": "edit"})),
        )
    };
    let (status, granted) = reserve("a-1", "src/**");
    assert_eq!(status, 201, "{granted}");
    let lease_id = granted["lease"]["lease_id"].as_str().unwrap().to_string();
    let (status, refused) = reserve("a-2", "src/lib.rs");
    assert_eq!(
        (status, error_code(&refused)),
        (409, "lease_conflict"),
        "{refused}"
    );
    assert_eq!(refused["conflicts"][0]["lease_id"], lease_id.as_str());
    let (_, check) = w.api(
        "GET",
        "/api/leases/issue-4/check?path=src/lib.rs&agent=a-2",
        None,
    );
    assert_eq!(check["blocked"], true, "{check}");
    let (status, _) = w.api(
        "POST",
        &format!("/api/leases/issue-4/{lease_id}/release"),
        Some(json!({"agent": "a-2"})),
    );
    assert_eq!(status, 403, "only the holder releases");
    let (status, released) = w.api(
        "POST",
        &format!("/api/leases/issue-4/{lease_id}/release"),
        Some(json!({"agent": "a-1"})),
    );
    assert_eq!(status, 200, "{released}");
    let (status, granted) = reserve("a-2", "src/lib.rs");
    assert_eq!(status, 201, "{granted}");
    let (_, all) = w.api("GET", "/api/leases", None);
    assert_eq!(all["leases"].as_array().unwrap().len(), 1, "{all}");
});

contract!(cost_and_the_event_listing_over_http, "", |w: &World, _| {
    let record = |key: &str, cost: f64| {
        json!({"key": key, "session_id": "s-9", "model": "claude-test", "input_tokens": 10,
            "output_tokens": 5, "cache_read_tokens": 0, "cache_creation_tokens": 0,
            "cost_usd": cost, "duration_ms": 30, "timestamp_ms": 1_000})
    };
    let body = json!({"records": [record("s-9#1", 0.5), record("s-9#2", 0.25)]});
    let (status, got) = w.api("POST", "/api/cost/records", Some(body.clone()));
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        (got["stored"].as_u64(), got["duplicates"].as_u64()),
        (Some(2), Some(0))
    );
    let (_, got) = w.api("POST", "/api/cost/records", Some(body));
    assert_eq!(
        (got["stored"].as_u64(), got["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    let (status, report) = w.api("GET", "/api/cost?by=issue", None);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["rows"][0]["key"], "session-s-9", "{report}");
    assert_eq!(report["total"]["requests"], 2, "{report}");
    assert_eq!(report["total"]["cost_usd"], 0.75, "{report}");
    let (status, outcomes) = w.api("GET", "/api/cost/outcomes", None);
    assert_eq!(status, 200, "{outcomes}");
    assert_eq!(
        outcomes["rows"][0]["orchestrator"]["requests"], 2,
        "{outcomes}"
    );

    // The dashboard's newest-first listing, paged by `before`.
    let seqs: Vec<u64> = (0..5).map(|_| w.publish("note", "t", "p")).collect();
    let (status, page) = w.api("GET", "/api/views/events?type=note&limit=3", None);
    assert_eq!(status, 200, "{page}");
    let listed: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [seqs[4], seqs[3], seqs[2]]);
    let before = page["next_before"].as_u64().unwrap();
    let (_, page) = w.api(
        "GET",
        &format!("/api/views/events?type=note&limit=3&before={before}"),
        None,
    );
    let listed: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [seqs[1], seqs[0]]);
    assert!(page["next_before"].is_null(), "{page}");
});

contract!(inbox_delivers_each_event_once, "", |w: &World, _| {
    let (code, _) = w.api(
        "POST",
        "/api/agents/rx-1/status",
        Some(json!({"status": "started", "agent_type": "tester", "issue_id": "issue-5"})),
    );
    assert_eq!(code, 200);
    let mine = w.publish("note", "rx-1", "lead");
    w.publish("note", "someone-else", "lead");
    let own = w.publish("note", "issue-5", "rx-1");
    let broadcast = w.publish("note", "issue-5", "lead");
    let (status, first) = w.api("GET", "/api/inbox/issue-5/rx-1", None);
    assert_eq!(status, 200, "{first}");
    let got = seqs(&first);
    assert_eq!(
        got,
        [mine, broadcast],
        "its own event ({own}) is not its mail"
    );
    assert_eq!(first["more"], 0);
    let (_, second) = w.api("GET", "/api/inbox/issue-5/rx-1", None);
    assert_eq!(seqs(&second), Vec::<u64>::new(), "{second}");
    assert_eq!(second["cursor"], first["cursor"]);
});

/// NATS down: the sidecar stays up and answers 503 `store_unavailable` with the reason and
/// the fix; when NATS comes (back) it connects on its own.
#[test]
fn nats_unreachable_answers_503_then_recovers() {
    let bin = match crate::nats_server::nats_server_binary() {
        Ok(b) => b,
        Err(why) => return crate::common::cannot_run(&why),
    };
    let nats_port = crate::common::free_port();
    let mut env = Env::new();
    env.set("CCO_STORE_BACKEND", "nats")
        .set("CCO_NATS_SERVERS", format!("nats://127.0.0.1:{nats_port}"))
        .set("CCO_STORE_NAMESPACE", namespace());
    let _sidecar = env.start("sidecar");
    let out = env.run(["token"]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let port = env.sidecar_port;
    let publish = || {
        api(
            port,
            &token,
            "POST",
            "/api/events/e",
            Some(json!({"publisher": "p", "topic": "t"})),
        )
    };
    let (status, e) = publish();
    assert_eq!((status, error_code(&e)), (503, "store_unavailable"), "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&nats_port.to_string()) && message.contains("`cco doctor`"),
        "{message}"
    );
    for path in [
        "/api/events/wait/e?since=0&timeout=100",
        "/api/agents/wait_all/i?timeout=100",
    ] {
        let (status, e) = api(port, &token, "GET", path, None);
        if path.contains("events") {
            assert_eq!((status, error_code(&e)), (503, "store_unavailable"), "{e}");
        }
    }
    let (status, health) = http(port, "GET", "/health", &[], None);
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("\"event_bus\":\"unhealthy\""), "{health}");

    // NATS comes up on that port: the sidecar connects and creates the stream by itself
    // (it retries with back-off up to `RETRY_MAX`).
    let _nats = NatsServer::start_with(&bin, nats_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, ev) = publish();
        if status == 201 {
            assert_eq!(ev["seq"], 1, "{ev}");
            break;
        }
        assert_eq!(status, 503, "{ev}");
        assert!(Instant::now() < deadline, "never reconnected: {ev}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

mod lib_level {
    //! The store API itself: compare-and-set lease races and cursor errors.

    use super::*;
    use cco::api::leases::{LeaseMode, ReserveRequest};
    use cco::api::{AgentId, IssueId};
    use cco::config::{StoreBackend, StoreConfig};
    use cco::sidecar::journal::{EventFilter, JournalError, Retention};
    use cco::sidecar::leases::{LeaseError, now_ms};
    use cco::sidecar::store::{Error, NatsStore, SqliteStore, Store};

    const RETENTION: Retention = Retention {
        max_events: 100_000,
        max_age: Duration::from_secs(24 * 3600),
    };
    /// Contenders per round, and rounds.
    const CONTENDERS: usize = 12;
    const ROUNDS: usize = 5;

    fn nats_store(server: &NatsServer, ns: &str) -> Store {
        let config = StoreConfig {
            backend: StoreBackend::Nats,
            nats_servers: vec![server.url()],
            namespace: ns.to_string(),
            ..StoreConfig::default()
        };
        Store::Nats(NatsStore::open(&config, RETENTION))
    }

    async fn ready(s: &Store) {
        if let Store::Nats(n) = s {
            assert!(
                n.ready(Duration::from_secs(20)).await,
                "{:?}",
                n.unavailable_reason()
            );
        }
    }

    /// Many agents reserve the same file at once through `stores` (two handles on NATS:
    /// two machines): exactly one exclusive lease is granted per round.
    async fn one_winner(stores: Vec<Arc<Store>>) {
        for round in 0..ROUNDS {
            let issue = IssueId::parse(&format!("race-{round}")).unwrap();
            let mut tasks = Vec::new();
            for i in 0..CONTENDERS {
                let store = stores[i % stores.len()].clone();
                let issue = issue.clone();
                tasks.push(tokio::spawn(async move {
                    let req = ReserveRequest {
                        agent: AgentId::parse(&format!("agent-{i}")).unwrap(),
                        paths: vec!["src/lib.rs".into()],
                        mode: LeaseMode::Exclusive,
                        reason: String::new(),
                        ttl_secs: None,
                    };
                    store.reserve(&issue, &req, None, now_ms()).await
                }));
            }
            let mut granted = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(_) => granted += 1,
                    Err(Error::Lease(LeaseError::Conflict(c))) => assert_eq!(c.len(), 1),
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            assert_eq!(granted, 1, "round {round}: exclusive leases granted");
            for s in &stores {
                // Each handle sees the one lease (NATS: through its watcher, eventually).
                let deadline = Instant::now() + Duration::from_secs(10);
                while s.leases(Some(&issue), now_ms()).len() != 1 {
                    assert!(
                        Instant::now() < deadline,
                        "round {round}: lease not mirrored"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lease_race_has_one_winner_on_nats_across_two_handles() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let ns = namespace();
        let a = Arc::new(nats_store(&server, &ns));
        let b = Arc::new(nats_store(&server, &ns));
        ready(&a).await;
        ready(&b).await;
        one_winner(vec![a.clone(), b.clone()]).await;
        a.close();
        b.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lease_race_has_one_winner_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            &dir.path().join("orchestration/state.db"),
            dir.path().join("orchestration/results"),
            RETENTION,
        )
        .unwrap();
        let store = Arc::new(Store::Sqlite(store));
        one_winner(vec![store.clone()]).await;
        store.close();
    }

    async fn cursor_errors(s: &Store) {
        ready(s).await;
        let event = || cco::sidecar::journal::NewEvent {
            event_type: cco::api::EventType::parse("e").unwrap(),
            publisher: "p".into(),
            topic: "t".into(),
            data: json!({}),
            correlation_id: None,
        };
        let first = s.publish(event()).await.unwrap();
        let second = s.publish(event()).await.unwrap();
        assert_eq!(second.seq, first.seq + 1);
        assert_eq!(s.head(), second.seq);
        let all = EventFilter::default();
        let (events, next) = s.read(first.seq - 1, &all, 10).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [first.seq, second.seq]
        );
        assert_eq!(next, second.seq);
        // Limited: the cursor continues after the last one returned.
        let (events, next) = s.read(first.seq - 1, &all, 1).await.unwrap();
        assert_eq!((events.len(), next), (1, first.seq));
        match s.read(second.seq + 1, &all, 10).await {
            Err(Error::Journal(JournalError::Ahead { since, head })) => {
                assert_eq!((since, head), (second.seq + 1, second.seq))
            }
            other => panic!("expected Ahead, got {other:?}"),
        }
        assert!(s.check_cursor(second.seq + 1).is_err());
        assert!(s.check_cursor(second.seq).is_ok());
    }

    /// A waiter on one handle (one machine) is woken by a publish on another.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_publish_on_one_handle_wakes_a_waiter_on_another() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let ns = namespace();
        let (a, b) = (nats_store(&server, &ns), Arc::new(nats_store(&server, &ns)));
        ready(&a).await;
        ready(&b).await;
        let since = b.head();
        let filter = EventFilter {
            event_type: Some("ping".into()),
            topic: None,
        };
        let (stopper, b2) = (cco::server::Stopper::default(), b.clone());
        let stopping = stopper.subscribe();
        let waiter = tokio::spawn(async move {
            b2.wait(&filter, Some(since), Duration::from_secs(30), stopping)
                .await
        });
        let started = Instant::now();
        let sent = a
            .publish(cco::sidecar::journal::NewEvent {
                event_type: cco::api::EventType::parse("ping").unwrap(),
                publisher: "p".into(),
                topic: "t".into(),
                data: json!({}),
                correlation_id: None,
            })
            .await
            .unwrap();
        let (events, next) = waiter.await.unwrap().unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [sent.seq]);
        assert_eq!(next, sent.seq);
        assert!(started.elapsed() < Duration::from_secs(20));
        a.close();
        b.close();
    }

    /// A crash between the acknowledged `agent_completed` and the index write leaves the
    /// result only in the stream: the next start indexes it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_index_write_is_repaired_from_the_stream() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let ns = namespace();
        let a = nats_store(&server, &ns);
        ready(&a).await;
        let stored: cco::api::sidecar::StoredResult = serde_json::from_value(json!({
            "agent_id": "r-1", "agent_type": "tester", "issue_id": "issue-1",
            "result": {"status": "done"}, "stored_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        let put = a.put_result(stored.clone()).await.unwrap();
        assert!(matches!(put, cco::sidecar::store::PutResult::Stored { .. }));
        a.close();
        // What the crash leaves: the event, no index entry.
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let index = js.get_key_value(format!("{ns}_results")).await.unwrap();
        index.purge("issue-1.tester.r-1").await.unwrap();
        assert!(index.get("issue-1.tester.r-1").await.unwrap().is_none());

        let b = nats_store(&server, &ns);
        ready(&b).await;
        let listed = b.results(&stored.issue_id).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].contains("\"done\""), "{}", listed[0]);
        assert!(index.get("issue-1.tester.r-1").await.unwrap().is_some());
        // And it is the same result: stored again, it is unchanged.
        let again = b.put_result(stored).await.unwrap();
        assert!(matches!(
            again,
            cco::sidecar::store::PutResult::Unchanged { .. }
        ));
        b.close();
    }

    /// NATS killed and restarted: calls fail with `Unavailable` meanwhile, then the store
    /// reconnects by itself, cursors continue and waiters are woken again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_restart_reconnects_and_cursors_continue() {
        let Some(mut server) = NatsServer::start() else {
            return;
        };
        let s = nats_store(&server, &namespace());
        ready(&s).await;
        let event = || cco::sidecar::journal::NewEvent {
            event_type: cco::api::EventType::parse("e").unwrap(),
            publisher: "p".into(),
            topic: "t".into(),
            data: json!({}),
            correlation_id: None,
        };
        let first = s.publish(event()).await.unwrap();
        server.kill();
        // Once the client has noticed: a publish in the moment before it does may sit in the
        // client's buffer and be stored on reconnect although its caller got 503 (README,
        // "Team scale": a retry is then a duplicate).
        let noticed = Instant::now() + Duration::from_secs(10);
        while s.event_bus_healthy() {
            assert!(
                Instant::now() < noticed,
                "the client never noticed NATS was gone"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match s.publish(event()).await {
            Err(Error::Unavailable(reason)) => assert!(!reason.is_empty()),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        server.restart();
        let deadline = Instant::now() + Duration::from_secs(30);
        let second = loop {
            match s.publish(event()).await {
                Ok(e) => break e,
                Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("never reconnected: {e}"),
            }
        };
        assert_eq!(second.seq, first.seq + 1, "the cursor continues");
        let (events, _) = s
            .read(first.seq - 1, &EventFilter::default(), 10)
            .await
            .unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [first.seq, second.seq]
        );
        // A waiter parked now is woken by the next publish.
        let s = Arc::new(s);
        let (stopper, s2) = (cco::server::Stopper::default(), s.clone());
        let stopping = stopper.subscribe();
        let waiter = tokio::spawn(async move {
            s2.wait(
                &EventFilter::default(),
                Some(second.seq),
                Duration::from_secs(30),
                stopping,
            )
            .await
        });
        let third = s.publish(event()).await.unwrap();
        let (events, _) = waiter.await.unwrap().unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [third.seq]
        );
        s.close();
    }

    /// What `cco store migrate` writes: an event keeps its id and data, a result its body,
    /// an agent its record; a second sidecar on the namespace sees them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn imported_events_results_and_agents_are_shared() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let ns = namespace();
        let Store::Nats(a) = nats_store(&server, &ns) else {
            unreachable!()
        };
        assert!(a.ready(Duration::from_secs(20)).await);
        let event: cco::api::sidecar::Event = serde_json::from_value(json!({
            "event_id": "evt_old", "seq": 41, "event_type": "agent_completed",
            "publisher": "r-1", "topic": "issue-2",
            "data": {"issue_id": "issue-2", "agent_type": "tester", "agent_id": "r-1", "status": "done"},
            "timestamp": "2026-01-01T00:00:00.000Z"
        }))
        .unwrap();
        let result: cco::api::sidecar::StoredResult = serde_json::from_value(json!({
            "agent_id": "r-1", "agent_type": "tester", "issue_id": "issue-2",
            "result": {"status": "done"}, "stored_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        let record: cco::api::sidecar::AgentRecord = serde_json::from_value(json!({
            "agent_id": "r-1", "agent_type": "tester", "issue_id": "issue-2",
            "status": "completed", "started_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:01:00Z"
        }))
        .unwrap();
        let seq = a.import_event(event, Some(result)).await.unwrap();
        assert_eq!(seq, 1, "seqs are the stream's");
        a.import_agent(&record).await.unwrap();
        a.close();

        let b = nats_store(&server, &ns);
        ready(&b).await;
        let (events, _) = b.read(0, &EventFilter::default(), 10).await.unwrap();
        let e = events[0].event();
        assert_eq!((e.seq, e.event_id.as_str()), (1, "evt_old"));
        assert_eq!(e.timestamp, "2026-01-01T00:00:00.000Z");
        let issue = IssueId::parse("issue-2").unwrap();
        assert_eq!(b.results(&issue).await.unwrap().len(), 1);
        assert_eq!(b.agents(), [record]);
        b.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cursor_errors_on_nats() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let s = nats_store(&server, &namespace());
        cursor_errors(&s).await;
        s.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cursor_errors_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::Sqlite(
            SqliteStore::open(
                &dir.path().join("orchestration/state.db"),
                dir.path().join("orchestration/results"),
                RETENTION,
            )
            .unwrap(),
        );
        cursor_errors(&s).await;
        s.close();
    }

    /// Events to list newest first: every third is a `note` on topic `t`.
    const LISTED: u64 = 200;

    async fn publish_listed(s: &Store) -> Vec<u64> {
        ready(s).await;
        let mut seqs = Vec::new();
        for i in 0..LISTED {
            let (ty, topic) = if i % 3 == 0 {
                ("note", "t")
            } else {
                ("other", "u")
            };
            let e = s
                .publish(cco::sidecar::journal::NewEvent {
                    event_type: cco::api::EventType::parse(ty).unwrap(),
                    publisher: "p".into(),
                    topic: topic.into(),
                    data: json!({"i": i}),
                    correlation_id: None,
                })
                .await
                .unwrap();
            seqs.push(e.seq);
        }
        seqs
    }

    /// The listing from `s`, paged by `limit` through `before` as the dashboard does.
    async fn listed(s: &Store, filter: &EventFilter, before: u64, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut before = before;
        loop {
            let page = s.newest(before, filter, limit).await.unwrap();
            let seqs: Vec<u64> = page.iter().map(|(seq, _)| *seq).collect();
            for (seq, json) in &page {
                let v: Value = serde_json::from_str(json.get()).unwrap();
                assert_eq!(v["seq"].as_u64(), Some(*seq), "{v}");
            }
            out.extend(&seqs);
            if seqs.len() < limit {
                return out;
            }
            before = *seqs.last().unwrap();
        }
    }

    /// Newest first, filtered, paged: the same answer whether read where it was written or
    /// (NATS) by another handle whose memory holds none of it.
    async fn newest_first(writer: &Store, reader: &Store, all: &[u64]) {
        ready(reader).await;
        let every = EventFilter::default();
        let notes = EventFilter {
            event_type: Some("note".into()),
            topic: None,
        };
        let on_t = EventFilter {
            event_type: None,
            topic: Some("t".into()),
        };
        let want_all: Vec<u64> = all.iter().rev().copied().collect();
        let want_notes: Vec<u64> = all
            .iter()
            .rev()
            .copied()
            .filter(|s| (s - all[0]).is_multiple_of(3))
            .collect();
        for s in [writer, reader] {
            let page = s.newest(u64::MAX, &every, 10).await.unwrap();
            assert_eq!(
                page.iter().map(|(q, _)| *q).collect::<Vec<_>>(),
                want_all[..10]
            );
            assert_eq!(listed(s, &every, u64::MAX, 7).await, want_all);
            assert_eq!(listed(s, &notes, u64::MAX, 5).await, want_notes);
            assert_eq!(listed(s, &on_t, u64::MAX, 500).await, want_notes);
            // Strictly below `before`.
            let before = all[100];
            let below: Vec<u64> = want_notes.iter().copied().filter(|q| *q < before).collect();
            assert_eq!(listed(s, &notes, before, 4).await, below);
            assert!(s.newest(all[0], &every, 10).await.unwrap().is_empty());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn newest_first_listing_on_nats_from_memory_and_from_the_stream() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let ns = namespace();
        let a = nats_store(&server, &ns);
        let all = publish_listed(&a).await;
        // Opened after the publishes: its tail is empty, so every page walks the stream.
        let b = nats_store(&server, &ns);
        newest_first(&a, &b, &all).await;
        a.close();
        b.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn newest_first_listing_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::Sqlite(
            SqliteStore::open(
                &dir.path().join("orchestration/state.db"),
                dir.path().join("orchestration/results"),
                RETENTION,
            )
            .unwrap(),
        );
        let all = publish_listed(&s).await;
        newest_first(&s, &s, &all).await;
        s.close();
    }

    fn cost_record(
        key: &str,
        session: &str,
        agent: Option<&str>,
        cost: f64,
        ts: u64,
    ) -> cco::api::cost::CostRecord {
        serde_json::from_value(json!({
            "key": key, "session_id": session, "agent_id": agent, "model": "claude-test",
            "input_tokens": 10, "output_tokens": 5, "cache_read_tokens": 2,
            "cache_creation_tokens": 1, "cost_usd": cost, "duration_ms": 30, "timestamp_ms": ts
        }))
        .unwrap()
    }

    /// Polls (bounded) until `done` holds: another handle's mirror follows its watcher.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{what} never became visible");
    }

    async fn cost_report(
        s: &Store,
        by: cco::api::cost::CostBy,
        since: Option<u64>,
    ) -> Vec<(String, u64, f64)> {
        use cco::sidecar::cost::{Directory, report};
        let groups = s.cost_groups(since).await.unwrap();
        let dir = Directory::new(s.agents(), s.cost_session_issues().await.unwrap());
        report(&groups, &dir, by, |_| true)
            .rows
            .into_iter()
            .map(|r| (r.key, r.sums.requests, r.sums.cost_usd))
            .collect()
    }

    /// Cost records through `writer`, read through `reader` (on NATS another handle on the
    /// namespace: another machine): a retried export counts once wherever it is retried;
    /// the report joins records to agent types and to the session's issue.
    async fn cost_contract(writer: &Store, reader: &Store) {
        use cco::api::cost::CostBy;
        ready(writer).await;
        ready(reader).await;
        writer
            .publish(cco::sidecar::journal::NewEvent {
                event_type: cco::api::EventType::parse("session_started").unwrap(),
                publisher: "session".into(),
                topic: "issue-7".into(),
                data: json!({"session_id": "s-1", "issue_id": "issue-7"}),
                correlation_id: None,
            })
            .await
            .unwrap();
        let agent = AgentId::parse("a-1").unwrap();
        writer
            .set_agent(
                agent.clone(),
                cco::api::sidecar::AgentStatusUpdate {
                    status: cco::api::sidecar::AgentState::Completed,
                    agent_type: cco::api::AgentType::parse("rust-specialist").unwrap(),
                    issue_id: IssueId::parse("issue-7").unwrap(),
                    message: None,
                },
            )
            .await
            .unwrap();
        let records = vec![
            cost_record("s-1#1", "s-1", None, 0.5, 1_000),
            cost_record("s-1#2", "s-1", Some("a-1"), 2.0, 1_000),
            cost_record("s-1#3", "s-1", Some("a-1"), 1.0, 1_000),
            cost_record("s-2#1", "s-2", None, 4.0, 1_000),
        ];
        let got = writer.cost_insert(records.clone()).await.unwrap();
        assert_eq!((got.stored, got.duplicates), (4, 0));
        let got = writer.cost_insert(records.clone()).await.unwrap();
        assert_eq!((got.stored, got.duplicates), (0, 4), "a retry counts once");
        let got = reader.cost_insert(records[..2].to_vec()).await.unwrap();
        assert_eq!(
            (got.stored, got.duplicates),
            (0, 2),
            "a retry elsewhere counts once too"
        );
        eventually("the agent", || reader.agent(&agent).is_some()).await;

        let by_type = cost_report(reader, CostBy::AgentType, None).await;
        assert_eq!(
            by_type,
            [
                ("orchestrator".to_string(), 2, 4.5),
                ("rust-specialist".to_string(), 2, 3.0)
            ]
        );
        let by_issue = cost_report(reader, CostBy::Issue, None).await;
        assert_eq!(
            by_issue,
            [
                ("session-s-2".to_string(), 1, 4.0),
                ("issue-7".to_string(), 3, 3.5)
            ]
        );

        // A record stored on the other handle is in this one's report.
        let late = cost_record("s-1#4", "s-1", Some("a-1"), 0.25, 2_000);
        let got = reader.cost_insert(vec![late]).await.unwrap();
        assert_eq!((got.stored, got.duplicates), (1, 0));
        let mut seen = false;
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !seen {
                let groups = writer.cost_groups(Some(1_500)).await.unwrap();
                seen = groups.len() == 1 && groups[0].sums.requests == 1;
                if !seen {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "the other handle's record never arrived");
        let by_type = cost_report(writer, CostBy::AgentType, None).await;
        assert_eq!(by_type[1], ("rust-specialist".to_string(), 3, 3.25));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cost_records_on_nats_are_shared_and_counted_once() {
        let Some(server) = NatsServer::start() else {
            return;
        };
        let ns = namespace();
        let a = nats_store(&server, &ns);
        let b = nats_store(&server, &ns);
        cost_contract(&a, &b).await;
        a.close();
        b.close();
        // A sidecar started later mirrors every record and remembers the session's issue.
        let c = nats_store(&server, &ns);
        ready(&c).await;
        let groups = c.cost_groups(None).await.unwrap();
        assert_eq!(groups.iter().map(|g| g.sums.requests).sum::<u64>(), 5);
        assert_eq!(c.cost_session_issues().await.unwrap()["s-1"], "issue-7");
        c.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cost_records_on_sqlite_are_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::Sqlite(
            SqliteStore::open(
                &dir.path().join("orchestration/state.db"),
                dir.path().join("orchestration/results"),
                RETENTION,
            )
            .unwrap(),
        );
        cost_contract(&s, &s).await;
        s.close();
    }
}
