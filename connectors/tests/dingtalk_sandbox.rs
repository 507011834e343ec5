//! The DingTalk connector against the DingTalk sandbox, both in-process on 127.0.0.1.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
mod common;

use common::{JsonReply, Sandbox, fast_retry, find, org};
use huitong_connectors::capability::{
    Entity, FileKind, Files, ListQuery, ReadEntities, WriteEntities,
};
use huitong_connectors::dingtalk::client::DingTalkClient;
use huitong_connectors::dingtalk::config::Limits;
use huitong_connectors::dingtalk::message::Recipients;
use huitong_connectors::dingtalk::robot::CustomRobot;
use huitong_connectors::dingtalk::sandbox::SandboxOptions;
use huitong_connectors::dingtalk::{DingTalkConfig, DingTalkConnector};
use huitong_connectors::limit::RateLimit;
use huitong_connectors::sandbox::{FaultSpec, RateScale};
use huitong_connectors::{ConnectorError, ErrorClass};
use serde_json::{Value, json};

/// The test app's connector config: agent 100001, fast retries.
impl Sandbox {
    fn config(&self) -> DingTalkConfig {
        let mut cfg =
            DingTalkConfig::for_sandbox(self.base.clone(), "dingapp", "s3cret".to_string().into());
        cfg.agent_id = Some(100001);
        cfg.transport.retry = fast_retry(50, 12);
        cfg
    }

    fn client(&self) -> DingTalkClient {
        DingTalkClient::new(self.config()).unwrap()
    }
}

fn opts(fixture: &str) -> SandboxOptions {
    SandboxOptions::new(org(fixture), "dingapp", "s3cret")
}

#[tokio::test]
async fn reads_the_medium_org_completely_page_by_page() {
    let sb = Sandbox::start(opts("medium-org.json")).await;
    let mut cfg = sb.config();
    cfg.page_size = 7;
    let c = DingTalkClient::new(cfg).unwrap();
    let users: Vec<Value> = c.all_users().try_collect().await.unwrap();
    let snap = sb.get("/_sandbox/org").await;
    assert_eq!(users.len(), 300);
    let got: HashSet<&str> = users
        .iter()
        .map(|u| u["userid"].as_str().unwrap())
        .collect();
    let want: HashSet<&str> = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["dingtalk"]["userid"].as_str().unwrap())
        .collect();
    assert_eq!(got, want);
    // DingTalk's shapes: 11-digit mobile, job_number, numeric dept ids, unionid.
    let u0 = users.iter().find(|u| u["userid"] == "u0").unwrap();
    let s0 = find(&snap["users"], "key", "u0").unwrap();
    assert_eq!(u0["mobile"], s0["mobile"]);
    assert_eq!(u0["job_number"], "E000000");
    assert!(u0["unionid"].as_str().unwrap().starts_with("UN"));
    assert!(u0["dept_id_list"][0].is_i64());

    let depts: Vec<Value> = c.department_children(1, true).try_collect().await.unwrap();
    assert_eq!(depts.len(), 24);
    let ids: HashSet<i64> = depts
        .iter()
        .map(|d| d["dept_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 24);
    assert!(!ids.contains(&1));
    let direct: Vec<Value> = c.department_children(1, false).try_collect().await.unwrap();
    assert!(!direct.is_empty() && direct.len() < 24);
    assert!(direct.iter().all(|d| d["parent_id"] == 1));

    // One user/list call per page of 7 for each department (an empty one still costs a call).
    let expected_pages = common::member_pages(&snap, 7);
    let calls = sb.get("/_sandbox/calls").await;
    assert_eq!(
        calls["calls"]["POST /topapi/v2/user/list"].as_u64(),
        Some(expected_pages)
    );
    assert!(expected_pages > 25, "some department spans several pages");
    // listsub walked breadth-first: once for root and once per department found (twice for
    // the second listing of root above, plus once for the direct listing).
    assert_eq!(
        calls["calls"]["POST /topapi/v2/department/listsub"]
            .as_u64()
            .unwrap(),
        25 + 25 + 1
    );
    assert_eq!(c.token_fetches(), 1);
}

#[tokio::test]
async fn trait_view_get_and_not_found() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = DingTalkConnector::new(sb.config()).unwrap();
    let users: Vec<Value> = common::list_all(&conn, Entity::User, ListQuery::default()).await;
    assert_eq!(users.len(), 20);
    let root_members: Vec<Value> = common::list_all(&conn, Entity::User, common::under("1")).await;
    assert_eq!(
        root_members.len(),
        common::root_member_count(&sb.get("/_sandbox/org").await)
    );
    let got = conn.get(Entity::User, "u3").await.unwrap().unwrap();
    assert_eq!(got["userid"], "u3");
    assert!(got["leader_in_dept"].is_array());
    assert_eq!(conn.get(Entity::User, "nobody").await.unwrap(), None);
    assert_eq!(conn.get(Entity::Department, "999999").await.unwrap(), None);
    let root = conn.get(Entity::Department, "1").await.unwrap().unwrap();
    assert_eq!(root["dept_id"], 1);
    assert!(root.get("parent_id").is_none());
    let e = conn
        .get(Entity::Department, "not-a-number")
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
}

