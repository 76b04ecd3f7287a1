//! The context broker: what one agent type needs to know about a project — its structure
//! (.gitignore respected, secrets never: see `secrets`), the files its roster globs select,
//! git state and metadata — within a byte budget, cached until the tree or HEAD changes.
//!
//! A project is scanned (walk + git) once however many requests and agent types ask at once
//! (single flight per project); scans run on a few permits with deadlines, so a hostile or
//! huge tree delays only its own context, which then answers degraded, never other routes.

mod git;
mod project;
mod walk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ignore::overrides::OverrideBuilder;
use tokio::sync::Semaphore;

use crate::api::AgentType;
use crate::api::sidecar::{FileContent, GitState, ProjectContext, ProjectMetadata};
use crate::roster::Roster;
use crate::secrets::{WITHHELD, looks_secret};

pub use project::{PROJECT_MARKERS, ProjectRefused, check_project};

/// Globs for agent types the roster does not know: the files that describe any project.
pub const DEFAULT_PATTERNS: &[&str] = &[
    "README*",
    "ARCHITECTURE*",
    "DESIGN*",
    "CONTRIBUTING*",
    "Cargo.toml",
    "package.json",
    "pyproject.toml",
    "go.mod",
    "Makefile",
    "docs/*.md",
];
/// No single file takes more than this share of the budget.
const MAX_FILE_SHARE: usize = 4;
/// The project part gets this share (in quarters) of the budget; results get the rest.
const PROJECT_QUARTERS: usize = 3;
/// Projects kept in the cache (each holds its scan: up to 20,000 paths); past this, one is
/// dropped — a miss only costs a rescan.
const MAX_CACHE_ENTRIES: usize = 16;
/// Agent-type views kept per project (agent types are caller-chosen names; each view is at
/// most the budget): with the above, at most 256 views, as many as the cache ever held.
const MAX_VIEWS: usize = 16;
/// Context work (scans, checks, file reads) running at once: far below tokio's blocking
/// pool (512 threads), so results, events and health always find a thread.
pub const MAX_CONCURRENT_BUILDS: usize = 4;
/// How long a request waits for its project's context before answering without it: below
/// the hooks' default `timeout_ms` (2 s), so a SubagentStart hook still gets the issue's
/// results while a slow scan finishes for the agents after it.
pub const CONTEXT_WAIT: Duration = Duration::from_millis(1500);
/// Time for walking one project tree; past it the tree is listed partially.
const WALK_BUDGET: Duration = Duration::from_secs(3);
/// Time for all git runs of one scan; a git still running then is killed.
const GIT_BUDGET: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("project directory {0} does not exist or is not a directory")]
    NoProject(PathBuf),
    /// The project's context was not ready within [`CONTEXT_WAIT`]; answer without it.
    #[error("the context of {0} is still being built")]
    Busy(PathBuf),
    #[error("context build failed: {0}")]
    Failed(String),
}

/// What a cached entry depended on; any change means rebuild.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Option<(SystemTime, u64)>)>);

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

impl Fingerprint {
    fn of(paths: Vec<PathBuf>) -> Fingerprint {
        Fingerprint(paths.into_iter().map(|p| (p.clone(), stamp(&p))).collect())
    }
    fn still_valid(&self) -> bool {
        self.0.iter().all(|(p, s)| stamp(p) == *s)
    }
}

/// One scan of a project, shared by every agent type's view of it.
#[derive(Debug)]
struct Scan {
    tree: walk::Tree,
    git: Option<GitState>,
    /// The directories walked and git's HEAD, index and refs.
    fingerprint: Fingerprint,
}

/// A built project context for one agent type, serialized once.
#[derive(Debug)]
pub struct Built {
    pub json: String,
    /// The project part was cut to fit the budget.
    pub truncated: bool,
    /// The scan this view was cut from.
    scan: Arc<Scan>,
    /// The relevant files it read.
    fingerprint: Fingerprint,
}

