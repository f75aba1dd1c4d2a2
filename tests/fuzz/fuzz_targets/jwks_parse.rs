//! A JWKS from the network (or inline in the configuration): parsing never fails on a bad key
//! (it is skipped), stays within its bounds, and a key it keeps verifies a realm token only when
//! it is that token's real key — with both signature backends, which must agree.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;
use meshgate::config::MAX_TOKEN_BYTES;
use meshgate::jwt::jwk::{parse_jwks, KeySet, MAX_JWKS_BYTES, MAX_KEYS};

struct Fixture {
    real: KeySet,
    tokens: Vec<String>,
}

thread_local! {
    static FIXTURE: Fixture = Fixture { real: shared::fixture_keys(), tokens: shared::realm_tokens() };
}

fuzz_target!(|data: &[u8]| {
    let Ok(set) = parse_jwks(data) else {
        return;
    };
    assert!(data.len() <= MAX_JWKS_BYTES);
    assert!(set.keys.len() <= MAX_KEYS);
    assert!(set.rejected <= set.skipped.len());
    FIXTURE.with(|f| {
        if f.tokens.is_empty() || set.keys.is_empty() {
            return;
        }
        // One realm token per input (the choice follows the input, so a crash reproduces).
        let token = &f.tokens[data.len() % f.tokens.len()];
        let Ok(jwt) = meshgate::jwt::parse(token, MAX_TOKEN_BYTES) else {
            panic!("fixture token does not parse");
        };
        if let Ok(fingerprint) = shared::verify_both(&jwt, &set) {
            assert!(
                f.real.contains_fingerprint(&fingerprint),
                "a key that is not the token's own verified its signature"
            );
        }
    });
});
