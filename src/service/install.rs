//! `cco install` / `cco uninstall` on whichever manager this machine has: preflight (manager,
//! binary path, ports), the manager-specific sequence, then health probes and advice.

use std::path::{Path, PathBuf};

use super::host::Host;
use super::plan::Plan;
use super::{DetectError, InstallError, Manager, Scope, Service, launchd, systemd};

/// The service manager of this machine, or why there is none.
pub fn detect(host: &mut dyn Host, scope: Scope) -> Result<Manager, DetectError> {
    if cfg!(target_os = "macos") {
        return Ok(Manager::Launchd);
    }
    systemd::detect(host, scope).map(|()| Manager::Systemd)
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

/// Characters systemd cannot carry in an `ExecStart=` program path: `$` stays `$$`, quotes,
/// backslashes and control characters are refused or mangled (systemd.service(5)).
pub fn check_unit_path(path: &Path) -> Result<(), InstallError> {
    let odd = |what: &str| InstallError::UnitPath {
        path: path.into(),
        what: what.into(),
    };
    let Some(s) = path.to_str() else {
        return Err(odd("bytes that are not UTF-8"));
    };
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '$' | '"' | '\'' | '\\') || c.is_control())
    {
        return Err(odd(&match c {
            c if c.is_control() => format!("a control character (U+{:04X})", c as u32),
            c => format!("`{c}`"),
        }));
    }
    Ok(())
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
    // Everything that could refuse runs before anything is written.
    let mut owners = vec![crate::paths::current_uid(), 0];
    owners.extend(plan.spec.run_as.as_ref().map(|u| u.uid));
    let checks = check_binary(&plan.spec.bin, &temp_dirs()).and_then(|warning| {
        if plan.manager == Manager::Systemd {
            check_unit_path(&plan.spec.bin)?;
        }
        host.check_program(&plan.spec.bin, &owners)?;
        Ok(warning)
    });
    match checks {
        Ok(Some(w)) => host.say(&w),
        Ok(None) => {}
        // A dry run shows everything it would do, and says what a real run would refuse.
        Err(e) if host.dry_run() => host.say(&format!("a real install would stop here: {e}")),
        Err(e) => return Err(e),
    }
    // One install at a time: a second one waits, then finds the first one's work in place
    // (held through the health probes, so no install restarts what another is probing).
    let _lock = host
        .lock_dir(&plan.unit_dir)
        .map_err(|e| InstallError::io(&plan.unit_dir, e))?;
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
    // Nothing to lock (and no directory to create) when there is no unit directory.
    let _lock = if std::fs::symlink_metadata(&plan.unit_dir).is_ok() {
        host.lock_dir(&plan.unit_dir)
            .map_err(|e| InstallError::io(&plan.unit_dir, e))?
    } else {
        None
    };
    match plan.manager {
        Manager::Systemd => systemd::uninstall(host, plan.spec.scope, &plan.unit_dir),
        Manager::Launchd => launchd::uninstall(host, &plan.unit_dir, &plan.domain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::UnitSpec;
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
            reason: DetectError::Unusable {
                cmd: "systemctl --user is-system-running".into(),
                said: "Failed to connect to bus".into(),
            },
        };
        insta::assert_snapshot!("no_manager", e.to_string());
    }

    fn plan_for(bin: &str) -> Plan {
        Plan {
            manager: Manager::Systemd,
            spec: UnitSpec {
                bin: bin.into(),
                ..UnitSpec::reference()
            },
            unit_dir: "/home/alice/.config/systemd/user".into(),
            packaged_dir: None,
            domain: String::new(),
            linger_user: None,
        }
    }

    /// The hostile round's odd directory names: the four systemd cannot start from are
    /// refused before a unit is written or a service stopped; the others install.
    #[test]
    fn odd_binary_paths_are_refused_before_anything_changes() {
        for bad in [
            "/opt/a$b/cco",
            "/opt/a\"b/cco",
            "/opt/a'b/cco",
            "/opt/a\\b/cco",
            "/opt/a\nb/cco",
        ] {
            let mut f = Fake::default();
            let e = install(&mut f, &plan_for(bad)).unwrap_err();
            assert!(matches!(e, InstallError::UnitPath { .. }), "{bad}: {e}");
            assert!(e.to_string().ends_with("~/.local/bin/cco install`"), "{e}");
            assert!(
                f.changes.is_empty() && f.files.is_empty(),
                "{bad}: {:?}",
                f.changes
            );
        }
        insta::assert_snapshot!(
            "odd_binary_path",
            install(&mut Fake::default(), &plan_for("/opt/$HOME/cco"))
                .unwrap_err()
                .to_string()
        );
        for good in [
            "/opt/a b/cco",
            "/opt/100%/cco",
            "/opt/é/cco",
            "/opt/a;b/cco",
        ] {
            let mut f = Fake::default();
            assert!(install(&mut f, &plan_for(good)).unwrap(), "{good}");
            assert_eq!(f.files.len(), 4, "{good}");
        }
    }

    #[test]
    fn a_binary_others_can_change_is_refused_before_anything_changes() {
        let mut f = Fake::default();
        f.untrusted.push(("/opt/shared/cco".into(), 0o777));
        let e = install(&mut f, &plan_for("/opt/shared/cco")).unwrap_err();
        assert!(matches!(e, InstallError::Untrusted(_)), "{e}");
        assert!(
            e.to_string().ends_with("`chmod go-w /opt/shared/cco`"),
            "{e}"
        );
        assert!(
            f.changes.is_empty() && f.files.is_empty(),
            "{:?}",
            f.changes
        );
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
        assert_eq!(
            f.locks,
            vec![plan.unit_dir],
            "installs serialize on the unit dir"
        );
        assert!(
            f.transcript().contains("`loginctl enable-linger alice`"),
            "{}",
            f.transcript()
        );
    }
}
