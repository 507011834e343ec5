//! im/v1 in the sandbox: send (with uuid de-duplication and size limits), reply, get, image and
//! file upload, image download, chats.

use crate::sandbox::prelude::*;
use axum::extract::{DefaultBodyLimit, Multipart, Path};

use bytes::Bytes;

use super::{App, AppState, fs_err, json_body, now_ms, ok, page_by};
use crate::feishu::im::{MSG_TYPES, RECEIVE_ID_TYPES, content_limit};

type Q = Query<HashMap<String, String>>;
type R = Result<Response, Response>;

/// Room for the largest file plus the multipart framing.
const UPLOAD_BODY_LIMIT: usize = crate::feishu::im::FILE_LIMITS.max_file_bytes + 1024 * 1024;

#[derive(Default)]
pub(crate) struct ImState {
    /// client_token -> created key (contact creates), shared here to keep one lock per area.
    pub client_tokens: HashMap<String, String>,
    by_uuid: HashMap<String, Value>,
    by_id: HashMap<String, Value>,
    images: HashMap<String, Bytes>,
    files: HashMap<String, Bytes>,
}

pub(super) fn routes() -> Router<std::sync::Arc<App>> {
    Router::new()
        .route("/open-apis/im/v1/messages", post(send))
        .route("/open-apis/im/v1/messages/{id}", get(get_message))
        .route("/open-apis/im/v1/messages/{id}/reply", post(reply))
        .route(
            "/open-apis/im/v1/images",
            post(upload_image).layer(DefaultBodyLimit::max(UPLOAD_BODY_LIMIT)),
        )
        .route("/open-apis/im/v1/images/{key}", get(download_image))
        .route(
            "/open-apis/im/v1/files",
            post(upload_file).layer(DefaultBodyLimit::max(UPLOAD_BODY_LIMIT)),
        )
        .route("/open-apis/im/v1/chats", get(chats))
}

fn check_content(msg_type: &str, content: Option<&Value>) -> Result<Value, Response> {
    if !MSG_TYPES.contains(&msg_type) {
        return Err(fs_err(StatusCode::BAD_REQUEST, 230001, "invalid msg_type"));
    }
    let Some(Value::String(c)) = content else {
        return Err(fs_err(
            StatusCode::BAD_REQUEST,
            230001,
            "content must be a JSON string",
        ));
    };
    if c.len() > content_limit(msg_type) {
        return Err(fs_err(
            StatusCode::BAD_REQUEST,
            230025,
            "message content is too long",
        ));
    }
    let parsed: Value = serde_json::from_str(c)
        .map_err(|_| fs_err(StatusCode::BAD_REQUEST, 230001, "content is not valid JSON"))?;
    let needed = match msg_type {
        "text" => Some("text"),
        "image" => Some("image_key"),
        "file" | "audio" | "media" => Some("file_key"),
        _ => None,
    };
    if let Some(k) = needed
        && parsed.get(k).and_then(Value::as_str).is_none()
    {
        return Err(fs_err(
            StatusCode::BAD_REQUEST,
            230001,
            &format!("{msg_type} content needs {k}"),
        ));
    }
    Ok(parsed)
}

fn record(app: &App, data: &Value, extra: Value) {
    let mut m = data.clone();
    if let (Some(o), Value::Object(e)) = (m.as_object_mut(), extra) {
        o.extend(e);
    }
    app.core.record_message(m);
}

async fn send(State(app): AppState, Query(q): Q, body: axum::body::Bytes) -> R {
    let rit = q.get("receive_id_type").map(String::as_str).unwrap_or("");
    if !RECEIVE_ID_TYPES.contains(&rit) {
        return Err(fs_err(
            StatusCode::BAD_REQUEST,
            99992402,
            "field validation failed: receive_id_type",
        ));
    }
    let b = json_body(&body)?;
    let rid = str_or_empty(b.get("receive_id"));
    let msg_type = str_or_empty(b.get("msg_type"));
    let parsed = check_content(&msg_type, b.get("content"))?;
    let uuid = b.get("uuid").and_then(Value::as_str).map(str::to_string);
    if let Some(u) = &uuid
        && let Some(prev) = lock(&app.im).by_uuid.get(u)
    {
        return Ok(ok(prev.clone()));
    }
    let chat_id = if rit == "chat_id" {
        if !rid.starts_with("oc_") {
            return Err(fs_err(
                StatusCode::BAD_REQUEST,
                230034,
                "invalid receive_id",
            ));
        }
        rid.clone()
    } else {
        let org = lock(&app.org);
        let key = if rit == "email" {
            org.user_by_email(&rid)
        } else {
            org.user_key(&rid, rit)
        };
        let Some(key) = key else {
            return Err(fs_err(
                StatusCode::BAD_REQUEST,
                230034,
                "invalid receive_id",
            ));
        };
        if !org.users()[&key].fx.active {
            return Err(fs_err(StatusCode::BAD_REQUEST, 230029, "user has resigned"));
        }
        format!("oc_p2p_{}", &org.users()[&key].open_id[3..])
    };
    let data = message_data(&app, &chat_id, &msg_type, &b["content"], None);
    {
        let mut im = lock(&app.im);
        if let Some(u) = &uuid {
            im.by_uuid.insert(u.clone(), data.clone());
        }
        if let Some(id) = data["message_id"].as_str() {
            im.by_id.insert(id.to_string(), data.clone());
        }
    }
    record(
        &app,
        &data,
        json!({"receive_id_type": rit, "receive_id": rid, "content": parsed, "uuid": uuid}),
    );
    Ok(ok(data))
}

