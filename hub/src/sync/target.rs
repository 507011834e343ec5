//! Planning one target, given both sides as read: pair ([`super::pair`]), then turn each
//! pair's [`diff`] into an update or a move, each unpaired source record into a create, and
//! each linked target record the source no longer holds into a removal — or a conflict where
//! the target could not take it (too deep, a value its vendor keeps unique, a leaver it cannot
//! disable). Pure: no connection, no store; [`TargetRules`] is all it knows of the route.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};

use super::canon::{Canon, Rec};
use super::diff::{diff, drop_unreachable};
use super::pair::{self, Pairing};
use super::plan::{Conflict, ConflictKind, Step, TargetPlan};
use super::read::Side;
use super::resolve::{SideResolver, is_placeholder, resolve_placeholders};
use super::scope::depth_of;
use crate::config::{Deletion, RouteConfig};
use crate::model::{Action, Entity};

/// Person fields the vendors keep unique (WeCom and Feishu refuse a second person with the
/// same mobile or email; DingTalk the same mobile).
const UNIQUE_PERSON_FIELDS: [&str; 2] = ["mobile", "email"];

/// Fields whose change moves a record (an update that is a [`Action::Move`]).
const PLACEMENT: &[&str] = &["parent_id", "department_ids", "main_department"];

/// What the planner knows of a route and one of its targets: names, rules and the fields to
/// compare — data, no connection.
#[derive(Debug, Clone)]
pub struct TargetRules<'a> {
    pub route: &'a RouteConfig,
    /// The source connector's name.
    pub source: &'a str,
    /// The target connector's name.
    pub target: &'a str,
    /// How many department levels the target's vendor allows (the root is level 1).
    pub max_department_levels: Option<usize>,
    /// Department fields compared: both mappings read them and the source owns them.
    pub department_fields: Vec<String>,
    /// Person fields compared, likewise.
    pub person_fields: Vec<String>,
}

impl<'a> TargetRules<'a> {
    /// The rules of `target` in `route`: the fields both mappings read (`shared`, per
    /// entity) that the route's source owns are compared.
    pub fn new(
        route: &'a RouteConfig,
        target: &'a str,
        max_department_levels: Option<usize>,
        department_shared: Vec<String>,
        person_shared: Vec<String>,
    ) -> Self {
        let owned = |entity: Entity, fields: Vec<String>| -> Vec<String> {
            fields
                .into_iter()
                .filter(|f| route.source_owns(entity.as_str(), Some(f)))
                .collect()
        };
        TargetRules {
            route,
            source: &route.source,
            target,
            max_department_levels,
            department_fields: owned(Entity::Department, department_shared),
            person_fields: owned(Entity::Person, person_shared),
        }
    }

    fn fields(&self, entity: Entity) -> &[String] {
        match entity {
            Entity::Department => &self.department_fields,
            Entity::Person => &self.person_fields,
        }
    }

    /// A target with no disabled state (DingTalk) can only remove a leaver.
    fn can_disable(&self) -> bool {
        self.person_fields.iter().any(|f| f == "status")
    }
}

/// The source's side of a plan: its records in scope, and the canonical ids of those that
/// failed to map (what they are linked to in a target is neither written nor removed).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub departments: &'a [Rec],
    pub people: &'a [Rec],
    pub unmapped: &'a HashSet<String>,
}

/// Plan one target: `side` is the target as read, mapped with `resolver` (its links); the
/// pairs found here are added to `resolver`. In phases: pair, see what the target can hold,
/// then departments, people and removals.
pub fn plan_target(
    rules: &TargetRules,
    resolver: &SideResolver,
    side: Side,
    source: Source<'_>,
) -> TargetPlan {
    let mut planner = Planner {
        rules,
        steps: Vec::new(),
        conflicts: Vec::new(),
        link_index: HashMap::new(),
        removals: 0,
    };
    let records_read = side.records_read;
    let (side, paired) = planner.pair(resolver, side, source);
    let view = View::new(&mut planner, resolver, &side, source, paired);
    planner.departments(&view);
    planner.people(&view, source.people);
    planner.removals(&view, source);
    let mut steps = planner.steps;
    steps.sort_by_key(order_key);
    TargetPlan {
        target: rules.target.to_owned(),
        people_in_target: side.people.len(),
        removals: planner.removals,
        records_read,
        steps,
        conflicts: planner.conflicts,
    }
}

