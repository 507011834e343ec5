//! The Feishu connector against the Feishu sandbox, both in-process on 127.0.0.1.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};

mod common;

use common::{JsonReply, Sandbox, fast_retry, find, org};
use huitong_connectors::capability::{Entity, ListQuery, ReadEntities, WriteEntities};
use huitong_connectors::feishu::client::FeishuClient;
use huitong_connectors::feishu::im::OutgoingMessage;
use huitong_connectors::feishu::sandbox::{SandboxOptions, serve};
use huitong_connectors::feishu::{FeishuConfig, FeishuConnector};
use huitong_connectors::sandbox::{FaultSpec, RateScale};
use huitong_connectors::{ConnectorError, ErrorClass};
use serde_json::{Value, json};

/// The test app (`cli_test`): its tenant token, its connector config with fast retries.
impl Sandbox {
    /// A tenant access token for the test app (JSON body, as the Go SDK sends it).
    async fn tenant_token(&self) -> String {
        let (_, v) = self
            .post(
                "/open-apis/auth/v3/tenant_access_token/internal",
                json!({"app_id": "cli_test", "app_secret": "s3cret"}),
            )
            .await;
        v["tenant_access_token"].as_str().unwrap().to_string()
    }

    fn config(&self) -> FeishuConfig {
        let mut cfg = FeishuConfig::new(self.base.clone(), "cli_test", "s3cret".to_string().into());
        cfg.transport.retry = fast_retry(20, 12);
        cfg
    }

    fn client(&self) -> FeishuClient {
        FeishuClient::new(self.config()).unwrap()
    }
}

fn opts(fixture: &str) -> SandboxOptions {
    SandboxOptions::new(org(fixture), "cli_test", "s3cret")
}

async fn all_users(c: &FeishuClient) -> Vec<Value> {
    c.all_users().try_collect().await.unwrap()
}

