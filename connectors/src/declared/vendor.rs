//! `kind = "http"` in the vendor registry: a connector table names a definition (shipped or a
//! file), its base URL, credentials, `[params]` and `allow_hosts`. Org sync reaches it through
//! the entities its definition marks `canonical: person` / `department`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::connector::{HttpConnector, ListOptions, Options, credentials};
use super::definition::Definition;
use crate::capability::{Entity, EventDedup, ListQuery, ReadEntities, RecordStream, WriteEntities};
use crate::error::ConnectorError;
use crate::registry::{Directory, ReceiverSetup, SettingKey, SettingProblem, Settings, Vendor};

pub struct Http;

const KEYS: &[SettingKey] = &[
    SettingKey::plain("definition", true),
    SettingKey::plain("base_url", true),
    SettingKey::secret("api_key", false),
    SettingKey::plain("client_id", false),
    SettingKey::plain("token_url", false),
    SettingKey::secret("client_secret", false),
    SettingKey::secret("hmac_secret", false),
    SettingKey::plain("username", false),
    SettingKey::secret("password", false),
];

/// The table keys whose values are TOML tables or arrays, kept as JSON text.
pub const TABLE_KEYS: &[&str] = &["params", "allow_hosts"];

/// The options of a connector table (definition not yet applied).
pub fn options(settings: &Settings) -> Result<Options, SettingProblem> {
    let params = match settings.get("params") {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(SettingProblem {
                    key: "params",
                    message: "expected a table of parameters".into(),
                });
            }
        },
    };
    let allow_hosts = match settings.get("allow_hosts") {
        None => Vec::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => {
                return Err(SettingProblem {
                    key: "allow_hosts",
                    message: "expected a list of host names or addresses".into(),
                });
            }
        },
    };
    Ok(Options {
        name: settings.name.clone(),
        base_url: settings.require("base_url")?.to_owned(),
        params,
        credentials: credentials(&settings.plain, &settings.secrets),
        allow_hosts,
        retry: None,
    })
}

/// The connector of a table: its definition resolved and the instance built (no network).
pub fn connector(settings: &Settings) -> Result<HttpConnector, ConnectorError> {
    let fail = |m: String| {
        ConnectorError::permanent("http", format!("connector {:?}: {m}", settings.name))
    };
    let def_name = settings
        .require("definition")
        .map_err(|p| fail(format!("`{}` {}", p.key, p.message)))?;
    let def = super::resolve(def_name).map_err(|e| fail(e.to_string()))?;
    let options = options(settings).map_err(|p| fail(format!("`{}` {}", p.key, p.message)))?;
    HttpConnector::new(def, options)
}

