//! The sidecar as one hook sees it: the one typed `SidecarClient`, built once per hook with
//! the hook's single deadline — below Claude's own kill — however many calls the hook makes.

use std::time::Instant;

use serde_json::Value;

use crate::api::leases::{InboxBatch, LeaseCheck};
use crate::api::sidecar::{
    AgentStatusUpdate, Context, Event, PublishRequest, ResultList, ResultStored, ResultSubmission,
};
use crate::api::{AgentId, AgentType, EventType, IssueId};
use crate::client::sidecar::{ServiceError, SidecarClient};

/// Why a hook's call to the sidecar gave no answer; the hook turns each into its fallback.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(
        "not launched by cco (no ORCHESTRATOR_SIDECAR_URL / ORCHESTRATOR_TOKEN); start Claude with `cco`"
    )]
    NotLaunched,
    #[error(
        "{what}: the hook's deadline passed before the sidecar answered; raise hooks.timeout_ms or check `cco health`"
    )]
    Deadline { what: String },
    /// The sidecar refused, was unreachable, answered off-contract, or is not this user's.
    #[error("{what}: {source}")]
    Service {
        what: String,
        #[source]
        source: ServiceError,
    },
}

impl HookError {
    /// The sidecar refused the body as too large (413).
    pub fn is_too_large(&self) -> bool {
        matches!(self, HookError::Service { source, .. } if source.status() == Some(413))
    }
}

/// The sidecar as one hook sees it.
pub struct Sidecar {
    /// `None` when the hook was not launched by cco (no port or no token).
    client: Option<SidecarClient>,
    deadline: Instant,
}

impl Sidecar {
    pub fn new(port: Option<u16>, token: Option<String>, deadline: Instant) -> Sidecar {
        let client = port.zip(token).map(|(port, token)| {
            // Each call may use all that is left of the hook's budget, and no more.
            let budget = deadline.saturating_duration_since(Instant::now());
            SidecarClient::new(port)
                .with_token(token)
                .with_timeout(budget)
                .with_deadline(deadline)
        });
        Sidecar { client, deadline }
    }

