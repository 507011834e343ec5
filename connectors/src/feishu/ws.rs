//! Long-connection (WebSocket) event mode: the app dials out, so no public callback address is
//! needed. `POST {origin}/callback/ws/endpoint` with `{"AppID","AppSecret"}` returns the
//! WebSocket URL and a ClientConfig; frames are protobuf `pbbp2.Frame`; data frames carry the
//! plaintext schema 2.0 envelope and are acked by echoing the frame with a `{"code":200}` payload,
//! once the receiver settled the event ([`PushChannel::run_confirmed`]); a refused event is
//! answered `{"code":500}`, so the server delivers it again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prost::Message as _;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[cfg(doc)]
use crate::capability::PushChannel;
use crate::capability::{PushDelivery, RawEvent, Settled, hand_on};
use crate::client::WireConfig;
use crate::error::ConnectorError;
use crate::feishu::VENDOR;
use crate::feishu::config::FeishuConfig;
use crate::http::{build_client, read_limited};
use crate::push::{self, Closed, FrameHandler, Next, PushConnection, Step};

pub const ENDPOINT_PATH: &str = "/callback/ws/endpoint";
/// Frame `method`: control (ping/pong) and data (event/card).
pub const METHOD_CONTROL: i32 = 0;
pub const METHOD_DATA: i32 = 1;

/// `pbbp2.Header`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

/// `pbbp2.Frame`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Frame {
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    #[prost(string, optional, tag = "6")]
    pub payload_encoding: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub payload_type: Option<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
    #[prost(string, optional, tag = "9")]
    pub log_id_new: Option<String>,
}

impl Frame {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    pub fn set_header(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.headers.iter_mut().find(|h| h.key == key) {
            Some(h) => h.value = value,
            None => self.headers.push(Header {
                key: key.into(),
                value,
            }),
        }
    }

    pub fn control(service: i32, kind: &str) -> Self {
        Self {
            seq_id: 0,
            log_id: 0,
            service,
            method: METHOD_CONTROL,
            headers: vec![Header {
                key: "type".into(),
                value: kind.into(),
            }],
            payload_encoding: None,
            payload_type: None,
            payload: None,
            log_id_new: None,
        }
    }
}

/// `ClientConfig` from the endpoint reply (and pong payloads), in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientConfig {
    pub reconnect_count: i64,
    pub reconnect_interval: Duration,
    pub reconnect_nonce: Duration,
    pub ping_interval: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            reconnect_count: -1,
            reconnect_interval: Duration::from_secs(120),
            reconnect_nonce: Duration::from_secs(30),
            ping_interval: Duration::from_secs(120),
        }
    }
}

impl ClientConfig {
    fn update(&mut self, v: &Value) {
        // The server's numbers are bounded (a day) before they reach timers: a huge one would
        // overflow `Instant` arithmetic and end the connection task.
        let secs = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|s| Duration::from_secs(s.min(MAX_SERVER_SECS)))
        };
        if let Some(c) = v.get("ReconnectCount").and_then(Value::as_i64) {
            self.reconnect_count = c;
        }
        if let Some(d) = secs("ReconnectInterval") {
            self.reconnect_interval = d;
        }
        if let Some(d) = secs("ReconnectNonce") {
            self.reconnect_nonce = d;
        }
        if let Some(d) = secs("PingInterval").filter(|d| !d.is_zero()) {
            self.ping_interval = d;
        }
    }
}

/// The longest interval or wait the server may set (a day).
const MAX_SERVER_SECS: u64 = 86_400;

/// The long-connection client of one app.
pub struct LongConnection {
    origin: String,
    app_id: String,
    app_secret: SecretString,
    http: reqwest::Client,
    /// Upper bound on the wait between reconnects, whatever the server's config says.
    pub max_reconnect_interval: Duration,
}

fn retryable(message: String) -> ConnectorError {
    push::retryable(VENDOR, message)
}

impl LongConnection {
    pub fn new(cfg: &FeishuConfig) -> Result<Self, ConnectorError> {
        cfg.validate()?;
        Ok(Self {
            origin: cfg.base_url.trim_end_matches('/').to_string(),
            app_id: cfg.app_id.clone(),
            app_secret: cfg.app_secret.clone(),
            http: build_client(cfg.transport.timeout)?,
            max_reconnect_interval: Duration::from_secs(150),
        })
    }

