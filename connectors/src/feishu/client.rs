//! The Feishu API client: limiter, tenant token (refetched once on token-invalid codes),
//! `{code,msg,data}` envelope, error classification and retries.

use std::sync::Arc;

use axum::http::HeaderMap;
use bytes::Bytes;
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::error::ConnectorError;
use crate::feishu::VENDOR;
use crate::feishu::auth::{FeishuTokenSource, TOKEN_INVALID_CODES};
use crate::feishu::config::FeishuConfig;
use crate::http::{build_client, header_secs, read_limited, retry_after_header, with_retry};
use crate::limit::{Limiter, RateLimit};
use crate::token::TokenManager;

/// Rate-limit codes (HTTP 429 / 99991400 and the per-API ones).
pub const RATE_LIMIT_CODES: &[i64] = &[99991400, 230020, 11232, 11233, 11247, 1000004, 1000005];
/// Transient server-side codes.
pub const TRANSIENT_CODES: &[i64] = &[1500, 1663, 1668, 2200, 5000, 10101];

/// Classifies a non-zero Feishu `code` (with the HTTP status and headers of the reply).
pub fn classify(code: i64, status: u16, headers: &HeaderMap, msg: String) -> ConnectorError {
    if RATE_LIMIT_CODES.contains(&code) || status == 429 {
        let retry_after =
            header_secs(headers, "x-ogw-ratelimit-reset").or_else(|| retry_after_header(headers));
        return ConnectorError::RateLimited {
            vendor: VENDOR,
            code: Some(code),
            retry_after,
            message: msg,
        };
    }
    if TOKEN_INVALID_CODES.contains(&code) {
        return ConnectorError::AuthExpired {
            vendor: VENDOR,
            code: Some(code),
            message: msg,
        };
    }
    if TRANSIENT_CODES.contains(&code) || (500..=599).contains(&status) {
        return ConnectorError::Retryable {
            vendor: VENDOR,
            code: Some(code),
            status: Some(status),
            message: msg,
        };
    }
    ConnectorError::Permanent {
        vendor: VENDOR,
        code: Some(code),
        status: Some(status),
        message: msg,
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
    },
}

/// The body of a call; rebuilt per attempt.
#[derive(Clone)]
pub enum Payload {
    Empty,
    Json(Value),
    Form(Vec<FormPart>),
}

/// One API call.
#[derive(Clone)]
pub struct ApiCall {
    pub method: Method,
    /// Path under the origin, e.g. `/open-apis/contact/v3/users`.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub payload: Payload,
    /// Limiter bucket name and its limit.
    pub tier: &'static str,
    pub limit: RateLimit,
}

