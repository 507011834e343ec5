//! DingTalk Stream-mode frames (JSON text over the WebSocket), through the real `StreamClient`
//! connected to a loopback DingTalk gateway (`huitong_fuzz::loopback`): SYSTEM pings and
//! disconnects, EVENTs handed to the hub (acked or refused), CALLBACKs, their acks; and the
//! frame's public parsers directly (`Frame::parse`, `frame_event`, `frame_callback`, the ack).
//!
//! Input: the frame's text (non-UTF-8 input is skipped: a text frame is UTF-8). Never panics,
//! never stops answering.
#![no_main]

use std::sync::OnceLock;

use axum::extract::ws::Message;
use huitong_connectors::RawEvent;
use huitong_connectors::capability::PushChannel;
use huitong_connectors::dingtalk::DingTalkConfig;
use huitong_connectors::dingtalk::events::contact_records;
use huitong_connectors::dingtalk::stream::{
    Frame, OPEN_PATH, StreamClient, frame_callback, frame_event,
};
use huitong_fuzz::loopback::{Loopback, Vendor};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

struct DingTalk;

fn sync_id(n: u64) -> String {
    format!("sync-{n}")
}

impl Vendor for DingTalk {
    const ENDPOINT_PATH: &'static str = OPEN_PATH;

    fn endpoint_reply(ws_url: &str) -> Value {
        json!({"endpoint": ws_url, "ticket": "fuzz-ticket"})
    }

    fn client(origin: &str) -> Box<dyn PushChannel> {
        let cfg = DingTalkConfig::for_sandbox(origin, "dingfuzzkey", "secret".to_string().into());
        let mut c = StreamClient::new(&cfg).expect("valid settings");
        c.max_backoff = std::time::Duration::ZERO;
        Box::new(c)
    }

    /// A SYSTEM frame of another topic than ping/disconnect: acked at once with its messageId.
    fn sync_frame(n: u64) -> Message {
        let f = json!({"specVersion": "1.0", "type": "SYSTEM",
            "headers": {"topic": "sync", "messageId": sync_id(n)}, "data": ""});
        Message::Text(f.to_string().into())
    }

    fn is_sync_reply(n: u64, m: &Message) -> bool {
        let Message::Text(t) = m else { return false };
        serde_json::from_str::<Value>(t.as_str())
            .is_ok_and(|v| v.pointer("/headers/messageId") == Some(&json!(sync_id(n))))
    }

    fn on_event(event: &RawEvent) {
        let _ = contact_records(&event.event_type, &event.payload);
    }
}

fn loopback() -> &'static Loopback<DingTalk> {
    static L: OnceLock<Loopback<DingTalk>> = OnceLock::new();
    L.get_or_init(Loopback::start)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(frame) = Frame::parse(text) {
        let _ = frame_event(&frame);
        let _ = frame_callback(&frame);
        let ack = frame.ack(200, "OK", &frame.data);
        assert!(
            serde_json::from_str::<Value>(&ack).is_ok(),
            "ack is not JSON: {ack}"
        );
    }
    loopback().exchange(Message::Text(text.to_owned().into()), false);
});
