//! The scheduler engine: one task per enabled schedule, fires through [`JobRunner`], fire
//! claims and outcomes through [`FireStore`], time through [`Clock`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::job::Job;
use crate::metrics as m;
use crate::schedule::{MissedPolicy, OverlapPolicy, Schedule};
use crate::store::{FireOutcome, FireStatus, FireStore};

/// What a job reports when it succeeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOutcome {
    /// A one-line summary for the list view, e.g. "3 created, 1 updated".
    pub summary: Option<String>,
}

/// Runs jobs; the hub implements it (e.g. `reconcile <route>` = plan + apply).
#[async_trait]
pub trait JobRunner: Send + Sync + 'static {
    /// Runs `job` for the fire of `schedule` at `fire_time`. `Err` is the error text shown
    /// in the list view.
    async fn run(
        &self,
        schedule: &str,
        job: &Job,
        fire_time: DateTime<Utc>,
    ) -> Result<JobOutcome, String>;
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This process's identity in fire claims; unique per process start (e.g.
    /// `hostname:pid:start-time`).
    pub holder: String,
    /// A fire time reached later than this is a missed fire (missed policy applies).
    pub misfire_grace: Duration,
    /// A claimed fire with no outcome older than this is presumed dead (its process
    /// crashed) and no longer blocks overlapping fires.
    pub stale_run_after: Duration,
    /// How often a queued fire re-checks the store for a run held by another process.
    pub busy_poll_interval: Duration,
    /// The longest single sleep, so wall-clock jumps are noticed.
    pub max_sleep: Duration,
    /// Wait before retrying a failed store read at start.
    pub store_retry: Duration,
}

impl SchedulerConfig {
    /// Defaults: grace 60 s, stale after 6 h, poll 5 s, max sleep 60 s, retry 10 s.
    pub fn new(holder: impl Into<String>) -> Self {
        SchedulerConfig {
            holder: holder.into(),
            misfire_grace: Duration::from_secs(60),
            stale_run_after: Duration::from_secs(6 * 3600),
            busy_poll_interval: Duration::from_secs(5),
            max_sleep: Duration::from_secs(60),
            store_retry: Duration::from_secs(10),
        }
    }
}

/// The scheduler, before it starts.
pub struct Scheduler {
    schedules: Vec<Schedule>,
    ctx: Arc<Ctx>,
}

struct Ctx {
    runner: Arc<dyn JobRunner>,
    store: Arc<dyn FireStore>,
    clock: Arc<dyn Clock>,
    config: SchedulerConfig,
}

/// A running scheduler.
pub struct SchedulerHandle {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl SchedulerHandle {
    /// Stops firing and waits until the runs already started (or queued) have finished and
    /// their outcomes are recorded. Dropping the handle instead aborts everything at once.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while let Some(res) = self.tasks.join_next().await {
            if let Err(e) = res {
                error!(error = %e, "schedule task ended abnormally");
            }
        }
    }
}

impl Scheduler {
    /// A scheduler for `schedules` (disabled ones are ignored).
    pub fn new(
        schedules: Vec<Schedule>,
        runner: Arc<dyn JobRunner>,
        store: Arc<dyn FireStore>,
        clock: Arc<dyn Clock>,
        config: SchedulerConfig,
    ) -> Self {
        Scheduler {
            schedules,
            ctx: Arc::new(Ctx {
                runner,
                store,
                clock,
                config,
            }),
        }
    }

    /// Spawns one task per enabled schedule on the current tokio runtime. On start each
    /// schedule reads its last fire from the store and applies its missed-fire policy to the
    /// fire times since then (a schedule with no fire yet starts from now).
    pub fn start(self) -> SchedulerHandle {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for schedule in self.schedules.into_iter().filter(|s| s.enabled) {
            info!(
                schedule = %schedule.name,
                cron = %schedule.cron,
                timezone = %schedule.timezone,
                job = %schedule.job,
                holder = %self.ctx.config.holder,
                "schedule started"
            );
            tasks.spawn(schedule_loop(
                self.ctx.clone(),
                Arc::new(schedule),
                stop_rx.clone(),
            ));
        }
        SchedulerHandle { stop, tasks }
    }
}

/// Sleeps until `until` or the stop signal; returns whether to stop.
async fn sleep_or_stop(
    clock: &dyn Clock,
    until: DateTime<Utc>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = clock.sleep_until(until) => false,
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    match chrono::Duration::from_std(d) {
        Ok(d) => t.checked_add_signed(d).unwrap_or(t),
        Err(_) => t,
    }
}

