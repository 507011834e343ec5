//! The client core, the same on every vendor: a token the vendor rejects is dropped and
//! fetched again once per attempt; a freshly fetched token rejected again is transient (the
//! retry policy backs off and tries again) — never a step failed at once, on any vendor.

mod common;

use common::{Sandbox, fast_retry};
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::http::RetryPolicy;
use huitong_connectors::sandbox::FaultSpec;
use huitong_connectors::{ConnectorError, ErrorClass};
use huitong_connectors::{dingtalk, feishu, wecom};

fn org() -> OrgFixture {
    common::org("small-org.json")
}

fn retry(max_retries: usize) -> RetryPolicy {
    fast_retry(10, max_retries)
}

/// Every API call is answered "token invalid" (the token endpoint itself is not faulted).
fn always_rejected() -> FaultSpec {
    FaultSpec::parse("token=1").expect("fault spec")
}

/// A freshly fetched token rejected again: transient, after one refetch per attempt (three
/// attempts, each with the cached token and then one fresh one: 1 + 3 fetches).
#[track_caller]
fn assert_retried_as_transient(vendor: &str, e: &ConnectorError, token_fetches: u64) {
    assert_eq!(e.class(), ErrorClass::Retryable, "{vendor}: {e}");
    assert!(
        e.message().contains("fresh token rejected"),
        "{vendor}: {e}"
    );
    assert_eq!(token_fetches, 4, "{vendor}: one refetch per attempt");
}

#[tokio::test]
async fn a_fresh_token_rejected_again_is_retried_the_same_on_every_vendor() {
    // Feishu
    let mut o = feishu::sandbox::SandboxOptions::new(org(), "cli_k", "s");
    o.faults = always_rejected();
    let sb = Sandbox::start(o).await;
    let mut cfg = feishu::FeishuConfig::new(sb.base.clone(), "cli_k", "s".to_string().into());
    cfg.transport.retry = retry(2);
    let c = feishu::FeishuClient::new(cfg).unwrap();
    let e = c.get_user("ou_x").await.unwrap_err();
    assert_retried_as_transient("feishu", &e, c.token_fetches());
    assert_eq!(sb.calls("GET /open-apis/contact/v3/users/{id}").await, 6);

    // DingTalk
    let mut o = dingtalk::sandbox::SandboxOptions::new(org(), "dingk", "s");
    o.faults = always_rejected();
    let sb = Sandbox::start(o).await;
    let mut cfg =
        dingtalk::DingTalkConfig::for_sandbox(sb.base.clone(), "dingk", "s".to_string().into());
    cfg.transport.retry = retry(2);
    let c = dingtalk::DingTalkClient::new(cfg).unwrap();
    let e = c.get_user("u1").await.unwrap_err();
    assert_retried_as_transient("dingtalk", &e, c.token_fetches());

    // WeCom
    let mut o = wecom::sandbox::SandboxOptions::new(org(), "wwk", "s", 1000002);
    o.faults = always_rejected();
    let sb = Sandbox::start(o).await;
    let mut cfg = wecom::WecomConfig::new(sb.base.clone(), "wwk", "s".to_string().into(), 1000002);
    cfg.transport.retry = retry(2);
    let c = wecom::WecomClient::new(cfg).unwrap();
    let e = c.get_user("u1").await.unwrap_err();
    assert_retried_as_transient("wecom", &e, c.token_fetches());
}

#[tokio::test]
async fn a_token_rejected_once_is_refetched_and_the_call_succeeds() {
    let o = feishu::sandbox::SandboxOptions::new(org(), "cli_k", "s");
    let sb = Sandbox::start(o).await;
    let mut cfg = feishu::FeishuConfig::new(sb.base.clone(), "cli_k", "s".to_string().into());
    cfg.transport.retry = retry(0);
    let c = feishu::FeishuClient::new(cfg).unwrap();
    c.get_user("u1").await.unwrap();
    assert_eq!(sb.expire_tokens().await, 204);
    c.get_user("u1").await.unwrap();
    assert_eq!(c.token_fetches(), 2, "the expired token was replaced once");
}
