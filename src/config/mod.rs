//! The one configuration tree. `Default` is the only source of defaults; [`Config::load`]
//! applies the file, then the `CCO_*` environment; callers apply their flags last.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The example file written on first start; every key in it is commented out, so it is
/// exactly the defaults (a test uncomments it and compares with `Config::default()`).
pub const EXAMPLE: &str = include_str!("../../packaging/daemon.toml");

mod load;
mod store;
mod validate;

pub use load::{MAX_CONFIG_BYTES, ParseError};
pub use store::{Backend as StoreBackend, StoreConfig, valid_namespace};
pub use validate::{
    CONTEXT_BUDGET_BYTES, HOOK_TIMEOUT_MS, MAX_BODY_BYTES, MAX_TOKEN_TTL, MIN_IDLE_EXIT,
    MIN_TOKEN_TTL, OutOfRange, RETENTION_AGE, RETENTION_EVENTS, ValueError, check_idle_exit,
    check_token_ttl, parse_idle_exit, parse_token_ttl,
};

/// `idle_exit_after` as the config spells it: `never`, or a duration such as `10m`.
pub fn idle_label(idle: Option<Duration>) -> String {
    match idle {
        None => "never".into(),
        Some(d) => humantime::format_duration(d).to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub sidecar: SidecarConfig,
    /// Private per-user directory for the sealed runtime files.
    pub runtime_dir: Option<PathBuf>,
    /// Results and the event journal live under `<data_dir>/orchestration`.
    pub data_dir: Option<PathBuf>,
    /// Claude Code executable; searched on `PATH` when unset.
    pub claude_path: Option<PathBuf>,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a full tracing filter.
    pub log_level: String,
    /// Exit after this long with no open connection (`"never"`, or `"10m"`, `"30s"`…).
    #[serde(with = "idle")]
    pub idle_exit_after: Option<Duration>,
    pub hooks: HooksConfig,
    pub launcher: LauncherConfig,
    pub store: StoreConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SidecarConfig {
    pub port: u16,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// The journal keeps at most this many events…
    pub retention_events: u64,
    /// …and none older than this (`"7d"`, `"24h"`…).
    #[serde(with = "humantime_serde_compat")]
    pub retention_age: Duration,
    /// Size budget of one context response, in bytes.
    pub context_budget_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// Register cco's hooks in the sealed Claude Code settings.
    pub enabled: bool,
    /// `PreToolUse`: allow read-only tools without asking.
    pub auto_allow_read: bool,
    /// `PreToolUse`: answer `ask` for create/update/delete tools and commands.
    pub require_cud_confirmation: bool,
    /// How long one hook may wait for the sidecar before it gives up silently.
    pub timeout_ms: u64,
    /// How Claude Code reaches the hooks: `http` (POST to the daemon) or `command`
    /// (`cco hook <event>` processes). SessionStart is a command hook either way.
    pub transport: HookTransport,
}

/// `hooks.transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HookTransport {
    /// `type: "http"` hooks served by the daemon at `/hooks/<event>`: no process per hook.
    #[default]
    Http,
    /// `type: "command"` hooks: one `cco hook <event>` process per call.
    Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LauncherConfig {
    /// Pass the sealed rules with `--append-system-prompt`.
    pub append_rules: bool,
    /// Pass the sealed roster with `--agents` (unless the user passed their own).
    pub pass_agents: bool,
    /// Which agents of the roster to pass: `"auto"` (a core plus the project's
    /// specialists), `"all"`, `"none"`, or a list of names; `cco --roster` for one launch.
    pub roster: crate::roster::RosterChoice,
    /// Pass the sealed `mcp.json` with `--mcp-config`: cco's MCP server (`mcp__cco__*`
    /// tools) for the session and its agents. A user's own `--mcp-config` is kept beside it.
    pub mcp: bool,
    /// Lifetime of the session token the launcher mints.
    #[serde(with = "humantime_serde_compat")]
    pub token_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            daemon: DaemonConfig::default(),
            sidecar: SidecarConfig::default(),
            runtime_dir: None,
            data_dir: None,
            claude_path: None,
            log_level: "info".into(),
            idle_exit_after: None,
            hooks: HooksConfig::default(),
            launcher: LauncherConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig { port: 3000 }
    }
}

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            port: 3001,
            max_body_bytes: 1024 * 1024,
            retention_events: 100_000,
            retention_age: Duration::from_secs(7 * 24 * 3600),
            context_budget_bytes: 256 * 1024,
        }
    }
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            enabled: true,
            auto_allow_read: true,
            require_cud_confirmation: false,
            timeout_ms: 2000,
            transport: HookTransport::default(),
        }
    }
}

