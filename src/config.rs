//! The one configuration tree. `Default` is the only source of defaults; [`Config::load`]
//! applies the file, then the `CCO_*` environment; callers apply their flags last.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The example file written on first start; every key in it is commented out, so it is
/// exactly the defaults (a test uncomments it and compares with `Config::default()`).
pub const EXAMPLE: &str = include_str!("../packaging/daemon.toml");

/// Idle exit below this is refused: the socket stays with the manager, but each
/// re-activation costs a process start.
pub const MIN_IDLE_EXIT: Duration = Duration::from_secs(1);

/// `idle_exit_after` as the config spells it: `never`, or a duration such as `10m`.
pub fn idle_label(idle: Option<Duration>) -> String {
    match idle {
        None => "never".into(),
        Some(d) => humantime::format_duration(d).to_string(),
    }
}

/// `hooks.timeout_ms` bounds: zero makes every hook fail (a connect timeout cannot be
/// zero), and a hook Claude waits on for over a minute stalls the session.
pub const HOOK_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

/// Session tokens live at least a minute (shorter ones expire mid-start) and at most 30 days
/// (a leaked one must not be good forever); `launcher.token_ttl` and `cco token --ttl`.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// `--idle-exit-after`: `"never"` or a duration of at least [`MIN_IDLE_EXIT`].
pub fn parse_idle_exit(s: &str) -> Result<Option<Duration>, String> {
    let d = idle::parse(s)
        .map_err(|e| format!("{s:?}: {e}: expected \"never\" or a duration such as \"10m\""))?;
    match d {
        Some(d) if d < MIN_IDLE_EXIT => Err(format!(
            "{s:?} is shorter than the minimum of {}s",
            MIN_IDLE_EXIT.as_secs()
        )),
        other => Ok(other),
    }
}

/// Checks a token lifetime against [`MIN_TOKEN_TTL`]..=[`MAX_TOKEN_TTL`]; the message says
/// what is allowed.
pub fn check_token_ttl(ttl: Duration) -> Result<Duration, String> {
    if (MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
        Ok(ttl)
    } else {
        Err("is out of range: a token lives from 1m to 30d".into())
    }
}

/// Parses a `--ttl` flag ("1h", "7d") and checks it with [`check_token_ttl`]; a clap
/// `value_parser`.
pub fn parse_token_ttl(s: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}: expected a duration such as \"1h\" or \"7d\""))?;
    check_token_ttl(ttl).map_err(|e| format!("{:?} {e}", s.trim()))
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LauncherConfig {
    /// Pass the sealed rules with `--append-system-prompt`.
    pub append_rules: bool,
    /// Pass the sealed roster with `--agents` (unless the user passed their own).
    pub pass_agents: bool,
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
        }
    }
}

impl Default for LauncherConfig {
    fn default() -> Self {
        LauncherConfig {
            append_rules: true,
            pass_agents: true,
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
        "bad config file {path}: {message} — fix that key or delete the file to get the defaults back"
    )]
    Parse { path: PathBuf, message: String },
    #[error(
        "config file {path} is a symlink owned by another user; cco refuses to follow it (the config \
         names the program cco runs) — put your own file there: `cp \"$(readlink -f {path})\" {path}.new && mv {path}.new {path}`"
    )]
    Symlink { path: PathBuf },
    /// Owned by someone else, or writable by group/others (the file or its directory).
    #[error("refusing the config: {0}")]
    Untrusted(crate::paths::PathError),
    #[error("bad value {value:?} in environment variable {var}: expected {expected}")]
    Env {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A key parsed but its value is not allowed.
    #[error(
        "bad config file {path}: {key} {problem} — fix `{key}` in {path}, or remove it to get the default back"
    )]
    Value {
        path: PathBuf,
        key: &'static str,
        problem: String,
    },
}

