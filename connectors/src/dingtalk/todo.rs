//! Todo (待办) v1.0: ids are **unionIds**; list pages with `nextToken`.

use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::capability::RecordStream;
use crate::client::array_at;
use crate::dingtalk::VENDOR;
use crate::dingtalk::client::{ApiCall, DingTalkClient, Gen, seg};
use crate::error::ConnectorError;

const BASE: &str = "/v1.0/todo/users";

/// The path of `union_id`'s task `task_id`, with `rest` after it.
fn task_path(union_id: &str, task_id: &str, rest: &str) -> String {
    format!("{BASE}/{}/tasks/{}{rest}", seg(union_id), seg(task_id))
}

impl DingTalkClient {
    fn todo_call(&self, method: Method, path: String, tier: &'static str) -> ApiCall {
        ApiCall::new(Gen::New, method, path, tier, self.wire.cfg.limits.per_api)
    }

    /// The configured operator unionId.
    pub fn operator(&self) -> Result<&str, ConnectorError> {
        self.wire
            .cfg
            .operator_union_id
            .as_deref()
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "todo calls need operator_union_id"))
    }

    /// Creates a todo owned by `union_id` (body: `subject`, `executorIds`, …); returns the task.
    pub async fn create_task(
        &self,
        union_id: &str,
        operator_id: &str,
        body: Value,
    ) -> Result<Value, ConnectorError> {
        if body
            .get("subject")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ConnectorError::permanent(VENDOR, "todo without subject"));
        }
        let call = self
            .todo_call(
                Method::POST,
                format!("{BASE}/{}/tasks", seg(union_id)),
                "todo.create",
            )
            .query("operatorId", operator_id)
            .json(body);
        self.call(&call).await
    }

    /// One todo, or `None` when DingTalk answers 404.
    pub async fn get_task(
        &self,
        union_id: &str,
        task_id: &str,
    ) -> Result<Option<Value>, ConnectorError> {
        let call = self.todo_call(Method::GET, task_path(union_id, task_id, ""), "todo.get");
        match self.call(&call).await {
            Ok(v) => Ok(Some(v)),
            Err(ConnectorError::Permanent {
                status: Some(404), ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Updates `subject`, `description`, `dueTime`, `done`, `executorIds`, `participantIds`.
    pub async fn update_task(
        &self,
        union_id: &str,
        task_id: &str,
        operator_id: &str,
        patch: Value,
    ) -> Result<(), ConnectorError> {
        let path = task_path(union_id, task_id, "");
        let call = self.todo_call(Method::PUT, path, "todo.update");
        let call = call.query("operatorId", operator_id).json(patch);
        self.call(&call).await?;
        Ok(())
    }

    /// Sets per-executor done flags: `[(executor unionId, isDone)]`.
    pub async fn set_executor_status(
        &self,
        union_id: &str,
        task_id: &str,
        operator_id: &str,
        status: &[(String, bool)],
    ) -> Result<(), ConnectorError> {
        let list: Vec<Value> = status
            .iter()
            .map(|(id, done)| json!({"id": id, "isDone": done}))
            .collect();
        let path = task_path(union_id, task_id, "/executorStatus");
        let call = self
            .todo_call(Method::PUT, path, "todo.executorStatus")
            .query("operatorId", operator_id)
            .json(json!({"executorStatusList": list}));
        self.call(&call).await?;
        Ok(())
    }

    pub async fn delete_task(
        &self,
        union_id: &str,
        task_id: &str,
        operator_id: &str,
    ) -> Result<(), ConnectorError> {
        let path = task_path(union_id, task_id, "");
        let call = self.todo_call(Method::DELETE, path, "todo.delete");
        let call = call.query("operatorId", operator_id);
        self.call(&call).await?;
        Ok(())
    }

    /// The todo cards of `union_id` (`org/tasks/query`), following `nextToken`. `filter` may
    /// carry `isDone`, `roleTypes`, `todoType`.
    pub fn list_tasks(&self, union_id: &str, filter: Value) -> RecordStream<'_> {
        let path = format!("{BASE}/{}/org/tasks/query", seg(union_id));
        stream::try_unfold(Some(None::<String>), move |state| {
            let path = path.clone();
            let filter = filter.clone();
            async move {
                let Some(token) = state else { return Ok(None) };
                let mut body = match filter {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                if let Some(t) = &token {
                    body.insert("nextToken".into(), json!(t));
                }
                let call = self
                    .todo_call(Method::POST, path, "todo.query")
                    .json(Value::Object(body));
                let r = self.call(&call).await?;
                let cards = array_at(&r, "todoCards");
                let next = r
                    .get("nextToken")
                    .and_then(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .or_else(|| v.as_i64().map(|n| n.to_string()))
                    })
                    .filter(|s| !s.is_empty());
                let state = match next {
                    Some(n) if Some(&n) == token.as_ref() => {
                        return Err(ConnectorError::permanent(
                            VENDOR,
                            "todo query: nextToken did not advance",
                        ));
                    }
                    Some(n) => Some(Some(n)),
                    None => None,
                };
                Ok(Some((cards, state)))
            }
        })
        .map_ok(|c| stream::iter(c.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }
}
