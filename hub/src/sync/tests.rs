//! The planner over in-memory records, table by table: no connector, no store. Each case
//! builds a source org and a target side as read (linked records carry canonical ids, unlinked
//! ones `?entity:external` placeholders), plans one target, and names the steps and conflicts
//! it expects.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::canon::Rec;
use super::plan::TargetPlan;
use super::read::Side;
use super::resolve::SideResolver;
use super::target::{Source, TargetRules, plan_target};
use crate::config::{Deletion, MatchRule, RouteConfig};
use crate::model::{Action, Entity};

/// A route `org` from `hq` to `sub`, matching people by email then mobile.
pub(super) fn route() -> RouteConfig {
    RouteConfig {
        name: "org".into(),
        source: "hq".into(),
        targets: vec!["sub".into()],
        entities: vec!["department".into(), "person".into()],
        match_rules: vec![MatchRule::Email, MatchRule::Mobile],
        deletion: Deletion::Disable,
        safety_threshold_percent: 100.0,
        scope_root: None,
        scope_deny: Vec::new(),
        system_of_record: BTreeMap::new(),
    }
}

const DEPT_FIELDS: &[&str] = &["name", "parent_id"];
const PERSON_FIELDS: &[&str] = &[
    "department_ids",
    "email",
    "main_department",
    "manager",
    "mobile",
    "name",
    "status",
    "title",
];

fn owned(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| (*f).to_owned()).collect()
}

/// A department: `id` is canonical (`d-…`), its external id the part after `d-`.
fn dept(id: &str, name: &str, parent: Option<&str>) -> Rec {
    let external = id
        .trim_start_matches("d-")
        .trim_start_matches("?department:");
    Rec::new(
        external,
        &json!({"id": id, "name": name, "parent_id": parent}),
    )
}

/// A person in `depts` (the first is the main department), with `extra` fields.
fn person(id: &str, name: &str, depts: &[&str], extra: Value) -> Rec {
    let external = id.trim_start_matches("p-").trim_start_matches("?person:");
    let mut v = json!({"id": id, "name": name, "status": "active",
        "department_ids": depts, "main_department": depts.first()});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    Rec::new(external, &v)
}

/// A person in the root department only.
fn staff(id: &str, name: &str, extra: Value) -> Rec {
    person(id, name, &["d-root"], extra)
}

/// A case: the source's records, the target's as read, and the rules.
struct Case {
    departments: Vec<Rec>,
    people: Vec<Rec>,
    target_departments: Vec<Rec>,
    target_people: Vec<Rec>,
    route: RouteConfig,
    max_levels: Option<usize>,
    person_fields: Vec<String>,
    /// Target records that failed to map (entity, external id), and the links they have.
    target_unmapped: Vec<(Entity, String)>,
    links: Vec<(Entity, String, String)>,
    /// Canonical ids of source records that failed to map.
    source_unmapped: std::collections::HashSet<String>,
}

impl Case {
    fn new() -> Self {
        Case {
            departments: vec![dept("d-root", "HQ", None)],
            people: Vec::new(),
            target_departments: vec![dept("?department:1", "Factory", None)],
            target_people: Vec::new(),
            route: route(),
            max_levels: None,
            person_fields: owned(PERSON_FIELDS),
            target_unmapped: Vec::new(),
            links: Vec::new(),
            source_unmapped: Default::default(),
        }
    }

    /// The target's root already linked with the source's (a second run).
    fn linked_root(mut self) -> Self {
        self.target_departments = vec![dept("d-root", "Factory", None)];
        self
    }

    fn plan(&self) -> (TargetPlan, SideResolver) {
        let resolver = SideResolver::new("sub", false);
        let rules = TargetRules::new(
            &self.route,
            "sub",
            self.max_levels,
            owned(DEPT_FIELDS),
            self.person_fields.clone(),
        );
        for (entity, external, canonical) in &self.links {
            resolver.insert(*entity, external, canonical);
        }
        let side = Side {
            departments: self.target_departments.clone(),
            people: self.target_people.clone(),
            failures: Vec::new(),
            unmapped: self.target_unmapped.clone(),
            records_read: self.target_departments.len() + self.target_people.len(),
        };
        let source = Source {
            departments: &self.departments,
            people: &self.people,
            unmapped: &self.source_unmapped,
        };
        let plan = plan_target(&rules, &resolver, side, source);
        (plan, resolver)
    }
}

