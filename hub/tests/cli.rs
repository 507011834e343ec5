//! The `huitong` binary as a user runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_huitong");

fn huitong(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    // Keep the developer's own HUITONG_* settings out of these tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("HUITONG_") {
            c.env_remove(k);
        }
    }
    c
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn config_check_reports_every_mistake_with_its_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"localhost-ish\"\n\n[queue]\nprefetch = 0\n\n[connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_1\"\napp_secret_env = \"NOT_SET_ANYWHERE\"\n",
    )
    .unwrap();
    let out = huitong(dir.path())
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 problems"), "{err}");
    for key in [
        "`server.listen`",
        "`queue.prefetch`",
        "`connectors.hq.app_secret_env`",
    ] {
        assert!(err.contains(key), "missing {key} in:\n{err}");
    }
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("expected a socket address"), "{err}");
    assert!(err.contains("NOT_SET_ANYWHERE is not set"), "{err}");
}

#[test]
fn a_bad_value_given_by_a_flag_is_reported_with_the_flag_as_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huitong.toml");
    // The file and the environment both give good addresses; the flag, applied last, does not.
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = huitong(dir.path())
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--listen", "nowhere-at-all"])
        .env("HUITONG_SERVER_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 problem"), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("`server.listen`"))
        .unwrap_or_else(|| panic!("no server.listen problem in:\n{err}"));
    // `ORIGIN: `KEY`: MESSAGE`, the origin being the flag itself.
    assert!(
        line.trim().starts_with("- --listen: `server.listen`: "),
        "{err}"
    );
    assert!(line.contains("nowhere-at-all"), "{err}");
    assert!(!line.contains(&file.display().to_string()), "{err}");
    assert!(!line.contains("HUITONG_SERVER_LISTEN"), "{err}");
}

#[test]
fn config_check_accepts_the_default_and_never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("wecom.secret");
    std::fs::write(&secret_file, "wecom-file-secret-XYZ\n").unwrap();
    let file = dir.path().join("ok.toml");
    std::fs::write(
        &file,
        format!(
            "[connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_1\"\napp_secret_env = \"HQ_SECRET\"\n\
             [connectors.factory]\nkind = \"wecom\"\ncorp_id = \"ww1\"\nagent_id = 1000002\ncorp_secret_file = \"{}\"\n\
             [routes.org]\nsource = \"hq\"\ntargets = [\"factory\"]\n",
            secret_file.display()
        ),
    )
    .unwrap();
    let out = huitong(dir.path())
        .args(["config", "check", "--config"])
        .arg(&file)
        .env("HQ_SECRET", "feishu-env-secret-ABC")
        .env(
            "HUITONG_DATABASE_URL",
            "postgres://huitong:db-password-QRS@db.internal/huitong",
        )
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("configuration OK"), "{all}");
    assert!(
        all.contains("postgres://huitong:***@db.internal/huitong"),
        "{all}"
    );
    assert!(all.contains("route org"), "{all}");
    for secret in [
        "feishu-env-secret-ABC",
        "wecom-file-secret-XYZ",
        "db-password-QRS",
    ] {
        assert!(!all.contains(secret), "secret {secret} leaked:\n{all}");
    }

    // A literal secret in a file is refused without being repeated.
    let bad = dir.path().join("literal.toml");
    std::fs::write(
        &bad,
        "[connectors.hq]\nkind = \"feishu\"\napp_id = \"x\"\napp_secret = \"literal-secret-LMN\"\n",
    )
    .unwrap();
    let out = huitong(dir.path())
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(all.contains("connectors.hq.app_secret"), "{all}");
    assert!(!all.contains("literal-secret-LMN"), "{all}");
}

#[test]
fn database_errors_name_the_database_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = huitong(dir.path())
        .args(["migrate", "--log-level", "trace"])
        .env(
            "HUITONG_DATABASE_URL",
            "postgres://huitong:pg-password-UVW@127.0.0.1:1/huitong",
        )
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("postgres://huitong:***@127.0.0.1:1/huitong"),
        "{all}"
    );
    assert!(!all.contains("pg-password-UVW"), "{all}");
}

