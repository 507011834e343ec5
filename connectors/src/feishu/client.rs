//! The Feishu wire: bearer tenant token, `{code,msg,data}` envelope, its error table. The
//! limiter, token cache, retries and telemetry are the shared [`crate::client`] core.

use axum::http::HeaderMap;
use serde_json::Value;

use crate::client::{Client, ErrorTable, TokenIn, Transport, Wire};
use crate::error::ConnectorError;
use crate::feishu::VENDOR;
use crate::feishu::auth::TOKEN_INVALID_CODES;
use crate::feishu::config::FeishuConfig;
use crate::token::TokenCall;

pub use crate::client::{FormPart, Payload, seg};

/// Rate-limit codes (HTTP 429 / 99991400 and the per-API ones).
pub const RATE_LIMIT_CODES: &[i64] = &[99991400, 230020, 11232, 11233, 11247, 1000004, 1000005];
/// Transient server-side codes.
pub const TRANSIENT_CODES: &[i64] = &[1500, 1663, 1668, 2200, 5000, 10101];
/// "No such user / department" on a get.
pub const NOT_FOUND_CODES: &[i64] = &[40008, 40015, 41050, 1470404];

/// Feishu's error codes; the reset header `x-ogw-ratelimit-reset` says how long to wait.
pub static ERRORS: ErrorTable = ErrorTable {
    vendor: VENDOR,
    rate_limited: RATE_LIMIT_CODES,
    token_invalid: TOKEN_INVALID_CODES,
    transient: TRANSIENT_CODES,
    not_found: NOT_FOUND_CODES,
    rate_limit_waits: &[],
    reset_header: Some("x-ogw-ratelimit-reset"),
};

/// Classifies a non-zero Feishu `code` (with the HTTP status and headers of the reply).
pub fn classify(code: i64, status: u16, headers: &HeaderMap, msg: String) -> ConnectorError {
    ERRORS.classify(code, status, headers, msg)
}

/// One Feishu API call (path under the origin, e.g. `/open-apis/contact/v3/users`).
pub type ApiCall = crate::client::ApiCall;

/// Feishu's side of the client: its settings.
pub struct FeishuWire {
    pub(crate) cfg: FeishuConfig,
}

impl Wire for FeishuWire {
    type Extra = ();
    type Token = TokenCall;
    type Config = FeishuConfig;

    fn from_config(cfg: FeishuConfig) -> Result<(Self, TokenCall, Transport), ConnectorError> {
        cfg.validate()?;
        let token = crate::feishu::auth::tenant_token(&cfg);
        let transport = cfg.transport.clone();
        Ok((FeishuWire { cfg }, token, transport))
    }
    fn config(&self) -> &FeishuConfig {
        &self.cfg
    }
    fn table(&self) -> &'static ErrorTable {
        &ERRORS
    }
    fn bucket(&self, call: &ApiCall) -> (String, String) {
        (self.cfg.app_id.clone(), call.tier.to_owned())
    }
    fn url(&self, call: &ApiCall) -> String {
        format!("{}{}", self.cfg.origin(), call.path)
    }
    fn token_in(&self, _call: &ApiCall) -> TokenIn {
        TokenIn::Bearer
    }
    fn envelope(&self) -> (&'static str, &'static str) {
        ("code", "msg")
    }
}

/// The client of one Feishu app.
pub type FeishuClient = Client<FeishuWire>;

impl Client<FeishuWire> {
    /// Runs `call` and returns its `data` (or `{}` when absent).
    pub async fn data(&self, call: &ApiCall) -> Result<Value, ConnectorError> {
        self.call_part(call, "data").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;
    use crate::token::TokenWire;

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
    fn token_reply_without_expire_lives_the_default() {
        let w = crate::feishu::auth::tenant_token(&FeishuConfig::new(
            "http://127.0.0.1:1",
            "a",
            "s".to_string().into(),
        ));
        let t = w
            .reply(
                200,
                &HeaderMap::new(),
                br#"{"code":0,"tenant_access_token":"t-1"}"#,
            )
            .unwrap();
        assert_eq!(t.expires_in, crate::token::DEFAULT_TOKEN_LIFE);
        let e = w
            .reply(200, &HeaderMap::new(), br#"{"code":99991663,"msg":"bad"}"#)
            .map_err(|e| crate::client::credentials_refused(e, 200))
            .err()
            .unwrap();
        assert_eq!(e.class(), ErrorClass::Permanent);
    }
}
