//! `PreToolUse`: the policy's decision (`crate::policy`) as Claude Code's answer.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::HookEnv;
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
