//! A scripted fake of the Anthropic Messages API, so that the real Claude Code CLI runs end to
//! end offline and deterministically: with `ANTHROPIC_BASE_URL` at [`FakeAnthropic::url`] (and
//! any `ANTHROPIC_API_KEY`), the test's [`Rules`] answer every model turn.
//!
//! The HTTP/1.1 server is hand-rolled on std so that nothing stands between the fake and the
//! bytes the CLI reads: SSE events in the real API's order, one per chunk, on keep-alive
//! connections.
//!
//! What a script must allow for in the pinned CLI (2.1.332): main and sub-agent turns differ
//! only by their system prompt; a sub-agent run in the background (unless the Agent call says
//! `"run_in_background": false`) costs `-p` one more main turn, for its `<task-notification>`,
//! which needs a rule or the script loops; a `HEAD /api/hello` preconnect comes first unless
//! `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`; only interactive auto mode's permission
//! classifier calls without streaming.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use serde_json::{Value, json};

/// One HTTP request as it arrived.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Without the query string (`/v1/messages`).
    pub path: String,
    /// What followed `?` (`beta=true`), or empty.
    pub query: String,
    /// The de-chunked body, lossy UTF-8 (Claude Code sends uncompressed JSON).
    pub body: String,
}

impl Request {
    fn is_messages(&self) -> bool {
        self.method == "POST" && self.path == "/v1/messages"
    }
}

/// A `/v1/messages` request, as a script (and later the test) sees it.
#[derive(Clone, Debug)]
pub struct Call {
    /// Order among `/v1/messages` requests, from 1.
    pub n: usize,
    pub request: Request,
    /// The parsed body (`Null` if it was not JSON).
    pub body: Value,
}

impl Call {
    fn new(n: usize, request: Request) -> Call {
        let body = serde_json::from_str(&request.body).unwrap_or_default();
        Call { n, request, body }
    }

    fn stream(&self) -> bool {
        self.body["stream"] == true
    }

    /// The top-level `system` prompt, its text blocks joined by newlines: where
    /// `--append-system-prompt` and a custom agent's `prompt` land.
    pub fn system_text(&self) -> String {
        content_text(&self.body["system"])
    }

    /// The `role: "system"` entries of `messages`: where Claude Code puts the agent roster
    /// ("Available agent types for the Agent tool: - name: description …") and the hooks'
    /// `additionalContext`.
    pub fn system_messages_text(&self) -> String {
        self.texts_of_role("system")
    }

    /// Every `role: "user"` entry's text (tool results excluded).
    pub fn user_text(&self) -> String {
        self.texts_of_role("user")
    }

    /// A sub-agent's turn: its billing block says `cc_is_subagent=true`.
    pub fn is_subagent(&self) -> bool {
        self.system_text().contains("cc_is_subagent=true")
    }

    /// Interactive auto mode's (non-streaming) permission check: `Reply::text("<severity>0")`
    /// lets the action through.
    #[allow(dead_code)] // for scripts of interactive sessions
    pub fn is_permission_classifier(&self) -> bool {
        self.system_text()
            .contains("You are a security monitor for autonomous AI coding agents")
    }

    /// A main turn delivering a background sub-agent's completion.
    #[allow(dead_code)] // for scripts with background sub-agents
    pub fn is_task_notification(&self) -> bool {
        self.user_text().contains("<task-notification>")
    }

    /// The `tool_result` texts of the last `user` entry (not simply the last entry, which may
    /// be a `system` one): non-empty when this turn answers the previous one's tool calls.
    pub fn tool_results(&self) -> Vec<String> {
        let last_user = self.messages().iter().rev().find(|m| m["role"] == "user");
        let blocks = last_user.and_then(|m| m["content"].as_array());
        blocks
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "tool_result")
            .map(|b| content_text(&b["content"]))
            .collect()
    }

    pub fn has_tool_result(&self) -> bool {
        !self.tool_results().is_empty()
    }

    /// The names of the tools offered in this turn.
    #[allow(dead_code)] // for scripts that check what a turn may call
    pub fn tool_names(&self) -> Vec<String> {
        let tools = self.body["tools"].as_array().into_iter().flatten();
        tools
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Whether any string value anywhere in the body contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        fn any(v: &Value, needle: &str) -> bool {
            match v {
                Value::String(s) => s.contains(needle),
                Value::Array(items) => items.iter().any(|v| any(v, needle)),
                Value::Object(members) => members.values().any(|v| any(v, needle)),
                _ => false,
            }
        }
        any(&self.body, needle)
    }

    fn messages(&self) -> &[Value] {
        self.body["messages"].as_array().map_or(&[], Vec::as_slice)
    }

    fn texts_of_role(&self, role: &str) -> String {
        let texts: Vec<String> = self
            .messages()
            .iter()
            .filter(|m| m["role"] == role)
            .map(|m| content_text(&m["content"]))
            .collect();
        texts.join("\n")
    }
}

