//! WeCom callbacks end to end: the sandbox delivers XML callbacks, encrypted and signed
//! (WXBizMsgCrypt), to an event URL where huitong's receiver (`WecomReceiver`) verifies,
//! decrypts and de-duplicates them; the URL verification handshake; rejections.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use huitong_connectors::capability::{
    CallbackError, CallbackOutcome, CallbackRequest, InMemoryDedup, RawEvent, ReceiveEvents,
};
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::wecom::events::{CallbackConfig, WecomReceiver, parse_xml};
use huitong_connectors::wecom::sandbox::{SandboxOptions, serve};
use huitong_connectors::wecom::{WecomClient, WecomConfig};
use serde_json::{Value, json};

const CORP: &str = "ww0123456789abcdef";
const TOKEN: &str = "cb-token-123";
const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";

fn org() -> OrgFixture {
    OrgFixture::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/small-org.json"),
    )
    .unwrap()
}

struct RawRequest {
    headers: HeaderMap,
    query: HashMap<String, String>,
    body: Bytes,
}

/// A hub-like receiver: answers with the receiver's reply, records accepted events and raw
/// requests, and refuses the first `fail_first` deliveries with a 500.
struct Hub {
    receiver: WecomReceiver,
    events: Mutex<Vec<RawEvent>>,
    raw: Mutex<Vec<RawRequest>>,
    rejected: Mutex<Vec<CallbackError>>,
    fail_first: AtomicUsize,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
}

