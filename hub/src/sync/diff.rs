//! What a plan compares, and how: the fields two mappings both read from their vendors
//! ([`shared_fields`]), a normalised field-by-field [`diff`], and the [`echo_hash`] of what
//! huitong wrote (compared on the fields the target's vendor carries). Pure functions.

use std::collections::{BTreeMap, HashSet};

use huitong_mappings::{Direction, Mapping};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::store::content_hash;

/// One field's change: what the target holds, what the source says.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    pub old: Value,
    pub new: Value,
}

/// Whether a mapping rule reads the vendor's record (a path into it), decided from its parsed
/// expression: a constant such as `"active"` or `"Dept. A"` does not, so the field it fills is
/// not something the vendor carries.
fn reads_vendor(rule: &huitong_mappings::mapping::Rule) -> bool {
    rule.expr().reads_input()
}

/// The canonical fields a mapping really reads from its vendor (not from a constant), `id` aside:
/// what the vendor holds of a record we wrote.
pub fn carried_fields(m: &Mapping) -> Vec<String> {
    let mut out: Vec<String> = m
        .rules(Direction::ToCanonical)
        .iter()
        .filter(|r| reads_vendor(r))
        .map(|r| r.target().to_owned())
        .filter(|f| f != "id")
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Fields both mappings read from their vendor into the canonical model (what a diff
/// compares). A target field mapped from a constant — DingTalk's `status: "active"`, as
/// DingTalk has no disabled state — is not carried.
pub fn shared_fields(source: &Mapping, target: &Mapping) -> Vec<String> {
    let fa: HashSet<&str> = source
        .rules(Direction::ToCanonical)
        .iter()
        .map(|r| r.target())
        .collect();
    carried_fields(target)
        .into_iter()
        .filter(|f| fa.contains(f.as_str()))
        .collect()
}

/// A field's value as the diff compares it: empty strings and lists are absent, lists are
/// compared without their order.
pub fn normalise(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Array(items)) if items.is_empty() => Value::Null,
        Some(Value::Array(items)) => {
            let mut sorted = items.clone();
            sorted.sort_by_key(|x| x.to_string());
            Value::Array(sorted)
        }
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(other) => other.clone(),
    }
}

/// The changes that would make `target` hold `source`'s values of `fields`.
pub fn diff(fields: &[String], source: &Value, target: &Value) -> BTreeMap<String, Change> {
    let mut out = BTreeMap::new();
    for f in fields {
        let new = normalise(source.get(f));
        let old = normalise(target.get(f));
        if new != old {
            out.insert(f.clone(), Change { old, new });
        }
    }
    out
}

/// Takes references to `unreachable` records out of the new side of `changes` (they cannot be
/// written), and drops a change that is then no change at all.
pub fn drop_unreachable(changes: &mut BTreeMap<String, Change>, unreachable: &HashSet<&str>) {
    if unreachable.is_empty() {
        return;
    }
    let reachable = |v: &Value| !v.as_str().is_some_and(|id| unreachable.contains(id));
    changes.retain(|_, c| {
        let new = match &c.new {
            Value::String(_) if !reachable(&c.new) => Value::Null,
            Value::Array(items) => {
                let kept: Vec<Value> = items.iter().filter(|v| reachable(v)).cloned().collect();
                if kept.is_empty() {
                    Value::Null
                } else {
                    Value::Array(kept)
                }
            }
            other => other.clone(),
        };
        c.new = new;
        c.new != c.old
    });
}

/// The hash recorded when huitong writes `record` to a system whose mapping is `m`, and computed
/// again from what that system reports later: equal means the system holds exactly what huitong
/// wrote (an echo of our own write), compared on the fields it carries, normalised like a diff.
pub fn echo_hash(m: &Mapping, record: &Value) -> String {
    let projected: Map<String, Value> = carried_fields(m)
        .into_iter()
        .map(|f| {
            let v = normalise(record.get(&f));
            (f, v)
        })
        .collect();
    content_hash(&Value::Object(projected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A department mapping whose `to_canonical` rules are `(field, expression)`.
    fn mapping(rules: &[(&str, &str)]) -> Mapping {
        let mut text = String::from("system: acme\nentity: department\nkey: .id\nto_canonical:\n");
        for (field, expr) in rules {
            text.push_str(&format!(
                "  - field: {field}\n    expr: {}\n",
                serde_json::to_string(expr).unwrap_or_default()
            ));
        }
        text.push_str("from_canonical:\n  - field: name\n    expr: .name\n");
        Mapping::from_str("acme-department.yaml", &text).expect("a valid mapping")
    }

    #[test]
    fn diff_ignores_order_and_empty_values() {
        let f = vec![
            "department_ids".to_owned(),
            "title".to_owned(),
            "email".to_owned(),
        ];
        let a = json!({"department_ids": ["d1", "d2"], "title": "", "email": "a@x"});
        let b = json!({"department_ids": ["d2", "d1"], "email": "b@x"});
        let d = diff(&f, &a, &b);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d["email"],
            Change {
                old: json!("b@x"),
                new: json!("a@x")
            }
        );
    }

    #[test]
    fn a_constant_with_a_dot_is_not_read_from_the_vendor() {
        // An admin's constant: "Dept. A" has a dot but reads nothing from the vendor.
        let target = mapping(&[
            ("id", ".id"),
            ("name", "\"Dept. A\""),
            ("order", ".order // 0"),
        ]);
        assert_eq!(carried_fields(&target), ["order"]);
        // So a target that always reports the constant is not compared on it (no endless
        // diff), and what huitong writes hashes the same as what the vendor reports back.
        let source = mapping(&[("id", ".id"), ("name", ".name"), ("order", ".order")]);
        assert_eq!(shared_fields(&source, &target), ["order"]);
        let written = json!({"id": "d-1", "name": "Sales", "order": 3});
        let reported = json!({"id": "d-1", "name": "Dept. A", "order": 3});
        assert_eq!(echo_hash(&target, &written), echo_hash(&target, &reported));
        assert_ne!(
            echo_hash(&target, &written),
            echo_hash(&target, &json!({"order": 4}))
        );
    }

    #[test]
    fn unreachable_references_are_not_changes() {
        let mut changes = BTreeMap::from([
            (
                "manager".to_owned(),
                Change {
                    old: Value::Null,
                    new: json!("p-gone"),
                },
            ),
            (
                "leader_ids".to_owned(),
                Change {
                    old: json!(["p-1"]),
                    new: json!(["p-1", "p-gone"]),
                },
            ),
            (
                "title".to_owned(),
                Change {
                    old: json!("a"),
                    new: json!("b"),
                },
            ),
        ]);
        drop_unreachable(&mut changes, &HashSet::from(["p-gone"]));
        assert_eq!(changes.keys().collect::<Vec<_>>(), ["title"]);
    }
}
