//! The user's guide, executed: every command and `curl` call of its sections 1–5, 9 and the
//! appendices runs literally (only ports 3000/3001 swapped for the test installation's) and
//! must either work or be refused with its replacement; the rest is mapped in the README.

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};

use crate::common::{Env, Service, get, script, start_command};

/// The guide, copied from the user's seed so that CI has it.
const GUIDE: &str = include_str!("../fixtures/guide.txt");
const README: &str = include_str!("../../README.md");

/// Marker curl prints on stderr (from the test's curlrc) so stdout stays the guide's.
const HTTP_MARKER: &str = "@@http_code=";

const SIDECAR_HEALTH_KEYS: &[&str] = &["status", "service", "version", "uptime_seconds", "checks"];
const SIDECAR_CHECKS_KEYS: &[&str] = &[
    "storage",
    "event_bus",
    "memory_usage_mb",
    "active_agents",
    "event_queue_size",
];
const DAEMON_HEALTH_KEYS: &[&str] = &["status", "service", "version", "uptime_seconds"];
const STATUS_KEYS: &[&str] = &["agents", "storage", "events", "performance"];

/// The launcher's status lines, as the guide shows them.
const LAUNCH_LINES: &[&str] = &[
    "✅ Daemon is running",
    "✅ Orchestrator settings found",
    "✅ Orchestration environment configured",
    "🚀 Launching Claude Code with orchestration support...",
];

/// What a command must do when it runs.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Exit status 0.
    Exit0,
    /// The launcher printed the guide's status lines and ran Claude (the stub).
    Launch,
    /// HTTP 2xx (no body check: the body is Claude's or a result path).
    Http2xx,
    /// HTTP 2xx and stdout is a JSON object with these keys.
    Json(&'static [&'static str]),
    /// The sidecar's `/health` with every `checks` key.
    SidecarHealth,
    /// stdout is `jq 'keys'` output holding these keys.
    JsonKeyList(&'static [&'static str]),
}

/// Each guide line's fate.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Runs literally and must pass the check.
    Works(Check),
    /// Runs literally and must be refused (HTTP status, or non-zero exit for status 0) with a
    /// message naming its replacement.
    Refused { status: u16, names: &'static str },
    /// `cco run --port 3000`: a server in the foreground; started, probed, stopped.
    Foreground,
    /// Not cco's to answer (killing processes, fixed /tmp paths, the author's checkout): not
    /// run; the README's "Coming from the guide" must map it to every string given.
    Readme(&'static [&'static str]),
    /// A general tool unrelated to cco (building Rust, installing toolchains): not run.
    NotCco(&'static str),
    /// Pseudo-code or an environment listing the guide shows, not a command to type.
    Shown,
}

use Check::*;
use Fate::*;

