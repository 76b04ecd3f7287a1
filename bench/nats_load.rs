//! Load generator for `bench/nats.sh`: publish → woken waiter latency within one installation
//! and across two (waiters on B, publisher on A), durable publishes/s with 16 publishers and
//! result writes/s, against whatever store the sidecars use. One `key value` line per number.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type HttpClient = Client<HttpConnector, Body>;

/// Concurrent publishers (and result writers) in the throughput runs, as the issue asks.
const PUBLISHERS: usize = 16;
/// Waiters parked on their own topics in the wake runs.
const WAITERS: usize = 16;
/// Events each waiter must receive in one wake run.
const EVENTS_PER_WAITER: usize = 20;
/// How long the waiters get to park before the first publish (they ask with `since`, so
/// none can miss an event; this only keeps parking out of the measurement).
const PARK: Duration = Duration::from_millis(300);
/// Upper bound of a whole run, so a stuck store ends the bench instead of hanging it.
const RUN_DEADLINE: Duration = Duration::from_secs(300);

struct Target {
    client: HttpClient,
    port: u16,
    token: String,
}

impl Target {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port))
            .header("authorization", format!("Bearer {}", self.token));
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .client
            .request(req.body(body).expect("request"))
            .await
            .expect("sidecar answers");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn head(&self) -> u64 {
        // A wait that returns at once with the current cursor.
        let (status, body) = self
            .call("GET", "/api/events/wait/bench_head?since=0&timeout=0", None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["next_since"].as_u64().unwrap_or(0)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn target(port: &str, token: &str) -> Option<Arc<Target>> {
    Some(Arc::new(Target {
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        port: arg(port)?.parse().expect("a port"),
        token: arg(token).unwrap_or_default(),
    }))
}

/// Waiters on `waiter_side` long-poll their own topics; one publisher on `publisher_side`
/// sends events round-robin stamped with the send time; waiters measure arrival.
async fn wake(label: &'static str, publisher_side: Arc<Target>, waiter_side: Arc<Target>) {
    let epoch = Instant::now();
    let cursor = waiter_side.head().await;
    let mut waiters = Vec::new();
    for w in 0..WAITERS {
        let t = waiter_side.clone();
        waiters.push(tokio::spawn(async move {
            let mut since = cursor;
            let mut lat = Vec::new();
            while lat.len() < EVENTS_PER_WAITER {
                let path = format!(
                    "/api/events/wait/bench_tick?since={since}&filter=topic:{label}-{w}&timeout=30000"
                );
                let (status, batch) = t.call("GET", &path, None).await;
                let now = epoch.elapsed();
                assert_eq!(status, 200, "{batch}");
                for e in batch["events"].as_array().unwrap() {
                    let sent = Duration::from_micros(e["data"]["sent_us"].as_u64().unwrap());
                    lat.push(now.saturating_sub(sent));
                }
                since = batch["next_since"].as_u64().unwrap();
            }
            lat
        }));
    }
    tokio::time::sleep(PARK).await;
    for k in 0..EVENTS_PER_WAITER {
        for w in 0..WAITERS {
            let body = json!({
                "publisher": "bench", "topic": format!("{label}-{w}"),
                "data": {"sent_us": epoch.elapsed().as_micros() as u64, "k": k}
            });
            let (status, resp) = publisher_side
                .call("POST", "/api/events/bench_tick", Some(body))
                .await;
            assert_eq!(status, 201, "{resp}");
        }
    }
    let mut lat = Vec::new();
    for w in waiters {
        lat.extend(w.await.unwrap());
    }
    lat.sort();
    println!("{label}_events {}", lat.len());
    println!("{label}_p50_ms {:.3}", percentile(&lat, 0.50));
    println!("{label}_p99_ms {:.3}", percentile(&lat, 0.99));
}

/// `PUBLISHERS` tasks each send `per_task` requests built by `body` to `path`; prints the rate.
async fn throughput(
    label: &str,
    t: Arc<Target>,
    path: &'static str,
    per_task: usize,
    body: fn(usize, usize) -> Value,
) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..per_task {
                let (status, resp) = t.call("POST", path, Some(body(p, k))).await;
                assert_eq!(status, 201, "{resp}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let n = (PUBLISHERS * per_task) as f64;
    println!("{label} {n}");
    println!("{label}_per_sec {:.0}", n / start.elapsed().as_secs_f64());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = target("--port", "--token").expect("--port PORT --token JWT");
    let b = target("--port-b", "--token-b");
    let per_task: usize = arg("--per-task").map_or(250, |n| n.parse().expect("--per-task N"));
    let run = async {
        wake("wake_local", a.clone(), a.clone()).await;
        if let Some(b) = &b {
            wake("wake_cross", a.clone(), b.clone()).await;
        }
        throughput("publishes", a.clone(), "/api/events/bench_load", per_task, |p, k| {
            json!({"publisher": format!("bench-{p}"), "topic": format!("load-{p}"), "data": {"k": k}})
        })
        .await;
        throughput(
            "results_writes",
            a.clone(),
            "/api/results",
            per_task / 2,
            |p, k| {
                json!({
                    "agent_id": format!("bench-agent-{p}"), "agent_type": format!("bench-type-{p}"),
                    "issue_id": format!("bench-{k}"),
                    "result": {"status": "success", "k": k, "files_created": ["a.rs", "b.rs"]}
                })
            },
        )
        .await;
    };
    tokio::time::timeout(RUN_DEADLINE, run)
        .await
        .expect("the bench finished within its deadline");
}
