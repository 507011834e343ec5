//! What every vendor sandbox shares: fixture loading, call counting, the fault injector, the
//! record of sent messages and emitted events, event delivery to `--event-url` with retries, and
//! the `/_sandbox/` admin endpoints (the same in every vendor's sandbox):
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /_sandbox/org` | the current org in the fixture format, each entry with its vendor ids |
//! | `GET /_sandbox/calls` | API calls per endpoint (`"METHOD /path"`), faults injected, and per endpoint under `"windows"`: `count`, `first_ms`/`last_ms` (epoch ms), `peak_1s`/`peak_60s` (most calls served in any sliding 1 s / 60 s window), `rate_limited` (calls refused by the enforced limits) |
//! | `GET /_sandbox/messages` | messages sent through the API, with their content |
//! | `GET /_sandbox/events` | events emitted, with their delivery state |
//! | `POST /_sandbox/org/users`, `POST /_sandbox/org/departments` | add one fixture entry (key included) |
//! | `PATCH`/`DELETE /_sandbox/org/users/{key}`, `/_sandbox/org/departments/{key}` | edit / remove |
//! | `POST /_sandbox/tokens/expire` | expire every access token now |
//!
//! The admin changes stand in for an HR admin working in the vendor's console: each one emits
//! the vendor's own event.
//!
//! Rate metering is always on (see [`SandboxCore::count_call`]); enforcing the vendors' published
//! limits in sliding windows is opt-in per sandbox (`enforce_rate_limits`, see
//! [`SandboxCore::enforce`]).

pub mod faults;
pub(crate) mod index;
pub(crate) mod kit;
pub(crate) mod prelude;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

pub use faults::{Fault, FaultInjector, FaultPlan, FaultSpec, FaultSpecError};

use crate::fixture::{FixtureDepartment, FixtureUser, OrgFixture};

/// What every vendor's sandbox takes besides its own credentials and switches; each vendor's
/// `SandboxOptions` holds one and derefs to it (`opts.faults = …`).
#[derive(Clone)]
pub struct CommonOptions {
    /// The org it starts with.
    pub org: OrgFixture,
    /// Where the vendor's events are POSTed.
    pub event_url: Option<String>,
    pub faults: FaultSpec,
    /// Lifetime of an access token (all three vendors: 7200 s).
    pub token_ttl: Duration,
    /// Waits before the retries of a failed event delivery (the vendor's own schedule).
    pub event_retry_delays: Vec<Duration>,
    /// Apply the sandbox's built-in approximate limits (on by default).
    pub rate_limits: bool,
    /// Refuse a call over the vendor's *published* limit for its API in a sliding window,
    /// with the vendor's own reply; off by default. Every call is metered either way.
    pub enforce_rate_limits: bool,
    /// Scales the limits `enforce_rate_limits` enforces (tests use tiny ones).
    pub rate_limit_scale: RateScale,
}

impl CommonOptions {
    pub fn new(org: OrgFixture, event_retry_delays: Vec<Duration>) -> Self {
        Self {
            org,
            event_url: None,
            faults: FaultSpec::none(),
            token_ttl: Duration::from_secs(7200),
            event_retry_delays,
            rate_limits: true,
            enforce_rate_limits: false,
            rate_limit_scale: RateScale::default(),
        }
    }
}

/// A sandbox serving on a free port of 127.0.0.1 until dropped: what the tests, the demo and
/// `huitong sandbox` start, for any vendor.
pub struct Running {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), SandboxError>>,
}

impl Running {
    /// Starts `opts`' sandbox; its options are checked first.
    pub async fn start<S: VendorSandbox>(opts: S) -> Result<Self, SandboxError> {
        opts.check()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(opts.serve(listener, async move {
            let _ = rx.await;
        }));
        Ok(Self {
            base,
            _stop: tx,
            served,
        })
    }

    /// Whether it stopped (it only stops when dropped, or on an error).
    pub fn is_finished(&self) -> bool {
        self.served.is_finished()
    }

    /// `GET` a path of the sandbox as JSON (`/_sandbox/calls`, …).
    pub async fn get(&self, path: &str) -> Result<Value, reqwest::Error> {
        reqwest::get(format!("{}{path}", self.base))
            .await?
            .json()
            .await
    }

    /// A console call (`/_sandbox/org/…`): the status and the JSON reply (`null` if none).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut r = reqwest::Client::new().request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// How many calls of `key` ("METHOD /path") it served.
    pub async fn calls(&self, key: &str) -> Result<u64, reqwest::Error> {
        let v = self.get("/_sandbox/calls").await?;
        Ok(v["calls"][key].as_u64().unwrap_or(0))
    }
}

/// A vendor's sandbox as `huitong sandbox <vendor>` runs it: options that deref to the
/// [`CommonOptions`], a line that names the app, and `serve`.
pub trait VendorSandbox:
    std::ops::DerefMut<Target = CommonOptions> + Send + Sized + 'static
{
    const VENDOR: &'static str;
    /// `app cli_x`, `corp wwx`: what the start-up line names.
    fn app_label(&self) -> String;
    /// Options that only make sense together, checked before binding.
    fn check(&self) -> Result<(), SandboxError> {
        Ok(())
    }
    /// The sandbox as a router; `stop` ends its event delivery and push sessions.
    fn router(self, stop: tokio::sync::watch::Receiver<bool>) -> Result<Router, SandboxError>;
    /// Runs the sandbox on `listener` until `shutdown` resolves (see [`serve_vendor`]).
    fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<(), SandboxError>> + Send {
        serve_vendor(listener, self, shutdown)
    }
}

/// `opts`' sandbox as a router (for embedding); `stop` ends its event delivery and push
/// sessions. Each vendor's `sandbox::router`.
pub fn vendor_router<S: VendorSandbox>(
    opts: S,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Router, SandboxError> {
    opts.router(stop)
}

/// Runs `opts`' sandbox on `listener` until `shutdown` resolves, then ends its event delivery
/// and push sessions. Each vendor's `sandbox::serve`.
pub async fn serve_vendor<S: VendorSandbox>(
    listener: tokio::net::TcpListener,
    opts: S,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), SandboxError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = opts.router(stop_rx)?;
    let addr = listener.local_addr()?;
    tracing::info!(vendor = S::VENDOR, %addr, "sandbox listening");
    let r = serve_router(listener, app, shutdown).await;
    let _ = stop_tx.send(true);
    r.map_err(SandboxError::Serve)
}

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

/// One published limit: at most `limit` calls in any sliding window of `span`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    pub limit: u32,
    pub span: Duration,
}

impl RateWindow {
    pub const fn per_second(limit: u32) -> Self {
        Self {
            limit,
            span: Duration::from_secs(1),
        }
    }

    pub const fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            span: Duration::from_secs(60),
        }
    }

    pub const fn per_hour(limit: u32) -> Self {
        Self {
            limit,
            span: Duration::from_secs(3600),
        }
    }
}

/// Scales the published limits when they are enforced: `calls` multiplies each quota (at least
/// 1 remains), `time` each window's length. 1 and 1 are the vendor's real limits; tests use tiny
/// ones (e.g. `calls: 0.1, time: 0.1` turns 50/s into 5 per 100 ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateScale {
    pub calls: f64,
    pub time: f64,
}

impl Default for RateScale {
    fn default() -> Self {
        Self {
            calls: 1.0,
            time: 1.0,
        }
    }
}

impl RateScale {
    pub fn apply(&self, w: RateWindow) -> RateWindow {
        let calls = if self.calls.is_finite() && self.calls > 0.0 {
            self.calls
        } else {
            1.0
        };
        let time = if self.time.is_finite() && self.time > 0.0 {
            self.time
        } else {
            1.0
        };
        // A hair over, so that 10,000 × 0.0003 is 3 rather than 2.999….
        let limit = (f64::from(w.limit) * calls + 1e-9).floor();
        RateWindow {
            limit: if limit < 1.0 {
                1
            } else if limit >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                limit as u32
            },
            span: w.span.mul_f64(time).max(Duration::from_millis(1)),
        }
    }
}

/// A call refused by an enforced limit: the window it would overflow (as scaled) and how long
/// until a call fits again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRejection {
    pub window: RateWindow,
    pub retry_after: Duration,
}

impl RateRejection {
    /// `retry_after` in whole seconds, rounded up, at least 1 (what the vendors' headers carry).
    pub fn retry_after_secs(&self) -> u64 {
        let ms = self.retry_after.as_millis();
        u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
    }
}

/// Calls per time slot in one sliding window: (slot, calls in that slot), oldest first, and the
/// sum. Slots are milliseconds (metering) or microseconds (enforcement) since the core started.
#[derive(Debug, Default)]
struct Slide {
    q: VecDeque<(u64, u32)>,
    sum: u64,
}

impl Slide {
    /// Drops the slots that are `span` or more before `now`.
    fn trim(&mut self, now: u64, span: u64) {
        while let Some(&(t, n)) = self.q.front() {
            if t.saturating_add(span) <= now {
                self.q.pop_front();
                self.sum -= u64::from(n);
            } else {
                break;
            }
        }
    }

    fn push(&mut self, now: u64) {
        match self.q.back_mut() {
            Some((t, n)) if *t == now => *n = n.saturating_add(1),
            _ => self.q.push_back((now, 1)),
        }
        self.sum += 1;
    }
}

/// What `/_sandbox/calls` reports per endpoint under `"windows"`.
#[derive(Debug, Default)]
struct EndpointMeter {
    count: u64,
    first_ms: i64,
    last_ms: i64,
    last_1s: Slide,
    last_60s: Slide,
    peak_1s: u64,
    peak_60s: u64,
    rate_limited: u64,
}

impl EndpointMeter {
    fn record(&mut self, wall_ms: i64, mono_ms: u64) {
        if self.count == 0 {
            self.first_ms = wall_ms;
        }
        self.count += 1;
        self.last_ms = wall_ms;
        self.last_1s.trim(mono_ms, 1000);
        self.last_1s.push(mono_ms);
        self.peak_1s = self.peak_1s.max(self.last_1s.sum);
        self.last_60s.trim(mono_ms, 60_000);
        self.last_60s.push(mono_ms);
        self.peak_60s = self.peak_60s.max(self.last_60s.sum);
    }

    fn report(&self) -> Value {
        json!({
            "count": self.count, "first_ms": self.first_ms, "last_ms": self.last_ms,
            "peak_1s": self.peak_1s, "peak_60s": self.peak_60s, "rate_limited": self.rate_limited,
        })
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Shared state of one sandbox instance.
pub struct SandboxCore {
    pub vendor: &'static str,
    pub injector: FaultInjector,
    /// Monotonic origin of the meter's and the limiter's time slots.
    started: Instant,
    calls: Mutex<BTreeMap<String, u64>>,
    meters: Mutex<BTreeMap<String, EndpointMeter>>,
    /// Enforced limits: limit key -> the calls admitted in each of its windows.
    admitted: Mutex<HashMap<String, Vec<(RateWindow, Slide)>>>,
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
            started: Instant::now(),
            calls: Mutex::new(BTreeMap::new()),
            meters: Mutex::new(BTreeMap::new()),
            admitted: Mutex::new(HashMap::new()),
            faults: Mutex::new(BTreeMap::new()),
            messages: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            bus,
            delivery: Mutex::new(None),
        })
    }

    /// Counts one API call and records its time for the sliding-window peaks.
    pub fn count_call(&self, endpoint: &str) {
        *lock(&self.calls).entry(endpoint.to_string()).or_default() += 1;
        let mono_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        lock(&self.meters)
            .entry(endpoint.to_string())
            .or_default()
            .record(wall_ms(), mono_ms);
    }

    /// Admits the call `endpoint` against `windows` (the vendor's published limits for the API
    /// `limit_key`, scaled by `scale`), or refuses it when any window already holds its quota of
    /// admitted calls; a refusal is counted (`rate_limited` of the endpoint, fault
    /// `rate-limit`). Refused calls do not use up the quota.
    pub fn enforce(
        &self,
        endpoint: &str,
        limit_key: &str,
        windows: &[RateWindow],
        scale: RateScale,
    ) -> Result<(), RateRejection> {
        let now = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let scaled: Vec<RateWindow> = windows.iter().map(|w| scale.apply(*w)).collect();
        let refused = self.admit_at(limit_key, &scaled, now);
        match refused {
            None => Ok(()),
            Some(r) => {
                lock(&self.meters)
                    .entry(endpoint.to_string())
                    .or_default()
                    .rate_limited += 1;
                self.count_fault("rate-limit");
                Err(r)
            }
        }
    }

    /// The limiter proper, at `now` µs since the core started.
    fn admit_at(&self, limit_key: &str, windows: &[RateWindow], now: u64) -> Option<RateRejection> {
        let mut all = lock(&self.admitted);
        let slides = all.entry(limit_key.to_string()).or_default();
        if slides.len() != windows.len() || slides.iter().zip(windows).any(|(s, w)| s.0 != *w) {
            *slides = windows.iter().map(|w| (*w, Slide::default())).collect();
        }
        let mut refused: Option<RateRejection> = None;
        for (w, s) in slides.iter_mut() {
            let span = u64::try_from(w.span.as_micros()).unwrap_or(u64::MAX);
            s.trim(now, span);
            if s.sum >= u64::from(w.limit) {
                let oldest = s.q.front().map_or(now, |(t, _)| *t);
                let r = RateRejection {
                    window: *w,
                    retry_after: Duration::from_micros(
                        oldest.saturating_add(span).saturating_sub(now),
                    ),
                };
                // The longest wait wins (a full minute outlasts a full second).
                if refused.is_none_or(|p| p.retry_after < r.retry_after) {
                    refused = Some(r);
                }
            }
        }
        if refused.is_none() {
            for (_, s) in slides.iter_mut() {
                s.push(now);
            }
        }
        refused
    }

    /// The `/_sandbox/calls` document.
    pub fn calls_report(&self) -> Value {
        let calls = lock(&self.calls).clone();
        let faults = lock(&self.faults).clone();
        let total: u64 = calls.values().sum();
        let meters = lock(&self.meters);
        let windows: Map<String, Value> = meters
            .iter()
            .map(|(k, m)| (k.clone(), m.report()))
            .collect();
        let limited: Map<String, Value> = meters
            .iter()
            .filter(|(_, m)| m.rate_limited > 0)
            .map(|(k, m)| (k.clone(), json!(m.rate_limited)))
            .collect();
        json!({"total": total, "calls": calls, "faults": faults, "windows": windows,
               "rate_limited": limited})
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

/// What the console reads and removes, as the vendor's org does it (each vendor's `Org`).
pub(crate) trait ConsoleOrg: Send {
    /// The events a change emits.
    type Emitted;
    /// The org's refusal, as the console answers it.
    type Error: Into<AdminError>;
    /// `{"departments":[…],"users":[…]}` in the fixture format plus vendor ids.
    fn snapshot(&self) -> Value;
    fn delete_user(&mut self, key: &str) -> Result<Self::Emitted, Self::Error>;
    fn delete_dept(&mut self, key: &str) -> Result<Self::Emitted, Self::Error>;
}

/// The events a change in `C`'s org emits.
pub(crate) type Emitted<C> = <<C as Console>::Org as ConsoleOrg>::Emitted;
/// A console addition: the new entry's key and the events.
pub(crate) type Added<C> = Result<(String, Emitted<C>), AdminError>;
/// A console change: the events.
pub(crate) type Changed<C> = Result<Emitted<C>, AdminError>;

/// A vendor's sandbox as an admin's console changes it: its org behind a lock, and the vendor's
/// own calls to add, change and render its entries (deletes are its org's: [`ConsoleOrg`]).
/// [`AdminHandle`] makes any console the [`OrgAdmin`] of the `/_sandbox/org…` endpoints, the
/// same way for every vendor: each change is made under the org's lock, its events are emitted
/// once the lock is released, and the entry is read back in the vendor's shape.
pub(crate) trait Console: Send + Sync + 'static {
    type Org: ConsoleOrg;
    fn org(&self) -> &Mutex<Self::Org>;
    /// Emits the vendor's events for a change.
    fn emit(&self, events: Emitted<Self>);
    /// Every access token expires now.
    fn expire_tokens(&self);
    /// A user as the console shows it.
    fn render_user(org: &Self::Org, key: &str) -> Value;
    /// A department as the console shows it.
    fn render_dept(org: &Self::Org, key: &str) -> Value;
    /// Adds a fixture user: its key and the events.
    fn add_user(&self, org: &mut Self::Org, user: FixtureUser) -> Added<Self>;
    /// Merges `patch` into the user `key`.
    fn patch_user(org: &mut Self::Org, key: &str, patch: &Value) -> Changed<Self>;
    /// Adds a fixture department: its key and the events.
    fn add_dept(&self, org: &mut Self::Org, dept: FixtureDepartment) -> Added<Self>;
    /// Merges `patch` into the department `key`.
    fn patch_dept(org: &mut Self::Org, key: &str, patch: &Value) -> Changed<Self>;

    /// Emits the events of a change made through the vendor's API: as the console's, unless the
    /// vendor says otherwise (WeCom's `echo_api_changes`).
    fn emit_api(&self, events: Emitted<Self>) {
        self.emit(events);
    }

    /// Makes an API call's change under the org's lock, then emits its events (`emit_api`) once
    /// the lock is released.
    fn change<E>(
        &self,
        f: impl FnOnce(&mut Self::Org) -> Result<Emitted<Self>, E>,
    ) -> Result<(), E> {
        self.change_with(|org| f(org).map(|events| ((), events)))
    }

    /// [`Console::change`] for a change that also gives a value (what it made or changed).
    fn change_with<T, E>(
        &self,
        f: impl FnOnce(&mut Self::Org) -> Result<(T, Emitted<Self>), E>,
    ) -> Result<T, E> {
        let (out, events) = f(&mut lock(self.org()))?;
        self.emit_api(events);
        Ok(out)
    }
}

/// A vendor sandbox's state: its options, core, org and tokens, and what only that vendor
/// keeps (`X`, whose fields read as the app's own through `Deref`).
pub(crate) struct VendorApp<O, G, X> {
    pub opts: O,
    pub core: Arc<SandboxCore>,
    pub org: Mutex<G>,
    pub tokens: kit::Tokens,
    own: X,
}

impl<O, G, X> VendorApp<O, G, X> {
    /// The state of a sandbox serving `org` with `opts`, its tokens not yet issued.
    pub fn new(opts: O, core: Arc<SandboxCore>, org: G, own: X) -> Self {
        Self {
            opts,
            core,
            org: Mutex::new(org),
            tokens: kit::Tokens::default(),
            own,
        }
    }
}

impl<O, G, X> std::ops::Deref for VendorApp<O, G, X> {
    type Target = X;
    fn deref(&self) -> &X {
        &self.own
    }
}

/// A vendor's [`Console`] as the `/_sandbox/org…` endpoints' [`OrgAdmin`].
pub(crate) struct AdminHandle<C>(pub Arc<C>);

impl<C: Console> AdminHandle<C> {
    fn user(&self, key: &str) -> Value {
        C::render_user(&lock(self.0.org()), key)
    }

    fn dept(&self, key: &str) -> Value {
        C::render_dept(&lock(self.0.org()), key)
    }

    /// Makes a console change under the org's lock, then emits its events once the lock is
    /// released.
    fn apply<T>(
        &self,
        f: impl FnOnce(&C, &mut C::Org) -> Result<(T, Emitted<C>), AdminError>,
    ) -> Result<T, AdminError> {
        let (out, events) = f(&self.0, &mut lock(self.0.org()))?;
        self.0.emit(events);
        Ok(out)
    }
}

/// A change that gives nothing but its events.
fn only<E>(events: Result<E, impl Into<AdminError>>) -> Result<((), E), AdminError> {
    events.map(|e| ((), e)).map_err(Into::into)
}

// Each change holds the org's lock for its own statement only: the events are emitted, and the
// entry read back, after it is released.
impl<C: Console> OrgAdmin for AdminHandle<C> {
    fn snapshot(&self) -> Value {
        lock(self.0.org()).snapshot()
    }

    fn create_user(&self, user: FixtureUser) -> Result<Value, AdminError> {
        let key = self.apply(|c, org| c.add_user(org, user))?;
        Ok(self.user(&key))
    }

    fn patch_user(&self, key: &str, patch: Value) -> Result<Value, AdminError> {
        self.apply(|_, org| only(C::patch_user(org, key, &patch)))?;
        Ok(self.user(key))
    }

    fn delete_user(&self, key: &str) -> Result<(), AdminError> {
        self.apply(|_, org| only(org.delete_user(key)))
    }

    fn create_department(&self, dept: FixtureDepartment) -> Result<Value, AdminError> {
        let key = self.apply(|c, org| c.add_dept(org, dept))?;
        Ok(self.dept(&key))
    }

    fn patch_department(&self, key: &str, patch: Value) -> Result<Value, AdminError> {
        self.apply(|_, org| only(C::patch_dept(org, key, &patch)))?;
        Ok(self.dept(key))
    }

    fn delete_department(&self, key: &str) -> Result<(), AdminError> {
        self.apply(|_, org| only(org.delete_dept(key)))
    }

    fn expire_tokens(&self) {
        self.0.expire_tokens();
    }
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
            get(|State(s): Admin| async move { Json(s.core.calls_report()) }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_reports_the_peak_of_a_known_burst() {
        let mut m = EndpointMeter::default();
        // 5 calls at 0 ms, 30 calls at 100..390 ms, 10 calls at 1200..1290 ms.
        for _ in 0..5 {
            m.record(1_000, 0);
        }
        for i in 0..30 {
            m.record(1_100 + i, 100 + i as u64 * 10);
        }
        for i in 0..10 {
            m.record(2_200 + i, 1_200 + i as u64 * 10);
        }
        // The busiest second is (−610, 390]: all 35 of the first two bursts; the minute holds
        // all 45. Then one call a minute later.
        assert_eq!(m.peak_1s, 35);
        assert_eq!(m.peak_60s, 45);
        m.record(70_000, 70_000);
        let r = m.report();
        assert_eq!(r["count"], 46);
        assert_eq!(r["first_ms"], 1_000);
        assert_eq!(r["last_ms"], 70_000);
        assert_eq!(r["peak_1s"], 35);
        assert_eq!(r["peak_60s"], 45);
        // The deques hold at most the last minute.
        assert_eq!(m.last_60s.sum, 1);
        assert_eq!(m.last_1s.sum, 1);
    }

    #[test]
    fn limiter_refuses_the_call_over_the_quota_until_the_window_slides() {
        let core = SandboxCore::new("test", FaultSpec::none());
        let w = [RateWindow::per_second(3), RateWindow::per_minute(5)];
        let s = 1_000_000;
        for t in [0, 10, 20] {
            assert!(core.admit_at("api", &w, t).is_none());
        }
        let r = core
            .admit_at("api", &w, 500_000)
            .expect("4th call in 1 s is refused");
        assert_eq!(r.window, RateWindow::per_second(3));
        assert_eq!(r.retry_after, Duration::from_micros(500_000));
        assert_eq!(r.retry_after_secs(), 1);
        // Refused calls do not use up the quota: after the first slid out, one more fits.
        assert!(core.admit_at("api", &w, s).is_none());
        assert!(core.admit_at("api", &w, s + 5).is_some());
        // Another API has its own windows.
        assert!(core.admit_at("other", &w, s + 5).is_none());
        // 5 admitted in the minute: the minute window refuses, with the longer wait.
        assert!(core.admit_at("api", &w, 2 * s).is_none());
        let r = core
            .admit_at("api", &w, 3 * s)
            .expect("6th call in 60 s is refused");
        assert_eq!(r.window, RateWindow::per_minute(5));
        assert_eq!(r.retry_after_secs(), 57);
        assert!(core.admit_at("api", &w, 60 * s).is_none());
    }

    #[test]
    fn scale_shrinks_quotas_and_windows() {
        let sc = RateScale {
            calls: 0.1,
            time: 0.1,
        };
        assert_eq!(
            sc.apply(RateWindow::per_second(50)),
            RateWindow {
                limit: 5,
                span: Duration::from_millis(100)
            }
        );
        assert_eq!(sc.apply(RateWindow::per_second(3)).limit, 1);
        let tiny = RateScale {
            calls: 0.0003,
            time: 1.0,
        };
        assert_eq!(tiny.apply(RateWindow::per_minute(10_000)).limit, 3);
        assert_eq!(
            RateScale::default().apply(RateWindow::per_hour(150_000)),
            RateWindow::per_hour(150_000)
        );
    }

    #[test]
    fn calls_report_keeps_its_keys_and_adds_windows() {
        let core = SandboxCore::new("test", FaultSpec::none());
        core.count_call("GET /a");
        core.count_call("GET /a");
        let w = [RateWindow::per_second(1)];
        assert!(
            core.enforce("GET /a", "a", &w, RateScale::default())
                .is_ok()
        );
        assert!(
            core.enforce("GET /a", "a", &w, RateScale::default())
                .is_err()
        );
        let r = core.calls_report();
        assert_eq!(r["total"], 2);
        assert_eq!(r["calls"]["GET /a"], 2);
        assert_eq!(r["windows"]["GET /a"]["count"], 2);
        assert_eq!(r["windows"]["GET /a"]["peak_1s"], 2);
        assert_eq!(r["windows"]["GET /a"]["rate_limited"], 1);
        assert_eq!(r["rate_limited"]["GET /a"], 1);
        assert_eq!(r["faults"]["rate-limit"], 1);
    }
}
