//! What the daemon and the sidecar share as servers: `serve(listener, router, shutdown)`,
//! connection counting for idle exit, graceful shutdown that also ends long polls, and the
//! `Host`/`Origin` guard every route sits behind.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::api::{ErrorBody, ErrorDetail};

/// How long in-flight requests get to finish after a stop was asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// After a stop, how long open keep-alive connections get to send one more request (answered
/// with `Connection: close`) before idle ones are closed under the client's feet.
pub const DRAIN: Duration = Duration::from_secs(1);

/// Open connections and requests served, shared by the listener, `/status` and idle exit.
#[derive(Debug)]
pub struct Tracker {
    open: watch::Sender<u64>,
    requests: AtomicU64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            open: watch::Sender::new(0),
            requests: AtomicU64::new(0),
        }
    }
}

impl Tracker {
    pub fn open_connections(&self) -> u64 {
        *self.open.borrow()
    }
    pub fn requests_served(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Resolves once no connection is open, or after `limit`.
    pub async fn drained(&self, limit: Duration) {
        let mut rx = self.open.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
    }

    /// Resolves once no connection has been open for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        let mut rx = self.open.subscribe();
        loop {
            if *rx.borrow_and_update() == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => return,
                    _ = rx.changed() => continue,
                }
            } else if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A stop request that handlers (long polls, streams) can watch.
#[derive(Debug, Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the server starts shutting down.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

/// The trigger side of [`Stopping`].
#[derive(Debug)]
pub struct Stopper(watch::Sender<bool>);

impl Default for Stopper {
    fn default() -> Self {
        Stopper(watch::Sender::new(false))
    }
}

impl Stopper {
    pub fn subscribe(&self) -> Stopping {
        Stopping(self.0.subscribe())
    }
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// A listener that counts its open connections in a [`Tracker`] and, once stopping, accepts
/// no more: new connections wait in the (manager-owned) socket's backlog for our successor.
pub struct CountingListener {
    inner: TcpListener,
    tracker: Arc<Tracker>,
    stopping: Option<Stopping>,
}

impl CountingListener {
    pub fn new(inner: TcpListener, tracker: Arc<Tracker>) -> Self {
        CountingListener {
            inner,
            tracker,
            stopping: None,
        }
    }

    /// Stops accepting when `stopping` fires.
    pub fn stop_accepting_on(mut self, stopping: Stopping) -> Self {
        self.stopping = Some(stopping);
        self
    }
}

impl axum::serve::Listener for CountingListener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let accepted = match &mut self.stopping {
                Some(stopping) => tokio::select! {
                    biased;
                    _ = stopping.wait() => std::future::pending().await,
                    r = self.inner.accept() => r,
                },
                None => self.inner.accept().await,
            };
            match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    self.tracker.open.send_modify(|n| *n += 1);
                    return (
                        Counted {
                            stream,
                            tracker: self.tracker.clone(),
                        },
                        addr,
                    );
                }
                // Out of file descriptors and similar: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that decrements the open count when it closes.
pub struct Counted {
    stream: TcpStream,
    tracker: Arc<Tracker>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.tracker.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Why `serve` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Shutdown,
    Idle,
}

/// Serves `router` on `listener` until `shutdown` resolves or, with `idle`, until no
/// connection has been open that long. Then `stopper` tells handlers to finish and in-flight
/// requests get [`SHUTDOWN_GRACE`] to complete.
///
/// A restart must not cost clients an error. Closing an idle keep-alive connection races with
/// the client's next request on it (which then fails with a reset), so the stop drains first:
/// accept no more (the manager's socket queues new connections for the successor), answer
/// every request with `Connection: close` so clients reconnect cleanly, and only after
/// [`DRAIN`] close the connections that stayed silent.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tracker: Arc<Tracker>,
    stopper: Arc<Stopper>,
    idle: Option<Duration>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<Exit> {
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
    let watch_tracker = tracker.clone();
    let drain_tracker = tracker.clone();
    let trigger = stopper.clone();
    let stop_signal = async move {
        let exit = tokio::select! {
            _ = shutdown => Exit::Shutdown,
            _ = async {
                match idle {
                    Some(d) => watch_tracker.idle_for(d).await,
                    None => std::future::pending().await,
                }
            } => Exit::Idle,
        };
        trigger.stop();
        drain_tracker.drained(DRAIN).await;
        let _ = exit_tx.send(exit);
    };
    let mut stopping = stopper.subscribe();
    let router = router.layer(axum::middleware::from_fn_with_state(
        stopper.subscribe(),
        close_when_stopping,
    ));
    let listener = CountingListener::new(listener, tracker).stop_accepting_on(stopper.subscribe());
    let server = axum::serve(listener, router).with_graceful_shutdown(stop_signal);
    let server = async move { server.await };
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r?,
        _ = async {
            stopping.wait().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("connections still open after {}s; exiting anyway", SHUTDOWN_GRACE.as_secs()),
    }
    Ok(exit_rx.await.unwrap_or(Exit::Shutdown))
}

/// While stopping, every response tells the client to close the connection: it reconnects
/// (to the successor, via the manager's socket) instead of reusing a connection we drop.
async fn close_when_stopping(
    State(stopping): State<Stopping>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = next.run(req).await;
    if stopping.is_stopping() {
        resp.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// Resolves on SIGTERM or SIGINT.
///
/// The handlers are installed when this is called, not when the future is first polled: call
/// it before `READY=1`, so a SIGTERM right after readiness is a graceful stop, not signal 15.
pub fn termination() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

/// A JSON error response.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.into(),
            message: message.into(),
        },
    };
    (status, axum::Json(body)).into_response()
}

