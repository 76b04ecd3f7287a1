//! The sidecar's storage under faults: SIGKILL at random points during concurrent result
//! writes and publishes, a second sidecar on the same data, a corrupt journal, hostile
//! inputs that could not be embedded again, and records of other issues.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::Env;

/// Kill rounds, writer threads, and operations per thread and round (2,000 in all).
const ROUNDS: usize = 5;
const WORKERS: usize = 16;
const OPS_PER_WORKER: usize = 25;
/// Issues the results spread over.
const ISSUES: usize = 4;
/// Longest any one request may take before the test calls it hung.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn token(env: &Env, args: &[&str]) -> String {
    let out = env.run([&["token"][..], args].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One request; `None` when the connection fails (the sidecar was killed).
fn try_api(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn api(port: u16, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, body) = try_api(port, method, path, token, body).expect("the sidecar answers");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// What the sidecar acknowledged before it was killed.
#[derive(Default)]
struct Acked {
    /// agent id → (issue, result).
    results: BTreeMap<String, (String, Value)>,
    /// seq → data.
    events: BTreeMap<u64, Value>,
}

/// A small deterministic generator, so a failing round can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Every event of the journal, in order (the stream without `follow` ends at the head).
fn all_events(port: u16, token: &str) -> Vec<Value> {
    let (status, body) = try_api(
        port,
        "GET",
        "/api/events/stream?since=0&follow=false",
        token,
        None,
    )
    .expect("the sidecar answers");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).expect("event JSON"))
        .collect()
}

