//! Every range a config value must lie in, checked in one place: the file's values, the
//! `CCO_*` environment and the flags all go through these functions.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::Config;

/// Idle exit below this is refused: the socket stays with the manager, but each
/// re-activation costs a process start.
pub const MIN_IDLE_EXIT: Duration = Duration::from_secs(1);

/// `hooks.timeout_ms` bounds: zero makes every hook fail (a connect timeout cannot be
/// zero), and a hook Claude waits on for over a minute stalls the session.
pub const HOOK_TIMEOUT_MS: RangeInclusive<u64> = 100..=60_000;

/// Session tokens live at least a minute (shorter ones expire mid-start) and at most 30 days
/// (a leaked one must not be good forever); `launcher.token_ttl` and `cco token --ttl`.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// `sidecar.max_body_bytes`: below 1 KiB no result fits; above 64 MiB one request could
/// hold a large share of memory (each is buffered whole).
pub const MAX_BODY_BYTES: RangeInclusive<usize> = 1024..=64 * 1024 * 1024;
/// `sidecar.retention_events`: zero would drop every event as it is written.
pub const RETENTION_EVENTS: RangeInclusive<u64> = 1..=100_000_000;
/// `sidecar.retention_age`: zero would expire every event at once; ten years is forever.
pub const RETENTION_AGE: RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(3650 * 24 * 3600);
/// `sidecar.context_budget_bytes`: below 1 KiB no context section fits; above 16 MiB a
/// context no longer fits in the hook answer Claude reads.
pub const CONTEXT_BUDGET_BYTES: RangeInclusive<usize> = 1024..=16 * 1024 * 1024;

/// A value outside what a key allows; the text reads after the key's name
/// (`hooks.timeout_ms is 0; use 100 to 60000 (milliseconds)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is {value}; use {allowed}")]
pub struct OutOfRange {
    pub value: String,
    pub allowed: String,
}

/// A flag or variable that does not parse, or parses to a value out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("{value:?} is not {expected}: {cause}")]
    Syntax {
        value: String,
        expected: &'static str,
        cause: humantime::DurationError,
    },
    #[error("{value:?} is out of range: use {}", .range.allowed)]
    Range { value: String, range: OutOfRange },
}

fn within<T: PartialOrd + Display>(
    v: T,
    range: &RangeInclusive<T>,
    unit: &str,
) -> Result<(), OutOfRange> {
    if range.contains(&v) {
        Ok(())
    } else {
        Err(OutOfRange {
            value: v.to_string(),
            allowed: format!("{} to {}{unit}", range.start(), range.end()),
        })
    }
}

/// A duration in its largest whole unit (`30d`, `90s`), as people write them in the config;
/// humantime would print 31 days as "1month 13h 26m 24s".
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if d.subsec_nanos() != 0 => humantime::format_duration(d).to_string(),
        0 => "0s".into(),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

fn within_duration(v: Duration, range: &RangeInclusive<Duration>) -> Result<(), OutOfRange> {
    let show = show_duration;
    if range.contains(&v) {
        Ok(())
    } else {
        Err(OutOfRange {
            value: show(v),
            allowed: format!("{} to {}", show(*range.start()), show(*range.end())),
        })
    }
}

/// `idle_exit_after`: `None` (never) or at least [`MIN_IDLE_EXIT`].
pub fn check_idle_exit(idle: Option<Duration>) -> Result<Option<Duration>, OutOfRange> {
    match idle {
        Some(d) if d < MIN_IDLE_EXIT => Err(OutOfRange {
            value: show_duration(d),
            allowed: format!("\"never\" or at least {}", show_duration(MIN_IDLE_EXIT)),
        }),
        other => Ok(other),
    }
}

/// Checks a token lifetime against [`MIN_TOKEN_TTL`]..=[`MAX_TOKEN_TTL`].
pub fn check_token_ttl(ttl: Duration) -> Result<Duration, OutOfRange> {
    within_duration(ttl, &(MIN_TOKEN_TTL..=MAX_TOKEN_TTL)).map(|()| ttl)
}

