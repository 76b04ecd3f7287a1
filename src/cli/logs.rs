//! `cco logs [daemon|sidecar] [-f] [-n N]`: the journal when systemd runs the services,
//! else the log files of detached mode (and of launchd on macOS).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use crate::paths::Installation;
use crate::service::host::System;
use crate::service::{Manager, install as svc_install};
use crate::service::{Scope, Service, detached, systemd};

/// How often `-f` looks for new lines in a log file.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Daemon,
    Sidecar,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this service (default: both).
    pub service: Option<Which>,
    /// Keep printing new lines as they arrive.
    #[arg(short, long)]
    pub follow: bool,
    /// How many recent lines to show.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub lines: usize,
}

pub fn run(config_flag: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config_flag)?;
    let services: Vec<Service> = match args.service {
        Some(Which::Daemon) => vec![Service::Daemon],
        Some(Which::Sidecar) => vec![Service::Sidecar],
        None => Service::ALL.to_vec(),
    };
    let mut host = System::new(false);
    for scope in [Scope::User, Scope::System] {
        if matches!(svc_install::detect(&mut host, scope), Ok(Manager::Systemd))
            && services
                .iter()
                .any(|s| systemd::state(&mut host, scope, &s.service_unit()).installed())
        {
            return journalctl(scope, &services, &args);
        }
    }
    let files: Vec<(Service, PathBuf)> = services
        .iter()
        .flat_map(|&s| {
            let mut v = vec![(s, detached::log_file(&inst.paths, s))];
            if cfg!(target_os = "macos")
                && let Ok(home) = std::env::var("HOME")
            {
                v.push((
                    s,
                    crate::service::launchd_log_dir(Path::new(&home))
                        .join(format!("{}.log", s.name())),
                ));
            }
            v
        })
        .filter(|(_, p)| p.exists())
        .collect();
    if files.is_empty() {
        anyhow::bail!(
            "no logs yet: cco is not installed with systemd and no log file exists under {} — \
             start the services with `cco install` (or `cco daemon start` without a service manager)",
            inst.paths.log_dir().display()
        );
    }
    tail(&files, args.lines, args.follow)
}

/// Replaces this process with journalctl, so `-f` and Ctrl-C behave as the user expects.
fn journalctl(scope: Scope, services: &[Service], args: &Args) -> anyhow::Result<ExitCode> {
    let mut cmd = Command::new("journalctl");
    if scope == Scope::User {
        cmd.arg("--user");
    }
    for s in services {
        cmd.arg("-u").arg(s.service_unit());
    }
    cmd.arg("-n").arg(args.lines.to_string()).arg("--no-pager");
    if args.follow {
        cmd.arg("-f");
    }
    let err = cmd.exec();
    anyhow::bail!("{}", no_journalctl(&err, scope, services))
}

/// Without journalctl, `systemctl status` still shows each unit's last log lines.
fn no_journalctl(err: &std::io::Error, scope: Scope, services: &[Service]) -> String {
    let units: Vec<String> = services.iter().map(|s| s.service_unit()).collect();
    format!(
        "cannot run journalctl: {err} — see the last lines with `systemctl {}status {}`",
        if scope == Scope::User { "--user " } else { "" },
        units.join(" ")
    )
}

/// The whole file, or an error that names it.
fn read_log(p: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| {
        anyhow::anyhow!(
            "cannot read log file {}: {e} — check its owner and permissions with `ls -l {}`",
            p.display(),
            p.display()
        )
    })
}

fn tail(files: &[(Service, PathBuf)], n: usize, follow: bool) -> anyhow::Result<ExitCode> {
    let prefix = files.len() > 1;
    let mut out = std::io::stdout().lock();
    let mut offsets = Vec::new();
    for (s, p) in files {
        let bytes = read_log(p)?;
        // Follow from what was read, so lines appended meanwhile are not skipped.
        offsets.push(bytes.len() as u64);
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(n)..] {
            print_line(&mut out, prefix, *s, l)?;
        }
    }
    out.flush()?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut partial = vec![String::new(); files.len()];
    loop {
        for (i, (s, p)) in files.iter().enumerate() {
            let Ok(mut f) = File::open(p) else { continue };
            let len = f.metadata()?.len();
            if len < offsets[i] {
                // Truncated or replaced: start over from the top.
                offsets[i] = 0;
            }
            if len == offsets[i] {
                continue;
            }
            f.seek(SeekFrom::Start(offsets[i]))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            offsets[i] += buf.len() as u64;
            partial[i].push_str(&String::from_utf8_lossy(&buf));
            while let Some(pos) = partial[i].find('\n') {
                let line: String = partial[i].drain(..=pos).collect();
                print_line(&mut out, prefix, *s, line.trim_end_matches('\n'))?;
            }
            out.flush()?;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// Log lines quote agents and requests: each is printed inert. (journalctl itself shows a
/// line with unprintable characters as `[N blob data]` unless `--all` is given.)
fn print_line(out: &mut impl Write, prefix: bool, s: Service, line: &str) -> std::io::Result<()> {
    let line = crate::api::inert::line(line);
    if prefix {
        writeln!(out, "{:<8} {line}", s.name())
    } else {
        writeln!(out, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_printed_inert() {
        let mut out = Vec::new();
        print_line(
            &mut out,
            true,
            Service::Sidecar,
            "publish \u{9b}2J \u{202e}x",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "sidecar  publish \\u009b2J \\u202ex\n");
    }

    #[test]
    fn errors_name_the_file_and_end_with_a_command() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory where the log should be: unreadable as a file for any user.
        let p = tmp.path().join("daemon.log");
        std::fs::create_dir(&p).unwrap();
        let err = tail(&[(Service::Daemon, p.clone())], 10, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&p.display().to_string()), "{err}");
        assert!(err.ends_with(&format!("`ls -l {}`", p.display())), "{err}");

        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let msg = no_journalctl(&missing, Scope::User, &Service::ALL);
        assert!(
            msg.ends_with("`systemctl --user status cco-daemon.service cco-sidecar.service`"),
            "{msg}"
        );
    }
}
