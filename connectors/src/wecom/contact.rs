//! Org chart (通讯录): departments (`department/list|simplelist|get|create|update|delete`) and
//! members (`user/list_id` cursor paging + `user/get`, `user/create|update|delete`).
//!
//! Since 2022 WeCom trims fields for most apps (avatar, gender, mobile, email, biz_mail, qr_code,
//! address) and new IPs may only call `user/list_id` + `department/simplelist`: records are raw
//! vendor JSON and a trimmed field is simply absent. [`UserView`] reads the fields the connector
//! itself needs, each optional.

use std::collections::HashSet;
use std::future::ready;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};

use crate::capability::RecordStream;
use crate::error::{ConnectorError, gone_is_done};
use crate::wecom::VENDOR;
use crate::wecom::client::{ApiCall, NOT_FOUND_CODES, WecomClient};
use crate::wecom::config::UserListing;

/// How long a whole-tree department listing is reused by a member listing that follows it.
const TREE_REUSE: std::time::Duration = std::time::Duration::from_secs(60);

/// Member status (`status`): 1 activated, 2 disabled, 4 not activated, 5 left the company.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Disabled,
    NotActivated,
    Left,
    Other(i64),
}

impl UserStatus {
    pub fn from_code(c: i64) -> Self {
        match c {
            1 => Self::Active,
            2 => Self::Disabled,
            4 => Self::NotActivated,
            5 => Self::Left,
            o => Self::Other(o),
        }
    }
}

/// The fields of a `user/get` record the connector reasons about; everything is optional
/// because WeCom trims fields per app and per date.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserView {
    pub userid: String,
    pub name: Option<String>,
    pub departments: Vec<i64>,
    pub main_department: Option<i64>,
    /// Departments this member leads (from `is_leader_in_dept`, parallel to `department`).
    pub leads: Vec<i64>,
    pub direct_leader: Vec<String>,
    pub status: Option<UserStatus>,
    pub mobile: Option<String>,
    pub email: Option<String>,
    /// `"0"`/`"1"`/`"2"` (a string on the wire).
    pub gender: Option<String>,
}

fn int_list(v: Option<&Value>) -> Vec<i64> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(as_int).collect())
        .unwrap_or_default()
}

/// WeCom ids and flags come as numbers, sometimes as numeric strings.
pub(crate) fn as_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

impl UserView {
    pub fn from_value(v: &Value) -> Option<Self> {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let departments = int_list(v.get("department"));
        let flags = int_list(v.get("is_leader_in_dept"));
        let leads = departments
            .iter()
            .zip(flags.iter())
            .filter(|(_, f)| **f == 1)
            .map(|(d, _)| *d)
            .collect();
        Some(Self {
            userid: s("userid")?,
            name: s("name"),
            main_department: v
                .get("main_department")
                .and_then(as_int)
                .or_else(|| departments.first().copied()),
            departments,
            leads,
            direct_leader: v
                .get("direct_leader")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            status: v.get("status").and_then(as_int).map(UserStatus::from_code),
            mobile: s("mobile"),
            email: s("email"),
            gender: v.get("gender").and_then(|g| match g {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
        })
    }
}

fn take(mut v: Value, field: &str) -> Value {
    v.get_mut(field).map(Value::take).unwrap_or(Value::Null)
}

fn array(v: Value, field: &str) -> Vec<Value> {
    match take(v, field) {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

impl WecomClient {
    fn contact_get(&self, path: &str) -> ApiCall {
        ApiCall::get(path, "contact", self.wire.cfg.limits.contact)
    }

    fn contact_post(&self, path: &str, body: Value) -> ApiCall {
        ApiCall::post(path, "contact", self.wire.cfg.limits.contact).json(body)
    }

    /// `department/list[?id=]`: the department and its whole subtree (or everything visible).
    pub async fn list_departments(&self, id: Option<i64>) -> Result<Vec<Value>, ConnectorError> {
        let mut call = self.contact_get("department/list");
        if let Some(id) = id {
            call = call.query("id", id.to_string());
        }
        let all = array(self.call(&call).await?, "department");
        if id.is_none() {
            let ids = all
                .iter()
                .filter_map(|d| d.get("id").and_then(as_int))
                .collect();
            *self.wire.state.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), ids));
        }
        Ok(all)
    }

    /// Every department id: from a whole-tree listing made in the last [`TREE_REUSE`], else
    /// listed now.
    async fn department_ids(&self) -> Result<Vec<i64>, ConnectorError> {
        let recent = self
            .wire
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < TREE_REUSE)
            .map(|(_, ids)| ids.clone());
        match recent {
            Some(ids) => Ok(ids),
            None => Ok(self
                .list_departments(None)
                .await?
                .iter()
                .filter_map(|d| d.get("id").and_then(as_int))
                .collect()),
        }
    }

