//! The per-VM request engine, free of host calls: request attributes, the time and a signature
//! backend go in; a decision (forward with header changes, reply, or wait for keys) comes out.

use crate::authz::{Action, AuthzDecision, DryRunOutcome};
use crate::calls::{CallId, HttpCall, WaitKey};
use crate::config::{JwtRule, LocationKind, Settings};
use crate::egress::{self, Step, TokenStore};
use crate::error::{AuthnError, Denial, Reply};
use crate::extract::extract;
use crate::identity::{Identity, PolicyMemo};
use crate::jwks::{KeyLookup, KeyStore};
use crate::jwt::crypto::SignatureBackend;
use crate::jwt::verify::{check_claims, verify_signature, ClaimRules, TimeWindow};
use crate::jwt::{self, UntrustedJwt};
use crate::metrics::{EgressEvent, Metric, MetricSink};
use crate::request::RequestAttrs;
use crate::sso::random::{HostRandom, Random};
use crate::sso::{self, Continuation, Sso, Step as SsoStep};
use crate::token_cache::{TokenCache, VerifiedToken};
use serde_json::Value;
use std::rc::Rc;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Forward upstream after removing and setting these request headers.
    Forward(Forward),
    /// Reply locally (401/403).
    Respond(Reply),
    /// Pause the request and run it again when one of the awaited resources settles.
    Wait(Wait),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    /// What the request waits for; it is re-run only when one of these settles.
    pub on: Vec<WaitKey>,
    /// Calls this request started: the adapter must send them.
    pub calls: Vec<HttpCall>,
    /// How long the request may stay paused in all (the longest `timeout` of the rules it
    /// waits for), counted from when it was first paused.
    pub timeout_ms: u64,
}

/// What a call response changed.
#[derive(Debug, Default, PartialEq)]
pub struct Settled {
    /// Resources now usable or failed for good: wake the requests waiting for them.
    pub settled: Vec<WaitKey>,
    /// Follow-up calls to send (JWKS after discovery).
    pub calls: Vec<HttpCall>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Forward {
    /// Present request headers to remove (client copies of headers we set, a consumed token).
    pub remove_headers: Vec<String>,
    /// Shared with the cached token: forwarding copies no header values.
    pub set_headers: Vec<(Rc<str>, Rc<str>)>,
    /// The verified token policies saw (first valid one); `identity.principal()` for logs.
    pub verified: Option<Rc<VerifiedToken>>,
    /// Response headers to add when the upstream answers (`Set-Cookie` of a refreshed session).
    pub response_headers: Vec<(String, String)>,
}

/// Where a paused request stopped, kept by the runtime with the paused request and handed back
/// when it runs again (opaque outside the engine).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestState {
    sso: Option<Continuation>,
}

/// Outcome of one token.
enum TokenResult {
    Valid(Rc<VerifiedToken>),
    Invalid(AuthnError),
    /// Keys of this rule are being fetched; the call is set when this token started it.
    Wait(usize, Option<HttpCall>),
}

pub struct Engine {
    pub settings: Rc<Settings>,
    pub keys: KeyStore,
    pub cache: TokenCache,
    /// Tokens of the egress targets.
    pub tokens: TokenStore,
    /// Browser single sign-on, when `oidc` is configured: a stage before the token checks.
    pub sso: Option<Sso>,
    random: Box<dyn Random>,
}

impl Engine {
    /// An engine whose randomness comes from the host (`getrandom`: WASI `random_get`).
    pub fn new(settings: Rc<Settings>) -> Engine {
        Engine::with_random(settings, Box::new(HostRandom))
    }

    /// An engine with its own random source (deterministic in tests).
    pub fn with_random(settings: Rc<Settings>, random: Box<dyn Random>) -> Engine {
        let keys = KeyStore::new(&settings);
        let cache = TokenCache::new(settings.token_cache_size);
        let tokens = TokenStore::new(&settings.egress);
        let sso = settings.oidc.clone().map(Sso::new);
        Engine {
            settings,
            keys,
            cache,
            tokens,
            sso,
            random,
        }
    }

