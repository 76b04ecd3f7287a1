//! Cost accounting end to end: OTLP exports posted to a real daemon (protobuf, JSON, gzip, a
//! foreign token, garbage, a retried export) and read back with `cco cost`; and a real Claude
//! Code session against the fake API whose telemetry `cco cost` joins to the orchestrator and
//! its sub-agent.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use cco::api::cost::{CostOutcomes, CostReport};
use cco::api::sidecar::{AgentState, AgentStatusUpdate, PublishRequest};
use cco::api::{AgentId, AgentType, EventType, IssueId};
use cco::client::SidecarClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Any};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use serde_json::json;

use crate::common::Env;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// One raw HTTP/1.1 POST with a binary body: (status, content type, body).
fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "answers here have a length"
    );
    (status, content_type, raw[split + 4..].to_vec())
}

fn kv(key: &str, v: Any) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..KeyValue::default()
    }
}

/// An api_request record as Claude Code writes it: `seq` is its `event.sequence`.
fn api_request(session: &str, seq: i64, agent: Option<&str>, input: i64, cost: f64) -> LogRecord {
    let s = |v: &str| Any::StringValue(v.into());
    let mut attributes = vec![
        kv("session.id", s(session)),
        kv("event.name", s("api_request")),
        kv("event.sequence", Any::IntValue(seq)),
        kv("prompt.id", s("prompt-1")),
        kv("model", s("claude-test")),
        kv("input_tokens", Any::IntValue(input)),
        kv("output_tokens", Any::IntValue(7)),
        kv("cache_read_tokens", Any::IntValue(5)),
        kv("cache_creation_tokens", Any::IntValue(3)),
        kv("cost_usd", Any::DoubleValue(cost)),
        kv("duration_ms", Any::IntValue(40)),
    ];
    if let Some(a) = agent {
        attributes.push(kv("agent_id", s(a)));
    }
    LogRecord {
        time_unix_nano: 1_796_000_000_000_000_000 + seq as u64,
        body: Some(AnyValue {
            value: Some(s("claude_code.api_request")),
        }),
        attributes,
        ..LogRecord::default()
    }
}