/// What pairing left unpaired for a conflict (external ids of the source's records).
struct Paired {
    people_in_conflict: HashSet<String>,
    departments_in_conflict: HashSet<String>,
    unmapped: Vec<(Entity, String)>,
}

/// The target once paired: its records by canonical id, and what it will not be given.
struct View<'s> {
    departments: HashMap<&'s str, &'s Rec>,
    people: HashMap<&'s str, &'s Rec>,
    /// The source's departments top-down, with their depth.
    ordered: Vec<(&'s Rec, usize)>,
    /// Source people (external ids) left unpaired by a conflict.
    people_in_conflict: HashSet<String>,
    /// Canonical ids whose target record failed to map: what it holds is unknown, so the
    /// source's record is neither compared nor created again (the mapping error says why).
    unreadable: HashSet<String>,
    /// Source departments (canonical ids) left out: too deep, or in a conflict (or under one).
    cannot_hold: HashSet<&'s str>,
    held_back: HashSet<&'s str>,
    /// Source people the target will not hold: a reference to one is not a change.
    unreachable: HashSet<&'s str>,
    can_disable: bool,
}

impl<'s> View<'s> {
    fn new(
        planner: &mut Planner,
        resolver: &SideResolver,
        side: &'s Side,
        source: Source<'s>,
        paired: Paired,
    ) -> Self {
        let rules = planner.rules;
        let departments: HashMap<&str, &Rec> =
            side.departments.iter().map(|r| (r.id(), r)).collect();
        let people: HashMap<&str, &Rec> = side.people.iter().map(|r| (r.id(), r)).collect();
        let unreadable = paired
            .unmapped
            .iter()
            .filter_map(|(entity, external)| resolver.linked(*entity, external))
            .collect();
        let parents: HashMap<String, Option<String>> = source
            .departments
            .iter()
            .map(|d| (d.id().to_owned(), d.parent().map(str::to_owned)))
            .collect();
        let mut ordered: Vec<(&Rec, Option<usize>)> = source
            .departments
            .iter()
            .map(|d| (d, depth_of(d.id(), &parents)))
            .collect();
        ordered.sort_by_key(|(_, depth)| depth.unwrap_or(usize::MAX));
        let ordered: Vec<(&Rec, usize)> = ordered
            .into_iter()
            .map(|(d, depth)| (d, depth.unwrap_or(0)))
            .collect();
        // Departments deeper than the target's vendor allows are left out, with their people,
        // as conflicts — not attempted and failed at apply.
        let mut too_deep: HashSet<&str> = HashSet::new();
        if let Some(max) = rules.max_department_levels {
            for (d, level) in &ordered {
                if *level >= max && !departments.contains_key(d.id()) {
                    too_deep.insert(d.id());
                    planner.conflicts.push(Conflict {
                        entity: Entity::Department,
                        kind: ConflictKind::TooDeep,
                        detail: format!(
                            "department {:?} would be at level {} in {}, which allows {max} levels: it is left out with its people",
                            d.name(),
                            level + 1,
                            rules.target
                        ),
                        records: vec![d.external_id.clone()],
                    });
                }
            }
        }
        // Departments in conflict, and those under them, are held back: neither created nor
        // given people (what the target holds of them is left as it is).
        let mut held_back: HashSet<&str> = HashSet::new();
        for (d, _) in &ordered {
            let blocked = paired.departments_in_conflict.contains(&d.external_id)
                || d.parent().is_some_and(|p| held_back.contains(p));
            if blocked && !departments.contains_key(d.id()) {
                held_back.insert(d.id());
            }
        }
        let cannot_hold: HashSet<&str> = too_deep.union(&held_back).copied().collect();
        let can_disable = rules.can_disable();
        // People the target will not hold (in conflict, only in departments it cannot hold, or
        // leavers where it cannot disable): a reference to one (a manager, a leader still named
        // in the source) cannot be written, so it is not a change.
        let unreachable: HashSet<&str> = source
            .people
            .iter()
            .filter(|p| {
                !people.contains_key(p.id())
                    && (paired.people_in_conflict.contains(&p.external_id)
                        || without_departments(p, &cannot_hold).1
                        || (!can_disable && p.inactive()))
            })
            .map(Rec::id)
            .collect();
        View {
            departments,
            people,
            ordered,
            people_in_conflict: paired.people_in_conflict,
            unreadable,
            cannot_hold,
            held_back,
            unreachable,
            can_disable,
        }
    }
}

