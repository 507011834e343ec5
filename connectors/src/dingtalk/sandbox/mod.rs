//! The DingTalk sandbox: an emulator of the DingTalk Open Platform for tests and offline trials
//! (`huitong sandbox dingtalk`). One origin serves both API generations — the old `oapi` paths
//! (`?access_token=`, HTTP 200 `{errcode,errmsg}` envelopes, JSON or form bodies) and the v1.0
//! `api` paths (`x-acs-dingtalk-access-token`, HTTP-status errors `{code,message,requestid}`) —
//! with DingTalk's ids (numeric `dept_id`, root 1; string `userid`; `unionid`), cursor paging,
//! error codes, token expiry and the 20 calls/s per app per API limit (90018 /
//! `Forbidden.AccessDenied.QpsLimitForAppkeyAndApi`). Every org change emits DingTalk's event:
//! POSTed encrypted and signed to `--event-url` (WXBizMsgCrypt, owner key = app key), and
//! pushed to Stream-mode connections (`/v1.0/gateway/connections/open` + WebSocket), which must
//! ack (un-acked events are redelivered on the next connection).
//!
//! Admin endpoints: see [`crate::sandbox`]; plus `GET /_sandbox/stream` (connections, acks,
//! pending) and `POST /_sandbox/stream/disconnect` (sends SYSTEM `disconnect` to every
//! connection).

// Handlers and their helpers fail with a ready DingTalk error reply; boxing it buys nothing.
#![allow(clippy::result_large_err)]

mod contact;
mod message;
mod org;
mod stream;
mod todo;

use crate::dingtalk::events::build_callback;
pub(crate) use crate::sandbox::kit::now_ms;
use crate::sandbox::prelude::*;
use crate::wxbiz::WxBizMsgCrypt;

use org::{Org, OrgError};

/// Everything `huitong sandbox dingtalk` takes (clap-free).
#[derive(Clone)]
pub struct SandboxOptions {
    /// The org, events, faults, token lifetime and limits every sandbox takes.
    pub common: CommonOptions,
    pub app_key: String,
    pub app_secret: SecretString,
    /// HTTP push callback aes_key (43 chars); with `token`, needed for `event_url`.
    pub aes_key: Option<SecretString>,
    /// HTTP push callback token.
    pub token: Option<SecretString>,
    pub corp_id: String,
    /// The app's agent id (work notifications).
    pub agent_id: i64,
    /// Custom-robot webhooks: (access_token, optional `SEC…` secret).
    pub custom_robots: Vec<(String, Option<String>)>,
    /// Push in the legacy `register_call_back` format (`UserId`/`DeptId`/`TimeStamp`, owner key
    /// = corp id) instead of the current one (`userId`/`deptId`/`eventId`, owner key = app key).
    pub legacy_events: bool,
}

impl SandboxOptions {
    pub fn new(org: OrgFixture, app_key: impl Into<String>, app_secret: impl Into<String>) -> Self {
        Self {
            common: CommonOptions::with_retry_secs(org, &[1, 5, 15, 60]),
            app_key: app_key.into(),
            app_secret: SecretString::from(app_secret.into()),
            aes_key: None,
            token: None,
            corp_id: "dingsandboxcorp".into(),
            agent_id: 100001,
            custom_robots: vec![("sandbox-robot".into(), Some("SECsandboxrobotsecret".into()))],
            legacy_events: false,
        }
    }
}

crate::sandbox::kit::common_options!(SandboxOptions);

/// DingTalk's published per-API limit for a standard-edition org: 20 calls/s per app per API
/// (old API: errcode 90018; v1.0: HTTP 403 `Forbidden.AccessDenied.QpsLimitForAppkeyAndApi`).
pub const PUBLISHED_LIMITS: &[RateWindow] = &[RateWindow::per_second(20)];

