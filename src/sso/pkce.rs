//! PKCE (RFC 7636, S256) and the random `state`/`nonce` values of a login.

use super::random::{self, Random};
use crate::jwt::b64url_encode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of `state`, `nonce` and the code verifier: 32 random bytes in base64url.
pub const TOKEN_CHARS: usize = 43;

/// 32 random bytes as 43 base64url characters (a valid PKCE verifier: RFC 7636 §4.1).
pub fn random_token(rng: &mut dyn Random) -> Option<String> {
    let b: [u8; 32] = random::bytes(rng)?;
    Some(b64url_encode(&b))
}

/// `code_challenge` for method S256.
pub fn challenge_s256(verifier: &str) -> String {
    b64url_encode(&Sha256::digest(verifier.as_bytes()))
}

/// Whether `s` looks like one of our random tokens (43 base64url characters).
pub fn is_token(s: &str) -> bool {
    s.len() == TOKEN_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Constant-time equality (length is not secret).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        assert_eq!(
            challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn tokens() {
        struct Seven;
        impl Random for Seven {
            fn fill(&mut self, b: &mut [u8]) -> bool {
                b.fill(7);
                true
            }
        }
        let t = random_token(&mut Seven).unwrap();
        assert!(is_token(&t), "{t}");
        assert!(!is_token("short"));
        assert!(!is_token(&format!("{}!", &t[1..])));
        assert!(ct_eq(&t, &t.clone()));
        assert!(!ct_eq(&t, &t[1..]));
        assert!(!ct_eq("abc", "abd"));
    }
}
