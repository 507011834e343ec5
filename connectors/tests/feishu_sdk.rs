//! The Feishu sandbox checked by the official SDK (lark-oapi): token, paged user listing, user
//! creation, message sending, the contact writes sync makes (a department and a user created,
//! read, listed, patched, updated and deleted; the script checks each effect in `/_sandbox/org`),
//! and the SDK's webhook handler on the sandbox's signed events.
//!
//! Needs `HUITONG_TEST_PYTHON` = a python with lark-oapi installed (e.g. a venv made with
//! `python3 -m venv V && V/bin/pip install lark-oapi`). Without it the test is skipped, unless
//! `HUITONG_TEST_REQUIRE_SERVICES=1`, in which case it fails.

mod common;

use common::{Sandbox, assert_calls_at_least, flags, org, run_sdk_check, sdk_python};
use huitong_connectors::feishu::sandbox::SandboxOptions;
use serde_json::{Value, json};

#[tokio::test]
async fn lark_oapi_against_the_sandbox() {
    let Some(python) = sdk_python() else { return };
    let mut capture = common::Capture::start(r#"{"msg":"success"}"#).await;
    let mut opts = SandboxOptions::new(org("medium-org.json"), "cli_sdk", "sdk-secret");
    opts.encrypt_key = Some("sdk-encrypt-key".to_string().into());
    opts.verification_token = Some("sdk-verify".to_string().into());
    opts.event_url = Some(capture.url.clone());
    let sb = Sandbox::start(opts).await;

    // Two console changes -> two signed, encrypted deliveries captured, kept for the SDK's
    // handler: the signature headers and the body.
    let events: Vec<Value> = common::two_captured_changes(&sb, &mut capture)
        .await
        .into_iter()
        .map(|r| {
            let h: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .filter(|(k, _)| k.as_str().starts_with("x-lark-"))
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                .collect();
            json!({"headers": h, "body": String::from_utf8_lossy(&r.body)})
        })
        .collect();
    let events_file = common::temp_json("feishu-sdk", &events);

    let args = flags(&[
        ("base", &sb.base),
        ("app-id", "cli_sdk"),
        ("app-secret", "sdk-secret"),
        ("encrypt-key", "sdk-encrypt-key"),
        ("verification-token", "sdk-verify"),
        ("events", &events_file.arg()),
    ]);
    run_sdk_check(python, "feishu_sdk_check.py", args).await;

    // The SDK's calls reached the sandbox: one token, the paged listing, the create, the send.
    let calls = sb.get("/_sandbox/calls").await;
    assert_calls_at_least(
        &calls,
        "GET /open-apis/contact/v3/users/find_by_department",
        2,
    );
    assert_eq!(
        calls["calls"]["POST /open-apis/contact/v3/users"], 2,
        "{calls}"
    );
    assert_eq!(calls["calls"]["POST /open-apis/im/v1/messages"], 1);
    // The contact writes, each reaching its route (the department delete twice: refused while it
    // has a member, then done).
    for (call, n) in [
        ("POST /open-apis/contact/v3/departments", 1),
        ("PATCH /open-apis/contact/v3/departments/{id}", 1),
        ("DELETE /open-apis/contact/v3/departments/{id}", 2),
        ("PATCH /open-apis/contact/v3/users/{id}", 1),
        ("PUT /open-apis/contact/v3/users/{id}", 1),
        ("DELETE /open-apis/contact/v3/users/{id}", 1),
    ] {
        assert_eq!(calls["calls"][call], n, "{call}: {calls}");
    }
    // What the SDK created and deleted again is gone; the first user it created stays.
    let snap = sb.get("/_sandbox/org").await;
    let names: Vec<&str> = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(names.contains(&"SDK 用户") && !names.iter().any(|n| n.starts_with("SDK 写入")));
    assert!(
        !snap["departments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"].as_str().unwrap_or("").starts_with("SDK 部门"))
    );
}
