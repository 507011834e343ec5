//! The real composition (`App`) served on a pre-bound port-0 listener.

use huitong::app::App;
use huitong::config::{self, Sources};
use huitong_tests::{PgDatabase, service_url};
use tokio::sync::oneshot;

async fn start(
    env: Vec<(String, String)>,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let config = config::load(&Sources {
        file: None,
        env,
        overrides: vec![],
    })
    .unwrap();
    let app = App::start(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        app.serve(listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (format!("http://{addr}"), tx, handle)
}

#[tokio::test]
async fn embedded_default_is_alive_ready_and_measured() {
    let dir = std::env::temp_dir().join(format!("huitong-http-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/huitong.db", dir.display());
    let (base, stop, handle) = start(vec![("HUITONG_DATABASE_URL".into(), url)]).await;
    let client = reqwest::Client::new();

    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");

    let r = client.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("huitong_http_requests_total{"), "{text}");
    assert!(text.contains("route=\"/readyz\""), "{text}");
    assert!(text.contains("status=\"404\""), "{text}");

    // Graceful shutdown: the server task ends once the shutdown future resolves.
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn readyz_names_the_database_when_it_goes_away() {
    let Some(admin) = service_url(
        "HUITONG_TEST_PG_URL",
        "readyz_names_the_database_when_it_goes_away",
    ) else {
        return;
    };
    let pg = PgDatabase::create(&admin).await.unwrap();
    let (base, stop, _handle) = start(vec![("HUITONG_DATABASE_URL".into(), pg.url.clone())]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    drop(pg); // DROP DATABASE … WITH (FORCE) terminates the pool's connections.
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    // The embedded queue lives in that database, so it is named too.
    assert_eq!(body["failing"], serde_json::json!(["database", "queue"]));
    assert_ne!(body["checks"]["database"], "ok");
    // Liveness is not readiness.
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let _ = stop.send(());
}

/// Every label of the HTTP metrics comes from a closed set: made-up methods and paths are
/// counted as `other` / `unmatched`, never as labels of their own (each would be a new series
/// kept for the life of the process).
#[tokio::test]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    let dir = std::env::temp_dir().join(format!("huitong-http-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/huitong.db", dir.display());
    let (base, stop, handle) = start(vec![("HUITONG_DATABASE_URL".into(), url)]).await;
    let client = reqwest::Client::new();
    for i in 0..50 {
        let method =
            reqwest::Method::from_bytes(format!("MADEUP{i}{}", "X".repeat(i * 100)).as_bytes())
                .unwrap();
        let r = client
            .request(method, format!("{base}/healthz-{i}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("MADEUP"), "a made-up method became a label");
    assert!(!text.contains("healthz-"), "a made-up path became a label");
    let other = text
        .lines()
        .find(|l| {
            l.starts_with("huitong_http_requests_total{")
                && l.contains("method=\"other\"")
                && l.contains("route=\"unmatched\"")
        })
        .unwrap_or_else(|| panic!("no series for other methods: {text}"));
    assert!(other.ends_with(" 50"), "{other}");
    let _ = stop.send(());
    handle.await.unwrap();
}
