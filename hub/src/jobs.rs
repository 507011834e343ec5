//! What `huitong serve` runs in the background besides HTTP: the scheduler,
//! whose `reconcile <route>` jobs run the org sync, the consumer of the
//! `ingress` queue (live changes) and the consumers of each route's
//! `deliver.<route>` queue (the steps every apply publishes).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use huitong_schedules::{
    Job, JobOutcome, JobRunner, Scheduler, SchedulerConfig, SchedulerHandle, SystemClock,
};

use crate::config::Config;
use crate::queue::{ConsumeOptions, ConsumerHandle, Queue, QueueError};
use crate::store::Store;
use crate::sync::{self, RouteContext, SyncError};

/// Runs scheduled jobs against this process's configuration and store.
pub struct Runner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
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
        let done = sync::reconcile(
            &self.config,
            &*self.store,
            &*self.queue,
            route,
            sync::RunKind::Scheduled,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(JobOutcome {
            summary: Some(done.to_string()),
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

/// How often `serve` looks at the admins' mapping files for changes.
pub const MAPPING_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Watch the admins' mapping files (`[connectors.NAME.mappings]`): every
/// [`MAPPING_RELOAD_INTERVAL`], a file whose modification time changed is loaded again; one
/// that compiles replaces its mapping in the connector's one instance (the next plan, live
/// change and step use it), one that does not is refused with its file and line in the log,
/// and the mapping in use stays. `None` when no connector has a mapping file.
pub fn start_mapping_reload(config: &Config) -> Option<tokio::task::JoinHandle<()>> {
    let mut endpoints = Vec::new();
    for c in config.connectors.values() {
        if !c
            .mappings
            .values()
            .any(|s| matches!(s, sync::connect::MappingSource::File(_)))
        {
            continue;
        }
        match sync::connect::endpoint(c) {
            Ok(e) => endpoints.push(e),
            Err(e) => {
                tracing::warn!(connector = %c.name, error = %e, "mapping files not watched: the connector does not build");
            }
        }
    }
    if endpoints.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAPPING_RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for e in &endpoints {
                let r = e.reload();
                for entity in &r.replaced {
                    tracing::info!(connector = %e.name, entity = %entity, "mapping file changed: reloaded");
                    crate::telemetry::mapping_reloaded(&e.name, true);
                }
                for problem in &r.refused {
                    tracing::error!(connector = %e.name, problem = %problem, "mapping file changed but does not compile: the mapping in use is kept");
                    crate::telemetry::mapping_reloaded(&e.name, false);
                }
            }
        }
    }))
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
