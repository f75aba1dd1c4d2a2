//! What the fuzz targets share: the fixed JWKS and realm tokens (tests/fuzz/fixtures, written by
//! make_corpus.py), the fixed clock, and the software stand-in for Envoy's `verify_signature`
//! (tests/common, the one the conformance tests use).
#![allow(dead_code)]

#[path = "../../../common/mod.rs"]
pub mod common;

use meshgate::error::AuthnError;
use meshgate::jwt::crypto::WasmCrypto;
use meshgate::jwt::host_sig::HostCrypto;
use meshgate::jwt::jwk::{parse_jwks, KeySet};
use meshgate::jwt::verify::verify_signature;
use meshgate::jwt::UntrustedJwt;

/// The targets' clock (2027-01-15): the conformance tokens with `now: null` (exp 2033) and the
/// realm tokens (exp 2100) are valid then.
pub const NOW: u64 = 1_800_000_000;
pub const NOW_MS: u64 = NOW * 1000;

pub const JWKS: &str = include_str!("../../fixtures/jwks.json");
pub const TOKENS: &str = include_str!("../../fixtures/tokens.json");

pub fn fixture_keys() -> KeySet {
    parse_jwks(JWKS.as_bytes()).unwrap_or_default()
}

pub fn realm_tokens() -> Vec<String> {
    serde_json::from_str(TOKENS).unwrap_or_default()
}

/// The key (by fingerprint) both backends pick for this token, or why not. The in-wasm backend
/// and the host protocol (encoded by meshgate, decoded and verified by RustCrypto in the
/// stand-in) must agree on every input.
pub fn verify_both(jwt: &UntrustedJwt<'_>, keys: &KeySet) -> Result<[u8; 32], AuthnError> {
    let wasm = verify_signature(jwt, keys, &WasmCrypto).map(|k| k.fingerprint);
    let host = HostCrypto {
        call: common::software_host,
    };
    let via_host = verify_signature(jwt, keys, &host).map(|k| k.fingerprint);
    assert_eq!(
        wasm, via_host,
        "in-wasm and host-protocol verification disagree"
    );
    wasm
}

/// A token endpoint's HTTP status (or no response) picked by an input byte: success weighted three
/// times, the refusals and failures an IdP gives, and a redirect.
const TOKEN_STATUSES: [Option<u32>; 10] = [
    None,
    Some(200),
    Some(200),
    Some(200),
    Some(400),
    Some(401),
    Some(403),
    Some(500),
    Some(503),
    Some(302),
];

pub fn token_status(pick: u8) -> Option<u32> {
    TOKEN_STATUSES[usize::from(pick) % TOKEN_STATUSES.len()]
}
