//! WeCom in the vendor registry: its connector table and what it builds.

use std::sync::Arc;

use serde_json::Value;

use crate::capability::{Entity, EventDedup};
use crate::error::ConnectorError;
use crate::registry::{
    Directory, ReceiverSetup, SettingKey, SettingProblem, Settings, Vendor, problem_error,
};
use crate::wecom::config::UserListing;
use crate::wecom::{
    CallbackConfig, MAX_DEPARTMENT_LEVELS, VENDOR, WecomConfig, WecomConnector, WecomReceiver,
};

pub struct WeCom;

const KEYS: &[SettingKey] = &[
    SettingKey::plain("corp_id", true),
    SettingKey::plain("agent_id", true),
    SettingKey::plain("base_url", false),
    SettingKey::plain("user_listing", false),
    SettingKey::secret("corp_secret", true),
    SettingKey::secret("token", false),
    SettingKey::secret("encoding_aes_key", false),
];

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

/// The app's settings from a connector table.
pub fn config(s: &Settings) -> Result<WecomConfig, SettingProblem> {
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

impl Vendor for WeCom {
    fn name(&self) -> &'static str {
        VENDOR
    }
    fn keys(&self) -> &'static [SettingKey] {
        KEYS
    }
    fn check(&self, s: &Settings) -> Vec<SettingProblem> {
        let mut out = Vec::new();
        if s.get("agent_id").is_some()
            && let Err(p) = agent_id(s)
        {
            out.push(p);
        }
        if let Err(p) = user_listing(s) {
            out.push(p);
        }
        out
    }
    fn directory(&self, s: &Settings) -> Result<Arc<dyn Directory>, ConnectorError> {
        let cfg = config(s).map_err(|p| problem_error(VENDOR, p))?;
        Ok(Arc::new(WecomConnector::new(cfg)?))
    }
    fn receiver(
        &self,
        s: &Settings,
        dedup: Arc<dyn EventDedup>,
        max_body_bytes: usize,
    ) -> ReceiverSetup {
        let (token, aes_key, corp_id) = (
            s.secret("token"),
            s.secret("encoding_aes_key"),
            s.get("corp_id"),
        );
        let (Some(token), Some(aes_key), Some(corp_id)) = (token.clone(), aes_key.clone(), corp_id)
        else {
            let mut missing = Vec::new();
            for (key, absent) in [
                ("token", token.is_none()),
                ("encoding_aes_key", aes_key.is_none()),
                ("corp_id", corp_id.is_none()),
            ] {
                if absent {
                    missing.push(key);
                }
            }
            return ReceiverSetup::Missing(missing);
        };
        let mut cfg = CallbackConfig::new(token, aes_key, corp_id);
        cfg.max_body_bytes = max_body_bytes;
        match WecomReceiver::new(cfg, dedup) {
            Ok(r) => ReceiverSetup::Ready(Box::new(r)),
            Err(e) => ReceiverSetup::Invalid(e.to_string()),
        }
    }
    fn contact_records(&self, event_type: &str, payload: &Value) -> Option<Vec<(Entity, String)>> {
        crate::wecom::events::contact_records(event_type, payload)
    }
    fn root_department_id(&self) -> &'static str {
        "1"
    }
    fn max_department_levels(&self) -> Option<usize> {
        Some(MAX_DEPARTMENT_LEVELS)
    }
    fn person_carries_leadership(&self) -> bool {
        true
    }
}