fn message_data(
    app: &App,
    chat_id: &str,
    msg_type: &str,
    content: &Value,
    parent: Option<&str>,
) -> Value {
    let id = format!("om_{}", uuid::Uuid::new_v4().simple());
    let now = now_ms().to_string();
    json!({
        "message_id": id, "root_id": parent.unwrap_or(""), "parent_id": parent.unwrap_or(""),
        "thread_id": "", "msg_type": msg_type, "create_time": now, "update_time": now,
        "deleted": false, "updated": false, "chat_id": chat_id,
        "sender": {"id": app.opts.app_id, "id_type": "app_id", "sender_type": "app", "tenant_key": app.opts.tenant_key},
        "body": {"content": content}, "mentions": [], "upper_message_id": "",
    })
}

async fn reply(State(app): AppState, Path(id): Path<String>, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let msg_type = str_or_empty(b.get("msg_type"));
    let parsed = check_content(&msg_type, b.get("content"))?;
    let chat_id = lock(&app.im)
        .by_id
        .get(&id)
        .and_then(|m| m["chat_id"].as_str().map(str::to_string))
        .ok_or_else(|| fs_err(StatusCode::BAD_REQUEST, 230011, "the message was not found"))?;
    let data = message_data(&app, &chat_id, &msg_type, &b["content"], Some(&id));
    if let Some(mid) = data["message_id"].as_str() {
        lock(&app.im).by_id.insert(mid.to_string(), data.clone());
    }
    record(&app, &data, json!({"reply_to": id, "content": parsed}));
    Ok(ok(data))
}

async fn get_message(State(app): AppState, Path(id): Path<String>) -> R {
    let m = lock(&app.im).by_id.get(&id).cloned();
    m.map(|m| ok(json!({"items": [m]})))
        .ok_or_else(|| fs_err(StatusCode::BAD_REQUEST, 230011, "the message was not found"))
}

async fn read_form(mut mp: Multipart) -> Result<HashMap<String, Bytes>, Response> {
    let mut out = HashMap::new();
    loop {
        match mp.next_field().await {
            Ok(Some(f)) => {
                let name = f.name().unwrap_or_default().to_string();
                let data = f
                    .bytes()
                    .await
                    .map_err(|_| fs_err(StatusCode::BAD_REQUEST, 99992402, "bad multipart body"))?;
                out.insert(name, data);
            }
            Ok(None) => return Ok(out),
            Err(_) => {
                return Err(fs_err(
                    StatusCode::BAD_REQUEST,
                    99992402,
                    "bad multipart body",
                ));
            }
        }
    }
}

/// The uploaded bytes of the form field `name`: present, not empty, at most `max` bytes.
fn upload<'a>(
    form: &'a HashMap<String, Bytes>,
    name: &str,
    max: usize,
) -> Result<&'a Bytes, Response> {
    let bytes = form.get(name).filter(|b| !b.is_empty()).ok_or_else(|| {
        fs_err(
            StatusCode::BAD_REQUEST,
            99992402,
            &format!("field validation failed: {name}"),
        )
    })?;
    if bytes.len() > max {
        return Err(fs_err(
            StatusCode::BAD_REQUEST,
            234006,
            "the file size exceeds the limit",
        ));
    }
    Ok(bytes)
}

