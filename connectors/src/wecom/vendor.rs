//! WeCom in the vendor registry: its connector table and what it builds.

use std::sync::Arc;

use serde_json::Value;

use crate::capability::{Entity, EventDedup, ReceiveEvents};
use crate::error::ConnectorError;
use crate::registry::{CallbackKeys, Directory, SettingKey, SettingProblem, Settings, VendorSpec};
use crate::wecom::config::UserListing;
use crate::wecom::{
    CallbackConfig, MAX_DEPARTMENT_LEVELS, VENDOR, WecomConfig, WecomConnector, WecomReceiver,
};

pub struct WeCom;

fn agent_id(s: &Settings) -> Result<i64, SettingProblem> {
    s.require("agent_id")?.parse().map_err(|_| SettingProblem {
        key: "agent_id",
        message: "must be a number".into(),
    })
}

fn user_listing(s: &Settings) -> Result<UserListing, SettingProblem> {
    match s.get("user_listing") {
        None | Some("list_id") => Ok(UserListing::ListId),
        Some("per_department") => Ok(UserListing::PerDepartment),
        Some(other) => Err(SettingProblem {
            key: "user_listing",
            message: format!("{other:?} is neither \"list_id\" nor \"per_department\""),
        }),
    }
}

impl VendorSpec for WeCom {
    const NAME: &'static str = VENDOR;
    const KEYS: &'static [SettingKey] = &[
        SettingKey::plain("corp_id", true),
        SettingKey::plain("agent_id", true),
        SettingKey::plain("base_url", false),
        SettingKey::plain("user_listing", false),
        SettingKey::secret("corp_secret", true),
        SettingKey::secret("token", false),
        SettingKey::secret("encoding_aes_key", false),
    ];
    const ROOT_DEPARTMENT_ID: &'static str = "1";
    const MAX_DEPARTMENT_LEVELS: Option<usize> = Some(MAX_DEPARTMENT_LEVELS);
    /// WeCom's user create/update sets leadership from `is_leader_in_dept`.
    const PERSON_CARRIES_LEADERSHIP: bool = true;
    const CALLBACK_KEYS: CallbackKeys =
        CallbackKeys::All(&["token", "encoding_aes_key", "corp_id"]);
    /// change_contact.create_user, …
    const CONTACT_EVENT_PREFIXES: &'static [&'static str] = &["change_contact"];
    type Config = WecomConfig;

    fn config(s: &Settings) -> Result<WecomConfig, SettingProblem> {
        let base = s
            .get("base_url")
            .unwrap_or(crate::wecom::config::WECOM_ORIGIN);
        let mut cfg = WecomConfig::new(
            base,
            s.require("corp_id")?,
            s.require_secret("corp_secret")?,
            agent_id(s)?,
        );
        cfg.user_listing = user_listing(s)?;
        Ok(cfg)
    }
    fn check(s: &Settings) -> Vec<SettingProblem> {
        let agent = s.get("agent_id").and_then(|_| agent_id(s).err());
        agent
            .into_iter()
            .chain(user_listing(s).err())
            .chain(crate::registry::check_aes_key(s, "encoding_aes_key"))
            .collect()
    }
    fn directory(cfg: WecomConfig) -> Result<Arc<dyn Directory>, ConnectorError> {
        Ok(Arc::new(WecomConnector::new(cfg)?))
    }
    fn receiver(
        s: &Settings,
        dedup: Arc<dyn EventDedup>,
        max_body_bytes: usize,
    ) -> Result<Box<dyn ReceiveEvents>, ConnectorError> {
        let (token, aes_key, id) =
            s.wxbiz_keys(VENDOR, ["token", "encoding_aes_key", "corp_id"])?;
        let mut cfg = CallbackConfig::new(token, aes_key, id);
        cfg.max_body_bytes = max_body_bytes;
        Ok(Box::new(WecomReceiver::new(cfg, dedup)?))
    }
    fn contact_records(event_type: &str, payload: &Value) -> Option<Vec<(Entity, String)>> {
        crate::wecom::events::contact_records(event_type, payload)
    }
}
