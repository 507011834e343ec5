//! Webhook signatures, checked on the raw body before anything parses it, in constant time.
//!
//! - **Standard Webhooks** (the spec Svix and others implement): `webhook-id`,
//!   `webhook-timestamp` (seconds, within ±tolerance of now), `webhook-signature` — one or more
//!   space-separated `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, any one matching (a
//!   supplier rotating its secret sends two). The secret is `whsec_<base64 key>`.
//! - **Declared** schemes, as data: which header carries the signature, hex or base64, a
//!   prefix (`sha256=`), what is signed (the body, or timestamp + separator + body), an optional
//!   timestamp header and tolerance, and the header holding the delivery id. Shipped presets:
//!   GitHub (`X-Hub-Signature-256`) and Shopify (`X-Shopify-Hmac-Sha256`).
//!
//! A failure says which check failed (missing header, stale or future timestamp, no matching
//! signature), never what was expected.

use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The default window for timestamps, both ways.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How a signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// What a declared scheme signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// The raw body.
    Body,
    /// The timestamp header's value, `separator`, then the raw body.
    TimestampAndBody { separator: String },
}

/// A scheme described by its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub signature_header: String,
    pub encoding: Encoding,
    pub prefix: String,
    pub signed: Signed,
    /// Seconds since the epoch; required when set, checked against `tolerance`.
    pub timestamp_header: Option<String>,
    pub tolerance: Duration,
    /// The header holding the delivery's id (for de-duplication).
    pub id_header: Option<String>,
}

/// A source's scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    StandardWebhooks { tolerance: Duration },
    Declared(Declared),
}

impl Scheme {
    /// A shipped scheme by its name: `standard-webhooks`, `github`, `shopify`.
    pub fn preset(name: &str) -> Option<Scheme> {
        match name {
            "standard-webhooks" => Some(Scheme::StandardWebhooks {
                tolerance: DEFAULT_TOLERANCE,
            }),
            "github" => Some(Scheme::Declared(Declared {
                signature_header: "x-hub-signature-256".into(),
                encoding: Encoding::Hex,
                prefix: "sha256=".into(),
                signed: Signed::Body,
                timestamp_header: None,
                tolerance: DEFAULT_TOLERANCE,
                id_header: Some("x-github-delivery".into()),
            })),
            "shopify" => Some(Scheme::Declared(Declared {
                signature_header: "x-shopify-hmac-sha256".into(),
                encoding: Encoding::Base64,
                prefix: String::new(),
                signed: Signed::Body,
                timestamp_header: None,
                tolerance: DEFAULT_TOLERANCE,
                id_header: Some("x-shopify-webhook-id".into()),
            })),
            _ => None,
        }
    }

    /// The names [`Scheme::preset`] knows.
    pub const PRESETS: &'static [&'static str] = &["standard-webhooks", "github", "shopify"];

    /// The secret's key bytes: Standard Webhooks secrets are `whsec_<base64>` (the prefix is
    /// optional), declared schemes use the secret's bytes as they are. The error never quotes
    /// the secret.
    pub fn key(&self, secret: &str) -> Result<SecretSlice<u8>, String> {
        let secret = secret.trim();
        match self {
            Scheme::StandardWebhooks { .. } => {
                let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
                let key = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| {
                        "a Standard Webhooks secret is `whsec_` followed by base64; this one does not decode".to_owned()
                    })?;
                if key.len() < 16 {
                    return Err(format!(
                        "a Standard Webhooks secret must hold at least 16 bytes of key; this one holds {}",
                        key.len()
                    ));
                }
                Ok(key.into())
            }
            Scheme::Declared(_) => {
                if secret.is_empty() {
                    return Err("the secret is empty".into());
                }
                Ok(secret.as_bytes().to_vec().into())
            }
        }
    }
}

/// Why a delivery was refused (answered 401, this text in the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {0} header is missing")]
    MissingHeader(String),
    #[error("the {0} header is not a number of seconds since the epoch")]
    BadTimestamp(String),
    #[error("the timestamp is {0} s in the past, beyond the allowed window")]
    Stale(i64),
    #[error("the timestamp is {0} s in the future, beyond the allowed window")]
    Future(i64),
    #[error("no signature matches")]
    BadSignature,
}

/// What a verified delivery carries besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The delivery id (`webhook-id`, or the declared id header), for de-duplication.
    pub id: Option<String>,
    pub timestamp: Option<i64>,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, VerifyError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))
}

