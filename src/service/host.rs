//! The side effects of installing and operating services, behind one trait: the real
//! [`System`] (optionally `--dry-run`, which only says what it would change) and, in tests, a
//! fake. Queries run even in a dry run; changes never do.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

use crate::client::sidecar::ServiceError;
use crate::paths;
use crate::trust::TrustError;

/// A command line to run (`systemctl --user …`, `launchctl …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
}

impl Cmd {
    pub fn new<I, S>(program: &str, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", shell_quote(a))?;
        }
        Ok(())
    }
}

/// Quotes a word for display so a user can paste it into a shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+-:,@=%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What a command printed and how it exited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(stdout: &str) -> Output {
        Output {
            code: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// stderr, else stdout, trimmed: what to show when the command failed.
    pub fn message(&self) -> String {
        let e = self.stderr.trim();
        if e.is_empty() {
            self.stdout.trim().to_string()
        } else {
            e.to_string()
        }
    }
}

pub trait Host {
    /// True when changes are only described, not made.
    fn dry_run(&self) -> bool;
    /// A command that only reads state; runs in a dry run too.
    fn query(&mut self, cmd: &Cmd) -> io::Result<Output>;
    /// A command that changes state.
    fn change(&mut self, cmd: &Cmd) -> io::Result<Output>;
    fn read_file(&mut self, path: &Path) -> io::Result<Option<String>>;
    /// Writes `text` atomically (temp file, fsync, rename), creating the directory.
    fn write_file(&mut self, path: &Path, text: &str) -> io::Result<()>;
    /// Removes a file; false when it was not there.
    fn remove_file(&mut self, path: &Path) -> io::Result<bool>;
    /// Removes a directory tree; false when it was not there.
    fn remove_tree(&mut self, path: &Path) -> io::Result<bool>;
    /// True when nothing listens on 127.0.0.1:`port`.
    fn port_free(&mut self, port: u16) -> bool;
    /// `GET /health` on 127.0.0.1:`port`: the status word, or why there is none.
    fn health(&mut self, port: u16) -> Result<String, ServiceError>;
    /// Holds an exclusive lock on the directory `dir` (created if missing) until the
    /// returned file is dropped: concurrent installs take turns. None in a dry run.
    fn lock_dir(&mut self, dir: &Path) -> io::Result<Option<std::fs::File>>;
    /// [`crate::trust::check_program_owned_by`]: may `owners` alone change `program`?
    fn check_program(&mut self, program: &Path, owners: &[u32]) -> Result<(), TrustError>;
    /// Waits `ms` milliseconds (polling for launchd's bootout).
    fn sleep_ms(&mut self, ms: u64);
    /// One line of the report for the user.
    fn say(&mut self, line: &str);
}

/// The real machine. With `dry_run`, changes are printed instead of made.
#[derive(Debug, Default)]
pub struct System {
    pub dry_run: bool,
}

impl System {
    pub fn new(dry_run: bool) -> System {
        System { dry_run }
    }
}

