//! Feishu / Lark. Facts: docs/vendors/feishu.md.
//!
//! Layout (every vendor module has the same files): `config` (settings), `auth` (tokens),
//! `client` (envelope, errors, retries), one file per API area (`contact`, `im`, `task`),
//! `events` (callbacks), `ws` (push channel without a public address), `sandbox` (the emulator).

pub mod auth;
pub mod bot;
pub mod client;
pub mod config;
pub mod contact;
pub mod events;
pub mod im;
pub mod sandbox;
pub mod task;
pub mod vendor;
pub mod ws;

use async_trait::async_trait;
use serde_json::Value;

use crate::capability::{Entity, ListQuery, ReadEntities, RecordStream};
use crate::client::{Fallible, VendorWrites};
use crate::error::ConnectorError;

pub use client::FeishuClient;
pub use config::FeishuConfig;
pub use events::{CallbackConfig, FeishuReceiver};

pub const VENDOR: &str = "feishu";

/// The Feishu connector: a [`FeishuClient`] behind the capability traits.
pub type FeishuConnector = crate::client::Connector<client::FeishuWire>;

fn unsupported(what: &str, entity: Entity) -> ConnectorError {
    crate::capability::unsupported(VENDOR, what, entity)
}

fn id_field(v: &Value, field: &str) -> Result<String, ConnectorError> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ConnectorError::permanent(VENDOR, format!("reply without {field}")))
}

#[async_trait]
impl ReadEntities for FeishuConnector {
    fn list<'a>(&'a self, entity: Entity, query: ListQuery) -> RecordStream<'a> {
        match entity {
            Entity::Department => {
                let parent = query.parent.unwrap_or_else(|| "0".into());
                self.client.department_children(&parent, query.recursive)
            }
            Entity::User => match query.parent {
                Some(d) => self.client.users_in_department(&d),
                None => self.client.all_users(),
            },
            Entity::Task => self.client.list_tasks(),
            Entity::Chat => self.client.list_chats(),
            Entity::Message => crate::capability::failed_stream(unsupported("listing", entity)),
        }
    }

    async fn get(&self, entity: Entity, id: &str) -> Result<Option<Value>, ConnectorError> {
        match entity {
            Entity::Department => self.client.get_department(id).await,
            Entity::User => self.client.get_user(id).await,
            Entity::Task => self.client.get_task(id).await,
            Entity::Message => self.client.get_message(id).await.map(Some),
            Entity::Chat => Err(unsupported("get", entity)),
        }
    }
}

#[async_trait]
impl VendorWrites for FeishuConnector {
    const KEYED: &'static [Entity] = &[Entity::Department, Entity::User];

    /// Departments and users take the key as `client_token`: Feishu returns the record created
    /// with that token the first time.
    async fn make_keyed(&self, entity: Entity, record: Value, key: &str) -> Fallible<String> {
        let c = &self.client;
        match entity {
            Entity::Department => {
                let d = c.create_department(record, Some(key)).await?;
                id_field(&d, &c.wire.cfg.department_id_type)
            }
            Entity::User => {
                let u = c.create_user(record, Some(key)).await?;
                id_field(&u, &c.wire.cfg.user_id_type)
            }
            _ => self.make(entity, record).await,
        }
    }

    async fn make(&self, entity: Entity, record: Value) -> Fallible<String> {
        let c = &self.client;
        match entity {
            Entity::Department => {
                let d = c.create_department(record, None).await?;
                id_field(&d, &c.wire.cfg.department_id_type)
            }
            Entity::User => {
                let u = c.create_user(record, None).await?;
                id_field(&u, &c.wire.cfg.user_id_type)
            }
            Entity::Message => {
                let m = im::OutgoingMessage::from_record(&record)?;
                id_field(&c.send_message(&m).await?, "message_id")
            }
            Entity::Task => id_field(&c.create_task(record, None).await?, "guid"),
            Entity::Chat => Err(unsupported("create", entity)),
        }
    }

    async fn patch(&self, entity: Entity, id: &str, patch: Value) -> Fallible<()> {
        let c = &self.client;
        match entity {
            Entity::Department => c.patch_department(id, patch).await.map(drop),
            Entity::User => c.patch_user(id, patch).await.map(drop),
            Entity::Task => c.patch_task(id, patch, None).await.map(drop),
            Entity::Message | Entity::Chat => Err(unsupported("update", entity)),
        }
    }

    async fn remove(&self, entity: Entity, id: &str) -> Fallible<()> {
        let c = &self.client;
        match entity {
            Entity::Department => c.delete_department(id).await,
            Entity::User => c.delete_user(id, None).await,
            Entity::Task => c.delete_task(id).await,
            Entity::Message | Entity::Chat => Err(unsupported("delete", entity)),
        }
    }
}
