//! Messaging in the sandbox: `message/send` (recipients checked one by one, 81013 when none is
//! valid, the duplicate check, the silent per-member drop), `message/recall`,
//! `appchat/create|get|update|send`, `media/upload|get`, group robots (`webhook/send`, 20/min
//! per key, 93000 for an unknown key), and `POST /_sandbox/message/receive`.

use crate::sandbox::prelude::*;
use std::collections::BTreeSet;

use axum::extract::Multipart;

use bytes::Bytes;

use super::{App, AppState, json_body, now_s, ok, ok_msg, opaque, wc_err};
use crate::crypto::sha256;

use crate::wecom::message::{MIN_FILE_BYTES, MSG_TYPES, check_payload, media_limit};

type Q = Query<HashMap<String, String>>;
type R = Result<Response, Response>;

pub(super) const UPLOAD_BODY_LIMIT: usize = 21 * 1024 * 1024;

#[derive(Default)]
pub(crate) struct MsgState {
    /// request hash -> (msgid, sent at)
    dup: HashMap<String, (String, i64)>,
    /// msgid -> index in the core's message record
    sent: HashMap<String, Value>,
    media: HashMap<String, (String, String, Bytes)>,
    chats: HashMap<String, Value>,
}

/// Group robots take no access token.
pub(super) fn robot_routes() -> Router<std::sync::Arc<App>> {
    Router::new().route("/cgi-bin/webhook/send", post(robot_send))
}

/// Ids as the API takes them; an array's other values count by their JSON text.
fn split(v: Option<&Value>) -> Vec<String> {
    crate::wecom::message::id_list(v, true)
}

fn payload_err(msgtype: &str, m: &str) -> Response {
    if m.contains("longer") {
        wc_err(45002, "content size out of limit")
    } else if m.contains("media_id") {
        wc_err(40007, "invalid media_id")
    } else if m.contains("not supported") {
        wc_err(40008, &format!("invalid message type {msgtype}"))
    } else {
        wc_err(44004, "empty content")
    }
}

fn check_message(app: &App, b: &Map<String, Value>) -> Result<(String, Value), Response> {
    let msgtype = str_or_empty(b.get("msgtype"));
    if !MSG_TYPES.contains(&msgtype.as_str()) {
        return Err(wc_err(40008, "invalid message type"));
    }
    let payload = b.get(msgtype.as_str()).cloned().unwrap_or(Value::Null);
    check_payload(&msgtype, &payload).map_err(|m| payload_err(&msgtype, &m))?;
    if let Some(id) = payload.get("media_id").and_then(Value::as_str)
        && !lock(&app.msg).media.contains_key(id)
    {
        return Err(wc_err(40007, "invalid media_id"));
    }
    Ok((msgtype, payload))
}

