//! The WeCom sandbox: an emulator of WeCom's server API for tests and offline trials
//! (`huitong sandbox wecom`). It serves WeCom's real paths (`/cgi-bin/…`), the
//! `{errcode, errmsg}` envelope (errors with HTTP 200 and WeCom's errmsg shape), the access
//! token in the query string (40014 / 41001 / 42001), `user/list_id` cursor paging, WeCom's
//! error codes and limits (45009 per API per minute and per group robot, 45033 for too many
//! concurrent calls, the silent per-member message drop), is seeded from an org fixture, keeps
//! state, and delivers WeCom's callbacks for every change — XML, encrypted and signed
//! (WXBizMsgCrypt) — to `--event-url`. Admin endpoints: see [`crate::sandbox`], plus
//! `POST /_sandbox/message/receive` `{"from": user key, "text": "…"}` (a member messages the
//! app).

// Handlers and their helpers fail with a ready WeCom error reply; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

mod contact;
mod message;
mod org;
mod schedule;

pub(crate) use crate::sandbox::kit::now_s;
use crate::sandbox::prelude::*;
use crate::wecom::events::{build_callback, to_xml};
use crate::wxbiz::WxBizMsgCrypt;
use std::sync::atomic::{AtomicUsize, Ordering};

use org::{Org, OrgError};

/// Everything `huitong sandbox wecom` takes (clap-free).
#[derive(Clone)]
pub struct SandboxOptions {
    /// The org, events, faults, token lifetime and limits every sandbox takes.
    pub common: CommonOptions,
    pub corp_id: String,
    /// The app's secret (it may also write contacts: the sandbox has one all-powerful app).
    pub corp_secret: SecretString,
    pub agent_id: i64,
    /// Callback Token and EncodingAESKey (43 characters); both needed with `event_url`.
    pub token: Option<SecretString>,
    pub encoding_aes_key: Option<SecretString>,
    /// Calls per API per minute for the corp (WeCom: 10,000) before 45009.
    pub api_per_minute: u32,
    /// Concurrent calls for the corp before 45033 (older docs: 300).
    pub max_concurrent: usize,
    /// App messages per member per minute; beyond it WeCom drops them silently (30).
    pub messages_per_member_per_minute: u32,
    /// Group robot webhook keys that exist (`webhook/send?key=`); 20 messages/min each.
    pub robot_keys: Vec<String>,
    /// The 2022-06 privacy change: user reads omit avatar, gender, mobile, email, biz_mail,
    /// qr_code and address.
    pub trim_private_fields: bool,
    /// The 2022-08 new-IP rule: only `user/list_id` and `department/simplelist` may read the
    /// org; `user/get|list|simplelist` and `department/get|list` answer 48002.
    pub restrict_reads: bool,
    /// Emit callbacks for changes made through the API too (real contact-sync apps are not
    /// told about their own changes; default true: every change is delivered).
    pub echo_api_changes: bool,
}

impl SandboxOptions {
    pub fn new(
        org: OrgFixture,
        corp_id: impl Into<String>,
        corp_secret: impl Into<String>,
        agent_id: i64,
    ) -> Self {
        Self {
            common: CommonOptions::with_retry_secs(org, &[1, 5, 15]),
            corp_id: corp_id.into(),
            corp_secret: SecretString::from(corp_secret.into()),
            agent_id,
            token: None,
            encoding_aes_key: None,
            api_per_minute: 10_000,
            max_concurrent: 300,
            messages_per_member_per_minute: 30,
            robot_keys: vec!["sandbox-robot-key".into()],
            trim_private_fields: false,
            restrict_reads: false,
            echo_api_changes: true,
        }
    }
}

crate::sandbox::kit::common_options!(SandboxOptions);

/// WeCom's published base limit per corp per API: 10,000 calls a minute and 150,000 an hour
/// (errcode 45009 beyond either).
pub const PUBLISHED_LIMITS: &[RateWindow] = &[
    RateWindow::per_minute(10_000),
    RateWindow::per_hour(150_000),
];

