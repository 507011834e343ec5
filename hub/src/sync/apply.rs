//! Carrying a plan out, through the queue.
//!
//! [`apply`] is the coordinator: it checks the safety threshold, opens a run,
//! stores the source's records and links, then publishes the plan's steps as
//! `ApplyStepV1` tasks on the route's `deliver.<route>` queue **one wave at a
//! time** — a wave holds steps with no dependency on each other (departments of
//! one depth, people of one manager depth, removals) — and waits until every
//! step of a wave is finished before publishing the next, so parents exist
//! before their children and managers before their reports whichever consumer
//! handles them. References still unresolved after the last wave (a leader
//! created later in the run) are written once more in a final wave.
//!
//! [`StepHandler`] is the consumer: it writes one step to its target. Each step
//! has a row in `run_steps`, claimed (`started`) before the vendor write and
//! finished after it, so a redelivered step is recognised: a finished one is
//! skipped, and a **create** found still `started` (its handler died between
//! the vendor write and the row) is repeated only where the vendor takes an
//! idempotency key (`keyed_creates`); otherwise it is recorded as failed and
//! the next plan links the record by the match rules or creates it. A create
//! whose record is already linked in the target (made since the plan by a step
//! of an older run still queued) becomes an update of that record. Steps of a
//! run that is no longer running (superseded by a newer apply of the route, or
//! interrupted) are dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use futures_util::StreamExt;
use huitong_connectors::ConnectorError;
use huitong_mappings::{Direction, Mapping};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::connect::Mappings;
use super::{
    Endpoint, Plan, PlanKind, RouteContext, RunKind, SideResolver, Step, SyncError, echo_hash,
};
use crate::model::{Action, Entity, WireStep};
use crate::queue::{self, Envelope, Handler, Outcome, Queue, Task};
use crate::store::{
    LinkOutcome, RecordWrite, RunStatus, StepStatus, Store, StoreError, Xref, now_ms,
};

/// Counts of one apply.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ApplyReport {
    pub counts: BTreeMap<String, i64>,
    pub errors: Vec<String>,
    pub run_id: String,
}

/// Called as steps finish (for a progress bar): (done, total).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

impl WireStep {
    pub fn of(step: &Step) -> Self {
        WireStep {
            action: step.action,
            entity: step.entity,
            canonical_id: step.canonical_id.clone(),
            name: step.name.clone(),
            target_id: step.target_id.clone(),
            link_first: step.link_first,
            emptied: step
                .changes
                .iter()
                .filter(|(_, c)| c.new.is_null() && c.old.is_array())
                .map(|(f, _)| f.clone())
                .collect(),
            record: step.record.value(),
            expected: step.expected.as_ref().map(|c| c.value()),
        }
    }
}

/// How often the coordinator looks at the run's progress, at most and at least.
const POLL_MIN: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(200);
/// Publishes in flight at once while a wave is enqueued.
const PUBLISH_CONCURRENCY: usize = 16;
/// Steps encoded at once while a wave is enqueued.
const PUBLISH_SLICE: usize = 512;

/// Apply a plan through the queue (see the module docs). Refuses plans above the safety
/// threshold unless `force`. A consumer of `deliver.<route>` ([`StepHandler`]) must run —
/// in this process (`sync apply` starts one) or in `huitong serve`.
pub async fn apply(
    ctx: &RouteContext,
    plan: &Plan,
    store: &dyn Store,
    queue: &dyn Queue,
    force: bool,
    progress: Progress<'_>,
) -> Result<ApplyReport, SyncError> {
    apply_until(
        ctx,
        plan,
        store,
        queue,
        force,
        progress,
        &CancellationToken::new(),
    )
    .await
}

