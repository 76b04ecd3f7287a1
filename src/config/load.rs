//! Reading the config: the file (a trusted, size-capped regular file), then the `CCO_*`
//! environment, then one validation of the result.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, is_program, validate};
use crate::securefs::{self, PathError};

/// No config cco writes comes near this; a larger file is refused, not read into memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A config text that does not parse, located by line and column where toml knows them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{}", .at.map(|(l, c)| format!("line {l}, column {c}: ")).unwrap_or_default(), .message)]
pub struct ParseError {
    /// (line, column), both from 1.
    pub at: Option<(usize, usize)>,
    /// toml's own message, on one line.
    pub message: String,
    /// Boxed: toml's error is large, and this one travels in every `Result` of the loader.
    pub cause: Box<toml::de::Error>,
}

impl Config {
    /// Loads `path` (a missing file means defaults) and applies the `CCO_*` variables
    /// that `env` returns. `env` is passed in so tests never touch the process environment.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config = match read(path)? {
            Some(text) => Config::parse(&text).map_err(|cause| ConfigError::Parse {
                path: path.to_owned(),
                cause,
            })?,
            None => Config::default(),
        };
        config.apply_env(env)?;
        // The environment's syntax was checked as it was read; ranges are checked once here,
        // so an out-of-range value is named with the file it most likely came from.
        validate::validate(&config).map_err(|(key, problem)| ConfigError::Value {
            path: path.to_owned(),
            key,
            problem,
        })?;
        Ok(config)
    }

    /// Parses TOML text; the message names the line, column and key on error.
    pub fn parse(text: &str) -> Result<Config, ParseError> {
        toml::from_str(text).map_err(|cause: toml::de::Error| ParseError {
            at: cause.span().map(|s| line_col(text, s.start)),
            // toml's message is multi-line with a source excerpt; keep it on one line.
            message: cause.message().trim().to_string(),
            cause: Box::new(cause),
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
        if let Some(v) = env("CCO_HOOKS_TRANSPORT") {
            self.hooks.transport = match v.as_str() {
                "http" => super::HookTransport::Http,
                "command" => super::HookTransport::Command,
                _ => {
                    return Err(ConfigError::Env {
                        var: "CCO_HOOKS_TRANSPORT",
                        value: v,
                        expected: "`http` or `command`",
                    });
                }
            };
        }
        if let Some(v) = env("CCO_HOOKS_ENABLED") {
            self.hooks.enabled = parse_bool("CCO_HOOKS_ENABLED", &v)?;
        }
        if let Some(v) = env("CCO_MCP") {
            self.launcher.mcp = parse_bool("CCO_MCP", &v)?;
        }
        if let Some(v) = env("CCO_IDLE_EXIT_AFTER") {
            self.idle_exit_after =
                validate::parse_idle_exit(&v).map_err(|cause| ConfigError::EnvValue {
                    var: "CCO_IDLE_EXIT_AFTER",
                    cause,
                })?;
        }
        self.store.apply_env(env)?;
        Ok(())
    }
}

/// The config file's text, or `None` when there is none. The config names the program the
/// launcher execs: it is read only from a regular file (and a directory) that no other user
/// can write, and only up to [`MAX_CONFIG_BYTES`]. A symlink of your own (a dotfile
/// manager's) is followed to a target that passes the same checks; another user's is refused.
fn read(path: &Path) -> Result<Option<String>, ConfigError> {
    let source = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            use std::os::unix::fs::MetadataExt;
            if m.uid() != securefs::current_uid() && m.uid() != 0 {
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
    let bytes = securefs::open_trusted(&source)
        .and_then(|f| securefs::read_to_cap(f, &source, MAX_CONFIG_BYTES));
    match bytes {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| ConfigError::Read {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
            }),
        Err(PathError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(PathError::Io { source, .. }) => Err(ConfigError::Read {
            path: path.to_owned(),
            source,
        }),
        Err(PathError::Symlink { .. }) => Err(ConfigError::Symlink {
            path: path.to_owned(),
        }),
        Err(e @ (PathError::WrongKind { .. } | PathError::TooLarge { .. })) => {
            Err(ConfigError::Unusable(e))
        }
        Err(e) => Err(ConfigError::Untrusted(e)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// A FIFO would block the open until a writer comes, `/dev/zero` would be read without
    /// end: both fail at once, saying what the file is and what to do.
    #[test]
    fn a_config_that_is_not_a_small_regular_file_fails_fast() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("daemon.toml");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = Config::load(&path, &no_env).unwrap_err();
        assert!(matches!(err, ConfigError::Unusable(_)), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("is not a regular file") && msg.ends_with("and run the command again"),
            "{msg}"
        );

        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let err = Config::load(&path, &no_env).unwrap_err();
        assert!(matches!(err, ConfigError::Unusable(_)), "{err}");
        assert!(err.to_string().contains("/dev/zero"), "{err}");

        std::fs::remove_file(&path).unwrap();
        let mut big = "# padding\n".repeat(MAX_CONFIG_BYTES as usize / 10);
        big.push_str("[daemon]\nport = 4000\n");
        std::fs::write(&path, big).unwrap();
        let err = Config::load(&path, &no_env).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Unusable(PathError::TooLarge {
                    cap: MAX_CONFIG_BYTES,
                    ..
                })
            ),
            "{err}"
        );
    }

    #[test]
    fn parse_errors_keep_their_position_and_cause() {
        let e = Config::parse("[daemon]\nport = \"x\"\n").unwrap_err();
        assert_eq!(e.at.map(|(l, _)| l), Some(2));
        assert!(e.to_string().starts_with("line 2, column "), "{e}");
        assert_eq!(e.cause.message(), e.message);
    }
}
