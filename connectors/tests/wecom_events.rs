//! WeCom callbacks end to end: the sandbox delivers XML callbacks, encrypted and signed
//! (WXBizMsgCrypt), to an event URL where huitong's receiver (`WecomReceiver`) verifies,
//! decrypts and de-duplicates them; the URL verification handshake; rejections.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{HubServer, Sandbox, org};
use huitong_connectors::capability::{CallbackError, InMemoryDedup};
use huitong_connectors::wecom::events::{CallbackConfig, WecomReceiver, parse_xml};
use huitong_connectors::wecom::sandbox::SandboxOptions;
use huitong_connectors::wecom::{WecomClient, WecomConfig};
use serde_json::json;

const CORP: &str = "ww0123456789abcdef";
const TOKEN: &str = "cb-token-123";
const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";

/// A sandbox for `sandbox_corp` delivering its callbacks to a hub-like receiver for `CORP`
/// (which refuses the first `fail_first` deliveries with a 500).
struct Setup {
    sb: Sandbox,
    hub: HubServer<WecomReceiver>,
}

impl Setup {
    /// A console call: its status.
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> u16 {
        self.sb.admin(method, path, body).await.0
    }
}

async fn setup(fail_first: usize, sandbox_corp: &str) -> Setup {
    let receiver = WecomReceiver::new(
        CallbackConfig::new(TOKEN.to_string().into(), AES_KEY.to_string().into(), CORP),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap();
    let hub = HubServer::start(receiver, "/callbacks/wecom/main", fail_first).await;
    let mut opts = SandboxOptions::new(org("small-org.json"), sandbox_corp, "s3cret", 1000002);
    opts.token = Some(TOKEN.to_string().into());
    opts.encoding_aes_key = Some(AES_KEY.to_string().into());
    opts.event_url = Some(hub.url.clone());
    opts.event_retry_delays = vec![
        std::time::Duration::from_millis(50),
        std::time::Duration::from_millis(100),
    ];
    Setup {
        sb: Sandbox::start(opts).await,
        hub,
    }
}

#[tokio::test]
async fn every_change_arrives_encrypted_signed_and_accepted() {
    let mut s = setup(0, CORP).await;
    use reqwest::Method;
    s.sb.console(vec![
        (
            Method::POST,
            "/_sandbox/org/departments",
            Some(json!({"key": "d9", "name": "新部门", "parent": "d0"})),
            201,
        ),
        (
            Method::POST,
            "/_sandbox/org/users",
            Some(
                json!({"key": "newbie", "name": "新人", "departments": ["d9", "d1"], "mobile": "13700000000", "title": "实习生"}),
            ),
            201,
        ),
        (
            Method::PATCH,
            "/_sandbox/org/users/newbie",
            Some(json!({"title": "工程师"})),
            200,
        ),
        (Method::DELETE, "/_sandbox/org/users/newbie", None, 204),
        (
            Method::PATCH,
            "/_sandbox/org/departments/d9",
            Some(json!({"name": "改名部门"})),
            200,
        ),
        (Method::DELETE, "/_sandbox/org/departments/d9", None, 204),
    ])
    .await;
    // A change through the API, and a member writing to the app.
    let mut cfg = WecomConfig::new(
        s.sb.base.clone(),
        CORP,
        "s3cret".to_string().into(),
        1000002,
    );
    cfg.transport.retry.max_retries = 0;
    WecomClient::new(cfg)
        .unwrap()
        .update_user("u1", json!({"position": "总监"}))
        .await
        .unwrap();
    let (status, _) =
        s.sb.post(
            "/_sandbox/message/receive",
            json!({"from": "u0", "text": "请假申请"}),
        )
        .await;
    assert_eq!(status, 201);
    s.hub.wait(8).await;

    let events = s.hub.events();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "change_contact.create_party",
            "change_contact.create_user",
            "change_contact.update_user",
            "change_contact.delete_user",
            "change_contact.update_party",
            "change_contact.delete_party",
            "change_contact.update_user",
            "message.text",
        ]
    );
    assert!(s.hub.rejected().is_empty());
    let create = &events[1].payload;
    assert_eq!(create["UserID"], "newbie");
    assert_eq!(create["FromUserName"], "sys");
    assert_eq!(create["ToUserName"], CORP);
    assert_eq!(create["Position"], "实习生");
    assert_eq!(create["Mobile"], "13700000000");
    assert_eq!(create["Status"], "1");
    let d9 = events[0].payload["Id"].as_str().unwrap().to_string();
    assert_eq!(
        create["Department"],
        format!("{d9},2").as_str(),
        "comma-separated ids"
    );
    assert_eq!(create["MainDepartment"], d9.as_str());
    assert_eq!(create["IsLeaderInDept"], "0,0");
    assert_eq!(events[0].payload["ParentId"], "1");
    assert_eq!(events[3].payload["UserID"], "newbie");
    assert_eq!(events[5].payload["Id"], d9.as_str());
    assert_eq!(events[6].payload["Position"], "总监");
    let msg = &events[7].payload;
    assert_eq!(msg["Content"], "请假申请");
    assert_eq!(msg["FromUserName"], "u0");
    assert_eq!(msg["AgentID"], "1000002");
    assert!(events[7].event_id.starts_with("msg:"));
    assert!(events.iter().all(|e| e.created_at_ms.is_some()));

    // On the wire: signed query string, XML envelope, text/xml.
    {
        let first = s.hub.raw(0);
        for k in ["msg_signature", "timestamp", "nonce"] {
            assert!(first.query.contains_key(k), "{k}");
        }
        assert!(
            first.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/xml")
        );
        let env = parse_xml(std::str::from_utf8(&first.body).unwrap()).unwrap();
        assert_eq!(env["ToUserName"], CORP);
        assert!(env["Encrypt"].as_str().unwrap().len() > 40);
    }

    let sandbox_events = s.sb.events().await;
    assert_eq!(sandbox_events.len(), 8);
    assert!(sandbox_events.iter().all(|e| e["delivery"] == "delivered"));
}

