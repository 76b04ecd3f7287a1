//! `cco store migrate`: copies this machine's SQLite journal — events in seq order, results,
//! the agent registry, live leases — into the configured store (a team's NATS namespace).
//! Marker events record how far a copy got, so running it again copies nothing twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::api::inert;
use crate::api::leases::ReserveRequest;
use crate::api::sidecar::{AgentStatusUpdate, Event, StoredResult};
use crate::api::{AgentId, AgentType, EventType, IssueId};
use crate::config::{StoreBackend as Backend, StoreConfig};
use crate::paths::Installation;
use crate::sidecar::journal::{EventFilter, NewEvent, Retention};
use crate::sidecar::store::{AGENT_COMPLETED, NatsStore, PutResult, SqliteStore, Store};

/// The marker event a copy leaves in the target after each batch and at the end.
pub const MARKER_TYPE: &str = "store_migrated";
/// The marker's topic (waiters on other topics never see it).
const MARKER_TOPIC: &str = "cco-store-migrate";
/// The source's retention while it is copied: the largest the config allows.
const KEEP_EVENTS: u64 = 100_000_000;
const KEEP_AGE: std::time::Duration = std::time::Duration::from_secs(3650 * 24 * 3600);
/// How long the command waits for a NATS target to answer.
const TARGET_READY: std::time::Duration = std::time::Duration::from_secs(10);
/// Source events copied between two markers: what an interrupted copy checks again.
const BATCH: usize = 500;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy this machine's SQLite journal (events in seq order, results, the agent registry,
    /// live leases) into the store the config names (`[store]`, e.g. a team's NATS
    /// namespace). Stop the sidecar first (`cco daemon stop`). Running it again copies
    /// nothing twice; migrated events get new sequence numbers.
    Migrate(MigrateArgs),
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The data directory to copy from (default: this installation's `data_dir`).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Copy into a target that already holds other data (events, agents or leases).
    #[arg(long)]
    pub force: bool,
}

/// Cost records sent to the target in one insert.
const COST_CHUNK: usize = 1000;

/// What one run copied, and what it found already there.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    pub results: u64,
    pub agents: u64,
    pub leases: u64,
    /// Cost records (Claude Code's api_request records) new to the target.
    pub cost_records: u64,
    /// Found in the target already (an earlier run), not copied again.
    pub skipped: u64,
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let StoreCommand::Migrate(args) = args.command;
    let inst = Installation::from_process(config)?;
    let from = args
        .from
        .clone()
        .unwrap_or_else(|| inst.paths.data_dir.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let counts = runtime.block_on(migrate(&inst, &from, args.force))?;
    let store = &inst.config.store;
    let target = match store.backend {
        Backend::Nats => format!("NATS namespace {:?}", store.namespace),
        Backend::Sqlite => format!("{}", inst.paths.orchestration_dir().display()),
    };
    println!(
        "{}",
        inert::line(&format!(
            "migrated {} events, {} results, {} agents, {} leases, {} cost records from {} into {target} ({} already there)",
            counts.events,
            counts.results,
            counts.agents,
            counts.leases,
            counts.cost_records,
            from.display(),
            counts.skipped
        ))
    );
    Ok(ExitCode::SUCCESS)
}

/// Where the copy stands in the target: the source seq it got through, and the target seq of
/// that marker (events after it may be an interrupted batch's).
struct Resume {
    through: u64,
    marker_seq: u64,
}