#[test]
fn migrate_creates_the_default_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = huitong(dir.path()).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("data/huitong.db").exists());
    assert!(String::from_utf8_lossy(&out.stdout).contains("is up to date"));
}

#[test]
fn serve_on_the_embedded_default_answers_health_ready_metrics_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huitong.toml");
    std::fs::write(
        &file,
        "[connectors.sub]\nkind = \"dingtalk\"\napp_key = \"dingabc\"\napp_secret_env = \"SUB_SECRET\"\n",
    )
    .unwrap();
    let mut child = huitong(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log-level",
            "trace",
            "--config",
        ])
        .arg(&file)
        .env("SUB_SECRET", "dingtalk-serve-secret-DEF")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(i) = line.find("http://") {
                let addr: String = line[i + 7..]
                    .chars()
                    .take_while(|c| *c != '"' && !c.is_whitespace())
                    .collect();
                let _ = tx.send(addr);
                sent = true;
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server did not log its address");

    let (status, body) = http_get(&addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(&addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"database\":\"ok\""), "{body}");
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("huitong_http_requests_total"), "{body}");
    assert!(body.contains("# TYPE"), "{body}");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let logs = reader.join().unwrap();
    assert!(logs.contains("SIGTERM"), "{logs}");
    assert!(!logs.contains("dingtalk-serve-secret-DEF"), "{logs}");
    // JSON log lines.
    assert!(
        logs.lines().all(|l| l.trim_start().starts_with('{')),
        "{logs}"
    );
}

#[test]
fn sandbox_feishu_serves_the_fixture_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let org = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/small-org.json");
    let mut cmd = huitong(dir.path());
    cmd.args([
        "sandbox",
        "feishu",
        "--listen",
        "127.0.0.1:0",
        "--app-id",
        "cli_demo",
        "--app-secret",
        "s",
    ])
    .arg("--org")
    .arg(&org);
    let (mut child, line, addr) = spawn_sandbox(cmd);
    assert!(line.contains("20 users, 3 departments"), "{line}");
    let (status, body) = http_get(&addr, "/_sandbox/org");
    assert_eq!(status, 200, "{body}");
    let org: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(org["users"].as_array().map(Vec::len), Some(20));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(child.wait().unwrap().success());
}

/// A schedules folder under `dir` holding one file, `org.yaml`.
fn schedules(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let sched = dir.join("sched");
    std::fs::create_dir(&sched).unwrap();
    std::fs::write(sched.join("org.yaml"), yaml).unwrap();
    sched
}

#[test]
fn schedule_list_shows_next_fires_and_config_check_flags_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let sched = schedules(
        dir.path(),
        "schedules:\n  - name: nightly\n    cron: \"0 30 2 * * Mon-Fri\"\n    job: reconcile org\n",
    );
    let out = huitong(dir.path())
        .args(["schedule", "list", "--output", "json", "--next", "2"])
        .env("HUITONG_SCHEDULES_DIR", &sched)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = views.to_string();
    assert!(text.contains("nightly"), "{text}");
    assert!(text.contains("02:30:00+08:00"), "{text}");

    let out = huitong(dir.path())
        .args(["config", "check"])
        .env("HUITONG_SCHEDULES_DIR", &sched)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning:")
            && err.contains("schedule `nightly`")
            && err.contains("route \"org\" is not configured")
            && err.contains("skipped"),
        "{err}"
    );
}

