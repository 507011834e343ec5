//! Echo suppression on a live two-way pair: Feishu (HQ) ↔ DingTalk (subsidiary), both calling
//! huitong back. A change made in Feishu reaches DingTalk; the event DingTalk then emits about
//! huitong's own write is recognised from the written hash in the xref table and dropped — the
//! way back never reconciles, and a fresh handler (as after a restart) drops it too. A change
//! made in DingTalk itself is not an echo and travels back to Feishu.
//!
//! What is dropped as an echo is counted, not inferred from quiet: each step waits until
//! `huitong_echo_suppressed_total{connector=…}` of both sides reads exactly the echoes that
//! step makes (an event about a record already in sync plans nothing either, so "no write
//! followed" alone would hold with suppression off).

use std::time::Duration;

use huitong::app::App;
use huitong::live::IngressHandler;
use huitong::queue::{Envelope, Handler, Outcome, Task};
use huitong::sync::{self, RouteContext};
use huitong_tests::org::{
    calls_where, console, empty_org, eventually, fixture, get, hub_listener, load_config, sandbox,
    temp_dir, until, user,
};
use reqwest::Method;
use serde_json::json;

const ENCRYPT_KEY: &str = "echo-test-encrypt-key";
const VTOKEN: &str = "echo-test-verification-token";
const DT_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const DT_TOKEN: &str = "echo-dingtalk-token";

/// Write calls a sandbox served (POST/PATCH/PUT/DELETE, token fetches aside).
async fn writes(base: &str) -> u64 {
    calls_where(base, |k| {
        ["POST ", "PATCH ", "PUT ", "DELETE "]
            .iter()
            .any(|p| k.starts_with(p))
            && !k.contains("token")
            && !k.contains("/get")
            && !k.contains("/list")
            && !k.contains("find_by")
    })
    .await
}

