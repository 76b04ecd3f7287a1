//! OTLP ingest throughput: posts protobuf `/v1/logs` exports of `claude_code.api_request`
//! records to a running daemon (which forwards them to the sidecar, which stores them) and
//! prints `records_per_second N`. Bounded in exports and in time; loopback only.
//!
//! `CCO_DAEMON_PORT=… CCO_TOKEN=$(cco token) cargo run --example otlp_ingest`

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Any};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;

/// Exports sent, records in each (Claude's exporter batches up to 512 log records).
const EXPORTS: usize = 100;
const RECORDS_PER_EXPORT: usize = 200;
/// The run stops here even if exports remain.
const TIME_LIMIT: Duration = Duration::from_secs(120);

fn kv(key: &str, v: Any) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..KeyValue::default()
    }
}

fn export(run: u64, n: usize) -> Vec<u8> {
    let s = |v: &str| Any::StringValue(v.into());
    let records = (0..RECORDS_PER_EXPORT)
        .map(|i| {
            let seq = (n * RECORDS_PER_EXPORT + i) as i64;
            LogRecord {
                time_unix_nano: 1_796_000_000_000_000_000 + seq as u64,
                body: Some(AnyValue {
                    value: Some(s("claude_code.api_request")),
                }),
                attributes: vec![
                    kv("session.id", s(&format!("bench-{run}"))),
                    kv("event.name", s("api_request")),
                    kv("event.sequence", Any::IntValue(seq)),
                    kv("prompt.id", s("prompt")),
                    kv("model", s("claude-bench")),
                    kv("input_tokens", Any::IntValue(100)),
                    kv("output_tokens", Any::IntValue(50)),
                    kv("cache_read_tokens", Any::IntValue(10)),
                    kv("cache_creation_tokens", Any::IntValue(5)),
                    kv("cost_usd", Any::DoubleValue(0.001)),
                    kv("duration_ms", Any::IntValue(900)),
                    kv("agent_id", s(&format!("agent-{}", i % 20))),
                ],
                ..LogRecord::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec()
}

fn post(port: u16, token: &str, body: &[u8]) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("daemon listens");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let port: u16 = std::env::var("CCO_DAEMON_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let token = std::env::var("CCO_TOKEN").expect("CCO_TOKEN=$(cco token)");
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let bodies: Vec<Vec<u8>> = (0..EXPORTS).map(|n| export(run, n)).collect();
    let started = Instant::now();
    let mut sent = 0;
    for body in &bodies {
        let status = post(port, &token, body);
        assert_eq!(status, 200, "export refused");
        sent += RECORDS_PER_EXPORT;
        if started.elapsed() > TIME_LIMIT {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("exports {}", sent / RECORDS_PER_EXPORT);
    println!("records {sent}");
    println!("export_bytes {}", bodies[0].len());
    println!("seconds {secs:.2}");
    println!("records_per_second {:.0}", sent as f64 / secs);
}
