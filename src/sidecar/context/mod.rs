//! The context broker: what one agent type needs to know about a project — its structure
//! (.gitignore respected, secrets never: see `secrets`), the files its roster globs select,
//! git state and metadata — within a byte budget, cached until the tree or HEAD changes.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ignore::overrides::OverrideBuilder;

use crate::api::AgentType;
use crate::api::sidecar::{Commit, FileContent, GitState, ProjectContext, ProjectMetadata};
use crate::roster::Roster;
use crate::secrets::{WITHHELD, is_secret_name, is_secret_path, looks_secret};

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
/// Walks stop here; bigger trees are listed partially (`truncated`).
const MAX_FILES: usize = 20_000;
/// No single file takes more than this share of the budget.
const MAX_FILE_SHARE: usize = 4;
/// The project part gets this share (in quarters) of the budget; results get the rest.
const PROJECT_QUARTERS: usize = 3;
const RECENT_COMMITS: usize = 10;
const MAX_CACHE_ENTRIES: usize = 256;
/// Bytes read to decide whether a file is text.
const SNIFF: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("project directory {0} does not exist or is not a directory")]
    NoProject(PathBuf),
}

/// Why a directory may not be read as a project (the answer is 403 `out_of_scope`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProjectRefused {
    #[error(
        "{0} is the filesystem root or a system directory, not a project; pass the project's own directory"
    )]
    System(PathBuf),
    #[error(
        "{0} is your home directory or contains it, not a project; run cco from (or pass ?project=) the project's own directory"
    )]
    Home(PathBuf),
    #[error("{0} is inside a credentials directory; pass the project's own directory")]
    Secret(PathBuf),
    #[error(
        "{0} is neither a git work tree nor holds a project file (Cargo.toml, package.json, …); pass the project's root, or bind the token to it with `cco token --project DIR`"
    )]
    NotAProject(PathBuf),
}

/// Never a project, nor anything below them.
const SYSTEM_TREES: &[&str] = &[
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/private/etc",
    "/System",
];
/// Never a project themselves (projects may live below some of them).
const SYSTEM_DIRS: &[&str] = &[
    "/", "/usr", "/var", "/bin", "/sbin", "/lib", "/lib64", "/run", "/opt", "/srv", "/tmp",
    "/home", "/Users", "/private", "/Library",
];
/// Files that make a directory a project for tokens not bound to one.
pub const PROJECT_MARKERS: &[&str] = &[
    ".git",
    "Cargo.toml",
    "package.json",
    "pyproject.toml",
    "setup.py",
    "go.mod",
    "Makefile",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "Gemfile",
    "composer.json",
    "CMakeLists.txt",
    "mix.exs",
    "deno.json",
];

/// Whether the canonical directory `root` may be walked as a project. `home` is the
/// (canonical) home directory; `unbound` tokens (no `project` claim) must also name a real
/// project: a git work tree or a directory with a project file, never an ancestor of home.
pub fn check_project(
    root: &Path,
    home: Option<&Path>,
    unbound: bool,
) -> Result<(), ProjectRefused> {
    if SYSTEM_DIRS.iter().any(|d| root == Path::new(d))
        || SYSTEM_TREES.iter().any(|d| root.starts_with(d))
    {
        return Err(ProjectRefused::System(root.to_owned()));
    }
    if let Some(home) = home
        && (root == home || (unbound && home.starts_with(root)))
    {
        return Err(ProjectRefused::Home(root.to_owned()));
    }
    let in_credentials = root.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|n| n.starts_with('.') && is_secret_name(n))
    });
    if in_credentials {
        return Err(ProjectRefused::Secret(root.to_owned()));
    }
    if unbound && !PROJECT_MARKERS.iter().any(|m| root.join(m).exists()) {
        return Err(ProjectRefused::NotAProject(root.to_owned()));
    }
    Ok(())
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

/// A built project context, serialized once.
#[derive(Debug)]
pub struct Built {
    pub json: String,
    /// The project part was cut to fit the budget.
    pub truncated: bool,
    fingerprint: Fingerprint,
}

type Slot = Arc<Mutex<Option<Arc<Built>>>>;

