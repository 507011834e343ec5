//! Plans: what a reconcile (both sides read completely) or a live change (only the records an
//! event named) would do to each target, as ordered steps and conflicts. [`plan`] and
//! [`plan_records`] read; [`super::target::plan_target`] decides.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::SyncError;
use super::canon::derived_id;
use super::canon::{Canon, Rec};
use super::connect::{self, Endpoint, Mappings};
use super::diff::{Change, shared_fields};
use super::read::{Side, read_canonical, read_side};
use super::resolve::SideResolver;
use super::scope::scope;
use super::target::{Source, TargetRules, plan_target};
use crate::config::{Config, RouteConfig};
use crate::model::{Action, Entity};
use crate::store::{Store, now_ms};

/// One step of a plan: one record written to (or linked in, or removed from) one target.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub action: Action,
    pub entity: Entity,
    pub canonical_id: String,
    pub name: String,
    /// The record's id in the target (absent for creates).
    pub target_id: Option<String>,
    /// The record's id in the source (absent for removals).
    pub source_id: Option<String>,
    /// For ordering: a department's depth in the tree (0 = root); a person's in the manager
    /// chain (0 = reports to nobody), so managers are written before their reports.
    pub depth: usize,
    /// Also record the link before writing (a first match by rules).
    pub link_first: bool,
    pub changes: BTreeMap<String, Change>,
    /// The canonical record to write (for disables: the target's, with the new status).
    #[serde(skip)]
    pub record: Arc<Canon>,
    /// For an update: what the target holds once it is written (its record with the changes),
    /// whose echo hash is recorded; `None`: the record itself (creates, removals).
    #[serde(skip)]
    pub expected: Option<Arc<Canon>>,
}

impl Step {
    /// The wave a step belongs to (steps of one wave do not depend on each other): departments
    /// top-down, then people by manager depth, then removals of people, then departments
    /// bottom-up.
    pub fn wave(&self) -> (u8, i64) {
        match (self.entity, self.action.is_removal()) {
            (Entity::Department, false) => (0, self.depth as i64),
            (Entity::Person, false) => (1, self.depth as i64),
            (Entity::Person, true) => (2, 0),
            (Entity::Department, true) => (3, -(self.depth as i64)),
        }
    }
}

/// Why the planner would not guess about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictKind {
    /// The record's mapping failed (the message says why).
    MappingError,
    /// Several target records fit one source record.
    AmbiguousMatch,
    /// Several records claim one value the field must keep unique (`duplicate_<field>`).
    Duplicate(&'static str),
    /// A department not under the root: its parents loop, or end at a missing one.
    CycleOrOrphan,
    /// The target has no root department to pair with.
    NoRoot,
    /// Deeper than the target's vendor allows.
    TooDeep,
    /// Only in departments left out because they are in conflict (or under one that is).
    Unplaced,
}

impl ConflictKind {
    /// Its name in plans and reports (`ambiguous_match`, `duplicate_mobile`, …).
    pub fn name(&self) -> String {
        match self {
            ConflictKind::MappingError => "mapping_error".into(),
            ConflictKind::AmbiguousMatch => "ambiguous_match".into(),
            ConflictKind::Duplicate(field) => format!("duplicate_{field}"),
            ConflictKind::CycleOrOrphan => "cycle_or_orphan".into(),
            ConflictKind::NoRoot => "no_root".into(),
            ConflictKind::TooDeep => "too_deep".into(),
            ConflictKind::Unplaced => "unplaced".into(),
        }
    }
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for ConflictKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl PartialEq<&str> for ConflictKind {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

/// A record (or group) the plan leaves alone, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub entity: Entity,
    pub kind: ConflictKind,
    pub detail: String,
    pub records: Vec<String>,
}

/// The plan for one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetPlan {
    pub target: String,
    pub steps: Vec<Step>,
    pub conflicts: Vec<Conflict>,
    pub people_in_target: usize,
    pub removals: usize,
    pub records_read: usize,
}

/// How a plan was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// Both sides read completely.
    Reconcile,
    /// Only the records one event named.
    Live,
}

