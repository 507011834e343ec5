//! Robots: the app robot (v1.0, `msgKey` + `msgParam` as a JSON **string**) in groups and
//! one-to-one, and the custom-robot webhook with HMAC-SHA256 signing ("加签").

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::crypto::hmac_sha256;
use crate::dingtalk::VENDOR;
use crate::dingtalk::client::{DingTalkClient, Gen, old_reply};
use crate::error::ConnectorError;
use crate::http::{RetryPolicy, build_client, read_limited, with_retry};
use crate::limit::{Limiter, RateLimit};

pub const GROUP_SEND: &str = "/v1.0/robot/groupMessages/send";
pub const OTO_BATCH_SEND: &str = "/v1.0/robot/oToMessages/batchSend";
/// Maximum `msgParam` length.
pub const MAX_MSG_PARAM_BYTES: usize = 15000;
/// Maximum users per one-to-one batch.
pub const MAX_OTO_USERS: usize = 20;

fn check_param(msg_key: &str, msg_param: &Value) -> Result<String, ConnectorError> {
    if msg_key.is_empty() {
        return Err(ConnectorError::permanent(VENDOR, "msgKey is empty"));
    }
    let s = msg_param.to_string();
    if s.len() > MAX_MSG_PARAM_BYTES {
        return Err(ConnectorError::permanent(
            VENDOR,
            format!("msgParam larger than {MAX_MSG_PARAM_BYTES} bytes"),
        ));
    }
    Ok(s)
}

impl DingTalkClient {
    /// Sends an app-robot message to a group; returns `processQueryKey`.
    pub async fn robot_group_send(
        &self,
        open_conversation_id: &str,
        msg_key: &str,
        msg_param: &Value,
    ) -> Result<String, ConnectorError> {
        let to = ("openConversationId", json!(open_conversation_id));
        let r = self.robot_send(GROUP_SEND, to, msg_key, msg_param).await?;
        r.get("processQueryKey")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "reply without processQueryKey"))
    }

    /// Sends an app-robot message one-to-one to up to 20 users (userids); returns the reply
    /// (`processQueryKey`, `invalidStaffIdList`, `flowControlledStaffIdList`).
    pub async fn robot_oto_send(
        &self,
        user_ids: &[String],
        msg_key: &str,
        msg_param: &Value,
    ) -> Result<Value, ConnectorError> {
        if user_ids.is_empty() || user_ids.len() > MAX_OTO_USERS {
            return Err(ConnectorError::permanent(
                VENDOR,
                format!("userIds: 1..={MAX_OTO_USERS} users"),
            ));
        }
        let to = ("userIds", json!(user_ids));
        self.robot_send(OTO_BATCH_SEND, to, msg_key, msg_param)
            .await
    }

    /// An app-robot message to `path`, addressed by `to` (its key and value).
    async fn robot_send(
        &self,
        path: &'static str,
        (to_key, to): (&str, Value),
        msg_key: &str,
        msg_param: &Value,
    ) -> Result<Value, ConnectorError> {
        let param = check_param(msg_key, msg_param)?;
        let mut body = json!({
            "robotCode": self.wire.cfg.robot(),
            "msgKey": msg_key,
            "msgParam": param,
        });
        body[to_key] = to;
        self.call(&self.post_call(Gen::New, path).json(body)).await
    }
}

/// The custom-robot signature: `urlencode(base64(HMAC_SHA256(secret, ts + "\n" + secret)))`.
pub fn webhook_sign(secret: &str, timestamp_ms: i64) -> String {
    let mac = hmac_sha256(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    );
    crate::client::seg(&B64.encode(mac))
}

/// The HTTP-robot inbound signature (no urlencode): `base64(HMAC_SHA256(appSecret, ts + "\n" + appSecret))`.
pub fn inbound_sign(app_secret: &str, timestamp_ms: &str) -> String {
    B64.encode(hmac_sha256(
        app_secret.as_bytes(),
        format!("{timestamp_ms}\n{app_secret}").as_bytes(),
    ))
}

