//! tenant_access_token for a self-built app (`/open-apis/auth/v3/tenant_access_token/internal`).
//! The reply is flat: `{"code":0,"msg":"ok","tenant_access_token":"t-…","expire":7200}`.

use crate::feishu::FeishuConfig;
use crate::feishu::client::ERRORS;
use crate::token::{TokenCall, TokenReply, coded_object};

pub const TENANT_TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";

/// Codes after which the cached token must be dropped and refetched once.
pub const TOKEN_INVALID_CODES: &[i64] = &[
    99991661, 99991663, 99991664, 99991665, 99991668, 99991671, 99991677,
];

/// The app's token call.
pub fn tenant_token(cfg: &FeishuConfig) -> TokenCall {
    TokenCall {
        vendor: ERRORS.vendor,
        what: "feishu.tenant_access_token",
        url: format!("{}{TENANT_TOKEN_PATH}", cfg.origin()),
        id: ("app_id", cfg.app_id.clone()),
        secret: ("app_secret", cfg.app_secret.clone()),
        in_query: false,
        reply: TokenReply {
            read: |status, headers, body| {
                coded_object(&ERRORS, status, headers, body, ("code", "msg"))
            },
            token_key: "tenant_access_token",
            life_key: "expire",
        },
    }
}