impl crate::sandbox::VendorSandbox for SandboxOptions {
    const VENDOR: &'static str = "wecom";
    fn app_label(&self) -> String {
        format!("corp {}", self.corp_id)
    }
    fn check(&self) -> Result<(), SandboxError> {
        if self.event_url.is_some() && self.encoding_aes_key.is_none() {
            return Err(SandboxError::Options(
                "--event-url needs --token and --encoding-aes-key: WeCom encrypts every callback"
                    .into(),
            ));
        }
        Ok(())
    }
    /// The sandbox as a router (for embedding); `stop` ends its callback delivery.
    fn router(self, stop: tokio::sync::watch::Receiver<bool>) -> Result<Router, SandboxError> {
        let opts = self;
        opts.check_app("corp id", &opts.corp_id)?;
        if opts.agent_id <= 0 {
            return Err(SandboxError::Options("agent id must be positive".into()));
        }
        let crypt = wxbiz_crypt(
            opts.token.as_ref(),
            opts.encoding_aes_key.as_ref(),
            "encoding aes key",
            "token and encoding aes key go together",
        )?;
        let core = SandboxCore::for_options("wecom", &opts, stop, || {
            let Some(crypt) = crypt else {
                return Err(SandboxError::Options(
                    "an event url needs a token and an encoding aes key (WeCom encrypts every callback)"
                        .into(),
                ));
            };
            Ok(Arc::new(WecomEncoder {
                crypt,
                corp_id: opts.corp_id.clone(),
            }))
        })?;
        let own = Own {
            windows: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            msg: Mutex::new(message::MsgState::default()),
            schedules: Mutex::new(schedule::ScheduleState::default()),
        };
        let org = Org::new(&opts.org);
        let app = Arc::new(App::new(opts, core.clone(), org, own));
        let api = api_routes()
            .route_layer(axum::middleware::from_fn_with_state(app.clone(), gate))
            .route("/cgi-bin/gettoken", get(gettoken))
            .merge(message::robot_routes())
            .route("/_sandbox/message/receive", post(message::receive))
            .with_state(app.clone());
        Ok(api
            .merge(admin_router(core, Arc::new(AdminHandle(app))))
            .fallback(|| async { wc_err(404, "invalid url") }))
    }
}

/// The API routes the fault gate guards: the contact, message and schedule areas.
fn api_routes() -> Router<Arc<App>> {
    Router::new()
        // contact.rs
        .route("/cgi-bin/department/list", get(contact::dept_list))
        .route(
            "/cgi-bin/department/simplelist",
            get(contact::dept_simplelist),
        )
        .route("/cgi-bin/department/get", get(contact::dept_get))
        .route("/cgi-bin/department/create", post(contact::dept_create))
        .route("/cgi-bin/department/update", post(contact::dept_update))
        .route("/cgi-bin/department/delete", get(contact::dept_delete))
        .route("/cgi-bin/user/get", get(contact::user_get))
        .route("/cgi-bin/user/simplelist", get(contact::user_simplelist))
        .route("/cgi-bin/user/list", get(contact::user_list))
        .route("/cgi-bin/user/list_id", post(contact::user_list_id))
        .route("/cgi-bin/user/create", post(contact::user_create))
        .route("/cgi-bin/user/update", post(contact::user_update))
        .route("/cgi-bin/user/delete", get(contact::user_delete))
        .route("/cgi-bin/user/batchdelete", post(contact::user_batchdelete))
        // message.rs
        .route("/cgi-bin/message/send", post(message::send))
        .route("/cgi-bin/message/recall", post(message::recall))
        .route("/cgi-bin/appchat/create", post(message::appchat_create))
        .route("/cgi-bin/appchat/get", get(message::appchat_get))
        .route("/cgi-bin/appchat/update", post(message::appchat_update))
        .route("/cgi-bin/appchat/send", post(message::appchat_send))
        .route(
            "/cgi-bin/media/upload",
            post(message::upload).layer(axum::extract::DefaultBodyLimit::max(
                message::UPLOAD_BODY_LIMIT,
            )),
        )
        .route("/cgi-bin/media/get", get(message::media_get))
        // schedule.rs
        .route("/cgi-bin/oa/schedule/add", post(schedule::add))
        .route("/cgi-bin/oa/schedule/update", post(schedule::update))
        .route("/cgi-bin/oa/schedule/get", post(schedule::get_list))
        .route("/cgi-bin/oa/schedule/del", post(schedule::del))
}

/// Runs the sandbox on `listener` until `shutdown` resolves; the sandbox as a router.
pub use crate::sandbox::{serve_vendor as serve, vendor_router as router};

/// The WeCom sandbox's state.
pub(crate) type App = crate::sandbox::VendorApp<SandboxOptions, Org, Own>;

/// What only the WeCom sandbox keeps.
pub(crate) struct Own {
    /// per-minute windows: name -> (window start, count)
    windows: Mutex<HashMap<String, (Instant, u32)>>,
    in_flight: AtomicUsize,
    pub msg: Mutex<message::MsgState>,
    pub schedules: Mutex<schedule::ScheduleState>,
}

pub(crate) type AppState = State<Arc<App>>;

