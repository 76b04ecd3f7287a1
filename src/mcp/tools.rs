//! The MCP tools: hand-written, compact JSON schemas (their bytes ride on every model turn)
//! and short JSON text results. Each tool is one call of the typed sidecar client, run on the
//! blocking pool, with the caller's own token and issue.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::http::request::Parts;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Caller;
use crate::api::leases::{Lease, LeaseMode, ReserveRequest};
use crate::api::sidecar::{Event, PublishRequest};
use crate::api::{AgentId, AgentType, EventType};
use crate::client::{ServiceError, SidecarClient};
use crate::server::Stopping;

/// Longest `wait` a tool call may ask for: under a minute, so no HTTP client or proxy on the
/// way gives up first.
pub const MAX_WAIT_MS: u64 = 55_000;
/// A `wait` without `timeout_ms`.
pub const DEFAULT_WAIT_MS: u64 = 30_000;
/// A `wait` is a series of sidecar long polls of at most this long: a poll runs on a blocking
/// thread, which the daemon's exit waits for, so this bounds how long a pending `wait` can
/// hold a stop (each slice costs one loopback request).
pub const WAIT_SLICE: Duration = Duration::from_secs(1);
pub use crate::api::MAIN_AGENT;

/// The tools, one handler per daemon; cheap to clone (rmcp makes one per request).
#[derive(Clone)]
pub struct CcoTools {
    sidecar_port: u16,
    stopping: Stopping,
}

