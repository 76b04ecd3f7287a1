//! Walking a project tree: `.gitignore` respected, secret names pruned, only regular files
//! listed, bounded in count and time; and reading a listed file's text with a size cap.
//! Ignore files are attacker-shaped too: one that is a FIFO, device or huge is never opened.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::api::sidecar::ProjectMetadata;
use crate::secrets::is_secret_name;
use crate::untrusted::{Links, read_head};

/// Walks stop here; bigger trees are listed partially (`truncated`).
pub const MAX_FILES: usize = 20_000;
/// Bytes read to decide whether a file is text.
const SNIFF: usize = 1024;
/// The ignore files the walker reads in every directory.
const IGNORE_FILES: &[&str] = &[".gitignore", ".ignore"];
/// A bigger ignore file is not read (its directory is left out instead).
const MAX_IGNORE_FILE: u64 = 1024 * 1024;

/// What a walk found.
#[derive(Debug, Default)]
pub struct Tree {
    /// Relative path and size of every listed file, sorted.
    pub files: Vec<(String, u64)>,
    pub metadata: ProjectMetadata,
    /// Every directory walked: a file added or removed changes one of their mtimes.
    pub dirs: Vec<PathBuf>,
    /// The walk stopped early (too many files, out of time, an unreadable ignore file).
    pub truncated: bool,
}

/// Whether the walker may read `dir`'s ignore files: each absent, or a regular file of at
/// most [`MAX_IGNORE_FILE`] bytes (symlinks are judged by what they point at).
fn ignore_files_safe(dir: &Path) -> bool {
    IGNORE_FILES
        .iter()
        .all(|name| match std::fs::metadata(dir.join(name)) {
            Ok(m) => m.is_file() && m.len() <= MAX_IGNORE_FILE,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        })
}

/// Lists the project at `root` until `deadline`.
pub fn walk(root: &Path, deadline: Instant) -> Tree {
    let mut tree = Tree::default();
    // The root's own ignore files are read before any filter runs: if one is hostile, walk
    // without ignore files at all (secret names are still pruned).
    let root_safe = ignore_files_safe(root);
    if !root_safe {
        tracing::warn!(root = %root.display(), "an ignore file is not a small regular file; walking without ignore rules");
        tree.truncated = true;
    }
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .require_git(false)
        .follow_links(false)
        // Parents lie outside the project and `.git/info/exclude` is reached through a
        // `.git` file the walker would read unbounded: the project's own files decide.
        .parents(false)
        .git_exclude(false)
        .git_ignore(root_safe)
        .ignore(root_safe)
        .filter_entry(|e| {
            // Non-UTF-8 names are pruned too: they could not be matched.
            let named = e.file_name().to_str().is_some_and(|n| !is_secret_name(n));
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            e.depth() == 0 || (named && (!is_dir || ignore_files_safe(e.path())))
        })
        .build();
    for entry in walker.flatten() {
        if Instant::now() >= deadline {
            tracing::warn!(root = %root.display(), "project walk out of time; listing partially");
            tree.truncated = true;
            break;
        }
        // Symlinks, FIFOs, sockets and devices are never listed, so never read.
        let Some(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() {
            tree.metadata.dir_count += 1;
            tree.dirs.push(entry.path().to_owned());
            continue;
        }
        if !ft.is_file() {
            continue;
        }
        if tree.files.len() >= MAX_FILES {
            tree.truncated = true;
            break;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel.to_str() else { continue };
        let size = entry.metadata().map_or(0, |m| m.len());
        tree.metadata.file_count += 1;
        tree.metadata.total_bytes += size;
        if let Some(lang) = language(rel) {
            *tree.metadata.languages.entry(lang.to_string()).or_default() += 1;
        }
        tree.files.push((rel.to_string(), size));
    }
    tree.metadata.dir_count = tree.metadata.dir_count.saturating_sub(1); // the root itself
    tree.files.sort();
    tree
}

/// Up to `max` bytes of a regular file's text; `None` for binaries, symlinks, special files
/// and unreadable files (a listed file may have been swapped for a FIFO since the walk).
pub fn read_text(path: &Path, max: usize) -> Option<String> {
    let (buf, _) = read_head(path, max as u64, Links::Refuse).ok()?;
    if buf[..buf.len().min(SNIFF)].contains(&0) {
        return None;
    }
    // Cut at a character boundary, not mid-UTF-8.
    let s = match String::from_utf8(buf) {
        Ok(s) => s,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let mut b = e.into_bytes();
            b.truncate(valid);
            String::from_utf8(b).ok()?
        }
    };
    Some(s)
}

fn language(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    let lang: BTreeMap<&str, &str> = [
        ("rs", "rust"),
        ("py", "python"),
        ("go", "go"),
        ("ts", "typescript"),
        ("tsx", "typescript"),
        ("js", "javascript"),
        ("jsx", "javascript"),
        ("java", "java"),
        ("kt", "kotlin"),
        ("c", "c"),
        ("h", "c"),
        ("cc", "cpp"),
        ("cpp", "cpp"),
        ("hpp", "cpp"),
        ("rb", "ruby"),
        ("sh", "shell"),
        ("md", "markdown"),
        ("toml", "toml"),
        ("yml", "yaml"),
        ("yaml", "yaml"),
        ("json", "json"),
        ("swift", "swift"),
        ("cs", "csharp"),
        ("php", "php"),
        ("sql", "sql"),
        ("html", "html"),
        ("css", "css"),
    ]
    .into_iter()
    .collect();
    lang.get(ext.as_str()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Issue 16: FIFOs, device symlinks and symlinks out of the tree are neither listed nor
    /// read; hostile ignore files are not opened (a FIFO `.gitignore` blocked the walker).
    #[test]
    fn special_files_are_neither_listed_nor_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::create_dir_all(p.join("sub")).unwrap();
        std::fs::write(p.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(p.join("sub/ok.rs"), "x\n").unwrap();
        mkfifo(&p.join("src/pipe.rs"));
        std::os::unix::fs::symlink("/dev/zero", p.join("src/zero.rs")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", p.join("src/out.rs")).unwrap();
        mkfifo(&p.join("sub/.gitignore"));
        let tree = walk(p, later());
        let names: Vec<_> = tree.files.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, vec!["src/main.rs"], "{tree:?}");
        for f in ["src/pipe.rs", "src/zero.rs", "src/out.rs"] {
            assert_eq!(read_text(&p.join(f), 100), None, "{f}");
        }
        assert_eq!(
            read_text(&p.join("src/main.rs"), 100).unwrap(),
            "fn main() {}\n"
        );
    }

    #[test]
    fn a_hostile_root_ignore_file_is_not_opened() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::os::unix::fs::symlink("/dev/zero", p.join(".gitignore")).unwrap();
        mkfifo(&p.join(".ignore"));
        std::fs::write(p.join("a.rs"), "x").unwrap();
        let tree = walk(p, later());
        assert_eq!(tree.files, vec![("a.rs".to_string(), 1)]);
        assert!(tree.truncated);
    }

    #[test]
    fn a_spent_deadline_lists_partially() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.rs"), "x").unwrap();
        let tree = walk(d.path(), Instant::now());
        assert!(tree.files.is_empty());
        assert!(tree.truncated);
    }
}
