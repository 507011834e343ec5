//! WeCom (企业微信 / WeChat Work). Facts: docs/vendors/wecom.md.
//!
//! Layout (every vendor module has the same files): `config` (settings), `auth` (tokens),
//! `client` (envelope, errors, retries), one file per API area (`contact`, `message` — app
//! messages, app group chats, media, group robots — and `schedule` — tasks as `oa/schedule` or
//! textcards), `events` (callbacks), `sandbox` (the emulator). WeCom has no push channel that
//! works without a public address, so there is no `ws`.

pub mod auth;
pub mod client;
pub mod config;
pub mod contact;
pub mod events;
pub mod message;
pub mod sandbox;
pub mod schedule;
pub mod vendor;

use async_trait::async_trait;
use serde_json::Value;

use crate::capability::{Entity, ListQuery, ReadEntities, RecordStream};
use crate::client::{Fallible, VendorWrites};
use crate::error::ConnectorError;

pub use client::WecomClient;
pub use config::WecomConfig;
pub use events::{CallbackConfig, WecomReceiver};

pub const VENDOR: &str = "wecom";
/// Departments nest at most 15 levels deep, the root being level 1 (errcode 81001 beyond).
pub const MAX_DEPARTMENT_LEVELS: usize = 15;

/// The WeCom connector: a [`WecomClient`] behind the capability traits.
///
/// Ids: departments by their numeric id (root 1, as a decimal string), users by userid,
/// messages by msgid, chats by chatid, tasks by schedule_id (or `textcard:<msgid>`).
pub type WecomConnector = crate::client::Connector<client::WecomWire>;

fn unsupported(what: &str, entity: Entity) -> ConnectorError {
    crate::capability::unsupported(VENDOR, what, entity)
}

fn dept_id(id: &str) -> Result<i64, ConnectorError> {
    id.trim().parse().map_err(|_| {
        ConnectorError::permanent(VENDOR, format!("department id {id:?} is not a number"))
    })
}

#[async_trait]
impl ReadEntities for WecomConnector {
    fn list<'a>(&'a self, entity: Entity, query: ListQuery) -> RecordStream<'a> {
        let c = &self.client;
        match entity {
            Entity::Department => match query.parent.as_deref().map(dept_id).transpose() {
                Ok(parent) => c.departments(parent, query.recursive),
                Err(e) => crate::capability::failed_stream(e),
            },
            Entity::User => match query.parent.as_deref().map(dept_id).transpose() {
                Ok(Some(d)) => c.users_in_department(d),
                Ok(None) => c.all_users(),
                Err(e) => crate::capability::failed_stream(e),
            },
            Entity::Message | Entity::Task | Entity::Chat => {
                crate::capability::failed_stream(unsupported("listing", entity))
            }
        }
    }

    async fn get(&self, entity: Entity, id: &str) -> Result<Option<Value>, ConnectorError> {
        match entity {
            Entity::Department => self.client.get_department(dept_id(id)?).await,
            Entity::User => self.client.get_user(id).await,
            Entity::Task => self.client.get_task(id).await,
            Entity::Chat => self.client.get_appchat(id).await,
            Entity::Message => Err(unsupported("get", entity)),
        }
    }
}

#[async_trait]
impl VendorWrites for WecomConnector {
    const KEYED: &'static [Entity] = &[Entity::User, Entity::Department];

    /// WeCom has no idempotency key, but a create is still recognised when repeated (a retry
    /// after a lost reply, or after a crash): a member by the `userid` the mapping chose for it
    /// (refused as existing, 60102 — or its mobile or email as taken, 60104/60106 — and found
    /// under that userid with the same mobile and email); a department by its name under its
    /// parent, which WeCom keeps unique (60008). The key itself is not sent.
    async fn make_keyed(&self, entity: Entity, record: Value, _key: &str) -> Fallible<String> {
        let c = &self.client;
        match entity {
            Entity::User => {
                let userid = record
                    .get("userid")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                match (c.create_user(record.clone()).await, userid) {
                    (Err(e), Some(userid)) if matches!(e.code(), Some(60102 | 60104 | 60106)) => {
                        match c.get_user(&userid).await? {
                            Some(found) if crate::capability::same_contact(&record, &found) => {
                                tracing::info!(vendor = VENDOR, userid = %userid, "member already created");
                                Ok(userid)
                            }
                            _ => Err(e),
                        }
                    }
                    (other, _) => other,
                }
            }
            Entity::Department => {
                let parent = record.get("parentid").and_then(contact::as_int);
                let name = record
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                match (c.create_department(record).await, parent, name) {
                    (Err(e), Some(parent), Some(name)) if e.code() == Some(60008) => {
                        let found = c
                            .list_departments(Some(parent))
                            .await?
                            .into_iter()
                            .find(|d| {
                                d.get("parentid").and_then(contact::as_int) == Some(parent)
                                    && d.get("name").and_then(Value::as_str) == Some(name.as_str())
                            });
                        match found.and_then(|d| d.get("id").and_then(contact::as_int)) {
                            Some(id) => {
                                tracing::info!(vendor = VENDOR, id, "department already created");
                                Ok(id.to_string())
                            }
                            None => Err(e),
                        }
                    }
                    (other, _, _) => other.map(|id| id.to_string()),
                }
            }
            _ => self.make(entity, record).await,
        }
    }

    async fn make(&self, entity: Entity, record: Value) -> Fallible<String> {
        let c = &self.client;
        match entity {
            Entity::Department => c.create_department(record).await.map(|id| id.to_string()),
            Entity::User => c.create_user(record).await,
            Entity::Message => {
                let m = message::OutgoingMessage::from_record(&record)?;
                Ok(c.send_message(&m).await?.msgid)
            }
            Entity::Task => c.create_task(&record).await,
            Entity::Chat => c.create_appchat(record).await,
        }
    }

    async fn patch(&self, entity: Entity, id: &str, patch: Value) -> Fallible<()> {
        let c = &self.client;
        match entity {
            Entity::Department => c.update_department(dept_id(id)?, patch).await?,
            Entity::User => c.update_user(id, patch).await?,
            Entity::Task => c.update_task(id, &patch).await?,
            Entity::Message | Entity::Chat => return Err(unsupported("update", entity)),
        }
        Ok(())
    }

    async fn remove(&self, entity: Entity, id: &str) -> Fallible<()> {
        let c = &self.client;
        match entity {
            Entity::Department => c.delete_department(dept_id(id)?).await,
            Entity::User => c.delete_user(id).await,
            Entity::Task => c.delete_task(id).await,
            Entity::Message => c.recall_message(id).await,
            Entity::Chat => Err(unsupported("delete", entity)),
        }
    }
}