/// The text of a `content` or `system` value: a string, or its blocks' `text`s joined.
fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            let texts: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
            texts.join("\n")
        }
        _ => String::new(),
    }
}

/// What the fake answers to one `/v1/messages` request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// An assistant message's content blocks (`text`, `tool_use` without its `id`); it stops
    /// for `tool_use` if it calls a tool, else `end_turn`.
    Message(Vec<Value>),
    /// An API error: status and body. The CLI retries 429 / 5xx with backoff (slow tests); a
    /// 400 fails at once.
    Error(u16, Value),
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Message(vec![json!({ "type": "text", "text": text.into() })])
    }

    /// A call of tool `name`. `input` must be a JSON object: checked here, so that a typo fails
    /// where it was written rather than as a confusing CLI error.
    pub fn tool_use(name: impl Into<String>, input: impl AsRef<str>) -> Reply {
        let input = input.as_ref();
        let parsed: Value = serde_json::from_str(input).unwrap_or_default();
        assert!(
            parsed.is_object(),
            "tool input must be a JSON object: {input}"
        );
        Reply::Message(vec![
            json!({ "type": "tool_use", "name": name.into(), "input": parsed }),
        ])
    }

    pub fn error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::Error(status, error(kind, message))
    }
}

type Predicate = Box<dyn Fn(&Call) -> bool + Send + Sync>;
type Script = Box<dyn Fn(&Call) -> Option<Reply> + Send + Sync>;

/// A script: the first rule whose predicate holds answers; else the fallback ("ok" unless
/// `otherwise` says). Predicates may run concurrently (parallel sub-agents).
pub struct Rules {
    rules: Vec<(Predicate, Reply)>,
    /// Replies computed from the request (ids only known at run time), tried first.
    scripts: Vec<Script>,
    fallback: Reply,
}

impl Rules {
    pub fn new() -> Rules {
        Rules {
            rules: Vec::new(),
            scripts: Vec::new(),
            fallback: Reply::text("ok"),
        }
    }

    pub fn when(
        mut self,
        pred: impl Fn(&Call) -> bool + Send + Sync + 'static,
        reply: Reply,
    ) -> Rules {
        self.rules.push((Box::new(pred), reply));
        self
    }

    /// A reply computed from the request; `None` leaves it to the other rules.
    #[allow(dead_code)] // for scripts that echo ids the run made up
    pub fn script(mut self, f: impl Fn(&Call) -> Option<Reply> + Send + Sync + 'static) -> Rules {
        self.scripts.push(Box::new(f));
        self
    }

    /// The `n`-th `/v1/messages` request, from 1.
    pub fn nth(self, n: usize, reply: Reply) -> Rules {
        self.when(move |c| c.n == n, reply)
    }

    /// Requests whose top-level system prompt contains `needle`.
    #[allow(dead_code)] // for scripts that tell agents apart by their prompt
    pub fn system_contains(self, needle: &str, reply: Reply) -> Rules {
        let needle = needle.to_owned();
        self.when(move |c| c.system_text().contains(&needle), reply)
    }

    pub fn otherwise(mut self, reply: Reply) -> Rules {
        self.fallback = reply;
        self
    }

    /// The reply to `call`. A panicking predicate answers 400, which the CLI prints and stops
    /// on, rather than leaving it to retry on a dead connection.
    fn reply(&self, call: &Call) -> Reply {
        let found = catch_unwind(AssertUnwindSafe(|| {
            self.scripts.iter().find_map(|s| s(call)).or_else(|| {
                self.rules
                    .iter()
                    .find(|(pred, _)| pred(call))
                    .map(|(_, r)| r.clone())
            })
        }));
        let message = "the fake's script panicked (see the test's output)";
        found.map_or_else(
            |_| Reply::error(400, "invalid_request_error", message),
            |reply| reply.unwrap_or_else(|| self.fallback.clone()),
        )
    }
}

