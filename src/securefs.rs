//! Secure-file operations: owner/mode/no-symlink checks, `O_NOFOLLOW` opens, atomic and
//! durable writes, and the trust check of programs cco executes. Knows no location: callers
//! pass paths in (locations live in [`crate::paths`]).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("HOME is not set; set it (or XDG_CONFIG_HOME and CCO_DATA_DIR) and try again")]
    NoHome,
    #[error(
        "{path} is a symlink; cco refuses to follow it — remove it (`rm {path}`) and run `cco daemon restart`"
    )]
    Symlink { path: PathBuf },
    #[error(
        "{path} is owned by uid {owner}, not by you (uid {me}) — remove it and run `cco daemon restart`"
    )]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "{path} has mode {mode:04o}; it must not be accessible to group or others — run `chmod {want:o} {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32, want: u32 },
    #[error(
        "{path} is writable by group or others (mode {mode:04o}), so another user could change \
         what cco runs — run `chmod go-w {path}`"
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "{path} is owned by uid {owner}, not by you (uid {me}), so cco does not trust it — \
         make it yours: `sudo chown {me} {path}`"
    )]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "{path} is not a {want} — move it out of the way (`mv {path} {path}.old`) and run the command again"
    )]
    WrongKind { path: PathBuf, want: &'static str },
    #[error(
        "{path} is larger than {cap} bytes, more than cco ever writes there — move it aside \
         (`mv {path} {path}.old`) and run the command again"
    )]
    TooLarge { path: PathBuf, cap: u64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl PathError {
    pub fn io(path: &Path, source: io::Error) -> PathError {
        PathError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `dir` (and missing parents) with mode `0700`, then checks that it is a real
/// directory, owned by this user, with no group/other access.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PathError> {
    match fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let created = crate::marker::missing_dirs(dir);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| PathError::io(dir, e))?;
            // Marked as cco's, so `cco uninstall --purge` may delete them and nothing else.
            crate::marker::mark_created(&created);
        }
        Err(e) => return Err(PathError::io(dir, e)),
    }
    check_private_dir(dir)
}

/// The check of [`ensure_private_dir`] without creating anything.
pub fn check_private_dir(dir: &Path) -> Result<(), PathError> {
    let meta = fs::symlink_metadata(dir).map_err(|e| PathError::io(dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(PathError::Symlink { path: dir.into() });
    }
    if !meta.is_dir() {
        return Err(PathError::WrongKind {
            path: dir.into(),
            want: "directory",
        });
    }
    check_owner_mode(dir, &meta, 0o700)
}

fn check_owner_mode(path: &Path, meta: &fs::Metadata, want: u32) -> Result<(), PathError> {
    let me = current_uid();
    if meta.uid() != me {
        return Err(PathError::NotOwned {
            path: path.into(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PathError::TooOpen {
            path: path.into(),
            mode,
            want,
        });
    }
    Ok(())
}

/// Opens an existing private file for reading: no symlink is followed, and the file must be
/// a regular file owned by this user with no group/other access.
pub fn open_private(path: &Path) -> Result<File, PathError> {
    let (file, meta) = open_regular_nofollow(path)?;
    check_owner_mode(path, &meta, 0o600)?;
    Ok(file)
}

/// Opens `path` for reading without following a symlink; it must be a regular file.
fn open_regular_nofollow(path: &Path) -> Result<(File, fs::Metadata), PathError> {
    let file = OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever;
        // the kind is checked on the descriptor below. Regular-file reads ignore the flag.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => PathError::Symlink { path: path.into() },
            _ => PathError::io(path, e),
        })?;
    let meta = file.metadata().map_err(|e| PathError::io(path, e))?;
    if !meta.is_file() {
        return Err(PathError::WrongKind {
            path: path.into(),
            want: "regular file",
        });
    }
    Ok((file, meta))
}

/// Opens a file that steers what cco runs (the config names the `claude` it execs): no
/// symlink is followed, and it must be a regular file owned by this user (or root) that
/// group and others cannot write — reading is fine, `0644` is. Its directory is checked
/// with [`check_trusted_dir`].
pub fn open_trusted(path: &Path) -> Result<File, PathError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        check_trusted_dir(dir)?;
    }
    let (file, meta) = open_regular_nofollow(path)?;
    check_trusted_meta(path, &meta)?;
    Ok(file)
}

