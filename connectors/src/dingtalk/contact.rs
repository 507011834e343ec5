//! Org chart (通讯录), old generation: `department/listsub` walked breadth-first from root 1
//! (direct children only, no paging), `user/list` cursor paging, and the get/create/update/
//! delete calls, with DingTalk's quirks (comma-string lists on create, `unionId` vs `unionid`).

use std::collections::{HashSet, VecDeque};
use std::future::ready;

use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::{Map, Value, json};

use crate::capability::RecordStream;
use crate::client::array_at;
use crate::dingtalk::VENDOR;
use crate::dingtalk::client::{ApiCall, DingTalkClient, Gen};
use crate::error::ConnectorError;

pub const DEPT_LISTSUB: &str = "/topapi/v2/department/listsub";
pub const DEPT_GET: &str = "/topapi/v2/department/get";
pub const DEPT_CREATE: &str = "/topapi/v2/department/create";
pub const DEPT_UPDATE: &str = "/topapi/v2/department/update";
pub const DEPT_DELETE: &str = "/topapi/v2/department/delete";
pub const USER_LIST: &str = "/topapi/v2/user/list";
pub const USER_GET: &str = "/topapi/v2/user/get";
pub const USER_CREATE: &str = "/topapi/v2/user/create";
pub const USER_UPDATE: &str = "/topapi/v2/user/update";
pub const USER_DELETE: &str = "/topapi/v2/user/delete";

/// The root department id.
pub const ROOT_DEPT: i64 = 1;
/// "department not found" / "user not found" / "invalid userid".
const DEPT_NOT_FOUND: &[i64] = &[60003];
const USER_NOT_FOUND: &[i64] = &[60121, 33012];

use crate::error::gone_is_done;

/// Fields that DingTalk takes as comma strings on create/update.
const COMMA_FIELDS: &[&str] = &["dept_id_list", "dept_manager_userid_list"];

/// Parses a department id given as a string.
pub fn dept_id(id: &str) -> Result<i64, ConnectorError> {
    id.trim()
        .parse::<i64>()
        .map_err(|_| ConnectorError::permanent(VENDOR, format!("dept id {id:?} is not a number")))
}

/// Turns JSON arrays in `COMMA_FIELDS` into DingTalk's comma strings.
pub fn comma_lists(mut body: Value) -> Value {
    if let Value::Object(m) = &mut body {
        for f in COMMA_FIELDS {
            if let Some(Value::Array(a)) = m.get(*f) {
                let s = a
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                m.insert((*f).to_string(), Value::String(s));
            }
        }
    }
    body
}

/// Adds `unionid` next to `unionId` (user/create answers camelCase, everything else lower).
pub fn normalize_union_id(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v
        && !m.contains_key("unionid")
        && let Some(u) = m.get("unionId").cloned()
    {
        m.insert("unionid".into(), u);
    }
    v
}

impl DingTalkClient {
    fn contact_call(&self, path: &'static str, body: Value) -> ApiCall {
        self.post_call(Gen::Old, path).json(body)
    }

    /// Direct sub-departments of `dept_id`.
    pub async fn list_sub_departments(&self, dept_id: i64) -> Result<Vec<Value>, ConnectorError> {
        match self
            .result(&self.contact_call(DEPT_LISTSUB, json!({"dept_id": dept_id})))
            .await?
        {
            Value::Array(a) => Ok(a),
            Value::Object(m) if m.is_empty() => Ok(Vec::new()),
            _ => Err(ConnectorError::permanent(
                VENDOR,
                "listsub result is not a list",
            )),
        }
    }

