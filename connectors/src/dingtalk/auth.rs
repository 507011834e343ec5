//! Access token via the v1.0 `POST /v1.0/oauth2/accessToken {appKey, appSecret}` →
//! `{"accessToken":"…","expireIn":7200}`. One token serves both API generations.

use crate::dingtalk::client::new_reply;
use crate::dingtalk::{DingTalkConfig, VENDOR};
use crate::token::{TokenCall, TokenReply};

pub const ACCESS_TOKEN_PATH: &str = "/v1.0/oauth2/accessToken";

/// Old-generation codes after which the cached token is dropped and refetched once
/// (40014 invalid, 42001 expired, 41001 missing, 40001 bad token).
pub const TOKEN_INVALID_CODES: &[i64] = &[40014, 42001, 41001, 40001];

/// The app's token call.
pub fn access_token(cfg: &DingTalkConfig) -> TokenCall {
    TokenCall {
        vendor: VENDOR,
        what: "dingtalk.accessToken",
        url: format!("{}{ACCESS_TOKEN_PATH}", cfg.api()),
        id: ("appKey", cfg.app_key.clone()),
        secret: ("appSecret", cfg.app_secret.clone()),
        in_query: false,
        reply: TokenReply {
            read: new_reply,
            token_key: "accessToken",
            life_key: "expireIn",
        },
    }
}
