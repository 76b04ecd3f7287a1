//! systemd: where units go, how to ask the manager about them, and the install, uninstall
//! and start/stop/restart/status sequences as `systemctl` calls through a [`Host`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::host::{Cmd, Host};
use super::render::{self, UnitFile};
// `must` lives in service/mod.rs, shared with launchd; re-exported for the operate commands.
pub use super::must;
use super::{DetectError, InstallError, Outcome};
use super::{Scope, Service, UnitSpec};

/// Where distribution packages put user units (`cargo deb` ships ours there).
pub const PACKAGED_USER_DIR: &str = "/usr/lib/systemd/user";
/// System-scope units written by `cco install --system`.
pub const SYSTEM_DIR: &str = "/etc/systemd/system";

/// Manager states in which `systemctl` calls work.
const USABLE_STATES: &[&str] = &[
    "running",
    "degraded",
    "starting",
    "initializing",
    "maintenance",
];

pub fn ctl(scope: Scope, args: &[&str]) -> Cmd {
    let mut v: Vec<String> = Vec::new();
    if scope == Scope::User {
        v.push("--user".into());
    }
    v.extend(args.iter().map(|s| s.to_string()));
    Cmd::new("systemctl", v)
}

/// Is a systemd manager of this scope reachable? `Err` carries why not, for the message.
pub fn detect(host: &mut dyn Host, scope: Scope) -> Result<(), DetectError> {
    let cmd = ctl(scope, &["is-system-running"]);
    match host.query(&cmd) {
        Err(error) => Err(DetectError::Unavailable {
            cmd: cmd.program.clone(),
            error,
        }),
        Ok(o) if USABLE_STATES.contains(&o.stdout.trim()) => Ok(()),
        Ok(o) => Err(DetectError::Unusable {
            cmd: cmd.to_string(),
            said: o.message(),
        }),
    }
}

/// `$XDG_CONFIG_HOME/systemd/user` (default `~/.config/systemd/user`) or `/etc/systemd/system`.
pub fn unit_dir(scope: Scope, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    match scope {
        Scope::System => Some(PathBuf::from(SYSTEM_DIR)),
        Scope::User => env("XDG_CONFIG_HOME")
            .filter(|p| Path::new(p).is_absolute())
            .map(PathBuf::from)
            .or_else(|| {
                env("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|h| Path::new(&h).join(".config"))
            })
            .map(|c| c.join("systemd/user")),
    }
}

/// What `systemctl show` says about one unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    pub load: String,
    pub active: String,
    pub sub: String,
    pub file_state: String,
    pub fragment: String,
    pub listen: String,
    pub main_pid: String,
    /// The file on disk differs from what the manager loaded (`daemon-reload` pending).
    pub need_reload: bool,
}

impl UnitState {
    pub fn installed(&self) -> bool {
        !self.load.is_empty() && self.load != "not-found"
    }
    pub fn active(&self) -> bool {
        self.active == "active"
    }
    /// The address a socket unit listens on now (`127.0.0.1:3000` of `127.0.0.1:3000 (Stream)`).
    pub fn listen_addr(&self) -> &str {
        self.listen.split_whitespace().next().unwrap_or("")
    }
}

pub fn state(host: &mut dyn Host, scope: Scope, unit: &str) -> UnitState {
    let cmd = ctl(
        scope,
        &[
            "show",
            "-p",
            "LoadState,ActiveState,SubState,UnitFileState,FragmentPath,Listen,MainPID,NeedDaemonReload",
            unit,
        ],
    );
    let out = host.query(&cmd).map(|o| o.stdout).unwrap_or_default();
    let kv: HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| kv.get(k).copied().unwrap_or("").to_string();
    UnitState {
        load: get("LoadState"),
        active: get("ActiveState"),
        sub: get("SubState"),
        file_state: get("UnitFileState"),
        fragment: get("FragmentPath"),
        listen: get("Listen"),
        main_pid: get("MainPID"),
        need_reload: get("NeedDaemonReload") == "yes",
    }
}

/// Where each rendered unit goes and what becomes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    Created,
    Updated,
    Unchanged,
    /// A packaged copy under /usr/lib/systemd/user is identical: enable that one.
    Packaged,
}

impl FileAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FileAction::Created => "created",
            FileAction::Updated => "updated",
            FileAction::Unchanged => "unchanged",
            FileAction::Packaged => "packaged",
        }
    }
}

