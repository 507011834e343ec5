//! The WXBizMsgCrypt callback format shared by DingTalk HTTP push and WeCom callbacks
//! (docs/vendors/dingtalk.md, docs/vendors/wecom.md).
//!
//! - key = base64decode(EncodingAESKey + "=") (32 bytes), AES-256-CBC, IV = key[0..16];
//! - plaintext = random(16) ‖ u32 big-endian len(msg) ‖ msg ‖ receive id, PKCS#7 padded to a
//!   **32-byte** block (a full 32 when aligned), then base64;
//! - signature = lowercase hex SHA-1 of token, timestamp, nonce, encrypt sorted lexicographically
//!   and concatenated.
//!
//! The signature covers `encrypt`: [`WxBizMsgCrypt::open`] checks it before decrypting, and a
//! receiver answers every failure after it alike ([`WxBizError::into_callback`]).
//!
//! Vendor-neutral: the receive id (DingTalk app key / corp id / suite key; WeCom corp id or
//! suite id) is returned by [`WxBizMsgCrypt::decrypt`] and checked by the caller, or checked
//! in constant time by [`WxBizMsgCrypt::decrypt_for`].

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha1::{Digest, Sha1};

use crate::ConnectorError;
use crate::capability::CallbackError;
use crate::crypto::{
    CryptoError, aes256_cbc_decrypt_raw, aes256_cbc_encrypt_raw, ct_eq, hex_signature_eq,
    pkcs7_pad, pkcs7_unpad, random_bytes,
};
use crate::receiver;

/// The PKCS#7 block size of the format.
pub const BLOCK: usize = 32;

/// Why a callback could not be verified or opened. The `code_*` helpers give the vendors'
/// SDK error codes for logs and replies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WxBizError {
    #[error("signature mismatch")]
    BadSignature,
    #[error("EncodingAESKey is not 43 base64 characters decoding to 32 bytes")]
    BadAesKey,
    #[error("encrypt is not valid base64")]
    BadBase64,
    #[error("decryption failed: {0}")]
    Decrypt(#[from] CryptoError),
    #[error("decrypted buffer is malformed")]
    BadBuffer,
    #[error("receive id mismatch")]
    ReceiveIdMismatch,
}

impl WxBizError {
    /// DingTalk's code (900001–900010).
    pub fn dingtalk_code(&self) -> i64 {
        match self {
            Self::BadSignature => 900005,
            Self::BadAesKey => 900004,
            Self::BadBase64 | Self::Decrypt(_) => 900008,
            Self::BadBuffer => 900008,
            Self::ReceiveIdMismatch => 900010,
        }
    }

    /// The callback error for this failure: a bad signature is one; every other failure (of
    /// the decryption or of the buffer, found only after the signature checked out) is the one
    /// [`receiver::opaque`] error, whatever it was, so that the answer says nothing about what
    /// the decryption found. `vendor` and its `code` go to the log with the detail.
    pub fn into_callback(self, vendor: &'static str, code: fn(&Self) -> i64) -> CallbackError {
        match self {
            Self::BadSignature => CallbackError::BadSignature,
            other => receiver::opaque(vendor, format_args!("{other} ({})", code(&other))),
        }
    }

    /// WeCom's SDK code (−40001…−40008).
    pub fn wecom_code(&self) -> i64 {
        match self {
            Self::BadSignature => -40001,
            Self::BadAesKey => -40004,
            Self::ReceiveIdMismatch => -40005,
            Self::BadBase64 | Self::Decrypt(_) => -40007,
            Self::BadBuffer => -40008,
        }
    }
}

/// Lowercase hex SHA-1 over the sorted concatenation of the four strings.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut h = Sha1::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Checks `sig` (hex, case-insensitive) against the expected signature in constant time.
pub fn verify(token: &str, timestamp: &str, nonce: &str, encrypt: &str, sig: &str) -> bool {
    hex_signature_eq(&signature(token, timestamp, nonce, encrypt), sig)
}

