//! What the daemon and the sidecar share as servers: a [`Server`] that owns connection
//! tracking, the network edge's limits and graceful shutdown (`serve(listener, router,
//! shutdown)`), and the `Host`/`Origin` guard every route sits behind.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::api::ErrorBody;

/// How long in-flight requests get to finish after a stop was asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// After a stop, how long open keep-alive connections get to send one more request (answered
/// with `Connection: close`) before idle ones are closed under the client's feet.
pub const DRAIN: Duration = Duration::from_secs(1);

/// How long a connection may take to deliver a complete request head. hyper starts this
/// clock whenever it waits for a head, so it is also the keep-alive idle timeout: a slow or
/// silent client holds a connection at most this long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The keep-alive idle timeout: the same clock as [`HEADER_READ_TIMEOUT`] (see there).
pub const IDLE_TIMEOUT: Duration = HEADER_READ_TIMEOUT;

/// Largest request head (and read buffer) per connection; a larger head is answered 431.
/// Bounds memory: 1,000 connections hold at most ~32 MB of unfinished heads.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Most connections one service keeps open; long polls need one each (1,000+ in the soak).
pub const MAX_CONNECTIONS: usize = 4096;

/// File descriptors kept free for everything that is not a client connection (journal,
/// results and context files, logs, the daemon's pool to the sidecar beyond one per client).
pub const FD_RESERVE: u64 = 64;

/// Descriptors one client connection may cost: its socket plus the daemon's forwarded
/// connection to the sidecar (or a file the sidecar opens for it).
pub const FDS_PER_CONNECTION: u64 = 2;

/// At most this many refused connections are being answered 503 at once; beyond, they are
/// closed at accept.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 16;

/// How long a refused connection is given to read its 503 before it is closed.
pub const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Refusals are logged at most once per this period (with a count), not once per connection.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a request body may take to arrive after its head: a client dripping a body keeps
/// its connection busy (not evictable), so it must not do so for long.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Back-off after a failed `accept` (out of descriptors and similar) instead of spinning.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Raises this process's soft descriptor limit to its hard limit (systemd's default soft
/// limit is 1024 even where the hard one is far higher) and returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid out-pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // macOS refuses more than OPEN_MAX; then the old limit stays, which is fine.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// How many connections fit in `fd_limit` descriptors, at most [`MAX_CONNECTIONS`].
pub fn connection_cap(fd_limit: u64) -> usize {
    let fit = fd_limit.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION;
    (fit.max(1) as usize).min(MAX_CONNECTIONS)
}

/// Open connections and requests served, shared by the server, `/status` and idle exit.
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

/// A connection that decrements the open count when it closes.
struct Counted {
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

/// One open connection, as the cap sees it: busy while a request is being answered
/// (including a streamed body), otherwise idle since `idle_since` and evictable.
struct Conn {
    busy: AtomicUsize,
    /// Milliseconds since the server started.
    idle_since: AtomicU64,
    evict: Notify,
}

/// Every open connection, so that a new one at the cap can take an idle one's place.
struct Conns {
    started: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    refusing: AtomicUsize,
    refused: AtomicU64,
    refusal_logged_at: AtomicU64,
}

impl Conns {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn len(&self) -> usize {
        self.open.lock().expect("connections lock").len()
    }

    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
        });
        self.open
            .lock()
            .expect("connections lock")
            .insert(id, conn.clone());
        (id, conn)
    }

    fn remove(&self, id: u64) {
        self.open.lock().expect("connections lock").remove(&id);
    }

    /// Closes the connection idle the longest; false when every connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.open.lock().expect("connections lock");
        // Ids break ties within a millisecond: the one accepted first is the older.
        let oldest = open
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(id, c)| (c.idle_since.load(Ordering::Relaxed), **id));
        match oldest {
            Some((_, c)) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// Logs refusals at most once per [`REFUSAL_LOG_EVERY`], with how many there were.
    fn log_refusal(&self, cap: usize) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.now_ms();
        let last = self.refusal_logged_at.load(Ordering::Relaxed);
        let every = REFUSAL_LOG_EVERY.as_millis() as u64;
        if (last == 0 || now.saturating_sub(last) >= every)
            && self
                .refusal_logged_at
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                cap,
                refused_so_far = n,
                "connection limit reached and every connection is busy: refusing new ones with 503"
            );
        }
    }
}

