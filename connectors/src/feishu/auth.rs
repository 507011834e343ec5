//! tenant_access_token for a self-built app (`/open-apis/auth/v3/tenant_access_token/internal`).
//! The reply is flat: `{"code":0,"msg":"ok","tenant_access_token":"t-…","expire":7200}`.

use crate::feishu::client::ERRORS;
use crate::token::{Credentials, ReadToken, TokenEndpoint};

/// Codes after which the cached token must be dropped and refetched once.
pub const TOKEN_INVALID_CODES: &[i64] = &[
    99991661, 99991663, 99991664, 99991665, 99991668, 99991671, 99991677,
];

/// The app's token endpoint.
pub const TENANT_TOKEN: TokenEndpoint = TokenEndpoint {
    path: "/open-apis/auth/v3/tenant_access_token/internal",
    credentials: Credentials::Json("app_id", "app_secret"),
    read: ReadToken::Coded(&ERRORS, ("code", "msg")),
    keys: ("tenant_access_token", "expire"),
};