/// Writes the units, reloads, restarts what changed and enables the two sockets.
pub fn install(
    host: &mut dyn Host,
    spec: &UnitSpec,
    dir: &Path,
    packaged_dir: Option<&Path>,
) -> Result<Outcome, InstallError> {
    let scope = spec.scope;
    let before: HashMap<Service, UnitState> = Service::ALL
        .iter()
        .map(|&s| (s, state(host, scope, &s.socket_unit())))
        .collect();
    let services: HashMap<Service, UnitState> = Service::ALL
        .iter()
        .map(|&s| (s, state(host, scope, &s.service_unit())))
        .collect();
    let want = |s: Service| format!("127.0.0.1:{}", spec.port(s));

    // Ports: free, or held by our own socket unit.
    for s in Service::ALL {
        let port = spec.port(s);
        let ours = before[&s].active() && before[&s].listen_addr() == want(s);
        if !ours && !host.port_free(port) {
            return Err(InstallError::PortInUse {
                service: s,
                port,
                socket_active: before[&s].active(),
            });
        }
    }

    // true: rewritten over an older version (a running service must restart); false: new.
    let mut changed: HashMap<String, bool> = HashMap::new();
    let units = render::systemd_units(spec);
    for UnitFile { name, text } in &units {
        let target = dir.join(name);
        let packaged = match packaged_dir {
            Some(p) if scope == Scope::User => host.read_file(&p.join(name)).ok().flatten(),
            _ => None,
        };
        let existing = host
            .read_file(&target)
            .map_err(|e| InstallError::io(&target, e))?;
        let action = if packaged.as_deref() == Some(text.as_str()) {
            // Our own copy would shadow the package's; drop it.
            if existing.is_some() {
                host.remove_file(&target)
                    .map_err(|e| InstallError::io(&target, e))?;
                changed.insert(name.clone(), true);
            }
            FileAction::Packaged
        } else {
            match existing {
                Some(t) if &t == text => FileAction::Unchanged,
                other => {
                    host.write_file(&target, text)
                        .map_err(|e| InstallError::io(&target, e))?;
                    changed.insert(name.clone(), true);
                    if other.is_some() {
                        FileAction::Updated
                    } else {
                        FileAction::Created
                    }
                }
            }
        };
        let shown = match action {
            FileAction::Packaged => packaged_dir.unwrap_or(dir).join(name),
            _ => target,
        };
        host.say(&format!(
            "  {:<20} {:<9} {}",
            name,
            action.as_str(),
            shown.display()
        ));
    }
    // What runs, not only what is written: an install interrupted after writing leaves the
    // files current while the manager still runs the old ones (or listens on the old port).
    for s in Service::ALL {
        let socket = &before[&s];
        if socket.active()
            && socket.listen_addr() != want(s)
            && !changed.contains_key(&s.socket_unit())
        {
            host.say(&format!(
                "  {:<20} listens on {}, not {} — restarting it",
                s.socket_unit(),
                socket.listen_addr(),
                want(s)
            ));
            changed.insert(s.socket_unit(), true);
        }
        for (unit, st) in [(s.socket_unit(), socket), (s.service_unit(), &services[&s])] {
            if st.need_reload {
                host.say(&format!(
                    "  {unit:<20} not yet loaded by systemd — reloading"
                ));
                changed.insert(unit, true);
            }
        }
    }
    let any_changed = !changed.is_empty();
    let is_changed = |u: &str| changed.get(u).copied().unwrap_or(false);

    if any_changed {
        must(host, &ctl(scope, &["daemon-reload"]))?;
    }
    for s in Service::ALL {
        if is_changed(&s.socket_unit()) && before[&s].active() {
            // A new port: the running service still holds the old socket; stop both.
            must(host, &ctl(scope, &["stop", &s.service_unit()]))?;
            must(host, &ctl(scope, &["restart", &s.socket_unit()]))?;
        } else if is_changed(&s.service_unit()) {
            // A moved binary: restart only a running service; the socket starts the rest.
            must(host, &ctl(scope, &["try-restart", &s.service_unit()]))?;
        }
    }
    let all_enabled = Service::ALL
        .iter()
        .all(|s| before[s].active() && before[s].file_state == "enabled");
    if any_changed || !all_enabled {
        let sockets: Vec<String> = Service::ALL.iter().map(|s| s.socket_unit()).collect();
        let mut args = vec!["enable", "--now"];
        args.extend(sockets.iter().map(String::as_str));
        must(host, &ctl(scope, &args))?;
    }
    Ok(Outcome {
        changed: any_changed || !all_enabled,
    })
}

