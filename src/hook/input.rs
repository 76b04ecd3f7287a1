//! The event Claude Code writes on stdin, and the ids taken from it. Stdin is read with a
//! size cap; the hook's watchdog bounds how long it may take.

use std::io::Read;

use serde_json::Value;

use crate::api::{AgentId, AgentType, IssueId};

/// Largest event accepted on stdin (tool inputs can be large; transcripts are not sent).
pub const MAX_STDIN: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read the event on stdin: {0}")]
    Io(#[from] std::io::Error),
    #[error("the event on stdin is larger than {MAX_STDIN} bytes")]
    TooLarge,
    #[error("the event on stdin is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

/// The event on stdin: at most [`MAX_STDIN`] bytes of JSON.
pub fn read_stdin() -> Result<Value, InputError> {
    parse(std::io::stdin().lock())
}

fn parse(reader: impl Read) -> Result<Value, InputError> {
    let mut raw = Vec::new();
    reader.take(MAX_STDIN + 1).read_to_end(&mut raw)?;
    if raw.len() as u64 > MAX_STDIN {
        return Err(InputError::TooLarge);
    }
    Ok(serde_json::from_slice(&raw)?)
}

pub fn session_id(input: &Value) -> &str {
    input["session_id"].as_str().unwrap_or("unknown")
}

/// Issue for this event: the launcher's, else one per Claude session.
pub fn issue_of(launcher: Option<&IssueId>, input: &Value) -> IssueId {
    launcher.cloned().unwrap_or_else(|| {
        let clean: String = session_id(input)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(100)
            .collect();
        IssueId::parse(&format!("session-{clean}"))
            .unwrap_or_else(|_| IssueId::parse("session").expect("valid"))
    })
}

pub fn agent_type_of(input: &Value) -> AgentType {
    input["agent_type"]
        .as_str()
        .or_else(|| input["subagent_type"].as_str())
        .and_then(|t| AgentType::parse(t).ok())
        .unwrap_or_else(|| AgentType::parse("general-purpose").expect("valid"))
}

pub fn agent_id_of(input: &Value, agent_type: &AgentType) -> AgentId {
    input["agent_id"]
        .as_str()
        .and_then(|a| AgentId::parse(a).ok())
        .unwrap_or_else(|| {
            let session: String = input["session_id"]
                .as_str()
                .unwrap_or("s")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(12)
                .collect();
            AgentId::parse(&format!("{agent_type}-{session}")).expect("valid")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_is_capped_and_must_be_json() {
        assert!(parse(&b"{\"a\":1}"[..]).is_ok());
        assert!(matches!(
            parse(&b"{\"a\":"[..]),
            Err(InputError::NotJson(_))
        ));
        let big = vec![b' '; MAX_STDIN as usize + 1];
        assert!(matches!(parse(&big[..]), Err(InputError::TooLarge)));
    }
}
