//! Injectable time, so the engine can be tested with tokio's paused clock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Wall-clock time and sleeping.
#[async_trait]
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Sleeps until `deadline` (returns at once if it has passed). May return early; the
    /// engine re-reads `now()` after every sleep.
    async fn sleep_until(&self, deadline: DateTime<Utc>);
}

/// The real clock: `Utc::now()` and tokio timers. Sleeps are capped by the engine
/// (`SchedulerConfig::max_sleep`) so a wall-clock change (NTP, suspend) is noticed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        if let Ok(d) = (deadline - Utc::now()).to_std() {
            tokio::time::sleep(d).await;
        }
    }
}

/// A clock that maps tokio's (pausable) monotonic time onto a chosen UTC start. Under
/// `#[tokio::test(start_paused = true)]` time advances only when every task waits, so tests
/// of days of schedules run instantly and deterministically.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base_utc: DateTime<Utc>,
    base_instant: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `start` now.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        TokioClock {
            base_utc: start,
            base_instant: tokio::time::Instant::now(),
        }
    }
}

#[async_trait]
impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.base_instant;
        match chrono::Duration::from_std(elapsed) {
            Ok(d) => self.base_utc + d,
            Err(_) => self.base_utc,
        }
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        if let Ok(d) = (deadline - self.base_utc).to_std() {
            tokio::time::sleep_until(self.base_instant + d).await;
        }
    }
}
