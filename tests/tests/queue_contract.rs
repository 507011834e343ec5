//! The queue contract, run against every implementation: the embedded queue on
//! SQLite (always) and on PostgreSQL, and RabbitMQ (real broker; both required
//! in CI through HUITONG_TEST_PG_URL / HUITONG_TEST_AMQP_URL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use huitong::config::{DatabaseConfig, QueueType};
use huitong::queue::amqp::{AmqpOptions, AmqpQueue};
use huitong::queue::embedded::EmbeddedQueue;
use huitong::queue::{
    ConsumeOptions, Envelope, Handler, Outcome, Queue, RetryPolicy, Task, replay_and_audit,
};
use huitong::store::{self, Store};
use huitong_tests::{PgDatabase, service_url};
use serde_json::json;

fn policy() -> RetryPolicy {
    RetryPolicy {
        tiers: vec![Duration::from_millis(100), Duration::from_millis(200)],
    }
}

/// One backend under test, with what keeps it alive.
struct Backend {
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    _pg: Option<PgDatabase>,
    amqp: Option<Arc<AmqpQueue>>,
    name: String,
}

impl Backend {
    async fn cleanup(&self) {
        if let Some(a) = &self.amqp {
            let _ = a.delete_topology(&self.name).await;
        }
    }
}

async fn sqlite_store() -> Arc<dyn Store> {
    let dir = std::env::temp_dir().join(format!("huitong-q-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/q.db", dir.display());
    store::open(&DatabaseConfig {
        url: url.into(),
        max_connections: 4,
    })
    .await
    .unwrap()
}

async fn embedded_sqlite() -> Option<Backend> {
    let store = sqlite_store().await;
    let queue =
        EmbeddedQueue::new(store.clone(), policy()).with_poll_interval(Duration::from_millis(20));
    Some(Backend {
        queue: Arc::new(queue),
        store,
        _pg: None,
        amqp: None,
        name: "work-sqlite".into(),
    })
}

async fn embedded_postgres() -> Option<Backend> {
    let admin = service_url("HUITONG_TEST_PG_URL", "queue contract on embedded/postgres")?;
    let pg = PgDatabase::create(&admin).await.unwrap();
    let store = store::open(&DatabaseConfig {
        url: pg.url.clone().into(),
        max_connections: 4,
    })
    .await
    .unwrap();
    let queue =
        EmbeddedQueue::new(store.clone(), policy()).with_poll_interval(Duration::from_millis(20));
    Some(Backend {
        queue: Arc::new(queue),
        store,
        _pg: Some(pg),
        amqp: None,
        name: "work-postgres".into(),
    })
}

async fn rabbitmq() -> Option<Backend> {
    let url = service_url("HUITONG_TEST_AMQP_URL", "queue contract on rabbitmq")?;
    let amqp = Arc::new(
        AmqpQueue::connect(
            url.into(),
            AmqpOptions {
                queue_type: QueueType::Quorum,
                policy: policy(),
                exchange: "huitong-test".into(),
                prefix: format!("test-{}.", uuid::Uuid::new_v4().simple()),
                ..AmqpOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    // The audit log of replays lives in the store whatever the queue.
    let store = sqlite_store().await;
    Some(Backend {
        queue: amqp.clone(),
        store,
        _pg: None,
        amqp: Some(amqp),
        name: "work-rabbitmq".into(),
    })
}

/// Records every delivery and answers from a script keyed by payload.
#[derive(Default)]
struct Recorder {
    deliveries: Mutex<Vec<(String, u32, String)>>,
    /// payload -> outcomes for the 1st, 2nd, … delivery (then Ok).
    script: Mutex<HashMap<String, Vec<Outcome>>>,
}

impl Recorder {
    fn script(&self, payload: &str, outcomes: Vec<Outcome>) {
        self.script
            .lock()
            .unwrap()
            .insert(payload.to_owned(), outcomes);
    }
    fn count(&self, payload: &str) -> usize {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.2 == payload)
            .count()
    }
    fn attempts(&self, payload: &str) -> Vec<u32> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.2 == payload)
            .map(|d| d.1)
            .collect()
    }
    fn payloads(&self) -> Vec<String> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.2.clone())
            .collect()
    }
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, e: &Envelope) -> Outcome {
        let Task::IngressV1 { payload, .. } = &e.task else {
            return Outcome::Permanent("unexpected task".into());
        };
        let p = payload["p"].as_str().unwrap_or_default().to_owned();
        let n = {
            let mut d = self.deliveries.lock().unwrap();
            d.push((e.id.clone(), e.attempt, p.clone()));
            d.iter().filter(|x| x.2 == p).count()
        };
        self.script
            .lock()
            .unwrap()
            .get(&p)
            .and_then(|outs| outs.get(n - 1).cloned())
            .unwrap_or(Outcome::Ok)
    }
}

