//! A consumer process for the crash test: prints `got <message id>` for every
//! message it receives and never acknowledges one, so that the test can kill
//! it with SIGKILL while it holds unacknowledged messages.
//!
//! Environment: WORKER_BACKEND (`embedded` or `amqp`), WORKER_URL (database or
//! broker URL), WORKER_QUEUE, WORKER_PREFIX (amqp queue-name prefix),
//! WORKER_VISIBILITY_MS (embedded visibility timeout).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use huitong::config::DatabaseConfig;
use huitong::queue::amqp::{AmqpOptions, AmqpQueue};
use huitong::queue::embedded::EmbeddedQueue;
use huitong::queue::{ConsumeOptions, Envelope, Handler, Outcome, Queue, RetryPolicy};

struct Hang;

#[async_trait]
impl Handler for Hang {
    async fn handle(&self, e: &Envelope) -> Outcome {
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "got {}", e.id);
            let _ = out.flush();
        }
        std::future::pending::<()>().await;
        Outcome::Ok
    }
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let policy = RetryPolicy {
        tiers: vec![Duration::from_millis(100)],
    };
    let queue_name = env("WORKER_QUEUE")?;
    let queue: Arc<dyn Queue> = match env("WORKER_BACKEND")?.as_str() {
        "embedded" => {
            let store = huitong::store::open(&DatabaseConfig {
                url: env("WORKER_URL")?.into(),
                max_connections: 2,
            })
            .await?;
            let visibility: u64 = env("WORKER_VISIBILITY_MS")?.parse()?;
            Arc::new(
                EmbeddedQueue::new(store, policy)
                    .with_visibility(Duration::from_millis(visibility)),
            )
        }
        "amqp" => Arc::new(
            AmqpQueue::connect(
                env("WORKER_URL")?.into(),
                AmqpOptions {
                    policy,
                    exchange: "huitong-test".into(),
                    prefix: env("WORKER_PREFIX")?,
                    ..AmqpOptions::default()
                },
            )
            .await?,
        ),
        other => anyhow::bail!("unknown WORKER_BACKEND {other}"),
    };
    let _consumer = queue
        .consume(
            &queue_name,
            Arc::new(Hang),
            ConsumeOptions {
                lanes: 4,
                prefetch: 8,
            },
        )
        .await?;
    std::future::pending::<()>().await;
    Ok(())
}
