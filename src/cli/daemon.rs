//! `cco daemon …`: run the daemon in the foreground (`daemon::run`, what the service manager
//! starts) or operate it; the run/start/stop/restart/status shape shared with `cco sidecar`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::cli::operate::{self, Verb};
use crate::service::Service;
use crate::startup::RunOptions;

/// `cco daemon …` and `cco sidecar …`: run the service, or operate it.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Run it in the foreground (the service manager runs this; socket-activated when it
    /// hands over a listener, else it binds 127.0.0.1:<port> itself).
    Run(RunArgs),
    /// Start it: through the service manager when installed, else detached (`cco daemon
    /// start` also starts the sidecar, which the daemon forwards to).
    Start(operate::Args),
    /// Stop it and its socket (else the next connection starts it again). Detached (no
    /// service manager), `cco daemon stop` stops the sidecar too.
    Stop(operate::Args),
    /// Restart it; the socket keeps accepting meanwhile. Detached (no service manager),
    /// `cco daemon restart` restarts the sidecar too.
    Restart(operate::Args),
    /// Show socket and service state and whether the units start this binary.
    Status(operate::Args),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Port to bind when not socket-activated (default: daemon.port 3000 / sidecar.port 3001).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Exit after this long with no open connection ("never", "10m", "30s").
    #[arg(long, value_name = "DURATION")]
    pub idle_exit_after: Option<String>,
}

impl Action {
    /// Runs `service` in the foreground with `run`, or hands the verb to the service manager.
    pub fn dispatch(
        self,
        config_flag: Option<&Path>,
        service: Service,
        run: fn(Option<&Path>, RunOptions) -> anyhow::Result<()>,
    ) -> anyhow::Result<ExitCode> {
        let (verb, args) = match self {
            Action::Run(a) => return run(config_flag, a.into()).map(|()| ExitCode::SUCCESS),
            Action::Start(a) => (Verb::Start, a),
            Action::Stop(a) => (Verb::Stop, a),
            Action::Restart(a) => (Verb::Restart, a),
            Action::Status(a) => (Verb::Status, a),
        };
        operate::run(config_flag, service, verb, args)
    }
}

pub fn run(config_flag: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    args.action
        .dispatch(config_flag, Service::Daemon, crate::daemon::run)
}

impl From<RunArgs> for RunOptions {
    fn from(a: RunArgs) -> RunOptions {
        RunOptions {
            port: a.port,
            idle_exit_after: a.idle_exit_after,
        }
    }
}