impl Planner<'_, '_> {
    /// Pair both sides (links, then the root and names for departments, the match rules for
    /// people), record the pairs found as link steps and in `resolver`, and resolve the
    /// target's references to records paired just now (still `?entity:external`).
    fn pair(&mut self, resolver: &SideResolver, side: Side, source: Source<'_>) -> (Side, Paired) {
        let rules = self.rules;
        let (departments, people) = (source.departments, source.people);
        self.conflicts.extend(side.failures);
        let dp = pair::departments(departments, &side.departments, rules.target);
        let keys: Vec<&'static str> = rules.route.match_rules.iter().map(|r| r.field()).collect();
        let pp = pair::by_keys(
            Entity::Person,
            Pairing::linked(&side.people),
            people,
            &side.people,
            &keys,
            (rules.source, rules.target),
        );
        for (entity, p, source, target) in [
            (Entity::Department, &dp, departments, &side.departments),
            (Entity::Person, &pp, people, &side.people),
        ] {
            for &(si, ti) in &p.found {
                resolver.insert(entity, &target[ti].external_id, source[si].id());
                self.link(entity, &source[si], &target[ti]);
            }
        }
        self.conflicts.extend(dp.conflicts);
        self.conflicts.extend(pp.conflicts);
        // What mapping the vendor records again would give, without reading them again.
        let relink = |recs: Vec<Rec>| -> Vec<Rec> {
            recs.into_iter()
                .map(|mut r| {
                    if r.canonical.contains("\"?") {
                        let mut v = r.canonical.value();
                        if resolve_placeholders(&mut v, resolver) {
                            r.canonical = Arc::new(Canon::new(&v));
                        }
                    }
                    r
                })
                .collect()
        };
        let paired = Paired {
            people_in_conflict: pp.blocked,
            departments_in_conflict: dp.blocked,
            unmapped: side.unmapped,
        };
        let side = Side {
            departments: relink(side.departments),
            people: relink(side.people),
            failures: Vec::new(),
            unmapped: Vec::new(),
            records_read: side.records_read,
        };
        (side, paired)
    }

    /// Departments: updates and moves, creates; roots are paired, never rewritten.
    fn departments(&mut self, v: &View) {
        let rules = self.rules;
        let owns = rules.route.source_owns(Entity::Department.as_str(), None);
        for (d, level) in &v.ordered {
            if v.cannot_hold.contains(d.id()) || v.unreadable.contains(d.id()) {
                continue;
            }
            match v.departments.get(d.id()) {
                Some(_) if d.parent().is_none() => {}
                Some(t) => self.update(Entity::Department, d, t, *level, &v.unreachable),
                None if d.parent().is_none() => self.conflicts.push(Conflict {
                    entity: Entity::Department,
                    kind: ConflictKind::NoRoot,
                    detail: format!(
                        "{} has no root department to pair with {}'s",
                        rules.target, rules.source
                    ),
                    records: vec![d.external_id.clone()],
                }),
                None if !owns => {} // another system owns departments
                None => self.create(Entity::Department, d, *level),
            }
        }
    }

