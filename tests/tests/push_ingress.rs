//! Events over push channels (`events = "push"`): huitong dials out to Feishu's long connection
//! and DingTalk's Stream gateway (the sandboxes serve both), and contact changes made in the
//! vendor's console reach the route's target within seconds — with no callback address at all.
//! Events are acknowledged to the vendor only after the queue confirmed them: a failed publish is
//! answered with a failure and the vendor's redelivery is queued; a redelivery of an event that
//! was already queued is acknowledged but not queued again.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use huitong::app::App;
use huitong::config::Config;
use huitong::push::{Accepted, PushIngress};
use huitong::queue::{
    ConsumeOptions, ConsumerHandle, DeadLetter, Envelope, Handler, INGRESS, Outcome, Queue,
    QueueError, Task,
};
use huitong::sync::{self, RouteContext};
use huitong_connectors::capability::RawEvent;
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::sandbox::Running;
use huitong_tests::org::{console, empty_org, fixture, get, sandbox, user, within};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

async fn until(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// A temporary folder with a `huitong.toml`, removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `connectors` (TOML) under a fresh SQLite database and loads it.
fn load_config(connectors: &str, env: &[(&str, &str)]) -> (Config, Dir) {
    let dir = std::env::temp_dir().join(format!("huitong-push-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n{connectors}",
            dir.join("huitong.db").display()
        ),
    )
    .unwrap();
    let config = huitong_tests::org::load_config(file, env);
    (config, Dir(dir))
}

async fn start_feishu(org: OrgFixture, app_id: &str) -> Running {
    let mut o = huitong_connectors::feishu::sandbox::SandboxOptions::new(org, app_id, "fs-secret");
    o.rate_limits = false;
    sandbox(o).await
}

async fn start_dingtalk(org: OrgFixture, app_key: &str) -> Running {
    sandbox(huitong_connectors::dingtalk::sandbox::SandboxOptions::new(
        org,
        app_key,
        "dt-secret",
    ))
    .await
}

async fn calls(base: &str, key: &str) -> u64 {
    get(&format!("{base}/_sandbox/calls")).await["calls"][key]
        .as_u64()
        .unwrap_or(0)
}

async fn full_sync(config: &Config, app: &App) -> Vec<huitong::queue::ConsumerHandle> {
    let deliveries = huitong::jobs::start_deliveries(config, app.store.clone(), &*app.queue)
        .await
        .unwrap();
    let ctx = RouteContext::new(config, "org").unwrap();
    let plan = sync::plan(&ctx, &*app.store).await.unwrap();
    sync::apply(&ctx, &plan, &*app.store, &*app.queue, false, &|_, _| {})
        .await
        .unwrap();
    deliveries
}

fn new_user(key: &str, n: u32) -> Value {
    json!({"key": key, "name": "推送新人", "en_name": "Push Newcomer",
        "email": format!("push.{n}@example.cn"), "mobile": format!("139000{n:05}"),
        "employee_no": format!("E{n:06}"), "title": "工程师", "departments": ["d1"],
        "active": true, "gender": "female", "hired_at": "2026-11-30"})
}

/// Creates a user in `sandbox`'s console, waits until it is in `target`, renames it, and waits
/// until the new name is there too.
async fn create_and_rename(sandbox: &str, target: &str, n: u32) {
    let key = format!("u{n}");
    let employee_no = format!("E{n:06}");
    console(
        Method::POST,
        &format!("{sandbox}/_sandbox/org/users"),
        new_user(&key, n),
    )
    .await;
    within(10, "the new user reaches the target", async || {
        user(&get(&format!("{target}/_sandbox/org")).await, &employee_no)
            .is_some_and(|u| u["name"] == "推送新人")
    })
    .await;
    console(
        Method::PATCH,
        &format!("{sandbox}/_sandbox/org/users/{key}"),
        json!({"name": "推送新人改名"}),
    )
    .await;
    within(10, "the rename reaches the target", async || {
        user(&get(&format!("{target}/_sandbox/org")).await, &employee_no)
            .is_some_and(|u| u["name"] == "推送新人改名")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_and_renamed_in_feishu_reaches_dingtalk_over_the_long_connection() {
    let (stop, rx) = watch::channel(false);
    let feishu_sandbox = start_feishu(fixture("small-org.json"), "cli_push").await;
    let feishu = feishu_sandbox.base.clone();
    let dingtalk_sandbox = start_dingtalk(empty_org("子公司"), "dingsub").await;
    let dingtalk = dingtalk_sandbox.base.clone();
    // No callback secrets and no callback address: events can only come over the connection.
    let (config, _dir) = load_config(
        &format!(
            "[connectors.hq]\nkind = \"feishu\"\nevents = \"push\"\napp_id = \"cli_push\"\napp_secret_env = \"HQ\"\nbase_url = \"{feishu}\"\n\
             [connectors.sub]\nkind = \"dingtalk\"\napp_key = \"dingsub\"\napp_secret_env = \"SUB\"\nbase_url = \"{dingtalk}\"\n\
             [routes.org]\nsource = \"hq\"\ntargets = [\"sub\"]\n"
        ),
        &[("HQ", "fs-secret"), ("SUB", "dt-secret")],
    );
    let app = App::start(config.clone()).await.unwrap();
    let _deliveries = full_sync(&config, &app).await;
    let ingress = huitong::jobs::start_ingress(&config, app.store.clone(), app.queue.clone())
        .await
        .unwrap();
    let hub = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = tokio::spawn(app.serve(hub, until(rx.clone())));

    // Feishu pushes only to connected clients.
    within(10, "the hub opens the long connection", async || {
        calls(&feishu, "WS connect").await >= 1
    })
    .await;
    create_and_rename(&feishu, &dingtalk, 901).await;
    // Both events acknowledged with success, none refused.
    within(5, "both events acked", async || {
        calls(&feishu, "WS ack 200").await >= 2
    })
    .await;
    assert_eq!(calls(&feishu, "WS ack 500").await, 0);
    let events = get(&format!("{feishu}/_sandbox/events")).await;
    assert!(
        events["events"]
            .as_array()
            .is_some_and(|a| a.iter().all(|e| e["delivery"] == "not-configured")),
        "no HTTP callback was configured: {events}"
    );

    // Shutdown closes the connection and `serve` returns.
    stop.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("serve stops on shutdown")
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    ingress.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_and_renamed_in_dingtalk_reaches_wecom_over_stream_mode() {
    let (stop, rx) = watch::channel(false);
    let dingtalk_sandbox = start_dingtalk(fixture("small-org.json"), "dingsrc").await;
    let dingtalk = dingtalk_sandbox.base.clone();
    let wecom_sandbox = sandbox(huitong_connectors::wecom::sandbox::SandboxOptions::new(
        empty_org("工厂"),
        "wwf",
        "wc-secret",
        1000002,
    ))
    .await;
    let wecom = wecom_sandbox.base.clone();
    let (config, _dir) = load_config(
        &format!(
            "[connectors.sub]\nkind = \"dingtalk\"\nevents = \"push\"\napp_key = \"dingsrc\"\napp_secret_env = \"SUB\"\nbase_url = \"{dingtalk}\"\n\
             [connectors.factory]\nkind = \"wecom\"\ncorp_id = \"wwf\"\nagent_id = 1000002\ncorp_secret_env = \"FACTORY\"\nbase_url = \"{wecom}\"\n\
             [routes.org]\nsource = \"sub\"\ntargets = [\"factory\"]\n"
        ),
        &[("SUB", "dt-secret"), ("FACTORY", "wc-secret")],
    );
    let app = App::start(config.clone()).await.unwrap();
    let _deliveries = full_sync(&config, &app).await;
    let ingress = huitong::jobs::start_ingress(&config, app.store.clone(), app.queue.clone())
        .await
        .unwrap();
    let hub = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = tokio::spawn(app.serve(hub, until(rx.clone())));

    create_and_rename(&dingtalk, &wecom, 902).await;
    let stream = format!("{dingtalk}/_sandbox/stream");
    within(5, "every event acked", async || {
        get(&stream).await["pending"] == 0
    })
    .await;
    let s = get(&stream).await;
    let acks = s["acks"].as_array().unwrap();
    assert!(
        acks.iter()
            .filter(|a| a["matched"] == true && a["code"] == 200)
            .count()
            >= 2,
        "{s}"
    );
    assert!(acks.iter().all(|a| a["code"] == 200), "{s}");

    stop.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("serve stops on shutdown")
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    ingress.shutdown().await;
}

/// Hands every ingress message to the test.
struct Collect(mpsc::UnboundedSender<Envelope>);

#[async_trait]
impl Handler for Collect {
    async fn handle(&self, envelope: &Envelope) -> Outcome {
        let _ = self.0.send(envelope.clone());
        Outcome::Ok
    }
}

/// The real queue, with faults: the first `fail` publishes fail (a broker outage), and while
/// `gate` has no permit a publish waits (a slow confirm).
struct TestQueue {
    inner: Arc<dyn Queue>,
    fail: AtomicUsize,
    gate: Arc<Semaphore>,
    publishes: AtomicUsize,
}

#[async_trait]
impl Queue for TestQueue {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn declare(&self, queue: &str) -> Result<(), QueueError> {
        self.inner.declare(queue).await
    }
    async fn publish(&self, queue: &str, envelope: &Envelope) -> Result<(), QueueError> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(QueueError::PublishTimeout {
                queue: queue.to_owned(),
                waited: Duration::from_secs(1),
                last_error: "broker unreachable (test)".into(),
            });
        }
        let _permit = self.gate.acquire().await;
        self.inner.publish(queue, envelope).await
    }
    async fn consume(
        &self,
        queue: &str,
        handler: Arc<dyn Handler>,
        options: ConsumeOptions,
    ) -> Result<ConsumerHandle, QueueError> {
        self.inner.consume(queue, handler, options).await
    }
    async fn dead_letters(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.dead_letters(queue, limit).await
    }
    async fn replay(
        &self,
        queue: Option<&str>,
        id: Option<&str>,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.replay(queue, id).await
    }
    async fn lag(&self, queue: &str) -> Result<u64, QueueError> {
        self.inner.lag(queue).await
    }
    async fn ping(&self) -> Result<(), QueueError> {
        self.inner.ping().await
    }
}

/// A started hub whose queue is wrapped in a [`TestQueue`] (the first `fail` publishes fail;
/// publishes wait while the gate is closed), its ingress messages collected, served on a free
/// port until `stop` changes.
struct Served {
    queue: Arc<TestQueue>,
    messages: mpsc::UnboundedReceiver<Envelope>,
    consumer: ConsumerHandle,
    base: String,
    served: tokio::task::JoinHandle<Result<(), huitong::app::AppError>>,
}

async fn serve_with_test_queue(
    mut app: App,
    fail: usize,
    gate_open: bool,
    stop: watch::Receiver<bool>,
) -> Served {
    let queue = Arc::new(TestQueue {
        inner: app.queue.clone(),
        fail: AtomicUsize::new(fail),
        gate: Arc::new(Semaphore::new(if gate_open {
            Semaphore::MAX_PERMITS
        } else {
            0
        })),
        publishes: AtomicUsize::new(0),
    });
    app.queue = queue.clone();
    let (tx, messages) = mpsc::unbounded_channel();
    let consumer = app
        .queue
        .consume(INGRESS, Arc::new(Collect(tx)), ConsumeOptions::default())
        .await
        .unwrap();
    let hub = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", hub.local_addr().unwrap());
    let served = tokio::spawn(app.serve(hub, until(stop)));
    Served {
        queue,
        messages,
        consumer,
        base,
        served,
    }
}

/// A hub whose only connector is a DingTalk app in Stream mode, its ingress messages collected.
struct StreamHub {
    connector: &'static str,
    base: String,
    dingtalk: Running,
    queue: Arc<TestQueue>,
    messages: mpsc::UnboundedReceiver<Envelope>,
    _consumer: ConsumerHandle,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<Result<(), huitong::app::AppError>>,
    _dir: Dir,
}

impl StreamHub {
    async fn start(connector: &'static str, fail_publishes: usize, gate_open: bool) -> StreamHub {
        let (stop, rx) = watch::channel(false);
        let dingtalk = start_dingtalk(fixture("small-org.json"), "dingdup").await;
        let (config, dir) = load_config(
            &format!(
                "[connectors.{connector}]\nkind = \"dingtalk\"\nevents = \"push\"\napp_key = \"dingdup\"\napp_secret_env = \"SUB\"\nbase_url = \"{}\"\n",
                dingtalk.base
            ),
            &[("SUB", "dt-secret")],
        );
        let app = App::start(config).await.unwrap();
        let Served {
            queue,
            messages,
            consumer,
            base,
            served,
        } = serve_with_test_queue(app, fail_publishes, gate_open, rx).await;
        StreamHub {
            connector,
            base,
            dingtalk,
            queue,
            messages,
            _consumer: consumer,
            stop,
            served,
            _dir: dir,
        }
    }

    async fn stream(&self) -> Value {
        get(&format!("{}/_sandbox/stream", self.dingtalk.base)).await
    }

    async fn add_user(&self, n: u32) {
        console(
            Method::POST,
            &format!("{}/_sandbox/org/users", self.dingtalk.base),
            new_user(&format!("u{n}"), n),
        )
        .await;
    }

    async fn disconnect(&self) {
        let r: Value = reqwest::Client::new()
            .post(format!("{}/_sandbox/stream/disconnect", self.dingtalk.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["sent"], 1, "one connection told to reconnect");
    }

    async fn next_message(&mut self) -> Envelope {
        tokio::time::timeout(Duration::from_secs(20), self.messages.recv())
            .await
            .expect("an ingress message within 20 s")
            .unwrap()
    }

    /// Nothing more arrives (the embedded consumer polls every 200 ms).
    async fn assert_quiet(&mut self) {
        if let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(1500), self.messages.recv()).await
        {
            panic!("unexpected ingress message: {m:?}");
        }
    }

    /// The `huitong_push_events_total` count of this hub's connector for `outcome`.
    async fn push_events(&self, outcome: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("huitong_push_events_total{")
                    && l.contains(&format!("connector=\"{}\"", self.connector))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(20), self.served)
            .await
            .expect("serve stops on shutdown")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
}

fn event_id(envelope: &Envelope, expected_connector: &str) -> String {
    match &envelope.task {
        Task::IngressV1 {
            connector,
            event_type,
            event_id,
            payload,
            ..
        } => {
            assert_eq!(connector, expected_connector);
            assert_eq!(event_type, "user_add_org");
            assert_eq!(payload["EventType"], "user_add_org");
            event_id.clone().expect("an event id")
        }
        other => panic!("not an ingress task: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_is_not_acked_and_the_redelivery_is_queued() {
    let mut hub = StreamHub::start("flaky", 1, true).await;
    hub.add_user(903).await;
    // The publish failed: the gateway got a failure, the event is still pending there.
    within(10, "the event is answered with a failure", async || {
        let s = hub.stream().await;
        s["acks"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["code"] == 500))
    })
    .await;
    let s = hub.stream().await;
    assert_eq!(s["pending"], 1, "{s}");
    assert_eq!(hub.queue.publishes.load(Ordering::SeqCst), 1);
    // The gateway delivers it again on the next connection; now it is queued and acked.
    hub.disconnect().await;
    let m = hub.next_message().await;
    let id = event_id(&m, "flaky");
    within(10, "the redelivery is acked", async || {
        hub.stream().await["pending"] == 0
    })
    .await;
    let s = hub.stream().await;
    let ids: Vec<&Value> = s["acks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["messageId"])
        .collect();
    assert!(ids.len() >= 2 && ids.iter().all(|m| *m == ids[0]), "{s}");
    assert_eq!(hub.queue.publishes.load(Ordering::SeqCst), 2);
    hub.assert_quiet().await;
    assert!(!id.is_empty());
    assert_eq!(hub.push_events("publish_failed").await, 1);
    assert_eq!(hub.push_events("accepted").await, 1);
    hub.stop().await;
}

/// Feishu's long connection, over the wire: while the queue fails, the ack frame huitong sends
/// back over the WebSocket for the event carries `{"code": 500}` (so Feishu delivers it again);
/// once the queue works again, the next event is queued and acked with 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_is_answered_with_code_500_over_feishus_long_connection() {
    let (stop, rx) = watch::channel(false);
    let feishu_sandbox = start_feishu(fixture("small-org.json"), "cli_flaky").await;
    let feishu = feishu_sandbox.base.clone();
    let (config, _dir) = load_config(
        &format!(
            "[connectors.fsflaky]\nkind = \"feishu\"\nevents = \"push\"\napp_id = \"cli_flaky\"\napp_secret_env = \"HQ\"\nbase_url = \"{feishu}\"\n"
        ),
        &[("HQ", "fs-secret")],
    );
    let app = App::start(config).await.unwrap();
    let Served {
        queue,
        mut messages,
        consumer: _consumer,
        base,
        served,
    } = serve_with_test_queue(app, 1, true, rx).await;
    within(10, "the hub opens the long connection", async || {
        calls(&feishu, "WS connect").await >= 1
    })
    .await;

    // The queue is down for this event: its ack frame says 500, and nothing is queued.
    console(
        Method::POST,
        &format!("{feishu}/_sandbox/org/users"),
        new_user("u905", 905),
    )
    .await;
    within(10, "the event is answered with code 500", async || {
        calls(&feishu, "WS ack 500").await == 1
    })
    .await;
    assert_eq!(calls(&feishu, "WS ack 200").await, 0, "not acked as taken");
    assert_eq!(queue.publishes.load(Ordering::SeqCst), 1);

    // The queue is back: the next event is queued and acked with 200.
    console(
        Method::POST,
        &format!("{feishu}/_sandbox/org/users"),
        new_user("u906", 906),
    )
    .await;
    let m = tokio::time::timeout(Duration::from_secs(20), messages.recv())
        .await
        .expect("an ingress message within 20 s")
        .unwrap();
    match &m.task {
        Task::IngressV1 {
            connector,
            event_type,
            payload,
            ..
        } => {
            assert_eq!(connector, "fsflaky");
            assert_eq!(event_type, "contact.user.created_v3");
            assert_eq!(
                payload["event"]["object"]["employee_no"], "E000906",
                "{payload}"
            );
        }
        other => panic!("not an ingress task: {other:?}"),
    }
    within(10, "the second event is acked with 200", async || {
        calls(&feishu, "WS ack 200").await == 1
    })
    .await;
    assert_eq!(calls(&feishu, "WS ack 500").await, 1);
    assert_eq!(queue.publishes.load(Ordering::SeqCst), 2);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let push_events = |outcome: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("huitong_push_events_total{")
                    && l.contains("connector=\"fsflaky\"")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(push_events("publish_failed"), 1, "{metrics}");
    assert_eq!(push_events("accepted"), 1, "{metrics}");

    stop.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("serve stops on shutdown")
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_again_after_it_was_queued_is_queued_once() {
    let mut hub = StreamHub::start("slow", 0, false).await;
    hub.add_user(904).await;
    // The publish hangs (a slow confirm) while the gateway drops the connection: the ack
    // cannot reach it, so the gateway delivers the event again on the next connection.
    within(10, "the publish started", async || {
        hub.queue.publishes.load(Ordering::SeqCst) == 1
    })
    .await;
    hub.disconnect().await;
    // The sandbox closes the connection 2 s after `disconnect`.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(hub.stream().await["pending"], 1);
    hub.queue.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let first = hub.next_message().await;
    within(15, "the redelivery is acked", async || {
        let s = hub.stream().await;
        s["pending"] == 0 && s["connections"].as_u64() >= Some(2)
    })
    .await;
    // Delivered twice, published once.
    let s = hub.stream().await;
    assert!(
        s["acks"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["code"] == 200 && a["matched"] == true)),
        "{s}"
    );
    hub.assert_quiet().await;
    assert_eq!(hub.queue.publishes.load(Ordering::SeqCst), 1);
    assert!(!event_id(&first, "slow").is_empty());
    assert_eq!(hub.push_events("accepted").await, 1);
    assert_eq!(hub.push_events("duplicate").await, 1);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_twice_is_published_once() {
    let (config, _dir) = load_config(
        "[connectors.hq]\nkind = \"feishu\"\nevents = \"push\"\napp_id = \"cli_1\"\napp_secret_env = \"HQ\"\n",
        &[("HQ", "s")],
    );
    let app = App::start(config.clone()).await.unwrap();
    let (tx, mut messages) = mpsc::unbounded_channel();
    let _consumer = app
        .queue
        .consume(INGRESS, Arc::new(Collect(tx)), ConsumeOptions::default())
        .await
        .unwrap();
    let ingress = PushIngress::new(
        &config.connectors["hq"],
        app.store.clone(),
        app.queue.clone(),
    );
    let event = |id: &str| RawEvent {
        vendor: "feishu",
        event_id: id.to_owned(),
        event_type: "contact.user.updated_v3".into(),
        created_at_ms: None,
        payload: json!({"header": {"event_id": id}, "event": {"object": {"name": "x"}}}),
    };
    let first = ingress.accept(event("ev-1")).await.unwrap();
    assert!(matches!(first, Accepted::Queued { .. }), "{first:?}");
    assert_eq!(
        ingress.accept(event("ev-1")).await.unwrap(),
        Accepted::Duplicate
    );
    assert!(matches!(
        ingress.accept(event("ev-2")).await.unwrap(),
        Accepted::Queued { .. }
    ));
    let mut ids = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1500), messages.recv()).await
    {
        match m.task {
            Task::IngressV1 {
                connector,
                event_id,
                ..
            } => {
                assert_eq!(connector, "hq");
                ids.push(event_id.unwrap_or_default());
            }
            other => panic!("{other:?}"),
        }
    }
    ids.sort();
    assert_eq!(ids, vec!["ev-1".to_owned(), "ev-2".to_owned()]);
}