    /// Decides a new request. `now_ms` is Unix time in milliseconds.
    pub fn on_request(
        &mut self,
        req: &RequestAttrs,
        now_ms: u64,
        crypto: &dyn SignatureBackend,
        metrics: &mut dyn MetricSink,
    ) -> Decision {
        self.on_request_in(req, &mut RequestState::default(), now_ms, crypto, metrics)
    }

    /// Decides a request that may have been paused before: `state` is where it stopped, and is
    /// updated when it must wait again. Single sign-on decides first; a request with a session
    /// then goes through the token checks and policies as if it carried the session's access
    /// token as `Authorization: Bearer`, which is also what the upstream receives.
    pub fn on_request_in(
        &mut self,
        req: &RequestAttrs,
        state: &mut RequestState,
        now_ms: u64,
        crypto: &dyn SignatureBackend,
        metrics: &mut dyn MetricSink,
    ) -> Decision {
        // Outbound (the workload calling out): only the egress stage runs.
        if req.outbound && !self.settings.egress.is_empty() {
            return self.egress_request(req, now_ms, metrics);
        }
        let step = match self.sso_stage(crypto, now_ms, metrics) {
            None => return self.decide(req, now_ms, crypto, metrics),
            Some((sso, mut cx)) => sso.on_request(req, &mut state.sso, &mut cx),
        };
        match step {
            SsoStep::Respond(reply) => Decision::Respond(reply),
            SsoStep::Wait(wait) => Decision::Wait(wait),
            SsoStep::Pass { cookie } => {
                let mut d = self.decide(req, now_ms, crypto, metrics);
                if let (Some(c), Decision::Forward(f)) = (cookie, &mut d) {
                    set_cookie_header(f, c);
                }
                d
            }
            SsoStep::Session(pass) => {
                let bearer: Rc<str> = format!("Bearer {}", pass.access_token).into();
                // What the token checks and policies see is what the upstream will get: the
                // session's token, and the cookies without ours.
                let mut with_token = req.clone_without_headers(&["authorization", "cookie"]);
                if let Some(c) = pass.cookie.as_ref().filter(|c| !c.is_empty()) {
                    with_token.headers.push(("cookie".into(), c.clone()));
                }
                with_token
                    .headers
                    .push(("authorization".into(), bearer.to_string()));
                let mut d = self.decide(&with_token, now_ms, crypto, metrics);
                let set_cookies = pass
                    .set_cookies
                    .into_iter()
                    .map(|c| ("set-cookie".to_string(), c));
                match &mut d {
                    Decision::Forward(f) => {
                        metrics.increment(Metric::Sso(crate::metrics::SsoEvent::SessionForwarded));
                        // The session's token always reaches the upstream (that is what single
                        // sign-on is for); forwardOriginalToken governs tokens clients send.
                        f.remove_headers.retain(|h| h != "authorization");
                        f.set_headers.retain(|(n, _)| &**n != "authorization");
                        f.set_headers.push((Rc::from("authorization"), bearer));
                        if let Some(c) = pass.cookie {
                            set_cookie_header(f, c);
                        }
                        f.response_headers.extend(set_cookies);
                    }
                    // The session's token no longer verifies (keys rotated away, expired past
                    // the skew): a page load signs in again instead of showing the 401.
                    Decision::Respond(r) if r.status == 401 && sso::is_browser_navigation(req) => {
                        if let Some((sso, mut cx)) = self.sso_stage(crypto, now_ms, metrics) {
                            return match sso.sign_in_again(req, &mut state.sso, &mut cx) {
                                SsoStep::Wait(w) => Decision::Wait(w),
                                SsoStep::Respond(reply) => Decision::Respond(reply),
                                SsoStep::Pass { .. } | SsoStep::Session(_) => d,
                            };
                        }
                    }
                    Decision::Respond(r) => r.headers.extend(set_cookies),
                    // Keys are being fetched: the request runs again, and finds a shared
                    // refresh result again.
                    Decision::Wait(_) => {}
                }
                d
            }
        }
    }