impl Default for LauncherConfig {
    fn default() -> Self {
        LauncherConfig {
            append_rules: true,
            pass_agents: true,
            roster: crate::roster::RosterChoice::Auto,
            mcp: true,
            token_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} — check its permissions or set CCO_CONFIG")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "bad config file {path}: {cause} — fix that key or delete the file to get the defaults back"
    )]
    Parse { path: PathBuf, cause: ParseError },
    #[error(
        "config file {path} is a symlink owned by another user; cco refuses to follow it (the config \
         names the program cco runs) — put your own file there: `cp \"$(readlink -f {path})\" {path}.new && mv {path}.new {path}`"
    )]
    Symlink { path: PathBuf },
    /// Owned by someone else, or writable by group/others (the file or its directory).
    #[error("refusing the config: {0}")]
    Untrusted(crate::securefs::PathError),
    /// Not a regular file (a FIFO, a device), or far larger than any config.
    #[error("cannot use the config: {0}")]
    Unusable(crate::securefs::PathError),
    #[error(
        "bad value {value:?} in environment variable {var}: expected {expected} — fix it or `unset {var}`"
    )]
    Env {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("bad value in environment variable {var}: {cause} — fix it or `unset {var}`")]
    EnvValue {
        var: &'static str,
        cause: ValueError,
    },
    /// A key parsed but its value is not allowed.
    #[error(
        "bad config file {path}: {key} {problem} — fix `{key}` in {path}, or remove it to get the default back"
    )]
    Value {
        path: PathBuf,
        key: &'static str,
        problem: OutOfRange,
    },
}

/// An absolute path, or a bare program name (looked up on `PATH`); not a relative path,
/// which would depend on the directory `cco` happens to run in.
fn is_program(p: &Path) -> bool {
    p.is_absolute()
        || matches!(
            p.components().collect::<Vec<_>>().as_slice(),
            [std::path::Component::Normal(_)]
        )
}

/// `idle_exit_after`: `"never"` (or absent) or a humantime duration.
mod idle {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn parse(s: &str) -> Result<Option<Duration>, humantime::DurationError> {
        match s.trim() {
            "" | "never" | "off" => Ok(None),
            other => humantime::parse_duration(other).map(Some),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_str("never"),
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{e}: expected \"never\" or a duration such as \"10m\""
            ))
        })
    }
}

