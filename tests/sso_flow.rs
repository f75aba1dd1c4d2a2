//! Native flow tests of browser single sign-on (issue "sso") through the per-VM runtime the
//! proxy-wasm adapter drives (`meshgate::vm`), with an injected clock and random source:
//! login → callback → session → pass, refresh, refresh failure, logout, and every rejection.
//! The provider is played by the test: it answers the discovery and token-endpoint calls the
//! filter sends, with tokens signed by an independent ES256 implementation (RustCrypto p256).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use meshgate::calls::HttpCall;
use meshgate::config::Settings;
use meshgate::engine::{Engine, Forward};
use meshgate::error::Reply;
use meshgate::jwt::crypto::WasmCrypto;
use meshgate::metrics::{CountingSink, MetricSink};
use meshgate::request::RequestAttrs;
use meshgate::sso::random::Random;
use meshgate::vm::{Host, Verdict, Vm};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

mod common;
use common::keys::{jwks, Key};

const ISS: &str = "http://keycloak.keycloak.svc.cluster.local/realms/myrealm";
const OIDC: &str = "/realms/myrealm/protocol/openid-connect";
const CLUSTER: &str = "outbound|80||keycloak.keycloak.svc.cluster.local";
const CLIENT: &str = "meshgate-gateway";
const SECRET: &str = "gateway-secret";
const APP: &str = "app.example.com";
/// 32 bytes, base64.
const COOKIE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const OTHER_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const T0: u64 = 1_800_000_000_000;
const SESSION: &str = "meshgate_session";

// ---------------------------------------------------------------------------------------------
// The proxy: a Vm over an in-memory host.

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Forwarded(Forward),
    Resumed,
    Replied(Reply),
}

#[derive(Default)]
struct MockHost {
    now: u64,
    next_token: u32,
    sent: Vec<(u32, HttpCall)>,
    live: BTreeSet<u32>,
    current: Option<u32>,
    events: BTreeMap<u32, Vec<Event>>,
    metrics: CountingSink,
}

impl Host for MockHost {
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn dispatch(&mut self, call: &HttpCall) -> Result<u32, String> {
        assert_eq!(
            self.current, None,
            "calls are sent from root callbacks only"
        );
        self.next_token += 1;
        self.sent.push((self.next_token, call.clone()));
        Ok(self.next_token)
    }
    fn tick_soon(&mut self) {}
    fn tick_regularly(&mut self) {}
    fn enter(&mut self, ctx: u32) -> bool {
        let live = self.live.contains(&ctx);
        if live {
            self.current = Some(ctx);
        }
        live
    }
    fn forward(&mut self, fwd: &Forward) {
        let ctx = self.current.expect("forward outside a request");
        self.events
            .entry(ctx)
            .or_default()
            .push(Event::Forwarded(fwd.clone()));
    }
    fn resume(&mut self) {
        let ctx = self.current.expect("resume outside a request");
        self.events.entry(ctx).or_default().push(Event::Resumed);
    }
    fn reply(&mut self, reply: &Reply) {
        let ctx = self.current.expect("reply outside a request");
        self.events
            .entry(ctx)
            .or_default()
            .push(Event::Replied(reply.clone()));
    }
    fn metrics(&mut self) -> &mut dyn MetricSink {
        &mut self.metrics
    }
}

/// xorshift64*: deterministic "randomness" for the tests; `dead` makes it fail.
struct TestRandom {
    s: u64,
    dead: Rc<std::cell::Cell<bool>>,
}

impl Random for TestRandom {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        if self.dead.get() {
            return false;
        }
        for b in buf {
            self.s ^= self.s << 13;
            self.s ^= self.s >> 7;
            self.s ^= self.s << 17;
            *b = (self.s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
        }
        true
    }
}

/// What one request ended in.
#[derive(Debug, Clone)]
enum Outcome {
    /// Forwarded (at once or after a pause).
    Forwarded(Forward),
    Replied(Reply),
    /// Still paused.
    Waiting,
}

impl Outcome {
    fn reply(&self) -> &Reply {
        match self {
            Outcome::Replied(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }
    fn forward(&self) -> &Forward {
        match self {
            Outcome::Forwarded(f) => f,
            other => panic!("expected a forward, got {other:?}"),
        }
    }
    fn status(&self) -> u32 {
        match self {
            Outcome::Forwarded(_) => 200,
            Outcome::Replied(r) => r.status,
            Outcome::Waiting => 0,
        }
    }
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn set_cookies(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.clone())
        .collect()
}

fn set_header<'a>(f: &'a Forward, name: &str) -> Option<&'a str> {
    f.set_headers
        .iter()
        .find(|(n, _)| &**n == name)
        .map(|(_, v)| &**v)
}

/// A browser's cookie jar for one host (paths honoured, `Max-Age=0` deletes).
#[derive(Default, Clone)]
struct Jar {
    /// name → (value, path)
    cookies: BTreeMap<String, (String, String)>,
}

impl Jar {
    fn apply(&mut self, set_cookies: &[String]) {
        for c in set_cookies {
            let mut parts = c.split("; ");
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            let mut path = "/".to_string();
            let mut delete = false;
            for a in parts {
                if let Some(p) = a.strip_prefix("Path=") {
                    path = p.to_string();
                }
                if a == "Max-Age=0" {
                    delete = true;
                }
            }
            if delete {
                self.cookies.remove(name);
            } else {
                self.cookies
                    .insert(name.to_string(), (value.to_string(), path));
            }
        }
    }

    /// The Cookie header a browser sends for `path`.
    fn header_for(&self, path: &str) -> Option<String> {
        let v: Vec<String> = self
            .cookies
            .iter()
            .filter(|(_, (_, p))| path.starts_with(p.as_str()))
            .map(|(n, (v, _))| format!("{n}={v}"))
            .collect();
        (!v.is_empty()).then(|| v.join("; "))
    }

    fn names(&self) -> Vec<&str> {
        self.cookies.keys().map(String::as_str).collect()
    }
}

struct Gateway {
    vm: Vm,
    host: MockHost,
    next_ctx: u32,
    dead_random: Rc<std::cell::Cell<bool>>,
    answered: Vec<u32>,
}

fn base_config() -> Value {
    json!({
        "jwtRules": [{"issuer": ISS, "audiences": ["my-backend-client"],
                      "jwksUri": format!("{ISS}/protocol/openid-connect/certs"),
                      "forwardOriginalToken": true}],
        "policies": [{"name": "users-only", "action": "ALLOW", "rules": [{
            "when": [{"key": "request.auth.claims[realm_access][roles]", "values": ["user"]},
                     {"key": "request.auth.claims[email]", "values": ["alice@example.com"]}]}]}],
        "oidc": {"issuer": ISS, "clientId": CLIENT, "clientSecret": SECRET,
                 "cookieSecret": COOKIE_KEY, "scopes": ["openid", "email"],
                 "passThroughPaths": ["/public/*", "/healthz"], "timeout": "2s"}
    })
}

fn discovery_doc(end_session: bool) -> Vec<u8> {
    let mut d = json!({"issuer": ISS,
        "authorization_endpoint": format!("{ISS}/protocol/openid-connect/auth"),
        "token_endpoint": format!("{ISS}/protocol/openid-connect/token"),
        "jwks_uri": format!("{ISS}/protocol/openid-connect/certs")});
    if end_session {
        d["end_session_endpoint"] = json!(format!("{ISS}/protocol/openid-connect/logout"));
    }
    d.to_string().into_bytes()
}

