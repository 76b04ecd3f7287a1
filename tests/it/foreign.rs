//! Another local user listening on a cco port: nothing sends it a token, whichever address
//! family it took, and the health checks say so instead of reporting it healthy.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::common::{Env, Service};

const PYTHON: &str = "/usr/bin/python3";
const NOBODY: u32 = 65534;

/// A listener run by `nobody` that records every request and answers each with `200` and a
/// JSON body (so it passes for a healthy service); killed on drop.
struct Stranger {
    child: Child,
    got: PathBuf,
}

impl Stranger {
    /// `None` (with a note; a failure in CI) where a test cannot listen as another user.
    fn listen(env: &Env, host: &str, port: u16, body: &str) -> Option<Stranger> {
        if crate::common::current_uid() != 0 || !Path::new(PYTHON).exists() {
            crate::common::cannot_run(&format!(
                "listening as another user needs root and {PYTHON}"
            ));
            return None;
        }
        let got = env.tmp.path().join(format!("stolen-{port}"));
        std::fs::write(&got, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(env.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&got, std::fs::Permissions::from_mode(0o666)).unwrap();
        let script = format!(
            r#"import socket
host, port, got, body = {host:?}, {port}, {got:?}, {body:?}.encode()
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if fam == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind((host, port)); s.listen(); print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        data = c.recv(65536)
    except Exception:
        data = b""
    open(got, "ab").write(data)
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    try:
        c.sendall(head.encode() + body)
    except Exception:
        pass
    c.close()
"#,
            got = got.display().to_string(),
        );
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(PYTHON)
            .args(["-c", &script])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the stranger did not start listening");
        Some(Stranger { child, got })
    }

    /// Everything it received so far.
    fn received(&self) -> String {
        std::fs::read_to_string(&self.got).unwrap()
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

#[test]
fn an_ipv4_listener_of_another_user_gets_no_token() {
    hook_and_forwarder_send_no_token_to("127.0.0.1");
}

#[test]
fn a_dual_stack_listener_of_another_user_gets_no_token() {
    // `[::]` without IPV6_V6ONLY takes 127.0.0.1 connections too.
    hook_and_forwarder_send_no_token_to("::");
}

/// Another user listens on the sidecar's port at `host`: neither a hook nor the daemon's
/// forwarder sends it the token.
fn hook_and_forwarder_send_no_token_to(host: &str) {
    let mut env = Env::new();
    let _daemon: Service = env.start("daemon");
    let token = token(&env);
    let Some(stranger) = Stranger::listen(&env, host, env.sidecar_port, "{}") else {
        return;
    };
    env.set("ORCHESTRATOR_TOKEN", token.clone());
    let rt = env.runtime_dir();
    let mut cmd = env.cmd(["hook", "session-start"]);
    cmd.env(
        "ORCHESTRATOR_SIDECAR_URL",
        format!("http://127.0.0.1:{}", env.sidecar_port),
    )
    .env(
        "ORCHESTRATOR_SETTINGS",
        rt.join("orchestrator-settings.json"),
    );
    let out = crate::common::run_with_stdin(&mut cmd, br#"{"session_id":"s"}"#);
    assert!(out.status.success(), "a hook never fails Claude");
    // The daemon does not forward agents' tokens there either.
    let auth = format!("Bearer {token}");
    let (status, body) = crate::common::http(
        env.daemon_port,
        "GET",
        "/api/agents",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("sidecar_untrusted"), "{body}");
    assert!(
        !stranger.received().contains(&token),
        "the token went to another user's listener on {host}"
    );
    let log = std::fs::read_to_string(rt.join("hooks.log")).unwrap();
    assert!(log.contains("held by another user (uid 65534)"), "{log}");
}

#[test]
fn cco_events_sends_no_token_to_another_users_listener() {
    let env = Env::new();
    // The daemon writes the secret `cco events` signs with.
    let _daemon = env.start("daemon");
    let Some(stranger) = Stranger::listen(&env, "127.0.0.1", env.sidecar_port, "{}") else {
        return;
    };
    let out = env.run(["events"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("held by another user (uid 65534)") && stderr.contains("ss -ltnp"),
        "{stderr}"
    );
    assert!(
        !stranger.received().contains("Bearer"),
        "cco events sent a token to another user's listener"
    );
}

#[test]
fn health_and_doctor_do_not_trust_another_users_listener() {
    let env = Env::new();
    let _sidecar = env.start("sidecar");
    let healthy =
        r#"{"status":"healthy","service":"cco-daemon","version":"0.0.0","uptime_seconds":1}"#;
    let Some(_stranger) = Stranger::listen(&env, "::", env.daemon_port, healthy) else {
        return;
    };
    let port = env.daemon_port;

    let out = env.run(["health"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("daemon")).unwrap();
    assert!(
        row.contains("DOWN") && row.contains("held by another user (uid 65534)"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("ss -ltnp 'sport = :{port}'")),
        "{stderr}"
    );
    let out = env.run(["health", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["daemon"]["status"], "foreign_listener", "{v}");
    assert_eq!(v["daemon"]["owner_uid"], NOBODY, "{v}");

    let out = env.run(["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "❌ 127.0.0.1:{port} is held by another user (uid 65534), not by your cco daemon"
        )) && text.contains(&format!(
            "→ see who owns it with `ss -ltnp 'sport = :{port}'`"
        )),
        "{text}"
    );
    assert!(!text.contains("daemon answers on"), "{text}");
}