/// [`apply`] that stops when `cancel` fires (Ctrl-C): the run is recorded as interrupted
/// and its steps still queued are dropped by the handlers.
pub async fn apply_until(
    ctx: &RouteContext,
    plan: &Plan,
    store: &dyn Store,
    queue: &dyn Queue,
    force: bool,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<ApplyReport, SyncError> {
    for t in &plan.targets {
        if t.people_in_target > 0 {
            let percent = 100.0 * t.removals as f64 / t.people_in_target as f64;
            if percent > ctx.route.safety_threshold_percent && !force {
                return Err(SyncError::SafetyThreshold {
                    target: t.target.clone(),
                    removals: t.removals,
                    people: t.people_in_target,
                    percent,
                    threshold: ctx.route.safety_threshold_percent,
                });
            }
        }
    }
    let route = &ctx.route.name;
    let run = store
        .start_run(route, plan.run_kind.as_str(), now_ms())
        .await?;
    // An older full run of this route still marked running (its coordinator died or is still
    // waiting): this plan was made from the state that run left, so it takes over. (A live
    // run — the few records of one event — supersedes nothing and is superseded by nothing.)
    // Full runs are recorded as apply, scheduled or reconcile, by what started them.
    let superseding = plan.kind == PlanKind::Reconcile;
    let mut superseded = false;
    for old in store.list_runs(Some(route), 200).await? {
        if superseding
            && old.kind != RunKind::Live.as_str()
            && old.status == RunStatus::Running
            && old.id != run.id
        {
            store
                .finish_run(
                    &old.id,
                    RunStatus::Interrupted,
                    &old.counts,
                    Some(&format!("superseded by run {}", run.id)),
                    now_ms(),
                )
                .await?;
            tracing::info!(route = %route, run = %old.id, by = %run.id, "older run superseded");
            superseded = true;
        }
    }
    if superseded {
        // Handlers drop a superseded run's queued steps once they see its status, which they
        // cache for RUN_STATUS_TTL: let that pass before this run writes the same records.
        // (A create that still slips through is turned into an update: see `apply_step`.)
        tokio::time::sleep(RUN_STATUS_TTL + Duration::from_millis(100)).await;
    }
    let outcome = carry_out(ctx, plan, store, queue, progress, cancel, &run.id).await;
    let (status, report) = match outcome {
        Ok(report) => (
            if report.errors.is_empty() {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            },
            report,
        ),
        Err(e) => {
            let status = if matches!(e, SyncError::Interrupted(_)) {
                RunStatus::Interrupted
            } else {
                RunStatus::Failed
            };
            let counts = BTreeMap::new();
            let msg = e.to_string();
            // Superseded runs were finished by their successor; don't overwrite that.
            if store
                .get_run(&run.id)
                .await?
                .is_some_and(|r| r.status == RunStatus::Running)
            {
                store
                    .finish_run(&run.id, status, &counts, Some(&msg), now_ms())
                    .await?;
            }
            return Err(e);
        }
    };
    let error = report.errors.first().cloned();
    store
        .finish_run(&run.id, status, &report.counts, error.as_deref(), now_ms())
        .await?;
    Ok(report)
}

/// A step with its number in the run and its target.
type Numbered<'a> = (i64, &'a str, &'a Step);

async fn carry_out(
    ctx: &RouteContext,
    plan: &Plan,
    store: &dyn Store,
    queue: &dyn Queue,
    progress: Progress<'_>,
    cancel: &CancellationToken,
    run_id: &str,
) -> Result<ApplyReport, SyncError> {
    let route = &ctx.route.name;
    // The canonical store and the source's links first: they make the ids stable.
    for (entity, external, record) in &plan.source_records {
        let Some(id) = record.get("id") else {
            continue;
        };
        store
            .upsert_record(
                &RecordWrite {
                    entity: *entity,
                    id: id.to_owned(),
                    data: record.value(),
                    source_system: Some(ctx.source.name.clone()),
                    source_time_ms: None,
                    deleted: false,
                },
                now_ms(),
            )
            .await?;
        link(store, *entity, id, &ctx.source.name, external, None).await?;
    }

    // Number the steps (target by target, in plan order) and cut them into waves.
    let mut numbered: Vec<Numbered> = Vec::new();
    for tp in &plan.targets {
        if !ctx.targets.iter().any(|t| t.name == tp.target) {
            continue;
        }
        for step in &tp.steps {
            numbered.push((numbered.len() as i64, tp.target.as_str(), step));
        }
    }
    let total = numbered.len();
    let mut waves: BTreeMap<(u8, i64), Vec<Numbered>> = BTreeMap::new();
    for n in &numbered {
        waves.entry(n.2.wave()).or_default().push(*n);
    }
    let mut waiter = Waiter {
        store,
        run_id,
        route,
        cancel,
        progress,
        done: 0,
        total,
    };
    progress(0, total);
    for wave in waves.values() {
        // Enqueued in slices: a wave can hold every person of a large org.
        for slice in wave.chunks(PUBLISH_SLICE) {
            let mut items = Vec::with_capacity(slice.len());
            for (seq, target, step) in slice {
                items.push((*seq, (*target).to_owned(), WireStep::of(step)));
            }
            publish_wave(queue, route, run_id, items).await?;
        }
        for (from, to) in ranges(wave.iter().map(|w| w.0)) {
            waiter.wait(from, to).await?;
        }
    }

    // References to records created later in this run (leaders, managers): write once more.
    // Only the rows asked for: a large org's run has a row per record.
    let rows = store
        .run_steps(run_id, Some(StepStatus::Unresolved))
        .await?;
    // A department's leaders the target sets from the people's own records (created in the
    // waves since) need no second write — when each leader's record says they lead it.
    let people: HashMap<&str, &super::Canon> = plan
        .source_records
        .iter()
        .filter(|(e, _, _)| *e == Entity::Person)
        .filter_map(|(_, _, c)| Some((c.get("id")?, &**c)))
        .collect();
    let led_by_people = |target: &str, step: &Step| -> bool {
        let carries = ctx
            .targets
            .iter()
            .any(|t| t.name == target && t.person_carries_leadership());
        let record = step.record.value();
        let leaders = record.get("leader_ids").and_then(Value::as_array);
        carries
            && step.entity == Entity::Department
            && leaders.is_some_and(|ls| {
                ls.iter().all(|l| {
                    l.as_str().and_then(|l| people.get(l)).is_some_and(|p| {
                        p.value()
                            .get("leader_of")
                            .and_then(Value::as_array)
                            .is_some_and(|of| {
                                of.iter().any(|d| d.as_str() == Some(&step.canonical_id))
                            })
                    })
                })
            })
    };
    let mut unresolved: Vec<(i64, String, WireStep)> = Vec::new();
    for r in &rows {
        let Some((_, target, step)) = usize::try_from(r.seq).ok().and_then(|i| numbered.get(i))
        else {
            continue;
        };
        if led_by_people(target, step) {
            continue;
        }
        let mut again = WireStep::of(step);
        again.action = Action::Update;
        again.link_first = false;
        unresolved.push((
            total as i64 + unresolved.len() as i64,
            (*target).to_owned(),
            again,
        ));
    }
    tracing::debug!(route = %route, revisit = unresolved.len(), "second pass");
    if !unresolved.is_empty() {
        let (from, to) = (total as i64, total as i64 + unresolved.len() as i64);
        waiter.total += unresolved.len();
        publish_wave(queue, route, run_id, unresolved).await?;
        waiter.wait(from, to).await?;
    }

    // The report: every step finished (the waits saw to it), so what did not fail was written —
    // by whichever process handled it. Only the failed rows are read back.
    let mut report = ApplyReport {
        run_id: run_id.to_owned(),
        ..ApplyReport::default()
    };
    for (_, _, s) in &numbered {
        *report
            .counts
            .entry(s.action.as_str().to_owned())
            .or_default() += 1;
    }
    for r in store.run_steps(run_id, Some(StepStatus::Failed)).await? {
        let second = r.seq >= total as i64;
        let step = usize::try_from(r.seq).ok().and_then(|i| numbered.get(i));
        let name = step
            .map(|(_, _, s)| format!("{} {:?} ({})", s.entity, s.name, s.canonical_id))
            .unwrap_or_else(|| format!("step {}", r.seq));
        if !second && let Some(n) = report.counts.get_mut(&r.action) {
            *n -= 1;
        }
        *report.counts.entry("failed".into()).or_default() += 1;
        let pass = if second { "second pass: " } else { "" };
        report.errors.push(format!(
            "{} {name}: {pass}{}",
            r.target,
            r.error.as_deref().unwrap_or("failed")
        ));
    }
    report.counts.retain(|_, n| *n > 0);
    for e in &report.errors {
        tracing::warn!(route = %route, error = %e, "step failed");
    }
    Ok(report)
}

/// Consecutive runs of seq numbers, as half-open ranges.
fn ranges(seqs: impl Iterator<Item = i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some((_, to)) if *to == s => *to = s + 1,
            _ => out.push((s, s + 1)),
        }
    }
    out
}

