//! Todo (待办) v1.0 endpoints; ids are unionIds.

use crate::sandbox::prelude::*;
use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::Path;

use axum::routing::put;

use super::{App, AppState, new_body, new_err, now_ms};

/// Cards per page of the query endpoints.
const PAGE: usize = 10;

#[derive(Default)]
pub(crate) struct TodoState {
    seq: u64,
    /// task id -> (owner unionId, task)
    tasks: BTreeMap<String, (String, Map<String, Value>)>,
}

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1.0/todo/users/{union_id}/tasks", post(create))
        .route(
            "/v1.0/todo/users/{union_id}/tasks/{task_id}",
            put(update).get(get_task).delete(delete),
        )
        .route(
            "/v1.0/todo/users/{union_id}/tasks/{task_id}/executorStatus",
            put(executor_status),
        )
        .route(
            "/v1.0/todo/users/{union_id}/org/tasks/query",
            post(query_org),
        )
        .route("/v1.0/todo/users/{union_id}/tasks/list", post(query_list))
}

/// What a create takes from the body as it is (besides `subject` and the people).
const CREATE_FIELDS: &[&str] = &[
    "description",
    "dueTime",
    "sourceId",
    "detailUrl",
    "priority",
    "isOnlyShowExecutor",
    "todoType",
    "contentFieldList",
    "notifyConfigs",
];
/// What an update may change.
const UPDATE_FIELDS: &[&str] = &[
    "subject",
    "description",
    "dueTime",
    "done",
    "executorIds",
    "participantIds",
    "priority",
];

/// Copies the `fields` the body `m` has into the task `t`.
fn copy_fields(t: &mut Map<String, Value>, m: &Map<String, Value>, fields: &[&str]) {
    for k in fields {
        if let Some(v) = m.get(*k) {
            t.insert((*k).into(), v.clone());
        }
    }
}

fn bad(code: &str, msg: &str) -> Response {
    new_err(StatusCode::BAD_REQUEST, code, msg)
}

fn not_found() -> Response {
    new_err(StatusCode::NOT_FOUND, "todo.taskNotExist", "待办不存在")
}

fn known_union(app: &App, u: &str) -> bool {
    lock(&app.org).user_by_unionid(u).is_some()
}

fn str_list(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

async fn create(
    State(app): AppState,
    Path(union_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    b: Bytes,
) -> Response {
    let m = or_reply!(new_body(&b));
    if !known_union(&app, &union_id) {
        return bad("todo.taskCreate.paramError", "unionId is invalid");
    }
    let subject = m.get("subject").and_then(Value::as_str).unwrap_or("");
    if subject.is_empty() {
        return bad("todo.taskCreate.paramError", "subject is empty");
    }
    if subject.chars().count() > 1024 {
        return bad("todo.taskCreate.paramError", "subject is oversize");
    }
    if m.get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| d.chars().count() > 4096)
    {
        return bad("todo.taskCreate.paramError", "description is oversize");
    }
    if m.get("dueTime")
        .is_some_and(|d| !d.is_i64() && !d.is_null())
    {
        return bad("todo.taskCreate.paramError", "dueTime is invalid");
    }
    for k in ["executorIds", "participantIds"] {
        if let Some(ids) = str_list(m.get(k))
            && let Some(badid) = ids.iter().find(|u| !known_union(&app, u))
        {
            return bad(
                "todo.taskCreate.paramError",
                &format!("{k} contains an unknown unionId {badid}"),
            );
        }
    }
    let source_id = m
        .get("sourceId")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut st = lock(&app.todos);
    if let Some(s) = &source_id
        && st
            .tasks
            .values()
            .any(|(o, t)| o == &union_id && t.get("sourceId").and_then(Value::as_str) == Some(s))
    {
        return bad("todo.taskCreate.paramError", "task exist");
    }
    st.seq += 1;
    let id = format!("task{:016x}", st.seq);
    let now = now_ms();
    let operator = q
        .get("operatorId")
        .cloned()
        .unwrap_or_else(|| union_id.clone());
    let mut t = Map::new();
    t.insert("id".into(), json!(id));
    t.insert("subject".into(), json!(subject));
    copy_fields(&mut t, &m, CREATE_FIELDS);
    t.insert(
        "executorIds".into(),
        json!(str_list(m.get("executorIds")).unwrap_or_default()),
    );
    t.insert(
        "participantIds".into(),
        json!(str_list(m.get("participantIds")).unwrap_or_default()),
    );
    t.insert("startTime".into(), json!(now));
    t.insert("createdTime".into(), json!(now));
    t.insert("modifiedTime".into(), json!(now));
    t.insert("done".into(), json!(false));
    t.insert(
        "creatorId".into(),
        json!(
            m.get("creatorId")
                .and_then(Value::as_str)
                .unwrap_or(&operator)
        ),
    );
    t.insert("modifierId".into(), json!(operator));
    t.insert("bizTag".into(), json!("sandbox"));
    t.insert("source".into(), json!("sandbox"));
    t.insert("executorStatus".into(), json!({}));
    st.tasks.insert(id.clone(), (union_id.clone(), t.clone()));
    drop(st);
    let mut reply = t;
    reply.insert("requestId".into(), json!(super::request_id()));
    Json(Value::Object(reply)).into_response()
}

fn lookup(app: &App, union_id: &str, task_id: &str) -> Option<Map<String, Value>> {
    let st = lock(&app.todos);
    let (owner, t) = st.tasks.get(task_id)?;
    let visible = owner == union_id
        || ["executorIds", "participantIds"].iter().any(|k| {
            t.get(*k)
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(union_id)))
        });
    visible.then(|| t.clone())
}

