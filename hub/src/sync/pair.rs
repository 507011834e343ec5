//! Pairing: which target record each source record is. First the links the store holds (a
//! target record mapped to a real canonical id, not a `?entity:external` placeholder), then
//! the rules of the entity: departments by the root and by name under the paired parent,
//! top-down; any entity by match keys (people: employee number, email, mobile), in order.
//! Two candidates, or two source records claiming one value, are conflicts: never a guess.
//! Pure functions over in-memory records.

use std::collections::{HashMap, HashSet};

use super::canon::Rec;
use super::plan::{Conflict, ConflictKind};
use super::resolve::is_placeholder;
use super::scope::depth_of;
use crate::model::Entity;

/// Which target record each source record is paired with.
#[derive(Debug, Default)]
pub struct Pairing {
    /// Source canonical id -> index of its target record.
    pub pairs: HashMap<String, usize>,
    /// The pairs this plan found (not held by a link yet): (source index, target index), in
    /// the order found.
    pub found: Vec<(usize, usize)>,
    pub conflicts: Vec<Conflict>,
    /// Source records (external ids) left unpaired by a conflict: not to be created either.
    pub blocked: HashSet<String>,
    /// Target indexes paired so far.
    taken: HashSet<usize>,
}

impl Pairing {
    /// The pairs the store's links already give: every target record whose id is canonical.
    pub fn linked(target: &[Rec]) -> Self {
        let mut p = Pairing::default();
        for (i, t) in target.iter().enumerate() {
            if !is_placeholder(t.id()) {
                p.pairs.insert(t.id().to_owned(), i);
                p.taken.insert(i);
            }
        }
        p
    }

    fn pair(&mut self, source_index: usize, source: &Rec, target_index: usize) {
        self.pairs.insert(source.id().to_owned(), target_index);
        self.taken.insert(target_index);
        self.found.push((source_index, target_index));
    }

    /// The target record paired with a source record.
    pub fn target_of<'t>(&self, source: &Rec, target: &'t [Rec]) -> Option<&'t Rec> {
        self.pairs.get(source.id()).and_then(|i| target.get(*i))
    }
}

/// Departments: links, then the root with the target's root, then each department by its name
/// under its paired parent, top-down (a department whose parent is unpaired will be created
/// with it). Two candidates are an `ambiguous_match`, and the department stays unpaired
/// (blocked: not created either).
pub fn departments(source: &[Rec], target: &[Rec], target_name: &str) -> Pairing {
    let mut p = Pairing::linked(target);
    let parents: HashMap<String, Option<String>> = source
        .iter()
        .map(|d| (d.id().to_owned(), d.parent().map(str::to_owned)))
        .collect();
    let mut ordered: Vec<usize> = (0..source.len()).collect();
    ordered.sort_by_key(|i| depth_of(source[*i].id(), &parents).unwrap_or(usize::MAX));
    // Target departments by (parent id, name), for first pairing without a scan per department.
    let mut by_parent_name: HashMap<(&str, String), Vec<usize>> = HashMap::new();
    for (i, t) in target.iter().enumerate() {
        if let Some(parent) = t.parent() {
            by_parent_name
                .entry((parent, t.name()))
                .or_default()
                .push(i);
        }
    }
    for si in ordered {
        let d = &source[si];
        if p.pairs.contains_key(d.id()) {
            continue;
        }
        let candidates: Vec<usize> = match d.parent() {
            None => (0..target.len())
                .filter(|i| target[*i].parent().is_none() && !p.taken.contains(i))
                .collect(),
            Some(parent) => {
                let Some(&tp) = p.pairs.get(parent) else {
                    continue; // the parent will be created: so will this one
                };
                by_parent_name
                    .get(&(target[tp].id(), d.name()))
                    .map(|v| v.iter().copied().filter(|i| !p.taken.contains(i)).collect())
                    .unwrap_or_default()
            }
        };
        match candidates.as_slice() {
            [] => {}
            [one] => p.pair(si, d, *one),
            many => {
                p.blocked.insert(d.external_id.clone());
                p.conflicts.push(Conflict {
                    entity: Entity::Department,
                    kind: ConflictKind::AmbiguousMatch,
                    detail: format!(
                        "{} departments named {:?} under the same parent in {target_name}",
                        many.len(),
                        d.name()
                    ),
                    records: many
                        .iter()
                        .map(|i| target[*i].external_id.clone())
                        .collect(),
                });
            }
        }
    }
    p
}

