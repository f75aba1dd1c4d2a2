//! JWKS parsing. Keys that cannot verify JWS signatures (`use: enc`, RSA-OAEP, `oct`, unknown
//! kty/crv, broken material) are skipped and counted, never fatal: Keycloak always publishes an
//! encryption key next to its signing key (google/jwt_verify_lib#50).

use super::{b64url_decode, ec, Alg};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// An RSA key for RS*/PS*: the in-wasm key and its DER SubjectPublicKeyInfo for the host's
/// `verify_signature`, prepared once at JWKS load.
#[derive(Debug, Clone)]
pub struct RsaVerifyingKey {
    pub key: super::rsa::RsaPublicKey,
    pub spki_der: Vec<u8>,
}

/// An EC point on one of the JWS curves.
#[derive(Clone)]
pub enum EcPoint {
    P256(ec::P256PublicKey),
    P384(ec::P384PublicKey),
    P521(ec::P521PublicKey),
}

/// An EC key for ES*: the curve binds the algorithm (P-256 → ES256, P-384 → ES384, P-521 →
/// ES512). `spki_der` is set for the curves the host verifies (P-256, P-384).
#[derive(Clone)]
pub struct EcVerifyingKey {
    pub point: EcPoint,
    pub spki_der: Option<Vec<u8>>,
}

impl EcVerifyingKey {
    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        match self.point {
            EcPoint::P256(_) => Alg::ES256,
            EcPoint::P384(_) => Alg::ES384,
            EcPoint::P521(_) => Alg::ES512,
        }
    }
}

impl std::fmt::Debug for EcVerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcVerifyingKey({})", self.alg().name())
    }
}

/// An Ed25519 key for EdDSA.
#[derive(Debug, Clone)]
pub struct Ed25519VerifyingKey(pub ed25519_dalek::VerifyingKey);

/// Parsed, ready-to-use public key material: one type per JWS family, which is also the
/// `VerifyingKey` of that family's jwt-compact `Algorithm` (src/jwt/algorithms.rs).
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    Rsa(RsaVerifyingKey),
    Ec(EcVerifyingKey),
    Ed25519(Ed25519VerifyingKey),
}

/// One usable verification key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it names a supported JWS algorithm.
    pub alg: Option<Alg>,
    pub material: KeyMaterial,
    /// SHA-256 over the canonical key material: identifies "the same key" across JWKS refreshes.
    pub fingerprint: [u8; 32],
}

impl PublicKey {
    /// Whether this key type can verify `alg` (kty/crv must fit the algorithm).
    pub fn fits(&self, alg: Alg) -> bool {
        match &self.material {
            KeyMaterial::Rsa(_) => matches!(
                alg,
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
            ),
            KeyMaterial::Ec(k) => k.alg() == alg,
            KeyMaterial::Ed25519(_) => alg == Alg::EdDSA,
        }
    }
}

/// A parsed JWKS: usable keys plus why the others were skipped.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<PublicKey>,
    pub skipped: Vec<String>,
    /// How many of the skipped keys were offered for signatures and refused (too small an RSA
    /// modulus, an exponent above 2^33-1, an invalid point, an unsupported kty or curve): the
    /// `jwks_key_rejected` counter. Keys that are not for signatures (`use` other than `sig`,
    /// encryption algorithms, `oct`) are skipped without counting: Keycloak always publishes one.
    pub rejected: usize,
}

impl KeySet {
    pub fn contains_fingerprint(&self, fp: &[u8; 32]) -> bool {
        self.keys.iter().any(|k| &k.fingerprint == fp)
    }
}

/// Maximum JWKS body we accept (Keycloak realms publish a handful of keys; 256 KiB is generous).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Maximum number of keys kept from one JWKS.
pub const MAX_KEYS: usize = 64;

/// Parses a JWKS document. Errors only when the document itself is not a JWKS
/// (not JSON, no `keys` array); individual bad keys are skipped.
pub fn parse_jwks(body: &[u8]) -> Result<KeySet, String> {
    if body.len() > MAX_JWKS_BYTES {
        return Err(format!("JWKS is larger than {MAX_JWKS_BYTES} bytes"));
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "JWKS has no [keys] array".to_string())?;
    let mut set = KeySet::default();
    for (i, jwk) in keys.iter().enumerate() {
        if set.keys.len() >= MAX_KEYS {
            set.skipped
                .push(format!("keys[{i}]: more than {MAX_KEYS} keys"));
            continue;
        }
        match parse_jwk(jwk) {
            Ok(key) => set.keys.push(key),
            Err(why) => {
                set.skipped.push(format!("keys[{i}]: {why}"));
                set.rejected += usize::from(offered_for_signatures(jwk));
            }
        }
    }
    Ok(set)
}