    /// `department/simplelist[?id=]`: `{id, parentid, order}` of the subtree.
    pub async fn simplelist_departments(
        &self,
        id: Option<i64>,
    ) -> Result<Vec<Value>, ConnectorError> {
        let mut call = self.contact_get("department/simplelist");
        if let Some(id) = id {
            call = call.query("id", id.to_string());
        }
        Ok(array(self.call(&call).await?, "department_id"))
    }

    /// Sub-departments of `parent` (all descendants when `recursive`), or every visible
    /// department (root included) when `parent` is `None`.
    pub fn departments(&self, parent: Option<i64>, recursive: bool) -> RecordStream<'_> {
        stream::once(async move {
            let all = self.list_departments(parent).await?;
            Ok::<_, ConnectorError>(stream::iter(
                all.into_iter()
                    .filter(move |d| match parent {
                        None => true,
                        Some(p) => {
                            let id = d.get("id").and_then(as_int);
                            let pid = d.get("parentid").and_then(as_int);
                            id != Some(p) && (recursive || pid == Some(p))
                        }
                    })
                    .map(Ok),
            ))
        })
        .try_flatten()
        .boxed()
    }

    async fn get_entity(
        &self,
        call: ApiCall,
        field: Option<&str>,
    ) -> Result<Option<Value>, ConnectorError> {
        match self.call(&call).await {
            Ok(v) => Ok(Some(match field {
                Some(f) => take(v, f),
                None => strip_envelope(v),
            })),
            Err(e) if e.code().is_some_and(|c| NOT_FOUND_CODES.contains(&c)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `department/get?id=`.
    pub async fn get_department(&self, id: i64) -> Result<Option<Value>, ConnectorError> {
        self.get_entity(
            self.contact_get("department/get")
                .query("id", id.to_string()),
            Some("department"),
        )
        .await
    }

    /// `department/create` → the new id.
    pub async fn create_department(&self, body: Value) -> Result<i64, ConnectorError> {
        let v = self
            .call(&self.contact_post("department/create", body))
            .await?;
        v.get("id")
            .and_then(as_int)
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "department/create without id"))
    }

    /// `department/update`: fields left out are unchanged; `id` is set from `id`.
    pub async fn update_department(&self, id: i64, body: Value) -> Result<(), ConnectorError> {
        self.update_by("department/update", ("id", json!(id)), body)
            .await
    }

    /// POSTs `body` to `path` with the record's id set (`(key, id)`): an update.
    async fn update_by(
        &self,
        path: &'static str,
        (key, id): (&str, Value),
        mut body: Value,
    ) -> Result<(), ConnectorError> {
        if !body.is_object() {
            return Err(ConnectorError::permanent(VENDOR, "patch must be an object"));
        }
        body[key] = id;
        self.call(&self.contact_post(path, body)).await.map(drop)
    }

    /// `department/delete?id=` (not the root, not with members or sub-departments).
    /// `department/delete`; a department already gone counts as deleted (a retry after a lost
    /// reply, or an admin was first).
    pub async fn delete_department(&self, id: i64) -> Result<(), ConnectorError> {
        gone_is_done(
            self.call(
                &self
                    .contact_get("department/delete")
                    .query("id", id.to_string()),
            )
            .await,
            NOT_FOUND_CODES,
        )
    }

    /// `user/list_id`, cursor by cursor: one `{userid, department}` row per (member, department).
    pub fn user_ids(&self) -> RecordStream<'_> {
        let limit = self.wire.cfg.list_page_size;
        stream::try_unfold(Some(String::new()), move |state| async move {
            let Some(cursor) = state else { return Ok(None) };
            let mut body = json!({ "limit": limit });
            if !cursor.is_empty() {
                body["cursor"] = json!(cursor);
            }
            let v = self.call(&self.contact_post("user/list_id", body)).await?;
            let next = v
                .get("next_cursor")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let rows = array(v, "dept_user");
            let state = if next.is_empty() {
                None
            } else if next == cursor {
                return Err(ConnectorError::permanent(
                    VENDOR,
                    "user/list_id returned the same cursor again",
                ));
            } else {
                Some(next)
            };
            Ok(Some((rows, state)))
        })
        .map_ok(|rows| stream::iter(rows.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    /// `user/get` for each distinct userid of `rows`, `get_concurrency` at a time. Members that
    /// vanished between the listing and the get are skipped.
    fn users_of_rows<'a>(&'a self, rows: RecordStream<'a>) -> RecordStream<'a> {
        let mut seen = HashSet::new();
        rows.try_filter_map(move |row| {
            let id = row
                .get("userid")
                .and_then(Value::as_str)
                .filter(|id| seen.insert(id.to_string()))
                .map(str::to_string);
            ready(Ok(id))
        })
        .map_ok(move |id| async move { self.get_user(&id).await })
        .try_buffered(self.wire.cfg.get_concurrency)
        .try_filter_map(|u| ready(Ok(u)))
        .boxed()
    }

    /// Every member visible to the secret: `user/list_id` then `user/get` per member, or (with
    /// [`UserListing::PerDepartment`]) `user/list` per department, each member once.
    pub fn all_users(&self) -> RecordStream<'_> {
        match self.wire.cfg.user_listing {
            UserListing::ListId => self.users_of_rows(self.user_ids()),
            UserListing::PerDepartment => self.users_by_department(),
        }
    }

    /// `department/list` once, then `user/list?department_id=` for each department
    /// (`get_concurrency` at a time); a member of several departments is yielded once.
    fn users_by_department(&self) -> RecordStream<'_> {
        let mut seen = HashSet::new();
        stream::once(async move {
            let ids = self.department_ids().await?;
            Ok::<_, ConnectorError>(
                stream::iter(ids)
                    .map(move |d| async move { self.list_department_users(d, false).await })
                    .buffered(self.wire.cfg.get_concurrency)
                    .map_ok(|users| stream::iter(users.into_iter().map(Ok)))
                    .try_flatten(),
            )
        })
        .try_flatten()
        .try_filter(move |u| {
            let id = u.get("userid").and_then(Value::as_str).unwrap_or_default();
            ready(seen.insert(id.to_string()))
        })
        .boxed()
    }

    /// The direct members of department `dept`.
    pub fn users_in_department(&self, dept: i64) -> RecordStream<'_> {
        let rows = self
            .user_ids()
            .try_filter(move |r| ready(r.get("department").and_then(as_int) == Some(dept)))
            .boxed();
        self.users_of_rows(rows)
    }

    /// `user/list?department_id=` (detailed) or `user/simplelist`: the members of one
    /// department in a single reply (not available to new IPs of contact-sync since 2022-08).
    pub async fn list_department_users(
        &self,
        dept: i64,
        simple: bool,
    ) -> Result<Vec<Value>, ConnectorError> {
        let path = if simple {
            "user/simplelist"
        } else {
            "user/list"
        };
        let call = self
            .contact_get(path)
            .query("department_id", dept.to_string());
        Ok(array(self.call(&call).await?, "userlist"))
    }

    /// `user/get?userid=`; `None` when there is no such member.
    pub async fn get_user(&self, userid: &str) -> Result<Option<Value>, ConnectorError> {
        self.get_entity(self.contact_get("user/get").query("userid", userid), None)
            .await
    }

    /// `user/create` (userid, name, department and a mobile or email are required) → userid.
    pub async fn create_user(&self, body: Value) -> Result<String, ConnectorError> {
        let id = body
            .get("userid")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "user/create needs a userid"))?;
        self.call(&self.contact_post("user/create", body)).await?;
        Ok(id)
    }

    /// `user/update`; `enable: 0` disables the member.
    pub async fn update_user(&self, userid: &str, body: Value) -> Result<(), ConnectorError> {
        self.update_by("user/update", ("userid", json!(userid)), body)
            .await
    }

    /// `user/delete?userid=`.
    /// `user/delete`; a member already gone counts as deleted.
    pub async fn delete_user(&self, userid: &str) -> Result<(), ConnectorError> {
        gone_is_done(
            self.call(&self.contact_get("user/delete").query("userid", userid))
                .await,
            NOT_FOUND_CODES,
        )
    }
}

