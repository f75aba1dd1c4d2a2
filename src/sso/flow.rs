//! The single sign-on state machine of one Wasm VM: login start, callback (code exchange, ID
//! token check), sessions, refresh, logout, and the provider's discovery document. Pure: time,
//! randomness and call responses are inputs; decisions and calls are outputs.

use super::config::{is_local_path, ClientAuthMethod, OidcSettings};
use super::pkce;
use super::random::Random;
use super::session::{
    clear_cookie, clear_session_cookies, login_cookie_name, login_purpose, read_login_cookie,
    read_session_cookies, session_purpose, session_set_cookies, set_cookie, strip_own_cookies,
    PendingLogin, Session,
};
use super::session_cache::SessionCache;
use super::token_response::{self, TokenOutcome, Tokens};
use super::SsoCall;
use crate::calls::{CallId, HttpCall, WaitKey};
use crate::config::{http_target, HttpTarget, MAX_TOKEN_BYTES};
use crate::engine::{Settled, Wait};
use crate::error::{AuthnError, Denial, Reply, ReplyOptions, SsoError};
use crate::http_target::discovery_document;
use crate::jwks::{KeyLookup, KeyStore};
use crate::jwt::crypto::SignatureBackend;
use crate::jwt::verify::{check_time, verify_signature};
use crate::metrics::{Metric, MetricSink, SsoEvent};
use crate::request::RequestAttrs;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::rc::Rc;

/// A pending login older than this is refused at the callback (its cookie lives as long).
pub const LOGIN_TIMEOUT_SECS: u64 = 600;
/// Code exchanges and refreshes in flight or remembered per VM.
pub const MAX_FLOWS: usize = 1024;
/// `state` values already exchanged, remembered per VM until their login would have expired.
pub const MAX_USED_STATES: usize = 4096;
/// Requests carrying the same session within this time share one refresh and its result.
const REFRESH_RESULT_TTL_MS: u64 = 30_000;
/// A code-exchange result nobody picked up (the request went away) is dropped after this.
const EXCHANGE_RESULT_TTL_MS: u64 = 60_000;
/// A request waits for a call this much longer than the call's own timeout, so the call's
/// timeout answers it (with the right reason) before the wait deadline does.
const WAIT_GRACE_MS: u64 = 1_000;
/// Longest path (with query) remembered for the return after login; longer ones return to `/`.
pub const MAX_RETURN_PATH: usize = 2048;
/// Longest reason a failed discovery logs.
const MAX_REASON_CHARS: usize = 200;
const MIN_BACKOFF_MS: u64 = 1_000;
const MAX_BACKOFF_MS: u64 = 10_000;

/// Denials decided by single sign-on render with the defaults (no policy is involved).
static REPLY_OPTIONS: ReplyOptions = ReplyOptions {
    insufficient_scope_challenge: false,
    debug_headers: false,
};

/// Where a paused request stopped; kept by the runtime with the paused request and handed back
/// when it runs again.
#[derive(Debug, Clone, PartialEq)]
pub enum Continuation {
    /// Waiting for the provider's endpoints (discovery): the request is decided again.
    Discovery,
    /// A callback waiting for its code exchange.
    Exchange { flow: u64, login: PendingLogin },
    /// A callback whose ID token waits for the jwtRule's keys.
    VerifyIdToken { tokens: Tokens, login: PendingLogin },
    /// Waiting for a refresh (shared by the requests of one session, found again by its
    /// refresh token).
    Refresh,
}

/// What single sign-on decided about a request.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Not single sign-on's request (bearer token, pass-through path, CORS preflight): decide
    /// it as if SSO were not configured. `cookie`: the Cookie header to forward instead, when
    /// the request carried our cookies ("" = remove the header).
    Pass {
        cookie: Option<String>,
    },
    /// A request with a session: decide it as if it carried `Authorization: Bearer <token>`.
    Session(SessionPass),
    Respond(Reply),
    Wait(Wait),
}

#[derive(Debug, PartialEq)]
pub struct SessionPass {
    pub access_token: Rc<str>,
    /// The Cookie header to forward (our cookies removed; "" = remove the header).
    pub cookie: Option<String>,
    /// `Set-Cookie` values for the response (a refreshed session).
    pub set_cookies: Vec<String>,
}

/// The provider's endpoints as discovered.
#[derive(Debug, Clone)]
struct Discovered {
    authorization: String,
    token: HttpTarget,
    end_session: Option<String>,
}

#[derive(Debug, Default)]
struct DiscoveryState {
    found: Option<Discovered>,
    in_flight_since: Option<u64>,
    failures: u32,
    retry_at_ms: u64,
}

#[derive(Debug)]
enum FlowKind {
    Exchange,
    Refresh([u8; 32]),
}

#[derive(Debug)]
struct Flow {
    kind: FlowKind,
    started_ms: u64,
    result: Option<(TokenOutcome, u64)>,
    /// The request that started this exchange is gone: drop the result when it arrives.
    abandoned: bool,
}

enum Lookup<T> {
    Ready(T),
    /// Discovery is under way (the call is set when this lookup started it).
    Wait(Option<HttpCall>),
    /// Discovery failed recently (backoff).
    Unavailable,
}

enum IdCheck {
    Valid,
    Invalid(&'static str),
    Wait(usize, Option<HttpCall>),
    KeysUnavailable,
}

pub struct Sso {
    cfg: Rc<OidcSettings>,
    discovery: DiscoveryState,
    flows: HashMap<u64, Flow>,
    /// Refresh flows by SHA-256 of the refresh token they use.
    refreshing: HashMap<[u8; 32], u64>,
    /// `state` → Unix second until which its reuse is refused.
    used_states: HashMap<String, u64>,
    next_flow: u64,
    sessions: SessionCache,
}

/// The inputs of one decision that live outside single sign-on.
pub struct Ctx<'a> {
    pub keys: &'a mut KeyStore,
    pub crypto: &'a dyn SignatureBackend,
    pub rng: &'a mut dyn Random,
    pub now_ms: u64,
    pub metrics: &'a mut dyn MetricSink,
}

impl Ctx<'_> {
    fn now(&self) -> u64 {
        self.now_ms / 1000
    }
}

impl Sso {
    pub fn new(cfg: Rc<OidcSettings>) -> Sso {
        Sso {
            cfg,
            discovery: DiscoveryState::default(),
            flows: HashMap::new(),
            refreshing: HashMap::new(),
            used_states: HashMap::new(),
            next_flow: 1,
            sessions: SessionCache::default(),
        }
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.cfg
    }

