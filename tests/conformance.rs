//! Runs every JWT/JWKS vector of tests/conformance/jwt-vectors (provenance in its README) through the core verifier,
//! with both signature backends (in-wasm crypto, and the host protocol through a software
//! stand-in for Envoy's `verify_signature`). The verdict must equal `envoy_expect` when the
//! vector has one, else `expect`, and a rejection must carry an `AuthnError` that fits the
//! vector's `reason` (or one of its `alt_reasons`) — except the intended divergences listed by
//! vector id in `INTENDED`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate::error::AuthnError;
use meshgate::jwt::crypto::{SignatureBackend, WasmCrypto};
use meshgate::jwt::host_sig::HostCrypto;
use meshgate::jwt::jwk::parse_jwks;
use meshgate::jwt::verify::{check_claims, normalize_audience, verify_signature, ClaimRules};
use meshgate::jwt::{self, Alg};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

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
        access_tokens_only: false,
    };
    check_claims(&jwt, &rules, now)?;
    verify_signature(&jwt, &keys, backend).map(|_| ())
}

/// The rejections that fit a vector `reason` (the corpus README lists the reasons).
fn fitting_errors(reason: &str) -> &'static [AuthnError] {
    use AuthnError::*;
    match reason {
        "bad_signature" => &[VerificationFails],
        "unknown_kid" | "key_use_enc" => &[KidAlgMismatch],
        // HS* against a JWKS: no published key can match (same body as KidAlgMismatch).
        "no_matching_key" => &[KidAlgMismatch, SymmetricAlg],
        "malformed" => &[
            BadFormat,
            HeaderBadBase64,
            HeaderBadJson,
            HeaderBadAlg,
            HeaderBadKid,
            PayloadBadBase64,
            SignatureBadBase64,
        ],
        "bad_claim_type" => &[
            IssNotString,
            SubNotString,
            JtiNotString,
            AudNotString,
            IatNotInteger,
            IatOutOfRange,
            NbfNotInteger,
            NbfOutOfRange,
            ExpNotInteger,
            ExpOutOfRange,
        ],
        "payload_not_json" => &[PayloadBadJson, PayloadBadBase64],
        "expired" => &[Expired],
        "not_yet_valid" => &[NotYetValid],
        "wrong_issuer" | "missing_issuer" => &[UnknownIssuer],
        "wrong_audience" | "missing_audience" => &[AudienceNotAllowed],
        "unsupported_alg" => &[UnsupportedAlg],
        // An unsigned `h.p.` token has two non-empty segments for Envoy (SkipEmpty).
        "alg_none" => &[UnsupportedAlg, BadFormat],
        // `a.b.` has two non-empty segments for Envoy (SkipEmpty).
        "empty_signature" => &[BadFormat, VerificationFails],
        "jwks_invalid" => &[NoValidKeys],
        "jwe_not_jws" => &[BadFormat],
        "crit_unsupported" => &[CritUnsupported],
        other => panic!("vector reason {other:?} has no mapping"),
    }
}

/// HS256/384/512 tokens: a JWKS-driven verifier never accepts them (RFC 8725 §3.2; Envoy does
/// when the JWKS holds an `oct` key). The client gets the body of `KidAlgMismatch`.
const HS: &str = "HS* is never accepted against a JWKS";
/// ES256K and the RFC 9864 names `Ed25519`/`Ed448`: outside Envoy's algorithm set.
const OUTSIDE_ENVOY_ALGS: &str = "algorithm name outside Envoy's set: rejected as unsupported";

/// RFC 7515 §2: base64url without `=` padding (Envoy accepts padded segments).
const PADDING: &str =
    "`=` padding in a segment: RFC 7515 §2 base64url has none (jwt-compact is strict)";
/// RFC 7515 §7.1: exactly three segments (Envoy drops empty ones).
const SEGMENTS: &str =
    "empty segment: RFC 7515 §7.1 compact serialization has exactly three (jwt-compact is strict)";

