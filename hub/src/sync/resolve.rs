//! Identity while a plan is made: a connector's links as the mappings' resolver. On the
//! source side an unknown external id gets its derived canonical id; on a target side a
//! placeholder `?entity:external` until the planner pairs it.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use huitong_mappings::XrefResolver;
use serde_json::Value;

use super::SyncError;
use super::canon::derived_id;
use crate::model::Entity;
use crate::store::Store;

/// Identity links of one connector, as the mappings' resolver (see the module docs).
pub struct SideResolver {
    pub(super) system: String,
    source: bool,
    to_canonical: RwLock<IdMap>,
    to_external: RwLock<IdMap>,
}

/// (entity, one id) -> the other id.
type IdMap = HashMap<(Entity, Box<str>), Box<str>>;

pub(super) fn placeholder(entity: Entity, external: &str) -> String {
    format!("?{entity}:{external}")
}

pub(super) fn is_placeholder(id: &str) -> bool {
    id.starts_with('?')
}

/// Replaces every `?entity:external` placeholder in `v` that `resolver` can now resolve with
/// its canonical id; whether anything changed.
pub(super) fn resolve_placeholders(v: &mut Value, resolver: &SideResolver) -> bool {
    match v {
        Value::String(s) => {
            let linked = s
                .strip_prefix('?')
                .and_then(|rest| rest.split_once(':'))
                .and_then(|(entity, external)| resolver.linked(Entity::parse(entity)?, external));
            match linked {
                Some(c) => {
                    *s = c;
                    true
                }
                None => false,
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |acc, i| resolve_placeholders(i, resolver) | acc),
        Value::Object(o) => o
            .values_mut()
            .fold(false, |acc, i| resolve_placeholders(i, resolver) | acc),
        _ => false,
    }
}

impl SideResolver {
    pub fn new(system: &str, source: bool) -> Self {
        SideResolver {
            system: system.to_owned(),
            source,
            to_canonical: RwLock::new(HashMap::new()),
            to_external: RwLock::new(HashMap::new()),
        }
    }

    /// The resolver of `system` with every department and person link the store holds.
    pub(super) async fn load(
        store: &dyn Store,
        system: &str,
        source: bool,
    ) -> Result<Self, SyncError> {
        let r = SideResolver::new(system, source);
        for entity in Entity::ORG {
            for (external, canonical) in store.xref_ids_in_system(entity, system).await? {
                r.insert(entity, &external, &canonical);
            }
        }
        Ok(r)
    }

    pub fn insert(&self, entity: Entity, external: &str, canonical: &str) {
        if let Ok(mut m) = self.to_canonical.write() {
            m.insert((entity, external.into()), canonical.into());
        }
        if let Ok(mut m) = self.to_external.write() {
            m.insert((entity, canonical.into()), external.into());
        }
    }

    pub(super) fn linked(&self, entity: Entity, external: &str) -> Option<String> {
        self.to_canonical
            .read()
            .ok()?
            .get(&(entity, external.into()))
            .map(|c| c.to_string())
    }

    pub(super) fn external(&self, entity: Entity, canonical: &str) -> Option<String> {
        self.to_external
            .read()
            .ok()?
            .get(&(entity, canonical.into()))
            .map(|c| c.to_string())
    }
}

impl XrefResolver for SideResolver {
    fn to_canonical(&self, entity: &str, _system: &str, external_id: &str) -> Option<String> {
        // A mapping naming an entity the hub does not know resolves nothing.
        let entity = Entity::parse(entity)?;
        if let Some(c) = self.linked(entity, external_id) {
            return Some(c);
        }
        Some(if self.source {
            derived_id(&self.system, entity, external_id)
        } else {
            placeholder(entity, external_id)
        })
    }

    fn to_external(&self, entity: &str, _system: &str, canonical_id: &str) -> Option<String> {
        self.external(Entity::parse(entity)?, canonical_id)
    }
}

/// A resolver that notes which links a mapping asks for, answering like a target side that
/// knows none yet (placeholders), so the mapping runs the same course.
#[derive(Default)]
pub(super) struct Requested(std::sync::Mutex<BTreeSet<(Entity, String)>>);

impl Requested {
    pub(super) fn into_requests(self) -> BTreeSet<(Entity, String)> {
        self.0.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl XrefResolver for Requested {
    fn to_canonical(&self, entity: &str, _system: &str, external_id: &str) -> Option<String> {
        let entity = Entity::parse(entity)?;
        if let Ok(mut m) = self.0.lock() {
            m.insert((entity, external_id.to_owned()));
        }
        Some(placeholder(entity, external_id))
    }

    fn to_external(&self, _entity: &str, _system: &str, _canonical_id: &str) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_paired_since_mapping_are_resolved_and_others_kept() {
        let r = SideResolver::new("sub", false);
        r.insert(Entity::Department, "7", "d-seven");
        r.insert(Entity::Person, "u1", "p-one");
        let mut v = json!({"id": "?person:u1", "department_ids": ["?department:7", "?department:8"],
            "manager": "?person:u9", "name": "?odd:name", "leader_of": []});
        assert!(resolve_placeholders(&mut v, &r));
        assert_eq!(
            v,
            json!({"id": "p-one", "department_ids": ["d-seven", "?department:8"],
                "manager": "?person:u9", "name": "?odd:name", "leader_of": []})
        );
        assert!(!resolve_placeholders(&mut v, &r), "nothing left to resolve");
        let c = super::super::Canon::new(&v);
        assert_eq!(c.get("id"), Some("p-one"));
        assert_eq!(c.get("department_ids"), None, "only string hot fields");
        assert_eq!(c.value(), v);
    }

    #[test]
    fn sides_answer_unknown_ids_differently_and_unknown_entities_not_at_all() {
        let source = SideResolver::new("hq", true);
        let target = SideResolver::new("sub", false);
        let derived = source.to_canonical("person", "hq", "u1").unwrap();
        assert_eq!(derived, derived_id("hq", Entity::Person, "u1"));
        assert_eq!(
            target.to_canonical("person", "sub", "u1").as_deref(),
            Some("?person:u1")
        );
        assert_eq!(source.to_canonical("robot", "hq", "u1"), None);
        target.insert(Entity::Person, "u1", "p-1");
        assert_eq!(
            target.to_external("person", "sub", "p-1").as_deref(),
            Some("u1")
        );
        assert_eq!(target.to_external("department", "sub", "p-1"), None);
    }
}
