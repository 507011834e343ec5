//! The WeCom connector against the WeCom sandbox, both in-process on 127.0.0.1. Final state is
//! asserted through `/_sandbox/org`.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
mod common;

use common::{JsonReply, Sandbox, fast_retry, find, org};
use huitong_connectors::capability::{
    Entity, FileKind, Files, ListQuery, ReadEntities, WriteEntities,
};
use huitong_connectors::sandbox::{FaultSpec, RateScale};
use huitong_connectors::wecom::client::WecomClient;
use huitong_connectors::wecom::contact::{UserStatus, UserView};
use huitong_connectors::wecom::message::OutgoingMessage;
use huitong_connectors::wecom::sandbox::{SandboxOptions, serve};
use huitong_connectors::wecom::schedule::TEXTCARD_PREFIX;
use huitong_connectors::wecom::{WecomConfig, WecomConnector};
use huitong_connectors::{ConnectorError, ErrorClass};
use serde_json::{Value, json};

const CORP: &str = "ww0123456789abcdef";
const SECRET: &str = "app-secret-1";
const AGENT: i64 = 1000002;

fn opts(fixture: &str) -> SandboxOptions {
    SandboxOptions::new(org(fixture), CORP, SECRET, AGENT)
}

/// The test app's connector config, with fast retries.
impl Sandbox {
    fn config(&self) -> WecomConfig {
        let mut cfg = WecomConfig::new(self.base.clone(), CORP, SECRET.to_string().into(), AGENT);
        cfg.transport.retry = fast_retry(20, 12);
        cfg
    }

    fn client(&self) -> WecomClient {
        WecomClient::new(self.config()).unwrap()
    }
}

