//! `[store]`: where the sidecar keeps events, results, the agent registry, leases and inbox
//! cursors — the embedded SQLite + files (default) or a NATS JetStream shared by a team.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, OutOfRange};

/// `store.replicas`: 1 on a single server, 3 on a 3-node cluster; JetStream allows 1-5.
pub const REPLICAS: std::ops::RangeInclusive<u8> = 1..=5;
/// Longest `store.namespace`: it prefixes every stream, subject and bucket name.
pub const MAX_NAMESPACE: usize = 32;

/// `store.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `state.db` and result files under the data directory: one machine.
    #[default]
    Sqlite,
    /// A NATS JetStream stream and KV buckets: a team's machines share them.
    Nats,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Nats => "nats",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: Backend,
    /// NATS server URLs (`nats://host:port`, `tls://host:port`).
    pub nats_servers: Vec<String>,
    /// Prefixes every stream, subject and KV bucket, so teams and projects share one NATS.
    pub namespace: String,
    /// Replicas of the stream and buckets (3 on a 3-node cluster).
    pub replicas: u8,
    /// A NATS `.creds` file (mode 0600, not a symlink).
    pub credentials: Option<PathBuf>,
    /// A file holding an nkey seed.
    pub nkey_seed_file: Option<PathBuf>,
    /// A file holding the token (a secret: never inline in the toml).
    pub token_file: Option<PathBuf>,
    /// CA bundle for TLS; implies TLS.
    pub tls_ca: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Sqlite,
            nats_servers: vec!["nats://127.0.0.1:4222".into()],
            namespace: "cco".into(),
            replicas: 1,
            credentials: None,
            nkey_seed_file: None,
            token_file: None,
            tls_ca: None,
        }
    }
}

impl StoreConfig {
    /// Whether TLS is required: a `tls://` URL or a CA file.
    pub fn tls(&self) -> bool {
        self.tls_ca.is_some() || self.nats_servers.iter().any(|s| s.starts_with("tls://"))
    }

