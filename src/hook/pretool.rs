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

/// Most written paths of one tool call checked against the leases (one sidecar call each).
const MAX_LEASE_CHECKS: usize = 8;

/// Why a write is refused: another running agent holds a file it writes exclusively — an
/// edit tool's file, or a file a Bash command names as written (`policy::written_paths`).
/// A sidecar that cannot answer refuses nothing (hooks never break Claude); the cause is
/// logged.
fn lease_denial(env: &HookEnv, input: &Value, tool: &str, cwd: &Path) -> Option<String> {
    let paths = crate::policy::written_paths(tool, &input["tool_input"]);
    if paths.is_empty() {
        return None;
    }
    let issue = super::input::issue_of(env.issue.as_ref(), input);
    let agent = input["agent_id"]
        .as_str()
        .and_then(|a| AgentId::parse(a).ok());
    let verb = if tool == "Bash" { "Write" } else { "Edit" };
    for path in paths.iter().take(MAX_LEASE_CHECKS) {
        // The sidecar takes absolute paths relative to the session token's project.
        let abs = lexical(&cwd.join(path));
        let Some(abs) = abs.to_str() else { continue };
        match env.sidecar.lease_check(&issue, abs, agent.as_ref()) {
            Ok(check) => {
                if let Some(l) = check.holder.filter(|_| check.blocked) {
                    return Some(crate::api::inert::line(&format!(
                        "{} is leased: {}. {verb} another file, or call mcp__cco__wait (e.g. for the holder's agent_completed) or coordinate via mcp__cco__publish, then retry",
                        check.path,
                        crate::sidecar::leases::describe(&l)
                    ))
                    .into_owned());
                }
            }
            Err(e) => {
                // The next call would fail the same way: one log line, no denial.
                env.log(super::Event::PreToolUse, &format!("lease check: {e}"));
                return None;
            }
        }
    }
    None
}

/// `path` with `.` and `..` folded away without touching the file system (a command's
/// `src/../src/lib.rs` is the leased `src/lib.rs`).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_folded_lexically() {
        assert_eq!(
            lexical(Path::new("/p/./src/../src/lib.rs")),
            Path::new("/p/src/lib.rs")
        );
        assert_eq!(lexical(Path::new("/../etc")), Path::new("/etc"));
    }
}
