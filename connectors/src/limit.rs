//! Outbound rate limiter, one bucket per (app, API tier), set from the vendor's published limits.
//! It waits for capacity instead of failing.
//!
//! Vendors count calls in windows ("50/s and 1000/min"). A token bucket (GCRA) with a burst of
//! the whole quota lets through up to twice the quota in the first window, so this limiter keeps a
//! sliding log of the grant times of the last `max` calls per window instead: a call goes when
//! the `max`-th newest grant is at least one window (plus a small margin for network jitter) old.
//! It never exceeds a limit as the vendor counts it and, under load, runs at ~98 % of it.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A vendor limit: calls per second, per minute and/or per hour (exceeding any trips the vendor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: Option<NonZeroU32>,
    pub per_minute: Option<NonZeroU32>,
    pub per_hour: Option<NonZeroU32>,
}

impl RateLimit {
    pub const fn new(per_second: u32, per_minute: u32) -> Self {
        Self {
            per_second: NonZeroU32::new(per_second),
            per_minute: NonZeroU32::new(per_minute),
            per_hour: None,
        }
    }
    /// The same limit, also capped per hour (WeCom: 150,000/h per API).
    pub const fn and_per_hour(self, per_hour: u32) -> Self {
        Self {
            per_hour: NonZeroU32::new(per_hour),
            ..self
        }
    }
    pub const UNLIMITED: Self = Self::new(0, 0);

    fn windows(&self) -> impl Iterator<Item = (Duration, u32)> {
        [
            (Duration::from_secs(1), self.per_second),
            (Duration::from_secs(60), self.per_minute),
            (Duration::from_secs(3600), self.per_hour),
        ]
        .into_iter()
        .filter_map(|(w, n)| n.map(|n| (w, n.get())))
    }
}

/// Slack added to every window so requests that reach the vendor a little later than they were
/// granted (network jitter) still fall into the right window: 2 % of the window, 20 ms to 2 s.
fn margin(window: Duration) -> Duration {
    (window / 50).clamp(Duration::from_millis(20), Duration::from_secs(2))
}

/// The grant times of the last `max` calls within one window.
struct Window {
    span: Duration,
    max: usize,
    grants: VecDeque<Instant>,
}

impl Window {
    /// How long until one more call fits (zero: now).
    fn wait(&mut self, now: Instant) -> Duration {
        let span = self.span + margin(self.span);
        while self
            .grants
            .front()
            .is_some_and(|t| now.duration_since(*t) >= span)
        {
            self.grants.pop_front();
        }
        if self.grants.len() < self.max {
            return Duration::ZERO;
        }
        // The oldest grant still in the window must leave it first.
        let oldest = self.grants[self.grants.len() - self.max];
        (oldest + span).saturating_duration_since(now)
    }
}

struct Bucket {
    windows: Mutex<Vec<Window>>,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Self {
            windows: Mutex::new(
                limit
                    .windows()
                    .map(|(span, max)| Window {
                        span,
                        max: max as usize,
                        grants: VecDeque::new(),
                    })
                    .collect(),
            ),
        }
    }

    /// Takes one call now if every window has room; otherwise how long until it might.
    fn try_take(&self) -> Result<(), Duration> {
        let mut ws = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let wait = ws.iter_mut().map(|w| w.wait(now)).max().unwrap_or_default();
        if !wait.is_zero() {
            return Err(wait);
        }
        for w in ws.iter_mut() {
            w.grants.push_back(now);
        }
        Ok(())
    }
}

/// Shared by every client of one app; clone the `Arc`.
#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<(String, String), Arc<Bucket>>>,
}

impl Limiter {
    pub fn new() -> Self {
        Self::default()
    }

    fn bucket(&self, app: &str, tier: &str, limit: RateLimit) -> Arc<Bucket> {
        // A poisoned lock only means another task panicked while inserting; the map is intact.
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((app.to_string(), tier.to_string()))
            .or_insert_with(|| Arc::new(Bucket::new(limit)))
            .clone()
    }

