//! The supplier webhook verifiers (`huitong::hooks::verify`) on raw headers and body:
//! Standard Webhooks, the GitHub and Shopify presets, and a declared scheme with a timestamp.
//!
//! Input: a mode byte, then `name: value` header lines, a NUL, then the body (the seeds in
//! `corpus/webhook_verify/`). Mode `% 6`:
//! - 0: Standard Webhooks (`whsec_…` test secret); 1: GitHub; 2: Shopify;
//! - 3: declared (`x-sig`, hex after `v0=`, over `x-ts` + `:` + body, id in `x-id`);
//! - 4: Standard Webhooks, the harness adding a `webhook-signature` it made with the key (and
//!   `webhook-timestamp` now) to the given headers: a delivery with a right signature among
//!   others must verify when its id is well formed;
//! - 5: the input as a secret, read as each scheme's key (`Scheme::key`).
//!
//! Never panics.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use huitong::hooks::verify::{Declared, Encoding, Scheme, Signed, sign_standard, verify};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretSlice;

/// The clock of every check (seconds).
const NOW: i64 = 1_614_265_330;
/// The Standard Webhooks specification's example secret.
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET: &str = "It's a Secret to Everybody";

fn schemes() -> &'static [(Scheme, SecretSlice<u8>); 4] {
    static S: OnceLock<[(Scheme, SecretSlice<u8>); 4]> = OnceLock::new();
    S.get_or_init(|| {
        let with_key = |scheme: Scheme, secret: &str| {
            let key = scheme.key(secret).expect("a valid test secret");
            (scheme, key)
        };
        let preset = |name| Scheme::preset(name).expect("a shipped preset");
        let declared = Scheme::Declared(Declared {
            signature_header: "x-sig".into(),
            encoding: Encoding::Hex,
            prefix: "v0=".into(),
            signed: Signed::TimestampAndBody {
                separator: ":".into(),
            },
            timestamp_header: Some("x-ts".into()),
            tolerance: Duration::from_secs(300),
            id_header: Some("x-id".into()),
        });
        [
            with_key(preset("standard-webhooks"), STANDARD_SECRET),
            with_key(preset("github"), SECRET),
            with_key(preset("shopify"), SECRET),
            with_key(declared, SECRET),
        ]
    })
}

/// `name: value` lines as headers; a line a header cannot carry is left out, as an HTTP server
/// would never have passed it on.
fn parse_headers(lines: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in lines.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (head, body) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let mut h = parse_headers(head);
    let s = schemes();
    match mode % 6 {
        m @ 0..=3 => {
            let (scheme, key) = &s[usize::from(m)];
            let _ = verify(scheme, key, &h, body, NOW);
        }
        4 => {
            let (scheme, key) = &s[0];
            let id = h
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned());
            let ours = sign_standard(key, id.as_deref().unwrap_or(""), NOW, body);
            let others = h
                .get("webhook-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let sigs = format!("{others} {ours}");
            let (Ok(sigs), Ok(ts)) = (
                HeaderValue::from_str(&sigs),
                HeaderValue::from_str(&NOW.to_string()),
            ) else {
                return;
            };
            h.insert("webhook-signature", sigs);
            h.insert("webhook-timestamp", ts);
            let r = verify(scheme, key, &h, body, NOW);
            if id.is_some_and(|id| !id.is_empty()) {
                assert!(
                    r.is_ok(),
                    "a delivery signed with the key was refused: {r:?}"
                );
            }
        }
        _ => {
            let secret = String::from_utf8_lossy(rest);
            for (scheme, _) in s {
                let _ = scheme.key(&secret);
            }
        }
    }
});
