//! The embedded queue: the queue contract on the SQL store, for the default
//! mode with no broker. Crash-safe because every state is a committed row:
//! a claimed message is locked for a visibility timeout and is claimed again
//! by any consumer once that passes without an ack.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::lanes::{Delivery, Lanes, Settle};
use super::{
    ConsumeOptions, ConsumerHandle, DeadLetter, Envelope, Handler, Queue, QueueError, RetryPolicy,
    metric,
};
use crate::store::{NewMessage, Store, StoredMessage, now_ms};

pub struct EmbeddedQueue {
    store: Arc<dyn Store>,
    policy: RetryPolicy,
    visibility: Duration,
    poll: Duration,
    notify: Arc<Notify>,
    declared: Mutex<BTreeSet<String>>,
}

impl EmbeddedQueue {
    pub fn new(store: Arc<dyn Store>, policy: RetryPolicy) -> Self {
        EmbeddedQueue {
            store,
            policy,
            visibility: Duration::from_secs(300),
            poll: Duration::from_millis(200),
            notify: Arc::new(Notify::new()),
            declared: Mutex::new(BTreeSet::new()),
        }
    }

    /// How long a claimed, unacknowledged message stays invisible to other
    /// consumers (a crashed consumer's messages come back after this).
    pub fn with_visibility(mut self, visibility: Duration) -> Self {
        self.visibility = visibility;
        self
    }

    /// How often an idle consumer looks for messages published by other processes.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    fn dead_letter(m: &StoredMessage) -> DeadLetter {
        let envelope = serde_json::from_value::<Envelope>(m.body.clone()).ok();
        DeadLetter {
            id: m.message_id.clone(),
            queue: m.queue.clone(),
            attempts: u32::try_from(m.attempt)
                .unwrap_or(u32::MAX)
                .saturating_add(1),
            last_error: m.last_error.clone().unwrap_or_default(),
            dead_at_ms: m.dead_at_ms,
            envelope,
        }
    }
}

struct EmbeddedSettle {
    store: Arc<dyn Store>,
    seq: i64,
    consumer: String,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Settle for EmbeddedSettle {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        if !self.store.q_ack(self.seq, &self.consumer).await? {
            tracing::warn!(
                seq = self.seq,
                "ack after the visibility timeout: another consumer may handle it again"
            );
        }
        Ok(())
    }

    async fn retry(
        self: Box<Self>,
        next: &Envelope,
        _tier: usize,
        delay: Duration,
        error: &str,
    ) -> Result<(), QueueError> {
        let visible = now_ms().saturating_add(delay.as_millis() as i64);
        self.store
            .q_retry(
                self.seq,
                &self.consumer,
                i64::from(next.attempt),
                visible,
                error,
            )
            .await?;
        Ok(())
    }