/// Runs `huitong serve` in `dir` until `until` holds for its stderr or it exits; returns
/// its exit code (None: it was still running and was stopped) and its stderr.
fn serve_until(dir: &Path, env: &[(&str, &Path)], until: &str) -> (Option<i32>, String) {
    let mut c = huitong(dir);
    c.args(["serve", "--listen", "127.0.0.1:0"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let until = until.to_owned();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains(&until) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if rx.try_recv().is_ok() || std::time::Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, reader.join().unwrap())
}

#[test]
fn config_check_and_serve_judge_schedules_by_one_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config_check = |sched: &Path| {
        let out = huitong(dir.path())
            .args(["config", "check"])
            .env("HUITONG_SCHEDULES_DIR", sched)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status, err)
    };
    // A schedule naming a route that is not configured: skipped with a warning by both.
    let sched = schedules(
        dir.path(),
        "schedules:\n  - name: nightly\n    cron: \"0 30 2 * * *\"\n    job: reconcile org\n",
    );
    let (check, check_err) = config_check(&sched);
    assert_eq!(check.code(), Some(0), "{check_err}");
    let (code, serve_err) = serve_until(
        dir.path(),
        &[("HUITONG_SCHEDULES_DIR", &sched)],
        "listening",
    );
    assert_eq!(code, None, "serve runs:\n{serve_err}");
    let rule = "schedule `nightly`: key `job`: route \"org\" is not configured under [routes]; the schedule is skipped";
    assert!(check_err.contains(rule), "{check_err}");
    assert!(serve_err.contains(rule), "{serve_err}");

    // A schedule file that does not load: an error for both (exit 2, nothing started).
    std::fs::write(sched.join("org.yaml"), "schedules:\n  - name: nightly\n").unwrap();
    let (check, check_err) = config_check(&sched);
    assert_eq!(check.code(), Some(2), "{check_err}");
    let (code, serve_err) = serve_until(
        dir.path(),
        &[("HUITONG_SCHEDULES_DIR", &sched)],
        "listening",
    );
    assert_eq!(
        code,
        Some(2),
        "serve refuses like config check:\n{serve_err}"
    );
    assert!(
        serve_err.contains("schedules have 2 problem"),
        "{serve_err}"
    );
    assert!(
        check_err.contains("schedules have 2 problem"),
        "{check_err}"
    );
}

