//! The WeCom API client: limiter, access token in the query string (refetched once on 40014 /
//! 42001 / 40001 / 41001), the `{errcode, errmsg}` envelope (errors come back as HTTP 200),
//! error classification and retries.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::error::ConnectorError;
use crate::http::{build_client, read_limited, retry_after_header, with_retry};
use crate::limit::{Limiter, RateLimit};
use crate::token::TokenManager;
use crate::wecom::VENDOR;
use crate::wecom::auth::{TOKEN_INVALID_CODES, WecomTokenSource};
use crate::wecom::config::WecomConfig;

/// Frequency codes: 45009 over the limit (wait the window), 45033 too many concurrent calls,
/// 45011 (an Official Account code, treated the same).
pub const RATE_LIMIT_CODES: &[i64] = &[45009, 45011, 45033];
/// Transient codes: -1 system busy, 6000 data version conflict.
pub const TRANSIENT_CODES: &[i64] = &[-1, 6000];
/// "No such user / department" on a get.
pub const NOT_FOUND_CODES: &[i64] = &[40003, 60111, 46004, 60003, 60123];

/// Minute limits block for the rest of the window.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Classifies a non-zero `errcode` (with the HTTP status of the reply).
pub fn classify(code: i64, status: u16, msg: String) -> ConnectorError {
    if RATE_LIMIT_CODES.contains(&code) || status == 429 {
        return ConnectorError::RateLimited {
            vendor: VENDOR,
            code: Some(code),
            retry_after: (code == 45009).then_some(RATE_LIMIT_WAIT),
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
pub struct FilePart {
    /// The form field name (`media` for WeCom uploads).
    pub name: &'static str,
    /// What users see as the file name.
    pub file_name: String,
    pub data: Bytes,
}

/// The body of a call; rebuilt per attempt.
#[derive(Clone)]
pub enum Payload {
    Empty,
    Json(Value),
    File(FilePart),
}

/// One API call.
#[derive(Clone)]
pub struct ApiCall {
    pub method: Method,
    /// Path under `/cgi-bin/`, e.g. `user/get`.
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
    pub fn get(path: impl Into<String>, tier: &'static str, limit: RateLimit) -> Self {
        Self::new(Method::GET, path, tier, limit)
    }
    pub fn post(path: impl Into<String>, tier: &'static str, limit: RateLimit) -> Self {
        Self::new(Method::POST, path, tier, limit)
    }
    pub fn query(mut self, k: &str, v: impl Into<String>) -> Self {
        self.query.push((k.to_string(), v.into()));
        self
    }
    pub fn json(mut self, body: Value) -> Self {
        self.payload = Payload::Json(body);
        self
    }
    pub fn file(mut self, part: FilePart) -> Self {
        self.payload = Payload::File(part);
        self
    }
}

/// A reply: a JSON envelope (success or vendor error) or a binary body.
enum Raw {
    Json(Result<Value, ConnectorError>),
    Bytes(Bytes),
}

pub struct WecomClient {
    pub(crate) cfg: WecomConfig,
    http: reqwest::Client,
    tokens: TokenManager<WecomTokenSource>,
    pub(crate) limiter: Arc<Limiter>,
    /// The department ids of the last whole-tree `department/list` and when it was read: a
    /// per-department member listing right after a department listing (what a sync does)
    /// reuses it instead of listing the tree again.
    pub(crate) recent_tree: std::sync::Mutex<Option<(std::time::Instant, Vec<i64>)>>,
}

impl WecomClient {
    pub fn new(cfg: WecomConfig) -> Result<Self, ConnectorError> {
        Self::with_limiter(cfg, Arc::new(Limiter::new()))
    }

    /// Shares `limiter` with other clients of the same corp (limits are per corp and app).
    pub fn with_limiter(cfg: WecomConfig, limiter: Arc<Limiter>) -> Result<Self, ConnectorError> {
        cfg.validate()?;
        let http = build_client(cfg.timeout)?;
        let source = WecomTokenSource {
            http: http.clone(),
            origin: cfg.origin().to_string(),
            corp_id: cfg.corp_id.clone(),
            corp_secret: cfg.corp_secret.clone(),
            retry: cfg.retry.clone(),
        };
        let tokens = TokenManager::new(source, cfg.token_refresh_ahead);
        Ok(Self {
            cfg,
            http,
            tokens,
            limiter,
            recent_tree: std::sync::Mutex::new(None),
        })
    }

    pub fn config(&self) -> &WecomConfig {
        &self.cfg
    }

    /// How many access tokens were fetched so far.
    pub fn token_fetches(&self) -> u64 {
        self.tokens.fetch_count()
    }

    /// Runs `call` with retries; returns the whole reply body (`{errcode, errmsg, …}`).
    pub async fn call(&self, call: &ApiCall) -> Result<Value, ConnectorError> {
        let what = format!("{} {}", call.method, call.path);
        with_retry(&self.cfg.retry, &what, || self.call_refreshing(call)).await
    }

    async fn call_refreshing(&self, call: &ApiCall) -> Result<Value, ConnectorError> {
        let token = self.tokens.get().await?;
        match self.send(call, token.secret.expose_secret()).await {
            Err(ConnectorError::AuthExpired { code, .. }) => {
                tracing::info!(vendor = VENDOR, code = ?code, path = call.path, "token rejected; refetching once");
                self.tokens.invalidate(&token).await;
                let token = self.tokens.get().await?;
                match self.send(call, token.secret.expose_secret()).await {
                    // A token rejected right after a refetch: let the retry policy back off
                    // (each attempt refetches at most once) instead of failing the call.
                    Err(ConnectorError::AuthExpired { code, message, .. }) => {
                        Err(ConnectorError::Retryable {
                            vendor: VENDOR,
                            code,
                            status: None,
                            message: format!("fresh token rejected: {message}"),
                        })
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Runs `call` for a binary download (`media/get`); a JSON reply is the error envelope.
    pub async fn download(&self, call: &ApiCall) -> Result<Bytes, ConnectorError> {
        let what = format!("{} {}", call.method, call.path);
        let expect_file = |r: Result<Value, ConnectorError>| {
            r.and_then(|_| {
                Err(ConnectorError::permanent(
                    VENDOR,
                    "expected a file, got JSON",
                ))
            })
        };
        with_retry(&self.cfg.retry, &what, || async {
            let token = self.tokens.get().await?;
            match self
                .send_raw(call, Some(token.secret.expose_secret()))
                .await?
            {
                Raw::Bytes(b) => Ok(b),
                Raw::Json(Err(ConnectorError::AuthExpired { .. })) => {
                    self.tokens.invalidate(&token).await;
                    let token = self.tokens.get().await?;
                    match self
                        .send_raw(call, Some(token.secret.expose_secret()))
                        .await?
                    {
                        Raw::Bytes(b) => Ok(b),
                        Raw::Json(r) => expect_file(r),
                    }
                }
                Raw::Json(r) => expect_file(r),
            }
        })
        .await
    }

    /// Runs a call that takes no access token (group robot webhooks), with retries.
    pub async fn call_without_token(&self, call: &ApiCall) -> Result<Value, ConnectorError> {
        let what = format!("{} {}", call.method, call.path);
        with_retry(&self.cfg.retry, &what, || async {
            match self.send_raw(call, None).await? {
                Raw::Json(r) => r,
                Raw::Bytes(_) => Err(ConnectorError::permanent(
                    VENDOR,
                    format!("{}: reply is not a JSON object", call.path),
                )),
            }
        })
        .await
    }

    async fn send(&self, call: &ApiCall, token: &str) -> Result<Value, ConnectorError> {
        match self.send_raw(call, Some(token)).await? {
            Raw::Json(r) => r,
            Raw::Bytes(_) => Err(ConnectorError::permanent(
                VENDOR,
                format!("{} {}: reply is not a JSON object", call.method, call.path),
            )),
        }
    }

    async fn send_raw(&self, call: &ApiCall, token: Option<&str>) -> Result<Raw, ConnectorError> {
        // WeCom counts per corp and per API: one bucket per path.
        self.limiter
            .acquire(
                &self.cfg.corp_id,
                &format!("{}:{}", call.tier, call.path),
                call.limit,
            )
            .await;
        let url = format!("{}/cgi-bin/{}", self.cfg.origin(), call.path);
        let mut req = self.http.request(call.method.clone(), &url);
        // The token goes in the query string, for GET and POST alike.
        if let Some(t) = token {
            req = req.query(&[("access_token", t)]);
        }
        if !call.query.is_empty() {
            req = req.query(&call.query);
        }
        req = match &call.payload {
            Payload::Empty => req,
            Payload::Json(v) => req.json(v),
            Payload::File(p) => {
                let part = reqwest::multipart::Part::stream(reqwest::Body::from(p.data.clone()))
                    .file_name(p.file_name.clone())
                    .mime_str("application/octet-stream")
                    .map_err(|e| ConnectorError::permanent(VENDOR, format!("multipart: {e}")))?;
                req.multipart(reqwest::multipart::Form::new().part(p.name, part))
            }
        };
        // Transport errors carry the URL, and with it the access token: strip it.
        let resp = req
            .send()
            .await
            .map_err(|e| ConnectorError::from_transport(VENDOR, &e.without_url()))?;
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
                retry_after_header(&headers),
                format!("HTTP {status} without a JSON body"),
            ))));
        };
        let code = body.get("errcode").and_then(Value::as_i64).unwrap_or(0);
        if code == 0 && (200..300).contains(&status) {
            return Ok(Raw::Json(Ok(body)));
        }
        let msg = body
            .get("errmsg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let err = if code == 0 {
            ConnectorError::from_status(VENDOR, status, retry_after_header(&headers), msg)
        } else {
            classify(code, status, msg)
        };
        tracing::debug!(vendor = VENDOR, path = call.path, status, code, class = ?err.class(), "wecom call failed");
        Ok(Raw::Json(Err(err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    #[test]
    fn classification_table() {
        let c = |code, status| classify(code, status, String::new()).class();
        assert_eq!(c(45009, 200), ErrorClass::RateLimited);
        assert_eq!(c(45033, 200), ErrorClass::RateLimited);
        assert_eq!(c(45011, 200), ErrorClass::RateLimited);
        assert_eq!(c(42001, 200), ErrorClass::AuthExpired);
        assert_eq!(c(40014, 200), ErrorClass::AuthExpired);
        assert_eq!(c(40001, 200), ErrorClass::AuthExpired);
        assert_eq!(c(41001, 200), ErrorClass::AuthExpired);
        assert_eq!(c(-1, 200), ErrorClass::Retryable);
        assert_eq!(c(6000, 200), ErrorClass::Retryable);
        assert_eq!(c(12345, 502), ErrorClass::Retryable);
        assert_eq!(c(60111, 200), ErrorClass::Permanent);
        assert_eq!(c(81013, 200), ErrorClass::Permanent);
        assert_eq!(c(48002, 200), ErrorClass::Permanent);
        assert_eq!(
            classify(45009, 200, String::new()).retry_after(),
            Some(RATE_LIMIT_WAIT)
        );
        assert_eq!(classify(45033, 200, String::new()).retry_after(), None);
    }
}
