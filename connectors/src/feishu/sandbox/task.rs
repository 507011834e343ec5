//! Task v2 in the sandbox: create (client_token idempotency), get, patch with update_fields,
//! delete, list.

use crate::sandbox::prelude::*;
use std::collections::BTreeMap;

use axum::extract::Path;

use super::{App, AppState, fs_err, json_body, now_ms, ok, page};

type Q = Query<HashMap<String, String>>;
type R = Result<Response, Response>;

#[derive(Default)]
pub(crate) struct TaskState {
    /// guid -> task, in creation order by seq
    tasks: BTreeMap<u64, Value>,
    by_guid: HashMap<String, u64>,
    client_tokens: HashMap<String, String>,
    seq: u64,
}

const WRITABLE: &[&str] = &[
    "summary",
    "description",
    "due",
    "start",
    "completed_at",
    "members",
    "reminders",
    "repeat_rule",
    "extra",
    "tasklists",
    "mode",
    "is_milestone",
];

pub(super) fn routes() -> Router<std::sync::Arc<App>> {
    Router::new()
        .route("/open-apis/task/v2/tasks", get(list).post(create))
        .route(
            "/open-apis/task/v2/tasks/{guid}",
            get(get_task).patch(patch).delete(delete),
        )
}

fn not_found() -> Response {
    fs_err(StatusCode::NOT_FOUND, 1470404, "task not found")
}

fn bad(msg: &str) -> Response {
    fs_err(StatusCode::BAD_REQUEST, 1470400, msg)
}

fn check_fields(t: &serde_json::Map<String, Value>) -> Result<(), Response> {
    if let Some(s) = t.get("summary") {
        let s = s.as_str().ok_or_else(|| bad("summary must be a string"))?;
        if s.is_empty() || s.chars().count() > 3000 {
            return Err(bad("summary must be 1..3000 characters"));
        }
    }
    if t.get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| d.chars().count() > 3000)
    {
        return Err(bad("description longer than 3000 characters"));
    }
    if t.get("members")
        .and_then(Value::as_array)
        .is_some_and(|m| m.len() > 50)
    {
        return Err(bad("at most 50 members per request"));
    }
    Ok(())
}

fn status_of(t: &mut Value) {
    let done = t["completed_at"]
        .as_str()
        .is_some_and(|c| c != "0" && !c.is_empty());
    t["status"] = json!(if done { "done" } else { "todo" });
}

async fn create(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    if b.get("summary").is_none() {
        return Err(bad("summary is required"));
    }
    check_fields(&b)?;
    let mut st = lock(&app.tasks);
    let ct = b
        .get("client_token")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(ct) = &ct {
        if !(10..=100).contains(&ct.len()) {
            return Err(bad("client_token must be 10..100 characters"));
        }
        if let Some(g) = st.client_tokens.get(ct)
            && let Some(seq) = st.by_guid.get(g)
        {
            return Ok(ok(json!({"task": st.tasks[seq]})));
        }
    }
    st.seq += 1;
    let seq = st.seq;
    let guid = uuid::Uuid::new_v4().to_string();
    let now = now_ms().to_string();
    let mut t = json!({
        "guid": guid, "task_id": format!("t{}", 100000 + seq), "summary": "", "description": "",
        "completed_at": "0", "members": [], "reminders": [], "tasklists": [], "extra": "",
        "creator": {"id": app.opts.app_id, "type": "app"}, "created_at": now, "updated_at": now,
        "url": format!("https://applink.feishu.cn/client/todo/detail?guid={guid}"), "source": 6,
        "mode": 2, "is_milestone": false,
    });
    for k in WRITABLE {
        if let Some(v) = b.get(*k) {
            t[*k] = v.clone();
        }
    }
    status_of(&mut t);
    st.tasks.insert(seq, t.clone());
    st.by_guid.insert(guid.clone(), seq);
    if let Some(ct) = ct {
        st.client_tokens.insert(ct, guid);
    }
    Ok(ok(json!({ "task": t })))
}

async fn get_task(State(app): AppState, Path(guid): Path<String>) -> R {
    let st = lock(&app.tasks);
    let seq = st.by_guid.get(&guid).ok_or_else(not_found)?;
    Ok(ok(json!({"task": st.tasks[seq]})))
}

async fn patch(State(app): AppState, Path(guid): Path<String>, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let task = b
        .get("task")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("task is required"))?;
    let fields: Vec<String> = str_list(b.get("update_fields"));
    if fields.is_empty() {
        return Err(bad("update_fields is required"));
    }
    if let Some(f) = fields.iter().find(|f| !WRITABLE.contains(&f.as_str())) {
        return Err(bad(&format!("field {f} cannot be updated")));
    }
    check_fields(task)?;
    let mut st = lock(&app.tasks);
    let seq = *st.by_guid.get(&guid).ok_or_else(not_found)?;
    let t = st.tasks.get_mut(&seq).ok_or_else(not_found)?;
    for f in &fields {
        t[f.as_str()] = task.get(f).cloned().unwrap_or(Value::Null);
    }
    t["updated_at"] = json!(now_ms().to_string());
    status_of(t);
    Ok(ok(json!({"task": t})))
}

async fn delete(State(app): AppState, Path(guid): Path<String>) -> R {
    let mut st = lock(&app.tasks);
    let seq = st.by_guid.remove(&guid).ok_or_else(not_found)?;
    st.tasks.remove(&seq);
    Ok(ok(json!({})))
}

async fn list(State(app): AppState, Query(q): Q) -> R {
    let st = lock(&app.tasks);
    let completed = q.get("completed").map(|v| v.eq_ignore_ascii_case("true"));
    let items: Vec<Value> = st
        .tasks
        .values()
        .filter(|t| completed.is_none_or(|c| (t["status"] == "done") == c))
        .cloned()
        .collect();
    Ok(ok(page(items, &q, 50, 100, 1470400, 1470400)?))
}
