//! The durable queue every change travels through (docs/design.md, "The flow of one
//! change"), behind one contract with two implementations:
//!
//! - [`amqp::AmqpQueue`]: RabbitMQ through lapin — confirmed publishes, manual
//!   acks, retry tiers as TTL queues dead-lettering back to the work queue, a
//!   dead-letter queue per work queue, reconnection that re-publishes whatever
//!   was unconfirmed.
//! - [`embedded::EmbeddedQueue`]: the same semantics in the SQL store, for the
//!   default mode with no broker.
//!
//! Messages are [`Envelope`]s around a versioned [`Task`]. A [`Handler`] returns
//! [`Outcome::Ok`] (ack), [`Outcome::Retry`] (next retry tier, then the DLQ) or
//! [`Outcome::Permanent`] (straight to the DLQ). Messages with the same
//! partition key are handled one at a time, in arrival order, by a consumer.

pub mod amqp;
pub mod embedded;
mod lanes;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, QueueUrl};
use crate::store::Store;

pub use lanes::Delivery;

/// The stages of docs/design.md's flow; route queues are `deliver.<route>`.
pub const INGRESS: &str = "ingress";
pub const NORMALIZE: &str = "normalize";

pub fn deliver_queue(route: &str) -> String {
    format!("deliver.{route}")
}

/// Every work queue the configuration implies.
pub fn configured_queues(config: &Config) -> Vec<String> {
    let mut out = vec![INGRESS.to_owned(), NORMALIZE.to_owned()];
    out.extend(config.routes.keys().map(|r| deliver_queue(r)));
    out
}

/// What travels through the queue. New shapes get a new variant (`…V2`); old
/// variants stay decodable until no queue can hold them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Task {
    /// A raw vendor event or polled record, as received (verified and decrypted).
    #[serde(rename = "ingress.v1")]
    IngressV1 {
        connector: String,
        event_type: String,
        event_id: Option<String>,
        payload: Value,
        received_at_ms: i64,
    },
    /// One step of a `sync apply` run: write one record to one target of a route
    /// (`seq` numbers it within the run).
    #[serde(rename = "apply_step.v1")]
    ApplyStepV1 {
        route: String,
        run_id: String,
        target: String,
        seq: i64,
        step: crate::model::WireStep,
    },
}

/// A message: a task plus what the queue needs to route, order and retry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message (UUID v7); kept across retries and replays.
    pub id: String,
    /// Messages with the same key are handled in order (the canonical id).
    pub partition_key: String,
    /// 0 on first delivery; +1 per retry tier passed; reset by a DLQ replay.
    pub attempt: u32,
    pub trace_id: String,
    pub enqueued_at_ms: i64,
    pub task: Task,
}

impl Envelope {
    pub fn new(partition_key: impl Into<String>, task: Task) -> Self {
        Envelope {
            id: uuid::Uuid::now_v7().to_string(),
            partition_key: partition_key.into(),
            attempt: 0,
            trace_id: uuid::Uuid::new_v4().simple().to_string(),
            enqueued_at_ms: crate::store::now_ms(),
            task,
        }
    }
}

/// What a handler decided about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: acknowledge.
    Ok,
    /// Failed, may succeed later: next retry tier, or the DLQ after the last.
    Retry(String),
    /// Will never succeed: straight to the DLQ.
    Permanent(String),
}

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, envelope: &Envelope) -> Outcome;
}

/// A message in a dead-letter queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub queue: String,
    pub attempts: u32,
    pub last_error: String,
    pub dead_at_ms: Option<i64>,
    /// The message, when it could be decoded.
    pub envelope: Option<Envelope>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot reach RabbitMQ at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: lapin::Error,
    },
    #[error("RabbitMQ refused {op}: {source}")]
    Amqp {
        op: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("RabbitMQ did not confirm the message to {queue} (nack)")]
    Nacked { queue: String },
    #[error(
        "RabbitMQ could not route the message to {queue}: no queue is bound (declare it first)"
    )]
    Unroutable { queue: String },
    #[error("publishing to {queue} did not succeed within {waited:?}: {last_error}")]
    PublishTimeout {
        queue: String,
        waited: Duration,
        last_error: String,
    },
    #[error(
        "the delivery's channel closed before it was settled; the broker will deliver it again"
    )]
    ChannelGone,
    #[error("queue name {0:?} is too long for AMQP (at most 200 bytes)")]
    NameTooLong(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot encode or decode a message: {0}")]
    Codec(#[from] serde_json::Error),
}

/// Retry tiers: the delay before each retry; after the last, the DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub tiers: Vec<Duration>,
}

/// Where a failed message goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Retry { tier: usize, delay: Duration },
    Dead,
}

impl RetryPolicy {
    pub fn after_failure(&self, attempt: u32) -> NextStep {
        match self.tiers.get(attempt as usize) {
            Some(delay) => NextStep::Retry {
                tier: attempt as usize,
                delay: *delay,
            },
            None => NextStep::Dead,
        }
    }
}

/// Options of one consumer.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Partition lanes handled concurrently (messages of one key share a lane).
    pub lanes: usize,
    /// Messages held unacknowledged at once.
    pub prefetch: u16,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            lanes: 16,
            prefetch: 64,
        }
    }
}

/// A running consumer; [`ConsumerHandle::shutdown`] stops taking new messages,
/// finishes those in hand and returns.
pub struct ConsumerHandle {
    stop: CancellationToken,
    join: JoinHandle<()>,
}