/// Publish steps (seq, target, step) on `deliver.<route>`, some in flight at once.
async fn publish_wave(
    queue: &dyn Queue,
    route: &str,
    run_id: &str,
    items: Vec<(i64, String, WireStep)>,
) -> Result<(), SyncError> {
    let deliver = queue::deliver_queue(route);
    let deliver = &deliver;
    let mut inflight = futures_util::stream::FuturesUnordered::new();
    for (seq, target, step) in items {
        // One lane per target: a consumer writes to one vendor in order.
        let envelope = Envelope::new(
            target.clone(),
            Task::ApplyStepV1 {
                route: route.to_owned(),
                run_id: run_id.to_owned(),
                target,
                seq,
                step,
            },
        );
        if inflight.len() >= PUBLISH_CONCURRENCY
            && let Some(r) = inflight.next().await
        {
            r?;
        }
        inflight.push(async move {
            queue
                .publish(deliver, &envelope)
                .await
                .map_err(SyncError::Queue)
        });
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    Ok(())
}

/// Waits for published steps to finish, reporting progress and noticing interruptions.
struct Waiter<'a> {
    store: &'a dyn Store,
    run_id: &'a str,
    route: &'a str,
    cancel: &'a CancellationToken,
    progress: Progress<'a>,
    /// Steps finished in ranges already waited for.
    done: usize,
    total: usize,
}