/// The kinds of sync run, as `huitong sync runs` lists them: what started the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `huitong sync apply` (and the demo's apply).
    Apply,
    /// A schedule's `reconcile <route>` job.
    Scheduled,
    /// A whole-route reconcile started by a vendor event (a new person or department, a
    /// deleted department, a scoped route, …).
    Reconcile,
    /// The records one vendor event named, planned alone.
    Live,
}

impl RunKind {
    /// As the store records it.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunKind::Apply => "apply",
            RunKind::Scheduled => "scheduled",
            RunKind::Reconcile => "reconcile",
            RunKind::Live => "live",
        }
    }
}

/// The run kinds by name, as before they were a type.
pub mod run_kind {
    use super::RunKind;
    pub const APPLY: RunKind = RunKind::Apply;
    pub const SCHEDULED: RunKind = RunKind::Scheduled;
    pub const RECONCILE: RunKind = RunKind::Reconcile;
    pub const LIVE: RunKind = RunKind::Live;
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub route: String,
    pub source: String,
    pub kind: PlanKind,
    /// What its run is recorded as (`huitong sync runs`); by default the plan's kind. Set
    /// with [`Plan::run_as`].
    #[serde(skip)]
    pub run_kind: RunKind,
    pub records_read: usize,
    pub targets: Vec<TargetPlan>,
    /// Source records, canonical (to store them on apply).
    #[serde(skip)]
    pub(super) source_records: Vec<(Entity, String, Arc<Canon>)>,
}

impl Plan {
    /// The same plan, its run recorded as `kind`.
    pub fn run_as(mut self, kind: RunKind) -> Self {
        self.run_kind = kind;
        self
    }

