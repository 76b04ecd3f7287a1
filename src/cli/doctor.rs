//! `cco doctor`: the checklist a new user needs, each line ✅ / ⚠️ / ❌ with the fix.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::api::inert;
use crate::cli::health;
use crate::cli::launch::find_claude;
use crate::client::ServiceError;
use crate::paths::{self, Installation};
use crate::seal;
use crate::secret::{Secret, SecretError};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub use super::check::{Check, Level};

fn ok(what: impl Into<String>) -> Check {
    Check {
        level: Level::Ok,
        what: what.into(),
        fix: None,
    }
}
fn warn(what: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Warn,
        what: what.into(),
        fix: Some(fix.into()),
    }
}
fn fail(what: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Fail,
        what: what.into(),
        fix: Some(fix.into()),
    }
}

/// A failed check from an error written as "problem — fix": each is printed once, the fix
/// on its own line; `fallback` is the fix for an error that names none.
fn fail_from(error: impl std::fmt::Display, fallback: &str) -> Check {
    let message = error.to_string();
    match message.split_once(" — ") {
        Some((what, fix)) => fail(what, fix),
        None => fail(message, fallback),
    }
}

/// How long `claude --version` may take before doctor gives up on it.
const VERSION_DEADLINE: Duration = Duration::from_secs(20);
/// How often doctor looks whether `claude --version` has finished.
const VERSION_POLL: Duration = Duration::from_millis(20);

/// Why `claude --version` gave no version.
#[derive(Debug, thiserror::Error)]
enum VersionError {
    /// Spawning or waiting for the process failed.
    #[error("{error}")]
    Run { error: std::io::Error },
    #[error("`--version` exited with {status}")]
    Exited { status: std::process::ExitStatus },
    #[error("`--version` did not finish in {} s", VERSION_DEADLINE.as_secs())]
    TimedOut,
}

/// Runs `claude --version` with a deadline; Claude Code is a Node program and may hang.
fn claude_version(claude: &Path) -> Result<String, VersionError> {
    let run = |error| VersionError::Run { error };
    let mut child = Command::new(claude)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(run)?;
    let start = Instant::now();
    loop {
        match child.try_wait().map_err(run)? {
            Some(status) => {
                let mut out = String::new();
                use std::io::Read;
                if let Some(mut s) = child.stdout.take() {
                    let _ = s.read_to_string(&mut out);
                }
                return if status.success() {
                    Ok(out.trim().to_string())
                } else {
                    Err(VersionError::Exited { status })
                };
            }
            None if start.elapsed() > VERSION_DEADLINE => {
                let _ = child.kill();
                return Err(VersionError::TimedOut);
            }
            None => std::thread::sleep(VERSION_POLL),
        }
    }
}

