//! Test harness: an isolated cco installation per test (its own HOME, XDG dirs and ports)
//! and real `cco` processes, handed their listening sockets as systemd does. Readiness comes
//! from the services' own `READY=1` on a notification socket the test owns: no sleeps.

use std::ffi::{CString, OsStr};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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
#[allow(dead_code)] // Env reserves its ports itself; kept for tests that need one more.
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

/// A loopback port held for a service that has not started yet: bound with `SO_REUSEADDR`
/// but not listening, so connections are refused (as to a stopped service), no port-0 bind
/// or outgoing connection elsewhere can take it, and a test or process that binds the port
/// itself (with `SO_REUSEADDR`, as std and tokio do) still can.
fn reserve_port(port: u16) -> std::io::Result<(OwnedFd, u16)> {
    // SAFETY: plain socket calls on a descriptor this function owns; `addr` is a valid
    // sockaddr_in of `len` bytes.
    unsafe {
        // Close-on-exec at creation where the platform can (Linux); macOS lacks
        // SOCK_CLOEXEC, so there a child forked in between may inherit it until its exec.
        #[cfg(target_os = "linux")]
        let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
        #[cfg(not(target_os = "linux"))]
        let kind = libc::SOCK_STREAM;
        let fd = libc::socket(libc::AF_INET, kind, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        if libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            len,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getsockname(fd.as_raw_fd(), (&raw mut addr).cast(), &mut len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((fd, u16::from_be(addr.sin_port)))
    }
}

/// Turns a reserved port into the listening socket a service manager would hand over.
fn listen_on(fd: OwnedFd) -> TcpListener {
    // SAFETY: listen(2) on a bound socket we own.
    let rc = unsafe { libc::listen(fd.as_raw_fd(), libc::SOMAXCONN) };
    assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
    TcpListener::from(fd)
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
    /// The daemon's and the sidecar's ports, held until [`Env::start`] hands them over.
    reserved: std::sync::Mutex<Vec<(&'static str, OwnedFd)>>,
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
        let (daemon_fd, daemon_port) = reserve_port(0).expect("reserve a port for the daemon");
        let (sidecar_fd, sidecar_port) = reserve_port(0).expect("reserve a port for the sidecar");
        Env {
            tmp,
            home,
            config_home,
            runtime_base,
            daemon_port,
            sidecar_port,
            extra: Vec::new(),
            reserved: std::sync::Mutex::new(vec![("daemon", daemon_fd), ("sidecar", sidecar_fd)]),
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

    /// Starts `cco <service> run` on its port, handed over as systemd would (socket
    /// activation); returns once it said READY=1. The first start takes the port [`Env::new`]
    /// reserved; a restart binds the same port again (the previous [`Service`] must be
    /// dropped first: it holds the socket, as a service manager would).
    pub fn start(&self, service: &str) -> Service {
        let port = match service {
            "daemon" => self.daemon_port,
            "sidecar" => self.sidecar_port,
            other => panic!("no such service: {other}"),
        };
        let held = {
            let mut reserved = self.reserved.lock().unwrap();
            let at = reserved.iter().position(|(name, _)| *name == service);
            at.map(|i| reserved.remove(i).1)
        };
        let fd = match held {
            Some(fd) => fd,
            None => {
                reserve_port(port)
                    .unwrap_or_else(|e| panic!("127.0.0.1:{port} for the {service} again: {e}"))
                    .0
            }
        };
        self.start_activated(service, listen_on(fd))
    }

    /// Starts `cco <service> run` binding its port itself (run by hand, no service manager);
    /// the reservation does not stand in its way (both sides use `SO_REUSEADDR` and the
    /// reserved socket does not listen).
    #[allow(dead_code)] // used by the daemon tests
    pub fn start_bound(&self, service: &str) -> Service {
        Service::spawn(self.cmd([service, "run"]), None)
    }

    /// Starts `cco <service> run` with `listener` handed over as systemd would (fd 3,
    /// `LISTEN_FDS=1`, `LISTEN_PID` = the service's pid, `LISTEN_FDNAMES`).
    pub fn start_activated(&self, service: &str, listener: TcpListener) -> Service {
        Service::spawn(self.cmd([service, "run"]), Some((service, listener)))
    }
}

/// What the child needs to exec itself with `LISTEN_PID` set to its own pid, prepared before
/// the fork: after it, only async-signal-safe calls are allowed (no allocation).
struct Activation {
    program: CString,
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` followed by room for the digits and a NUL; one of `envp`'s entries.
    pid_var: Box<[u8; 32]>,
    fd: std::os::fd::RawFd,
}

// SAFETY: the raw pointers point into `_strings` and `pid_var`, owned by the same value and
// never reallocated; the value is only used in the forked child.
unsafe impl Send for Activation {}
unsafe impl Sync for Activation {}

const LISTEN_PID: &[u8] = b"LISTEN_PID=";

impl Activation {
    /// From a command whose environment was cleared and set explicitly (as [`Env::cmd`]
    /// does): `get_envs` is then the whole environment.
    fn new(cmd: &Command, name: &str, listener: &TcpListener) -> Activation {
        let cstr = |s: &OsStr| CString::new(s.as_bytes()).unwrap();
        let program = cstr(cmd.get_program());
        let args: Vec<CString> = std::iter::once(program.clone())
            .chain(cmd.get_args().map(cstr))
            .collect();
        let mut vars: Vec<CString> = cmd
            .get_envs()
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v?.as_bytes());
                Some(CString::new(kv).unwrap())
            })
            .collect();
        vars.push(CString::new("LISTEN_FDS=1").unwrap());
        vars.push(CString::new(format!("LISTEN_FDNAMES={name}")).unwrap());
        let mut pid_var = Box::new([0u8; 32]);
        pid_var[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
        let argv = args
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp = vars
            .iter()
            .map(|v| v.as_ptr())
            .chain([pid_var.as_ptr().cast(), std::ptr::null()])
            .collect();
        Activation {
            program,
            _strings: args.into_iter().chain(vars).collect(),
            argv,
            envp,
            pid_var,
            fd: listener.as_raw_fd(),
        }
    }

    /// In the child: the socket to fd 3, `LISTEN_PID` filled in, exec. Returns only on error.
    fn exec(&mut self) -> std::io::Error {
        // SAFETY: dup2, fcntl, getpid and execve are async-signal-safe; every pointer was
        // prepared before the fork and stays valid.
        unsafe {
            if self.fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(self.fd, 3) < 0 {
                return std::io::Error::last_os_error();
            }
            let mut pid = libc::getpid() as u32;
            let mut digits = [0u8; 10];
            let mut n = 0;
            loop {
                digits[n] = b'0' + (pid % 10) as u8;
                n += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let at = LISTEN_PID.len();
            for i in 0..n {
                self.pid_var[at + i] = digits[n - 1 - i];
            }
            self.pid_var[at + n] = 0;
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            );
            std::io::Error::last_os_error()
        }
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
    fn spawn(mut cmd: Command, activation: Option<(&str, TcpListener)>) -> Service {
        let notify_dir = tempfile::tempdir().unwrap();
        let sock_path = notify_dir.path().join("notify");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
        let log = notify_dir.path().join("service.log");
        let log_file = std::fs::File::create(&log).unwrap();
        cmd.env("NOTIFY_SOCKET", &sock_path);
        let listener = activation.map(|(name, listener)| {
            let mut exec = Activation::new(&cmd, name, &listener);
            // SAFETY: `Activation::exec` makes only async-signal-safe calls.
            unsafe { cmd.pre_exec(move || Err(exec.exec())) };
            listener
        });
        let child = cmd
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

    /// Sends SIGTERM and waits for the exit status. The handed-over socket is closed too, so
    /// the service is down (connections refused), not waiting for re-activation.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        self._listener = None;
        status
    }

    /// SIGKILL, as a crash would; the socket is closed too, so the service can start again.
    #[allow(dead_code)] // used by the property tests
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self._listener = None;
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

/// A test that cannot run here (a missing tool, not root): a note outside CI, a failure in CI
/// (`CI=true`) or when `CCO_REQUIRE_REAL_CLAUDE` is set, so nothing passes there unrun.
pub fn cannot_run(why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let required = std::env::var_os("CCO_REQUIRE_REAL_CLAUDE").is_some();
    assert!(
        !ci && !required,
        "this test cannot run here ({why}), and CI must run it — fix the CI machine"
    );
    eprintln!("note: {why}; skipping (it fails in CI)");
}

impl Env {
    /// [`Env::start`] with the service's descriptor limit (soft and hard) set to `nofile`,
    /// as a unit's `LimitNOFILE=` would.
    pub fn start_with_fd_limit(&self, service: &str, nofile: u64) -> Service {
        let mut c = self.cmd([service, "run"]);
        // SAFETY: only setrlimit (async-signal-safe) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Service::spawn(c, None)
    }
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
