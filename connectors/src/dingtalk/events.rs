//! DingTalk HTTP push callbacks (事件订阅 "HTTP 推送"): the WXBizMsgCrypt format in JSON
//! ([`crate::wxbiz`]), `POST <url>?msg_signature|signature=…&timestamp|timeStamp=…&nonce=…` with
//! body `{"encrypt":"…"}`; the reply is the encrypted `success`
//! (`{"msg_signature","timeStamp","nonce","encrypt"}`), including for `check_url`.
//!
//! Contact change events come in the current format (`userId`/`deptId`, `eventId`) and the legacy
//! `register_call_back` format (`UserId`/`DeptId`, `TimeStamp`); [`contact_change`] reads both.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::capability::{
    CallbackError, CallbackOutcome, CallbackReply, CallbackRequest, EventDedup, RawEvent,
    ReceiveEvents,
};
use crate::crypto::random_bytes;
use crate::dingtalk::VENDOR;
use crate::wxbiz::{WxBizError, WxBizMsgCrypt};

/// Callback settings of one DingTalk app.
#[derive(Clone)]
pub struct CallbackConfig {
    /// The callback token (3–32 alphanumerics).
    pub token: SecretString,
    /// The 43-character aes_key.
    pub aes_key: SecretString,
    /// The owner key checked after decryption: the app key (app-level subscription), the corp
    /// id (legacy `register_call_back`) or the suite key (ISV).
    pub owner_key: String,
    /// Accepted distance between the request's timestamp and now.
    pub timestamp_window: Duration,
    pub max_body_bytes: usize,
}

impl CallbackConfig {
    pub fn new(token: SecretString, aes_key: SecretString, owner_key: impl Into<String>) -> Self {
        Self {
            token,
            aes_key,
            owner_key: owner_key.into(),
            timestamp_window: Duration::from_secs(300),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Verifies, decrypts and de-duplicates DingTalk HTTP push callbacks.
pub struct DingTalkReceiver {
    crypt: WxBizMsgCrypt,
    owner_key: String,
    window: Duration,
    max_body: usize,
    dedup: Arc<dyn EventDedup>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Builds the encrypted reply `{"msg_signature","timeStamp","nonce","encrypt"}` for `text`.
pub fn encrypted_reply(crypt: &WxBizMsgCrypt, owner_key: &str, text: &str) -> CallbackReply {
    let ts = now_ms().to_string();
    let nonce = hex::encode(random_bytes::<8>());
    let enc = crypt.encrypt(text.as_bytes(), owner_key);
    let sig = crypt.signature(&ts, &nonce, &enc);
    CallbackReply {
        status: 200,
        content_type: "application/json",
        body: json!({"msg_signature": sig, "timeStamp": ts, "nonce": nonce, "encrypt": enc})
            .to_string()
            .into_bytes(),
    }
}

/// Checks an encrypted reply (as DingTalk does) and returns its plaintext.
pub fn open_reply(
    crypt: &WxBizMsgCrypt,
    owner_key: &str,
    reply: &[u8],
) -> Result<String, CallbackError> {
    let v: Value = serde_json::from_slice(reply)
        .map_err(|e| CallbackError::Malformed(format!("reply is not JSON: {e}")))?;
    let f = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| CallbackError::Malformed(format!("reply without {k}")))
    };
    let plain = crypt
        .open(
            f("timeStamp")?,
            f("nonce")?,
            f("encrypt")?,
            f("msg_signature")?,
            owner_key,
        )
        .map_err(wx_err)?;
    String::from_utf8(plain).map_err(|_| CallbackError::Malformed("reply is not UTF-8".into()))
}

fn wx_err(e: WxBizError) -> CallbackError {
    match e {
        WxBizError::BadSignature => CallbackError::BadSignature,
        other => CallbackError::Decrypt(format!("{other} ({})", other.dingtalk_code())),
    }
}

/// Builds the query and body of a push exactly as DingTalk sends it (sandbox and tests): both
/// `msg_signature` and `signature` carry the signature.
pub fn build_callback(
    crypt: &WxBizMsgCrypt,
    owner_key: &str,
    plaintext: &Value,
    timestamp: &str,
    nonce: &str,
) -> (Vec<(String, String)>, Vec<u8>) {
    let enc = crypt.encrypt(plaintext.to_string().as_bytes(), owner_key);
    let sig = crypt.signature(timestamp, nonce, &enc);
    (
        vec![
            ("msg_signature".into(), sig.clone()),
            ("signature".into(), sig),
            ("timestamp".into(), timestamp.to_string()),
            ("nonce".into(), nonce.to_string()),
        ],
        json!({"encrypt": enc}).to_string().into_bytes(),
    )
}

/// Kind of contact change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactChangeKind {
    UserAdded,
    UserModified,
    UserLeft,
    UserActivated,
    DeptCreated,
    DeptModified,
    DeptRemoved,
}

/// A contact change event, from either format.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactChange {
    pub kind: ContactChangeKind,
    pub user_ids: Vec<String>,
    pub dept_ids: Vec<i64>,
}

