//! Golden tests: the shipped mappings on vendor responses (tests/fixtures), both directions.
//! Each snapshot shows, per vendor record: the key, the canonical record (or the error), the
//! unresolved ids, and the vendor record produced back from the canonical one.

use huitong_mappings::{Direction, LoadOptions, Mapping, MemoryResolver, shipped};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn mapping(system: &str, entity: &str) -> Mapping {
    match shipped::load(system, entity) {
        Some(Ok(m)) => m,
        Some(Err(e)) => panic!("{e}"),
        None => panic!("no shipped mapping {system}-{entity}"),
    }
}

/// Id links of the fixture org; a few ids are deliberately left unlinked.
fn links() -> MemoryResolver {
    let mut r = MemoryResolver::new();
    for (sys, ext, can) in [
        ("dingtalk", "1", "D-ROOT"),
        ("dingtalk", "2", "D-RD"),
        ("dingtalk", "3", "D-SALES"),
        ("feishu", "0", "D-ROOT"),
        ("feishu", "od-4e6ac4d14bcd5071a37a39de902c7141", "D-RD"),
        ("feishu", "od-8756fd7d8d8d5fa89bdbed38a3cd0d59", "D-FE"),
        ("wecom", "1", "D-GZ"),
        ("wecom", "2", "D-MAIL"),
        ("wecom", "3", "D-GM"),
    ] {
        r.insert("department", sys, ext, can);
    }
    for (sys, ext, can) in [
        ("dingtalk", "manager4220", "P-WANG"),
        ("dingtalk", "u2023002", "P-LILEI"),
        ("dingtalk", "boss001", "P-BOSS"),
        ("feishu", "ou_7dab8a3d3cdcc9da365777c7ad535d62", "P-ZHANG3"),
        ("feishu", "ou_7dab8a3d3cdcc9da365777c7ad53uew2", "P-LI4"),
        ("wecom", "zhangsan", "P-ZS"),
        ("wecom", "lisi", "P-LS"),
        ("wecom", "wangwu", "P-WW"),
    ] {
        r.insert("person", sys, ext, can);
    }
    r
}

