//! Canonical records as a plan holds them: compact ([`Canon`]), with their external id
//! ([`Rec`]), and the deterministic id of a source record not linked yet ([`derived_id`]).

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::Entity;

/// The deterministic canonical id of a source record not yet linked.
pub fn derived_id(system: &str, entity: Entity, external_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(system.as_bytes());
    h.update([0]);
    h.update(entity.as_str().as_bytes());
    h.update([0]);
    h.update(external_id.as_bytes());
    format!(
        "{}-{}",
        entity.id_prefix(),
        &hex::encode(h.finalize())[..20]
    )
}

/// Canonical fields the plan reads for every record (identity, tree, match rules, status);
/// a [`Canon`] keeps them at hand so the rest stays packed.
const HOT_FIELDS: &[&str] = &[
    "id",
    "name",
    "parent_id",
    "employee_no",
    "email",
    "mobile",
    "status",
    "manager",
];

/// A canonical record kept compact — its JSON text, parsed again only where a whole record is
/// needed (a diff, a write) — plus its [`HOT_FIELDS`] that are strings. A large org's plan holds
/// one per record of each side: a `serde_json::Value` tree costs several times the text.
#[derive(Debug)]
pub struct Canon {
    json: Box<str>,
    hot: Box<[(&'static str, Box<str>)]>,
}

impl Canon {
    pub fn new(v: &Value) -> Self {
        let hot = HOT_FIELDS
            .iter()
            .filter_map(|f| v.get(*f).and_then(Value::as_str).map(|s| (*f, s.into())))
            .collect();
        Canon {
            json: v.to_string().into_boxed_str(),
            hot,
        }
    }

    /// The whole record (the text was written by [`Canon::new`], so it parses).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    /// A hot field's string value.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.hot
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| &**v)
    }

    /// Whether the record's text contains `needle` (a cheap test before parsing it).
    pub(super) fn contains(&self, needle: &str) -> bool {
        self.json.contains(needle)
    }
}

/// One record of one side: its external id and canonical form (shared with the plan's steps,
/// never copied).
#[derive(Debug, Clone)]
pub struct Rec {
    pub external_id: String,
    pub canonical: Arc<Canon>,
}

impl Rec {
    pub fn new(external_id: impl Into<String>, canonical: &Value) -> Self {
        Rec {
            external_id: external_id.into(),
            canonical: Arc::new(Canon::new(canonical)),
        }
    }
    pub fn id(&self) -> &str {
        self.canonical.get("id").unwrap_or("")
    }
    pub fn name(&self) -> String {
        self.canonical.get("name").unwrap_or("").to_owned()
    }
    pub fn parent(&self) -> Option<&str> {
        self.canonical.get("parent_id")
    }
    /// A hot string field, empty values as absent.
    pub fn field(&self, field: &str) -> Option<&str> {
        self.canonical.get(field).filter(|s| !s.is_empty())
    }
    /// Whether its status says it is no longer active (a leaver).
    pub fn inactive(&self) -> bool {
        self.canonical.get("status").is_some_and(|s| s != "active")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derived_id("hq", Entity::Person, "u1");
        assert_eq!(a, derived_id("hq", Entity::Person, "u1"));
        assert!(a.starts_with("p-"));
        assert_ne!(a, derived_id("hq", Entity::Person, "u2"));
        assert_ne!(a, derived_id("factory", Entity::Person, "u1"));
        assert!(derived_id("hq", Entity::Department, "u1").starts_with("d-"));
    }
}
