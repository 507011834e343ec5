//! Property tests: for the shipped person/department mappings, canonical → vendor → canonical is
//! the identity on the fields both sides carry.

use huitong_mappings::{Mapping, MemoryResolver, shipped};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const SYSTEMS: [&str; 3] = ["dingtalk", "feishu", "wecom"];

/// External ids per system: departments (index 0 is the vendor root) and persons.
fn dept_ext(system: &str, i: usize) -> String {
    match (system, i) {
        ("feishu", 0) => "0".to_owned(),
        ("feishu", i) => format!("od-{i:032x}"),
        (_, 0) => "1".to_owned(),
        (_, i) => format!("{}", 100 + i),
    }
}

fn resolver() -> MemoryResolver {
    let mut r = MemoryResolver::new();
    for s in SYSTEMS {
        for i in 0..10 {
            r.insert("department", s, &dept_ext(s, i), &format!("D{i}"));
            r.insert("person", s, &format!("{s}-user-{i}"), &format!("P{i}"));
        }
    }
    r
}

fn mapping(system: &str, entity: &str) -> Mapping {
    match shipped::load(system, entity) {
        Some(Ok(m)) => m,
        other => panic!("{system}-{entity}: {other:?}"),
    }
}

fn ids(prefix: &'static str, min: usize) -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence((1..10).collect::<Vec<usize>>(), min..4)
        .prop_shuffle()
        .prop_map(move |v| v.into_iter().map(|i| format!("{prefix}{i}")).collect())
}

fn date() -> impl Strategy<Value = String> {
    (1992i32..2036, 1u32..13, 1u32..29).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
}

prop_compose! {
    fn person()(
        id in 0usize..10,
        name in "[A-Za-z\u{4e00}-\u{4e99}][A-Za-z \u{4e00}-\u{4e99}]{0,15}",
        en_name in proptest::option::of("[A-Z][a-z]{1,8} [A-Z][a-z]{1,8}"),
        email in proptest::option::of("[a-z0-9._]{1,10}@[a-z]{2,8}\\.(com|cn)"),
        mobile in proptest::option::of(prop_oneof!["\\+861[3-9][0-9]{9}", "\\+852[5-9][0-9]{7}"]),
        employee_no in proptest::option::of("[A-Z0-9-]{1,10}"),
        title in proptest::option::of("[a-zA-Z\u{4e00}-\u{4e99} ]{1,12}"),
        depts in proptest::option::of(ids("D", 1)),
        leads in proptest::collection::vec(any::<bool>(), 3),
        manager in proptest::option::of(0usize..10),
        status in prop_oneof![Just("active"), Just("disabled"), Just("resigned")],
        hired in proptest::option::of(date()),
        gender in proptest::option::of(prop_oneof![Just("male"), Just("female"), Just("unknown")]),
    ) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("id".into(), json!(format!("P{id}")));
        p.insert("name".into(), json!(name));
        let mut opt = |k: &str, v: Option<String>| { if let Some(v) = v { p.insert(k.into(), json!(v)); } };
        opt("en_name", en_name);
        opt("email", email);
        opt("mobile", mobile);
        opt("employee_no", employee_no);
        opt("title", title);
        opt("manager", manager.map(|m| format!("P{m}")));
        opt("hired_date", hired);
        opt("gender", gender.map(str::to_owned));
        if let Some(depts) = depts {
            let leader_of: Vec<String> = depts.iter().zip(leads).filter(|(_, l)| *l).map(|(d, _)| d.clone()).collect();
            p.insert("main_department".into(), json!(depts[0]));
            p.insert("department_ids".into(), json!(depts));
            p.insert("leader_of".into(), json!(leader_of));
        }
        p.insert("status".into(), json!(status));
        p
    }
}

