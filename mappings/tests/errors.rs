//! Errors must explain: load errors name file, line and field and quote jq; record errors name
//! mapping, field, input path and reason; schema violations name field and rule.

use huitong_mappings::{Direction, LoadError, Mapping, MemoryResolver, RecordError};
use serde_json::json;

const GOOD: &str = r#"system: demo
entity: person
key: .uid
tables:
  st:
    1: active
    2: disabled
to_canonical:
  - field: name
    expr: .name
    required: true
  - field: status
    expr: .st | table("st")
    default: active
  - field: mobile
    expr: .mobile
  - field: hired_date
    expr: .joined | epoch_ms_to_date("Asia/Shanghai")
from_canonical:
  - field: name
    expr: .name
  - field: st
    expr: .status | rtable("st") | tonumber
"#;

fn load_err(text: &str) -> (LoadError, String) {
    let e = Mapping::from_str("demo.yaml", text).expect_err("must not load");
    let msg = e.to_string();
    (e, msg)
}

#[test]
fn jq_syntax_error_names_file_line_field_and_quotes_jq() {
    let text = GOOD.replace("expr: .mobile", "expr: .mobile |");
    let (e, msg) = load_err(&text);
    match &e {
        LoadError::Field {
            file,
            line,
            section,
            field,
            message,
        } => {
            assert_eq!(file, "demo.yaml");
            assert_eq!(*line, 16, "{msg}");
            assert_eq!(section, "to_canonical");
            assert_eq!(field, "mobile");
            assert!(
                message.contains("`.mobile |`") && message.contains("jq syntax error"),
                "{msg}"
            );
            assert!(message.contains("expected"), "{msg}");
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(
        msg.starts_with("demo.yaml:16: to_canonical field `mobile`"),
        "{msg}"
    );
}

#[test]
fn undefined_filter_is_reported_by_name() {
    let text = GOOD.replace("expr: .mobile", "expr: .mobile | normalise_phone");
    let (_, msg) = load_err(&text);
    assert!(
        msg.contains("undefined filter `normalise_phone/0`"),
        "{msg}"
    );
    assert!(msg.contains("demo.yaml:16:"), "{msg}");
}

#[test]
fn from_canonical_errors_point_into_their_section() {
    let text = GOOD.replace(
        "expr: .status | rtable(\"st\") | tonumber",
        "expr: .status | rtable(\"nope\")",
    );
    let (e, msg) = load_err(&text);
    assert!(
        matches!(&e, LoadError::Field { line: 23, section, field, .. } if section == "from_canonical" && field == "st"),
        "{msg}"
    );
    assert!(
        msg.contains("no table \"nope\"") && msg.contains("tables: st"),
        "{msg}"
    );
}

#[test]
fn unknown_target_field_lists_the_schema_fields() {
    let text = GOOD.replace("- field: mobile", "- field: phone");
    let (e, msg) = load_err(&text);
    assert!(
        matches!(&e, LoadError::Field { line: 15, field, .. } if field == "phone"),
        "{msg}"
    );
    assert!(
        msg.contains("has no field `phone`") && msg.contains("mobile"),
        "{msg}"
    );
}

#[test]
fn yaml_mistakes_give_line_and_column() {
    let text = GOOD.replace(
        "    expr: .name\n    required: true",
        "    exp: .name\n    required: true",
    );
    let (e, msg) = load_err(&text);
    match e {
        LoadError::Yaml { file, line, .. } => {
            assert_eq!(file, "demo.yaml");
            assert_eq!(line, 10, "{msg}");
            assert!(msg.contains("exp"), "{msg}");
        }
        other => panic!("wrong error {other:?}"),
    }
}

#[test]
fn unknown_entity_and_missing_required_field_are_explained() {
    let (_, msg) = load_err(&GOOD.replace("entity: person", "entity: persons"));
    assert!(
        msg.contains("demo.yaml:2:") && msg.contains("unknown entity \"persons\""),
        "{msg}"
    );
    let without_status = GOOD.replace(
        "  - field: status\n    expr: .st | table(\"st\")\n    default: active\n",
        "",
    );
    let (_, msg) = load_err(&without_status);
    assert!(msg.contains("requires `status`"), "{msg}");
    let (_, msg) = load_err(&GOOD.replace(
        "  - field: mobile\n    expr: .mobile\n",
        "  - field: name\n    expr: .nick\n",
    ));
    assert!(msg.contains("mapped twice"), "{msg}");
}

#[test]
fn missing_file_names_the_file() {
    let e = Mapping::load("/nonexistent/dir/x.yaml").expect_err("no file");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/dir/x.yaml: cannot read mapping"),
        "{e}"
    );
}

fn demo() -> Mapping {
    Mapping::from_str("demo.yaml", GOOD).expect("valid mapping")
}

#[test]
fn failing_expression_names_mapping_field_path_and_reason() {
    let e = demo()
        .to_canonical(
            &json!({"uid": "u1", "name": "Li", "joined": "yesterday"}),
            &MemoryResolver::new(),
        )
        .expect_err("bad epoch");
    match &e {
        RecordError::Field {
            mapping,
            field,
            path,
            reason,
            line,
            ..
        } => {
            assert_eq!(&**mapping, "demo.yaml");
            assert_eq!(field, "hired_date");
            assert_eq!(path, ".joined");
            assert_eq!(*line, 17);
            assert!(
                reason.contains("\"yesterday\" is not an integer epoch"),
                "{reason}"
            );
        }
        other => panic!("wrong error {other:?}"),
    }
    let unknown = demo()
        .to_canonical(
            &json!({"uid": "u1", "name": "Li", "st": 9}),
            &MemoryResolver::new(),
        )
        .expect_err("not in table");
    assert!(
        unknown.to_string().contains("field `status`")
            && unknown.to_string().contains("input path .st"),
        "{unknown}"
    );
}

#[test]
fn required_field_and_key_are_enforced() {
    let e = demo()
        .to_canonical(&json!({"uid": "u1"}), &MemoryResolver::new())
        .expect_err("no name");
    assert!(
        matches!(&e, RecordError::Required { field, path, .. } if field == "name" && path == ".name"),
        "{e}"
    );
    let e = demo()
        .to_canonical(&json!({"name": "Li"}), &MemoryResolver::new())
        .expect_err("no key");
    assert!(
        matches!(&e, RecordError::Required { field, .. } if field == "key"),
        "{e}"
    );
    let e = demo()
        .to_canonical(&json!([1]), &MemoryResolver::new())
        .expect_err("array");
    assert!(
        e.to_string().contains("not a JSON object (got an array)"),
        "{e}"
    );
}

#[test]
fn schema_violations_name_field_and_rule() {
    let e = demo()
        .to_canonical(
            &json!({"uid": "u1", "name": "Li", "mobile": "138-0000"}),
            &MemoryResolver::new(),
        )
        .expect_err("mobile not E.164");
    match &e {
        RecordError::Schema {
            which,
            violations,
            entity,
            ..
        } => {
            assert_eq!(*which, "output");
            assert_eq!(entity, "person");
            assert_eq!(violations.len(), 1, "{violations:?}");
            assert_eq!(violations[0].field, "/mobile");
            assert_eq!(violations[0].rule, "pattern");
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(
        e.to_string()
            .contains(r#"field `/mobile` breaks rule `pattern`: "138-0000" does not match "^\+[1-9][0-9]{6,14}$""#),
        "{e}"
    );

    let e = demo()
        .from_canonical(
            &json!({"name": "Li", "status": "gone", "nick": 1}),
            &MemoryResolver::new(),
        )
        .expect_err("bad canonical input");
    let msg = e.to_string();
    assert!(
        msg.contains("input record breaks the person schema"),
        "{msg}"
    );
    assert!(
        msg.contains("`/status` breaks rule `enum`")
            && msg.contains("`/nick` breaks rule `additionalProperties`"),
        "{msg}"
    );
}

#[test]
fn defaults_tables_and_when_filters() {
    let text = GOOD.replace("key: .uid\n", "key: .uid\nwhen: .kind != \"bot\"\n");
    let m = Mapping::from_str("demo.yaml", &text).expect("valid");
    let r = MemoryResolver::new();
    let out = m
        .to_canonical(&json!({"uid": "u1", "name": "Li"}), &r)
        .expect("maps");
    assert_eq!(out.record, json!({"name": "Li", "status": "active"}));
    assert!(!out.skipped);
    let bot = m
        .to_canonical(&json!({"uid": "b1", "name": "Bot", "kind": "bot"}), &r)
        .expect("maps");
    assert!(bot.skipped);
    assert_eq!(bot.record, serde_json::Value::Null);
    let back = m
        .apply(
            Direction::FromCanonical,
            &json!({"name": "Li", "status": "disabled"}),
            &r,
        )
        .expect("maps back");
    assert_eq!(back.record, json!({"name": "Li", "st": 2}));
    assert_eq!(back.key, None);
}