fn check_time(name: &str, value: &str, now: i64, tolerance: Duration) -> Result<i64, VerifyError> {
    let ts: i64 = value
        .parse()
        .map_err(|_| VerifyError::BadTimestamp(name.to_owned()))?;
    let window = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    let age = now.saturating_sub(ts);
    if age > window {
        return Err(VerifyError::Stale(age));
    }
    if -age > window {
        return Err(VerifyError::Future(-age));
    }
    Ok(ts)
}

fn mac(key: &SecretSlice<u8>, parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut m = match HmacSha256::new_from_slice(key.expose_secret()) {
        Ok(m) => m,
        Err(_) => unreachable_key(),
    };
    for p in parts {
        m.update(p);
    }
    m
}

#[cold]
fn unreachable_key() -> HmacSha256 {
    // `Hmac::new_from_slice` accepts every key length; keep a total function anyway.
    HmacSha256::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| unreachable!())
}

/// Checks one delivery against `scheme` with `key`, at `now` (seconds since the epoch).
pub fn verify(
    scheme: &Scheme,
    key: &SecretSlice<u8>,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, VerifyError> {
    match scheme {
        Scheme::StandardWebhooks { tolerance } => {
            let id = header(headers, "webhook-id")?;
            let ts_text = header(headers, "webhook-timestamp")?;
            let sigs = header(headers, "webhook-signature")?;
            let ts = check_time("webhook-timestamp", ts_text, now, *tolerance)?;
            let m = mac(key, &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body]);
            let ok = sigs.split(' ').filter(|s| !s.is_empty()).any(|s| {
                let Some(("v1", b64)) = s.split_once(',') else {
                    return false;
                };
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .is_ok_and(|sig| m.clone().verify_slice(&sig).is_ok())
            });
            if !ok {
                return Err(VerifyError::BadSignature);
            }
            Ok(Verified {
                id: Some(id.to_owned()),
                timestamp: Some(ts),
            })
        }
        Scheme::Declared(d) => {
            let sig_text = header(headers, &d.signature_header)?;
            let ts = match &d.timestamp_header {
                Some(h) => {
                    let v = header(headers, h)?;
                    Some((check_time(h, v, now, d.tolerance)?, v))
                }
                None => None,
            };
            let m = match (&d.signed, ts) {
                (Signed::Body, _) => mac(key, &[body]),
                (Signed::TimestampAndBody { separator }, Some((_, v))) => {
                    mac(key, &[v.as_bytes(), separator.as_bytes(), body])
                }
                (Signed::TimestampAndBody { .. }, None) => {
                    return Err(VerifyError::MissingHeader("timestamp".into()));
                }
            };
            let Some(encoded) = sig_text.strip_prefix(d.prefix.as_str()) else {
                return Err(VerifyError::BadSignature);
            };
            let sig = match d.encoding {
                Encoding::Hex => hex::decode(encoded).ok(),
                Encoding::Base64 => base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok(),
            };
            match sig {
                Some(sig) if m.verify_slice(&sig).is_ok() => {}
                _ => return Err(VerifyError::BadSignature),
            }
            let id = match &d.id_header {
                Some(h) => Some(header(headers, h)?.to_owned()),
                None => None,
            };
            Ok(Verified {
                id,
                timestamp: ts.map(|(t, _)| t),
            })
        }
    }
}

