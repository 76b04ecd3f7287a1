//! launchd: plists in `~/Library/LaunchAgents` (or `/Library/LaunchDaemons`), driven with
//! `launchctl bootstrap|bootout|kickstart|print` (launchctl(1), macOS 10.11+ syntax).
//! Compiled everywhere so its sequences are tested on Linux; only macOS selects it.

use std::path::{Path, PathBuf};

use super::host::{Cmd, Host};
use super::must;
use super::render;
use super::{InstallError, Outcome};
use super::{Scope, Service, UnitSpec};

/// How long `bootout` may take to remove a job before we give up waiting.
const BOOTOUT_WAIT_MS: u64 = 10_000;
const POLL_MS: u64 = 100;

/// `gui/<uid>` for the logged-in user's agents, `system` for daemons.
pub fn domain(scope: Scope, uid: u32) -> String {
    match scope {
        Scope::User => format!("gui/{uid}"),
        Scope::System => "system".into(),
    }
}

pub fn plist_dir(scope: Scope, home: &Path) -> PathBuf {
    match scope {
        Scope::User => home.join("Library/LaunchAgents"),
        Scope::System => PathBuf::from("/Library/LaunchDaemons"),
    }
}

fn target(domain: &str, s: Service) -> String {
    format!("{domain}/{}", s.label())
}

/// `launchctl print` succeeds only for a job loaded in the domain.
pub fn loaded(host: &mut dyn Host, domain: &str, s: Service) -> bool {
    host.query(&Cmd::new("launchctl", ["print", &target(domain, s)]))
        .is_ok_and(|o| o.success())
}

/// `bootout` returns before the job is gone; a `bootstrap` right after fails with
/// "service already loaded", so poll until `print` no longer finds it.
pub fn bootout(host: &mut dyn Host, domain: &str, s: Service) -> Result<(), InstallError> {
    let t = target(domain, s);
    let _ = host.change(&Cmd::new("launchctl", ["bootout", &t]));
    if host.dry_run() {
        return Ok(());
    }
    let mut waited = 0;
    while loaded(host, domain, s) {
        if waited >= BOOTOUT_WAIT_MS {
            return Err(InstallError::Command {
                cmd: format!("launchctl bootout {t}"),
                message: format!("{t} was still loaded after {}s", BOOTOUT_WAIT_MS / 1000),
            });
        }
        host.sleep_ms(POLL_MS);
        waited += POLL_MS;
    }
    Ok(())
}

/// Loads a job from its plist (launchd then listens on its socket).
pub fn bootstrap(
    host: &mut dyn Host,
    domain: &str,
    dir: &Path,
    s: Service,
) -> Result<(), InstallError> {
    // A job disabled earlier (`launchctl disable`) refuses to bootstrap; enabling is idempotent.
    must(host, &Cmd::new("launchctl", ["enable", &target(domain, s)]))?;
    let plist = dir.join(s.plist_name());
    must(
        host,
        &Cmd::new("launchctl", ["bootstrap", domain, &plist.to_string_lossy()]),
    )
}

pub fn install(
    host: &mut dyn Host,
    spec: &UnitSpec,
    dir: &Path,
    domain: &str,
) -> Result<Outcome, InstallError> {
    let mut changed_any = false;
    // launchd opens StandardErrorPath but does not create its directory.
    if !host.dry_run() {
        crate::marker::create_dir_all_marked(&spec.launchd_log_dir)
            .map_err(|e| InstallError::io(&spec.launchd_log_dir, e))?;
    }
    for (f, s) in render::launchd_plists(spec).into_iter().zip(Service::ALL) {
        let path = dir.join(&f.name);
        let existing = host
            .read_file(&path)
            .map_err(|e| InstallError::io(&path, e))?;
        let was_loaded = loaded(host, domain, s);
        let changed = existing.as_deref() != Some(f.text.as_str());
        if !changed && !was_loaded {
            // Ours but unloaded: the port must be free for launchd to take it.
            check_port(host, spec, s)?;
        }
        if changed {
            if !was_loaded {
                check_port(host, spec, s)?;
            }
            host.write_file(&path, &f.text)
                .map_err(|e| InstallError::io(&path, e))?;
            if was_loaded {
                bootout(host, domain, s)?;
            }
        }
        let action = match (&existing, changed) {
            (None, _) => "created",
            (Some(_), true) => "updated",
            (Some(_), false) => "unchanged",
        };
        host.say(&format!(
            "  {:<22} {:<9} {}",
            f.name,
            action,
            path.display()
        ));
        if changed || !was_loaded {
            bootstrap(host, domain, dir, s)?;
            changed_any = true;
        }
    }
    Ok(Outcome {
        changed: changed_any,
    })
}