fn snapshot_userids(snap: &Value) -> HashSet<String> {
    snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["wecom"]["userid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn reads_the_medium_org_completely_cursor_by_cursor() {
    let sb = Sandbox::start(opts("medium-org.json")).await;
    let mut cfg = sb.config();
    cfg.list_page_size = 37;
    let c = WecomClient::new(cfg).unwrap();
    let users: Vec<Value> = c.all_users().try_collect().await.unwrap();
    let snap = sb.get("/_sandbox/org").await;
    assert_eq!(users.len(), 300);
    let got: HashSet<String> = users
        .iter()
        .map(|u| u["userid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, snapshot_userids(&snap));

    // WeCom's shapes: gender as a string, status 1/2, leadership parallel to department.
    let u0 = users.iter().find(|u| u["userid"] == "u0").unwrap();
    assert_eq!(u0["gender"], "2");
    assert_eq!(u0["mobile"], "15643835017");
    assert_eq!(u0["position"], "工程师");
    let v = UserView::from_value(u0).unwrap();
    assert_eq!(v.status, Some(UserStatus::Active));
    assert_eq!(v.departments, vec![2]);
    assert_eq!(v.main_department, Some(2));
    assert_eq!(v.leads, vec![2], "u0 leads 销售部 (d1 = id 2)");
    assert_eq!(
        v.direct_leader,
        vec!["u17".to_string()],
        "the root's leader"
    );
    assert_eq!(u0["extattr"]["attrs"][0]["text"]["value"], "E000000");
    let inactive = users
        .iter()
        .filter(|u| UserView::from_value(u).unwrap().status == Some(UserStatus::Disabled))
        .count();
    assert_eq!(inactive, 4);

    // One list_id call per page of 37 rows (316 user-department rows), one user/get per user.
    assert_eq!(
        sb.calls("POST /cgi-bin/user/list_id").await,
        316u64.div_ceil(37)
    );
    assert_eq!(sb.calls("GET /cgi-bin/user/get").await, 300);
    assert_eq!(c.token_fetches(), 1);
    assert_eq!(sb.calls("GET /cgi-bin/gettoken").await, 1);

    // Departments: all 25 (root 1 included, parentid 0), or a subtree.
    let depts: Vec<Value> = c.departments(None, true).try_collect().await.unwrap();
    assert_eq!(depts.len(), 25);
    let root = depts.iter().find(|d| d["id"] == 1).unwrap();
    assert_eq!(root["parentid"], 0);
    assert_eq!(root["name"], "总部");
    let simple = c.simplelist_departments(None).await.unwrap();
    assert_eq!(simple.len(), 25);
    let direct: Vec<Value> = c.departments(Some(1), false).try_collect().await.unwrap();
    assert!(direct.iter().all(|d| d["parentid"] == 1));
    let all_under_root: Vec<Value> = c.departments(Some(1), true).try_collect().await.unwrap();
    assert_eq!(all_under_root.len(), 24);
}

#[tokio::test]
async fn the_trait_view_lists_departments_and_members() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = WecomConnector::new(sb.config()).unwrap();
    let users: Vec<Value> = common::list_all(&conn, Entity::User, ListQuery::default()).await;
    assert_eq!(users.len(), 20);
    let snap = sb.get("/_sandbox/org").await;
    let in_d2: HashSet<String> = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["departments"].as_array().unwrap().contains(&json!("d2")))
        .map(|u| u["key"].as_str().unwrap().to_string())
        .collect();
    let d2_id = snap["departments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "d2")
        .unwrap()["wecom"]["id"]
        .as_i64()
        .unwrap();
    let members: Vec<Value> =
        common::list_all(&conn, Entity::User, common::under(d2_id.to_string())).await;
    let got: HashSet<String> = members
        .iter()
        .map(|u| u["userid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, in_d2);
    // The one-call listing agrees.
    let listed = conn
        .client
        .list_department_users(d2_id, false)
        .await
        .unwrap();
    assert_eq!(listed.len(), in_d2.len());
    let depts: Vec<Value> = common::list_all(&conn, Entity::Department, ListQuery::default()).await;
    assert_eq!(depts.len(), 3);
    assert!(conn.get(Entity::User, "u0").await.unwrap().is_some());
    assert!(conn.get(Entity::User, "nobody").await.unwrap().is_none());
    assert!(conn.get(Entity::Department, "999").await.unwrap().is_none());
    assert_eq!(
        conn.get(Entity::Department, "1").await.unwrap().unwrap()["name"],
        "总部"
    );
    let bad = conn.get(Entity::Department, "d2").await.unwrap_err();
    assert_eq!(bad.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn create_update_delete_through_the_connector() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = WecomConnector::new(sb.config()).unwrap();

    let dept = conn
        .create(
            Entity::Department,
            json!({"name": "研发部", "parentid": 1, "order": 5}),
        )
        .await
        .unwrap();
    let dept_id: i64 = dept.parse().unwrap();
    assert!(dept_id > 1);
    let uid = conn
        .create(
            Entity::User,
            json!({"userid": "zhangsan", "name": "张三", "mobile": "13800000001",
                "department": [dept_id, 1], "is_leader_in_dept": [1, 0], "position": "架构师",
                "gender": "1", "email": "zs@example.cn",
                "extattr": {"attrs": [{"type": 0, "name": "工号", "text": {"value": "E9"}}]}}),
        )
        .await
        .unwrap();
    assert_eq!(uid, "zhangsan");
    let u = sb.user("zhangsan").await.unwrap();
    assert_eq!(u["name"], "张三");
    assert_eq!(u["title"], "架构师");
    assert_eq!(u["gender"], "male");
    assert_eq!(u["employee_no"], "E9");
    assert_eq!(u["wecom"]["department"], json!([dept_id, 1]));
    assert_eq!(
        u["wecom"]["status"], 4,
        "API-created members are not activated yet"
    );
    let snap = sb.get("/_sandbox/org").await;
    let d = find(&snap["departments"], "id", dept_id).unwrap().clone();
    assert_eq!(d["name"], "研发部");
    assert_eq!(d["leaders"], json!(["zhangsan"]));
    // user/get renders it back the WeCom way.
    let got = conn.get(Entity::User, "ZhangSan").await.unwrap().unwrap();
    assert_eq!(got["is_leader_in_dept"], json!([1, 0]));
    assert_eq!(got["main_department"], dept_id);

    // Update: disable, move, rename department.
    conn.update(
        Entity::User,
        "zhangsan",
        json!({"enable": 0, "position": "CTO", "main_department": 1}),
    )
    .await
    .unwrap();
    let u = sb.user("zhangsan").await.unwrap();
    assert_eq!(u["wecom"]["status"], 2);
    assert_eq!(u["active"], false);
    assert_eq!(u["title"], "CTO");
    assert_eq!(u["wecom"]["main_department"], 1);
    conn.update(Entity::Department, &dept, json!({"name": "研发中心"}))
        .await
        .unwrap();
    assert_eq!(
        conn.get(Entity::Department, &dept).await.unwrap().unwrap()["name"],
        "研发中心"
    );

    // A department with members cannot go (60005); the root never (60007).
    let e = conn.delete(Entity::Department, &dept).await.unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Permanent, Some(60005)));
    let e = conn.delete(Entity::Department, "1").await.unwrap_err();
    assert_eq!(e.code(), Some(60007));
    conn.delete(Entity::User, "zhangsan").await.unwrap();
    conn.delete(Entity::Department, &dept).await.unwrap();
    assert!(sb.user("zhangsan").await.is_none());
    let snap = sb.get("/_sandbox/org").await;
    assert_eq!(snap["departments"].as_array().unwrap().len(), 3);
    assert_eq!(snap["users"].as_array().unwrap().len(), 20);
}

/// A create repeated after a lost reply or a crash finds the first record: a department by its
/// name under its parent, a member by the chosen userid with the same mobile and email. A
/// delete repeated finds the record gone, and that is done.
#[tokio::test]
async fn repeated_creates_and_deletes_find_the_first_outcome() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = WecomConnector::new(sb.config()).unwrap();
    assert!(conn.keyed_creates(Entity::User) && conn.keyed_creates(Entity::Department));
    let d1 = common::create_twice(
        &conn,
        Entity::Department,
        json!({"name": "一次", "parentid": 1, "order": 9}),
        "k1",
    )
    .await;
    let d: i64 = d1.parse().unwrap();
    let member = json!({"userid": "once", "name": "一次", "mobile": "13900000011",
        "email": "once@example.cn", "department": [d]});
    let u = common::create_twice(&conn, Entity::User, member, "k2").await;
    assert_eq!(u, "once");
    let snap = sb.get("/_sandbox/org").await;
    assert_eq!(snap["departments"].as_array().unwrap().len(), 4);
    assert_eq!(snap["users"].as_array().unwrap().len(), 21);
    // Someone else under that userid is not ours: the vendor's refusal stands.
    let other =
        json!({"userid": "once", "name": "别人", "mobile": "13900000012", "department": [d]});
    let e = conn
        .create_keyed(Entity::User, other, "k3")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(60102));

    common::delete_twice(&conn, Entity::User, "once").await;
    common::delete_twice(&conn, Entity::Department, &d1).await;
    let snap = sb.get("/_sandbox/org").await;
    assert_eq!(snap["departments"].as_array().unwrap().len(), 3);
    assert_eq!(snap["users"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn write_errors_carry_wecom_codes() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let c = sb.client();
    let code = |r: Result<String, ConnectorError>| r.unwrap_err().code();
    assert_eq!(
        code(
            c.create_user(
                json!({"userid":"u0","name":"x","mobile":"13900000000","department":[1]})
            )
            .await
        ),
        Some(60102)
    );
    assert_eq!(
        code(
            c.create_user(json!({"userid":"nocontact","name":"x","department":[1]}))
                .await
        ),
        Some(60129)
    );
    assert_eq!(
        code(
            c.create_user(
                json!({"userid":"baddept","name":"x","mobile":"13900000009","department":[99]})
            )
            .await
        ),
        Some(60123)
    );
    assert_eq!(
        code(c.create_user(json!({"userid":"lead","name":"x","mobile":"13900000008","department":[1,2],"is_leader_in_dept":[1]})).await),
        Some(60132)
    );
    assert_eq!(
        code(
            c.create_user(
                json!({"userid":"_bad","name":"x","mobile":"13900000007","department":[1]})
            )
            .await
        ),
        Some(40003)
    );
    let dup = c
        .create_department(json!({"name": "销售部", "parentid": 1}))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some(60008));
    let bad = c
        .create_department(json!({"name": "a|b", "parentid": 1}))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some(60009));
    let e = c
        .update_user("ghost", json!({"name": "x"}))
        .await
        .unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Permanent, Some(60111)));
    // Messages of errors are WeCom's shape.
    assert!(
        e.message()
            .contains("more info at https://open.work.weixin.qq.com/devtool/query?e=60111")
    );
}

