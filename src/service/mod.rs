//! Service-manager integration: what to install ([`plan`]), unit rendering (pure, [`render`]),
//! side effects behind [`host::Host`], the sequences on systemd ([`systemd`]), launchd
//! ([`launchd`]) or none ([`detached`]); program trust ([`trust`]) and the purge ([`purge`]).

pub mod detached;
pub mod host;
pub mod install;
pub mod launchd;
pub mod plan;
pub mod purge;
pub mod render;
pub mod systemd;

use std::path::{Path, PathBuf};

/// The service manager cco registers its sockets with.
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

/// Why this machine has no usable service manager: the reason inside `cco install`'s message.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// `systemctl` itself could not be run (not installed, not executable).
    #[error("`{cmd}` cannot run: {error}")]
    Unavailable { cmd: String, error: std::io::Error },
    /// The manager answered, in a state in which `systemctl` calls do not work.
    #[error("`{cmd}` said: {said}")]
    Unusable { cmd: String, said: String },
}

/// Why `cco install`/`cco uninstall` stopped; each message ends with the fix.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "no service manager to install into ({reason}); this looks like a container or CI \
         without a systemd user session — run both services detached instead: `cco daemon start`"
    )]
    NoManager { reason: DetectError },
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
    #[error(
        "{path} contains {what}, which systemd cannot run from a unit's ExecStart= — copy cco to \
         a directory whose path has no `$`, quotes, backslashes or control characters and \
         install from there: `install -Dm755 {} ~/.local/bin/cco && ~/.local/bin/cco install`",
        host::shell_quote(&path.to_string_lossy())
    )]
    UnitPath { path: PathBuf, what: String },
    #[error(transparent)]
    Untrusted(#[from] crate::trust::TrustError),
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

/// Runs a change and turns a failure into an error that shows the command.
pub fn must(host: &mut dyn host::Host, cmd: &host::Cmd) -> Result<(), InstallError> {
    let out = host.change(cmd).map_err(|e| InstallError::Command {
        cmd: cmd.to_string(),
        message: e.to_string(),
    })?;
    if out.success() {
        Ok(())
    } else {
        Err(InstallError::Command {
            cmd: cmd.to_string(),
            message: out.message(),
        })
    }
}

/// What a manager-specific install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// False when every unit was already in place and running: a no-op.
    pub changed: bool,
}

/// The two socket-activated processes cco installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Daemon,
    Sidecar,
}

impl Service {
    pub const ALL: [Service; 2] = [Service::Daemon, Service::Sidecar];

    /// The subcommand (`cco daemon run`) and the socket's `FileDescriptorName=`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Daemon => "daemon",
            Service::Sidecar => "sidecar",
        }
    }
    pub fn socket_unit(self) -> String {
        format!("cco-{}.socket", self.name())
    }
    pub fn service_unit(self) -> String {
        format!("cco-{}.service", self.name())
    }
    /// launchd job label (reverse-DNS, as launchd.plist(5) asks).
    pub fn label(self) -> String {
        format!("dev.cco.{}", self.name())
    }
    pub fn plist_name(self) -> String {
        format!("{}.plist", self.label())
    }
    pub fn port(self, config: &crate::config::Config) -> u16 {
        match self {
            Service::Daemon => config.daemon.port,
            Service::Sidecar => config.sidecar.port,
        }
    }
}

/// User scope (the default: the user's own manager) or system scope (shared hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    User,
    System,
}

/// The account a system-scope unit runs as; user units run as their owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Everything the unit text depends on. Rendering is a pure function of this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    pub bin: PathBuf,
    pub daemon_port: u16,
    pub sidecar_port: u16,
    pub scope: Scope,
    /// Extra environment so the service resolves the same installation as the user's shell.
    pub env: Vec<(String, String)>,
    /// System scope only.
    pub run_as: Option<RunAs>,
    /// launchd: where `StandardErrorPath` points (launchd does not expand `~`).
    pub launchd_log_dir: PathBuf,
}

/// Where the checked-in reference units point; packages install the binary there.
pub const REFERENCE_BIN: &str = "/usr/bin/cco";
/// Home directory the reference plists use (launchd needs absolute log paths).
pub const REFERENCE_HOME: &str = "/Users/you";

impl UnitSpec {
    /// The spec of the checked-in units under `systemd/` and `launchd/`.
    pub fn reference() -> UnitSpec {
        UnitSpec {
            bin: PathBuf::from(REFERENCE_BIN),
            daemon_port: 3000,
            sidecar_port: 3001,
            scope: Scope::User,
            env: Vec::new(),
            run_as: None,
            launchd_log_dir: launchd_log_dir(Path::new(REFERENCE_HOME)),
        }
    }

    pub fn port(&self, s: Service) -> u16 {
        match s {
            Service::Daemon => self.daemon_port,
            Service::Sidecar => self.sidecar_port,
        }
    }
}

