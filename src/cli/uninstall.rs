//! `cco uninstall [--purge]`: stop and remove what `cco install` (or `cco daemon start`) set
//! up; `--purge` also deletes data and runtime files, after asking.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::paths::Installation;
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
            if let Ok(detached::Liveness::Running(pid)) = detached::check(&pid_file) {
                host.say(&format!("would stop the detached {} (pid {pid})", s.name()));
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
        for p in &purge_targets {
            let is_dir = std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
            let gone = if is_dir {
                host.remove_tree(p)?
            } else {
                host.remove_file(p)?
            };
            if gone && !args.dry_run {
                host.say(&format!("  deleted {}", p.display()));
                did = true;
            }
        }
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

fn purge_targets(inst: &Installation) -> Vec<PathBuf> {
    let mut v = vec![
        inst.paths.data_dir.clone(),
        inst.paths.runtime_dir.clone(),
        inst.paths.secret_file(),
    ];
    if cfg!(target_os = "macos")
        && let Ok(home) = std::env::var("HOME")
    {
        v.push(crate::service::launchd_log_dir(Path::new(&home)));
    }
    v.retain(|p| std::fs::symlink_metadata(p).is_ok());
    v
}

/// Asks on the terminal; never reads a non-terminal stdin (a script would hang or feed junk).
fn confirm(targets: &[PathBuf]) -> anyhow::Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = targets.iter().map(|p| p.display().to_string()).collect();
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