#[tokio::test]
async fn token_is_cached_and_refetched_once_after_expiry() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let c = sb.client();
    for _ in 0..5 {
        c.get_user("u1").await.unwrap().unwrap();
    }
    assert_eq!(c.token_fetches(), 1);
    assert_eq!(sb.expire_tokens().await, 204);
    let users: Vec<Value> = c.all_users().try_collect().await.unwrap();
    assert_eq!(users.len(), 20);
    assert_eq!(c.token_fetches(), 2);
    assert_eq!(sb.calls("GET /cgi-bin/gettoken").await, 2);
}

#[tokio::test]
async fn survives_early_token_expiry_faults() {
    let mut o = opts("medium-org.json");
    o.faults = FaultSpec::parse("token=0.05,seed=7").unwrap();
    let sb = Sandbox::start(o).await;
    let c = sb.client();
    let users: Vec<Value> = c.all_users().try_collect().await.unwrap();
    assert_eq!(users.len(), 300);
    let calls = sb.get("/_sandbox/calls").await;
    let expired = calls["faults"]["token"].as_u64().unwrap();
    assert!(expired > 3, "{calls}");
    // At most one refetch per early expiry (concurrent calls share one), never one per call.
    assert!(
        c.token_fetches() > 1 && c.token_fetches() <= expired + 1,
        "{}",
        c.token_fetches()
    );
}

