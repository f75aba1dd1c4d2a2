//! Native flow tests of the request engine: the same sequences the proxy-wasm adapter drives
//! (request → wait for keys → fetch response → re-run), with time as an input.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate::calls::{HttpCall, WaitKey};
use meshgate::config::Settings;
use meshgate::engine::Wait;
use meshgate::engine::{Decision, Engine};
use meshgate::jwt::crypto::WasmCrypto;
use meshgate::metrics::CountingSink;
use meshgate::request::RequestAttrs;
use serde_json::{json, Value};
use std::rc::Rc;

mod common;
use common::keys::{jwks, Key};

const ISS: &str = "http://keycloak.keycloak.svc.cluster.local/realms/myrealm";
const ISS2: &str = "http://keycloak.keycloak.svc.cluster.local/realms/other";
const NOW: u64 = 1_800_000_000;

fn claims(iss: &str) -> Value {
    json!({"iss": iss, "sub": "u-1", "aud": ["my-backend-client", "account"], "azp": "frontend",
           "exp": NOW + 300, "iat": NOW, "email": "user@example.com",
           "realm_access": {"roles": ["user", "offline_access"]}, "scope": "openid email profile"})
}

fn engine(config: Value) -> Engine {
    Engine::new(Rc::new(
        Settings::from_json(config.to_string().as_bytes()).unwrap(),
    ))
}

fn remote_rule() -> Value {
    json!({"issuer": ISS, "audiences": ["my-backend-client"],
           "jwksUri": format!("{ISS}/protocol/openid-connect/certs"),
           "outputClaimToHeaders": [{"header": "x-email", "claim": "email"}, {"header": "x-roles", "claim": "realm_access.roles"}],
           "outputPayloadToHeader": "x-jwt-payload"})
}

fn get(token: Option<&str>) -> RequestAttrs {
    let mut r = RequestAttrs {
        method: "GET".into(),
        path: "/data".into(),
        host: "backend".into(),
        scheme: "http".into(),
        ..Default::default()
    };
    if let Some(t) = token {
        r.headers
            .push(("authorization".into(), format!("Bearer {t}")));
    }
    r
}

struct Run {
    e: Engine,
    m: CountingSink,
}

impl Run {
    fn new(config: Value) -> Run {
        Run {
            e: engine(config),
            m: CountingSink::default(),
        }
    }
    fn req(&mut self, r: &RequestAttrs, now_s: u64) -> Decision {
        self.e.on_request(r, now_s * 1000, &WasmCrypto, &mut self.m)
    }
    fn respond(
        &mut self,
        f: &HttpCall,
        status: Option<u32>,
        body: &[u8],
        now_s: u64,
    ) -> Vec<HttpCall> {
        self.e
            .on_call_response(f.id, status, body, now_s * 1000, &mut self.m)
            .calls
    }
}

fn status(d: &Decision) -> u32 {
    match d {
        Decision::Forward(_) => 200,
        Decision::Respond(r) => r.status,
        Decision::Wait(_) => 0,
    }
}

fn body(d: &Decision) -> &str {
    match d {
        Decision::Respond(r) => &r.body,
        _ => "",
    }
}

fn ready(key: &Key) -> Run {
    let mut run = Run::new(json!({"jwtRules": [remote_rule()]}));
    let t = key.sign(claims(ISS));
    let Decision::Wait(Wait { calls: f, .. }) = run.req(&get(Some(&t)), NOW) else {
        panic!("first request must wait for keys")
    };
    assert_eq!(f.len(), 1);
    run.respond(&f[0], Some(200), &jwks(&[key]), NOW);
    run
}

