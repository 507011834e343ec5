//! What every vendor sandbox shares: fixture loading, call counting, the fault injector, the
//! record of sent messages and emitted events, event delivery to `--event-url` with retries, and
//! the `/_sandbox/` admin endpoints (the same in every vendor's sandbox):
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /_sandbox/org` | the current org in the fixture format, each entry with its vendor ids |
//! | `GET /_sandbox/calls` | API calls per endpoint (`"METHOD /path"`) and faults injected |
//! | `GET /_sandbox/messages` | messages sent through the API, with their content |
//! | `GET /_sandbox/events` | events emitted, with their delivery state |
//! | `POST /_sandbox/org/users`, `POST /_sandbox/org/departments` | add one fixture entry (key included) |
//! | `PATCH`/`DELETE /_sandbox/org/users/{key}`, `/_sandbox/org/departments/{key}` | edit / remove |
//! | `POST /_sandbox/tokens/expire` | expire every access token now |
//!
//! The admin changes stand in for an HR admin working in the vendor's console: each one emits
//! the vendor's own event.

pub mod faults;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{Value, json};

pub use faults::{Fault, FaultInjector, FaultPlan, FaultSpec, FaultSpecError};

use crate::fixture::{FixtureDepartment, FixtureUser};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox options: {0}")]
    Options(String),
    #[error("sandbox server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves a sandbox router on `listener` until `shutdown` resolves, then closes idle and
/// in-flight connections gracefully. HTTP/1 with Title-Case header names, as the vendors' gateways
/// send them (some SDKs look headers up case-sensitively, e.g. lark-oapi's `X-Tt-Logid`);
/// WebSocket upgrades supported.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // e.g. too many open files: back off a little instead of spinning
                    tracing::warn!(error = %e, "sandbox accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let svc = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .title_case_headers(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Locks a std mutex, recovering the data if another thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One event as the sandbox will deliver it.
pub struct EncodedEvent {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// How a vendor encodes an event for HTTP delivery (encryption, signature); called per attempt
/// so timestamps and nonces are fresh.
pub trait EventEncoder: Send + Sync + 'static {
    fn encode(&self, event: &Value) -> EncodedEvent;
    /// Like [`EventEncoder::encode`], plus query parameters appended to the event URL (DingTalk
    /// and WeCom put the signature, timestamp and nonce in the query). Default: none.
    fn encode_with_query(&self, event: &Value) -> (Vec<(String, String)>, EncodedEvent) {
        (Vec::new(), self.encode(event))
    }
    /// Whether a 2xx reply body counts as delivered (DingTalk wants its encrypted `success`).
    /// Default: any 2xx is.
    fn accept_reply(&self, _body: &[u8]) -> bool {
        true
    }
}

/// Shared state of one sandbox instance.
pub struct SandboxCore {
    pub vendor: &'static str,
    pub injector: FaultInjector,
    calls: Mutex<BTreeMap<String, u64>>,
    faults: Mutex<BTreeMap<String, u64>>,
    messages: Mutex<Vec<Value>>,
    events: Mutex<Vec<Value>>,
    /// Every emitted event, for push channels (long connection / stream mode).
    pub bus: tokio::sync::broadcast::Sender<Value>,
    delivery: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(usize, Value)>>>,
}

impl SandboxCore {
    pub fn new(vendor: &'static str, faults: FaultSpec) -> Arc<Self> {
        let (bus, _) = tokio::sync::broadcast::channel(1024);
        Arc::new(Self {
            vendor,
            injector: FaultInjector::new(faults),
            calls: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(BTreeMap::new()),
            messages: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            bus,
            delivery: Mutex::new(None),
        })
    }

    pub fn count_call(&self, endpoint: &str) {
        *lock(&self.calls).entry(endpoint.to_string()).or_default() += 1;
    }

    pub fn count_fault(&self, kind: &str) {
        *lock(&self.faults).entry(kind.to_string()).or_default() += 1;
    }

    pub fn record_message(&self, msg: Value) {
        lock(&self.messages).push(msg);
    }

    pub fn messages(&self) -> Vec<Value> {
        lock(&self.messages).clone()
    }

    /// Records an event and hands it to the push channels and the HTTP delivery.
    pub fn emit(&self, event: Value) {
        let idx = {
            let mut ev = lock(&self.events);
            ev.push(json!({"event": event, "delivery": "pending", "attempts": 0}));
            ev.len() - 1
        };
        // No receivers is fine: nobody is connected.
        let _ = self.bus.send(event.clone());
        match lock(&self.delivery).as_ref() {
            Some(tx) => {
                let _ = tx.send((idx, event));
            }
            None => {
                lock(&self.events)[idx]["delivery"] = json!("not-configured");
            }
        }
    }

    pub fn events(&self) -> Vec<Value> {
        lock(&self.events).clone()
    }

    fn set_delivery(&self, idx: usize, state: &str, attempts: u32) {
        if let Some(e) = lock(&self.events).get_mut(idx) {
            e["delivery"] = json!(state);
            e["attempts"] = json!(attempts);
        }
    }

    /// Starts delivering emitted events to `url`, in order, retrying each after `retry_delays`
    /// (Feishu waits 15 s, 5 min, 1 h, 6 h; a sandbox usually uses shorter ones). Stops when
    /// `stop` turns true.
    pub fn start_delivery(
        self: &Arc<Self>,
        url: String,
        encoder: Arc<dyn EventEncoder>,
        retry_delays: Vec<Duration>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), SandboxError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SandboxError::Options(format!("cannot build HTTP client: {e}")))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Value)>();
        *lock(&self.delivery) = Some(tx);
        let core = Arc::downgrade(self);
        let vendor = self.vendor;
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    n = rx.recv() => n,
                    _ = stop.changed() => None,
                };
                let Some((idx, event)) = next else { break };
                let mut attempts = 0u32;
                let mut delivered = false;
                for delay in std::iter::once(Duration::ZERO).chain(retry_delays.iter().copied()) {
                    if !delay.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => return,
                        }
                    }
                    attempts += 1;
                    let (query, enc) = encoder.encode_with_query(&event);
                    // JSON unless the encoder sets its own type (WeCom posts XML).
                    let typed = enc
                        .headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
                    let mut req = client.post(&url);
                    if !typed {
                        req = req.header("content-type", "application/json");
                    }
                    if !query.is_empty() {
                        req = req.query(&query);
                    }
                    for (k, v) in &enc.headers {
                        req = req.header(k.as_str(), v.as_str());
                    }
                    match req.body(enc.body).send().await {
                        Ok(r) if r.status().is_success() => {
                            match crate::http::read_limited(vendor, r, 64 * 1024).await {
                                Ok(body) if encoder.accept_reply(&body) => {
                                    delivered = true;
                                    break;
                                }
                                _ => tracing::warn!(
                                    vendor,
                                    attempts,
                                    "event delivery answered without the expected reply"
                                ),
                            }
                        }
                        Ok(r) => tracing::warn!(
                            vendor,
                            status = r.status().as_u16(),
                            attempts,
                            "event delivery refused"
                        ),
                        Err(e) => {
                            tracing::warn!(vendor, error = %e, attempts, "event delivery failed")
                        }
                    }
                }
                let Some(core) = core.upgrade() else { break };
                core.set_delivery(
                    idx,
                    if delivered { "delivered" } else { "failed" },
                    attempts,
                );
            }
        });
        Ok(())
    }
}

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// The org operations a vendor sandbox exposes to its admin endpoints. Entries are in the fixture
/// format; each returned entry also carries the vendor's ids.
pub trait OrgAdmin: Send + Sync + 'static {
    /// `{"departments":[…],"users":[…]}` in the fixture format plus vendor ids.
    fn snapshot(&self) -> Value;
    fn create_user(&self, user: FixtureUser) -> Result<Value, AdminError>;
    fn patch_user(&self, key: &str, patch: Value) -> Result<Value, AdminError>;
    fn delete_user(&self, key: &str) -> Result<(), AdminError>;
    fn create_department(&self, dept: FixtureDepartment) -> Result<Value, AdminError>;
    fn patch_department(&self, key: &str, patch: Value) -> Result<Value, AdminError>;
    fn delete_department(&self, key: &str) -> Result<(), AdminError>;
    fn expire_tokens(&self);
}

/// Applies a JSON merge of `patch` onto a fixture record; the key cannot change.
pub fn merge_fixture<T>(record: &T, key: &str, patch: &Value) -> Result<T, AdminError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let Value::Object(p) = patch else {
        return Err(AdminError::Invalid("patch must be a JSON object".into()));
    };
    let mut v = serde_json::to_value(record).map_err(|e| AdminError::Invalid(e.to_string()))?;
    if let Value::Object(m) = &mut v {
        for (k, val) in p {
            if k == "key" && val.as_str() != Some(key) {
                return Err(AdminError::Invalid("key cannot change".into()));
            }
            m.insert(k.clone(), val.clone());
        }
    }
    serde_json::from_value(v).map_err(|e| AdminError::Invalid(e.to_string()))
}

struct AdminState {
    core: Arc<SandboxCore>,
    org: Arc<dyn OrgAdmin>,
}

type Admin = State<Arc<AdminState>>;

/// The `/_sandbox/` router, merged into each vendor's router.
pub fn admin_router(core: Arc<SandboxCore>, org: Arc<dyn OrgAdmin>) -> Router {
    let st = Arc::new(AdminState { core, org });
    Router::new()
        .route(
            "/_sandbox/org",
            get(|State(s): Admin| async move { Json(s.org.snapshot()) }),
        )
        .route(
            "/_sandbox/calls",
            get(|State(s): Admin| async move {
                let calls = lock(&s.core.calls).clone();
                let faults = lock(&s.core.faults).clone();
                let total: u64 = calls.values().sum();
                Json(json!({"total": total, "calls": calls, "faults": faults}))
            }),
        )
        .route(
            "/_sandbox/messages",
            get(|State(s): Admin| async move { Json(json!({"messages": s.core.messages()})) }),
        )
        .route(
            "/_sandbox/events",
            get(|State(s): Admin| async move { Json(json!({"events": s.core.events()})) }),
        )
        .route(
            "/_sandbox/tokens/expire",
            post(|State(s): Admin| async move {
                s.org.expire_tokens();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/_sandbox/org/users",
            post(|State(s): Admin, body: axum::body::Bytes| async move {
                let u: FixtureUser = serde_json::from_slice(&body)
                    .map_err(|e| AdminError::Invalid(e.to_string()))?;
                s.org.create_user(u).map(|v| (StatusCode::CREATED, Json(v)))
            }),
        )
        .route(
            "/_sandbox/org/users/{key}",
            patch(
                |State(s): Admin, Path(key): Path<String>, body: axum::body::Bytes| async move {
                    let p: Value = serde_json::from_slice(&body)
                        .map_err(|e| AdminError::Invalid(e.to_string()))?;
                    s.org.patch_user(&key, p).map(Json)
                },
            )
            .delete(|State(s): Admin, Path(key): Path<String>| async move {
                s.org.delete_user(&key).map(|()| StatusCode::NO_CONTENT)
            }),
        )
        .route(
            "/_sandbox/org/departments",
            post(|State(s): Admin, body: axum::body::Bytes| async move {
                let d: FixtureDepartment = serde_json::from_slice(&body)
                    .map_err(|e| AdminError::Invalid(e.to_string()))?;
                s.org
                    .create_department(d)
                    .map(|v| (StatusCode::CREATED, Json(v)))
            }),
        )
        .route(
            "/_sandbox/org/departments/{key}",
            patch(
                |State(s): Admin, Path(key): Path<String>, body: axum::body::Bytes| async move {
                    let p: Value = serde_json::from_slice(&body)
                        .map_err(|e| AdminError::Invalid(e.to_string()))?;
                    s.org.patch_department(&key, p).map(Json)
                },
            )
            .delete(|State(s): Admin, Path(key): Path<String>| async move {
                s.org
                    .delete_department(&key)
                    .map(|()| StatusCode::NO_CONTENT)
            }),
        )
        .with_state(st)
}