impl crate::sandbox::VendorSandbox for SandboxOptions {
    const VENDOR: &'static str = "dingtalk";
    fn app_label(&self) -> String {
        format!("app {}", self.app_key)
    }
    fn check(&self) -> Result<(), SandboxError> {
        if self.event_url.is_some() && self.aes_key.is_none() {
            return Err(SandboxError::Options(
                "--event-url needs --aes-key and --token: DingTalk encrypts every push".into(),
            ));
        }
        Ok(())
    }
    /// The sandbox as a router (for embedding); `stop` ends its event delivery and stream sessions.
    fn router(self, stop: tokio::sync::watch::Receiver<bool>) -> Result<Router, SandboxError> {
        let opts = self;
        opts.check_app("app key", &opts.app_key)?;
        let crypt = wxbiz_crypt(
            opts.token.as_ref(),
            opts.aes_key.as_ref(),
            "aes key",
            "--aes-key and --token go together",
        )?;
        let core = SandboxCore::for_options("dingtalk", &opts, stop.clone(), || {
            let Some(crypt) = crypt else {
                return Err(SandboxError::Options(
                    "--event-url needs --aes-key and --token (DingTalk pushes are encrypted)"
                        .into(),
                ));
            };
            Ok(Arc::new(DingTalkEncoder {
                crypt,
                owner: if opts.legacy_events {
                    opts.corp_id.clone()
                } else {
                    opts.app_key.clone()
                },
                legacy: opts.legacy_events,
            }))
        })?;
        let own = Own {
            windows: Mutex::new(HashMap::new()),
            msg: Mutex::new(message::MsgState::default()),
            todos: Mutex::new(todo::TodoState::default()),
            stream: stream::StreamState::default(),
            stop,
        };
        let org = Org::new(&opts.org);
        let app = Arc::new(App::new(opts, core.clone(), org, own));
        let old = contact::routes()
            .merge(message::old_routes())
            .route_layer(axum::middleware::from_fn_with_state(app.clone(), gate_old));
        let new = message::new_routes()
            .merge(todo::routes())
            .route_layer(axum::middleware::from_fn_with_state(app.clone(), gate_new));
        let api = Router::new()
            .merge(old)
            .merge(new)
            .route("/gettoken", get(old_token))
            .route("/v1.0/oauth2/accessToken", post(new_token))
            .merge(message::open_routes())
            .merge(stream::routes())
            .with_state(app.clone());
        Ok(api
            .merge(admin_router(core, Arc::new(AdminHandle(app))))
            .fallback(fallback)
            .layer(axum::middleware::map_response(
                |mut r: Response| async move {
                    let h = r.headers_mut();
                    h.insert("server", HeaderValue::from_static("DingTalk/1.0.0"));
                    if let Ok(v) = HeaderValue::from_str(&request_id()) {
                        h.insert("x-acs-request-id", v);
                    }
                    r
                },
            )))
    }
}

/// Runs the sandbox on `listener` until `shutdown` resolves; the sandbox as a router.
pub use crate::sandbox::{serve_vendor as serve, vendor_router as router};

async fn fallback(req: Request) -> Response {
    if req.uri().path().starts_with("/v1.0/") {
        new_err(StatusCode::NOT_FOUND, "NotFound", "请求的URI地址不存在")
    } else {
        old_err(404, "请求的URI地址不存在")
    }
}

/// The DingTalk sandbox's state.
pub(crate) type App = crate::sandbox::VendorApp<SandboxOptions, Org, Own>;

/// What only the DingTalk sandbox keeps.
pub(crate) struct Own {
    /// per (API) token bucket: (tokens, last refill)
    windows: Mutex<HashMap<String, (f64, Instant)>>,
    pub msg: Mutex<message::MsgState>,
    pub todos: Mutex<todo::TodoState>,
    pub stream: stream::StreamState,
    /// Turns true when the sandbox stops: stream sessions end.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

pub(crate) type AppState = State<Arc<App>>;

pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Old-generation success: `{"errcode":0,"errmsg":"ok",…fields,"request_id"}`.
pub(crate) fn old_ok(fields: Value) -> Response {
    let mut m = Map::new();
    m.insert("errcode".into(), json!(0));
    m.insert("errmsg".into(), json!("ok"));
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    m.insert("request_id".into(), json!(request_id()));
    Json(Value::Object(m)).into_response()
}

/// Old-generation error: HTTP 200 with a non-zero errcode.
pub(crate) fn old_err(code: i64, msg: &str) -> Response {
    Json(json!({"errcode": code, "errmsg": msg, "request_id": request_id()})).into_response()
}

/// v1.0 error: HTTP status + `{code, requestid, message}`.
pub(crate) fn new_err(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        Json(json!({"code": code, "requestid": request_id(), "message": msg})),
    )
        .into_response()
}