impl Vendor for Http {
    fn name(&self) -> &'static str {
        "http"
    }
    fn keys(&self) -> &'static [SettingKey] {
        KEYS
    }
    fn table_keys(&self) -> &'static [&'static str] {
        TABLE_KEYS
    }
    /// The definition's name when it is a shipped one (`tryton` → `tryton-person`).
    fn mapping_system(&self, settings: &Settings) -> Option<String> {
        let d = settings.get("definition")?;
        super::is_name(d).then(|| d.to_owned())
    }
    fn check(&self, settings: &Settings) -> Vec<SettingProblem> {
        let mut out = Vec::new();
        let Some(def_name) = settings.get("definition") else {
            return out;
        };
        let def: Arc<Definition> = match super::resolve(def_name) {
            Ok(d) => d,
            Err(e) => {
                out.push(SettingProblem {
                    key: "definition",
                    message: format!("is not a usable definition:\n{e}"),
                });
                return out;
            }
        };
        let options = match options(settings) {
            Ok(o) => o,
            Err(p) => {
                out.push(p);
                return out;
            }
        };
        for p in def.auth.required_secrets() {
            if !settings.secrets.contains_key(*p) {
                out.push(SettingProblem {
                    key: p,
                    message: format!(
                        "(secret) is not set: definition {:?} authenticates with {} (set `{p}_env` or `{p}_file`)",
                        def.name,
                        def.auth.kind()
                    ),
                });
            }
        }
        for p in def.auth.required_plain() {
            if settings.get(p).is_none() {
                out.push(SettingProblem {
                    key: p,
                    message: format!(
                        "is not set: definition {:?} authenticates with {}",
                        def.name,
                        def.auth.kind()
                    ),
                });
            }
        }
        if !out.is_empty() {
            return out;
        }
        if let Err(e) = HttpConnector::new(def, options) {
            let message = e.message().to_owned();
            let key = if message.contains("parameter") {
                "params"
            } else if message.contains("token_url") {
                "token_url"
            } else {
                "base_url"
            };
            out.push(SettingProblem { key, message });
        }
        out
    }
    fn directory(&self, settings: &Settings) -> Result<Arc<dyn Directory>, ConnectorError> {
        Ok(Arc::new(Declared(connector(settings)?)))
    }
    fn receiver(
        &self,
        _settings: &Settings,
        _dedup: Arc<dyn EventDedup>,
        _max_body_bytes: usize,
    ) -> ReceiverSetup {
        // No vendor callbacks: answered like an unknown connector (one 404).
        ReceiverSetup::Missing(vec!["(http connectors take no vendor callbacks)"])
    }
    fn is_contact_event(&self, _event_type: &str) -> bool {
        false
    }
    fn contact_records(
        &self,
        _event_type: &str,
        _payload: &Value,
    ) -> Option<Vec<(Entity, String)>> {
        None
    }
    /// None fixed: a declared system lists its root departments (records without a parent)
    /// with the others.
    fn root_department_id(&self) -> &'static str {
        ""
    }
}

/// A declared connector as an org directory: `User` is the entity marked `canonical: person`,
/// `Department` the one marked `canonical: department`.
pub struct Declared(pub HttpConnector);

impl Declared {
    fn entity(&self, entity: Entity) -> Result<String, ConnectorError> {
        let want = match entity {
            Entity::User => "person",
            Entity::Department => "department",
            other => other.as_str(),
        };
        self.0
            .definition()
            .entities
            .iter()
            .find(|(_, e)| e.canonical.as_deref() == Some(want))
            .map(|(n, _)| n.clone())
            .ok_or_else(|| {
                ConnectorError::permanent(
                    self.0.name(),
                    format!(
                        "definition {:?} marks no entity `canonical: {want}`; org sync needs a person and a department entity (a company can be the root department)",
                        self.0.definition().name
                    ),
                )
            })
    }
}

#[async_trait]
impl ReadEntities for Declared {
    fn list<'a>(&'a self, entity: Entity, query: ListQuery) -> RecordStream<'a> {
        match self.entity(entity) {
            Ok(name) => self.0.list(
                &name,
                ListOptions {
                    since: None,
                    page_size: query.page_size,
                },
            ),
            Err(e) => Box::pin(futures_util::stream::once(async move { Err(e) })),
        }
    }
    async fn get(&self, entity: Entity, id: &str) -> Result<Option<Value>, ConnectorError> {
        self.0.get(&self.entity(entity)?, id).await
    }
}

#[async_trait]
impl WriteEntities for Declared {
    async fn create(&self, entity: Entity, record: Value) -> Result<String, ConnectorError> {
        self.0.create(&self.entity(entity)?, record).await
    }
    /// Idempotent where the definition declares a `find` for the entity.
    fn keyed_creates(&self, entity: Entity) -> bool {
        self.entity(entity)
            .ok()
            .and_then(|n| {
                self.0
                    .definition()
                    .entities
                    .get(&n)
                    .map(|e| e.find.is_some())
            })
            .unwrap_or(false)
    }
    async fn update(
        &self,
        entity: Entity,
        id: &str,
        patch: Value,
    ) -> Result<String, ConnectorError> {
        self.0.update(&self.entity(entity)?, id, patch).await?;
        Ok(id.to_owned())
    }
    async fn delete(&self, entity: Entity, id: &str) -> Result<(), ConnectorError> {
        self.0.delete(&self.entity(entity)?, id).await
    }
}
