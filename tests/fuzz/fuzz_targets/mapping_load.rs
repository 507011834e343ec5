//! The mapping loader (`Mapping::from_str`): an admin's YAML file, its tables and jq
//! expressions, compiled both ways (direct evaluation and jaq-only). A file that loads is also
//! applied once in each direction to a small record, as the hub would (the evaluation limits
//! bound it). Non-UTF-8 input is skipped (files are read as UTF-8 text). Never panics.
#![no_main]

use std::sync::OnceLock;

use huitong_mappings::{LoadOptions, Mapping, MemoryResolver};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn records() -> &'static (Value, Value, MemoryResolver) {
    static R: OnceLock<(Value, Value, MemoryResolver)> = OnceLock::new();
    R.get_or_init(|| {
        let vendor = json!({
            "id": 7, "userid": "u1", "name": "张三", "title": "R&D", "mobile": "13800000000",
            "email": "a@example.com", "status": 1, "department": [1, 2], "parentid": 1,
            "leader": ["u1"], "order": 3, "create_time": 1700000000
        });
        let canonical = json!({
            "id": "c1", "name": "张三", "email": "a@example.com", "mobile": "+8613800000000",
            "department_ids": ["d1"], "status": "active", "parent_id": "d0", "order": 3
        });
        let mut resolver = MemoryResolver::new();
        resolver.insert("person", "fuzz", "u1", "c1");
        resolver.insert("department", "fuzz", "1", "d1");
        (vendor, canonical, resolver)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (vendor, canonical, resolver) = records();
    for jaq_only in [false, true] {
        let options = LoadOptions {
            jaq_only,
            ..LoadOptions::default()
        };
        let Ok(m) = Mapping::from_str_with("fuzz.yaml", text, &options) else {
            continue;
        };
        let _ = m.expressions();
        let _ = m.key_of(vendor);
        let _ = m.to_canonical(vendor, resolver);
        let _ = m.from_canonical(canonical, resolver);
    }
});
