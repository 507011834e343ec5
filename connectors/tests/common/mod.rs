//! The connector tests' harness, shared by every test binary (`mod common;`): start a vendor's
//! sandbox with an org and faults ([`Sandbox::start`] over the library's [`Running`]), the
//! fixtures, fast retry policies, a hub-like receiver for callbacks ([`Hub`]), any local HTTP
//! endpoint ([`serve`]), the official-SDK python ([`sdk_python`], [`run_sdk_check`]) and the
//! assertion shapes the tests repeat.
//!
//! Not every binary uses every helper.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::TryStreamExt;
use huitong_connectors::capability::{
    CallbackError, CallbackOutcome, CallbackRequest, Entity, ListQuery, RawEvent, ReadEntities,
    ReceiveEvents, WriteEntities,
};
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::http::RetryPolicy;
use huitong_connectors::sandbox::{Running, VendorSandbox};
use reqwest::Method;
use serde_json::Value;

/// `tests/fixtures` of the repository.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// An org fixture by file name (`small-org.json`, `medium-org.json`, …).
pub fn org(name: &str) -> OrgFixture {
    OrgFixture::load(&fixtures().join(name)).expect("fixture")
}

/// A retry policy for tests: 1 ms up to `max_delay_ms` between attempts.
pub fn fast_retry(max_delay_ms: u64, max_retries: usize) -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(max_delay_ms),
        max_retries,
    }
}

/// A vendor's sandbox on a free port of 127.0.0.1 until dropped. Its calls panic on a transport
/// error: in a test, that is a failure.
pub struct Sandbox {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    running: Running,
}

impl Sandbox {
    /// Starts the sandbox `opts` describe (org, faults, event URL, … set on them).
    pub async fn start<S: VendorSandbox>(opts: S) -> Self {
        let running = Running::start(opts).await.expect("sandbox starts");
        Self {
            base: running.base.clone(),
            running,
        }
    }

    /// `GET` a path as JSON (`/_sandbox/org`, `/_sandbox/calls`, …).
    pub async fn get(&self, path: &str) -> Value {
        self.running.get(path).await.expect("sandbox GET")
    }