#[tokio::test]
async fn failed_deliveries_are_retried() {
    let mut s = setup(2, CORP).await;
    assert_eq!(
        s.admin(reqwest::Method::DELETE, "/_sandbox/org/users/u5", None)
            .await,
        204
    );
    s.hub.wait(1).await;
    let events = s.hub.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "change_contact.delete_user");
    // The record updates right after the hub's answer.
    let ev = s.sb.first_event_settled().await;
    assert_eq!(ev["delivery"], "delivered");
    assert_eq!(ev["attempts"], 3);
}

#[tokio::test]
async fn replays_tampering_and_stale_requests_are_rejected() {
    let mut s = setup(0, CORP).await;
    assert_eq!(
        s.admin(
            reqwest::Method::PATCH,
            "/_sandbox/org/users/u2",
            Some(json!({"title": "经理"}))
        )
        .await,
        200
    );
    s.hub.wait(1).await;
    let common::RawRequest { query, body, .. } = s.hub.raw(0);
    let http = reqwest::Client::new();
    let post = |query: HashMap<String, String>| {
        let req = http.post(&s.hub.url).query(&query).body(body.clone());
        async move { req.send().await.unwrap().status() }
    };
    // The same request again: acknowledged (200) but not processed a second time.
    assert_eq!(post(query.clone()).await, 200);
    assert_eq!(s.hub.events().len(), 1);
    // Tampered signature.
    let mut bad = query.clone();
    bad.insert("msg_signature".into(), "0".repeat(40));
    assert_eq!(post(bad).await, 401);
    // Different timestamp than the one signed.
    let mut moved = query.clone();
    let ts: i64 = moved["timestamp"].parse().unwrap();
    moved.insert("timestamp".into(), (ts + 1).to_string());
    assert_eq!(post(moved).await, 401);
    // Missing signature parameters.
    assert_eq!(post(HashMap::new()).await, 401);
    // The same genuine request, presented outside the window (a late replay).
    let late = s
        .hub
        .hub
        .receiver
        .handle_at(&query, &body, ts + 301)
        .await
        .unwrap_err();
    assert_eq!(late, CallbackError::StaleTimestamp);
    let rejected = s.hub.rejected();
    assert_eq!(
        rejected,
        vec![
            CallbackError::BadSignature,
            CallbackError::BadSignature,
            CallbackError::MissingSignature
        ]
    );
}

#[tokio::test]
async fn callbacks_for_another_corp_are_rejected() {
    let mut s = setup(0, "wwSOMEOTHERCORP").await;
    assert_eq!(
        s.admin(reqwest::Method::DELETE, "/_sandbox/org/users/u3", None)
            .await,
        204
    );
    // First attempt plus two retries, each refused.
    s.hub.wait(3).await;
    assert!(s.hub.events().is_empty());
    let rejected = s.hub.rejected();
    assert_eq!(rejected.len(), 3);
    assert!(
        rejected
            .iter()
            .all(|e| *e == CallbackError::Decrypt(huitong_connectors::receiver::OPAQUE.into()))
    );
    assert_eq!(s.sb.first_event_settled().await["delivery"], "failed");
}

