//! A validated schedule and its fire-time arithmetic (time-zone and DST aware).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use cron::TimeUnitSpec;

use crate::job::Job;

/// The time zone used when a schedule names none.
pub const DEFAULT_TIMEZONE: Tz = chrono_tz::Asia::Shanghai;

/// What to do when a fire comes while the previous run of the same schedule still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverlapPolicy {
    /// Do not run; record the fire as skipped.
    Skip,
    /// Run after the previous run (and any earlier queued fire) has finished.
    Queue,
}

impl OverlapPolicy {
    /// The spelling used in schedule files.
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::Queue => "queue",
        }
    }
}

impl FromStr for OverlapPolicy {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "skip" => Ok(OverlapPolicy::Skip),
            "queue" => Ok(OverlapPolicy::Queue),
            _ => Err(()),
        }
    }
}

impl fmt::Display for OverlapPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with fire times that passed while no scheduler was running (or that a
/// scheduler reached later than the grace period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MissedPolicy {
    /// Run the job once for all the missed fire times.
    RunOnce,
    /// Do not run; record the missed fire times (visible in the list view and metrics).
    Skip,
}

impl MissedPolicy {
    /// The spelling used in schedule files.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedPolicy::RunOnce => "run-once",
            MissedPolicy::Skip => "skip",
        }
    }
}

impl FromStr for MissedPolicy {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "run-once" => Ok(MissedPolicy::RunOnce),
            "skip" => Ok(MissedPolicy::Skip),
            _ => Err(()),
        }
    }
}

impl fmt::Display for MissedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A schedule that passed validation.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Unique name across all schedule files.
    pub name: String,
    /// The cron expression as written (with seconds).
    pub cron: String,
    /// The time zone the cron expression is read in.
    pub timezone: Tz,
    /// What to run.
    pub job: Job,
    /// Overlap policy.
    pub overlap: OverlapPolicy,
    /// Missed-fire policy.
    pub missed: MissedPolicy,
    /// Disabled schedules are listed but never fire.
    pub enabled: bool,
    /// Free text for admins.
    pub description: Option<String>,
    /// The file the schedule came from (empty when built in code).
    pub source: PathBuf,
    compiled: cron::Schedule,
    hour_is_wildcard: bool,
}

/// A cron expression that the cron crate rejected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid cron expression `{expression}`: {reason}")]
pub struct CronError {
    /// The expression.
    pub expression: String,
    /// The parser's message.
    pub reason: String,
}

/// The largest step a wall clock makes at a time-zone transition that we look back over.
const MAX_TRANSITION: Duration = Duration::hours(3);
/// Upper bound of cron candidates examined in one next-fire computation near a transition.
const MAX_SCAN: usize = 50_000;

impl Schedule {
    /// Builds a schedule in code. Prefer [`crate::load_dir`], which also checks the
    /// weekday trap and reports every problem; this only checks that cron accepts the
    /// expression.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        cron: &str,
        timezone: Tz,
        job: Job,
        overlap: OverlapPolicy,
        missed: MissedPolicy,
        enabled: bool,
    ) -> Result<Schedule, CronError> {
        let compiled = cron::Schedule::from_str(cron).map_err(|e| CronError {
            expression: cron.to_owned(),
            reason: e.to_string(),
        })?;
        let hour_is_wildcard = compiled.hours().is_all();
        Ok(Schedule {
            name: name.into(),
            cron: cron.to_owned(),
            timezone,
            job,
            overlap,
            missed,
            enabled,
            description: None,
            source: PathBuf::new(),
            compiled,
            hour_is_wildcard,
        })
    }

    /// The first fire time strictly after `after`, or `None` if the expression never fires
    /// again (e.g. a past year).
    ///
    /// The expression is read in the schedule's time zone, on the wall clock:
    /// * a local time that does not exist (skipped by a spring-forward transition) fires at
    ///   the end of the gap — unless the hour field is `*`, in which case the gap times
    ///   simply do not exist (the job keeps its real-time rhythm);
    /// * a local time that occurs twice (fall-back) fires once, at its first occurrence —
    ///   unless the hour field is `*`, in which case it fires at both occurrences.
    pub fn next_fire_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = self.timezone;
        let after_local = after.with_timezone(&tz);
        let naive_after = after_local.naive_local();
        // Fast path: the first wall-clock candidate maps to a single instant and no
        // transition lies between `after` and it.
        let first = self.naive_after(naive_after).next()?;
        if let LocalResult::Single(t) = tz.from_local_datetime(&first) {
            let t = t.with_timezone(&Utc);
            if t > after && offset_secs(tz, t) == offset_secs(tz, after) {
                return Some(t);
            }
        }
        // Slow path near a transition: look back over the largest wall-clock step and keep
        // the earliest mapped instant after `after`.
        let mut best: Option<DateTime<Utc>> = None;
        for (i, naive) in self.naive_after(naive_after - MAX_TRANSITION).enumerate() {
            if i >= MAX_SCAN {
                break;
            }
            if let Some(b) = best {
                let b_naive = b.with_timezone(&tz).naive_local();
                if naive > b_naive + MAX_TRANSITION {
                    break;
                }
            }
            for t in self.instants_for(naive) {
                if t > after && best.is_none_or(|b| t < b) {
                    best = Some(t);
                }
            }
        }
        best
    }

    /// The next `n` fire times strictly after `after`, in the schedule's time zone.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::with_capacity(n);
        let mut cursor = after;
        while out.len() < n {
            match self.next_fire_after(cursor) {
                Some(t) => {
                    out.push(t.with_timezone(&self.timezone));
                    cursor = t;
                }
                None => break,
            }
        }
        out
    }

    /// Fire times in `(after, until]`, at most `cap` of them (the earliest ones), and
    /// whether more were left off.
    pub fn fires_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        cap: usize,
    ) -> (Vec<DateTime<Utc>>, bool) {
        let mut out = Vec::new();
        let mut cursor = after;
        while let Some(t) = self.next_fire_after(cursor) {
            if t > until {
                return (out, false);
            }
            if out.len() == cap {
                return (out, true);
            }
            out.push(t);
            cursor = t;
        }
        (out, false)
    }

    /// Wall-clock candidates strictly after `naive`, read as if the zone were UTC.
    fn naive_after(&self, naive: NaiveDateTime) -> impl Iterator<Item = NaiveDateTime> + '_ {
        self.compiled
            .after(&Utc.from_utc_datetime(&naive))
            .map(|d| d.naive_utc())
    }

    /// The instants one wall-clock candidate fires at (see [`Schedule::next_fire_after`]).
    fn instants_for(&self, naive: NaiveDateTime) -> Vec<DateTime<Utc>> {
        let tz = self.timezone;
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(early, late) => {
                if self.hour_is_wildcard {
                    vec![early.with_timezone(&Utc), late.with_timezone(&Utc)]
                } else {
                    vec![early.with_timezone(&Utc)]
                }
            }
            LocalResult::None => {
                if self.hour_is_wildcard {
                    return Vec::new();
                }
                // Walk forward minute by minute to the first wall-clock time that exists:
                // the end of the gap.
                let mut probe = naive.with_second(0).unwrap_or(naive);
                for _ in 0..(24 * 60) {
                    probe += Duration::minutes(1);
                    match tz.from_local_datetime(&probe) {
                        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                            return vec![t.with_timezone(&Utc)];
                        }
                        LocalResult::None => {}
                    }
                }
                Vec::new()
            }
        }
    }
}

fn offset_secs(tz: Tz, t: DateTime<Utc>) -> i32 {
    use chrono::Offset;
    tz.offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc()
}
