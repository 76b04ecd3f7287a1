//! Wire types shared by the CLI, the daemon and the sidecar. Changing a field here changes
//! the HTTP contract in DESIGN.md; keep them in step.

pub mod cost;
pub mod ids;
pub mod inert;
pub mod leases;
pub mod sidecar;
pub mod told;
pub mod views;

use serde::{Deserialize, Serialize};

pub use ids::{AgentId, AgentType, EventType, IdError, IssueId};

/// The agent id of a main session (a caller that does not name itself): its inbox, its
/// leases and what it publishes are kept under this id.
pub const MAIN_AGENT: &str = "main";

/// Every error response: `{"error": {"code": "...", "message": "..."}}`, plus the
/// structured fields a client acts on (never parsed out of `message`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                ..ErrorDetail::default()
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// `cursor_expired` (410): the oldest cursor the journal can still serve; restart
    /// from `since=floor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<u64>,
}

/// The part of `GET /health` both services answer with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthSummary {
    /// `healthy`, or what is wrong.
    pub status: String,
    pub service: String,
    pub version: String,
    pub uptime_seconds: u64,
}

/// `GET /health` on the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonHealth {
    pub status: String,
    pub service: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub runtime_dir: String,
    pub settings_generation: u64,
}

/// `GET /status` on the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub service: String,
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    /// `systemd`, `launchd` or `bound` (started by hand).
    pub listener: String,
    pub port: u16,
    pub sidecar_port: u16,
    pub runtime_dir: String,
    pub config_file: String,
    pub data_dir: String,
    pub settings_generation: u64,
    pub connections_open: u64,
    pub requests_served: u64,
    pub idle_exit_after_seconds: Option<u64>,
    pub memory_rss_mb: f64,
}

/// Resident set size of this process in MiB (Linux: /proc/self/statm; else peak RSS).
pub fn rss_mb() -> f64 {
    #[cfg(target_os = "linux")]
    {
        if let Ok(s) = std::fs::read_to_string("/proc/self/statm")
            && let Some(pages) = s
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
            return (pages * page) as f64 / (1024.0 * 1024.0);
        }
    }
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let kb = if cfg!(target_os = "macos") {
        usage.ru_maxrss as f64 / 1024.0
    } else {
        usage.ru_maxrss as f64
    };
    kb / 1024.0
}
