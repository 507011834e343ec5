//! What a vendor sandbox builds its API from: the access tokens it issues, the part of its gate
//! every vendor shares (faults around the call), request and body helpers, clocks, and the
//! callback crypto of the WXBizMsgCrypt vendors. The vendors keep only their replies and rules.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Query, Request};
use axum::response::Response;
use secrecy::SecretString;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{CommonOptions, EventEncoder, Fault, SandboxCore, SandboxError, lock};
use crate::fixture::FixtureUser;
use crate::wxbiz::WxBizMsgCrypt;

/// `Deref`/`DerefMut` of a vendor's `SandboxOptions` to its `common` field, the
/// [`CommonOptions`](crate::sandbox::CommonOptions).
macro_rules! common_options {
    ($t:ty) => {
        impl std::ops::Deref for $t {
            type Target = $crate::sandbox::CommonOptions;
            fn deref(&self) -> &Self::Target {
                &self.common
            }
        }

        impl std::ops::DerefMut for $t {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.common
            }
        }
    };
}
pub(crate) use common_options;

/// In a handler answering with a `Response` either way: the value of an `Ok`, or return the
/// `Err`'s reply (what `?` does for handlers returning a `Result`).
macro_rules! or_reply {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reply) => return reply,
        }
    };
}
pub(crate) use or_reply;

impl CommonOptions {
    /// `CommonOptions::new` with the event retries given in seconds.
    pub(crate) fn with_retry_secs(org: crate::fixture::OrgFixture, secs: &[u64]) -> Self {
        Self::new(org, secs.iter().map(|s| Duration::from_secs(*s)).collect())
    }

    /// Checks the fixture, then that `id` (what names the app: `what`) is not empty.
    pub(crate) fn check_app(&self, what: &str, id: &str) -> Result<(), SandboxError> {
        self.org
            .validate()
            .map_err(|e| SandboxError::Options(e.to_string()))?;
        if id.is_empty() {
            return Err(SandboxError::Options(format!("{what} is empty")));
        }
        Ok(())
    }
}

impl SandboxCore {
    /// The core of a sandbox started with `opts`; with an event url (which must be http(s)) it
    /// delivers events encoded by what `encoder` makes, until `stop` turns true.
    pub(crate) fn for_options(
        vendor: &'static str,
        opts: &CommonOptions,
        stop: tokio::sync::watch::Receiver<bool>,
        encoder: impl FnOnce() -> Result<Arc<dyn EventEncoder>, SandboxError>,
    ) -> Result<Arc<Self>, SandboxError> {
        let core = Self::new(vendor, opts.faults.clone());
        if let Some(url) = &opts.event_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(SandboxError::Options(format!(
                    "event url {url:?} must be http(s)"
                )));
            }
            core.start_delivery(
                url.clone(),
                encoder()?,
                opts.event_retry_delays.clone(),
                stop,
            )?;
        }
        Ok(core)
    }

    /// What every vendor's gate does once the caller's token passed: injects the planned faults
    /// (a delay, a server error, a 429, an expired token — `expire_token` drops it — or a reply
    /// lost or held back after the call was carried out), applies the vendor's limits (`limit`: the refusal
    /// to answer), and otherwise answers with `call`.
    pub(crate) async fn gated(
        &self,
        replies: &FaultReplies,
        expire_token: impl FnOnce(),
        limit: impl FnOnce() -> Result<(), Response>,
        call: impl Future<Output = Response>,
    ) -> Response {
        let plan = self.injector.plan();
        if let Some(d) = plan.delay {
            self.count_fault("slow");
            tokio::time::sleep(d).await;
        }
        match plan.fault {
            Some(Fault::ServerError) => {
                self.count_fault("5xx");
                return (replies.server_error)();
            }
            Some(Fault::RateLimited) => {
                self.count_fault("429");
                return (replies.rate_limited)();
            }
            Some(Fault::TokenExpired) => {
                self.count_fault("token");
                expire_token();
                return (replies.token_expired)();
            }
            None => {}
        }
        if let Err(r) = limit() {
            return r;
        }
        let reply = call.await;
        if let Some(d) = plan.late_reply {
            // Carried out; the answer takes its time coming back.
            self.count_fault("late");
            tokio::time::sleep(d).await;
        }
        if plan.lose_reply {
            // Carried out; the reply is lost on the way back.
            self.count_fault("lost");
            return (replies.server_error)();
        }
        reply
    }
}

/// What a vendor answers when its gate injects a fault.
pub(crate) struct FaultReplies {
    /// Its server failing: an injected 5xx, and the answer in place of a lost reply.
    pub server_error: fn() -> Response,
    /// An injected rate limit.
    pub rate_limited: fn() -> Response,
    /// An injected token expiry.
    pub token_expired: fn() -> Response,
}

/// How a token fetch treats the tokens already issued.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reissue {
    /// The live token again, its lifetime renewed (DingTalk).
    Renew,
    /// The newest token again, with what is left of its life, while more than this is left
    /// (Feishu: 30 min, WeCom: half the lifetime); else a new one.
    WhileMoreThan(Duration),
}