    /// The single sign-on stage and what it may use, borrowed apart from the rest of the engine
    /// (None without `oidc`).
    fn sso_stage<'a>(
        &'a mut self,
        crypto: &'a dyn SignatureBackend,
        now_ms: u64,
        metrics: &'a mut dyn MetricSink,
    ) -> Option<(&'a mut Sso, sso::Ctx<'a>)> {
        let sso = self.sso.as_mut()?;
        let cx = sso::Ctx {
            keys: &mut self.keys,
            crypto,
            rng: &mut *self.random,
            now_ms,
            metrics,
        };
        Some((sso, cx))
    }

    /// A paused request ended (answered, or its client went away): drop what it held.
    pub fn on_request_done(&mut self, state: &RequestState) {
        if let (Some(sso), Some(c)) = (self.sso.as_mut(), &state.sso) {
            sso.forget(c);
        }
    }

    /// The token checks and policies.
    fn decide(
        &mut self,
        req: &RequestAttrs,
        now_ms: u64,
        crypto: &dyn SignatureBackend,
        metrics: &mut dyn MetricSink,
    ) -> Decision {
        let settings = self.settings.clone();
        // Client-supplied copies of headers we set are stripped; only present ones cost a host call.
        let mut forward = Forward {
            remove_headers: settings
                .sanitize_headers
                .iter()
                .filter(|h| req.header(h).is_some())
                .cloned()
                .collect(),
            ..Forward::default()
        };
        let mut verified: Vec<Rc<VerifiedToken>> = Vec::new();

        // CORS preflight carries no credentials; Istio sets bypass_cors_preflight on jwt_authn.
        let preflight = is_cors_preflight(req);
        let tokens = if preflight {
            Vec::new()
        } else {
            extract(req, &settings.locations)
        };
        if tokens.is_empty() && settings.any_required && !preflight {
            return self.deny_authn(req, AuthnError::Missing, metrics);
        }
        // Every presented token must verify: a good token cannot carry a bad one past us.
        let mut wait: Option<Wait> = None;
        for t in &tokens {
            match self.authenticate(&t.token, t.location, now_ms, crypto, metrics) {
                TokenResult::Valid(v) => {
                    let rule = &settings.rules[v.rule];
                    if let LocationKind::Header { name, .. } = &settings.locations[t.location].kind
                    {
                        if !rule.forward && !forward.remove_headers.contains(name) {
                            forward.remove_headers.push(name.clone());
                        }
                    }
                    verified.push(v);
                }
                TokenResult::Invalid(err) => {
                    // Re-parsing for the log line only pays off when someone reads it.
                    if log::log_enabled!(log::Level::Debug) {
                        match jwt::parse(&t.token, crate::config::MAX_TOKEN_BYTES) {
                            Ok(jwt) => log::debug!(
                                "token rejected: {} (iss={:?}, kid={:?}, alg={})",
                                err.message(),
                                jwt.claims.iss,
                                jwt.kid(),
                                jwt.alg.name()
                            ),
                            Err(_) => log::debug!("token rejected: {}", err.message()),
                        }
                    }
                    return self.deny_authn(req, err, metrics);
                }
                TokenResult::Wait(rule, call) => {
                    let w = wait.get_or_insert_with(|| Wait {
                        on: Vec::new(),
                        calls: Vec::new(),
                        timeout_ms: 0,
                    });
                    let key = WaitKey::Keys(rule);
                    if !w.on.contains(&key) {
                        w.on.push(key);
                    }
                    w.calls.extend(call);
                    w.timeout_ms = w
                        .timeout_ms
                        .max(settings.rules[rule].timeout.as_millis() as u64);
                }
            }
        }
        if let Some(w) = wait {
            return Decision::Wait(w);
        }
        for v in &verified {
            for (h, val) in &v.outputs {
                forward.set_headers.retain(|(n, _)| n != h);
                forward.set_headers.push((Rc::clone(h), Rc::clone(val)));
            }
        }

        let identity: Option<&Identity> = verified.first().map(|v| &v.identity);
        let result = settings.policies.evaluate(req, identity);
        for rr in &result.audit_matches {
            metrics.increment(Metric::AuditMatched(&rr.policy));
            log::info!("audit policy {} matched (rule {:?})", rr.policy, rr.rule);
        }
        for d in &result.dry_run {
            let would_deny = dry_run_would_deny(d);
            metrics.increment(if would_deny {
                Metric::DryRunWouldDeny(&d.policy)
            } else {
                Metric::DryRunWouldAllow(&d.policy)
            });
            log::debug!(
                "dry-run policy {} would {}",
                d.policy,
                if would_deny { "deny" } else { "allow" }
            );
        }
        match &result.decision {
            AuthzDecision::Allow { by } => {
                if let Some(rr) = by {
                    metrics.increment(Metric::PolicyAllowed(&rr.policy));
                }
                metrics.increment(Metric::Allowed);
                forward.verified = verified.first().cloned();
                Decision::Forward(forward)
            }
            AuthzDecision::Deny { by } => {
                metrics.increment(Metric::PolicyDenied(&by.policy));
                log::debug!("denied by policy {} rule {:?}", by.policy, by.rule);
                let denial = Denial::Authz {
                    policy: by.policy.to_string(),
                    rule: by.rule,
                    had_valid_token: identity.is_some(),
                };
                Decision::Respond(denial.to_reply(&realm(req), &settings.reply))
            }
        }
    }

    fn egress_request(
        &mut self,
        req: &RequestAttrs,
        now_ms: u64,
        metrics: &mut dyn MetricSink,
    ) -> Decision {
        let step = egress::stage(
            &self.settings.egress,
            &mut self.tokens,
            req,
            now_ms,
            metrics,
        );
        self.egress_decision(step, req)
    }

    fn egress_decision(&self, step: Step, req: &RequestAttrs) -> Decision {
        match step {
            Step::Untouched => Decision::Forward(Forward::default()),
            Step::Inject(value) => Decision::Forward(Forward {
                set_headers: vec![(Rc::from("authorization"), value)],
                ..Forward::default()
            }),
            Step::Wait {
                target,
                call,
                timeout_ms,
            } => Decision::Wait(Wait {
                on: vec![WaitKey::EgressToken(target)],
                calls: call.into_iter().collect(),
                timeout_ms,
            }),
            Step::Deny { target, reason } => {
                let target = self
                    .settings
                    .egress
                    .get(target)
                    .map_or_else(String::new, |t| t.name.clone());
                Decision::Respond(
                    Denial::EgressNoToken { target, reason }
                        .to_reply(&realm(req), &self.settings.reply),
                )
            }
        }
    }

    /// A paused request's wait ran out (or no more requests may wait): what it gets instead.
    /// Waiting for keys: `401 Jwks remote fetch is failed`; for an egress token: `onError`.
    pub fn on_wait_timeout(
        &mut self,
        req: &RequestAttrs,
        on: &[WaitKey],
        metrics: &mut dyn MetricSink,
    ) -> Decision {
        self.on_wait_timeout_in(req, on, &RequestState::default(), metrics)
    }

    /// [`Engine::on_wait_timeout`] for a request paused at `state` (single sign-on: 502).
    pub fn on_wait_timeout_in(
        &mut self,
        req: &RequestAttrs,
        on: &[WaitKey],
        state: &RequestState,
        metrics: &mut dyn MetricSink,
    ) -> Decision {
        // Paused by single sign-on (discovery, code exchange, refresh, the ID token's keys).
        if let (Some(sso), Some(cont)) = (self.sso.as_mut(), &state.sso) {
            sso.forget(cont);
            return Decision::Respond(sso.wait_expired(req, metrics));
        }
        let egress_target = on.iter().find_map(|k| match k {
            WaitKey::EgressToken(i) => Some(*i),
            _ => None,
        });
        match egress_target {
            Some(i) => {
                let step = egress::give_up(&self.settings.egress, &self.tokens, i, metrics);
                self.egress_decision(step, req)
            }
            None => self.deny_authn(req, AuthnError::JwksFetchFailed, metrics),
        }
    }

    fn deny_authn(
        &self,
        req: &RequestAttrs,
        err: AuthnError,
        metrics: &mut dyn MetricSink,
    ) -> Decision {
        metrics.increment(Metric::Denied(err));
        Decision::Respond(Denial::Authn(err).to_reply(&realm(req), &self.settings.reply))
    }

    fn authenticate(
        &mut self,
        token: &str,
        location: usize,
        now_ms: u64,
        crypto: &dyn SignatureBackend,
        metrics: &mut dyn MetricSink,
    ) -> TokenResult {
        let settings = self.settings.clone();
        let now = now_ms / 1000;
        if token.len() > crate::config::MAX_TOKEN_BYTES {
            return TokenResult::Invalid(AuthnError::TooLarge);
        }
        let allowed_rules = &settings.locations[location].rules;
        if let Some(hit) = self.cache.get(token, now) {
            if !allowed_rules.contains(&hit.rule) {
                return TokenResult::Invalid(AuthnError::UnknownIssuer);
            }
            let skew = settings.rules[hit.rule].clock_skew_secs;
            if let Err(e) = TimeWindow::new(hit.exp, hit.nbf, skew).check(now) {
                return TokenResult::Invalid(e);
            }
            metrics.increment(Metric::TokenCacheHit);
            return TokenResult::Valid(hit);
        }
        let result = self.verify_uncached(token, allowed_rules, now_ms, crypto);
        // A request that waits for keys runs again once they settle: count its miss then, so
        // each request counts at most one.
        if settings.token_cache_size > 0 && !matches!(result, TokenResult::Wait(..)) {
            metrics.increment(Metric::TokenCacheMiss);
        }
        result
    }

    /// Full verification of a token that is not in the cache (a valid one is cached).
    fn verify_uncached(
        &mut self,
        token: &str,
        allowed_rules: &[usize],
        now_ms: u64,
        crypto: &dyn SignatureBackend,
    ) -> TokenResult {
        let settings = self.settings.clone();
        let now = now_ms / 1000;
        let jwt = match jwt::parse(token, crate::config::MAX_TOKEN_BYTES) {
            Ok(j) => j,
            Err(e) => return TokenResult::Invalid(e),
        };
        let Some(rule_idx) = jwt
            .claims
            .iss
            .as_deref()
            .and_then(|iss| settings.rules.iter().position(|r| r.issuer == iss))
            .filter(|i| allowed_rules.contains(i))
        else {
            return TokenResult::Invalid(AuthnError::UnknownIssuer);
        };
        let rule = &settings.rules[rule_idx];
        let claim_rules = ClaimRules {
            issuer: Some(&rule.issuer),
            audiences: &rule.audiences,
            clock_skew_secs: rule.clock_skew_secs,
            access_tokens_only: rule.access_tokens_only,
        };
        if let Err(e) = check_claims(&jwt, &claim_rules, now) {
            return TokenResult::Invalid(e);
        }
        let keys = match self.keys.lookup(rule_idx, now_ms) {
            KeyLookup::Ready(k) => k,
            KeyLookup::Wait(f) => return TokenResult::Wait(rule_idx, f),
            KeyLookup::Unavailable => return TokenResult::Invalid(AuthnError::JwksFetchFailed),
        };
        match verify_signature(&jwt, &keys, crypto) {
            Ok(k) => {
                let entry = Rc::new(verified_token(rule_idx, rule, jwt, k.fingerprint));
                self.cache.insert(token, entry.clone());
                TokenResult::Valid(entry)
            }
            Err(AuthnError::KidAlgMismatch) => match self.keys.kid_miss(rule_idx, now_ms) {
                Some(f) => TokenResult::Wait(rule_idx, f),
                None => TokenResult::Invalid(AuthnError::KidAlgMismatch),
            },
            Err(e) => TokenResult::Invalid(e),
        }
    }

    /// Periodic work: calls to send now.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<HttpCall> {
        let mut calls = self.keys.due_fetches(now_ms);
        if !self.settings.egress.is_empty() {
            calls.extend(self.tokens.due_fetches(now_ms));
        }
        if let Some(sso) = self.sso.as_mut() {
            calls.extend(sso.on_tick(now_ms));
        }
        calls
    }

    /// A call response arrived (`status` None: no HTTP response, e.g. a timeout).
    pub fn on_call_response(
        &mut self,
        id: CallId,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
        metrics: &mut dyn MetricSink,
    ) -> Settled {
        let id = match id {
            CallId::Keys(id) => id,
            CallId::Egress(id) => {
                return self.on_egress_response(id, status, body, now_ms, metrics)
            }
            CallId::Sso(call) => {
                return match self.sso.as_mut() {
                    Some(sso) => sso.on_call_response(call, status, body, now_ms, metrics),
                    None => Settled::default(),
                }
            }
        };
        let outcome = self.keys.on_response(id, status, body, now_ms);
        for _ in 0..outcome.rejected_keys {
            metrics.increment(Metric::JwksKeyRejected);
        }
        let issuer = self
            .settings
            .rules
            .get(id.rule)
            .map_or("", |r| r.issuer.as_str());
        if let Some(why) = &outcome.failed {
            metrics.increment(Metric::JwksFetchFailed);
            log::warn!("{:?} fetch for issuer {issuer} failed: {why}", id.phase);
        }
        if let Some((rule, keys)) = &outcome.updated {
            metrics.increment(Metric::JwksFetchOk);
            log::debug!("JWKS for issuer {issuer}: {} usable keys", keys.keys.len());
            for s in &outcome.skipped {
                log::debug!("JWKS for issuer {issuer}: skipped {s}");
            }
            if outcome.rejected_keys > 0 {
                log::warn!(
                    "JWKS for issuer {issuer}: {} signature key(s) refused ({})",
                    outcome.rejected_keys,
                    outcome.skipped.join("; ")
                );
            }
            self.cache
                .retain_keys(*rule, |fp| keys.contains_fingerprint(fp));
        }
        // Discovery that succeeded moves on to the JWKS: the keys are not settled yet.
        let settled = if outcome.next.is_none() {
            vec![WaitKey::Keys(id.rule)]
        } else {
            Vec::new()
        };
        Settled {
            settled,
            calls: outcome.next.into_iter().collect(),
        }
    }

    /// The host refused to send this call (unknown cluster, bad argument): it failed. Returns
    /// the resources that are now settled (failed).
    pub fn on_call_dispatch_failed(
        &mut self,
        id: CallId,
        now_ms: u64,
        metrics: &mut dyn MetricSink,
    ) -> Vec<WaitKey> {
        match id {
            CallId::Keys(id) => {
                metrics.increment(Metric::JwksFetchFailed);
                self.keys.on_dispatch_failed(id, now_ms);
                vec![WaitKey::Keys(id.rule)]
            }
            CallId::Sso(call) => match self.sso.as_mut() {
                Some(sso) => sso.on_dispatch_failed(call, now_ms, metrics),
                None => Vec::new(),
            },
            CallId::Egress(id) => {
                let failure = self.tokens.on_dispatch_failed(id, now_ms);
                self.count_egress_failure(id.target, &failure, metrics);
                vec![WaitKey::EgressToken(id.target)]
            }
        }
    }

    fn on_egress_response(
        &mut self,
        id: egress::FetchId,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
        metrics: &mut dyn MetricSink,
    ) -> Settled {
        let outcome = self.tokens.on_response(id, status, body, now_ms);
        if let Some(f) = &outcome.failed {
            self.count_egress_failure(id.target, f, metrics);
        }
        if let (Some(ms), Some(t)) = (
            outcome.obtained_lifetime_ms,
            self.settings.egress.get(id.target),
        ) {
            metrics.increment(Metric::Egress(&t.name, EgressEvent::FetchOk));
            log::debug!(
                "egress target {}: token obtained, valid {} s",
                t.name,
                ms / 1000
            );
        }
        // Discovery that succeeded moves on to the token call: nothing is settled yet.
        let settled = if outcome.next.is_none() {
            vec![WaitKey::EgressToken(id.target)]
        } else {
            Vec::new()
        };
        Settled {
            settled,
            calls: outcome.next.into_iter().collect(),
        }
    }

    fn count_egress_failure(
        &self,
        target: usize,
        failure: &egress::token::Failure,
        metrics: &mut dyn MetricSink,
    ) {
        let Some(t) = self.settings.egress.get(target) else {
            return;
        };
        metrics.increment(Metric::Egress(&t.name, EgressEvent::FetchFailed));
        if failure.rejected {
            metrics.increment(Metric::Egress(&t.name, EgressEvent::FetchRejected));
            log::warn!(
                "egress target {}: the token endpoint refused client {:?} ({}); check clientId and the client secret",
                t.name,
                t.client_id,
                failure.reason
            );
        } else {
            log::warn!(
                "egress target {}: token fetch failed: {}",
                t.name,
                failure.reason
            );
        }
    }
}