struct Shared {
    rules: Rules,
    requests: Mutex<Vec<Request>>,
    /// Clones of the open connections' sockets, to shut them down on drop (an idle keep-alive
    /// client may never send again); `None` once stopped.
    conns: Mutex<Option<Vec<TcpStream>>>,
}

/// The running fake. Dropping it stops the server and joins its threads.
pub struct FakeAnthropic {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeAnthropic {
    /// Serve `rules` on an ephemeral loopback port.
    pub fn with_rules(rules: Rules) -> FakeAnthropic {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake Anthropic API");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            rules,
            requests: Mutex::default(),
            conns: Mutex::new(Some(Vec::new())),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || accept_loop(listener, shared))
        };
        FakeAnthropic {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`, for `ANTHROPIC_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The `/v1/messages` requests so far, in order of arrival.
    pub fn calls(&self) -> Vec<Call> {
        let messages = self.requests().into_iter().filter(Request::is_messages);
        messages
            .enumerate()
            .map(|(i, r)| Call::new(i + 1, r))
            .collect()
    }
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        for conn in self.shared.conns.lock().unwrap().take().unwrap_or_default() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        // `accept` has no timeout: a connection of our own wakes it to see that we stopped.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Serve each connection on a thread; once stopped, join them.
fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut threads = Vec::new();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // Registered under the lock that `drop` takes, so no connection escapes the shutdown.
        match (shared.conns.lock().unwrap().as_mut(), stream.try_clone()) {
            (Some(conns), Ok(clone)) => conns.push(clone),
            (None, _) => break,
            (Some(_), Err(_)) => continue,
        }
        let shared = shared.clone();
        threads.push(thread::spawn(move || {
            let _ = serve(stream, &shared);
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Requests on one keep-alive connection, until the client closes it (or we stop).
fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    while !input.fill_buf()?.is_empty() {
        let request_line = line(&mut input)?;
        let parts: Vec<&str> = request_line.split(' ').collect();
        let [method, target, version] = parts[..] else {
            return Err(io::Error::other(format!(
                "bad request line: {request_line}"
            )));
        };
        // Of the headers, only the framing matters.
        let (mut chunked, mut length, mut close) = (false, 0, version == "HTTP/1.0");
        loop {
            let header = line(&mut input)?.to_ascii_lowercase();
            let Some((name, value)) = header.split_once(':') else {
                break;
            };
            match (name.trim(), value.trim()) {
                ("transfer-encoding", v) => chunked = v.contains("chunked"),
                ("content-length", v) => length = v.parse().unwrap_or(0),
                ("connection", v) => close = v.contains("close"),
                _ => {}
            }
        }
        let body = read_body(&mut input, chunked, length)?;

        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let n = {
            let mut requests = shared.requests.lock().unwrap();
            requests.push(request.clone());
            requests.iter().filter(|r| r.is_messages()).count()
        };
        let head_only = request.method == "HEAD";
        let (status, content_type, body) = respond(request, n, &shared.rules);
        // The event stream is sent chunked (`body` is encoded so), the rest with a length.
        let framing = match content_type {
            SSE => "transfer-encoding: chunked".to_owned(),
            _ => format!("content-length: {}", body.len()),
        };
        write!(
            out,
            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\n{framing}\r\nrequest-id: req_fake\r\nconnection: {}\r\n\r\n{}",
            if status == 200 { "OK" } else { "Error" },
            if close { "close" } else { "keep-alive" },
            if head_only { "" } else { &body },
        )?;
        out.flush()?;
        if close {
            break;
        }
    }
    Ok(())
}

/// A request body, de-chunked if it came in chunks.
fn read_body(input: &mut BufReader<TcpStream>, chunked: bool, length: u64) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if !chunked {
        input.by_ref().take(length).read_to_end(&mut body)?;
        return Ok(body);
    }
    loop {
        // A chunk: its size in hex (maybe with extensions), CRLF, the data, CRLF.
        let size_line = line(input)?;
        let size_hex = size_line.split(';').next().unwrap_or_default();
        let size = u64::from_str_radix(size_hex.trim(), 16)
            .map_err(|_| io::Error::other(format!("bad chunk size: {size_line}")))?;
        if size == 0 {
            while !line(input)?.is_empty() {} // trailers, up to the empty line
            return Ok(body);
        }
        input.by_ref().take(size).read_to_end(&mut body)?;
        line(input)?;
    }
}

/// One CRLF-terminated line, without it.
fn line(input: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end().to_owned())
}

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream; charset=utf-8";

/// The status, content type and body of the answer to `request`, the `n`-th `/v1/messages`
/// request if it is one.
fn respond(request: Request, n: usize, rules: &Rules) -> (u16, &'static str, String) {
    match request.path.as_str() {
        "/v1/messages" if request.is_messages() => {
            let call = Call::new(n, request);
            match rules.reply(&call) {
                Reply::Message(mut blocks) => {
                    for (i, block) in blocks.iter_mut().enumerate() {
                        if block["type"] == "tool_use" {
                            // Unique within one fake and stable across runs: tests may name it.
                            block["id"] = format!("toolu_fake_{n}_{i}").into();
                        }
                    }
                    if call.stream() {
                        (200, SSE, event_stream(&call, &blocks))
                    } else {
                        let stop = stop_reason(&blocks);
                        (200, JSON, message(&call, blocks, Some(stop)).to_string())
                    }
                }
                Reply::Error(status, body) => (status, JSON, body.to_string()),
            }
        }
        // Unused by `-p` runs of this CLI, but cheap to keep a token counter from failing.
        "/v1/messages/count_tokens" => {
            let tokens = (request.body.len() / 4).max(1);
            (200, JSON, json!({ "input_tokens": tokens }).to_string())
        }
        // The CLI's preconnect (HEAD) and `doctor`'s reachability check (GET).
        "/api/hello" => (200, JSON, "{}".to_owned()),
        path => {
            let message = format!("the fake Anthropic API does not serve {path}");
            (404, JSON, error("not_found_error", &message).to_string())
        }
    }
}

fn error(kind: &str, message: &str) -> Value {
    json!({ "type": "error", "error": { "type": kind, "message": message } })
}

/// The input-side usage the fake reports: (input, cache creation, cache read) tokens. A
/// sub-agent's differs from the main thread's so that cost tests can tell them apart.
pub const MAIN_USAGE: (u64, u64, u64) = (10, 0, 0);
pub const SUBAGENT_USAGE: (u64, u64, u64) = (21, 3, 5);
/// Output tokens of a finished message (`message_delta` and the non-streaming form).
pub const OUTPUT_TOKENS: u64 = 10;

/// The assistant message, complete or (with no stop reason yet) as `message_start` has it.
/// Usage is small and fixed so that no client logic (auto-compaction, cost warnings) reacts.
fn message(call: &Call, content: Vec<Value>, stop_reason: Option<&str>) -> Value {
    let (input, cache_creation, cache_read) = if call.is_subagent() {
        SUBAGENT_USAGE
    } else {
        MAIN_USAGE
    };
    json!({
        "id": format!("msg_fake_{}", call.n),
        "type": "message",
        "role": "assistant",
        "model": call.body["model"].as_str().unwrap_or("claude-fake"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": input,
            "cache_creation_input_tokens": cache_creation,
            "cache_read_input_tokens": cache_read,
            "output_tokens": if stop_reason.is_some() { OUTPUT_TOKENS } else { 1 },
        },
    })
}

fn stop_reason(blocks: &[Value]) -> &'static str {
    if blocks.iter().any(|b| b["type"] == "tool_use") {
        "tool_use"
    } else {
        "end_turn"
    }
}

/// The Messages API's streaming form as a chunked body: its events in the real API's order,
/// one per chunk, with text and tool input each split over deltas so that the client's
/// accumulation is exercised.
fn event_stream(call: &Call, blocks: &[Value]) -> String {
    let mut events = vec![
        json!({ "type": "message_start", "message": message(call, Vec::new(), None) }),
        json!({ "type": "ping" }),
    ];
    for (index, block) in blocks.iter().enumerate() {
        // The block starts empty; its text, or its input as JSON text, comes in deltas.
        let (key, empty, delta_type, field) = if block["type"] == "tool_use" {
            ("input", json!({}), "input_json_delta", "partial_json")
        } else {
            ("text", json!(""), "text_delta", "text")
        };
        let whole = match &block[key] {
            Value::String(text) => text.clone(),
            input => input.to_string(),
        };
        let mut start = block.clone();
        start[key] = empty;
        let start =
            json!({ "type": "content_block_start", "index": index, "content_block": start });
        events.push(start);
        // Up to three pieces, cut between chars.
        let chars: Vec<char> = whole.chars().collect();
        for piece in chars.chunks(chars.len().div_ceil(3).max(1)) {
            let piece = String::from_iter(piece);
            let delta = json!({ "type": delta_type, field: piece });
            events.push(json!({ "type": "content_block_delta", "index": index, "delta": delta }));
        }
        events.push(json!({ "type": "content_block_stop", "index": index }));
    }
    events.push(json!({
        "type": "message_delta",
        "delta": { "stop_reason": stop_reason(blocks), "stop_sequence": null },
        "usage": { "output_tokens": OUTPUT_TOKENS },
    }));
    events.push(json!({ "type": "message_stop" }));

    let mut body = String::new();
    for data in events {
        let event = format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap()
        );
        body += &format!("{:x}\r\n{event}\r\n", event.len());
    }
    body + "0\r\n\r\n"
}

