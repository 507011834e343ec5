//! The DingTalk API client for both generations:
//!
//! - old (`oapi`): `?access_token=` in the query, HTTP 200 `{errcode, errmsg, …}` even on
//!   errors, errcode 88 wrapping a `sub_code`;
//! - new (`api`, v1.0): `x-acs-dingtalk-access-token` header, bare JSON on success, HTTP 4xx/5xx
//!   `{code, message, requestid}` on errors.
//!
//! Limiter per API, the access token refetched once on token-invalid codes, error
//! classification and retries.

use std::time::Duration;

use axum::http::HeaderMap;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, ErrorTable, Reply, TokenIn, VendorWire, Wire};
use crate::dingtalk::VENDOR;
use crate::dingtalk::auth::TOKEN_INVALID_CODES;
use crate::dingtalk::config::DingTalkConfig;
use crate::error::ConnectorError;
use crate::http::retry_after_header;
use crate::limit::RateLimit;

pub use crate::client::{FormPart, Payload, seg};

pub const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";

/// Old-generation throttling codes (90018 = 20/s per app per API, 90002 = per API globally, …).
pub const RATE_LIMIT_CODES: &[i64] = &[
    90001, 90002, 90003, 90004, 90005, 90006, 90007, 90008, 90009, 90010, 90011, 90012, 90013,
    90014, 90017, 90018, 410100, 90030,
];
/// Monthly quota exhausted: not retryable this month.
pub const QUOTA_CODE: i64 = 90020;
/// errcode 88 wraps a sub_code.
pub const WRAPPER_CODE: i64 = 88;

/// The old generation's error codes (the v1.0 generation answers with string codes:
/// [`classify_new`]). The docs: after 90018 / 90002 sleep 1 s, then retry with back-off.
pub static ERRORS: ErrorTable = ErrorTable {
    vendor: VENDOR,
    rate_limited: RATE_LIMIT_CODES,
    token_invalid: TOKEN_INVALID_CODES,
    transient: &[-1],
    not_found: &[60003, 60121, 33012],
    rate_limit_waits: &[
        (90018, Duration::from_secs(1)),
        (90002, Duration::from_secs(1)),
    ],
    reset_header: None,
};

/// Classifies a non-zero old-generation `errcode` (with its `sub_code` when errcode is 88).
pub fn classify_old(errcode: i64, sub_code: Option<&str>, msg: String) -> ConnectorError {
    let code = if errcode == WRAPPER_CODE {
        sub_code
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(errcode)
    } else {
        errcode
    };
    ERRORS.classify(code, 200, &HeaderMap::new(), msg)
}

/// Classifies a v1.0 error reply (`code` is a string such as `InvalidAuthentication`).
pub fn classify_new(status: u16, code: &str, headers: &HeaderMap, msg: String) -> ConnectorError {
    let message = if code.is_empty() {
        msg
    } else {
        format!("{code}: {msg}")
    };
    let throttled = code.contains("QpsLimit")
        || code.contains("QpmLimit")
        || code == "qps.exceed.limit"
        || status == 429;
    if throttled {
        return ConnectorError::RateLimited {
            vendor: VENDOR,
            code: None,
            retry_after: retry_after_header(headers).or(Some(Duration::from_secs(1))),
            message,
        };
    }
    if code == "InvalidAuthentication" || status == 401 {
        return ConnectorError::AuthExpired {
            vendor: VENDOR,
            code: None,
            message,
        };
    }
    if (500..=599).contains(&status) {
        return ConnectorError::Retryable {
            vendor: VENDOR,
            code: None,
            status: Some(status),
            message,
        };
    }
    ConnectorError::Permanent {
        vendor: VENDOR,
        code: None,
        status: Some(status),
        message,
    }
}

/// Which API generation a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gen {
    Old,
    New,
}

/// One DingTalk API call: path under the generation's origin, e.g. `/topapi/v2/user/list` or
/// `/v1.0/todo/…`.
pub type ApiCall = crate::client::ApiCall<Gen>;

