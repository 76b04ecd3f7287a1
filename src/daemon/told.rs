//! After a SubagentStart hook's answer has left, tells the sidecar what the agent received
//! (`POST /api/agents/{id}/told`): the text exactly as Claude got it, recorded as hashes and
//! sizes on the sidecar, at no cost to the hook.

use std::time::Duration;

use serde_json::Value;

use crate::api::told::ToldReport;
use crate::api::{AgentId, AgentType, IssueId};
use crate::client::SidecarClient;
use crate::hook::{self, Event};

/// The report's own limit: it runs after the answer, so only the log waits for it.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A SubagentStart about to be answered: whose context to report once the answer exists.
#[derive(Debug)]
pub struct Pending {
    agent_id: AgentId,
    agent_type: AgentType,
    issue: IssueId,
    port: u16,
    token: String,
}

impl Pending {
    /// `Some` for the events whose answer carries what cco tells an agent.
    pub fn of(
        event: Event,
        input: &Value,
        issue: Option<&IssueId>,
        port: u16,
        token: &str,
    ) -> Option<Pending> {
        if event != Event::SubagentStart {
            return None;
        }
        let agent_type = hook::agent_type_of(input);
        Some(Pending {
            agent_id: hook::agent_id_of(input, &agent_type),
            agent_type,
            issue: hook::issue_of(issue, input),
            port,
            token: token.to_string(),
        })
    }

    /// The report for `answer`, if it told the agent anything.
    fn report(&self, answer: &Value) -> Option<ToldReport> {
        let text = answer["hookSpecificOutput"]["additionalContext"].as_str()?;
        Some(ToldReport {
            issue_id: self.issue.clone(),
            agent_type: self.agent_type.clone(),
            via: Event::SubagentStart.claude_name().to_string(),
            text: text.to_string(),
            budget: hook::CONTEXT_BUDGET as u64,
        })
    }

    /// Sends the report on a blocking thread nobody waits for; a failure is logged.
    pub fn send(self, answer: &Value) {
        let Some(report) = self.report(answer) else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            let client = SidecarClient::new(self.port)
                .with_token(self.token)
                .with_timeout(REPORT_TIMEOUT);
            if let Err(e) = client.report_told(&self.agent_id, &report) {
                tracing::warn!(agent = %self.agent_id, error = %e, "could not record what the agent was told");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_subagent_start_with_context_is_reported() {
        let input = json!({"session_id": "s1", "agent_id": "a-1", "agent_type": "reviewer"});
        assert!(Pending::of(Event::Stop, &input, None, 1, "t").is_none());
        let p = Pending::of(Event::SubagentStart, &input, None, 1, "t").unwrap();
        assert_eq!(p.agent_id.as_str(), "a-1");
        assert_eq!(p.issue.as_str(), "session-s1");
        assert!(p.report(&json!({})).is_none());
        let answer = json!({"hookSpecificOutput": {"hookEventName": "SubagentStart",
            "additionalContext": "# cco context"}});
        let r = p.report(&answer).unwrap();
        assert_eq!(
            (r.text.as_str(), r.via.as_str()),
            ("# cco context", "SubagentStart")
        );
        assert_eq!(r.agent_type.as_str(), "reviewer");
    }
}
