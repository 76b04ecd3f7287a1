//! The launcher — the hot path: check the daemon's health, verify the sealed files, set the
//! `ORCHESTRATOR_*` environment and `exec` Claude Code. No async runtime; it never starts a
//! process of its own, and stdout belongs to Claude.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::api::{DaemonHealth, IssueId};
use crate::auth::{Keys, TokenSpec};
use crate::client::{self, ClientError, Request};
use crate::paths::{Installation, process_env};
use crate::roster::{self, MAX_ARG_BYTES, RosterChoice};
use crate::seal::{self, AGENTS, HOOKS, MCP, RULES, SETTINGS, Verified};
use crate::secret::Secret;

/// How long the launcher waits for the daemon before it gives up.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(3);
/// Pause between connection attempts while the daemon is not listening.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Names tried on `PATH` when no Claude path is configured, in order.
pub const CLAUDE_NAMES: [&str; 3] = ["claude", "claude-code", "claude-ai"];

/// cco's own launcher options, taken only from the front of the arguments.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LaunchOptions {
    pub quiet: bool,
    pub issue: Option<String>,
    pub config: Option<PathBuf>,
    /// `--roster`: which agents to pass for this launch, over `launcher.roster`.
    pub roster: Option<RosterChoice>,
}

impl LaunchOptions {
    /// Splits leading `--quiet` / `--issue ID` / `--config FILE` / `--roster WHICH` off;
    /// everything else goes to Claude untouched.
    pub fn split(args: Vec<OsString>) -> Result<(LaunchOptions, Vec<OsString>), LaunchError> {
        let mut opts = LaunchOptions::default();
        let mut rest = args.into_iter().peekable();
        while let Some(arg) = rest.peek().and_then(|a| a.to_str()) {
            if arg == "--quiet" {
                opts.quiet = true;
            } else if arg == "--issue" {
                rest.next();
                let v = rest
                    .peek()
                    .and_then(|a| a.to_str())
                    .ok_or(LaunchError::IssueMissing)?;
                opts.issue = Some(v.to_string());
            } else if let Some(v) = arg.strip_prefix("--issue=") {
                opts.issue = Some(v.to_string());
            } else if arg == "--config" {
                rest.next();
                let v = rest.peek().ok_or(LaunchError::ConfigMissing)?;
                opts.config = Some(PathBuf::from(v));
            } else if let Some(v) = arg.strip_prefix("--config=") {
                opts.config = Some(PathBuf::from(v));
            } else if arg == "--roster" {
                rest.next();
                let v = rest
                    .peek()
                    .and_then(|a| a.to_str())
                    .ok_or(LaunchError::RosterMissing)?;
                opts.roster = Some(RosterChoice::parse(v).map_err(LaunchError::BadRoster)?);
            } else if let Some(v) = arg.strip_prefix("--roster=") {
                opts.roster = Some(RosterChoice::parse(v).map_err(LaunchError::BadRoster)?);
            } else {
                break;
            }
            rest.next();
        }
        Ok((opts, rest.collect()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "the cco daemon is not reachable on 127.0.0.1:{port} ({why} for {secs} s) — \
         run `cco install` once to register it with the service manager, \
         or `cco daemon start` where there is no service manager"
    )]
    DaemonDown { port: u16, why: String, secs: u64 },
    #[error(
        "the daemon on 127.0.0.1:{port} answered /health with {what} — see `cco logs daemon`, then `cco daemon restart`"
    )]
    DaemonUnhealthy { port: u16, what: String },
    #[error(
        "the daemon on 127.0.0.1:{port} uses runtime dir {theirs}, but this shell resolves {ours} — \
         run cco with the same XDG_RUNTIME_DIR / CCO_RUNTIME_DIR as the service, or `cco daemon restart`"
    )]
    RuntimeDirMismatch {
        port: u16,
        theirs: String,
        ours: String,
    },
    #[error(
        "Claude Code not found: {looked} — install it with `npm install -g @anthropic-ai/claude-code`, \
         or set CCO_CLAUDE (or claude_path in {config}) to its path"
    )]
    ClaudeNotFound { looked: String, config: String },
    /// Another user could change the program cco would run with the session token.
    #[error("refusing to run Claude Code at {path}: {cause}")]
    UntrustedClaude {
        path: PathBuf,
        cause: crate::trust::TrustError,
    },
    // `cause`, not `source`: the message already says it, and `{:#}` would repeat it.
    #[error(
        "cannot run Claude Code at {path}: {cause} — check it runs on its own (`{path} --version`)"
    )]
    Exec {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{0}")]
    ForeignListener(String),
    #[error("--issue needs a value, e.g. `cco --issue issue-123 …`")]
    IssueMissing,
    #[error("--config needs a file, e.g. `cco --config ~/.config/cco/daemon.toml …`")]
    ConfigMissing,
    #[error("--roster needs a value, e.g. `cco --roster all …` (auto, all, none or agent names)")]
    RosterMissing,
    #[error(
        "--roster: {0} — e.g. `cco --roster auto`, `--roster all` or `--roster rust-specialist,code-reviewer`"
    )]
    BadRoster(String),
    #[error("{0} — e.g. `cco --issue issue-123`")]
    BadIssue(crate::api::IdError),
    #[error(
        "ORCHESTRATOR_ISSUE_ID in your environment: {0} — fix it or `unset ORCHESTRATOR_ISSUE_ID`"
    )]
    BadIssueEnv(crate::api::IdError),
}

