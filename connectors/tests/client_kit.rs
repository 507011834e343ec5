//! The client core, the same on every vendor: a token the vendor rejects is dropped and
//! fetched again once per attempt; a freshly fetched token rejected again is transient (the
//! retry policy backs off and tries again) — never a step failed at once, on any vendor.

use std::path::PathBuf;
use std::time::Duration;

use huitong_connectors::ErrorClass;
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::http::RetryPolicy;
use huitong_connectors::sandbox::{FaultSpec, Running};
use huitong_connectors::{dingtalk, feishu, wecom};

fn org() -> OrgFixture {
    OrgFixture::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/small-org.json"),
    )
    .expect("fixture")
}

fn retry(max_retries: usize) -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
        max_retries,
    }
}

/// Every API call is answered "token invalid" (the token endpoint itself is not faulted).
fn always_rejected() -> FaultSpec {
    FaultSpec::parse("token=1").expect("fault spec")
}

#[tokio::test]
async fn a_fresh_token_rejected_again_is_retried_the_same_on_every_vendor() {
    // Feishu
    let mut o = feishu::sandbox::SandboxOptions::new(org(), "cli_k", "s");
    o.faults = always_rejected();
    let sb = Running::start(o).await.unwrap();
    let mut cfg = feishu::FeishuConfig::new(sb.base.clone(), "cli_k", "s".to_string().into());
    cfg.transport.retry = retry(2);
    let c = feishu::FeishuClient::new(cfg).unwrap();
    let e = c.get_user("ou_x").await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Retryable, "feishu: {e}");
    assert!(e.message().contains("fresh token rejected"), "feishu: {e}");
    // Three attempts, each with the cached token and then one fresh one: 1 + 3 fetches.
    assert_eq!(c.token_fetches(), 4, "feishu: one refetch per attempt");
    assert_eq!(
        sb.calls("GET /open-apis/contact/v3/users/{id}")
            .await
            .unwrap(),
        6
    );

    // DingTalk
    let mut o = dingtalk::sandbox::SandboxOptions::new(org(), "dingk", "s");
    o.faults = always_rejected();
    let sb = Running::start(o).await.unwrap();
    let mut cfg =
        dingtalk::DingTalkConfig::for_sandbox(sb.base.clone(), "dingk", "s".to_string().into());
    cfg.transport.retry = retry(2);
    let c = dingtalk::DingTalkClient::new(cfg).unwrap();
    let e = c.get_user("u1").await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Retryable, "dingtalk: {e}");
    assert!(
        e.message().contains("fresh token rejected"),
        "dingtalk: {e}"
    );
    assert_eq!(c.token_fetches(), 4, "dingtalk: one refetch per attempt");

    // WeCom
    let mut o = wecom::sandbox::SandboxOptions::new(org(), "wwk", "s", 1000002);
    o.faults = always_rejected();
    let sb = Running::start(o).await.unwrap();
    let mut cfg = wecom::WecomConfig::new(sb.base.clone(), "wwk", "s".to_string().into(), 1000002);
    cfg.transport.retry = retry(2);
    let c = wecom::WecomClient::new(cfg).unwrap();
    let e = c.get_user("u1").await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Retryable, "wecom: {e}");
    assert!(e.message().contains("fresh token rejected"), "wecom: {e}");
    assert_eq!(c.token_fetches(), 4, "wecom: one refetch per attempt");
}

#[tokio::test]
async fn a_token_rejected_once_is_refetched_and_the_call_succeeds() {
    let o = feishu::sandbox::SandboxOptions::new(org(), "cli_k", "s");
    let sb = Running::start(o).await.unwrap();
    let mut cfg = feishu::FeishuConfig::new(sb.base.clone(), "cli_k", "s".to_string().into());
    cfg.transport.retry = retry(0);
    let c = feishu::FeishuClient::new(cfg).unwrap();
    c.get_user("u1").await.unwrap();
    let (status, _) = sb
        .admin(reqwest::Method::POST, "/_sandbox/tokens/expire", None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    c.get_user("u1").await.unwrap();
    assert_eq!(c.token_fetches(), 2, "the expired token was replaced once");
}