/// `{"errcode":0,"errmsg":<msg>, …fields}`.
pub(crate) fn ok_msg(msg: &str, fields: Value) -> Response {
    let mut m = Map::new();
    m.insert("errcode".into(), json!(0));
    m.insert("errmsg".into(), json!(msg));
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    Json(Value::Object(m)).into_response()
}

pub(crate) fn ok(fields: Value) -> Response {
    ok_msg("ok", fields)
}

/// A WeCom error: HTTP 200, `errcode`, and errmsg in WeCom's shape.
pub(crate) fn wc_err(code: i64, text: &str) -> Response {
    let hint = uuid::Uuid::new_v4().simple().to_string();
    let msg = format!(
        "{text}, hint: [{}], from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e={code}",
        &hint[..20]
    );
    let mut r = Json(json!({"errcode": code, "errmsg": msg})).into_response();
    if let Ok(v) = code.to_string().parse() {
        r.headers_mut().insert("error-code", v);
    }
    r
}

pub(crate) fn org_err(e: OrgError) -> Response {
    match e {
        OrgError::Code(c, m) => wc_err(c, &m),
    }
}

/// A JSON body, whatever the Content-Type (wechatpy sends none); empty = `{}`.
pub(crate) fn json_body(body: &[u8]) -> Result<Map<String, Value>, Response> {
    json_object(body).ok_or_else(|| wc_err(47001, "data format error"))
}

/// A hash-like opaque id.
pub(crate) fn opaque(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

impl App {
    pub fn emit_with(&self, events: org::Emitted, with_agent: bool) {
        for mut e in events {
            e.entry("ToUserName")
                .or_insert_with(|| json!(self.opts.corp_id));
            e.entry("FromUserName").or_insert_with(|| json!("sys"));
            e.entry("CreateTime").or_insert_with(|| json!(now_s()));
            if with_agent {
                e.entry("AgentID")
                    .or_insert_with(|| json!(self.opts.agent_id));
            }
            self.core.emit(Value::Object(e));
        }
    }

    /// Counts one call in the per-minute window `name`; `false` when over `limit`.
    pub fn window_take(&self, name: &str, limit: u32) -> bool {
        let now = Instant::now();
        let mut w = lock(&self.windows);
        let e = w.entry(name.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(60) {
            *e = (now, 0);
        }
        if e.1 >= limit {
            return false;
        }
        e.1 += 1;
        true
    }
}

/// Decrements the in-flight count when the call ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts the call, checks the token, injects faults, enforces the limits.
async fn gate(State(app): AppState, req: Request, next: Next) -> Response {
    let path = matched_path(&req);
    let endpoint = endpoint_of(&req);
    app.core.count_call(&endpoint);
    let Some(token) = query_param(&req, "access_token").filter(|t| !t.is_empty()) else {
        return wc_err(41001, "access_token missing");
    };
    match app.tokens.state(&token) {
        None => return wc_err(40014, "invalid access_token"),
        Some(false) => return token_expired(),
        Some(true) => {}
    }
    let n = app.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&app.in_flight);
    if app.opts.rate_limits && n > app.opts.max_concurrent {
        app.core.count_fault("rate-limit");
        return wc_err(45033, "api concurrent out of limit");
    }
    let limit = || {
        if app.opts.enforce_rate_limits {
            // Per corp per API: the path is the key.
            if app
                .core
                .enforce(
                    &endpoint,
                    &path,
                    PUBLISHED_LIMITS,
                    app.opts.rate_limit_scale,
                )
                .is_err()
            {
                return Err(freq_out_of_limit());
            }
        } else if app.opts.rate_limits
            && !app.window_take(&format!("api:{path}"), app.opts.api_per_minute)
        {
            app.core.count_fault("rate-limit");
            return Err(freq_out_of_limit());
        }
        Ok(())
    };
    app.core
        .gated(&FAULTS, || app.tokens.expire(&token), limit, next.run(req))
        .await
}

/// WeCom's answers to injected faults.
const FAULTS: FaultReplies = FaultReplies {
    server_error: system_busy,
    rate_limited: freq_out_of_limit,
    token_expired,
};

fn freq_out_of_limit() -> Response {
    wc_err(45009, "api freq out of limit")
}

fn token_expired() -> Response {
    wc_err(42001, "access_token expired")
}

/// WeCom's answer when its backend is unavailable (injected 5xx and lost replies).
fn system_busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"errcode": -1, "errmsg": "system busy"})),
    )
        .into_response()
}