/// Copies the journal under `from` into the configured store; see the module doc.
pub async fn migrate(inst: &Installation, from: &Path, force: bool) -> anyhow::Result<Counts> {
    let orchestration = from.join("orchestration");
    let state_db = orchestration.join("state.db");
    if !state_db.is_file() {
        bail!(
            "no journal at {} — pass the data dir that holds it: `cco store migrate --from DIR`",
            state_db.display()
        );
    }
    let source_id = source_id(&orchestration);
    if inst.config.store.backend == Backend::Sqlite
        && std::fs::canonicalize(inst.paths.orchestration_dir()).ok()
            == std::fs::canonicalize(&orchestration).ok()
    {
        bail!(
            "{} is already this installation's store — set `[store] backend = \"nats\"` (or CCO_STORE_BACKEND=nats) and run `cco store migrate` again",
            orchestration.display()
        );
    }
    // No sidecar may write the source while it is read.
    let _lock = crate::sidecar::lock_data_dir(&orchestration).with_context(|| {
        "the sidecar is running on that data — stop it first: `cco daemon stop`".to_string()
    })?;
    // Retention is not this command's business: keep everything while copying.
    let retention = Retention {
        max_events: KEEP_EVENTS,
        max_age: KEEP_AGE,
    };
    let src = SqliteStore::open(&state_db, orchestration.join("results"), retention)?;
    let (dst, _target_lock) = open_target(inst, retention).await?;

    let resume = find_resume(&dst, &source_id).await?;
    if resume.is_none() && !force && !is_empty(&dst) {
        bail!(
            "the target already holds data ({} events, {} agents) that did not come from {} — to add this journal to it anyway: `cco store migrate --force`",
            dst.head(),
            dst.agents().len(),
            orchestration.display()
        );
    }
    let mut counts = Counts::default();
    // Events an interrupted run stored after its last marker: not copied again.
    let mut in_doubt = match &resume {
        Some(r) => fingerprints_after(&dst, r.marker_seq).await?,
        None => HashMap::new(),
    };
    let mut since = resume.as_ref().map_or(0, |r| r.through);
    let all = EventFilter::default();
    loop {
        let (batch, next) = src.read(since, &all, BATCH).await?;
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            copy_event(&src, &dst, &e.event(), &mut in_doubt, &mut counts).await?;
        }
        since = next;
        mark(&dst, &source_id, since, &counts).await?;
    }
    copy_unannounced_results(&src, &dst, &mut counts).await?;
    for agent in src.agents() {
        if dst.agent(&agent.agent_id).is_some_and(|a| {
            a.status == agent.status
                && a.agent_type == agent.agent_type
                && a.issue_id == agent.issue_id
        }) {
            counts.skipped += 1;
            continue;
        }
        if let Store::Nats(nats) = &dst {
            // As it is, with its own start and update times.
            nats.import_agent(&agent).await?;
            counts.agents += 1;
            continue;
        }
        let update = AgentStatusUpdate {
            status: agent.status,
            agent_type: agent.agent_type,
            issue_id: agent.issue_id,
            message: agent.message,
        };
        dst.set_agent(agent.agent_id, update).await?;
        counts.agents += 1;
    }
    let now = crate::sidecar::leases::now_ms();
    for lease in src.leases(None, now) {
        let there = dst.leases(Some(&lease.issue_id), now).into_iter().any(|l| {
            l.agent_id == lease.agent_id && l.paths == lease.paths && l.mode == lease.mode
        });
        if there {
            counts.skipped += 1;
            continue;
        }
        let req = ReserveRequest {
            agent: lease.agent_id.clone(),
            paths: lease.paths.clone(),
            mode: lease.mode,
            ttl_secs: Some(
                lease
                    .expires_at_ms
                    .saturating_sub(now)
                    .div_ceil(1000)
                    .max(1),
            ),
            reason: lease.reason.clone(),
        };
        dst.reserve(&lease.issue_id, &req, lease.agent_type.clone(), now)
            .await
            .with_context(|| {
                format!(
                    "lease {} of {} on {} conflicts with one in the target — release one (`cco leases release ID`) and run `cco store migrate` again",
                    lease.lease_id, lease.agent_id, lease.issue_id
                )
            })?;
        counts.leases += 1;
    }
    // Cost records are keyed (session, event sequence): inserting one the target has is a
    // no-op counted as a duplicate, so a re-run copies none twice.
    let records = crate::sidecar::cost::CostStore::open(&state_db)?.records(None)?;
    for chunk in records.chunks(COST_CHUNK) {
        let stored = dst.cost_insert(chunk.to_vec()).await?;
        counts.cost_records += stored.stored;
        counts.skipped += stored.duplicates;
    }
    // A run that found everything there already leaves no marker: it changed nothing.
    if counts
        != (Counts {
            skipped: counts.skipped,
            ..Counts::default()
        })
    {
        mark(&dst, &source_id, src.head(), &counts).await?;
    }
    src.close();
    dst.close();
    Ok(counts)
}

