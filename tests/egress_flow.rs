//! Native flow tests of the egress stage through the request engine (issue "egress"): which
//! outbound requests get a token, single flight, refresh before expiry without pausing traffic,
//! never a token past its expiry, backoff, `override`, `onError`, and that only outbound requests
//! take this path. Time is an input; token calls are answered by hand.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate::calls::{CallId, HttpCall, WaitKey};
use meshgate::config::Settings;
use meshgate::engine::{Decision, Engine, Wait};
use meshgate::jwt::crypto::WasmCrypto;
use meshgate::metrics::CountingSink;
use meshgate::request::RequestAttrs;
use serde_json::{json, Value};
use std::rc::Rc;

const T0: u64 = 1_800_000_000_000;
const TOKEN_URL: &str =
    "http://keycloak.keycloak.svc.cluster.local/realms/myrealm/protocol/openid-connect/token";

fn target(extra: Value) -> Value {
    let mut t = json!({"name": "backend", "hosts": ["backend", "backend.demo.svc.cluster.local"],
        "tokenEndpoint": TOKEN_URL, "clientId": "frontend", "clientSecret": "frontend-secret"});
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    t
}

struct Run {
    e: Engine,
    m: CountingSink,
}

impl Run {
    fn new(config: Value) -> Run {
        Run {
            e: Engine::new(Rc::new(
                Settings::from_json(config.to_string().as_bytes()).unwrap(),
            )),
            m: CountingSink::default(),
        }
    }

    fn req(&mut self, r: &RequestAttrs, now: u64) -> Decision {
        self.e.on_request(r, now, &WasmCrypto, &mut self.m)
    }

    fn respond(
        &mut self,
        c: &HttpCall,
        status: Option<u32>,
        body: &[u8],
        now: u64,
    ) -> Vec<WaitKey> {
        self.e
            .on_call_response(c.id, status, body, now, &mut self.m)
            .settled
    }

    fn count(&self, target: &str, event: &str) -> u64 {
        self.m.get(&format!("meshgate.egress.{target}.{event}"))
    }
}

fn outbound(host: &str, path: &str) -> RequestAttrs {
    RequestAttrs {
        method: "GET".into(),
        path: path.into(),
        host: host.into(),
        scheme: "http".into(),
        outbound: true,
        ..Default::default()
    }
}

fn token_body(token: &str, expires_in: u64) -> Vec<u8> {
    json!({"access_token": token, "expires_in": expires_in, "refresh_expires_in": 0,
           "token_type": "Bearer", "not-before-policy": 0, "scope": "profile email"})
    .to_string()
    .into_bytes()
}

/// The Authorization value a Forward sets (None: forwarded untouched).
fn injected(d: &Decision) -> Option<String> {
    match d {
        Decision::Forward(f) => {
            assert!(f.remove_headers.is_empty(), "{f:?}");
            f.set_headers
                .iter()
                .find(|(n, _)| &**n == "authorization")
                .map(|(_, v)| v.to_string())
        }
        other => panic!("expected a Forward, got {other:?}"),
    }
}

fn untouched(d: &Decision) -> bool {
    matches!(d, Decision::Forward(f) if f.set_headers.is_empty() && f.remove_headers.is_empty())
}

/// A configured engine whose configure-time token fetch was answered with `token`.
fn ready(config: Value, token: &str, expires_in: u64) -> Run {
    let mut run = Run::new(config);
    let calls: Vec<HttpCall> = run
        .e
        .on_tick(T0)
        .into_iter()
        .filter(|c| matches!(c.id, CallId::Egress(_)))
        .collect();
    assert_eq!(calls.len(), 1, "one token fetch at configure time");
    run.respond(
        &calls[0],
        Some(200),
        &token_body(token, expires_in),
        T0 + 20,
    );
    run
}

#[test]
fn configure_time_fetch_then_injected_without_waiting() {
    let mut run = Run::new(json!({"egress": [target(json!({}))]}));
    let calls = run.e.on_tick(T0);
    let c = &calls[0];
    assert!(matches!(c.id, CallId::Egress(_)));
    assert_eq!(
        c.cluster,
        "outbound|80||keycloak.keycloak.svc.cluster.local"
    );
    let h = |n: &str| {
        c.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(h(":method").as_deref(), Some("POST"));
    assert_eq!(
        h(":path").as_deref(),
        Some("/realms/myrealm/protocol/openid-connect/token")
    );
    assert_eq!(
        h(":authority").as_deref(),
        Some("keycloak.keycloak.svc.cluster.local")
    );
    assert_eq!(
        h("authorization").as_deref(),
        Some("Basic ZnJvbnRlbmQ6ZnJvbnRlbmQtc2VjcmV0")
    );
    assert_eq!(
        c.body.as_deref(),
        Some(&b"grant_type=client_credentials"[..])
    );
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("ZnJvbnRlbmQ6ZnJvbnRlbmQtc2VjcmV0"), "{dbg}");
    assert_eq!(
        run.respond(c, Some(200), &token_body("tok-1", 60), T0 + 30),
        vec![WaitKey::EgressToken(0)]
    );
    assert_eq!(run.count("backend", "fetch_ok"), 1);
    for _ in 0..50 {
        let d = run.req(&outbound("backend", "/data"), T0 + 100);
        assert_eq!(injected(&d).as_deref(), Some("Bearer tok-1"));
    }
    assert_eq!(run.count("backend", "injected"), 50);
    assert_eq!(run.count("backend", "waited"), 0);
    assert!(
        run.e.on_tick(T0 + 1_000).is_empty(),
        "nothing due: one fetch for 50 requests"
    );
}

