//! Team scale against real `nats-server`s: two installations ("two machines": own homes,
//! ports and projects) on one namespace share events, results and leases; NATS going away
//! and coming back; a node of a 3-node R3 cluster SIGKILLed under 1,000 concurrent writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cco::api::leases::{LeaseMode, ReserveRequest};
use cco::api::sidecar::{
    AgentState, AgentStatusUpdate, Event, PublishRequest, ResultSubmission, StoredResult,
};
use cco::api::{AgentId, AgentType, EventType, IssueId};
use cco::client::SidecarClient;
use serde_json::{Value, json};

use crate::common::{Env, Service};
use crate::nats_cluster::{CLUSTER_SIZE, NatsCluster};

/// How long a readiness condition (connected, parked, replicated) may take before the test
/// fails; each is polled, never slept for.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Between two polls of a readiness condition.
const POLL: Duration = Duration::from_millis(20);
/// Writes in the node-kill run: publishes and result writes, half each.
const KILL_RUN_WRITES: usize = 1_000;
/// Concurrent writers in the node-kill run.
const KILL_RUN_WRITERS: usize = 16;
/// The node is killed once this many writes were acknowledged (mid-run, not before or after).
const KILL_AFTER_ACKS: usize = 200;
/// Bound of the whole node-kill run: a store that stops answering fails the test.
const KILL_RUN_DEADLINE: Duration = Duration::from_secs(120);
/// How stale a sidecar's view of the stream may be once its follower lost its consumer:
/// reads go to the stream leader after one stream-info refresh (1 s). The client
/// library alone would notice only after two missed idle heartbeats (10 s).
const FOLLOWER_LOST_WITHIN: Duration = Duration::from_secs(4);
/// How long the catch-up read after the node-kill run may retry: re-election, not more.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(5);
/// The most a hook may take while NATS is down: it must never block Claude.
const HOOK_FAST: Duration = Duration::from_secs(3);

/// One installation on the shared store: daemon, sidecar, project and a token bound to it.
struct Machine {
    env: Env,
    project: PathBuf,
    token: String,
    _daemon: Service,
    _sidecar: Service,
}

