//! The installation secret: 32 random bytes beside the config file, mode 0600, created once.
//! It keys the seal's HMACs and signs every JWT; it never leaves the file.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use crate::securefs::{self, PathError};

pub const SECRET_LEN: usize = 32;
/// cco writes [`SECRET_LEN`] bytes; a secret file far larger is not read into memory.
pub const MAX_SECRET_BYTES: u64 = 4096;

/// The secret bytes; `Debug` never shows them.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "no secret at {path} — cco is not set up yet: run `cco install` (or `cco daemon start`)"
    )]
    Missing { path: std::path::PathBuf },
    #[error(
        "secret {path} is {len} bytes; at least {SECRET_LEN} are required — delete it and run `cco daemon restart`"
    )]
    TooShort {
        path: std::path::PathBuf,
        len: usize,
    },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("cannot create secret {path}: {source}")]
    Create {
        path: std::path::PathBuf,
        source: io::Error,
    },
}

impl Secret {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// For tests and tools that already hold key material.
    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// Reads the secret; it must exist, be private and long enough.
    pub fn load(path: &Path) -> Result<Secret, SecretError> {
        // Whoever can write the directory can swap the secret for one they know.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            securefs::check_trusted_dir(dir)?;
        }
        match securefs::read_private_capped(path, MAX_SECRET_BYTES) {
            Ok(bytes) if bytes.len() < SECRET_LEN => Err(SecretError::TooShort {
                path: path.into(),
                len: bytes.len(),
            }),
            Ok(bytes) => Ok(Secret(bytes)),
            Err(PathError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Err(SecretError::Missing { path: path.into() })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the secret, creating it first if there is none. Two processes starting at
    /// once (daemon and sidecar are activated together) agree on one secret: the file is
    /// published with `link`, which fails if the other won the race.
    pub fn load_or_create(path: &Path) -> Result<Secret, SecretError> {
        match Secret::load(path) {
            Err(SecretError::Missing { .. }) => {}
            other => return other,
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        securefs::ensure_private_dir(dir).or_else(|e| match e {
            // The config dir may be readable by others (a 0755 ~/.config/cco); the secret
            // file itself is private. Writable by others is refused: they could swap it.
            PathError::TooOpen { .. } => securefs::check_trusted_dir(dir),
            other => Err(other),
        })?;
        let mut bytes = vec![0u8; SECRET_LEN];
        getrandom::fill(&mut bytes).map_err(|e| SecretError::Create {
            path: path.into(),
            source: io::Error::other(e.to_string()),
        })?;
        let name = format!(".secret.new.{}", std::process::id());
        let create = |e| SecretError::Create {
            path: path.into(),
            source: e,
        };
        securefs::write_atomic(dir, name.as_ref(), &bytes, 0o600).map_err(create)?;
        let tmp = dir.join(&name);
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                securefs::sync_dir(dir).map_err(create)?;
                Ok(Secret(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Secret::load(path),
            Err(e) => Err(create(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_stable() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("cfg/secret");
        assert!(matches!(
            Secret::load(&path),
            Err(SecretError::Missing { .. })
        ));
        let a = Secret::load_or_create(&path).unwrap();
        let b = Secret::load_or_create(&path).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        assert_eq!(a.bytes().len(), SECRET_LEN);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(format!("{a:?}"), "Secret(..)");
    }

    #[test]
    fn short_or_open_secret_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("secret");
        securefs::write_atomic(tmp.path(), "secret".as_ref(), b"short", 0o600).unwrap();
        assert!(matches!(
            Secret::load(&path),
            Err(SecretError::TooShort { .. })
        ));
        securefs::write_atomic(tmp.path(), "secret".as_ref(), &[7; 32], 0o644).unwrap();
        assert!(matches!(
            Secret::load(&path),
            Err(SecretError::Path(PathError::TooOpen { .. }))
        ));
    }

    #[test]
    fn directory_writable_by_others_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cfg");
        fs::create_dir(&dir).unwrap();
        let path = dir.join("secret");
        // Readable by others is fine…
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let a = Secret::load_or_create(&path).unwrap();
        assert_eq!(Secret::load(&path).unwrap().bytes(), a.bytes());
        // …writable is not, for an existing secret and a new one alike.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o775)).unwrap();
        let err = Secret::load(&path).unwrap_err();
        assert!(
            matches!(err, SecretError::Path(PathError::Writable { .. })),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with(&format!("`chmod go-w {}`", dir.display()))
        );
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            Secret::load_or_create(&path),
            Err(SecretError::Path(PathError::Writable { .. }))
        ));
        assert!(!path.exists());
    }

    /// A FIFO or device where the secret should be fails at once instead of blocking or
    /// reading without end; so does an oversized file.
    #[test]
    fn a_secret_that_is_not_a_small_regular_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("secret");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = Secret::load(&path).unwrap_err();
        assert!(
            matches!(err, SecretError::Path(PathError::WrongKind { .. })),
            "{err}"
        );
        fs::remove_file(&path).unwrap();
        let big = vec![7; MAX_SECRET_BYTES as usize + 1];
        securefs::write_atomic(tmp.path(), "secret".as_ref(), &big, 0o600).unwrap();
        assert!(matches!(
            Secret::load(&path),
            Err(SecretError::Path(PathError::TooLarge { .. }))
        ));
    }
}