/// Time as [`wait_healthy`] sees it: the real clock, or a test's that advances only when
/// slept on (so the retry schedule is tested without waiting for it).
pub trait Clock {
    fn elapsed(&self) -> Duration;
    fn sleep(&mut self, d: Duration);
}

/// The wall clock, from when it was made.
pub struct RealClock(Instant);

impl RealClock {
    pub fn start() -> RealClock {
        RealClock(Instant::now())
    }
}

impl Clock for RealClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// Polls `GET /health` until it answers or [`HEALTH_DEADLINE`] passes. A socket-activated
/// daemon accepts at once and answers when it has started.
pub fn wait_healthy(port: u16, deadline: Duration) -> Result<DaemonHealth, LaunchError> {
    wait_healthy_on(port, deadline, &mut RealClock::start())
}

/// [`wait_healthy`] on a given clock.
pub fn wait_healthy_on(
    port: u16,
    deadline: Duration,
    clock: &mut dyn Clock,
) -> Result<DaemonHealth, LaunchError> {
    let addr = client::local(port);
    loop {
        let left = deadline.saturating_sub(clock.elapsed());
        let err = match client::send(
            addr,
            &Request::get("/health"),
            left.max(Duration::from_millis(100)),
        ) {
            Ok(r) if r.status == 200 => {
                return r
                    .json::<DaemonHealth>()
                    .map_err(|e| LaunchError::DaemonUnhealthy {
                        port,
                        what: e.to_string(),
                    });
            }
            Ok(r) => {
                return Err(LaunchError::DaemonUnhealthy {
                    port,
                    what: format!("HTTP {}", r.status),
                });
            }
            Err(e) => e,
        };
        if clock.elapsed() + RETRY_PAUSE >= deadline {
            let why = match err {
                ClientError::Refused => "connection refused".to_string(),
                ClientError::Timeout => "no answer".to_string(),
                other => other.to_string(),
            };
            return Err(LaunchError::DaemonDown {
                port,
                why,
                secs: deadline.as_secs(),
            });
        }
        clock.sleep(RETRY_PAUSE);
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds Claude Code: the configured path (a name is looked up on `PATH`), else the usual
/// names on `PATH`; then checks that no other user can change it (it runs with the session
/// token in its environment).
pub fn find_claude(
    configured: Option<&Path>,
    path_var: Option<&OsStr>,
    config_file: &Path,
) -> Result<PathBuf, LaunchError> {
    let found = locate_claude(configured, path_var, config_file)?;
    crate::trust::check_program(&found).map_err(|cause| LaunchError::UntrustedClaude {
        path: found.clone(),
        cause,
    })?;
    Ok(found)
}

fn locate_claude(
    configured: Option<&Path>,
    path_var: Option<&OsStr>,
    config_file: &Path,
) -> Result<PathBuf, LaunchError> {
    let dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    let search = |name: &OsStr| dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p));
    let not_found = |looked: String| LaunchError::ClaudeNotFound {
        looked,
        config: config_file.display().to_string(),
    };
    if let Some(c) = configured {
        if c.as_os_str().as_bytes().contains(&b'/') {
            return if is_executable(c) {
                Ok(c.to_owned())
            } else {
                Err(not_found(format!(
                    "{} is not an executable file",
                    c.display()
                )))
            };
        }
        return search(c.as_os_str())
            .ok_or_else(|| not_found(format!("{} is not on PATH", c.display())));
    }
    CLAUDE_NAMES
        .iter()
        .find_map(|n| search(OsStr::new(n)))
        .ok_or_else(|| not_found(format!("none of {} is on PATH", CLAUDE_NAMES.join(", "))))
}

