//! cco's MCP server at the daemon's `/mcp`, over real sockets: tool calls reach the sidecar
//! scoped to the caller's issue, and the real Claude Code CLI calls `mcp__cco__publish`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::claude::real_claude;
use crate::common::{Env, http};
use crate::e2e::{env_for, project, run_bounded};
use crate::fake_anthropic::{FakeAnthropic, Reply, Rules};
use crate::launcher::{recorded, with_claude};

fn token(env: &Env) -> String {
    let out = env.run(["token", "--ttl", "10m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One JSON-RPC request to `/mcp`: (HTTP status, body).
fn rpc(env: &Env, token: &str, issue: &str, method: &str, params: Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, text) = http(
        env.daemon_port,
        "POST",
        "/mcp",
        &[
            ("Authorization", &auth),
            ("X-Cco-Issue", issue),
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", "2025-11-25"),
        ],
        Some(&body.to_string()),
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `tools/call`: the tool's text parsed as JSON; panics on a tool error.
fn call(env: &Env, token: &str, issue: &str, tool: &str, args: Value) -> Value {
    let (status, body) = rpc(
        env,
        token,
        issue,
        "tools/call",
        json!({"name": tool, "arguments": args}),
    );
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    assert_ne!(result["isError"], true, "{tool}: {text}");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{tool}: {e}: {text}"))
}

#[test]
fn tools_reach_the_sidecar_scoped_to_the_issue() {
    let env = Env::new();
    let _d = env.start("daemon");
    let _s = env.start("sidecar");
    let token = token(&env);

    let first = call(
        &env,
        &token,
        "mcp-1",
        "publish",
        json!({"event_type": "api_ready", "topic": "frontend", "data": {"port": 8080}, "agent": "backend-1"}),
    );
    let seq = first["seq"].as_u64().unwrap();
    // Another issue's event on the same type and topic is not this issue's to see.
    call(
        &env,
        &token,
        "mcp-2",
        "publish",
        json!({"event_type": "api_ready", "topic": "frontend", "data": {"port": 1}}),
    );
    let waited = call(
        &env,
        &token,
        "mcp-1",
        "wait",
        json!({"event_type": "api_ready", "topic": "frontend", "since": seq - 1, "timeout_ms": 5000}),
    );
    let events = waited["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{waited}");
    assert_eq!(events[0]["publisher"], "backend-1");
    assert_eq!(events[0]["data"]["port"], 8080);
    assert_eq!(events[0]["data"]["issue_id"], "mcp-1");

    // A wait that finds only other issues' events times out empty, with the cursor past them.
    let started = Instant::now();
    let empty = call(
        &env,
        &token,
        "mcp-2",
        "wait",
        json!({"event_type": "api_ready", "since": seq - 1, "timeout_ms": 0}),
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(empty["events"][0]["data"]["port"], 1, "{empty}");

    // The journal has the event with the session's issue, as `cco events` shows it.
    let out = env.run(["events", "--json", "--type", "api_ready"]);
    let journal: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(journal.len(), 2, "{journal:?}");
    assert_eq!(journal[0]["data"]["issue_id"], "mcp-1");

    let agents = call(&env, &token, "mcp-1", "agents", json!({}));
    assert_eq!(agents, json!({"issue_id": "mcp-1", "agents": []}));
    let results = call(&env, &token, "mcp-1", "results", json!({"agent_type": "x"}));
    assert_eq!(results["results"], json!([]));
    let context = call(
        &env,
        &token,
        "mcp-1",
        "context",
        json!({"agent_type": "rust-specialist"}),
    );
    assert_eq!(context["issue_id"], "mcp-1");
    assert_eq!(context["agent_type"], "rust-specialist");
}

#[test]
fn refusals_over_a_real_socket() {
    let env = Env::new();
    let _d = env.start("daemon");
    let token = token(&env);
    let init = json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}});

    let (status, body) = rpc(&env, "", "mcp-1", "initialize", init.clone());
    assert_eq!(status, 401, "{body}");
    let (status, body) = rpc(&env, &token, "mcp-1", "initialize", init.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["serverInfo"]["name"], "cco");

    // A token bound to one issue is refused on another.
    let out = env.run(["token", "--ttl", "10m", "--issue", "mcp-1"]);
    let bound = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (status, body) = rpc(&env, &bound, "mcp-2", "initialize", init.clone());
    assert_eq!(status, 403, "{body}");
    let (status, body) = rpc(&env, &bound, "mcp-1", "initialize", init.clone());
    assert_eq!(status, 200, "{body}");

    let (status, text) = http(
        env.daemon_port,
        "POST",
        "/mcp",
        &[
            ("Host", "evil.example"),
            ("Authorization", &format!("Bearer {token}")),
        ],
        Some("{}"),
    );
    assert_eq!(status, 403, "{text}");
}

/// The real CLI (pinned) loads the sealed `mcp.json` and offers the tools deferred (their
/// names only, until `ToolSearch` loads one); the main turn loads and calls
/// `mcp__cco__publish`, and the event lands in the journal under the session's issue.
#[test]
fn the_real_cli_publishes_through_mcp() {
    let Some(claude) = real_claude() else { return };
    let fake = FakeAnthropic::with_rules(
        Rules::new()
            .when(
                |c| c.tool_results().iter().any(|r| r.contains("\"seq\":")),
                Reply::text("MAIN-DONE"),
            )
            .when(
                |c| c.has_tool_result(),
                Reply::tool_use(
                    "mcp__cco__publish",
                    r#"{"event_type":"plan_ready","data":{"steps":3}}"#,
                ),
            )
            .otherwise(Reply::tool_use(
                "ToolSearch",
                r#"{"query":"select:mcp__cco__publish"}"#,
            )),
    );
    let env = env_for(&claude, &fake);
    let _daemon = env.start("daemon");
    let _sidecar = env.start("sidecar");
    let project = project(&env);
    let out = run_bounded(
        &env,
        &project,
        &["--issue", "mcp-e2e", "-p", "publish the plan"],
        &fake,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "MAIN-DONE", "{stderr}");

    let calls = fake.calls();
    let offered = calls[0].system_messages_text();
    let tools = [
        "publish",
        "wait",
        "results",
        "context",
        "agents",
        "wait_all",
        "inbox",
        "reserve",
        "release",
        "reservations",
    ];
    for tool in tools {
        assert!(
            offered.contains(&format!("mcp__cco__{tool}\n")),
            "{tool} not offered:\n{offered}"
        );
    }
    // Deferred, the ten tools cost a main request their names only.
    let names: usize = tools.iter().map(|t| format!("mcp__cco__{t}\n").len()).sum();
    println!("cco's MCP tools in a main request: {names} bytes (names only, deferred)");
    assert!(
        !calls[0]
            .tool_names()
            .iter()
            .any(|n| n.starts_with("mcp__cco__")),
        "a definition was sent before ToolSearch loaded it"
    );
    let loaded = calls
        .iter()
        .find(|c| c.tool_names().iter().any(|n| n == "mcp__cco__publish"))
        .expect("ToolSearch loaded mcp__cco__publish's definition");
    assert!(loaded.n > 1);
    let answered = calls
        .iter()
        .find(|c| c.tool_results().iter().any(|r| r.contains("\"seq\":")))
        .unwrap_or_else(|| panic!("the publish's answer never reached the model: {calls:#?}"));
    let result = answered.tool_results().join("\n");
    assert!(result.contains("\"topic\":\"mcp-e2e\""), "{result}");

    let log = _daemon.log_text();
    let protocols: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("MCP request"))
        .map(|l| {
            let v = l.split("protocol=").nth(1).unwrap_or("?");
            v.split(' ').next().unwrap_or("?").trim_matches('"')
        })
        .collect();
    // The pinned CLI probes `server/discover` at 2026-07-28 and stays there when answered.
    assert!(
        !protocols.is_empty() && protocols.iter().all(|p| *p == "2026-07-28"),
        "{protocols:?}"
    );

    let out = env.run(["events", "--json", "--type", "plan_ready"]);
    let journal: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0]["data"]["issue_id"], "mcp-e2e");
    assert_eq!(journal[0]["data"]["steps"], 3);
    assert_eq!(journal[0]["publisher"], "main");
}

