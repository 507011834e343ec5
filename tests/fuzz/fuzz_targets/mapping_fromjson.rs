//! `fromjson` inside a mapping, fed arbitrary strings: a record whose field `s` holds the
//! input (lossily UTF-8) goes through mappings that apply `fromjson` to it, compiled to direct
//! evaluation and jaq-only (the two implementations of the built-in). The input bytes are also
//! read as a whole vendor record by `Mapping::parse_input`, whose projected parse (only the keys
//! the mapping reads) must accept what serde_json accepts and map to the same result.
//! Never panics.
#![no_main]

use std::sync::OnceLock;

use huitong_mappings::{Direction, LoadOptions, Mapping, MemoryResolver};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

/// fromjson as a whole value, walked, and read as an object.
const MAPPING: &str = r#"
system: fuzz
entity: department
key: .id
to_canonical:
  - field: name
    expr: .s | fromjson | type
    required: true
  - field: parent_id
    expr: .s | fromjson | (.parent? // empty) | strings | select(length <= 128)
  - field: order
    expr: '[.s | fromjson | .. | numbers] | length'
  - field: leader_ids
    expr: '[.s | fromjson | .. | strings | select(length > 0 and length <= 128)] | unique'
from_canonical:
  - field: title
    expr: .name
"#;

fn mappings() -> &'static [Mapping; 2] {
    static M: OnceLock<[Mapping; 2]> = OnceLock::new();
    M.get_or_init(|| {
        [false, true].map(|jaq_only| {
            let options = LoadOptions {
                jaq_only,
                ..LoadOptions::default()
            };
            Mapping::from_str_with("fromjson.yaml", MAPPING, &options).expect("the mapping loads")
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let resolver = MemoryResolver::new();
    let s = String::from_utf8_lossy(data);
    let record = json!({ "id": "1", "s": s });
    let [native, jaq] = mappings();
    let a = native.to_canonical(&record, &resolver);
    let b = jaq.to_canonical(&record, &resolver);
    // Both evaluators agree (the rules avoid `tostring`, whose escapes differ: a finding of
    // this target, docs/security.md).
    assert_eq!(
        a.as_ref().ok().map(|m| &m.record),
        b.as_ref().ok().map(|m| &m.record),
        "native {a:?} vs jaq {b:?}"
    );

    // The record parser: projected (native: reads only `id` and `s`) and full.
    let full = serde_json::from_slice::<serde_json::Value>(data);
    let projected = native.parse_input(Direction::ToCanonical, data);
    assert_eq!(
        full.is_ok(),
        projected.is_ok(),
        "full {full:?} vs projected {projected:?}"
    );
    if let (Ok(full), Ok(projected)) = (full, projected) {
        let a = native.to_canonical(&full, &resolver).map(|m| m.record);
        let b = native.to_canonical(&projected, &resolver).map(|m| m.record);
        assert_eq!(a.ok(), b.ok(), "the projection changed the result");
    }
});