/// Any entity by match keys: for each field in order, a source record not paired yet is paired
/// with the one unpaired target record holding the same value (case-insensitive). Several
/// target records with the value are an `ambiguous_match`; several source records claiming it
/// a `duplicate_<field>` (when one of them is unpaired and the target holds the value): none of
/// them is paired on it, nor created.
pub fn by_keys(
    entity: Entity,
    mut p: Pairing,
    source: &[Rec],
    target: &[Rec],
    fields: &[&'static str],
    names: (&str, &str),
) -> Pairing {
    let (source_name, target_name) = names;
    // In a steady state every record is linked, and the per-field value indexes of a large
    // org are not built at all.
    if source.iter().all(|s| p.pairs.contains_key(s.id())) {
        return p;
    }
    // (field, external id) reported in a duplicate conflict already.
    let mut reported: HashSet<(&str, String)> = HashSet::new();
    for &field in fields {
        let key = |r: &Rec| r.field(field).map(str::to_lowercase);
        // Two source records claiming one value: neither is matched on it.
        let mut claims: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in source.iter().enumerate() {
            if let Some(k) = key(s) {
                claims.entry(k).or_default().push(i);
            }
        }
        let mut holders: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in target.iter().enumerate() {
            if let Some(k) = key(t) {
                holders.entry(k).or_default().push(i);
            }
        }
        let mut duplicates: Vec<(&String, &Vec<usize>)> =
            claims.iter().filter(|(_, c)| c.len() > 1).collect();
        duplicates.sort();
        for (value, claimants) in duplicates {
            let unpaired = claimants
                .iter()
                .any(|i| !p.pairs.contains_key(source[*i].id()));
            if !unpaired || !holders.contains_key(value) {
                continue;
            }
            let ids: Vec<String> = claimants
                .iter()
                .map(|i| source[*i].external_id.clone())
                .collect();
            // Every claimant is blocked (no short cut: each one is recorded), the conflict
            // reported once.
            let mut fresh = false;
            for id in &ids {
                p.blocked.insert(id.clone());
                fresh |= reported.insert((field, id.clone()));
            }
            if fresh {
                p.conflicts.push(Conflict {
                    entity,
                    kind: ConflictKind::Duplicate(field),
                    detail: format!(
                        "{} {} in {source_name} share the {field} {value:?}",
                        claimants.len(),
                        entity.plural()
                    ),
                    records: ids,
                });
            }
        }
        for (si, s) in source.iter().enumerate() {
            if p.pairs.contains_key(s.id()) || p.blocked.contains(&s.external_id) {
                continue;
            }
            let Some(k) = key(s) else { continue };
            if claims.get(&k).is_some_and(|c| c.len() > 1) {
                continue;
            }
            let candidates: Vec<usize> = holders
                .get(&k)
                .map(|v| v.iter().copied().filter(|i| !p.taken.contains(i)).collect())
                .unwrap_or_default();
            match candidates.as_slice() {
                [] => {}
                [one] => p.pair(si, s, *one),
                many => {
                    p.blocked.insert(s.external_id.clone());
                    p.conflicts.push(Conflict {
                        entity,
                        kind: ConflictKind::AmbiguousMatch,
                        detail: format!(
                            "{} {} in {target_name} have the {field} {k:?}",
                            many.len(),
                            entity.plural()
                        ),
                        records: many
                            .iter()
                            .map(|i| target[*i].external_id.clone())
                            .collect(),
                    });
                }
            }
        }
    }
    p
}