    /// `CCO_STORE_BACKEND`, `CCO_NATS_SERVERS` (comma-separated), `CCO_STORE_NAMESPACE`,
    /// `CCO_STORE_REPLICAS`.
    pub(super) fn apply_env(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = env("CCO_STORE_BACKEND").filter(|v| !v.is_empty()) {
            self.backend = match v.trim() {
                "sqlite" => Backend::Sqlite,
                "nats" => Backend::Nats,
                _ => {
                    return Err(ConfigError::Env {
                        var: "CCO_STORE_BACKEND",
                        value: v,
                        expected: "\"sqlite\" or \"nats\"",
                    });
                }
            };
        }
        if let Some(v) = env("CCO_NATS_SERVERS").filter(|v| !v.is_empty()) {
            self.nats_servers = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = env("CCO_STORE_NAMESPACE").filter(|v| !v.is_empty()) {
            self.namespace = v;
        }
        if let Some(v) = env("CCO_STORE_REPLICAS").filter(|v| !v.is_empty()) {
            self.replicas = v.trim().parse().map_err(|_| ConfigError::Env {
                var: "CCO_STORE_REPLICAS",
                value: v.clone(),
                expected: "a number from 1 to 5",
            })?;
        }
        Ok(())
    }

    /// The first value that is not allowed, as (key, problem).
    pub(super) fn validate(&self) -> Result<(), (&'static str, OutOfRange)> {
        let bad = |key, value: String, allowed: &str| {
            Err((
                key,
                OutOfRange {
                    value,
                    allowed: allowed.into(),
                },
            ))
        };
        if !valid_namespace(&self.namespace) {
            return bad(
                "store.namespace",
                format!("{:?}", self.namespace),
                "1-32 characters from A-Z, a-z, 0-9, `_` and `-` (CCO_STORE_NAMESPACE overrides the file)",
            );
        }
        if !REPLICAS.contains(&self.replicas) {
            return bad(
                "store.replicas",
                self.replicas.to_string(),
                "1 to 5 (3 on a 3-node cluster; CCO_STORE_REPLICAS overrides the file)",
            );
        }
        if self.backend == Backend::Nats && self.nats_servers.is_empty() {
            return bad(
                "store.nats_servers",
                "[]".into(),
                "at least one URL such as \"nats://127.0.0.1:4222\" (CCO_NATS_SERVERS overrides the file)",
            );
        }
        for s in &self.nats_servers {
            let scheme_ok = ["nats://", "tls://"].iter().any(|p| {
                s.strip_prefix(p)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
            });
            if !scheme_ok {
                return bad(
                    "store.nats_servers",
                    format!("{s:?}"),
                    "URLs of the form \"nats://host:port\" or \"tls://host:port\"",
                );
            }
        }
        for (key, p) in [
            ("store.credentials", &self.credentials),
            ("store.nkey_seed_file", &self.nkey_seed_file),
            ("store.token_file", &self.token_file),
            ("store.tls_ca", &self.tls_ca),
        ] {
            if let Some(p) = p.as_deref().filter(|p| !p.is_absolute()) {
                return bad(
                    key,
                    format!("{:?}", p.display().to_string()),
                    "an absolute path",
                );
            }
        }
        if [&self.credentials, &self.nkey_seed_file, &self.token_file]
            .iter()
            .filter(|p| p.is_some())
            .count()
            > 1
        {
            return bad(
                "store.credentials",
                "set together with nkey_seed_file or token_file".into(),
                "one way to authenticate: credentials, nkey_seed_file or token_file",
            );
        }
        Ok(())
    }
}

/// `[A-Za-z0-9_-]{1,32}`: safe in subjects, stream and bucket names.
pub fn valid_namespace(ns: &str) -> bool {
    (1..=MAX_NAMESPACE).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        std::fs::write(&path, file).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&path, &|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_are_sqlite() {
        let c = Config::default();
        assert_eq!(c.store.backend, Backend::Sqlite);
        assert_eq!(c.store.namespace, "cco");
        assert_eq!(c.store.replicas, 1);
        assert!(!c.store.tls());
    }

    #[test]
    fn file_then_environment() {
        let c = load(
            "[store]\nbackend = \"nats\"\nnats_servers = [\"nats://10.0.0.1:4222\"]\nnamespace = \"team-a\"\nreplicas = 3\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.store.backend, Backend::Nats);
        assert_eq!(c.store.nats_servers, ["nats://10.0.0.1:4222"]);
        assert_eq!(
            (c.store.namespace.as_str(), c.store.replicas),
            ("team-a", 3)
        );
        let c = load(
            "[store]\nbackend = \"sqlite\"\n",
            &[
                ("CCO_STORE_BACKEND", "nats"),
                ("CCO_NATS_SERVERS", "nats://a:1, tls://b:2"),
                ("CCO_STORE_NAMESPACE", "proj_1"),
                ("CCO_STORE_REPLICAS", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.store.backend, Backend::Nats);
        assert_eq!(c.store.nats_servers, ["nats://a:1", "tls://b:2"]);
        assert_eq!(c.store.namespace, "proj_1");
        assert_eq!(c.store.replicas, 3);
        assert!(c.store.tls());
    }

    #[test]
    fn bad_values_are_named_with_their_fix() {
        let err = load("", &[("CCO_STORE_BACKEND", "redis")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CCO_STORE_BACKEND") && err.contains("redis") && err.contains("unset"),
            "{err}"
        );
        for (file, key) in [
            ("[store]\nnamespace = \"a.b\"\n", "store.namespace"),
            ("[store]\nnamespace = \"\"\n", "store.namespace"),
            (
                "[store]\nnamespace = \"abcdefghijklmnopqrstuvwxyz0123456\"\n",
                "store.namespace",
            ),
            ("[store]\nreplicas = 0\n", "store.replicas"),
            (
                "[store]\nnats_servers = [\"http://x:1\"]\n",
                "store.nats_servers",
            ),
            (
                "[store]\nbackend = \"nats\"\nnats_servers = []\n",
                "store.nats_servers",
            ),
            ("[store]\ntoken_file = \"tok\"\n", "store.token_file"),
            (
                "[store]\ntoken_file = \"/t\"\ncredentials = \"/c\"\n",
                "store.credentials",
            ),
        ] {
            let err = load(file, &[]).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("fix `"), "{file}: {err}");
        }
        let err = load("[store]\ntoken = \"secret\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("token"), "{err}");
        assert!(Config::load(Path::new("/nonexistent"), &|_| None).is_ok());
    }
}