pub(super) async fn send(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let agent = b.get("agentid").and_then(crate::wecom::contact::as_int);
    if agent != Some(app.opts.agent_id) {
        return Err(wc_err(40056, "invalid agentid"));
    }
    let (msgtype, payload) = check_message(&app, &b)?;
    let touser = split(b.get("touser"));
    let toparty = split(b.get("toparty"));
    let totag = split(b.get("totag"));
    if touser.is_empty() && toparty.is_empty() && totag.is_empty() {
        return Err(wc_err(
            40035,
            "invalid parameter: touser, toparty and totag are empty",
        ));
    }
    if touser.len() > 1000 || toparty.len() > 100 || totag.len() > 100 {
        return Err(wc_err(40035, "too many recipients"));
    }
    let flag = |k: &str| b.get(k).and_then(crate::wecom::contact::as_int) == Some(1);
    // Duplicate check: the same request JSON within the interval is not sent again.
    let dup_key = flag("enable_duplicate_check").then(|| {
        let mut canon = b.clone();
        canon.remove("duplicate_check_interval");
        hex::encode(sha256(Value::Object(canon).to_string().as_bytes()))
    });
    let interval = b
        .get("duplicate_check_interval")
        .and_then(Value::as_i64)
        .unwrap_or(1800)
        .clamp(0, 14_400);
    let now = now_s();
    if let Some(k) = &dup_key
        && let Some((msgid, at)) = lock(&app.msg).dup.get(k)
        && now - at < interval
    {
        return Ok(ok(
            json!({"invaliduser": "", "invalidparty": "", "invalidtag": "",
            "unlicenseduser": "", "msgid": msgid}),
        ));
    }

    // Resolve recipients one by one.
    let (valid, invalid_users, invalid_parties) = {
        let org = lock(&app.org);
        let mut valid = BTreeSet::new();
        let mut bad_users = Vec::new();
        let mut bad_parties = Vec::new();
        let active = |k: &str| {
            org.users()
                .get(k)
                .is_some_and(|u| u.status == 1 || u.status == 4)
        };
        if touser.iter().any(|u| u == "@all") {
            valid.extend(org.users().keys().filter(|k| active(k)).cloned());
        } else {
            for u in &touser {
                match org.user_key(u) {
                    Some(k) if active(&k) => {
                        valid.insert(k);
                    }
                    _ => bad_users.push(u.to_ascii_lowercase()),
                }
            }
            for p in &toparty {
                match p.parse::<i64>().ok().and_then(|id| org.dept_key(id)) {
                    Some(k) => {
                        for sub in org.subtree(&k) {
                            valid.extend(org.members(&sub).into_iter().filter(|m| active(m)));
                        }
                    }
                    None => bad_parties.push(p.clone()),
                }
            }
        }
        (valid, bad_users, bad_parties)
    };
    // The sandbox has no tags: every tag is invalid.
    let invalid_tags = if touser.iter().any(|u| u == "@all") {
        Vec::new()
    } else {
        totag.clone()
    };
    if valid.is_empty() {
        return Err(wc_err(81013, "user & party & tag all invalid"));
    }
    // Per member: beyond the per-minute quota the message is dropped silently.
    let mut delivered = Vec::new();
    let mut dropped = Vec::new();
    for k in valid {
        if !app.opts.rate_limits
            || app.window_take(
                &format!("member:{k}"),
                app.opts.messages_per_member_per_minute,
            )
        {
            delivered.push(k);
        } else {
            dropped.push(k);
        }
    }
    if !dropped.is_empty() {
        app.core.count_fault("silent-drop");
    }
    let msgid = opaque("");
    let record = json!({
        "msgid": msgid, "channel": "app", "agentid": app.opts.agent_id, "msgtype": msgtype,
        "content": payload, "safe": flag("safe"), "touser": touser, "toparty": toparty,
        "totag": totag, "delivered_to": delivered, "dropped_for": dropped,
        "invaliduser": invalid_users, "invalidparty": invalid_parties, "sent_at": now,
    });
    {
        let mut st = lock(&app.msg);
        if let Some(k) = dup_key {
            st.dup.insert(k, (msgid.clone(), now));
        }
        st.sent.insert(msgid.clone(), record.clone());
    }
    app.core.record_message(record);
    Ok(ok(json!({
        "invaliduser": invalid_users.join("|"), "invalidparty": invalid_parties.join("|"),
        "invalidtag": invalid_tags.join("|"), "unlicenseduser": "", "msgid": msgid,
    })))
}

pub(super) async fn recall(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let id = b.get("msgid").and_then(Value::as_str).unwrap_or_default();
    let mut st = lock(&app.msg);
    let m = st
        .sent
        .get_mut(id)
        .ok_or_else(|| wc_err(40035, "invalid msgid"))?;
    if m["recalled"] == json!(true) {
        return Err(wc_err(40035, "message already recalled"));
    }
    m["recalled"] = json!(true);
    drop(st);
    app.core
        .record_message(json!({"channel": "recall", "msgid": id}));
    Ok(ok(json!({})))
}

/// The keys of the chat members `users` (userids), or 86008.
fn member_keys(app: &App, users: &[String]) -> Result<Vec<String>, Response> {
    let org = lock(&app.org);
    users
        .iter()
        .map(|u| {
            org.user_key(u)
                .ok_or_else(|| wc_err(86008, &format!("invalid chat member {u}")))
        })
        .collect()
}

fn valid_chatid(c: &str) -> bool {
    !c.is_empty() && c.len() <= 32 && c.chars().all(|ch| ch.is_ascii_alphanumeric())
}

