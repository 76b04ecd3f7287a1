//! The hook's calls to the sidecar: authenticated, typed with the `api` wire types, and all
//! inside one deadline — below Claude's own kill — however many calls a hook makes.

use std::cell::OnceCell;
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::sidecar::{
    AgentStatusUpdate, Context, Event, PublishRequest, ResultList, ResultStored, ResultSubmission,
};
use crate::api::{AgentId, AgentType, ErrorBody, IssueId};
use crate::client::{self, ClientError, Request};

/// Longest part of an error answer kept for the log.
const MAX_ERROR_TEXT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(
        "not launched by cco (no ORCHESTRATOR_SIDECAR_URL / ORCHESTRATOR_TOKEN); start Claude with `cco`"
    )]
    NotLaunched,
    #[error("{0}")]
    ForeignListener(String),
    #[error(
        "{what}: the hook's deadline passed before the sidecar answered; raise hooks.timeout_ms or check `cco health`"
    )]
    Deadline { what: String },
    #[error("{what}: {source}")]
    Call {
        what: String,
        #[source]
        source: ClientError,
    },
    #[error("{what}: HTTP {status} {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: unexpected answer: {source}")]
    Decode {
        what: String,
        #[source]
        source: ClientError,
    },
}

impl HookError {
    /// The sidecar refused the body as too large (413).
    pub fn is_too_large(&self) -> bool {
        matches!(self, HookError::Status { status: 413, .. })
    }
}

/// The sidecar as one hook sees it.
pub struct Sidecar {
    port: Option<u16>,
    token: Option<String>,
    deadline: Instant,
    /// Whether the sidecar's port is owned by this user: read from /proc once per hook,
    /// however many calls it makes.
    owner_ok: OnceCell<Result<(), String>>,
}

impl Sidecar {
    pub fn new(port: Option<u16>, token: Option<String>, deadline: Instant) -> Sidecar {
        Sidecar {
            port,
            token,
            deadline,
            owner_ok: OnceCell::new(),
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// One authenticated JSON call, with what is left of the hook's deadline.
    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, HookError> {
        let what = format!("{method} {path}");
        let (Some(port), Some(token)) = (self.port, &self.token) else {
            return Err(HookError::NotLaunched);
        };
        // Never hand the token to a listener another user owns.
        self.owner_ok
            .get_or_init(|| client::check_listener_owner(port))
            .clone()
            .map_err(HookError::ForeignListener)?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HookError::Deadline { what });
        }
        let auth = format!("Bearer {token}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let req = Request {
            method,
            path,
            headers: &headers,
            body: body.as_deref(),
        };
        let resp = match client::send(client::local(port), &req, left) {
            Ok(resp) => resp,
            Err(ClientError::Timeout) if Instant::now() >= self.deadline => {
                return Err(HookError::Deadline { what });
            }
            Err(source) => return Err(HookError::Call { what, source }),
        };
        if !(200..300).contains(&resp.status) {
            let message = match resp.json::<ErrorBody>() {
                Ok(e) => format!("{}: {}", e.error.code, e.error.message),
                Err(_) => String::from_utf8_lossy(&resp.body).into_owned(),
            };
            return Err(HookError::Status {
                what,
                status: resp.status,
                message: message.chars().take(MAX_ERROR_TEXT).collect(),
            });
        }
        resp.json::<T>()
            .map_err(|source| HookError::Decode { what, source })
    }

    fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, HookError> {
        let bytes = serde_json::to_vec(body).expect("wire types serialize");
        self.call("POST", path, Some(bytes))
    }

    pub fn publish(
        &self,
        event_type: &str,
        publisher: &str,
        topic: &str,
        data: Value,
    ) -> Result<Event, HookError> {
        let req = PublishRequest {
            publisher: publisher.to_string(),
            topic: topic.to_string(),
            data,
            correlation_id: None,
        };
        self.post(&format!("/api/events/{event_type}"), &req)
    }

    pub fn agent_status(
        &self,
        agent_id: &AgentId,
        update: &AgentStatusUpdate,
    ) -> Result<(), HookError> {
        self.post::<_, serde::de::IgnoredAny>(&format!("/api/agents/{agent_id}/status"), update)
            .map(|_| ())
    }

    pub fn context(&self, issue: &IssueId, agent_type: &AgentType) -> Result<Context, HookError> {
        self.call("GET", &format!("/api/context/{issue}/{agent_type}"), None)
    }

    pub fn results(&self, issue: &IssueId) -> Result<ResultList, HookError> {
        self.call("GET", &format!("/api/results/{issue}"), None)
    }

    pub fn store_result(&self, result: &ResultSubmission) -> Result<ResultStored, HookError> {
        self.post("/api/results", result)
    }
}
