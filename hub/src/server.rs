//! The HTTP surface: health, readiness, metrics, vendor callbacks (`crate::callbacks`; later:
//! hooks, admin API).
//!
//! [`serve`] takes a pre-bound listener and a shutdown future so tests run the
//! real composition on port 0.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

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

pub fn router(state: AppState, body_limit: usize) -> Router {
    router_with(state, body_limit, Router::new())
}

/// [`router`] plus `extra` routes (callbacks, …), under the same body limit and metrics.
pub fn router_with(state: AppState, body_limit: usize, extra: Router<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(extra)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(track))
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` resolves, then drain in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
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
