//! Settings of one Feishu (or Lark) self-built app.

use secrecy::SecretString;

use crate::client::{Transport, WireConfig};
use crate::error::ConnectorError;
use crate::feishu::VENDOR;
use crate::feishu::auth::TENANT_TOKEN;
use crate::limit::RateLimit;
use crate::token::TokenCall;

pub const FEISHU_ORIGIN: &str = "https://open.feishu.cn";
pub const LARK_ORIGIN: &str = "https://open.larksuite.com";

#[derive(Clone)]
pub struct FeishuConfig {
    /// Origin only (scheme + host [+ port]): `https://open.feishu.cn`, or a sandbox.
    pub base_url: String,
    pub app_id: String,
    pub app_secret: SecretString,
    /// `open_id` (default), `union_id` or `user_id`: the id the connector reads and writes.
    pub user_id_type: String,
    /// `open_department_id` (default) or `department_id`.
    pub department_id_type: String,
    /// Page size for list calls (contact APIs: max 50).
    pub page_size: u32,
    /// Timeout, retries, token refresh and reply size of its HTTP calls.
    pub transport: Transport,
    pub limits: Limits,
}

/// The published limits per API area, per app (docs/vendors/feishu.md).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub contact: RateLimit,
    pub im_send: RateLimit,
    pub im_upload: RateLimit,
    pub task: RateLimit,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            contact: RateLimit::new(50, 1000),
            im_send: RateLimit::new(50, 1000),
            // tier 6: 5/s
            im_upload: RateLimit::new(5, 0),
            task: RateLimit::new(10, 0),
        }
    }
}

impl FeishuConfig {
    pub fn new(
        base_url: impl Into<String>,
        app_id: impl Into<String>,
        app_secret: SecretString,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            app_id: app_id.into(),
            app_secret,
            user_id_type: "open_id".into(),
            department_id_type: "open_department_id".into(),
            page_size: 50,
            transport: Transport::default(),
            limits: Limits::default(),
        }
    }

    pub(crate) fn origin(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }
}

impl WireConfig for FeishuConfig {
    fn token_call(&self) -> TokenCall {
        TENANT_TOKEN.call(VENDOR, self.origin(), &self.app_id, &self.app_secret)
    }

    fn validate(&self) -> Result<(), ConnectorError> {
        crate::client::check_origin(VENDOR, "base_url", &self.base_url)?;
        let bad = |m: String| Err(ConnectorError::permanent(VENDOR, m));
        if self.app_id.is_empty() {
            return bad("app_id is empty".into());
        }
        if !matches!(
            self.user_id_type.as_str(),
            "open_id" | "union_id" | "user_id"
        ) {
            return bad(format!(
                "user_id_type {:?} is not open_id, union_id or user_id",
                self.user_id_type
            ));
        }
        if !matches!(
            self.department_id_type.as_str(),
            "open_department_id" | "department_id"
        ) {
            return bad(format!(
                "department_id_type {:?} is not open_department_id or department_id",
                self.department_id_type
            ));
        }
        if !(1..=50).contains(&self.page_size) {
            return bad(format!("page_size {} is outside 1..=50", self.page_size));
        }
        Ok(())
    }

    fn transport(&self) -> &Transport {
        &self.transport
    }
}
