//! Metric names (via the `metrics` facade; the hub installs the Prometheus exporter).
//! Every metric has a `schedule` label.

/// Counter: runs started (a fire claimed by this process that ran its job).
pub const FIRES: &str = "huitong_schedule_fires_total";
/// Counter: runs that returned `Ok`.
pub const SUCCESSES: &str = "huitong_schedule_successes_total";
/// Counter: runs that returned `Err` or panicked.
pub const FAILURES: &str = "huitong_schedule_failures_total";
/// Counter: fires skipped by the overlap policy `skip`.
pub const SKIPS: &str = "huitong_schedule_skips_total";
/// Counter: fire times missed (passed while no scheduler ran, or reached later than the
/// grace period), whatever the missed policy did about them.
pub const MISSED: &str = "huitong_schedule_missed_total";
/// Counter: fire-store errors (claim, outcome or read failed).
pub const STORE_ERRORS: &str = "huitong_schedule_store_errors_total";
/// Histogram: run duration in seconds.
pub const RUN_SECONDS: &str = "huitong_schedule_run_seconds";

/// Registers descriptions for every metric (call once after installing the recorder).
pub fn describe() {
    metrics::describe_counter!(FIRES, "Scheduled job runs started");
    metrics::describe_counter!(SUCCESSES, "Scheduled job runs that succeeded");
    metrics::describe_counter!(FAILURES, "Scheduled job runs that failed");
    metrics::describe_counter!(SKIPS, "Fires skipped because the previous run still ran");
    metrics::describe_counter!(MISSED, "Fire times missed while no scheduler ran");
    metrics::describe_counter!(STORE_ERRORS, "Fire store errors");
    metrics::describe_histogram!(
        RUN_SECONDS,
        metrics::Unit::Seconds,
        "Scheduled job run time"
    );
}

pub(crate) fn incr(name: &'static str, schedule: &str, by: u64) {
    metrics::counter!(name, "schedule" => schedule.to_owned()).increment(by);
}

pub(crate) fn run_seconds(schedule: &str, secs: f64) {
    metrics::histogram!(RUN_SECONDS, "schedule" => schedule.to_owned()).record(secs);
}