/// The launcher passes the sealed `mcp.json` in the `=` form (Claude's `--mcp-config` takes
/// several values and would swallow a prompt), keeps the user's own beside it, and
/// `launcher.mcp = false` (`CCO_MCP=false`) leaves it out.
#[test]
fn the_launcher_passes_the_sealed_mcp_config() {
    let env = with_claude(Env::new());
    let _d = env.start("daemon");
    let sealed = env.runtime_dir().join("mcp.json");
    env.run(["--mcp-config", "mine.json", "-p", "hi"]);
    let (argv, _) = recorded(&env);
    let ours = format!("--mcp-config={}", sealed.display());
    assert_eq!(argv[2], ours, "{argv:?}");
    assert_eq!(
        &argv[argv.len() - 4..],
        ["--mcp-config", "mine.json", "-p", "hi"]
    );
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&sealed).unwrap()).unwrap();
    assert_eq!(
        config["mcpServers"]["cco"]["url"],
        format!("http://127.0.0.1:{}/mcp", env.daemon_port)
    );

    let mut off = with_claude(Env::new());
    off.set("CCO_MCP", "false");
    let _d2 = off.start("daemon");
    off.run(["-p", "hi"]);
    let (argv, _) = recorded(&off);
    assert!(
        !argv.iter().any(|a| a.starts_with("--mcp-config")),
        "{argv:?}"
    );
}

