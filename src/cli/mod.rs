//! The command line: one file per subcommand, one dispatch table ([`run`]). Anything that is
//! not a cco subcommand goes to Claude Code through the launcher.

pub mod agents;
pub mod check;
pub mod cost;
pub mod daemon;
pub mod dashboard;
pub mod doctor;
pub mod events;
pub mod health;
pub mod hook;
pub mod install;
pub mod launch;
pub mod leases;
pub mod logs;
pub mod operate;
pub mod sidecar;
pub mod store;
pub mod token;
pub mod told;
pub mod uninstall;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// cco — Claude Code Orchestra.
///
/// Run `cco [claude args…]` to start Claude Code with orchestration (every argument that is not
/// a cco subcommand goes to Claude; `cco -- status` sends the prompt "status"). The daemon
/// (127.0.0.1:3000) and the sidecar (127.0.0.1:3001) are started by the service manager on
/// first use; `cco install` sets that up once per machine.
#[derive(Debug, Parser)]
#[command(
    name = "cco",
    version,
    disable_version_flag = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Config file (default: $XDG_CONFIG_HOME/cco/daemon.toml; also CCO_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run or operate the daemon (127.0.0.1:3000).
    Daemon(daemon::Args),
    /// Run or operate the orchestration sidecar (127.0.0.1:3001).
    Sidecar(sidecar::Args),
    /// Mint a scoped token for the sidecar's API (printed on stdout).
    Token(token::Args),
    /// Check that the services answer; exits non-zero when one does not.
    Health(health::HealthArgs),
    /// Show what the services are doing.
    Status(health::StatusArgs),
    /// Check the whole set-up and say how to fix what is wrong.
    Doctor(doctor::Args),
    /// Register the daemon and sidecar sockets with the service manager (once per machine).
    Install(install::Args),
    /// Stop and remove what `cco install` set up (`--purge` also deletes data).
    Uninstall(uninstall::Args),
    /// Show the services' logs (journald, or the log files without a service manager).
    Logs(logs::Args),
    /// List, show and check the agent roster; `cost` shows what it adds to each request.
    Agents(agents::Args),
    /// Open the live dashboard in the browser (`--no-open` prints its one-time login link).
    Dashboard(dashboard::Args),
    /// Print the event journal (what agents publish), optionally as it happens.
    Events(events::Args),
    /// List the file leases agents hold; `cco leases release ID` force-releases one.
    Leases(leases::Args),
    /// Tokens and cost of model requests, by agent type, issue, model or session.
    ///
    /// From Claude Code's own OpenTelemetry export, which the launcher points at the daemon.
    Cost(cost::Args),
    /// Operate the shared store: `cco store migrate` copies this machine's journal into it.
    Store(store::Args),
    /// Handle a Claude Code hook event (run by Claude Code through the sealed settings).
    ///
    /// A hook reads only the ORCHESTRATOR_* environment the launcher gives Claude, never cco's
    /// config file: it runs on every tool call and must start fast.
    Hook(HookArgs),
    /// Print cco's version.
    Version,
    /// Run the daemon in the foreground: the same as `cco daemon run` (the guide's
    /// `cco run --port 3000`; `cco -- run` sends Claude the prompt "run").
    Run(daemon::RunArgs),
}

/// `cco hook`'s arguments. The global `--config` is shadowed by a hidden one here so that the
/// hook's help does not offer an option it ignores.
#[derive(Debug, clap::Args)]
pub struct HookArgs {
    #[command(flatten)]
    pub hook: hook::Args,
    /// Accepted and ignored: hooks never read the config.
    #[arg(long, hide = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Whether `name` selects a cco subcommand rather than the launcher: a variant of
/// [`Command`] (clap's own table, so the two cannot drift) or clap's generated `help`.
pub fn is_subcommand(name: &str) -> bool {
    name == "help" || <Command as Subcommand>::has_subcommand(name)
}

/// Parses `args` (including argv[0]) and runs what they ask for.
pub fn run(args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    // `--config FILE` may come before a subcommand; the launcher takes it too.
    let skip = match args.get(1).and_then(|a| a.to_str()) {
        Some("--config") => 3,
        Some(a) if a.starts_with("--config=") => 2,
        _ => 1,
    };
    let first = args.get(skip).and_then(|a| a.to_str());
    if !first.is_some_and(is_subcommand) {
        return launch::run(args.into_iter().skip(1).collect());
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Ok(ExitCode::from(code));
        }
    };
    let config = cli.config.as_deref();
    match cli.command {
        Command::Daemon(args) => daemon::run(config, args),
        Command::Sidecar(args) => sidecar::run(config, args),
        Command::Token(args) => token::run(config, args),
        Command::Health(args) => health::run_health(config, args),
        Command::Status(args) => health::run_status(config, args),
        Command::Doctor(args) => doctor::run(config, args),
        Command::Install(args) => install::run(config, args),
        Command::Uninstall(args) => uninstall::run(config, args),
        Command::Logs(args) => logs::run(config, args),
        Command::Agents(args) => agents::run(config, args),
        Command::Hook(args) => hook::run(args.hook),
        Command::Events(args) => events::run(config, args),
        Command::Dashboard(args) => dashboard::run(config, args),
        Command::Run(args) => daemon::run(
            config,
            daemon::Args {
                action: daemon::Action::Run(args),
            },
        ),
        Command::Leases(args) => leases::run(config, args),
        Command::Cost(args) => cost::run(config, args),
        Command::Store(args) => store::run(config, args),
        Command::Version => {
            println!("cco {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    }
}
