//! DingTalk in the vendor registry: its connector table and what it builds.

use std::sync::Arc;

use serde_json::Value;

use crate::capability::{Entity, EventDedup, PushChannel};
use crate::dingtalk::{
    CallbackConfig, DingTalkConfig, DingTalkConnector, DingTalkReceiver, StreamClient, VENDOR,
};
use crate::error::ConnectorError;
use crate::registry::{
    Directory, ReceiverSetup, SettingKey, SettingProblem, Settings, Vendor, problem_error,
};

pub struct DingTalk;

const KEYS: &[SettingKey] = &[
    SettingKey::plain("app_key", true),
    SettingKey::plain("robot_code", false),
    SettingKey::plain("base_url", false),
    SettingKey::plain("api_base_url", false),
    SettingKey::secret("app_secret", true),
    SettingKey::secret("aes_key", false),
    SettingKey::secret("token", false),
];

/// The app's settings from a connector table: `base_url` is one origin for both API
/// generations (a sandbox), `api_base_url` the v1.0 origin alone; `robot_code` defaults to the
/// app key. The directory, the Stream client and the robots all read this one config.
pub fn config(s: &Settings) -> Result<DingTalkConfig, SettingProblem> {
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

impl Vendor for DingTalk {
    fn name(&self) -> &'static str {
        VENDOR
    }
    fn keys(&self) -> &'static [SettingKey] {
        KEYS
    }
    fn has_push_channel(&self) -> bool {
        true
    }
    fn directory(&self, s: &Settings) -> Result<Arc<dyn Directory>, ConnectorError> {
        let cfg = config(s).map_err(|p| problem_error(VENDOR, p))?;
        Ok(Arc::new(DingTalkConnector::new(cfg)?))
    }
    fn receiver(
        &self,
        s: &Settings,
        dedup: Arc<dyn EventDedup>,
        max_body_bytes: usize,
    ) -> ReceiverSetup {
        let (token, aes_key, app_key) = (s.secret("token"), s.secret("aes_key"), s.get("app_key"));
        let (Some(token), Some(aes_key), Some(app_key)) = (token.clone(), aes_key.clone(), app_key)
        else {
            let mut missing = Vec::new();
            for (key, absent) in [
                ("token", token.is_none()),
                ("aes_key", aes_key.is_none()),
                ("app_key", app_key.is_none()),
            ] {
                if absent {
                    missing.push(key);
                }
            }
            return ReceiverSetup::Missing(missing);
        };
        let mut cfg = CallbackConfig::new(token, aes_key, app_key);
        cfg.max_body_bytes = max_body_bytes;
        match DingTalkReceiver::new(cfg, dedup) {
            Ok(r) => ReceiverSetup::Ready(Box::new(r)),
            Err(e) => ReceiverSetup::Invalid(e.to_string()),
        }
    }
    fn push_channel(&self, s: &Settings) -> Result<Box<dyn PushChannel>, ConnectorError> {
        let cfg = config(s).map_err(|p| problem_error(VENDOR, p))?;
        Ok(Box::new(StreamClient::new(&cfg)?))
    }
    fn contact_records(&self, event_type: &str, payload: &Value) -> Option<Vec<(Entity, String)>> {
        crate::dingtalk::events::contact_records(event_type, payload)
    }
    fn root_department_id(&self) -> &'static str {
        "1"
    }
}