/// Whether the user already passed a Claude flag (`--agents`, `--agents=…`).
fn user_passed(args: &[OsString], flag: &str) -> bool {
    args.iter().any(|a| {
        let a = a.as_bytes();
        a == flag.as_bytes() || (a.starts_with(flag.as_bytes()) && a.get(flag.len()) == Some(&b'='))
    })
}

/// `--mcp-config=<runtime dir>/mcp.json`: cco's MCP server. In the `=` form, because Claude's
/// `--mcp-config` takes several values and would take a following prompt for one. Claude
/// merges it with any `--mcp-config` of the user's, which stays in their arguments.
pub fn mcp_config_arg(verified: &Verified) -> OsString {
    let mut arg = OsString::from("--mcp-config=");
    arg.push(verified.path(MCP));
    arg
}

/// The full argv for Claude: our flags first, then the user's arguments untouched. A roster
/// or rules text too large for one argument is left out (the kernel would refuse the exec);
/// the returned warnings say so.
pub fn claude_args(
    verified: &Verified,
    append_rules: bool,
    agents: Option<&[u8]>,
    user: Vec<OsString>,
) -> (Vec<OsString>, Vec<String>) {
    let mut args: Vec<OsString> = vec!["--settings".into(), verified.path(SETTINGS).into()];
    let mut warnings = Vec::new();
    for (wanted, flag, content, what) in [
        (
            agents.is_some(),
            "--agents",
            agents.unwrap_or_default(),
            "the agent roster",
        ),
        (
            append_rules,
            "--append-system-prompt",
            verified.files.rules.as_slice(),
            "the orchestrator rules",
        ),
    ] {
        if !wanted || user_passed(&user, flag) {
            continue;
        }
        if content.len() > MAX_ARG_BYTES {
            warnings.push(format!(
                "{what} is {} KiB, over the {} KiB one argument may hold, so it is not passed to Claude — \
                 shorten your agents in ~/.config/cco/agents (`cco agents lint` checks the size), then `cco daemon restart`",
                content.len() / 1024,
                MAX_ARG_BYTES / 1024
            ));
            continue;
        }
        args.push(flag.into());
        args.push(OsStr::from_bytes(content).to_owned());
    }
    args.extend(user);
    (args, warnings)
}

/// The `--agents` value for `choice`: the sealed roster cut down to the selected agents
/// (`None`: pass no roster), and warnings for names no agent has. Only `auto` looks at the
/// project, and only at its top directory.
pub fn roster_arg(
    sealed: &[u8],
    choice: &RosterChoice,
    project: &Path,
) -> (Option<Vec<u8>>, Vec<String>) {
    match choice {
        RosterChoice::None => return (None, Vec::new()),
        // As sealed: nothing to parse.
        RosterChoice::All => return (Some(sealed.to_vec()), Vec::new()),
        _ => {}
    }
    match roster::cut_claude_json(sealed, choice, || roster::Project::scan(project)) {
        Ok((json, unknown)) => {
            let warnings = unknown
                .iter()
                .map(|n| {
                    format!(
                        "no agent named \"{}\" in the roster, so it is not passed — `cco agents list` shows the names; fix launcher.roster or --roster",
                        crate::api::inert::line(n)
                    )
                })
                .collect();
            (Some(json.into_bytes()), warnings)
        }
        // The file is sealed by the daemon, so this is a daemon defect: pass it whole.
        Err(e) => (
            Some(sealed.to_vec()),
            vec![format!(
                "the sealed roster is not the JSON cco writes ({e}), so all of it is passed — run `cco daemon restart`"
            )],
        ),
    }
}

