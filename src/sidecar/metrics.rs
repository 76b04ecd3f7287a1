//! Request timing over the last minute for `/status` (per-second slots of a log-scale
//! histogram), and the health probes `/health` reports, refreshed once a second so the
//! hot route reads a snapshot instead of touching the disk.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::SidecarState;

/// Seconds of history `/status` summarizes.
const WINDOW_SECS: usize = 60;
/// Histogram buckets: 4 per power of two of microseconds, up to ~2^24 µs.
const BUCKETS: usize = 96;

#[derive(Clone, Copy)]
struct Slot {
    second: u64,
    count: u64,
    total_us: u64,
    hist: [u32; BUCKETS],
}

const EMPTY: Slot = Slot {
    second: u64::MAX,
    count: 0,
    total_us: 0,
    hist: [0; BUCKETS],
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub avg_ms: f64,
    pub p99_ms: f64,
    pub per_second: f64,
}

pub struct Metrics {
    started: Instant,
    slots: Mutex<[Slot; WINDOW_SECS]>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            slots: Mutex::new([EMPTY; WINDOW_SECS]),
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < 8 {
        return us as usize;
    }
    let lg = 63 - us.leading_zeros() as usize; // floor(log2), >= 3
    let frac = ((us >> (lg - 2)) & 3) as usize;
    (lg * 4 + frac - 4).min(BUCKETS - 1)
}

/// The upper edge of a bucket, in µs.
fn bucket_upper(b: usize) -> f64 {
    if b < 8 {
        return b as f64;
    }
    let (lg, frac) = ((b + 4) / 4, (b + 4) % 4);
    (1u64 << lg) as f64 * (1.0 + (frac as f64 + 1.0) / 4.0)
}

impl Metrics {
    fn now_second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts a request that took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        let sec = self.now_second();
        let mut slots = self.slots.lock().expect("metrics lock");
        let slot = &mut slots[(sec as usize) % WINDOW_SECS];
        if slot.second != sec {
            *slot = EMPTY;
            slot.second = sec;
        }
        let us = elapsed.as_micros() as u64;
        slot.count += 1;
        slot.total_us += us;
        slot.hist[bucket(us)] += 1;
    }

    pub fn summary(&self) -> Summary {
        let now = self.now_second();
        let slots = self.slots.lock().expect("metrics lock");
        let mut hist = [0u64; BUCKETS];
        let (mut count, mut total) = (0u64, 0u64);
        for s in slots.iter() {
            // Only whole seconds in the window, not the current partial one.
            if s.second == u64::MAX || s.second >= now || now - s.second > WINDOW_SECS as u64 {
                continue;
            }
            count += s.count;
            total += s.total_us;
            for (h, v) in hist.iter_mut().zip(s.hist.iter()) {
                *h += *v as u64;
            }
        }
        drop(slots);
        if count == 0 {
            return Summary {
                avg_ms: 0.0,
                p99_ms: 0.0,
                per_second: 0.0,
            };
        }
        let rank = (count * 99).div_ceil(100);
        let mut seen = 0;
        let mut p99 = 0.0;
        for (b, n) in hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                p99 = bucket_upper(b);
                break;
            }
        }
        let window = (now.min(WINDOW_SECS as u64)).max(1) as f64;
        Summary {
            avg_ms: round3(total as f64 / count as f64 / 1000.0),
            p99_ms: round3(p99 / 1000.0),
            per_second: round3(count as f64 / window),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Times every request except the long-lived event routes: a plain tower layer, for the
/// reason [`crate::server::GuardLayer`] gives.
#[derive(Clone)]
pub struct TimingLayer {
    state: SidecarState,
}

impl TimingLayer {
    pub fn new(state: SidecarState) -> TimingLayer {
        TimingLayer { state }
    }
}

impl<S> tower::Layer<S> for TimingLayer {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Timed<S> {
        Timed {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`TimingLayer`] makes.
#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
    state: SidecarState,
}

impl<S> tower::Service<Request> for Timed<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TimedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let path = req.uri().path();
        let long_lived = path.starts_with("/api/events/wait/") || path == "/api/events/stream";
        TimedFuture {
            inner: self.inner.call(req),
            timing: (!long_lived).then(|| (self.state.clone(), Instant::now())),
        }
    }
}

/// The inner answer; its time is recorded when it is ready.
pub struct TimedFuture<F> {
    inner: F,
    timing: Option<(SidecarState, Instant)>,
}

// axum's route futures are `Unpin`, so no pin projection is needed.
impl<F, E> Future for TimedFuture<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let out = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        if let Some((state, start)) = self.timing.take() {
            state.metrics().record(start.elapsed());
        }
        Poll::Ready(out)
    }
}

