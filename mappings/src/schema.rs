//! The canonical model: one JSON Schema per entity, shipped in `mappings/schemas/` and
//! embedded in the binary.

use std::fmt;
use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

/// Entities of the canonical model and their schema text.
const SCHEMAS: &[(&str, &str)] = &[
    ("person", include_str!("../schemas/person.json")),
    ("department", include_str!("../schemas/department.json")),
    ("message", include_str!("../schemas/message.json")),
    ("task", include_str!("../schemas/task.json")),
    ("ticket", include_str!("../schemas/ticket.json")),
    ("order", include_str!("../schemas/order.json")),
    ("party", include_str!("../schemas/party.json")),
    ("product", include_str!("../schemas/product.json")),
];

/// Names of the canonical entities.
pub fn entities() -> impl Iterator<Item = &'static str> {
    SCHEMAS.iter().map(|(name, _)| *name)
}

/// The JSON Schema text of an entity.
pub fn schema_text(entity: &str) -> Option<&'static str> {
    SCHEMAS.iter().find(|(n, _)| *n == entity).map(|(_, t)| *t)
}

/// A compiled canonical schema.
pub struct Schema {
    entity: &'static str,
    properties: Vec<String>,
    required: Vec<String>,
    validator: jsonschema::Validator,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("entity", &self.entity)
            .finish()
    }
}

/// One schema rule a record breaks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// The field (JSON pointer into the record, e.g. `/mobile`, `/department_ids/0`).
    pub field: String,
    /// The JSON Schema keyword that failed (`pattern`, `enum`, `required`, …).
    pub rule: String,
    /// What the validator said.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field `{}` breaks rule `{}`: {}",
            self.field, self.rule, self.message
        )
    }
}

/// A schema file that does not compile (a bug in the shipped files; tests catch it).
#[derive(Debug, thiserror::Error)]
#[error("canonical schema {entity}: {message}")]
pub struct SchemaError {
    entity: String,
    message: String,
}

fn build(entity: &'static str, text: &str) -> Result<Schema, SchemaError> {
    let err = |message: String| SchemaError {
        entity: entity.to_owned(),
        message,
    };
    let doc: Value = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    let validator = jsonschema::validator_for(&doc).map_err(|e| err(e.to_string()))?;
    let names = |key: &str| -> Vec<String> {
        match doc.get(key) {
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    Ok(Schema {
        entity,
        properties: names("properties"),
        required: names("required"),
        validator,
    })
}

type Compiled = Vec<(&'static str, Result<Schema, SchemaError>)>;

fn compiled() -> &'static Compiled {
    static ALL: OnceLock<Compiled> = OnceLock::new();
    ALL.get_or_init(|| SCHEMAS.iter().map(|(n, t)| (*n, build(n, t))).collect())
}

/// The compiled schema of `entity`: `None` if there is no such entity.
pub fn get(entity: &str) -> Option<Result<&'static Schema, &'static SchemaError>> {
    compiled()
        .iter()
        .find(|(n, _)| *n == entity)
        .map(|(_, s)| s.as_ref())
}

impl Schema {
    /// Entity name.
    pub fn entity(&self) -> &'static str {
        self.entity
    }

    /// Top-level field names.
    pub fn properties(&self) -> &[String] {
        &self.properties
    }

    /// Fields every record must have.
    pub fn required(&self) -> &[String] {
        &self.required
    }

    /// Checks a record; on failure lists every broken rule.
    pub fn validate(&self, record: &Value) -> Result<(), Vec<Violation>> {
        if self.validator.is_valid(record) {
            return Ok(());
        }
        let mut out = Vec::new();
        for e in self.validator.iter_errors(record) {
            let kind = e.kind();
            let rule = kind.keyword().to_owned();
            let at = e.instance_path().as_str().to_owned();
            let fields: Vec<String> = match kind {
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    unexpected.iter().map(|u| format!("{at}/{u}")).collect()
                }
                ValidationErrorKind::Required { property } => {
                    vec![format!("{at}/{}", property.as_str().unwrap_or_default())]
                }
                _ => vec![if at.is_empty() {
                    "/".to_owned()
                } else {
                    at.clone()
                }],
            };
            for field in fields {
                out.push(Violation {
                    field,
                    rule: rule.clone(),
                    message: crate::eval::clip(e.to_string()),
                });
            }
        }
        if out.is_empty() {
            out.push(Violation {
                field: "/".to_owned(),
                rule: "schema".to_owned(),
                message: "record is not valid".to_owned(),
            });
        }
        Err(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn person() -> &'static Schema {
        match get("person") {
            Some(Ok(s)) => s,
            other => panic!("person schema: {other:?}"),
        }
    }

    #[test]
    fn every_shipped_schema_compiles() {
        for e in entities() {
            assert!(matches!(get(e), Some(Ok(_))), "{e}");
        }
        assert!(get("spaceship").is_none());
    }

    #[test]
    fn valid_person_passes() {
        let p = json!({"id": "P1", "name": "Li", "status": "active", "mobile": "+8613800000000",
                       "hired_date": "2024-03-01", "department_ids": ["D1"], "gender": "unknown"});
        assert_eq!(person().validate(&p), Ok(()));
    }

    #[test]
    fn violations_name_field_and_rule() {
        let p = json!({"name": "Li", "status": "gone", "mobile": "138", "nickname": "x"});
        let v = person().validate(&p).expect_err("invalid");
        let has = |field: &str, rule: &str| v.iter().any(|x| x.field == field && x.rule == rule);
        assert!(has("/status", "enum"), "{v:?}");
        assert!(has("/mobile", "pattern"), "{v:?}");
        assert!(has("/nickname", "additionalProperties"), "{v:?}");
        let missing = person()
            .validate(&json!({"status": "active"}))
            .expect_err("no name");
        assert!(
            missing
                .iter()
                .any(|x| x.field == "/name" && x.rule == "required"),
            "{missing:?}"
        );
    }
}