fn list_field<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Vec<Value>> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_array))
}

/// Reads a contact change from an event plaintext (current `userId`/`deptId` or legacy
/// `UserId`/`DeptId`), or from a Stream event's `data` with `event_type` given.
pub fn contact_change(event_type: &str, payload: &Value) -> Option<ContactChange> {
    use ContactChangeKind::*;
    let kind = match event_type {
        "user_add_org" => UserAdded,
        "user_modify_org" => UserModified,
        "user_leave_org" => UserLeft,
        "user_active_org" => UserActivated,
        "org_dept_create" => DeptCreated,
        "org_dept_modify" => DeptModified,
        "org_dept_remove" => DeptRemoved,
        _ => return None,
    };
    let user_ids = list_field(payload, &["userId", "UserId", "userid"])
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let dept_ids = list_field(payload, &["deptId", "DeptId", "deptid"])
        .map(|a| {
            a.iter()
                .filter_map(|v| {
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ContactChange {
        kind,
        user_ids,
        dept_ids,
    })
}

/// The records a contact event names, as (entity, id): see [`contact_change`].
pub fn contact_records(
    event_type: &str,
    payload: &Value,
) -> Option<Vec<(crate::capability::Entity, String)>> {
    use crate::capability::Entity;
    let c = contact_change(event_type, payload)?;
    let mut out: Vec<(Entity, String)> =
        c.user_ids.into_iter().map(|u| (Entity::User, u)).collect();
    out.extend(
        c.dept_ids
            .into_iter()
            .map(|d| (Entity::Department, d.to_string())),
    );
    (!out.is_empty()).then_some(out)
}

fn q<'a>(query: &'a HashMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| query.get(*n))
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

impl DingTalkReceiver {
    pub fn new(
        cfg: CallbackConfig,
        dedup: Arc<dyn EventDedup>,
    ) -> Result<Self, crate::ConnectorError> {
        let crypt = WxBizMsgCrypt::new(cfg.token, &cfg.aes_key).map_err(|e| {
            crate::ConnectorError::permanent(VENDOR, format!("callback aes_key: {e}"))
        })?;
        if cfg.owner_key.is_empty() {
            return Err(crate::ConnectorError::permanent(
                VENDOR,
                "callback owner key is empty",
            ));
        }
        Ok(Self {
            crypt,
            owner_key: cfg.owner_key,
            window: cfg.timestamp_window,
            max_body: cfg.max_body_bytes,
            dedup,
        })
    }

    /// The callback crypto (to build test pushes or check replies).
    pub fn crypt(&self) -> &WxBizMsgCrypt {
        &self.crypt
    }

    /// Handles one push; `now_ms` is the current Unix time in milliseconds.
    pub async fn handle_at(
        &self,
        query: &HashMap<String, String>,
        body: &[u8],
        now_ms: i64,
    ) -> Result<CallbackOutcome, CallbackError> {
        let r = self.handle_inner(query, body, now_ms).await;
        match &r {
            Ok(CallbackOutcome::Duplicate { event_id, .. }) => {
                tracing::info!(
                    vendor = VENDOR,
                    event_id,
                    "duplicate push ignored (retry or replay)"
                );
            }
            Ok(CallbackOutcome::Event { event, .. }) => {
                tracing::debug!(
                    vendor = VENDOR,
                    event_id = event.event_id,
                    event_type = event.event_type,
                    "event accepted"
                );
            }
            Ok(CallbackOutcome::Handshake { .. }) => {
                tracing::info!(vendor = VENDOR, "check_url answered");
            }
            Err(e) => {
                tracing::warn!(vendor = VENDOR, reason = %e, status = e.status(), body_len = body.len(), "callback rejected");
            }
        }
        r
    }

    async fn handle_inner(
        &self,
        query: &HashMap<String, String>,
        body: &[u8],
        now_ms: i64,
    ) -> Result<CallbackOutcome, CallbackError> {
        if body.len() > self.max_body {
            return Err(CallbackError::TooLarge(self.max_body));
        }
        let (Some(sig), Some(ts), Some(nonce)) = (
            q(query, &["msg_signature", "signature"]),
            q(query, &["timestamp", "timeStamp"]),
            q(query, &["nonce"]),
        ) else {
            return Err(CallbackError::MissingSignature);
        };
        // Seconds or milliseconds: both occur.
        let ts_n: i64 = ts
            .trim()
            .parse()
            .map_err(|_| CallbackError::StaleTimestamp)?;
        let ts_ms = if ts_n < 100_000_000_000 {
            ts_n.saturating_mul(1000)
        } else {
            ts_n
        };
        if now_ms.abs_diff(ts_ms) > self.window.as_millis() as u64 {
            return Err(CallbackError::StaleTimestamp);
        }
        let outer: Value = serde_json::from_slice(body)
            .map_err(|e| CallbackError::Malformed(format!("body is not JSON: {e}")))?;
        let enc = outer
            .get("encrypt")
            .and_then(Value::as_str)
            .ok_or_else(|| CallbackError::Malformed("body without encrypt".into()))?;
        self.crypt.verify(ts, nonce, enc, sig).map_err(wx_err)?;
        let plain = self
            .crypt
            .decrypt_for(enc, &self.owner_key)
            .map_err(wx_err)?;
        let event: Value = serde_json::from_slice(&plain)
            .map_err(|e| CallbackError::Malformed(format!("decrypted body is not JSON: {e}")))?;
        let event_type = event
            .get("EventType")
            .or_else(|| event.get("eventType"))
            .and_then(Value::as_str)
            .ok_or_else(|| CallbackError::Malformed("event without EventType".into()))?
            .to_string();
        match event_type.as_str() {
            "check_url" => {
                return Ok(CallbackOutcome::Handshake {
                    reply: encrypted_reply(&self.crypt, &self.owner_key, "success"),
                });
            }
            // Legacy ISV checks want the Random echoed.
            "check_create_suite_url" | "check_update_suite_url" => {
                let random = event
                    .get("Random")
                    .and_then(Value::as_str)
                    .unwrap_or("success");
                return Ok(CallbackOutcome::Handshake {
                    reply: encrypted_reply(&self.crypt, &self.owner_key, random),
                });
            }
            _ => {}
        }
        // De-duplicate on eventId; legacy events have none: the signature then identifies the
        // request, so an exact replay is still caught.
        let event_id = event
            .get("eventId")
            .or_else(|| event.get("EventId"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("sig:{}", sig.to_ascii_lowercase()));
        let reply = encrypted_reply(&self.crypt, &self.owner_key, "success");
        let replay_key = format!("req:{}", sig.to_ascii_lowercase());
        let first_req = self
            .dedup
            .first_seen(VENDOR, &replay_key)
            .await
            .map_err(CallbackError::Dedup)?;
        let first_event = if event_id.starts_with("sig:") {
            first_req
        } else {
            self.dedup
                .first_seen(VENDOR, &event_id)
                .await
                .map_err(CallbackError::Dedup)?
        };
        if !first_req || !first_event {
            return Ok(CallbackOutcome::Duplicate { event_id, reply });
        }
        let created = ["EventTime", "TimeStamp", "timeStamp", "eventBornTime"]
            .iter()
            .find_map(|k| {
                event.get(*k).and_then(|v| {
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
            });
        Ok(CallbackOutcome::Event {
            event: RawEvent {
                vendor: VENDOR,
                event_id,
                event_type,
                created_at_ms: created,
                payload: event,
            },
            reply,
        })
    }
}

#[async_trait]
impl ReceiveEvents for DingTalkReceiver {
    async fn handle_callback(
        &self,
        req: &CallbackRequest,
    ) -> Result<CallbackOutcome, CallbackError> {
        self.handle_at(&req.query, &req.body, now_ms()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_contact_formats() {
        let cur = json!({"EventType":"user_add_org","userId":["u1","u2"],"eventId":"e"});
        let old = json!({"EventType":"user_add_org","UserId":["u1","u2"],"TimeStamp":1});
        let a = contact_change("user_add_org", &cur).unwrap();
        assert_eq!(a, contact_change("user_add_org", &old).unwrap());
        assert_eq!(a.user_ids, vec!["u1", "u2"]);
        let d = contact_change("org_dept_remove", &json!({"DeptId":[5, "6"]})).unwrap();
        assert_eq!(d.kind, ContactChangeKind::DeptRemoved);
        assert_eq!(d.dept_ids, vec![5, 6]);
        assert!(contact_change("chat_disband", &cur).is_none());
    }
}