    /// People: updates and moves, creates (unless a value the vendor keeps unique is taken),
    /// leavers where the target cannot disable.
    fn people(&mut self, v: &View, people: &[Rec]) {
        let rules = self.rules;
        let owns = rules.route.source_owns(Entity::Person.as_str(), None);
        let manager_depth = manager_depths(people);
        // Values vendors keep unique among their people: a create repeating one that another
        // source person or a target person already holds would be refused — a conflict instead.
        let unique_value = |r: &Rec, field: &str| r.field(field).map(str::to_lowercase);
        let mut holders: HashMap<(&str, String), usize> = HashMap::new();
        // (Inactive source people hold nothing in a target that cannot disable: never created.)
        let held = people
            .iter()
            .filter(|r| v.can_disable || r.canonical.get("status") == Some("active"))
            .chain(v.people.values().copied());
        for field in UNIQUE_PERSON_FIELDS {
            for r in held.clone() {
                if let Some(value) = unique_value(r, field) {
                    *holders.entry((field, value)).or_default() += 1;
                }
            }
        }
        let mut clashes: BTreeMap<(&str, String), Vec<String>> = BTreeMap::new();
        let mut left_out: Vec<String> = Vec::new();
        let mut unplaced: Vec<String> = Vec::new();
        for p in people {
            if v.people_in_conflict.contains(&p.external_id) || v.unreadable.contains(p.id()) {
                continue;
            }
            // A person also in a department this target cannot hold is synced without it.
            let (fitted, only_there) = without_departments(p, &v.cannot_hold);
            if only_there {
                if !v.people.contains_key(p.id()) && owns {
                    let in_conflict = p
                        .canonical
                        .value()
                        .get("department_ids")
                        .and_then(Value::as_array)
                        .is_some_and(|ids| {
                            ids.iter()
                                .any(|i| i.as_str().is_some_and(|i| v.held_back.contains(i)))
                        });
                    if in_conflict {
                        unplaced.push(p.external_id.clone());
                    } else {
                        left_out.push(p.external_id.clone());
                    }
                }
                continue;
            }
            let p = fitted.as_ref().unwrap_or(p);
            let level = manager_depth.get(p.id()).copied().unwrap_or(0);
            let target = v.people.get(p.id());
            if p.inactive() && !v.can_disable {
                // Not created; removed if it was there.
                if let Some(t) = target
                    && owns
                {
                    let record = t.canonical.clone();
                    self.remove(Action::Delete, Entity::Person, t, Some(p), 0, record);
                }
                continue;
            }
            self.write(
                Entity::Person,
                p,
                target.copied(),
                level,
                &v.unreachable,
                owns,
                |p| {
                    let clash = UNIQUE_PERSON_FIELDS.iter().find_map(|field| {
                        let value = unique_value(p, field)?;
                        (holders.get(&(*field, value.clone())).copied().unwrap_or(0) > 1)
                            .then_some((*field, value))
                    });
                    match clash {
                        Some(key) => {
                            clashes.entry(key).or_default().push(p.external_id.clone());
                            false
                        }
                        None => true,
                    }
                },
            );
        }
        for ((field, value), records) in clashes {
            self.conflicts.push(Conflict {
                entity: Entity::Person,
                kind: ConflictKind::Duplicate(field),
                detail: format!(
                    "the {field} {value:?} is held by someone else in {} or {}: not created (the vendor would refuse it)",
                    rules.source, rules.target
                ),
                records,
            });
        }
        let why = [
            (
                ConflictKind::TooDeep,
                format!("{} cannot hold", rules.target),
            ),
            (ConflictKind::Unplaced, "left out for a conflict".to_owned()),
        ];
        for ((kind, departments), records) in why.into_iter().zip([left_out, unplaced]) {
            if !records.is_empty() {
                self.conflicts.push(Conflict {
                    entity: Entity::Person,
                    kind,
                    detail: format!(
                        "{} people only in departments {departments} are left out",
                        records.len()
                    ),
                    records,
                });
            }
        }
    }

    /// Removals: linked target records whose canonical record left the source (not those
    /// whose source record only failed to map).
    fn removals(&mut self, v: &View, source: Source<'_>) {
        let route = self.rules.route;
        let src_people: HashSet<&str> = source.people.iter().map(Rec::id).collect();
        let src_depts: HashSet<&str> = source.departments.iter().map(Rec::id).collect();
        let gone = |t: &Rec, kept: &HashSet<&str>| is_gone(t, kept, source.unmapped);
        let removal = if route.deletion == Deletion::Delete || !v.can_disable {
            Action::Delete
        } else {
            Action::Disable
        };
        if route.source_owns(Entity::Person.as_str(), None) {
            // The leaver keeps their record but leads nothing any more (vendors such as WeCom
            // set department leadership from the person's own record).
            self.remove_gone(
                Entity::Person,
                v.people.values().copied(),
                &src_people,
                source.unmapped,
                removal,
                json!({"status": "disabled", "leader_of": []}),
            );
        }
        if route.deletion == Deletion::Delete
            && route.source_owns(Entity::Department.as_str(), None)
        {
            let parents: HashMap<String, Option<String>> = v
                .departments
                .values()
                .map(|d| (d.id().to_owned(), d.parent().map(str::to_owned)))
                .collect();
            for t in v.departments.values() {
                if !gone(t, &src_depts) || t.parent().is_none() {
                    continue;
                }
                let level = depth_of(t.id(), &parents).unwrap_or(0);
                // Departments are not counted against the safety threshold (people are).
                self.steps.push(Step::removal(
                    Action::Delete,
                    Entity::Department,
                    t,
                    None,
                    level,
                    t.canonical.clone(),
                ));
            }
        }
    }
}

