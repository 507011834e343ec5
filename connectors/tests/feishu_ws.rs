//! huitong's long-connection client against the sandbox's endpoint and WebSocket.

mod common;

use std::time::Duration;

use common::{Sandbox, org};
use huitong_connectors::ErrorClass;
use huitong_connectors::capability::PushChannel;
use huitong_connectors::feishu::FeishuConfig;
use huitong_connectors::feishu::sandbox::SandboxOptions;
use huitong_connectors::feishu::ws::LongConnection;
use serde_json::json;

async fn start() -> Sandbox {
    let opts = SandboxOptions::new(org("small-org.json"), "cli_ws", "ws-secret");
    Sandbox::start(opts).await
}

fn long_connection(sb: &Sandbox, secret: &str) -> LongConnection {
    LongConnection::new(&FeishuConfig::new(
        sb.base.clone(),
        "cli_ws",
        secret.to_string().into(),
    ))
    .unwrap()
}

#[tokio::test]
async fn receives_and_acks_events_over_the_long_connection() {
    let sb = start().await;
    let lc = long_connection(&sb, "ws-secret");
    let (sink, mut events) = tokio::sync::mpsc::channel(16);
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { lc.run(sink, shutdown).await });
    sb.wait_for_calls("WS connect", 1).await;

    sb.add_user(json!({"key": "ws1", "name": "长连接", "departments": ["d0"]}))
        .await;
    sb.admin(reqwest::Method::DELETE, "/_sandbox/org/users/ws1", None)
        .await;

    let first = common::next(&mut events).await;
    let second = common::next(&mut events).await;
    assert_eq!(first.event_type, "contact.user.created_v3");
    assert_eq!(first.payload["event"]["object"]["name"], "长连接");
    assert_eq!(first.payload["header"]["app_id"], "cli_ws");
    assert_eq!(second.event_type, "contact.user.deleted_v3");
    assert_ne!(first.event_id, second.event_id);
    sb.wait_for_calls("WS ack 200", 2).await;

    shutdown_tx.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(sb.calls("POST /callback/ws/endpoint").await, 1);
}

#[tokio::test]
async fn wrong_secret_is_a_permanent_failure() {
    let sb = start().await;
    let lc = long_connection(&sb, "nope");
    let (sink, _events) = tokio::sync::mpsc::channel(1);
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let e = lc.run(sink, shutdown).await.unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Permanent, Some(514)));
}

#[tokio::test]
async fn a_device_id_is_good_for_one_connection() {
    let sb = start().await;
    let lc = long_connection(&sb, "ws-secret");
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