impl Waiter<'_> {
    async fn wait(&mut self, from: i64, to: i64) -> Result<(), SyncError> {
        let want = (to - from) as usize;
        let mut poll = POLL_MIN;
        let mut last = 0usize;
        let mut last_change = Instant::now();
        let mut last_run_check = Instant::now();
        let mut warned = false;
        loop {
            let n = self
                .store
                .count_finished_steps(self.run_id, from, to)
                .await? as usize;
            if n != last {
                last = n;
                last_change = Instant::now();
                poll = POLL_MIN;
                (self.progress)(self.done + n, self.total);
            } else {
                poll = (poll * 2).min(POLL_MAX);
            }
            if n >= want {
                self.done += want;
                return Ok(());
            }
            if last_run_check.elapsed() >= Duration::from_secs(1) {
                last_run_check = Instant::now();
                match self.store.get_run(self.run_id).await? {
                    Some(r) if r.status == RunStatus::Running => {}
                    Some(r) => {
                        return Err(SyncError::Interrupted(format!(
                            "run {} is {} ({})",
                            self.run_id,
                            r.status.as_str(),
                            r.error.unwrap_or_default()
                        )));
                    }
                    None => {
                        return Err(SyncError::Interrupted(format!(
                            "run {} is gone",
                            self.run_id
                        )));
                    }
                }
            }
            if !warned && last_change.elapsed() >= Duration::from_secs(30) {
                warned = true;
                tracing::warn!(route = %self.route, run = %self.run_id, queue = %queue::deliver_queue(self.route),
                    waiting = want - n, "no step finished for 30 s: a vendor's rate limit may be holding them back, or no consumer of the queue is running (huitong serve, or sync apply)");
            }
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    return Err(SyncError::Interrupted(format!("run {} was cancelled", self.run_id)));
                }
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// The consumer of `deliver.<route>`: writes `ApplyStepV1` steps to their targets.
pub struct StepHandler {
    ctx: Arc<RouteContext>,
    store: Arc<dyn Store>,
    /// Retry tiers a step that failed transiently may go through before it is recorded as
    /// failed (the run waits for it meanwhile).
    retries: u32,
    /// Identity maps per (run, target): filled from the store as steps need links (another
    /// process may have written the record) and by this handler's own writes.
    resolvers: Mutex<HashMap<(String, String), Arc<SideResolver>>>,
    /// Whether a run is still running, looked up at most once a second.
    runs: Mutex<HashMap<String, (bool, Instant)>>,
}

/// How long a handler trusts a run's status it looked up.
const RUN_STATUS_TTL: Duration = Duration::from_secs(1);

/// A step that failed transiently goes through at most this many retry tiers.
const STEP_RETRY_TIERS: u32 = 2;

impl StepHandler {
    pub fn new(ctx: Arc<RouteContext>, store: Arc<dyn Store>, retry_tiers: usize) -> Self {
        StepHandler {
            ctx,
            store,
            retries: (retry_tiers as u32).min(STEP_RETRY_TIERS),
            resolvers: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
        }
    }

    async fn running(&self, run_id: &str) -> Result<bool, StoreError> {
        let mut runs = self.runs.lock().await;
        if let Some((running, at)) = runs.get(run_id)
            && at.elapsed() < RUN_STATUS_TTL
        {
            return Ok(*running);
        }
        let running = self
            .store
            .get_run(run_id)
            .await?
            .is_some_and(|r| r.status == RunStatus::Running);
        if runs.len() > 64 {
            runs.clear();
        }
        runs.insert(run_id.to_owned(), (running, Instant::now()));
        Ok(running)
    }

    async fn resolver(&self, run_id: &str, target: &str) -> Result<Arc<SideResolver>, SyncError> {
        let key = (run_id.to_owned(), target.to_owned());
        let mut map = self.resolvers.lock().await;
        if let Some(r) = map.get(&key) {
            return Ok(r.clone());
        }
        // Empty at first: filled from the store as steps need links (`map_for`), so a run of
        // a few records does not load every link of a large org.
        let r = Arc::new(SideResolver::new(target, false));
        if map.len() >= 8 {
            map.clear();
        }
        map.insert(key, r.clone());
        Ok(r)
    }

    async fn step(
        &self,
        envelope: &Envelope,
        run_id: &str,
        target: &str,
        seq: i64,
        step: &WireStep,
    ) -> Outcome {
        match self.running(run_id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(run = %run_id, seq, "step of a run no longer running; dropped");
                return Outcome::Ok;
            }
            Err(e) => return Outcome::Retry(format!("looking up run {run_id}: {e}")),
        }
        let Some(endpoint) = self.ctx.targets.iter().find(|t| t.name == target) else {
            return Outcome::Permanent(format!(
                "route {} has no target {target:?}",
                self.ctx.route.name
            ));
        };
        let store = &*self.store;
        let row = match store
            .begin_step(run_id, seq, target, step.action.as_str(), now_ms())
            .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("claiming step {seq}: {e}")),
        };
        let finish = async |status: StepStatus, error: Option<&str>| match store
            .finish_step(run_id, seq, status, error, now_ms())
            .await
        {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Retry(format!("recording step {seq}: {e}")),
        };
        match row.status {
            StepStatus::Done | StepStatus::Unresolved | StepStatus::Failed => {
                tracing::debug!(run = %run_id, seq, "step already finished; redelivery dropped");
                return Outcome::Ok;
            }
            StepStatus::Started if row.attempts > 1 && step.action == Action::Create => {
                // The handler before died between claiming and finishing. Linked: the create
                // went through. Not linked: the record may exist in the target with its link
                // lost — never create blindly.
                return match store
                    .find_by_canonical(step.entity, target, &step.canonical_id)
                    .await
                {
                    Ok(Some(_)) => finish(StepStatus::Done, None).await,
                    // Keyed creates are idempotent: repeating one cannot make a second record.
                    Ok(None) if endpoint.directory.keyed_creates(step.entity.vendor()) => {
                        tracing::info!(run = %run_id, seq, target, name = %step.name, "create interrupted earlier; repeated with its key");
                        self.write(endpoint, envelope, run_id, target, seq, step)
                            .await
                    }
                    Ok(None) => {
                        tracing::warn!(run = %run_id, seq, target, name = %step.name, "create interrupted earlier; not repeated");
                        finish(
                            StepStatus::Failed,
                            Some("interrupted while creating (the record may exist in the target); the next plan links it by the match rules or creates it"),
                        )
                        .await
                    }
                    Err(e) => Outcome::Retry(format!("looking up step {seq}'s link: {e}")),
                };
            }
            StepStatus::Retrying => {
                // Failed transiently before, known not written: claim it again.
                if let Err(e) = store
                    .finish_step(run_id, seq, StepStatus::Started, None, now_ms())
                    .await
                {
                    return Outcome::Retry(format!("claiming step {seq}: {e}"));
                }
            }
            StepStatus::Started => {}
        }
        self.write(endpoint, envelope, run_id, target, seq, step)
            .await
    }

    /// Write a claimed step and finish its row.
    async fn write(
        &self,
        endpoint: &Endpoint,
        envelope: &Envelope,
        run_id: &str,
        target: &str,
        seq: i64,
        step: &WireStep,
    ) -> Outcome {
        let store = &*self.store;
        let finish = async |status: StepStatus, error: Option<&str>| match store
            .finish_step(run_id, seq, status, error, now_ms())
            .await
        {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Retry(format!("recording step {seq}: {e}")),
        };
        let resolver = match self.resolver(run_id, target).await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("loading {target}'s links: {e}")),
        };
        match apply_step(endpoint, &resolver, store, step).await {
            Ok(false) => finish(StepStatus::Done, None).await,
            Ok(true) => finish(StepStatus::Unresolved, None).await,
            Err(e) if e.is_transient() && envelope.attempt < self.retries => {
                // Known not written: the retry may write (even create) again.
                let msg = e.to_string();
                tracing::warn!(run = %run_id, seq, target, name = %step.name, error = %msg, "step failed transiently; retried");
                match store
                    .finish_step(run_id, seq, StepStatus::Retrying, Some(&msg), now_ms())
                    .await
                {
                    Ok(_) => Outcome::Retry(msg),
                    Err(e) => Outcome::Retry(format!("recording step {seq}: {e}")),
                }
            }
            Err(e) => finish(StepStatus::Failed, Some(&e.to_string())).await,
        }
    }
}

