//! Resolves what `install`, `uninstall` and the operate commands need — binary, ports, unit
//! directory, the account system units run as — from the environment and cco's config.

use std::io;
use std::path::{Path, PathBuf};

use super::{Manager, RunAs, Scope, UnitSpec, launchd, systemd};
use crate::paths::{self, Installation, InstallationError};

/// Everything `install`/`uninstall` need, resolved from the environment.
#[derive(Debug, Clone)]
pub struct Plan {
    pub manager: Manager,
    pub spec: UnitSpec,
    pub unit_dir: PathBuf,
    /// systemd user scope: where packages put units (`/usr/lib/systemd/user`).
    pub packaged_dir: Option<PathBuf>,
    /// launchd domain (`gui/501`, `system`).
    pub domain: String,
    /// User scope on Linux: whose lingering to check.
    pub linger_user: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("HOME is not set; set it and run `cco install` again")]
    NoHome,
    #[error(
        "`cco install --system` writes system units and needs root — run `sudo cco install --system`"
    )]
    NotRoot,
    #[error(
        "--system runs the services as the account that called sudo, and SUDO_USER is not set — \
         run `sudo cco install --system` from that account"
    )]
    NoSudoUser,
    #[error("no such user {0:?} — run `sudo cco install --system` from a real account")]
    NoSuchUser(String),
    #[error(
        "cannot act as {user} to read their cco files: {source} — run `sudo cco install --system` \
         from that account"
    )]
    ActAs { user: String, source: io::Error },
    #[error(transparent)]
    Installation(#[from] InstallationError),
}

/// `--system` or not.
pub fn scope(system: bool) -> Scope {
    if system { Scope::System } else { Scope::User }
}

/// The binary the units should start: this one, symlinks resolved.
pub fn this_binary() -> PathBuf {
    let exe = crate::daemon::current_exe();
    exe.canonicalize().unwrap_or(exe)
}

/// Resolves everything install/uninstall/operate need for `scope` on `manager`.
pub fn plan(config_flag: Option<&Path>, scope: Scope, manager: Manager) -> Result<Plan, PlanError> {
    let env = paths::process_env;
    let run_as = match scope {
        Scope::User => None,
        Scope::System => Some(system_user()?),
    };
    let inst = installation_of(config_flag, run_as.as_ref())?;
    let home = match &run_as {
        Some(u) => u.home.clone(),
        None => PathBuf::from(env("HOME").ok_or(PlanError::NoHome)?),
    };
    let spec = UnitSpec {
        bin: this_binary(),
        daemon_port: inst.config.daemon.port,
        sidecar_port: inst.config.sidecar.port,
        scope,
        env: super::service_env(&env, &inst.paths.config_file),
        run_as,
        launchd_log_dir: super::launchd_log_dir(&home),
    };
    let unit_dir = match manager {
        Manager::Systemd => systemd::unit_dir(scope, &env).ok_or(PlanError::NoHome)?,
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

/// The installation `scope`'s units serve: the caller's own, or under `--system` that of
/// the account that called sudo.
pub fn installation(config_flag: Option<&Path>, scope: Scope) -> Result<Installation, PlanError> {
    match scope {
        Scope::User => Ok(Installation::from_process(config_flag)?),
        Scope::System => installation_of(config_flag, Some(&system_user()?)),
    }
}

fn installation_of(
    config_flag: Option<&Path>,
    run_as: Option<&RunAs>,
) -> Result<Installation, PlanError> {
    let env = paths::process_env;
    let Some(u) = run_as else {
        return Ok(Installation::from_process(config_flag)?);
    };
    // System units serve one account: resolve that account's installation, not root's, and
    // read it as that account, so their own files pass the owner checks (root trusting a
    // user's file is no risk to the user; telling them to chown it to root locks them out).
    let home = u.home.display().to_string();
    let user_env = move |k: &str| match k {
        "HOME" => Some(home.clone()),
        "XDG_CONFIG_HOME" | "XDG_RUNTIME_DIR" => None,
        k => env(k),
    };
    let _as_user = ActingAs::user(u)?;
    Ok(Installation::load(config_flag, &user_env)?)
}

/// `--system` runs the services as the user who called sudo.
fn system_user() -> Result<RunAs, PlanError> {
    if paths::current_uid() != 0 {
        return Err(PlanError::NotRoot);
    }
    let name = std::env::var("SUDO_USER")
        .ok()
        .filter(|u| !u.is_empty() && u != "root")
        .ok_or(PlanError::NoSudoUser)?;
    let cname =
        std::ffi::CString::new(name.clone()).map_err(|_| PlanError::NoSuchUser(name.clone()))?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy out at once.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        return Err(PlanError::NoSuchUser(name));
    }
    // SAFETY: non-null passwd entry with valid C strings, read before any other libc call.
    let (uid, gid, home) = unsafe {
        let pw = &*pw;
        (
            pw.pw_uid,
            pw.pw_gid,
            std::ffi::CStr::from_ptr(pw.pw_dir)
                .to_string_lossy()
                .into_owned(),
        )
    };
    Ok(RunAs {
        name,
        uid,
        gid,
        home: home.into(),
    })
}

/// While alive, file access happens as another account (effective uid/gid), so that
/// account's files are "mine" to cco's owner checks and anything cco creates is theirs.
/// Only root can switch; the guard switches back when dropped.
#[must_use]
pub struct ActingAs {
    switched: bool,
}

impl ActingAs {
    pub fn user(u: &RunAs) -> Result<ActingAs, PlanError> {
        if paths::current_uid() != 0 || u.uid == 0 {
            return Ok(ActingAs { switched: false });
        }
        let fail = |source| PlanError::ActAs {
            user: u.name.clone(),
            source,
        };
        // SAFETY: plain syscalls; glibc applies them to every thread of the process.
        if unsafe { libc::setegid(u.gid) } != 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        // SAFETY: as above.
        if unsafe { libc::seteuid(u.uid) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: as above; back to root's group.
            unsafe { libc::setegid(0) };
            return Err(fail(e));
        }
        Ok(ActingAs { switched: true })
    }
}

impl Drop for ActingAs {
    fn drop(&mut self) {
        if self.switched {
            // SAFETY: the saved set-user-ID is still 0, so switching back cannot fail.
            unsafe {
                libc::seteuid(0);
                libc::setegid(0);
            }
        }
    }
}