/// Steps as `action id` (plan order), conflicts as `kind [records]`.
fn outline(p: &TargetPlan) -> (Vec<String>, Vec<String>) {
    let steps = p
        .steps
        .iter()
        .map(|s| format!("{} {}", s.action, s.canonical_id))
        .collect();
    let conflicts = p
        .conflicts
        .iter()
        .map(|c| format!("{} [{}]", c.kind, c.records.join(",")))
        .collect();
    (steps, conflicts)
}

#[test]
fn a_first_run_pairs_the_roots_and_creates_top_down_managers_first() {
    let mut c = Case::new();
    c.departments.extend([
        dept("d-sales", "Sales", Some("d-root")),
        dept("d-east", "East", Some("d-sales")),
    ]);
    c.people = vec![
        person("p-lead", "Lead", &["d-east"], json!({"manager": "p-boss"})),
        person("p-boss", "Boss", &["d-sales"], json!({})),
    ];
    let (plan, resolver) = c.plan();
    let (steps, conflicts) = outline(&plan);
    assert_eq!(
        steps,
        [
            "link d-root",
            "create d-sales",
            "create d-east",
            "create p-boss",
            "create p-lead"
        ]
    );
    assert!(conflicts.is_empty(), "{conflicts:?}");
    assert_eq!(
        plan.steps.iter().map(|s| s.wave()).collect::<Vec<_>>(),
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)],
        "departments by depth, then people by manager depth"
    );
    assert_eq!(
        resolver.linked(Entity::Department, "1").as_deref(),
        Some("d-root"),
        "the pair found is known to the resolver"
    );
}

#[test]
fn linked_records_changed_in_place_are_updates_and_moves() {
    let mut c = Case::new().linked_root();
    c.departments.extend([
        dept("d-a", "Sales", Some("d-root")),
        dept("d-b", "Support", Some("d-root")),
        dept("d-c", "East", Some("d-b")), // moved under Support
    ]);
    c.target_departments.extend([
        dept("d-a", "Sales Dept", Some("d-root")), // renamed in the source
        dept("d-b", "Support", Some("d-root")),
        dept("d-c", "East", Some("d-a")),
    ]);
    c.people = vec![
        // Multi-department: the same departments in another order are no change.
        person("p-1", "Ann", &["d-a", "d-b"], json!({"title": "Lead"})),
        // A new title: an update.
        person("p-2", "Bo", &["d-a"], json!({"title": "Engineer"})),
        // A second department: a move.
        person("p-3", "Cy", &["d-a", "d-c"], json!({})),
    ];
    c.target_people = vec![
        person(
            "p-1",
            "Ann",
            &["d-b", "d-a"],
            json!({"title": "Lead", "main_department": "d-a"}),
        ),
        person("p-2", "Bo", &["d-a"], json!({"title": "Intern"})),
        person("p-3", "Cy", &["d-a"], json!({})),
    ];
    let (plan, _) = c.plan();
    let (steps, conflicts) = outline(&plan);
    assert_eq!(steps, ["update d-a", "move d-c", "update p-2", "move p-3"]);
    assert!(conflicts.is_empty());
    // What the target holds after the write, for its echo hash: its own record with the change
    // (a field only the target carries keeps its value).
    let expected = plan.steps[2].expected.as_ref().map(|c| c.value());
    assert_eq!(
        expected.as_ref().map(|e| (&e["title"], &e["name"])),
        Some((&json!("Engineer"), &json!("Bo")))
    );
    let title = &plan.steps[2].changes["title"];
    assert_eq!(
        (&title.old, &title.new),
        (&json!("Intern"), &json!("Engineer"))
    );
    assert_eq!(plan.removals, 0);
}