/// The signature parameters of a callback query, `(signature, timestamp, nonce)`: each the
/// value of the first of its `names` present, refused when empty if `non_empty`.
pub fn signed_query<'a>(
    query: &'a HashMap<String, String>,
    names: [&[&str]; 3],
    non_empty: bool,
) -> Result<(&'a str, &'a str, &'a str), CallbackError> {
    let [sig, ts, nonce] = names.map(|names| {
        names
            .iter()
            .find_map(|n| query.get(*n))
            .map(String::as_str)
            .filter(|s| !(non_empty && s.is_empty()))
    });
    match (sig, ts, nonce) {
        (Some(sig), Some(ts), Some(nonce)) => Ok((sig, ts, nonce)),
        _ => Err(CallbackError::MissingSignature),
    }
}

/// Callback crypto for one app: the token and the AES key.
pub struct WxBizMsgCrypt {
    token: SecretString,
    key: SecretBox<[u8; 32]>,
}

impl std::fmt::Debug for WxBizMsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WxBizMsgCrypt { .. }")
    }
}

/// Decodes a 43-character EncodingAESKey into the 32-byte AES key.
pub fn decode_aes_key(encoding_aes_key: &str) -> Result<[u8; 32], WxBizError> {
    if encoding_aes_key.len() != 43 {
        return Err(WxBizError::BadAesKey);
    }
    let mut s = String::with_capacity(44);
    s.push_str(encoding_aes_key);
    s.push('=');
    // The last character of a 43-char key may carry non-zero trailing bits (DingTalk's sample
    // keys do); decode leniently like the vendors' SDKs.
    let bytes = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    )
    .decode(s.as_bytes())
    .map_err(|_| WxBizError::BadAesKey)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| WxBizError::BadAesKey)
}

impl WxBizMsgCrypt {
    pub fn new(token: SecretString, encoding_aes_key: &SecretString) -> Result<Self, WxBizError> {
        let key = decode_aes_key(encoding_aes_key.expose_secret())?;
        Ok(Self {
            token,
            key: SecretBox::new(Box::new(key)),
        })
    }

    /// The crypto of `vendor`'s callback receiver, whose buffers must end with `receive_id`: a
    /// bad key is refused as `"{bad_key}: {error}"`, an empty receive id as `empty_id`.
    pub fn for_receiver(
        vendor: &'static str,
        token: SecretString,
        encoding_aes_key: &SecretString,
        receive_id: &str,
        bad_key: &str,
        empty_id: &str,
    ) -> Result<Self, ConnectorError> {
        let crypt = Self::new(token, encoding_aes_key)
            .map_err(|e| ConnectorError::permanent(vendor, format!("{bad_key}: {e}")))?;
        if receive_id.is_empty() {
            return Err(ConnectorError::permanent(vendor, empty_id));
        }
        Ok(crypt)
    }

    fn key(&self) -> &[u8; 32] {
        self.key.expose_secret()
    }

