//! What the org-sync, live, echo and push tests share: the shared fixtures, an empty org, a
//! running vendor sandbox and its JSON, people by employee number, polling, a temporary folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::sandbox::{FaultSpec, Running, VendorSandbox};
use serde_json::{Value, json};

/// A fixture of `tests/fixtures` (small-org.json, medium-org.json).
pub fn fixture(name: &str) -> OrgFixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    match OrgFixture::load(&path) {
        Ok(f) => f,
        Err(e) => panic!("fixture {}: {e}", path.display()),
    }
}

/// An org with only its root department, named `root`.
pub fn empty_org(root: &str) -> OrgFixture {
    serde_json::from_value(json!({
        "departments": [{"key": "root", "name": root, "parent": null, "order": 0, "leaders": []}],
        "users": []
    }))
    .unwrap_or_else(|e| panic!("empty org: {e}"))
}

/// `opts`' sandbox (any vendor's `SandboxOptions`) serving on a free port of 127.0.0.1 until the
/// returned value is dropped; its address is `.base`. Panics if it cannot start.
pub async fn sandbox<S: VendorSandbox>(opts: S) -> Running {
    Running::start(opts)
        .await
        .unwrap_or_else(|e| panic!("the {} sandbox did not start: {e}", S::VENDOR))
}

/// The Feishu app the org-sync tests call `hq` (`cli_hq`, secret `hq-secret`), seeded with
/// `org`, its built-in limits off, injecting `faults`.
pub async fn feishu_hq(org: OrgFixture, faults: FaultSpec) -> Running {
    let mut o =
        huitong_connectors::feishu::sandbox::SandboxOptions::new(org, "cli_hq", "hq-secret");
    o.rate_limits = false;
    o.faults = faults;
    sandbox(o).await
}

/// A WeCom corp (`corp_id`, secret `factory-secret`, agent 1000002) seeded with `org`,
/// injecting `faults`.
pub async fn wecom_corp(org: OrgFixture, corp_id: &str, faults: FaultSpec) -> Running {
    let mut o = huitong_connectors::wecom::sandbox::SandboxOptions::new(
        org,
        corp_id,
        "factory-secret",
        1000002,
    );
    o.faults = faults;
    sandbox(o).await
}

/// The secrets of [`hq_to_factory`]'s connectors.
pub const HQ_FACTORY_SECRETS: &[(&str, &str)] = &[
    ("HQ_SECRET", "hq-secret"),
    ("FACTORY_SECRET", "factory-secret"),
];

/// `dir/huitong.toml`: a SQLite store in `dir`, the Feishu `hq` at `feishu`, the WeCom
/// `factory` (`wwfactory`) at `wecom`, the route `org` from one to the other, then `extra`.
pub fn hq_to_factory(dir: &Path, feishu: &str, wecom: &str, extra: &str) -> PathBuf {
    let file = dir.join("huitong.toml");
    let text = format!(
        "[database]\nurl = \"sqlite://{db}\"\n\n[connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_hq\"\n\
         app_secret_env = \"HQ_SECRET\"\nbase_url = \"{feishu}\"\n\n[connectors.factory]\nkind = \"wecom\"\n\
         corp_id = \"wwfactory\"\nagent_id = 1000002\ncorp_secret_env = \"FACTORY_SECRET\"\n\
         base_url = \"{wecom}\"\n\n[routes.org]\nsource = \"hq\"\ntargets = [\"factory\"]\n{extra}",
        db = dir.join("huitong.db").display(),
    );
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    file
}

/// GET `url` as JSON (a sandbox's `/_sandbox/*`).
pub async fn get(url: &str) -> Value {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// The person of a `/_sandbox/org` snapshot with this employee number (or fixture key).
pub fn user<'a>(org: &'a Value, employee_no: &str) -> Option<&'a Value> {
    org["users"].as_array()?.iter().find(|u| {
        u["employee_no"].as_str() == Some(employee_no) || u["key"].as_str() == Some(employee_no)
    })
}

/// Polls `check` every 100 ms for at most `secs` seconds; panics naming `what` otherwise.
pub async fn within(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..secs * 10 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within {secs} s: {what}");
}

/// [`within`] 30 seconds.
pub async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    within(30, what, check).await
}

/// A fresh folder under the system's temporary one.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    d
}

/// The configuration's queue with a consumer of every route's `deliver.<route>` running, as in
/// `huitong serve`: `sync::apply` publishes its steps there.
pub struct Delivering {
    pub queue: std::sync::Arc<dyn huitong::queue::Queue>,
    _consumers: Vec<huitong::queue::ConsumerHandle>,
}

pub async fn delivering(
    config: &huitong::config::Config,
    store: std::sync::Arc<dyn huitong::store::Store>,
) -> Delivering {
    let queue = huitong::queue::open(config, store.clone())
        .await
        .unwrap_or_else(|e| panic!("queue: {e}"));
    delivering_on(queue, config, store, 1).await
}

/// [`delivering`] on a given queue, with `consumers` consumers per route (as several
/// huitong processes sharing one queue).
pub async fn delivering_on(
    queue: std::sync::Arc<dyn huitong::queue::Queue>,
    config: &huitong::config::Config,
    store: std::sync::Arc<dyn huitong::store::Store>,
    consumers: usize,
) -> Delivering {
    let mut all = Vec::new();
    for _ in 0..consumers {
        all.extend(
            huitong::jobs::start_deliveries(config, store.clone(), &*queue)
                .await
                .unwrap_or_else(|e| panic!("deliver consumers: {e}")),
        );
    }
    Delivering {
        queue,
        _consumers: all,
    }
}

/// The calls a sandbox served (`/_sandbox/calls`) whose "METHOD /path" key `counts`.
pub async fn calls_where(base: &str, counts: impl Fn(&str) -> bool) -> u64 {
    let calls = get(&format!("{base}/_sandbox/calls")).await;
    calls["calls"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| counts(k))
                .map(|(_, v)| v.as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// An edit through a sandbox's console (`POST`/`PATCH`/`DELETE /_sandbox/org/...`), which must
/// succeed.
pub async fn console(method: reqwest::Method, url: &str, body: Value) {
    let r = reqwest::Client::new()
        .request(method, url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status();
    assert!(
        status.is_success(),
        "{url}: {status} {}",
        r.text().await.unwrap_or_default()
    );
}

/// The configuration of `file` with these environment variables (secrets), as `huitong` loads
/// it; panics naming the problems.
pub fn load_config(file: PathBuf, env: &[(&str, &str)]) -> huitong::config::Config {
    huitong::config::load(&huitong::config::Sources {
        file: Some(file),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        overrides: vec![],
    })
    .unwrap_or_else(|e| panic!("config: {e}"))
}

/// Resolves once `rx` changes or its sender is gone: the shutdown signal the tests give
/// `App::serve`.
pub async fn until(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.changed().await;
}

/// A listener for huitong on a free port of 127.0.0.1, bound first (the sandboxes need its
/// callback address), and its base URL.
pub async fn hub_listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let base = format!(
        "http://{}",
        l.local_addr().unwrap_or_else(|e| panic!("address: {e}"))
    );
    (l, base)
}
