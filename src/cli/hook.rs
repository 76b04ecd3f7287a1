//! `cco hook <event>`: Claude Code's command hooks. Each reads the event JSON on stdin, makes
//! at most a couple of loopback calls to the sidecar and prints Claude's answer. A hook must
//! never break Claude: any failure is logged and the hook exits 0 with no decision.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::ValueEnum;
use serde_json::{Value, json};

use crate::api::{AgentId, AgentType, IssueId};
use crate::client::{self, Request};
use crate::policy::{Decision, Policy, decide};

/// Largest event accepted on stdin (tool inputs can be large; transcripts are not sent).
const MAX_STDIN: u64 = 4 * 1024 * 1024;
/// Size budget of the context injected into a sub-agent, in bytes of text.
pub const CONTEXT_BUDGET: usize = 24 * 1024;
/// The hook log is cut back to nothing when it grows past this.
const MAX_LOG: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Event {
    SessionStart,
    SubagentStart,
    SubagentStop,
    PreToolUse,
    Stop,
    SessionEnd,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Claude Code hook event this invocation handles.
    #[arg(value_enum)]
    pub event: Event,
}

/// What a hook needs from the environment Claude passes on (set by the launcher).
struct HookEnv {
    sidecar_port: Option<u16>,
    token: Option<String>,
    issue: Option<IssueId>,
    policy: Policy,
    log: Option<PathBuf>,
    /// Whether the sidecar's port is owned by this user: read from /proc once per hook,
    /// however many calls it makes.
    owner_ok: std::cell::OnceCell<Result<(), String>>,
}

impl HookEnv {
    fn from_process() -> HookEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let policy = var("ORCHESTRATOR_HOOKS_CONFIG")
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .map_or_else(
                || Policy::from_json(&Value::Null),
                |v| Policy::from_json(&v),
            );
        HookEnv {
            sidecar_port: var("ORCHESTRATOR_SIDECAR_URL").and_then(|u| {
                u.rsplit(':')
                    .next()
                    .and_then(|p| p.trim_end_matches('/').parse().ok())
            }),
            token: var("ORCHESTRATOR_TOKEN"),
            issue: var("ORCHESTRATOR_ISSUE_ID").and_then(|s| IssueId::parse(&s).ok()),
            policy,
            // The log lives beside the sealed settings: the private runtime directory.
            log: var("ORCHESTRATOR_SETTINGS")
                .and_then(|s| Path::new(&s).parent().map(|d| d.join("hooks.log"))),
            owner_ok: std::cell::OnceCell::new(),
        }
    }
}

/// Appends one line to the hook log; never fails the hook.
fn log_line(env: &HookEnv, event: Event, msg: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(path) = &env.log else { return };
    if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_LOG) {
        let _ = std::fs::remove_file(path);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        let _ = writeln!(f, "{} {:?} {msg}", crate::auth::now_secs(), event);
    }
}