/// The table. A line of the guide that is not here fails the test.
const TABLE: &[(&str, Fate)] = &[
    // Quick Start and Section 1.
    (
        "cd /Users/brent/git/cc-orchestra/cco",
        NotCco("the guide author's checkout"),
    ),
    (
        "cargo build --release",
        NotCco("building cco (the test runs the built binary)"),
    ),
    ("./target/release/cco", Works(Launch)),
    ("cco health", Works(Exit0)),
    ("cco status", Works(Exit0)),
    (
        "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh",
        NotCco("installs Rust from the network"),
    ),
    (
        "source \"$HOME/.cargo/env\"",
        NotCco("the Rust toolchain's environment"),
    ),
    ("rustc --version", NotCco("the Rust toolchain")),
    ("cargo --version", NotCco("the Rust toolchain")),
    ("which claude", Works(Exit0)),
    ("claude --version", Works(Exit0)),
    ("ls -la target/release/cco", Works(Exit0)),
    (
        "file target/release/cco",
        NotCco("file(1) inspects the binary; not cco's"),
    ),
    (
        "cargo build --release 2>&1 | tail -20",
        NotCco("building cco"),
    ),
    ("echo $?", Works(Exit0)),
    (
        "script: Verifying prerequisites...",
        Readme(&[
            "the guide's prerequisite and checklist scripts",
            "cco doctor",
        ]),
    ),
    // Section 2: what the components do, shown as pseudo-code.
    ("ORCHESTRATOR_ENABLED=true", Shown),
    (
        "ORCHESTRATOR_SETTINGS=/tmp/.cco-orchestrator-settings",
        Readme(&[
            "/tmp/.cco-orchestrator-settings",
            "orchestrator-settings.json",
        ]),
    ),
    (
        "ORCHESTRATOR_AGENTS=/tmp/.cco-agents-sealed",
        Readme(&["/tmp/.cco-agents-sealed", "agents-sealed.json"]),
    ),
    (
        "ORCHESTRATOR_RULES=/tmp/.cco-rules-sealed",
        Readme(&["/tmp/.cco-rules-sealed", "rules-sealed.md"]),
    ),
    (
        "ORCHESTRATOR_HOOKS=/tmp/.cco-hooks-sealed",
        Readme(&["/tmp/.cco-hooks-sealed", "hooks-sealed.json"]),
    ),
    (
        "ORCHESTRATOR_API_URL=http://localhost:3000",
        Readme(&["ORCHESTRATOR_API_URL", "http://127.0.0.1:3000"]),
    ),
    ("ORCHESTRATOR_HOOKS_CONFIG={...JSON hooks config...}", Shown),
    ("ORCHESTRATOR_HOOKS_ENABLED=true", Shown),
    (
        "ORCHESTRATOR_HOOKS_CONFIG='{\"permissions\": {...}, \"enabled\": true}'",
        Shown,
    ),
    ("ORCHESTRATOR_AUTO_ALLOW_READ=true", Shown),
    ("ORCHESTRATOR_REQUIRE_CUD_CONFIRMATION=false", Shown),
    // Section 3: the launcher's steps, shown as pseudo-code.
    ("cco [args]", Shown),
    ("find claude executable in PATH", Shown),
    (
        "claude --settings /tmp/.cco-orchestrator-settings [args]",
        Readme(&["/tmp/.cco-orchestrator-settings", "$XDG_RUNTIME_DIR/cco/"]),
    ),
    ("cco process waits for Claude Code to exit", Shown),
    ("Total time to interactive shell: 2-3 seconds", Shown),
    ("cco --help", Works(Launch)),
    // Section 4.
    ("cco --version", Works(Launch)),
    ("cco", Works(Launch)),
    (
        "curl -s http://localhost:3001/health | jq .",
        Works(SidecarHealth),
    ),
    (
        "curl -s http://localhost:3001/status | jq .",
        Works(Json(STATUS_KEYS)),
    ),
    // Section 5.
    (
        "script: === CCO Local Setup Verification ===",
        Readme(&[
            "the guide's prerequisite and checklist scripts",
            "cco doctor",
        ]),
    ),
    (
        "chmod +x verify-setup.sh",
        Readme(&["verify-setup.sh", "cco doctor"]),
    ),
    (
        "./verify-setup.sh",
        Readme(&["verify-setup.sh", "cco doctor"]),
    ),
    // Section 9.
    (
        "curl -H \"Authorization: Bearer $JWT_TOKEN\" http://localhost:3001/api/context/issue-123/python-specialist",
        Works(Http2xx),
    ),
    (
        "curl -X POST http://localhost:3001/api/results -H \"Authorization: Bearer $JWT_TOKEN\" -H \"Content-Type: application/json\" -d '{",
        Works(Http2xx),
    ),
    (
        "curl -X POST http://localhost:3001/api/events/agent_completed -H \"Authorization: Bearer $JWT_TOKEN\" -d '{",
        Refused {
            status: 403,
            names: "POST /api/results",
        },
    ),
    // Appendix A.
    ("cco daemon start &", Works(Exit0)),
    (
        "sleep 2",
        NotCco("a fixed wait; `cco daemon start` returns once both services answer"),
    ),
    (
        "curl http://localhost:3000/health | jq .",
        Works(Json(DAEMON_HEALTH_KEYS)),
    ),
    (
        "curl http://localhost:3001/health | jq .",
        Works(SidecarHealth),
    ),
    (
        "curl http://localhost:3001/status | jq .",
        Works(Json(STATUS_KEYS)),
    ),
    (
        "curl http://localhost:3001/health | jq 'keys'",
        Works(JsonKeyList(SIDECAR_HEALTH_KEYS)),
    ),
    (
        "pkill -f \"cco.*daemon\"",
        Readme(&["pkill -f \"cco.*daemon\"", "cco daemon stop"]),
    ),
    // Appendix B.
    ("./target/release/cco run --port 3000", Foreground),
    (
        "curl http://localhost:3000/health",
        Works(Json(DAEMON_HEALTH_KEYS)),
    ),
    ("curl http://localhost:3001/health", Works(SidecarHealth)),
    (
        "curl -H \"Authorization: Bearer test-token\" http://localhost:3001/api/context/test-issue/python-specialist",
        Refused {
            status: 401,
            names: "cco token",
        },
    ),
    ("export ORCHESTRATOR_ENABLED=true", Works(Exit0)),
    (
        "export ORCHESTRATOR_API_URL=http://localhost:3000",
        Works(Exit0),
    ),
    ("claude --help", Works(Exit0)),
    ("claude -c \"echo 'Test from Claude'\"", Works(Exit0)),
    // Appendix C.
    ("RUST_BACKTRACE=1 cco 2>&1 | head -50", Works(Launch)),
    ("time cco --help", Works(Launch)),
    (
        "perf record cco --help",
        Readme(&["perf record cco --help", "bench/launcher.sh"]),
    ),
    ("perf report", NotCco("reads perf's own recording")),
    (
        "loop: while true; do",
        Readme(&["the guide's endless `ps`/`lsof` loop", "cco status"]),
    ),
];

