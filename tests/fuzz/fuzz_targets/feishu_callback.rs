//! Feishu event callbacks through `FeishuReceiver` (signature check, decryption, envelope).
//!
//! Mode byte (`data[0] % 6`), then:
//! - 0: `timestamp \0 nonce \0 signature \0 body`, as they come (headers + raw body);
//! - 1: `body` without signature headers (the unsigned path: only an encrypted
//!   `url_verification` may pass);
//! - 2: `body`, signed with the test key (the outer JSON and its `encrypt` field, decrypted);
//! - 3: `plaintext`, encrypted and signed with the test key (the decrypted envelope);
//! - 4: `plaintext`, encrypted, unsigned (the challenge path);
//! - 5: `body` to a receiver without an Encrypt Key (plaintext mode, verification token).
//!
//! Never panics, whatever the input; an accepted event is also read as `contact_records`.
#![no_main]

use std::sync::Arc;

use huitong_connectors::feishu::events::{
    self, CallbackConfig, FeishuReceiver, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use huitong_connectors::{CallbackOutcome, InMemoryDedup};
use huitong_fuzz::keys::{FEISHU_ENCRYPT_KEY, FEISHU_NOW, FEISHU_VERIFICATION_TOKEN, RANDOM16};
use huitong_fuzz::{block_on, fields, headers};
use libfuzzer_sys::fuzz_target;

fn receiver(encrypted: bool) -> FeishuReceiver {
    let key = encrypted.then(|| FEISHU_ENCRYPT_KEY.to_string().into());
    let cfg = CallbackConfig::new(key, Some(FEISHU_VERIFICATION_TOKEN.to_string().into()));
    FeishuReceiver::new(cfg, Arc::new(InMemoryDedup::default())).expect("valid settings")
}

fn signed(body: &[u8]) -> axum::http::HeaderMap {
    let ts = FEISHU_NOW.to_string();
    let sig = events::signature(&ts, "nonce", FEISHU_ENCRYPT_KEY, body);
    headers(&[
        (HEADER_TIMESTAMP, ts.as_bytes()),
        (HEADER_NONCE, b"nonce"),
        (HEADER_SIGNATURE, sig.as_bytes()),
    ])
}

fn encrypted_body(plaintext: &[u8]) -> Vec<u8> {
    let enc = events::encrypt_with_iv(FEISHU_ENCRYPT_KEY, RANDOM16, plaintext);
    serde_json::json!({ "encrypt": enc })
        .to_string()
        .into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (encrypted, h, body) = match mode % 6 {
        0 => {
            let f = fields(rest, 4);
            let h = headers(&[
                (HEADER_TIMESTAMP, f[0]),
                (HEADER_NONCE, f[1]),
                (HEADER_SIGNATURE, f[2]),
            ]);
            (true, h, f[3].to_vec())
        }
        1 => (true, headers(&[]), rest.to_vec()),
        2 => (true, signed(rest), rest.to_vec()),
        3 => {
            let body = encrypted_body(rest);
            (true, signed(&body), body)
        }
        4 => (true, headers(&[]), encrypted_body(rest)),
        _ => (false, headers(&[]), rest.to_vec()),
    };
    let r = receiver(encrypted);
    if let Ok(CallbackOutcome::Event { event, .. }) = block_on(r.handle_at(&h, &body, FEISHU_NOW)) {
        let _ = events::contact_records(&event.event_type, &event.payload);
    }
});