#[tokio::test]
async fn survives_45009_bursts_and_5xx() {
    let mut o = opts("medium-org.json");
    o.faults = FaultSpec::parse("429=0.05x4,5xx=0.05,seed=11").unwrap();
    let sb = Sandbox::start(o).await;
    let mut cfg = sb.config();
    cfg.list_page_size = 50;
    let c = WecomClient::new(cfg).unwrap();
    let users: Vec<Value> = c.all_users().try_collect().await.unwrap();
    assert_eq!(users.len(), 300);
    let got: HashSet<String> = users
        .iter()
        .map(|u| u["userid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, snapshot_userids(&sb.get("/_sandbox/org").await));
    // Writes go through too.
    for i in 0..10 {
        c.create_user(json!({"userid": format!("burst{i}"), "name": "b", "email": format!("b{i}@x.cn"), "department": [1]}))
            .await
            .unwrap();
    }
    let snap = sb.get("/_sandbox/org").await;
    assert_eq!(snap["users"].as_array().unwrap().len(), 310);
    let calls = sb.get("/_sandbox/calls").await;
    assert!(calls["faults"]["429"].as_u64().unwrap() >= 4, "{calls}");
    assert!(calls["faults"]["5xx"].as_u64().unwrap() >= 1, "{calls}");
}

#[tokio::test]
async fn per_api_minute_limit_answers_45009_and_is_classified() {
    let mut o = opts("small-org.json");
    o.api_per_minute = 3;
    let sb = Sandbox::start(o).await;
    let mut cfg = sb.config();
    cfg.transport.retry.max_retries = 0;
    let c = WecomClient::new(cfg).unwrap();
    for _ in 0..3 {
        c.get_user("u1").await.unwrap();
    }
    let e = c.get_user("u1").await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::RateLimited);
    assert_eq!(e.code(), Some(45009));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(60)));
    // Other APIs have their own quota.
    c.get_department(1).await.unwrap();
}

#[tokio::test]
async fn too_many_concurrent_calls_answer_45033() {
    let mut o = opts("small-org.json");
    o.max_concurrent = 2;
    o.faults = FaultSpec::parse("slow=1@300ms").unwrap();
    let sb = Sandbox::start(o).await;
    let mut cfg = sb.config();
    cfg.transport.retry.max_retries = 0;
    let c = WecomClient::new(cfg).unwrap();
    c.get_user("u1").await.unwrap(); // token first
    let results = futures_util::future::join_all((0..6).map(|_| c.get_user("u1"))).await;
    let limited: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!limited.is_empty());
    assert!(
        limited
            .iter()
            .all(|e| e.code() == Some(45033) && e.class() == ErrorClass::RateLimited)
    );
}

#[tokio::test]
async fn trimmed_fields_are_missing_not_errors() {
    let mut o = opts("small-org.json");
    o.trim_private_fields = true;
    let sb = Sandbox::start(o).await;
    let c = sb.client();
    let users: Vec<Value> = c.all_users().try_collect().await.unwrap();
    assert_eq!(users.len(), 20);
    for u in &users {
        assert!(u.get("mobile").is_none() && u.get("gender").is_none() && u.get("email").is_none());
        let v = UserView::from_value(u).unwrap();
        assert_eq!(v.mobile, None);
        assert!(v.main_department.is_some());
    }
}

