//! huitong's long-connection client against the sandbox's endpoint and WebSocket.

use std::path::PathBuf;
use std::time::Duration;

use huitong_connectors::ErrorClass;
use huitong_connectors::capability::PushChannel;
use huitong_connectors::feishu::FeishuConfig;
use huitong_connectors::feishu::sandbox::{SandboxOptions, serve};
use huitong_connectors::feishu::ws::LongConnection;
use huitong_connectors::fixture::OrgFixture;
use serde_json::{Value, json};

async fn start() -> (String, tokio::sync::oneshot::Sender<()>) {
    let org = OrgFixture::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/small-org.json"),
    )
    .unwrap();
    let opts = SandboxOptions::new(org, "cli_ws", "ws-secret");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, opts, async move {
            let _ = rx.await;
        })
        .await
        .unwrap()
    });
    (base, tx)
}

async fn calls(base: &str) -> Value {
    reqwest::get(format!("{base}/_sandbox/calls"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the sandbox's call counters until `key` reaches `n` (bounded, so a bug fails instead of hanging).
async fn wait_for(base: &str, key: &str, n: u64) {
    for _ in 0..2000 {
        if calls(base).await["calls"][key].as_u64().unwrap_or(0) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never reached {n}: {}", calls(base).await);
}

#[tokio::test]
async fn receives_and_acks_events_over_the_long_connection() {
    let (base, _stop) = start().await;
    let lc = LongConnection::new(&FeishuConfig::new(
        base.clone(),
        "cli_ws",
        "ws-secret".to_string().into(),
    ))
    .unwrap();
    let (sink, mut events) = tokio::sync::mpsc::channel(16);
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { lc.run(sink, shutdown).await });
    wait_for(&base, "WS connect", 1).await;

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/_sandbox/org/users"))
        .json(&json!({"key": "ws1", "name": "长连接", "departments": ["d0"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    http.delete(format!("{base}/_sandbox/org/users/ws1"))
        .send()
        .await
        .unwrap();

    let first = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.event_type, "contact.user.created_v3");
    assert_eq!(first.payload["event"]["object"]["name"], "长连接");
    assert_eq!(first.payload["header"]["app_id"], "cli_ws");
    assert_eq!(second.event_type, "contact.user.deleted_v3");
    assert_ne!(first.event_id, second.event_id);
    wait_for(&base, "WS ack 200", 2).await;

    shutdown_tx.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(calls(&base).await["calls"]["POST /callback/ws/endpoint"], 1);
}

#[tokio::test]
async fn wrong_secret_is_a_permanent_failure() {
    let (base, _stop) = start().await;
    let lc = LongConnection::new(&FeishuConfig::new(
        base.clone(),
        "cli_ws",
        "nope".to_string().into(),
    ))
    .unwrap();
    let (sink, _events) = tokio::sync::mpsc::channel(1);
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let e = lc.run(sink, shutdown).await.unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Permanent, Some(514)));
}

#[tokio::test]
async fn a_device_id_is_good_for_one_connection() {
    let (base, _stop) = start().await;
    let lc = LongConnection::new(&FeishuConfig::new(
        base.clone(),
        "cli_ws",
        "ws-secret".to_string().into(),
    ))
    .unwrap();
    let (url, cc) = lc.endpoint().await.unwrap();
    assert!(url.starts_with("ws://") && url.contains("service_id="));
    assert_eq!(cc.reconnect_interval, Duration::from_secs(3));
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    drop(ws);
    let again = tokio_tungstenite::connect_async(url.as_str()).await;
    match again {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            assert_eq!(resp.headers()["handshake-status"], "514");
        }
        other => panic!(
            "second connection with the same device id: {:?}",
            other.map(|_| ())
        ),
    }
}