/// The access tokens a sandbox issued: token -> expiry.
#[derive(Debug, Default)]
pub(crate) struct Tokens(Mutex<HashMap<String, Instant>>);

impl Tokens {
    /// Issued and not expired.
    pub fn is_live(&self, t: &str) -> bool {
        self.state(t).unwrap_or(false)
    }

    /// `None`: not issued (or forgotten); else whether it is live.
    pub fn state(&self, t: &str) -> Option<bool> {
        lock(&self.0).get(t).map(|exp| Instant::now() < *exp)
    }

    /// Forgets `t`.
    pub fn revoke(&self, t: &str) {
        lock(&self.0).remove(t);
    }

    /// Forgets every token.
    pub fn clear(&self) {
        lock(&self.0).clear();
    }

    /// `t` expires now (it is still known, as expired).
    pub fn expire(&self, t: &str) {
        if let Some(exp) = lock(&self.0).get_mut(t) {
            *exp = Instant::now();
        }
    }

    /// Every token expires now.
    pub fn expire_all(&self) {
        let now = Instant::now();
        for exp in lock(&self.0).values_mut() {
            *exp = now;
        }
    }

    /// A token living `ttl`, or one issued before as `reissue` says, and its seconds to live;
    /// expired tokens are remembered for `keep_expired`; `mint` makes a new token.
    pub fn issue(
        &self,
        ttl: Duration,
        reissue: Reissue,
        keep_expired: Duration,
        mint: impl FnOnce() -> String,
    ) -> (String, u64) {
        let now = Instant::now();
        let mut tokens = lock(&self.0);
        tokens.retain(|_, exp| *exp > now || now.saturating_duration_since(*exp) < keep_expired);
        match reissue {
            Reissue::Renew => {
                if let Some(t) = tokens.keys().next().cloned() {
                    tokens.insert(t.clone(), now + ttl);
                    return (t, ttl.as_secs());
                }
            }
            Reissue::WhileMoreThan(left) => {
                if let Some((t, exp)) = tokens.iter().max_by_key(|(_, e)| **e)
                    && exp.saturating_duration_since(now) > left
                {
                    return (t.clone(), exp.saturating_duration_since(now).as_secs());
                }
            }
        }
        let t = mint();
        tokens.insert(t.clone(), now + ttl);
        (t, ttl.as_secs())
    }
}

/// The route a request matched (its path when none did).
pub(crate) fn matched_path(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string())
}

/// `"METHOD /route"`: what the calls are counted and limited by.
pub(crate) fn endpoint_of(req: &Request) -> String {
    format!("{} {}", req.method(), matched_path(req))
}

/// The query parameter `name` of a request.
pub(crate) fn query_param(req: &Request, name: &str) -> Option<String> {
    let Query(q) = Query::<HashMap<String, String>>::try_from_uri(req.uri()).ok()?;
    q.get(name).cloned()
}

/// A JSON object body, whatever the Content-Type; empty (or white space) = `{}`; `None` when
/// it is anything else.
pub(crate) fn json_object(body: &[u8]) -> Option<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    since_epoch().as_millis() as i64
}

/// Epoch seconds.
pub(crate) fn now_s() -> i64 {
    since_epoch().as_secs() as i64
}

/// The callback crypto of a WXBizMsgCrypt vendor (DingTalk, WeCom) from its token and AES key
/// (`key_name` in the error): both or neither (`together` says so).
pub(crate) fn wxbiz_crypt(
    token: Option<&SecretString>,
    key: Option<&SecretString>,
    key_name: &str,
    together: &str,
) -> Result<Option<Arc<WxBizMsgCrypt>>, SandboxError> {
    match (token, key) {
        (Some(t), Some(k)) => WxBizMsgCrypt::new(t.clone(), k)
            .map(|c| Some(Arc::new(c)))
            .map_err(|e| SandboxError::Options(format!("{key_name}: {e}"))),
        (None, None) => Ok(None),
        _ => Err(SandboxError::Options(together.into())),
    }
}

/// A fixture user with only its key: no name, no departments, active.
pub(crate) fn blank_user(key: &str) -> FixtureUser {
    FixtureUser {
        key: key.to_string(),
        name: String::new(),
        en_name: String::new(),
        email: String::new(),
        mobile: String::new(),
        employee_no: String::new(),
        title: String::new(),
        departments: Vec::new(),
        active: true,
        gender: String::new(),
        hired_at: String::new(),
    }
}

/// The app id and secret a token request names under `keys` (empty when missing or not
/// strings).
pub(crate) fn credentials<'a>(m: &'a Map<String, Value>, keys: [&str; 2]) -> [&'a str; 2] {
    keys.map(|k| m.get(k).and_then(Value::as_str).unwrap_or_default())
}

/// A JSON string's text (empty when missing or not a string).
pub(crate) fn str_or_empty(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

/// The strings of a JSON array (other items skipped; none when it is not an array).
pub(crate) fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
