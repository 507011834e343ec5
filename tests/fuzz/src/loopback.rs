//! A loopback vendor for the push-channel targets: the real vendor client (Feishu's
//! `LongConnection`, DingTalk's `StreamClient`) dials a local server that plays the vendor —
//! its connection endpoint and its WebSocket — and every fuzz input is sent down that
//! WebSocket as one frame, so that it goes through the client's own frame handler (private in
//! the connectors crate), hand-off to the hub and ack included.
//!
//! After each input a *sync* frame the client answers at once is sent, and the harness reads
//! until that answer: the input was handled when it arrives. The client stopping to answer is
//! a finding (a panic in its task aborts the process through libFuzzer's panic hook). Every
//! [`RECYCLE`] inputs, or when the input asks for it, the server hangs up and waits until the
//! client is back: state the client keeps per connection (fragments waiting for the rest)
//! starts afresh, and what it does between connections (its reconnect wait, from settings the
//! server sent) runs within the input that caused it.

use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use futures_util::SinkExt;
use huitong_connectors::capability::PushChannel;
use huitong_connectors::{PushDelivery, RawEvent};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

/// Inputs served on one connection before the server hangs up.
pub const RECYCLE: u64 = 1000;
/// How long the client may take to answer the sync frame, or to (re)connect.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// What differs between the vendors.
pub trait Vendor: Send + Sync + 'static {
    /// The client's connection endpoint (POST).
    const ENDPOINT_PATH: &'static str;
    /// The endpoint's reply, handing out `ws_url`.
    fn endpoint_reply(ws_url: &str) -> Value;
    /// The client, dialling `origin` (`http://127.0.0.1:port`).
    fn client(origin: &str) -> Box<dyn PushChannel>;
    /// A frame the client answers at once, marked with `n`.
    fn sync_frame(n: u64) -> Message;
    /// Whether `m` is the client's answer to [`Vendor::sync_frame`] `n`.
    fn is_sync_reply(n: u64, m: &Message) -> bool;
    /// What the hub does with an event it receives (beyond queueing it).
    fn on_event(event: &RawEvent);
}

/// A running loopback vendor with its client connected to it.
pub struct Loopback<V: Vendor> {
    rt: tokio::runtime::Runtime,
    sockets: Mutex<mpsc::UnboundedReceiver<WebSocket>>,
    current: Mutex<Option<WebSocket>>,
    sent: Mutex<u64>,
    _vendor: std::marker::PhantomData<V>,
    _shutdown: watch::Sender<bool>,
}

impl<V: Vendor> Loopback<V> {
    /// Starts the server and the client (two worker threads).
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (sockets_tx, sockets) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown) = watch::channel(false);
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1");
            let port = listener.local_addr().expect("local address").port();
            let ws_url = format!("ws://127.0.0.1:{port}/ws?device_id=fuzz&service_id=7");
            let reply = V::endpoint_reply(&ws_url);
            let app = Router::new()
                .route(
                    V::ENDPOINT_PATH,
                    post(move || {
                        let reply = reply.clone();
                        async move { axum::Json(reply) }
                    }),
                )
                .route("/ws", any(upgrade))
                .with_state(sockets_tx);
            // No Nagle on the server's side: a frame goes out at once.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move {
                axum::serve(listener, app).await.expect("loopback server");
            });
            let client = V::client(&format!("http://127.0.0.1:{port}"));
            tokio::spawn(async move {
                let (sink, mut deliveries) = mpsc::channel::<PushDelivery>(16);
                tokio::spawn(async move {
                    while let Some(d) = deliveries.recv().await {
                        V::on_event(&d.event);
                        // Both answers the hub can give: queued (ack) or not (nack).
                        if d.event.event_id.len() % 2 == 0 {
                            d.ack()
                        } else {
                            d.nack()
                        }
                    }
                });
                // The client gives up only on a permanent error, which nothing here causes.
                let r = client.run_confirmed(sink, shutdown).await;
                panic!("the push client stopped: {r:?}");
            });
        });
        Self {
            rt,
            sockets: Mutex::new(sockets),
            current: Mutex::new(None),
            sent: Mutex::new(0),
            _vendor: std::marker::PhantomData,
            _shutdown: shutdown_tx,
        }
    }

    /// Sends `frame` to the client and waits until it was handled; with `hang_up` (and every
    /// [`RECYCLE`] frames) the server then closes the connection and waits for the client to
    /// connect again, so that what the client does after a close runs within this input.
    pub fn exchange(&self, frame: Message, hang_up: bool) {
        let mut current = self.current.lock().expect("not poisoned");
        let mut sent = self.sent.lock().expect("not poisoned");
        let mut sockets = self.sockets.lock().expect("not poisoned");
        self.rt.block_on(async {
            let mut ws = match current.take() {
                Some(ws) => ws,
                None => next_socket(&mut sockets).await,
            };
            *sent += 1;
            let n = *sent;
            // Both frames in one write.
            let sent = async {
                ws.feed(frame).await?;
                ws.feed(V::sync_frame(n)).await?;
                ws.flush().await
            };
            if sent.await.is_err() {
                // It hung up (a DingTalk `disconnect`): it connects again.
                *current = Some(next_socket(&mut sockets).await);
                return;
            }
            loop {
                match tokio::time::timeout(PATIENCE, ws.recv()).await {
                    Err(_) => panic!("the push client stopped answering"),
                    Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                        *current = Some(next_socket(&mut sockets).await);
                        return;
                    }
                    Ok(Some(Ok(m))) if V::is_sync_reply(n, &m) => break,
                    // An ack of the input, a ping. Answered with a pong the client ignores, so
                    // that the TCP ack goes out with it at once: the client's socket keeps
                    // Nagle's algorithm, which holds its next frame (the sync answer) until
                    // this one is acknowledged (otherwise a delayed ack: 40 ms per input).
                    Ok(Some(Ok(_))) => {
                        let _ = ws.send(Message::Pong(Default::default())).await;
                    }
                }
            }
            if hang_up || n % RECYCLE == 0 {
                let _ = ws.send(Message::Close(None)).await;
                drop(ws);
                *current = Some(next_socket(&mut sockets).await);
            } else {
                *current = Some(ws);
            }
        });
    }
}

/// The client's next connection.
async fn next_socket(sockets: &mut mpsc::UnboundedReceiver<WebSocket>) -> WebSocket {
    tokio::time::timeout(PATIENCE, sockets.recv())
        .await
        .ok()
        .flatten()
        .expect("the push client did not connect")
}

async fn upgrade(
    State(sockets): State<mpsc::UnboundedSender<WebSocket>>,
    ws: WebSocketUpgrade,
) -> impl IntoResponse {
    ws.on_upgrade(move |socket| async move {
        let _ = sockets.send(socket);
    })
}
