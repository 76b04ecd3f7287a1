//! Sealed runtime files: the daemon writes them (atomically, under an exclusive lock, only
//! when their content changes) and the launcher verifies them (under a shared lock: owner,
//! mode, no symlink, and an HMAC-SHA256 per file keyed by the installation secret).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::secret::Secret;
use crate::securefs::{self, PathError};

pub const SETTINGS: &str = "orchestrator-settings.json";
pub const AGENTS: &str = "agents-sealed.json";
pub const RULES: &str = "rules-sealed.md";
pub const HOOKS: &str = "hooks-sealed.json";
/// cco's MCP server for `claude --mcp-config`; its headers name environment variables, never
/// the token itself.
pub const MCP: &str = "mcp.json";
pub const SEAL: &str = "seal.json";
pub const LOCK: &str = ".lock";

/// The sealed files, in the order they are written (the seal itself comes last).
pub const FILES: [&str; 5] = [SETTINGS, AGENTS, RULES, HOOKS, MCP];

const SEAL_VERSION: u32 = 1;
/// Domain separation: the same secret also signs JWTs.
const MAC_LABEL: &[u8] = b"cco-seal-v1\0";

/// The content of the sealed files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFiles {
    pub settings: Vec<u8>,
    pub agents: Vec<u8>,
    pub rules: Vec<u8>,
    pub hooks: Vec<u8>,
    pub mcp: Vec<u8>,
}

impl RuntimeFiles {
    fn entries(&self) -> [(&'static str, &[u8]); 5] {
        [
            (SETTINGS, &self.settings),
            (AGENTS, &self.agents),
            (RULES, &self.rules),
            (HOOKS, &self.hooks),
            (MCP, &self.mcp),
        ]
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SealDoc {
    version: u32,
    generation: u64,
    /// File name → hex HMAC-SHA256.
    files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealOutcome {
    pub generation: u64,
    pub changed: bool,
}

/// A runtime directory whose files all verified, with the content that was verified (so
/// callers never re-read a file after the check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub dir: PathBuf,
    pub generation: u64,
    pub files: RuntimeFiles,
}

impl Verified {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

const RESTART: &str = "run `cco daemon restart` to rewrite them";

/// Why `seal.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BadSeal {
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("seal version {0}")]
    Version(u32),
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "the runtime files in {dir} are not sealed (no {SEAL}) — the daemon has not written them; {RESTART}"
    )]
    NotSealed { dir: PathBuf },
    #[error("sealed runtime file {path} is missing — {RESTART}")]
    Missing { path: PathBuf },
    #[error("sealed runtime file {path} was modified since the daemon wrote it — {RESTART}")]
    Tampered { path: PathBuf },
    #[error("{path} is unreadable or from another cco version ({reason}) — {RESTART}")]
    BadSeal { path: PathBuf, reason: BadSeal },
    #[error(transparent)]
    Insecure(#[from] PathError),
    #[error("cannot write runtime file {path}: {cause}")]
    Write { path: PathBuf, cause: io::Error },
}

fn mac(secret: &Secret, name: &str, content: &[u8]) -> Hmac<Sha256> {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.bytes()).expect("HMAC takes any key length");
    m.update(MAC_LABEL);
    m.update(name.as_bytes());
    m.update(b"\0");
    m.update(content);
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Opens (creating if needed) the lock file without following a planted symlink.
fn open_lock(dir: &Path) -> Result<File, SealError> {
    let path = dir.join(LOCK);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => SealError::Insecure(PathError::Symlink { path }),
            _ => SealError::Insecure(PathError::io(&path, e)),
        })
}

fn read_seal(dir: &Path) -> Result<SealDoc, SealError> {
    let path = dir.join(SEAL);
    let bytes = match securefs::read_private(&path) {
        Ok(b) => b,
        Err(PathError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(SealError::NotSealed { dir: dir.into() });
        }
        Err(e) => return Err(e.into()),
    };
    let doc: SealDoc = serde_json::from_slice(&bytes).map_err(|e| SealError::BadSeal {
        path: path.clone(),
        reason: BadSeal::Json(e),
    })?;
    if doc.version != SEAL_VERSION {
        return Err(SealError::BadSeal {
            path,
            reason: BadSeal::Version(doc.version),
        });
    }
    Ok(doc)
}