fn temp_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else if name.contains(".tmp.") {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// Checks what a restarted sidecar holds against what was acknowledged.
fn verify(port: u16, token: &str, acked: &Acked, results_dir: &Path) {
    let mut stored = BTreeMap::new();
    for i in 0..ISSUES {
        let (status, list) = api(port, "GET", &format!("/api/results/fault-{i}"), token, None);
        assert_eq!(status, 200, "{list}");
        for r in list["results"].as_array().unwrap() {
            let agent = r["agent_id"].as_str().unwrap().to_string();
            assert!(
                stored.insert(agent.clone(), r["result"].clone()).is_none(),
                "{agent} listed twice"
            );
        }
    }
    for (agent, (_, result)) in &acked.results {
        assert_eq!(
            stored.get(agent),
            Some(result),
            "acknowledged result {agent} lost"
        );
    }
    let events = all_events(port, token);
    let mut announced: BTreeMap<String, usize> = BTreeMap::new();
    let mut seqs = BTreeMap::new();
    for e in &events {
        seqs.insert(e["seq"].as_u64().unwrap(), e["data"].clone());
        if e["event_type"] == "agent_completed" {
            *announced
                .entry(e["data"]["agent_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let stored_ids: BTreeSet<_> = stored.keys().cloned().collect();
    let announced_ids: BTreeSet<_> = announced.keys().cloned().collect();
    assert_eq!(
        stored_ids, announced_ids,
        "stored and announced results differ"
    );
    for (agent, n) in &announced {
        assert_eq!(*n, 1, "{agent} announced {n} times");
    }
    for (seq, data) in &acked.events {
        assert_eq!(seqs.get(seq), Some(data), "acknowledged event {seq} lost");
    }
    let seq_list: Vec<u64> = seqs.keys().copied().collect();
    assert!(
        seq_list.windows(2).all(|w| w[0] < w[1]),
        "seqs not increasing"
    );
    let temps = temp_files(results_dir);
    assert!(temps.is_empty(), "temp files left: {temps:?}");
}

/// SIGKILL while 16 threads store results and publish events, five times: after each
/// restart every acknowledged result and event is there, every stored result is announced
/// exactly once, no temp file is left — and at least one kill landed between a result's
/// file and its event (the restarted sidecar says it recovered pending results).
#[test]
fn sigkill_during_concurrent_writes_loses_and_duplicates_nothing() {
    let env = Env::new();
    let port = env.sidecar_port;
    let mut svc = env.start("sidecar");
    let token = token(&env, &[]);
    let results_dir = env.data_dir().join("orchestration/results");
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut rng = Lcg(0x5eed);
    let mut recovered = 0;
    for round in 0..ROUNDS {
        let (tx, rx) = mpsc::channel::<()>();
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (tx, token, acked) = (tx.clone(), token.clone(), acked.clone());
                std::thread::spawn(move || {
                    for i in 0..OPS_PER_WORKER {
                        let name = format!("a-{round}-{w}-{i}");
                        if i % 2 == 0 {
                            let issue = format!("fault-{}", (w + i) % ISSUES);
                            let result = json!({"status": "success", "n": name});
                            let sub = json!({"agent_id": name, "agent_type": format!("t{}", i % 3),
                                "issue_id": issue, "result": result});
                            match try_api(port, "POST", "/api/results", &token, Some(&sub)) {
                                Some((201 | 200, _)) => {
                                    acked.lock().unwrap().results.insert(name, (issue, result));
                                }
                                Some((status, body)) => panic!("result refused: {status} {body}"),
                                None => return,
                            }
                        } else {
                            let data = json!({"n": name});
                            let body = json!({"publisher": "p", "topic": "faults", "data": data});
                            match try_api(port, "POST", "/api/events/faults", &token, Some(&body)) {
                                Some((201, b)) => {
                                    let ev: Value = serde_json::from_str(&b).unwrap();
                                    acked
                                        .lock()
                                        .unwrap()
                                        .events
                                        .insert(ev["seq"].as_u64().unwrap(), data);
                                }
                                Some((status, body)) => panic!("publish refused: {status} {body}"),
                                None => return,
                            }
                        }
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        // Kill after a random number of acknowledged operations: a point inside the load,
        // chosen by progress rather than by the clock.
        let kill_after = 50 + rng.next((WORKERS * OPS_PER_WORKER * 3 / 4) as u64);
        let mut seen = 0;
        while seen < kill_after && rx.recv().is_ok() {
            seen += 1;
        }
        svc.child.kill().unwrap(); // SIGKILL
        svc.child.wait().unwrap();
        // The harness holds the listening socket, as a service manager would: close it, so
        // requests queued behind the dead process are refused instead of waiting.
        drop(svc);
        drop(rx);
        for w in workers {
            w.join().expect("a worker panicked");
        }
        svc = env.start("sidecar");
        let log = svc.log_text();
        if let Some(n) = log
            .lines()
            .find(|l| l.contains("recovered pending results"))
            .and_then(|l| l.split("recovered=").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok())
        {
            recovered += n;
        }
        verify(port, &token, &acked.lock().unwrap(), &results_dir);
        // A retry of an acknowledged result is `unchanged` (its event exists).
        let acked = acked.lock().unwrap();
        if let Some((agent, (issue, result))) = acked.results.iter().next() {
            let t = format!(
                "t{}",
                agent.rsplit('-').next().unwrap().parse::<usize>().unwrap() % 3
            );
            let sub =
                json!({"agent_id": agent, "agent_type": t, "issue_id": issue, "result": result});
            let (status, body) = api(port, "POST", "/api/results", &token, Some(&sub));
            assert_eq!(
                (status, body["unchanged"].clone()),
                (200, json!(true)),
                "{body}"
            );
        }
    }
    assert!(
        recovered > 0,
        "no kill landed between a result's file and its event; the window went untested"
    );
    let acked = acked.lock().unwrap();
    eprintln!(
        "faults: {ROUNDS} SIGKILL rounds, {} results and {} events acknowledged, {recovered} pending results recovered",
        acked.results.len(),
        acked.events.len()
    );
    assert!(acked.results.len() + acked.events.len() >= ROUNDS * 20);
}

/// A second sidecar on the same data directory refuses to start and names the first.
#[test]
fn a_second_sidecar_on_the_same_data_refuses_to_start() {
    let env = Env::new();
    let first = env.start("sidecar");
    let other_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = env
        .cmd(["sidecar", "run"])
        .env("CCO_SIDECAR_PORT", other_port.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("another sidecar"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    assert!(stderr.contains("cco daemon stop"), "{stderr}");
}

/// A corrupt state.db is called corrupt, kept, and the way out is named.
#[test]
fn a_corrupt_journal_is_named_and_kept() {
    let env = Env::new();
    let dir = env.data_dir().join("orchestration");
    drop(env.start("sidecar"));
    let db = dir.join("state.db");
    for f in ["state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let garbage = vec![0x5a_u8; 16 * 1024];
    std::fs::write(&db, &garbage).unwrap();
    let out = env
        .cmd(["sidecar", "run"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is corrupt"), "{stderr}");
    assert!(stderr.contains(".corrupt"), "{stderr}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "the corrupt file was changed"
    );
}

/// Inputs that could not be embedded again are refused at the edge; a token bound to one
/// issue cannot rewrite another issue's agent; a blocked result path is named and /health
/// reports the storage degraded.
#[test]
fn hostile_storage_inputs_are_refused() {
    let env = Env::new();
    let _svc = env.start("sidecar");
    let port = env.sidecar_port;
    let all = token(&env, &[]);
    let mut deep = json!("leaf");
    for _ in 0..125 {
        deep = json!({ "d": deep });
    }
    let sub = json!({"agent_id": "a", "agent_type": "t", "issue_id": "deep",
        "result": {"status": "ok", "x": deep}});
    let (status, e) = api(port, "POST", "/api/results", &all, Some(&sub));
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nested deeper"),
        "{e}"
    );
    let (status, e) = api(
        port,
        "POST",
        "/api/events/x",
        &all,
        Some(&json!({"publisher": "p", "topic": "t", "data": deep})),
    );
    assert_eq!(status, 400, "{e}");

    let (status, _) = api(
        port,
        "POST",
        "/api/agents/b-1/status",
        &all,
        Some(&json!({"status": "running", "agent_type": "t", "issue_id": "issue-b"})),
    );
    assert_eq!(status, 200);
    let bound_a = token(&env, &["--issue", "issue-a"]);
    let (status, e) = api(
        port,
        "POST",
        "/api/agents/b-1/status",
        &bound_a,
        Some(&json!({"status": "failed", "agent_type": "t", "issue_id": "issue-a"})),
    );
    assert_eq!(status, 403, "{e}");
    let (_, agents) = api(port, "GET", "/api/agents", &all, None);
    assert_eq!(agents["agents"][0]["issue_id"], "issue-b", "{agents}");
    assert_eq!(agents["agents"][0]["status"], "running", "{agents}");

    let blocked = env
        .data_dir()
        .join("orchestration/results/blocked/t/a.json");
    std::fs::create_dir_all(blocked.join("x")).unwrap();
    let sub = json!({"agent_id": "a", "agent_type": "t", "issue_id": "blocked",
        "result": {"status": "ok"}});
    let (status, e) = api(port, "POST", "/api/results", &all, Some(&sub));
    assert_eq!(status, 500, "{e}");
    assert_eq!(e["error"]["code"], "storage_error", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("blocked/t/a.json"),
        "{e}"
    );
    let (_, health) = api(port, "GET", "/health", &all, None);
    assert_eq!(health["checks"]["storage"], "degraded", "{health}");
}