    /// Asks for a connection URL.
    pub async fn endpoint(&self) -> Result<(String, ClientConfig), ConnectorError> {
        let resp = self
            .http
            .post(format!("{}{ENDPOINT_PATH}", self.origin))
            .header("locale", "zh")
            .json(&json!({"AppID": self.app_id, "AppSecret": self.app_secret.expose_secret()}))
            .send()
            .await
            .map_err(|e| ConnectorError::from_transport(VENDOR, &e))?;
        let status = resp.status().as_u16();
        let body = read_limited(VENDOR, resp, 64 * 1024).await?;
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            ConnectorError::from_status(VENDOR, status, None, "endpoint reply is not JSON")
        })?;
        let code = v.get("code").and_then(Value::as_i64).unwrap_or(-1);
        let msg = v
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match code {
            0 => {}
            // system busy / internal error: try again later
            1 | 1000040343 => return Err(retryable(format!("endpoint: {code} {msg}"))),
            _ => {
                return Err(ConnectorError::Permanent {
                    vendor: VENDOR,
                    code: Some(code),
                    status: Some(status),
                    message: msg,
                });
            }
        }
        let url = v
            .pointer("/data/URL")
            .and_then(Value::as_str)
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "endpoint reply without URL"))?
            .to_string();
        let mut cc = ClientConfig::default();
        if let Some(c) = v.pointer("/data/ClientConfig") {
            cc.update(c);
        }
        Ok((url, cc))
    }
}

/// The frames of one long connection.
struct Frames<'a> {
    service: i32,
    cc: &'a mut ClientConfig,
    sink: &'a tokio::sync::mpsc::Sender<PushDelivery>,
    fragments: HashMap<String, Vec<Option<Vec<u8>>>>,
}

impl FrameHandler for Frames<'_> {
    fn ping(&self) -> Message {
        Message::Binary(Frame::control(self.service, "ping").encode_to_vec().into())
    }

    fn ping_interval(&self) -> Duration {
        self.cc.ping_interval
    }

    async fn on_message(&mut self, message: Message) -> Result<Step, ConnectorError> {
        let Message::Binary(bytes) = message else {
            return Ok(Step::Skip);
        };
        let Ok(mut frame) = Frame::decode(bytes.as_ref()) else {
            tracing::warn!(
                vendor = VENDOR,
                len = bytes.len(),
                "undecodable frame ignored"
            );
            return Ok(Step::Skip);
        };
        if frame.method == METHOD_CONTROL {
            if frame.header("type") == Some("pong")
                && let Some(v) = frame
                    .payload
                    .as_deref()
                    .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            {
                self.cc.update(&v);
            }
            return Ok(Step::Skip);
        }
        let started = Instant::now();
        let Some(payload) = reassemble(&mut self.fragments, &mut frame) else {
            return Ok(Step::Skip);
        };
        let kind = frame.header("type").unwrap_or_default().to_string();
        let code = if kind == "event" {
            match to_event(&payload) {
                Some(ev) => match hand_on(self.sink, ev).await {
                    Settled::Ack => 200,
                    Settled::Nack => 500,
                    Settled::Closed => {
                        return Ok(Step::Stop {
                            closed: Closed::Shutdown,
                            hang_up: false,
                        });
                    }
                },
                None => {
                    tracing::warn!(vendor = VENDOR, "malformed event on the long connection");
                    500
                }
            }
        } else {
            // Cards are not handled by huitong: acknowledge and move on.
            200
        };
        frame.set_header("biz_rt", started.elapsed().as_millis().to_string());
        frame.payload = Some(
            json!({"code": code, "headers": null, "data": null})
                .to_string()
                .into_bytes(),
        );
        Ok(Step::Reply(Message::Binary(frame.encode_to_vec().into())))
    }
}

/// Joins fragmented payloads (`sum` > 1); returns the payload once complete.
fn reassemble(
    frags: &mut HashMap<String, Vec<Option<Vec<u8>>>>,
    frame: &mut Frame,
) -> Option<Vec<u8>> {
    let sum: usize = frame
        .header("sum")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let payload = frame.payload.clone().unwrap_or_default();
    if sum <= 1 {
        return Some(payload);
    }
    let seq: usize = frame.header("seq").and_then(|s| s.parse().ok())?;
    let id = frame.header("message_id")?.to_string();
    if seq >= sum || sum > 1024 {
        return None;
    }
    let parts = frags.entry(id.clone()).or_insert_with(|| vec![None; sum]);
    if parts.len() != sum {
        return None;
    }
    parts[seq] = Some(payload);
    if parts.iter().all(Option::is_some) {
        let parts = frags.remove(&id)?;
        return Some(parts.into_iter().flatten().flatten().collect());
    }
    None
}

fn to_event(payload: &[u8]) -> Option<RawEvent> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let h = v.get("header")?;
    Some(RawEvent {
        vendor: VENDOR,
        event_id: h.get("event_id")?.as_str()?.to_string(),
        event_type: h.get("event_type")?.as_str()?.to_string(),
        created_at_ms: h
            .get("create_time")
            .and_then(|c| c.as_str())
            .and_then(|s| s.parse().ok()),
        payload: v,
    })
}