/// `GET /cgi-bin/gettoken?corpid=&corpsecret=`.
async fn gettoken(State(app): AppState, Query(q): Query<HashMap<String, String>>) -> Response {
    app.core.count_call("GET /cgi-bin/gettoken");
    let Some(corp) = q.get("corpid").filter(|s| !s.is_empty()) else {
        return wc_err(41002, "corpid missing");
    };
    let Some(secret) = q.get("corpsecret").filter(|s| !s.is_empty()) else {
        return wc_err(41004, "corpsecret missing");
    };
    if corp != &app.opts.corp_id {
        return wc_err(40013, "invalid corpid");
    }
    if !crate::crypto::ct_eq(
        secret.as_bytes(),
        app.opts.corp_secret.expose_secret().as_bytes(),
    ) {
        return wc_err(40001, "invalid credential");
    }
    // A fetch while the current token has most of its life left returns it again.
    let ttl = app.opts.token_ttl;
    let (t, expires_in) = app.tokens.issue(
        ttl,
        Reissue::WhileMoreThan(ttl / 2),
        Duration::from_secs(3600),
        || format!("{}{}", opaque(""), opaque("")),
    );
    ok(json!({"access_token": t, "expires_in": expires_in}))
}

/// Encrypts and signs callbacks as WeCom does.
struct WecomEncoder {
    crypt: Arc<WxBizMsgCrypt>,
    corp_id: String,
}

impl EventEncoder for WecomEncoder {
    fn encode(&self, event: &Value) -> EncodedEvent {
        self.encode_with_query(event).1
    }

    fn encode_with_query(&self, event: &Value) -> (Vec<(String, String)>, EncodedEvent) {
        let plain = match event {
            Value::Object(m) => to_xml(m),
            _ => "<xml></xml>".to_string(),
        };
        let agent = event.get("AgentID").and_then(|a| {
            a.as_i64()
                .or_else(|| a.as_str().and_then(|s| s.parse().ok()))
        });
        let nonce = (crate::crypto::random_bytes::<4>()
            .iter()
            .fold(0u64, |a, b| a * 256 + u64::from(*b)))
        .to_string();
        let (query, body) =
            build_callback(&self.crypt, &self.corp_id, agent, &plain, now_s(), &nonce);
        (
            query,
            EncodedEvent {
                headers: vec![("Content-Type".into(), "text/xml; charset=utf-8".into())],
                body: body.into_bytes(),
            },
        )
    }
}

impl From<OrgError> for AdminError {
    fn from(e: OrgError) -> Self {
        match e {
            OrgError::Code(c @ (60003 | 60004 | 60111 | 60123), m) => {
                AdminError::NotFound(format!("{m} ({c})"))
            }
            OrgError::Code(c @ (60102 | 60104 | 60106 | 60008), m) => {
                AdminError::Conflict(format!("{m} ({c})"))
            }
            OrgError::Code(c, m) => AdminError::Invalid(format!("{m} ({c})")),
        }
    }
}

/// WeCom's console (`/_sandbox/org…`): what an admin does there, and the callbacks it sends.
impl Console for App {
    type Org = Org;

    fn org(&self) -> &Mutex<Org> {
        &self.org
    }

    /// Emits `change_contact` (or other) callbacks, completing the common fields.
    fn emit(&self, events: org::Emitted) {
        self.emit_with(events, false);
    }

    /// Emits callbacks for a change made through the API (see `echo_api_changes`).
    fn emit_api(&self, events: org::Emitted) {
        if self.opts.echo_api_changes {
            self.emit_with(events, false);
        }
    }

    fn expire_tokens(&self) {
        self.tokens.expire_all();
    }

    fn render_user(org: &Org, key: &str) -> Value {
        org.render_user(key, false)
    }

    fn render_dept(org: &Org, key: &str) -> Value {
        org.render_dept(key)
    }

    fn add_user(&self, org: &mut Org, user: FixtureUser) -> Added<Self> {
        let key = user.key.clone();
        let status = if user.active { 1 } else { 2 };
        Ok((key, org.create_user(user, status, Map::new())?))
    }

    fn patch_user(org: &mut Org, key: &str, patch: &Value) -> Changed<Self> {
        let (cur, fx) = org.patched_user(key, patch)?;
        let status = match (cur.status, fx.active) {
            (1 | 4, false) => Some(2),
            (2, true) => Some(1),
            _ => None,
        };
        Ok(org.update_user(key, fx, status, Map::new())?)
    }

    fn add_dept(&self, org: &mut Org, dept: FixtureDepartment) -> Added<Self> {
        let key = dept.key.clone();
        let id = org.alloc_dept_id();
        Ok((key, org.create_dept(dept, id, String::new())?))
    }

    fn patch_dept(org: &mut Org, key: &str, patch: &Value) -> Changed<Self> {
        let fx = org.patched_dept(key, patch)?;
        Ok(org.update_dept(key, fx, None)?)
    }
}
