//! Native tests of the per-VM runtime the proxy-wasm adapter drives (`meshgate::vm`): pausing and
//! resuming requests, which request a call's outcome wakes, wait expiry, refused and lost calls.
//! `MockHost` stands in for Envoy: it records every host action per request context.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate::calls::HttpCall;
use meshgate::config::Settings;
use meshgate::engine::{Engine, Forward};
use meshgate::error::Reply;
use meshgate::jwt::crypto::WasmCrypto;
use meshgate::metrics::{CountingSink, MetricSink};
use meshgate::request::RequestAttrs;
use meshgate::vm::{Host, Verdict, Vm, MAX_WAITING};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

mod common;
use common::keys::{jwks, Key};

const BASE: &str = "http://keycloak.keycloak.svc.cluster.local/realms";
const T0: u64 = 1_800_000_000_000;

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Forwarded(Forward),
    Resumed,
    Replied(u32, String),
}

#[derive(Default)]
struct MockHost {
    now: u64,
    next_token: u32,
    /// Calls sent, by token, in order.
    sent: Vec<(u32, HttpCall)>,
    refuse: BTreeSet<String>,
    /// Request contexts that still exist.
    live: BTreeSet<u32>,
    /// The effective context (`enter`): where replies, resumes and header changes go.
    current: Option<u32>,
    /// Set while a request-context callback (on_http_request_headers) runs.
    in_request_callback: bool,
    events: BTreeMap<u32, Vec<Event>>,
    /// Host actions taken outside any request context (must stay empty).
    stray: Vec<Event>,
    ticks_soon: u32,
    ticks_regular: u32,
    metrics: CountingSink,
}

impl MockHost {
    fn record(&mut self, e: Event) {
        match self.current {
            Some(ctx) => self.events.entry(ctx).or_default().push(e),
            None => self.stray.push(e),
        }
    }

    fn events(&self, ctx: u32) -> &[Event] {
        self.events.get(&ctx).map_or(&[], |v| v.as_slice())
    }