#[tokio::test]
async fn url_verification_answers_the_bare_plaintext() {
    let s = setup(0, CORP).await;
    // Build the GET as WeCom does when the admin saves the callback URL.
    let echo_plain = "7390215448262103785";
    let crypt = s.hub.hub.receiver.crypt();
    let echostr = crypt.encrypt(echo_plain.as_bytes(), CORP);
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = crypt.signature(&ts, "1372623149", &echostr);
    let verify = |sig: &str| {
        reqwest::Client::new().get(&s.hub.url).query(&[
            ("msg_signature", sig),
            ("timestamp", ts.as_str()),
            ("nonce", "1372623149"),
            ("echostr", echostr.as_str()),
        ])
    };
    let r = verify(&sig).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), echo_plain.as_bytes());
    // A wrong signature gets no plaintext.
    let r = verify("deadbeef").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(s.hub.events().is_empty());
}

/// base64 of AES-256-CBC(key, iv = key[..16], `blocks`), `blocks` not padded here.
fn raw_encrypt(blocks: &[u8]) -> String {
    use base64::Engine;
    let key = huitong_connectors::wxbiz::decode_aes_key(AES_KEY).unwrap();
    let ct = huitong_connectors::crypto::aes256_cbc_encrypt_raw(&key, &key[..16], blocks).unwrap();
    base64::engine::general_purpose::STANDARD.encode(ct)
}

/// Issue 21, finding 2: whatever a correctly signed callback's ciphertext turns out to be
/// once decrypted (bad padding, a malformed buffer, another corp, not UTF-8, not XML, no
/// MsgType), the answer is one and the same, for POSTed events and for the GET verification.
#[tokio::test]
async fn signed_callbacks_that_cannot_be_opened_are_refused_alike() {
    use huitong_connectors::crypto::pkcs7_pad;
    use huitong_connectors::wecom::events::envelope_xml;
    let r = WecomReceiver::new(
        CallbackConfig::new(TOKEN.to_string().into(), AES_KEY.to_string().into(), CORP),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap();
    let crypt = r.crypt();
    let now = 1_700_000_000;
    let ts = now.to_string();
    let padded = |plain: &[u8]| {
        let mut v = plain.to_vec();
        pkcs7_pad(&mut v, 32);
        raw_encrypt(&v)
    };
    let mut bad_padding = vec![b'x'; 32];
    bad_padding[31] = 0;
    let mut long_len = vec![0u8; 16];
    long_len.extend_from_slice(&1000u32.to_be_bytes());
    long_len.extend_from_slice(b"abc");
    let event = "<xml><ToUserName>c</ToUserName><FromUserName>sys</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>delete_user</ChangeType><UserID>x</UserID></xml>";
    let cases: Vec<(&str, String)> = vec![
        ("bad padding", raw_encrypt(&bad_padding)),
        ("padding of 16 in a 32-byte block", raw_encrypt(&[16u8; 32])),
        ("buffer too short", padded(b"short")),
        ("length field beyond the buffer", padded(&long_len)),
        (
            "another corp",
            crypt.encrypt(event.as_bytes(), "wwOTHERCORP"),
        ),
        ("not UTF-8", crypt.encrypt(b"\xff\xfe<xml/>", CORP)),
        ("not XML", crypt.encrypt(b"not xml <", CORP)),
        ("no MsgType", crypt.encrypt(b"<xml><A>1</A></xml>", CORP)),
        (
            "event without Event",
            crypt.encrypt(b"<xml><MsgType>event</MsgType></xml>", CORP),
        ),
        ("not base64", "***".into()),
        (
            "not whole blocks",
            raw_encrypt(&[1u8; 16])[..10].to_string(),
        ),
    ];
    let mut posted = std::collections::BTreeMap::new();
    let mut verified = std::collections::BTreeMap::new();
    for (i, (what, enc)) in cases.iter().enumerate() {
        let nonce = format!("n{i}");
        let sig = crypt.signature(&ts, &nonce, enc);
        let mut q: HashMap<String, String> = [
            ("msg_signature", sig),
            ("timestamp", ts.clone()),
            ("nonce", nonce),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let body = envelope_xml(CORP, enc, Some(1000002));
        let e = r.handle_at(&q, body.as_bytes(), now).await.unwrap_err();
        posted
            .entry(format!("{} {e}", e.status()))
            .or_insert_with(Vec::new)
            .push(*what);
        // The same ciphertext as a GET URL verification's echostr.
        q.insert("echostr".into(), enc.clone());
        if let Err(e) = r.handle_at(&q, b"", now).await {
            verified
                .entry(format!("{} {e}", e.status()))
                .or_insert_with(Vec::new)
                .push(*what);
        }
    }
    assert_eq!(posted.len(), 1, "POST, distinct answers: {posted:#?}");
    // As an echostr, any decryptable buffer for this corp is a valid echo: only the ones that
    // cannot be opened are refused, and alike.
    assert_eq!(verified.len(), 1, "GET, distinct answers: {verified:#?}");
    assert_eq!(posted.keys().next(), verified.keys().next());
    let only = posted.keys().next().unwrap();
    assert!(
        !only.contains("padding") && !only.contains("receive id"),
        "{only}"
    );
}
