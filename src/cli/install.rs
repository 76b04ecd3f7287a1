//! `cco install`: register the two sockets with the service manager (user scope by default),
//! idempotently; `--dry-run` prints what it would write and run.

use std::path::Path;
use std::process::ExitCode;

use crate::service::host::{Host, System};
use crate::service::plan::{plan, scope};
use crate::service::{InstallError, Manager, install};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Install system-wide units for a shared host (needs root; run with sudo from the
    /// account that should own the services).
    #[arg(long)]
    pub system: bool,
    /// Print the units it would write and the commands it would run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(config_flag: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let scope = scope(args.system);
    let mut host = System::new(args.dry_run);
    let manager = match install::detect(&mut host, scope) {
        Ok(m) => m,
        // A dry run still shows the units, for review or for a machine that has systemd.
        Err(reason) if args.dry_run => {
            host.say(&format!(
                "no service manager ({reason}): a real `cco install` would stop here, and \
                 `cco daemon start` runs both services detached instead — below is what it \
                 would install with systemd"
            ));
            Manager::Systemd
        }
        Err(reason) => return Err(InstallError::NoManager { reason }.into()),
    };
    let plan = plan(config_flag, scope, manager)?;
    let healthy = install::install(&mut host, &plan)?;
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