    /// A console call (`/_sandbox/…`): the status and the JSON reply (`null` if none).
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.running
            .admin(method, path, body)
            .await
            .expect("sandbox admin call")
    }

    /// `POST` a JSON body: the status and the JSON reply.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin(Method::POST, path, Some(body)).await
    }

    /// How many calls of `key` ("METHOD /path") the sandbox served.
    pub async fn calls(&self, key: &str) -> u64 {
        self.running.calls(key).await.expect("sandbox calls")
    }

    /// `/_sandbox/events`: the events emitted, with their delivery state.
    pub async fn events(&self) -> Vec<Value> {
        list(self.get("/_sandbox/events").await, "events")
    }

    /// `/_sandbox/messages`: the messages sent through the API.
    pub async fn messages(&self) -> Vec<Value> {
        list(self.get("/_sandbox/messages").await, "messages")
    }

    /// The user `key` in `/_sandbox/org`, if there.
    pub async fn user(&self, key: &str) -> Option<Value> {
        find(&self.get("/_sandbox/org").await["users"], "key", key).cloned()
    }

    /// Console changes in order, each answered with its expected status.
    pub async fn console(&self, steps: Vec<(Method, &str, Option<Value>, u16)>) {
        for (method, path, body, want) in steps {
            let (got, reply) = self.admin(method.clone(), path, body).await;
            assert_eq!(got, want, "{method} {path}: {reply}");
        }
    }

    /// How many `kind` ("users", "departments") the org holds now.
    pub async fn count(&self, kind: &str) -> usize {
        self.get("/_sandbox/org").await[kind]
            .as_array()
            .unwrap()
            .len()
    }

    /// An admin adds a user in the console (`POST /_sandbox/org/users`): answered 201.
    pub async fn add_user(&self, entry: Value) {
        let (status, reply) = self.post("/_sandbox/org/users", entry).await;
        assert_eq!(status, 201, "{reply}");
    }

    /// `POST /_sandbox/tokens/expire`: the status (204).
    pub async fn expire_tokens(&self) -> u16 {
        self.admin(Method::POST, "/_sandbox/tokens/expire", None)
            .await
            .0
    }

    /// Polls `path` until `pred` holds on it (state settles asynchronously); bounded (400 × 25
    /// ms), so a bug fails instead of hanging.
    pub async fn wait_for(&self, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..400 {
            last = self.get(path).await;
            if pred(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("condition on {path} never held: {last}");
    }

    /// Polls the call counters until `key` reaches `n`.
    pub async fn wait_for_calls(&self, key: &str, n: u64) {
        self.wait_for("/_sandbox/calls", |c| {
            c["calls"][key].as_u64().unwrap_or(0) >= n
        })
        .await;
    }

    /// Polls `/_sandbox/events` until the first event's delivery is no longer `pending`.
    pub async fn first_event_settled(&self) -> Value {
        let events = self
            .wait_for("/_sandbox/events", |e| {
                e["events"][0]["delivery"] != "pending" && e["events"][0]["delivery"] != Value::Null
            })
            .await;
        events["events"][0].clone()
    }
}

/// The next item of `rx`, within 20 s.
pub async fn next<T>(rx: &mut tokio::sync::mpsc::Receiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("event within 20 s")
        .expect("channel open")
}

/// A request whose JSON reply is all the test wants.
pub trait JsonReply {
    /// Sends it and reads the reply as JSON (panics on a transport error or a non-JSON reply).
    fn json_reply(self) -> impl std::future::Future<Output = Value> + Send;
}

impl JsonReply for reqwest::RequestBuilder {
    async fn json_reply(self) -> Value {
        self.send().await.unwrap().json().await.unwrap()
    }
}

/// Every record `conn` lists of `entity` for `query`.
pub async fn list_all<C: ReadEntities + ?Sized>(
    conn: &C,
    entity: Entity,
    query: ListQuery,
) -> Vec<Value> {
    conn.list(entity, query).try_collect().await.unwrap()
}

/// The listing of what is directly in `parent`.
pub fn under(parent: impl Into<String>) -> ListQuery {
    ListQuery {
        parent: Some(parent.into()),
        ..Default::default()
    }
}

/// How many users the snapshot `snap` (`/_sandbox/org`) has in its root department.
pub fn root_member_count(snap: &Value) -> usize {
    let root_key = &snap["departments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["parent"].is_null())
        .unwrap()["key"];
    snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["departments"].as_array().unwrap().contains(root_key))
        .count()
}

/// How many member-listing pages of `page_size` reading every department of the snapshot
/// `snap` takes: one per page per department (an empty one still costs a call).
pub fn member_pages(snap: &Value, page_size: usize) -> u64 {
    let mut members: HashMap<&str, usize> = HashMap::new();
    for u in snap["users"].as_array().unwrap() {
        for d in u["departments"].as_array().unwrap() {
            *members.entry(d.as_str().unwrap()).or_default() += 1;
        }
    }
    snap["departments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            members
                .get(d["key"].as_str().unwrap())
                .copied()
                .unwrap_or(0)
                .div_ceil(page_size)
                .max(1) as u64
        })
        .sum()
}

/// `v[field]` as a list (panics if it is not one).
pub fn list(mut v: Value, field: &str) -> Vec<Value> {
    match v[field].take() {
        Value::Array(a) => a,
        other => panic!("{field} is not a list: {other}"),
    }
}

/// The entry of `list` whose `field` (or, for vendor ids, `<vendor>.field`) is `val`.
pub fn find<'a>(list: &'a Value, field: &str, val: impl Into<Value>) -> Option<&'a Value> {
    let val = val.into();
    list.as_array().unwrap().iter().find(|x| {
        x[field] == val
            || ["feishu", "dingtalk", "wecom"]
                .iter()
                .any(|v| x[*v][field] == val)
    })
}

/// `calls["calls"][key]` is at least `n`.
#[track_caller]
pub fn assert_calls_at_least(calls: &Value, key: &str, n: u64) {
    let got = calls["calls"][key].as_u64().unwrap();
    assert!(got >= n, "{key}: {got} calls, wanted at least {n}");
}

