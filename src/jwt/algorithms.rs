//! meshgate's signature backends behind jwt-compact's `Algorithm` trait: one type per JWS family
//! (RS*, PS*, ES*, EdDSA). Each type's `VerifyingKey` is that family's key type, so an algorithm
//! can only ever be handed a key of its own kind (alg/key binding by type); verification goes to
//! the configured backend (the host's BoringSSL or the in-wasm code). Which keys are tried (kid,
//! JWK `alg`, `use`) is decided by meshgate (src/jwt/verify.rs), not here.
//!
//! These algorithms verify only: meshgate never signs, so their signing key type has no values.

use super::crypto::SignatureBackend;
use super::jwk::{EcVerifyingKey, Ed25519VerifyingKey, RsaVerifyingKey};
use super::Alg;
use jwt_compact::{Algorithm, AlgorithmSignature};
use std::borrow::Cow;

/// A JWS signature as received. Its size is checked by the backend (it depends on the key).
#[derive(Debug, Clone)]
pub struct JwsSignature(Vec<u8>);

impl AlgorithmSignature for JwsSignature {
    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Ok(JwsSignature(slice.to_vec()))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

/// The signing key of a verify-only algorithm: a type without values.
#[derive(Debug, Clone, Copy)]
pub enum NoSigningKey {}

/// Declares one verify-only algorithm type per JWS family.
macro_rules! jws_family {
    ($(#[$doc:meta])* $name:ident, $key:ty, [$($alg:ident),+],
     |$backend:ident, $a:ident, $k:ident, $msg:ident, $sig:ident| $verify:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $name<'b> {
            alg: Alg,
            backend: &'b dyn SignatureBackend,
        }

        impl<'b> $name<'b> {
            /// The algorithm for `alg`, or None when `alg` is not of this family.
            pub fn new(alg: Alg, backend: &'b dyn SignatureBackend) -> Option<Self> {
                matches!(alg, $(Alg::$alg)|+).then_some($name { alg, backend })
            }
        }

        impl Algorithm for $name<'_> {
            type SigningKey = NoSigningKey;
            type VerifyingKey = $key;
            type Signature = JwsSignature;

            fn name(&self) -> Cow<'static, str> {
                Cow::Borrowed(self.alg.name())
            }

            fn sign(&self, signing_key: &NoSigningKey, _message: &[u8]) -> JwsSignature {
                match *signing_key {}
            }

            fn verify_signature(&self, signature: &JwsSignature, key: &$key, message: &[u8]) -> bool {
                let ($backend, $a, $k, $msg, $sig) =
                    (self.backend, self.alg, key, message, signature.0.as_slice());
                $verify
            }
        }
    };
}

jws_family!(
    /// RS256/384/512: RSASSA-PKCS1-v1_5 with an RSA key.
    RsaPkcs1, RsaVerifyingKey, [RS256, RS384, RS512],
    |b, alg, key, msg, sig| b.verify_rsa(alg, key, msg, sig)
);

jws_family!(
    /// PS256/384/512: RSASSA-PSS (MGF1 with the same hash, any salt length as in BoringSSL) with
    /// an RSA key.
    RsaPss, RsaVerifyingKey, [PS256, PS384, PS512],
    |b, alg, key, msg, sig| b.verify_rsa(alg, key, msg, sig)
);

jws_family!(
    /// ES256/384/512: ECDSA with an EC key; the key's curve must be the algorithm's.
    Ecdsa, EcVerifyingKey, [ES256, ES384, ES512],
    |b, alg, key, msg, sig| key.alg() == alg && b.verify_ecdsa(alg, key, msg, sig)
);

jws_family!(
    /// EdDSA with an Ed25519 key.
    EdDsa, Ed25519VerifyingKey, [EdDSA],
    |b, _alg, key, msg, sig| b.verify_eddsa(key, msg, sig)
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::crypto::WasmCrypto;

    #[test]
    fn each_family_takes_only_its_own_algorithms() {
        let b = &WasmCrypto;
        assert_eq!(
            RsaPkcs1::new(Alg::RS384, b).map(|a| a.name()),
            Some("RS384".into())
        );
        assert!(RsaPkcs1::new(Alg::PS256, b).is_none());
        assert_eq!(
            RsaPss::new(Alg::PS512, b).map(|a| a.name()),
            Some("PS512".into())
        );
        assert!(RsaPss::new(Alg::RS256, b).is_none());
        assert_eq!(
            Ecdsa::new(Alg::ES512, b).map(|a| a.name()),
            Some("ES512".into())
        );
        assert!(Ecdsa::new(Alg::EdDSA, b).is_none());
        assert_eq!(
            EdDsa::new(Alg::EdDSA, b).map(|a| a.name()),
            Some("EdDSA".into())
        );
        assert!(EdDsa::new(Alg::ES256, b).is_none());
    }
}