#[cfg(test)]
mod tests {
    //! The fake's own wire behaviour over a raw socket: what the CLI may rely on but a happy
    //! path run might not exercise (chunked request bodies, several requests on one
    //! connection, the non-streaming form, dropping with a connection still open).

    use super::*;

    /// A response's head and its body, still chunk-encoded if sent so (SSE lines can be read
    /// between the chunk sizes).
    fn read_response(r: &mut BufReader<TcpStream>, head_only: bool) -> (String, String) {
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            r.read_line(&mut head).unwrap();
        }
        let mut body = String::new();
        if head_only {
            return (head, body);
        }
        if head.contains("transfer-encoding: chunked") {
            while !body.ends_with("\r\n0\r\n\r\n") {
                r.read_line(&mut body).unwrap();
            }
        } else {
            let len = head.split("content-length: ").nth(1).unwrap();
            let mut buf = vec![0; len.lines().next().unwrap().parse().unwrap()];
            r.read_exact(&mut buf).unwrap();
            body = String::from_utf8(buf).unwrap();
        }
        (head, body)
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
            "POST /v1/messages?beta=true HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .unwrap();
        let (head, sse) = read_response(&mut r, false);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let (mut events, mut partial_json) = (Vec::new(), String::new());
        for l in sse.lines() {
            if let Some(event) = l.strip_prefix("event: ") {
                events.push(event);
            } else if let Some(data) = l.strip_prefix("data: ") {
                let data: Value = serde_json::from_str(data).unwrap();
                partial_json += data["delta"]["partial_json"].as_str().unwrap_or_default();
            }
        }
        let expected = "message_start ping content_block_start content_block_delta \
            content_block_delta content_block_delta content_block_stop message_delta message_stop";
        assert_eq!(events.join(" "), expected);
        let input: Value = serde_json::from_str(&partial_json).unwrap();
        assert_eq!(input["prompt"], "p é");
        assert!(sse.contains(r#""stop_reason":"tool_use""#));

        // The same connection: a non-streaming turn with a Content-Length body.
        let body = r#"{"model":"m2","stream":false,"messages":[]}"#;
        let len = body.len();
        write!(
            w,
            "POST /v1/messages HTTP/1.1\r\nContent-Length: {len}\r\n\r\n{body}"
        )
        .unwrap();
        let (_, json) = read_response(&mut r, false);
        let msg: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(msg["model"], "m2");
        assert_eq!(msg["stop_reason"], "end_turn");
        assert_eq!(content_text(&msg["content"]), "done");

        // And the preconnect: headers only.
        write!(w, "HEAD /api/hello HTTP/1.1\r\n\r\n").unwrap();
        let (head, _) = read_response(&mut r, true);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");

        let calls = fake.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].request.query, "beta=true");
        assert!(calls[0].stream() && !calls[1].stream());
        assert_eq!(calls[0].user_text(), "hi");
        assert!(calls[0].contains("hi") && !calls[1].contains("hi"));
        assert_eq!(fake.requests().len(), 3);
        drop(fake); // must not hang on the open connection
    }
}
