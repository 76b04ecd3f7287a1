//! A scripted stand-in for the Anthropic Messages API, so the real Claude Code CLI can run
//! end to end offline: point it at `ANTHROPIC_BASE_URL=<fake.url()>` (any `ANTHROPIC_API_KEY`)
//! and every model turn is answered by the test's script instead of a model.
//!
//! Std only on purpose: it must not pull a runtime or an HTTP stack into the test binary, and a
//! hand-rolled server lets us speak exactly the wire format Claude Code expects (SSE over
//! chunked HTTP/1.1 on keep-alive connections), with nothing between it and the bytes.
//!
//! Facts about the pinned CLI (2.1.331) that shape this file: it sends
//! `POST /v1/messages?beta=true` with `stream: true`; a main turn and a sub-agent turn look alike
//! except for their system prompt (the sub-agent's billing block says `cc_is_subagent=true` and
//! its system prompt starts with the agent's `prompt`); the agent roster and hook
//! `additionalContext` arrive as `role: "system"` entries inside `messages`; sub-agents run in
//! the background unless the Agent call says `"run_in_background": false`, and then `-p` takes
//! one more main turn for the `<task-notification>` (a script needs a rule for it, or it loops);
//! a `HEAD /api/hello` preconnect comes first unless `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`;
//! the only non-streaming call is interactive auto mode's permission classifier.

// A toolkit for several tests: each uses only some of its accessors.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often an idle keep-alive connection looks at the stop flag. Short, so that dropping the
/// fake never waits long for a client that keeps its connection open.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// One HTTP request as it arrived.
#[derive(Clone, Debug)]
pub struct Request {
    /// Order of arrival over all requests, from 1.
    pub seq: usize,
    pub method: String,
    /// The path without the query string (`/v1/messages`).
    pub path: String,
    /// What followed `?` in the target (`beta=true`), or empty.
    pub query: String,
    /// In arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The de-chunked body (lossy UTF-8: Claude Code sends JSON uncompressed).
    pub body: String,
}

impl Request {
    /// The first header of that name, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_messages(&self) -> bool {
        self.method == "POST" && self.path == "/v1/messages"
    }

    pub fn json(&self) -> Option<Json> {
        Json::parse(&self.body).ok()
    }
}

/// A `/v1/messages` request as the script (and later the test) sees it.
#[derive(Clone, Debug)]
pub struct Call {
    /// Order among `/v1/messages` requests only, from 1.
    pub n: usize,
    pub request: Request,
    /// The parsed body (`Json::Null` if it was not JSON).
    pub body: Json,
}

impl Call {
    pub fn model(&self) -> &str {
        self.body.get("model").and_then(Json::as_str).unwrap_or("")
    }

    pub fn stream(&self) -> bool {
        self.body.get("stream").and_then(Json::as_bool) == Some(true)
    }

    /// The top-level `system` prompt: a string or text blocks, joined by newlines. This is
    /// where `--append-system-prompt` and a custom agent's `prompt` land.
    pub fn system_text(&self) -> String {
        self.body
            .get("system")
            .map(content_text)
            .unwrap_or_default()
    }

    /// The text of the `role: "system"` entries of `messages`. Claude Code puts the roster
    /// ("Available agent types for the Agent tool: - name: description …") and the
    /// SessionStart / SubagentStart hooks' `additionalContext` there, not in `system`.
    pub fn system_messages_text(&self) -> String {
        self.messages_with_role("system")
    }

    /// Text of every `role: "user"` entry (tool results excluded).
    pub fn user_text(&self) -> String {
        self.messages_with_role("user")
    }

    /// A sub-agent's turn, as opposed to the main thread's: Claude Code marks it in the first
    /// system block (`x-anthropic-billing-header: … cc_is_subagent=true;`).
    pub fn is_subagent(&self) -> bool {
        self.system_text().contains("cc_is_subagent=true")
    }

    /// Interactive auto mode's permission check (e.g. of a sub-agent's `SubagentHandback`): a
    /// non-streaming call that expects `Reply::text("<severity>0")` to let the action through.
    pub fn is_permission_classifier(&self) -> bool {
        self.system_text()
            .contains("You are a security monitor for autonomous AI coding agents")
    }

    /// Whether this main turn delivers a background sub-agent's completion.
    pub fn is_task_notification(&self) -> bool {
        self.user_text().contains("<task-notification>")
    }