#[tokio::test]
async fn restricted_reads_still_allow_list_id_and_simplelist() {
    let mut o = opts("small-org.json");
    o.restrict_reads = true;
    let sb = Sandbox::start(o).await;
    let c = sb.client();
    let rows: Vec<Value> = c.user_ids().try_collect().await.unwrap();
    assert_eq!(rows.len(), 20);
    assert_eq!(c.simplelist_departments(None).await.unwrap().len(), 3);
    let e = c.get_user("u0").await.unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Permanent, Some(48002)));
}

#[tokio::test]
async fn messages_report_invalid_recipients_and_dedupe() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = WecomConnector::new(sb.config()).unwrap();
    let c = &conn.client;

    let r = c
        .send_message(&OutgoingMessage::text(&["u0", "U1", "ghost"], "你好"))
        .await
        .unwrap();
    assert_eq!(r.invalid_users, vec!["ghost"]);
    assert!(!r.msgid.is_empty());
    let mut md = OutgoingMessage::markdown(&[], "**周报** 已提交");
    md.toparty = vec!["1".into(), "77".into()];
    md.safe = true;
    let r = c.send_message(&md).await.unwrap();
    assert_eq!(r.invalid_parties, vec!["77"]);
    // Every recipient invalid: 81013, permanent.
    let e = c
        .send_message(&OutgoingMessage::text(&["ghost"], "x"))
        .await
        .unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Permanent, Some(81013)));
    // Textcard through the trait, with the duplicate check: the resend is suppressed.
    let rec = json!({"touser": "u0", "msgtype": "textcard", "enable_duplicate_check": 1,
        "duplicate_check_interval": 600,
        "textcard": {"title": "审批", "description": "请处理", "url": "https://example.cn/a", "btntxt": "详情"}});
    let id1 = conn.create(Entity::Message, rec.clone()).await.unwrap();
    let id2 = conn.create(Entity::Message, rec).await.unwrap();
    assert_eq!(id1, id2);
    // Files and images: upload, send, download.
    let media = conn
        .upload(
            FileKind::File,
            "报告.pdf",
            Bytes::from_static(b"%PDF-1.4 hello"),
        )
        .await
        .unwrap();
    c.send_message(&OutgoingMessage::media(&["u0"], "file", &media))
        .await
        .unwrap();
    let img = conn
        .upload(
            FileKind::Image,
            "a.png",
            Bytes::from_static(b"\x89PNG fake image"),
        )
        .await
        .unwrap();
    c.send_message(&OutgoingMessage::media(&["u0"], "image", &img))
        .await
        .unwrap();
    assert_eq!(
        conn.download(&media).await.unwrap(),
        Bytes::from_static(b"%PDF-1.4 hello")
    );
    let e = c
        .send_message(&OutgoingMessage::media(&["u0"], "file", "nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(40007));
    // Too small (≤ 5 bytes) is refused before the call.
    assert!(
        conn.upload(FileKind::File, "x", Bytes::from_static(b"12345"))
            .await
            .is_err()
    );

    let msgs = sb.get("/_sandbox/messages").await["messages"]
        .as_array()
        .unwrap()
        .clone();
    let app_msgs: Vec<&Value> = msgs.iter().filter(|m| m["channel"] == "app").collect();
    assert_eq!(app_msgs.len(), 5, "{msgs:#?}");
    assert_eq!(app_msgs[0]["content"]["content"], "你好");
    assert_eq!(app_msgs[0]["delivered_to"], json!(["u0", "u1"]));
    assert_eq!(app_msgs[1]["safe"], true);
    assert_eq!(app_msgs[2]["msgtype"], "textcard");
    assert_eq!(app_msgs[3]["content"]["media_id"], media.as_str());
    assert_eq!(app_msgs[4]["msgtype"], "image");
}

#[tokio::test]
async fn members_over_the_per_minute_quota_are_dropped_silently() {
    let mut o = opts("small-org.json");
    o.messages_per_member_per_minute = 2;
    let sb = Sandbox::start(o).await;
    let c = sb.client();
    for i in 0..3 {
        c.send_message(&OutgoingMessage::text(&["u0"], &format!("m{i}")))
            .await
            .unwrap();
    }
    let msgs = sb.get("/_sandbox/messages").await["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(msgs[2]["delivered_to"], json!([]));
    assert_eq!(msgs[2]["dropped_for"], json!(["u0"]));
}

#[tokio::test]
async fn app_group_chats_and_robots() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = WecomConnector::new(sb.config()).unwrap();
    let c = &conn.client;
    let chat = conn
        .create(
            Entity::Chat,
            json!({"name": "项目群", "owner": "u0", "userlist": ["u0", "u1", "u2"], "chatid": "proj1"}),
        )
        .await
        .unwrap();
    assert_eq!(chat, "proj1");
    let info = conn.get(Entity::Chat, "proj1").await.unwrap().unwrap();
    assert_eq!(info["userlist"], json!(["u0", "u1", "u2"]));
    assert!(conn.get(Entity::Chat, "nochat").await.unwrap().is_none());
    c.send_appchat("proj1", "text", json!({"content": "大家好"}), false)
        .await
        .unwrap();
    assert!(c.create_appchat(json!({"userlist": ["u0"]})).await.is_err());

    c.robot_send(
        &"sandbox-robot-key".to_string().into(),
        json!({"msgtype": "text", "text": {"content": "构建成功", "mentioned_list": ["@all"]}}),
    )
    .await
    .unwrap();
    let e = c
        .robot_send(
            &"wrong-key".to_string().into(),
            json!({"msgtype": "text", "text": {"content": "x"}}),
        )
        .await
        .unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Permanent, Some(93000)));
    let msgs = sb.get("/_sandbox/messages").await["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(msgs[0]["channel"], "appchat");
    assert_eq!(msgs[0]["delivered_to"], json!(["u0", "u1", "u2"]));
    assert_eq!(msgs[1]["channel"], "robot");
    assert_eq!(msgs[1]["content"]["content"], "构建成功");

    // The sandbox enforces 20 messages/minute per robot with 45009 (raw calls: the connector
    // itself would wait instead).
    let http = reqwest::Client::new();
    let mut codes = Vec::new();
    for _ in 0..20 {
        let v: Value = http
            .post(format!(
                "{}/cgi-bin/webhook/send?key=sandbox-robot-key",
                sb.base
            ))
            .body(r#"{"msgtype":"markdown","markdown":{"content":"**x**"}}"#)
            .json_reply()
            .await;
        codes.push(v["errcode"].as_i64().unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 19);
    assert_eq!(*codes.last().unwrap(), 45009);
}

#[tokio::test]
async fn tasks_become_schedules_or_textcards() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = WecomConnector::new(sb.config()).unwrap();
    let id = conn
        .create(
            Entity::Task,
            json!({"summary": "季度复盘", "description": "准备材料", "organizer": "u0",
                "attendees": ["u0", "u1"], "start_time": 1_900_000_000, "end_time": 1_900_003_600,
                "remind_before_event_secs": 900, "location": "3F"}),
        )
        .await
        .unwrap();
    let s = conn.get(Entity::Task, &id).await.unwrap().unwrap();
    assert_eq!(s["summary"], "季度复盘");
    assert_eq!(s["attendees"], json!([{"userid": "u0"}, {"userid": "u1"}]));
    assert_eq!(s["reminders"]["remind_before_event_secs"], 900);
    assert_eq!(s["status"], 0);
    conn.update(
        Entity::Task,
        &id,
        json!({"summary": "季度复盘（改期）", "end_time": 1_900_007_200}),
    )
    .await
    .unwrap();
    let s = conn.get(Entity::Task, &id).await.unwrap().unwrap();
    assert_eq!(s["summary"], "季度复盘（改期）");
    assert_eq!(s["end_time"], 1_900_007_200);
    conn.delete(Entity::Task, &id).await.unwrap();
    let s = conn.get(Entity::Task, &id).await.unwrap().unwrap();
    assert_eq!(s["status"], 1, "cancelled schedules are still returned");
    assert!(conn.get(Entity::Task, "nope").await.unwrap().is_none());

    // No times: a textcard to the assignees; deleting it recalls the card.
    let card = conn
        .create(
            Entity::Task,
            json!({"summary": "提交报销单", "description": "本周五前", "attendees": ["u2"], "url": "https://example.cn/t/1"}),
        )
        .await
        .unwrap();
    assert!(card.starts_with(TEXTCARD_PREFIX));
    conn.delete(Entity::Task, &card).await.unwrap();
    let msgs = sb.get("/_sandbox/messages").await["messages"]
        .as_array()
        .unwrap()
        .clone();
    let tc = msgs.iter().find(|m| m["msgtype"] == "textcard").unwrap();
    assert_eq!(tc["content"]["title"], "提交报销单");
    assert_eq!(tc["content"]["url"], "https://example.cn/t/1");
    assert_eq!(tc["delivered_to"], json!(["u2"]));
    assert!(msgs.iter().any(|m| m["channel"] == "recall"));
}

#[tokio::test]
async fn sandbox_speaks_wecom_on_the_wire() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(path).send().await.unwrap();
            assert_eq!(r.status(), 200, "errors come back as HTTP 200");
            r.json::<Value>().await.unwrap()
        }
    };
    let b = &sb.base;
    for (path, errcode) in [
        (format!("/gettoken?corpid=wrong&corpsecret={SECRET}"), 40013),
        (format!("/gettoken?corpid={CORP}&corpsecret=bad"), 40001),
        ("/gettoken?corpsecret=bad".to_string(), 41002),
        ("/user/get?userid=u0".to_string(), 41001),
        ("/user/get?userid=u0&access_token=nope".to_string(), 40014),
    ] {
        assert_eq!(
            get(format!("{b}/cgi-bin{path}")).await["errcode"],
            errcode,
            "{path}"
        );
    }
    let t = get(format!(
        "{b}/cgi-bin/gettoken?corpid={CORP}&corpsecret={SECRET}"
    ))
    .await;
    assert_eq!(t["errcode"], 0);
    assert_eq!(t["errmsg"], "ok");
    assert_eq!(t["expires_in"], 7200);
    let token = t["access_token"].as_str().unwrap().to_string();
    // A second fetch while the token is fresh returns it again.
    let t2 = get(format!(
        "{b}/cgi-bin/gettoken?corpid={CORP}&corpsecret={SECRET}"
    ))
    .await;
    assert_eq!(t2["access_token"], token.as_str());
    let u = get(format!(
        "{b}/cgi-bin/user/get?userid=u0&access_token={token}"
    ))
    .await;
    assert_eq!(u["errcode"], 0);
    assert_eq!(u["userid"], "u0");
    assert!(u["gender"].is_string());
    // JSON bodies are read whatever the Content-Type (wechatpy sends none).
    let v: Value = http
        .post(format!("{b}/cgi-bin/user/list_id?access_token={token}"))
        .body(r#"{"limit": 7}"#)
        .json_reply()
        .await;
    assert_eq!(v["dept_user"].as_array().unwrap().len(), 7);
    let next = v["next_cursor"].as_str().unwrap();
    assert!(!next.is_empty());
    let v: Value = http
        .post(format!("{b}/cgi-bin/user/list_id?access_token={token}"))
        .header("content-type", "text/plain")
        .body(json!({"cursor": next, "limit": 100}).to_string())
        .json_reply()
        .await;
    assert_eq!(v["dept_user"].as_array().unwrap().len(), 13);
    assert_eq!(v["next_cursor"], "");
    let v: Value = http
        .post(format!("{b}/cgi-bin/user/list_id?access_token={token}"))
        .body(r#"{"cursor": "bogus"}"#)
        .json_reply()
        .await;
    assert_eq!(v["errcode"], 50100);
    let v: Value = http
        .post(format!("{b}/cgi-bin/user/create?access_token={token}"))
        .body("not json")
        .json_reply()
        .await;
    assert_eq!(v["errcode"], 47001);
    let err = v["errmsg"].as_str().unwrap();
    assert!(
        err.contains(", hint: [") && err.contains("from ip: "),
        "{err}"
    );
    // media/upload: created_at is a string.
    let form = reqwest::multipart::Form::new().part(
        "media",
        reqwest::multipart::Part::bytes(b"hello world".to_vec()).file_name("a.txt"),
    );
    let v: Value = http
        .post(format!(
            "{b}/cgi-bin/media/upload?access_token={token}&type=file"
        ))
        .multipart(form)
        .json_reply()
        .await;
    assert_eq!(v["errmsg"], "");
    assert!(v["created_at"].is_string());
    assert_eq!(v["type"], "file");
}

#[tokio::test]
async fn admin_endpoints_change_the_org_like_a_console() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let c = sb.client();
    let (s, v) = sb
        .post(
            "/_sandbox/org/departments",
            json!({"key": "d9", "name": "新部门", "parent": "d0", "order": 3}),
        )
        .await;
    assert_eq!(s, 201);
    let id = v["id"].as_i64().unwrap();
    let (s, _) = sb
        .post(
            "/_sandbox/org/users",
            json!({"key": "newbie", "name": "新人", "departments": ["d9"], "mobile": "13700000000"}),
        )
        .await;
    assert_eq!(s, 201);
    let u = c.get_user("newbie").await.unwrap().unwrap();
    assert_eq!(u["department"], json!([id]));
    assert_eq!(u["status"], 1);
    let r = reqwest::Client::new()
        .patch(format!("{}/_sandbox/org/users/newbie", sb.base))
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.get_user("newbie").await.unwrap().unwrap()["status"], 2);
    let r = reqwest::Client::new()
        .delete(format!("{}/_sandbox/org/departments/d9", sb.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        422,
        "a department with members cannot be deleted"
    );
    // Events are recorded even without an event url.
    let events = sb.get("/_sandbox/events").await["events"]
        .as_array()
        .unwrap()
        .clone();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["ChangeType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["create_party", "create_user", "update_user"]);
    assert!(events.iter().all(|e| e["delivery"] == "not-configured"));
}

#[tokio::test]
async fn serve_returns_when_shutdown_resolves_and_bad_options_are_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(serve(listener, opts("small-org.json"), async move {
        let _ = rx.await;
    }));
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), h)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let (_tx, stop) = tokio::sync::watch::channel(false);
    let mut o = opts("small-org.json");
    o.event_url = Some("http://127.0.0.1:9/cb".into());
    assert!(huitong_connectors::wecom::sandbox::router(o.clone(), stop.clone()).is_err());
    o.token = Some("t".to_string().into());
    o.encoding_aes_key = Some("too-short".to_string().into());
    assert!(huitong_connectors::wecom::sandbox::router(o.clone(), stop.clone()).is_err());
    o.encoding_aes_key = Some(
        "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
            .to_string()
            .into(),
    );
    o.event_url = Some("ftp://x".into());
    assert!(huitong_connectors::wecom::sandbox::router(o.clone(), stop.clone()).is_err());
    let mut o = opts("small-org.json");
    o.agent_id = 0;
    assert!(huitong_connectors::wecom::sandbox::router(o, stop).is_err());
}