/// Fire times due in `(cursor, now]`: the missed ones summarised, and at most one on-time
/// fire (the latest, if it is within the grace period).
#[derive(Debug, Default)]
struct Due {
    missed_count: u32,
    first_missed: Option<DateTime<Utc>>,
    last_missed: Option<DateTime<Utc>>,
    on_time: Vec<DateTime<Utc>>,
}

/// How many due fire times are walked one by one before skipping ahead.
const MAX_DUE_SCAN: usize = 100_000;

fn due_fires(
    schedule: &Schedule,
    cursor: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Due {
    let grace_start = match chrono::Duration::from_std(grace) {
        Ok(g) => now - g,
        Err(_) => now,
    };
    let mut due = Due::default();
    let mut t = cursor;
    let mut scanned = 0usize;
    while let Some(next) = schedule.next_fire_after(t) {
        if next > now {
            break;
        }
        scanned += 1;
        if scanned == MAX_DUE_SCAN {
            // A very frequent schedule after a long downtime: stop walking every missed
            // time; jump to the last hour before the grace period (the count becomes a
            // lower bound).
            let jump = grace_start - chrono::Duration::hours(1);
            if jump > next {
                warn!(schedule = %schedule.name, counted = scanned, "too many missed fire times to count; counting stops here");
                t = jump;
                continue;
            }
        }
        if next < grace_start {
            due.missed_count = due.missed_count.saturating_add(1);
            due.first_missed.get_or_insert(next);
            due.last_missed = Some(next);
        } else {
            due.on_time.push(next);
        }
        t = next;
    }
    // Several on-time fires due at once means the scheduler is behind: all but the latest
    // count as missed too, so the missed policy coalesces them.
    if due.on_time.len() > 1 {
        let latest = due.on_time.split_off(due.on_time.len() - 1);
        for t in std::mem::replace(&mut due.on_time, latest) {
            due.missed_count = due.missed_count.saturating_add(1);
            due.first_missed.get_or_insert(t);
            due.last_missed = Some(t);
        }
    }
    due
}

async fn schedule_loop(ctx: Arc<Ctx>, schedule: Arc<Schedule>, mut stop: watch::Receiver<bool>) {
    let run_lock = Arc::new(Mutex::new(()));
    let mut fires: JoinSet<()> = JoinSet::new();
    let name = schedule.name.as_str();

    // Where this scheduler left off: the last fire any process recorded.
    let mut cursor = loop {
        match ctx.store.last_fire(name).await {
            Ok(Some(record)) => match record.fire_time() {
                Some(t) => break t,
                None => break ctx.clock.now(),
            },
            Ok(None) => break ctx.clock.now(),
            Err(e) => {
                m::incr(m::STORE_ERRORS, name, 1);
                warn!(schedule = %name, error = %e, "cannot read the last fire; retrying");
                let until = add(ctx.clock.now(), ctx.config.store_retry);
                if sleep_or_stop(ctx.clock.as_ref(), until, &mut stop).await {
                    return;
                }
            }
        }
    };

    loop {
        while let Some(res) = fires.try_join_next() {
            if let Err(e) = res {
                error!(schedule = %name, error = %e, "fire task ended abnormally");
            }
        }
        let now = ctx.clock.now();
        let due = due_fires(&schedule, cursor, now, ctx.config.misfire_grace);

        if due.missed_count > 0 {
            let (Some(first), Some(last)) = (due.first_missed, due.last_missed) else {
                break;
            };
            warn!(
                schedule = %name,
                missed = due.missed_count,
                first_missed = %first,
                last_missed = %last,
                policy = %schedule.missed,
                "fire times were missed"
            );
            match schedule.missed {
                MissedPolicy::RunOnce if due.on_time.is_empty() => {
                    fires.spawn(fire(
                        ctx.clone(),
                        schedule.clone(),
                        run_lock.clone(),
                        last,
                        due.missed_count,
                        stop.clone(),
                    ));
                }
                // The first on-time fire below stands for the missed ones.
                MissedPolicy::RunOnce => {}
                MissedPolicy::Skip => {
                    record_missed(&ctx, name, first, last, due.missed_count).await;
                }
            }
            cursor = last;
        }
        for (i, t) in due.on_time.iter().enumerate() {
            let carried = if i == 0 && schedule.missed == MissedPolicy::RunOnce {
                due.missed_count
            } else {
                0
            };
            fires.spawn(fire(
                ctx.clone(),
                schedule.clone(),
                run_lock.clone(),
                *t,
                carried,
                stop.clone(),
            ));
            cursor = *t;
        }

        let Some(next) = schedule.next_fire_after(cursor) else {
            info!(schedule = %name, "schedule never fires again");
            let _ = stop.wait_for(|s| *s).await;
            break;
        };
        let until = next.min(add(now, ctx.config.max_sleep));
        if sleep_or_stop(ctx.clock.as_ref(), until, &mut stop).await {
            break;
        }
    }

    // Let started and queued runs finish and record their outcomes.
    while let Some(res) = fires.join_next().await {
        if let Err(e) = res {
            error!(schedule = %name, error = %e, "fire task ended abnormally");
        }
    }
}

async fn record_missed(
    ctx: &Ctx,
    name: &str,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    count: u32,
) {
    let fire_ms = last.timestamp_millis();
    let now_ms = ctx.clock.now().timestamp_millis();
    match ctx
        .store
        .claim_fire(name, fire_ms, &ctx.config.holder, now_ms)
        .await
    {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            m::incr(m::STORE_ERRORS, name, 1);
            error!(schedule = %name, fire_time = %last, error = %e, "cannot record missed fires");
            return;
        }
    }
    m::incr(m::MISSED, name, u64::from(count));
    let outcome = FireOutcome {
        status: FireStatus::Missed,
        finished_at_ms: now_ms,
        error: None,
        detail: Some(format!(
            "{count} fire(s) missed from {} to {} (missed policy: skip)",
            first.to_rfc3339(),
            last.to_rfc3339()
        )),
        missed_count: count,
    };
    if let Err(e) = ctx.store.record_outcome(name, fire_ms, &outcome).await {
        m::incr(m::STORE_ERRORS, name, 1);
        error!(schedule = %name, fire_time = %last, error = %e, "cannot record missed fires");
    }
}

