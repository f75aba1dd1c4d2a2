//! Host-native signature verification through Envoy's `verify_signature` foreign function
//! (BoringSSL). The host call itself is injected, so the wire format and the fallback rules are
//! tested natively; the adapter passes `proxy_call_foreign_function`.
//!
//! Wire format (Envoy source/extensions/common/wasm/foreign.cc):
//! `VerifySignatureArguments { string hash_function = 1; bytes public_key = 2; bytes signature = 3;
//! bytes text = 4; }` → `VerifySignatureResult { bool result = 1; string error = 2; }`.
//! Two flat messages do not justify a protobuf crate in the .wasm; they are encoded by hand.

use super::crypto::{ecdsa_raw_to_der, SignatureBackend, WasmCrypto};
use super::jwk::{EcVerifyingKey, Ed25519VerifyingKey, RsaVerifyingKey};
use super::Alg;

pub const FOREIGN_FUNCTION: &str = "verify_signature";

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub fn encode_args(hash: &str, spki_der: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + spki_der.len() + signature.len() + text.len());
    put_bytes(&mut out, 1, hash.as_bytes());
    put_bytes(&mut out, 2, spki_der);
    put_bytes(&mut out, 3, signature);
    put_bytes(&mut out, 4, text);
    out
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A protobuf field value: a varint or a length-delimited byte slice.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Splits a flat protobuf message into (field number, value).
fn fields(buf: &[u8]) -> Option<Vec<(u32, Wire<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = get_varint(buf, &mut pos)?;
        let field = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => out.push((field, Wire::Varint(get_varint(buf, &mut pos)?))),
            2 => {
                let len = usize::try_from(get_varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                out.push((field, Wire::Bytes(buf.get(pos..end)?)));
                pos = end;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Decodes `VerifySignatureResult`: (result, error).
pub fn decode_result(buf: &[u8]) -> Option<(bool, String)> {
    let mut result = false;
    let mut error = String::new();
    for (field, value) in fields(buf)? {
        match (field, value) {
            (1, Wire::Varint(v)) => result = v != 0,
            (2, Wire::Bytes(b)) => error = String::from_utf8_lossy(b).into_owned(),
            _ => {}
        }
    }
    Some((result, error))
}

/// `VerifySignatureArguments`, decoded (used by the software stand-in for the host).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VerifyArgs {
    pub hash: String,
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
    pub text: Vec<u8>,
}

pub fn decode_args(buf: &[u8]) -> Option<VerifyArgs> {
    let mut a = VerifyArgs::default();
    for (field, value) in fields(buf)? {
        match (field, value) {
            (1, Wire::Bytes(b)) => a.hash = String::from_utf8_lossy(b).into_owned(),
            (2, Wire::Bytes(b)) => a.public_key = b.to_vec(),
            (3, Wire::Bytes(b)) => a.signature = b.to_vec(),
            (4, Wire::Bytes(b)) => a.text = b.to_vec(),
            _ => {}
        }
    }
    Some(a)
}

/// Verifies with the host when it can (RS256/384/512 and ES256/384: PKCS#1 v1.5 RSA and ECDSA in
/// BoringSSL); PS*, ES512 and EdDSA, and any host error, go to the in-wasm backend.
pub struct HostCrypto<F: Fn(&[u8]) -> Option<Vec<u8>>> {
    pub call: F,
}

impl<F: Fn(&[u8]) -> Option<Vec<u8>>> HostCrypto<F> {
    /// The host's verdict, or None when the host call failed (then the caller verifies in wasm).
    fn host_verify(&self, alg: Alg, spki: &[u8], sig: &[u8], msg: &[u8]) -> Option<bool> {
        let args = encode_args(alg.hash_name(), spki, sig, msg);
        let verdict = (self.call)(&args).as_deref().and_then(decode_result);
        if verdict.is_none() {
            log::warn!("host verify_signature failed; verifying in wasm");
        }
        verdict.map(|(result, _)| result)
    }
}

impl<F: Fn(&[u8]) -> Option<Vec<u8>>> SignatureBackend for HostCrypto<F> {
    fn verify_rsa(&self, alg: Alg, key: &RsaVerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
        if matches!(alg, Alg::RS256 | Alg::RS384 | Alg::RS512) {
            if let Some(result) = self.host_verify(alg, &key.spki_der, sig, msg) {
                return result;
            }
        }
        WasmCrypto.verify_rsa(alg, key, msg, sig)
    }

    fn verify_ecdsa(&self, alg: Alg, key: &EcVerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
        if let (Some(spki), true) = (&key.spki_der, key.alg() == alg) {
            // Wrong size or r/s = 0: invalid for any backend.
            let Some(der) = ecdsa_raw_to_der(alg, sig) else {
                return false;
            };
            if let Some(result) = self.host_verify(alg, spki, &der, msg) {
                return result;
            }
        }
        WasmCrypto.verify_ecdsa(alg, key, msg, sig)
    }

    fn verify_eddsa(&self, key: &Ed25519VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
        WasmCrypto.verify_eddsa(key, msg, sig)
    }
}

/// Whether the host's `verify_signature` works: a known-good ES256 signature must verify and a
/// tampered one must not.
pub fn probe(call: impl Fn(&[u8]) -> Option<Vec<u8>>) -> bool {
    let good = encode_args("sha256", PROBE_SPKI, PROBE_SIG, PROBE_TEXT);
    let mut bad_sig = PROBE_SIG.to_vec();
    bad_sig[10] ^= 1;
    let bad = encode_args("sha256", PROBE_SPKI, &bad_sig, PROBE_TEXT);
    matches!(
        call(&good).as_deref().and_then(decode_result),
        Some((true, _))
    ) && matches!(
        call(&bad).as_deref().and_then(decode_result),
        Some((false, _))
    )
}

const PROBE_TEXT: &[u8] = b"meshgate host crypto probe";
const PROBE_SPKI: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04, 0xf9, 0xeb, 0xe4, 0x64, 0x14,
    0x7c, 0xc1, 0x02, 0xd9, 0x23, 0x24, 0xd0, 0x99, 0xd9, 0x27, 0xc1, 0xa5, 0x0e, 0x42, 0xd5, 0x7a,
    0x08, 0xa1, 0x16, 0xff, 0xec, 0x0a, 0x29, 0x81, 0x9d, 0x8c, 0x65, 0x70, 0xba, 0xf7, 0xd1, 0x28,
    0x88, 0x90, 0x2a, 0x6a, 0x0c, 0x1d, 0x67, 0xad, 0xd1, 0x03, 0x12, 0x3c, 0x85, 0x9a, 0xb6, 0x9b,
    0xf8, 0xe9, 0x43, 0x1c, 0x93, 0x84, 0x93, 0x0d, 0x4b, 0x7e, 0xee,
];
const PROBE_SIG: &[u8] = &[
    0x30, 0x46, 0x02, 0x21, 0x00, 0xd1, 0xb0, 0xfc, 0x44, 0x29, 0xb7, 0xdf, 0x97, 0xb1, 0x95, 0x90,
    0xe4, 0x60, 0x0b, 0x98, 0xec, 0xf6, 0xe6, 0x18, 0xe9, 0x51, 0x39, 0x69, 0x15, 0x24, 0x95, 0x28,
    0x27, 0x8f, 0x48, 0x4b, 0xb3, 0x02, 0x21, 0x00, 0x81, 0x53, 0x48, 0xa2, 0x8e, 0xcc, 0xd0, 0xaf,
    0xc4, 0x64, 0x40, 0x50, 0x14, 0x73, 0x8e, 0x80, 0x87, 0xe3, 0xca, 0x66, 0xa2, 0x09, 0x77, 0x00,
    0x86, 0xde, 0xbd, 0x85, 0xc7, 0x63, 0x55, 0xa6,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// ES256 only, enough for the probe (tests/common has the full stand-in for the host).
    fn es256_host(args: &[u8]) -> Option<Vec<u8>> {
        use p256::ecdsa::signature::Verifier;
        use p256::pkcs8::DecodePublicKey;
        let a = decode_args(args)?;
        let key = p256::ecdsa::VerifyingKey::from_public_key_der(&a.public_key).ok()?;
        let ok = a.hash == "sha256"
            && p256::ecdsa::Signature::from_der(&a.signature)
                .is_ok_and(|s| key.verify(&a.text, &s).is_ok());
        Some(if ok {
            vec![0x08, 0x01]
        } else {
            vec![0x12, 0x01, b'x']
        })
    }

    #[test]
    fn probe_accepts_a_working_host_and_rejects_a_broken_one() {
        assert!(probe(es256_host));
        assert!(!probe(|_| None), "missing foreign function");
        assert!(
            !probe(|_| Some(vec![0x08, 0x01])),
            "a host that says yes to everything"
        );
    }

    #[test]
    fn args_roundtrip() {
        let a = encode_args("sha384", &[1; 300], &[2; 3], b"hello");
        assert_eq!(
            decode_args(&a),
            Some(VerifyArgs {
                hash: "sha384".into(),
                public_key: vec![1; 300],
                signature: vec![2; 3],
                text: b"hello".to_vec()
            })
        );
        assert_eq!(
            decode_result(&[0x08, 0x01, 0x12, 0x02, b'o', b'k']),
            Some((true, "ok".into()))
        );
        assert_eq!(decode_result(&[]), Some((false, String::new())));
        assert_eq!(decode_result(&[0x12, 0x05, b'x']), None, "truncated");
    }
}
