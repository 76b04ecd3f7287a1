//! The mark cco leaves in every directory it creates, so `cco uninstall --purge` can tell its
//! own directories from a user's (`data_dir = $HOME` makes `~/orchestration` ambiguous).
//! A leaf module: it imports nothing from cco, so `paths` can call it without a cycle.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// File name of the mark; hidden so listings of cco's directories stay clean.
pub const MARKER: &str = ".cco-created";

const MARKER_TEXT: &str =
    "cco created this directory; `cco uninstall --purge` may delete it and cco's files in it.\n";

/// The directories `create_dir_all(dir)` is about to create, outermost first: every
/// ancestor of `dir` (and `dir` itself) that does not exist yet. Call before creating.
pub fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && fs::symlink_metadata(d).is_err())
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

/// Marks each of `dirs` (what [`missing_dirs`] returned before cco created them) as cco's.
/// Best effort: a missing mark only makes a later purge keep that directory.
pub fn mark_created(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = write_marker(d);
    }
}

fn write_marker(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Ok(());
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(MARKER))?;
    f.write_all(MARKER_TEXT.as_bytes())
}

/// `create_dir_all` that marks every directory it creates.
pub fn create_dir_all_marked(dir: &Path) -> io::Result<()> {
    let missing = missing_dirs(dir);
    fs::create_dir_all(dir)?;
    mark_created(&missing);
    Ok(())
}

/// True when `dir` is a real directory (not a symlink) holding a mark that is a regular file
/// owned by `uid`: a mark someone else planted, or one reached through a symlink, is no mark.
pub fn is_marked(dir: &Path, uid: u32) -> bool {
    let is_real_dir = fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
    is_real_dir
        && fs::symlink_metadata(dir.join(MARKER)).is_ok_and(|m| m.is_file() && m.uid() == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_directories_cco_created_are_marked() {
        let tmp = tempfile::tempdir().unwrap();
        let existing = tmp.path().join("home");
        fs::create_dir(&existing).unwrap();
        let deep = existing.join(".cco/orchestration");
        create_dir_all_marked(&deep).unwrap();
        let me = unsafe { libc::geteuid() };
        assert!(is_marked(&deep, me));
        assert!(is_marked(&existing.join(".cco"), me));
        assert!(
            !is_marked(&existing, me),
            "a directory that existed stays unmarked"
        );
        // A symlink to a marked directory is not itself a marked directory.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&deep, &link).unwrap();
        assert!(!is_marked(&link, me));
        // A mark owned by someone else does not count.
        assert!(!is_marked(&deep, me + 1));
    }
}
