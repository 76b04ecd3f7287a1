//! The NATS JetStream backend: a team's sidecars share one namespace `ns` — events in the
//! stream `ns_events` (subjects `ns.events.<type>.<topic>`, cursors are its sequences) and
//! the KV buckets `ns_results`, `ns_agents`, `ns_leases`, `ns_inbox` and `ns_cost`.
//!
//! - **Events**: a publish is answered only after JetStream acknowledged it (stored, and
//!   replicated when the stream is). One ordered consumer per sidecar follows the whole
//!   stream: it keeps the newest events in memory (the tail most reads are served from) and
//!   wakes this sidecar's waiters whichever machine published. Older reads fetch from the
//!   stream leader by sequence; 410 `cursor_expired` / `cursor_ahead` come from the stream's
//!   first and last sequence. When the follower is behind the stream's known last sequence
//!   (a leader change), reads go to the leader — events or 503, never a silent empty page —
//!   and a follower that stops receiving is recreated after [`FOLLOW_STALL`].
//!   Each publish carries `Nats-Msg-Id` = the event id assigned before publishing, so the
//!   retry of one publish (an acknowledgement lost while a leader moves) is stored once;
//!   an HTTP client that repeats its request sends a new event, with a new id.
//! - **Results**: the `agent_completed` message is an envelope carrying the stored result —
//!   the source of truth. `ns_results` (key `issue.type.agent` → `{seq, result}`) is the
//!   index, written after the publish is acknowledged and repaired from the stream at every
//!   start, so no result exists without its event, and an event whose index write was lost
//!   (a crash between the two) is indexed again. An identical repeat is "unchanged".
//! - **Leases**: one `ns_leases` key per issue holds its leases, expiry inside each; every
//!   change is a compare-and-set on the key's revision, so two sidecars can never both grant
//!   conflicting (exclusive) leases. The registry and inbox cursors are KV keys too (the
//!   cursor advances by compare-and-set: each event is delivered once).
//! - **Cost records**: the KV bucket `ns_cost`, one key per record (`r.<record key>`),
//!   written with `create` — a compare-and-set on "no revision yet" — so a retried export,
//!   from this machine or another, counts once whenever it comes (a stream's `Nats-Msg-Id`
//!   de-duplication would only cover its window). The session → issue map shares the
//!   bucket (`s.<session>` → issue, from the newest `session_started` event when a session
//!   first costs, so the join outlives the event's retention). Every sidecar mirrors the
//!   bucket in memory (a watcher, like the registry's), at most `MAX_COST_RECORDS_MIRRORED`
//!   records, loaded at start like the other mirrors (bounded by `INITIAL_SYNC_TIMEOUT`),
//!   and sums the mirror into the same groups the SQLite query returns: a report over 100k
//!   records reads no network (about 0.25 s in a debug build).
//! - **Unreachable NATS**: start-up does not fail — connecting and creating the stream and
//!   buckets retry in the background — and every call answers `Unavailable` (503
//!   `store_unavailable`, with the reason) until NATS is back; the client reconnects itself.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::{Error, InboxRequest, PutResult, completed_event};
use crate::api::cost::{CostRecord, CostRecordsStored, CostSums};
use crate::api::leases::{Lease, ReserveRequest};
use crate::api::sidecar::{AgentCounts, AgentRecord, AgentStatusUpdate, Event, StoredResult};
use crate::api::{AgentId, AgentType, IssueId};
use crate::config::StoreConfig;
use crate::server::Stopping;
use crate::sidecar::cost::Group;
use crate::sidecar::inbox::{Delivery, Limits, UNWRITTEN_SPAN};
use crate::sidecar::journal::{
    EventFilter, JournalError, JournalEvent, MAX_EVENTS_PER_ANSWER, NewEvent, Retention,
    TAIL_CAPACITY, rfc3339_now,
};
use crate::sidecar::leases::{self, LeaseError, LeaseTable, leases_conflict};
use crate::sidecar::registry::Registry;

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a JetStream request (publish ack, KV operation, stream info) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Background retries (connect, set-up, following) back off from this…
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// …to at most this.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a publish waits for this sidecar's follower to see its own event, so that a
/// read right after the answer finds it.
pub const VISIBLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Compare-and-set attempts before a contended key is reported.
pub const CAS_RETRIES: usize = 64;
/// How long start-up waits for a bucket's existing keys before serving anyway.
pub const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the retention floor is refreshed from the stream's first sequence.
pub const FLOOR_REFRESH: Duration = Duration::from_secs(1);
/// How long `cco sidecar run` waits for NATS before it serves anyway (answering 503
/// `store_unavailable` until NATS is back).
pub const STARTUP_WAIT: Duration = Duration::from_secs(3);
/// The newest-first listing reads the stream backwards in windows of sequences, starting
/// at least this wide…
pub const NEWEST_MIN_WINDOW: u64 = 64;
/// …doubling while a window holds too few matches, up to this width (each match in a window
/// is one direct get, so this bounds what one window can cost beyond the page).
pub const NEWEST_MAX_WINDOW: u64 = 4096;
/// How many sequences below the in-memory tail one listing page examines at most: a filter
/// that matches nothing that far back ends the page early instead of walking the stream.
pub const NEWEST_SCAN_SPAN: u64 = 1 << 20;
/// Most cost records one sidecar mirrors in memory (about 300 bytes each); past it new
/// records are still stored in `ns_cost` but left out of this sidecar's reports (logged).
pub const MAX_COST_RECORDS_MIRRORED: usize = 1_000_000;
/// Record writes one `POST /api/cost/records` keeps in flight at once.
pub const COST_WRITES_IN_FLIGHT: usize = 64;
/// How many of the newest `session_started` events name the sessions' issues.
pub const COST_SESSIONS_SCANNED: usize = 1000;
/// The event the SessionStart hook publishes.
const SESSION_STARTED: &str = "session_started";
/// How often the follower checks that it keeps up with the stream.
pub const FOLLOW_CHECK: Duration = Duration::from_millis(250);
/// How long the follower may stay behind the stream's known last sequence without
/// receiving anything before it is recreated: after a stream leader is killed the
/// client library's own recovery of an ordered consumer can take 10 s or hang.
pub const FOLLOW_STALL: Duration = Duration::from_secs(1);
/// How long one publish is retried (same `Nats-Msg-Id`, so JetStream stores it once)
/// before the caller gets 503: covers a stream leader election.
pub const PUBLISH_RETRY_WITHIN: Duration = Duration::from_secs(8);
/// Lifecycle events an inbox never delivers.
const LIFECYCLE: [&str; 3] = ["agent_started", "agent_completed", "agent_failed"];

/// The names inside NATS for one namespace.
#[derive(Debug, Clone)]
pub struct Names {
    pub ns: String,
}

impl Names {
    pub fn stream(&self) -> String {
        format!("{}_events", self.ns)
    }
    pub fn bucket(&self, what: &str) -> String {
        format!("{}_{what}", self.ns)
    }
    /// Every event.
    pub fn all_events(&self) -> String {
        format!("{}.events.>", self.ns)
    }
    pub fn subject(&self, event_type: &str, topic: &str) -> String {
        format!("{}.events.{}.{}", self.ns, token(event_type), token(topic))
    }
    /// The subjects a filter reads (the stream leader filters by them).
    pub fn filter_subject(&self, f: &EventFilter) -> String {
        match (&f.event_type, &f.topic) {
            (None, None) => self.all_events(),
            (t, p) => format!(
                "{}.events.{}.{}",
                self.ns,
                t.as_deref().map_or_else(|| "*".to_string(), token),
                p.as_deref().map_or_else(|| "*".to_string(), token)
            ),
        }
    }
}

/// A subject token or KV key part for any text: itself when it is made of `A-Za-z0-9_-`,
/// else `=` and its hex (IDs may contain `.`, topics anything printable).
pub fn token(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        s.to_string()
    } else {
        let mut out = String::with_capacity(1 + 2 * s.len());
        out.push('=');
        for b in s.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// The text a [`token`] stands for.
pub fn untoken(t: &str) -> Option<String> {
    match t.strip_prefix('=') {
        None => Some(t.to_string()),
        Some(hex) => {
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect();
            String::from_utf8(bytes?).ok()
        }
    }
}

/// What one stream message holds: the event (its `seq` is the stream's, filled on read) and,
/// for `agent_completed`, the result it announces.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<StoredResult>,
}