#[test]
fn valid_token_forwards_with_claim_and_payload_headers() {
    let key = Key::new("k1", 7);
    let mut run = ready(&key);
    let t = key.sign(claims(ISS));
    let mut r = get(Some(&t));
    r.headers.push(("x-email".into(), "spoofed@evil".into()));
    let Decision::Forward(f) = run.req(&r, NOW) else {
        panic!()
    };
    assert!(
        f.remove_headers.contains(&"x-email".to_string()),
        "client copy stripped"
    );
    assert!(
        f.remove_headers.contains(&"authorization".to_string()),
        "forwardOriginalToken defaults to false"
    );
    assert!(f
        .set_headers
        .contains(&("x-email".into(), "user@example.com".into())));
    assert!(f
        .set_headers
        .contains(&("x-roles".into(), "user,offline_access".into())));
    let payload = f
        .set_headers
        .iter()
        .find(|(h, _)| &**h == "x-jwt-payload")
        .unwrap();
    assert_eq!(&*payload.1, t.split('.').nth(1).unwrap());
    assert_eq!(
        f.verified.map(|v| v.identity.principal()),
        Some(format!("{ISS}/u-1"))
    );
    assert_eq!(run.m.get("meshgate.allowed"), 1);
}

#[test]
fn token_failures_map_to_envoy_statuses() {
    let key = Key::new("k1", 7);
    let mut run = ready(&key);
    let mut c = claims(ISS);
    c["aud"] = json!("someone-else");
    let d = run.req(&get(Some(&key.sign(c))), NOW);
    assert_eq!(
        (status(&d), body(&d)),
        (403, "Audiences in Jwt are not allowed")
    );
    let mut c = claims(ISS);
    c["exp"] = json!(NOW - 61);
    assert_eq!(
        body(&run.req(&get(Some(&key.sign(c))), NOW)),
        "Jwt is expired"
    );
    let mut c = claims(ISS);
    c["exp"] = json!(NOW - 59);
    assert_eq!(
        status(&run.req(&get(Some(&key.sign(c))), NOW)),
        200,
        "inside the 60s skew"
    );
    let mut c = claims(ISS);
    c["nbf"] = json!(NOW + 120);
    assert_eq!(
        body(&run.req(&get(Some(&key.sign(c))), NOW)),
        "Jwt not yet valid"
    );
    let d = run.req(&get(Some(&key.sign(claims("http://other/realms/x")))), NOW);
    assert_eq!(
        (status(&d), body(&d)),
        (401, "Jwt issuer is not configured")
    );
    let d = run.req(&get(Some("not-a-jwt")), NOW);
    assert_eq!(
        (status(&d), body(&d)),
        (
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
        )
    );
    let big = "a".repeat(17 * 1024);
    let d = run.req(&get(Some(&big)), NOW);
    assert_eq!(
        (status(&d), body(&d)),
        (401, "Jwt exceeds the maximum token size")
    );
    // One signature character changed (still valid base64url): the signature no longer verifies.
    let t = key.sign(claims(ISS));
    let i = t.len() - 20;
    let flipped = if &t[i..=i] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &t[..i], &t[i + 1..]);
    let Decision::Respond(r) = run.req(&get(Some(&tampered)), NOW) else {
        panic!("tampered token accepted")
    };
    assert_eq!((r.status, r.body.as_str()), (401, "Jwt verification fails"));
    assert!(r
        .headers
        .iter()
        .any(|(n, v)| n == "www-authenticate" && v.ends_with("error=\"invalid_token\"")));
    for (reason, n) in [
        ("audience", 1),
        ("expired", 1),
        ("not_yet_valid", 1),
        ("unknown_issuer", 1),
        ("malformed", 1),
        ("too_large", 1),
        ("bad_signature", 1),
    ] {
        assert_eq!(
            run.m.get(&format!("meshgate.denied.{reason}")),
            n,
            "{reason}"
        );
    }
    assert_eq!(
        run.m.get("meshgate.allowed"),
        1,
        "the token inside the skew"
    );
}

#[test]
fn missing_token_optional_passes_required_is_401() {
    let key = Key::new("k1", 7);
    let mut run = ready(&key);
    assert_eq!(status(&run.req(&get(None), NOW)), 200);
    let mut rule = remote_rule();
    rule["presence"] = json!("REQUIRED");
    let mut run = Run::new(json!({"jwtRules": [rule]}));
    let Decision::Respond(r) = run.req(&get(None), NOW) else {
        panic!()
    };
    assert_eq!((r.status, r.body.as_str()), (401, "Jwt is missing"));
    assert!(r
        .headers
        .iter()
        .any(|(n, v)| n == "www-authenticate" && v == "Bearer realm=\"http://backend/data\""));
    let mut pre = get(None);
    pre.method = "OPTIONS".into();
    pre.headers.push(("origin".into(), "https://app".into()));
    pre.headers
        .push(("access-control-request-method".into(), "GET".into()));
    assert_eq!(
        status(&run.req(&pre, NOW)),
        200,
        "CORS preflight bypasses token checks"
    );
}