impl Machine {
    fn new(name: &str, servers: &str, namespace: &str, replicas: u8) -> Machine {
        let mut env = Env::new();
        env.set("CCO_STORE_BACKEND", "nats")
            .set("CCO_NATS_SERVERS", servers)
            .set("CCO_STORE_NAMESPACE", namespace)
            .set("CCO_STORE_REPLICAS", replicas.to_string());
        let project = env.tmp.path().join(format!("{name}-checkout"));
        std::fs::create_dir_all(project.join("src")).unwrap();
        std::fs::write(project.join("Cargo.toml"), "[package]\nname = \"p\"\n").unwrap();
        std::fs::write(project.join("src/lib.rs"), "pub fn a() {}\n").unwrap();
        let project = std::fs::canonicalize(project).unwrap();
        let daemon = env.start("daemon");
        let sidecar = env.start("sidecar");
        let out = env.run(["token", "--project", project.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let m = Machine {
            env,
            project,
            token,
            _daemon: daemon,
            _sidecar: sidecar,
        };
        m.wait_connected();
        m
    }

    fn client(&self) -> SidecarClient {
        SidecarClient::new(self.env.sidecar_port).with_token(&self.token)
    }

    /// Until the sidecar's store answers (it connects to NATS in the background).
    fn wait_connected(&self) {
        poll_until("the sidecar to reach NATS", || {
            self.client()
                .wait(&et("ping"), Some(0), None, Duration::ZERO)
                .is_ok()
        });
    }

    /// `cco hook pre-tool-use` for an edit of `file` by `agent`, through this machine's
    /// sidecar: the JSON answer (Null when the hook printed nothing) and how long it took.
    fn pre_tool_use(&self, issue: &str, file: &str, agent: &str) -> (Value, Duration) {
        let hooks =
            std::fs::read_to_string(self.env.runtime_dir().join("hooks-sealed.json")).unwrap();
        let input = json!({
            "session_id": "s-1", "hook_event_name": "PreToolUse", "cwd": self.project,
            "agent_id": agent, "tool_name": "Edit",
            "tool_input": {"file_path": self.project.join(file), "old_string": "a", "new_string": "b"},
        });
        let mut cmd = self.env.cmd(["hook", "pre-tool-use"]);
        cmd.env(
            "ORCHESTRATOR_SIDECAR_URL",
            format!("http://127.0.0.1:{}", self.env.sidecar_port),
        )
        .env("ORCHESTRATOR_TOKEN", &self.token)
        .env("ORCHESTRATOR_ISSUE_ID", issue)
        .env("ORCHESTRATOR_HOOKS_CONFIG", hooks);
        let start = Instant::now();
        let out = crate::common::run_with_stdin(&mut cmd, input.to_string().as_bytes());
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "a hook must exit 0: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let answer = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (answer, took)
    }

    /// Every `event_type` event after `since`, through as many answers as it takes.
    fn read_all(&self, event_type: &str, since: u64) -> Vec<Event> {
        let c = self.client();
        let mut out = Vec::new();
        let mut cursor = since;
        loop {
            let batch = c
                .wait(&et(event_type), Some(cursor), None, Duration::ZERO)
                .unwrap();
            if batch.events.is_empty() {
                return out;
            }
            cursor = batch.next_since;
            out.extend(batch.events);
        }
    }

    /// The newest seq of the shared journal as this machine sees it.
    fn head(&self) -> u64 {
        self.client()
            .wait(&et("head"), None, None, Duration::ZERO)
            .unwrap()
            .next_since
    }
}

fn et(s: &str) -> EventType {
    EventType::parse(s).unwrap()
}
fn issue(s: &str) -> IssueId {
    IssueId::parse(s).unwrap()
}

/// Polls `ready` until it holds; fails the test after [`READY_WITHIN`].
pub fn poll_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + READY_WITHIN;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "waited {READY_WITHIN:?} for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Until `m`'s sidecar has `n` parked long polls (its `/status` counts them).
fn wait_parked(m: &Machine, n: u64) {
    poll_until("a parked waiter", || {
        m.client()
            .status()
            .is_ok_and(|s| s.events.active_subscriptions >= n)
    });
}

/// A namespace of its own per test: the tests share no NATS, but names stay readable.
fn namespace(test: &str) -> String {
    format!("{test}{}", std::process::id() % 10_000)
}

#[test]
fn two_installations_share_events_results_context_and_leases() {
    let Some(nats) = NatsCluster::single() else {
        return;
    };
    let ns = namespace("two");
    let a = Machine::new("alice", &nats.servers_env(), &ns, 1);
    let b = Machine::new("bob", &nats.servers_env(), &ns, 1);
    let issue13 = issue("issue-13");

    // An event published on A wakes a waiter parked on B.
    let since = b.head();
    let waiter = {
        let c = b.client();
        std::thread::spawn(move || {
            c.wait(&et("handoff"), Some(since), Some("issue-13"), READY_WITHIN)
        })
    };
    wait_parked(&b, 1);
    let published = a
        .client()
        .publish(
            &et("handoff"),
            &PublishRequest {
                publisher: "alice-agent".into(),
                topic: "issue-13".into(),
                data: json!({"ready": "parser"}),
                correlation_id: None,
            },
        )
        .unwrap();
    let woken = waiter.join().unwrap().unwrap();
    assert_eq!(woken.events, vec![published.clone()], "B got A's event");
    assert_eq!(woken.next_since, published.seq);

    // A result stored on A is in B's results and in B's context for the next agent.
    let stored = a
        .client()
        .store_result(&ResultSubmission {
            agent_id: AgentId::parse("alice-rust-1").unwrap(),
            agent_type: AgentType::parse("rust-specialist").unwrap(),
            issue_id: issue13.clone(),
            result: json!({"status": "success", "summary": "parser split in two"}),
        })
        .unwrap();
    assert!(stored.stored);
    let on_b = b.client().results(&issue13).unwrap().results;
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    assert_eq!(on_b[0].result["summary"], "parser split in two");
    let context = b
        .client()
        .context(&issue13, &AgentType::parse("test-writer").unwrap())
        .unwrap();
    assert!(
        context
            .previous_results
            .iter()
            .any(|r: &StoredResult| r.agent_id.as_str() == "alice-rust-1"),
        "{:?}",
        context.previous_results
    );
    // The context's project part stays B's own checkout.
    assert_eq!(context.project.root, b.project.display().to_string());

    // An exclusive lease taken on A makes B's PreToolUse deny the edit.
    let (before, _) = b.pre_tool_use("issue-13", "src/lib.rs", "bob-tests-1");
    assert_ne!(
        before["hookSpecificOutput"]["permissionDecision"], "deny",
        "{before}"
    );
    a.client()
        .set_agent_status(
            &AgentId::parse("alice-rust-2").unwrap(),
            &AgentStatusUpdate {
                status: AgentState::Running,
                agent_type: AgentType::parse("rust-specialist").unwrap(),
                issue_id: issue13.clone(),
                message: None,
            },
        )
        .unwrap();
    let granted = a
        .client()
        .reserve(
            &issue13,
            &ReserveRequest {
                agent: AgentId::parse("alice-rust-2").unwrap(),
                paths: vec!["src/lib.rs".into()],
                mode: LeaseMode::Exclusive,
                ttl_secs: None,
                reason: "splitting the parser".into(),
            },
        )
        .unwrap();
    assert!(granted.granted);
    poll_until("B to see A's lease", || {
        b.client()
            .leases(Some(&issue13))
            .is_ok_and(|l| l.leases.len() == 1)
    });
    let (denied, _) = b.pre_tool_use("issue-13", "src/lib.rs", "bob-tests-1");
    let o = &denied["hookSpecificOutput"];
    assert_eq!(o["permissionDecision"], "deny", "{denied}");
    let reason = o["permissionDecisionReason"].as_str().unwrap();
    assert!(
        reason.contains("alice-rust-2") && reason.contains("splitting the parser"),
        "{reason}"
    );
    // Nor can B take a conflicting lease of its own.
    let refused = b
        .client()
        .reserve(
            &issue13,
            &ReserveRequest {
                agent: AgentId::parse("bob-tests-1").unwrap(),
                paths: vec!["src/**".into()],
                mode: LeaseMode::Exclusive,
                ttl_secs: None,
                reason: "tests".into(),
            },
        )
        .unwrap();
    assert!(!refused.granted);
}

#[test]
fn nats_unreachable_answers_503_hooks_stay_fast_and_the_sidecar_reconnects() {
    let Some(mut nats) = NatsCluster::single() else {
        return;
    };
    let ns = namespace("fault");
    let a = Machine::new("alice", &nats.servers_env(), &ns, 1);
    let c = a.client();
    let event = |k: u64| PublishRequest {
        publisher: "alice-agent".into(),
        topic: "faults".into(),
        data: json!({"k": k}),
        correlation_id: None,
    };
    let first = c.publish(&et("tick"), &event(1)).unwrap();

    nats.kill(0);
    // The sidecar stays up (its health says the event bus is down) and says what is wrong
    // and how to fix it.
    poll_until("health to report the event bus down", || {
        let (status, body) = crate::common::get(a.env.sidecar_port, "/health");
        status == 503
            && body.contains("\"service\":\"orchestration-sidecar\"")
            && body.contains("\"event_bus\":\"unhealthy\"")
    });
    poll_until("the sidecar to notice NATS is gone", || {
        c.publish(&et("tick"), &event(2))
            .is_err_and(|e| e.status() == Some(503))
    });
    let e = c.publish(&et("tick"), &event(2)).unwrap_err();
    assert_eq!(e.status(), Some(503), "{e}");
    assert_eq!(e.code(), Some("store_unavailable"), "{e}");
    let message = e.to_string();
    assert!(
        message.contains("cco doctor"),
        "the fix is named: {message}"
    );
    let e = c.results(&issue("issue-13")).unwrap_err();
    assert_eq!(e.status(), Some(503), "{e}");

    // A hook answers at once and does not deny: Claude is never blocked.
    let (answer, took) = a.pre_tool_use("issue-13", "src/lib.rs", "alice-rust-1");
    assert!(took < HOOK_FAST, "the hook took {took:?}");
    assert_ne!(
        answer["hookSpecificOutput"]["permissionDecision"], "deny",
        "{answer}"
    );

    // The same through the daemon's http hook, as Claude Code calls it.
    let input = json!({
        "session_id": "s-1", "hook_event_name": "PreToolUse", "cwd": a.project,
        "agent_id": "alice-rust-1", "tool_name": "Edit",
        "tool_input": {"file_path": a.project.join("src/lib.rs"), "old_string": "a", "new_string": "b"},
    })
    .to_string();
    let auth = format!("Bearer {}", a.token);
    let start = Instant::now();
    let (status, body) = crate::common::http(
        a.env.daemon_port,
        "POST",
        "/hooks/pre-tool-use",
        &[
            ("Authorization", &auth),
            ("x-cco-issue", "issue-13"),
            ("Content-Type", "application/json"),
        ],
        Some(&input),
    );
    let took = start.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took < HOOK_FAST, "the http hook took {took:?}");
    assert!(!body.contains("\"deny\""), "{body}");

    // NATS comes back on the same port with the same store: the sidecar reconnects by
    // itself, nothing stored before is lost, and the cursor continues.
    nats.restart(0);
    a.wait_connected();
    let second = c.publish(&et("tick"), &event(3)).unwrap();
    assert!(second.seq > first.seq);
    let all = a.read_all("tick", 0);
    let ks: Vec<u64> = all.iter().map(|e| e.data["k"].as_u64().unwrap()).collect();
    assert_eq!(ks, vec![1, 3], "{all:?}");
}

/// Calls `op` until it is acknowledged, as an agent would: a 503 (NATS moving a leader)
/// or a dropped connection is counted in `refused` and tried again, until `deadline`.
fn retry<T>(
    refused: &mut usize,
    deadline: Instant,
    mut op: impl FnMut() -> Result<T, cco::client::ServiceError>,
) -> T {
    loop {
        match op() {
            Ok(v) => return v,
            Err(e)
                if (e.status() == Some(503) || e.is_transient()) && Instant::now() < deadline =>
            {
                *refused += 1;
                std::thread::sleep(POLL);
            }
            Err(e) => panic!("a write failed for good: {e}"),
        }
    }
}

/// What one writer of the node-kill run had acknowledged.
#[derive(Default)]
struct Acked {
    events: BTreeMap<u64, String>,
    results: Vec<(IssueId, String)>,
    refused: usize,
}

#[test]
fn a_node_killed_during_1000_writes_loses_no_acknowledged_one() {
    let Some(mut cluster) = NatsCluster::start() else {
        return;
    };
    let ns = namespace("kill");
    let a = Machine::new("alice", &cluster.servers_env(), &ns, CLUSTER_SIZE as u8);
    let b = Machine::new("bob", &cluster.servers_env(), &ns, CLUSTER_SIZE as u8);
    let start = a.head();

    // A waiter on B follows every `load` event through the whole run, retrying through
    // the fault: it must resume and see every acknowledged event, in order.
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let c = b.client();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut since = start;
            let deadline = Instant::now() + KILL_RUN_DEADLINE;
            while Instant::now() < deadline {
                match c.wait(&et("load"), Some(since), None, Duration::from_millis(500)) {
                    Ok(batch) => {
                        if batch.events.is_empty() && done.load(Ordering::SeqCst) {
                            break;
                        }
                        seen.extend(batch.events.iter().map(|e| e.seq));
                        since = batch.next_since;
                    }
                    Err(e) if e.status() == Some(503) || e.is_transient() => {
                        std::thread::sleep(POLL)
                    }
                    Err(e) => panic!("the waiter on B failed: {e}"),
                }
            }
            seen
        })
    };
    wait_parked(&b, 1);

    let acks = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..KILL_RUN_WRITERS)
        .map(|w| {
            let (pa, pb) = (a.client(), b.client());
            let acks = acks.clone();
            std::thread::spawn(move || {
                let mut acked = Acked::default();
                let deadline = Instant::now() + KILL_RUN_DEADLINE;
                for k in (w..KILL_RUN_WRITES).step_by(KILL_RUN_WRITERS) {
                    assert!(Instant::now() < deadline, "writer {w} ran out of time");
                    // Both installations write; even k publish, odd k store a result.
                    let c = if k % 4 < 2 { &pa } else { &pb };
                    if k % 2 == 0 {
                        let e = retry(&mut acked.refused, deadline, || {
                            c.publish(
                                &et("load"),
                                &PublishRequest {
                                    publisher: format!("writer-{w}"),
                                    topic: "load".into(),
                                    data: json!({"k": k}),
                                    correlation_id: None,
                                },
                            )
                        });
                        acked.events.insert(e.seq, e.event_id);
                    } else {
                        let issue = IssueId::parse(&format!("kill-{}", k % 10)).unwrap();
                        let agent = format!("writer-{w}-{k}");
                        retry(&mut acked.refused, deadline, || {
                            c.store_result(&ResultSubmission {
                                agent_id: AgentId::parse(&agent).unwrap(),
                                agent_type: AgentType::parse("load-writer").unwrap(),
                                issue_id: issue.clone(),
                                result: json!({"status": "success", "k": k}),
                            })
                        });
                        acked.results.push((issue, agent));
                    }
                    acks.fetch_add(1, Ordering::SeqCst);
                }
                acked
            })
        })
        .collect();

    // Mid-run, SIGKILL the node leading the events stream: the hardest one to lose.
    poll_until("the first acknowledged writes", || {
        acks.load(Ordering::SeqCst) >= KILL_AFTER_ACKS
    });
    let victim = cluster
        .stream_leader(&format!("{ns}_events"))
        .expect("a running node names the events stream's leader");
    cluster.kill(victim);
    let mut acked = Acked::default();
    for w in writers {
        let one = w.join().unwrap();
        acked.events.extend(one.events);
        acked.results.extend(one.results);
        acked.refused += one.refused;
    }
    let attempts = acks.load(Ordering::SeqCst);
    assert_eq!(attempts, KILL_RUN_WRITES);
    eprintln!(
        "node-kill run: {} events and {} results acknowledged; {} answers were 503 (retried) while the cluster moved its leader",
        acked.events.len(),
        acked.results.len(),
        acked.refused
    );
    assert_eq!(
        acked.events.len() + acked.results.len(),
        KILL_RUN_WRITES,
        "with two of three nodes up every write goes through (after 503s while a leader is elected)"
    );

    // Cursors continue: a publish after the fault gets a seq above every earlier one.
    let after = a
        .client()
        .publish(
            &et("load"),
            &PublishRequest {
                publisher: "after".into(),
                topic: "load".into(),
                data: json!({"k": "after"}),
                correlation_id: None,
            },
        )
        .unwrap();
    let newest = acked.events.keys().next_back().copied().unwrap_or(start);
    assert!(after.seq > newest, "{} after {newest}", after.seq);
    done.store(true, Ordering::SeqCst);
    let followed: BTreeSet<u64> = follower.join().unwrap().into_iter().collect();

    // Every acknowledged event is readable through both installations, once, in order.
    for (name, m) in [("A", &a), ("B", &b)] {
        let since_fault = Instant::now();
        let mut events = m.read_all("load", start);
        while events.len() <= acked.events.len() && since_fault.elapsed() < CATCH_UP_WITHIN {
            std::thread::sleep(POLL);
            events = m.read_all("load", start);
        }
        eprintln!(
            "{name} reads {} load events after {:?}",
            events.len(),
            since_fault.elapsed()
        );
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, no repeats");
        // `Nats-Msg-Id` = event id: the sidecar's own retry of a publish is stored once.
        let ids: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids.len(), events.len(), "an event id stored twice");
        // A writer's retry after a 503 is a new request, a new event id: counted, allowed.
        let ks: BTreeSet<String> = events.iter().map(|e| e.data["k"].to_string()).collect();
        eprintln!(
            "{name}: {} events stored twice by a writer's retry of a 503",
            events.len() - ks.len()
        );
        let by_seq: BTreeMap<u64, &str> = events
            .iter()
            .map(|e| (e.seq, e.event_id.as_str()))
            .collect();
        for (seq, id) in &acked.events {
            let elsewhere: Vec<u64> = events
                .iter()
                .filter(|e| e.event_id == *id)
                .map(|e| e.seq)
                .collect();
            if by_seq.get(seq) != Some(&id.as_str()) {
                let log = m._sidecar.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("{name}'s sidecar log, newest first:\n{}", tail.join("\n"));
            }
            assert_eq!(
                by_seq.get(seq),
                Some(&id.as_str()),
                "acknowledged event {seq} ({id}) not readable through {name}: that id is at {elsewhere:?}; {} events read, seqs around it: {:?}",
                events.len(),
                seqs.iter()
                    .filter(|s| s.abs_diff(*seq) < 4)
                    .collect::<Vec<_>>()
            );
        }
    }
    // The waiter on B resumed and saw every acknowledged one.
    for seq in acked.events.keys() {
        assert!(followed.contains(seq), "the waiter on B missed {seq}");
    }
    // Every acknowledged result is readable through both installations.
    let mut by_issue: BTreeMap<IssueId, BTreeSet<String>> = BTreeMap::new();
    for (issue, agent) in &acked.results {
        by_issue
            .entry(issue.clone())
            .or_default()
            .insert(agent.clone());
    }
    for m in [&a, &b] {
        for (issue, agents) in &by_issue {
            let stored: BTreeSet<String> = m
                .client()
                .results(issue)
                .unwrap()
                .results
                .into_iter()
                .map(|r| r.agent_id.to_string())
                .collect();
            for agent in agents {
                assert!(stored.contains(agent), "result of {agent} on {issue} lost");
            }
        }
    }
    // The killed node comes back and catches up.
    cluster.restart(victim);
}