    async fn dead(self: Box<Self>, envelope: &Envelope, error: &str) -> Result<(), QueueError> {
        self.store
            .q_dead(
                self.seq,
                &self.consumer,
                i64::from(envelope.attempt),
                error,
                now_ms(),
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn declare(&self, queue: &str) -> Result<(), QueueError> {
        if let Ok(mut d) = self.declared.lock() {
            d.insert(queue.to_owned());
        }
        Ok(())
    }

    async fn publish(&self, queue: &str, envelope: &Envelope) -> Result<(), QueueError> {
        let body = serde_json::to_value(envelope)?;
        let now = now_ms();
        self.store
            .q_enqueue(&NewMessage {
                queue,
                message_id: &envelope.id,
                partition_key: &envelope.partition_key,
                attempt: i64::from(envelope.attempt),
                body: &body,
                visible_at_ms: now,
                now_ms: now,
            })
            .await?;
        metric::published(queue);
        self.notify.notify_waiters();
        Ok(())
    }

    async fn consume(
        &self,
        queue: &str,
        handler: Arc<dyn Handler>,
        options: ConsumeOptions,
    ) -> Result<ConsumerHandle, QueueError> {
        self.declare(queue).await?;
        let stop = CancellationToken::new();
        let ctx = ConsumerLoop {
            store: self.store.clone(),
            queue: queue.to_owned(),
            consumer: format!("embedded-{}", uuid::Uuid::new_v4().simple()),
            visibility: self.visibility,
            poll: self.poll,
            notify: self.notify.clone(),
            permits: Arc::new(Semaphore::new(usize::from(options.prefetch.max(1)))),
            stop: stop.clone(),
        };
        let lanes = Lanes::start(queue, options.lanes, handler, self.policy.clone());
        let join = tokio::spawn(async move {
            ctx.run(&lanes).await;
            lanes.drain().await;
        });
        Ok(ConsumerHandle::new(stop, join))
    }

    async fn dead_letters(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let rows = self.store.q_list_dead(queue, limit as i64).await?;
        Ok(rows.iter().map(Self::dead_letter).collect())
    }

    async fn replay(
        &self,
        queue: Option<&str>,
        id: Option<&str>,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let before: Vec<DeadLetter> = self
            .store
            .q_list_dead(queue, i64::MAX)
            .await?
            .iter()
            .filter(|m| id.is_none_or(|id| m.message_id == id))
            .map(Self::dead_letter)
            .collect();
        let replayed = self.store.q_replay(queue, id, now_ms()).await?;
        self.notify.notify_waiters();
        let ids: BTreeSet<&str> = replayed.iter().map(|m| m.message_id.as_str()).collect();
        Ok(before
            .into_iter()
            .filter(|d| ids.contains(d.id.as_str()))
            .collect())
    }

    async fn lag(&self, queue: &str) -> Result<u64, QueueError> {
        let d = self.store.q_depth(queue, now_ms()).await?;
        Ok(u64::try_from(d.ready + d.in_flight).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.store.ping().await?;
        Ok(())
    }
}

struct ConsumerLoop {
    store: Arc<dyn Store>,
    queue: String,
    consumer: String,
    visibility: Duration,
    poll: Duration,
    notify: Arc<Notify>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
}

impl ConsumerLoop {
    async fn run(&self, lanes: &Lanes) {
        let mut last_lag = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            // Wait for room: at most `prefetch` messages in hand.
            let first = tokio::select! {
                _ = self.stop.cancelled() => return,
                p = self.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let mut permits = vec![first];
            while let Ok(p) = self.permits.clone().try_acquire_owned() {
                permits.push(p);
            }
            // Register for wake-ups before looking, so no publish is missed.
            let notified = self.notify.notified();
            let now = now_ms();
            let claimed = self
                .store
                .q_claim(
                    &self.queue,
                    &self.consumer,
                    now,
                    now.saturating_add(self.visibility.as_millis() as i64),
                    permits.len() as i64,
                )
                .await;
            if last_lag.elapsed() >= Duration::from_secs(5) {
                last_lag = std::time::Instant::now();
                if let Ok(d) = self.store.q_depth(&self.queue, now).await {
                    metric::lag(
                        &self.queue,
                        u64::try_from(d.ready + d.in_flight).unwrap_or(0),
                    );
                }
            }
            let messages = match claimed {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(queue = %self.queue, error = %e, "cannot claim messages; retrying");
                    drop(permits);
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            };
            if messages.is_empty() {
                drop(permits);
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = notified => {}
                    _ = tokio::time::sleep(self.poll) => {}
                }
                continue;
            }
            for m in messages {
                let Some(permit) = permits.pop() else { break };
                let decoded = serde_json::from_value::<Envelope>(m.body.clone());
                match decoded {
                    Ok(mut envelope) => {
                        envelope.attempt = u32::try_from(m.attempt).unwrap_or(u32::MAX);
                        lanes.dispatch(Delivery {
                            envelope,
                            settle: Box::new(EmbeddedSettle {
                                store: self.store.clone(),
                                seq: m.seq,
                                consumer: self.consumer.clone(),
                                _permit: permit,
                            }),
                        });
                    }
                    Err(e) => {
                        let reason = format!("cannot decode the message: {e}");
                        tracing::warn!(queue = %self.queue, message_id = %m.message_id, error = %reason, "dead-lettered");
                        if let Err(e) = self
                            .store
                            .q_dead(m.seq, &self.consumer, m.attempt, &reason, now_ms())
                            .await
                        {
                            tracing::warn!(queue = %self.queue, error = %e, "could not dead-letter an undecodable message");
                        }
                        metric::dead_lettered(&self.queue);
                    }
                }
            }
        }
    }
}