#[test]
fn leavers_deleted_and_rehired_people_follow_the_deletion_policy() {
    let base = || {
        let mut c = Case::new().linked_root();
        c.people = vec![
            staff("p-left", "Left", json!({"status": "disabled"})),
            staff("p-back", "Back", json!({})), // rehired
        ];
        c.target_people = vec![
            staff("p-left", "Left", json!({})),
            staff("p-back", "Back", json!({"status": "disabled"})),
            staff("p-gone", "Gone", json!({})), // deleted in the source
            staff("p-was", "Was", json!({"status": "disabled"})), // gone and disabled
            staff("?person:x9", "Stranger", json!({})), // not ours
        ];
        c
    };
    // A target that can disable: the leaver's status is an update, the deleted one disabled.
    let (plan, _) = base().plan();
    let (steps, _) = outline(&plan);
    assert_eq!(
        steps,
        ["update p-back", "update p-left", "disable p-gone"],
        "an already disabled leaver is left alone; an unlinked stranger is never removed"
    );
    assert_eq!(plan.removals, 1);
    let gone = plan.steps.iter().find(|s| s.canonical_id == "p-gone");
    let record = gone.map(|s| s.record.value()).unwrap_or_default();
    assert_eq!(record["status"], "disabled");
    assert_eq!(
        record["leader_of"],
        json!([]),
        "a leaver leads nothing any more"
    );

    // deletion = "delete": removed instead.
    let mut c = base();
    c.route.deletion = Deletion::Delete;
    let (steps, _) = outline(&c.plan().0);
    assert_eq!(
        steps,
        [
            "update p-back",
            "update p-left",
            "delete p-gone",
            "delete p-was"
        ]
    );

    // A target with no disabled state (DingTalk: `status` is not carried): a leaver is removed.
    let mut c = base();
    c.person_fields.retain(|f| f != "status");
    let (plan, _) = c.plan();
    let (steps, _) = outline(&plan);
    assert_eq!(steps, ["delete p-gone", "delete p-left", "delete p-was"]);
    assert_eq!(plan.removals, 3);
}

#[test]
fn match_rules_link_unique_values_and_never_guess() {
    let mut c = Case::new().linked_root();
    c.people = vec![
        // One target person has this email: linked, and the diff rides on the link step.
        staff("p-1", "Ann", json!({"email": "Ann@x.cn", "title": "Lead"})),
        // Two target people have this email: ambiguous, neither linked nor created.
        staff("p-2", "Bo", json!({"email": "bo@x.cn"})),
        // Two source people share a mobile the target holds: duplicate, neither paired.
        staff("p-3", "Cy", json!({"mobile": "13800000003"})),
        staff("p-4", "Di", json!({"mobile": "13800000003"})),
        // No email match, but the mobile is the next rule.
        staff(
            "p-5",
            "Ed",
            json!({"email": "ed@x.cn", "mobile": "13800000005"}),
        ),
    ];
    c.target_people = vec![
        staff("?person:t1", "Ann", json!({"email": "ann@x.cn"})),
        staff("?person:t2", "Bo A", json!({"email": "bo@x.cn"})),
        staff("?person:t3", "Bo B", json!({"email": "BO@x.cn"})),
        staff("?person:t4", "Cy", json!({"mobile": "13800000003"})),
        staff("?person:t5", "Ed", json!({"mobile": "13800000005"})),
    ];
    let (plan, resolver) = c.plan();
    let (steps, conflicts) = outline(&plan);
    assert_eq!(steps, ["update p-1", "update p-5"]);
    assert!(
        plan.steps.iter().all(|s| s.link_first),
        "links recorded first"
    );
    assert_eq!(
        plan.steps[0].target_id.as_deref(),
        Some("t1"),
        "the email matched without regard to case"
    );
    assert_eq!(
        plan.steps[0].changes.keys().collect::<Vec<_>>(),
        ["email", "title"]
    );
    assert_eq!(
        conflicts,
        ["ambiguous_match [t2,t3]", "duplicate_mobile [3,4]"],
        "{conflicts:?}"
    );
    assert_eq!(
        resolver.linked(Entity::Person, "t5").as_deref(),
        Some("p-5")
    );
    assert_eq!(resolver.linked(Entity::Person, "t2"), None);
    // Nothing is created for the people in conflict, and the unmatched target people stay.
    assert_eq!(plan.removals, 0);
}

#[test]
fn a_value_the_vendor_keeps_unique_is_a_conflict_not_a_refused_create() {
    let mut c = Case::new().linked_root();
    c.route.match_rules = vec![MatchRule::EmployeeNo];
    c.people = vec![staff("p-1", "Ann", json!({"mobile": "13800000001"}))];
    // An unlinked target person holds the mobile (no rule matches on it).
    c.target_people = vec![staff(
        "?person:t1",
        "Someone",
        json!({"mobile": "13800000001"}),
    )];
    let (plan, _) = c.plan();
    let (steps, conflicts) = outline(&plan);
    assert!(steps.is_empty(), "{steps:?}");
    assert_eq!(conflicts, ["duplicate_mobile [1]"]);
}

