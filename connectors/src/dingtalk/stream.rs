//! Stream mode (the analogue of Feishu's long connection): no public address, no crypto.
//!
//! 1. `POST {api}/v1.0/gateway/connections/open {clientId, clientSecret, subscriptions, ua}` →
//!    `{endpoint, ticket}` (single-use ticket);
//! 2. WebSocket `{endpoint}?ticket=…`, JSON text frames
//!    `{"specVersion","type":"SYSTEM"|"EVENT"|"CALLBACK","headers":{…},"data":"<JSON string>"}`;
//! 3. every frame is acked `{"code":200,"headers":{"messageId","contentType"},"message":"OK","data":"…"}`;
//!    SYSTEM `ping` is answered echoing its data, SYSTEM `disconnect` means reconnect at once
//!    with a new ticket. An EVENT is acked only once the receiver settled it
//!    ([`PushChannel::run_confirmed`]); a refused one is answered `500` with status `LATER`, so
//!    the gateway delivers it again.
//!
//! Events are handed on in the shape of the HTTP push plaintext: the frame's `data` object plus
//! `EventType`, `eventId`, `CorpId` and `EventTime` from the headers, so one mapping reads both.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;

#[cfg(doc)]
use crate::capability::PushChannel;
use crate::capability::{PushDelivery, RawEvent, Settled, hand_on};
use crate::client::WireConfig;
use crate::dingtalk::VENDOR;
use crate::dingtalk::config::DingTalkConfig;
use crate::error::ConnectorError;
use crate::http::{build_client, read_limited};
use crate::push::{self, Closed, FrameHandler, Next, PushConnection, Step};

pub const OPEN_PATH: &str = "/v1.0/gateway/connections/open";
/// The bot message topic (CALLBACK).
pub const BOT_MESSAGE_TOPIC: &str = "/v1.0/im/bot/messages/get";
/// Largest frame accepted.
const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// The Stream-mode client of one app.
pub struct StreamClient {
    api: String,
    client_id: String,
    client_secret: SecretString,
    http: reqwest::Client,
    /// Extra CALLBACK topics to subscribe (the bot message topic is always included).
    pub callback_topics: Vec<String>,
    /// WebSocket-level ping interval.
    pub ping_interval: Duration,
    /// Longest wait between reconnect attempts after failures.
    pub max_backoff: Duration,
}

/// A parsed downstream frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: String,
    pub headers: Map<String, Value>,
    /// `data` as sent (a JSON string).
    pub data: String,
}

impl Frame {
    pub fn parse(text: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(text).ok()?;
        Some(Self {
            kind: v.get("type")?.as_str()?.to_string(),
            headers: v.get("headers")?.as_object()?.clone(),
            data: match v.get("data") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            },
        })
    }

    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(Value::as_str)
    }

    /// The ack of this frame with `data`.
    pub fn ack(&self, code: u16, message: &str, data: &str) -> String {
        json!({
            "code": code,
            "headers": {
                "messageId": self.header("messageId").unwrap_or_default(),
                "contentType": "application/json",
            },
            "message": message,
            "data": data,
        })
        .to_string()
    }
}

/// Turns an EVENT frame into the HTTP-push-shaped event.
pub fn frame_event(f: &Frame) -> Option<RawEvent> {
    let event_type = f.header("eventType")?.to_string();
    let event_id = f
        .header("eventId")
        .or_else(|| f.header("messageId"))?
        .to_string();
    let mut payload = match serde_json::from_str::<Value>(&f.data) {
        Ok(Value::Object(m)) => m,
        Ok(other) => Map::from_iter([("data".to_string(), other)]),
        Err(_) => Map::new(),
    };
    let born = f
        .header("eventBornTime")
        .and_then(|s| s.parse::<i64>().ok());
    payload.insert("EventType".into(), json!(event_type));
    payload.insert("eventId".into(), json!(event_id));
    if let Some(c) = f.header("eventCorpId") {
        payload.insert("CorpId".into(), json!(c));
    }
    if let Some(b) = born {
        payload.insert("EventTime".into(), json!(b));
    }
    Some(RawEvent {
        vendor: VENDOR,
        event_id,
        event_type,
        created_at_ms: born,
        payload: Value::Object(payload),
    })
}

