//! Feishu event callbacks: URL verification, the schema 2.0 (and legacy 1.0) envelope, Encrypt
//! Key decryption (AES-256-CBC, key = SHA-256 of the Encrypt Key), `X-Lark-Signature` checked on
//! the raw body in constant time, a timestamp window, and event_id de-duplication.
//!
//! The signature is checked before anything is decrypted. Only the encrypted `url_verification`
//! comes unsigned, so it must be decrypted to be recognised: every unsigned request that is not
//! that challenge gets one and the same answer, whatever its decryption found (issue 21: a bad
//! padding once answered differently, a padding oracle that decrypted captured events).
//!
//! The reply must go out fast (Feishu: 3 s, some pages say 1 s): the hub acks with the reply of
//! the outcome first and processes the event afterwards.

#[cfg(test)]
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

#[cfg(test)]
use crate::capability::CallbackOutcome;
use crate::capability::{CallbackError, CallbackReply, RawEvent};
use crate::crypto;
use crate::feishu::VENDOR;
use crate::receiver::{self, Incoming, Limits, Opened, Receiver, VendorCallbacks};

pub const HEADER_TIMESTAMP: &str = "x-lark-request-timestamp";
pub const HEADER_NONCE: &str = "x-lark-request-nonce";
pub const HEADER_SIGNATURE: &str = "x-lark-signature";

fn aes_key(encrypt_key: &str) -> [u8; 32] {
    crypto::sha256(encrypt_key.as_bytes())
}

/// Decrypts an `encrypt` field: base64(IV ‖ AES-256-CBC(PKCS#7 plaintext)).
pub fn decrypt(encrypt_key: &str, encrypt_b64: &str) -> Result<Vec<u8>, CallbackError> {
    let data = B64
        .decode(encrypt_b64.trim())
        .map_err(|e| CallbackError::Decrypt(format!("base64: {e}")))?;
    if data.len() < 32 {
        return Err(CallbackError::Decrypt("ciphertext too short".into()));
    }
    let (iv, ct) = data.split_at(16);
    let pt = crypto::aes256_cbc_decrypt_raw(&aes_key(encrypt_key), iv, ct)
        .map_err(|e| CallbackError::Decrypt(e.to_string()))?;
    let body = crypto::pkcs7_unpad(&pt, 16).map_err(|e| CallbackError::Decrypt(e.to_string()))?;
    Ok(body.to_vec())
}

/// Encrypts as Feishu does, with the given IV.
pub fn encrypt_with_iv(encrypt_key: &str, iv: [u8; 16], plaintext: &[u8]) -> String {
    let mut padded = plaintext.to_vec();
    crypto::pkcs7_pad(&mut padded, 16);
    // Padded data is a non-empty multiple of 16 and the key/iv sizes are fixed: cannot fail.
    let ct =
        crypto::aes256_cbc_encrypt_raw(&aes_key(encrypt_key), &iv, &padded).unwrap_or_default();
    let mut out = iv.to_vec();
    out.extend_from_slice(&ct);
    B64.encode(out)
}

/// Encrypts as Feishu does, with a random IV.
pub fn encrypt(encrypt_key: &str, plaintext: &[u8]) -> String {
    encrypt_with_iv(encrypt_key, crypto::random_bytes::<16>(), plaintext)
}

/// `X-Lark-Signature`: lowercase hex SHA-256 of `timestamp + nonce + encrypt_key` followed by
/// the raw body bytes.
pub fn signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut data =
        Vec::with_capacity(timestamp.len() + nonce.len() + encrypt_key.len() + body.len());
    data.extend_from_slice(timestamp.as_bytes());
    data.extend_from_slice(nonce.as_bytes());
    data.extend_from_slice(encrypt_key.as_bytes());
    data.extend_from_slice(body);
    hex::encode(crypto::sha256(&data))
}

/// Callback settings of one Feishu app.
#[derive(Clone)]
pub struct CallbackConfig {
    pub encrypt_key: Option<SecretString>,
    pub verification_token: Option<SecretString>,
    /// Accepted distance between `X-Lark-Request-Timestamp` and now.
    pub timestamp_window: Duration,
    pub max_body_bytes: usize,
}