/// One `ns_results` value.
#[derive(Debug, Serialize, Deserialize)]
struct IndexEntry {
    seq: u64,
    result: StoredResult,
}

#[derive(Debug, Clone)]
struct Indexed {
    seq: u64,
    result: StoredResult,
    json: Arc<str>,
}

/// The newest events: every event with seq in (`start`, `head`] is in `events`.
#[derive(Debug, Default)]
struct Tail {
    events: VecDeque<Arc<JournalEvent>>,
    start: u64,
    head: u64,
}

/// What exists once NATS answered and the stream and buckets are there.
#[derive(Debug, Clone)]
struct Handles {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    results: kv::Store,
    agents: kv::Store,
    leases: kv::Store,
    inbox: kv::Store,
    cost: kv::Store,
}

/// This sidecar's copy of `ns_cost`.
#[derive(Debug, Default)]
struct CostMirror {
    /// By record key.
    records: HashMap<String, CostRecord>,
    /// Session id → issue id.
    sessions: HashMap<String, String>,
    /// A record was left out (the mirror is full); logged once.
    overflowed: bool,
}

impl CostMirror {
    fn add(&mut self, r: CostRecord) {
        if self.records.len() >= MAX_COST_RECORDS_MIRRORED && !self.records.contains_key(&r.key) {
            if !self.overflowed {
                self.overflowed = true;
                tracing::warn!(
                    max = MAX_COST_RECORDS_MIRRORED,
                    "store: more cost records than this sidecar mirrors; reports leave the newest out"
                );
            }
            return;
        }
        self.records.insert(r.key.clone(), r);
    }
}

fn cost_record_key(key: &str) -> String {
    format!("r.{}", token(key))
}

fn cost_session_key(session: &str) -> String {
    format!("s.{}", token(session))
}

type Turn = Arc<tokio::sync::Mutex<()>>;
/// One issue's results by (agent type, agent id).
type IssueResults = BTreeMap<(AgentType, AgentId), Indexed>;

struct Inner {
    names: Names,
    config: StoreConfig,
    retention: Retention,
    handles: OnceLock<Handles>,
    /// Why the store is not usable yet (the last connect or set-up error).
    down: Mutex<String>,
    tail: RwLock<Tail>,
    head_tx: watch::Sender<u64>,
    floor: AtomicU64,
    /// The stream's last sequence as last heard from the server (stream info, publish
    /// acknowledgements): when it is above the tail's head, the follower lags and reads go
    /// to the stream leader instead of answering "nothing new" from memory.
    stream_last: AtomicU64,
    /// The follower is behind `stream_last` and did not advance between two checks (a
    /// moment behind is normal: every publish is acknowledged before it is delivered).
    follower_behind: AtomicBool,
    /// The stream's `max_messages` (the count retention every sidecar sees at once).
    max_messages: AtomicU64,
    subscribers: Arc<AtomicU64>,
    pending: AtomicU64,
    registry: Registry,
    leases: RwLock<LeaseTable>,
    lease_count: AtomicUsize,
    results: RwLock<HashMap<IssueId, IssueResults>>,
    cost: RwLock<CostMirror>,
    turns: Mutex<HashMap<(IssueId, AgentId), Turn>>,
    /// Each inbox cursor as this sidecar last wrote or read it (cursors only grow): at or
    /// past the head there is nothing to deliver, and NATS is not asked.
    inbox_known: Mutex<HashMap<String, u64>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The NATS store; cheap to clone.
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("namespace", &self.inner.names.ns)
            .field("servers", &self.inner.config.nats_servers)
            .field("ready", &self.inner.handles.get().is_some())
            .finish()
    }
}

/// Counts an open long poll or stream for `/status` while it lives.
pub struct Subscription(Arc<AtomicU64>);

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{what}: {e}"))
}

fn event_id() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).expect("the OS random source is available");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("evt_{hex}")
}

fn journal_event(mut event: Event, seq: u64) -> Arc<JournalEvent> {
    event.seq = seq;
    let json = serde_json::to_string(&event).expect("events serialize");
    Arc::new(JournalEvent {
        seq,
        event_type: event.event_type,
        topic: event.topic,
        json: RawValue::from_string(json).expect("valid JSON"),
    })
}

fn matches(f: &EventFilter, e: &JournalEvent) -> bool {
    f.event_type.as_ref().is_none_or(|t| *t == e.event_type)
        && f.topic.as_ref().is_none_or(|t| *t == e.topic)
}

/// A secret file (credentials, seed, token) must be the user's own regular file, 0600.
fn check_secret_file(key: &str, p: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).map_err(|e| {
        format!(
            "store.{key} {}: {e} — fix the path in daemon.toml",
            p.display()
        )
    })?;
    if m.file_type().is_symlink() || !m.is_file() {
        return Err(format!(
            "store.{key} {} is not a regular file (a symlink?); cco reads secrets only from a regular file — put the file itself there",
            p.display()
        ));
    }
    if m.mode() & 0o077 != 0 {
        return Err(format!(
            "store.{key} {} is readable by others — `chmod 600 {}`",
            p.display(),
            p.display()
        ));
    }
    Ok(())
}

fn read_secret(key: &str, p: &Path) -> Result<String, String> {
    check_secret_file(key, p)?;
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("store.{key} {}: {e}", p.display()))
}

/// Connects once (no retry: the caller retries with back-off).
async fn connect(cfg: &StoreConfig) -> Result<async_nats::Client, String> {
    let mut opts = async_nats::ConnectOptions::new()
        .name("cco-sidecar")
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("store: connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("store: disconnected from NATS; reconnecting")
                }
                other => tracing::debug!(event = %other, "store: NATS event"),
            }
        });
    if let Some(p) = &cfg.credentials {
        check_secret_file("credentials", p)?;
        opts = opts
            .credentials_file(p)
            .await
            .map_err(|e| format!("store.credentials {}: {e}", p.display()))?;
    }
    if let Some(p) = &cfg.nkey_seed_file {
        opts = opts.nkey(read_secret("nkey_seed_file", p)?);
    }
    if let Some(p) = &cfg.token_file {
        opts = opts.token(read_secret("token_file", p)?);
    }
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    if cfg.tls() {
        opts = opts.require_tls(true);
    }
    let servers = cfg.nats_servers.join(", ");
    match tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        opts.connect(cfg.nats_servers.as_slice()),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot connect to {servers}: {e}")),
        Err(_) => Err(format!("cannot connect to {servers}: timed out")),
    }
}

/// Creates the stream and buckets when missing (idempotent: existing ones are used as
/// they are, so sidecars with other settings never fight over them).
async fn set_up(
    client: async_nats::Client,
    names: &Names,
    retention: Retention,
    replicas: usize,
) -> Result<Handles, String> {
    let js = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client.clone());
    let stream = js
        .get_or_create_stream(stream::Config {
            name: names.stream(),
            subjects: vec![names.all_events()],
            max_messages: retention.max_events.min(i64::MAX as u64) as i64,
            max_age: retention.max_age,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create or open stream {}: {e}", names.stream()))?;
    let mut buckets = Vec::new();
    for what in ["results", "agents", "leases", "inbox", "cost"] {
        let bucket = names.bucket(what);
        let store = match js.get_key_value(&bucket).await {
            Ok(s) => s,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    num_replicas: replicas,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create KV bucket {bucket}: {e}"))?,
        };
        buckets.push(store);
    }
    let [results, agents, leases, inbox, cost]: [kv::Store; 5] =
        buckets.try_into().expect("five buckets");
    Ok(Handles {
        client,
        js,
        stream,
        results,
        agents,
        leases,
        inbox,
        cost,
    })
}

enum Cas {
    Conflict,
    Failed(Error),
}

async fn cas_write(
    store: &kv::Store,
    key: &str,
    value: Vec<u8>,
    revision: Option<u64>,
) -> Result<u64, Cas> {
    match revision {
        Some(r) => store.update(key, value.into(), r).await.map_err(|e| {
            if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                Cas::Conflict
            } else {
                Cas::Failed(unavailable("KV update", e))
            }
        }),
        None => store.create(key, value.into()).await.map_err(|e| {
            if e.kind() == kv::CreateErrorKind::AlreadyExists {
                Cas::Conflict
            } else {
                Cas::Failed(unavailable("KV create", e))
            }
        }),
    }
}