/// A `wait` parked in the sidecar does not hold the daemon's shutdown for its timeout: it
/// answers at once with the cursor to wait again from.
#[test]
fn a_pending_wait_ends_when_the_daemon_stops() {
    let env = Env::new();
    let mut daemon = env.start("daemon");
    let _s = env.start("sidecar");
    let token = token(&env);
    let waiter = {
        let (port, token) = (env.daemon_port, token.clone());
        std::thread::spawn(move || {
            let auth = format!("Bearer {token}");
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "wait", "arguments": {"event_type": "never", "timeout_ms": 55000}}});
            let answer = http(
                port,
                "POST",
                "/mcp",
                &[
                    ("Authorization", &auth),
                    ("X-Cco-Issue", "mcp-stop"),
                    ("Content-Type", "application/json"),
                    ("Accept", "application/json, text/event-stream"),
                    ("MCP-Protocol-Version", "2025-11-25"),
                ],
                Some(&body.to_string()),
            );
            (answer, Instant::now())
        })
    };
    // Readiness: the wait is parked in the sidecar.
    let parked = Instant::now();
    loop {
        let (_, body) = crate::common::get(env.sidecar_port, "/status");
        let st: Value = serde_json::from_str(&body).unwrap();
        if st["events"]["active_subscriptions"].as_u64() >= Some(1) {
            break;
        }
        assert!(parked.elapsed() < Duration::from_secs(10), "{st}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stopped = Instant::now();
    assert!(daemon.terminate().success());
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "the daemon took {:?} to exit",
        stopped.elapsed()
    );
    let ((status, text), answered) = waiter.join().unwrap();
    assert!(
        answered.duration_since(stopped) < Duration::from_secs(5),
        "the wait held the stop for {:?}",
        answered.duration_since(stopped)
    );
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["result"]["isError"], true, "{body}");
    let msg = body["result"]["content"][0]["text"].as_str().unwrap();
    assert!(msg.contains("call wait again with since="), "{msg}");
}

/// `wait_all` is the issue's join: not done while an agent runs, done once every one has
/// completed or failed, with each one's status and result summary.
#[test]
fn wait_all_returns_once_every_agent_of_the_issue_finished() {
    let env = Env::new();
    let _d = env.start("daemon");
    let _s = env.start("sidecar");
    let token = token(&env);
    let auth = format!("Bearer {token}");
    let post = |path: &str, body: Value| {
        let (status, text) = http(
            env.daemon_port,
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(&body.to_string()),
        );
        assert!((200..300).contains(&status), "{path}: {status} {text}");
    };
    for (id, ty) in [("a-1", "backend-dev"), ("a-2", "frontend-dev")] {
        post(
            &format!("/api/agents/{id}/status"),
            json!({"status": "started", "agent_type": ty, "issue_id": "join-1"}),
        );
    }
    // A named type nobody registered yet is not done (the daemon's own loop used to call
    // an empty set finished): the sidecar's join says which types it still waits for.
    let early = call(
        &env,
        &token,
        "join-1",
        "wait_all",
        json!({"agent_types": ["ghost"], "timeout_ms": 0}),
    );
    assert_eq!(early["done"], false, "{early}");
    assert_eq!(early["missing_types"], json!(["ghost"]), "{early}");
    let pending = call(&env, &token, "join-1", "wait_all", json!({"timeout_ms": 0}));
    assert_eq!(pending["done"], false, "{pending}");
    assert_eq!(pending["agents"].as_array().unwrap().len(), 2);

    post(
        "/api/results",
        json!({"agent_id": "a-1", "agent_type": "backend-dev", "issue_id": "join-1",
               "result": {"status": "success", "summary": "API done"}}),
    );
    post(
        "/api/agents/a-1/status",
        json!({"status": "completed", "agent_type": "backend-dev", "issue_id": "join-1"}),
    );
    let one = call(
        &env,
        &token,
        "join-1",
        "wait_all",
        json!({"agent_types": ["backend-dev"], "timeout_ms": 5000}),
    );
    assert_eq!(one["done"], true, "{one}");
    assert_eq!(one["agents"][0]["summary"], "API done");

    post(
        "/api/agents/a-2/status",
        json!({"status": "failed", "agent_type": "frontend-dev", "issue_id": "join-1"}),
    );
    let all = call(
        &env,
        &token,
        "join-1",
        "wait_all",
        json!({"timeout_ms": 5000}),
    );
    assert_eq!(all["done"], true, "{all}");
    let statuses: Vec<&str> = all["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(
        statuses.contains(&"completed") && statuses.contains(&"failed"),
        "{all}"
    );
}

