//! Claude Code's hooks, written once ([`answer`]) for two transports: `cco hook <event>`
//! (stdin → stdout, [`run`]) and the daemon's `POST /hooks/<event>`. A hook must never break
//! Claude: any failure is logged and the answer is empty.

mod inbox;
mod input;
mod pretool;
mod sidecar;
mod subagent;
mod transcript;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::policy::Policy;

pub use input::{MAX_STDIN, agent_id_of, agent_type_of, issue_of};
pub use sidecar::HookError;
pub use subagent::{CONTEXT_BUDGET, render_context};

/// The hook log is cut back to nothing when it grows past this.
const MAX_LOG: u64 = 1024 * 1024;
/// The watchdog ends the hook this long after its deadline if a call or read is still
/// stuck; Claude's own kill comes at least 2.5 s later (`daemon::runtime`).
const WATCHDOG_GRACE: Duration = Duration::from_millis(500);

/// The hook events cco registers: the one list the settings file and `cco hook` share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Event {
    SessionStart,
    UserPromptSubmit,
    SubagentStart,
    SubagentStop,
    PreToolUse,
    PostToolUse,
    Stop,
    SessionEnd,
}

impl Event {
    pub const ALL: [Event; 8] = [
        Event::SessionStart,
        Event::UserPromptSubmit,
        Event::SubagentStart,
        Event::SubagentStop,
        Event::PreToolUse,
        Event::PostToolUse,
        Event::Stop,
        Event::SessionEnd,
    ];

    /// The URL path of the event's http hook on the daemon.
    pub fn http_path(self) -> String {
        format!("/hooks/{}", self.subcommand())
    }

    /// The event's name in Claude Code's settings and hook input.
    pub fn claude_name(self) -> &'static str {
        match self {
            Event::SessionStart => "SessionStart",
            Event::UserPromptSubmit => "UserPromptSubmit",
            Event::SubagentStart => "SubagentStart",
            Event::SubagentStop => "SubagentStop",
            Event::PreToolUse => "PreToolUse",
            Event::PostToolUse => "PostToolUse",
            Event::Stop => "Stop",
            Event::SessionEnd => "SessionEnd",
        }
    }

    /// The `cco hook` sub-command that handles it.
    pub fn subcommand(self) -> &'static str {
        match self {
            Event::SessionStart => "session-start",
            Event::UserPromptSubmit => "user-prompt-submit",
            Event::SubagentStart => "subagent-start",
            Event::SubagentStop => "subagent-stop",
            Event::PreToolUse => "pre-tool-use",
            Event::PostToolUse => "post-tool-use",
            Event::Stop => "stop",
            Event::SessionEnd => "session-end",
        }
    }
}

/// What a hook needs from the environment Claude passes on (set by the launcher).
pub struct HookEnv {
    pub sidecar: sidecar::Sidecar,
    pub issue: Option<crate::api::IssueId>,
    pub policy: Policy,
    pub home: Option<PathBuf>,
    /// The sealed roster (`agents-sealed.json`): which agent types list cco's tools.
    pub roster: Option<PathBuf>,
    log: HookLog,
}

/// `<runtime dir>/hooks.log`: why a hook gave no answer.
#[derive(Debug, Clone)]
struct HookLog(Option<PathBuf>);

impl HookEnv {
    /// From the process environment; the deadline starts now.
    pub fn from_process() -> HookEnv {
        HookEnv::from_vars(
            |k| std::env::var(k).ok().filter(|v| !v.is_empty()),
            Instant::now(),
        )
    }

    /// For the daemon's http transport: the same policy, sidecar and log as a command hook
    /// launched by cco would have; the deadline starts at `start`.
    pub fn new(
        policy: Policy,
        sidecar_port: u16,
        token: Option<String>,
        issue: Option<crate::api::IssueId>,
        runtime_dir: &Path,
        start: Instant,
    ) -> HookEnv {
        HookEnv {
            sidecar: sidecar::Sidecar::new(Some(sidecar_port), token, start + policy.timeout),
            issue,
            policy,
            home: std::env::var_os("HOME").map(PathBuf::from),
            roster: Some(runtime_dir.join(crate::seal::AGENTS)),
            log: HookLog(Some(runtime_dir.join("hooks.log"))),
        }
    }

    /// The daemon has just verified that the sidecar's port is this user's.
    pub fn with_sidecar_owner_verified(mut self) -> HookEnv {
        self.sidecar = self.sidecar.owner_verified();
        self
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>, start: Instant) -> HookEnv {
        let policy = var("ORCHESTRATOR_HOOKS_CONFIG")
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .map_or_else(
                || Policy::from_json(&Value::Null),
                |v| Policy::from_json(&v),
            );
        let port = var("ORCHESTRATOR_SIDECAR_URL").and_then(|u| {
            u.rsplit(':')
                .next()
                .and_then(|p| p.trim_end_matches('/').parse().ok())
        });
        HookEnv {
            // One deadline for the whole hook, shared by every call it makes.
            sidecar: sidecar::Sidecar::new(port, var("ORCHESTRATOR_TOKEN"), start + policy.timeout),
            issue: var("ORCHESTRATOR_ISSUE_ID").and_then(|s| crate::api::IssueId::parse(&s).ok()),
            policy,
            home: var("HOME").map(PathBuf::from),
            roster: var("ORCHESTRATOR_AGENTS").map(PathBuf::from),
            // The log lives beside the sealed settings: the private runtime directory.
            log: HookLog(
                var("ORCHESTRATOR_SETTINGS")
                    .and_then(|s| Path::new(&s).parent().map(|d| d.join("hooks.log"))),
            ),
        }
    }

