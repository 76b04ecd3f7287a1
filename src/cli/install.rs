//! `cco install`: register the two sockets with the service manager (user scope by default),
//! idempotently; `--dry-run` prints what it would write and run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::paths::{self, Installation};
use crate::service::host::{Host, System};
use crate::service::install::{self, InstallError, Manager, Plan};
use crate::service::{self, RunAs, Scope, UnitSpec, launchd, systemd};

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

pub fn scope(system: bool) -> Scope {
    if system { Scope::System } else { Scope::User }
}

/// The binary the units should start: this one, symlinks resolved.
pub fn this_binary() -> PathBuf {
    let exe = crate::daemon::current_exe();
    exe.canonicalize().unwrap_or(exe)
}

/// Resolves everything install/uninstall/operate need for `scope` on `manager`.
pub fn plan(config_flag: Option<&Path>, scope: Scope, manager: Manager) -> anyhow::Result<Plan> {
    let env = paths::process_env;
    let run_as = match scope {
        Scope::User => None,
        Scope::System => Some(system_user()?),
    };
    // System units serve one account: resolve that account's installation, not root's.
    let inst = match &run_as {
        Some(u) => {
            let home = u.home.display().to_string();
            let user_env = move |k: &str| match k {
                "HOME" => Some(home.clone()),
                "XDG_CONFIG_HOME" | "XDG_RUNTIME_DIR" => None,
                k => env(k),
            };
            Installation::load(config_flag, &user_env)?
        }
        None => Installation::from_process(config_flag)?,
    };
    let home = match &run_as {
        Some(u) => u.home.clone(),
        None => PathBuf::from(
            env("HOME").context("HOME is not set; set it and run `cco install` again")?,
        ),
    };
    let spec = UnitSpec {
        bin: this_binary(),
        daemon_port: inst.config.daemon.port,
        sidecar_port: inst.config.sidecar.port,
        scope,
        env: service::service_env(&env, &inst.paths.config_file),
        run_as,
        launchd_log_dir: service::launchd_log_dir(&home),
    };
    let unit_dir = match manager {
        Manager::Systemd => systemd::unit_dir(scope, &env)
            .context("HOME is not set; set it and run `cco install` again")?,
        Manager::Launchd => launchd::plist_dir(scope, &home),
    };
    let linger_user = (manager == Manager::Systemd && scope == Scope::User)
        .then(|| env("USER").or_else(|| env("LOGNAME")))
        .flatten();
    Ok(Plan {
        manager,
        spec,
        unit_dir,
        packaged_dir: (scope == Scope::User).then(|| PathBuf::from(systemd::PACKAGED_USER_DIR)),
        domain: launchd::domain(scope, paths::current_uid()),
        linger_user,
    })
}

/// `--system` runs the services as the user who called sudo.
fn system_user() -> anyhow::Result<RunAs> {
    if paths::current_uid() != 0 {
        anyhow::bail!(
            "`cco install --system` writes system units and needs root — run `sudo cco install --system`"
        );
    }
    let name = std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty() && u != "root").context(
        "--system runs the services as the account that called sudo, and SUDO_USER is not set — \
         run `sudo cco install --system` from that account",
    )?;
    let cname = std::ffi::CString::new(name.clone())?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy out at once.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        anyhow::bail!(
            "no such user {name:?} — run `sudo cco install --system` from a real account"
        );
    }
    // SAFETY: non-null passwd entry with valid C strings, read before any other libc call.
    let (uid, home) = unsafe {
        let pw = &*pw;
        (
            pw.pw_uid,
            std::ffi::CStr::from_ptr(pw.pw_dir)
                .to_string_lossy()
                .into_owned(),
        )
    };
    Ok(RunAs {
        name,
        uid,
        home: home.into(),
    })
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
