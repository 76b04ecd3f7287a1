//! Every on-disk location cco uses, resolved once from the environment and the config.
//! The secure-file operations live in [`crate::securefs`]; they are re-exported here so
//! callers that say `paths::write_atomic` keep working.

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
pub use crate::securefs::{
    PathError, check_private_dir, check_trusted_dir, check_trusted_path, current_uid,
    ensure_private_dir, is_disk_full, open_private, open_trusted, read_private, sync_dir,
    write_atomic,
};

/// Where one installation keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub config_file: PathBuf,
    pub runtime_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl Paths {
    /// Resolves the config file path alone: `--config` > `CCO_CONFIG` > XDG default.
    pub fn config_file(
        flag: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PathBuf, PathError> {
        if let Some(p) = flag {
            return Ok(p.to_owned());
        }
        if let Some(p) = env("CCO_CONFIG").filter(|p| !p.is_empty()) {
            return Ok(p.into());
        }
        Ok(config_home(env)?.join("cco").join("daemon.toml"))
    }

    /// Resolves the rest from a loaded config.
    pub fn resolve(
        config_file: PathBuf,
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Paths, PathError> {
        let runtime_dir = match &config.runtime_dir {
            Some(p) => p.clone(),
            None => default_runtime_dir(env),
        };
        let data_dir = match &config.data_dir {
            Some(p) => p.clone(),
            None => home(env)?.join(".cco"),
        };
        Ok(Paths {
            config_file,
            runtime_dir,
            data_dir,
        })
    }

    pub fn config_dir(&self) -> &Path {
        self.config_file.parent().unwrap_or(Path::new("."))
    }
    /// The secret lives beside the config file.
    pub fn secret_file(&self) -> PathBuf {
        self.config_dir().join("secret")
    }
    /// User agents in Claude Code's subagent format override the built-in roster.
    pub fn user_agents_dir(&self) -> PathBuf {
        self.config_dir().join("agents")
    }
    pub fn orchestration_dir(&self) -> PathBuf {
        self.data_dir.join("orchestration")
    }
    pub fn results_dir(&self) -> PathBuf {
        self.orchestration_dir().join("results")
    }
    pub fn state_db(&self) -> PathBuf {
        self.orchestration_dir().join("state.db")
    }
    /// Logs and pid files of the detached (`cco daemon start` without a manager) mode.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }
    pub fn pid_file(&self, service: &str) -> PathBuf {
        self.runtime_dir.join(format!("{service}.pid"))
    }
}

/// Loads the config and resolves paths in one go; what every subcommand starts with.
#[derive(Debug, Clone)]
pub struct Installation {
    pub config: Config,
    pub paths: Paths,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallationError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Path(#[from] PathError),
}

impl Installation {
    pub fn load(
        config_flag: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Installation, InstallationError> {
        let config_file = Paths::config_file(config_flag, env)?;
        let config = Config::load(&config_file, env)?;
        let paths = Paths::resolve(config_file, &config, env)?;
        Ok(Installation { config, paths })
    }

    /// The process environment, for production callers.
    pub fn from_process(config_flag: Option<&Path>) -> Result<Installation, InstallationError> {
        Installation::load(config_flag, &process_env)
    }
}

pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn home(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, PathError> {
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or(PathError::NoHome)
}

fn config_home(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, PathError> {
    match env("XDG_CONFIG_HOME").filter(|p| Path::new(p).is_absolute()) {
        Some(p) => Ok(p.into()),
        None => Ok(home(env)?.join(".config")),
    }
}

/// `$XDG_RUNTIME_DIR/cco`, else `$TMPDIR/cco-<uid>` (macOS's per-user TMPDIR),
/// else `/tmp/cco-<uid>`.
fn default_runtime_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = env("XDG_RUNTIME_DIR").filter(|p| Path::new(p).is_absolute()) {
        return Path::new(&dir).join("cco");
    }
    let uid = current_uid();
    if cfg!(target_os = "macos")
        && let Some(tmp) = env("TMPDIR").filter(|p| Path::new(p).is_absolute())
    {
        return Path::new(&tmp).join(format!("cco-{uid}"));
    }
    PathBuf::from(format!("/tmp/cco-{uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn xdg_locations() {
        let env = env_of(&[
            ("HOME", "/home/u"),
            ("XDG_CONFIG_HOME", "/cfg"),
            ("XDG_RUNTIME_DIR", "/run/user/7"),
        ]);
        let inst = Installation::load(None, &env).unwrap();
        assert_eq!(inst.paths.config_file, Path::new("/cfg/cco/daemon.toml"));
        assert_eq!(inst.paths.secret_file(), Path::new("/cfg/cco/secret"));
        assert_eq!(inst.paths.runtime_dir, Path::new("/run/user/7/cco"));
        assert_eq!(
            inst.paths.state_db(),
            Path::new("/home/u/.cco/orchestration/state.db")
        );
    }

    #[test]
    fn fallbacks_without_xdg() {
        let env = env_of(&[("HOME", "/home/u")]);
        let inst = Installation::load(None, &env).unwrap();
        assert_eq!(
            inst.paths.config_file,
            Path::new("/home/u/.config/cco/daemon.toml")
        );
        assert_eq!(
            inst.paths.runtime_dir,
            PathBuf::from(format!("/tmp/cco-{}", current_uid()))
        );
        let env = env_of(&[
            ("HOME", "/home/u"),
            ("CCO_CONFIG", "/etc/x.toml"),
            ("CCO_RUNTIME_DIR", "/r"),
        ]);
        let inst = Installation::load(None, &env).unwrap();
        assert_eq!(inst.paths.config_file, Path::new("/etc/x.toml"));
        assert_eq!(inst.paths.runtime_dir, Path::new("/r"));
    }
}
