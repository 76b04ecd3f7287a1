//! What both services do before they serve: the installation with their flags applied,
//! logging, the listener, the default config file, the secret, the agent roster, the
//! descriptor limit, and the runtime that runs them.

use std::path::Path;

use anyhow::Context;

use crate::config::{self, Config};
use crate::listen;
use crate::paths::{self, Installation, Paths};
use crate::roster::Roster;
use crate::secret::Secret;
use crate::server::{self, Server};
use crate::service::Service;

/// Worker threads of a service's runtime: both are I/O-bound and share two cores with their
/// clients.
pub const WORKER_THREADS: usize = 2;

/// The flags of `cco daemon run` / `cco sidecar run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Port to bind when not socket-activated.
    pub port: Option<u16>,
    /// Idle exit ("never", "10m", "30s").
    pub idle_exit_after: Option<String>,
}

/// A prepared service, ready to serve.
pub struct Startup {
    pub config: Config,
    pub paths: Paths,
    pub listener: std::net::TcpListener,
    /// The port the listener really has (a socket unit may differ from the config).
    pub port: u16,
    pub origin: listen::Origin,
    pub secret: Secret,
    pub roster: Roster,
    /// The connection cap that fits this process's descriptor limit.
    pub max_connections: usize,
}

impl Startup {
    pub fn prepare(
        config_flag: Option<&Path>,
        service: Service,
        options: RunOptions,
    ) -> anyhow::Result<Startup> {
        let Installation { mut config, paths } = Installation::from_process(config_flag)?;
        if let Some(p) = options.port {
            match service {
                Service::Daemon => config.daemon.port = p,
                Service::Sidecar => config.sidecar.port = p,
            }
        }
        if let Some(idle) = options.idle_exit_after.as_deref() {
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
        let port = listener
            .local_addr()
            .context("the listening socket has no local address")?
            .port();
        if port != service.port(&config) {
            tracing::info!(
                configured = service.port(&config),
                listening = port,
                "the socket's port differs from the config's; answering on the socket's"
            );
        }
        let fd_limit = server::raise_fd_limit();
        let max_connections = server::connection_cap(fd_limit);
        if max_connections < server::MAX_CONNECTIONS {
            tracing::warn!(
                fd_limit,
                max_connections,
                "the descriptor limit caps open connections below {}; raise LimitNOFILE=",
                server::MAX_CONNECTIONS
            );
        }
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
            port,
            origin,
            secret,
            roster,
            max_connections,
        })
    }

    /// A server with this start-up's connection cap and idle exit.
    pub fn server(&self) -> Server {
        Server::new()
            .max_connections(self.max_connections)
            .idle_exit(self.config.idle_exit_after)
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

/// The async runtime a service runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
