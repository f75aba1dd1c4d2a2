//! Signature backends. The core verifies through a `SignatureBackend` (reached through the
//! jwt-compact `Algorithm` types of src/jwt/algorithms.rs); the in-wasm backend is pure Rust (RSA
//! and ECDSA on crypto-bigint, Ed25519 with ed25519-dalek), the host backend (Envoy's BoringSSL
//! via the `verify_signature` foreign function, src/jwt/host_sig.rs) falls back to this one.

use super::ec;
use super::jwk::{EcPoint, EcVerifyingKey, Ed25519VerifyingKey, RsaVerifyingKey};
use super::Alg;
use sha2::{Sha256, Sha384, Sha512};

/// Verifies one signature, one method per key family: the key type binds the family, `alg`
/// picks the hash (and, for RSA, the padding). `msg` is the JWS signing input `header.payload`;
/// `sig` the raw JWS signature (ECDSA as fixed-size r||s).
pub trait SignatureBackend {
    /// RS256/384/512 (PKCS#1 v1.5) and PS256/384/512 (PSS).
    fn verify_rsa(&self, alg: Alg, key: &RsaVerifyingKey, msg: &[u8], sig: &[u8]) -> bool;
    /// ES256/384/512; `alg` is the key's own (`EcVerifyingKey::alg`).
    fn verify_ecdsa(&self, alg: Alg, key: &EcVerifyingKey, msg: &[u8], sig: &[u8]) -> bool;
    /// EdDSA (Ed25519).
    fn verify_eddsa(&self, key: &Ed25519VerifyingKey, msg: &[u8], sig: &[u8]) -> bool;
}

/// Pure-Rust verification, usable everywhere (native tests, and wasm when the host lacks crypto).
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmCrypto;

impl SignatureBackend for WasmCrypto {
    fn verify_rsa(&self, alg: Alg, key: &RsaVerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
        let k = &key.key;
        match alg {
            Alg::RS256 => k.verify_pkcs1v15::<Sha256>(msg, sig),
            Alg::RS384 => k.verify_pkcs1v15::<Sha384>(msg, sig),
            Alg::RS512 => k.verify_pkcs1v15::<Sha512>(msg, sig),
            Alg::PS256 => k.verify_pss::<Sha256>(msg, sig),
            Alg::PS384 => k.verify_pss::<Sha384>(msg, sig),
            Alg::PS512 => k.verify_pss::<Sha512>(msg, sig),
            _ => false,
        }
    }

    fn verify_ecdsa(&self, alg: Alg, key: &EcVerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
        match (&key.point, alg) {
            (EcPoint::P256(k), Alg::ES256) => k.verify(msg, sig),
            (EcPoint::P384(k), Alg::ES384) => k.verify(msg, sig),
            (EcPoint::P521(k), Alg::ES512) => k.verify(msg, sig),
            _ => false,
        }
    }

    fn verify_eddsa(&self, key: &Ed25519VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(sig)
            .is_ok_and(|s| key.0.verify_strict(msg, &s).is_ok())
    }
}

/// Converts a JWS ECDSA signature (fixed-size r||s) to the DER form BoringSSL expects.
/// Returns None when the input has the wrong size or r/s is not in [1, n-1].
pub fn ecdsa_raw_to_der(alg: Alg, sig: &[u8]) -> Option<Vec<u8>> {
    match alg {
        Alg::ES256 => ec::raw_to_der::<{ ec::L256 }, ec::P256>(sig),
        Alg::ES384 => ec::raw_to_der::<{ ec::L384 }, ec::P384>(sig),
        Alg::ES512 => ec::raw_to_der::<{ ec::L521 }, ec::P521>(sig),
        _ => None,
    }
}
