//! The content of the sealed runtime files, rendered from the installation (pure: the
//! daemon seals what this returns).

use std::path::Path;

use serde_json::{Value, json};

use crate::config::{Config, HookTransport};
use crate::hook::Event;
use crate::roster::{self, Roster};
use crate::seal::RuntimeFiles;

/// Quotes a path for the POSIX shell Claude Code runs command hooks with.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `cco hook` may wait `timeout_ms` for the sidecar; Claude's own timeout (seconds) is
/// set above that so Claude never kills a hook that is about to give up by itself.
fn claude_hook_timeout_secs(timeout_ms: u64) -> u64 {
    timeout_ms.div_ceil(1000) + 3
}

/// The hook policy file and `ORCHESTRATOR_HOOKS_CONFIG`.
pub fn hooks_policy(config: &Config) -> Value {
    json!({
        "enabled": config.hooks.enabled,
        "permissions": {
            "auto_allow_read": config.hooks.auto_allow_read,
            "require_cud_confirmation": config.hooks.require_cud_confirmation,
        },
        "timeouts": { "hook_ms": config.hooks.timeout_ms },
    })
}

/// The environment variables an http hook's headers read: Claude interpolates only these.
const HTTP_HOOK_ENV: [&str; 2] = ["ORCHESTRATOR_TOKEN", "ORCHESTRATOR_ISSUE_ID"];

/// Events that stay command hooks under the http transport: Claude Code runs no http hooks
/// for SessionStart, and a failed SessionEnd http hook is the one failure Claude prints on
/// stderr (a daemon gone mid-session); it runs once, off the interactive path.
pub const COMMAND_ONLY: [Event; 2] = [Event::SessionStart, Event::SessionEnd];

/// One hook entry for `event`: an http hook to the daemon when the transport is `http`.
fn hook_entry(config: &Config, exe: &str, event: Event) -> Value {
    let timeout = claude_hook_timeout_secs(config.hooks.timeout_ms);
    if config.hooks.transport == HookTransport::Http && !COMMAND_ONLY.contains(&event) {
        return json!({
            "type": "http",
            "url": format!("http://127.0.0.1:{}{}", config.daemon.port, event.http_path()),
            "headers": {
                "Authorization": "Bearer ${ORCHESTRATOR_TOKEN}",
                "X-Cco-Issue": "${ORCHESTRATOR_ISSUE_ID}",
            },
            "allowedEnvVars": HTTP_HOOK_ENV,
            "timeout": timeout,
        });
    }
    let sub = event.subcommand();
    json!({ "type": "command", "command": format!("{exe} hook {sub}"), "timeout": timeout })
}

/// A Claude Code settings file: hooks that report to the sidecar, and the environment
/// every tool call sees. No secret goes in here: the token travels in the environment.
pub fn settings(config: &Config, exe: &Path) -> Value {
    let exe = shell_quote(&exe.to_string_lossy());
    let mut hooks = serde_json::Map::new();
    if config.hooks.enabled {
        for event in Event::ALL {
            let mut group = json!({ "hooks": [hook_entry(config, &exe, event)] });
            match event {
                // Only the tools the policy may answer for: any other call costs no hook.
                Event::PreToolUse => {
                    let policy = crate::policy::Policy::from_json(&hooks_policy(config));
                    group["matcher"] = json!(crate::policy::pre_tool_use_matcher(&policy));
                }
                // The inbox push follows every tool call.
                Event::PostToolUse => group["matcher"] = json!("*"),
                _ => {}
            }
            hooks.insert(event.claude_name().into(), json!([group]));
        }
    }
    json!({
        "hooks": hooks,
        // cco's own MCP tools touch only cco's event bus and results, never the project, so
        // they need no prompt (in `-p` mode an unlisted MCP tool is refused outright).
        "permissions": { "allow": [format!("mcp__{MCP_SERVER_NAME}")] },
        "env": {
            "ORCHESTRATOR_ENABLED": "true",
            "ORCHESTRATOR_API_URL": format!("http://127.0.0.1:{}", config.daemon.port),
            "ORCHESTRATOR_SIDECAR_URL": format!("http://127.0.0.1:{}", config.sidecar.port),
        },
    })
}

pub use crate::mcp::MCP_SERVER_NAME;

/// The `--mcp-config` file: cco's MCP server on the daemon's port. The headers are Claude
/// Code's `${VAR}` expansions of the launcher's environment, so no secret is written here.
pub fn mcp_config(config: &Config) -> Value {
    json!({
        "mcpServers": {
            MCP_SERVER_NAME: {
                "type": "http",
                "url": format!("http://127.0.0.1:{}/mcp", config.daemon.port),
                "headers": {
                    "Authorization": "Bearer ${ORCHESTRATOR_TOKEN}",
                    crate::mcp::ISSUE_HEADER: "${ORCHESTRATOR_ISSUE_ID}",
                },
            }
        }
    })
}