#[test]
fn demo_once_tours_plan_apply_and_a_live_change_and_says_what_it_synced() {
    let dir = tempfile::tempdir().unwrap();
    let out = huitong(dir.path())
        .args(["demo", "--once", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("huitong sync plan org"), "{stdout}");
    assert!(
        stdout.contains("arrived in DingTalk") && stdout.contains("arrived in WeCom"),
        "{stdout}"
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        last.starts_with(
            "demo OK: synced 3 departments and 20 people from Feishu to DingTalk and WeCom"
        ),
        "{last}"
    );
    assert!(dir.path().join("demo/huitong.db").exists());

    // Once it exited, it prints no URL (they would be dead) and only commands that work.
    let next = stdout
        .split("Where to look next")
        .nth(1)
        .unwrap_or_default();
    assert!(!next.contains("http://"), "dead URLs printed:\n{next}");
    let commands = printed_commands(next);
    assert!(commands.iter().any(|c| c.ends_with("sync runs")), "{next}");
    for c in &commands {
        let out = run_printed(dir.path(), c);
        assert!(
            out.status.success(),
            "`{c}` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `… --config FILE …` command lines printed after "Where to look next", each cut
/// before its two-space comment.
fn printed_commands(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.contains(" --config "))
        .map(|l| l.split("  ").next().unwrap_or_default().to_owned())
        .collect()
}

/// Runs a printed command as a shell would (its words; no quoting in these test paths),
/// in `dir`, with none of the demo's environment.
fn run_printed(dir: &Path, command: &str) -> std::process::Output {
    let words: Vec<&str> = command.split_whitespace().collect();
    assert!(
        !words.is_empty()
            && Path::new(words[0]).canonicalize().ok() == Path::new(BIN).canonicalize().ok(),
        "`{command}` does not call this huitong ({BIN})"
    );
    let mut c = huitong(dir);
    c.args(&words[1..]);
    for (k, _) in std::env::vars() {
        if k.starts_with("DEMO_") {
            c.env_remove(k);
        }
    }
    c.output().unwrap()
}

#[test]
fn demo_prints_commands_that_work_as_pasted_and_runs_labelled_by_what_started_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = huitong(dir.path())
        .args(["demo", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            if line.starts_with("Running;") || line.starts_with("demo FAILED") {
                let _ = tx.send(all.clone());
            }
        }
        let _ = tx.send(all);
    });
    let text = rx.recv_timeout(Duration::from_secs(120));
    let stop = || {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    };
    let Ok(text) = text else {
        stop();
        panic!("the demo did not get to running");
    };
    let next = text
        .split("Where to look next")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let commands = printed_commands(&next);
    let results: Vec<(String, std::process::Output)> = commands
        .iter()
        .map(|c| (c.clone(), run_printed(dir.path(), c)))
        .collect();
    let runs = commands
        .iter()
        .find(|c| c.ends_with("sync runs"))
        .map(|c| run_printed(dir.path(), &format!("{c} --output json")));
    stop();
    assert!(child.wait().unwrap().success());

    assert!(
        commands.iter().any(|c| c.ends_with("sync plan org")) && commands.len() >= 2,
        "{text}"
    );
    assert!(
        text.contains("/_sandbox/org/users with a JSON user"),
        "{text}"
    );
    for (c, out) in &results {
        assert!(
            out.status.success(),
            "`{c}` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The runs as the demo describes them: the apply, then the reconcile of the new hire.
    let runs = runs.expect("a sync runs command");
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let mut kinds: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or_default())
        .collect();
    kinds.reverse();
    assert_eq!(kinds.first(), Some(&"apply"), "{kinds:?}");
    assert!(
        kinds.len() >= 2 && kinds[1..].iter().all(|k| *k == "reconcile" || *k == "live"),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"reconcile"), "{kinds:?}");
}

#[test]
fn dlq_list_and_replay_on_the_embedded_queue_are_audited() {
    use huitong::queue::{Envelope, Queue, RetryPolicy, Task};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let url = format!("sqlite://{}", db.display());
    // Dead-letter one message through the library, as a failing handler would.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id = rt.block_on(async {
        let store = huitong::store::open(&huitong::config::DatabaseConfig {
            url: url.clone().into(),
            max_connections: 1,
        })
        .await
        .unwrap();
        let q = huitong::queue::embedded::EmbeddedQueue::new(
            store.clone(),
            RetryPolicy { tiers: vec![] },
        );
        let m = Envelope::new(
            "p-1",
            Task::IngressV1 {
                connector: "hq".into(),
                event_type: "test".into(),
                event_id: Some("p-1".into()),
                payload: serde_json::json!({"n": 1}),
                received_at_ms: 1,
            },
        );
        q.publish("normalize", &m).await.unwrap();
        let now = huitong::store::now_ms();
        let claimed = store
            .q_claim("normalize", "test", now, now + 60_000, 10)
            .await
            .unwrap();
        assert!(
            store
                .q_dead(
                    claimed[0].seq,
                    "test",
                    4,
                    "vendor said 60121 user not found",
                    1
                )
                .await
                .unwrap()
        );
        m.id
    });
    let out = huitong(dir.path())
        .args(["dlq", "list", "--queue", "normalize", "--output", "json"])
        .env("HUITONG_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let letters: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(letters[0]["id"], id.as_str());
    assert_eq!(letters[0]["attempts"], 5);
    assert_eq!(letters[0]["last_error"], "vendor said 60121 user not found");

    let out = huitong(dir.path())
        .args(["dlq", "replay", &id, "--actor", "ops@example.cn"])
        .env("HUITONG_DATABASE_URL", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 message(s) replayed by ops@example.cn"),
        "{stdout}"
    );
    let out = huitong(dir.path())
        .args(["dlq", "list"])
        .env("HUITONG_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no dead letters"));
    // Replaying an id that is not there fails and says so.
    let out = huitong(dir.path())
        .args(["dlq", "replay", "nope"])
        .env("HUITONG_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no dead letter with id nope"));
    rt.block_on(async {
        let store = huitong::store::open(&huitong::config::DatabaseConfig {
            url: url.clone().into(),
            max_connections: 1,
        })
        .await
        .unwrap();
        let audit = store.list_audit(5).await.unwrap();
        assert_eq!(audit[0].actor, "ops@example.cn");
        assert_eq!(audit[0].action, "dlq.replay");
    });
}