#[test]
fn concurrent_first_requests_share_one_fetch() {
    let key = Key::new("k1", 7);
    let mut run = Run::new(json!({"jwtRules": [remote_rule()]}));
    let t = key.sign(claims(ISS));
    let Decision::Wait(Wait { calls: first, .. }) = run.req(&get(Some(&t)), NOW) else {
        panic!()
    };
    for _ in 0..10 {
        let Decision::Wait(Wait { calls: more, .. }) = run.req(&get(Some(&t)), NOW) else {
            panic!()
        };
        assert!(more.is_empty(), "no second fetch while one is in flight");
    }
    assert_eq!(
        first[0].cluster,
        "outbound|80||keycloak.keycloak.svc.cluster.local"
    );
    run.respond(&first[0], Some(200), &jwks(&[&key]), NOW);
    assert_eq!(status(&run.req(&get(Some(&t)), NOW)), 200);
    assert_eq!(run.m.get("meshgate.jwks_fetch.ok"), 1);
}

#[test]
fn idp_down_fails_closed_then_recovers_without_restart() {
    let key = Key::new("k1", 7);
    let mut run = Run::new(json!({"jwtRules": [remote_rule()]}));
    let t = key.sign(claims(ISS));
    let Decision::Wait(Wait { calls: f, .. }) = run.req(&get(Some(&t)), NOW) else {
        panic!()
    };
    run.respond(&f[0], None, b"", NOW);
    let d = run.req(&get(Some(&t)), NOW);
    assert_eq!((status(&d), body(&d)), (401, "Jwks remote fetch is failed"));
    assert_eq!(run.m.get("meshgate.jwks_fetch.failed"), 1);
    // The periodic tick retries after backoff; the IdP is back.
    let due = run.e.on_tick((NOW + 2) * 1000);
    assert_eq!(due.len(), 1);
    run.respond(&due[0], Some(200), &jwks(&[&key]), NOW + 2);
    assert_eq!(status(&run.req(&get(Some(&t)), NOW + 2)), 200);
}

#[test]
fn rotated_key_is_fetched_once_and_random_kids_do_not_amplify() {
    let old = Key::new("old", 7);
    let new = Key::new("new", 9);
    let mut run = ready(&old);
    let t = new.sign(claims(ISS));
    let Decision::Wait(Wait { calls: f, .. }) = run.req(&get(Some(&t)), NOW + 1) else {
        panic!("unknown kid triggers a refetch")
    };
    assert_eq!(f.len(), 1);
    run.respond(&f[0], Some(200), &jwks(&[&old, &new]), NOW + 1);
    assert_eq!(status(&run.req(&get(Some(&t)), NOW + 1)), 200);
    // An attacker sends many random kids: within the cooldown no fetch is started.
    let mut fetches = 0;
    for i in 0..50 {
        let fake = Key::new(&format!("rand-{i}"), 11);
        match run.req(&get(Some(&fake.sign(claims(ISS)))), NOW + 2) {
            Decision::Wait(w) => fetches += w.calls.len(),
            Decision::Respond(r) => {
                assert_eq!(r.body, "Jwks doesn't have key to match kid or alg from Jwt")
            }
            Decision::Forward(_) => panic!("forged token accepted"),
        }
    }
    assert_eq!(fetches, 0);
}

