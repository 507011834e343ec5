//! Tasks. WeCom has no general task API (its 待办 server API is only partly documented), so a
//! task becomes a calendar **schedule** (`oa/schedule/add|update|get|del`) when it has a time,
//! and a **textcard** app message to its assignees when it has none.
//!
//! Task record (raw, as the mapping produces it), either `{"schedule": {…}}` (an
//! `oa/schedule/add` body, sent verbatim) or flat:
//! `{summary, description?, organizer?, attendees: [userid], start_time?, end_time?, location?,
//!   remind_before_event_secs?, cal_id?, url?}` (times in Unix seconds). With only `end_time`
//! (a due time) the schedule is the half hour before it. Without times, the task is a textcard
//! (`title` = summary, `description`, `url`, button "详情") and its id is `textcard:<msgid>`;
//! updating it sends a new card, deleting it recalls the card.

use serde_json::{Map, Value, json};

use crate::error::ConnectorError;
use crate::wecom::VENDOR;
use crate::wecom::client::{ApiCall, WecomClient};
use crate::wecom::message::OutgoingMessage;

/// Id prefix of tasks delivered as textcards.
pub const TEXTCARD_PREFIX: &str = "textcard:";
/// Link of a textcard when the task has none (textcards need a URL).
pub const DEFAULT_TASK_URL: &str = "https://work.weixin.qq.com/";
/// Length of the schedule made from a task that only has a due time.
pub const DUE_SLOT_SECS: i64 = 1800;
/// Codes meaning "no such schedule".
const SCHEDULE_NOT_FOUND: &[i64] = &[400003];

/// What a task record becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskPlan {
    /// An `oa/schedule/add` body.
    Schedule(Value),
    /// A textcard message to the assignees.
    Textcard(OutgoingMessage),
}

fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn attendees(v: &Value) -> Vec<String> {
    v.get("attendees")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    x.as_str()
                        .or_else(|| x.get("userid").and_then(Value::as_str))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Decides how a task record is delivered.
pub fn plan_task(task: &Value) -> Result<TaskPlan, ConnectorError> {
    if let Some(s) = task.get("schedule").filter(|s| s.is_object()) {
        return Ok(TaskPlan::Schedule(json!({ "schedule": s })));
    }
    let summary = task
        .get("summary")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ConnectorError::permanent(VENDOR, "task without summary"))?;
    let description = task
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    let people = attendees(task);
    let start = task.get("start_time").and_then(Value::as_i64);
    let end = task.get("end_time").and_then(Value::as_i64);
    let (start, end) = match (start, end) {
        (Some(s), Some(e)) => (s, e),
        (None, Some(e)) => (e - DUE_SLOT_SECS, e),
        (Some(s), None) => (s, s + DUE_SLOT_SECS),
        (None, None) => {
            if people.is_empty() {
                return Err(ConnectorError::permanent(
                    VENDOR,
                    "a task without times needs attendees to notify",
                ));
            }
            let url = task
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_TASK_URL);
            let desc = if description.is_empty() {
                summary
            } else {
                description
            };
            let refs: Vec<&str> = people.iter().map(String::as_str).collect();
            return Ok(TaskPlan::Textcard(OutgoingMessage::textcard(
                &refs,
                &truncate_bytes(summary, 128),
                &truncate_bytes(desc, 512),
                url,
                Some("详情"),
            )));
        }
    };
    if end <= start {
        return Err(ConnectorError::permanent(
            VENDOR,
            "task end_time must be after start_time",
        ));
    }
    let mut s = Map::new();
    if let Some(o) = task.get("organizer").and_then(Value::as_str) {
        s.insert("organizer".into(), json!(o));
    }
    s.insert("start_time".into(), json!(start));
    s.insert("end_time".into(), json!(end));
    s.insert(
        "attendees".into(),
        Value::Array(people.iter().map(|u| json!({ "userid": u })).collect()),
    );
    s.insert("summary".into(), json!(summary));
    s.insert("description".into(), json!(description));
    if let Some(secs) = task.get("remind_before_event_secs").and_then(Value::as_i64) {
        s.insert(
            "reminders".into(),
            json!({"is_remind": 1, "remind_before_event_secs": secs, "is_repeat": 0}),
        );
    }
    for k in ["location", "cal_id"] {
        if let Some(v) = task.get(k).and_then(Value::as_str) {
            s.insert(k.into(), json!(v));
        }
    }
    Ok(TaskPlan::Schedule(json!({ "schedule": s })))
}

impl WecomClient {
    fn schedule_call(&self, path: &str, body: Value) -> ApiCall {
        ApiCall::post(path, "schedule", self.wire.cfg.limits.schedule).json(body)
    }