/// Whether a JWK presents itself as a signature key: not `use` other than `sig`, not an
/// encryption algorithm, not a symmetric key.
fn offered_for_signatures(jwk: &Value) -> bool {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    let encryption_alg = field("alg")
        .is_some_and(|a| a.starts_with("RSA-OAEP") || a == "RSA1_5" || a.starts_with("ECDH-ES"));
    field("use").is_none_or(|u| u == "sig") && !encryption_alg && field("kty") != Some("oct")
}

fn str_field<'a>(jwk: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("[{name}] is not a string")),
    }
}

fn b64_field(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let s = str_field(jwk, name)?.ok_or_else(|| format!("[{name}] is missing"))?;
    b64url_decode(s).ok_or_else(|| format!("[{name}] is not base64url"))
}

fn parse_jwk(jwk: &Value) -> Result<PublicKey, String> {
    if !jwk.is_object() {
        return Err("not an object".into());
    }
    if let Some(usage) = str_field(jwk, "use")? {
        if usage != "sig" {
            return Err(format!("use {usage:?} is not sig"));
        }
    }
    let kid = str_field(jwk, "kid")?.map(str::to_owned);
    let alg = match str_field(jwk, "alg")? {
        None => None,
        Some(name) => Some(
            Alg::from_name(name)
                .ok_or_else(|| format!("alg {name:?} is not a supported JWS algorithm"))?,
        ),
    };
    let kty = str_field(jwk, "kty")?.ok_or("[kty] is missing")?;
    let (material, canonical): (KeyMaterial, Vec<u8>) = match kty {
        "RSA" => {
            if let Some(a) = alg {
                if !matches!(
                    a,
                    Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
                ) {
                    return Err(format!("alg {} does not fit an RSA key", a.name()));
                }
            }
            let n = b64_field(jwk, "n")?;
            let e = b64_field(jwk, "e")?;
            let key = super::rsa::RsaPublicKey::new(&n, &e)?;
            let mut canonical = b"RSA".to_vec();
            canonical.extend(strip_zeros(&n));
            canonical.push(b'.');
            canonical.extend(strip_zeros(&e));
            let spki_der = key.spki_der();
            (
                KeyMaterial::Rsa(RsaVerifyingKey { key, spki_der }),
                canonical,
            )
        }
        "EC" => {
            let crv = str_field(jwk, "crv")?;
            // jwt_verify_lib: no crv → P-256 unless alg says otherwise.
            let crv = match (crv, alg) {
                (Some(c), _) => c,
                (None, Some(Alg::ES384)) => "P-384",
                (None, Some(Alg::ES512)) => "P-521",
                (None, _) => "P-256",
            };
            let expected_alg = match crv {
                "P-256" => Alg::ES256,
                "P-384" => Alg::ES384,
                "P-521" => Alg::ES512,
                other => return Err(format!("EC curve {other:?} is not supported")),
            };
            if let Some(a) = alg {
                if a != expected_alg {
                    return Err(format!("alg {} does not fit curve {crv}", a.name()));
                }
            }
            let x = b64_field(jwk, "x")?;
            let y = b64_field(jwk, "y")?;
            let size = match expected_alg {
                Alg::ES256 => 32,
                Alg::ES384 => 48,
                _ => 66,
            };
            // Left-pad short coordinates (jwt_verify_lib accepts a 65-octet P-521 y).
            let (x, y) = (left_pad(&x, size)?, left_pad(&y, size)?);
            let mut sec1 = Vec::with_capacity(1 + 2 * size);
            sec1.push(4);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            let (point, spki_prefix) = match expected_alg {
                Alg::ES256 => (
                    EcPoint::P256(ec::P256PublicKey::from_coordinates(&x, &y)?),
                    Some(SPKI_P256_PREFIX),
                ),
                Alg::ES384 => (
                    EcPoint::P384(ec::P384PublicKey::from_coordinates(&x, &y)?),
                    Some(SPKI_P384_PREFIX),
                ),
                _ => (
                    EcPoint::P521(ec::P521PublicKey::from_coordinates(&x, &y)?),
                    None,
                ),
            };
            // The SPKI is a fixed prefix followed by the SEC1 point.
            let spki_der = spki_prefix.map(|prefix| [prefix, &sec1].concat());
            let mut canonical = format!("EC{crv}").into_bytes();
            canonical.extend(&sec1);
            (
                KeyMaterial::Ec(EcVerifyingKey { point, spki_der }),
                canonical,
            )
        }
        "OKP" => {
            let crv = str_field(jwk, "crv")?.ok_or("[crv] is missing")?;
            if crv != "Ed25519" {
                return Err(format!("OKP curve {crv:?} is not supported"));
            }
            if let Some(a) = alg {
                if a != Alg::EdDSA {
                    return Err(format!("alg {} does not fit an Ed25519 key", a.name()));
                }
            }
            let x = b64_field(jwk, "x")?;
            let bytes: [u8; 32] = x
                .as_slice()
                .try_into()
                .map_err(|_| "Ed25519 [x] is not 32 bytes")?;
            let key =
                ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| "bad Ed25519 key")?;
            let mut canonical = b"OKPEd25519".to_vec();
            canonical.extend(bytes);
            (KeyMaterial::Ed25519(Ed25519VerifyingKey(key)), canonical)
        }
        "oct" => return Err("symmetric (oct) keys are never used to verify".into()),
        other => return Err(format!("kty {other:?} is not supported")),
    };
    let fingerprint: [u8; 32] = Sha256::digest(&canonical).into();
    Ok(PublicKey {
        kid,
        alg,
        material,
        fingerprint,
    })
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

