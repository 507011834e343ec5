mod common;

use std::path::{Path, PathBuf};

use chrono::{Datelike, Timelike, Weekday};
use huitong_schedules::{
    Diagnostic, Job, MissedPolicy, OverlapPolicy, Severity, load_dir, load_sources,
};

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("files")
}

fn has(
    ds: &[Diagnostic],
    file: &str,
    schedule: Option<&str>,
    key: Option<&str>,
    needle: &str,
) -> bool {
    ds.iter().any(|d| {
        d.severity == Severity::Error
            && d.file == Path::new(file)
            && d.schedule.as_deref() == schedule
            && d.key.as_deref() == key
            && d.message.contains(needle)
    })
}

#[test]
fn shipped_files_load_clean_and_use_weekday_names() {
    let set = load_dir(&shipped_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    let names: Vec<&str> = set.schedules.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["org-nightly", "org-weekly"]);
    for s in &set.schedules {
        assert_eq!(s.timezone, chrono_tz::Asia::Shanghai);
        assert_eq!(s.job, Job::parse("reconcile org").unwrap());
        assert!(s.enabled);
        let weekday = s.cron.split_whitespace().nth(5).unwrap();
        assert!(
            weekday.chars().all(|c| c.is_ascii_alphabetic() || c == '-'),
            "{weekday}"
        );
    }
    // Over four weeks, the nightly one fires at 02:30 every day but Sunday, the weekly one
    // at 02:30 every Sunday, never at the same time.
    let start = common::utc(2026, 11, 29, 0, 0, 0);
    let nightly = set.schedules[0].upcoming(start, 24);
    let weekly = set.schedules[1].upcoming(start, 4);
    for t in &nightly {
        assert_ne!(t.weekday(), Weekday::Sun, "{t}");
        assert_eq!((t.hour(), t.minute(), t.second()), (2, 30, 0));
        assert_eq!(t.offset().to_string(), "CST");
    }
    for t in &weekly {
        assert_eq!(t.weekday(), Weekday::Sun, "{t}");
        assert_eq!((t.hour(), t.minute()), (2, 30));
    }
    assert_eq!(set.schedules[0].overlap, OverlapPolicy::Skip);
    assert_eq!(set.schedules[1].overlap, OverlapPolicy::Queue);
}

#[test]
fn defaults_apply() {
    let text = "schedules:\n  - name: a\n    cron: \"0 0 1 * * *\"\n    job: reconcile org\n";
    let set = load_sources(&[(Path::new("a.yaml"), text)]).unwrap();
    let s = &set.schedules[0];
    assert_eq!(s.timezone, chrono_tz::Asia::Shanghai);
    assert_eq!(s.overlap, OverlapPolicy::Skip);
    assert_eq!(s.missed, MissedPolicy::RunOnce);
    assert!(s.enabled);
    assert_eq!(s.source, Path::new("a.yaml"));
}

#[test]
fn every_problem_is_reported_with_file_schedule_and_key() {
    let bad = r#"
schedules:
  - name: weekdays
    cron: "0 30 2 * * 1-5"
    timezone: Asia/Shangai
    job: poll org
    overlap: sometimes
    missed: later
    enabled: "yes"
    overlp: skip
  - cron: "30 2 * * *"
    job: reconcile
  - name: Bad Name
    cron: "0 0 1 * * Mon"
    job: reconcile org
  - name: good
    cron: "0 0 1 * * Mon"
    job: reconcile org
  - name: bad-cron
    cron: "0 0 25 * * Mon"
    job: reconcile org
"#;
    let other = "schedules:\n  - name: good\n    cron: \"0 0 1 * * Tue\"\n    job: reconcile org\n  - name: sevenfields\n    cron: \"0 0 1 * * Tue 2020\"\n    job: reconcile x\n    extra: 1\n";
    let err = load_sources(&[
        (Path::new("bad.yaml"), bad),
        (Path::new("other.yaml"), other),
    ])
    .unwrap_err();
    let ds = &err.diagnostics;
    let f = "bad.yaml";
    let w = Some("weekdays");
    assert!(has(ds, f, w, Some("cron"), "numeric weekday `1`"), "{err}");
    assert!(has(ds, f, w, Some("cron"), "numeric weekday `5`"), "{err}");
    assert!(
        has(
            ds,
            f,
            w,
            Some("timezone"),
            "unknown time zone `Asia/Shangai`"
        ),
        "{err}"
    );
    assert!(
        has(ds, f, w, Some("job"), "unknown job kind `poll`"),
        "{err}"
    );
    assert!(has(ds, f, w, Some("overlap"), "`sometimes`"), "{err}");
    assert!(has(ds, f, w, Some("missed"), "`later`"), "{err}");
    assert!(has(ds, f, w, Some("enabled"), "true"), "{err}");
    assert!(has(ds, f, w, Some("overlp"), "unknown key"), "{err}");
    let second = Some("schedules[1]");
    assert!(has(ds, f, second, Some("name"), "missing"), "{err}");
    assert!(has(ds, f, second, Some("cron"), "has 5 fields"), "{err}");
    assert!(has(ds, f, second, Some("job"), "needs a route"), "{err}");
    assert!(
        has(
            ds,
            f,
            Some("schedules[2]"),
            Some("name"),
            "not a valid name"
        ),
        "{err}"
    );
    assert!(
        has(
            ds,
            f,
            Some("bad-cron"),
            Some("cron"),
            "not a valid cron expression"
        ),
        "{err}"
    );
    assert!(
        has(
            ds,
            "other.yaml",
            Some("good"),
            Some("name"),
            "duplicate schedule name; first defined in bad.yaml"
        ),
        "{err}"
    );
    assert!(
        has(
            ds,
            "other.yaml",
            Some("sevenfields"),
            Some("extra"),
            "unknown key"
        ),
        "{err}"
    );
    assert_eq!(err.error_count(), 15, "{err}");
    // The rendered error names file, schedule and key on every line.
    let text = err.to_string();
    assert!(
        text.contains("error: bad.yaml: schedule `weekdays`: key `timezone`: unknown time zone"),
        "{text}"
    );
}