/// Marks its connection busy while a request (and its response body) is alive.
struct Busy {
    conn: Arc<Conn>,
    started: Instant,
}

impl Busy {
    fn new(conn: Arc<Conn>, started: Instant) -> Busy {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Busy { conn, started }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.conn.idle_since.store(now, Ordering::Relaxed);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A service's server: tracks connections (for `/status` and idle exit), enforces the edge's
/// limits (header timeout, head size, connection cap) and stops gracefully.
pub struct Server {
    tracker: Arc<Tracker>,
    stopper: Arc<Stopper>,
    idle_exit: Option<Duration>,
    max_connections: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Server {
    /// A server with the default limits; the connection cap fits [`MAX_CONNECTIONS`].
    pub fn new() -> Server {
        Server {
            tracker: Arc::new(Tracker::default()),
            stopper: Arc::new(Stopper::default()),
            idle_exit: None,
            max_connections: MAX_CONNECTIONS,
        }
    }

    /// Exit after no connection has been open for `idle`.
    pub fn idle_exit(mut self, idle: Option<Duration>) -> Server {
        self.idle_exit = idle;
        self
    }

    /// Keep at most `n` connections open (at least 1).
    pub fn max_connections(mut self, n: usize) -> Server {
        self.max_connections = n.max(1);
        self
    }

    pub fn connection_limit(&self) -> usize {
        self.max_connections
    }

    /// The open-connection and request counters handlers report.
    pub fn tracker(&self) -> Arc<Tracker> {
        self.tracker.clone()
    }

    /// What long polls and streams watch to end when the server stops.
    pub fn stopping(&self) -> Stopping {
        self.stopper.subscribe()
    }

    /// Serves `router` on `listener` until `shutdown` resolves or, with an idle exit, until
    /// no connection has been open that long. Then handlers are told to finish and in-flight
    /// requests get [`SHUTDOWN_GRACE`] to complete.
    ///
    /// A restart must not cost clients an error. Closing an idle keep-alive connection races
    /// with the client's next request on it (which then fails with a reset), so the stop
    /// drains first: accept no more (the manager's socket queues new connections for the
    /// successor), answer every request with `Connection: close` so clients reconnect
    /// cleanly, and only after [`DRAIN`] close the connections that stayed silent.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<Exit> {
        let conns = Arc::new(Conns {
            started: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            refusing: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            refusal_logged_at: AtomicU64::new(0),
        });
        let (close_tx, close_rx) = watch::channel(false);
        let idle_tracker = self.tracker.clone();
        let idle = self.idle_exit;
        let stop_signal = async move {
            tokio::select! {
                _ = shutdown => Exit::Shutdown,
                _ = async {
                    match idle {
                        Some(d) => idle_tracker.idle_for(d).await,
                        None => std::future::pending().await,
                    }
                } => Exit::Idle,
            }
        };
        let accepting = async {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                if conns.len() >= self.max_connections && !conns.evict_oldest_idle() {
                    conns.log_refusal(self.max_connections);
                    refuse(stream, &conns);
                    continue;
                }
                self.spawn_connection(stream, router.clone(), &conns, close_rx.clone());
            }
        };
        let exit = tokio::select! {
            exit = stop_signal => exit,
            never = accepting => never,
        };
        drop(listener);
        self.stopper.stop();
        let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
            self.tracker.drained(DRAIN).await;
            close_tx.send_replace(true);
            let mut open = self.tracker.open.subscribe();
            let _ = open.wait_for(|n| *n == 0).await;
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                "connections still open after {}s; exiting anyway",
                SHUTDOWN_GRACE.as_secs()
            );
        }
        Ok(exit)
    }

    fn spawn_connection(
        &self,
        stream: TcpStream,
        router: Router,
        conns: &Arc<Conns>,
        mut close: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        self.tracker.open.send_modify(|n| *n += 1);
        let io = TokioIo::new(Counted {
            stream,
            tracker: self.tracker.clone(),
        });
        let (id, conn) = conns.add();
        let started = conns.started;
        let stopping = self.stopper.subscribe();
        let service = {
            let conn = conn.clone();
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let busy = Busy::new(conn.clone(), started);
                let router = router.clone();
                let stopping = stopping.clone();
                async move {
                    use tower::ServiceExt;
                    let mut resp = router.oneshot(req.map(Deadlined::wrap)).await?;
                    // Here rather than as a router layer: every layer nests the routes once
                    // more, and each request clones every level (see `GuardLayer`).
                    close_when_stopping(&stopping, &mut resp);
                    // The connection stays busy until the body (an SSE stream, say) is done.
                    Ok::<_, std::convert::Infallible>(resp.map(|body| {
                        Body::new(body.map_frame(move |frame| {
                            let _ = &busy;
                            frame
                        }))
                    }))
                }
            })
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .keep_alive(true);
        let conns = conns.clone();
        tokio::spawn(async move {
            let connection = builder.serve_connection(io, service);
            tokio::pin!(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    r = connection.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = conn.evict.notified() => {
                        // A request may have started since the cap picked us: keep serving it.
                        if conn.busy.load(Ordering::Acquire) == 0 {
                            tracing::debug!("closed an idle connection to make room for a new one");
                            break;
                        }
                    }
                    _ = close.wait_for(|c| *c), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            conns.remove(id);
        });
    }
}

