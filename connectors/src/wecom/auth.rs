//! Access token of one app: `GET /cgi-bin/gettoken?corpid=ID&corpsecret=SECRET` →
//! `{"errcode":0,"errmsg":"ok","access_token":"…","expires_in":7200}`. Cached per (corp id,
//! secret) by the [`crate::token::TokenManager`]; never fetched per call. On gettoken itself
//! 40001/40013/40091 mean bad credentials: permanent.

use crate::token::{Credentials, ReadToken, TokenEndpoint};
use crate::wecom::client::ERRORS;

/// The app's token endpoint (credentials in the query string).
pub const GETTOKEN: TokenEndpoint = TokenEndpoint {
    path: "/cgi-bin/gettoken",
    credentials: Credentials::Query("corpid", "corpsecret"),
    read: ReadToken::Coded(&ERRORS, ("errcode", "errmsg")),
    keys: ("access_token", "expires_in"),
};

/// Codes after which the cached token must be dropped and refetched once (single flight):
/// 40014 invalid token, 42001 expired, 40001 invalid credential, 41001 missing token, and the
/// third-party token codes the official SDK also refreshes on (42007, 42009).
pub const TOKEN_INVALID_CODES: &[i64] = &[40014, 42001, 40001, 41001, 42007, 42009];