/// Verifies an HTTP-mode robot message (headers `timestamp` in ms and `sign`): the signature in
/// constant time and the timestamp within 1 hour of `now_ms`.
pub fn verify_inbound(
    app_secret: &str,
    timestamp: &str,
    sign: &str,
    now_ms: i64,
) -> Result<(), crate::capability::CallbackError> {
    use crate::capability::CallbackError;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| CallbackError::StaleTimestamp)?;
    if now_ms.abs_diff(ts) > 3_600_000 {
        return Err(CallbackError::StaleTimestamp);
    }
    let expected = inbound_sign(app_secret, timestamp.trim());
    if crate::crypto::ct_eq(expected.as_bytes(), sign.trim().as_bytes()) {
        Ok(())
    } else {
        Err(CallbackError::BadSignature)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A custom robot (自定义机器人) of one group: its webhook URL
/// (`https://oapi.dingtalk.com/robot/send?access_token=T`) and optional `SEC…` signing secret.
pub struct CustomRobot {
    webhook_url: SecretString,
    secret: Option<SecretString>,
    http: reqwest::Client,
    limiter: Arc<Limiter>,
    limit: RateLimit,
    retry: RetryPolicy,
}

impl CustomRobot {
    pub fn new(
        webhook_url: SecretString,
        secret: Option<SecretString>,
    ) -> Result<Self, ConnectorError> {
        let u = webhook_url.expose_secret();
        if !(u.starts_with("https://") || u.starts_with("http://")) || !u.contains("access_token=")
        {
            return Err(ConnectorError::permanent(
                VENDOR,
                "webhook url must be http(s) with access_token",
            ));
        }
        Ok(Self {
            webhook_url,
            secret,
            http: build_client(std::time::Duration::from_secs(30))?,
            limiter: Arc::new(Limiter::new()),
            // 20 messages per minute per robot.
            limit: RateLimit::new(0, 20),
            retry: RetryPolicy::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sends `payload` (`{"msgtype":"text","text":{"content":"…"}, …}`).
    pub async fn send(&self, payload: &Value) -> Result<Value, ConnectorError> {
        with_retry(&self.retry, "dingtalk.robot.send", || {
            self.send_once(payload)
        })
        .await
    }

    async fn send_once(&self, payload: &Value) -> Result<Value, ConnectorError> {
        // The bucket key is the webhook itself, never logged.
        let key = hex::encode(crate::crypto::sha256(
            self.webhook_url.expose_secret().as_bytes(),
        ));
        self.limiter.acquire(&key, "robot.send", self.limit).await;
        let mut url = self.webhook_url.expose_secret().to_string();
        if let Some(s) = &self.secret {
            let ts = now_ms();
            url.push_str(&format!(
                "&timestamp={ts}&sign={}",
                webhook_sign(s.expose_secret(), ts)
            ));
        }
        let resp = self
            .http
            .post(&url)
            .json(payload)
            .send()
            .await
            .map_err(|e| ConnectorError::from_transport(VENDOR, &e.without_url()))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = read_limited(VENDOR, resp, 1024 * 1024).await?;
        old_reply(status, &headers, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_sign_vector() {
        // docs/vendors/dingtalk.md
        assert_eq!(
            webhook_sign("SEC0123456789abcdef", 1700000000000),
            "TSZbRFUuvaSQaRKUpF970OPCb2%2FLcQAP3wOvwZIzBZk%3D"
        );
        assert_eq!(
            inbound_sign("SEC0123456789abcdef", "1700000000000"),
            "TSZbRFUuvaSQaRKUpF970OPCb2/LcQAP3wOvwZIzBZk="
        );
    }

    #[test]
    fn inbound_robot_messages_are_verified() {
        use crate::capability::CallbackError;
        let sign = "TSZbRFUuvaSQaRKUpF970OPCb2/LcQAP3wOvwZIzBZk=";
        let s = "SEC0123456789abcdef";
        assert_eq!(
            verify_inbound(s, "1700000000000", sign, 1700000001000),
            Ok(())
        );
        assert_eq!(
            verify_inbound("other", "1700000000000", sign, 1700000001000),
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            verify_inbound(s, "1700000000000", sign, 1700003600001),
            Err(CallbackError::StaleTimestamp)
        );
        assert_eq!(
            verify_inbound(s, "soon", sign, 1700000000000),
            Err(CallbackError::StaleTimestamp)
        );
    }

    #[test]
    fn rejects_bad_params() {
        assert!(check_param("", &json!({})).is_err());
        let big = json!({"content": "x".repeat(MAX_MSG_PARAM_BYTES)});
        assert!(check_param("sampleText", &big).is_err());
        assert_eq!(
            check_param("sampleText", &json!({"content": "hi"})).unwrap(),
            r#"{"content":"hi"}"#
        );
        assert!(CustomRobot::new("ftp://x".to_string().into(), None).is_err());
    }
}
