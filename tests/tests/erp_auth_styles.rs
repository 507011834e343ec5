//! The declared connector's other auth styles, paging styles, retries and redirect rule,
//! against a small HTTP service of the test's own that checks what a real API would: an API key
//! in a header or the query, an HMAC signature over a declared canonical string, `Link` and
//! cursor paging, a 429 with `Retry-After`, and a redirect to another host.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::StreamExt;
use hmac::{KeyInit, Mac};
use huitong_connectors::declared::auth::Credentials;
use huitong_connectors::declared::{Definition, HttpConnector, ListOptions, Options};
use secrecy::SecretString;
use serde_json::{Value, json};

const KEY: &str = "k-123456";
const HMAC_SECRET: &str = "hmac-secret-of-the-test";

#[derive(Default)]
struct Seen {
    calls: AtomicU64,
    throttled: AtomicU64,
}

fn items(from: usize, n: usize) -> Vec<Value> {
    (from..(from + n).min(7))
        .map(|i| json!({"id": i, "name": format!("item {i}")}))
        .collect()
}

async fn keyed(
    State(seen): State<Arc<Seen>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    seen.calls.fetch_add(1, Ordering::Relaxed);
    let ok = headers.get("x-api-key").is_some_and(|v| v == KEY)
        || q.get("api_key").is_some_and(|v| v == KEY);
    if !ok {
        return (StatusCode::UNAUTHORIZED, "no key").into_response();
    }
    // Cursor paging: three a page, the cursor is the next offset.
    let at: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let page = items(at, 3);
    let next = (at + 3 < 7).then(|| (at + 3).to_string());
    axum::Json(json!({"items": page, "next": next})).into_response()
}

async fn signed(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let ts = headers
        .get("x-timestamp")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let canonical = format!(
        "{method}\n{}\n{ts}\n{}",
        uri.path_and_query().map(|p| p.as_str()).unwrap_or_default(),
        String::from_utf8_lossy(&body)
    );
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(HMAC_SECRET.as_bytes()).unwrap();
    m.update(canonical.as_bytes());
    let want = format!("sha256={}", hex::encode(m.finalize().into_bytes()));
    if headers
        .get("x-signature")
        .is_none_or(|v| v.as_bytes() != want.as_bytes())
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "bad signature"})),
        )
            .into_response();
    }
    if method == Method::POST {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return (
            StatusCode::CREATED,
            axum::Json(json!({"id": 99, "echo": v})),
        )
            .into_response();
    }
    axum::Json(json!([{"id": 1}])).into_response()
}

async fn linked(
    State(seen): State<Arc<Seen>>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let page: usize = q.get("page").and_then(|c| c.parse().ok()).unwrap_or(1);
    // The first call of page 2 is throttled once.
    if page == 2 && seen.throttled.fetch_add(1, Ordering::Relaxed) == 0 {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response();
    }
    let mut resp = axum::Json(items((page - 1) * 3, 3)).into_response();
    if page * 3 < 7 {
        let link = format!("<http://{host}/v1/linked?page={}>; rel=\"next\"", page + 1);
        resp.headers_mut().insert("link", link.parse().unwrap());
    }
    resp
}

async fn elsewhere(Query(q): Query<BTreeMap<String, String>>) -> Response {
    let to = q.get("to").cloned().unwrap_or_default();
    (StatusCode::FOUND, [("location", to)]).into_response()
}

async fn serve() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/v1/keyed", get(keyed))
        .route("/v1/signed", any(signed))
        .route("/v1/linked", get(linked))
        .route("/v1/elsewhere", get(elsewhere))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{}/v1/", addr.port()), seen)
}

fn connector(def: &str, base: &str, creds: Credentials) -> HttpConnector {
    let def = Definition::from_str("test.yaml", def).unwrap_or_else(|e| panic!("{e}"));
    HttpConnector::new(
        Arc::new(def),
        Options {
            name: "api".into(),
            base_url: base.into(),
            credentials: creds,
            allow_hosts: vec!["127.0.0.1".into()],
            ..Options::default()
        },
    )
    .unwrap()
}

