//! What `cco uninstall --purge` deletes: only directories carrying cco's [`marker`] and cco's
//! own files by exact name, never through a symlink, never `$HOME`; one failure does not stop
//! the rest, and every failure is reported.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Service;
use super::host::Host;
use crate::marker::{self, MARKER};
use crate::paths::Paths;
use crate::seal;
use crate::secret::SECRET_LEN;

/// One thing the purge does or deliberately leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A directory cco created and owns outright (`<data_dir>/orchestration`): removed whole.
    Tree(PathBuf),
    /// One of cco's own files, by exact name, in a directory cco created (or the secret).
    File(PathBuf),
    /// A directory cco created that may also hold other files (`data_dir`, `logs`, the
    /// runtime dir): its mark and the directory go only when nothing else is left in it.
    MarkedDir(PathBuf),
    /// Left in place, and why (shown to the user, ending with what to do).
    Keep(PathBuf, String),
}

impl Step {
    pub fn path(&self) -> &Path {
        match self {
            Step::Tree(p) | Step::File(p) | Step::MarkedDir(p) | Step::Keep(p, _) => p,
        }
    }
}

/// What a purge did: deleted paths, kept paths with the reason, and failures.
#[derive(Debug, Default)]
pub struct Report {
    pub deleted: Vec<PathBuf>,
    pub kept: Vec<(PathBuf, String)>,
    pub failed: Vec<(PathBuf, String)>,
}

/// The plan for one installation's files. `home` is never removed, even when marked.
/// `uid` is whose marks count (the user running the purge).
pub fn plan(
    paths: &Paths,
    home: Option<&Path>,
    uid: u32,
    launchd_logs: Option<&Path>,
) -> Vec<Step> {
    let mut v = Vec::new();
    let protected = |p: &Path| is_protected(p, home);
    let orchestration = paths.orchestration_dir();
    match classify(&orchestration, uid) {
        Kind::Marked if !protected(&orchestration) => v.push(Step::Tree(orchestration)),
        kind => v.extend(keep(&orchestration, kind)),
    }
    for (dir, files) in [
        (paths.log_dir(), log_files as fn(&Path) -> Vec<PathBuf>),
        (paths.runtime_dir.clone(), runtime_files),
    ] {
        match classify(&dir, uid) {
            Kind::Marked => {
                v.extend(files(&dir).into_iter().map(Step::File));
                if !protected(&dir) {
                    v.push(Step::MarkedDir(dir));
                }
            }
            kind => v.extend(keep(&dir, kind)),
        }
    }
    let secret = paths.secret_file();
    match secret_kind(&secret, uid) {
        Ok(true) => v.push(Step::File(secret)),
        Ok(false) => {}
        Err(why) => v.push(Step::Keep(secret, why.to_string())),
    }
    // data_dir is often a directory of the user's ($HOME, a project): silent unless marked.
    if classify(&paths.data_dir, uid) == Kind::Marked && !protected(&paths.data_dir) {
        v.push(Step::MarkedDir(paths.data_dir.clone()));
    }
    if let Some(dir) = launchd_logs
        && classify(dir, uid) == Kind::Marked
        && !protected(dir)
    {
        v.push(Step::Tree(dir.to_path_buf()));
    }
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Missing,
    Symlink,
    NotDir,
    Unmarked,
    Marked,
}

fn classify(dir: &Path, uid: u32) -> Kind {
    match fs::symlink_metadata(dir) {
        Err(_) => Kind::Missing,
        Ok(m) if m.file_type().is_symlink() => Kind::Symlink,
        Ok(m) if !m.is_dir() => Kind::NotDir,
        Ok(_) if marker::is_marked(dir, uid) => Kind::Marked,
        Ok(_) => Kind::Unmarked,
    }
}

