//! The one client core every vendor shares: limiter, token cache (refetched once when the vendor
//! rejects it), request building, size-limited replies, the vendor's envelope and error table,
//! retries and telemetry. A vendor contributes a [`Wire`] (where the token goes, how its
//! envelope reads) and an [`ErrorTable`] (which codes mean what); everything else is here.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::HeaderMap;
use bytes::Bytes;
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::capability::{Entity, FileKind, FileLimits, Files, WriteEntities};
use crate::error::ConnectorError;
use crate::http::{
    RetryPolicy, build_client, header_secs, read_limited, retry_after_header, with_retry,
};
use crate::limit::{Limiter, RateLimit};
use crate::telemetry;
use crate::token::{HttpTokenSource, TokenCall, TokenManager};

/// A vendor's error codes, as data: what each class of failure looks like.
#[derive(Debug, Clone, Copy)]
pub struct ErrorTable {
    pub vendor: &'static str,
    /// Throttling codes (besides HTTP 429).
    pub rate_limited: &'static [i64],
    /// Codes after which the cached token is dropped and refetched once.
    pub token_invalid: &'static [i64],
    /// Transient server-side codes (besides HTTP 5xx).
    pub transient: &'static [i64],
    /// "No such record" on a get or delete.
    pub not_found: &'static [i64],
    /// The wait a throttling code asks for when the reply names none.
    pub rate_limit_waits: &'static [(i64, Duration)],
    /// A header with the seconds until the vendor's window resets (before `Retry-After`).
    pub reset_header: Option<&'static str>,
}

impl ErrorTable {
    /// Classifies a non-zero vendor `code` with the HTTP status and headers of its reply.
    pub fn classify(
        &self,
        code: i64,
        status: u16,
        headers: &HeaderMap,
        message: String,
    ) -> ConnectorError {
        let vendor = self.vendor;
        if self.token_invalid.contains(&code) {
            return ConnectorError::AuthExpired {
                vendor,
                code: Some(code),
                message,
            };
        }
        if self.rate_limited.contains(&code) || status == 429 {
            let header = self
                .reset_header
                .and_then(|h| header_secs(headers, h))
                .or_else(|| retry_after_header(headers));
            let table = self
                .rate_limit_waits
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, d)| *d);
            return ConnectorError::RateLimited {
                vendor,
                code: Some(code),
                retry_after: header.or(table),
                message,
            };
        }
        if self.transient.contains(&code) || (500..=599).contains(&status) {
            return ConnectorError::Retryable {
                vendor,
                code: Some(code),
                status: Some(status),
                message,
            };
        }
        ConnectorError::Permanent {
            vendor,
            code: Some(code),
            status: Some(status),
            message,
        }
    }

    /// Whether `e` says the record does not exist.
    pub fn is_not_found(&self, e: &ConnectorError) -> bool {
        e.code().is_some_and(|c| self.not_found.contains(&c))
    }

    /// A failure without a usable envelope, classified by its HTTP status alone.
    pub fn from_status(&self, status: u16, headers: &HeaderMap, message: String) -> ConnectorError {
        let wait = self
            .reset_header
            .and_then(|h| header_secs(headers, h))
            .or_else(|| retry_after_header(headers));
        ConnectorError::from_status(self.vendor, status, wait, message)
    }
}

/// A token-invalid answer on the token call itself means bad credentials: permanent.
pub fn credentials_refused(e: ConnectorError, status: u16) -> ConnectorError {
    match e {
        ConnectorError::AuthExpired {
            vendor,
            code,
            message,
        } => ConnectorError::Permanent {
            vendor,
            code,
            status: Some(status),
            message,
        },
        other => other,
    }
}