#[test]
fn references_to_records_the_target_will_not_hold_are_not_changes() {
    let mut c = Case::new().linked_root();
    c.people = vec![
        // Ann's manager is in conflict (ambiguous): the reference cannot be written.
        staff("p-1", "Ann", json!({"manager": "p-2"})),
        staff("p-2", "Bo", json!({"email": "bo@x.cn"})),
    ];
    c.target_people = vec![
        staff("p-1", "Ann", json!({})),
        staff("?person:t2", "Bo A", json!({"email": "bo@x.cn"})),
        staff("?person:t3", "Bo B", json!({"email": "bo@x.cn"})),
    ];
    let (plan, _) = c.plan();
    let (steps, conflicts) = outline(&plan);
    assert!(steps.is_empty(), "no endless manager change: {steps:?}");
    assert_eq!(conflicts, ["ambiguous_match [t2,t3]"]);
}

#[test]
fn departments_the_target_cannot_hold_are_left_out_with_their_people() {
    let mut c = Case::new().linked_root();
    c.max_levels = Some(2);
    c.departments.extend([
        dept("d-a", "A", Some("d-root")),
        dept("d-b", "B", Some("d-a")), // level 3 of 2
    ]);
    c.people = vec![
        person("p-1", "Only deep", &["d-b"], json!({})),
        person("p-2", "Also in A", &["d-b", "d-a"], json!({})),
    ];
    let (plan, _) = c.plan();
    let (steps, conflicts) = outline(&plan);
    assert_eq!(steps, ["create d-a", "create p-2"]);
    assert_eq!(conflicts, ["too_deep [b]", "too_deep [1]"]);
    let p2 = plan.steps[1].record.value();
    assert_eq!(p2["department_ids"], json!(["d-a"]));
    assert_eq!(
        p2["main_department"],
        json!("d-a"),
        "the main department moves too"
    );
}

#[test]
fn department_names_pair_under_their_paired_parent_or_conflict() {
    let mut c = Case::new();
    c.departments.extend([
        dept("d-a", "Sales", Some("d-root")),
        dept("d-b", "East", Some("d-a")),
        dept("d-c", "Ops", Some("d-root")),
    ]);
    c.target_departments.extend([
        dept("?department:2", "Sales", Some("?department:1")),
        dept("?department:3", "East", Some("?department:2")),
        dept("?department:4", "Ops", Some("?department:1")),
        dept("?department:5", "Ops", Some("?department:1")),
    ]);
    c.departments.push(dept("d-d", "Night shift", Some("d-c")));
    c.people = vec![
        person("p-1", "In Ops only", &["d-d"], json!({})),
        person("p-2", "Also in Sales", &["d-c", "d-a"], json!({})),
    ];
    let (plan, resolver) = c.plan();
    let (steps, conflicts) = outline(&plan);
    // The ambiguous "Ops" is neither linked nor created (no third Ops), nor anything under it.
    assert_eq!(steps, ["link d-root", "link d-a", "link d-b", "create p-2"]);
    assert_eq!(conflicts, ["ambiguous_match [4,5]", "unplaced [1]"]);
    assert_eq!(
        resolver.linked(Entity::Department, "3").as_deref(),
        Some("d-b")
    );
    assert_eq!(
        plan.steps[3].record.value()["department_ids"],
        json!(["d-a"])
    );
}

#[test]
fn a_target_without_a_root_and_deleted_departments() {
    let mut c = Case::new();
    c.target_departments.clear();
    let (_, conflicts) = outline(&c.plan().0);
    assert_eq!(conflicts, ["no_root [root]"]);

    // deletion = "delete" removes departments the source no longer has, deepest first.
    let mut c = Case::new().linked_root();
    c.route.deletion = Deletion::Delete;
    c.target_departments.extend([
        dept("d-a", "A", Some("d-root")),
        dept("d-b", "B", Some("d-a")),
    ]);
    let (steps, _) = outline(&c.plan().0);
    assert_eq!(steps, ["delete d-b", "delete d-a"]);
    // Under "disable", departments stay.
    c.route.deletion = Deletion::Disable;
    assert!(c.plan().0.steps.is_empty());
}

#[test]
fn fields_another_system_owns_are_neither_compared_nor_overwritten() {
    let mut c = Case::new().linked_root();
    c.route
        .system_of_record
        .insert("person.title".into(), "sub".into());
    c.people = vec![staff("p-1", "Ann Li", json!({"title": "Source title"}))];
    c.target_people = vec![staff("p-1", "Ann", json!({"title": "HR title"}))];
    let (plan, _) = c.plan();
    let (steps, _) = outline(&plan);
    assert_eq!(steps, ["update p-1"]);
    assert_eq!(plan.steps[0].changes.keys().collect::<Vec<_>>(), ["name"]);
    assert_eq!(
        plan.steps[0].record.value()["title"],
        "HR title",
        "the write keeps the owner's value"
    );

    // The target owns people: none created or removed, only the fields it does not own written.
    let mut c = Case::new().linked_root();
    c.route
        .system_of_record
        .insert("person".into(), "sub".into());
    c.people = vec![staff("p-new", "New", json!({}))];
    c.target_people = vec![staff("p-old", "Old", json!({}))];
    assert!(c.plan().0.steps.is_empty());
}

