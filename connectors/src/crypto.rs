//! Crypto helpers shared by the vendor modules: AES-256-CBC with a caller-chosen PKCS#7 block
//! size (Feishu pads to 16 bytes, DingTalk and WeCom to 32), SHA-256, constant-time comparison.

use aes::Aes256;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::NoPadding};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("ciphertext length {0} is not a positive multiple of 16")]
    BadLength(usize),
    #[error("bad padding")]
    BadPadding,
    #[error("bad key or iv length")]
    BadKey,
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA256 of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    // HMAC takes keys of any length: new_from_slice cannot fail.
    match hmac::Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(msg);
            m.finalize().into_bytes().into()
        }
        Err(_) => [0u8; 32],
    }
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Constant-time check of a received hex signature (any case) against the expected lowercase
/// one.
pub fn hex_signature_eq(expected: &str, given: &str) -> bool {
    ct_eq(expected.as_bytes(), given.to_ascii_lowercase().as_bytes())
}

/// Appends PKCS#7 padding for `block` (1..=255) bytes.
pub fn pkcs7_pad(data: &mut Vec<u8>, block: usize) {
    let n = block - (data.len() % block);
    // n is in 1..=block <= 255
    data.extend(std::iter::repeat_n(n as u8, n));
}

/// Strips PKCS#7 padding for `block` bytes, checking every pad byte.
///
/// The check does not branch on the plaintext: it reads the same last `block` bytes whatever
/// they hold and decides once, so how long it takes says nothing about where the padding went
/// wrong (a padding oracle needs only that). Callers still must not answer a bad padding
/// differently from any other failure of a request that is not authenticated.
pub fn pkcs7_unpad(data: &[u8], block: usize) -> Result<&[u8], CryptoError> {
    use subtle::{Choice, ConstantTimeGreater, ConstantTimeLess};
    let (Some(&last), Ok(block8)) = (data.last(), u8::try_from(block)) else {
        return Err(CryptoError::BadPadding);
    };
    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    let mut bad: Choice = last.ct_eq(&0) | last.ct_gt(&block8) | u64::from(last).ct_gt(&len);
    for (i, &b) in data.iter().rev().take(block).enumerate() {
        // i < block <= 255
        let in_pad = (i as u8).ct_lt(&last);
        bad |= in_pad & !b.ct_eq(&last);
    }
    if bool::from(bad) {
        return Err(CryptoError::BadPadding);
    }
    Ok(&data[..data.len() - usize::from(last)])
}

/// AES-256-CBC encryption of already padded data.
pub fn aes256_cbc_encrypt_raw(
    key: &[u8],
    iv: &[u8],
    padded: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if padded.is_empty() || !padded.len().is_multiple_of(16) {
        return Err(CryptoError::BadLength(padded.len()));
    }
    let enc =
        cbc::Encryptor::<Aes256>::new_from_slices(key, iv).map_err(|_| CryptoError::BadKey)?;
    let mut buf = padded.to_vec();
    let len = buf.len();
    enc.encrypt_padded::<NoPadding>(&mut buf, len)
        .map_err(|_| CryptoError::BadLength(len))?;
    Ok(buf)
}

/// AES-256-CBC decryption without unpadding.
pub fn aes256_cbc_decrypt_raw(key: &[u8], iv: &[u8], ct: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if ct.is_empty() || !ct.len().is_multiple_of(16) {
        return Err(CryptoError::BadLength(ct.len()));
    }
    let dec =
        cbc::Decryptor::<Aes256>::new_from_slices(key, iv).map_err(|_| CryptoError::BadKey)?;
    let mut buf = ct.to_vec();
    let n = dec
        .decrypt_padded::<NoPadding>(&mut buf)
        .map_err(|_| CryptoError::BadLength(ct.len()))?
        .len();
    buf.truncate(n);
    Ok(buf)
}

/// Fills a fresh random array (IVs, nonces).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if getrandom::fill(&mut b).is_err() {
        // getrandom only fails when the OS has no entropy source at all; fall back to uuid's
        // generator rather than panicking (it uses the same source, so this is a last resort).
        for chunk in b.chunks_mut(16) {
            let u = uuid::Uuid::new_v4().into_bytes();
            chunk.copy_from_slice(&u[..chunk.len()]);
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_roundtrip_block_16_and_32() {
        for block in [16usize, 32] {
            for len in 0..40 {
                let mut v = vec![7u8; len];
                pkcs7_pad(&mut v, block);
                assert_eq!(v.len() % block, 0);
                assert_eq!(pkcs7_unpad(&v, block).unwrap(), &vec![7u8; len][..]);
            }
        }
        assert_eq!(pkcs7_unpad(&[1, 2, 3, 0], 16), Err(CryptoError::BadPadding));
        assert_eq!(pkcs7_unpad(&[1, 2, 2, 3], 16), Err(CryptoError::BadPadding));
        assert_eq!(pkcs7_unpad(&[17; 17], 16), Err(CryptoError::BadPadding));
        assert_eq!(pkcs7_unpad(&[], 16), Err(CryptoError::BadPadding));
        assert_eq!(pkcs7_unpad(&[3, 3], 16), Err(CryptoError::BadPadding));
        assert_eq!(pkcs7_unpad(&[2, 2], 16).unwrap(), &[] as &[u8]);
        assert_eq!(pkcs7_unpad(&[9, 1], 16).unwrap(), &[9]);
        assert_eq!(pkcs7_unpad(&[32; 32], 32).unwrap(), &[] as &[u8]);
        assert_eq!(pkcs7_unpad(&[33; 33], 32), Err(CryptoError::BadPadding));
        // Every pad byte is checked, the first one of a full block too.
        let mut full = [32u8; 64];
        full[32] = 31;
        assert_eq!(pkcs7_unpad(&full, 32), Err(CryptoError::BadPadding));
        assert_eq!(pkcs7_unpad(&[1; 4], 300), Err(CryptoError::BadPadding));
    }

    #[test]
    fn cbc_roundtrip() {
        let key = sha256(b"k");
        let iv = [3u8; 16];
        let mut pt = b"some text".to_vec();
        pkcs7_pad(&mut pt, 16);
        let ct = aes256_cbc_encrypt_raw(&key, &iv, &pt).unwrap();
        assert_ne!(ct, pt);
        assert_eq!(aes256_cbc_decrypt_raw(&key, &iv, &ct).unwrap(), pt);
        assert_eq!(
            aes256_cbc_decrypt_raw(&key, &iv, &ct[..5]),
            Err(CryptoError::BadLength(5))
        );
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
