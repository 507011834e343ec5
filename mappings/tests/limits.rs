//! Hardening finding #4: mapping evaluation is bounded. Expressions too big or too deep are load
//! errors (file and line); a record whose evaluation loops, recurses or grows without end fails
//! alone with a clear error and the next records are still mapped; messages never quote a huge
//! value in full.
//!
//! Each case runs in a child process (this test binary, that one test) on a 2 MiB thread, under a
//! memory cap and a timeout, so that a stack overflow, a hang or a blow-up fails the test instead
//! of aborting or stalling the whole test run.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use huitong_mappings::{
    ApplyOptions, Direction, LoadError, LoadOptions, Mapping, MemoryResolver, RecordError, cli,
};
use serde_json::{Value, json};

const CHILD_ENV: &str = "HUITONG_LIMITS_CHILD";
/// A case that has not finished by then hangs.
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);
/// Address space of a child (KiB): several times what a passing case needs.
const CHILD_MEMORY_KIB: u64 = 3 * 1024 * 1024;
/// Stack of the thread a case runs on: Rust's and tokio's default for spawned threads.
const CASE_STACK: usize = 2 * 1024 * 1024;

/// Runs `case` isolated (see the module doc). In the parent it spawns the child and checks that
/// it passed; in the child it runs `case`.
fn isolated(name: &str, case: fn()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        let t = std::thread::Builder::new()
            .stack_size(CASE_STACK)
            .spawn(case)
            .expect("spawn case thread");
        if let Err(p) = t.join() {
            std::panic::resume_unwind(p);
        }
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {CHILD_MEMORY_KIB}; exec \"$0\" \"$@\""))
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: still running after {CHILD_TIMEOUT:?} (hangs)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let tail: String = {
        let chars: Vec<char> = stderr.chars().collect();
        chars[chars.len().saturating_sub(2000)..].iter().collect()
    };
    assert!(
        status.success(),
        "{name}: child failed ({status}) after {:?}:\n{tail}",
        started.elapsed()
    );
}

/// A person mapping whose `title` is `expr`.
fn mapping_with(expr: &str) -> String {
    format!(
        "system: demo\nentity: person\nkey: .uid\nto_canonical:\n  - field: name\n    expr: .name\n  - field: status\n    expr: '\"active\"'\n  - field: title\n    expr: {}\nfrom_canonical:\n  - field: name\n    expr: .name\n",
        serde_json::to_string(expr).expect("quote")
    )
}

/// Line of `title`'s `expr:` in [`mapping_with`].
const TITLE_LINE: usize = 10;