fn left_pad(b: &[u8], size: usize) -> Result<Vec<u8>, String> {
    let b = if b.len() > size { strip_zeros(b) } else { b };
    if b.len() > size {
        return Err("EC coordinate is too long".into());
    }
    let mut out = vec![0u8; size - b.len()];
    out.extend_from_slice(b);
    Ok(out)
}

/// DER SubjectPublicKeyInfo headers for uncompressed EC points (id-ecPublicKey + named curve).
const SPKI_P256_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const SPKI_P384_PREFIX: &[u8] = &[
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::b64url_encode;

    const RSA_N: &str = "up97uqrF9MWOPaPkwSaBeuAPLOr9FKcaWGdVEGzQ4f3Zq5WKVZowx9TCBxmImNJ1qmUi13pB8otwM_l5lfY1AFBMxVbQCUXntLovhDaiSvYp4wGDjFzQiYA-pUq8h6MUZBnhleYrkU7XlCBwNVyN8qNMkpLA7KFZYz-486GnV2NIJJx_4BGa3HdKwQGxi2tjuQsQvao5W4xmSVaaEWopBwMy2QmlhSFQuPUpTaywTqUcUq_6SfAHhZ4IDa_FxEd2c2z8gFGtfst9cY3lRYf-c_ZdboY3mqN9Su3-j3z5r2SHWlhB_LNAjyWlBGsvbGPlTqDziYQwZN4aGsqVKQb9Vw";

    #[test]
    fn keycloak_jwks_keeps_sig_key_and_skips_enc_key() {
        let body = format!(
            r#"{{"keys":[
              {{"kid":"sig1","kty":"RSA","alg":"RS256","use":"sig","n":"{RSA_N}","e":"AQAB"}},
              {{"kid":"enc1","kty":"RSA","alg":"RSA-OAEP","use":"enc","n":"{RSA_N}","e":"AQAB"}},
              {{"kid":"weird","kty":"XYZ"}},
              {{"kid":"hmac","kty":"oct","k":"c2VjcmV0"}}
            ]}}"#
        );
        let set = parse_jwks(body.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("sig1"));
        assert_eq!(set.keys[0].alg, Some(Alg::RS256));
        let KeyMaterial::Rsa(k) = &set.keys[0].material else {
            panic!("RSA key expected")
        };
        assert!(k.spki_der.len() > 256);
        assert_eq!(set.skipped.len(), 3);
        assert_eq!(
            set.rejected, 1,
            "only the unknown kty was offered for signatures"
        );
    }

    #[test]
    fn rsa_oaep_without_use_is_skipped_by_alg() {
        let body =
            format!(r#"{{"keys":[{{"kty":"RSA","alg":"RSA-OAEP","n":"{RSA_N}","e":"AQAB"}}]}}"#);
        assert!(parse_jwks(body.as_bytes()).unwrap().keys.is_empty());
    }

    #[test]
    fn not_a_jwks_is_an_error() {
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(br#"{"keys":5}"#).is_err());
        assert!(parse_jwks(br#"{"keys":[]}"#).unwrap().keys.is_empty());
    }

    #[test]
    fn weak_rsa_keys_are_skipped_with_a_reason() {
        let n1024 = b64url_encode(&[0xc1u8; 128]);
        let body = format!(
            r#"{{"keys":[
              {{"kid":"small","kty":"RSA","n":"{n1024}","e":"AQAB"}},
              {{"kid":"big-e","kty":"RSA","n":"{RSA_N}","e":"AQAAAAAB"}},
              {{"kid":"good","kty":"RSA","n":"{RSA_N}","e":"AQAB"}}
            ]}}"#
        );
        let set = parse_jwks(body.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("good"));
        assert_eq!(set.skipped.len(), 2, "{:?}", set.skipped);
        assert!(
            set.skipped[0].starts_with("keys[0]: RSA modulus of 1024 bits"),
            "{:?}",
            set.skipped
        );
        assert!(
            set.skipped[1].starts_with("keys[1]: RSA exponent"),
            "{:?}",
            set.skipped
        );
    }

    #[test]
    fn same_key_same_fingerprint_across_kids() {
        let body = format!(
            r#"{{"keys":[{{"kid":"a","kty":"RSA","n":"{RSA_N}","e":"AQAB"}},{{"kid":"b","kty":"RSA","n":"AAAA{RSA_N}","e":"AQAB"}}]}}"#
        );
        let set = parse_jwks(body.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 2);
        assert_eq!(set.keys[0].fingerprint, set.keys[1].fingerprint);
    }
}
