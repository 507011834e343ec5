//! Ingress over push channels: connectors configured with `events = "push"` (Feishu's long
//! connection, DingTalk's Stream mode) need no public address: huitong dials out and the vendor
//! pushes its events down that connection (docs/design.md, "The flow of one change", ingress).
//!
//! Every event takes the path of an HTTP callback (`callbacks.rs`): its id is checked in the
//! same [`StoreDedup`] (same store source, so an event that arrives both ways is queued once),
//! it is published as [`crate::queue::Task::IngressV1`] through [`callbacks::publish_event`],
//! its id is marked only after the queue confirmed the publish, and only then is it acknowledged
//! to the vendor ([`PushDelivery::ack`]). A failed publish is answered with a failure
//! ([`PushDelivery::nack`]) so that the vendor delivers the event again; a crash before the ack
//! leaves the event un-acknowledged at the vendor, which delivers it again on the next
//! connection. Nothing is lost; a redelivery of an event already queued is recognised by its id.
//!
//! One task per connector, started by [`App::serve`](crate::app::App::serve): the vendor client
//! reconnects by itself; when it gives up (bad credentials, retries exhausted) the task starts it
//! again after a growing pause, until shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use huitong_connectors::capability::{PushChannel, PushDelivery, RawEvent};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::callbacks::{self, DEDUP_TTL, StoreDedup};
use crate::config::{Config, ConnectorConfig, EventSource};
use crate::queue::{Queue, QueueError};
use crate::store::{Store, StoreError};

/// First pause before the vendor client is started again after it gave up.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A client that ran at least this long before giving up starts again from [`FIRST_BACKOFF`].
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long shutdown waits for a client to close its connection.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("connector {connector}: cannot build its push channel: {message}")]
    Channel { connector: String, message: String },
    #[error("cannot check the event id in the store: {0}")]
    Dedup(#[source] StoreError),
    #[error("cannot publish the event: {0}")]
    Publish(#[source] QueueError),
}

/// What became of one pushed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Published (confirmed); the queue message's id.
    Queued { message_id: String },
    /// Its id was already queued (a vendor redelivery): not published again.
    Duplicate,
}

/// Takes the events of one connector's push channel into the `ingress` queue.
pub struct PushIngress {
    connector: String,
    vendor: &'static str,
    queue: Arc<dyn Queue>,
    dedup: StoreDedup,
}

impl PushIngress {
    pub fn new(connector: &ConnectorConfig, store: Arc<dyn Store>, queue: Arc<dyn Queue>) -> Self {
        PushIngress {
            connector: connector.name.clone(),
            vendor: connector.kind.as_str(),
            queue,
            dedup: StoreDedup::new(store, callbacks::dedup_source(&connector.name), DEDUP_TTL),
        }
    }

    /// De-duplicates and publishes one event; its id is marked only after the publish was
    /// confirmed, so an error leaves the event new for the vendor's redelivery.
    pub async fn accept(&self, event: RawEvent) -> Result<Accepted, PushError> {
        if !self
            .dedup
            .is_new(&event.event_id)
            .await
            .map_err(PushError::Dedup)?
        {
            return Ok(Accepted::Duplicate);
        }
        let event_id = event.event_id.clone();
        let envelope = callbacks::publish_event(&*self.queue, &self.connector, event)
            .await
            .map_err(PushError::Publish)?;
        if let Err(e) = self.dedup.mark(&event_id).await {
            // The event is queued: acknowledge it. A redelivery would be queued once more,
            // which the later stages absorb.
            tracing::warn!(
                connector = %self.connector,
                vendor = self.vendor,
                event_id = %event_id,
                error = %e,
                "pushed event queued but its id could not be recorded; a redelivery would be queued again"
            );
        }
        Ok(Accepted::Queued {
            message_id: envelope.id,
        })
    }