/// The configured store, as the sidecar would open it (its data dir locked on SQLite: no
/// sidecar may write it meanwhile).
async fn open_target(
    inst: &Installation,
    retention: Retention,
) -> anyhow::Result<(Store, Option<crate::pidlock::PidLock>)> {
    match inst.config.store.backend {
        Backend::Sqlite => {
            let dir = inst.paths.orchestration_dir();
            let lock = crate::sidecar::lock_data_dir(&dir).with_context(|| {
                "the target's sidecar is running — stop it first: `cco daemon stop`".to_string()
            })?;
            let store =
                SqliteStore::open(&inst.paths.state_db(), inst.paths.results_dir(), retention)?;
            Ok((Store::Sqlite(store), Some(lock)))
        }
        Backend::Nats => {
            let store = NatsStore::open(&inst.config.store, retention);
            if !store.ready(TARGET_READY).await {
                let reason = store.unavailable_reason().unwrap_or_default();
                bail!(
                    "cannot use NATS at {}: {reason} — `cco doctor` says what is wrong",
                    inst.config.store.nats_servers.join(", ")
                );
            }
            Ok((Store::Nats(store), None))
        }
    }
}

/// A name for the source that stays the same across runs: host and data directory.
fn source_id(orchestration: &Path) -> String {
    let dir = std::fs::canonicalize(orchestration).unwrap_or_else(|_| orchestration.into());
    let mut host = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) };
    let host = if rc == 0 {
        let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
        String::from_utf8_lossy(&host[..end]).into_owned()
    } else {
        "localhost".into()
    };
    format!("{host}:{}", dir.display())
}

fn is_empty(dst: &Store) -> bool {
    dst.head() == 0 && dst.agents().is_empty() && dst.leases_empty()
}

/// The newest marker this source left in the target, if any.
async fn find_resume(dst: &Store, source: &str) -> anyhow::Result<Option<Resume>> {
    let filter = EventFilter {
        event_type: Some(MARKER_TYPE.into()),
        topic: Some(MARKER_TOPIC.into()),
    };
    let mut since = dst.floor();
    let mut found = None;
    loop {
        let (batch, next) = dst.read(since, &filter, BATCH).await?;
        if batch.is_empty() {
            return Ok(found);
        }
        for e in &batch {
            let ev = e.event();
            if ev.data["source"] == source
                && let Some(through) = ev.data["through_seq"].as_u64()
            {
                found = Some(Resume {
                    through,
                    marker_seq: ev.seq,
                });
            }
        }
        since = next;
    }
}

/// What identifies a copied event (its target seq, id and time are new).
fn fingerprint(e: &Event) -> String {
    json!([e.event_type, e.publisher, e.topic, e.data, e.correlation_id]).to_string()
}

/// How many of each event the target holds after `seq`.
async fn fingerprints_after(dst: &Store, seq: u64) -> anyhow::Result<HashMap<String, u32>> {
    let mut out = HashMap::new();
    let mut since = seq;
    loop {
        let (batch, next) = dst.read(since, &EventFilter::default(), BATCH).await?;
        if batch.is_empty() {
            return Ok(out);
        }
        for e in &batch {
            *out.entry(fingerprint(&e.event())).or_insert(0) += 1;
        }
        since = next;
    }
}

/// One source event: an `agent_completed` becomes its result stored in the target (which
/// announces it there, once); anything else is published as it was.
async fn copy_event(
    src: &SqliteStore,
    dst: &Store,
    e: &Event,
    in_doubt: &mut HashMap<String, u32>,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    if e.event_type == AGENT_COMPLETED
        && let Some(result) = announced_result(src, &e.data).await?
    {
        match dst.put_result(result).await? {
            PutResult::Stored { .. } => counts.results += 1,
            PutResult::Unchanged { .. } => counts.skipped += 1,
        }
        return Ok(());
    }
    if let Some(n) = in_doubt.get_mut(&fingerprint(e))
        && *n > 0
    {
        *n -= 1;
        counts.skipped += 1;
        return Ok(());
    }
    // NATS keeps the event's id and timestamp; SQLite gives it new ones.
    if let Store::Nats(nats) = dst {
        nats.import_event(e.clone(), None).await?;
        counts.events += 1;
        return Ok(());
    }
    dst.publish(NewEvent {
        event_type: EventType::parse(&e.event_type)
            .map_err(|err| anyhow::anyhow!("event {}: {err}", e.seq))?,
        publisher: e.publisher.clone(),
        topic: e.topic.clone(),
        data: e.data.clone(),
        correlation_id: e.correlation_id.clone(),
    })
    .await?;
    counts.events += 1;
    Ok(())
}

