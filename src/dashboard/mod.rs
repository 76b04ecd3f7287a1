//! The live dashboard the daemon serves at `/`: a hand-written page (assets compiled into the
//! binary), logged into with a one-time code from `cco dashboard`, fed by cookie-protected
//! `/dashboard/api/*` routes that the daemon answers through the sidecar's typed client.

pub mod auth;
pub mod data;

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::Keys;
use crate::server::{Stopping, error_response};

pub use auth::Sessions;

/// The page's policy: only this origin's own files, no inline code, never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Where the login code goes (`cco dashboard` prints or opens it).
pub const LOGIN_PATH: &str = "/login";
/// The authenticated route `cco dashboard` asks for a code.
pub const CODE_PATH: &str = "/dashboard/code";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// A compiled-in file, addressed by its content hash so it can be cached for good.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Asset {
        let hash = Sha256::digest(body.as_bytes());
        let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        Asset {
            body,
            content_type,
            etag: format!("\"{hex}\""),
        }
    }
    fn version(&self) -> &str {
        self.etag.trim_matches('"')
    }
}

static JS: LazyLock<Asset> = LazyLock::new(|| Asset::new(APP_JS, "text/javascript; charset=utf-8"));
static CSS: LazyLock<Asset> = LazyLock::new(|| Asset::new(APP_CSS, "text/css; charset=utf-8"));
static ICON: LazyLock<Asset> = LazyLock::new(|| Asset::new(ICON_SVG, "image/svg+xml"));
/// The page, pointing at the assets' current versions.
static INDEX: LazyLock<String> = LazyLock::new(|| {
    INDEX_HTML
        .replace("{{JS}}", &format!("/assets/app.js?v={}", JS.version()))
        .replace("{{CSS}}", &format!("/assets/app.css?v={}", CSS.version()))
        .replace(
            "{{ICON}}",
            &format!("/assets/icon.svg?v={}", ICON.version()),
        )
});

/// What the dashboard needs from the daemon.
#[derive(Clone)]
pub struct DashboardState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Mint the dashboard's sidecar tokens and check `cco dashboard`'s; `None` (router
    /// tests without a secret) answers 503.
    pub(crate) keys: Option<Arc<Keys>>,
    pub(crate) sidecar_port: u16,
    /// The daemon's port: state-changing requests must come from this very origin.
    pub(crate) port: u16,
    pub(crate) sessions: Sessions,
    pub(crate) stopping: Stopping,
    /// Open event streams, bounded by [`data::MAX_STREAMS`].
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
    pub(crate) http: crate::daemon::forward::HttpClient,
}

impl DashboardState {
    pub fn new(
        keys: Option<Arc<Keys>>,
        sidecar_port: u16,
        port: u16,
        stopping: Stopping,
    ) -> DashboardState {
        DashboardState {
            inner: Arc::new(Inner {
                keys,
                sidecar_port,
                port,
                sessions: Sessions::default(),
                stopping,
                streams: Arc::new(tokio::sync::Semaphore::new(data::MAX_STREAMS)),
                http: crate::daemon::forward::client(),
            }),
        }
    }
}

