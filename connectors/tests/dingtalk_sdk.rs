//! The DingTalk sandbox checked by the official SDKs: `alibabacloud-dingtalk` gets a token,
//! creates and lists a todo and sends robot messages, and drives the old API's org chart calls
//! sync uses (`topapi/v2` department and user list/get/create/update/delete, through the SDK's
//! generic `execute`: no official Python SDK wraps them; the script checks each effect in
//! `/_sandbox/org`); `dingtalk-stream` connects to the sandbox's Stream gateway, receives an
//! event and acks it.
//!
//! Needs `HUITONG_TEST_PYTHON` = a python with both SDKs (`connectors/tests/sdk/setup_venv.sh`).
//! Without it the test is skipped, unless `HUITONG_TEST_REQUIRE_SERVICES=1`, where it fails.

mod common;

use common::{Sandbox, assert_calls_at_least, find, flags, org, run_sdk_check, sdk_python};
use huitong_connectors::dingtalk::sandbox::SandboxOptions;

#[tokio::test]
async fn official_sdks_against_the_sandbox() {
    let Some(python) = sdk_python() else { return };
    let sb = Sandbox::start(SandboxOptions::new(
        org("small-org.json"),
        "dingsdkapp",
        "sdk-secret",
    ))
    .await;
    let snap = sb.get("/_sandbox/org").await;
    let u1 = find(&snap["users"], "key", "u1").unwrap();
    let union_id = u1["dingtalk"]["unionid"].as_str().unwrap().to_string();

    let args = flags(&[
        ("base", &sb.base),
        ("app-key", "dingsdkapp"),
        ("app-secret", "sdk-secret"),
        ("union-id", &union_id),
        ("user-id", "u1"),
        ("dept-key", "d0"),
    ]);
    run_sdk_check(python, "dingtalk_sdk_check.py", args).await;

    // The SDKs' calls reached the sandbox, and the state changed.
    let calls = sb.get("/_sandbox/calls").await;
    assert_calls_at_least(&calls, "POST /v1.0/oauth2/accessToken", 1);
    assert_eq!(calls["calls"]["POST /v1.0/todo/users/{union_id}/tasks"], 1);
    assert_eq!(calls["calls"]["POST /v1.0/robot/groupMessages/send"], 1);
    assert_calls_at_least(&calls, "POST /v1.0/gateway/connections/open", 1);
    // The org chart calls, each reaching its route (department/delete twice: refused while it
    // has a member, then done; user/get once more with a bad token).
    for (call, n) in [
        ("POST /topapi/v2/department/create", 1),
        ("POST /topapi/v2/department/update", 1),
        ("POST /topapi/v2/department/delete", 2),
        ("POST /topapi/v2/department/get", 2),
        ("POST /topapi/v2/user/create", 1),
        ("POST /topapi/v2/user/update", 1),
        ("POST /topapi/v2/user/delete", 1),
        ("POST /topapi/v2/user/get", 3),
        ("POST /topapi/v2/user/list", 2),
    ] {
        assert_eq!(calls["calls"][call], n, "{call}: {calls}");
    }
    assert_calls_at_least(&calls, "POST /topapi/v2/department/listsub", 4);
    let snap = sb.get("/_sandbox/org").await;
    assert!(find(&snap["users"], "key", "sdkwriter").is_none());
    assert_eq!(snap["departments"].as_array().unwrap().len(), 3);
    let m = &sb.messages().await[0];
    assert_eq!(m["via"], "robot_group");
    assert_eq!(m["msgParam"]["content"], "来自SDK");
    let stream = sb.get("/_sandbox/stream").await;
    assert_eq!(stream["pending"], 0);
}