    /// Decides a request. `cont` is where it stopped when it was paused (None: a new request);
    /// it is set again when the request must wait.
    pub fn on_request(
        &mut self,
        req: &RequestAttrs,
        cont: &mut Option<Continuation>,
        cx: &mut Ctx<'_>,
    ) -> Step {
        let cfg = self.cfg.clone();
        match cont.take() {
            Some(Continuation::Exchange { flow, login }) => {
                return self.exchange_result(req, flow, login, cont, cx)
            }
            Some(Continuation::VerifyIdToken { tokens, login }) => {
                return self.finish_login(req, tokens, login, cont, cx)
            }
            Some(Continuation::Discovery | Continuation::Refresh) | None => {}
        }
        let path = req.path_only();
        if path == cfg.callback_path {
            return self.callback(req, cont, cx);
        }
        if path == cfg.logout_path {
            return self.logout(req, cont, cx);
        }
        let cookie = strip_own_cookies(req, &cfg.cookie_name);
        if crate::engine::is_cors_preflight(req) || has_bearer(req) || cfg.passes_through(path) {
            return Step::Pass { cookie };
        }
        let sent = read_session_cookies(req, &cfg.cookie_name);
        let session = sent
            .value
            .as_deref()
            .and_then(|v| self.open_session(v, cx.now()));
        match session {
            Some(s) => self.with_session(req, s, &sent.present, cookie, cont, cx),
            None => {
                if sent.value.is_some() {
                    cx.metrics.increment(Metric::Sso(SsoEvent::SessionInvalid));
                    log::debug!("session cookie did not open (tampered, other key, or expired)");
                }
                let clear =
                    clear_session_cookies(&cfg.cookie_name, &sent.present, cfg.cookie_secure);
                let clear = if sent.present.is_empty() {
                    Vec::new()
                } else {
                    clear
                };
                self.no_session(req, clear, cont, cx)
            }
        }
    }

    /// The session in a cookie value, if it opens, parses and has not outlived
    /// `sessionLifetime`. Opened values are remembered (the same browser sends the same value
    /// until the session changes).
    fn open_session(&mut self, value: &str, now: u64) -> Option<Rc<Session>> {
        let live = |s: &Session| s.created.saturating_add(self.cfg.session_lifetime_secs) > now;
        if let Some(s) = self.sessions.get(value) {
            if live(&s) {
                return Some(s);
            }
            self.sessions.remove(value);
            return None;
        }
        let plain = self
            .cfg
            .cookie_keys
            .open(&session_purpose(&self.cfg.cookie_name), value)?;
        let s = Rc::new(Session::decode(&plain)?);
        if !live(&s) {
            return None;
        }
        self.sessions.insert(value, s.clone());
        Some(s)
    }

    fn with_session(
        &mut self,
        req: &RequestAttrs,
        s: Rc<Session>,
        present: &[String],
        cookie: Option<String>,
        cont: &mut Option<Continuation>,
        cx: &mut Ctx<'_>,
    ) -> Step {
        let now = cx.now();
        let cfg = self.cfg.clone();
        let pass = |access: Rc<str>, cookie: Option<String>, set_cookies: Vec<String>| {
            Step::Session(SessionPass {
                access_token: access,
                cookie,
                set_cookies,
            })
        };
        // refreshBefore, but never more than half the token's lifetime: short-lived tokens must
        // not turn every request into a refresh.
        let lifetime = s.access_exp.saturating_sub(s.access_issued);
        let window = cfg.refresh_before_secs.min(lifetime / 2);
        if s.access_exp > now.saturating_add(window) {
            return pass(s.access_token.clone(), cookie, Vec::new());
        }
        let refresh = s
            .refresh_token
            .as_deref()
            .filter(|_| s.refresh_exp == 0 || s.refresh_exp > now);
        let Some(refresh) = refresh else {
            if s.access_exp > now {
                return pass(s.access_token.clone(), cookie, Vec::new());
            }
            log::debug!("session's access token expired and it has no usable refresh token");
            let clear = clear_session_cookies(&cfg.cookie_name, present, cfg.cookie_secure);
            return self.no_session(req, clear, cont, cx);
        };
        let key: [u8; 32] = Sha256::digest(refresh.as_bytes()).into();
        let existing = self.refreshing.get(&key).copied();
        if let Some(id) = existing {
            match self.flows.get(&id).map(|f| f.result.clone()) {
                Some(Some((outcome, _))) => {
                    return self.refreshed(req, &s, present, cookie, outcome, cont, cx)
                }
                Some(None) => {
                    *cont = Some(Continuation::Refresh);
                    return Step::Wait(self.wait_on(WaitKey::SsoFlow(id), Vec::new()));
                }
                None => {
                    self.refreshing.remove(&key);
                }
            }
        }
        let target = match self.token_endpoint(cx.now_ms) {
            Lookup::Ready(t) => t,
            Lookup::Wait(call) => {
                return self.wait_for_discovery(call, cont, Continuation::Refresh)
            }
            Lookup::Unavailable => {
                let outcome = TokenOutcome::Unavailable("provider endpoints unknown".into());
                return self.refreshed(req, &s, present, cookie, outcome, cont, cx);
            }
        };
        if self.flows.len() >= MAX_FLOWS {
            log::warn!("{MAX_FLOWS} token calls in flight; not refreshing this session now");
            let outcome = TokenOutcome::Unavailable("too many token calls in flight".into());
            return self.refreshed(req, &s, present, cookie, outcome, cont, cx);
        }
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", refresh);
        let id = self.start_flow(FlowKind::Refresh(key), cx.now_ms);
        self.refreshing.insert(key, id);
        let call = self.token_call(id, &target, form);
        *cont = Some(Continuation::Refresh);
        Step::Wait(self.wait_on(WaitKey::SsoFlow(id), vec![call]))
    }