fn run(cmd: &Cmd) -> io::Result<Output> {
    let out = Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(std::process::Stdio::null())
        .output()?;
    Ok(Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

impl Host for System {
    fn dry_run(&self) -> bool {
        self.dry_run
    }
    fn query(&mut self, cmd: &Cmd) -> io::Result<Output> {
        run(cmd)
    }
    fn change(&mut self, cmd: &Cmd) -> io::Result<Output> {
        if self.dry_run {
            self.say(&format!("would run: {cmd}"));
            return Ok(Output::ok(""));
        }
        self.say(&format!("run: {cmd}"));
        run(cmd)
    }
    fn read_file(&mut self, path: &Path) -> io::Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn write_file(&mut self, path: &Path, text: &str) -> io::Result<()> {
        if self.dry_run {
            self.say(&format!("would write {}:", path.display()));
            for l in text.lines() {
                self.say(&format!("    {l}"));
            }
            return Ok(());
        }
        write_atomic(path, text)
    }
    fn remove_file(&mut self, path: &Path) -> io::Result<bool> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(false);
        }
        if self.dry_run {
            self.say(&format!("would remove {}", path.display()));
            return Ok(true);
        }
        std::fs::remove_file(path)?;
        Ok(true)
    }
    fn remove_tree(&mut self, path: &Path) -> io::Result<bool> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(false);
        }
        if self.dry_run {
            self.say(&format!("would remove {}", path.display()));
            return Ok(true);
        }
        std::fs::remove_dir_all(path)?;
        Ok(true)
    }
    fn port_free(&mut self, port: u16) -> bool {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    }
    fn health(&mut self, port: u16) -> Result<String, ServiceError> {
        crate::client::sidecar::health_summary(port, crate::client::sidecar::DEFAULT_TIMEOUT)
            .map(|h| h.status)
    }
    fn lock_dir(&mut self, dir: &Path) -> io::Result<Option<std::fs::File>> {
        if self.dry_run {
            return Ok(None);
        }
        let trusted = |dir: &Path| paths::check_trusted_path(dir).map_err(io::Error::other);
        trusted(dir)?;
        std::fs::create_dir_all(dir)?;
        trusted(dir)?;
        // flock(2) on the directory itself: no lock file is left behind in the unit dir.
        let f = std::fs::File::open(dir)?;
        f.lock()?;
        Ok(Some(f))
    }
    fn check_program(&mut self, program: &Path, owners: &[u32]) -> Result<(), TrustError> {
        crate::trust::check_program_owned_by(program, owners)
    }
    fn sleep_ms(&mut self, ms: u64) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    fn say(&mut self, line: &str) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

/// Temp file in the same directory, fsync, rename, fsync the directory: a crash leaves the
/// old unit or the new one, never half of one. The manager runs what these units say, so
/// the directory must be one no other user can write or redirect (a planted symlink, a
/// group-writable `~/.config`): checked before it is created and again after.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default();
    let trusted = |dir: &Path| paths::check_trusted_path(dir).map_err(io::Error::other);
    trusted(dir)?;
    std::fs::create_dir_all(dir)?;
    trusted(dir)?;
    paths::write_atomic(dir, name, text.as_bytes(), 0o644)
}

#[cfg(test)]
pub mod fake {
    //! A scripted [`Host`] for tests: answers queries from a table, records every change.
    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use std::path::PathBuf;

    #[derive(Debug, Default)]
    pub struct Fake {
        pub dry: bool,
        /// Answers by the command's display text; unknown queries fail with code 1.
        pub answers: HashMap<String, Output>,
        pub files: BTreeMap<PathBuf, String>,
        pub busy_ports: Vec<u16>,
        pub changes: Vec<String>,
        pub lines: Vec<String>,
        pub unhealthy: Vec<u16>,
        /// Programs the trust check refuses, with the mode it reports.
        pub untrusted: Vec<(PathBuf, u32)>,
        /// Directories locked with [`Host::lock_dir`].
        pub locks: Vec<PathBuf>,
    }

    impl Fake {
        pub fn answer(&mut self, cmd: &str, stdout: &str) -> &mut Self {
            self.answers.insert(cmd.into(), Output::ok(stdout));
            self
        }
        pub fn fail(&mut self, cmd: &str, stderr: &str) -> &mut Self {
            self.answers.insert(
                cmd.into(),
                Output {
                    code: Some(1),
                    stdout: String::new(),
                    stderr: stderr.into(),
                },
            );
            self
        }
        pub fn transcript(&self) -> String {
            self.lines.join("\n")
        }
    }