#[async_trait::async_trait]
impl Handler for StepHandler {
    async fn handle(&self, envelope: &Envelope) -> Outcome {
        match &envelope.task {
            Task::ApplyStepV1 {
                route,
                run_id,
                target,
                seq,
                step,
            } if *route == self.ctx.route.name => {
                // Every log of the step, the connector's calls included, carries its route,
                // run and trace.
                let span = tracing::info_span!(
                    "deliver",
                    route = %route,
                    run = %run_id,
                    target = %target,
                    seq = *seq,
                    trace = %envelope.trace_id,
                );
                self.step(envelope, run_id, target, *seq, step)
                    .instrument(span)
                    .await
            }
            other => Outcome::Permanent(format!(
                "deliver.{} does not take {other:?}",
                self.ctx.route.name
            )),
        }
    }
}

pub(super) async fn link(
    store: &dyn Store,
    entity: Entity,
    canonical: &str,
    system: &str,
    external: &str,
    written_hash: Option<String>,
) -> Result<(), SyncError> {
    let outcome = store
        .link(
            &Xref {
                entity,
                canonical_id: canonical.to_owned(),
                system: system.to_owned(),
                external_id: external.to_owned(),
                last_written_hash: written_hash.clone(),
                last_seen_hash: None,
            },
            now_ms(),
        )
        .await?;
    match outcome {
        LinkOutcome::Linked => Ok(()),
        LinkOutcome::AlreadyLinked => {
            if let Some(h) = written_hash {
                store
                    .set_written_hash(entity, system, external, &h, now_ms())
                    .await?;
            }
            Ok(())
        }
        LinkOutcome::ExternalTaken { canonical_id } => Err(SyncError::ExternalLinked {
            system: system.to_owned(),
            entity,
            external_id: external.to_owned(),
            linked: canonical_id,
            wanted: canonical.to_owned(),
        }),
        LinkOutcome::CanonicalTaken { external_id } => Err(SyncError::CanonicalLinked {
            system: system.to_owned(),
            entity,
            canonical_id: canonical.to_owned(),
            linked: external_id,
            wanted: external.to_owned(),
        }),
    }
}