#[test]
fn token_cache_hits_reapply_time_and_die_with_the_key() {
    let key = Key::new("k1", 7);
    let mut run = ready(&key);
    let mut c = claims(ISS);
    c["exp"] = json!(NOW + 10);
    let t = key.sign(c);
    for _ in 0..5 {
        assert_eq!(status(&run.req(&get(Some(&t)), NOW)), 200);
    }
    assert_eq!(
        run.m.get("meshgate.token_cache.miss"),
        1,
        "this token (the warm-up request waited and was never run again)"
    );
    assert_eq!(run.m.get("meshgate.token_cache.hit"), 4);
    // Past exp (and past the skew) the entry is gone and full verification rejects it.
    assert_eq!(body(&run.req(&get(Some(&t)), NOW + 71)), "Jwt is expired");
    // The key leaves the JWKS: cached tokens it verified are dropped at once.
    let t2 = key.sign(claims(ISS));
    assert_eq!(status(&run.req(&get(Some(&t2)), NOW)), 200);
    let other = Key::new("k2", 9);
    let due = run.e.on_tick((NOW + 400) * 1000);
    run.respond(&due[0], Some(200), &jwks(&[&other]), NOW + 400);
    assert_eq!(run.e.cache.len(), 0);
    // Not served from the cache: its kid is unknown now, so the engine refetches the JWKS.
    let Decision::Wait(w) = run.req(&get(Some(&t2)), NOW + 100) else {
        panic!("a token of a removed key must not be served from the cache")
    };
    assert_eq!(w.on, vec![WaitKey::Keys(0)]);
    assert_eq!(w.calls.len(), 1, "one kid-miss refetch");
}

#[test]
fn a_request_that_waited_for_keys_counts_one_cache_miss() {
    let key = Key::new("k1", 7);
    let mut run = Run::new(json!({"jwtRules": [remote_rule()]}));
    let t = key.sign(claims(ISS));
    let Decision::Wait(Wait { calls: f, .. }) = run.req(&get(Some(&t)), NOW) else {
        panic!("first request must wait for keys")
    };
    assert_eq!(run.m.get("meshgate.token_cache.miss"), 0, "not decided yet");
    run.respond(&f[0], Some(200), &jwks(&[&key]), NOW);
    // The runtime runs the paused request again once its keys settled.
    assert_eq!(status(&run.req(&get(Some(&t)), NOW)), 200);
    assert_eq!(run.m.get("meshgate.token_cache.miss"), 1);
    assert_eq!(run.m.get("meshgate.token_cache.hit"), 0);
    assert_eq!(status(&run.req(&get(Some(&t)), NOW)), 200);
    assert_eq!(run.m.get("meshgate.token_cache.miss"), 1);
    assert_eq!(run.m.get("meshgate.token_cache.hit"), 1);
}

#[test]
fn two_issuers_query_param_and_all_tokens_must_verify() {
    let k1 = Key::new("k1", 7);
    let k2 = Key::new("k2", 9);
    let mut rule2 = remote_rule();
    rule2["issuer"] = json!(ISS2);
    rule2["jwksUri"] = json!(format!("{ISS2}/protocol/openid-connect/certs"));
    let mut run = Run::new(json!({"jwtRules": [remote_rule(), rule2]}));
    let t1 = k1.sign(claims(ISS));
    let t2 = k2.sign(claims(ISS2));
    let Decision::Wait(Wait { calls: f, .. }) = run.req(&get(Some(&t1)), NOW) else {
        panic!()
    };
    run.respond(&f[0], Some(200), &jwks(&[&k1]), NOW);
    let Decision::Wait(Wait { calls: f, .. }) = run.req(&get(Some(&t2)), NOW) else {
        panic!()
    };
    assert!(f[0].headers.contains(&(
        ":path".into(),
        "/realms/other/protocol/openid-connect/certs".into()
    )));
    run.respond(&f[0], Some(200), &jwks(&[&k2]), NOW);
    assert_eq!(status(&run.req(&get(Some(&t1)), NOW)), 200);
    assert_eq!(status(&run.req(&get(Some(&t2)), NOW)), 200);
    let mut q = get(None);
    q.path = format!("/data?access_token={t2}");
    assert_eq!(
        status(&run.req(&q, NOW)),
        200,
        "token in the access_token query parameter"
    );
    // A good header token cannot carry a bad query token past the filter.
    let mut both = get(Some(&t1));
    both.path = "/data?access_token=bad.token.here".into();
    assert_eq!(status(&run.req(&both, NOW)), 401);
    // A token of issuer 1 signed by issuer 2's key fails.
    // (its kid is unknown to issuer 1: one refetch, then a definite 401).
    let forged = k2.sign(claims(ISS));
    let Decision::Wait(Wait { calls: f, .. }) = run.req(&get(Some(&forged)), NOW + 100) else {
        panic!()
    };
    run.respond(&f[0], Some(200), &jwks(&[&k1]), NOW + 100);
    let d = run.req(&get(Some(&forged)), NOW + 100);
    assert_eq!(
        (status(&d), body(&d)),
        (401, "Jwks doesn't have key to match kid or alg from Jwt")
    );
}

