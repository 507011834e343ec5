//! The Stream gateway: `POST /v1.0/gateway/connections/open` hands out a single-use ticket
//! (valid 90 s) and `ws://HOST/connect`; the WebSocket carries JSON frames. Every emitted event
//! goes out as an EVENT frame and stays pending until a connection acks it with code 200
//! (un-acked events are resent after 10 s and on the next connection: at-least-once). SYSTEM
//! `ping` frames are sent on connect and every 30 s; `POST /_sandbox/stream/disconnect` sends
//! SYSTEM `disconnect`. `POST /_sandbox/robot/receive {"from": user key, "text"}` delivers a bot
//! message (CALLBACK `/v1.0/im/bot/messages/get`, fire-and-forget).

use crate::sandbox::prelude::*;
use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};

use super::{App, AppState, new_body, new_err, now_ms};
use crate::dingtalk::stream::{BOT_MESSAGE_TOPIC, OPEN_PATH};

const TICKET_TTL: Duration = Duration::from_secs(90);
const RESEND_AFTER: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_secs(30);
const MAX_OUTBOX: usize = 10_000;

struct Outgoing {
    message_id: String,
    frame: String,
    /// Events wait for an ack; callbacks are fire-and-forget.
    needs_ack: bool,
}

#[derive(Default)]
struct Stats {
    opened: u64,
    connected: u64,
    acks: Vec<Value>,
    pings_acked: u64,
}

pub(crate) struct StreamState {
    tickets: Mutex<HashMap<String, Instant>>,
    outbox: Mutex<BTreeMap<u64, Outgoing>>,
    seq: Mutex<u64>,
    stats: Mutex<Stats>,
    disconnect: tokio::sync::broadcast::Sender<()>,
}

impl Default for StreamState {
    fn default() -> Self {
        Self {
            tickets: Mutex::new(HashMap::new()),
            outbox: Mutex::new(BTreeMap::new()),
            seq: Mutex::new(0),
            stats: Mutex::new(Stats::default()),
            disconnect: tokio::sync::broadcast::channel(16).0,
        }
    }
}

fn push_frame(kind: &str, headers: Value, data: &Value) -> String {
    json!({"specVersion": "1.0", "type": kind, "headers": headers, "data": data.to_string()})
        .to_string()
}

impl StreamState {
    fn push(&self, out: Outgoing) {
        let id = {
            let mut s = lock(&self.seq);
            *s += 1;
            *s
        };
        let mut o = lock(&self.outbox);
        o.insert(id, out);
        while o.len() > MAX_OUTBOX {
            o.pop_first();
        }
    }

    /// Queues an emitted event (HTTP push plaintext) as an EVENT frame.
    pub fn enqueue(&self, event: &Value, app_key: &str) {
        let s = |k: &str| {
            event
                .get(k)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap_or_default()
        };
        let message_id = uuid::Uuid::new_v4().simple().to_string();
        let headers = json!({
            "topic": "*", "messageId": message_id, "contentType": "application/json",
            "time": now_ms().to_string(), "eventType": s("EventType"), "eventId": s("eventId"),
            "eventCorpId": s("CorpId"), "eventBornTime": s("EventTime"),
            "eventUnifiedAppId": app_key,
        });
        let mut data: Map<String, Value> = event.as_object().cloned().unwrap_or_default();
        for k in ["EventType", "EventTime", "CorpId", "BizId", "eventId"] {
            data.remove(k);
        }
        let frame = push_frame("EVENT", headers, &Value::Object(data));
        self.push(Outgoing {
            message_id,
            frame,
            needs_ack: true,
        });
    }
}

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(OPEN_PATH, post(open))
        .route("/connect", get(upgrade))
        .route("/_sandbox/stream", get(status))
        .route("/_sandbox/stream/disconnect", post(disconnect))
        .route("/_sandbox/robot/receive", post(robot_receive))
}