impl Gateway {
    /// A configured VM whose discovery and JWKS calls were answered.
    fn new(config: Value, key: &Key) -> Gateway {
        let mut g = Gateway::configured(config);
        g.answer_setup(key, true);
        g
    }

    /// A configured VM; nothing answered yet.
    fn configured(config: Value) -> Gateway {
        let settings = Settings::from_json(config.to_string().as_bytes()).unwrap();
        let dead = Rc::new(std::cell::Cell::new(false));
        let engine = Engine::with_random(
            Rc::new(settings),
            Box::new(TestRandom {
                s: 0x9E37_79B9_7F4A_7C15,
                dead: dead.clone(),
            }),
        );
        let mut g = Gateway {
            vm: Vm::new(Some(engine), Box::new(WasmCrypto)),
            host: MockHost {
                now: T0,
                ..MockHost::default()
            },
            next_ctx: 100,
            dead_random: dead,
            answered: Vec::new(),
        };
        g.vm.on_configure(&mut g.host);
        g
    }

    fn answer_setup(&mut self, key: &Key, end_session: bool) {
        if let Some(t) = self.pending_call("/.well-known/openid-configuration") {
            self.respond(t, Some(200), &discovery_doc(end_session));
        }
        if let Some(t) = self.pending_call("/certs") {
            self.respond(t, Some(200), &jwks(&[key]));
        }
    }

    /// The token of the first call sent and not answered yet whose `:path` contains `part`.
    fn pending_call(&self, part: &str) -> Option<u32> {
        self.host
            .sent
            .iter()
            .find(|(t, c)| {
                !self.answered.contains(t)
                    && c.headers
                        .iter()
                        .any(|(k, v)| k == ":path" && v.contains(part))
            })
            .map(|(t, _)| *t)
    }

    fn call(&self, token: u32) -> HttpCall {
        self.host
            .sent
            .iter()
            .find(|(t, _)| *t == token)
            .unwrap()
            .1
            .clone()
    }

    fn respond(&mut self, token: u32, status: Option<u32>, body: &[u8]) {
        self.answered.push(token);
        self.host.current = None;
        self.vm
            .on_call_response(&mut self.host, token, status, body);
        self.host.current = None;
    }

    fn tick(&mut self, at_ms: u64) {
        self.host.now = at_ms;
        self.host.current = None;
        self.vm.on_tick(&mut self.host);
    }

    /// Sends a request; queued calls leave at once (the early tick).
    fn send(&mut self, req: RequestAttrs) -> u32 {
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        self.host.live.insert(ctx);
        self.host.current = Some(ctx);
        let v = self.vm.on_request(&mut self.host, ctx, req);
        self.host.current = None;
        if v == Verdict::Continue {
            self.host
                .events
                .entry(ctx)
                .or_default()
                .push(Event::Resumed);
        }
        let now = self.host.now;
        self.tick(now);
        ctx
    }

    fn outcome(&self, ctx: u32) -> Outcome {
        let ev = self.host.events.get(&ctx).cloned().unwrap_or_default();
        match ev.as_slice() {
            [] => Outcome::Waiting,
            [Event::Forwarded(f), Event::Resumed] => Outcome::Forwarded(f.clone()),
            [Event::Replied(r)] => Outcome::Replied(r.clone()),
            other => panic!("unexpected host actions {other:?}"),
        }
    }

    /// The request context ends; returns the response headers the filter adds.
    fn done(&mut self, ctx: u32) -> Vec<(String, String)> {
        let h = self.vm.take_response_headers(ctx).unwrap_or_default();
        self.host.live.remove(&ctx);
        self.vm.on_done(ctx);
        h
    }

    fn metric(&self, name: &str) -> u64 {
        self.host.metrics.get(name)
    }
}

fn page(path: &str, jar: &Jar) -> RequestAttrs {
    let mut r = RequestAttrs {
        method: "GET".into(),
        path: path.into(),
        host: APP.into(),
        scheme: "http".into(),
        headers: vec![(
            "accept".into(),
            "text/html,application/xhtml+xml,*/*;q=0.8".into(),
        )],
        ..Default::default()
    };
    if let Some(c) = jar.header_for(path) {
        r.headers.push(("cookie".into(), c));
    }
    r
}

fn xhr(method: &str, path: &str, jar: &Jar) -> RequestAttrs {
    let mut r = page(path, jar);
    r.method = method.into();
    r.headers.retain(|(n, _)| n != "accept");
    r.headers.push(("accept".into(), "application/json".into()));
    r
}