    impl Host for Fake {
        fn dry_run(&self) -> bool {
            self.dry
        }
        fn query(&mut self, cmd: &Cmd) -> io::Result<Output> {
            Ok(self
                .answers
                .get(&cmd.to_string())
                .cloned()
                .unwrap_or(Output {
                    code: Some(1),
                    stdout: String::new(),
                    stderr: format!("fake: no answer for {cmd}"),
                }))
        }
        fn change(&mut self, cmd: &Cmd) -> io::Result<Output> {
            self.changes.push(cmd.to_string());
            self.say(&format!("run: {cmd}"));
            Ok(self
                .answers
                .get(&cmd.to_string())
                .cloned()
                .unwrap_or(Output::ok("")))
        }
        fn read_file(&mut self, path: &Path) -> io::Result<Option<String>> {
            Ok(self.files.get(path).cloned())
        }
        fn write_file(&mut self, path: &Path, text: &str) -> io::Result<()> {
            self.changes.push(format!("write {}", path.display()));
            self.files.insert(path.into(), text.into());
            Ok(())
        }
        fn remove_file(&mut self, path: &Path) -> io::Result<bool> {
            let had = self.files.remove(path).is_some();
            if had {
                self.changes.push(format!("remove {}", path.display()));
            }
            Ok(had)
        }
        fn remove_tree(&mut self, path: &Path) -> io::Result<bool> {
            self.changes.push(format!("remove-tree {}", path.display()));
            Ok(true)
        }
        fn port_free(&mut self, port: u16) -> bool {
            !self.busy_ports.contains(&port)
        }
        fn health(&mut self, port: u16) -> Result<String, ServiceError> {
            if self.unhealthy.contains(&port) {
                Err(ServiceError::Unreachable {
                    port,
                    source: crate::client::ClientError::Refused,
                })
            } else {
                Ok("healthy".into())
            }
        }
        fn lock_dir(&mut self, dir: &Path) -> io::Result<Option<std::fs::File>> {
            self.locks.push(dir.into());
            Ok(None)
        }
        fn check_program(&mut self, program: &Path, _owners: &[u32]) -> Result<(), TrustError> {
            match self.untrusted.iter().find(|(p, _)| p == program) {
                Some((p, mode)) => Err(TrustError::Writable {
                    path: p.clone(),
                    mode: *mode,
                    program: p.clone(),
                }),
                None => Ok(()),
            }
        }
        fn sleep_ms(&mut self, _ms: u64) {}
        fn say(&mut self, line: &str) {
            self.lines.push(line.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Concurrent installs serialize: while one holds the unit directory, another cannot.
    #[test]
    fn the_unit_dir_lock_is_exclusive_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("systemd/user");
        let held = System::new(false).lock_dir(&dir).unwrap().unwrap();
        let other = std::fs::File::open(&dir).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock().unwrap();
        assert!(
            System::new(true)
                .lock_dir(&tmp.path().join("dry"))
                .unwrap()
                .is_none()
        );
        assert!(
            !tmp.path().join("dry").exists(),
            "a dry run creates nothing"
        );
    }

    #[test]
    fn units_are_never_written_through_a_directory_others_can_write() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("config");
        std::fs::create_dir(&config).unwrap();
        let unit = config.join("systemd/user/cco-daemon.service");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o755)).unwrap();
        write_atomic(&unit, "[Unit]\n").unwrap();
        let meta = std::fs::metadata(&unit).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);

        // Another user who can write ~/.config could plant `systemd` as a symlink to a
        // directory of theirs and then edit what the manager runs.
        let planted = tmp.path().join("theirs");
        std::fs::create_dir_all(planted.join("user")).unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::remove_dir_all(config.join("systemd")).unwrap();
        std::os::unix::fs::symlink(&planted, config.join("systemd")).unwrap();
        let err = write_atomic(&unit, "[Unit]\n").unwrap_err();
        assert!(err.to_string().contains("chmod go-w"), "{err}");
        assert!(!planted.join("user/cco-daemon.service").exists());

        // A group-writable ~/.config itself is refused before anything is created.
        std::fs::remove_file(config.join("systemd")).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(write_atomic(&unit, "[Unit]\n").is_err());
        assert!(!config.join("systemd").exists());
    }
}
