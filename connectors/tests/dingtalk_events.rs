//! DingTalk HTTP push callbacks: pushes built as DingTalk builds them are accepted and answered
//! with the encrypted `success`; a bad signature, a stale timestamp, a wrong owner key or a
//! replay is refused. End to end: the sandbox pushes its events to a receiver over HTTP.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use common::{HubServer, Sandbox, org};
use huitong_connectors::capability::{CallbackError, CallbackOutcome, InMemoryDedup};
use huitong_connectors::dingtalk::events::{
    CallbackConfig, ContactChangeKind, DingTalkReceiver, build_callback, contact_change, open_reply,
};
use huitong_connectors::dingtalk::sandbox::SandboxOptions;
use huitong_connectors::wxbiz::WxBizMsgCrypt;
use reqwest::Method;
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

/// A hub with a receiver for `owner`, and a sandbox pushing to it (`legacy`: the legacy format).
async fn pushing_to_a_hub(owner: &str, legacy: bool) -> (Sandbox, HubServer<DingTalkReceiver>) {
    let receiver = DingTalkReceiver::new(
        CallbackConfig::new(TOKEN.to_string().into(), AES.to_string().into(), owner),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap();
    let hub = HubServer::start(receiver, "/dingtalk/events", 0).await;
    let mut o = sandbox_options(&hub.url);
    o.legacy_events = legacy;
    (Sandbox::start(o).await, hub)
}

/// The sandbox's options with callbacks to `event_url`.
fn sandbox_options(event_url: &str) -> SandboxOptions {
    let mut o = SandboxOptions::new(org("small-org.json"), "dingapp", "s3cret");
    o.aes_key = Some(AES.to_string().into());
    o.token = Some(TOKEN.to_string().into());
    o.event_url = Some(event_url.to_string());
    o
}

fn delivered(events: &Value) -> usize {
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["delivery"] == "delivered")
        .count()
}

