//! The WeCom sandbox and receiver checked by wechatpy: `wechatpy.enterprise.WeChatClient`
//! pointed at the sandbox lists departments and users and sends messages; `WeChatCrypto`
//! decrypts the sandbox's callbacks and produces callbacks huitong's receiver accepts.
//!
//! Needs `HUITONG_TEST_PYTHON` = a python with wechatpy installed (see tests/sdk/setup_venv.sh
//! and tests/sdk/requirements.txt). Without it the test is skipped, unless
//! `HUITONG_TEST_REQUIRE_SERVICES=1`, in which case it fails.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use huitong_connectors::capability::{
    CallbackOutcome, CallbackRequest, InMemoryDedup, RawEvent, ReceiveEvents,
};
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::wecom::events::{CallbackConfig, WecomReceiver};
use huitong_connectors::wecom::sandbox::{SandboxOptions, serve};
use serde_json::{Value, json};

const CORP: &str = "wwsdk0123456789ab";
const SECRET: &str = "sdk-secret";
const AGENT: i64 = 1000002;
const TOKEN: &str = "sdk-token";
const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";

type Captured = Arc<Mutex<Vec<Value>>>;

async fn capture(
    State((store, tx)): State<(Captured, tokio::sync::mpsc::UnboundedSender<()>)>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> &'static str {
    store
        .lock()
        .unwrap()
        .push(json!({"query": q, "body": String::from_utf8_lossy(&body)}));
    let _ = tx.send(());
    ""
}

struct Hub {
    receiver: WecomReceiver,
    events: Mutex<Vec<RawEvent>>,
}

async fn hub_callback(
    State(hub): State<Arc<Hub>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    let req = CallbackRequest {
        headers,
        query,
        body,
    };
    match hub.receiver.handle_callback(&req).await {
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
    }
}

#[tokio::test]
async fn wechatpy_against_the_sandbox_and_the_receiver() {
    let Some(python) = std::env::var_os("HUITONG_TEST_PYTHON") else {
        if std::env::var("HUITONG_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("HUITONG_TEST_PYTHON not set but HUITONG_TEST_REQUIRE_SERVICES=1");
        }
        println!("SKIPPED: HUITONG_TEST_PYTHON not set");
        return;
    };
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let org = OrgFixture::load(&manifest.join("../tests/fixtures/medium-org.json")).unwrap();

    // Where the sandbox delivers its callbacks (captured for wechatpy to decrypt).
    let store: Captured = Arc::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cap_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cap_url = format!("http://{}/events", cap_listener.local_addr().unwrap());
    let cap = axum::Router::new()
        .route("/events", post(capture))
        .with_state((store.clone(), tx));
    tokio::spawn(async move { axum::serve(cap_listener, cap).await.unwrap() });

    // huitong's receiver, for the callbacks wechatpy produces.
    let hub = Arc::new(Hub {
        receiver: WecomReceiver::new(
            CallbackConfig::new(TOKEN.to_string().into(), AES_KEY.to_string().into(), CORP),
            Arc::new(InMemoryDedup::default()),
        )
        .unwrap(),
        events: Mutex::new(Vec::new()),
    });
    let hub_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_url = format!(
        "http://{}/callbacks/wecom/main",
        hub_listener.local_addr().unwrap()
    );
    let hub_app = axum::Router::new()
        .route(
            "/callbacks/wecom/main",
            get(hub_callback).post(hub_callback),
        )
        .with_state(hub.clone());
    tokio::spawn(async move { axum::serve(hub_listener, hub_app).await.unwrap() });

    let mut opts = SandboxOptions::new(org, CORP, SECRET, AGENT);
    opts.token = Some(TOKEN.to_string().into());
    opts.encoding_aes_key = Some(AES_KEY.to_string().into());
    opts.event_url = Some(cap_url);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, srx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, opts, async move {
            let _ = srx.await;
        })
        .await
        .unwrap()
    });

    // Two console changes -> two encrypted, signed deliveries captured.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/_sandbox/org/users"))
        .json(&json!({"key": "sdk1", "name": "控制台", "departments": ["d0"], "mobile": "13811112222"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    http.patch(format!("{base}/_sandbox/org/users/sdk1"))
        .json(&json!({"name": "控制台2"}))
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("delivery")
            .unwrap();
    }
    let events_file =
        std::env::temp_dir().join(format!("huitong-wecom-sdk-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &events_file,
        serde_json::to_vec(&*store.lock().unwrap()).unwrap(),
    )
    .unwrap();

    let script = manifest.join("tests/sdk/wecom_sdk_check.py");
    let args: Vec<String> = vec![
        script.display().to_string(),
        "--base".into(),
        base.clone(),
        "--corp-id".into(),
        CORP.into(),
        "--secret".into(),
        SECRET.into(),
        "--agent-id".into(),
        AGENT.to_string(),
        "--token".into(),
        TOKEN.into(),
        "--aes-key".into(),
        AES_KEY.into(),
        "--events".into(),
        events_file.display().to_string(),
        "--hub".into(),
        hub_url,
    ];
    let out =
        tokio::task::spawn_blocking(move || std::process::Command::new(python).args(args).output())
            .await
            .unwrap()
            .expect("run python");
    let _ = std::fs::remove_file(&events_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "SDK check failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ALL SDK CHECKS PASSED"),
        "{stdout}\n{stderr}"
    );

    // wechatpy's callbacks reached the receiver: the message once (the replay was dropped) and
    // the contact change.
    let events = hub.events.lock().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds, vec!["message.text", "change_contact.update_party"]);
    assert_eq!(events[0].payload["Content"], "from wechatpy");
    assert_eq!(events[1].payload["Id"], "2");

    // wechatpy's calls reached the sandbox: one token, the listings, the sends.
    let calls: Value = reqwest::get(format!("{base}/_sandbox/calls"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls["calls"]["GET /cgi-bin/gettoken"], 2, "{calls}"); // the good and the bad secret
    assert!(
        calls["calls"]["POST /cgi-bin/user/list_id"]
            .as_u64()
            .unwrap()
            >= 2
    );
    assert_eq!(calls["calls"]["GET /cgi-bin/user/list"], 1);
    assert_eq!(calls["calls"]["POST /cgi-bin/message/send"], 3);
    let msgs: Value = reqwest::get(format!("{base}/_sandbox/messages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        msgs["messages"][0]["content"]["content"],
        "hello from wechatpy"
    );
}