/// The `webhook-signature` value of a Standard Webhooks delivery we send (acknowledgements).
pub fn sign_standard(key: &SecretSlice<u8>, id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let m = mac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    // The Standard Webhooks specification's own example (its README and test suites).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: &str = "1614265330";
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn std_scheme() -> Scheme {
        Scheme::preset("standard-webhooks").unwrap()
    }

    #[test]
    fn the_specifications_example_verifies() {
        let s = std_scheme();
        let key = s.key(SPEC_SECRET).unwrap();
        let h = headers(&[
            ("webhook-id", SPEC_ID),
            ("webhook-timestamp", SPEC_TS),
            ("webhook-signature", SPEC_SIG),
        ]);
        let now = SPEC_TS.parse::<i64>().unwrap() + 10;
        let v = verify(&s, &key, &h, SPEC_BODY, now).unwrap();
        assert_eq!(v.id.as_deref(), Some(SPEC_ID));
        // Rotation: an unknown signature first, the valid one second.
        let both = format!("v1,Ym9ndXM= {SPEC_SIG}");
        let h2 = headers(&[
            ("webhook-id", SPEC_ID),
            ("webhook-timestamp", SPEC_TS),
            ("webhook-signature", &both),
        ]);
        assert!(verify(&s, &key, &h2, SPEC_BODY, now).is_ok());
        // Tampered body, wrong secret, stale, future, missing.
        assert_eq!(
            verify(&s, &key, &h, br#"{"test": 2432232315}"#, now),
            Err(VerifyError::BadSignature)
        );
        let other = s.key("whsec_bm90LXRoZS1yaWdodC1rZXktYXQtYWxs").unwrap();
        assert_eq!(
            verify(&s, &other, &h, SPEC_BODY, now),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(&s, &key, &h, SPEC_BODY, now + 301),
            Err(VerifyError::Stale(311))
        );
        assert_eq!(
            verify(&s, &key, &h, SPEC_BODY, now - 400),
            Err(VerifyError::Future(390))
        );
        let h3 = headers(&[("webhook-id", SPEC_ID), ("webhook-signature", SPEC_SIG)]);
        assert_eq!(
            verify(&s, &key, &h3, SPEC_BODY, now),
            Err(VerifyError::MissingHeader("webhook-timestamp".into()))
        );
        // A version other than v1 is not accepted.
        let h4 = headers(&[
            ("webhook-id", SPEC_ID),
            ("webhook-timestamp", SPEC_TS),
            ("webhook-signature", &SPEC_SIG.replace("v1,", "v2,")),
        ]);
        assert_eq!(
            verify(&s, &key, &h4, SPEC_BODY, now),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn secrets_are_checked_without_quoting_them() {
        let s = std_scheme();
        let e = s.key("whsec_!!!not-base64!!!").unwrap_err();
        assert!(!e.contains("not-base64"), "{e}");
        assert!(s.key("whsec_c2hvcnQ=").unwrap_err().contains("at least 16"));
    }

    #[test]
    fn github_and_shopify_presets() {
        let body = br#"{"action":"opened"}"#;
        let secret = "It's a Secret to Everybody";
        // GitHub's documented example: "Hello, World!" with this secret.
        let gh = Scheme::preset("github").unwrap();
        let key = gh.key(secret).unwrap();
        let h = headers(&[
            (
                "x-hub-signature-256",
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
            ("x-github-delivery", "d-1"),
        ]);
        let v = verify(&gh, &key, &h, b"Hello, World!", 0).unwrap();
        assert_eq!(v.id.as_deref(), Some("d-1"));
        assert_eq!(
            verify(&gh, &key, &h, body, 0),
            Err(VerifyError::BadSignature)
        );
        // Shopify: base64 of the HMAC of the body, no prefix.
        let sh = Scheme::preset("shopify").unwrap();
        let key = sh.key(secret).unwrap();
        let sig = base64::engine::general_purpose::STANDARD
            .encode(mac(&key, &[body]).finalize().into_bytes());
        let h = headers(&[
            ("x-shopify-hmac-sha256", &sig),
            ("x-shopify-webhook-id", "w-1"),
        ]);
        assert!(verify(&sh, &key, &h, body, 0).is_ok());
        let h = headers(&[("x-shopify-webhook-id", "w-1")]);
        assert_eq!(
            verify(&sh, &key, &h, body, 0),
            Err(VerifyError::MissingHeader("x-shopify-hmac-sha256".into()))
        );
    }

    #[test]
    fn a_declared_scheme_signing_timestamp_and_body() {
        let s = Scheme::Declared(Declared {
            signature_header: "x-sig".into(),
            encoding: Encoding::Hex,
            prefix: "v0=".into(),
            signed: Signed::TimestampAndBody {
                separator: ":".into(),
            },
            timestamp_header: Some("x-ts".into()),
            tolerance: Duration::from_secs(60),
            id_header: None,
        });
        let key = s.key("secret").unwrap();
        let body = b"{}";
        let sig = hex::encode(mac(&key, &[b"1000", b":", body]).finalize().into_bytes());
        let h = headers(&[("x-sig", &format!("v0={sig}")), ("x-ts", "1000")]);
        assert!(verify(&s, &key, &h, body, 1030).is_ok());
        assert_eq!(
            verify(&s, &key, &h, body, 1100),
            Err(VerifyError::Stale(100))
        );
        let h = headers(&[("x-sig", &sig), ("x-ts", "1000")]);
        assert_eq!(
            verify(&s, &key, &h, body, 1030),
            Err(VerifyError::BadSignature)
        );
    }
}
