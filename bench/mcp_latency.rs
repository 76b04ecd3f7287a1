//! Tool-call latency through the daemon's `/mcp` (run by `bench/mcp.sh`): one client on a
//! keep-alive connection, sequential calls, and the same publish over REST for reference;
//! then the http hooks with and without the inbox push (PreToolUse vs PostToolUse).
//! Prints one `key value` line per number (milliseconds).

use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Most calls per measured tool, whatever `--calls` says.
const MAX_CALLS: usize = 5_000;
/// The whole run stops after this, finished or not.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Calls made and thrown away before timing (connection set-up, caches).
const WARMUP: usize = 20;

struct Target {
    client: Client<HttpConnector, Body>,
    daemon: u16,
    token: String,
    issue: String,
}

impl Target {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let req = axum::http::Request::builder()
            .method("POST")
            .uri(format!("http://127.0.0.1:{}{path}", self.daemon))
            .header("authorization", format!("Bearer {}", self.token))
            .header("x-cco-issue", &self.issue)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(Body::from(body.to_string()))
            .expect("request");
        let resp = self.client.request(req).await.expect("daemon answers");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn tool(&self, name: &str, arguments: Value) {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": name, "arguments": arguments}});
        let (status, answer) = self.post("/mcp", body).await;
        assert_eq!(status, 200, "{answer}");
        assert_ne!(answer["result"]["isError"], true, "{answer}");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls: usize = arg("--calls", "1000")
        .parse::<usize>()
        .expect("--calls N")
        .min(MAX_CALLS);
    let t = Target {
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        daemon: arg("--port", "3000").parse().expect("--port PORT"),
        token: arg("--token", ""),
        issue: arg("--issue", "bench-mcp"),
    };
    let started = Instant::now();
    let publish =
        json!({"event_type": "bench", "topic": "bench", "data": {"n": 1}, "agent": "bench-1"});
    // The wait finds exactly one event ready (published before, on its own type): the cost of
    // a wait that returns at once, not of a large batch.
    let ready = json!({"event_type": "bench_ready", "topic": "bench", "agent": "bench-1"});
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "publish", "arguments": ready}});
    let (_, answer) = t.post("/mcp", body).await;
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or("{}");
    let seq = serde_json::from_str::<Value>(text).expect("publish answer")["seq"]
        .as_u64()
        .expect("seq");
    let wait = json!({"event_type": "bench_ready", "since": seq - 1, "timeout_ms": 1000});
    let cases: [(&str, &str, Value); 6] = [
        ("mcp_publish", "publish", publish),
        ("mcp_agents", "agents", json!({})),
        ("mcp_wait_ready", "wait", wait),
        ("mcp_inbox_empty", "inbox", json!({"agent": "bench-2"})),
        ("mcp_reservations", "reservations", json!({})),
        (
            "mcp_reserve",
            "reserve",
            json!({"agent": "bench-1", "paths": ["src/lib.rs"], "ttl_secs": 60}),
        ),
    ];
    for (label, tool, args) in cases {
        for _ in 0..WARMUP {
            t.tool(tool, args.clone()).await;
        }
        let mut lat = Vec::with_capacity(calls);
        for _ in 0..calls {
            if started.elapsed() > RUN_LIMIT {
                break;
            }
            let s = Instant::now();
            t.tool(tool, args.clone()).await;
            lat.push(s.elapsed());
        }
        lat.sort();
        println!("{label}_calls {}", lat.len());
        println!("{label}_p50_ms {:.3}", percentile(&lat, 0.50));
        println!("{label}_p99_ms {:.3}", percentile(&lat, 0.99));
    }

    // The http hooks: PreToolUse of a read (the policy alone, no sidecar call) against
    // PostToolUse (the inbox check) with nothing new, with nothing new for it while the
    // journal moves on (an event for another agent before each call), and with one event
    // for it each time.
    let read = json!({"session_id": "bench", "hook_event_name": "PreToolUse", "cwd": "/tmp",
        "agent_id": "bench-2", "agent_type": "bench",
        "tool_name": "Read", "tool_input": {"file_path": "/tmp/x"}});
    let mut post = read.clone();
    post["hook_event_name"] = json!("PostToolUse");
    let hooks = [
        ("hook_pre_tool_use", "/hooks/pre-tool-use", &read, None),
        (
            "hook_post_tool_use_empty",
            "/hooks/post-tool-use",
            &post,
            None,
        ),
        (
            "hook_post_tool_use_others_mail",
            "/hooks/post-tool-use",
            &post,
            Some("bench-9"),
        ),
        (
            "hook_post_tool_use_one_event",
            "/hooks/post-tool-use",
            &post,
            Some("bench-2"),
        ),
    ];
    for (label, path, input, event_to) in hooks {
        let mut lat = Vec::with_capacity(calls);
        let mut pushed = 0;
        for i in 0..calls + WARMUP {
            if started.elapsed() > RUN_LIMIT {
                break;
            }
            if let Some(topic) = event_to {
                let mail = json!({"publisher": "bench-1", "topic": topic, "data": {"n": 1}});
                let (status, answer) = t.post("/api/events/bench_mail", mail).await;
                assert_eq!(status, 201, "{answer}");
            }
            let s = Instant::now();
            let (status, answer) = t.post(path, input.clone()).await;
            let took = s.elapsed();
            assert_eq!(status, 200, "{answer}");
            if answer["hookSpecificOutput"]["additionalContext"].is_string() {
                pushed += 1;
            }
            if i >= WARMUP {
                lat.push(took);
            }
        }
        lat.sort();
        println!("{label}_calls {}", lat.len());
        println!("{label}_pushed {pushed}");
        println!("{label}_p50_ms {:.3}", percentile(&lat, 0.50));
        println!("{label}_p99_ms {:.3}", percentile(&lat, 0.99));
    }

    // The same publish through the daemon's REST forwarder, for reference.
    let rest = json!({"publisher": "bench-1", "topic": "bench", "data": {"n": 1}});
    let mut lat = Vec::with_capacity(calls);
    for i in 0..calls + WARMUP {
        if started.elapsed() > RUN_LIMIT {
            break;
        }
        let s = Instant::now();
        let (status, answer) = t.post("/api/events/bench", rest.clone()).await;
        assert_eq!(status, 201, "{answer}");
        if i >= WARMUP {
            lat.push(s.elapsed());
        }
    }
    lat.sort();
    println!("rest_publish_calls {}", lat.len());
    println!("rest_publish_p50_ms {:.3}", percentile(&lat, 0.50));
    println!("rest_publish_p99_ms {:.3}", percentile(&lat, 0.99));
}