/// Why one step could not be written.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// The vendor refused or failed the write.
    #[error(transparent)]
    Vendor(#[from] ConnectorError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The record could not be mapped for the target.
    #[error("mapping: {0}")]
    Mapping(String),
    /// An update of a record the target has no id for.
    #[error("{canonical_id} has no id in {target}")]
    NoTargetId {
        canonical_id: String,
        target: String,
    },
}

impl StepError {
    /// Worth trying again later (the vendor or the store was briefly unavailable).
    fn is_transient(&self) -> bool {
        match self {
            StepError::Vendor(e) => e.is_transient(),
            StepError::Sync(SyncError::Store(_)) => true,
            _ => false,
        }
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError::Sync(SyncError::Store(e))
    }
}

/// Map a canonical record for the target. References the in-memory identity map lacks are
/// looked up in the store (another process may have written them) and the record mapped
/// again; returns the vendor record and whether some reference is still unresolved.
async fn map_for(
    mapping: &Mapping,
    record: &Value,
    resolver: &SideResolver,
    store: &dyn Store,
    own_id: &str,
) -> Result<(Value, bool), StepError> {
    let mut refetched = false;
    loop {
        let mapped = mapping
            .apply(Direction::FromCanonical, record, resolver)
            .map_err(|e| StepError::Mapping(e.to_string()))?;
        let missing: Vec<_> = mapped
            .unresolved
            .iter()
            .filter(|u| u.id != own_id)
            .collect();
        if missing.is_empty() || refetched {
            return Ok((mapped.record, !missing.is_empty()));
        }
        refetched = true;
        let mut found = false;
        for u in missing {
            // A reference to an entity the hub does not know is left unresolved.
            let Some(entity) = Entity::parse(&u.entity) else {
                continue;
            };
            if let Some(x) = store
                .find_by_canonical(entity, &resolver.system, &u.id)
                .await?
            {
                resolver.insert(entity, &x.external_id, &u.id);
                found = true;
            }
        }
        if !found {
            return Ok((mapped.record, true));
        }
    }
}