/// A `Duration` written as a humantime string (`"7d"`, `"90s"`).
mod humantime_serde_compat {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{e}: expected a duration such as \"24h\""))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn example_file_is_the_defaults() {
        // Commented out it parses to the defaults…
        assert_eq!(Config::parse(EXAMPLE).unwrap(), Config::default());
        // …and uncommented too, so the comments never lie about a default.
        let uncommented: String = EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                // Optional paths have no default value to show; their lines are examples.
                Some(rest)
                    if ["runtime_dir", "data_dir", "claude_path"]
                        .iter()
                        .any(|k| rest.starts_with(k)) =>
                {
                    l
                }
                Some(rest) if rest.contains(" = ") || rest.starts_with('[') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(uncommented, EXAMPLE, "the example has no commented keys");
        assert_eq!(Config::parse(&uncommented).unwrap(), Config::default());
    }

    #[test]
    fn precedence_is_defaults_file_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        std::fs::write(&path, "[daemon]\nport = 4000\n[sidecar]\nport = 4001\n").unwrap();
        let c = Config::load(&path, &no_env).unwrap();
        assert_eq!((c.daemon.port, c.sidecar.port), (4000, 4001));

        let env: HashMap<&str, &str> =
            [("CCO_DAEMON_PORT", "5000"), ("CCO_AUTO_ALLOW_READ", "no")].into();
        let c = Config::load(&path, &|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!((c.daemon.port, c.sidecar.port), (5000, 4001));
        assert!(!c.hooks.auto_allow_read);
    }

    #[test]
    fn missing_file_is_defaults() {
        let c = Config::load(Path::new("/nonexistent/cco/daemon.toml"), &no_env).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn bad_file_names_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        std::fs::write(&path, "log_level = \"info\"\n[daemon]\nprot = 3000\n").unwrap();
        let err = Config::load(&path, &no_env).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("prot"), "{err}");

        std::fs::write(&path, "[daemon]\nport = \"x\"\n").unwrap();
        let err = Config::load(&path, &no_env).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");

        std::fs::write(&path, "idle_exit_after = \"soon\"\n").unwrap();
        let err = Config::load(&path, &no_env).unwrap_err().to_string();
        assert!(
            err.contains("idle_exit_after") || err.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn bad_env_is_named() {
        let err = Config::load(Path::new("/nonexistent"), &|k| {
            (k == "CCO_SIDECAR_PORT").then(|| "70000".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("CCO_SIDECAR_PORT") && err.contains("70000"),
            "{err}"
        );
    }

    #[test]
    fn hook_transport_from_file_and_env() {
        assert_eq!(Config::default().hooks.transport, HookTransport::Http);
        let c = Config::parse("[hooks]\ntransport = \"command\"\n").unwrap();
        assert_eq!(c.hooks.transport, HookTransport::Command);
        let env =
            |v: &'static str| move |k: &str| (k == "CCO_HOOKS_TRANSPORT").then(|| v.to_string());
        let c = Config::load(Path::new("/nonexistent"), &env("command")).unwrap();
        assert_eq!(c.hooks.transport, HookTransport::Command);
        let err = Config::load(Path::new("/nonexistent"), &env("grpc"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CCO_HOOKS_TRANSPORT") && err.contains("grpc"),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_in_the_environment_are_refused() {
        for (var, value) in [
            ("CCO_RUNTIME_DIR", "rt"),
            ("CCO_DATA_DIR", "data"),
            ("CCO_CLAUDE", "./claude"),
            ("CCO_IDLE_EXIT_AFTER", "0s"),
        ] {
            let err = Config::load(Path::new("/nonexistent"), &|k| {
                (k == var).then(|| value.to_string())
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(var) && err.contains(value), "{err}");
        }
    }

    #[test]
    fn idle_exit_parses() {
        let c = Config::parse("idle_exit_after = \"90s\"").unwrap();
        assert_eq!(c.idle_exit_after, Some(Duration::from_secs(90)));
        let c = Config::parse("idle_exit_after = \"never\"").unwrap();
        assert_eq!(c.idle_exit_after, None);
    }

    /// The config names the `claude` the launcher execs: another user must not be able to
    /// change it, through the file, its directory or a symlink.
    #[test]
    fn config_writable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cco");
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("daemon.toml");
        std::fs::write(&path, "claude_path = \"/usr/bin/claude\"\n").unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(&dir, 0o755);
        mode(&path, 0o644);
        let c = Config::load(&path, &no_env).unwrap();
        assert_eq!(c.claude_path.as_deref(), Some(Path::new("/usr/bin/claude")));

        mode(&path, 0o664);
        let err = Config::load(&path, &no_env).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string())
                && err.ends_with(&format!("`chmod go-w {}`", path.display())),
            "{err}"
        );
        mode(&path, 0o644);

        // A group-writable directory: refused even before the file exists.
        mode(&dir, 0o775);
        let err = Config::load(&path, &no_env).unwrap_err().to_string();
        assert!(
            err.ends_with(&format!("`chmod go-w {}`", dir.display())),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(Config::load(&path, &no_env).is_err());
        mode(&dir, 0o700);
        assert_eq!(Config::load(&path, &no_env).unwrap(), Config::default());

        // A symlink of your own (dotfile managers) is followed to a trusted target…
        let real = tmp.path().join("real.toml");
        std::fs::write(&real, "[daemon]\nport = 4100\n").unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        assert_eq!(Config::load(&path, &no_env).unwrap().daemon.port, 4100);
        // …but the target must pass the same checks.
        mode(&real, 0o666);
        assert!(matches!(
            Config::load(&path, &no_env).unwrap_err(),
            ConfigError::Untrusted(_)
        ));
        mode(&real, 0o644);
        // Another user's symlink is refused (needs root to make one; CI runs as root).
        if crate::securefs::current_uid() != 0 {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs the tests as root so this check runs"
            );
        } else {
            std::fs::remove_file(&path).unwrap();
            std::os::unix::fs::symlink(&real, &path).unwrap();
            std::os::unix::fs::lchown(&path, Some(65534), Some(65534)).unwrap();
            let err = Config::load(&path, &no_env).unwrap_err();
            assert!(matches!(err, ConfigError::Symlink { .. }), "{err}");
            assert!(err.to_string().ends_with(".toml`"), "{err}");
        }
    }
}
