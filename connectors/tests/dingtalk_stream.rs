//! Stream mode: the connector's `StreamClient` against the sandbox's Stream gateway — ticket,
//! WebSocket, events acked, pings echoed, bot messages, reconnect on `disconnect`, and events
//! emitted while nobody was connected delivered on connect (at-least-once).

mod common;

use std::time::Duration;

use common::{JsonReply, Sandbox, next, org};
use futures_util::{SinkExt, StreamExt};
use huitong_connectors::capability::PushChannel;
use huitong_connectors::dingtalk::sandbox::SandboxOptions;
use huitong_connectors::dingtalk::{DingTalkConfig, StreamClient};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn start() -> Sandbox {
    let opts = SandboxOptions::new(org("small-org.json"), "dingapp", "s3cret");
    Sandbox::start(opts).await
}

async fn add_user(sb: &Sandbox, key: &str) {
    sb.add_user(json!({"key": key, "name": key, "departments": ["d0"]}))
        .await;
}

/// The connector's Stream client, running until the returned sender says stop.
fn run_client(
    sb: &Sandbox,
) -> (
    tokio::sync::mpsc::Receiver<huitong_connectors::capability::RawEvent>,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), huitong_connectors::ConnectorError>>,
) {
    let cfg = DingTalkConfig::for_sandbox(sb.base.clone(), "dingapp", "s3cret".to_string().into());
    let client = StreamClient::new(&cfg).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(async move { client.run(tx, stop_rx).await });
    (rx, stop_tx, run)
}

#[tokio::test]
async fn stream_client_receives_acks_reconnects_and_gets_bot_messages() {
    let sb = start().await;
    // An event emitted before anyone connects waits in the gateway.
    add_user(&sb, "early").await;

    let (mut rx, stop_tx, run) = run_client(&sb);

    let ev = next(&mut rx).await;
    assert_eq!(ev.event_type, "user_add_org");
    assert_eq!(ev.payload["userId"], json!(["early"]));
    assert_eq!(ev.payload["EventType"], "user_add_org");
    assert_eq!(ev.payload["CorpId"], "dingsandboxcorp");
    assert!(ev.created_at_ms.is_some());

    add_user(&sb, "live").await;
    let ev = next(&mut rx).await;
    assert_eq!(ev.payload["userId"], json!(["live"]));

    // Both events acked, the connect-time ping echoed.
    let s = sb
        .wait_for("/_sandbox/stream", |s| {
            s["pending"] == 0 && s["pings_acked"].as_u64() >= Some(1)
        })
        .await;
    let acks = s["acks"].as_array().unwrap();
    assert!(
        acks.iter().filter(|a| a["matched"] == true).count() >= 2,
        "{s}"
    );
    assert!(acks.iter().all(|a| a["code"] == 200));

    // A user messages the robot: a CALLBACK on the bot topic.
    let (status, _) = sb
        .post(
            "/_sandbox/robot/receive",
            json!({"from": "u1", "text": "你好机器人"}),
        )
        .await;
    assert_eq!(status, 202);
    let ev = next(&mut rx).await;
    assert_eq!(ev.event_type, "/v1.0/im/bot/messages/get");
    assert_eq!(ev.payload["text"]["content"], "你好机器人");
    assert_eq!(ev.payload["senderStaffId"], "u1");

    // The gateway says disconnect: the client opens a new connection with a new ticket.
    let (_, r) = sb
        .admin(reqwest::Method::POST, "/_sandbox/stream/disconnect", None)
        .await;
    assert_eq!(r["sent"], 1);
    sb.wait_for("/_sandbox/stream", |s| s["connections"].as_u64() >= Some(2))
        .await;
    add_user(&sb, "after").await;
    let ev = next(&mut rx).await;
    assert_eq!(ev.payload["userId"], json!(["after"]));
    let s = sb.wait_for("/_sandbox/stream", |s| s["pending"] == 0).await;
    assert!(s["connections_opened"].as_u64().unwrap() >= 2);

    stop_tx.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_ok());
}

#[tokio::test]
async fn unacked_events_are_redelivered_and_tickets_are_single_use() {
    let sb = start().await;
    let base = &sb.base;
    let http = reqwest::Client::new();
    let open = || async {
        http.post(format!("{base}/v1.0/gateway/connections/open"))
            .json(&json!({"clientId": "dingapp", "clientSecret": "s3cret",
                          "subscriptions": [{"type": "EVENT", "topic": "*"}], "ua": "test"}))
            .json_reply()
            .await
    };
    let c = open().await;
    let url = format!(
        "{}?ticket={}",
        c["endpoint"].as_str().unwrap(),
        c["ticket"].as_str().unwrap()
    );
    assert!(url.starts_with("ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    // The ticket cannot be used twice.
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err()
    );
    add_user(&sb, "x1").await;
    // Read frames until the event arrives; do not ack it, then drop the connection.
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Text(t) = m else { continue };
        let f: Value = serde_json::from_str(t.as_str()).unwrap();
        if f["type"] == "EVENT" {
            assert_eq!(f["headers"]["eventType"], "user_add_org");
            let data: Value = serde_json::from_str(f["data"].as_str().unwrap()).unwrap();
            assert_eq!(data["userId"], json!(["x1"]));
            break;
        }
    }
    ws.close(None).await.unwrap();
    let s = sb.get("/_sandbox/stream").await;
    assert_eq!(s["pending"], 1);

    // A bad secret gets no ticket.
    let r = http
        .post(format!("{base}/v1.0/gateway/connections/open"))
        .json(&json!({"clientId": "dingapp", "clientSecret": "nope"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());

    // The connector's client gets the un-acked event on its connection and acks it.
    let (mut rx, stop_tx, run) = run_client(&sb);
    let ev = next(&mut rx).await;
    assert_eq!(ev.payload["userId"], json!(["x1"]));
    sb.wait_for("/_sandbox/stream", |s| s["pending"] == 0).await;
    stop_tx.send(true).unwrap();
    assert!(run.await.unwrap().is_ok());
    let _ = ws.send(Message::Close(None)).await;
}
