//! `cco events`: the event journal for people — what agents published, as it happens (the
//! sidecar's Server-Sent Events stream, read with a token minted from the local secret).

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::api::EventType;
use crate::auth::{Keys, Scope, TokenSpec};
use crate::client::{self, Request};
use crate::paths::Installation;
use crate::secret::Secret;

/// The stream sends a keep-alive comment every 15 s; silence much longer than that means
/// the sidecar is gone.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Lifetime of the token sent with each connection: it is checked when the stream opens,
/// so a short one is enough, and one that leaks is soon useless.
const TOKEN_TTL: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep printing new events as they are published (Ctrl-C to stop).
    #[arg(short, long)]
    pub follow: bool,
    /// Only events of this type (e.g. agent_completed).
    #[arg(long = "type", value_name = "EVENT_TYPE")]
    pub event_type: Option<String>,
    /// Only events on this topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only events after this seq (default: every retained event; with --follow, only new ones).
    #[arg(long)]
    pub since: Option<u64>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One `id:`/`event:`/`data:` block of a Server-Sent Events stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads SSE messages from `reader`, calling `each` until it returns false or the stream ends.
pub fn read_sse(
    reader: &mut dyn BufRead,
    mut each: impl FnMut(SseMessage) -> bool,
) -> std::io::Result<()> {
    let mut msg = SseMessage::default();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            if (!msg.data.is_empty() || msg.event.is_some()) && !each(std::mem::take(&mut msg)) {
                return Ok(());
            }
            continue;
        }
        if l.starts_with(':') {
            continue; // keep-alive comment
        }
        let (field, value) = l
            .split_once(':')
            .map_or((l, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "id" => msg.id = Some(value.to_string()),
            "event" => msg.event = Some(value.to_string()),
            "data" => {
                if !msg.data.is_empty() {
                    msg.data.push('\n');
                }
                msg.data.push_str(value);
            }
            _ => {}
        }
    }
}

/// One line of the human format.
pub fn format_event(e: &Value) -> String {
    let data = e["data"].to_string();
    let data = if data.len() > 200 {
        format!("{}…", data.chars().take(200).collect::<String>())
    } else {
        data
    };
    format!(
        "{:>6}  {}  {:<20} {:<16} {:<24} {data}",
        e["seq"].as_u64().unwrap_or(0),
        e["timestamp"].as_str().unwrap_or(""),
        e["event_type"].as_str().unwrap_or("?"),
        e["topic"].as_str().unwrap_or(""),
        e["publisher"].as_str().unwrap_or(""),
    )
}

