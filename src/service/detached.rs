//! Running the services without a service manager (containers, CI): `daemonize`d processes
//! with a pid file each. The daemonized process holds an exclusive `flock` on its pid file
//! for its whole life, so "is it running?" is a lock probe, and a stale file is detected.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::Service;
use crate::paths::{self, Paths};

/// How long a detached service may take to say READY=1.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits after SIGTERM (the servers' own grace is 10 s) before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// How long a probe waits for a pid file's pid: daemonize creates and locks the file before
/// it writes the pid, so a probe can land in between.
pub const PID_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Running(u32),
    /// Alive (it holds the lock) but it wrote no pid within [`PID_WAIT`].
    Starting,
    Stopped,
    /// A pid file nobody holds: the process died without cleaning up. Removed by `check`.
    Stale,
}

#[derive(Debug, thiserror::Error)]
pub enum DetachedError {
    #[error("{path}: {source} — check its owner and permissions with `ls -ld {path}`")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Path(#[from] paths::PathError),
    #[error(
        "cannot detach the {service}: {message} — see {log}, or run it in the foreground to see why: `cco {service} run`"
    )]
    Fork {
        service: &'static str,
        message: String,
        log: PathBuf,
    },
    #[error("the {service} exited during start-up — see why in {log} (`cco logs {service}`)")]
    Exited { service: &'static str, log: PathBuf },
    #[error("the {service} did not report ready within {}s — see {log} (`cco logs {service}`)", START_TIMEOUT.as_secs())]
    NotReady { service: &'static str, log: PathBuf },
    #[error(
        "{pid_file} is held by a process that has not written its pid yet (it is starting) — \
         wait a moment and run `cco daemon stop` again"
    )]
    Starting { pid_file: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DetachedError + '_ {
    move |source| DetachedError::Io {
        path: path.into(),
        source,
    }
}

pub fn log_file(paths: &Paths, s: Service) -> PathBuf {
    paths.log_dir().join(format!("{}.log", s.name()))
}

/// Running, starting, stopped or stale — and removes a stale pid file.
pub fn check(pid_file: &Path) -> Result<Liveness, DetachedError> {
    check_within(pid_file, PID_WAIT)
}

/// [`check`], waiting at most `wait` for a pid file that exists but has no pid yet.
fn check_within(pid_file: &Path, wait: Duration) -> Result<Liveness, DetachedError> {
    let deadline = Instant::now() + wait;
    loop {
        let mut f = match OpenOptions::new().read(true).write(true).open(pid_file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Liveness::Stopped),
            Err(e) => return Err(io_err(pid_file)(e)),
        };
        let locked = match f.try_lock() {
            Ok(()) => false,
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(e)) => return Err(io_err(pid_file)(e)),
        };
        let mut s = String::new();
        f.read_to_string(&mut s).map_err(io_err(pid_file))?;
        let pid = s.trim().parse::<u32>().ok().filter(|&p| p != 0);
        let waited_out = Instant::now() >= deadline;
        match (locked, pid) {
            (true, Some(pid)) => return Ok(Liveness::Running(pid)),
            (true, None) if waited_out => return Ok(Liveness::Starting),
            // Unlocked with a pid, or still unlocked and empty after the wait: its holder
            // died. (Unlocked and empty may be a start between create and lock: wait.)
            (false, _) if pid.is_some() || waited_out => {
                drop(f);
                let _ = std::fs::remove_file(pid_file);
                return Ok(Liveness::Stale);
            }
            _ => {}
        }
        drop(f);
        std::thread::sleep(POLL);
    }
}

/// Starts `run` as a detached process (double fork, new session, stdio to `log`) that holds
/// `pid_file`, and waits for its READY=1. Must be called while this process has one thread.
pub fn spawn(
    paths: &Paths,
    s: Service,
    run: impl FnOnce() -> ExitCode,
) -> Result<u32, DetachedError> {
    paths::ensure_private_dir(&paths.runtime_dir)?;
    paths::ensure_private_dir(&paths.log_dir())?;
    let pid_file = paths.pid_file(s.name());
    let log = log_file(paths, s);
    let log_out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(io_err(&log))?;
    let log_err = log_out.try_clone().map_err(io_err(&log))?;

    let notify_path = paths
        .runtime_dir
        .join(format!(".start-{}-{}", s.name(), std::process::id()));
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).map_err(io_err(&notify_path))?;
    let _cleanup = RemoveOnDrop(notify_path.clone());

    let outcome = daemonize::Daemonize::new()
        .pid_file(&pid_file)
        .working_directory("/")
        .umask(0o077)
        .stdout(log_out)
        .stderr(log_err)
        .execute();
    match outcome {
        daemonize::Outcome::Child(Ok(_)) => {
            // SAFETY: the freshly forked child has a single thread; nothing reads the
            // environment concurrently.
            unsafe { std::env::set_var("NOTIFY_SOCKET", &notify_path) };
            let code = run();
            // Tells a parent still waiting that start-up failed (ignored once it has gone).
            let _ = crate::listen::notify("EXITED=1");
            std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
        }
        daemonize::Outcome::Child(Err(e)) => {
            eprintln!("cco: cannot detach the {}: {e}", s.name());
            let _ = crate::listen::notify_to(notify_path.as_os_str(), "EXITED=1");
            std::process::exit(1);
        }
        daemonize::Outcome::Parent(Err(e)) => Err(DetachedError::Fork {
            service: s.name(),
            message: e.to_string(),
            log,
        }),
        daemonize::Outcome::Parent(Ok(_)) => {
            let deadline = Instant::now() + START_TIMEOUT;
            let mut buf = [0u8; 512];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(DetachedError::NotReady {
                        service: s.name(),
                        log,
                    });
                }
                notify
                    .set_read_timeout(Some(left))
                    .map_err(io_err(&notify_path))?;
                match notify.recv(&mut buf) {
                    Ok(n) => {
                        let msg = &buf[..n];
                        if msg.split(|&b| b == b'\n').any(|l| l == b"READY=1") {
                            break;
                        }
                        if msg.split(|&b| b == b'\n').any(|l| l == b"EXITED=1") {
                            return Err(DetachedError::Exited {
                                service: s.name(),
                                log,
                            });
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Err(DetachedError::NotReady {
                            service: s.name(),
                            log,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_err(&notify_path)(e)),
                }
            }
            match check(&pid_file)? {
                Liveness::Running(pid) => Ok(pid),
                _ => Err(DetachedError::Exited {
                    service: s.name(),
                    log,
                }),
            }
        }
    }
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What `stop` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    WasNotRunning,
    Stale,
    Terminated(u32),
    /// It ignored SIGTERM for [`STOP_TIMEOUT`].
    Killed(u32),
}

