//! The Feishu wire: bearer tenant token, `{code,msg,data}` envelope, its error table. The
//! limiter, token cache, retries and telemetry are the shared [`crate::client`] core.

use axum::http::HeaderMap;
use serde_json::Value;

use crate::client::{Client, ErrorTable, TokenIn, VendorWire, Wire};
use crate::error::ConnectorError;
use crate::feishu::VENDOR;
use crate::feishu::auth::TOKEN_INVALID_CODES;
use crate::feishu::config::FeishuConfig;

pub use crate::client::{FormPart, Payload, seg};

/// "No such user / department" on a get.
pub const NOT_FOUND_CODES: &[i64] = &[40008, 40015, 41050, 1470404];

/// Feishu's error codes; the reset header `x-ogw-ratelimit-reset` says how long to wait.
pub static ERRORS: ErrorTable = ErrorTable {
    vendor: VENDOR,
    // HTTP 429 / 99991400 and the per-API ones.
    rate_limited: &[99991400, 230020, 11232, 11233, 11247, 1000004, 1000005],
    token_invalid: TOKEN_INVALID_CODES,
    transient: &[1500, 1663, 1668, 2200, 5000, 10101],
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
pub type FeishuWire = VendorWire<FeishuConfig>;

impl Wire for FeishuWire {
    type Extra = ();
    const ERRORS: &'static ErrorTable = &ERRORS;
    const ENVELOPE: (&'static str, &'static str) = ("code", "msg");

    fn bucket(&self, call: &ApiCall) -> (String, String) {
        (self.cfg.app_id.clone(), call.tier.to_owned())
    }
    fn url(&self, call: &ApiCall) -> String {
        format!("{}{}", self.cfg.origin(), call.path)
    }
    fn token_in(&self, _call: &ApiCall) -> TokenIn {
        TokenIn::Bearer
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
    use crate::client::assert_class;
    use crate::error::ErrorClass::{self, *};
    use crate::token::TokenWire;

    #[test]
    fn classification_table() {
        assert_class(&ERRORS, RateLimited, 429, &[99991400]);
        assert_class(&ERRORS, RateLimited, 400, &[99991400, 230020]);
        assert_class(&ERRORS, AuthExpired, 400, &[99991663, 99991661]);
        assert_class(&ERRORS, AuthExpired, 401, &[99991677]);
        assert_class(&ERRORS, Retryable, 400, &[1500]);
        assert_class(&ERRORS, Retryable, 503, &[12345]);
        assert_class(&ERRORS, Permanent, 403, &[99991672]);
        assert_class(&ERRORS, Permanent, 400, &[40011, 99991543]);
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
        let cfg = FeishuConfig::new("http://127.0.0.1:1", "a", "s".to_string().into());
        let w = crate::client::WireConfig::token_call(&cfg);
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