    /// The daemon verified the port's owner: the client need not (see
    /// `SidecarClient::with_owner_verified`).
    pub fn owner_verified(mut self) -> Sidecar {
        self.client = self.client.map(SidecarClient::with_owner_verified);
        self
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Runs one call on the client; `what` (built only on failure) names it in the log.
    fn call<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&SidecarClient) -> Result<T, ServiceError>,
    ) -> Result<T, HookError> {
        let client = self.client.as_ref().ok_or(HookError::NotLaunched)?;
        f(client).map_err(|source| {
            let what = what();
            if source.is_timeout() && Instant::now() >= self.deadline {
                HookError::Deadline { what }
            } else {
                HookError::Service { what, source }
            }
        })
    }

    /// `event_type` is one of the hook's own names, valid by construction.
    pub fn publish(
        &self,
        event_type: &'static str,
        publisher: &str,
        topic: &str,
        data: Value,
    ) -> Result<Event, HookError> {
        let ty = EventType::parse(event_type).expect("the hook's event types are valid ids");
        let req = PublishRequest {
            publisher: publisher.to_string(),
            topic: topic.to_string(),
            data,
            correlation_id: None,
        };
        self.call(
            || format!("POST /api/events/{event_type}"),
            |c| c.publish(&ty, &req),
        )
    }

    pub fn agent_status(
        &self,
        agent_id: &AgentId,
        update: &AgentStatusUpdate,
    ) -> Result<(), HookError> {
        self.call(
            || format!("POST /api/agents/{agent_id}/status"),
            |c| c.set_agent_status(agent_id, update),
        )
        .map(|_| ())
    }

    pub fn context(&self, issue: &IssueId, agent_type: &AgentType) -> Result<Context, HookError> {
        self.call(
            || format!("GET /api/context/{issue}/{agent_type}"),
            |c| c.context(issue, agent_type),
        )
    }

    pub fn results(&self, issue: &IssueId) -> Result<ResultList, HookError> {
        self.call(|| format!("GET /api/results/{issue}"), |c| c.results(issue))
    }

    pub fn store_result(&self, result: &ResultSubmission) -> Result<ResultStored, HookError> {
        self.call(
            || "POST /api/results".to_string(),
            |c| c.store_result(result),
        )
    }

    /// Whether another running agent holds `path` exclusively (`agent`: who asks).
    pub fn lease_check(
        &self,
        issue: &IssueId,
        path: &str,
        agent: Option<&AgentId>,
    ) -> Result<LeaseCheck, HookError> {
        self.call(
            || format!("GET /api/leases/{issue}/check"),
            |c| c.check_lease(issue, path, agent),
        )
    }

    /// The events addressed to `agent` since its last delivery, as few as a push carries;
    /// `via` names the hook that delivers them, `limits` caps them (events, bytes).
    pub fn inbox(
        &self,
        issue: &IssueId,
        agent: &AgentId,
        agent_type: Option<&AgentType>,
        via: &str,
        limits: (usize, usize),
    ) -> Result<InboxBatch, HookError> {
        self.call(
            || format!("GET /api/inbox/{issue}/{agent}"),
            |c| c.inbox_within(issue, agent, agent_type, Some(limits), Some(via)),
        )
    }

    /// Ends every lease `agent` holds on `issue`.
    pub fn release_leases(&self, issue: &IssueId, agent: &AgentId) -> Result<(), HookError> {
        self.call(
            || format!("POST /api/leases/{issue}/agents/{agent}/release"),
            |c| c.release_agent_leases(issue, agent),
        )
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    /// Generous: only a broken client would wait this long for a loopback answer.
    const CALL_BUDGET: Duration = Duration::from_secs(5);

    /// A loopback server that reads one request's head, sends `reply` and closes.
    fn answer_once(reply: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(CALL_BUDGET)).unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(reply.as_bytes());
        });
        port
    }

    fn issue() -> IssueId {
        IssueId::parse("ISSUE-1").unwrap()
    }

    #[test]
    fn without_port_or_token_nothing_is_called() {
        let deadline = Instant::now() + CALL_BUDGET;
        for s in [
            Sidecar::new(None, Some("t".into()), deadline),
            Sidecar::new(Some(1), None, deadline),
        ] {
            assert!(matches!(s.results(&issue()), Err(HookError::NotLaunched)));
        }
    }

    #[test]
    fn a_spent_deadline_is_the_deadline_not_a_refusal() {
        // Bound but never accepting: the call must not even be tried.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let s = Sidecar::new(Some(port), Some("t".into()), Instant::now());
        let err = s.results(&issue()).unwrap_err();
        assert!(matches!(err, HookError::Deadline { .. }), "{err:?}");
        assert!(err.to_string().contains("deadline passed"), "{err}");
    }

    #[test]
    fn a_refusal_keeps_its_status_and_the_sidecars_message() {
        let port = answer_once(
            "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n\
             Content-Length: 63\r\nConnection: close\r\n\r\n\
             {\"error\":{\"code\":\"payload_too_large\",\"message\":\"body too big\"}}",
        );
        let s = Sidecar::new(Some(port), Some("t".into()), Instant::now() + CALL_BUDGET);
        let err = s.results(&issue()).unwrap_err();
        assert!(err.is_too_large(), "{err:?}");
        let HookError::Service { source, .. } = &err else {
            panic!("not a refusal: {err:?}");
        };
        assert_eq!(source.code(), Some("payload_too_large"));
        let text = err.to_string();
        assert!(
            text.starts_with("GET /api/results/ISSUE-1: HTTP 413"),
            "{text}"
        );
        assert!(text.contains("body too big"), "{text}");
    }
}
