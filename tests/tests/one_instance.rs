//! One connector instance per vendor app per process: two routes reading the same Feishu app
//! at once, their deliver consumers and the live path all share one limiter and one token
//! cache. Feishu's sandbox enforces the published contact limit (50/s, 1,000/min) and counts
//! what it refused; a second limiter for the same app would let about twice the limit through.

use std::time::Duration;

use huitong::app::App;
use huitong::sync::{self, RouteContext};
use huitong_tests::org::{
    console, empty_org, eventually, get, hub_listener, load_config, sandbox, temp_dir, until, user,
};
use reqwest::Method;
use serde_json::json;

const ENCRYPT_KEY: &str = "one-instance-encrypt-key";
const VTOKEN: &str = "one-instance-verification-token";
const TOKEN_CALL: &str = "POST /open-apis/auth/v3/tenant_access_token/internal";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routes_and_the_live_path_share_one_limiter_and_one_token() {
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let (hub_listener, hub) = hub_listener().await;

    // 100 departments: each route's read lists the members of every one, 200 list calls of
    // one API between them, four times the per-second limit.
    let org = huitong_connectors::fixture::generate(&huitong_connectors::fixture::GenOptions {
        users: 1000,
        departments: Some(100),
        seed: 11,
    });
    let mut o = huitong_connectors::feishu::sandbox::SandboxOptions::new(org, "cli_hq", "s1");
    o.enforce_rate_limits = true;
    o.encrypt_key = Some(ENCRYPT_KEY.to_owned().into());
    o.verification_token = Some(VTOKEN.to_owned().into());
    o.event_url = Some(format!("{hub}/callbacks/feishu/hq"));
    o.event_retry_delays = vec![Duration::from_millis(200), Duration::from_secs(1)];
    let feishu_sandbox = sandbox(o).await;
    let feishu = feishu_sandbox.base.clone();
    let mut wecom_sandboxes = Vec::new();
    for corp in ["wwa", "wwb"] {
        let mut o = huitong_connectors::wecom::sandbox::SandboxOptions::new(
            empty_org("工厂"),
            corp,
            "s2",
            1000002,
        );
        o.rate_limits = false;
        wecom_sandboxes.push(sandbox(o).await);
    }
    let wecoms: Vec<&str> = wecom_sandboxes.iter().map(|s| s.base.as_str()).collect();

    let dir = temp_dir("huitong-one-instance");
    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n\
             [connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_hq\"\napp_secret_env = \"HQ\"\nbase_url = \"{feishu}\"\n\
             encrypt_key_env = \"HQ_KEY\"\nverification_token_env = \"HQ_TOKEN\"\n\
             [connectors.a]\nkind = \"wecom\"\ncorp_id = \"wwa\"\nagent_id = 1000002\ncorp_secret_env = \"W\"\nbase_url = \"{a}\"\n\
             [connectors.b]\nkind = \"wecom\"\ncorp_id = \"wwb\"\nagent_id = 1000002\ncorp_secret_env = \"W\"\nbase_url = \"{b}\"\n\
             [routes.to_a]\nsource = \"hq\"\ntargets = [\"a\"]\n\
             [routes.to_b]\nsource = \"hq\"\ntargets = [\"b\"]\n",
            db = dir.join("huitong.db").display(),
            a = wecoms[0],
            b = wecoms[1],
        ),
    )
    .unwrap();
    let env = [
        ("HQ", "s1"),
        ("W", "s2"),
        ("HQ_KEY", ENCRYPT_KEY),
        ("HQ_TOKEN", VTOKEN),
    ];
    let config = load_config(file, &env);

    // The recorder first: the connectors count from their first call.
    huitong::telemetry::metrics();
    let app = App::start(config.clone()).await.unwrap();
    let store = app.store.clone();
    let queue = app.queue.clone();
    let _deliveries = huitong::jobs::start_deliveries(&config, store.clone(), &*queue)
        .await
        .unwrap();
    let _ingress = huitong::jobs::start_ingress(&config, store.clone(), queue.clone())
        .await
        .unwrap();
    tokio::spawn(app.serve(hub_listener, until(rx.clone())));

    // Both routes read the whole Feishu org at the same time, then apply.
    let sync_route = async |route: &str| {
        let ctx = RouteContext::new(&config, route).unwrap();
        let plan = sync::plan(&ctx, &*store).await.unwrap();
        sync::apply(&ctx, &plan, &*store, &*queue, false, &|_, _| {})
            .await
            .unwrap();
    };
    tokio::join!(sync_route("to_a"), sync_route("to_b"));
    for base in &wecoms {
        let org = get(&format!("{base}/_sandbox/org")).await;
        assert!(user(&org, "E000007").is_some(), "{base}: synced");
    }

    // A live change: the event's record is read back through the same connector.
    console(
        Method::PATCH,
        &format!("{feishu}/_sandbox/org/users/u7"),
        json!({"title": "一次性测试"}),
    )
    .await;
    for base in &wecoms {
        eventually("the live change arrives", async || {
            user(&get(&format!("{base}/_sandbox/org")).await, "E000007")
                .is_some_and(|u| u["title"] == "一次性测试")
        })
        .await;
    }

    let calls = get(&format!("{feishu}/_sandbox/calls")).await;
    assert_eq!(
        calls["calls"][TOKEN_CALL], 1,
        "one tenant token for every user of the app: {calls}"
    );
    let refused: u64 = calls["rate_limited"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(refused, 0, "no call over the published limit: {calls}");
    let busiest = calls["windows"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|w| w["peak_1s"].as_u64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    assert!(busiest <= 50, "at most 50 calls in any second: {busiest}");
    assert!(
        calls["total"].as_u64().unwrap_or(0) > 200,
        "both routes read the whole org (enough calls to exceed the limit twice over): {calls}"
    );

    // The connector telemetry says the same, from the hub's own /metrics.
    let metrics = reqwest::get(format!("{hub}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(
        value("huitong_connector_token_fetches_total{vendor=\"feishu\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        value("huitong_connector_calls_total{vendor=\"feishu\",api=\"contact\",class=\"ok\"}")
            .is_some_and(|n| n > 200.0),
        "{metrics}"
    );
    assert!(
        value("huitong_connector_rate_limit_waits_total{vendor=\"feishu\",api=\"contact\"}")
            .is_some_and(|n| n > 0.0),
        "the limiter held calls back: {metrics}"
    );
}