#[test]
fn reference_policy_end_to_end() {
    let key = Key::new("k1", 7);
    let policy = json!({"name": "backend-get", "action": "ALLOW", "rules": [{
        "to": [{"operation": {"methods": ["GET"]}}],
        "when": [
            {"key": "request.auth.claims[iss]", "values": [ISS]},
            {"key": "request.auth.claims[aud]", "values": ["my-backend-client"]},
            {"key": "request.auth.claims[email]", "values": ["user@example.com"]}]}]});
    let mut run = Run::new(
        json!({"jwtRules": [remote_rule()], "policies": [policy], "insufficientScopeChallenge": true}),
    );
    let t = key.sign(claims(ISS));
    let Decision::Wait(Wait { calls: f, .. }) = run.req(&get(Some(&t)), NOW) else {
        panic!()
    };
    run.respond(&f[0], Some(200), &jwks(&[&key]), NOW);
    assert_eq!(status(&run.req(&get(Some(&t)), NOW)), 200);
    let mut post = get(Some(&t));
    post.method = "POST".into();
    let Decision::Respond(r) = run.req(&post, NOW) else {
        panic!()
    };
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));
    assert!(r
        .headers
        .iter()
        .any(|(n, v)| n == "www-authenticate" && v.contains("insufficient_scope")));
    let Decision::Respond(r) = run.req(&get(None), NOW) else {
        panic!()
    };
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "RBAC: access denied"),
        "no token: Istio's 403, not 401"
    );
    assert!(
        r.headers.iter().all(|(n, _)| n != "www-authenticate"),
        "no challenge without a valid token"
    );
    let mut c = claims(ISS);
    c["email"] = json!("mallory@example.com");
    assert_eq!(status(&run.req(&get(Some(&key.sign(c))), NOW)), 403);
    assert_eq!(run.m.get("meshgate.policy.backend-get.allowed"), 1);
}

#[test]
fn inline_jwks_and_discovery() {
    let key = Key::new("k1", 7);
    let inline = String::from_utf8(jwks(&[&key])).unwrap();
    let mut run = Run::new(json!({"jwtRules": [{"issuer": ISS, "jwks": inline}]}));
    assert_eq!(
        status(&run.req(&get(Some(&key.sign(claims(ISS)))), NOW)),
        200,
        "no fetch needed"
    );
    let mut run = Run::new(json!({"jwtRules": [{"issuer": ISS}]}));
    let due = run.e.on_tick(NOW * 1000);
    assert!(due[0].headers.contains(&(
        ":path".into(),
        "/realms/myrealm/.well-known/openid-configuration".into()
    )));
    let doc = json!({"issuer": ISS, "jwks_uri": format!("{ISS}/protocol/openid-connect/certs")})
        .to_string();
    let next = run.respond(&due[0], Some(200), doc.as_bytes(), NOW);
    assert!(next[0].headers.contains(&(
        ":path".into(),
        "/realms/myrealm/protocol/openid-connect/certs".into()
    )));
    run.respond(&next[0], Some(200), &jwks(&[&key]), NOW);
    assert_eq!(
        status(&run.req(&get(Some(&key.sign(claims(ISS)))), NOW)),
        200
    );
}

