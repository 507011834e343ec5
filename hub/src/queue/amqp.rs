//! RabbitMQ implementation of the queue contract (lapin).
//!
//! Topology per work queue `q` (names prefixed `huitong.`), all durable and
//! bound on the `huitong` topic exchange under their own name:
//! - `huitong.q`: the work queue (quorum by default, classic by switch);
//! - `huitong.q.retry.<delay>`: one per retry tier, `x-message-ttl = delay`,
//!   dead-lettering back to `huitong.q` (at-least-once for quorum queues);
//! - `huitong.q.dlq`: the dead-letter queue, messages carrying `x-huitong-*`
//!   headers (queue, attempts, last error, time).
//!
//! Publishing: a small pool of confirm-mode channels, each used by one
//! publisher at a time (lapin can mismatch confirms when tasks publish
//! concurrently on one channel); every publish is `mandatory` and waits for
//! the broker's confirm. A nack or a lost connection is retried on a fresh
//! connection until `publish_timeout`; an unroutable message is an error.
//!
//! Consuming: manual acks, prefetch, partition lanes; when the connection
//! drops the consumer reconnects with back-off, and the broker redelivers
//! whatever was unacknowledged.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use super::lanes::{Delivery, Lanes, Settle};
use super::{
    ConsumeOptions, ConsumerHandle, DeadLetter, Envelope, Handler, Queue, QueueError, RetryPolicy,
    metric,
};
use crate::config::{QueueType, redact_url};
use crate::store::now_ms;

const H_QUEUE: &str = "x-huitong-queue";
const H_ATTEMPTS: &str = "x-huitong-attempts";
const H_ERROR: &str = "x-huitong-last-error";
const H_DEAD_AT: &str = "x-huitong-dead-at-ms";

#[derive(Debug, Clone)]
pub struct AmqpOptions {
    pub queue_type: QueueType,
    pub policy: RetryPolicy,
    /// Confirm-mode channels publishes are spread over.
    pub publisher_channels: usize,
    /// How long a publish keeps trying through reconnections before failing.
    pub publish_timeout: Duration,
    pub exchange: String,
    /// Prefix of every queue name on the broker.
    pub prefix: String,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            queue_type: QueueType::Quorum,
            policy: RetryPolicy {
                tiers: vec![
                    Duration::from_secs(5),
                    Duration::from_secs(30),
                    Duration::from_secs(300),
                    Duration::from_secs(1800),
                ],
            },
            publisher_channels: 4,
            publish_timeout: Duration::from_secs(120),
            exchange: "huitong".to_owned(),
            prefix: "huitong.".to_owned(),
        }
    }
}

pub struct AmqpQueue {
    inner: Arc<Inner>,
}

struct Inner {
    url: SecretString,
    options: AmqpOptions,
    current: RwLock<Option<Arc<Link>>>,
    reconnect: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    declared: Mutex<BTreeSet<String>>,
    next_channel: AtomicUsize,
}

/// One live connection with its publisher channels.
struct Link {
    generation: u64,
    connection: Connection,
    publishers: Vec<tokio::sync::Mutex<Channel>>,
}

enum Attempt {
    /// Will not get better by retrying (e.g. unroutable).
    Fatal(QueueError),
    /// The connection or the broker failed; retry on a new connection.
    Transient(QueueError, u64),
}

fn short(s: &str) -> Result<ShortString, QueueError> {
    ShortString::try_new(s).map_err(|_| QueueError::NameTooLong(s.to_owned()))
}

fn amqp(op: &'static str) -> impl FnOnce(lapin::Error) -> QueueError {
    move |source| QueueError::Amqp { op, source }
}