    /// A request's session after its refresh ended with `outcome`.
    #[allow(clippy::too_many_arguments)]
    fn refreshed(
        &mut self,
        req: &RequestAttrs,
        old: &Session,
        present: &[String],
        cookie: Option<String>,
        outcome: TokenOutcome,
        cont: &mut Option<Continuation>,
        cx: &mut Ctx<'_>,
    ) -> Step {
        let now = cx.now();
        let cfg = self.cfg.clone();
        match outcome {
            TokenOutcome::Ok(t) => {
                let keep_refresh = t.refresh_token.is_none();
                let session = Session {
                    created: old.created,
                    access_token: t.access_token.into(),
                    access_issued: now,
                    access_exp: t.access_exp,
                    refresh_exp: if keep_refresh {
                        old.refresh_exp
                    } else {
                        t.refresh_exp
                    },
                    refresh_token: t.refresh_token.or_else(|| old.refresh_token.clone()),
                    id_token: t.id_token.or_else(|| old.id_token.clone()),
                };
                match self.session_cookies(&session, present, cx) {
                    Some(set_cookies) => Step::Session(SessionPass {
                        access_token: session.access_token,
                        cookie,
                        set_cookies,
                    }),
                    // Cannot store it: keep using what the browser has while it is valid.
                    None if old.access_exp > now => Step::Session(SessionPass {
                        access_token: old.access_token.clone(),
                        cookie,
                        set_cookies: Vec::new(),
                    }),
                    None => {
                        let clear =
                            clear_session_cookies(&cfg.cookie_name, present, cfg.cookie_secure);
                        self.no_session(req, clear, cont, cx)
                    }
                }
            }
            // The provider ended the session (logout, revocation, idle timeout): so do we, even
            // if the access token has time left.
            TokenOutcome::Rejected { .. } => {
                let clear = clear_session_cookies(&cfg.cookie_name, present, cfg.cookie_secure);
                self.no_session(req, clear, cont, cx)
            }
            TokenOutcome::Unavailable(_) if old.access_exp > now => Step::Session(SessionPass {
                access_token: old.access_token.clone(),
                cookie,
                set_cookies: Vec::new(),
            }),
            TokenOutcome::Unavailable(_) => {
                let clear = clear_session_cookies(&cfg.cookie_name, present, cfg.cookie_secure);
                self.no_session(req, clear, cont, cx)
            }
        }
    }

    /// No usable session: a browser navigation goes to the login page, anything else gets 401.
    /// `clear`: `Set-Cookie` values that remove stale session cookies.
    fn no_session(
        &mut self,
        req: &RequestAttrs,
        clear: Vec<String>,
        cont: &mut Option<Continuation>,
        cx: &mut Ctx<'_>,
    ) -> Step {
        if is_browser_navigation(req) {
            return self.start_login(req, clear, cont, cx);
        }
        self.deny(req, SsoError::LoginRequired, None, clear, cx.metrics)
    }

