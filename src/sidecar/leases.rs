//! File leases: an agent reserves paths or globs of the project (exclusive or shared, with a
//! TTL) so that others' edits of them are refused by the PreToolUse policy. Kept in memory
//! for the hot check and in the journal's SQLite (table `leases`) so a restart keeps them.
//!
//! Overlap is decided conservatively, segment by segment (see [`patterns_overlap`]); a
//! concrete path is covered by a lease when one of its patterns matches the path or one of
//! its parent directories (see [`pattern_covers`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};

use crate::api::leases::{Lease, LeaseMode, ReserveRequest};
use crate::api::{AgentId, AgentType, IssueId};

use super::journal::JournalError;

/// A lease without `ttl_secs` lives this long.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// The longest lease (and renewal) granted.
pub const MAX_TTL: Duration = Duration::from_secs(2 * 60 * 60);
/// Most paths one lease names.
pub const MAX_PATHS: usize = 64;
/// Longest path or glob accepted.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Longest `reason`.
pub const MAX_REASON_BYTES: usize = 512;

/// Why a lease operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{0}")]
    Invalid(String),
    /// Overlapping leases of other agents; the request was not granted.
    #[error("{}", conflict_message(.0))]
    Conflict(Vec<Lease>),
    #[error("no live lease {0} on this issue; list them with `cco leases`")]
    NotFound(String),
    #[error("lease {lease_id} is held by {holder}, not {asked}; only its holder may {what} it")]
    NotHolder {
        lease_id: String,
        holder: AgentId,
        asked: AgentId,
        what: &'static str,
    },
    #[error(transparent)]
    Store(#[from] JournalError),
}

fn conflict_message(conflicts: &[Lease]) -> String {
    let held: Vec<String> = conflicts.iter().map(describe).collect();
    format!(
        "already leased: {}; call mcp__cco__wait or coordinate via mcp__cco__publish, then reserve again",
        held.join("; ")
    )
}

/// One line a model can act on: who holds what, why, until when.
pub fn describe(l: &Lease) -> String {
    let ty = l
        .agent_type
        .as_ref()
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    let why = if l.reason.is_empty() {
        String::new()
    } else {
        format!(" for \"{}\"", l.reason)
    };
    format!(
        "{} held {} by agent {}{ty}{why} until {} (lease {})",
        l.paths.join(", "),
        l.mode.as_str(),
        l.agent_id,
        l.expires_at,
        l.lease_id
    )
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// A path or glob relative to the project root, normalized: `./` and empty segments
/// dropped, `\` refused, no `..`, not absolute. `.` (or `**`) is the whole project.
pub fn normalize(pattern: &str) -> Result<String, LeaseError> {
    let bad = |why: &str| {
        Err(LeaseError::Invalid(format!(
            "path {pattern:?} {why}; name paths relative to the project root, e.g. \"src/lib.rs\" or \"src/**/*.rs\""
        )))
    };
    if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES {
        return bad(&format!("must be 1-{MAX_PATTERN_BYTES} bytes"));
    }
    if pattern.chars().any(|c| c.is_control() || c == '\\') {
        return bad("contains a control character or a backslash");
    }
    if pattern.starts_with('/') {
        return bad("is absolute");
    }
    let mut segs = Vec::new();
    for seg in pattern.split('/') {
        match seg {
            "" | "." => {}
            ".." => return bad("leaves the project (`..`)"),
            s => segs.push(s),
        }
    }
    if segs.is_empty() {
        return Ok(".".into());
    }
    if let Err(e) = globset::GlobBuilder::new(&segs.join("/"))
        .literal_separator(true)
        .build()
    {
        return bad(&format!("is not a valid glob ({})", e.kind()));
    }
    Ok(segs.join("/"))
}

fn segments(p: &str) -> Vec<&str> {
    if p == "." {
        Vec::new()
    } else {
        p.split('/').collect()
    }
}

/// Whether two normalized patterns may name a common file. Conservative: a pattern that
/// ends covers everything below it (a directory), `**` may stand for anything from there
/// on, and two segments with wildcards overlap unless their literal prefixes or suffixes
/// differ (`*.rs` vs `*.md` do not overlap; `a*` vs `*b` do).
pub fn patterns_overlap(a: &str, b: &str) -> bool {
    fn go(a: &[&str], b: &[&str]) -> bool {
        match (a.split_first(), b.split_first()) {
            (None, _) | (_, None) => true,
            (Some((x, _)), _) if x.contains("**") => true,
            (_, Some((y, _))) if y.contains("**") => true,
            (Some((x, ra)), Some((y, rb))) => segments_overlap(x, y) && go(ra, rb),
        }
    }
    go(&segments(a), &segments(b))
}

fn segments_overlap(x: &str, y: &str) -> bool {
    if !has_wildcard(x) && !has_wildcard(y) {
        return x == y;
    }
    let literal_prefix = |s: &str| {
        s.find(['*', '?', '[', '{'])
            .map_or(s.len(), |i| i)
            .min(s.len())
    };
    let (px, py) = (&x[..literal_prefix(x)], &y[..literal_prefix(y)]);
    let suffix = |s: &str| {
        let cut = s.rfind(['*', '?', ']', '}']).map_or(0, |i| i + 1);
        s[cut..].to_string()
    };
    let (sx, sy) = (suffix(x), suffix(y));
    (px.starts_with(py) || py.starts_with(px)) && (sx.ends_with(&sy) || sy.ends_with(&sx))
}

/// Whether a normalized lease pattern covers the concrete relative `path`: the glob matches
/// it or one of its parent directories (a lease on `src` covers `src/lib.rs`).
pub fn pattern_covers(pattern: &str, path: &str) -> bool {
    compile(pattern).is_some_and(|m| m.covers(path))
}

/// A lease pattern compiled once (compiling a glob costs far more than matching it).
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `.`: the whole project.
    All,
    Glob(globset::GlobMatcher),
}

