//! The Feishu sandbox: an emulator of the Feishu Open Platform for tests and offline trials
//! (`huitong sandbox feishu`). It serves Feishu's real paths (`/open-apis/…`), envelopes,
//! page_token pagination, error codes, token expiry and rate limits (HTTP 429, code 99991400,
//! `x-ogw-ratelimit-*`), is seeded from an org fixture, keeps state, and emits Feishu's events for
//! every change — encrypted and signed when an Encrypt Key is set — to `--event-url`.
//! Admin endpoints: see [`crate::sandbox`].

// Handlers and their helpers fail with a ready Feishu error reply; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

mod contact;
mod im;
mod org;
mod task;
mod ws;

use crate::feishu::events::build_callback;
pub(crate) use crate::sandbox::kit::now_ms;
use crate::sandbox::prelude::*;

use org::{Org, OrgError};

/// Everything `huitong sandbox feishu` takes (clap-free).
#[derive(Clone)]
pub struct SandboxOptions {
    /// The org, events, faults, token lifetime and limits every sandbox takes.
    pub common: CommonOptions,
    pub app_id: String,
    pub app_secret: SecretString,
    pub encrypt_key: Option<SecretString>,
    pub verification_token: Option<SecretString>,
    pub tenant_key: String,
}

impl SandboxOptions {
    pub fn new(org: OrgFixture, app_id: impl Into<String>, app_secret: impl Into<String>) -> Self {
        Self {
            common: CommonOptions::with_retry_secs(org, &[1, 5, 15, 60]),
            app_id: app_id.into(),
            app_secret: SecretString::from(app_secret.into()),
            encrypt_key: None,
            verification_token: None,
            tenant_key: "tk_sandbox".into(),
        }
    }
}

crate::sandbox::kit::common_options!(SandboxOptions);

impl crate::sandbox::VendorSandbox for SandboxOptions {
    const VENDOR: &'static str = "feishu";
    fn app_label(&self) -> String {
        format!("app {}", self.app_id)
    }
    /// The sandbox as a router (for embedding); `stop` ends its event delivery.
    fn router(self, stop: tokio::sync::watch::Receiver<bool>) -> Result<Router, SandboxError> {
        let opts = self;
        opts.check_app("app id", &opts.app_id)?;
        let core = SandboxCore::for_options("feishu", &opts, stop.clone(), || {
            Ok(Arc::new(FeishuEncoder {
                encrypt_key: opts
                    .encrypt_key
                    .as_ref()
                    .map(|k| k.expose_secret().to_string()),
            }))
        })?;
        let org = Org::new(&opts.org, &opts.app_id);
        let own = Own {
            windows: Mutex::new(HashMap::new()),
            im: Mutex::new(im::ImState::default()),
            tasks: Mutex::new(task::TaskState::default()),
            ws_devices: Mutex::new(HashMap::new()),
            stop,
        };
        let app = Arc::new(App::new(opts, core.clone(), org, own));
        let api = Router::new()
            .merge(contact::routes())
            .merge(im::routes())
            .merge(task::routes())
            .route_layer(axum::middleware::from_fn_with_state(app.clone(), gate))
            .route(
                "/open-apis/auth/v3/tenant_access_token/internal",
                post(tenant_token),
            )
            .route(
                "/open-apis/auth/v3/app_access_token/internal",
                post(app_token),
            )
            .merge(ws::routes())
            .route("/_sandbox/im/receive", post(im::receive))
            .with_state(app.clone());
        Ok(api
            .merge(admin_router(core, Arc::new(AdminHandle(app))))
            .fallback(|| async { fs_err(StatusCode::NOT_FOUND, 99991201, "path not found") })
            .layer(axum::middleware::map_response(
                |mut r: Response| async move {
                    let id = uuid::Uuid::new_v4().simple().to_string();
                    if let Ok(v) = HeaderValue::from_str(&id) {
                        r.headers_mut().insert("x-tt-logid", v);
                    }
                    r
                },
            )))
    }
}

/// Runs the sandbox on `listener` until `shutdown` resolves; the sandbox as a router.
pub use crate::sandbox::{serve_vendor as serve, vendor_router as router};

/// The Feishu sandbox's state.
pub(crate) type App = crate::sandbox::VendorApp<SandboxOptions, Org, Own>;

/// What only the Feishu sandbox keeps.
pub(crate) struct Own {
    /// per-API token buckets: (second-bucket tokens, minute-bucket tokens, last refill)
    windows: Mutex<HashMap<&'static str, (f64, f64, Instant)>>,
    pub im: Mutex<im::ImState>,
    pub tasks: Mutex<task::TaskState>,
    /// long-connection device ids handed out by the endpoint -> service id
    ws_devices: Mutex<HashMap<String, i32>>,
    /// Turns true when the sandbox stops: long-connection sessions end.
    stop: tokio::sync::watch::Receiver<bool>,
}

