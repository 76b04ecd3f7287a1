//! `cco sidecar run`: the sidecar process itself (what the service manager starts), with the
//! same listener, readiness, shutdown and idle-exit behaviour as `cco daemon run`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;

use super::daemon::{load_with_flags, runtime, write_default_config};
use crate::auth::Keys;
use crate::cli::operate::{self, Verb};
use crate::listen;
use crate::paths::Installation;
use crate::roster::Roster;
use crate::secret::Secret;
use crate::server::{self, Stopper, Tracker};
use crate::service::Service;
use crate::sidecar::{self, SidecarState};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Run the sidecar in the foreground (the service manager runs this; socket-activated
    /// when it hands over a listener, else it binds 127.0.0.1:<port> itself).
    Run(RunArgs),
    /// Start the sidecar: through the service manager when installed, else detached.
    Start(operate::Args),
    /// Stop the sidecar and its socket (else the next connection starts it again).
    Stop(operate::Args),
    /// Restart the sidecar; the socket keeps accepting meanwhile.
    Restart(operate::Args),
    /// Show socket and service state and whether the units start this binary.
    Status(operate::Args),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Port to bind when not socket-activated (default: sidecar.port, 3001).
    #[arg(long)]
    pub port: Option<u16>,
    /// Exit after this long with no open connection ("never", "10m", "30s").
    #[arg(long, value_name = "DURATION")]
    pub idle_exit_after: Option<String>,
}

pub fn run(config_flag: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Run(run) => run_sidecar(config_flag, run),
        Action::Start(a) => operate::run(config_flag, Service::Sidecar, Verb::Start, a),
        Action::Stop(a) => operate::run(config_flag, Service::Sidecar, Verb::Stop, a),
        Action::Restart(a) => operate::run(config_flag, Service::Sidecar, Verb::Restart, a),
        Action::Status(a) => operate::run(config_flag, Service::Sidecar, Verb::Status, a),
    }
}

fn run_sidecar(config_flag: Option<&Path>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let inst = load_with_flags(
        config_flag,
        |c| {
            if let Some(p) = args.port {
                c.sidecar.port = p;
            }
        },
        args.idle_exit_after.as_deref(),
    )?;
    crate::logging::init(&inst.config.log_level);
    let Installation { config, paths } = inst;

    let (std_listener, origin) = listen::acquire(
        "sidecar",
        config.sidecar.port,
        "sidecar.port",
        &paths.config_file.display().to_string(),
    )?;
    write_default_config(&paths.config_file);
    let secret = Secret::load_or_create(&paths.secret_file())?;
    let keys = Keys::new(&secret).map_err(|e| {
        anyhow::anyhow!(
            "{e}: {} — remove it and run `cco sidecar run` again to create a new one",
            paths.secret_file().display()
        )
    })?;
    let (roster, problems) = Roster::load(&paths.user_agents_dir())?;
    for p in &problems {
        tracing::warn!("skipping agent file {p} — check it with `cco agents lint`");
    }

    let idle = config.idle_exit_after;
    let port = config.sidecar.port;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let tracker = Arc::new(Tracker::default());
        let stopper = Arc::new(Stopper::default());
        let state = SidecarState::open(
            config.sidecar.clone(),
            &paths,
            keys,
            roster,
            tracker.clone(),
            stopper.subscribe(),
        )
        .with_context(|| {
            format!(
                "cannot open the orchestration data in {} — check its permissions and free space, then `cco sidecar run`",
                paths.orchestration_dir().display()
            )
        })?;
        let probes = tokio::spawn(state.clone().probe_loop());
        let app = sidecar::router(state.clone(), port);
        let _ = listen::notify("READY=1");
        tracing::info!(
            port,
            listener = origin.as_str(),
            pid = std::process::id(),
            data = %paths.orchestration_dir().display(),
            "sidecar ready"
        );
        let exit =
            server::serve(listener, app, tracker, stopper, idle, server::termination()).await?;
        let _ = listen::notify("STOPPING=1");
        let _ = probes.await;
        // Everything accepted is committed before the process ends.
        tokio::task::spawn_blocking(move || state.close()).await?;
        tracing::info!(?exit, "sidecar stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