/// `--idle-exit-after` / `CCO_IDLE_EXIT_AFTER`: `"never"` or a duration of at least
/// [`MIN_IDLE_EXIT`].
pub fn parse_idle_exit(s: &str) -> Result<Option<Duration>, ValueError> {
    let idle = super::idle::parse(s).map_err(|cause| ValueError::Syntax {
        value: s.into(),
        expected: "\"never\" or a duration such as \"10m\"",
        cause,
    })?;
    check_idle_exit(idle).map_err(|range| ValueError::Range {
        value: s.into(),
        range,
    })
}

/// Parses a `--ttl` flag ("1h", "7d") and checks it with [`check_token_ttl`]; a clap
/// `value_parser`.
pub fn parse_token_ttl(s: &str) -> Result<Duration, ValueError> {
    let ttl = humantime::parse_duration(s.trim()).map_err(|cause| ValueError::Syntax {
        value: s.trim().into(),
        expected: "a duration such as \"1h\" or \"7d\"",
        cause,
    })?;
    check_token_ttl(ttl).map_err(|range| ValueError::Range {
        value: s.trim().into(),
        range,
    })
}

/// The first value of `config` that is not allowed, as (key, what is wrong with it).
pub(super) fn validate(config: &Config) -> Result<(), (&'static str, OutOfRange)> {
    for (key, port) in [
        ("daemon.port", config.daemon.port),
        ("sidecar.port", config.sidecar.port),
    ] {
        within(port, &(1..=u16::MAX), "").map_err(|e| {
            let allowed = format!("a port from {}", e.allowed);
            (key, OutOfRange { allowed, ..e })
        })?;
    }
    if config.daemon.port == config.sidecar.port {
        return Err((
            "sidecar.port",
            OutOfRange {
                value: format!("{}, the same as daemon.port", config.sidecar.port),
                allowed: "a different port for each service \
                          (CCO_DAEMON_PORT / CCO_SIDECAR_PORT override the file)"
                    .into(),
            },
        ));
    }
    check_idle_exit(config.idle_exit_after).map_err(|e| ("idle_exit_after", e))?;
    let s = &config.sidecar;
    within(s.max_body_bytes, &MAX_BODY_BYTES, " (bytes)")
        .map_err(|e| ("sidecar.max_body_bytes", e))?;
    within(s.retention_events, &RETENTION_EVENTS, " (events)")
        .map_err(|e| ("sidecar.retention_events", e))?;
    within_duration(s.retention_age, &RETENTION_AGE).map_err(|e| ("sidecar.retention_age", e))?;
    within(s.context_budget_bytes, &CONTEXT_BUDGET_BYTES, " (bytes)")
        .map_err(|e| ("sidecar.context_budget_bytes", e))?;
    within(config.hooks.timeout_ms, &HOOK_TIMEOUT_MS, " (milliseconds)")
        .map_err(|e| ("hooks.timeout_ms", e))?;
    check_token_ttl(config.launcher.token_ttl).map_err(|e| ("launcher.token_ttl", e))?;
    for (key, dir) in [
        ("runtime_dir", &config.runtime_dir),
        ("data_dir", &config.data_dir),
    ] {
        if let Some(d) = dir.as_deref().filter(|d| !d.is_absolute()) {
            return Err((
                key,
                OutOfRange {
                    value: format!("{:?}", d.display().to_string()),
                    allowed: "an absolute path".into(),
                },
            ));
        }
    }
    if let Some(c) = config
        .claude_path
        .as_deref()
        .filter(|c| !super::is_program(c))
    {
        return Err((
            "claude_path",
            OutOfRange {
                value: format!("{:?}", c.display().to_string()),
                allowed: "an absolute path, or a bare name looked up on PATH".into(),
            },
        ));
    }
    config.store.validate()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn same_ports_refused() {
        let err = Config::load(Path::new("/nonexistent"), &|k| {
            (k == "CCO_SIDECAR_PORT").then(|| "3000".to_string())
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("a different port for each service")
        );
    }

    #[test]
    fn out_of_range_values_name_the_file_the_key_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        for (text, key, want) in [
            (
                "[daemon]\nport = 0\n",
                "daemon.port",
                "is 0; use a port from 1 to 65535",
            ),
            ("[sidecar]\nport = 0\n", "sidecar.port", "is 0"),
            (
                "[hooks]\ntimeout_ms = 0\n",
                "hooks.timeout_ms",
                "is 0; use 100 to 60000",
            ),
            (
                "[hooks]\ntimeout_ms = 60001\n",
                "hooks.timeout_ms",
                "is 60001",
            ),
            (
                "[launcher]\ntoken_ttl = \"30s\"\n",
                "launcher.token_ttl",
                "is 30s; use 1m to 30d",
            ),
            (
                "[launcher]\ntoken_ttl = \"31d\"\n",
                "launcher.token_ttl",
                "is 31d; use 1m to 30d",
            ),
            (
                "runtime_dir = \"rt\"\n",
                "runtime_dir",
                "; use an absolute path",
            ),
            (
                "data_dir = \"./data\"\n",
                "data_dir",
                "; use an absolute path",
            ),
            (
                "claude_path = \"bin/claude\"\n",
                "claude_path",
                "or a bare name looked up on PATH",
            ),
            (
                "[sidecar]\nretention_events = 0\n",
                "sidecar.retention_events",
                "is 0; use 1 to 100000000 (events)",
            ),
            (
                "[sidecar]\nretention_age = \"0s\"\n",
                "sidecar.retention_age",
                "is 0s; use 1m to 3650d",
            ),
            (
                "[sidecar]\ncontext_budget_bytes = 0\n",
                "sidecar.context_budget_bytes",
                "is 0; use 1024 to 16777216 (bytes)",
            ),
            (
                "[sidecar]\nmax_body_bytes = 1000000000000\n",
                "sidecar.max_body_bytes",
                "is 1000000000000; use 1024 to 67108864 (bytes)",
            ),
            (
                "[sidecar]\nmax_body_bytes = 1000\n",
                "sidecar.max_body_bytes",
                "is 1000; use 1024",
            ),
            (
                "idle_exit_after = \"0s\"\n",
                "idle_exit_after",
                "is 0s; use \"never\" or at least 1s",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Config::load(&path, &no_env).unwrap_err().to_string();
            let p = path.display();
            assert!(
                err.starts_with(&format!("bad config file {p}: {key} "))
                    && err.contains(want)
                    && err.ends_with(&format!(
                        "fix `{key}` in {p}, or remove it to get the default back"
                    )),
                "{text:?} → {err}"
            );
        }
        for ok in [
            "[hooks]\ntimeout_ms = 100\n[launcher]\ntoken_ttl = \"1m\"\n",
            "[hooks]\ntimeout_ms = 60000\n[launcher]\ntoken_ttl = \"30d\"\n",
            "claude_path = \"claude\"\nruntime_dir = \"/run/x\"\ndata_dir = \"/d\"\n",
            "claude_path = \"/opt/claude/bin/claude\"\n",
            "[sidecar]\nretention_events = 1\nretention_age = \"1m\"\ncontext_budget_bytes = 1024\nmax_body_bytes = 1024\n",
            "[sidecar]\nretention_events = 100000000\nretention_age = \"3650d\"\ncontext_budget_bytes = 16777216\nmax_body_bytes = 67108864\n",
        ] {
            std::fs::write(&path, ok).unwrap();
            Config::load(&path, &no_env).unwrap_or_else(|e| panic!("{ok:?} → {e}"));
        }
    }

    #[test]
    fn flags_parse_and_check_through_the_same_ranges() {
        assert_eq!(parse_token_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_token_ttl("30d"), Ok(MAX_TOKEN_TTL));
        assert_eq!(
            parse_token_ttl("31d").unwrap_err().to_string(),
            "\"31d\" is out of range: use 1m to 30d"
        );
        assert!(matches!(
            parse_token_ttl("10s"),
            Err(ValueError::Range { .. })
        ));
        let e = parse_token_ttl("soon").unwrap_err();
        assert!(matches!(e, ValueError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains("such as"), "{e}");

        assert_eq!(parse_idle_exit("never"), Ok(None));
        assert_eq!(parse_idle_exit("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(
            parse_idle_exit("0s").unwrap_err().to_string(),
            "\"0s\" is out of range: use \"never\" or at least 1s"
        );
        // The file's value goes through the same check.
        let c = Config {
            idle_exit_after: Some(Duration::ZERO),
            ..Config::default()
        };
        assert_eq!(
            validate(&c).unwrap_err(),
            (
                "idle_exit_after",
                check_idle_exit(Some(Duration::ZERO)).unwrap_err()
            )
        );
    }
}