#[test]
fn weak_rsa_keys_in_a_fetched_jwks_are_refused_and_counted() {
    // A 1024-bit modulus and a 2^33+1 exponent beside a usable key: both refused and counted,
    // the JWKS still loads; Keycloak's `use: enc` key is skipped without counting.
    let key = Key::new("k1", 7);
    let mut body: Value = serde_json::from_slice(&jwks(&[&key])).unwrap();
    use meshgate::jwt::b64url_encode;
    let n2048 = b64url_encode(&[0xc7u8; 256]);
    let keys = body["keys"].as_array_mut().unwrap();
    keys.push(
        json!({"kid": "small", "kty": "RSA", "n": b64url_encode(&[0xc7u8; 128]), "e": "AQAB"}),
    );
    keys.push(json!({"kid": "big-e", "kty": "RSA", "n": n2048, "e": "AgAAAAE"}));
    keys.push(json!({"kid": "enc", "kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "n": n2048, "e": "AQAB"}));
    let mut run = Run::new(json!({"jwtRules": [remote_rule()]}));
    let t = key.sign(claims(ISS));
    let Decision::Wait(Wait { calls: f, .. }) = run.req(&get(Some(&t)), NOW) else {
        panic!("first request must wait for keys")
    };
    run.respond(&f[0], Some(200), body.to_string().as_bytes(), NOW);
    assert_eq!(run.m.get("meshgate.jwks_key_rejected"), 2);
    assert_eq!(run.m.get("meshgate.jwks_fetch.ok"), 1);
    assert_eq!(status(&run.req(&get(Some(&t)), NOW)), 200);
}

#[test]
fn access_tokens_only_parses_per_rule_and_defaults_off() {
    let parse = |extra: Value| {
        let mut rule = remote_rule();
        rule.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Settings::from_json(json!({"jwtRules": [rule]}).to_string().as_bytes())
    };
    assert!(!parse(json!({})).unwrap().rules[0].access_tokens_only);
    assert!(parse(json!({"accessTokensOnly": true})).unwrap().rules[0].access_tokens_only);
    assert!(!parse(json!({"accessTokensOnly": false})).unwrap().rules[0].access_tokens_only);
    let errs = parse(json!({"accessTokensOnly": "yes"})).unwrap_err();
    assert!(
        errs[0]
            .to_string()
            .starts_with("jwtRules[0].accessTokensOnly"),
        "{errs:?}"
    );
}

#[test]
fn access_tokens_only_refuses_keycloak_id_and_refresh_tokens() {
    // A Keycloak ID token whose `aud` happens to match must not pass as a bearer token when the
    // rule says accessTokensOnly; without the option (Istio semantics) it does.
    let key = Key::new("k1", 7);
    let token = |typ: Option<&str>| {
        let mut c = claims(ISS);
        if let Some(t) = typ {
            c["typ"] = json!(t);
        }
        key.sign(c)
    };
    let mut only = remote_rule();
    only["accessTokensOnly"] = json!(true);
    for (rule, typ, want) in [
        (remote_rule(), Some("ID"), (200, "")),
        (remote_rule(), None, (200, "")),
        (only.clone(), Some("Bearer"), (200, "")),
        (
            only.clone(),
            Some("ID"),
            (401, "Jwt is not an access token ([typ] is not Bearer)"),
        ),
        (
            only.clone(),
            Some("Refresh"),
            (401, "Jwt is not an access token ([typ] is not Bearer)"),
        ),
        (
            only.clone(),
            None,
            (401, "Jwt is not an access token ([typ] is not Bearer)"),
        ),
    ] {
        let mut run = Run::new(json!({"jwtRules": [rule]}));
        let Decision::Wait(Wait { calls: f, .. }) =
            run.req(&get(Some(&token(Some("Bearer")))), NOW)
        else {
            panic!("first request must wait for keys")
        };
        run.respond(&f[0], Some(200), &jwks(&[&key]), NOW);
        let t = token(typ);
        let d = run.req(&get(Some(&t)), NOW);
        assert_eq!((status(&d), body(&d)), want, "typ {typ:?}");
        if want.0 == 401 {
            assert_eq!(run.m.get("meshgate.denied.not_access_token"), 1);
            // The cache must not let it through later either.
            assert_eq!(status(&run.req(&get(Some(&t)), NOW)), 401);
        }
    }
}
