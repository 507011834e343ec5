//! Access token of one app: `GET /cgi-bin/gettoken?corpid=ID&corpsecret=SECRET` →
//! `{"errcode":0,"errmsg":"ok","access_token":"…","expires_in":7200}`. Cached per (corp id,
//! secret) by the [`crate::token::TokenManager`]; never fetched per call.

use secrecy::{ExposeSecret, SecretString};

use crate::error::ConnectorError;
use crate::token::{FetchedToken, HttpTokenSource, TokenWire, coded_token_reply};
use crate::wecom::client::ERRORS;

pub const GETTOKEN_PATH: &str = "/cgi-bin/gettoken";

/// Codes after which the cached token must be dropped and refetched once (single flight):
/// 40014 invalid token, 42001 expired, 40001 invalid credential, 41001 missing token, and the
/// third-party token codes the official SDK also refreshes on (42007, 42009).
pub const TOKEN_INVALID_CODES: &[i64] = &[40014, 42001, 40001, 41001, 42007, 42009];

pub struct GetToken {
    pub(crate) origin: String,
    pub(crate) corp_id: String,
    pub(crate) corp_secret: SecretString,
}

pub type WecomTokenSource = HttpTokenSource<GetToken>;

impl TokenWire for GetToken {
    fn vendor(&self) -> &'static str {
        ERRORS.vendor
    }
    fn what(&self) -> &'static str {
        "wecom.gettoken"
    }
    fn request(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        http.get(format!("{}{GETTOKEN_PATH}", self.origin)).query(&[
            ("corpid", self.corp_id.as_str()),
            ("corpsecret", self.corp_secret.expose_secret()),
        ])
    }
    /// On gettoken itself 40001/40013/40091 mean bad credentials: made permanent by the caller.
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
            ("errcode", "errmsg"),
            ("access_token", "expires_in"),
        )
    }
}