fn check_port(host: &mut dyn Host, spec: &UnitSpec, s: Service) -> Result<(), InstallError> {
    let port = spec.port(s);
    if host.port_free(port) {
        Ok(())
    } else {
        Err(InstallError::PortInUse {
            service: s,
            port,
            socket_active: false,
        })
    }
}

pub fn uninstall(host: &mut dyn Host, dir: &Path, domain: &str) -> Result<bool, InstallError> {
    let mut did = false;
    for s in Service::ALL {
        if loaded(host, domain, s) {
            bootout(host, domain, s)?;
            did = true;
        }
        let path = dir.join(s.plist_name());
        if host
            .remove_file(&path)
            .map_err(|e| InstallError::io(&path, e))?
        {
            host.say(&format!("  removed {}", path.display()));
            did = true;
        }
    }
    Ok(did)
}

/// `kickstart` starts the job now; `-k` kills a running instance first (restart).
pub fn kickstart(
    host: &mut dyn Host,
    domain: &str,
    s: Service,
    kill: bool,
) -> Result<(), InstallError> {
    let t = target(domain, s);
    let args: Vec<&str> = if kill {
        vec!["kickstart", "-k", &t]
    } else {
        vec!["kickstart", &t]
    };
    must(host, &Cmd::new("launchctl", args))
}

/// The `state = …` and `pid = …` lines of `launchctl print`, or None when not loaded.
/// (`print` output is documented as not an API; we only show these two fields.)
pub fn status(host: &mut dyn Host, domain: &str, s: Service) -> Option<(String, Option<String>)> {
    let out = host
        .query(&Cmd::new("launchctl", ["print", &target(domain, s)]))
        .ok()?;
    if !out.success() {
        return None;
    }
    let field = |name: &str| {
        out.stdout.lines().find_map(|l| {
            l.trim()
                .strip_prefix(name)
                .and_then(|r| r.trim_start().strip_prefix('='))
                .map(|v| v.trim().to_string())
        })
    };
    Some((
        field("state").unwrap_or_else(|| "loaded".into()),
        field("pid"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::host::fake::Fake;

    #[test]
    fn install_bootstraps_then_is_idempotent() {
        let mut spec = UnitSpec::reference();
        let tmp = std::env::temp_dir().join(format!("cco-launchd-test-{}", std::process::id()));
        spec.launchd_log_dir = tmp.clone();
        let dir = Path::new("/Users/you/Library/LaunchAgents");
        let mut f = Fake::default();
        install(&mut f, &spec, dir, "gui/501").unwrap();
        insta::assert_snapshot!("launchd_install", f.transcript());
        // Now loaded: nothing to do.
        for s in Service::ALL {
            f.answer(
                &format!("launchctl print gui/501/{}", s.label()),
                "state = waiting\n",
            );
        }
        f.changes.clear();
        let out = install(&mut f, &spec, dir, "gui/501").unwrap();
        assert!(!out.changed && f.changes.is_empty(), "{:?}", f.changes);
        let _ = std::fs::remove_dir_all(tmp);
    }

    #[test]
    fn status_reads_state_and_pid() {
        let mut f = Fake::default();
        f.answer(
            "launchctl print gui/501/dev.cco.daemon",
            "gui/501/dev.cco.daemon = {\n\tactive count = 1\n\tstate = running\n\tpid = 4242\n}\n",
        );
        assert_eq!(
            status(&mut f, "gui/501", Service::Daemon),
            Some(("running".into(), Some("4242".into())))
        );
        assert_eq!(status(&mut f, "gui/501", Service::Sidecar), None);
    }
}
