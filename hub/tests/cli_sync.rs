//! `huitong sync plan|apply` as an admin runs them, against vendor sandboxes —
//! including `kill -9` and Ctrl-C in the middle of an apply.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::sandbox::{FaultSpec, Running};

const BIN: &str = env!("CARGO_BIN_EXE_huitong");

fn fixture(name: &str) -> OrgFixture {
    OrgFixture::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn http_get(base: &str, path: &str) -> serde_json::Value {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap()
}

struct Env {
    /// The Feishu and DingTalk sandboxes, serving on `_rt` (declared first: they stop before
    /// the runtime goes).
    _sandboxes: [Running; 2],
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    config: PathBuf,
    dingtalk: String,
}

/// A Feishu HQ with the 300-person fixture and an empty DingTalk whose API answers slowly.
fn setup(slow: &str) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let [feishu, dingtalk] = rt.block_on(async {
        let mut o = huitong_connectors::feishu::sandbox::SandboxOptions::new(fixture("medium-org.json"), "cli_hq", "s1");
        o.rate_limits = false;
        let feishu = Running::start(o).await.expect("the Feishu sandbox starts");
        let empty: OrgFixture = serde_json::from_value(serde_json::json!({
            "departments": [{"key": "root", "name": "子公司", "parent": null, "order": 0, "leaders": []}],
            "users": []
        }))
        .unwrap();
        let mut o = huitong_connectors::dingtalk::sandbox::SandboxOptions::new(empty, "dingsub", "s2");
        o.rate_limits = false;
        o.faults = FaultSpec::parse(slow).unwrap();
        let dingtalk = Running::start(o).await.expect("the DingTalk sandbox starts");
        [feishu, dingtalk]
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("huitong.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n\
             [connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_hq\"\napp_secret_env = \"HQ_SECRET\"\nbase_url = \"{feishu}\"\n\
             [connectors.sub]\nkind = \"dingtalk\"\napp_key = \"dingsub\"\napp_secret_env = \"SUB_SECRET\"\nbase_url = \"{dingtalk}\"\n\
             [routes.org]\nsource = \"hq\"\ntargets = [\"sub\"]\n",
            db = dir.path().join("data/huitong.db").display(),
            feishu = feishu.base,
            dingtalk = dingtalk.base,
        ),
    )
    .unwrap();
    Env {
        dingtalk: dingtalk.base.clone(),
        _sandboxes: [feishu, dingtalk],
        _rt: rt,
        dir,
        config,
    }
}

fn huitong(env: &Env, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(env.dir.path())
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .env("HQ_SECRET", "s1")
        .env("SUB_SECRET", "s2")
        .env_remove("HUITONG_DATABASE_URL")
        .env_remove("HUITONG_QUEUE_URL");
    c
}

/// The ends of a command's stderr and stdout (a plan's table can be hundreds of lines long;
/// the error is at the end).
fn tails(o: &std::process::Output) -> String {
    let tail = |b: &[u8]| {
        let text = String::from_utf8_lossy(b);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    format!(
        "{}\n--- stderr (end):\n{}\n--- stdout (end):\n{}",
        o.status,
        tail(&o.stderr),
        tail(&o.stdout)
    )
}

fn user_count(env: &Env) -> (usize, usize) {
    let org = http_get(&env.dingtalk, "/_sandbox/org");
    let users = org["users"].as_array().cloned().unwrap_or_default();
    let mut nos: Vec<String> = users
        .iter()
        .filter_map(|u| u["employee_no"].as_str().map(str::to_owned))
        .collect();
    let total = nos.len();
    nos.sort();
    nos.dedup();
    (total, nos.len())
}

/// The DingTalk user ids of the people in the DingTalk sandbox.
fn dingtalk_people(env: &Env) -> Vec<String> {
    let org = http_get(&env.dingtalk, "/_sandbox/org");
    org["users"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|u| u["dingtalk"]["userid"].as_str().map(str::to_owned))
        .collect()
}

/// The DingTalk user ids huitong has linked in the target `sub` (its xrefs), read from the
/// CLI's database while the CLI may still be writing to it; `None` before the CLI made it.
fn linked_people(
    env: &Env,
    store: &mut Option<huitong::store::SqliteStore>,
) -> Option<std::collections::HashSet<String>> {
    use huitong::store::Store;
    let db = env.dir.path().join("data/huitong.db");
    if !db.exists() {
        return None;
    }
    env._rt.block_on(async {
        if store.is_none() {
            // No migrations: the CLI made the schema; until it has, there is nothing to read.
            *store = huitong::store::SqliteStore::connect(&format!("sqlite://{}", db.display()), 1)
                .await
                .ok();
        }
        let ids = store
            .as_ref()?
            .xref_ids_in_system(huitong::model::Entity::Person, "sub")
            .await
            .ok()?;
        Some(ids.into_iter().map(|(external, _)| external).collect())
    })
}

/// People in DingTalk huitong has not linked: read DingTalk first, then the links (a link is
/// only ever recorded after its person exists, so whoever is missing was unlinked at that read).
fn unlinked_people(
    env: &Env,
    store: &mut Option<huitong::store::SqliteStore>,
) -> Option<(usize, Vec<String>)> {
    let people = dingtalk_people(env);
    let linked = linked_people(env, store)?;
    let unlinked = people
        .iter()
        .filter(|p| !linked.contains(*p))
        .cloned()
        .collect();
    Some((people.len(), unlinked))
}

#[test]
fn kill_9_during_apply_then_apply_again_finishes_without_duplicates() {
    // Every call answers after 15 ms; one in 50 is carried out at once and its answer held back
    // 2 s: the person exists in DingTalk while huitong has not yet recorded the link to them.
    let env = setup("slow=100%@15ms,late=2%@2s,seed=7");
    let plan = huitong(&env, &["sync", "plan", "org", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let steps = plan["targets"][0]["steps"].as_array().unwrap().len();
    assert!(steps > 300, "{steps} steps");
    // DingTalk has no disabled state: only the fixture's active people are created there.
    let active = fixture("medium-org.json")
        .users
        .iter()
        .filter(|u| u.active)
        .count();
    assert!(active > 250 && active < 300, "{active}");

    let mut child = huitong(&env, &["sync", "apply", "org"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once part of the people exist in the target and one of them has stayed unlinked for
    // 300 ms: far longer than a write's reply takes to come back and be recorded, so that
    // person's reply is being held back (2 s) — huitong is between the vendor's write and the
    // link it records on the reply.
    let mut store = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let held = loop {
        assert!(Instant::now() < deadline, "apply made no progress");
        if let Some((created, unlinked)) = unlinked_people(&env, &mut store)
            && created >= 20
            && !unlinked.is_empty()
        {
            std::thread::sleep(Duration::from_millis(300));
            let linked = linked_people(&env, &mut store).unwrap_or_default();
            if let Some(p) = unlinked.into_iter().find(|p| !linked.contains(p)) {
                break p;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(store);
    let (partial, _) = user_count(&env);
    let linked = linked_people(&env, &mut None).unwrap();
    println!(
        "killed with {partial} of {active} people in DingTalk, {} linked, {held} among the unlinked",
        linked.len()
    );
    assert!(
        dingtalk_people(&env).contains(&held) && !linked.contains(&held),
        "killed between the vendor's write of {held} and its link"
    );
    assert!(
        partial < active,
        "the apply was interrupted ({partial} of {active})"
    );
    let killed = runs(&env);
    assert_eq!(killed.len(), 1);
    assert_ne!(
        killed[0].status,
        huitong::store::RunStatus::Succeeded,
        "the killed run did not finish"
    );

    let again = huitong(&env, &["sync", "apply", "org"]).output().unwrap();
    assert!(again.status.success(), "{}", tails(&again));
    let (total, distinct) = user_count(&env);
    assert_eq!(
        (total, distinct),
        (active, active),
        "every person once, none twice"
    );
    let linked = linked_people(&env, &mut None).unwrap();
    assert_eq!(linked.len(), active, "every person linked");
    assert!(
        linked.contains(&held),
        "{held}, written by the killed run, linked"
    );
    let after = runs(&env);
    assert_eq!(after[0].status, huitong::store::RunStatus::Succeeded);

    let last = huitong(&env, &["sync", "plan", "org", "--output", "json"])
        .output()
        .unwrap();
    let last: serde_json::Value = serde_json::from_slice(&last.stdout).unwrap();
    assert_eq!(
        last["targets"][0]["steps"].as_array().map(Vec::len),
        Some(0),
        "{last:#}"
    );
}

/// The sync runs in the CLI's database, newest first.
fn runs(env: &Env) -> Vec<huitong::store::SyncRun> {
    env._rt.block_on(async {
        let config = huitong::config::load(&huitong::config::Sources {
            file: Some(env.config.clone()),
            env: vec![
                ("HQ_SECRET".into(), "s1".into()),
                ("SUB_SECRET".into(), "s2".into()),
            ],
            overrides: vec![],
        })
        .unwrap();
        let store = huitong::store::open(&config.database).await.unwrap();
        store.list_runs(Some("org"), 10).await.unwrap()
    })
}

#[test]
fn ctrl_c_stops_an_apply_and_the_next_apply_finishes_it() {
    let env = setup("slow=100%@15ms");
    let child = huitong(&env, &["sync", "apply", "org"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while user_count(&env).0 < 20 {
        assert!(Instant::now() < deadline, "apply made no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let int = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(int.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let (partial, _) = user_count(&env);
    assert!(partial < 250, "stopped early ({partial} users written)");
    let stopped = runs(&env);
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].status, huitong::store::RunStatus::Interrupted);

    let again = huitong(&env, &["sync", "apply", "org"]).output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let active = fixture("medium-org.json")
        .users
        .iter()
        .filter(|u| u.active)
        .count();
    assert_eq!(user_count(&env), (active, active), "every person once");
    let after = runs(&env);
    assert_eq!(after[0].status, huitong::store::RunStatus::Succeeded);
    assert_eq!(after[1].status, huitong::store::RunStatus::Interrupted);

    // Both runs, as an admin sees them.
    let listed = huitong(&env, &["sync", "runs", "--output", "json"])
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let statuses: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "interrupted"]);
    let kinds: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["apply", "apply"], "runs of `sync apply`");
    let table = huitong(&env, &["sync", "runs", "--route", "org"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&after[0].id) && table.contains(&after[1].id),
        "{table}"
    );
    let one = huitong(&env, &["sync", "run", &after[0].id])
        .output()
        .unwrap();
    let one = String::from_utf8_lossy(&one.stdout);
    assert!(one.contains("status   succeeded"), "{one}");
    assert!(
        one.contains(&format!("create {}", after[0].counts["create"])),
        "{one}"
    );
    let missing = huitong(&env, &["sync", "run", "no-such-run"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no sync run"));
}
