//! The connector traits, split by capability. A vendor module implements the ones it supports.
//!
//! Connectors deal in raw vendor JSON (`serde_json::Value`); the mappings turn it into the
//! canonical model. Connectors never touch the database: de-duplication state, xrefs and hashes
//! live in the hub, reached through small traits such as [`EventDedup`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

use crate::error::ConnectorError;

/// The entities a connector can read or write. Which ones a vendor supports is its own business;
/// an unsupported one yields a `Permanent` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    Department,
    User,
    Message,
    Task,
    Chat,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Department => "department",
            Self::User => "user",
            Self::Message => "message",
            Self::Task => "task",
            Self::Chat => "chat",
        }
    }
}

/// What to list. `parent` scopes the listing (a department id for users/sub-departments);
/// `params` carries vendor query parameters verbatim.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub parent: Option<String>,
    pub recursive: bool,
    /// Records as complete as `get` returns them, even where the vendor's listing is terse and
    /// that costs a call per record (DingTalk's `department/listsub` omits order and managers).
    pub complete: bool,
    pub page_size: Option<u32>,
    pub params: BTreeMap<String, String>,
}

/// A stream of raw vendor records, page by page under the hood.
pub type RecordStream<'a> = BoxStream<'a, Result<Value, ConnectorError>>;

/// Reading: list and get per entity.
#[async_trait]
pub trait ReadEntities: Send + Sync {
    /// Every record of `entity` matching `query`, following the vendor's pagination to the end.
    fn list<'a>(&'a self, entity: Entity, query: ListQuery) -> RecordStream<'a>;
    /// One record by its external id; `None` when the vendor says it does not exist.
    async fn get(&self, entity: Entity, id: &str) -> Result<Option<Value>, ConnectorError>;
}

/// Writing: create / update / delete-or-disable, returning the external id.
#[async_trait]
pub trait WriteEntities: Send + Sync {
    async fn create(&self, entity: Entity, record: Value) -> Result<String, ConnectorError>;
    /// `create` with an idempotency key — the same key creates at most one record — where the
    /// vendor allows one ([`keyed_creates`](Self::keyed_creates)): a create retried after a
    /// lost reply, or repeated after a crash, then returns the record made the first time.
    /// The default ignores the key.
    async fn create_keyed(
        &self,
        entity: Entity,
        record: Value,
        key: &str,
    ) -> Result<String, ConnectorError> {
        let _ = key;
        self.create(entity, record).await
    }
    /// Whether [`create_keyed`](Self::create_keyed) is idempotent for `entity` (by the key, or
    /// by what the vendor keeps unique: a chosen userid, a department's name under its parent).
    fn keyed_creates(&self, entity: Entity) -> bool {
        let _ = entity;
        false
    }
    async fn update(
        &self,
        entity: Entity,
        id: &str,
        patch: Value,
    ) -> Result<String, ConnectorError>;
    /// Deletes the record, or disables it where the vendor cannot delete.
    async fn delete(&self, entity: Entity, id: &str) -> Result<(), ConnectorError>;
}

/// One event as the vendor sent it, after verification and decryption.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    pub vendor: &'static str,
    /// The vendor's event id, the de-duplication key.
    pub event_id: String,
    pub event_type: String,
    /// The vendor's creation time in milliseconds since the epoch, when given.
    pub created_at_ms: Option<i64>,
    /// The whole decrypted envelope.
    pub payload: Value,
}

/// An inbound callback request as the hub's HTTP layer received it.
#[derive(Debug, Clone)]
pub struct CallbackRequest {
    pub headers: axum::http::HeaderMap,
    pub query: HashMap<String, String>,
    pub body: Bytes,
}

/// What the hub must answer, and what it got.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CallbackOutcome {
    /// A URL verification handshake; answer with `reply`, nothing to process.
    Handshake { reply: CallbackReply },
    /// A new event: ack with `reply` first, then process the event.
    Event {
        event: RawEvent,
        reply: CallbackReply,
    },
    /// An event seen before (a vendor retry): ack with `reply`, do not process again.
    Duplicate {
        event_id: String,
        reply: CallbackReply,
    },
}