/// Write one step; returns whether some reference could not be resolved yet.
async fn apply_step(
    target: &Endpoint,
    resolver: &SideResolver,
    store: &dyn Store,
    step: &WireStep,
) -> Result<bool, StepError> {
    let maps = target.mappings();
    let mapping = maps.of(step.entity);
    let entity = step.entity;
    if step.link_first
        && let Some(tid) = &step.target_id
    {
        link(store, entity, &step.canonical_id, &target.name, tid, None).await?;
        resolver.insert(entity, tid, &step.canonical_id);
    }
    // Over what the target will hold: for an update, its record with the changes (a source
    // that carries fewer fields than the target leaves the others as they are).
    let written_hash = echo_hash(mapping, step.expected.as_ref().unwrap_or(&step.record));
    match step.action {
        Action::Link => Ok(false),
        Action::Delete => {
            if let Some(tid) = &step.target_id {
                target.directory.delete(entity.vendor(), tid).await?;
                store.unlink(entity, &target.name, tid).await?;
            }
            Ok(false)
        }
        Action::Create => {
            // Already linked in the target: another step created it since the plan was made
            // (a step of an older run still queued, or one of a concurrent run). Write the
            // plan's record to it instead of creating a second one.
            let existing = match resolver.external(entity, &step.canonical_id) {
                Some(t) => Some(t),
                None => store
                    .find_by_canonical(entity, &target.name, &step.canonical_id)
                    .await?
                    .map(|x| x.external_id),
            };
            if let Some(tid) = existing {
                tracing::info!(entity = %entity, canonical = %step.canonical_id, target = %target.name, id = %tid, "created meanwhile by another step; updated instead");
                resolver.insert(entity, &tid, &step.canonical_id);
                return update(target, &maps, resolver, store, step, &tid, written_hash).await;
            }
            let (mapped, unresolved) =
                map_for(mapping, &step.record, resolver, store, &step.canonical_id).await?;
            // Keyed by the canonical id where the vendor allows it: a retried or repeated
            // create returns the first record instead of making a second one.
            let tid = target
                .directory
                .create_keyed(entity.vendor(), without_nulls(mapped), &step.canonical_id)
                .await?;
            link(
                store,
                entity,
                &step.canonical_id,
                &target.name,
                &tid,
                Some(written_hash),
            )
            .await?;
            resolver.insert(entity, &tid, &step.canonical_id);
            Ok(unresolved)
        }
        Action::Update | Action::Move | Action::Disable => {
            let tid = match step
                .target_id
                .clone()
                .or_else(|| resolver.external(entity, &step.canonical_id))
            {
                Some(t) => t,
                None => store
                    .find_by_canonical(entity, &target.name, &step.canonical_id)
                    .await?
                    .map(|x| x.external_id)
                    .ok_or_else(|| StepError::NoTargetId {
                        canonical_id: step.canonical_id.clone(),
                        target: target.name.clone(),
                    })?,
            };
            update(target, &maps, resolver, store, step, &tid, written_hash).await
        }
    }
}

