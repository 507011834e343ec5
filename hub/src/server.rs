//! The HTTP surface: health, readiness, metrics, vendor callbacks (`crate::callbacks`; later:
//! hooks, admin API).
//!
//! [`serve`] takes a pre-bound listener and a shutdown future so tests run the
//! real composition on port 0. It faces the internet, so every connection is bounded
//! ([`ConnectionLimits`], `[server]` in `huitong.toml`): the time to send headers, the time
//! to send a body, the time to answer, the time a connection may sit idle, and how many
//! connections are open at once. At the cap a new connection closes the connection idle the
//! longest, so idle or half-sent connections cannot keep `/healthz` (or a vendor's callback)
//! out; when every connection has a request in progress, new ones wait in the accept backlog
//! (no descriptor is spent on them) until a request is done — at most `request_timeout`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

pub use crate::config::ConnectionLimits;
use crate::config::ServerConfig;
use crate::store::Store;

/// A dependency `/readyz` checks (the database, the queue).
#[async_trait]
pub trait Probe: Send + Sync {
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<(), String>;
}

#[async_trait]
impl Probe for Arc<dyn Store> {
    fn name(&self) -> &'static str {
        "database"
    }
    async fn check(&self) -> Result<(), String> {
        self.ping().await.map_err(|e| e.to_string())
    }
}

#[derive(Clone)]
pub struct AppState {
    pub probes: Arc<Vec<Arc<dyn Probe>>>,
}

pub fn router(state: AppState, server: &ServerConfig) -> Router {
    router_with(state, server, Router::new())
}

