//! A small W3C WebDriver client over plain HTTP/JSON (no extra crate: the tests need a
//! dozen commands), driving Debian's headless `chromium` through `chromedriver`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::cannot_run;

/// How long chromedriver may take to say it listens.
const DRIVER_START: Duration = Duration::from_secs(20);
/// How long `find` waits for an element to appear (the browser's implicit wait).
pub const FIND_WAIT: Duration = Duration::from_secs(15);
/// The window the screenshots are taken in.
const WINDOW: (u32, u32) = (1280, 860);
/// Longest wait for one WebDriver answer (a browser start takes a few seconds).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The flags that work on this machine's headless Chromium (no sandbox in containers, no
/// network beyond loopback: the dashboard must work offline).
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

fn find_program(env_var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// A chromedriver process and one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile under `profile`.
    /// `None` (after saying so loudly; a failure in CI) when they are not installed.
    pub fn start(profile: &Path) -> Option<Browser> {
        let Some(driver) = find_program("CHROMEDRIVER", &["chromedriver"]) else {
            cannot_run("chromedriver is not installed (apt-get install chromium chromium-driver)");
            return None;
        };
        let Some(chromium) = find_program("CHROMIUM", &["chromium", "chromium-browser"]) else {
            cannot_run("chromium is not installed (apt-get install chromium chromium-driver)");
            return None;
        };
        let port = crate::common::free_port();
        // Its own process group, so that Drop can end the browsers it starts too.
        let mut child = Command::new(&driver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        // Readiness: chromedriver says so on stdout; the rest of its output is drained by a
        // thread so it never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("started successfully") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(DRIVER_START).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromedriver did not start within {DRIVER_START:?}");
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Browser {
            driver: child,
            port,
            session: String::new(),
        };
        let v = browser.call("POST", "/session", Some(caps));
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        browser.session_call(
            "POST",
            "/timeouts",
            Some(json!({"implicit": FIND_WAIT.as_millis() as u64, "pageLoad": 30_000, "script": 10_000})),
        );
        Some(browser)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, text) = request(self.port, method, path, body.map(|b| b.to_string()));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: {status}: {e}: {text}"));
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({"url": url})));
    }

    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching `css`, waiting up to [`FIND_WAIT`] for it to appear.
    pub fn find(&self, css: &str) -> String {
        let v = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {v}"))
            .to_string()
    }

    pub fn text(&self, element: &str) -> String {
        self.session_call("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn click(&self, element: &str) {
        self.session_call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Runs `script` in the page and returns what it returns.
    pub fn eval(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The browser console's messages since the last call (errors, CSP reports).
    pub fn console(&self) -> Vec<String> {
        let v = self.session_call("POST", "/se/log", Some(json!({"type": "browser"})));
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.session_call("GET", "/screenshot", None);
        decode_base64(b64.as_str().expect("base64 text"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = std::panic::catch_unwind(|| request(self.port, "DELETE", &path, None));
        }
        // chromedriver and any browser it started: the group it leads (its own pid).
        // SAFETY: kill(2) on the process group of a child we spawned.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGTERM);
        }
        let _ = self.driver.wait();
    }
}

/// One WebDriver request on loopback: (status, body). chromedriver keeps connections open
/// whatever `Connection` says, so the body is read by its `Content-Length`.
fn request(port: u16, method: &str, path: &str, body: Option<String>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let body = body.unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut buf = vec![0; length];
    reader.read_exact(&mut buf).unwrap();
    (status, String::from_utf8_lossy(&buf).into_owned())
}

/// Standard base64 (the screenshot's encoding).
fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().take_while(|c| **c != b'=').count();
        let mut acc = 0u32;
        for (i, c) in chunk.iter().take(n).enumerate() {
            acc |= value(*c) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..n.max(1)]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGk="), b"hi");
    assert_eq!(decode_base64("YWJj"), b"abc");
}