impl NatsStore {
    /// Starts connecting in the background (on the current Tokio runtime) and returns at
    /// once: until NATS answers, every call is `Unavailable`.
    pub fn open(config: &StoreConfig, retention: Retention) -> NatsStore {
        let store = NatsStore {
            inner: Arc::new(Inner {
                names: Names {
                    ns: config.namespace.clone(),
                },
                config: config.clone(),
                retention,
                handles: OnceLock::new(),
                down: Mutex::new(format!("connecting to {}", config.nats_servers.join(", "))),
                tail: RwLock::new(Tail::default()),
                head_tx: watch::Sender::new(0),
                floor: AtomicU64::new(0),
                stream_last: AtomicU64::new(0),
                follower_behind: AtomicBool::new(false),
                max_messages: AtomicU64::new(u64::MAX),
                subscribers: Arc::new(AtomicU64::new(0)),
                pending: AtomicU64::new(0),
                registry: Registry::default(),
                leases: RwLock::new(LeaseTable::default()),
                lease_count: AtomicUsize::new(0),
                results: RwLock::new(HashMap::new()),
                cost: RwLock::new(CostMirror::default()),
                turns: Mutex::new(HashMap::new()),
                inbox_known: Mutex::new(HashMap::new()),
                stop: watch::Sender::new(false),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let s = store.clone();
        let task = tokio::spawn(async move { s.start().await });
        store.inner.tasks.lock().expect("tasks lock").push(task);
        store
    }

    /// Resolves once the store is usable, or after `timeout` (tests and tools).
    pub async fn ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.head_tx.subscribe();
        loop {
            if self.handles().is_ok() {
                return true;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return self.handles().is_ok(),
            }
        }
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let task = tokio::spawn(f);
        self.inner.tasks.lock().expect("tasks lock").push(task);
    }

    fn stopped(&self) -> bool {
        *self.inner.stop.borrow()
    }

    async fn pause(&self, backoff: &mut Duration) {
        let mut stop = self.inner.stop.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        *backoff = (*backoff * 2).min(RETRY_MAX);
    }

    fn set_down(&self, reason: String) {
        tracing::warn!(%reason, "store: NATS is not usable yet; retrying");
        *self.inner.down.lock().expect("down lock") = reason;
    }

    /// Connects, creates what is missing, loads the mirrors, then follows.
    async fn start(self) {
        let mut backoff = RETRY_MIN;
        let client = loop {
            if self.stopped() {
                return;
            }
            match connect(&self.inner.config).await {
                Ok(c) => break c,
                Err(e) => self.set_down(e),
            }
            self.pause(&mut backoff).await;
        };
        let replicas = usize::from(self.inner.config.replicas);
        let handles = loop {
            if self.stopped() {
                return;
            }
            match set_up(
                client.clone(),
                &self.inner.names,
                self.inner.retention,
                replicas,
            )
            .await
            {
                Ok(h) => break h,
                Err(e) => self.set_down(e),
            }
            self.pause(&mut backoff).await;
        };
        // The mirrors of the registry, leases, results and cost records: one watcher per bucket for the
        // sidecar's life; serving starts once each has delivered the existing keys.
        for which in [
            Bucket::Agents,
            Bucket::Leases,
            Bucket::Results,
            Bucket::Cost,
        ] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let s = self.clone();
            let h = handles.clone();
            self.spawn(async move { s.watch_bucket(h, which, Some(tx)).await });
            if tokio::time::timeout(INITIAL_SYNC_TIMEOUT, rx)
                .await
                .is_err()
            {
                tracing::warn!(
                    bucket = which.name(),
                    "store: the bucket's keys did not all arrive in time; serving with what arrived"
                );
            }
        }
        loop {
            if self.stopped() {
                return;
            }
            match self.load(&handles).await {
                Ok(()) => break,
                Err(e) => self.set_down(e),
            }
            self.pause(&mut backoff).await;
        }
        let _ = self.inner.handles.set(handles.clone());
        *self.inner.down.lock().expect("down lock") = String::new();
        tracing::info!(
            namespace = %self.inner.names.ns,
            head = self.head(),
            "store: NATS JetStream ready"
        );
        self.inner.head_tx.send_modify(|_| {});
        let s = self.clone();
        let h = handles.clone();
        self.spawn(async move { s.follow(h).await });
        let s = self.clone();
        let h = handles.clone();
        self.spawn(async move { s.refresh_floor_loop(h).await });
    }

    /// The head and the floor, and the results index repaired from the stream.
    async fn load(&self, h: &Handles) -> Result<(), String> {
        let info = h
            .stream
            .get_info()
            .await
            .map_err(|e| format!("stream {}: {e}", self.inner.names.stream()))?;
        let last = info.state.last_sequence;
        let floor = info.state.first_sequence.saturating_sub(1).min(last);
        let max = u64::try_from(info.config.max_messages).unwrap_or(u64::MAX);
        self.inner.max_messages.store(max.max(1), Ordering::Release);
        {
            let mut t = self.inner.tail.write().expect("tail lock");
            if t.head < last {
                *t = Tail {
                    events: VecDeque::new(),
                    start: last,
                    head: last,
                };
            }
        }
        self.inner.floor.store(floor, Ordering::Release);
        self.inner.stream_last.fetch_max(last, Ordering::AcqRel);
        self.inner.head_tx.send_replace(last);
        self.repair_index(h, floor, last).await
    }

    /// Indexes every `agent_completed` result in the stream whose index entry is older
    /// (a crash between the publish and the index write).
    async fn repair_index(&self, h: &Handles, floor: u64, last: u64) -> Result<(), String> {
        let subject = format!("{}.events.agent_completed.>", self.inner.names.ns);
        let mut seq = floor + 1;
        let mut repaired = 0;
        while seq <= last {
            let msg = match h
                .stream
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(subject.clone())
                .send()
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(format!("repairing the results index: {e}")),
            };
            seq = msg.sequence + 1;
            let Ok(env) = serde_json::from_slice::<Envelope>(&msg.payload) else {
                continue;
            };
            let Some(result) = env.result else { continue };
            let newer = self
                .indexed(&result.issue_id, &result.agent_type, &result.agent_id)
                .is_none_or(|i| i.seq < msg.sequence);
            if newer {
                let key = result_key(&result);
                let value = serde_json::to_vec(&IndexEntry {
                    seq: msg.sequence,
                    result: result.clone(),
                })
                .expect("results serialize");
                h.results
                    .put(&key, value.into())
                    .await
                    .map_err(|e| format!("repairing the results index: {e}"))?;
                self.index_local(result, msg.sequence);
                repaired += 1;
            }
        }
        if repaired > 0 {
            tracing::warn!(
                repaired,
                "store: indexed results whose index write was lost (an unclean stop)"
            );
        }
        Ok(())
    }

