//! A declared connector's definition file (`huitong_connectors::declared::Definition`): YAML
//! with jq templates, as an admin writes it. Never panics; a refused file names at least one
//! problem.
#![no_main]

use huitong_connectors::declared::Definition;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Definition::from_str("fuzz.yaml", text) {
        Ok(def) => drop(def),
        Err(e) => assert!(!e.problems.is_empty(), "an error without problems"),
    }
});