pub(crate) type AppState = State<Arc<App>>;

/// `{"code":0,"msg":"success","data":…}`
pub(crate) fn ok(data: Value) -> Response {
    Json(json!({"code": 0, "msg": "success", "data": data})).into_response()
}

/// A Feishu error envelope.
pub(crate) fn fs_err(status: StatusCode, code: i64, msg: &str) -> Response {
    (
        status,
        Json(json!({"code": code, "msg": msg, "error": {"log_id": uuid::Uuid::new_v4().simple().to_string()}})),
    )
        .into_response()
}

/// Feishu's query booleans: the Python SDK sends `True`/`False`.
pub(crate) fn qbool(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

pub(crate) fn uid_type(q: &HashMap<String, String>) -> Result<String, Response> {
    id_type(q, "user_id_type", &["open_id", "union_id", "user_id"])
}

pub(crate) fn did_type(q: &HashMap<String, String>) -> Result<String, Response> {
    id_type(
        q,
        "department_id_type",
        &["open_department_id", "department_id"],
    )
}

/// The id type asked for under `param`: one of `allowed`, the first by default.
fn id_type(q: &HashMap<String, String>, param: &str, allowed: &[&str]) -> Result<String, Response> {
    let t = q.get(param).map_or(allowed[0], String::as_str);
    if allowed.contains(&t) {
        Ok(t.to_string())
    } else {
        let msg = format!("invalid {param}");
        Err(fs_err(StatusCode::BAD_REQUEST, 40001, &msg))
    }
}

/// Pages `items` per `page_size` (default, max) and the opaque `page_token`.
pub(crate) fn page(
    items: Vec<Value>,
    q: &HashMap<String, String>,
    default_size: usize,
    max_size: usize,
    size_code: i64,
    token_code: i64,
) -> Result<Value, Response> {
    page_by(
        items.len(),
        q,
        (default_size, max_size),
        (size_code, token_code),
        |s, e| items[s..e].to_vec(),
    )
}

/// Like [`page`] over `total` items of which only the page is rendered: `render(start, end)`
/// gives the items at those positions. `sizes` = (default, max) page size, `codes` = the error
/// codes of a bad page size and a bad page token.
pub(crate) fn page_by(
    total: usize,
    q: &HashMap<String, String>,
    (default_size, max_size): (usize, usize),
    (size_code, token_code): (i64, i64),
    render: impl FnOnce(usize, usize) -> Vec<Value>,
) -> Result<Value, Response> {
    let size = match q.get("page_size") {
        None => default_size,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max_size).contains(&n) => n,
            _ => {
                return Err(fs_err(
                    StatusCode::BAD_REQUEST,
                    size_code,
                    "page size is invalid",
                ));
            }
        },
    };
    let start = match q.get("page_token").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => match t.strip_prefix("pt_").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n <= total => n,
            _ => {
                return Err(fs_err(
                    StatusCode::BAD_REQUEST,
                    token_code,
                    "page token is invalid",
                ));
            }
        },
    };
    let end = start.saturating_add(size).min(total);
    let has_more = end < total;
    let mut data = json!({"has_more": has_more, "items": render(start, end)});
    if has_more {
        data["page_token"] = json!(format!("pt_{end}"));
    }
    Ok(data)
}

pub(crate) fn json_body(body: &[u8]) -> Result<Map<String, Value>, Response> {
    json_object(body).ok_or_else(|| {
        fs_err(
            StatusCode::BAD_REQUEST,
            40001,
            "request body is not a JSON object",
        )
    })
}

impl App {
    /// Feishu's published limits per API.
    fn rate_check(&self, endpoint: &str) -> Result<(), (u32, u64)> {
        if !self.opts.rate_limits {
            return Ok(());
        }
        let (key, qps, qpm): (&'static str, u32, u32) = if endpoint.contains("/task/v2/") {
            ("task", 10, 0)
        } else if endpoint.starts_with("POST /open-apis/im/v1/messages") {
            ("im_send", 50, 1000)
        } else if endpoint.contains("/im/v1/images") || endpoint.contains("/im/v1/files") {
            ("im_upload", 5, 0)
        } else {
            ("contact", 50, 1000)
        };
        // Token buckets (a burst of the quota, refilled evenly), one per second-quota and one per
        // minute-quota: exceeding either trips the limit, as on Feishu.
        let now = Instant::now();
        let mut w = lock(&self.windows);
        let e = w
            .entry(key)
            .or_insert((f64::from(qps), f64::from(qpm), now));
        let dt = now.duration_since(e.2).as_secs_f64();
        e.2 = now;
        e.0 = (e.0 + dt * f64::from(qps)).min(f64::from(qps));
        e.1 = (e.1 + dt * f64::from(qpm) / 60.0).min(f64::from(qpm));
        if qps > 0 && e.0 < 1.0 {
            return Err((qps, 1));
        }
        if qpm > 0 && e.1 < 1.0 {
            let wait = ((1.0 - e.1) * 60.0 / f64::from(qpm)).ceil().max(1.0) as u64;
            return Err((qpm, wait));
        }
        if qps > 0 {
            e.0 -= 1.0;
        }
        if qpm > 0 {
            e.1 -= 1.0;
        }
        Ok(())
    }
}