/// The result an `agent_completed` event announced, if the source still has it.
async fn announced_result(src: &SqliteStore, data: &Value) -> anyhow::Result<Option<StoredResult>> {
    let field = |k: &str| data[k].as_str().unwrap_or_default().to_string();
    let (Ok(issue), Ok(agent_type), Ok(agent)) = (
        IssueId::parse(&field("issue_id")),
        AgentType::parse(&field("agent_type")),
        AgentId::parse(&field("agent_id")),
    ) else {
        return Ok(None);
    };
    let Some(text) = src.result_of(&issue, &agent_type, &agent).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_str(&text).ok())
}

/// Results whose `agent_completed` the source no longer has (retention): stored in the
/// target too; `put_result` makes a repeat `Unchanged`.
async fn copy_unannounced_results(
    src: &SqliteStore,
    dst: &Store,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    let Some(dir) = src.results_dir() else {
        return Ok(());
    };
    let mut issues: Vec<IssueId> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| IssueId::parse(e.file_name().to_str()?).ok())
                .collect()
        })
        .unwrap_or_default();
    issues.sort();
    for issue in issues {
        for text in src.results(&issue).await? {
            let Ok(result) = serde_json::from_str::<StoredResult>(&text) else {
                continue;
            };
            match dst.put_result(result).await? {
                PutResult::Stored { .. } => counts.results += 1,
                PutResult::Unchanged { .. } => {}
            }
        }
    }
    Ok(())
}

/// Records in the target that the source is copied through `through` (a source seq).
async fn mark(dst: &Store, source: &str, through: u64, counts: &Counts) -> anyhow::Result<()> {
    dst.publish(NewEvent {
        event_type: EventType::parse(MARKER_TYPE).expect("valid event type"),
        publisher: "cco-store-migrate".into(),
        topic: MARKER_TOPIC.into(),
        data: json!({
            "source": source,
            "through_seq": through,
            "events": counts.events,
            "results": counts.results,
        }),
        correlation_id: None,
    })
    .await?;
    Ok(())
}

// --- `cco doctor`: the shared store -----------------------------------------------------

/// How long doctor waits for one NATS server or one JetStream answer.
const DOCTOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// The KV buckets the sidecar keeps in a namespace (each is a stream `KV_<ns>_<name>`).
const BUCKETS: [&str; 5] = ["results", "agents", "leases", "inbox", "cost"];

use crate::cli::check::{Check, Level};

fn check(level: Level, what: String, fix: Option<String>) -> Check {
    Check { level, what, fix }
}

/// `cco doctor`'s lines for `[store]`: nothing for SQLite (the other checks cover it); for
/// NATS each server's reachability, JetStream, and the stream and buckets with the
/// replicas and subjects this config expects — each failure with its fix.
pub fn doctor_checks(store: &StoreConfig, config_file: &Path) -> Vec<Check> {
    if store.backend != Backend::Nats {
        return Vec::new();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return vec![check(
                Level::Fail,
                format!("cannot check the NATS store: {e}"),
                Some("run `cco doctor` again".into()),
            )];
        }
    };
    runtime.block_on(nats_checks(store, config_file))
}

/// Connection options from `[store]`: credentials, nkey, token and TLS as the sidecar uses them.
async fn connect_options(store: &StoreConfig) -> anyhow::Result<async_nats::ConnectOptions> {
    let mut opts = async_nats::ConnectOptions::new()
        .connection_timeout(DOCTOR_TIMEOUT)
        .request_timeout(Some(DOCTOR_TIMEOUT))
        .name("cco-doctor");
    if let Some(creds) = &store.credentials {
        opts = opts.credentials_file(creds).await.with_context(|| {
            format!(
                "cannot read store.credentials {} — fix the path or its permissions (chmod 600)",
                creds.display()
            )
        })?;
    }
    let read_secret = |key: &str, path: &Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .with_context(|| {
                format!(
                    "cannot read {key} {} — fix the path or its permissions (chmod 600)",
                    path.display()
                )
            })
    };
    if let Some(seed) = &store.nkey_seed_file {
        opts = opts.nkey(read_secret("store.nkey_seed_file", seed)?);
    }
    if let Some(token) = &store.token_file {
        opts = opts.token(read_secret("store.token_file", token)?);
    }
    if let Some(ca) = &store.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    if store.tls() {
        opts = opts.require_tls(true);
    }
    Ok(opts)
}

