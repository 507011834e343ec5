//! DingTalk in the vendor registry: its connector table and what it builds.

use std::sync::Arc;

use serde_json::Value;

use crate::capability::{Entity, EventDedup, PushChannel, ReceiveEvents};
use crate::dingtalk::{
    CallbackConfig, DingTalkConfig, DingTalkConnector, DingTalkReceiver, StreamClient, VENDOR,
};
use crate::error::ConnectorError;
use crate::registry::{CallbackKeys, Directory, SettingKey, SettingProblem, Settings, VendorSpec};

pub struct DingTalk;

impl VendorSpec for DingTalk {
    const NAME: &'static str = VENDOR;
    const KEYS: &'static [SettingKey] = &[
        SettingKey::plain("app_key", true),
        SettingKey::plain("robot_code", false),
        SettingKey::plain("base_url", false),
        SettingKey::plain("api_base_url", false),
        SettingKey::secret("app_secret", true),
        SettingKey::secret("aes_key", false),
        SettingKey::secret("token", false),
    ];
    const ROOT_DEPARTMENT_ID: &'static str = "1";
    const HAS_PUSH_CHANNEL: bool = true;
    const CALLBACK_KEYS: CallbackKeys = CallbackKeys::All(&["token", "aes_key", "app_key"]);
    /// user_add_org, user_modify_org, user_leave_org, org_dept_create, …
    const CONTACT_EVENT_PREFIXES: &'static [&'static str] = &["user_", "org_dept_"];
    type Config = DingTalkConfig;

    /// `base_url` is one origin for both API generations (a sandbox), `api_base_url` the v1.0
    /// origin alone; `robot_code` defaults to the app key. The directory, the Stream client
    /// and the robots all read this one config.
    fn config(s: &Settings) -> Result<DingTalkConfig, SettingProblem> {
        let (key, secret) = (s.require("app_key")?, s.require_secret("app_secret")?);
        let mut cfg = match s.get("base_url") {
            Some(base) => DingTalkConfig::for_sandbox(base, key, secret),
            None => DingTalkConfig::new(key, secret),
        };
        if let Some(api) = s.get("api_base_url") {
            cfg.api_base = api.to_owned();
        }
        cfg.robot_code = s.get("robot_code").map(str::to_owned);
        Ok(cfg)
    }
    fn check(s: &Settings) -> Vec<SettingProblem> {
        crate::registry::check_aes_key(s, "aes_key")
            .into_iter()
            .collect()
    }
    fn directory(cfg: DingTalkConfig) -> Result<Arc<dyn Directory>, ConnectorError> {
        Ok(Arc::new(DingTalkConnector::new(cfg)?))
    }
    fn receiver(
        s: &Settings,
        dedup: Arc<dyn EventDedup>,
        max_body_bytes: usize,
    ) -> Result<Box<dyn ReceiveEvents>, ConnectorError> {
        let (token, aes_key, id) = s.wxbiz_keys(VENDOR, ["token", "aes_key", "app_key"])?;
        let mut cfg = CallbackConfig::new(token, aes_key, id);
        cfg.max_body_bytes = max_body_bytes;
        Ok(Box::new(DingTalkReceiver::new(cfg, dedup)?))
    }
    fn push_channel(cfg: DingTalkConfig) -> Option<Result<Box<dyn PushChannel>, ConnectorError>> {
        Some(StreamClient::new(&cfg).map(|c| Box::new(c) as Box<dyn PushChannel>))
    }
    fn contact_records(event_type: &str, payload: &Value) -> Option<Vec<(Entity, String)>> {
        crate::dingtalk::events::contact_records(event_type, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One config for the directory, the Stream client and the robots: `api_base_url` and
    /// `robot_code` reach all of them (the directory used to ignore the first, nothing read
    /// the second).
    #[test]
    fn api_base_url_and_robot_code_reach_the_config() {
        let s = Settings {
            name: "sub".into(),
            plain: [
                ("app_key".to_owned(), "dingk".to_owned()),
                (
                    "api_base_url".to_owned(),
                    "http://127.0.0.1:9/api".to_owned(),
                ),
                ("robot_code".to_owned(), "robot-7".to_owned()),
            ]
            .into(),
            secrets: [("app_secret".to_owned(), "s".to_owned().into())].into(),
        };
        let cfg = DingTalk::config(&s).unwrap();
        assert_eq!(cfg.api(), "http://127.0.0.1:9/api");
        assert_eq!(cfg.robot(), "robot-7");
        let client = crate::dingtalk::DingTalkClient::new(cfg).unwrap();
        assert_eq!(client.config().api(), "http://127.0.0.1:9/api");
        let mut plain = s.plain.clone();
        plain.remove("robot_code");
        let cfg = DingTalk::config(&Settings { plain, ..s }).unwrap();
        assert_eq!(cfg.robot(), "dingk", "the app key by default");
    }
}
