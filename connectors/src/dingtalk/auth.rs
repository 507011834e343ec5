//! Access token via the v1.0 `POST /v1.0/oauth2/accessToken {appKey, appSecret}` →
//! `{"accessToken":"…","expireIn":7200}`. One token serves both API generations.

use crate::dingtalk::client::new_reply;
use crate::token::{Credentials, ReadToken, TokenEndpoint};

/// Old-generation codes after which the cached token is dropped and refetched once
/// (40014 invalid, 42001 expired, 41001 missing, 40001 bad token).
pub const TOKEN_INVALID_CODES: &[i64] = &[40014, 42001, 41001, 40001];

/// The app's token endpoint (on the v1.0 origin).
pub const ACCESS_TOKEN: TokenEndpoint = TokenEndpoint {
    path: "/v1.0/oauth2/accessToken",
    credentials: Credentials::Json("appKey", "appSecret"),
    read: ReadToken::With(new_reply),
    keys: ("accessToken", "expireIn"),
};