/// The steps and conflicts of one target as they are planned.
struct Planner<'r, 'a> {
    rules: &'r TargetRules<'a>,
    steps: Vec<Step>,
    conflicts: Vec<Conflict>,
    /// (canonical id, entity) -> index of its link step: an update folds into it.
    link_index: HashMap<(String, Entity), usize>,
    removals: usize,
}

impl Planner<'_, '_> {
    /// A first pairing by rules: record the link (the diff is folded in later).
    fn link(&mut self, entity: Entity, source: &Rec, target: &Rec) {
        self.link_index
            .insert((source.id().to_owned(), entity), self.steps.len());
        let mut step = Step::from_source(Action::Link, entity, source, Some(target), 0);
        step.link_first = true;
        self.steps.push(step);
    }

    fn create(&mut self, entity: Entity, source: &Rec, depth: usize) {
        self.steps.push(Step::from_source(
            Action::Create,
            entity,
            source,
            None,
            depth,
        ));
    }

    fn remove(
        &mut self,
        action: Action,
        entity: Entity,
        target: &Rec,
        source: Option<&Rec>,
        depth: usize,
        record: Arc<Canon>,
    ) {
        self.removals += 1;
        self.steps
            .push(Step::removal(action, entity, target, source, depth, record));
    }

    /// A pair's diff as an update or a move (folded into the pair's link step, if any).
    fn update(
        &mut self,
        entity: Entity,
        source: &Rec,
        target: &Rec,
        depth: usize,
        unreachable: &HashSet<&str>,
    ) {
        let mut changes = diff(
            self.rules.fields(entity),
            &source.canonical.value(),
            &target.canonical.value(),
        );
        drop_unreachable(&mut changes, unreachable);
        let moved = changes.keys().any(|k| PLACEMENT.contains(&k.as_str()));
        let action = if moved { Action::Move } else { Action::Update };
        let expected = (!changes.is_empty()).then(|| expected_after(target, &changes));
        if let Some(&i) = self.link_index.get(&(source.id().to_owned(), entity)) {
            let record = owned_record(self.rules.route, entity, source, target);
            let s = &mut self.steps[i];
            s.depth = depth;
            if !changes.is_empty() {
                s.action = action;
                s.changes = changes;
                s.record = record;
                s.expected = expected;
            }
            return;
        }
        if changes.is_empty() {
            return;
        }
        let mut step = Step::from_source(action, entity, source, Some(target), depth);
        step.changes = changes;
        step.record = owned_record(self.rules.route, entity, source, target);
        step.expected = expected;
        self.steps.push(step);
    }
}

/// What the target holds once an update's `changes` are written: its record as read, with the
/// changed fields' new values (fields the write does not touch keep theirs). Its echo hash is
/// what the target reports back — even where the source carries fewer fields than the target.
fn expected_after(target: &Rec, changes: &BTreeMap<String, super::diff::Change>) -> Arc<Canon> {
    let mut v = target.canonical.value();
    if let Some(o) = v.as_object_mut() {
        for (field, c) in changes {
            if c.new.is_null() {
                o.remove(field);
            } else {
                o.insert(field.clone(), c.new.clone());
            }
        }
    }
    Arc::new(Canon::new(&v))
}

