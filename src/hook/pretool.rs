//! `PreToolUse`: the policy's decision (`crate::policy`) as Claude Code's answer.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::HookEnv;
use crate::api::AgentId;
use crate::policy::{Decision, decide};

/// Claude Code's answer for a tool call.
pub fn answer(decision: &str, reason: &str) -> Value {
    json!({"hookSpecificOutput": {
        "hookEventName": "PreToolUse",
        "permissionDecision": decision,
        "permissionDecisionReason": reason,
    }})
}

pub fn handle(env: &HookEnv, input: &Value) -> Option<Value> {
    let tool = input["tool_name"].as_str().unwrap_or("");
    let cwd = input["cwd"]
        .as_str()
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    if let Some(reason) = lease_denial(env, input, tool, &cwd) {
        return Some(answer("deny", &reason));
    }
    match decide(
        &env.policy,
        tool,
        &input["tool_input"],
        &cwd,
        env.home.as_deref(),
    ) {
        Decision::Allow(r) => Some(answer("allow", r)),
        Decision::Ask(r) => Some(answer("ask", r)),
        Decision::NoOpinion => None,
    }
}

/// Tools that write the file named by `file_path` / `notebook_path`.
const EDIT_TOOLS: [&str; 4] = ["Edit", "Write", "MultiEdit", "NotebookEdit"];

/// Why an edit is refused: another running agent holds the file exclusively. A sidecar
/// that cannot answer refuses nothing (hooks never break Claude); the cause is logged.
fn lease_denial(env: &HookEnv, input: &Value, tool: &str, cwd: &Path) -> Option<String> {
    if !EDIT_TOOLS.contains(&tool) {
        return None;
    }
    let ti = &input["tool_input"];
    let path = ti["file_path"].as_str().or(ti["notebook_path"].as_str())?;
    // The sidecar takes absolute paths relative to the session token's project.
    let abs = cwd.join(path);
    let issue = super::input::issue_of(env.issue.as_ref(), input);
    let agent = input["agent_id"]
        .as_str()
        .and_then(|a| AgentId::parse(a).ok());
    match env
        .sidecar
        .lease_check(&issue, abs.to_str()?, agent.as_ref())
    {
        Ok(check) => check.holder.filter(|_| check.blocked).map(|l| {
            crate::api::inert::line(&format!(
                "{} is leased: {}. Edit another file, or call mcp__cco__wait (e.g. for the holder's agent_completed) or coordinate via mcp__cco__publish, then retry",
                check.path,
                crate::sidecar::leases::describe(&l)
            ))
            .into_owned()
        }),
        Err(e) => {
            env.log(super::Event::PreToolUse, &format!("lease check: {e}"));
            None
        }
    }
}