pub(super) async fn appchat_create(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let users = split(b.get("userlist"));
    if !(2..=500).contains(&users.len()) {
        return Err(wc_err(86007, "userlist must have 2..500 members"));
    }
    let keys = member_keys(&app, &users)?;
    let owner = match b.get("owner").and_then(Value::as_str) {
        Some(o) if !keys.iter().any(|k| k.eq_ignore_ascii_case(o)) => {
            return Err(wc_err(86004, "invalid chat owner"));
        }
        Some(o) => o.to_string(),
        None => keys[0].clone(),
    };
    let chatid = match b.get("chatid").and_then(Value::as_str) {
        Some(c) if !valid_chatid(c) => return Err(wc_err(86001, "invalid chatid")),
        Some(c) => c.to_string(),
        None => opaque("wr").chars().take(32).collect(),
    };
    let mut st = lock(&app.msg);
    if st.chats.contains_key(&chatid) {
        return Err(wc_err(86006, "chatid existed"));
    }
    let name = b.get("name").and_then(Value::as_str).unwrap_or("");
    st.chats.insert(
        chatid.clone(),
        json!({"chatid": chatid, "name": name, "owner": owner, "userlist": keys, "chat_type": 0}),
    );
    Ok(ok(json!({ "chatid": chatid })))
}

pub(super) async fn appchat_get(State(app): AppState, Query(q): Q) -> R {
    let id = q.get("chatid").map(String::as_str).unwrap_or_default();
    let st = lock(&app.msg);
    let c = st
        .chats
        .get(id)
        .ok_or_else(|| wc_err(86003, "chatid not found"))?;
    Ok(ok(json!({ "chat_info": c })))
}

pub(super) async fn appchat_update(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let id = b.get("chatid").and_then(Value::as_str).unwrap_or_default();
    let add = split(b.get("add_user_list"));
    let del = split(b.get("del_user_list"));
    let add_keys = member_keys(&app, &add)?;
    let mut st = lock(&app.msg);
    let c = st
        .chats
        .get_mut(id)
        .ok_or_else(|| wc_err(86003, "chatid not found"))?;
    let mut users: Vec<String> = split(c.get("userlist"));
    for k in add_keys {
        if !users.contains(&k) {
            users.push(k);
        }
    }
    users.retain(|u| !del.iter().any(|d| d.eq_ignore_ascii_case(u)));
    if users.len() > 2000 {
        return Err(wc_err(86007, "too many chat members"));
    }
    c["userlist"] = json!(users);
    if let Some(n) = b.get("name").and_then(Value::as_str) {
        c["name"] = json!(n);
    }
    if let Some(o) = b.get("owner").and_then(Value::as_str) {
        c["owner"] = json!(o);
    }
    Ok(ok(json!({})))
}

pub(super) async fn appchat_send(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let id = b.get("chatid").and_then(Value::as_str).unwrap_or_default();
    let members = lock(&app.msg)
        .chats
        .get(id)
        .map(|c| split(c.get("userlist")))
        .ok_or_else(|| wc_err(86003, "chatid not found"))?;
    let (msgtype, payload) = check_message(&app, &b)?;
    let msgid = opaque("");
    app.core.record_message(json!({
        "msgid": msgid, "channel": "appchat", "chatid": id, "msgtype": msgtype,
        "content": payload, "safe": b.get("safe").and_then(crate::wecom::contact::as_int) == Some(1),
        "delivered_to": members, "sent_at": now_s(),
    }));
    Ok(ok(json!({})))
}

