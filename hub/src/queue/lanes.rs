//! What both queue implementations share once a message is in hand: partition
//! lanes (one key, one lane, in order), running the handler, and turning its
//! outcome into ack / retry tier / dead letter, with the metrics.

use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Envelope, Handler, NextStep, Outcome, QueueError, RetryPolicy, metric};

/// How one delivered message is settled with its backend.
#[async_trait]
pub trait Settle: Send + 'static {
    async fn ack(self: Box<Self>) -> Result<(), QueueError>;
    /// Hand `next` (attempt already incremented) to retry tier `tier`.
    async fn retry(
        self: Box<Self>,
        next: &Envelope,
        tier: usize,
        delay: Duration,
        error: &str,
    ) -> Result<(), QueueError>;
    async fn dead(self: Box<Self>, envelope: &Envelope, error: &str) -> Result<(), QueueError>;
}

/// A message in hand with the means to settle it.
pub struct Delivery {
    pub envelope: Envelope,
    pub(crate) settle: Box<dyn Settle>,
}

pub(crate) struct Lanes {
    senders: Vec<mpsc::UnboundedSender<Delivery>>,
    joins: Vec<JoinHandle<()>>,
}

impl Lanes {
    pub fn start(
        queue: &str,
        lanes: usize,
        handler: Arc<dyn Handler>,
        policy: RetryPolicy,
    ) -> Lanes {
        let lanes = lanes.max(1);
        let mut senders = Vec::with_capacity(lanes);
        let mut joins = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            joins.push(tokio::spawn(lane(
                queue.to_owned(),
                rx,
                handler.clone(),
                policy.clone(),
            )));
        }
        Lanes { senders, joins }
    }

    pub fn dispatch(&self, delivery: Delivery) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        delivery.envelope.partition_key.hash(&mut h);
        let i = (h.finish() % self.senders.len() as u64) as usize;
        if self.senders[i].send(delivery).is_err() {
            // The lane ended (only during shutdown): the unsettled message is
            // redelivered by the backend.
            tracing::warn!(lane = i, "lane closed; message left for redelivery");
        }
    }

    /// Finish every message already dispatched.
    pub async fn drain(self) {
        drop(self.senders);
        for j in self.joins {
            let _ = j.await;
        }
    }
}

async fn lane(
    queue: String,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
    handler: Arc<dyn Handler>,
    policy: RetryPolicy,
) {
    while let Some(Delivery { envelope, settle }) = rx.recv().await {
        metric::delivered(&queue);
        let outcome = match AssertUnwindSafe(handler.handle(&envelope))
            .catch_unwind()
            .await
        {
            Ok(o) => o,
            Err(_) => Outcome::Retry("the handler panicked".to_owned()),
        };
        let result = match &outcome {
            Outcome::Ok => settle.ack().await.map(|()| metric::acked(&queue)),
            Outcome::Retry(error) => match policy.after_failure(envelope.attempt) {
                NextStep::Retry { tier, delay } => {
                    let mut next = envelope.clone();
                    next.attempt += 1;
                    tracing::info!(queue = %queue, message_id = %envelope.id, attempt = envelope.attempt,
                        tier, delay_ms = delay.as_millis() as u64, error = %error, "message will be retried");
                    settle
                        .retry(&next, tier, delay, error)
                        .await
                        .map(|()| metric::retried(&queue, tier))
                }
                NextStep::Dead => {
                    let reason =
                        format!("gave up after {} attempts: {error}", envelope.attempt + 1);
                    tracing::warn!(queue = %queue, message_id = %envelope.id, error = %reason, "message dead-lettered");
                    settle
                        .dead(&envelope, &reason)
                        .await
                        .map(|()| metric::dead_lettered(&queue))
                }
            },
            Outcome::Permanent(error) => {
                tracing::warn!(queue = %queue, message_id = %envelope.id, error = %error,
                    "message failed permanently; dead-lettered");
                settle
                    .dead(&envelope, error)
                    .await
                    .map(|()| metric::dead_lettered(&queue))
            }
        };
        if let Err(e) = result {
            tracing::warn!(queue = %queue, message_id = %envelope.id, error = %e,
                "could not settle the message; it will be delivered again");
        }
    }
}