/// Checks every file against the seal; the caller holds the lock.
fn verify_locked(dir: &Path, secret: &Secret) -> Result<(u64, RuntimeFiles), SealError> {
    let doc = read_seal(dir)?;
    let mut contents = Vec::with_capacity(FILES.len());
    for name in FILES {
        let path = dir.join(name);
        let content = match securefs::read_private(&path) {
            Ok(c) => c,
            Err(PathError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(SealError::Missing { path });
            }
            Err(e) => return Err(e.into()),
        };
        let expected = doc.files.get(name).and_then(|h| unhex(h));
        let ok = expected.is_some_and(|tag| mac(secret, name, &content).verify_slice(&tag).is_ok());
        if !ok {
            return Err(SealError::Tampered { path });
        }
        contents.push(content);
    }
    let [settings, agents, rules, hooks, mcp]: [Vec<u8>; 5] =
        contents.try_into().expect("one per file");
    Ok((
        doc.generation,
        RuntimeFiles {
            settings,
            agents,
            rules,
            hooks,
            mcp,
        },
    ))
}

/// Writes the files that changed and a new seal; a no-op (same generation) when the
/// directory already holds exactly `files` under a valid seal.
pub fn seal(dir: &Path, secret: &Secret, files: &RuntimeFiles) -> Result<SealOutcome, SealError> {
    securefs::ensure_private_dir(dir)?;
    let lock = open_lock(dir)?;
    lock.lock().map_err(|e| SealError::Write {
        path: dir.join(LOCK),
        cause: e,
    })?;

    let previous = read_seal(dir).ok();
    let tags: BTreeMap<String, String> = files
        .entries()
        .iter()
        .map(|(name, content)| {
            (
                name.to_string(),
                hex(&mac(secret, name, content).finalize().into_bytes()),
            )
        })
        .collect();
    if let Some(prev) = &previous
        && prev.files == tags
        && let Ok((generation, _)) = verify_locked(dir, secret)
    {
        return Ok(SealOutcome {
            generation,
            changed: false,
        });
    }

    for (name, content) in files.entries() {
        securefs::write_atomic(dir, name.as_ref(), content, 0o600).map_err(|cause| {
            SealError::Write {
                path: dir.join(name),
                cause,
            }
        })?;
    }
    let generation = previous.map_or(1, |p| p.generation + 1);
    let doc = SealDoc {
        version: SEAL_VERSION,
        generation,
        files: tags,
    };
    let bytes = serde_json::to_vec_pretty(&doc).expect("seal serializes");
    securefs::write_atomic(dir, SEAL.as_ref(), &bytes, 0o600).map_err(|cause| {
        SealError::Write {
            path: dir.join(SEAL),
            cause,
        }
    })?;
    Ok(SealOutcome {
        generation,
        changed: true,
    })
}