    /// The text of the `tool_result` blocks of the last user message: non-empty when this turn
    /// answers a tool call of the previous one. (The last entry of `messages` may be a
    /// `system` one, so this looks for the last `user` entry, not the last entry.)
    pub fn tool_results(&self) -> Vec<String> {
        let Some(last_user) = self.messages().iter().rev().find(|m| role(m) == "user") else {
            return Vec::new();
        };
        let Some(blocks) = last_user.get("content").and_then(Json::as_array) else {
            return Vec::new();
        };
        blocks
            .iter()
            .filter(|b| b.get("type").and_then(Json::as_str) == Some("tool_result"))
            .map(|b| b.get("content").map(content_text).unwrap_or_default())
            .collect()
    }

    pub fn has_tool_result(&self) -> bool {
        !self.tool_results().is_empty()
    }

    /// Whether any string anywhere in the body contains `needle` (after JSON unescaping).
    pub fn contains(&self, needle: &str) -> bool {
        self.body.any_str(&mut |s| s.contains(needle))
    }

    /// The names of the tools offered in this turn.
    pub fn tool_names(&self) -> Vec<String> {
        self.body
            .get("tools")
            .and_then(Json::as_array)
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| t.get("name").and_then(Json::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn messages(&self) -> &[Json] {
        self.body
            .get("messages")
            .and_then(Json::as_array)
            .unwrap_or(&[])
    }

    fn messages_with_role(&self, wanted: &str) -> String {
        let texts: Vec<String> = self
            .messages()
            .iter()
            .filter(|m| role(m) == wanted)
            .filter_map(|m| m.get("content").map(content_text))
            .collect();
        texts.join("\n")
    }
}

fn role(message: &Json) -> &str {
    message.get("role").and_then(Json::as_str).unwrap_or("")
}

/// The text of a `content` / `system` value: a plain string, or the `text` of its blocks.
pub fn content_text(v: &Json) -> String {
    match v {
        Json::Str(s) => s.clone(),
        Json::Arr(blocks) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Json::as_str))
                .collect();
            texts.join("\n")
        }
        _ => String::new(),
    }
}

/// One content block of a scripted assistant message.
#[derive(Clone, Debug)]
pub enum Block {
    Text(String),
    /// `input` is a JSON object, as text.
    ToolUse {
        name: String,
        input: String,
    },
}

/// What the fake answers to one `/v1/messages` request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// An assistant message; its stop reason is `tool_use` if it calls a tool, else `end_turn`.
    Message(Vec<Block>),
    /// An API error. Mind that the CLI retries 429 / 5xx / 529 with backoff (slow tests);
    /// a 400 fails the turn at once.
    Error {
        status: u16,
        kind: String,
        message: String,
    },
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Message(vec![Block::Text(text.into())])
    }

    /// A call of tool `name`; `input` must be a JSON object (checked here, so that a typo
    /// fails the test where it was written rather than as a confusing CLI error).
    pub fn tool_use(name: impl Into<String>, input: impl Into<String>) -> Reply {
        let input = input.into();
        assert!(
            matches!(Json::parse(&input), Ok(Json::Obj(_))),
            "tool input must be a JSON object: {input}"
        );
        Reply::Message(vec![Block::ToolUse {
            name: name.into(),
            input,
        }])
    }

    pub fn error(status: u16, kind: impl Into<String>, message: impl Into<String>) -> Reply {
        Reply::Error {
            status,
            kind: kind.into(),
            message: message.into(),
        }
    }
}

type Predicate = Box<dyn Fn(&Call) -> bool + Send + Sync>;

/// A script as an ordered list of rules: the first whose predicate holds answers; if none
/// does, the fallback (a plain "ok" text unless `otherwise` changed it).
pub struct Rules {
    rules: Vec<(Predicate, Reply)>,
    fallback: Reply,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            rules: Vec::new(),
            fallback: Reply::text("ok"),
        }
    }
}

impl Rules {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(
        mut self,
        pred: impl Fn(&Call) -> bool + Send + Sync + 'static,
        reply: Reply,
    ) -> Self {
        self.rules.push((Box::new(pred), reply));
        self
    }

    /// Answer the `n`-th `/v1/messages` request (from 1) with `reply`.
    pub fn nth(self, n: usize, reply: Reply) -> Self {
        self.when(move |c| c.n == n, reply)
    }

