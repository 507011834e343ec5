//! A consumer process killed with SIGKILL before acking: its unacknowledged
//! messages are delivered to another consumer. Embedded queue and RabbitMQ.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use huitong::config::DatabaseConfig;
use huitong::queue::amqp::{AmqpOptions, AmqpQueue};
use huitong::queue::embedded::EmbeddedQueue;
use huitong::queue::{ConsumeOptions, Envelope, Handler, Outcome, Queue, RetryPolicy, Task};
use huitong_tests::service_url;

#[derive(Default)]
struct Seen(Mutex<HashSet<String>>);

#[async_trait]
impl Handler for Seen {
    async fn handle(&self, e: &Envelope) -> Outcome {
        self.0.lock().unwrap().insert(e.id.clone());
        Outcome::Ok
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        tiers: vec![Duration::from_millis(100)],
    }
}

fn message(i: usize) -> Envelope {
    Envelope::new(
        format!("key-{}", i % 3),
        Task::IngressV1 {
            connector: "hq".into(),
            event_type: "test".into(),
            event_id: Some(format!("p-{i}")),
            payload: serde_json::json!({"n": i}),
            received_at_ms: 1,
        },
    )
}

/// Publish 12 messages, let a worker process take some without acking, kill it,
/// and check a second consumer handles all 12.
async fn crash_story(queue: Arc<dyn Queue>, name: &str, worker_env: Vec<(&str, String)>) {
    queue.declare(name).await.unwrap();
    let mut ids = HashSet::new();
    for i in 0..12 {
        let m = message(i);
        ids.insert(m.id.clone());
        queue.publish(name, &m).await.unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_queue_worker"))
        .envs(worker_env)
        .env("WORKER_QUEUE", name)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(id) = line.strip_prefix("got ") {
                let _ = tx.send(id.to_owned());
            }
        }
    });
    let mut held = HashSet::new();
    held.insert(
        rx.recv_timeout(Duration::from_secs(60))
            .expect("worker received nothing"),
    );
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(id) = rx.try_recv() {
        held.insert(id);
    }
    assert!(held.iter().all(|h| ids.contains(h)));
    // SIGKILL: no chance to ack, nack or close anything.
    child.kill().unwrap();
    child.wait().unwrap();

    let seen = Arc::new(Seen::default());
    let consumer = queue
        .consume(
            name,
            seen.clone(),
            ConsumeOptions {
                lanes: 4,
                prefetch: 16,
            },
        )
        .await
        .unwrap();
    for _ in 0..400 {
        if seen.0.lock().unwrap().len() == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen_ids = seen.0.lock().unwrap().clone();
    assert_eq!(
        seen_ids,
        ids,
        "every message, including the {} the killed worker held, is handled",
        held.len()
    );
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_consumer_messages_are_redelivered_embedded() {
    let dir = std::env::temp_dir().join(format!("huitong-crash-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/q.db", dir.display());
    let store = huitong::store::open(&DatabaseConfig {
        url: url.clone().into(),
        max_connections: 2,
    })
    .await
    .unwrap();
    let queue =
        Arc::new(EmbeddedQueue::new(store, policy()).with_poll_interval(Duration::from_millis(50)));
    crash_story(
        queue,
        "work",
        vec![
            ("WORKER_BACKEND", "embedded".into()),
            ("WORKER_URL", url),
            ("WORKER_VISIBILITY_MS", "1500".into()),
        ],
    )
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_consumer_messages_are_redelivered_rabbitmq() {
    let Some(url) = service_url(
        "HUITONG_TEST_AMQP_URL",
        "killed_consumer_messages_are_redelivered_rabbitmq",
    ) else {
        return;
    };
    let prefix = format!("test-{}.", uuid::Uuid::new_v4().simple());
    let queue = Arc::new(
        AmqpQueue::connect(
            url.clone().into(),
            AmqpOptions {
                policy: policy(),
                exchange: "huitong-test".into(),
                prefix: prefix.clone(),
                ..AmqpOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    crash_story(
        queue.clone(),
        "work",
        vec![
            ("WORKER_BACKEND", "amqp".into()),
            ("WORKER_URL", url),
            ("WORKER_PREFIX", prefix),
        ],
    )
    .await;
    queue.delete_topology("work").await.unwrap();
}
