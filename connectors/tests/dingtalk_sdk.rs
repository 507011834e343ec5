//! The DingTalk sandbox checked by the official SDKs: `alibabacloud-dingtalk` gets a token,
//! creates and lists a todo and sends robot messages; `dingtalk-stream` connects to the
//! sandbox's Stream gateway, receives an event and acks it.
//!
//! Needs `HUITONG_TEST_PYTHON` = a python with both SDKs (`connectors/tests/sdk/setup_venv.sh`).
//! Without it the test is skipped, unless `HUITONG_TEST_REQUIRE_SERVICES=1`, where it fails.

use std::path::PathBuf;

use huitong_connectors::dingtalk::sandbox::{SandboxOptions, serve};
use huitong_connectors::fixture::OrgFixture;
use serde_json::Value;

#[tokio::test]
async fn official_sdks_against_the_sandbox() {
    let Some(python) = std::env::var_os("HUITONG_TEST_PYTHON") else {
        if std::env::var("HUITONG_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("HUITONG_TEST_PYTHON not set but HUITONG_TEST_REQUIRE_SERVICES=1");
        }
        println!("SKIPPED: HUITONG_TEST_PYTHON not set");
        return;
    };
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let org = OrgFixture::load(&manifest.join("../tests/fixtures/small-org.json")).unwrap();
    let opts = SandboxOptions::new(org, "dingsdkapp", "sdk-secret");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, srx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, opts, async move {
            let _ = srx.await;
        })
        .await
        .unwrap()
    });

    let snap: Value = reqwest::get(format!("{base}/_sandbox/org"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let u1 = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["key"] == "u1")
        .unwrap();
    let union_id = u1["dingtalk"]["unionid"].as_str().unwrap().to_string();

    let script = manifest.join("tests/sdk/dingtalk_sdk_check.py");
    let args: Vec<String> = vec![
        script.display().to_string(),
        "--base".into(),
        base.clone(),
        "--app-key".into(),
        "dingsdkapp".into(),
        "--app-secret".into(),
        "sdk-secret".into(),
        "--union-id".into(),
        union_id.clone(),
        "--user-id".into(),
        "u1".into(),
        "--dept-key".into(),
        "d0".into(),
    ];
    let out =
        tokio::task::spawn_blocking(move || std::process::Command::new(python).args(args).output())
            .await
            .unwrap()
            .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "SDK check failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ALL SDK CHECKS PASSED"),
        "{stdout}\n{stderr}"
    );

    // The SDKs' calls reached the sandbox, and the state changed.
    let calls: Value = reqwest::get(format!("{base}/_sandbox/calls"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        calls["calls"]["POST /v1.0/oauth2/accessToken"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(calls["calls"]["POST /v1.0/todo/users/{union_id}/tasks"], 1);
    assert_eq!(calls["calls"]["POST /v1.0/robot/groupMessages/send"], 1);
    assert!(
        calls["calls"]["POST /v1.0/gateway/connections/open"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let msgs: Value = reqwest::get(format!("{base}/_sandbox/messages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let m = &msgs["messages"][0];
    assert_eq!(m["via"], "robot_group");
    assert_eq!(m["msgParam"]["content"], "来自SDK");
    let stream: Value = reqwest::get(format!("{base}/_sandbox/stream"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stream["pending"], 0);
}
