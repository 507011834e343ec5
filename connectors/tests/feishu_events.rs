//! Feishu events end to end: the sandbox emits encrypted, signed callbacks to an event URL where
//! huitong's receiver (`FeishuReceiver`) verifies, decrypts and de-duplicates them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::{HubServer, Sandbox, org};
use huitong_connectors::capability::{
    CallbackError, CallbackOutcome, CallbackRequest, InMemoryDedup, ReceiveEvents,
};
use huitong_connectors::feishu::events::{CallbackConfig, FeishuReceiver, build_callback};
use huitong_connectors::feishu::sandbox::SandboxOptions;
use serde_json::{Value, json};

const EK: &str = "encrypt-key-123";
const VT: &str = "verify-token-456";

/// The sandbox delivering its events to a hub-like receiver (which refuses the first
/// `fail_first` deliveries with a 500).
struct Setup {
    sb: Sandbox,
    hub: HubServer<FeishuReceiver>,
}

async fn setup(fail_first: usize) -> Setup {
    let receiver = FeishuReceiver::new(
        CallbackConfig::new(Some(EK.to_string().into()), Some(VT.to_string().into())),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap();
    let hub = HubServer::start(receiver, "/callbacks/feishu/main", fail_first).await;
    let mut opts = SandboxOptions::new(org("small-org.json"), "cli_test", "s3cret");
    opts.encrypt_key = Some(EK.to_string().into());
    opts.verification_token = Some(VT.to_string().into());
    opts.event_url = Some(hub.url.clone());
    opts.event_retry_delays = vec![Duration::from_millis(10), Duration::from_millis(10)];
    Setup {
        sb: Sandbox::start(opts).await,
        hub,
    }
}

#[tokio::test]
async fn sandbox_events_are_accepted_once_and_tampering_is_rejected() {
    let mut s = setup(0).await;
    s.sb.add_user(
        json!({"key": "n1", "name": "事件", "departments": ["d0"], "mobile": "13800000000"}),
    )
    .await;
    s.sb.admin(
        reqwest::Method::PATCH,
        "/_sandbox/org/users/n1",
        Some(json!({"name": "事件2"})),
    )
    .await;
    s.hub.wait(2).await;

    {
        let events = s.hub.events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type, "contact.user.created_v3");
        assert_eq!(events[0].payload["header"]["app_id"], "cli_test");
        assert_eq!(events[0].payload["event"]["object"]["name"], "事件");
        assert_eq!(events[1].event_type, "contact.user.updated_v3");
        assert_eq!(events[1].payload["event"]["old_object"]["name"], "事件");
        let first = s.hub.raw(0);
        // On the wire: encrypted body and the three signature headers.
        let body: Value = serde_json::from_slice(&first.body).unwrap();
        assert!(body["encrypt"].is_string() && body.get("schema").is_none());
        for k in [
            "x-lark-request-timestamp",
            "x-lark-request-nonce",
            "x-lark-signature",
        ] {
            assert!(first.headers.contains_key(k), "{k}");
        }
    }
    assert_eq!(s.sb.events().await[0]["delivery"], "delivered");

    // A replay of the same signed request is acknowledged but not processed again.
    let common::RawRequest {
        headers: h,
        body: b,
        ..
    } = s.hub.raw(0);
    let replay = s
        .hub
        .hub
        .receiver
        .handle_callback(&CallbackRequest {
            headers: h.clone(),
            query: Default::default(),
            body: b.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(replay, CallbackOutcome::Duplicate { .. }));

    // Tampered body: rejected with 401 at the hub's endpoint.
    let mut tampered = b.to_vec();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let http = reqwest::Client::new();
    let mut req = http.post(&s.hub.url).body(tampered);
    for (k, v) in h.iter() {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 401);

    // A correctly signed event whose timestamp is an hour old: rejected.
    let env = json!({"schema":"2.0","header":{"event_id":"old-1","event_type":"contact.user.created_v3","create_time":"0","token":VT,"app_id":"cli_test","tenant_key":"t"},"event":{}});
    let stale_ts = chrono::Utc::now().timestamp() - 3600;
    let (hs, bs) = build_callback(Some(EK), &env, stale_ts, "n");
    let mut req = http.post(&s.hub.url).body(bs);
    for (k, v) in hs {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 401);
    assert_eq!(s.hub.events().len(), 2);
}

#[tokio::test]
async fn delivery_is_retried_after_failures() {
    let mut s = setup(2).await;
    s.sb.post(
        "/_sandbox/org/departments",
        json!({"key": "dz", "name": "Z", "parent": "d0"}),
    )
    .await;
    s.hub.wait(1).await;
    assert_eq!(
        s.hub.events()[0].event_type,
        "contact.department.created_v3"
    );
    // The sandbox records the state after its write to the event log; poll it briefly.
    let state = s.sb.first_event_settled().await;
    assert_eq!(state["delivery"], "delivered");
    assert_eq!(state["attempts"], 3);
}

#[tokio::test]
async fn receiver_rejects_wrong_key_and_unknown_signature() {
    let receiver = FeishuReceiver::new(
        CallbackConfig::new(Some(EK.to_string().into()), None),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap();
    let env = json!({"schema":"2.0","header":{"event_id":"x1","event_type":"im.message.receive_v1","create_time":"0","token":"","app_id":"a","tenant_key":"t"},"event":{}});
    let now = chrono::Utc::now().timestamp();
    // Signed with another key.
    let (h, b) = build_callback(Some("another key"), &env, now, "n");
    let mut headers = HeaderMap::new();
    for (k, v) in h {
        headers.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let r = receiver
        .handle_callback(&CallbackRequest {
            headers,
            query: Default::default(),
            body: Bytes::from(b),
        })
        .await;
    assert_eq!(r, Err(CallbackError::BadSignature));
}

// --- The padding oracle (issue 21, finding 2) --------------------------------------------------
//
// An attacker without the Encrypt Key sends ciphertexts of their own (modified captures) with no
// or wrong signature headers. Whatever those ciphertexts decrypt to — bad padding, good padding
// but not JSON, a real event, a challenge with a wrong token — the answer must be one and the
// same, or it tells them something about the plaintext.

mod oracle {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use huitong_connectors::crypto;

    /// `{"encrypt": base64(iv ‖ AES-256-CBC(key, iv, blocks))}`, `blocks` NOT padded here.
    pub fn body(key: &str, iv: [u8; 16], blocks: &[u8]) -> Vec<u8> {
        let ct =
            crypto::aes256_cbc_encrypt_raw(&crypto::sha256(key.as_bytes()), &iv, blocks).unwrap();
        raw_body(&iv, &ct)
    }

    /// `{"encrypt": base64(iv ‖ ct)}`.
    pub fn raw_body(iv: &[u8], ct: &[u8]) -> Vec<u8> {
        let mut data = iv.to_vec();
        data.extend_from_slice(ct);
        serde_json::json!({ "encrypt": STANDARD.encode(data) })
            .to_string()
            .into_bytes()
    }

    /// The bytes (IV ‖ ciphertext) of a body's `encrypt`.
    pub fn bytes_of(body: &[u8]) -> Vec<u8> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        STANDARD.decode(v["encrypt"].as_str().unwrap()).unwrap()
    }

    /// One block (16 bytes) whose last byte is 0: no valid PKCS#7 padding.
    pub fn bad_padding(key: &str) -> Vec<u8> {
        let mut block = [b'x'; 16];
        block[15] = 0;
        body(key, [7; 16], &block)
    }

    /// Correctly padded `plain`.
    pub fn good_padding(key: &str, plain: &[u8]) -> Vec<u8> {
        let mut padded = plain.to_vec();
        crypto::pkcs7_pad(&mut padded, 16);
        body(key, [9; 16], &padded)
    }
}

fn headers_of(pairs: &[(&str, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in pairs {
        headers.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    headers
}

async fn answer(r: &FeishuReceiver, headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    r.handle_callback(&CallbackRequest {
        headers: headers.clone(),
        query: Default::default(),
        body: Bytes::from(body.to_vec()),
    })
    .await
    .map(|o| format!("{o:?}"))
    .map_err(|e| format!("{} {e}", e.status()))
}

fn oracle_receiver() -> FeishuReceiver {
    FeishuReceiver::new(
        CallbackConfig::new(Some(EK.to_string().into()), Some(VT.to_string().into())),
        Arc::new(InMemoryDedup::default()),
    )
    .unwrap()
}

#[tokio::test]
async fn unsigned_or_badly_signed_ciphertexts_are_refused_alike_whatever_they_decrypt_to() {
    let r = oracle_receiver();
    let now = chrono::Utc::now().timestamp();
    let event = json!({"schema":"2.0","header":{"event_id":"o1","event_type":"contact.user.created_v3",
        "create_time":"0","token":VT,"app_id":"a","tenant_key":"t"},"event":{}});
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("bad padding", oracle::bad_padding(EK)),
        (
            "good padding, not JSON",
            oracle::good_padding(EK, b"\x01\x02not json at all"),
        ),
        (
            "good padding, a real event",
            oracle::good_padding(EK, event.to_string().as_bytes()),
        ),
        (
            "good padding, challenge with a wrong token",
            oracle::good_padding(
                EK,
                json!({"type":"url_verification","challenge":"c","token":"wrong"})
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "good padding, url_verification without challenge",
            oracle::good_padding(
                EK,
                json!({"type":"url_verification","token":VT})
                    .to_string()
                    .as_bytes(),
            ),
        ),
        ("too short", oracle::raw_body(&[1; 16], &[])),
        (
            "not a multiple of the block",
            oracle::raw_body(&[1; 16], &[2; 17]),
        ),
        ("not base64", br#"{"encrypt":"***"}"#.to_vec()),
    ];
    let ts = now.to_string();
    let header_sets: Vec<(&str, HeaderMap)> = vec![
        ("no signature headers", HeaderMap::new()),
        (
            "timestamp and nonce only",
            headers_of(&[
                ("x-lark-request-timestamp", ts.clone()),
                ("x-lark-request-nonce", "n".into()),
            ]),
        ),
        (
            "signature only",
            headers_of(&[("x-lark-signature", "0".repeat(64))]),
        ),
        (
            "wrong signature",
            headers_of(&[
                ("x-lark-request-timestamp", ts.clone()),
                ("x-lark-request-nonce", "n".into()),
                ("x-lark-signature", "0".repeat(64)),
            ]),
        ),
    ];
    for (what_headers, headers) in &header_sets {
        let mut answers = std::collections::BTreeMap::new();
        for (what, body) in &bodies {
            let a = answer(&r, headers, body).await;
            assert!(a.is_err(), "{what_headers}, {what}: accepted: {a:?}");
            answers.entry(a).or_insert_with(Vec::new).push(*what);
        }
        assert_eq!(
            answers.len(),
            1,
            "{what_headers}: distinct answers give the plaintext away: {answers:#?}"
        );
        let only = answers.keys().next().unwrap().as_ref().unwrap_err();
        assert!(!only.contains("padding"), "{only}");
    }

    // The genuine traffic still works: a signed event …
    let (h, b) = build_callback(Some(EK), &event, now, "n1");
    let h = headers_of(
        &h.iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect::<Vec<_>>(),
    );
    let ok = answer(&r, &h, &b).await.unwrap();
    assert!(ok.starts_with("Event"), "{ok}");
    // … and the encrypted, unsigned url_verification.
    let challenge = json!({"type":"url_verification","challenge":"chal-1","token":VT});
    let body = json!({"encrypt": huitong_connectors::feishu::events::encrypt(EK, challenge.to_string().as_bytes())});
    match r
        .handle_callback(&CallbackRequest {
            headers: HeaderMap::new(),
            query: Default::default(),
            body: Bytes::from(body.to_string()),
        })
        .await
        .unwrap()
    {
        CallbackOutcome::Handshake { reply } => {
            assert_eq!(reply.status, 200);
            assert_eq!(
                serde_json::from_slice::<Value>(&reply.body).unwrap(),
                json!({"challenge":"chal-1"})
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The attack as it was run against `huitong serve`: a captured event, its last byte of the
/// penultimate block (here: the IV or the block before the last) flipped through 50 values,
/// one of which makes the padding valid again, sent without signature headers.
#[tokio::test]
async fn padding_oracle_attack_on_a_captured_event_learns_nothing() {
    let r = oracle_receiver();
    let now = chrono::Utc::now().timestamp();
    let event = json!({"schema":"2.0","header":{"event_id":"captured","event_type":"contact.user.updated_v3",
        "create_time":"0","token":VT,"app_id":"a","tenant_key":"t"},
        "event":{"object":{"open_id":"ou_x","name":"张三","mobile":"+8613800000000","email":"z@example.cn"}}});
    let (_, captured) = build_callback(Some(EK), &event, now, "n");
    let plain_len = event.to_string().len();
    let pad = 16 - plain_len % 16; // the last plaintext byte of the capture
    let data = oracle::bytes_of(&captured);
    let flip = data.len() - 16 - 1; // last byte of the block before the last one
    // 50 guesses; d = 0 is the capture itself, d = pad ^ 1 makes the padding valid (0x01).
    let mut guesses: Vec<u8> = (0u8..49).collect();
    if !guesses.contains(&(pad as u8 ^ 1)) {
        guesses.push(pad as u8 ^ 1);
    } else {
        guesses.push(200);
    }
    let mut answers = std::collections::BTreeMap::new();
    for d in guesses {
        let mut forged = data.clone();
        forged[flip] ^= d;
        let body = oracle::raw_body(&forged[..16], &forged[16..]);
        let a = answer(&r, &HeaderMap::new(), &body).await;
        *answers.entry(a).or_insert(0) += 1;
    }
    assert_eq!(answers.len(), 1, "the oracle answers: {answers:#?}");
    assert!(answers.keys().all(Result::is_err));
}
