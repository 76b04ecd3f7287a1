//! `cco daemon|sidecar start|stop|restart|status`: mapped to the service manager when cco is
//! installed there, else to detached processes with pid files (`daemonize`) — containers, CI.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use crate::paths::Installation;
use crate::service::host::{Host, System};
use crate::service::systemd::{self, UnitState};
use crate::service::{Manager, install as svc_install, plan as svc_plan};
use crate::service::{Scope, Service, detached, launchd};

/// One line of output, inert: it quotes unit files, paths and the service manager's words.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", crate::api::inert::line(&format!($($arg)*)))
    };
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Operate system-wide units (`cco install --system`).
    #[arg(long)]
    pub system: bool,
    /// Ignore the service manager: run (or look for) detached processes with pid files.
    #[arg(long)]
    pub detached: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Status,
}

/// LSB `status` exit code for "not running".
const NOT_RUNNING: u8 = 3;

pub fn run(
    config_flag: Option<&Path>,
    service: Service,
    verb: Verb,
    args: Args,
) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config_flag)?;
    let scope = svc_plan::scope(args.system);
    let mut host = System::new(false);
    let manager = if args.detached {
        None
    } else {
        svc_install::detect(&mut host, scope).ok()
    };
    let installed = match manager {
        Some(Manager::Systemd) => {
            systemd::state(&mut host, scope, &service.socket_unit()).installed()
        }
        Some(Manager::Launchd) => {
            let plan = svc_plan::plan(config_flag, scope, Manager::Launchd)?;
            plan.unit_dir.join(service.plist_name()).exists()
        }
        None => false,
    };
    if installed {
        let m = manager.unwrap_or(Manager::Systemd);
        return match m {
            Manager::Systemd => with_systemd(&mut host, &inst, scope, service, verb),
            Manager::Launchd => with_launchd(&mut host, config_flag, &inst, scope, service, verb),
        };
    }
    // A manager but no units: only detached processes can be what the user means.
    if let Some(m) = manager {
        let any_detached = detached_targets(service).iter().any(|s| {
            matches!(
                detached::check(&inst.paths.pid_file(s.name())),
                Ok(detached::Liveness::Running(_) | detached::Liveness::Starting)
            )
        });
        if !any_detached && verb != Verb::Stop {
            if verb == Verb::Status {
                say!(
                    "{}: not installed with {} — run `cco install`",
                    service.name(),
                    m.as_str()
                );
                return Ok(ExitCode::from(NOT_RUNNING));
            }
            anyhow::bail!(
                "cco is not installed with {} here — run `cco install` (or, to run without the \
                 service manager, `cco {} {} --detached`)",
                m.as_str(),
                service.name(),
                verb_name(verb)
            );
        }
    }
    with_detached(config_flag, &inst, service, verb)
}

fn verb_name(v: Verb) -> &'static str {
    match v {
        Verb::Start => "start",
        Verb::Stop => "stop",
        Verb::Restart => "restart",
        Verb::Status => "status",
    }
}

fn probe(host: &mut dyn Host, s: Service, port: u16) -> bool {
    match host.health(port) {
        Ok(status) => {
            say!("✅ {:<8} 127.0.0.1:{port} {status}", s.name());
            true
        }
        Err(e) => {
            say!(
                "❌ {:<8} 127.0.0.1:{port} does not answer ({e}) — see `cco logs {}`",
                s.name(),
                s.name()
            );
            false
        }
    }
}

