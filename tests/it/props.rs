//! Properties of the event journal against a real sidecar: random publish / poll /
//! disconnect / restart sequences; every filter sees strictly increasing seqs, no gaps and no
//! duplicates, across restarts.

use std::collections::BTreeMap;
use std::io::Write;

use proptest::prelude::*;

use crate::common::{Env, Service, http};

/// Cases per run and operations per case: bounded so the property runs in well under a minute
/// (each case starts a sidecar, each restart another).
const CASES: u32 = 16;
const MAX_OPS: usize = 24;
/// A poll that finds nothing returns after this long.
const POLL_TIMEOUT_MS: u64 = 50;
/// A disconnected long poll asked for this long; the client hangs up long before.
const ABANDONED_POLL_MS: u64 = 30_000;

const TYPES: &[&str] = &["built", "tested"];
const TOPICS: &[&str] = &["alpha", "beta"];

#[derive(Debug, Clone)]
enum Op {
    Publish {
        ty: usize,
        topic: usize,
    },
    Poll {
        ty: usize,
        topic: Option<usize>,
    },
    /// A long poll whose client hangs up mid-wait.
    Disconnect {
        ty: usize,
    },
    /// SIGTERM (graceful) or SIGKILL, then a new sidecar on the same data dir.
    Restart {
        kill: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..TYPES.len(), 0..TOPICS.len()).prop_map(|(ty, topic)| Op::Publish { ty, topic }),
        4 => (0..TYPES.len(), proptest::option::of(0..TOPICS.len()))
            .prop_map(|(ty, topic)| Op::Poll { ty, topic }),
        1 => (0..TYPES.len()).prop_map(|ty| Op::Disconnect { ty }),
        1 => any::<bool>().prop_map(|kill| Op::Restart { kill }),
    ]
}

/// A filter as the wait endpoint takes it: event type, optional topic.
type Filter = (usize, Option<usize>);

struct Model {
    /// (seq, type, topic) of every acknowledged publish.
    published: Vec<(u64, usize, usize)>,
    /// Each filter's cursor.
    cursors: BTreeMap<Filter, u64>,
}

impl Model {
    fn expected(&self, f: Filter, since: u64) -> Vec<u64> {
        self.published
            .iter()
            .filter(|(seq, ty, topic)| {
                *seq > since && *ty == f.0 && f.1.is_none_or(|t| t == *topic)
            })
            .map(|(seq, _, _)| *seq)
            .collect()
    }
}

struct Sidecar<'a> {
    env: &'a Env,
    svc: Service,
    token: String,
}

impl Sidecar<'_> {
    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn publish(&self, ty: usize, topic: usize, n: usize) -> u64 {
        let body = format!(
            r#"{{"publisher":"prop","topic":"{}","data":{{"n":{n}}}}}"#,
            TOPICS[topic]
        );
        let (code, resp) = http(
            self.env.sidecar_port,
            "POST",
            &format!("/api/events/{}", TYPES[ty]),
            &[
                ("Authorization", &self.auth()),
                ("Content-Type", "application/json"),
            ],
            Some(&body),
        );
        assert_eq!(code, 201, "publish: {resp}\n{}", self.svc.log_text());
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        v["seq"].as_u64().expect("publish answers its seq")
    }

    /// One poll: (seqs, next_since).
    fn poll(&self, f: Filter, since: u64) -> (Vec<u64>, u64) {
        let mut path = format!(
            "/api/events/wait/{}?since={since}&timeout={POLL_TIMEOUT_MS}",
            TYPES[f.0]
        );
        if let Some(t) = f.1 {
            path.push_str(&format!("&filter=topic:{}", TOPICS[t]));
        }
        let (code, resp) = http(
            self.env.sidecar_port,
            "GET",
            &path,
            &[("Authorization", &self.auth())],
            None,
        );
        assert_eq!(code, 200, "poll {path}: {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        let seqs = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["event_type"], TYPES[f.0], "{resp}");
                if let Some(t) = f.1 {
                    assert_eq!(e["topic"], TOPICS[t], "{resp}");
                }
                e["seq"].as_u64().unwrap()
            })
            .collect();
        (seqs, v["next_since"].as_u64().unwrap())
    }

    /// Sends a long poll and hangs up before it is answered.
    fn abandon_poll(&self, ty: usize) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.env.sidecar_port)).unwrap();
        let req = format!(
            "GET /api/events/wait/{}?timeout={ABANDONED_POLL_MS} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {}\r\n\r\n",
            TYPES[ty],
            self.env.sidecar_port,
            self.auth()
        );
        s.write_all(req.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Both).unwrap();
    }

    fn restart(&mut self, kill: bool) {
        if kill {
            self.svc.kill();
        } else {
            let status = self.svc.terminate();
            assert!(status.success(), "graceful stop: {status:?}");
        }
        self.svc = self.env.start("sidecar");
    }
}

