//! Wire types of cost accounting: the `claude_code.api_request` records the daemon decodes
//! from Claude Code's OpenTelemetry export, and the sidecar's `/api/cost` answers that join
//! them to agents, issues and outcomes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One model request as Claude Code reported it (`claude_code.api_request` log record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostRecord {
    /// The idempotency key: `session.id` + `event.sequence` (unique per session), or, for an
    /// exporter without `event.sequence`, `session.id` + `prompt.id` + time + model.
    pub key: String,
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_id: Option<String>,
    /// Set for a sub-agent's request: the id the SubagentStart hook registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_source: Option<String>,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_creation_tokens: u64,
    pub cost_usd: f64,
    pub duration_ms: u64,
    /// When the request was made (the log record's time), unix milliseconds.
    pub timestamp_ms: u64,
}

/// `POST /api/cost/records` (the daemon's forward of one OTLP export).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostRecords {
    pub records: Vec<CostRecord>,
}

/// The answer to `POST /api/cost/records`: how many were new, how many were already stored
/// (a retried export).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostRecordsStored {
    pub stored: u64,
    pub duplicates: u64,
}

/// What `GET /api/cost` groups by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostBy {
    /// The agent type; the main thread's own requests are `orchestrator`.
    #[default]
    AgentType,
    Issue,
    Model,
    Session,
    /// The agent id; the main thread's own requests are `orchestrator:<session id>`.
    Agent,
}

impl CostBy {
    pub const ALL: [CostBy; 5] = [
        CostBy::AgentType,
        CostBy::Issue,
        CostBy::Model,
        CostBy::Session,
        CostBy::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CostBy::AgentType => "agent-type",
            CostBy::Issue => "issue",
            CostBy::Model => "model",
            CostBy::Session => "session",
            CostBy::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<CostBy> {
        CostBy::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

impl fmt::Display for CostBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Requests, tokens and dollars summed over some records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CostSums {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_creation_tokens: u64,
    pub cost_usd: f64,
}

impl CostSums {
    pub fn add(&mut self, r: &CostRecord) {
        self.requests += 1;
        self.input_tokens += r.input_tokens;
        self.output_tokens += r.output_tokens;
        self.cache_read_tokens += r.cache_read_tokens;
        self.cache_creation_tokens += r.cache_creation_tokens;
        self.cost_usd += r.cost_usd;
    }

    pub fn merge(&mut self, o: &CostSums) {
        self.requests += o.requests;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_read_tokens += o.cache_read_tokens;
        self.cache_creation_tokens += o.cache_creation_tokens;
        self.cost_usd += o.cost_usd;
    }

    /// Every kind of token.
    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_creation_tokens
    }
}

/// One group of `GET /api/cost`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostRow {
    pub key: String,
    #[serde(flatten)]
    pub sums: CostSums,
}

/// `GET /api/cost?issue=I&by=…&since=…`: groups, most expensive first, and their total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    pub by: CostBy,
    pub rows: Vec<CostRow>,
    pub total: CostSums,
}

/// What the agents of one outcome spent: how many agents, and their records' sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct OutcomeSpend {
    pub agents: u64,
    #[serde(flatten)]
    pub sums: CostSums,
}

/// One issue of `GET /api/cost/outcomes`: sub-agents' spend by how they ended, and the
/// orchestrator's (main thread's) own spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRow {
    pub issue: String,
    pub completed: OutcomeSpend,
    pub failed: OutcomeSpend,
    /// Agents still started or running.
    pub active: OutcomeSpend,
    pub orchestrator: CostSums,
    pub total: CostSums,
}

/// `GET /api/cost/outcomes?issue=I`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostOutcomes {
    pub rows: Vec<OutcomeRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_flat_and_by_is_kebab_case() {
        let report = CostReport {
            by: CostBy::AgentType,
            rows: vec![CostRow {
                key: "orchestrator".into(),
                sums: CostSums {
                    requests: 1,
                    cost_usd: 0.5,
                    ..CostSums::default()
                },
            }],
            total: CostSums::default(),
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["by"], "agent-type");
        assert_eq!(v["rows"][0]["key"], "orchestrator");
        assert_eq!(v["rows"][0]["requests"], 1);
        assert_eq!(v["rows"][0]["cost_usd"], 0.5);
        assert!(v["total"].get("key").is_none());
        let back: CostReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, report);
        for b in CostBy::ALL {
            assert_eq!(CostBy::parse(b.as_str()), Some(b));
            assert_eq!(serde_json::to_value(b).unwrap(), b.as_str());
        }
    }
}