#[tokio::test]
async fn enforced_limits_answer_45009_over_the_quota_then_let_calls_through() {
    let mut o = opts("small-org.json");
    o.enforce_rate_limits = true;
    // 10,000/min and 150,000/h scaled to 3 a second and 45 a minute.
    o.rate_limit_scale = RateScale {
        calls: 0.0003,
        time: 1.0 / 60.0,
    };
    let sb = Sandbox::start(o).await;
    let http = reqwest::Client::new();
    let v: Value = http
        .get(format!(
            "{}/cgi-bin/gettoken?corpid={CORP}&corpsecret={SECRET}",
            sb.base
        ))
        .json_reply()
        .await;
    let token = v["access_token"].as_str().unwrap().to_string();
    let get = || {
        let (http, token, base) = (http.clone(), token.clone(), sb.base.clone());
        async move {
            http.get(format!(
                "{base}/cgi-bin/user/get?access_token={token}&userid=u0"
            ))
            .json_reply()
            .await
        }
    };
    for _ in 0..3 {
        assert_eq!(get().await["errcode"], 0);
    }
    let v = get().await;
    assert_eq!(v["errcode"], 45009, "{v}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get().await["errcode"], 0);
    let calls = sb.get("/_sandbox/calls").await;
    let w = &calls["windows"]["GET /cgi-bin/user/get"];
    assert_eq!(w["rate_limited"], 1, "{calls}");
    assert_eq!(w["count"], 5, "{calls}");
    assert_eq!(w["peak_60s"], 5, "{calls}");
}
