//! Vendor callbacks through the real composition (`App`): each vendor's sandbox emits its real
//! encrypted and signed callback for an org change to `/callbacks/<vendor>/<connector>`; the
//! event must arrive once on the `ingress` queue. A replay of the same request is answered but
//! not published again, a tampered one is refused with 401, and a failed publish is answered
//! 503 without making the vendor's retry look like a duplicate.
//!
//! Between the sandbox and the hub sits a small recording proxy, so the test can replay the
//! exact bytes the sandbox sent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use huitong::app::App;
use huitong::config::{self, Sources};
use huitong::queue::{
    ConsumeOptions, ConsumerHandle, DeadLetter, Envelope, Handler, INGRESS, Outcome, Queue,
    QueueError, Task,
};
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::sandbox::VendorSandbox;
use huitong_tests::org::sandbox;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const WECOM_CORP: &str = "ww0123456789abcdef";
const DINGTALK_APP_KEY: &str = "dingsandboxappkey";

fn org() -> OrgFixture {
    OrgFixture::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/small-org.json"))
        .unwrap()
}

const CONFIG: &str = r#"
[server]
body_limit_bytes = 65536

[connectors.fs]
kind = "feishu"
app_id = "cli_sandbox"
app_secret_env = "T_FS_SECRET"
encrypt_key_env = "T_FS_ENCRYPT_KEY"
verification_token_env = "T_FS_VTOKEN"

[connectors.dt]
kind = "dingtalk"
app_key = "dingsandboxappkey"
app_secret_env = "T_DT_SECRET"
token_env = "T_DT_TOKEN"
aes_key_env = "T_DT_AES_KEY"

[connectors.wc]
kind = "wecom"
corp_id = "ww0123456789abcdef"
agent_id = 1000002
corp_secret_env = "T_WC_SECRET"
token_env = "T_WC_TOKEN"
encoding_aes_key_env = "T_WC_AES_KEY"

[connectors.plain]
kind = "dingtalk"
app_key = "dingotherapp"
app_secret_env = "T_DT_SECRET"

[connectors.erp]
kind = "http"
definition = "tryton"
base_url = "https://erp.example.test/db/"
api_key_env = "T_DT_SECRET"
[connectors.erp.params]
company = 1
"#;

fn secrets() -> Vec<(&'static str, &'static str)> {
    vec![
        ("T_FS_SECRET", "fs-app-secret"),
        ("T_FS_ENCRYPT_KEY", "fs-encrypt-key-0123"),
        ("T_FS_VTOKEN", "fs-verification-token"),
        ("T_DT_SECRET", "dt-app-secret"),
        ("T_DT_TOKEN", "dtcallbacktoken"),
        ("T_DT_AES_KEY", AES_KEY),
        ("T_WC_SECRET", "wc-corp-secret"),
        ("T_WC_TOKEN", "wccallbacktoken"),
        ("T_WC_AES_KEY", AES_KEY),
    ]
}

fn secret(name: &str) -> String {
    secrets()
        .into_iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .unwrap()
}

/// Hands every ingress message to the test.
struct Collect(mpsc::UnboundedSender<Envelope>);

#[async_trait]
impl Handler for Collect {
    async fn handle(&self, envelope: &Envelope) -> Outcome {
        let _ = self.0.send(envelope.clone());
        Outcome::Ok
    }
}

/// The real queue, except that the first `fail` publishes fail (a broker outage).
struct FlakyQueue {
    inner: Arc<dyn Queue>,
    fail: AtomicUsize,
}

#[async_trait]
impl Queue for FlakyQueue {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn declare(&self, queue: &str) -> Result<(), QueueError> {
        self.inner.declare(queue).await
    }
    async fn publish(&self, queue: &str, envelope: &Envelope) -> Result<(), QueueError> {
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(QueueError::PublishTimeout {
                queue: queue.to_owned(),
                waited: Duration::from_secs(1),
                last_error: "broker unreachable (test)".into(),
            });
        }
        self.inner.publish(queue, envelope).await
    }
    async fn consume(
        &self,
        queue: &str,
        handler: Arc<dyn Handler>,
        options: ConsumeOptions,
    ) -> Result<ConsumerHandle, QueueError> {
        self.inner.consume(queue, handler, options).await
    }
    async fn dead_letters(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.dead_letters(queue, limit).await
    }
    async fn replay(
        &self,
        queue: Option<&str>,
        id: Option<&str>,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.replay(queue, id).await
    }
    async fn lag(&self, queue: &str) -> Result<u64, QueueError> {
        self.inner.lag(queue).await
    }
    async fn ping(&self) -> Result<(), QueueError> {
        self.inner.ping().await
    }
}