pub fn checks(inst: &Installation) -> Vec<Check> {
    let mut out = Vec::new();
    let p = &inst.paths;
    out.push(ok(format!(
        "cco {} at {}",
        env!("CARGO_PKG_VERSION"),
        crate::daemon::current_exe().display()
    )));
    out.push(if p.config_file.exists() {
        ok(format!("config {} parses", p.config_file.display()))
    } else {
        warn(
            format!("config {} does not exist yet (using defaults)", p.config_file.display()),
            "the daemon writes a commented default on first start: `cco install` or `cco daemon start`",
        )
    });
    let secret = Secret::load(&p.secret_file());
    out.push(match &secret {
        Ok(_) => ok(format!(
            "secret {} is private (0600) and 32+ bytes",
            p.secret_file().display()
        )),
        Err(SecretError::Missing { .. }) => warn(
            format!("no secret at {} yet", p.secret_file().display()),
            "the daemon creates it on first start: `cco install` (or `cco daemon start`)",
        ),
        Err(e) => fail_from(
            e,
            &format!(
                "remove {} and run `cco daemon restart`",
                p.secret_file().display()
            ),
        ),
    });
    out.push(match paths::check_private_dir(&p.runtime_dir) {
        Ok(()) => ok(format!(
            "runtime dir {} is private (0700, yours, not a link)",
            p.runtime_dir.display()
        )),
        Err(paths::PathError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            warn(
                format!("runtime dir {} does not exist yet", p.runtime_dir.display()),
                "the daemon creates it on start: `cco install` (or `cco daemon start`)",
            )
        }
        Err(e) => fail_from(e, "fix its permissions, then run `cco daemon restart`"),
    });

    let healths = health::Healths::ask(inst);
    let taken = |name: &str, port: u16, e: &dyn std::fmt::Display| {
        fail(
            format!("127.0.0.1:{port} is taken, but not by a healthy cco {name} ({e})"),
            format!(
                "see who owns it with `ss -ltnp 'sport = :{port}'`; free it or change the port in {}",
                p.config_file.display()
            ),
        )
    };
    let answers = |name: &str,
                   port: u16,
                   healthy: bool,
                   status: &str,
                   err: Option<&ServiceError>| {
        match err {
            Some(ServiceError::Foreign { uid, .. }) => fail(
                format!(
                    "127.0.0.1:{port} is held by another user (uid {uid}), not by your cco {name}"
                ),
                format!(
                    "see who owns it with `ss -ltnp 'sport = :{port}'`; free it or change the port in {}",
                    p.config_file.display()
                ),
            ),
            None if healthy => ok(format!("{name} answers on 127.0.0.1:{port}")),
            None => fail(
                format!(
                    "{name} on 127.0.0.1:{port} reports {:?}",
                    inert::line(status)
                ),
                format!("`cco logs {name}` shows why"),
            ),
            Some(e) => match TcpListener::bind(("127.0.0.1", port)) {
                Ok(_) => fail(
                    format!("{name} is not running and nothing listens on 127.0.0.1:{port} ({e})"),
                    "run `cco install` once (or `cco daemon start` where there is no service manager)",
                ),
                Err(_) => taken(name, port, e),
            },
        }
    };
    let (d, s) = (&healths.daemon, &healths.sidecar);
    out.push(answers(
        d.name,
        d.port,
        healths.daemon_healthy(),
        d.result.as_ref().map_or("", |h| h.status.as_str()),
        d.result.as_ref().err(),
    ));
    out.push(answers(
        s.name,
        s.port,
        healths.sidecar_healthy(),
        s.result.as_ref().map_or("", |h| h.status.as_str()),
        s.result.as_ref().err(),
    ));

    // The launcher refuses to start when the daemon's runtime dir is not the one this shell
    // resolves, or when its seal differs from the files here: check what it checks.
    let daemon = d.result.as_ref().ok();
    if let Some(theirs) = daemon.map(|h| h.runtime_dir.as_str())
        && std::path::Path::new(theirs) != p.runtime_dir
    {
        out.push(fail(
            format!(
                "the daemon uses runtime dir {theirs}, but this shell resolves {}",
                p.runtime_dir.display()
            ),
            "run cco with the service's XDG_RUNTIME_DIR / CCO_RUNTIME_DIR (`systemctl --user show-environment`), or `cco daemon restart`",
        ));
    }
    if let Ok(secret) = &secret {
        out.push(match seal::verify(&p.runtime_dir, secret) {
            Ok(v) => match daemon.map(|h| h.settings_generation) {
                Some(g) if g != v.generation => warn(
                    format!(
                        "sealed runtime files verify (generation {}), but the daemon reports generation {g}",
                        v.generation
                    ),
                    "`cco daemon restart` so both agree",
                ),
                _ => ok(format!("sealed runtime files verify (generation {})", v.generation)),
            },
            Err(e) => fail_from(e, "run `cco daemon restart` to rewrite them"),
        });
    }

    // The shared store (NATS): each server, JetStream, the stream and buckets.
    out.extend(crate::cli::store::doctor_checks(
        &inst.config.store,
        &p.config_file,
    ));

    match find_claude(
        inst.config.claude_path.as_deref(),
        std::env::var_os("PATH").as_deref(),
        &p.config_file,
    ) {
        Ok(claude) => out.push(match claude_version(&claude) {
            Ok(v) => ok(format!("Claude Code {v} at {}", claude.display())),
            Err(e) => fail(
                format!("Claude Code at {} does not run: {e}", claude.display()),
                "reinstall it: `npm install -g @anthropic-ai/claude-code`",
            ),
        }),
        Err(e) => out.push(fail_from(
            e,
            "install it with `npm install -g @anthropic-ai/claude-code`",
        )),
    }
    out
}

pub fn run(config: Option<&Path>, _args: Args) -> anyhow::Result<ExitCode> {
    let inst = match Installation::from_process(config) {
        Ok(inst) => inst,
        Err(e) => {
            println!("❌ {}", inert::line(&e.to_string()));
            return Ok(ExitCode::FAILURE);
        }
    };
    let checks = checks(&inst);
    for c in &checks {
        let mark = match c.level {
            Level::Ok => "✅",
            Level::Warn => "⚠️ ",
            Level::Fail => "❌",
        };
        // Checks quote paths, the environment and other programs' output.
        println!("{mark} {}", inert::line(&c.what));
        if let Some(fix) = &c.fix {
            println!("   → {}", inert::line(fix));
        }
    }
    let failed = checks.iter().filter(|c| c.level == Level::Fail).count();
    if failed == 0 {
        println!("\nAll checks passed.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\n{failed} check(s) failed.");
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_says_its_problem_once_and_its_fix_once() {
        let c = fail_from(
            "secret /s has mode 0644; it must not be accessible — run `chmod 600 /s`",
            "fallback",
        );
        assert_eq!(c.what, "secret /s has mode 0644; it must not be accessible");
        assert_eq!(c.fix.as_deref(), Some("run `chmod 600 /s`"));
        let c = fail_from("/s: Permission denied", "fallback");
        assert_eq!(
            (c.what.as_str(), c.fix.as_deref()),
            ("/s: Permission denied", Some("fallback"))
        );
    }

    #[test]
    fn claude_version_says_why_it_has_none() {
        let missing = tempfile::tempdir().unwrap().path().join("claude");
        let e = claude_version(&missing).unwrap_err();
        assert!(
            matches!(&e, VersionError::Run { error } if error.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        let e = claude_version(Path::new("/bin/false")).unwrap_err();
        assert!(matches!(e, VersionError::Exited { .. }), "{e:?}");
        assert_eq!(e.to_string(), "`--version` exited with exit status: 1");
        assert_eq!(
            VersionError::TimedOut.to_string(),
            "`--version` did not finish in 20 s"
        );
    }
}
