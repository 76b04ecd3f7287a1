//! The sidecar as a real process: lifecycle, the HTTP contract route by route, the seed's
//! event flow through the daemon, restart without loss, 119 agents at once, security
//! regressions and disk full.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Env, Service, get, http};

/// A started sidecar with a full-scope token bound to `project`.
struct Sidecar {
    env: Env,
    svc: Service,
    token: String,
    project: PathBuf,
}

fn token(env: &Env, args: &[&str]) -> String {
    let out = env.run([&["token"][..], args].concat());
    assert!(
        out.status.success(),
        "cco token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(t.split('.').count(), 3, "not a JWT: {t}");
    t
}

/// A small project: sources, an ignored dir and secrets that must never be served.
fn make_project(root: &Path) {
    for d in ["src", "target", "docs"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let files = [
        ("README.md", "# demo\nA demo project.\n"),
        ("Cargo.toml", "[package]\nname = \"demo\"\n"),
        ("src/main.rs", "fn main() { println!(\"hi\"); }\n"),
        ("src/api.py", "def handler():\n    return 1\n"),
        ("docs/guide.md", "guide\n"),
        (".gitignore", "target/\n"),
        ("target/out.rs", "IGNORED_BUILD_OUTPUT"),
        (".env", "API_KEY=SECRET_VALUE_ENV"),
        (".env.production", "API_KEY=SECRET_VALUE_ENV"),
        ("deploy.pem", "-----BEGIN PRIVATE KEY----- SECRET_VALUE_PEM"),
        ("id_rsa", "SECRET_VALUE_SSH"),
        ("credentials.json", "{\"k\":\"SECRET_VALUE_CRED\"}"),
    ];
    for (p, c) in files {
        std::fs::write(root.join(p), c).unwrap();
    }
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .env("GIT_AUTHOR_NAME", "Ada")
            .env("GIT_AUTHOR_EMAIL", "ada@example.invalid")
            .env("GIT_COMMITTER_NAME", "Ada")
            .env("GIT_COMMITTER_EMAIL", "ada@example.invalid")
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "README.md", "Cargo.toml", "src", ".gitignore"]);
    git(&["commit", "-q", "-m", "initial commit"]);
    std::fs::write(root.join("src/main.rs"), "fn main() { /* dirty */ }\n").unwrap();
}

fn start_sidecar(env: Env) -> Sidecar {
    let svc = env.start("sidecar");
    let project = env.tmp.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    make_project(&project);
    let token = token(&env, &["--project", project.to_str().unwrap()]);
    Sidecar {
        env,
        svc,
        token,
        project: std::fs::canonicalize(project).unwrap(),
    }
}

/// An authenticated JSON request: (status, body as JSON or Null).
fn api(port: u16, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let text = body.map(|b| b.to_string());
    let mut headers = vec![("Authorization", auth.as_str())];
    if text.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let (status, body) = http(port, method, path, &headers, text.as_deref());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The response head and body of a raw request, for header checks.
fn raw(port: u16, request: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[test]
fn health_and_status_are_open_measured_aggregates_and_sigterm_stops() {
    let mut sc = start_sidecar(Env::new());
    let port = sc.env.sidecar_port;
    let (status, body) = get(port, "/health");
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["service"], "orchestration-sidecar");
    assert!(h["version"].is_string() && h["uptime_seconds"].is_u64());
    assert_eq!(h["checks"]["storage"], "healthy");
    assert_eq!(h["checks"]["event_bus"], "healthy");
    assert!(h["checks"]["memory_usage_mb"].as_f64().unwrap() > 0.0);
    assert_eq!(h["checks"]["active_agents"], 0);
    assert_eq!(h["checks"]["event_queue_size"], 0);

    let (status, body) = get(port, "/status");
    assert_eq!(status, 200);
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        s["agents"],
        json!({"active":0,"completed":0,"failed":0,"by_type":{}})
    );
    assert_eq!(s["storage"]["results_stored"], 0);
    assert_eq!(s["events"]["total_published"], 0);
    for k in [
        "avg_response_time_ms",
        "p99_response_time_ms",
        "requests_per_second",
    ] {
        assert!(s["performance"][k].is_number(), "{k}");
    }
    // The state database exists and the daemon's `cco health` sees the sidecar.
    assert!(sc.env.data_dir().join("orchestration/state.db").exists());
    assert!(sc.svc.terminate().success(), "{}", sc.svc.log_text());
}

#[test]
fn socket_activated_sidecar_uses_the_inherited_listener_and_idle_exits() {
    let mut env = Env::new();
    env.set("CCO_IDLE_EXIT_AFTER", "1s");
    let listener = TcpListener::bind(("127.0.0.1", env.sidecar_port)).unwrap();
    let mut svc = env.start_activated("sidecar", listener);
    let (status, body) = get(env.sidecar_port, "/health");
    assert_eq!(status, 200, "{body}");
    // No connection for a second: the process exits cleanly.
    let start = Instant::now();
    let code = svc.child.wait().unwrap();
    assert!(code.success(), "{}", svc.log_text());
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(svc.log_text().contains("Idle"), "{}", svc.log_text());
}

