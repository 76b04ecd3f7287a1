//! `/api/*` on the daemon, forwarded unchanged to the sidecar: agents only know
//! `ORCHESTRATOR_API_URL`. Bodies stream both ways, so long polls and SSE pass through; a
//! daemon stop ends them cleanly (503 before the answer's head, end of stream after it).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use futures_util::StreamExt;
use http_body_util::{BodyStream, StreamBody};

use std::sync::atomic::Ordering;

use super::{DaemonError, DaemonState};

/// Once the daemon stops, how long a forwarded request may still take to get its answer's
/// head: quick requests already sent finish; long polls give up with 503.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

pub type HttpClient = Client<HttpConnector, Body>;

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(connector)
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded; neither is `Origin`, which the
/// daemon's guard has already checked and which would look foreign on the sidecar's port.
const DROP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::ORIGIN,
];

/// How long a positive owner check (the sidecar's port is held by this user, or root) is
/// trusted before `/proc/net/tcp` is read again (it grows with every connection on the
/// machine). Nothing else is cached: "nobody listens" may change the next moment, and whoever
/// binds then must not receive tokens.
const OWNER_RECHECK_SECS: u64 = 5;

/// Idle pooled connections to the sidecar are closed before the sidecar's own idle timeout,
/// so a request never lands on a connection the sidecar is closing.
const POOL_IDLE: std::time::Duration =
    std::time::Duration::from_secs(crate::server::IDLE_TIMEOUT.as_secs() / 2);

fn owner_checked(state: &DaemonState, port: u16) -> Result<(), DaemonError> {
    let checked_at = &state.inner.sidecar_owner_checked_at;
    let now = crate::auth::now_secs();
    let last = checked_at.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < OWNER_RECHECK_SECS {
        return Ok(());
    }
    match crate::client::listener_uid(port) {
        Some(uid) if uid == crate::paths::current_uid() || uid == 0 => {
            checked_at.store(now, Ordering::Relaxed);
            Ok(())
        }
        Some(uid) => Err(DaemonError::SidecarUntrusted { port, uid }),
        // Nobody listens (or no /proc): try the request, but remember nothing.
        None => Ok(()),
    }
}

/// Whether the sidecar's port is known to be this user's: a positive check at most
/// [`OWNER_RECHECK_SECS`] old, made now if the last one is older. The hooks' client then
/// skips its own check.
pub(super) fn owner_verified(state: &DaemonState, port: u16) -> bool {
    owner_checked(state, port).is_ok() && {
        let last = state.inner.sidecar_owner_checked_at.load(Ordering::Relaxed);
        last != 0 && crate::auth::now_secs().saturating_sub(last) < OWNER_RECHECK_SECS
    }
}

/// Forgets a positive owner check: after a failure the port may have changed hands.
fn forget_owner(state: &DaemonState) {
    state
        .inner
        .sidecar_owner_checked_at
        .store(0, Ordering::Relaxed);
}

pub async fn forward(
    State(state): State<DaemonState>,
    mut req: Request,
) -> Result<Response, DaemonError> {
    let port = state.inner.config.sidecar.port;
    // Requests carry agents' tokens: never forward them to a listener another user owns.
    owner_checked(&state, port)?;
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let uri: Uri = format!("http://127.0.0.1:{port}{path}")
        .parse()
        .map_err(|_| DaemonError::BadPath)?;
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    for h in DROP {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    headers.insert(
        header::HOST,
        HeaderValue::from_str(&format!("127.0.0.1:{port}")).expect("valid host"),
    );
    let mut stopping = state.inner.stopping.clone();
    let answer = tokio::select! {
        r = state.inner.client.request(req) => r,
        _ = async {
            stopping.wait().await;
            tokio::time::sleep(STOP_GRACE).await;
        } => return Err(DaemonError::Restarting),
    };
    match answer {
        // A streamed answer (SSE) ends where it is when the daemon stops: the client sees a
        // complete response and reconnects, instead of a reset after the grace period.
        Ok(resp) if !resp.headers().contains_key(header::CONTENT_LENGTH) => {
            let mut stopping = state.inner.stopping.clone();
            Ok(resp
                .map(|body| {
                    let frames =
                        BodyStream::new(body).take_until(async move { stopping.wait().await });
                    Body::new(StreamBody::new(frames))
                })
                .into_response())
        }
        Ok(resp) => Ok(resp.map(Body::new).into_response()),
        Err(cause) => {
            forget_owner(&state);
            Err(DaemonError::SidecarUnavailable { port, cause })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::listen::Origin;
    use crate::paths::Paths;
    use crate::server::{Stopper, Tracker};

    fn state_for(sidecar_port: u16) -> DaemonState {
        let mut config = Config::default();
        config.sidecar.port = sidecar_port;
        let paths = Paths {
            config_file: "/nonexistent/daemon.toml".into(),
            runtime_dir: "/nonexistent/run".into(),
            data_dir: "/nonexistent/data".into(),
        };
        DaemonState::new(
            config,
            paths,
            Origin::Bound,
            3000,
            1,
            std::sync::Arc::new(Tracker::default()),
            Stopper::default().subscribe(),
        )
    }

    /// "Nobody listens" is not remembered: whoever binds the port next is checked.
    #[test]
    fn an_empty_port_is_not_cached_as_trusted() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let state = state_for(port);
        assert!(owner_checked(&state, port).is_ok());
        assert_eq!(
            state.inner.sidecar_owner_checked_at.load(Ordering::Relaxed),
            0,
            "a negative check was cached"
        );
        assert!(
            !owner_verified(&state, port),
            "nobody listens: not verified"
        );
    }

    #[test]
    fn our_own_listener_is_cached_and_forgotten_after_a_failure() {
        if !std::path::Path::new("/proc/net/tcp").exists() {
            // Without /proc the owner is unknown and nothing is ever cached.
            let state = state_for(1);
            assert!(owner_checked(&state, 1).is_ok());
            assert_eq!(
                state.inner.sidecar_owner_checked_at.load(Ordering::Relaxed),
                0
            );
            return;
        }
        let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = ours.local_addr().unwrap().port();
        let state = state_for(port);
        assert!(owner_checked(&state, port).is_ok());
        assert_ne!(
            state.inner.sidecar_owner_checked_at.load(Ordering::Relaxed),
            0
        );
        assert!(owner_verified(&state, port), "our listener is verified");
        forget_owner(&state);
        assert_eq!(
            state.inner.sidecar_owner_checked_at.load(Ordering::Relaxed),
            0
        );
    }
}
