//! File leases, the per-agent inbox and the per-issue join against a real sidecar, through
//! the typed client and `cco leases`: conflicts, the check the PreToolUse policy asks,
//! release (by holder, per agent, forced), restart, scoping, once-only delivery, wait_all.

use std::time::{Duration, Instant};

use cco::api::leases::{LeaseMode, ReserveRequest};
use cco::api::sidecar::{AgentState, AgentStatusUpdate, PublishRequest, ResultSubmission};
use cco::api::{AgentId, AgentType, EventType, IssueId};
use cco::client::SidecarClient;
use serde_json::json;

use crate::common::Env;

/// How long the test waits for a readiness signal (a parked `wait_all`) before failing.
const READY_WITHIN: Duration = Duration::from_secs(20);

fn token(env: &Env, args: &[&str]) -> String {
    let out = env.run([&["token"][..], args].concat());
    assert!(
        out.status.success(),
        "cco token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn id(s: &str) -> AgentId {
    AgentId::parse(s).unwrap()
}
fn ty(s: &str) -> AgentType {
    AgentType::parse(s).unwrap()
}

fn register(c: &SidecarClient, issue: &IssueId, agent: &str, agent_type: &str, status: AgentState) {
    c.set_agent_status(
        &id(agent),
        &AgentStatusUpdate {
            status,
            agent_type: ty(agent_type),
            issue_id: issue.clone(),
            message: None,
        },
    )
    .unwrap();
}

fn reserve(agent: &str, paths: &[&str], mode: LeaseMode) -> ReserveRequest {
    ReserveRequest {
        agent: id(agent),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        mode,
        ttl_secs: None,
        reason: "refactoring the parser".into(),
    }
}

#[test]
fn leases_conflict_block_edits_release_and_survive_a_restart() {
    let env = Env::new();
    let mut sidecar = env.start("sidecar");
    let project = env.tmp.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let t = token(&env, &["--project", project.to_str().unwrap()]);
    let c = SidecarClient::new(env.sidecar_port).with_token(&t);
    let issue = IssueId::parse("issue-7").unwrap();
    register(
        &c,
        &issue,
        "agent-a",
        "rust-specialist",
        AgentState::Running,
    );
    register(&c, &issue, "agent-b", "test-writer", AgentState::Running);

    // No leases: the check answers "not blocked".
    assert!(!c.check_lease(&issue, "src/lib.rs", None).unwrap().blocked);

    let granted = c
        .reserve(
            &issue,
            &reserve("agent-a", &["src/lib.rs"], LeaseMode::Exclusive),
        )
        .unwrap();
    assert!(granted.granted);
    let lease = granted.lease.unwrap();
    assert_eq!(lease.agent_type, Some(ty("rust-specialist")));

    // A shared glob over it is refused with the lease in the way.
    let refused = c
        .reserve(&issue, &reserve("agent-b", &["src/**"], LeaseMode::Shared))
        .unwrap();
    assert!(!refused.granted);
    assert_eq!(refused.conflicts[0].lease_id, lease.lease_id);

    // The check the PreToolUse policy asks: blocked for b, not for the holder; an absolute
    // path inside the token's project is taken relative to it.
    let abs = project.join("src/lib.rs");
    let for_b = c
        .check_lease(&issue, abs.to_str().unwrap(), Some(&id("agent-b")))
        .unwrap();
    assert!(for_b.blocked);
    assert_eq!(for_b.path, "src/lib.rs");
    assert_eq!(for_b.holder.unwrap().agent_id, id("agent-a"));
    assert!(
        !c.check_lease(&issue, "src/lib.rs", Some(&id("agent-a")))
            .unwrap()
            .blocked
    );
    assert!(!c.check_lease(&issue, "src/main.rs", None).unwrap().blocked);

    // Only the holder releases without force.
    let e = c
        .release_lease(&issue, &lease.lease_id, Some(&id("agent-b")))
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let auth = format!("Bearer {t}");
    let (status, body) = crate::common::http(
        env.sidecar_port,
        "DELETE",
        &format!("/api/leases/issue-7/{}?agent=agent-b", lease.lease_id),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(status, 403, "{body}");

    // A token bound to another issue sees and touches nothing of this one.
    let other = SidecarClient::new(env.sidecar_port).with_token(token(
        &env,
        &["--issue", "issue-8", "--project", project.to_str().unwrap()],
    ));
    assert_eq!(other.leases(Some(&issue)).unwrap_err().status(), Some(403));
    assert!(other.leases(None).unwrap().leases.is_empty());

    // Restart: the lease is still there (durable in state.db).
    drop(sidecar);
    sidecar = env.start("sidecar");
    let listed = c.leases(Some(&issue)).unwrap().leases;
    assert_eq!(listed, vec![lease.clone()]);

    // `cco leases` lists it, as a table and as JSON.
    let out = env.run(["leases"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&lease.lease_id) && text.contains("agent-a (rust-specialist)"),
        "{text}"
    );
    let out = env.run(["leases", "--issue", "issue-7", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["leases"][0]["paths"], json!(["src/lib.rs"]));

    // SubagentStop's call: everything agent-a holds is released.
    let done = c.release_agent_leases(&issue, &id("agent-a")).unwrap();
    assert_eq!(done.released, vec![lease.lease_id.clone()]);
    let (status, _) = crate::common::http(
        env.sidecar_port,
        "DELETE",
        &format!("/api/leases/issue-7/{}", lease.lease_id),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(status, 404, "released already");
    assert!(
        !c.check_lease(&issue, "src/lib.rs", Some(&id("agent-b")))
            .unwrap()
            .blocked
    );

    // `cco leases release ID` forces; an unknown id says how to list them.
    let l2 = c
        .reserve(&issue, &reserve("agent-b", &["docs"], LeaseMode::Exclusive))
        .unwrap()
        .lease
        .unwrap();
    let out = env.run(["leases", "release", &l2.lease_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.leases(None).unwrap().leases.is_empty());
    let out = env.run(["leases", "release", &l2.lease_id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`cco leases`"));

    // A finished agent's lease stops blocking others.
    c.reserve(
        &issue,
        &reserve("agent-b", &["Cargo.toml"], LeaseMode::Exclusive),
    )
    .unwrap();
    assert!(c.check_lease(&issue, "Cargo.toml", None).unwrap().blocked);
    register(&c, &issue, "agent-b", "test-writer", AgentState::Failed);
    assert!(!c.check_lease(&issue, "Cargo.toml", None).unwrap().blocked);
    drop(sidecar);
}

fn publish(c: &SidecarClient, publisher: &str, topic: &str, n: u64) {
    c.publish(
        &EventType::parse("note").unwrap(),
        &PublishRequest {
            publisher: publisher.into(),
            topic: topic.into(),
            data: json!({"n": n}),
            correlation_id: None,
        },
    )
    .unwrap();
}

#[test]
fn the_inbox_delivers_each_addressed_event_once_and_counts_the_rest() {
    let env = Env::new();
    let _sidecar = env.start("sidecar");
    let c = SidecarClient::new(env.sidecar_port).with_token(token(&env, &[]));
    let issue = IssueId::parse("issue-9").unwrap();
    register(&c, &issue, "rev-1", "reviewer", AgentState::Started);
    publish(&c, "main", "rev-1", 1); // its id
    publish(&c, "main", "reviewer", 2); // its type
    publish(&c, "main", "issue-9", 3); // the issue's broadcast topic
    publish(&c, "main", "issue-10", 4); // another issue: not its mail
    publish(&c, "main", "tester", 5); // another type
    publish(&c, "rev-1", "issue-9", 6); // its own event
    let first = c.inbox(&issue, &id("rev-1"), None).unwrap();
    let got: Vec<u64> = first
        .events
        .iter()
        .map(|e| e.data["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [1, 2, 3]);
    assert_eq!(first.more, 0);
    assert!(
        c.inbox(&issue, &id("rev-1"), None)
            .unwrap()
            .events
            .is_empty()
    );

    // More than one delivery holds: the rest is counted and comes next time.
    let n = cco::sidecar::inbox::MAX_INBOX_EVENTS as u64 + 5;
    for i in 0..n {
        publish(&c, "main", "rev-1", 100 + i);
    }
    let a = c.inbox(&issue, &id("rev-1"), None).unwrap();
    assert_eq!(a.events.len(), cco::sidecar::inbox::MAX_INBOX_EVENTS);
    assert_eq!(a.more, 5);
    let b = c.inbox(&issue, &id("rev-1"), None).unwrap();
    assert_eq!(b.events.len(), 5);
    assert_eq!(b.more, 0);
    assert_eq!(b.events.last().unwrap().data["n"], json!(100 + n - 1));

    // An agent registered on another issue cannot read it through this one.
    register(
        &c,
        &IssueId::parse("issue-10").unwrap(),
        "x-1",
        "reviewer",
        AgentState::Started,
    );
    assert_eq!(
        c.inbox(&issue, &id("x-1"), None).unwrap_err().status(),
        Some(403)
    );
}

#[test]
fn wait_all_returns_when_every_agent_finished_or_at_the_timeout() {
    let env = Env::new();
    let _sidecar = env.start("sidecar");
    let t = token(&env, &[]);
    let c = SidecarClient::new(env.sidecar_port).with_token(&t);
    let issue = IssueId::parse("issue-11").unwrap();
    register(&c, &issue, "w-1", "rust-specialist", AgentState::Started);
    register(&c, &issue, "w-2", "test-writer", AgentState::Started);

    // A named type nobody registered: not done, at the timeout.
    let short = c
        .wait_all(&issue, &[ty("ghost")], Duration::from_millis(100))
        .unwrap();
    assert!(!short.done && short.timed_out);
    assert_eq!(short.missing_types, vec![ty("ghost")]);

    let waiter = {
        let (port, t, issue) = (env.sidecar_port, t.clone(), issue.clone());
        std::thread::spawn(move || {
            SidecarClient::new(port)
                .with_token(t)
                .wait_all(&issue, &[], Duration::from_secs(60))
                .unwrap()
        })
    };
    // Parked: counted as a subscription by /status.
    let until = Instant::now() + READY_WITHIN;
    while c.status().unwrap().events.active_subscriptions == 0 {
        assert!(Instant::now() < until, "wait_all never parked");
        std::thread::yield_now();
    }
    c.store_result(&ResultSubmission {
        agent_id: id("w-1"),
        agent_type: ty("rust-specialist"),
        issue_id: issue.clone(),
        result: json!({"status": "success", "summary": "parser rewritten"}),
    })
    .unwrap();
    register(&c, &issue, "w-1", "rust-specialist", AgentState::Completed);
    // Not done yet: `done` below needs w-2 too, which is still running here.
    register(&c, &issue, "w-2", "test-writer", AgentState::Failed);
    let answer = waiter.join().unwrap();
    assert!(answer.done && !answer.timed_out, "{answer:?}");
    let w1 = answer
        .agents
        .iter()
        .find(|a| a.agent_id == id("w-1"))
        .unwrap();
    assert_eq!(w1.status, AgentState::Completed);
    assert_eq!(w1.result_status.as_deref(), Some("success"));
    assert_eq!(w1.summary.as_deref(), Some("parser rewritten"));
    let w2 = answer
        .agents
        .iter()
        .find(|a| a.agent_id == id("w-2"))
        .unwrap();
    assert_eq!(w2.status, AgentState::Failed);
    // Of the named type only: done already.
    let typed = c
        .wait_all(&issue, &[ty("test-writer")], Duration::from_millis(1))
        .unwrap();
    assert!(typed.done && typed.agents.len() == 1);
}

/// `cco hook pre-tool-use` for `tool` on `file` as `agent` (None: the main session).
fn pre_tool_use(
    env: &Env,
    token: &str,
    project: &std::path::Path,
    tool: &str,
    file: &str,
    agent: Option<&str>,
) -> serde_json::Value {
    // For Bash, `file` is the command.
    let tool_input = if tool == "Bash" {
        json!({"command": file})
    } else {
        json!({"file_path": file, "old_string": "a", "new_string": "b"})
    };
    let mut input = json!({
        "session_id": "s-1", "hook_event_name": "PreToolUse", "cwd": project,
        "tool_name": tool, "tool_input": tool_input,
    });
    if let Some(a) = agent {
        input["agent_id"] = json!(a);
    }
    run_hook(env, token, "issue-12", "pre-tool-use", &input)
}

#[test]
fn pre_tool_use_denies_edits_of_a_file_another_agent_holds_exclusively() {
    let env = Env::new();
    let _daemon = env.start("daemon");
    let _sidecar = env.start("sidecar");
    let project = env.tmp.path().join("project");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(project.join("Cargo.toml"), "[package]\nname = \"p\"\n").unwrap();
    std::fs::write(project.join("src/lib.rs"), "pub fn a() {}\n").unwrap();
    let project = std::fs::canonicalize(project).unwrap();
    let t = token(&env, &["--project", project.to_str().unwrap()]);
    let c = SidecarClient::new(env.sidecar_port).with_token(&t);
    let issue = IssueId::parse("issue-12").unwrap();
    register(
        &c,
        &issue,
        "holder-1",
        "rust-specialist",
        AgentState::Running,
    );
    let lib = project.join("src/lib.rs");
    let lib = lib.to_str().unwrap();

    // No leases: no change (whatever the policy says without them).
    let before = pre_tool_use(&env, &t, &project, "Edit", lib, Some("other-1"));
    assert_ne!(
        before["hookSpecificOutput"]["permissionDecision"], "deny",
        "{before}"
    );

    c.reserve(
        &issue,
        &reserve("holder-1", &["src/lib.rs"], LeaseMode::Exclusive),
    )
    .unwrap();
    for (tool, file) in [("Edit", lib), ("Write", "src/lib.rs"), ("MultiEdit", lib)] {
        let out = pre_tool_use(&env, &t, &project, tool, file, Some("other-1"));
        let o = &out["hookSpecificOutput"];
        assert_eq!(o["permissionDecision"], "deny", "{tool}: {out}");
        let reason = o["permissionDecisionReason"].as_str().unwrap();
        for part in [
            "src/lib.rs",
            "holder-1",
            "rust-specialist",
            "refactoring the parser",
            "until 20",
            "mcp__cco__wait",
            "mcp__cco__publish",
        ] {
            assert!(reason.contains(part), "{part} missing: {reason}");
        }
    }
    // A Bash command that names the file as written is refused the same way; one that
    // reads it, or writes another file, is not.
    for cmd in [
        "echo x > src/lib.rs",
        "sed -i s/a/b/ src/lib.rs",
        "cargo fmt && rm ./src/../src/lib.rs",
        "cp /tmp/x src/lib.rs",
    ] {
        let out = pre_tool_use(&env, &t, &project, "Bash", cmd, Some("other-1"));
        let o = &out["hookSpecificOutput"];
        assert_eq!(o["permissionDecision"], "deny", "{cmd}: {out}");
        let reason = o["permissionDecisionReason"].as_str().unwrap();
        assert!(
            reason.contains("holder-1") && reason.contains("Write another file"),
            "{reason}"
        );
    }
    for cmd in [
        "cat src/lib.rs",
        "echo x > src/other.rs",
        "cp src/lib.rs /tmp/copy",
    ] {
        let out = pre_tool_use(&env, &t, &project, "Bash", cmd, Some("other-1"));
        assert_ne!(
            out["hookSpecificOutput"]["permissionDecision"], "deny",
            "{cmd}: {out}"
        );
    }
    // The main session (no agent id) is refused too; the holder is not.
    let main = pre_tool_use(&env, &t, &project, "Edit", lib, None);
    assert_eq!(main["hookSpecificOutput"]["permissionDecision"], "deny");
    let holder = pre_tool_use(&env, &t, &project, "Edit", lib, Some("holder-1"));
    assert_eq!(holder, before, "the holder sees what it saw without leases");
    // Other files and reads are untouched.
    let other = project.join("Cargo.toml");
    let other = pre_tool_use(
        &env,
        &t,
        &project,
        "Edit",
        other.to_str().unwrap(),
        Some("other-1"),
    );
    assert_ne!(other["hookSpecificOutput"]["permissionDecision"], "deny");
    let read = pre_tool_use(&env, &t, &project, "Read", lib, Some("other-1"));
    assert_ne!(read["hookSpecificOutput"]["permissionDecision"], "deny");

    // SubagentStop of the holder releases its leases: the edit is allowed again.
    let stop = json!({"session_id": "s-1", "hook_event_name": "SubagentStop", "cwd": project,
        "agent_id": "holder-1", "agent_type": "rust-specialist"});
    run_hook(&env, &t, "issue-12", "subagent-stop", &stop);
    assert!(c.leases(Some(&issue)).unwrap().leases.is_empty());
    let after = pre_tool_use(&env, &t, &project, "Edit", lib, Some("other-1"));
    assert_eq!(after, before);
}

/// `cco hook EVENT` with `input` on stdin, as cco launches it for issue-13; its answer
/// (`Null` for none).
fn hook(env: &Env, token: &str, event: &str, input: &serde_json::Value) -> serde_json::Value {
    run_hook(env, token, "issue-13", event, input)
}

/// `cco hook EVENT` with `input` on stdin, as cco launches it for `issue`; it must exit 0.
/// Its answer (`Null` for none).
fn run_hook(
    env: &Env,
    token: &str,
    issue: &str,
    event: &str,
    input: &serde_json::Value,
) -> serde_json::Value {
    let hooks = std::fs::read_to_string(env.runtime_dir().join("hooks-sealed.json")).unwrap();
    let mut cmd = env.cmd(["hook", event]);
    cmd.env(
        "ORCHESTRATOR_SIDECAR_URL",
        format!("http://127.0.0.1:{}", env.sidecar_port),
    )
    .env("ORCHESTRATOR_TOKEN", token)
    .env("ORCHESTRATOR_ISSUE_ID", issue)
    .env("ORCHESTRATOR_HOOKS_CONFIG", hooks)
    .env(
        "ORCHESTRATOR_AGENTS",
        env.runtime_dir().join("agents-sealed.json"),
    );
    let out = crate::common::run_with_stdin(&mut cmd, input.to_string().as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

/// The inbox pushed through hooks: SubagentStart tells the agent its id and tools and hands
/// over what was already addressed to its type; PostToolUse then delivers each new event
/// once, to the sub-agent it is for or (without `agent_id`) the main session; nothing new is
/// no answer at all.
#[test]
fn hooks_push_each_addressed_event_once() {
    let env = Env::new();
    let _daemon = env.start("daemon");
    let _sidecar = env.start("sidecar");
    let t = token(&env, &[]);
    let c = SidecarClient::new(env.sidecar_port).with_token(&t);
    let context = |out: &serde_json::Value| {
        out["hookSpecificOutput"]["additionalContext"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let start = json!({"session_id": "s-2", "hook_event_name": "SubagentStart",
        "agent_id": "sub-1", "agent_type": "debugger"});
    // The main session's inbox starts at its first hook: nothing yet.
    let main = json!({"session_id": "s-2", "hook_event_name": "UserPromptSubmit", "prompt": "go"});
    assert_eq!(
        hook(&env, &t, "user-prompt-submit", &main),
        serde_json::Value::Null
    );
    let started = hook(&env, &t, "subagent-start", &start);
    let note = context(&started);
    assert!(
        note.contains("You are agent `sub-1` (debugger) on issue `issue-13`")
            && note.contains("mcp__cco__reserve"),
        "{note}"
    );

    publish(&c, "main", "debugger", 41); // its type
    publish(&c, "main", "sub-1", 42); // its id
    publish(&c, "sub-1", "issue-13", 43); // the issue, from it: the main session's mail
    let post = json!({"session_id": "s-2", "hook_event_name": "PostToolUse", "agent_id": "sub-1",
        "agent_type": "debugger", "tool_name": "Read", "tool_input": {"file_path": "x"}});
    let pushed = hook(&env, &t, "post-tool-use", &post);
    assert_eq!(pushed["hookSpecificOutput"]["hookEventName"], "PostToolUse");
    let text = context(&pushed);
    assert!(
        text.contains("{\"n\":41}") && text.contains("{\"n\":42}") && !text.contains("43"),
        "{text}"
    );
    assert_eq!(
        hook(&env, &t, "post-tool-use", &post),
        serde_json::Value::Null
    );

    let mut main_post = post.clone();
    main_post.as_object_mut().unwrap().remove("agent_id");
    let to_main = context(&hook(&env, &t, "post-tool-use", &main_post));
    assert!(to_main.contains("{\"n\":43}"), "{to_main}");

    // A burst is cut to a few lines and says how to get the rest.
    for i in 0..12 {
        publish(&c, "main", "sub-1", 100 + i);
    }
    let burst = context(&hook(&env, &t, "post-tool-use", &post));
    assert!(burst.contains("7 more: call mcp__cco__inbox"), "{burst}");
    let rest = c
        .inbox(&IssueId::parse("issue-13").unwrap(), &id("sub-1"), None)
        .unwrap();
    assert_eq!(rest.events.len(), 7);
}