impl CallbackConfig {
    pub fn new(
        encrypt_key: Option<SecretString>,
        verification_token: Option<SecretString>,
    ) -> Self {
        Self {
            encrypt_key,
            verification_token,
            timestamp_window: Duration::from_secs(300),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Verifies and decrypts Feishu callbacks.
pub type FeishuReceiver = Receiver<FeishuCallbacks>;

/// Feishu's part of [`FeishuReceiver`]: Encrypt Key crypto, `X-Lark-Signature`, the
/// verification token and the schema 2.0 / 1.0 envelope.
pub struct FeishuCallbacks {
    cfg: CallbackConfig,
}

fn success_reply() -> CallbackReply {
    receiver::reply("application/json", br#"{"msg":"success"}"#.to_vec())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The signature headers of a request.
enum SignatureHeaders<'a> {
    /// All three: `X-Lark-Request-Timestamp`, `X-Lark-Request-Nonce`, `X-Lark-Signature`.
    Signed {
        timestamp: &'a str,
        nonce: &'a str,
        signature: &'a str,
    },
    /// Not all three (none, or some).
    Unsigned,
}

impl<'a> SignatureHeaders<'a> {
    fn of(h: &'a HeaderMap) -> Self {
        match (
            header(h, HEADER_TIMESTAMP),
            header(h, HEADER_NONCE),
            header(h, HEADER_SIGNATURE),
        ) {
            (Some(timestamp), Some(nonce), Some(signature)) => Self::Signed {
                timestamp,
                nonce,
                signature,
            },
            _ => Self::Unsigned,
        }
    }
}

impl FeishuCallbacks {
    /// A signed callback with an Encrypt Key: the timestamp and the signature over the raw body
    /// are checked before anything is parsed or decrypted; after that, whatever fails in the
    /// decryption or in the plaintext is the one [`receiver::opaque`] error (the verification
    /// token, an authentication check, keeps its own).
    fn open_signed(
        &self,
        key: &str,
        (timestamp, nonce, sig): (&str, &str, &str),
        req: &Incoming<'_, HeaderMap>,
    ) -> Result<Opened, CallbackError> {
        req.window.check(timestamp)?;
        receiver::check_signature(&signature(timestamp, nonce, key, req.body), sig.trim())?;
        let outer = receiver::json(req.body, "body")?;
        let enc = str_field(
            &outer,
            "encrypt",
            "expected an encrypted body (Encrypt Key is set)",
        )?;
        let plain = decrypt(key, enc).map_err(|e| receiver::opaque(VENDOR, e))?;
        let envelope =
            receiver::json(&plain, "decrypted body").map_err(|e| receiver::opaque(VENDOR, e))?;
        self.read(envelope).map_err(|e| match e {
            CallbackError::BadToken => e,
            other => receiver::opaque(VENDOR, other),
        })
    }

    /// An unsigned callback with an Encrypt Key: only the encrypted `url_verification` comes
    /// unsigned. Anything else — whatever it decrypts to, or fails to — is refused with one and
    /// the same [`CallbackError::MissingSignature`], the reason going to the log only: an answer
    /// that depends on the decryption (bad padding, not JSON, not a challenge, a wrong token)
    /// would be a padding oracle for anyone, no key needed.
    fn open_unsigned(&self, key: &str, body: &[u8]) -> Result<Opened, CallbackError> {
        let challenge = || -> Result<Opened, String> {
            let outer = receiver::json(body, "body").map_err(|e| e.to_string())?;
            let enc = outer
                .get("encrypt")
                .and_then(Value::as_str)
                .ok_or("the body has no encrypt field")?;
            let plain = decrypt(key, enc).map_err(|e| e.to_string())?;
            let envelope = receiver::json(&plain, "decrypted body").map_err(|e| e.to_string())?;
            if !is_challenge(&envelope) {
                return Err("not a url_verification".into());
            }
            self.read(envelope).map_err(|e| e.to_string())
        };
        challenge().map_err(|detail| {
            tracing::warn!(
                vendor = VENDOR,
                detail = %detail,
                "unsigned callback refused: only an encrypted url_verification may come without X-Lark-Signature"
            );
            CallbackError::MissingSignature
        })
    }

    /// The envelope of a callback that passed the checks of its mode: the verification token,
    /// then the challenge or the event.
    fn read(&self, envelope: Value) -> Result<Opened, CallbackError> {
        let v2 = envelope.get("schema").and_then(Value::as_str) == Some("2.0");
        let token = if v2 {
            envelope.pointer("/header/token").and_then(Value::as_str)
        } else {
            envelope.get("token").and_then(Value::as_str)
        };
        if let Some(vt) = &self.cfg.verification_token
            && !token.is_some_and(|t| crypto::ct_eq(t.as_bytes(), vt.expose_secret().as_bytes()))
        {
            return Err(CallbackError::BadToken);
        }

        if is_challenge(&envelope) {
            let challenge =
                str_field(&envelope, "challenge", "url_verification without challenge")?;
            return Ok(Opened::Handshake(receiver::reply(
                "application/json",
                json!({ "challenge": challenge }).to_string().into_bytes(),
            )));
        }

        let (event_id, event_type, created) = if v2 {
            (
                envelope.pointer("/header/event_id").and_then(Value::as_str),
                envelope
                    .pointer("/header/event_type")
                    .and_then(Value::as_str),
                envelope.pointer("/header/create_time").and_then(|v| {
                    v.as_str()
                        .and_then(|s| s.parse().ok())
                        .or_else(|| v.as_i64())
                }),
            )
        } else {
            (
                envelope.get("uuid").and_then(Value::as_str),
                envelope.pointer("/event/type").and_then(Value::as_str),
                envelope
                    .get("ts")
                    .and_then(|v| {
                        v.as_str()
                            .and_then(|s| s.parse::<f64>().ok())
                            .or_else(|| v.as_f64())
                    })
                    .map(|s| (s * 1000.0) as i64),
            )
        };
        let event_id = event_id
            .ok_or_else(|| CallbackError::Malformed("event without event_id/uuid".into()))?
            .to_string();
        let event_type = event_type
            .ok_or_else(|| CallbackError::Malformed("event without event_type".into()))?
            .to_string();
        Ok(Opened::event(
            RawEvent {
                vendor: VENDOR,
                event_id,
                event_type,
                created_at_ms: created,
                payload: envelope,
            },
            success_reply(),
        ))
    }
}

/// The string `key` of a callback's JSON, or the callback is malformed (`missing`).
fn str_field<'a>(v: &'a Value, key: &str, missing: &str) -> Result<&'a str, CallbackError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| CallbackError::Malformed(missing.into()))
}

fn is_challenge(envelope: &Value) -> bool {
    envelope.get("type").and_then(Value::as_str) == Some("url_verification")
}

impl VendorCallbacks for FeishuCallbacks {
    type Config = CallbackConfig;
    type Params = HeaderMap;
    const VENDOR: &'static str = VENDOR;

    /// At least one of Encrypt Key and Verification Token must be set: otherwise nothing
    /// authenticates a callback.
    fn configure(cfg: CallbackConfig) -> Result<(Self, Limits), crate::ConnectorError> {
        if cfg.encrypt_key.is_none() && cfg.verification_token.is_none() {
            return Err(crate::ConnectorError::permanent(
                VENDOR,
                "callbacks need an Encrypt Key or a Verification Token",
            ));
        }
        let limits = Limits::new(cfg.timestamp_window, cfg.max_body_bytes);
        Ok((Self { cfg }, limits))
    }

    /// With an Encrypt Key, Feishu signs every event (`X-Lark-Signature` over the raw body):
    /// the signature is checked first, before any decryption; only the `url_verification`
    /// comes unsigned, and an unsigned request is either that challenge or refused alike.
    /// Without one (plaintext mode), the Verification Token authenticates the callback.
    fn open(&self, req: Incoming<'_, HeaderMap>) -> Result<Opened, CallbackError> {
        if let Some(key) = &self.cfg.encrypt_key {
            let key = key.expose_secret();
            return match SignatureHeaders::of(req.params) {
                SignatureHeaders::Signed {
                    timestamp,
                    nonce,
                    signature,
                } => self.open_signed(key, (timestamp, nonce, signature), &req),
                SignatureHeaders::Unsigned => self.open_unsigned(key, req.body),
            };
        }
        let envelope = receiver::json(req.body, "body")?;
        if envelope.get("encrypt").and_then(Value::as_str).is_some() {
            return Err(CallbackError::Decrypt(
                "encrypted callback but no Encrypt Key configured".into(),
            ));
        }
        self.read(envelope)
    }
}

/// Builds the headers and body of a callback exactly as Feishu sends it (used by the sandbox
/// and by tests): encrypted and signed when an Encrypt Key is given, plaintext otherwise.
pub fn build_callback(
    encrypt_key: Option<&str>,
    envelope: &Value,
    timestamp: i64,
    nonce: &str,
) -> (Vec<(String, String)>, Vec<u8>) {
    let plain = envelope.to_string();
    match encrypt_key {
        Some(key) => {
            let body = json!({ "encrypt": encrypt(key, plain.as_bytes()) })
                .to_string()
                .into_bytes();
            let ts = timestamp.to_string();
            let sig = signature(&ts, nonce, key, &body);
            (
                vec![
                    ("X-Lark-Request-Timestamp".into(), ts),
                    ("X-Lark-Request-Nonce".into(), nonce.to_string()),
                    ("X-Lark-Signature".into(), sig),
                ],
                body,
            )
        }
        None => (Vec::new(), plain.into_bytes()),
    }
}

/// The records a contact event names, as (entity, id in the form the contact API's `get`
/// takes by default: `open_id`, `open_department_id`); `None` for other events or when the
/// payload (the v2 envelope, or its `event` alone) lacks the id.
pub fn contact_records(
    event_type: &str,
    payload: &Value,
) -> Option<Vec<(crate::capability::Entity, String)>> {
    use crate::capability::Entity;
    let event = payload.get("event").unwrap_or(payload);
    let object = event.get("object")?;
    let id = |k: &str| object.get(k).and_then(Value::as_str).map(str::to_owned);
    if event_type.starts_with("contact.user.") {
        Some(vec![(Entity::User, id("open_id")?)])
    } else if event_type.starts_with("contact.department.") {
        Some(vec![(Entity::Department, id("open_department_id")?)])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::InMemoryDedup;

    #[test]
    fn published_vector_decrypts_to_hello_world() {
        let pt = decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").unwrap();
        assert_eq!(pt, b"hello world");
    }

    #[test]
    fn self_computed_vector_with_fixed_iv() {
        let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
        let pt = br#"{"challenge":"abc","token":"vt","type":"url_verification"}"#;
        let expected = "AAECAwQFBgcICQoLDA0OD6alpwIsMFbSsWTHppjb1mEu9cNFSciswsSKozZRT/yJ0pJ9Srb8maLSthv6j6V8a8pp+WlI0s2jgfN5z71C4ok=";
        assert_eq!(encrypt_with_iv("test key", iv, pt), expected);
        assert_eq!(decrypt("test key", expected).unwrap(), pt);
    }

    #[test]
    fn signature_vector() {
        let body = br#"{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}"#;
        assert_eq!(
            signature("1700000000", "nonce123", "test key", body),
            "669e3ed5328644f71370e3249f96af0fd17e5ed4d7b178c44f11f7997339e344"
        );
    }

    #[test]
    fn wrong_key_fails_to_decrypt() {
        let enc = encrypt("right", b"{\"a\":1}");
        // A wrong key yields garbage whose padding is almost surely invalid, or non-JSON.
        match decrypt("wrong", &enc) {
            Err(_) => {}
            Ok(pt) => assert_ne!(pt, b"{\"a\":1}"),
        }
        assert!(decrypt("k", "not base64!!").is_err());
    }

    fn receiver() -> FeishuReceiver {
        FeishuReceiver::new(
            CallbackConfig::new(Some("ek".to_string().into()), Some("vt".to_string().into())),
            Arc::new(InMemoryDedup::default()),
        )
        .unwrap()
    }

    fn envelope(id: &str) -> Value {
        json!({"schema":"2.0","header":{"event_id":id,"event_type":"contact.user.created_v3",
            "create_time":"1700000000000","token":"vt","app_id":"cli_x","tenant_key":"tk"},
            "event":{"object":{"open_id":"ou_1"}}})
    }

    fn to_headers(h: Vec<(String, String)>) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in h {
            m.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[tokio::test]
    async fn accepts_signed_event_once() {
        let r = receiver();
        let (h, body) = build_callback(Some("ek"), &envelope("e1"), 1_700_000_000, "n1");
        let h = to_headers(h);
        match r.handle_at(&h, &body, 1_700_000_010).await.unwrap() {
            CallbackOutcome::Event { event, reply } => {
                assert_eq!(event.event_id, "e1");
                assert_eq!(event.event_type, "contact.user.created_v3");
                assert_eq!(event.created_at_ms, Some(1_700_000_000_000));
                assert_eq!(
                    event.payload.pointer("/event/object/open_id"),
                    Some(&json!("ou_1"))
                );
                assert_eq!(reply.status, 200);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.handle_at(&h, &body, 1_700_000_010).await.unwrap(),
            CallbackOutcome::Duplicate { .. }
        ));
    }

    #[tokio::test]
    async fn rejects_tampering_staleness_and_missing_signature() {
        let r = receiver();
        let (h, body) = build_callback(Some("ek"), &envelope("e2"), 1_700_000_000, "n1");
        let h = to_headers(h);
        let mut tampered = body.clone();
        let n = tampered.len();
        tampered[n - 3] ^= 1;
        assert_eq!(
            r.handle_at(&h, &tampered, 1_700_000_000).await,
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            r.handle_at(&h, &body, 1_700_000_000 + 301).await,
            Err(CallbackError::StaleTimestamp)
        );
        assert_eq!(
            r.handle_at(&HeaderMap::new(), &body, 1_700_000_000).await,
            Err(CallbackError::MissingSignature)
        );
        // Right signature, wrong verification token inside.
        let mut env = envelope("e3");
        env["header"]["token"] = json!("other");
        let (h2, b2) = build_callback(Some("ek"), &env, 1_700_000_000, "n");
        assert_eq!(
            r.handle_at(&to_headers(h2), &b2, 1_700_000_000).await,
            Err(CallbackError::BadToken)
        );
        // Plaintext when an Encrypt Key is set: the signature (over another body) is checked
        // first; unsigned, it is not the challenge.
        let plain = envelope("e4").to_string();
        assert_eq!(
            r.handle_at(&h, plain.as_bytes(), 1_700_000_000).await,
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            r.handle_at(&HeaderMap::new(), plain.as_bytes(), 1_700_000_000)
                .await,
            Err(CallbackError::MissingSignature)
        );
        // None of the rejected events was recorded as seen.
        let (h5, b5) = build_callback(Some("ek"), &envelope("e2"), 1_700_000_000, "n9");
        assert!(matches!(
            r.handle_at(&to_headers(h5), &b5, 1_700_000_000)
                .await
                .unwrap(),
            CallbackOutcome::Event { .. }
        ));
    }

    #[tokio::test]
    async fn answers_encrypted_url_verification() {
        let r = receiver();
        let env = json!({"challenge":"abc","token":"vt","type":"url_verification"});
        let body = json!({"encrypt": encrypt("ek", env.to_string().as_bytes())}).to_string();
        match r
            .handle_at(&HeaderMap::new(), body.as_bytes(), 0)
            .await
            .unwrap()
        {
            CallbackOutcome::Handshake { reply } => {
                let v: Value = serde_json::from_slice(&reply.body).unwrap();
                assert_eq!(v, json!({"challenge":"abc"}));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn plaintext_mode_uses_verification_token() {
        let r = FeishuReceiver::new(
            CallbackConfig::new(None, Some("vt".to_string().into())),
            Arc::new(InMemoryDedup::default()),
        )
        .unwrap();
        let ok = envelope("p1").to_string();
        assert!(matches!(
            r.handle_at(&HeaderMap::new(), ok.as_bytes(), 0)
                .await
                .unwrap(),
            CallbackOutcome::Event { .. }
        ));
        let mut bad = envelope("p2");
        bad["header"]["token"] = json!("nope");
        assert_eq!(
            r.handle_at(&HeaderMap::new(), bad.to_string().as_bytes(), 0)
                .await,
            Err(CallbackError::BadToken)
        );
        let legacy = json!({"uuid":"u1","token":"vt","ts":"1700000000.1","type":"event_callback","event":{"type":"message"}});
        match r
            .handle_at(&HeaderMap::new(), legacy.to_string().as_bytes(), 0)
            .await
            .unwrap()
        {
            CallbackOutcome::Event { event, .. } => {
                assert_eq!(event.event_id, "u1");
                assert_eq!(event.event_type, "message");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            FeishuReceiver::new(
                CallbackConfig::new(None, None),
                Arc::new(InMemoryDedup::default())
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn oversized_body_rejected() {
        let mut cfg = CallbackConfig::new(None, Some("vt".to_string().into()));
        cfg.max_body_bytes = 10;
        let r = FeishuReceiver::new(cfg, Arc::new(InMemoryDedup::default())).unwrap();
        assert_eq!(
            r.handle_at(&HeaderMap::new(), &[b' '; 11], 0).await,
            Err(CallbackError::TooLarge(10))
        );
    }
}