/// The fix for a connection that failed the way `e` says.
fn connect_fix(e: &async_nats::ConnectError, url: &str, config_file: &Path) -> String {
    use async_nats::ConnectErrorKind as K;
    match e.kind() {
        K::AuthorizationViolation | K::Authentication => format!(
            "the server refused these credentials: check store.credentials / nkey_seed_file / token_file in {} against the team's account",
            config_file.display()
        ),
        K::Tls => format!(
            "check store.tls_ca in {} (the CA that signed {url}'s certificate) and the URL's scheme (tls://)",
            config_file.display()
        ),
        _ => format!(
            "start that server, or fix store.nats_servers in {} (or CCO_NATS_SERVERS)",
            config_file.display()
        ),
    }
}

async fn nats_checks(store: &StoreConfig, config_file: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    if let Err(e) = connect_options(store).await {
        let message = format!("{e:#}");
        let (what, fix) = message
            .split_once(" — ")
            .map_or((message.clone(), None), |(w, f)| {
                (w.to_string(), Some(f.to_string()))
            });
        out.push(check(Level::Fail, what, fix));
        return out;
    }
    let mut js_client = None;
    for url in &store.nats_servers {
        // Options are rebuilt per server: connecting consumes them.
        let Ok(opts) = connect_options(store).await else {
            continue;
        };
        let connected = tokio::time::timeout(DOCTOR_TIMEOUT, opts.connect(url.as_str())).await;
        match connected {
            Ok(Ok(client)) => {
                let info = client.server_info();
                out.push(check(
                    Level::Ok,
                    format!(
                        "NATS {url} answers (nats-server {}{})",
                        info.version,
                        info.cluster
                            .as_deref()
                            .map(|c| format!(", cluster {c}"))
                            .unwrap_or_default()
                    ),
                    None,
                ));
                if !info.jetstream {
                    out.push(check(
                        Level::Fail,
                        format!("JetStream is not enabled on {url}"),
                        Some("enable it in that server's config (`jetstream { store_dir: … }`, or `nats-server -js`) and restart it".into()),
                    ));
                } else if js_client.is_none() {
                    js_client = Some(client);
                }
            }
            Ok(Err(e)) => out.push(check(
                Level::Fail,
                format!("NATS {url} cannot be used: {e}"),
                Some(connect_fix(&e, url, config_file)),
            )),
            Err(_) => out.push(check(
                Level::Fail,
                format!(
                    "NATS {url} did not answer in {} s",
                    DOCTOR_TIMEOUT.as_secs()
                ),
                Some(format!(
                    "start that server, or fix store.nats_servers in {} (or CCO_NATS_SERVERS)",
                    config_file.display()
                )),
            )),
        }
    }
    let Some(client) = js_client else {
        return out;
    };
    let js = async_nats::jetstream::new(client);
    if let Err(e) = js.query_account().await {
        out.push(check(
            Level::Fail,
            format!("JetStream is not available to this account: {e}"),
            Some("give the team's account `jetstream: enabled` in the server config and reload it (`nats-server --signal reload`)".into()),
        ));
        return out;
    }
    let ns = &store.namespace;
    let events = format!("{ns}_events");
    out.push(
        stream_check(
            &js,
            &events,
            &events,
            Some(format!("{ns}.events.>")),
            store,
            config_file,
        )
        .await,
    );
    for bucket in BUCKETS {
        let name = format!("{ns}_{bucket}");
        out.push(stream_check(&js, &format!("KV_{name}"), &name, None, store, config_file).await);
    }
    out
}

