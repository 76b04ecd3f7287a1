//! `cco sidecar run`: the sidecar process itself (what the service manager starts), with the
//! same listener, readiness, shutdown and idle-exit behaviour as `cco daemon run`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::daemon::{RunArgs, Startup, runtime};
use crate::auth::Keys;
use crate::config;
use crate::listen;
use crate::server::{self, Stopper, Tracker};
use crate::service::Service;
use crate::sidecar::{self, SidecarState};

pub use super::daemon::Args;

pub fn run(config_flag: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    args.action
        .dispatch(config_flag, Service::Sidecar, run_sidecar)
}

fn run_sidecar(config_flag: Option<&Path>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let Startup {
        config,
        paths,
        listener: std_listener,
        origin,
        secret,
        roster,
    } = Startup::prepare(config_flag, Service::Sidecar, args)?;
    let keys = Keys::new(&secret).map_err(|e| {
        anyhow::anyhow!(
            "{e}: {} — remove it and run `cco sidecar run` again to create a new one",
            paths.secret_file().display()
        )
    })?;

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
        // Logged before READY=1, so whoever waited for it finds the line.
        tracing::info!(
            port,
            listener = origin.as_str(),
            pid = std::process::id(),
            data = %paths.orchestration_dir().display(),
            idle_exit_after = %config::idle_label(idle),
            "sidecar ready"
        );
        let terminated = server::termination();
        let _ = listen::notify("READY=1");
        let exit =
            server::serve(listener, app, tracker, stopper, idle, terminated).await?;
        let _ = listen::notify("STOPPING=1");
        let _ = probes.await;
        // Everything accepted is committed before the process ends.
        tokio::task::spawn_blocking(move || state.close()).await?;
        tracing::info!(?exit, "sidecar stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
