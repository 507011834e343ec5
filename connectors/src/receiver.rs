//! The callback receiver every vendor shares: body size limit, de-duplication through
//! [`EventDedup`] (the event is new only if every key it is known by is new), the
//! [`CallbackOutcome`] / [`CallbackReply`] plumbing and its log line, plus the checks each
//! vendor's crypto calls: the timestamp window and the constant-time signature comparison.
//!
//! Where the vendor signs, [`VendorCallbacks::open`] checks the signature before it decrypts
//! anything, and every failure to open what it decrypted is the one [`opaque`] error: a
//! receiver must never answer according to what a decryption found (a padding oracle).
//!
//! A vendor plugs in its crypto and event parsing as a [`VendorCallbacks`] impl
//! ([`VendorCallbacks::configure`]: settings checked; [`VendorCallbacks::open`]: verify,
//! decrypt, parse into an [`Opened`] with its reply and de-duplication keys) and names its
//! receiver `Receiver<ItsCallbacks>` (`FeishuReceiver::new(cfg, dedup)` is [`Receiver::new`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::http::HeaderMap;
use serde_json::Value;

use crate::ConnectorError;
use crate::capability::{
    CallbackError, CallbackOutcome, CallbackReply, CallbackRequest, EventDedup, RawEvent,
    ReceiveEvents,
};

/// A verified and decrypted callback, before de-duplication.
#[derive(Debug)]
pub enum Opened {
    /// A URL verification: answer `reply`, nothing to process.
    Handshake(CallbackReply),
    /// An event, known by the de-duplication `keys` (in the order they are asked); answered
    /// with `reply` whether new or a duplicate.
    Event {
        event: RawEvent,
        keys: Vec<String>,
        reply: CallbackReply,
    },
}

impl Opened {
    /// An event de-duplicated on its event id alone.
    pub fn event(event: RawEvent, reply: CallbackReply) -> Self {
        Self::Event {
            keys: vec![event.event_id.clone()],
            event,
            reply,
        }
    }
}

/// The part of a request besides the body where a vendor's signature travels.
pub trait RequestParams: Sync {
    fn of(req: &CallbackRequest) -> &Self;
}

/// Headers (Feishu).
impl RequestParams for HeaderMap {
    fn of(req: &CallbackRequest) -> &Self {
        &req.headers
    }
}

/// The URL-decoded query (DingTalk, WeCom).
impl RequestParams for HashMap<String, String> {
    fn of(req: &CallbackRequest) -> &Self {
        &req.query
    }
}

/// The timestamp window a request must fall in.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The current time, in `clock`'s unit.
    pub now: i64,
    pub width: Duration,
    pub clock: Clock,
}

impl Window {
    /// Checks the request timestamp `ts`.
    pub fn check(&self, ts: &str) -> Result<(), CallbackError> {
        check_timestamp(ts, self.now, self.width, self.clock)
    }
}

/// One callback as [`VendorCallbacks::open`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a, P: ?Sized> {
    /// Headers or query ([`RequestParams`]).
    pub params: &'a P,
    /// The raw body, within the size limit.
    pub body: &'a [u8],
    pub window: Window,
}

/// The size and time limits of a receiver.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timestamp_window: Duration,
    pub max_body_bytes: usize,
}

impl Limits {
    pub fn new(timestamp_window: Duration, max_body_bytes: usize) -> Self {
        Self {
            timestamp_window,
            max_body_bytes,
        }
    }
}

/// What a vendor plugs into [`Receiver`].
pub trait VendorCallbacks: Send + Sync + Sized + 'static {
    /// The vendor's callback settings.
    type Config;
    type Params: RequestParams + ?Sized;
    const VENDOR: &'static str;
    /// The unit of the vendor's timestamps (and of `now` in [`Receiver::handle_at`]).
    const CLOCK: Clock = Clock::Seconds;

    /// The vendor's part and the receiver's limits from the settings, checked.
    fn configure(cfg: Self::Config) -> Result<(Self, Limits), ConnectorError>;

    /// Verifies, decrypts and parses a callback.
    fn open(&self, req: Incoming<'_, Self::Params>) -> Result<Opened, CallbackError>;
}

/// Verifies, decrypts and de-duplicates one vendor's callbacks.
pub struct Receiver<V> {
    vendor: V,
    limits: Limits,
    dedup: Arc<dyn EventDedup>,
}

impl<V: std::fmt::Debug> std::fmt::Debug for Receiver<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.vendor.fmt(f)
    }
}

impl<V: VendorCallbacks> Receiver<V> {
    /// A receiver with `cfg`, its settings checked.
    pub fn new(cfg: V::Config, dedup: Arc<dyn EventDedup>) -> Result<Self, ConnectorError> {
        let (vendor, limits) = V::configure(cfg)?;
        Ok(Self {
            vendor,
            limits,
            dedup,
        })
    }

    /// The vendor's part (its crypto and settings).
    pub fn vendor(&self) -> &V {
        &self.vendor
    }

    /// Handles one callback; `now` is the current Unix time in the vendor's unit
    /// ([`VendorCallbacks::CLOCK`]).
    pub async fn handle_at(
        &self,
        params: &V::Params,
        body: &[u8],
        now: i64,
    ) -> Result<CallbackOutcome, CallbackError> {
        let r = self.handle_inner(params, body, now).await;
        match &r {
            Ok(CallbackOutcome::Duplicate { event_id, .. }) => {
                tracing::info!(
                    vendor = V::VENDOR,
                    event_id,
                    "duplicate callback ignored (vendor retry or replay)"
                );
            }
            Ok(CallbackOutcome::Event { event, .. }) => {
                tracing::debug!(
                    vendor = V::VENDOR,
                    event_id = event.event_id,
                    event_type = event.event_type,
                    "callback accepted"
                );
            }
            Ok(CallbackOutcome::Handshake { .. }) => {
                tracing::info!(vendor = V::VENDOR, "callback handshake answered");
            }
            Err(e) => {
                tracing::warn!(vendor = V::VENDOR, reason = %e, status = e.status(), body_len = body.len(), "callback rejected");
            }
        }
        r
    }

