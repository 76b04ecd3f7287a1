//! `cco events`: the event journal for people — what agents published, as it happens (the
//! sidecar's Server-Sent Events stream, read with a token minted from the local secret).

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
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

fn open_stream(port: u16, token: &str, path: &str) -> anyhow::Result<client::Streaming> {
    // Never hand a token to a port another local user took first.
    client::check_listener_owner(port).map_err(anyhow::Error::msg)?;
    let auth = format!("Bearer {token}");
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
    client::open(client::local(port), &req, STREAM_READ_TIMEOUT).with_context(|| {
        format!("the sidecar on 127.0.0.1:{port} is not reachable — `cco install` (or `cco daemon start`), then `cco health`")
    })
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let inst = Installation::from_process(config)?;
    if let Some(t) = &args.event_type {
        EventType::parse(t)?;
    }
    let secret = Secret::load(&inst.paths.secret_file())?;
    let mut spec = TokenSpec::session("cco-events", TOKEN_TTL);
    spec.scopes = vec![Scope::EventsWait];
    let token = Keys::new(&secret)?.mint(&spec);
    let port = inst.config.sidecar.port;

    let mut since = args.since.or(if args.follow { None } else { Some(0) });
    let mut stream = loop {
        let mut query = vec![format!("follow={}", args.follow)];
        if let Some(s) = since {
            query.push(format!("since={s}"));
        }
        if let Some(t) = &args.event_type {
            query.push(format!("event_type={t}"));
        }
        if let Some(t) = &args.topic {
            query.push(format!("filter=topic:{t}"));
        }
        let path = format!("/api/events/stream?{}", query.join("&"));
        let mut s = open_stream(port, &token.0, &path)?;
        if s.status == 200 {
            break s;
        }
        let mut body = String::new();
        let _ = s.body.read_to_string(&mut body);
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or(body);
        // Older events were compacted: without an explicit --since, start at the oldest kept.
        match (s.status, args.since, floor_from(&message)) {
            (410, None, Some(floor)) if since != Some(floor) => since = Some(floor),
            _ => bail!(
                "the sidecar refused the event stream (HTTP {}): {message}",
                s.status
            ),
        }
    };

    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "{:>6}  {:<24}  {:<20} {:<16} {:<24} DATA",
            "SEQ", "TIME", "TYPE", "TOPIC", "PUBLISHER"
        )?;
    }
    let mut failure: Option<std::io::Error> = None;
    read_sse(&mut stream.body, |msg| {
        if msg.event.as_deref() == Some("error") {
            failure = Some(std::io::Error::other(msg.data));
            return false;
        }
        let line = match serde_json::from_str::<Value>(&msg.data) {
            Ok(v) if args.json => v.to_string(),
            Ok(v) => format_event(&v),
            Err(_) => msg.data,
        };
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    match failure {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::SUCCESS),
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
}