/// One authenticated JSON call to the sidecar.
fn call(env: &HookEnv, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let (Some(port), Some(token)) = (env.sidecar_port, &env.token) else {
        return Err(
            "not launched by cco (no ORCHESTRATOR_SIDECAR_URL / ORCHESTRATOR_TOKEN)".into(),
        );
    };
    // Never hand the token to a listener another user owns.
    env.owner_ok
        .get_or_init(|| client::check_listener_owner(port))
        .clone()?;
    let auth = format!("Bearer {token}");
    let body = body.map(|b| b.to_string());
    let mut headers = vec![("Authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let req = Request {
        method,
        path,
        headers: &headers,
        body: body.as_deref().map(str::as_bytes),
    };
    let resp = client::send(client::local(port), &req, env.policy.timeout)
        .map_err(|e| format!("{method} {path}: {e}"))?;
    if !(200..300).contains(&resp.status) {
        return Err(format!(
            "{method} {path}: HTTP {} {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    resp.json::<Value>().map_err(|e| e.to_string())
}

/// Issue for this event: the launcher's, else one per Claude session.
fn issue_of(env: &HookEnv, input: &Value) -> IssueId {
    env.issue.clone().unwrap_or_else(|| {
        let session = input["session_id"].as_str().unwrap_or("unknown");
        let clean: String = session
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(100)
            .collect();
        IssueId::parse(&format!("session-{clean}"))
            .unwrap_or_else(|_| IssueId::parse("session").expect("valid"))
    })
}

fn agent_type_of(input: &Value) -> AgentType {
    input["agent_type"]
        .as_str()
        .or_else(|| input["subagent_type"].as_str())
        .and_then(|t| AgentType::parse(t).ok())
        .unwrap_or_else(|| AgentType::parse("general-purpose").expect("valid"))
}

fn agent_id_of(input: &Value, agent_type: &AgentType) -> AgentId {
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

/// Renders the sidecar's context answer (`{issue_id, agent_type, project: {git, metadata,
/// relevant_files, structure, …}, previous_results, truncated}`) as text for the sub-agent,
/// within `budget` bytes: the most specific parts first.
pub fn render_context(
    ctx: &Value,
    issue: &IssueId,
    agent_type: &AgentType,
    budget: usize,
) -> String {
    let project = &ctx["project"];
    let mut s = format!(
        "# cco context for `{agent_type}` on issue `{issue}`\n\
         Your final message is stored as your result for this issue; other agents will read it.\n"
    );
    if let Some(root) = project["root"].as_str() {
        s.push_str(&format!("Project: {root}"));
        if let Some(langs) = project["metadata"]["languages"].as_object() {
            let mut langs: Vec<_> = langs.iter().collect();
            langs.sort_by_key(|(_, n)| std::cmp::Reverse(n.as_u64().unwrap_or(0)));
            let names: Vec<String> = langs
                .iter()
                .take(5)
                .map(|(l, n)| format!("{l} ({n})"))
                .collect();
            s.push_str(&format!(" — files by language: {}", names.join(", ")));
        }
        s.push('\n');
    }
    let git = &project["git"];
    if git.is_object() {
        s.push_str(&format!(
            "\n## Git\nbranch {} at {}",
            git["branch"].as_str().unwrap_or("?"),
            git["head"].as_str().map_or("?", |h| &h[..h.len().min(12)])
        ));
        if let Some(dirty) = git["dirty_files"].as_array().filter(|d| !d.is_empty()) {
            let names: Vec<&str> = dirty
                .iter()
                .filter_map(|d| d.as_str().or(d["path"].as_str()))
                .take(30)
                .collect();
            s.push_str(&format!("; uncommitted changes: {}", names.join(", ")));
        }
        s.push('\n');
        for c in git["recent_commits"]
            .as_array()
            .into_iter()
            .flatten()
            .take(10)
        {
            let hash = c["hash"].as_str().unwrap_or("");
            s.push_str(&format!(
                "- {} {}\n",
                &hash[..hash.len().min(10)],
                c["subject"].as_str().unwrap_or("")
            ));
        }
    }
    if let Some(results) = ctx["previous_results"].as_array().filter(|r| !r.is_empty()) {
        s.push_str("\n## Earlier agents' results on this issue\n");
        for r in results {
            let text = match r["result"]["summary"].as_str() {
                Some(summary) => summary.to_string(),
                None => r["result"].to_string(),
            };
            s.push_str(&format!(
                "- `{}`: {}\n",
                r["agent_type"].as_str().unwrap_or("?"),
                text.chars().take(2000).collect::<String>()
            ));
        }
    }
    if let Some(files) = project["relevant_files"]
        .as_array()
        .filter(|f| !f.is_empty())
    {
        s.push_str("\n## Files relevant to your role\n");
        for f in files {
            if s.len() > budget {
                break;
            }
            let path = f["path"].as_str().unwrap_or("?");
            if let Some(why) = f["withheld"].as_str() {
                s.push_str(&format!("- {path} (content withheld: {why})\n"));
                continue;
            }
            match f["content"].as_str() {
                Some(content) => {
                    s.push_str(&format!("\n### {path}\n```\n{}\n```\n", content.trim_end()))
                }
                None => s.push_str(&format!("- {path}\n")),
            }
        }
    }
    if let Some(entries) = project["structure"].as_array().filter(|e| !e.is_empty()) {
        s.push_str("\n## Project files\n");
        for e in entries {
            let line = e.as_str().unwrap_or("");
            if s.len() + line.len() + 1 > budget {
                break;
            }
            s.push_str(line);
            s.push('\n');
        }
    }
    if s.len() > budget || ctx["truncated"] == true {
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

/// Handles one event; `Ok(Some(json))` is printed for Claude.
fn handle(env: &HookEnv, event: Event, input: &Value) -> Result<Option<Value>, String> {
    let session = input["session_id"].as_str().unwrap_or("unknown");
    let issue = issue_of(env, input);
    let publisher = format!("session-{}", session.chars().take(64).collect::<String>());
    let publish = |event_type: &str, topic: &str, data: Value| {
        call(
            env,
            "POST",
            &format!("/api/events/{event_type}"),
            Some(&json!({"publisher": publisher, "topic": topic, "data": data})),
        )
    };
    match event {
        Event::PreToolUse => {
            let tool = input["tool_name"].as_str().unwrap_or("");
            let cwd = input["cwd"]
                .as_str()
                .map(std::path::PathBuf::from)
                .or_else(|| std::env::current_dir().ok())
                .unwrap_or_default();
            let home = std::env::var_os("HOME").map(PathBuf::from);
            let (decision, reason) = match decide(
                &env.policy,
                tool,
                &input["tool_input"],
                &cwd,
                home.as_deref(),
            ) {
                Decision::Allow(r) => ("allow", r),
                Decision::Ask(r) => ("ask", r),
                Decision::NoOpinion => return Ok(None),
            };
            Ok(Some(pre_tool_use_answer(decision, reason)))
        }
        Event::SessionStart => {
            publish(
                "session_started",
                "session",
                json!({"session_id": session, "issue_id": issue, "cwd": input["cwd"], "source": input["source"]}),
            )?;
            Ok(None)
        }
        Event::SubagentStart => {
            let agent_type = agent_type_of(input);
            let agent_id = agent_id_of(input, &agent_type);
            let register = call(
                env,
                "POST",
                &format!("/api/agents/{agent_id}/status"),
                Some(
                    &json!({"status": "started", "agent_type": agent_type, "issue_id": issue, "message": format!("session {session}")}),
                ),
            );
            // Without the project part (refused, e.g. a session in the home directory, or
            // failed), the agent still gets what earlier agents produced for the issue.
            let ctx = match call(
                env,
                "GET",
                &format!("/api/context/{issue}/{agent_type}"),
                None,
            ) {
                Ok(ctx) => ctx,
                Err(e) => {
                    log_line(
                        env,
                        Event::SubagentStart,
                        &format!("{e}; sending the issue's results only"),
                    );
                    let results = call(env, "GET", &format!("/api/results/{issue}"), None)?;
                    json!({ "previous_results": results["results"] })
                }
            };
            register?;
            let text = render_context(&ctx, &issue, &agent_type, CONTEXT_BUDGET);
            Ok(Some(json!({"hookSpecificOutput": {
                "hookEventName": "SubagentStart",
                "additionalContext": text,
            }})))
        }
        Event::SubagentStop => {
            let agent_type = agent_type_of(input);
            let agent_id = agent_id_of(input, &agent_type);
            let message = final_message(input);
            let status = if message.is_some() {
                "success"
            } else {
                "failed"
            };
            let result = json!({
                "agent_id": agent_id,
                "agent_type": agent_type,
                "issue_id": issue,
                "result": {"status": status, "summary": message.unwrap_or_default(), "session_id": session},
            });
            let stored = call(env, "POST", "/api/results", Some(&result));
            let lifecycle = if stored.is_ok() && status == "success" {
                "completed"
            } else {
                "failed"
            };
            call(
                env,
                "POST",
                &format!("/api/agents/{agent_id}/status"),
                Some(&json!({"status": lifecycle, "agent_type": agent_type, "issue_id": issue})),
            )?;
            stored.map(|_| None)
        }
        Event::Stop => {
            publish(
                "session_stopped",
                "session",
                json!({"session_id": session, "issue_id": issue}),
            )?;
            Ok(None)
        }
        Event::SessionEnd => {
            publish(
                "session_ended",
                "session",
                json!({"session_id": session, "issue_id": issue, "reason": input["reason"]}),
            )?;
            Ok(None)
        }
    }
}

/// The sub-agent's final message: given inline (`last_assistant_message`), else read from its
/// transcript (JSON lines): the last assistant text, or the `message` of the `SubagentHandback`
/// tool call sub-agents report with in auto permission mode.
fn final_message(input: &Value) -> Option<String> {
    if let Some(s) = input["last_assistant_message"]
        .as_str()
        .filter(|s| !s.trim().is_empty())
    {
        return Some(s.to_string());
    }
    let path = input["agent_transcript_path"].as_str()?;
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().rev().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        if v["type"] != "assistant" {
            return None;
        }
        let content = v["message"]["content"].as_array()?;
        let handback = content
            .iter()
            .find(|c| c["type"] == "tool_use" && c["name"] == "SubagentHandback")
            .and_then(|c| c["input"]["message"].as_str());
        let joined = match handback {
            Some(m) => m.to_string(),
            None => content
                .iter()
                .filter(|c| c["type"] == "text")
                .filter_map(|c| c["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        (!joined.trim().is_empty()).then_some(joined)
    })
}

fn pre_tool_use_answer(decision: &str, reason: &str) -> Value {
    json!({"hookSpecificOutput": {
        "hookEventName": "PreToolUse",
        "permissionDecision": decision,
        "permissionDecisionReason": reason,
    }})
}

fn print_answer(out: &Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{out}");
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let env = HookEnv::from_process();
    if !env.policy.enabled {
        return Ok(ExitCode::SUCCESS);
    }
    let mut raw = Vec::new();
    let read = std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())
        .and_then(|n| {
            if n as u64 > MAX_STDIN {
                Err(format!("event on stdin is larger than {MAX_STDIN} bytes"))
            } else {
                serde_json::from_slice::<Value>(&raw)
                    .map_err(|e| format!("unreadable event on stdin: {e}"))
            }
        });
    let input = match read {
        Ok(v) => v,
        Err(e) => {
            log_line(&env, args.event, &e);
            // A tool call cco cannot read may be anything: with confirmation required, ask.
            if args.event == Event::PreToolUse && env.policy.require_cud_confirmation {
                print_answer(&pre_tool_use_answer("ask", crate::policy::ASK_UNREADABLE));
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    match handle(&env, args.event, &input) {
        Ok(Some(out)) => print_answer(&out),
        Ok(None) => {}
        Err(e) => log_line(&env, args.event, &e),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_rendered_within_budget() {
        let ctx = json!({
            "issue_id": "i-1", "agent_type": "rust-specialist", "truncated": false,
            "project": {
                "root": "/p", "metadata": {"languages": {"rust": 3}},
                "git": {"branch": "main", "head": "abc123", "dirty_files": ["src/x.rs"], "recent_commits": [{"hash": "abc123", "subject": "init"}]},
                "relevant_files": [{"path": "src/lib.rs", "content": "pub fn f() {}"}, {"path": "config.yml", "content": "", "withheld": "looks like a secret"}],
                "structure": ["src/lib.rs", "Cargo.toml"],
            },
            "previous_results": [{"agent_type": "chief-architect", "result": {"status": "success", "summary": "use REST"}}],
        });
        let issue = IssueId::parse("i-1").unwrap();
        let at = AgentType::parse("rust-specialist").unwrap();
        let text = render_context(&ctx, &issue, &at, CONTEXT_BUDGET);
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
        let small = render_context(&ctx, &issue, &at, 120);
        assert!(
            small.len() < 260 && small.contains("[context truncated"),
            "{small}"
        );
        assert!(!small.contains("pub fn f()"), "{small}");
    }

    #[test]
    fn final_message_from_input_or_transcript() {
        assert_eq!(
            final_message(&json!({"last_assistant_message": "done"})).as_deref(),
            Some("done")
        );
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t.jsonl");
        std::fs::write(
            &t,
            "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"first\"}]}}\n\
             {\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"final answer\"}]}}\n\
             {\"type\":\"user\",\"message\":{\"content\":\"x\"}}\n",
        )
        .unwrap();
        assert_eq!(
            final_message(&json!({"agent_transcript_path": t})).as_deref(),
            Some("final answer")
        );
        assert_eq!(final_message(&json!({})), None);

        // Auto permission mode: the report is the input of a SubagentHandback call.
        std::fs::write(
            &t,
            "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"name\":\"SubagentHandback\",\"input\":{\"message\":\"handed back\"}}]}}\n",
        )
        .unwrap();
        assert_eq!(
            final_message(&json!({"agent_transcript_path": t})).as_deref(),
            Some("handed back")
        );
    }
}
