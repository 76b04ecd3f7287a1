//! `SubagentStart` (register the agent, hand it its context) and `SubagentStop` (store its
//! final message as its result, cut to fit the sidecar's body limit when it must be).

use serde_json::{Value, json};

use super::sidecar::HookError;
use super::{Event, HookEnv, input, transcript};
use crate::api::sidecar::{
    AgentState, AgentStatusUpdate, ProjectContext, ResultSubmission, StoredResult,
};
use crate::api::{AgentId, AgentType, IssueId};

/// Size budget of the context injected into a sub-agent, in bytes of text.
pub const CONTEXT_BUDGET: usize = 24 * 1024;
/// Most bytes of the note that tells a sub-agent its id, its issue and cco's tools.
pub const NOTE_BUDGET: usize = 600;
/// Room left in a result body for everything but the final message (ids, status, marks).
const RESULT_ENVELOPE: usize = 4 * 1024;
/// Smaller cuts tried when the sidecar still answers 413 (its `max_body_bytes` was lowered;
/// the smallest allowed is 1024).
const SMALLER_SUMMARIES: [usize; 2] = [64 * 1024, 512];

pub fn start(env: &HookEnv, input: &Value, issue: &IssueId) -> Result<Value, HookError> {
    let session = input::session_id(input);
    let agent_type = input::agent_type_of(input);
    let agent_id = input::agent_id_of(input, &agent_type);
    let update = AgentStatusUpdate {
        status: AgentState::Started,
        agent_type: agent_type.clone(),
        issue_id: issue.clone(),
        message: Some(format!("session {session}")),
    };
    // The registration (a durable commit) and the context are independent: the answer
    // waits for the slower of the two, not for their sum.
    let (register, text) = std::thread::scope(|scope| {
        let register = scope.spawn(|| env.sidecar.agent_status(&agent_id, &update));
        let text = context_text(env, issue, &agent_type);
        let register = register
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (register, text)
    });
    let text = text?;
    register?;
    let mut text = format!(
        "{}\n{text}",
        note(
            &agent_id,
            &agent_type,
            issue,
            has_cco_tools(env, &agent_type)
        )
    );
    // Events already addressed to it (its type, the issue) since it was registered.
    match super::inbox::pending(env, issue, &agent_id, Some(&agent_type), "SubagentStart") {
        Ok(Some(mail)) => text.push_str(&format!("\n{mail}")),
        Ok(None) => {}
        Err(e) => env.log(Event::SubagentStart, &format!("inbox: {e}")),
    }
    Ok(json!({"hookSpecificOutput": {
        "hookEventName": "SubagentStart",
        "additionalContext": crate::api::inert::block(&text),
    }}))
}

/// The context for `agent_type` on `issue`, rendered. Without the project part (refused,
/// e.g. a session in the home directory, or failed), the agent still gets what earlier
/// agents produced for the issue.
fn context_text(
    env: &HookEnv,
    issue: &IssueId,
    agent_type: &AgentType,
) -> Result<String, HookError> {
    Ok(match env.sidecar.context(issue, agent_type) {
        Ok(ctx) => render_context(
            Some(&ctx.project),
            &ctx.previous_results,
            ctx.truncated,
            issue,
            agent_type,
            CONTEXT_BUDGET,
        ),
        Err(e) => {
            env.log(
                Event::SubagentStart,
                &format!("{e}; sending the issue's results only"),
            );
            let results = env.sidecar.results(issue)?;
            render_context(
                None,
                &results.results,
                false,
                issue,
                agent_type,
                CONTEXT_BUDGET,
            )
        }
    })
}