impl Planner<'_, '_> {
    /// The generic core of planning a record that the target may hold: its pair's diff as an
    /// update or a move, or — unpaired, owned by the route's source, and let through by
    /// `may_create` (a family's own guard) — a create.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        entity: Entity,
        source: &Rec,
        target: Option<&Rec>,
        depth: usize,
        unreachable: &HashSet<&str>,
        owns: bool,
        may_create: impl FnOnce(&Rec) -> bool,
    ) {
        match target {
            Some(t) => self.update(entity, source, t, depth, unreachable),
            None if !owns => {} // another system owns the entity
            None => {
                if may_create(source) {
                    self.create(entity, source, depth);
                }
            }
        }
    }

    /// The generic core of removals: each linked target record (`targets`) whose canonical
    /// record is no longer in the source (`kept`) — and did not merely fail to map there
    /// (`unmapped`) — is removed by `action`; a disable writes the target's record with
    /// `disabled` merged in, and is skipped when the record says `status: disabled` already.
    fn remove_gone<'t>(
        &mut self,
        entity: Entity,
        targets: impl Iterator<Item = &'t Rec>,
        kept: &HashSet<&str>,
        unmapped: &HashSet<String>,
        action: Action,
        disabled: Value,
    ) {
        let mut gone: Vec<&Rec> = targets.filter(|t| is_gone(t, kept, unmapped)).collect();
        gone.sort_by(|a, b| a.id().cmp(b.id()));
        for t in gone {
            let already = t.canonical.get("status") == Some("disabled");
            if action == Action::Disable && already {
                continue;
            }
            let mut record = t.canonical.value();
            if let (Some(o), Some(d)) = (record.as_object_mut(), disabled.as_object()) {
                o.extend(d.clone());
            }
            self.remove(action, entity, t, None, 0, Arc::new(Canon::new(&record)));
        }
    }
}

/// A linked target record whose canonical record left the source (not one that only failed to
/// map there).
fn is_gone(t: &Rec, kept: &HashSet<&str>, unmapped: &HashSet<String>) -> bool {
    !is_placeholder(t.id()) && !kept.contains(t.id()) && !unmapped.contains(t.id())
}

