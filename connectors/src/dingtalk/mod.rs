//! DingTalk (钉钉). Facts: docs/vendors/dingtalk.md.
//!
//! Layout (same files as every vendor module): `config` (settings), `auth` (token), `client`
//! (both API generations: envelopes, errors, retries), one file per API area (`contact`,
//! `message` (work notifications, media), `robot` (app robot, custom-robot webhook), `todo`),
//! `events` (HTTP push callbacks), `stream` (Stream mode: push channel without a public
//! address), `sandbox` (the emulator).

pub mod auth;
pub mod client;
pub mod config;
pub mod contact;
pub mod events;
pub mod message;
pub mod robot;
pub mod sandbox;
pub mod stream;
pub mod todo;
pub mod vendor;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Map, Value, json};

use crate::capability::{Entity, ListQuery, ReadEntities, RecordStream};
use crate::client::{Fallible, VendorWrites};
use crate::error::ConnectorError;

pub use client::DingTalkClient;
pub use config::DingTalkConfig;
pub use events::{CallbackConfig, DingTalkReceiver};
pub use stream::StreamClient;

pub const VENDOR: &str = "dingtalk";

/// The DingTalk connector: a [`DingTalkClient`] behind the capability traits.
///
/// Ids: departments by numeric `dept_id` (as a string), users by `userid`, todos by task id
/// (owned by `operator_union_id` unless the record names a `unionId`), messages by task id
/// (work notification) or `processQueryKey` (robot).
pub type DingTalkConnector = crate::client::Connector<client::DingTalkWire>;

fn unsupported(what: &str, entity: Entity) -> ConnectorError {
    crate::capability::unsupported(VENDOR, what, entity)
}

fn take_str(m: &mut Map<String, Value>, k: &str) -> Option<String> {
    match m.remove(k) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

impl DingTalkConnector {
    async fn send_message(&self, record: Value) -> Result<String, ConnectorError> {
        let c = &self.client;
        let Value::Object(mut m) = record else {
            return Err(ConnectorError::permanent(
                VENDOR,
                "message must be an object",
            ));
        };
        if let Some(key) = take_str(&mut m, "msgKey") {
            let param = match m.remove("msgParam") {
                Some(Value::String(s)) => serde_json::from_str(&s).map_err(|_| {
                    ConnectorError::permanent(VENDOR, "msgParam string is not JSON")
                })?,
                Some(v) => v,
                None => json!({}),
            };
            if let Some(cid) = take_str(&mut m, "openConversationId") {
                return c.robot_group_send(&cid, &key, &param).await;
            }
            let users: Vec<String> = m
                .get("userIds")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let r = c.robot_oto_send(&users, &key, &param).await?;
            return r
                .get("processQueryKey")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ConnectorError::permanent(VENDOR, "reply without processQueryKey"));
        }
        let msg = m
            .remove("msg")
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "message without msg or msgKey"))?;
        let split = |v: &Value| -> Vec<String> {
            match v {
                Value::String(s) => s
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let to = if m.get("to_all_user").and_then(Value::as_bool) == Some(true) {
            message::Recipients::All
        } else if let Some(u) = m.get("userid_list") {
            message::Recipients::Users(split(u))
        } else if let Some(d) = m.get("dept_id_list") {
            let ids = split(d)
                .iter()
                .map(|s| contact::dept_id(s))
                .collect::<Result<Vec<_>, _>>()?;
            message::Recipients::Departments(ids)
        } else {
            return Err(ConnectorError::permanent(
                VENDOR,
                "message without userid_list, dept_id_list or to_all_user",
            ));
        };
        c.send_work_notification(&to, msg)
            .await
            .map(|t| t.to_string())
    }
}

#[async_trait]
impl ReadEntities for DingTalkConnector {
    fn list<'a>(&'a self, entity: Entity, query: ListQuery) -> RecordStream<'a> {
        let c = &self.client;
        match entity {
            Entity::Department => {
                let parent = match query.parent.as_deref().map(contact::dept_id) {
                    None => contact::ROOT_DEPT,
                    Some(Ok(id)) => id,
                    Some(Err(e)) => return crate::capability::failed_stream(e),
                };
                let listed = c.department_children(parent, query.recursive);
                if !query.complete {
                    return listed;
                }
                // listsub omits order and managers: read each department (4 at a time).
                listed
                    .map_ok(move |d| async move {
                        match d.get("dept_id").and_then(Value::as_i64) {
                            Some(id) => Ok(c.get_department(id).await?.unwrap_or(d)),
                            None => Ok(d),
                        }
                    })
                    .try_buffered(4)
                    .boxed()
            }
            Entity::User => match query.parent.as_deref().map(contact::dept_id) {
                Some(Ok(d)) => c.users_in_department(d),
                Some(Err(e)) => crate::capability::failed_stream(e),
                None => c.all_users(),
            },
            Entity::Task => {
                let owner = match query.params.get("unionId") {
                    Some(u) => u.clone(),
                    None => match c.operator() {
                        Ok(o) => o.to_string(),
                        Err(e) => return crate::capability::failed_stream(e),
                    },
                };
                let mut filter = Map::new();
                if let Some(d) = query.params.get("isDone") {
                    filter.insert("isDone".into(), json!(d == "true"));
                }
                c.list_tasks(&owner, Value::Object(filter))
            }
            Entity::Message | Entity::Chat => {
                crate::capability::failed_stream(unsupported("listing", entity))
            }
        }
    }

    async fn get(&self, entity: Entity, id: &str) -> Result<Option<Value>, ConnectorError> {
        let c = &self.client;
        match entity {
            Entity::Department => c.get_department(contact::dept_id(id)?).await,
            Entity::User => c.get_user(id).await,
            Entity::Task => c.get_task(c.operator()?, id).await,
            Entity::Message | Entity::Chat => Err(unsupported("get", entity)),
        }
    }
}