impl ConsumerHandle {
    pub(crate) fn new(stop: CancellationToken, join: JoinHandle<()>) -> Self {
        ConsumerHandle { stop, join }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.join.await;
    }
}

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// `amqp` or `embedded`.
    fn kind(&self) -> &'static str;
    /// Declare a work queue with its retry tiers and DLQ (idempotent).
    async fn declare(&self, queue: &str) -> Result<(), QueueError>;
    /// Returns once the message is durably accepted (broker confirm / committed row).
    async fn publish(&self, queue: &str, envelope: &Envelope) -> Result<(), QueueError>;
    /// Start consuming `queue` with `handler`.
    async fn consume(
        &self,
        queue: &str,
        handler: Arc<dyn Handler>,
        options: ConsumeOptions,
    ) -> Result<ConsumerHandle, QueueError>;
    /// Dead letters of one queue, or of every declared queue.
    async fn dead_letters(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError>;
    /// Re-enqueue dead letters (one by message id, or all) with the attempt count reset.
    async fn replay(
        &self,
        queue: Option<&str>,
        id: Option<&str>,
    ) -> Result<Vec<DeadLetter>, QueueError>;
    /// Messages waiting to be handled (the consumer lag).
    async fn lag(&self, queue: &str) -> Result<u64, QueueError>;
    async fn ping(&self) -> Result<(), QueueError>;
}

/// The queue the configuration names, with every configured queue declared.
pub async fn open(config: &Config, store: Arc<dyn Store>) -> Result<Arc<dyn Queue>, QueueError> {
    let policy = RetryPolicy {
        tiers: config.queue.retry_tiers.clone(),
    };
    let queue: Arc<dyn Queue> = match &config.queue.url {
        QueueUrl::Embedded => Arc::new(embedded::EmbeddedQueue::new(store, policy)),
        QueueUrl::Amqp(url) => Arc::new(
            amqp::AmqpQueue::connect(
                url.clone(),
                amqp::AmqpOptions {
                    queue_type: config.queue.queue_type,
                    policy,
                    ..amqp::AmqpOptions::default()
                },
            )
            .await?,
        ),
    };
    for q in configured_queues(config) {
        queue.declare(&q).await?;
    }
    Ok(queue)
}

/// Replay dead letters and record who did it in the audit log.
pub async fn replay_and_audit(
    queue: &dyn Queue,
    store: &dyn Store,
    actor: &str,
    queue_name: Option<&str>,
    id: Option<&str>,
) -> Result<Vec<DeadLetter>, QueueError> {
    let replayed = queue.replay(queue_name, id).await?;
    for d in &replayed {
        store
            .audit(
                &crate::store::NewAudit {
                    actor: actor.to_owned(),
                    action: "dlq.replay".to_owned(),
                    target: format!("{}/{}", d.queue, d.id),
                    before: Some(
                        serde_json::json!({"attempts": d.attempts, "last_error": d.last_error}),
                    ),
                    after: Some(serde_json::json!({"attempts": 0})),
                },
                crate::store::now_ms(),
            )
            .await?;
    }
    Ok(replayed)
}

pub(crate) mod metric {
    pub fn published(queue: &str) {
        metrics::counter!("huitong_queue_published_total", "queue" => queue.to_owned())
            .increment(1);
    }
    pub fn delivered(queue: &str) {
        metrics::counter!("huitong_queue_delivered_total", "queue" => queue.to_owned())
            .increment(1);
    }
    pub fn acked(queue: &str) {
        metrics::counter!("huitong_queue_acked_total", "queue" => queue.to_owned()).increment(1);
    }
    pub fn retried(queue: &str, tier: usize) {
        metrics::counter!("huitong_queue_retried_total", "queue" => queue.to_owned(), "tier" => tier.to_string())
            .increment(1);
    }
    pub fn dead_lettered(queue: &str) {
        metrics::counter!("huitong_queue_dead_lettered_total", "queue" => queue.to_owned())
            .increment(1);
    }
    /// A connection to the broker made (the first one and every reconnection).
    pub fn connected() {
        metrics::counter!("huitong_queue_connections_total").increment(1);
    }
    pub fn lag(queue: &str, n: u64) {
        metrics::gauge!("huitong_queue_lag", "queue" => queue.to_owned()).set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_serialise_with_a_versioned_tag() {
        let env = Envelope::new(
            "p-1",
            Task::IngressV1 {
                connector: "hq".into(),
                event_type: "contact.user.updated_v3".into(),
                event_id: Some("ev-1".into()),
                payload: serde_json::json!({"object": {"open_id": "ou_1"}}),
                received_at_ms: 3,
            },
        );
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["task"]["type"], "ingress.v1");
        assert_eq!(json["attempt"], 0);
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
        let unknown = serde_json::json!({"id": "x", "partition_key": "k", "attempt": 0, "trace_id": "t",
            "enqueued_at_ms": 0, "task": {"type": "ingress.v9"}});
        assert!(serde_json::from_value::<Envelope>(unknown).is_err());
    }

    #[test]
    fn retry_policy_walks_the_tiers_then_dead_letters() {
        let p = RetryPolicy {
            tiers: vec![Duration::from_secs(5), Duration::from_secs(30)],
        };
        assert_eq!(
            p.after_failure(0),
            NextStep::Retry {
                tier: 0,
                delay: Duration::from_secs(5)
            }
        );
        assert_eq!(
            p.after_failure(1),
            NextStep::Retry {
                tier: 1,
                delay: Duration::from_secs(30)
            }
        );
        assert_eq!(p.after_failure(2), NextStep::Dead);
        assert_eq!(
            RetryPolicy { tiers: vec![] }.after_failure(0),
            NextStep::Dead
        );
    }
}