async fn finish(ctx: &Ctx, name: &str, fire_time: DateTime<Utc>, outcome: FireOutcome) {
    if let Err(e) = ctx
        .store
        .record_outcome(name, fire_time.timestamp_millis(), &outcome)
        .await
    {
        m::incr(m::STORE_ERRORS, name, 1);
        error!(schedule = %name, fire_time = %fire_time, status = %outcome.status, error = %e, "cannot record fire outcome");
    }
}

/// A fire claimed by another process, not finished, and not presumed dead.
async fn busy_elsewhere(ctx: &Ctx, name: &str, fire_ms: i64) -> Option<(i64, String)> {
    let now_ms = ctx.clock.now().timestamp_millis();
    let stale_ms = i64::try_from(ctx.config.stale_run_after.as_millis()).unwrap_or(i64::MAX);
    match ctx.store.recent_fires(name, 16).await {
        Ok(records) => records
            .into_iter()
            .find(|r| {
                r.status == FireStatus::Fired
                    && r.fire_time_ms < fire_ms
                    && now_ms.saturating_sub(r.claimed_at_ms) < stale_ms
            })
            .map(|r| (r.fire_time_ms, r.holder)),
        Err(e) => {
            m::incr(m::STORE_ERRORS, name, 1);
            warn!(schedule = %name, error = %e, "cannot check for runs in other processes; running anyway");
            None
        }
    }
}

fn skipped(ctx: &Ctx, reason: String) -> FireOutcome {
    FireOutcome {
        status: FireStatus::Skipped,
        finished_at_ms: ctx.clock.now().timestamp_millis(),
        error: Some(reason),
        detail: None,
        missed_count: 0,
    }
}

