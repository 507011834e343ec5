//! Access token of one app: `GET /cgi-bin/gettoken?corpid=ID&corpsecret=SECRET` →
//! `{"errcode":0,"errmsg":"ok","access_token":"…","expires_in":7200}`. Cached per (corp id,
//! secret) by the [`crate::token::TokenManager`]; never fetched per call. On gettoken itself
//! 40001/40013/40091 mean bad credentials: permanent.

use crate::token::{TokenCall, TokenReply, coded_object};
use crate::wecom::WecomConfig;
use crate::wecom::client::ERRORS;

pub const GETTOKEN_PATH: &str = "/cgi-bin/gettoken";

/// Codes after which the cached token must be dropped and refetched once (single flight):
/// 40014 invalid token, 42001 expired, 40001 invalid credential, 41001 missing token, and the
/// third-party token codes the official SDK also refreshes on (42007, 42009).
pub const TOKEN_INVALID_CODES: &[i64] = &[40014, 42001, 40001, 41001, 42007, 42009];

/// The app's token call.
pub fn get_token(cfg: &WecomConfig) -> TokenCall {
    TokenCall {
        vendor: ERRORS.vendor,
        what: "wecom.gettoken",
        url: format!("{}{GETTOKEN_PATH}", cfg.origin()),
        id: ("corpid", cfg.corp_id.clone()),
        secret: ("corpsecret", cfg.corp_secret.clone()),
        in_query: true,
        reply: TokenReply {
            read: |status, headers, body| {
                coded_object(&ERRORS, status, headers, body, ("errcode", "errmsg"))
            },
            token_key: "access_token",
            life_key: "expires_in",
        },
    }
}
