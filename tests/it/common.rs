//! Test harness: an isolated cco installation per test (its own HOME, XDG dirs and ports)
//! and real `cco` processes. Readiness comes from the services' own `READY=1` on a
//! notification socket the test owns: no sleeps.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const CCO: &str = env!("CARGO_BIN_EXE_cco");

/// How long a service may take to say READY=1 before the test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub fn current_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// A free loopback port for a service, handed out once per test binary. Taken below the
/// kernel's ephemeral range (32768+), where the tests' own outgoing connections could grab a
/// port between our check and the service's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Different test processes start in different places.
    let offset = (std::process::id() % 400) * 30;
    loop {
        let port = (20_000 + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One isolated installation.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub config_home: PathBuf,
    pub runtime_base: PathBuf,
    pub daemon_port: u16,
    pub sidecar_port: u16,
    pub extra: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let config_home = tmp.path().join("config");
        let runtime_base = tmp.path().join("run");
        for d in [&home, &config_home, &runtime_base] {
            std::fs::create_dir_all(d).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime_base, std::fs::Permissions::from_mode(0o700)).unwrap();
        let daemon_port = free_port();
        let mut sidecar_port = free_port();
        while sidecar_port == daemon_port {
            sidecar_port = free_port();
        }
        Env {
            tmp,
            home,
            config_home,
            runtime_base,
            daemon_port,
            sidecar_port,
            extra: Vec::new(),
        }
    }

    /// Sets an extra environment variable for every command of this installation.
    pub fn set(&mut self, k: &str, v: impl Into<String>) -> &mut Self {
        self.extra.push((k.to_string(), v.into()));
        self
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.runtime_base.join("cco")
    }
    pub fn config_dir(&self) -> PathBuf {
        self.config_home.join("cco")
    }
    pub fn config_file(&self) -> PathBuf {
        self.config_dir().join("daemon.toml")
    }
    #[allow(dead_code)] // used by the sidecar tests
    pub fn data_dir(&self) -> PathBuf {
        self.home.join(".cco")
    }

    /// `cco ARGS…` with a clean environment pointing at this installation.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(CCO);
        c.args(args).env_clear();
        c.env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env("XDG_RUNTIME_DIR", &self.runtime_base)
            .env("CCO_DAEMON_PORT", self.daemon_port.to_string())
            .env("CCO_SIDECAR_PORT", self.sidecar_port.to_string())
            .env("CCO_LOG", "debug")
            .current_dir(self.tmp.path());
        for (k, v) in &self.extra {
            c.env(k, v);
        }
        c
    }

    /// Runs `cco ARGS…` to completion with no stdin.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Starts `cco <service> run` binding its port itself; returns once it said READY=1.
    pub fn start(&self, service: &str) -> Service {
        Service::spawn(self.cmd([service, "run"]), None)
    }

    /// Starts `cco <service> run` with `listener` handed over as systemd would
    /// (fd 3, `LISTEN_FDS=1`, `LISTEN_PID` = the service's pid, `LISTEN_FDNAMES`).
    pub fn start_activated(&self, service: &str, listener: TcpListener) -> Service {
        // `sh` learns its own pid ($$) and keeps it across `exec`, as LISTEN_PID requires.
        let mut c = self.cmd([
            "-c",
            &format!("LISTEN_PID=$$ exec \"$0\" {service} run"),
            CCO,
        ]);
        let mut sh = Command::new("/bin/sh");
        sh.args(c.get_args());
        sh.env_clear();
        for (k, v) in c.get_envs() {
            if let Some(v) = v {
                sh.env(k, v);
            }
        }
        sh.current_dir(self.tmp.path())
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", service);
        c = sh;
        let fd = listener.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Service::spawn(c, Some(listener))
    }
}

/// A running service process; killed on drop.
pub struct Service {
    pub child: Child,
    pub log: PathBuf,
    _notify_dir: tempfile::TempDir,
    _listener: Option<TcpListener>,
}

impl Service {
    fn spawn(mut cmd: Command, listener: Option<TcpListener>) -> Service {
        let notify_dir = tempfile::tempdir().unwrap();
        let sock_path = notify_dir.path().join("notify");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
        let log = notify_dir.path().join("service.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut svc = Service {
            child,
            log,
            _notify_dir: notify_dir,
            _listener: listener,
        };
        let mut buf = [0u8; 256];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if buf[..n].windows(7).any(|w| w == b"READY=1") => break,
                Ok(_) => continue,
                // A signal to the test process interrupts recv(2) (seen under load): keep waiting.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = svc.child.kill();
                    panic!(
                        "service did not become ready ({e}); log:\n{}",
                        svc.log_text()
                    );
                }
            }
        }
        svc
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP GET on loopback: (status, body).
pub fn get(port: u16, path: &str) -> (u16, String) {
    http(port, "GET", path, &[], None)
}

/// A raw HTTP/1.1 request on loopback; `headers` may override `Host`.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    (status, body)
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Runs `cmd` with `input` on its stdin; captures stdout and stderr.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Writes an executable script.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Starts any command that ends in a cco service (e.g. `bash -c "exec cco run …"`); returns
/// once it said READY=1.
#[allow(dead_code)] // used by the guide tests
pub fn start_command(cmd: &mut Command) -> Service {
    let mut owned = Command::new(cmd.get_program());
    owned.args(cmd.get_args()).env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            owned.env(k, v);
        }
    }
    if let Some(d) = cmd.get_current_dir() {
        owned.current_dir(d);
    }
    Service::spawn(owned, None)
}