/// SIGTERM, wait for the pid-file lock to be released, SIGKILL after [`STOP_TIMEOUT`].
pub fn stop(pid_file: &Path) -> Result<Stopped, DetachedError> {
    stop_within(pid_file, PID_WAIT)
}

fn stop_within(pid_file: &Path, pid_wait: Duration) -> Result<Stopped, DetachedError> {
    let pid = match check_within(pid_file, pid_wait)? {
        Liveness::Stopped => return Ok(Stopped::WasNotRunning),
        Liveness::Stale => return Ok(Stopped::Stale),
        // Alive but nameless: never report "not running" for a live process.
        Liveness::Starting => {
            return Err(DetachedError::Starting {
                pid_file: pid_file.into(),
            });
        }
        Liveness::Running(pid) => pid,
    };
    // SAFETY: kill(2) with a pid whose holder has our pid file locked, i.e. is alive and ours.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    if wait_released(pid_file, STOP_TIMEOUT) {
        let _ = std::fs::remove_file(pid_file);
        return Ok(Stopped::Terminated(pid));
    }
    // SAFETY: as above; it still holds the lock.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    wait_released(pid_file, Duration::from_secs(2));
    let _ = std::fs::remove_file(pid_file);
    Ok(Stopped::Killed(pid))
}

fn wait_released(pid_file: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let free = match File::open(pid_file) {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => true,
        };
        if free {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.pid");
        assert_eq!(check(&p).unwrap(), Liveness::Stopped);
        std::fs::write(&p, "12345\n").unwrap();
        let holder = File::open(&p).unwrap();
        holder.lock().unwrap();
        assert_eq!(check(&p).unwrap(), Liveness::Running(12345));
        drop(holder);
        assert_eq!(check(&p).unwrap(), Liveness::Stale);
        assert!(!p.exists(), "stale pid file removed");
        assert_eq!(stop(&p).unwrap(), Stopped::WasNotRunning);
    }

    /// daemonize locks the pid file before it writes the pid; a probe in between must see
    /// a live process, never "not running".
    #[test]
    fn a_locked_pid_file_without_a_pid_is_alive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.pid");
        let holder = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&p)
            .unwrap();
        holder.lock().unwrap();
        let short = Duration::from_millis(50);
        assert_eq!(check_within(&p, short).unwrap(), Liveness::Starting);
        assert!(matches!(
            stop_within(&p, short),
            Err(DetachedError::Starting { .. })
        ));
        assert!(p.exists(), "a starting process's pid file is kept");

        // The pid arrives while a probe waits: the probe reports it.
        let writer = {
            let p = p.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                std::fs::write(&p, "4242\n").unwrap();
            })
        };
        assert_eq!(
            check_within(&p, Duration::from_secs(5)).unwrap(),
            Liveness::Running(4242)
        );
        writer.join().unwrap();
        drop(holder);
    }

    #[test]
    fn io_errors_name_the_path_and_end_with_a_command() {
        let dir = tempfile::tempdir().unwrap();
        // A pid file path under a regular file cannot be opened (ENOTDIR).
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let p = file.join("daemon.pid");
        let err = check(&p).unwrap_err().to_string();
        assert!(err.ends_with(&format!("`ls -ld {}`", p.display())), "{err}");
    }

    #[test]
    fn an_unlocked_empty_pid_file_gets_a_grace_then_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.pid");
        std::fs::write(&p, "").unwrap();
        assert_eq!(
            check_within(&p, Duration::from_millis(40)).unwrap(),
            Liveness::Stale
        );
        assert!(!p.exists());
    }
}