    /// Follows the whole stream from the head: fills the tail, indexes results, wakes
    /// waiters. An ordered consumer delivers every message once, in order, and recreates
    /// itself after a reconnect; on an error it is recreated from the head here.
    async fn follow(self, h: Handles) {
        let mut stop = self.inner.stop.subscribe();
        let mut backoff = RETRY_MIN;
        loop {
            if self.stopped() {
                return;
            }
            let start = self.inner.tail.read().expect("tail lock").head + 1;
            if self.inner.stream_last.load(Ordering::Acquire) >= start {
                // No consumer delivers until this one is created: reads go to the leader.
                self.inner.follower_behind.store(true, Ordering::Release);
            }
            let consumer = h
                .stream
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: h.client.new_inbox(),
                    filter_subject: self.inner.names.all_events(),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: start,
                    },
                    ..Default::default()
                })
                .await;
            let mut messages = match consumer {
                Ok(c) => match c.messages().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "store: cannot follow the event stream; retrying");
                        self.pause(&mut backoff).await;
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "store: cannot follow the event stream; retrying");
                    self.pause(&mut backoff).await;
                    continue;
                }
            };
            backoff = RETRY_MIN;
            let mut check = tokio::time::interval(FOLLOW_CHECK);
            // Since when, and at which head, the follower is behind the stream.
            let mut behind: Option<(tokio::time::Instant, u64)> = None;
            loop {
                let next = tokio::select! {
                    m = messages.next() => m,
                    _ = check.tick() => {
                        if self.follower_stalled(&mut behind) {
                            tracing::warn!(
                                head = self.head(),
                                last = self.inner.stream_last.load(Ordering::Acquire),
                                "store: the event stream follower stopped receiving; recreating it"
                            );
                            break;
                        }
                        continue;
                    }
                    _ = stop.wait_for(|s| *s) => return,
                };
                match next {
                    Some(Ok(m)) => {
                        let Ok(info) = m.info() else { continue };
                        let seq = info.stream_sequence;
                        self.append_tail(&m.payload, seq);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "store: the event stream consumer failed; recreating it");
                        break;
                    }
                    None => break,
                }
            }
            self.pause(&mut backoff).await;
        }
    }

    /// Whether the follower has been behind the stream's known last sequence, without
    /// advancing, for [`FOLLOW_STALL`]; `behind` carries the state between checks.
    fn follower_stalled(&self, behind: &mut Option<(tokio::time::Instant, u64)>) -> bool {
        let head = self.head();
        if self.inner.stream_last.load(Ordering::Acquire) <= head {
            *behind = None;
            self.inner.follower_behind.store(false, Ordering::Release);
            return false;
        }
        match *behind {
            Some((since, at)) if at == head => {
                if !self.inner.follower_behind.swap(true, Ordering::AcqRel) {
                    // Wake the waiters: their reads now go to the stream leader.
                    self.inner.head_tx.send_modify(|_| {});
                }
                since.elapsed() >= FOLLOW_STALL
            }
            _ => {
                *behind = Some((tokio::time::Instant::now(), head));
                self.inner.follower_behind.store(false, Ordering::Release);
                false
            }
        }
    }

    fn append_tail(&self, payload: &[u8], seq: u64) {
        let env = match serde_json::from_slice::<Envelope>(payload) {
            Ok(env) => Some(env),
            Err(e) => {
                tracing::warn!(seq, error = %e, "store: skipping a stream message that is not a cco event");
                None
            }
        };
        {
            let mut t = self.inner.tail.write().expect("tail lock");
            if seq <= t.head {
                return;
            }
            if let Some(env) = &env {
                t.events.push_back(journal_event(env.event.clone(), seq));
            }
            t.head = seq;
            while t.events.len() > TAIL_CAPACITY {
                if let Some(e) = t.events.pop_front() {
                    t.start = e.seq;
                }
            }
            if t.events.is_empty() {
                t.start = seq;
            }
        }
        if let Some(Envelope {
            result: Some(r), ..
        }) = env
        {
            self.index_local(r, seq);
        }
        self.inner.head_tx.send_replace(seq);
    }

    async fn refresh_floor_loop(self, h: Handles) {
        let mut stop = self.inner.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLOOR_REFRESH) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let _ = self.refresh_floor(&h).await;
        }
    }

    /// The stream's first and last sequence now; updates the floor.
    async fn refresh_floor(&self, h: &Handles) -> Result<(u64, u64), Error> {
        let info = h
            .stream
            .get_info()
            .await
            .map_err(|e| unavailable("stream info", e))?;
        let last = info.state.last_sequence;
        let floor = info.state.first_sequence.saturating_sub(1).min(last);
        self.inner.floor.fetch_max(floor, Ordering::AcqRel);
        self.inner.stream_last.fetch_max(last, Ordering::AcqRel);
        Ok((self.floor(), last))
    }

    async fn watch_bucket(
        self,
        h: Handles,
        which: Bucket,
        mut synced: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let store = match which {
            Bucket::Agents => h.agents.clone(),
            Bucket::Leases => h.leases.clone(),
            Bucket::Results => h.results.clone(),
            Bucket::Cost => h.cost.clone(),
        };
        let mut stop = self.inner.stop.subscribe();
        let mut backoff = RETRY_MIN;
        loop {
            if self.stopped() {
                return;
            }
            if synced.is_some()
                && let Ok(status) = store.status().await
                && status.values() == 0
                && let Some(tx) = synced.take()
            {
                let _ = tx.send(());
            }
            match store.watch_with_history(">").await {
                Ok(mut w) => {
                    backoff = RETRY_MIN;
                    loop {
                        let next = tokio::select! {
                            e = w.next() => e,
                            _ = stop.wait_for(|s| *s) => return,
                        };
                        match next {
                            Some(Ok(entry)) => {
                                self.apply(which, &entry);
                                if entry.delta == 0
                                    && let Some(tx) = synced.take()
                                {
                                    let _ = tx.send(());
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!(bucket = which.name(), error = %e, "store: KV watch failed; recreating it");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(bucket = which.name(), error = %e, "store: cannot watch a KV bucket; retrying")
                }
            }
            self.pause(&mut backoff).await;
        }
    }

    fn apply(&self, which: Bucket, entry: &kv::Entry) {
        if entry.operation != kv::Operation::Put {
            return;
        }
        match which {
            Bucket::Agents => match serde_json::from_slice::<AgentRecord>(&entry.value) {
                Ok(rec) => {
                    self.inner.registry.apply(std::iter::once(&rec));
                    // `wait_all` wakes on registry changes too.
                    self.inner.head_tx.send_modify(|_| {});
                }
                Err(e) => {
                    tracing::warn!(key = %entry.key, error = %e, "store: skipping an agent record that does not parse")
                }
            },
            Bucket::Leases => {
                let Some(issue) = untoken(&entry.key).and_then(|i| IssueId::parse(&i).ok()) else {
                    return;
                };
                match serde_json::from_slice::<Vec<Lease>>(&entry.value) {
                    Ok(leases) => self.mirror_leases(&issue, leases),
                    Err(e) => {
                        tracing::warn!(key = %entry.key, error = %e, "store: skipping leases that do not parse")
                    }
                }
            }
            Bucket::Results => match serde_json::from_slice::<IndexEntry>(&entry.value) {
                Ok(i) => self.index_local(i.result, i.seq),
                Err(e) => {
                    tracing::warn!(key = %entry.key, error = %e, "store: skipping a result index entry that does not parse")
                }
            },
            Bucket::Cost => {
                if let Some(session) = entry.key.strip_prefix("s.").and_then(untoken) {
                    let issue = String::from_utf8_lossy(&entry.value).into_owned();
                    let mut m = self.inner.cost.write().expect("cost lock");
                    m.sessions.insert(session, issue);
                } else {
                    match serde_json::from_slice::<CostRecord>(&entry.value) {
                        Ok(r) => self.inner.cost.write().expect("cost lock").add(r),
                        Err(e) => {
                            tracing::warn!(key = %entry.key, error = %e, "store: skipping a cost record that does not parse")
                        }
                    }
                }
            }
        }
    }

    fn mirror_leases(&self, issue: &IssueId, leases: Vec<Lease>) {
        let mut t = self.inner.leases.write().expect("lease lock");
        t.set_issue(issue, leases);
        self.inner.lease_count.store(t.count(), Ordering::Release);
    }

    fn index_local(&self, result: StoredResult, seq: u64) {
        let mut map = self.inner.results.write().expect("results lock");
        let issue = map.entry(result.issue_id.clone()).or_default();
        let key = (result.agent_type.clone(), result.agent_id.clone());
        if issue.get(&key).is_some_and(|i| i.seq >= seq) {
            return;
        }
        let json: Arc<str> = serde_json::to_string(&result)
            .expect("results serialize")
            .into();
        issue.insert(key, Indexed { seq, result, json });
    }

    fn indexed(&self, issue: &IssueId, agent_type: &AgentType, agent: &AgentId) -> Option<Indexed> {
        self.inner
            .results
            .read()
            .expect("results lock")
            .get(issue)?
            .get(&(agent_type.clone(), agent.clone()))
            .cloned()
    }

    /// The handles, if NATS is usable now; else why not.
    fn handles(&self) -> Result<&Handles, Error> {
        let Some(h) = self.inner.handles.get() else {
            let reason = self.inner.down.lock().expect("down lock").clone();
            return Err(Error::Unavailable(reason));
        };
        if h.client.connection_state() != async_nats::connection::State::Connected {
            return Err(Error::Unavailable(format!(
                "not connected to {} (reconnecting)",
                self.inner.config.nats_servers.join(", ")
            )));
        }
        Ok(h)
    }

    /// Waits (bounded) until the follower has seen `seq`.
    async fn visible(&self, seq: u64) {
        let mut rx = self.inner.head_tx.subscribe();
        let _ = tokio::time::timeout(VISIBLE_TIMEOUT, async {
            loop {
                if self.head() >= seq {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Publishes one message and waits for JetStream's acknowledgement: its sequence.
    async fn append(&self, h: &Handles, env: &Envelope) -> Result<u64, Error> {
        let subject = self
            .inner
            .names
            .subject(&env.event.event_type, &env.event.topic);
        let payload = serde_json::to_vec(env).expect("events serialize");
        let mut headers = async_nats::HeaderMap::new();
        // JetStream drops a retried publish with the same id (its duplicate window) and
        // answers with the first one's sequence: a publish stored but acknowledged late
        // (a leader moving) is retried below without being stored twice.
        headers.insert("Nats-Msg-Id", env.event.event_id.as_str());
        // Not connected: the client would buffer the message and send it on reconnect,
        // storing an event whose caller was told 503. Refuse before it is written.
        if h.client.connection_state() != async_nats::connection::State::Connected {
            return Err(unavailable(
                "publish",
                "NATS is not connected, the event was not stored",
            ));
        }
        self.inner.pending.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + PUBLISH_RETRY_WITHIN;
        let mut backoff = RETRY_MIN;
        let acked = loop {
            let once = async {
                h.js.publish_with_headers(subject.clone(), headers.clone(), payload.clone().into())
                    .await
                    .map_err(|e| unavailable("publish", e))?
                    .await
                    .map_err(|e| unavailable("publish acknowledgement", e))
            }
            .await;
            match once {
                // Only while connected (a leader moving): with NATS gone, 503 at once.
                Err(e)
                    if tokio::time::Instant::now() + backoff < deadline
                        && h.client.connection_state()
                            == async_nats::connection::State::Connected
                        && !self.stopped() =>
                {
                    tracing::debug!(error = %e, "store: retrying a publish with the same message id");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                other => break other,
            }
        };
        self.inner.pending.fetch_sub(1, Ordering::Relaxed);
        let seq = acked?.sequence;
        self.inner.stream_last.fetch_max(seq, Ordering::AcqRel);
        Ok(seq)
    }

    /// The first event stored at or after `seq` on `subject`, read from the stream leader:
    /// its sequence and the event (`None` when its payload does not decode), or `None` past
    /// the stream's end.
    async fn stored_from(
        &self,
        h: &Handles,
        seq: u64,
        subject: &str,
    ) -> Result<Option<(u64, Option<Arc<JournalEvent>>)>, Error> {
        let msg = match h
            .stream
            .raw_message_builder()
            .sequence(seq)
            .next_by_subject(subject.to_string())
            .send()
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(unavailable("reading the event stream", e)),
        };
        let event = serde_json::from_slice::<Envelope>(&msg.payload)
            .ok()
            .map(|env| journal_event(env.event, msg.sequence));
        Ok(Some((msg.sequence, event)))
    }

    // --- events -------------------------------------------------------------------------

    pub fn head(&self) -> u64 {
        self.inner.tail.read().expect("tail lock").head
    }
    /// The stream's first sequence minus one: refreshed from the server, and at least
    /// `head - max_messages` (count retention drops the oldest as each event arrives).
    pub fn floor(&self) -> u64 {
        let by_count = self
            .head()
            .saturating_sub(self.inner.max_messages.load(Ordering::Acquire));
        self.inner.floor.load(Ordering::Acquire).max(by_count)
    }
    pub fn pending(&self) -> u64 {
        self.inner.pending.load(Ordering::Relaxed)
    }
    pub fn subscribers(&self) -> u64 {
        self.inner.subscribers.load(Ordering::Relaxed)
    }
    pub fn subscription(&self) -> Subscription {
        self.inner.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription(self.inner.subscribers.clone())
    }
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head_tx.subscribe()
    }

    pub async fn publish(&self, event: NewEvent) -> Result<Arc<JournalEvent>, Error> {
        let h = self.handles()?;
        let env = Envelope {
            event: Event {
                event_id: event_id(),
                seq: 0,
                event_type: event.event_type.to_string(),
                publisher: event.publisher,
                topic: event.topic,
                data: event.data,
                correlation_id: event.correlation_id,
                timestamp: rfc3339_now(),
            },
            result: None,
        };
        let seq = self.append(h, &env).await?;
        self.visible(seq).await;
        Ok(journal_event(env.event, seq))
    }

    /// Appends an event kept elsewhere (`cco store migrate`): its id, publisher, topic,
    /// data and timestamp stay, its seq is the stream's; an `agent_completed` carrying its
    /// `result` is indexed like a stored one. Returns the new seq.
    pub async fn import_event(
        &self,
        event: Event,
        result: Option<StoredResult>,
    ) -> Result<u64, Error> {
        let h = self.handles()?;
        let env = Envelope { event, result };
        let seq = self.append(h, &env).await?;
        if let Some(r) = env.result {
            let value = serde_json::to_vec(&IndexEntry {
                seq,
                result: r.clone(),
            })
            .expect("results serialize");
            h.results
                .put(result_key(&r), value.into())
                .await
                .map_err(|e| unavailable("results index", e))?;
            self.index_local(r, seq);
        }
        Ok(seq)
    }

    /// Writes an agent record kept elsewhere as it is (`cco store migrate`).
    pub async fn import_agent(&self, record: &AgentRecord) -> Result<(), Error> {
        let h = self.handles()?;
        let value = serde_json::to_vec(record).expect("records serialize");
        h.agents
            .put(token(record.agent_id.as_str()), value.into())
            .await
            .map_err(|e| unavailable("agent registry", e))?;
        self.inner.registry.apply(std::iter::once(record));
        Ok(())
    }

    pub async fn read(
        &self,
        since: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<(Vec<Arc<JournalEvent>>, u64), Error> {
        let h = self.handles()?;
        // The stream's last sequence when this sidecar's follower lags behind `since`.
        let mut lagging = None;
        if since > self.head() {
            // A cursor from another machine may be ahead of what this follower has seen.
            let (_, last) = self.refresh_floor(h).await?;
            if since > last {
                return Err(JournalError::Ahead { since, head: last }.into());
            }
            self.visible(since).await;
            if since > self.head() {
                // Still behind (reconnecting): answer from the stream leader up to `last`.
                lagging = Some(last);
            }
        }
        let floor = self.floor();
        if since < floor {
            return Err(JournalError::Gone { since, floor }.into());
        }
        let known_last = self.inner.stream_last.load(Ordering::Acquire);
        if lagging.is_none()
            && self.inner.follower_behind.load(Ordering::Acquire)
            && known_last > self.head()
        {
            // The stream holds events this follower has not received (it is recreating
            // after a leader change): "nothing new" from memory would be a silent gap.
            lagging = Some(known_last);
        }
        if lagging.is_none()
            && let Some(answer) = self.read_tail(since, filter, limit)
        {
            return Ok(answer);
        }
        // Behind the tail (or ahead of the follower): from the stream leader, by sequence.
        let (floor, _) = self.refresh_floor(h).await?;
        if since < floor {
            return Err(JournalError::Gone { since, floor }.into());
        }
        let (tail_head, tail_start) = {
            let t = self.inner.tail.read().expect("tail lock");
            (t.head, t.start)
        };
        let head = lagging.unwrap_or(tail_head).max(tail_head);
        let subject = self.inner.names.filter_subject(filter);
        let mut out = Vec::new();
        let mut seq = since + 1;
        while out.len() < limit && seq <= head {
            if seq > tail_start && tail_head >= head {
                // The rest is in memory.
                let from = seq - 1;
                if let Some((more, _)) = self.read_tail(from, filter, limit - out.len()) {
                    out.extend(more.into_iter().filter(|e| e.seq <= head));
                    break;
                }
            }
            let Some((at, event)) = self.stored_from(h, seq, &subject).await? else {
                break;
            };
            if at > head {
                break;
            }
            seq = at + 1;
            out.extend(event.filter(|e| matches(filter, e)));
        }
        let floor = self.floor();
        if since < floor {
            // Compacted while we read: the answer may have gaps.
            return Err(JournalError::Gone { since, floor }.into());
        }
        let next = if out.len() >= limit {
            out.last().map_or(head, |e| e.seq)
        } else {
            head
        };
        Ok((out, next))
    }

    /// Matching events with seq < `before`, newest first, at most `limit`: from the
    /// in-memory tail, then from the stream leader in windows walking backwards (inside a
    /// window, forward direct gets by the filter's subject, so the leader skips what does not
    /// match), until the page is full, the floor is reached or `NEWEST_SCAN_SPAN` sequences
    /// below the tail were examined.
    pub async fn newest(
        &self,
        before: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<(u64, Box<RawValue>)>, Error> {
        let h = self.handles()?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // The newest sequence still to look at.
        let mut hi = before.saturating_sub(1).min(self.head());
        {
            let t = self.inner.tail.read().expect("tail lock");
            if hi > t.start {
                for e in t.events.iter().rev().filter(|e| e.seq <= hi) {
                    if matches(filter, e) {
                        out.push((e.seq, e.json.clone()));
                        if out.len() == limit {
                            return Ok(out);
                        }
                    }
                }
                hi = t.start;
            }
        }
        let subject = self.inner.names.filter_subject(filter);
        let mut window = (limit as u64).clamp(NEWEST_MIN_WINDOW, NEWEST_MAX_WINDOW);
        let mut scanned = 0u64;
        while out.len() < limit && hi > self.floor() && scanned < NEWEST_SCAN_SPAN {
            // The window (lo, hi].
            let lo = hi.saturating_sub(window).max(self.floor());
            let mut found = Vec::new();
            let mut seq = lo + 1;
            while seq <= hi {
                let Some((at, event)) = self.stored_from(h, seq, &subject).await? else {
                    break;
                };
                if at > hi {
                    break;
                }
                seq = at + 1;
                found.extend(event.filter(|e| matches(filter, e)));
            }
            for e in found.iter().rev() {
                if out.len() == limit {
                    break;
                }
                out.push((e.seq, e.json.clone()));
            }
            scanned += hi - lo;
            hi = lo;
            window = (window * 2).min(NEWEST_MAX_WINDOW);
        }
        Ok(out)
    }

    /// The answer from memory when `since` is inside the tail.
    fn read_tail(
        &self,
        since: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Option<(Vec<Arc<JournalEvent>>, u64)> {
        let t = self.inner.tail.read().expect("tail lock");
        if since < t.start {
            return None;
        }
        let from = t.events.partition_point(|e| e.seq <= since);
        let mut out = Vec::new();
        let mut next = t.head;
        for e in t.events.iter().skip(from) {
            if matches(filter, e) {
                out.push(e.clone());
                if out.len() == limit {
                    next = e.seq;
                    break;
                }
            }
        }
        Some((out, next))
    }

    pub async fn wait(
        &self,
        filter: &EventFilter,
        since: Option<u64>,
        timeout: Duration,
        mut stopping: Stopping,
    ) -> Result<(Vec<Arc<JournalEvent>>, u64), Error> {
        self.handles()?;
        let mut rx = self.inner.head_tx.subscribe();
        rx.borrow_and_update();
        let mut since = since.unwrap_or_else(|| self.head());
        let deadline = tokio::time::Instant::now() + timeout;
        let _sub = self.subscription();
        loop {
            let (events, next) = self.read(since, filter, MAX_EVENTS_PER_ANSWER).await?;
            if !events.is_empty() {
                return Ok((events, next));
            }
            since = next;
            if stopping.is_stopping() {
                return Ok((events, since));
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Ok((Vec::new(), since)) },
                _ = tokio::time::sleep_until(deadline) => return Ok((Vec::new(), since)),
                _ = stopping.wait() => return Ok((Vec::new(), since)),
            }
        }
    }

    // --- agent registry -----------------------------------------------------------------

    pub fn agent(&self, id: &AgentId) -> Option<AgentRecord> {
        self.inner.registry.get(id)
    }
    pub fn agents(&self) -> Vec<AgentRecord> {
        self.inner.registry.list()
    }
    pub fn agent_counts(&self) -> AgentCounts {
        self.inner.registry.counts()
    }

    pub async fn set_agent(
        &self,
        id: AgentId,
        update: AgentStatusUpdate,
    ) -> Result<AgentRecord, Error> {
        let h = self.handles()?;
        let key = token(id.as_str());
        for _ in 0..CAS_RETRIES {
            let entry = h
                .agents
                .entry(&key)
                .await
                .map_err(|e| unavailable("agent registry", e))?;
            let (prev, rev) = match entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    serde_json::from_slice::<AgentRecord>(&e.value).ok(),
                    Some(e.revision),
                ),
                Some(e) => (None, Some(e.revision)),
                None => (None, None),
            };
            let rec = Registry::merge(prev.as_ref(), &id, update.clone(), &rfc3339_now());
            let value = serde_json::to_vec(&rec).expect("records serialize");
            match cas_write(&h.agents, &key, value, rev).await {
                Ok(_) => {
                    self.inner.registry.apply(std::iter::once(&rec));
                    if prev.is_none() {
                        // Its inbox starts here: events published before it existed are
                        // not its mail.
                        let cursor_key = inbox_key(&rec.issue_id, &id);
                        let head = self.head().to_string().into_bytes();
                        let _ = h.inbox.create(&cursor_key, head.into()).await;
                    }
                    self.inner.head_tx.send_modify(|_| {});
                    return Ok(rec);
                }
                Err(Cas::Conflict) => continue,
                Err(Cas::Failed(e)) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "agent {id}: {CAS_RETRIES} concurrent updates in a row; retry"
        )))
    }

    // --- results ------------------------------------------------------------------------

    async fn turn(&self, issue: &IssueId, agent: &AgentId) -> TurnGuard {
        let key = (issue.clone(), agent.clone());
        let lock = self
            .inner
            .turns
            .lock()
            .expect("turns lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        TurnGuard {
            store: self.clone(),
            key,
            lock,
            guard: Some(guard),
        }
    }

    fn paths(&self, r: &StoredResult) -> (String, String) {
        let base = format!("nats:{}/{}", self.inner.names.bucket("results"), r.issue_id);
        (
            format!("{base}/{}.json", r.agent_type),
            format!("{base}/{}/{}.json", r.agent_type, r.agent_id),
        )
    }

    pub async fn put_result(&self, stored: StoredResult) -> Result<PutResult, Error> {
        let h = self.handles()?;
        let _turn = self.turn(&stored.issue_id, &stored.agent_id).await;
        let key = result_key(&stored);
        let (path, agent_path) = self.paths(&stored);
        // The index another machine wrote may be newer than this mirror.
        let from_kv = h
            .results
            .get(&key)
            .await
            .map_err(|e| unavailable("results index", e))?
            .and_then(|v| serde_json::from_slice::<IndexEntry>(&v).ok());
        let local = self.indexed(&stored.issue_id, &stored.agent_type, &stored.agent_id);
        let previous = match (from_kv, local) {
            (Some(k), Some(l)) if l.seq > k.seq => Some(l.result),
            (Some(k), _) => Some(k.result),
            (None, l) => l.map(|l| l.result),
        };
        if previous.is_some_and(|p| p.result == stored.result) {
            return Ok(PutResult::Unchanged { path });
        }
        let announce = completed_event(&stored, &path, &agent_path);
        let env = Envelope {
            event: Event {
                event_id: event_id(),
                seq: 0,
                event_type: announce.event_type.to_string(),
                publisher: announce.publisher,
                topic: announce.topic,
                data: announce.data,
                correlation_id: None,
                timestamp: rfc3339_now(),
            },
            result: Some(stored.clone()),
        };
        // The event (with the result) first: once acknowledged the result exists.
        let seq = self.append(h, &env).await?;
        let value = serde_json::to_vec(&IndexEntry {
            seq,
            result: stored.clone(),
        })
        .expect("results serialize");
        if let Err(e) = h.results.put(&key, value.into()).await {
            // The event is stored; the next start indexes it again.
            tracing::warn!(key, error = %e, "store: cannot index a stored result now; the next start does");
        }
        self.index_local(stored, seq);
        self.visible(seq).await;
        Ok(PutResult::Stored {
            path,
            event: journal_event(env.event, seq),
        })
    }

    pub async fn results(&self, issue: &IssueId) -> Result<Vec<Arc<str>>, Error> {
        self.handles()?;
        Ok(self
            .inner
            .results
            .read()
            .expect("results lock")
            .get(issue)
            .map(|m| m.values().map(|i| i.json.clone()).collect())
            .unwrap_or_default())
    }
    pub async fn result_of(
        &self,
        issue: &IssueId,
        agent_type: &AgentType,
        agent: &AgentId,
    ) -> Result<Option<Arc<str>>, Error> {
        Ok(self.indexed(issue, agent_type, agent).map(|i| i.json))
    }
    pub fn results_stored(&self) -> u64 {
        let map = self.inner.results.read().expect("results lock");
        map.values().map(|m| m.len() as u64).sum()
    }
    pub fn bytes(&self) -> u64 {
        let map = self.inner.results.read().expect("results lock");
        map.values()
            .flat_map(|m| m.values())
            .map(|i| i.json.len() as u64)
            .sum()
    }
    pub fn results_failing(&self) -> bool {
        false
    }

    // --- leases -------------------------------------------------------------------------

    pub fn leases_empty(&self) -> bool {
        self.inner.lease_count.load(Ordering::Acquire) == 0
    }
    pub fn leases(&self, issue: Option<&IssueId>, now: u64) -> Vec<Lease> {
        let t = self.inner.leases.read().expect("lease lock");
        match issue {
            Some(i) => t.live(i, now).cloned().collect(),
            None => t.all_live(now),
        }
    }
    pub fn exclusive_holder(
        &self,
        issue: &IssueId,
        path: &str,
        asking: Option<&AgentId>,
        alive: &dyn Fn(&AgentId) -> bool,
        now: u64,
    ) -> Option<Lease> {
        if self.leases_empty() {
            return None;
        }
        let t = self.inner.leases.read().expect("lease lock");
        t.exclusive_holder(issue, path, asking, alive, now).cloned()
    }

    /// Reads the issue's leases, lets `change` edit the live ones, and writes them back
    /// only if nobody wrote in between (compare-and-set on the key's revision).
    async fn modify_leases<T>(
        &self,
        issue: &IssueId,
        now: u64,
        change: impl Fn(&mut Vec<Lease>) -> Result<T, LeaseError>,
    ) -> Result<T, Error> {
        let h = self.handles()?;
        let key = token(issue.as_str());
        for _ in 0..CAS_RETRIES {
            let entry = h
                .leases
                .entry(&key)
                .await
                .map_err(|e| unavailable("leases", e))?;
            let (mut leases, rev) = match entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    serde_json::from_slice::<Vec<Lease>>(&e.value).unwrap_or_default(),
                    Some(e.revision),
                ),
                Some(e) => (Vec::new(), Some(e.revision)),
                None => (Vec::new(), None),
            };
            leases.retain(|l| l.expires_at_ms > now);
            let before = leases.clone();
            let out = change(&mut leases)?;
            if leases == before {
                self.mirror_leases(issue, leases);
                return Ok(out);
            }
            let value = serde_json::to_vec(&leases).expect("leases serialize");
            match cas_write(&h.leases, &key, value, rev).await {
                Ok(_) => {
                    self.mirror_leases(issue, leases);
                    return Ok(out);
                }
                Err(Cas::Conflict) => continue,
                Err(Cas::Failed(e)) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "leases of issue {issue}: {CAS_RETRIES} concurrent changes in a row; retry"
        )))
    }

    pub async fn reserve(
        &self,
        issue: &IssueId,
        req: &ReserveRequest,
        agent_type: Option<AgentType>,
        now: u64,
    ) -> Result<Lease, Error> {
        let lease = leases::new_lease(issue, req, agent_type, now)?;
        self.modify_leases(issue, now, |live| {
            let conflicts: Vec<Lease> = live
                .iter()
                .filter(|l| l.agent_id != req.agent && leases_conflict(req.mode, &lease.paths, l))
                .cloned()
                .collect();
            if !conflicts.is_empty() {
                return Err(LeaseError::Conflict(conflicts));
            }
            live.push(lease.clone());
            Ok(lease.clone())
        })
        .await
    }

    pub async fn renew(
        &self,
        issue: &IssueId,
        lease_id: &str,
        agent: &AgentId,
        ttl_secs: Option<u64>,
        now: u64,
    ) -> Result<Lease, Error> {
        let ttl = leases::ttl(ttl_secs)?;
        self.modify_leases(issue, now, |live| {
            let Some(lease) = live.iter_mut().find(|l| l.lease_id == lease_id) else {
                return Err(LeaseError::NotFound(lease_id.to_string()));
            };
            if lease.agent_id != *agent {
                return Err(LeaseError::NotHolder {
                    lease_id: lease_id.to_string(),
                    holder: lease.agent_id.clone(),
                    asked: agent.clone(),
                    what: "renew",
                });
            }
            lease.expires_at_ms = now + ttl.as_millis() as u64;
            lease.expires_at = leases::rfc3339(lease.expires_at_ms);
            Ok(lease.clone())
        })
        .await
    }

    pub async fn release(
        &self,
        issue: &IssueId,
        lease_id: &str,
        agent: Option<&AgentId>,
        now: u64,
    ) -> Result<Lease, Error> {
        self.modify_leases(issue, now, |live| {
            let Some(i) = live.iter().position(|l| l.lease_id == lease_id) else {
                return Err(LeaseError::NotFound(lease_id.to_string()));
            };
            if let Some(a) = agent
                && live[i].agent_id != *a
            {
                return Err(LeaseError::NotHolder {
                    lease_id: lease_id.to_string(),
                    holder: live[i].agent_id.clone(),
                    asked: a.clone(),
                    what: "release",
                });
            }
            Ok(live.remove(i))
        })
        .await
    }

    pub async fn release_agent(
        &self,
        issue: &IssueId,
        agent: &AgentId,
    ) -> Result<Vec<String>, Error> {
        self.modify_leases(issue, leases::now_ms(), |live| {
            let mut gone = Vec::new();
            live.retain(|l| {
                if l.agent_id == *agent {
                    gone.push(l.lease_id.clone());
                    false
                } else {
                    true
                }
            });
            Ok(gone)
        })
        .await
    }

    // --- inbox --------------------------------------------------------------------------

    /// Where an agent's first delivery starts when it has no cursor: after the last event
    /// older than its registration (from memory), else at `head`.
    fn first_cursor(&self, registered_at: Option<&str>, head: u64) -> u64 {
        let Some(at) = registered_at else {
            return head;
        };
        let t = self.inner.tail.read().expect("tail lock");
        let older = t.events.partition_point(|e| {
            serde_json::from_str::<Event>(e.json.get()).is_ok_and(|ev| ev.timestamp.as_str() < at)
        });
        match older {
            0 => t.start,
            n => t.events[n - 1].seq,
        }
        .min(head)
    }

    pub async fn deliver(
        &self,
        to: InboxRequest,
        head: u64,
        limits: Limits,
    ) -> Result<Delivery, Error> {
        let limits = limits.clamp();
        let h = self.handles()?;
        let key = inbox_key(&to.issue, &to.agent);
        let known = || {
            let k = self.inner.inbox_known.lock().expect("inbox cache");
            k.get(&key).copied()
        };
        if let Some(cursor) = known().filter(|&c| c >= head) {
            return Ok(Delivery {
                events: Vec::new(),
                more: 0,
                cursor,
            });
        }
        let addressed = |e: &JournalEvent| {
            (e.topic == to.issue.as_str()
                || e.topic == to.agent.as_str()
                || to
                    .agent_type
                    .as_ref()
                    .is_some_and(|t| e.topic == t.as_str()))
                && !LIFECYCLE.contains(&e.event_type.as_str())
        };
        for _ in 0..CAS_RETRIES {
            let entry = h
                .inbox
                .entry(&key)
                .await
                .map_err(|e| unavailable("inbox cursor", e))?;
            let written = entry
                .as_ref()
                .is_some_and(|e| e.operation == kv::Operation::Put);
            let (cursor, rev) = match entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(head),
                    Some(e.revision),
                ),
                Some(e) => (
                    self.first_cursor(to.registered_at.as_deref(), head),
                    Some(e.revision),
                ),
                None => (self.first_cursor(to.registered_at.as_deref(), head), None),
            };
            let stored = cursor;
            // A cursor moved in memory only (an empty delivery, below) is as good.
            let cursor = cursor.max(known().unwrap_or(0)).min(head).max(self.floor());
            let mut events = Vec::new();
            let (mut last, mut bytes, mut more) = (cursor, 0, 0u64);
            let mut since = cursor;
            'scan: while since < head {
                let (batch, next) = self
                    .read(since, &EventFilter::default(), MAX_EVENTS_PER_ANSWER)
                    .await?;
                for e in &batch {
                    if e.seq > head {
                        break 'scan;
                    }
                    let Ok(ev) = serde_json::from_str::<Event>(e.json.get()) else {
                        continue;
                    };
                    if !addressed(e) || ev.publisher == to.agent.as_str() {
                        continue;
                    }
                    let len = e.json.get().len();
                    if more > 0
                        || events.len() == limits.max_events
                        || (!events.is_empty() && bytes + len > limits.max_bytes)
                    {
                        more += 1;
                        continue;
                    }
                    bytes += len;
                    events.push(ev);
                    last = e.seq;
                }
                if batch.is_empty() || next <= since {
                    break;
                }
                since = next;
            }
            let next = if more > 0 { last } else { head };
            let remember = |c| {
                let mut k = self.inner.inbox_known.lock().expect("inbox cache");
                let e = k.entry(key.clone()).or_insert(c);
                *e = (*e).max(c);
            };
            if events.is_empty()
                && more == 0
                && written
                && head.saturating_sub(stored) <= UNWRITTEN_SPAN
            {
                // Nothing addressed to it: no KV write on the hook path (see the SQLite
                // inbox); the cursor moves in memory and is written with the next mail.
                remember(next);
                return Ok(Delivery {
                    events,
                    more,
                    cursor: next,
                });
            }
            match cas_write(&h.inbox, &key, next.to_string().into_bytes(), rev).await {
                Ok(_) => {
                    remember(next);
                    return Ok(Delivery {
                        events,
                        more,
                        cursor: next,
                    });
                }
                Err(Cas::Conflict) => continue,
                Err(Cas::Failed(e)) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "inbox of {}: {CAS_RETRIES} concurrent deliveries in a row; retry",
            to.agent
        )))
    }

    // --- lifecycle ----------------------------------------------------------------------

    // --- cost records -------------------------------------------------------------------

    pub async fn cost_insert(&self, records: Vec<CostRecord>) -> Result<CostRecordsStored, Error> {
        let h = self.handles()?;
        let writes: Vec<(String, Vec<u8>)> = records
            .iter()
            .map(|r| {
                let value = serde_json::to_vec(r).expect("cost records serialize");
                (cost_record_key(&r.key), value)
            })
            .collect();
        let bucket = h.cost.clone();
        // In order, so that each answer pairs with its record.
        let created: Vec<Result<bool, Error>> = futures_util::stream::iter(writes)
            .map(move |(key, value)| {
                let bucket = bucket.clone();
                async move {
                    match bucket.create(&key, value.into()).await {
                        Ok(_) => Ok(true),
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                        Err(e) => Err(unavailable("storing a cost record", e)),
                    }
                }
            })
            .buffered(COST_WRITES_IN_FLIGHT)
            .collect()
            .await;
        let mut out = CostRecordsStored::default();
        let mut new_sessions = Vec::new();
        let mut failed = None;
        {
            let mut m = self.inner.cost.write().expect("cost lock");
            for (r, created) in records.into_iter().zip(created) {
                match created {
                    // Mirrored now: a report right after the answer counts it.
                    Ok(true) => {
                        out.stored += 1;
                        if !m.sessions.contains_key(&r.session_id) {
                            new_sessions.push(r.session_id.clone());
                        }
                        m.add(r);
                    }
                    Ok(false) => out.duplicates += 1,
                    Err(e) => failed = Some(e),
                }
            }
        }
        if let Some(e) = failed {
            // What was stored stays; the retry counts it as duplicates.
            return Err(e);
        }
        new_sessions.sort_unstable();
        new_sessions.dedup();
        if !new_sessions.is_empty() {
            self.remember_sessions(h, &new_sessions).await?;
        }
        Ok(out)
    }

    /// The issues of the newest `session_started` events, by session (the newest wins).
    async fn started_sessions(&self) -> Result<HashMap<String, String>, Error> {
        let filter = EventFilter {
            event_type: Some(SESSION_STARTED.to_string()),
            topic: None,
        };
        let started = self
            .newest(u64::MAX, &filter, COST_SESSIONS_SCANNED)
            .await?;
        let mut out = HashMap::new();
        // Oldest first, so that a resumed session's newest issue wins.
        for (_, json) in started.iter().rev() {
            let Ok(e) = serde_json::from_str::<Event>(json.get()) else {
                continue;
            };
            if let (Some(s), Some(i)) = (
                e.data.get("session_id").and_then(|v| v.as_str()),
                e.data.get("issue_id").and_then(|v| v.as_str()),
            ) {
                out.insert(s.to_string(), i.to_string());
            }
        }
        Ok(out)
    }

    /// Keeps the issue of each of `sessions` in `ns_cost`, so the join outlives the
    /// retention of its `session_started` event.
    async fn remember_sessions(&self, h: &Handles, sessions: &[String]) -> Result<(), Error> {
        let started = self.started_sessions().await?;
        for s in sessions {
            let Some(issue) = started.get(s) else {
                continue;
            };
            h.cost
                .put(cost_session_key(s), issue.clone().into_bytes().into())
                .await
                .map_err(|e| unavailable("storing a session's issue", e))?;
            let mut m = self.inner.cost.write().expect("cost lock");
            m.sessions.insert(s.clone(), issue.clone());
        }
        Ok(())
    }

    pub async fn cost_groups(&self, since_ms: Option<u64>) -> Result<Vec<Group>, Error> {
        self.handles()?;
        let since = since_ms.unwrap_or(0);
        let m = self.inner.cost.read().expect("cost lock");
        let mut sums: HashMap<(&str, Option<&str>, &str), CostSums> = HashMap::new();
        for r in m.records.values().filter(|r| r.timestamp_ms >= since) {
            sums.entry((&r.session_id, r.agent_id.as_deref(), &r.model))
                .or_default()
                .add(r);
        }
        Ok(sums
            .into_iter()
            .map(|((session, agent, model), sums)| Group {
                session_id: session.to_string(),
                agent_id: agent.map(str::to_string),
                model: model.to_string(),
                sums,
            })
            .collect())
    }

    pub async fn cost_session_issues(&self) -> Result<HashMap<String, String>, Error> {
        let started = self.started_sessions().await?;
        let mut out = self.inner.cost.read().expect("cost lock").sessions.clone();
        out.extend(started);
        Ok(out)
    }

    pub fn results_dir(&self) -> Option<&Path> {
        None
    }
    pub fn measure(&self) {}
    pub fn event_bus_healthy(&self) -> bool {
        self.handles().is_ok()
    }
    /// Why the store is unavailable, if it is.
    pub fn unavailable_reason(&self) -> Option<String> {
        self.handles().err().map(|e| e.to_string())
    }

    /// Stops the background tasks (every answered write is already stored in JetStream).
    pub fn close(&self) {
        self.inner.stop.send_replace(true);
        for t in self.inner.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
    }
}