/// The `ORCHESTRATOR_*` environment for Claude and every hook it runs.
pub fn orchestrator_env(
    inst: &Installation,
    verified: &Verified,
    token: &str,
    issue: &IssueId,
) -> Vec<(&'static str, OsString)> {
    let policy: serde_json::Value =
        serde_json::from_slice(&verified.files.hooks).unwrap_or_default();
    let flag = |v: &serde_json::Value| {
        OsString::from(if v.as_bool().unwrap_or(false) {
            "true"
        } else {
            "false"
        })
    };
    vec![
        ("ORCHESTRATOR_ENABLED", "true".into()),
        (
            "ORCHESTRATOR_API_URL",
            format!("http://127.0.0.1:{}", inst.config.daemon.port).into(),
        ),
        (
            "ORCHESTRATOR_SIDECAR_URL",
            format!("http://127.0.0.1:{}", inst.config.sidecar.port).into(),
        ),
        ("ORCHESTRATOR_SETTINGS", verified.path(SETTINGS).into()),
        ("ORCHESTRATOR_AGENTS", verified.path(AGENTS).into()),
        ("ORCHESTRATOR_RULES", verified.path(RULES).into()),
        ("ORCHESTRATOR_HOOKS", verified.path(HOOKS).into()),
        ("ORCHESTRATOR_HOOKS_CONFIG", policy.to_string().into()),
        ("ORCHESTRATOR_HOOKS_ENABLED", flag(&policy["enabled"])),
        (
            "ORCHESTRATOR_AUTO_ALLOW_READ",
            flag(&policy["permissions"]["auto_allow_read"]),
        ),
        (
            "ORCHESTRATOR_REQUIRE_CUD_CONFIRMATION",
            flag(&policy["permissions"]["require_cud_confirmation"]),
        ),
        ("ORCHESTRATOR_ISSUE_ID", issue.as_str().into()),
        ("ORCHESTRATOR_TOKEN", token.into()),
    ]
}

/// What the launcher does about Claude Code's OpenTelemetry export.
#[derive(PartialEq, Eq)]
pub enum Telemetry {
    /// Export to the daemon with these variables.
    ToDaemon(Vec<(&'static str, OsString)>),
    /// The user exports OpenTelemetry already (this variable says so): theirs is kept.
    Theirs(String),
    /// `launcher.telemetry = false`.
    Off,
}

/// Names only: the headers variable holds the session token.
impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Telemetry::ToDaemon(vars) => f
                .debug_tuple("ToDaemon")
                .field(&vars.iter().map(|(k, _)| *k).collect::<Vec<_>>())
                .finish(),
            Telemetry::Theirs(var) => f.debug_tuple("Theirs").field(var).finish(),
            Telemetry::Off => f.write_str("Off"),
        }
    }
}

/// The telemetry environment: Claude's logs and metrics to the daemon's `/v1/*` with the
/// session token as the header, unless `set` (the names of the non-empty variables of the
/// user's environment) shows an export of their own.
pub fn telemetry_env(enabled: bool, port: u16, token: &str, set: &[String]) -> Telemetry {
    if !enabled {
        return Telemetry::Off;
    }
    let theirs = set.iter().find(|k| {
        *k == "CLAUDE_CODE_ENABLE_TELEMETRY"
            || (k.starts_with("OTEL_EXPORTER_OTLP_") && k.ends_with("ENDPOINT"))
    });
    if let Some(k) = theirs {
        return Telemetry::Theirs(k.clone());
    }
    Telemetry::ToDaemon(vec![
        ("CLAUDE_CODE_ENABLE_TELEMETRY", "1".into()),
        ("OTEL_LOGS_EXPORTER", "otlp".into()),
        ("OTEL_METRICS_EXPORTER", "otlp".into()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}").into(),
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("Authorization=Bearer {token}").into(),
        ),
    ])
}

/// A default issue for a session started without `--issue`: unique per launch.
fn default_issue() -> IssueId {
    let secs = crate::auth::now_secs();
    IssueId::parse(&format!("session-{secs}-{}", std::process::id())).expect("valid id")
}

