//! `huitong mapping check|apply|preview` as an admin runs them.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_huitong");

fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_names_file_line_and_field_of_a_broken_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.yaml");
    std::fs::write(
        &bad,
        "system: dingtalk\nentity: person\nkey: .userid\nto_canonical:\n  - field: name\n    expr: .name\n  - field: email\n    expr: .email | ascii_downcase(\nfrom_canonical:\n  - field: name\n    expr: .name\n",
    )
    .unwrap();
    let (code, out, err) = run(
        &["mapping", "check", "dingtalk-person", bad.to_str().unwrap()],
        None,
    );
    assert_ne!(code, 0, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("ok dingtalk-person"), "{all}");
    assert!(all.contains("broken.yaml"), "{all}");
    assert!(all.contains("email"), "{all}");
    assert!(all.contains("line 8") || all.contains(":8"), "{all}");
}

#[test]
fn apply_maps_ndjson_reports_bad_lines_and_fails() {
    let good = r#"{"userid":"u1","name":"王小明","org_email":"Xiaoming.Wang@Corp.Example.com","mobile":"13800000001","job_number":"E1","title":"总监","dept_id_list":[1],"hired_date":1597573616828}"#;
    let input = format!("{good}\nnot json at all\n{good}\n");
    let (code, out, err) = run(
        &[
            "mapping",
            "apply",
            "dingtalk-person",
            "--direction",
            "to-canonical",
        ],
        Some(&input),
    );
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let rec: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(rec["name"], "王小明");
    assert_eq!(rec["email"], "xiaoming.wang@corp.example.com");
    assert_eq!(rec["mobile"], "+8613800000001");
    assert_eq!(rec["employee_no"], "E1");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("3 read, 2 written"), "{err}");
}

#[test]
fn apply_resolves_ids_through_an_xref_file() {
    let dir = tempfile::tempdir().unwrap();
    let xref = dir.path().join("links.ndjson");
    std::fs::write(
        &xref,
        "{\"entity\":\"department\",\"system\":\"dingtalk\",\"external_id\":\"1\",\"canonical_id\":\"D-root\"}\n\
         {\"entity\":\"person\",\"system\":\"dingtalk\",\"external_id\":\"u1\",\"canonical_id\":\"P-1\"}\n",
    )
    .unwrap();
    let input = r#"{"userid":"u1","name":"王小明","dept_id_list":[1]}"#;
    let (code, out, err) = run(
        &[
            "mapping",
            "apply",
            "dingtalk-person",
            "--direction",
            "to-canonical",
            "--xref",
            xref.to_str().unwrap(),
        ],
        Some(input),
    );
    assert_eq!(code, 0, "{err}");
    let rec: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rec["id"], "P-1");
    assert_eq!(rec["department_ids"], serde_json::json!(["D-root"]));
    assert_eq!(rec["main_department"], "D-root");
}

#[test]
fn preview_shows_input_output_and_validation() {
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample.json");
    std::fs::write(
        &sample,
        r#"{"userid":"u1","name":"王小明","mobile":"13800000001"}"#,
    )
    .unwrap();
    let (code, out, err) = run(
        &[
            "mapping",
            "preview",
            "dingtalk-person",
            "--sample",
            sample.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+8613800000001"), "{out}");
    assert!(out.contains("phone(\"CN\")"), "{out}");
}

/// Every `cargo run -p huitong -- mapping preview …` line of the READMEs, run as pasted from the
/// repository's root: the shipped mapping and its sample in `mappings/samples/` give a valid
/// canonical record.
#[test]
fn readme_preview_examples_work_as_pasted() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    const PREFIX: &str = "cargo run -p huitong -- ";
    for readme in ["README.md", "mappings/README.md"] {
        let text = std::fs::read_to_string(root.join(readme)).unwrap();
        let examples: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix(PREFIX))
            .filter(|args| args.starts_with("mapping preview "))
            .collect();
        assert!(!examples.is_empty(), "{readme}: no preview example");
        for args in examples {
            let out = Command::new(BIN)
                .args(args.split_whitespace())
                .current_dir(&root)
                .output()
                .unwrap();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert!(
                out.status.success(),
                "{readme}: `huitong {args}`:\n{stdout}{stderr}"
            );
            assert!(
                stdout.contains("ok: valid "),
                "{readme}: `huitong {args}`:\n{stdout}"
            );
        }
    }
}

/// `huitong mapping preview NAME --sample mappings/samples/NAME.json` for every shipped mapping,
/// by its shipped name and by its file.
#[test]
fn preview_of_every_shipped_mapping_on_its_sample() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, _) in huitong_mappings::shipped::FILES {
        let name = file.trim_end_matches(".yaml");
        let sample = format!("mappings/samples/{name}.json");
        assert!(
            root.join(&sample).is_file(),
            "no sample {sample} for {file}"
        );
        let entity = name.split_once('-').unwrap().1;
        for mapping in [name.to_owned(), format!("mappings/files/{file}")] {
            let out = Command::new(BIN)
                .args(["mapping", "preview", &mapping, "--sample", &sample])
                .current_dir(&root)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{mapping}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains(&format!("ok: valid {entity} record; key ")),
                "{mapping}:\n{stdout}"
            );
        }
    }
}
