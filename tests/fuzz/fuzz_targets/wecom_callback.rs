//! WeCom callbacks through `WecomReceiver` (WXBizMsgCrypt in XML: the envelope, signature
//! check, decryption, the receive id, the event XML).
//!
//! Mode byte (`data[0] % 4`), then:
//! - 0: `msg_signature \0 timestamp \0 nonce \0 echostr \0 body`, as they come (query + raw
//!   body; an empty `echostr` is absent);
//! - 1: `echostr`, signed with the test token (the URL verification: decryption of anything);
//! - 2: `encrypt`: put in the XML envelope and signed (decryption of anything);
//! - 3: `receive id \0 plaintext`, encrypted and signed with the test keys (the decrypted
//!   buffer, the event XML; seeds use the configured corp id).
//!
//! Never panics, whatever the input; an accepted event is also read as `contact_records`.
#![no_main]

use std::sync::Arc;

use huitong_connectors::wecom::events::{self, CallbackConfig, WecomReceiver};
use huitong_connectors::{CallbackOutcome, InMemoryDedup};
use huitong_fuzz::keys::{RANDOM16, WECOM_AES_KEY, WECOM_CORP_ID, WECOM_NOW, WECOM_TOKEN};
use huitong_fuzz::{block_on, fields, query, text};
use libfuzzer_sys::fuzz_target;

fn receiver() -> WecomReceiver {
    let cfg = CallbackConfig::new(
        WECOM_TOKEN.to_string().into(),
        WECOM_AES_KEY.to_string().into(),
        WECOM_CORP_ID,
    );
    WecomReceiver::new(cfg, Arc::new(InMemoryDedup::default())).expect("valid settings")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let r = receiver();
    let crypt = r.crypt();
    let ts = WECOM_NOW.to_string();
    // The query of a request signed over `signed`, with `echostr` if given.
    let signed = |signed: &str, echostr: Option<&str>| {
        let sig = crypt.signature(&ts, "nonce", signed);
        let mut q = query(&[
            ("msg_signature", sig.as_bytes()),
            ("timestamp", ts.as_bytes()),
            ("nonce", b"nonce"),
        ]);
        if let Some(e) = echostr {
            q.insert("echostr".into(), e.into());
        }
        q
    };
    let (q, body) = match mode % 4 {
        0 => {
            let f = fields(rest, 5);
            let q = query(&[
                ("msg_signature", f[0]),
                ("timestamp", f[1]),
                ("nonce", f[2]),
                ("echostr", f[3]),
            ]);
            (q, f[4].to_vec())
        }
        1 => {
            let echostr = text(rest);
            // The receiver reads a space as the '+' it was before URL decoding.
            (
                signed(&echostr.replace(' ', "+"), Some(&echostr)),
                Vec::new(),
            )
        }
        2 => {
            let enc = text(rest);
            let body = events::envelope_xml(WECOM_CORP_ID, &enc, Some(1_000_002));
            // WeCom signs the Encrypt text as the XML carries it (the receiver trims it).
            (signed(enc.trim(), None), body.into_bytes())
        }
        _ => {
            let f = fields(rest, 2);
            let enc = crypt.encrypt_with(f[1], &text(f[0]), &RANDOM16);
            let body = events::envelope_xml(WECOM_CORP_ID, &enc, None);
            (signed(&enc, None), body.into_bytes())
        }
    };
    if let Ok(CallbackOutcome::Event { event, .. }) = block_on(r.handle_at(&q, &body, WECOM_NOW)) {
        let _ = events::contact_records(&event.event_type, &event.payload);
    }
});