/// The sections whose commands the test runs (issue 14): Quick Start, 1–5, 9, appendices.
fn in_scope(heading: &str) -> bool {
    heading.starts_with("## Quick Start")
        || ["1", "2", "3", "4", "5", "9"]
            .iter()
            .any(|n| heading.starts_with(&format!("## Section {n}:")))
        || heading.starts_with("## Appendix")
}

/// Strips a trailing ` # comment` outside quotes.
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return line[..i].trim_end(),
            _ => {}
        }
        prev = c;
    }
    line
}

/// A line of pseudo-code: tree drawings (mojibake included), numbered steps, headings.
fn is_drawing(line: &str) -> bool {
    line.contains("‚î")
        || line.chars().any(|c| ('\u{2500}'..='\u{257f}').contains(&c))
        || line.starts_with(|c: char| c.is_ascii_digit())
        || line.ends_with(':')
}

/// Every command of the in-scope `bash` blocks, in guide order. Backslash continuations and
/// multi-line quotes are joined; a `#!/bin/bash` block is one `script: <first echo>` entry and
/// a `while` loop one `loop: <first line>` entry. The joined text of a multi-line command is
/// kept for running; the key is its first line.
fn guide_commands(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut fence: Option<String> = None;
    let mut block: Vec<&str> = Vec::new();
    for line in text.lines() {
        if fence.is_none() && line.starts_with("## ") {
            heading = line.to_string();
        }
        if let Some(lang) = line.strip_prefix("```") {
            match fence.take() {
                None => fence = Some(lang.trim().to_string()),
                Some(lang) => {
                    if lang == "bash" && in_scope(&heading) {
                        out.extend(block_commands(&block));
                    }
                    block.clear();
                }
            }
            continue;
        }
        if fence.is_some() {
            block.push(line);
        }
    }
    out
}