/// Stops and disables everything, removes our unit files, reloads, forgets failures.
pub fn uninstall(host: &mut dyn Host, scope: Scope, dir: &Path) -> Result<bool, InstallError> {
    let sockets: Vec<String> = Service::ALL.iter().map(|s| s.socket_unit()).collect();
    let services: Vec<String> = Service::ALL.iter().map(|s| s.service_unit()).collect();
    let states: Vec<UnitState> = sockets
        .iter()
        .chain(&services)
        .map(|u| state(host, scope, u))
        .collect();
    let known = states.iter().any(UnitState::installed);
    let mut did = false;
    if known {
        let mut args = vec!["disable", "--now"];
        args.extend(sockets.iter().map(String::as_str));
        // Best effort: a half-installed set must not stop the clean-up.
        let _ = host.change(&ctl(scope, &args));
        let mut args = vec!["stop"];
        args.extend(services.iter().map(String::as_str));
        let _ = host.change(&ctl(scope, &args));
        did = true;
    }
    for name in sockets.iter().chain(&services) {
        let path = dir.join(name);
        if host
            .remove_file(&path)
            .map_err(|e| InstallError::io(&path, e))?
        {
            host.say(&format!("  removed {}", path.display()));
            did = true;
        }
    }
    if did {
        must(host, &ctl(scope, &["daemon-reload"]))?;
        let mut args = vec!["reset-failed"];
        args.extend(services.iter().chain(&sockets).map(String::as_str));
        // Fails when nothing is in the failed state, which is the usual case.
        let _ = host.change(&ctl(scope, &args));
    }
    for s in &states {
        if s.installed() && s.fragment.starts_with(PACKAGED_USER_DIR) {
            host.say(&format!(
                "  {} comes from a package and stays (disabled); remove the package to delete it",
                s.fragment
            ));
        }
    }
    Ok(did)
}