fn load_err(expr: &str) -> String {
    let started = Instant::now();
    let e = Mapping::from_str("limits.yaml", &mapping_with(expr)).expect_err("must not load");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    match &e {
        LoadError::Field { line, field, .. } => {
            assert_eq!(*line, TITLE_LINE, "{e}");
            assert_eq!(field, "title", "{e}");
        }
        other => panic!("not a field error: {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.starts_with("limits.yaml:10: "),
        "{}",
        &msg[..msg.len().min(300)]
    );
    assert!(msg.len() < 2000, "message of {} bytes", msg.len());
    msg
}

/// Maps one record; the title's evaluation must fail within a few seconds with `reason_has`.
fn record_err(expr: &str, record: Value, reason_has: &str) -> String {
    let m = Mapping::from_str("limits.yaml", &mapping_with(expr)).expect("loads");
    let started = Instant::now();
    let e = m
        .to_canonical(&record, &MemoryResolver::new())
        .expect_err("must fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{expr}: took {:?}",
        started.elapsed()
    );
    let msg = e.to_string();
    assert!(msg.len() < 2000, "message of {} bytes", msg.len());
    match &e {
        RecordError::Field { field, reason, .. } => {
            assert_eq!(field, "title", "{msg}");
            assert!(reason.contains(reason_has), "{expr}: {msg}");
        }
        other => panic!("{expr}: not a field error: {other}"),
    }
    msg
}

/// Applies `expr` to three records where only the middle one is `bad`: it alone fails.
fn only_bad_record_fails(expr: &str, bad: Value, reason_has: &str) {
    let m = Mapping::from_str("limits.yaml", &mapping_with(expr)).expect("loads");
    let good = |n: u32| json!({"uid": n, "name": "Li", "s": "x", "n": 2, "x": "[1]"});
    let lines = [good(1), bad, good(3)]
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let report = cli::apply(
        &m,
        Direction::ToCanonical,
        &MemoryResolver::new(),
        lines.as_bytes(),
        &mut out,
        &mut err,
        &ApplyOptions {
            threads: 1,
            ..ApplyOptions::default()
        },
    )
    .expect("apply");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let err = String::from_utf8_lossy(&err);
    assert_eq!((report.written, report.failed), (2, 1), "{err}");
    assert!(err.starts_with("line 2: error: "), "{err}");
    assert!(err.contains(reason_has), "{err}");
    assert!(err.len() < 2000, "error output of {} bytes", err.len());
}

fn record() -> Value {
    json!({"uid": 1, "name": "Li"})
}

// ---- load time: size and nesting of expressions --------------------------------------------

#[test]
fn nesting_of_4000_is_a_load_error() {
    isolated("nesting_of_4000_is_a_load_error", || {
        let expr = format!("{}.{}", "(".repeat(4000), ")".repeat(4000));
        let msg = load_err(&expr);
        assert!(msg.contains("deeper than 64 levels"), "{msg}");
        let expr = format!("{}1{}", "[".repeat(4000), "]".repeat(4000));
        load_err(&expr);
        let expr = format!("{}.{}", "\"\\(".repeat(4000), ")\"".repeat(4000));
        load_err(&expr);
    });
}

#[test]
fn chain_of_200k_pipes_is_a_load_error() {
    isolated("chain_of_200k_pipes_is_a_load_error", || {
        let msg = load_err(&format!("{}.a", ".a|".repeat(200_000)));
        assert!(msg.contains("bytes long"), "{msg}");
    });
}

#[test]
fn chain_within_the_size_limit_is_bounded_in_depth() {
    isolated("chain_within_the_size_limit_is_bounded_in_depth", || {
        // 16 KiB of `.|.|…`: 8,000 pipes.
        let msg = load_err(&format!("{}.", ".|".repeat(8000)));
        assert!(msg.contains("too deep"), "{msg}");
        let msg = load_err(&format!("{}1", "-".repeat(8000)));
        assert!(msg.contains("too deep"), "{msg}");
        let msg = load_err(&format!(
            "{}.{}",
            "if . then ".repeat(1000),
            " end".repeat(1000)
        ));
        assert!(msg.contains("deeper than 64 levels"), "{msg}");
        let msg = load_err(&format!("{}.", ". as $x | ".repeat(1000)));
        assert!(msg.contains("too deep"), "{msg}");
    });
}

#[test]
fn expression_of_5_mb_is_a_load_error() {
    isolated("expression_of_5_mb_is_a_load_error", || {
        let expr = format!("[{}1]", "1,".repeat(2_500_000));
        let msg = load_err(&expr);
        assert!(msg.contains("5000003 bytes long"), "{msg}");
    });
}

// ---- evaluation: recursion, endless generators, growth --------------------------------------

#[test]
fn endless_recursive_def_fails_the_record() {
    isolated("endless_recursive_def_fails_the_record", || {
        let msg = record_err("def f(x): x | f(x); f(.)", record(), "evaluation stopped");
        assert!(msg.contains("(line 9)"), "{msg}");
        record_err("def f: [f]; f", record(), "evaluation stopped");
        record_err("def f: 1 + f; f", record(), "evaluation stopped");
        // `try` cannot swallow the limit.
        record_err("def f: try f catch 0; f", record(), "evaluation stopped");
    });
}

#[test]
fn repeat_stops_at_the_limit() {
    isolated("repeat_stops_at_the_limit", || {
        record_err("[repeat(1)] | length", record(), "evaluation stopped");
        record_err(
            "[limit(1e12; repeat(\"x\"))] | length",
            record(),
            "evaluation stopped",
        );
    });
}

#[test]
fn range_1e15_stops_at_the_limit() {
    isolated("range_1e15_stops_at_the_limit", || {
        record_err("[range(1e15)] | length", record(), "evaluation stopped");
        record_err("last(range(1e15))", record(), "evaluation stopped");
        record_err(
            "reduce range(1e15) as $i (0; . + 1)",
            record(),
            "evaluation stopped",
        );
    });
}

#[test]
fn until_false_stops_at_the_limit() {
    isolated("until_false_stops_at_the_limit", || {
        record_err("until(false; .)", record(), "evaluation stopped");
        record_err(
            "try until(false; .) catch \"caught\"",
            record(),
            "evaluation stopped",
        );
        record_err(
            "[.name | while(true; .)] | length",
            record(),
            "evaluation stopped",
        );
    });
}

#[test]
fn string_repetition_is_capped() {
    isolated("string_repetition_is_capped", || {
        record_err("\"x\" * 1e9", record(), "would");
        record_err("\"x\" * 1e15", record(), "would");
        // jq interpreter (`reduce`), and doubling by `+`
        record_err("reduce range(1) as $i (\"x\" * 1e9; .)", record(), "would");
        record_err("reduce range(40) as $i (\"x\"; . + .)", record(), "would");
        record_err(
            "reduce range(40) as $i ([1]; . + .) | length",
            record(),
            "would",
        );
        record_err("reduce range(40) as $i (\"x\"; . += .)", record(), "would");
        // the count from the vendor record, direct evaluator
        only_bad_record_fails(
            ".s * .n",
            json!({"uid": 2, "name": "Li", "s": "x", "n": 1e12}),
            "would build a string",
        );
    });
}

#[test]
fn fromjson_of_deep_input_fails_only_that_record() {
    isolated("fromjson_of_deep_input_fails_only_that_record", || {
        let n = 100_000;
        for text in ["[".repeat(n) + &"]".repeat(n), "[".repeat(n)] {
            let deep = json!({"uid": 2, "name": "Li", "x": text});
            // jq interpreter (`.[]`)
            only_bad_record_fails(".x | fromjson | [.[]] | tojson", deep.clone(), "fromjson");
            // direct evaluator
            only_bad_record_fails(".x | fromjson | tostring", deep, "fromjson");
        }
    });
}

#[test]
fn errors_do_not_quote_a_10_mb_value() {
    isolated("errors_do_not_quote_a_10_mb_value", || {
        let big = "9".repeat(10 << 20) + "x";
        for (expr, has) in [
            (".s | tonumber | tostring", "as a number"),
            (".s | fromjson | tostring", "fromjson"),
            (".s | phone(\"CN\")", "phone"),
            (".s | epoch_ms_to_date(\"UTC\")", "epoch"),
            (".s | table(\"t\")", "table"),
            (".s | [.] | .[0] | tonumber | tostring", "number"),
            (".s | [.] | .[0] | fromjson | tostring", "fromjson"),
            (".s | [.] | .[0] | error", ""),
            (".s | [.] | .[0] | .[\"k\"]", ""),
            ("[.s, .s] | .[]", "more than one value"),
            (".s", "schema"),
        ] {
            let text = mapping_with(expr).replace(
                "to_canonical:",
                "tables:\n  t:\n    1: active\nto_canonical:",
            );
            let m = Mapping::from_str("limits.yaml", &text).expect("loads");
            let e = m
                .to_canonical(
                    &json!({"uid": 1, "name": "Li", "s": big}),
                    &MemoryResolver::new(),
                )
                .expect_err(expr);
            let msg = e.to_string();
            assert!(msg.len() < 2000, "{expr}: message of {} bytes", msg.len());
            assert!(msg.contains(has), "{expr}: {msg}");
        }
    });
}

// ---- mapping files ---------------------------------------------------------------------------

#[test]
fn deeply_nested_yaml_is_a_load_error() {
    isolated("deeply_nested_yaml_is_a_load_error", || {
        for (what, text) in [
            (
                "flow",
                format!(
                    "{}description: {}x{}\n",
                    mapping_with(".name"),
                    "[".repeat(20_000),
                    "]".repeat(20_000)
                ),
            ),
            (
                "block",
                format!(
                    "{}description:\n{}",
                    mapping_with(".name"),
                    (1..5000)
                        .map(|i| format!("{}- \n", " ".repeat(i)))
                        .collect::<String>()
                ),
            ),
        ] {
            let started = Instant::now();
            let e = Mapping::from_str("limits.yaml", &text).expect_err(what);
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{what}: {:?}",
                started.elapsed()
            );
            let msg = e.to_string();
            let at = if what == "flow" {
                "limits.yaml:14:"
            } else {
                "limits.yaml:"
            };
            assert!(msg.starts_with(at), "{what}: {msg}");
            assert!(msg.contains("nested deeper than 32"), "{what}: {msg}");
        }
    });
}