fn run(m: &Mapping, records: &[Value]) -> String {
    let r = links();
    let mut out = Vec::new();
    for rec in records {
        let entry = match m.to_canonical(rec, &r) {
            Ok(to) => {
                let back = match m.from_canonical(&to.record, &r) {
                    Ok(b) => json!({"key": b.key, "record": b.record, "unresolved": b.unresolved}),
                    Err(e) => json!({"error": e.to_string()}),
                };
                json!({
                    "key": to.key,
                    "canonical": to.record,
                    "unresolved": to.unresolved,
                    "back_to_vendor": back,
                })
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        out.push(entry);
    }
    serde_json::to_string_pretty(&out).unwrap_or_default()
}

fn items(v: &Value, pointer: &str) -> Vec<Value> {
    match v.pointer(pointer) {
        Some(Value::Array(a)) => a.clone(),
        other => panic!("{pointer}: {other:?}"),
    }
}

fn each(v: &Value, pointer: &str) -> Vec<Value> {
    match v {
        Value::Array(responses) => responses
            .iter()
            .map(|r| {
                r.pointer(pointer)
                    .cloned()
                    .unwrap_or_else(|| panic!("{pointer}"))
            })
            .collect(),
        other => panic!("expected an array of responses, got {other}"),
    }
}

#[test]
fn dingtalk_person() {
    let m = mapping("dingtalk", "person");
    let users = items(&fixture("dingtalk-user-list.json"), "/result/list");
    insta::assert_snapshot!("dingtalk-person", run(&m, &users));
}

#[test]
fn dingtalk_department() {
    let m = mapping("dingtalk", "department");
    let depts = each(&fixture("dingtalk-department-get.json"), "/result");
    insta::assert_snapshot!("dingtalk-department", run(&m, &depts));
}

#[test]
fn feishu_person() {
    let m = mapping("feishu", "person");
    let users = items(
        &fixture("feishu-users-find-by-department.json"),
        "/data/items",
    );
    insta::assert_snapshot!("feishu-person", run(&m, &users));
}

#[test]
fn feishu_department() {
    let m = mapping("feishu", "department");
    let depts = each(&fixture("feishu-departments.json"), "/data/department");
    insta::assert_snapshot!("feishu-department", run(&m, &depts));
}

#[test]
fn wecom_person() {
    let m = mapping("wecom", "person");
    let users = items(&fixture("wecom-user-list.json"), "/userlist");
    insta::assert_snapshot!("wecom-person", run(&m, &users));
}

#[test]
fn wecom_department() {
    let m = mapping("wecom", "department");
    let depts = items(&fixture("wecom-department-list.json"), "/department");
    insta::assert_snapshot!("wecom-department", run(&m, &depts));
}

/// The benchmarked mapping must not need the jq interpreter at all.
#[test]
fn dingtalk_person_is_fully_compiled() {
    let m = mapping("dingtalk", "person");
    let slow: Vec<String> = m
        .expressions()
        .into_iter()
        .filter(|(_, e)| !e.is_fast())
        .map(|(label, e)| format!("{label}: {}", e.source()))
        .collect();
    assert!(slow.is_empty(), "run by jaq: {slow:?}");
}

/// Facts the snapshots show, asserted directly so a careless snapshot update cannot hide them.
#[test]
fn key_facts_of_the_shipped_mappings() {
    let r = links();
    let users = items(&fixture("dingtalk-user-list.json"), "/result/list");
    let dt = mapping("dingtalk", "person");
    let first = dt.to_canonical(&users[0], &r).expect("maps");
    assert_eq!(first.record["mobile"], json!("+8613800000001"));
    assert_eq!(
        first.record["email"],
        json!("xiaoming.wang@corp.example.com")
    );
    assert_eq!(first.record["department_ids"], json!(["D-RD", "D-SALES"]));
    assert_eq!(first.record["leader_of"], json!(["D-RD"]));
    assert_eq!(first.record["hired_date"], json!("2020-08-16"));
    let hk = dt.to_canonical(&users[1], &r).expect("maps");
    assert_eq!(hk.record["mobile"], json!("+85291234567"));
    let unlinked = dt.to_canonical(&users[2], &r).expect("maps");
    assert_eq!(unlinked.record["id"], Value::Null);
    assert_eq!(unlinked.key.as_deref(), Some("u2023003"));
    let ids: Vec<&str> = unlinked.unresolved.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["u2023003", "4", "4"]);

    let fs = mapping("feishu", "person");
    let fusers = items(
        &fixture("feishu-users-find-by-department.json"),
        "/data/items",
    );
    let z = fs.to_canonical(&fusers[0], &r).expect("maps");
    assert_eq!(z.record["main_department"], json!("D-FE"));
    assert_eq!(z.record["gender"], json!("male"));
    assert_eq!(
        fs.to_canonical(&fusers[1], &r).expect("maps").record["status"],
        json!("disabled")
    );
    assert_eq!(
        fs.to_canonical(&fusers[2], &r).expect("maps").record["status"],
        json!("resigned")
    );

    let wc = mapping("wecom", "person");
    let wusers = items(&fixture("wecom-user-list.json"), "/userlist");
    let statuses: Vec<Value> = wusers
        .iter()
        .map(|u| wc.to_canonical(u, &r).expect("maps").record["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [
            json!("active"),
            json!("disabled"),
            json!("resigned"),
            json!("active")
        ]
    );
    let zs = wc.to_canonical(&wusers[0], &r).expect("maps");
    assert_eq!(zs.record["leader_of"], json!(["D-GZ"]));
    let back = wc.from_canonical(&zs.record, &r).expect("maps back");
    assert_eq!(back.record["is_leader_in_dept"], json!([1, 0]));
    assert_eq!(back.record["mobile"], json!("13800000000"));
    assert_eq!(back.key.as_deref(), Some("zhangsan"));
}

/// The compiled evaluator and jaq's interpreter give the same results on every fixture record,
/// in both directions, for every shipped mapping.
#[test]
fn compiled_and_jaq_only_mappings_agree_on_the_fixtures() {
    let r = links();
    let cases = [
        (
            "dingtalk-person.yaml",
            items(&fixture("dingtalk-user-list.json"), "/result/list"),
        ),
        (
            "dingtalk-department.yaml",
            each(&fixture("dingtalk-department-get.json"), "/result"),
        ),
        (
            "feishu-person.yaml",
            items(
                &fixture("feishu-users-find-by-department.json"),
                "/data/items",
            ),
        ),
        (
            "feishu-department.yaml",
            each(&fixture("feishu-departments.json"), "/data/department"),
        ),
        (
            "wecom-person.yaml",
            items(&fixture("wecom-user-list.json"), "/userlist"),
        ),
        (
            "wecom-department.yaml",
            items(&fixture("wecom-department-list.json"), "/department"),
        ),
    ];
    let jaq_only = LoadOptions {
        jaq_only: true,
        ..LoadOptions::default()
    };
    for (name, records) in cases {
        let text = shipped::FILES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("{name}"));
        let fast = Mapping::from_str(name, text).unwrap_or_else(|e| panic!("{e}"));
        let slow = Mapping::from_str_with(name, text, &jaq_only).unwrap_or_else(|e| panic!("{e}"));
        assert!(slow.expressions().iter().all(|(_, e)| !e.is_fast()));
        for rec in &records {
            let a = fast.apply(Direction::ToCanonical, rec, &r);
            let b = slow.apply(Direction::ToCanonical, rec, &r);
            assert_eq!(a, b, "{name} to-canonical on {rec}");
            if let Ok(m) = a {
                let a = fast.apply(Direction::FromCanonical, &m.record, &r);
                let b = slow.apply(Direction::FromCanonical, &m.record, &r);
                assert_eq!(a, b, "{name} from-canonical on {}", m.record);
            }
        }
    }
}
