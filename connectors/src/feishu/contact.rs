//! Contact (org chart) API v3: departments and users, with Feishu's page_token pagination.

use std::collections::HashSet;
use std::future::ready;

use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::Method;
use serde_json::{Value, json};

use crate::capability::RecordStream;
use crate::client::{array_at, found_part};
use crate::error::{ConnectorError, gone_is_done};
use crate::feishu::VENDOR;
use crate::feishu::client::{ApiCall, FeishuClient, seg};

const BASE: &str = "/open-apis/contact/v3";
/// Codes meaning "no such department / user" on a get.
use crate::feishu::client::NOT_FOUND_CODES;

impl FeishuClient {
    fn contact_call(&self, method: Method, path: String) -> ApiCall {
        ApiCall::new(method, path, "contact", self.wire.cfg.limits.contact)
            .query("user_id_type", self.wire.cfg.user_id_type.clone())
            .query(
                "department_id_type",
                self.wire.cfg.department_id_type.clone(),
            )
    }

    /// Follows `page_token` / `has_more` until the end, yielding each item of `data.items`.
    pub fn paginate(&self, call: ApiCall) -> RecordStream<'_> {
        let page_size = self.wire.cfg.page_size;
        stream::try_unfold(Some(None::<String>), move |state| {
            let call = call.clone();
            async move {
                let Some(token) = state else { return Ok(None) };
                let mut c = call.query("page_size", page_size.to_string());
                if let Some(t) = &token {
                    c = c.query("page_token", t.clone());
                }
                let data = self.data(&c).await?;
                let items = array_at(&data, "items");
                let has_more = data
                    .get("has_more")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let next = data
                    .get("page_token")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                let state = match (has_more, next) {
                    (true, Some(t)) if Some(t) != token.as_deref() => Some(Some(t.to_string())),
                    (true, _) => {
                        return Err(ConnectorError::permanent(
                            VENDOR,
                            format!("{}: has_more without a new page_token", c.path),
                        ));
                    }
                    (false, _) => None,
                };
                Ok(Some((items, state)))
            }
        })
        .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    /// Sub-departments of `department_id` ("0" = root); all descendants when `fetch_child`.
    pub fn department_children(&self, department_id: &str, fetch_child: bool) -> RecordStream<'_> {
        let call = self
            .contact_call(
                Method::GET,
                format!("{BASE}/departments/{}/children", seg(department_id)),
            )
            .query("fetch_child", fetch_child.to_string());
        self.paginate(call)
    }

    /// Direct members of a department.
    pub fn users_in_department(&self, department_id: &str) -> RecordStream<'_> {
        let call = self
            .contact_call(Method::GET, format!("{BASE}/users/find_by_department"))
            .query("department_id", department_id.to_string());
        self.paginate(call)
    }

    /// The id of a department record in the configured id type.
    pub fn department_id_of(&self, dept: &Value) -> Option<String> {
        dept.get(self.wire.cfg.department_id_type.as_str())
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// The id of a user record in the configured id type.
    pub fn user_id_of(&self, user: &Value) -> Option<String> {
        user.get(self.wire.cfg.user_id_type.as_str())
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Every user of the tenant visible to the app: the members of the root and of every
    /// department, each user once.
    pub fn all_users(&self) -> RecordStream<'_> {
        let depts = self.department_children("0", true).and_then(move |d| {
            ready(self.department_id_of(&d).ok_or_else(|| {
                ConnectorError::permanent(VENDOR, "department record without its id")
            }))
        });
        let mut seen = HashSet::new();
        stream::once(ready(Ok::<_, ConnectorError>("0".to_string())))
            .chain(depts)
            .map_ok(move |id| self.users_in_department(&id))
            .try_flatten()
            .try_filter(move |u| ready(self.user_id_of(u).is_none_or(|id| seen.insert(id))))
            .boxed()
    }

    async fn get_entity(&self, path: String, field: &str) -> Result<Option<Value>, ConnectorError> {
        let reply = self.data(&self.contact_call(Method::GET, path)).await;
        found_part(reply, field, NOT_FOUND_CODES)
    }

    pub async fn get_department(&self, id: &str) -> Result<Option<Value>, ConnectorError> {
        self.get_entity(format!("{BASE}/departments/{}", seg(id)), "department")
            .await
    }

    pub async fn get_user(&self, id: &str) -> Result<Option<Value>, ConnectorError> {
        self.get_entity(format!("{BASE}/users/{}", seg(id)), "user")
            .await
    }

    /// A write to the `field` records (`department` → `/departments`, `user` → `/users`), to the
    /// record `id` where given; the written record under `field` in the reply.
    async fn write_entity(
        &self,
        method: Method,
        field: &str,
        id: Option<&str>,
        body: Option<Value>,
        client_token: Option<&str>,
    ) -> Result<Value, ConnectorError> {
        let path = match id {
            Some(id) => format!("{BASE}/{field}s/{}", seg(id)),
            None => format!("{BASE}/{field}s"),
        };
        let mut call = self.contact_call(method, path);
        if let Some(t) = client_token {
            call = call.query("client_token", t.to_string());
        }
        if let Some(b) = body {
            call = call.json(b);
        }
        let mut d = self.data(&call).await?;
        Ok(d.get_mut(field).map(Value::take).unwrap_or(Value::Null))
    }

    /// `POST /departments`; `client_token` makes a retried create idempotent.
    pub async fn create_department(
        &self,
        body: Value,
        client_token: Option<&str>,
    ) -> Result<Value, ConnectorError> {
        self.write_entity(Method::POST, "department", None, Some(body), client_token)
            .await
    }

    pub async fn patch_department(&self, id: &str, body: Value) -> Result<Value, ConnectorError> {
        self.write_entity(Method::PATCH, "department", Some(id), Some(body), None)
            .await
    }

    /// `DELETE /departments/:id`; a department already gone counts as deleted (a retry after a
    /// lost reply, or an admin was first).
    pub async fn delete_department(&self, id: &str) -> Result<(), ConnectorError> {
        gone_is_done(
            self.write_entity(Method::DELETE, "department", Some(id), None, None)
                .await,
            NOT_FOUND_CODES,
        )
    }

    /// `POST /users`. Feishu requires `employee_type` on create; a body without one gets
    /// `1` (regular employee), the console's default — an update never sets it.
    pub async fn create_user(
        &self,
        mut body: Value,
        client_token: Option<&str>,
    ) -> Result<Value, ConnectorError> {
        if let Some(o) = body.as_object_mut() {
            o.entry("employee_type").or_insert(Value::from(1));
        }
        self.write_entity(Method::POST, "user", None, Some(body), client_token)
            .await
    }

    pub async fn patch_user(&self, id: &str, body: Value) -> Result<Value, ConnectorError> {
        self.write_entity(Method::PATCH, "user", Some(id), Some(body), None)
            .await
    }

    /// `DELETE /users/:id`; `handover` is the optional body of acceptor ids. A user already
    /// gone counts as deleted.
    pub async fn delete_user(
        &self,
        id: &str,
        handover: Option<Value>,
    ) -> Result<(), ConnectorError> {
        gone_is_done(
            self.write_entity(
                Method::DELETE,
                "user",
                Some(id),
                Some(handover.unwrap_or_else(|| json!({}))),
                None,
            )
            .await,
            NOT_FOUND_CODES,
        )
    }
}
