//! Settings of one WeCom (企业微信) self-built app: corp id, the app's own secret, its agent id.

use secrecy::SecretString;

use crate::client::{Transport, WireConfig};
use crate::error::ConnectorError;
use crate::limit::RateLimit;
use crate::token::TokenCall;
use crate::wecom::VENDOR;
use crate::wecom::auth::GETTOKEN;

pub const WECOM_ORIGIN: &str = "https://qyapi.weixin.qq.com";

/// How the connector lists every member of the corp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserListing {
    /// `user/list_id` pages, then `user/get` per member: one call per member, but the only way
    /// open to contact-sync secrets calling from IPs first seen after 2022-08-15.
    #[default]
    ListId,
    /// `department/list` once, then `user/list?department_id=` per department: one call per
    /// department (the minimum), for apps whose IP may still use `user/list`.
    PerDepartment,
}

#[derive(Clone)]
pub struct WecomConfig {
    /// Origin only (scheme + host [+ port]): `https://qyapi.weixin.qq.com`, or a sandbox. Paths
    /// are appended under `/cgi-bin/`.
    pub base_url: String,
    /// `ww…` (older corps `wx…`).
    pub corp_id: String,
    /// The secret of this app (every app, and the contact-sync "app", has its own).
    pub corp_secret: SecretString,
    /// The app's agent id (e.g. 1000002); message/send needs it.
    pub agent_id: i64,
    /// `limit` of each `user/list_id` page (1..=10000).
    pub list_page_size: u32,
    /// How many `user/get` (or per-department `user/list`) calls run at once while listing users.
    pub get_concurrency: usize,
    /// How every member is listed (see [`UserListing`]).
    pub user_listing: UserListing,
    /// Timeout, retries, token refresh and reply size of its HTTP calls.
    pub transport: Transport,
    pub limits: Limits,
}

/// Outbound limits (docs/vendors/wecom.md). WeCom counts per corp **per API**: 10,000/min
/// and 150,000/h each (the client keeps one sliding-window bucket per corp and API path, so
/// `contact` is the limit of each contact API, not of the area). The per-IP limit (20,000/min
/// per API) is wider. Group robots: 20 messages/min per robot (a bucket per webhook key). App
/// messages beyond 30/min per member are dropped silently by WeCom: that quota is the caller's
/// to respect.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub contact: RateLimit,
    pub message: RateLimit,
    pub appchat: RateLimit,
    pub media: RateLimit,
    pub schedule: RateLimit,
    pub robot: RateLimit,
}

/// The base limit of every WeCom API, per corp.
pub const PER_API: RateLimit = RateLimit::new(0, 10_000).and_per_hour(150_000);

impl Default for Limits {
    fn default() -> Self {
        Self {
            contact: PER_API,
            message: PER_API,
            appchat: PER_API,
            media: PER_API,
            // oa/getapprovalinfo and checkin: 600/min.
            schedule: RateLimit::new(0, 600),
            robot: RateLimit::new(0, 20),
        }
    }
}

impl WecomConfig {
    pub fn new(
        base_url: impl Into<String>,
        corp_id: impl Into<String>,
        corp_secret: SecretString,
        agent_id: i64,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            corp_id: corp_id.into(),
            corp_secret,
            agent_id,
            list_page_size: 1000,
            get_concurrency: 8,
            user_listing: UserListing::default(),
            transport: Transport::default().max_response_bytes(32 * 1024 * 1024),
            limits: Limits::default(),
        }
    }

    pub(crate) fn origin(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }
}

impl WireConfig for WecomConfig {
    fn token_call(&self) -> TokenCall {
        GETTOKEN.call(VENDOR, self.origin(), &self.corp_id, &self.corp_secret)
    }

    fn validate(&self) -> Result<(), ConnectorError> {
        crate::client::check_origin(VENDOR, "base_url", &self.base_url)?;
        let bad = |m: String| Err(ConnectorError::permanent(VENDOR, m));
        if self.corp_id.is_empty() {
            return bad("corp_id is empty".into());
        }
        if self.agent_id <= 0 {
            return bad(format!("agent_id {} must be positive", self.agent_id));
        }
        if !(1..=10_000).contains(&self.list_page_size) {
            return bad(format!(
                "list_page_size {} is outside 1..=10000",
                self.list_page_size
            ));
        }
        if self.get_concurrency == 0 {
            return bad("get_concurrency must be at least 1".into());
        }
        Ok(())
    }

    fn transport(&self) -> &Transport {
        &self.transport
    }
}