    /// Accepts the delivery's event, then acks it to the vendor (queued or duplicate) or nacks
    /// it (not queued: the vendor delivers it again).
    pub async fn settle(&self, delivery: PushDelivery) -> Result<Accepted, PushError> {
        let event_type = delivery.event.event_type.clone();
        let event_id = delivery.event.event_id.clone();
        let result = self.accept(delivery.event.clone()).await;
        match &result {
            Ok(Accepted::Queued { message_id }) => {
                metric::outcome(self.vendor, &self.connector, "accepted");
                tracing::debug!(
                    connector = %self.connector,
                    vendor = self.vendor,
                    event_type = %event_type,
                    event_id = %event_id,
                    message_id = %message_id,
                    "pushed event queued"
                );
                delivery.ack();
            }
            Ok(Accepted::Duplicate) => {
                metric::outcome(self.vendor, &self.connector, "duplicate");
                tracing::info!(
                    connector = %self.connector,
                    vendor = self.vendor,
                    event_type = %event_type,
                    event_id = %event_id,
                    "duplicate pushed event acknowledged, not published"
                );
                delivery.ack();
            }
            Err(e) => {
                let outcome = match e {
                    PushError::Dedup(_) => "dedup_failed",
                    _ => "publish_failed",
                };
                metric::outcome(self.vendor, &self.connector, outcome);
                tracing::error!(
                    connector = %self.connector,
                    vendor = self.vendor,
                    event_type = %event_type,
                    event_id = %event_id,
                    error = %e,
                    "pushed event not queued; answering the vendor with a failure so it delivers it again"
                );
                delivery.nack();
            }
        }
        result
    }
}

mod metric {
    pub fn describe() {
        metrics::describe_counter!(
            "huitong_push_events_total",
            "Events received over push channels by vendor, connector and outcome (accepted, duplicate, publish_failed, dedup_failed)."
        );
    }
    pub fn outcome(vendor: &'static str, connector: &str, outcome: &'static str) {
        metrics::counter!("huitong_push_events_total", "vendor" => vendor, "connector" => connector.to_owned(), "outcome" => outcome)
            .increment(1);
    }
}

/// The vendor's push client for a connector (no network call yet).
pub fn channel(c: &ConnectorConfig) -> Result<Box<dyn PushChannel>, PushError> {
    c.kind
        .push_channel(&c.vendor_settings())
        .map_err(|e| PushError::Channel {
            connector: c.name.clone(),
            message: e.message().to_owned(),
        })
}