    async fn handle_inner(
        &self,
        params: &V::Params,
        body: &[u8],
        now: i64,
    ) -> Result<CallbackOutcome, CallbackError> {
        let max = self.limits.max_body_bytes;
        if body.len() > max {
            return Err(CallbackError::TooLarge(max));
        }
        let window = Window {
            now,
            width: self.limits.timestamp_window,
            clock: V::CLOCK,
        };
        let req = Incoming {
            params,
            body,
            window,
        };
        let (event, keys, reply) = match self.vendor.open(req)? {
            Opened::Handshake(reply) => return Ok(CallbackOutcome::Handshake { reply }),
            Opened::Event { event, keys, reply } => (event, keys, reply),
        };
        // Every key is asked (and so marked), even after one was seen.
        let mut first = true;
        for key in &keys {
            first &= self
                .dedup
                .first_seen(V::VENDOR, key)
                .await
                .map_err(CallbackError::Dedup)?;
        }
        if !first {
            return Ok(CallbackOutcome::Duplicate {
                event_id: event.event_id,
                reply,
            });
        }
        Ok(CallbackOutcome::Event { event, reply })
    }
}

#[async_trait]
impl<V: VendorCallbacks> ReceiveEvents for Receiver<V> {
    async fn handle_callback(
        &self,
        req: &CallbackRequest,
    ) -> Result<CallbackOutcome, CallbackError> {
        let now = match V::CLOCK {
            Clock::Seconds => unix_secs(),
            Clock::Millis => unix_millis(),
        };
        self.handle_at(V::Params::of(req), &req.body, now).await
    }
}

/// The unit of a request timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Seconds,
    /// Milliseconds; a value below 10^11 is taken as seconds (both occur).
    Millis,
}

/// Checks that the request timestamp `ts` is within `window` of `now` (in `clock`'s unit).
pub fn check_timestamp(
    ts: &str,
    now: i64,
    window: Duration,
    clock: Clock,
) -> Result<(), CallbackError> {
    let t: i64 = ts
        .trim()
        .parse()
        .map_err(|_| CallbackError::StaleTimestamp)?;
    let (t, window) = match clock {
        Clock::Seconds => (t, window.as_secs()),
        Clock::Millis if t < 100_000_000_000 => (t.saturating_mul(1000), window.as_millis() as u64),
        Clock::Millis => (t, window.as_millis() as u64),
    };
    if now.abs_diff(t) > window {
        return Err(CallbackError::StaleTimestamp);
    }
    Ok(())
}

/// Compares a received hex signature (any case) with the expected one in constant time.
pub fn check_signature(expected: &str, given: &str) -> Result<(), CallbackError> {
    if crate::crypto::hex_signature_eq(expected, given) {
        Ok(())
    } else {
        Err(CallbackError::BadSignature)
    }
}

/// What [`opaque`] answers, whatever went wrong.
pub const OPAQUE: &str = "the encrypted content cannot be opened";

/// The one error for a callback whose encrypted content cannot be opened — not decodable,
/// bad padding, a malformed buffer, another receive id, a plaintext that does not parse or
/// lacks a field — once the signature checked out.
///
/// Every such failure gets the same answer: answers that differ with what the decryption
/// found (above all "bad padding" against anything else) are a padding oracle, which decrypts
/// captured callbacks without the key. The `detail` goes to the log only: error texts, never
/// a key (a parser's error may quote a few bytes of the vendor's signed plaintext).
pub fn opaque(vendor: &'static str, detail: impl std::fmt::Display) -> CallbackError {
    tracing::warn!(vendor, detail = %detail, "callback content cannot be opened");
    CallbackError::Decrypt(OPAQUE.to_owned())
}

/// Parses JSON; `what` names it in the error (`body`, `decrypted body`, `reply`).
pub fn json(bytes: &[u8], what: &str) -> Result<Value, CallbackError> {
    serde_json::from_slice(bytes)
        .map_err(|e| CallbackError::Malformed(format!("{what} is not JSON: {e}")))
}

/// A 200 reply.
pub fn reply(content_type: &'static str, body: Vec<u8>) -> CallbackReply {
    CallbackReply {
        status: 200,
        content_type,
        body,
    }
}

/// The current Unix time in seconds.
pub fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The current Unix time in milliseconds.
pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_window_in_seconds_and_millis() {
        let w = Duration::from_secs(300);
        assert!(check_timestamp(" 1000 ", 1300, w, Clock::Seconds).is_ok());
        assert_eq!(
            check_timestamp("1000", 1301, w, Clock::Seconds),
            Err(CallbackError::StaleTimestamp)
        );
        assert_eq!(
            check_timestamp("x", 1000, w, Clock::Seconds),
            Err(CallbackError::StaleTimestamp)
        );
        // Seconds given where milliseconds are expected.
        assert!(check_timestamp("1700000000", 1_700_000_300_000, w, Clock::Millis).is_ok());
        assert!(check_timestamp("1700000000000", 1_700_000_300_000, w, Clock::Millis).is_ok());
        assert!(check_timestamp("1700000000000", 1_700_000_300_001, w, Clock::Millis).is_err());
    }

    #[test]
    fn signature_any_case() {
        assert!(check_signature("ab01", "AB01").is_ok());
        assert_eq!(
            check_signature("ab01", "ab02"),
            Err(CallbackError::BadSignature)
        );
    }
}
