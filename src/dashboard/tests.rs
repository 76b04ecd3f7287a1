//! The dashboard through the daemon's whole router, in process (`oneshot`, no socket).
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use crate::auth::{Keys, TokenSpec};
use crate::config::Config;
use crate::daemon::{DaemonState, router as daemon_router};
use crate::listen::Origin;
use crate::paths::Paths;
use crate::secret::Secret;
use crate::server::{Stopper, Tracker};

const PORT: u16 = 3998;

fn keys() -> Keys {
    Keys::new(&Secret::from_bytes(vec![9; 32])).unwrap()
}

fn app() -> axum::Router {
    let paths = Paths {
        config_file: "/nonexistent/cco/daemon.toml".into(),
        runtime_dir: "/nonexistent/run/cco".into(),
        data_dir: "/nonexistent/.cco".into(),
    };
    let state = DaemonState::new(
        Config::default(),
        paths,
        Origin::Bound,
        PORT,
        1,
        Arc::new(Tracker::default()),
        Stopper::default().subscribe(),
    )
    .with_keys(keys());
    daemon_router(state)
}

fn req(method: &str, path: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, format!("127.0.0.1:{PORT}"))
}

async fn body_text(resp: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Logs in through the real routes; returns the `Cookie` header value.
async fn login(app: &axum::Router) -> String {
    let token = keys()
        .mint(&TokenSpec::session("t", Duration::from_secs(60)))
        .0;
    let resp = app
        .clone()
        .oneshot(
            req("POST", super::CODE_PATH)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    let url = v["url"].as_str().unwrap();
    let path = url
        .strip_prefix(&format!("http://127.0.0.1:{PORT}"))
        .unwrap();
    let resp = app
        .clone()
        .oneshot(req("GET", path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/");
    let cookie = resp.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn the_page_needs_a_session_and_carries_a_strict_csp() {
    let app = app();
    let resp = app
        .clone()
        .oneshot(req("GET", "/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(body_text(resp).await.contains("cco dashboard"));
    let cookie = login(&app).await;
    let resp = app
        .clone()
        .oneshot(
            req("GET", "/")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("http"),
        "{csp}"
    );
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    let html = body_text(resp).await;
    assert!(html.contains("/assets/app.js?v="), "{html}");
    assert!(!html.contains("{{"), "every placeholder is filled");
}

#[tokio::test]
async fn the_api_refuses_requests_without_the_cookie() {
    let app = app();
    for path in [
        "/dashboard/api/tree",
        "/dashboard/api/events/stream",
        "/assets/app.js",
    ] {
        let resp = app
            .clone()
            .oneshot(
                req("GET", path)
                    .header(header::COOKIE, "cco_dashboard=forged")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(body_text(resp).await.contains("cco dashboard"), "{path}");
    }
}

#[tokio::test]
async fn a_login_code_works_once_and_needs_a_token() {
    let app = app();
    let resp = app
        .clone()
        .oneshot(req("POST", super::CODE_PATH).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let mut bound = TokenSpec::session("agent", Duration::from_secs(60));
    bound.issue_id = Some("issue-1".into());
    let resp = app
        .clone()
        .oneshot(
            req("POST", super::CODE_PATH)
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", keys().mint(&bound).0),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "an agent's bound token"
    );
    let resp = app
        .clone()
        .oneshot(req("GET", "/login?code=0123").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn assets_are_cached_by_content_hash() {
    let app = app();
    let cookie = login(&app).await;
    let get = |etag: Option<&str>| {
        let mut r = req("GET", "/assets/app.js").header(header::COOKIE, &cookie);
        if let Some(e) = etag {
            r = r.header(header::IF_NONE_MATCH, e);
        }
        app.clone().oneshot(r.body(Body::empty()).unwrap())
    };
    let resp = get(None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let etag = resp.headers()[header::ETAG].to_str().unwrap().to_string();
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    let resp = get(Some(&etag)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn logout_needs_the_same_origin_and_ends_the_session() {
    let app = app();
    let cookie = login(&app).await;
    let post = |origin: Option<&str>| {
        let mut r = req("POST", "/logout").header(header::COOKIE, &cookie);
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        app.clone().oneshot(r.body(Body::empty()).unwrap())
    };
    assert_eq!(post(None).await.unwrap().status(), StatusCode::FORBIDDEN);
    let origin = format!("http://127.0.0.1:{PORT}");
    assert_eq!(
        post(Some(&origin)).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let resp = app
        .clone()
        .oneshot(
            req("GET", "/")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// A foreign Origin is stopped by the daemon's guard before the dashboard sees it.
#[tokio::test]
async fn a_foreign_origin_cannot_ask_for_a_code() {
    let token = keys()
        .mint(&TokenSpec::session("t", Duration::from_secs(60)))
        .0;
    let resp = app()
        .oneshot(
            req("POST", super::CODE_PATH)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::ORIGIN, "http://evil.example")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

/// A sidecar stand-in that answers every request with an open event stream carrying one
/// event, and remembers the requests' heads.
async fn fake_sidecar() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                          transfer-encoding: chunked\r\n\r\n\
                          20\r\nid: 1\nevent: x\ndata: {\"seq\":1}\n\n\r\n",
                    )
                    .await;
                // Held open, as a following stream is, until the test ends.
                let _ = sock.read(&mut buf).await;
            });
        }
    });
    (port, heads)
}

/// The daemon's router with the sidecar at `sidecar_port`, and the stopper that ends its streams.
fn app_with_sidecar(sidecar_port: u16) -> (axum::Router, Stopper) {
    let mut config = Config::default();
    config.sidecar.port = sidecar_port;
    let paths = Paths {
        config_file: "/nonexistent/cco/daemon.toml".into(),
        runtime_dir: "/nonexistent/run/cco".into(),
        data_dir: "/nonexistent/.cco".into(),
    };
    let stopper = Stopper::default();
    let app = daemon_router(
        DaemonState::new(
            config,
            paths,
            Origin::Bound,
            PORT,
            1,
            Arc::new(Tracker::default()),
            stopper.subscribe(),
        )
        .with_keys(keys()),
    );
    (app, stopper)
}

#[tokio::test]
async fn the_event_stream_is_proxied_with_a_bounded_number_of_readers() {
    use http_body_util::BodyExt;
    let (sidecar, heads) = fake_sidecar().await;
    let (app, stopper) = app_with_sidecar(sidecar);
    let cookie = login(&app).await;
    let open = || {
        app.clone().oneshot(
            req("GET", "/dashboard/api/events/stream?since=0")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
    };
    let mut streams = Vec::new();
    for _ in 0..super::data::MAX_STREAMS {
        let resp = open().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        streams.push(resp);
    }
    let refused = open().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body_text(refused).await.contains("too_many_streams"));
    // The event passes through unchanged.
    let mut body = streams.pop().unwrap().into_body();
    let frame = body.frame().await.unwrap().unwrap();
    let data = frame.into_data().unwrap();
    assert_eq!(&data[..], b"id: 1\nevent: x\ndata: {\"seq\":1}\n\n");
    // A closed stream frees its place.
    drop(body);
    assert_eq!(open().await.unwrap().status(), StatusCode::OK);
    // The daemon's stop ends the streams still open (after what they already carried).
    stopper.stop();
    let mut body = streams.pop().unwrap().into_body();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    });
    assert!(ended.await.is_ok(), "a stream outlived the daemon's stop");
    // The sidecar was asked with the daemon's own token and the page's cursor; the
    // browser's cookie stayed at the daemon.
    let head = heads.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("GET /api/events/stream?follow=true&since=0 "),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("authorization: bearer "), "{head}");
    assert!(!lower.contains("cookie"), "{head}");
}

/// Bad input is a JSON 400 before anything reaches the sidecar.
#[tokio::test]
async fn bad_queries_and_ids_are_json_400s() {
    let app = app();
    let cookie = login(&app).await;
    for path in [
        "/dashboard/api/tree?offset=abc",
        "/dashboard/api/events?type=no%20spaces",
        "/dashboard/api/cost?by=planet",
        "/dashboard/api/agents/..",
        "/dashboard/api/issues/a%2Fb",
    ] {
        let resp = app
            .clone()
            .oneshot(
                req("GET", path)
                    .header(header::COOKIE, &cookie)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let v: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
        assert_eq!(v["error"]["code"], "bad_request", "{path}");
    }
}
