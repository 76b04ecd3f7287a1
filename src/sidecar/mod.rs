//! The orchestration sidecar (`:3001`): context, results, events and the agent registry for
//! many agents working without a person. `router()` lists every route; `SidecarState` owns
//! the journal, the results store, the context broker and the metrics.

pub mod context;
mod coordinate;
pub mod error;
pub mod extract;
pub mod inbox;
pub mod journal;
pub mod leases;
pub mod metrics;
pub mod registry;
pub mod results;
mod routes;
pub mod run;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};

use crate::auth::Keys;
use crate::config::SidecarConfig;
use crate::paths::Paths;
use crate::pidlock::{PidLock, PidLockError};
use crate::roster::Roster;
use crate::server::{GuardPort, Stopping, Tracker};

pub use error::ApiError;
pub use run::run;

pub const SERVICE: &str = "orchestration-sidecar";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How often the health probes (disk, journal, memory) run.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error(transparent)]
    Results(#[from] results::StoreError),
    #[error(
        "another sidecar{} is using the data directory {}; stop it (`cco daemon stop`, or `systemctl --user stop cco-sidecar.service`) or give this one another `data_dir`, then `cco sidecar run`",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        dir.display()
    )]
    Locked { dir: PathBuf, pid: Option<u32> },
    #[error("{0} — check the data directory's owner and mode, then `cco sidecar run`")]
    Lock(crate::pidlock::PidLockError),
    #[error(transparent)]
    Dir(#[from] crate::paths::PathError),
}

/// Name of the lock file in the orchestration directory; it holds the owner's pid.
pub const DATA_LOCK_FILE: &str = "sidecar.lock";

/// Locks the orchestration directory for this sidecar, so a second one on the same data
/// refuses to start instead of failing every write.
fn lock_data_dir(dir: &std::path::Path) -> Result<PidLock, OpenError> {
    crate::paths::ensure_private_dir(dir)?;
    PidLock::acquire(&dir.join(DATA_LOCK_FILE)).map_err(|e| match e {
        PidLockError::Held { pid, .. } => OpenError::Locked {
            dir: dir.to_owned(),
            pid,
        },
        other => OpenError::Lock(other),
    })
}

/// Everything the handlers share; cheap to clone.
#[derive(Clone, Debug)]
pub struct SidecarState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SidecarConfig,
    orchestration_dir: PathBuf,
    state_db: PathBuf,
    keys: Keys,
    journal: journal::Journal,
    leases: leases::LeaseStore,
    inbox: inbox::Inbox,
    results: results::ResultsStore,
    context: context::ContextBroker,
    metrics: metrics::Metrics,
    probes: RwLock<metrics::Probes>,
    db_bytes: std::sync::atomic::AtomicU64,
    started: Instant,
    tracker: Arc<Tracker>,
    /// Dropped last: no other sidecar writes this data while we might.
    _lock: PidLock,
    stopping: Stopping,
    /// The user's home, canonical: never served as a project (`context::check_project`).
    home: Option<PathBuf>,
}

