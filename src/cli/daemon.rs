//! `cco daemon run`: the daemon process itself (what the service manager starts); the
//! run/start/stop/restart/status command shape shared with `cco sidecar`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;

use crate::cli::operate::{self, Verb};
use crate::config::{self, Config};
use crate::daemon::{self, DaemonState, runtime};
use crate::listen;
use crate::paths::{self, Installation, Paths};
use crate::roster::Roster;
use crate::seal;
use crate::secret::Secret;
use crate::server::{self, Stopper, Tracker};
use crate::service::Service;

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
        run: fn(Option<&Path>, RunArgs) -> anyhow::Result<ExitCode>,
    ) -> anyhow::Result<ExitCode> {
        let (verb, args) = match self {
            Action::Run(a) => return run(config_flag, a),
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
        .dispatch(config_flag, Service::Daemon, run_daemon)
}

/// What both services have done before they serve: the installation with their flags
/// applied (flags win over all), logging, the listener, the default config file written,
/// the secret and the agent roster.
pub struct Startup {
    pub config: Config,
    pub paths: Paths,
    pub listener: std::net::TcpListener,
    pub origin: listen::Origin,
    pub secret: Secret,
    pub roster: Roster,
}

impl Startup {
    pub fn prepare(
        config_flag: Option<&Path>,
        service: Service,
        args: RunArgs,
    ) -> anyhow::Result<Startup> {
        let Installation { mut config, paths } = Installation::from_process(config_flag)?;
        if let Some(p) = args.port {
            match service {
                Service::Daemon => config.daemon.port = p,
                Service::Sidecar => config.sidecar.port = p,
            }
        }
        if let Some(idle) = args.idle_exit_after.as_deref() {
            config.idle_exit_after = config::parse_idle_exit(idle)
                .map_err(|e| anyhow::anyhow!("--idle-exit-after {e}"))?;
        }
        crate::logging::init(&config.log_level);
        let name = service.name();
        let (listener, origin) = listen::acquire(
            name,
            service.port(&config),
            if service == Service::Daemon {
                "daemon.port"
            } else {
                "sidecar.port"
            },
            &paths.config_file.display().to_string(),
        )?;
        write_default_config(&paths.config_file);
        let secret = Secret::load_or_create(&paths.secret_file())?;
        let (roster, problems) = Roster::load(&paths.user_agents_dir())?;
        for p in &problems {
            tracing::warn!("skipping agent file {p} — check it with `cco agents lint`");
        }
        Ok(Startup {
            config,
            paths,
            listener,
            origin,
            secret,
            roster,
        })
    }
}

/// Writes the commented example config on first start, so users find every key documented.
pub fn write_default_config(path: &Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent()
        && std::fs::symlink_metadata(dir).is_err()
        && let Err(e) = paths::ensure_private_dir(dir)
    {
        tracing::warn!(error = %e, "cannot create the config directory");
        return;
    }
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(config::EXAMPLE.as_bytes()));
    match created {
        Ok(()) => tracing::info!(path = %path.display(), "wrote the default config"),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the default config")
        }
    }
}

/// A small runtime: both services are I/O-bound and share two cores with their clients.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_daemon(config_flag: Option<&Path>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let Startup {
        config,
        paths,
        listener: std_listener,
        origin,
        secret,
        roster,
    } = Startup::prepare(config_flag, Service::Daemon, args)?;
    let files = runtime::render(&config, &roster, &daemon::current_exe());
    let sealed = seal::seal(&paths.runtime_dir, &secret, &files)?;
    tracing::info!(
        dir = %paths.runtime_dir.display(),
        generation = sealed.generation,
        rewritten = sealed.changed,
        agents = roster.agents.len(),
        "runtime files sealed"
    );

    let idle = config.idle_exit_after;
    let port = config.daemon.port;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let tracker = Arc::new(Tracker::default());
        let stopper = Arc::new(Stopper::default());
        let state = DaemonState::new(
            config,
            paths,
            origin,
            sealed.generation,
            tracker.clone(),
            stopper.subscribe(),
        );
        let app = daemon::router(state);
        // Logged before READY=1, so whoever waited for it finds the line.
        tracing::info!(
            port,
            listener = origin.as_str(),
            pid = std::process::id(),
            idle_exit_after = %config::idle_label(idle),
            "daemon ready"
        );
        let terminated = server::termination();
        let _ = listen::notify("READY=1");
        let exit = server::serve(listener, app, tracker, stopper, idle, terminated).await?;
        let _ = listen::notify("STOPPING=1");
        tracing::info!(?exit, "daemon stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