fn message(key: &str, p: &str) -> Envelope {
    Envelope::new(
        key,
        Task::IngressV1 {
            connector: "hq".into(),
            event_type: "contact.user.updated_v3".into(),
            event_id: Some(format!("ev-{p}")),
            payload: json!({"p": p}),
            received_at_ms: 0,
        },
    )
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..300 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn dead_count(b: &Backend) -> usize {
    b.queue
        .dead_letters(Some(&b.name), 100)
        .await
        .unwrap()
        .len()
}

async fn contract(b: Backend) {
    let metrics = huitong::telemetry::metrics();
    let q = b.name.clone();
    b.queue.declare(&q).await.unwrap();
    let rec = Arc::new(Recorder::default());
    rec.script(
        "flaky",
        vec![
            Outcome::Retry("503 from vendor".into()),
            Outcome::Retry("timeout".into()),
        ],
    );
    rec.script(
        "poison",
        vec![Outcome::Permanent("field email: not an address".into())],
    );
    rec.script(
        "hopeless",
        vec![
            Outcome::Retry("down".into()),
            Outcome::Retry("down".into()),
            Outcome::Retry("still down".into()),
        ],
    );
    let consumer = b
        .queue
        .consume(
            &q,
            rec.clone(),
            ConsumeOptions {
                lanes: 8,
                prefetch: 32,
            },
        )
        .await
        .unwrap();

    // publish -> consume -> ack
    let plain = message("k-plain", "plain");
    b.queue.publish(&q, &plain).await.unwrap();
    let flaky = message("k-flaky", "flaky");
    b.queue.publish(&q, &flaky).await.unwrap();
    let poison = message("k-poison", "poison");
    b.queue.publish(&q, &poison).await.unwrap();
    b.queue
        .publish(&q, &message("k-hopeless", "hopeless"))
        .await
        .unwrap();
    // ordering: one partition key, published in order, handled in order
    for i in 0..100 {
        b.queue
            .publish(&q, &message("k-ordered", &format!("o{i:03}")))
            .await
            .unwrap();
    }

    eventually("plain handled", || rec.count("plain") == 1).await;
    eventually("flaky handled three times", || rec.count("flaky") == 3).await;
    eventually("ordered all handled", || {
        (0..100).all(|i| rec.count(&format!("o{i:03}")) == 1)
    })
    .await;
    eventually("hopeless tried through every tier", || {
        rec.count("hopeless") == 3
    })
    .await;
    let mut dead = 0;
    for _ in 0..100 {
        dead = dead_count(&b).await;
        if dead == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead, 2, "poison and hopeless end in the DLQ");

    // The flaky one saw attempts 0, 1, 2 and then succeeded: no 4th delivery.
    assert_eq!(rec.attempts("flaky"), vec![0, 1, 2]);
    assert_eq!(rec.count("poison"), 1, "a permanent failure is not retried");
    let ordered: Vec<String> = rec
        .payloads()
        .into_iter()
        .filter(|p| p.starts_with('o'))
        .collect();
    let expected: Vec<String> = (0..100).map(|i| format!("o{i:03}")).collect();
    assert_eq!(
        ordered, expected,
        "same partition key is handled in publish order"
    );

    let letters = b.queue.dead_letters(Some(&q), 100).await.unwrap();
    let poison_letter = letters
        .iter()
        .find(|d| d.id == poison.id)
        .expect("poison in DLQ");
    assert_eq!(poison_letter.last_error, "field email: not an address");
    assert_eq!(poison_letter.attempts, 1);
    assert_eq!(poison_letter.queue, q);
    assert!(poison_letter.dead_at_ms.is_some());
    assert_eq!(
        poison_letter.envelope.as_ref().map(|e| e.id.as_str()),
        Some(poison.id.as_str())
    );
    let hopeless_letter = letters.iter().find(|d| d.id != poison.id).unwrap();
    assert_eq!(hopeless_letter.attempts, 3);
    assert!(
        hopeless_letter
            .last_error
            .contains("gave up after 3 attempts: still down"),
        "{}",
        hopeless_letter.last_error
    );
    // Listing does not consume.
    assert_eq!(dead_count(&b).await, 2);

    // Replay one by id: delivered again (the script now says Ok), attempt reset, audited.
    let replayed = replay_and_audit(
        &*b.queue,
        &*b.store,
        "ops@example.cn",
        Some(&q),
        Some(&poison.id),
    )
    .await
    .unwrap();
    assert_eq!(replayed.len(), 1);
    eventually("poison delivered again", || rec.count("poison") == 2).await;
    assert_eq!(rec.attempts("poison"), vec![0, 0]);
    assert_eq!(dead_count(&b).await, 1);
    let audit = b.store.list_audit(10).await.unwrap();
    assert_eq!(audit[0].actor, "ops@example.cn");
    assert_eq!(audit[0].action, "dlq.replay");
    assert_eq!(audit[0].target, format!("{q}/{}", poison.id));
    // Replay everything left.
    let replayed = replay_and_audit(&*b.queue, &*b.store, "ops", Some(&q), None)
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1);
    eventually("hopeless delivered again", || rec.count("hopeless") == 4).await;
    assert_eq!(dead_count(&b).await, 0);

    // Nothing left to do.
    let mut lag = u64::MAX;
    for _ in 0..100 {
        lag = b.queue.lag(&q).await.unwrap();
        if lag == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lag, 0);
    assert_eq!(
        rec.count("plain"),
        1,
        "acked messages are not delivered again"
    );
    consumer.shutdown().await;
    b.queue.ping().await.unwrap();
    // Per-queue metrics: published, delivered, acked, retried by tier, dead-lettered. The
    // recorder is process-wide and the backends' contracts run at the same time, so each
    // backend works on a queue name of its own and its series are read by that name: what is
    // counted here is this backend's doing alone.
    let text = metrics.render();
    let value = |name: &str, labels: &str| -> u64 {
        let series = format!("{name}{{queue=\"{q}\"{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map(|v| v.trim().parse::<f64>().unwrap() as u64)
            .unwrap_or_else(|| panic!("missing {series} in\n{text}"))
    };
    // 104 messages published (replays may republish on top).
    assert!(value("huitong_queue_published_total", "") >= 104, "{text}");
    // plain 1, flaky 3, poison 1 + replay 1, hopeless 3 + replay 1, ordered 100.
    assert_eq!(value("huitong_queue_delivered_total", ""), 110, "{q}");
    // plain, flaky, 100 ordered, then poison and hopeless once replayed.
    assert_eq!(value("huitong_queue_acked_total", ""), 104, "{q}");
    // flaky and hopeless each went through both tiers.
    assert_eq!(
        value("huitong_queue_retried_total", ",tier=\"0\""),
        2,
        "{q}"
    );
    assert_eq!(
        value("huitong_queue_retried_total", ",tier=\"1\""),
        2,
        "{q}"
    );
    // poison (permanent) and hopeless (tiers exhausted).
    assert_eq!(value("huitong_queue_dead_lettered_total", ""), 2, "{q}");
    b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_embedded_sqlite() {
    contract(embedded_sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_embedded_postgres() {
    if let Some(b) = embedded_postgres().await {
        contract(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_rabbitmq() {
    if let Some(b) = rabbitmq().await {
        contract(b).await;
    }
}

#[tokio::test]
async fn publishing_to_an_undeclared_rabbitmq_queue_is_an_error_not_a_silent_success() {
    let Some(b) = rabbitmq().await else { return };
    let err = b
        .queue
        .publish("never-declared", &message("k", "x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("could not route"), "{err}");
}
