//! What `huitong serve` runs in the background besides HTTP: the scheduler,
//! whose `reconcile <route>` jobs run the org sync, the consumer of the
//! `ingress` queue (live changes) and the consumers of each route's
//! `deliver.<route>` queue (the steps every apply publishes).

use std::sync::Arc;
use tracing::Instrument;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use huitong_schedules::{
    Job, JobOutcome, JobRunner, Scheduler, SchedulerConfig, SchedulerHandle, SystemClock,
};

use crate::config::Config;
use crate::queue::{ConsumeOptions, ConsumerHandle, Queue, QueueError};
use crate::store::Store;
use crate::sync::{self, Action, RouteContext, SyncError};

/// Runs scheduled jobs against this process's configuration and store.
pub struct Runner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
}

/// Reconcile one route: plan, then apply (never forced; a plan above the safety
/// threshold fails the fire, visible in `huitong schedule list`).
/// The steps go through `deliver.<route>`, whose consumer must run (`start_deliveries`).
/// `run_kind` is what started it (`sync::run_kind::SCHEDULED` or `RECONCILE`), as
/// `huitong sync runs` shows it.
pub async fn reconcile(
    config: &Config,
    store: &dyn Store,
    queue: &dyn Queue,
    route: &str,
    run_kind: &'static str,
) -> Result<String, String> {
    reconcile_route(config, store, queue, route, run_kind)
        .instrument(tracing::info_span!("reconcile", route = %route))
        .await
}

async fn reconcile_route(
    config: &Config,
    store: &dyn Store,
    queue: &dyn Queue,
    route: &str,
    run_kind: &'static str,
) -> Result<String, String> {
    let ctx = RouteContext::new(config, route).map_err(|e| e.to_string())?;
    let plan = sync::plan(&ctx, store)
        .await
        .map_err(|e| e.to_string())?
        .run_as(run_kind);
    let report = sync::apply(&ctx, &plan, store, queue, false, &|_, _| {})
        .await
        .map_err(|e| e.to_string())?;
    let summary = format!(
        "{} created, {} updated, {} moved, {} disabled, {} deleted, {} conflicts",
        plan.count(Action::Create),
        plan.count(Action::Update),
        plan.count(Action::Move),
        plan.count(Action::Disable),
        plan.count(Action::Delete),
        plan.targets
            .iter()
            .map(|t| t.conflicts.len())
            .sum::<usize>()
    );
    match report.errors.first() {
        None => Ok(summary),
        Some(e) => Err(format!(
            "{summary}; {} failed, first: {e}",
            report.errors.len()
        )),
    }
}

#[async_trait]
impl JobRunner for Runner {
    async fn run(
        &self,
        schedule: &str,
        job: &Job,
        fire_time: DateTime<Utc>,
    ) -> Result<JobOutcome, String> {
        let Some(route) = job.route() else {
            return Err(format!("job {job} is not supported by this huitong"));
        };
        tracing::info!(schedule, route, fire_time = %fire_time, "scheduled reconcile");
        let summary = reconcile(
            &self.config,
            &*self.store,
            &*self.queue,
            route,
            sync::run_kind::SCHEDULED,
        )
        .await?;
        Ok(JobOutcome {
            summary: Some(summary),
        })
    }
}

/// The schedule files judged by the one rule `config check` and `serve` share: a file
/// that does not load is an error (neither runs); a schedule whose job names a route that
/// is not configured is skipped with a warning (the shipped `schedules/files/org.yaml`
/// names `org`, which a fresh configuration has not yet).
#[derive(Debug, Default)]
pub struct ScheduleCheck {
    /// The schedules to run.
    pub schedules: Vec<huitong_schedules::Schedule>,
    /// Problems that leave the set usable, one line each.
    pub warnings: Vec<String>,
    /// Problems that stop `config check` (exit 2) and `serve` from starting, one line each.
    pub errors: Vec<String>,
}