/// Forwards `cookie` as the request's Cookie header ("" removes it).
fn set_cookie_header(f: &mut Forward, cookie: String) {
    if cookie.is_empty() {
        f.remove_headers.push("cookie".into());
    } else {
        f.set_headers.push((Rc::from("cookie"), Rc::from(cookie)));
    }
}

/// Per dry-run policy: a matching DENY, or an ALLOW that matched nothing, would have denied.
fn dry_run_would_deny(d: &DryRunOutcome) -> bool {
    match d.action {
        Action::Deny => d.matched,
        Action::Allow => !d.matched,
        Action::Audit | Action::Custom => false,
    }
}

pub(crate) fn is_cors_preflight(req: &RequestAttrs) -> bool {
    req.method == "OPTIONS"
        && req.header("origin").is_some()
        && req.header("access-control-request-method").is_some()
}

/// The Bearer realm: the request URI without the query (which may hold a token), as
/// `scheme://host/path` with the path capped at 256 characters like Envoy.
pub fn realm(req: &RequestAttrs) -> String {
    let path = req.path_only();
    let path = match path.char_indices().nth(256) {
        Some((i, _)) => &path[..i],
        None => path,
    };
    let scheme = if req.scheme.is_empty() {
        "http"
    } else {
        req.scheme.as_str()
    };
    format!("{scheme}://{}{path}", req.host)
}

