//! Feishu events end to end: the sandbox emits encrypted, signed callbacks to an event URL where
//! huitong's receiver (`FeishuReceiver`) verifies, decrypts and de-duplicates them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::{HubServer, Sandbox, org};
use huitong_connectors::capability::{
    CallbackError, CallbackOutcome, CallbackRequest, InMemoryDedup, ReceiveEvents,
};
use huitong_connectors::feishu::events::{CallbackConfig, FeishuReceiver, build_callback};
use huitong_connectors::feishu::sandbox::SandboxOptions;
use serde_json::{Value, json};

const EK: &str = "encrypt-key-123";
const VT: &str = "verify-token-456";

/// The sandbox delivering its events to a hub-like receiver (which refuses the first
/// `fail_first` deliveries with a 500).
struct Setup {
    sb: Sandbox,
    hub: HubServer<FeishuReceiver>,
}

async fn setup(fail_first: usize) -> Setup {
    let receiver = FeishuReceiver::new(
        CallbackConfig::new(Some(EK.to_string().into()), Some(VT.to_string().into())),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap();
    let hub = HubServer::start(receiver, "/callbacks/feishu/main", fail_first).await;
    let mut opts = SandboxOptions::new(org("small-org.json"), "cli_test", "s3cret");
    opts.encrypt_key = Some(EK.to_string().into());
    opts.verification_token = Some(VT.to_string().into());
    opts.event_url = Some(hub.url.clone());
    opts.event_retry_delays = vec![Duration::from_millis(10), Duration::from_millis(10)];
    Setup {
        sb: Sandbox::start(opts).await,
        hub,
    }
}

#[tokio::test]
async fn sandbox_events_are_accepted_once_and_tampering_is_rejected() {
    let mut s = setup(0).await;
    s.sb.add_user(
        json!({"key": "n1", "name": "事件", "departments": ["d0"], "mobile": "13800000000"}),
    )
    .await;
    s.sb.admin(
        reqwest::Method::PATCH,
        "/_sandbox/org/users/n1",
        Some(json!({"name": "事件2"})),
    )
    .await;
    s.hub.wait(2).await;

    {
        let events = s.hub.events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type, "contact.user.created_v3");
        assert_eq!(events[0].payload["header"]["app_id"], "cli_test");
        assert_eq!(events[0].payload["event"]["object"]["name"], "事件");
        assert_eq!(events[1].event_type, "contact.user.updated_v3");
        assert_eq!(events[1].payload["event"]["old_object"]["name"], "事件");
        let first = s.hub.raw(0);
        // On the wire: encrypted body and the three signature headers.
        let body: Value = serde_json::from_slice(&first.body).unwrap();
        assert!(body["encrypt"].is_string() && body.get("schema").is_none());
        for k in [
            "x-lark-request-timestamp",
            "x-lark-request-nonce",
            "x-lark-signature",
        ] {
            assert!(first.headers.contains_key(k), "{k}");
        }
    }
    assert_eq!(s.sb.events().await[0]["delivery"], "delivered");

    // A replay of the same signed request is acknowledged but not processed again.
    let common::RawRequest {
        headers: h,
        body: b,
        ..
    } = s.hub.raw(0);
    let replay = s
        .hub
        .hub
        .receiver
        .handle_callback(&CallbackRequest {
            headers: h.clone(),
            query: Default::default(),
            body: b.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(replay, CallbackOutcome::Duplicate { .. }));

    // Tampered body: rejected with 401 at the hub's endpoint.
    let mut tampered = b.to_vec();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let http = reqwest::Client::new();
    let mut req = http.post(&s.hub.url).body(tampered);
    for (k, v) in h.iter() {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 401);

    // A correctly signed event whose timestamp is an hour old: rejected.
    let env = json!({"schema":"2.0","header":{"event_id":"old-1","event_type":"contact.user.created_v3","create_time":"0","token":VT,"app_id":"cli_test","tenant_key":"t"},"event":{}});
    let stale_ts = chrono::Utc::now().timestamp() - 3600;
    let (hs, bs) = build_callback(Some(EK), &env, stale_ts, "n");
    let mut req = http.post(&s.hub.url).body(bs);
    for (k, v) in hs {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 401);
    assert_eq!(s.hub.events().len(), 2);
}

#[tokio::test]
async fn delivery_is_retried_after_failures() {
    let mut s = setup(2).await;
    s.sb.post(
        "/_sandbox/org/departments",
        json!({"key": "dz", "name": "Z", "parent": "d0"}),
    )
    .await;
    s.hub.wait(1).await;
    assert_eq!(
        s.hub.events()[0].event_type,
        "contact.department.created_v3"
    );
    // The sandbox records the state after its write to the event log; poll it briefly.
    let state = s.sb.first_event_settled().await;
    assert_eq!(state["delivery"], "delivered");
    assert_eq!(state["attempts"], 3);
}

#[tokio::test]
async fn receiver_rejects_wrong_key_and_unknown_signature() {
    let receiver = FeishuReceiver::new(
        CallbackConfig::new(Some(EK.to_string().into()), None),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap();
    let env = json!({"schema":"2.0","header":{"event_id":"x1","event_type":"im.message.receive_v1","create_time":"0","token":"","app_id":"a","tenant_key":"t"},"event":{}});
    let now = chrono::Utc::now().timestamp();
    // Signed with another key.
    let (h, b) = build_callback(Some("another key"), &env, now, "n");
    let mut headers = HeaderMap::new();
    for (k, v) in h {
        headers.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let r = receiver
        .handle_callback(&CallbackRequest {
            headers,
            query: Default::default(),
            body: Bytes::from(b),
        })
        .await;
    assert_eq!(r, Err(CallbackError::BadSignature));
}