pub fn run(args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let (opts, user_args) = LaunchOptions::split(args)?;
    let quiet = opts.quiet || process_env("CCO_QUIET").is_some_and(|v| v == "1" || v == "true");
    let inst = Installation::from_process(opts.config.as_deref())?;
    let port = inst.config.daemon.port;

    let health = wait_healthy(port, HEALTH_DEADLINE)?;
    if Path::new(&health.runtime_dir) != inst.paths.runtime_dir {
        return Err(LaunchError::RuntimeDirMismatch {
            port,
            theirs: health.runtime_dir,
            ours: inst.paths.runtime_dir.display().to_string(),
        }
        .into());
    }
    // Claude and its agents will send the session token to this port.
    client::check_listener_owner(port).map_err(LaunchError::ForeignListener)?;
    let secret = Secret::load(&inst.paths.secret_file())?;
    let verified = seal::verify(&inst.paths.runtime_dir, &secret)?;

    let from_env = process_env("ORCHESTRATOR_ISSUE_ID").filter(|s| !s.is_empty());
    let issue = match (opts.issue, from_env) {
        (Some(s), _) => IssueId::parse(&s).map_err(LaunchError::BadIssue)?,
        (None, Some(s)) => IssueId::parse(&s).map_err(LaunchError::BadIssueEnv)?,
        (None, None) => default_issue(),
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    // The sidecar never reads a whole home directory (or `/`) as a project.
    let home = process_env("HOME").map(PathBuf::from);
    if cwd == Path::new("/") || home.as_deref() == Some(cwd.as_path()) {
        eprintln!(
            "⚠️  running in {}: sub-agents get earlier results but no project context (cco never reads a whole home directory) — `cd` into a project first",
            cwd.display()
        );
    }
    let mut spec = TokenSpec::session(
        format!("session-{}", std::process::id()),
        inst.config.launcher.token_ttl,
    );
    spec.project = Some(cwd.display().to_string());
    let token = Keys::new(&secret)?.mint(&spec);

    let claude = find_claude(
        inst.config.claude_path.as_deref(),
        std::env::var_os("PATH").as_deref(),
        &inst.paths.config_file,
    )?;
    let mut env = orchestrator_env(&inst, &verified, &token.0, &issue);
    let set: Vec<String> = std::env::vars_os()
        .filter(|(_, v)| !v.is_empty())
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    let mut notes = Vec::new();
    match telemetry_env(inst.config.launcher.telemetry, port, &token.0, &set) {
        Telemetry::ToDaemon(vars) => env.extend(vars),
        Telemetry::Theirs(var) => notes.push(format!(
            "{var} is set, so Claude Code's OpenTelemetry goes where you send it and `cco cost` sees none of this session — to add cco, have your collector also export logs to http://127.0.0.1:{port} with `Authorization: Bearer $(cco token --ttl 30d)` (README: \"What it cost\")"
        )),
        Telemetry::Off => {}
    }
    let choice = match (opts.roster, inst.config.launcher.pass_agents) {
        (Some(c), _) => c,
        (None, false) => RosterChoice::None,
        (None, true) => inst.config.launcher.roster.clone(),
    };
    let (agents, mut warnings) = roster_arg(&verified.files.agents, &choice, &cwd);
    let (mut argv, more) = claude_args(
        &verified,
        inst.config.launcher.append_rules,
        agents.as_deref(),
        user_args,
    );
    warnings.extend(more);
    if inst.config.launcher.mcp {
        // Right after `--settings <file>`, ahead of the user's arguments.
        argv.insert(2, mcp_config_arg(&verified));
    }

    for w in &warnings {
        eprintln!("⚠️  {w}");
    }
    if !quiet {
        for n in &notes {
            eprintln!("ℹ️  {n}");
        }
    }
    if !quiet {
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "✅ Daemon is running (127.0.0.1:{port}, settings generation {})\n\
             ✅ Orchestrator settings found\n\
             ✅ Orchestration environment configured (issue {issue})\n\
             🚀 Launching Claude Code with orchestration support...\n   \
             Working directory: {}\n   Settings: {}\n   Executable: {}\n\n",
            verified.generation,
            cwd.display(),
            verified.path(SETTINGS).display(),
            claude.display(),
        );
    }
    let cause = Command::new(&claude).args(&argv).envs(env).exec();
    Err(LaunchError::Exec {
        path: claude,
        cause,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn splits_only_leading_cco_options() {
        let (o, rest) =
            LaunchOptions::split(os(&["--quiet", "--issue", "i-1", "-p", "--quiet"])).unwrap();
        assert_eq!(
            o,
            LaunchOptions {
                quiet: true,
                issue: Some("i-1".into()),
                config: None,
                roster: None,
            }
        );
        assert_eq!(rest, os(&["-p", "--quiet"]));
        let (o, rest) = LaunchOptions::split(os(&["--", "status"])).unwrap();
        assert_eq!(o, LaunchOptions::default());
        assert_eq!(rest, os(&["--", "status"]));
        let (o, _) = LaunchOptions::split(os(&["--issue=x"])).unwrap();
        assert_eq!(o.issue.as_deref(), Some("x"));
        let (o, rest) = LaunchOptions::split(os(&["--config", "/c.toml", "-p", "x"])).unwrap();
        assert_eq!(o.config.as_deref(), Some(Path::new("/c.toml")));
        assert_eq!(rest, os(&["-p", "x"]));
        assert!(LaunchOptions::split(os(&["--issue"])).is_err());
        let (o, rest) = LaunchOptions::split(os(&["--roster", "all", "-p", "x"])).unwrap();
        assert_eq!(o.roster, Some(RosterChoice::All));
        assert_eq!(rest, os(&["-p", "x"]));
        let (o, _) = LaunchOptions::split(os(&["--roster=a-b,c"])).unwrap();
        assert_eq!(
            o.roster,
            Some(RosterChoice::Names(vec!["a-b".into(), "c".into()]))
        );
        let e = LaunchOptions::split(os(&["--roster", "../x"])).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("`--roster rust-specialist,code-reviewer`"),
            "{e}"
        );
        assert!(LaunchOptions::split(os(&["--roster"])).is_err());
    }

    /// `auto` passes the core and the project's specialists, cut from the sealed roster;
    /// `none` passes nothing; `all` the sealed bytes unchanged; unknown names warn.
    #[test]
    fn the_roster_argument_follows_the_choice() {
        let sealed = roster::Roster::builtin().unwrap().claude_json();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("Cargo.toml"), "").unwrap();
        let names = |json: &[u8]| roster::claude_json_names(json).unwrap();

        let (auto, w) = roster_arg(sealed.as_bytes(), &RosterChoice::Auto, tmp.path());
        let auto = names(&auto.unwrap());
        assert!(w.is_empty(), "{w:?}");
        assert!(auto.contains(&"rust-specialist".to_string()), "{auto:?}");
        assert!(!auto.contains(&"go-specialist".to_string()), "{auto:?}");
        for core in roster::CORE_AGENTS {
            assert!(auto.contains(&core.to_string()), "{core}");
        }
        assert_eq!(auto.len(), roster::CORE_AGENTS.len() + 1);

        assert_eq!(
            roster_arg(sealed.as_bytes(), &RosterChoice::None, tmp.path()).0,
            None
        );
        let all = roster_arg(sealed.as_bytes(), &RosterChoice::All, tmp.path()).0;
        assert_eq!(all.as_deref(), Some(sealed.as_bytes()));

        let listed = RosterChoice::parse("debugger,no-such-agent").unwrap();
        let (json, w) = roster_arg(sealed.as_bytes(), &listed, tmp.path());
        assert_eq!(names(&json.unwrap()), ["debugger"]);
        assert!(
            w.len() == 1 && w[0].contains("no-such-agent") && w[0].contains("cco agents list"),
            "{w:?}"
        );
    }

    #[test]
    fn claude_lookup() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("claude-code");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = Path::new("/c/daemon.toml");
        let path = std::env::join_paths(["/nonexistent", tmp.path().to_str().unwrap()]).unwrap();
        assert_eq!(find_claude(None, Some(&path), cfg).unwrap(), bin);
        assert_eq!(find_claude(Some(&bin), None, cfg).unwrap(), bin);
        let e = find_claude(None, Some(OsStr::new("/nonexistent")), cfg)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("npm install -g @anthropic-ai/claude-code") && e.contains("CCO_CLAUDE"),
            "{e}"
        );
        let e = find_claude(Some(Path::new("/no/such/claude")), None, cfg)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/claude"), "{e}");
    }

    /// A Claude another user can change is refused, configured or found on `PATH` alike,
    /// and the message ends with the fix.
    #[test]
    fn a_claude_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let claude = bin.join("claude");
        std::fs::write(&claude, "#!/bin/sh\n").unwrap();
        let mode =
            |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        mode(&bin, 0o755);
        mode(&claude, 0o757);
        let cfg = Path::new("/c/daemon.toml");
        for (configured, path) in [
            (Some(claude.as_path()), None),
            (None, Some(bin.as_os_str())),
        ] {
            let e = find_claude(configured, path, cfg).unwrap_err();
            assert!(matches!(e, LaunchError::UntrustedClaude { .. }), "{e}");
            assert!(
                e.to_string()
                    .ends_with(&format!("run `chmod go-w {}`", claude.display())),
                "{e}"
            );
        }
        mode(&claude, 0o755);
        mode(&bin, 0o777);
        let e = find_claude(None, Some(bin.as_os_str()), cfg).unwrap_err();
        assert!(
            e.to_string()
                .ends_with(&format!("run `chmod go-w {}`", bin.display())),
            "{e}"
        );
        mode(&bin, 0o755);
        assert_eq!(
            find_claude(None, Some(bin.as_os_str()), cfg).unwrap(),
            claude
        );
    }

    /// A clock that moves only when slept on.
    struct FakeClock {
        now: Duration,
        sleeps: u32,
    }

    impl Clock for FakeClock {
        fn elapsed(&self) -> Duration {
            self.now
        }
        fn sleep(&mut self, d: Duration) {
            self.now += d;
            self.sleeps += 1;
        }
    }

    /// With nobody listening, the launcher retries for the whole deadline, then names the
    /// port and both fixes.
    #[test]
    fn a_down_daemon_is_retried_until_the_deadline() {
        // A bound socket that does not listen: connections are refused, and no other test
        // can take the port meanwhile.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(sock >= 0);
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: addr is a valid sockaddr_in of `len` bytes, sock a socket we own.
        assert_eq!(
            unsafe { libc::bind(sock, (&raw const addr).cast(), len) },
            0
        );
        let mut len2 = len;
        // SAFETY: as above; getsockname fills addr.
        unsafe { libc::getsockname(sock, (&raw mut addr).cast(), &mut len2) };
        let port = u16::from_be(addr.sin_port);

        let mut clock = FakeClock {
            now: Duration::ZERO,
            sleeps: 0,
        };
        let err = wait_healthy_on(port, HEALTH_DEADLINE, &mut clock).unwrap_err();
        // SAFETY: closing the socket made above.
        unsafe { libc::close(sock) };
        assert!(matches!(err, LaunchError::DaemonDown { .. }), "{err}");
        let want = (HEALTH_DEADLINE.as_millis() / RETRY_PAUSE.as_millis()) as u32 - 1;
        assert_eq!(clock.sleeps, want, "retries until the deadline, no longer");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "not reachable on 127.0.0.1:{port} (connection refused for 3 s)"
            )) && msg.contains("cco install")
                && msg.ends_with("`cco daemon start` where there is no service manager"),
            "{msg}"
        );
    }

    #[test]
    fn telemetry_goes_to_the_daemon_unless_the_user_exports_it() {
        let Telemetry::ToDaemon(vars) = telemetry_env(true, 4100, "tok", &["PATH".into()]) else {
            panic!("expected the daemon's telemetry");
        };
        let get = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap(),
            "http://127.0.0.1:4100"
        );
        assert_eq!(
            get("OTEL_EXPORTER_OTLP_HEADERS").unwrap(),
            "Authorization=Bearer tok"
        );
        assert_eq!(get("CLAUDE_CODE_ENABLE_TELEMETRY").unwrap(), "1");
        assert_eq!(get("OTEL_LOGS_EXPORTER").unwrap(), "otlp");
        for theirs in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            "CLAUDE_CODE_ENABLE_TELEMETRY",
        ] {
            assert_eq!(
                telemetry_env(true, 4100, "tok", &[theirs.into()]),
                Telemetry::Theirs(theirs.into())
            );
        }
        assert_eq!(telemetry_env(false, 4100, "tok", &[]), Telemetry::Off);
        let shown = format!("{:?}", telemetry_env(true, 4100, "secret-tok", &[]));
        assert!(shown.contains("OTEL_EXPORTER_OTLP_HEADERS") && !shown.contains("secret-tok"));
    }

    #[test]
    fn user_agents_flag_wins() {
        assert!(user_passed(&os(&["-p", "--agents", "{}"]), "--agents"));
        assert!(user_passed(&os(&["--agents={}"]), "--agents"));
        assert!(!user_passed(&os(&["--agentsx"]), "--agents"));
    }
}