/// A flat entity family — no tree, no references the planner orders by — planned with the
/// generic core: pair by links then `keys`, compare the rules' fields for `entity`, and plan
/// updates, creates and removals (`removal`, or none). Later families (tasks, tickets) plan
/// their records with this; the org chart adds its tree and its vendors' rules on top
/// ([`plan_target`]).
pub fn plan_flat(
    rules: &TargetRules,
    entity: Entity,
    keys: &[&'static str],
    removal: Option<Action>,
    resolver: &SideResolver,
    source: &[Rec],
    target: Side,
) -> TargetPlan {
    let mut planner = Planner {
        rules,
        steps: Vec::new(),
        conflicts: target.failures,
        link_index: HashMap::new(),
        removals: 0,
    };
    let records = target.people;
    let p = pair::by_keys(
        entity,
        Pairing::linked(&records),
        source,
        &records,
        keys,
        (rules.source, rules.target),
    );
    for &(si, ti) in &p.found {
        resolver.insert(entity, &records[ti].external_id, source[si].id());
        planner.link(entity, &source[si], &records[ti]);
    }
    planner.conflicts.extend(p.conflicts);
    let records: Vec<Rec> = records
        .into_iter()
        .map(|mut r| {
            let mut v = r.canonical.value();
            if resolve_placeholders(&mut v, resolver) {
                r.canonical = Arc::new(Canon::new(&v));
            }
            r
        })
        .collect();
    let by_id: HashMap<&str, &Rec> = records.iter().map(|r| (r.id(), r)).collect();
    let owns = rules.route.source_owns(entity.as_str(), None);
    let none = HashSet::new();
    for s in source {
        if p.blocked.contains(&s.external_id) {
            continue;
        }
        let t = by_id.get(s.id()).copied();
        planner.write(entity, s, t, 0, &none, owns, |_| true);
    }
    if let Some(action) = removal
        && owns
    {
        let kept: HashSet<&str> = source.iter().map(Rec::id).collect();
        let disabled = json!({"status": "disabled"});
        let unmapped = HashSet::new();
        planner.remove_gone(entity, records.iter(), &kept, &unmapped, action, disabled);
    }
    let mut steps = planner.steps;
    steps.sort_by_key(order_key);
    TargetPlan {
        target: rules.target.to_owned(),
        people_in_target: records.len(),
        removals: planner.removals,
        records_read: target.records_read,
        steps,
        conflicts: planner.conflicts,
    }
}

impl Step {
    /// A step for a source record (paired with `target`, if it is): the source's record to
    /// write, no changes yet.
    fn from_source(
        action: Action,
        entity: Entity,
        source: &Rec,
        target: Option<&Rec>,
        depth: usize,
    ) -> Step {
        Step {
            action,
            entity,
            canonical_id: source.id().to_owned(),
            name: source.name(),
            target_id: target.map(|t| t.external_id.clone()),
            source_id: Some(source.external_id.clone()),
            depth,
            link_first: false,
            changes: BTreeMap::new(),
            record: source.canonical.clone(),
            expected: None,
        }
    }

    fn removal(
        action: Action,
        entity: Entity,
        target: &Rec,
        source: Option<&Rec>,
        depth: usize,
        record: Arc<Canon>,
    ) -> Step {
        Step {
            action,
            entity,
            canonical_id: target.id().to_owned(),
            name: source.map_or_else(|| target.name(), Rec::name),
            target_id: Some(target.external_id.clone()),
            source_id: source.map(|s| s.external_id.clone()),
            depth,
            link_first: false,
            changes: BTreeMap::new(),
            record,
            expected: None,
        }
    }
}

/// `p` without the departments in `drop` (and its main department moved to one it keeps):
/// `(Some(fitted), false)` when some were dropped, `(None, true)` when all of them would be,
/// `(None, false)` when none is in `drop`.
fn without_departments(p: &Rec, drop: &HashSet<&str>) -> (Option<Rec>, bool) {
    if drop.is_empty() {
        return (None, false);
    }
    let mut record = p.canonical.value();
    let Some(ids) = record.get("department_ids").and_then(Value::as_array) else {
        return (None, false);
    };
    let kept: Vec<Value> = ids
        .iter()
        .filter(|i| !i.as_str().is_some_and(|i| drop.contains(i)))
        .cloned()
        .collect();
    if kept.len() == ids.len() {
        return (None, false);
    }
    if kept.is_empty() {
        return (None, true);
    }
    if let Some(o) = record.as_object_mut() {
        let main_kept = o
            .get("main_department")
            .and_then(Value::as_str)
            .is_some_and(|m| !drop.contains(m));
        if !main_kept {
            o.insert("main_department".into(), kept[0].clone());
        }
        o.insert("department_ids".into(), Value::Array(kept));
    }
    (Some(Rec::new(p.external_id.clone(), &record)), false)
}

/// Each person's depth in the manager chain (a loop or a missing manager ends the chain).
fn manager_depths(people: &[Rec]) -> HashMap<&str, usize> {
    let manager: HashMap<&str, &str> = people
        .iter()
        .filter_map(|p| p.canonical.get("manager").map(|m| (p.id(), m)))
        .collect();
    let mut depth: HashMap<&str, usize> = HashMap::with_capacity(people.len());
    for p in people {
        let mut chain = Vec::new();
        let mut cur = p.id();
        let base = loop {
            if let Some(&d) = depth.get(cur) {
                break d;
            }
            if chain.contains(&cur) || chain.len() > 64 {
                break 0;
            }
            chain.push(cur);
            match manager.get(cur) {
                Some(m) => cur = m,
                None => break 0,
            }
        };
        // The chain's last element reports to nobody known (or closes a loop): depth 0.
        let mut d = base;
        for (i, id) in chain.iter().rev().enumerate() {
            if i > 0 || depth.contains_key(cur) {
                d += 1;
            }
            depth.insert(id, d);
        }
    }
    depth
}

/// What a write of `source` into `target` should leave there: the source's record, except the
/// fields another system owns (system of record), which keep the target's current values.
fn owned_record(route: &RouteConfig, entity: Entity, source: &Rec, target: &Rec) -> Arc<Canon> {
    if !route
        .system_of_record
        .keys()
        .any(|k| k.split('.').next() == Some(entity.as_str()))
    {
        return source.canonical.clone();
    }
    let (src, tgt) = (source.canonical.value(), target.canonical.value());
    let keys: BTreeSet<&String> = [&src, &tgt]
        .iter()
        .filter_map(|v| v.as_object())
        .flat_map(|o| o.keys())
        .filter(|k| k.as_str() != "id" && !route.source_owns(entity.as_str(), Some(k)))
        .collect();
    if keys.is_empty() {
        return source.canonical.clone();
    }
    let mut record = src.clone();
    if let Some(o) = record.as_object_mut() {
        for k in keys {
            match tgt.get(k) {
                Some(v) => o.insert(k.clone(), v.clone()),
                None => o.remove(k),
            };
        }
    }
    Arc::new(Canon::new(&record))
}

/// Dependency order: departments top-down, then people, then removals of
/// people, then departments bottom-up (the waves of [`super::apply`]).
fn order_key(s: &Step) -> (u8, i64, String) {
    let (class, depth) = s.wave();
    (class, depth, s.canonical_id.clone())
}
