//! A token from the network: parsing (jwt-compact and Envoy's reasons), claim checks and signature
//! verification against a fixed JWKS with both backends (they must agree), then the whole request
//! engine (extraction, token cache, claim headers, a policy) twice — the cache hit must decide
//! exactly as the miss did.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;
use meshgate::config::{Settings, MAX_TOKEN_BYTES};
use meshgate::engine::{Decision, Engine};
use meshgate::jwt::crypto::WasmCrypto;
use meshgate::jwt::jwk::KeySet;
use meshgate::jwt::verify::{check_claims, ClaimRules};
use meshgate::metrics::CountingSink;
use meshgate::request::RequestAttrs;
use serde_json::json;
use std::rc::Rc;

struct Fixture {
    keys: KeySet,
    settings: Rc<Settings>,
}

/// Every issuer of the seeds, each with the fixed JWKS inline; the realm's rule as Keycloak users
/// configure it (audience, claim and payload headers), and a policy reading claims.
fn fixture() -> Fixture {
    let realm = "http://keycloak.keycloak.svc.cluster.local/realms/myrealm";
    let mut rules = vec![json!({
        "issuer": realm, "jwks": shared::JWKS, "audiences": ["my-backend-client"],
        "outputClaimToHeaders": [{"header": "x-email", "claim": "email"},
                                 {"header": "x-roles", "claim": "realm_access.roles"}],
        "outputPayloadToHeader": "x-jwt-payload"})];
    for iss in [
        "https://example.com",
        "https://keycloak.example.test/realms/demo",
        "myissuer",
        "other_issuer",
        "AAA",
    ] {
        rules.push(json!({"issuer": iss, "jwks": shared::JWKS}));
    }
    let config = json!({
        "jwtRules": rules,
        "tokenCacheSize": 16,
        "policies": [
            {"name": "deny-admin-path", "action": "DENY",
             "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]},
            {"name": "users", "action": "ALLOW", "rules": [
                {"from": [{"source": {"requestPrincipals": ["*"]}}],
                 "when": [{"key": "request.auth.claims[realm_access][roles]", "notValues": ["banned"]}]},
                {"when": [{"key": "request.auth.audiences", "values": ["example_service", "account"]}]}]}
        ]
    });
    let settings = Settings::from_json(config.to_string().as_bytes()).unwrap_or_else(|e| {
        panic!("fixture configuration refused: {e:?}");
    });
    Fixture {
        keys: shared::fixture_keys(),
        settings: Rc::new(settings),
    }
}

thread_local! {
    static FIXTURE: Fixture = fixture();
}

fuzz_target!(|data: &[u8]| {
    // Header values reach the engine as text (invalid UTF-8 replaced, src/filter/host.rs).
    let token = String::from_utf8_lossy(data);
    FIXTURE.with(|f| {
        if let Ok(jwt) = meshgate::jwt::parse(&token, MAX_TOKEN_BYTES) {
            let rules = ClaimRules {
                issuer: None,
                audiences: &[],
                clock_skew_secs: 60,
                access_tokens_only: false,
            };
            let _ = check_claims(&jwt, &rules, shared::NOW);
            // Signatures are checked whatever the claims say, to reach the backends often.
            let _ = shared::verify_both(&jwt, &f.keys);
        }

        let mut engine = Engine::new(f.settings.clone());
        let req = RequestAttrs {
            method: "GET".into(),
            path: "/data".into(),
            host: "backend".into(),
            scheme: "http".into(),
            headers: vec![("authorization".into(), format!("Bearer {token}"))],
            ..RequestAttrs::default()
        };
        let mut metrics = CountingSink::default();
        let first = engine.on_request(&req, shared::NOW_MS, &WasmCrypto, &mut metrics);
        let again = engine.on_request(&req, shared::NOW_MS, &WasmCrypto, &mut metrics);
        assert_eq!(
            first, again,
            "a cache hit decides differently from the miss"
        );
        match &first {
            Decision::Wait(_) => panic!("inline keys never make a request wait"),
            Decision::Respond(reply) => {
                assert!(matches!(reply.status, 401 | 403), "{reply:?}");
                assert!(!reply.body.is_empty());
            }
            Decision::Forward(fwd) => {
                for (name, value) in &fwd.set_headers {
                    assert!(
                        !value.chars().any(char::is_control),
                        "header {name} would carry a control character"
                    );
                }
            }
        }
    });
});
