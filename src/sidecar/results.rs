//! Agents' results: one file per issue and agent type, written atomically and durably
//! (`paths::write_atomic`), with an in-memory index per issue so reads never touch the disk
//! twice. Concurrent writers' fsyncs overlap, which the filesystem commits together.
//! A store can be undone (`undo`) when the event announcing it cannot be published.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::api::sidecar::StoredResult;
use crate::api::{AgentType, IssueId};
use crate::paths;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("disk full while writing {0}")]
    DiskFull(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
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

/// One issue's results, by agent type (serialized once, kept as JSON).
type IssueResults = BTreeMap<AgentType, Arc<str>>;

type ResultKey = (IssueId, AgentType);

/// A stored result and what it replaced, so the store can be undone.
#[derive(Debug)]
pub struct Stored {
    pub path: PathBuf,
    issue_id: IssueId,
    agent_type: AgentType,
    json: Arc<str>,
    /// The file's previous bytes and index entry (`None`: there was no file).
    previous: Option<(Vec<u8>, Option<Arc<str>>)>,
}

#[derive(Debug)]
pub struct ResultsStore {
    dir: PathBuf,
    index: RwLock<HashMap<IssueId, Arc<RwLock<IssueResults>>>>,
    files: AtomicU64,
    bytes: AtomicU64,
    /// Serializes writes (and undos) of one result file, keeping file and index in step.
    locks: Mutex<HashMap<ResultKey, Arc<Mutex<()>>>>,
}

impl ResultsStore {
    /// Opens the results directory, creating it, and counts what is already stored.
    pub fn open(dir: PathBuf) -> Result<ResultsStore, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| StoreError::io(&dir, e))?;
        let (mut files, mut bytes) = (0, 0);
        if let Ok(issues) = std::fs::read_dir(&dir) {
            for issue in issues.flatten() {
                let Ok(entries) = std::fs::read_dir(issue.path()) else {
                    continue;
                };
                for e in entries.flatten() {
                    if is_result_file(&e.file_name()) {
                        files += 1;
                        bytes += e.metadata().map_or(0, |m| m.len());
                    }
                }
            }
        }
        Ok(ResultsStore {
            dir,
            index: RwLock::new(HashMap::new()),
            files: AtomicU64::new(files),
            bytes: AtomicU64::new(bytes),
            locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn path_of(&self, issue: &IssueId, agent_type: &AgentType) -> PathBuf {
        self.dir
            .join(issue.as_str())
            .join(format!("{}.json", agent_type.as_str()))
    }

    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn lock_of(&self, issue: &IssueId, agent_type: &AgentType) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .expect("locks lock")
            .entry((issue.clone(), agent_type.clone()))
            .or_default()
            .clone()
    }

    /// Stores `result` (blocking: call from `spawn_blocking`). A failure leaves the previous
    /// file, or none, and never a partial one.
    pub fn store(&self, result: &StoredResult) -> Result<Stored, StoreError> {
        let json: Arc<str> = serde_json::to_string(result)
            .expect("results serialize")
            .into();
        let issue_dir = self.dir.join(result.issue_id.as_str());
        if !issue_dir.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&issue_dir)
                .or_else(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| StoreError::io(&issue_dir, e))?;
            paths::sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        }
        let name = OsString::from(format!("{}.json", result.agent_type.as_str()));
        let target = issue_dir.join(&name);
        let entry = self.issue(&result.issue_id);
        let lock = self.lock_of(&result.issue_id, &result.agent_type);
        let _held = lock.lock().expect("result lock");
        let previous = std::fs::read(&target).ok().map(|bytes| {
            let indexed = entry
                .read()
                .expect("results lock")
                .get(&result.agent_type)
                .cloned();
            (bytes, indexed)
        });
        paths::write_atomic(&issue_dir, &name, json.as_bytes(), 0o600)
            .map_err(|e| StoreError::io(&target, e))?;
        match &previous {
            Some((old, _)) => {
                self.bytes.fetch_sub(old.len() as u64, Ordering::Relaxed);
            }
            None => {
                self.files.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.bytes.fetch_add(json.len() as u64, Ordering::Relaxed);
        entry
            .write()
            .expect("results lock")
            .insert(result.agent_type.clone(), json.clone());
        Ok(Stored {
            path: target,
            issue_id: result.issue_id.clone(),
            agent_type: result.agent_type.clone(),
            json,
            previous,
        })
    }

    /// Puts back what `stored` replaced (blocking), unless a later store replaced it since:
    /// a result whose announcement failed is not kept, an acknowledged later one is.
    pub fn undo(&self, stored: Stored) -> Result<(), StoreError> {
        let entry = self.issue(&stored.issue_id);
        let lock = self.lock_of(&stored.issue_id, &stored.agent_type);
        let _held = lock.lock().expect("result lock");
        let current = entry
            .read()
            .expect("results lock")
            .get(&stored.agent_type)
            .cloned();
        if !current.is_some_and(|c| Arc::ptr_eq(&c, &stored.json)) {
            return Ok(());
        }
        let issue_dir = self.dir.join(stored.issue_id.as_str());
        let name = OsString::from(format!("{}.json", stored.agent_type.as_str()));
        match stored.previous {
            Some((bytes, indexed)) => {
                paths::write_atomic(&issue_dir, &name, &bytes, 0o600)
                    .map_err(|e| StoreError::io(&stored.path, e))?;
                self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                let mut map = entry.write().expect("results lock");
                match indexed {
                    Some(json) => map.insert(stored.agent_type.clone(), json),
                    None => map.remove(&stored.agent_type),
                };
            }
            None => {
                std::fs::remove_file(&stored.path)
                    .and_then(|()| paths::sync_dir(&issue_dir))
                    .map_err(|e| StoreError::io(&stored.path, e))?;
                self.files.fetch_sub(1, Ordering::Relaxed);
                entry
                    .write()
                    .expect("results lock")
                    .remove(&stored.agent_type);
            }
        }
        self.bytes
            .fetch_sub(stored.json.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The index entry of an issue, loading it from disk on first use (blocking).
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

    fn load_issue(&self, issue: &IssueId) -> IssueResults {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(self.dir.join(issue.as_str())) else {
            return out;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if !is_result_file(&name) {
                continue;
            }
            let Some(agent_type) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| AgentType::parse(n).ok())
            else {
                continue;
            };
            match std::fs::read_to_string(e.path()) {
                Ok(text) if serde_json::from_str::<StoredResult>(&text).is_ok() => {
                    out.insert(agent_type, Arc::from(text));
                }
                Ok(_) => tracing::warn!(path = %e.path().display(), "skipping a malformed result"),
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot read a result")
                }
            }
        }
        out
    }

    /// The issue's results as JSON texts (blocking on first use of an issue).
    pub fn list(&self, issue: &IssueId) -> Vec<Arc<str>> {
        self.issue(issue)
            .read()
            .expect("results lock")
            .values()
            .cloned()
            .collect()
    }

    /// The stored result of `agent_type` on `issue`, as JSON (blocking on first use of the issue).
    pub fn get(&self, issue: &IssueId, agent_type: &AgentType) -> Option<Arc<str>> {
        self.issue(issue)
            .read()
            .expect("results lock")
            .get(agent_type)
            .cloned()
    }

    /// Whether `list` would answer from memory.
    pub fn is_loaded(&self, issue: &IssueId) -> bool {
        self.index.read().expect("index lock").contains_key(issue)
    }
}

/// `<agent_type>.json`, not one of `write_atomic`'s hidden temp files.
fn is_result_file(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AgentId;

    fn result(issue: &str, t: &str) -> StoredResult {
        StoredResult {
            agent_id: AgentId::parse("a-1").unwrap(),
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
        let p = s.store(&result("issue-1", "rust-specialist")).unwrap().path;
        assert!(p.ends_with("results/issue-1/rust-specialist.json"));
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
        let path = fresh.path.clone();
        s.undo(fresh).unwrap();
        assert!(!path.exists());
        assert!(s.list(&issue).is_empty());
        assert_eq!((s.files(), s.bytes()), (0, 0));

        s.store(&first).unwrap();
        let (files, bytes) = (s.files(), s.bytes());
        let replacing = s.store(&second).unwrap();
        s.undo(replacing).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("first"));
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
    fn disk_full_is_named() {
        let e = StoreError::io(Path::new("/x"), io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, StoreError::DiskFull(_)));
        let e = StoreError::io(Path::new("/x"), io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(e, StoreError::Io { .. }));
    }
}
