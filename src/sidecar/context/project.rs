//! Which directories may be read as a project at all: never the filesystem root, a system
//! directory, the home directory (or, for unbound tokens, its ancestors) or a credentials
//! directory; tokens bound to no project must also name a real one.

use std::path::{Path, PathBuf};

use crate::secrets::is_secret_name;

/// Why a directory may not be read as a project (the answer is 403 `out_of_scope`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProjectRefused {
    #[error(
        "{0} is the filesystem root or a system directory, not a project; pass the project's own directory"
    )]
    System(PathBuf),
    #[error(
        "{0} is your home directory or contains it, not a project; run cco from (or pass ?project=) the project's own directory"
    )]
    Home(PathBuf),
    #[error("{0} is inside a credentials directory; pass the project's own directory")]
    Secret(PathBuf),
    #[error(
        "{0} is neither a git work tree nor holds a project file (Cargo.toml, package.json, …); pass the project's root, or bind the token to it with `cco token --project DIR`"
    )]
    NotAProject(PathBuf),
}

/// Never a project, nor anything below them.
const SYSTEM_TREES: &[&str] = &[
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/private/etc",
    "/System",
];
/// Never a project themselves (projects may live below some of them).
const SYSTEM_DIRS: &[&str] = &[
    "/", "/usr", "/var", "/bin", "/sbin", "/lib", "/lib64", "/run", "/opt", "/srv", "/tmp",
    "/home", "/Users", "/private", "/Library",
];
/// Files that make a directory a project for tokens not bound to one.
pub const PROJECT_MARKERS: &[&str] = &[
    ".git",
    "Cargo.toml",
    "package.json",
    "pyproject.toml",
    "setup.py",
    "go.mod",
    "Makefile",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "Gemfile",
    "composer.json",
    "CMakeLists.txt",
    "mix.exs",
    "deno.json",
];

/// Whether the canonical directory `root` may be walked as a project. `home` is the
/// (canonical) home directory; `unbound` tokens (no `project` claim) must also name a real
/// project: a git work tree or a directory with a project file, never an ancestor of home.
pub fn check_project(
    root: &Path,
    home: Option<&Path>,
    unbound: bool,
) -> Result<(), ProjectRefused> {
    if SYSTEM_DIRS.iter().any(|d| root == Path::new(d))
        || SYSTEM_TREES.iter().any(|d| root.starts_with(d))
    {
        return Err(ProjectRefused::System(root.to_owned()));
    }
    if let Some(home) = home
        && (root == home || (unbound && home.starts_with(root)))
    {
        return Err(ProjectRefused::Home(root.to_owned()));
    }
    let in_credentials = root.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|n| n.starts_with('.') && is_secret_name(n))
    });
    if in_credentials {
        return Err(ProjectRefused::Secret(root.to_owned()));
    }
    if unbound && !PROJECT_MARKERS.iter().any(|m| root.join(m).exists()) {
        return Err(ProjectRefused::NotAProject(root.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_that_are_not_projects_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        let home = base.join("home");
        let proj = home.join("work/app");
        let bare = home.join("notes");
        let creds = home.join(".aws/sub");
        for dir in [&proj, &bare, &creds] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(proj.join("Cargo.toml"), "").unwrap();
        std::fs::write(creds.join("Cargo.toml"), "").unwrap();
        let h = Some(home.as_path());
        use ProjectRefused::*;
        for unbound in [false, true] {
            assert!(matches!(
                check_project(Path::new("/"), h, unbound),
                Err(System(_))
            ));
            assert!(matches!(
                check_project(Path::new("/etc"), h, unbound),
                Err(System(_))
            ));
            assert!(matches!(
                check_project(Path::new("/etc/ssl"), h, unbound),
                Err(System(_))
            ));
            assert!(matches!(check_project(&home, h, unbound), Err(Home(_))));
            assert!(matches!(check_project(&creds, h, unbound), Err(Secret(_))));
            assert_eq!(check_project(&proj, h, unbound), Ok(()));
        }
        // Only tokens without a project binding need a marker and may not take home's parent.
        assert_eq!(check_project(&bare, h, false), Ok(()));
        assert!(matches!(check_project(&bare, h, true), Err(NotAProject(_))));
        assert_eq!(check_project(&base, h, false), Ok(()));
        assert!(matches!(check_project(&base, h, true), Err(Home(_))));
    }
}