impl Matcher {
    pub fn covers(&self, path: &str) -> bool {
        let m = match self {
            Matcher::All => return true,
            Matcher::Glob(m) => m,
        };
        let segs: Vec<&str> = path
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        (1..=segs.len()).any(|n| m.is_match(segs[..n].join("/")))
    }
}

/// `None` for a pattern that is not a valid glob (refused by [`normalize`] before).
pub fn compile(pattern: &str) -> Option<Matcher> {
    if pattern == "." {
        return Some(Matcher::All);
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .ok()
        .map(|g| Matcher::Glob(g.compile_matcher()))
}

/// Whether two leases of different agents conflict: they overlap and one is exclusive.
pub fn leases_conflict(a_mode: LeaseMode, a: &[String], b: &Lease) -> bool {
    if a_mode == LeaseMode::Shared && b.mode == LeaseMode::Shared {
        return false;
    }
    a.iter()
        .any(|x| b.paths.iter().any(|y| patterns_overlap(x, y)))
}

/// The relative form of `path` under `root` (absolute paths are taken relative to it);
/// `None` when it lies outside the project.
pub fn relative_to(root: Option<&Path>, path: &str) -> Option<String> {
    let p = Path::new(path);
    let rel = if p.is_absolute() {
        p.strip_prefix(root?).ok()?.to_str()?.to_string()
    } else {
        path.to_string()
    };
    normalize(&rel).ok()
}

/// Leases in memory, by issue; expired ones are skipped on every read and purged on write.
#[derive(Debug, Default)]
pub struct LeaseTable {
    by_issue: HashMap<IssueId, Vec<Lease>>,
    /// Every live lease's patterns, compiled when the lease is inserted.
    matchers: HashMap<String, Matcher>,
}

impl LeaseTable {
    pub fn live<'a>(&'a self, issue: &IssueId, now: u64) -> impl Iterator<Item = &'a Lease> {
        self.by_issue
            .get(issue)
            .into_iter()
            .flatten()
            .filter(move |l| l.expires_at_ms > now)
    }

    pub fn all_live(&self, now: u64) -> Vec<Lease> {
        let mut v: Vec<Lease> = self
            .by_issue
            .values()
            .flatten()
            .filter(|l| l.expires_at_ms > now)
            .cloned()
            .collect();
        v.sort_by(|a, b| (&a.issue_id, &a.granted_at).cmp(&(&b.issue_id, &b.granted_at)));
        v
    }

    /// Live leases of other agents that a new lease would conflict with.
    pub fn conflicts(
        &self,
        issue: &IssueId,
        agent: &AgentId,
        mode: LeaseMode,
        paths: &[String],
        now: u64,
    ) -> Vec<Lease> {
        self.live(issue, now)
            .filter(|l| l.agent_id != *agent && leases_conflict(mode, paths, l))
            .cloned()
            .collect()
    }

    /// The live exclusive lease of an agent other than `asking` that covers `path`;
    /// `alive` says whether a holder still runs (a finished agent's leases do not block).
    pub fn exclusive_holder(
        &self,
        issue: &IssueId,
        path: &str,
        asking: Option<&AgentId>,
        alive: &dyn Fn(&AgentId) -> bool,
        now: u64,
    ) -> Option<&Lease> {
        self.live(issue, now).find(|l| {
            l.mode == LeaseMode::Exclusive
                && Some(&l.agent_id) != asking
                && alive(&l.agent_id)
                && l.paths
                    .iter()
                    .any(|p| self.matchers.get(p).is_some_and(|m| m.covers(path)))
        })
    }

    fn insert(&mut self, lease: Lease) {
        for p in &lease.paths {
            if !self.matchers.contains_key(p)
                && let Some(m) = compile(p)
            {
                self.matchers.insert(p.clone(), m);
            }
        }
        self.by_issue
            .entry(lease.issue_id.clone())
            .or_default()
            .push(lease);
    }

    fn remove(&mut self, issue: &IssueId, pred: impl Fn(&Lease) -> bool) -> Vec<Lease> {
        let Some(v) = self.by_issue.get_mut(issue) else {
            return Vec::new();
        };
        let (gone, kept): (Vec<Lease>, Vec<Lease>) = v.drain(..).partition(|l| pred(l));
        *v = kept;
        if v.is_empty() {
            self.by_issue.remove(issue);
        }
        self.prune_matchers();
        gone
    }

    fn purge(&mut self, now: u64) {
        self.by_issue.retain(|_, v| {
            v.retain(|l| l.expires_at_ms > now);
            !v.is_empty()
        });
        self.prune_matchers();
    }

    /// Drops the compiled patterns no lease uses any more.
    fn prune_matchers(&mut self) {
        let used: std::collections::HashSet<&String> = self
            .by_issue
            .values()
            .flatten()
            .flat_map(|l| &l.paths)
            .collect();
        self.matchers.retain(|p, _| used.contains(p));
    }

    pub(crate) fn count(&self) -> usize {
        self.by_issue.values().map(Vec::len).sum()
    }

    /// Replaces the leases of `issue` (a backend that keeps them elsewhere mirrors them).
    pub(crate) fn set_issue(&mut self, issue: &IssueId, leases: Vec<Lease>) {
        self.by_issue.remove(issue);
        for l in leases {
            self.insert(l);
        }
        self.prune_matchers();
    }
}