    /// The last call sent whose `:path` contains `part`.
    fn call_to(&self, part: &str) -> (u32, HttpCall) {
        self.sent
            .iter()
            .rev()
            .find(|(_, c)| {
                c.headers
                    .iter()
                    .any(|(k, v)| k == ":path" && v.contains(part))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no call to {part}"))
    }
}

impl Host for MockHost {
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn dispatch(&mut self, call: &HttpCall) -> Result<u32, String> {
        // The host makes every call on the root context, whatever the effective context
        // (proxy-wasm-cpp-host `http_call`: `WASM_CONTEXT(..)->root_context()`), so a root
        // callback may send after entering a request; a request callback must not send at all.
        assert!(
            !self.in_request_callback,
            "calls are sent from root callbacks only"
        );
        if self.refuse.contains(&call.cluster) {
            return Err("BadArgument".into());
        }
        self.next_token += 1;
        self.sent.push((self.next_token, call.clone()));
        Ok(self.next_token)
    }
    fn tick_soon(&mut self) {
        self.ticks_soon += 1;
    }
    fn tick_regularly(&mut self) {
        self.ticks_regular += 1;
    }
    fn enter(&mut self, ctx: u32) -> bool {
        if self.live.contains(&ctx) {
            self.current = Some(ctx);
            true
        } else {
            false
        }
    }
    fn forward(&mut self, fwd: &Forward) {
        self.record(Event::Forwarded(fwd.clone()));
    }
    fn resume(&mut self) {
        self.record(Event::Resumed);
    }
    fn reply(&mut self, reply: &Reply) {
        self.record(Event::Replied(reply.status, reply.body.clone()));
    }
    fn metrics(&mut self) -> &mut dyn MetricSink {
        &mut self.metrics
    }
}

struct Proxy {
    vm: Vm,
    host: MockHost,
    next_ctx: u32,
}

impl Proxy {
    /// Configures a VM (sending the configure-time fetches) at time T0.
    fn new(config: Value) -> Proxy {
        Proxy::refusing(config, &[])
    }

    /// The same, with a host that refuses calls to these clusters (unknown to the proxy).
    fn refusing(config: Value, clusters: &[&str]) -> Proxy {
        let settings = Settings::from_json(config.to_string().as_bytes()).unwrap();
        let mut p = Proxy {
            vm: Vm::new(Some(Engine::new(Rc::new(settings))), Box::new(WasmCrypto)),
            host: MockHost {
                now: T0,
                refuse: clusters.iter().map(|c| c.to_string()).collect(),
                ..MockHost::default()
            },
            next_ctx: 100,
        };
        p.vm.on_configure(&mut p.host);
        p
    }

    /// A request arrives (request-context callback).
    fn request(&mut self, token: &str) -> (u32, Verdict) {
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        self.host.live.insert(ctx);
        self.host.current = Some(ctx);
        self.host.in_request_callback = true;
        let req = RequestAttrs {
            method: "GET".into(),
            path: "/data".into(),
            host: "backend".into(),
            scheme: "http".into(),
            headers: vec![("authorization".into(), format!("Bearer {token}"))],
            ..Default::default()
        };
        let v = self.vm.on_request(&mut self.host, ctx, req);
        self.host.current = None;
        self.host.in_request_callback = false;
        (ctx, v)
    }

    /// An outbound request (the workload calling `host`) arrives on a sidecar's outbound listener.
    fn outbound(&mut self, host: &str) -> (u32, Verdict) {
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        self.host.live.insert(ctx);
        self.host.current = Some(ctx);
        self.host.in_request_callback = true;
        let req = RequestAttrs {
            method: "GET".into(),
            path: "/data".into(),
            host: host.into(),
            scheme: "http".into(),
            outbound: true,
            ..Default::default()
        };
        let v = self.vm.on_request(&mut self.host, ctx, req);
        self.host.current = None;
        self.host.in_request_callback = false;
        (ctx, v)
    }

    /// A call response reaches the root context.
    fn respond(&mut self, token: u32, status: Option<u32>, body: &[u8]) {
        self.host.current = None;
        self.vm
            .on_call_response(&mut self.host, token, status, body);
        self.host.current = None;
    }

    fn tick(&mut self, at_ms: u64) {
        self.host.now = at_ms;
        self.host.current = None;
        self.vm.on_tick(&mut self.host);
        self.host.current = None;
    }

    /// The request context ends (its stream is destroyed).
    fn done(&mut self, ctx: u32) {
        self.host.live.remove(&ctx);
        self.vm.on_done(ctx);
    }
}

fn claims(iss: &str, now_ms: u64) -> Value {
    json!({"iss": iss, "sub": "u-1", "aud": "my-backend-client", "exp": now_ms / 1000 + 300,
           "iat": now_ms / 1000})
}

fn discovery_doc(realm: &str) -> Vec<u8> {
    json!({"issuer": format!("{BASE}/{realm}"),
           "jwks_uri": format!("{BASE}/{realm}/protocol/openid-connect/certs")})
    .to_string()
    .into_bytes()
}

fn discovered_rules(realms: &[&str]) -> Value {
    json!({"jwtRules": realms.iter().map(|r| json!({"issuer": format!("{BASE}/{r}")})).collect::<Vec<_>>()})
}

fn resumed_and_forwarded(events: &[Event]) -> bool {
    matches!(events, [Event::Forwarded(_), Event::Resumed])
}

/// Issue "wakeup": six issuers found by discovery; five answer first, the sixth later but well
/// within its timeout. The request for the sixth issuer must wait for its own issuer only.
#[test]
fn slow_issuer_request_is_not_failed_by_other_issuers_keys() {
    let realms = ["r0", "r1", "r2", "r3", "r4", "r5"];
    let mut p = Proxy::new(discovered_rules(&realms));
    assert_eq!(
        p.host.sent.len(),
        6,
        "one discovery per issuer at configure time"
    );
    let slow = Key::new("k5", 5);
    let (ctx, v) = p.request(&slow.sign(claims(&format!("{BASE}/r5"), T0)));
    assert_eq!(v, Verdict::Pause);
    assert_eq!(
        p.host.ticks_soon, 0,
        "the discovery is already in flight: nothing to send"
    );

    // The other five issuers: discovery, then JWKS, at +1 s. Ten responses, none of them r5's.
    p.host.now = T0 + 1_000;
    for (i, r) in realms[..5].iter().enumerate() {
        let (token, _) = p.host.call_to(&format!("/realms/{r}/.well-known"));
        p.respond(token, Some(200), &discovery_doc(r));
        let (token, _) = p.host.call_to(&format!("/realms/{r}/protocol"));
        let key = Key::new(&format!("k{i}"), i as u8 + 1);
        p.respond(token, Some(200), &jwks(&[&key]));
        assert_eq!(p.host.events(ctx), &[], "not woken by {r}");
    }
    assert_eq!(p.vm.waiting(), 1);
    p.tick(T0 + 2_000);
    assert_eq!(p.host.events(ctx), &[]);

    // r5 answers at +2.5 s (its timeout is 5 s).
    p.host.now = T0 + 2_500;
    let (token, _) = p.host.call_to("/realms/r5/.well-known");
    p.respond(token, Some(200), &discovery_doc("r5"));
    assert_eq!(
        p.host.events(ctx),
        &[],
        "discovery alone does not settle the keys"
    );
    let (token, _) = p.host.call_to("/realms/r5/protocol");
    p.respond(token, Some(200), &jwks(&[&slow]));
    assert!(
        resumed_and_forwarded(p.host.events(ctx)),
        "{:?}",
        p.host.events(ctx)
    );
    assert_eq!(p.vm.waiting(), 0);
    assert_eq!(p.host.metrics.get("meshgate.allowed"), 1);
    assert_eq!(p.host.metrics.get("meshgate.denied.jwks_unavailable"), 0);
    assert_eq!(p.host.metrics.get("meshgate.jwks_fetch.ok"), 6);
    assert!(p.host.stray.is_empty());
}

#[test]
fn another_issuers_failure_does_not_wake_the_request() {
    let mut p = Proxy::new(discovered_rules(&["a", "b"]));
    let ka = Key::new("ka", 1);
    let (ctx, _) = p.request(&ka.sign(claims(&format!("{BASE}/a"), T0)));
    let (token, _) = p.host.call_to("/realms/b/.well-known");
    p.respond(token, Some(500), b"");
    assert_eq!(p.host.events(ctx), &[]);
    assert_eq!(p.host.metrics.get("meshgate.jwks_fetch.failed"), 1);
    let (token, _) = p.host.call_to("/realms/a/.well-known");
    p.respond(token, Some(200), &discovery_doc("a"));
    let (token, _) = p.host.call_to("/realms/a/protocol");
    p.respond(token, Some(200), &jwks(&[&ka]));
    assert!(resumed_and_forwarded(p.host.events(ctx)));
}

#[test]
fn own_issuers_failure_answers_the_request_at_once() {
    let mut p = Proxy::new(discovered_rules(&["a"]));
    let ka = Key::new("ka", 1);
    let (ctx, _) = p.request(&ka.sign(claims(&format!("{BASE}/a"), T0)));
    p.host.now = T0 + 300;
    let (token, _) = p.host.call_to("/realms/a/.well-known");
    p.respond(token, Some(503), b"");
    assert_eq!(
        p.host.events(ctx),
        &[Event::Replied(401, "Jwks remote fetch is failed".into())]
    );
    assert_eq!(p.host.metrics.get("meshgate.denied.jwks_unavailable"), 1);
    assert_eq!(p.vm.waiting(), 0);
}

#[test]
fn wait_ends_at_the_rules_timeout() {
    let mut p = Proxy::new(json!({"jwtRules": [{"issuer": format!("{BASE}/a"), "timeout": "2s"}]}));
    let ka = Key::new("ka", 1);
    let (ctx, _) = p.request(&ka.sign(claims(&format!("{BASE}/a"), T0)));
    p.tick(T0 + 1_999);
    assert_eq!(p.host.events(ctx), &[], "still within its 2 s");
    p.tick(T0 + 2_000);
    assert_eq!(
        p.host.events(ctx),
        &[Event::Replied(401, "Jwks remote fetch is failed".into())]
    );
    assert_eq!(p.host.metrics.get("meshgate.denied.jwks_unavailable"), 1);
    // The late discovery answer is still used: the next request does not wait for nothing.
    let (token, _) = p.host.call_to("/realms/a/.well-known");
    p.respond(token, Some(200), &discovery_doc("a"));
    let (token, _) = p.host.call_to("/realms/a/protocol");
    p.respond(token, Some(200), &jwks(&[&ka]));
    let (_, v) = p.request(&ka.sign(claims(&format!("{BASE}/a"), T0)));
    assert_eq!(v, Verdict::Continue);
}

#[test]
fn a_request_that_needs_a_fetch_has_it_sent_from_the_root_soon() {
    let ka = Key::new("ka", 1);
    let issuer = format!("{BASE}/a");
    let mut p = Proxy::new(json!({"jwtRules": [{"issuer": issuer,
        "jwksUri": format!("{issuer}/protocol/openid-connect/certs")}]}));
    let (token, _) = p.host.call_to("/certs");
    p.respond(token, Some(200), &jwks(&[&ka]));
    // A rotated key: the unknown kid needs a refetch, which the request cannot send itself.
    let kb = Key::new("kb", 2);
    let sent_before = p.host.sent.len();
    let (ctx, v) = p.request(&kb.sign(claims(&issuer, T0)));
    assert_eq!(v, Verdict::Pause);
    assert_eq!(
        p.host.sent.len(),
        sent_before,
        "nothing sent from the request context"
    );
    assert_eq!(p.host.ticks_soon, 1);
    // A second request with the same unknown kid waits for the same refetch.
    let (ctx2, _) = p.request(&kb.sign(claims(&issuer, T0)));
    assert_eq!(p.host.ticks_soon, 1, "one early tick is enough");
    p.tick(T0 + 1);
    assert_eq!(p.host.ticks_regular, 1);
    assert_eq!(p.host.sent.len(), sent_before + 1, "one refetch for both");
    // The first client hangs up before the keys arrive: its context is gone.
    p.done(ctx);
    let (token, _) = p.host.call_to("/certs");
    p.respond(token, Some(200), &jwks(&[&ka, &kb]));
    assert_eq!(p.host.events(ctx), &[]);
    assert!(resumed_and_forwarded(p.host.events(ctx2)));
}

#[test]
fn a_refused_call_answers_its_waiting_requests() {
    let mut p = Proxy::refusing(
        json!({"jwtRules": [{"issuer": format!("{BASE}/a"),
            "jwksUri": format!("{BASE}/a/certs"), "jwksCluster": "no-such-cluster"}]}),
        &["no-such-cluster"],
    );
    // The configure-time fetch was refused: the rule is in backoff, requests fail closed.
    assert!(p.host.sent.is_empty());
    assert_eq!(p.host.metrics.get("meshgate.jwks_fetch.failed"), 1);
    let ka = Key::new("ka", 1);
    let (ctx, v) = p.request(&ka.sign(claims(&format!("{BASE}/a"), T0)));
    assert_eq!(v, Verdict::Pause);
    assert_eq!(
        p.host.events(ctx),
        &[Event::Replied(401, "Jwks remote fetch is failed".into())]
    );
    // After the backoff a request starts a new fetch; the host refuses it again.
    p.host.now = T0 + 1_500;
    let (ctx, _) = p.request(&ka.sign(claims(&format!("{BASE}/a"), T0)));
    assert_eq!(p.host.events(ctx), &[]);
    p.tick(T0 + 1_501);
    assert_eq!(
        p.host.events(ctx),
        &[Event::Replied(401, "Jwks remote fetch is failed".into())]
    );
    assert_eq!(p.host.metrics.get("meshgate.denied.jwks_unavailable"), 2);
}

#[test]
fn paused_requests_are_bounded() {
    let mut p = Proxy::new(discovered_rules(&["a"]));
    let ka = Key::new("ka", 1);
    let t = ka.sign(claims(&format!("{BASE}/a"), T0));
    for _ in 0..MAX_WAITING {
        assert_eq!(p.request(&t).1, Verdict::Pause);
    }
    let (ctx, _) = p.request(&t);
    assert_eq!(
        p.host.events(ctx),
        &[Event::Replied(401, "Jwks remote fetch is failed".into())]
    );
    assert_eq!(p.host.metrics.get("meshgate.denied.jwks_unavailable"), 1);
    assert_eq!(p.vm.waiting(), MAX_WAITING);
}

// ---------------------------------------------------------------------------------------------
// egress: outbound requests paused for a target's token

const TOKEN_PATH: &str = "/realms/myrealm/protocol/openid-connect/token";

fn egress_config(extra: Value) -> Value {
    let mut t = json!({"name": "backend", "hosts": ["backend"], "clientId": "frontend",
        "clientSecret": "frontend-secret", "timeout": "2s",
        "tokenEndpoint": format!("{BASE}/myrealm/protocol/openid-connect/token")});
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    json!({"jwtRules": [{"issuer": format!("{BASE}/a")}], "egress": [t]})
}

fn token_response(token: &str) -> Vec<u8> {
    json!({"access_token": token, "token_type": "Bearer", "expires_in": 300})
        .to_string()
        .into_bytes()
}

fn authorization(events: &[Event]) -> Option<String> {
    match events {
        [Event::Forwarded(f), Event::Resumed] => f
            .set_headers
            .iter()
            .find(|(n, _)| &**n == "authorization")
            .map(|(_, v)| v.to_string()),
        other => panic!("expected forwarded and resumed, got {other:?}"),
    }
}

#[test]
fn outbound_requests_wait_for_the_token_and_only_for_it() {
    let mut p = Proxy::new(egress_config(json!({})));
    assert_eq!(
        p.host.sent.len(),
        2,
        "discovery for the rule, token for the target"
    );
    let waiting: Vec<u32> = (0..10).map(|_| p.outbound("backend").0).collect();
    assert_eq!(p.vm.waiting(), 10);
    assert_eq!(p.host.ticks_soon, 0, "the token call is already in flight");
    // The JWT rule's discovery fails: it settles keys, not the token.
    let (t, _) = p.host.call_to("/realms/a/.well-known");
    p.respond(t, Some(500), b"");
    assert_eq!(p.vm.waiting(), 10);
    let (t, call) = p.host.call_to(TOKEN_PATH);
    assert_eq!(
        call.body.as_deref(),
        Some(&b"grant_type=client_credentials"[..])
    );
    p.host.now = T0 + 300;
    p.respond(t, Some(200), &token_response("tok-1"));
    for ctx in waiting {
        assert_eq!(
            authorization(p.host.events(ctx)).as_deref(),
            Some("Bearer tok-1")
        );
    }
    assert_eq!(p.vm.waiting(), 0);
    assert_eq!(p.host.metrics.get("meshgate.egress.backend.waited"), 10);
    assert_eq!(p.host.metrics.get("meshgate.egress.backend.injected"), 10);
    assert_eq!(p.host.metrics.get("meshgate.egress.backend.fetch_ok"), 1);
    // Later requests do not pause.
    let (ctx, v) = p.outbound("backend");
    assert_eq!(v, Verdict::Continue);
    assert!(matches!(p.host.events(ctx), [Event::Forwarded(_)]));
    // Not a target: forwarded untouched, no token.
    let (ctx, v) = p.outbound("elsewhere");
    assert_eq!(v, Verdict::Continue);
    assert_eq!(p.host.events(ctx), &[Event::Forwarded(Forward::default())]);
    assert!(p.host.stray.is_empty());
}

#[test]
fn outbound_wait_ends_at_the_targets_timeout_with_on_error() {
    for (on_error, want) in [("deny", 503), ("allow", 200)] {
        let mut p = Proxy::new(egress_config(json!({"onError": on_error})));
        let (ctx, v) = p.outbound("backend");
        assert_eq!(v, Verdict::Pause);
        p.tick(T0 + 1_999);
        assert_eq!(p.host.events(ctx), &[], "still within its 2 s");
        p.tick(T0 + 2_000);
        match want {
            503 => {
                assert_eq!(
                    p.host.events(ctx),
                    &[Event::Replied(503, "meshgate egress: no access token for target \"backend\": the token endpoint did not answer within 2000 ms".into())]
                );
                assert_eq!(p.host.metrics.get("meshgate.egress.backend.denied"), 1);
            }
            _ => {
                assert_eq!(
                    authorization(p.host.events(ctx)),
                    None,
                    "forwarded without a token"
                );
                assert_eq!(p.host.metrics.get("meshgate.egress.backend.no_token"), 1);
            }
        }
        assert_eq!(p.vm.waiting(), 0);
        assert_eq!(p.host.metrics.get("meshgate.denied.jwks_unavailable"), 0);
    }
}

#[test]
fn a_refused_token_call_answers_the_waiting_request_at_once() {
    let mut p = Proxy::refusing(
        egress_config(json!({"cluster": "no-such-cluster"})),
        &["no-such-cluster"],
    );
    assert_eq!(
        p.host.metrics.get("meshgate.egress.backend.fetch_failed"),
        1
    );
    // In backoff: answered without waiting.
    let (ctx, v) = p.outbound("backend");
    assert_eq!(v, Verdict::Pause);
    assert_eq!(
        p.host.events(ctx),
        &[Event::Replied(503, "meshgate egress: no access token for target \"backend\": the call could not be sent (no such cluster?)".into())]
    );
    // After the backoff the request starts a fetch, sent from the root, refused again.
    p.host.now = T0 + 1_500;
    let (ctx, _) = p.outbound("backend");
    assert_eq!(p.host.events(ctx), &[]);
    assert_eq!(p.host.ticks_soon, 1);
    p.tick(T0 + 1_501);
    assert!(matches!(p.host.events(ctx), [Event::Replied(503, _)]));
    assert_eq!(p.host.metrics.get("meshgate.egress.backend.denied"), 2);
}

#[test]
fn a_request_that_ends_while_waiting_is_forgotten() {
    let issuer = format!("{BASE}/a");
    let mut p = Proxy::new(json!({"jwtRules": [{"issuer": issuer, "timeout": "2s"}]}));
    let ka = Key::new("ka", 1);
    let (gone, v) = p.request(&ka.sign(claims(&issuer, T0)));
    assert_eq!(v, Verdict::Pause);
    let (kept, _) = p.request(&ka.sign(claims(&issuer, T0)));
    assert_eq!(p.vm.waiting(), 2);
    // The client hangs up: the stream is destroyed while the request waits.
    p.done(gone);
    assert_eq!(p.vm.waiting(), 1);
    let (token, _) = p.host.call_to("/realms/a/.well-known");
    p.respond(token, Some(200), &discovery_doc("a"));
    let (token, _) = p.host.call_to("/realms/a/protocol");
    p.respond(token, Some(200), &jwks(&[&ka]));
    assert_eq!(
        p.host.events(gone),
        &[],
        "nothing is done for a context that is gone"
    );
    assert!(resumed_and_forwarded(p.host.events(kept)));
    // Nor does its deadline fire later.
    p.tick(T0 + 10_000);
    assert_eq!(p.host.events(gone), &[]);
    assert_eq!(p.host.metrics.get("meshgate.allowed"), 1);
    assert_eq!(p.host.metrics.get("meshgate.denied.jwks_unavailable"), 0);
    assert!(p.host.stray.is_empty());
}

#[test]
fn a_response_for_an_unknown_token_changes_nothing() {
    let issuer = format!("{BASE}/a");
    let mut p = Proxy::new(json!({"jwtRules": [{"issuer": issuer,
        "jwksUri": format!("{issuer}/protocol/openid-connect/certs")}]}));
    let ka = Key::new("ka", 1);
    let (ctx, _) = p.request(&ka.sign(claims(&issuer, T0)));
    let sent = p.host.sent.len();
    // A token never handed out (or already answered): a JWKS that would let the request through,
    // and a failure that would fail it; neither may be taken for the real call.
    p.respond(9_999, Some(200), &jwks(&[&ka]));
    p.respond(9_998, Some(500), b"");
    assert_eq!(p.host.events(ctx), &[]);
    assert_eq!(p.vm.waiting(), 1);
    assert_eq!(p.host.sent.len(), sent, "no call sent because of them");
    assert_eq!(p.host.metrics.get("meshgate.jwks_fetch.ok"), 0);
    assert_eq!(p.host.metrics.get("meshgate.jwks_fetch.failed"), 0);
    // The real response still counts, once; a repeat of it is an unknown token too.
    let (token, _) = p.host.call_to("/certs");
    p.respond(token, Some(200), &jwks(&[&ka]));
    assert!(resumed_and_forwarded(p.host.events(ctx)));
    p.respond(token, Some(500), b"");
    assert_eq!(p.host.metrics.get("meshgate.jwks_fetch.ok"), 1);
    assert_eq!(p.host.metrics.get("meshgate.jwks_fetch.failed"), 0);
    assert!(p.host.stray.is_empty());
}

#[test]
fn a_request_paused_again_keeps_its_first_deadline() {
    let issuer = format!("{BASE}/a");
    let mut p = Proxy::new(json!({"jwtRules": [{"issuer": issuer, "timeout": "2s",
        "jwksUri": format!("{issuer}/protocol/openid-connect/certs")}]}));
    let (ka, kb) = (Key::new("ka", 1), Key::new("kb", 2));
    // Paused at T0 for the configure-time fetch.
    let (ctx, v) = p.request(&kb.sign(claims(&issuer, T0)));
    assert_eq!(v, Verdict::Pause);
    // At +1.5 s the keys arrive without kb: woken, the kid misses, a refetch starts, paused again.
    p.host.now = T0 + 1_500;
    let (token, _) = p.host.call_to("/certs");
    p.respond(token, Some(200), &jwks(&[&ka]));
    assert_eq!(p.host.events(ctx), &[], "paused again, not answered");
    assert_eq!(p.vm.waiting(), 1);
    p.tick(T0 + 1_501);
    assert_eq!(p.host.sent.len(), 2, "the refetch was sent");
    // The wait ends 2 s after the FIRST pause, not 2 s after the second.
    p.tick(T0 + 1_999);
    assert_eq!(p.host.events(ctx), &[]);
    p.tick(T0 + 2_000);
    assert_eq!(
        p.host.events(ctx),
        &[Event::Replied(401, "Jwks remote fetch is failed".into())]
    );
    assert_eq!(p.vm.waiting(), 0);
    // The refetch's late answer (with kb) wakes nobody and serves the next request.
    let (token, _) = p.host.call_to("/certs");
    p.respond(token, Some(200), &jwks(&[&ka, &kb]));
    assert_eq!(p.host.events(ctx).len(), 1);
    let (_, v) = p.request(&kb.sign(claims(&issuer, T0)));
    assert_eq!(v, Verdict::Continue);
}