/// A multipart field.
#[derive(Clone)]
pub enum FormPart {
    Text(&'static str, String),
    File {
        name: &'static str,
        file_name: String,
        data: Bytes,
        /// A declared content type (WeCom wants `application/octet-stream`).
        mime: Option<&'static str>,
    },
}

impl FormPart {
    /// A file part without a declared content type.
    pub fn file(name: &'static str, file_name: impl Into<String>, data: Bytes) -> Self {
        FormPart::File {
            name,
            file_name: file_name.into(),
            data,
            mime: None,
        }
    }
}

/// The body of a call; rebuilt per attempt.
#[derive(Clone)]
pub enum Payload {
    Empty,
    Json(Value),
    Form(Vec<FormPart>),
}

/// One API call. `X` is what a vendor needs beyond the common parts (DingTalk: which API
/// generation); `()` for most.
#[derive(Clone)]
pub struct ApiCall<X = ()> {
    pub method: Method,
    /// Path as the vendor's wire wants it (see the vendor's [`Wire::url`]).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub payload: Payload,
    /// Limiter bucket name (a closed set: also the `api` label of the call metrics) and its
    /// limit.
    pub tier: &'static str,
    pub limit: RateLimit,
    pub extra: X,
}

impl<X> ApiCall<X> {
    pub fn with_extra(
        extra: X,
        method: Method,
        path: impl Into<String>,
        tier: &'static str,
        limit: RateLimit,
    ) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            payload: Payload::Empty,
            tier,
            limit,
            extra,
        }
    }
    pub fn query(mut self, k: &str, v: impl Into<String>) -> Self {
        self.query.push((k.to_string(), v.into()));
        self
    }
    pub fn json(mut self, body: Value) -> Self {
        self.payload = Payload::Json(body);
        self
    }
    pub fn form(mut self, parts: Vec<FormPart>) -> Self {
        self.payload = Payload::Form(parts);
        self
    }
}

impl ApiCall<()> {
    pub fn new(
        method: Method,
        path: impl Into<String>,
        tier: &'static str,
        limit: RateLimit,
    ) -> Self {
        Self::with_extra((), method, path, tier, limit)
    }
    pub fn get(path: impl Into<String>, tier: &'static str, limit: RateLimit) -> Self {
        Self::new(Method::GET, path, tier, limit)
    }
    pub fn post(path: impl Into<String>, tier: &'static str, limit: RateLimit) -> Self {
        Self::new(Method::POST, path, tier, limit)
    }
}

/// Percent-encodes a path segment (`/` too), as the vendors' SDKs do for path parameters.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A decoded reply: a JSON envelope (success or vendor error) or a binary body.
pub enum Reply {
    Json(Result<Value, ConnectorError>),
    Bytes(Bytes),
}

/// Where a call carries the access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenIn {
    /// `Authorization: Bearer …` (Feishu).
    Bearer,
    /// A header of its own (DingTalk v1.0: `x-acs-dingtalk-access-token`).
    Header(&'static str),
    /// A query parameter, first in the query string (WeCom, DingTalk's old generation:
    /// `access_token`).
    Query(&'static str),
}

/// A vendor app's settings, as the client core reads them.
pub trait WireConfig: Send + Sync + 'static {
    /// Checks the settings (origins, ids, page sizes).
    fn validate(&self) -> Result<(), ConnectorError>;
    /// The app's token endpoint.
    fn token_call(&self) -> TokenCall;
    /// Timeout, retries, token refresh and reply size of its HTTP calls.
    fn transport(&self) -> &Transport;
}

/// A vendor's wire: its checked settings and what it keeps between calls (`S`; most keep
/// nothing).
pub struct VendorWire<C, S = ()> {
    pub(crate) cfg: C,
    pub(crate) state: S,
}

/// How the client core gets from settings to a wire and back; every [`VendorWire`] has it.
pub trait WireParts: Send + Sync + 'static + Sized {
    /// The vendor app's settings.
    type Config: WireConfig;
    /// The wire of settings already checked.
    fn new(cfg: Self::Config) -> Self;
    fn config(&self) -> &Self::Config;
}

impl<C: WireConfig, S: Default + Send + Sync + 'static> WireParts for VendorWire<C, S> {
    type Config = C;
    fn new(cfg: C) -> Self {
        Self {
            cfg,
            state: S::default(),
        }
    }
    fn config(&self) -> &C {
        &self.cfg
    }
}

/// What differs between vendors on the wire: mostly data (where the token goes, the
/// envelope's keys, the error table), over the vendor's settings.
pub trait Wire: WireParts {
    /// What an [`ApiCall`] carries beyond the common parts.
    type Extra: Clone + Send + Sync;
    /// The vendor's error codes.
    const ERRORS: &'static ErrorTable;
    /// The keys of the code and message in a `{code, msg}` envelope.
    const ENVELOPE: (&'static str, &'static str) = ("errcode", "errmsg");

