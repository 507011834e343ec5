//! The domain's shared vocabulary, a leaf module: the canonical entities, what a sync step
//! does, and a step as it travels through the queue. The queue, the store's callers, sync and
//! the live path all speak these types; none of them spells an entity as a bare string.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use huitong_connectors::capability::Entity as VendorEntity;

/// A canonical entity: the kinds of record huitong keeps one model of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    Department,
    Person,
}

impl Entity {
    /// Every entity of the org chart, in dependency order (departments hold people).
    pub const ORG: [Entity; 2] = [Entity::Department, Entity::Person];

    /// The name used in mappings, the store's rows, plans and wire messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Entity::Department => "department",
            Entity::Person => "person",
        }
    }

    /// The entity named `name` (as [`Entity::as_str`] spells it); `None` for any other name —
    /// never a guess.
    pub fn parse(name: &str) -> Option<Entity> {
        match name {
            "department" => Some(Entity::Department),
            "person" => Some(Entity::Person),
            _ => None,
        }
    }

    /// Its plural, for messages ("3 people in hq share …").
    pub const fn plural(self) -> &'static str {
        match self {
            Entity::Department => "departments",
            Entity::Person => "people",
        }
    }

    /// The vendor API entity that holds it.
    pub const fn vendor(self) -> VendorEntity {
        match self {
            Entity::Department => VendorEntity::Department,
            Entity::Person => VendorEntity::User,
        }
    }

    /// The canonical entity of the org chart a vendor API entity holds (`None`: messages,
    /// chats and tasks are not org records).
    pub const fn of_vendor(e: VendorEntity) -> Option<Entity> {
        match e {
            VendorEntity::Department => Some(Entity::Department),
            VendorEntity::User => Some(Entity::Person),
            _ => None,
        }
    }

    /// The prefix of its derived canonical ids (`p-…`, `d-…`).
    pub const fn id_prefix(self) -> &'static str {
        match self {
            Entity::Department => "d",
            Entity::Person => "p",
        }
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Entity {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// What a plan step does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Record an existing target record as the same entity (matched by rules).
    Link,
    Create,
    Update,
    /// An update that changes where the record sits (parent / departments).
    Move,
    Disable,
    Delete,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Link,
        Action::Create,
        Action::Update,
        Action::Move,
        Action::Disable,
        Action::Delete,
    ];

    /// The name runs count it under (`create`, `update`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Link => "link",
            Action::Create => "create",
            Action::Update => "update",
            Action::Move => "move",
            Action::Disable => "disable",
            Action::Delete => "delete",
        }
    }

    /// Takes the record out of the target (a leaver disabled, or a record deleted).
    pub const fn is_removal(self) -> bool {
        matches!(self, Action::Disable | Action::Delete)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plan step as it travels in an `ApplyStepV1` task: everything a handler needs to write
/// it without the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireStep {
    pub action: Action,
    pub entity: Entity,
    pub canonical_id: String,
    pub name: String,
    /// The record's id in the target (absent for creates).
    pub target_id: Option<String>,
    /// Record the link before writing (a first match by rules).
    pub link_first: bool,
    /// List fields the source emptied: sent as `[]` (a missing field would leave them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emptied: Vec<String>,
    /// The canonical record to write.
    pub record: Value,
    /// For an update: what the target holds once it is written (its record as planned, with
    /// the changes) — the echo hash is taken over it. Absent: over `record`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_and_actions_keep_their_wire_names() {
        for e in Entity::ORG {
            assert_eq!(Entity::parse(e.as_str()), Some(e));
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
            assert_eq!(Entity::of_vendor(e.vendor()), Some(e));
        }
        assert_eq!(Entity::parse("user"), None, "no silent fallback");
        for a in Action::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        let step: WireStep = serde_json::from_value(serde_json::json!({
            "action": "create", "entity": "department", "canonical_id": "d-1", "name": "x",
            "target_id": null, "link_first": false, "record": {}}))
        .unwrap();
        assert_eq!(step.entity, Entity::Department);
        // An entity the hub does not know is refused, not read as a person.
        assert!(
            serde_json::from_value::<WireStep>(serde_json::json!({
                "action": "create", "entity": "robot", "canonical_id": "x", "name": "x",
                "target_id": null, "link_first": false, "record": {}}))
            .is_err()
        );
    }
}