async fn fire(
    ctx: Arc<Ctx>,
    schedule: Arc<Schedule>,
    run_lock: Arc<Mutex<()>>,
    fire_time: DateTime<Utc>,
    missed_count: u32,
    mut stop: watch::Receiver<bool>,
) {
    let name = schedule.name.as_str();
    let holder = ctx.config.holder.as_str();
    let fire_ms = fire_time.timestamp_millis();
    let now_ms = ctx.clock.now().timestamp_millis();
    match ctx.store.claim_fire(name, fire_ms, holder, now_ms).await {
        Ok(true) => {}
        Ok(false) => {
            debug!(schedule = %name, fire_time = %fire_time, "fire claimed by another process");
            return;
        }
        Err(e) => {
            m::incr(m::STORE_ERRORS, name, 1);
            error!(schedule = %name, fire_time = %fire_time, error = %e, "cannot claim fire; not running it");
            return;
        }
    }
    if missed_count > 0 {
        m::incr(m::MISSED, name, u64::from(missed_count));
    }

    // Overlap with a run in this process.
    let _guard = match schedule.overlap {
        OverlapPolicy::Skip => match run_lock.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                m::incr(m::SKIPS, name, 1);
                info!(schedule = %name, fire_time = %fire_time, "previous run still running; fire skipped");
                let outcome = skipped(
                    &ctx,
                    "previous run still running (overlap policy: skip)".to_owned(),
                );
                finish(&ctx, name, fire_time, outcome).await;
                return;
            }
        },
        OverlapPolicy::Queue => run_lock.clone().lock_owned().await,
    };
    // Overlap with a run in another process.
    while let Some((other_ms, other_holder)) = busy_elsewhere(&ctx, name, fire_ms).await {
        let other = DateTime::from_timestamp_millis(other_ms)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        match schedule.overlap {
            OverlapPolicy::Skip => {
                m::incr(m::SKIPS, name, 1);
                info!(schedule = %name, fire_time = %fire_time, other_fire = %other, other_holder = %other_holder, "previous run still running in another process; fire skipped");
                let outcome = skipped(
                    &ctx,
                    format!(
                        "previous run (fire {other} on {other_holder}) still running (overlap policy: skip)"
                    ),
                );
                finish(&ctx, name, fire_time, outcome).await;
                return;
            }
            OverlapPolicy::Queue => {
                debug!(schedule = %name, fire_time = %fire_time, other_fire = %other, other_holder = %other_holder, "queued behind a run in another process");
                let until = add(ctx.clock.now(), ctx.config.busy_poll_interval);
                if sleep_or_stop(ctx.clock.as_ref(), until, &mut stop).await {
                    let outcome = skipped(
                        &ctx,
                        "scheduler stopped while the fire was queued".to_owned(),
                    );
                    m::incr(m::SKIPS, name, 1);
                    finish(&ctx, name, fire_time, outcome).await;
                    return;
                }
            }
        }
    }

    m::incr(m::FIRES, name, 1);
    let started = ctx.clock.now();
    info!(schedule = %name, fire_time = %fire_time, job = %schedule.job, holder = %holder, missed = missed_count, "job started");
    let runner = ctx.runner.clone();
    let job = schedule.job.clone();
    let task_name = schedule.name.clone();
    let result = tokio::spawn(async move { runner.run(&task_name, &job, fire_time).await }).await;
    let finished = ctx.clock.now();
    let secs = (finished - started).num_milliseconds() as f64 / 1000.0;
    m::run_seconds(name, secs);
    let detail_missed =
        (missed_count > 0).then(|| format!("catch-up run for {missed_count} missed fire(s)"));
    let outcome = match result {
        Ok(Ok(o)) => {
            m::incr(m::SUCCESSES, name, 1);
            info!(schedule = %name, fire_time = %fire_time, seconds = secs, "job succeeded");
            FireOutcome {
                status: FireStatus::Succeeded,
                finished_at_ms: finished.timestamp_millis(),
                error: None,
                detail: join_detail(o.summary, detail_missed),
                missed_count,
            }
        }
        Ok(Err(e)) => {
            m::incr(m::FAILURES, name, 1);
            warn!(schedule = %name, fire_time = %fire_time, seconds = secs, error = %e, "job failed");
            FireOutcome {
                status: FireStatus::Failed,
                finished_at_ms: finished.timestamp_millis(),
                error: Some(e),
                detail: detail_missed,
                missed_count,
            }
        }
        Err(join) => {
            m::incr(m::FAILURES, name, 1);
            error!(schedule = %name, fire_time = %fire_time, error = %join, "job panicked");
            FireOutcome {
                status: FireStatus::Failed,
                finished_at_ms: finished.timestamp_millis(),
                error: Some(format!("job panicked: {join}")),
                detail: detail_missed,
                missed_count,
            }
        }
    };
    // Record before releasing the overlap lock, so a queued fire sees this one finished.
    finish(&ctx, name, fire_time, outcome).await;
}

fn join_detail(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}
