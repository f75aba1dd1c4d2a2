//! Shared test helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate::jwt::host_sig::{decode_args, VerifyArgs};

pub mod keys;

/// A software stand-in for Envoy's `verify_signature` foreign function: it decodes the protobuf
/// arguments and verifies with independent RustCrypto decoders (`rsa` and `p256`/`p384` DER
/// parsers), the way the host does with BoringSSL — so the SPKI and signature encodings meshgate
/// builds are checked by code that is not meshgate's.
pub fn software_host(args: &[u8]) -> Option<Vec<u8>> {
    use p256::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let VerifyArgs {
        hash,
        public_key: key,
        signature: sig,
        text,
    } = decode_args(args)?;
    let ok = if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(&key) {
        hash == "sha256"
            && p256::ecdsa::Signature::from_der(&sig).is_ok_and(|s| k.verify(&text, &s).is_ok())
    } else if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(&key) {
        hash == "sha384"
            && p384::ecdsa::Signature::from_der(&sig).is_ok_and(|s| k.verify(&text, &s).is_ok())
    } else if let Ok(k) =
        <rsa::RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(&key)
    {
        let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig.as_slice()) else {
            return None;
        };
        match hash.as_str() {
            "sha256" => rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(k)
                .verify(&text, &sig)
                .is_ok(),
            "sha384" => rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha384>::new(k)
                .verify(&text, &sig)
                .is_ok(),
            "sha512" => rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha512>::new(k)
                .verify(&text, &sig)
                .is_ok(),
            _ => false,
        }
    } else {
        return None;
    };
    // VerifySignatureResult { bool result = 1; string error = 2; }
    Some(if ok {
        vec![0x08, 0x01]
    } else {
        vec![0x12, 0x08, b'm', b'i', b's', b'm', b'a', b't', b'c', b'h']
    })
}