pub(super) async fn upload(State(app): AppState, Query(q): Q, mut mp: Multipart) -> R {
    let t = q
        .get("type")
        .map(String::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(max) = media_limit(&t) else {
        return Err(wc_err(40004, "invalid media type"));
    };
    let mut file = None;
    loop {
        match mp.next_field().await {
            Ok(Some(f)) => {
                let name = f.name().unwrap_or_default().to_string();
                let file_name = f.file_name().unwrap_or("media").to_string();
                let data = f
                    .bytes()
                    .await
                    .map_err(|_| wc_err(40005, "invalid file: bad multipart body"))?;
                if name == "media" {
                    file = Some((file_name, data));
                }
            }
            Ok(None) => break,
            Err(_) => return Err(wc_err(40005, "invalid file: bad multipart body")),
        }
    }
    let (file_name, data) = file.ok_or_else(|| wc_err(41005, "media data missing"))?;
    if data.len() < MIN_FILE_BYTES || data.len() > max {
        return Err(wc_err(40006, "invalid file size"));
    }
    let id = format!("3{}", opaque(""));
    let created = now_s();
    lock(&app.msg)
        .media
        .insert(id.clone(), (t.clone(), file_name, data));
    Ok(ok_msg(
        "",
        json!({"type": t, "media_id": id, "created_at": created.to_string()}),
    ))
}

pub(super) async fn media_get(State(app): AppState, Query(q): Q) -> R {
    let id = q.get("media_id").map(String::as_str).unwrap_or_default();
    let (_, name, data) = lock(&app.msg)
        .media
        .get(id)
        .cloned()
        .ok_or_else(|| wc_err(40007, "invalid media_id"))?;
    Ok((
        StatusCode::OK,
        [
            ("content-type", "application/octet-stream".to_string()),
            (
                "content-disposition",
                format!("attachment; filename=\"{}\"", name.replace('"', "")),
            ),
        ],
        data,
    )
        .into_response())
}

async fn robot_send(State(app): AppState, Query(q): Q, body: axum::body::Bytes) -> Response {
    app.core.count_call("POST /cgi-bin/webhook/send");
    let key = q.get("key").map(String::as_str).unwrap_or_default();
    if !app.opts.robot_keys.iter().any(|k| k == key) {
        return wc_err(93000, "invalid webhook url");
    }
    let robot = hex::encode(&sha256(key.as_bytes())[..8]);
    if app.opts.rate_limits && !app.window_take(&format!("robot:{robot}"), 20) {
        app.core.count_fault("rate-limit");
        return wc_err(45009, "api freq out of limit");
    }
    let b = or_reply!(json_body(&body));
    let msgtype = b.get("msgtype").and_then(Value::as_str).unwrap_or_default();
    let payload = b.get(msgtype).cloned().unwrap_or(Value::Null);
    let content_len = payload
        .get("content")
        .and_then(Value::as_str)
        .map_or(0, str::len);
    let bad = match msgtype {
        "text" => content_len == 0 || content_len > 2048,
        "markdown" => content_len == 0 || content_len > 4096,
        "image" => payload.get("base64").is_none() || payload.get("md5").is_none(),
        "news" => payload
            .get("articles")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty() || a.len() > 8),
        "file" | "voice" => payload.get("media_id").is_none(),
        "template_card" => false,
        _ => return wc_err(40008, "invalid message type"),
    };
    if bad {
        return wc_err(40058, "invalid parameter");
    }
    app.core.record_message(json!({
        "channel": "robot", "robot": robot, "msgtype": msgtype, "content": payload,
        "sent_at": now_s(),
    }));
    ok(json!({}))
}

/// `POST /_sandbox/message/receive` `{"from": user key, "text": "…"}`: a member sends the app a
/// text message; the app's callback receives it.
pub(super) async fn receive(State(app): AppState, body: axum::body::Bytes) -> Response {
    let b = or_reply!(json_body(&body));
    let from = b.get("from").and_then(Value::as_str).unwrap_or_default();
    let Some(text) = b.get("text").and_then(Value::as_str) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"error": "text is required"})),
        )
            .into_response();
    };
    let Some(userid) = lock(&app.org).user_key(from) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": format!("user {from} not found")})),
        )
            .into_response();
    };
    let msgid = (now_s() as u64)
        .wrapping_mul(1_000_003)
        .wrapping_add(u64::from_be_bytes(crate::crypto::random_bytes::<8>()) % 1_000_000)
        .to_string();
    let mut m = Map::new();
    m.insert("FromUserName".into(), json!(userid));
    m.insert("MsgType".into(), json!("text"));
    m.insert("Content".into(), json!(text));
    m.insert("MsgId".into(), json!(msgid));
    app.emit_with(vec![m], true);
    (
        StatusCode::CREATED,
        axum::Json(json!({"msgid": msgid, "from": userid})),
    )
        .into_response()
}
