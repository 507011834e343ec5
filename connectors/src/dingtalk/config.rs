//! Settings of one DingTalk internal (self-built) app.

use secrecy::SecretString;

use crate::client::{Transport, WireConfig};
use crate::dingtalk::VENDOR;
use crate::dingtalk::auth::ACCESS_TOKEN;
use crate::error::ConnectorError;
use crate::limit::RateLimit;
use crate::token::TokenCall;

/// The old API generation (org chart, work notifications, media, custom robots).
pub const OAPI_ORIGIN: &str = "https://oapi.dingtalk.com";
/// The v1.0 API generation (token, app robots, todo, Stream gateway).
pub const API_ORIGIN: &str = "https://api.dingtalk.com";

#[derive(Clone)]
pub struct DingTalkConfig {
    /// Origin of the old generation (`https://oapi.dingtalk.com`, or a sandbox).
    pub oapi_base: String,
    /// Origin of the v1.0 generation (`https://api.dingtalk.com`, or a sandbox).
    pub api_base: String,
    /// appKey == Client ID.
    pub app_key: String,
    /// appSecret == Client Secret.
    pub app_secret: SecretString,
    /// The app's agent id, needed for work notifications.
    pub agent_id: Option<i64>,
    /// The app robot's code (for an internal app robot it equals the app key).
    pub robot_code: Option<String>,
    /// The unionId acting on todo calls (`operatorId`) when the caller gives none.
    pub operator_union_id: Option<String>,
    /// Page size of `user/list` (max 100).
    pub page_size: u32,
    /// Timeout, retries, token refresh and reply size of its HTTP calls.
    pub transport: Transport,
    pub limits: Limits,
}

/// Published limits (docs/vendors/dingtalk.md). The per-API limit applies to every API
/// separately (each gets its own bucket).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// 20 calls/s per app per API (standard edition).
    pub per_api: RateLimit,
    /// Custom robot webhook: 20 messages/minute per robot.
    pub robot_webhook: RateLimit,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_api: RateLimit::new(20, 0),
            robot_webhook: RateLimit::new(0, 20),
        }
    }
}

impl DingTalkConfig {
    /// Production origins.
    pub fn new(app_key: impl Into<String>, app_secret: SecretString) -> Self {
        Self::with_origins(OAPI_ORIGIN, API_ORIGIN, app_key, app_secret)
    }

    /// One origin serving both generations (the sandbox).
    pub fn for_sandbox(
        base_url: impl Into<String>,
        app_key: impl Into<String>,
        app_secret: SecretString,
    ) -> Self {
        let b = base_url.into();
        Self::with_origins(b.clone(), b, app_key, app_secret)
    }

    pub fn with_origins(
        oapi_base: impl Into<String>,
        api_base: impl Into<String>,
        app_key: impl Into<String>,
        app_secret: SecretString,
    ) -> Self {
        Self {
            oapi_base: oapi_base.into(),
            api_base: api_base.into(),
            app_key: app_key.into(),
            app_secret,
            agent_id: None,
            robot_code: None,
            operator_union_id: None,
            page_size: 100,
            transport: Transport::default(),
            limits: Limits::default(),
        }
    }

    pub(crate) fn oapi(&self) -> &str {
        self.oapi_base.trim_end_matches('/')
    }

    pub(crate) fn api(&self) -> &str {
        self.api_base.trim_end_matches('/')
    }

    /// The robot code to use: the configured one, else the app key.
    pub fn robot(&self) -> &str {
        self.robot_code.as_deref().unwrap_or(&self.app_key)
    }
}

impl WireConfig for DingTalkConfig {
    fn token_call(&self) -> TokenCall {
        ACCESS_TOKEN.call(VENDOR, self.api(), &self.app_key, &self.app_secret)
    }

    fn validate(&self) -> Result<(), ConnectorError> {
        let bad = |m: String| Err(ConnectorError::permanent(VENDOR, m));
        for (name, b) in [("oapi_base", &self.oapi_base), ("api_base", &self.api_base)] {
            crate::client::check_origin(VENDOR, name, b)?;
        }
        if self.app_key.is_empty() {
            return bad("app_key is empty".into());
        }
        if !(1..=100).contains(&self.page_size) {
            return bad(format!("page_size {} is outside 1..=100", self.page_size));
        }
        Ok(())
    }

    fn transport(&self) -> &Transport {
        &self.transport
    }
}
