//! When to try a request again, and how long to wait first.
//!
//! Every request (a `stat`, a `read` with its resumptions, one page of a
//! listing) has one time budget, `BLOBCACHE_FETCH_TIMEOUT` (default 30 s),
//! that covers all its attempts, the waits between them and the transfer
//! itself; `request.rs` asks [`Budget::next_wait`] after each failure. Within it, transient failures are retried with
//! exponential backoff and full jitter (a random wait between zero and
//! `100 ms × 2^attempt`, capped at 4 s), or after exactly the time the
//! service asks for in `Retry-After` (`x-ms-retry-after-ms`, `retry-after-ms`).
//!
//! Transient: connection failures, timeouts, a response body that breaks or
//! stalls, and HTTP 408, 429, 500, 502, 503, 504. Connection failures (DNS,
//! refused, unreachable) get at most [`CONNECT_BUDGET`] of retrying, so an
//! unreachable Azure (for example inside a sandbox without network) is
//! reported quickly and the cache can serve its copy; after such a failure
//! the account counts as unreachable, and later calls try once without
//! retrying until one gets an answer.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use tokio::time::Instant;

/// The first backoff step; each later one doubles, up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// How long connection failures are retried before giving up (or the whole
/// budget, if that is shorter).
const CONNECT_BUDGET: Duration = Duration::from_secs(5);
/// A response (headers, or the next piece of the body) that takes longer
/// than this counts as stalled (or the whole budget, if that is shorter).
const MAX_IDLE: Duration = Duration::from_secs(10);
/// Longest TCP (and TLS) connection setup.
pub(crate) const MAX_CONNECT: Duration = Duration::from_secs(5);

/// Statuses worth another attempt.
pub(crate) fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The wait the service asked for, if any: `x-ms-retry-after-ms`,
/// `retry-after-ms`, or `Retry-After` in whole seconds. (The HTTP-date form
/// of `Retry-After` is not used by Azure Storage and is ignored.)
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    for name in ["x-ms-retry-after-ms", "retry-after-ms"] {
        if let Some(ms) = value(name).and_then(|v| v.parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    value("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Exponential backoff with full jitter for the `attempt`-th retry (0-based).
fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    ceiling.mul_f64(random_fraction())
}

/// A random number in [0, 1) without a dependency: std's per-instance
/// random hash keys, mixed with a counter.
fn random_fraction() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = RandomState::new().hash_one(n);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The time budget of one call, and how far it has got.
pub(crate) struct Budget {
    start: Instant,
    deadline: Instant,
    limit: Duration,
    /// Requests sent so far.
    pub(crate) attempts: u32,
    /// Failed attempts since the last progress (drives the backoff).
    failures: u32,
    /// When connection failures started (reset by any answer).
    connect_failing_since: Option<Instant>,
    /// Retry at all? (Off while the account is known to be unreachable.)
    retries: bool,
    /// Retry connection failures? (Off when the caller has a cached copy to
    /// serve instead.)
    connect_retries: bool,
}

impl Budget {
    pub(crate) fn new(limit: Duration, retries: bool) -> Budget {
        let start = Instant::now();
        Budget {
            start,
            deadline: start + limit,
            limit,
            attempts: 0,
            failures: 0,
            connect_failing_since: None,
            retries,
            connect_retries: true,
        }
    }

    /// The same budget, but a connection failure is final at once.
    pub(crate) fn without_connect_retries(mut self) -> Budget {
        self.connect_retries = false;
        self
    }

    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// How long to wait for the next piece of a response.
    pub(crate) fn idle_limit(&self) -> Duration {
        MAX_IDLE.min(self.limit).min(self.remaining())
    }

    /// The whole budget.
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records an answer from the service (any status).
    pub(crate) fn answered(&mut self) {
        self.connect_failing_since = None;
    }

    /// Records progress (bytes received): the backoff starts over.
    pub(crate) fn progressed(&mut self) {
        self.failures = 0;
    }

    /// Decides whether to retry after a failure. `connect` says the request
    /// never reached the service; `asked` is the service's `Retry-After`.
    /// Returns the wait before the next attempt, or why not to retry.
    pub(crate) fn next_wait(
        &mut self,
        connect: bool,
        asked: Option<Duration>,
    ) -> Result<Duration, String> {
        if !self.retries {
            return Err("not retried: the account was unreachable earlier in this session".into());
        }
        if connect && !self.connect_retries {
            return Err("not retried: a cached copy is served instead".into());
        }
        let now = Instant::now();
        if connect {
            let since = *self.connect_failing_since.get_or_insert(now);
            if now.duration_since(since) >= CONNECT_BUDGET.min(self.limit) {
                return Err(format!(
                    "gave up after {} of connection failures",
                    fmt_duration(now.duration_since(since))
                ));
            }
        } else {
            self.connect_failing_since = None;
        }
        let wait = match asked {
            Some(d) => d,
            None => backoff(self.failures),
        };
        self.failures = self.failures.saturating_add(1);
        let remaining = self.remaining();
        if wait >= remaining {
            return Err(match asked {
                Some(d) => format!(
                    "the service asked to retry after {}, later than BLOBCACHE_FETCH_TIMEOUT={} allows",
                    fmt_duration(d),
                    fmt_duration(self.limit)
                ),
                None => format!(
                    "gave up: BLOBCACHE_FETCH_TIMEOUT={} leaves no time for another attempt",
                    fmt_duration(self.limit)
                ),
            });
        }
        Ok(wait)
    }

    /// "3 attempts in 1.2 s"
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} attempt{} in {}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            fmt_duration(self.elapsed())
        )
    }
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_grows_with_full_jitter_and_a_cap() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            let ceiling = (BASE_BACKOFF * (1 << attempt.min(16))).min(MAX_BACKOFF);
            assert!(d <= ceiling, "{attempt}: {d:?} > {ceiling:?}");
        }
        // Jitter: not always the same value.
        let waits: std::collections::HashSet<_> = (0..20).map(|_| backoff(5)).collect();
        assert!(waits.len() > 1);
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_milliseconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("x-ms-retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut d = HeaderMap::new();
        d.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&d), None);
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 206, 304, 400, 401, 403, 404, 412, 416, 501] {
            assert!(!retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_is_refused() {
        let mut b = Budget::new(Duration::from_secs(2), true);
        assert!(b.next_wait(false, Some(Duration::from_secs(1))).is_ok());
        let e = b
            .next_wait(false, Some(Duration::from_secs(5)))
            .unwrap_err();
        assert!(e.contains("retry after 5.0 s"), "{e}");
        assert!(e.contains("BLOBCACHE_FETCH_TIMEOUT=2.0 s"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn connection_failures_are_retried_for_a_bounded_time() {
        let mut b = Budget::new(Duration::from_secs(30), true);
        assert!(b.next_wait(true, None).is_ok());
        tokio::time::advance(CONNECT_BUDGET).await;
        let e = b.next_wait(true, None).unwrap_err();
        assert!(e.contains("connection failures"), "{e}");
        // Without retries, nothing is retried.
        let mut once = Budget::new(Duration::from_secs(30), false);
        assert!(once.next_wait(false, None).is_err());
    }
}