/// A flat reply (user/get) without its envelope fields.
pub(crate) fn strip_envelope(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("errcode");
        m.remove("errmsg");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_view_reads_leaders_and_tolerates_trimmed_fields() {
        let v = json!({"userid":"zhangsan","name":"张三","department":[1,2,3],
            "is_leader_in_dept":[0,1,"1"],"main_department":2,"status":1,
            "direct_leader":["lisi"],"gender":"1"});
        let u = UserView::from_value(&v).unwrap();
        assert_eq!(u.leads, vec![2, 3]);
        assert_eq!(u.main_department, Some(2));
        assert_eq!(u.status, Some(UserStatus::Active));
        assert_eq!(u.gender.as_deref(), Some("1"));
        assert_eq!(u.mobile, None);
        // Trimmed record: only userid and department.
        let t = UserView::from_value(&json!({"userid":"x","department":[4]})).unwrap();
        assert_eq!(t.main_department, Some(4));
        assert_eq!(t.status, None);
        assert!(t.leads.is_empty() && t.direct_leader.is_empty());
        assert_eq!(UserStatus::from_code(5), UserStatus::Left);
        assert_eq!(UserStatus::from_code(4), UserStatus::NotActivated);
        assert!(UserView::from_value(&json!({"name":"no id"})).is_none());
    }
}