    /// Signature of `encrypt` with this app's token.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        signature(self.token.expose_secret(), timestamp, nonce, encrypt)
    }

    /// Constant-time check of a received signature.
    pub fn verify(
        &self,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
        sig: &str,
    ) -> Result<(), WxBizError> {
        if verify(self.token.expose_secret(), timestamp, nonce, encrypt, sig) {
            Ok(())
        } else {
            Err(WxBizError::BadSignature)
        }
    }

    /// Encrypts `msg` for `receive_id` with the given 16-byte random prefix; base64 output.
    pub fn encrypt_with(&self, msg: &[u8], receive_id: &str, random16: &[u8; 16]) -> String {
        let mut buf = Vec::with_capacity(20 + msg.len() + receive_id.len() + BLOCK);
        buf.extend_from_slice(random16);
        // Callback bodies are far below 4 GiB; saturate rather than wrap.
        let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(receive_id.as_bytes());
        pkcs7_pad(&mut buf, BLOCK);
        let key = self.key();
        // The buffer is a non-empty multiple of 32 and the key/iv lengths are fixed: this cannot
        // fail; fall back to an empty string rather than panicking.
        match aes256_cbc_encrypt_raw(key, &key[..16], &buf) {
            Ok(ct) => STANDARD.encode(ct),
            Err(_) => String::new(),
        }
    }

    /// Encrypts with a fresh random prefix.
    pub fn encrypt(&self, msg: &[u8], receive_id: &str) -> String {
        self.encrypt_with(msg, receive_id, &random_bytes::<16>())
    }

    /// Decrypts a base64 `encrypt` into (message, receive id). The caller checks the id.
    pub fn decrypt(&self, encrypt_b64: &str) -> Result<(Vec<u8>, String), WxBizError> {
        let ct = STANDARD
            .decode(encrypt_b64.trim().as_bytes())
            .map_err(|_| WxBizError::BadBase64)?;
        let key = self.key();
        let plain = aes256_cbc_decrypt_raw(key, &key[..16], &ct)?;
        let body = pkcs7_unpad(&plain, BLOCK)?;
        if body.len() < 20 {
            return Err(WxBizError::BadBuffer);
        }
        let mut len4 = [0u8; 4];
        len4.copy_from_slice(&body[16..20]);
        let n = u32::from_be_bytes(len4) as usize;
        let rest = &body[20..];
        if n > rest.len() {
            return Err(WxBizError::BadBuffer);
        }
        let (msg, id) = rest.split_at(n);
        let id = std::str::from_utf8(id).map_err(|_| WxBizError::BadBuffer)?;
        Ok((msg.to_vec(), id.to_string()))
    }

    /// Decrypts and checks the receive id against `expected` (constant time).
    pub fn decrypt_for(&self, encrypt_b64: &str, expected: &str) -> Result<Vec<u8>, WxBizError> {
        let (msg, id) = self.decrypt(encrypt_b64)?;
        if ct_eq(id.as_bytes(), expected.as_bytes()) {
            Ok(msg)
        } else {
            Err(WxBizError::ReceiveIdMismatch)
        }
    }

    /// Verifies the signature, then decrypts and checks the receive id.
    pub fn open(
        &self,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
        sig: &str,
        expected_receive_id: &str,
    ) -> Result<Vec<u8>, WxBizError> {
        self.verify(timestamp, nonce, encrypt, sig)?;
        self.decrypt_for(encrypt, expected_receive_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(token: &str, key: &str) -> WxBizMsgCrypt {
        WxBizMsgCrypt::new(token.to_string().into(), &key.to_string().into()).unwrap()
    }

    // dingtalk.md §6 vector 1 (official ISV sample).
    const DT1_KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";
    const DT1_ENC: &str = "1a3NBxmCFwkCJvfoQ7WhJHB+iX3qHPsc9JbaDznE1i03peOk1LaOQoRz3+nlyGNhwmwJ3vDMG+OzrHMeiZI7gTRWVdUBmfxjZ8Ej23JVYa9VrYeJ5as7XM/ZpulX8NEQis44w53h1qAgnC3PRzM7Zc/D6Ibr0rgUathB6zRHP8PYrfgnNOS9PhSBdHlegK+AGGanfwjXuQ9+0pZcy0w9lQ==";
    const DT1_PLAIN: &str = r#"{"EventType":"check_create_suite_url","Random":"LPIdSnlF","TestSuiteKey":"suite4xxxxxxxxxxxxxxx"}"#;

    #[test]
    fn dingtalk_vector_1() {
        let cr = c("123456", DT1_KEY);
        assert_eq!(
            cr.signature("1445827045067", "nEXhMP4r", DT1_ENC),
            "5a65ceeef9aab2d149439f82dc191dd6c5cbe2c0"
        );
        let msg = cr
            .open(
                "1445827045067",
                "nEXhMP4r",
                DT1_ENC,
                "5a65ceeef9aab2d149439f82dc191dd6c5cbe2c0",
                "suite4xxxxxxxxxxxxxxx",
            )
            .unwrap();
        assert_eq!(msg, DT1_PLAIN.as_bytes());
        assert_eq!(
            cr.encrypt_with(
                DT1_PLAIN.as_bytes(),
                "suite4xxxxxxxxxxxxxxx",
                b"hU3bEfGZZewzhG5a"
            ),
            DT1_ENC
        );
        assert_eq!(
            cr.decrypt_for(DT1_ENC, "suite4yyyyyyyyyyyyyyy"),
            Err(WxBizError::ReceiveIdMismatch)
        );
    }

    #[test]
    fn dingtalk_vector_2_success_reply() {
        let cr = c("123456", "1234567890123456789012345678901234567890123");
        let enc = "YvkvaGe4hQxd3VxRmEty0dVlnCOAqwf56xwTRHDHoOURqhalbmBJQk5FNcRk42Gl5T0YQXZNwpwWSm1xAFJ5ZA==";
        let msg = cr
            .open(
                "1614767836",
                "A7Co0cJLMzIDtMMI",
                enc,
                "9a95a004dd16f5c307e849b994173f76aa26e5eb",
                "dingsnotzck6pm5veliw",
            )
            .unwrap();
        assert_eq!(msg, b"success");
        assert_eq!(
            cr.verify(
                "1614767837",
                "A7Co0cJLMzIDtMMI",
                enc,
                "9a95a004dd16f5c307e849b994173f76aa26e5eb"
            ),
            Err(WxBizError::BadSignature)
        );
    }

    const WA_TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
    const WA_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";

    #[test]
    fn wecom_vector_a() {
        let cr = c(WA_TOKEN, WA_KEY);
        let echo = "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==";
        let msg = cr
            .open(
                "1476416373",
                "47744683",
                echo,
                "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb",
                "ww1436e0e65a779aee",
            )
            .unwrap();
        assert_eq!(msg, b"1288432023552776189");
        let post = "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+";
        let (msg, id) = cr.decrypt(post).unwrap();
        assert_eq!(id, "ww1436e0e65a779aee");
        assert_eq!(
            String::from_utf8(msg).unwrap(),
            "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName><CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content><MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>"
        );
        assert!(verify(
            WA_TOKEN,
            "1476422779",
            "1597212914",
            post,
            "0c3914025cb4b4d68103f6bfc8db550f79dcf48e"
        ));
    }

    #[test]
    fn wecom_vector_b_deterministic_encrypt() {
        let cr = c("123456", "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR");
        let echo = "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q==";
        assert_eq!(
            cr.open(
                "1411443780",
                "437374425",
                echo,
                "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96",
                "wx49f0ab532d5d035a"
            )
            .unwrap(),
            b"5927782489442352469"
        );
        let plain = "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n<CreateTime>1411525903</CreateTime>\n</xml>";
        let enc = cr.encrypt_with(plain.as_bytes(), "wx49f0ab532d5d035a", b"1234567890123456");
        assert_eq!(
            enc,
            "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3"
        );
        assert_eq!(
            cr.signature("1411525903", "461056294", &enc),
            "407518b7649e86ef23978113f92d27afa9296533"
        );
    }

    #[test]
    fn roundtrip_all_lengths_and_aligned_padding() {
        let cr = c("t", DT1_KEY);
        for n in 0..70 {
            let msg = vec![b'x'; n];
            let enc = cr.encrypt(&msg, "owner");
            assert_eq!(cr.decrypt_for(&enc, "owner").unwrap(), msg);
        }
    }

    #[test]
    fn rejects_garbage() {
        let cr = c("t", DT1_KEY);
        assert_eq!(cr.decrypt("not base64!!"), Err(WxBizError::BadBase64));
        assert!(matches!(
            cr.decrypt("AAAA"),
            Err(WxBizError::Decrypt(CryptoError::BadLength(3)))
        ));
        // valid ciphertext of a buffer whose length field exceeds the content
        let mut raw = vec![0u8; 16];
        raw.extend_from_slice(&1000u32.to_be_bytes());
        raw.extend_from_slice(b"abc");
        pkcs7_pad(&mut raw, BLOCK);
        let key = decode_aes_key(DT1_KEY).unwrap();
        let enc = STANDARD.encode(aes256_cbc_encrypt_raw(&key, &key[..16], &raw).unwrap());
        assert_eq!(cr.decrypt(&enc), Err(WxBizError::BadBuffer));
        assert!(WxBizMsgCrypt::new("t".to_string().into(), &"short".to_string().into()).is_err());
    }
}
