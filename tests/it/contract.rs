//! The wire contract is real: a live sidecar's answers — including the ones its hot paths
//! build by hand (context, results, publish, wait, stream) — decode into the `api` types
//! through the typed client, and re-encode to exactly what was sent (no field lost).

use std::time::Duration;

use cco::api::sidecar::{
    AgentState, AgentStatusUpdate, Context, Event, EventBatch, PublishRequest, ResultList,
    ResultSubmission,
};
use cco::api::{AgentId, AgentType, EventType, IssueId};
use cco::client::{ServiceError, SidecarClient, StreamItem, StreamQuery};
use serde::Serialize;
use serde_json::{Value, json};

use crate::common::{Env, http};

fn token(env: &Env, project: &std::path::Path) -> String {
    let out = env.run(["token", "--project", project.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The raw answer to a GET, as JSON.
fn raw(port: u16, token: &str, path: &str) -> Value {
    let auth = format!("Bearer {token}");
    let (status, body) = http(port, "GET", path, &[("Authorization", &auth)], None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// What the typed value encodes to is what the server sent.
fn same<T: Serialize>(typed: &T, raw: &Value, what: &str) {
    assert_eq!(
        &serde_json::to_value(typed).unwrap(),
        raw,
        "{what} lost or changed a field"
    );
}

#[test]
fn hand_built_answers_decode_into_the_shared_types() {
    let env = Env::new();
    let _sidecar = env.start("sidecar");
    let project = env.tmp.path().join("project");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(project.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    let project = std::fs::canonicalize(project).unwrap();
    let t = token(&env, &project);
    let port = env.sidecar_port;
    let client = SidecarClient::new(port).with_token(t.clone());
    let issue = IssueId::parse("issue-7").unwrap();
    let agent_type = AgentType::parse("rust-specialist").unwrap();
    let agent_id = AgentId::parse("rust-specialist-1").unwrap();

    let health = client.health().unwrap();
    assert_eq!(health.status, "healthy");

    let record = client
        .set_agent_status(
            &agent_id,
            &AgentStatusUpdate {
                status: AgentState::Started,
                agent_type: agent_type.clone(),
                issue_id: issue.clone(),
                message: None,
            },
        )
        .unwrap();
    assert_eq!(record.status, AgentState::Started);

    let stored = client
        .store_result(&ResultSubmission {
            agent_id: agent_id.clone(),
            agent_type: agent_type.clone(),
            issue_id: issue.clone(),
            result: json!({"status": "success", "summary": "done"}),
        })
        .unwrap();
    assert!(stored.stored && stored.seq.is_some());

    let step = EventType::parse("step_done").unwrap();
    let published: Event = client
        .publish(
            &step,
            &PublishRequest {
                publisher: "tester".into(),
                topic: "issue-7".into(),
                data: json!({"n": 1}),
                correlation_id: Some("c-1".into()),
            },
        )
        .unwrap();
    assert_eq!(published.correlation_id.as_deref(), Some("c-1"));

    let list: ResultList = client.results(&issue).unwrap();
    assert_eq!(list.results.len(), 1);
    same(
        &list,
        &raw(port, &t, "/api/results/issue-7"),
        "GET /api/results",
    );

    let ctx: Context = client.context(&issue, &agent_type).unwrap();
    assert_eq!(ctx.previous_results.len(), 1);
    assert_eq!(ctx.project.root, project.display().to_string());
    same(
        &ctx,
        &raw(port, &t, "/api/context/issue-7/rust-specialist"),
        "GET /api/context",
    );

    let batch: EventBatch = client
        .wait(&step, Some(0), Some("issue-7"), Duration::from_millis(100))
        .unwrap();
    assert_eq!(batch.events, vec![published.clone()]);
    same(
        &batch,
        &raw(port, &t, "/api/events/wait/step_done?since=0&timeout=100"),
        "GET /api/events/wait",
    );

    let mut streamed = Vec::new();
    client
        .stream(&StreamQuery {
            since: Some(0),
            ..StreamQuery::default()
        })
        .unwrap()
        .read(|item| {
            streamed.push(item);
            true
        })
        .unwrap();
    assert!(
        streamed.contains(&StreamItem::Event(Box::new(published))),
        "{streamed:?}"
    );
    assert!(
        streamed.iter().all(|i| matches!(i, StreamItem::Event(_))),
        "every stream message is an Event: {streamed:?}"
    );

    let agents = client.agents().unwrap();
    assert_eq!(agents.agents.len(), 1);

    // Refusals arrive as decoded ErrorBodies with their code.
    let stranger = SidecarClient::new(port).with_token("not-a-jwt");
    let e = stranger.agents().unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(401), Some("invalid_token")),
        "{e}"
    );
    let e = client
        .stream(&StreamQuery {
            since: Some(999),
            ..StreamQuery::default()
        })
        .err()
        .unwrap();
    assert_eq!(e.code(), Some("cursor_ahead"), "{e}");
    assert!(matches!(
        SidecarClient::new(port).agents(),
        Err(ServiceError::NoToken)
    ));
}
