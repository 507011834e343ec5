//! From a `[connectors.NAME]` table to a live connector and its mappings.

use std::sync::Arc;

use huitong_connectors::capability::{ReadEntities, WriteEntities};
use huitong_mappings::Mapping;
use secrecy::SecretString;

use super::SyncError;
use crate::config::{ConnectorConfig, ConnectorKind};

/// What the sync engine needs of a connector: read and write the org chart.
pub trait Directory: ReadEntities + WriteEntities {}
impl<T: ReadEntities + WriteEntities> Directory for T {}

/// One side of a route: a connector with the mappings of its kind.
pub struct Endpoint {
    pub name: String,
    pub kind: ConnectorKind,
    pub directory: Arc<dyn Directory>,
    pub department: Mapping,
    pub person: Mapping,
}

impl Endpoint {
    /// How many levels of departments the vendor allows, the root being level 1.
    pub fn max_department_levels(&self) -> Option<usize> {
        match self.kind {
            ConnectorKind::WeCom => Some(huitong_connectors::wecom::MAX_DEPARTMENT_LEVELS),
            ConnectorKind::Feishu | ConnectorKind::DingTalk => None,
        }
    }

    /// Whether the vendor's user create/update sets department leadership from the person's
    /// record (WeCom `is_leader_in_dept`; DingTalk reports `leader_in_dept` but does not take
    /// it on write, Feishu keeps leaders on the department): a department's leaders then
    /// arrive with their own people, and need no second write of the department.
    pub fn person_carries_leadership(&self) -> bool {
        match self.kind {
            ConnectorKind::WeCom => true,
            ConnectorKind::Feishu | ConnectorKind::DingTalk => false,
        }
    }

    /// The vendor's root department id.
    pub fn root_id(&self) -> &'static str {
        match self.kind {
            ConnectorKind::Feishu => "0",
            ConnectorKind::DingTalk | ConnectorKind::WeCom => "1",
        }
    }
}

fn setting<'a>(c: &'a ConnectorConfig, key: &str) -> Result<&'a str, SyncError> {
    c.settings
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| SyncError::Config(format!("connector {}: `{key}` is not set", c.name)))
}

fn secret(c: &ConnectorConfig, key: &str) -> Result<SecretString, SyncError> {
    c.secrets.get(key).cloned().ok_or_else(|| {
        SyncError::Config(format!("connector {}: secret `{key}` is not set", c.name))
    })
}

fn shipped(kind: ConnectorKind, entity: &str) -> Result<Mapping, SyncError> {
    match huitong_mappings::shipped::load(kind.as_str(), entity) {
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => Err(SyncError::Config(format!(
            "shipped {} {entity} mapping: {e}",
            kind.as_str()
        ))),
        None => Err(SyncError::Config(format!(
            "no shipped {} {entity} mapping",
            kind.as_str()
        ))),
    }
}

/// Build the connector named by `c` (no network call yet).
pub fn endpoint(c: &ConnectorConfig) -> Result<Endpoint, SyncError> {
    let conn_err = |e: huitong_connectors::ConnectorError| {
        SyncError::Config(format!("connector {}: {e}", c.name))
    };
    let directory: Arc<dyn Directory> = match c.kind {
        ConnectorKind::Feishu => {
            use huitong_connectors::feishu::{FeishuConfig, FeishuConnector};
            let base = c
                .settings
                .get("base_url")
                .map_or("https://open.feishu.cn", String::as_str);
            let cfg = FeishuConfig::new(base, setting(c, "app_id")?, secret(c, "app_secret")?);
            Arc::new(FeishuConnector::new(cfg).map_err(conn_err)?)
        }
        ConnectorKind::DingTalk => {
            use huitong_connectors::dingtalk::{DingTalkConnector, config::DingTalkConfig};
            let cfg = match c.settings.get("base_url") {
                Some(base) => DingTalkConfig::for_sandbox(
                    base.as_str(),
                    setting(c, "app_key")?,
                    secret(c, "app_secret")?,
                ),
                None => DingTalkConfig::new(setting(c, "app_key")?, secret(c, "app_secret")?),
            };
            Arc::new(DingTalkConnector::new(cfg).map_err(conn_err)?)
        }
        ConnectorKind::WeCom => {
            use huitong_connectors::wecom::WecomConnector;
            use huitong_connectors::wecom::config::{UserListing, WecomConfig};
            let base = c
                .settings
                .get("base_url")
                .map_or("https://qyapi.weixin.qq.com", String::as_str);
            let agent_id: i64 = setting(c, "agent_id")?.parse().map_err(|_| {
                SyncError::Config(format!("connector {}: agent_id must be a number", c.name))
            })?;
            let mut cfg = WecomConfig::new(
                base,
                setting(c, "corp_id")?,
                secret(c, "corp_secret")?,
                agent_id,
            );
            cfg.user_listing = match c.settings.get("user_listing").map(String::as_str) {
                None | Some("list_id") => UserListing::ListId,
                Some("per_department") => UserListing::PerDepartment,
                Some(other) => {
                    return Err(SyncError::Config(format!(
                        "connector {}: user_listing {other:?} is neither \"list_id\" nor \"per_department\"",
                        c.name
                    )));
                }
            };
            Arc::new(WecomConnector::new(cfg).map_err(conn_err)?)
        }
    };
    Ok(Endpoint {
        name: c.name.clone(),
        kind: c.kind,
        directory,
        department: shipped(c.kind, "department")?,
        person: shipped(c.kind, "person")?,
    })
}