/// What a tool call failed with: sent to the model as the tool's error text, which says
/// what to do.
#[derive(Debug, thiserror::Error)]
enum ToolError {
    #[error("{0}")]
    Args(String),
    #[error("{0}")]
    Sidecar(#[from] ServiceError),
    #[error("the cco daemon is stopping; call wait again with since={0}")]
    Stopping(u64),
    #[error("the cco daemon is stopping; call wait_all again")]
    StoppingJoin,
    #[error("internal error in the cco daemon; see `cco logs daemon`")]
    Internal,
}

#[derive(Debug, Deserialize)]
struct PublishArgs {
    event_type: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    agent: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WaitArgs {
    event_type: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct WaitAllArgs {
    #[serde(default)]
    agent_types: Option<Vec<String>>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct InboxArgs {
    #[serde(default)]
    agent: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReserveArgs {
    #[serde(default)]
    agent: Option<String>,
    paths: Vec<String>,
    #[serde(default)]
    mode: LeaseMode,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
struct ReleaseArgs {
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    lease_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResultsArgs {
    #[serde(default)]
    agent_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ContextArgs {
    agent_type: String,
}

fn schema(value: Value) -> Arc<JsonObject> {
    Arc::new(value.as_object().cloned().unwrap_or_default())
}

/// The tool list, built once. Descriptions say what an agent must know and no more.
pub fn definitions() -> &'static [Tool] {
    static TOOLS: OnceLock<Vec<Tool>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let agent = json!({"type": "string", "description": "your agent id; omit in the main session"});
        let event_type = json!({"type": "string", "description": "e.g. api_ready"});
        let agent_type = json!({"type": "string"});
        vec![
            Tool::new(
                "publish",
                "Publish an event to this issue's agents. topic: who it is for (an agent id or type); omit for everyone. Returns its seq.",
                schema(json!({
                    "type": "object",
                    "properties": {
                        "event_type": event_type,
                        "topic": {"type": "string"},
                        "data": {"description": "any JSON payload"},
                        "agent": agent,
                    },
                    "required": ["event_type"],
                })),
            ),
            Tool::new(
                "wait",
                "Wait for events of event_type on this issue (optionally one topic). Pass since=next_since from your last wait or publish's seq to miss none. Returns {events,next_since}; events is empty on timeout.",
                schema(json!({
                    "type": "object",
                    "properties": {
                        "event_type": event_type,
                        "topic": {"type": "string"},
                        "since": {"type": "integer", "minimum": 0},
                        "timeout_ms": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS, "default": DEFAULT_WAIT_MS},
                    },
                    "required": ["event_type"],
                })),
            ),
            Tool::new(
                "results",
                "Results this issue's finished agents stored (all, or one agent_type's).",
                schema(json!({
                    "type": "object",
                    "properties": {"agent_type": agent_type},
                })),
            ),
            Tool::new(
                "context",
                "Project context for an agent type: relevant files, git state, earlier results.",
                schema(json!({
                    "type": "object",
                    "properties": {"agent_type": agent_type},
                    "required": ["agent_type"],
                })),
            ),
            Tool::new(
                "wait_all",
                "Wait until every agent of this issue (or of agent_types) has completed or failed. Returns {done,agents,missing_types} with each one's status and result summary; done is false on timeout.",
                schema(json!({
                    "type": "object",
                    "properties": {
                        "agent_types": {"type": "array", "items": {"type": "string"}},
                        "timeout_ms": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS, "default": DEFAULT_WAIT_MS},
                    },
                })),
            ),
            Tool::new(
                "agents",
                "This issue's agents and their states (started, running, completed, failed).",
                schema(json!({"type": "object", "properties": {}})),
            ),
            Tool::new(
                "inbox",
                "Events addressed to you (your id, your type, or the issue) since your last delivery; each is delivered once. Hooks also push them to you. Returns {events,more}.",
                schema(json!({"type": "object", "properties": {"agent": agent}})),
            ),
            Tool::new(
                "reserve",
                "Lease files before editing them: paths or globs relative to the project root. Others' edits of them are denied until you release or finish. Returns the lease, or granted:false with who holds what.",
                schema(json!({
                    "type": "object",
                    "properties": {
                        "agent": agent,
                        "paths": {"type": "array", "items": {"type": "string"}},
                        "mode": {"enum": ["exclusive", "shared"]},
                        "ttl_secs": {"type": "integer", "minimum": 1, "maximum": crate::sidecar::leases::MAX_TTL.as_secs(), "default": crate::sidecar::leases::DEFAULT_TTL.as_secs()},
                        "reason": {"type": "string"},
                    },
                    "required": ["paths"],
                })),
            ),
            Tool::new(
                "release",
                "End your lease lease_id, or all your leases without it.",
                schema(json!({
                    "type": "object",
                    "properties": {"agent": agent, "lease_id": {"type": "string"}},
                })),
            ),
            Tool::new(
                "reservations",
                "This issue's live file leases: who holds which paths, why, until when.",
                schema(json!({"type": "object", "properties": {}})),
            ),
        ]
    })
}

fn args<T: DeserializeOwned>(tool: &str, arguments: Option<JsonObject>) -> Result<T, ToolError> {
    serde_json::from_value(Value::Object(arguments.unwrap_or_default()))
        .map_err(|e| ToolError::Args(format!("{tool}: {e}")))
}

fn parse_id<T>(
    what: &str,
    s: &str,
    parse: fn(&str) -> Result<T, crate::api::IdError>,
) -> Result<T, ToolError> {
    parse(s).map_err(|e| ToolError::Args(format!("{what}: {e}")))
}

/// An event as a tool answers it: what a model needs, without ids it cannot use.
fn brief(e: &Event) -> Value {
    json!({
        "seq": e.seq,
        "event_type": e.event_type,
        "publisher": e.publisher,
        "topic": e.topic,
        "data": e.data,
        "timestamp": e.timestamp,
    })
}

/// A lease as a tool answers it.
fn lease_brief(l: &Lease) -> Value {
    json!({
        "lease_id": l.lease_id,
        "agent_id": l.agent_id,
        "agent_type": l.agent_type,
        "paths": l.paths,
        "mode": l.mode,
        "reason": l.reason,
        "expires_at": l.expires_at,
    })
}

/// The `agent` argument: the caller's own id, or the main session's when it names none.
fn agent_arg(agent: Option<&str>) -> Result<AgentId, ToolError> {
    parse_id("agent", agent.unwrap_or(MAIN_AGENT), AgentId::parse)
}

/// The issue an event belongs to: the `issue_id` cco stamps into its data (the lifecycle and
/// result events carry it too).
fn issue_of(e: &Event) -> Option<&str> {
    e.data.get("issue_id").and_then(Value::as_str)
}

impl CcoTools {
    pub fn new(sidecar_port: u16, stopping: Stopping) -> CcoTools {
        CcoTools {
            sidecar_port,
            stopping,
        }
    }

    fn client(&self, caller: &Caller) -> SidecarClient {
        SidecarClient::new(self.sidecar_port).with_token(caller.token.clone())
    }

    /// Runs one blocking sidecar call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        caller: &Caller,
        call: impl FnOnce(SidecarClient) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ToolError> {
        let client = self.client(caller);
        match tokio::task::spawn_blocking(move || call(client)).await {
            Ok(answer) => answer.map_err(ToolError::from),
            Err(e) => {
                tracing::error!(error = %e, "MCP tool's sidecar call failed");
                Err(ToolError::Internal)
            }
        }
    }

    async fn run(
        &self,
        caller: &Caller,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<Value, ToolError> {
        let issue = caller.issue.clone();
        match name {
            "publish" => {
                let a: PublishArgs = args(name, arguments)?;
                let event_type = parse_id("event_type", &a.event_type, EventType::parse)?;
                let publisher = match a.agent.as_deref() {
                    Some(s) => parse_id("agent", s, AgentId::parse)?.to_string(),
                    None => MAIN_AGENT.to_string(),
                };
                // The journal has no issue column: the issue travels in the data, where the
                // lifecycle events carry it too and `wait` looks for it.
                let data = match a.data {
                    Value::Object(mut map) => {
                        map.insert("issue_id".into(), json!(issue));
                        Value::Object(map)
                    }
                    Value::Null => json!({"issue_id": issue}),
                    other => json!({"issue_id": issue, "value": other}),
                };
                let req = PublishRequest {
                    publisher,
                    topic: a.topic.unwrap_or_else(|| issue.to_string()),
                    data,
                    correlation_id: None,
                };
                let event = self
                    .blocking(caller, move |c| c.publish(&event_type, &req))
                    .await?;
                Ok(json!({"seq": event.seq, "topic": event.topic}))
            }
            "wait" => {
                let a: WaitArgs = args(name, arguments)?;
                let event_type = parse_id("event_type", &a.event_type, EventType::parse)?;
                let timeout =
                    Duration::from_millis(a.timeout_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
                self.wait(caller, event_type, a.topic, a.since, timeout)
                    .await
            }
            "results" => {
                let a: ResultsArgs = args(name, arguments)?;
                let only = match a.agent_type.as_deref() {
                    Some(s) => Some(parse_id("agent_type", s, AgentType::parse)?),
                    None => None,
                };
                let list = self.blocking(caller, move |c| c.results(&issue)).await?;
                let results: Vec<Value> = list
                    .results
                    .iter()
                    .filter(|r| only.as_ref().is_none_or(|t| r.agent_type == *t))
                    .map(|r| {
                        json!({
                            "agent_type": r.agent_type,
                            "agent_id": r.agent_id,
                            "result": r.result,
                            "stored_at": r.stored_at,
                        })
                    })
                    .collect();
                Ok(json!({"issue_id": list.issue_id, "results": results}))
            }
            "context" => {
                let a: ContextArgs = args(name, arguments)?;
                let ty = parse_id("agent_type", &a.agent_type, AgentType::parse)?;
                let context = self
                    .blocking(caller, move |c| c.context(&issue, &ty))
                    .await?;
                Ok(serde_json::to_value(context).expect("wire types serialize"))
            }
            "agents" => {
                let list = self.blocking(caller, |c| c.agents()).await?;
                let agents: Vec<Value> = list
                    .agents
                    .iter()
                    .filter(|a| a.issue_id == caller.issue)
                    .map(|a| {
                        json!({
                            "agent_id": a.agent_id,
                            "agent_type": a.agent_type,
                            "status": a.status,
                            "message": a.message,
                            "updated_at": a.updated_at,
                        })
                    })
                    .collect();
                Ok(json!({"issue_id": caller.issue, "agents": agents}))
            }
            "wait_all" => {
                let a: WaitAllArgs = args(name, arguments)?;
                let types = a
                    .agent_types
                    .unwrap_or_default()
                    .iter()
                    .map(|t| parse_id("agent_types", t, AgentType::parse))
                    .collect::<Result<Vec<_>, _>>()?;
                let timeout =
                    Duration::from_millis(a.timeout_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
                self.wait_all(caller, types, timeout).await
            }
            "inbox" => {
                let a: InboxArgs = args(name, arguments)?;
                let agent = agent_arg(a.agent.as_deref())?;
                let batch = self
                    .blocking(caller, move |c| {
                        c.inbox_within(&issue, &agent, None, None, Some("mcp"))
                    })
                    .await?;
                let events: Vec<Value> = batch.events.iter().map(brief).collect();
                Ok(json!({"events": events, "more": batch.more}))
            }
            "reserve" => {
                let a: ReserveArgs = args(name, arguments)?;
                let req = ReserveRequest {
                    agent: agent_arg(a.agent.as_deref())?,
                    paths: a.paths,
                    mode: a.mode,
                    ttl_secs: a.ttl_secs,
                    reason: a.reason,
                };
                let out = self
                    .blocking(caller, move |c| c.reserve(&issue, &req))
                    .await?;
                match out.lease {
                    Some(lease) if out.granted => {
                        Ok(json!({"granted": true, "lease": lease_brief(&lease)}))
                    }
                    _ => {
                        let held: Vec<String> = out
                            .conflicts
                            .iter()
                            .map(crate::sidecar::leases::describe)
                            .collect();
                        Ok(json!({
                            "granted": false,
                            "conflicts": held,
                            "next": "call mcp__cco__wait (e.g. agent_completed of the holder) or coordinate via mcp__cco__publish, then reserve again",
                        }))
                    }
                }
            }
            "release" => {
                let a: ReleaseArgs = args(name, arguments)?;
                let agent = agent_arg(a.agent.as_deref())?;
                let released = self
                    .blocking(caller, move |c| match a.lease_id {
                        Some(id) => c.release_lease(&issue, &id, Some(&agent)),
                        None => c.release_agent_leases(&issue, &agent),
                    })
                    .await?;
                Ok(json!({"released": released.released}))
            }
            "reservations" => {
                let list = self
                    .blocking(caller, move |c| c.leases(Some(&issue)))
                    .await?;
                let leases: Vec<Value> = list.leases.iter().map(lease_brief).collect();
                Ok(json!({"leases": leases}))
            }
            other => Err(ToolError::Args(format!(
                "no tool {other:?}; cco has {}",
                definitions()
                    .iter()
                    .map(|t| t.name.as_ref())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The sidecar's join (`GET /api/agents/wait_all/{issue}`), asked in slices so that a
    /// stopping daemon answers at once; the last slice's answer is the tool's.
    async fn wait_all(
        &self,
        caller: &Caller,
        types: Vec<AgentType>,
        timeout: Duration,
    ) -> Result<Value, ToolError> {
        let deadline = Instant::now() + timeout;
        let mut stopping = self.stopping.clone();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (issue, t) = (caller.issue.clone(), types.clone());
            let poll = self.blocking(caller, move |c| {
                c.wait_all(&issue, &t, left.min(WAIT_SLICE))
            });
            let answer = tokio::select! {
                a = poll => a?,
                _ = stopping.wait() => return Err(ToolError::StoppingJoin),
            };
            if answer.done || left <= WAIT_SLICE {
                let mut v = serde_json::to_value(&answer).expect("wire types serialize");
                if let Some(m) = v.as_object_mut() {
                    m.remove("issue_id");
                }
                return Ok(v);
            }
        }
    }

    /// Long-polls the sidecar until an event of this issue arrives or `timeout` passes.
    /// Other issues' events move the cursor on without ending the wait.
    async fn wait(
        &self,
        caller: &Caller,
        event_type: EventType,
        topic: Option<String>,
        since: Option<u64>,
        timeout: Duration,
    ) -> Result<Value, ToolError> {
        let deadline = Instant::now() + timeout;
        let mut cursor = since;
        let mut stopping = self.stopping.clone();
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .min(WAIT_SLICE);
            let (ty, t) = (event_type.clone(), topic.clone());
            let poll = self.blocking(caller, move |c| c.wait(&ty, cursor, t.as_deref(), left));
            let batch = tokio::select! {
                b = poll => b?,
                _ = stopping.wait() => return Err(ToolError::Stopping(cursor.unwrap_or(0))),
            };
            let events: Vec<Value> = batch
                .events
                .iter()
                .filter(|e| issue_of(e) == Some(caller.issue.as_str()))
                .map(brief)
                .collect();
            cursor = Some(batch.next_since);
            if !events.is_empty() || Instant::now() >= deadline {
                return Ok(json!({"events": events, "next_since": batch.next_since}));
            }
        }
    }
}

fn text_result(result: Result<Value, ToolError>) -> CallToolResult {
    match result {
        Ok(v) => CallToolResult::success(vec![ContentBlock::text(v.to_string())]),
        Err(e) => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
    }
}

impl ServerHandler for CcoTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new(super::MCP_SERVER_NAME, env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(definitions().to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        definitions().iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // `authorize` put the caller in the HTTP request; rmcp hands its parts over.
        let caller = context
            .extensions
            .get::<Parts>()
            .and_then(|p| p.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("no authorized caller", None))?;
        let result = self.run(&caller, &request.name, request.arguments).await;
        if let Err(e) = &result {
            tracing::debug!(tool = %request.name, issue = %caller.issue, error = %e, "MCP tool failed");
        }
        Ok(text_result(result).into())
    }
}