fn verified_token(
    rule_idx: usize,
    rule: &JwtRule,
    jwt: UntrustedJwt<'_>,
    key_fingerprint: [u8; 32],
) -> VerifiedToken {
    // The parsed token is used up here: its claims move into the identity, uncopied.
    let UntrustedJwt {
        payload,
        payload_b64,
        claims,
        ..
    } = jwt;
    let identity = Identity {
        issuer: rule.issuer.clone(),
        subject: claims.sub.unwrap_or_default(),
        audiences: claims.aud,
        presenter: claims.azp,
        claims: Rc::new(payload),
        space_delimited_claims: rule.space_delimited.clone(),
        memo: PolicyMemo::default(),
    };
    let mut outputs = Vec::new();
    for ch in &rule.claim_headers {
        if let Some(v) = identity.claim(&ch.claim).and_then(claim_header_value) {
            outputs.push((Rc::from(ch.header.as_str()), Rc::from(v)));
        }
    }
    if let Some(h) = &rule.payload_header {
        outputs.push((
            Rc::from(h.as_str()),
            Rc::from(payload_b64.trim_end_matches('=')),
        ));
    }
    VerifiedToken {
        rule: rule_idx,
        identity,
        outputs,
        exp: claims.exp,
        nbf: claims.nbf,
        key_fingerprint,
    }
}

