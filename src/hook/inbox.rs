//! The inbox pushed through hooks: PostToolUse, SubagentStart and UserPromptSubmit answer
//! with `additionalContext` listing the events addressed to the agent since its last
//! delivery (the sidecar's cursor, so each is delivered once). Nothing new, nothing injected.

use serde_json::{Value, json};

use super::HookEnv;
use super::sidecar::HookError;
use crate::api::sidecar::Event;
use crate::api::{AgentId, AgentType, IssueId};

/// Most events one hook answer lists; the rest are counted ("N more: call mcp__cco__inbox").
pub const PUSH_MAX_EVENTS: usize = 5;
/// Most bytes of event JSON one push takes from the sidecar: a push rides in the agent's
/// context, so it stays small; a larger first event is still delivered, its data cut.
pub const PUSH_MAX_BYTES: usize = 2 * 1024;
/// Longest event data shown in a push, in characters.
const PUSH_DATA_CHARS: usize = 300;
/// The agent id the main session's inbox is kept under (as the MCP tools name it).
pub use crate::api::MAIN_AGENT;

/// Who the hook speaks for: Claude Code's hook input names the sub-agent (`agent_id`,
/// `agent_type`) in every event a sub-agent fires; without them it is the main session.
pub fn recipient(input: &Value) -> (AgentId, Option<AgentType>) {
    match input["agent_id"]
        .as_str()
        .and_then(|a| AgentId::parse(a).ok())
    {
        Some(id) => (id, Some(super::input::agent_type_of(input))),
        None => (AgentId::parse(MAIN_AGENT).expect("valid id"), None),
    }
}

/// The text of the events delivered to `agent` since its last delivery through the hook
/// `via`, or `None` when nothing is new.
pub fn pending(
    env: &HookEnv,
    issue: &IssueId,
    agent: &AgentId,
    agent_type: Option<&AgentType>,
    via: &str,
) -> Result<Option<String>, HookError> {
    let limits = (PUSH_MAX_EVENTS, PUSH_MAX_BYTES);
    let batch = env.sidecar.inbox(issue, agent, agent_type, via, limits)?;
    Ok(render(&batch.events, batch.more))
}

/// `hookSpecificOutput` carrying the pending events for `hook_event`, or `None`.
pub fn push(
    env: &HookEnv,
    input: &Value,
    issue: &IssueId,
    hook_event: &str,
) -> Result<Option<Value>, HookError> {
    let (agent, agent_type) = recipient(input);
    let text = pending(env, issue, &agent, agent_type.as_ref(), hook_event)?;
    Ok(text.map(|t| {
        json!({"hookSpecificOutput": {
            "hookEventName": hook_event,
            "additionalContext": crate::api::inert::block(&t),
        }})
    }))
}

/// The events as a short block for a model: who sent what to whom, and how to get the rest.
/// Raw text: the caller makes it inert with the rest of its answer.
pub fn render(events: &[Event], more: u64) -> Option<String> {
    if events.is_empty() {
        return None;
    }
    let mut s = format!(
        "[cco inbox: {} new event(s) addressed to you; answer with mcp__cco__publish]\n",
        events.len() as u64 + more
    );
    for e in events.iter().take(PUSH_MAX_EVENTS) {
        let mut data = e.data.clone();
        // cco stamps the issue into every event's data: not news to its own agents.
        if let Some(m) = data.as_object_mut() {
            m.remove("issue_id");
        }
        let data = data.to_string();
        let data = if data.chars().count() > PUSH_DATA_CHARS {
            let cut: String = data.chars().take(PUSH_DATA_CHARS - 1).collect();
            format!("{cut}…")
        } else {
            data
        };
        s.push_str(&format!(
            "- #{} {} from {} to {}: {data}\n",
            e.seq, e.event_type, e.publisher, e.topic
        ));
    }
    let left = more + events.len().saturating_sub(PUSH_MAX_EVENTS) as u64;
    if left > 0 {
        s.push_str(&format!("{left} more: call mcp__cco__inbox\n"));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, data: Value) -> Event {
        serde_json::from_value(json!({
            "event_id": format!("e{seq}"), "seq": seq, "event_type": "api_ready",
            "publisher": "backend-1", "topic": "frontend-dev", "data": data,
            "timestamp": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn nothing_new_injects_nothing() {
        assert_eq!(render(&[], 0), None);
    }

    #[test]
    fn a_push_is_bounded_and_says_how_to_get_the_rest() {
        let events: Vec<Event> = (1..=7)
            .map(|i| event(i, json!({"issue_id": "i-1", "port": 8000 + i})))
            .collect();
        let text = render(&events, 3).unwrap();
        assert!(text.starts_with("[cco inbox: 10 new event(s)"), "{text}");
        assert!(
            text.contains("- #1 api_ready from backend-1 to frontend-dev: {\"port\":8001}"),
            "{text}"
        );
        assert!(!text.contains("#6 "), "{text}");
        assert!(text.ends_with("5 more: call mcp__cco__inbox\n"), "{text}");
        let big = render(&[event(1, json!({"blob": "x".repeat(10_000)}))], 0).unwrap();
        assert!(big.len() < PUSH_DATA_CHARS + 200, "{}", big.len());
    }

    #[test]
    fn the_recipient_is_the_sub_agent_or_the_main_session() {
        let (id, ty) = recipient(&json!({"agent_id": "a1b2", "agent_type": "debugger"}));
        assert_eq!((id.as_str(), ty.unwrap().as_str()), ("a1b2", "debugger"));
        let (id, ty) = recipient(&json!({"session_id": "s"}));
        assert_eq!((id.as_str(), ty), (MAIN_AGENT, None));
    }
}