/// A directory holding files cco trusts (config, secret): owned by this user (or root) and
/// not writable by group or others, unless sticky like `/tmp` (then nobody can replace
/// another's file in it). A missing directory passes: there is nothing in it to trust.
/// Symlinks are followed: the directory they lead to is what is checked.
pub fn check_trusted_dir(dir: &Path) -> Result<(), PathError> {
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PathError::io(dir, e)),
    };
    if !meta.is_dir() {
        return Err(PathError::WrongKind {
            path: dir.into(),
            want: "directory",
        });
    }
    if meta.mode() & STICKY != 0 {
        return Ok(());
    }
    check_trusted_meta(dir, &meta)
}

/// Every existing directory on the way to `path` (and `path` itself, if it exists) passes
/// [`check_trusted_dir`], and every symlink on the way belongs to this user or root: a
/// directory cco writes into (service units) cannot be redirected by another user. Symlinks
/// of your own (dotfile managers) are followed and the directories they lead to checked.
pub fn check_trusted_path(path: &Path) -> Result<(), PathError> {
    let me = current_uid();
    let mut prefix = PathBuf::new();
    for part in path.components() {
        prefix.push(part);
        let meta = match fs::symlink_metadata(&prefix) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(PathError::io(&prefix, e)),
        };
        if meta.file_type().is_symlink() && meta.uid() != me && meta.uid() != 0 {
            return Err(PathError::ForeignOwner {
                path: prefix,
                owner: meta.uid(),
                me,
            });
        }
        check_trusted_dir(&prefix)?;
    }
    Ok(())
}

/// `S_ISVTX`, spelled out: libc's type for it differs between Linux and macOS.
const STICKY: u32 = 0o1000;

