//! `cco install` / `cco uninstall` on whichever manager this machine has: preflight (manager,
//! binary path, ports), the manager-specific sequence, then health probes and advice.

use std::path::{Path, PathBuf};

use super::host::Host;
use super::{Scope, Service, UnitSpec, launchd, systemd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Systemd => "systemd",
            Manager::Launchd => "launchd",
        }
    }
}

/// The service manager of this machine, or why there is none.
pub fn detect(host: &mut dyn Host, scope: Scope) -> Result<Manager, String> {
    if cfg!(target_os = "macos") {
        return Ok(Manager::Launchd);
    }
    systemd::detect(host, scope).map(|()| Manager::Systemd)
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "no service manager to install into ({reason}); this looks like a container or CI \
         without a systemd user session — run both services detached instead: `cco daemon start`"
    )]
    NoManager { reason: String },
    #[error(
        "{path} is in a temporary directory ({dir}); units pointing there break when it is \
         cleaned — copy cco somewhere stable and install from there: \
         `install -Dm755 {path} ~/.local/bin/cco && ~/.local/bin/cco install`"
    )]
    TempBinary { path: PathBuf, dir: PathBuf },
    #[error(
        "port {port} on 127.0.0.1 is taken by another program, so the {} socket cannot have it{} — \
         see who holds it with `ss -ltnp 'sport = :{port}'` and stop it, or set `{}.port` in cco's \
         config (`cco doctor` shows where) and run `cco install` again",
        service.name(),
        if *socket_active { " (cco's socket is up on another port)" } else { "" },
        service.name()
    )]
    PortInUse {
        service: Service,
        port: u16,
        socket_active: bool,
    },
    #[error("`{cmd}` failed: {message} — fix the cause above and run `cco install` again")]
    Command { cmd: String, message: String },
    #[error(
        "{path}: {source} — check that directory's owner and permissions, then run `cco install` again"
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl InstallError {
    pub fn io(path: &Path, source: std::io::Error) -> InstallError {
        InstallError::Io {
            path: path.into(),
            source,
        }
    }
}

/// What a manager-specific install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// False when every unit was already in place and running: a no-op.
    pub changed: bool,
}

/// Everything `install`/`uninstall` need, resolved by the CLI from the environment.
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

/// Directories a unit must never point into: they are cleaned behind the service's back.
pub fn temp_dirs() -> Vec<PathBuf> {
    let mut v = vec![
        std::env::temp_dir(),
        PathBuf::from("/tmp"),
        PathBuf::from("/var/tmp"),
        PathBuf::from("/dev/shm"),
    ];
    v.dedup();
    v
}

/// Refuses a binary in a temp dir; warns about a cargo build directory.
pub fn check_binary(path: &Path, temp: &[PathBuf]) -> Result<Option<String>, InstallError> {
    for dir in temp {
        let canon = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        if path.starts_with(dir) || path.starts_with(&canon) {
            return Err(InstallError::TempBinary {
                path: path.into(),
                dir: dir.clone(),
            });
        }
    }
    let parts: Vec<_> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    let in_target = parts
        .windows(2)
        .any(|w| w[0] == "target" && (w[1] == "debug" || w[1] == "release"));
    Ok(in_target.then(|| {
        format!(
            "warning: {} is a cargo build output; a rebuild or `cargo clean` changes or removes \
             what the units start — for a lasting install run `cargo install --path . && ~/.cargo/bin/cco install`",
            path.display()
        )
    }))
}

/// Installs (or updates) the units, then probes both services.
/// Returns whether both answered `/health`.
pub fn install(host: &mut dyn Host, plan: &Plan) -> Result<bool, InstallError> {
    let scope = match plan.spec.scope {
        Scope::User => "user",
        Scope::System => "system",
    };
    host.say(&format!(
        "cco install: {} ({scope} scope), binary {}",
        plan.manager.as_str(),
        plan.spec.bin.display()
    ));
    match check_binary(&plan.spec.bin, &temp_dirs()) {
        Ok(Some(w)) => host.say(&w),
        Ok(None) => {}
        // A dry run shows everything it would do, and says what a real run would refuse.
        Err(e) if host.dry_run() => host.say(&format!("a real install would stop here: {e}")),
        Err(e) => return Err(e),
    }
    let outcome = match plan.manager {
        Manager::Systemd => systemd::install(
            host,
            &plan.spec,
            &plan.unit_dir,
            plan.packaged_dir.as_deref(),
        )?,
        Manager::Launchd => launchd::install(host, &plan.spec, &plan.unit_dir, &plan.domain)?,
    };
    if !outcome.changed {
        host.say("unchanged: the units are current and both sockets are listening");
    }
    if host.dry_run() {
        host.say("dry run: nothing was changed");
        return Ok(true);
    }
    let mut healthy = true;
    for s in Service::ALL {
        let port = plan.spec.port(s);
        match host.health(port) {
            Ok(status) => host.say(&format!("✅ {:<8} 127.0.0.1:{port} {status}", s.name())),
            Err(e) => {
                healthy = false;
                host.say(&format!(
                    "❌ {:<8} 127.0.0.1:{port} does not answer ({e}) — see `cco logs {}`",
                    s.name(),
                    s.name()
                ));
            }
        }
    }
    if let Some(user) = &plan.linger_user {
        let cmd = super::host::Cmd::new("loginctl", ["show-user", user, "-p", "Linger", "--value"]);
        if let Ok(o) = host.query(&cmd)
            && o.success()
            && o.stdout.trim() == "no"
        {
            host.say(&format!(
                "warning: lingering is off for {user}: the sockets close when you log out and \
                 do not open at boot — keep them with `loginctl enable-linger {user}`"
            ));
        }
    }
    Ok(healthy)
}

/// Removes what `install` set up; true when there was something to remove.
pub fn uninstall(host: &mut dyn Host, plan: &Plan) -> Result<bool, InstallError> {
    match plan.manager {
        Manager::Systemd => systemd::uninstall(host, plan.spec.scope, &plan.unit_dir),
        Manager::Launchd => launchd::uninstall(host, &plan.unit_dir, &plan.domain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::host::fake::Fake;

    #[test]
    fn binary_paths() {
        let temp = vec![PathBuf::from("/tmp")];
        assert!(
            check_binary(Path::new("/usr/bin/cco"), &temp)
                .unwrap()
                .is_none()
        );
        let w = check_binary(Path::new("/src/cco/target/debug/cco"), &temp)
            .unwrap()
            .unwrap();
        assert!(w.ends_with("~/.cargo/bin/cco install`"), "{w}");
        let e = check_binary(Path::new("/tmp/x/cco"), &temp).unwrap_err();
        insta::assert_snapshot!("temp_binary", e.to_string());
    }

    #[test]
    fn no_manager_message_points_to_detached_mode() {
        let e = InstallError::NoManager {
            reason: "`systemctl --user is-system-running` said: Failed to connect to bus".into(),
        };
        insta::assert_snapshot!("no_manager", e.to_string());
    }

    #[test]
    fn lingering_off_is_reported_with_the_command() {
        let mut f = Fake::default();
        f.answer("loginctl show-user alice -p Linger --value", "no\n");
        let plan = Plan {
            manager: Manager::Systemd,
            spec: UnitSpec::reference(),
            unit_dir: "/home/alice/.config/systemd/user".into(),
            packaged_dir: None,
            domain: String::new(),
            linger_user: Some("alice".into()),
        };
        assert!(install(&mut f, &plan).unwrap());
        assert!(
            f.transcript().contains("`loginctl enable-linger alice`"),
            "{}",
            f.transcript()
        );
    }
}