/// A create repeated after a lost reply or a crash finds the first record: a department by its
/// name under its parent, a user by the key taken as its userid. A delete repeated finds the
/// record gone, and that is done.
#[tokio::test]
async fn repeated_creates_and_deletes_find_the_first_outcome() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = DingTalkConnector::new(sb.config()).unwrap();
    assert!(conn.keyed_creates(Entity::User) && conn.keyed_creates(Entity::Department));
    let d1 = common::create_twice(
        &conn,
        Entity::Department,
        json!({"name": "一次", "parent_id": 1, "order": 9}),
        "k1",
    )
    .await;
    let d: i64 = d1.parse().unwrap();
    let user = json!({"name": "一次", "mobile": "13900000011", "dept_id_list": [d]});
    let u = common::create_twice(&conn, Entity::User, user, "p-once").await;
    assert_eq!(u, "p-once");
    let snap = sb.get("/_sandbox/org").await;
    assert_eq!(snap["departments"].as_array().unwrap().len(), 4);
    assert_eq!(snap["users"].as_array().unwrap().len(), 21);

    common::delete_twice(&conn, Entity::User, "p-once").await;
    common::delete_twice(&conn, Entity::Department, &d1).await;
    let snap = sb.get("/_sandbox/org").await;
    assert_eq!(snap["departments"].as_array().unwrap().len(), 3);
    assert_eq!(snap["users"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn create_update_delete_through_the_connector() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = DingTalkConnector::new(sb.config()).unwrap();

    let dept_id = conn
        .create(
            Entity::Department,
            json!({"name": "新部门", "parent_id": 1, "order": 7}),
        )
        .await
        .unwrap();
    let dept_n: i64 = dept_id.parse().unwrap();
    assert!(dept_n > 1);
    // A JSON array for dept_id_list goes out as DingTalk's comma string.
    let user_id = conn
        .create(
            Entity::User,
            json!({"userid": "zhangsan", "name": "张三", "mobile": "13800000001",
                   "email": "t@example.cn", "dept_id_list": [dept_n, 1], "job_number": "E9",
                   "title": "工程师", "hired_date": 1700000000000i64, "work_place": "杭州"}),
        )
        .await
        .unwrap();
    assert_eq!(user_id, "zhangsan");
    let created = conn.client.get_user("zhangsan").await.unwrap().unwrap();
    assert_eq!(created["dept_id_list"], json!([dept_n, 1]));
    assert_eq!(created["work_place"], "杭州");

    let snap = sb.get("/_sandbox/org").await;
    let d = find(&snap["departments"], "dept_id", dept_n).unwrap();
    assert_eq!(d["name"], "新部门");
    assert_eq!(d["order"], 7);
    let dkey = d["key"].as_str().unwrap().to_string();
    let u = find(&snap["users"], "key", "zhangsan").unwrap();
    assert_eq!(u["mobile"], "13800000001");
    assert_eq!(u["employee_no"], "E9");
    assert_eq!(u["hired_at"], "2023-11-15");
    assert_eq!(u["departments"][0], dkey.as_str());

    // Duplicate userid and duplicate mobile are DingTalk errors, permanent.
    let e = conn
        .create(
            Entity::User,
            json!({"userid": "zhangsan", "name": "X", "mobile": "13800000002", "dept_id_list": "1"}),
        )
        .await
        .unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Permanent, Some(60102)));
    let e = conn
        .create(
            Entity::User,
            json!({"name": "Y", "mobile": "13800000001", "dept_id_list": "1"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(60104));

    assert_eq!(
        conn.update(
            Entity::User,
            "zhangsan",
            json!({"name": "改名", "title": "经理"})
        )
        .await
        .unwrap(),
        "zhangsan"
    );
    conn.update(
        Entity::Department,
        &dept_id,
        json!({"name": "更名部门", "dept_manager_userid_list": ["zhangsan"]}),
    )
    .await
    .unwrap();
    let snap = sb.get("/_sandbox/org").await;
    let u = find(&snap["users"], "key", "zhangsan").unwrap();
    assert_eq!(
        (u["name"].as_str(), u["title"].as_str()),
        (Some("改名"), Some("经理"))
    );
    let d = find(&snap["departments"], "key", dkey.as_str()).unwrap();
    assert_eq!(d["name"], "更名部门");
    assert_eq!(d["leaders"], json!(["zhangsan"]));
    // Moving a department under itself is a cycle.
    let e = conn
        .update(Entity::Department, &dept_id, json!({"parent_id": dept_n}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(60010));

    // A department with members cannot go; after the user does, it can. Root never can.
    let e = conn.delete(Entity::Department, &dept_id).await.unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Permanent, Some(60005)));
    conn.delete(Entity::User, "zhangsan").await.unwrap();
    conn.delete(Entity::Department, &dept_id).await.unwrap();
    assert_eq!(
        conn.delete(Entity::Department, "1")
            .await
            .unwrap_err()
            .code(),
        Some(60007)
    );
    let snap = sb.get("/_sandbox/org").await;
    assert_eq!(snap["users"].as_array().unwrap().len(), 20);
    assert!(find(&snap["departments"], "key", dkey.as_str()).is_none());

    // Each change emitted DingTalk's event (no event URL: not-configured).
    let events = sb.get("/_sandbox/events").await;
    let types: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["EventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "org_dept_create",
            "user_add_org",
            "user_modify_org",
            "org_dept_modify",
            "user_leave_org",
            "org_dept_remove"
        ]
    );
    let first = &events["events"][1];
    assert_eq!(first["event"]["userId"], json!(["zhangsan"]));
    assert_eq!(first["delivery"], "not-configured");
}

