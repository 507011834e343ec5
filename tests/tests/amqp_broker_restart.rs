//! While 5,000 messages flow, the RabbitMQ application is stopped and started
//! (`rabbitmqctl stop_app` / `start_app`); afterwards every published message
//! was handled at least once (counted by id). The outage really fell mid-flow (fewer than
//! all messages were published, and fewer than all handled, when the broker went down) and
//! the queue really reconnected (a second connection). Kept alone in its own test binary
//! because it takes the shared broker down.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use huitong::queue::amqp::{AmqpOptions, AmqpQueue};
use huitong::queue::{ConsumeOptions, Envelope, Handler, Outcome, Queue, RetryPolicy, Task};
use huitong_tests::service_url;

#[derive(Default)]
struct Counter(Mutex<HashMap<String, u32>>);

#[async_trait]
impl Handler for Counter {
    async fn handle(&self, e: &Envelope) -> Outcome {
        *self.0.lock().unwrap().entry(e.id.clone()).or_default() += 1;
        Outcome::Ok
    }
}

/// `huitong_queue_connections_total` as the process's recorder has it now.
fn connections_metric() -> u64 {
    let text = huitong::telemetry::metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix("huitong_queue_connections_total "))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

fn rabbitmqctl(arg: &str) {
    let out = Command::new("rabbitmqctl")
        .arg(arg)
        .output()
        .expect("rabbitmqctl is needed for this test");
    assert!(
        out.status.success(),
        "rabbitmqctl {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing() {
    let Some(url) = service_url("HUITONG_TEST_AMQP_URL", "broker_restart_loses_nothing") else {
        return;
    };
    huitong::telemetry::init_logging("huitong=info,lapin=warn", huitong::config::LogFormat::Human);
    // The recorder is installed before the first connection, so every one is counted.
    huitong::telemetry::metrics();
    const TOTAL: usize = 5_000;
    const PUBLISHERS: usize = 8;
    const PACE: Duration = Duration::from_millis(20);
    let queue = Arc::new(
        AmqpQueue::connect(
            url.into(),
            AmqpOptions {
                policy: RetryPolicy {
                    tiers: vec![Duration::from_millis(200)],
                },
                exchange: "huitong-test".into(),
                prefix: format!("test-{}.", uuid::Uuid::new_v4().simple()),
                publish_timeout: Duration::from_secs(180),
                ..AmqpOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    queue.declare("flow").await.unwrap();
    let counter = Arc::new(Counter::default());
    let consumer = queue
        .consume(
            "flow",
            counter.clone(),
            ConsumeOptions {
                lanes: 16,
                prefetch: 200,
            },
        )
        .await
        .unwrap();

    let published = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let queue = queue.clone();
        let published = published.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..TOTAL / PUBLISHERS {
                let m = Envelope::new(
                    format!("p{p}"),
                    Task::IngressV1 {
                        connector: "hq".into(),
                        event_type: "test".into(),
                        event_id: Some(format!("p{p}-{i}")),
                        payload: serde_json::json!({"n": i}),
                        received_at_ms: 1,
                    },
                );
                queue
                    .publish("flow", &m)
                    .await
                    .expect("publish survives the restart");
                ids.push(m.id);
                published.fetch_add(1, Ordering::Relaxed);
                // Paced (≤ 400 messages/s in all, so the flow lasts ≥ 12 s): `rabbitmqctl
                // stop_app` takes seconds to return, and an unpaced flow is over by then.
                tokio::time::sleep(PACE).await;
            }
            ids
        }));
    }

    // Restart the broker application mid-flow.
    while published.load(Ordering::Relaxed) < TOTAL / 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(queue.connections(), 1, "one connection before the outage");
    let connections_before = connections_metric();
    assert_eq!(connections_before, 1);
    // Read once the broker is down (`stop_app` returned): what was published and handled
    // by then.
    let (at_stop, handled_at_stop) = {
        let published = published.clone();
        let counter = counter.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl("stop_app");
            let down = (
                published.load(Ordering::Relaxed),
                counter.0.lock().unwrap().len(),
            );
            std::thread::sleep(Duration::from_secs(2));
            rabbitmqctl("start_app");
            down
        })
        .await
        .unwrap()
    };
    let at_start = published.load(Ordering::Relaxed);

    let mut all = HashSet::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), TOTAL);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let handled = counter
            .0
            .lock()
            .unwrap()
            .keys()
            .filter(|k| all.contains(*k))
            .count();
        if handled == TOTAL || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = counter.0.lock().unwrap().clone();
    let missing: Vec<&String> = all.iter().filter(|id| !counts.contains_key(*id)).collect();
    let duplicates = counts.values().filter(|c| **c > 1).count();
    println!(
        "published {TOTAL} (stop at {at_stop}, start at {at_start}); handled {handled_at_stop} when the broker went down, \
         {} distinct in all, {duplicates} more than once, {} missing; {} connections",
        counts.len(),
        missing.len(),
        queue.connections()
    );
    assert!(
        missing.is_empty(),
        "{} messages missing after the broker restart",
        missing.len()
    );
    // The outage fell mid-flow: when the broker went down, messages were still to be
    // published and to be handled…
    assert!(
        at_stop < TOTAL,
        "the broker went down while messages were still being published ({at_stop} of {TOTAL})"
    );
    assert!(
        handled_at_stop < TOTAL,
        "the broker went down while messages were still to be handled ({handled_at_stop} of {TOTAL})"
    );
    // …and the queue got through it by connecting again.
    assert!(
        queue.connections() >= 2,
        "the queue reconnected after the restart ({} connections)",
        queue.connections()
    );
    assert!(
        connections_metric() > connections_before,
        "huitong_queue_connections_total counts the reconnection"
    );
    consumer.shutdown().await;
    queue.delete_topology("flow").await.unwrap();
}
