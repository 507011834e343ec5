//! Ingress for vendor callbacks: `GET|POST /callbacks/{vendor}/{connector}` (docs/design.md,
//! Interfaces; "The flow of one change", ingress).
//!
//! One receiver per configured connector that has its callback secrets (Feishu: Encrypt Key
//! and/or Verification Token; DingTalk: token + aes_key, owner = app key; WeCom: token +
//! EncodingAESKey, receive id = corp id). The receiver verifies the signature on the raw bytes,
//! decrypts and de-duplicates; a new event is published to the `ingress` queue as
//! [`Task::IngressV1`] and only after the queue confirmed it is the vendor answered, so a crash
//! or a failed publish loses nothing: the vendor did not get its success and retries.
//!
//! **De-duplication after the publish.** The receivers ask [`EventDedup::first_seen`] while
//! handling a callback. Marking the event there would turn the vendor's retry of a callback
//! whose publish failed into a "duplicate", and the event would be lost. So the receivers get a
//! [`DeferredDedup`]: inside a request it only *checks* (a record with a zero lifetime, which
//! is already expired and so never makes anything a duplicate) and remembers the keys it found
//! new; the handler marks them for [`DEDUP_TTL`] once the publish succeeded. Two identical
//! callbacks racing each other may then both be published: harmless, delivery is at-least-once
//! and the stages after ingress are idempotent.
//!
//! **What a stranger learns.** These endpoints face the internet, unauthenticated. A refused
//! callback is told the class of its failure only ([`public_message`]), never the detail (that
//! goes to the log): the receivers check the signature before decrypting and answer every
//! failure after it alike, so no answer depends on what a decryption found (a padding oracle).
//! An unknown connector, a connector under another vendor's path and one without callback
//! settings all get the same 404 ([`not_found`]), naming nothing; every 503 is the same too.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use huitong_connectors::capability::{
    CallbackError, CallbackOutcome, CallbackReply, CallbackRequest, EventDedup, RawEvent,
    ReceiveEvents,
};
use huitong_connectors::registry::ReceiverSetup;
use serde_json::json;

use crate::config::{Config, ConnectorConfig, ConnectorKind};
use crate::queue::{Envelope, INGRESS, Queue, QueueError, Task};
use crate::store::{self, Store, StoreError};

/// How long an accepted event id is remembered (Feishu retries for about 7 hours).
pub const DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);

/// The route the callbacks are served on.
pub const ROUTE: &str = "/callbacks/{vendor}/{connector}";

/// The store source under which a connector's callback event ids are recorded.
pub fn dedup_source(connector: &str) -> String {
    format!("callback/{connector}")
}