impl Config {
    /// Loads `path` (a missing file means defaults) and applies the `CCO_*` variables
    /// that `env` returns. `env` is passed in so tests never touch the process environment.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        use crate::paths::{self, PathError};
        // The config names the program the launcher execs: read it only from a file (and a
        // directory) that no other user can write. A symlink of your own (a dotfile manager's)
        // is followed to a target that passes the same checks; another user's is refused.
        let source = match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                use std::os::unix::fs::MetadataExt;
                if m.uid() != paths::current_uid() && m.uid() != 0 {
                    return Err(ConfigError::Symlink {
                        path: path.to_owned(),
                    });
                }
                path.canonicalize().map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?
            }
            _ => path.to_owned(),
        };
        let text = match paths::open_trusted(&source) {
            Ok(mut f) => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut f, &mut text).map_err(|source| {
                    ConfigError::Read {
                        path: path.to_owned(),
                        source,
                    }
                })?;
                Some(text)
            }
            Err(PathError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                None
            }
            Err(PathError::Io { source, .. }) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
            Err(PathError::Symlink { .. }) => {
                return Err(ConfigError::Symlink {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(ConfigError::Untrusted(e)),
        };
        let mut config = match text {
            Some(text) => Config::parse(&text).map_err(|message| ConfigError::Parse {
                path: path.to_owned(),
                message,
            })?,
            None => Config::default(),
        };
        config.apply_env(env)?;
        // The environment's values were checked as they were read: what fails here is the
        // file's.
        config
            .validate()
            .map_err(|(key, problem)| ConfigError::Value {
                path: path.to_owned(),
                key,
                problem,
            })?;
        Ok(config)
    }

    /// Parses TOML text; the message names the line, column and key on error.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| {
            // toml's message is multi-line with a source excerpt; keep it on one line.
            let span = e.span().map(|s| line_col(text, s.start));
            let what = e.message().trim().to_string();
            match span {
                Some((line, col)) => format!("line {line}, column {col}: {what}"),
                None => what,
            }
        })
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("CCO_DAEMON_PORT") {
            self.daemon.port = parse_port("CCO_DAEMON_PORT", &v)?;
        }
        if let Some(v) = env("CCO_SIDECAR_PORT") {
            self.sidecar.port = parse_port("CCO_SIDECAR_PORT", &v)?;
        }
        if let Some(v) = env("CCO_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            self.runtime_dir = Some(absolute("CCO_RUNTIME_DIR", v)?);
        }
        if let Some(v) = env("CCO_DATA_DIR").filter(|v| !v.is_empty()) {
            self.data_dir = Some(absolute("CCO_DATA_DIR", v)?);
        }
        if let Some(v) = env("CCO_CLAUDE").filter(|v| !v.is_empty()) {
            if !is_program(Path::new(&v)) {
                return Err(ConfigError::Env {
                    var: "CCO_CLAUDE",
                    value: v,
                    expected: "an absolute path or a bare program name found on PATH",
                });
            }
            self.claude_path = Some(v.into());
        }
        if let Some(v) = env("CCO_LOG").filter(|v| !v.is_empty()) {
            self.log_level = v;
        }
        if let Some(v) = env("CCO_AUTO_ALLOW_READ") {
            self.hooks.auto_allow_read = parse_bool("CCO_AUTO_ALLOW_READ", &v)?;
        }
        if let Some(v) = env("CCO_REQUIRE_CUD_CONFIRMATION") {
            self.hooks.require_cud_confirmation = parse_bool("CCO_REQUIRE_CUD_CONFIRMATION", &v)?;
        }
        if let Some(v) = env("CCO_HOOKS_ENABLED") {
            self.hooks.enabled = parse_bool("CCO_HOOKS_ENABLED", &v)?;
        }
        if let Some(v) = env("CCO_IDLE_EXIT_AFTER") {
            match idle::parse(&v) {
                Ok(d) if d.is_none_or(|d| d >= MIN_IDLE_EXIT) => self.idle_exit_after = d,
                _ => {
                    return Err(ConfigError::Env {
                        var: "CCO_IDLE_EXIT_AFTER",
                        value: v,
                        expected: "\"never\" or a duration of at least 1s such as \"10m\"",
                    });
                }
            }
        }
        Ok(())
    }

    /// The first value that is not allowed, as (key, what is wrong with it).
    fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, port) in [
            ("daemon.port", self.daemon.port),
            ("sidecar.port", self.sidecar.port),
        ] {
            if port == 0 {
                return Err((key, "is 0; use a port from 1 to 65535".into()));
            }
        }
        if self.daemon.port == self.sidecar.port {
            return Err((
                "sidecar.port",
                format!(
                    "is {}, the same as daemon.port; give the two services different ports \
                     (CCO_DAEMON_PORT / CCO_SIDECAR_PORT override the file)",
                    self.sidecar.port
                ),
            ));
        }
        if let Some(d) = self.idle_exit_after
            && d < MIN_IDLE_EXIT
        {
            return Err((
                "idle_exit_after",
                format!(
                    "is {}; use \"never\" or at least {}s",
                    humantime::format_duration(d),
                    MIN_IDLE_EXIT.as_secs()
                ),
            ));
        }
        if self.sidecar.max_body_bytes < 1024 {
            return Err((
                "sidecar.max_body_bytes",
                format!("is {}; use at least 1024", self.sidecar.max_body_bytes),
            ));
        }
        if !HOOK_TIMEOUT_MS.contains(&self.hooks.timeout_ms) {
            return Err((
                "hooks.timeout_ms",
                format!(
                    "is {}; use {} to {} (milliseconds)",
                    self.hooks.timeout_ms,
                    HOOK_TIMEOUT_MS.start(),
                    HOOK_TIMEOUT_MS.end()
                ),
            ));
        }
        check_token_ttl(self.launcher.token_ttl).map_err(|e| ("launcher.token_ttl", e))?;
        for (key, dir) in [
            ("runtime_dir", &self.runtime_dir),
            ("data_dir", &self.data_dir),
        ] {
            if let Some(d) = dir.as_deref().filter(|d| !d.is_absolute()) {
                return Err((
                    key,
                    format!("is {:?}; use an absolute path", d.display().to_string()),
                ));
            }
        }
        if let Some(c) = self.claude_path.as_deref().filter(|c| !is_program(c)) {
            return Err((
                "claude_path",
                format!(
                    "is {:?}; use an absolute path, or a bare name looked up on PATH",
                    c.display().to_string()
                ),
            ));
        }
        Ok(())
    }
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