fn open_ids(snapshot: &Value) -> HashSet<String> {
    snapshot["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["feishu"]["open_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn reads_the_medium_org_completely_page_by_page() {
    let sb = Sandbox::start(opts("medium-org.json")).await;
    let mut cfg = sb.config();
    cfg.page_size = 7;
    let c = FeishuClient::new(cfg).unwrap();
    let users = all_users(&c).await;
    let snap = sb.get("/_sandbox/org").await;
    let got: HashSet<String> = users
        .iter()
        .map(|u| u["open_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(users.len(), 300);
    assert_eq!(got, open_ids(&snap));
    // Fields rendered the Feishu way.
    let u0 = users.iter().find(|u| u["user_id"] == "u0").unwrap();
    assert_eq!(u0["mobile"], "+8615643835017");
    assert_eq!(u0["gender"], 2);
    assert_eq!(u0["employee_no"], "E000000");
    assert!(u0["open_id"].as_str().unwrap().starts_with("ou_"));

    let depts: Vec<Value> = c
        .department_children("0", true)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(depts.len(), 24);
    assert!(
        depts
            .iter()
            .all(|d| d["open_department_id"].as_str().unwrap().starts_with("od-"))
    );

    // Every page was fetched: one find_by_department call per page of 7 for each department.
    let expected_pages = common::member_pages(&snap, 7);
    let calls = sb.get("/_sandbox/calls").await;
    assert_eq!(
        calls["calls"]["GET /open-apis/contact/v3/users/find_by_department"].as_u64(),
        Some(expected_pages)
    );
    assert!(expected_pages > 25, "some department spans several pages");
    assert_eq!(c.token_fetches(), 1);
}

#[tokio::test]
async fn small_pages_and_the_trait_view_agree() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let mut cfg = sb.config();
    cfg.page_size = 3;
    let conn = FeishuConnector::new(cfg).unwrap();
    let users: Vec<Value> = common::list_all(&conn, Entity::User, ListQuery::default()).await;
    assert_eq!(users.len(), 20);
    let root_members: Vec<Value> = common::list_all(&conn, Entity::User, common::under("0")).await;
    assert_eq!(
        root_members.len(),
        common::root_member_count(&sb.get("/_sandbox/org").await)
    );
    let first = &users[0];
    let got = conn
        .get(Entity::User, first["open_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["name"], first["name"]);
    assert_eq!(conn.get(Entity::User, "ou_nobody").await.unwrap(), None);
    assert_eq!(
        conn.get(Entity::Department, "od-nothing").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn create_update_delete_through_the_connector() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = FeishuConnector::new(sb.config()).unwrap();

    let dept_id = conn
        .create(Entity::Department, json!({"name": "新部门", "parent_department_id": "0", "department_id": "newdept", "order": "7"}))
        .await
        .unwrap();
    assert!(dept_id.starts_with("od-"));
    let user_id = conn
        .create(
            Entity::User,
            json!({"name": "测试 用户", "mobile": "+8613800000001", "email": "t@example.cn",
                   "department_ids": [dept_id], "employee_type": 1, "employee_no": "E9", "gender": 1}),
        )
        .await
        .unwrap();
    assert!(user_id.starts_with("ou_"));

    let snap = sb.get("/_sandbox/org").await;
    let d = find(&snap["departments"], "open_department_id", dept_id.as_str()).unwrap();
    assert_eq!(d["name"], "新部门");
    assert_eq!(d["order"], 7);
    assert_eq!(d["key"], "newdept");
    let u = find(&snap["users"], "open_id", user_id.as_str()).unwrap();
    assert_eq!(u["mobile"], "13800000001");
    assert_eq!(u["departments"], json!(["newdept"]));
    assert_eq!(u["gender"], "male");

    assert_eq!(
        conn.update(
            Entity::User,
            &user_id,
            json!({"name": "改名", "job_title": "经理"})
        )
        .await
        .unwrap(),
        user_id
    );
    conn.update(
        Entity::Department,
        &dept_id,
        json!({"name": "更名部门", "leader_user_id": user_id}),
    )
    .await
    .unwrap();
    let snap = sb.get("/_sandbox/org").await;
    let u = find(&snap["users"], "open_id", user_id.as_str()).unwrap();
    assert_eq!(
        (u["name"].as_str(), u["title"].as_str()),
        (Some("改名"), Some("经理"))
    );
    let d = snap["departments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "newdept")
        .unwrap();
    assert_eq!(d["name"], "更名部门");
    assert_eq!(d["leaders"], json!([u["key"]]));

    // A department with members cannot go; after the user does, it can.
    let e = conn
        .delete(Entity::Department, dept_id.as_str())
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    conn.delete(Entity::User, user_id.as_str()).await.unwrap();
    conn.delete(Entity::Department, dept_id.as_str())
        .await
        .unwrap();
    let snap = sb.get("/_sandbox/org").await;
    assert_eq!(snap["users"].as_array().unwrap().len(), 20);
    assert!(
        !snap["departments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["key"] == "newdept")
    );

    // Each change emitted Feishu's event.
    let events = sb.get("/_sandbox/events").await;
    let types: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["header"]["event_type"].as_str().unwrap())
        .collect();
    for t in [
        "contact.department.created_v3",
        "contact.user.created_v3",
        "contact.user.updated_v3",
        "contact.department.updated_v3",
        "contact.user.deleted_v3",
        "contact.department.deleted_v3",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let upd = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["header"]["event_type"] == "contact.user.updated_v3")
        .unwrap();
    assert_eq!(upd["event"]["event"]["old_object"]["name"], "测试 用户");
    assert_eq!(upd["event"]["event"]["object"]["name"], "改名");
}

/// A delete that already happened (a step retried after its reply was lost, two runs racing):
/// Feishu answers its not-found code, and the connector counts the record as gone.
#[tokio::test]
async fn deleting_a_user_or_department_twice_is_done_the_second_time() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = FeishuConnector::new(sb.config()).unwrap();
    let dept_id = conn
        .create(Entity::Department, json!({"name": "两次删除", "parent_department_id": "0", "department_id": "twice", "order": "9"}))
        .await
        .unwrap();
    let user_id = conn
        .create(
            Entity::User,
            json!({"name": "删两次", "mobile": "+8613800000002", "email": "twice@example.cn",
                   "department_ids": [dept_id], "employee_type": 1, "employee_no": "E10"}),
        )
        .await
        .unwrap();
    conn.delete(Entity::User, &user_id).await.unwrap();
    conn.delete(Entity::Department, &dept_id).await.unwrap();

    // On the wire: the vendor's own not-found answers (HTTP 400; 41050 for a user, 40015 for
    // a department), nothing deleted.
    let token = sb.tenant_token().await;
    let http = reqwest::Client::new();
    let user_again = http
        .delete(format!(
            "{}/open-apis/contact/v3/users/{user_id}?user_id_type=open_id",
            sb.base
        ))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(user_again.status(), 400);
    let v: Value = user_again.json().await.unwrap();
    assert_eq!(v["code"], 41050, "{v}");
    let dept_again = http
        .delete(format!(
            "{}/open-apis/contact/v3/departments/{dept_id}?department_id_type=open_department_id",
            sb.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(dept_again.status(), 400);
    let v: Value = dept_again.json().await.unwrap();
    assert_eq!(v["code"], 40015, "{v}");
    // …which are Feishu's not-found codes, not a failure to retry or to report.
    for code in [41050, 40015] {
        assert!(
            huitong_connectors::feishu::client::NOT_FOUND_CODES.contains(&code),
            "{code}"
        );
    }

    // Through the connector: the second delete of each is done, not an error.
    let deletes_before = sb.calls("DELETE /open-apis/contact/v3/users/{id}").await;
    conn.delete(Entity::User, &user_id).await.unwrap();
    assert_eq!(
        sb.calls("DELETE /open-apis/contact/v3/users/{id}").await,
        deletes_before + 1,
        "asked the vendor once, no retries"
    );
    conn.delete(Entity::Department, &dept_id).await.unwrap();
    assert!(conn.get(Entity::User, &user_id).await.unwrap().is_none());

    // The org lost the pair once: one deleted event each, the fixture's people untouched.
    let snap = sb.get("/_sandbox/org").await;
    assert_eq!(snap["users"].as_array().unwrap().len(), 20);
    let events = sb.events().await;
    let deleted = |t: &str| {
        events
            .iter()
            .filter(|e| e["event"]["header"]["event_type"] == t)
            .count()
    };
    assert_eq!(deleted("contact.user.deleted_v3"), 1);
    assert_eq!(deleted("contact.department.deleted_v3"), 1);
}

#[tokio::test]
async fn create_rejects_missing_required_fields_as_permanent() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let c = sb.client();
    let e = c
        .create_user(
            json!({"name": "x", "department_ids": ["0"], "employee_type": 1}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.class(), e.code()),
        (ErrorClass::Permanent, Some(99992402))
    );
    let e = c
        .create_department(
            json!({"name": "x", "parent_department_id": "od-missing"}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(40015));
}

#[tokio::test]
async fn client_token_makes_a_retried_create_idempotent() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let c = sb.client();
    let body = json!({"name": "Once", "mobile": "13900000000", "department_ids": ["0"], "employee_type": 1});
    let a = c.create_user(body.clone(), Some("ct-1")).await.unwrap();
    let b = c.create_user(body, Some("ct-1")).await.unwrap();
    assert_eq!(a["open_id"], b["open_id"]);
    assert_eq!(sb.count("users").await, 21);
}

#[tokio::test]
async fn keyed_creates_through_the_connector_are_idempotent() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = FeishuConnector::new(sb.config()).unwrap();
    assert!(conn.keyed_creates(Entity::User) && conn.keyed_creates(Entity::Department));
    let dept = json!({"name": "一次", "parent_department_id": "0", "order": "8"});
    common::create_twice(&conn, Entity::Department, dept, "d-key-1").await;
    let body = json!({"name": "Once", "mobile": "13900000001", "department_ids": ["0"]});
    let u1 = common::create_twice(&conn, Entity::User, body, "p-key-1").await;
    let org = sb.get("/_sandbox/org").await;
    assert_eq!(org["users"].as_array().unwrap().len(), 21);
    assert_eq!(org["departments"].as_array().unwrap().len(), 4);
    // Another key is another record.
    let other = json!({"name": "Twice", "mobile": "13900000002", "department_ids": ["0"]});
    let u3 = conn
        .create_keyed(Entity::User, other, "p-key-2")
        .await
        .unwrap();
    assert_ne!(u3, u1);
    assert_eq!(sb.count("users").await, 22);
}

#[tokio::test]
async fn survives_token_expiry_mid_run() {
    let sb = Sandbox::start(opts("medium-org.json")).await;
    let c = sb.client();
    let mut stream = c.all_users();
    let mut seen = HashSet::new();
    while let Some(u) = stream.next().await {
        seen.insert(u.unwrap()["open_id"].as_str().unwrap().to_string());
        if seen.len() == 100 {
            assert_eq!(sb.expire_tokens().await, 204);
        }
    }
    assert_eq!(seen, open_ids(&sb.get("/_sandbox/org").await));
    assert_eq!(c.token_fetches(), 2, "one refetch after the expiry");
}

#[tokio::test]
async fn survives_early_token_expiry_faults() {
    let mut o = opts("medium-org.json");
    o.faults = FaultSpec::parse("token=0.1,seed=11").unwrap();
    let sb = Sandbox::start(o).await;
    let c = sb.client();
    assert_eq!(all_users(&c).await.len(), 300);
    let calls = sb.get("/_sandbox/calls").await;
    let expired = calls["faults"]["token"].as_u64().unwrap_or(0);
    assert!(expired > 0);
    assert_eq!(c.token_fetches(), 1 + expired);
}

#[tokio::test]
async fn survives_429_bursts_and_5xx() {
    let mut o = opts("medium-org.json");
    o.faults = FaultSpec::parse("429=0.1x3,5xx=0.1,seed=5").unwrap();
    let sb = Sandbox::start(o).await;
    let mut cfg = sb.config();
    cfg.page_size = 10;
    let conn = FeishuConnector::new(cfg).unwrap();
    let users: Vec<Value> = common::list_all(&conn, Entity::User, ListQuery::default()).await;
    assert_eq!(users.len(), 300);
    let id = conn
        .create(Entity::User, json!({"name": "Faulty", "mobile": "13700000000", "department_ids": ["0"], "employee_type": 1}))
        .await
        .unwrap();
    conn.update(Entity::User, &id, json!({"en_name": "Faulty Two"}))
        .await
        .unwrap();
    let snap = sb.get("/_sandbox/org").await;
    let u = find(&snap["users"], "open_id", id.as_str()).unwrap();
    assert_eq!(u["en_name"], "Faulty Two");
    assert_eq!(snap["users"].as_array().unwrap().len(), 301);
    let calls = sb.get("/_sandbox/calls").await;
    assert!(calls["faults"]["429"].as_u64().unwrap_or(0) >= 3, "{calls}");
    assert!(calls["faults"]["5xx"].as_u64().unwrap_or(0) >= 1, "{calls}");
}

#[tokio::test]
async fn errors_are_classified_from_the_sandbox_replies() {
    let mut o = opts("small-org.json");
    o.faults = FaultSpec::parse("5xx=1").unwrap();
    let sb = Sandbox::start(o).await;
    let mut cfg = sb.config();
    cfg.transport.retry.max_retries = 2;
    let c = FeishuClient::new(cfg).unwrap();
    let e = c.get_user("ou_x").await.unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Retryable, Some(1500)));
    let calls = sb.get("/_sandbox/calls").await;
    assert_eq!(
        calls["calls"]["GET /open-apis/contact/v3/users/{id}"], 3,
        "first try and two retries"
    );

    let mut o = opts("small-org.json");
    o.faults = FaultSpec::parse("429=1").unwrap();
    let sb = Sandbox::start(o).await;
    let mut cfg = sb.config();
    cfg.transport.retry.max_retries = 1;
    let e = FeishuClient::new(cfg)
        .unwrap()
        .get_user("ou_x")
        .await
        .unwrap_err();
    match e {
        ConnectorError::RateLimited {
            code, retry_after, ..
        } => {
            assert_eq!(code, Some(99991400));
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("{other:?}"),
    }

    let sb = Sandbox::start(opts("small-org.json")).await;
    let mut cfg = sb.config();
    cfg.app_secret = "wrong".to_string().into();
    let e = FeishuClient::new(cfg)
        .unwrap()
        .get_user("ou_x")
        .await
        .unwrap_err();
    assert_eq!((e.class(), e.code()), (ErrorClass::Permanent, Some(10014)));
}

#[tokio::test]
async fn sandbox_speaks_feishu_on_the_wire() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let http = reqwest::Client::new();
    // Token call without Content-Type, as lark-oapi sends it.
    let v: Value = http
        .post(format!(
            "{}/open-apis/auth/v3/tenant_access_token/internal",
            sb.base
        ))
        .body(r#"{"app_id": "cli_test", "app_secret": "s3cret"}"#)
        .json_reply()
        .await;
    assert_eq!(v["code"], 0);
    assert_eq!(v["expire"], 7200);
    let token = v["tenant_access_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("t-"));
    // Asking again while > 30 min remain returns the same token.
    assert_eq!(sb.tenant_token().await, token);

    let get = |path: &str, tok: Option<&str>| {
        let http = http.clone();
        let url = format!("{}{path}", sb.base);
        let tok = tok.map(str::to_string);
        async move {
            let mut r = http.get(url);
            if let Some(t) = tok {
                r = r.bearer_auth(t);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            assert!(resp.headers().contains_key("x-tt-logid"));
            let v: Value = resp.json().await.unwrap();
            (status, ct, v)
        }
    };
    // `True` (capitalised) query booleans.
    let (s, ct, v) = get(
        "/open-apis/contact/v3/departments/0/children?fetch_child=True&page_size=50",
        Some(&token),
    )
    .await;
    assert_eq!((s, v["code"].as_i64()), (200, Some(0)));
    assert!(ct.starts_with("application/json"));
    assert_eq!(v["data"]["items"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"]["has_more"], false);
    assert!(v["data"].get("page_token").is_none());
    let (_, _, v) = get(
        "/open-apis/contact/v3/users/find_by_department?department_id=0&page_size=51",
        Some(&token),
    )
    .await;
    assert_eq!(v["code"], 40011);
    let (_, _, v) = get(
        "/open-apis/contact/v3/users/find_by_department?department_id=0&page_token=bogus",
        Some(&token),
    )
    .await;
    assert_eq!(v["code"], 40012);
    let (s, _, v) = get(
        "/open-apis/contact/v3/users/find_by_department?department_id=0",
        None,
    )
    .await;
    assert_eq!((s, v["code"].as_i64()), (400, Some(99991661)));
    let (_, _, v) = get(
        "/open-apis/contact/v3/users/find_by_department?department_id=0",
        Some("t-forged"),
    )
    .await;
    assert_eq!(v["code"], 99991663);
    let (_, _, v) = get(
        "/open-apis/contact/v3/users/find_by_department?department_id=0",
        Some("x-bad"),
    )
    .await;
    assert_eq!(v["code"], 99991671);
    // Default page size 10 and page_token continuation.
    let (_, _, v) = get(
        "/open-apis/contact/v3/departments/0/children?fetch_child=true&page_size=1",
        Some(&token),
    )
    .await;
    assert_eq!(v["data"]["has_more"], true);
    let pt = v["data"]["page_token"].as_str().unwrap().to_string();
    let (_, _, v2) = get(
        &format!("/open-apis/contact/v3/departments/0/children?fetch_child=true&page_size=1&page_token={pt}"),
        Some(&token),
    )
    .await;
    assert_ne!(
        v["data"]["items"][0]["open_department_id"],
        v2["data"]["items"][0]["open_department_id"]
    );
    // department_id_type=department_id uses the custom ids.
    let (_, _, v) = get(
        "/open-apis/contact/v3/departments/0/children?department_id_type=department_id",
        Some(&token),
    )
    .await;
    let first = &v["data"]["items"][0];
    assert_eq!(first["parent_department_id"], "0");
    assert!(!first["department_id"].as_str().unwrap().starts_with("od-"));
    let (_, _, v) = get("/open-apis/nope", Some(&token)).await;
    assert_eq!(v["code"], 99991201);
}

#[tokio::test]
async fn published_rate_limits_answer_429_with_reset_headers() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let http = reqwest::Client::new();
    let token = sb.tenant_token().await;
    // Task create is limited to 10/s (a burst of 10): 30 calls fired at once trip it.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let http = http.clone();
        let url = format!("{}/open-apis/task/v2/tasks", sb.base);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"summary": format!("t{i}")}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let reset = r
                .headers()
                .get("x-ogw-ratelimit-reset")
                .map(|h| h.to_str().unwrap().to_string());
            let limit = r
                .headers()
                .get("x-ogw-ratelimit-limit")
                .map(|h| h.to_str().unwrap().to_string());
            let v: Value = r.json().await.unwrap();
            (status, v["code"].as_i64().unwrap(), reset, limit)
        }));
    }
    let mut limited = 0;
    let mut passed = 0;
    for t in tasks {
        let (status, code, reset, limit) = t.await.unwrap();
        if status == 429 {
            assert_eq!(code, 99991400);
            assert_eq!(reset.as_deref(), Some("1"));
            assert_eq!(limit.as_deref(), Some("10"));
            limited += 1;
        } else {
            assert_eq!(code, 0);
            passed += 1;
        }
    }
    assert!(passed >= 10, "the burst of the quota passes");
    assert!(limited > 0);
}

#[tokio::test]
async fn admin_endpoints_change_the_org_like_a_console() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let c = sb.client();
    let (s, v) = sb
        .admin(
            reqwest::Method::POST,
            "/_sandbox/org/users",
            Some(json!({"key": "hr1", "name": "新人", "en_name": "New", "email": "new@example.cn", "mobile": "13812345678",
                        "employee_no": "E777", "title": "实习生", "departments": ["d0"], "active": true, "gender": "female", "hired_at": "2025-01-02"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let open_id = v["open_id"].as_str().unwrap().to_string();
    let u = c.get_user(&open_id).await.unwrap().unwrap();
    assert_eq!(u["name"], "新人");
    assert_eq!(u["join_time"], 1_735_747_200);
    let (s, _) = sb
        .admin(
            reqwest::Method::PATCH,
            "/_sandbox/org/users/hr1",
            Some(json!({"title": "工程师", "active": false})),
        )
        .await;
    assert_eq!(s, 200);
    let u = c.get_user(&open_id).await.unwrap().unwrap();
    assert_eq!(u["job_title"], "工程师");
    assert_eq!(u["status"]["is_frozen"], true);
    let (s, _) = sb
        .admin(
            reqwest::Method::POST,
            "/_sandbox/org/departments",
            Some(json!({"key": "dx", "name": "X", "parent": "d0", "order": 9, "leaders": ["hr1"]})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = sb
        .admin(
            reqwest::Method::PATCH,
            "/_sandbox/org/departments/dx",
            Some(json!({"name": "Y"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = sb
        .admin(reqwest::Method::DELETE, "/_sandbox/org/users/hr1", None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = sb
        .admin(
            reqwest::Method::DELETE,
            "/_sandbox/org/departments/dx",
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(c.get_user(&open_id).await.unwrap(), None);
    let (s, _) = sb
        .admin(reqwest::Method::DELETE, "/_sandbox/org/users/hr1", None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = sb
        .admin(
            reqwest::Method::POST,
            "/_sandbox/org/users",
            Some(json!({"key": "u0", "name": "dup", "departments": ["d0"]})),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = sb
        .admin(
            reqwest::Method::PATCH,
            "/_sandbox/org/departments/d1",
            Some(json!({"parent": "d1"})),
        )
        .await;
    assert_eq!(s, 422, "a department cannot become its own parent");

    let ev = sb.get("/_sandbox/events").await;
    let types: Vec<String> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["event"]["header"]["event_type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        types,
        [
            "contact.user.created_v3",
            "contact.user.updated_v3",
            "contact.department.created_v3",
            "contact.department.updated_v3",
            "contact.user.deleted_v3",
            "contact.department.updated_v3",
            "contact.department.deleted_v3",
        ]
    );
    assert_eq!(ev["events"][0]["delivery"], "not-configured");
}

#[tokio::test]
async fn messages_images_and_uuid_dedup() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let c = sb.client();
    let users = all_users(&c).await;
    let to = users[0]["open_id"].as_str().unwrap();
    let mut m = OutgoingMessage::text("open_id", to, "你好");
    m.uuid = Some("dedupe-1".into());
    let a = c.send_message(&m).await.unwrap();
    let b = c.send_message(&m).await.unwrap();
    assert_eq!(a["message_id"], b["message_id"]);
    assert!(a["message_id"].as_str().unwrap().starts_with("om_"));
    let post = OutgoingMessage {
        receive_id_type: "chat_id".into(),
        receive_id: "oc_group".into(),
        msg_type: "post".into(),
        content: json!({"zh_cn": {"title": "T", "content": [[{"tag": "text", "text": "x"}, {"tag": "at", "user_id": to}]]}}),
        uuid: None,
    };
    c.send_message(&post).await.unwrap();
    let img = c
        .upload_image(bytes::Bytes::from_static(b"\x89PNG fake"))
        .await
        .unwrap();
    assert!(img.starts_with("img_"));
    assert_eq!(&c.download_image(&img).await.unwrap()[..], b"\x89PNG fake");
    let file = c
        .upload_file("pdf", "a.pdf", bytes::Bytes::from_static(b"%PDF"))
        .await
        .unwrap();
    let fm = OutgoingMessage {
        msg_type: "file".into(),
        content: json!({"file_key": file}),
        ..OutgoingMessage::text("chat_id", "oc_group", "")
    };
    c.send_message(&fm).await.unwrap();
    let bad = OutgoingMessage::text("open_id", "ou_nobody", "x");
    assert_eq!(c.send_message(&bad).await.unwrap_err().code(), Some(230034));

    let msgs = sb.get("/_sandbox/messages").await;
    let msgs = msgs["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "the uuid duplicate was not sent twice");
    assert_eq!(msgs[0]["content"], json!({"text": "你好"}));
    assert_eq!(msgs[0]["receive_id"], to);
    assert_eq!(msgs[1]["msg_type"], "post");
    assert_eq!(msgs[2]["content"]["file_key"], file.as_str());
}

#[tokio::test]
async fn tasks_create_patch_get_list_delete() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let conn = FeishuConnector::new(sb.config()).unwrap();
    let c = &conn.client;
    let t = c
        .create_task(
            json!({"summary": "写周报", "due": {"timestamp": "1735689600000", "is_all_day": true}}),
            Some("client-token-1"),
        )
        .await
        .unwrap();
    let again = c
        .create_task(json!({"summary": "写周报"}), Some("client-token-1"))
        .await
        .unwrap();
    assert_eq!(t["guid"], again["guid"]);
    let guid = t["guid"].as_str().unwrap();
    c.patch_task(
        guid,
        json!({"completed_at": "1735689600000", "summary": "ignored"}),
        Some(vec!["completed_at".into()]),
    )
    .await
    .unwrap();
    let got = conn.get(Entity::Task, guid).await.unwrap().unwrap();
    assert_eq!(got["status"], "done");
    assert_eq!(got["summary"], "写周报");
    conn.create(Entity::Task, json!({"summary": "second"}))
        .await
        .unwrap();
    let all: Vec<Value> = common::list_all(&conn, Entity::Task, ListQuery::default()).await;
    assert_eq!(all.len(), 2);
    conn.delete(Entity::Task, guid).await.unwrap();
    assert_eq!(conn.get(Entity::Task, guid).await.unwrap(), None);
    let e = c
        .create_task(json!({"description": "no summary"}), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(1470400));
}

#[tokio::test]
async fn shared_limiter_is_per_app() {
    // Two clients of one app share a limiter; the calls still all succeed (it waits, never fails).
    let sb = Sandbox::start(opts("small-org.json")).await;
    let limiter = Arc::new(huitong_connectors::limit::Limiter::new());
    let a = FeishuClient::with_limiter(sb.config(), limiter.clone()).unwrap();
    let b = FeishuClient::with_limiter(sb.config(), limiter).unwrap();
    let (x, y) = tokio::join!(all_users(&a), all_users(&b));
    assert_eq!((x.len(), y.len()), (20, 20));
}

#[tokio::test]
async fn a_user_message_to_the_bot_emits_the_receive_event() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let (s, v) = sb
        .admin(
            reqwest::Method::POST,
            "/_sandbox/im/receive",
            Some(json!({"from": "u1", "text": "在吗"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = sb
        .admin(
            reqwest::Method::POST,
            "/_sandbox/im/receive",
            Some(json!({"from": "nobody", "text": "x"})),
        )
        .await;
    assert_eq!(s, 404);
    let ev = sb.get("/_sandbox/events").await;
    let e = &ev["events"].as_array().unwrap()[0]["event"];
    assert_eq!(e["header"]["event_type"], "im.message.receive_v1");
    assert_eq!(e["event"]["message"]["message_id"], v["message_id"]);
    assert_eq!(e["event"]["message"]["chat_type"], "p2p");
    // content is a JSON string, as Feishu sends it
    let content: Value =
        serde_json::from_str(e["event"]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"text": "在吗"}));
    let snap = sb.get("/_sandbox/org").await;
    let u1 = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["key"] == "u1")
        .unwrap();
    assert_eq!(
        e["event"]["sender"]["sender_id"]["open_id"],
        u1["feishu"]["open_id"]
    );
}

#[tokio::test]
async fn uploads_beyond_the_default_body_limit_and_over_the_cap() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let c = sb.client();
    let big = bytes::Bytes::from(vec![7u8; 3 * 1024 * 1024]);
    let key = c.upload_image(big.clone()).await.unwrap();
    assert_eq!(c.download_image(&key).await.unwrap(), big);
    // Over the image cap: refused before any call.
    let calls_before = sb.get("/_sandbox/calls").await["total"].as_u64().unwrap();
    let e = c
        .upload_image(bytes::Bytes::from(vec![0u8; 10 * 1024 * 1024 + 1]))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert_eq!(
        sb.get("/_sandbox/calls").await["total"].as_u64().unwrap(),
        calls_before
    );
    let e = c
        .upload_file("exe", "a.exe", bytes::Bytes::from_static(b"MZ"))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn serve_returns_when_shutdown_resolves() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(serve(listener, opts("small-org.json"), async move {
        let _ = rx.await;
    }));
    // Serving, with an idle keep-alive connection open.
    let http = reqwest::Client::new();
    let org: Value = http.get(format!("{base}/_sandbox/org")).json_reply().await;
    assert_eq!(org["users"].as_array().unwrap().len(), 20);
    tx.send(()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("serve returned")
        .unwrap();
    assert!(r.is_ok());
    assert!(
        http.get(format!("{base}/_sandbox/org"))
            .send()
            .await
            .is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn bad_options_are_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut o = opts("small-org.json");
    o.event_url = Some("ftp://x".into());
    assert!(serve(listener, o, async {}).await.is_err());
}

#[tokio::test]
async fn metering_reports_count_times_and_peaks_per_endpoint() {
    let sb = Sandbox::start(opts("small-org.json")).await;
    let c = sb.client();
    for _ in 0..12 {
        c.get_department("0").await.unwrap();
    }
    let calls = sb.get("/_sandbox/calls").await;
    let ep = "GET /open-apis/contact/v3/departments/{id}";
    // The existing keys are unchanged.
    assert_eq!(calls["calls"][ep], 12, "{calls}");
    assert!(calls["total"].as_u64().unwrap() >= 12);
    let w = &calls["windows"][ep];
    assert_eq!(w["count"], 12, "{calls}");
    assert_eq!(w["peak_60s"], 12, "{calls}");
    let p1 = w["peak_1s"].as_u64().unwrap();
    assert!((1..=12).contains(&p1), "{calls}");
    assert!(w["first_ms"].as_i64().unwrap() <= w["last_ms"].as_i64().unwrap());
    assert_eq!(w["rate_limited"], 0);
}

#[tokio::test]
async fn enforced_limits_answer_429_over_the_quota_then_let_calls_through() {
    let mut o = opts("small-org.json");
    o.enforce_rate_limits = true;
    // Tier 4 (50/s, 1000/min) scaled to 5/s and 100/min.
    o.rate_limit_scale = RateScale {
        calls: 0.1,
        time: 1.0,
    };
    let sb = Sandbox::start(o).await;
    let http = reqwest::Client::new();
    let token = sb.tenant_token().await;
    let call = |path: &'static str| {
        let (http, token, base) = (http.clone(), token.clone(), sb.base.clone());
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let h = |k: &str| r.headers().get(k).map(|v| v.to_str().unwrap().to_string());
            let (limit, reset) = (h("x-ogw-ratelimit-limit"), h("x-ogw-ratelimit-reset"));
            let v: Value = r.json().await.unwrap();
            (status, v, limit, reset)
        }
    };
    let members = "/open-apis/contact/v3/users/find_by_department?department_id=0";
    for _ in 0..5 {
        let (status, v, _, _) = call(members).await;
        assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    }
    let (status, v, limit, reset) = call(members).await;
    assert_eq!(status, 429);
    assert_eq!(v["code"], 99991400);
    assert_eq!(v["msg"], "request trigger frequency limit");
    assert_eq!(limit.as_deref(), Some("5"));
    assert_eq!(reset.as_deref(), Some("1"));
    // Limits are per API: another contact API still answers.
    let (status, _, _, _) = call("/open-apis/contact/v3/departments/0").await;
    assert_eq!(status, 200);
    // Once the second has slid by, the API answers again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, v, _, _) = call(members).await;
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    let calls = sb.get("/_sandbox/calls").await;
    let ep = "GET /open-apis/contact/v3/users/find_by_department";
    assert_eq!(calls["windows"][ep]["rate_limited"], 1, "{calls}");
    assert_eq!(calls["windows"][ep]["count"], 7, "{calls}");
    assert_eq!(calls["rate_limited"][ep], 1, "{calls}");
    assert_eq!(calls["calls"][ep], 7, "{calls}");
}