async fn upload_image(State(app): AppState, mp: Multipart) -> R {
    let form = read_form(mp).await?;
    let image = upload(
        &form,
        "image",
        crate::feishu::im::FILE_LIMITS.max_image_bytes,
    )?;
    let key = format!("img_v3_{}", uuid::Uuid::new_v4().simple());
    lock(&app.im).images.insert(key.clone(), image.clone());
    Ok(ok(json!({"image_key": key})))
}

async fn download_image(State(app): AppState, Path(key): Path<String>) -> R {
    let img = lock(&app.im).images.get(&key).cloned();
    img.map(|b| ([("content-type", "application/octet-stream")], b).into_response())
        .ok_or_else(|| fs_err(StatusCode::BAD_REQUEST, 234003, "file not found"))
}

async fn upload_file(State(app): AppState, mp: Multipart) -> R {
    let form = read_form(mp).await?;
    let ft = form
        .get("file_type")
        .map(|b| String::from_utf8_lossy(b).to_string())
        .unwrap_or_default();
    if !crate::feishu::im::FILE_LIMITS
        .file_types
        .contains(&ft.as_str())
    {
        return Err(fs_err(
            StatusCode::BAD_REQUEST,
            99992402,
            "field validation failed: file_type",
        ));
    }
    let file = upload(&form, "file", crate::feishu::im::FILE_LIMITS.max_file_bytes)?;
    let key = format!("file_v3_{}", uuid::Uuid::new_v4().simple());
    lock(&app.im).files.insert(key.clone(), file.clone());
    Ok(ok(json!({"file_key": key})))
}

async fn chats(State(app): AppState, Query(q): Q) -> R {
    // The sandbox bot is in one group chat per department, named after it.
    let org = lock(&app.org);
    let depts = org.depts();
    Ok(ok(page_by(
        depts.len(),
        &q,
        (20, 100),
        (99992402, 99992402),
        |s, e| {
            depts.values().skip(s).take(e - s)
                .map(|d| json!({"chat_id": format!("oc_{}", &crate::feishu::sandbox::org_hash(&d.fx.key)), "name": d.fx.name,
                    "description": "", "owner_id": "", "owner_id_type": "open_id", "external": false,
                    "tenant_key": app.opts.tenant_key, "chat_status": "normal", "avatar": ""}))
                .collect()
        },
    )?))
}

/// `POST /_sandbox/im/receive`: a user sends the bot a message (what a person typing in the Feishu
/// client would do); emits `im.message.receive_v1`. Body: `{"from": user key, "text": "…"}` or
/// `{"from", "msg_type", "content": {…}}`, optional `"chat_id"` (`oc_…`, a group chat; default the
/// user's one-to-one chat with the bot).
pub(super) async fn receive(State(app): AppState, body: axum::body::Bytes) -> Response {
    let b = or_reply!(json_body(&body));
    let from = b.get("from").and_then(Value::as_str).unwrap_or_default();
    let (msg_type, content) = match (b.get("text").and_then(Value::as_str), b.get("content")) {
        (Some(t), _) => ("text".to_string(), json!({ "text": t })),
        (None, Some(c @ Value::Object(_))) => (
            b.get("msg_type")
                .and_then(Value::as_str)
                .unwrap_or("text")
                .to_string(),
            c.clone(),
        ),
        _ => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"error": "text or content is required"})),
            )
                .into_response();
        }
    };
    let sender = {
        let org = lock(&app.org);
        let Some(u) = org.users().get(from) else {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": format!("user {from} not found")})),
            )
                .into_response();
        };
        json!({"open_id": u.open_id, "union_id": u.union_id, "user_id": u.user_id})
    };
    let (chat_id, chat_type) = match b.get("chat_id").and_then(Value::as_str) {
        Some(c) => (c.to_string(), "group"),
        None => (
            format!(
                "oc_p2p_{}",
                &sender["open_id"].as_str().unwrap_or("ou_")[3..]
            ),
            "p2p",
        ),
    };
    let id = format!("om_{}", uuid::Uuid::new_v4().simple());
    let now = now_ms().to_string();
    let event = json!({
        "sender": {"sender_id": sender, "sender_type": "user", "tenant_key": app.opts.tenant_key},
        "message": {"message_id": id, "root_id": "", "parent_id": "", "create_time": now, "update_time": now,
            "chat_id": chat_id, "thread_id": "", "chat_type": chat_type, "message_type": msg_type,
            "content": content.to_string(), "mentions": [], "user_agent": "huitong-sandbox"},
    });
    app.emit(vec![("im.message.receive_v1", event)]);
    (
        StatusCode::CREATED,
        axum::Json(json!({"message_id": id, "chat_id": chat_id})),
    )
        .into_response()
}
