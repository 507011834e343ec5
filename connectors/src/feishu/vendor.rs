//! Feishu in the vendor registry: its connector table and what it builds.

use std::sync::Arc;

use serde_json::Value;

use crate::capability::{Entity, EventDedup, PushChannel, ReceiveEvents};
use crate::error::ConnectorError;
use crate::feishu::{CallbackConfig, FeishuConfig, FeishuConnector, FeishuReceiver, VENDOR, ws};
use crate::registry::{CallbackKeys, Directory, SettingKey, SettingProblem, Settings, VendorSpec};

pub struct Feishu;

impl VendorSpec for Feishu {
    const NAME: &'static str = VENDOR;
    const ALIASES: &'static [&'static str] = &["lark"];
    const KEYS: &'static [SettingKey] = &[
        SettingKey::plain("app_id", true),
        SettingKey::plain("base_url", false),
        SettingKey::secret("app_secret", true),
        SettingKey::secret("encrypt_key", false),
        SettingKey::secret("verification_token", false),
    ];
    const ROOT_DEPARTMENT_ID: &'static str = "0";
    const HAS_PUSH_CHANNEL: bool = true;
    /// Either suffices: an encrypt key, or the verification token of plain callbacks.
    const CALLBACK_KEYS: CallbackKeys = CallbackKeys::AnyOf(&["encrypt_key", "verification_token"]);
    /// contact.user.created_v3, contact.department.updated_v3, …
    const CONTACT_EVENT_PREFIXES: &'static [&'static str] = &["contact."];
    type Config = FeishuConfig;

    fn config(s: &Settings) -> Result<FeishuConfig, SettingProblem> {
        let base = s
            .get("base_url")
            .unwrap_or(crate::feishu::config::FEISHU_ORIGIN);
        Ok(FeishuConfig::new(
            base,
            s.require("app_id")?,
            s.require_secret("app_secret")?,
        ))
    }
    fn directory(cfg: FeishuConfig) -> Result<Arc<dyn Directory>, ConnectorError> {
        Ok(Arc::new(FeishuConnector::new(cfg)?))
    }
    fn receiver(
        s: &Settings,
        dedup: Arc<dyn EventDedup>,
        max_body_bytes: usize,
    ) -> Result<Box<dyn ReceiveEvents>, ConnectorError> {
        let mut cfg = CallbackConfig::new(s.secret("encrypt_key"), s.secret("verification_token"));
        cfg.max_body_bytes = max_body_bytes;
        Ok(Box::new(FeishuReceiver::new(cfg, dedup)?))
    }
    fn push_channel(cfg: FeishuConfig) -> Option<Result<Box<dyn PushChannel>, ConnectorError>> {
        Some(ws::LongConnection::new(&cfg).map(|c| Box::new(c) as Box<dyn PushChannel>))
    }
    fn contact_records(event_type: &str, payload: &Value) -> Option<Vec<(Entity, String)>> {
        crate::feishu::events::contact_records(event_type, payload)
    }
}
