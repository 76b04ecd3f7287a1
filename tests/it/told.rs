//! What each agent was told (issue 12 §2): `GET /api/agents/{agent_id}` against a real
//! sidecar (the record of the SubagentStart context, inbox deliveries, the result, a
//! restart, the routes around it) and after a real Claude Code session with one sub-agent.

use std::time::{Duration, Instant};

use cco::api::sidecar::{AgentState, AgentStatusUpdate, PublishRequest, ResultSubmission};
use cco::api::told::{AgentDetail, ToldReport, hash};
use cco::api::{AgentId, AgentType, EventType, IssueId};
use cco::client::SidecarClient;
use serde_json::{Value, json};

use crate::claude::real_claude;
use crate::common::Env;
use crate::e2e::{env_for, project, run_bounded};
use crate::fake_anthropic::{FakeAnthropic, Reply, Rules};

/// How long a test waits for a record written after the answer (a readiness poll).
const RECORDED_WITHIN: Duration = Duration::from_secs(10);
/// Between two looks at the agent's record while waiting for it.
const POLL_EVERY: Duration = Duration::from_millis(20);

fn token(env: &Env, args: &[&str]) -> String {
    let out = env.run([&["token"][..], args].concat());
    assert!(
        out.status.success(),
        "cco token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The agent's detail once `ready` holds for it, failing after [`RECORDED_WITHIN`].
fn detail_when(
    c: &SidecarClient,
    agent: &AgentId,
    ready: impl Fn(&AgentDetail) -> bool,
) -> AgentDetail {
    let start = Instant::now();
    loop {
        let d = c.agent(agent).unwrap();
        if ready(&d) {
            return d;
        }
        assert!(
            start.elapsed() < RECORDED_WITHIN,
            "not recorded within {RECORDED_WITHIN:?}: {d:#?}"
        );
        std::thread::sleep(POLL_EVERY);
    }
}

fn get(env: &Env, token: &str, path: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (status, body) = crate::common::http(
        env.sidecar_port,
        "GET",
        path,
        &[("Authorization", &auth)],
        None,
    );
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn the_agent_route_shows_what_it_was_told_and_keeps_it_across_a_restart() {
    let env = Env::new();
    let mut sidecar = env.start("sidecar");
    let project = project(&env);
    let t = token(&env, &["--project", project.to_str().unwrap()]);
    let c = SidecarClient::new(env.sidecar_port).with_token(&t);
    let issue = IssueId::parse("issue-7").unwrap();
    let (agent, ty) = (
        AgentId::parse("agent-a").unwrap(),
        AgentType::parse("rust-specialist").unwrap(),
    );
    let update = |status| AgentStatusUpdate {
        status,
        agent_type: ty.clone(),
        issue_id: issue.clone(),
        message: None,
    };
    c.set_agent_status(&agent, &update(AgentState::Started))
        .unwrap();

    // Registered, told nothing yet.
    let d = c.agent(&agent).unwrap();
    assert_eq!(d.agent.agent_id, agent);
    assert_eq!(d.agent.status, AgentState::Started);
    assert!(d.told.context.is_none() && d.told.note.is_none() && d.told.inbox.is_empty());
    assert!(d.result.is_none());

    // Unknown is a JSON 404, a bad id a 400; `wait_all` is neither shadowed nor shadows.
    let (status, body) = get(&env, &t, "/api/agents/nobody");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let (status, body) = get(&env, &t, "/api/agents/bad..id");
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(&env, &t, "/api/agents/wait_all/issue-7?timeout=0");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issue_id"], "issue-7", "the join answered: {body}");
    let (status, body) = get(&env, &t, "/api/agents/wait_all");
    assert_eq!(status, 404, "an agent id like any other: {body}");

    // The SubagentStart text, rendered as the hook renders it from the sidecar's context.
    let ctx = c.context(&issue, &ty).unwrap();
    let text = cco::api::inert::block(&cco::hook::render_context(
        Some(&ctx.project),
        &ctx.previous_results,
        ctx.truncated,
        &issue,
        &ty,
        cco::hook::CONTEXT_BUDGET,
    ))
    .into_owned();
    let recorded = c
        .report_told(
            &agent,
            &ToldReport {
                issue_id: issue.clone(),
                agent_type: ty.clone(),
                via: "SubagentStart".into(),
                text: text.clone(),
                budget: cco::hook::CONTEXT_BUDGET as u64,
            },
        )
        .unwrap();
    assert_eq!(recorded.hash, hash(text.as_bytes()));
    // Not under another type than the registry's.
    let wrong = ToldReport {
        issue_id: issue.clone(),
        agent_type: AgentType::parse("debugger").unwrap(),
        via: "SubagentStart".into(),
        text: "x".into(),
        budget: 1,
    };
    assert_eq!(
        c.report_told(&agent, &wrong).unwrap_err().status(),
        Some(403)
    );
    assert_eq!(recorded.bytes, text.len() as u64);
    let lib = recorded
        .files
        .iter()
        .find(|f| f.path == "src/lib.rs")
        .unwrap_or_else(|| panic!("src/lib.rs not recorded: {recorded:#?}"));
    let content = std::fs::read(project.join("src/lib.rs")).unwrap();
    assert_eq!(lib.hash, hash(&content));

    // An event for its type, delivered through a hook's inbox read, is recorded with it.
    let publisher = SidecarClient::new(env.sidecar_port).with_token(&t);
    let sent = publisher
        .publish(
            &EventType::parse("review_request").unwrap(),
            &PublishRequest {
                publisher: "main".into(),
                topic: ty.to_string(),
                data: json!({"please": "look at src/lib.rs"}),
                correlation_id: None,
            },
        )
        .unwrap();
    let batch = c
        .inbox_within(&issue, &agent, None, None, Some("PostToolUse"))
        .unwrap();
    assert_eq!(batch.events.len(), 1);
    let (status, body) = get(&env, &t, "/api/inbox/issue-7/agent-a?via=no%20spaces");
    assert_eq!(status, 400, "{body}");
    let d = detail_when(&c, &agent, |d| !d.told.inbox.is_empty());
    let got = &d.told.inbox[0];
    assert_eq!(
        (
            got.seq,
            got.event_type.as_str(),
            got.topic.as_str(),
            got.via.as_str()
        ),
        (sent.seq, "review_request", "rust-specialist", "PostToolUse")
    );

    // Its result is part of the answer.
    c.store_result(&ResultSubmission {
        agent_id: agent.clone(),
        agent_type: ty.clone(),
        issue_id: issue.clone(),
        result: json!({"status": "success", "summary": "done"}),
    })
    .unwrap();
    c.set_agent_status(&agent, &update(AgentState::Completed))
        .unwrap();

    // Durable: a restarted sidecar answers the same.
    drop(sidecar);
    sidecar = env.start("sidecar");
    let after = c.agent(&agent).unwrap();
    assert_eq!(after.told.context.as_ref(), Some(&recorded));
    assert_eq!(after.told.inbox, d.told.inbox);
    assert_eq!(after.result.unwrap().result["summary"], "done");
    assert_eq!(after.agent.status, AgentState::Completed);

    // A token bound to another issue may not read it.
    let other = SidecarClient::new(env.sidecar_port).with_token(token(
        &env,
        &["--issue", "issue-8", "--project", project.to_str().unwrap()],
    ));
    assert_eq!(other.agent(&agent).unwrap_err().status(), Some(403));

    // `cco agents show`: a type's definition as before, an id's record, an unknown name's
    // error; with the sidecar down, the error says so and how to check it.
    let shown = env.run(["agents", "show", "agent-a"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("agent agent-a (rust-specialist) on issue issue-7: completed"),
        "{text}"
    );
    assert!(
        text.contains("file   src/lib.rs") && text.contains("via PostToolUse"),
        "{text}"
    );
    let def = env.run(["agents", "show", "rust-specialist"]);
    assert!(
        String::from_utf8_lossy(&def.stdout).starts_with("---\n"),
        "a definition"
    );
    let unknown = env.run(["agents", "show", "nobody"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no agent named \"nobody\""));
    drop(sidecar);
    let down = env.run(["agents", "show", "agent-a"]);
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(!down.status.success());
    assert!(
        err.contains("does not answer") && err.trim_end().ends_with("`cco daemon start`"),
        "{err}"
    );
}

const AGENT_TYPE: &str = "rust-specialist";
const CONTEXT_HEADING: &str = "# cco context for";
/// How the SubagentStart note (issue 10) begins.
const NOTE_START: &str = "[cco] You are agent";

#[test]
fn a_real_session_records_the_context_its_subagent_received() {
    let Some(claude) = real_claude() else { return };
    let fake = FakeAnthropic::with_rules(
        Rules::new()
            .when(|c| c.is_subagent(), Reply::text("SUB-DONE: looked at the parser"))
            .when(|c| c.has_tool_result(), Reply::text("MAIN-DONE"))
            .otherwise(Reply::tool_use(
                "Agent",
                format!(
                    r#"{{"subagent_type":"{AGENT_TYPE}","description":"Review the parser","prompt":"Review it.","run_in_background":false}}"#
                ),
            )),
    );
    let env = env_for(&claude, &fake);
    let _daemon = env.start("daemon");
    let mut sidecar = env.start("sidecar");
    let project = project(&env);
    let out = run_bounded(
        &env,
        &project,
        &["--issue", "told-1", "-p", "review"],
        &fake,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let t = token(&env, &[]);
    let c = SidecarClient::new(env.sidecar_port).with_token(&t);
    let agents = c.agents().unwrap().agents;
    let agent = agents
        .iter()
        .find(|a| a.agent_type.as_str() == AGENT_TYPE && a.issue_id.as_str() == "told-1")
        .unwrap_or_else(|| panic!("no {AGENT_TYPE} registered: {agents:#?}"))
        .agent_id
        .clone();
    let d = detail_when(&c, &agent, |d| d.told.context.is_some());
    let told = d.told.context.clone().unwrap();
    assert!(told.bytes > 0);
    assert_eq!(told.budget, cco::hook::CONTEXT_BUDGET as u64);
    let paths: Vec<&str> = told.files.iter().map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"src/lib.rs"), "{paths:?}");
    assert_eq!(d.result.as_ref().unwrap().result["status"], "success");

    // The hash is of the text the sub-agent's request carried: its first `bytes` bytes from
    // the context's heading on.
    let calls = fake.calls();
    let sub = calls
        .iter()
        .find(|c| c.is_subagent())
        .expect("a sub-agent call");
    let received = sub.system_messages_text();
    let start = received
        .find(CONTEXT_HEADING)
        .unwrap_or_else(|| panic!("no context in the sub-agent's request:\n{received}"));
    let end = start + told.bytes as usize;
    assert!(end <= received.len(), "{told:#?}\n{received}");
    assert_eq!(
        hash(&received.as_bytes()[start..end]),
        told.hash,
        "the recorded hash is not of what the sub-agent received:\n{}",
        &received[start..end]
    );
    // The note before the context (its id, issue and tools), when the hook sends one, is
    // recorded apart with the hash of what was received.
    match &d.told.note {
        Some(note) => {
            let before = &received.as_bytes()[..start];
            let before = before.strip_suffix(b"\n").unwrap_or(before);
            let from = before.len() - note.bytes as usize;
            assert_eq!(hash(&before[from..]), note.hash, "{received}");
            assert!(received[from..].starts_with(NOTE_START), "{received}");
        }
        None => assert!(
            !received.contains(NOTE_START),
            "note not recorded: {received}"
        ),
    }
    // …and the file hashes are of the project's files as they were.
    let lib = told.files.iter().find(|f| f.path == "src/lib.rs").unwrap();
    assert_eq!(
        lib.hash,
        hash(&std::fs::read(project.join("src/lib.rs")).unwrap())
    );

    // `cco agents show <id>`: the same record, as JSON and as text.
    let shown = env.run(["agents", "show", agent.as_str(), "--json"]);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown: AgentDetail = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown.told, d.told);
    let text = env.run(["agents", "show", agent.as_str()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("context at SubagentStart") && text.contains("src/lib.rs"),
        "{text}"
    );

    // Durable across a restart of the sidecar.
    drop(sidecar);
    sidecar = env.start("sidecar");
    assert_eq!(c.agent(&agent).unwrap().told, d.told);
    drop(sidecar);
}