pub(crate) fn org_err(e: OrgError) -> Response {
    old_err(e.0, &e.1)
}

/// An old-generation body: JSON, or form-urlencoded (nested objects then arrive as JSON
/// strings, which handlers accept).
pub(crate) fn old_body(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.contains("x-www-form-urlencoded") {
        let text = std::str::from_utf8(body).map_err(|_| old_err(40035, "不合法的参数"))?;
        let uri: axum::http::Uri = format!("/?{}", text.trim())
            .parse()
            .map_err(|_| old_err(40035, "不合法的参数"))?;
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .map_err(|_| old_err(40035, "不合法的参数"))?;
        return Ok(pairs
            .into_iter()
            .map(|(k, v)| {
                // msg and other nested objects come as JSON strings
                let val = match serde_json::from_str::<Value>(&v) {
                    Ok(o @ Value::Object(_)) => o,
                    _ => Value::String(v),
                };
                (k, val)
            })
            .collect());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(old_err(40035, "不合法的参数: body is not a JSON object")),
    }
}

/// A v1.0 body: JSON only (a form → 400 "body is mandatory").
pub(crate) fn new_body(body: &[u8]) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(new_err(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "body is mandatory",
        )),
    }
}

impl App {
    /// 20 calls/s per app per API: exactly (sliding window, per endpoint) with
    /// `enforce_rate_limits`, else with `rate_limits` a token bucket with a burst of 20. A
    /// refusal is counted (fault `rate-limit`) and answered with `refused()`.
    fn rate_check(&self, endpoint: &str, refused: fn() -> Response) -> Result<(), Response> {
        if self.within_limits(endpoint) {
            Ok(())
        } else {
            Err(refused())
        }
    }

    fn within_limits(&self, endpoint: &str) -> bool {
        if self.opts.enforce_rate_limits {
            return self
                .core
                .enforce(
                    endpoint,
                    endpoint,
                    PUBLISHED_LIMITS,
                    self.opts.rate_limit_scale,
                )
                .is_ok();
        }
        if !self.opts.rate_limits {
            return true;
        }
        let qps = 20.0;
        let now = Instant::now();
        let mut w = lock(&self.windows);
        let e = w.entry(endpoint.to_string()).or_insert((qps, now));
        let dt = now.duration_since(e.1).as_secs_f64();
        e.1 = now;
        e.0 = (e.0 + dt * qps).min(qps);
        if e.0 < 1.0 {
            self.core.count_fault("rate-limit");
            return false;
        }
        e.0 -= 1.0;
        true
    }

    /// Issues a token, or re-issues the live one (extending it), as DingTalk does.
    fn issue_token(&self, key: &str, secret: &str) -> Option<(String, u64)> {
        if key != self.opts.app_key
            || !crate::crypto::ct_eq(
                secret.as_bytes(),
                self.opts.app_secret.expose_secret().as_bytes(),
            )
        {
            return None;
        }
        Some(
            self.tokens
                .issue(self.opts.token_ttl, Reissue::Renew, Duration::ZERO, || {
                    uuid::Uuid::new_v4().simple().to_string()
                }),
        )
    }
}

/// The old generation's gateway failing (injected 5xx and lost replies): HTML, not JSON.
fn bad_gateway() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        "<html><body>502 Bad Gateway</body></html>",
    )
        .into_response()
}

/// v1.0's server error (injected 5xx and lost replies).
fn unknown_error() -> Response {
    new_err(
        StatusCode::INTERNAL_SERVER_ERROR,
        "unknownError",
        "系统错误",
    )
}