/// What a sub-agent must know to coordinate: who it is (the `agent` argument of cco's
/// tools) and, when its tools list has them, which tools exist for what. At most
/// [`NOTE_BUDGET`] bytes.
pub fn note(agent: &AgentId, agent_type: &AgentType, issue: &IssueId, tools: bool) -> String {
    let who = format!("[cco] You are agent `{agent}` ({agent_type}) on issue `{issue}`.");
    let mut s = if tools {
        format!(
            "{who} Pass agent=\"{agent}\" to cco's tools. Before editing files others may edit, \
             mcp__cco__reserve them (others' edits are then denied), mcp__cco__release when done. \
             mcp__cco__publish / wait / inbox exchange events; new ones addressed to you also \
             appear here. results, context, agents, reservations, wait_all: the issue's state."
        )
    } else {
        format!("{who} Events addressed to you appear here.")
    };
    if s.len() > NOTE_BUDGET {
        // Only very long ids get here (each is at most 128 bytes).
        let mut cut = NOTE_BUDGET;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Whether the sealed roster gives `agent_type` cco's MCP tools: a type it lists with a
/// `tools` list must name `mcp__cco`; a type without a list, or one it does not know
/// (Claude's own, whose tools are all tools), has them.
fn has_cco_tools(env: &HookEnv, agent_type: &AgentType) -> bool {
    let Some(path) = &env.roster else { return true };
    let Ok(bytes) = std::fs::read(path) else {
        return true;
    };
    let Ok(roster) = serde_json::from_slice::<Value>(&bytes) else {
        return true;
    };
    match roster[agent_type.as_str()]["tools"].as_array() {
        Some(tools) => tools.iter().any(|t| {
            t.as_str().is_some_and(|t| {
                t == crate::roster::CCO_MCP_TOOLS
                    || t.starts_with(&format!("{}__", crate::roster::CCO_MCP_TOOLS))
            })
        }),
        None => true,
    }
}

pub fn stop(env: &HookEnv, input: &Value, issue: &IssueId) -> Result<(), HookError> {
    let session = input::session_id(input);
    let agent_type = input::agent_type_of(input);
    let agent_id = input::agent_id_of(input, &agent_type);
    let message = transcript::final_message(input).unwrap_or_else(|e| {
        env.log(Event::SubagentStop, &format!("no final message: {e}"));
        None
    });
    let success = message.is_some();
    let message = message.unwrap_or_default();
    let limit = crate::config::Config::default().sidecar.max_body_bytes;
    let budgets = std::iter::once(limit.saturating_sub(RESULT_ENVELOPE)).chain(SMALLER_SUMMARIES);
    let mut stored = Err(HookError::NotLaunched);
    for budget in budgets {
        let (summary, truncated) = fit_summary(&message, budget);
        let mut result = json!({
            "status": if success { "success" } else { "failed" },
            "summary": summary,
            "session_id": session,
        });
        if truncated {
            result["truncated"] = json!(true);
            result["message_bytes"] = json!(message.len());
            env.log(
                Event::SubagentStop,
                &format!(
                    "final message of {agent_id} is {} bytes; stored its first {} bytes with truncated: true",
                    message.len(),
                    summary.len()
                ),
            );
        }
        stored = env.sidecar.store_result(&ResultSubmission {
            agent_id: agent_id.clone(),
            agent_type: agent_type.clone(),
            issue_id: issue.clone(),
            result,
        });
        if !stored.as_ref().is_err_and(HookError::is_too_large) {
            break;
        }
    }
    let lifecycle = if stored.is_ok() && success {
        AgentState::Completed
    } else {
        AgentState::Failed
    };
    // Its leases end with it; a failure here only delays that to their expiry.
    if let Err(e) = env.sidecar.release_leases(issue, &agent_id) {
        env.log(Event::SubagentStop, &format!("releasing leases: {e}"));
    }
    env.sidecar.agent_status(
        &agent_id,
        &AgentStatusUpdate {
            status: lifecycle,
            agent_type,
            issue_id: issue.clone(),
            message: None,
        },
    )?;
    stored.map(|_| ())
}

/// `message` cut so that it takes at most `budget` bytes as a JSON string, with a note
/// saying so; `true` when it was cut.
fn fit_summary(message: &str, budget: usize) -> (String, bool) {
    let escaped = |c: char| match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    };
    if message.chars().map(escaped).sum::<usize>() + 2 <= budget {
        return (message.to_string(), false);
    }
    let note = format!(
        "\n[cco: final message truncated; it was {} bytes]",
        message.len()
    );
    let room = budget.saturating_sub(note.len() + 8);
    let mut used = 0;
    let mut end = 0;
    for (i, c) in message.char_indices() {
        used += escaped(c);
        if used > room {
            break;
        }
        end = i + c.len_utf8();
    }
    (format!("{}{note}", &message[..end]), true)
}

/// Renders the sidecar's context (the project part, when there is one, and the issue's
/// earlier results) as text for the sub-agent, within `budget` bytes: the most specific
/// parts first.
pub fn render_context(
    project: Option<&ProjectContext>,
    previous_results: &[StoredResult],
    truncated: bool,
    issue: &IssueId,
    agent_type: &AgentType,
    budget: usize,
) -> String {
    let mut s = format!(
        "# cco context for `{agent_type}` on issue `{issue}`\n\
         Your final message is stored as your result for this issue; other agents will read it.\n"
    );
    if let Some(project) = project {
        s.push_str(&format!("Project: {}", project.root));
        let mut langs: Vec<_> = project.metadata.languages.iter().collect();
        if !langs.is_empty() {
            langs.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
            let names: Vec<String> = langs
                .iter()
                .take(5)
                .map(|(l, n)| format!("{l} ({n})"))
                .collect();
            s.push_str(&format!(" — files by language: {}", names.join(", ")));
        }
        s.push('\n');
    }
    if let Some(git) = project.and_then(|p| p.git.as_ref()) {
        let head = git.head.as_deref().map_or("?", |h| &h[..h.len().min(12)]);
        s.push_str(&format!(
            "\n## Git\nbranch {} at {head}",
            git.branch.as_deref().unwrap_or("?"),
        ));
        if !git.dirty_files.is_empty() {
            let names: Vec<&str> = git
                .dirty_files
                .iter()
                .take(30)
                .map(String::as_str)
                .collect();
            s.push_str(&format!("; uncommitted changes: {}", names.join(", ")));
        }
        s.push('\n');
        for c in git.recent_commits.iter().take(10) {
            s.push_str(&format!(
                "- {} {}\n",
                &c.hash[..c.hash.len().min(10)],
                c.subject
            ));
        }
    }
    if !previous_results.is_empty() {
        s.push_str("\n## Earlier agents' results on this issue\n");
        for r in previous_results {
            let text = match r.result["summary"].as_str() {
                Some(summary) => summary.to_string(),
                None => r.result.to_string(),
            };
            s.push_str(&format!(
                "- `{}`: {}\n",
                r.agent_type,
                text.chars().take(2000).collect::<String>()
            ));
        }
    }
    let files = project.map_or(&[][..], |p| &p.relevant_files[..]);
    if !files.is_empty() {
        s.push_str("\n## Files relevant to your role\n");
        for f in files {
            if s.len() > budget {
                break;
            }
            match &f.withheld {
                Some(why) => s.push_str(&format!("- {} (content withheld: {why})\n", f.path)),
                None => s.push_str(&format!(
                    "\n### {}\n```\n{}\n```\n",
                    f.path,
                    f.content.trim_end()
                )),
            }
        }
    }
    let structure = project.map_or(&[][..], |p| &p.structure[..]);
    if !structure.is_empty() {
        s.push_str("\n## Project files\n");
        for line in structure {
            if s.len() + line.len() + 1 > budget {
                break;
            }
            s.push_str(line);
            s.push('\n');
        }
    }
    if s.len() > budget || truncated {
        let mut cut = budget.min(s.len());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(&format!(
            "\n[context truncated: the full answer is GET $ORCHESTRATOR_API_URL/api/context/{issue}/{agent_type}]\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::sidecar::Context;

    #[test]
    fn context_is_rendered_within_budget() {
        let ctx: Context = serde_json::from_value(json!({
            "issue_id": "i-1", "agent_type": "rust-specialist", "truncated": false, "budget_bytes": 65536,
            "project": {
                "root": "/p", "name": "p", "patterns": [], "truncated": false,
                "metadata": {"languages": {"rust": 3}, "file_count": 2, "dir_count": 1, "total_bytes": 10},
                "git": {"branch": "main", "head": "abc123", "dirty_files": ["src/x.rs"],
                    "recent_commits": [{"hash": "abc123", "author": "a", "date": "d", "subject": "init"}]},
                "relevant_files": [
                    {"path": "src/lib.rs", "size": 13, "content": "pub fn f() {}", "truncated": false},
                    {"path": "config.yml", "size": 9, "content": "", "truncated": false, "withheld": "looks like a secret"}],
                "structure": ["src/lib.rs", "Cargo.toml"],
            },
            "previous_results": [{"agent_id": "a1", "agent_type": "chief-architect", "issue_id": "i-1",
                "stored_at": "2026-01-01T00:00:00Z", "result": {"status": "success", "summary": "use REST"}}],
        }))
        .unwrap();
        let issue = IssueId::parse("i-1").unwrap();
        let at = AgentType::parse("rust-specialist").unwrap();
        let render = |budget| {
            render_context(
                Some(&ctx.project),
                &ctx.previous_results,
                ctx.truncated,
                &issue,
                &at,
                budget,
            )
        };
        let text = render(CONTEXT_BUDGET);
        for want in [
            "rust-specialist",
            "branch main",
            "src/x.rs",
            "use REST",
            "pub fn f()",
            "Cargo.toml",
            "init",
            "rust (3)",
            "config.yml (content withheld: looks like a secret)",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        let small = render(120);
        assert!(
            small.len() < 260 && small.contains("[context truncated"),
            "{small}"
        );
        assert!(!small.contains("pub fn f()"), "{small}");
    }

    /// Issue 15 (low): a final message too large for the sidecar is cut to fit, and says so.
    #[test]
    fn an_oversized_final_message_is_cut_to_fit() {
        assert_eq!(fit_summary("short", 100), ("short".to_string(), false));
        let big = "é\"\u{1}".repeat(400_000);
        let (cut, truncated) = fit_summary(&big, 1024 * 1024 - RESULT_ENVELOPE);
        assert!(truncated);
        assert!(
            cut.ends_with(&format!("it was {} bytes]", big.len())),
            "{}",
            &cut[cut.len() - 80..]
        );
        let json_len = serde_json::to_string(&cut).unwrap().len();
        assert!(json_len <= 1024 * 1024 - RESULT_ENVELOPE, "{json_len}");
        let (tiny, _) = fit_summary(&big, 512);
        assert!(serde_json::to_string(&tiny).unwrap().len() <= 512);
    }

    #[test]
    fn the_note_names_the_agent_and_fits_its_budget() {
        let issue = IssueId::parse("issue-7").unwrap();
        let ty = AgentType::parse("rust-specialist").unwrap();
        let id = AgentId::parse("a3f9c2d1e0b7").unwrap();
        let with = note(&id, &ty, &issue, true);
        assert!(with.len() <= NOTE_BUDGET, "{} bytes", with.len());
        for want in [
            "agent `a3f9c2d1e0b7`",
            "issue `issue-7`",
            "agent=\"a3f9c2d1e0b7\"",
            "mcp__cco__reserve",
        ] {
            assert!(with.contains(want), "{want}: {with}");
        }
        let without = note(&id, &ty, &issue, false);
        assert!(!without.contains("mcp__cco"), "{without}");
        let long = AgentId::parse(&"x".repeat(128)).unwrap();
        let longest = IssueId::parse(&"y".repeat(128)).unwrap();
        assert!(note(&long, &ty, &longest, true).len() <= NOTE_BUDGET);
    }

    /// The note mentions cco's tools only to agents whose tools list has them (or who have
    /// every tool); the roster says which.
    #[test]
    fn the_sealed_roster_says_which_agents_have_cco_tools() {
        let dir = tempfile::tempdir().unwrap();
        let roster = dir.path().join(crate::seal::AGENTS);
        std::fs::write(
            &roster,
            json!({
                "rust-specialist": {"description": "d", "prompt": "p", "tools": ["Read", "mcp__cco"]},
                "reader": {"description": "d", "prompt": "p", "tools": ["Read", "Grep"]},
                "picky": {"description": "d", "prompt": "p", "tools": ["mcp__cco__publish"]},
                "everything": {"description": "d", "prompt": "p"},
            })
            .to_string(),
        )
        .unwrap();
        let path = roster.display().to_string();
        let env = HookEnv::from_vars(
            |k| (k == "ORCHESTRATOR_AGENTS").then(|| path.clone()),
            std::time::Instant::now(),
        );
        let has = |t: &str| has_cco_tools(&env, &AgentType::parse(t).unwrap());
        assert!(has("rust-specialist"));
        assert!(!has("reader"));
        assert!(has("picky"));
        assert!(has("everything"));
        assert!(
            has("general-purpose"),
            "Claude's own agents have every tool"
        );
    }
}
