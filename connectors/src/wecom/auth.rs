//! Access token of one app: `GET /cgi-bin/gettoken?corpid=ID&corpsecret=SECRET` →
//! `{"errcode":0,"errmsg":"ok","access_token":"…","expires_in":7200}`. Cached per (corp id,
//! secret) by the [`crate::token::TokenManager`]; never fetched per call.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::error::ConnectorError;
use crate::http::{RetryPolicy, read_limited, with_retry};
use crate::token::{FetchedToken, TokenSource};
use crate::wecom::VENDOR;
use crate::wecom::client::classify;

pub const GETTOKEN_PATH: &str = "/cgi-bin/gettoken";

/// Codes after which the cached token must be dropped and refetched once (single flight):
/// 40014 invalid token, 42001 expired, 40001 invalid credential, 41001 missing token, and the
/// third-party token codes the official SDK also refreshes on (42007, 42009).
pub const TOKEN_INVALID_CODES: &[i64] = &[40014, 42001, 40001, 41001, 42007, 42009];

pub struct WecomTokenSource {
    pub(crate) http: reqwest::Client,
    pub(crate) origin: String,
    pub(crate) corp_id: String,
    pub(crate) corp_secret: SecretString,
    pub(crate) retry: RetryPolicy,
}

impl WecomTokenSource {
    async fn fetch_once(&self) -> Result<FetchedToken, ConnectorError> {
        let url = format!("{}{}", self.origin, GETTOKEN_PATH);
        let resp = self
            .http
            .get(&url)
            .query(&[
                ("corpid", self.corp_id.as_str()),
                ("corpsecret", self.corp_secret.expose_secret()),
            ])
            .send()
            .await
            .map_err(|e| ConnectorError::from_transport(VENDOR, &e.without_url()))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = read_limited(VENDOR, resp, 64 * 1024).await?;
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(ConnectorError::from_status(
                VENDOR,
                status,
                crate::http::retry_after_header(&headers),
                "gettoken reply is not JSON",
            ));
        };
        let code = v.get("errcode").and_then(Value::as_i64).unwrap_or(0);
        if code != 0 {
            let msg = v
                .get("errmsg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            // On gettoken itself 40001/40013/40091 mean bad credentials: permanent.
            return Err(match classify(code, status, msg) {
                ConnectorError::AuthExpired { code, message, .. } => ConnectorError::Permanent {
                    vendor: VENDOR,
                    code,
                    status: Some(status),
                    message,
                },
                other => other,
            });
        }
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ConnectorError::permanent(VENDOR, "gettoken reply without access_token")
            })?;
        let expires = v.get("expires_in").and_then(Value::as_u64).unwrap_or(7200);
        Ok(FetchedToken {
            token: SecretString::from(token.to_string()),
            expires_in: Duration::from_secs(expires),
        })
    }
}

#[async_trait]
impl TokenSource for WecomTokenSource {
    async fn fetch(&self) -> Result<FetchedToken, ConnectorError> {
        with_retry(&self.retry, "wecom.gettoken", || self.fetch_once()).await
    }
}