fn code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn with_systemd(
    host: &mut dyn Host,
    inst: &Installation,
    scope: Scope,
    s: Service,
    verb: Verb,
) -> anyhow::Result<ExitCode> {
    let (socket, service) = (s.socket_unit(), s.service_unit());
    let port = s.port(&inst.config);
    match verb {
        Verb::Start => {
            forget_failures(host, scope, &socket, &service);
            systemd::must(host, &systemd::ctl(scope, &["start", &socket, &service]))?;
            Ok(code(probe(host, s, port)))
        }
        Verb::Stop => {
            // The socket too: otherwise the next connection starts the service again.
            systemd::must(host, &systemd::ctl(scope, &["stop", &socket, &service]))?;
            say!(
                "stopped {socket} and {service}; `cco {} start` brings them back (the socket is still enabled for the next login)",
                s.name()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verb::Restart => {
            forget_failures(host, scope, &socket, &service);
            systemd::must(host, &systemd::ctl(scope, &["start", &socket]))?;
            systemd::must(host, &systemd::ctl(scope, &["restart", &service]))?;
            Ok(code(probe(host, s, port)))
        }
        Verb::Status => {
            let sock = systemd::state(host, scope, &socket);
            let svc = systemd::state(host, scope, &service);
            say!("{}:", s.name());
            say!(
                "  {socket:<20} {} ({}), {}{}",
                sock.active,
                sock.sub,
                sock.file_state,
                if sock.listen.is_empty() {
                    String::new()
                } else {
                    format!(", listens on {}", sock.listen)
                }
            );
            let pid = if svc.main_pid != "0" && !svc.main_pid.is_empty() {
                format!(", pid {}", svc.main_pid)
            } else {
                String::new()
            };
            let hint = if svc.active == "inactive" && sock.active() {
                " — starts on the first connection"
            } else {
                ""
            };
            say!("  {service:<20} {} ({}){pid}{hint}", svc.active, svc.sub);
            exec_check(host, &svc);
            Ok(if sock.active() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(NOT_RUNNING)
            })
        }
    }
}

/// A socket whose service failed too often in a row is `failed` and stays closed; start and
/// restart are the user saying "try again", so clear that state (and the start rate limit).
fn forget_failures(host: &mut dyn Host, scope: Scope, socket: &str, service: &str) {
    let cmd = systemd::ctl(scope, &["reset-failed", socket, service]);
    if host
        .query(&systemd::ctl(
            scope,
            &["is-failed", "--quiet", socket, service],
        ))
        .is_ok_and(|o| o.success())
    {
        let _ = host.change(&cmd);
    }
}

/// Says whether the installed unit still starts this binary.
fn exec_check(host: &mut dyn Host, svc: &UnitState) {
    let text = host
        .read_file(Path::new(&svc.fragment))
        .ok()
        .flatten()
        .unwrap_or_default();
    let this = svc_plan::this_binary();
    match systemd::exec_binary(&text) {
        Some(bin) if Path::new(&bin) == this => {
            say!("  ExecStart            {bin} (this binary)")
        }
        Some(bin) => say!(
            "  ExecStart            {bin}, but this is {} — point the units here with `cco install`",
            this.display()
        ),
        None => say!(
            "  ExecStart            unknown (no unit file at {:?}) — run `cco install`",
            svc.fragment
        ),
    }
}

fn with_launchd(
    host: &mut dyn Host,
    config_flag: Option<&Path>,
    inst: &Installation,
    scope: Scope,
    s: Service,
    verb: Verb,
) -> anyhow::Result<ExitCode> {
    let plan = svc_plan::plan(config_flag, scope, Manager::Launchd)?;
    let port = s.port(&inst.config);
    let loaded = launchd::loaded(host, &plan.domain, s);
    match verb {
        Verb::Start => {
            if !loaded {
                launchd::bootstrap(host, &plan.domain, &plan.unit_dir, s)?;
            }
            launchd::kickstart(host, &plan.domain, s, false)?;
            Ok(code(probe(host, s, port)))
        }
        Verb::Stop => {
            // bootout unloads the job and closes its socket, so nothing revives it.
            launchd::bootout(host, &plan.domain, s)?;
            say!(
                "stopped {}; `cco {} start` brings it back",
                s.label(),
                s.name()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verb::Restart => {
            if !loaded {
                launchd::bootstrap(host, &plan.domain, &plan.unit_dir, s)?;
            }
            launchd::kickstart(host, &plan.domain, s, true)?;
            Ok(code(probe(host, s, port)))
        }
        Verb::Status => {
            let plist = plan.unit_dir.join(s.plist_name());
            match launchd::status(host, &plan.domain, s) {
                Some((state, pid)) => say!(
                    "{}: {} {state}{} (socket 127.0.0.1:{port})",
                    s.name(),
                    s.label(),
                    pid.map(|p| format!(", pid {p}")).unwrap_or_default()
                ),
                None => say!(
                    "{}: {} not loaded — `cco {} start`",
                    s.name(),
                    s.label(),
                    s.name()
                ),
            }
            let text = host.read_file(&plist).ok().flatten().unwrap_or_default();
            let bin = text
                .split("<key>ProgramArguments</key>")
                .nth(1)
                .and_then(|r| r.split("<string>").nth(1))
                .and_then(|r| r.split("</string>").next())
                .map(|b| {
                    b.replace("&amp;", "&")
                        .replace("&lt;", "<")
                        .replace("&gt;", ">")
                        .replace("&quot;", "\"")
                });
            let this = svc_plan::this_binary();
            match bin {
                Some(b) if Path::new(&b) == this => {
                    say!("  ProgramArguments[0] {b} (this binary)")
                }
                Some(b) => say!(
                    "  ProgramArguments[0] {b}, but this is {} — run `cco install`",
                    this.display()
                ),
                None => say!("  no plist at {} — run `cco install`", plist.display()),
            }
            Ok(if loaded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(NOT_RUNNING)
            })
        }
    }
}

/// Without a manager, `cco daemon start` brings up both servers: the daemon forwards to the
/// sidecar, so one without the other is not a working installation.
fn detached_targets(s: Service) -> Vec<Service> {
    match s {
        Service::Daemon => vec![Service::Sidecar, Service::Daemon],
        Service::Sidecar => vec![Service::Sidecar],
    }
}

fn with_detached(
    config_flag: Option<&Path>,
    inst: &Installation,
    service: Service,
    verb: Verb,
) -> anyhow::Result<ExitCode> {
    let targets = detached_targets(service);
    let mut ok = true;
    if matches!(verb, Verb::Stop | Verb::Restart) {
        for &s in targets.iter().rev() {
            let pid_file = inst.paths.pid_file(s.name());
            match detached::stop(&pid_file)? {
                detached::Stopped::WasNotRunning => say!("{}: not running", s.name()),
                detached::Stopped::Stale => {
                    say!("{}: had exited (removed its stale pid file)", s.name())
                }
                detached::Stopped::Terminated(pid) => say!("{}: stopped (pid {pid})", s.name()),
                detached::Stopped::Killed(pid) => say!(
                    "{}: pid {pid} ignored SIGTERM for {}s and was killed",
                    s.name(),
                    detached::STOP_TIMEOUT.as_secs()
                ),
            }
        }
    }
    if matches!(verb, Verb::Start | Verb::Restart) {
        // Nothing starts a detached service again once it exits, so idle exit stays off.
        if let Some(idle) = inst.config.idle_exit_after {
            say!(
                "note: idle_exit_after = \"{}\" applies only to socket-activated services \
                 (`cco install`); detached services run until `cco {} stop`",
                humantime::format_duration(idle),
                service.name()
            );
        }
        for &s in &targets {
            let pid_file = inst.paths.pid_file(s.name());
            match detached::check(&pid_file)? {
                detached::Liveness::Running(pid) => {
                    say!("{}: already running (pid {pid}, detached)", s.name());
                    continue;
                }
                detached::Liveness::Starting => {
                    say!("{}: already starting (detached)", s.name());
                    continue;
                }
                detached::Liveness::Stopped | detached::Liveness::Stale => {}
            }
            if !super::is_subcommand(s.name()) {
                say!(
                    "❌ {}: this cco build has no `cco {} run` — install a complete build",
                    s.name(),
                    s.name()
                );
                ok = false;
                continue;
            }
            let mut argv: Vec<OsString> = vec!["cco".into()];
            if let Some(c) = config_flag {
                argv.push("--config".into());
                argv.push(c.into());
            }
            argv.extend([s.name(), "run", "--idle-exit-after", "never"].map(OsString::from));
            let started = detached::spawn(&inst.paths, s, move || match super::run(argv) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("cco: error: {}", crate::api::inert::line(&format!("{e:#}")));
                    ExitCode::FAILURE
                }
            });
            match started {
                Ok(pid) => say!(
                    "✅ {:<8} 127.0.0.1:{} started detached (pid {pid}, log {})",
                    s.name(),
                    s.port(&inst.config),
                    detached::log_file(&inst.paths, s).display()
                ),
                Err(e) => {
                    say!("❌ {}: {e}", s.name());
                    ok = false;
                }
            }
        }
    }
    if verb == Verb::Status {
        for &s in &targets {
            let pid_file = inst.paths.pid_file(s.name());
            match detached::check(&pid_file)? {
                detached::Liveness::Running(pid) => say!(
                    "{}: running detached (pid {pid}, 127.0.0.1:{}, log {})",
                    s.name(),
                    s.port(&inst.config),
                    detached::log_file(&inst.paths, s).display()
                ),
                detached::Liveness::Starting => {
                    ok = false;
                    say!(
                        "{}: starting detached (no pid yet) — check again with `cco {} status`",
                        s.name(),
                        service.name()
                    )
                }
                detached::Liveness::Stopped => {
                    ok = false;
                    say!("{}: not running — `cco {} start`", s.name(), service.name())
                }
                detached::Liveness::Stale => {
                    ok = false;
                    say!(
                        "{}: exited — not running (removed its stale pid file); see why with `cco logs {}`, then `cco {} start`",
                        s.name(),
                        s.name(),
                        service.name()
                    )
                }
            }
        }
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(NOT_RUNNING)
        });
    }
    Ok(code(ok))
}