fn query(url: &str) -> BTreeMap<String, String> {
    let q = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn access_claims(user: &str, now_s: u64, lifetime: u64) -> Value {
    json!({"iss": ISS, "sub": format!("id-{user}"), "typ": "Bearer", "azp": CLIENT,
           "aud": ["my-backend-client", "account"], "exp": now_s + lifetime, "iat": now_s,
           "email": format!("{user}@example.com"), "realm_access": {"roles": ["user"]},
           "scope": "openid email"})
}

fn id_claims(user: &str, now_s: u64, nonce: &str) -> Value {
    json!({"iss": ISS, "sub": format!("id-{user}"), "typ": "ID", "aud": CLIENT, "azp": CLIENT,
           "exp": now_s + 300, "iat": now_s, "nonce": nonce, "email": format!("{user}@example.com")})
}

struct Tokens {
    access: String,
    refresh: String,
    id: String,
}

fn token_response(t: &Tokens, expires_in: u64) -> Vec<u8> {
    json!({"access_token": t.access, "expires_in": expires_in, "refresh_expires_in": 1800,
           "refresh_token": t.refresh, "token_type": "Bearer", "id_token": t.id,
           "not-before-policy": 0, "session_state": "sid", "scope": "openid email"})
    .to_string()
    .into_bytes()
}

/// A started login: the redirect's query and the browser's jar after it.
struct Login {
    params: BTreeMap<String, String>,
    location: String,
}

fn start_login(g: &mut Gateway, jar: &mut Jar, path: &str) -> Login {
    let ctx = g.send(page(path, jar));
    let r = g.outcome(ctx).reply().clone();
    assert_eq!(r.status, 302, "{r:?}");
    let location = header(&r, "location").unwrap().to_string();
    jar.apply(&set_cookies(&r.headers));
    g.done(ctx);
    Login {
        params: query(&location),
        location,
    }
}

fn callback_path(state: &str, code: &str) -> String {
    format!(
        "/oauth2/callback?state={state}&session_state=sid&iss={}&code={code}",
        urlenc(ISS)
    )
}

fn urlenc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Callback → the token call it sent (still unanswered).
fn callback(g: &mut Gateway, jar: &Jar, path: &str) -> (u32, Option<u32>) {
    let ctx = g.send(page(path, jar));
    (ctx, g.pending_call("/protocol/openid-connect/token"))
}

/// A full login of `user` from `path`: the tokens the provider issued, and where the browser
/// was sent back to.
fn login(g: &mut Gateway, jar: &mut Jar, key: &Key, user: &str, path: &str) -> Tokens {
    let (t, back) = login_to(g, jar, key, user, path);
    assert_eq!(back, path);
    t
}

fn login_to(g: &mut Gateway, jar: &mut Jar, key: &Key, user: &str, path: &str) -> (Tokens, String) {
    let l = start_login(g, jar, path);
    let now_s = g.host.now / 1000;
    let t = Tokens {
        access: key.sign(access_claims(user, now_s, 300)),
        refresh: format!("refresh-{user}-{now_s}"),
        id: key.sign(id_claims(user, now_s, &l.params["nonce"])),
    };
    let (ctx, call) = callback(g, jar, &callback_path(&l.params["state"], "the-code"));
    g.respond(
        call.expect("token call"),
        Some(200),
        &token_response(&t, 300),
    );
    let r = g.outcome(ctx).reply().clone();
    assert_eq!(r.status, 302, "{r:?}");
    jar.apply(&set_cookies(&r.headers));
    g.done(ctx);
    (t, header(&r, "location").unwrap().to_string())
}

// ---------------------------------------------------------------------------------------------

#[test]
fn login_callback_session_pass() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();

    // 1. A browser without a session goes to the provider.
    let l = start_login(&mut g, &mut jar, "/app/page?x=1");
    assert!(l
        .location
        .starts_with(&format!("{ISS}/protocol/openid-connect/auth?")));
    let p = &l.params;
    assert_eq!(p["response_type"], "code");
    assert_eq!(p["client_id"], CLIENT);
    assert_eq!(p["redirect_uri"], "http://app.example.com/oauth2/callback");
    assert_eq!(p["scope"], "openid email");
    assert_eq!(p["code_challenge_method"], "S256");
    for k in ["state", "nonce", "code_challenge"] {
        assert_eq!(p[k].len(), 43, "{k}");
    }
    assert_ne!(p["state"], p["nonce"]);
    let login_cookie = format!("{SESSION}_login_{}", &p["state"][..16]);
    assert_eq!(jar.names(), vec![login_cookie.as_str()]);
    assert_eq!(jar.cookies[&login_cookie].1, "/oauth2/callback");
    assert_eq!(g.metric("meshgate.sso.login_started"), 1);

    // 2. The callback exchanges the code with the verifier whose S256 is the challenge.
    let now_s = T0 / 1000;
    let t = Tokens {
        access: key.sign(access_claims("alice", now_s, 300)),
        refresh: "refresh-1".into(),
        id: key.sign(id_claims("alice", now_s, &p["nonce"])),
    };
    let (ctx, call) = callback(&mut g, &jar, &callback_path(&p["state"], "code-123"));
    assert_eq!(g.outcome(ctx).status(), 0, "waits for the token endpoint");
    let call = g.call(call.unwrap());
    assert_eq!(call.cluster, CLUSTER);
    let h: BTreeMap<_, _> = call.headers.iter().cloned().collect();
    assert_eq!(h[":method"], "POST");
    assert_eq!(h[":path"], format!("{OIDC}/token"));
    assert_eq!(h[":authority"], "keycloak.keycloak.svc.cluster.local");
    assert_eq!(h["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(
        h["authorization"],
        format!("Basic {}", STANDARD.encode(format!("{CLIENT}:{SECRET}")))
    );
    let body = String::from_utf8(call.body.clone().unwrap()).unwrap();
    assert_eq!(h["content-length"], body.len().to_string());
    let form = query(&format!("?{body}"));
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "code-123");
    assert_eq!(
        form["redirect_uri"],
        "http://app.example.com/oauth2/callback"
    );
    assert_eq!(form["client_id"], CLIENT);
    assert!(!form.contains_key("client_secret"), "secret goes in Basic");
    let verifier = &form["code_verifier"];
    assert_eq!(
        meshgate::jwt::b64url_encode(&Sha256::digest(verifier.as_bytes())),
        p["code_challenge"]
    );
    let token = g.pending_call("/token").unwrap();
    g.respond(token, Some(200), &token_response(&t, 300));

    // 3. A session cookie, the pending login cleared, back to the original path.
    let r = g.outcome(ctx).reply().clone();
    assert_eq!(r.status, 302);
    assert_eq!(header(&r, "location"), Some("/app/page?x=1"));
    assert_eq!(header(&r, "cache-control"), Some("no-store"));
    let cookies = set_cookies(&r.headers);
    assert_eq!(
        cookies[0],
        format!(
            "{login_cookie}=; Path=/oauth2/callback; Max-Age=0; HttpOnly; SameSite=Lax; Secure"
        )
    );
    assert!(cookies[1].starts_with(&format!("{SESSION}=")));
    assert!(
        cookies[1].ends_with("; Path=/; Max-Age=28800; HttpOnly; SameSite=Lax; Secure"),
        "{}",
        cookies[1]
    );
    jar.apply(&cookies);
    g.done(ctx);
    assert_eq!(jar.names(), vec![SESSION]);
    assert_eq!(g.metric("meshgate.sso.callback_ok"), 1);
    // Nothing secret in the cookie: it is encrypted.
    let value = &jar.cookies[SESSION].0;
    assert!(!value.contains(&t.access[..20]) && !value.contains("refresh-1"));

    // 4. Requests with the session reach the app as alice, with her access token, and without
    //    the session cookie; the app's own cookies pass.
    let mut req = page("/app/other", &jar);
    req.headers[1].1 = format!("theme=dark; {}; lang=en", req.headers[1].1);
    req.headers
        .push(("authorization".into(), "Basic Zm9vOmJhcg==".into()));
    let ctx = g.send(req);
    let f = g.outcome(ctx).forward().clone();
    assert_eq!(
        set_header(&f, "authorization"),
        Some(format!("Bearer {}", t.access).as_str())
    );
    assert_eq!(set_header(&f, "cookie"), Some("theme=dark; lang=en"));
    assert!(!f.remove_headers.contains(&"authorization".to_string()));
    assert_eq!(
        f.verified.as_ref().unwrap().identity.principal(),
        format!("{ISS}/id-alice")
    );
    assert!(
        g.done(ctx).is_empty(),
        "no refresh: nothing added to the response"
    );
    // Only the session cookie: the Cookie header is removed.
    let ctx = g.send(page("/app", &jar));
    assert!(g
        .outcome(ctx)
        .forward()
        .remove_headers
        .contains(&"cookie".to_string()));
    // An XHR with the session works the same way.
    let ctx = g.send(xhr("POST", "/api/save", &jar));
    assert_eq!(g.outcome(ctx).status(), 200);
    assert_eq!(g.metric("meshgate.sso.session_forwarded"), 3);
    assert_eq!(g.metric("meshgate.allowed"), 3);
    assert_eq!(
        g.host
            .sent
            .iter()
            .filter(|(_, c)| c.headers.iter().any(|(_, v)| v.ends_with("/token")))
            .count(),
        1,
        "a session needs no call to the provider"
    );
}

#[test]
fn the_policies_decide_on_the_sessions_token() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    login(&mut g, &mut jar, &key, "bob", "/");
    let ctx = g.send(page("/", &jar));
    let r = g.outcome(ctx).reply().clone();
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(g.metric("meshgate.denied.rbac_no_allow_match"), 1);
    assert_eq!(g.metric("meshgate.sso.callback_ok"), 1);
}

#[test]
fn requests_without_a_session_that_are_not_navigations_get_401() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let jar = Jar::default();
    for (req, what) in [
        (xhr("GET", "/api/data", &jar), "fetch/XHR"),
        (xhr("POST", "/api/data", &jar), "POST"),
        (
            {
                let mut r = page("/form", &jar);
                r.method = "POST".into();
                r
            },
            "form POST",
        ),
    ] {
        let ctx = g.send(req);
        let r = g.outcome(ctx).reply().clone();
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(
            header(&r, "www-authenticate").unwrap(),
            format!(
                "Bearer realm=\"http://{APP}{}\"",
                if what == "form POST" {
                    "/form"
                } else {
                    "/api/data"
                }
            )
        );
        assert_eq!(
            r.body,
            "Authentication required: sign in with a browser or send a bearer token"
        );
        assert!(header(&r, "location").is_none(), "never a redirect");
    }
    assert_eq!(g.metric("meshgate.sso.denied.login_required"), 3);
    assert_eq!(g.metric("meshgate.sso.login_started"), 0);
}

