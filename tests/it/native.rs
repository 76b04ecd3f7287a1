//! Agent-native coordination with the real Claude Code CLI (pinned) and the scripted fake
//! Messages API: two sub-agents started in parallel lease, conflict, publish, wait and
//! release through `mcp__cco__*`, events reach a running sub-agent through its hooks, and the
//! main turn's `mcp__cco__wait_all` returns once both are done.

use serde_json::{Value, json};

use crate::claude::real_claude;
use crate::e2e::{env_for, project, run_bounded};
use crate::fake_anthropic::{Call, FakeAnthropic, Reply, Rules};

const ISSUE: &str = "native-1";
/// The sub-agent that leases `src/lib.rs` and the one that wants to edit it.
const HOLDER: &str = "rust-specialist";
const EDITOR: &str = "debugger";
const HOLDER_REASON: &str = "HOLDER-REASON rewriting the parser";
const EDIT_MARK: &str = "EDITOR-MARK";
/// Longest `mcp__cco__wait` a scripted agent asks for (the tool's own maximum is 55 s).
const WAIT_MS: u64 = 50_000;

/// Every `tool_result` text of the conversation so far.
fn results(c: &Call) -> Vec<String> {
    let mut out = Vec::new();
    for m in c.body["messages"].as_array().into_iter().flatten() {
        for b in m["content"].as_array().into_iter().flatten() {
            if b["type"] == "tool_result" {
                match &b["content"] {
                    Value::String(s) => out.push(s.clone()),
                    Value::Array(parts) => out.extend(
                        parts
                            .iter()
                            .filter_map(|p| p["text"].as_str().map(String::from)),
                    ),
                    _ => {}
                }
            }
        }
    }
    out
}

fn seen(c: &Call, needle: &str) -> bool {
    results(c).iter().any(|r| r.contains(needle))
}

fn times(c: &Call, needle: &str) -> usize {
    results(c).iter().filter(|r| r.contains(needle)).count()
}

/// The agent id the SubagentStart note gave this sub-agent.
fn my_id(c: &Call) -> String {
    let body = c.body.to_string();
    let at = body
        .find("You are agent `")
        .unwrap_or_else(|| panic!("no cco note in the sub-agent's request: {body}"));
    let rest = &body[at + "You are agent `".len()..];
    rest[..rest.find('`').unwrap()].to_string()
}

/// A call of cco's `tool`: at once when its definition is loaded, else `ToolSearch` loads it
/// first (Claude Code defers MCP tools until then).
fn mcp(c: &Call, tool: &str, input: Value) -> Reply {
    let name = format!("mcp__cco__{tool}");
    let offered = c.tool_names();
    if offered.contains(&name) {
        return Reply::tool_use(name, input.to_string());
    }
    assert!(
        offered.iter().any(|t| t == "ToolSearch"),
        "{name} is neither loaded nor loadable: {offered:?}"
    );
    Reply::tool_use(
        "ToolSearch",
        json!({"query": format!("select:{name}")}).to_string(),
    )
}

fn holder(c: &Call) -> Reply {
    let me = my_id(c);
    if !seen(c, "\"granted\":true") {
        mcp(
            c,
            "reserve",
            json!({"agent": me, "paths": ["src/lib.rs"], "reason": HOLDER_REASON}),
        )
    } else if !seen(c, &format!("\"topic\":\"{ISSUE}\"")) {
        mcp(
            c,
            "publish",
            json!({"event_type": "lease_taken", "agent": me}),
        )
    } else if !seen(c, "EDITOR-NEEDS-LIB") {
        mcp(
            c,
            "wait",
            json!({"event_type": "editor_blocked", "since": 0, "timeout_ms": WAIT_MS}),
        )
    } else if !seen(c, "\"released\":[") {
        mcp(c, "release", json!({"agent": me}))
    } else if !seen(c, &format!("\"topic\":\"{EDITOR}\"")) {
        mcp(
            c,
            "publish",
            json!({"event_type": "lease_released", "topic": EDITOR, "agent": me}),
        )
    } else {
        Reply::text("HOLDER-DONE")
    }
}

fn editor(c: &Call, lib: &str) -> Reply {
    let me = my_id(c);
    let edit = json!({"file_path": lib, "old_string": "PARSER-MARKER", "new_string": EDIT_MARK});
    if !seen(c, "lease_taken") {
        mcp(
            c,
            "wait",
            json!({"event_type": "lease_taken", "since": 0, "timeout_ms": WAIT_MS}),
        )
    } else if !seen(c, "PARSER-MARKER") {
        Reply::tool_use("Read", json!({"file_path": lib}).to_string())
    } else if !seen(c, "is leased") {
        Reply::tool_use("Edit", edit.to_string())
    } else if !seen(c, &format!("\"topic\":\"{HOLDER}\"")) {
        mcp(
            c,
            "publish",
            json!({"event_type": "editor_blocked", "topic": HOLDER,
                   "data": {"note": "EDITOR-NEEDS-LIB"}, "agent": me}),
        )
    } else if !seen(c, "lease_released") {
        mcp(
            c,
            "wait",
            json!({"event_type": "lease_released", "since": 0, "timeout_ms": WAIT_MS}),
        )
    } else if times(c, "is leased") >= 2 {
        Reply::text("EDITOR-STILL-DENIED")
    } else if !seen(c, "has been updated") {
        Reply::tool_use("Edit", edit.to_string())
    } else {
        Reply::text("EDITOR-DONE")
    }
}

