//! Outbound rate limiter, one bucket per (app, API tier), set from the vendor's published limits.
//! It waits for capacity instead of failing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A vendor limit: calls per second and/or per minute (exceeding either trips the vendor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: Option<NonZeroU32>,
    pub per_minute: Option<NonZeroU32>,
}

impl RateLimit {
    pub const fn new(per_second: u32, per_minute: u32) -> Self {
        Self {
            per_second: NonZeroU32::new(per_second),
            per_minute: NonZeroU32::new(per_minute),
        }
    }
    pub const UNLIMITED: Self = Self::new(0, 0);
}

struct Bucket {
    qps: Option<DefaultDirectRateLimiter>,
    qpm: Option<DefaultDirectRateLimiter>,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Self {
            qps: limit
                .per_second
                .map(|n| RateLimiter::direct(Quota::per_second(n))),
            qpm: limit
                .per_minute
                .map(|n| RateLimiter::direct(Quota::per_minute(n))),
        }
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

    /// Waits until one call of `tier` for `app` fits both the per-second and per-minute quota.
    /// The limit given on the first call for a (app, tier) pair sets the bucket.
    pub async fn acquire(&self, app: &str, tier: &str, limit: RateLimit) {
        let b = self.bucket(app, tier, limit);
        if let Some(l) = &b.qpm {
            l.until_ready().await;
        }
        if let Some(l) = &b.qps {
            l.until_ready().await;
        }
    }

    /// Takes one call if it fits now; otherwise returns how long until it would.
    pub fn try_acquire(&self, app: &str, tier: &str, limit: RateLimit) -> Result<(), Duration> {
        let b = self.bucket(app, tier, limit);
        let clock = DefaultClock::default();
        for l in [&b.qpm, &b.qps].into_iter().flatten() {
            if let Err(not_until) = l.check() {
                return Err(not_until.wait_time_from(clock.now()));
            }
        }
        Ok(())
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
        // One call per 12 s replenishes; the wait is certainly more than a few seconds.
        assert!(wait > Duration::from_secs(5), "{wait:?}");
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
}
