//! Messaging: app messages (`message/send`: text, markdown, textcard, file, image, … with `safe`
//! and the duplicate check; `invaliduser`/`invalidparty` reported per recipient), recall,
//! app group chats (`appchat/create|get|send`), media (`media/upload|get`) and group robots
//! (`webhook/send?key=`, 20 messages/minute per robot).
//!
//! App messages beyond 30/min or 1000/h per member are silently dropped by WeCom (no error):
//! keep bulk notifications under that.

use async_trait::async_trait;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::capability::{FileKind, FileLimits};
use crate::client::{Fallible, FileWire, found_part, reply_key};
use crate::crypto::sha256;
use crate::error::ConnectorError;
use crate::limit::RateLimit;
use crate::wecom::VENDOR;
use crate::wecom::client::{ApiCall, FilePart, WecomClient, WecomWire};

pub const MSG_TYPES: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "file",
    "textcard",
    "news",
    "mpnews",
    "markdown",
    "miniprogram_notice",
    "template_card",
];

/// Upload caps: image ≤10 MB, file ≤20 MB (voice 2 MB, video 10 MB); every file > 5 bytes.
pub const FILE_LIMITS: FileLimits = FileLimits {
    max_image_bytes: 10 * 1024 * 1024,
    max_file_bytes: 20 * 1024 * 1024,
    file_types: &["image", "voice", "video", "file"],
};
pub const MIN_FILE_BYTES: usize = 6;

/// Media size cap per upload type.
pub fn media_limit(media_type: &str) -> Option<usize> {
    match media_type {
        "image" => Some(10 * 1024 * 1024),
        "voice" => Some(2 * 1024 * 1024),
        "video" => Some(10 * 1024 * 1024),
        "file" => Some(20 * 1024 * 1024),
        _ => None,
    }
}

/// Byte caps of message fields (`text.content` 2048 B, `textcard.title` 128 B,
/// `textcard.description` 512 B, `markdown.content` 2048 B).
pub fn check_payload(msgtype: &str, payload: &Value) -> Result<(), String> {
    let s = |k: &str| payload.get(k).and_then(Value::as_str);
    let need = |k: &str, max: usize| match s(k) {
        None => Err(format!("{msgtype}.{k} is required")),
        Some("") => Err(format!("{msgtype}.{k} is empty")),
        Some(v) if v.len() > max => Err(format!("{msgtype}.{k} longer than {max} bytes")),
        Some(_) => Ok(()),
    };
    match msgtype {
        "text" | "markdown" => need("content", 2048),
        "textcard" => {
            need("title", 128)?;
            need("description", 512)?;
            need("url", 2048)?;
            if s("btntxt").is_some_and(|b| b.len() > 12) {
                return Err("textcard.btntxt longer than 12 bytes".into());
            }
            Ok(())
        }
        "image" | "voice" | "file" | "video" => need("media_id", 512),
        t if MSG_TYPES.contains(&t) => Ok(()),
        t => Err(format!("msgtype {t:?} is not supported")),
    }
}

/// An app message. Recipients are userids, department ids and tag ids; `["@all"]` in `touser`
/// means everyone the app can see.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub touser: Vec<String>,
    pub toparty: Vec<String>,
    pub totag: Vec<String>,
    pub msgtype: String,
    /// The object under the `msgtype` key (`{"content": …}` for text).
    pub payload: Value,
    pub safe: bool,
    /// `Some(seconds)`: WeCom suppresses an identical request within that interval (≤ 4 h).
    pub duplicate_check_interval: Option<u32>,
}

fn recipients(v: Option<&Value>) -> Vec<String> {
    id_list(v, false)
}

/// Ids as WeCom takes them: a `|`-separated string, a single number, or an array of strings
/// and numbers (other values: their JSON text with `other_values`, else left out).
pub(crate) fn id_list(v: Option<&Value>, other_values: bool) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => other_values.then(|| x.to_string()),
            })
            .collect(),
        Some(Value::Number(n)) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

fn split_list(s: Option<&Value>) -> Vec<String> {
    recipients(s)
}

impl OutgoingMessage {
    pub fn text(touser: &[&str], content: &str) -> Self {
        Self::new(touser, "text", json!({ "content": content }))
    }

    pub fn markdown(touser: &[&str], content: &str) -> Self {
        Self::new(touser, "markdown", json!({ "content": content }))
    }

