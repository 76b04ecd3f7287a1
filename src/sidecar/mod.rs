//! The orchestration sidecar (`:3001`): context, results, events and the agent registry for
//! many agents working without a person. `router()` lists every route; `SidecarState` owns
//! the journal, the results store, the context broker and the metrics.

pub mod context;
mod coordinate;
pub mod cost;
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
pub mod store;
pub mod told;
pub mod views;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};

use crate::auth::Keys;
use crate::config::{SidecarConfig, StoreBackend, StoreConfig};
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
pub fn lock_data_dir(dir: &std::path::Path) -> Result<PidLock, OpenError> {
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
    keys: Keys,
    store: store::Store,
    /// "What each agent was told" stays in the local `state.db` on either backend.
    told: told::ToldStore,
    context: context::ContextBroker,
    metrics: metrics::Metrics,
    probes: RwLock<metrics::Probes>,
    health: metrics::HealthCache,
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
        let store = StoreConfig::default();
        SidecarState::open_with_store(config, &store, paths, keys, roster, tracker, stopping)
    }

    /// Opens the store `[store]` selects: SQLite under `paths`' data dir, or NATS (which
    /// connects in the background; call from inside a Tokio runtime).
    pub fn open_with_store(
        config: SidecarConfig,
        store_config: &StoreConfig,
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
        // Results recorded as pending before a crash are written and announced now, before
        // any request is served.
        let store = match store_config.backend {
            StoreBackend::Sqlite => store::Store::Sqlite(store::SqliteStore::open(
                &paths.state_db(),
                paths.results_dir(),
                retention,
            )?),
            StoreBackend::Nats => {
                store::Store::Nats(store::NatsStore::open(store_config, retention))
            }
        };
        // On the SQLite backend the journal has migrated `state.db`; on NATS it is only the
        // home of the local tables, brought to the current layout here.
        if store_config.backend == StoreBackend::Nats {
            let db = paths.state_db();
            journal::schema::migrate(&mut journal::schema::open_conn(&db)?, &db)?;
        }
        let told = told::ToldStore::open(&paths.state_db())?;
        let context = context::ContextBroker::new(roster, config.context_budget_bytes);
        let state = SidecarState {
            inner: Arc::new(Inner {
                config,
                orchestration_dir: paths.orchestration_dir(),
                keys,
                store,
                told,
                context,
                metrics: metrics::Metrics::default(),
                probes: RwLock::new(metrics::Probes::default()),
                health: metrics::HealthCache::default(),
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
    /// Events, results, the agent registry, leases, inbox cursors and cost records.
    pub fn store(&self) -> &store::Store {
        &self.inner.store
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
        let store = &self.inner.store;
        let storage = match probe_in(&self.inner.orchestration_dir)
            .and_then(|()| store.results_dir().map_or(Ok(()), probe_in))
        {
            Ok(()) => "healthy",
            Err(e) if crate::paths::is_disk_full(&e) => "disk_full",
            Err(_) => "unwritable",
        };
        let event_bus = if store.event_bus_healthy() {
            "healthy"
        } else {
            "unhealthy"
        };
        store.measure();
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
        self.inner.store.close();
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
        .route("/api/views/tree", get(views::tree))
        .route("/api/views/events", get(views::events))
        .route("/api/events/stream", get(routes::stream_events))
        .route("/api/events/wait/{event_type}", get(routes::wait_events))
        .route("/api/events/{event_type}", post(routes::publish_event))
        .route("/api/agents", get(routes::list_agents))
        .route("/api/agents/{agent_id}", get(told::agent_detail))
        .route("/api/agents/{agent_id}/status", post(routes::agent_status))
        .route("/api/agents/{agent_id}/told", post(told::report))
        .route("/api/agents/wait_all/{issue_id}", get(coordinate::wait_all))
        .route("/api/inbox/{issue_id}/{agent_id}", get(coordinate::inbox))
        .route("/api/leases", get(coordinate::list_all))
        .route("/api/cost", get(cost::get_report))
        .route("/api/cost/records", post(cost::store_records))
        .route("/api/cost/outcomes", get(cost::get_outcomes))
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