impl ApiCall {
    pub fn new(
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

/// Percent-encodes a path segment (`/` too), as the SDK does for `:name` parameters.
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

/// A reply: a JSON envelope (success or vendor error) or a binary body.
enum Raw {
    Json(Result<Value, ConnectorError>),
    Bytes(Bytes),
}

pub struct FeishuClient {
    pub(crate) cfg: FeishuConfig,
    http: reqwest::Client,
    tokens: TokenManager<FeishuTokenSource>,
    limiter: Arc<Limiter>,
}

impl FeishuClient {
    pub fn new(cfg: FeishuConfig) -> Result<Self, ConnectorError> {
        Self::with_limiter(cfg, Arc::new(Limiter::new()))
    }

    /// Shares `limiter` with other clients of the same app (limits are per app).
    pub fn with_limiter(cfg: FeishuConfig, limiter: Arc<Limiter>) -> Result<Self, ConnectorError> {
        cfg.validate()?;
        let http = build_client(cfg.timeout)?;
        let source = FeishuTokenSource {
            http: http.clone(),
            origin: cfg.origin().to_string(),
            app_id: cfg.app_id.clone(),
            app_secret: cfg.app_secret.clone(),
            retry: cfg.retry.clone(),
        };
        let tokens = TokenManager::new(source, cfg.token_refresh_ahead);
        Ok(Self {
            cfg,
            http,
            tokens,
            limiter,
        })
    }

    pub fn config(&self) -> &FeishuConfig {
        &self.cfg
    }

    /// How many tenant tokens were fetched so far.
    pub fn token_fetches(&self) -> u64 {
        self.tokens.fetch_count()
    }

    /// Runs `call` with retries; returns the whole reply body (`{code,msg,data}`).
    pub async fn call(&self, call: &ApiCall) -> Result<Value, ConnectorError> {
        let what = format!("{} {}", call.method, call.path);
        with_retry(&self.cfg.retry, &what, || self.call_refreshing(call)).await
    }

    /// Runs `call` and returns its `data` (or `{}` when absent).
    pub async fn data(&self, call: &ApiCall) -> Result<Value, ConnectorError> {
        let mut v = self.call(call).await?;
        Ok(v.get_mut("data")
            .map(Value::take)
            .unwrap_or(Value::Object(Default::default())))
    }

    async fn call_refreshing(&self, call: &ApiCall) -> Result<Value, ConnectorError> {
        let token = self.tokens.get().await?;
        match self.send(call, token.secret.expose_secret()).await {
            Err(ConnectorError::AuthExpired { code, .. }) => {
                tracing::info!(vendor = VENDOR, code = ?code, path = call.path, "token rejected; refetching once");
                self.tokens.invalidate(&token).await;
                let token = self.tokens.get().await?;
                self.send(call, token.secret.expose_secret()).await
            }
            other => other,
        }
    }

    /// Runs `call` for a binary download; a JSON reply is read as the error envelope.
    pub async fn download(&self, call: &ApiCall) -> Result<Bytes, ConnectorError> {
        let what = format!("{} {}", call.method, call.path);
        with_retry(&self.cfg.retry, &what, || async {
            let token = self.tokens.get().await?;
            let r = match self.send_raw(call, token.secret.expose_secret()).await? {
                Raw::Bytes(b) => return Ok(b),
                Raw::Json(r) => r,
            };
            match r {
                Err(ConnectorError::AuthExpired { .. }) => {
                    self.tokens.invalidate(&token).await;
                    let token = self.tokens.get().await?;
                    match self.send_raw(call, token.secret.expose_secret()).await? {
                        Raw::Bytes(b) => Ok(b),
                        Raw::Json(r) => r.and_then(|_| {
                            Err(ConnectorError::permanent(
                                VENDOR,
                                "expected a file, got JSON",
                            ))
                        }),
                    }
                }
                r => r.and_then(|_| {
                    Err(ConnectorError::permanent(
                        VENDOR,
                        "expected a file, got JSON",
                    ))
                }),
            }
        })
        .await
    }

    async fn send(&self, call: &ApiCall, token: &str) -> Result<Value, ConnectorError> {
        match self.send_raw(call, token).await? {
            Raw::Json(r) => r,
            Raw::Bytes(_) => Err(ConnectorError::permanent(
                VENDOR,
                format!("{} {}: reply is not a JSON object", call.method, call.path),
            )),
        }
    }

    async fn send_raw(&self, call: &ApiCall, token: &str) -> Result<Raw, ConnectorError> {
        self.limiter
            .acquire(&self.cfg.app_id, call.tier, call.limit)
            .await;
        let url = format!("{}{}", self.cfg.origin(), call.path);
        let mut req = self
            .http
            .request(call.method.clone(), &url)
            .bearer_auth(token);
        if !call.query.is_empty() {
            req = req.query(&call.query);
        }
        req = match &call.payload {
            Payload::Empty => req,
            Payload::Json(v) => req.json(v),
            Payload::Form(parts) => {
                let mut form = reqwest::multipart::Form::new();
                for p in parts {
                    form = match p {
                        FormPart::Text(k, v) => form.text(*k, v.clone()),
                        FormPart::File {
                            name,
                            file_name,
                            data,
                        } => form.part(
                            *name,
                            reqwest::multipart::Part::stream(reqwest::Body::from(data.clone()))
                                .file_name(file_name.clone()),
                        ),
                    };
                }
                req.multipart(form)
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| ConnectorError::from_transport(VENDOR, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = read_limited(VENDOR, resp, self.cfg.max_response_bytes).await?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        let Some(body) = parsed.filter(Value::is_object) else {
            if (200..300).contains(&status) {
                return Ok(Raw::Bytes(Bytes::from(bytes)));
            }
            return Ok(Raw::Json(Err(ConnectorError::from_status(
                VENDOR,
                status,
                header_secs(&headers, "x-ogw-ratelimit-reset")
                    .or_else(|| retry_after_header(&headers)),
                format!("HTTP {status} without a JSON body"),
            ))));
        };
        let code = body
            .get("code")
            .and_then(Value::as_i64)
            .unwrap_or(if (200..300).contains(&status) { 0 } else { -1 });
        if code == 0 && (200..300).contains(&status) {
            return Ok(Raw::Json(Ok(body)));
        }
        let msg = body
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let err = if code == -1 {
            ConnectorError::from_status(VENDOR, status, retry_after_header(&headers), msg)
        } else {
            classify(code, status, &headers, msg)
        };
        tracing::debug!(vendor = VENDOR, path = call.path, status, code, class = ?err.class(), "feishu call failed");
        Ok(Raw::Json(Err(err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    #[test]
    fn classification_table() {
        let h = HeaderMap::new();
        let c = |code, status| classify(code, status, &h, String::new()).class();
        assert_eq!(c(99991400, 429), ErrorClass::RateLimited);
        assert_eq!(c(99991400, 400), ErrorClass::RateLimited);
        assert_eq!(c(230020, 400), ErrorClass::RateLimited);
        assert_eq!(c(99991663, 400), ErrorClass::AuthExpired);
        assert_eq!(c(99991661, 400), ErrorClass::AuthExpired);
        assert_eq!(c(99991677, 401), ErrorClass::AuthExpired);
        assert_eq!(c(1500, 400), ErrorClass::Retryable);
        assert_eq!(c(12345, 503), ErrorClass::Retryable);
        assert_eq!(c(99991672, 403), ErrorClass::Permanent);
        assert_eq!(c(40011, 400), ErrorClass::Permanent);
        assert_eq!(c(99991543, 400), ErrorClass::Permanent);
    }

    #[test]
    fn rate_limit_reset_header_is_honoured() {
        let mut h = HeaderMap::new();
        h.insert("x-ogw-ratelimit-reset", "7".parse().unwrap());
        let e = classify(99991400, 429, &h, "limit".into());
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(7)));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("od-1/2 x"), "od-1%2F2%20x");
        assert_eq!(seg("ou_abc"), "ou_abc");
    }
}