#[test]
fn bearer_requests_and_pass_through_paths_skip_sso() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    let token = key.sign(access_claims("alice", T0 / 1000, 300));
    // An API client with its own token: jwtRules/policies only, whatever the Accept header.
    let mut r = page("/api/data", &jar);
    r.headers
        .push(("authorization".into(), format!("Bearer {token}")));
    let ctx = g.send(r.clone());
    let f = g.outcome(ctx).forward().clone();
    assert_eq!(
        set_header(&f, "authorization"),
        None,
        "its own header is kept"
    );
    // A bad bearer token is jwtRules' 401, not a login.
    r.headers[1].1 = "Bearer not-a-jwt".into();
    let ctx = g.send(r);
    assert_eq!(
        g.outcome(ctx).reply().body,
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    );
    // Pass-through paths: no login, the policies decide (no token: 403).
    for path in ["/public/logo.png", "/healthz"] {
        let ctx = g.send(page(path, &jar));
        assert_eq!(g.outcome(ctx).reply().body, "RBAC: access denied", "{path}");
    }
    let ctx = g.send(page("/healthz/more", &jar));
    assert_eq!(g.outcome(ctx).status(), 302, "exact path only");
    assert_eq!(g.metric("meshgate.sso.login_started"), 1);
    // Our cookies never go upstream, even on requests SSO does not handle.
    login(&mut g, &mut jar, &key, "alice", "/");
    let mut r = page("/api/data", &jar);
    r.headers
        .push(("authorization".into(), format!("Bearer {token}")));
    let ctx = g.send(r);
    assert!(g
        .outcome(ctx)
        .forward()
        .remove_headers
        .contains(&"cookie".to_string()));
}

#[test]
fn refresh_before_expiry_shared_by_concurrent_requests() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    let first = login(&mut g, &mut jar, &key, "alice", "/");
    // 239 s later the token (300 s) still has more than refreshBefore (60 s): no refresh.
    g.host.now = T0 + 239_000;
    let ctx = g.send(page("/", &jar));
    assert_eq!(g.outcome(ctx).status(), 200);
    assert!(g.pending_call("/token").is_none());
    // At 241 s it is within 60 s of expiry: two requests, one refresh.
    g.host.now = T0 + 241_000;
    let a = g.send(page("/a", &jar));
    let b = g.send(xhr("GET", "/b", &jar));
    assert_eq!((g.outcome(a).status(), g.outcome(b).status()), (0, 0));
    let call = g.pending_call("/token").unwrap();
    let body = String::from_utf8(g.call(call).body.unwrap()).unwrap();
    let form = query(&format!("?{body}"));
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], first.refresh);
    let now_s = g.host.now / 1000;
    let second = Tokens {
        access: key.sign(access_claims("alice", now_s, 300)),
        refresh: "refresh-2".into(),
        id: key.sign(id_claims("alice", now_s, "n")),
    };
    g.respond(call, Some(200), &token_response(&second, 300));
    for ctx in [a, b] {
        let f = g.outcome(ctx).forward().clone();
        assert_eq!(
            set_header(&f, "authorization"),
            Some(format!("Bearer {}", second.access).as_str())
        );
        let added = g.done(ctx);
        let cookies = set_cookies(&added);
        assert_eq!(cookies.len(), 1, "{added:?}");
        assert!(cookies[0].starts_with(&format!("{SESSION}=")));
        // The session's absolute lifetime is unchanged by a refresh.
        assert!(cookies[0].contains("; Max-Age=28559;"), "{}", cookies[0]);
        if ctx == b {
            jar.apply(&cookies);
        }
    }
    assert_eq!(g.metric("meshgate.sso.refresh_ok"), 1);
    assert_eq!(
        g.host
            .sent
            .iter()
            .filter(
                |(_, c)| String::from_utf8_lossy(c.body.as_deref().unwrap_or_default())
                    .contains("grant_type=refresh_token")
            )
            .count(),
        1
    );
    // The new cookie carries the new tokens: no refresh until the new token nears expiry.
    g.host.now = T0 + 300_000;
    let ctx = g.send(page("/", &jar));
    assert_eq!(
        set_header(g.outcome(ctx).forward(), "authorization"),
        Some(format!("Bearer {}", second.access).as_str())
    );
    assert!(g.pending_call("/token").is_none());
}

#[test]
fn short_lived_tokens_refresh_at_half_their_life_not_on_every_request() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key); // refreshBefore 60 s (default)
    let mut jar = Jar::default();
    let l = start_login(&mut g, &mut jar, "/");
    let now_s = T0 / 1000;
    let t = Tokens {
        access: key.sign(access_claims("alice", now_s, 30)),
        refresh: "r".into(),
        id: key.sign(id_claims("alice", now_s, &l.params["nonce"])),
    };
    let (ctx, call) = callback(&mut g, &jar, &callback_path(&l.params["state"], "c"));
    g.respond(call.unwrap(), Some(200), &token_response(&t, 30));
    jar.apply(&set_cookies(&g.outcome(ctx).reply().headers));
    g.host.now = T0 + 14_000;
    let ctx = g.send(page("/", &jar));
    assert_eq!(
        g.outcome(ctx).status(),
        200,
        "15 s left of 30: no refresh yet"
    );
    g.host.now = T0 + 15_000;
    let ctx = g.send(page("/", &jar));
    assert_eq!(
        g.outcome(ctx).status(),
        0,
        "half the lifetime left: refresh"
    );
    assert!(g.pending_call("/token").is_some());
}

#[test]
fn a_session_whose_token_no_longer_verifies_signs_in_again() {
    let key = Key::new("k1", 3);
    let gone = Key::new("k1", 9); // same kid, another key: as after a rotation that dropped the old key
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    let l = start_login(&mut g, &mut jar, "/");
    let now_s = T0 / 1000;
    let t = Tokens {
        access: gone.sign(access_claims("alice", now_s, 300)),
        refresh: "r".into(),
        id: key.sign(id_claims("alice", now_s, &l.params["nonce"])),
    };
    let (ctx, call) = callback(&mut g, &jar, &callback_path(&l.params["state"], "c"));
    g.respond(call.unwrap(), Some(200), &token_response(&t, 300));
    jar.apply(&set_cookies(&g.outcome(ctx).reply().headers));
    // A page load: a new login, the session cookie cleared.
    let ctx = g.send(page("/page", &jar));
    let r = g.outcome(ctx).reply().clone();
    assert_eq!(r.status, 302);
    assert!(header(&r, "location")
        .unwrap()
        .contains("/protocol/openid-connect/auth?"));
    assert!(set_cookies(&r.headers).contains(&format!(
        "{SESSION}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure"
    )));
    // Anything else: the jwtRules' own answer.
    let ctx = g.send(xhr("GET", "/api", &jar));
    assert_eq!(
        (
            g.outcome(ctx).reply().status,
            g.outcome(ctx).reply().body.as_str()
        ),
        (401, "Jwt verification fails")
    );
    assert_eq!(g.metric("meshgate.denied.bad_signature"), 2);
}