    /// Answer requests whose top-level system prompt contains `needle`.
    pub fn system_contains(self, needle: &str, reply: Reply) -> Self {
        let needle = needle.to_owned();
        self.when(move |c| c.system_text().contains(&needle), reply)
    }

    pub fn otherwise(mut self, reply: Reply) -> Self {
        self.fallback = reply;
        self
    }

    pub fn reply(&self, call: &Call) -> Reply {
        self.rules
            .iter()
            .find(|(pred, _)| pred(call))
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| self.fallback.clone())
    }
}

type Script = Arc<dyn Fn(&Call) -> Reply + Send + Sync>;

struct Shared {
    stop: AtomicBool,
    log: Mutex<Log>,
    script: Script,
}

#[derive(Default)]
struct Log {
    requests: Vec<Request>,
    messages_calls: usize,
    /// Connection threads, joined on drop so that the fake is really gone when dropped.
    conns: Vec<JoinHandle<()>>,
}

/// The running fake. Dropping it stops the server and its connection threads.
pub struct FakeAnthropic {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeAnthropic {
    /// Serve on an ephemeral loopback port; `script` answers each `/v1/messages` request.
    /// It runs on the connection's thread, possibly concurrently (parallel sub-agents); a
    /// panic in it answers HTTP 400 with the panic message, which the CLI prints and stops on.
    pub fn start(script: impl Fn(&Call) -> Reply + Send + Sync + 'static) -> FakeAnthropic {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake Anthropic API");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            log: Mutex::new(Log::default()),
            script: Arc::new(script),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("fake-anthropic-accept".into())
                .spawn(move || accept_loop(listener, shared))
                .unwrap()
        };
        FakeAnthropic {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn with_rules(rules: Rules) -> FakeAnthropic {
        FakeAnthropic::start(move |call| rules.reply(call))
    }

    /// `http://127.0.0.1:PORT`, for `ANTHROPIC_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().requests.clone()
    }

    /// The `/v1/messages` requests so far, parsed, in order of arrival.
    pub fn calls(&self) -> Vec<Call> {
        self.requests()
            .into_iter()
            .filter(Request::is_messages)
            .enumerate()
            .map(|(i, request)| Call {
                n: i + 1,
                body: request.json().unwrap_or(Json::Null),
                request,
            })
            .collect()
    }
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // `accept` has no timeout: a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let conns = std::mem::take(&mut self.shared.log.lock().unwrap().conns);
        for conn in conns {
            let _ = conn.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let conn_shared = shared.clone();
        let handle = thread::Builder::new()
            .name("fake-anthropic-conn".into())
            .spawn(move || {
                let _ = serve_connection(stream, &conn_shared);
            })
            .unwrap();
        let mut log = shared.log.lock().unwrap();
        log.conns.retain(|h| !h.is_finished());
        log.conns.push(handle);
    }
}

/// A connection with its own read buffer: keep-alive means one read may hold the end of one
/// request and the start of the next.
struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    stop: &'a AtomicBool,
}

