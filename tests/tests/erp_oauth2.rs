//! The declared connector's OAuth2 client credentials against a real authorization server
//! (npm `oidc-provider`) guarding a REST service that checks every token by introspection
//! (tests/services/oauth2/server.mjs): one token for many calls, a refused token replaced once,
//! a wrong secret named clearly, and the secret never in an error.

use futures_util::StreamExt;
use huitong_connectors::declared::auth::Credentials;
use huitong_connectors::declared::{self, HttpConnector, ListOptions, Options};
use huitong_tests::erp::{OAuth2Options, OAuth2Service};
use secrecy::SecretString;
use serde_json::{Value, json};

const DEFINITION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/http/orders-api.yaml");

fn connector(s: &OAuth2Service, secret: &str) -> HttpConnector {
    let def = declared::resolve(DEFINITION).unwrap_or_else(|e| panic!("{e}"));
    HttpConnector::new(
        def,
        Options {
            name: "orders".into(),
            base_url: format!("{}/", s.api_url),
            credentials: Credentials {
                client_id: Some(s.client_id.clone()),
                client_secret: Some(SecretString::from(secret.to_owned())),
                token_url: Some(s.token_url.clone()),
                ..Credentials::default()
            },
            allow_hosts: vec!["127.0.0.1".into()],
            ..Options::default()
        },
    )
    .expect("connector")
}

async fn orders(c: &HttpConnector) -> Vec<Value> {
    c.list("order", ListOptions::default())
        .map(|r| r.expect("order"))
        .collect()
        .await
}

#[tokio::test]
async fn one_token_serves_many_calls_and_a_refused_token_is_replaced_once() {
    let Some(s) = OAuth2Service::start_with(OAuth2Options {
        ttl_secs: 600,
        orders: 5,
    })
    .await
    else {
        return;
    };
    let c = connector(&s, &s.client_secret);
    // Five orders, two a page: three list calls.
    let all = orders(&c).await;
    assert_eq!(all.len(), 5, "{all:?}");
    for o in &all {
        let id = c.id_of("order", o).unwrap();
        assert_eq!(c.get("order", &id).await.unwrap().as_ref(), Some(o));
    }
    let id = c
        .create("order", json!({"customer": "汇通 Trading", "amount": 12.5}))
        .await
        .expect("create");
    c.update("order", &id, json!({"status": "shipped"}))
        .await
        .expect("update");
    assert_eq!(
        c.get("order", &id).await.unwrap().unwrap()["status"],
        "shipped"
    );
    assert_eq!(c.get("order", "424242").await.unwrap(), None);
    let stats = s.stats().await;
    assert_eq!(stats["tokens_issued"], 1, "{stats}");
    assert_eq!(stats["unauthorized"], 0, "{stats}");
    assert!(stats["api_calls"].as_u64().unwrap() >= 12, "{stats}");
    assert_eq!(c.token_fetches(), 1);

    // The server revokes every token mid-run: the next call is refused once, a new token is
    // fetched, and the call goes through.
    assert_eq!(s.revoke_all().await, 1);
    assert_eq!(orders(&c).await.len(), 6);
    let stats = s.stats().await;
    assert_eq!(stats["tokens_issued"], 2, "{stats}");
    assert_eq!(stats["unauthorized"], 1, "{stats}");
    assert_eq!(c.token_fetches(), 2);
}

#[tokio::test]
async fn a_token_about_to_expire_is_refreshed_before_the_server_refuses_it() {
    let Some(s) = OAuth2Service::start(2).await else {
        return;
    };
    let c = connector(&s, &s.client_secret);
    assert_eq!(orders(&c).await.len(), 3);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(orders(&c).await.len(), 3);
    let stats = s.stats().await;
    assert_eq!(stats["tokens_issued"], 2, "{stats}");
    assert_eq!(
        stats["unauthorized"], 0,
        "refreshed ahead of expiry: {stats}"
    );
}

#[tokio::test]
async fn a_wrong_secret_is_a_clear_permanent_error_naming_the_connector_and_the_servers_answer() {
    let Some(s) = OAuth2Service::start(600).await else {
        return;
    };
    let c = connector(&s, "not-the-secret-at-all");
    let e = c.get("order", "1").await.expect_err("refused");
    let text = e.to_string();
    assert!(!e.is_transient(), "{text}");
    assert!(text.starts_with("orders: "), "{text}");
    assert!(
        text.contains("refused the client credentials: invalid_client"),
        "{text}"
    );
    assert!(text.contains(&s.token_url), "{text}");
    assert!(!text.contains("not-the-secret-at-all"), "{text}");
    let stats = s.stats().await;
    assert_eq!(stats["api_calls"], 0, "{stats}");
}

#[test]
fn connector_try_over_oauth2_logs_neither_the_secret_nor_a_token() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(s) = rt.block_on(OAuth2Service::start(600)) else {
        return;
    };
    let Some(bin) =
        huitong_tests::huitong_bin("connector_try_over_oauth2_logs_neither_the_secret_nor_a_token")
    else {
        return;
    };
    let dir = huitong_tests::org::temp_dir("huitong-oauth2-try");
    let config = dir.join("huitong.toml");
    std::fs::write(
        &config,
        format!(
            "[connectors.orders]\nkind = \"http\"\ndefinition = \"{DEFINITION}\"\nbase_url = \"{}/\"\n\
             client_id = \"{}\"\nclient_secret_env = \"ORDERS_SECRET\"\ntoken_url = \"{}\"\nallow_hosts = [\"127.0.0.1\"]\n",
            s.api_url, s.client_id, s.token_url
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["--log-level", "trace", "--config", config.to_str().unwrap()])
        .args(["connector", "try", "orders", "order", "--limit", "3"])
        .env("ORDERS_SECRET", &s.client_secret)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(stderr.len() > 100, "trace logging is on: {stderr}");
    for secret in [s.client_secret.as_str(), "Bearer ", "access_token"] {
        assert!(!stderr.contains(secret), "{secret:?} in the log:\n{stderr}");
        assert!(!stdout.contains(secret), "{secret:?} in the output");
    }
    let stats = rt.block_on(s.stats());
    assert_eq!(stats["tokens_issued"], 1, "{stats}");
    let _ = std::fs::remove_dir_all(dir);
}