impl crate::client::ApiCall<Gen> {
    pub fn new(
        generation: Gen,
        method: Method,
        path: impl Into<String>,
        tier: &'static str,
        limit: RateLimit,
    ) -> Self {
        Self::with_extra(generation, method, path, tier, limit)
    }
}

/// DingTalk's side of the client: its settings.
pub type DingTalkWire = VendorWire<DingTalkConfig>;

impl Wire for DingTalkWire {
    type Extra = Gen;
    const ERRORS: &'static ErrorTable = &ERRORS;

    fn bucket(&self, call: &ApiCall) -> (String, String) {
        (self.cfg.app_key.clone(), call.tier.to_owned())
    }
    fn url(&self, call: &ApiCall) -> String {
        let origin = match call.extra {
            Gen::Old => self.cfg.oapi(),
            Gen::New => self.cfg.api(),
        };
        format!("{origin}{}", call.path)
    }
    fn token_in(&self, call: &ApiCall) -> TokenIn {
        match call.extra {
            Gen::Old => TokenIn::Query("access_token"),
            Gen::New => TokenIn::Header(TOKEN_HEADER),
        }
    }
    fn decode(&self, call: &ApiCall, status: u16, headers: &HeaderMap, body: Vec<u8>) -> Reply {
        Reply::Json(match call.extra {
            Gen::Old => old_reply(status, headers, &body),
            Gen::New => new_reply(status, headers, &body),
        })
    }
}

/// The client of one DingTalk app, for both generations.
pub type DingTalkClient = Client<DingTalkWire>;

impl Client<DingTalkWire> {
    /// A `POST` to `path` of `generation`, counted in the API's own bucket (20/s per API).
    pub(crate) fn post_call(&self, generation: Gen, path: &'static str) -> ApiCall {
        let limit = self.wire.cfg.limits.per_api;
        ApiCall::new(generation, Method::POST, path, path, limit)
    }

    /// Runs an old-generation `call` and returns its `result` (or `{}` when absent).
    pub async fn result(&self, call: &ApiCall) -> Result<Value, ConnectorError> {
        self.call_part(call, "result").await
    }
}

/// Interprets an old-generation reply.
pub(crate) fn old_reply(
    status: u16,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Value, ConnectorError> {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    let Some(body) = parsed.filter(Value::is_object) else {
        if (200..300).contains(&status) {
            // An HTML page or other odd 200: the IP-level ban (§8). Wait and retry.
            return Err(ConnectorError::RateLimited {
                vendor: VENDOR,
                code: None,
                retry_after: Some(Duration::from_secs(5)),
                message: "non-JSON 200 reply (IP throttling?)".into(),
            });
        }
        return Err(ConnectorError::from_status(
            VENDOR,
            status,
            retry_after_header(headers),
            format!("HTTP {status} without a JSON body"),
        ));
    };
    match body.get("errcode").and_then(Value::as_i64) {
        Some(0) if (200..300).contains(&status) => Ok(body),
        Some(code) if code != 0 => {
            let msg = body
                .get("errmsg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let sub = body.get("sub_code").and_then(|s| {
                s.as_str()
                    .map(str::to_string)
                    .or_else(|| s.as_i64().map(|n| n.to_string()))
            });
            Err(classify_old(code, sub.as_deref(), msg))
        }
        _ if !(200..300).contains(&status) => Err(ConnectorError::from_status(
            VENDOR,
            status,
            retry_after_header(headers),
            format!("HTTP {status}"),
        )),
        // `{"status":1111,"wait":5,…}`: the IP ban in JSON form.
        _ if body.get("status").is_some() || body.get("punish").is_some() => {
            let wait = body.get("wait").and_then(Value::as_u64).unwrap_or(5);
            Err(ConnectorError::RateLimited {
                vendor: VENDOR,
                code: None,
                retry_after: Some(Duration::from_secs(wait.min(300))),
                message: "IP throttled".into(),
            })
        }
        // Some replies (e.g. the robot webhook) omit errcode on success.
        _ => Ok(body),
    }
}