#[test]
fn sandbox_fixture_is_deterministic_and_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let gen_stdout = || {
        let out = huitong(dir.path())
            .args(["sandbox", "fixture", "--users", "50", "--seed", "3"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = gen_stdout();
    assert_eq!(first, gen_stdout(), "same arguments, same bytes");
    let org = huitong_connectors::fixture::OrgFixture::from_json(&first).unwrap();
    assert_eq!(org.users.len(), 50);
    assert_eq!(org.departments.len(), 3);

    let file = dir.path().join("org.json");
    let out = huitong(dir.path())
        .args(["sandbox", "fixture", "--users", "300", "--depts", "12"])
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        line,
        format!("wrote {}: 300 users, 12 departments\n", file.display())
    );
    let org = huitong_connectors::fixture::OrgFixture::load(&file).unwrap();
    assert_eq!((org.users.len(), org.departments.len()), (300, 12));
}

#[test]
fn human_logs_are_plain_text_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // stderr is a pipe here: no ANSI colour codes, with or without NO_COLOR.
    for no_color in [None, Some("1")] {
        let mut c = huitong(dir.path());
        c.args(["migrate", "--log-level", "debug"]);
        c.env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("DEBUG"), "expected some log lines:\n{err}");
        assert!(
            !err.contains('\u{1b}'),
            "ANSI codes in a non-terminal log:\n{err}"
        );
    }
}

/// The display column (East Asian wide characters count two) where `needle` starts in `line`.
fn display_column(line: &str, needle: &str) -> Option<usize> {
    let at = line.find(needle)?;
    Some(
        line[..at]
            .chars()
            .map(|c| {
                let u = c as u32;
                if (0x2E80..=0x9FFF).contains(&u) || (0xFF00..=0xFF60).contains(&u) {
                    2
                } else {
                    1
                }
            })
            .sum(),
    )
}

#[test]
fn runs_table_aligns_chinese_route_names_by_display_width() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("runs.db").display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = huitong::store::open(&huitong::config::DatabaseConfig {
            url: url.clone().into(),
            max_connections: 1,
        })
        .await
        .unwrap();
        store.start_run("org", "reconcile", 1_000).await.unwrap();
        store
            .start_run("华东组织", "reconcile", 2_000)
            .await
            .unwrap();
    });
    let out = huitong(dir.path())
        .args(["sync", "runs"])
        .env("HUITONG_DATABASE_URL", &url)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let columns: Vec<Option<usize>> = table
        .lines()
        .filter(|l| l.contains(" reconcile "))
        .map(|l| display_column(l, " reconcile "))
        .collect();
    assert_eq!(columns.len(), 2, "{table}");
    assert_eq!(columns[0], columns[1], "kind column misaligned:\n{table}");
}

/// One `curl` of a documented console example, as curl sends it.
struct ConsoleCall {
    /// The comment above it: what it does and `→ STATUS`.
    comment: String,
    method: String,
    /// The URL after the sandbox's base (`/_sandbox/…`).
    path: String,
    body: Option<String>,
}

/// The console examples of a shell snippet in the docs: the sandbox it starts (the arguments
/// after `huitong`), the base URL it names, and each `curl`.
#[derive(Default)]
struct ConsoleScript {
    launch: Option<Vec<String>>,
    base: Option<String>,
    calls: Vec<ConsoleCall>,
}

/// Shell words: split on blanks, `'…'` and `"…"` quoted.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => (quote, any) = (Some(c), true),
            (None, c) if c.is_whitespace() => {
                if any {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// The `sh` code blocks of a Markdown text, unindented.
fn sh_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        let t = line.trim_start();
        match current.take() {
            Some(b) if t == "```" => blocks.push(b),
            Some(mut b) => {
                b.push_str(t);
                b.push('\n');
                current = Some(b);
            }
            None if t == "```sh" => current = Some(String::new()),
            None => {}
        }
    }
    blocks
}