/// The stream behind `shown` (a stream, or a bucket's `KV_` stream): present, with the
/// expected replicas and (for the events stream) subjects.
async fn stream_check(
    js: &async_nats::jetstream::Context,
    stream: &str,
    shown: &str,
    subject: Option<String>,
    store: &StoreConfig,
    config_file: &Path,
) -> Check {
    let kind = if subject.is_some() {
        "stream"
    } else {
        "bucket"
    };
    let info = match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.cloned().map_err(|e| e.to_string()),
        Err(e) => {
            let missing = matches!(
                e.kind(),
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
            );
            if missing {
                return check(
                    Level::Warn,
                    format!("{kind} {shown} does not exist yet"),
                    Some("the sidecar creates it on start: `cco daemon restart`".into()),
                );
            }
            Err(e.to_string())
        }
    };
    let info = match info {
        Ok(i) => i,
        Err(e) => {
            return check(
                Level::Fail,
                format!("cannot read {kind} {shown}: {e}"),
                Some("check that the cluster has a JetStream leader (`nats server report jetstream`), then run `cco doctor` again".into()),
            );
        }
    };
    let replicas = info.config.num_replicas;
    if replicas != usize::from(store.replicas) {
        return check(
            Level::Fail,
            format!(
                "{kind} {shown} has {replicas} replica(s), the config expects {}",
                store.replicas
            ),
            Some(format!(
                "`nats stream edit {stream} --replicas {}` (the nats CLI), or set store.replicas = {replicas} in {}",
                store.replicas,
                config_file.display()
            )),
        );
    }
    if let Some(subject) = subject
        && info.config.subjects != [subject.clone()]
    {
        return check(
            Level::Fail,
            format!(
                "{kind} {shown} has subjects {:?}, expected [\"{subject}\"]",
                info.config.subjects
            ),
            Some(format!(
                "another program uses the namespace {:?}: pick another store.namespace in {}",
                store.namespace,
                config_file.display()
            )),
        );
    }
    check(
        Level::Ok,
        format!("{kind} {shown} is there ({replicas} replica(s))"),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(k: u64) -> NewEvent {
        NewEvent {
            event_type: EventType::parse("plan").unwrap(),
            publisher: "agent".into(),
            topic: "issue-1".into(),
            data: json!({"k": k}),
            correlation_id: None,
        }
    }

    fn retention() -> Retention {
        Retention {
            max_events: KEEP_EVENTS,
            max_age: KEEP_AGE,
        }
    }

    /// A run interrupted after copying an event but before its batch's marker: the next run
    /// finds that event in the target and does not copy it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_copy_is_resumed_without_duplicates() {
        let tmp = tempfile::tempdir().unwrap();
        let src_dir = tmp.path().join("old").join("orchestration");
        crate::paths::ensure_private_dir(&src_dir).unwrap();
        let src = SqliteStore::open(
            &src_dir.join("state.db"),
            src_dir.join("results"),
            retention(),
        )
        .unwrap();
        for k in 1..=3 {
            src.publish(event(k)).await.unwrap();
        }
        src.close();
        drop(src);

        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let env = |k: &str| match k {
            "HOME" => Some(home.display().to_string()),
            _ => None,
        };
        let inst = Installation::load(None, &env).unwrap();
        crate::paths::ensure_private_dir(&inst.paths.orchestration_dir()).unwrap();
        // What the interrupted run left: event 1 under a marker, event 2 after it.
        {
            let dst = SqliteStore::open(
                &inst.paths.state_db(),
                inst.paths.results_dir(),
                retention(),
            )
            .unwrap();
            let dst = Store::Sqlite(dst);
            dst.publish(event(1)).await.unwrap();
            let copied = Counts {
                events: 1,
                ..Counts::default()
            };
            mark(&dst, &source_id(&src_dir), 1, &copied).await.unwrap();
            dst.publish(event(2)).await.unwrap();
            dst.close();
        }

        let counts = migrate(&inst, &tmp.path().join("old"), false)
            .await
            .unwrap();
        assert_eq!((counts.events, counts.skipped), (1, 1), "{counts:?}");
        let dst = SqliteStore::open(
            &inst.paths.state_db(),
            inst.paths.results_dir(),
            retention(),
        )
        .unwrap();
        let plans = EventFilter {
            event_type: Some("plan".into()),
            topic: None,
        };
        let (events, _) = dst.read(0, &plans, 100).await.unwrap();
        let ks: Vec<u64> = events
            .iter()
            .map(|e| e.event().data["k"].as_u64().unwrap())
            .collect();
        assert_eq!(ks, vec![1, 2, 3], "each source event once, in order");
        dst.close();
    }
}