/// The same timing as a `from_fn` middleware (the router uses [`TimingLayer`]).
pub async fn time_requests(
    State(state): State<SidecarState>,
    req: Request,
    next: Next,
) -> Response {
    let long_lived = req.uri().path().starts_with("/api/events/wait/")
        || req.uri().path() == "/api/events/stream";
    let start = Instant::now();
    let resp = next.run(req).await;
    if !long_lived {
        state.metrics().record(start.elapsed());
    }
    resp
}

/// The latest health probe results.
#[derive(Debug, Clone, PartialEq)]
pub struct Probes {
    pub storage: &'static str,
    pub event_bus: &'static str,
    pub memory_mb: f64,
}

impl Default for Probes {
    fn default() -> Self {
        Probes {
            storage: "healthy",
            event_bus: "healthy",
            memory_mb: 0.0,
        }
    }
}

/// What one `/health` answer is made of: equal inputs, equal bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthInputs {
    pub probes: Probes,
    pub uptime_seconds: u64,
    pub active_agents: u64,
    pub event_queue_size: u64,
}

/// The last `/health` body, reused while its inputs are unchanged: a poller gets the same
/// bytes until a probe, a count or the uptime (once a second) moves, and the JSON is not
/// built again for each request (serializing it was a quarter of the request's cost).
#[derive(Debug, Default)]
pub struct HealthCache(Mutex<Option<(HealthInputs, axum::body::Bytes)>>);

impl HealthCache {
    pub fn body(
        &self,
        inputs: HealthInputs,
        render: impl FnOnce(&HealthInputs) -> Vec<u8>,
    ) -> axum::body::Bytes {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((was, body)) if *was == inputs => body.clone(),
            _ => {
                let body = axum::body::Bytes::from(render(&inputs));
                *last = Some((inputs, body.clone()));
                body
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_body_is_rendered_again_only_when_an_input_moves() {
        let cache = HealthCache::default();
        let inputs = |uptime| HealthInputs {
            probes: Probes::default(),
            uptime_seconds: uptime,
            active_agents: 0,
            event_queue_size: 0,
        };
        let mut renders = 0;
        let mut render = |i: &HealthInputs| {
            renders += 1;
            i.uptime_seconds.to_string().into_bytes()
        };
        assert_eq!(cache.body(inputs(1), &mut render), "1");
        assert_eq!(cache.body(inputs(1), &mut render), "1");
        assert_eq!(cache.body(inputs(2), &mut render), "2");
        assert_eq!(renders, 2);
    }

    #[test]
    fn buckets_are_monotonic_and_bound_the_value() {
        let mut last = 0;
        for us in [1u64, 2, 3, 5, 8, 100, 1000, 1500, 5000, 1_000_000] {
            let b = bucket(us);
            assert!(b >= last);
            assert!(bucket_upper(b) >= us as f64, "{us}");
            assert!(bucket_upper(b) <= us as f64 * 1.5 + 1.0, "{us}");
            last = b;
        }
    }

    impl Metrics {
        /// Requests recorded in the window, the current second included.
        fn recorded(&self) -> u64 {
            self.slots.lock().unwrap().iter().map(|s| s.count).sum()
        }
    }

    /// The timing layer records every answered request through the real router, and leaves
    /// the long polls out (they would swamp the averages).
    #[tokio::test]
    async fn the_router_times_requests_but_not_long_polls() {
        use std::sync::Arc;

        use axum::body::Body;
        use tower::ServiceExt;

        use crate::auth::Keys;
        use crate::paths::Paths;
        use crate::roster::Roster;
        use crate::secret::Secret;
        use crate::server::{Stopper, Tracker};

        const PORT: u16 = 3997;
        let dir = tempfile::tempdir().unwrap();
        let stopper = Stopper::default();
        let paths = Paths {
            config_file: dir.path().join("cfg/daemon.toml"),
            runtime_dir: dir.path().join("run"),
            data_dir: dir.path().join("data"),
        };
        let state = SidecarState::open(
            crate::config::SidecarConfig::default(),
            &paths,
            Keys::new(&Secret::from_bytes(vec![7; 32])).unwrap(),
            Roster::builtin().unwrap(),
            Arc::new(Tracker::default()),
            stopper.subscribe(),
        )
        .unwrap();
        let app = super::super::router(state.clone(), PORT);
        let send = |path: &str| {
            let req = axum::http::Request::get(path)
                .header("host", format!("127.0.0.1:{PORT}"))
                .body(Body::empty())
                .unwrap();
            app.clone().oneshot(req)
        };
        for _ in 0..3 {
            assert_eq!(send("/health").await.unwrap().status(), 200);
        }
        // Unauthorized, but still a request on a long-poll route: not timed.
        assert_eq!(
            send("/api/events/wait/x?timeout=0").await.unwrap().status(),
            401
        );
        assert_eq!(state.metrics().recorded(), 3);
        state.close();
    }

    #[test]
    fn summary_of_an_empty_window_is_zero() {
        let m = Metrics::default();
        m.record(Duration::from_millis(3));
        // The current second is excluded until it is complete.
        assert_eq!(m.summary().per_second, 0.0);
    }
}
