//! DingTalk HTTP push callbacks: pushes built as DingTalk builds them are accepted and answered
//! with the encrypted `success`; a bad signature, a stale timestamp, a wrong owner key or a
//! replay is refused. End to end: the sandbox pushes its events to a receiver over HTTP.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use huitong_connectors::capability::{CallbackError, CallbackOutcome, InMemoryDedup};
use huitong_connectors::dingtalk::events::{
    CallbackConfig, ContactChangeKind, DingTalkReceiver, build_callback, contact_change, open_reply,
};
use huitong_connectors::dingtalk::sandbox::{SandboxOptions, serve};
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::wxbiz::WxBizMsgCrypt;
use serde_json::{Value, json};

const TOKEN: &str = "tok123";
const AES: &str = "1234567890123456789012345678901234567890abc";
const OWNER: &str = "dingappkey";

fn receiver() -> DingTalkReceiver {
    DingTalkReceiver::new(
        CallbackConfig::new(TOKEN.to_string().into(), AES.to_string().into(), OWNER),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap()
}

fn crypt() -> WxBizMsgCrypt {
    WxBizMsgCrypt::new(TOKEN.to_string().into(), &AES.to_string().into()).unwrap()
}

const NOW: i64 = 1_760_000_000_000;

fn push(event: &Value, ts: &str, nonce: &str, owner: &str) -> (HashMap<String, String>, Vec<u8>) {
    let (q, body) = build_callback(&crypt(), owner, event, ts, nonce);
    (q.into_iter().collect(), body)
}

fn reply_of(o: &CallbackOutcome) -> &[u8] {
    match o {
        CallbackOutcome::Handshake { reply }
        | CallbackOutcome::Event { reply, .. }
        | CallbackOutcome::Duplicate { reply, .. } => &reply.body,
    }
}

#[tokio::test]
async fn accepted_events_are_answered_with_the_encrypted_success() {
    let r = receiver();
    let ev = json!({"EventType": "user_add_org", "EventTime": NOW, "CorpId": "dingcorp",
                    "eventId": "ev-1", "timeStamp": NOW.to_string(), "userId": ["u1", "u2"]});
    let (q, body) = push(&ev, &NOW.to_string(), "n0nce", OWNER);
    let out = r.handle_at(&q, &body, NOW + 1000).await.unwrap();
    let CallbackOutcome::Event { event, reply } = &out else {
        panic!("{out:?}")
    };
    assert_eq!(event.event_id, "ev-1");
    assert_eq!(event.event_type, "user_add_org");
    assert_eq!(event.created_at_ms, Some(NOW));
    assert_eq!(event.payload["userId"], json!(["u1", "u2"]));
    assert_eq!(
        (reply.status, reply.content_type),
        (200, "application/json")
    );
    // The reply verifies and decrypts, as DingTalk checks it.
    assert_eq!(open_reply(&crypt(), OWNER, &reply.body).unwrap(), "success");
    let rv: Value = serde_json::from_slice(&reply.body).unwrap();
    for k in ["msg_signature", "timeStamp", "nonce", "encrypt"] {
        assert!(rv[k].is_string(), "{k} in {rv}");
    }
    let c = contact_change(&event.event_type, &event.payload).unwrap();
    assert_eq!(c.kind, ContactChangeKind::UserAdded);
    assert_eq!(c.user_ids, ["u1", "u2"]);
}

#[tokio::test]
async fn check_url_is_a_handshake_and_legacy_events_and_aliases_work() {
    let r = receiver();
    let (q, body) = push(
        &json!({"EventType": "check_url"}),
        &NOW.to_string(),
        "a",
        OWNER,
    );
    let out = r.handle_at(&q, &body, NOW).await.unwrap();
    assert!(matches!(out, CallbackOutcome::Handshake { .. }));
    assert_eq!(
        open_reply(&crypt(), OWNER, reply_of(&out)).unwrap(),
        "success"
    );

    // Legacy register_call_back format, timestamp in seconds, only `signature` and `timeStamp`.
    let ev = json!({"EventType": "org_dept_remove", "TimeStamp": NOW, "DeptId": [42], "CorpId": "dingcorp"});
    let (mut q, body) = push(&ev, &(NOW / 1000).to_string(), "b", OWNER);
    q.remove("msg_signature");
    let ts = q.remove("timestamp").unwrap();
    q.insert("timeStamp".into(), ts);
    let out = r.handle_at(&q, &body, NOW).await.unwrap();
    let CallbackOutcome::Event { event, .. } = &out else {
        panic!("{out:?}")
    };
    // No eventId: the request's signature identifies it.
    assert!(event.event_id.starts_with("sig:"));
    let c = contact_change(&event.event_type, &event.payload).unwrap();
    assert_eq!(
        (c.kind, c.dept_ids.clone()),
        (ContactChangeKind::DeptRemoved, vec![42])
    );
}

#[tokio::test]
async fn bad_signature_stale_timestamp_wrong_owner_and_replay_are_refused() {
    let r = receiver();
    let ev = json!({"EventType": "user_leave_org", "eventId": "ev-9", "userId": ["u9"]});
    let ts = NOW.to_string();

    // Bad signature.
    let (mut q, body) = push(&ev, &ts, "n1", OWNER);
    q.insert("msg_signature".into(), "0".repeat(40));
    let e = r.handle_at(&q, &body, NOW).await.unwrap_err();
    assert_eq!(e, CallbackError::BadSignature);
    assert_eq!(e.status(), 401);
    // A tampered ciphertext under the original signature.
    let (q, body) = push(&ev, &ts, "n2", OWNER);
    let mut v: Value = serde_json::from_slice(&body).unwrap();
    let enc = v["encrypt"].as_str().unwrap().to_string();
    // A different first character (the ciphertext is random: it may start with "A" already).
    let first = if enc.starts_with('A') { "B" } else { "A" };
    v["encrypt"] = json!(format!("{first}{}", &enc[1..]));
    let e = r
        .handle_at(&q, v.to_string().as_bytes(), NOW)
        .await
        .unwrap_err();
    assert_eq!(e, CallbackError::BadSignature);

    // Stale (and future) timestamps, outside the 5-minute window.
    let (q, body) = push(&ev, &(NOW - 301_000).to_string(), "n3", OWNER);
    assert_eq!(
        r.handle_at(&q, &body, NOW).await.unwrap_err(),
        CallbackError::StaleTimestamp
    );
    let (q, body) = push(&ev, &(NOW + 301_000).to_string(), "n4", OWNER);
    assert_eq!(
        r.handle_at(&q, &body, NOW).await.unwrap_err(),
        CallbackError::StaleTimestamp
    );

    // Encrypted for another owner key (corp id instead of app key).
    let (q, body) = push(&ev, &ts, "n5", "dingothercorp");
    assert!(matches!(
        r.handle_at(&q, &body, NOW).await.unwrap_err(),
        CallbackError::Decrypt(_)
    ));

    // Missing signature parameters.
    let (mut q, body) = push(&ev, &ts, "n6", OWNER);
    q.remove("msg_signature");
    q.remove("signature");
    assert_eq!(
        r.handle_at(&q, &body, NOW).await.unwrap_err(),
        CallbackError::MissingSignature
    );

    // The first delivery is processed; a replay of the same request, or DingTalk's retry of
    // the same eventId with a fresh signature, is acknowledged but not processed again.
    let (q, body) = push(&ev, &ts, "n7", OWNER);
    assert!(matches!(
        r.handle_at(&q, &body, NOW).await.unwrap(),
        CallbackOutcome::Event { .. }
    ));
    let replay = r.handle_at(&q, &body, NOW + 10).await.unwrap();
    assert!(matches!(replay, CallbackOutcome::Duplicate { .. }));
    assert_eq!(
        open_reply(&crypt(), OWNER, reply_of(&replay)).unwrap(),
        "success"
    );
    let (q, body) = push(&ev, &(NOW + 5000).to_string(), "n8", OWNER);
    assert!(matches!(
        r.handle_at(&q, &body, NOW + 5000).await.unwrap(),
        CallbackOutcome::Duplicate { .. }
    ));

    // Oversized bodies are refused before any work.
    let big = vec![b' '; 2 * 1024 * 1024];
    assert!(matches!(
        r.handle_at(&q, &big, NOW).await.unwrap_err(),
        CallbackError::TooLarge(_)
    ));
    // A bad aes_key is a configuration error.
    assert!(
        DingTalkReceiver::new(
            CallbackConfig::new(TOKEN.to_string().into(), "short".to_string().into(), OWNER),
            Arc::new(InMemoryDedup::default())
        )
        .is_err()
    );
}

type Rx = Arc<DingTalkReceiver>;

async fn hub(
    State((r, tx)): State<(Rx, tokio::sync::mpsc::UnboundedSender<Value>)>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> axum::response::Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    match r.handle_at(&q, &body, now).await {
        Ok(out) => {
            if let CallbackOutcome::Event { event, .. } = &out {
                let _ = tx.send(event.payload.clone());
            }
            let reply = match out {
                CallbackOutcome::Handshake { reply }
                | CallbackOutcome::Event { reply, .. }
                | CallbackOutcome::Duplicate { reply, .. } => reply,
            };
            (
                StatusCode::from_u16(reply.status).unwrap(),
                [("content-type", reply.content_type)],
                reply.body,
            )
                .into_response()
        }
        Err(e) => (StatusCode::from_u16(e.status()).unwrap(), e.to_string()).into_response(),
    }
}

#[tokio::test]
async fn the_sandbox_pushes_every_change_encrypted_and_signed() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let r: Rx = Arc::new(
        DingTalkReceiver::new(
            CallbackConfig::new(TOKEN.to_string().into(), AES.to_string().into(), "dingapp"),
            Arc::new(InMemoryDedup::default()),
        )
        .unwrap(),
    );
    let hub_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_url = format!(
        "http://{}/dingtalk/events",
        hub_listener.local_addr().unwrap()
    );
    let app = axum::Router::new()
        .route("/dingtalk/events", post(hub))
        .with_state((r, tx));
    tokio::spawn(async move { axum::serve(hub_listener, app).await.unwrap() });

    let org = OrgFixture::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/small-org.json"),
    )
    .unwrap();
    let mut o = SandboxOptions::new(org, "dingapp", "s3cret");
    o.aes_key = Some(AES.to_string().into());
    o.token = Some(TOKEN.to_string().into());
    o.event_url = Some(hub_url);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, srx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, o, async move {
            let _ = srx.await;
        })
        .await
        .unwrap()
    });

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/_sandbox/org/users"))
        .json(
            &json!({"key": "new1", "name": "新人", "departments": ["d0"], "mobile": "13900000009"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .patch(format!("{base}/_sandbox/org/users/new1"))
        .json(&json!({"title": "经理"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .delete(format!("{base}/_sandbox/org/users/new1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("delivery")
            .unwrap();
        got.push(ev);
    }
    let types: Vec<&str> = got
        .iter()
        .map(|e| e["EventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["user_add_org", "user_modify_org", "user_leave_org"]);
    assert!(got.iter().all(|e| e["userId"] == json!(["new1"])));
    assert_eq!(got[1]["diffInfo"][0]["curr"]["title"], "经理");
    // The sandbox saw the hub's 200 for each.
    let mut delivered = 0;
    for _ in 0..50 {
        let ev: Value = reqwest::get(format!("{base}/_sandbox/events"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        delivered = ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["delivery"] == "delivered")
            .count();
        if delivered == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(delivered, 3);
}

async fn start_sandbox(o: SandboxOptions) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, srx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, o, async move {
            let _ = srx.await;
        })
        .await
        .unwrap()
    });
    (base, stop)
}

async fn start_hub(owner: &str) -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let r: Rx = Arc::new(
        DingTalkReceiver::new(
            CallbackConfig::new(TOKEN.to_string().into(), AES.to_string().into(), owner),
            Arc::new(InMemoryDedup::default()),
        )
        .unwrap(),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", l.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/events", post(hub))
        .with_state((r, tx));
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, rx)
}

fn small_org() -> OrgFixture {
    OrgFixture::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/small-org.json"),
    )
    .unwrap()
}

async fn events_of(base: &str) -> Vec<Value> {
    reqwest::get(format!("{base}/_sandbox/events"))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["events"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn legacy_format_pushes_use_the_corp_id_and_a_plain_ok_is_not_a_delivery() {
    // Legacy register_call_back format: capitalised keys, encrypted for the corp id.
    let (hub_url, mut rx) = start_hub("dingsandboxcorp").await;
    let mut o = SandboxOptions::new(small_org(), "dingapp", "s3cret");
    o.aes_key = Some(AES.to_string().into());
    o.token = Some(TOKEN.to_string().into());
    o.event_url = Some(hub_url);
    o.legacy_events = true;
    let (base, _stop) = start_sandbox(o).await;
    let r = reqwest::Client::new()
        .delete(format!("{base}/_sandbox/org/users/u5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("delivery")
        .unwrap();
    assert_eq!(ev["EventType"], "user_leave_org");
    assert_eq!(ev["UserId"], json!(["u5"]));
    assert!(ev["TimeStamp"].is_i64());
    assert!(ev.get("eventId").is_none());

    // A receiver that answers 200 with anything but the encrypted success has not accepted
    // the push: DingTalk retries, then gives up.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_url = format!("http://{}/events", l.local_addr().unwrap());
    let app = axum::Router::new().route("/events", post(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let mut o = SandboxOptions::new(small_org(), "dingapp", "s3cret");
    o.aes_key = Some(AES.to_string().into());
    o.token = Some(TOKEN.to_string().into());
    o.event_url = Some(plain_url);
    o.event_retry_delays = vec![Duration::from_millis(10)];
    let (base, _stop2) = start_sandbox(o).await;
    let r = reqwest::Client::new()
        .delete(format!("{base}/_sandbox/org/users/u5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut last = Vec::new();
    for _ in 0..400 {
        last = events_of(&base).await;
        if last[0]["delivery"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(last[0]["delivery"], "failed");
    assert_eq!(last[0]["attempts"], 2);
}