    /// Sub-departments of `dept_id` (1 = root): direct children, or every descendant
    /// (breadth-first) when `recursive`.
    pub fn department_children(&self, dept_id: i64, recursive: bool) -> RecordStream<'_> {
        let mut seen = HashSet::from([dept_id]);
        stream::try_unfold(
            VecDeque::from([dept_id]),
            move |mut queue: VecDeque<i64>| {
                let Some(parent) = queue.pop_front() else {
                    return futures_util::future::Either::Left(ready(Ok(None)));
                };
                let children = self.list_sub_departments(parent);
                let mut fresh = Vec::new();
                futures_util::future::Either::Right(async move {
                    let kids = children.await?;
                    for k in &kids {
                        if recursive && let Some(id) = k.get("dept_id").and_then(Value::as_i64) {
                            fresh.push(id);
                        }
                    }
                    queue.extend(fresh);
                    Ok::<_, ConnectorError>(Some((kids, queue)))
                })
            },
        )
        .map_ok(|kids| stream::iter(kids.into_iter().map(Ok)))
        .try_flatten()
        // A department reachable twice (should not happen) is yielded once.
        .try_filter(move |d| {
            ready(
                d.get("dept_id")
                    .and_then(Value::as_i64)
                    .is_none_or(|id| seen.insert(id)),
            )
        })
        .boxed()
    }

    /// Direct members of `dept_id`, following `cursor` / `has_more` / `next_cursor`.
    pub fn users_in_department(&self, dept_id: i64) -> RecordStream<'_> {
        let size = self.wire.cfg.page_size;
        stream::try_unfold(Some(0i64), move |cursor| async move {
            let Some(cursor) = cursor else {
                return Ok(None);
            };
            let r = self
                .result(&self.contact_call(
                    USER_LIST,
                    json!({"dept_id": dept_id, "cursor": cursor, "size": size}),
                ))
                .await?;
            let list = array_at(&r, "list");
            let has_more = r.get("has_more").and_then(Value::as_bool).unwrap_or(false);
            let next = r.get("next_cursor").and_then(Value::as_i64);
            let state = match (has_more, next) {
                (true, Some(n)) if n != cursor => Some(n),
                (true, _) => {
                    return Err(ConnectorError::permanent(
                        VENDOR,
                        "user/list: has_more without a new next_cursor",
                    ));
                }
                (false, _) => None,
            };
            Ok(Some((list, state)))
        })
        .map_ok(|l| stream::iter(l.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    /// Every user visible to the app: the members of root and of every department, each once.
    pub fn all_users(&self) -> RecordStream<'_> {
        let depts = self
            .department_children(ROOT_DEPT, true)
            .and_then(move |d| {
                ready(d.get("dept_id").and_then(Value::as_i64).ok_or_else(|| {
                    ConnectorError::permanent(VENDOR, "department record without dept_id")
                }))
            });
        let mut seen = HashSet::new();
        stream::once(ready(Ok::<_, ConnectorError>(ROOT_DEPT)))
            .chain(depts)
            .map_ok(move |id| self.users_in_department(id))
            .try_flatten()
            .try_filter(move |u| {
                ready(
                    u.get("userid")
                        .and_then(Value::as_str)
                        .is_none_or(|id| seen.insert(id.to_string())),
                )
            })
            .boxed()
    }

    async fn get_or_none(
        &self,
        path: &'static str,
        body: Value,
        not_found: &[i64],
    ) -> Result<Option<Value>, ConnectorError> {
        match self.result(&self.contact_call(path, body)).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code().is_some_and(|c| not_found.contains(&c)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn get_department(&self, dept_id: i64) -> Result<Option<Value>, ConnectorError> {
        self.get_or_none(DEPT_GET, json!({"dept_id": dept_id}), DEPT_NOT_FOUND)
            .await
    }

    /// `department/create {name, parent_id, …}` → the new dept_id.
    pub async fn create_department(&self, body: Value) -> Result<i64, ConnectorError> {
        let r = self.create_by(DEPT_CREATE, body).await?;
        r.get("dept_id")
            .and_then(Value::as_i64)
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "department/create without dept_id"))
    }

    /// `department/update {dept_id, …}`.
    pub async fn update_department(
        &self,
        dept_id: i64,
        patch: Value,
    ) -> Result<(), ConnectorError> {
        self.update_by(DEPT_UPDATE, ("dept_id", json!(dept_id)), patch)
            .await
    }

    /// POSTs a new record's `body` (lists as comma strings) to `path`: the reply's `result`.
    async fn create_by(&self, path: &'static str, body: Value) -> Result<Value, ConnectorError> {
        self.result(&self.contact_call(path, comma_lists(body)))
            .await
    }

    /// POSTs `patch` (lists as comma strings) to `path` with the record's id (`(key, id)`).
    async fn update_by(
        &self,
        path: &'static str,
        (key, id): (&str, Value),
        patch: Value,
    ) -> Result<(), ConnectorError> {
        let mut body = match comma_lists(patch) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        body.insert(key.into(), id);
        self.call(&self.contact_call(path, Value::Object(body)))
            .await?;
        Ok(())
    }

    /// `department/delete`; a department already gone counts as deleted (a retry after a lost
    /// reply, or an admin was first).
    pub async fn delete_department(&self, dept_id: i64) -> Result<(), ConnectorError> {
        gone_is_done(
            self.call(&self.contact_call(DEPT_DELETE, json!({"dept_id": dept_id})))
                .await,
            DEPT_NOT_FOUND,
        )
    }

    pub async fn get_user(&self, userid: &str) -> Result<Option<Value>, ConnectorError> {
        self.get_or_none(USER_GET, json!({"userid": userid}), USER_NOT_FOUND)
            .await
    }

    /// `user/create` → `{userid, unionId, unionid}` (`unionid` added for consistency).
    pub async fn create_user(&self, body: Value) -> Result<Value, ConnectorError> {
        Ok(normalize_union_id(self.create_by(USER_CREATE, body).await?))
    }

    /// `user/update {userid, …}`.
    pub async fn update_user(&self, userid: &str, patch: Value) -> Result<(), ConnectorError> {
        self.update_by(USER_UPDATE, ("userid", json!(userid)), patch)
            .await
    }

    /// `user/delete`; a user already gone counts as deleted.
    pub async fn delete_user(&self, userid: &str) -> Result<(), ConnectorError> {
        gone_is_done(
            self.call(&self.contact_call(USER_DELETE, json!({"userid": userid})))
                .await,
            USER_NOT_FOUND,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quirks() {
        assert_eq!(
            comma_lists(json!({"dept_id_list": [2, 3], "name": "x"})),
            json!({"dept_id_list": "2,3", "name": "x"})
        );
        assert_eq!(
            comma_lists(json!({"dept_id_list": "2,3"})),
            json!({"dept_id_list": "2,3"})
        );
        assert_eq!(
            normalize_union_id(json!({"userid": "u", "unionId": "X"}))["unionid"],
            "X"
        );
        assert!(dept_id("12").is_ok());
        assert!(dept_id("od-x").is_err());
    }
}
