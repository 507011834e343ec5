//! The long-connection endpoint and WebSocket in the sandbox: every emitted event goes to every
//! connected client as a data frame (Feishu sends each to one connection; with one client, the
//! same), pings are answered with pongs carrying the ClientConfig, acks are counted.

use crate::sandbox::prelude::*;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};

use prost::Message as _;

use super::{App, AppState, json_body};
use crate::feishu::ws::{Frame, Header, METHOD_CONTROL, METHOD_DATA};

const CLIENT_CONFIG: &str =
    r#"{"ReconnectCount":-1,"ReconnectInterval":3,"ReconnectNonce":1,"PingInterval":30}"#;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/callback/ws/endpoint", post(endpoint))
        .route("/callback/ws/ws", get(upgrade))
}

async fn endpoint(State(app): AppState, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    app.core.count_call("POST /callback/ws/endpoint");
    let m = or_reply!(json_body(&body));
    let [id, secret] = credentials(&m, ["AppID", "AppSecret"]);
    use secrecy::ExposeSecret;
    if id != app.opts.app_id
        || !crate::crypto::ct_eq(
            secret.as_bytes(),
            app.opts.app_secret.expose_secret().as_bytes(),
        )
    {
        return axum::Json(
            json!({"code": 514, "msg": "auth failed: app_id or app_secret incorrect"}),
        )
        .into_response();
    }
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let device = uuid::Uuid::new_v4().simple().to_string();
    let service: i32 = i32::from(u16::from_le_bytes(crate::crypto::random_bytes::<2>())) + 1;
    lock(&app.ws_devices).insert(device.clone(), service);
    let cc: Value = serde_json::from_str(CLIENT_CONFIG).unwrap_or(Value::Null);
    axum::Json(json!({"code": 0, "msg": "ok", "data": {
        "URL": format!("ws://{host}/callback/ws/ws?device_id={device}&service_id={service}"),
        "ClientConfig": cc,
    }}))
    .into_response()
}

async fn upgrade(
    State(app): AppState,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let device = q.get("device_id").cloned().unwrap_or_default();
    // A device id is good for one connection.
    let Some(service) = lock(&app.ws_devices).remove(&device) else {
        return (
            StatusCode::FORBIDDEN,
            [
                ("handshake-status", "514"),
                ("handshake-msg", "auth failed"),
                ("handshake-autherrcode", "514"),
            ],
        )
            .into_response();
    };
    ws.on_upgrade(move |socket| session(app, socket, service))
}

fn data_frame(seq: u64, service: i32, event: &Value) -> Frame {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let header = |k: &str, v: String| Header {
        key: k.into(),
        value: v,
    };
    Frame {
        seq_id: seq,
        log_id: seq,
        service,
        method: METHOD_DATA,
        headers: vec![
            header("type", "event".into()),
            header("message_id", id.clone()),
            header("trace_id", id),
            header("sum", "1".into()),
            header("seq", "0".into()),
        ],
        payload_encoding: None,
        payload_type: None,
        payload: Some(event.to_string().into_bytes()),
        log_id_new: None,
    }
}

async fn session(app: Arc<App>, mut socket: WebSocket, service: i32) {
    app.core.count_call("WS connect");
    let mut bus = app.core.bus.subscribe();
    let mut stop = app.stop.clone();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            ev = bus.recv() => match ev {
                Ok(event) => {
                    seq += 1;
                    let f = data_frame(seq, service, &event);
                    if socket.send(Message::Binary(f.encode_to_vec().into())).await.is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(vendor = "feishu", skipped = n, "long-connection client too slow; events skipped");
                }
                Err(_) => break,
            },
            msg = socket.recv() => {
                let bytes = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Ok(frame) = Frame::decode(bytes.as_ref()) else { continue };
                if frame.method == METHOD_CONTROL && frame.header("type") == Some("ping") {
                    app.core.count_call("WS ping");
                    let mut pong = Frame::control(service, "pong");
                    pong.payload = Some(CLIENT_CONFIG.as_bytes().to_vec());
                    if socket.send(Message::Binary(pong.encode_to_vec().into())).await.is_err() {
                        break;
                    }
                } else if frame.method == METHOD_DATA {
                    let code = frame
                        .payload
                        .as_deref()
                        .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                        .and_then(|v| v.get("code").and_then(Value::as_i64))
                        .unwrap_or(0);
                    app.core.count_call(&format!("WS ack {code}"));
                }
            }
        }
    }
}
