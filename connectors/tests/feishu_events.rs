//! Feishu events end to end: the sandbox emits encrypted, signed callbacks to an event URL where
//! huitong's receiver (`FeishuReceiver`) verifies, decrypts and de-duplicates them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use huitong_connectors::capability::{
    CallbackError, CallbackOutcome, CallbackRequest, InMemoryDedup, RawEvent, ReceiveEvents,
};
use huitong_connectors::feishu::events::{CallbackConfig, FeishuReceiver, build_callback};
use huitong_connectors::feishu::sandbox::{SandboxOptions, serve};
use huitong_connectors::fixture::OrgFixture;
use serde_json::{Value, json};

const EK: &str = "encrypt-key-123";
const VT: &str = "verify-token-456";

fn org() -> OrgFixture {
    OrgFixture::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/small-org.json"),
    )
    .unwrap()
}

/// A hub-like receiver: answers with the receiver's reply, records accepted events and the raw
/// requests, and refuses the first `fail_first` deliveries with a 500.
struct Hub {
    receiver: FeishuReceiver,
    events: Mutex<Vec<RawEvent>>,
    raw: Mutex<Vec<(HeaderMap, Bytes)>>,
    fail_first: AtomicUsize,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
}

async fn callback(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    if hub.fail_first.load(Ordering::SeqCst) > 0 {
        hub.fail_first.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
    }
    hub.raw
        .lock()
        .unwrap()
        .push((headers.clone(), body.clone()));
    let req = CallbackRequest {
        headers,
        query: Default::default(),
        body,
    };
    let r = hub.receiver.handle_callback(&req).await;
    let out = match r {
        Ok(CallbackOutcome::Event { event, reply }) => {
            hub.events.lock().unwrap().push(event);
            (StatusCode::from_u16(reply.status).unwrap(), reply.body)
        }
        Ok(CallbackOutcome::Duplicate { reply, .. }) | Ok(CallbackOutcome::Handshake { reply }) => {
            (StatusCode::from_u16(reply.status).unwrap(), reply.body)
        }
        Err(e) => (
            StatusCode::from_u16(e.status()).unwrap(),
            e.to_string().into_bytes(),
        ),
    };
    let _ = hub.tx.send(());
    out
}

struct Setup {
    sandbox: String,
    hub: Arc<Hub>,
    hub_url: String,
    delivered: tokio::sync::mpsc::UnboundedReceiver<()>,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

async fn setup(fail_first: usize) -> Setup {
    let (tx, delivered) = tokio::sync::mpsc::unbounded_channel();
    let receiver = FeishuReceiver::new(
        CallbackConfig::new(Some(EK.to_string().into()), Some(VT.to_string().into())),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap();
    let hub = Arc::new(Hub {
        receiver,
        events: Mutex::new(Vec::new()),
        raw: Mutex::new(Vec::new()),
        fail_first: AtomicUsize::new(fail_first),
        tx,
    });
    let hub_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_url = format!(
        "http://{}/callbacks/feishu/main",
        hub_listener.local_addr().unwrap()
    );
    let (hstop, hrx) = tokio::sync::oneshot::channel::<()>();
    let app = axum::Router::new()
        .route("/callbacks/feishu/main", post(callback))
        .with_state(hub.clone());
    tokio::spawn(async move {
        axum::serve(hub_listener, app)
            .with_graceful_shutdown(async move {
                let _ = hrx.await;
            })
            .await
            .unwrap();
    });

    let mut opts = SandboxOptions::new(org(), "cli_test", "s3cret");
    opts.encrypt_key = Some(EK.to_string().into());
    opts.verification_token = Some(VT.to_string().into());
    opts.event_url = Some(hub_url.clone());
    opts.event_retry_delays = vec![Duration::from_millis(10), Duration::from_millis(10)];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = format!("http://{}", listener.local_addr().unwrap());
    let (sstop, srx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, opts, async move {
            let _ = srx.await;
        })
        .await
        .unwrap();
    });
    Setup {
        sandbox,
        hub,
        hub_url,
        delivered,
        _stops: vec![hstop, sstop],
    }
}

async fn wait_deliveries(s: &mut Setup, n: usize) {
    for _ in 0..n {
        // Generous guard so a broken sandbox fails the test instead of hanging it.
        tokio::time::timeout(Duration::from_secs(20), s.delivered.recv())
            .await
            .expect("event delivered")
            .unwrap();
    }
}

#[tokio::test]
async fn sandbox_events_are_accepted_once_and_tampering_is_rejected() {
    let mut s = setup(0).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/_sandbox/org/users", s.sandbox))
        .json(&json!({"key": "n1", "name": "事件", "departments": ["d0"], "mobile": "13800000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    http.patch(format!("{}/_sandbox/org/users/n1", s.sandbox))
        .json(&json!({"name": "事件2"}))
        .send()
        .await
        .unwrap();
    wait_deliveries(&mut s, 2).await;

    {
        let events = s.hub.events.lock().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type, "contact.user.created_v3");
        assert_eq!(events[0].payload["header"]["app_id"], "cli_test");
        assert_eq!(events[0].payload["event"]["object"]["name"], "事件");
        assert_eq!(events[1].event_type, "contact.user.updated_v3");
        assert_eq!(events[1].payload["event"]["old_object"]["name"], "事件");
        let (h, b) = &s.hub.raw.lock().unwrap()[0];
        // On the wire: encrypted body and the three signature headers.
        let body: Value = serde_json::from_slice(b).unwrap();
        assert!(body["encrypt"].is_string() && body.get("schema").is_none());
        for k in [
            "x-lark-request-timestamp",
            "x-lark-request-nonce",
            "x-lark-signature",
        ] {
            assert!(h.contains_key(k), "{k}");
        }
    }
    let sb_events: Value = reqwest::get(format!("{}/_sandbox/events", s.sandbox))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sb_events["events"][0]["delivery"], "delivered");

    // A replay of the same signed request is acknowledged but not processed again.
    let (h, b) = s.hub.raw.lock().unwrap()[0].clone();
    let replay = s
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
    let mut req = http.post(&s.hub_url).body(tampered);
    for (k, v) in h.iter() {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 401);

    // A correctly signed event whose timestamp is an hour old: rejected.
    let env = json!({"schema":"2.0","header":{"event_id":"old-1","event_type":"contact.user.created_v3","create_time":"0","token":VT,"app_id":"cli_test","tenant_key":"t"},"event":{}});
    let stale_ts = chrono::Utc::now().timestamp() - 3600;
    let (hs, bs) = build_callback(Some(EK), &env, stale_ts, "n");
    let mut req = http.post(&s.hub_url).body(bs);
    for (k, v) in hs {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 401);
    assert_eq!(s.hub.events.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn delivery_is_retried_after_failures() {
    let mut s = setup(2).await;
    reqwest::Client::new()
        .post(format!("{}/_sandbox/org/departments", s.sandbox))
        .json(&json!({"key": "dz", "name": "Z", "parent": "d0"}))
        .send()
        .await
        .unwrap();
    wait_deliveries(&mut s, 1).await;
    assert_eq!(
        s.hub.events.lock().unwrap()[0].event_type,
        "contact.department.created_v3"
    );
    // The sandbox records the state after its write to the event log; poll it briefly.
    let mut state = Value::Null;
    for _ in 0..200 {
        let ev: Value = reqwest::get(format!("{}/_sandbox/events", s.sandbox))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state = ev["events"][0].clone();
        if state["delivery"] == "delivered" {
            break;
        }
        tokio::task::yield_now().await;
    }
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