#[test]
fn results_context_events_and_agents_contract() {
    let sc = start_sidecar(Env::new());
    let (port, t) = (sc.env.sidecar_port, sc.token.as_str());

    // Results: 201 with the stored path; the file is where the design says.
    let sub = json!({
        "agent_id": "python-specialist-123",
        "agent_type": "python-specialist",
        "issue_id": "issue-123",
        "result": {"status": "success", "files_created": ["api.py"], "decisions": ["Use FastAPI"]}
    });
    let (status, stored) = api(port, "POST", "/api/results", t, Some(&sub));
    assert_eq!(status, 201, "{stored}");
    let want = sc
        .env
        .data_dir()
        .join("orchestration/results/issue-123/python-specialist.json");
    assert_eq!(stored["path"], want.display().to_string());
    assert_eq!(stored["stored"], true);
    assert!(stored["seq"].as_u64().unwrap() >= 1);
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&want).unwrap()).unwrap();
    assert_eq!(on_disk["result"]["status"], "success");
    // The same submission again is acknowledged, not stored or announced twice.
    let (status, again) = api(port, "POST", "/api/results", t, Some(&sub));
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["unchanged"], true);
    assert!(again.get("seq").is_none());

    let (status, list) = api(port, "GET", "/api/results/issue-123", t, None);
    assert_eq!(status, 200);
    assert_eq!(list["issue_id"], "issue-123");
    assert_eq!(list["results"].as_array().unwrap().len(), 1);
    assert_eq!(list["results"][0]["agent_id"], "python-specialist-123");
    let (status, list) = api(port, "GET", "/api/results/issue-none", t, None);
    assert_eq!(
        (status, list["results"].as_array().unwrap().len()),
        (200, 0)
    );
    let (status, e) = api(
        port,
        "POST",
        "/api/results",
        t,
        Some(&json!({"agent_id":"a","agent_type":"b","issue_id":"c","result":"done"})),
    );
    assert_error(status, &e, 400, "bad_request");

    // Storing published agent_completed on the issue's topic.
    let (status, batch) = api(
        port,
        "GET",
        "/api/events/wait/agent_completed?since=0&filter=topic:issue-123&timeout=1000",
        t,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        batch["events"][0]["data"]["agent_type"],
        "python-specialist"
    );

    // Context: structure, relevant files, previous results, git, metadata; never secrets.
    let (status, ctx) = api(
        port,
        "GET",
        "/api/context/issue-123/rust-specialist",
        t,
        None,
    );
    assert_eq!(status, 200, "{ctx}");
    let text = ctx.to_string();
    assert!(!text.contains("SECRET_VALUE"), "secret leaked: {text}");
    assert!(!text.contains("IGNORED_BUILD_OUTPUT"));
    let p = &ctx["project"];
    assert_eq!(p["root"], sc.project.display().to_string());
    let structure: Vec<&str> = p["structure"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(structure.contains(&"src/main.rs") && structure.contains(&"README.md"));
    assert!(!structure.iter().any(|f| f.starts_with("target/")
        || f.contains(".env")
        || f.ends_with(".pem")
        || *f == "id_rsa"
        || f.starts_with("credentials")));
    let relevant: Vec<&str> = p["relevant_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(relevant.contains(&"src/main.rs") && relevant.contains(&"Cargo.toml"));
    assert!(
        !relevant.contains(&"src/api.py"),
        "python file for a rust agent"
    );
    assert_eq!(p["git"]["branch"], "main");
    assert_eq!(p["git"]["head"].as_str().unwrap().len(), 40);
    assert_eq!(p["git"]["recent_commits"][0]["subject"], "initial commit");
    let dirty = p["git"]["dirty_files"].to_string();
    assert!(dirty.contains("src/main.rs"), "{dirty}");
    assert!(
        !dirty.contains(".env") && !dirty.contains("id_rsa"),
        "{dirty}"
    );
    assert_eq!(p["metadata"]["languages"]["rust"], 1);
    assert_eq!(p["metadata"]["languages"]["python"], 1);
    assert_eq!(
        ctx["previous_results"][0]["agent_type"],
        "python-specialist"
    );
    assert_eq!(ctx["truncated"], false);
    // Unknown agent types get the default patterns (project descriptions).
    let (status, ctx) = api(
        port,
        "GET",
        "/api/context/issue-123/graphql-wizard",
        t,
        None,
    );
    assert_eq!(status, 200);
    let rel = ctx["project"]["relevant_files"].to_string();
    assert!(rel.contains("README.md") && rel.contains("Cargo.toml"));
    // The cache notices a new file.
    std::fs::write(sc.project.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    let (_, ctx) = api(
        port,
        "GET",
        "/api/context/issue-123/rust-specialist",
        t,
        None,
    );
    assert!(
        ctx["project"]["structure"]
            .to_string()
            .contains("src/lib.rs")
    );
    // ?project= must stay inside the token's project.
    let (status, e) = api(
        port,
        "GET",
        "/api/context/issue-123/rust-specialist?project=/",
        t,
        None,
    );
    assert_error(status, &e, 403, "out_of_scope");
    let sub_dir = format!(
        "/api/context/issue-123/rust-specialist?project={}",
        sc.project.join("src").display()
    );
    let (status, ctx) = api(port, "GET", &sub_dir, t, None);
    assert_eq!(status, 200, "{ctx}");

    // Events: publish → 201 with seq; wait returns matching events after `since`.
    let (status, ev) = api(
        port,
        "POST",
        "/api/events/architecture_defined",
        t,
        Some(
            &json!({"publisher":"chief-architect","topic":"architecture","data":{"design":"REST API"},"correlation_id":"c-1"}),
        ),
    );
    assert_eq!(status, 201, "{ev}");
    let seq = ev["seq"].as_u64().unwrap();
    assert!(ev["event_id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(ev["event_type"], "architecture_defined");
    assert_eq!(ev["correlation_id"], "c-1");
    let (status, batch) = api(
        port,
        "GET",
        &format!(
            "/api/events/wait/architecture_defined?since={}&filter=topic:architecture",
            seq - 1
        ),
        t,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(batch["events"][0], ev);
    assert_eq!(batch["next_since"], seq);
    // Without `since`: only newer events, so a short wait times out empty.
    let (status, batch) = api(
        port,
        "GET",
        "/api/events/wait/architecture_defined?timeout=200",
        t,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(batch["events"], json!([]));
    assert_eq!(batch["next_since"], seq);
    let (status, e) = api(port, "GET", "/api/events/wait/x?filter=bogus", t, None);
    assert_error(status, &e, 400, "bad_request");
    let (status, e) = api(port, "GET", "/api/events/wait/x?since=abc", t, None);
    assert_error(status, &e, 400, "bad_request");

    // Agents: lifecycle updates feed the registry and /status.
    for (id, ty, st) in [
        ("arch-1", "chief-architect", "completed"),
        ("py-1", "python-specialist", "started"),
        ("qa-1", "test-engineer", "failed"),
    ] {
        let (status, rec) = api(
            port,
            "POST",
            &format!("/api/agents/{id}/status"),
            t,
            Some(&json!({"status": st, "agent_type": ty, "issue_id": "issue-123", "message": "m"})),
        );
        assert_eq!(status, 200, "{rec}");
        assert_eq!(rec["status"], st);
    }
    let (status, e) = api(
        port,
        "POST",
        "/api/agents/x/status",
        t,
        Some(&json!({"status":"sleeping","agent_type":"a","issue_id":"b"})),
    );
    assert_error(status, &e, 400, "bad_request");
    let (status, agents) = api(port, "GET", "/api/agents", t, None);
    assert_eq!(status, 200);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 3);
    let (_, body) = get(port, "/status");
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        s["agents"],
        json!({"active":1,"completed":1,"failed":1,"by_type":{"chief-architect":1,"python-specialist":1,"test-engineer":1}})
    );
    assert_eq!(s["storage"]["results_stored"], 1);
    assert!(s["storage"]["context_cache_entries"].as_u64().unwrap() >= 2);
    // `started` and `failed` publish lifecycle events (`completed` comes with the result).
    assert_eq!(s["events"]["total_published"], seq + 2);
    let (status, started) = api(
        port,
        "GET",
        &format!("/api/events/wait/agent_started?since={seq}&timeout=0"),
        t,
        None,
    );
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["events"][0]["data"]["agent_id"], "py-1");
    assert_eq!(started["events"][0]["topic"], "issue-123");
    let (_, failed) = api(
        port,
        "GET",
        &format!("/api/events/wait/agent_failed?since={seq}&timeout=0"),
        t,
        None,
    );
    assert_eq!(failed["events"][0]["data"]["agent_type"], "test-engineer");
    let (_, body) = get(port, "/health");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["checks"]["active_agents"], 1);

    // Unknown routes are JSON 404s.
    let (status, e) = api(port, "GET", "/api/nothing", t, None);
    assert_error(status, &e, 404, "not_found");
}

#[test]
fn sse_stream_carries_the_journal() {
    let sc = start_sidecar(Env::new());
    let (port, t) = (sc.env.sidecar_port, sc.token.clone());
    for i in 0..3 {
        let (status, _) = api(
            port,
            "POST",
            "/api/events/step",
            &t,
            Some(&json!({"publisher":"p","topic":"s","data":{"i":i}})),
        );
        assert_eq!(status, 201);
    }
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /api/events/stream?since=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {t}\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut ids = Vec::new();
    let mut line = String::new();
    let mut head = String::new();
    while ids.len() < 3 {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        head.push_str(&line);
        if let Some(id) = line.trim().strip_prefix("id:") {
            ids.push(id.trim().parse::<u64>().unwrap());
            if ids.len() == 2 {
                // Published while the stream is open: it arrives live.
                api(
                    port,
                    "POST",
                    "/api/events/step",
                    &t,
                    Some(&json!({"publisher":"p","topic":"s","data":{}})),
                );
            }
        }
    }
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream")
    );
    assert_eq!(ids, vec![2, 3, 4]);
}

/// Three long-polling agents chained through the daemon's port, as in the seed's Section 9.
#[test]
fn seed_event_flow_through_the_daemon() {
    let sc = start_sidecar(Env::new());
    let _daemon = sc.env.start("daemon");
    let port = sc.env.daemon_port;
    let t = sc.token.clone();
    let (_, body) = get(sc.env.sidecar_port, "/status");
    let cursor = serde_json::from_str::<Value>(&body).unwrap()["events"]["total_published"]
        .as_u64()
        .unwrap();

    let agent = |wait: &'static str,
                 filter: &'static str,
                 then: Option<(&'static str, &'static str)>| {
        let t = t.clone();
        std::thread::spawn(move || {
            let (status, batch) = api(
                port,
                "GET",
                &format!(
                    "/api/events/wait/{wait}?since={cursor}&filter=topic:{filter}&timeout=20000"
                ),
                &t,
                None,
            );
            assert_eq!(status, 200, "{batch}");
            let events = batch["events"].as_array().unwrap().clone();
            assert_eq!(events.len(), 1, "{batch}");
            if let Some((ty, topic)) = then {
                let (status, _) = api(
                    port,
                    "POST",
                    &format!("/api/events/{ty}"),
                    &t,
                    Some(
                        &json!({"publisher": wait, "topic": topic, "data": {"after": events[0]["seq"]}}),
                    ),
                );
                assert_eq!(status, 201);
            }
            events[0].clone()
        })
    };
    let python = agent(
        "architecture_defined",
        "architecture",
        Some(("implementation_complete", "implementation")),
    );
    let tester = agent(
        "implementation_complete",
        "implementation",
        Some(("testing_complete", "testing")),
    );
    let security = agent("testing_complete", "testing", None);
    // Publish a decoy on another topic first: the filtered waiter must not wake for it.
    for (topic, design) in [("other", "decoy"), ("architecture", "REST API")] {
        let (status, _) = api(
            port,
            "POST",
            "/api/events/architecture_defined",
            &t,
            Some(&json!({"publisher":"chief-architect","topic":topic,"data":{"design":design}})),
        );
        assert_eq!(status, 201);
    }
    let a = python.join().unwrap();
    assert_eq!(a["data"]["design"], "REST API");
    let b = tester.join().unwrap();
    let c = security.join().unwrap();
    assert_eq!(b["data"]["after"], a["seq"]);
    assert_eq!(c["data"]["after"], b["seq"]);
    assert!(a["seq"].as_u64() < b["seq"].as_u64() && b["seq"].as_u64() < c["seq"].as_u64());
}

/// Two topic-filtered waiters poll with `since` while 200 events are published: each sees
/// exactly its events, once, in order.
#[test]
fn repeated_polls_see_every_event_once_in_order_through_the_daemon() {
    let sc = start_sidecar(Env::new());
    let _daemon = sc.env.start("daemon");
    let port = sc.env.daemon_port;
    const N: usize = 200;
    let waiter = |topic: &'static str| {
        let t = sc.token.clone();
        std::thread::spawn(move || {
            let mut since = 0;
            let mut seen = Vec::new();
            while seen.len() < N / 2 {
                let (status, batch) = api(
                    port,
                    "GET",
                    &format!(
                        "/api/events/wait/progress?since={since}&filter=topic:{topic}&timeout=10000"
                    ),
                    &t,
                    None,
                );
                assert_eq!(status, 200, "{batch}");
                let events = batch["events"].as_array().unwrap();
                assert!(!events.is_empty(), "timed out after {} events", seen.len());
                for e in events {
                    assert_eq!(e["topic"], topic);
                    seen.push(e["seq"].as_u64().unwrap());
                }
                since = batch["next_since"].as_u64().unwrap();
            }
            seen
        })
    };
    let (a, b) = (waiter("a"), waiter("b"));
    let mut published = [Vec::new(), Vec::new()];
    for i in 0..N {
        let topic = ["a", "b"][i % 2];
        let (status, ev) = api(
            port,
            "POST",
            "/api/events/progress",
            &sc.token,
            Some(&json!({"publisher":"p","topic":topic,"data":{"i":i}})),
        );
        assert_eq!(status, 201);
        published[i % 2].push(ev["seq"].as_u64().unwrap());
    }
    assert_eq!(a.join().unwrap(), published[0]);
    assert_eq!(b.join().unwrap(), published[1]);
}