impl PushConnection for LongConnection {
    /// The server's last ClientConfig.
    type State = ClientConfig;

    async fn run_once(
        &self,
        cc: &mut ClientConfig,
        sink: &tokio::sync::mpsc::Sender<PushDelivery>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Closed, ConnectorError> {
        let (url, fresh) = self.endpoint().await?;
        *cc = fresh;
        let service: i32 = url
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("service_id=")))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                ConnectorError::permanent(VENDOR, "connection URL without service_id")
            })?;
        let ws = push::connect(VENDOR, &url).await?;
        tracing::info!(vendor = VENDOR, service, "long connection established");
        let ping = tokio::time::interval(cc.ping_interval);
        let mut frames = Frames {
            service,
            cc,
            sink,
            fragments: HashMap::new(),
        };
        push::serve(VENDOR, ws, ping, &mut frames, shutdown).await
    }

    fn after_close(&self, cc: &ClientConfig) -> Next {
        tracing::warn!(
            vendor = VENDOR,
            "long connection closed by the server; reconnecting"
        );
        Next::After(self.reconnect_wait(cc))
    }

    fn after_failure(&self, cc: &ClientConfig, attempts: u32, e: &ConnectorError) -> Next {
        if cc.reconnect_count >= 0 && i64::from(attempts) > cc.reconnect_count {
            return Next::GiveUp;
        }
        tracing::warn!(vendor = VENDOR, error = %e, attempts, "long connection failed; reconnecting");
        Next::After(self.reconnect_wait(cc))
    }
}

impl LongConnection {
    /// The server's reconnect interval plus a random part of its nonce, at most
    /// `max_reconnect_interval`.
    fn reconnect_wait(&self, cc: &ClientConfig) -> Duration {
        let jitter_ms = u64::from(u16::from_le_bytes(crate::crypto::random_bytes::<2>()));
        let nonce = cc.reconnect_nonce.as_millis() as u64;
        cc.reconnect_interval
            .saturating_add(Duration::from_millis(if nonce > 0 {
                jitter_ms % nonce
            } else {
                0
            }))
            .min(self.max_reconnect_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip_and_headers() {
        let mut f = Frame::control(7, "ping");
        f.set_header("type", "pong");
        f.set_header("biz_rt", "3");
        let back = Frame::decode(f.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.service, 7);
        assert_eq!(back.header("type"), Some("pong"));
        assert_eq!(back.header("biz_rt"), Some("3"));
        // Garbage (invalid wire type) is not a frame.
        assert!(Frame::decode(&[0xff, 0xff][..]).is_err());
    }

    #[test]
    fn fragments_are_joined_in_order() {
        let mut frags = HashMap::new();
        let mk = |seq: usize, data: &[u8]| {
            let mut f = Frame::control(1, "event");
            f.method = METHOD_DATA;
            f.set_header("message_id", "m1");
            f.set_header("sum", "2");
            f.set_header("seq", seq.to_string());
            f.payload = Some(data.to_vec());
            f
        };
        assert_eq!(reassemble(&mut frags, &mut mk(1, b"world")), None);
        assert_eq!(
            reassemble(&mut frags, &mut mk(0, b"hello ")),
            Some(b"hello world".to_vec())
        );
        assert!(frags.is_empty());
    }

    #[test]
    fn client_config_updates() {
        let mut c = ClientConfig::default();
        c.update(&json!({"PingInterval": 5, "ReconnectCount": 3}));
        assert_eq!(c.ping_interval, Duration::from_secs(5));
        assert_eq!(c.reconnect_count, 3);
        assert_eq!(c.reconnect_interval, Duration::from_secs(120));
        // Huge numbers from the server are bounded, and the reconnect wait cannot overflow
        // (found by the feishu_long_connection fuzz target).
        c.update(&json!({"PingInterval": u64::MAX, "ReconnectInterval": u64::MAX, "ReconnectNonce": 100000}));
        assert_eq!(c.ping_interval, Duration::from_secs(86_400));
        assert_eq!(c.reconnect_interval, Duration::from_secs(86_400));
        let lc = LongConnection {
            origin: "http://127.0.0.1:9".into(),
            app_id: "cli_x".into(),
            app_secret: SecretString::from("s".to_owned()),
            http: build_client(Duration::from_secs(1)).unwrap(),
            max_reconnect_interval: Duration::from_secs(150),
        };
        for _ in 0..100 {
            assert!(lc.reconnect_wait(&c) <= lc.max_reconnect_interval);
        }
    }
}
