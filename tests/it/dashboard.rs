//! The dashboard in a real browser: headless Chromium through chromedriver logs in with
//! `cco dashboard --no-open`'s link, sees an agent appear live, opens its page and the
//! timeline, sees its cost after an OTLP post, and takes the screenshots in `docs/`
//! (`CCO_SCREENSHOTS=docs` rewrites them).

use std::path::PathBuf;

use serde_json::json;

use crate::common::{Env, http};
use crate::webdriver::Browser;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

fn token(env: &Env) -> String {
    let out = env.run(["token", "--ttl", "10m", "--any-project"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A raw GET: (status line and headers, body).
fn raw_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

/// Where the screenshots go: `docs/` with `CCO_SCREENSHOTS=docs`, else a temp dir.
fn screenshot_dir(env: &Env) -> PathBuf {
    match std::env::var("CCO_SCREENSHOTS").as_deref() {
        Ok("docs") => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs"),
        _ => env.tmp.path().join("screenshots"),
    }
}

/// One `claude_code.api_request` log record as Claude Code's `http/json` exporter writes it
/// (camelCase, times and 64-bit ints as strings); `agent` is set for a sub-agent's request.
fn api_request(
    session: &str,
    seq: u64,
    agent: Option<&str>,
    model: &str,
    tokens: [u64; 4],
    cost_usd: f64,
) -> serde_json::Value {
    let int = |k: &str, v: u64| json!({"key": k, "value": {"intValue": v.to_string()}});
    let text = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let mut attributes = vec![
        text("session.id", session),
        text("event.name", "api_request"),
        int("event.sequence", seq),
        text("prompt.id", "prompt-1"),
        text("model", model),
        int("input_tokens", tokens[0]),
        int("output_tokens", tokens[1]),
        int("cache_read_tokens", tokens[2]),
        int("cache_creation_tokens", tokens[3]),
        json!({"key": "cost_usd", "value": {"doubleValue": cost_usd}}),
        int("duration_ms", 1800 + seq * 100),
    ];
    match agent {
        Some(a) => {
            attributes.push(text("agent_id", a));
            attributes.push(text("query_source", "agent:custom"));
        }
        None => attributes.push(text("query_source", "repl_main_thread")),
    }
    json!({"timeUnixNano": format!("{}", 1_796_143_858_000_000_000u64 + seq * 1_000_000_000),
           "body": {"stringValue": "claude_code.api_request"}, "attributes": attributes})
}

/// Posts `records` to the daemon's `/v1/logs` as one OTLP/JSON export.
fn export_logs(env: &Env, auth: &str, records: Vec<serde_json::Value>) {
    let body = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "claude-code"}}]},
        "scopeLogs": [{"scope": {"name": "com.anthropic.claude_code.events"}, "logRecords": records}]}]});
    let (status, text) = http(
        env.daemon_port,
        "POST",
        "/v1/logs",
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        Some(&body.to_string()),
    );
    assert_eq!(status, 200, "/v1/logs: {text}");
}

/// How long the daemon may take to report what an agent was told (it does so after the
/// hook's answer left).
const TOLD_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
const TOLD_POLL: std::time::Duration = std::time::Duration::from_millis(50);

