//! What each fuzz target does with its input, shared by `cargo fuzz` (fuzz_targets/) and the
//! ordinary test that replays the committed corpus (tests/it/fuzz_corpus.rs). Each function
//! panics only on a real defect: a crash, a 5xx, or an answer that breaks the contract.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cco::api::ids::{AgentId, AgentType, EventType, IssueId, MAX_ID_LEN};
use cco::auth::{Keys, TokenSpec};
use cco::config::Config;
use cco::paths::Paths;
use cco::policy::{Policy, decide};
use cco::roster::Roster;
use cco::secret::Secret;
use cco::server::{Stopper, Tracker};
use cco::sidecar::{self, SidecarState};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The port the in-process router believes it serves (its Host check uses it).
const PORT: u16 = 3001;
/// Bytes of key material for the fuzzing installation (the minimum cco accepts).
const SECRET: [u8; 32] = [7; 32];

/// ID newtypes: what parses is safe to put in a path, and parses to itself.
pub fn ids(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    fn accepted(s: &str, parsed: Option<&str>) {
        let Some(p) = parsed else { return };
        assert_eq!(p, s, "an ID must parse to itself");
        assert!(!s.is_empty() && s.len() <= MAX_ID_LEN, "{s:?}");
        assert!(
            !s.contains("..") && !s.contains('/') && !s.contains('\\'),
            "{s:?}"
        );
        assert!(s.starts_with(|c: char| c.is_ascii_alphanumeric()), "{s:?}");
        assert!(
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            "{s:?}"
        );
    }
    accepted(s, IssueId::parse(s).ok().as_ref().map(|i| i.as_str()));
    accepted(s, AgentType::parse(s).ok().as_ref().map(|i| i.as_str()));
    accepted(s, AgentId::parse(s).ok().as_ref().map(|i| i.as_str()));
    accepted(s, EventType::parse(s).ok().as_ref().map(|i| i.as_str()));
}

/// Config files: parsing never panics, and what parses writes back to a file that parses to
/// the same config (what `cco` would re-read is what it read).
pub fn config(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Config::parse(s) {
        let text = toml::to_string(&c).expect("a parsed config serializes");
        let again = Config::parse(&text).unwrap_or_else(|e| panic!("{s:?} -> {text:?}: {e}"));
        assert_eq!(again, c, "{s:?} does not round-trip");
    }
}

/// Hook stdin as `cco hook pre-tool-use` reads it: JSON, then the policy's decision, for
/// every policy and a cwd that is no project. Never panics.
pub fn hook_stdin(data: &[u8]) {
    let Ok(input) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let tool = input["tool_name"].as_str().unwrap_or("");
    let cwd = input["cwd"].as_str().unwrap_or("/");
    for (read, cud) in [(true, false), (true, true), (false, true)] {
        let policy = Policy::from_json(&serde_json::json!({
            "permissions": {"auto_allow_read": read, "require_cud_confirmation": cud}
        }));
        let _ = decide(&policy, tool, &input["tool_input"], Path::new(cwd), None);
    }
}

/// A sidecar router in a temp dir, built once per process, and a valid token for it.
struct Rig {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
    // Kept here, not leaked: LeakSanitizer reports what no static reaches.
    _stopper: Stopper,
    _dir: tempfile::TempDir,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = Paths {
            config_file: dir.path().join("config/daemon.toml"),
            runtime_dir: dir.path().join("run"),
            data_dir: dir.path().join("data"),
        };
        let keys = Keys::new(&Secret::from_bytes(SECRET.to_vec())).expect("keys");
        let token = keys
            .mint(&TokenSpec::session("fuzz", Duration::from_secs(3600)))
            .0;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let stopper = Stopper::default();
        let app = rt.block_on(async {
            let state = SidecarState::open(
                Config::default().sidecar,
                &paths,
                keys,
                Roster::builtin().expect("built-in roster"),
                Arc::new(Tracker::default()),
                stopper.subscribe(),
            )
            .expect("sidecar state");
            sidecar::router(state, PORT)
        });
        Rig {
            rt,
            app,
            token,
            _stopper: stopper,
            _dir: dir,
        }
    })
}

/// Sends one request through the real router: (status, body); `None` when no such request
/// can be built (a header value with bytes HTTP forbids never reaches a server).
fn send(method: &str, uri: &str, auth: Option<&str>, body: &[u8]) -> Option<(StatusCode, Vec<u8>)> {
    let rig = rig();
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", format!("127.0.0.1:{PORT}"))
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let req = req.body(Body::from(body.to_vec())).ok()?;
    Some(rig.rt.block_on(async {
        let resp = rig.app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        (status, body)
    }))
}

/// An error answer is cco's JSON error shape; nothing is a 5xx (507 disk full aside).
fn contract(what: &str, status: StatusCode, body: &[u8]) {
    assert!(
        !status.is_server_error() || status == StatusCode::INSUFFICIENT_STORAGE,
        "{what}: {status} {}",
        String::from_utf8_lossy(body)
    );
    if status.is_client_error() {
        let v: serde_json::Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{what}: {status} body is not JSON ({e})"));
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{what}: {status} {v}"
        );
    }
}

/// Every POST body: the first byte picks the route (and its path IDs), the rest is the body,
/// sent with a valid token through the real router.
pub fn post_body(data: &[u8]) {
    post_status(data);
}

/// [`post_body`]'s request and checks; the status it got (`None` for an empty input or a
/// request that cannot be built).
pub fn post_status(data: &[u8]) -> Option<StatusCode> {
    let (&pick, body) = data.split_first()?;
    let uri = match pick % 4 {
        0 => "/api/results",
        1 => "/api/events/fuzzed",
        2 => "/api/events/agent_completed",
        _ => "/api/agents/fuzz-agent-1/status",
    };
    let auth = format!("Bearer {}", rig().token);
    let (status, resp) = send("POST", uri, Some(&auth), body)?;
    contract(uri, status, &resp);
    Some(status)
}

/// JWT extraction: any `Authorization` value that is not our token is 401, never more.
pub fn jwt(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let valid = format!("Bearer {}", rig().token);
    let Some((status, resp)) = send("GET", "/api/agents", Some(value), b"") else {
        return;
    };
    if value.trim() == valid {
        return;
    }
    contract("authorization", status, &resp);
    if status.is_success() {
        // Only a correctly signed token may pass; fuzzing cannot forge HS256.
        let t = value.trim().trim_start_matches("Bearer ").trim();
        let keys = Keys::new(&Secret::from_bytes(SECRET.to_vec())).unwrap();
        assert!(
            keys.verify(t).is_ok(),
            "{value:?} passed without a valid token"
        );
    } else {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{value:?}");
    }
}

/// A fuzz target: takes any bytes, panics only on a defect.
pub type Target = fn(&[u8]);

/// The five targets by name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("ids", ids),
    ("config", config),
    ("hook_stdin", hook_stdin),
    ("post_body", post_body),
    ("jwt", jwt),
];
