//! Messaging endpoints: work notifications and media (old), app robots (v1.0), and the
//! custom-robot webhook (`/robot/send?access_token=…[&timestamp&sign]`).

use crate::sandbox::prelude::*;
use std::collections::{HashSet, VecDeque};

use axum::body::Bytes;
use axum::extract::Multipart;

use super::org::{int, list};
use super::{App, AppState, new_body, new_err, now_ms, old_body, old_err, old_ok};
use crate::dingtalk::message::{ASYNCSEND_V2, GET_SEND_RESULT, MEDIA_UPLOAD};
use crate::dingtalk::robot::{GROUP_SEND, OTO_BATCH_SEND, webhook_sign};

const MSG_TYPES: &[&str] = &[
    "text",
    "image",
    "voice",
    "file",
    "link",
    "oa",
    "markdown",
    "action_card",
];
const ROBOT_MSG_KEYS: &[&str] = &[
    "sampleText",
    "sampleMarkdown",
    "sampleImageMsg",
    "sampleLink",
    "sampleActionCard",
    "sampleActionCard2",
    "sampleActionCard3",
    "sampleActionCard4",
    "sampleActionCard5",
    "sampleActionCard6",
    "sampleAudio",
    "sampleFile",
    "sampleVideo",
];
const WEBHOOK_TYPES: &[&str] = &[
    "text",
    "link",
    "markdown",
    "actionCard",
    "feedCard",
    "empty",
];

#[derive(Default)]
pub(crate) struct MsgState {
    next_task: i64,
    /// task_id -> recipients (userids)
    tasks: HashMap<i64, Vec<String>>,
    media: HashMap<String, (String, usize)>,
    /// custom robot token -> send times in the last minute
    robot_sends: HashMap<String, VecDeque<Instant>>,
}

pub(super) fn old_routes() -> Router<Arc<App>> {
    Router::new()
        .route(ASYNCSEND_V2, post(asyncsend))
        .route(GET_SEND_RESULT, post(send_result))
        .route(MEDIA_UPLOAD, post(media_upload))
}

pub(super) fn new_routes() -> Router<Arc<App>> {
    Router::new()
        .route(GROUP_SEND, post(group_send))
        .route(OTO_BATCH_SEND, post(oto_send))
}

/// Routes without the access-token gate.
pub(super) fn open_routes() -> Router<Arc<App>> {
    Router::new().route("/robot/send", post(webhook_send))
}

async fn asyncsend(State(app): AppState, h: HeaderMap, b: Bytes) -> Response {
    let m = or_reply!(old_body(&h, &b));
    if int(m.get("agent_id")) != Some(app.opts.agent_id) {
        return old_err(400002, "不合法的agent_id");
    }
    let msg = match m.get("msg") {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => return old_err(40035, "不合法的参数: msg"),
        },
        _ => return old_err(40035, "缺少参数 msg"),
    };
    let msgtype = msg.get("msgtype").and_then(Value::as_str).unwrap_or("");
    if !MSG_TYPES.contains(&msgtype) {
        return old_err(40035, "不合法的参数: msgtype");
    }
    if msg.to_string().len() > 2048 {
        return old_err(40035, "消息内容超过长度限制");
    }
    let to_all = m
        .get("to_all_user")
        .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
    let users = list(m.get("userid_list")).unwrap_or_default();
    let depts = list(m.get("dept_id_list")).unwrap_or_default();
    if users.len() > 100 || depts.len() > 20 {
        return old_err(40035, "接收者超过限制");
    }
    if !to_all && users.is_empty() && depts.is_empty() {
        return old_err(40035, "userid_list, dept_id_list, to_all_user 不能同时为空");
    }
    let recipients: Vec<String> = {
        let org = lock(&app.org);
        let mut set: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        if to_all {
            set.extend(org.users().keys().cloned());
        } else {
            for u in &users {
                if org.users().contains_key(u) && seen.insert(u.clone()) {
                    set.push(u.clone());
                }
            }
            // dept_id_list includes sub-departments
            let mut stack: Vec<String> = depts
                .iter()
                .filter_map(|d| d.parse().ok().and_then(|id| org.dept_key(id)))
                .collect();
            while let Some(k) = stack.pop() {
                for u in org.members(&k) {
                    if seen.insert(u.clone()) {
                        set.push(u);
                    }
                }
                stack.extend(org.children(&k));
            }
        }
        set
    };
    let task_id = {
        let mut s = lock(&app.msg);
        s.next_task += 1;
        let id = 256_271_667_000 + s.next_task;
        s.tasks.insert(id, recipients.clone());
        id
    };
    app.core.record_message(json!({
        "via": "work_notification", "task_id": task_id, "agent_id": app.opts.agent_id,
        "msgtype": msgtype, "msg": msg, "recipients": recipients, "sent_at_ms": now_ms(),
    }));
    old_ok(json!({"task_id": task_id}))
}