#[test]
fn refresh_rejected_ends_the_session() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    login(&mut g, &mut jar, &key, "alice", "/");
    g.host.now = T0 + 250_000;
    let nav = g.send(page("/page", &jar));
    let api = g.send(xhr("GET", "/api", &jar));
    let call = g.pending_call("/token").unwrap();
    // Keycloak after a logout elsewhere: the token still has 50 s, but the session is over.
    g.respond(
        call,
        Some(400),
        br#"{"error":"invalid_grant","error_description":"Session not active"}"#,
    );
    let r = g.outcome(nav).reply().clone();
    assert_eq!(r.status, 302);
    assert!(header(&r, "location")
        .unwrap()
        .contains("/protocol/openid-connect/auth?"));
    let cookies = set_cookies(&r.headers);
    assert!(cookies.contains(&format!(
        "{SESSION}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure"
    )));
    let r = g.outcome(api).reply().clone();
    assert_eq!(r.status, 401);
    assert!(set_cookies(&r.headers)[0].starts_with(&format!("{SESSION}=; Path=/; Max-Age=0")));
    assert_eq!(g.metric("meshgate.sso.refresh_rejected"), 1);
}

#[test]
fn refresh_failure_keeps_a_valid_token_then_logs_in_again() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    let t = login(&mut g, &mut jar, &key, "alice", "/");
    // Token endpoint down while the access token still has 50 s: the request goes through.
    g.host.now = T0 + 250_000;
    let ctx = g.send(page("/", &jar));
    let call = g.pending_call("/token").unwrap();
    g.respond(call, Some(503), b"");
    assert_eq!(
        set_header(g.outcome(ctx).forward(), "authorization"),
        Some(format!("Bearer {}", t.access).as_str())
    );
    assert_eq!(g.metric("meshgate.sso.refresh_failed"), 1);
    // The failure is remembered briefly: the next request neither waits nor calls again.
    let ctx = g.send(page("/", &jar));
    assert_eq!(g.outcome(ctx).status(), 200);
    assert!(g.pending_call("/token").is_none());
    // Later, with the token expired and the endpoint answering garbage: a browser logs in
    // again, an API call gets 401.
    g.tick(T0 + 301_000);
    let nav = g.send(page("/", &jar));
    let api = g.send(xhr("GET", "/api", &jar));
    let call = g.pending_call("/token").unwrap();
    g.respond(call, Some(200), b"<html>proxy error</html>");
    assert_eq!(g.outcome(nav).status(), 302);
    assert_eq!(g.outcome(api).status(), 401);
    assert_eq!(g.metric("meshgate.sso.refresh_failed"), 2);
}

#[test]
fn refresh_that_never_answers_is_bounded() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    login(&mut g, &mut jar, &key, "alice", "/");
    g.host.now = T0 + 400_000; // token expired: the request must wait for the refresh
    let ctx = g.send(xhr("GET", "/api", &jar));
    assert_eq!(g.outcome(ctx).status(), 0);
    g.tick(T0 + 402_999);
    assert_eq!(g.outcome(ctx).status(), 0, "within timeout (2 s) + grace");
    g.tick(T0 + 403_000);
    let r = g.outcome(ctx).reply().clone();
    assert_eq!(
        (r.status, r.body.as_str()),
        (502, "Identity provider unavailable; try again later")
    );
    assert_eq!(g.vm.waiting(), 0);
}

#[test]
fn logout_clears_the_session_and_ends_the_provider_session() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    let t = login(&mut g, &mut jar, &key, "alice", "/");
    let ctx = g.send(page("/oauth2/logout", &jar));
    let r = g.outcome(ctx).reply().clone();
    assert_eq!(r.status, 302);
    let location = header(&r, "location").unwrap();
    assert!(location.starts_with(&format!("{ISS}/protocol/openid-connect/logout?")));
    let q = query(location);
    assert_eq!(q["id_token_hint"], t.id);
    assert_eq!(q["post_logout_redirect_uri"], format!("http://{APP}/"));
    assert_eq!(q["client_id"], CLIENT);
    jar.apply(&set_cookies(&r.headers));
    assert!(jar.names().is_empty());
    assert_eq!(g.metric("meshgate.sso.logout"), 1);
    // Without a session: the same redirect, without a hint.
    let ctx = g.send(page("/oauth2/logout", &jar));
    let q = query(header(g.outcome(ctx).reply(), "location").unwrap());
    assert!(!q.contains_key("id_token_hint"));
    // Next visit: a new login.
    let ctx = g.send(page("/", &jar));
    assert_eq!(g.outcome(ctx).status(), 302);
}

#[test]
fn logout_without_end_session_endpoint_goes_to_post_logout_uri() {
    let key = Key::new("k1", 3);
    let mut cfg = base_config();
    cfg["oidc"]["postLogoutRedirectUri"] = json!("/bye");
    let mut g = Gateway::configured(cfg);
    g.answer_setup(&key, false);
    let mut jar = Jar::default();
    login(&mut g, &mut jar, &key, "alice", "/");
    let ctx = g.send(page("/oauth2/logout", &jar));
    let r = g.outcome(ctx).reply().clone();
    assert_eq!(header(&r, "location"), Some("/bye"));
    jar.apply(&set_cookies(&r.headers));
    assert!(jar.names().is_empty());
}

/// Every way a callback can be wrong ends in a 401 (or 502 for the provider) with the reason,
/// no session cookie, and the pending login cleared.
#[test]
fn callback_rejections() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);

    let expect = |g: &mut Gateway, jar: &Jar, path: &str, status: u32, body: &str, metric: &str| {
        let before = g.metric(metric);
        let ctx = g.send(page(path, jar));
        let r = g.outcome(ctx).reply().clone();
        assert_eq!((r.status, r.body.as_str()), (status, body), "{path}");
        assert!(
            set_cookies(&r.headers)
                .iter()
                .all(|c| !c.starts_with(&format!("{SESSION}="))),
            "no session for {path}"
        );
        assert_eq!(g.metric(metric), before + 1, "{metric}");
        r
    };

    // A login started in another browser (this one has no cookie for the state).
    let mut other = Jar::default();
    let l = start_login(&mut g, &mut other, "/");
    let empty = Jar::default();
    expect(
        &mut g,
        &empty,
        &callback_path(&l.params["state"], "c"),
        401,
        "Login failed: no login in progress for this state in this browser (expired, or started elsewhere); open the page again to sign in",
        "meshgate.sso.denied.no_pending_login",
    );
    // This browser's cookie is for another state.
    let mut jar = Jar::default();
    let mine = start_login(&mut g, &mut jar, "/");
    expect(
        &mut g,
        &jar,
        &callback_path(&l.params["state"], "c"),
        401,
        "Login failed: no login in progress for this state in this browser (expired, or started elsewhere); open the page again to sign in",
        "meshgate.sso.denied.no_pending_login",
    );
    // A pending-login cookie under the right name, but sealed for another state (copied).
    let mut forged = jar.clone();
    let value = jar.cookies.values().next().unwrap().clone();
    forged.cookies.clear();
    forged.cookies.insert(
        format!("{SESSION}_login_{}", &l.params["state"][..16]),
        value,
    );
    expect(
        &mut g,
        &forged,
        &callback_path(&l.params["state"], "c"),
        401,
        "Login failed: no login in progress for this state in this browser (expired, or started elsewhere); open the page again to sign in",
        "meshgate.sso.denied.no_pending_login",
    );
    // Missing state, missing code, another issuer.
    expect(
        &mut g,
        &jar,
        "/oauth2/callback?code=c",
        401,
        "Login failed: invalid callback: no state parameter",
        "meshgate.sso.denied.bad_callback",
    );
    let state = &mine.params["state"];
    expect(
        &mut g,
        &jar,
        &format!("/oauth2/callback?state={state}"),
        401,
        "Login failed: invalid callback: no code parameter",
        "meshgate.sso.denied.bad_callback",
    );
    expect(
        &mut g,
        &jar,
        &format!("/oauth2/callback?state={state}&code=c&iss=http%3A%2F%2Fevil%2Frealms%2Fx"),
        401,
        "Login failed: invalid callback: the iss parameter names another issuer",
        "meshgate.sso.denied.bad_callback",
    );
    // The provider's error, reduced to a safe code; the pending login is cleared.
    let r = expect(
        &mut g,
        &jar,
        &format!("/oauth2/callback?error=access_denied%3Cb%3E&error_description=%3Cscript%3E&state={state}"),
        401,
        "Login failed at the identity provider: access_deniedb",
        "meshgate.sso.denied.provider_error",
    );
    assert_eq!(
        set_cookies(&r.headers),
        vec![format!(
            "{SESSION}_login_{}=; Path=/oauth2/callback; Max-Age=0; HttpOnly; SameSite=Lax; Secure",
            &state[..16]
        )]
    );
    assert!(
        g.pending_call("/token").is_none(),
        "no exchange for any of these"
    );
}

