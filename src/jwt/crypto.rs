//! Signature backends. The core verifies through a `SignatureBackend`; the in-wasm backend is
//! pure Rust (RSA and ECDSA on crypto-bigint, Ed25519 with ed25519-dalek), the host backend
//! (Envoy's BoringSSL via the `verify_signature` foreign function) lives in the proxy-wasm adapter
//! and falls back to this one.

use super::ec;
use super::jwk::{KeyMaterial, PublicKey};
use super::Alg;
use sha2::{Sha256, Sha384, Sha512};

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
        match (&key.material, alg) {
            (KeyMaterial::Rsa(k), Alg::RS256) => k.verify_pkcs1v15::<Sha256>(msg, sig),
            (KeyMaterial::Rsa(k), Alg::RS384) => k.verify_pkcs1v15::<Sha384>(msg, sig),
            (KeyMaterial::Rsa(k), Alg::RS512) => k.verify_pkcs1v15::<Sha512>(msg, sig),
            (KeyMaterial::Rsa(k), Alg::PS256) => k.verify_pss::<Sha256>(msg, sig),
            (KeyMaterial::Rsa(k), Alg::PS384) => k.verify_pss::<Sha384>(msg, sig),
            (KeyMaterial::Rsa(k), Alg::PS512) => k.verify_pss::<Sha512>(msg, sig),
            (KeyMaterial::P256(k), Alg::ES256) => k.verify(msg, sig),
            (KeyMaterial::P384(k), Alg::ES384) => k.verify(msg, sig),
            (KeyMaterial::P521(k), Alg::ES512) => k.verify(msg, sig),
            (KeyMaterial::Ed25519(k), Alg::EdDSA) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| k.verify_strict(msg, &s).is_ok()),
            _ => false,
        }
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