/// One project's cache entry.
#[derive(Debug, Default)]
struct Slot {
    /// Held (async) for any work on this project: concurrent requests wait for one scan.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// The scan, and when a check that found it current began.
    scan: Mutex<Option<(Arc<Scan>, Instant)>>,
    /// Each agent type's view, and when a check that found it current began.
    views: Mutex<HashMap<AgentType, (Arc<Built>, Instant)>>,
}

impl Slot {
    /// The view for `agent_type` if a check that began after `arrived` found it current:
    /// requests queued behind one check need not repeat it (a burst of 200 warm requests
    /// is one round of `stat`s, not 200 in a row).
    fn confirmed(&self, agent_type: &AgentType, arrived: Instant) -> Option<Arc<Built>> {
        let scan = self.scan.lock().expect("scan lock");
        let (s, at) = scan.as_ref()?;
        if *at < arrived {
            return None;
        }
        let views = self.views.lock().expect("views lock");
        let (v, vat) = views.get(agent_type)?;
        (Arc::ptr_eq(&v.scan, s) && *vat >= arrived).then(|| v.clone())
    }

    /// The view for `agent_type` if it and its scan are still current (blocking: `stat`s
    /// only, no reads, so it needs neither the gate nor a build permit).
    fn current(&self, agent_type: &AgentType) -> Option<Arc<Built>> {
        let check = Instant::now();
        let scan = self.scan.lock().expect("scan lock").as_ref()?.0.clone();
        let view = self
            .views
            .lock()
            .expect("views lock")
            .get(agent_type)?
            .0
            .clone();
        if !Arc::ptr_eq(&view.scan, &scan)
            || !scan.fingerprint.still_valid()
            || !view.fingerprint.still_valid()
        {
            return None;
        }
        if let Some((s, at)) = self.scan.lock().expect("scan lock").as_mut()
            && Arc::ptr_eq(s, &scan)
        {
            *at = (*at).max(check);
        }
        Some(view)
    }
}

#[derive(Debug)]
struct Shared {
    roster: Roster,
    budget: usize,
    slots: Mutex<HashMap<PathBuf, Arc<Slot>>>,
    permits: Arc<Semaphore>,
    /// [`CONTEXT_WAIT`], longer in unit tests that must not depend on the machine's speed.
    wait: Duration,
    /// Scans run so far (tests count them; `/status` could).
    scans: AtomicU64,
}

#[derive(Debug)]
pub struct ContextBroker {
    shared: Arc<Shared>,
}

impl ContextBroker {
    pub fn new(roster: Roster, budget: usize) -> ContextBroker {
        ContextBroker {
            shared: Arc::new(Shared {
                roster,
                budget,
                slots: Mutex::new(HashMap::new()),
                permits: Arc::new(Semaphore::new(MAX_CONCURRENT_BUILDS)),
                wait: CONTEXT_WAIT,
                scans: AtomicU64::new(0),
            }),
        }
    }

    #[cfg(test)]
    fn patient(roster: Roster, budget: usize) -> ContextBroker {
        let mut b = ContextBroker::new(roster, budget);
        Arc::get_mut(&mut b.shared).expect("new broker").wait = Duration::from_secs(600);
        b
    }

    pub fn budget(&self) -> usize {
        self.shared.budget
    }

    /// Agent-type views cached, over all projects.
    pub fn cache_entries(&self) -> usize {
        let slots: Vec<_> = self
            .shared
            .slots
            .lock()
            .expect("cache lock")
            .values()
            .cloned()
            .collect();
        slots
            .iter()
            .map(|s| s.views.lock().expect("views lock").len())
            .sum()
    }

    /// Project scans run since start.
    pub fn scans(&self) -> u64 {
        self.shared.scans.load(Ordering::Relaxed)
    }

    pub fn patterns(&self, agent_type: &AgentType) -> Vec<String> {
        self.shared.patterns(agent_type)
    }