/// A request body that must arrive within [`BODY_READ_TIMEOUT`]; past it, reading it fails
/// (the handler answers 4xx) and the connection closes.
struct Deadlined {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Deadlined {
    fn wrap(inner: hyper::body::Incoming) -> Body {
        use hyper::body::Body as _;
        if inner.is_end_stream() {
            return Body::new(inner);
        }
        Body::new(Deadlined {
            inner,
            deadline: Box::pin(tokio::time::sleep(BODY_READ_TIMEOUT)),
        })
    }
}

impl hyper::body::Body for Deadlined {
    type Data = <hyper::body::Incoming as hyper::body::Body>::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(format!(
                "the request body did not arrive within {}s",
                BODY_READ_TIMEOUT.as_secs()
            )
            .into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// At the cap with every connection busy: answer 503 with a JSON error and close, within
/// [`REFUSAL_LINGER`]; past [`MAX_REFUSALS_IN_FLIGHT`] just close.
fn refuse(mut stream: TcpStream, conns: &Arc<Conns>) {
    if conns.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSALS_IN_FLIGHT {
        conns.refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let conns = conns.clone();
    tokio::spawn(async move {
        let body = serde_json::to_string(&ErrorBody::new(
            "overloaded",
            "too many open connections; retry in a moment",
        ))
        .expect("error body serializes");
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            stream.shutdown().await?;
            // Read what the client sent, so closing does not reset the answer away.
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        conns.refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// While stopping, every response tells the client to close the connection: it reconnects
/// (to the successor, via the manager's socket) instead of reusing a connection we drop.
fn close_when_stopping<B>(stopping: &Stopping, resp: &mut hyper::Response<B>) {
    if stopping.is_stopping() {
        resp.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
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
    let body = ErrorBody::new(code, message);
    (status, axum::Json(body)).into_response()
}

/// The port a service answers on, for the `Host` check.
#[derive(Debug, Clone, Copy)]
pub struct GuardPort(pub u16);

/// Refuses requests whose `Host` is not this machine's loopback name with our port (DNS
/// rebinding) or that carry a foreign `Origin` (a web page). Counts accepted requests.
/// (`axum::middleware::from_fn` form; the routers use [`GuardLayer`], which is cheaper.)
pub async fn guard(
    State((port, tracker)): State<(GuardPort, Arc<Tracker>)>,
    req: Request,
    next: Next,
) -> Response {
    match admit(&req, port, &tracker) {
        Some(refusal) => refusal,
        None => next.run(req).await,
    }
}

/// The guard's decision: `Some(403)` for a request it refuses; counts the ones it admits.
fn admit(req: &Request, port: GuardPort, tracker: &Tracker) -> Option<Response> {
    if let Err(e) = check_host_origin(req.headers(), port.0) {
        tracing::debug!(error = %e, "request refused");
        return Some(error_response(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            e.to_string(),
        ));
    }
    tracker.count_request();
    None
}

/// [`guard`] as a plain tower layer: `.layer(GuardLayer::new((GuardPort(port), tracker)))`.
///
/// A `from_fn` middleware boxes its future and clones the routes beneath it on every request
/// (axum nests each route once per layer, and a call clones every level below it); this
/// decides synchronously and calls the inner service directly (`bench/health_cost.sh`).
#[derive(Clone)]
pub struct GuardLayer {
    port: GuardPort,
    tracker: Arc<Tracker>,
}

impl GuardLayer {
    pub fn new((port, tracker): (GuardPort, Arc<Tracker>)) -> GuardLayer {
        GuardLayer { port, tracker }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            port: self.port,
            tracker: self.tracker.clone(),
        }
    }
}

/// The service [`GuardLayer`] makes.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    port: GuardPort,
    tracker: Arc<Tracker>,
}

impl<S> tower::Service<Request> for Guarded<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<std::future::Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        use futures_util::future::Either;
        match admit(&req, self.port, &self.tracker) {
            Some(refusal) => Either::Left(std::future::ready(Ok(refusal))),
            None => Either::Right(self.inner.call(req)),
        }
    }
}

fn loopback_authority(value: &str, port: u16) -> bool {
    let host = value
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>() == Ok(port))
        .map(|(h, _)| h);
    matches!(host, Some("127.0.0.1" | "localhost" | "[::1]"))
}

/// Why the guard refused a request (DNS rebinding or a web page).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("Host {host:?} is not allowed; use http://127.0.0.1:{port}")]
    ForeignHost { host: String, port: u16 },
    #[error("cross-origin requests are not allowed")]
    ForeignOrigin,
}

pub fn check_host_origin(headers: &HeaderMap, port: u16) -> Result<(), HostError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !loopback_authority(host, port) {
        return Err(HostError::ForeignHost {
            host: host.to_string(),
            port,
        });
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://"))
            .is_some_and(|a| loopback_authority(a, port));
        if !ok {
            return Err(HostError::ForeignOrigin);
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new().route("/x", axum::routing::get(|| async { "ok" }));
        let server = Server::new();
        let mut stopping = server.stopping();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server.serve(listener, app, async {
            let _ = rx.await;
        }));
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

    /// A server on a loopback port with `/x` (answers at once) and `/block` (answers when
    /// `release` is notified, after signalling `entered`).
    struct Edge {
        port: u16,
        tracker: Arc<Tracker>,
        entered: Arc<Notify>,
        release: Arc<Notify>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<io::Result<Exit>>,
    }

    async fn edge(server: Server) -> Edge {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (e, r) = (entered.clone(), release.clone());
        let app = Router::new()
            .route("/x", axum::routing::get(|| async { "ok" }))
            .route(
                "/echo",
                axum::routing::post(|body: String| async move { body }),
            )
            .route(
                "/block",
                axum::routing::get(move || async move {
                    e.notify_one();
                    r.notified().await;
                    "released"
                }),
            );
        let tracker = server.tracker();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, app, async {
            let _ = rx.await;
        }));
        Edge {
            port,
            tracker,
            entered,
            release,
            stop: Some(tx),
            task,
        }
    }