/// Interprets a v1.0 reply.
pub(crate) fn new_reply(
    status: u16,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Value, ConnectorError> {
    let parsed: Option<Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
        Some(json!({}))
    } else {
        serde_json::from_slice(bytes).ok()
    };
    if (200..300).contains(&status) {
        return parsed.ok_or_else(|| {
            ConnectorError::permanent(VENDOR, format!("HTTP {status}: reply is not JSON"))
        });
    }
    let Some(body) = parsed.filter(Value::is_object) else {
        return Err(ConnectorError::from_status(
            VENDOR,
            status,
            retry_after_header(headers),
            format!("HTTP {status} without a JSON body"),
        ));
    };
    let code = body.get("code").and_then(Value::as_str).unwrap_or("");
    let msg = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Err(classify_new(status, code, headers, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    #[test]
    fn old_classification() {
        let c = |code, sub: Option<&str>| classify_old(code, sub, String::new()).class();
        assert_eq!(c(40014, None), ErrorClass::AuthExpired);
        assert_eq!(c(42001, None), ErrorClass::AuthExpired);
        assert_eq!(c(88, Some("40014")), ErrorClass::AuthExpired);
        assert_eq!(c(88, Some("60011")), ErrorClass::Permanent);
        assert_eq!(c(90018, None), ErrorClass::RateLimited);
        assert_eq!(c(90002, None), ErrorClass::RateLimited);
        assert_eq!(c(90020, None), ErrorClass::Permanent);
        assert_eq!(c(-1, None), ErrorClass::Retryable);
        assert_eq!(c(60121, None), ErrorClass::Permanent);
        assert_eq!(
            classify_old(88, Some("60011"), String::new()).code(),
            Some(60011)
        );
    }

    #[test]
    fn new_classification() {
        let h = HeaderMap::new();
        let c = |s, code: &str| classify_new(s, code, &h, String::new()).class();
        assert_eq!(c(400, "InvalidAuthentication"), ErrorClass::AuthExpired);
        assert_eq!(c(401, ""), ErrorClass::AuthExpired);
        assert_eq!(
            c(403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"),
            ErrorClass::RateLimited
        );
        assert_eq!(
            c(403, "Forbidden.AccessDenied.ApiCountLimitForOrg"),
            ErrorClass::Permanent
        );
        assert_eq!(
            c(403, "Forbidden.AccessDenied.AccessTokenPermissionDenied"),
            ErrorClass::Permanent
        );
        assert_eq!(c(503, "unknownError"), ErrorClass::Retryable);
        assert_eq!(
            c(400, "invalidParameter.msgKey.invalid"),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn old_reply_shapes() {
        let h = HeaderMap::new();
        assert!(old_reply(200, &h, br#"{"errcode":0,"errmsg":"ok","result":{}}"#).is_ok());
        assert_eq!(
            old_reply(200, &h, b"<html>busy</html>")
                .unwrap_err()
                .class(),
            ErrorClass::RateLimited
        );
        assert_eq!(
            old_reply(200, &h, br#"{"status":1111,"wait":5,"punish":"deny"}"#)
                .unwrap_err()
                .retry_after(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            old_reply(502, &h, b"bad gateway").unwrap_err().class(),
            ErrorClass::Retryable
        );
        let e = old_reply(
            200,
            &h,
            br#"{"errcode":88,"sub_code":"42001","errmsg":"expired"}"#,
        )
        .unwrap_err();
        assert_eq!(e.class(), ErrorClass::AuthExpired);
    }

    #[test]
    fn new_reply_shapes() {
        let h = HeaderMap::new();
        assert_eq!(new_reply(200, &h, b"").unwrap(), json!({}));
        let e = new_reply(
            400,
            &h,
            br#"{"code":"InvalidAuthentication","requestid":"x","message":"bad"}"#,
        )
        .unwrap_err();
        assert_eq!(e.class(), ErrorClass::AuthExpired);
        assert!(e.message().contains("InvalidAuthentication"));
    }
}