/// Polls `f` from `since` until caught up, checking each batch against the model.
fn check_poll(sc: &Sidecar, model: &Model, f: Filter, since: u64) -> u64 {
    let want = model.expected(f, since);
    let mut got = Vec::new();
    let mut cursor = since;
    // A batch may be capped; more than one poll per expected event would be a stall.
    for _ in 0..=want.len() {
        let (seqs, next) = sc.poll(f, cursor);
        assert!(next >= cursor, "cursor went back: {cursor} -> {next}");
        if seqs.is_empty() {
            break;
        }
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "not strictly increasing: {seqs:?}"
        );
        assert!(seqs[0] > cursor, "seq {} not after since={cursor}", seqs[0]);
        got.extend(seqs);
        cursor = next;
    }
    assert_eq!(
        got, want,
        "filter {f:?} since {since}: gaps or duplicates (got vs acknowledged)"
    );
    cursor
}

fn run_case(ops: &[Op]) {
    let env = Env::new();
    let svc = env.start("sidecar");
    let out = env.run(["token", "--any-project"]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut sc = Sidecar {
        env: &env,
        svc,
        token,
    };
    let mut model = Model {
        published: Vec::new(),
        cursors: BTreeMap::new(),
    };
    for (n, op) in ops.iter().enumerate() {
        match *op {
            Op::Publish { ty, topic } => {
                let seq = sc.publish(ty, topic, n);
                if let Some(last) = model.published.last() {
                    assert!(seq > last.0, "seq {seq} after {}", last.0);
                }
                model.published.push((seq, ty, topic));
            }
            Op::Poll { ty, topic } => {
                let f = (ty, topic);
                let since = model.cursors.get(&f).copied().unwrap_or(0);
                let next = check_poll(&sc, &model, f, since);
                model.cursors.insert(f, next);
            }
            Op::Disconnect { ty } => sc.abandon_poll(ty),
            Op::Restart { kill } => sc.restart(kill),
        }
    }
    // Every filter, from the start of the journal: the whole history, once, in order.
    for ty in 0..TYPES.len() {
        for topic in [None, Some(0), Some(1)] {
            check_poll(&sc, &model, (ty, topic), 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        // Shrinking re-runs real processes; a few steps are enough to get a short sequence.
        max_shrink_iters: 32,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn journal_sequences_hold_across_polls_disconnects_and_restarts(
        ops in proptest::collection::vec(op(), 1..MAX_OPS)
    ) {
        run_case(&ops);
    }
}

/// Found by the property above: SIGTERM right after READY=1 killed the service outright
/// (signal 15) because its handler was installed only when the server was first polled.
#[test]
fn sigterm_right_after_ready_is_a_graceful_stop() {
    /// Starts per service; the unfixed window was hit in most of them.
    const STARTS: usize = 5;
    let env = Env::new();
    for service in ["sidecar", "daemon"] {
        for _ in 0..STARTS {
            let mut svc = env.start(service);
            let status = svc.terminate();
            assert!(
                status.success(),
                "{service} stopped by SIGTERM right after READY=1: {status:?}\n{}",
                svc.log_text()
            );
        }
    }
}
