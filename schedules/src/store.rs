//! Where fires are recorded: the [`FireStore`] trait (the hub implements it on its database)
//! and [`MemoryFireStore`] for tests and single-process use.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// The state of one fire (one schedule at one fire time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FireStatus {
    /// Claimed by a holder; the job is running or queued (no outcome yet).
    Fired,
    /// The job returned `Ok`.
    Succeeded,
    /// The job returned `Err` (or panicked).
    Failed,
    /// Not run: the previous run still ran and the overlap policy is `skip`.
    Skipped,
    /// Not run: fire times passed while no scheduler ran and the missed policy is `skip`.
    Missed,
}

impl FireStatus {
    /// Stable lowercase spelling, for a database column.
    pub fn as_str(self) -> &'static str {
        match self {
            FireStatus::Fired => "fired",
            FireStatus::Succeeded => "succeeded",
            FireStatus::Failed => "failed",
            FireStatus::Skipped => "skipped",
            FireStatus::Missed => "missed",
        }
    }

    /// Whether the fire is finished (has an outcome).
    pub fn is_final(self) -> bool {
        self != FireStatus::Fired
    }
}

impl fmt::Display for FireStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown status spelling read back from storage.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown fire status `{0}`")]
pub struct UnknownFireStatus(pub String);

impl FromStr for FireStatus {
    type Err = UnknownFireStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "fired" => FireStatus::Fired,
            "succeeded" => FireStatus::Succeeded,
            "failed" => FireStatus::Failed,
            "skipped" => FireStatus::Skipped,
            "missed" => FireStatus::Missed,
            other => return Err(UnknownFireStatus(other.to_owned())),
        })
    }
}

/// The outcome written when a fire finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireOutcome {
    /// Never [`FireStatus::Fired`].
    pub status: FireStatus,
    /// When the outcome was known (ms since the Unix epoch, UTC).
    pub finished_at_ms: i64,
    /// The job's error (failed), or why it did not run (skipped).
    pub error: Option<String>,
    /// The job's summary on success, or other detail.
    pub detail: Option<String>,
    /// How many missed fire times this fire stands for (0 for an on-time fire).
    pub missed_count: u32,
}

/// One row of the fires table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireRecord {
    /// The schedule's name.
    pub schedule: String,
    /// The scheduled fire time (ms since the Unix epoch, UTC). Unique with `schedule`.
    pub fire_time_ms: i64,
    /// Who claimed it (a process identity).
    pub holder: String,
    /// When it was claimed (ms, UTC).
    pub claimed_at_ms: i64,
    /// Current state.
    pub status: FireStatus,
    /// When it finished (ms, UTC), once final.
    pub finished_at_ms: Option<i64>,
    /// Error text (failed) or reason (skipped).
    pub error: Option<String>,
    /// Job summary or other detail.
    pub detail: Option<String>,
    /// How many missed fire times this fire stands for.
    pub missed_count: u32,
}

impl FireRecord {
    /// The fire time as a `DateTime`.
    pub fn fire_time(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.fire_time_ms)
    }
}

/// A storage failure, carried as text so the trait stays free of any database crate.
#[derive(Debug, Clone, thiserror::Error)]
#[error("fire store: {message}")]
pub struct StoreError {
    /// What went wrong.
    pub message: String,
}

impl StoreError {
    /// Wraps any displayable error.
    pub fn new(err: impl fmt::Display) -> Self {
        StoreError {
            message: err.to_string(),
        }
    }
}

/// Durable record of fires, shared by every huitong process (the hub implements it on its
/// database). Its `claim_fire` is what makes a fire happen once across processes.
#[async_trait]
pub trait FireStore: Send + Sync {
    /// Inserts the row `(schedule, fire_time_ms)` with status `fired` if it is absent and
    /// returns `true`; returns `false` (and changes nothing) if it already exists. Must be
    /// atomic across processes (e.g. `INSERT ... ON CONFLICT DO NOTHING` on a primary key
    /// `(schedule, fire_time_ms)` and checking the affected-row count).
    async fn claim_fire(
        &self,
        schedule: &str,
        fire_time_ms: i64,
        holder: &str,
        claimed_at_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Writes the outcome of a fire this holder claimed.
    async fn record_outcome(
        &self,
        schedule: &str,
        fire_time_ms: i64,
        outcome: &FireOutcome,
    ) -> Result<(), StoreError>;

    /// The row with the greatest `fire_time_ms` for the schedule, whatever its status.
    async fn last_fire(&self, schedule: &str) -> Result<Option<FireRecord>, StoreError>;

    /// Up to `limit` rows of the schedule, newest fire time first.
    async fn recent_fires(
        &self,
        schedule: &str,
        limit: usize,
    ) -> Result<Vec<FireRecord>, StoreError>;
}

type Rows = BTreeMap<(String, i64), FireRecord>;

/// An in-memory [`FireStore`]: for tests, and for sharing between schedulers in one process.
#[derive(Debug, Default)]
pub struct MemoryFireStore {
    rows: Mutex<Rows>,
}

impl MemoryFireStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every row, ordered by schedule then fire time (for tests).
    pub fn all(&self) -> Vec<FireRecord> {
        match self.rows.lock() {
            Ok(rows) => rows.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        }
    }

    /// Inserts a row as is (for tests: e.g. a last fire before a simulated downtime).
    pub fn insert(&self, record: FireRecord) {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        rows.insert((record.schedule.clone(), record.fire_time_ms), record);
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Rows>, StoreError> {
        self.rows
            .lock()
            .map_err(|_| StoreError::new("memory store lock poisoned"))
    }
}

#[async_trait]
impl FireStore for MemoryFireStore {
    async fn claim_fire(
        &self,
        schedule: &str,
        fire_time_ms: i64,
        holder: &str,
        claimed_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut rows = self.lock()?;
        let key = (schedule.to_owned(), fire_time_ms);
        if rows.contains_key(&key) {
            return Ok(false);
        }
        rows.insert(
            key,
            FireRecord {
                schedule: schedule.to_owned(),
                fire_time_ms,
                holder: holder.to_owned(),
                claimed_at_ms,
                status: FireStatus::Fired,
                finished_at_ms: None,
                error: None,
                detail: None,
                missed_count: 0,
            },
        );
        Ok(true)
    }

    async fn record_outcome(
        &self,
        schedule: &str,
        fire_time_ms: i64,
        outcome: &FireOutcome,
    ) -> Result<(), StoreError> {
        let mut rows = self.lock()?;
        let Some(row) = rows.get_mut(&(schedule.to_owned(), fire_time_ms)) else {
            return Err(StoreError::new(format!(
                "no claimed fire for schedule `{schedule}` at {fire_time_ms}"
            )));
        };
        row.status = outcome.status;
        row.finished_at_ms = Some(outcome.finished_at_ms);
        row.error = outcome.error.clone();
        row.detail = outcome.detail.clone();
        row.missed_count = outcome.missed_count;
        Ok(())
    }

    async fn last_fire(&self, schedule: &str) -> Result<Option<FireRecord>, StoreError> {
        let rows = self.lock()?;
        Ok(rows
            .range((schedule.to_owned(), i64::MIN)..=(schedule.to_owned(), i64::MAX))
            .next_back()
            .map(|(_, r)| r.clone()))
    }

    async fn recent_fires(
        &self,
        schedule: &str,
        limit: usize,
    ) -> Result<Vec<FireRecord>, StoreError> {
        let rows = self.lock()?;
        Ok(rows
            .range((schedule.to_owned(), i64::MIN)..=(schedule.to_owned(), i64::MAX))
            .rev()
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }
}