/// A new lease for `req` on `issue` (validated, normalized, not yet checked for conflicts).
pub fn new_lease(
    issue: &IssueId,
    req: &ReserveRequest,
    agent_type: Option<AgentType>,
    now: u64,
) -> Result<Lease, LeaseError> {
    if req.paths.is_empty() || req.paths.len() > MAX_PATHS {
        return Err(LeaseError::Invalid(format!(
            "`paths` must name 1-{MAX_PATHS} paths or globs, e.g. [\"src/lib.rs\"]"
        )));
    }
    if req.reason.len() > MAX_REASON_BYTES || req.reason.chars().any(char::is_control) {
        return Err(LeaseError::Invalid(format!(
            "`reason` must be at most {MAX_REASON_BYTES} bytes without control characters"
        )));
    }
    let mut paths = req
        .paths
        .iter()
        .map(|p| normalize(p))
        .collect::<Result<Vec<_>, _>>()?;
    paths.dedup();
    let ttl = ttl(req.ttl_secs)?;
    let expires = now + ttl.as_millis() as u64;
    Ok(Lease {
        lease_id: lease_id(),
        issue_id: issue.clone(),
        agent_id: req.agent.clone(),
        agent_type,
        paths,
        mode: req.mode,
        reason: req.reason.clone(),
        granted_at: rfc3339(now),
        expires_at: rfc3339(expires),
        expires_at_ms: expires,
    })
}