async fn open(State(app): AppState, headers: HeaderMap, b: Bytes) -> Response {
    app.core.count_call(&format!("POST {OPEN_PATH}"));
    let m = or_reply!(new_body(&b));
    let id = m.get("clientId").and_then(Value::as_str).unwrap_or("");
    let secret = m.get("clientSecret").and_then(Value::as_str).unwrap_or("");
    if id != app.opts.app_key
        || !crate::crypto::ct_eq(
            secret.as_bytes(),
            app.opts.app_secret.expose_secret().as_bytes(),
        )
    {
        return new_err(
            StatusCode::UNAUTHORIZED,
            "invalidClientIdOrSecret",
            "无效的clientId或者clientSecret",
        );
    }
    if let Some(subs) = m.get("subscriptions").and_then(Value::as_array) {
        for s in subs {
            let t = s.get("type").and_then(Value::as_str).unwrap_or("");
            let topic = s.get("topic").and_then(Value::as_str).unwrap_or("");
            if t == "EVENT" && topic != "*" {
                return new_err(
                    StatusCode::BAD_REQUEST,
                    "invalidParameter.subscriptions",
                    "EVENT topic must be *",
                );
            }
        }
    }
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let ticket = uuid::Uuid::new_v4().to_string();
    {
        let now = Instant::now();
        let mut t = lock(&app.stream.tickets);
        t.retain(|_, exp| *exp > now);
        t.insert(ticket.clone(), now + TICKET_TTL);
    }
    lock(&app.stream.stats).opened += 1;
    Json(json!({"endpoint": format!("ws://{host}/connect"), "ticket": ticket})).into_response()
}

async fn upgrade(
    State(app): AppState,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    app.core.count_call("GET /connect");
    let ticket = q.get("ticket").cloned().unwrap_or_default();
    // Single use, valid 90 s.
    let ok = lock(&app.stream.tickets)
        .remove(&ticket)
        .is_some_and(|exp| Instant::now() < exp);
    if !ok {
        return new_err(StatusCode::FORBIDDEN, "invalidTicket", "ticket无效或已过期");
    }
    ws.on_upgrade(move |socket| session(app, socket))
}

fn system_frame(topic: &str, data: &Value) -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let f = push_frame(
        "SYSTEM",
        json!({"topic": topic, "messageId": id, "contentType": "application/json", "time": now_ms().to_string()}),
        data,
    );
    (id, f)
}