fn block_commands(block: &[&str]) -> Vec<(String, String)> {
    if block.first().is_some_and(|l| l.starts_with("#!")) {
        let first_echo = block
            .iter()
            .find_map(|l| l.trim().strip_prefix("echo \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or("?");
        return vec![(format!("script: {first_echo}"), block.join("\n"))];
    }
    let mut out = Vec::new();
    let mut lines = block.iter().map(|l| l.trim());
    while let Some(line) = lines.next() {
        let line = strip_comment(line);
        if line.is_empty() || line.starts_with('#') || is_drawing(line) {
            continue;
        }
        let mut full = line.to_string();
        if line.starts_with("while ") {
            for l in lines.by_ref() {
                full.push('\n');
                full.push_str(l);
                if l == "done" {
                    break;
                }
            }
            out.push((format!("loop: {line}"), full));
            continue;
        }
        let mut key = None;
        // Backslash continuations, then quotes left open (a -d '{ … }' body).
        while full.ends_with('\\') || full.matches('\'').count() % 2 == 1 {
            let Some(next) = lines.next() else { break };
            if full.ends_with('\\') {
                full.pop();
                full = format!("{} {}", full.trim_end(), strip_comment(next));
            } else {
                key.get_or_insert_with(|| full.clone());
                full = format!("{full}\n{next}");
            }
        }
        out.push((key.unwrap_or_else(|| full.clone()), full));
    }
    out
}

/// The README's "Coming from the guide" section.
fn readme_section() -> &'static str {
    let start = README
        .find("## Coming from the guide")
        .expect("README has a \"Coming from the guide\" section");
    let rest = &README[start + 3..];
    &README[start..start + 3 + rest.find("\n## ").unwrap_or(rest.len())]
}

/// An installation shaped like the guide's: a checkout with `target/release/cco`, `cco` and a
/// stub `claude` on PATH, a token in `$JWT_TOKEN`, and a curlrc that reports each status.
struct Guide {
    env: Env,
    checkout: std::path::PathBuf,
    bin: std::path::PathBuf,
    curl_home: std::path::PathBuf,
    token: String,
}

impl Guide {
    fn new() -> Guide {
        let env = Env::new();
        let checkout = env.tmp.path().join("checkout");
        std::fs::create_dir_all(checkout.join("target/release")).unwrap();
        std::os::unix::fs::symlink(crate::common::CCO, checkout.join("target/release/cco"))
            .unwrap();
        let bin = env.tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(crate::common::CCO, bin.join("cco")).unwrap();
        script(
            &bin.join("claude"),
            "#!/bin/sh\necho \"stub claude: $1\"\nfor a; do last=$a; done\necho \"last argument: $last\"\n",
        );
        let curl_home = env.tmp.path().join("curl");
        std::fs::create_dir_all(&curl_home).unwrap();
        std::fs::write(
            curl_home.join(".curlrc"),
            format!("write-out = \"%{{stderr}}\\n{HTTP_MARKER}%{{http_code}}\\n\"\n"),
        )
        .unwrap();
        Guide {
            env,
            checkout,
            bin,
            curl_home,
            token: String::new(),
        }
    }

    /// `JWT_TOKEN=$(cco token)`, as the README tells guide readers; needs the secret that
    /// the first start creates.
    fn mint_token(&mut self) {
        let out = self.env.run(["token"]);
        assert!(out.status.success(), "{out:?}");
        self.token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    }

    /// The guide's line with only its ports replaced.
    fn ported(&self, line: &str) -> String {
        line.replace("--port 3000", &format!("--port {}", self.env.daemon_port))
            .replace(":3000", &format!(":{}", self.env.daemon_port))
            .replace(":3001", &format!(":{}", self.env.sidecar_port))
    }

    /// `bash -c LINE` in the checkout, with the installation's environment. No `pipefail`:
    /// the user's shell has none either; curl's status comes from the curlrc marker.
    fn shell(&self, line: &str) -> Command {
        let base = self.env.cmd(Vec::<&str>::new());
        let mut c = Command::new("bash");
        c.args(["-c", line]).env_clear();
        for (k, v) in base.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path)
            .env("CURL_HOME", &self.curl_home)
            .env("JWT_TOKEN", &self.token)
            .current_dir(&self.checkout);
        c
    }

    fn run(&self, line: &str) -> Output {
        self.shell(line)
            .stdin(Stdio::null())
            .output()
            .expect("bash runs")
    }
}