/// One request as the sandbox sent it.
#[derive(Clone)]
struct Recorded {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

struct ProxyState {
    target: String,
    client: reqwest::Client,
    seen: Mutex<Vec<Recorded>>,
}

async fn proxy(
    State(p): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    p.seen.lock().unwrap().push(Recorded {
        method: method.clone(),
        path_and_query: path_and_query.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let r = send(
        &p.client,
        &p.target,
        &method,
        &path_and_query,
        &headers,
        &body,
    )
    .await;
    let status = r.status();
    let content_type = r.headers().get("content-type").cloned();
    let bytes = r.bytes().await.unwrap();
    let mut resp = axum::response::Response::new(axum::body::Body::from(bytes));
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut().insert("content-type", ct);
    }
    resp
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> reqwest::Response {
    let mut req = client.request(method.clone(), format!("{base}{path_and_query}"));
    for (k, v) in headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    req.body(body.clone()).send().await.unwrap()
}

struct Hub {
    base: String,
    proxy: String,
    proxy_state: Arc<ProxyState>,
    messages: mpsc::UnboundedReceiver<Envelope>,
    _consumer: ConsumerHandle,
    _stops: Vec<oneshot::Sender<()>>,
    dir: PathBuf,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Hub {
    /// The App on an embedded queue over SQLite, its first `fail_publishes` publishes failing.
    async fn start(fail_publishes: usize) -> Hub {
        let dir = std::env::temp_dir().join(format!(
            "huitong-callbacks-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("huitong.toml");
        std::fs::write(&file, CONFIG).unwrap();
        let mut env: Vec<(String, String)> = secrets()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        env.push((
            "HUITONG_DATABASE_URL".into(),
            format!("sqlite://{}/huitong.db", dir.display()),
        ));
        let config = config::load(&Sources {
            file: Some(file),
            env,
            overrides: vec![],
        })
        .unwrap();
        let mut app = App::start(config).await.unwrap();
        app.queue = Arc::new(FlakyQueue {
            inner: app.queue.clone(),
            fail: AtomicUsize::new(fail_publishes),
        });
        let (tx, messages) = mpsc::unbounded_channel();
        let consumer = app
            .queue
            .consume(INGRESS, Arc::new(Collect(tx)), ConsumeOptions::default())
            .await
            .unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_app, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            app.serve(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });

        let proxy_state = Arc::new(ProxyState {
            target: base.clone(),
            client: reqwest::Client::new(),
            seen: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .fallback(proxy)
            .with_state(proxy_state.clone());
        let (stop_proxy, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Hub {
            base,
            proxy: proxy_url,
            proxy_state,
            messages,
            _consumer: consumer,
            _stops: vec![stop_app, stop_proxy],
            dir,
        }
    }

    async fn next_message(&mut self) -> Envelope {
        tokio::time::timeout(Duration::from_secs(20), self.messages.recv())
            .await
            .expect("an ingress message within 20 s")
            .unwrap()
    }

    /// Nothing more arrives on the ingress queue (the embedded consumer polls every 200 ms).
    async fn assert_quiet(&mut self) {
        if let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(1500), self.messages.recv()).await
        {
            panic!("unexpected ingress message: {e:?}");
        }
    }

    fn recorded(&self) -> Vec<Recorded> {
        self.proxy_state.seen.lock().unwrap().clone()
    }

    async fn resend(&self, r: &Recorded, body: &Bytes) -> reqwest::Response {
        send(
            &reqwest::Client::new(),
            &self.base,
            &r.method,
            &r.path_and_query,
            &r.headers,
            body,
        )
        .await
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

const RETRIES: [Duration; 2] = [Duration::from_millis(300), Duration::from_millis(600)];

fn feishu_sandbox(event_url: String) -> impl VendorSandbox {
    use huitong_connectors::feishu::sandbox::SandboxOptions;
    let mut opts = SandboxOptions::new(org(), "cli_sandbox", secret("T_FS_SECRET"));
    opts.encrypt_key = Some(secret("T_FS_ENCRYPT_KEY").into());
    opts.verification_token = Some(secret("T_FS_VTOKEN").into());
    opts.event_url = Some(event_url);
    opts.event_retry_delays = RETRIES.to_vec();
    opts
}

fn dingtalk_sandbox(event_url: String) -> impl VendorSandbox {
    use huitong_connectors::dingtalk::sandbox::SandboxOptions;
    let mut opts = SandboxOptions::new(org(), DINGTALK_APP_KEY, secret("T_DT_SECRET"));
    opts.token = Some(secret("T_DT_TOKEN").into());
    opts.aes_key = Some(secret("T_DT_AES_KEY").into());
    opts.event_url = Some(event_url);
    opts.event_retry_delays = RETRIES.to_vec();
    opts
}

fn wecom_sandbox(event_url: String) -> impl VendorSandbox {
    use huitong_connectors::wecom::sandbox::SandboxOptions;
    let mut opts = SandboxOptions::new(org(), WECOM_CORP, secret("T_WC_SECRET"), 1000002);
    opts.token = Some(secret("T_WC_TOKEN").into());
    opts.encoding_aes_key = Some(secret("T_WC_AES_KEY").into());
    opts.event_url = Some(event_url);
    opts.event_retry_delays = RETRIES.to_vec();
    opts
}

/// A new user through the sandbox's console: the sandbox emits the vendor's event.
async fn add_user(sandbox: &str, key: &str) {
    let r = reqwest::Client::new()
        .post(format!("{sandbox}/_sandbox/org/users"))
        .json(&json!({
            "key": key, "name": "新人", "en_name": "New Person", "email": format!("{key}@example.cn"),
            "mobile": "13700000000", "employee_no": "E900001", "title": "实习生",
            "departments": ["d1"], "active": true, "gender": "female", "hired_at": "2026-11-30"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

/// Waits until the sandbox considers every emitted event delivered.
async fn sandbox_events_delivered(sandbox: &str) -> Vec<Value> {
    for _ in 0..100 {
        let body: Value = reqwest::get(format!("{sandbox}/_sandbox/events"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = body["events"].as_array().cloned().unwrap_or_default();
        if !events.is_empty() && events.iter().all(|e| e["delivery"] == "delivered") {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sandbox events not delivered");
}

/// Changes one character in the middle of the longest base64 run (the ciphertext).
fn tamper(body: &[u8]) -> Bytes {
    let is_b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    let (mut best, mut start) = ((0, 0), None);
    for (i, &b) in body.iter().chain(std::iter::once(&b' ')).enumerate() {
        match (is_b64(b), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s > best.1 - best.0 {
                    best = (s, i);
                }
                start = None;
            }
            _ => {}
        }
    }
    assert!(best.1 - best.0 > 40, "no ciphertext in the body");
    let mut out = body.to_vec();
    let mid = (best.0 + best.1) / 2;
    out[mid] = if out[mid] == b'A' { b'B' } else { b'A' };
    Bytes::from(out)
}

/// The whole story for one vendor (`opts`: its sandbox, events POSTed to the given URL): event
/// queued once, replay answered and not queued, tampering refused.
async fn story<S: VendorSandbox>(
    vendor: &str,
    connector: &str,
    opts: fn(String) -> S,
    expected_type: &str,
) {
    let mut hub = Hub::start(0).await;
    let url = format!("{}/callbacks/{vendor}/{connector}", hub.proxy);
    let running = sandbox(opts(url)).await;
    add_user(&running.base, "newbie").await;

    let msg = hub.next_message().await;
    let Task::IngressV1 {
        connector: c,
        event_type,
        event_id,
        payload,
        received_at_ms,
    } = &msg.task
    else {
        panic!("not an ingress task: {msg:?}");
    };
    assert_eq!(c, connector);
    assert_eq!(event_type, expected_type);
    assert!(event_id.as_deref().is_some_and(|id| !id.is_empty()));
    assert!(*received_at_ms > 0);
    assert!(
        payload.to_string().contains("newbie"),
        "payload names the new user: {payload}"
    );
    assert_eq!(msg.partition_key, connector);

    let events = sandbox_events_delivered(&running.base).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["attempts"], 1);
    let seen = hub.recorded();
    assert_eq!(seen.len(), 1, "the sandbox delivered once");
    let original = &seen[0];

    // Replay of the very same request: answered like the original, nothing published.
    let r = hub.resend(original, &original.body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    // Tampered ciphertext: 401, nothing published.
    let r = hub.resend(original, &tamper(&original.body)).await;
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert!(err["error"].as_str().is_some(), "{err}");

    hub.assert_quiet().await;

    let m = hub.metrics().await;
    for outcome in ["accepted", "duplicate", "rejected"] {
        let line = format!(
            "huitong_callbacks_total{{vendor=\"{vendor}\",connector=\"{connector}\",outcome=\"{outcome}\"}}"
        );
        assert!(
            m.lines().any(|l| l.starts_with(&line)),
            "missing {line} in\n{m}"
        );
    }
    assert!(
        m.lines().any(|l| l.starts_with(&format!(
            "huitong_callbacks_rejected_total{{vendor=\"{vendor}\",connector=\"{connector}\",reason=\"bad_signature\"}}"
        ))),
        "{m}"
    );
}

#[tokio::test]
async fn feishu_callback_is_queued_once() {
    story("feishu", "fs", feishu_sandbox, "contact.user.created_v3").await;
}

#[tokio::test]
async fn dingtalk_callback_is_queued_once() {
    story("dingtalk", "dt", dingtalk_sandbox, "user_add_org").await;
}

#[tokio::test]
async fn wecom_callback_is_queued_once() {
    story("wecom", "wc", wecom_sandbox, "change_contact.create_user").await;
}

/// The publish fails: the vendor gets a 503 and retries, and the retry is queued (the failed
/// attempt did not mark the event as seen).
#[tokio::test]
async fn failed_publish_is_retried_not_lost() {
    retried("feishu", "fs", feishu_sandbox).await;
    retried("dingtalk", "dt", dingtalk_sandbox).await;
    retried("wecom", "wc", wecom_sandbox).await;
}

/// [`failed_publish_is_retried_not_lost`] for one vendor.
async fn retried<S: VendorSandbox>(vendor: &str, connector: &str, opts: fn(String) -> S) {
    let mut hub = Hub::start(1).await;
    let url = format!("{}/callbacks/{vendor}/{connector}", hub.proxy);
    let running = sandbox(opts(url)).await;
    add_user(&running.base, "retried").await;
    let msg = hub.next_message().await;
    assert!(
        matches!(&msg.task, Task::IngressV1 { connector: c, .. } if c == connector),
        "{msg:?}"
    );
    let events = sandbox_events_delivered(&running.base).await;
    assert_eq!(events[0]["attempts"], 2, "{vendor}: {events:?}");
    assert_eq!(
        hub.recorded().len(),
        2,
        "{vendor}: one refused, one accepted"
    );
    hub.assert_quiet().await;
    let m = hub.metrics().await;
    assert!(
        m.contains(&format!(
            "huitong_callbacks_total{{vendor=\"{vendor}\",connector=\"{connector}\",outcome=\"publish_failed\"}}"
        )),
        "{m}"
    );
}

#[tokio::test]
async fn wecom_url_verification_is_answered_through_the_hub() {
    use huitong_connectors::wxbiz::WxBizMsgCrypt;
    let hub = Hub::start(0).await;
    let crypt =
        WxBizMsgCrypt::new(secret("T_WC_TOKEN").into(), &secret("T_WC_AES_KEY").into()).unwrap();
    let echo_plain = "7390215448262103785";
    // Many echostr values contain '+' and '/': the query must be URL-decoded properly.
    let echostr = crypt.encrypt(echo_plain.as_bytes(), WECOM_CORP);
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = crypt.signature(&ts, "1372623149", &echostr);
    let url = format!("{}/callbacks/wecom/wc", hub.base);
    let http = reqwest::Client::new();
    // WeCom wants the answer within 1 s: how long it takes is measured by the
    // `callback_verification` bench (tests/benches), against a baseline of the same run, not
    // asserted here on a shared machine's wall clock.
    let r = http
        .get(&url)
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

    let r = http
        .get(&url)
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
    assert!(!r.text().await.unwrap().contains(echo_plain));
}

#[tokio::test]
async fn misrouted_and_unconfigured_callbacks_are_refused_clearly() {
    let hub = Hub::start(0).await;
    let http = reqwest::Client::new();
    let post = |path: &str| http.post(format!("{}{path}", hub.base)).body("{}").send();

    // An unknown connector, a known one under another vendor's path, and one without callback
    // settings: one and the same 404, which names no connector, kind or setting (the detail
    // goes to the log), so a stranger cannot enumerate the configuration.
    let mut answers = Vec::new();
    for path in [
        "/callbacks/feishu/nobody",
        "/callbacks/wecom/fs",
        "/callbacks/dingtalk/plain",
        "/callbacks/feishu/plain",
        // A declared (http) connector takes no vendor callbacks.
        "/callbacks/http/erp",
    ] {
        let r = post(path).await.unwrap();
        let status = r.status();
        let content_type = r.headers().get("content-type").cloned();
        let body = r.bytes().await.unwrap();
        answers.push((path, status, content_type, body));
    }
    for (path, status, content_type, body) in &answers {
        assert_eq!(*status, 404, "{path}");
        assert_eq!(
            (status, content_type, body),
            (&answers[0].1, &answers[0].2, &answers[0].3),
            "{path} answers differently from {}",
            answers[0].0
        );
        let text = String::from_utf8_lossy(body);
        for word in [
            "nobody", "fs", "plain", "feishu", "wecom", "dingtalk", "token", "aes", "erp", "http",
        ] {
            assert!(!text.contains(word), "{path}: {text} names {word:?}");
        }
    }

    // Over server.body_limit_bytes (64 KiB here).
    let r = http
        .post(format!("{}/callbacks/feishu/fs", hub.base))
        .body(vec![b'x'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Unsigned garbage for a configured receiver.
    let r = post("/callbacks/dingtalk/dt").await.unwrap();
    assert_eq!(r.status(), 401);
}

/// Standard base64 with padding (the test crate has no base64 dependency).
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One answer of the hub, as a stranger sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: String,
}

async fn answer_of(r: reqwest::Response) -> Answer {
    Answer {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: r.text().await.unwrap(),
    }
}

/// `{"encrypt": base64(iv ‖ AES-256-CBC(sha256(encrypt key), iv, blocks))}`, `blocks` as given.
fn feishu_body(iv: [u8; 16], blocks: &[u8]) -> Vec<u8> {
    use huitong_connectors::crypto;
    let key = crypto::sha256(secret("T_FS_ENCRYPT_KEY").as_bytes());
    let mut data = iv.to_vec();
    data.extend(crypto::aes256_cbc_encrypt_raw(&key, &iv, blocks).unwrap());
    json!({ "encrypt": b64(&data) }).to_string().into_bytes()
}

/// Issue 21, finding 2, as the attacker ran it: unsigned Feishu callbacks whose ciphertext has
/// a bad padding, or a good one, must get byte-identical answers; 50 modified ciphertexts of a
/// captured event get one answer; the challenge and signed events still work.
#[tokio::test]
async fn feishu_padding_oracle_is_closed() {
    use huitong_connectors::crypto::pkcs7_pad;
    use huitong_connectors::feishu::events::{build_callback, encrypt};
    let mut hub = Hub::start(0).await;
    let url = format!("{}/callbacks/feishu/fs", hub.base);
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| http.post(&url).body(body).send();

    let mut bad = [b'x'; 16];
    bad[15] = 0;
    let mut good = b"not json".to_vec();
    pkcs7_pad(&mut good, 16);
    let bad_padding = answer_of(post(feishu_body([1; 16], &bad)).await.unwrap()).await;
    let good_padding = answer_of(post(feishu_body([1; 16], &good)).await.unwrap()).await;
    println!("unsigned, bad padding:  {bad_padding:?}");
    println!("unsigned, good padding: {good_padding:?}");
    assert_eq!(bad_padding, good_padding);
    assert!(!bad_padding.body.contains("padding"), "{bad_padding:?}");
    assert!(bad_padding.status >= 400);

    // A captured event (its headers lost), the last byte of its next-to-last block flipped 50
    // ways: one of them makes the padding valid again, one is the capture itself.
    let vt = secret("T_FS_VTOKEN");
    let ek = secret("T_FS_ENCRYPT_KEY");
    let event = json!({"schema":"2.0","header":{"event_id":"captured-1","event_type":"contact.user.updated_v3",
        "create_time":"0","token":vt,"app_id":"cli_sandbox","tenant_key":"t"},
        "event":{"object":{"open_id":"ou_x","name":"张三","mobile":"+8613800000000"}}});
    let now = chrono::Utc::now().timestamp();
    let (signed_headers, captured) = build_callback(Some(&ek), &event, now, "n1");
    let v: Value = serde_json::from_slice(&captured).unwrap();
    let data = b64_decode(v["encrypt"].as_str().unwrap());
    let pad = (16 - event.to_string().len() % 16) as u8;
    let flip = data.len() - 17;
    let mut guesses: Vec<u8> = (0u8..49).collect();
    guesses.push(if pad ^ 1 < 49 { 200 } else { pad ^ 1 });
    let mut answers = std::collections::BTreeMap::new();
    for d in guesses {
        let mut forged = data.clone();
        forged[flip] ^= d;
        let body = json!({ "encrypt": b64(&forged) }).to_string().into_bytes();
        *answers
            .entry(answer_of(post(body).await.unwrap()).await)
            .or_insert(0) += 1;
    }
    println!("50 forged ciphertexts: {answers:?}");
    assert_eq!(answers.len(), 1, "{answers:#?}");
    assert_eq!(answers.keys().next(), Some(&bad_padding));

    // The challenge (encrypted, unsigned) is still answered …
    let challenge = json!({"type":"url_verification","challenge":"chal-42","token":vt});
    let body = json!({ "encrypt": encrypt(&ek, challenge.to_string().as_bytes()) });
    let r = post(body.to_string().into_bytes()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"challenge": "chal-42"})
    );
    // … and a correctly signed event is accepted and queued.
    let mut req = http.post(&url).body(captured);
    for (k, v) in signed_headers {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let msg = hub.next_message().await;
    assert!(
        matches!(&msg.task, Task::IngressV1 { event_id: Some(id), .. } if id == "captured-1"),
        "{msg:?}"
    );
}

/// Decodes standard base64 (with padding).
fn b64_decode(s: &str) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = A.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

/// DingTalk and WeCom sign the ciphertext: a correctly signed callback whose ciphertext has a
/// bad padding, a malformed buffer, another owner or a plaintext that does not parse gets one
/// answer, without detail.
#[tokio::test]
async fn signed_callbacks_that_cannot_be_opened_are_answered_alike() {
    use huitong_connectors::crypto::{aes256_cbc_encrypt_raw, pkcs7_pad};
    use huitong_connectors::wxbiz::{WxBizMsgCrypt, decode_aes_key};
    let hub = Hub::start(0).await;
    let http = reqwest::Client::new();
    let key = decode_aes_key(AES_KEY).unwrap();
    let raw = |blocks: &[u8]| b64(&aes256_cbc_encrypt_raw(&key, &key[..16], blocks).unwrap());
    let mut bad = vec![b'x'; 32];
    bad[31] = 0;
    let mut short = b"short".to_vec();
    pkcs7_pad(&mut short, 32);
    for (vendor, connector, token, owner) in [
        ("dingtalk", "dt", "T_DT_TOKEN", DINGTALK_APP_KEY),
        ("wecom", "wc", "T_WC_TOKEN", WECOM_CORP),
    ] {
        let crypt =
            WxBizMsgCrypt::new(secret(token).into(), &secret("T_DT_AES_KEY").into()).unwrap();
        let cases = [
            ("bad padding", raw(&bad)),
            ("buffer too short", raw(&short)),
            ("another owner", crypt.encrypt(b"{}", "someoneelse")),
            ("not JSON / XML", crypt.encrypt(b"<<{{", owner)),
        ];
        let mut answers = std::collections::BTreeMap::new();
        for (i, (what, enc)) in cases.iter().enumerate() {
            let ts = if vendor == "dingtalk" {
                chrono::Utc::now().timestamp_millis().to_string()
            } else {
                chrono::Utc::now().timestamp().to_string()
            };
            let nonce = format!("n{i}");
            let sig = crypt.signature(&ts, &nonce, enc);
            let body = if vendor == "dingtalk" {
                json!({ "encrypt": enc }).to_string()
            } else {
                format!(
                    "<xml><ToUserName><![CDATA[{owner}]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
                )
            };
            let r = http
                .post(format!("{}/callbacks/{vendor}/{connector}", hub.base))
                .query(&[
                    ("msg_signature", sig.as_str()),
                    ("timestamp", ts.as_str()),
                    ("nonce", nonce.as_str()),
                ])
                .body(body)
                .send()
                .await
                .unwrap();
            answers
                .entry(answer_of(r).await)
                .or_insert_with(Vec::new)
                .push(*what);
        }
        println!("{vendor}: {answers:?}");
        assert_eq!(answers.len(), 1, "{vendor}: {answers:#?}");
        let only = answers.keys().next().unwrap();
        assert!(only.status >= 400, "{vendor}: {only:?}");
        for word in ["padding", "receive id", "owner", "JSON", "XML", "buffer"] {
            assert!(!only.body.contains(word), "{vendor}: {only:?}");
        }
    }
}