#[test]
fn callback_replay_and_expiry() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    let l = start_login(&mut g, &mut jar, "/");
    let path = callback_path(&l.params["state"], "c1");
    let (first, call) = callback(&mut g, &jar, &path);
    // The same callback again (an attacker with the URL and the cookie, or a double submit)
    // while the first exchange is in flight, and after.
    let ctx = g.send(page(&path, &jar));
    let r = g.outcome(ctx).reply().clone();
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "Login failed: this login response was already used")
    );
    g.respond(call.unwrap(), Some(400), br#"{"error":"invalid_grant"}"#);
    assert_eq!(
        g.outcome(first).reply().body,
        "Login failed: the identity provider rejected the authorization code: invalid_grant"
    );
    let ctx = g.send(page(&path, &jar));
    assert_eq!(g.outcome(ctx).reply().status, 401);
    assert_eq!(g.metric("meshgate.sso.denied.replayed"), 2);
    assert_eq!(g.metric("meshgate.sso.denied.token_rejected"), 1);
    // A login older than 10 minutes.
    let mut jar = Jar::default();
    let l = start_login(&mut g, &mut jar, "/");
    g.host.now += 601_000;
    let ctx = g.send(page(&callback_path(&l.params["state"], "c"), &jar));
    assert_eq!(
        g.outcome(ctx).reply().body,
        "Login failed: no login in progress for this state in this browser (expired, or started elsewhere); open the page again to sign in: the login took too long"
    );
}

#[test]
fn token_endpoint_faults_are_502_never_a_hang() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    for (status, body) in [
        (Some(500), &b"{\"error\":\"unknown_error\"}"[..]),
        (Some(200), b"this is not json"),
        (Some(200), b"{\"token_type\":\"Bearer\"}"),
        (None, b""),
    ] {
        let mut jar = Jar::default();
        let l = start_login(&mut g, &mut jar, "/");
        let (ctx, call) = callback(&mut g, &jar, &callback_path(&l.params["state"], "c"));
        g.respond(call.unwrap(), status, body);
        let r = g.outcome(ctx).reply().clone();
        assert_eq!(
            (r.status, r.body.as_str()),
            (502, "Identity provider unavailable; try again later"),
            "{status:?}"
        );
    }
    // Slow: the wait ends at timeout (2 s) + grace.
    let mut jar = Jar::default();
    let l = start_login(&mut g, &mut jar, "/");
    let (ctx, _) = callback(&mut g, &jar, &callback_path(&l.params["state"], "c"));
    let t = g.host.now;
    g.tick(t + 2_999);
    assert_eq!(g.outcome(ctx).status(), 0);
    g.tick(t + 3_000);
    assert_eq!(g.outcome(ctx).reply().status, 502);
    assert_eq!(g.metric("meshgate.sso.denied.provider_unavailable"), 5);
    assert_eq!(g.vm.waiting(), 0);
}

#[test]
fn id_token_checks() {
    let key = Key::new("k1", 3);
    let stranger = Key::new("k1", 9); // same kid, other key: the signature fails
    let mut g = Gateway::new(base_config(), &key);
    type MakeIdToken = Box<dyn Fn(&str, u64) -> Option<String>>;
    let cases: Vec<(&str, MakeIdToken)> = vec![
        (
            "nonce does not match this login",
            Box::new(|_, now| {
                Some(Key::new("k1", 3).sign(id_claims("alice", now, "another-nonce")))
            }),
        ),
        (
            "is not for this client (aud)",
            Box::new(|n, now| {
                let mut c = id_claims("alice", now, n);
                c["aud"] = json!("other-client");
                Some(Key::new("k1", 3).sign(c))
            }),
        ),
        (
            "is not for this client (azp)",
            Box::new(|n, now| {
                let mut c = id_claims("alice", now, n);
                c["aud"] = json!([CLIENT, "other"]);
                c["azp"] = json!("other");
                Some(Key::new("k1", 3).sign(c))
            }),
        ),
        (
            "has another issuer",
            Box::new(|n, now| {
                let mut c = id_claims("alice", now, n);
                c["iss"] = json!("http://evil/realms/x");
                Some(Key::new("k1", 3).sign(c))
            }),
        ),
        (
            "is expired",
            Box::new(|n, now| {
                let mut c = id_claims("alice", now, n);
                c["exp"] = json!(now - 61);
                Some(Key::new("k1", 3).sign(c))
            }),
        ),
        (
            "has no exp",
            Box::new(|n, now| {
                let mut c = id_claims("alice", now, n);
                c.as_object_mut().unwrap().remove("exp");
                Some(Key::new("k1", 3).sign(c))
            }),
        ),
        (
            "signature does not verify",
            Box::new(move |n, now| Some(stranger.sign(id_claims("alice", now, n)))),
        ),
        ("is malformed", Box::new(|_, _| Some("not.a.jwt".into()))),
        ("the token response has no id_token", Box::new(|_, _| None)),
    ];
    for (why, make) in cases {
        let mut jar = Jar::default();
        let l = start_login(&mut g, &mut jar, "/");
        let now = g.host.now / 1000;
        let (ctx, call) = callback(&mut g, &jar, &callback_path(&l.params["state"], "c"));
        let mut resp = json!({"access_token": key.sign(access_claims("alice", now, 300)),
                              "expires_in": 300, "token_type": "Bearer"});
        if let Some(id) = make(&l.params["nonce"], now) {
            resp["id_token"] = json!(id);
        }
        g.respond(call.unwrap(), Some(200), resp.to_string().as_bytes());
        let r = g.outcome(ctx).reply().clone();
        assert_eq!(
            (r.status, r.body.as_str()),
            (
                401,
                format!("Login failed: invalid ID token: {why}").as_str()
            )
        );
        assert!(set_cookies(&r.headers)
            .iter()
            .all(|c| !c.starts_with(&format!("{SESSION}="))));
    }
    assert_eq!(g.metric("meshgate.sso.denied.id_token_invalid"), 9);
    assert_eq!(g.metric("meshgate.sso.callback_ok"), 0);
}