impl Conn<'_> {
    /// Read more bytes; `Ok(false)` at end of stream. Wakes up every `IDLE_POLL` to honour a
    /// stop request, since an idle keep-alive client may never send again.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(io::Error::other("fake stopped"));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One CRLF-terminated line without its terminator; `None` at a clean end of stream.
    fn line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(Some(line));
            }
            if !self.fill()? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_POLL))?;
    stream.set_nodelay(true)?;
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        stop: &shared.stop,
    };
    loop {
        let Some(request_line) = conn.line()? else {
            return Ok(());
        };
        if request_line.is_empty() {
            continue; // tolerated stray CRLF between requests (RFC 9112 §2.2)
        }
        let mut parts = request_line.split_whitespace();
        let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v)) => (m.to_owned(), t.to_owned(), v.to_owned()),
            _ => {
                return Err(io::Error::other(format!(
                    "bad request line: {request_line}"
                )));
            }
        };
        let mut headers = Vec::new();
        loop {
            let line = conn.line()?.ok_or(io::ErrorKind::UnexpectedEof)?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let size_line = conn.line()?.ok_or(io::ErrorKind::UnexpectedEof)?;
                let size_hex = size_line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .map_err(|_| io::Error::other(format!("bad chunk size: {size_line}")))?;
                if size == 0 {
                    // Trailers, if any, end with an empty line.
                    while !conn.line()?.ok_or(io::ErrorKind::UnexpectedEof)?.is_empty() {}
                    break;
                }
                body.extend(conn.bytes(size)?);
                conn.bytes(2)?; // the CRLF after the chunk data
            }
            body
        } else {
            let len = header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            conn.bytes(len)?
        };
        let connection = header("connection").map(|v| v.to_ascii_lowercase());
        let keep_alive = match connection.as_deref() {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => version == "HTTP/1.1",
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), q.to_owned()),
            None => (target.clone(), String::new()),
        };

        let (request, messages_n) = {
            let mut log = shared.log.lock().unwrap();
            let request = Request {
                seq: log.requests.len() + 1,
                method,
                path,
                query,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            log.requests.push(request.clone());
            let n = if request.is_messages() {
                log.messages_calls += 1;
                log.messages_calls
            } else {
                0
            };
            (request, n)
        };

        respond(&mut conn.stream, &request, messages_n, shared, keep_alive)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

fn respond(
    out: &mut TcpStream,
    request: &Request,
    messages_n: usize,
    shared: &Shared,
    keep_alive: bool,
) -> io::Result<()> {
    let head_only = request.method == "HEAD";
    match request.path.as_str() {
        "/v1/messages" if request.method == "POST" => {
            let call = Call {
                n: messages_n,
                body: request.json().unwrap_or(Json::Null),
                request: request.clone(),
            };
            let reply =
                catch_unwind(AssertUnwindSafe(|| (shared.script)(&call))).unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "script panicked".into());
                    Reply::error(
                        400,
                        "invalid_request_error",
                        format!("fake script panicked: {what}"),
                    )
                });
            match reply {
                Reply::Error {
                    status,
                    kind,
                    message,
                } => {
                    let body = format!(
                        r#"{{"type":"error","error":{{"type":{},"message":{}}}}}"#,
                        json_string(&kind),
                        json_string(&message)
                    );
                    write_plain(
                        out,
                        status,
                        "application/json",
                        body.as_bytes(),
                        keep_alive,
                        false,
                    )
                }
                Reply::Message(blocks) if call.stream() => {
                    write_stream(out, &call, &blocks, keep_alive)
                }
                Reply::Message(blocks) => {
                    let body = message_json(&call, &blocks, true);
                    write_plain(
                        out,
                        200,
                        "application/json",
                        body.as_bytes(),
                        keep_alive,
                        false,
                    )
                }
            }
        }
        // Claude Code does not call this in -p runs of this version, but it is cheap to keep
        // a token-counting caller from failing.
        "/v1/messages/count_tokens" => {
            let tokens = (request.body.len() / 4).max(1);
            let body = format!(r#"{{"input_tokens":{tokens}}}"#);
            write_plain(
                out,
                200,
                "application/json",
                body.as_bytes(),
                keep_alive,
                head_only,
            )
        }
        // The CLI's preconnect (HEAD) and `doctor`'s reachability check (GET).
        "/api/hello" => write_plain(out, 200, "application/json", b"{}", keep_alive, head_only),
        _ => {
            let body = format!(
                r#"{{"type":"error","error":{{"type":"not_found_error","message":{}}}}}"#,
                json_string(&format!(
                    "the fake Anthropic API does not serve {}",
                    request.path
                ))
            );
            write_plain(
                out,
                404,
                "application/json",
                body.as_bytes(),
                keep_alive,
                head_only,
            )
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Overloaded",
        _ => "Status",
    }
}

fn write_plain(
    out: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nrequest-id: req_fake\r\nconnection: {}\r\n\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body);
    }
    out.write_all(&response)?;
    out.flush()
}

