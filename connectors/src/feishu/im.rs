//! Messenger (im/v1): send and reply (text, post, interactive, image, file…), image and file
//! upload within Feishu's limits, chats the bot is in.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::capability::{FileKind, FileLimits, RecordStream};
use crate::client::{Fallible, FileWire, reply_key};
use crate::error::ConnectorError;
use crate::feishu::VENDOR;
use crate::feishu::client::{ApiCall, FeishuClient, FeishuWire, FormPart, seg};

const BASE: &str = "/open-apis/im/v1";

pub const MSG_TYPES: &[&str] = &[
    "text",
    "post",
    "image",
    "file",
    "audio",
    "media",
    "sticker",
    "interactive",
    "share_chat",
    "share_user",
];
pub const RECEIVE_ID_TYPES: &[&str] = &["open_id", "union_id", "user_id", "email", "chat_id"];
/// Upload caps (images ~10 MB, files ~30 MB: docs/vendors/feishu.md, unverified) and types.
pub const FILE_LIMITS: FileLimits = FileLimits {
    max_image_bytes: 10 * 1024 * 1024,
    max_file_bytes: 30 * 1024 * 1024,
    file_types: &["opus", "mp4", "pdf", "doc", "xls", "ppt", "stream"],
};

/// Content size cap per message type (error 230025 otherwise).
pub fn content_limit(msg_type: &str) -> usize {
    match msg_type {
        "text" => 150 * 1024,
        _ => 30 * 1024,
    }
}

/// A message to send. `content` is the content object; it goes on the wire as a JSON string.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub receive_id_type: String,
    pub receive_id: String,
    pub msg_type: String,
    pub content: Value,
    /// De-duplication key (≤ 50 chars): the same uuid sends at most one message per hour.
    pub uuid: Option<String>,
}

impl OutgoingMessage {
    pub fn text(receive_id_type: &str, receive_id: &str, text: &str) -> Self {
        Self {
            receive_id_type: receive_id_type.into(),
            receive_id: receive_id.into(),
            msg_type: "text".into(),
            content: json!({ "text": text }),
            uuid: None,
        }
    }

    /// Reads a raw record: `{receive_id_type, receive_id, msg_type, content (object or JSON
    /// string), uuid?}`.
    pub fn from_record(v: &Value) -> Result<Self, ConnectorError> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let content = match v.get("content") {
            Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                ConnectorError::permanent(VENDOR, format!("content is not JSON: {e}"))
            })?,
            Some(c @ Value::Object(_)) => c.clone(),
            _ => return Err(ConnectorError::permanent(VENDOR, "message without content")),
        };
        Ok(Self {
            receive_id_type: s("receive_id_type").unwrap_or_else(|| "open_id".into()),
            receive_id: s("receive_id")
                .ok_or_else(|| ConnectorError::permanent(VENDOR, "message without receive_id"))?,
            msg_type: s("msg_type")
                .ok_or_else(|| ConnectorError::permanent(VENDOR, "message without msg_type"))?,
            content,
            uuid: s("uuid"),
        })
    }

    fn validate(&self) -> Result<String, ConnectorError> {
        let bad = |m: String| Err(ConnectorError::permanent(VENDOR, m));
        if !RECEIVE_ID_TYPES.contains(&self.receive_id_type.as_str()) {
            return bad(format!(
                "receive_id_type {:?} is not supported",
                self.receive_id_type
            ));
        }
        if !MSG_TYPES.contains(&self.msg_type.as_str()) {
            return bad(format!("msg_type {:?} is not supported", self.msg_type));
        }
        if self.uuid.as_ref().is_some_and(|u| u.chars().count() > 50) {
            return bad("uuid longer than 50 characters".into());
        }
        let content = self.content.to_string();
        if content.len() > content_limit(&self.msg_type) {
            return bad(format!(
                "{} content of {} bytes exceeds {} bytes",
                self.msg_type,
                content.len(),
                content_limit(&self.msg_type)
            ));
        }
        Ok(content)
    }
}

impl FeishuClient {
    /// `POST /im/v1/messages`; returns `data` (message_id, chat_id, create_time, …).
    pub async fn send_message(&self, msg: &OutgoingMessage) -> Result<Value, ConnectorError> {
        let content = msg.validate()?;
        let mut body =
            json!({"receive_id": msg.receive_id, "msg_type": msg.msg_type, "content": content});
        if let Some(u) = &msg.uuid {
            body["uuid"] = json!(u);
        }
        let call = ApiCall::post(
            format!("{BASE}/messages"),
            "im_send",
            self.wire.cfg.limits.im_send,
        )
        .query("receive_id_type", msg.receive_id_type.clone())
        .json(body);
        self.data(&call).await
    }

    /// `POST /im/v1/messages/:message_id/reply`.
    pub async fn reply_message(
        &self,
        message_id: &str,
        msg_type: &str,
        content: &Value,
        uuid: Option<&str>,
    ) -> Result<Value, ConnectorError> {
        let mut body = json!({"msg_type": msg_type, "content": content.to_string()});
        if let Some(u) = uuid {
            body["uuid"] = json!(u);
        }
        let call = ApiCall::post(
            format!("{BASE}/messages/{}/reply", seg(message_id)),
            "im_send",
            self.wire.cfg.limits.im_send,
        )
        .json(body);
        self.data(&call).await
    }

