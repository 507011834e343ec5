//! tenant_access_token for a self-built app (`/open-apis/auth/v3/tenant_access_token/internal`).
//! The reply is flat: `{"code":0,"msg":"ok","tenant_access_token":"t-…","expire":7200}`.

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::error::ConnectorError;
use crate::feishu::client::ERRORS;
use crate::token::{FetchedToken, HttpTokenSource, TokenWire, coded_token_reply};

pub const TENANT_TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";

/// Codes after which the cached token must be dropped and refetched once.
pub const TOKEN_INVALID_CODES: &[i64] = &[
    99991661, 99991663, 99991664, 99991665, 99991668, 99991671, 99991677,
];

pub struct TenantToken {
    pub(crate) origin: String,
    pub(crate) app_id: String,
    pub(crate) app_secret: SecretString,
}

pub type FeishuTokenSource = HttpTokenSource<TenantToken>;

impl TokenWire for TenantToken {
    fn vendor(&self) -> &'static str {
        ERRORS.vendor
    }
    fn what(&self) -> &'static str {
        "feishu.tenant_access_token"
    }
    fn request(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        http.post(format!("{}{TENANT_TOKEN_PATH}", self.origin))
            .json(&json!({"app_id": self.app_id, "app_secret": self.app_secret.expose_secret()}))
    }
    fn reply(
        &self,
        status: u16,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<FetchedToken, ConnectorError> {
        coded_token_reply(
            &ERRORS,
            status,
            headers,
            body,
            ("code", "msg"),
            ("tenant_access_token", "expire"),
        )
    }
}