/// The owner/mode half of [`open_trusted`], for callers that opened the file themselves.
pub fn check_trusted_meta(path: &Path, meta: &fs::Metadata) -> Result<(), PathError> {
    let me = current_uid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(PathError::ForeignOwner {
            path: path.into(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PathError::Writable {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

pub fn read_private(path: &Path) -> Result<Vec<u8>, PathError> {
    let mut file = open_private(path)?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)
        .map_err(|e| PathError::io(path, e))?;
    Ok(buf)
}

/// Reads all of `file` (opened from `path`), refusing more than `cap` bytes: a file that
/// grew past anything cco writes is not read into memory.
pub fn read_to_cap(file: File, path: &Path, cap: u64) -> Result<Vec<u8>, PathError> {
    let mut buf = Vec::new();
    // One byte past the cap tells "exactly cap" from "more" without trusting `st_size`.
    file.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| PathError::io(path, e))?;
    if buf.len() as u64 > cap {
        return Err(PathError::TooLarge {
            path: path.into(),
            cap,
        });
    }
    Ok(buf)
}

/// [`read_private`] with a size cap.
pub fn read_private_capped(path: &Path, cap: u64) -> Result<Vec<u8>, PathError> {
    read_to_cap(open_private(path)?, path, cap)
}

/// Writes `bytes` to `dir/name` atomically and durably: a temp file in the same directory
/// (mode `mode`, `O_EXCL|O_NOFOLLOW`), fsync, rename over the target, fsync the directory.
/// A crash leaves either the old file or the new one, never a torn one.
pub fn write_atomic(dir: &Path, name: &OsStr, bytes: &[u8], mode: u32) -> io::Result<()> {
    let target = dir.join(name);
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        // The umask may have narrowed the mode; never widened it, but set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &target)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes a rename or create in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Disk full is an error users can act on; name it.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_checks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            check_private_dir(&dir),
            Err(PathError::TooOpen { .. })
        ));

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(matches!(
            ensure_private_dir(&link),
            Err(PathError::Symlink { .. })
        ));
    }

    #[test]
    fn atomic_write_and_private_open() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(tmp.path(), OsStr::new("f"), b"one", 0o600).unwrap();
        write_atomic(tmp.path(), OsStr::new("f"), b"two", 0o600).unwrap();
        assert_eq!(read_private(&tmp.path().join("f")).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temp file left"
        );

        let link = tmp.path().join("l");
        std::os::unix::fs::symlink(tmp.path().join("f"), &link).unwrap();
        assert!(matches!(
            open_private(&link),
            Err(PathError::Symlink { .. })
        ));

        fs::set_permissions(tmp.path().join("f"), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            open_private(&tmp.path().join("f")),
            Err(PathError::TooOpen { .. })
        ));
    }

    #[test]
    fn trusted_files_may_be_read_by_others_but_not_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cco");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let f = dir.join("daemon.toml");
        fs::write(&f, "").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        open_trusted(&f).unwrap();

        for mode in [0o664, 0o646] {
            fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
            let err = open_trusted(&f).unwrap_err();
            assert!(matches!(err, PathError::Writable { .. }), "{err}");
            assert!(
                err.to_string()
                    .ends_with(&format!("`chmod go-w {}`", f.display())),
                "{err}"
            );
        }
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();

        // A group-writable directory lets another user swap the file.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o775)).unwrap();
        let err = open_trusted(&f).unwrap_err();
        assert!(
            matches!(&err, PathError::Writable { path, .. } if *path == dir),
            "{err}"
        );
        // …unless it is sticky, like /tmp.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        open_trusted(&f).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();

        let link = dir.join("link.toml");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(matches!(
            open_trusted(&link),
            Err(PathError::Symlink { .. })
        ));
        assert!(check_trusted_dir(&tmp.path().join("missing")).is_ok());
    }

    #[test]
    fn trusted_path_checks_every_directory_on_the_way() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("cfg");
        let units = cfg.join("systemd/user");
        fs::create_dir_all(&units).unwrap();
        fs::set_permissions(&cfg, fs::Permissions::from_mode(0o755)).unwrap();
        check_trusted_path(&units).unwrap();
        check_trusted_path(&units.join("missing/deeper")).unwrap();

        // A group-writable directory on the way lets another user swap what follows.
        fs::set_permissions(&cfg, fs::Permissions::from_mode(0o775)).unwrap();
        let err = check_trusted_path(&units).unwrap_err();
        assert!(
            matches!(&err, PathError::Writable { path, .. } if *path == cfg),
            "{err}"
        );
        fs::set_permissions(&cfg, fs::Permissions::from_mode(0o755)).unwrap();

        // Your own symlink is followed, and where it leads is checked too.
        let elsewhere = tmp.path().join("dotfiles");
        fs::create_dir(&elsewhere).unwrap();
        fs::remove_dir_all(cfg.join("systemd")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, cfg.join("systemd")).unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o755)).unwrap();
        check_trusted_path(&cfg.join("systemd/user")).unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_trusted_path(&cfg.join("systemd/user")).unwrap_err();
        assert!(matches!(err, PathError::Writable { .. }), "{err}");
    }

    #[test]
    fn a_fifo_or_device_as_a_trusted_file_fails_fast() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without O_NONBLOCK this open waits for a writer forever.
        let err = open_trusted(&fifo).unwrap_err();
        assert!(matches!(err, PathError::WrongKind { .. }), "{err}");
        assert!(matches!(
            open_private(&fifo),
            Err(PathError::WrongKind { .. })
        ));
        let err = open_trusted(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(err, PathError::WrongKind { .. }), "{err}");
    }

    #[test]
    fn reads_are_capped() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(tmp.path(), OsStr::new("f"), &[1; 10], 0o600).unwrap();
        let f = tmp.path().join("f");
        assert_eq!(read_private_capped(&f, 10).unwrap().len(), 10);
        let err = read_private_capped(&f, 9).unwrap_err();
        assert!(matches!(err, PathError::TooLarge { cap: 9, .. }), "{err}");
        assert!(
            err.to_string().ends_with("and run the command again"),
            "{err}"
        );
    }
}
