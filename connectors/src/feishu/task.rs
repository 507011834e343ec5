//! Task API v2: create (idempotent with `client_token`), get, patch (with `update_fields`),
//! delete, list.

use reqwest::Method;
use serde_json::{Value, json};

use crate::capability::RecordStream;
use crate::client::found_part;
use crate::error::ConnectorError;
use crate::feishu::VENDOR;
use crate::feishu::client::{ApiCall, FeishuClient, seg};

const BASE: &str = "/open-apis/task/v2";

impl FeishuClient {
    fn task_call(&self, method: Method, path: String) -> ApiCall {
        ApiCall::new(method, path, "task", self.wire.cfg.limits.task)
            .query("user_id_type", self.wire.cfg.user_id_type.clone())
    }

    /// `POST /tasks`; `client_token` (10–100 chars) makes a retried create idempotent.
    pub async fn create_task(
        &self,
        mut task: Value,
        client_token: Option<&str>,
    ) -> Result<Value, ConnectorError> {
        if let Some(t) = client_token {
            if !(10..=100).contains(&t.len()) {
                return Err(ConnectorError::permanent(
                    VENDOR,
                    "task client_token must be 10..100 characters",
                ));
            }
            task["client_token"] = json!(t);
        }
        let mut d = self
            .data(
                &self
                    .task_call(Method::POST, format!("{BASE}/tasks"))
                    .json(task),
            )
            .await?;
        Ok(d.get_mut("task").map(Value::take).unwrap_or(Value::Null))
    }

    pub async fn get_task(&self, guid: &str) -> Result<Option<Value>, ConnectorError> {
        let call = self.task_call(Method::GET, format!("{BASE}/tasks/{}", seg(guid)));
        found_part(self.data(&call).await, "task", &[1470404])
    }

    /// `PATCH /tasks/:guid` changing only `update_fields` (defaults to the keys of `task`).
    pub async fn patch_task(
        &self,
        guid: &str,
        task: Value,
        update_fields: Option<Vec<String>>,
    ) -> Result<Value, ConnectorError> {
        let fields = update_fields.unwrap_or_else(|| {
            task.as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        });
        let body = json!({"task": task, "update_fields": fields});
        let mut d = self
            .data(
                &self
                    .task_call(Method::PATCH, format!("{BASE}/tasks/{}", seg(guid)))
                    .json(body),
            )
            .await?;
        Ok(d.get_mut("task").map(Value::take).unwrap_or(Value::Null))
    }

    pub async fn delete_task(&self, guid: &str) -> Result<(), ConnectorError> {
        self.data(&self.task_call(Method::DELETE, format!("{BASE}/tasks/{}", seg(guid))))
            .await?;
        Ok(())
    }

    /// `GET /tasks` (documented for user tokens; the sandbox also serves it to tenant tokens).
    pub fn list_tasks(&self) -> RecordStream<'_> {
        self.paginate(self.task_call(Method::GET, format!("{BASE}/tasks")))
    }
}