/// A local HTTP endpoint serving `app` on a free port until dropped.
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Serves `app` on a free port of 127.0.0.1 (a hub's callback endpoint, a capture).
pub async fn serve(app: axum::Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Served { base, _stop: stop }
}

/// Where a sandbox delivers its callbacks when a test only keeps them (for an SDK to decrypt):
/// `POST /events` answered with a fixed reply.
pub struct Capture {
    /// The event URL.
    pub url: String,
    requests: Arc<Mutex<Vec<RawRequest>>>,
    received: tokio::sync::mpsc::UnboundedReceiver<()>,
    _served: Served,
}

type CaptureState = (
    Arc<Mutex<Vec<RawRequest>>>,
    tokio::sync::mpsc::UnboundedSender<()>,
    &'static str,
);

async fn capture(
    State((store, tx, reply)): State<CaptureState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    store.lock().unwrap().push(RawRequest {
        headers,
        query,
        body,
    });
    let _ = tx.send(());
    reply
}

impl Capture {
    pub async fn start(reply: &'static str) -> Self {
        let requests = Arc::<Mutex<Vec<RawRequest>>>::default();
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new()
            .route("/events", axum::routing::post(capture))
            .with_state((requests.clone(), tx, reply));
        let served = serve(app).await;
        Self {
            url: format!("{}/events", served.base),
            requests,
            received,
            _served: served,
        }
    }

    /// Waits for `n` more deliveries (20 s each at most).
    pub async fn wait(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(20), self.received.recv())
                .await
                .expect("delivery")
                .unwrap();
        }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().unwrap().clone()
    }
}

/// Two console changes, user `sdk1` added (201) then renamed: the two deliveries `capture`
/// received.
pub async fn two_captured_changes(sb: &Sandbox, capture: &mut Capture) -> Vec<RawRequest> {
    sb.add_user(serde_json::json!({"key": "sdk1", "name": "控制台", "departments": ["d0"], "mobile": "13811112222"}))
        .await;
    sb.admin(
        Method::PATCH,
        "/_sandbox/org/users/sdk1",
        Some(serde_json::json!({"name": "控制台2"})),
    )
    .await;
    capture.wait(2).await;
    capture.requests()
}

/// One request as the hub received it.
#[derive(Clone)]
pub struct RawRequest {
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
    pub body: Bytes,
}

/// A hub-like receiver: answers with the receiver's reply, records the accepted events, the raw
/// requests and the rejections, refuses the first `fail_first` deliveries with a 500, and
/// signals every other request once answered.
pub struct Hub<R> {
    pub receiver: R,
    pub events: Mutex<Vec<RawEvent>>,
    pub raw: Mutex<Vec<RawRequest>>,
    pub rejected: Mutex<Vec<CallbackError>>,
    fail_first: AtomicUsize,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
}

/// A running [`Hub`]: `url` is its callback endpoint (GET and POST).
pub struct HubServer<R> {
    pub hub: Arc<Hub<R>>,
    pub url: String,
    delivered: tokio::sync::mpsc::UnboundedReceiver<()>,
    _served: Served,
}

impl<R: ReceiveEvents + 'static> HubServer<R> {
    /// Serves `receiver` at `path` of a free port.
    pub async fn start(receiver: R, path: &str, fail_first: usize) -> Self {
        let (tx, delivered) = tokio::sync::mpsc::unbounded_channel();
        let hub = Arc::new(Hub {
            receiver,
            events: Mutex::default(),
            raw: Mutex::default(),
            rejected: Mutex::default(),
            fail_first: AtomicUsize::new(fail_first),
            tx,
        });
        let app = axum::Router::new()
            .route(path, get(hub_callback::<R>).post(hub_callback::<R>))
            .with_state(hub.clone());
        let served = serve(app).await;
        Self {
            hub,
            url: format!("{}{path}", served.base),
            delivered,
            _served: served,
        }
    }

    /// Waits for `n` more requests answered (a 20 s guard each, so a broken sandbox fails the
    /// test instead of hanging it).
    pub async fn wait(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(20), self.delivered.recv())
                .await
                .expect("a delivery")
                .unwrap();
        }
    }

    /// The events accepted so far.
    pub fn events(&self) -> Vec<RawEvent> {
        self.hub.events.lock().unwrap().clone()
    }

    /// The errors the receiver answered with so far.
    pub fn rejected(&self) -> Vec<CallbackError> {
        self.hub.rejected.lock().unwrap().clone()
    }

    /// The `i`th request received.
    pub fn raw(&self, i: usize) -> RawRequest {
        self.hub.raw.lock().unwrap()[i].clone()
    }
}

