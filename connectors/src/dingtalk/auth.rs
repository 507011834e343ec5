//! Access token via the v1.0 `POST /v1.0/oauth2/accessToken {appKey, appSecret}` →
//! `{"accessToken":"…","expireIn":7200}`. One token serves both API generations.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::dingtalk::VENDOR;
use crate::dingtalk::client::classify_new;
use crate::error::ConnectorError;
use crate::http::{RetryPolicy, read_limited, retry_after_header, with_retry};
use crate::token::{FetchedToken, TokenSource};

pub const ACCESS_TOKEN_PATH: &str = "/v1.0/oauth2/accessToken";

/// Old-generation codes after which the cached token is dropped and refetched once
/// (40014 invalid, 42001 expired, 41001 missing, 40001 bad token).
pub const TOKEN_INVALID_CODES: &[i64] = &[40014, 42001, 41001, 40001];

pub struct DingTalkTokenSource {
    pub(crate) http: reqwest::Client,
    pub(crate) api: String,
    pub(crate) app_key: String,
    pub(crate) app_secret: SecretString,
    pub(crate) retry: RetryPolicy,
}

impl DingTalkTokenSource {
    async fn fetch_once(&self) -> Result<FetchedToken, ConnectorError> {
        let url = format!("{}{ACCESS_TOKEN_PATH}", self.api);
        let resp = self
            .http
            .post(&url)
            .json(&json!({"appKey": self.app_key, "appSecret": self.app_secret.expose_secret()}))
            .send()
            .await
            .map_err(|e| ConnectorError::from_transport(VENDOR, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = read_limited(VENDOR, resp, 64 * 1024).await?;
        let v: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !(200..300).contains(&status) {
            let code = v
                .as_ref()
                .and_then(|v| v.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let msg = v
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("token call failed")
                .to_string();
            let e = if v.is_none() {
                ConnectorError::from_status(VENDOR, status, retry_after_header(&headers), msg)
            } else {
                classify_new(status, code, &headers, msg)
            };
            // An auth failure on the token call itself means bad credentials: permanent.
            return Err(match e {
                ConnectorError::AuthExpired { code, message, .. } => ConnectorError::Permanent {
                    vendor: VENDOR,
                    code,
                    status: Some(status),
                    message,
                },
                other => other,
            });
        }
        let v = v.ok_or_else(|| ConnectorError::permanent(VENDOR, "token reply is not JSON"))?;
        let token = v
            .get("accessToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "token reply without accessToken"))?;
        let expire = v.get("expireIn").and_then(Value::as_u64).unwrap_or(7200);
        Ok(FetchedToken {
            token: SecretString::from(token.to_string()),
            expires_in: Duration::from_secs(expire),
        })
    }
}

#[async_trait]
impl TokenSource for DingTalkTokenSource {
    async fn fetch(&self) -> Result<FetchedToken, ConnectorError> {
        with_retry(&self.retry, "dingtalk.accessToken", || self.fetch_once()).await
    }
}
