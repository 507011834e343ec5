//! The command logic behind `huitong mapping check|apply|preview`.

use huitong_mappings::cli::{self, ApplyOptions};
use huitong_mappings::{Direction, MemoryResolver, shipped};
use serde_json::json;

fn shipped_path(name: &str) -> String {
    format!("{}/files/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_reports_each_file() {
    let dir = std::env::temp_dir().join(format!("huitong-mappings-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "system: x\nentity: department\nkey: .id\nto_canonical:\n  - field: name\n    expr: .name | (\nfrom_canonical: []\n")
        .expect("write");
    let mut out = Vec::new();
    let ok = cli::check(
        &[
            shipped_path("dingtalk-person.yaml"),
            bad.display().to_string(),
        ],
        &mut out,
    )
    .expect("io");
    let text = String::from_utf8(out).expect("utf8");
    assert!(!ok);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("ok    ") && lines[0].contains("dingtalk person"),
        "{text}"
    );
    assert!(lines[0].contains("(12 compiled, 0 jq)"), "{text}");
    assert!(
        lines[1].starts_with("error ")
            && lines[1].contains("bad.yaml:6: to_canonical field `name`"),
        "{text}"
    );
    let mut out = Vec::new();
    assert!(cli::check(&[shipped_path("wecom-person.yaml")], &mut out).expect("io"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn users(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            json!({"userid": format!("u{i}"), "name": format!("User {i}"), "mobile": format!("138{i:08}"),
                   "dept_id_list": [2], "hired_date": 1_709_222_400_000_i64 + i as i64 * 86_400_000})
            .to_string()
        })
        .collect()
}

fn resolver() -> MemoryResolver {
    let mut r = MemoryResolver::new();
    r.insert("department", "dingtalk", "2", "D2");
    for i in 0..500 {
        r.insert("person", "dingtalk", &format!("u{i}"), &format!("P{i}"));
    }
    r
}

#[test]
fn apply_keeps_order_reports_line_numbers_and_counts() {
    let m = match shipped::load("dingtalk", "person") {
        Some(Ok(m)) => m,
        other => panic!("{other:?}"),
    };
    let mut lines = users(500);
    lines[4] = "{not json".to_owned(); // line 5
    lines[199] = json!({"userid": "u199", "name": "Bad", "mobile": "12"}).to_string(); // line 200
    lines[300] = String::new(); // blank line 301 is ignored
    lines[400] = json!({"userid": "u400", "name": "NoLink", "dept_id_list": [77]}).to_string(); // line 401
    let input = lines.join("\n") + "\n";
    let r = resolver();
    let run = |threads: usize| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let opts = ApplyOptions {
            threads,
            batch: 64,
            warn_unresolved: true,
        };
        let rep = cli::apply(
            &m,
            Direction::ToCanonical,
            &r,
            input.as_bytes(),
            &mut out,
            &mut err,
            &opts,
        )
        .expect("io");
        (
            rep,
            String::from_utf8(out).expect("utf8"),
            String::from_utf8(err).expect("utf8"),
        )
    };
    let (rep1, out1, err1) = run(1);
    let (rep2, out2, err2) = run(2);
    assert_eq!(rep1, rep2);
    assert_eq!(out1, out2, "parallel output must keep input order");
    assert_eq!(err1, err2);
    assert_eq!(rep1.read, 499);
    assert_eq!(rep1.failed, 2);
    assert_eq!(rep1.written, 497);
    assert_eq!(rep1.with_unresolved, 1);
    let errs: Vec<&str> = err1.lines().collect();
    assert_eq!(errs.len(), 3, "{err1}");
    assert!(
        errs[0].starts_with("line 5: error: not a JSON record"),
        "{err1}"
    );
    assert!(
        errs[1].starts_with("line 200: error: mapping dingtalk-person.yaml: field `mobile`"),
        "{err1}"
    );
    assert!(errs[1].contains("input path .mobile"), "{err1}");
    assert!(
        errs[2].starts_with("line 401: warning: unresolved ids")
            && errs[2].contains("department:77"),
        "{err1}"
    );
    let ids: Vec<String> = out1
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["id"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let expected: Vec<String> = (0..500)
        .filter(|i| ![4, 199, 300].contains(i))
        .map(|i| format!("P{i}"))
        .collect();
    assert_eq!(ids, expected);
}

#[test]
fn preview_shows_input_fields_output_and_validation() {
    let m = match shipped::load("dingtalk", "person") {
        Some(Ok(m)) => m,
        other => panic!("{other:?}"),
    };
    let sample = json!([
        {"userid": "u1", "name": "Li", "mobile": "13800000000", "dept_id_list": [2, 9]},
        {"userid": "u2", "name": "Bad", "mobile": "999"}
    ]);
    let mut out = Vec::new();
    let ok = cli::preview(&m, Direction::ToCanonical, &sample, &resolver(), &mut out).expect("io");
    let text = String::from_utf8(out).expect("utf8");
    assert!(!ok, "second sample fails");
    assert!(text.contains("=== sample 1 of 2"), "{text}");
    assert!(
        text.contains("--- input") && text.contains("--- fields") && text.contains("--- output"),
        "{text}"
    );
    let mobile_line = text
        .lines()
        .find(|l| l.starts_with("mobile"))
        .expect("mobile line");
    assert!(
        mobile_line.contains("\"+8613800000000\"")
            && mobile_line.contains(".mobile | phone(\"CN\")"),
        "{mobile_line}"
    );
    assert!(text.contains("unresolved department id \"9\""), "{text}");
    assert!(text.contains("ok: valid person record; key u1"), "{text}");
    assert!(
        text.contains("FAILED: mapping dingtalk-person.yaml: field `mobile`"),
        "{text}"
    );
}

#[test]
fn apply_from_canonical_validates_input_records() {
    let m = match shipped::load("dingtalk", "person") {
        Some(Ok(m)) => m,
        other => panic!("{other:?}"),
    };
    let input = [
        json!({"id": "P1", "name": "Li", "status": "active", "mobile": "+8613800000000",
               "department_ids": ["D2"], "hired_date": "2024-03-01"})
        .to_string(),
        json!({"id": "P2", "name": "Wang", "status": "retired"}).to_string(),
        json!({"name": "New hire", "status": "active"}).to_string(),
    ]
    .join("\n");
    let r = resolver();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let opts = ApplyOptions {
        threads: 2,
        batch: 1,
        warn_unresolved: true,
    };
    let rep = cli::apply(
        &m,
        Direction::FromCanonical,
        &r,
        input.as_bytes(),
        &mut out,
        &mut err,
        &opts,
    )
    .expect("io");
    let out = String::from_utf8(out).expect("utf8");
    let err = String::from_utf8(err).expect("utf8");
    assert_eq!((rep.read, rep.written, rep.failed), (3, 2, 1), "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(
        rows[0],
        json!({"userid": "u1", "mobile": "13800000000", "name": "Li", "dept_id_list": [2],
               "hired_date": 1_709_222_400_000_i64})
    );
    assert_eq!(rows[1], json!({"name": "New hire"}));
    assert!(
        err.contains("line 2: error: mapping dingtalk-person.yaml: input record breaks the person schema: field `/status` breaks rule `enum`"),
        "{err}"
    );
}
