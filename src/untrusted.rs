//! Reading files whose kind and size someone else can shape — a cloned repository, hook
//! input, agent directories: regular files only (never a FIFO, device or socket, which can
//! block or never end), opened without blocking, read with a size cap.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Whether a symlink at the final path component may be followed. Directories on the way
/// are always resolved; callers that must stay inside a tree check that themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    Follow,
    Refuse,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is a symlink, which cco does not follow here", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is a {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{} is larger than {cap} bytes", path.display())]
    TooLarge { path: PathBuf, cap: u64 },
}

impl ReadError {
    /// True when the path does not exist (callers often treat that as "nothing there").
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// What a file is, in words, for error messages.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// Opens `path` for reading if it is a regular file. `O_NONBLOCK` keeps the open itself from
/// waiting on a FIFO's writer; the kind is then checked on the open descriptor, so nothing
/// can be swapped in between.
pub fn open_regular(path: &Path, links: Links) -> Result<(File, Metadata), ReadError> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) if links == Links::Refuse => ReadError::Symlink { path: path.into() },
            _ => ReadError::Io {
                path: path.into(),
                source,
            },
        })?;
    let meta = file.metadata().map_err(|source| ReadError::Io {
        path: path.into(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular {
            path: path.into(),
            kind: kind_of(&meta),
        });
    }
    Ok((file, meta))
}

/// The first `cap` bytes of a regular file, and whether there was more.
pub fn read_head(path: &Path, cap: u64, links: Links) -> Result<(Vec<u8>, bool), ReadError> {
    let (file, meta) = open_regular(path, links)?;
    let mut buf = Vec::with_capacity(meta.len().min(cap) as usize);
    // One byte past the cap tells "exactly cap" from "more" without trusting `st_size`
    // (files in /proc report 0).
    file.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ReadError::Io {
            path: path.into(),
            source,
        })?;
    let more = buf.len() as u64 > cap;
    buf.truncate(cap as usize);
    Ok((buf, more))
}

/// A whole regular file of at most `cap` bytes; a larger one is an error, not a prefix.
pub fn read_capped(path: &Path, cap: u64, links: Links) -> Result<Vec<u8>, ReadError> {
    match read_head(path, cap, links)? {
        (_, true) => Err(ReadError::TooLarge {
            path: path.into(),
            cap,
        }),
        (buf, false) => Ok(buf),
    }
}

/// [`read_capped`] as UTF-8 text.
pub fn read_capped_string(path: &Path, cap: u64, links: Links) -> Result<String, ReadError> {
    let bytes = read_capped(path, cap, links)?;
    String::from_utf8(bytes).map_err(|e| ReadError::Io {
        path: path.into(),
        source: io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_capped(&p, 5, Links::Refuse).unwrap(), b"hello");
        assert!(matches!(
            read_capped(&p, 4, Links::Refuse),
            Err(ReadError::TooLarge { cap: 4, .. })
        ));
        assert_eq!(
            read_head(&p, 3, Links::Refuse).unwrap(),
            (b"hel".to_vec(), true)
        );
        assert_eq!(
            read_head(&p, 5, Links::Refuse).unwrap(),
            (b"hello".to_vec(), false)
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_head(&p, 10, Links::Follow).unwrap_err();
        assert!(
            matches!(err, ReadError::NotRegular { kind: "FIFO", .. }),
            "{err}"
        );
    }

    #[test]
    fn devices_and_directories_are_refused() {
        for (p, kind) in [("/dev/zero", "character device"), ("/", "directory")] {
            let err = read_head(Path::new(p), 10, Links::Follow).unwrap_err();
            assert!(
                matches!(err, ReadError::NotRegular { kind: k, .. } if k == kind),
                "{p}: {err}"
            );
        }
    }

    #[test]
    fn symlinks_are_refused_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_capped(&link, 1, Links::Follow).unwrap(), b"x");
        assert!(matches!(
            read_capped(&link, 1, Links::Refuse),
            Err(ReadError::Symlink { .. })
        ));
        let to_dev = dir.path().join("z");
        std::os::unix::fs::symlink("/dev/zero", &to_dev).unwrap();
        assert!(matches!(
            read_capped(&to_dev, 1, Links::Follow),
            Err(ReadError::NotRegular { .. })
        ));
        assert!(
            read_capped(&dir.path().join("missing"), 1, Links::Follow)
                .unwrap_err()
                .is_not_found()
        );
    }
}