/// Holds one agent's result submissions in turn; forgets the lock when unused.
struct TurnGuard {
    store: NatsStore,
    key: (IssueId, AgentId),
    lock: Turn,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut turns = self.store.inner.turns.lock().expect("turns lock");
        // Ours and the map's: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            turns.remove(&self.key);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Bucket {
    Agents,
    Leases,
    Results,
    Cost,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Bucket::Agents => "agents",
            Bucket::Leases => "leases",
            Bucket::Results => "results",
            Bucket::Cost => "cost",
        }
    }
}

fn result_key(r: &StoredResult) -> String {
    format!(
        "{}.{}.{}",
        token(r.issue_id.as_str()),
        token(r.agent_type.as_str()),
        token(r.agent_id.as_str())
    )
}

fn inbox_key(issue: &IssueId, agent: &AgentId) -> String {
    format!("{}.{}", token(issue.as_str()), token(agent.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_split_a_subject() {
        for s in ["issue-7", "a_b", "x.y", "b.c d", "*", ">", "=41", "ü", ""] {
            let t = token(s);
            assert!(
                !t.is_empty() && !t.contains(['.', '*', '>', ' ']),
                "{s:?} -> {t:?}"
            );
            assert_eq!(untoken(&t).as_deref(), Some(s), "{t}");
        }
        assert_eq!(token("issue-7"), "issue-7");
        // Plain tokens never start with `=`, so an encoded one is never mistaken for one.
        assert_ne!(token("=41"), "=41");
    }

    #[test]
    fn names_are_prefixed_by_the_namespace() {
        let n = Names {
            ns: "team-a".into(),
        };
        assert_eq!(n.stream(), "team-a_events");
        assert_eq!(n.bucket("leases"), "team-a_leases");
        assert_eq!(n.all_events(), "team-a.events.>");
        assert_eq!(
            n.subject("build", "issue.1"),
            "team-a.events.build.=69737375652e31"
        );
        let f = |t: Option<&str>, p: Option<&str>| EventFilter {
            event_type: t.map(String::from),
            topic: p.map(String::from),
        };
        assert_eq!(n.filter_subject(&f(None, None)), "team-a.events.>");
        assert_eq!(n.filter_subject(&f(Some("e"), None)), "team-a.events.e.*");
        assert_eq!(n.filter_subject(&f(None, Some("t"))), "team-a.events.*.t");
        assert_eq!(
            n.filter_subject(&f(Some("e"), Some("t"))),
            "team-a.events.e.t"
        );
    }
}