    /// A plan with no targets yet, keeping the source's records (stored on apply).
    fn new(
        ctx: &RouteContext,
        kind: PlanKind,
        records_read: usize,
        departments: &[Rec],
        people: &[Rec],
    ) -> Self {
        let keep = |entity: Entity, r: &Rec| (entity, r.external_id.clone(), r.canonical.clone());
        Plan {
            route: ctx.route.name.clone(),
            source: ctx.source.name.clone(),
            kind,
            run_kind: match kind {
                PlanKind::Reconcile => RunKind::Reconcile,
                PlanKind::Live => RunKind::Live,
            },
            records_read,
            targets: Vec::new(),
            source_records: departments
                .iter()
                .map(|r| keep(Entity::Department, r))
                .chain(people.iter().map(|r| keep(Entity::Person, r)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.iter().all(|t| t.steps.is_empty())
    }

    pub fn count(&self, action: Action) -> usize {
        self.targets
            .iter()
            .flat_map(|t| &t.steps)
            .filter(|s| s.action == action)
            .count()
    }

    pub fn conflicts(&self) -> usize {
        self.targets.iter().map(|t| t.conflicts.len()).sum()
    }
}

/// Everything [`plan`] and [`super::apply`] need, built from the configuration.
pub struct RouteContext {
    pub route: RouteConfig,
    pub source: Arc<Endpoint>,
    pub targets: Vec<Arc<Endpoint>>,
}

impl RouteContext {
    pub fn new(config: &Config, route: &str) -> Result<Self, SyncError> {
        let r = config
            .routes
            .get(route)
            .ok_or_else(|| SyncError::UnknownRoute(route.to_owned()))?
            .clone();
        let conn = |name: &str| {
            config
                .connectors
                .get(name)
                .ok_or_else(|| {
                    SyncError::Config(format!("route {route}: no connector named {name:?}"))
                })
                .and_then(connect::endpoint)
        };
        let source = conn(&r.source)?;
        let targets = r
            .targets
            .iter()
            .map(|t| conn(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RouteContext {
            route: r,
            source,
            targets,
        })
    }

    /// What the planner needs to know of `target`, with both sides' mappings as they are now.
    fn rules<'a>(
        &'a self,
        target: &'a Endpoint,
        source: &Mappings,
        theirs: &Mappings,
    ) -> TargetRules<'a> {
        TargetRules::new(
            &self.route,
            &target.name,
            target.max_department_levels(),
            shared_fields(&source.department, &theirs.department),
            shared_fields(&source.person, &theirs.person),
        )
    }
}

/// Read everything and compute the plan. Changes nothing.
pub async fn plan(ctx: &RouteContext, store: &dyn Store) -> Result<Plan, SyncError> {
    let source_maps = ctx.source.mappings();
    let src_resolver = SideResolver::load(store, &ctx.source.name, true).await?;
    let source = read_side(&ctx.source, &source_maps, &src_resolver).await?;
    // Source records that failed to map: their canonical ids (linked, else derived), so that
    // what they are linked to in a target is not removed as if they had left.
    let unmapped: HashSet<String> = source
        .unmapped
        .iter()
        .map(|(entity, external)| {
            src_resolver
                .linked(*entity, external)
                .unwrap_or_else(|| derived_id(&ctx.source.name, *entity, external))
        })
        .collect();
    let (departments, people, mut scope_conflicts) =
        scope(&ctx.route, source.departments, source.people);
    scope_conflicts.extend(source.failures);
    let records_read = source.records_read;
    let source = Source {
        departments: &departments,
        people: &people,
        unmapped: &unmapped,
    };

    let mut plan = Plan::new(
        ctx,
        PlanKind::Reconcile,
        records_read,
        &departments,
        &people,
    );
    for target in &ctx.targets {
        let maps = target.mappings();
        let resolver = SideResolver::load(store, &target.name, false).await?;
        let side = read_side(target, &maps, &resolver).await?;
        let rules = ctx.rules(target, &source_maps, &maps);
        let mut tp = plan_target(&rules, &resolver, side, source);
        tp.conflicts.extend(scope_conflicts.iter().cloned());
        plan.records_read += tp.records_read;
        plan.targets.push(tp);
    }
    Ok(plan)
}

/// Canonical fields that refer to other records, with the entity they refer to.
const REFERENCES: &[(&str, Entity)] = &[
    ("department_ids", Entity::Department),
    ("main_department", Entity::Department),
    ("leader_of", Entity::Department),
    ("manager", Entity::Person),
    ("parent_id", Entity::Department),
    ("leader_ids", Entity::Person),
];

/// Whether every record `record` refers to is linked in `system`.
async fn references_linked(
    store: &dyn Store,
    system: &str,
    record: &Value,
) -> Result<bool, SyncError> {
    for (field, entity) in REFERENCES {
        let ids: Vec<&str> = match record.get(*field) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for id in ids {
            if store
                .find_by_canonical(*entity, system, id)
                .await?
                .is_none()
            {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// How far back the live path counts its own removals against a route's safety threshold.
const LIVE_REMOVAL_WINDOW_MS: i64 = 3_600_000;

/// A plan for just the records a contact event names — the live path's fast way — or `None`
/// when that is not enough and the whole route must be reconciled. It covers records already
/// linked in the source and in every target, whose references (departments, parent, manager,
/// leaders) are linked there too: people and departments changed in place (renamed, moved,
/// new title, email or mobile), people who left (disabled, or deleted where the vendor cannot
/// disable) and people deleted in the source (removed per the deletion policy). Removals count
/// against the route's safety threshold together with the live path's removals of the last
/// hour; past it, or for anything else — a new person or department, a deleted department, a
/// route with a department scope, a conflict — it returns `None`: the full plan handles it,
/// with its match rules, safety threshold and scope. Reads one record per side instead of both
/// orgs.
pub async fn plan_records(
    ctx: &RouteContext,
    store: &dyn Store,
    named: &[(Entity, String)],
) -> Result<Option<Plan>, SyncError> {
    let route = &ctx.route;
    if route.scope_root.is_some() || !route.scope_deny.is_empty() || named.is_empty() {
        return Ok(None);
    }
    let source_maps = ctx.source.mappings();
    let mut people: Vec<Rec> = Vec::new();
    let mut departments: Vec<Rec> = Vec::new();
    // People deleted in the source: their canonical ids.
    let mut gone: Vec<String> = Vec::new();
    for (entity, external) in named {
        let Some(link) = store
            .find_by_external(*entity, &ctx.source.name, external)
            .await?
        else {
            return Ok(None); // new: first links need the whole target
        };
        let read =
            read_canonical(store, &ctx.source, &source_maps, *entity, external, true).await?;
        match (entity, read) {
            (Entity::Person, Some(p)) => {
                if !people.iter().any(|q| q.id() == p.id()) {
                    people.push(p);
                }
            }
            (Entity::Person, None) => gone.push(link.canonical_id),
            (Entity::Department, Some(d)) if d.parent().is_some() => {
                if !departments.iter().any(|q| q.id() == d.id()) {
                    departments.push(d);
                }
            }
            (Entity::Department, _) => return Ok(None), // a root, or a department deleted
        }
    }
    let read = people.len() + departments.len();
    let mut plan = Plan::new(ctx, PlanKind::Live, read, &departments, &people);
    for target in &ctx.targets {
        let maps = target.mappings();
        let mut side = Side::default();
        for (entity, src) in departments
            .iter()
            .map(|d| (Entity::Department, d))
            .chain(people.iter().map(|p| (Entity::Person, p)))
        {
            let Some(x) = store
                .find_by_canonical(entity, &target.name, src.id())
                .await?
            else {
                return Ok(None); // not in this target yet
            };
            if !references_linked(store, &target.name, &src.canonical.value()).await? {
                return Ok(None); // refers to a record the target lacks
            }
            let Some(t) =
                read_canonical(store, target, &maps, entity, &x.external_id, false).await?
            else {
                return Ok(None); // gone from the target
            };
            side.records_read += 1;
            side.push(entity, t);
        }
        for id in &gone {
            if let Some(x) = store
                .find_by_canonical(Entity::Person, &target.name, id)
                .await?
                && let Some(t) =
                    read_canonical(store, target, &maps, Entity::Person, &x.external_id, false)
                        .await?
            {
                side.records_read += 1;
                side.people.push(t);
            }
        }
        let resolver = SideResolver::new(&target.name, false);
        let rules = ctx.rules(target, &source_maps, &maps);
        let none = HashSet::new();
        let source = Source {
            departments: &departments,
            people: &people,
            unmapped: &none,
        };
        let mut tp = plan_target(&rules, &resolver, side, source);
        let in_place = tp.steps.iter().all(|s| {
            !s.link_first
                && match s.entity {
                    Entity::Person => s.action != Action::Create && s.action != Action::Link,
                    Entity::Department => matches!(s.action, Action::Update | Action::Move),
                }
        });
        if !tp.conflicts.is_empty() || !in_place {
            return Ok(None);
        }
        // A leaver the target can disable is an update of the status in a full plan; here it
        // counts as the removal it is.
        for s in &mut tp.steps {
            let leaving = s.entity == Entity::Person
                && s.changes
                    .get("status")
                    .is_some_and(|c| c.new.as_str().is_some_and(|v| v != "active"));
            if leaving && matches!(s.action, Action::Update | Action::Move) {
                s.action = Action::Disable;
                tp.removals += 1;
            }
        }
        if tp.removals > 0 {
            // The threshold holds across events: a mass removal arriving one event at a time
            // goes to the full plan, which refuses it unless forced.
            let linked = store.count_xrefs(Entity::Person, &target.name).await?;
            let since = now_ms() - LIVE_REMOVAL_WINDOW_MS;
            let recent: i64 = store
                .list_runs(Some(&route.name), 1000)
                .await?
                .iter()
                .filter(|r| r.kind == RunKind::Live.as_str() && r.started_at_ms >= since)
                .flat_map(|r| {
                    [Action::Disable, Action::Delete]
                        .map(|k| r.counts.get(k.as_str()).copied().unwrap_or(0))
                })
                .sum();
            let percent = 100.0 * (recent + tp.removals as i64) as f64 / linked.max(1) as f64;
            if percent > route.safety_threshold_percent {
                tracing::info!(route = %route.name, target = %target.name, recent, removals = tp.removals,
                    linked, "live removals past the safety threshold: reconciling the route");
                return Ok(None);
            }
            tp.people_in_target = linked as usize;
        }
        plan.records_read += tp.records_read;
        plan.targets.push(tp);
    }
    Ok(Some(plan))
}