async fn send_result(State(app): AppState, h: HeaderMap, b: Bytes) -> Response {
    let m = or_reply!(old_body(&h, &b));
    let Some(task) = int(m.get("task_id")) else {
        return old_err(40035, "缺少参数 task_id");
    };
    let Some(r) = lock(&app.msg).tasks.get(&task).cloned() else {
        return old_err(40035, "不合法的task_id");
    };
    old_ok(json!({"send_result": {
        "invalid_user_id_list": [], "forbidden_user_id_list": [], "failed_user_id_list": [],
        "read_user_id_list": [], "unread_user_id_list": r, "forbidden_list": [],
    }}))
}

async fn media_upload(
    State(app): AppState,
    Query(q): Query<HashMap<String, String>>,
    mp: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let Ok(mut mp) = mp else {
        return old_err(40035, "不合法的参数: multipart expected");
    };
    let mut kind = q.get("type").cloned();
    let mut file: Option<(String, usize)> = None;
    loop {
        match mp.next_field().await {
            Ok(Some(f)) => {
                let name = f.name().unwrap_or_default().to_string();
                let fname = f.file_name().unwrap_or_default().to_string();
                let Ok(data) = f.bytes().await else {
                    return old_err(40035, "不合法的参数: multipart");
                };
                match name.as_str() {
                    "type" => kind = Some(String::from_utf8_lossy(&data).to_string()),
                    "media" => file = Some((fname, data.len())),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => return old_err(40035, "不合法的参数: multipart"),
        }
    }
    let kind = kind.unwrap_or_default();
    if !["image", "voice", "video", "file"].contains(&kind.as_str()) {
        return old_err(40004, "不合法的媒体文件类型");
    }
    let Some((_, size)) = file else {
        return old_err(40035, "缺少参数 media");
    };
    let max = if kind == "voice" { 2 << 20 } else { 20 << 20 };
    if size == 0 || size > max {
        return old_err(40006, "不合法的文件大小");
    }
    let id = format!("@lAD{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
    lock(&app.msg)
        .media
        .insert(id.clone(), (kind.clone(), size));
    old_ok(json!({"type": kind, "media_id": id, "created_at": now_ms()}))
}

fn bad(code: &str, msg: &str) -> Response {
    new_err(StatusCode::BAD_REQUEST, code, msg)
}

/// Checks robotCode, msgKey and msgParam (a JSON string); returns the parsed param.
fn robot_common(app: &App, m: &Map<String, Value>) -> Result<(String, Value), Response> {
    let code = m.get("robotCode").and_then(Value::as_str).unwrap_or("");
    if code != app.opts.app_key {
        return Err(bad(
            "invalidParameter.robotCode.notExsit",
            "robotCode不存在",
        ));
    }
    let key = m.get("msgKey").and_then(Value::as_str).unwrap_or("");
    if !ROBOT_MSG_KEYS.contains(&key) {
        return Err(bad("invalidParameter.msgKey.invalid", "msgKey无效"));
    }
    let Some(param) = m.get("msgParam").and_then(Value::as_str) else {
        return Err(bad("invalidParameter.msgParam.invalid", "msgParam无效"));
    };
    if param.len() > 15000 {
        return Err(bad("invalidParameter.msgParam.tooLong", "msgParam过长"));
    }
    match serde_json::from_str::<Value>(param) {
        Ok(v @ Value::Object(_)) => Ok((key.to_string(), v)),
        _ => Err(bad(
            "invalidParameter.msgParam.invalid",
            "msgParam不是合法的JSON",
        )),
    }
}

async fn group_send(State(app): AppState, b: Bytes) -> Response {
    let m = or_reply!(new_body(&b));
    let (key, param) = or_reply!(robot_common(&app, &m));
    let Some(cid) = m
        .get("openConversationId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return bad("invalid.openConversationId", "openConversationId无效");
    };
    let pqk = uuid::Uuid::new_v4().simple().to_string();
    app.core.record_message(json!({
        "via": "robot_group", "processQueryKey": pqk, "openConversationId": cid,
        "msgKey": key, "msgParam": param, "sent_at_ms": now_ms(),
    }));
    Json(json!({"processQueryKey": pqk})).into_response()
}

async fn oto_send(State(app): AppState, b: Bytes) -> Response {
    let m = or_reply!(new_body(&b));
    let (key, param) = or_reply!(robot_common(&app, &m));
    let users = str_list(m.get("userIds"));
    if users.is_empty() {
        return bad("invalidParameter.userIds.empty", "userIds为空");
    }
    if users.len() > 20 {
        return bad("invalidParameter.userIds.overMax", "userIds超过最大值");
    }
    let (valid, invalid): (Vec<String>, Vec<String>) = {
        let org = lock(&app.org);
        users.into_iter().partition(|u| org.users().contains_key(u))
    };
    let pqk = uuid::Uuid::new_v4().simple().to_string();
    if !valid.is_empty() {
        app.core.record_message(json!({
            "via": "robot_oto", "processQueryKey": pqk, "userIds": valid,
            "msgKey": key, "msgParam": param, "sent_at_ms": now_ms(),
        }));
    }
    Json(json!({"processQueryKey": pqk, "invalidStaffIdList": invalid, "flowControlledStaffIdList": []}))
        .into_response()
}

/// The custom-robot webhook: token, signature (if the robot has a secret), Content-Type,
/// msgtype and the 20 messages/minute limit.
async fn webhook_send(
    State(app): AppState,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    app.core.count_call("POST /robot/send");
    let token = q.get("access_token").cloned().unwrap_or_default();
    let Some((_, secret)) = app.opts.custom_robots.iter().find(|(t, _)| *t == token) else {
        return old_err(400101, "access_token不存在");
    };
    if let Some(secret) = secret {
        let (Some(ts), Some(sign)) = (q.get("timestamp"), q.get("sign")) else {
            return old_err(
                310000,
                "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]",
            );
        };
        let Ok(ts_n) = ts.parse::<i64>() else {
            return old_err(310000, "invalid timestamp");
        };
        if (now_ms() - ts_n).abs() > 3_600_000 {
            return old_err(310000, "invalid timestamp");
        }
        // Query values are already url-decoded; compare the url-encoded forms.
        let expected = webhook_sign(secret, ts_n);
        let given = webhook_sign_encode(sign);
        if !crate::crypto::ct_eq(expected.as_bytes(), given.as_bytes()) {
            return old_err(310000, "sign not match");
        }
    }
    let ct = h
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.contains("application/json") {
        return old_err(43004, "无效的HTTP HEADER Content-Type");
    }
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&b) else {
        return old_err(40035, "不合法的参数");
    };
    let mt = m.get("msgtype").and_then(Value::as_str).unwrap_or("");
    if !WEBHOOK_TYPES.contains(&mt) {
        return old_err(400105, "不支持的消息类型");
    }
    if app.opts.rate_limits {
        let mut s = lock(&app.msg);
        let q = s.robot_sends.entry(token.clone()).or_default();
        let now = Instant::now();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            q.pop_front();
        }
        if q.len() >= 20 {
            drop(s);
            app.core.count_fault("rate-limit");
            return old_err(410100, "send too fast, exceed 20 times per minute");
        }
        q.push_back(now);
    }
    if mt != "empty" {
        app.core.record_message(json!({
            "via": "custom_robot", "robot": token, "msgtype": mt,
            "content": m.get(mt).cloned().unwrap_or(Value::Null),
            "at": m.get("at").cloned().unwrap_or(Value::Null), "sent_at_ms": now_ms(),
        }));
    }
    old_ok(json!({}))
}

/// Re-encodes a decoded `sign` the way [`webhook_sign`] encodes.
fn webhook_sign_encode(decoded: &str) -> String {
    crate::client::seg(decoded)
}