fn http_status(stderr: &str) -> Option<u16> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(HTTP_MARKER))
        .next_back()
        .and_then(|c| c.trim().parse().ok())
}

fn json_keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn check(line: &str, c: Check, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = format!(
        "`{line}`\nstatus {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(out.status.success(), "guide command failed: {ctx}");
    let http_ok = || {
        let s = http_status(&stderr);
        assert!(s.is_some_and(|s| (200..300).contains(&s)), "not 2xx: {ctx}");
    };
    let has_keys = |v: &serde_json::Value, keys: &[&str]| {
        let got = json_keys(v);
        for k in keys {
            assert!(got.contains(*k), "missing key {k}: {ctx}");
        }
    };
    match c {
        Exit0 => {}
        Launch => {
            let all = format!("{stdout}{stderr}");
            for l in LAUNCH_LINES {
                assert!(all.contains(l), "missing status line {l:?}: {ctx}");
            }
            assert!(
                all.contains("stub claude: --settings"),
                "claude did not run: {ctx}"
            );
        }
        Http2xx => http_ok(),
        Json(keys) => {
            http_ok();
            let v: serde_json::Value = serde_json::from_str(&stdout).expect(&ctx);
            has_keys(&v, keys);
        }
        SidecarHealth => {
            http_ok();
            let v: serde_json::Value = serde_json::from_str(&stdout).expect(&ctx);
            has_keys(&v, SIDECAR_HEALTH_KEYS);
            has_keys(&v["checks"], SIDECAR_CHECKS_KEYS);
            assert_eq!(v["service"], "orchestration-sidecar", "{ctx}");
        }
        JsonKeyList(keys) => {
            let v: Vec<String> = serde_json::from_str(&stdout).expect(&ctx);
            for k in keys {
                assert!(v.iter().any(|x| x == k), "missing key {k}: {ctx}");
            }
        }
    }
}

/// Stops what `cco daemon start` started, even when an assertion fails.
struct Detached<'a>(&'a Guide);

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        let _ = self.0.env.run(["daemon", "stop"]);
    }
}