/// Feishu's published limit of an API (per app and tenant), as `enforce_rate_limits` enforces
/// it (§4, §5, §6, §9 of the vendor notes):
/// - contact v3: `users/find_by_department` and user create are documented at tier 4 (1000/min
///   and 50/s); the other contact APIs are not documented one by one: tier 4 too, the tier of
///   the contact APIs that are;
/// - IM send: 1000/min and 50/s; image / file upload: 5/s (tier 6);
/// - task v2: 10/s (tier 7);
/// - anything else: tier 4.
pub fn published_limits(endpoint: &str) -> &'static [RateWindow] {
    const TIER_4: &[RateWindow] = &[RateWindow::per_second(50), RateWindow::per_minute(1000)];
    const TIER_6: &[RateWindow] = &[RateWindow::per_second(5)];
    const TIER_7: &[RateWindow] = &[RateWindow::per_second(10)];
    if endpoint.contains("/open-apis/task/v2/") {
        TIER_7
    } else if endpoint.contains("/im/v1/images") || endpoint.contains("/im/v1/files") {
        TIER_6
    } else {
        TIER_4
    }
}

fn rate_limited(limit: u32, reset: u64) -> Response {
    let mut r = fs_err(
        StatusCode::TOO_MANY_REQUESTS,
        99991400,
        "request trigger frequency limit",
    );
    let h = r.headers_mut();
    h.insert("x-ogw-ratelimit-limit", HeaderValue::from(limit));
    h.insert("x-ogw-ratelimit-reset", HeaderValue::from(reset));
    r
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get("authorization")?.to_str().ok()?;
    let (scheme, t) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| t.trim())
}

/// Counts the call, checks the token, injects faults, enforces the published limits.
async fn gate(State(app): AppState, req: Request, next: Next) -> Response {
    let endpoint = endpoint_of(&req);
    app.core.count_call(&endpoint);
    let token = match bearer(req.headers()) {
        None => {
            return fs_err(
                StatusCode::BAD_REQUEST,
                99991661,
                "Missing access token for authorization. Please make a request with token attached.",
            );
        }
        Some(t) if !(t.starts_with("t-") || t.starts_with("u-")) => {
            return fs_err(
                StatusCode::BAD_REQUEST,
                99991671,
                "Invalid access token format: the token must start with t- or u-.",
            );
        }
        Some(t) => t.to_string(),
    };
    if !app.tokens.is_live(&token) {
        return invalid_token();
    }
    let limit = || {
        if app.opts.enforce_rate_limits {
            // Limits are per API: the endpoint is the key.
            if let Err(r) = app.core.enforce(
                &endpoint,
                &endpoint,
                published_limits(&endpoint),
                app.opts.rate_limit_scale,
            ) {
                return Err(rate_limited(r.window.limit, r.retry_after_secs()));
            }
        } else if let Err((limit, reset)) = app.rate_check(&endpoint) {
            app.core.count_fault("rate-limit");
            return Err(rate_limited(limit, reset));
        }
        Ok(())
    };
    app.core
        .gated(&FAULTS, || app.tokens.revoke(&token), limit, next.run(req))
        .await
}

/// Feishu's answers to injected faults.
const FAULTS: FaultReplies = FaultReplies {
    server_error: || fs_err(StatusCode::INTERNAL_SERVER_ERROR, 1500, "internal error"),
    rate_limited: || rate_limited(50, 1),
    token_expired: invalid_token,
};

fn invalid_token() -> Response {
    fs_err(
        StatusCode::BAD_REQUEST,
        99991663,
        "Invalid access token for authorization. Please make a new request with token attached.",
    )
}