async fn callback(
    State(hub): State<Arc<Hub>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    if hub.fail_first.load(Ordering::SeqCst) > 0 {
        hub.fail_first.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
    }
    hub.raw.lock().unwrap().push(RawRequest {
        headers: headers.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    let req = CallbackRequest {
        headers,
        query,
        body,
    };
    let out = match hub.receiver.handle_callback(&req).await {
        Ok(CallbackOutcome::Event { event, reply }) => {
            hub.events.lock().unwrap().push(event);
            (StatusCode::from_u16(reply.status).unwrap(), reply.body)
        }
        Ok(CallbackOutcome::Duplicate { reply, .. }) | Ok(CallbackOutcome::Handshake { reply }) => {
            (StatusCode::from_u16(reply.status).unwrap(), reply.body)
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap();
            hub.rejected.lock().unwrap().push(e.clone());
            (status, e.to_string().into_bytes())
        }
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

impl Setup {
    async fn wait(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(20), self.delivered.recv())
                .await
                .expect("a delivery")
                .unwrap();
        }
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        let mut r = reqwest::Client::new().request(method, format!("{}{path}", self.sandbox));
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap().status().as_u16()
    }

    async fn sandbox_events(&self) -> Vec<Value> {
        reqwest::get(format!("{}/_sandbox/events", self.sandbox))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["events"]
            .as_array()
            .unwrap()
            .clone()
    }
}

async fn setup(fail_first: usize, sandbox_corp: &str) -> Setup {
    let (tx, delivered) = tokio::sync::mpsc::unbounded_channel();
    let receiver = WecomReceiver::new(
        CallbackConfig::new(TOKEN.to_string().into(), AES_KEY.to_string().into(), CORP),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap();
    let hub = Arc::new(Hub {
        receiver,
        events: Mutex::new(Vec::new()),
        raw: Mutex::new(Vec::new()),
        rejected: Mutex::new(Vec::new()),
        fail_first: AtomicUsize::new(fail_first),
        tx,
    });
    let hub_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_url = format!(
        "http://{}/callbacks/wecom/main",
        hub_listener.local_addr().unwrap()
    );
    let (hstop, hrx) = tokio::sync::oneshot::channel::<()>();
    let app = axum::Router::new()
        .route("/callbacks/wecom/main", get(callback).post(callback))
        .with_state(hub.clone());
    tokio::spawn(async move {
        axum::serve(hub_listener, app)
            .with_graceful_shutdown(async move {
                let _ = hrx.await;
            })
            .await
            .unwrap();
    });

    let mut opts = SandboxOptions::new(org(), sandbox_corp, "s3cret", 1000002);
    opts.token = Some(TOKEN.to_string().into());
    opts.encoding_aes_key = Some(AES_KEY.to_string().into());
    opts.event_url = Some(hub_url.clone());
    opts.event_retry_delays = vec![Duration::from_millis(50), Duration::from_millis(100)];
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

#[tokio::test]
async fn every_change_arrives_encrypted_signed_and_accepted() {
    let mut s = setup(0, CORP).await;
    use reqwest::Method;
    assert_eq!(
        s.admin(
            Method::POST,
            "/_sandbox/org/departments",
            Some(json!({"key": "d9", "name": "新部门", "parent": "d0"}))
        )
        .await,
        201
    );
    assert_eq!(
        s.admin(Method::POST, "/_sandbox/org/users", Some(json!({"key": "newbie", "name": "新人", "departments": ["d9", "d1"], "mobile": "13700000000", "title": "实习生"}))).await,
        201
    );
    assert_eq!(
        s.admin(
            Method::PATCH,
            "/_sandbox/org/users/newbie",
            Some(json!({"title": "工程师"}))
        )
        .await,
        200
    );
    assert_eq!(
        s.admin(Method::DELETE, "/_sandbox/org/users/newbie", None)
            .await,
        204
    );
    assert_eq!(
        s.admin(
            Method::PATCH,
            "/_sandbox/org/departments/d9",
            Some(json!({"name": "改名部门"}))
        )
        .await,
        200
    );
    assert_eq!(
        s.admin(Method::DELETE, "/_sandbox/org/departments/d9", None)
            .await,
        204
    );
    // A change through the API, and a member writing to the app.
    let mut cfg = WecomConfig::new(
        s.sandbox.clone(),
        CORP,
        "s3cret".to_string().into(),
        1000002,
    );
    cfg.transport.retry.max_retries = 0;
    WecomClient::new(cfg)
        .unwrap()
        .update_user("u1", json!({"position": "总监"}))
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/_sandbox/message/receive", s.sandbox))
        .json(&json!({"from": "u0", "text": "请假申请"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    s.wait(8).await;

    let events = s.hub.events.lock().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "change_contact.create_party",
            "change_contact.create_user",
            "change_contact.update_user",
            "change_contact.delete_user",
            "change_contact.update_party",
            "change_contact.delete_party",
            "change_contact.update_user",
            "message.text",
        ]
    );
    assert!(s.hub.rejected.lock().unwrap().is_empty());
    let create = &events[1].payload;
    assert_eq!(create["UserID"], "newbie");
    assert_eq!(create["FromUserName"], "sys");
    assert_eq!(create["ToUserName"], CORP);
    assert_eq!(create["Position"], "实习生");
    assert_eq!(create["Mobile"], "13700000000");
    assert_eq!(create["Status"], "1");
    let d9 = events[0].payload["Id"].as_str().unwrap().to_string();
    assert_eq!(
        create["Department"],
        format!("{d9},2").as_str(),
        "comma-separated ids"
    );
    assert_eq!(create["MainDepartment"], d9.as_str());
    assert_eq!(create["IsLeaderInDept"], "0,0");
    assert_eq!(events[0].payload["ParentId"], "1");
    assert_eq!(events[3].payload["UserID"], "newbie");
    assert_eq!(events[5].payload["Id"], d9.as_str());
    assert_eq!(events[6].payload["Position"], "总监");
    let msg = &events[7].payload;
    assert_eq!(msg["Content"], "请假申请");
    assert_eq!(msg["FromUserName"], "u0");
    assert_eq!(msg["AgentID"], "1000002");
    assert!(events[7].event_id.starts_with("msg:"));
    assert!(events.iter().all(|e| e.created_at_ms.is_some()));

    // On the wire: signed query string, XML envelope, text/xml.
    {
        let raw = s.hub.raw.lock().unwrap();
        let first = &raw[0];
        for k in ["msg_signature", "timestamp", "nonce"] {
            assert!(first.query.contains_key(k), "{k}");
        }
        assert!(
            first.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/xml")
        );
        let env = parse_xml(std::str::from_utf8(&first.body).unwrap()).unwrap();
        assert_eq!(env["ToUserName"], CORP);
        assert!(env["Encrypt"].as_str().unwrap().len() > 40);
    }

    let sandbox_events = s.sandbox_events().await;
    assert_eq!(sandbox_events.len(), 8);
    assert!(sandbox_events.iter().all(|e| e["delivery"] == "delivered"));
}

#[tokio::test]
async fn failed_deliveries_are_retried() {
    let mut s = setup(2, CORP).await;
    assert_eq!(
        s.admin(reqwest::Method::DELETE, "/_sandbox/org/users/u5", None)
            .await,
        204
    );
    s.wait(1).await;
    let events = s.hub.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "change_contact.delete_user");
    // The record updates right after the hub's answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ev = s.sandbox_events().await;
    assert_eq!(ev[0]["delivery"], "delivered");
    assert_eq!(ev[0]["attempts"], 3);
}

#[tokio::test]
async fn replays_tampering_and_stale_requests_are_rejected() {
    let mut s = setup(0, CORP).await;
    assert_eq!(
        s.admin(
            reqwest::Method::PATCH,
            "/_sandbox/org/users/u2",
            Some(json!({"title": "经理"}))
        )
        .await,
        200
    );
    s.wait(1).await;
    let (query, body) = {
        let raw = s.hub.raw.lock().unwrap();
        (raw[0].query.clone(), raw[0].body.clone())
    };
    let http = reqwest::Client::new();
    // The same request again: acknowledged (200) but not processed a second time.
    let r = http
        .post(&s.hub_url)
        .query(&query)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.hub.events.lock().unwrap().len(), 1);
    // Tampered signature.
    let mut bad = query.clone();
    bad.insert("msg_signature".into(), "0".repeat(40));
    let r = http
        .post(&s.hub_url)
        .query(&bad)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Different timestamp than the one signed.
    let mut moved = query.clone();
    let ts: i64 = moved["timestamp"].parse().unwrap();
    moved.insert("timestamp".into(), (ts + 1).to_string());
    let r = http
        .post(&s.hub_url)
        .query(&moved)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Missing signature parameters.
    let r = http
        .post(&s.hub_url)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The same genuine request, presented outside the window (a late replay).
    let late = s
        .hub
        .receiver
        .handle_at(&query, &body, ts + 301)
        .await
        .unwrap_err();
    assert_eq!(late, CallbackError::StaleTimestamp);
    let rejected = s.hub.rejected.lock().unwrap().clone();
    assert_eq!(
        rejected,
        vec![
            CallbackError::BadSignature,
            CallbackError::BadSignature,
            CallbackError::MissingSignature
        ]
    );
}

#[tokio::test]
async fn callbacks_for_another_corp_are_rejected() {
    let mut s = setup(0, "wwSOMEOTHERCORP").await;
    assert_eq!(
        s.admin(reqwest::Method::DELETE, "/_sandbox/org/users/u3", None)
            .await,
        204
    );
    // First attempt plus two retries, each refused.
    s.wait(3).await;
    assert!(s.hub.events.lock().unwrap().is_empty());
    let rejected = s.hub.rejected.lock().unwrap().clone();
    assert_eq!(rejected.len(), 3);
    assert!(
        rejected
            .iter()
            .all(|e| matches!(e, CallbackError::Decrypt(m) if m.contains("receive id")))
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.sandbox_events().await[0]["delivery"], "failed");
}

#[tokio::test]
async fn url_verification_answers_the_bare_plaintext() {
    let s = setup(0, CORP).await;
    // Build the GET as WeCom does when the admin saves the callback URL.
    let echo_plain = "7390215448262103785";
    let crypt = s.hub.receiver.crypt();
    let echostr = crypt.encrypt(echo_plain.as_bytes(), CORP);
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = crypt.signature(&ts, "1372623149", &echostr);
    let http = reqwest::Client::new();
    let r = http
        .get(&s.hub_url)
        .query(&[
            ("msg_signature", sig.as_str()),
            ("timestamp", ts.as_str()),
            ("nonce", "1372623149"),
            ("echostr", echostr.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), echo_plain.as_bytes());
    // A wrong signature gets no plaintext.
    let r = http
        .get(&s.hub_url)
        .query(&[
            ("msg_signature", "deadbeef"),
            ("timestamp", ts.as_str()),
            ("nonce", "1372623149"),
            ("echostr", echostr.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(s.hub.events.lock().unwrap().is_empty());
}
