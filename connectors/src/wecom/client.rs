//! The WeCom wire: access token in the query string, the `{errcode, errmsg}` envelope (errors
//! come back as HTTP 200) and its error table. The limiter, token cache (refetched once on
//! 40014 / 42001 / 40001 / 41001), retries and telemetry are the shared [`crate::client`] core.

use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;

use crate::client::{Client, ErrorTable, FormPart, TokenIn, Transport, Wire};
use crate::error::ConnectorError;
use crate::token::TokenCall;
use crate::wecom::VENDOR;
use crate::wecom::auth::TOKEN_INVALID_CODES;
use crate::wecom::config::WecomConfig;

pub use crate::client::Payload;

/// Frequency codes: 45009 over the limit (wait the window), 45033 too many concurrent calls,
/// 45011 (an Official Account code, treated the same).
pub const RATE_LIMIT_CODES: &[i64] = &[45009, 45011, 45033];
/// Transient codes: -1 system busy, 6000 data version conflict.
pub const TRANSIENT_CODES: &[i64] = &[-1, 6000];
/// "No such user / department" on a get.
pub const NOT_FOUND_CODES: &[i64] = &[40003, 60111, 46004, 60003, 60123];

/// Minute limits block for the rest of the window.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// WeCom's error codes.
pub static ERRORS: ErrorTable = ErrorTable {
    vendor: VENDOR,
    rate_limited: RATE_LIMIT_CODES,
    token_invalid: TOKEN_INVALID_CODES,
    transient: TRANSIENT_CODES,
    not_found: NOT_FOUND_CODES,
    rate_limit_waits: &[(45009, RATE_LIMIT_WAIT)],
    reset_header: None,
};

/// Classifies a non-zero `errcode` (with the HTTP status of the reply).
pub fn classify(code: i64, status: u16, msg: String) -> ConnectorError {
    ERRORS.classify(code, status, &HeaderMap::new(), msg)
}

/// A multipart file (`media` for WeCom uploads), sent as `application/octet-stream`.
#[derive(Clone)]
pub struct FilePart {
    pub name: &'static str,
    /// What users see as the file name.
    pub file_name: String,
    pub data: Bytes,
}

/// One WeCom API call (path under `/cgi-bin/`, e.g. `user/get`).
pub type ApiCall = crate::client::ApiCall;

impl crate::client::ApiCall {
    pub fn file(self, part: FilePart) -> Self {
        self.form(vec![FormPart::File {
            name: part.name,
            file_name: part.file_name,
            data: part.data,
            mime: Some("application/octet-stream"),
        }])
    }
}

/// WeCom's side of the client: its settings, and the last department tree it read.
pub struct WecomWire {
    pub(crate) cfg: WecomConfig,
    /// The department ids of the last whole-tree `department/list` and when it was read: a
    /// per-department member listing right after a department listing (what a sync does)
    /// reuses it instead of listing the tree again.
    pub(crate) recent_tree: std::sync::Mutex<Option<(std::time::Instant, Vec<i64>)>>,
}

impl Wire for WecomWire {
    type Extra = ();
    type Token = TokenCall;
    type Config = WecomConfig;

    fn from_config(cfg: WecomConfig) -> Result<(Self, TokenCall, Transport), ConnectorError> {
        cfg.validate()?;
        let token = crate::wecom::auth::get_token(&cfg);
        let transport = cfg.transport.clone();
        let wire = WecomWire {
            cfg,
            recent_tree: std::sync::Mutex::new(None),
        };
        Ok((wire, token, transport))
    }
    fn config(&self) -> &WecomConfig {
        &self.cfg
    }
    fn table(&self) -> &'static ErrorTable {
        &ERRORS
    }
    /// WeCom counts per corp and per API: one bucket per path.
    fn bucket(&self, call: &ApiCall) -> (String, String) {
        (
            self.cfg.corp_id.clone(),
            format!("{}:{}", call.tier, call.path),
        )
    }
    fn url(&self, call: &ApiCall) -> String {
        format!("{}/cgi-bin/{}", self.cfg.origin(), call.path)
    }
    /// The token goes in the query string, for GET and POST alike.
    fn token_in(&self, _call: &ApiCall) -> TokenIn {
        TokenIn::Query("access_token")
    }
}

/// The client of one WeCom app.
pub type WecomClient = Client<WecomWire>;

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