fn export(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn token(env: &Env) -> String {
    let out = env.run(["token"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn cost_json<T: serde::de::DeserializeOwned>(env: &Env, args: &[&str]) -> T {
    let out = env.run([&["cost", "--json"][..], args].concat());
    assert!(
        out.status.success(),
        "cco cost {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

fn row<'a>(r: &'a CostReport, key: &str) -> &'a cco::api::cost::CostRow {
    r.rows
        .iter()
        .find(|x| x.key == key)
        .unwrap_or_else(|| panic!("no row {key} in {r:#?}"))
}

#[test]
fn otlp_exports_are_stored_once_and_foreign_or_garbage_ones_refused() {
    let env = Env::new();
    let _daemon = env.start("daemon");
    let _sidecar = env.start("sidecar");
    let port = env.daemon_port;
    let tok = token(&env);
    let bearer = format!("Bearer {tok}");
    let auth = ("Authorization", bearer.as_str());

    // The session's issue (SessionStart) and its sub-agent (SubagentStart), as the hooks
    // report them — the agent only after its first records arrived.
    let client = SidecarClient::new(env.sidecar_port).with_token(tok.clone());
    client
        .publish(
            &EventType::parse("session_started").unwrap(),
            &PublishRequest {
                publisher: "session".into(),
                topic: "session-s-1".into(),
                data: json!({"session_id": "s-1", "issue_id": "issue-9"}),
                correlation_id: None,
            },
        )
        .unwrap();

    // Protobuf: the main thread's request and the sub-agent's.
    let first = export(vec![
        api_request("s-1", 5, None, 100, 0.25),
        api_request("s-1", 6, Some("agent-7"), 200, 0.5),
    ])
    .encode_to_vec();
    let (status, ct, body) = post(
        port,
        "/v1/logs",
        &[auth, ("Content-Type", PROTOBUF)],
        &first,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, PROTOBUF);
    assert!(body.is_empty(), "an empty ExportLogsServiceResponse");

    // JSON, as the OTLP/JSON mapping has it (camelCase, hex ids, 64-bit ints as strings).
    let as_json = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": "1796000000000000007",
        "traceId": "5b8efff798038103d269b633813fc60c",
        "body": {"stringValue": "claude_code.api_request"},
        "attributes": [
            {"key": "session.id", "value": {"stringValue": "s-1"}},
            {"key": "event.sequence", "value": {"intValue": "7"}},
            {"key": "model", "value": {"stringValue": "claude-test"}},
            {"key": "agent_id", "value": {"stringValue": "agent-7"}},
            {"key": "input_tokens", "value": {"intValue": "300"}},
            {"key": "cost_usd", "value": {"doubleValue": 1.0}}
        ]
    }]}]}]});
    let (status, ct, body) = post(
        port,
        "/v1/logs",
        &[auth, ("Content-Type", JSON)],
        as_json.to_string().as_bytes(),
    );
    assert_eq!((status, ct.as_str()), (200, JSON));
    assert_eq!(body, b"{}");

    // gzip.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&export(vec![api_request("s-1", 8, None, 400, 2.0)]).encode_to_vec())
        .unwrap();
    let (status, _, _) = post(
        port,
        "/v1/logs",
        &[
            auth,
            ("Content-Type", PROTOBUF),
            ("Content-Encoding", "gzip"),
        ],
        &gz.finish().unwrap(),
    );
    assert_eq!(status, 200);

    // The exporter retries: the first export again counts once.
    let (status, _, _) = post(
        port,
        "/v1/logs",
        &[auth, ("Content-Type", PROTOBUF)],
        &first,
    );
    assert_eq!(status, 200);

    // A token of another installation, none, and garbage: refused, nothing stored.
    let foreign = cco::auth::Keys::new(&cco::secret::Secret::from_bytes(vec![9; 32]))
        .unwrap()
        .mint(&cco::auth::TokenSpec::session("x", Duration::from_secs(60)));
    let other = export(vec![api_request("s-1", 50, None, 9999, 99.0)]).encode_to_vec();
    let foreign = format!("Bearer {}", foreign.0);
    let (status, _, body) = post(
        port,
        "/v1/logs",
        &[("Authorization", &foreign), ("Content-Type", PROTOBUF)],
        &other,
    );
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = post(port, "/v1/logs", &[("Content-Type", PROTOBUF)], &other);
    assert_eq!(status, 401);
    let (status, _, body) = post(
        port,
        "/v1/logs",
        &[auth, ("Content-Type", PROTOBUF)],
        b"\xff\xff\xff\xff garbage",
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = post(
        port,
        "/v1/logs",
        &[auth, ("Content-Type", JSON)],
        b"{\"resourceLogs\":",
    );
    assert_eq!(status, 400);
    let (status, _, _) = post(
        port,
        "/v1/logs",
        &[auth, ("Content-Type", "text/plain")],
        b"x",
    );
    assert_eq!(status, 415);

    // Metrics are acknowledged.
    let metrics = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"claude_code.cost.usage","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{"asDouble":0.25}]}}]}]}]}"#;
    let (status, _, body) = post(
        port,
        "/v1/metrics",
        &[auth, ("Content-Type", JSON)],
        metrics,
    );
    assert_eq!((status, body.as_slice()), (200, &b"{}"[..]));

    // The sub-agent registers after its records: the join still finds it.
    client
        .set_agent_status(
            &AgentId::parse("agent-7").unwrap(),
            &AgentStatusUpdate {
                status: AgentState::Completed,
                agent_type: AgentType::parse("rust-specialist").unwrap(),
                issue_id: IssueId::parse("issue-9").unwrap(),
                message: None,
            },
        )
        .unwrap();

    let r: CostReport = cost_json(&env, &["--issue", "issue-9"]);
    assert_eq!(
        r.total.requests, 4,
        "the retried export counts once: {r:#?}"
    );
    let main = row(&r, "orchestrator");
    assert_eq!((main.sums.requests, main.sums.input_tokens), (2, 500));
    assert_eq!(main.sums.cost_usd, 2.25);
    let sub = row(&r, "rust-specialist");
    assert_eq!((sub.sums.requests, sub.sums.input_tokens), (2, 500));
    assert_eq!(sub.sums.cost_usd, 1.5);
    assert_eq!(sub.sums.output_tokens, 7, "the JSON record reported none");
    assert_eq!(r.rows[0].key, "orchestrator", "most expensive first");

    let by_model: CostReport = cost_json(&env, &["--by", "model"]);
    assert_eq!(by_model.rows.len(), 1);
    assert_eq!(by_model.rows[0].key, "claude-test");
    let later: CostReport = cost_json(&env, &["--since", "1796000000000000"]);
    assert_eq!(later.total.requests, 0, "all records are older");
    let none: CostReport = cost_json(&env, &["--issue", "issue-other"]);
    assert!(none.rows.is_empty());

    let o: CostOutcomes = cost_json(&env, &["--outcomes"]);
    assert_eq!(o.rows.len(), 1);
    assert_eq!(o.rows[0].issue, "issue-9");
    assert_eq!(o.rows[0].completed.agents, 1);
    assert_eq!(o.rows[0].completed.sums.cost_usd, 1.5);
    assert_eq!(o.rows[0].orchestrator.cost_usd, 2.25);

    let table = env.run(["cost", "--issue", "issue-9"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success());
    assert!(text.starts_with("AGENT-TYPE"), "{text}");
    assert!(
        text.contains("rust-specialist") && text.contains("$1.5000"),
        "{text}"
    );
    assert!(text.lines().last().unwrap().starts_with("TOTAL"), "{text}");

    let bad = env.run(["cost", "--since", "yesterday"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cco cost --since"));
}

/// How long Claude's exporter may take to deliver a finished session's records.
const EXPORT_WITHIN: Duration = Duration::from_secs(30);
/// Pause between two looks at `cco cost` while waiting for the export.
const POLL_EVERY: Duration = Duration::from_millis(200);

#[test]
fn a_real_session_reports_the_orchestrators_and_the_subagents_cost() {
    use crate::fake_anthropic::{
        FakeAnthropic, MAIN_USAGE, OUTPUT_TOKENS, Reply, Rules, SUBAGENT_USAGE,
    };
    let Some(claude) = crate::claude::real_claude() else {
        return;
    };
    let fake = FakeAnthropic::with_rules(
        Rules::new()
            .when(|c| c.is_subagent(), Reply::text("SUBAGENT-DONE"))
            .when(|c| c.has_tool_result(), Reply::text("MAIN-DONE"))
            .otherwise(Reply::tool_use(
                "Agent",
                r#"{"subagent_type":"rust-specialist","description":"Fix it","prompt":"Fix it.","run_in_background":false}"#,
            )),
    );
    let mut env = crate::e2e::env_for(&claude, &fake);
    // Small batches, so the records are not held for the default intervals.
    env.set("OTEL_LOGS_EXPORT_INTERVAL", "200")
        .set("OTEL_METRIC_EXPORT_INTERVAL", "500");
    let _daemon = env.start("daemon");
    let _sidecar = env.start("sidecar");
    let project = crate::e2e::project(&env);
    let out = crate::e2e::run_bounded(
        &env,
        &project,
        &["--issue", "cost-1", "-p", "fix the parser"],
        &fake,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "MAIN-DONE");

    let calls = fake.calls();
    let subs = calls.iter().filter(|c| c.is_subagent()).count() as u64;
    let mains = calls.len() as u64 - subs;
    assert!(subs >= 1 && mains >= 2, "{} calls", calls.len());

    // Ready when every request the fake answered has its record.
    let started = Instant::now();
    let report = loop {
        let r: CostReport = cost_json(&env, &["--issue", "cost-1"]);
        if r.total.requests >= calls.len() as u64 {
            break r;
        }
        assert!(
            started.elapsed() < EXPORT_WITHIN,
            "{} of {} requests reported after {EXPORT_WITHIN:?}: {r:#?}",
            r.total.requests,
            calls.len()
        );
        std::thread::sleep(POLL_EVERY);
    };
    assert_eq!(report.total.requests, calls.len() as u64, "{report:#?}");

    let main = row(&report, "orchestrator");
    assert_eq!(main.sums.requests, mains, "{report:#?}");
    assert_eq!(main.sums.input_tokens, MAIN_USAGE.0 * mains);
    assert_eq!(main.sums.cache_creation_tokens, MAIN_USAGE.1 * mains);
    assert_eq!(main.sums.cache_read_tokens, MAIN_USAGE.2 * mains);
    assert_eq!(main.sums.output_tokens, OUTPUT_TOKENS * mains);
    assert!(main.sums.cost_usd > 0.0, "{report:#?}");

    let sub = row(&report, "rust-specialist");
    assert_eq!(sub.sums.requests, subs, "{report:#?}");
    assert_eq!(sub.sums.input_tokens, SUBAGENT_USAGE.0 * subs);
    assert_eq!(sub.sums.cache_creation_tokens, SUBAGENT_USAGE.1 * subs);
    assert_eq!(sub.sums.cache_read_tokens, SUBAGENT_USAGE.2 * subs);
    assert_eq!(sub.sums.output_tokens, OUTPUT_TOKENS * subs);
    assert!(sub.sums.cost_usd > 0.0, "{report:#?}");

    // The sub-agent completed: its spend is the issue's completed spend.
    let o: CostOutcomes = cost_json(&env, &["--outcomes", "--issue", "cost-1"]);
    assert_eq!(o.rows[0].completed.agents, 1, "{o:#?}");
    assert_eq!(o.rows[0].completed.sums.requests, subs);
}

#[test]
fn the_launcher_points_claudes_telemetry_at_the_daemon_unless_the_user_exports_it() {
    use crate::launcher::{recorded, with_claude};
    let var = |envs: &str, k: &str| {
        envs.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(String::from)
    };

    let env = with_claude(Env::new());
    let _d = env.start("daemon");
    let out = env.run(["-p", "hi"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (argv, envs) = recorded(&env);
    let token = var(&envs, "ORCHESTRATOR_TOKEN").unwrap();
    let endpoint = format!("http://127.0.0.1:{}", env.daemon_port);
    assert_eq!(
        var(&envs, "CLAUDE_CODE_ENABLE_TELEMETRY").as_deref(),
        Some("1")
    );
    assert_eq!(var(&envs, "OTEL_LOGS_EXPORTER").as_deref(), Some("otlp"));
    assert_eq!(var(&envs, "OTEL_METRICS_EXPORTER").as_deref(), Some("otlp"));
    assert_eq!(
        var(&envs, "OTEL_EXPORTER_OTLP_PROTOCOL").as_deref(),
        Some("http/protobuf")
    );
    assert_eq!(var(&envs, "OTEL_EXPORTER_OTLP_ENDPOINT"), Some(endpoint));
    assert_eq!(
        var(&envs, "OTEL_EXPORTER_OTLP_HEADERS"),
        Some(format!("Authorization=Bearer {token}"))
    );
    assert!(!argv.iter().any(|a| a.contains(&token)), "token in argv");

    // The user's own export is kept, and one line says how to add cco.
    let mut theirs = with_claude(Env::new());
    theirs.set(
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "http://collector.invalid:4318/v1/logs",
    );
    let _d2 = theirs.start("daemon");
    let out = theirs.run(["-p", "hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (_, envs) = recorded(&theirs);
    assert_eq!(
        var(&envs, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").as_deref(),
        Some("http://collector.invalid:4318/v1/logs")
    );
    assert_eq!(var(&envs, "OTEL_EXPORTER_OTLP_ENDPOINT"), None);
    assert_eq!(var(&envs, "OTEL_EXPORTER_OTLP_HEADERS"), None);
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"))
        .collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(notes[0].contains("cco token"), "{stderr}");

    // `launcher.telemetry = false` (here through its variable) leaves it all out.
    let mut off = with_claude(Env::new());
    off.set("CCO_TELEMETRY", "false");
    let _d3 = off.start("daemon");
    off.run(["-p", "hi"]);
    let (_, envs) = recorded(&off);
    assert_eq!(var(&envs, "CLAUDE_CODE_ENABLE_TELEMETRY"), None);
    assert_eq!(var(&envs, "OTEL_EXPORTER_OTLP_ENDPOINT"), None);
}

/// With the sidecar down the export is answered 502, which Claude's exporter retries, and the
/// retry is stored once the sidecar is back.
#[test]
fn an_export_the_sidecar_cannot_take_is_retryable() {
    let env = Env::new();
    let _daemon = env.start("daemon");
    let tok = token(&env);
    let bearer = format!("Bearer {tok}");
    let body = export(vec![api_request("s-5", 1, None, 10, 0.5)]).encode_to_vec();
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", PROTOBUF),
    ];
    let (status, _, answer) = post(env.daemon_port, "/v1/logs", &headers, &body);
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("cco sidecar start"));

    let _sidecar = env.start("sidecar");
    let (status, _, _) = post(env.daemon_port, "/v1/logs", &headers, &body);
    assert_eq!(status, 200);
    let r: CostReport = cost_json(&env, &[]);
    assert_eq!(r.total.requests, 1);
    assert_eq!(r.total.cost_usd, 0.5);
}