#[test]
fn tampered_and_foreign_cookies_are_no_session() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    login(&mut g, &mut jar, &key, "alice", "/");
    let good = jar.cookies[SESSION].0.clone();
    let mut variants = Vec::new();
    // Flipped characters at the start, middle and end; truncated; garbage; empty.
    for i in [0, 5, good.len() / 2, good.len() - 1] {
        let mut b = good.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        variants.push(String::from_utf8(b).unwrap());
    }
    variants.push(good[..good.len() - 10].to_string());
    variants.push("not-a-cookie".into());
    variants.push(String::new());
    // A session sealed by another deployment's key.
    let mut foreign_cfg = base_config();
    foreign_cfg["oidc"]["cookieSecret"] = json!(OTHER_KEY);
    let mut other = Gateway::new(foreign_cfg, &key);
    let mut other_jar = Jar::default();
    login(&mut other, &mut other_jar, &key, "alice", "/");
    variants.push(other_jar.cookies[SESSION].0.clone());
    for v in &variants {
        let mut j = jar.clone();
        j.cookies.get_mut(SESSION).unwrap().0 = v.clone();
        let ctx = g.send(page("/", &j));
        let r = g.outcome(ctx).reply().clone();
        assert_eq!(r.status, 302, "new login for {v:?}");
        assert!(header(&r, "location").unwrap().contains("/auth?"));
        assert!(set_cookies(&r.headers).contains(&format!(
            "{SESSION}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure"
        )));
        let ctx = g.send(xhr("GET", "/api", &j));
        assert_eq!(g.outcome(ctx).reply().status, 401);
    }
    assert_eq!(
        g.metric("meshgate.sso.session_invalid"),
        2 * variants.len() as u64
    );
    // The good cookie still works.
    let ctx = g.send(page("/", &jar));
    assert_eq!(g.outcome(ctx).status(), 200);
}

#[test]
fn cookie_key_rotation_and_session_lifetime() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    login(&mut g, &mut jar, &key, "alice", "/");
    // The new deployment lists [new, old]: old sessions open, new ones are sealed with new.
    let mut cfg = base_config();
    cfg["oidc"]["cookieSecret"] = json!([OTHER_KEY, COOKIE_KEY]);
    cfg["oidc"]["sessionLifetime"] = json!("1h");
    let mut rotated = Gateway::new(cfg, &key);
    rotated.host.now = g.host.now;
    let ctx = rotated.send(page("/", &jar));
    assert_eq!(rotated.outcome(ctx).status(), 200);
    // Past sessionLifetime (1 h) the session is over, even with a valid refresh token.
    rotated.host.now = T0 + 3_600_000;
    let ctx = rotated.send(page("/", &jar));
    assert_eq!(rotated.outcome(ctx).status(), 302);
    // The same in the VM that sealed (and remembers) it, at the default 8 h.
    let ctx = g.send(page("/", &jar));
    assert_eq!(g.outcome(ctx).status(), 200, "remembered session");
    g.host.now = T0 + 8 * 3_600_000;
    let ctx = g.send(xhr("GET", "/api", &jar));
    assert_eq!(g.outcome(ctx).status(), 401);
}

#[test]
fn open_redirects_are_impossible() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    for (path, back) in [
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
        (
            "/ok/path?next=//evil.example",
            "/ok/path?next=//evil.example",
        ),
    ] {
        let mut jar = Jar::default();
        let (_, location) = login_to(&mut g, &mut jar, &key, "alice", path);
        assert_eq!(location, back, "{path}");
    }
    // The callback's own parameters cannot choose the destination either.
    let mut jar = Jar::default();
    let l = start_login(&mut g, &mut jar, "/home");
    let now_s = g.host.now / 1000;
    let t = Tokens {
        access: key.sign(access_claims("alice", now_s, 300)),
        refresh: "r".into(),
        id: key.sign(id_claims("alice", now_s, &l.params["nonce"])),
    };
    let path = format!(
        "{}&redirect_uri=https%3A%2F%2Fevil&return=%2F%2Fevil&rd=https%3A%2F%2Fevil",
        callback_path(&l.params["state"], "c")
    );
    let (ctx, call) = callback(&mut g, &jar, &path);
    g.respond(call.unwrap(), Some(200), &token_response(&t, 300));
    assert_eq!(header(g.outcome(ctx).reply(), "location"), Some("/home"));
}

#[test]
fn large_sessions_are_chunked() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    let l = start_login(&mut g, &mut jar, "/");
    let now = T0 / 1000;
    let mut claims = access_claims("alice", now, 300);
    claims["groups"] = json!((0..150)
        .map(|i| format!("group-with-a-long-name-{i}"))
        .collect::<Vec<_>>());
    let t = Tokens {
        access: key.sign(claims),
        refresh: "r".repeat(700),
        id: key.sign(id_claims("alice", now, &l.params["nonce"])),
    };
    assert!(t.access.len() > 6000);
    let (ctx, call) = callback(&mut g, &jar, &callback_path(&l.params["state"], "c"));
    g.respond(call.unwrap(), Some(200), &token_response(&t, 300));
    let r = g.outcome(ctx).reply().clone();
    let cookies = set_cookies(&r.headers);
    assert!(
        cookies.iter().all(|c| c.len() < 4000),
        "each Set-Cookie under 4,000 bytes"
    );
    jar.apply(&cookies);
    assert_eq!(
        jar.names(),
        vec![
            "meshgate_session.0",
            "meshgate_session.1",
            "meshgate_session.2"
        ]
    );
    let ctx = g.send(page("/", &jar));
    let f = g.outcome(ctx).forward().clone();
    assert_eq!(
        set_header(&f, "authorization"),
        Some(format!("Bearer {}", t.access).as_str())
    );
    assert!(f.remove_headers.contains(&"cookie".to_string()));
}

#[test]
fn discovery_wait_failure_and_recovery() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::configured(base_config());
    // A browser arrives before discovery answered: it waits, then is redirected.
    let jar = Jar::default();
    let ctx = g.send(page("/", &jar));
    assert_eq!(g.outcome(ctx).status(), 0);
    let d = g.pending_call("/.well-known/openid-configuration").unwrap();
    g.respond(d, Some(200), &discovery_doc(true));
    assert_eq!(g.outcome(ctx).status(), 302);
    // Another VM: discovery fails (issuer mismatch counts as failure), requests get 502 fast.
    let mut g = Gateway::configured(base_config());
    let ctx = g.send(page("/", &jar));
    let d = g.pending_call("/.well-known/openid-configuration").unwrap();
    g.respond(
        d,
        Some(200),
        br#"{"issuer":"http://evil/realms/x","authorization_endpoint":"http://evil/a","token_endpoint":"http://evil/t"}"#,
    );
    assert_eq!(g.outcome(ctx).reply().status, 502);
    assert_eq!(g.metric("meshgate.sso.discovery_failed"), 1);
    let ctx = g.send(page("/", &jar));
    assert_eq!(
        g.outcome(ctx).reply().status,
        502,
        "during backoff, at once"
    );
    // After the backoff the next tick retries; the provider is back.
    g.tick(T0 + 1_000);
    let d = g.pending_call("/.well-known/openid-configuration").unwrap();
    g.respond(d, Some(200), &discovery_doc(true));
    let _ = &key;
    let ctx = g.send(page("/", &jar));
    assert_eq!(g.outcome(ctx).status(), 302);
    assert_eq!(g.metric("meshgate.sso.discovery_ok"), 1);
}

#[test]
fn no_randomness_no_login() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    g.dead_random.set(true);
    let ctx = g.send(page("/", &Jar::default()));
    let r = g.outcome(ctx).reply().clone();
    assert_eq!(
        (r.status, r.body.as_str()),
        (502, "Login unavailable: no random source")
    );
    assert!(header(&r, "location").is_none());
}