#[test]
fn every_guide_command_works_or_names_its_replacement() {
    let mut g = Guide::new();
    let commands = guide_commands(GUIDE);
    assert!(commands.len() > 40, "the guide parsed to {commands:?}");

    // Every guide line is in the table, and every table row is still in the guide.
    let keys: BTreeSet<&str> = commands.iter().map(|(k, _)| k.as_str()).collect();
    let unknown: Vec<&&str> = keys
        .iter()
        .filter(|k| !TABLE.iter().any(|(t, _)| t == *k))
        .collect();
    assert!(
        unknown.is_empty(),
        "guide commands in neither column of the table: {unknown:#?}"
    );
    let stale: Vec<&str> = TABLE
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| !keys.contains(t))
        .collect();
    assert!(
        stale.is_empty(),
        "table rows no longer in the guide: {stale:?}"
    );

    // Before anything runs, the Quick Start's launch names what starts the services: the
    // launcher never starts them itself.
    let out = g.run("./target/release/cco");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cco install") && err.contains("cco daemon start"),
        "{out:?}"
    );

    // The services, started the way Appendix A says.
    let started = g.run("cco daemon start &");
    assert!(started.status.success(), "{started:?}");
    // `&` returns before the services answer; the guide then sleeps. Wait for readiness
    // instead, bounded by the daemon's own health check.
    let ready = g.env.run(["health"]);
    g.mint_token();
    let detached = Detached(&g);
    assert!(ready.status.success(), "{ready:?}");

    let section = readme_section();
    let mut ran = 0;
    let mut seen = BTreeSet::new();
    for (key, full) in &commands {
        if !seen.insert(key.as_str()) {
            continue;
        }
        let fate = TABLE.iter().find(|(t, _)| t == key).unwrap().1;
        match fate {
            Works(c) => {
                let line = g.ported(full);
                check(key, c, &g.run(&line));
                ran += 1;
            }
            Refused { status, names } => {
                let out = g.run(&g.ported(full));
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                if status == 0 {
                    assert!(!out.status.success(), "`{key}` was not refused: {out:?}");
                } else {
                    assert_eq!(http_status(&stderr), Some(status), "`{key}`: {stdout}");
                }
                assert!(
                    stdout.contains(names) || stderr.contains(names),
                    "`{key}` is refused without naming `{names}`:\n{stdout}\n{stderr}"
                );
                ran += 1;
            }
            Foreground => {
                // The foreground daemon needs its port: stop the detached pair first, and
                // run the sidecar it forwards to beside it.
                let stop = g.env.run(["daemon", "stop"]);
                assert!(stop.status.success(), "{stop:?}");
                let _sidecar = g.env.start("sidecar");
                let mut cmd = g.shell(&format!("exec {}", g.ported(full)));
                let daemon: Service = start_command(&mut cmd);
                let (code, body) = get(g.env.daemon_port, "/health");
                assert_eq!(code, 200, "`{key}`: {body}\n{}", daemon.log_text());
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                for k in DAEMON_HEALTH_KEYS {
                    assert!(v.get(*k).is_some(), "`{key}` /health lacks {k}: {body}");
                }
                drop(daemon);
                drop(_sidecar);
                let again = g.run("cco daemon start");
                assert!(again.status.success(), "{again:?}");
                ran += 1;
            }
            Readme(needles) => {
                for n in needles {
                    assert!(
                        section.contains(n),
                        "README's \"Coming from the guide\" does not map `{key}` (lacks {n:?})"
                    );
                }
            }
            NotCco(why) => assert!(!why.is_empty()),
            Shown => {}
        }
    }
    assert!(ran >= 25, "only {ran} guide commands ran");
    drop(detached);
}

#[test]
fn cco_run_is_the_foreground_daemon_and_double_dash_keeps_the_prompt() {
    let g = Guide::new();
    let mut cmd = g.shell(&format!(
        "exec cco run --port {} --idle-exit-after never",
        g.env.daemon_port
    ));
    let daemon = start_command(&mut cmd);
    let (code, body) = get(g.env.daemon_port, "/health");
    assert_eq!(code, 200, "{body}\n{}", daemon.log_text());
    assert!(body.contains("\"service\":\"cco-daemon\""), "{body}");
    // `cco -- run` is still the prompt "run" for Claude.
    let out = g.run("cco --quiet -- run");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stub claude: --settings") && stdout.contains("last argument: run\n"),
        "{stdout}"
    );
}

#[test]
fn guide_parsing_joins_continuations_and_bodies() {
    let block = [
        "# comment",
        "curl -X POST http://localhost:3001/api/results \\",
        "    -H \"A: b\" \\",
        "    -d '{",
        "        \"x\": 1",
        "    }'",
        "rustc --version  # Should show 1.70+",
        "├─> drawn",
    ];
    let got = block_commands(&block);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0].0,
        "curl -X POST http://localhost:3001/api/results -H \"A: b\" -d '{"
    );
    assert!(got[0].1.ends_with("}'"), "{got:?}");
    assert_eq!(got[1].0, "rustc --version");
}