/// Publishes one verified vendor event to the `ingress` queue as [`Task::IngressV1`] and returns
/// once the queue confirmed it. One lane per connector: events of one system are handled in
/// arrival order. Shared by the callback receivers and the push channels (`push.rs`); each
/// marks the event id in its [`StoreDedup`] only after this returned `Ok`.
pub async fn publish_event(
    queue: &dyn Queue,
    connector: &str,
    event: RawEvent,
) -> Result<Envelope, QueueError> {
    let envelope = Envelope::new(
        connector.to_owned(),
        Task::IngressV1 {
            connector: connector.to_owned(),
            event_type: event.event_type,
            event_id: Some(event.event_id),
            payload: event.payload,
            received_at_ms: store::now_ms(),
        },
    );
    queue.publish(INGRESS, &envelope).await?;
    Ok(envelope)
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// [`EventDedup`] over the hub store (`processed_events`): marks at once.
pub struct StoreDedup {
    store: Arc<dyn Store>,
    source: String,
    ttl: Duration,
}

impl StoreDedup {
    pub fn new(store: Arc<dyn Store>, source: impl Into<String>, ttl: Duration) -> Self {
        StoreDedup {
            store,
            source: source.into(),
            ttl,
        }
    }

    /// Marks `event_id` as seen for the TTL; true when it was not seen (or had expired).
    pub async fn mark(&self, event_id: &str) -> Result<bool, StoreError> {
        self.store
            .mark_event(&self.source, event_id, store::now_ms(), ttl_ms(self.ttl))
            .await
    }

    /// True when `event_id` is not currently marked. Writes an already-expired record (zero
    /// lifetime), which [`StoreDedup::mark`] then turns into a live one.
    pub async fn is_new(&self, event_id: &str) -> Result<bool, StoreError> {
        self.store
            .mark_event(&self.source, event_id, store::now_ms(), 0)
            .await
    }
}

#[async_trait]
impl EventDedup for StoreDedup {
    async fn first_seen(&self, _vendor: &str, event_id: &str) -> Result<bool, String> {
        self.mark(event_id).await.map_err(|e| e.to_string())
    }
}

tokio::task_local! {
    /// The keys a receiver found new while handling the current request.
    static PENDING: Mutex<Vec<String>>;
}

/// The [`EventDedup`] the receivers get: inside [`DeferredDedup::scope`] it only checks and
/// remembers the new keys, to be marked with [`DeferredDedup::commit`] after the publish.
/// Outside a scope it marks at once, like [`StoreDedup`].
pub struct DeferredDedup {
    inner: StoreDedup,
}

impl DeferredDedup {
    pub fn new(inner: StoreDedup) -> Self {
        DeferredDedup { inner }
    }

    /// Runs `f` (a receiver handling one callback) and returns its output with the keys that
    /// were found new and still need marking.
    pub async fn scope<F: Future>(&self, f: F) -> (F::Output, Vec<String>) {
        PENDING
            .scope(Mutex::new(Vec::new()), async move {
                let out = f.await;
                let keys = PENDING.with(|p| std::mem::take(&mut *lock(p)));
                (out, keys)
            })
            .await
    }

    /// Marks the keys for the TTL (after the event was published).
    pub async fn commit(&self, keys: &[String]) -> Result<(), StoreError> {
        for k in keys {
            self.inner.mark(k).await?;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl EventDedup for DeferredDedup {
    async fn first_seen(&self, vendor: &str, event_id: &str) -> Result<bool, String> {
        if PENDING.try_with(|_| ()).is_err() {
            return self.inner.first_seen(vendor, event_id).await;
        }
        let new = self
            .inner
            .is_new(event_id)
            .await
            .map_err(|e| e.to_string())?;
        if new {
            PENDING.with(|p| lock(p).push(event_id.to_owned()));
        }
        Ok(new)
    }
}

/// One connector's receiver, or why it has none.
enum Receiver {
    Ready {
        receiver: Box<dyn ReceiveEvents>,
        dedup: Arc<DeferredDedup>,
    },
    /// Callback settings not configured: 404, the same as for an unknown connector.
    Missing(Vec<&'static str>),
    /// Configured but unusable (e.g. a malformed aes key): 503, so the vendor keeps retrying
    /// until the operator fixed it.
    Invalid(String),
}

struct Entry {
    kind: ConnectorKind,
    receiver: Receiver,
}

/// Every connector's callback receiver and the queue accepted events go to.
pub struct Callbacks {
    entries: BTreeMap<String, Entry>,
    queue: Arc<dyn Queue>,
}

fn build(c: &ConnectorConfig, dedup: Arc<DeferredDedup>, body_limit: usize) -> Receiver {
    let as_dedup: Arc<dyn EventDedup> = dedup.clone();
    match c.kind.receiver(&c.vendor_settings(), as_dedup, body_limit) {
        ReceiverSetup::Ready(receiver) => Receiver::Ready { receiver, dedup },
        ReceiverSetup::Missing(keys) => Receiver::Missing(keys),
        ReceiverSetup::Invalid(reason) => Receiver::Invalid(reason),
    }
}

impl Callbacks {
    /// A receiver for every configured connector with callback settings.
    pub fn from_config(config: &Config, store: Arc<dyn Store>, queue: Arc<dyn Queue>) -> Self {
        metrics::describe_counter!(
            "huitong_callbacks_total",
            "Vendor callbacks by vendor, connector and outcome (accepted, duplicate, handshake, rejected, publish_failed, unavailable)."
        );
        metrics::describe_counter!(
            "huitong_callbacks_rejected_total",
            "Refused vendor callbacks by vendor, connector and reason."
        );
        let body_limit = config.server.body_limit_bytes;
        let mut entries = BTreeMap::new();
        for (name, c) in &config.connectors {
            let dedup = Arc::new(DeferredDedup::new(StoreDedup::new(
                store.clone(),
                dedup_source(name),
                DEDUP_TTL,
            )));
            let receiver = build(c, dedup, body_limit);
            match &receiver {
                Receiver::Ready { .. } => tracing::info!(
                    vendor = c.kind.as_str(),
                    connector = %name,
                    path = %format!("/callbacks/{}/{name}", c.kind.as_str()),
                    "callback receiver ready"
                ),
                Receiver::Missing(keys) => tracing::debug!(
                    vendor = c.kind.as_str(),
                    connector = %name,
                    missing = %keys.join(", "),
                    "no callback receiver (settings missing)"
                ),
                Receiver::Invalid(reason) => tracing::error!(
                    vendor = c.kind.as_str(),
                    connector = %name,
                    reason = %reason,
                    "callback receiver cannot be built; callbacks are answered 503"
                ),
            }
            entries.insert(
                name.clone(),
                Entry {
                    kind: c.kind,
                    receiver,
                },
            );
        }
        Callbacks { entries, queue }
    }

    /// The routes, for merging into the server's router (any state).
    pub fn routes<S: Clone + Send + Sync + 'static>(self: Arc<Self>) -> Router<S> {
        Router::new()
            .route(ROUTE, get(callback).post(callback))
            .with_state(self)
    }
}

fn vendor_matches(kind: ConnectorKind, vendor: &str) -> bool {
    kind.answers_to(vendor)
}

fn error(status: StatusCode, message: &'static str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The one answer to a callback for no receiver: an unknown connector, a connector under
/// another vendor's path, a connector without callback settings. Identical in all three cases
/// (status, headers, body), so that a stranger cannot learn which connectors exist, of which
/// kind, or which settings they lack; the detail goes to the log.
fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

/// The one answer when the hub cannot take a callback now (a receiver that cannot be built,
/// the de-duplication store or the queue failing): 503, so the vendor retries; the reason goes
/// to the log only (it may name settings, tables or hosts).
fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily unavailable; retry later",
    )
}

/// What a refused caller is told: the class of the failure, never its detail (the detail of
/// a decryption — "bad padding" against "not JSON" — is a padding oracle; a store error names
/// its internals). The receivers already answer every failure after the signature alike; this
/// keeps the hub from adding detail back.
fn public_message(e: &CallbackError) -> &'static str {
    match e {
        CallbackError::TooLarge(_) => "body too large",
        CallbackError::MissingSignature => "signature headers missing",
        CallbackError::BadSignature => "signature mismatch",
        CallbackError::StaleTimestamp => "timestamp outside the allowed window",
        CallbackError::BadToken => "verification token mismatch",
        CallbackError::Decrypt(_) => "cannot decrypt",
        CallbackError::Malformed(_) => "malformed callback",
        CallbackError::Dedup(_) => "temporarily unavailable; retry later",
    }
}

/// At most 64 characters of a path segment a stranger chose, for the log.
fn clip(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

fn reply(r: CallbackReply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, r.body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(r.content_type),
    );
    resp
}

fn reason(e: &CallbackError) -> &'static str {
    match e {
        CallbackError::TooLarge(_) => "too_large",
        CallbackError::MissingSignature => "missing_signature",
        CallbackError::BadSignature => "bad_signature",
        CallbackError::StaleTimestamp => "stale_timestamp",
        CallbackError::BadToken => "bad_token",
        CallbackError::Decrypt(_) => "decrypt",
        CallbackError::Malformed(_) => "malformed",
        CallbackError::Dedup(_) => "dedup_unavailable",
    }
}

mod metric {
    /// `outcome`: accepted, duplicate, handshake, rejected, publish_failed, unavailable.
    pub fn outcome(vendor: &'static str, connector: &str, outcome: &'static str) {
        metrics::counter!("huitong_callbacks_total", "vendor" => vendor, "connector" => connector.to_owned(), "outcome" => outcome)
            .increment(1);
    }
    pub fn rejected(vendor: &'static str, connector: &str, reason: &'static str) {
        outcome(vendor, connector, "rejected");
        metrics::counter!("huitong_callbacks_rejected_total", "vendor" => vendor, "connector" => connector.to_owned(), "reason" => reason)
            .increment(1);
    }
}

fn rejected(
    vendor: &'static str,
    connector: &str,
    reason: &'static str,
    status: StatusCode,
    detail: &dyn std::fmt::Display,
    public: &'static str,
) -> Response {
    metric::rejected(vendor, connector, reason);
    tracing::warn!(
        vendor,
        connector,
        reason,
        status = status.as_u16(),
        error = %detail,
        "callback rejected"
    );
    error(status, public)
}

async fn callback(
    State(cb): State<Arc<Callbacks>>,
    Path((vendor, connector)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(entry) = cb.entries.get(&connector) else {
        tracing::debug!(
            vendor = ?clip(&vendor),
            connector = ?clip(&connector),
            "callback for no configured connector: 404"
        );
        return not_found();
    };
    let kind = entry.kind.as_str();
    if !vendor_matches(entry.kind, &vendor) {
        tracing::warn!(
            vendor = kind,
            connector = %connector,
            path_vendor = ?clip(&vendor),
            "callback under another vendor's path: 404; its callbacks go to /callbacks/{kind}/{connector}"
        );
        return not_found();
    }
    let (receiver, dedup) = match &entry.receiver {
        Receiver::Ready { receiver, dedup } => (receiver, dedup),
        Receiver::Missing(keys) => {
            metric::outcome(kind, &connector, "unavailable");
            tracing::warn!(
                vendor = kind,
                connector = %connector,
                missing = %keys.join(", "),
                "callback for a connector without a callback receiver: 404; set the missing keys under [connectors.{connector}] (secrets as `<key>_env` or `<key>_file`)"
            );
            return not_found();
        }
        Receiver::Invalid(why) => {
            metric::outcome(kind, &connector, "unavailable");
            tracing::error!(
                vendor = kind,
                connector = %connector,
                reason = %why,
                "callback receiver is misconfigured: 503"
            );
            return unavailable();
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let mut status = e.status();
            let (reason, public) = if status == StatusCode::PAYLOAD_TOO_LARGE {
                ("too_large", "body too large")
            } else if crate::server::is_body_timeout(&e) {
                // `server.body_timeout_ms`: the server closes the connection after this answer.
                status = StatusCode::REQUEST_TIMEOUT;
                ("body_timeout", "the request body did not arrive in time")
            } else {
                ("unreadable_body", "cannot read the body")
            };
            return rejected(kind, &connector, reason, status, &e.body_text(), public);
        }
    };
    let query = match Query::<HashMap<String, String>>::try_from_uri(&uri) {
        Ok(Query(q)) => q,
        Err(e) => {
            return rejected(
                kind,
                &connector,
                "bad_query",
                StatusCode::BAD_REQUEST,
                &e.body_text(),
                "cannot read the query string",
            );
        }
    };
    let req = CallbackRequest {
        headers,
        query,
        body,
    };
    let (outcome, keys) = dedup.scope(receiver.handle_callback(&req)).await;
    match outcome {
        Ok(CallbackOutcome::Handshake { reply: r }) => {
            metric::outcome(kind, &connector, "handshake");
            tracing::info!(vendor = kind, connector = %connector, method = %method, "callback URL verification answered");
            reply(r)
        }
        Ok(CallbackOutcome::Duplicate { event_id, reply: r }) => {
            metric::outcome(kind, &connector, "duplicate");
            tracing::info!(vendor = kind, connector = %connector, event_id = %event_id, "duplicate callback acknowledged, not published");
            reply(r)
        }
        Ok(CallbackOutcome::Event { event, reply: r }) => {
            let event_id = event.event_id.clone();
            let event_type = event.event_type.clone();
            let envelope = match publish_event(&*cb.queue, &connector, event).await {
                Ok(envelope) => envelope,
                Err(e) => {
                    metric::outcome(kind, &connector, "publish_failed");
                    tracing::error!(
                        vendor = kind,
                        connector = %connector,
                        event_id = %event_id,
                        error = %e,
                        "cannot publish the callback's event; answering 503 so the vendor retries"
                    );
                    return unavailable();
                }
            };
            if let Err(e) = dedup.commit(&keys).await {
                // The event is queued: acknowledge it. A retry would be published once more,
                // which the later stages absorb.
                tracing::warn!(
                    vendor = kind,
                    connector = %connector,
                    event_id = %event_id,
                    error = %e,
                    "event queued but its id could not be recorded; a vendor retry would be queued again"
                );
            }
            metric::outcome(kind, &connector, "accepted");
            tracing::debug!(
                vendor = kind,
                connector = %connector,
                event_id = %event_id,
                event_type = %event_type,
                message_id = %envelope.id,
                "callback event queued"
            );
            reply(r)
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            rejected(kind, &connector, reason(&e), status, &e, public_message(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;
    use secrecy::SecretString;

    async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&DatabaseConfig {
            url: SecretString::from(format!("sqlite://{}/t.db", dir.path().display())),
            max_connections: 2,
        })
        .await
        .unwrap();
        (store, dir)
    }

    #[test]
    fn refusals_carry_no_detail() {
        let detailed = [
            CallbackError::Decrypt("bad padding".into()),
            CallbackError::Decrypt("receive id mismatch (-40005)".into()),
            CallbackError::Malformed("decrypted body is not JSON: line 1 column 2".into()),
            CallbackError::Dedup("error returned from database: /srv/huitong.db locked".into()),
        ];
        for e in &detailed {
            let public = public_message(e);
            for word in ["padding", "receive id", "JSON", "database", "locked"] {
                assert!(!public.contains(word), "{e}: {public}");
            }
        }
        // One answer for what must not be told apart.
        assert_eq!(public_message(&detailed[0]), public_message(&detailed[1]));
        assert_eq!(clip(&"名".repeat(100)).chars().count(), 64);
        assert_eq!(clip("fs"), "fs");
    }

    #[tokio::test]
    async fn checking_does_not_mark_and_marking_after_a_check_does() {
        let (store, _dir) = sqlite().await;
        let d = StoreDedup::new(store, dedup_source("hq"), DEDUP_TTL);
        assert!(d.is_new("e1").await.unwrap());
        assert!(d.is_new("e1").await.unwrap(), "a check leaves no live mark");
        assert!(d.mark("e1").await.unwrap());
        assert!(!d.is_new("e1").await.unwrap());
        assert!(!d.mark("e1").await.unwrap());
        assert!(!d.first_seen("feishu", "e1").await.unwrap());
        assert!(d.first_seen("feishu", "e2").await.unwrap());
        assert!(!d.first_seen("feishu", "e2").await.unwrap());
    }

    #[tokio::test]
    async fn deferred_dedup_marks_only_on_commit() {
        let (store, _dir) = sqlite().await;
        let d = DeferredDedup::new(StoreDedup::new(store, dedup_source("hq"), DEDUP_TTL));
        let (first, keys) = d.scope(d.first_seen("dingtalk", "e1")).await;
        assert_eq!((first, keys.clone()), (Ok(true), vec!["e1".to_owned()]));
        // Not committed (the publish failed): the retry is new again.
        let (again, _) = d.scope(d.first_seen("dingtalk", "e1")).await;
        assert_eq!(again, Ok(true));
        d.commit(&keys).await.unwrap();
        let (after, keys) = d.scope(d.first_seen("dingtalk", "e1")).await;
        assert_eq!((after, keys), (Ok(false), vec![]));
        // Outside a scope it marks at once.
        assert_eq!(d.first_seen("dingtalk", "e2").await, Ok(true));
        assert_eq!(d.first_seen("dingtalk", "e2").await, Ok(false));
    }
}