fn save(browser: &Browser, dir: &std::path::Path, name: &str) {
    let png = browser.screenshot();
    assert!(png.starts_with(PNG_MAGIC), "{name} is not a PNG");
    assert!(
        png.len() > 10_000,
        "{name}: {} bytes is too small for a page",
        png.len()
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let env = Env::new();
    let _d = env.start("daemon");
    let _s = env.start("sidecar");
    let Some(browser) = Browser::start(&env.tmp.path().join("chromium-profile")) else {
        return;
    };
    let port = env.daemon_port;
    let token = token(&env);
    let auth = format!("Bearer {token}");
    let post = |path: &str, body: serde_json::Value| {
        let (status, text) = http(
            env.sidecar_port,
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
    // A session and a finished agent before the page opens.
    post(
        "/api/events/session_started",
        json!({"publisher": "session-demo", "topic": "session",
               "data": {"session_id": "7f3c9a2e-demo", "issue_id": "issue-42"}}),
    );
    post(
        "/api/agents/agent-planner-1/status",
        json!({"status": "started", "agent_type": "planner", "issue_id": "issue-42"}),
    );
    post(
        "/api/results",
        json!({"agent_id": "agent-planner-1", "agent_type": "planner", "issue_id": "issue-42",
               "result": {"status": "success", "summary": "Plan: split the parser <b>and</b> the CLI."}}),
    );
    post(
        "/api/agents/agent-planner-1/status",
        json!({"status": "completed", "agent_type": "planner", "issue_id": "issue-42"}),
    );

    // A second session's issue: one agent failed, one still running.
    post(
        "/api/events/session_started",
        json!({"publisher": "session-demo", "topic": "session",
               "data": {"session_id": "b81d04f6-demo", "issue_id": "issue-43"}}),
    );
    for (id, ty, state) in [
        ("agent-reviewer-2", "reviewer", "started"),
        ("agent-reviewer-2", "reviewer", "failed"),
        ("agent-tester-3", "tester", "started"),
        ("agent-tester-3", "tester", "running"),
    ] {
        post(
            &format!("/api/agents/{id}/status"),
            json!({"status": state, "agent_type": ty, "issue_id": "issue-43"}),
        );
    }

    // More of issue 43's history, and what the agents so far cost (the main threads too).
    for (id, ty, state) in [
        ("agent-tester-4", "tester", "started"),
        ("agent-tester-4", "tester", "completed"),
    ] {
        post(
            &format!("/api/agents/{id}/status"),
            json!({"status": state, "agent_type": ty, "issue_id": "issue-43"}),
        );
    }
    post(
        "/api/results",
        json!({"agent_id": "agent-tester-4", "agent_type": "tester", "issue_id": "issue-43",
               "result": {"status": "partial", "summary": "41 of 43 parser tests pass; the two \
               failing ones need the new tokenizer."}}),
    );
    const SONNET: &str = "claude-sonnet-4-5";
    const OPUS: &str = "claude-opus-4-1";
    export_logs(
        &env,
        &auth,
        vec![
            api_request(
                "7f3c9a2e-demo",
                1,
                None,
                OPUS,
                [2_400, 610, 18_000, 3_100],
                0.1284,
            ),
            api_request(
                "7f3c9a2e-demo",
                2,
                Some("agent-planner-1"),
                SONNET,
                [5_200, 1_480, 42_000, 6_400],
                0.0931,
            ),
            api_request(
                "7f3c9a2e-demo",
                3,
                Some("agent-planner-1"),
                SONNET,
                [1_900, 820, 47_500, 900],
                0.0412,
            ),
            api_request(
                "b81d04f6-demo",
                1,
                None,
                OPUS,
                [1_700, 450, 9_800, 2_200],
                0.0873,
            ),
            api_request(
                "b81d04f6-demo",
                2,
                Some("agent-reviewer-2"),
                SONNET,
                [8_300, 2_050, 61_000, 7_700],
                0.1566,
            ),
            api_request(
                "b81d04f6-demo",
                3,
                Some("agent-tester-3"),
                SONNET,
                [3_100, 940, 22_000, 1_800],
                0.0538,
            ),
            api_request(
                "b81d04f6-demo",
                4,
                Some("agent-tester-4"),
                SONNET,
                [4_400, 1_210, 35_000, 2_600],
                0.0774,
            ),
        ],
    );

    // Log in with the one-time link; the code leaves the address bar.
    let out = env.run(["dashboard", "--no-open"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/login?code=")),
        "{url}"
    );
    browser.goto(&url);
    browser.find("#tree");
    assert_eq!(browser.url(), format!("http://127.0.0.1:{port}/"));
    assert_eq!(
        browser.eval("return document.cookie"),
        json!(""),
        "the session cookie is HttpOnly: page scripts never see it"
    );
    assert!(
        browser
            .text(&browser.find("#tree"))
            .contains("agent-planner-1")
    );

    // A new agent appears live, without a reload.
    browser.eval("window.__notReloaded = true; return null");
    browser.find("#live.live:not(.off)");
    // Claude Code's SubagentStart http hook, as the sealed settings send it to the daemon.
    let input = json!({"session_id": "7f3c9a2e-demo", "hook_event_name": "SubagentStart",
                       "agent_id": "agent-coder-7", "agent_type": "backend-dev",
                       "cwd": env.tmp.path()});
    let (status, answer) = http(
        port,
        "POST",
        "/hooks/subagent-start",
        &[
            ("Authorization", &auth),
            ("X-Cco-Issue", "issue-42"),
            ("Content-Type", "application/json"),
        ],
        Some(&input.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    let row = browser.find(r#"tr[data-agent="agent-coder-7"]"#);
    assert!(browser.text(&row).contains("backend-dev"));
    assert_eq!(
        browser.eval("return window.__notReloaded === true"),
        json!(true)
    );
    let shots = screenshot_dir(&env);

    // The agent's page: its record, what it was told, its result.
    browser.click(&browser.find(r##"a[href="#/agent/agent-planner-1"]"##));
    let id = browser.find("#agent-id");
    assert_eq!(browser.text(&id), "agent-planner-1");
    assert!(
        browser
            .text(&browser.find("main"))
            .contains("What it was told")
    );
    // Its result, from the issue's results; untrusted text stays text.
    let summary = browser.find("pre.summary");
    assert!(
        browser
            .text(&summary)
            .contains("split the parser <b>and</b> the CLI")
    );
    assert_eq!(
        browser.eval("return document.querySelectorAll('pre.summary b').length"),
        json!(0),
        "a result's markup is never parsed"
    );

    // The new agent: what the hook told it (the daemon reports it to the sidecar after
    // answering), and, after Claude Code's OTLP export, its tokens and cost.
    let client = cco::client::SidecarClient::new(env.sidecar_port).with_token(token.clone());
    let coder = cco::api::AgentId::parse("agent-coder-7").unwrap();
    let start = std::time::Instant::now();
    let told = loop {
        if let Some(c) = client.agent(&coder).unwrap().told.context {
            break c;
        }
        assert!(
            start.elapsed() < TOLD_WITHIN,
            "what agent-coder-7 was told was not recorded within {TOLD_WITHIN:?}"
        );
        std::thread::sleep(TOLD_POLL);
    };
    export_logs(
        &env,
        &auth,
        vec![
            api_request(
                "7f3c9a2e-demo",
                4,
                Some("agent-coder-7"),
                SONNET,
                [12_345, 3_210, 80_000, 9_000],
                0.4217,
            ),
            api_request(
                "7f3c9a2e-demo",
                5,
                Some("agent-coder-7"),
                SONNET,
                [2_000, 655, 91_000, 1_200],
                0.0850,
            ),
        ],
    );
    post(
        "/api/results",
        json!({"agent_id": "agent-coder-7", "agent_type": "backend-dev", "issue_id": "issue-42",
               "result": {"status": "success", "summary": "Split src/parser.rs into lexer.rs and \
               grammar.rs; the CLI calls grammar::parse. cargo test: 212 passed."}}),
    );
    post(
        "/api/agents/agent-coder-7/status",
        json!({"status": "completed", "agent_type": "backend-dev", "issue_id": "issue-42"}),
    );
    browser.goto(&format!("http://127.0.0.1:{port}/#/agent/agent-coder-7"));
    browser.find("#told table");
    let shown = browser.text(&browser.find("#told"));
    let context = format!("{} bytes of {}", group(told.bytes), group(told.budget));
    assert!(
        shown.contains(&context),
        "{context:?} missing from: {shown}"
    );
    assert!(shown.contains(&told.hash), "{shown}");
    let spend = browser.text(&browser.find("#agent-cost table"));
    for number in ["2", "14,345", "3,865", "171,000", "10,200", "$0.5067"] {
        assert!(spend.contains(number), "{number:?} missing from: {spend}");
    }
    browser.find("pre.summary");
    save(&browser, &shots, "dashboard-agent.png");

    // The tree shows its tokens and cost too.
    browser.goto(&format!("http://127.0.0.1:{port}/#/"));
    let row = browser.text(&browser.find(r#"tr[data-agent="agent-coder-7"]"#));
    assert!(
        row.contains("18,210") && row.contains("$0.5067") && row.contains("success"),
        "input + output tokens, cost, result: {row}"
    );
    save(&browser, &shots, "dashboard-tree.png");

    // The timeline, newest first, and live.
    browser.goto(&format!("http://127.0.0.1:{port}/#/events"));
    browser.find(r#"#events .event[data-seq]"#);
    post(
        "/api/events/build_finished",
        json!({"publisher": "agent-coder-7", "topic": "issue-42", "data": {"ok": true}}),
    );
    let fresh = browser.find("#events .event.new");
    assert!(browser.text(&fresh).contains("build_finished"));
    save(&browser, &shots, "dashboard-events.png");
    // A type's badge filters the timeline to that type.
    browser.click(&browser.find(r##"#events .event[data-seq="1"] a[href="#/events"]"##));
    browser.find(r#"input[aria-label="event type"][value="session_started"]"#);
    // The click replaced the list at once; its rows arrive together with the page.
    browser.find(r#"#events .event[data-seq="4"]"#);
    let shown = browser.eval(
        "return [...document.querySelectorAll('#events .event')].map(e => e.dataset.seq).join(',')",
    );
    assert_eq!(shown, json!("4,1"), "only the session_started events");

    // The issue page: results, leases and what its agent types and outcomes cost.
    post(
        "/api/leases/issue-42",
        json!({"agent": "agent-coder-7", "paths": ["src/parser.rs"], "reason": "splitting the parser"}),
    );
    browser.goto(&format!("http://127.0.0.1:{port}/#/issue/issue-42"));
    browser.find("pre.summary");
    let page = browser.text(&browser.find("main"));
    assert!(page.contains("<b>and</b>"), "results stay text: {page}");
    assert!(
        page.contains("src/parser.rs") && page.contains("splitting the parser"),
        "{page}"
    );
    let by_type = browser.text(&browser.find("#issue-cost table"));
    assert!(
        by_type.contains("backend-dev") && by_type.contains("$0.5067"),
        "{by_type}"
    );
    let outcomes = browser.text(&browser.find("#issue-outcomes table"));
    // planner-1 and coder-7 completed: 0.0931 + 0.0412 + 0.4217 + 0.0850.
    assert!(
        outcomes.contains("completed agents (2)") && outcomes.contains("$0.6410"),
        "{outcomes}"
    );
    save(&browser, &shots, "dashboard-issue.png");
    // An issue nothing was spent on says so instead of a table of zeros.
    browser.goto(&format!("http://127.0.0.1:{port}/#/issue/issue-quiet"));
    assert_eq!(
        browser.text(&browser.find("#issue-cost .na")),
        "no requests recorded yet"
    );
    browser.goto(&format!("http://127.0.0.1:{port}/#/health"));
    assert!(
        browser
            .text(&browser.find("#sidecar-health"))
            .contains("orchestration-sidecar")
    );
    // The cost view: the new agent's spend under its issue and its agent type.
    browser.goto(&format!("http://127.0.0.1:{port}/#/cost"));
    let by_issue = browser.text(&browser.find("#cost-issue table"));
    // issue-42: its main thread 0.1284, planner 0.1343, coder 0.5067.
    assert!(
        by_issue.contains("issue-42") && by_issue.contains("$0.7694"),
        "{by_issue}"
    );
    let by_type = browser.text(&browser.find("#cost-agent-type table"));
    let backend = by_type
        .lines()
        .find(|l| l.contains("backend-dev"))
        .unwrap_or_else(|| panic!("no backend-dev row: {by_type}"));
    assert!(backend.contains("$0.5067"), "{backend}");
    assert!(by_type.contains("orchestrator"), "{by_type}");
    save(&browser, &shots, "dashboard-cost.png");
    // Nothing the page did broke its own policy or threw.
    let console = browser.console();
    let broken: Vec<&String> = console
        .iter()
        .filter(|m| m.contains("Content Security Policy") || m.contains("Uncaught"))
        .collect();
    assert!(broken.is_empty(), "{broken:#?}");

    // Without the cookie: refused. The code was spent by the browser.
    let (status, body) = http(port, "GET", "/dashboard/api/tree", &[], None);
    assert_eq!(status, 401, "{body}");
    let path = url
        .strip_prefix(&format!("http://127.0.0.1:{port}"))
        .unwrap();
    let (head, body) = raw_get(port, path, &[]);
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(body.contains("cco dashboard"), "{body}");
    assert!(!head.contains("set-cookie"), "{head}");
    let (head, _) = raw_get(port, "/", &[]);
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
}

/// `n` with thousands separators, as the page shows numbers (en-US).
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The sidecar's paged views (no browser): a bound token sees only its issue, pages are
/// bounded, events come newest first and `next_before` pages back.
#[test]
fn the_views_page_and_respect_the_token_binding() {
    let env = Env::new();
    let _s = env.start("sidecar");
    let all = token(&env);
    let out = env.run([
        "token",
        "--ttl",
        "10m",
        "--any-project",
        "--issue",
        "issue-a",
    ]);
    assert!(out.status.success());
    let bound = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let call = |method: &str, path: &str, token: &str, body: Option<serde_json::Value>| {
        let auth = format!("Bearer {token}");
        let body = body.map(|b| b.to_string());
        let (status, text) = http(
            env.sidecar_port,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_deref(),
        );
        assert!((200..300).contains(&status), "{path}: {status} {text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    for (i, issue) in ["issue-a", "issue-b", "issue-c"].iter().enumerate() {
        for n in 0..3 {
            call(
                "POST",
                &format!("/api/agents/{issue}-agent-{n}/status"),
                &all,
                Some(
                    json!({"status": "started", "agent_type": format!("type-{i}"), "issue_id": issue}),
                ),
            );
        }
    }
    call(
        "POST",
        "/api/results",
        &all,
        Some(
            json!({"agent_id": "issue-c-agent-1", "agent_type": "type-2", "issue_id": "issue-c",
                    "result": {"status": "partial", "summary": "half"}}),
        ),
    );
    call(
        "POST",
        "/api/agents/issue-c-agent-1/status",
        &all,
        Some(json!({"status": "completed", "agent_type": "type-2", "issue_id": "issue-c"})),
    );
    let page = call("GET", "/api/views/tree?limit=2", &all, None);
    let done = page["issues"][0]["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "issue-c-agent-1")
        .unwrap()
        .clone();
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["result_status"], "partial", "{done}");
    assert!(
        done["ended_at"].is_string() && done["duration_ms"].is_u64(),
        "{done}"
    );
    assert_eq!(page["total_issues"], 3, "{page}");
    assert_eq!(page["issues"].as_array().unwrap().len(), 2);
    assert_eq!(
        page["issues"][0]["issue_id"], "issue-c",
        "newest activity first"
    );
    assert_eq!(page["issues"][0]["agents_total"], 3);
    assert_eq!(page["counts"]["active"], 8, "one of the nine completed");
    let page = call("GET", "/api/views/tree?limit=100000", &all, None);
    assert_eq!(page["limit"], 200, "the page size is bounded");
    let mine = call("GET", "/api/views/tree", &bound, None);
    assert_eq!(mine["total_issues"], 1, "{mine}");
    assert_eq!(mine["issues"][0]["issue_id"], "issue-a");

    let first = call("GET", "/api/views/events?limit=4", &all, None);
    let seqs: Vec<u64> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [10, 9, 8, 7]);
    assert_eq!(first["next_before"], 7);
    let older = call("GET", "/api/views/events?limit=4&before=7", &all, None);
    assert_eq!(older["events"][0]["seq"], 6);
    let typed = call(
        "GET",
        "/api/views/events?type=agent_started&topic=issue-b",
        &all,
        None,
    );
    assert_eq!(typed["events"].as_array().unwrap().len(), 3);
    assert_eq!(typed["next_before"], serde_json::Value::Null);
    let scoped = call("GET", "/api/views/events", &bound, None);
    assert!(
        scoped["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["topic"] == "issue-a"),
        "{scoped}"
    );
    let (status, _) = http(
        env.sidecar_port,
        "GET",
        "/api/views/events?topic=issue-b",
        &[("Authorization", &format!("Bearer {bound}"))],
        None,
    );
    assert_eq!(
        status, 403,
        "a bound token cannot read another issue's topic"
    );
}

/// Without a browser to start, `cco dashboard` prints the link instead of failing.
#[test]
fn without_an_opener_the_link_is_printed() {
    let env = Env::new();
    let _d = env.start("daemon");
    let empty = env.tmp.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = env
        .cmd(["dashboard"])
        .env("PATH", &empty)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("open this link yourself"), "{stderr}");
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = url
        .strip_prefix(&format!("http://127.0.0.1:{}", env.daemon_port))
        .unwrap_or_else(|| panic!("{url}"));
    let (head, _) = raw_get(env.daemon_port, path, &[]);
    assert!(
        head.starts_with("http/1.1 303"),
        "the printed link logs in: {head}"
    );
    assert!(head.contains("set-cookie: cco_dashboard="), "{head}");
}

/// A stand-in sidecar answering the views, `GET /api/agents/{id}` and `GET /api/cost` with
/// canned JSON: it shows what a real session rarely produces on demand (a truncated context,
/// inbox deliveries, markup in a file name).
struct FakeSidecar {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Most requests the stand-in answers before it stops on its own.
const FAKE_MAX_REQUESTS: usize = 500;

impl FakeSidecar {
    fn start() -> FakeSidecar {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut served = 0;
            while served < FAKE_MAX_REQUESTS && !stopped.load(std::sync::atomic::Ordering::Relaxed)
            {
                // Blocking: Drop wakes it with a connection of its own after setting `stop`.
                let Ok((mut sock, _)) = listener.accept() else {
                    return;
                };
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                served += 1;
                let mut reader = BufReader::new(sock.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let (status, body) = fake_answer(&path);
                let _ = write!(
                    sock,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeSidecar {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeSidecar {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fake_answer(path: &str) -> (u16, String) {
    let cost_row = |key: &str| {
        json!({"key": key, "requests": 3, "input_tokens": 1200, "output_tokens": 340,
               "cache_read_tokens": 9000, "cache_creation_tokens": 800, "cost_usd": 0.0123})
    };
    let body = if path.starts_with("/api/views/tree") {
        json!({"issues": [{"issue_id": "issue-7", "session_id": "s-1", "agents_total": 1,
                "active": 0, "completed": 1, "failed": 0, "updated_at": "2026-12-01T10:00:05.000Z",
                "agents": [{"agent_id": "agent-x", "agent_type": "backend-dev", "state": "completed",
                            "started_at": "2026-12-01T10:00:00.000Z", "ended_at": "2026-12-01T10:00:05.000Z",
                            "duration_ms": 5000, "result_status": "success"}]}],
               "total_issues": 1, "offset": 0, "limit": 50,
               "counts": {"active": 0, "completed": 1, "failed": 0, "by_type": {"backend-dev": 1}}})
    } else if path == "/api/agents/agent-x" {
        json!({"agent": {"agent_id": "agent-x", "agent_type": "backend-dev", "issue_id": "issue-7",
                         "status": "completed", "started_at": "2026-12-01T10:00:00.000Z",
                         "updated_at": "2026-12-01T10:00:05.000Z"},
               "told": {"context": {"bytes": 5120, "truncated": true, "budget": 24576, "hash": "sha256:ab12",
                                    "files": [{"path": "src/<i>parser</i>.rs", "bytes": 2048, "hash": "sha256:cd34"}],
                                    "results": [{"issue_id": "issue-7", "agent_type": "planner", "hash": "sha256:ef56"}],
                                    "at": "2026-12-01T10:00:00.000Z"},
                        "note": null,
                        "inbox": [{"seq": 41, "event_type": "api_ready", "topic": "issue-7",
                                   "delivered_at": "2026-12-01T10:00:03.000Z", "via": "PostToolUse"}]},
               "result": {"agent_id": "agent-x", "agent_type": "backend-dev", "issue_id": "issue-7",
                          "result": {"status": "success", "summary": "Parser split in two."},
                          "stored_at": "2026-12-01T10:00:05.000Z"}})
    } else if path.starts_with("/api/cost") {
        let key = if path.contains("by=agent-type") {
            "backend-dev"
        } else {
            "agent-x"
        };
        json!({"by": "agent", "rows": [cost_row(key)], "total": cost_row("total")})
    } else {
        return (
            404,
            json!({"error": {"code": "not_found", "message": "no such route"}}).to_string(),
        );
    };
    (200, body.to_string())
}

/// The agent page with a truncated context and inbox deliveries (a stand-in sidecar).
#[test]
fn the_agent_page_shows_what_it_was_told_and_its_cost() {
    let mut env = Env::new();
    let fake = FakeSidecar::start();
    env.set("CCO_SIDECAR_PORT", fake.port.to_string());
    let _d = env.start("daemon");
    let Some(browser) = Browser::start(&env.tmp.path().join("chromium-profile")) else {
        return;
    };
    let out = env.run(["dashboard", "--no-open"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    browser.goto(String::from_utf8_lossy(&out.stdout).trim());
    let row = browser.find(r#"tr[data-agent="agent-x"]"#);
    let text = browser.text(&row);
    assert!(
        text.contains("1,540") && text.contains("$0.0123"),
        "tokens and cost: {text}"
    );
    browser.goto(&format!(
        "http://127.0.0.1:{}/#/agent/agent-x",
        env.daemon_port
    ));
    browser.find("pre.summary");
    let page = browser.text(&browser.find("main"));
    for shown in [
        "5,120 bytes of 24,576 (truncated)",
        "src/<i>parser</i>.rs",
        "planner",
        "api_ready",
        "PostToolUse",
        "Parser split in two.",
        "$0.0123",
    ] {
        assert!(page.contains(shown), "{shown:?} missing from: {page}");
    }
    assert_eq!(
        browser.eval("return document.querySelectorAll('main i').length"),
        json!(0),
        "a file name's markup is never parsed"
    );
    drop(browser);
    drop(fake);
}
