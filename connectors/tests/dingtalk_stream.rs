//! Stream mode: the connector's `StreamClient` against the sandbox's Stream gateway — ticket,
//! WebSocket, events acked, pings echoed, bot messages, reconnect on `disconnect`, and events
//! emitted while nobody was connected delivered on connect (at-least-once).

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use huitong_connectors::capability::{PushChannel, RawEvent};
use huitong_connectors::dingtalk::sandbox::{SandboxOptions, serve};
use huitong_connectors::dingtalk::{DingTalkConfig, StreamClient};
use huitong_connectors::fixture::OrgFixture;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn start() -> (String, tokio::sync::oneshot::Sender<()>) {
    let org = OrgFixture::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/small-org.json"),
    )
    .unwrap();
    let o = SandboxOptions::new(org, "dingapp", "s3cret");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, o, async move {
            let _ = rx.await;
        })
        .await
        .unwrap()
    });
    (base, tx)
}

async fn get(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn add_user(base: &str, key: &str) {
    let r = reqwest::Client::new()
        .post(format!("{base}/_sandbox/org/users"))
        .json(&json!({"key": key, "name": key, "departments": ["d0"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<RawEvent>) -> RawEvent {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("event within 20 s")
        .expect("channel open")
}

/// Polls a sandbox status until `pred` holds (state settles asynchronously).
async fn wait_for(base: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        last = get(base, "/_sandbox/stream").await;
        if pred(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition never held: {last}");
}

#[tokio::test]
async fn stream_client_receives_acks_reconnects_and_gets_bot_messages() {
    let (base, _stop) = start().await;
    // An event emitted before anyone connects waits in the gateway.
    add_user(&base, "early").await;

    let cfg = DingTalkConfig::for_sandbox(base.clone(), "dingapp", "s3cret".to_string().into());
    let client = StreamClient::new(&cfg).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(async move { client.run(tx, stop_rx).await });

    let ev = next(&mut rx).await;
    assert_eq!(ev.event_type, "user_add_org");
    assert_eq!(ev.payload["userId"], json!(["early"]));
    assert_eq!(ev.payload["EventType"], "user_add_org");
    assert_eq!(ev.payload["CorpId"], "dingsandboxcorp");
    assert!(ev.created_at_ms.is_some());

    add_user(&base, "live").await;
    let ev = next(&mut rx).await;
    assert_eq!(ev.payload["userId"], json!(["live"]));

    // Both events acked, the connect-time ping echoed.
    let s = wait_for(&base, |s| {
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
    let r = reqwest::Client::new()
        .post(format!("{base}/_sandbox/robot/receive"))
        .json(&json!({"from": "u1", "text": "你好机器人"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let ev = next(&mut rx).await;
    assert_eq!(ev.event_type, "/v1.0/im/bot/messages/get");
    assert_eq!(ev.payload["text"]["content"], "你好机器人");
    assert_eq!(ev.payload["senderStaffId"], "u1");

    // The gateway says disconnect: the client opens a new connection with a new ticket.
    let r: Value = reqwest::Client::new()
        .post(format!("{base}/_sandbox/stream/disconnect"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["sent"], 1);
    wait_for(&base, |s| s["connections"].as_u64() >= Some(2)).await;
    add_user(&base, "after").await;
    let ev = next(&mut rx).await;
    assert_eq!(ev.payload["userId"], json!(["after"]));
    let s = wait_for(&base, |s| s["pending"] == 0).await;
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
    let (base, _stop) = start().await;
    let http = reqwest::Client::new();
    let open = || async {
        http.post(format!("{base}/v1.0/gateway/connections/open"))
            .json(&json!({"clientId": "dingapp", "clientSecret": "s3cret",
                          "subscriptions": [{"type": "EVENT", "topic": "*"}], "ua": "test"}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
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
    add_user(&base, "x1").await;
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
    let s = get(&base, "/_sandbox/stream").await;
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
    let cfg = DingTalkConfig::for_sandbox(base.clone(), "dingapp", "s3cret".to_string().into());
    let client = StreamClient::new(&cfg).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(async move { client.run(tx, stop_rx).await });
    let ev = next(&mut rx).await;
    assert_eq!(ev.payload["userId"], json!(["x1"]));
    wait_for(&base, |s| s["pending"] == 0).await;
    stop_tx.send(true).unwrap();
    assert!(run.await.unwrap().is_ok());
    let _ = ws.send(Message::Close(None)).await;
}