/// What differs between the two API generations' gates: where the token travels, the replies to
/// a missing or unknown token, and the replies to injected faults.
struct Generation {
    token: fn(&Request) -> Option<String>,
    missing_token: fn() -> Response,
    invalid_token: fn() -> Response,
    faults: FaultReplies,
}

/// The old generation: `?access_token=`, errcodes with HTTP 200 (its gateway fails in HTML).
const OLD: Generation = Generation {
    token: |req| query_param(req, "access_token"),
    missing_token: || old_err(41001, "缺少access_token参数"),
    invalid_token: || old_err(40014, "不合法的access_token"),
    faults: FaultReplies {
        server_error: bad_gateway,
        rate_limited: || old_err(90018, "当前企业调用该接口超过限制, 限制规则为每秒20次"),
        token_expired: || old_err(42001, "access_token超时"),
    },
};

/// v1.0: `x-acs-dingtalk-access-token`, HTTP-status errors.
const NEW: Generation = Generation {
    token: |req| {
        req.headers()
            .get(crate::dingtalk::client::TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
    },
    missing_token: || {
        new_err(
            StatusCode::UNAUTHORIZED,
            "MissingParameter.AccessToken",
            "缺少access_token",
        )
    },
    invalid_token: invalid_authentication,
    faults: FaultReplies {
        server_error: unknown_error,
        rate_limited: || {
            new_err(
                StatusCode::FORBIDDEN,
                "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
                "调用该接口触发了限流",
            )
        },
        token_expired: invalid_authentication,
    },
};

fn invalid_authentication() -> Response {
    new_err(
        StatusCode::BAD_REQUEST,
        "InvalidAuthentication",
        "不合法的access_token",
    )
}

/// Counts the call, checks the generation's token, injects faults, enforces the limits.
async fn gate(app: &App, g: &Generation, req: Request, next: Next) -> Response {
    let endpoint = endpoint_of(&req);
    app.core.count_call(&endpoint);
    let Some(token) = (g.token)(&req).filter(|t| !t.is_empty()) else {
        return (g.missing_token)();
    };
    if !app.tokens.is_live(&token) {
        return (g.invalid_token)();
    }
    app.core
        .gated(
            &g.faults,
            || app.tokens.revoke(&token),
            || app.rate_check(&endpoint, g.faults.rate_limited),
            next.run(req),
        )
        .await
}

async fn gate_old(State(app): AppState, req: Request, next: Next) -> Response {
    gate(&app, &OLD, req, next).await
}

async fn gate_new(State(app): AppState, req: Request, next: Next) -> Response {
    gate(&app, &NEW, req, next).await
}

/// `GET /gettoken?appkey&appsecret` (old).
async fn old_token(State(app): AppState, Query(q): Query<HashMap<String, String>>) -> Response {
    app.core.count_call("GET /gettoken");
    let key = q.get("appkey").map(String::as_str).unwrap_or_default();
    let secret = q.get("appsecret").map(String::as_str).unwrap_or_default();
    match app.issue_token(key, secret) {
        Some((t, exp)) => old_ok(json!({"access_token": t, "expires_in": exp})),
        None => old_err(40089, "不合法的appkey或appSecret"),
    }
}

/// `POST /v1.0/oauth2/accessToken {appKey, appSecret}`.
async fn new_token(State(app): AppState, body: axum::body::Bytes) -> Response {
    app.core.count_call("POST /v1.0/oauth2/accessToken");
    let m = or_reply!(new_body(&body));
    let [key, secret] = credentials(&m, ["appKey", "appSecret"]);
    match app.issue_token(key, secret) {
        Some((t, exp)) => Json(json!({"accessToken": t, "expireIn": exp})).into_response(),
        None => new_err(
            StatusCode::BAD_REQUEST,
            "invalidClientIdOrSecret",
            "无效的clientId或者clientSecret",
        ),
    }
}

/// Encrypts and signs events as DingTalk's HTTP push does (owner key = app key, or the corp id
/// for the legacy format), and accepts a delivery only when answered with the encrypted
/// `success`.
struct DingTalkEncoder {
    crypt: Arc<WxBizMsgCrypt>,
    owner: String,
    legacy: bool,
}

/// The legacy `register_call_back` shape of a current-format event.
fn legacy_shape(event: &Value) -> Value {
    let mut m = Map::new();
    for (from, to) in [
        ("EventType", "EventType"),
        ("EventTime", "TimeStamp"),
        ("CorpId", "CorpId"),
        ("userId", "UserId"),
        ("deptId", "DeptId"),
    ] {
        if let Some(v) = event.get(from) {
            m.insert(to.to_string(), v.clone());
        }
    }
    Value::Object(m)
}

impl EventEncoder for DingTalkEncoder {
    fn encode(&self, event: &Value) -> EncodedEvent {
        self.encode_with_query(event).1
    }

    fn accept_reply(&self, body: &[u8]) -> bool {
        crate::dingtalk::events::open_reply(&self.crypt, &self.owner, body)
            .is_ok_and(|t| t == "success")
    }

    fn encode_with_query(&self, event: &Value) -> (Vec<(String, String)>, EncodedEvent) {
        let ts = now_ms().to_string();
        let nonce = hex::encode(crate::crypto::random_bytes::<4>());
        let shaped;
        let event = if self.legacy {
            shaped = legacy_shape(event);
            &shaped
        } else {
            event
        };
        let (query, body) = build_callback(&self.crypt, &self.owner, event, &ts, &nonce);
        (
            query,
            EncodedEvent {
                headers: Vec::new(),
                body,
            },
        )
    }
}

impl From<OrgError> for AdminError {
    fn from(e: OrgError) -> Self {
        match e.0 {
            60003 | 60004 | 60121 => AdminError::NotFound(e.1),
            60102 | 60104 | 60008 | 60005 | 60006 => AdminError::Conflict(e.1),
            _ => AdminError::Invalid(format!("{} ({})", e.1, e.0)),
        }
    }
}

/// DingTalk's console (`/_sandbox/org…`): what an admin does there, and the events it emits.
impl Console for App {
    type Org = Org;

    fn org(&self) -> &Mutex<Org> {
        &self.org
    }

    /// Emits DingTalk events (current HTTP push plaintext format) to HTTP push and Stream.
    fn emit(&self, events: org::Emitted) {
        for (event_type, body) in events {
            let ms = now_ms();
            let mut m = match body {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            m.insert("EventType".into(), json!(event_type));
            m.insert("EventTime".into(), json!(ms));
            m.insert("CorpId".into(), json!(self.opts.corp_id));
            m.insert(
                "BizId".into(),
                json!(uuid::Uuid::new_v4().simple().to_string()),
            );
            m.insert(
                "eventId".into(),
                json!(uuid::Uuid::new_v4().simple().to_string()),
            );
            m.insert("timeStamp".into(), json!(ms.to_string()));
            let ev = Value::Object(m);
            self.stream.enqueue(&ev, &self.opts.app_key);
            self.core.emit(ev);
        }
    }

    fn expire_tokens(&self) {
        self.tokens.clear();
    }

    fn render_user(org: &Org, key: &str) -> Value {
        org.render_user(key)
    }

    fn render_dept(org: &Org, key: &str) -> Value {
        org.render_dept(key)
    }

    fn add_user(&self, org: &mut Org, user: FixtureUser) -> Added<Self> {
        let key = user.key.clone();
        Ok((key, org.insert_user(user)?))
    }

    fn patch_user(org: &mut Org, key: &str, patch: &Value) -> Changed<Self> {
        let (cur, fx) = org.patched_user(key, patch)?;
        let extra = cur.extra.clone();
        Ok(org.replace_user(key, fx, extra)?)
    }

    fn add_dept(&self, org: &mut Org, dept: FixtureDepartment) -> Added<Self> {
        if dept.key.is_empty() {
            return Err(AdminError::Invalid("key is required".into()));
        }
        let (key, _, events) = org.insert_dept(dept)?;
        Ok((key, events))
    }

    fn patch_dept(org: &mut Org, key: &str, patch: &Value) -> Changed<Self> {
        let fx = org.patched_dept(key, patch)?;
        Ok(org.replace_dept(key, fx)?)
    }
}
