//! DingTalk HTTP push callbacks through `DingTalkReceiver` (WXBizMsgCrypt in JSON: signature
//! check, decryption, the owner key, the event), and `open_reply`.
//!
//! Mode byte (`data[0] % 5`), then:
//! - 0: `msg_signature \0 timestamp \0 nonce \0 body`, as they come (query + raw body);
//! - 1: `encrypt`: sent as `{"encrypt": …}`, signed with the test token (decryption of
//!   anything);
//! - 2: `receive id \0 plaintext`, encrypted and signed with the test keys (the decrypted
//!   buffer, the event JSON);
//! - 3: `plaintext`, encrypted for the configured owner key and signed (the event JSON);
//! - 4: `reply`: an encrypted reply checked as DingTalk does (`open_reply`).
//!
//! Never panics, whatever the input; an accepted event is also read as `contact_records`.
#![no_main]

use std::sync::Arc;

use huitong_connectors::dingtalk::events::{self, CallbackConfig, DingTalkReceiver};
use huitong_connectors::wxbiz::WxBizMsgCrypt;
use huitong_connectors::{CallbackOutcome, InMemoryDedup};
use huitong_fuzz::keys::{
    DINGTALK_AES_KEY, DINGTALK_NOW, DINGTALK_OWNER_KEY, DINGTALK_TOKEN, RANDOM16,
};
use huitong_fuzz::{block_on, fields, query, text};
use libfuzzer_sys::fuzz_target;

fn receiver() -> DingTalkReceiver {
    let cfg = CallbackConfig::new(
        DINGTALK_TOKEN.to_string().into(),
        DINGTALK_AES_KEY.to_string().into(),
        DINGTALK_OWNER_KEY,
    );
    DingTalkReceiver::new(cfg, Arc::new(InMemoryDedup::default())).expect("valid settings")
}

/// The query and body of a push carrying `encrypt`, signed.
fn signed(crypt: &WxBizMsgCrypt, encrypt: &str) -> (Vec<u8>, Vec<u8>) {
    let ts = DINGTALK_NOW.to_string();
    let sig = crypt.signature(&ts, "nonce", encrypt);
    let body = serde_json::json!({ "encrypt": encrypt })
        .to_string()
        .into_bytes();
    (sig.into_bytes(), body)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let r = receiver();
    let crypt = r.crypt();
    let ts = DINGTALK_NOW.to_string();
    let (q, body) = match mode % 5 {
        0 => {
            let f = fields(rest, 4);
            let q = query(&[
                ("msg_signature", f[0]),
                ("timestamp", f[1]),
                ("nonce", f[2]),
            ]);
            (q, f[3].to_vec())
        }
        1 => {
            let (sig, body) = signed(crypt, &text(rest));
            let q = query(&[
                ("signature", &sig),
                ("timeStamp", ts.as_bytes()),
                ("nonce", b"nonce"),
            ]);
            (q, body)
        }
        2 | 3 => {
            let (id, plaintext) = if mode % 5 == 2 {
                let f = fields(rest, 2);
                (text(f[0]), f[1])
            } else {
                (DINGTALK_OWNER_KEY.to_string(), rest)
            };
            let enc = crypt.encrypt_with(plaintext, &id, &RANDOM16);
            let (sig, body) = signed(crypt, &enc);
            let q = query(&[
                ("msg_signature", &sig),
                ("timestamp", ts.as_bytes()),
                ("nonce", b"nonce"),
            ]);
            (q, body)
        }
        _ => {
            let _ = events::open_reply(crypt, DINGTALK_OWNER_KEY, rest);
            return;
        }
    };
    if let Ok(CallbackOutcome::Event { event, .. }) = block_on(r.handle_at(&q, &body, DINGTALK_NOW))
    {
        let _ = events::contact_records(&event.event_type, &event.payload);
        let _ = events::contact_change(&event.event_type, &event.payload);
    }
});