#[tokio::test]
async fn form_encoded_old_api_bodies_are_accepted() {
    // DingTalk's doc curls post form bodies to oapi; the sandbox accepts both.
    let sb = Sandbox::start(opts("small-org.json")).await;
    let http = reqwest::Client::new();
    let t: Value = http
        .get(format!(
            "{}/gettoken?appkey=dingapp&appsecret=s3cret",
            sb.base
        ))
        .json_reply()
        .await;
    assert_eq!(t["errcode"], 0);
    let token = t["access_token"].as_str().unwrap();
    let r: Value = http
        .post(format!(
            "{}/topapi/v2/user/get?access_token={token}",
            sb.base
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("userid=u1")
        .json_reply()
        .await;
    assert_eq!(
        (r["errcode"].as_i64(), r["result"]["userid"].as_str()),
        (Some(0), Some("u1"))
    );
    // Missing and wrong tokens: 41001 / 40014, still HTTP 200.
    let r = http
        .post(format!("{}/topapi/v2/user/get", sb.base))
        .json(&json!({"userid": "u1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["errcode"], 41001);
    let r: Value = http
        .post(format!("{}/topapi/v2/user/get?access_token=nope", sb.base))
        .json(&json!({"userid": "u1"}))
        .json_reply()
        .await;
    assert_eq!(r["errcode"], 40014);
    // Bad credentials on the v1.0 token call: HTTP 400 invalidClientIdOrSecret.
    let r = http
        .post(format!("{}/v1.0/oauth2/accessToken", sb.base))
        .json(&json!({"appKey": "dingapp", "appSecret": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "invalidClientIdOrSecret"
    );
}

#[tokio::test]
async fn expired_tokens_are_refetched_once_and_the_same_token_is_reissued_while_valid() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let c = sb.client();
    assert!(c.get_user("u1").await.unwrap().is_some());
    assert_eq!(c.token_fetches(), 1);
    assert_eq!(sb.expire_tokens().await, 204);
    // Old generation (40014) and new generation (InvalidAuthentication) both recover.
    assert!(c.get_user("u1").await.unwrap().is_some());
    assert_eq!(c.token_fetches(), 2);
    assert_eq!(sb.expire_tokens().await, 204);
    let mut cfg = sb.config();
    cfg.operator_union_id = Some(union_of(&sb, "u1").await);
    let c2 = DingTalkClient::new(cfg).unwrap();
    let tasks: Vec<Value> = c2
        .list_tasks(c2.operator().unwrap(), json!({}))
        .try_collect()
        .await
        .unwrap();
    assert!(tasks.is_empty());
    // A second client inside the validity window gets the same token (DingTalk re-issues it).
    let c3 = sb.client();
    assert!(c3.get_user("u2").await.unwrap().is_some());
    assert!(c2.get_user("u2").await.unwrap().is_some());
    assert_eq!(c2.token_fetches(), 1);

    // Wrong credentials: permanent, not retried forever.
    let mut bad = sb.config();
    bad.app_secret = "wrong".to_string().into();
    let e = DingTalkClient::new(bad)
        .unwrap()
        .get_user("u1")
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
}

async fn union_of(sb: &Sandbox, key: &str) -> String {
    let snap = sb.get("/_sandbox/org").await;
    find(&snap["users"], "key", key).unwrap()["dingtalk"]["unionid"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn survives_90018_bursts_5xx_and_token_faults() {
    let mut o = opts("medium-org.json");
    o.faults = FaultSpec::parse("429=0.05x4,5xx=0.1,token=0.03,seed=7").unwrap();
    let sb = Sandbox::start(o).await;
    let c = sb.client();
    let users: Vec<Value> = c.all_users().try_collect().await.unwrap();
    assert_eq!(users.len(), 300);
    let calls = sb.get("/_sandbox/calls").await;
    for f in ["429", "5xx", "token"] {
        assert!(
            calls["faults"][f].as_u64().unwrap_or(0) > 0,
            "no {f} fault in {calls}"
        );
    }
    assert!(c.token_fetches() > 1);
}

#[tokio::test]
async fn the_20_per_second_limit_answers_90018_and_the_client_recovers() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    // No client-side limiter: the sandbox's 20/s per API must push back.
    let mut cfg = sb.config();
    // Honour the vendor's 1 s wait.
    cfg.transport.retry.max_delay = Duration::from_secs(2);
    cfg.limits = Limits {
        per_api: RateLimit::UNLIMITED,
        robot_webhook: RateLimit::UNLIMITED,
    };
    let c = Arc::new(DingTalkClient::new(cfg).unwrap());
    let mut handles = Vec::new();
    for i in 0..60 {
        let c = c.clone();
        handles.push(tokio::spawn(async move {
            c.get_user(&format!("u{}", i % 20)).await
        }));
    }
    for h in handles {
        assert!(h.await.unwrap().unwrap().is_some());
    }
    let calls = sb.get("/_sandbox/calls").await;
    assert!(
        calls["faults"]["rate-limit"].as_u64().unwrap_or(0) > 0,
        "{calls}"
    );

    // Without retries the caller sees the classification: RateLimited, code 90018, wait 1 s.
    let mut cfg = sb.config();
    cfg.limits.per_api = RateLimit::UNLIMITED;
    cfg.transport.retry.max_retries = 0;
    let c = Arc::new(DingTalkClient::new(cfg).unwrap());
    let mut handles = Vec::new();
    for _ in 0..40 {
        let c = c.clone();
        handles.push(tokio::spawn(async move { c.get_user("u1").await }));
    }
    let mut limited = 0;
    for h in handles {
        if let Err(e) = h.await.unwrap() {
            assert_eq!(e.class(), ErrorClass::RateLimited);
            assert_eq!(e.code(), Some(90018));
            assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
            limited += 1;
        }
    }
    assert!(limited > 0);
}

#[tokio::test]
async fn todo_lifecycle_with_next_token_paging() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let u1 = union_of(&sb, "u1").await;
    let u2 = union_of(&sb, "u2").await;
    let mut cfg = sb.config();
    cfg.operator_union_id = Some(u1.clone());
    let conn = DingTalkConnector::new(cfg).unwrap();
    let c = &conn.client;
    let mut ids = Vec::new();
    for i in 0..23 {
        let id = conn
            .create(
                Entity::Task,
                json!({"subject": format!("待办 {i}"), "executorIds": [u1, u2], "priority": 20,
                       "dueTime": 1800000000000i64}),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let all: Vec<Value> = common::list_all(&conn, Entity::Task, ListQuery::default()).await;
    assert_eq!(all.len(), 23);
    let calls = sb.get("/_sandbox/calls").await;
    // 10 per page: three pages.
    assert_eq!(
        calls["calls"]["POST /v1.0/todo/users/{union_id}/org/tasks/query"],
        3
    );
    let t = conn.get(Entity::Task, &ids[0]).await.unwrap().unwrap();
    assert_eq!(t["subject"], "待办 0");
    assert_eq!(t["executorIds"], json!([u1, u2]));
    conn.update(
        Entity::Task,
        &ids[0],
        json!({"subject": "改过", "description": "d"}),
    )
    .await
    .unwrap();
    // Per-executor status: both done -> the task is done.
    c.set_executor_status(&u1, &ids[1], &u1, &[(u1.clone(), true)])
        .await
        .unwrap();
    assert_eq!(
        c.get_task(&u1, &ids[1]).await.unwrap().unwrap()["done"],
        false
    );
    c.set_executor_status(&u1, &ids[1], &u1, &[(u2.clone(), true)])
        .await
        .unwrap();
    assert_eq!(
        c.get_task(&u1, &ids[1]).await.unwrap().unwrap()["done"],
        true
    );
    let done: Vec<Value> = c
        .list_tasks(&u1, json!({"isDone": true}))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["taskId"], ids[1].as_str());
    // The executor sees it too.
    let seen_by_u2: Vec<Value> = c
        .list_tasks(&u2, json!({"roleTypes": [["executor"]]}))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(seen_by_u2.len(), 23);
    let t = c.get_task(&u1, &ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (t["subject"].as_str(), t["description"].as_str()),
        (Some("改过"), Some("d"))
    );
    conn.delete(Entity::Task, &ids[0]).await.unwrap();
    assert_eq!(conn.get(Entity::Task, &ids[0]).await.unwrap(), None);
    // Unknown unionId and a missing subject are v1.0 400s.
    let e = c
        .create_task("UNnobody", &u1, json!({"subject": "x"}))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(e.message().contains("todo.taskCreate.paramError"), "{e}");
    assert!(c.create_task(&u1, &u1, json!({})).await.is_err());
}

#[tokio::test]
async fn messages_work_notifications_robots_and_media() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = DingTalkConnector::new(sb.config()).unwrap();
    let c = &conn.client;
    let task = c
        .send_work_notification(
            &Recipients::Users(vec!["u1".into(), "u2".into()]),
            json!({"msgtype": "text", "text": {"content": "你好"}}),
        )
        .await
        .unwrap();
    assert!(task > 0);
    let r = c.work_notification_result(task).await.unwrap();
    assert_eq!(r["unread_user_id_list"], json!(["u1", "u2"]));
    // Through the trait: a department (with its sub-departments).
    let id = conn
        .create(
            Entity::Message,
            json!({"dept_id_list": "1", "msg": {"msgtype": "markdown", "markdown": {"title": "t", "text": "# hi"}}}),
        )
        .await
        .unwrap();
    assert!(id.parse::<i64>().is_ok());
    // App robot: group and one-to-one (msgParam goes out as a JSON string).
    let pqk = conn
        .create(
            Entity::Message,
            json!({"msgKey": "sampleText", "msgParam": {"content": "群消息"}, "openConversationId": "cidXYZ"}),
        )
        .await
        .unwrap();
    assert!(!pqk.is_empty());
    let r = c
        .robot_oto_send(
            &["u3".to_string(), "ghost".to_string()],
            "sampleMarkdown",
            &json!({"title": "t", "text": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(r["invalidStaffIdList"], json!(["ghost"]));
    let e = c
        .robot_group_send("cid", "noSuchKey", &json!({}))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("invalidParameter.msgKey.invalid"),
        "{e}"
    );

    // Media upload (multipart) -> media_id.
    let media = conn
        .upload(
            FileKind::Image,
            "a.png",
            Bytes::from_static(b"\x89PNG fake"),
        )
        .await
        .unwrap();
    assert!(media.starts_with("@lAD"));
    assert!(conn.download(&media).await.is_err());

    let msgs = sb.get("/_sandbox/messages").await;
    let via: Vec<&str> = msgs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["via"].as_str().unwrap())
        .collect();
    assert_eq!(
        via,
        [
            "work_notification",
            "work_notification",
            "robot_group",
            "robot_oto"
        ]
    );
    let dept_msg = &msgs["messages"][1];
    assert_eq!(dept_msg["recipients"].as_array().unwrap().len(), 20);
    assert_eq!(
        msgs["messages"][2]["msgParam"],
        json!({"content": "群消息"})
    );
    assert_eq!(msgs["messages"][3]["userIds"], json!(["u3"]));

    // No agent_id configured: refused before any call.
    let mut cfg = sb.config();
    cfg.agent_id = None;
    let e = DingTalkClient::new(cfg)
        .unwrap()
        .send_work_notification(
            &Recipients::All,
            json!({"msgtype": "text", "text": {"content": "x"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn custom_robot_webhook_signing_and_its_20_per_minute_limit() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let url = format!("{}/robot/send?access_token=sandbox-robot", sb.base);
    let no_retry = fast_retry(1, 0);
    let robot = CustomRobot::new(
        url.clone().into(),
        Some("SECsandboxrobotsecret".to_string().into()),
    )
    .unwrap()
    .with_retry(no_retry.clone());
    let text =
        json!({"msgtype": "text", "text": {"content": "部署完成"}, "at": {"isAtAll": false}});
    robot.send(&text).await.unwrap();
    // A wrong secret fails the signature check (310000), permanently.
    let bad = CustomRobot::new(url.clone().into(), Some("SECwrong".to_string().into()))
        .unwrap()
        .with_retry(no_retry.clone());
    let e = bad.send(&text).await.unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Permanent, Some(310000)));
    // Unsigned when the robot requires a signature: refused too.
    let unsigned = CustomRobot::new(url.clone().into(), None)
        .unwrap()
        .with_retry(no_retry.clone());
    assert_eq!(unsigned.send(&text).await.unwrap_err().code(), Some(310000));
    // The sandbox allows 20 per minute per robot: 19 more pass, the 21st is throttled (410100).
    for _ in 0..19 {
        let r: Result<Value, ConnectorError> = robot.send(&text).await;
        r.unwrap();
    }
    // This client's own limiter would hold a 21st send for a minute; another client of the
    // same robot (another process) sends it at once and is refused by the vendor.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), robot.send(&text))
            .await
            .is_err(),
        "the client waits instead of sending a 21st message within the minute"
    );
    let other = CustomRobot::new(
        url.clone().into(),
        Some("SECsandboxrobotsecret".to_string().into()),
    )
    .unwrap()
    .with_retry(no_retry.clone());
    let e = other.send(&text).await.unwrap_err();
    assert_eq!(
        (e.class(), e.code()),
        (ErrorClass::RateLimited, Some(410100))
    );
    let msgs = sb.get("/_sandbox/messages").await;
    assert_eq!(msgs["messages"].as_array().unwrap().len(), 20);
    assert_eq!(msgs["messages"][0]["content"]["content"], "部署完成");
}

#[tokio::test]
async fn enforced_limit_answers_90018_and_403_over_20_per_second_then_lets_calls_through() {
    let mut o = opts("small-org.json");
    o.enforce_rate_limits = true;
    // 20/s per API scaled to 2/s.
    o.rate_limit_scale = RateScale {
        calls: 0.1,
        time: 1.0,
    };
    let sb = Sandbox::start(o).await;
    let http = reqwest::Client::new();
    let v: Value = http
        .get(format!(
            "{}/gettoken?appkey=dingapp&appsecret=s3cret",
            sb.base
        ))
        .json_reply()
        .await;
    let token = v["access_token"].as_str().unwrap().to_string();
    let old = || {
        let (http, token, base) = (http.clone(), token.clone(), sb.base.clone());
        async move {
            http.post(format!("{base}/topapi/v2/user/get?access_token={token}"))
                .json(&json!({"userid": "u0"}))
                .json_reply()
                .await
        }
    };
    assert_eq!(old().await["errcode"], 0);
    assert_eq!(old().await["errcode"], 0);
    assert_eq!(old().await["errcode"], 90018);

    // v1.0: HTTP 403 with the QPS code; its own window.
    let snap = sb.get("/_sandbox/org").await;
    let union = snap["users"][0]["dingtalk"]["unionid"]
        .as_str()
        .unwrap()
        .to_string();
    let new = || {
        let (http, token, base, union) =
            (http.clone(), token.clone(), sb.base.clone(), union.clone());
        async move {
            let r = http
                .post(format!("{base}/v1.0/todo/users/{union}/tasks/list"))
                .header("x-acs-dingtalk-access-token", token)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_ne!(new().await.0, 403);
    assert_ne!(new().await.0, 403);
    let (status, v) = new().await;
    assert_eq!(status, 403);
    assert_eq!(v["code"], "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(old().await["errcode"], 0);
    assert_ne!(new().await.0, 403);
    let calls = sb.get("/_sandbox/calls").await;
    assert_eq!(
        calls["windows"]["POST /topapi/v2/user/get"]["rate_limited"], 1,
        "{calls}"
    );
    assert_eq!(
        calls["windows"]["POST /topapi/v2/user/get"]["count"], 4,
        "{calls}"
    );
    assert_eq!(
        calls["rate_limited"]["POST /v1.0/todo/users/{union_id}/tasks/list"], 1,
        "{calls}"
    );
}

/// `department/listsub` is terse (no order, no managers); `complete: true` reads each
/// department in full, one `department/get` per department.
#[tokio::test]
async fn complete_department_listing_reads_each_department() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = DingTalkConnector::new(sb.config()).unwrap();
    let terse: Vec<Value> = common::list_all(
        &conn,
        Entity::Department,
        ListQuery {
            recursive: true,
            ..Default::default()
        },
    )
    .await;
    assert!(!terse.is_empty());
    assert!(terse.iter().all(|d| d.get("order").is_none()), "{terse:?}");
    let full: Vec<Value> = common::list_all(
        &conn,
        Entity::Department,
        ListQuery {
            recursive: true,
            complete: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(full.len(), terse.len());
    assert!(full.iter().all(|d| d.get("order").is_some()), "{full:?}");
    let ids =
        |v: &[Value]| -> Vec<i64> { v.iter().map(|d| d["dept_id"].as_i64().unwrap()).collect() };
    assert_eq!(ids(&full), ids(&terse), "same departments, same order");
    let calls = sb.get("/_sandbox/calls").await;
    assert_eq!(
        calls["calls"]["POST /topapi/v2/department/get"].as_u64(),
        Some(full.len() as u64)
    );
}