/// The `ExecStart=` binary of an installed service unit file, unquoted.
pub fn exec_binary(unit_text: &str) -> Option<String> {
    let line = unit_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))?;
    let line = line.trim_start_matches(['@', '-', ':', '+', '!']);
    let first = if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => out.push(chars.next().unwrap_or('\\')),
                c => out.push(c),
            }
        }
        out
    } else {
        line.split_whitespace().next()?.to_string()
    };
    Some(first.replace("%%", "%").replace("$$", "$"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::host::fake::Fake;
    use crate::service::render::exec_arg;

    fn spec(bin: &str, port: u16) -> UnitSpec {
        UnitSpec {
            bin: bin.into(),
            daemon_port: port,
            ..UnitSpec::reference()
        }
    }

    const SHOW: &str = "show -p LoadState,ActiveState,SubState,UnitFileState,FragmentPath,Listen,MainPID,NeedDaemonReload";

    fn socket_up(f: &mut Fake, s: Service, port: u16) {
        f.answer(
            &format!("systemctl --user {SHOW} {}", s.socket_unit()),
            &format!("LoadState=loaded\nActiveState=active\nSubState=listening\nUnitFileState=enabled\nListen=127.0.0.1:{port} (Stream)\n"),
        );
    }

    #[test]
    fn fresh_install_then_unchanged_then_moved_binary() {
        let dir = Path::new("/u/.config/systemd/user");
        let mut f = Fake::default();
        install(&mut f, &spec("/usr/bin/cco", 3000), dir, None).unwrap();
        insta::assert_snapshot!("fresh_install", f.transcript());
        assert_eq!(f.files.len(), 4);

        // Second run: sockets are up and enabled, files identical → nothing to do.
        socket_up(&mut f, Service::Daemon, 3000);
        socket_up(&mut f, Service::Sidecar, 3001);
        f.busy_ports = vec![3000, 3001];
        f.changes.clear();
        let out = install(&mut f, &spec("/usr/bin/cco", 3000), dir, None).unwrap();
        assert!(!out.changed);
        assert!(f.changes.is_empty(), "{:?}", f.changes);

        // The binary moved: both services are rewritten and restarted if running.
        f.lines.clear();
        let out = install(&mut f, &spec("/opt/cco/bin/cco", 3000), dir, None).unwrap();
        assert!(out.changed);
        insta::assert_snapshot!("moved_binary", f.transcript());

        // The daemon port changed: its running service lets go of the old socket.
        f.lines.clear();
        f.busy_ports = vec![3001];
        install(&mut f, &spec("/opt/cco/bin/cco", 3002), dir, None).unwrap();
        insta::assert_snapshot!("new_port", f.transcript());
    }

    /// The hostile round's instance: a port change interrupted after the files were written
    /// left the socket on the old port, and a re-run said "unchanged". It must restart it.
    #[test]
    fn an_interrupted_port_change_is_healed() {
        let dir = Path::new("/u/.config/systemd/user");
        let mut f = Fake::default();
        // The new units (daemon on 3002) are on disk; the manager still listens on 3000.
        for u in render::systemd_units(&spec("/usr/bin/cco", 3002)) {
            f.files.insert(dir.join(&u.name), u.text);
        }
        socket_up(&mut f, Service::Daemon, 3000);
        socket_up(&mut f, Service::Sidecar, 3001);
        f.busy_ports = vec![3000, 3001];
        let out = install(&mut f, &spec("/usr/bin/cco", 3002), dir, None).unwrap();
        assert!(out.changed);
        assert!(f.files.len() == 4 && !f.changes.iter().any(|c| c.starts_with("write")));
        insta::assert_snapshot!("healed_port", f.transcript());
        assert!(
            f.changes
                .contains(&"systemctl --user restart cco-daemon.socket".to_string()),
            "{:?}",
            f.changes
        );
    }

    #[test]
    fn a_unit_systemd_has_not_reloaded_is_reloaded() {
        let dir = Path::new("/u/.config/systemd/user");
        let mut f = Fake::default();
        for u in render::systemd_units(&spec("/usr/bin/cco", 3000)) {
            f.files.insert(dir.join(&u.name), u.text);
        }
        socket_up(&mut f, Service::Daemon, 3000);
        socket_up(&mut f, Service::Sidecar, 3001);
        f.answer(
            &format!("systemctl --user {SHOW} cco-daemon.service"),
            "LoadState=loaded\nActiveState=active\nNeedDaemonReload=yes\n",
        );
        f.busy_ports = vec![3000, 3001];
        let out = install(&mut f, &spec("/usr/bin/cco", 3000), dir, None).unwrap();
        assert!(out.changed);
        assert_eq!(
            f.changes,
            [
                "systemctl --user daemon-reload",
                "systemctl --user try-restart cco-daemon.service",
                "systemctl --user enable --now cco-daemon.socket cco-sidecar.socket",
            ]
        );
    }

    #[test]
    fn a_foreign_listener_is_refused_with_the_fix() {
        let mut f = Fake {
            busy_ports: vec![3000],
            ..Fake::default()
        };
        let err = install(&mut f, &spec("/usr/bin/cco", 3000), Path::new("/d"), None).unwrap_err();
        insta::assert_snapshot!("port_in_use", err.to_string());
        assert!(f.changes.is_empty());
    }

    #[test]
    fn packaged_units_are_enabled_not_shadowed() {
        let dir = Path::new("/u/.config/systemd/user");
        let mut f = Fake::default();
        for u in render::systemd_units(&UnitSpec::reference()) {
            f.files
                .insert(Path::new(PACKAGED_USER_DIR).join(&u.name), u.text);
        }
        // A stale copy of ours from before the package was installed.
        f.files.insert(dir.join("cco-daemon.socket"), "old".into());
        install(
            &mut f,
            &UnitSpec::reference(),
            dir,
            Some(Path::new(PACKAGED_USER_DIR)),
        )
        .unwrap();
        insta::assert_snapshot!("packaged", f.transcript());
        assert!(!f.files.contains_key(&dir.join("cco-daemon.socket")));
    }

    #[test]
    fn uninstall_stops_disables_removes() {
        let dir = Path::new("/u/.config/systemd/user");
        let mut f = Fake::default();
        install(&mut f, &UnitSpec::reference(), dir, None).unwrap();
        socket_up(&mut f, Service::Daemon, 3000);
        f.lines.clear();
        assert!(uninstall(&mut f, Scope::User, dir).unwrap());
        insta::assert_snapshot!("uninstall", f.transcript());
        assert!(f.files.is_empty());
    }

    #[test]
    fn exec_binary_round_trips_the_renderer() {
        for bin in ["/usr/bin/cco", "/home/a b/100%/$x/\"c\\o\"", "/opt/é/cco"] {
            let unit = format!("[Service]\nExecStart={} daemon run\n", exec_arg(bin));
            assert_eq!(exec_binary(&unit).as_deref(), Some(bin), "{unit}");
        }
    }

    #[test]
    fn detection() {
        let mut f = Fake::default();
        assert!(detect(&mut f, Scope::User).is_err());
        f.answer("systemctl --user is-system-running", "degraded\n");
        assert!(detect(&mut f, Scope::User).is_ok());
        f.fail(
            "systemctl --user is-system-running",
            "Failed to connect to bus: No medium found",
        );
        let e = detect(&mut f, Scope::User).unwrap_err();
        assert!(matches!(e, DetectError::Unusable { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "`systemctl --user is-system-running` said: Failed to connect to bus: No medium found"
        );
    }
}