    /// A text card: title, description (may use WeCom's `<div class="gray">` markup), a link and
    /// an optional button text.
    pub fn textcard(
        touser: &[&str],
        title: &str,
        description: &str,
        url: &str,
        btntxt: Option<&str>,
    ) -> Self {
        let mut p = json!({"title": title, "description": description, "url": url});
        if let Some(b) = btntxt {
            p["btntxt"] = json!(b);
        }
        Self::new(touser, "textcard", p)
    }

    /// An uploaded file or image (`media_id` from [`WecomClient::upload_media`]).
    pub fn media(touser: &[&str], msgtype: &str, media_id: &str) -> Self {
        Self::new(touser, msgtype, json!({ "media_id": media_id }))
    }

    pub fn new(touser: &[&str], msgtype: &str, payload: Value) -> Self {
        Self {
            touser: touser.iter().map(|s| s.to_string()).collect(),
            toparty: Vec::new(),
            totag: Vec::new(),
            msgtype: msgtype.into(),
            payload,
            safe: false,
            duplicate_check_interval: None,
        }
    }

    /// Reads a raw `message/send` body: `{touser ("a|b" or [..]), toparty, totag, msgtype,
    /// <msgtype>: {…}, safe, enable_duplicate_check, duplicate_check_interval}`.
    pub fn from_record(v: &Value) -> Result<Self, ConnectorError> {
        let msgtype = v
            .get("msgtype")
            .and_then(Value::as_str)
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "message without msgtype"))?
            .to_string();
        let payload = v
            .get(msgtype.as_str())
            .filter(|p| p.is_object())
            .cloned()
            .ok_or_else(|| {
                ConnectorError::permanent(VENDOR, format!("message without its {msgtype} object"))
            })?;
        let flag = |k: &str| {
            v.get(k)
                .is_some_and(|x| x.as_i64() == Some(1) || x.as_bool() == Some(true))
        };
        let interval = v
            .get("duplicate_check_interval")
            .and_then(Value::as_u64)
            .map(|n| n.min(14_400) as u32)
            .unwrap_or(1800);
        Ok(Self {
            touser: recipients(v.get("touser")),
            toparty: split_list(v.get("toparty")),
            totag: split_list(v.get("totag")),
            msgtype,
            payload,
            safe: flag("safe"),
            duplicate_check_interval: flag("enable_duplicate_check").then_some(interval),
        })
    }

    /// The `message/send` body for `agent_id`, after checking recipients and sizes.
    pub fn to_body(&self, agent_id: i64) -> Result<Value, ConnectorError> {
        let bad = |m: String| Err(ConnectorError::permanent(VENDOR, m));
        if self.touser.is_empty() && self.toparty.is_empty() && self.totag.is_empty() {
            return bad("a message needs touser, toparty or totag".into());
        }
        if self.touser.len() > 1000 {
            return bad("at most 1000 users per message".into());
        }
        if self.toparty.len() > 100 || self.totag.len() > 100 {
            return bad("at most 100 departments and 100 tags per message".into());
        }
        if let Err(m) = check_payload(&self.msgtype, &self.payload) {
            return bad(m);
        }
        let mut b = Map::new();
        b.insert("touser".into(), json!(self.touser.join("|")));
        b.insert("toparty".into(), json!(self.toparty.join("|")));
        b.insert("totag".into(), json!(self.totag.join("|")));
        b.insert("msgtype".into(), json!(self.msgtype));
        b.insert("agentid".into(), json!(agent_id));
        b.insert(self.msgtype.clone(), self.payload.clone());
        b.insert("safe".into(), json!(i32::from(self.safe)));
        if let Some(i) = self.duplicate_check_interval {
            b.insert("enable_duplicate_check".into(), json!(1));
            b.insert("duplicate_check_interval".into(), json!(i));
        }
        Ok(Value::Object(b))
    }
}

/// The outcome of a send, per recipient: the message went to everyone else.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SendReport {
    pub msgid: String,
    pub invalid_users: Vec<String>,
    pub invalid_parties: Vec<String>,
    pub invalid_tags: Vec<String>,
    pub unlicensed_users: Vec<String>,
}

