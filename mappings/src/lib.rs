//! huitong mappings: the canonical model and the mapping engine.
//!
//! A mapping file (YAML) ties one vendor system to one canonical entity in both directions.
//! Field expressions use jq syntax; common shapes are compiled to direct Rust evaluation and
//! the rest runs in jaq. See `mappings/README.md` for the file format and the built-ins.
//!
//! ```
//! use huitong_mappings::{Mapping, MemoryResolver};
//! let m = Mapping::from_str("demo.yaml", r#"
//! system: demo
//! entity: department
//! key: .id | tostring
//! to_canonical:
//!   - field: name
//!     expr: .title
//!     required: true
//! from_canonical:
//!   - field: title
//!     expr: .name
//! "#).expect("valid mapping");
//! let out = m.to_canonical(&serde_json::json!({"id": 7, "title": "R&D"}), &MemoryResolver::new())
//!     .expect("maps");
//! assert_eq!(out.record, serde_json::json!({"name": "R&D"}));
//! assert_eq!(out.key.as_deref(), Some("7"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod builtins;
pub mod cli;
mod eval;
pub mod expr;
mod jaqrt;
pub mod mapping;
pub mod resolver;
pub mod schema;
pub mod shipped;
pub mod template;

pub use cli::{ApplyOptions, ApplyReport};
pub use eval::{
    Limits, MAX_ARRAY_LEN, MAX_EXPR_BYTES, MAX_EXPR_DEPTH, MAX_EXPR_NESTING, MAX_JSON_DEPTH,
    MAX_QUOTE_CHARS, MAX_STACK_BYTES, MAX_STEPS, MAX_STRING_BYTES, MAX_TIME, MAX_YAML_DEPTH,
};
pub use expr::{Direction, Expr, Unresolved};
pub use mapping::{FieldTrace, LoadError, LoadOptions, Mapped, Mapping, RecordError};
pub use resolver::{MemoryResolver, NoLinks, XrefResolver};
pub use schema::Violation;
pub use template::{Template, TemplateError};

// The hub shares loaded mappings across tasks and threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Mapping>();
    send_sync::<MemoryResolver>();
};