#[test]
fn expressions_at_the_limits_load_and_run_on_a_small_stack() {
    isolated(
        "expressions_at_the_limits_load_and_run_on_a_small_stack",
        || {
            let record = json!({"uid": 1, "name": "Li", "n": 1});
            let cases = [
                // 97 pipes, in the jq interpreter (`[…][]`) and the direct evaluator
                (
                    format!("[.name][]{}", " | ascii_downcase".repeat(97)),
                    json!("li"),
                ),
                (
                    format!(".name{}", " | ascii_downcase".repeat(97)),
                    json!("li"),
                ),
                // 63 levels of brackets
                (
                    format!("{}.name{}", "(".repeat(63), ")".repeat(63)),
                    json!("Li"),
                ),
                (
                    format!("{}[.name][]{} | .[0]", "[".repeat(62), "]".repeat(62)),
                    (0..61).fold(json!("Li"), |v, _| json!([v])),
                ),
                // 97 additions
                (
                    format!("[.n][]{} | tostring", " + .n".repeat(97)),
                    json!("98"),
                ),
                (format!(".n{} | tostring", " + .n".repeat(97)), json!("98")),
                // 48 branches
                (
                    format!(
                        "{} else .name end",
                        (0..48)
                            .map(|i| format!(
                                " {} .n == {} then \"{i}\"",
                                if i == 0 { "if" } else { "elif" },
                                i + 2
                            ))
                            .collect::<String>()
                    ),
                    json!("Li"),
                ),
            ];
            for (expr, want) in cases {
                for jaq_only in [false, true] {
                    let m = Mapping::from_str_with(
                        "limits.yaml",
                        &mapping_with(&expr),
                        &LoadOptions {
                            jaq_only,
                            ..LoadOptions::default()
                        },
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                    let trace = m.trace(Direction::ToCanonical, &record, &MemoryResolver::new());
                    let title = trace.iter().find(|t| t.target == "title").expect("title");
                    assert_eq!(title.result, Ok(Some(want.clone())), "{expr}");
                }
            }
        },
    );
}

#[test]
fn block_scalars_and_quotes_do_not_count_as_nesting() {
    let expr = format!(
        "|\n{}",
        (0..40)
            .map(|i| format!("      {}if .a then [\"[\", \"{{\"] else\n", " ".repeat(i)))
            .collect::<String>()
    );
    // A 40-line text indented ever deeper, with brackets, and brackets in a quoted scalar.
    let text = mapping_with(".name")
        + &format!(
            "description: {expr}\nwhen_canonical: '.x == \"{}\"'\n",
            "[".repeat(40)
        );
    match Mapping::from_str("limits.yaml", &text) {
        Ok(_) => {}
        Err(LoadError::Yaml { message, .. }) if message.contains("nested deeper") => {
            panic!("{message}")
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn shipped_mappings_are_within_the_limits() {
    for (name, text) in huitong_mappings::shipped::FILES {
        Mapping::from_str(name, text).unwrap_or_else(|e| panic!("{e}"));
    }
}
