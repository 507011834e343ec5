//! Custom (group webhook) bots: `POST /open-apis/bot/v2/hook/<hook_id>`, no token, optional
//! signature. `sign` = base64(HMAC-SHA256(key = `timestamp + "\n" + secret`, message = empty)).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// The `sign` field for a custom bot message sent at `timestamp` (Unix seconds).
pub fn sign(timestamp: i64, secret: &str) -> String {
    let key = format!("{timestamp}\n{secret}");
    B64.encode(crate::crypto::hmac_sha256(key.as_bytes(), b""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn custom_bot_sign_vector() {
        assert_eq!(
            super::sign(1599360473, "demo-secret"),
            "3/MaVZ8JLIy4TUG+7KSFJqvUkTKd+HWY8g+56DZWq8s="
        );
    }
}
