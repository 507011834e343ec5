//! The WeCom sandbox and receiver checked by wechatpy: `wechatpy.enterprise.WeChatClient`
//! pointed at the sandbox lists departments and users, creates, updates and deletes a department
//! and a member (the script checks each effect in `/_sandbox/org`) and sends messages;
//! `WeChatCrypto` decrypts the sandbox's callbacks and produces callbacks huitong's receiver
//! accepts.
//!
//! Needs `HUITONG_TEST_PYTHON` = a python with wechatpy installed (see tests/sdk/setup_venv.sh
//! and tests/sdk/requirements.txt). Without it the test is skipped, unless
//! `HUITONG_TEST_REQUIRE_SERVICES=1`, in which case it fails.

mod common;

use std::sync::Arc;

use common::{
    Capture, HubServer, Sandbox, assert_calls_at_least, flags, org, run_sdk_check, sdk_python,
};
use huitong_connectors::capability::InMemoryDedup;
use huitong_connectors::wecom::events::{CallbackConfig, WecomReceiver};
use huitong_connectors::wecom::sandbox::SandboxOptions;
use serde_json::{Value, json};

const CORP: &str = "wwsdk0123456789ab";
const SECRET: &str = "sdk-secret";
const AGENT: i64 = 1000002;
const TOKEN: &str = "sdk-token";
const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";

#[tokio::test]
async fn wechatpy_against_the_sandbox_and_the_receiver() {
    let Some(python) = sdk_python() else { return };
    // Where the sandbox delivers its callbacks (captured for wechatpy to decrypt).
    let mut capture = Capture::start("").await;
    // huitong's receiver, for the callbacks wechatpy produces.
    let receiver = WecomReceiver::new(
        CallbackConfig::new(TOKEN.to_string().into(), AES_KEY.to_string().into(), CORP),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap();
    let hub = HubServer::start(receiver, "/callbacks/wecom/main", 0).await;

    let mut opts = SandboxOptions::new(org("medium-org.json"), CORP, SECRET, AGENT);
    opts.token = Some(TOKEN.to_string().into());
    opts.encoding_aes_key = Some(AES_KEY.to_string().into());
    opts.event_url = Some(capture.url.clone());
    let sb = Sandbox::start(opts).await;

    // Two console changes -> two encrypted, signed deliveries captured.
    let events: Vec<Value> = common::two_captured_changes(&sb, &mut capture)
        .await
        .into_iter()
        .map(|r| json!({"query": r.query, "body": String::from_utf8_lossy(&r.body)}))
        .collect();
    let events_file = common::temp_json("wecom-sdk", &events);

    let args = flags(&[
        ("base", &sb.base),
        ("corp-id", CORP),
        ("secret", SECRET),
        ("agent-id", &AGENT.to_string()),
        ("token", TOKEN),
        ("aes-key", AES_KEY),
        ("events", &events_file.arg()),
        ("hub", &hub.url),
    ]);
    run_sdk_check(python, "wecom_sdk_check.py", args).await;

    // wechatpy's callbacks reached the receiver: the message once (the replay was dropped) and
    // the contact change.
    let events = hub.events();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds, vec!["message.text", "change_contact.update_party"]);
    assert_eq!(events[0].payload["Content"], "from wechatpy");
    assert_eq!(events[1].payload["Id"], "2");

    // wechatpy's calls reached the sandbox: one token, the listings, the sends.
    let calls = sb.get("/_sandbox/calls").await;
    assert_eq!(calls["calls"]["GET /cgi-bin/gettoken"], 2, "{calls}"); // the good and the bad secret
    assert_calls_at_least(&calls, "POST /cgi-bin/user/list_id", 2);
    assert_eq!(calls["calls"]["GET /cgi-bin/user/list"], 3, "{calls}");
    // The contact writes sync makes, each once (update: the fields, then enable=0; delete: the
    // department refused while it has a member, then deleted).
    for (call, n) in [
        ("POST /cgi-bin/department/create", 1),
        ("POST /cgi-bin/department/update", 1),
        ("GET /cgi-bin/department/delete", 2),
        ("POST /cgi-bin/user/create", 1),
        ("GET /cgi-bin/user/get", 2),
        ("POST /cgi-bin/user/update", 2),
        ("GET /cgi-bin/user/delete", 1),
    ] {
        assert_eq!(calls["calls"][call], n, "{call}: {calls}");
    }
    // What wechatpy created is gone again; the console's user stays.
    let snap = sb.get("/_sandbox/org").await;
    assert!(common::find(&snap["users"], "key", "sdk.writer").is_none());
    assert!(common::find(&snap["users"], "key", "sdk1").is_some());
    assert_eq!(snap["departments"].as_array().unwrap().len(), 25);
    assert_eq!(calls["calls"]["POST /cgi-bin/message/send"], 3);
    assert_eq!(
        sb.messages().await[0]["content"]["content"],
        "hello from wechatpy"
    );
}