#[test]
fn every_claimant_of_a_duplicate_is_blocked_even_when_one_was_reported_before() {
    // The same rule twice: the duplicate is reported once, and every claimant stays
    // unpaired (none is created either).
    let mut c = Case::new().linked_root();
    c.route.match_rules = vec![MatchRule::Email, MatchRule::Email];
    c.people = vec![
        staff("p-1", "A", json!({"email": "x@x.cn"})),
        staff("p-2", "B", json!({"email": "x@x.cn"})),
        staff("p-3", "C", json!({"email": "x@x.cn"})),
    ];
    c.target_people = vec![staff("?person:t1", "X", json!({"email": "x@x.cn"}))];
    let (steps, conflicts) = outline(&c.plan().0);
    assert!(steps.is_empty(), "{steps:?}");
    assert_eq!(conflicts, ["duplicate_email [1,2,3]"]);
}

#[test]
fn records_that_failed_to_map_are_neither_created_again_nor_removed() {
    let mut c = Case::new().linked_root();
    c.people = vec![
        staff("p-1", "Ann", json!({})),
        staff("p-2", "Bo", json!({})),
    ];
    // The target's record of Ann did not map (an admin's table lacks its value): it is linked,
    // so Ann is not created a second time.
    c.target_unmapped = vec![(Entity::Person, "t1".into())];
    c.links = vec![(Entity::Person, "t1".into(), "p-1".into())];
    // Cy's source record did not map: Cy has not left, so Cy's target record stays.
    c.target_people = vec![staff("p-2", "Bo", json!({})), staff("p-3", "Cy", json!({}))];
    c.source_unmapped = ["p-3".to_owned()].into();
    let (plan, _) = c.plan();
    let (steps, _) = outline(&plan);
    assert!(steps.is_empty(), "{steps:?}");
    assert_eq!(plan.removals, 0);
}

/// Another entity family reuses the core without copying it: a flat list of records (here
/// tags: a name and a colour, keyed by name) read into a [`Side`], paired by links and a key,
/// diffed on the fields both sides carry, planned as updates, creates and removals, each step
/// ready for the queue as a `WireStep` — and the echo hash computed from a mapping the same way.
#[test]
fn a_flat_toy_family_is_planned_with_the_generic_core() {
    use super::target::plan_flat;
    let route = route();
    let rules = TargetRules::new(&route, "sub", None, Vec::new(), owned(&["color", "name"]));
    let tag = |id: &str, name: &str, color: &str| {
        let external = id.trim_start_matches("p-").trim_start_matches("?person:");
        Rec::new(external, &json!({"id": id, "name": name, "color": color}))
    };
    let source = vec![
        tag("p-red", "urgent", "red"), // linked, colour changed: update
        tag("p-new", "new", "green"),  // unlinked, same name in the target: link
        tag("p-vip", "vip", "gold"),   // nowhere: create
    ];
    let target = Side {
        people: vec![
            tag("p-red", "urgent", "orange"),
            tag("?person:t-new", "new", "green"),
            tag("p-old", "stale", "grey"), // linked, gone from the source: removed
        ],
        records_read: 3,
        ..Side::default()
    };
    let resolver = SideResolver::new("sub", false);
    let plan = plan_flat(
        &rules,
        Entity::Person,
        &["name"],
        Some(Action::Delete),
        &resolver,
        &source,
        target,
    );
    let (steps, conflicts) = outline(&plan);
    assert_eq!(
        steps,
        ["link p-new", "update p-red", "create p-vip", "delete p-old"]
    );
    assert!(conflicts.is_empty());
    assert_eq!(
        resolver.linked(Entity::Person, "t-new").as_deref(),
        Some("p-new")
    );
    let wire: Vec<crate::model::WireStep> =
        plan.steps.iter().map(crate::model::WireStep::of).collect();
    assert_eq!(wire[1].record["color"], "red");
    assert_eq!(plan.removals, 1);
}
