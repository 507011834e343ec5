//! tenant_access_token for a self-built app (`/open-apis/auth/v3/tenant_access_token/internal`).
//! The reply is flat: `{"code":0,"msg":"ok","tenant_access_token":"t-…","expire":7200}`.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::error::ConnectorError;
use crate::feishu::VENDOR;
use crate::feishu::client::classify;
use crate::http::{RetryPolicy, read_limited, with_retry};
use crate::token::{FetchedToken, TokenSource};

pub const TENANT_TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";

/// Codes after which the cached token must be dropped and refetched once.
pub const TOKEN_INVALID_CODES: &[i64] = &[
    99991661, 99991663, 99991664, 99991665, 99991668, 99991671, 99991677,
];

pub struct FeishuTokenSource {
    pub(crate) http: reqwest::Client,
    pub(crate) origin: String,
    pub(crate) app_id: String,
    pub(crate) app_secret: SecretString,
    pub(crate) retry: RetryPolicy,
}

impl FeishuTokenSource {
    async fn fetch_once(&self) -> Result<FetchedToken, ConnectorError> {
        let url = format!("{}{}", self.origin, TENANT_TOKEN_PATH);
        let resp = self
            .http
            .post(&url)
            .json(&json!({"app_id": self.app_id, "app_secret": self.app_secret.expose_secret()}))
            .send()
            .await
            .map_err(|e| ConnectorError::from_transport(VENDOR, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = read_limited(VENDOR, resp, 64 * 1024).await?;
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(ConnectorError::from_status(
                VENDOR,
                status,
                crate::http::retry_after_header(&headers),
                "token reply is not JSON",
            ));
        };
        let code = v.get("code").and_then(Value::as_i64).unwrap_or(-1);
        if code != 0 {
            let msg = v
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let e = classify(code, status, &headers, msg);
            // Token invalid codes on the token call itself mean bad credentials: permanent.
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
        let token = v
            .get("tenant_access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ConnectorError::permanent(VENDOR, "token reply without tenant_access_token")
            })?;
        let expire = v.get("expire").and_then(Value::as_u64).unwrap_or(0);
        Ok(FetchedToken {
            token: SecretString::from(token.to_string()),
            expires_in: Duration::from_secs(expire),
        })
    }
}

#[async_trait]
impl TokenSource for FeishuTokenSource {
    async fn fetch(&self) -> Result<FetchedToken, ConnectorError> {
        with_retry(&self.retry, "feishu.tenant_access_token", || {
            self.fetch_once()
        })
        .await
    }
}