/// Issue 13 (node kill): a sidecar whose follower lost its consumer (the node holding it
/// died) answered reads with "nothing new" from memory and let its waiters sleep until
/// the client library noticed (10 s, or never). Now reads go to the stream leader and
/// waiters wake as soon as the sidecar knows the stream is ahead of its follower.
#[test]
fn a_follower_that_lost_its_consumer_neither_hides_events_nor_lets_waiters_sleep() {
    let Some(nats) = NatsCluster::single() else {
        return;
    };
    let ns = namespace("lost");
    let a = Machine::new("alice", &nats.servers_env(), &ns, 1);
    let b = Machine::new("bob", &nats.servers_env(), &ns, 1);
    let since = b.head();
    let waiter = {
        let c = b.client();
        std::thread::spawn(move || {
            c.wait(&et("lost"), Some(since), None, READY_WITHIN)
                .unwrap()
        })
    };
    wait_parked(&b, 1);
    let deleted = nats.delete_consumers(&format!("{ns}_events"));
    assert!(deleted >= 2, "both sidecars follow the stream: {deleted}");

    let sent = Instant::now();
    let e = a
        .client()
        .publish(
            &et("lost"),
            &PublishRequest {
                publisher: "alice".into(),
                topic: "t".into(),
                data: json!({}),
                correlation_id: None,
            },
        )
        .unwrap();
    let mut read = b.read_all("lost", since);
    while read.is_empty() && sent.elapsed() < FOLLOWER_LOST_WITHIN {
        std::thread::sleep(POLL);
        read = b.read_all("lost", since);
    }
    assert_eq!(
        read.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
        [e.event_id.as_str()],
        "B reads the event within {FOLLOWER_LOST_WITHIN:?} (after {:?})",
        sent.elapsed()
    );
    let batch = waiter.join().unwrap();
    assert_eq!(batch.events.len(), 1, "the waiter on B got the event");
    assert_eq!(batch.events[0].event_id, e.event_id);
    assert!(
        sent.elapsed() < FOLLOWER_LOST_WITHIN,
        "the waiter on B woke within {FOLLOWER_LOST_WITHIN:?}, not when the library noticed: {:?}",
        sent.elapsed()
    );
    // The follower is recreated: new events reach B's memory again, and B keeps reading.
    let f = b
        .client()
        .publish(
            &et("lost"),
            &PublishRequest {
                publisher: "bob".into(),
                topic: "t".into(),
                data: json!({}),
                correlation_id: None,
            },
        )
        .unwrap();
    let ids: Vec<String> = b
        .read_all("lost", since)
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids, [e.event_id, f.event_id]);
}
