//! A project's git state (branch, head, recent commits, dirty files), read by running git
//! with the repository's own config defanged, every run killed at a deadline and its output
//! capped: a cloned repository is attacker-shaped (a FIFO `HEAD`, a `.git` → `/dev/zero`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::api::sidecar::{Commit, GitState};
use crate::secrets::is_secret_path;
use crate::untrusted::{Links, read_capped_string};

const RECENT_COMMITS: usize = 10;
/// A worktree's `.git` file is one `gitdir: …` line.
const MAX_GITFILE_BYTES: u64 = 4096;
/// Most output kept from one git run (`status` of a very dirty tree); more is dropped.
const MAX_GIT_OUTPUT: usize = 1024 * 1024;
/// How often a finished-output child is polled for its exit before the deadline.
const REAP_POLL: Duration = Duration::from_millis(2);

/// The repository's git dir (`.git`, or where a worktree's `.git` file points). The `.git`
/// file is read only if it is a small regular file (not a FIFO, device or symlink), and it
/// must point at a directory.
pub fn git_dir(root: &Path) -> Option<PathBuf> {
    let dot = root.join(".git");
    let meta = std::fs::symlink_metadata(&dot).ok()?;
    if meta.is_dir() {
        return Some(dot);
    }
    let text = match read_capped_string(&dot, MAX_GITFILE_BYTES, Links::Refuse) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "no git state for this project");
            return None;
        }
    };
    let p = PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
    let p = if p.is_absolute() { p } else { root.join(p) };
    std::fs::metadata(&p).ok()?.is_dir().then_some(p)
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

/// Runs `git -C root <hardening> <overrides> args` until `deadline`. The environment carries
/// no `GIT_*` of ours (no inherited `GIT_DIR`, `GIT_CONFIG_PARAMETERS`…), no system config and
/// no prompts. `safe.directory` is left alone on purpose: git refuses a repository another
/// user owns, and such a project simply has no git state.
fn git_with(root: &Path, overrides: &[String], args: &[&str], deadline: Instant) -> Option<String> {
    let mut cmd = Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("GIT_")) {
            cmd.env_remove(k);
        }
    }
    cmd.arg("-C")
        .arg(root)
        .args(GIT_HARDENING)
        .args(overrides)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        // `git status` would otherwise refresh the index, invalidating our own cache.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let out = run_until(cmd, deadline, MAX_GIT_OUTPUT);
    if out.is_none() {
        tracing::debug!(root = %root.display(), ?args, "git gave no answer in time");
    }
    out.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Runs `cmd`, returning its stdout if it exits successfully before `deadline` having
