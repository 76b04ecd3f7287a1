//! `cco install|uninstall` and `cco daemon start|stop|status` as a user runs them, with a fake
//! `systemctl` on `PATH` so the tests never touch the machine's real service manager.

use std::path::{Path, PathBuf};

use crate::common::{CCO, Env, get, script};

/// A `systemctl` that reports `state` for `is-system-running`, answers `show` with nothing
/// (no units installed) and logs every other call to `calls.log` beside it.
fn fake_systemctl(env: &mut Env, state: &str) -> PathBuf {
    let bin = env.tmp.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = bin.join("calls.log");
    let code = if state == "running" { 0 } else { 1 };
    script(
        &bin.join("systemctl"),
        &format!(
            "#!/bin/sh\ncase \"$*\" in\n  *is-system-running*) echo {state}; exit {code};;\n  *' show '*) exit 0;;\nesac\necho \"$*\" >> '{}'\n",
            log.display()
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    env.set("PATH", path);
    log
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Alive and not a zombie (the exited daemon's parent is init, which reaps it when it likes).
fn alive(pid: i32) -> bool {
    // SAFETY: kill(pid, 0) only checks existence.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

#[test]
fn install_dry_run_prints_units_and_commands_and_changes_nothing() {
    let mut env = Env::new();
    let calls = fake_systemctl(&mut env, "running");
    let out = env.run(["install", "--dry-run"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let unit_dir = env.config_home.join("systemd/user");
    for unit in [
        "cco-daemon.socket",
        "cco-daemon.service",
        "cco-sidecar.socket",
        "cco-sidecar.service",
    ] {
        let path = unit_dir.join(unit);
        assert!(
            stdout.contains(&format!("would write {}:", path.display())),
            "{stdout}"
        );
        assert!(!path.exists(), "dry run wrote {}", path.display());
    }
    let exe = Path::new(CCO).canonicalize().unwrap();
    assert!(
        stdout.contains(&format!("ExecStart={} daemon run", exe.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("ListenStream=127.0.0.1:{}", env.daemon_port)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("ListenStream=127.0.0.1:{}", env.sidecar_port)),
        "{stdout}"
    );
    // The shell's CCO_* ports travel into the units, so the service resolves the same install.
    assert!(
        stdout.contains(&format!(
            "Environment=\"CCO_SIDECAR_PORT={}\"",
            env.sidecar_port
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("would run: systemctl --user daemon-reload"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "would run: systemctl --user enable --now cco-daemon.socket cco-sidecar.socket"
        ),
        "{stdout}"
    );
    // The test binary lives in a cargo build dir, possibly under /tmp: either way the dry
    // run says why it is not a place to install from.
    assert!(
        stdout.contains("is a cargo build output")
            || stdout.contains("a real install would stop here"),
        "binary location warning: {stdout}"
    );
    assert!(stdout.contains("dry run: nothing was changed"), "{stdout}");
    assert!(
        !calls.exists(),
        "dry run ran: {}",
        std::fs::read_to_string(&calls).unwrap()
    );
}

#[test]
fn install_without_a_service_manager_points_to_detached_mode() {
    let mut env = Env::new();
    fake_systemctl(&mut env, "offline");
    let out = env.run(["install"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no service manager"), "{err}");
    assert!(err.trim_end().ends_with("`cco daemon start`"), "{err}");
}

#[test]
fn purge_never_reads_a_non_terminal_stdin() {
    let mut env = Env::new();
    fake_systemctl(&mut env, "offline");
    // As cco creates it: marked as cco's, so the purge may remove it.
    cco::marker::create_dir_all_marked(&env.data_dir()).unwrap();
    let out = env.run(["uninstall", "--purge"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.trim_end().ends_with("`cco uninstall --purge --yes`"),
        "{err}"
    );
    assert!(env.data_dir().exists());
    let out = env.run(["uninstall", "--purge", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!env.data_dir().exists());
}

#[test]
fn purge_of_a_data_dir_shared_with_a_project_keeps_the_project() {
    let mut env = Env::new();
    fake_systemctl(&mut env, "offline");
    let data = env.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    cco::marker::create_dir_all_marked(&data.join("orchestration/results")).unwrap();
    std::fs::write(data.join("Cargo.toml"), "[package]").unwrap();
    let out = env.run(["uninstall", "--purge", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!data.join("orchestration").exists());
    assert!(data.join("Cargo.toml").exists(), "{}", text(&out.stdout));
}

/// `data_dir = $HOME`: the user's own `~/orchestration` and `~/logs` are not cco's (no mark),
/// so they stay, and so does `$HOME`; the secret still goes, and the run says what it kept.
#[test]
fn purge_with_data_dir_home_deletes_nothing_of_the_users() {
    let mut env = Env::new();
    fake_systemctl(&mut env, "offline");
    let home = env.home.clone();
    env.set("CCO_DATA_DIR", home.display().to_string());
    std::fs::create_dir_all(home.join("orchestration")).unwrap();
    std::fs::write(home.join("orchestration/plan.md"), "mine").unwrap();
    std::fs::create_dir_all(home.join("logs")).unwrap();
    std::fs::write(home.join("logs/daemon.log.2024-notes"), "mine").unwrap();
    let out = env.run(["uninstall", "--purge", "--yes"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(home.join("orchestration/plan.md").exists(), "{stdout}");
    assert!(home.join("logs/daemon.log.2024-notes").exists(), "{stdout}");
    assert!(
        stdout.contains(&format!("kept {}", home.join("orchestration").display())),
        "{stdout}"
    );
}

#[test]
fn detached_start_status_stop_with_pid_files() {
    let mut env = Env::new();
    fake_systemctl(&mut env, "offline");
    // Both services start: the expected outcome is fixed, not asked of the binary under test.
    let out = env.run(["daemon", "start"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("daemon") && stdout.contains("started detached"),
        "{stdout}"
    );
    let (code, body) = get(env.daemon_port, "/health");
    assert_eq!(code, 200, "{body}");
    assert_eq!(get(env.sidecar_port, "/health").0, 200);
    let pid_file = env.runtime_dir().join("daemon.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // A second start finds it running.
    let again = text(&env.run(["daemon", "start"]).stdout);
    assert!(
        again.contains(&format!("already running (pid {pid}")),
        "{again}"
    );

    let out = env.run(["daemon", "status"]);
    let status = text(&out.stdout);
    assert!(
        status.contains(&format!("daemon: running detached (pid {pid}")),
        "{status}"
    );
    assert!(out.status.success(), "{status}");

    let out = env.run(["daemon", "stop"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(&format!("daemon: stopped (pid {pid})")));
    assert!(!pid_file.exists());
    assert!(!alive(pid), "pid {pid} still alive after stop");
    let out = env.run(["daemon", "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stdout).contains("daemon: not running"));
}

#[test]
fn a_dead_detached_daemon_leaves_a_stale_pid_file_that_status_clears() {
    let mut env = Env::new();
    fake_systemctl(&mut env, "offline");
    let out = env.run(["daemon", "start"]);
    assert!(
        text(&out.stdout).contains("started detached"),
        "{}",
        text(&out.stdout)
    );
    let pid_file = env.runtime_dir().join("daemon.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: SIGKILL to the detached daemon this test started (simulates a crash).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // The lock goes with the process; wait for the kernel to reap it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = env.run(["daemon", "status"]);
    let status = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{status}");
    assert!(status.contains("removed its stale pid file"), "{status}");
    assert!(status.contains("daemon: exited"), "{status}");
    assert!(!pid_file.exists());
    // And it starts again.
    let out = env.run(["daemon", "start"]);
    assert!(
        text(&out.stdout).contains("daemon   127.0.0.1"),
        "{}",
        text(&out.stdout)
    );
    env.run(["daemon", "stop"]);
}

/// Nothing re-activates a detached service, so `idle_exit_after` must not end it.
#[test]
fn detached_services_run_with_idle_exit_off() {
    let mut env = Env::new();
    fake_systemctl(&mut env, "offline");
    env.set("CCO_IDLE_EXIT_AFTER", "1s");
    let out = env.run(["daemon", "start"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("started detached"), "{stdout}");
    let notes: Vec<&str> = stdout.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(notes.len(), 1, "{stdout}");
    assert!(
        notes[0].contains("idle_exit_after = \"1s\" applies only to socket-activated services"),
        "{stdout}"
    );
    let log = std::fs::read_to_string(env.data_dir().join("logs/daemon.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("daemon ready") && l.contains("idle_exit_after=never")),
        "{log}"
    );
    env.run(["daemon", "stop"]);
}

#[test]
fn install_dry_run_without_a_service_manager_shows_the_units() {
    let mut env = Env::new();
    let calls = fake_systemctl(&mut env, "offline");
    let out = env.run(["install", "--dry-run"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .starts_with("no service manager")
            && stdout.contains("`cco daemon start`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("would write") && stdout.contains("cco-daemon.socket"),
        "{stdout}"
    );
    assert!(stdout.contains("would run: systemctl --user"), "{stdout}");
    assert!(stdout.contains("dry run: nothing was changed"), "{stdout}");
    assert!(!calls.exists(), "dry run ran systemctl");
}

/// `sudo cco install --system` by someone who has run cco: their config is theirs, not
/// root's, and must be trusted for what it is — never "chown it to root". Runs as root (CI
/// does) to act as the account `nobody`.
#[test]
fn sudo_install_system_trusts_the_invoking_users_own_config() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test acts as another account and needs root (CI runs as root)"
    );
    let mut env = Env::new();
    fake_systemctl(&mut env, "offline");
    let base = env.tmp.path();
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg_dir = base.join("nobody-cfg");
    std::fs::create_dir(&cfg_dir).unwrap();
    let cfg = cfg_dir.join("daemon.toml");
    std::fs::write(&cfg, "[daemon]\nport = 3999\n").unwrap();
    for p in [&cfg_dir, &cfg] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(&cfg_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.set("SUDO_USER", "nobody").set("SUDO_UID", "65534");
    let out = env
        .cmd([
            "--config",
            &cfg.display().to_string(),
            "install",
            "--system",
            "--dry-run",
        ])
        .env_remove("CCO_DAEMON_PORT")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stderr.contains("chown 0") && !stdout.contains("chown 0"),
        "{stderr}"
    );
    assert!(stdout.contains("User=nobody"), "{stdout}");
    assert!(
        stdout.contains("ListenStream=127.0.0.1:3999"),
        "the user's config was read: {stdout}"
    );
}
