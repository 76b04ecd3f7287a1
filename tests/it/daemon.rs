//! The daemon as a real process: self-bound and socket-activated, health/status, guards,
//! sealed files, config errors, graceful and idle exit.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Env, get, http};

#[test]
fn self_bound_daemon_serves_health_and_status_and_stops_on_sigterm() {
    let env = Env::new();
    let mut d = env.start_bound("daemon");
    let (status, body) = get(env.daemon_port, "/health");
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["service"], "cco-daemon");
    assert_eq!(h["runtime_dir"], env.runtime_dir().display().to_string());
    assert_eq!(h["settings_generation"], 1);
    assert!(h["uptime_seconds"].is_u64() && h["version"].is_string());

    let (status, body) = get(env.daemon_port, "/status");
    assert_eq!(status, 200);
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["listener"], "bound");
    assert_eq!(s["pid"], d.pid());
    assert!(s["requests_served"].as_u64().unwrap() >= 1);
    assert!(s["memory_rss_mb"].as_f64().unwrap() > 0.0);

    // First start wrote the commented default config and the secret.
    let cfg = std::fs::read_to_string(env.config_file()).unwrap();
    assert!(cfg.contains("# [daemon]"));
    assert!(env.config_dir().join("secret").exists());

    assert!(d.terminate().success(), "{}", d.log_text());
}

#[test]
fn socket_activated_daemon_uses_the_inherited_listener() {
    let env = Env::new();
    let listener = TcpListener::bind(("127.0.0.1", env.daemon_port)).unwrap();
    let d = env.start_activated("daemon", listener);
    let (status, body) = get(env.daemon_port, "/status");
    assert_eq!(status, 200, "{body}\n{}", d.log_text());
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["listener"], "systemd");
}

#[test]
fn restart_keeps_the_seal_generation_when_nothing_changed() {
    let env = Env::new();
    let mut d = env.start("daemon");
    d.terminate();
    drop(d);
    let _d = env.start("daemon");
    let (_, body) = get(env.daemon_port, "/health");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        h["settings_generation"], 1,
        "unchanged files were rewritten"
    );
}

#[test]
fn foreign_host_and_origin_are_refused() {
    let env = Env::new();
    let _d = env.start("daemon");
    let (status, body) = http(
        env.daemon_port,
        "GET",
        "/health",
        &[("Host", "evil.example:80")],
        None,
    );
    assert_eq!(status, 403, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["code"], "forbidden_host");
    let (status, _) = http(
        env.daemon_port,
        "GET",
        "/health",
        &[("Origin", "http://evil.example")],
        None,
    );
    assert_eq!(status, 403);
    let origin = format!("http://localhost:{}", env.daemon_port);
    let host = format!("localhost:{}", env.daemon_port);
    let (status, _) = http(
        env.daemon_port,
        "GET",
        "/health",
        &[("Host", &host), ("Origin", &origin)],
        None,
    );
    assert_eq!(status, 200);
}

#[test]
fn port_in_use_is_a_clear_error() {
    let env = Env::new();
    let _taken = TcpListener::bind(("127.0.0.1", env.daemon_port)).unwrap();
    let out = env.run(["daemon", "run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "port {} on 127.0.0.1 is already in use",
            env.daemon_port
        )),
        "{err}"
    );
    assert!(err.contains("daemon.port"), "{err}");
}

#[test]
fn malformed_config_names_file_line_and_key() {
    let env = Env::new();
    std::fs::create_dir_all(env.config_dir()).unwrap();
    std::fs::write(env.config_file(), "[daemon]\nport = 3000\nbogus_key = 1\n").unwrap();
    let out = env.run(["daemon", "run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&env.config_file().display().to_string()),
        "{err}"
    );
    assert!(err.contains("line 3") && err.contains("bogus_key"), "{err}");
}

#[test]
fn idle_exit_after_the_last_connection_closes() {
    let mut env = Env::new();
    env.set("CCO_IDLE_EXIT_AFTER", "1s");
    let mut d = env.start("daemon");
    let (status, _) = get(env.daemon_port, "/health");
    assert_eq!(status, 200);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "daemon did not exit when idle"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", d.log_text());
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "exited before the idle period"
    );
}

#[test]
fn api_is_forwarded_and_a_down_sidecar_is_a_502() {
    let env = Env::new();
    let _d = env.start("daemon");
    let (status, body) = get(env.daemon_port, "/api/agents");
    assert_eq!(status, 502, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["code"], "sidecar_unavailable");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&env.sidecar_port.to_string())
    );
}

#[test]
fn port_zero_and_out_of_range_values_are_refused() {
    let env = Env::new();
    for service in ["daemon", "sidecar"] {
        let out = env.run([service, "run", "--port", "0"]);
        assert_eq!(out.status.code(), Some(2), "{service}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--port") && err.contains("0"), "{err}");
    }
    std::fs::create_dir_all(env.config_dir()).unwrap();
    std::fs::write(env.config_file(), "[hooks]\ntimeout_ms = 0\n").unwrap();
    let out = env.run(["daemon", "run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = env.config_file().display().to_string();
    assert!(
        err.contains(&format!("bad config file {file}: hooks.timeout_ms is 0"))
            && err.contains(&format!("fix `hooks.timeout_ms` in {file}")),
        "{err}"
    );
}

/// A socket unit may listen on another port than the config's (a `ListenStream=` drop-in):
/// both services answer on the socket's port and log that one.
#[test]
fn socket_activation_on_another_port_than_the_configured_one() {
    let env = Env::new();
    for (service, configured) in [("daemon", env.daemon_port), ("sidecar", env.sidecar_port)] {
        let mut other = crate::common::free_port();
        while other == env.daemon_port || other == env.sidecar_port {
            other = crate::common::free_port();
        }
        let listener = TcpListener::bind(("127.0.0.1", other)).unwrap();
        let svc = env.start_activated(service, listener);
        let (status, body) = get(other, "/health");
        assert_eq!(status, 200, "{service}: {body}\n{}", svc.log_text());
        let log = svc.log_text();
        assert!(
            log.contains(&format!("port={other}"))
                && log.contains(&format!("configured={configured}")),
            "{service}: {log}"
        );
        if service == "daemon" {
            let (_, body) = get(other, "/status");
            let s: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(s["port"], other);
        }
    }
}

/// Two daemons on one runtime dir would rewrite each other's sealed files: the second one
/// refuses to start, naming the first one's pid and what to do.
#[test]
fn a_second_daemon_on_the_same_runtime_dir_is_refused() {
    let env = Env::new();
    let first = env.start("daemon");
    let other_port = crate::common::free_port().to_string();
    let out = env
        .cmd(["daemon", "run", "--port", &other_port])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", first.pid()))
            && err.contains(&env.runtime_dir().display().to_string())
            && err.contains("cco daemon stop"),
        "{err}"
    );
    let (status, _) = get(env.daemon_port, "/health");
    assert_eq!(status, 200, "the first daemon was disturbed");
}