/// Stopping the daemon (`cco daemon restart`) ends forwarded long polls and streams with
/// complete answers at once — not a 10 s hang and a reset.
#[test]
fn daemon_stop_ends_forwarded_long_polls_and_streams_cleanly() {
    use std::io::{Read, Write};
    let sc = start_sidecar(Env::new());
    let mut daemon = sc.env.start("daemon");
    let port = sc.env.daemon_port;
    let mut sse = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        sse,
        "GET /api/events/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {}\r\n\r\n",
        sc.token
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        sse.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"));
    let poll = {
        let t = sc.token.clone();
        std::thread::spawn(move || {
            let answer = api(
                port,
                "GET",
                "/api/events/wait/never?timeout=60000",
                &t,
                None,
            );
            (answer, Instant::now())
        })
    };
    // Both are parked in the sidecar.
    let parked = Instant::now();
    loop {
        let (_, body) = get(sc.env.sidecar_port, "/status");
        let st: Value = serde_json::from_str(&body).unwrap();
        if st["events"]["active_subscriptions"].as_u64() >= Some(2) {
            break;
        }
        assert!(parked.elapsed() < Duration::from_secs(10), "{st}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stopped = Instant::now();
    assert!(daemon.terminate().success());
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "the daemon took {:?} to exit",
        stopped.elapsed()
    );
    let ((status, e), answered) = poll.join().unwrap();
    assert_error(status, &e, 503, "unavailable");
    assert!(answered.duration_since(stopped) < Duration::from_secs(3));
    let mut rest = Vec::new();
    sse.read_to_end(&mut rest)
        .expect("the stream ended cleanly, not with a reset");
    assert!(
        String::from_utf8_lossy(&rest).ends_with("0\r\n\r\n"),
        "no final chunk: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn kill_9_and_restart_loses_nothing() {
    let sc = start_sidecar(Env::new());
    let Sidecar {
        env,
        mut svc,
        token,
        ..
    } = sc;
    let port = env.sidecar_port;
    let mut seqs = Vec::new();
    for i in 0..5 {
        let (status, ev) = api(
            port,
            "POST",
            "/api/events/durable",
            &token,
            Some(&json!({"publisher":"p","topic":"t","data":{"i":i}})),
        );
        assert_eq!(status, 201);
        seqs.push(ev["seq"].as_u64().unwrap());
    }
    let (status, _) = api(
        port,
        "POST",
        "/api/agents/a-1/status",
        &token,
        Some(&json!({"status":"running","agent_type":"rust-specialist","issue_id":"i-1"})),
    );
    assert_eq!(status, 200);
    svc.child.kill().unwrap(); // SIGKILL: no graceful anything
    svc.child.wait().unwrap();
    drop(svc);
    let _svc = env.start("sidecar");
    let (status, batch) = api(
        port,
        "GET",
        "/api/events/wait/durable?since=0",
        &token,
        None,
    );
    assert_eq!(status, 200);
    let got: Vec<u64> = batch["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, seqs);
    let (_, ev) = api(
        port,
        "POST",
        "/api/events/durable",
        &token,
        Some(&json!({"publisher":"p","topic":"t","data":{}})),
    );
    assert_eq!(
        ev["seq"].as_u64().unwrap(),
        seqs[4] + 1,
        "seq went backwards"
    );
    let (_, agents) = api(port, "GET", "/api/agents", &token, None);
    assert_eq!(agents["agents"][0]["agent_id"], "a-1");
}

#[test]
fn retention_turns_old_cursors_into_410() {
    let env = Env::new();
    std::fs::create_dir_all(env.config_dir()).unwrap();
    std::fs::write(env.config_file(), "[sidecar]\nretention_events = 3\n").unwrap();
    let sc = start_sidecar(env);
    let port = sc.env.sidecar_port;
    for _ in 0..10 {
        let (status, _) = api(
            port,
            "POST",
            "/api/events/e",
            &sc.token,
            Some(&json!({"publisher":"p","topic":"t"})),
        );
        assert_eq!(status, 201);
    }
    let (status, e) = api(port, "GET", "/api/events/wait/e?since=0", &sc.token, None);
    assert_error(status, &e, 410, "cursor_expired");
    let (status, batch) = api(port, "GET", "/api/events/wait/e?since=9", &sc.token, None);
    assert_eq!(status, 200);
    assert_eq!(batch["events"][0]["seq"], 10);
    // `cco events` without --since restarts from the oldest kept event.
    let out = sc.env.run(["events", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"seq\":10"));

    // A cursor from before the journal was reset (state.db lost) is ahead of the head: 410
    // `cursor_ahead` at once, not a wait that would skip the events reusing those seqs.
    for path in [
        "/api/events/wait/e?since=11&timeout=60000",
        "/api/events/stream?since=11",
    ] {
        let started = Instant::now();
        let (status, e) = api(port, "GET", path, &sc.token, None);
        assert_error(status, &e, 410, "cursor_ahead");
        assert!(started.elapsed() < Duration::from_secs(5));
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("since="),
            "cco events would retry: {message}"
        );
    }
    let out = sc.env.run(["events", "--since", "11"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ahead"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One agent per type (119 generated names), all at once: context, results, events, status.
#[test]
fn agents_119_at_once_lose_nothing() {
    let sc = start_sidecar(Env::new());
    let port = sc.env.sidecar_port;
    const AGENTS: usize = 119;
    let (_, body) = get(port, "/status");
    let cursor = serde_json::from_str::<Value>(&body).unwrap()["events"]["total_published"]
        .as_u64()
        .unwrap();
    let handles: Vec<_> = (0..AGENTS)
        .map(|i| {
            let t = sc.token.clone();
            std::thread::spawn(move || {
                let ty = format!("agent-type-{i:03}");
                let id = format!("{ty}-1");
                let ok = |(status, body): (u16, Value), want: u16| {
                    assert_eq!(status, want, "{ty}: {body}");
                    body
                };
                ok(api(port, "POST", &format!("/api/agents/{id}/status"), &t,
                    Some(&json!({"status":"started","agent_type":ty,"issue_id":"big-issue"}))), 200);
                let ctx = ok(api(port, "GET", &format!("/api/context/big-issue/{ty}"), &t, None), 200);
                assert!(ctx["project"]["structure"].is_array());
                ok(api(port, "POST", "/api/results", &t, Some(&json!({
                    "agent_id": id, "agent_type": ty, "issue_id": "big-issue",
                    "result": {"status": "success", "n": i}
                }))), 201);
                let ev = ok(api(port, "POST", "/api/events/work_done", &t,
                    Some(&json!({"publisher": id, "topic": ty, "data": {"i": i}}))), 201);
                let batch = ok(api(port, "GET",
                    &format!("/api/events/wait/work_done?since={cursor}&filter=topic:{ty}&timeout=20000"), &t, None), 200);
                assert_eq!(batch["events"].as_array().unwrap().len(), 1, "{ty}");
                assert_eq!(batch["events"][0]["seq"], ev["seq"]);
                ok(api(port, "POST", &format!("/api/agents/{id}/status"), &t,
                    Some(&json!({"status":"completed","agent_type":ty,"issue_id":"big-issue"}))), 200);
                ev["seq"].as_u64().unwrap()
            })
        })
        .collect();
    let seqs: BTreeSet<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(seqs.len(), AGENTS, "duplicate seqs");
    let (_, list) = api(port, "GET", "/api/results/big-issue", &sc.token, None);
    assert_eq!(list["results"].as_array().unwrap().len(), AGENTS);
    let (_, batch) = api(
        port,
        "GET",
        &format!("/api/events/wait/agent_completed?since={cursor}&filter=topic:big-issue"),
        &sc.token,
        None,
    );
    assert_eq!(batch["events"].as_array().unwrap().len(), AGENTS);
    let (_, body) = get(port, "/status");
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["agents"]["completed"], AGENTS as u64);
    assert_eq!(s["agents"]["active"], 0);
    assert_eq!(s["agents"]["by_type"].as_object().unwrap().len(), AGENTS);
    assert_eq!(s["storage"]["results_stored"], AGENTS as u64);
    assert_eq!(
        s["events"]["total_published"].as_u64().unwrap(),
        cursor + 3 * AGENTS as u64,
        "agent_started, work_done and agent_completed per agent"
    );
    assert!(
        !sc.svc.log_text().contains("ERROR"),
        "{}",
        sc.svc.log_text()
    );
}

fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT signed by hand, so every field (including `alg`) is ours to break.
fn forge(header: Value, claims: Value, key: &[u8], sha512: bool) -> String {
    use hmac::{Hmac, Mac};
    let signing = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = if sha512 {
        let mut m = Hmac::<sha2::Sha512>::new_from_slice(key).unwrap();
        m.update(signing.as_bytes());
        m.finalize().into_bytes().to_vec()
    } else {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        m.update(signing.as_bytes());
        m.finalize().into_bytes().to_vec()
    };
    format!("{signing}.{}", b64(&sig))
}

#[test]
fn security_regressions() {
    let sc = start_sidecar(Env::new());
    let port = sc.env.sidecar_port;
    let secret = std::fs::read(sc.env.config_dir().join("secret")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss":"cco","aud":"cco-sidecar","sub":"t","iat":now,"exp":now+300,"scope":"results:read"});
    let hs256 = json!({"alg":"HS256","typ":"JWT"});
    let path = "/api/results/issue-1";
    // The hand-forged good token works, so the refusals below are about what was broken.
    let good = forge(hs256.clone(), claims.clone(), &secret, false);
    assert_eq!(api(port, "GET", path, &good, None).0, 200);

    let with = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let bad_tokens = [
        (
            "expired",
            forge(hs256.clone(), with("exp", json!(now - 60)), &secret, false),
        ),
        (
            "wrong secret",
            forge(hs256.clone(), claims.clone(), &[7u8; 32], false),
        ),
        (
            "wrong aud",
            forge(hs256.clone(), with("aud", json!("other")), &secret, false),
        ),
        (
            "wrong iss",
            forge(hs256.clone(), with("iss", json!("evil")), &secret, false),
        ),
        ("alg none", {
            let t = forge(
                json!({"alg":"none","typ":"JWT"}),
                claims.clone(),
                &secret,
                false,
            );
            format!("{}.", t.rsplit_once('.').unwrap().0)
        }),
        (
            "HS512",
            forge(
                json!({"alg":"HS512","typ":"JWT"}),
                claims.clone(),
                &secret,
                true,
            ),
        ),
        (
            "string exp",
            forge(
                hs256.clone(),
                with("exp", json!((now + 300).to_string())),
                &secret,
                false,
            ),
        ),
        ("garbage", "not-a-token".to_string()),
    ];
    for (what, tok) in &bad_tokens {
        let (status, e) = api(port, "GET", path, tok, None);
        assert_eq!(status, 401, "{what} accepted: {e}");
        assert!(
            e["error"]["code"].as_str().unwrap().contains("token"),
            "{what}: {e}"
        );
    }
    let (status, e) = api(port, "GET", path, "", None);
    assert_error(status, &e, 401, "invalid_token");
    let (status, body) = http(port, "GET", path, &[], None);
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_error(status, &e, 401, "missing_token");

    // Scopes and bindings: 403.
    let t = &sc.token;
    let narrow = token(
        &sc.env,
        &[
            "--scope",
            "results:read",
            "--issue",
            "issue-1",
            "--agent-type",
            "rust-specialist",
        ],
    );
    assert_eq!(api(port, "GET", path, &narrow, None).0, 200);
    let (status, e) = api(port, "GET", "/api/results/issue-2", &narrow, None);
    assert_error(status, &e, 403, "out_of_scope");
    let (status, e) = api(
        port,
        "POST",
        "/api/events/x",
        &narrow,
        Some(&json!({"publisher":"p","topic":"t"})),
    );
    assert_error(status, &e, 403, "missing_scope");
    let (status, e) = api(
        port,
        "GET",
        "/api/context/issue-1/python-specialist",
        &narrow,
        None,
    );
    assert_error(status, &e, 403, "missing_scope");

    // A token bound to an issue publishes and reads only that issue's topic.
    let issue_bound = token(&sc.env, &["--issue", "issue-1"]);
    let publish = |tok: &str, ty: &str, topic: &str| {
        api(
            port,
            "POST",
            &format!("/api/events/{ty}"),
            tok,
            Some(&json!({"publisher":"p","topic":topic})),
        )
    };
    let (status, own) = publish(&issue_bound, "progress", "issue-1");
    assert_eq!(status, 201, "{own}");
    let (status, e) = publish(&issue_bound, "progress", "issue-2");
    assert_error(status, &e, 403, "out_of_scope");
    let (status, other) = publish(t, "progress", "issue-2");
    assert_eq!(status, 201, "{other}");
    let (status, e) = api(
        port,
        "GET",
        "/api/events/wait/progress?since=0&filter=topic:issue-2&timeout=0",
        &issue_bound,
        None,
    );
    assert_error(status, &e, 403, "out_of_scope");
    // Without a filter the issue's topic is forced: issue-2's event stays invisible.
    let (status, batch) = api(
        port,
        "GET",
        "/api/events/wait/progress?since=0&timeout=0",
        &issue_bound,
        None,
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["events"].as_array().unwrap().len(), 1, "{batch}");
    assert_eq!(batch["events"][0]["seq"], own["seq"]);
    let (status, e) = api(
        port,
        "GET",
        "/api/events/stream?since=0&filter=topic:issue-2&follow=false",
        &issue_bound,
        None,
    );
    assert_error(status, &e, 403, "out_of_scope");
    let (status, body) = http(
        port,
        "GET",
        "/api/events/stream?since=0&follow=false",
        &[("Authorization", &format!("Bearer {issue_bound}"))],
        None,
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("issue-1") && !body.contains("issue-2"),
        "{body}"
    );
    // Lifecycle events come from the sidecar alone, whatever the token.
    for ty in ["agent_started", "agent_completed", "agent_failed"] {
        for tok in [t.as_str(), issue_bound.as_str()] {
            let (status, e) = publish(tok, ty, "issue-1");
            assert_error(status, &e, 403, "reserved_event_type");
        }
    }

    // Foreign Host (DNS rebinding) and Origin (a web page): 403, and no CORS headers ever.
    let (status, head, _) = raw(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: evil.example:{port}\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 403, "{head}");
    let (status, head, _) = raw(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 403, "{head}");
    let (status, head, _) = raw(
        port,
        &format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_ne!(status, 200);
    assert!(!head.contains("access-control-"), "{head}");
    let (status, head, _) = raw(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200);
    assert!(!head.contains("access-control-"), "{head}");

    // Path traversal and junk IDs: 400 before anything touches the disk.
    let long = "x".repeat(129);
    for bad in [
        "/api/results/..".to_string(),
        "/api/results/%2e%2e".to_string(),
        "/api/results/..%2f..%2fetc".to_string(),
        "/api/results/a%2Fb".to_string(),
        "/api/results/a%00b".to_string(),
        "/api/results/.hidden".to_string(),
        format!("/api/results/{long}"),
        "/api/context/%2e%2e/rust-specialist".to_string(),
        "/api/context/issue-1/..%2f..".to_string(),
        "/api/events/wait/%2e%2e".to_string(),
        "/api/context//rust-specialist".to_string(),
    ] {
        let (status, e) = api(port, "GET", &bad, t, None);
        assert_error(status, &e, 400, "invalid_id");
    }
    let (status, e) = api(
        port,
        "POST",
        "/api/results",
        t,
        Some(
            &json!({"agent_id":"a","agent_type":"../../x","issue_id":"i","result":{"status":"ok"}}),
        ),
    );
    assert_error(status, &e, 400, "bad_request");
    assert!(!sc.env.data_dir().join("x.json").exists());

    // Content type and size.
    let auth = format!("Bearer {t}");
    let body = json!({"publisher":"p","topic":"t"}).to_string();
    let (status, text) = http(
        port,
        "POST",
        "/api/events/x",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        Some(&body),
    );
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_error(status, &e, 415, "unsupported_media_type");
    let big = json!({"publisher":"p","topic":"t","data":"x".repeat(2 * 1024 * 1024)}).to_string();
    let (status, text) = http(
        port,
        "POST",
        "/api/events/x",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(&big),
    );
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_error(status, &e, 413, "payload_too_large");
}

/// Context stays inside real projects, and never serves a secret by name or by content.
#[test]
fn context_stays_in_projects_and_serves_no_secrets() {
    let sc = start_sidecar(Env::new());
    let port = sc.env.sidecar_port;
    let path = "/api/context/issue-1/rust-specialist";
    let q = |p: &Path| format!("{path}?project={}", p.display());

    // A token bound to no project may name only a real project: never /, /etc, $HOME, nor a
    // directory that is neither a git work tree nor holds a project file.
    let unbound = token(&sc.env, &["--any-project"]);
    let bare = sc.env.tmp.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for p in [Path::new("/"), Path::new("/etc"), &sc.env.home, &bare] {
        let (status, e) = api(port, "GET", &q(p), &unbound, None);
        assert_error(status, &e, 403, "out_of_scope");
    }
    let (status, ctx) = api(port, "GET", &q(&sc.project), &unbound, None);
    assert_eq!(status, 200, "{ctx}");
    let (status, e) = api(port, "GET", path, &unbound, None);
    assert_error(status, &e, 400, "bad_request");
    // A token bound to the home directory itself reads nothing.
    let home_bound = token(&sc.env, &["--project", sc.env.home.to_str().unwrap()]);
    let (status, e) = api(port, "GET", path, &home_bound, None);
    assert_error(status, &e, 403, "out_of_scope");

    // Files the reviewer saw leak, each with a marker.
    for d in ["k8s", "deploy"] {
        std::fs::create_dir_all(sc.project.join(d)).unwrap();
    }
    let files = [
        ("prod.tfvars", "db = \"LEAKED\""),
        ("k8s/secret.yaml", "data: LEAKED"),
        ("gcp-sa-key.json", "{\"k\":\"LEAKED\"}"),
        ("token.json", "{\"t\":\"LEAKED\"}"),
        (".envrc", "export K=LEAKED"),
        ("prod.env.bak", "K=LEAKED"),
        ("config.yml", "db:\n  password: LEAKED\n"),
        ("deploy/server.json", "{\"private_key\": \"LEAKED\"}"),
    ];
    for (f, c) in files {
        std::fs::write(sc.project.join(f), c).unwrap();
    }
    for t in [
        "cloud-architect",
        "gcp-specialist",
        "sre",
        "auth-specialist",
        "secrets-scanner",
        "rust-specialist",
    ] {
        let (status, ctx) = api(
            port,
            "GET",
            &format!("/api/context/issue-1/{t}"),
            &sc.token,
            None,
        );
        assert_eq!(status, 200, "{ctx}");
        let text = ctx.to_string();
        assert!(!text.contains("LEAKED"), "{t}: {text}");
        for name in [
            ".envrc",
            "prod.tfvars",
            "secret.yaml",
            "sa-key",
            "token.json",
            "prod.env",
        ] {
            assert!(!text.contains(name), "{t} names {name}: {text}");
        }
    }
    let (_, ctx) = api(port, "GET", "/api/context/issue-1/sre", &sc.token, None);
    let withheld: Vec<&str> = ctx["project"]["relevant_files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["withheld"] == "looks like a secret")
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(withheld, ["config.yml", "deploy/server.json"], "{ctx}");
}

/// A project's own `.git/config` names a program; a context request must not run it.
#[test]
fn hostile_git_config_is_not_run_by_a_context_request() {
    let sc = start_sidecar(Env::new());
    let port = sc.env.sidecar_port;
    let marker = sc.env.tmp.path().join("PWNED");
    let ok = Command::new("git")
        .arg("-C")
        .arg(&sc.project)
        .args([
            "config",
            "core.fsmonitor",
            &format!("touch {}; false #", marker.display()),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let (status, ctx) = api(
        port,
        "GET",
        "/api/context/issue-1/rust-specialist",
        &sc.token,
        None,
    );
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(ctx["project"]["git"]["branch"], "main", "{ctx}");
    assert_eq!(
        ctx["project"]["git"]["dirty_files"][0], "src/main.rs",
        "{ctx}"
    );
    assert!(!marker.exists(), "the repository's core.fsmonitor ran");
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_is_507_and_leaves_no_partial_file() {
    let env = Env::new();
    let results = env.data_dir().join("orchestration/results");
    std::fs::create_dir_all(&results).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
        .arg(&results)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        // Without root there is no honest full disk; the ENOSPC → DiskFull mapping is
        // covered by `results::tests::disk_full_is_named` and `error::tests`.
        assert_ne!(
            unsafe { libc::geteuid() },
            0,
            "root could not mount a tmpfs"
        );
        eprintln!("skipping the tmpfs part: mount needs root");
        return;
    }
    let _mount = Mount(results.clone());
    for d in [env.data_dir(), env.data_dir().join("orchestration")] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let sc = start_sidecar(env);
    let port = sc.env.sidecar_port;
    let small =
        json!({"agent_id":"a","agent_type":"small","issue_id":"full","result":{"status":"ok"}});
    assert_eq!(
        api(port, "POST", "/api/results", &sc.token, Some(&small)).0,
        201
    );
    let big = json!({"agent_id":"a","agent_type":"big","issue_id":"full",
        "result":{"status":"ok","blob":"x".repeat(200 * 1024)}});
    let (status, e) = api(port, "POST", "/api/results", &sc.token, Some(&big));
    assert_error(status, &e, 507, "disk_full");
    // Every result has its own file beside the latest of its type; nothing else is left.
    let mut names = files_under(&results.join("full"));
    names.sort();
    assert_eq!(
        names,
        vec!["small.json", "small/a.json"],
        "partial or temp file left behind"
    );
    // The sidecar keeps serving; the earlier result is intact.
    let (status, list) = api(port, "GET", "/api/results/full", &sc.token, None);
    assert_eq!(status, 200);
    assert_eq!(list["results"].as_array().unwrap().len(), 1);
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
                out.push(rel.display().to_string());
            }
        }
    }
    out
}

/// A token bound to an agent type publishes and waits only on its type's topic (its inbox)
/// and, when also bound to an issue, the issue's; an unbound token anywhere.
#[test]
fn agent_type_tokens_use_only_their_topics() {
    let sc = start_sidecar(Env::new());
    let port = sc.env.sidecar_port;
    let typed = token(&sc.env, &["--agent-type", "rust-specialist"]);
    let both = token(
        &sc.env,
        &["--agent-type", "rust-specialist", "--issue", "issue-1"],
    );
    let publish = |tok: &str, topic: &str| {
        api(
            port,
            "POST",
            "/api/events/progress",
            tok,
            Some(&json!({"publisher":"p","topic":topic})),
        )
    };
    assert_eq!(publish(&typed, "rust-specialist").0, 201);
    let (status, e) = publish(&typed, "issue-9");
    assert_error(status, &e, 403, "out_of_scope");
    assert_eq!(publish(&both, "issue-1").0, 201);
    assert_eq!(publish(&both, "rust-specialist").0, 201);
    let (status, e) = publish(&both, "python-specialist");
    assert_error(status, &e, 403, "out_of_scope");
    let wait = |tok: &str, filter: &str| {
        api(
            port,
            "GET",
            &format!("/api/events/wait/progress?since=0&timeout=0{filter}"),
            tok,
            None,
        )
    };
    let (status, e) = wait(&typed, "&filter=topic:issue-9");
    assert_error(status, &e, 403, "out_of_scope");
    // Without a filter a type-bound token reads its type's topic only.
    let (status, batch) = wait(&typed, "");
    assert_eq!(status, 200, "{batch}");
    let topics: BTreeSet<String> = batch["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["topic"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(topics, BTreeSet::from(["rust-specialist".to_string()]));
    assert_eq!(publish(&sc.token, "anything").0, 201);
}
