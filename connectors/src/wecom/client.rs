//! The WeCom wire: access token in the query string, the `{errcode, errmsg}` envelope (errors
//! come back as HTTP 200) and its error table. The limiter, token cache (refetched once on
//! 40014 / 42001 / 40001 / 41001), retries and telemetry are the shared [`crate::client`] core.

use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;

use crate::client::{Client, ErrorTable, FormPart, TokenIn, VendorWire, Wire};
use crate::error::ConnectorError;
use crate::wecom::VENDOR;
use crate::wecom::auth::TOKEN_INVALID_CODES;
use crate::wecom::config::WecomConfig;

pub use crate::client::Payload;

/// "No such user / department" on a get.
pub const NOT_FOUND_CODES: &[i64] = &[40003, 60111, 46004, 60003, 60123];

/// Minute limits block for the rest of the window.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// WeCom's error codes.
pub static ERRORS: ErrorTable = ErrorTable {
    vendor: VENDOR,
    // 45009 over the limit (wait the window), 45033 too many concurrent calls, 45011 (an
    // Official Account code, treated the same).
    rate_limited: &[45009, 45011, 45033],
    token_invalid: TOKEN_INVALID_CODES,
    // -1 system busy, 6000 data version conflict.
    transient: &[-1, 6000],
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

/// The department ids of the last whole-tree `department/list` and when it was read: a
/// per-department member listing right after a department listing (what a sync does) reuses
/// it instead of listing the tree again.
pub(crate) type RecentTree = std::sync::Mutex<Option<(std::time::Instant, Vec<i64>)>>;

/// WeCom's side of the client: its settings, and the last department tree it read.
pub type WecomWire = VendorWire<WecomConfig, RecentTree>;

impl Wire for WecomWire {
    type Extra = ();
    const ERRORS: &'static ErrorTable = &ERRORS;

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
    use crate::client::assert_class;
    use crate::error::ErrorClass::*;

    #[test]
    fn classification_table() {
        let wait = |code| classify(code, 200, String::new()).retry_after();
        assert_eq!(wait(45009), Some(RATE_LIMIT_WAIT));
        assert_eq!(wait(45033), None);
        assert_class(&ERRORS, RateLimited, 200, &[45009, 45033, 45011]);
        assert_class(&ERRORS, AuthExpired, 200, &[42001, 40014, 40001, 41001]);
        assert_class(&ERRORS, Retryable, 200, &[-1, 6000]);
        assert_class(&ERRORS, Retryable, 502, &[12345]);
        assert_class(&ERRORS, Permanent, 200, &[60111, 81013, 48002]);
    }
}