    /// `oa/schedule/add {schedule}` → schedule_id.
    pub async fn add_schedule(&self, body: Value) -> Result<String, ConnectorError> {
        let v = self
            .call(&self.schedule_call("oa/schedule/add", body))
            .await?;
        v.get("schedule_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ConnectorError::permanent(VENDOR, "oa/schedule/add without schedule_id"))
    }

    /// `oa/schedule/update {schedule: {schedule_id, …}}`.
    pub async fn update_schedule(&self, id: &str, schedule: Value) -> Result<(), ConnectorError> {
        let mut s = match schedule {
            Value::Object(m) => m,
            _ => {
                return Err(ConnectorError::permanent(
                    VENDOR,
                    "schedule must be an object",
                ));
            }
        };
        s.insert("schedule_id".into(), json!(id));
        self.call(&self.schedule_call("oa/schedule/update", json!({ "schedule": s })))
            .await
            .map(drop)
    }

    /// `oa/schedule/get {schedule_id_list}`; cancelled schedules come back too, with a status.
    pub async fn get_schedule(&self, id: &str) -> Result<Option<Value>, ConnectorError> {
        let body = json!({ "schedule_id_list": [id] });
        match self
            .call(&self.schedule_call("oa/schedule/get", body))
            .await
        {
            Ok(mut v) => Ok(v
                .get_mut("schedule_list")
                .and_then(Value::as_array_mut)
                .and_then(|a| (!a.is_empty()).then(|| a.swap_remove(0)))),
            Err(e) if e.code().is_some_and(|c| SCHEDULE_NOT_FOUND.contains(&c)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `oa/schedule/del {schedule_id}`.
    pub async fn delete_schedule(&self, id: &str) -> Result<(), ConnectorError> {
        self.call(&self.schedule_call("oa/schedule/del", json!({ "schedule_id": id })))
            .await
            .map(drop)
    }

    /// Creates a task as a schedule or a textcard ([`plan_task`]); returns its id.
    pub async fn create_task(&self, task: &Value) -> Result<String, ConnectorError> {
        match plan_task(task)? {
            TaskPlan::Schedule(body) => self.add_schedule(body).await,
            TaskPlan::Textcard(m) => {
                let r = self.send_message(&m).await?;
                Ok(format!("{TEXTCARD_PREFIX}{}", r.msgid))
            }
        }
    }

    /// Updates a task: the schedule's fields, or a new card for a textcard task.
    pub async fn update_task(&self, id: &str, patch: &Value) -> Result<(), ConnectorError> {
        if id.starts_with(TEXTCARD_PREFIX) {
            return match plan_task(patch)? {
                TaskPlan::Textcard(m) => self.send_message(&m).await.map(drop),
                TaskPlan::Schedule(_) => Err(ConnectorError::permanent(
                    VENDOR,
                    "a textcard task cannot gain times; create a new task",
                )),
            };
        }
        let schedule = match plan_task(patch) {
            Ok(TaskPlan::Schedule(mut b)) => b["schedule"].take(),
            // A partial patch (no times / no summary): send the fields as given.
            _ => patch
                .get("schedule")
                .cloned()
                .unwrap_or_else(|| patch.clone()),
        };
        self.update_schedule(id, schedule).await
    }

    pub async fn get_task(&self, id: &str) -> Result<Option<Value>, ConnectorError> {
        if id.starts_with(TEXTCARD_PREFIX) {
            return Err(ConnectorError::permanent(
                VENDOR,
                "textcard tasks cannot be read back",
            ));
        }
        self.get_schedule(id).await
    }

    /// Deletes the schedule, or recalls the textcard.
    pub async fn delete_task(&self, id: &str) -> Result<(), ConnectorError> {
        match id.strip_prefix(TEXTCARD_PREFIX) {
            Some(msgid) => self.recall_message(msgid).await,
            None => self.delete_schedule(id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_with_times_become_schedules_and_others_textcards() {
        let t = json!({"summary":"周报","attendees":["a","b"],"end_time":1_700_003_600,
            "organizer":"a","remind_before_event_secs":900});
        let TaskPlan::Schedule(b) = plan_task(&t).unwrap() else {
            panic!()
        };
        assert_eq!(b["schedule"]["start_time"], 1_700_003_600 - DUE_SLOT_SECS);
        assert_eq!(
            b["schedule"]["attendees"],
            json!([{"userid":"a"},{"userid":"b"}])
        );
        assert_eq!(b["schedule"]["reminders"]["remind_before_event_secs"], 900);
        let TaskPlan::Textcard(m) =
            plan_task(&json!({"summary":"交报销","attendees":["a"]})).unwrap()
        else {
            panic!()
        };
        assert_eq!(m.msgtype, "textcard");
        assert_eq!(m.payload["url"], DEFAULT_TASK_URL);
        assert!(m.to_body(1).is_ok());
        assert!(plan_task(&json!({"summary":"x"})).is_err());
        assert!(plan_task(&json!({"attendees":["a"]})).is_err());
        assert!(plan_task(&json!({"summary":"x","start_time":5,"end_time":5})).is_err());
        let long = "长".repeat(100);
        let TaskPlan::Textcard(m) = plan_task(&json!({"summary":long,"attendees":["a"]})).unwrap()
        else {
            panic!()
        };
        assert!(m.payload["title"].as_str().unwrap().len() <= 128);
    }
}
