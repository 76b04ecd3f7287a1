//! `cco sidecar run`'s body: open the orchestration data, serve until SIGTERM or idle exit,
//! then commit everything accepted before the process ends.

use std::path::Path;

use anyhow::Context;

use crate::auth::Keys;
use crate::config;
use crate::listen;
use crate::server;
use crate::service::Service;
use crate::sidecar::{self, SidecarState};
use crate::startup::{RunOptions, Startup};

/// Runs the sidecar in the foreground until it is stopped or idle.
pub fn run(config_flag: Option<&Path>, options: RunOptions) -> anyhow::Result<()> {
    let start = Startup::prepare(config_flag, Service::Sidecar, options)?;
    let keys = Keys::new(&start.secret).map_err(|e| {
        anyhow::anyhow!(
            "{e}: {} — remove it and run `cco sidecar run` again to create a new one",
            start.paths.secret_file().display()
        )
    })?;
    let server = start.server();
    let Startup {
        config,
        paths,
        listener,
        port,
        origin,
        roster,
        ..
    } = start;
    let idle = config.idle_exit_after;
    crate::startup::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let state = SidecarState::open_with_store(
            config.sidecar.clone(),
            &config.store,
            &paths,
            keys,
            roster,
            server.tracker(),
            server.stopping(),
        )
        .with_context(|| {
            format!(
                "cannot open the orchestration data in {}",
                paths.orchestration_dir().display()
            )
        })?;
        if let sidecar::store::Store::Nats(nats) = state.store()
            && !nats.ready(sidecar::store::nats::STARTUP_WAIT).await
        {
            tracing::warn!(
                reason = nats.unavailable_reason().unwrap_or_default(),
                "NATS is not reachable yet; answering 503 store_unavailable until it is (`cco doctor` checks it)"
            );
        }
        let probes = tokio::spawn(state.clone().probe_loop());
        let app = sidecar::router(state.clone(), port);
        // Logged before READY=1, so whoever waited for it finds the line.
        tracing::info!(
            port,
            listener = origin.as_str(),
            pid = std::process::id(),
            data = %paths.orchestration_dir().display(),
            store = state.store().backend(),
            max_connections = server.connection_limit(),
            idle_exit_after = %config::idle_label(idle),
            "sidecar ready"
        );
        // Signal handlers go in before READY=1: a SIGTERM right after it is a graceful stop.
        let terminated = server::termination();
        let _ = listen::notify("READY=1");
        let exit = server.serve(listener, app, terminated).await?;
        let _ = listen::notify("STOPPING=1");
        let _ = probes.await;
        // Everything accepted is committed before the process ends.
        tokio::task::spawn_blocking(move || state.close()).await?;
        tracing::info!(?exit, "sidecar stopped");
        anyhow::Ok(())
    })
}
