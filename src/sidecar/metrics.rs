//! Request timing over the last minute for `/status` (per-second slots of a log-scale
//! histogram), and the health probes `/health` reports, refreshed once a second so the
//! hot route reads a snapshot instead of touching the disk.

use std::sync::Mutex;
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

/// Middleware: times every request except the long-lived event routes.
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn summary_of_an_empty_window_is_zero() {
        let m = Metrics::default();
        m.record(Duration::from_millis(3));
        // The current second is excluded until it is complete.
        assert_eq!(m.summary().per_second, 0.0);
    }
}
