//! DingTalk HTTP push callbacks (事件订阅 "HTTP 推送"): the WXBizMsgCrypt format in JSON
//! ([`crate::wxbiz`]), `POST <url>?msg_signature|signature=…&timestamp|timeStamp=…&nonce=…` with
//! body `{"encrypt":"…"}`; the reply is the encrypted `success`
//! (`{"msg_signature","timeStamp","nonce","encrypt"}`), including for `check_url`.
//!
//! Contact change events come in the current format (`userId`/`deptId`, `eventId`) and the legacy
//! `register_call_back` format (`UserId`/`DeptId`, `TimeStamp`); [`contact_change`] reads both.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};

use crate::capability::{CallbackError, CallbackReply, RawEvent};
use crate::crypto::random_bytes;
use crate::dingtalk::VENDOR;
use crate::receiver::{self, Clock, Incoming, Limits, Opened, Receiver, VendorCallbacks};
use crate::wxbiz::{self, WxBizError, WxBizMsgCrypt};

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
pub type DingTalkReceiver = Receiver<DingTalkCallbacks>;

/// DingTalk's part of [`DingTalkReceiver`]: the WXBizMsgCrypt crypto in JSON and the owner key.
pub struct DingTalkCallbacks {
    crypt: WxBizMsgCrypt,
    owner_key: String,
}

/// Builds the encrypted reply `{"msg_signature","timeStamp","nonce","encrypt"}` for `text`.
pub fn encrypted_reply(crypt: &WxBizMsgCrypt, owner_key: &str, text: &str) -> CallbackReply {
    let ts = receiver::unix_millis().to_string();
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
    let v = receiver::json(reply, "reply")?;
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
    e.into_callback(VENDOR, WxBizError::dingtalk_code)
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

impl DingTalkReceiver {
    /// The callback crypto (to build test pushes or check replies).
    pub fn crypt(&self) -> &WxBizMsgCrypt {
        &self.vendor().crypt
    }
}

impl VendorCallbacks for DingTalkCallbacks {
    type Config = CallbackConfig;
    type Params = HashMap<String, String>;
    const VENDOR: &'static str = VENDOR;
    const CLOCK: Clock = Clock::Millis;

    fn configure(cfg: CallbackConfig) -> Result<(Self, Limits), crate::ConnectorError> {
        let crypt = WxBizMsgCrypt::for_receiver(
            VENDOR,
            cfg.token,
            &cfg.aes_key,
            &cfg.owner_key,
            "callback aes_key",
            "callback owner key is empty",
        )?;
        let limits = Limits::new(cfg.timestamp_window, cfg.max_body_bytes);
        let callbacks = Self {
            crypt,
            owner_key: cfg.owner_key,
        };
        Ok((callbacks, limits))
    }

    fn open(&self, req: Incoming<'_, HashMap<String, String>>) -> Result<Opened, CallbackError> {
        let (sig, ts, nonce) = wxbiz::signed_query(
            req.params,
            [
                &["msg_signature", "signature"],
                &["timestamp", "timeStamp"],
                &["nonce"],
            ],
            true,
        )?;
        // Seconds or milliseconds: both occur.
        req.window.check(ts)?;
        let outer = receiver::json(req.body, "body")?;
        let enc = outer
            .get("encrypt")
            .and_then(Value::as_str)
            .ok_or_else(|| CallbackError::Malformed("body without encrypt".into()))?;
        self.crypt.verify(ts, nonce, enc, sig).map_err(wx_err)?;
        // Signed: from here on every failure is answered alike (receiver::opaque).
        let plain = self
            .crypt
            .decrypt_for(enc, &self.owner_key)
            .map_err(wx_err)?;
        let event =
            receiver::json(&plain, "decrypted body").map_err(|e| receiver::opaque(VENDOR, e))?;
        let event_type = event
            .get("EventType")
            .or_else(|| event.get("eventType"))
            .and_then(Value::as_str)
            .ok_or_else(|| receiver::opaque(VENDOR, "event without EventType"))?
            .to_string();
        match event_type.as_str() {
            "check_url" => {
                return Ok(Opened::Handshake(encrypted_reply(
                    &self.crypt,
                    &self.owner_key,
                    "success",
                )));
            }
            // Legacy ISV checks want the Random echoed.
            "check_create_suite_url" | "check_update_suite_url" => {
                let random = event
                    .get("Random")
                    .and_then(Value::as_str)
                    .unwrap_or("success");
                return Ok(Opened::Handshake(encrypted_reply(
                    &self.crypt,
                    &self.owner_key,
                    random,
                )));
            }
            _ => {}
        }
        // De-duplicate on eventId; legacy events have none: the signature then identifies the
        // request, so an exact replay is still caught. The request itself is a key too.
        let event_id = event
            .get("eventId")
            .or_else(|| event.get("EventId"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("sig:{}", sig.to_ascii_lowercase()));
        let replay_key = format!("req:{}", sig.to_ascii_lowercase());
        let keys = if event_id.starts_with("sig:") {
            vec![replay_key]
        } else {
            vec![replay_key, event_id.clone()]
        };
        let reply = encrypted_reply(&self.crypt, &self.owner_key, "success");
        let created = ["EventTime", "TimeStamp", "timeStamp", "eventBornTime"]
            .iter()
            .find_map(|k| {
                event.get(*k).and_then(|v| {
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
            });
        Ok(Opened::Event {
            event: RawEvent {
                vendor: VENDOR,
                event_id,
                event_type,
                created_at_ms: created,
                payload: event,
            },
            keys,
            reply,
        })
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