#[tokio::test]
async fn the_sandbox_pushes_every_change_encrypted_and_signed() {
    let (sb, mut hub) = pushing_to_a_hub("dingapp", false).await;
    sb.add_user(
        json!({"key": "new1", "name": "新人", "departments": ["d0"], "mobile": "13900000009"}),
    )
    .await;
    let (status, _) = sb
        .admin(
            Method::PATCH,
            "/_sandbox/org/users/new1",
            Some(json!({"title": "经理"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = sb
        .admin(Method::DELETE, "/_sandbox/org/users/new1", None)
        .await;
    assert_eq!(status, 204);
    hub.wait(3).await;
    let got: Vec<Value> = hub.events().into_iter().map(|e| e.payload).collect();
    let types: Vec<&str> = got
        .iter()
        .map(|e| e["EventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["user_add_org", "user_modify_org", "user_leave_org"]);
    assert!(got.iter().all(|e| e["userId"] == json!(["new1"])));
    assert_eq!(got[1]["diffInfo"][0]["curr"]["title"], "经理");
    // The sandbox saw the hub's 200 for each.
    let events = sb.wait_for("/_sandbox/events", |e| delivered(e) == 3).await;
    assert_eq!(delivered(&events), 3);
}

#[tokio::test]
async fn legacy_format_pushes_use_the_corp_id_and_a_plain_ok_is_not_a_delivery() {
    // Legacy register_call_back format: capitalised keys, encrypted for the corp id.
    let (sb, mut hub) = pushing_to_a_hub("dingsandboxcorp", true).await;
    let (status, _) = sb
        .admin(Method::DELETE, "/_sandbox/org/users/u5", None)
        .await;
    assert_eq!(status, 204);
    hub.wait(1).await;
    let events = hub.events();
    let ev = &events[0].payload;
    assert_eq!(ev["EventType"], "user_leave_org");
    assert_eq!(ev["UserId"], json!(["u5"]));
    assert!(ev["TimeStamp"].is_i64());
    assert!(ev.get("eventId").is_none());

    // A receiver that answers 200 with anything but the encrypted success has not accepted
    // the push: DingTalk retries, then gives up.
    let plain = common::serve(axum::Router::new().route("/events", post(|| async { "ok" }))).await;
    let mut o = sandbox_options(&format!("{}/events", plain.base));
    o.event_retry_delays = vec![Duration::from_millis(10)];
    let sb = Sandbox::start(o).await;
    let (status, _) = sb
        .admin(Method::DELETE, "/_sandbox/org/users/u5", None)
        .await;
    assert_eq!(status, 204);
    let last = sb.first_event_settled().await;
    assert_eq!(last["delivery"], "failed");
    assert_eq!(last["attempts"], 2);
}

/// A correctly signed push whose `encrypt` is `enc` (DingTalk signs the `encrypt` value).
fn signed_push(enc: &str, nonce: &str) -> (HashMap<String, String>, Vec<u8>) {
    let ts = NOW.to_string();
    let sig = crypt().signature(&ts, nonce, enc);
    let q = [
        ("msg_signature", sig),
        ("timestamp", ts),
        ("nonce", nonce.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    (q, json!({ "encrypt": enc }).to_string().into_bytes())
}

/// base64 of AES-256-CBC(key, iv = key[..16], `blocks`), `blocks` not padded here.
fn raw_encrypt(blocks: &[u8]) -> String {
    use base64::Engine;
    let key = huitong_connectors::wxbiz::decode_aes_key(AES).unwrap();
    let ct = huitong_connectors::crypto::aes256_cbc_encrypt_raw(&key, &key[..16], blocks).unwrap();
    base64::engine::general_purpose::STANDARD.encode(ct)
}

/// Issue 21, finding 2: whatever a signed push's ciphertext turns out to be once decrypted
/// (bad padding, a malformed buffer, another owner, not JSON, no EventType), the answer is one
/// and the same: it must not tell what the decryption found.
#[tokio::test]
async fn signed_pushes_that_cannot_be_opened_are_refused_alike() {
    use huitong_connectors::crypto::pkcs7_pad;
    let r = receiver();
    let padded = |plain: &[u8]| {
        let mut v = plain.to_vec();
        pkcs7_pad(&mut v, 32);
        raw_encrypt(&v)
    };
    let mut bad_padding = vec![b'x'; 32];
    bad_padding[31] = 0;
    let mut long_len = vec![0u8; 16];
    long_len.extend_from_slice(&1000u32.to_be_bytes());
    long_len.extend_from_slice(b"abc");
    let cases: Vec<(&str, String)> = vec![
        ("bad padding", raw_encrypt(&bad_padding)),
        ("padding of 16 in a 32-byte block", raw_encrypt(&[16u8; 32])),
        ("buffer too short", padded(b"short")),
        ("length field beyond the buffer", padded(&long_len)),
        (
            "another owner",
            crypt().encrypt(br#"{"EventType":"check_url"}"#, "dingother"),
        ),
        ("not JSON", crypt().encrypt(b"not json", OWNER)),
        ("no EventType", crypt().encrypt(b"{}", OWNER)),
        ("not base64", "***".into()),
        (
            "not whole blocks",
            raw_encrypt(&[1u8; 16])[..10].to_string(),
        ),
    ];
    let mut answers = std::collections::BTreeMap::new();
    for (i, (what, enc)) in cases.iter().enumerate() {
        let (q, body) = signed_push(enc, &format!("n{i}"));
        let e = r.handle_at(&q, &body, NOW).await.unwrap_err();
        answers
            .entry(format!("{} {e}", e.status()))
            .or_insert_with(Vec::new)
            .push(*what);
    }
    assert_eq!(answers.len(), 1, "distinct answers: {answers:#?}");
    let only = answers.keys().next().unwrap();
    assert!(
        !only.contains("padding") && !only.contains("owner"),
        "{only}"
    );
    // A genuine push still goes through.
    let (q, body) = push(
        &json!({"EventType": "user_add_org", "eventId": "after", "userId": ["u1"]}),
        &NOW.to_string(),
        "ok",
        OWNER,
    );
    assert!(matches!(
        r.handle_at(&q, &body, NOW).await.unwrap(),
        CallbackOutcome::Event { .. }
    ));
}
