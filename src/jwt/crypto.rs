//! Signature backends. The core verifies through a `SignatureBackend`; the in-wasm backend is
//! pure Rust (RustCrypto), the host backend (Envoy's BoringSSL via the `verify_signature`
//! foreign function) lives in the proxy-wasm adapter and falls back to this one.

use super::jwk::{KeyMaterial, PublicKey};
use super::Alg;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// Verifies one signature. `signing_input` is `header.payload`; `signature` is the raw JWS
/// signature (ECDSA as fixed-size r||s).
pub trait SignatureBackend {
    fn verify(&self, alg: Alg, key: &PublicKey, signing_input: &[u8], signature: &[u8]) -> bool;
}

/// Pure-Rust verification, usable everywhere (native tests, and wasm when the host lacks crypto).
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmCrypto;

impl SignatureBackend for WasmCrypto {
    fn verify(&self, alg: Alg, key: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
        use rsa::Pkcs1v15Sign;
        match (&key.material, alg) {
            (KeyMaterial::Rsa(k), Alg::RS256) => k
                .verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg), sig)
                .is_ok(),
            (KeyMaterial::Rsa(k), Alg::RS384) => k
                .verify(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(msg), sig)
                .is_ok(),
            (KeyMaterial::Rsa(k), Alg::RS512) => k
                .verify(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(msg), sig)
                .is_ok(),
            (KeyMaterial::Rsa(k), Alg::PS256) => pss_verify_any_salt::<Sha256>(k, msg, sig),
            (KeyMaterial::Rsa(k), Alg::PS384) => pss_verify_any_salt::<Sha384>(k, msg, sig),
            (KeyMaterial::Rsa(k), Alg::PS512) => pss_verify_any_salt::<Sha512>(k, msg, sig),
            (KeyMaterial::P256(k), Alg::ES256) => {
                use p256::ecdsa::signature::Verifier;
                p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
            }
            (KeyMaterial::P384(k), Alg::ES384) => {
                use p384::ecdsa::signature::Verifier;
                p384::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
            }
            (KeyMaterial::P521(k), Alg::ES512) => {
                use p521::ecdsa::signature::Verifier;
                p521::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
            }
            (KeyMaterial::Ed25519(k), Alg::EdDSA) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| k.verify_strict(msg, &s).is_ok()),
            _ => false,
        }
    }
}

/// RSASSA-PSS verification (RFC 8017 §9.1.2) with MGF1 over the same hash, recovering the salt
/// length from the encoded message. Envoy/BoringSSL accept any salt length for JWS
/// (RSA_PSS_SALTLEN_AUTO) and real issuers use both hLen and the maximum; the `rsa` crate only
/// verifies one fixed salt length, so this part is written here.
fn pss_verify_any_salt<D: Digest>(key: &rsa::RsaPublicKey, msg: &[u8], sig: &[u8]) -> bool {
    use rsa::traits::PublicKeyParts;
    let k = key.size();
    if sig.len() != k {
        return false;
    }
    let s = rsa::BigUint::from_bytes_be(sig);
    if &s >= key.n() {
        return false;
    }
    let m = s.modpow(key.e(), key.n()).to_bytes_be();
    let mod_bits = key.n().bits();
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    let h_len = <D as Digest>::output_size();
    if m.len() > em_len || em_len < h_len + 2 {
        return false;
    }
    let mut em = vec![0u8; em_len - m.len()];
    em.extend_from_slice(&m);
    if em[em_len - 1] != 0xbc {
        return false;
    }
    let (masked_db, rest) = em.split_at(em_len - h_len - 1);
    let h = &rest[..h_len];
    let unused_bits = 8 * em_len - em_bits;
    let top_mask = 0xffu8 >> unused_bits;
    if masked_db[0] & !top_mask != 0 {
        return false;
    }
    let mut db = masked_db.to_vec();
    let mut counter = 0u32;
    let mut offset = 0;
    while offset < db.len() {
        let block = D::new()
            .chain_update(h)
            .chain_update(counter.to_be_bytes())
            .finalize();
        for (d, m) in db[offset..].iter_mut().zip(block.iter()) {
            *d ^= m;
        }
        offset += h_len;
        counter += 1;
    }
    db[0] &= top_mask;
    let Some(one) = db.iter().position(|&b| b != 0) else {
        return false;
    };
    if db[one] != 0x01 {
        return false;
    }
    let salt = &db[one + 1..];
    let m_hash = D::digest(msg);
    let h2 = D::new()
        .chain_update([0u8; 8])
        .chain_update(&m_hash)
        .chain_update(salt)
        .finalize();
    h2[..] == *h
}

/// Converts a JWS ECDSA signature (fixed-size r||s) to the DER form BoringSSL expects.
/// Returns None when the input has the wrong size or r/s is zero.
pub fn ecdsa_raw_to_der(alg: Alg, sig: &[u8]) -> Option<Vec<u8>> {
    Some(match alg {
        Alg::ES256 => p256::ecdsa::Signature::from_slice(sig)
            .ok()?
            .to_der()
            .as_bytes()
            .to_vec(),
        Alg::ES384 => p384::ecdsa::Signature::from_slice(sig)
            .ok()?
            .to_der()
            .as_bytes()
            .to_vec(),
        Alg::ES512 => p521::ecdsa::Signature::from_slice(sig)
            .ok()?
            .to_der()
            .as_bytes()
            .to_vec(),
        _ => return None,
    })
}