/// Header value for a claim: strings as-is, integral numbers without a fraction, bools, and
/// arrays of those joined with ','. Objects (and values with control characters) are not
/// emitted: a header must never be able to smuggle a line break.
pub fn claim_header_value(v: &Value) -> Option<String> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
                _ => n.to_string(),
            }),
            _ => None,
        }
    }
    let out = match v {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        other => scalar(other)?,
    };
    if out.chars().any(|c| c.is_control()) {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_values_for_headers() {
        assert_eq!(claim_header_value(&json!("a")), Some("a".into()));
        assert_eq!(claim_header_value(&json!(42)), Some("42".into()));
        assert_eq!(claim_header_value(&json!(1.5)), Some("1.5".into()));
        assert_eq!(claim_header_value(&json!(true)), Some("true".into()));
        assert_eq!(
            claim_header_value(&json!(["a", "b", 3])),
            Some("a,b,3".into())
        );
        assert_eq!(claim_header_value(&json!({"a": 1})), None);
        assert_eq!(claim_header_value(&json!("a\r\nx-evil: 1")), None);
    }

    #[test]
    fn realm_strips_query_and_caps_path() {
        let req = RequestAttrs {
            scheme: "https".into(),
            host: "h".into(),
            path: "/p?access_token=secret".into(),
            ..Default::default()
        };
        assert_eq!(realm(&req), "https://h/p");
        let req = RequestAttrs {
            host: "h".into(),
            path: format!("/{}", "a".repeat(300)),
            ..Default::default()
        };
        assert_eq!(realm(&req).len(), "http://h".len() + 256);
    }
}
