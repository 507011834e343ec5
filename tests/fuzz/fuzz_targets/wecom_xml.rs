//! WeCom's XML parser (`parse_xml`) alone: the callback envelope is parsed before the signature
//! is checked (the signature covers the `Encrypt` element inside it), so anyone can send it.
//! Non-UTF-8 input is refused before the parser by the receiver and skipped here.
//!
//! Never panics; whatever parses is rendered back (`to_xml`) and parsed again.
#![no_main]

use huitong_connectors::wecom::events::{parse_xml, to_xml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(map) = parse_xml(xml) {
        let _ = parse_xml(&to_xml(&map));
    }
});