#[test]
fn numeric_weekday_rejected_but_names_and_steps_accepted() {
    for (cron, ok) in [
        ("0 0 9 * * Mon-Fri", true),
        ("0 0 9 * * Mon,Wed,Fri", true),
        ("0 0 9 * * */2", true),
        ("0 0 9 * * Mon-Fri/2", true),
        ("0 0 9 * * ?", true),
        ("0 0 9 * * 1", false),
        ("0 0 9 * * Mon,3", false),
        ("0 0 9 * * 0-6", false),
        ("0 0 9 * * 2/2", false),
    ] {
        let text =
            format!("schedules:\n  - name: s\n    cron: \"{cron}\"\n    job: reconcile org\n");
        let res = load_sources(&[(Path::new("w.yaml"), &text)]);
        assert_eq!(res.is_ok(), ok, "{cron}: {:?}", res.err());
        if let Err(e) = res {
            assert!(
                has(
                    &e.diagnostics,
                    "w.yaml",
                    Some("s"),
                    Some("cron"),
                    "1 = Sunday"
                ),
                "{e}"
            );
        }
    }
}

#[test]
fn broken_yaml_is_reported_and_other_files_still_checked() {
    let err = load_sources(&[
        (Path::new("a.yaml"), "schedules: [ {name: x"),
        (
            Path::new("b.yaml"),
            "schedules:\n  - name: y\n    cron: \"0 0 1 * * *\"\n    job: sync org\n",
        ),
        (Path::new("c.yaml"), "- name: z\n"),
        (Path::new("d.yaml"), "jobs: []\n"),
    ])
    .unwrap_err();
    let ds = &err.diagnostics;
    assert!(has(ds, "a.yaml", None, None, "not valid YAML"), "{err}");
    assert!(
        has(
            ds,
            "b.yaml",
            Some("y"),
            Some("job"),
            "unknown job kind `sync`"
        ),
        "{err}"
    );
    assert!(has(ds, "c.yaml", None, None, "expected a mapping"), "{err}");
    assert!(
        has(ds, "d.yaml", None, None, "unknown top-level key `jobs`"),
        "{err}"
    );
    assert!(
        has(ds, "d.yaml", None, None, "missing `schedules:`"),
        "{err}"
    );
}

#[test]
fn day_of_month_and_weekday_together_warns() {
    let text = "schedules:\n  - name: s\n    cron: \"0 0 9 1 * Mon\"\n    job: reconcile org\n";
    let set = load_sources(&[(Path::new("w.yaml"), text)]).unwrap();
    assert_eq!(set.schedules.len(), 1);
    assert_eq!(set.warnings.len(), 1);
    assert_eq!(set.warnings[0].severity, Severity::Warning);
    assert_eq!(set.warnings[0].key.as_deref(), Some("cron"));
    assert!(set.warnings[0].message.contains("BOTH"));
}

#[test]
fn missing_directory_is_an_error() {
    let err = load_dir(Path::new("/nonexistent/huitong/schedules")).unwrap_err();
    assert_eq!(err.error_count(), 1);
    assert!(err.diagnostics[0].message.contains("cannot read directory"));
}