/// The lease and inbox tools over a real socket: a reserve, another agent's conflict naming
/// the holder, the lease list, an event pushed to the blocked agent's type read from its
/// inbox once, and a release after which the second agent's reserve is granted.
#[test]
fn lease_and_inbox_tools_coordinate_two_agents() {
    let env = Env::new();
    let _d = env.start("daemon");
    let _s = env.start("sidecar");
    let token = token(&env);
    let auth = format!("Bearer {token}");
    for (id, ty) in [("a-1", "backend-dev"), ("b-1", "frontend-dev")] {
        let (status, text) = http(
            env.daemon_port,
            "POST",
            &format!("/api/agents/{id}/status"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(
                &json!({"status": "running", "agent_type": ty, "issue_id": "lease-1"}).to_string(),
            ),
        );
        assert_eq!(status, 200, "{text}");
    }
    let issue = "lease-1";
    let mine = call(
        &env,
        &token,
        issue,
        "reserve",
        json!({"agent": "a-1", "paths": ["src/lib.rs"], "reason": "new parser"}),
    );
    assert_eq!(mine["granted"], true, "{mine}");
    let lease_id = mine["lease"]["lease_id"].as_str().unwrap().to_string();
    assert_eq!(mine["lease"]["agent_type"], "backend-dev");

    let refused = call(
        &env,
        &token,
        issue,
        "reserve",
        json!({"agent": "b-1", "paths": ["src/**"], "mode": "shared"}),
    );
    assert_eq!(refused["granted"], false, "{refused}");
    let why = refused["conflicts"][0].as_str().unwrap();
    assert!(
        why.contains("a-1") && why.contains("new parser"),
        "{refused}"
    );

    let listed = call(&env, &token, issue, "reservations", json!({}));
    assert_eq!(listed["leases"][0]["lease_id"], lease_id.as_str());

    call(
        &env,
        &token,
        issue,
        "publish",
        json!({"event_type": "need_lib", "topic": "backend-dev", "data": {"from": "b-1"}, "agent": "b-1"}),
    );
    let inbox = call(&env, &token, issue, "inbox", json!({"agent": "a-1"}));
    assert_eq!(inbox["events"][0]["event_type"], "need_lib", "{inbox}");
    assert_eq!(inbox["more"], 0);
    let again = call(&env, &token, issue, "inbox", json!({"agent": "a-1"}));
    assert_eq!(again["events"], json!([]), "delivered once");

    // Only the holder releases; then the other agent's reserve is granted.
    let (_, body) = rpc(
        &env,
        &token,
        issue,
        "tools/call",
        json!({"name": "release", "arguments": {"agent": "b-1", "lease_id": lease_id}}),
    );
    assert_eq!(body["result"]["isError"], true, "{body}");
    let released = call(&env, &token, issue, "release", json!({"agent": "a-1"}));
    assert_eq!(released["released"], json!([lease_id]));
    let granted = call(
        &env,
        &token,
        issue,
        "reserve",
        json!({"agent": "b-1", "paths": ["src/**"], "mode": "shared"}),
    );
    assert_eq!(granted["granted"], true, "{granted}");
}
