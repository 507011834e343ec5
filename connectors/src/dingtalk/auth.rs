//! Access token via the v1.0 `POST /v1.0/oauth2/accessToken {appKey, appSecret}` →
//! `{"accessToken":"…","expireIn":7200}`. One token serves both API generations.

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::dingtalk::VENDOR;
use crate::dingtalk::client::new_reply;
use crate::error::ConnectorError;
use crate::token::{FetchedToken, HttpTokenSource, TokenWire, token_from};

pub const ACCESS_TOKEN_PATH: &str = "/v1.0/oauth2/accessToken";

/// Old-generation codes after which the cached token is dropped and refetched once
/// (40014 invalid, 42001 expired, 41001 missing, 40001 bad token).
pub const TOKEN_INVALID_CODES: &[i64] = &[40014, 42001, 41001, 40001];

pub struct AccessToken {
    pub(crate) api: String,
    pub(crate) app_key: String,
    pub(crate) app_secret: SecretString,
}

pub type DingTalkTokenSource = HttpTokenSource<AccessToken>;

impl TokenWire for AccessToken {
    fn vendor(&self) -> &'static str {
        VENDOR
    }
    fn what(&self) -> &'static str {
        "dingtalk.accessToken"
    }
    fn request(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        http.post(format!("{}{ACCESS_TOKEN_PATH}", self.api))
            .json(&json!({"appKey": self.app_key, "appSecret": self.app_secret.expose_secret()}))
    }
    fn reply(
        &self,
        status: u16,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<FetchedToken, ConnectorError> {
        let v = new_reply(status, headers, body)?;
        token_from(VENDOR, &v, "accessToken", "expireIn")
    }
}
