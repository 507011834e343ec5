//! Feishu in the vendor registry: its connector table and what it builds.

use std::sync::Arc;

use serde_json::Value;

use crate::capability::{Entity, EventDedup, PushChannel};
use crate::error::ConnectorError;
use crate::feishu::{CallbackConfig, FeishuConfig, FeishuConnector, FeishuReceiver, VENDOR, ws};
use crate::registry::{
    Directory, ReceiverSetup, SettingKey, SettingProblem, Settings, Vendor, problem_error,
};

pub struct Feishu;

const KEYS: &[SettingKey] = &[
    SettingKey::plain("app_id", true),
    SettingKey::plain("base_url", false),
    SettingKey::secret("app_secret", true),
    SettingKey::secret("encrypt_key", false),
    SettingKey::secret("verification_token", false),
];

/// The app's settings from a connector table.
pub fn config(s: &Settings) -> Result<FeishuConfig, SettingProblem> {
    let base = s
        .get("base_url")
        .unwrap_or(crate::feishu::config::FEISHU_ORIGIN);
    Ok(FeishuConfig::new(
        base,
        s.require("app_id")?,
        s.require_secret("app_secret")?,
    ))
}

impl Vendor for Feishu {
    fn name(&self) -> &'static str {
        VENDOR
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["lark"]
    }
    fn keys(&self) -> &'static [SettingKey] {
        KEYS
    }
    fn has_push_channel(&self) -> bool {
        true
    }
    fn directory(&self, s: &Settings) -> Result<Arc<dyn Directory>, ConnectorError> {
        let cfg = config(s).map_err(|p| problem_error(VENDOR, p))?;
        Ok(Arc::new(FeishuConnector::new(cfg)?))
    }
    fn receiver(
        &self,
        s: &Settings,
        dedup: Arc<dyn EventDedup>,
        max_body_bytes: usize,
    ) -> ReceiverSetup {
        let (encrypt_key, token) = (s.secret("encrypt_key"), s.secret("verification_token"));
        if encrypt_key.is_none() && token.is_none() {
            return ReceiverSetup::Missing(vec!["encrypt_key", "verification_token"]);
        }
        let mut cfg = CallbackConfig::new(encrypt_key, token);
        cfg.max_body_bytes = max_body_bytes;
        match FeishuReceiver::new(cfg, dedup) {
            Ok(r) => ReceiverSetup::Ready(Box::new(r)),
            Err(e) => ReceiverSetup::Invalid(e.to_string()),
        }
    }
    fn push_channel(&self, s: &Settings) -> Result<Box<dyn PushChannel>, ConnectorError> {
        let cfg = config(s).map_err(|p| problem_error(VENDOR, p))?;
        Ok(Box::new(ws::LongConnection::new(&cfg)?))
    }
    fn contact_records(&self, event_type: &str, payload: &Value) -> Option<Vec<(Entity, String)>> {
        crate::feishu::events::contact_records(event_type, payload)
    }
    fn root_department_id(&self) -> &'static str {
        "0"
    }
}
