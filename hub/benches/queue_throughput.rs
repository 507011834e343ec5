//! Queue throughput: raw lapin (publish with confirms + consume with acks) vs
//! the same volume through huitong's queue contract, measured in one run and
//! reported as a ratio. Not a test: run it with
//!
//! ```sh
//! cargo bench -p huitong --bench queue_throughput            # 20,000 messages
//! BENCH_MESSAGES=50000 BENCH_QUEUE_TYPE=quorum cargo bench -p huitong --bench queue_throughput
//! ```
//!
//! Needs RabbitMQ (`HUITONG_TEST_AMQP_URL`, default amqp://guest:guest@127.0.0.1:5672/%2f).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use huitong::config::QueueType;
use huitong::queue::amqp::{AmqpOptions, AmqpQueue};
use huitong::queue::{ConsumeOptions, Envelope, Handler, Outcome, Queue, RetryPolicy, Task};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Notify;

const PAYLOAD: usize = 1024;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Config {
    url: String,
    messages: usize,
    publishers: usize,
    prefetch: u16,
    queue_type: QueueType,
}

async fn raw_lapin(c: &Config) -> anyhow::Result<f64> {
    let conn = Connection::connect(&c.url, ConnectionProperties::default()).await?;
    let name = format!("bench-raw-{}", uuid::Uuid::new_v4().simple());
    let setup = conn.create_channel().await?;
    let mut args = FieldTable::default();
    let qt = if c.queue_type == QueueType::Quorum {
        "quorum"
    } else {
        "classic"
    };
    args.insert("x-queue-type".into(), AMQPValue::LongString(qt.into()));
    setup
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;

    let consumed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let consumer_channel = conn.create_channel().await?;
    consumer_channel
        .basic_qos(c.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            name.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let total = c.messages;
    let (counter, notify) = (consumed.clone(), done.clone());
    let consume_task = tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            // Acks stay in flight: awaiting each in turn costs ~40 % of throughput.
            tokio::spawn(async move {
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            });
            if counter.fetch_add(1, Ordering::Relaxed) + 1 == total {
                notify.notify_one();
                break;
            }
        }
    });

    let body = vec![b'x'; PAYLOAD];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..c.publishers {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let (name, body) = (name.clone(), body.clone());
        let n = c.messages / c.publishers + usize::from(p < c.messages % c.publishers);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        name.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?;
                match confirm.await? {
                    Confirmation::Ack(None) => {}
                    other => anyhow::bail!("unexpected confirmation {other:?}"),
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    done.notified().await;
    let elapsed = start.elapsed();
    consume_task.await?;
    setup
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await?;
    Ok(c.messages as f64 / elapsed.as_secs_f64())
}

struct Count {
    n: AtomicUsize,
    total: usize,
    done: Notify,
}

#[async_trait]
impl Handler for Count {
    async fn handle(&self, _: &Envelope) -> Outcome {
        if self.n.fetch_add(1, Ordering::Relaxed) + 1 == self.total {
            self.done.notify_one();
        }
        Outcome::Ok
    }
}

async fn huitong_queue(c: &Config) -> anyhow::Result<f64> {
    let queue = Arc::new(
        AmqpQueue::connect(
            c.url.clone().into(),
            AmqpOptions {
                queue_type: c.queue_type,
                policy: RetryPolicy {
                    tiers: vec![Duration::from_secs(5)],
                },
                exchange: "huitong-bench".into(),
                prefix: format!("bench-{}.", uuid::Uuid::new_v4().simple()),
                publisher_channels: c.publishers,
                ..AmqpOptions::default()
            },
        )
        .await?,
    );
    queue.declare("work").await?;
    let counter = Arc::new(Count {
        n: AtomicUsize::new(0),
        total: c.messages,
        done: Notify::new(),
    });
    let consumer = queue
        .consume(
            "work",
            counter.clone(),
            ConsumeOptions {
                lanes: 16,
                prefetch: c.prefetch,
            },
        )
        .await?;
    let payload = "x".repeat(PAYLOAD);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..c.publishers {
        let queue = queue.clone();
        let payload = payload.clone();
        let n = c.messages / c.publishers + usize::from(p < c.messages % c.publishers);
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                let m = Envelope::new(
                    format!("key-{}", i % 64),
                    Task::IngressV1 {
                        connector: "bench".into(),
                        event_type: "bench".into(),
                        event_id: None,
                        payload: serde_json::Value::String(payload.clone()),
                        received_at_ms: 0,
                    },
                );
                queue.publish("work", &m).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    counter.done.notified().await;
    let elapsed = start.elapsed();
    consumer.shutdown().await;
    queue.delete_topology("work").await?;
    Ok(c.messages as f64 / elapsed.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let c = Config {
        url: std::env::var("HUITONG_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        messages: env_or("BENCH_MESSAGES", 20_000),
        publishers: env_or("BENCH_PUBLISHERS", 8),
        prefetch: env_or("BENCH_PREFETCH", 256),
        queue_type: if std::env::var("BENCH_QUEUE_TYPE").as_deref() == Ok("quorum") {
            QueueType::Quorum
        } else {
            QueueType::Classic
        },
    };
    println!(
        "queue throughput: {} messages of {PAYLOAD} B, {} publishers, prefetch {}, {:?} queues",
        c.messages, c.publishers, c.prefetch, c.queue_type
    );
    // Alternate the two, twice, and keep each one's best run.
    let (mut raw, mut ours) = (0f64, 0f64);
    for round in 1..=2 {
        let r = raw_lapin(&c).await?;
        let h = huitong_queue(&c).await?;
        println!("round {round}: raw lapin {r:>8.0} msg/s   huitong {h:>8.0} msg/s");
        raw = raw.max(r);
        ours = ours.max(h);
    }
    println!(
        "best:    raw lapin {raw:>8.0} msg/s   huitong {ours:>8.0} msg/s   ratio {:.0} %",
        100.0 * ours / raw
    );
    Ok(())
}