/// The port a service answers on, for the `Host` check.
#[derive(Debug, Clone, Copy)]
pub struct GuardPort(pub u16);

/// Refuses requests whose `Host` is not this machine's loopback name with our port (DNS
/// rebinding) or that carry a foreign `Origin` (a web page). Counts accepted requests.
pub async fn guard(
    State((port, tracker)): State<(GuardPort, Arc<Tracker>)>,
    req: Request,
    next: Next,
) -> Response {
    if let Err(msg) = check_host_origin(req.headers(), port.0) {
        return error_response(StatusCode::FORBIDDEN, "forbidden_host", msg);
    }
    tracker.count_request();
    next.run(req).await
}

fn loopback_authority(value: &str, port: u16) -> bool {
    let host = value
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>() == Ok(port))
        .map(|(h, _)| h);
    matches!(host, Some("127.0.0.1" | "localhost" | "[::1]"))
}

pub fn check_host_origin(headers: &HeaderMap, port: u16) -> Result<(), String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !loopback_authority(host, port) {
        return Err(format!(
            "Host {host:?} is not allowed; use http://127.0.0.1:{port}"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://"))
            .is_some_and(|a| loopback_authority(a, port));
        if !ok {
            return Err("cross-origin requests are not allowed".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn host_and_origin() {
        let mut h = HeaderMap::new();
        for ok in ["127.0.0.1:3000", "localhost:3000", "[::1]:3000"] {
            h.insert(header::HOST, HeaderValue::from_static(ok));
            assert!(check_host_origin(&h, 3000).is_ok(), "{ok}");
        }
        for bad in [
            "evil.com:3000",
            "127.0.0.1:3001",
            "127.0.0.1",
            "localhost.evil.com:3000",
            "",
        ] {
            h.insert(header::HOST, HeaderValue::from_str(bad).unwrap());
            assert!(check_host_origin(&h, 3000).is_err(), "{bad}");
        }
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:3000"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.com"));
        assert!(check_host_origin(&h, 3000).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_host_origin(&h, 3000).is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:3000"),
        );
        assert!(check_host_origin(&h, 3000).is_ok());
    }

    /// A keep-alive client that sends its next request while we stop gets an answer (with
    /// `Connection: close`), not a reset: what keeps restarts under load error-free.
    #[tokio::test]
    async fn stop_answers_the_next_request_on_open_connections_then_closes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new().route("/x", axum::routing::get(|| async { "ok" }));
        let tracker = Arc::new(Tracker::default());
        let stopper = Arc::new(Stopper::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            app,
            tracker,
            stopper.clone(),
            None,
            async {
                let _ = rx.await;
            },
        ));
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let req = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        c.write_all(req).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).to_lowercase();
        assert!(
            first.contains("200 ok") && !first.contains("connection: close"),
            "{first}"
        );

        let mut stopping = stopper.subscribe();
        tx.send(()).unwrap();
        stopping.wait().await;
        c.write_all(req).await.unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        let second = String::from_utf8_lossy(&rest).to_lowercase();
        assert!(
            second.contains("200 ok") && second.contains("connection: close"),
            "{second}"
        );
        assert_eq!(server.await.unwrap().unwrap(), Exit::Shutdown);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_without_connections() {
        let t = Arc::new(Tracker::default());
        t.open.send_modify(|n| *n += 1);
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.idle_for(Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished(), "idle while a connection was open");
        t.open.send_modify(|n| *n -= 1);
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!waiter.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        waiter.await.unwrap();
    }
}
