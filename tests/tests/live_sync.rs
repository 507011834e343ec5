//! Live changes end to end: an HR admin edits the org in Feishu's console (the
//! sandbox), Feishu calls huitong back (encrypted, signed), the event goes
//! through the ingress queue, and DingTalk and WeCom follow within seconds.

use std::time::Duration;

use huitong::app::App;
use huitong::sync::{self, RouteContext};
use huitong_tests::org::{
    calls_where, console, empty_org, eventually, fixture, get, hub_listener, load_config, sandbox,
    temp_dir, until, user,
};
use reqwest::Method;
use serde_json::json;

const ENCRYPT_KEY: &str = "live-test-encrypt-key";
const VTOKEN: &str = "live-test-verification-token";

async fn write_calls(base: &str) -> u64 {
    calls_where(base, |k| {
        k.starts_with("POST ")
            && !k.contains("token")
            && !k.contains("/get")
            && !k.contains("/list")
    })
    .await
}

/// Calls that list a whole department or org (a full read), as opposed to reading one record.
async fn list_calls(base: &str) -> u64 {
    calls_where(base, |k| {
        k.contains("find_by_department")
            || k.contains("/children")
            || k.contains("/list")
            || k.contains("listsub")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_renamed_moved_and_resigned_in_feishu_reaches_dingtalk_and_wecom() {
    let (stop, rx) = tokio::sync::watch::channel(false);
    // huitong's listener first: Feishu needs its callback address.
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
    let dingtalk_sandbox = sandbox(huitong_connectors::dingtalk::sandbox::SandboxOptions::new(
        empty_org("子公司"),
        "dingsub",
        "s2",
    ))
    .await;
    let dingtalk = dingtalk_sandbox.base.clone();
    let wecom_sandbox = sandbox(huitong_connectors::wecom::sandbox::SandboxOptions::new(
        empty_org("工厂"),
        "wwf",
        "s3",
        1000002,
    ))
    .await;
    let wecom = wecom_sandbox.base.clone();

    let dir = temp_dir("huitong-live");
    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n\
             [connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_hq\"\napp_secret_env = \"HQ\"\nbase_url = \"{feishu}\"\n\
             encrypt_key_env = \"HQ_KEY\"\nverification_token_env = \"HQ_TOKEN\"\n\
             [connectors.sub]\nkind = \"dingtalk\"\napp_key = \"dingsub\"\napp_secret_env = \"SUB\"\nbase_url = \"{dingtalk}\"\n\
             [connectors.factory]\nkind = \"wecom\"\ncorp_id = \"wwf\"\nagent_id = 1000002\ncorp_secret_env = \"FACTORY\"\nbase_url = \"{wecom}\"\n\
             [routes.org]\nsource = \"hq\"\ntargets = [\"sub\", \"factory\"]\n",
            db = dir.join("huitong.db").display()
        ),
    )
    .unwrap();
    let env = [
        ("HQ", "s1"),
        ("SUB", "s2"),
        ("FACTORY", "s3"),
        ("HQ_KEY", ENCRYPT_KEY),
        ("HQ_TOKEN", VTOKEN),
    ];
    let config = load_config(file, &env);

    let app = App::start(config.clone()).await.unwrap();
    let store = app.store.clone();
    let _deliveries = huitong::jobs::start_deliveries(&config, store.clone(), &*app.queue)
        .await
        .unwrap();
    // The first full sync, as an admin would run it.
    let ctx = RouteContext::new(&config, "org").unwrap();
    let plan = sync::plan(&ctx, &*store).await.unwrap();
    sync::apply(&ctx, &plan, &*store, &*app.queue, false, &|_, _| {})
        .await
        .unwrap();
    let ingress = huitong::jobs::start_ingress(&config, store.clone(), app.queue.clone())
        .await
        .unwrap();
    tokio::spawn(app.serve(hub_listener, until(rx.clone())));

    // Created in Feishu's console.
    console(Method::POST, &format!("{feishu}/_sandbox/org/users"), json!({"key": "u900", "name": "新同事", "en_name": "New Colleague", "email": "new.colleague@example.cn",
            "mobile": "13900000900", "employee_no": "E000900", "title": "工程师", "departments": ["d1"],
            "active": true, "gender": "female", "hired_at": "2026-11-30"})).await;
    for base in [&dingtalk, &wecom] {
        eventually("the new user arrives", async || {
            user(&get(&format!("{base}/_sandbox/org")).await, "E000900")
                .is_some_and(|u| u["name"] == "新同事")
        })
        .await;
    }

    let kind_of_last_run = async || {
        store.list_runs(Some("org"), 1).await.unwrap()[0]
            .kind
            .clone()
    };
    assert_eq!(
        kind_of_last_run().await,
        "reconcile",
        "a new person: the whole route is reconciled (match rules)"
    );

    // Renamed and moved to another department: delivered record by record.
    let lists_before = (
        list_calls(&feishu).await,
        list_calls(&dingtalk).await,
        list_calls(&wecom).await,
    );
    console(
        Method::PATCH,
        &format!("{feishu}/_sandbox/org/users/u900"),
        json!({"name": "新同事改名", "departments": ["d2"]}),
    )
    .await;
    for base in [&dingtalk, &wecom] {
        eventually("rename and move arrive", async || {
            let org = get(&format!("{base}/_sandbox/org")).await;
            let dept_name = |key: &str| {
                org["departments"]
                    .as_array()
                    .and_then(|a| a.iter().find(|d| d["key"] == key))
                    .and_then(|d| d["name"].as_str())
                    .map(str::to_owned)
            };
            user(&org, "E000900").is_some_and(|u| {
                u["name"] == "新同事改名"
                    && u["departments"].as_array().is_some_and(|d| {
                        d.len() == 1
                            && d[0].as_str().and_then(dept_name).as_deref() == Some("售后部")
                    })
            })
        })
        .await;
    }
    assert_eq!(kind_of_last_run().await, "live");
    assert_eq!(
        (
            list_calls(&feishu).await,
            list_calls(&dingtalk).await,
            list_calls(&wecom).await
        ),
        lists_before,
        "no side was read completely for an in-place change"
    );

    // Resigned: disabled in WeCom, removed from DingTalk (no disabled state there).
    console(
        Method::PATCH,
        &format!("{feishu}/_sandbox/org/users/u900"),
        json!({"active": false}),
    )
    .await;
    eventually("disabled in WeCom", async || {
        user(&get(&format!("{wecom}/_sandbox/org")).await, "E000900")
            .is_some_and(|u| u["active"] == false)
    })
    .await;
    eventually("removed from DingTalk", async || {
        user(&get(&format!("{dingtalk}/_sandbox/org")).await, "E000900").is_none()
    })
    .await;
    assert_eq!(
        kind_of_last_run().await,
        "live",
        "a leaver (1 of 21 people, within the 5 % safety threshold): record by record too"
    );

    // Settled: no further writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = (write_calls(&dingtalk).await, write_calls(&wecom).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        (write_calls(&dingtalk).await, write_calls(&wecom).await),
        settled
    );

    ingress.shutdown().await;
    let _ = stop.send(true);
    let _ = std::fs::remove_dir_all(dir);
}