/// Every dashboard route. The daemon merges it under its Host/Origin guard.
pub fn router(state: DashboardState) -> Router {
    let protected = Router::new()
        .route("/", get(index))
        .route(
            "/assets/app.js",
            get(|h: HeaderMap| async move { asset(&JS, &h) }),
        )
        .route(
            "/assets/icon.svg",
            get(|h: HeaderMap| async move { asset(&ICON, &h) }),
        )
        .route(
            "/assets/app.css",
            get(|h: HeaderMap| async move { asset(&CSS, &h) }),
        )
        .route("/logout", post(logout))
        .route("/dashboard/api/tree", get(data::tree))
        .route("/dashboard/api/events", get(data::events))
        .route("/dashboard/api/events/stream", get(data::stream))
        .route("/dashboard/api/agents/{agent_id}", get(data::agent))
        .route("/dashboard/api/issues/{issue_id}", get(data::issue))
        .route("/dashboard/api/cost", get(data::cost))
        .route("/dashboard/api/health", get(data::health))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route(LOGIN_PATH, get(login))
        .route(CODE_PATH, post(issue_code))
        .merge(protected)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Every dashboard answer carries the page's security headers.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Refuses requests without a live session cookie (401: a page for `/`, JSON for the rest),
/// and state-changing ones that do not come from the dashboard's own origin.
async fn require_session(
    State(state): State<DashboardState>,
    req: Request,
    next: Next,
) -> Response {
    let live = auth::session_cookie(req.headers())
        .is_some_and(|id| state.inner.sessions.check(id, Instant::now()));
    if !live {
        return if req.uri().path() == "/" {
            (StatusCode::UNAUTHORIZED, html_page(LOGGED_OUT)).into_response()
        } else {
            error_response(
                StatusCode::UNAUTHORIZED,
                "no_session",
                "no dashboard session (missing or expired cookie) — run `cco dashboard` to log in",
            )
        };
    }
    if req.method() != axum::http::Method::GET && !same_origin(req.headers(), state.inner.port) {
        return error_response(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "state-changing dashboard requests must come from the dashboard page — reload it, or run `cco dashboard`",
        );
    }
    next.run(req).await
}

/// Whether the request's `Origin` is the dashboard's own (absent counts as foreign).
fn same_origin(headers: &HeaderMap, port: u16) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|host| origin == format!("http://{host}:{port}"))
}

const LOGGED_OUT: &str = "<h1>cco dashboard</h1><p>Not logged in, or the session expired.</p>\
     <p>Run <code>cco dashboard</code> to open it with a fresh login link.</p>";
const BAD_CODE: &str = "<h1>cco dashboard</h1><p>This login link is used up or expired \
     (links work once, for 60 seconds).</p><p>Run <code>cco dashboard</code> for a new one.</p>";

fn html_page(body: &str) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cco dashboard</title></head><body>{body}</body></html>"
        ),
    )
}

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX.as_str(),
    )
        .into_response()
}

fn asset(asset: &Asset, headers: &HeaderMap) -> Response {
    // Immutable: a new build has new hashes in the page's asset URLs.
    let cache = [
        (header::ETAG, asset.etag.as_str()),
        (
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable",
        ),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [(header::CONTENT_TYPE, asset.content_type)],
        asset.body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    code: Option<String>,
}

/// Exchanges the one-time code for a session cookie and sends the browser to `/`, so the
/// code leaves the address bar and the history.
async fn login(State(state): State<DashboardState>, Query(q): Query<LoginQuery>) -> Response {
    let id = q
        .code
        .as_deref()
        .and_then(|c| state.inner.sessions.redeem(c, Instant::now()));
    match id {
        Some(id) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_string()),
                (header::SET_COOKIE, auth::set_cookie(&id)),
            ],
        )
            .into_response(),
        None => (StatusCode::UNAUTHORIZED, html_page(BAD_CODE)).into_response(),
    }
}

async fn logout(State(state): State<DashboardState>, headers: HeaderMap) -> Response {
    if let Some(id) = auth::session_cookie(&headers) {
        state.inner.sessions.end(id);
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, auth::clear_cookie())],
    )
        .into_response()
}

/// `POST /dashboard/code` (bearer token, as `cco dashboard` has): a fresh login code.
async fn issue_code(State(state): State<DashboardState>, headers: HeaderMap) -> Response {
    let Some(keys) = state.inner.keys.as_ref() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the daemon has no signing keys, so it cannot check tokens — `cco daemon restart`",
        );
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    let claims = match keys.verify(token) {
        Ok(c) => c,
        Err(e) => {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                format!("{e} — run `cco dashboard` as the user who installed cco"),
            );
        }
    };
    // The dashboard shows every issue: an agent's bound token must not open it.
    if claims.issue_id.is_some() || claims.agent_type.is_some() {
        return error_response(
            StatusCode::FORBIDDEN,
            "out_of_scope",
            "a token bound to an issue or agent type cannot open the dashboard — run `cco dashboard`",
        );
    }
    let code = state.inner.sessions.issue_code(Instant::now());
    axum::Json(crate::api::views::LoginCode {
        url: format!(
            "http://127.0.0.1:{}{LOGIN_PATH}?code={code}",
            state.inner.port
        ),
        expires_in_seconds: auth::CODE_TTL.as_secs(),
    })
    .into_response()
}

#[cfg(test)]
mod tests;
