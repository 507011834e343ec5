//! Calendar schedules in the sandbox: `oa/schedule/add|update|get|del`. Cancelled schedules are
//! still returned by get, with `status` 1. Every change emits the app's schedule event
//! (`add_schedule`, `modify_schedule`, `delete_schedule`, with `CalId` and `ScheduleId`).

use crate::sandbox::prelude::*;
use std::collections::BTreeMap;

use super::{App, AppState, json_body, now_s, ok, opaque, wc_err};

type R = Result<Response, Response>;

/// Unverified: the code WeCom answers for an unknown schedule id.
const NOT_FOUND: i64 = 400003;
const DAILY_LIMIT: usize = 10_000;

#[derive(Default)]
pub(crate) struct ScheduleState {
    by_id: BTreeMap<String, Value>,
    created: Vec<i64>,
}

const WRITABLE: &[&str] = &[
    "organizer",
    "start_time",
    "end_time",
    "attendees",
    "summary",
    "description",
    "reminders",
    "location",
    "cal_id",
    "is_whole_day",
];

fn check(app: &App, s: &Map<String, Value>) -> Result<(), Response> {
    let t = |k: &str| s.get(k).and_then(Value::as_i64);
    if let (Some(a), Some(b)) = (t("start_time"), t("end_time"))
        && b <= a
    {
        return Err(wc_err(40058, "end_time must be after start_time"));
    }
    if s.get("summary")
        .and_then(Value::as_str)
        .is_some_and(|x| x.chars().count() > 128)
    {
        return Err(wc_err(40058, "summary too long"));
    }
    let org = lock(&app.org);
    for a in s
        .get("attendees")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = a.get("userid").and_then(Value::as_str).unwrap_or_default();
        if org.user_key(id).is_none() {
            return Err(wc_err(40003, &format!("invalid userid {id}")));
        }
    }
    if let Some(o) = s.get("organizer").and_then(Value::as_str)
        && org.user_key(o).is_none()
    {
        return Err(wc_err(40003, &format!("invalid organizer {o}")));
    }
    Ok(())
}

fn event(app: &App, kind: &str, s: &Value) {
    let mut m = Map::new();
    m.insert("MsgType".into(), json!("event"));
    m.insert("Event".into(), json!(kind));
    m.insert(
        "CalId".into(),
        s.get("cal_id").cloned().unwrap_or(json!("")),
    );
    m.insert("ScheduleId".into(), s["schedule_id"].clone());
    app.emit_with(vec![m], true);
}

/// The `schedule` object of a request body.
fn schedule_of(b: &Map<String, Value>) -> Result<&Map<String, Value>, Response> {
    b.get("schedule")
        .and_then(Value::as_object)
        .ok_or_else(|| wc_err(40058, "schedule is required"))
}

pub(super) async fn add(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let s = schedule_of(&b)?;
    if s.get("start_time").and_then(Value::as_i64).is_none()
        || s.get("end_time").and_then(Value::as_i64).is_none()
    {
        return Err(wc_err(40058, "start_time and end_time are required"));
    }
    check(&app, s)?;
    let now = now_s();
    let rec = {
        let mut st = lock(&app.schedules);
        st.created.retain(|t| now - t < 86_400);
        if st.created.len() >= DAILY_LIMIT {
            return Err(wc_err(45009, "api freq out of limit"));
        }
        st.created.push(now);
        let id = opaque("");
        let mut rec = json!({"schedule_id": id, "status": 0, "sequence": 1,
            "organizer": "", "attendees": [], "summary": "", "description": "",
            "reminders": {"is_remind": 0, "remind_before_event_secs": 0, "is_repeat": 0, "repeat_type": 0},
            "location": "", "cal_id": "", "create_time": now, "update_time": now});
        for k in WRITABLE {
            if let Some(v) = s.get(*k) {
                rec[*k] = v.clone();
            }
        }
        st.by_id.insert(id, rec.clone());
        rec
    };
    event(&app, "add_schedule", &rec);
    Ok(ok(json!({ "schedule_id": rec["schedule_id"] })))
}

pub(super) async fn update(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let s = schedule_of(&b)?;
    let id = str_or_empty(s.get("schedule_id"));
    check(&app, s)?;
    let rec = {
        let mut st = lock(&app.schedules);
        let rec = st
            .by_id
            .get_mut(&id)
            .filter(|r| r["status"] == 0)
            .ok_or_else(|| wc_err(NOT_FOUND, "schedule not found"))?;
        if let (Some(o), Some(cur)) = (
            s.get("organizer").and_then(Value::as_str),
            rec["organizer"].as_str(),
        ) && !cur.is_empty()
            && o != cur
        {
            return Err(wc_err(40058, "organizer cannot change"));
        }
        for k in WRITABLE {
            if let Some(v) = s.get(*k) {
                rec[*k] = v.clone();
            }
        }
        let (a, e) = (rec["start_time"].as_i64(), rec["end_time"].as_i64());
        if let (Some(a), Some(e)) = (a, e)
            && e <= a
        {
            return Err(wc_err(40058, "end_time must be after start_time"));
        }
        rec["sequence"] = json!(rec["sequence"].as_i64().unwrap_or(0) + 1);
        rec["update_time"] = json!(now_s());
        rec.clone()
    };
    event(&app, "modify_schedule", &rec);
    Ok(ok(json!({})))
}

pub(super) async fn get_list(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let ids: Vec<String> = str_list(b.get("schedule_id_list"));
    if ids.is_empty() || ids.len() > 1000 {
        return Err(wc_err(40058, "schedule_id_list must have 1..1000 ids"));
    }
    let st = lock(&app.schedules);
    let list: Vec<Value> = ids
        .iter()
        .filter_map(|i| st.by_id.get(i).cloned())
        .collect();
    if list.is_empty() {
        return Err(wc_err(NOT_FOUND, "schedule not found"));
    }
    Ok(ok(json!({ "schedule_list": list })))
}

pub(super) async fn del(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let id = b
        .get("schedule_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let rec = {
        let mut st = lock(&app.schedules);
        let rec = st
            .by_id
            .get_mut(id)
            .filter(|r| r["status"] == 0)
            .ok_or_else(|| wc_err(NOT_FOUND, "schedule not found"))?;
        rec["status"] = json!(1);
        rec["update_time"] = json!(now_s());
        rec.clone()
    };
    event(&app, "delete_schedule", &rec);
    Ok(ok(json!({})))
}