    /// Waits until one call of `tier` for `app` fits every window of its limit.
    /// The limit given on the first call for a (app, tier) pair sets the bucket.
    pub async fn acquire(&self, app: &str, tier: &str, limit: RateLimit) {
        let b = self.bucket(app, tier, limit);
        while let Err(wait) = b.try_take() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes one call if it fits now; otherwise returns how long until it would.
    pub fn try_acquire(&self, app: &str, tier: &str, limit: RateLimit) -> Result<(), Duration> {
        self.bucket(app, tier, limit).try_take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_minute_quota_reports_wait_after_burst() {
        let l = Limiter::new();
        let lim = RateLimit::new(0, 5);
        for _ in 0..5 {
            assert!(l.try_acquire("app", "t", lim).is_ok());
        }
        let wait = l.try_acquire("app", "t", lim).unwrap_err();
        // The first grant leaves the window after a minute (+ margin), not after 60/5 s.
        assert!(wait > Duration::from_secs(59), "{wait:?}");
        assert!(wait <= Duration::from_millis(61_200), "{wait:?}");
        // Other apps and tiers have their own buckets.
        assert!(l.try_acquire("other", "t", lim).is_ok());
        assert!(l.try_acquire("app", "t2", lim).is_ok());
    }

    #[test]
    fn unlimited_never_waits() {
        let l = Limiter::new();
        for _ in 0..1000 {
            assert!(l.try_acquire("a", "t", RateLimit::UNLIMITED).is_ok());
        }
    }

    #[tokio::test]
    async fn acquire_within_quota_does_not_block() {
        let l = Limiter::new();
        for _ in 0..50 {
            l.acquire("a", "t", RateLimit::new(50, 1000)).await;
        }
        assert!(l.try_acquire("a", "t", RateLimit::new(50, 1000)).is_err());
    }

    /// Under sustained demand no sliding window ever holds more than the limit, and the
    /// achieved rate is close to it (virtual time: the test takes no wall time).
    #[tokio::test(start_paused = true)]
    async fn sustained_load_stays_within_every_window_and_near_the_limit() {
        let l = Arc::new(Limiter::new());
        let lim = RateLimit::new(50, 1000);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for _ in 0..300 {
                    l.acquire("a", "t", lim).await;
                    times.push(Instant::now());
                }
                times
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        let within = |span: Duration| {
            let mut peak = 0;
            let mut lo = 0;
            for hi in 0..all.len() {
                while all[hi].duration_since(all[lo]) >= span {
                    lo += 1;
                }
                peak = peak.max(hi - lo + 1);
            }
            peak
        };
        assert!(within(Duration::from_secs(1)) <= 50);
        assert!(within(Duration::from_secs(60)) <= 1000);
        // 2,400 calls at 1000/min: the third thousand starts after two windows (2 × 61.2 s
        // with the margin), then 400 calls at 50 per 1.02 s: ~129.5 s in all.
        let took = all[all.len() - 1].duration_since(start);
        assert!(took >= Duration::from_secs(122), "{took:?}");
        assert!(took <= Duration::from_secs(131), "{took:?}");
        // First minute: the per-second limit binds: 1000 calls in ~20 s, not 50/s for 60 s.
        let first_20s = all
            .iter()
            .filter(|t| t.duration_since(start) < Duration::from_secs(21))
            .count();
        assert!((950..=1000).contains(&first_20s), "{first_20s}");
    }

    #[test]
    fn per_hour_window_is_kept() {
        let l = Limiter::new();
        let lim = RateLimit::new(0, 10_000).and_per_hour(3);
        for _ in 0..3 {
            assert!(l.try_acquire("a", "t", lim).is_ok());
        }
        let wait = l.try_acquire("a", "t", lim).unwrap_err();
        assert!(wait > Duration::from_secs(3600), "{wait:?}");
    }
}
