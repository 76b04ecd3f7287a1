//! Listeners for the two services: the socket the service manager handed over (systemd
//! `LISTEN_FDS`, launchd `launch_activate_socket`), or one bound by hand on 127.0.0.1.
//! Also readiness and stop notification to systemd (`NOTIFY_SOCKET`).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// How the listener was obtained, for logs and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Systemd,
    Launchd,
    Bound,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Systemd => "systemd",
            Origin::Launchd => "launchd",
            Origin::Bound => "bound",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "port {port} on 127.0.0.1 is already in use — if cco is installed, the service manager owns it \
         (see `cco daemon status`); otherwise stop whatever listens there (`ss -ltnp 'sport = :{port}'`) \
         or set `{key}` in {config}"
    )]
    InUse {
        port: u16,
        key: &'static str,
        config: String,
    },
    #[error("cannot listen on 127.0.0.1:{port}: {cause}")]
    Bind { port: u16, cause: io::Error },
    #[error("the service manager handed over a socket cco cannot use: {0}")]
    Inherited(String),
}

/// Takes the activated socket named `name` if the manager passed one, else binds
/// `127.0.0.1:port`. The result is non-blocking, ready for `tokio::net::TcpListener::from_std`.
pub fn acquire(
    name: &str,
    port: u16,
    key: &'static str,
    config: &str,
) -> Result<(TcpListener, Origin), ListenError> {
    if let Some(l) = from_systemd(name)? {
        return Ok((l, Origin::Systemd));
    }
    #[cfg(target_os = "macos")]
    if let Some(l) =
        launchd::activate_socket(name).map_err(|e| ListenError::Inherited(e.to_string()))?
    {
        return Ok((l, Origin::Launchd));
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr).map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => ListenError::InUse {
            port,
            key,
            config: config.to_string(),
        },
        _ => ListenError::Bind {
            port,
            cause: source,
        },
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|cause| ListenError::Bind { port, cause })?;
    Ok((listener, Origin::Bound))
}

/// systemd passes fds from 3 on; `LISTEN_FDNAMES` (from `FileDescriptorName=`) says which is ours.
fn from_systemd(name: &str) -> Result<Option<TcpListener>, ListenError> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let index = pick_fd(name, names.as_deref(), fds.len())?;
    let listener = fds
        .take_tcp_listener(index)
        .map_err(|e| ListenError::Inherited(e.to_string()))?
        .ok_or_else(|| ListenError::Inherited(format!("no TCP socket at index {index}")))?;
    // Tokio requires a non-blocking socket; systemd hands it over blocking.
    listener
        .set_nonblocking(true)
        .map_err(|e| ListenError::Inherited(e.to_string()))?;
    // Children (Claude never runs under us, but be tidy) must not inherit the activation.
    // SAFETY: removing variables before any thread reads the environment concurrently:
    // this runs during start-up, before the runtime spawns worker threads.
    unsafe {
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    Ok(Some(listener))
}

/// Which inherited fd is ours: the one `FileDescriptorName=` named `name`; with no names, the
/// only one. Serving another service's socket would answer every request with a Host error.
fn pick_fd(name: &str, names: Option<&str>, count: usize) -> Result<usize, ListenError> {
    match names {
        Some(names) => names.split(':').position(|n| n == name).ok_or_else(|| {
            ListenError::Inherited(format!(
                "no socket named {name:?} among {names:?} — the unit's FileDescriptorName= must be {name:?}; run `cco install` to rewrite the units"
            ))
        }),
        None if count == 1 => Ok(0),
        None => Err(ListenError::Inherited(format!(
            "{count} sockets and no LISTEN_FDNAMES to tell which is {name:?} — run `cco install` to rewrite the units"
        ))),
    }
}

/// Sends a state string (`READY=1`, `STOPPING=1`) to systemd when it asked for one.
/// A missing `NOTIFY_SOCKET` is not an error: we were started by hand.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => notify_to(&path, state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to the notification socket at `path` (`@name` is an abstract socket).
pub fn notify_to(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = abstract_name;
            return Err(io::Error::other(
                "abstract NOTIFY_SOCKET on a non-Linux system",
            ));
        }
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

#[cfg(target_os = "macos")]
mod launchd {
    //! `launch_activate_socket(3)`: the sockets launchd opened for our plist's `Sockets` entry.
    //! Reviewed against Apple's launch.h: the name is the key under `Sockets`; on success the
    //! caller owns `*fds` (an array of `*cnt` descriptors allocated with malloc) and frees it.
    use std::ffi::{CString, c_char, c_int};
    use std::io;
    use std::net::TcpListener;
    use std::os::fd::FromRawFd;

    unsafe extern "C" {
        fn launch_activate_socket(
            name: *const c_char,
            fds: *mut *mut c_int,
            cnt: *mut libc::size_t,
        ) -> c_int;
    }

    pub fn activate_socket(name: &str) -> io::Result<Option<TcpListener>> {
        let cname = CString::new(name).map_err(io::Error::other)?;
        let mut fds: *mut c_int = std::ptr::null_mut();
        let mut cnt: libc::size_t = 0;
        // SAFETY: valid C string and out-pointers; on success we own `fds` and free it below.
        let err = unsafe { launch_activate_socket(cname.as_ptr(), &mut fds, &mut cnt) };
        // ESRCH: not managed by launchd; ENOENT: no socket of that name. Both mean "bind yourself".
        if err == libc::ESRCH || err == libc::ENOENT {
            return Ok(None);
        }
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        // SAFETY: launchd returned `cnt` valid descriptors in `fds`.
        let all: Vec<c_int> = unsafe { std::slice::from_raw_parts(fds, cnt).to_vec() };
        // SAFETY: `fds` was allocated by launchd with malloc and is ours to free.
        unsafe { libc::free(fds.cast()) };
        let Some((&first, rest)) = all.split_first() else {
            return Ok(None);
        };
        for fd in rest {
            // SAFETY: extra descriptors we will not use; close them so they do not leak.
            unsafe { libc::close(*fd) };
        }
        // SAFETY: `first` is an open listening socket we now own.
        let listener = unsafe { TcpListener::from_raw_fd(first) };
        listener.set_nonblocking(true)?;
        Ok(Some(listener))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_in_use_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = acquire("daemon", port, "daemon.port", "/x/daemon.toml").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ListenError::InUse { .. }), "{msg}");
        assert!(
            msg.contains(&port.to_string()) && msg.contains("daemon.port"),
            "{msg}"
        );
    }

    #[test]
    fn the_named_fd_is_chosen_or_refused() {
        assert_eq!(pick_fd("sidecar", Some("daemon:sidecar"), 2).unwrap(), 1);
        assert_eq!(pick_fd("daemon", None, 1).unwrap(), 0);
        let e = pick_fd("daemon", Some("web"), 1).unwrap_err().to_string();
        assert!(e.contains("\"daemon\"") && e.contains("cco install"), "{e}");
        assert!(pick_fd("daemon", None, 2).is_err());
    }

    #[test]
    fn notify_to_a_real_socket() {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 32];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
