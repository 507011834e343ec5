//! What the fuzz targets share, and the seed generator (`examples/seeds.rs`) with them: the
//! test keys, the input layouts of the callback targets, a blocking executor and the loopback
//! vendor server the push-channel targets run the real clients against.
//!
//! Every callback target reads its input as one mode byte and a payload. Some modes hand the
//! fuzzer's bytes to the receiver as they are (what a stranger can send: nothing authenticated
//! yet); the others first sign and encrypt them with the test keys, exactly as the vendor would,
//! so that the fuzzer also reaches what only runs after the signature checked out (decryption,
//! the decrypted buffer, the event parsers). Multi-field payloads are split on NUL bytes.

use std::collections::HashMap;
use std::future::Future;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

pub mod loopback;

/// Test keys: what the receivers are configured with, and what the signed modes sign with.
pub mod keys {
    pub const FEISHU_ENCRYPT_KEY: &str = "fuzz-encrypt-key";
    pub const FEISHU_VERIFICATION_TOKEN: &str = "fuzz-verification-token";
    /// Feishu's clock: seconds.
    pub const FEISHU_NOW: i64 = 1_700_000_000;

    pub const DINGTALK_TOKEN: &str = "fuzztoken123";
    pub const DINGTALK_AES_KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";
    pub const DINGTALK_OWNER_KEY: &str = "dingfuzzowner";
    /// DingTalk's clock: milliseconds.
    pub const DINGTALK_NOW: i64 = 1_700_000_000_000;

    pub const WECOM_TOKEN: &str = "fuzztoken";
    pub const WECOM_AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
    pub const WECOM_CORP_ID: &str = "wwfuzzcorp0000001";
    pub const WECOM_NOW: i64 = 1_700_000_000;

    /// The fixed random prefix / IV of the signed modes (deterministic runs).
    pub const RANDOM16: [u8; 16] = *b"0123456789abcdef";
}

/// `data` split on NUL bytes into at most `n` fields (the last keeps any further NULs); missing
/// fields are empty.
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0).collect();
    out.resize(n, &[]);
    out
}

/// `fields` joined with NUL bytes (the seeds' side of [`fields`]).
pub fn join(mode: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![mode];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(f);
    }
    out
}

/// Text of a field, lossily (query values and header values are text).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Headers from (name, value) pairs; a value a header cannot carry is left out, as an HTTP
/// server would never have passed it on.
pub fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    h
}

/// A query from (name, value) pairs; an empty name-value pair means "absent".
pub fn query(pairs: &[(&str, &[u8])]) -> HashMap<String, String> {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), text(v)))
        .collect()
}

/// Runs a future to completion on this thread (a current-thread runtime kept per thread).
pub fn block_on<F: Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
    }
    RT.with(|rt| rt.block_on(f))
}