impl SendReport {
    pub fn from_reply(v: &Value) -> Self {
        let list = |k: &str| split_list(v.get(k));
        Self {
            msgid: v
                .get("msgid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            invalid_users: list("invaliduser"),
            invalid_parties: list("invalidparty"),
            invalid_tags: list("invalidtag"),
            unlicensed_users: list("unlicenseduser"),
        }
    }

    pub fn all_delivered(&self) -> bool {
        self.invalid_users.is_empty()
            && self.invalid_parties.is_empty()
            && self.invalid_tags.is_empty()
            && self.unlicensed_users.is_empty()
    }
}

impl WecomClient {
    fn msg_call(&self, path: &str, body: Value) -> ApiCall {
        ApiCall::post(path, "message", self.wire.cfg.limits.message).json(body)
    }

    /// `message/send`. When every recipient is invalid WeCom answers 81013 (an error); when
    /// only some are, the send happens and the report lists the others.
    pub async fn send_message(&self, msg: &OutgoingMessage) -> Result<SendReport, ConnectorError> {
        let body = msg.to_body(self.wire.cfg.agent_id)?;
        let v = self.call(&self.msg_call("message/send", body)).await?;
        let report = SendReport::from_reply(&v);
        if !report.all_delivered() {
            tracing::warn!(
                vendor = VENDOR,
                msgid = report.msgid,
                invalid_users = report.invalid_users.len(),
                invalid_parties = report.invalid_parties.len(),
                invalid_tags = report.invalid_tags.len(),
                unlicensed_users = report.unlicensed_users.len(),
                "message not delivered to some recipients"
            );
        }
        Ok(report)
    }

    /// `message/recall {msgid}` (messages of the last 24 h).
    pub async fn recall_message(&self, msgid: &str) -> Result<(), ConnectorError> {
        self.call(&self.msg_call("message/recall", json!({ "msgid": msgid })))
            .await
            .map(drop)
    }

    /// `appchat/create {name?, owner?, userlist (2..=500), chatid?}` → chatid.
    pub async fn create_appchat(&self, body: Value) -> Result<String, ConnectorError> {
        let n = body
            .get("userlist")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if !(2..=500).contains(&n) {
            return Err(ConnectorError::permanent(
                VENDOR,
                format!("appchat userlist must have 2..=500 members, got {n}"),
            ));
        }
        let v = self
            .call(
                &ApiCall::post("appchat/create", "appchat", self.wire.cfg.limits.appchat)
                    .json(body),
            )
            .await?;
        v.get("chatid")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "appchat/create without chatid"))
    }

    /// `appchat/get?chatid=` → `chat_info`; `None` for an unknown chat (86003).
    pub async fn get_appchat(&self, chatid: &str) -> Result<Option<Value>, ConnectorError> {
        let call = ApiCall::get("appchat/get", "appchat", self.wire.cfg.limits.appchat)
            .query("chatid", chatid);
        found_part(self.call(&call).await, "chat_info", &[86003])
    }

    /// `appchat/send {chatid, msgtype, <payload>, safe}`.
    pub async fn send_appchat(
        &self,
        chatid: &str,
        msgtype: &str,
        payload: Value,
        safe: bool,
    ) -> Result<(), ConnectorError> {
        check_payload(msgtype, &payload).map_err(|m| ConnectorError::permanent(VENDOR, m))?;
        let mut body = json!({"chatid": chatid, "msgtype": msgtype, "safe": i32::from(safe)});
        body[msgtype] = payload;
        self.call(
            &ApiCall::post("appchat/send", "appchat", self.wire.cfg.limits.appchat).json(body),
        )
        .await
        .map(drop)
    }

    /// `media/upload?type=KIND` (image, voice, video or file; multipart part `media`) → media_id
    /// (valid 3 days, shared by the corp's apps). The file `name` is what users see.
    pub async fn upload_media(&self, kind: &str, name: &str, data: Bytes) -> Fallible<String> {
        let max = media_limit(kind).ok_or_else(|| {
            ConnectorError::permanent(VENDOR, format!("media type {kind:?} is not allowed"))
        })?;
        if data.len() < MIN_FILE_BYTES || data.len() > max {
            return Err(ConnectorError::permanent(
                VENDOR,
                format!(
                    "{kind} of {} bytes is outside {MIN_FILE_BYTES}..={max} bytes",
                    data.len()
                ),
            ));
        }
        let call = ApiCall::post("media/upload", "media", self.wire.cfg.limits.media)
            .query("type", kind)
            .file(FilePart {
                name: "media",
                file_name: name.to_string(),
                data,
            });
        reply_key(VENDOR, "media/upload", &self.call(&call).await?, "media_id")
    }

    /// `media/get?media_id=`: the file's bytes.
    pub async fn download_media(&self, media_id: &str) -> Result<Bytes, ConnectorError> {
        let call = ApiCall::get("media/get", "media", self.wire.cfg.limits.media)
            .query("media_id", media_id);
        self.download(&call).await
    }

    /// Group robot: `POST webhook/send?key=KEY` with a `{msgtype, …}` body; no access token.
    /// Waits to stay within 20 messages/minute per robot; a bad key is 93000 (permanent).
    pub async fn robot_send(&self, key: &SecretString, body: Value) -> Result<(), ConnectorError> {
        let key = key.expose_secret();
        let msgtype = body.get("msgtype").and_then(Value::as_str).unwrap_or("");
        let payload = body.get(msgtype).cloned().unwrap_or(Value::Null);
        let max = match msgtype {
            "text" => Some(2048),
            "markdown" => Some(4096),
            _ => None,
        };
        if let (Some(max), Some(c)) = (max, payload.get("content").and_then(Value::as_str))
            && c.len() > max
        {
            return Err(ConnectorError::permanent(
                VENDOR,
                format!("robot {msgtype} content longer than {max} bytes"),
            ));
        }
        // One bucket per robot, named by a hash: the key is a credential.
        let bucket = format!("robot:{}", hex::encode(&sha256(key.as_bytes())[..8]));
        self.limiter
            .acquire(&self.wire.cfg.corp_id, &bucket, self.wire.cfg.limits.robot)
            .await;
        let call = ApiCall::post("webhook/send", "robot", RateLimit::UNLIMITED)
            .query("key", key)
            .json(body);
        self.call_without_token(&call).await.map(drop)
    }
}