/// Vectors where meshgate deliberately differs from the expected verdict or reason: vector id →
/// (what meshgate answers, why). Every entry must be hit, so the list cannot go stale.
const INTENDED: &[(&str, AuthnError, &str)] = &[
    ("golang-hmac-web-sample", AuthnError::SymmetricAlg, HS),
    ("golang-hmac-hs384", AuthnError::SymmetricAlg, HS),
    ("golang-hmac-hs512", AuthnError::SymmetricAlg, HS),
    ("golang-hmac-web-sample-invalid", AuthnError::SymmetricAlg, HS),
    ("jvl-hmac-nokid-ok", AuthnError::SymmetricAlg, HS),
    ("jvl-hmac-nokid-longexp-ok", AuthnError::SymmetricAlg, HS),
    ("jvl-hmac-hs256-kid-ok", AuthnError::SymmetricAlg, HS),
    ("jvl-hmac-hs384-kid-ok", AuthnError::SymmetricAlg, HS),
    ("jvl-hmac-hs512-kid-ok", AuthnError::SymmetricAlg, HS),
    ("jvl-hmac-nonexistkid", AuthnError::SymmetricAlg, HS),
    ("jvl-hmac-incorrectkid", AuthnError::SymmetricAlg, HS),
    ("jvl-hmac-jwks-noalg-ok", AuthnError::SymmetricAlg, HS),
    ("jvl-hmac-jwks-nokid-ok", AuthnError::SymmetricAlg, HS),
    ("jvl-hmac-sigbitflip", AuthnError::SymmetricAlg, HS),
    ("jvl-parse-parsepayloadiatnotpositive", AuthnError::SymmetricAlg, HS),
    ("jvl-parse-parsepayloadiattoobig", AuthnError::SymmetricAlg, HS),
    ("jvl-parse-parsepayloadnbfnotpositive", AuthnError::SymmetricAlg, HS),
    ("jvl-parse-parsepayloadnbftoobig", AuthnError::SymmetricAlg, HS),
    ("jvl-parse-parsepayloadexpnotpositive", AuthnError::SymmetricAlg, HS),
    ("jvl-parse-parsepayloadexptoobig", AuthnError::SymmetricAlg, HS),
    ("lua-hs256-ok", AuthnError::SymmetricAlg, HS),
    ("lua-hs256-badsig", AuthnError::SymmetricAlg, HS),
    ("lua-hs384-ok", AuthnError::SymmetricAlg, HS),
    ("lua-hs384-badsig", AuthnError::SymmetricAlg, HS),
    ("lua-hs512-ok", AuthnError::SymmetricAlg, HS),
    ("lua-hs512-badsig", AuthnError::SymmetricAlg, HS),
    ("lua-aud-single-ok", AuthnError::SymmetricAlg, HS),
    ("lua-aud-single-mismatch", AuthnError::SymmetricAlg, HS),
    ("lua-aud-multi-ok", AuthnError::SymmetricAlg, HS),
    ("lua-aud-multi-mismatch", AuthnError::SymmetricAlg, HS),
    ("lua-aud-nocheck-ok", AuthnError::SymmetricAlg, HS),
    ("lua-iss-ok", AuthnError::SymmetricAlg, HS),
    ("lua-iss-mismatch", AuthnError::SymmetricAlg, HS),
    ("lua-exp-future-ok", AuthnError::SymmetricAlg, HS),
    ("lua-exp-past", AuthnError::SymmetricAlg, HS),
    ("lua-exp-fixednow-ok", AuthnError::SymmetricAlg, HS),
    ("lua-nbf-past-ok", AuthnError::SymmetricAlg, HS),
    ("lua-nbf-future", AuthnError::SymmetricAlg, HS),
    ("lua-typ-custom-nocheck-ok", AuthnError::SymmetricAlg, HS),
    ("lua-sub-claim-ok", AuthnError::SymmetricAlg, HS),
    ("lua-jti-claim-ok", AuthnError::SymmetricAlg, HS),
    ("lua-format-bad-payload-b64", AuthnError::SymmetricAlg, HS),
    ("lua-format-bad-signature-b64", AuthnError::SymmetricAlg, HS),
    ("lua-jwks-hs256-oct-kid-ok", AuthnError::SymmetricAlg, HS),
    ("lua-jwks-hs256-oct-wrongkey", AuthnError::SymmetricAlg, HS),
    ("lua-crit-unsupported-jku", AuthnError::SymmetricAlg, HS),
    ("lua-crit-alg-accepted", AuthnError::SymmetricAlg, HS),
    ("rfc7515-a1-hs256-ok", AuthnError::SymmetricAlg, HS),
    ("rfc7515-a1-hs256-expired", AuthnError::SymmetricAlg, HS),
    ("rfc7520-4_4-payload-not-json", AuthnError::SymmetricAlg, HS),
    ("lua-es256k-ok", AuthnError::UnsupportedAlg, OUTSIDE_ENVOY_ALGS),
    ("lua-es256k-ok-jwk", AuthnError::UnsupportedAlg, OUTSIDE_ENVOY_ALGS),
    ("lua-es256k-badsig", AuthnError::UnsupportedAlg, OUTSIDE_ENVOY_ALGS),
    ("lua-ed25519-ok", AuthnError::UnsupportedAlg, OUTSIDE_ENVOY_ALGS),
    ("lua-ed25519-ok-jwk", AuthnError::UnsupportedAlg, OUTSIDE_ENVOY_ALGS),
    ("lua-ed25519-badsig", AuthnError::UnsupportedAlg, OUTSIDE_ENVOY_ALGS),
    ("lua-ed448-ok", AuthnError::UnsupportedAlg, OUTSIDE_ENVOY_ALGS),
    ("lua-ed448-ok-jwk", AuthnError::UnsupportedAlg, OUTSIDE_ENVOY_ALGS),
    ("lua-ed448-badsig", AuthnError::UnsupportedAlg, OUTSIDE_ENVOY_ALGS),
    ("lua-jwks-ed25519-kid-ok", AuthnError::UnsupportedAlg, OUTSIDE_ENVOY_ALGS),
    ("lua-jwks-ed448-kid-ok", AuthnError::UnsupportedAlg, OUTSIDE_ENVOY_ALGS),
    // jwt-compact's RFC 7515 strictness, kept (Envoy tolerates these).
    ("quirk-jvl-padded-signature", AuthnError::SignatureBadBase64, PADDING),
    ("quirk-golang-padded-payload", AuthnError::PayloadBadBase64, PADDING),
    ("quirk-golang-aws-alb-padded", AuthnError::HeaderBadBase64, PADDING),
    (
        "quirk-golang-noncanonical-b64-signature",
        AuthnError::SignatureBadBase64,
        "non-canonical base64url (stray low bits in the last character): RFC 4648 §3.5",
    ),
    ("quirk-structure-trailing-dot", AuthnError::BadFormat, SEGMENTS),
    ("quirk-structure-leading-dot", AuthnError::BadFormat, SEGMENTS),
    ("quirk-structure-double-dot", AuthnError::BadFormat, SEGMENTS),
    (
        "envoy-notyetvalid",
        AuthnError::NbfOutOfRange,
        "nbf = 2^63-1 is after year 262142, beyond jwt-compact's (chrono's) NumericDate range; Envoy reads it as not yet valid",
    ),
    (
        "quirk-crit-unknown-extension-rs256",
        AuthnError::CritUnsupported,
        "a `crit` extension meshgate does not understand MUST be rejected (RFC 7515 §4.1.11); Envoy ignores `crit`",
    ),
    (
        "lua-jwks-key-use-enc",
        AuthnError::KidAlgMismatch,
        "a `use: enc` key never verifies (Keycloak publishes RSA-OAEP enc keys); Envoy ignores `use`",
    ),
];

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
    let intended: BTreeMap<&str, (AuthnError, &str)> = INTENDED
        .iter()
        .map(|(id, e, why)| (*id, (*e, *why)))
        .collect();
    let mut hit = BTreeSet::new();
    let (mut total, mut agree) = (0, 0);
    let mut failures = Vec::new();
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let vectors: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for v in &vectors {
            let id = v["id"].as_str().unwrap();
            total += 1;
            let results: Vec<_> = backends
                .iter()
                .map(|(name, backend)| (*name, verdict(v, *backend)))
                .collect();
            if results[0].1 != results[1].1 {
                failures.push(format!("{file} {id}: backends disagree: {results:?}"));
                continue;
            }
            let got = results[0].1;
            if let Some((&listed, (want, why))) = intended.get_key_value(id) {
                hit.insert(listed);
                if got != Err(*want) {
                    failures.push(format!(
                        "{file} {id}: listed as intended ({why}) with {want:?}, got {got:?}"
                    ));
                }
                continue;
            }
            let expected_valid =
                v.get("envoy_expect").unwrap_or(&v["expect"]).as_str() == Some("valid");
            let reasons: Vec<&str> = std::iter::once(v["reason"].as_str().unwrap())
                .chain(
                    v["alt_reasons"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str),
                )
                .collect();
            let fits = match got {
                Ok(()) => expected_valid,
                Err(e) => !expected_valid && reasons.iter().any(|r| fitting_errors(r).contains(&e)),
            };
            if fits {
                agree += 1;
            } else {
                failures.push(format!(
                    "{file} {id}: expected {} ({reasons:?}), got {got:?}",
                    if expected_valid { "valid" } else { "invalid" },
                ));
            }
        }
    }
    let stale: Vec<_> = intended.keys().filter(|id| !hit.contains(*id)).collect();
    println!(
        "conformance: {total} vectors, {agree} agree (verdict and reason), {} intended divergences, {} failures",
        hit.len(),
        failures.len()
    );
    for (id, (e, why)) in &intended {
        println!("  intended {id}: {e:?} — {why}");
    }
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert!(total >= 265, "expected at least 265 vectors, found {total}");
    assert!(
        stale.is_empty(),
        "intended divergences no vector hit: {stale:?}"
    );
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
