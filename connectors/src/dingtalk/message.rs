//! Work notifications (工作通知, `asyncsend_v2`) and media upload, old generation.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::capability::{FileKind, FileLimits};
use crate::client::{Fallible, FileWire, reply_key};
use crate::dingtalk::VENDOR;
use crate::dingtalk::client::{DingTalkClient, DingTalkWire, FormPart, Gen};
use crate::error::ConnectorError;

pub const ASYNCSEND_V2: &str = "/topapi/message/corpconversation/asyncsend_v2";
pub const GET_SEND_RESULT: &str = "/topapi/message/corpconversation/getsendresult";
pub const MEDIA_UPLOAD: &str = "/media/upload";

/// Media limits (20 MB; voice 2 MB).
pub static FILE_LIMITS: FileLimits = FileLimits {
    max_image_bytes: 20 * 1024 * 1024,
    max_file_bytes: 20 * 1024 * 1024,
    file_types: &["image", "voice", "video", "file"],
};

/// Maximum `msg` size.
pub const MAX_MSG_BYTES: usize = 2048;

/// Who receives a work notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Recipients {
    Users(Vec<String>),
    Departments(Vec<i64>),
    All,
}

impl DingTalkClient {
    /// Sends a work notification from the app (`agent_id` from the config); returns `task_id`.
    /// `msg` is `{"msgtype": …, …}`.
    pub async fn send_work_notification(
        &self,
        to: &Recipients,
        msg: Value,
    ) -> Result<i64, ConnectorError> {
        let agent_id = self.wire.cfg.agent_id.ok_or_else(|| {
            ConnectorError::permanent(VENDOR, "work notifications need agent_id in the config")
        })?;
        if msg.get("msgtype").and_then(Value::as_str).is_none() {
            return Err(ConnectorError::permanent(VENDOR, "msg without msgtype"));
        }
        if msg.to_string().len() > MAX_MSG_BYTES {
            return Err(ConnectorError::permanent(
                VENDOR,
                format!("msg larger than {MAX_MSG_BYTES} bytes"),
            ));
        }
        let mut body = json!({"agent_id": agent_id, "msg": msg});
        match to {
            Recipients::Users(u) if !u.is_empty() && u.len() <= 100 => {
                body["userid_list"] = json!(u.join(","));
            }
            Recipients::Departments(d) if !d.is_empty() && d.len() <= 20 => {
                let s: Vec<String> = d.iter().map(i64::to_string).collect();
                body["dept_id_list"] = json!(s.join(","));
            }
            Recipients::All => body["to_all_user"] = json!(true),
            _ => {
                return Err(ConnectorError::permanent(
                    VENDOR,
                    "recipients: 1..=100 users or 1..=20 departments",
                ));
            }
        }
        let call = self.post_call(Gen::Old, ASYNCSEND_V2).json(body);
        let r = self.call(&call).await?;
        r.get("task_id")
            .and_then(Value::as_i64)
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "asyncsend_v2 without task_id"))
    }

    /// The delivery result of a work notification.
    pub async fn work_notification_result(&self, task_id: i64) -> Result<Value, ConnectorError> {
        let agent_id = self.wire.cfg.agent_id.unwrap_or_default();
        let call = self
            .post_call(Gen::Old, GET_SEND_RESULT)
            .json(json!({"agent_id": agent_id, "task_id": task_id}));
        let mut r = self.call(&call).await?;
        Ok(r.get_mut("send_result")
            .map(Value::take)
            .unwrap_or(Value::Null))
    }

    /// `POST /media/upload?type=KIND` (multipart `media`; image, voice, video or file) → `media_id`.
    pub async fn upload_media(&self, kind: &str, name: &str, data: Bytes) -> Fallible<String> {
        FILE_LIMITS.check_type(VENDOR, kind)?;
        let max = if kind == "voice" {
            2 * 1024 * 1024
        } else {
            FILE_LIMITS.max_file_bytes
        };
        if data.len() > max {
            return Err(ConnectorError::permanent(
                VENDOR,
                format!("{kind} larger than {max} bytes"),
            ));
        }
        let call = self
            .post_call(Gen::Old, MEDIA_UPLOAD)
            .query("type", kind)
            .form(vec![
                FormPart::Text("type", kind.to_string()),
                FormPart::File {
                    mime: None,
                    name: "media",
                    file_name: name.to_string(),
                    data,
                },
            ]);
        reply_key(VENDOR, "media/upload", &self.call(&call).await?, "media_id")
    }
}

/// Files of the capability's kind are media of that type; media ids cannot be downloaded
/// through the org API.
#[async_trait]
impl FileWire for DingTalkWire {
    const FILE_LIMITS: &'static FileLimits = &FILE_LIMITS;
    async fn upload(
        c: &DingTalkClient,
        kind: FileKind,
        name: &str,
        data: Bytes,
    ) -> Fallible<String> {
        c.upload_media(kind.media_type(), name, data).await
    }
    async fn download(_: &DingTalkClient, _key: &str) -> Fallible<Bytes> {
        let e = "DingTalk media ids cannot be downloaded";
        Err(ConnectorError::permanent(VENDOR, e))
    }
}