/// Write a step's record over the target's record `tid`; returns whether some reference could
/// not be resolved yet.
async fn update(
    target: &Endpoint,
    maps: &Mappings,
    resolver: &SideResolver,
    store: &dyn Store,
    step: &WireStep,
    tid: &str,
    written_hash: String,
) -> Result<bool, StepError> {
    let mut record = step.record.clone();
    if let Some(obj) = record.as_object_mut() {
        for field in &step.emptied {
            obj.insert(field.clone(), json!([]));
        }
    }
    let (mapped, unresolved) = map_for(
        maps.of(step.entity),
        &record,
        resolver,
        store,
        &step.canonical_id,
    )
    .await?;
    // Recorded before the write: the vendor's event about it may arrive before the write call
    // returns, and must already be recognised as our echo.
    store
        .set_written_hash(step.entity, &target.name, tid, &written_hash, now_ms())
        .await?;
    target
        .directory
        .update(step.entity.vendor(), tid, without_nulls(mapped))
        .await?;
    Ok(unresolved)
}

/// Drop nulls (unset fields, ids not resolved yet) from what is sent to a vendor.
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .filter(|v| !v.is_null())
                .map(without_nulls)
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_join_consecutive_seqs() {
        assert_eq!(
            ranges([0, 1, 2, 5, 6, 9].into_iter()),
            vec![(0, 3), (5, 7), (9, 10)]
        );
        assert_eq!(ranges(std::iter::empty()), vec![]);
    }
}