/// The running push tasks; [`PushHandle::shutdown`] closes the connections and waits.
pub struct PushHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl PushHandle {
    /// How many connectors receive events by push.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// A sender that stops every push task when `true` is sent (for a shutdown future).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// Stops the tasks: each closes its connection (an event being handled is settled first).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts one task per connector with `events = "push"`.
pub fn start(config: &Config, store: Arc<dyn Store>, queue: Arc<dyn Queue>) -> PushHandle {
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for c in config.connectors.values() {
        if c.events != EventSource::Push {
            continue;
        }
        let channel = match channel(c) {
            Ok(ch) => ch,
            Err(e) => {
                tracing::error!(connector = %c.name, vendor = c.kind.as_str(), error = %e, "push channel not started");
                continue;
            }
        };
        if tasks.is_empty() {
            metric::describe();
        }
        let ingress = PushIngress::new(c, store.clone(), queue.clone());
        tracing::info!(connector = %c.name, vendor = c.kind.as_str(), "push channel starting");
        tasks.push(tokio::spawn(run(channel, ingress, stopped.clone())));
    }
    PushHandle { stop, tasks }
}

async fn until_true(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: stop as well.
    let _ = rx.wait_for(|v| *v).await;
}

/// Runs one connector's client until shutdown, starting it again after a pause whenever it
/// gives up.
async fn run(
    channel: Box<dyn PushChannel>,
    ingress: PushIngress,
    mut shutdown: watch::Receiver<bool>,
) {
    let (connector, vendor) = (ingress.connector.clone(), ingress.vendor);
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let started = Instant::now();
        let (tx, mut rx) = mpsc::channel::<PushDelivery>(1);
        let client = channel.run_confirmed(tx, shutdown.clone());
        let take = async {
            while let Some(delivery) = rx.recv().await {
                // The outcome is logged and settled inside.
                let _ = ingress.settle(delivery).await;
            }
        };
        let work = async { tokio::join!(client, take).0 };
        tokio::pin!(work);
        let result = tokio::select! {
            r = &mut work => r,
            () = until_true(&mut shutdown) => {
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut work).await {
                    Ok(r) => r,
                    Err(_) => {
                        // Dropping it closes the connection; an event not yet acknowledged is
                        // delivered again by the vendor.
                        tracing::warn!(connector = %connector, vendor, "push channel did not close in time; dropped");
                        break;
                    }
                }
            }
        };
        if *shutdown.borrow() {
            break;
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        match result {
            Ok(()) => tracing::warn!(
                connector = %connector,
                vendor,
                wait_ms = backoff.as_millis() as u64,
                "push channel ended; starting it again"
            ),
            Err(e) => tracing::error!(
                connector = %connector,
                vendor,
                error = %e,
                class = ?e.class(),
                wait_ms = backoff.as_millis() as u64,
                "push channel gave up; starting it again"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = until_true(&mut shutdown) => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    tracing::info!(connector = %connector, vendor, "push channel stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConnectorKind, DatabaseConfig};
    use secrecy::SecretString;

    fn kind(name: &str) -> ConnectorKind {
        ConnectorKind::parse(name).expect("a registered vendor")
    }

    fn connector(kind: ConnectorKind, settings: &[(&str, &str)]) -> ConnectorConfig {
        let mut c = ConnectorConfig::new(
            "c",
            kind,
            settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            [("app_secret".to_owned(), SecretString::from("s"))].into(),
        );
        c.events = EventSource::Push;
        c
    }

    #[test]
    fn channels_exist_for_feishu_and_dingtalk_only() {
        assert!(channel(&connector(kind("feishu"), &[("app_id", "cli_1")])).is_ok());
        assert!(
            channel(&connector(
                kind("dingtalk"),
                &[("app_key", "ding1"), ("base_url", "http://127.0.0.1:1")]
            ))
            .is_ok()
        );
        let e = channel(&connector(kind("wecom"), &[]))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("connector c: cannot build its push channel: wecom has no push channel")
        );
        let e = channel(&connector(kind("feishu"), &[]))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("`app_id` is not set")));
    }

    #[tokio::test]
    async fn a_failed_publish_is_nacked_and_leaves_the_event_new() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&DatabaseConfig {
            url: SecretString::from(format!("sqlite://{}/t.db", dir.path().display())),
            max_connections: 2,
        })
        .await
        .unwrap();
        // A queue that is not there: every publish fails.
        let queue: Arc<dyn Queue> = Arc::new(Down);
        let c = connector(kind("feishu"), &[("app_id", "cli_1")]);
        let ingress = PushIngress::new(&c, store.clone(), queue);
        let ev = RawEvent {
            vendor: "feishu",
            event_id: "e1".into(),
            event_type: "contact.user.created_v3".into(),
            created_at_ms: None,
            payload: serde_json::json!({}),
        };
        let (d, settled) = PushDelivery::new(ev);
        assert!(matches!(
            ingress.settle(d).await,
            Err(PushError::Publish(_))
        ));
        assert_eq!(settled.await, Ok(false), "nacked");
        let dedup = StoreDedup::new(store, callbacks::dedup_source("c"), DEDUP_TTL);
        assert!(dedup.is_new("e1").await.unwrap(), "not marked");
    }

    struct Down;

    #[async_trait::async_trait]
    impl Queue for Down {
        fn kind(&self) -> &'static str {
            "down"
        }
        async fn declare(&self, _: &str) -> Result<(), QueueError> {
            Ok(())
        }
        async fn publish(&self, queue: &str, _: &crate::queue::Envelope) -> Result<(), QueueError> {
            Err(QueueError::PublishTimeout {
                queue: queue.to_owned(),
                waited: Duration::from_millis(1),
                last_error: "down (test)".into(),
            })
        }
        async fn consume(
            &self,
            _: &str,
            _: Arc<dyn crate::queue::Handler>,
            _: crate::queue::ConsumeOptions,
        ) -> Result<crate::queue::ConsumerHandle, QueueError> {
            Err(QueueError::PublishTimeout {
                queue: "x".into(),
                waited: Duration::from_millis(1),
                last_error: "down (test)".into(),
            })
        }
        async fn dead_letters(
            &self,
            _: Option<&str>,
            _: usize,
        ) -> Result<Vec<crate::queue::DeadLetter>, QueueError> {
            Ok(vec![])
        }
        async fn replay(
            &self,
            _: Option<&str>,
            _: Option<&str>,
        ) -> Result<Vec<crate::queue::DeadLetter>, QueueError> {
            Ok(vec![])
        }
        async fn lag(&self, _: &str) -> Result<u64, QueueError> {
            Ok(0)
        }
        async fn ping(&self) -> Result<(), QueueError> {
            Ok(())
        }
    }
}