/// Everything the daemon seals.
pub fn render(config: &Config, roster: &Roster, exe: &Path) -> RuntimeFiles {
    let pretty = |v: &Value| {
        let mut s = serde_json::to_vec_pretty(v).expect("JSON serializes");
        s.push(b'\n');
        s
    };
    RuntimeFiles {
        settings: pretty(&settings(config, exe)),
        agents: roster.claude_json().into_bytes(),
        rules: roster::rules().as_bytes().to_vec(),
        hooks: pretty(&hooks_policy(config)),
        mcp: pretty(&mcp_config(config)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/usr/bin/cco"), "/usr/bin/cco");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn http_transport_registers_http_hooks_except_session_start_and_end() {
        let s = settings(&Config::default(), Path::new("/opt/cco"));
        let hook = |e: &str| s["hooks"][e][0]["hooks"][0].clone();
        assert_eq!(
            hook("SessionStart")["command"],
            "/opt/cco hook session-start"
        );
        assert_eq!(hook("SessionEnd")["command"], "/opt/cco hook session-end");
        for e in [
            "UserPromptSubmit",
            "SubagentStart",
            "SubagentStop",
            "PreToolUse",
            "PostToolUse",
            "Stop",
        ] {
            assert_eq!(hook(e)["type"], "http", "{e}");
            assert!(
                hook(e)["url"]
                    .as_str()
                    .unwrap()
                    .starts_with("http://127.0.0.1:3000/hooks/")
            );
            assert_eq!(
                hook(e)["headers"]["Authorization"],
                "Bearer ${ORCHESTRATOR_TOKEN}"
            );
            assert_eq!(hook(e)["allowedEnvVars"], json!(HTTP_HOOK_ENV));
        }
        assert_eq!(
            hook("PreToolUse")["url"],
            "http://127.0.0.1:3000/hooks/pre-tool-use"
        );
    }

    #[test]
    fn settings_shape() {
        let mut command = Config::default();
        command.hooks.transport = HookTransport::Command;
        let s = settings(&command, Path::new("/opt/my cco/cco"));
        assert_eq!(s["env"]["ORCHESTRATOR_API_URL"], "http://127.0.0.1:3000");
        let cmd = s["hooks"]["SubagentStart"][0]["hooks"][0]["command"]
            .as_str()
            .unwrap();
        assert_eq!(cmd, "'/opt/my cco/cco' hook subagent-start");
        // PreToolUse runs only for the tools the policy may answer for.
        let matcher = s["hooks"]["PreToolUse"][0]["matcher"].as_str().unwrap();
        let tools: Vec<&str> = matcher.split('|').collect();
        for t in [
            "Edit",
            "Write",
            "MultiEdit",
            "NotebookEdit",
            "Bash",
            "Read",
            "Agent",
        ] {
            assert!(tools.contains(&t), "{t} missing from {matcher}");
        }
        assert!(!tools.contains(&"WebFetch"), "{matcher}");
        let mut writes_only = command.clone();
        writes_only.hooks.auto_allow_read = false;
        let m =
            settings(&writes_only, Path::new("/x"))["hooks"]["PreToolUse"][0]["matcher"].clone();
        assert_eq!(m, "Write|Edit|MultiEdit|NotebookEdit|Bash");
        // Every tool call may carry the inbox back: PostToolUse sees them all.
        assert_eq!(s["hooks"]["PostToolUse"][0]["matcher"], "*");
        assert!(!s.to_string().contains("TOKEN"));
        assert_eq!(s["permissions"]["allow"], json!(["mcp__cco"]));

        let mut c = Config::default();
        c.hooks.enabled = false;
        assert_eq!(settings(&c, Path::new("/x"))["hooks"], json!({}));
    }

    /// The MCP config points at the daemon and carries only `${VAR}` references.
    #[test]
    fn mcp_config_names_env_vars_not_secrets() {
        let mut c = Config::default();
        c.daemon.port = 3456;
        let m = mcp_config(&c);
        let cco = &m["mcpServers"]["cco"];
        assert_eq!(cco["type"], "http");
        assert_eq!(cco["url"], "http://127.0.0.1:3456/mcp");
        assert_eq!(
            cco["headers"]["Authorization"],
            "Bearer ${ORCHESTRATOR_TOKEN}"
        );
        assert_eq!(cco["headers"]["X-Cco-Issue"], "${ORCHESTRATOR_ISSUE_ID}");
    }
}