async fn all(c: &HttpConnector, entity: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let mut s = c.list(entity, ListOptions::default());
    while let Some(r) = s.next().await {
        out.push(r.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn key() -> Credentials {
    Credentials {
        api_key: Some(SecretString::from(KEY.to_owned())),
        ..Credentials::default()
    }
}

#[tokio::test]
async fn an_api_key_in_a_header_or_the_query_with_cursor_paging() {
    let (base, seen) = serve().await;
    for place in ["header: X-Api-Key", "query: api_key"] {
        let def = format!(
            "name: keyed\nauth: {{type: api_key, {place}}}\nentities:\n  item:\n    list:\n      path: keyed\n      query: {{cursor: '$cursor'}}\n      records: '.items'\n      paging: {{style: cursor, size: 3, next: '.next'}}\n"
        );
        let c = connector(&def, &base, key());
        let got = all(&c, "item").await.unwrap();
        let ids: Vec<i64> = got.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, (0..7).collect::<Vec<_>>(), "{place}");
        // A wrong key: permanent, the connector named, the key not shown.
        let c = connector(
            &def,
            &base,
            Credentials {
                api_key: Some(SecretString::from("wrong-key-value".to_owned())),
                ..Credentials::default()
            },
        );
        let e = all(&c, "item").await.unwrap_err();
        assert!(
            e.starts_with("api: ") && e.contains("refused the credentials"),
            "{e}"
        );
        assert!(!e.contains("wrong-key-value"), "{e}");
    }
    assert!(seen.calls.load(Ordering::Relaxed) >= 6);
}

#[tokio::test]
async fn hmac_signed_requests_over_a_declared_canonical_string() {
    let (base, _) = serve().await;
    let def = r#"
name: signed
auth:
  type: hmac
  header: X-Signature
  prefix: "sha256="
  encoding: hex
  timestamp_header: X-Timestamp
  string: '"\(.method)\n\(.path)\n\(.timestamp)\n\(.body)"'
entities:
  thing:
    list: {path: signed, query: {q: '"汇 通"'}}
    create: {path: signed, body: '{name: .name}', result: '.id'}
"#;
    let creds = Credentials {
        hmac_secret: Some(SecretString::from(HMAC_SECRET.to_owned())),
        ..Credentials::default()
    };
    let c = connector(def, &base, creds);
    assert_eq!(all(&c, "thing").await.unwrap(), vec![json!({"id": 1})]);
    assert_eq!(
        c.create("thing", json!({"name": "螺丝"})).await.unwrap(),
        "99"
    );
    let wrong = Credentials {
        hmac_secret: Some(SecretString::from("another".to_owned())),
        ..Credentials::default()
    };
    let c = connector(def, &base, wrong);
    let e = all(&c, "thing").await.unwrap_err();
    assert!(
        e.contains("refused the credentials") && e.contains("bad signature"),
        "{e}"
    );
}

#[tokio::test]
async fn link_paging_waits_out_a_429_and_redirects_stay_on_one_host() {
    let (base, seen) = serve().await;
    let def = "name: linked\nauth: {type: none}\nentities:\n  item:\n    list: {path: linked, paging: {style: link, size: 3}}\n  away:\n    get: {path: elsewhere, query: {to: '\"http://localhost:1/x\"'}}\n";
    let c = connector(def, &base, Credentials::default());
    let got = all(&c, "item").await.unwrap();
    assert_eq!(got.len(), 7, "{got:?}");
    assert_eq!(
        seen.throttled.load(Ordering::Relaxed),
        2,
        "throttled once, then retried"
    );
    let e = c.get("away", "1").await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("refused a redirect to another host"),
        "{e}"
    );
}

#[derive(Default)]
struct Load {
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    times: std::sync::Mutex<Vec<std::time::Instant>>,
}

async fn slow(State(load): State<Arc<Load>>) -> Response {
    load.times.lock().unwrap().push(std::time::Instant::now());
    let now = load.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    load.max_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    load.in_flight.fetch_sub(1, Ordering::SeqCst);
    axum::Json(json!({"id": 1})).into_response()
}

#[tokio::test]
async fn the_declared_rate_and_concurrency_hold_under_parallel_calls() {
    let load = Arc::new(Load::default());
    let app = Router::new()
        .route("/v1/slow/{id}", get(slow))
        .with_state(load.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let def = "name: limited\nauth: {type: none}\nlimits: {per_second: 5, concurrency: 2}\nentities:\n  item:\n    get: {path: 'slow/{id}'}\n";
    let c = Arc::new(connector(
        def,
        &format!("http://127.0.0.1:{port}/v1/"),
        Credentials::default(),
    ));
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.get("item", &i.to_string()).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), Some(json!({"id": 1})));
    }
    assert_eq!(
        load.max_in_flight.load(Ordering::SeqCst),
        2,
        "the concurrency cap"
    );
    // No second-long window saw more than the declared five calls (as the server counts).
    let times = load.times.lock().unwrap().clone();
    assert_eq!(times.len(), 12);
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < std::time::Duration::from_secs(1))
            .count();
        assert!(in_window <= 5, "{in_window} calls within a second");
    }
}