#[derive(Debug)]
pub struct ContextBroker {
    roster: Roster,
    budget: usize,
    cache: Mutex<HashMap<(PathBuf, AgentType), Slot>>,
}

impl ContextBroker {
    pub fn new(roster: Roster, budget: usize) -> ContextBroker {
        ContextBroker {
            roster,
            budget,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn cache_entries(&self) -> usize {
        self.cache.lock().expect("cache lock").len()
    }

    pub fn patterns(&self, agent_type: &AgentType) -> Vec<String> {
        match self.roster.get(agent_type.as_str()) {
            Some(a) if !a.context.is_empty() => a.context.clone(),
            _ => DEFAULT_PATTERNS.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The project part of the context for `agent_type` in `root` (blocking). Concurrent
    /// callers for the same key wait for one build.
    pub fn project(&self, root: &Path, agent_type: &AgentType) -> Result<Arc<Built>, ContextError> {
        let slot = {
            let mut cache = self.cache.lock().expect("cache lock");
            let key = (root.to_owned(), agent_type.clone());
            if !cache.contains_key(&key) && cache.len() >= MAX_CACHE_ENTRIES {
                // Bounded memory: drop an arbitrary entry; a miss only costs a rebuild.
                if let Some(k) = cache.keys().next().cloned() {
                    cache.remove(&k);
                }
            }
            cache.entry(key).or_default().clone()
        };
        let mut entry = slot.lock().expect("slot lock");
        if let Some(b) = entry.as_ref()
            && b.fingerprint.still_valid()
        {
            return Ok(b.clone());
        }
        let started = std::time::Instant::now();
        let built = Arc::new(self.build(root, agent_type)?);
        tracing::debug!(root = %root.display(), %agent_type, ms = started.elapsed().as_millis() as u64, "context built");
        *entry = Some(built.clone());
        Ok(built)
    }

    fn build(&self, root: &Path, agent_type: &AgentType) -> Result<Built, ContextError> {
        if !root.is_dir() {
            return Err(ContextError::NoProject(root.to_owned()));
        }
        let patterns = self.patterns(agent_type);
        let budget = self.budget * PROJECT_QUARTERS / 4;
        let mut probes = Vec::new();
        let mut truncated = false;

        // Walk: .gitignore respected, secrets and .git pruned.
        let mut files: Vec<(String, u64)> = Vec::new();
        let mut meta = ProjectMetadata::default();
        let walker = ignore::WalkBuilder::new(root)
            .hidden(false)
            .require_git(false)
            .follow_links(false)
            .filter_entry(|e| {
                // Non-UTF-8 names are pruned too: they could not be matched.
                e.depth() == 0 || e.file_name().to_str().is_some_and(|n| !is_secret_name(n))
            })
            .build();
        for entry in walker.flatten() {
            let Some(ft) = entry.file_type() else {
                continue;
            };
            if ft.is_dir() {
                meta.dir_count += 1;
                probes.push(entry.path().to_owned());
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            if files.len() >= MAX_FILES {
                truncated = true;
                break;
            }
            let Ok(rel) = entry.path().strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rel.to_str() else { continue };
            let size = entry.metadata().map_or(0, |m| m.len());
            meta.file_count += 1;
            meta.total_bytes += size;
            if let Some(lang) = language(rel) {
                *meta.languages.entry(lang.to_string()).or_default() += 1;
            }
            files.push((rel.to_string(), size));
        }
        meta.dir_count = meta.dir_count.saturating_sub(1); // the root itself
        files.sort();

        // Git state, and the files whose change means a new HEAD or index.
        let git_dir = git_dir(root);
        let git = git_dir.as_ref().map(|gd| {
            for f in ["HEAD", "index", "packed-refs"] {
                probes.push(gd.join(f));
            }
            let state = git_state(root);
            if let Some(b) = &state.branch {
                probes.push(gd.join("refs/heads").join(b));
            }
            state
        });

        // Structure: at most a quarter of the project budget.
        let mut structure = Vec::new();
        let mut used = 0;
        for (path, _) in &files {
            if used + path.len() + 3 > budget / 4 {
                truncated = true;
                break;
            }
            used += path.len() + 3;
            structure.push(path.clone());
        }

        // Relevant files, shallowest first, until the budget is spent.
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
        let fixed = serde_json::to_string(&git).map_or(0, |s| s.len()) + 512;
        let mut remaining = budget.saturating_sub(used + fixed);
        let per_file = self.budget / MAX_FILE_SHARE;
        let mut relevant_files = Vec::new();
        for (path, size) in relevant {
            if remaining < 256 {
                truncated = true;
                break;
            }
            let full = root.join(path);
            let Some(text) = read_text(&full, per_file.min(remaining)) else {
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
            probes.push(full);
            relevant_files.push(fc);
        }

        let project = ProjectContext {
            root: root.display().to_string(),
            name: root
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            patterns,
            structure,
            relevant_files,
            git,
            metadata: meta,
            truncated,
        };
        Ok(Built {
            json: serde_json::to_string(&project).expect("context serializes"),
            truncated,
            fingerprint: Fingerprint::of(probes),
        })
    }
}

/// Up to `max` bytes of a text file; `None` for binaries and unreadable files.
fn read_text(path: &Path, max: usize) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(max.min(64 * 1024));
    f.take(max as u64).read_to_end(&mut buf).ok()?;
    if buf[..buf.len().min(SNIFF)].contains(&0) {
        return None;
    }
    // Cut at a character boundary, not mid-UTF-8.
    let s = match String::from_utf8(buf) {
        Ok(s) => s,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let mut b = e.into_bytes();
            b.truncate(valid);
            String::from_utf8(b).ok()?
        }
    };
    Some(s)
}

/// The repository's git dir (`.git`, or where a worktree's `.git` file points).
fn git_dir(root: &Path) -> Option<PathBuf> {
    let dot = root.join(".git");
    let meta = std::fs::symlink_metadata(&dot).ok()?;
    if meta.is_dir() {
        return Some(dot);
    }
    let text = std::fs::read_to_string(&dot).ok()?;
    let p = PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
    Some(if p.is_absolute() { p } else { root.join(p) })
}

/// A repository's own config (`.git/config`, includes) is untrusted input: it can name
/// programs that read-only commands run (`core.fsmonitor`, filter drivers, `gpg.program` via
/// `log.showSignature`, hooks, pagers, external diffs). These overrides win over it.
const GIT_HARDENING: &[&str] = &[
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "log.showSignature=false",
    "-c",
    "core.untrackedCache=false",
    "-c",
    "diff.external=",
    "-c",
    "core.pager=cat",
    "--no-optional-locks",
];

/// Runs `git -C root <hardening> <overrides> args`. The environment carries no `GIT_*` of
/// ours (no inherited `GIT_DIR`, `GIT_CONFIG_PARAMETERS`…), no system config and no prompts.
/// `safe.directory` is left alone on purpose: git refuses a repository another user owns,
/// and such a project simply has no git state.
fn git_with(root: &Path, overrides: &[String], args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("GIT_")) {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("-C")
        .arg(root)
        .args(GIT_HARDENING)
        .args(overrides)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        // `git status` would otherwise refresh the index, invalidating our own cache.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    git_with(root, &[], args)
}

/// `-c` overrides that disable every filter driver the config defines: `git status` runs a
/// file's clean filter to compare it with the index. `None` when a driver's name cannot be
/// overridden safely (it contains `=`), in which case `status` is not run at all.
fn filter_overrides(root: &Path) -> Option<Vec<String>> {
    let keys = git(
        root,
        &[
            "config",
            "--includes",
            "-z",
            "--name-only",
            "--get-regexp",
            r"^filter\.",
        ],
    )
    .unwrap_or_default();
    let mut out = Vec::new();
    for key in keys.split('\0').filter(|k| !k.is_empty()) {
        let value =
            if key.ends_with(".clean") || key.ends_with(".smudge") || key.ends_with(".process") {
                ""
            } else if key.ends_with(".required") {
                "false"
            } else {
                continue;
            };
        if key.contains('=') || key.contains('\n') {
            return None;
        }
        out.push("-c".to_string());
        out.push(format!("{key}={value}"));
    }
    Some(out)
}

fn git_state(root: &Path) -> GitState {
    let branch = git(root, &["symbolic-ref", "--quiet", "--short", "HEAD"])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let head = git(root, &["rev-parse", "--verify", "--quiet", "HEAD"])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let recent_commits = git(
        root,
        &[
            "log",
            &format!("-n{RECENT_COMMITS}"),
            "--format=%H%x1f%an%x1f%aI%x1f%s",
        ],
    )
    .map(|log| {
        log.lines()
            .filter_map(|l| {
                let mut f = l.splitn(4, '\u{1f}');
                Some(Commit {
                    hash: f.next()?.to_string(),
                    author: f.next()?.to_string(),
                    date: f.next()?.to_string(),
                    subject: f.next().unwrap_or("").to_string(),
                })
            })
            .collect()
    })
    .unwrap_or_default();
    let dirty_files = filter_overrides(root)
        .and_then(|o| {
            git_with(
                root,
                &o,
                &["status", "--porcelain=v1", "-z", "--ignore-submodules=all"],
            )
        })
        .map(|s| parse_porcelain(&s))
        .unwrap_or_default();
    GitState {
        branch,
        head,
        recent_commits,
        dirty_files,
    }
}

/// `XY path\0` entries; renames carry their old path as an extra entry, skipped.
fn parse_porcelain(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut parts = s.split('\0');
    while let Some(entry) = parts.next() {
        if entry.len() < 4 {
            continue;
        }
        let (xy, path) = entry.split_at(3);
        if xy.starts_with('R') || xy.starts_with('C') {
            parts.next();
        }
        if !is_secret_path(path) {
            out.push(path.to_string());
        }
    }
    out
}

fn language(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    let lang: BTreeMap<&str, &str> = [
        ("rs", "rust"),
        ("py", "python"),
        ("go", "go"),
        ("ts", "typescript"),
        ("tsx", "typescript"),
        ("js", "javascript"),
        ("jsx", "javascript"),
        ("java", "java"),
        ("kt", "kotlin"),
        ("c", "c"),
        ("h", "c"),
        ("cc", "cpp"),
        ("cpp", "cpp"),
        ("hpp", "cpp"),
        ("rb", "ruby"),
        ("sh", "shell"),
        ("md", "markdown"),
        ("toml", "toml"),
        ("yml", "yaml"),
        ("yaml", "yaml"),
        ("json", "json"),
        ("swift", "swift"),
        ("cs", "csharp"),
        ("php", "php"),
        ("sql", "sql"),
        ("html", "html"),
        ("css", "css"),
    ]
    .into_iter()
    .collect();
    lang.get(ext.as_str()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roster() -> Roster {
        Roster::builtin().unwrap()
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
        let b = ContextBroker::new(roster(), 64 * 1024);
        let t = AgentType::parse("rust-specialist").unwrap();
        let built = b.project(d.path(), &t).unwrap();
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
        ];
        for (f, c) in files {
            std::fs::write(p.join(f), c).unwrap();
        }
        let b = ContextBroker::new(roster(), 256 * 1024);
        for t in [
            "cloud-architect",
            "gcp-specialist",
            "sre",
            "auth-specialist",
            "secrets-scanner",
            "rust-specialist",
        ] {
            let built = b.project(p, &AgentType::parse(t).unwrap()).unwrap();
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
        // The sre's `**/*config*` does select config.yml: it is listed as withheld.
        let built = b.project(p, &AgentType::parse("sre").unwrap()).unwrap();
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
        let b = ContextBroker::new(roster(), 64 * 1024);
        let t = AgentType::parse("rust-specialist").unwrap();
        let a1 = b.project(d.path(), &t).unwrap();
        let a2 = b.project(d.path(), &t).unwrap();
        assert!(Arc::ptr_eq(&a1, &a2), "warm request rebuilt");
        std::fs::write(d.path().join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        let a3 = b.project(d.path(), &t).unwrap();
        assert!(!Arc::ptr_eq(&a1, &a3), "new file not noticed");
        assert!(a3.json.contains("src/lib.rs"));
        // A content change to a relevant file is noticed too (size differs).
        std::fs::write(d.path().join("src/main.rs"), "fn main() { println!(); }\n").unwrap();
        let a4 = b.project(d.path(), &t).unwrap();
        assert!(a4.json.contains("println"));
        assert_eq!(b.cache_entries(), 1);
    }

    #[test]
    fn budget_cuts_and_says_so() {
        let d = project();
        let big = "x".repeat(50_000);
        std::fs::write(d.path().join("src/big.rs"), &big).unwrap();
        let b = ContextBroker::new(roster(), 8 * 1024);
        let t = AgentType::parse("rust-specialist").unwrap();
        let built = b.project(d.path(), &t).unwrap();
        assert!(built.json.len() <= 8 * 1024, "{}", built.json.len());
        let p: ProjectContext = serde_json::from_str(&built.json).unwrap();
        assert!(p.truncated);
    }

    #[test]
    fn unknown_types_get_default_patterns() {
        let b = ContextBroker::new(roster(), 1024);
        let t = AgentType::parse("no-such-agent").unwrap();
        assert!(b.patterns(&t).contains(&"README*".to_string()));
    }

    /// A repository's own config must not make the sidecar run anything: `core.fsmonitor`
    /// and a clean filter (which `git status` runs on a racily modified file) both would.
    #[test]
    fn hostile_git_config_runs_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let run = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(p)
                .args(["-c", "user.name=a", "-c", "user.email=a@example.invalid"])
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        std::fs::write(p.join("a.txt"), "hello\n").unwrap();
        std::fs::write(p.join(".gitattributes"), "* filter=x\n").unwrap();
        run(&["init", "-q", "-b", "main"]);
        run(&["add", "."]);
        run(&["commit", "-q", "-m", "initial"]);
        let fs_marker = p.join("PWNED_FSMONITOR");
        let filter_marker = p.join("PWNED_FILTER");
        let hostile = [
            (
                "core.fsmonitor",
                format!("touch {}; false #", fs_marker.display()),
            ),
            (
                "filter.x.clean",
                format!("touch {}; cat", filter_marker.display()),
            ),
            ("filter.x.required", "true".to_string()),
        ];
        for (k, v) in &hostile {
            run(&["config", k, v]);
        }
        // Same size, new mtime: status must hash the file, through the filter.
        let f = std::fs::File::options()
            .write(true)
            .open(p.join("a.txt"))
            .unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
            .unwrap();
        drop(f);
        let state = git_state(p);
        assert_eq!(state.branch.as_deref(), Some("main"));
        assert_eq!(state.recent_commits.len(), 1);
        assert!(!fs_marker.exists(), "core.fsmonitor ran");
        assert!(!filter_marker.exists(), "the clean filter ran");
    }

    #[test]
    fn projects_that_are_not_projects_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        let home = base.join("home");
        let proj = home.join("work/app");
        let bare = home.join("notes");
        let creds = home.join(".aws/sub");
        for dir in [&proj, &bare, &creds] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(proj.join("Cargo.toml"), "").unwrap();
        std::fs::write(creds.join("Cargo.toml"), "").unwrap();
        let h = Some(home.as_path());
        use ProjectRefused::*;
        for unbound in [false, true] {
            assert!(matches!(
                check_project(Path::new("/"), h, unbound),
                Err(System(_))
            ));
            assert!(matches!(
                check_project(Path::new("/etc"), h, unbound),
                Err(System(_))
            ));
            assert!(matches!(
                check_project(Path::new("/etc/ssl"), h, unbound),
                Err(System(_))
            ));
            assert!(matches!(check_project(&home, h, unbound), Err(Home(_))));
            assert!(matches!(check_project(&creds, h, unbound), Err(Secret(_))));
            assert_eq!(check_project(&proj, h, unbound), Ok(()));
        }
        // Only tokens without a project binding need a marker and may not take home's parent.
        assert_eq!(check_project(&bare, h, false), Ok(()));
        assert!(matches!(check_project(&bare, h, true), Err(NotAProject(_))));
        assert_eq!(check_project(&base, h, false), Ok(()));
        assert!(matches!(check_project(&base, h, true), Err(Home(_))));
    }

    #[test]
    fn porcelain_parsing() {
        let s = " M src/a.rs\0?? .env\0R  new.rs\0old.rs\0";
        assert_eq!(parse_porcelain(s), vec!["src/a.rs", "new.rs"]);
    }
}