async fn session(app: Arc<App>, mut socket: WebSocket) {
    lock(&app.stream.stats).connected += 1;
    let mut stop = app.stop.clone();
    let mut disc = app.stream.disconnect.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut ping_at = Instant::now();
    let mut pings: HashMap<String, String> = HashMap::new();
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut closing_at: Option<Instant> = None;
    tracing::info!(vendor = "dingtalk", "sandbox stream connection opened");
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = disc.recv() => {
                if r.is_ok() && closing_at.is_none() {
                    let (_, f) = system_frame("disconnect", &json!({"reason": "sandbox disconnect"}));
                    if socket.send(Message::Text(f.into())).await.is_err() { break; }
                    closing_at = Some(Instant::now() + Duration::from_secs(2));
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if closing_at.is_some_and(|c| now >= c) { break; }
                if closing_at.is_some() { continue; }
                if now >= ping_at {
                    let opaque = uuid::Uuid::new_v4().simple().to_string();
                    let (id, f) = system_frame("ping", &json!({"opaque": opaque}));
                    pings.insert(id, opaque);
                    if socket.send(Message::Text(f.into())).await.is_err() { break; }
                    ping_at = now + PING_EVERY;
                }
                let due: Vec<(u64, String, String, bool)> = lock(&app.stream.outbox)
                    .iter()
                    .filter(|(_, o)| sent.get(&o.message_id).is_none_or(|t| now.duration_since(*t) >= RESEND_AFTER))
                    .map(|(k, o)| (*k, o.message_id.clone(), o.frame.clone(), o.needs_ack))
                    .collect();
                for (k, id, frame, needs_ack) in due {
                    if socket.send(Message::Text(frame.into())).await.is_err() {
                        return;
                    }
                    if needs_ack {
                        sent.insert(id, now);
                    } else {
                        lock(&app.stream.outbox).remove(&k);
                    }
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                };
                let Ok(ack) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let code = ack.get("code").and_then(Value::as_i64).unwrap_or(0);
                let id = ack.pointer("/headers/messageId").and_then(Value::as_str).unwrap_or("").to_string();
                if let Some(opaque) = pings.remove(&id) {
                    // The ack must echo the ping's data.
                    let echoed = ack.get("data").and_then(Value::as_str)
                        .and_then(|d| serde_json::from_str::<Value>(d).ok())
                        .and_then(|d| d.get("opaque").and_then(Value::as_str).map(str::to_string));
                    if code == 200 && echoed.as_deref() == Some(opaque.as_str()) {
                        lock(&app.stream.stats).pings_acked += 1;
                    }
                    continue;
                }
                // Code 200 is success whatever data holds (the Python SDK echoes the event).
                let acked = code == 200 && {
                    let mut o = lock(&app.stream.outbox);
                    let key = o.iter().find(|(_, x)| x.message_id == id).map(|(k, _)| *k);
                    key.and_then(|k| o.remove(&k)).is_some()
                };
                lock(&app.stream.stats).acks.push(json!({"messageId": id, "code": code, "matched": acked, "data": ack.get("data")}));
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    tracing::info!(vendor = "dingtalk", "sandbox stream connection closed");
}

async fn status(State(app): AppState) -> Response {
    let pending = lock(&app.stream.outbox)
        .values()
        .filter(|o| o.needs_ack)
        .count();
    let s = lock(&app.stream.stats);
    Json(json!({
        "connections_opened": s.opened, "connections": s.connected, "acks": s.acks,
        "pings_acked": s.pings_acked, "pending": pending,
    }))
    .into_response()
}

async fn disconnect(State(app): AppState) -> Response {
    let n = app.stream.disconnect.send(()).unwrap_or(0);
    Json(json!({"sent": n})).into_response()
}

/// A user messages the app robot one-to-one.
async fn robot_receive(State(app): AppState, b: Bytes) -> Response {
    let Ok(m) = serde_json::from_slice::<Value>(&b) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "body is not JSON").into_response();
    };
    let from = m.get("from").and_then(Value::as_str).unwrap_or("");
    let text = m.get("text").and_then(Value::as_str).unwrap_or("");
    let (name, union) = {
        let org = lock(&app.org);
        match org.users().get(from) {
            Some(u) => (u.fx.name.clone(), u.unionid.clone()),
            None => return (StatusCode::NOT_FOUND, "unknown user").into_response(),
        }
    };
    let msg_id = uuid::Uuid::new_v4().simple().to_string();
    let now = now_ms();
    let data = json!({
        "conversationId": format!("cid{union}"), "conversationType": "1", "msgId": msg_id,
        "msgtype": "text", "text": {"content": text}, "senderId": union, "senderNick": name,
        "senderStaffId": from, "senderCorpId": app.opts.corp_id, "chatbotUserId": "$:LWCP_v1:$bot",
        "chatbotCorpId": app.opts.corp_id, "robotCode": app.opts.app_key, "isAdmin": false,
        "isInAtList": true, "createAt": now, "sessionWebhook": "http://127.0.0.1:9/robot/sendBySession",
        "sessionWebhookExpiredTime": now + 3_600_000,
    });
    let message_id = uuid::Uuid::new_v4().simple().to_string();
    let headers = json!({
        "topic": BOT_MESSAGE_TOPIC, "messageId": message_id, "contentType": "application/json",
        "time": now.to_string(), "appId": app.opts.app_key, "connectionId": "sandbox",
    });
    app.stream.push(Outgoing {
        message_id: message_id.clone(),
        frame: push_frame("CALLBACK", headers, &data),
        needs_ack: false,
    });
    (StatusCode::ACCEPTED, Json(json!({"messageId": message_id}))).into_response()
}
