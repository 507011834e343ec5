//! A route's department scope over the source's records: the subtree under `scope_root`,
//! without subtrees whose names match `scope_deny`; departments off the tree (a parent chain
//! that loops or ends at a missing department) are reported. Pure functions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::canon::{Canon, Rec};
use super::plan::{Conflict, ConflictKind};
use crate::config::RouteConfig;
use crate::model::Entity;

/// A department's depth below the root (0 = the root); `None` when its chain of parents loops
/// or ends at a department not in `parents`.
pub fn depth_of(id: &str, parents: &HashMap<String, Option<String>>) -> Option<usize> {
    let mut d = 0;
    let mut cur = id;
    let mut seen = HashSet::new();
    while let Some(Some(p)) = parents.get(cur) {
        if !seen.insert(cur) {
            return None; // a cycle
        }
        d += 1;
        cur = p;
    }
    parents.contains_key(cur).then_some(d)
}

/// `*` patterns (any run of characters); anything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The source's departments and people within the route's scope (people keep only their
/// departments in scope; one with none is left out), and the departments off the tree.
pub fn scope(
    route: &RouteConfig,
    departments: Vec<Rec>,
    people: Vec<Rec>,
) -> (Vec<Rec>, Vec<Rec>, Vec<Conflict>) {
    let parents: HashMap<String, Option<String>> = departments
        .iter()
        .map(|d| (d.id().to_owned(), d.parent().map(str::to_owned)))
        .collect();
    let mut conflicts = Vec::new();
    let by_id: HashMap<&str, &Rec> = departments.iter().map(|d| (d.id(), d)).collect();
    let scope_root = route.scope_root.as_ref().and_then(|ext| {
        departments
            .iter()
            .find(|d| &d.external_id == ext)
            .map(|d| d.id().to_owned())
    });
    let mut keep: HashSet<String> = HashSet::new();
    for d in &departments {
        if depth_of(d.id(), &parents).is_none() {
            conflicts.push(Conflict {
                entity: Entity::Department,
                kind: ConflictKind::CycleOrOrphan,
                detail: format!(
                    "department {:?} is not under the root (its parent chain loops or ends at a missing department)",
                    d.name()
                ),
                records: vec![d.external_id.clone()],
            });
            continue;
        }
        // Walk up: denied names exclude the subtree; the scope root must be an ancestor.
        let mut cur = Some(d.id().to_owned());
        let mut denied = false;
        let mut under_scope = scope_root.is_none() || d.parent().is_none();
        while let Some(id) = cur {
            let Some(rec) = by_id.get(id.as_str()) else {
                break;
            };
            if route.scope_deny.iter().any(|p| glob(p, &rec.name())) && rec.parent().is_some() {
                denied = true;
            }
            if scope_root.as_deref() == Some(id.as_str()) {
                under_scope = true;
            }
            cur = rec.parent().map(str::to_owned);
        }
        if !denied && under_scope {
            keep.insert(d.id().to_owned());
        }
    }
    let departments: Vec<Rec> = departments
        .into_iter()
        .filter(|d| keep.contains(d.id()))
        .collect();
    let people = people
        .into_iter()
        .filter_map(|mut p| {
            let mut record = p.canonical.value();
            let listed = record
                .get("department_ids")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ids: Vec<Value> = record
                .get("department_ids")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter(|v| v.as_str().is_some_and(|s| keep.contains(s)))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if ids.is_empty() {
                return None;
            }
            let main_ok = record
                .get("main_department")
                .and_then(Value::as_str)
                .is_some_and(|m| keep.contains(m));
            if main_ok && ids.len() == listed {
                return Some(p); // wholly in scope: unchanged
            }
            if let Some(obj) = record.as_object_mut() {
                if !main_ok {
                    obj.insert("main_department".into(), ids[0].clone());
                }
                obj.insert("department_ids".into(), Value::Array(ids));
            }
            p.canonical = Arc::new(Canon::new(&record));
            Some(p)
        })
        .collect();
    (departments, people, conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn glob_patterns() {
        assert!(glob("外包*", "外包一组"));
        assert!(glob("*test*", "a-test-b"));
        assert!(!glob("外包*", "研发部"));
        assert!(glob("exact", "exact"));
    }

    #[test]
    fn depths_and_cycles() {
        let parents: HashMap<String, Option<String>> = [
            ("r", None),
            ("a", Some("r")),
            ("b", Some("a")),
            ("x", Some("y")),
            ("y", Some("x")),
            ("o", Some("missing")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
        .collect();
        assert_eq!(depth_of("r", &parents), Some(0));
        assert_eq!(depth_of("b", &parents), Some(2));
        assert_eq!(depth_of("x", &parents), None);
        assert_eq!(depth_of("o", &parents), None);
    }

    fn dept(id: &str, name: &str, parent: Option<&str>) -> Rec {
        Rec::new(id, &json!({"id": id, "name": name, "parent_id": parent}))
    }

    #[test]
    fn scope_keeps_the_subtree_drops_denied_names_and_reports_orphans() {
        let route = RouteConfig {
            scope_root: Some("sales".into()),
            scope_deny: vec!["外包*".into()],
            ..super::super::tests::route()
        };
        let departments = vec![
            dept("root", "HQ", None),
            dept("sales", "Sales", Some("root")),
            dept("east", "East", Some("sales")),
            dept("vendor", "外包一组", Some("sales")),
            dept("rd", "R&D", Some("root")),
            dept("lost", "Lost", Some("nowhere")),
        ];
        let people = vec![
            Rec::new(
                "u1",
                &json!({"id": "p1", "department_ids": ["east", "rd"], "main_department": "rd"}),
            ),
            Rec::new(
                "u2",
                &json!({"id": "p2", "department_ids": ["rd"], "main_department": "rd"}),
            ),
            Rec::new(
                "u3",
                &json!({"id": "p3", "department_ids": ["vendor"], "main_department": "vendor"}),
            ),
        ];
        let (d, p, c) = scope(&route, departments, people);
        let ids: Vec<&str> = d.iter().map(Rec::id).collect();
        assert_eq!(ids, ["root", "sales", "east"]);
        assert_eq!(p.len(), 1, "only the person with a department in scope");
        let kept = p[0].canonical.value();
        assert_eq!(kept["department_ids"], json!(["east"]));
        assert_eq!(kept["main_department"], json!("east"));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, ConflictKind::CycleOrOrphan);
        assert_eq!(c[0].records, ["lost"]);
    }
}