    pub async fn get_message(&self, message_id: &str) -> Result<Value, ConnectorError> {
        let path = format!("{BASE}/messages/{}", seg(message_id));
        self.data(&ApiCall::get(path, "im_read", self.wire.cfg.limits.contact))
            .await
    }

    /// Chats the bot is in.
    pub fn list_chats(&self) -> RecordStream<'_> {
        let call = ApiCall::get(
            format!("{BASE}/chats"),
            "im_read",
            self.wire.cfg.limits.contact,
        )
        .query("user_id_type", self.wire.cfg.user_id_type.clone());
        self.paginate(call)
    }

    /// `POST /im/v1/images` (`image_type` = message); returns the `image_key`.
    pub async fn upload_image(&self, data: Bytes) -> Result<String, ConnectorError> {
        let text = vec![FormPart::Text("image_type", "message".into())];
        let max = FILE_LIMITS.max_image_bytes;
        self.im_upload("image", max, text, "image", data).await
    }

    /// `POST /im/v1/files`; `file_type` one of opus, mp4, pdf, doc, xls, ppt, stream.
    pub async fn upload_file(
        &self,
        file_type: &str,
        file_name: &str,
        data: Bytes,
    ) -> Result<String, ConnectorError> {
        FILE_LIMITS.check_type(VENDOR, file_type)?;
        let text = vec![
            FormPart::Text("file_type", file_type.into()),
            FormPart::Text("file_name", file_name.into()),
        ];
        let max = FILE_LIMITS.max_file_bytes;
        self.im_upload("file", max, text, file_name, data).await
    }

    /// `POST /im/v1/{what}s`: the `text` parts, then `data` (1..=`max` bytes) as the part
    /// `what`; its `{what}_key`.
    async fn im_upload(
        &self,
        what: &'static str,
        max: usize,
        mut parts: Vec<FormPart>,
        file_name: &str,
        data: Bytes,
    ) -> Result<String, ConnectorError> {
        if data.is_empty() || data.len() > max {
            return Err(ConnectorError::permanent(
                VENDOR,
                format!("{what} of {} bytes is empty or over the limit", data.len()),
            ));
        }
        parts.push(FormPart::file(what, file_name, data));
        let call = ApiCall::post(
            format!("{BASE}/{what}s"),
            "im_upload",
            self.wire.cfg.limits.im_upload,
        )
        .form(parts);
        key_of(self.data(&call).await?, &format!("{what}_key"))
    }

    /// `GET /im/v1/images/:image_key` (images the app uploaded).
    pub async fn download_image(&self, image_key: &str) -> Result<Bytes, ConnectorError> {
        let limit = self.wire.cfg.limits.im_upload;
        let path = format!("{BASE}/images/{}", seg(image_key));
        self.download(&ApiCall::get(path, "im_upload", limit)).await
    }
}

/// Images go up as message images, files typed by their extension (`stream` otherwise); an
/// image key downloads through `/im/v1/images`.
#[async_trait]
impl FileWire for FeishuWire {
    const FILE_LIMITS: &'static FileLimits = &FILE_LIMITS;
    async fn download(c: &FeishuClient, image_key: &str) -> Fallible<Bytes> {
        c.download_image(image_key).await
    }
    async fn upload(c: &FeishuClient, kind: FileKind, name: &str, data: Bytes) -> Fallible<String> {
        match kind {
            FileKind::Image => c.upload_image(data).await,
            FileKind::File => {
                let ext = name
                    .rsplit_once('.')
                    .map(|(_, e)| e.to_ascii_lowercase())
                    .unwrap_or_default();
                let file_type = match ext.as_str() {
                    "pdf" => "pdf",
                    "doc" | "docx" => "doc",
                    "xls" | "xlsx" => "xls",
                    "ppt" | "pptx" => "ppt",
                    "mp4" => "mp4",
                    "opus" => "opus",
                    _ => "stream",
                };
                c.upload_file(file_type, name, data).await
            }
        }
    }
}

fn key_of(data: Value, key: &str) -> Result<String, ConnectorError> {
    reply_key(VENDOR, "upload reply", &data, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_parsing_and_limits() {
        let m = OutgoingMessage::from_record(&json!({"receive_id":"oc_1","receive_id_type":"chat_id","msg_type":"text","content":"{\"text\":\"hi\"}"})).unwrap();
        assert_eq!(m.content, json!({"text":"hi"}));
        assert_eq!(m.validate().unwrap(), r#"{"text":"hi"}"#);
        let big = OutgoingMessage {
            msg_type: "post".into(),
            content: json!({"zh_cn": {"title": "x".repeat(31 * 1024)}}),
            ..m.clone()
        };
        assert!(big.validate().is_err());
        let bad_type = OutgoingMessage {
            receive_id_type: "phone".into(),
            ..m
        };
        assert!(bad_type.validate().is_err());
        assert!(
            OutgoingMessage::from_record(&json!({"receive_id":"x","msg_type":"text"})).is_err()
        );
    }
}
