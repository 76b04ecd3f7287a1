//! `cco uninstall [--purge]`: stop and remove what `cco install` (or `cco daemon start`) set
//! up; `--purge` also deletes data and runtime files, after asking.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::paths::Installation;
use crate::seal;
use crate::service::host::{Host, System};
use crate::service::install::{self};
use crate::service::{Service, detached};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also delete cco's data (results, event journal, logs), runtime files and secret.
    #[arg(long)]
    pub purge: bool,
    /// Do not ask before purging (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Remove system-wide units (`cco install --system`).
    #[arg(long)]
    pub system: bool,
    /// Print what it would stop and delete; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(config_flag: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config_flag)?;
    let scope = super::install::scope(args.system);
    let mut host = System::new(args.dry_run);

    let purge_targets = purge_targets(&inst);
    if args.purge && !args.yes && !args.dry_run {
        confirm(&purge_targets)?;
    }

    let mut did = false;
    match install::detect(&mut host, scope) {
        Ok(manager) => {
            let plan = super::install::plan(config_flag, scope, manager)?;
            host.say(&format!("cco uninstall: {}", manager.as_str()));
            did |= install::uninstall(&mut host, &plan)?;
        }
        Err(reason) => host.say(&format!(
            "no service manager ({reason}); checking detached services"
        )),
    }
    // Detached services (`cco daemon start` without a manager) go too.
    for s in Service::ALL {
        let pid_file = inst.paths.pid_file(s.name());
        if args.dry_run {
            match detached::check(&pid_file) {
                Ok(detached::Liveness::Running(pid)) => {
                    host.say(&format!("would stop the detached {} (pid {pid})", s.name()))
                }
                Ok(detached::Liveness::Starting) => {
                    host.say(&format!("would stop the detached {} (starting)", s.name()))
                }
                _ => {}
            }
            continue;
        }
        if let detached::Stopped::Terminated(pid) | detached::Stopped::Killed(pid) =
            detached::stop(&pid_file)?
        {
            host.say(&format!("  stopped the detached {} (pid {pid})", s.name()));
            did = true;
        }
    }
    if args.purge {
        did |= purge(&mut host, &purge_targets)?;
        host.say(&format!(
            "kept your config {} (and agents beside it); delete it by hand if you want it gone",
            inst.paths.config_file.display()
        ));
    }
    if !did && !args.dry_run {
        host.say("nothing to uninstall: no cco units, services or files were found");
    }
    Ok(ExitCode::SUCCESS)
}

/// One thing `--purge` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A directory cco owns outright (`<data_dir>/orchestration`).
    Tree(PathBuf),
    File(PathBuf),
    /// A directory the user may have chosen or shares (`data_dir`, `runtime_dir`,
    /// `<data_dir>/logs`): removed only once cco's own entries are gone and nothing else is
    /// left in it.
    DirIfEmpty(PathBuf),
}

impl Target {
    fn path(&self) -> &Path {
        match self {
            Target::Tree(p) | Target::File(p) | Target::DirIfEmpty(p) => p,
        }
    }
}

/// What `--purge` deletes, existing entries only. Never a whole `data_dir` or `runtime_dir`:
/// either may have been set to `$HOME` or a project directory.
fn purge_targets(inst: &Installation) -> Vec<Target> {
    let p = &inst.paths;
    let mut v = vec![Target::Tree(p.orchestration_dir())];
    // `data_dir` may be a directory whose `logs/` is the user's own: only cco's logs go.
    v.extend(log_files(&p.log_dir()).into_iter().map(Target::File));
    v.push(Target::DirIfEmpty(p.log_dir()));
    v.extend(runtime_files(&p.runtime_dir).into_iter().map(Target::File));
    v.push(Target::File(p.secret_file()));
    v.push(Target::DirIfEmpty(p.data_dir.clone()));
    v.push(Target::DirIfEmpty(p.runtime_dir.clone()));
    if cfg!(target_os = "macos")
        && let Ok(home) = std::env::var("HOME")
    {
        v.push(Target::Tree(crate::service::launchd_log_dir(Path::new(
            &home,
        ))));
    }
    v.retain(|t| std::fs::symlink_metadata(t.path()).is_ok());
    v
}

/// The services' logs in the log directory (`daemon.log`, `sidecar.log`) and their
/// rotations (`daemon.log.1`, …).
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let ours = |name: &str| {
        Service::ALL.iter().any(|s| {
            let log = format!("{}.log", s.name());
            name == log || name.starts_with(&format!("{log}."))
        })
    };
    files_named(dir, ours)
}

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

/// The hook's log, beside the sealed settings (`cco hook` writes it).
const HOOKS_LOG: &str = "hooks.log";

