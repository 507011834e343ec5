//! A whole route reconciled: plan, then apply through the queue — what a schedule's
//! `reconcile <route>` job and a vendor event that needs the whole route run.

use std::collections::BTreeMap;

use tracing::Instrument;

use super::SyncError;
use super::plan::{RouteContext, RunKind, plan};
use crate::config::Config;
use crate::model::Action;
use crate::queue::Queue;
use crate::store::Store;

/// What a reconcile did: the steps planned by action, the conflicts left, the steps that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub run_id: String,
    pub planned: BTreeMap<Action, usize>,
    pub conflicts: usize,
    /// One line per failed step (target, record, why).
    pub failures: Vec<String>,
}

impl std::fmt::Display for Reconciled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |a: Action| self.planned.get(&a).copied().unwrap_or(0);
        write!(
            f,
            "{} created, {} updated, {} moved, {} disabled, {} deleted, {} conflicts",
            n(Action::Create),
            n(Action::Update),
            n(Action::Move),
            n(Action::Disable),
            n(Action::Delete),
            self.conflicts
        )?;
        if let Some(first) = self.failures.first() {
            write!(f, "; {} failed, first: {first}", self.failures.len())?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The route could not be planned or applied at all.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Applied, but some steps failed (the run is recorded as failed).
    #[error("{0}")]
    StepsFailed(Reconciled),
}

/// Reconcile one route: plan, then apply (never forced: a plan above the safety threshold
/// fails, visible in `huitong schedule list` and `huitong sync runs`). The steps go through
/// `deliver.<route>`, whose consumer must run (`jobs::start_deliveries`). `run_kind` is what
/// started it, as `huitong sync runs` shows it.
pub async fn reconcile(
    config: &Config,
    store: &dyn Store,
    queue: &dyn Queue,
    route: &str,
    run_kind: RunKind,
) -> Result<Reconciled, ReconcileError> {
    async {
        let ctx = RouteContext::new(config, route)?;
        let plan = plan(&ctx, store).await?.run_as(run_kind);
        let report = super::apply(&ctx, &plan, store, queue, false, &|_, _| {}).await?;
        let outcome = Reconciled {
            run_id: report.run_id,
            planned: Action::ALL
                .into_iter()
                .map(|a| (a, plan.count(a)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            conflicts: plan.conflicts(),
            failures: report.errors,
        };
        if outcome.failures.is_empty() {
            Ok(outcome)
        } else {
            Err(ReconcileError::StepsFailed(outcome))
        }
    }
    .instrument(tracing::info_span!("reconcile", route = %route))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_count_and_the_first_failure() {
        let mut r = Reconciled {
            run_id: "r".into(),
            planned: BTreeMap::from([(Action::Create, 2), (Action::Disable, 1)]),
            conflicts: 3,
            failures: vec![],
        };
        assert_eq!(
            r.to_string(),
            "2 created, 0 updated, 0 moved, 1 disabled, 0 deleted, 3 conflicts"
        );
        r.failures = vec!["wecom person \"x\": refused".into(), "b".into()];
        assert!(
            r.to_string()
                .ends_with("; 2 failed, first: wecom person \"x\": refused")
        );
    }
}