    /// The limiter's (app, bucket) for a call.
    fn bucket(&self, call: &ApiCall<Self::Extra>) -> (String, String);
    fn url(&self, call: &ApiCall<Self::Extra>) -> String;
    fn token_in(&self, call: &ApiCall<Self::Extra>) -> TokenIn;
    /// Reads a reply in the vendor's envelope.
    fn decode(
        &self,
        call: &ApiCall<Self::Extra>,
        status: u16,
        headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Reply {
        let _ = call;
        let (code, msg) = Self::ENVELOPE;
        decode_coded(Self::ERRORS, status, headers, body, code, msg)
    }
}

/// Transport settings of a vendor client.
#[derive(Debug, Clone)]
pub struct Transport {
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Refetch the access token when less than this remains.
    pub token_refresh_ahead: Duration,
    pub max_response_bytes: usize,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            token_refresh_ahead: Duration::from_secs(300),
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Transport {
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }
}

/// Asserts that each of `codes`, answered with HTTP `status`, falls in `class` under `table`.
#[cfg(test)]
pub(crate) fn assert_class(
    table: &ErrorTable,
    class: crate::error::ErrorClass,
    status: u16,
    codes: &[i64],
) {
    for &code in codes {
        let got = table.classify(code, status, &HeaderMap::new(), String::new());
        let vendor = table.vendor;
        assert_eq!(got.class(), class, "{vendor} code {code}, HTTP {status}");
    }
}

/// An origin setting must be `http(s)://…`.
pub fn check_origin(vendor: &'static str, key: &str, url: &str) -> Result<(), ConnectorError> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(ConnectorError::permanent(
            vendor,
            format!("{key} {url:?} must start with https:// or http://"),
        ))
    }
}

/// The client of one vendor app: one limiter, one token cache.
pub struct Client<W: Wire> {
    pub(crate) wire: W,
    pub(crate) http: reqwest::Client,
    tokens: TokenManager<HttpTokenSource<TokenCall>>,
    pub(crate) limiter: Arc<Limiter>,
    settings: Transport,
}

impl<W: Wire> Client<W> {
    /// The client of one vendor app, with a limiter of its own.
    pub fn new(cfg: W::Config) -> Result<Self, ConnectorError> {
        Self::with_limiter(cfg, Arc::new(Limiter::new()))
    }

    /// The client of one vendor app, its calls paced by `limiter` (shared by every client of
    /// the same app: limits are per app).
    pub fn with_limiter(cfg: W::Config, limiter: Arc<Limiter>) -> Result<Self, ConnectorError> {
        cfg.validate()?;
        let token = cfg.token_call();
        let settings = cfg.transport().clone();
        let wire = W::new(cfg);
        let http = build_client(settings.timeout)?;
        let source = HttpTokenSource::new(http.clone(), settings.retry.clone(), token);
        let tokens = TokenManager::new(source, settings.token_refresh_ahead);
        Ok(Self {
            wire,
            http,
            tokens,
            limiter,
            settings,
        })
    }

    /// The app's settings.
    pub fn config(&self) -> &W::Config {
        self.wire.config()
    }

