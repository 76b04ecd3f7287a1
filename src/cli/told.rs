//! `cco agents show <agent id>`: one agent of the registry, what cco told it (the
//! SubagentStart context, its note, the inbox deliveries) and its result, from
//! `GET /api/agents/{agent_id}`.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use crate::api::told::AgentDetail;
use crate::api::{AgentId, inert};
use crate::auth::{Keys, Scope, TokenSpec};
use crate::client::{ServiceError, SidecarClient};
use crate::paths::Installation;
use crate::secret::Secret;

/// Lifetime of the token minted for one command.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Characters of the result's summary printed (`--json` has all of it).
const SUMMARY_CHARS: usize = 600;
/// Hex digits of a hash printed (`--json` has all of them).
const HASH_DIGITS: usize = 16;

/// What the sidecar knows of an agent id.
pub enum Lookup {
    Found(Box<AgentDetail>),
    /// No agent has this id (the sidecar said 404, or nothing is installed to ask).
    Unknown,
    /// The sidecar did not answer; the message says how to check it.
    Unreachable(String),
}

/// Asks the sidecar for `id`.
pub fn fetch(inst: &Installation, id: &AgentId) -> anyhow::Result<Lookup> {
    // No secret: nothing was installed, so no sidecar ever registered an agent.
    let Ok(secret) = Secret::load(&inst.paths.secret_file()) else {
        return Ok(Lookup::Unknown);
    };
    let keys = Keys::new(&secret)?;
    let mut spec = TokenSpec::session("cco-agents", TOKEN_TTL);
    spec.scopes = vec![Scope::AgentsRead];
    let port = inst.config.sidecar.port;
    let client = SidecarClient::new(port).with_token(keys.mint(&spec).0);
    match client.agent(id) {
        Ok(d) => Ok(Lookup::Found(Box::new(d))),
        Err(e) if e.status() == Some(404) => Ok(Lookup::Unknown),
        Err(e @ ServiceError::Unreachable { .. }) => Ok(Lookup::Unreachable(format!(
            "the sidecar on 127.0.0.1:{port} does not answer ({e}), so no agent id was looked up — check it with `cco health`, start it with `cco daemon start`"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Prints `detail` as JSON or as text.
pub fn print(detail: &AgentDetail, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", inert::json_pretty(detail)?)?;
    } else {
        out.write_all(render(detail).as_bytes())?;
    }
    Ok(())
}

fn short(hash: &str) -> String {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    format!("sha256:{}", &hex[..hex.len().min(HASH_DIGITS)])
}

/// The agent as text: who it is, what it was told, what it produced.
pub fn render(d: &AgentDetail) -> String {
    let a = &d.agent;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "agent {} ({}) on issue {}: {}",
        a.agent_id,
        a.agent_type,
        a.issue_id,
        a.status.as_str()
    );
    let _ = writeln!(
        s,
        "  started {}, updated {}",
        inert::line(&a.started_at),
        inert::line(&a.updated_at)
    );
    s.push_str("\nwhat cco told it\n");
    match &d.told.context {
        None => s.push_str("  context: none recorded\n"),
        Some(c) => {
            let _ = writeln!(
                s,
                "  context at SubagentStart, {}: {} bytes (budget {}){}, {}",
                inert::line(&c.at),
                c.bytes,
                c.budget,
                if c.truncated { ", truncated" } else { "" },
                short(&c.hash)
            );
            for f in &c.files {
                let _ = writeln!(
                    s,
                    "    file   {}  {} bytes  {}",
                    inert::line(&f.path),
                    f.bytes,
                    short(&f.hash)
                );
            }
            for r in &c.results {
                let _ = writeln!(
                    s,
                    "    result {} on {}  {}",
                    r.agent_type,
                    r.issue_id,
                    short(&r.hash)
                );
            }
        }
    }
    if let Some(n) = &d.told.note {
        let _ = writeln!(s, "  note: {} bytes, {}", n.bytes, short(&n.hash));
    }
    if d.told.inbox.is_empty() {
        s.push_str("  inbox: nothing delivered\n");
    } else {
        let n = d.told.inbox.len();
        let _ = writeln!(
            s,
            "  inbox: {n} {} delivered",
            if n == 1 { "event" } else { "events" }
        );
        for e in &d.told.inbox {
            let _ = writeln!(
                s,
                "    #{} {} on {} via {} at {}",
                e.seq,
                inert::line(&e.event_type),
                inert::line(&e.topic),
                inert::line(&e.via),
                inert::line(&e.delivered_at)
            );
        }
    }
    match &d.result {
        None => s.push_str("\nresult: none stored\n"),
        Some(r) => {
            let status = r.result["status"].as_str().unwrap_or("?");
            let _ = writeln!(
                s,
                "\nresult ({}, stored {}):",
                inert::line(status),
                inert::line(&r.stored_at)
            );
            let text = r.result["summary"]
                .as_str()
                .map_or_else(|| r.result.to_string(), String::from);
            let mut cut: String = text.chars().take(SUMMARY_CHARS).collect();
            if cut.len() < text.len() {
                cut.push_str("… (`--json` has all of it)");
            }
            for line in cut.lines() {
                let _ = writeln!(s, "  {}", inert::line(line));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_reads_as_text() {
        let d: AgentDetail = serde_json::from_value(serde_json::json!({
            "agent": {"agent_id": "a-1", "agent_type": "reviewer", "issue_id": "i-1",
                "status": "completed", "started_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:01:00Z"},
            "told": {
                "context": {"bytes": 900, "truncated": true, "budget": 24576,
                    "hash": format!("sha256:{}", "ab".repeat(32)),
                    "files": [{"path": "src/lib.rs", "bytes": 13, "hash": "sha256:00"}],
                    "results": [{"issue_id": "i-1", "agent_type": "chief-architect", "hash": "sha256:11"}],
                    "at": "2026-01-01T00:00:01Z"},
                "note": null,
                "inbox": [{"seq": 7, "event_type": "note", "topic": "reviewer",
                    "delivered_at": "2026-01-01T00:00:30Z", "via": "PostToolUse"}]},
            "result": {"agent_id": "a-1", "agent_type": "reviewer", "issue_id": "i-1",
                "stored_at": "2026-01-01T00:01:00Z",
                "result": {"status": "success", "summary": "looks good\u{1b}[2J"}}
        }))
        .unwrap();
        let text = render(&d);
        for want in [
            "agent a-1 (reviewer) on issue i-1: completed",
            "900 bytes (budget 24576), truncated, sha256:abababababababab\n",
            "file   src/lib.rs  13 bytes",
            "result chief-architect on i-1",
            "#7 note on reviewer via PostToolUse",
            "result (success, stored 2026-01-01T00:01:00Z)",
            "looks good\\u001b[2J",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
    }
}