/// Issues (or re-issues) a tenant token. The Python SDK posts without Content-Type.
fn issue_token(app: &App, body: &[u8]) -> Result<(String, u64), Response> {
    let m = json_body(body)?;
    let [id, secret] = credentials(&m, ["app_id", "app_secret"]);
    if id.is_empty() || secret.is_empty() {
        return Err(fs_err(StatusCode::BAD_REQUEST, 10003, "invalid param"));
    }
    if id != app.opts.app_id
        || !crate::crypto::ct_eq(
            secret.as_bytes(),
            app.opts.app_secret.expose_secret().as_bytes(),
        )
    {
        return Err(fs_err(StatusCode::BAD_REQUEST, 10014, "app secret invalid"));
    }
    // Feishu returns the same token while more than 30 minutes remain.
    Ok(app.tokens.issue(
        app.opts.token_ttl,
        Reissue::WhileMoreThan(Duration::from_secs(1800)),
        Duration::ZERO,
        || format!("t-{}", uuid::Uuid::new_v4().simple()),
    ))
}

async fn tenant_token(State(app): AppState, body: axum::body::Bytes) -> Response {
    app.core
        .count_call("POST /open-apis/auth/v3/tenant_access_token/internal");
    match issue_token(&app, &body) {
        Ok((t, expire)) => {
            Json(json!({"code": 0, "msg": "ok", "tenant_access_token": t, "expire": expire}))
                .into_response()
        }
        Err(r) => r,
    }
}

async fn app_token(State(app): AppState, body: axum::body::Bytes) -> Response {
    app.core
        .count_call("POST /open-apis/auth/v3/app_access_token/internal");
    match issue_token(&app, &body) {
        Ok((t, expire)) => Json(json!({"code": 0, "msg": "ok", "app_access_token": t, "tenant_access_token": t, "expire": expire})).into_response(),
        Err(r) => r,
    }
}

/// Encrypts and signs events as Feishu does when an Encrypt Key is set.
struct FeishuEncoder {
    encrypt_key: Option<String>,
}

impl EventEncoder for FeishuEncoder {
    fn encode(&self, event: &Value) -> EncodedEvent {
        let ts = (now_ms() / 1000).max(0);
        let nonce = hex::encode(crate::crypto::random_bytes::<8>());
        let (headers, body) = build_callback(self.encrypt_key.as_deref(), event, ts, &nonce);
        EncodedEvent { headers, body }
    }
}

impl From<OrgError> for AdminError {
    fn from(e: OrgError) -> Self {
        match e {
            OrgError::NotFound(m) => AdminError::NotFound(m),
            OrgError::Conflict(m) => AdminError::Conflict(m),
            OrgError::Invalid(m) => AdminError::Invalid(m),
        }
    }
}

/// Feishu's console (`/_sandbox/org…`): what an HR admin does there, and the events it emits.
impl Console for App {
    type Org = Org;

    fn org(&self) -> &Mutex<Org> {
        &self.org
    }

    /// Emits Feishu events (schema 2.0 envelopes).
    fn emit(&self, events: org::Emitted) {
        for (event_type, event) in events {
            let token = self
                .opts
                .verification_token
                .as_ref()
                .map(|t| t.expose_secret().to_string())
                .unwrap_or_default();
            let envelope = json!({
                "schema": "2.0",
                "header": {
                    "event_id": uuid::Uuid::new_v4().simple().to_string(),
                    "event_type": event_type,
                    "create_time": now_ms().to_string(),
                    "token": token,
                    "app_id": self.opts.app_id,
                    "tenant_key": self.opts.tenant_key,
                },
                "event": event,
            });
            self.core.emit(envelope);
        }
    }

    fn expire_tokens(&self) {
        self.tokens.clear();
    }

    fn render_user(org: &Org, key: &str) -> Value {
        org.render_user(key, "open_department_id")
    }

    fn render_dept(org: &Org, key: &str) -> Value {
        org.render_dept(key, "open_id", "open_department_id")
    }

    fn add_user(&self, org: &mut Org, user: FixtureUser) -> Added<Self> {
        Ok(org.create_user(user, Map::new(), &self.opts.app_id)?)
    }

    fn patch_user(org: &mut Org, key: &str, patch: &Value) -> Changed<Self> {
        let (_, fx) = org.patched_user(key, patch)?;
        Ok(org.update_user(key, fx, Map::new())?)
    }

    fn add_dept(&self, org: &mut Org, dept: FixtureDepartment) -> Added<Self> {
        if dept.parent.is_none() {
            return Err(AdminError::Invalid("parent is required".into()));
        }
        Ok(org.create_dept(dept, None, &self.opts.app_id)?)
    }

    fn patch_dept(org: &mut Org, key: &str, patch: &Value) -> Changed<Self> {
        let fx = org.patched_dept(key, patch)?;
        Ok(org.update_dept(key, fx)?)
    }
}

/// A short stable hash used for derived ids (chat ids).
pub(crate) fn org_hash(key: &str) -> String {
    hex::encode(crate::crypto::sha256(format!("chat:{key}").as_bytes()))[..32].to_string()
}
