//! ES256 test keys: a JWK for the JWKS and compact tokens signed with RustCrypto `p256` (not
//! meshgate's code), for the engine and adapter flow tests.

use meshgate::jwt::b64url_encode;
use p256::ecdsa::{signature::Signer, Signature, SigningKey};
use serde_json::{json, Value};

pub struct Key {
    pub kid: String,
    sk: SigningKey,
}

impl Key {
    /// A deterministic key: the same `seed` gives the same key.
    pub fn new(kid: &str, seed: u8) -> Key {
        let mut bytes = [seed; 32];
        bytes[0] = 1;
        Key {
            kid: kid.into(),
            sk: SigningKey::from_bytes(&bytes.into()).unwrap(),
        }
    }

    pub fn jwk(&self) -> Value {
        let point = self.sk.verifying_key().to_encoded_point(false);
        json!({"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":self.kid,
               "x": b64url_encode(point.x().unwrap()), "y": b64url_encode(point.y().unwrap())})
    }

    /// A compact JWS over these exact header and payload bytes (any JSON, or none), validly
    /// signed with ES256: what the verifier refuses then is the content, not the signature.
    pub fn sign_bytes(&self, header: &[u8], payload: &[u8]) -> String {
        let input = format!("{}.{}", b64url_encode(header), b64url_encode(payload));
        let sig: Signature = self.sk.sign(input.as_bytes());
        format!("{input}.{}", b64url_encode(&sig.to_bytes()))
    }

    pub fn sign(&self, claims: Value) -> String {
        let header = json!({"alg":"ES256","typ":"JWT","kid":self.kid});
        let input = format!(
            "{}.{}",
            b64url_encode(header.to_string().as_bytes()),
            b64url_encode(claims.to_string().as_bytes())
        );
        let sig: Signature = self.sk.sign(input.as_bytes());
        format!("{input}.{}", b64url_encode(&sig.to_bytes()))
    }
}

/// `{"keys": [...]}` as the IdP would serve it.
pub fn jwks(keys: &[&Key]) -> Vec<u8> {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
        .to_string()
        .into_bytes()
}