#[test]
fn first_requests_wait_for_one_fetch() {
    let mut run = Run::new(json!({"egress": [target(json!({"timeout": "3s"}))]}));
    // No tick yet (a request before the configure-time fetch went out).
    let Decision::Wait(Wait {
        on,
        calls,
        timeout_ms,
    }) = run.req(&outbound("backend", "/"), T0)
    else {
        panic!()
    };
    assert_eq!(on, vec![WaitKey::EgressToken(0)]);
    assert_eq!(calls.len(), 1);
    assert_eq!(timeout_ms, 3_000);
    for _ in 0..20 {
        let Decision::Wait(w) = run.req(&outbound("backend", "/"), T0 + 1) else {
            panic!()
        };
        assert!(w.calls.is_empty(), "single flight");
    }
    assert!(run.e.on_tick(T0 + 2).is_empty());
    assert_eq!(run.count("backend", "waited"), 21);
    run.respond(&calls[0], Some(200), &token_body("tok", 60), T0 + 50);
    assert_eq!(
        injected(&run.req(&outbound("backend", "/"), T0 + 60)).as_deref(),
        Some("Bearer tok")
    );
}

#[test]
fn refresh_before_expiry_never_pauses_and_never_sends_expired() {
    // 10 s tokens, refresh at 80 %.
    let mut run = ready(json!({"egress": [target(json!({}))]}), "tok-1", 10);
    assert!(run.e.on_tick(T0 + 7_999).is_empty());
    let refresh = run.e.on_tick(T0 + 8_000);
    assert_eq!(refresh.len(), 1, "refresh at 8 s of 10 s");
    // Traffic during the refresh keeps the current token.
    for t in [T0 + 8_001, T0 + 9_000, T0 + 9_999] {
        assert_eq!(
            injected(&run.req(&outbound("backend", "/"), t)).as_deref(),
            Some("Bearer tok-1")
        );
    }
    run.respond(&refresh[0], Some(200), &token_body("tok-2", 10), T0 + 8_100);
    assert_eq!(
        injected(&run.req(&outbound("backend", "/"), T0 + 8_200)).as_deref(),
        Some("Bearer tok-2")
    );
    assert_eq!(run.count("backend", "waited"), 0);
    assert_eq!(run.count("backend", "fetch_ok"), 2);

    // The next refresh fails until after the expiry (T0 + 8 s + 10 s): never tok-2 after it.
    let r = run.e.on_tick(T0 + 16_000);
    run.respond(&r[0], Some(503), b"", T0 + 16_000);
    assert_eq!(
        injected(&run.req(&outbound("backend", "/"), T0 + 17_999)).as_deref(),
        Some("Bearer tok-2")
    );
    let d = run.req(&outbound("backend", "/"), T0 + 18_000);
    assert!(
        matches!(d, Decision::Wait(_)),
        "expired: waits for the retry it starts, got {d:?}"
    );
}

#[test]
fn endpoint_down_denies_503_then_recovers_by_itself() {
    let mut run = Run::new(json!({"egress": [target(json!({}))]}));
    let c = run.e.on_tick(T0);
    assert_eq!(
        run.respond(&c[0], None, b"", T0 + 5_000),
        vec![WaitKey::EgressToken(0)]
    );
    let Decision::Respond(r) = run.req(&outbound("backend", "/"), T0 + 5_001) else {
        panic!()
    };
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "meshgate egress: no access token for target \"backend\": no response (timeout or connection failure)"
    );
    assert_eq!(run.count("backend", "denied"), 1);
    assert_eq!(run.count("backend", "fetch_failed"), 1);
    // Backoff 1 s, then the tick retries; the IdP is back.
    assert!(run.e.on_tick(T0 + 5_999).is_empty());
    let c = run.e.on_tick(T0 + 6_000);
    run.respond(&c[0], Some(200), &token_body("tok", 60), T0 + 6_010);
    assert_eq!(
        injected(&run.req(&outbound("backend", "/"), T0 + 6_020)).as_deref(),
        Some("Bearer tok")
    );
}