    impl Edge {
        async fn connect(&self) -> TcpStream {
            TcpStream::connect(("127.0.0.1", self.port)).await.unwrap()
        }
        async fn open(&self, n: u64) {
            let mut rx = self.tracker.open.subscribe();
            let _ = rx.wait_for(|o| *o == n).await;
        }
        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            assert_eq!(self.task.await.unwrap().unwrap(), Exit::Shutdown);
        }
    }

    /// Everything the peer sends until it closes, or None if it stays open past `limit`.
    async fn read_until_closed(c: &mut TcpStream, limit: Duration) -> Option<String> {
        let mut all = Vec::new();
        let done = tokio::time::timeout(limit, async {
            let mut buf = [0u8; 4096];
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        done.ok()
            .map(|()| String::from_utf8_lossy(&all).to_lowercase())
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_request_head_is_cut_off_after_the_header_timeout() {
        let e = edge(Server::new()).await;
        let mut slow = e.connect().await;
        slow.write_all(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
            .await
            .unwrap();
        let t0 = tokio::time::Instant::now();
        let got = read_until_closed(&mut slow, HEADER_READ_TIMEOUT * 3).await;
        assert!(got.is_some(), "a slow head kept its connection open");
        let waited = t0.elapsed();
        assert!(
            waited >= HEADER_READ_TIMEOUT && waited < HEADER_READ_TIMEOUT * 2,
            "closed after {waited:?}"
        );
        e.open(0).await;
        e.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
        let e = edge(Server::new()).await;
        let mut c = e.connect().await;
        c.write_all(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
        let t0 = tokio::time::Instant::now();
        let rest = read_until_closed(&mut c, IDLE_TIMEOUT * 3).await;
        assert_eq!(rest.as_deref(), Some(""), "an idle connection stayed open");
        assert!(
            t0.elapsed() >= IDLE_TIMEOUT,
            "closed after {:?}",
            t0.elapsed()
        );
        e.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripping_request_body_is_cut_off_after_the_body_timeout() {
        let e = edge(Server::new()).await;
        let mut c = e.connect().await;
        c.write_all(
            b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nonly ten.",
        )
        .await
        .unwrap();
        let t0 = tokio::time::Instant::now();
        let got = read_until_closed(&mut c, BODY_READ_TIMEOUT * 3).await;
        let got = got.expect("a dripping body kept its connection open");
        assert!(got.starts_with("http/1.1 4"), "{got}");
        assert!(
            t0.elapsed() >= BODY_READ_TIMEOUT,
            "cut off after {:?}",
            t0.elapsed()
        );
        e.stop().await;
    }

    #[tokio::test]
    async fn an_oversized_request_head_is_refused_431() {
        let e = edge(Server::new()).await;
        let mut c = e.connect().await;
        let mut head = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
        head.resize(head.len() + MAX_HEADER_BYTES + 1024, b'a');
        // The server may close before reading it all; what matters is its answer.
        let _ = c.write_all(&head).await;
        let got = read_until_closed(&mut c, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(got.contains("431"), "{got}");
        e.stop().await;
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let e = edge(Server::new().max_connections(2)).await;
        let mut first = e.connect().await;
        e.open(1).await;
        let second = e.connect().await;
        e.open(2).await;
        let mut third = e.connect().await;
        third
            .write_all(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = read_until_closed(&mut third, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(got.contains("200 ok"), "{got}");
        let evicted = read_until_closed(&mut first, Duration::from_secs(10)).await;
        assert_eq!(evicted.as_deref(), Some(""), "the oldest idle one was kept");
        drop(second);
        e.stop().await;
    }

    #[tokio::test]
    async fn at_the_cap_with_every_connection_busy_a_new_one_gets_503_json() {
        let e = edge(Server::new().max_connections(1)).await;
        let mut busy = e.connect().await;
        busy.write_all(b"GET /block HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        e.entered.notified().await;
        let mut refused = e.connect().await;
        let got = read_until_closed(&mut refused, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(got.starts_with("http/1.1 503"), "{got}");
        let body: serde_json::Value =
            serde_json::from_str(got.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["error"]["code"], "overloaded");
        e.release.notify_one();
        let done = read_until_closed(&mut busy, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(done.contains("released"), "{done}");
        e.stop().await;
    }

    /// The guard as a layer: a foreign `Host` or `Origin` is a 403 in cco's error shape and is
    /// not counted; a loopback request reaches the route and is counted.
    #[tokio::test]
    async fn the_guard_layer_refuses_foreign_hosts_and_counts_the_rest() {
        use tower::ServiceExt;
        let tracker = Arc::new(Tracker::default());
        let app = Router::new()
            .route("/x", axum::routing::get(|| async { "ok" }))
            .layer(GuardLayer::new((GuardPort(3000), tracker.clone())));
        let send = |host: &'static str, origin: Option<&'static str>| {
            let mut req = axum::http::Request::get("/x").header(header::HOST, host);
            if let Some(o) = origin {
                req = req.header(header::ORIGIN, o);
            }
            app.clone().oneshot(req.body(Body::empty()).unwrap())
        };
        for (host, origin) in [
            ("evil.com:3000", None),
            ("127.0.0.1:3001", None),
            ("127.0.0.1:3000", Some("http://evil.com")),
        ] {
            let resp = send(host, origin).await.unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{host} {origin:?}");
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "forbidden_host");
        }
        assert_eq!(tracker.requests_served(), 0);
        let resp = send("127.0.0.1:3000", Some("http://127.0.0.1:3000"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(tracker.requests_served(), 1);
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