/// `~/Library/Logs/cco`, where macOS users look for agent logs (Console.app lists it).
pub fn launchd_log_dir(home: &Path) -> PathBuf {
    home.join("Library/Logs/cco")
}

/// Environment variables the installer copies into the units when the user's shell sets
/// them: without them the service could resolve another config, data dir or port — or seal
/// a weaker hook policy than the user asked for. Every `CCO_*` variable the config loader
/// reads must be here (a test enforces it).
pub const PASSED_ENV: &[&str] = &[
    "CCO_CONFIG",
    "CCO_DATA_DIR",
    "CCO_RUNTIME_DIR",
    "CCO_DAEMON_PORT",
    "CCO_SIDECAR_PORT",
    "CCO_CLAUDE",
    "CCO_IDLE_EXIT_AFTER",
    "CCO_LOG",
    "CCO_HOOKS_ENABLED",
    "CCO_HOOKS_TRANSPORT",
    "CCO_MCP",
    "CCO_AUTO_ALLOW_READ",
    "CCO_REQUIRE_CUD_CONFIRMATION",
    "CCO_STORE_BACKEND",
    "CCO_NATS_SERVERS",
    "CCO_STORE_NAMESPACE",
    "CCO_STORE_REPLICAS",
    "RUST_LOG",
];

/// The environment a service needs to find the installation the user's shell finds.
/// `config_file` is the resolved config path; it is passed when it is not the default the
/// service would compute from `HOME` alone (e.g. the shell sets `XDG_CONFIG_HOME`).
pub fn service_env(
    env: &dyn Fn(&str) -> Option<String>,
    config_file: &Path,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = PASSED_ENV
        .iter()
        .filter_map(|k| env(k).filter(|v| !v.is_empty()).map(|v| (k.to_string(), v)))
        .collect();
    let default = env("HOME").map(|h| Path::new(&h).join(".config/cco/daemon.toml"));
    if !out.iter().any(|(k, _)| k == "CCO_CONFIG") && default.as_deref() != Some(config_file) {
        out.push(("CCO_CONFIG".into(), config_file.display().to_string()));
    }
    // Sorted, so the unit text does not depend on the order of PASSED_ENV.
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Every `CCO_*` setting the loader reads reaches the installed service; a variable
    /// missing here would make the service seal a different policy than the shell's.
    #[test]
    fn every_cco_variable_the_loader_reads_is_passed() {
        let asked = RefCell::new(Vec::<String>::new());
        let env = |k: &str| {
            asked.borrow_mut().push(k.to_string());
            (k == "HOME").then(|| "/home/a".to_string())
        };
        crate::paths::Installation::load(None, &env).unwrap();
        let asked = asked.into_inner();
        for k in [
            "CCO_REQUIRE_CUD_CONFIRMATION",
            "CCO_AUTO_ALLOW_READ",
            "CCO_CONFIG",
        ] {
            assert!(
                asked.iter().any(|a| a == k),
                "the loader no longer reads {k}"
            );
        }
        for k in asked.iter().filter(|k| k.starts_with("CCO_")) {
            assert!(PASSED_ENV.contains(&k.as_str()), "{k} is not in PASSED_ENV");
        }
    }

    #[test]
    fn hook_policy_reaches_the_service() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/a".to_string()),
            "CCO_REQUIRE_CUD_CONFIRMATION" => Some("true".to_string()),
            "CCO_AUTO_ALLOW_READ" => Some("false".to_string()),
            "CCO_HOOKS_ENABLED" => Some("true".to_string()),
            _ => None,
        };
        let got = service_env(&env, Path::new("/home/a/.config/cco/daemon.toml"));
        assert_eq!(
            got,
            vec![
                ("CCO_AUTO_ALLOW_READ".into(), "false".into()),
                ("CCO_HOOKS_ENABLED".into(), "true".into()),
                ("CCO_REQUIRE_CUD_CONFIRMATION".into(), "true".into()),
            ]
        );
    }

    #[test]
    fn service_env_passes_only_what_differs() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/a".to_string()),
            "CCO_DATA_DIR" => Some("/srv/cco".to_string()),
            "CCO_LOG" => Some(String::new()),
            _ => None,
        };
        let got = service_env(&env, Path::new("/home/a/.config/cco/daemon.toml"));
        assert_eq!(got, vec![("CCO_DATA_DIR".into(), "/srv/cco".into())]);
        let got = service_env(&env, Path::new("/etc/xdg/cco/daemon.toml"));
        assert_eq!(
            got,
            vec![
                ("CCO_CONFIG".into(), "/etc/xdg/cco/daemon.toml".into()),
                ("CCO_DATA_DIR".into(), "/srv/cco".into())
            ]
        );
    }
}