    fn start_login(
        &mut self,
        req: &RequestAttrs,
        mut set_cookies: Vec<String>,
        cont: &mut Option<Continuation>,
        cx: &mut Ctx<'_>,
    ) -> Step {
        let cfg = self.cfg.clone();
        let authorization = match self.authorization_endpoint(cx.now_ms) {
            Lookup::Ready(u) => u,
            Lookup::Wait(call) => {
                return self.wait_for_discovery(call, cont, Continuation::Discovery)
            }
            Lookup::Unavailable => {
                return self.deny(
                    req,
                    SsoError::ProviderUnavailable,
                    None,
                    set_cookies,
                    cx.metrics,
                )
            }
        };
        let (Some(verifier), Some(state), Some(nonce)) = (
            pkce::random_token(cx.rng),
            pkce::random_token(cx.rng),
            pkce::random_token(cx.rng),
        ) else {
            return self.deny(req, SsoError::NoRandomness, None, set_cookies, cx.metrics);
        };
        let login = PendingLogin {
            issued: cx.now(),
            code_verifier: verifier,
            nonce,
            return_path: return_path(&req.path).to_string(),
            state,
        };
        let sealed = login.encode().and_then(|b| {
            cfg.cookie_keys
                .seal(&login_purpose(&login.state), &b, cx.rng)
        });
        let Some(sealed) = sealed else {
            return self.deny(req, SsoError::NoRandomness, None, set_cookies, cx.metrics);
        };
        set_cookies.push(set_cookie(
            &login_cookie_name(&cfg.cookie_name, &login.state),
            &sealed,
            &cfg.callback_path,
            LOGIN_TIMEOUT_SECS,
            cfg.cookie_secure,
        ));
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &cfg.client_id)
            .append_pair("redirect_uri", &callback_uri(req, &cfg.callback_path))
            .append_pair("scope", &cfg.scope)
            .append_pair("state", &login.state)
            .append_pair("nonce", &login.nonce)
            .append_pair(
                "code_challenge",
                &pkce::challenge_s256(&login.code_verifier),
            )
            .append_pair("code_challenge_method", "S256")
            .finish();
        let sep = if authorization.contains('?') {
            '&'
        } else {
            '?'
        };
        cx.metrics.increment(Metric::Sso(SsoEvent::LoginStarted));
        Step::Respond(Reply::redirect(
            format!("{authorization}{sep}{query}"),
            set_cookies,
        ))
    }

    fn callback(
        &mut self,
        req: &RequestAttrs,
        cont: &mut Option<Continuation>,
        cx: &mut Ctx<'_>,
    ) -> Step {
        let cfg = self.cfg.clone();
        let mut state = None;
        let mut code = None;
        let mut error = None;
        let mut iss = None;
        for (k, v) in form_urlencoded::parse(req.query().as_bytes()) {
            let slot = match k.as_ref() {
                "state" => &mut state,
                "code" => &mut code,
                "error" => &mut error,
                "iss" => &mut iss,
                _ => continue,
            };
            slot.get_or_insert(v.into_owned());
        }
        // Whatever happens next, the pending login of this state is over.
        let state_copy = state.clone();
        let login_cookie = state_copy
            .as_deref()
            .filter(|s| pkce::is_token(s))
            .and_then(|s| read_login_cookie(req, &cfg.cookie_name, s).map(|v| (s, v)));
        let clear = login_cookie
            .map(|(s, _)| {
                vec![clear_cookie(
                    &login_cookie_name(&cfg.cookie_name, s),
                    &cfg.callback_path,
                    cfg.cookie_secure,
                )]
            })
            .unwrap_or_default();
        if let Some(e) = error {
            let e = token_response::safe_error_code(&e, client_secret(&cfg));
            log::info!("login failed at the identity provider: {e}");
            return self.deny(req, SsoError::ProviderError, Some(e), clear, cx.metrics);
        }
        let Some(state) = state else {
            return self.deny(
                req,
                SsoError::BadCallback,
                Some("no state parameter".into()),
                clear,
                cx.metrics,
            );
        };
        let login = login_cookie
            .and_then(|(s, v)| cfg.cookie_keys.open(&login_purpose(s), v))
            .and_then(|b| PendingLogin::decode(&b))
            .filter(|l| pkce::ct_eq(&l.state, &state));
        let Some(login) = login else {
            return self.deny(req, SsoError::NoPendingLogin, None, clear, cx.metrics);
        };
        let now = cx.now();
        if now > login.issued.saturating_add(LOGIN_TIMEOUT_SECS) {
            return self.deny(
                req,
                SsoError::NoPendingLogin,
                Some("the login took too long".into()),
                clear,
                cx.metrics,
            );
        }
        if self.used_states.contains_key(&state) {
            log::info!("callback replayed a state that was already exchanged");
            return self.deny(req, SsoError::Replayed, None, clear, cx.metrics);
        }
        if iss.is_some_and(|i| i != cfg.issuer) {
            return self.deny(
                req,
                SsoError::BadCallback,
                Some("the iss parameter names another issuer".into()),
                clear,
                cx.metrics,
            );
        }
        let Some(code) = code.filter(|c| !c.is_empty() && c.len() <= MAX_TOKEN_BYTES) else {
            return self.deny(
                req,
                SsoError::BadCallback,
                Some("no code parameter".into()),
                clear,
                cx.metrics,
            );
        };
        let target = match self.token_endpoint(cx.now_ms) {
            Lookup::Ready(t) => t,
            Lookup::Wait(call) => {
                return self.wait_for_discovery(call, cont, Continuation::Discovery)
            }
            Lookup::Unavailable => {
                return self.deny(req, SsoError::ProviderUnavailable, None, clear, cx.metrics)
            }
        };
        if self.flows.len() >= MAX_FLOWS {
            log::warn!("{MAX_FLOWS} token calls in flight; refusing this login");
            return self.deny(req, SsoError::ProviderUnavailable, None, clear, cx.metrics);
        }
        self.remember_state(state, login.issued.saturating_add(LOGIN_TIMEOUT_SECS), now);
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code")
            .append_pair("code", &code)
            .append_pair("redirect_uri", &callback_uri(req, &cfg.callback_path))
            .append_pair("code_verifier", &login.code_verifier);
        let id = self.start_flow(FlowKind::Exchange, cx.now_ms);
        let call = self.token_call(id, &target, form);
        *cont = Some(Continuation::Exchange { flow: id, login });
        Step::Wait(self.wait_on(WaitKey::SsoFlow(id), vec![call]))
    }

    fn exchange_result(
        &mut self,
        req: &RequestAttrs,
        flow: u64,
        login: PendingLogin,
        cont: &mut Option<Continuation>,
        cx: &mut Ctx<'_>,
    ) -> Step {
        let clear = vec![self.clear_login_cookie(&login.state)];
        let outcome = match self.flows.get(&flow) {
            None => TokenOutcome::Unavailable("the exchange was lost".into()),
            Some(Flow { result: None, .. }) => {
                *cont = Some(Continuation::Exchange { flow, login });
                return Step::Wait(self.wait_on(WaitKey::SsoFlow(flow), Vec::new()));
            }
            Some(Flow {
                result: Some((o, _)),
                ..
            }) => o.clone(),
        };
        self.flows.remove(&flow);
        match outcome {
            TokenOutcome::Ok(tokens) => self.finish_login(req, tokens, login, cont, cx),
            TokenOutcome::Rejected { error } => {
                self.deny(req, SsoError::TokenRejected, Some(error), clear, cx.metrics)
            }
            TokenOutcome::Unavailable(_) => {
                self.deny(req, SsoError::ProviderUnavailable, None, clear, cx.metrics)
            }
        }
    }

    fn finish_login(
        &mut self,
        req: &RequestAttrs,
        tokens: Tokens,
        login: PendingLogin,
        cont: &mut Option<Continuation>,
        cx: &mut Ctx<'_>,
    ) -> Step {
        let cfg = self.cfg.clone();
        let mut set_cookies = vec![self.clear_login_cookie(&login.state)];
        let Some(id_token) = tokens.id_token.as_deref() else {
            return self.deny(
                req,
                SsoError::IdTokenInvalid,
                Some("the token response has no id_token".into()),
                set_cookies,
                cx.metrics,
            );
        };
        match self.check_id_token(id_token, &login.nonce, cx) {
            IdCheck::Valid => {}
            IdCheck::Invalid(why) => {
                log::info!("login refused: ID token {why}");
                return self.deny(
                    req,
                    SsoError::IdTokenInvalid,
                    Some(why.into()),
                    set_cookies,
                    cx.metrics,
                );
            }
            IdCheck::KeysUnavailable => {
                return self.deny(
                    req,
                    SsoError::ProviderUnavailable,
                    None,
                    set_cookies,
                    cx.metrics,
                )
            }
            IdCheck::Wait(rule, call) => {
                *cont = Some(Continuation::VerifyIdToken { tokens, login });
                return Step::Wait(Wait {
                    on: vec![WaitKey::Keys(rule)],
                    calls: call.into_iter().collect(),
                    timeout_ms: cfg.keys_timeout.as_millis() as u64,
                });
            }
        }
        let session = Session {
            created: cx.now(),
            access_token: tokens.access_token.into(),
            access_issued: cx.now(),
            access_exp: tokens.access_exp,
            refresh_token: tokens.refresh_token,
            refresh_exp: tokens.refresh_exp,
            id_token: tokens.id_token,
        };
        let present = read_session_cookies(req, &cfg.cookie_name).present;
        let Some(cookies) = self.session_cookies(&session, &present, cx) else {
            return self.deny(
                req,
                SsoError::SessionTooLarge,
                None,
                set_cookies,
                cx.metrics,
            );
        };
        set_cookies.extend(cookies);
        cx.metrics.increment(Metric::Sso(SsoEvent::CallbackOk));
        Step::Respond(Reply::redirect(login.return_path, set_cookies))
    }

    /// OpenID Connect Core §3.1.3.7 with the jwtRule's keys: signature, `iss`, `aud` holds our
    /// client (and `azp` names it when there are several audiences), `exp`, `nonce`.
    fn check_id_token(&mut self, token: &str, nonce: &str, cx: &mut Ctx<'_>) -> IdCheck {
        let cfg = self.cfg.clone();
        let Ok(jwt) = crate::jwt::parse(token, MAX_TOKEN_BYTES) else {
            return IdCheck::Invalid("is malformed");
        };
        if jwt.claims.iss.as_deref() != Some(cfg.issuer.as_str()) {
            return IdCheck::Invalid("has another issuer");
        }
        if !jwt.claims.aud.iter().any(|a| a == &cfg.client_id) {
            return IdCheck::Invalid("is not for this client (aud)");
        }
        if jwt.claims.aud.len() > 1 && jwt.claims.azp.as_deref() != Some(cfg.client_id.as_str()) {
            return IdCheck::Invalid("is not for this client (azp)");
        }
        if jwt.claims.exp.is_none() {
            return IdCheck::Invalid("has no exp");
        }
        match check_time(
            jwt.claims.exp,
            jwt.claims.nbf,
            cx.now(),
            cfg.clock_skew_secs,
        ) {
            Ok(()) => {}
            Err(AuthnError::NotYetValid) => return IdCheck::Invalid("is not yet valid"),
            Err(_) => return IdCheck::Invalid("is expired"),
        }
        let nonce_ok = jwt
            .payload
            .get("nonce")
            .and_then(|n| n.as_str())
            .is_some_and(|n| pkce::ct_eq(n, nonce));
        if !nonce_ok {
            return IdCheck::Invalid("nonce does not match this login");
        }
        let keys = match cx.keys.lookup(cfg.rule, cx.now_ms) {
            KeyLookup::Ready(k) => k,
            KeyLookup::Wait(call) => return IdCheck::Wait(cfg.rule, call),
            KeyLookup::Unavailable => return IdCheck::KeysUnavailable,
        };
        match verify_signature(&jwt, &keys, cx.crypto) {
            Ok(_) => IdCheck::Valid,
            Err(AuthnError::KidAlgMismatch) => match cx.keys.kid_miss(cfg.rule, cx.now_ms) {
                Some(call) => IdCheck::Wait(cfg.rule, call),
                None => IdCheck::Invalid("is signed with an unknown key"),
            },
            Err(_) => IdCheck::Invalid("signature does not verify"),
        }
    }

    fn logout(
        &mut self,
        req: &RequestAttrs,
        cont: &mut Option<Continuation>,
        cx: &mut Ctx<'_>,
    ) -> Step {
        let cfg = self.cfg.clone();
        let end_session = match self.end_session_endpoint(cx.now_ms) {
            Lookup::Ready(e) => e,
            Lookup::Wait(call) => {
                return self.wait_for_discovery(call, cont, Continuation::Discovery)
            }
            // The local session ends in any case.
            Lookup::Unavailable => None,
        };
        let sent = read_session_cookies(req, &cfg.cookie_name);
        if let Some(v) = &sent.value {
            self.sessions.remove(v);
        }
        // An expired session still names the provider session to end.
        let id_token = sent
            .value
            .as_deref()
            .and_then(|v| cfg.cookie_keys.open(&session_purpose(&cfg.cookie_name), v))
            .and_then(|b| Session::decode(&b))
            .and_then(|s| s.id_token);
        let clear = clear_session_cookies(&cfg.cookie_name, &sent.present, cfg.cookie_secure);
        cx.metrics.increment(Metric::Sso(SsoEvent::Logout));
        let location = match end_session {
            Some(url) => {
                let mut q = form_urlencoded::Serializer::new(String::new());
                if let Some(t) = &id_token {
                    q.append_pair("id_token_hint", t);
                }
                q.append_pair(
                    "post_logout_redirect_uri",
                    &absolute(req, &cfg.post_logout_redirect),
                )
                .append_pair("client_id", &cfg.client_id);
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}{}", q.finish())
            }
            None => cfg.post_logout_redirect.clone(),
        };
        Step::Respond(Reply::redirect(location, clear))
    }

    // -----------------------------------------------------------------------------------------
    // Calls and their results.

    /// Periodic work: discovery at start and after backoff, stuck calls, old results.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<HttpCall> {
        self.unstick_discovery(now_ms);
        let timeout_ms = self.cfg.timeout.as_millis() as u64;
        let mut gone = Vec::new();
        for (id, f) in &mut self.flows {
            match &f.result {
                None if now_ms > f.started_ms.saturating_add(timeout_ms + 2 * WAIT_GRACE_MS) => {
                    // Every dispatched call ends with a response or a timeout; this is a net.
                    f.result = Some((TokenOutcome::Unavailable("no response".into()), now_ms));
                }
                Some((_, done)) => {
                    let ttl = match f.kind {
                        FlowKind::Exchange => EXCHANGE_RESULT_TTL_MS,
                        FlowKind::Refresh(_) => REFRESH_RESULT_TTL_MS,
                    };
                    if now_ms > done.saturating_add(ttl) {
                        gone.push(*id);
                    }
                }
                None => {}
            }
        }
        for id in gone {
            if let Some(Flow {
                kind: FlowKind::Refresh(key),
                ..
            }) = self.flows.remove(&id)
            {
                self.refreshing.remove(&key);
            }
        }
        if !self.used_states.is_empty() {
            let now = now_ms / 1000;
            self.used_states.retain(|_, until| *until >= now);
        }
        match self.start_discovery_if_due(now_ms) {
            Some(c) => vec![c],
            None => Vec::new(),
        }
    }

    /// A response to one of our calls (`status` None: no HTTP response).
    pub fn on_call_response(
        &mut self,
        call: SsoCall,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
        metrics: &mut dyn MetricSink,
    ) -> Settled {
        match call {
            SsoCall::Discovery => {
                if self.discovery.in_flight_since.take().is_none() {
                    return Settled::default();
                }
                match self.parse_discovery(status, body) {
                    Ok(d) => {
                        metrics.increment(Metric::Sso(SsoEvent::DiscoveryOk));
                        log::debug!(
                            "single sign-on endpoints discovered for {}",
                            self.cfg.issuer
                        );
                        self.discovery.found = Some(d);
                        self.discovery.failures = 0;
                    }
                    Err(why) => {
                        metrics.increment(Metric::Sso(SsoEvent::DiscoveryFailed));
                        log::warn!("OIDC discovery for {} failed: {why}", self.cfg.issuer);
                        self.discovery_failed(now_ms);
                    }
                }
                Settled {
                    settled: vec![WaitKey::SsoDiscovery],
                    calls: Vec::new(),
                }
            }
            SsoCall::Token(id) => {
                let Some(f) = self.flows.get_mut(&id) else {
                    return Settled::default();
                };
                if f.result.is_some() {
                    return Settled::default();
                }
                let outcome =
                    token_response::parse(status, body, now_ms / 1000, client_secret(&self.cfg));
                let what = match f.kind {
                    FlowKind::Exchange => "code exchange",
                    FlowKind::Refresh(_) => "refresh",
                };
                match (&outcome, &f.kind) {
                    (TokenOutcome::Ok(_), FlowKind::Refresh(_)) => {
                        metrics.increment(Metric::Sso(SsoEvent::RefreshOk))
                    }
                    (TokenOutcome::Rejected { error }, kind) => {
                        if matches!(kind, FlowKind::Refresh(_)) {
                            metrics.increment(Metric::Sso(SsoEvent::RefreshRejected));
                        }
                        log::info!("token endpoint refused the {what}: {error}");
                    }
                    (TokenOutcome::Unavailable(why), kind) => {
                        if matches!(kind, FlowKind::Refresh(_)) {
                            metrics.increment(Metric::Sso(SsoEvent::RefreshFailed));
                        }
                        log::warn!("token endpoint {what} failed: {why}");
                    }
                    (TokenOutcome::Ok(_), FlowKind::Exchange) => {}
                }
                if f.abandoned {
                    self.flows.remove(&id);
                } else {
                    f.result = Some((outcome, now_ms));
                }
                Settled {
                    settled: vec![WaitKey::SsoFlow(id)],
                    calls: Vec::new(),
                }
            }
        }
    }

    /// The host refused to send one of our calls.
    pub fn on_dispatch_failed(
        &mut self,
        call: SsoCall,
        now_ms: u64,
        metrics: &mut dyn MetricSink,
    ) -> Vec<WaitKey> {
        self.on_call_response(call, None, b"", now_ms, metrics)
            .settled
    }

    /// A page load whose session token the `jwtRules` rejected: the session is over (its cookies
    /// cleared, its cached copy dropped) and the browser signs in again.
    pub fn sign_in_again(
        &mut self,
        req: &RequestAttrs,
        cont: &mut Option<Continuation>,
        cx: &mut Ctx<'_>,
    ) -> Step {
        let cfg = self.cfg.clone();
        let sent = read_session_cookies(req, &cfg.cookie_name);
        if let Some(v) = &sent.value {
            self.sessions.remove(v);
        }
        log::debug!("the session's access token was rejected; signing in again");
        cx.metrics.increment(Metric::Sso(SsoEvent::SessionInvalid));
        let clear = clear_session_cookies(&cfg.cookie_name, &sent.present, cfg.cookie_secure);
        self.start_login(req, clear, cont, cx)
    }

    /// The paused request that stopped at `cont` is gone.
    pub fn forget(&mut self, cont: &Continuation) {
        if let Continuation::Exchange { flow, .. } = cont {
            match self.flows.get_mut(flow) {
                Some(f) if f.result.is_some() => {
                    self.flows.remove(flow);
                }
                Some(f) => f.abandoned = true,
                None => {}
            }
        }
    }

    /// The answer for a request whose wait ran out at `cont`.
    pub fn wait_expired(&self, req: &RequestAttrs, metrics: &mut dyn MetricSink) -> Reply {
        log::info!("request waited its whole timeout for the identity provider");
        match self.deny(
            req,
            SsoError::ProviderUnavailable,
            None,
            Vec::new(),
            metrics,
        ) {
            Step::Respond(r) => r,
            // `deny` always responds.
            _ => Denial::Sso {
                error: SsoError::ProviderUnavailable,
                detail: None,
            }
            .to_reply(&crate::engine::realm(req), &REPLY_OPTIONS),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Helpers.

    fn deny(
        &self,
        req: &RequestAttrs,
        error: SsoError,
        detail: Option<String>,
        set_cookies: Vec<String>,
        metrics: &mut dyn MetricSink,
    ) -> Step {
        metrics.increment(Metric::SsoDenied(error));
        let mut reply =
            Denial::Sso { error, detail }.to_reply(&crate::engine::realm(req), &REPLY_OPTIONS);
        reply.headers.extend(
            set_cookies
                .into_iter()
                .map(|c| ("set-cookie".to_string(), c)),
        );
        Step::Respond(reply)
    }

    fn clear_login_cookie(&self, state: &str) -> String {
        clear_cookie(
            &login_cookie_name(&self.cfg.cookie_name, state),
            &self.cfg.callback_path,
            self.cfg.cookie_secure,
        )
    }

    /// `Set-Cookie` values for `session`; None when it does not fit (or no randomness).
    fn session_cookies(
        &self,
        session: &Session,
        present: &[String],
        cx: &mut Ctx<'_>,
    ) -> Option<Vec<String>> {
        let cfg = &self.cfg;
        let sealed = cfg.cookie_keys.seal(
            &session_purpose(&cfg.cookie_name),
            &session.encode()?,
            cx.rng,
        )?;
        let end = session.created.saturating_add(cfg.session_lifetime_secs);
        let max_age = end.saturating_sub(cx.now());
        let cookies = session_set_cookies(
            &cfg.cookie_name,
            &sealed,
            max_age,
            cfg.cookie_secure,
            present,
        );
        if cookies.is_none() {
            log::warn!(
                "session of {} bytes does not fit in {} cookies",
                sealed.len(),
                super::session::MAX_CHUNKS
            );
        }
        cookies
    }

    /// Waits for the provider's discovery document; the request then runs again from `resume_at`.
    fn wait_for_discovery(
        &self,
        call: Option<HttpCall>,
        cont: &mut Option<Continuation>,
        resume_at: Continuation,
    ) -> Step {
        *cont = Some(resume_at);
        Step::Wait(self.wait_on(WaitKey::SsoDiscovery, call.into_iter().collect()))
    }

    fn wait_on(&self, key: WaitKey, calls: Vec<HttpCall>) -> Wait {
        Wait {
            on: vec![key],
            calls,
            timeout_ms: self.cfg.timeout.as_millis() as u64 + WAIT_GRACE_MS,
        }
    }

    fn start_flow(&mut self, kind: FlowKind, now_ms: u64) -> u64 {
        let id = self.next_flow;
        self.next_flow = self.next_flow.wrapping_add(1).max(1);
        self.flows.insert(
            id,
            Flow {
                kind,
                started_ms: now_ms,
                result: None,
                abandoned: false,
            },
        );
        id
    }

    fn remember_state(&mut self, state: String, until: u64, now: u64) {
        if self.used_states.len() >= MAX_USED_STATES {
            self.used_states.retain(|_, u| *u >= now);
            if self.used_states.len() >= MAX_USED_STATES {
                // Full of live entries: forget the one closest to expiry.
                if let Some(k) = self
                    .used_states
                    .iter()
                    .min_by_key(|(_, u)| **u)
                    .map(|(k, _)| k.clone())
                {
                    self.used_states.remove(&k);
                }
            }
        }
        self.used_states.insert(state, until);
    }

    /// A POST to the token endpoint with client authentication.
    fn token_call(
        &self,
        flow: u64,
        target: &HttpTarget,
        mut form: form_urlencoded::Serializer<'_, String>,
    ) -> HttpCall {
        let cfg = &self.cfg;
        let authorization = match (&cfg.client_secret, cfg.client_auth) {
            (Some(secret), ClientAuthMethod::ClientSecretBasic) => {
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let basic = STANDARD.encode(format!("{}:{}", enc(&cfg.client_id), enc(&secret.0)));
                form.append_pair("client_id", &cfg.client_id);
                Some(format!("Basic {basic}"))
            }
            (Some(secret), ClientAuthMethod::ClientSecretPost) => {
                form.append_pair("client_id", &cfg.client_id)
                    .append_pair("client_secret", &secret.0);
                None
            }
            (None, _) => {
                form.append_pair("client_id", &cfg.client_id);
                None
            }
        };
        let body = form.finish().into_bytes();
        let mut headers = target.form_post_headers(body.len());
        if let Some(a) = authorization {
            headers.push(("authorization".to_string(), a));
        }
        HttpCall {
            id: CallId::Sso(SsoCall::Token(flow)),
            cluster: cfg.cluster.clone(),
            headers,
            body: Some(body),
            timeout: cfg.timeout,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Endpoints and discovery.

    fn authorization_endpoint(&mut self, now_ms: u64) -> Lookup<String> {
        if let Some(u) = &self.cfg.configured.authorization {
            return Lookup::Ready(u.clone());
        }
        self.discovered(now_ms, |d| d.authorization.clone())
    }

    fn token_endpoint(&mut self, now_ms: u64) -> Lookup<HttpTarget> {
        if let Some(t) = &self.cfg.configured.token {
            return Lookup::Ready(t.clone());
        }
        self.discovered(now_ms, |d| d.token.clone())
    }

    fn end_session_endpoint(&mut self, now_ms: u64) -> Lookup<Option<String>> {
        if let Some(u) = &self.cfg.configured.end_session {
            return Lookup::Ready(Some(u.clone()));
        }
        self.discovered(now_ms, |d| d.end_session.clone())
    }

    fn discovered<T>(&mut self, now_ms: u64, pick: impl Fn(&Discovered) -> T) -> Lookup<T> {
        self.unstick_discovery(now_ms);
        if let Some(d) = &self.discovery.found {
            return Lookup::Ready(pick(d));
        }
        if self.discovery.in_flight_since.is_some() {
            return Lookup::Wait(None);
        }
        if now_ms < self.discovery.retry_at_ms {
            return Lookup::Unavailable;
        }
        match self.start_discovery_if_due(now_ms) {
            Some(c) => Lookup::Wait(Some(c)),
            None => Lookup::Unavailable,
        }
    }

    fn start_discovery_if_due(&mut self, now_ms: u64) -> Option<HttpCall> {
        let target = self.cfg.discovery.as_ref()?;
        let d = &mut self.discovery;
        if d.found.is_some() || d.in_flight_since.is_some() || now_ms < d.retry_at_ms {
            return None;
        }
        d.in_flight_since = Some(now_ms);
        Some(HttpCall {
            id: CallId::Sso(SsoCall::Discovery),
            cluster: self.cfg.cluster.clone(),
            headers: target.request_headers("GET"),
            body: None,
            timeout: self.cfg.timeout,
        })
    }

    fn unstick_discovery(&mut self, now_ms: u64) {
        let limit = self.cfg.timeout.as_millis() as u64 + 2 * WAIT_GRACE_MS;
        if self
            .discovery
            .in_flight_since
            .is_some_and(|since| now_ms > since.saturating_add(limit))
        {
            self.discovery.in_flight_since = None;
            self.discovery_failed(now_ms);
        }
    }

    fn discovery_failed(&mut self, now_ms: u64) {
        let d = &mut self.discovery;
        d.failures = d.failures.saturating_add(1);
        let backoff = MIN_BACKOFF_MS
            .saturating_mul(1 << d.failures.saturating_sub(1).min(16))
            .min(MAX_BACKOFF_MS);
        d.retry_at_ms = now_ms.saturating_add(backoff);
    }

    /// The discovery answer, or why it is unusable: for a log line, so bounded, printable and
    /// with the client secret redacted (it may quote the document).
    fn parse_discovery(&self, status: Option<u32>, body: &[u8]) -> Result<Discovered, String> {
        self.read_discovery(status, body).map_err(|why| {
            crate::idp_text::sanitize(
                &why,
                client_secret(&self.cfg),
                |c| !c.is_control(),
                MAX_REASON_CHARS,
            )
        })
    }

    fn read_discovery(&self, status: Option<u32>, body: &[u8]) -> Result<Discovered, String> {
        match status {
            None => return Err("no response (timeout or connection failure)".into()),
            Some(200) => {}
            Some(s) => return Err(format!("HTTP status {s}")),
        }
        let doc = discovery_document(body)?;
        // Values are quoted raw (not Debug-escaped) so that parse_discovery's filter and redaction see
        // the characters the provider sent: an escaped control character would hide a secret.
        let field = |name: &str| doc.get(name).and_then(|v| v.as_str());
        // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
        if field("issuer") != Some(self.cfg.issuer.as_str()) {
            return Err(format!(
                "discovery document names issuer \"{}\", not \"{}\"",
                field("issuer").unwrap_or(""),
                self.cfg.issuer
            ));
        }
        // A URL with control characters is unusable, and http_target's message would escape them.
        for name in [
            "authorization_endpoint",
            "token_endpoint",
            "end_session_endpoint",
        ] {
            if field(name).is_some_and(|u| u.chars().any(char::is_control)) {
                return Err(format!("{name} holds control characters"));
            }
        }
        let url = |name: &str| -> Result<Option<String>, String> {
            match field(name) {
                None => Ok(None),
                Some(u) => http_target(u, None)
                    .map(|_| Some(u.to_string()))
                    .map_err(|e| format!("{name}: {e}")),
            }
        };
        let authorization = url("authorization_endpoint")?
            .ok_or("discovery document has no authorization_endpoint")?;
        let token = field("token_endpoint").ok_or("discovery document has no token_endpoint")?;
        let token = http_target(token, Some(&self.cfg.cluster))
            .map_err(|e| format!("token_endpoint: {e}"))?;
        Ok(Discovered {
            authorization,
            token,
            end_session: url("end_session_endpoint")?,
        })
    }
}

/// The secret a token call sends, "" for a public client: what the provider's answers must not echo.
fn client_secret(cfg: &OidcSettings) -> &str {
    cfg.client_secret.as_ref().map_or("", |s| s.0.as_str())
}

/// `Authorization: Bearer ...` (the exact prefix jwtRules look for by default).
fn has_bearer(req: &RequestAttrs) -> bool {
    req.headers
        .iter()
        .any(|(n, v)| n == "authorization" && v.starts_with("Bearer "))
}

/// A page the user navigates to: GET or HEAD that accepts HTML. Everything else (XHR, fetch,
/// API clients, form posts) gets a 401 instead of a redirect it could not follow.
pub fn is_browser_navigation(req: &RequestAttrs) -> bool {
    (req.method == "GET" || req.method == "HEAD")
        && req
            .headers
            .iter()
            .any(|(n, v)| n == "accept" && v.contains("text/html"))
}

/// Where to return after login: the request's own path and query when it is a plain path on
/// this host, else `/` (never `//host`, `/\host` or anything a browser could read as another
/// host).
pub fn return_path(path: &str) -> &str {
    if path.len() <= MAX_RETURN_PATH && is_local_path(path) {
        path
    } else {
        "/"
    }
}

/// The request's scheme as the client saw it: `x-forwarded-proto` (set by the gateway's own
/// Envoy at the edge), else `:scheme`.
fn scheme(req: &RequestAttrs) -> &str {
    let xfp = req
        .header("x-forwarded-proto")
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    match xfp {
        Some(p @ ("http" | "https")) => p,
        _ if req.scheme == "https" => "https",
        _ => "http",
    }
}

fn callback_uri(req: &RequestAttrs, callback_path: &str) -> String {
    format!("{}://{}{callback_path}", scheme(req), req.host)
}

/// An absolute URL for `target` (already absolute, or a path on the request's host).
fn absolute(req: &RequestAttrs, target: &str) -> String {
    if target.starts_with('/') {
        format!("{}://{}{target}", scheme(req), req.host)
    } else {
        target.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discovery_failure_is_bounded_and_never_quotes_the_client_secret() {
        // Its reason goes to a warning log line and quotes the document: an issuer of 60 KB
        // was logged whole, and a client secret the provider echoed in it too.
        let cfg = serde_json::json!({"jwtRules": [{"issuer": "http://kc/realms/r",
            "jwksUri": "http://kc/realms/r/certs"}],
            "oidc": {"issuer": "http://kc/realms/r", "clientId": "gw",
            "clientSecret": "gw-secret", "cookieSecret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}});
        let settings = match crate::config::Settings::from_json(cfg.to_string().as_bytes()) {
            Ok(s) => s,
            Err(e) => panic!("{e:?}"),
        };
        let sso = Sso::new(settings.oidc.unwrap());
        let issuer = format!("http://kc/gw-secret{}", "x".repeat(60_000));
        let doc = serde_json::json!({ "issuer": issuer }).to_string();
        let Err(why) = sso.parse_discovery(Some(200), doc.as_bytes()) else {
            panic!("accepted")
        };
        assert_eq!(
            why,
            format!(
                "discovery document names issuer \"http://kc/<redacted>{}",
                "x".repeat(200 - 53)
            )
        );
        let doc = serde_json::json!({"issuer": "http://kc/realms/r",
            "authorization_endpoint": "ftp://kc/gw-secret"});
        let Err(why) = sso.parse_discovery(Some(200), doc.to_string().as_bytes()) else {
            panic!("accepted")
        };
        assert_eq!(
            why,
            "authorization_endpoint: \"ftp://kc/<redacted>\": scheme must be http or https"
        );
        // A secret echoed with a control character inside: filtered, then redacted, never escaped.
        let doc = serde_json::json!({ "issuer": "http://kc/gw\u{1}-secret" }).to_string();
        let Err(why) = sso.parse_discovery(Some(200), doc.as_bytes()) else {
            panic!("accepted")
        };
        assert_eq!(
            why,
            "discovery document names issuer \"http://kc/<redacted>\", not \"http://kc/realms/r\""
        );
        let doc = serde_json::json!({"issuer": "http://kc/realms/r",
            "authorization_endpoint": "http://kc/gw\u{1}-secret"});
        let Err(why) = sso.parse_discovery(Some(200), doc.to_string().as_bytes()) else {
            panic!("accepted")
        };
        assert_eq!(why, "authorization_endpoint holds control characters");
    }

    #[test]
    fn return_paths_stay_on_this_host() {
        assert_eq!(return_path("/app/x?y=1"), "/app/x?y=1");
        for bad in [
            "//evil.example/x",
            "/\\evil.example",
            "http://evil",
            "",
            "/a\r\nb",
            "/a b",
        ] {
            assert_eq!(return_path(bad), "/", "{bad:?}");
        }
        assert_eq!(
            return_path(&format!("/{}", "a".repeat(MAX_RETURN_PATH))),
            "/"
        );
    }

    #[test]
    fn browser_navigation_needs_get_and_html() {
        let mut r = RequestAttrs {
            method: "GET".into(),
            headers: vec![("accept".into(), "text/html,application/xhtml+xml".into())],
            ..Default::default()
        };
        assert!(is_browser_navigation(&r));
        r.method = "POST".into();
        assert!(!is_browser_navigation(&r));
        r.method = "GET".into();
        r.headers = vec![("accept".into(), "*/*".into())];
        assert!(!is_browser_navigation(&r));
    }

    #[test]
    fn scheme_from_forwarded_proto() {
        let mut r = RequestAttrs {
            scheme: "http".into(),
            host: "app".into(),
            headers: vec![("x-forwarded-proto".into(), "https, http".into())],
            ..Default::default()
        };
        assert_eq!(callback_uri(&r, "/cb"), "https://app/cb");
        r.headers[0].1 = "gopher".into();
        assert_eq!(callback_uri(&r, "/cb"), "http://app/cb");
        assert_eq!(absolute(&r, "/"), "http://app/");
        assert_eq!(absolute(&r, "https://x/"), "https://x/");
    }
}