/// The Messages API's streaming form: one SSE event per HTTP chunk, in the order the real API
/// sends them, with text and tool input split over several deltas so that the client's
/// accumulation is exercised as it is against the real service.
fn write_stream(
    out: &mut TcpStream,
    call: &Call,
    blocks: &[Block],
    keep_alive: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nrequest-id: req_fake\r\nconnection: {}\r\n\r\n",
        if keep_alive { "keep-alive" } else { "close" }
    );
    out.write_all(head.as_bytes())?;
    let mut event = |name: &str, data: String| -> io::Result<()> {
        let payload = format!("event: {name}\ndata: {data}\n\n");
        write!(out, "{:x}\r\n{payload}\r\n", payload.len())
    };
    event(
        "message_start",
        format!(
            r#"{{"type":"message_start","message":{}}}"#,
            message_json(call, &[], false)
        ),
    )?;
    event("ping", r#"{"type":"ping"}"#.into())?;
    for (index, block) in blocks.iter().enumerate() {
        let (start, pieces) = match block {
            Block::Text(text) => (
                r#"{"type":"text","text":""}"#.to_owned(),
                split3(text)
                    .into_iter()
                    .map(|p| format!(r#"{{"type":"text_delta","text":{}}}"#, json_string(p)))
                    .collect::<Vec<_>>(),
            ),
            Block::ToolUse { name, input } => (
                format!(
                    r#"{{"type":"tool_use","id":{},"name":{},"input":{{}}}}"#,
                    json_string(&tool_use_id(call.n, index)),
                    json_string(name)
                ),
                split3(input)
                    .into_iter()
                    .map(|p| {
                        format!(
                            r#"{{"type":"input_json_delta","partial_json":{}}}"#,
                            json_string(p)
                        )
                    })
                    .collect(),
            ),
        };
        event(
            "content_block_start",
            format!(r#"{{"type":"content_block_start","index":{index},"content_block":{start}}}"#),
        )?;
        for delta in pieces {
            event(
                "content_block_delta",
                format!(r#"{{"type":"content_block_delta","index":{index},"delta":{delta}}}"#),
            )?;
        }
        event(
            "content_block_stop",
            format!(r#"{{"type":"content_block_stop","index":{index}}}"#),
        )?;
    }
    event(
        "message_delta",
        format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"{}","stop_sequence":null}},"usage":{{"output_tokens":{}}}}}"#,
            stop_reason(blocks),
            output_tokens(blocks)
        ),
    )?;
    event("message_stop", r#"{"type":"message_stop"}"#.into())?;
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

fn stop_reason(blocks: &[Block]) -> &'static str {
    if blocks.iter().any(|b| matches!(b, Block::ToolUse { .. })) {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn output_tokens(blocks: &[Block]) -> usize {
    let chars: usize = blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => t.len(),
            Block::ToolUse { input, .. } => input.len(),
        })
        .sum();
    chars / 4 + 1
}

/// Ids unique within one fake, stable across runs, so tests can name them.
fn tool_use_id(call_n: usize, index: usize) -> String {
    format!("toolu_fake_{call_n}_{index}")
}

/// The message object: complete (non-streaming answer) or empty with a null stop reason (the
/// `message_start` event). Usage is small and fixed so that no client logic (auto-compaction,
/// cost warnings) is ever triggered by it.
fn message_json(call: &Call, blocks: &[Block], complete: bool) -> String {
    let content: Vec<String> = if complete {
        blocks
            .iter()
            .enumerate()
            .map(|(index, b)| match b {
                Block::Text(t) => format!(r#"{{"type":"text","text":{}}}"#, json_string(t)),
                Block::ToolUse { name, input } => format!(
                    r#"{{"type":"tool_use","id":{},"name":{},"input":{input}}}"#,
                    json_string(&tool_use_id(call.n, index)),
                    json_string(name)
                ),
            })
            .collect()
    } else {
        Vec::new()
    };
    let model = if call.model().is_empty() {
        "claude-fake"
    } else {
        call.model()
    };
    format!(
        r#"{{"id":"msg_fake_{n}","type":"message","role":"assistant","model":{model},"content":[{content}],"stop_reason":{stop},"stop_sequence":null,"usage":{{"input_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":{out}}}}}"#,
        n = call.n,
        model = json_string(model),
        content = content.join(","),
        stop = if complete {
            format!(r#""{}""#, stop_reason(blocks))
        } else {
            "null".into()
        },
        out = if complete { output_tokens(blocks) } else { 1 },
    )
}

/// Up to three pieces, cut on char boundaries.
fn split3(s: &str) -> Vec<&str> {
    let cuts: Vec<usize> = [s.len() / 3, 2 * s.len() / 3]
        .into_iter()
        .map(|mut i| {
            while !s.is_char_boundary(i) {
                i += 1;
            }
            i
        })
        .collect();
    let pieces = [&s[..cuts[0]], &s[cuts[0]..cuts[1]], &s[cuts[1]..]];
    let mut out: Vec<&str> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
    if out.is_empty() {
        out.push("");
    }
    out
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON value: just enough of a reader to script on request bodies and to read hook logs,
/// without a crate.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    /// Members in document order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing characters at {}", p.i));
        }
        Ok(v)
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn at(&self, index: usize) -> Option<&Json> {
        self.as_array().and_then(|a| a.get(index))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }

    /// Whether `f` holds for some string value (keys excluded) anywhere inside.
    pub fn any_str(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        match self {
            Json::Str(s) => f(s),
            Json::Arr(items) => items.iter().any(|v| v.any_str(f)),
            Json::Obj(members) => members.iter().any(|(_, v)| v.any_str(f)),
            _ => false,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn eat(&mut self, lit: &str) -> Result<(), String> {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            self.err(&format!("expected {lit}"))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            None => self.err("unexpected end"),
            Some(b'n') => self.eat("null").map(|_| Json::Null),
            Some(b't') => self.eat("true").map(|_| Json::Bool(true)),
            Some(b'f') => self.eat("false").map(|_| Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return self.err("expected , or ]"),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(members));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return self.err("expected a member name");
                    }
                    let key = self.string()?;
                    self.ws();
                    self.eat(":")?;
                    let value = self.value()?;
                    members.push((key, value));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(members));
                        }
                        _ => return self.err("expected , or }"),
                    }
                }
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'
                    )
                {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|n| n.parse::<f64>().ok())
                    .map(Json::Num)
                    .map_or_else(|| self.err("bad value"), Ok)
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
        let n = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or("bad \\u escape")?;
        self.i += 4;
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi)
                                && self.s[self.i..].starts_with(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                            } else {
                                hi
                            };
                            char::from_u32(code).unwrap_or('\u{FFFD}')
                        }
                        _ => return self.err("bad escape"),
                    };
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
                _ => out.push(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The fake's own wire behaviour, with a raw socket: what the CLI relies on but a happy
    //! path run might not exercise (chunked request bodies, several requests on one
    //! connection, the non-streaming form).

    use super::*;
    use std::io::{BufRead, BufReader};

    fn read_response(r: &mut BufReader<TcpStream>) -> (String, String) {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let lower = head.to_ascii_lowercase();
        let mut body = Vec::new();
        if lower.contains("transfer-encoding: chunked") {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            let len: usize = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let mut buf = vec![0; len];
            r.read_exact(&mut buf).unwrap();
            body = buf;
        }
        (head, String::from_utf8(body).unwrap())
    }

    #[test]
    fn fake_anthropic_serves_keep_alive_chunked_and_plain_requests() {
        let fake = FakeAnthropic::with_rules(
            Rules::new()
                .nth(
                    1,
                    Reply::tool_use("Agent", r#"{"subagent_type":"x","prompt":"p \u00e9"}"#),
                )
                .otherwise(Reply::text("done")),
        );
        let stream = TcpStream::connect(fake.addr).unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);

        // A streamed turn whose request body arrives chunked.
        let body = r#"{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let (a, b) = body.split_at(20);
        write!(
            w,
            "POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .unwrap();
        let (head, sse) = read_response(&mut r);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let events: Vec<&str> = sse
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            events,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let partial: String = sse
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| Json::parse(d).ok())
            .filter_map(|d| {
                d.get("delta")?
                    .get("partial_json")?
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(
            Json::parse(&partial)
                .unwrap()
                .get("prompt")
                .unwrap()
                .as_str(),
            Some("p é")
        );
        assert!(sse.contains(r#""stop_reason":"tool_use""#));

        // The same connection: a non-streaming turn with a Content-Length body.
        let body = r#"{"model":"m2","stream":false,"messages":[]}"#;
        write!(
            w,
            "POST /v1/messages HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let (_, json) = read_response(&mut r);
        let msg = Json::parse(&json).unwrap();
        assert_eq!(msg.get("model").unwrap().as_str(), Some("m2"));
        assert_eq!(msg.get("stop_reason").unwrap().as_str(), Some("end_turn"));
        assert_eq!(content_text(msg.get("content").unwrap()), "done");

        let calls = fake.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].request.query, "beta=true");
        assert!(calls[0].stream() && !calls[1].stream());
        assert_eq!(calls[0].user_text(), "hi");
        drop(r);
        drop(w);
        drop(fake); // must not hang on the open connection
    }
}