/// The TTL a request asks for, checked.
pub(crate) fn ttl(secs: Option<u64>) -> Result<Duration, LeaseError> {
    match secs {
        None => Ok(DEFAULT_TTL),
        Some(0) => Err(LeaseError::Invalid("`ttl_secs` must be at least 1".into())),
        Some(s) if Duration::from_secs(s) > MAX_TTL => Err(LeaseError::Invalid(format!(
            "`ttl_secs` {s} is longer than the maximum {}; reserve for less and renew",
            MAX_TTL.as_secs()
        ))),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

fn lease_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source is available");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("lease_{hex}")
}

/// The durable lease store: the table in memory, written through to SQLite.
#[derive(Debug)]
pub struct LeaseStore {
    conn: Mutex<Connection>,
    table: RwLock<LeaseTable>,
    /// Live-or-not leases in memory: zero means every check answers without a lock.
    count: AtomicUsize,
}

fn db(e: rusqlite::Error) -> LeaseError {
    LeaseError::Store(JournalError::Sqlite(e))
}

impl LeaseStore {
    /// Opens the store on the journal's database (already migrated by `Journal::open`),
    /// dropping leases that expired while nothing ran.
    pub fn open(path: &Path, now: u64) -> Result<LeaseStore, JournalError> {
        let conn = super::journal::schema::open_conn(path)?;
        conn.execute("DELETE FROM leases WHERE expires_at_ms <= ?1", [now as i64])?;
        let mut table = LeaseTable::default();
        {
            let mut stmt = conn.prepare("SELECT lease_id, json FROM leases")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (id, json) = row?;
                match serde_json::from_str::<Lease>(&json) {
                    Ok(l) => table.insert(l),
                    Err(e) => {
                        tracing::warn!(lease_id = %id, error = %e, "skipping a lease row that does not parse (kept in state.db)")
                    }
                }
            }
        }
        let count = table.count();
        Ok(LeaseStore {
            conn: Mutex::new(conn),
            table: RwLock::new(table),
            count: AtomicUsize::new(count),
        })
    }

    /// Whether any lease exists at all (expired ones included until purged): the hot
    /// path's first question, answered with one atomic load.
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    pub fn list(&self, issue: Option<&IssueId>, now: u64) -> Vec<Lease> {
        let t = self.table.read().expect("lease lock");
        match issue {
            Some(i) => t.live(i, now).cloned().collect(),
            None => t.all_live(now),
        }
    }

    pub fn get(&self, issue: &IssueId, lease_id: &str, now: u64) -> Option<Lease> {
        let t = self.table.read().expect("lease lock");
        t.live(issue, now).find(|l| l.lease_id == lease_id).cloned()
    }

    /// The live exclusive lease of another running agent covering `path` (relative,
    /// normalized).
    pub fn exclusive_holder(
        &self,
        issue: &IssueId,
        path: &str,
        asking: Option<&AgentId>,
        alive: &dyn Fn(&AgentId) -> bool,
        now: u64,
    ) -> Option<Lease> {
        if self.is_empty() {
            return None;
        }
        let t = self.table.read().expect("lease lock");
        t.exclusive_holder(issue, path, asking, alive, now).cloned()
    }

    /// Grants a lease unless a live lease of another agent conflicts (blocking: SQLite).
    pub fn reserve(
        &self,
        issue: &IssueId,
        req: &ReserveRequest,
        agent_type: Option<AgentType>,
        now: u64,
    ) -> Result<Lease, LeaseError> {
        let lease = new_lease(issue, req, agent_type, now)?;
        let mut t = self.table.write().expect("lease lock");
        let conflicts = t.conflicts(issue, &req.agent, req.mode, &lease.paths, now);
        if !conflicts.is_empty() {
            return Err(LeaseError::Conflict(conflicts));
        }
        {
            let conn = self.conn.lock().expect("lease db lock");
            let tx = conn.unchecked_transaction().map_err(db)?;
            tx.execute("DELETE FROM leases WHERE expires_at_ms <= ?1", [now as i64])
                .map_err(db)?;
            put(&tx, &lease)?;
            tx.commit().map_err(db)?;
        }
        t.purge(now);
        t.insert(lease.clone());
        self.count.store(t.count(), Ordering::Release);
        Ok(lease)
    }

    /// Extends the holder's lease to `now + ttl`.
    pub fn renew(
        &self,
        issue: &IssueId,
        lease_id: &str,
        agent: &AgentId,
        ttl_secs: Option<u64>,
        now: u64,
    ) -> Result<Lease, LeaseError> {
        let ttl = ttl(ttl_secs)?;
        let mut t = self.table.write().expect("lease lock");
        let Some(lease) = t.by_issue.get_mut(issue).and_then(|v| {
            v.iter_mut()
                .find(|l| l.lease_id == lease_id && l.expires_at_ms > now)
        }) else {
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
        let mut renewed = lease.clone();
        renewed.expires_at_ms = now + ttl.as_millis() as u64;
        renewed.expires_at = rfc3339(renewed.expires_at_ms);
        put(&self.conn.lock().expect("lease db lock"), &renewed)?;
        *lease = renewed.clone();
        Ok(renewed)
    }

    /// Ends one lease; `agent`, when given, must be its holder (else it is forced).
    pub fn release(
        &self,
        issue: &IssueId,
        lease_id: &str,
        agent: Option<&AgentId>,
        now: u64,
    ) -> Result<Lease, LeaseError> {
        let held = self
            .get(issue, lease_id, now)
            .ok_or_else(|| LeaseError::NotFound(lease_id.to_string()))?;
        if let Some(a) = agent
            && held.agent_id != *a
        {
            return Err(LeaseError::NotHolder {
                lease_id: lease_id.to_string(),
                holder: held.agent_id,
                asked: a.clone(),
                what: "release",
            });
        }
        self.remove(issue, |l| l.lease_id == lease_id)?;
        Ok(held)
    }

    /// Ends every lease `agent` holds on `issue` (SubagentStop); returns their ids.
    pub fn release_agent(
        &self,
        issue: &IssueId,
        agent: &AgentId,
    ) -> Result<Vec<String>, LeaseError> {
        let gone = self.remove(issue, |l| l.agent_id == *agent)?;
        Ok(gone.into_iter().map(|l| l.lease_id).collect())
    }

    fn remove(
        &self,
        issue: &IssueId,
        pred: impl Fn(&Lease) -> bool,
    ) -> Result<Vec<Lease>, LeaseError> {
        let mut t = self.table.write().expect("lease lock");
        let ids: Vec<String> = t
            .by_issue
            .get(issue)
            .into_iter()
            .flatten()
            .filter(|l| pred(l))
            .map(|l| l.lease_id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        {
            let conn = self.conn.lock().expect("lease db lock");
            let tx = conn.unchecked_transaction().map_err(db)?;
            for id in &ids {
                tx.execute("DELETE FROM leases WHERE lease_id = ?1", [id])
                    .map_err(db)?;
            }
            tx.commit().map_err(db)?;
        }
        let gone = t.remove(issue, |l| ids.contains(&l.lease_id));
        self.count.store(t.count(), Ordering::Release);
        Ok(gone)
    }
}

fn put(conn: &Connection, l: &Lease) -> Result<(), LeaseError> {
    let json = serde_json::to_string(l).expect("leases serialize");
    conn.execute(
        "INSERT INTO leases(lease_id, issue_id, agent_id, expires_at_ms, json) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(lease_id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms, json = excluded.json",
        params![
            l.lease_id,
            l.issue_id.as_str(),
            l.agent_id.as_str(),
            l.expires_at_ms as i64,
            json
        ],
    )
    .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests;
