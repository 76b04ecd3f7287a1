//! Wire types of "what each agent was told" (issue 12 §2): `GET /api/agents/{agent_id}` and
//! the report the daemon sends after answering a SubagentStart hook. Hashes and sizes only,
//! never the text itself.

use serde::{Deserialize, Serialize};

use super::sidecar::{AgentRecord, StoredResult};
use super::{AgentType, IssueId};

/// `GET /api/agents/{agent_id}`: the registry entry, what cco injected into the agent, and
/// its stored result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDetail {
    pub agent: AgentRecord,
    pub told: Told,
    pub result: Option<StoredResult>,
}

/// Everything cco injected into one agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Told {
    /// The context handed over at SubagentStart (`null` when none was recorded).
    pub context: Option<ToldContext>,
    /// The short note about the agent's id and cco's tools, when it had one.
    pub note: Option<ToldNote>,
    /// Every inbox event delivered to it, oldest first.
    pub inbox: Vec<ToldDelivery>,
}

/// The SubagentStart context as the agent received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToldContext {
    /// Bytes of the text the agent received (`additionalContext`).
    pub bytes: u64,
    /// Something was left out to stay within `budget`.
    pub truncated: bool,
    /// The byte budget the text was cut to.
    pub budget: u64,
    /// `sha256:<hex>` of the text the agent received.
    pub hash: String,
    /// The project files whose content (or "withheld" line) the text contained.
    pub files: Vec<ToldFile>,
    /// The earlier agents' results the text contained.
    pub results: Vec<ToldResult>,
    /// When it was handed over (RFC 3339, UTC).
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToldFile {
    /// Relative to the project root.
    pub path: String,
    /// Bytes of the content the context carried.
    pub bytes: u64,
    /// `sha256:<hex>` of that content.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToldResult {
    pub issue_id: IssueId,
    pub agent_type: AgentType,
    /// `sha256:<hex>` of the stored result (its JSON file).
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToldNote {
    pub bytes: u64,
    pub hash: String,
}

/// One inbox event delivered to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToldDelivery {
    pub seq: u64,
    pub event_type: String,
    pub topic: String,
    /// RFC 3339, UTC.
    pub delivered_at: String,
    /// The hook whose answer carried it (`PostToolUse`, `SubagentStart`, `UserPromptSubmit`),
    /// `mcp` for the `inbox` tool, `api` for a script.
    pub via: String,
}

/// `POST /api/agents/{agent_id}/told`: the `additionalContext` a hook answered with, sent by
/// the daemon after the answer left, so recording costs the hook nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToldReport {
    pub issue_id: IssueId,
    pub agent_type: AgentType,
    /// The hook event (`SubagentStart`).
    pub via: String,
    /// The text exactly as Claude received it.
    pub text: String,
    /// The byte budget the hook cut the context to.
    pub budget: u64,
}

/// `sha256:<hex>` of `bytes`: the form every hash in these types takes.
pub fn hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_prefixed_sha256_hex() {
        assert_eq!(
            hash(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