/// Why a callback was refused. Every variant is answered with a 4xx and a log line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallbackError {
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("signature headers missing")]
    MissingSignature,
    #[error("signature mismatch")]
    BadSignature,
    #[error("timestamp outside the allowed window")]
    StaleTimestamp,
    #[error("verification token mismatch")]
    BadToken,
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    #[error("malformed callback: {0}")]
    Malformed(String),
    #[error("de-duplication store failed: {0}")]
    Dedup(String),
}

impl CallbackError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge(_) => 413,
            Self::MissingSignature | Self::BadSignature | Self::StaleTimestamp | Self::BadToken => {
                401
            }
            Self::Decrypt(_) | Self::Malformed(_) => 400,
            // Not the sender's fault: let the vendor retry.
            Self::Dedup(_) => 503,
        }
    }
}

/// Verifies and decrypts callbacks into raw vendor events.
#[async_trait]
pub trait ReceiveEvents: Send + Sync {
    async fn handle_callback(
        &self,
        req: &CallbackRequest,
    ) -> Result<CallbackOutcome, CallbackError>;
}

/// Records which event ids were already seen. The hub implements it over its store; tests use
/// [`InMemoryDedup`].
#[async_trait]
pub trait EventDedup: Send + Sync {
    /// Marks `event_id` as seen; returns `true` if it was not seen before.
    async fn first_seen(&self, vendor: &str, event_id: &str) -> Result<bool, String>;
}

/// An in-memory [`EventDedup`] remembering ids for `ttl` (Feishu retries for about 7 hours).
#[derive(Debug)]
pub struct InMemoryDedup {
    ttl: Duration,
    seen: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl InMemoryDedup {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for InMemoryDedup {
    fn default() -> Self {
        Self::new(Duration::from_secs(8 * 3600))
    }
}

#[async_trait]
impl EventDedup for InMemoryDedup {
    async fn first_seen(&self, vendor: &str, event_id: &str) -> Result<bool, String> {
        let now = tokio::time::Instant::now();
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| "dedup lock poisoned".to_string())?;
        seen.retain(|_, at| now.duration_since(*at) < self.ttl);
        let key = format!("{vendor}\u{1f}{event_id}");
        Ok(seen.insert(key, now).is_none())
    }
}

/// One event handed on by a [`PushChannel`], waiting to be settled: [`PushDelivery::ack`] once
/// it is safe (the hub's queue confirmed it), and the channel acknowledges it to the vendor;
/// [`PushDelivery::nack`] (or dropping it) and the channel answers the vendor with a failure, so
/// the vendor delivers it again.
#[derive(Debug)]
pub struct PushDelivery {
    pub event: RawEvent,
    settle: tokio::sync::oneshot::Sender<bool>,
}

impl PushDelivery {
    /// A delivery of `event` and the receiver its settlement arrives on (`true`: ack).
    pub fn new(event: RawEvent) -> (Self, tokio::sync::oneshot::Receiver<bool>) {
        let (settle, rx) = tokio::sync::oneshot::channel();
        (Self { event, settle }, rx)
    }

    /// The event is safe: acknowledge it to the vendor.
    pub fn ack(self) {
        let _ = self.settle.send(true);
    }

    /// The event could not be taken: the vendor must deliver it again.
    pub fn nack(self) {
        let _ = self.settle.send(false);
    }
}

/// How a pushed event was settled by the receiving side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Ack,
    Nack,
    /// The receiving side is gone (shutting down): stop without answering the vendor.
    Closed,
}

/// Hands `event` to `sink` and waits until the receiver settled it.
pub(crate) async fn hand_on(
    sink: &tokio::sync::mpsc::Sender<PushDelivery>,
    event: RawEvent,
) -> Settled {
    let (delivery, settled) = PushDelivery::new(event);
    if sink.send(delivery).await.is_err() {
        return Settled::Closed;
    }
    match settled.await {
        Ok(true) => Settled::Ack,
        // Refused, or dropped unsettled.
        Ok(false) | Err(_) => Settled::Nack,
    }
}

