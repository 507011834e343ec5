//! Every shipped mapping (`files/*.yaml`) has a sample vendor record (`samples/<same name>.json`)
//! for `huitong mapping preview`, and previewing it gives a valid canonical record — so the
//! READMEs' preview examples work on a fresh clone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use huitong_mappings::{Direction, Mapping, MemoryResolver, cli, shipped};
use serde_json::Value;

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// File stems in `dir` with extension `ext`.
fn stems(dir: &Path, ext: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| {
            p.file_stem()
                .expect("file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn every_shipped_mapping_has_a_sample_and_every_sample_a_mapping() {
    let mappings = stems(&dir("files"), "yaml");
    let embedded: BTreeSet<String> = shipped::FILES
        .iter()
        .map(|(name, _)| name.trim_end_matches(".yaml").to_owned())
        .collect();
    assert_eq!(
        mappings, embedded,
        "files/*.yaml and shipped::FILES disagree"
    );
    let samples = stems(&dir("samples"), "json");
    let missing: Vec<_> = mappings.difference(&samples).collect();
    assert!(
        missing.is_empty(),
        "shipped mappings without a sample record in mappings/samples/: {missing:?}"
    );
    let orphans: Vec<_> = samples.difference(&mappings).collect();
    assert!(
        orphans.is_empty(),
        "samples in mappings/samples/ without a shipped mapping: {orphans:?}"
    );
}

#[test]
fn preview_of_each_sample_gives_a_valid_canonical_record() {
    let mappings = stems(&dir("files"), "yaml");
    assert!(!mappings.is_empty());
    for name in &mappings {
        let mapping_path = dir("files").join(format!("{name}.yaml"));
        let sample_path = dir("samples").join(format!("{name}.json"));
        let mapping = Mapping::load(&mapping_path).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&sample_path)
            .unwrap_or_else(|e| panic!("{name}: no sample {}: {e}", sample_path.display()));
        let sample: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", sample_path.display()));
        assert!(
            sample.is_object(),
            "{}: one vendor record (a JSON object)",
            sample_path.display()
        );

        // What `huitong mapping preview files/<name>.yaml --sample samples/<name>.json` prints
        // (no --xref: ids are reported unresolved, which the schema allows).
        let links = MemoryResolver::new();
        let mut out = Vec::new();
        let ok = cli::preview(&mapping, Direction::ToCanonical, &sample, &links, &mut out)
            .expect("write to a Vec");
        let printed = String::from_utf8(out).expect("utf8");
        assert!(ok, "{name}: preview failed:\n{printed}");
        let entity = mapping.entity();
        assert!(
            printed.contains(&format!("ok: valid {entity} record; key ")),
            "{name}: preview gave no valid record:\n{printed}"
        );
        assert!(!printed.contains("ERROR"), "{name}:\n{printed}");

        // The same through the library: not skipped by `when`, keyed, and the canonical record
        // (validated by `to_canonical`) carries the sample's name.
        let mapped = mapping
            .to_canonical(&sample, &links)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!mapped.skipped, "{name}: sample is skipped by `when`");
        assert!(mapped.key.is_some(), "{name}: sample has no key");
        // (Tryton keeps a company's or employee's name on its party.)
        let sample_name = sample.get("name").or_else(|| {
            ["person", "department"]
                .contains(&entity)
                .then(|| sample.pointer("/party/name"))
                .flatten()
        });
        assert_eq!(
            mapped.record.get("name"),
            sample_name,
            "{name}: {}",
            mapped.record
        );
        if entity == "person" {
            assert!(
                mapped.record.get("status").is_some_and(Value::is_string),
                "{name}: {}",
                mapped.record
            );
        }
    }
}