/// `restart from since=N` in a 410 answer.
fn floor_from(message: &str) -> Option<u64> {
    let rest = &message[message.find("since=")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// How long `--follow` keeps trying to reach a sidecar that went away (a restart takes
/// well under a second) before giving up.
const RECONNECT_FOR: Duration = Duration::from_secs(30);
/// The first pause between reconnection attempts; it doubles up to `RECONNECT_MAX_PAUSE`.
const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(100);
const RECONNECT_MAX_PAUSE: Duration = Duration::from_secs(2);
/// How long the one-off head lookup before following may take.
const HEAD_TIMEOUT: Duration = Duration::from_secs(3);
/// The sidecar's limit on labels (`check_label` in `sidecar/routes.rs`), checked here so a
/// bad `--topic` fails before any request.
const MAX_TOPIC: usize = 256;

/// `--topic` obeys the sidecar's rules for labels.
fn check_topic(topic: &str) -> anyhow::Result<()> {
    if topic.is_empty() || topic.len() > MAX_TOPIC || topic.chars().any(char::is_control) {
        bail!(
            "invalid --topic {topic:?}: a topic is 1-{MAX_TOPIC} bytes without control characters — pass e.g. `--topic issue-42`"
        );
    }
    Ok(())
}

/// Percent-encodes a query value: everything but RFC 3986 unreserved characters.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The stream's path and query.
fn stream_path(args: &Args, since: Option<u64>) -> String {
    let mut query = vec![format!("follow={}", args.follow)];
    if let Some(s) = since {
        query.push(format!("since={s}"));
    }
    if let Some(t) = &args.event_type {
        query.push(format!("event_type={}", encode(t)));
    }
    if let Some(t) = &args.topic {
        query.push(format!("filter={}", encode(&format!("topic:{t}"))));
    }
    format!("/api/events/stream?{}", query.join("&"))
}

/// The journal's newest seq, so that a follower that reconnects misses nothing published
/// before its first event; `None` if the sidecar does not say.
fn journal_head(port: u16) -> Option<u64> {
    let r = client::send(client::local(port), &Request::get("/status"), HEAD_TIMEOUT).ok()?;
    let v: Value = (r.status == 200).then(|| r.json().ok())??;
    v["events"]["total_published"].as_u64()
}

/// The sidecar's message in an error answer: its JSON `error.message`, else the body, else
/// the status text.
fn error_message(status: u16, body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or_else(|| body.trim().to_string());
    if message.is_empty() {
        axum::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no reason given")
            .to_string()
    } else {
        message
    }
}

/// What one attempt to open the stream gave.
enum Opened {
    Stream(client::Streaming),
    /// No answer, or a 5xx: the sidecar is down or (re)starting.
    Unreachable(String),
    /// A 410 naming the oldest event kept.
    Compacted {
        floor: u64,
        message: String,
    },
}

fn open_stream(port: u16, keys: &Keys, path: &str) -> anyhow::Result<Opened> {
    // Never hand a token to a port another local user took first.
    client::check_listener_owner(port).map_err(anyhow::Error::msg)?;
    // A fresh short-lived token per connection.
    let mut spec = TokenSpec::session("cco-events", TOKEN_TTL);
    spec.scopes = vec![Scope::EventsWait];
    let auth = format!("Bearer {}", keys.mint(&spec).0);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Accept", "text/event-stream"),
    ];
    let req = Request {
        method: "GET",
        path,
        headers: &headers,
        body: None,
    };
    let mut s = match client::open(client::local(port), &req, STREAM_READ_TIMEOUT) {
        Ok(s) => s,
        Err(e) => return Ok(Opened::Unreachable(e.to_string())),
    };
    if s.status == 200 {
        return Ok(Opened::Stream(s));
    }
    let mut body = String::new();
    let _ = s.body.read_to_string(&mut body);
    let message = error_message(s.status, &body);
    match (s.status, floor_from(&message)) {
        (410, Some(floor)) => Ok(Opened::Compacted { floor, message }),
        (500.., _) => Ok(Opened::Unreachable(format!("HTTP {}: {message}", s.status))),
        _ => bail!(
            "the sidecar refused the event stream (HTTP {}): {message}",
            s.status
        ),
    }
}

/// Why printing a stream stopped.
enum Stop {
    /// The stream ended as asked (no `--follow`), or stdout was closed.
    Done,
    /// The connection went away; `--follow` reconnects.
    Lost(String),
}

/// Prints the stream's events, keeping `since` at the last seq seen.
fn print_events(
    stream: &mut client::Streaming,
    since: &mut Option<u64>,
    out: &mut impl Write,
    json: bool,
    follow: bool,
) -> anyhow::Result<Stop> {
    let mut sidecar_error: Option<String> = None;
    let mut output_error: Option<std::io::Error> = None;
    let read = read_sse(&mut stream.body, |msg| {
        if msg.event.as_deref() == Some("error") {
            sidecar_error = Some(msg.data);
            return false;
        }
        if let Some(seq) = msg.id.as_deref().and_then(|i| i.parse().ok()) {
            *since = Some(seq);
        }
        let line = match serde_json::from_str::<Value>(&msg.data) {
            Ok(v) if json => v.to_string(),
            Ok(v) => format_event(&v),
            Err(_) => msg.data,
        };
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                output_error = Some(e);
                false
            }
        }
    });
    match (output_error, sidecar_error, read) {
        (Some(e), ..) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Stop::Done),
        (Some(e), ..) => Err(anyhow::Error::new(e).context("cannot write the events")),
        (None, Some(e), _) if !follow => bail!("the sidecar ended the event stream: {e}"),
        (None, Some(e), _) => Ok(Stop::Lost(e)),
        (None, None, Err(e)) => Ok(Stop::Lost(e.to_string())),
        (None, None, Ok(())) if follow => Ok(Stop::Lost("the stream ended".into())),
        (None, None, Ok(())) => Ok(Stop::Done),
    }
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config)?;
    if let Some(t) = &args.event_type {
        EventType::parse(t)?;
    }
    if let Some(t) = &args.topic {
        check_topic(t)?;
    }
    let secret = Secret::load(&inst.paths.secret_file())?;
    let keys = Keys::new(&secret)?;
    let port = inst.config.sidecar.port;

    let mut since = match args.since {
        Some(s) => Some(s),
        None if args.follow => journal_head(port),
        None => Some(0),
    };
    // A cursor the user gave is theirs to move; one of ours may skip to the oldest kept.
    let mut cursor_is_ours = args.since.is_none();
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "{:>6}  {:<24}  {:<20} {:<16} {:<24} DATA",
            "SEQ", "TIME", "TYPE", "TOPIC", "PUBLISHER"
        )?;
    }
    // When the sidecar went away; reset once a stream opens again.
    let mut outage: Option<Instant> = None;
    let mut pause = RECONNECT_FIRST_PAUSE;
    let mut connected = false;
    loop {
        let lost = match open_stream(port, &keys, &stream_path(&args, since))? {
            Opened::Stream(mut s) => {
                connected = true;
                outage = None;
                pause = RECONNECT_FIRST_PAUSE;
                let before = since;
                let stop = print_events(&mut s, &mut since, &mut out, args.json, args.follow)?;
                cursor_is_ours |= since != before;
                match stop {
                    Stop::Done => return Ok(ExitCode::SUCCESS),
                    Stop::Lost(why) => why,
                }
            }
            Opened::Compacted { floor, message } => {
                // Older events were compacted: start at the oldest kept.
                if !cursor_is_ours || since == Some(floor) {
                    bail!("the sidecar refused the event stream (HTTP 410): {message}");
                }
                since = Some(floor);
                continue;
            }
            Opened::Unreachable(why) => why,
        };
        // A sidecar that was never reached is not coming back: say so at once.
        if !args.follow || !connected {
            bail!(
                "the sidecar on 127.0.0.1:{port} is not reachable ({lost}) — `cco install` (or `cco daemon start`), then `cco health`"
            );
        }
        let started = *outage.get_or_insert_with(|| {
            eprintln!("cco events: lost the sidecar on 127.0.0.1:{port} ({lost}); reconnecting…");
            Instant::now()
        });
        if started.elapsed() >= RECONNECT_FOR {
            bail!(
                "the sidecar on 127.0.0.1:{port} did not come back within {} s ({lost}) — `cco health` shows why, `cco sidecar restart` restarts it",
                RECONNECT_FOR.as_secs()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sse_blocks_and_skips_comments() {
        let text = ": keep-alive\n\nid: 1\nevent: a\ndata: {\"x\":1}\n\nid: 2\nevent: b\ndata: line1\ndata: line2\n\n";
        let mut got = Vec::new();
        read_sse(&mut text.as_bytes(), |m| {
            got.push(m);
            true
        })
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id.as_deref(), Some("1"));
        assert_eq!(got[1].data, "line1\nline2");
    }

    #[test]
    fn formats_and_finds_the_floor() {
        let e = serde_json::json!({"seq": 7, "timestamp": "2026-01-01T00:00:00Z", "event_type": "agent_completed",
            "topic": "issue-1", "publisher": "py-1", "data": {"status": "success"}});
        let line = format_event(&e);
        assert!(
            line.contains("agent_completed")
                && line.contains("issue-1")
                && line.contains("success"),
            "{line}"
        );
        assert!(
            line.starts_with("     7  "),
            "seq is right-aligned under SEQ: {line:?}"
        );
        assert_eq!(floor_from("restart from `since=41` or without"), Some(41));
        assert_eq!(floor_from("nothing"), None);
    }

    #[test]
    fn query_values_are_encoded_and_topics_checked() {
        let args = Args {
            follow: true,
            event_type: Some("agent_completed".into()),
            topic: Some("a b&since=0#x".into()),
            since: None,
            json: false,
        };
        assert_eq!(
            stream_path(&args, Some(7)),
            "/api/events/stream?follow=true&since=7&event_type=agent_completed\
             &filter=topic%3Aa%20b%26since%3D0%23x"
        );
        assert_eq!(encode("é"), "%C3%A9");
        assert!(check_topic("issue-42").is_ok());
        assert!(check_topic("a b").is_ok(), "the sidecar allows spaces");
        for bad in ["", "a\nb", &"x".repeat(MAX_TOPIC + 1)] {
            let e = check_topic(bad).unwrap_err().to_string();
            assert!(e.contains("--topic issue-42"), "{e}");
        }
    }

    #[test]
    fn an_error_answer_always_says_something() {
        let json =
            r#"{"error":{"code":"bad_request","message":"`topic` must be 1-256 characters"}}"#;
        assert_eq!(error_message(400, json), "`topic` must be 1-256 characters");
        assert_eq!(error_message(400, "plain words\n"), "plain words");
        assert_eq!(error_message(400, ""), "Bad Request");
        assert_eq!(error_message(599, ""), "no reason given");
    }
}