    /// The project part of the context for `agent_type` in `root`. Concurrent callers for
    /// the same project wait for one scan; a caller waiting longer than [`CONTEXT_WAIT`]
    /// gets [`ContextError::Busy`] while the scan finishes for later requests.
    pub async fn project(
        &self,
        root: PathBuf,
        agent_type: AgentType,
    ) -> Result<Arc<Built>, ContextError> {
        let arrived = Instant::now();
        let deadline = tokio::time::Instant::now() + self.shared.wait;
        let busy = || ContextError::Busy(root.clone());
        let slot = self.shared.slot(&root);
        // Warm path: concurrent requests check in parallel; only a stale or missing view
        // queues for the gate.
        let warm = {
            let (slot, t) = (slot.clone(), agent_type.clone());
            tokio::task::spawn_blocking(move || slot.current(&t))
        };
        if let Ok(Ok(Some(built))) = tokio::time::timeout_at(deadline, warm).await {
            return Ok(built);
        }
        let gate = tokio::time::timeout_at(deadline, slot.gate.clone().lock_owned())
            .await
            .map_err(|_| busy())?;
        if let Some(built) = slot.confirmed(&agent_type, arrived) {
            return Ok(built);
        }
        let permit = tokio::time::timeout_at(deadline, self.shared.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let shared = self.shared.clone();
        let r = root.clone();
        // The gate and the permit go with the work: a request that stops waiting leaves the
        // scan running to completion, and nobody starts a second one meanwhile.
        let task = tokio::task::spawn_blocking(move || {
            let _held = (gate, permit);
            shared.view(&slot, &r, &agent_type, arrived)
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(built)) => built,
            Ok(Err(e)) => Err(ContextError::Failed(e.to_string())),
            Err(_) => Err(busy()),
        }
    }

    /// The project part to send when the real one is not ready: shaped like it, empty,
    /// marked truncated.
    pub fn degraded(&self, root: &Path, agent_type: &AgentType) -> String {
        let project = ProjectContext {
            root: root.display().to_string(),
            name: project_name(root),
            patterns: self.patterns(agent_type),
            structure: Vec::new(),
            relevant_files: Vec::new(),
            git: None,
            metadata: ProjectMetadata::default(),
            truncated: true,
        };
        serde_json::to_string(&project).expect("context serializes")
    }
}

fn project_name(root: &Path) -> String {
    root.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

impl Shared {
    fn patterns(&self, agent_type: &AgentType) -> Vec<String> {
        match self.roster.get(agent_type.as_str()) {
            Some(a) if !a.context.is_empty() => a.context.clone(),
            _ => DEFAULT_PATTERNS.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn slot(&self, root: &Path) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("cache lock");
        if !slots.contains_key(root) && slots.len() >= MAX_CACHE_ENTRIES {
            // Bounded memory: drop an arbitrary project; a miss only costs a rebuild.
            if let Some(k) = slots.keys().next().cloned() {
                slots.remove(&k);
            }
        }
        slots.entry(root.to_owned()).or_default().clone()
    }

    /// The view for `agent_type` (blocking; the caller holds the slot's gate): the cached
    /// one while nothing it read changed (checked since the request `arrived`), else cut
    /// from a fresh or still-valid scan.
    fn view(
        &self,
        slot: &Slot,
        root: &Path,
        agent_type: &AgentType,
        arrived: Instant,
    ) -> Result<Arc<Built>, ContextError> {
        if !root.is_dir() {
            return Err(ContextError::NoProject(root.to_owned()));
        }
        let check = Instant::now();
        let cached = slot.scan.lock().expect("scan lock").clone();
        let scan = match cached {
            Some((s, at)) if at >= arrived => s,
            Some((s, _)) if s.fingerprint.still_valid() => {
                *slot.scan.lock().expect("scan lock") = Some((s.clone(), check));
                s
            }
            _ => {
                let started = Instant::now();
                let s = Arc::new(scan(root));
                self.scans.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(root = %root.display(), ms = started.elapsed().as_millis() as u64, "project scanned");
                *slot.scan.lock().expect("scan lock") = Some((s.clone(), check));
                s
            }
        };
        let mut views = slot.views.lock().expect("views lock");
        if let Some((v, at)) = views.get_mut(agent_type)
            && Arc::ptr_eq(&v.scan, &scan)
        {
            if *at >= arrived {
                return Ok(v.clone());
            }
            if v.fingerprint.still_valid() {
                *at = check;
                return Ok(v.clone());
            }
        }
        let built = Arc::new(self.cut(root, agent_type, scan));
        if views.len() >= MAX_VIEWS {
            views.retain(|_, (v, _)| Arc::ptr_eq(&v.scan, &built.scan));
            if views.len() >= MAX_VIEWS {
                views.clear();
            }
        }
        views.insert(agent_type.clone(), (built.clone(), check));
        Ok(built)
    }

    /// Cuts `agent_type`'s view from a scan: the structure, then its relevant files,
    /// shallowest first, until the budget is spent.
    fn cut(&self, root: &Path, agent_type: &AgentType, scan: Arc<Scan>) -> Built {
        let patterns = self.patterns(agent_type);
        let budget = self.budget * PROJECT_QUARTERS / 4;
        let mut truncated = scan.tree.truncated;
        let files = &scan.tree.files;

        // Structure: at most a quarter of the project budget.
        let mut structure = Vec::new();
        let mut used = 0;
        for (path, _) in files {
            if used + path.len() + 3 > budget / 4 {
                truncated = true;
                break;
            }
            used += path.len() + 3;
            structure.push(path.clone());
        }

        let mut ob = OverrideBuilder::new(root);
        for p in &patterns {
            if let Err(e) = ob.add(p) {
                tracing::warn!(pattern = %p, error = %e, "bad context glob in the roster");
            }
        }
        let overrides = ob
            .build()
            .unwrap_or_else(|_| ignore::overrides::Override::empty());
        let mut relevant: Vec<&(String, u64)> = files
            .iter()
            .filter(|(p, _)| overrides.matched(p, false).is_whitelist())
            .collect();
        relevant.sort_by_key(|(p, size)| (p.matches('/').count(), *size, p.clone()));
        let fixed = serde_json::to_string(&scan.git).map_or(0, |s| s.len()) + 512;
        let mut remaining = budget.saturating_sub(used + fixed);
        let per_file = self.budget / MAX_FILE_SHARE;
        let mut relevant_files = Vec::new();
        let mut read = Vec::new();
        for (path, size) in relevant {
            if remaining < 256 {
                truncated = true;
                break;
            }
            let full = root.join(path);
            let Some(text) = walk::read_text(&full, per_file.min(remaining)) else {
                continue;
            };
            // Named like a source file, shaped like a credential: say so, send nothing.
            let fc = if looks_secret(path, &text) {
                FileContent {
                    path: path.clone(),
                    size: *size,
                    content: String::new(),
                    truncated: false,
                    withheld: Some(WITHHELD.into()),
                }
            } else {
                FileContent {
                    path: path.clone(),
                    size: *size,
                    truncated: (text.len() as u64) < *size,
                    content: text,
                    withheld: None,
                }
            };
            let cut = fc.truncated;
            let cost = serde_json::to_string(&fc).map_or(0, |s| s.len()) + 1;
            if cost > remaining {
                truncated = true;
                continue;
            }
            remaining -= cost;
            truncated |= cut;
            read.push(full);
            relevant_files.push(fc);
        }

        let project = ProjectContext {
            root: root.display().to_string(),
            name: project_name(root),
            patterns,
            structure,
            relevant_files,
            git: scan.git.clone(),
            metadata: scan.tree.metadata.clone(),
            truncated,
        };
        Built {
            json: serde_json::to_string(&project).expect("context serializes"),
            truncated,
            scan,
            fingerprint: Fingerprint::of(read),
        }
    }
}

/// Walks the tree and reads git state, each within its time budget.
fn scan(root: &Path) -> Scan {
    let tree = walk::walk(root, Instant::now() + WALK_BUDGET);
    let mut probes = tree.dirs.clone();
    // Git state, and the files whose change means a new HEAD or index.
    let git = git::git_dir(root).map(|gd| {
        for f in ["HEAD", "index", "packed-refs"] {
            probes.push(gd.join(f));
        }
        let state = git::git_state(root, Instant::now() + GIT_BUDGET);
        if let Some(b) = &state.branch {
            probes.push(gd.join("refs/heads").join(b));
        }
        state
    });
    Scan {
        tree,
        git,
        fingerprint: Fingerprint::of(probes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::is_secret_path;

    fn roster() -> Roster {
        Roster::builtin().unwrap()
    }

    /// One request, on a runtime of its own (the broker's entry point is async).
    fn get(b: &ContextBroker, root: &Path, t: &AgentType) -> Arc<Built> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(b.project(root.to_owned(), t.clone()))
            .unwrap()
    }

    fn project() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::create_dir_all(p.join("target")).unwrap();
        std::fs::write(p.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
        std::fs::write(p.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(p.join("target/junk.rs"), "ignored").unwrap();
        std::fs::write(p.join(".gitignore"), "target/\n").unwrap();
        std::fs::write(p.join(".env"), "API_KEY=hunter2").unwrap();
        std::fs::write(p.join(".env.local"), "API_KEY=hunter2").unwrap();
        std::fs::write(p.join("server.pem"), "-----BEGIN PRIVATE KEY-----").unwrap();
        std::fs::write(p.join("id_rsa"), "-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();
        std::fs::write(p.join("credentials.json"), "{\"secret\":\"hunter2\"}").unwrap();
        d
    }

    #[test]
    fn respects_gitignore_and_never_reads_secrets() {
        let d = project();
        let b = ContextBroker::patient(roster(), 64 * 1024);
        let t = AgentType::parse("rust-specialist").unwrap();
        let built = get(&b, d.path(), &t);
        assert!(!built.json.contains("hunter2"), "{}", built.json);
        assert!(!built.json.contains("PRIVATE KEY"));
        let p: ProjectContext = serde_json::from_str(&built.json).unwrap();
        assert!(p.structure.contains(&"src/main.rs".to_string()));
        assert!(!p.structure.iter().any(|f| f.starts_with("target/")));
        assert!(
            !p.structure
                .iter()
                .any(|f| f.contains(".env") || f.ends_with(".pem") || f == "id_rsa")
        );
        let rel: Vec<_> = p.relevant_files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(rel, vec!["Cargo.toml", "src/main.rs"]);
        assert_eq!(p.metadata.languages.get("rust"), Some(&1));
    }

    /// The reviewer's leaks: every file below carries a marker that must never be served.
    #[test]
    fn secrets_by_name_and_by_content_are_never_served() {
        let d = project();
        let p = d.path();
        for dir in ["k8s", "deploy", ".kube", ".aws"] {
            std::fs::create_dir_all(p.join(dir)).unwrap();
        }
        let files = [
            ("prod.tfvars", "db_pass = \"LEAK1\""),
            ("terraform.tfstate", "LEAK1"),
            ("k8s/secret.yaml", "data: LEAK1"),
            ("gcp-sa-key.json", "{\"k\": \"LEAK1\"}"),
            ("token.json", "{\"t\": \"LEAK1\"}"),
            (".envrc", "export K=LEAK1"),
            ("prod.env.bak", "K=LEAK1"),
            (".kube/config", "LEAK1"),
            (".aws/credentials", "LEAK1"),
            (".dev.vars", "LEAK1"),
            // Innocent names, credential contents.
            ("config.yml", "db:\n  password: LEAK1\n"),
            ("deploy/app.yaml", "key: AKIAIOSFODNN7EXAMPLE # LEAK1"),
            (
                "auth_helper.py",
                "T = 'ghp_abcdefghijklmnopqrstuvwxyz0123' # LEAK1",
            ),
            ("session.json", "{\"private_key\": \"LEAK1\"}"),
            // Issue 15: more credentials in innocently named files.
            ("db.py", "DSN = 'postgres://app:LEAK1pw@db.internal/prod'"),
            ("main.tf", "password = \"LEAK1\""),
            ("settings.xml", "<password>LEAK1</password>"),
            ("app.conf", "passwd = LEAK1"),
            (
                "docker-config.json",
                "{\"auths\": {\"r\": {\"auth\": \"TEVBSzE6eA==\"}}} LEAK1",
            ),
        ];
        for (f, c) in files {
            std::fs::write(p.join(f), c).unwrap();
        }
        let b = ContextBroker::patient(roster(), 256 * 1024);
        for t in [
            "cloud-architect",
            "gcp-specialist",
            "sre",
            "auth-specialist",
            "secrets-scanner",
            "rust-specialist",
        ] {
            let built = get(&b, p, &AgentType::parse(t).unwrap());
            assert!(!built.json.contains("LEAK1"), "{t}: {}", built.json);
            assert!(!built.json.contains("AKIA"), "{t}");
            let ctx: ProjectContext = serde_json::from_str(&built.json).unwrap();
            for f in &ctx.structure {
                assert!(!is_secret_path(f), "{t} lists {f}");
            }
            for f in [
                "config.yml",
                "deploy/app.yaml",
                "auth_helper.py",
                "session.json",
            ] {
                if let Some(fc) = ctx.relevant_files.iter().find(|fc| fc.path == f) {
                    assert_eq!(fc.withheld.as_deref(), Some(WITHHELD), "{t}: {f}");
                    assert!(fc.content.is_empty());
                }
            }
        }
        // Issue 15: the innocently named ones are selected, and withheld.
        for (t, f) in [("gcp-specialist", "main.tf"), ("data-scientist", "db.py")] {
            let built = get(&b, p, &AgentType::parse(t).unwrap());
            let ctx: ProjectContext = serde_json::from_str(&built.json).unwrap();
            let fc = ctx.relevant_files.iter().find(|fc| fc.path == f);
            assert_eq!(
                fc.and_then(|fc| fc.withheld.as_deref()),
                Some(WITHHELD),
                "{t}: {f}: {}",
                built.json
            );
        }
        // The sre's `**/*config*` does select config.yml: it is listed as withheld.
        let built = get(&b, p, &AgentType::parse("sre").unwrap());
        let ctx: ProjectContext = serde_json::from_str(&built.json).unwrap();
        assert!(
            ctx.relevant_files
                .iter()
                .any(|f| f.path == "config.yml" && f.withheld.is_some()),
            "{}",
            built.json
        );
    }

    #[test]
    fn cache_hits_until_the_tree_changes() {
        let d = project();
        let b = ContextBroker::patient(roster(), 64 * 1024);
        let t = AgentType::parse("rust-specialist").unwrap();
        let a1 = get(&b, d.path(), &t);
        let a2 = get(&b, d.path(), &t);
        assert!(Arc::ptr_eq(&a1, &a2), "warm request rebuilt");
        std::fs::write(d.path().join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        let a3 = get(&b, d.path(), &t);
        assert!(!Arc::ptr_eq(&a1, &a3), "new file not noticed");
        assert!(a3.json.contains("src/lib.rs"));
        // A content change to a relevant file is noticed too (size differs).
        std::fs::write(d.path().join("src/main.rs"), "fn main() { println!(); }\n").unwrap();
        let a4 = get(&b, d.path(), &t);
        assert!(a4.json.contains("println"));
        assert_eq!(b.cache_entries(), 1);
    }

    #[test]
    fn budget_cuts_and_says_so() {
        let d = project();
        let big = "x".repeat(50_000);
        std::fs::write(d.path().join("src/big.rs"), &big).unwrap();
        let b = ContextBroker::patient(roster(), 8 * 1024);
        let t = AgentType::parse("rust-specialist").unwrap();
        let built = get(&b, d.path(), &t);
        assert!(built.json.len() <= 8 * 1024, "{}", built.json.len());
        let p: ProjectContext = serde_json::from_str(&built.json).unwrap();
        assert!(p.truncated);
    }

    #[test]
    fn unknown_types_get_default_patterns() {
        let b = ContextBroker::patient(roster(), 1024);
        let t = AgentType::parse("no-such-agent").unwrap();
        assert!(b.patterns(&t).contains(&"README*".to_string()));
    }

    /// Issue 16: 200 agents starting at once on one project each started their own walk.
    /// Concurrent requests, of any agent types, share one scan and all get the context.
    #[test]
    fn concurrent_requests_share_one_scan() {
        let d = project();
        let b = Arc::new(ContextBroker::patient(roster(), 64 * 1024));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let types = ["rust-specialist", "sre", "no-such-agent", "test-engineer"];
        let answers = rt.block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|i| {
                    let (b, root) = (b.clone(), d.path().to_owned());
                    let t = AgentType::parse(types[i % types.len()]).unwrap();
                    tokio::spawn(async move { b.project(root, t).await })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap().unwrap());
            }
            out
        });
        assert_eq!(b.scans(), 1, "one project, one scan");
        for a in &answers {
            assert!(a.json.contains("src/main.rs"), "{}", a.json);
        }
        assert_eq!(b.cache_entries(), types.len());
    }

    /// Issue 16: a request that cannot get its turn in [`CONTEXT_WAIT`] (every build permit
    /// taken by slow projects, or its own project's scan running) answers `Busy` at once
    /// instead of queueing a blocking thread behind them.
    #[tokio::test(start_paused = true)]
    async fn a_request_that_waits_too_long_is_busy() {
        let d = project();
        let b = ContextBroker::new(roster(), 64 * 1024);
        let t = AgentType::parse("rust-specialist").unwrap();
        let all = b
            .shared
            .permits
            .clone()
            .acquire_many_owned(MAX_CONCURRENT_BUILDS as u32)
            .await
            .unwrap();
        let r = b.project(d.path().to_owned(), t.clone()).await;
        assert!(matches!(r, Err(ContextError::Busy(_))), "{r:?}");
        drop(all);
        let gate = b.shared.slot(d.path()).gate.clone().lock_owned().await;
        let r = b.project(d.path().to_owned(), t.clone()).await;
        assert!(matches!(r, Err(ContextError::Busy(_))), "{r:?}");
        drop(gate);
        assert!(b.project(d.path().to_owned(), t).await.is_ok());
        assert_eq!(b.scans(), 1);
    }

    /// Issue 16: hostile special files anywhere in a project — `.git` a FIFO or a link to
    /// `/dev/zero`, FIFOs and device links among the sources — give a context, not a hang.
    #[test]
    fn hostile_projects_get_a_context() {
        let b = ContextBroker::patient(roster(), 64 * 1024);
        let t = AgentType::parse("rust-specialist").unwrap();
        for hostile in ["fifo", "zero"] {
            let d = project();
            let p = d.path();
            match hostile {
                "fifo" => git::tests::mkfifo(&p.join(".git")),
                _ => std::os::unix::fs::symlink("/dev/zero", p.join(".git")).unwrap(),
            }
            git::tests::mkfifo(&p.join("src/pipe.rs"));
            std::os::unix::fs::symlink("/dev/zero", p.join("src/zero.rs")).unwrap();
            std::os::unix::fs::symlink("/dev/zero", p.join("README.md")).unwrap();
            let built = get(&b, p, &t);
            let ctx: ProjectContext = serde_json::from_str(&built.json).unwrap();
            assert_eq!(ctx.git, None, "{hostile}");
            assert!(ctx.structure.contains(&"src/main.rs".to_string()));
            for f in ["src/pipe.rs", "src/zero.rs", "README.md"] {
                assert!(!built.json.contains(f), "{hostile}: {f} served");
            }
        }
    }
}
