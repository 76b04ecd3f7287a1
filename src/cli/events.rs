//! `cco events`: the event journal for people — what agents published, as it happens (the
//! sidecar's Server-Sent Events stream, read with a token minted from the local secret).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::api::EventType;
use crate::api::inert;
use crate::api::sidecar::Event;
use crate::auth::{Keys, Scope, TokenSpec};
use crate::client::sidecar::EventStream;
use crate::client::{ServiceError, SidecarClient, StreamItem, StreamQuery};
use crate::paths::Installation;
use crate::secret::Secret;
use anyhow::bail;

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

/// One line of the human format; every field from the event is made inert.
pub fn format_event(e: &Event) -> String {
    let data = e.data.to_string();
    let data = if data.chars().count() > MAX_DATA_CHARS {
        format!("{}…", data.chars().take(MAX_DATA_CHARS).collect::<String>())
    } else {
        data
    };
    format!(
        "{:>6}  {}  {:<20} {:<16} {:<24} {}",
        e.seq,
        inert::line(&e.timestamp),
        inert::line(&e.event_type),
        inert::line(&e.topic),
        inert::line(&e.publisher),
        inert::line(&data),
    )
}

/// How much of an event's data the table shows.
const MAX_DATA_CHARS: usize = 200;

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

/// What the stream is asked for, from the arguments and the cursor.
fn stream_query(args: &Args, event_type: Option<&EventType>, since: Option<u64>) -> StreamQuery {
    StreamQuery {
        follow: args.follow,
        since,
        event_type: event_type.cloned(),
        topic: args.topic.clone(),
    }
}

/// The journal's newest seq, so that a follower that reconnects misses nothing published
/// before its first event; `None` if the sidecar does not say.
fn journal_head(port: u16) -> Option<u64> {
    let status = SidecarClient::new(port)
        .with_timeout(HEAD_TIMEOUT)
        .status()
        .ok()?;
    Some(status.events.total_published)
}

/// What one attempt to open the stream gave.
enum Opened {
    Stream(EventStream),
    /// No answer, or a 5xx: the sidecar is down or (re)starting.
    Unreachable(String),
    /// A 410 naming the oldest event kept.
    Compacted {
        floor: u64,
        message: String,
    },
}

fn open_stream(port: u16, keys: &Keys, query: &StreamQuery) -> anyhow::Result<Opened> {
    // A fresh short-lived token per connection.
    let mut spec = TokenSpec::session("cco-events", TOKEN_TTL);
    spec.scopes = vec![Scope::EventsWait];
    let client = SidecarClient::new(port)
        .with_token(keys.mint(&spec).0)
        .with_timeout(STREAM_READ_TIMEOUT);
    match client.stream(query) {
        Ok(s) => Ok(Opened::Stream(s)),
        Err(ServiceError::Api { status: 410, body }) if body.error.floor.is_some() => {
            Ok(Opened::Compacted {
                floor: body.error.floor.unwrap_or_default(),
                message: inert::line(&body.error.message).into_owned(),
            })
        }
        Err(e @ ServiceError::Foreign { .. }) => Err(e.into()),
        Err(ServiceError::Unreachable { source, .. }) => {
            Ok(Opened::Unreachable(source.to_string()))
        }
        Err(e) if e.is_transient() => Ok(Opened::Unreachable(e.to_string())),
        Err(e) => bail!("the sidecar refused the event stream ({e})"),
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
    stream: &mut EventStream,
    since: &mut Option<u64>,
    out: &mut impl Write,
    json: bool,
    follow: bool,
) -> anyhow::Result<Stop> {
    let mut sidecar_error: Option<String> = None;
    let mut output_error: Option<std::io::Error> = None;
    let read = stream.read(|item| {
        let line = match item {
            StreamItem::Error(e) => {
                sidecar_error = Some(inert::line(&e).into_owned());
                return false;
            }
            StreamItem::Event(e) => {
                *since = Some(e.seq);
                if json {
                    match inert::json(&e) {
                        Ok(line) => line,
                        Err(e) => {
                            output_error = Some(e.into());
                            return false;
                        }
                    }
                } else {
                    format_event(&e)
                }
            }
            StreamItem::Other(data) => inert::line(&data).into_owned(),
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
    let event_type = args
        .event_type
        .as_deref()
        .map(|t| {
            EventType::parse(t)
                .map_err(|e| anyhow::anyhow!("{e} — pass e.g. `--type agent_completed`"))
        })
        .transpose()?;
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
        let query = stream_query(&args, event_type.as_ref(), since);
        let lost = match open_stream(port, &keys, &query)? {
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
                    bail!(
                        "the sidecar refused the event stream (HTTP 410: {message}) — run `cco events --since {floor}` for what is kept"
                    );
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

    fn event(data: serde_json::Value) -> Event {
        serde_json::from_value(serde_json::json!({"event_id": "e", "seq": 7,
            "timestamp": "2026-01-01T00:00:00Z", "event_type": "agent_completed",
            "topic": "issue-1", "publisher": "py-1", "data": data}))
        .unwrap()
    }

    #[test]
    fn formats_an_event_on_one_line() {
        let line = format_event(&event(serde_json::json!({"status": "success"})));
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
    }

    #[test]
    fn event_data_cannot_steer_the_terminal() {
        let hostile = "\u{9b}2J\u{9d}0;pwned\u{7}\u{202e}\u{1b}[31m";
        let mut e = event(serde_json::json!({"note": hostile}));
        e.topic = format!("t{hostile}");
        e.publisher = format!("p{hostile}");
        let line = format_event(&e);
        assert!(!line.chars().any(inert::is_unsafe), "{line:?}");
        assert!(line.contains("\\u009b2J"), "{line}");
        let json = inert::json(&e).unwrap();
        assert!(!json.chars().any(inert::is_unsafe), "{json:?}");
        assert!(json.contains("\\u009b2J"), "{json}");
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e, "--json still carries the same text");
    }

    #[test]
    fn topics_are_checked_before_any_request() {
        assert!(check_topic("issue-42").is_ok());
        assert!(check_topic("a b").is_ok(), "the sidecar allows spaces");
        for bad in ["", "a\nb", &"x".repeat(MAX_TOPIC + 1)] {
            let e = check_topic(bad).unwrap_err().to_string();
            assert!(e.contains("--topic issue-42"), "{e}");
        }
    }
}