/// A push channel that needs no public address (Feishu long connection, DingTalk Stream).
/// It keeps the connection up (reconnecting) until `shutdown` turns true.
#[async_trait]
pub trait PushChannel: Send + Sync {
    /// Hands every event to `sink` as a [`PushDelivery`] and acknowledges it to the vendor only
    /// once it was acked; a nacked (or dropped) delivery is answered with a failure so that the
    /// vendor delivers it again. Events are handed on one at a time, in arrival order.
    async fn run_confirmed(
        &self,
        sink: tokio::sync::mpsc::Sender<PushDelivery>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ConnectorError>;

    /// Like [`PushChannel::run_confirmed`], but every event is acknowledged to the vendor as
    /// soon as `sink` took it.
    async fn run(
        &self,
        sink: tokio::sync::mpsc::Sender<RawEvent>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ConnectorError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<PushDelivery>(1);
        let forward = async move {
            while let Some(d) = rx.recv().await {
                let PushDelivery { event, settle } = d;
                if sink.send(event).await.is_err() {
                    let _ = settle.send(false);
                    break;
                }
                let _ = settle.send(true);
            }
        };
        let (result, ()) = tokio::join!(self.run_confirmed(tx, shutdown), forward);
        result
    }
}

/// Size and type limits of a vendor's file upload.
#[derive(Debug, Clone)]
pub struct FileLimits {
    pub max_image_bytes: usize,
    pub max_file_bytes: usize,
    pub file_types: &'static [&'static str],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Image,
    File,
}

impl FileKind {
    /// The media type DingTalk and WeCom uploads take for this kind (`image`, `file`).
    pub fn media_type(self) -> &'static str {
        match self {
            FileKind::Image => "image",
            FileKind::File => "file",
        }
    }
}

impl FileLimits {
    /// Refuses a type the vendor does not take, naming it.
    pub fn check_type(&self, vendor: &'static str, file_type: &str) -> Result<(), ConnectorError> {
        if self.file_types.contains(&file_type) {
            Ok(())
        } else {
            Err(ConnectorError::permanent(
                vendor,
                format!(
                    "file type {file_type:?} is not one of {}",
                    self.file_types.join(", ")
                ),
            ))
        }
    }
}

/// Attachments: upload returns the vendor's key for the file.
#[async_trait]
pub trait Files: Send + Sync {
    fn limits(&self) -> &FileLimits;
    async fn upload(
        &self,
        kind: FileKind,
        name: &str,
        data: Bytes,
    ) -> Result<String, ConnectorError>;
    async fn download(&self, key: &str) -> Result<Bytes, ConnectorError>;
}

/// Whether a vendor record found under the id a create chose is the person that create wrote:
/// its mobile and email (where the create set them) are the same, and at least one was set.
pub fn same_contact(created: &Value, found: &Value) -> bool {
    let field = |v: &Value, f: &str| {
        v.get(f)
            .and_then(Value::as_str)
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
    };
    let mut compared = false;
    for f in ["mobile", "email"] {
        if let Some(want) = field(created, f) {
            if field(found, f).as_deref() != Some(want.as_str()) {
                return false;
            }
            compared = true;
        }
    }
    compared
}

/// An operation a vendor does not offer for an entity.
pub fn unsupported(vendor: &'static str, what: &str, entity: Entity) -> ConnectorError {
    ConnectorError::permanent(
        vendor,
        format!("{what} of {} is not supported", entity.as_str()),
    )
}

/// A listing that fails at once with `e`.
pub fn failed_stream<'a>(e: ConnectorError) -> RecordStream<'a> {
    futures_util::stream::once(async move { Err(e) }).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedup_remembers_per_vendor() {
        let d = InMemoryDedup::default();
        assert!(d.first_seen("feishu", "e1").await.unwrap());
        assert!(!d.first_seen("feishu", "e1").await.unwrap());
        assert!(d.first_seen("dingtalk", "e1").await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn dedup_forgets_after_ttl() {
        let d = InMemoryDedup::new(Duration::from_secs(10));
        assert!(d.first_seen("v", "e").await.unwrap());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(d.first_seen("v", "e").await.unwrap());
    }

    #[test]
    fn same_contact_needs_every_set_field_equal_and_one_set() {
        use serde_json::json;
        let created = json!({"userid": "E1", "mobile": "13800000001", "email": "A@x.cn"});
        assert!(super::same_contact(
            &created,
            &json!({"mobile": "13800000001", "email": "a@x.cn"})
        ));
        assert!(!super::same_contact(
            &created,
            &json!({"mobile": "13800000002", "email": "a@x.cn"})
        ));
        // a vendor that hides the contact fields: not recognised
        assert!(!super::same_contact(
            &created,
            &json!({"mobile": "", "email": ""})
        ));
        assert!(!super::same_contact(
            &json!({"userid": "E1"}),
            &json!({"mobile": "1"})
        ));
    }
}