    /// Appends one line to the hook log, made inert; never fails the hook.
    pub fn log(&self, event: Event, msg: &str) {
        self.log.write(event, msg);
    }
}

impl HookLog {
    fn write(&self, event: Event, msg: &str) {
        use std::os::unix::fs::OpenOptionsExt;
        let Some(path) = &self.0 else { return };
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.len() > MAX_LOG) {
            let _ = std::fs::remove_file(path);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            let _ = writeln!(
                f,
                "{} {} {}",
                crate::auth::now_secs(),
                event.claude_name(),
                crate::api::inert::line(msg)
            );
        }
    }
}

/// Guards stdout: the answer is printed at most once, by the handler or by the watchdog.
static ANSWERED: Mutex<bool> = Mutex::new(false);

fn print_answer(out: &Value) {
    write_once(&mut ANSWERED.lock().unwrap_or_else(|e| e.into_inner()), out);
}

fn write_once(answered: &mut bool, out: &Value) {
    if !*answered {
        *answered = true;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{out}");
        let _ = stdout.flush();
    }
}

/// What the hook prints when it cannot finish: for a tool call with confirmation
/// required, `ask`; otherwise nothing.
pub fn fallback_answer(env: &HookEnv, event: Event) -> Option<Value> {
    (event == Event::PreToolUse && env.policy.require_cud_confirmation)
        .then(|| pretool::answer("ask", crate::policy::ASK_UNREADABLE))
}

/// Ends the process shortly after the hook's deadline if it is still running (a stdin that
/// never closes, a sidecar that accepts and never answers, a slow file).
fn start_watchdog(env: &HookEnv, event: Event) {
    let deadline = env.sidecar.deadline() + WATCHDOG_GRACE;
    let fallback = fallback_answer(env, event);
    let log = env.log.clone();
    std::thread::spawn(move || {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        // Holding the guard until exit: an answer being printed is finished, none starts.
        let mut answered = ANSWERED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(out) = &fallback {
            write_once(&mut answered, out);
        }
        log.write(
            event,
            "hook deadline passed; exiting with no further answer (raise hooks.timeout_ms if this repeats)",
        );
        std::process::exit(0);
    });
}

/// Runs one hook event end to end: never fails, whatever the input or the sidecar do.
pub fn run(event: Event) {
    let env = HookEnv::from_process();
    if !env.policy.enabled {
        return;
    }
    start_watchdog(&env, event);
    let input = match input::read_stdin() {
        Ok(v) => v,
        Err(e) => {
            env.log(event, &e.to_string());
            // A tool call cco cannot read may be anything: with confirmation required, ask.
            if let Some(out) = fallback_answer(&env, event) {
                print_answer(&out);
            }
            return;
        }
    };
    if let Some(out) = answer(event, &input, &env) {
        print_answer(&out);
    }
}

/// Claude's answer to one event, whatever the transport: `None` is no answer. Never fails;
/// a failure is logged to the hook log.
pub fn answer(event: Event, input: &Value, env: &HookEnv) -> Option<Value> {
    if !env.policy.enabled {
        return None;
    }
    match handle(env, event, input) {
        Ok(out) => out,
        Err(e) => {
            env.log(event, &e.to_string());
            None
        }
    }
}

/// Handles one event; `Ok(Some(json))` is printed for Claude.
pub fn handle(env: &HookEnv, event: Event, input: &Value) -> Result<Option<Value>, HookError> {
    let session = input::session_id(input);
    let issue = input::issue_of(env.issue.as_ref(), input);
    let publish = |event_type: &'static str, data: Value| {
        env.sidecar.publish(
            event_type,
            &format!("session-{}", session.chars().take(64).collect::<String>()),
            "session",
            data,
        )
    };
    match event {
        Event::PreToolUse => Ok(pretool::handle(env, input)),
        Event::PostToolUse | Event::UserPromptSubmit => {
            inbox::push(env, input, &issue, event.claude_name())
        }
        Event::SessionStart => {
            publish(
                "session_started",
                json!({"session_id": session, "issue_id": issue, "cwd": input["cwd"], "source": input["source"]}),
            )?;
            Ok(None)
        }
        Event::SubagentStart => subagent::start(env, input, &issue).map(Some),
        Event::SubagentStop => subagent::stop(env, input, &issue).map(|()| None),
        Event::Stop => {
            publish(
                "session_stopped",
                json!({"session_id": session, "issue_id": issue}),
            )?;
            Ok(None)
        }
        Event::SessionEnd => {
            publish(
                "session_ended",
                json!({"session_id": session, "issue_id": issue, "reason": input["reason"]}),
            )?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_event_has_its_subcommand() {
        for e in Event::ALL {
            assert_eq!(Event::from_str(e.subcommand(), false), Ok(e));
        }
        assert_eq!(Event::ALL.len(), Event::value_variants().len());
    }
}
