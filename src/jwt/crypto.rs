//! Signature backends. The core verifies through a `SignatureBackend`; the in-wasm backend is
//! pure Rust (RustCrypto), the host backend (Envoy's BoringSSL via the `verify_signature`
//! foreign function) lives in the proxy-wasm adapter and falls back to this one.

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