#[test]
fn on_error_allow_forwards_without_a_token() {
    let mut run = Run::new(json!({"egress": [target(json!({"onError": "allow"}))]}));
    let c = run.e.on_tick(T0);
    run.respond(&c[0], Some(500), b"", T0 + 10);
    assert!(untouched(&run.req(&outbound("backend", "/"), T0 + 20)));
    assert_eq!(run.count("backend", "no_token"), 1);
    assert_eq!(run.count("backend", "denied"), 0);
}

#[test]
fn wrong_secret_is_counted_and_reported_without_the_secret() {
    let mut run = Run::new(json!({"egress": [target(json!({"clientSecret": "wrong-secret"}))]}));
    let c = run.e.on_tick(T0);
    let body = json!({"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"});
    run.respond(&c[0], Some(401), body.to_string().as_bytes(), T0 + 10);
    assert_eq!(run.count("backend", "fetch_rejected"), 1);
    assert_eq!(run.count("backend", "fetch_failed"), 1);
    let Decision::Respond(r) = run.req(&outbound("backend", "/"), T0 + 20) else {
        panic!()
    };
    assert_eq!(
        r.body,
        "meshgate egress: no access token for target \"backend\": token endpoint answered HTTP 401 unauthorized_client: Invalid client or Invalid client credentials"
    );
    assert!(!r.body.contains("wrong-secret"));
}

#[test]
fn override_or_keep_the_applications_authorization() {
    let cfg = json!({"egress": [target(json!({})), target(json!({"name": "api", "hosts": ["api"], "override": true}))]});
    let mut run = Run::new(cfg);
    let calls = run.e.on_tick(T0);
    assert_eq!(calls.len(), 2);
    run.respond(&calls[0], Some(200), &token_body("tok-backend", 60), T0);
    run.respond(&calls[1], Some(200), &token_body("tok-api", 60), T0);
    let with_auth = |host: &str| {
        let mut r = outbound(host, "/");
        r.headers
            .push(("authorization".into(), "Bearer app-token".into()));
        r
    };
    assert!(
        untouched(&run.req(&with_auth("backend"), T0 + 1)),
        "kept by default"
    );
    assert_eq!(run.count("backend", "kept"), 1);
    assert_eq!(run.count("backend", "injected"), 0);
    assert_eq!(
        injected(&run.req(&with_auth("api"), T0 + 1)).as_deref(),
        Some("Bearer tok-api")
    );
    assert_eq!(run.count("api", "injected"), 1);
}

#[test]
fn hosts_and_paths_pick_the_first_matching_target() {
    let cfg = json!({"egress": [
        target(json!({"name": "reports", "hosts": ["*.demo.svc.cluster.local"], "paths": ["/reports/*", "*.csv"]})),
        target(json!({"name": "backend", "hosts": ["backend", "backend:8080", "*.demo.svc.cluster.local"]})),
    ]});
    let mut run = Run::new(cfg);
    let calls = run.e.on_tick(T0);
    run.respond(&calls[0], Some(200), &token_body("tok-reports", 60), T0);
    run.respond(&calls[1], Some(200), &token_body("tok-backend", 60), T0);
    let cases = [
        ("backend", "/data", Some("Bearer tok-backend")),
        ("backend:8080", "/data", Some("Bearer tok-backend")),
        ("BACKEND:9090", "/data", Some("Bearer tok-backend")),
        (
            "backend.demo.svc.cluster.local",
            "/reports/1?x=1",
            Some("Bearer tok-reports"),
        ),
        (
            "backend.demo.svc.cluster.local:80",
            "/a/b.csv",
            Some("Bearer tok-reports"),
        ),
        (
            "backend.demo.svc.cluster.local",
            "/data",
            Some("Bearer tok-backend"),
        ),
        ("other", "/data", None),
        ("backend.other.svc.cluster.local", "/reports/1", None),
        ("evil-backend", "/data", None),
        ("demo.svc.cluster.local", "/reports/1", None),
    ];
    for (host, path, want) in cases {
        let d = run.req(&outbound(host, path), T0 + 1);
        assert_eq!(injected(&d).as_deref(), want, "{host}{path}");
    }
}