fn main_thread(c: &Call) -> Reply {
    if seen(c, "\"done\":true") || c.is_task_notification() {
        return Reply::text("MAIN-DONE");
    }
    if !c.has_tool_result() {
        let agent = |ty: &str, role: &str| {
            json!({"type": "tool_use", "name": "Agent", "input": {
                "subagent_type": ty, "description": role,
                "prompt": format!("{role}: coordinate on src/lib.rs"), "run_in_background": true}})
        };
        return Reply::Message(vec![
            agent(HOLDER, "ROLE-HOLDER"),
            agent(EDITOR, "ROLE-EDITOR"),
        ]);
    }
    mcp(
        c,
        "wait_all",
        json!({"agent_types": [HOLDER, EDITOR], "timeout_ms": WAIT_MS}),
    )
}

/// Two sub-agents in parallel: the holder leases `src/lib.rs`; the editor's `Edit` of it is
/// denied by the PreToolUse hook naming the holder; it publishes to the holder's type, which
/// the holder's next request carries (pushed by PostToolUse); the holder releases, the
/// editor's retry is allowed; the main turn's `wait_all` returns after both finished.
#[test]
fn two_sub_agents_lease_conflict_publish_release_and_join() {
    let Some(claude) = real_claude() else { return };
    // The project path is known only once the env exists: the script reads it from here.
    let lib = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let script_lib = lib.clone();
    let fake = FakeAnthropic::with_rules(Rules::new().script(move |c| {
        let lib = script_lib.get().expect("project set before the run");
        let user = c.user_text();
        Some(if !c.is_subagent() {
            main_thread(c)
        } else if user.contains("ROLE-HOLDER") {
            holder(c)
        } else if user.contains("ROLE-EDITOR") {
            editor(c, lib)
        } else {
            Reply::text("ok")
        })
    }));
    let env = env_for(&claude, &fake);
    let daemon = env.start("daemon");
    let _sidecar = env.start("sidecar");
    let project = project(&env);
    let lib_path = project.join("src/lib.rs");
    lib.set(lib_path.display().to_string()).unwrap();
    let out = run_bounded(
        &env,
        &project,
        &[
            "--issue",
            ISSUE,
            "--permission-mode",
            "acceptEdits",
            "-p",
            "coordinate the two agents",
        ],
        &fake,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let calls = fake.calls();
    assert!(
        out.status.success() && stdout.contains("MAIN-DONE"),
        "{stdout}\n{stderr}\n{calls:#?}"
    );
    let of = |role: &str| -> Vec<&Call> {
        calls
            .iter()
            .filter(|c| c.is_subagent() && c.user_text().contains(role))
            .collect()
    };
    let (holders, editors) = (of("ROLE-HOLDER"), of("ROLE-EDITOR"));
    let holder_id = my_id(holders[0]);

    // (b) The editor's first Edit was denied, naming the holder, its type and its reason …
    let denial = editors
        .iter()
        .flat_map(|c| results(c))
        .find(|r| r.contains("is leased"))
        .expect("the editor's Edit was denied");
    for part in [holder_id.as_str(), HOLDER, HOLDER_REASON, "mcp__cco__wait"] {
        assert!(denial.contains(part), "{part} missing: {denial}");
    }
    // … and after the release its retry went through.
    let text = std::fs::read_to_string(&lib_path).unwrap();
    assert!(text.contains(EDIT_MARK), "{text}");
    assert!(
        editors.last().unwrap().contains("has been updated"),
        "{:#?}",
        editors.last()
    );

    // (c) The event the editor published to the holder's type was pushed into the holder's
    // next request by its PostToolUse hook (not only returned by its own wait).
    let pushed = holders
        .iter()
        .any(|c| c.contains("[cco inbox:") && c.contains("editor_blocked from"));
    assert!(pushed, "no inbox push reached the holder: {holders:#?}");
    // … and recorded with the hook that carried it: what the holder was told says so.
    let shown = env.run(["agents", "show", holder_id.as_str(), "--json"]);
    let detail: Value = serde_json::from_slice(&shown.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&shown.stderr)));
    let vias: Vec<&str> = detail["told"]["inbox"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["via"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        vias.iter()
            .any(|v| *v == "PostToolUse" || *v == "SubagentStart"),
        "the push is not recorded with its hook: {detail:#}"
    );

    // (d) The main turn's wait_all returned after both: done, both completed.
    let joined = calls
        .iter()
        .filter(|c| !c.is_subagent())
        .flat_map(results)
        .find(|r| r.contains("\"done\":true"))
        .expect("wait_all answered done");
    let answer: Value = serde_json::from_str(&joined).unwrap();
    let statuses: Vec<(&str, &str)> = answer["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["agent_type"].as_str().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses.len(), 2, "{answer}");
    assert!(statuses.iter().all(|(_, s)| *s == "completed"), "{answer}");

    // What Claude Code 2.1.332 puts in a sub-agent's hook input: its `agent_id` (and type)
    // in PreToolUse and PostToolUse, which is how the lease check and the push find it.
    // PreToolUse runs only for the tools cco's matcher names: the editor's Edit fires it,
    // the holder's calls (all cco's MCP tools) do not; PostToolUse follows every call.
    let editor_id = my_id(editors[0]);
    let log = daemon.log_text();
    let fired = |event: &str, id: &str, ty: &str| {
        log.lines().any(|l| {
            l.contains("hook input")
                && l.contains(&format!("event=\"{event}\""))
                && l.contains(id)
                && l.contains(ty)
        })
    };
    assert!(
        fired("PreToolUse", &editor_id, EDITOR),
        "no PreToolUse input with the editor's ids:\n{log}"
    );
    assert!(
        !fired("PreToolUse", &holder_id, HOLDER),
        "PreToolUse ran for an MCP tool:\n{log}"
    );
    assert!(
        fired("PostToolUse", &holder_id, HOLDER),
        "no PostToolUse input with the holder's ids:\n{log}"
    );
}