fn absolute(var: &'static str, v: String) -> Result<PathBuf, ConfigError> {
    if Path::new(&v).is_absolute() {
        Ok(v.into())
    } else {
        Err(ConfigError::Env {
            var,
            value: v,
            expected: "an absolute path",
        })
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

fn parse_port(var: &'static str, v: &str) -> Result<u16, ConfigError> {
    match v.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ConfigError::Env {
            var,
            value: v.into(),
            expected: "a port number from 1 to 65535",
        }),
    }
}

fn parse_bool(var: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Env {
            var,
            value: v.into(),
            expected: "true or false",
        }),
    }
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
    fn same_ports_refused() {
        let err = Config::load(Path::new("/nonexistent"), &|k| {
            (k == "CCO_SIDECAR_PORT").then(|| "3000".to_string())
        })
        .unwrap_err();
        assert!(err.to_string().contains("different ports"));
    }

    #[test]
    fn out_of_range_values_name_the_file_the_key_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        for (text, key, want) in [
            (
                "[daemon]\nport = 0\n",
                "daemon.port",
                "is 0; use a port from 1 to 65535",
            ),
            ("[sidecar]\nport = 0\n", "sidecar.port", "is 0"),
            (
                "[hooks]\ntimeout_ms = 0\n",
                "hooks.timeout_ms",
                "is 0; use 100 to 60000",
            ),
            (
                "[hooks]\ntimeout_ms = 60001\n",
                "hooks.timeout_ms",
                "is 60001",
            ),
            (
                "[launcher]\ntoken_ttl = \"30s\"\n",
                "launcher.token_ttl",
                "from 1m to 30d",
            ),
            (
                "[launcher]\ntoken_ttl = \"31d\"\n",
                "launcher.token_ttl",
                "out of range",
            ),
            (
                "runtime_dir = \"rt\"\n",
                "runtime_dir",
                "use an absolute path",
            ),
            (
                "data_dir = \"./data\"\n",
                "data_dir",
                "use an absolute path",
            ),
            (
                "claude_path = \"bin/claude\"\n",
                "claude_path",
                "or a bare name",
            ),
            (
                "idle_exit_after = \"0s\"\n",
                "idle_exit_after",
                "at least 1s",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Config::load(&path, &no_env).unwrap_err().to_string();
            let p = path.display();
            assert!(
                err.starts_with(&format!("bad config file {p}: {key} "))
                    && err.contains(want)
                    && err.ends_with(&format!(
                        "fix `{key}` in {p}, or remove it to get the default back"
                    )),
                "{text:?} → {err}"
            );
        }
        for ok in [
            "[hooks]\ntimeout_ms = 100\n[launcher]\ntoken_ttl = \"1m\"\n",
            "[hooks]\ntimeout_ms = 60000\n[launcher]\ntoken_ttl = \"30d\"\n",
            "claude_path = \"claude\"\nruntime_dir = \"/run/x\"\ndata_dir = \"/d\"\n",
            "claude_path = \"/opt/claude/bin/claude\"\n",
        ] {
            std::fs::write(&path, ok).unwrap();
            Config::load(&path, &no_env).unwrap_or_else(|e| panic!("{ok:?} → {e}"));
        }
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
    fn token_ttl_flag_is_capped() {
        assert_eq!(parse_token_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_token_ttl("30d"), Ok(MAX_TOKEN_TTL));
        assert_eq!(
            parse_token_ttl("31d").unwrap_err(),
            "\"31d\" is out of range: a token lives from 1m to 30d"
        );
        assert!(
            parse_token_ttl("10s")
                .unwrap_err()
                .contains("from 1m to 30d")
        );
        assert!(parse_token_ttl("soon").unwrap_err().contains("such as"));
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
        // Another user's symlink is refused (needs root to make one).
        if crate::paths::current_uid() == 0 {
            std::fs::remove_file(&path).unwrap();
            std::os::unix::fs::symlink(&real, &path).unwrap();
            std::os::unix::fs::lchown(&path, Some(65534), Some(65534)).unwrap();
            let err = Config::load(&path, &no_env).unwrap_err();
            assert!(matches!(err, ConfigError::Symlink { .. }), "{err}");
            assert!(err.to_string().ends_with(".toml`"), "{err}");
        }
    }
}