async fn get_task(
    State(app): AppState,
    Path((union_id, task_id)): Path<(String, String)>,
) -> Response {
    match lookup(&app, &union_id, &task_id) {
        Some(mut t) => {
            t.insert("requestId".into(), json!(super::request_id()));
            Json(Value::Object(t)).into_response()
        }
        None => not_found(),
    }
}

async fn update(
    State(app): AppState,
    Path((union_id, task_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    b: Bytes,
) -> Response {
    let m = or_reply!(new_body(&b));
    if lookup(&app, &union_id, &task_id).is_none() {
        return not_found();
    }
    for k in ["executorIds", "participantIds"] {
        if let Some(ids) = str_list(m.get(k))
            && ids.iter().any(|u| !known_union(&app, u))
        {
            return bad(
                "todo.taskUpdate.paramError",
                &format!("{k} contains an unknown unionId"),
            );
        }
    }
    let mut st = lock(&app.todos);
    let Some((_, t)) = st.tasks.get_mut(&task_id) else {
        return not_found();
    };
    copy_fields(t, &m, UPDATE_FIELDS);
    if m.get("done").and_then(Value::as_bool) == Some(true) {
        t.insert("finishTime".into(), json!(now_ms()));
    }
    t.insert("modifiedTime".into(), json!(now_ms()));
    if let Some(op) = q.get("operatorId") {
        t.insert("modifierId".into(), json!(op));
    }
    Json(json!({"result": true, "requestId": super::request_id()})).into_response()
}

async fn executor_status(
    State(app): AppState,
    Path((union_id, task_id)): Path<(String, String)>,
    b: Bytes,
) -> Response {
    let m = or_reply!(new_body(&b));
    if lookup(&app, &union_id, &task_id).is_none() {
        return not_found();
    }
    let Some(list) = m.get("executorStatusList").and_then(Value::as_array) else {
        return bad("invalidParameter", "executorStatusList is required");
    };
    let mut st = lock(&app.todos);
    let Some((_, t)) = st.tasks.get_mut(&task_id) else {
        return not_found();
    };
    let executors: Vec<String> = str_list(t.get("executorIds")).unwrap_or_default();
    let mut status = t
        .get("executorStatus")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for e in list {
        let (Some(id), Some(done)) = (
            e.get("id").and_then(Value::as_str),
            e.get("isDone").and_then(Value::as_bool),
        ) else {
            return bad(
                "invalidParameter",
                "executorStatusList item needs id and isDone",
            );
        };
        if !executors.iter().any(|x| x == id) {
            return bad("invalidParameter", "id is not an executor of the task");
        }
        status.insert(id.to_string(), json!(done));
    }
    let all_done = !executors.is_empty()
        && executors
            .iter()
            .all(|x| status.get(x) == Some(&json!(true)));
    t.insert("executorStatus".into(), Value::Object(status));
    if all_done {
        t.insert("done".into(), json!(true));
        t.insert("finishTime".into(), json!(now_ms()));
    }
    t.insert("modifiedTime".into(), json!(now_ms()));
    Json(json!({"result": true, "requestId": super::request_id()})).into_response()
}

async fn delete(
    State(app): AppState,
    Path((union_id, task_id)): Path<(String, String)>,
) -> Response {
    let mut st = lock(&app.todos);
    match st.tasks.get(&task_id) {
        Some((owner, _)) if *owner == union_id => {
            st.tasks.remove(&task_id);
            Json(json!({"result": true, "requestId": super::request_id()})).into_response()
        }
        _ => not_found(),
    }
}

/// Cards of `union_id` matching the filter, paged by `nextToken` (an offset).
fn query(app: &App, union_id: &str, m: &Map<String, Value>, with_total: bool) -> Response {
    let is_done = m.get("isDone").and_then(Value::as_bool);
    // roleTypes: outer list = OR, inner = AND; default: executor or creator.
    let roles: Vec<Vec<String>> = m
        .get("roleTypes")
        .and_then(Value::as_array)
        .map(|o| {
            o.iter()
                .map(|i| str_list(Some(i)).unwrap_or_default())
                .collect()
        })
        .unwrap_or_else(|| vec![vec!["executor".into()], vec!["creator".into()]]);
    let start = match m.get("nextToken") {
        None | Some(Value::Null) => 0,
        Some(v) => match v
            .as_str()
            .and_then(|s| s.parse::<usize>().ok())
            .or_else(|| v.as_u64().map(|n| n as usize))
        {
            Some(n) => n,
            None => return bad("invalidParameter.nextToken", "nextToken is invalid"),
        },
    };
    let st = lock(&app.todos);
    let has_role = |owner: &str, t: &Map<String, Value>, role: &str| -> bool {
        let in_list = |k: &str| {
            t.get(k)
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(union_id)))
        };
        match role {
            "executor" => in_list("executorIds"),
            "participant" => in_list("participantIds"),
            "creator" => {
                t.get("creatorId").and_then(Value::as_str) == Some(union_id) || owner == union_id
            }
            _ => false,
        }
    };
    let cards: Vec<Value> = st
        .tasks
        .values()
        .filter(|(owner, t)| {
            roles
                .iter()
                .any(|and| !and.is_empty() && and.iter().all(|r| has_role(owner, t, r)))
        })
        .filter(|(_, t)| is_done.is_none_or(|d| t.get("done").and_then(Value::as_bool) == Some(d)))
        .map(|(_, t)| {
            json!({
                "taskId": t.get("id"), "subject": t.get("subject"), "dueTime": t.get("dueTime"),
                "priority": t.get("priority"), "isDone": t.get("done"), "creatorId": t.get("creatorId"),
                "sourceId": t.get("sourceId"), "detailUrl": t.get("detailUrl"),
                "createdTime": t.get("createdTime"), "modifiedTime": t.get("modifiedTime"),
                "bizTag": t.get("bizTag"),
            })
        })
        .collect();
    let total = cards.len();
    let start = start.min(total);
    let end = (start + PAGE).min(total);
    let mut out = json!({"todoCards": cards[start..end].to_vec()});
    if end < total {
        out["nextToken"] = json!(end.to_string());
    }
    if with_total {
        out["totalCount"] = json!(total);
    }
    Json(out).into_response()
}

async fn query_org(State(app): AppState, Path(union_id): Path<String>, b: Bytes) -> Response {
    match new_body(&b) {
        Ok(m) => query(&app, &union_id, &m, false),
        Err(r) => r,
    }
}

async fn query_list(State(app): AppState, Path(union_id): Path<String>, b: Bytes) -> Response {
    match new_body(&b) {
        Ok(m) => query(&app, &union_id, &m, true),
        Err(r) => r,
    }
}
