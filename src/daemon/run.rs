//! `cco daemon run`'s body: lock the runtime dir, seal the runtime files, serve until
//! SIGTERM or idle exit.

use std::path::Path;

use crate::config;
use crate::daemon::{self, DaemonState, runtime};
use crate::listen;
use crate::pidlock::{PidLock, PidLockError};
use crate::seal;
use crate::server;
use crate::service::Service;
use crate::startup::{RunOptions, Startup};

/// The runtime dir's lock file: one daemon per runtime dir. Not `daemon.pid`, which the
/// detached fallback's daemonize holds.
pub const LOCK_FILE: &str = "daemon.lock";

/// Runs the daemon in the foreground until it is stopped or idle.
pub fn run(config_flag: Option<&Path>, options: RunOptions) -> anyhow::Result<()> {
    let start = Startup::prepare(config_flag, Service::Daemon, options)?;
    let _lock = lock_runtime_dir(&start.paths.runtime_dir)?;
    let files = runtime::render(&start.config, &start.roster, &daemon::current_exe());
    let sealed = seal::seal(&start.paths.runtime_dir, &start.secret, &files)?;
    tracing::info!(
        dir = %start.paths.runtime_dir.display(),
        generation = sealed.generation,
        rewritten = sealed.changed,
        agents = start.roster.agents.len(),
        "runtime files sealed"
    );
    let keys = crate::auth::Keys::new(&start.secret)?;
    let server = start.server();
    let Startup {
        config,
        paths,
        listener,
        port,
        origin,
        ..
    } = start;
    let idle = config.idle_exit_after;
    crate::startup::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let state = DaemonState::new(
            config,
            paths,
            origin,
            port,
            sealed.generation,
            server.tracker(),
            server.stopping(),
        )
        .with_keys(keys);
        let app = daemon::router(state);
        // Logged before READY=1, so whoever waited for it finds the line.
        tracing::info!(
            port,
            listener = origin.as_str(),
            pid = std::process::id(),
            max_connections = server.connection_limit(),
            idle_exit_after = %config::idle_label(idle),
            "daemon ready"
        );
        // Signal handlers go in before READY=1: a SIGTERM right after it is a graceful stop.
        let terminated = server::termination();
        let _ = listen::notify("READY=1");
        let exit = server.serve(listener, app, terminated).await?;
        let _ = listen::notify("STOPPING=1");
        tracing::info!(?exit, "daemon stopped");
        anyhow::Ok(())
    })
}

/// Takes the runtime dir's lock, or says which daemon has it and what to do.
fn lock_runtime_dir(dir: &Path) -> anyhow::Result<PidLock> {
    crate::paths::ensure_private_dir(dir)?;
    PidLock::acquire(&dir.join(LOCK_FILE)).map_err(|e| match e {
        PidLockError::Held { pid, .. } => anyhow::anyhow!(
            "another cco daemon{} already serves the runtime dir {} — use that one (`cco daemon status`), \
             or stop it first: `cco daemon stop`",
            pid.map_or_else(String::new, |p| format!(" (pid {p})")),
            dir.display()
        ),
        other => anyhow::anyhow!(
            "{other} — check the runtime dir's owner and mode, then `cco daemon restart`"
        ),
    })
}