fn console_script(text: &str) -> ConsoleScript {
    let mut s = ConsoleScript::default();
    let mut comment = String::new();
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim) {
        match lines.last_mut() {
            Some(last) if last.ends_with('\\') => {
                last.pop();
                last.push(' ');
                last.push_str(line);
            }
            _ => lines.push(line.to_owned()),
        }
    }
    for line in lines {
        if let Some(c) = line.strip_prefix('#') {
            comment = c.trim().to_owned();
            continue;
        }
        let words = shell_words(&line);
        if let Some(base) = line.strip_prefix("SANDBOX=") {
            s.base = Some(base.trim().to_owned());
        } else if words.first().map(String::as_str) == Some("curl") {
            let (mut method, mut path, mut body) = (None, None, None);
            let mut it = words.iter().skip(1);
            while let Some(w) = it.next() {
                match w.as_str() {
                    "-s" => {}
                    "-X" => method = it.next().cloned(),
                    "-d" => body = it.next().cloned(),
                    url => {
                        let rest = url.strip_prefix("$SANDBOX").or_else(|| {
                            let base = s.base.as_deref()?;
                            url.strip_prefix(base)
                        });
                        path = Some(rest.unwrap_or_else(|| panic!("unknown URL in `{line}`")));
                    }
                }
            }
            s.calls.push(ConsoleCall {
                comment: std::mem::take(&mut comment),
                method: method
                    .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into()),
                path: path
                    .unwrap_or_else(|| panic!("no URL in `{line}`"))
                    .to_owned(),
                body,
            });
        } else if let Some(i) = words.iter().position(|w| w == "sandbox")
            && let Some(at) = words.iter().position(|w| w == "--listen")
        {
            s.launch = Some(words[i..].to_vec());
            s.base = Some(format!("http://{}", words[at + 1]));
        }
    }
    s
}

/// Starts a `huitong sandbox …` command: the child, the line it printed first and the address
/// (`HOST:PORT`) that line names.
fn spawn_sandbox(mut cmd: Command) -> (std::process::Child, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: String = line
        .split("http://")
        .nth(1)
        .unwrap_or_default()
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    (child, line, addr)
}

/// `huitong ARGS` in the repository's root, with `--listen` on a free port: the child and its
/// base URL.
fn start_sandbox(args: &[String]) -> (std::process::Child, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = args.to_vec();
    let at = args.iter().position(|w| w == "--listen").unwrap();
    args[at + 1] = "127.0.0.1:0".into();
    let mut cmd = huitong(&root);
    cmd.args(&args);
    let (child, line, addr) = spawn_sandbox(cmd);
    assert!(
        !addr.is_empty(),
        "`huitong {}` printed {line:?}",
        args.join(" ")
    );
    (child, format!("http://{addr}"))
}

fn stop_sandbox(mut child: std::process::Child) {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(child.wait().unwrap().success());
}

const VENDORS: [&str; 3] = ["Feishu", "DingTalk", "WeCom"];