/// Turns a CALLBACK frame (bot message, card callback) into an event typed by its topic.
pub fn frame_callback(f: &Frame) -> Option<RawEvent> {
    let topic = f.header("topic")?.to_string();
    let id = f.header("messageId")?.to_string();
    let payload = serde_json::from_str::<Value>(&f.data).unwrap_or(Value::Null);
    Some(RawEvent {
        vendor: VENDOR,
        event_id: id,
        event_type: topic,
        created_at_ms: f.header("time").and_then(|s| s.parse().ok()),
        payload,
    })
}

impl StreamClient {
    pub fn new(cfg: &DingTalkConfig) -> Result<Self, ConnectorError> {
        cfg.validate()?;
        Ok(Self {
            api: cfg.api().to_string(),
            client_id: cfg.app_key.clone(),
            client_secret: cfg.app_secret.clone(),
            http: build_client(cfg.transport.timeout)?,
            callback_topics: Vec::new(),
            ping_interval: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
        })
    }

    /// Opens a connection: `(endpoint, ticket)`.
    pub async fn open(&self) -> Result<(String, String), ConnectorError> {
        let mut subs = vec![
            json!({"type": "EVENT", "topic": "*"}),
            json!({"type": "CALLBACK", "topic": BOT_MESSAGE_TOPIC}),
        ];
        for t in &self.callback_topics {
            subs.push(json!({"type": "CALLBACK", "topic": t}));
        }
        let resp = self
            .http
            .post(format!("{}{OPEN_PATH}", self.api))
            .header("accept", "application/json")
            .json(&json!({
                "clientId": self.client_id,
                "clientSecret": self.client_secret.expose_secret(),
                "subscriptions": subs,
                "ua": concat!("huitong-rust/", env!("CARGO_PKG_VERSION")),
                "localIp": "127.0.0.1",
            }))
            .send()
            .await
            .map_err(|e| ConnectorError::from_transport(VENDOR, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_limited(VENDOR, resp, 64 * 1024).await?;
        let v = crate::dingtalk::client::new_reply(status, &headers, &body).map_err(|e| {
            // Bad credentials cannot improve by retrying.
            match e {
                ConnectorError::AuthExpired { code, message, .. } => ConnectorError::Permanent {
                    vendor: VENDOR,
                    code,
                    status: Some(status),
                    message,
                },
                other => other,
            }
        })?;
        let endpoint = v.get("endpoint").and_then(Value::as_str);
        let ticket = v.get("ticket").and_then(Value::as_str);
        match (endpoint, ticket) {
            (Some(e), Some(t)) if !e.is_empty() && !t.is_empty() => {
                Ok((e.to_string(), t.to_string()))
            }
            _ => Err(ConnectorError::permanent(
                VENDOR,
                "connections/open reply without endpoint/ticket",
            )),
        }
    }
}

impl PushConnection for StreamClient {
    type State = ();

    async fn run_once(
        &self,
        _: &mut (),
        sink: &tokio::sync::mpsc::Sender<PushDelivery>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Closed, ConnectorError> {
        let (endpoint, ticket) = self.open().await?;
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        let url = format!(
            "{endpoint}{sep}ticket={}",
            crate::dingtalk::client::seg(&ticket)
        );
        let ws = push::connect(VENDOR, &url).await?;
        tracing::info!(vendor = VENDOR, "stream connection established");
        let mut ping = tokio::time::interval(self.ping_interval);
        ping.tick().await;
        let mut frames = Frames {
            sink,
            ping_interval: self.ping_interval,
        };
        push::serve(VENDOR, ws, ping, &mut frames, shutdown).await
    }

    /// The server said `disconnect` or closed the socket: reconnect at once.
    fn after_close(&self, _: &()) -> Next {
        Next::Now
    }

    fn after_failure(&self, _: &(), failures: u32, e: &ConnectorError) -> Next {
        let wait = Duration::from_millis(500)
            .saturating_mul(2u32.saturating_pow(failures.min(8)))
            .min(self.max_backoff);
        tracing::warn!(vendor = VENDOR, error = %e, failures, wait_ms = wait.as_millis() as u64, "stream connection failed; reconnecting");
        if wait.is_zero() {
            Next::Now
        } else {
            Next::After(wait)
        }
    }
}

/// The frames of one Stream connection.
struct Frames<'a> {
    sink: &'a tokio::sync::mpsc::Sender<PushDelivery>,
    ping_interval: Duration,
}

impl FrameHandler for Frames<'_> {
    fn ping(&self) -> Message {
        Message::Ping(Vec::new().into())
    }

    fn ping_interval(&self) -> Duration {
        self.ping_interval
    }

    async fn on_message(&mut self, message: Message) -> Result<Step, ConnectorError> {
        let Message::Text(text) = message else {
            return Ok(Step::Skip);
        };
        if text.len() > MAX_FRAME_BYTES {
            tracing::warn!(
                vendor = VENDOR,
                len = text.len(),
                "oversized stream frame ignored"
            );
            return Ok(Step::Skip);
        }
        let Some(frame) = Frame::parse(text.as_str()) else {
            tracing::warn!(
                vendor = VENDOR,
                len = text.len(),
                "undecodable stream frame ignored"
            );
            return Ok(Step::Skip);
        };
        let shutdown = Step::Stop {
            closed: Closed::Shutdown,
            hang_up: false,
        };
        let topic = frame.header("topic").unwrap_or_default().to_string();
        let ack = match frame.kind.as_str() {
            "SYSTEM" if topic == "ping" => frame.ack(200, "OK", &frame.data),
            "SYSTEM" if topic == "disconnect" => {
                tracing::info!(
                    vendor = VENDOR,
                    reason = frame.data.as_str(),
                    "stream disconnect requested; reconnecting"
                );
                return Ok(Step::Stop {
                    closed: Closed::Remote,
                    hang_up: true,
                });
            }
            "SYSTEM" => frame.ack(200, "OK", &frame.data),
            "EVENT" => match frame_event(&frame) {
                Some(ev) => match hand_on(self.sink, ev).await {
                    Settled::Ack => {
                        frame.ack(200, "OK", r#"{"status":"SUCCESS","message":"success"}"#)
                    }
                    Settled::Nack => frame.ack(
                        500,
                        "not accepted",
                        r#"{"status":"LATER","message":"not accepted yet; deliver again"}"#,
                    ),
                    Settled::Closed => return Ok(shutdown),
                },
                None => {
                    tracing::warn!(vendor = VENDOR, "malformed stream event");
                    frame.ack(
                        400,
                        "bad event",
                        r#"{"status":"LATER","message":"malformed"}"#,
                    )
                }
            },
            // Callbacks are fire-and-forget at the gateway: acked whatever happened.
            "CALLBACK" => match frame_callback(&frame) {
                Some(ev) => {
                    if hand_on(self.sink, ev).await == Settled::Closed {
                        return Ok(shutdown);
                    }
                    frame.ack(200, "OK", r#"{"response":null}"#)
                }
                None => frame.ack(400, "bad callback", r#"{"response":null}"#),
            },
            _ => frame.ack(404, "unsupported", "{}"),
        };
        Ok(Step::Reply(Message::Text(ack.into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frame_becomes_push_shape() {
        let text = r#"{"specVersion":"1.0","type":"EVENT","headers":{"topic":"*","messageId":"m1","eventType":"user_add_org","eventId":"e1","eventCorpId":"dingcorp","eventBornTime":"1700000000000"},"data":"{\"timeStamp\":\"1\",\"userId\":[\"u1\"]}"}"#;
        let f = Frame::parse(text).unwrap();
        let ev = frame_event(&f).unwrap();
        assert_eq!(ev.event_id, "e1");
        assert_eq!(ev.event_type, "user_add_org");
        assert_eq!(ev.created_at_ms, Some(1700000000000));
        assert_eq!(ev.payload["userId"], json!(["u1"]));
        assert_eq!(ev.payload["EventType"], "user_add_org");
        let ack: Value = serde_json::from_str(&f.ack(200, "OK", "{}")).unwrap();
        assert_eq!(ack["headers"]["messageId"], "m1");
        assert_eq!(ack["code"], 200);
        assert!(Frame::parse("not json").is_none());
    }
}