/// Entries of `dir` whose names pass `ours`, sorted; a missing directory has none.
fn files_named(dir: &Path, ours: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| ours(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Deletes the targets in order; true when anything went.
fn purge(host: &mut dyn Host, targets: &[Target]) -> anyhow::Result<bool> {
    let mut did = false;
    for t in targets {
        let gone = match t {
            Target::Tree(p) => host.remove_tree(p)?,
            Target::File(p) => host.remove_file(p)?,
            Target::DirIfEmpty(p) if host.dry_run() => {
                host.say(&format!("would remove {} if it is then empty", p.display()));
                false
            }
            // rmdir(2) refuses a non-empty directory, and never follows a symlink.
            Target::DirIfEmpty(p) => match std::fs::remove_dir(p) {
                Ok(()) => true,
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                    host.say(&format!(
                        "  kept {}: it holds files that are not cco's",
                        p.display()
                    ));
                    false
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "cannot remove {}: {e} — remove it by hand if you want it gone",
                        p.display()
                    ));
                }
            },
        };
        if gone && !host.dry_run() {
            host.say(&format!("  deleted {}", t.path().display()));
            did = true;
        }
    }
    Ok(did)
}

/// Asks on the terminal; never reads a non-terminal stdin (a script would hang or feed junk).
fn confirm(targets: &[Target]) -> anyhow::Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = targets
        .iter()
        .map(|t| match t {
            Target::DirIfEmpty(p) => {
                format!("{} (only if nothing else is left in it)", p.display())
            }
            t => t.path().display().to_string(),
        })
        .collect();
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "--purge would delete {}; stdin is not a terminal, so cco cannot ask — \
             confirm with `cco uninstall --purge --yes`",
            list.join(", ")
        );
    }
    let mut err = std::io::stderr().lock();
    writeln!(err, "This deletes cco's data and runtime files:")?;
    for p in &list {
        writeln!(err, "  {p}")?;
    }
    write!(err, "Delete them? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        anyhow::bail!("nothing was changed; to remove only the services run `cco uninstall`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn purge_keeps_what_is_not_cco_s_in_a_shared_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        // data_dir and runtime_dir set to directories that hold the user's own files.
        let project = home.join("project");
        let rt = home.join("rt");
        for d in [
            project.join("orchestration/results/1"),
            project.join("logs"),
            project.join("src"),
            rt.clone(),
            home.join(".config/cco"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(project.join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(project.join("orchestration/state.db"), "x").unwrap();
        for f in ["daemon.log", "daemon.log.1", "sidecar.log"] {
            std::fs::write(project.join("logs").join(f), "x").unwrap();
        }
        std::fs::write(project.join("logs/build.log"), "mine").unwrap();
        for f in [
            seal::SETTINGS,
            seal::SEAL,
            seal::LOCK,
            "daemon.pid",
            "hooks.log",
            ".start-daemon-1",
        ] {
            std::fs::write(rt.join(f), "x").unwrap();
        }
        std::fs::write(rt.join("notes.txt"), "mine").unwrap();
        std::fs::write(home.join(".config/cco/secret"), [0; 32]).unwrap();
        std::fs::write(home.join(".config/cco/daemon.toml"), "").unwrap();

        let inst = installation(home, &project, &rt);
        let targets = purge_targets(&inst);
        assert!(
            !targets.contains(&Target::Tree(project.clone())),
            "{targets:?}"
        );
        assert!(purge(&mut System::new(false), &targets).unwrap());

        assert!(project.join("src/main.rs").exists(), "user files kept");
        assert!(!project.join("orchestration").exists());
        let logs: Vec<_> = std::fs::read_dir(project.join("logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            logs,
            ["build.log"],
            "only cco's logs go; the user's logs/ stays"
        );
        let left: Vec<_> = std::fs::read_dir(&rt)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["notes.txt"], "only cco's runtime files go");
        assert!(!home.join(".config/cco/secret").exists());
        assert!(home.join(".config/cco/daemon.toml").exists(), "config kept");

        // With nothing of the user's left, the directories go too.
        std::fs::remove_dir_all(project.join("src")).unwrap();
        std::fs::remove_file(project.join("logs/build.log")).unwrap();
        std::fs::remove_file(rt.join("notes.txt")).unwrap();
        assert!(purge(&mut System::new(false), &purge_targets(&inst)).unwrap());
        assert!(!project.exists() && !rt.exists());
    }

    #[test]
    fn dry_run_purge_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("orchestration")).unwrap();
        let inst = installation(tmp.path(), &data, &tmp.path().join("rt"));
        purge(&mut System::new(true), &purge_targets(&inst)).unwrap();
        assert!(data.join("orchestration").exists());
    }
}
