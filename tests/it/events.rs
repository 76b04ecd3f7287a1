//! `cco events`: following survives a sidecar restart without losing or repeating events,
//! filters reach the sidecar intact, and refusals say why.

use std::io::BufRead;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::Env;

/// How long a followed event may take to be printed before the test fails.
const PRINT_TIMEOUT: Duration = Duration::from_secs(20);

fn token(env: &Env) -> String {
    let out = env.run(["token", "--ttl", "10m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn publish(env: &Env, token: &str, topic: &str, n: u64) -> u64 {
    let auth = format!("Bearer {token}");
    let body = json!({"publisher": "tester", "topic": topic, "data": {"n": n}}).to_string();
    let (status, ev) = crate::common::http(
        env.sidecar_port,
        "POST",
        "/api/events/step_done",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(&body),
    );
    assert_eq!(status, 201, "{ev}");
    serde_json::from_str::<Value>(&ev).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_follower_survives_a_sidecar_restart() {
    let env = Env::new();
    let _daemon = env.start("daemon");
    let mut sidecar = env.start("sidecar");
    let token = token(&env);
    // A topic with a space and query syntax in it must reach the sidecar as one value.
    let topic = "a b&since=0#x";
    publish(&env, &token, topic, 0); // before the follower: not printed
    let mut follower = env
        .cmd(["events", "-f", "--json", "--topic", topic])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<Value>();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        lines
            .recv_timeout(PRINT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{what} was not printed: {e}"))
    };
    // The stream is open once an event published now is printed: publish until one is,
    // then read up to the last one published.
    let mut last;
    let mut n = 1;
    let mut got = loop {
        publish(&env, &token, "another-topic", 99);
        last = publish(&env, &token, topic, n);
        n += 1;
        if let Ok(v) = lines.recv_timeout(Duration::from_millis(200)) {
            break v;
        }
        assert!(n < 100, "the follower printed nothing");
    };
    while got["seq"] != last {
        assert_eq!(got["topic"], topic, "only the topic asked for: {got}");
        got = next("an event published before the restart");
    }

    sidecar.terminate();
    drop(sidecar);
    let _sidecar = env.start("sidecar");
    let second = publish(&env, &token, topic, 2);
    let third = publish(&env, &token, topic, 3);
    let got = next("the event after the restart");
    assert_eq!(got["seq"], second, "nothing repeated or lost: {got}");
    assert_eq!(got["topic"], topic);
    assert_eq!(next("the next event")["seq"], third);

    let _ = follower.kill();
    let out = follower.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("reconnecting").count(),
        1,
        "one line per outage: {stderr}"
    );
}

#[test]
fn refusals_say_why() {
    let env = Env::new();
    let _daemon = env.start("daemon");
    let _sidecar = env.start("sidecar");
    let out = env.run(["events", "--topic", "a\nb"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid --topic"), "{stderr}");
    // The sidecar's own reason comes through.
    let out = env.run(["events", "--since", "999"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("HTTP 410") && stderr.contains("ahead of the journal"),
        "{stderr}"
    );
}

#[test]
fn following_a_sidecar_that_never_answered_fails_at_once() {
    let env = Env::new();
    let mut daemon = env.start("daemon");
    daemon.terminate();
    let out = env.run(["events", "-f"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "the sidecar on 127.0.0.1:{} is not reachable",
            env.sidecar_port
        )) && stderr.trim_end().ends_with("then `cco health`"),
        "{stderr}"
    );
    assert!(!stderr.contains("reconnecting"), "{stderr}");
}

/// An agent that may publish cannot write terminal escapes (C1 CSI/OSC, ESC, bidi
/// overrides) into the user's terminal through `cco events`, in either format.
#[test]
fn published_escapes_are_printed_inert() {
    let env = Env::new();
    let _daemon = env.start("daemon");
    let _sidecar = env.start("sidecar");
    let token = token(&env);
    let auth = format!("Bearer {token}");
    let hostile = "\u{9b}2J\u{9d}0;owned\u{7}\u{1b}[31m\u{202e}txt";
    // Labels refuse control characters, but not bidi overrides; data takes anything.
    let body = json!({"publisher": "p\u{202e}gpj.exe", "topic": "t\u{2066}x",
        "data": {"note": hostile}})
    .to_string();
    let (status, ev) = crate::common::http(
        env.sidecar_port,
        "POST",
        "/api/events/step_done",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(&body),
    );
    assert_eq!(status, 201, "{ev}");
    for args in [&["events"][..], &["events", "--json"][..]] {
        let out = env.run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| cco::api::inert::is_unsafe(c) && c != '\n'),
            "{args:?}: {text:?}"
        );
        assert!(text.contains("\\u009b2J"), "{args:?}: {text}");
    }
    // The JSON still decodes to exactly what was published.
    let out = env.run(["events", "--json"]);
    let line = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["data"]["note"], hostile);
}
