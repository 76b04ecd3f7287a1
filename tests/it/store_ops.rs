//! Operating the shared store: `cco store migrate` (SQLite journal → another SQLite data dir
//! and → a real NATS namespace; once, refusing foreign data without `--force`) and
//! `cco doctor`'s store checks against real servers (down, no JetStream, missing, wrong).

use std::time::Duration;

use cco::api::cost::{CostBy, CostRecord, CostRecords};
use cco::api::leases::{LeaseMode, ReserveRequest};
use cco::api::sidecar::{AgentState, AgentStatusUpdate, PublishRequest, ResultSubmission};
use cco::api::{AgentId, AgentType, EventType, IssueId};
use cco::client::SidecarClient;
use serde_json::json;

use crate::common::{Env, free_port};
use crate::nats_cluster::NatsCluster;

fn token(env: &Env) -> String {
    let out = env.run(["token"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn client(env: &Env) -> SidecarClient {
    SidecarClient::new(env.sidecar_port).with_token(token(env))
}

fn et(s: &str) -> EventType {
    EventType::parse(s).unwrap()
}

fn publish(c: &SidecarClient, event_type: &str, k: u64) {
    c.publish(
        &et(event_type),
        &PublishRequest {
            publisher: format!("agent-{k}"),
            topic: "issue-1".into(),
            data: json!({"k": k}),
            correlation_id: None,
        },
    )
    .unwrap();
}

/// A single-machine installation with history: 3 events, 2 results, 2 agents, 1 lease;
/// its sidecar stopped afterwards, as `cco daemon stop` leaves it.
fn source() -> Env {
    let env = Env::new();
    let mut sidecar = env.start("sidecar");
    let c = client(&env);
    publish(&c, "plan", 1);
    publish(&c, "handoff", 2);
    for (agent, issue) in [("rust-1", "issue-1"), ("tests-1", "issue-2")] {
        c.set_agent_status(
            &AgentId::parse(agent).unwrap(),
            &AgentStatusUpdate {
                status: AgentState::Running,
                agent_type: AgentType::parse("rust-specialist").unwrap(),
                issue_id: IssueId::parse(issue).unwrap(),
                message: None,
            },
        )
        .unwrap();
        c.store_result(&ResultSubmission {
            agent_id: AgentId::parse(agent).unwrap(),
            agent_type: AgentType::parse("rust-specialist").unwrap(),
            issue_id: IssueId::parse(issue).unwrap(),
            result: json!({"status": "success", "by": agent}),
        })
        .unwrap();
    }
    publish(&c, "plan", 3);
    let lease = c
        .reserve(
            &IssueId::parse("issue-1").unwrap(),
            &ReserveRequest {
                agent: AgentId::parse("rust-1").unwrap(),
                paths: vec!["src/lib.rs".into()],
                mode: LeaseMode::Exclusive,
                ttl_secs: Some(3600),
                reason: "migrating".into(),
            },
        )
        .unwrap();
    assert!(lease.granted);
    // Two requests of rust-1's (Claude Code's api_request records, as the daemon forwards).
    let records = (1..=2)
        .map(|n| CostRecord {
            key: format!("session-a#{n}"),
            session_id: "session-a".into(),
            prompt_id: None,
            agent_id: Some("rust-1".into()),
            query_source: None,
            model: "claude-test".into(),
            input_tokens: 100 * n,
            output_tokens: 10,
            cache_read_tokens: 0,
            cache_creation_tokens: 0,
            cost_usd: 0.25,
            duration_ms: 5,
            timestamp_ms: 1_700_000_000_000 + n,
        })
        .collect();
    let stored = c.store_cost_records(&CostRecords { records }).unwrap();
    assert_eq!(stored.stored, 2);
    assert!(sidecar.terminate().success());
    env
}

fn migrate(env: &Env, from: &Env, extra: &[&str]) -> (bool, String, String) {
    let from = from.data_dir();
    let mut args = vec!["store", "migrate", "--from", from.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = env.run(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The target after a migration: what its sidecar serves.
fn assert_migrated(target: &Env) {
    let _sidecar = target.start("sidecar");
    let c = client(target);
    let plans = c.wait(&et("plan"), Some(0), None, Duration::ZERO).unwrap();
    let ks: Vec<u64> = plans
        .events
        .iter()
        .map(|e| e.data["k"].as_u64().unwrap())
        .collect();
    assert_eq!(ks, vec![1, 3], "events in their order: {plans:?}");
    let handoff = c
        .wait(&et("handoff"), Some(0), None, Duration::ZERO)
        .unwrap();
    assert_eq!(handoff.events.len(), 1);
    assert!(handoff.events[0].seq > plans.events[0].seq);
    assert!(handoff.events[0].seq < plans.events[1].seq);
    let completed = c
        .wait(&et("agent_completed"), Some(0), None, Duration::ZERO)
        .unwrap();
    assert_eq!(completed.events.len(), 2, "each result announced once");
    for (agent, issue) in [("rust-1", "issue-1"), ("tests-1", "issue-2")] {
        let results = c.results(&IssueId::parse(issue).unwrap()).unwrap().results;
        assert_eq!(results.len(), 1, "{results:?}");
        assert_eq!(results[0].result["by"], agent);
    }
    let agents = c.agents().unwrap().agents;
    assert!(
        ["rust-1", "tests-1"]
            .iter()
            .all(|a| agents.iter().any(|r| r.agent_id.as_str() == *a)),
        "{agents:?}"
    );
    let leases = c
        .leases(Some(&IssueId::parse("issue-1").unwrap()))
        .unwrap()
        .leases;
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].paths, vec!["src/lib.rs".to_string()]);
    assert_eq!(leases[0].agent_id.as_str(), "rust-1");
    let cost = c.cost(None, CostBy::Agent, None).unwrap();
    assert_eq!(cost.total.requests, 2, "{cost:?}");
    assert_eq!(cost.total.input_tokens, 300, "{cost:?}");
}

/// Migrates `source` into `target` twice (the second copies nothing) and checks the result.
fn migrate_once(source: &Env, target: &Env) {
    let (ok, out, err) = migrate(target, source, &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("migrated 3 events, 2 results, 2 agents, 1 leases, 2 cost records"),
        "{out}"
    );
    let (ok, out, err) = migrate(target, source, &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("migrated 0 events, 0 results, 0 agents, 0 leases, 0 cost records"),
        "a second run copies nothing: {out}"
    );
    assert_migrated(target);
}

#[test]
fn migrate_copies_a_journal_into_another_data_dir_once() {
    let source = source();
    let target = Env::new();
    migrate_once(&source, &target);
}

#[test]
fn migrate_refuses_a_target_with_other_data_unless_forced_and_a_running_source() {
    let source = source();
    // The source's sidecar running: refused, with the fix.
    let running = source.start("sidecar");
    let target = Env::new();
    let (ok, out, err) = migrate(&target, &source, &[]);
    assert!(!ok, "{out}");
    assert!(err.contains("cco daemon stop"), "{err}");
    drop(running);

    // A target that has its own history: refused unless --force.
    let mut sidecar = target.start("sidecar");
    publish(&client(&target), "plan", 9);
    assert!(sidecar.terminate().success());
    let (ok, out, err) = migrate(&target, &source, &[]);
    assert!(!ok, "{out}");
    assert!(err.contains("cco store migrate --force"), "{err}");
    let (ok, out, err) = migrate(&target, &source, &["--force"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("migrated 3 events"), "{out}");
    // Once it holds this source's marker, a plain re-run is a no-op, not a refusal.
    let (ok, out, err) = migrate(&target, &source, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("migrated 0 events"), "{out}");
    let _sidecar = target.start("sidecar");
    let plans = client(&target)
        .wait(&et("plan"), Some(0), None, Duration::ZERO)
        .unwrap();
    let ks: Vec<u64> = plans
        .events
        .iter()
        .map(|e| e.data["k"].as_u64().unwrap())
        .collect();
    assert_eq!(ks, vec![9, 1, 3]);
}

#[test]
fn migrate_copies_a_journal_into_a_nats_namespace_once() {
    let Some(nats) = NatsCluster::single() else {
        return;
    };
    let source = source();
    let mut target = Env::new();
    target
        .set("CCO_STORE_BACKEND", "nats")
        .set("CCO_NATS_SERVERS", nats.servers_env())
        .set("CCO_STORE_NAMESPACE", "migrated");
    migrate_once(&source, &target);
    // NATS keeps each copied event's id and timestamp.
    let ids = |env: &Env| {
        let _sidecar = env.start("sidecar");
        let plans = client(env)
            .wait(&et("plan"), Some(0), None, Duration::ZERO)
            .unwrap();
        plans
            .events
            .into_iter()
            .map(|e| (e.event_id, e.timestamp))
            .collect::<Vec<_>>()
    };
    let copied = ids(&target);
    assert_eq!(copied.len(), 2);
    assert_eq!(copied, ids(&source));
}

fn doctor(env: &Env) -> String {
    let out = env.run(["doctor"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn doctor_checks_the_nats_store_and_names_each_fix() {
    // Nothing listens.
    let mut env = Env::new();
    let dead = free_port();
    env.set("CCO_STORE_BACKEND", "nats")
        .set("CCO_NATS_SERVERS", format!("nats://127.0.0.1:{dead}"))
        .set("CCO_STORE_NAMESPACE", "doc");
    let out = doctor(&env);
    assert!(
        out.contains(&format!("❌ NATS nats://127.0.0.1:{dead} cannot be used"))
            && out.contains("start that server, or fix store.nats_servers"),
        "{out}"
    );

    // A server without JetStream.
    let Some(plain) = NatsCluster::single_without_jetstream() else {
        return;
    };
    env.set("CCO_NATS_SERVERS", plain.servers_env());
    let out = doctor(&env);
    assert!(
        out.contains("❌ JetStream is not enabled on") && out.contains("nats-server -js"),
        "{out}"
    );

    // JetStream, but the sidecar has not made its stream and buckets yet.
    let Some(nats) = NatsCluster::single() else {
        return;
    };
    env.set("CCO_NATS_SERVERS", nats.servers_env());
    let out = doctor(&env);
    assert!(
        out.contains(&format!("✅ NATS {} answers", nats.nodes[0].url())),
        "{out}"
    );
    assert!(
        out.contains("stream doc_events does not exist yet") && out.contains("cco daemon restart"),
        "{out}"
    );
    // After the sidecar started: all there, with one replica.
    let sidecar = env.start("sidecar");
    let c = client(&env);
    crate::team::poll_until("the sidecar to reach NATS", || {
        c.wait(&et("ping"), Some(0), None, Duration::ZERO).is_ok()
    });
    let out = doctor(&env);
    for name in [
        "stream doc_events",
        "bucket doc_results",
        "bucket doc_agents",
        "bucket doc_leases",
        "bucket doc_inbox",
    ] {
        assert!(
            out.contains(&format!("✅ {name} is there (1 replica(s))")),
            "{name}: {out}"
        );
    }
    drop(sidecar);

    // A config that expects three replicas of what has one.
    env.set("CCO_STORE_REPLICAS", "3");
    let out = doctor(&env);
    assert!(
        out.contains("❌ stream doc_events has 1 replica(s), the config expects 3")
            && out.contains("--replicas 3"),
        "{out}"
    );
}
