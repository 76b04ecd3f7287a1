//! Soak load (run by `bench/soak.sh`): 1,000 open long polls (half through the daemon, half
//! straight to the sidecar) plus a steady mix of publishes, result writes, health and status
//! reads, for a fixed time. Prints one `soak` line per interval and a `total` line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type HttpClient = Client<HttpConnector, Body>;

/// How long each long poll may wait before it is answered empty (then it polls again).
const POLL_TIMEOUT_MS: u64 = 20_000;
/// Pause between two operations of one mixed-load worker (keeps the load steady, not flat out).
const WORKER_PAUSE: Duration = Duration::from_millis(20);
/// Mixed-load workers.
const WORKERS: usize = 8;
/// Per-request bound: nothing may hang the soak.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(POLL_TIMEOUT_MS / 1000 + 10);

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
    wakeups: AtomicU64,
    events_seen: AtomicU64,
}

struct Args {
    daemon_port: u16,
    sidecar_port: u16,
    token: String,
    secs: u64,
    polls: usize,
    every: u64,
}

fn args() -> Args {
    let mut a = Args {
        daemon_port: 0,
        sidecar_port: 0,
        token: String::new(),
        secs: 600,
        polls: 1000,
        every: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--daemon-port" => a.daemon_port = v.parse().unwrap(),
            "--sidecar-port" => a.sidecar_port = v.parse().unwrap(),
            "--token" => a.token = v,
            "--secs" => a.secs = v.parse().unwrap(),
            "--polls" => a.polls = v.parse().unwrap(),
            "--every" => a.every = v.parse().unwrap(),
            _ => panic!("unknown argument {k}"),
        }
    }
    assert!(a.daemon_port > 0 && a.sidecar_port > 0 && !a.token.is_empty());
    a
}

async fn call(
    client: &HttpClient,
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("host", format!("127.0.0.1:{port}"))
        .header("authorization", format!("Bearer {token}"));
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let req = req.body(body).map_err(|e| e.to_string())?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| format!("{method} {path}: no answer in {REQUEST_TIMEOUT:?}"))?
}

fn note_error(c: &Counters, what: &str) {
    // The first few errors are printed; the count says the rest.
    if c.errors.fetch_add(1, Ordering::Relaxed) < 10 {
        eprintln!("error: {what}");
    }
}

#[tokio::main]
async fn main() {
    let a = Arc::new(args());
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(a.polls + WORKERS)
        .build_http();
    let c = Arc::new(Counters::default());
    let deadline = Instant::now() + Duration::from_secs(a.secs);

    let mut tasks = Vec::new();
    for i in 0..a.polls {
        let (a, c, client) = (a.clone(), c.clone(), client.clone());
        let port = if i % 2 == 0 {
            a.daemon_port
        } else {
            a.sidecar_port
        };
        tasks.push(tokio::spawn(async move {
            let mut since: Option<u64> = None;
            while Instant::now() < deadline {
                let path = match since {
                    Some(s) => {
                        format!("/api/events/wait/soak_tick?since={s}&timeout={POLL_TIMEOUT_MS}")
                    }
                    None => format!("/api/events/wait/soak_tick?timeout={POLL_TIMEOUT_MS}"),
                };
                match call(&client, port, &a.token, "GET", &path, None).await {
                    Ok((200, v)) => {
                        c.ok.fetch_add(1, Ordering::Relaxed);
                        let n = v["events"].as_array().map_or(0, |e| e.len()) as u64;
                        if n > 0 {
                            c.wakeups.fetch_add(1, Ordering::Relaxed);
                            c.events_seen.fetch_add(n, Ordering::Relaxed);
                        }
                        since = v["next_since"].as_u64().or(since);
                    }
                    Ok((s, v)) => note_error(&c, &format!("wait {s}: {v}")),
                    Err(e) => note_error(&c, &e),
                }
            }
        }));
    }

    for w in 0..WORKERS {
        let (a, c, client) = (a.clone(), c.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let mut n: u64 = 0;
            while Instant::now() < deadline {
                n += 1;
                let port = if n.is_multiple_of(2) {
                    a.daemon_port
                } else {
                    a.sidecar_port
                };
                let (method, path, body, want) = match n % 4 {
                    0 => (
                        "POST",
                        "/api/events/soak_tick".to_string(),
                        Some(json!({"publisher": format!("soak-{w}"), "topic": "soak", "data": {"n": n}})),
                        201,
                    ),
                    1 => (
                        "POST",
                        "/api/results".to_string(),
                        Some(json!({"agent_id": format!("soak-{w}"), "agent_type": "soak-agent",
                            "issue_id": format!("soak-{}", n % 50), "result": {"status": "success", "n": n}})),
                        201,
                    ),
                    2 => ("GET", "/health".to_string(), None, 200),
                    _ => ("GET", "/status".to_string(), None, 200),
                };
                match call(&client, port, &a.token, method, &path, body).await {
                    Ok((s, _)) if s == want || (method == "POST" && s == 200) => {
                        c.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((s, v)) => note_error(&c, &format!("{method} {path} {s}: {v}")),
                    Err(e) => note_error(&c, &e),
                }
                tokio::time::sleep(WORKER_PAUSE).await;
            }
        }));
    }

    let started = Instant::now();
    let reporter = {
        let c = c.clone();
        let every = a.every;
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(every)).await;
                println!(
                    "soak t={}s ok={} errors={} wakeups={} events_seen={}",
                    started.elapsed().as_secs(),
                    c.ok.load(Ordering::Relaxed),
                    c.errors.load(Ordering::Relaxed),
                    c.wakeups.load(Ordering::Relaxed),
                    c.events_seen.load(Ordering::Relaxed),
                );
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    reporter.abort();
    println!(
        "total secs={} ok={} errors={} wakeups={} events_seen={}",
        started.elapsed().as_secs(),
        c.ok.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        c.wakeups.load(Ordering::Relaxed),
        c.events_seen.load(Ordering::Relaxed),
    );
}
