//! The hand-written protobuf of Envoy's `verify_signature` foreign function: any bytes decode or
//! are refused without panicking; arguments survive an encode/decode round trip; whatever the
//! host answers, the host backend returns a verdict (or falls back) without panicking.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;
use meshgate::config::MAX_TOKEN_BYTES;
use meshgate::jwt::host_sig::{decode_args, decode_result, encode_args, HostCrypto};
use meshgate::jwt::jwk::KeySet;
use meshgate::jwt::verify::verify_signature;

struct Fixture {
    keys: KeySet,
    tokens: Vec<String>,
}

thread_local! {
    static FIXTURE: Fixture = Fixture { keys: shared::fixture_keys(), tokens: shared::realm_tokens() };
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_result(data);
    if let Some(args) = decode_args(data) {
        let again = encode_args(&args.hash, &args.public_key, &args.signature, &args.text);
        assert_eq!(decode_args(&again).as_ref(), Some(&args));
    }
    // The host answers `data` to every call.
    FIXTURE.with(|f| {
        if f.tokens.is_empty() {
            return;
        }
        let token = &f.tokens[data.len() % f.tokens.len()];
        let Ok(jwt) = meshgate::jwt::parse(token, MAX_TOKEN_BYTES) else {
            panic!("fixture token does not parse");
        };
        let host = HostCrypto {
            call: |_: &[u8]| Some(data.to_vec()),
        };
        let _ = verify_signature(&jwt, &f.keys, &host);
    });
});