prop_compose! {
    fn department()(
        id in 0usize..10,
        parent in proptest::option::of(0usize..10),
        name in "[A-Za-z\u{4e00}-\u{4e99}][A-Za-z0-9 \u{4e00}-\u{4e99}]{0,20}",
        order in proptest::option::of(0u32..=u32::MAX),
        leaders in ids("P", 0),
    ) -> Map<String, Value> {
        let mut d = Map::new();
        d.insert("id".into(), json!(format!("D{id}")));
        d.insert("name".into(), json!(name));
        // The vendor roots (D0) have no parent; other departments may or may not.
        let parent = if id == 0 { None } else { parent.filter(|p| *p != id) };
        d.insert("parent_id".into(), parent.map_or(Value::Null, |p| json!(format!("D{p}"))));
        if let Some(o) = order { d.insert("order".into(), json!(o)); }
        d.insert("leader_ids".into(), json!(leaders));
        d
    }
}

/// Fields each vendor carries in both directions (DingTalk has no status, gender or English
/// name; WeCom no employee number or hire date).
fn carried(system: &str, entity: &str) -> &'static [&'static str] {
    match (system, entity) {
        ("dingtalk", "person") => &[
            "id",
            "name",
            "email",
            "mobile",
            "employee_no",
            "title",
            "department_ids",
            "main_department",
            "manager",
            "leader_of",
            "hired_date",
        ],
        ("feishu", "person") => &[
            "id",
            "name",
            "en_name",
            "email",
            "mobile",
            "employee_no",
            "title",
            "department_ids",
            "main_department",
            "manager",
            "status",
            "hired_date",
            "gender",
        ],
        ("wecom", "person") => &[
            "id",
            "name",
            "en_name",
            "email",
            "mobile",
            "title",
            "department_ids",
            "main_department",
            "manager",
            "leader_of",
            "status",
            "gender",
        ],
        (_, "department") => &["id", "name", "parent_id", "order", "leader_ids"],
        _ => &[],
    }
}

fn round_trip(
    system: &str,
    entity: &str,
    canonical: Map<String, Value>,
) -> Result<(), TestCaseError> {
    let m = mapping(system, entity);
    let r = resolver();
    let canonical = Value::Object(canonical);
    let vendor = m
        .from_canonical(&canonical, &r)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(vendor.unresolved.is_empty(), "{:?}", vendor.unresolved);
    prop_assert!(
        vendor.key.is_some(),
        "vendor key missing: {}",
        vendor.record
    );
    let back = m
        .to_canonical(&vendor.record, &r)
        .map_err(|e| TestCaseError::fail(format!("{e}\nvendor: {}", vendor.record)))?;
    prop_assert!(back.unresolved.is_empty(), "{:?}", back.unresolved);
    prop_assert_eq!(back.key.clone(), vendor.key.clone());
    for f in carried(system, entity) {
        let mut want = canonical.get(*f).cloned();
        if system == "wecom" && *f == "leader_of" && want.is_none() {
            // WeCom always reports is_leader_in_dept, so "unknown" comes back as "none".
            want = Some(json!([]));
        }
        prop_assert_eq!(
            want.as_ref(),
            back.record.get(*f),
            "{}-{}: field {} differs\ncanonical: {}\nvendor: {}\nback: {}",
            system,
            entity,
            f,
            canonical,
            vendor.record,
            back.record
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn dingtalk_person_round_trips(p in person()) { round_trip("dingtalk", "person", p)?; }
    #[test]
    fn feishu_person_round_trips(p in person()) { round_trip("feishu", "person", p)?; }
    #[test]
    fn wecom_person_round_trips(p in person()) { round_trip("wecom", "person", p)?; }
    #[test]
    fn dingtalk_department_round_trips(d in department()) { round_trip("dingtalk", "department", d)?; }
    #[test]
    fn feishu_department_round_trips(d in department()) { round_trip("feishu", "department", d)?; }
    #[test]
    fn wecom_department_round_trips(d in department()) { round_trip("wecom", "department", d)?; }
}