/// Load and judge the configured schedule folder (see [`ScheduleCheck`]); a missing
/// folder means no schedules.
pub fn check_schedules(config: &Config) -> ScheduleCheck {
    let dir = &config.schedules.dir;
    let mut check = ScheduleCheck::default();
    if !dir.exists() {
        return check;
    }
    let set = match huitong_schedules::load_dir(dir) {
        Ok(set) => set,
        Err(e) => {
            for d in &e.diagnostics {
                match d.severity {
                    huitong_schedules::Severity::Error => check.errors.push(d.to_string()),
                    huitong_schedules::Severity::Warning => check.warnings.push(d.to_string()),
                }
            }
            return check;
        }
    };
    check.warnings = set.warnings.iter().map(ToString::to_string).collect();
    for s in set.schedules {
        match s.job.route() {
            Some(route) if !config.routes.contains_key(route) => check.warnings.push(format!(
                "warning: {}: schedule `{}`: key `job`: route {route:?} is not configured under [routes]; the schedule is skipped",
                s.source.display(),
                s.name
            )),
            _ => check.schedules.push(s),
        }
    }
    check
}

/// Start the scheduler with the configured schedules whose routes exist (see
/// [`check_schedules`]). Returns `None` when there is nothing to schedule.
pub fn start_scheduler(
    config: &Config,
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
) -> Option<SchedulerHandle> {
    let check = check_schedules(config);
    for w in &check.warnings {
        tracing::warn!("{}", w.trim_start_matches("warning: "));
    }
    if !check.errors.is_empty() {
        tracing::error!(dir = %config.schedules.dir.display(), problems = %check.errors.join("; "), "schedules not started: the files have errors");
        return None;
    }
    let schedules = check.schedules;
    if schedules.is_empty() {
        return None;
    }
    huitong_schedules::metrics::describe();
    let holder = format!(
        "{}:{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "huitong".into()),
        std::process::id(),
        Utc::now().timestamp_millis()
    );
    let runner = Arc::new(Runner {
        config: config.clone(),
        store: store.clone(),
        queue,
    });
    let fires: Arc<dyn huitong_schedules::FireStore> = store;
    tracing::info!(count = schedules.len(), "schedules started");
    Some(
        Scheduler::new(
            schedules,
            runner,
            fires,
            Arc::new(SystemClock),
            SchedulerConfig::new(holder),
        )
        .start(),
    )
}

/// Start the consumer of the `ingress` queue (vendor events → live reconcile).
pub async fn start_ingress(
    config: &Config,
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
) -> Result<ConsumerHandle, QueueError> {
    let handler = Arc::new(crate::live::IngressHandler::new(
        config.clone(),
        store,
        queue.clone(),
    ));
    queue
        .consume(
            crate::queue::INGRESS,
            handler,
            ConsumeOptions {
                lanes: 4,
                prefetch: 16,
            },
        )
        .await
}

/// Start a consumer of `deliver.<route>` for every configured route: they write the steps
/// of every apply, whichever process published them.
pub async fn start_deliveries(
    config: &Config,
    store: Arc<dyn Store>,
    queue: &dyn Queue,
) -> Result<Vec<ConsumerHandle>, SyncError> {
    let mut out = Vec::new();
    for route in config.routes.keys() {
        out.push(start_delivery(config, route, store.clone(), queue).await?);
    }
    Ok(out)
}

/// Start the consumer of one route's `deliver.<route>` queue.
pub async fn start_delivery(
    config: &Config,
    route: &str,
    store: Arc<dyn Store>,
    queue: &dyn Queue,
) -> Result<ConsumerHandle, SyncError> {
    let ctx = Arc::new(RouteContext::new(config, route)?);
    let handler = Arc::new(sync::StepHandler::new(
        ctx,
        store,
        config.queue.retry_tiers.len(),
    ));
    queue
        .consume(
            &crate::queue::deliver_queue(route),
            handler,
            ConsumeOptions {
                lanes: 4,
                prefetch: 64,
            },
        )
        .await
        .map_err(SyncError::Queue)
}

/// Hourly housekeeping: forget processed event ids past their expiry.
pub fn start_housekeeping(store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tick.tick().await;
            match store.purge_events(crate::store::now_ms()).await {
                Ok(n) => tracing::debug!(purged = n, "expired event ids purged"),
                Err(e) => tracing::warn!(error = %e, "could not purge expired event ids"),
            }
        }
    })
}