#[async_trait]
impl VendorWrites for DingTalkConnector {
    const KEYED: &'static [Entity] = &[Entity::User, Entity::Department];

    /// A user without a `userid` gets the key as its userid: a second create with the key is
    /// refused as "userid exists" (60102), which then means the first one went through. A
    /// department is recognised by its name under its parent, which DingTalk keeps unique
    /// (60008 on a second create).
    async fn make_keyed(&self, entity: Entity, mut record: Value, key: &str) -> Fallible<String> {
        if entity == Entity::Department {
            let parent = record.get("parent_id").and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            });
            let name = record
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned);
            return match (self.make(entity, record).await, parent, name) {
                (Err(e), Some(parent), Some(name)) if e.code() == Some(60008) => {
                    let found = self
                        .client
                        .list_sub_departments(parent)
                        .await?
                        .into_iter()
                        .find(|d| d.get("name").and_then(Value::as_str) == Some(name.as_str()))
                        .and_then(|d| d.get("dept_id").and_then(Value::as_i64));
                    match found {
                        Some(id) => {
                            tracing::info!(
                                vendor = VENDOR,
                                dept_id = id,
                                "department already created"
                            );
                            Ok(id.to_string())
                        }
                        None => Err(e),
                    }
                }
                (other, _, _) => other,
            };
        }
        let chosen = match (&entity, record.as_object_mut()) {
            (Entity::User, Some(m)) if !m.contains_key("userid") && key.len() <= 64 => {
                m.insert("userid".into(), Value::from(key));
                true
            }
            _ => false,
        };
        match self.make(entity, record).await {
            // Ours if it is there to be read (a userid may stay reserved after a deletion).
            Err(e) if chosen && e.code() == Some(60102) => match self.get(entity, key).await {
                Ok(Some(_)) => {
                    tracing::info!(userid = key, "user already created with this key");
                    Ok(key.to_owned())
                }
                _ => Err(e),
            },
            other => other,
        }
    }

    async fn make(&self, entity: Entity, record: Value) -> Fallible<String> {
        let c = &self.client;
        match entity {
            Entity::Department => c.create_department(record).await.map(|id| id.to_string()),
            Entity::User => {
                let r = c.create_user(record).await?;
                r.get("userid")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| ConnectorError::permanent(VENDOR, "user/create without userid"))
            }
            Entity::Message => self.send_message(record).await,
            Entity::Task => {
                let mut record = record;
                let owner = match record.as_object_mut().and_then(|m| take_str(m, "unionId")) {
                    Some(u) => u,
                    None => c.operator()?.to_string(),
                };
                let op = c
                    .wire
                    .cfg
                    .operator_union_id
                    .clone()
                    .unwrap_or_else(|| owner.clone());
                let t = c.create_task(&owner, &op, record).await?;
                t.get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| ConnectorError::permanent(VENDOR, "todo create without id"))
            }
            Entity::Chat => Err(unsupported("create", entity)),
        }
    }

    async fn patch(&self, entity: Entity, id: &str, patch: Value) -> Fallible<()> {
        let c = &self.client;
        match entity {
            Entity::Department => c.update_department(contact::dept_id(id)?, patch).await,
            Entity::User => c.update_user(id, patch).await,
            Entity::Task => {
                let op = c.operator()?;
                c.update_task(op, id, op, patch).await
            }
            Entity::Message | Entity::Chat => Err(unsupported("update", entity)),
        }
    }

    async fn remove(&self, entity: Entity, id: &str) -> Fallible<()> {
        let c = &self.client;
        match entity {
            Entity::Department => c.delete_department(contact::dept_id(id)?).await,
            Entity::User => c.delete_user(id).await,
            Entity::Task => {
                let op = c.operator()?;
                c.delete_task(op, id, op).await
            }
            Entity::Message | Entity::Chat => Err(unsupported("delete", entity)),
        }
    }
}