/// [`router`] plus `extra` routes (callbacks, …), under the same body limit, timeouts and
/// metrics.
pub fn router_with(state: AppState, server: &ServerConfig, extra: Router<AppState>) -> Router {
    let limits = RequestLimits {
        body_limit: server.body_limit_bytes,
        body_timeout: server.limits.body_timeout,
        request_timeout: server.limits.request_timeout,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(extra)
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        .layer(middleware::from_fn_with_state(limits, bounded))
        .layer(middleware::from_fn(track))
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` resolves, then let in-flight requests finish
/// for up to `grace` (the connections still open after that are closed).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    describe_metrics();
    let cap = fitting_cap(limits.max_connections);
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    'accept: loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) and the like: wait, do not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        // Room for it: close the connection idle the longest, or wait until a request is done.
        while registry.len() >= cap {
            if let Some(victim) = registry.longest_idle() {
                victim.evict.notify_one();
            }
            tokio::select! {
                _ = &mut shutdown => break 'accept,
                _ = registry.freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let conn = registry.open();
        tasks.spawn(connection(
            stream,
            conn,
            registry.clone(),
            router.clone(),
            limits,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            open = tasks.len(),
            grace_secs = grace.as_secs(),
            "connections still open after the shutdown grace period are closed"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    Ok(())
}

/// Errors of one connection that accept() reports; the listener is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Descriptors kept free for everything else (database, queue, vendors, logs).
const SPARE_FILES: usize = 64;

/// `max` lowered so that that many connections fit under the process's open-file limit.
fn fitting_cap(max: usize) -> usize {
    let Some(files) = open_file_limit() else {
        return max.max(1);
    };
    let room = if files > 2 * SPARE_FILES {
        files - SPARE_FILES
    } else {
        files / 2
    }
    .max(1);
    if max > room {
        tracing::warn!(
            max_connections = max,
            open_file_limit = files,
            lowered_to = room,
            "server.max_connections does not fit the open-file limit (ulimit -n); lowered"
        );
        room
    } else {
        max.max(1)
    }
}

/// The soft limit on open files (`ulimit -n`), where the system tells it.
fn open_file_limit() -> Option<usize> {
    let text =
        crate::files::read_capped(std::path::Path::new("/proc/self/limits"), 64 * 1024).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn describe_metrics() {
    metrics::describe_gauge!("huitong_http_connections_open", "Open HTTP connections.");
    metrics::describe_counter!(
        "huitong_http_connections_closed_total",
        "HTTP connections the server closed, by reason (idle, header_timeout, displaced)."
    );
}

/// The open connections, for the cap.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Signalled when a connection closes.
    freed: Notify,
    epoch: std::sync::OnceLock<Instant>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn open(&self) -> Arc<Conn> {
        let epoch = *self.epoch.get_or_init(Instant::now);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(id, epoch));
        let mut conns = self.lock();
        conns.insert(id, conn.clone());
        metrics::gauge!("huitong_http_connections_open").set(conns.len() as f64);
        conn
    }

    fn close(&self, id: u64) {
        let mut conns = self.lock();
        conns.remove(&id);
        metrics::gauge!("huitong_http_connections_open").set(conns.len() as f64);
        drop(conns);
        self.freed.notify_one();
    }

    /// The connection without a request in progress for the longest time (it may be sending
    /// the headers of one, slowly).
    fn longest_idle(&self) -> Option<Arc<Conn>> {
        self.lock()
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|c| c.mark_ms.load(Ordering::Acquire))
            .cloned()
    }
}

/// What the server knows of one connection.
struct Conn {
    id: u64,
    epoch: Instant,
    /// Requests whose response is not ready yet.
    in_flight: AtomicUsize,
    /// When (ms after `epoch`) the last request began or was answered, or the connection opened.
    mark_ms: AtomicU64,
    /// 1 + when (ms after `epoch`) the first byte after `mark_ms` arrived; 0: none yet.
    first_byte_ms: AtomicU64,
    /// Signalled to close it to make room for a new connection.
    evict: Notify,
}

impl Conn {
    fn new(id: u64, epoch: Instant) -> Self {
        let conn = Conn {
            id,
            epoch,
            in_flight: AtomicUsize::new(0),
            mark_ms: AtomicU64::new(0),
            first_byte_ms: AtomicU64::new(0),
            evict: Notify::new(),
        };
        conn.mark_ms.store(conn.now_ms(), Ordering::Release);
        conn
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request began or was answered. No wake-up: this only moves deadlines later, and
    /// `expired` looks again when its sleep ends.
    fn mark(&self) {
        self.mark_ms.store(self.now_ms(), Ordering::Release);
        self.first_byte_ms.store(0, Ordering::Release);
    }

    /// Bytes arrived. No wake-up either (it would cost every request a timer): `expired`
    /// looks at least every quarter of the header timeout.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.first_byte_ms.load(Ordering::Acquire) == 0
        {
            let _ = self.first_byte_ms.compare_exchange(
                0,
                self.now_ms() + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Resolves with the reason once the connection must be closed: no request in progress
    /// and either no byte for `idle_timeout` or headers unfinished after `header_timeout`
    /// (noticed within a quarter of it: a first byte does not wake this).
    async fn expired(&self, limits: &ConnectionLimits) -> &'static str {
        let header_ms = duration_ms(limits.header_timeout);
        let idle_ms = duration_ms(limits.idle_timeout);
        let look = (header_ms / 4).max(1);
        loop {
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // Bounded by the request's own timeouts; look again later.
                tokio::time::sleep(Duration::from_millis(header_ms.min(idle_ms))).await;
                continue;
            }
            let first = self.first_byte_ms.load(Ordering::Acquire);
            let (at, reason) = if first > 0 {
                ((first - 1).saturating_add(header_ms), "header_timeout")
            } else {
                (
                    self.mark_ms.load(Ordering::Acquire).saturating_add(idle_ms),
                    "idle",
                )
            };
            let now = self.now_ms();
            if now >= at {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis((at - now).min(look))).await;
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Serve one connection until it ends, expires, is displaced or the server stops.
async fn connection(
    stream: TcpStream,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    struct Deregister(Arc<Registry>, u64);
    impl Drop for Deregister {
        fn drop(&mut self) {
            self.0.close(self.1);
        }
    }
    let _deregister = Deregister(registry, conn.id);
    let io = TokioIo::new(Watched {
        inner: stream,
        conn: conn.clone(),
    });
    let service = Tracked {
        inner: TowerToHyperService::new(router),
        conn: conn.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header timeout is `Conn::expired`'s, which tells waiting from sending.
    builder.header_read_timeout(None);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            reason = conn.expired(&limits) => {
                tracing::debug!(reason, "connection closed");
                metrics::counter!("huitong_http_connections_closed_total", "reason" => reason).increment(1);
                return;
            }
            _ = conn.evict.notified() => {
                tracing::debug!("idle connection closed to make room for a new one (server.max_connections)");
                metrics::counter!("huitong_http_connections_closed_total", "reason" => "displaced").increment(1);
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The socket, noting when bytes arrive.
struct Watched {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router, noting when each request begins and is answered.
struct Tracked {
    inner: TowerToHyperService<Router>,
    conn: Arc<Conn>,
}

struct InFlight(Arc<Conn>);

impl InFlight {
    fn begin(conn: Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.mark();
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.mark();
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::begin(self.conn.clone());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let r = answer.await;
            drop(in_flight);
            r
        })
    }
}

/// Per-request limits, applied inside the router (so that the metrics count their answers).
#[derive(Clone, Copy)]
struct RequestLimits {
    body_limit: usize,
    body_timeout: Duration,
    request_timeout: Duration,
}

/// An answer after which the connection is closed (the rest of the body is not read).
fn closing(status: StatusCode, message: &'static str) -> Response {
    let mut r = (status, Json(json!({ "error": message }))).into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A declared body over the limit is refused before a byte of it is read; the body must
/// arrive within `body_timeout` (else 408) and the answer be ready within `request_timeout`
/// (else 503).
async fn bounded(State(limits): State<RequestLimits>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.body_limit as u64) {
        return closing(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let req = if req.body().is_end_stream() {
        req
    } else {
        let flag = timed_out.clone();
        req.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                deadline: Box::pin(tokio::time::sleep(limits.body_timeout)),
                after: limits.body_timeout,
                timed_out: flag,
            })
        })
    };
    match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
        _ if timed_out.load(Ordering::Acquire) => closing(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        ),
        Ok(response) => response,
        Err(_) => closing(StatusCode::SERVICE_UNAVAILABLE, "the request took too long"),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
struct BodyTimeout(Duration);

/// Whether `e` (a body rejection, say) comes from the body timeout (`server.body_timeout_ms`).
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(e);
    while let Some(e) = at {
        if e.is::<BodyTimeout>() {
            return true;
        }
        at = e.source();
    }
    false
}

/// A request body that fails once its time is up.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    after: Duration,
    timed_out: Arc<AtomicBool>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(this.after)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "alive"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    for probe in state.probes.iter() {
        let outcome = match tokio::time::timeout(Duration::from_secs(3), probe.check()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => e,
            Err(_) => "no answer within 3 s".to_owned(),
        };
        if outcome != "ok" {
            tracing::warn!(part = probe.name(), error = %outcome, "readiness check failed");
            failing.push(probe.name());
        }
        checks.insert(probe.name().to_owned(), outcome.into());
    }
    if failing.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "failing": failing, "checks": checks})),
        )
            .into_response()
    }
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::metrics().render(),
    )
}

/// The method as a metric label, from a closed set: any other method (a client may send any
/// token, 300 KB long) is counted as `other`, so no request can grow the label space.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("huitong_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("huitong_http_request_seconds", "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    /// A router whose `/slow` answers after `delay`, behind [`bounded`].
    async fn ask(delay: Duration, request_timeout: Duration) -> (StatusCode, Duration) {
        let limits = RequestLimits {
            body_limit: 1024,
            body_timeout: Duration::from_secs(10),
            request_timeout,
        };
        let app: Router = Router::new()
            .route(
                "/slow",
                get(move || async move {
                    tokio::time::sleep(delay).await;
                    "done"
                }),
            )
            .layer(middleware::from_fn_with_state(limits, bounded));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let started = std::time::Instant::now();
        let status = reqwest::get(format!("http://{addr}/slow"))
            .await
            .unwrap()
            .status();
        (status, started.elapsed())
    }

    #[tokio::test]
    async fn an_answer_not_ready_within_the_request_timeout_is_503() {
        let (status, took) = ask(Duration::from_secs(30), Duration::from_millis(200)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(took < Duration::from_secs(10), "{took:?}");
        let (status, _) = ask(Duration::from_millis(10), Duration::from_secs(5)).await;
        assert_eq!(status, StatusCode::OK);
    }
}
