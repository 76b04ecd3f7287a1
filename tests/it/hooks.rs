//! `cco hook` and `cco events` against a real daemon and sidecar, fed the JSON Claude Code
//! sends: the session and sub-agent lifecycle lands in the journal, sub-agents get context,
//! results are stored, and a down sidecar never breaks the hook.

use std::process::Output;
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
        let out = run_with_stdin(&mut cmd, input);
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
