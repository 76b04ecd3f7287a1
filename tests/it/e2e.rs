//! The whole loop with the real Claude Code CLI: `cco -p` against a real daemon and sidecar,
//! with a scripted fake of the Messages API. Claude's main thread delegates to a roster agent
//! type; the hooks register the session and the sub-agent, inject its context and store its
//! final message as its result.

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::claude::real_claude;
use crate::common::Env;
use crate::fake_anthropic::{FakeAnthropic, Reply, Rules};

const SUBAGENT_TEXT: &str = "SUBAGENT-RESULT: parser implemented, 12 tests pass";
const AGENT_TYPE: &str = "rust-specialist";

/// The script: delegate to `rust-specialist`; the sub-agent answers; the main thread ends
/// once the Agent tool's result is in.
fn fake() -> FakeAnthropic {
    FakeAnthropic::with_rules(
        Rules::new()
            .when(|c| c.is_subagent(), Reply::text(SUBAGENT_TEXT))
            .when(|c| c.has_tool_result(), Reply::text("MAIN-DONE"))
            .otherwise(Reply::tool_use(
                "Agent",
                format!(
                    r#"{{"subagent_type":"{AGENT_TYPE}","description":"Implement the parser","prompt":"Implement it. TASK-9d1e","run_in_background":false}}"#
                ),
            )),
    )
}

pub fn env_for(claude: &std::path::Path, fake: &FakeAnthropic) -> Env {
    let mut env = Env::new();
    env.set("CCO_CLAUDE", claude.display().to_string())
        .set("ANTHROPIC_BASE_URL", fake.url())
        .set("ANTHROPIC_API_KEY", "test-key")
        .set("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .set("DISABLE_AUTOUPDATER", "1");
    env
}

/// A small git project (a Rust crate with one commit) to run Claude in.
pub fn project(env: &Env) -> std::path::PathBuf {
    let dir = env.tmp.path().join("project");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"demo\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/lib.rs"),
        "pub fn parse() {} // PARSER-MARKER\n",
    )
    .unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "COMMIT-MARKER initial"]);
    dir
}

/// Longest a whole `cco -p` session may take: a wrong script could make Claude loop.
const SESSION_LIMIT: Duration = Duration::from_secs(90);

/// `cco ARGS…` in `cwd`, bounded by [`SESSION_LIMIT`]; its exit is the signal waited on.
pub fn run_bounded(
    env: &Env,
    cwd: &std::path::Path,
    args: &[&str],
    fake: &FakeAnthropic,
) -> Output {
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
            // SAFETY: the child is not reaped until the waiter's wait returns, so the pid is
            // still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = waiter.join();
            panic!(
                "cco -p did not finish in {SESSION_LIMIT:?}; requests: {:#?}",
                fake.requests()
            );
        }
    }
}

#[test]
fn a_real_claude_session_reports_its_subagent_to_the_sidecar() {
    let Some(claude) = real_claude() else { return };
    let fake = fake();
    let env = env_for(&claude, &fake);
    let _daemon = env.start("daemon");
    let _sidecar = env.start("sidecar");

    let project = project(&env);
    let out = run_bounded(
        &env,
        &project,
        &["--issue", "e2e-1", "-p", "implement the parser"],
        &fake,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        "MAIN-DONE",
        "stdout is Claude's alone; stderr: {stderr}"
    );

    // The journal has the lifecycle, in order.
    let events = env.run(["events", "--json"]);
    let types: Vec<String> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event_type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let at = |t: &str| {
        types
            .iter()
            .position(|x| x == t)
            .unwrap_or_else(|| panic!("no {t} in {types:?}"))
    };
    assert!(at("session_started") < at("agent_started"), "{types:?}");
    assert!(at("agent_started") < at("agent_completed"), "{types:?}");
    assert!(types.contains(&"session_ended".to_string()), "{types:?}");

    // The sub-agent's final message is its result, under the issue and its type.
    let path = env
        .data_dir()
        .join(format!("orchestration/results/e2e-1/{AGENT_TYPE}.json"));
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(stored["result"]["summary"], SUBAGENT_TEXT);
    assert_eq!(stored["result"]["status"], "success");

    // What Claude sent: our rules in the main system prompt, the roster among the agent types
    // it offers (a system message in this version), and the injected context in the sub-agent's.
    let calls = fake.calls();
    let main = calls
        .iter()
        .find(|c| !c.is_subagent())
        .expect("a main-thread call");
    assert!(
        main.system_text().contains("cco orchestrator rules"),
        "rules missing"
    );
    let offered = main.system_messages_text();
    for agent in [
        "rust-specialist",
        "chief-architect",
        "security-auditor",
        "debugger",
    ] {
        assert!(
            offered.contains(&format!("- {agent}: ")),
            "{agent} not offered:\n{offered}"
        );
    }
    // `launcher.roster = "auto"`: a Rust crate gets no Kubernetes specialist.
    assert!(!offered.contains("- kubernetes-specialist: "), "{offered}");
    let sub = calls
        .iter()
        .find(|c| c.is_subagent())
        .expect("a sub-agent call");
    let injected = sub.system_messages_text();
    assert!(
        injected.contains(&format!("cco context for `{AGENT_TYPE}` on issue `e2e-1`")),
        "no context injected:\n{injected}"
    );
    // …built from the project Claude runs in: its git state and the files the type wants.
    for want in [
        "## Git",
        "branch main",
        "COMMIT-MARKER",
        "### src/lib.rs",
        "PARSER-MARKER",
    ] {
        assert!(
            injected.contains(want),
            "{want} missing from the injected context:\n{injected}"
        );
    }
    assert!(sub.user_text().contains("TASK-9d1e"));
}

#[test]
fn with_the_sidecar_down_the_session_still_completes() {
    let Some(claude) = real_claude() else { return };
    let fake = fake();
    let env = env_for(&claude, &fake);
    let _daemon = env.start("daemon");
    // No sidecar: every hook's call is refused; they must degrade silently. Not a Rust
    // project, so the specialist is passed by `--roster all`.
    let out = run_bounded(
        &env,
        env.tmp.path(),
        &["--roster", "all", "-p", "implement the parser"],
        &fake,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "MAIN-DONE");
    assert!(
        fake.calls().iter().any(|c| c.is_subagent()),
        "the sub-agent ran"
    );
    let log = std::fs::read_to_string(env.runtime_dir().join("hooks.log")).unwrap();
    assert!(log.contains("connection refused"), "{log}");
}