    fn vendor(&self) -> &'static str {
        W::ERRORS.vendor
    }

    /// The vendor side of this client (its configuration).
    pub fn wire(&self) -> &W {
        &self.wire
    }

    /// How many tokens were fetched so far.
    pub fn token_fetches(&self) -> u64 {
        self.tokens.fetch_count()
    }

    /// The retry policy of this client.
    pub fn retry(&self) -> &RetryPolicy {
        &self.settings.retry
    }

    /// Runs `call` with retries; returns the whole reply body.
    pub async fn call(&self, call: &ApiCall<W::Extra>) -> Result<Value, ConnectorError> {
        let what = format!("{} {}", call.method, call.path);
        with_retry(&self.settings.retry, &what, || async {
            match self.refreshing(call).await? {
                Reply::Json(r) => r,
                Reply::Bytes(_) => Err(ConnectorError::permanent(
                    self.vendor(),
                    format!("{} {}: reply is not a JSON object", call.method, call.path),
                )),
            }
        })
        .await
    }

    /// Runs `call` for a binary download; a JSON reply is read as the error envelope.
    pub async fn download(&self, call: &ApiCall<W::Extra>) -> Result<Bytes, ConnectorError> {
        let what = format!("{} {}", call.method, call.path);
        with_retry(&self.settings.retry, &what, || async {
            match self.refreshing(call).await? {
                Reply::Bytes(b) => Ok(b),
                Reply::Json(r) => r.and_then(|_| {
                    Err(ConnectorError::permanent(
                        self.vendor(),
                        "expected a file, got JSON",
                    ))
                }),
            }
        })
        .await
    }

    /// Runs `call` and returns the part of its reply under `key` (or `{}` when absent): Feishu's
    /// `data`, DingTalk's `result`.
    pub async fn call_part(
        &self,
        call: &ApiCall<W::Extra>,
        key: &str,
    ) -> Result<Value, ConnectorError> {
        let mut v = self.call(call).await?;
        Ok(v.get_mut(key)
            .map(Value::take)
            .unwrap_or(Value::Object(Default::default())))
    }

    /// Runs a call that takes no access token (robot webhooks), with retries.
    pub async fn call_without_token(
        &self,
        call: &ApiCall<W::Extra>,
    ) -> Result<Value, ConnectorError> {
        let what = format!("{} {}", call.method, call.path);
        with_retry(&self.settings.retry, &what, || async {
            match self.send(call, None).await? {
                Reply::Json(r) => r,
                Reply::Bytes(_) => Err(ConnectorError::permanent(
                    self.vendor(),
                    format!("{}: reply is not a JSON object", call.path),
                )),
            }
        })
        .await
    }

    /// One attempt with the cached token; a rejected token is dropped and the call made once
    /// more with a fresh one. A fresh token rejected again is handed to the retry policy as
    /// transient (every attempt refetches at most once) — the same on every vendor.
    async fn refreshing(&self, call: &ApiCall<W::Extra>) -> Result<Reply, ConnectorError> {
        let token = self.tokens.get().await?;
        let first = self.send(call, Some(token.secret.expose_secret())).await?;
        let Reply::Json(Err(ConnectorError::AuthExpired { code, .. })) = first else {
            return Ok(first);
        };
        tracing::info!(vendor = self.vendor(), code = ?code, api = call.tier, "token rejected; refetching once");
        self.tokens.invalidate(&token).await;
        let token = self.tokens.get().await?;
        match self.send(call, Some(token.secret.expose_secret())).await? {
            Reply::Json(Err(ConnectorError::AuthExpired {
                vendor,
                code,
                message,
            })) => Ok(Reply::Json(Err(ConnectorError::Retryable {
                vendor,
                code,
                status: None,
                message: format!("fresh token rejected: {message}"),
            }))),
            other => Ok(other),
        }
    }

    async fn send(
        &self,
        call: &ApiCall<W::Extra>,
        token: Option<&str>,
    ) -> Result<Reply, ConnectorError> {
        let vendor = self.vendor();
        let (app, bucket) = self.wire.bucket(call);
        if self.limiter.try_acquire(&app, &bucket, call.limit).is_err() {
            telemetry::rate_limit_wait(vendor, call.tier);
            self.limiter.acquire(&app, &bucket, call.limit).await;
        }
        let mut req = self.http.request(call.method.clone(), self.wire.url(call));
        let mut query = Vec::new();
        if let Some(t) = token {
            match self.wire.token_in(call) {
                TokenIn::Bearer => req = req.bearer_auth(t),
                TokenIn::Header(h) => req = req.header(h, t),
                TokenIn::Query(k) => query.push((k.to_owned(), t.to_owned())),
            }
        }
        query.extend(call.query.iter().cloned());
        if !query.is_empty() {
            req = req.query(&query);
        }
        req = match &call.payload {
            Payload::Empty => req,
            Payload::Json(v) => req.json(v),
            Payload::Form(parts) => req.multipart(form(vendor, parts)?),
        };
        // Transport errors carry the URL, and with it a token in the query: strip it.
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let e = ConnectorError::from_transport(vendor, &e.without_url());
                telemetry::call(vendor, call.tier, Some(&e));
                return Err(e);
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_limited(vendor, resp, self.settings.max_response_bytes).await?;
        let reply = self.wire.decode(call, status, &headers, body);
        match &reply {
            Reply::Json(Err(e)) => {
                tracing::debug!(vendor, api = call.tier, path = call.path, status, code = ?e.code(), class = ?e.class(), "vendor call failed");
                telemetry::call(vendor, call.tier, Some(e));
            }
            _ => telemetry::call(vendor, call.tier, None),
        }
        Ok(reply)
    }
}