/// Runs each call as curl would send it (`-d`: `application/x-www-form-urlencoded`) against
/// `base`, skipping the other vendors' (their comment starts with `Vendor:`), and checks its
/// documented status (`→ NNN`, else any 2xx) and its effect on `/_sandbox/org`. The calls run.
async fn run_console_calls(
    what: &str,
    calls: &[ConsoleCall],
    base: &str,
    vendor: &str,
) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut ran = Vec::new();
    for c in calls {
        if VENDORS
            .iter()
            .any(|v| *v != vendor && c.comment.starts_with(&format!("{v}:")))
        {
            continue;
        }
        let label = format!("{what}: {} {} ({vendor})", c.method, c.path);
        let mut req = client.request(c.method.parse().unwrap(), format!("{base}{}", c.path));
        if let Some(b) = &c.body {
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(b.clone());
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let reply = r.text().await.unwrap();
        match c.comment.split('→').nth(1) {
            Some(doc) => {
                let want: u16 = doc.trim()[..3].parse().unwrap();
                assert_eq!(status, want, "{label}: {reply}");
            }
            None => assert!((200..300).contains(&status), "{label}: {status} {reply}"),
        }
        // The org as the call left it.
        let segs: Vec<&str> = c.path.trim_start_matches('/').split('/').collect();
        if let ["_sandbox", "org", kind, rest @ ..] = segs.as_slice() {
            let org: serde_json::Value = client
                .get(format!("{base}/_sandbox/org"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let body: serde_json::Value = c
                .body
                .as_deref()
                .map(|b| serde_json::from_str(b).unwrap())
                .unwrap_or_default();
            let key = rest.first().copied().or(body["key"].as_str()).unwrap();
            let entry = org[*kind]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["key"] == key);
            if c.method == "DELETE" {
                assert!(entry.is_none(), "{label}: {key} is still there");
            } else {
                let entry = entry.unwrap_or_else(|| panic!("{label}: no {key} in {org}"));
                for (field, value) in body.as_object().unwrap() {
                    assert_eq!(&entry[field], value, "{label}: {field} of {entry}");
                }
            }
        }
        ran.push(format!("{} {}", c.method, c.path));
    }
    ran
}

/// `METHOD /_sandbox/…` with the keys in paths as `{key}`.
fn endpoint(method: &str, path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let mut segs: Vec<&str> = path.split('/').collect();
    if segs.len() == 5 && segs[2] == "org" {
        segs[4] = "{key}";
    }
    format!("{method} {}", segs.join("/"))
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_console_examples_in_the_docs_work_as_pasted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let reference = std::fs::read_to_string(root.join("connectors/README.md")).unwrap();
    let contract = reference
        .split("## The sandbox contract")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    let reference: Vec<ConsoleCall> = sh_blocks(contract)
        .iter()
        .flat_map(|b| console_script(b).calls)
        .collect();
    let documented: std::collections::BTreeSet<String> = reference
        .iter()
        .map(|c| endpoint(&c.method, &c.path))
        .collect();
    assert!(documented.len() >= 16, "{documented:?}");

    // `huitong sandbox --help` lists the same endpoints.
    let help = huitong(&root).args(["sandbox", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let listed: std::collections::BTreeSet<String> = help
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [m @ ("GET" | "POST" | "PATCH" | "DELETE"), p, ..]
                    if p.starts_with("/_sandbox/") =>
                {
                    Some(format!("{m} {p}"))
                }
                _ => None,
            }
        })
        .collect();
    assert_eq!(listed, documented, "`huitong sandbox --help`:\n{help}");

    // Every example of the reference, on every vendor's sandbox.
    let org = "tests/fixtures/small-org.json".to_owned();
    for (vendor, args) in [
        (
            "Feishu",
            vec!["feishu", "--app-id", "cli_demo", "--app-secret", "s"],
        ),
        (
            "DingTalk",
            vec!["dingtalk", "--app-key", "ding_demo", "--app-secret", "s"],
        ),
        (
            "WeCom",
            vec![
                "wecom",
                "--corp-id",
                "ww1",
                "--corp-secret",
                "s",
                "--agent-id",
                "1000002",
            ],
        ),
    ] {
        let mut launch: Vec<String> = ["sandbox", "--listen", "127.0.0.1:9001", "--org", &org]
            .map(String::from)
            .to_vec();
        launch.splice(1..1, args.iter().map(|a| a.to_string()));
        let (child, base) = start_sandbox(&launch);
        let ran = run_console_calls("connectors/README.md", &reference, &base, vendor).await;
        stop_sandbox(child);
        assert!(ran.len() >= 12, "{vendor}: {ran:?}");
    }

    // The top-level README's and the help's example: the sandbox they start, then their calls.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let readme = sh_blocks(&readme)
        .into_iter()
        .map(|b| console_script(&b))
        .find(|s| !s.calls.is_empty())
        .expect("README.md: a console example");
    let help = console_script(help.split("Example:").nth(1).unwrap_or_default());
    for (what, script) in [("README.md", readme), ("huitong sandbox --help", help)] {
        let launch = script
            .launch
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no `huitong sandbox …` line"));
        let (child, base) = start_sandbox(launch);
        // A token taken before the calls.
        let client = reqwest::Client::new();
        let token: serde_json::Value = client
            .get(format!(
                "{base}/cgi-bin/gettoken?corpid=ww1&corpsecret=sandbox-secret"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ran = run_console_calls(what, &script.calls, &base, "WeCom").await;
        if ran.iter().any(|c| c == "POST /_sandbox/tokens/expire") {
            let t = token["access_token"].as_str().unwrap_or_default();
            let after: serde_json::Value = client
                .get(format!(
                    "{base}/cgi-bin/user/get?access_token={t}&userid=u0"
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(after["errcode"], 42001, "{what}: {token} then {after}");
        }
        stop_sandbox(child);
        if what == "README.md" {
            for want in [
                "POST /_sandbox/org/users",
                "PATCH /_sandbox/org/users/hire-1",
                "DELETE /_sandbox/org/users/hire-1",
                "POST /_sandbox/tokens/expire",
            ] {
                assert!(ran.iter().any(|c| c == want), "{what}: {want} in {ran:?}");
            }
        } else {
            assert_eq!(ran, ["POST /_sandbox/org/users"], "{what}");
        }
    }
}