fn tier_name(delay: Duration) -> String {
    let ms = delay.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl Inner {
    fn work_name(&self, queue: &str) -> String {
        format!("{}{queue}", self.options.prefix)
    }
    fn retry_name(&self, queue: &str, delay: Duration) -> String {
        format!("{}{queue}.retry.{}", self.options.prefix, tier_name(delay))
    }
    fn dlq_name(&self, queue: &str) -> String {
        format!("{}{queue}.dlq", self.options.prefix)
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        let kind = match self.options.queue_type {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        };
        args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        args
    }

    async fn declare_on(&self, channel: &Channel, queue: &str) -> Result<(), QueueError> {
        let exchange = short(&self.options.exchange)?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let work = self.work_name(queue);
        let mut names = vec![(work.clone(), self.queue_args())];
        for delay in &self.options.policy.tiers {
            let mut args = self.queue_args();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(delay.as_millis() as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.options.exchange.as_str().into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(work.as_str().into()),
            );
            if self.options.queue_type == QueueType::Quorum {
                args.insert(
                    "x-dead-letter-strategy".into(),
                    AMQPValue::LongString("at-least-once".into()),
                );
                args.insert(
                    "x-overflow".into(),
                    AMQPValue::LongString("reject-publish".into()),
                );
            }
            names.push((self.retry_name(queue, *delay), args));
        }
        names.push((self.dlq_name(queue), self.queue_args()));
        for (name, args) in names {
            let n = short(&name)?;
            channel
                .queue_declare(n.clone(), durable, args)
                .await
                .map_err(amqp("queue.declare"))?;
            channel
                .queue_bind(
                    n.clone(),
                    exchange.clone(),
                    n,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp("queue.bind"))?;
        }
        Ok(())
    }

    async fn connect_once(&self) -> Result<Arc<Link>, QueueError> {
        let url = self.url.expose_secret();
        let props = ConnectionProperties::default().with_connection_name("huitong".into());
        let connection =
            Connection::connect(url, props)
                .await
                .map_err(|source| QueueError::Connect {
                    url: redact_url(url),
                    source,
                })?;
        let setup = connection
            .create_channel()
            .await
            .map_err(amqp("channel.open"))?;
        setup
            .exchange_declare(
                short(&self.options.exchange)?,
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp("exchange.declare"))?;
        let declared: Vec<String> = self
            .declared
            .lock()
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        for q in &declared {
            self.declare_on(&setup, q).await?;
        }
        let _ = setup.close(200, "topology declared".into()).await;
        let mut publishers = Vec::new();
        for _ in 0..self.options.publisher_channels.max(1) {
            let ch = connection
                .create_channel()
                .await
                .map_err(amqp("channel.open"))?;
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(amqp("confirm.select"))?;
            publishers.push(tokio::sync::Mutex::new(ch));
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        metric::connected();
        tracing::info!(url = %redact_url(url), generation, "connected to RabbitMQ");
        Ok(Arc::new(Link {
            generation,
            connection,
            publishers,
        }))
    }

    fn live(&self) -> Option<Arc<Link>> {
        let guard = self.current.read().ok()?;
        guard
            .as_ref()
            .filter(|l| l.connection.status().connected())
            .cloned()
    }

    /// The live connection, reconnecting (one attempt, one caller at a time) if needed.
    async fn link(&self) -> Result<Arc<Link>, QueueError> {
        if let Some(l) = self.live() {
            return Ok(l);
        }
        let _one = self.reconnect.lock().await;
        if let Some(l) = self.live() {
            return Ok(l);
        }
        let link = self.connect_once().await?;
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(link.clone());
        }
        Ok(link)
    }

    fn invalidate(&self, generation: u64) {
        if let Ok(mut cur) = self.current.write()
            && cur.as_ref().is_some_and(|l| l.generation == generation)
        {
            *cur = None;
        }
    }

    async fn try_publish(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), Attempt> {
        let link = self.link().await.map_err(|e| Attempt::Transient(e, 0))?;
        let generation = link.generation;
        let exchange = short(&self.options.exchange).map_err(Attempt::Fatal)?;
        let key = short(routing_key).map_err(Attempt::Fatal)?;
        let i = self.next_channel.fetch_add(1, Ordering::Relaxed) % link.publishers.len();
        let confirm = {
            let channel = link.publishers[i].lock().await;
            channel
                .basic_publish(
                    exchange,
                    key,
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    properties,
                )
                .await
                .map_err(|e| Attempt::Transient(amqp("basic.publish")(e), generation))?
        };
        match confirm.await {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(Confirmation::Ack(Some(_))) => Err(Attempt::Fatal(QueueError::Unroutable {
                queue: routing_key.to_owned(),
            })),
            Ok(Confirmation::Nack(_)) => Err(Attempt::Transient(
                QueueError::Nacked {
                    queue: routing_key.to_owned(),
                },
                generation,
            )),
            Ok(Confirmation::NotRequested) => Err(Attempt::Transient(
                QueueError::Nacked {
                    queue: routing_key.to_owned(),
                },
                generation,
            )),
            Err(e) => Err(Attempt::Transient(amqp("publisher confirm")(e), generation)),
        }
    }

    /// Publish and wait for the confirm, across reconnections, until `publish_timeout`.
    async fn publish_raw(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            match self
                .try_publish(routing_key, body, properties.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Transient(e, generation)) => {
                    if generation != 0 {
                        self.invalidate(generation);
                    }
                    if start.elapsed() >= self.options.publish_timeout {
                        return Err(QueueError::PublishTimeout {
                            queue: routing_key.to_owned(),
                            waited: start.elapsed(),
                            last_error: e.to_string(),
                        });
                    }
                    tracing::debug!(queue = routing_key, error = %e, "publish failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    fn properties(envelope: &Envelope, headers: Option<FieldTable>) -> BasicProperties {
        let mut p = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_timestamp(u64::try_from(envelope.enqueued_at_ms / 1000).unwrap_or(0));
        if let Ok(id) = ShortString::try_new(envelope.id.as_str()) {
            p = p.with_message_id(id);
        }
        if let Ok(t) = ShortString::try_new(envelope.trace_id.as_str()) {
            p = p.with_correlation_id(t);
        }
        if let Some(h) = headers {
            p = p.with_headers(h);
        }
        p
    }

    fn dead_headers(queue: &str, attempts: u32, error: &str) -> FieldTable {
        let mut h = FieldTable::default();
        h.insert(H_QUEUE.into(), AMQPValue::LongString(queue.into()));
        h.insert(
            H_ATTEMPTS.into(),
            AMQPValue::LongLongInt(i64::from(attempts)),
        );
        h.insert(
            H_ERROR.into(),
            AMQPValue::LongString(LongString::from(error.as_bytes().to_vec())),
        );
        h.insert(H_DEAD_AT.into(), AMQPValue::LongLongInt(now_ms()));
        h
    }

    async fn publish_dead(
        &self,
        queue: &str,
        envelope: &Envelope,
        error: &str,
    ) -> Result<(), QueueError> {
        let body = serde_json::to_vec(envelope)?;
        let headers = Self::dead_headers(queue, envelope.attempt.saturating_add(1), error);
        self.publish_raw(
            &self.dlq_name(queue),
            &body,
            Self::properties(envelope, Some(headers)),
        )
        .await
    }
}

fn header_str(headers: &Option<FieldTable>, key: &str) -> Option<String> {
    match headers.as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn header_int(headers: &Option<FieldTable>, key: &str) -> Option<i64> {
    match headers.as_ref()?.inner().get(key)? {
        AMQPValue::LongLongInt(i) => Some(*i),
        AMQPValue::LongInt(i) => Some(i64::from(*i)),
        AMQPValue::LongUInt(i) => Some(i64::from(*i)),
        _ => None,
    }
}

impl AmqpQueue {
    /// Connect (failing fast with the broker's error if it is unreachable).
    pub async fn connect(url: SecretString, options: AmqpOptions) -> Result<Self, QueueError> {
        let inner = Arc::new(Inner {
            url,
            options,
            current: RwLock::new(None),
            reconnect: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            declared: Mutex::new(BTreeSet::new()),
            next_channel: AtomicUsize::new(0),
        });
        inner.link().await?;
        Ok(AmqpQueue { inner })
    }

    /// Connections to the broker made so far (the first one included): the generation of the
    /// newest connection. More than 1 means the queue reconnected at least once. Also counted
    /// process-wide as `huitong_queue_connections_total`.
    pub fn connections(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// Delete a work queue with its retry tiers and DLQ from the broker (messages included).
    pub async fn delete_topology(&self, queue: &str) -> Result<(), QueueError> {
        let link = self.inner.link().await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(amqp("channel.open"))?;
        let mut names = vec![self.inner.work_name(queue), self.inner.dlq_name(queue)];
        names.extend(
            self.inner
                .options
                .policy
                .tiers
                .iter()
                .map(|d| self.inner.retry_name(queue, *d)),
        );
        for n in names {
            channel
                .queue_delete(short(&n)?, lapin::options::QueueDeleteOptions::default())
                .await
                .map_err(amqp("queue.delete"))?;
        }
        if let Ok(mut d) = self.inner.declared.lock() {
            d.remove(queue);
        }
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }

    fn declared(&self, queue: Option<&str>) -> Vec<String> {
        match queue {
            Some(q) => vec![q.to_owned()],
            None => self
                .inner
                .declared
                .lock()
                .map(|d| d.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    fn dead_letter(queue: &str, delivery: &lapin::message::Delivery) -> DeadLetter {
        let headers = delivery.properties.headers();
        let envelope = serde_json::from_slice::<Envelope>(&delivery.data).ok();
        DeadLetter {
            id: envelope
                .as_ref()
                .map(|e| e.id.clone())
                .or_else(|| {
                    delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|m| m.as_str().to_owned())
                })
                .unwrap_or_default(),
            queue: header_str(headers, H_QUEUE).unwrap_or_else(|| queue.to_owned()),
            attempts: header_int(headers, H_ATTEMPTS)
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(0),
            last_error: header_str(headers, H_ERROR).unwrap_or_default(),
            dead_at_ms: header_int(headers, H_DEAD_AT),
            envelope,
        }
    }
}

struct AmqpSettle {
    inner: Arc<Inner>,
    queue: String,
    acker: lapin::Acker,
}

impl AmqpSettle {
    /// The delivery's channel is gone: the broker redelivers the message, so
    /// settling it here (or re-publishing it) would only duplicate it.
    fn check_usable(&self) -> Result<(), QueueError> {
        if self.acker.usable() {
            Ok(())
        } else {
            Err(QueueError::ChannelGone)
        }
    }

    async fn ack_now(&self) -> Result<(), QueueError> {
        self.check_usable()?;
        // An ack on a channel that dies meanwhile may never be answered.
        match tokio::time::timeout(
            Duration::from_secs(10),
            self.acker.ack(BasicAckOptions::default()),
        )
        .await
        {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(QueueError::ChannelGone),
            Ok(Err(e)) => Err(amqp("basic.ack")(e)),
            Err(_) => Err(QueueError::ChannelGone),
        }
    }
}

#[async_trait]
impl Settle for AmqpSettle {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        self.ack_now().await
    }

    async fn retry(
        self: Box<Self>,
        next: &Envelope,
        _tier: usize,
        delay: Duration,
        _error: &str,
    ) -> Result<(), QueueError> {
        self.check_usable()?;
        let body = serde_json::to_vec(next)?;
        let name = self.inner.retry_name(&self.queue, delay);
        self.inner
            .publish_raw(&name, &body, Inner::properties(next, None))
            .await?;
        self.ack_now().await
    }

    async fn dead(self: Box<Self>, envelope: &Envelope, error: &str) -> Result<(), QueueError> {
        self.inner
            .publish_dead(&self.queue, envelope, error)
            .await?;
        self.ack_now().await
    }
}

#[async_trait]
impl Queue for AmqpQueue {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    async fn declare(&self, queue: &str) -> Result<(), QueueError> {
        short(
            &self
                .inner
                .retry_name(queue, Duration::from_millis(123_456_789)),
        )?;
        if let Ok(mut d) = self.inner.declared.lock() {
            d.insert(queue.to_owned());
        }
        let link = self.inner.link().await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(amqp("channel.open"))?;
        let result = self.inner.declare_on(&channel, queue).await;
        let _ = channel.close(200, "declared".into()).await;
        result
    }

    async fn publish(&self, queue: &str, envelope: &Envelope) -> Result<(), QueueError> {
        let body = serde_json::to_vec(envelope)?;
        self.inner
            .publish_raw(
                &self.inner.work_name(queue),
                &body,
                Inner::properties(envelope, None),
            )
            .await?;
        metric::published(queue);
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
        let inner = self.inner.clone();
        let queue = queue.to_owned();
        let lanes = Lanes::start(&queue, options.lanes, handler, inner.options.policy.clone());
        let token = stop.clone();
        let join = tokio::spawn(async move {
            consume_loop(inner, queue, options.prefetch, &lanes, token).await;
            lanes.drain().await;
        });
        Ok(ConsumerHandle::new(stop, join))
    }

    async fn dead_letters(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let link = self.inner.link().await?;
        let mut out = Vec::new();
        for q in self.declared(queue) {
            // Take every message unacknowledged, then close the channel: the
            // broker puts them all back. Nothing is removed by listing.
            let channel = link
                .connection
                .create_channel()
                .await
                .map_err(amqp("channel.open"))?;
            let name = short(&self.inner.dlq_name(&q))?;
            while out.len() < limit {
                match channel
                    .basic_get(name.clone(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(amqp("basic.get"))?
                {
                    Some(m) => out.push(Self::dead_letter(&q, &m.delivery)),
                    None => break,
                }
            }
            let _ = channel.close(200, "listed".into()).await;
        }
        Ok(out)
    }

    async fn replay(
        &self,
        queue: Option<&str>,
        id: Option<&str>,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let link = self.inner.link().await?;
        let mut out = Vec::new();
        for q in self.declared(queue) {
            let channel = link
                .connection
                .create_channel()
                .await
                .map_err(amqp("channel.open"))?;
            let name = short(&self.inner.dlq_name(&q))?;
            let mut taken = Vec::new();
            while let Some(m) = channel
                .basic_get(name.clone(), BasicGetOptions { no_ack: false })
                .await
                .map_err(amqp("basic.get"))?
            {
                taken.push(m.delivery);
            }
            for d in &taken {
                let letter = Self::dead_letter(&q, d);
                if id.is_some_and(|id| letter.id != id) {
                    continue;
                }
                let Some(mut envelope) = letter.envelope.clone() else {
                    tracing::warn!(queue = %q, message_id = %letter.id, "undecodable dead letter left in the DLQ");
                    continue;
                };
                envelope.attempt = 0;
                self.publish(&letter.queue, &envelope).await?;
                d.acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(amqp("basic.ack"))?;
                out.push(letter);
            }
            let _ = channel.close(200, "replayed".into()).await;
        }
        Ok(out)
    }

    async fn lag(&self, queue: &str) -> Result<u64, QueueError> {
        let link = self.inner.link().await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(amqp("channel.open"))?;
        let q = channel
            .queue_declare(
                short(&self.inner.work_name(queue))?,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp("queue.declare passive"))?;
        let _ = channel.close(200, "lag".into()).await;
        Ok(u64::from(q.message_count()))
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.inner.link().await.map(|_| ())
    }
}

async fn consume_loop(
    inner: Arc<Inner>,
    queue: String,
    prefetch: u16,
    lanes: &Lanes,
    stop: CancellationToken,
) {
    let work = inner.work_name(&queue);
    let mut delay = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let session = async {
            let link = inner.link().await?;
            let channel = link
                .connection
                .create_channel()
                .await
                .map_err(amqp("channel.open"))?;
            channel
                .basic_qos(prefetch.max(1), BasicQosOptions::default())
                .await
                .map_err(amqp("basic.qos"))?;
            let tag = format!("huitong-{}", uuid::Uuid::new_v4().simple());
            let consumer = channel
                .basic_consume(
                    short(&work)?,
                    short(&tag)?,
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp("basic.consume"))?;
            Ok::<_, QueueError>((link, channel, consumer))
        };
        let (link, channel, mut consumer) = tokio::select! {
            _ = stop.cancelled() => return,
            s = session => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, retry_in_ms = delay.as_millis() as u64,
                        "cannot consume; reconnecting");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        delay = Duration::from_millis(100);
        tracing::info!(queue = %queue, "consuming");
        // lapin's consumer stream does not always end when the connection
        // dies, so the connection is also checked every second.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    // Messages already dispatched are settled by drain();
                    // the channel is closed by the drop of `channel` afterwards.
                    return;
                }
                _ = tick.tick() => {
                    ticks += 1;
                    if !link.connection.status().connected() || !channel.status().connected() {
                        tracing::warn!(queue = %queue, "connection to RabbitMQ lost; reconnecting");
                        inner.invalidate(link.generation);
                        break;
                    }
                    if ticks.is_multiple_of(5)
                        && let Ok(q) = channel.queue_declare(
                            work.as_str().into(),
                            QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                            FieldTable::default(),
                        ).await
                    {
                        metric::lag(&queue, u64::from(q.message_count()));
                    }
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => dispatch(&inner, &queue, lanes, delivery).await,
                    Some(Err(e)) => {
                        tracing::warn!(queue = %queue, error = %e, "consumer lost its channel; reconnecting");
                        inner.invalidate(link.generation);
                        break;
                    }
                    None => {
                        tracing::warn!(queue = %queue, "consumer stream ended; reconnecting");
                        inner.invalidate(link.generation);
                        break;
                    }
                },
            }
        }
    }
}

async fn dispatch(
    inner: &Arc<Inner>,
    queue: &str,
    lanes: &Lanes,
    delivery: lapin::message::Delivery,
) {
    match serde_json::from_slice::<Envelope>(&delivery.data) {
        Ok(envelope) => lanes.dispatch(Delivery {
            envelope,
            settle: Box::new(AmqpSettle {
                inner: inner.clone(),
                queue: queue.to_owned(),
                acker: delivery.acker,
            }),
        }),
        Err(e) => {
            let reason = format!("cannot decode the message: {e}");
            tracing::warn!(queue = %queue, error = %reason, "dead-lettering an undecodable message");
            let headers = Inner::dead_headers(queue, 1, &reason);
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(headers);
            match inner
                .publish_raw(&inner.dlq_name(queue), &delivery.data, props)
                .await
            {
                Ok(()) => {
                    metric::dead_lettered(queue);
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                }
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "could not dead-letter; it will be redelivered")
                }
            }
        }
    }
}