/// Verifies the runtime directory and every sealed file under a shared lock.
pub fn verify(dir: &Path, secret: &Secret) -> Result<Verified, SealError> {
    securefs::check_private_dir(dir).map_err(|e| match e {
        PathError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            SealError::NotSealed { dir: dir.into() }
        }
        other => other.into(),
    })?;
    let lock = open_lock(dir)?;
    lock.lock_shared()
        .map_err(|e| SealError::Insecure(PathError::io(&dir.join(LOCK), e)))?;
    let (generation, files) = verify_locked(dir, secret)?;
    Ok(Verified {
        dir: dir.into(),
        generation,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn files(tag: &str) -> RuntimeFiles {
        RuntimeFiles {
            settings: format!("{{\"tag\":\"{tag}\"}}").into_bytes(),
            agents: b"{}".to_vec(),
            rules: b"# rules".to_vec(),
            hooks: b"{\"enabled\":true}".to_vec(),
            mcp: b"{\"mcpServers\":{}}".to_vec(),
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf, Secret) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rt");
        (tmp, dir, Secret::from_bytes(vec![9; 32]))
    }

    #[test]
    fn seal_verify_and_rewrite_only_on_change() {
        let (_tmp, dir, secret) = setup();
        let a = seal(&dir, &secret, &files("a")).unwrap();
        assert_eq!(
            a,
            SealOutcome {
                generation: 1,
                changed: true
            }
        );
        let again = seal(&dir, &secret, &files("a")).unwrap();
        assert_eq!(
            again,
            SealOutcome {
                generation: 1,
                changed: false
            }
        );
        let b = seal(&dir, &secret, &files("b")).unwrap();
        assert_eq!(
            b,
            SealOutcome {
                generation: 2,
                changed: true
            }
        );
        assert_eq!(verify(&dir, &secret).unwrap().generation, 2);
        for name in FILES.iter().chain([&SEAL]) {
            let mode = fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    }

    #[test]
    fn tampered_missing_and_wrong_secret_refused() {
        let (_tmp, dir, secret) = setup();
        seal(&dir, &secret, &files("a")).unwrap();

        let other = Secret::from_bytes(vec![1; 32]);
        assert!(matches!(
            verify(&dir, &other),
            Err(SealError::Tampered { .. })
        ));

        fs::write(dir.join(RULES), "# evil rules").unwrap();
        let err = verify(&dir, &secret).unwrap_err();
        assert!(
            matches!(&err, SealError::Tampered { path } if path.ends_with(RULES)),
            "{err}"
        );
        assert!(err.to_string().contains("cco daemon restart"));

        // The daemon repairs it on its next seal, even though the intended content is unchanged.
        assert!(seal(&dir, &secret, &files("a")).unwrap().changed);
        verify(&dir, &secret).unwrap();

        fs::remove_file(dir.join(AGENTS)).unwrap();
        assert!(matches!(
            verify(&dir, &secret),
            Err(SealError::Missing { .. })
        ));
        fs::remove_file(dir.join(SEAL)).unwrap();
        assert!(matches!(
            verify(&dir, &secret),
            Err(SealError::NotSealed { .. })
        ));
    }

    /// `mcp.json` names the server Claude sends the session token to: it is sealed like the
    /// settings, so a rewritten URL is refused before any token leaves.
    #[test]
    fn a_rewritten_mcp_config_is_refused() {
        let (_tmp, dir, secret) = setup();
        seal(&dir, &secret, &files("a")).unwrap();
        assert_eq!(verify(&dir, &secret).unwrap().files.mcp, files("a").mcp);
        fs::write(
            dir.join(MCP),
            r#"{"mcpServers":{"cco":{"type":"http","url":"http://evil.example:80/mcp"}}}"#,
        )
        .unwrap();
        let err = verify(&dir, &secret).unwrap_err();
        assert!(
            matches!(&err, SealError::Tampered { path } if path.ends_with(MCP)),
            "{err}"
        );
    }

    #[test]
    fn symlinks_and_open_modes_refused() {
        let (tmp, dir, secret) = setup();
        seal(&dir, &secret, &files("a")).unwrap();
        let decoy = tmp.path().join("decoy.json");
        fs::copy(dir.join(SETTINGS), &decoy).unwrap();
        fs::remove_file(dir.join(SETTINGS)).unwrap();
        std::os::unix::fs::symlink(&decoy, dir.join(SETTINGS)).unwrap();
        assert!(matches!(
            verify(&dir, &secret),
            Err(SealError::Insecure(PathError::Symlink { .. }))
        ));

        seal(&dir, &secret, &files("a")).unwrap();
        assert!(
            fs::symlink_metadata(dir.join(SETTINGS)).unwrap().is_file(),
            "seal replaced the link"
        );
        fs::set_permissions(dir.join(HOOKS), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            verify(&dir, &secret),
            Err(SealError::Insecure(PathError::TooOpen { .. }))
        ));

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            verify(&dir, &secret),
            Err(SealError::Insecure(PathError::TooOpen { .. }))
        ));
    }

    #[test]
    fn runtime_dir_symlink_refused() {
        let (tmp, dir, secret) = setup();
        let real = tmp.path().join("real");
        seal(&real, &secret, &files("a")).unwrap();
        std::os::unix::fs::symlink(&real, &dir).unwrap();
        assert!(matches!(
            seal(&dir, &secret, &files("a")),
            Err(SealError::Insecure(PathError::Symlink { .. }))
        ));
        assert!(matches!(
            verify(&dir, &secret),
            Err(SealError::Insecure(PathError::Symlink { .. }))
        ));
    }

    /// A seal from another version or not JSON at all says which, and how to fix it.
    #[test]
    fn a_seal_of_another_version_or_not_json_is_named() {
        let (_tmp, dir, secret) = setup();
        seal(&dir, &secret, &files("a")).unwrap();
        let text = std::fs::read_to_string(dir.join(SEAL)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut other = v.clone();
        other["version"] = (SEAL_VERSION + 1).into();
        securefs::write_atomic(&dir, SEAL.as_ref(), other.to_string().as_bytes(), 0o600).unwrap();
        let err = verify(&dir, &secret).unwrap_err();
        assert!(
            matches!(&err, SealError::BadSeal { reason: BadSeal::Version(n), .. } if *n == SEAL_VERSION + 1),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with("run `cco daemon restart` to rewrite them"),
            "{err}"
        );
        securefs::write_atomic(&dir, SEAL.as_ref(), b"{", 0o600).unwrap();
        assert!(matches!(
            verify(&dir, &secret).unwrap_err(),
            SealError::BadSeal {
                reason: BadSeal::Json(_),
                ..
            }
        ));
    }
}
