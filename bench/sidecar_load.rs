//! Load generator for the sidecar (run by `bench/sidecar.sh`): 119 concurrent agents on
//! keep-alive connections measure warm context latency, durable result writes per second,
//! and publish → woken-waiter latency. Prints one `key value` line per number.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type HttpClient = Client<HttpConnector, Body>;

struct Target {
    client: HttpClient,
    port: u16,
    token: String,
}

impl Target {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, bytes) = self.call_raw(method, path, body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The status and body bytes, unparsed (context answers are large; parsing them would
    /// measure the client).
    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, axum::body::Bytes) {
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
        (status, bytes)
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
    let agents: usize = arg("--agents", "119").parse().expect("--agents N");
    let target = Arc::new(Target {
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        port: arg("--port", "3001").parse().expect("--port PORT"),
        token: arg("--token", ""),
    });
    let types: Vec<String> = (0..agents).map(|i| format!("agent-type-{i:03}")).collect();

    // 1. Warm context: every agent type's context is built (cold) before any timing starts,
    //    so cold builds do not compete with the warm requests being measured; then timed
    //    fetches — first paced (each agent asks every ~100 ms, as busy agents do), then
    //    saturated (back to back).
    let mut cold = Vec::new();
    for ty in &types {
        let t = target.clone();
        let path = format!("/api/context/bench-issue/{ty}");
        cold.push(tokio::spawn(async move {
            let (status, bytes) = t.call_raw("GET", &path, None).await;
            assert_eq!(status, 200);
            bytes.len()
        }));
    }
    let mut size = 0;
    for c in cold {
        size = c.await.unwrap();
    }
    for (label, pause_ms, rounds) in [("context", 100u64, 30), ("context_saturated", 0, 30)] {
        let mut tasks = Vec::new();
        for (i, ty) in types.iter().cloned().enumerate() {
            let t = target.clone();
            tasks.push(tokio::spawn(async move {
                let path = format!("/api/context/bench-issue/{ty}");
                // Spread the agents over the pause so they do not move in lockstep.
                tokio::time::sleep(Duration::from_millis(pause_ms * i as u64 / 119)).await;
                let mut lat = Vec::new();
                for _ in 0..rounds {
                    let s = Instant::now();
                    let (status, _) = t.call_raw("GET", &path, None).await;
                    lat.push(s.elapsed());
                    assert_eq!(status, 200);
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        lat.sort();
        println!("{label}_requests {} (answer {size} bytes)", lat.len());
        println!("{label}_p50_ms {:.3}", percentile(&lat, 0.50));
        println!("{label}_p99_ms {:.3}", percentile(&lat, 0.99));
    }

    // 2. Durable result writes: each agent stores 40 results (distinct issues).
    let per_agent = 40;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, ty) in types.iter().cloned().enumerate() {
        let t = target.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..per_agent {
                let body = json!({
                    "agent_id": format!("{ty}-1"), "agent_type": ty,
                    "issue_id": format!("bench-{k}"),
                    "result": {"status": "success", "agent": i, "files_created": ["a.rs", "b.rs"]}
                });
                let (status, resp) = t.call("POST", "/api/results", Some(body)).await;
                assert_eq!(status, 201, "{resp}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let writes = (agents * per_agent) as f64;
    println!("results_writes {writes}");
    println!("results_writes_per_sec {:.0}", writes / secs);

    // 3. Publish → woken waiter: every agent long-polls its own topic; one publisher sends
    //    events round-robin, stamping the send time; waiters measure arrival.
    let epoch = Instant::now();
    let (_, status) = target.call("GET", "/status", None).await;
    let cursor = status["events"]["total_published"].as_u64().unwrap_or(0);
    let events_per_agent = 10;
    let mut waiters = Vec::new();
    for ty in types.clone() {
        let t = target.clone();
        waiters.push(tokio::spawn(async move {
            let mut since = cursor;
            let mut lat = Vec::new();
            while lat.len() < events_per_agent {
                let path = format!(
                    "/api/events/wait/bench_tick?since={since}&filter=topic:{ty}&timeout=30000"
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
    // Let every waiter park first (they ask with `since`, so none can miss an event anyway).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for k in 0..events_per_agent {
        for ty in &types {
            let body = json!({
                "publisher": "bench", "topic": ty,
                "data": {"sent_us": epoch.elapsed().as_micros() as u64, "k": k}
            });
            let (status, _) = target
                .call("POST", "/api/events/bench_tick", Some(body))
                .await;
            assert_eq!(status, 201);
        }
    }
    let mut lat = Vec::new();
    for w in waiters {
        lat.extend(w.await.unwrap());
    }
    lat.sort();
    println!("wake_events {}", lat.len());
    println!("wake_p50_ms {:.3}", percentile(&lat, 0.50));
    println!("wake_p99_ms {:.3}", percentile(&lat, 0.99));

    // 4. Fill the journal to 10,000+ events for the RSS measurement.
    let (_, status) = target.call("GET", "/status", None).await;
    let have = status["events"]["total_published"].as_u64().unwrap_or(0);
    let missing = 10_000u64.saturating_sub(have);
    let mut tasks = Vec::new();
    for w in 0..agents as u64 {
        let t = target.clone();
        let n = missing / agents as u64 + 1;
        tasks.push(tokio::spawn(async move {
            for k in 0..n {
                let body =
                    json!({"publisher": "bench", "topic": format!("fill-{w}"), "data": {"k": k}});
                assert_eq!(t.call("POST", "/api/events/fill", Some(body)).await.0, 201);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, status) = target.call("GET", "/status", None).await;
    println!(
        "events_total {}",
        status["events"]["total_published"].as_u64().unwrap_or(0)
    );
}