async fn hub_callback<R: ReceiveEvents>(
    State(hub): State<Arc<Hub<R>>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if hub.fail_first.load(Ordering::SeqCst) > 0 {
        hub.fail_first.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let req = CallbackRequest {
        headers,
        query,
        body,
    };
    hub.raw.lock().unwrap().push(RawRequest {
        headers: req.headers.clone(),
        query: req.query.clone(),
        body: req.body.clone(),
    });
    let out = match hub.receiver.handle_callback(&req).await {
        Ok(outcome) => {
            let reply = match outcome {
                CallbackOutcome::Event { event, reply } => {
                    hub.events.lock().unwrap().push(event);
                    reply
                }
                CallbackOutcome::Duplicate { reply, .. } | CallbackOutcome::Handshake { reply } => {
                    reply
                }
            };
            (
                StatusCode::from_u16(reply.status).unwrap(),
                [("content-type", reply.content_type)],
                reply.body,
            )
                .into_response()
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap();
            hub.rejected.lock().unwrap().push(e.clone());
            (status, e.to_string()).into_response()
        }
    };
    let _ = hub.tx.send(());
    out
}

/// The python with the official SDKs (`HUITONG_TEST_PYTHON`). `None` when it is not set: the
/// test is skipped (and says so), unless `HUITONG_TEST_REQUIRE_SERVICES=1`, where it fails.
pub fn sdk_python() -> Option<OsString> {
    let Some(python) = std::env::var_os("HUITONG_TEST_PYTHON") else {
        if std::env::var("HUITONG_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("HUITONG_TEST_PYTHON not set but HUITONG_TEST_REQUIRE_SERVICES=1");
        }
        println!("SKIPPED: HUITONG_TEST_PYTHON not set");
        return None;
    };
    Some(python)
}

/// Runs `tests/sdk/<script>` with `args` under `python`; it must exit successfully and print
/// `ALL SDK CHECKS PASSED`. Returns its stdout.
pub async fn run_sdk_check(python: OsString, script: &str, args: Vec<String>) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
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
    stdout
}

/// `--flag value` pairs as command-line arguments.
pub fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), v.to_string()])
        .collect()
}

/// Writes `values` to a fresh temporary JSON file (`huitong-<prefix>-<uuid>.json`), removed
/// when the returned guard drops.
pub fn temp_json(prefix: &str, values: &[Value]) -> TempFile {
    let path = std::env::temp_dir().join(format!("huitong-{prefix}-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, serde_json::to_vec(values).unwrap()).unwrap();
    TempFile(path)
}

/// A file removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Creates `record` twice with `key`, as a retry after a lost reply would, and returns the id
/// after checking that both attempts answered the same one.
pub async fn create_twice<C: WriteEntities + ?Sized>(
    conn: &C,
    entity: Entity,
    record: Value,
    key: &str,
) -> String {
    let first = conn
        .create_keyed(entity, record.clone(), key)
        .await
        .unwrap();
    let again = conn.create_keyed(entity, record, key).await.unwrap();
    assert_eq!(
        first, again,
        "a repeated {entity:?} create returns the first record"
    );
    first
}

/// Deletes `id` twice: the second finds it gone, and that is done too.
pub async fn delete_twice<C: WriteEntities + ?Sized>(conn: &C, entity: Entity, id: &str) {
    conn.delete(entity, id).await.unwrap();
    conn.delete(entity, id).await.unwrap();
}