/// written at most `cap` bytes; otherwise it is killed and reaped, and the answer is `None`.
/// The reader is a plain thread, not the runtime's blocking pool: if a grandchild keeps the
/// pipe open, only that thread waits, and nothing at shutdown waits for it.
pub fn run_until(mut cmd: Command, deadline: Instant, cap: usize) -> Option<Vec<u8>> {
    if Instant::now() >= deadline {
        return None;
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().ok()?;
    let stdout = child.stdout.take()?;
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("cco-git-output".into())
        .spawn(move || {
            let mut buf = Vec::new();
            // One byte over the cap tells "too much" apart; dropping the pipe then ends git.
            let ok = stdout.take(cap as u64 + 1).read_to_end(&mut buf).is_ok();
            let _ = tx.send((ok && buf.len() <= cap).then_some(buf));
        })
        .ok()?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let output = match rx.recv_timeout(remaining) {
        Ok(out) => out,
        Err(_) => {
            kill(&mut child);
            return None;
        }
    };
    // The output is complete; the exit follows at once unless the child lingers.
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return output.filter(|_| status.success()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(REAP_POLL),
            _ => {
                kill(&mut child);
                return None;
            }
        }
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn git(root: &Path, args: &[&str], deadline: Instant) -> Option<String> {
    git_with(root, &[], args, deadline)
}

/// `-c` overrides that disable every filter driver the config defines: `git status` runs a
/// file's clean filter to compare it with the index. `None` when a driver's name cannot be
/// overridden safely (it contains `=`), in which case `status` is not run at all.
fn filter_overrides(root: &Path, deadline: Instant) -> Option<Vec<String>> {
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
        deadline,
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

/// The git state of the work tree at `root`, from git runs that all end by `deadline`; what
/// did not answer in time is left empty.
pub fn git_state(root: &Path, deadline: Instant) -> GitState {
    let branch = git(
        root,
        &["symbolic-ref", "--quiet", "--short", "HEAD"],
        deadline,
    )
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty());
    let head = git(
        root,
        &["rev-parse", "--verify", "--quiet", "HEAD"],
        deadline,
    )
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty());
    let recent_commits = git(
        root,
        &[
            "log",
            &format!("-n{RECENT_COMMITS}"),
            "--format=%H%x1f%an%x1f%aI%x1f%s",
        ],
        deadline,
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
    let dirty_files = filter_overrides(root, deadline)
        .and_then(|o| {
            git_with(
                root,
                &o,
                &["status", "--porcelain=v1", "-z", "--ignore-submodules=all"],
                deadline,
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::SystemTime;

    const LONG: Duration = Duration::from_secs(60);

    pub(crate) fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    fn git_init(p: &Path) {
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
        run(&["init", "-q", "-b", "main"]);
        run(&["add", "."]);
        run(&["commit", "-q", "-m", "initial"]);
    }

    /// A repository's own config must not make the sidecar run anything: `core.fsmonitor`
    /// and a clean filter (which `git status` runs on a racily modified file) both would.
    #[test]
    fn hostile_git_config_runs_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join(".gitattributes"), "* filter=x\n").unwrap();
        git_init(p);
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
            let ok = Command::new("git")
                .arg("-C")
                .arg(p)
                .args(["config", k, v])
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
        // Same size, new mtime: status must hash the file, through the filter.
        let f = std::fs::File::options()
            .write(true)
            .open(p.join("a.txt"))
            .unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
            .unwrap();
        drop(f);
        let state = git_state(p, Instant::now() + LONG);
        assert_eq!(state.branch.as_deref(), Some("main"));
        assert_eq!(state.recent_commits.len(), 1);
        assert!(!fs_marker.exists(), "core.fsmonitor ran");
        assert!(!filter_marker.exists(), "the clean filter ran");
    }

    /// Issue 16: a `.git` that is a FIFO, a symlink to `/dev/zero` or a huge file is not
    /// read (each used to block or flood the reader).
    #[test]
    fn special_dot_git_files_are_not_read() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        std::fs::create_dir(&fifo).unwrap();
        mkfifo(&fifo.join(".git"));
        let zero = d.path().join("zero");
        std::fs::create_dir(&zero).unwrap();
        std::os::unix::fs::symlink("/dev/zero", zero.join(".git")).unwrap();
        let big = d.path().join("big");
        std::fs::create_dir(&big).unwrap();
        let f = std::fs::File::create(big.join(".git")).unwrap();
        f.set_len(1 << 32).unwrap(); // sparse: 4 GiB of NULs without a newline
        let nowhere = d.path().join("nowhere");
        std::fs::create_dir(&nowhere).unwrap();
        std::fs::write(nowhere.join(".git"), "gitdir: /dev/zero\n").unwrap();
        for root in [&fifo, &zero, &big, &nowhere] {
            assert_eq!(git_dir(root), None, "{}", root.display());
        }
        let wt = d.path().join("wt");
        std::fs::create_dir(&wt).unwrap();
        std::fs::write(wt.join(".git"), format!("gitdir: {}\n", big.display())).unwrap();
        assert_eq!(git_dir(&wt), Some(big.clone()));
    }

    /// Issue 16: git itself blocks on a FIFO inside the git dir; it is killed at the deadline
    /// and the state comes back empty instead of never.
    #[test]
    fn a_hanging_git_is_killed_at_the_deadline() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        git_init(p);
        std::fs::remove_file(p.join(".git/HEAD")).unwrap();
        mkfifo(&p.join(".git/HEAD"));
        let started = Instant::now();
        let state = git_state(p, Instant::now() + Duration::from_millis(300));
        assert!(started.elapsed() < LONG, "git was not stopped");
        assert_eq!(state.branch, None);
        assert!(state.recent_commits.is_empty());
    }

    #[test]
    fn output_over_the_cap_is_dropped() {
        let mut cmd = Command::new("head");
        cmd.args(["-c", "100000", "/dev/zero"]);
        assert_eq!(run_until(cmd, Instant::now() + LONG, 1000), None);
        let mut cmd = Command::new("printf");
        cmd.arg("ok");
        assert_eq!(
            run_until(cmd, Instant::now() + LONG, 1000),
            Some(b"ok".to_vec())
        );
    }

    #[test]
    fn porcelain_parsing() {
        let s = " M src/a.rs\0?? .env\0R  new.rs\0old.rs\0";
        assert_eq!(parse_porcelain(s), vec!["src/a.rs", "new.rs"]);
    }
}
