//! A plan as the table `huitong sync plan` prints.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::plan::Plan;
use crate::model::Action;

/// The plan as a human table.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "route {}: {} -> {}",
        plan.route,
        plan.source,
        plan.targets
            .iter()
            .map(|t| t.target.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for t in &plan.targets {
        let mut counts: BTreeMap<Action, usize> = BTreeMap::new();
        for s in &t.steps {
            *counts.entry(s.action).or_default() += 1;
        }
        let summary: Vec<String> = counts.iter().map(|(a, n)| format!("{n} {a}")).collect();
        let _ = writeln!(
            out,
            "\n== {}: {} ({} conflicts)",
            t.target,
            if summary.is_empty() {
                "nothing to do".to_owned()
            } else {
                summary.join(", ")
            },
            t.conflicts.len()
        );
        for s in &t.steps {
            // Padded by display width: Chinese names take two columns a character.
            let line = format!(
                "  {:<7} {:<10} {} {}",
                s.action.as_str(),
                s.entity.as_str(),
                crate::text::pad(&s.name, 24),
                s.target_id.as_deref().unwrap_or("")
            );
            let _ = writeln!(out, "{}", line.trim_end());
            for (field, c) in &s.changes {
                let _ = writeln!(out, "          {field}: {} -> {}", c.old, c.new);
            }
        }
        for c in &t.conflicts {
            let _ = writeln!(
                out,
                "  CONFLICT {} {}: {} [{}]",
                c.entity,
                c.kind,
                c.detail,
                c.records.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entity;
    use crate::sync::Canon;
    use crate::sync::plan::{PlanKind, RunKind, Step, TargetPlan};
    use std::sync::Arc;

    #[test]
    fn plan_table_pads_chinese_names_by_display_width() {
        let step = |name: &str, id: &str| Step {
            action: Action::Update,
            entity: Entity::Person,
            canonical_id: format!("p-{id}"),
            name: name.to_owned(),
            target_id: Some(id.to_owned()),
            source_id: None,
            depth: 0,
            link_first: false,
            changes: BTreeMap::new(),
            record: Arc::new(Canon::new(&serde_json::json!({}))),
            expected: None,
        };
        let plan = Plan {
            route: "org".into(),
            source: "hq".into(),
            kind: PlanKind::Reconcile,
            run_kind: RunKind::Reconcile,
            records_read: 0,
            targets: vec![TargetPlan {
                target: "sub".into(),
                steps: vec![
                    step("Lin Xin", "u1"),
                    step("林新", "u2"),
                    step("欧阳娜娜 Nana", "u3"),
                ],
                conflicts: vec![],
                people_in_target: 3,
                removals: 0,
                records_read: 0,
            }],
            source_records: vec![],
        };
        let table = render_plan(&plan);
        let columns: Vec<usize> = table
            .lines()
            .filter(|l| l.starts_with("  update"))
            .map(|l| crate::text::width(&l[..l.rfind(' ').unwrap_or(0)]))
            .collect();
        assert_eq!(columns.len(), 3, "{table}");
        assert!(
            columns.iter().all(|c| *c == columns[0]),
            "{columns:?}\n{table}"
        );
    }
}