fn keep(dir: &Path, kind: Kind) -> Option<Step> {
    let d = dir.display();
    let why = match kind {
        Kind::Missing => return None,
        Kind::Symlink => format!(
            "it is a symlink, which cco never follows or removes — if what it points to is \
             cco's, delete it by hand: `rm {d}`"
        ),
        Kind::NotDir => {
            format!("it is not a directory — delete it by hand if it is cco's: `rm {d}`")
        }
        Kind::Unmarked | Kind::Marked => format!(
            "cco did not create it (it has no {MARKER}), so it may be yours — if it is cco's, \
             delete it by hand: `rm -r {d}`"
        ),
    };
    Some(Step::Keep(dir.to_path_buf(), why))
}

/// `$HOME` and `/` are never removed, whatever marks they carry.
fn is_protected(p: &Path, home: Option<&Path>) -> bool {
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    p.parent().is_none() || home.is_some_and(|h| canon(h) == canon(p) || h == p)
}

/// Something other than cco's secret sits where the secret goes: kept, and this says why.
#[derive(Debug, thiserror::Error)]
#[error(
    "it is not cco's secret (a {SECRET_LEN}-byte private file of yours) — delete it by \
     hand if it is cco's: `rm {}`",
    path.display()
)]
struct NotSecret {
    path: PathBuf,
}

/// Ok(true): cco's secret (a private regular file of exactly the secret's size, owned by
/// `uid`); Ok(false): absent; Err: something else sits there, kept.
fn secret_kind(path: &Path, uid: u32) -> Result<bool, NotSecret> {
    let Ok(m) = fs::symlink_metadata(path) else {
        return Ok(false);
    };
    if m.is_file() && m.uid() == uid && m.len() == SECRET_LEN as u64 && m.mode() & 0o077 == 0 {
        Ok(true)
    } else {
        Err(NotSecret { path: path.into() })
    }
}

/// The services' logs (`daemon.log`, `sidecar.log`) and numbered rotations (`daemon.log.1`).
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let ours = |name: &str| {
        Service::ALL.iter().any(|s| {
            let log = format!("{}.log", s.name());
            name == log
                || name
                    .strip_prefix(&format!("{log}."))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    files_named(dir, ours)
}

/// The hook's log, beside the sealed settings (`cco hook` writes it).
pub const HOOKS_LOG: &str = "hooks.log";

/// The files cco itself puts in the runtime directory: the sealed files, the seal and its
/// lock, pid files, the hooks' log, and leftovers of an interrupted write or start.
fn runtime_files(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<String> = seal::FILES
        .iter()
        .chain(&[seal::SEAL, seal::LOCK, HOOKS_LOG])
        .map(|n| n.to_string())
        .collect();
    names.extend(Service::ALL.iter().map(|s| format!("{}.pid", s.name())));
    let leftover = |name: &str| {
        name.starts_with(".start-")
            || seal::FILES
                .iter()
                .chain(&[seal::SEAL])
                .any(|f| name.starts_with(&format!(".{f}.tmp")))
    };
    files_named(dir, |name| {
        names.iter().any(|n| n == name) || leftover(name)
    })
}

/// Entries of the real directory `dir` whose names pass `ours`, sorted. Directories among
/// them are skipped: cco's files are files (a symlink counts as one and is removed, not
/// followed).
fn files_named(dir: &Path, ours: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| ours(&e.file_name().to_string_lossy()))
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Carries out `steps` in order, going on past failures.
pub fn run(host: &mut dyn Host, steps: &[Step]) -> Report {
    let mut r = Report::default();
    for step in steps {
        let p = step.path().to_path_buf();
        let done = match step {
            Step::Keep(_, why) => {
                r.kept.push((p, why.clone()));
                continue;
            }
            // Checked again now: a symlink swapped in since planning is not followed.
            Step::Tree(_) if fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) => {
                r.kept
                    .push((p, "it is no longer a directory; nothing was deleted".into()));
                continue;
            }
            Step::Tree(_) => host.remove_tree(&p),
            Step::File(_) => host.remove_file(&p),
            Step::MarkedDir(_) => match only_marker_left(&p) {
                Ok(false) => {
                    r.kept.push((
                        p.clone(),
                        format!(
                            "it holds files that are not cco's — delete them, then the \
                             directory, by hand if you want it gone: `ls -A {}`",
                            p.display()
                        ),
                    ));
                    continue;
                }
                Ok(true) if host.dry_run() => {
                    host.say(&format!("would remove {}", p.display()));
                    Ok(true)
                }
                Ok(true) => remove_marked_dir(&p),
                Err(e) => Err(e),
            },
        };
        match done {
            Ok(true) => r.deleted.push(p),
            Ok(false) => {}
            Err(e) => r.failed.push((p, e.to_string())),
        }
    }
    r
}

/// True when the directory holds nothing but cco's mark. In a dry run the files cco would
/// have deleted first still count as gone.
fn only_marker_left(dir: &Path) -> std::io::Result<bool> {
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        if name != MARKER {
            return Ok(false);
        }
    }
    Ok(true)
}

