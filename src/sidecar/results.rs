//! Agents' results, one file per agent, written atomically and durably (`paths::write_atomic`):
//! `results/{issue}/{agent_type}/{agent_id}.json` keeps every agent's result, and
//! `results/{issue}/{agent_type}.json` is the latest result of that type (the seed's path).
//! An in-memory index per issue answers reads; unknown issues are never cached.
//! A write can be undone (`undo`) when the event announcing it cannot be committed.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::api::sidecar::StoredResult;
use crate::api::{AgentId, AgentType, IssueId};
use crate::paths;

/// Mode of result files and directories: the user's alone.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("disk full while writing {0}")]
    DiskFull(PathBuf),
    #[error(
        "{path}: {source} — make its directory writable by you (`chmod u+w {}`) or move what is in the way aside, then retry",
        path.parent().unwrap_or(path).display()
    )]
    Io { path: PathBuf, source: io::Error },
    /// A symlink or a non-directory where cco keeps its own directories: never followed.
    #[error("{path} is {what}, not a directory cco made; cco does not follow it — move it aside (`mv {path} {path}.moved`) and retry", path = path.display())]
    Refused { path: PathBuf, what: &'static str },
}

impl StoreError {
    fn io(path: &Path, source: io::Error) -> StoreError {
        if paths::is_disk_full(&source) {
            StoreError::DiskFull(path.to_owned())
        } else {
            StoreError::Io {
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// Why a result recorded as pending before a crash cannot be written back at start-up.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("not a stored result: {0}")]
    Parse(serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type FileLock = Arc<Mutex<()>>;
type TurnLock = Arc<tokio::sync::Mutex<()>>;

/// One issue's results by (agent type, agent id), serialized once, kept as JSON.
type IssueResults = BTreeMap<(AgentType, AgentId), Arc<str>>;

/// A written result and what it replaced, so the write can be undone.
#[derive(Debug)]
pub struct Stored {
    /// `{agent_type}.json`, the latest of its type.
    pub path: PathBuf,
    /// `{agent_type}/{agent_id}.json`, this agent's own.
    pub agent_path: PathBuf,
    issue_id: IssueId,
    key: (AgentType, AgentId),
    json: Arc<str>,
    /// Each file's previous bytes (`None`: there was no file), and the previous index entry.
    previous_files: [Option<Vec<u8>>; 2],
    previous_entry: Option<Arc<str>>,
}

#[derive(Debug)]
pub struct ResultsStore {
    dir: PathBuf,
    index: RwLock<HashMap<IssueId, Arc<RwLock<IssueResults>>>>,
    files: AtomicU64,
    bytes: AtomicU64,
    /// Serializes file writes (and undos) of one agent type on one issue.
    locks: Mutex<HashMap<(IssueId, AgentType), FileLock>>,
    /// Serializes whole submissions of one agent on one issue (check, write, announce).
    agent_locks: Mutex<HashMap<(IssueId, AgentId), TurnLock>>,
    /// The last write failed for a reason other than a full disk (health says degraded).
    failing: AtomicBool,
}

/// `issue/type/agent`: the key of a pending result in the journal.
pub fn pending_key(r: &StoredResult) -> String {
    format!("{}/{}/{}", r.issue_id, r.agent_type, r.agent_id)
}

impl ResultsStore {
    /// Opens the results directory, creating it; removes temp files a crash left and
    /// counts what is stored.
    pub fn open(dir: PathBuf) -> Result<ResultsStore, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(|e| StoreError::io(&dir, e))?;
        let (mut files, mut bytes, mut temps) = (0, 0, 0);
        for issue in real_dirs(&dir) {
            for e in entries(&issue) {
                let ft = e.file_type();
                if ft.as_ref().is_ok_and(|t| t.is_dir()) {
                    for f in entries(&e.path()) {
                        count(&f, &mut files, &mut bytes, &mut temps);
                    }
                } else if ft.as_ref().is_ok_and(|t| t.is_file()) {
                    // The latest of a type: counted as a result only when no per-agent
                    // directory holds it (a result stored by an earlier cco).
                    let per_agent = e
                        .file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".json"))
                        .is_some_and(|t| issue.join(t).is_dir());
                    let mut ignored = 0;
                    count(
                        &e,
                        if per_agent { &mut ignored } else { &mut files },
                        &mut bytes,
                        &mut temps,
                    );
                }
            }
        }
        if temps > 0 {
            tracing::info!(
                removed = temps,
                "removed temp files left by an unclean stop"
            );
        }
        Ok(ResultsStore {
            dir,
            index: RwLock::new(HashMap::new()),
            files: AtomicU64::new(files),
            bytes: AtomicU64::new(bytes),
            locks: Mutex::new(HashMap::new()),
            agent_locks: Mutex::new(HashMap::new()),
            failing: AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The latest result of `agent_type` on `issue`.
    pub fn path_of(&self, issue: &IssueId, agent_type: &AgentType) -> PathBuf {
        self.dir
            .join(issue.as_str())
            .join(format!("{}.json", agent_type.as_str()))
    }

    /// One agent's own result.
    pub fn agent_path_of(
        &self,
        issue: &IssueId,
        agent_type: &AgentType,
        agent: &AgentId,
    ) -> PathBuf {
        self.dir
            .join(issue.as_str())
            .join(agent_type.as_str())
            .join(format!("{}.json", agent.as_str()))
    }

    /// Results stored (one per agent and issue).
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// The last write failed (not for a full disk) and none has succeeded since.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    fn lock_of(&self, issue: &IssueId, agent_type: &AgentType) -> FileLock {
        self.locks
            .lock()
            .expect("locks lock")
            .entry((issue.clone(), agent_type.clone()))
            .or_default()
            .clone()
    }

    /// Holds off other submissions of `agent` on `issue` while the guard lives.
    pub async fn lock_agent(&self, issue: &IssueId, agent: &AgentId) -> AgentGuard<'_> {
        let key = (issue.clone(), agent.clone());
        let lock = self
            .agent_locks
            .lock()
            .expect("agent locks lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        AgentGuard {
            store: self,
            key,
            lock,
            _guard: Some(guard),
        }
    }

    /// Writes `result`'s files and indexes it (blocking: call from `spawn_blocking`).
    /// A failure leaves the previous files, or none, and never a partial one.
    pub fn store(&self, result: &StoredResult) -> Result<Stored, StoreError> {
        let json: Arc<str> = serde_json::to_string(result)
            .expect("results serialize")
            .into();
        let stored = self.store_json(result, json);
        self.failing.store(
            matches!(
                stored,
                Err(StoreError::Io { .. } | StoreError::Refused { .. })
            ),
            Ordering::Relaxed,
        );
        stored
    }

    fn store_json(&self, result: &StoredResult, json: Arc<str>) -> Result<Stored, StoreError> {
        let issue_dir = self.dir.join(result.issue_id.as_str());
        let type_dir = issue_dir.join(result.agent_type.as_str());
        ensure_dir(&issue_dir, &self.dir)?;
        ensure_dir(&type_dir, &issue_dir)?;
        let type_name = OsString::from(format!("{}.json", result.agent_type.as_str()));
        let agent_name = OsString::from(format!("{}.json", result.agent_id.as_str()));
        let key = (result.agent_type.clone(), result.agent_id.clone());
        let entry = self.issue(&result.issue_id);
        let lock = self.lock_of(&result.issue_id, &result.agent_type);
        let _held = lock.lock().expect("result lock");
        let previous_entry = entry.read().expect("results lock").get(&key).cloned();
        let targets = [(&type_dir, &agent_name), (&issue_dir, &type_name)];
        let mut previous_files = [None, None];
        for (i, (dir, name)) in targets.iter().enumerate() {
            let target = dir.join(name);
            previous_files[i] = read_nofollow(&target).map_err(|e| StoreError::io(&target, e))?;
            if let Err(e) = paths::write_atomic(dir, name, json.as_bytes(), FILE_MODE) {
                // Put back what the first write replaced: all or nothing.
                if i == 1 {
                    restore(&type_dir, &agent_name, previous_files[0].as_deref());
                }
                return Err(StoreError::io(&target, e));
            }
        }
        for old in previous_files.iter().flatten() {
            self.bytes.fetch_sub(old.len() as u64, Ordering::Relaxed);
        }
        if previous_files[0].is_none() {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes
            .fetch_add(2 * json.len() as u64, Ordering::Relaxed);
        entry
            .write()
            .expect("results lock")
            .insert(key.clone(), json.clone());
        Ok(Stored {
            path: issue_dir.join(&type_name),
            agent_path: type_dir.join(&agent_name),
            issue_id: result.issue_id.clone(),
            key,
            json,
            previous_files,
            previous_entry,
        })
    }

    /// Writes a result recorded as pending before a crash (blocking); the same bytes.
    pub fn restore_pending(&self, json: &str) -> Result<(StoredResult, Stored), RestoreError> {
        let result: StoredResult = serde_json::from_str(json).map_err(RestoreError::Parse)?;
        let stored = self.store_json(&result, Arc::from(json))?;
        Ok((result, stored))
    }

    /// Puts back what `stored` replaced (blocking), unless a later store replaced it since:
    /// a result whose announcement failed is not kept, an acknowledged later one is.
    pub fn undo(&self, stored: Stored) -> Result<(), StoreError> {
        let entry = self.issue(&stored.issue_id);
        let lock = self.lock_of(&stored.issue_id, &stored.key.0);
        let _held = lock.lock().expect("result lock");
        let current = entry
            .read()
            .expect("results lock")
            .get(&stored.key)
            .cloned();
        if !current.is_some_and(|c| Arc::ptr_eq(&c, &stored.json)) {
            return Ok(());
        }
        for (path, previous) in [&stored.agent_path, &stored.path]
            .into_iter()
            .zip(&stored.previous_files)
        {
            // The latest-of-type file may hold another agent's later result by now.
            match read_nofollow(path) {
                Ok(Some(now)) if now == stored.json.as_bytes() => {}
                _ => continue,
            }
            let (dir, name) = (
                path.parent().expect("a file in a dir"),
                path.file_name().expect("a file name"),
            );
            restore_checked(dir, name, previous.as_deref()).map_err(|e| StoreError::io(path, e))?;
            self.bytes
                .fetch_sub(stored.json.len() as u64, Ordering::Relaxed);
            if let Some(b) = previous {
                self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
        }
        if stored.previous_files[0].is_none() {
            self.files.fetch_sub(1, Ordering::Relaxed);
        }
        let mut map = entry.write().expect("results lock");
        match stored.previous_entry {
            Some(json) => map.insert(stored.key, json),
            None => map.remove(&stored.key),
        };
        Ok(())
    }

    /// The index entry of an issue about to be written, loading it on first use (blocking).
    fn issue(&self, issue: &IssueId) -> Arc<RwLock<IssueResults>> {
        if let Some(e) = self.index.read().expect("index lock").get(issue) {
            return e.clone();
        }
        let loaded = self.load_issue(issue);
        self.index
            .write()
            .expect("index lock")
            .entry(issue.clone())
            .or_insert_with(|| Arc::new(RwLock::new(loaded)))
            .clone()
    }

    /// The index entry of an issue for reading; an issue with nothing stored is answered
    /// without being remembered, so asking for many unknown ids costs no memory.
    fn lookup(&self, issue: &IssueId) -> Option<Arc<RwLock<IssueResults>>> {
        if let Some(e) = self.index.read().expect("index lock").get(issue) {
            return Some(e.clone());
        }
        let loaded = self.load_issue(issue);
        if loaded.is_empty() {
            return None;
        }
        Some(
            self.index
                .write()
                .expect("index lock")
                .entry(issue.clone())
                .or_insert_with(|| Arc::new(RwLock::new(loaded)))
                .clone(),
        )
    }

    fn load_issue(&self, issue: &IssueId) -> IssueResults {
        let mut out = BTreeMap::new();
        let issue_dir = self.dir.join(issue.as_str());
        if !is_real_dir(&issue_dir) {
            return out;
        }
        let mut latest_files = Vec::new();
        for e in entries(&issue_dir) {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                for f in entries(&path) {
                    if let Some((r, text)) = read_result(&f) {
                        out.insert((r.agent_type, r.agent_id), text);
                    }
                }
            } else if ft.is_file() {
                latest_files.push(e);
            } else if ft.is_symlink() {
                tracing::warn!(path = %path.display(), "ignoring a symlink among results");
            }
        }
        // A `{type}.json` from an earlier cco, whose agent has no file of its own.
        for e in latest_files {
            if let Some((r, text)) = read_result(&e) {
                out.entry((r.agent_type, r.agent_id)).or_insert(text);
            }
        }
        out
    }

    /// Every agent's result on the issue, as JSON texts (blocking on first use of an issue).
    pub fn list(&self, issue: &IssueId) -> Vec<Arc<str>> {
        self.lookup(issue).map_or_else(Vec::new, |e| {
            e.read().expect("results lock").values().cloned().collect()
        })
    }

    /// The latest stored result of `agent_type` on `issue` (blocking on first use).
    pub fn get(&self, issue: &IssueId, agent_type: &AgentType) -> Option<Arc<str>> {
        let entry = self.lookup(issue)?;
        let map = entry.read().expect("results lock");
        map.iter()
            .filter(|((t, _), _)| t == agent_type)
            .filter_map(|(_, json)| {
                serde_json::from_str::<StoredResult>(json)
                    .ok()
                    .map(|r| (r.stored_at, json.clone()))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, json)| json)
    }

    /// `agent`'s own result of `agent_type` on `issue` (blocking on first use).
    pub fn get_agent(
        &self,
        issue: &IssueId,
        agent_type: &AgentType,
        agent: &AgentId,
    ) -> Option<Arc<str>> {
        let entry = self.lookup(issue)?;
        let map = entry.read().expect("results lock");
        map.get(&(agent_type.clone(), agent.clone())).cloned()
    }

    /// Whether `list` would answer from memory.
    pub fn is_loaded(&self, issue: &IssueId) -> bool {
        self.index.read().expect("index lock").contains_key(issue)
    }
}

/// Holds one agent's submissions on one issue in turn; forgets the lock when unused.
pub struct AgentGuard<'a> {
    store: &'a ResultsStore,
    key: (IssueId, AgentId),
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for AgentGuard<'_> {
    fn drop(&mut self) {
        self._guard.take();
        let mut locks = self.store.agent_locks.lock().expect("agent locks lock");
        // Ours and the map's: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

/// Creates `dir` (mode 0700) in `parent` unless it is there; a symlink or a file in its
/// place is refused, never followed.
fn ensure_dir(dir: &Path, parent: &Path) -> Result<(), StoreError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(m) => {
            return Err(StoreError::Refused {
                path: dir.to_owned(),
                what: if m.file_type().is_symlink() {
                    "a symlink"
                } else {
                    "not a directory"
                },
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(dir, e)),
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => paths::sync_dir(parent).map_err(|e| StoreError::io(parent, e)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => ensure_dir(dir, parent),
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// The real directories in `dir` (symlinks skipped).
fn real_dirs(dir: &Path) -> impl Iterator<Item = PathBuf> {
    entries(dir)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
}

fn entries(dir: &Path) -> impl Iterator<Item = std::fs::DirEntry> {
    std::fs::read_dir(dir).into_iter().flatten().flatten()
}

/// Counts a result file, or removes a temp file `write_atomic` left behind.
fn count(e: &std::fs::DirEntry, files: &mut u64, bytes: &mut u64, temps: &mut u64) {
    let name = e.file_name();
    if is_temp_file(&name) {
        match std::fs::remove_file(e.path()) {
            Ok(()) => *temps += 1,
            Err(err) => {
                tracing::warn!(path = %e.path().display(), error = %err, "cannot remove a temp file")
            }
        }
    } else if is_result_file(&name) && e.file_type().is_ok_and(|t| t.is_file()) {
        *files += 1;
        *bytes += e.metadata().map_or(0, |m| m.len());
    }
}

/// Reads a file without following a symlink; `None` when there is no file.
fn read_nofollow(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    match f {
        Ok(mut f) => {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_result(e: &std::fs::DirEntry) -> Option<(StoredResult, Arc<str>)> {
    let path = e.path();
    if !is_result_file(&e.file_name()) {
        return None;
    }
    match read_nofollow(&path) {
        Ok(Some(bytes)) => match String::from_utf8(bytes).ok().and_then(|t| {
            serde_json::from_str::<StoredResult>(&t)
                .ok()
                .map(|r| (r, t))
        }) {
            Some((r, text)) => Some((r, Arc::from(text))),
            None => {
                tracing::warn!(path = %path.display(), "skipping a malformed result");
                None
            }
        },
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot read a result (symlinks are not followed)");
            None
        }
    }
}

/// Puts `previous` back at `dir/name` (or removes the file), logging a failure.
fn restore(dir: &Path, name: &OsStr, previous: Option<&[u8]>) {
    if let Err(e) = restore_checked(dir, name, previous) {
        tracing::error!(path = %dir.join(name).display(), error = %e, "cannot put back a result file");
    }
}

fn restore_checked(dir: &Path, name: &OsStr, previous: Option<&[u8]>) -> io::Result<()> {
    match previous {
        Some(bytes) => paths::write_atomic(dir, name, bytes, FILE_MODE),
        None => std::fs::remove_file(dir.join(name)).and_then(|()| paths::sync_dir(dir)),
    }
}

/// `<name>.json`, not one of `write_atomic`'s hidden temp files.
fn is_result_file(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
}

/// `.<name>.tmp.<pid>.<n>`, as `paths::write_atomic` names its temp files.
fn is_temp_file(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.starts_with('.') && n.contains(".tmp."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(issue: &str, t: &str) -> StoredResult {
        result_of(issue, t, "a-1")
    }

    fn result_of(issue: &str, t: &str, agent: &str) -> StoredResult {
        StoredResult {
            agent_id: AgentId::parse(agent).unwrap(),
            agent_type: AgentType::parse(t).unwrap(),
            issue_id: IssueId::parse(issue).unwrap(),
            result: serde_json::json!({"status": "success"}),
            stored_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn store_list_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = ResultsStore::open(dir.path().join("results")).unwrap();
        let stored = s.store(&result("issue-1", "rust-specialist")).unwrap();
        assert!(
            stored
                .path
                .ends_with("results/issue-1/rust-specialist.json")
        );
        assert!(
            stored
                .agent_path
                .ends_with("results/issue-1/rust-specialist/a-1.json")
        );
        s.store(&result("issue-1", "rust-specialist")).unwrap();
        s.store(&result("issue-1", "test-engineer")).unwrap();
        assert_eq!(s.list(&IssueId::parse("issue-1").unwrap()).len(), 2);
        assert_eq!(s.files(), 2);
        let again = ResultsStore::open(dir.path().join("results")).unwrap();
        assert_eq!(again.files(), 2);
        assert_eq!(again.bytes(), s.bytes());
        assert_eq!(again.list(&IssueId::parse("issue-1").unwrap()).len(), 2);
        assert!(again.list(&IssueId::parse("none").unwrap()).is_empty());
    }

    /// Two agents of one type keep both results; the type's file is the latest.
    #[test]
    fn parallel_agents_of_one_type_keep_every_result() {
        let dir = tempfile::tempdir().unwrap();
        let s = ResultsStore::open(dir.path().join("results")).unwrap();
        let issue = IssueId::parse("i").unwrap();
        let t = AgentType::parse("test-engineer").unwrap();
        let mut first = result_of("i", "test-engineer", "te-1");
        first.stored_at = "2025-01-01T00:00:01Z".into();
        let mut second = result_of("i", "test-engineer", "te-2");
        second.stored_at = "2025-01-01T00:00:02Z".into();
        s.store(&first).unwrap();
        s.store(&second).unwrap();
        assert_eq!(s.list(&issue).len(), 2);
        assert_eq!(s.files(), 2);
        assert!(s.get(&issue, &t).unwrap().contains("te-2"));
        let latest = std::fs::read_to_string(s.path_of(&issue, &t)).unwrap();
        assert!(latest.contains("te-2"));
        let again = ResultsStore::open(dir.path().join("results")).unwrap();
        assert_eq!(again.files(), 2);
        assert_eq!(again.list(&issue).len(), 2);
    }

    /// A `{type}.json` written by the first release (no per-agent directory) still lists.
    #[test]
    fn results_of_the_first_layout_still_list() {
        let dir = tempfile::tempdir().unwrap();
        let issue_dir = dir.path().join("results/issue-1");
        std::fs::create_dir_all(&issue_dir).unwrap();
        let fixture = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/state-v0/rust-specialist.json"
        ));
        std::fs::write(issue_dir.join("rust-specialist.json"), fixture).unwrap();
        let s = ResultsStore::open(dir.path().join("results")).unwrap();
        assert_eq!(s.files(), 1);
        let issue = IssueId::parse("issue-1").unwrap();
        assert_eq!(s.list(&issue).len(), 1);
        let t = AgentType::parse("rust-specialist").unwrap();
        let agent = AgentId::parse("agent-1").unwrap();
        assert!(s.get_agent(&issue, &t, &agent).is_some());
        // The same agent storing again replaces it rather than adding a second one.
        s.store(&result_of("issue-1", "rust-specialist", "agent-1"))
            .unwrap();
        assert_eq!(s.list(&issue).len(), 1);
    }

    /// A store whose event could not be published is undone: the previous result (or
    /// none) is back on disk and in the index — unless a later store replaced it since.
    #[test]
    fn undo_puts_back_what_a_store_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let s = ResultsStore::open(dir.path().join("results")).unwrap();
        let issue = IssueId::parse("i").unwrap();
        let mut first = result("i", "t");
        first.result = serde_json::json!({"status": "first"});
        let mut second = result("i", "t");
        second.result = serde_json::json!({"status": "second"});

        let fresh = s.store(&first).unwrap();
        let (path, agent_path) = (fresh.path.clone(), fresh.agent_path.clone());
        s.undo(fresh).unwrap();
        assert!(!path.exists() && !agent_path.exists());
        assert!(s.list(&issue).is_empty());
        assert_eq!((s.files(), s.bytes()), (0, 0));

        s.store(&first).unwrap();
        let (files, bytes) = (s.files(), s.bytes());
        let replacing = s.store(&second).unwrap();
        s.undo(replacing).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("first"));
        assert!(
            std::fs::read_to_string(&agent_path)
                .unwrap()
                .contains("first")
        );
        assert!(s.list(&issue)[0].contains("first"));
        assert_eq!((s.files(), s.bytes()), (files, bytes));

        // An undo that comes after a later store leaves the later one alone.
        let stale = s.store(&second).unwrap();
        s.store(&first).unwrap();
        s.undo(stale).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("first"));
        let again = ResultsStore::open(dir.path().join("results")).unwrap();
        assert_eq!((again.files(), again.bytes()), (s.files(), s.bytes()));
    }

    #[test]
    fn unknown_issues_are_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let s = ResultsStore::open(dir.path().join("results")).unwrap();
        for i in 0..100 {
            let id = IssueId::parse(&format!("unknown-{i}")).unwrap();
            assert!(s.list(&id).is_empty());
            assert!(s.get(&id, &AgentType::parse("t").unwrap()).is_none());
        }
        assert!(s.index.read().unwrap().is_empty());
    }

    #[test]
    fn temp_files_of_a_crash_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = ResultsStore::open(dir.path().join("results")).unwrap();
        let stored = s.store(&result("i", "t")).unwrap();
        let left = [
            stored.path.with_file_name(".t.json.tmp.123.0"),
            stored.agent_path.with_file_name(".a-1.json.tmp.123.1"),
        ];
        for p in &left {
            std::fs::write(p, "partial").unwrap();
        }
        let again = ResultsStore::open(dir.path().join("results")).unwrap();
        assert!(left.iter().all(|p| !p.exists()));
        assert_eq!(again.files(), 1);
    }

    /// Symlinked issue directories and result files are refused or skipped, never followed.
    #[test]
    fn symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let s = ResultsStore::open(dir.path().join("results")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join("results/evil")).unwrap();
        let e = s.store(&result("evil", "t")).unwrap_err();
        assert!(matches!(e, StoreError::Refused { .. }), "{e}");
        assert!(e.to_string().contains("mv "), "{e}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

        let secret = outside.join("secret.json");
        let r = result("linked", "t");
        std::fs::write(&secret, serde_json::to_string(&r).unwrap()).unwrap();
        std::fs::create_dir_all(dir.path().join("results/linked/t")).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("results/linked/t/a-1.json")).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("results/linked/t.json")).unwrap();
        assert!(s.list(&IssueId::parse("linked").unwrap()).is_empty());
        assert!(s.list(&IssueId::parse("evil").unwrap()).is_empty());
    }

    /// A directory where a result file belongs is a clear error naming the path.
    #[test]
    fn a_directory_in_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = ResultsStore::open(dir.path().join("results")).unwrap();
        std::fs::create_dir_all(dir.path().join("results/i/t/a-1.json/x")).unwrap();
        let e = s.store(&result("i", "t")).unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e}");
        assert!(e.to_string().contains("a-1.json"), "{e}");
        assert!(s.failing());
        s.store(&result("i", "other")).unwrap();
        assert!(!s.failing());
    }

    #[test]
    fn disk_full_is_named() {
        let e = StoreError::io(Path::new("/x"), io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, StoreError::DiskFull(_)));
        let e = StoreError::io(Path::new("/x"), io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(e, StoreError::Io { .. }));
    }
}