/// Images go up as `image` media, everything else as `file`; a media id downloads through
/// `media/get`.
#[async_trait]
impl FileWire for WecomWire {
    const FILE_LIMITS: &'static FileLimits = &FILE_LIMITS;
    async fn upload(c: &WecomClient, kind: FileKind, name: &str, data: Bytes) -> Fallible<String> {
        c.upload_media(kind.media_type(), name, data).await
    }
    async fn download(c: &WecomClient, media_id: &str) -> Fallible<Bytes> {
        c.download_media(media_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_limits() {
        let m = OutgoingMessage::from_record(&json!({"touser":"a|b","toparty":[2,3],"msgtype":"text",
            "text":{"content":"hi"},"safe":1,"enable_duplicate_check":1,"duplicate_check_interval":600}))
        .unwrap();
        assert_eq!(m.touser, vec!["a", "b"]);
        assert_eq!(m.toparty, vec!["2", "3"]);
        assert!(m.safe);
        assert_eq!(m.duplicate_check_interval, Some(600));
        let b = m.to_body(1000002).unwrap();
        assert_eq!(b["touser"], "a|b");
        assert_eq!(b["toparty"], "2|3");
        assert_eq!(b["agentid"], 1000002);
        assert_eq!(b["safe"], 1);
        assert_eq!(b["text"]["content"], "hi");
        assert!(
            OutgoingMessage::text(&["a"], &"x".repeat(2049))
                .to_body(1)
                .is_err()
        );
        assert!(OutgoingMessage::text(&[], "x").to_body(1).is_err());
        assert!(
            OutgoingMessage::textcard(&["a"], &"t".repeat(129), "d", "https://x", None)
                .to_body(1)
                .is_err()
        );
        assert!(
            OutgoingMessage::textcard(&["a"], "t", "d", "https://x", Some("详情"))
                .to_body(1)
                .is_ok()
        );
        assert!(OutgoingMessage::from_record(&json!({"msgtype":"text"})).is_err());
    }

    #[test]
    fn report_lists_invalid_recipients() {
        let r = SendReport::from_reply(
            &json!({"errcode":0,"errmsg":"ok","invaliduser":"x|y","invalidparty":"","msgid":"m1"}),
        );
        assert_eq!(r.invalid_users, vec!["x", "y"]);
        assert!(r.invalid_parties.is_empty());
        assert!(!r.all_delivered());
        assert_eq!(r.msgid, "m1");
    }
}