#[test]
fn a_callback_whose_client_left_leaves_nothing_behind() {
    let key = Key::new("k1", 3);
    let mut g = Gateway::new(base_config(), &key);
    let mut jar = Jar::default();
    let l = start_login(&mut g, &mut jar, "/");
    let (ctx, call) = callback(&mut g, &jar, &callback_path(&l.params["state"], "c"));
    g.done(ctx);
    assert_eq!(g.vm.waiting(), 0);
    let now_s = g.host.now / 1000;
    let t = Tokens {
        access: key.sign(access_claims("alice", now_s, 300)),
        refresh: "r".into(),
        id: key.sign(id_claims("alice", now_s, &l.params["nonce"])),
    };
    g.respond(call.unwrap(), Some(200), &token_response(&t, 300));
    assert!(
        !g.host.events.contains_key(&ctx),
        "nobody answered a gone request"
    );
}

#[test]
fn public_client_and_post_auth() {
    let key = Key::new("k1", 3);
    for (secret, method, want_basic, want_secret_in_body) in [
        (None, None, false, false),
        (Some(SECRET), Some("client_secret_post"), false, true),
    ] {
        let mut cfg = base_config();
        let o = cfg["oidc"].as_object_mut().unwrap();
        o.remove("clientSecret");
        if let Some(s) = secret {
            o.insert("clientSecret".into(), json!(s));
        }
        if let Some(m) = method {
            o.insert("clientAuthMethod".into(), json!(m));
        }
        let mut g = Gateway::new(cfg, &key);
        let mut jar = Jar::default();
        let l = start_login(&mut g, &mut jar, "/");
        let (_, call) = callback(&mut g, &jar, &callback_path(&l.params["state"], "c"));
        let call = g.call(call.unwrap());
        assert_eq!(
            call.headers.iter().any(|(n, _)| n == "authorization"),
            want_basic
        );
        let body = String::from_utf8(call.body.unwrap()).unwrap();
        let form = query(&format!("?{body}"));
        assert_eq!(form["client_id"], CLIENT);
        assert_eq!(
            form.get("client_secret").map(String::as_str),
            want_secret_in_body.then_some(SECRET)
        );
    }
}

#[test]
fn config_errors_name_the_field() {
    let errs = |oidc: Value, env: &[(&str, &str)]| -> Vec<String> {
        let mut cfg = base_config();
        cfg["oidc"] = oidc;
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match Settings::from_json_with_env(cfg.to_string().as_bytes(), &|k| env.get(k).cloned()) {
            Ok(_) => vec![],
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    };
    let ok = || base_config()["oidc"].clone();
    let with = |k: &str, v: Value| {
        let mut o = ok();
        o[k] = v;
        o
    };
    let without = |k: &str| {
        let mut o = ok();
        o.as_object_mut().unwrap().remove(k);
        o
    };
    assert_eq!(errs(ok(), &[]), Vec::<String>::new());
    let first = |e: Vec<String>| e.into_iter().next().unwrap_or_default();
    assert!(
        first(errs(with("issuer", json!("http://other/realms/x")), &[])).starts_with(
            "oidc.issuer: \"http://other/realms/x\" must equal the issuer of one of jwtRules"
        )
    );
    assert_eq!(
        first(errs(without("clientId"), &[])),
        "oidc.clientId: is required"
    );
    assert_eq!(
        first(errs(with("scopes", json!(["email"])), &[])),
        "oidc.scopes: must contain \"openid\" (the ID token proves the login)"
    );
    assert_eq!(
        first(errs(with("cookieSecret", json!("c2hvcnQ=")), &[])),
        "oidc.cookieSecret: must be 32 bytes in base64 (openssl rand -base64 32)"
    );
    assert_eq!(
        first(errs(with("cookieSecret", json!([COOKIE_KEY, "bad"])), &[])),
        "oidc.cookieSecret[1]: must be 32 bytes in base64 (openssl rand -base64 32)"
    );
    assert!(first(errs(without("cookieSecret"), &[]))
        .starts_with("oidc.cookieSecret: cookieSecret or cookieSecretEnv is required"));
    assert!(
        first(errs(with("clientSecretEnv", json!("GW_SECRET")), &[])).starts_with(
            "oidc.clientSecretEnv: clientSecret and clientSecretEnv are mutually exclusive"
        )
    );
    let mut o = without("clientSecret");
    o["clientSecretEnv"] = json!("GW_SECRET");
    assert!(first(errs(o.clone(), &[])).starts_with(
        "oidc.clientSecretEnv: environment variable \"GW_SECRET\" of the Wasm VM is not set"
    ));
    assert_eq!(errs(o, &[("GW_SECRET", "s3cret")]), Vec::<String>::new());
    let mut o = without("cookieSecret");
    o["cookieSecretEnv"] = json!("COOKIE_KEYS");
    assert_eq!(
        errs(
            o.clone(),
            &[("COOKIE_KEYS", &format!("{OTHER_KEY},{COOKIE_KEY}"))]
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        first(errs(o, &[("COOKIE_KEYS", "nope")])),
        "oidc.cookieSecretEnv ($COOKIE_KEYS): must be 32 bytes in base64 (openssl rand -base64 32)"
    );
    assert!(first(errs(with("callbackPath", json!("oauth2/cb")), &[]))
        .starts_with("oidc.callbackPath: \"oauth2/cb\" must be a path"));
    assert_eq!(
        first(errs(with("logoutPath", json!("/oauth2/callback")), &[])),
        "oidc.logoutPath: must differ from callbackPath"
    );
    assert!(
        first(errs(with("passThroughPaths", json!(["/oauth2/*"])), &[]))
            .starts_with("oidc.passThroughPaths: matches callbackPath")
    );
    assert!(
        first(errs(with("postLogoutRedirectUri", json!("//evil")), &[]))
            .starts_with("oidc.postLogoutRedirectUri:")
    );
    assert!(first(errs(with("tokenEndpoint", json!("ftp://x/t")), &[]))
        .starts_with("oidc.tokenEndpoint:"));
    assert!(first(errs(with("sessionLifetime", json!("8 hours")), &[]))
        .starts_with("oidc.sessionLifetime:"));
    assert!(first(errs(with("cookieName", json!("a;b")), &[])).starts_with("oidc.cookieName:"));
    let e = first(errs(with("bogus", json!(1)), &[]));
    assert!(e.starts_with("oidc") && e.contains("bogus"), "{e}");
    // The rule must read `Authorization: Bearer`, where the session puts the token.
    let mut cfg = base_config();
    cfg["jwtRules"][0]["fromHeaders"] = json!([{"name": "x-token", "prefix": ""}]);
    let e = Settings::from_json(cfg.to_string().as_bytes()).unwrap_err();
    assert!(
        e[0].to_string().starts_with("oidc.issuer: jwtRules[0]"),
        "{e:?}"
    );
    // Secrets never appear in messages.
    let all = errs(with("cookieSecret", json!("c2VjcmV0LXZhbHVl")), &[]).join("\n");
    assert!(!all.contains("c2VjcmV0LXZhbHVl"));
}

#[test]
fn without_oidc_nothing_changes() {
    let key = Key::new("k1", 3);
    let mut cfg = base_config();
    cfg.as_object_mut().unwrap().remove("oidc");
    let mut g = Gateway::new(cfg, &key);
    let ctx = g.send(page("/", &Jar::default()));
    assert_eq!(g.outcome(ctx).reply().body, "RBAC: access denied");
    assert!(g
        .host
        .sent
        .iter()
        .all(|(_, c)| !c.headers.iter().any(|(_, v)| v.contains("well-known"))));
}