/// `huitong_echo_suppressed_total{connector=…}` as the hub's recorder has it now (0 before the
/// first echo of that connector).
fn echoes(connector: &str) -> u64 {
    let text = huitong::telemetry::metrics().render();
    let series = format!("huitong_echo_suppressed_total{{connector=\"{connector}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

/// Waits until both sides' echo counters read `(hq, sub)`, and fails if either goes past it.
async fn echoes_reach(what: &str, hq: u64, sub: u64) {
    let mut now = (0, 0);
    for _ in 0..300 {
        now = (echoes("hq"), echoes("sub"));
        if now.0 >= hq && now.1 >= sub {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(now, (hq, sub), "{what}: echoes (hq, sub)");
}

/// The events a sandbox emitted, once every one of them was delivered to huitong.
async fn delivered_events(base: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    eventually(&format!("{base} delivered its events"), async || {
        let events = get(&format!("{base}/_sandbox/events")).await;
        out = events["events"].as_array().unwrap().clone();
        out.iter().all(|e| e["delivery"] == "delivered")
    })
    .await;
    out
}

/// Echoes counted for Feishu when the way back (DingTalk → Feishu) wrote there. By design 1 —
/// Feishu's event about huitong's write is that write coming back: one echo. (It was 0 while
/// the written hash was taken over the DingTalk-sourced record alone, which lacks fields Feishu
/// carries; it is now taken over what Feishu holds after the write — its record with the
/// changes — so the read-back matches.)
const FEISHU_ECHOES_OF_THE_WRITE_BACK: u64 = 1;

async fn runs_of(store: &dyn huitong::store::Store, route: &str) -> usize {
    store.list_runs(Some(route), 1000).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_way_pair_drops_the_echo_of_its_own_writes_even_after_a_restart() {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let (hub_listener, hub) = hub_listener().await;

    let mut o = huitong_connectors::feishu::sandbox::SandboxOptions::new(
        fixture("small-org.json"),
        "cli_hq",
        "s1",
    );
    o.rate_limits = false;
    o.encrypt_key = Some(ENCRYPT_KEY.to_owned().into());
    o.verification_token = Some(VTOKEN.to_owned().into());
    o.event_url = Some(format!("{hub}/callbacks/feishu/hq"));
    o.event_retry_delays = vec![Duration::from_millis(200), Duration::from_secs(1)];
    let feishu_sandbox = sandbox(o).await;
    let feishu = feishu_sandbox.base.clone();
    let mut o = huitong_connectors::dingtalk::sandbox::SandboxOptions::new(
        empty_org("子公司"),
        "dingsub",
        "s2",
    );
    o.aes_key = Some(DT_AES_KEY.to_owned().into());
    o.token = Some(DT_TOKEN.to_owned().into());
    o.event_url = Some(format!("{hub}/callbacks/dingtalk/sub"));
    o.event_retry_delays = vec![Duration::from_millis(200), Duration::from_secs(1)];
    let dingtalk_sandbox = sandbox(o).await;
    let dingtalk = dingtalk_sandbox.base.clone();

    let dir = temp_dir("huitong-echo");
    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n\
             [connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_hq\"\napp_secret_env = \"HQ\"\nbase_url = \"{feishu}\"\n\
             encrypt_key_env = \"HQ_KEY\"\nverification_token_env = \"HQ_TOKEN\"\n\
             [connectors.sub]\nkind = \"dingtalk\"\napp_key = \"dingsub\"\napp_secret_env = \"SUB\"\nbase_url = \"{dingtalk}\"\n\
             aes_key_env = \"SUB_AES\"\ntoken_env = \"SUB_TOKEN\"\n\
             [routes.org]\nsource = \"hq\"\ntargets = [\"sub\"]\n\
             [routes.back]\nsource = \"sub\"\ntargets = [\"hq\"]\n",
            db = dir.join("huitong.db").display()
        ),
    )
    .unwrap();
    let env = [
        ("HQ", "s1"),
        ("SUB", "s2"),
        ("HQ_KEY", ENCRYPT_KEY),
        ("HQ_TOKEN", VTOKEN),
        ("SUB_AES", DT_AES_KEY),
        ("SUB_TOKEN", DT_TOKEN),
    ];
    let config = load_config(file, &env);

    let app = App::start(config.clone()).await.unwrap();
    let store = app.store.clone();
    let queue = app.queue.clone();
    let _deliveries = huitong::jobs::start_deliveries(&config, store.clone(), &*app.queue)
        .await
        .unwrap();
    let ctx = RouteContext::new(&config, "org").unwrap();
    let plan = sync::plan(&ctx, &*store).await.unwrap();
    let report = sync::apply(&ctx, &plan, &*store, &*app.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    let ingress = huitong::jobs::start_ingress(&config, store.clone(), app.queue.clone())
        .await
        .unwrap();
    tokio::spawn(app.serve(hub_listener, until(rx.clone())));
    // The first apply's own events (DingTalk's org_dept_create, user_add_org, org_dept_modify)
    // are echoes too, and Feishu, not written, has none — except the user_add_org of each
    // department's leader: by the time it is handled, the department write that followed made
    // that person a leader, and DingTalk's read-back of the user carries the leadership the
    // hash huitong wrote for the user does not, so it is taken for a change (which then plans
    // nothing). Every other event of the first apply is dropped as an echo, none is counted twice.
    assert_eq!((echoes("hq"), echoes("sub")), (0, 0));
    let first_events = delivered_events(&dingtalk).await;
    let dt_events_before = first_events.len();
    assert!(
        dt_events_before > 0,
        "the first apply made DingTalk emit events"
    );
    let dt_org = get(&format!("{dingtalk}/_sandbox/org")).await;
    let leaders: Vec<&str> = dt_org["departments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["leaders"].as_array().unwrap().iter())
        .map(|l| l.as_str().unwrap())
        .collect();
    let leaders_added = first_events
        .iter()
        .filter(|e| {
            e["event"]["EventType"] == "user_add_org"
                && e["event"]["userId"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|id| leaders.contains(&id.as_str().unwrap())))
        })
        .count();
    assert_eq!(
        leaders_added, 2,
        "the fixture's two non-root departments have a leader each"
    );
    let sub_echoes = (dt_events_before - leaders_added) as u64;
    echoes_reach(
        "every other event about the first apply dropped as an echo",
        0,
        sub_echoes,
    )
    .await;
    let back_runs = runs_of(&*store, "back").await;
    let feishu_events_before = delivered_events(&feishu).await.len();

    // Renamed in Feishu: reaches DingTalk, whose event about it is an echo.
    console(
        Method::PATCH,
        &format!("{feishu}/_sandbox/org/users/u3"),
        json!({"name": "改名的同事"}),
    )
    .await;
    let no = fixture("small-org.json")
        .users
        .iter()
        .find(|u| u.key == "u3")
        .unwrap()
        .employee_no
        .clone();
    eventually("the rename arrives in DingTalk", async || {
        user(&get(&format!("{dingtalk}/_sandbox/org")).await, &no)
            .is_some_and(|u| u["name"] == "改名的同事")
    })
    .await;
    let feishu_writes = writes(&feishu).await;
    // DingTalk's one event about our write is dropped as an echo (and Feishu's console edit
    // is none).
    echoes_reach(
        "DingTalk's event about the rename dropped",
        0,
        sub_echoes + 1,
    )
    .await;
    let sub_echoes = sub_echoes + 1;
    assert_eq!(
        delivered_events(&dingtalk).await.len(),
        dt_events_before + 1,
        "one DingTalk event about the rename"
    );
    assert_eq!(
        runs_of(&*store, "back").await,
        back_runs,
        "the echo never reconciled the way back"
    );
    assert_eq!(writes(&feishu).await, feishu_writes, "nothing written back");

    // After a restart (a handler with nothing in memory) the same event is still an echo.
    let events = get(&format!("{dingtalk}/_sandbox/events")).await;
    let echo = events["events"].as_array().unwrap()[dt_events_before]["event"].clone();
    let envelope = Envelope::new(
        "sub",
        Task::IngressV1 {
            connector: "sub".into(),
            event_type: echo["EventType"].as_str().unwrap().to_owned(),
            event_id: None,
            payload: echo.clone(),
            received_at_ms: huitong::store::now_ms(),
        },
    );
    let fresh = IngressHandler::new(config.clone(), store.clone(), queue.clone());
    assert!(matches!(fresh.handle(&envelope).await, Outcome::Ok));
    assert_eq!(fresh.echoes.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        (echoes("hq"), echoes("sub")),
        (0, sub_echoes + 1),
        "the fresh handler counted its echo"
    );
    let sub_echoes = sub_echoes + 1;
    assert_eq!(runs_of(&*store, "back").await, back_runs);

    // A change made in DingTalk is no echo: it travels back to Feishu.
    let dt_key = user(&get(&format!("{dingtalk}/_sandbox/org")).await, &no).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let dt_events_before = delivered_events(&dingtalk).await.len();
    console(
        Method::PATCH,
        &format!("{dingtalk}/_sandbox/org/users/{dt_key}"),
        json!({"title": "钉钉里改的职位"}),
    )
    .await;
    eventually("the DingTalk edit reaches Feishu", async || {
        user(&get(&format!("{feishu}/_sandbox/org")).await, &no)
            .is_some_and(|u| u["title"] == "钉钉里改的职位")
    })
    .await;
    assert!(runs_of(&*store, "back").await > back_runs);
    // …and Feishu's event about that write comes back (DingTalk's console edit was no echo):
    // both sides settle once the ingress queue has handled everything.
    let settled = (writes(&feishu).await, writes(&dingtalk).await);
    assert_eq!(
        delivered_events(&feishu).await.len(),
        feishu_events_before + 2,
        "Feishu emitted one event for the console rename and one for our write"
    );
    eventually("the ingress queue handled every event", async || {
        queue.lag(huitong::queue::INGRESS).await.unwrap() == 0
    })
    .await;
    echoes_reach(
        "Feishu's event about our write handled",
        FEISHU_ECHOES_OF_THE_WRITE_BACK,
        sub_echoes,
    )
    .await;
    assert_eq!(
        delivered_events(&dingtalk).await.len(),
        dt_events_before + 1,
        "DingTalk emitted only its console edit's event: nothing was written back to it"
    );
    assert_eq!(
        (echoes("hq"), echoes("sub")),
        (FEISHU_ECHOES_OF_THE_WRITE_BACK, sub_echoes)
    );
    assert_eq!((writes(&feishu).await, writes(&dingtalk).await), settled);

    ingress.shutdown().await;
    let _ = stop.send(true);
    let _ = std::fs::remove_dir_all(dir);
}