impl SidecarState {
    /// Opens the journal and the results store under `paths`' data dir.
    pub fn open(
        config: SidecarConfig,
        paths: &Paths,
        keys: Keys,
        roster: Roster,
        tracker: Arc<Tracker>,
        stopping: Stopping,
    ) -> Result<SidecarState, OpenError> {
        let retention = journal::Retention {
            max_events: config.retention_events,
            max_age: config.retention_age,
        };
        let lock = lock_data_dir(&paths.orchestration_dir())?;
        let results = results::ResultsStore::open(paths.results_dir())?;
        // Results recorded as pending before a crash are written and announced now, before
        // any request is served.
        let journal = journal::Journal::open_recovering(&paths.state_db(), retention, &mut |p| {
            let (result, stored) = results.restore_pending(&p.json)?;
            Ok(routes::completed_event(
                &result,
                &stored.path,
                &stored.agent_path,
            ))
        })?;
        // On the journal's database, which `open_recovering` has migrated.
        let leases = leases::LeaseStore::open(&paths.state_db(), leases::now_ms())?;
        let inbox = inbox::Inbox::open(&paths.state_db())?;
        let context = context::ContextBroker::new(roster, config.context_budget_bytes);
        let state = SidecarState {
            inner: Arc::new(Inner {
                config,
                orchestration_dir: paths.orchestration_dir(),
                state_db: paths.state_db(),
                keys,
                journal,
                leases,
                inbox,
                results,
                context,
                metrics: metrics::Metrics::default(),
                probes: RwLock::new(metrics::Probes::default()),
                db_bytes: Default::default(),
                started: Instant::now(),
                tracker,
                stopping,
                _lock: lock,
                home: std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .and_then(|h| std::fs::canonicalize(h).ok()),
            }),
        };
        state.refresh_probes();
        Ok(state)
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }
    pub fn body_limit(&self) -> usize {
        self.inner.config.max_body_bytes
    }
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }
    pub fn journal(&self) -> &journal::Journal {
        &self.inner.journal
    }
    pub fn leases(&self) -> &leases::LeaseStore {
        &self.inner.leases
    }
    pub fn tracker(&self) -> Arc<Tracker> {
        self.inner.tracker.clone()
    }

    /// Runs the health probes (blocking): write and remove a probe file, query the journal,
    /// read the RSS.
    pub fn refresh_probes(&self) {
        // Probed where the journal and the results are written.
        let probe_in = |dir: &std::path::Path| {
            let probe = dir.join(".health-probe");
            std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe))
        };
        let storage = match probe_in(&self.inner.orchestration_dir)
            .and_then(|()| probe_in(self.inner.results.dir()))
        {
            Ok(()) => "healthy",
            Err(e) if crate::paths::is_disk_full(&e) => "disk_full",
            Err(_) => "unwritable",
        };
        let j = &self.inner.journal;
        let event_bus = if j.writer_alive() && j.ping() {
            "healthy"
        } else {
            "unhealthy"
        };
        let db = &self.inner.state_db;
        let wal = db.with_extension("db-wal");
        let db_bytes = [db.as_path(), wal.as_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        self.inner
            .db_bytes
            .store(db_bytes, std::sync::atomic::Ordering::Relaxed);
        *self.inner.probes.write().expect("probes lock") = metrics::Probes {
            storage,
            event_bus,
            memory_mb: (crate::api::rss_mb() * 10.0).round() / 10.0,
        };
    }

    /// Refreshes the probes every [`PROBE_INTERVAL`] until the server stops.
    pub async fn probe_loop(self) {
        let mut stopping = self.inner.stopping.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                _ = stopping.wait() => return,
            }
            let s = self.clone();
            let _ = tokio::task::spawn_blocking(move || s.refresh_probes()).await;
        }
    }

    /// Commits what is queued and stops the journal writer.
    pub fn close(&self) {
        self.inner.journal.close();
    }
}

/// Every route of the sidecar.
pub fn router(state: SidecarState, port: u16) -> Router {
    let guard_state = (GuardPort(port), state.tracker());
    let limit = state.body_limit();
    Router::new()
        .route("/health", get(routes::health))
        .route("/status", get(routes::status))
        .route(
            "/api/context/{issue_id}/{agent_type}",
            get(routes::get_context),
        )
        .route("/api/results", post(routes::store_result))
        .route("/api/results/{issue_id}", get(routes::list_results))
        .route("/api/events/stream", get(routes::stream_events))
        .route("/api/events/wait/{event_type}", get(routes::wait_events))
        .route("/api/events/{event_type}", post(routes::publish_event))
        .route("/api/agents", get(routes::list_agents))
        .route("/api/agents/{agent_id}/status", post(routes::agent_status))
        .route("/api/agents/wait_all/{issue_id}", get(coordinate::wait_all))
        .route("/api/inbox/{issue_id}/{agent_id}", get(coordinate::inbox))
        .route("/api/leases", get(coordinate::list_all))
        .route(
            "/api/leases/{issue_id}",
            get(coordinate::list).post(coordinate::reserve),
        )
        .route("/api/leases/{issue_id}/check", get(coordinate::check))
        .route(
            "/api/leases/{issue_id}/{lease_id}",
            delete(coordinate::release_delete),
        )
        .route(
            "/api/leases/{issue_id}/{lease_id}/release",
            post(coordinate::release_post),
        )
        .route(
            "/api/leases/{issue_id}/{lease_id}/renew",
            post(coordinate::renew),
        )
        .route(
            "/api/leases/{issue_id}/agents/{agent_id}/release",
            post(coordinate::release_agent),
        )
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(metrics::TimingLayer::new(state.clone()))
        .with_state(state)
        .layer(crate::server::GuardLayer::new(guard_state))
}
