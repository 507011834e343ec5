//! Feishu long-connection frames (protobuf `pbbp2.Frame` over the WebSocket), through the real
//! `LongConnection` client connected to a loopback Feishu (`huitong_fuzz::loopback`): each
//! input is one binary frame — pings and pongs (their `ClientConfig` payload), data frames,
//! fragments, events handed to the hub (acked or refused) and their acks.
//!
//! Input: one flag byte (1: the server hangs up after the frame, and the client must reconnect
//! with what the frame told it; anything else: it does not), then the frame's bytes as sent. Never panics, never
//! stops answering.
#![no_main]

use std::sync::OnceLock;

use axum::extract::ws::Message;
use huitong_connectors::RawEvent;
use huitong_connectors::capability::PushChannel;
use huitong_connectors::feishu::FeishuConfig;
use huitong_connectors::feishu::events::contact_records;
use huitong_connectors::feishu::ws::{ENDPOINT_PATH, Frame, Header, LongConnection, METHOD_DATA};
use huitong_fuzz::loopback::{Loopback, Vendor};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use serde_json::{Value, json};

struct Feishu;

fn sync_id(n: u64) -> String {
    format!("sync-{n}")
}

impl Vendor for Feishu {
    const ENDPOINT_PATH: &'static str = ENDPOINT_PATH;

    fn endpoint_reply(ws_url: &str) -> Value {
        json!({"code": 0, "msg": "ok", "data": {"URL": ws_url, "ClientConfig": {
            "ReconnectCount": -1, "ReconnectInterval": 0, "ReconnectNonce": 0,
            "PingInterval": 120}}})
    }

    fn client(origin: &str) -> Box<dyn PushChannel> {
        let cfg = FeishuConfig::new(origin, "cli_fuzz", "secret".to_string().into());
        let mut c = LongConnection::new(&cfg).expect("valid settings");
        c.max_reconnect_interval = std::time::Duration::ZERO;
        Box::new(c)
    }

    /// A card (a data frame that is not an event): answered at once, echoing the frame.
    fn sync_frame(n: u64) -> Message {
        let frame = Frame {
            seq_id: n,
            log_id: 0,
            service: 7,
            method: METHOD_DATA,
            headers: vec![
                Header {
                    key: "type".into(),
                    value: "card".into(),
                },
                Header {
                    key: "message_id".into(),
                    value: sync_id(n),
                },
            ],
            payload_encoding: None,
            payload_type: None,
            payload: Some(b"{}".to_vec()),
            log_id_new: None,
        };
        Message::Binary(frame.encode_to_vec().into())
    }

    fn is_sync_reply(n: u64, m: &Message) -> bool {
        let Message::Binary(b) = m else { return false };
        Frame::decode(b.as_ref()).is_ok_and(|f| {
            f.seq_id == n && f.method == METHOD_DATA && f.header("message_id") == Some(&sync_id(n))
        })
    }

    fn on_event(event: &RawEvent) {
        let _ = contact_records(&event.event_type, &event.payload);
    }
}

fn loopback() -> &'static Loopback<Feishu> {
    static L: OnceLock<Loopback<Feishu>> = OnceLock::new();
    L.get_or_init(Loopback::start)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, frame)) = data.split_first() else {
        return;
    };
    loopback().exchange(Message::Binary(frame.to_vec().into()), flags == 1);
});