#[test]
fn only_outbound_requests_take_the_egress_stage() {
    // The same plugin also verifies inbound tokens (presence REQUIRED).
    let cfg = json!({
        "jwtRules": [{"issuer": "http://keycloak.keycloak.svc.cluster.local/realms/myrealm",
                      "jwksUri": "http://keycloak.keycloak.svc.cluster.local/realms/myrealm/protocol/openid-connect/certs",
                      "presence": "REQUIRED"}],
        "egress": [target(json!({}))]});
    let mut run = ready(cfg, "tok", 60);
    // Outbound: no token needed from the application, none verified.
    assert_eq!(
        injected(&run.req(&outbound("backend", "/"), T0 + 1)).as_deref(),
        Some("Bearer tok")
    );
    assert_eq!(run.m.get("meshgate.denied.missing"), 0);
    // Inbound (the same request, not on an outbound listener): jwtRules apply, no injection.
    let mut inbound = outbound("backend", "/");
    inbound.outbound = false;
    let Decision::Respond(r) = run.req(&inbound, T0 + 1) else {
        panic!()
    };
    assert_eq!((r.status, r.body.as_str()), (401, "Jwt is missing"));
    assert_eq!(run.count("backend", "injected"), 1);
}

#[test]
fn without_egress_outbound_flag_changes_nothing() {
    let mut run =
        Run::new(json!({"policies": [{"name": "deny-all", "action": "ALLOW", "rules": []}]}));
    let d = run.req(&outbound("backend", "/"), T0);
    let Decision::Respond(r) = d else { panic!() };
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));
    assert!(run.e.on_tick(T0).is_empty());
}

#[test]
fn discovery_finds_the_token_endpoint() {
    let mut t = target(json!({}));
    t.as_object_mut().unwrap().remove("tokenEndpoint");
    t["issuer"] = json!("http://keycloak.keycloak.svc.cluster.local/realms/myrealm");
    let mut run = Run::new(json!({"egress": [t]}));
    let c = run.e.on_tick(T0);
    assert!(c[0].headers.contains(&(
        ":path".into(),
        "/realms/myrealm/.well-known/openid-configuration".into()
    )));
    let doc = json!({"issuer": "http://keycloak.keycloak.svc.cluster.local/realms/myrealm", "token_endpoint": TOKEN_URL});
    let out = run.e.on_call_response(
        c[0].id,
        Some(200),
        doc.to_string().as_bytes(),
        T0 + 5,
        &mut run.m,
    );
    assert!(out.settled.is_empty(), "discovery alone settles nothing");
    assert_eq!(out.calls.len(), 1);
    assert!(out.calls[0].headers.contains(&(
        ":path".into(),
        "/realms/myrealm/protocol/openid-connect/token".into()
    )));
    run.respond(&out.calls[0], Some(200), &token_body("tok", 60), T0 + 10);
    assert_eq!(
        injected(&run.req(&outbound("backend", "/"), T0 + 11)).as_deref(),
        Some("Bearer tok")
    );
}

#[test]
fn wait_timeout_follows_on_error() {
    let mut run = Run::new(json!({"egress": [target(json!({}))]}));
    let _ = run.e.on_tick(T0);
    let req = outbound("backend", "/");
    let Decision::Wait(w) = run.req(&req, T0 + 1) else {
        panic!()
    };
    let Decision::Respond(r) = run.e.on_wait_timeout(&req, &w.on, &mut run.m) else {
        panic!()
    };
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "meshgate egress: no access token for target \"backend\": the token endpoint did not answer within 5000 ms"
    );
    // Waiting for keys still ends in the JWKS failure.
    let Decision::Respond(r) = run.e.on_wait_timeout(&req, &[WaitKey::Keys(0)], &mut run.m) else {
        panic!()
    };
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "Jwks remote fetch is failed")
    );
}

#[test]
fn configuration_errors_name_the_field() {
    let bad = json!({"egress": [{"name": "b", "hosts": ["*"], "clientId": "c", "clientSecret": "s",
        "tokenEndpoint": TOKEN_URL, "onError": "ignore"}]});
    let e = Settings::from_json(bad.to_string().as_bytes()).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "egress[0].onError");
    let bad = json!({"egress": [{"name": "b", "hosts": ["*"], "clientId": "c", "clientSecret": "s", "tokenEndpoint": TOKEN_URL}]});
    let e = Settings::from_json(bad.to_string().as_bytes()).unwrap_err();
    assert_eq!(e[0].path, "egress[0].hosts[0]");
    assert!(e[0].message.contains("every host"), "{}", e[0].message);
    let bad = json!({"egress": [{"name": "b", "hosts": ["backend"], "clientId": "c",
        "clientSecretEnv": "MESHGATE_TEST_SURELY_UNSET_VARIABLE", "tokenEndpoint": TOKEN_URL}]});
    let e = Settings::from_json(bad.to_string().as_bytes()).unwrap_err();
    assert_eq!(e[0].path, "egress[0].clientSecretEnv");
    let bad = json!({"egress": [{"name": "b", "hosts": ["backend"], "clientId": "c", "clientSecret": "s",
        "tokenEndpoint": TOKEN_URL, "bogus": 1}]});
    let e = Settings::from_json(bad.to_string().as_bytes()).unwrap_err();
    assert!(e[0].path.starts_with("egress[0]"), "{:?}", e[0]);
    assert!(e[0].message.contains("bogus"));
}