/// A vendor app's connector: its one [`Client`] behind the capability traits (each vendor
/// implements `ReadEntities` for its `Connector<…Wire>`; [`WriteEntities`] comes from its
/// [`VendorWrites`], [`Files`] from its [`FileWire`]).
pub struct Connector<W: Wire> {
    pub client: Client<W>,
}

impl<W: Wire> Connector<W> {
    pub fn new(cfg: W::Config) -> Result<Self, ConnectorError> {
        Ok(Self {
            client: Client::new(cfg)?,
        })
    }
}

/// A vendor's file endpoints: its limits, an upload by kind (→ the vendor's key for the file)
/// and a download by that key. Its [`Connector`] gets [`Files`] from them.
#[async_trait]
pub trait FileWire: Wire {
    const FILE_LIMITS: &'static FileLimits;
    async fn upload(c: &Client<Self>, kind: FileKind, name: &str, data: Bytes) -> Fallible<String>;
    async fn download(c: &Client<Self>, key: &str) -> Fallible<Bytes>;
}

/// What a vendor call gives: the value, or the classified failure.
pub type Fallible<T> = Result<T, ConnectorError>;

#[async_trait]
impl<W: FileWire> Files for Connector<W> {
    fn limits(&self) -> &FileLimits {
        W::FILE_LIMITS
    }
    async fn upload(&self, kind: FileKind, name: &str, data: Bytes) -> Fallible<String> {
        W::upload(&self.client, kind, name, data).await
    }
    async fn download(&self, key: &str) -> Fallible<Bytes> {
        W::download(&self.client, key).await
    }
}

/// A vendor's writes, one line of signature each; its [`Connector`] gets [`WriteEntities`] from
/// them (the external id a write answers, keyed creates only where the vendor has them).
#[async_trait]
pub trait VendorWrites: Send + Sync {
    /// The entities whose keyed creates are idempotent ([`WriteEntities::keyed_creates`]).
    const KEYED: &'static [Entity];
    /// Creates a record: its external id.
    async fn make(&self, entity: Entity, record: Value) -> Fallible<String>;
    /// [`make`](Self::make) with an idempotency key, for the [`KEYED`](Self::KEYED) entities.
    async fn make_keyed(&self, entity: Entity, record: Value, key: &str) -> Fallible<String>;
    /// Patches the record `id` (which keeps its id).
    async fn patch(&self, entity: Entity, id: &str, patch: Value) -> Fallible<()>;
    /// Deletes the record, or disables it where the vendor cannot delete.
    async fn remove(&self, entity: Entity, id: &str) -> Fallible<()>;
}

#[async_trait]
impl<W: Wire> WriteEntities for Connector<W>
where
    Self: VendorWrites,
{
    async fn create(&self, entity: Entity, record: Value) -> Fallible<String> {
        self.make(entity, record).await
    }
    async fn create_keyed(&self, entity: Entity, record: Value, key: &str) -> Fallible<String> {
        if self.keyed_creates(entity) {
            self.make_keyed(entity, record, key).await
        } else {
            self.make(entity, record).await
        }
    }
    fn keyed_creates(&self, entity: Entity) -> bool {
        Self::KEYED.contains(&entity)
    }
    async fn update(&self, entity: Entity, id: &str, patch: Value) -> Fallible<String> {
        self.patch(entity, id, patch).await.map(|()| id.to_owned())
    }
    async fn delete(&self, entity: Entity, id: &str) -> Fallible<()> {
        self.remove(entity, id).await
    }
}

