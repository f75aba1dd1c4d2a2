//! Runs every JWT/JWKS vector of tests/conformance/jwt-vectors (provenance in its README) through the core verifier,
//! with both signature backends (in-wasm crypto, and the host protocol through a software
//! stand-in for Envoy's `verify_signature`). The verdict must equal `envoy_expect` when the
//! vector has one, else `expect` — except the intended divergences listed in `divergence()`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate::error::AuthnError;
use meshgate::jwt::crypto::{SignatureBackend, WasmCrypto};
use meshgate::jwt::host_sig::HostCrypto;
use meshgate::jwt::jwk::parse_jwks;
use meshgate::jwt::verify::{check_claims, normalize_audience, verify_signature, ClaimRules};
use meshgate::jwt::{self, Alg};
use serde_json::Value;

mod common;
use common::software_host;
use std::path::PathBuf;

fn vectors_dir() -> PathBuf {
    match std::env::var_os("MESHGATE_VECTORS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/jwt-vectors"),
    }
}

/// The verdict of our verifier: Ok(()) or the reason.
fn verdict(v: &Value, backend: &dyn SignatureBackend) -> Result<(), AuthnError> {
    let keys = parse_jwks(v["jwks"].to_string().as_bytes()).map_err(|_| AuthnError::NoValidKeys)?;
    let token = v["token"].as_str().unwrap_or_default();
    let now = v["now"].as_u64().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    });
    let jwt = jwt::parse(token, meshgate::config::MAX_TOKEN_BYTES)?;
    let audiences: Vec<String> = v["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| normalize_audience(s).to_string())
                .collect()
        })
        .unwrap_or_default();
    let rules = ClaimRules {
        issuer: v["issuer"].as_str(),
        audiences: &audiences,
        clock_skew_secs: 60,
    };
    check_claims(&jwt, &rules, now)?;
    verify_signature(&jwt, &keys, backend).map(|_| ())
}

/// Vectors where meshgate deliberately differs from the expected verdict, and why.
fn divergence(file: &str, v: &Value, got: &Result<(), AuthnError>) -> Option<&'static str> {
    let alg = v["token"]
        .as_str()
        .and_then(|t| t.split('.').next())
        .and_then(jwt::b64url_decode)
        .and_then(|h| {
            serde_json::from_slice::<Value>(&h)
                .ok()
                .and_then(|h| h["alg"].as_str().map(str::to_owned))
        });
    let is_hs = alg.as_deref().is_some_and(|a| a.starts_with("HS"));
    if is_hs && got == &Err(AuthnError::SymmetricAlg) {
        return Some("HS* is never accepted against a JWKS (RFC 8725 §3.2; symmetric keys do not belong in a published JWKS)");
    }
    if file == "optional_algs.json" && got == &Err(AuthnError::UnsupportedAlg) {
        return Some(
            "algorithm outside Envoy's set (ES256K, Ed25519/Ed448 names): rejected as unsupported",
        );
    }
    if v["id"] == "lua-jwks-key-use-enc" && got == &Err(AuthnError::KidAlgMismatch) {
        return Some("a `use: enc` key is never used to verify (Keycloak publishes RSA-OAEP enc keys); Envoy ignores `use`");
    }
    None
}

#[test]
fn conformance_vectors() {
    let dir = vectors_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("conformance vectors not found at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.ends_with("keycloak_claims_reference.json")
        })
        .collect();
    files.sort();
    let host = HostCrypto {
        call: software_host,
    };
    let backends: [(&str, &dyn SignatureBackend); 2] =
        [("wasm", &WasmCrypto), ("host-protocol", &host)];
    let (mut total, mut agree, mut diverge) = (0, 0, 0);
    let mut failures = Vec::new();
    let mut divergences = std::collections::BTreeMap::<&str, usize>::new();
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let vectors: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for v in &vectors {
            let expected_valid =
                v.get("envoy_expect").unwrap_or(&v["expect"]).as_str() == Some("valid");
            total += 1;
            let mut results = Vec::new();
            for (name, backend) in backends {
                let got = verdict(v, backend);
                results.push((name, got));
            }
            if results[0].1 != results[1].1 {
                failures.push(format!(
                    "{file} {}: backends disagree: {results:?}",
                    v["id"]
                ));
                continue;
            }
            let got = &results[0].1;
            if got.is_ok() == expected_valid {
                agree += 1;
            } else if let Some(why) = divergence(&file, v, got) {
                diverge += 1;
                *divergences.entry(why).or_default() += 1;
            } else {
                failures.push(format!(
                    "{file} {}: expected {}, got {:?} (reason in vector: {})",
                    v["id"],
                    if expected_valid { "valid" } else { "invalid" },
                    got,
                    v["reason"]
                ));
            }
        }
    }
    println!(
        "conformance: {total} vectors, {agree} agree, {diverge} intended divergences, {} failures",
        failures.len()
    );
    for (why, n) in &divergences {
        println!("  divergence x{n}: {why}");
    }
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert!(total >= 265, "expected at least 265 vectors, found {total}");
    assert!(failures.is_empty(), "{} vectors disagree", failures.len());
}

#[test]
fn every_supported_alg_is_exercised() {
    // Guards against a vector set that silently stops covering an algorithm we claim.
    let dir = vectors_dir();
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(Value::Array(vs)) =
            serde_json::from_str::<Value>(&std::fs::read_to_string(&p).unwrap())
        else {
            continue;
        };
        for v in vs {
            if v["expect"] == "valid" {
                if let Ok(j) = jwt::parse(v["token"].as_str().unwrap_or(""), 1 << 20) {
                    seen.insert(j.alg.name());
                }
            }
        }
    }
    for alg in [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::ES512,
        Alg::EdDSA,
    ] {
        assert!(
            seen.contains(alg.name()),
            "no valid vector uses {}",
            alg.name()
        );
    }
}