fn remove_marked_dir(dir: &Path) -> std::io::Result<bool> {
    fs::remove_file(dir.join(MARKER))?;
    // rmdir(2) refuses a non-empty directory and never follows a symlink.
    fs::remove_dir(dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::{Installation, current_uid, ensure_private_dir};
    use crate::service::host::System;
    use std::collections::HashMap;

    fn installation(home: &Path, data_dir: &Path, runtime_dir: &Path) -> Installation {
        let vars: HashMap<&str, String> = [
            ("HOME", home.display().to_string()),
            ("CCO_DATA_DIR", data_dir.display().to_string()),
            ("CCO_RUNTIME_DIR", runtime_dir.display().to_string()),
        ]
        .into();
        Installation::load(None, &|k| vars.get(k).cloned()).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn write(p: &Path, text: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn secret(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        write(p, &"k".repeat(SECRET_LEN));
        fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// The hostile round's instance: `data_dir = $HOME`, the user's own `~/orchestration`
    /// and `~/logs/daemon.log.2024-notes`, a symlinked logs dir — none of it is touched, and
    /// the secret still goes.
    #[test]
    fn data_dir_home_keeps_the_users_files_and_home_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let rt = tmp.path().join("rt");
        write(&home.join("orchestration/results/notes.json"), "mine");
        write(&home.join("orchestration/state.db"), "mine");
        write(&home.join("logs/daemon.log.2024-notes"), "mine");
        write(&home.join("logs/daemon.log"), "mine");
        ensure_private_dir(&rt).unwrap();
        write(&rt.join(seal::SEAL), "x");
        secret(&home.join(".config/cco/secret"));
        let inst = installation(&home, &home, &rt);
        let steps = plan(&inst.paths, Some(&home), current_uid(), None);
        let report = run(&mut System::new(false), &steps);
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(names(&home.join("orchestration")), ["results", "state.db"]);
        assert_eq!(
            names(&home.join("logs")),
            ["daemon.log", "daemon.log.2024-notes"]
        );
        assert!(!home.join(".config/cco/secret").exists(), "the secret goes");
        assert!(!rt.exists(), "the marked runtime dir goes");
        assert!(home.exists());
        let kept: Vec<&Path> = report.kept.iter().map(|(p, _)| p.as_path()).collect();
        assert!(
            kept.contains(&home.join("orchestration").as_path()),
            "{kept:?}"
        );

        // Even a marked $HOME (cco created it as data_dir's parent) is never removed.
        write(&home.join(MARKER), "");
        let steps = plan(&inst.paths, Some(&home), current_uid(), None);
        assert!(!steps.contains(&Step::MarkedDir(home.clone())), "{steps:?}");
    }

    #[test]
    fn a_symlinked_logs_dir_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let data = home.join(".cco");
        ensure_private_dir(&data.join("orchestration")).unwrap();
        let outside = tmp.path().join("outside");
        write(&outside.join("daemon.log"), "not cco's");
        write(&outside.join(MARKER), "");
        std::os::unix::fs::symlink(&outside, data.join("logs")).unwrap();
        let inst = installation(&home, &data, &tmp.path().join("rt"));
        let report = run(
            &mut System::new(false),
            &plan(&inst.paths, Some(&home), current_uid(), None),
        );
        assert!(outside.join("daemon.log").exists(), "the link was followed");
        assert!(
            data.join("logs").exists(),
            "the symlink itself stays, reported"
        );
        assert!(!data.join("orchestration").exists());
        assert!(
            report
                .kept
                .iter()
                .any(|(p, why)| p == &data.join("logs") && why.contains("symlink"))
        );
        assert!(report.failed.is_empty(), "{:?}", report.failed);
    }

    #[test]
    fn one_failure_does_not_stop_the_rest_and_every_one_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        secret(&home.join(".config/cco/secret"));
        let steps = vec![
            Step::MarkedDir(tmp.path().join("not-a-dir-any-more")),
            Step::File(home.join(".config/cco/secret")),
        ];
        write(&tmp.path().join("not-a-dir-any-more"), "");
        let report = run(&mut System::new(false), &steps);
        assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
        assert!(
            !home.join(".config/cco/secret").exists(),
            "the secret still went"
        );
    }

    #[test]
    fn cco_s_own_directories_go_with_only_cco_s_files() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let data = home.join(".cco");
        let rt = tmp.path().join("rt");
        ensure_private_dir(&data.join("orchestration/results")).unwrap();
        ensure_private_dir(&data.join("logs")).unwrap();
        ensure_private_dir(&rt).unwrap();
        write(&data.join("orchestration/results/1/x.json"), "{}");
        for f in ["daemon.log", "daemon.log.1", "sidecar.log"] {
            write(&data.join("logs").join(f), "x");
        }
        write(&data.join("logs/build.log"), "mine");
        for f in [
            seal::SETTINGS,
            seal::SEAL,
            seal::LOCK,
            "daemon.pid",
            HOOKS_LOG,
            ".start-daemon-1",
        ] {
            write(&rt.join(f), "x");
        }
        write(&rt.join("notes.txt"), "mine");
        secret(&home.join(".config/cco/secret"));
        write(&home.join(".config/cco/daemon.toml"), "");
        let inst = installation(&home, &data, &rt);

        // A dry run changes nothing.
        let steps = plan(&inst.paths, Some(&home), current_uid(), None);
        let dry = run(&mut System::new(true), &steps);
        assert!(dry.failed.is_empty() && data.join("orchestration").exists());

        let report = run(&mut System::new(false), &steps);
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(!data.join("orchestration").exists());
        assert_eq!(
            names(&data.join("logs")),
            [MARKER, "build.log"],
            "the mark stays with the user's file"
        );
        assert_eq!(names(&rt), [MARKER, "notes.txt"]);
        assert!(home.join(".config/cco/daemon.toml").exists(), "config kept");

        // With nothing of the user's left, cco's directories go too; $HOME stays.
        fs::remove_file(data.join("logs/build.log")).unwrap();
        fs::remove_file(rt.join("notes.txt")).unwrap();
        let report = run(
            &mut System::new(false),
            &plan(&inst.paths, Some(&home), current_uid(), None),
        );
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(!data.exists() && !rt.exists() && home.exists());
    }

    #[test]
    fn a_file_that_is_not_the_secret_is_kept_with_the_command_to_remove_it() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("secret");
        assert!(matches!(
            secret_kind(&p, crate::paths::current_uid()),
            Ok(false)
        ));
        write(&p, "short");
        let e = secret_kind(&p, crate::paths::current_uid()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "it is not cco's secret (a {SECRET_LEN}-byte private file of yours) — delete it \
                 by hand if it is cco's: `rm {}`",
                p.display()
            )
        );
        secret(&p);
        assert!(matches!(
            secret_kind(&p, crate::paths::current_uid()),
            Ok(true)
        ));
    }
}