/// A get's reply: its part under `key`, or `None` when the vendor answered one of `not_found`.
pub fn found_part(reply: Fallible<Value>, key: &str, not_found: &[i64]) -> Fallible<Option<Value>> {
    match reply {
        Ok(mut v) => Ok(v.get_mut(key).map(Value::take)),
        Err(e) if e.code().is_some_and(|c| not_found.contains(&c)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The array under `key` in a reply (empty when there is none): a page's records.
pub fn array_at(reply: &Value, key: &str) -> Vec<Value> {
    match reply.get(key) {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

/// The string under `key` in the reply of `what` (an upload's `media_id`, `image_key`, …).
pub fn reply_key(vendor: &'static str, what: &str, reply: &Value, key: &str) -> Fallible<String> {
    reply
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ConnectorError::permanent(vendor, format!("{what} without {key}")))
}

fn form(
    vendor: &'static str,
    parts: &[FormPart],
) -> Result<reqwest::multipart::Form, ConnectorError> {
    let mut form = reqwest::multipart::Form::new();
    for p in parts {
        form = match p {
            FormPart::Text(k, v) => form.text(*k, v.clone()),
            FormPart::File {
                name,
                file_name,
                data,
                mime,
            } => {
                let mut part = reqwest::multipart::Part::stream(reqwest::Body::from(data.clone()))
                    .file_name(file_name.clone());
                if let Some(m) = mime {
                    part = part.mime_str(m).map_err(|e| {
                        ConnectorError::permanent(vendor, format!("multipart: {e}"))
                    })?;
                }
                form.part(*name, part)
            }
        };
    }
    Ok(form)
}

/// Reads a JSON envelope whose success is `code_key == 0` (Feishu `code`, WeCom and old
/// DingTalk `errcode`), the message under `msg_key`. A non-JSON 2xx body is a file.
pub fn decode_coded(
    table: &ErrorTable,
    status: u16,
    headers: &HeaderMap,
    body: Vec<u8>,
    code_key: &str,
    msg_key: &str,
) -> Reply {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let Some(v) = parsed.filter(Value::is_object) else {
        if (200..300).contains(&status) {
            return Reply::Bytes(Bytes::from(body));
        }
        return Reply::Json(Err(table.from_status(
            status,
            headers,
            format!("HTTP {status} without a JSON body"),
        )));
    };
    let code = v.get(code_key).and_then(Value::as_i64).unwrap_or(0);
    if code == 0 && (200..300).contains(&status) {
        return Reply::Json(Ok(v));
    }
    let msg = v
        .get(msg_key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Reply::Json(Err(if code == 0 {
        table.from_status(status, headers, msg)
    } else {
        table.classify(code, status, headers, msg)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    const T: ErrorTable = ErrorTable {
        vendor: "t",
        rate_limited: &[7],
        token_invalid: &[8],
        transient: &[9],
        not_found: &[10],
        rate_limit_waits: &[(7, Duration::from_secs(3))],
        reset_header: Some("x-reset"),
    };

    #[test]
    fn table_classifies_by_code_then_status() {
        let h = HeaderMap::new();
        let c = |code, status| T.classify(code, status, &h, String::new());
        assert_eq!(c(7, 200).class(), ErrorClass::RateLimited);
        assert_eq!(c(7, 200).retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(c(1, 429).class(), ErrorClass::RateLimited);
        assert_eq!(c(1, 429).retry_after(), None);
        assert_eq!(c(8, 200).class(), ErrorClass::AuthExpired);
        assert_eq!(c(9, 200).class(), ErrorClass::Retryable);
        assert_eq!(c(1, 503).class(), ErrorClass::Retryable);
        assert_eq!(c(10, 200).class(), ErrorClass::Permanent);
        assert!(T.is_not_found(&c(10, 200)));
        let mut h = HeaderMap::new();
        h.insert("x-reset", "5".parse().unwrap());
        let e = T.classify(7, 429, &h, String::new());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn coded_envelopes() {
        let h = HeaderMap::new();
        let d = |status, body: &[u8]| decode_coded(&T, status, &h, body.to_vec(), "code", "msg");
        assert!(matches!(
            d(200, br#"{"code":0,"data":{}}"#),
            Reply::Json(Ok(_))
        ));
        assert!(matches!(d(200, b"\x89PNG"), Reply::Bytes(_)));
        let Reply::Json(Err(e)) = d(200, br#"{"code":8,"msg":"expired"}"#) else {
            panic!("an error envelope")
        };
        assert_eq!(e.class(), ErrorClass::AuthExpired);
        assert_eq!(e.message(), "expired");
        let Reply::Json(Err(e)) = d(502, b"<html>") else {
            panic!("an HTTP failure")
        };
        assert_eq!(e.class(), ErrorClass::Retryable);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("od-1/2 x"), "od-1%2F2%20x");
        assert_eq!(seg("ou_abc"), "ou_abc");
    }
}
