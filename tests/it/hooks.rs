//! `cco hook` and `cco events` against a real daemon and sidecar, fed the JSON Claude Code
//! sends: the session and sub-agent lifecycle lands in the journal, sub-agents get context,
//! results are stored, and a down sidecar never breaks the hook. The `http` module runs the
//! real Claude Code CLI with the http transport.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Env, Service, run_with_stdin};

struct Installation {
    env: Env,
    token: String,
    _daemon: Service,
    sidecar: Service,
}

fn installation(cud: bool) -> Installation {
    let mut env = Env::new();
    env.set("CCO_REQUIRE_CUD_CONFIRMATION", cud.to_string());
    let daemon = env.start("daemon");
    let sidecar = env.start("sidecar");
    let out = env.run(["token", "--ttl", "10m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    Installation {
        env,
        token,
        _daemon: daemon,
        sidecar,
    }
}

impl Installation {
    /// `cco hook EVENT` with `input` on stdin and the environment the launcher gives Claude.
    fn hook(&self, event: &str, input: &Value) -> Output {
        self.hook_raw(event, input.to_string().as_bytes())
    }

    /// `cco hook EVENT` with `input` on stdin as given (it need not be JSON).
    fn hook_raw(&self, event: &str, input: &[u8]) -> Output {
        let rt = self.env.runtime_dir();
        let hooks = std::fs::read_to_string(rt.join("hooks-sealed.json")).unwrap();
        let mut cmd = self.env.cmd(["hook", event]);
        cmd.env(
            "ORCHESTRATOR_SIDECAR_URL",
            format!("http://127.0.0.1:{}", self.env.sidecar_port),
        )
        .env("ORCHESTRATOR_TOKEN", &self.token)
        .env("ORCHESTRATOR_ISSUE_ID", "issue-7")
        .env("ORCHESTRATOR_HOOKS_CONFIG", hooks)
        .env(
            "ORCHESTRATOR_SETTINGS",
            rt.join("orchestrator-settings.json"),
        );
        let out = run_bounded(&mut cmd, input, false);
        assert!(
            out.status.success(),
            "hook {event} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn events(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["events", "--json"];
        all.extend_from_slice(args);
        let out = self.env.run(all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn session_and_subagent_lifecycle_reach_the_journal_and_results() {
    let inst = installation(false);
    let session = json!({"session_id": "sess-1", "cwd": "/p", "hook_event_name": "SessionStart", "source": "startup"});
    let out = inst.hook("session-start", &session);
    assert!(out.stdout.is_empty());

    let start = json!({"session_id": "sess-1", "hook_event_name": "SubagentStart", "agent_id": "a1b2", "agent_type": "rust-specialist"});
    let out = inst.hook("subagent-start", &start);
    let log = std::fs::read_to_string(inst.env.runtime_dir().join("hooks.log")).unwrap_or_default();
    assert!(!out.stdout.is_empty(), "no answer; hooks.log:\n{log}");
    // The sidecar's context answer decodes into the shared wire type: no fallback.
    assert!(!log.contains("results only"), "{log}");
    let answer = stdout_json(&out);
    assert_eq!(
        answer["hookSpecificOutput"]["hookEventName"],
        "SubagentStart"
    );
    let context = answer["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(
        context.contains("rust-specialist") && context.contains("issue-7"),
        "{context}"
    );

    let stop = json!({"session_id": "sess-1", "hook_event_name": "SubagentStop", "agent_id": "a1b2",
        "agent_type": "rust-specialist", "last_assistant_message": "Implemented the parser; 12 tests pass."});
    inst.hook("subagent-stop", &stop);
    // Claude Code may report the same stop again: stored once, announced once.
    inst.hook("subagent-stop", &stop);
    let result: Value = serde_json::from_str(
        &std::fs::read_to_string(
            inst.env
                .data_dir()
                .join("orchestration/results/issue-7/rust-specialist.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        result["result"]["summary"],
        "Implemented the parser; 12 tests pass."
    );
    assert_eq!(result["result"]["status"], "success");

    inst.hook(
        "stop",
        &json!({"session_id": "sess-1", "hook_event_name": "Stop"}),
    );
    inst.hook(
        "session-end",
        &json!({"session_id": "sess-1", "hook_event_name": "SessionEnd", "reason": "exit"}),
    );

    let types: Vec<String> = inst
        .events(&[])
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "session_started",
            "agent_started",
            "agent_completed",
            "session_stopped",
            "session_ended"
        ],
        "journal order"
    );
    let completed = inst.events(&["--type", "agent_completed"]);
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["topic"], "issue-7");

    let out = inst.env.run(["events"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("   SEQ") && table.contains("agent_started"),
        "{table}"
    );
}

#[test]
fn pre_tool_use_follows_the_policy() {
    let inst = installation(true);
    let project = inst.env.tmp.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("notes.md"), "x").unwrap();
    std::fs::write(project.join("Cargo.toml"), "[package]").unwrap();
    let ask = |tool: &str, input: Value| {
        let out = inst.hook(
            "pre-tool-use",
            &json!({"session_id": "s", "hook_event_name": "PreToolUse", "cwd": project, "tool_name": tool, "tool_input": input}),
        );
        if out.stdout.is_empty() {
            return "none".to_string();
        }
        stdout_json(&out)["hookSpecificOutput"]["permissionDecision"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        ask("Read", json!({"file_path": project.join("notes.md")})),
        "allow"
    );
    assert_eq!(ask("Bash", json!({"command": "cat notes.md"})), "allow");
    assert_eq!(
        ask("Agent", json!({"subagent_type": "x", "prompt": "p"})),
        "allow"
    );
    // Outside the project, or a command that can run repository-configured code: Claude decides.
    assert_eq!(ask("Read", json!({"file_path": "/etc/passwd"})), "none");
    assert_eq!(ask("Bash", json!({"command": "git status"})), "none");
    assert_eq!(
        ask("Write", json!({"file_path": "/p/x", "content": ""})),
        "ask"
    );
    assert_eq!(ask("Bash", json!({"command": "rm -rf target"})), "ask");
    assert_eq!(ask("WebFetch", json!({"url": "x"})), "none");
}

#[test]
fn a_down_sidecar_never_breaks_claude() {
    let mut inst = installation(false);
    inst.sidecar.terminate();
    let start = Instant::now();
    let out = inst.hook(
        "subagent-start",
        &json!({"session_id": "s", "hook_event_name": "SubagentStart", "agent_id": "x", "agent_type": "test-engineer"}),
    );
    assert!(
        out.stdout.is_empty(),
        "no decision when the sidecar is down"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let log = std::fs::read_to_string(inst.env.runtime_dir().join("hooks.log")).unwrap();
    assert!(log.contains("connection refused"), "{log}");
    // Garbage on stdin is logged, not fatal.
    let out = run_with_stdin(&mut inst.env.cmd(["hook", "session-start"]), b"not json");
    assert!(out.status.success());
}

/// A session started in the home directory gets no project context (the sidecar refuses to
/// read a whole home), but its sub-agents still get the issue's earlier results.
#[test]
fn without_project_context_the_issue_results_still_reach_the_subagent() {
    let mut inst = installation(false);
    let out = inst
        .env
        .cmd(["token", "--ttl", "10m"])
        .current_dir(&inst.env.home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    inst.token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let stop = json!({"session_id": "s", "hook_event_name": "SubagentStop", "agent_id": "arch-1",
        "agent_type": "chief-architect", "last_assistant_message": "EARLIER-DECISION: use REST"});
    inst.hook("subagent-stop", &stop);
    let out = inst.hook(
        "subagent-start",
        &json!({"session_id": "s", "hook_event_name": "SubagentStart", "agent_id": "b2", "agent_type": "rust-specialist"}),
    );
    let log = std::fs::read_to_string(inst.env.runtime_dir().join("hooks.log")).unwrap_or_default();
    assert!(!out.stdout.is_empty(), "no answer; hooks.log:\n{log}");
    let context = stdout_json(&out)["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(context.contains("EARLIER-DECISION: use REST"), "{context}");
    assert!(!context.contains("## Git"), "{context}");
    assert!(log.contains("results only"), "{log}");
}

/// Hooks never read the config, so their help must not offer `--config`.
#[test]
fn hook_help_does_not_offer_config() {
    let env = Env::new();
    let out = env.run(["hook", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(!help.contains("--config"), "{help}");
    assert!(help.contains("ORCHESTRATOR_*"), "{help}");
    // Other subcommands still offer it.
    let out = env.run(["daemon", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config <FILE>"));
}

fn decision_of(out: &Output) -> String {
    if out.stdout.is_empty() {
        return "none".to_string();
    }
    stdout_json(out)["hookSpecificOutput"]["permissionDecision"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Issue 15 (2): a session in `$HOME` or `/` is not a project: no read is auto-allowed.
#[test]
fn pre_tool_use_allows_nothing_in_home_or_root() {
    let inst = installation(false);
    let home = inst.env.home.clone();
    std::fs::write(home.join(".bash_history"), "secret-command\n").unwrap();
    let ask = |cwd: &std::path::Path, tool: &str, input: Value| {
        decision_of(&inst.hook(
            "pre-tool-use",
            &json!({"session_id": "s", "hook_event_name": "PreToolUse", "cwd": cwd, "tool_name": tool, "tool_input": input}),
        ))
    };
    assert_eq!(
        ask(&home, "Read", json!({"file_path": ".bash_history"})),
        "none"
    );
    assert_eq!(ask(&home, "Bash", json!({"command": "ls -laR ."})), "none");
    let root = std::path::Path::new("/");
    assert_eq!(
        ask(root, "Bash", json!({"command": "cat /etc/shadow"})),
        "none"
    );
    assert_eq!(
        ask(root, "Read", json!({"file_path": "/proc/self/environ"})),
        "none"
    );
}

/// Issue 15 (11): a tool call too large or too broken to read gets `ask`, not silence.
#[test]
fn an_unreadable_tool_call_asks_when_confirmation_is_required() {
    let inst = installation(true);
    let huge = json!({"session_id": "s", "hook_event_name": "PreToolUse", "cwd": "/p", "tool_name": "Write",
        "tool_input": {"file_path": "/p/x", "content": "x".repeat(4 * 1024 * 1024 + 10)}});
    assert_eq!(decision_of(&inst.hook("pre-tool-use", &huge)), "ask");
    let cut = br#"{"session_id": "s", "tool_name": "Bash", "tool_input": {"command": "rm -rf"#;
    assert_eq!(decision_of(&inst.hook_raw("pre-tool-use", cut)), "ask");
    // Without the confirmation requirement, nothing is decided.
    let inst = installation(false);
    assert_eq!(decision_of(&inst.hook_raw("pre-tool-use", cut)), "none");
}

/// Longest a hook under test may run: Claude Code kills a hook at
/// `ceil(hooks.timeout_ms / 1000) + 3` s, so at 2000 ms, 5 s.
const CLAUDE_KILL: Duration = Duration::from_secs(5);
/// The `hooks.timeout_ms` the deadline tests run with.
const HOOK_MS: u64 = 2000;

/// Runs `cmd` with `input` on stdin (a write refused because the hook stopped reading is
/// fine), keeping stdin open afterwards when `hold_open`; fails the test if the hook is still
/// running after [`CLAUDE_KILL`] (and kills it).
fn run_bounded(cmd: &mut std::process::Command, input: &[u8], hold_open: bool) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        hold_open.then_some(stdin)
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(CLAUDE_KILL) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("hook still running after {CLAUDE_KILL:?}: Claude would have killed it");
        }
    };
    drop(writer.join());
    out
}

/// A hook environment pointing at `port`, with `hooks.timeout_ms` = [`HOOK_MS`].
fn hook_cmd(env: &Env, event: &str, port: u16) -> std::process::Command {
    let mut cmd = env.cmd(["hook", event]);
    cmd.env(
        "ORCHESTRATOR_SIDECAR_URL",
        format!("http://127.0.0.1:{port}"),
    )
    .env("ORCHESTRATOR_TOKEN", "t")
    .env("ORCHESTRATOR_ISSUE_ID", "issue-7")
    .env(
        "ORCHESTRATOR_HOOKS_CONFIG",
        json!({"enabled": true, "timeouts": {"hook_ms": HOOK_MS}}).to_string(),
    )
    .env(
        "ORCHESTRATOR_SETTINGS",
        env.tmp.path().join("orchestrator-settings.json"),
    );
    cmd
}

/// Issue 16 (3): against a sidecar that accepts and never answers, SubagentStart's three
/// calls share one deadline and the hook ends before Claude would kill it.
#[test]
fn a_silent_sidecar_costs_one_deadline_not_three() {
    let env = Env::new();
    // The kernel completes connections into the backlog; nobody ever reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let start = Instant::now();
    let out = run_bounded(
        &mut hook_cmd(&env, "subagent-start", port),
        json!({"session_id": "s", "agent_id": "a", "agent_type": "test-engineer"})
            .to_string()
            .as_bytes(),
        false,
    );
    let took = start.elapsed();
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    assert!(
        took >= Duration::from_millis(HOOK_MS),
        "gave up early: {took:?}"
    );
    let log = std::fs::read_to_string(env.tmp.path().join("hooks.log")).unwrap();
    assert!(log.contains("deadline"), "{log}");
}

/// Issue 15 (low): a stdin that never closes does not hold the hook past its deadline.
#[test]
fn a_stdin_that_never_closes_does_not_hang_the_hook() {
    let env = Env::new();
    let out = run_bounded(
        &mut hook_cmd(&env, "session-start", 1),
        b"{\"session_id\": ",
        true,
    );
    assert!(out.status.success());
    let log = std::fs::read_to_string(env.tmp.path().join("hooks.log")).unwrap();
    assert!(log.contains("deadline passed"), "{log}");
    // A tool call that never finishes arriving is unreadable: with confirmation required, ask.
    let mut cmd = hook_cmd(&env, "pre-tool-use", 1);
    cmd.env(
        "ORCHESTRATOR_HOOKS_CONFIG",
        json!({"permissions": {"require_cud_confirmation": true}, "timeouts": {"hook_ms": HOOK_MS}})
            .to_string(),
    );
    let out = run_bounded(&mut cmd, b"{\"tool_name\": \"Bash\", ", true);
    assert_eq!(decision_of(&out), "ask");
}

/// Issue 15 (low) and 16 (1): a transcript path naming a device is refused at once, and a
/// final message over the sidecar's body limit is stored cut, marked `truncated`.
#[test]
fn subagent_stop_bounds_what_it_reads_and_sends() {
    let inst = installation(false);
    let start = Instant::now();
    inst.hook(
        "subagent-stop",
        &json!({"session_id": "s", "agent_id": "z1", "agent_type": "test-engineer",
            "agent_transcript_path": "/dev/zero"}),
    );
    assert!(start.elapsed() < CLAUDE_KILL);
    let log = std::fs::read_to_string(inst.env.runtime_dir().join("hooks.log")).unwrap();
    assert!(log.contains("not a regular file"), "{log}");

    let message = format!("BEGIN {} END", "x".repeat(1536 * 1024));
    inst.hook(
        "subagent-stop",
        &json!({"session_id": "s", "agent_id": "big1", "agent_type": "rust-specialist",
            "last_assistant_message": message}),
    );
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(
            inst.env
                .data_dir()
                .join("orchestration/results/issue-7/rust-specialist.json"),
        )
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(inst.env.runtime_dir().join("hooks.log"));
            panic!("no result stored ({e}); hooks.log: {log:?}")
        }),
    )
    .unwrap();
    assert_eq!(stored["result"]["status"], "success");
    assert_eq!(stored["result"]["truncated"], true);
    assert_eq!(stored["result"]["message_bytes"], message.len());
    let summary = stored["result"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("BEGIN ") && summary.contains("final message truncated"));
    // Stored, so announced as a success (the /dev/zero agent's, with no message, is not).
    let completed = inst.events(&["--type", "agent_completed"]);
    let big = completed.iter().find(|e| e["data"]["agent_id"] == "big1");
    assert_eq!(
        big.map(|e| &e["data"]["status"]),
        Some(&json!("success")),
        "{completed:?}"
    );
}

// ---- The http transport with the real Claude Code CLI (issue 11, section 2) ----

mod http {
    //! `hooks.transport = "http"` (the default) with the real CLI and the fake Messages API:
    //! Claude POSTs its hook JSON to the daemon and acts on the answer.

    use std::path::Path;
    use std::process::{Output, Stdio};
    use std::time::Duration;

    use crate::claude::real_claude;
    use crate::common::Env;
    use crate::fake_anthropic::{FakeAnthropic, Reply, Rules};

    /// Longest one `cco -p` session may take: a wrong script could make Claude loop.
    const SESSION_LIMIT: Duration = Duration::from_secs(90);

    fn env_for(claude: &Path, fake: &FakeAnthropic) -> Env {
        let mut env = Env::new();
        env.set("CCO_CLAUDE", claude.display().to_string())
            .set("ANTHROPIC_BASE_URL", fake.url())
            .set("ANTHROPIC_API_KEY", "test-key")
            .set("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .set("DISABLE_AUTOUPDATER", "1");
        env
    }

    /// A small git project for Claude to run in (policy decisions need a project).
    fn project(env: &Env) -> std::path::PathBuf {
        let dir = env.tmp.path().join("project");
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("Cargo.toml"), "[package]\nname = \"demo\"\n").unwrap();
        std::fs::write(dir.join("src/lib.rs"), "pub fn f() {} // LIB-MARKER\n").unwrap();
        let out = std::process::Command::new("git")
            .args(["init", "-q", "-b", "main"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(out.status.success());
        dir
    }

    /// `cco ARGS…` in `cwd`, bounded by [`SESSION_LIMIT`]; its exit is the signal waited on.
    fn session(env: &Env, cwd: &Path, args: &[&str]) -> Output {
        let child = env
            .cmd(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let (done, exited) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = done.send(child.wait_with_output().unwrap());
        });
        match exited.recv_timeout(SESSION_LIMIT) {
            Ok(out) => out,
            Err(_) => {
                // SAFETY: the child is not reaped until the waiter's wait returns.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = waiter.join();
                panic!("cco -p did not finish in {SESSION_LIMIT:?}");
            }
        }
    }

    /// Claude's `--debug-file` of a session: which hook ran through which transport.
    fn debug_log(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The script of a session that delegates to `rust-specialist` once.
    fn delegating() -> FakeAnthropic {
        FakeAnthropic::with_rules(
            Rules::new()
                .when(|c| c.is_subagent(), Reply::text("SUB-DONE"))
                .when(|c| c.has_tool_result(), Reply::text("MAIN-DONE"))
                .otherwise(Reply::tool_use(
                    "Agent",
                    r#"{"subagent_type":"rust-specialist","description":"Do it","prompt":"Do it. TASK-HTTP","run_in_background":false}"#,
                )),
        )
    }

    #[test]
    fn a_pre_tool_use_decision_arrives_over_http() {
        let Some(claude) = real_claude() else { return };
        let fake = FakeAnthropic::with_rules(
            Rules::new()
                .when(|c| c.has_tool_result(), Reply::text("MAIN-DONE"))
                .otherwise(Reply::tool_use(
                    "Write",
                    r#"{"file_path":"new.txt","content":"hello"}"#,
                )),
        );
        let mut env = env_for(&claude, &fake);
        env.set("CCO_REQUIRE_CUD_CONFIRMATION", "true");
        let _daemon = env.start("daemon");
        let _sidecar = env.start("sidecar");
        let dir = project(&env);
        let debug = env.tmp.path().join("debug.log");
        let out = session(
            &env,
            &dir,
            &["--debug-file", debug.to_str().unwrap(), "-p", "write it"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Claude acted on cco's `ask`: in print mode nobody can confirm, so the tool is
        // refused with cco's reason, and the file is not written.
        let results: Vec<String> = fake.calls().iter().flat_map(|c| c.tool_results()).collect();
        assert!(
            results
                .iter()
                .any(|r| r.contains("create/update/delete needs confirmation")),
            "{results:?}"
        );
        assert!(!dir.join("new.txt").exists());
        let log = debug_log(&debug);
        assert!(log.contains("HTTP hook POST to http://127.0.0.1:"), "{log}");
        assert!(log.contains("/hooks/pre-tool-use"), "{log}");
        assert!(
            !log.contains("hook pre-tool-use"),
            "a command hook ran:\n{log}"
        );
    }

    #[test]
    fn subagent_start_context_arrives_over_http() {
        let Some(claude) = real_claude() else { return };
        let fake = delegating();
        let env = env_for(&claude, &fake);
        let _daemon = env.start("daemon");
        let _sidecar = env.start("sidecar");
        let dir = project(&env);
        let debug = env.tmp.path().join("debug.log");
        let out = session(
            &env,
            &dir,
            &[
                "--issue",
                "http-1",
                "--debug-file",
                debug.to_str().unwrap(),
                "-p",
                "go",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "MAIN-DONE");
        let calls = fake.calls();
        let sub = calls
            .iter()
            .find(|c| c.is_subagent())
            .expect("a sub-agent call");
        let injected = sub.system_messages_text();
        assert!(
            injected.contains("cco context for `rust-specialist` on issue `http-1`")
                && injected.contains("LIB-MARKER"),
            "no context injected:\n{injected}"
        );
        let log = debug_log(&debug);
        assert!(log.contains("/hooks/subagent-start"), "{log}");
        assert!(
            !log.contains("hook subagent-start"),
            "a command hook ran:\n{log}"
        );
        // SubagentStop stored the sub-agent's final message through the same path.
        let stored = env
            .data_dir()
            .join("orchestration/results/http-1/rust-specialist.json");
        let stored = std::fs::read_to_string(&stored).unwrap();
        assert!(stored.contains("SUB-DONE"), "{stored}");
    }

    /// The daemon gone mid-session (stopped after the launcher's check): Claude's http hooks
    /// are refused at once, the session completes, and Claude prints nothing about them
    /// (refusals go to its debug log only; SessionEnd, the one it would print, is a command).
    #[test]
    fn with_the_daemon_down_the_session_completes_quietly() {
        let Some(claude) = real_claude() else { return };
        let fake = delegating();
        let env = env_for(&claude, &fake);
        let daemon = env.start("daemon");
        let rt = env.runtime_dir();
        let settings = rt.join("orchestrator-settings.json");
        let agents = std::fs::read_to_string(rt.join("agents-sealed.json")).unwrap();
        let token = env.run(["token", "--ttl", "10m"]);
        let token = String::from_utf8(token.stdout).unwrap();
        drop(daemon);
        let dir = project(&env);
        let debug = env.tmp.path().join("debug.log");
        // Claude as the launcher would exec it, the daemon now gone.
        let mut cmd = std::process::Command::new(&claude);
        cmd.args([
            "--settings",
            settings.to_str().unwrap(),
            "--agents",
            &agents,
        ])
        .args(["--debug-file", debug.to_str().unwrap(), "-p", "go"])
        .env("HOME", &env.home)
        .env("ORCHESTRATOR_TOKEN", token.trim())
        .env(
            "ORCHESTRATOR_SIDECAR_URL",
            format!("http://127.0.0.1:{}", env.sidecar_port),
        )
        .envs(env.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&dir)
        .stdin(Stdio::null());
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "MAIN-DONE");
        assert!(
            fake.calls().iter().any(|c| c.is_subagent()),
            "the sub-agent ran"
        );
        assert!(
            !stderr.contains("hook"),
            "Claude printed a hook failure: {stderr}"
        );
        let log = debug_log(&debug);
        assert!(
            log.contains("/hooks/pre-tool-use") && log.contains("ECONNREFUSED"),
            "{log}"
        );
    }
}
