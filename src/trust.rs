//! Trust checks for the programs cco registers or runs (its own binary in units and hooks,
//! `claude_path`): whoever can change such a file, or a directory or symlink on its way,
//! can run code as you — with your session token in its environment.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::securefs::current_uid;

/// `S_ISVTX`: in a sticky directory nobody can replace another's file.
const STICKY: u32 = 0o1000;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "cannot check {path}: {source} — check that it exists and that you can read it: `ls -ld {path}`"
    )]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a regular file, so cco will not run it — point cco at the program file \
         itself (`ls -l {path}` shows what is there)"
    )]
    NotAFile { path: PathBuf },
    #[error(
        "{path} is owned by uid {owner}, neither you nor root, so that account could change what \
         cco runs as {program} — copy the program somewhere only you or root can write and use \
         that copy: `install -Dm755 {program} ~/.local/bin/{name}`"
    )]
    ForeignOwner {
        path: PathBuf,
        owner: u32,
        program: PathBuf,
        name: String,
    },
    #[error(
        "{path} is writable by group or others (mode {mode:04o}), so another user could change \
         what cco runs as {program} — run `chmod go-w {path}`"
    )]
    Writable {
        path: PathBuf,
        mode: u32,
        program: PathBuf,
    },
}

/// Checks `program` before cco registers or executes it: the file and every directory on
/// its (resolved) path belong to you or root and are not writable by group or others
/// (sticky directories such as `/tmp` excepted), and every symlink on the way is yours or
/// root's. Other engineers call this for `claude_path`/`CCO_CLAUDE`.
pub fn check_program(program: &Path) -> Result<(), TrustError> {
    check_program_owned_by(program, &[current_uid(), 0])
}

/// [`check_program`] with an explicit list of trusted owners (system units: root, and the
/// account the services run as).
pub fn check_program_owned_by(program: &Path, owners: &[u32]) -> Result<(), TrustError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrustError::Io { path, source }
    };
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let foreign = |path: &Path, owner: u32| TrustError::ForeignOwner {
        path: path.into(),
        owner,
        program: program.into(),
        name: name.clone(),
    };
    // Symlinks as written: whoever owns one can point it elsewhere.
    let mut prefix = PathBuf::new();
    for part in program.components() {
        prefix.push(part);
        if matches!(
            part,
            Component::RootDir | Component::CurDir | Component::ParentDir
        ) {
            continue;
        }
        let meta = fs::symlink_metadata(&prefix).map_err(io(&prefix))?;
        if meta.file_type().is_symlink() && !owners.contains(&meta.uid()) {
            return Err(foreign(&prefix, meta.uid()));
        }
    }
    // Then what they lead to: every directory, and the file itself.
    let real = program.canonicalize().map_err(io(program))?;
    let mut dir = PathBuf::new();
    let parts: Vec<Component> = real.components().collect();
    for (i, part) in parts.iter().enumerate() {
        dir.push(part);
        let meta = fs::metadata(&dir).map_err(io(&dir))?;
        let last = i + 1 == parts.len();
        if last && !meta.is_file() {
            return Err(TrustError::NotAFile { path: dir });
        }
        if !owners.contains(&meta.uid()) {
            return Err(foreign(&dir, meta.uid()));
        }
        let mode = meta.mode() & 0o7777;
        let sticky_dir = !last && mode & STICKY != 0;
        if mode & 0o022 != 0 && !sticky_dir {
            return Err(TrustError::Writable {
                path: dir,
                mode,
                program: program.into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The hostile round's instance: a 0777 binary in a 0777 directory, and the same
    /// program reached through a symlink or a directory of another account.
    #[test]
    fn programs_others_can_change_are_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        chmod(tmp.path(), 0o755);
        let dir = tmp.path().join("bin");
        fs::create_dir(&dir).unwrap();
        let prog = dir.join("cco");
        fs::write(&prog, "#!/bin/sh\n").unwrap();
        chmod(&dir, 0o755);
        chmod(&prog, 0o755);
        check_program(&prog).unwrap();

        chmod(&prog, 0o777);
        let e = check_program(&prog).unwrap_err();
        assert!(matches!(e, TrustError::Writable { .. }), "{e}");
        assert!(
            e.to_string()
                .ends_with(&format!("`chmod go-w {}`", prog.display())),
            "{e}"
        );
        chmod(&prog, 0o755);
        chmod(&dir, 0o777);
        let e = check_program(&prog).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("{} is writable", dir.display())),
            "{e}"
        );
        chmod(&dir, 0o755);

        // Owned by another account (needs root to arrange; CI runs as root).
        let me = current_uid();
        assert_eq!(
            me, 0,
            "this test chowns files to another account and needs root"
        );
        std::os::unix::fs::lchown(&prog, Some(65534), Some(65534)).unwrap();
        let e = check_program(&prog).unwrap_err();
        assert!(
            matches!(e, TrustError::ForeignOwner { owner: 65534, .. }),
            "{e}"
        );
        assert!(check_program_owned_by(&prog, &[0, 65534]).is_ok());
        std::os::unix::fs::lchown(&prog, Some(0), Some(0)).unwrap();

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&prog, &link).unwrap();
        check_program(&link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let e = check_program(&link).unwrap_err();
        assert!(matches!(e, TrustError::ForeignOwner { .. }), "{e}");

        let e = check_program(&dir).unwrap_err();
        assert!(matches!(e, TrustError::NotAFile { .. }), "{e}");
    }
}
