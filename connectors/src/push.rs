//! What the push channels share (Feishu's long connection, DingTalk's Stream mode): the
//! reconnect loop with back-off that [`PushChannel::run_confirmed`] runs, the WebSocket loop of
//! one connection (shutdown, pings, frames in, acks out) and its errors. A vendor plugs in how
//! it dials and waits ([`PushConnection`]) and what it answers each frame ([`FrameHandler`]);
//! each event is handed on as a [`crate::PushDelivery`] through [`crate::capability::hand_on`].

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Interval;
use tokio_tungstenite::tungstenite::Message;

use crate::capability::{PushChannel, PushDelivery};
use crate::error::{ConnectorError, ErrorClass};

/// How a connection ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Shutting down (or the receiving side is gone): stop.
    Shutdown,
    /// The server closed the connection or asked for a reconnect.
    Remote,
}

/// When to connect again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Now,
    After(Duration),
    /// Stop and report the last error.
    GiveUp,
}

/// A transport error worth a reconnect.
pub fn retryable(vendor: &'static str, message: String) -> ConnectorError {
    ConnectorError::Retryable {
        vendor,
        code: None,
        status: None,
        message,
    }
}

/// One vendor's push channel: how it runs one connection and how long it waits between them.
/// Every `PushConnection` is a [`PushChannel`].
pub trait PushConnection: Send + Sync {
    /// What lasts from one connection to the next (e.g. settings the server sent).
    type State: Default + Send;

    /// Connects once and serves the connection until it ends.
    fn run_once(
        &self,
        state: &mut Self::State,
        sink: &mpsc::Sender<PushDelivery>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Result<Closed, ConnectorError>> + Send;

    /// After the server closed the connection.
    fn after_close(&self, state: &Self::State) -> Next;

    /// After the `failures`-th failure in a row (not a permanent one), `error`.
    fn after_failure(&self, state: &Self::State, failures: u32, error: &ConnectorError) -> Next;
}

#[async_trait]
impl<C: PushConnection> PushChannel for C {
    async fn run_confirmed(
        &self,
        sink: mpsc::Sender<PushDelivery>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConnectorError> {
        let mut state = C::State::default();
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let next = match self.run_once(&mut state, &sink, &mut shutdown).await {
                Ok(Closed::Shutdown) => return Ok(()),
                Ok(Closed::Remote) => {
                    failures = 0;
                    self.after_close(&state)
                }
                Err(e) if e.class() == ErrorClass::Permanent => return Err(e),
                Err(e) => {
                    failures = failures.saturating_add(1);
                    match self.after_failure(&state, failures, &e) {
                        Next::GiveUp => return Err(e),
                        next => next,
                    }
                }
            };
            if let Next::After(wait) = next {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
    }
}

/// What to do after a frame.
#[derive(Debug)]
pub enum Step {
    /// Nothing to send.
    Skip,
    /// Send this answer (an ack).
    Reply(Message),
    /// End the connection; `hang_up` closes the socket first.
    Stop { closed: Closed, hang_up: bool },
}

/// One vendor's frames on an open connection.
pub trait FrameHandler: Send {
    /// The ping sent on every tick.
    fn ping(&self) -> Message;

    /// The ping period wanted now; a change restarts the ticks.
    fn ping_interval(&self) -> Duration;

    /// Handles one message from the server (every kind but `Close`).
    fn on_message(
        &mut self,
        message: Message,
    ) -> impl Future<Output = Result<Step, ConnectorError>> + Send;
}

/// Opens the WebSocket.
pub async fn connect(
    vendor: &'static str,
    url: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    ConnectorError,
> {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| retryable(vendor, format!("websocket connect: {e}")))?;
    Ok(ws)
}

/// Serves one open connection until shutdown, the server's close, a stop or an error: pings on
/// `ping`'s ticks, every message to `handler`, its answers back.
pub async fn serve<S, H>(
    vendor: &'static str,
    ws: S,
    mut ping: Interval,
    handler: &mut H,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Closed, ConnectorError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin,
    H: FrameHandler,
{
    let (mut tx, mut rx) = ws.split();
    loop {
        let step = tokio::select! {
            _ = shutdown.changed() => {
                let _ = tx.close().await;
                return Ok(Closed::Shutdown);
            }
            _ = ping.tick() => {
                tx.send(handler.ping()).await.map_err(|e| retryable(vendor, format!("ping: {e}")))?;
                continue;
            }
            msg = rx.next() => match msg {
                None | Some(Ok(Message::Close(_))) => return Ok(Closed::Remote),
                Some(Err(e)) => return Err(retryable(vendor, format!("websocket: {e}"))),
                Some(Ok(m)) => handler.on_message(m).await?,
            }
        };
        match step {
            Step::Skip => {}
            Step::Reply(m) => tx
                .send(m)
                .await
                .map_err(|e| retryable(vendor, format!("ack: {e}")))?,
            Step::Stop { closed, hang_up } => {
                if hang_up {
                    let _ = tx.close().await;
                }
                return Ok(closed);
            }
        }
        // At most a day: a vendor's huge interval must not overflow the timer.
        let period = handler
            .ping_interval()
            .min(std::time::Duration::from_secs(86_400));
        if period != ping.period() {
            ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        }
    }
}
