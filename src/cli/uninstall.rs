//! `cco uninstall [--purge]`: stop and remove what `cco install` (or `cco daemon start`) set
//! up; `--purge` also deletes cco's data and runtime files (see [`crate::service::purge`]), after asking.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::service::host::{Host, System};
use crate::service::install;
use crate::service::purge::{self, Step};
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
    let scope = crate::service::plan::scope(args.system);
    let inst = crate::service::plan::installation(config_flag, scope)?;
    let mut host = System::new(args.dry_run);

    let home = std::env::var_os("HOME").map(PathBuf::from);
    let launchd_logs = (cfg!(target_os = "macos"))
        .then(|| home.as_deref().map(crate::service::launchd_log_dir))
        .flatten();
    let purge_steps = purge::plan(
        &inst.paths,
        home.as_deref(),
        crate::paths::current_uid(),
        launchd_logs.as_deref(),
    );
    if args.purge && !args.yes && !args.dry_run {
        confirm(&purge_steps)?;
    }

    let mut did = false;
    match install::detect(&mut host, scope) {
        Ok(manager) => {
            let plan = crate::service::plan::plan(config_flag, scope, manager)?;
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
    let mut failed = Vec::new();
    if args.purge {
        let report = purge::run(&mut host, &purge_steps);
        if !args.dry_run {
            for p in &report.deleted {
                host.say(&format!("  deleted {}", p.display()));
            }
        }
        did |= !report.deleted.is_empty();
        for (p, why) in &report.kept {
            host.say(&format!("  kept {}: {why}", p.display()));
        }
        failed = report.failed;
        host.say(&format!(
            "kept your config {} (and agents beside it); delete it by hand if you want it gone",
            inst.paths.config_file.display()
        ));
    }
    if !did && !args.dry_run && failed.is_empty() {
        host.say("nothing to uninstall: no cco units, services or files were found");
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect();
        anyhow::bail!(
            "--purge could not delete {} path(s): {} — fix the cause and run `cco uninstall --purge` again",
            failed.len(),
            list.join("; ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal; never reads a non-terminal stdin (a script would hang or feed junk).
fn confirm(steps: &[Step]) -> anyhow::Result<()> {
    let list: Vec<String> = steps
        .iter()
        .filter_map(|t| match t {
            Step::MarkedDir(p) => Some(format!(
                "{} (only if nothing else is left in it)",
                p.display()
            )),
            Step::Keep(..) => None,
            t => Some(t.path().display().to_string()),
        })
        .collect();
    if list.is_empty() {
        return Ok(());
    }
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
