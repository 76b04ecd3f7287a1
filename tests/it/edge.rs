//! The services' network edge as real processes under hostile clients: connection floods,
//! slow and oversized request heads. Every loop is bounded in count and time; loopback only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{Env, get};

/// The descriptor limit the services run with here: a connection cap of (256 − 64) / 2 = 96.
const FD_LIMIT: u64 = 256;
/// Idle connections opened against that cap: three times what fits.
const FLOOD: usize = 300;
/// Connections that send a request head far beyond the 32 KiB limit and never finish it.
const OVERSIZED: usize = 50;
const OVERSIZED_HEAD_BYTES: usize = 100 * 1024;
/// How fast `/health` must answer under the flood.
const HEALTH_BUDGET: Duration = Duration::from_secs(2);
/// `/health` probes taken while the flood holds its connections.
const PROBES: usize = 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn connect(port: u16) -> TcpStream {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn timed_health(port: u16) -> Duration {
    let t0 = Instant::now();
    let (status, body) = get(port, "/health");
    let took = t0.elapsed();
    assert_eq!(status, 200, "{body}");
    took
}

/// A flood of idle connections three times the cap, plus clients stuck in oversized heads:
/// the service keeps answering `/health` quickly, refuses the oversized heads with 431, and
/// is healthy afterwards.
fn survives_a_flood(service: &str) {
    let env = Env::new();
    let svc = env.start_with_fd_limit(service, FD_LIMIT);
    let port = match service {
        "daemon" => env.daemon_port,
        _ => env.sidecar_port,
    };
    assert!(
        svc.log_text().contains("max_connections=96"),
        "{}",
        svc.log_text()
    );

    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(connect(port));
    }
    let mut worst = Duration::ZERO;
    for _ in 0..PROBES {
        worst = worst.max(timed_health(port));
    }
    assert!(
        worst < HEALTH_BUDGET,
        "{service}: /health took {worst:?} under {FLOOD} idle connections"
    );

    let mut oversized = Vec::with_capacity(OVERSIZED);
    for _ in 0..OVERSIZED {
        let mut s = connect(port);
        let mut head =
            format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Pad: ").into_bytes();
        head.resize(head.len() + OVERSIZED_HEAD_BYTES, b'a');
        // The service stops reading at its limit; a failed write is part of the refusal.
        let _ = s.write_all(&head);
        oversized.push(s);
    }
    let mut refused = 0;
    for mut s in oversized {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        if String::from_utf8_lossy(&got).contains(" 431 ") {
            refused += 1;
        }
    }
    // One that the cap evicted before it was answered is closed without a 431: also fine.
    assert!(
        refused >= OVERSIZED / 2,
        "{service}: only {refused} of {OVERSIZED} oversized heads were refused with 431"
    );

    let worst_after = timed_health(port);
    assert!(worst_after < HEALTH_BUDGET, "{service}: {worst_after:?}");
    drop(flood);
    let (status, _) = get(port, "/health");
    assert_eq!(status, 200, "{}", svc.log_text());
}

#[test]
fn the_daemon_survives_a_connection_flood_and_oversized_heads() {
    survives_a_flood("daemon");
}

#[test]
fn the_sidecar_survives_a_connection_flood_and_oversized_heads() {
    survives_a_flood("sidecar");
}
