//! Per-target token state: one client-credentials token per target per Wasm VM, fetched
//! single-flight, refreshed at `refreshAt` of its lifetime on the tick (traffic keeps using the
//! current token meanwhile), never handed out at or after its expiry, retried with exponential
//! backoff (1 s … 30 s) after failures, and the token endpoint found by OIDC discovery when the
//! target names an `issuer`. Pure: time is an input, calls are returned as [`HttpCall`]s.

use super::config::{EgressTarget, Endpoint, TokenRequest};
use crate::calls::{CallId, HttpCall};
use crate::config::{HttpTarget, MAX_TOKEN_BYTES};
use crate::http_target::discovered_endpoint;
use serde_json::Value;
use std::rc::Rc;
use std::time::Duration;

const MIN_BACKOFF_MS: u64 = 1_000;
pub const MAX_BACKOFF_MS: u64 = 30_000;
/// A call whose response never came is given up this long after its own timeout (safety net).
const STUCK_GRACE_MS: u64 = 2_000;
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest lifetime believed (a year): bounds the arithmetic, not a policy.
const MAX_LIFETIME_MS: u64 = 365 * 24 * 3600 * 1000;
/// Longest IdP error text repeated in logs and replies.
const MAX_ERROR_TEXT: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Discovery,
    Token,
}

/// Identifies a call of a target: at most one is in flight per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchId {
    pub target: usize,
    pub phase: Phase,
}

/// What a request to this target can do now.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenLookup {
    /// `Bearer <token>`, valid now.
    Ready(Rc<str>),
    /// No usable token; a fetch is in flight (the call is set when this lookup started it).
    Wait(Option<HttpCall>),
    /// No usable token and the last fetch failed (backoff runs): answer now.
    Unavailable,
}

/// A fetch that failed, for logs, metrics and the 503 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why, in one line (never the secret or a token).
    pub reason: String,
    /// The token endpoint refused the request (HTTP 400/401/403): credentials or client set-up.
    pub rejected: bool,
}

/// What a call response changed.
#[derive(Debug, Default, PartialEq)]
pub struct FetchOutcome {
    /// Follow-up call (the token request after discovery).
    pub next: Option<HttpCall>,
    /// A new token: its lifetime in ms (for a debug log).
    pub obtained_lifetime_ms: Option<u64>,
    pub failed: Option<Failure>,
}

#[derive(Debug, Clone)]
struct Held {
    authorization: Rc<str>,
    expires_at_ms: u64,
    refresh_at_ms: u64,
}

#[derive(Debug)]
struct TargetState {
    held: Option<Held>,
    /// `tokenEndpoint`, or the `token_endpoint` discovery found.
    token_endpoint: Option<HttpTarget>,
    discovery: Option<(HttpTarget, Option<String>)>,
    /// Phase and send time of the call in flight.
    in_flight: Option<(Phase, u64)>,
    failures: u32,
    retry_at_ms: u64,
    last_failure: Option<Failure>,
    request: TokenRequest,
    timeout: Duration,
    refresh_at: f64,
}

#[derive(Debug)]
pub struct TokenStore {
    targets: Vec<TargetState>,
}

impl TokenStore {
    pub fn new(targets: &[EgressTarget]) -> TokenStore {
        TokenStore {
            targets: targets
                .iter()
                .map(|t| {
                    let (token_endpoint, discovery) = match &t.endpoint {
                        Endpoint::Token(e) => (Some(e.clone()), None),
                        Endpoint::Discovery {
                            discovery,
                            cluster_override,
                        } => (None, Some((discovery.clone(), cluster_override.clone()))),
                    };
                    TargetState {
                        held: None,
                        token_endpoint,
                        discovery,
                        in_flight: None,
                        failures: 0,
                        retry_at_ms: 0,
                        last_failure: None,
                        request: t.request.clone(),
                        timeout: t.timeout,
                        refresh_at: t.refresh_at,
                    }
                })
                .collect(),
        }
    }

    /// The token for a request to `target`, starting a fetch when there is none.
    pub fn lookup(&mut self, target: usize, now_ms: u64) -> TokenLookup {
        self.unstick(target, now_ms);
        let Some(st) = self.targets.get(target) else {
            return TokenLookup::Unavailable;
        };
        if let Some(h) = st.held.as_ref().filter(|h| now_ms < h.expires_at_ms) {
            return TokenLookup::Ready(h.authorization.clone());
        }
        if st.in_flight.is_some() {
            return TokenLookup::Wait(None);
        }
        if now_ms < st.retry_at_ms {
            return TokenLookup::Unavailable;
        }
        TokenLookup::Wait(self.start(target, now_ms))
    }

    /// Whether a call of `target` is in flight.
    pub fn in_flight(&self, target: usize) -> bool {
        self.targets
            .get(target)
            .is_some_and(|s| s.in_flight.is_some())
    }

    /// Why the last fetch of `target` failed (for the 503 body), if it did.
    pub fn last_failure(&self, target: usize) -> Option<&Failure> {
        self.targets.get(target)?.last_failure.as_ref()
    }

    /// Periodic work (tick, and once at configure): first fetches, refreshes due at
    /// `refreshAt`, retries after backoff.
    pub fn due_fetches(&mut self, now_ms: u64) -> Vec<HttpCall> {
        let mut out = Vec::new();
        for i in 0..self.targets.len() {
            self.unstick(i, now_ms);
            let st = &self.targets[i];
            if st.in_flight.is_some() || now_ms < st.retry_at_ms {
                continue;
            }
            if st.held.as_ref().is_none_or(|h| now_ms >= h.refresh_at_ms) {
                out.extend(self.start(i, now_ms));
            }
        }
        out
    }

    /// The host refused to send the call (unknown cluster, bad argument).
    pub fn on_dispatch_failed(&mut self, id: FetchId, now_ms: u64) -> Failure {
        let f = Failure {
            reason: "the call could not be sent (no such cluster?)".into(),
            rejected: false,
        };
        self.fail(id.target, now_ms, f.clone());
        f
    }

    /// A call response (`status` None: timeout or connection failure).
    pub fn on_response(
        &mut self,
        id: FetchId,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
    ) -> FetchOutcome {
        let mut outcome = FetchOutcome::default();
        let Some(st) = self.targets.get_mut(id.target) else {
            return outcome;
        };
        let sent_at = match st.in_flight {
            Some((phase, sent_at)) if phase == id.phase => sent_at,
            // A late response to a call given up on.
            _ => return outcome,
        };
        st.in_flight = None;
        let result = match (status, id.phase) {
            (None, _) => Err(Failure {
                reason: "no response (timeout or connection failure)".into(),
                rejected: false,
            }),
            (Some(200), Phase::Discovery) => discovered_endpoint(
                body,
                "token_endpoint",
                st.discovery.as_ref().and_then(|d| d.1.as_deref()),
            )
            .map(|e| {
                st.token_endpoint = Some(e);
                None
            })
            .map_err(|reason| Failure {
                // It quotes the document (an endpoint URL): bounded, secret redacted.
                reason: clean(&reason, st.request.secret.expose()),
                rejected: false,
            }),
            (Some(200), Phase::Token) => {
                parse_token_response(body, sent_at, st.refresh_at, st.request.secret.expose())
                    .map(Some)
                    .map_err(|reason| Failure {
                        reason,
                        rejected: false,
                    })
            }
            (Some(s), Phase::Discovery) => Err(Failure {
                reason: format!("discovery answered HTTP {s}"),
                rejected: false,
            }),
            (Some(s), Phase::Token) => Err(Failure {
                reason: scrub(
                    &format!(
                        "token endpoint answered HTTP {s}{}",
                        oauth_error(body, st.request.secret.expose())
                    ),
                    st.request.secret.expose(),
                ),
                rejected: matches!(s, 400 | 401 | 403),
            }),
        };
        match result {
            Ok(None) => outcome.next = self.start(id.target, now_ms),
            Ok(Some(held)) => {
                outcome.obtained_lifetime_ms = Some(held.expires_at_ms.saturating_sub(sent_at));
                st.held = Some(held);
                st.failures = 0;
                st.retry_at_ms = 0;
                st.last_failure = None;
            }
            Err(f) => {
                self.fail(id.target, now_ms, f.clone());
                outcome.failed = Some(f);
            }
        }
        outcome
    }

    fn start(&mut self, target: usize, now_ms: u64) -> Option<HttpCall> {
        let st = self.targets.get_mut(target)?;
        let (phase, endpoint) = match (&st.token_endpoint, &st.discovery) {
            (Some(e), _) => (Phase::Token, e),
            (None, Some((d, _))) => (Phase::Discovery, d),
            (None, None) => return None,
        };
        let (headers, body) = if phase == Phase::Token {
            let form = st.request.body.expose().as_bytes().to_vec();
            let mut headers = endpoint.form_post_headers(form.len());
            if let Some(a) = &st.request.authorization {
                headers.push(("authorization".into(), a.expose().to_string()));
            }
            (headers, Some(form))
        } else {
            (endpoint.request_headers("GET"), None)
        };
        let call = HttpCall {
            id: CallId::Egress(FetchId { target, phase }),
            cluster: endpoint.cluster.clone(),
            headers,
            body,
            timeout: st.timeout,
        };
        st.in_flight = Some((phase, now_ms));
        Some(call)
    }

    fn fail(&mut self, target: usize, now_ms: u64, failure: Failure) {
        let Some(st) = self.targets.get_mut(target) else {
            return;
        };
        st.in_flight = None;
        st.failures = st.failures.saturating_add(1);
        let backoff = MIN_BACKOFF_MS
            .saturating_mul(1 << st.failures.saturating_sub(1).min(16))
            .min(MAX_BACKOFF_MS);
        st.retry_at_ms = now_ms.saturating_add(backoff);
        // A discovered endpoint may be what broke; an OAuth refusal proves it is the right one.
        if st.discovery.is_some() && !failure.rejected {
            st.token_endpoint = None;
        }
        st.last_failure = Some(failure);
    }

    fn unstick(&mut self, target: usize, now_ms: u64) {
        let stuck = self.targets.get(target).is_some_and(|st| {
            st.in_flight.is_some_and(|(_, since)| {
                now_ms
                    > since
                        .saturating_add(st.timeout.as_millis() as u64)
                        .saturating_add(STUCK_GRACE_MS)
            })
        });
        if stuck {
            self.fail(
                target,
                now_ms,
                Failure {
                    reason: "no response (the call was lost)".into(),
                    rejected: false,
                },
            );
        }
    }
}

/// RFC 6749 §5.1 success response → the held token. Lifetime from `expires_in`, else from the
/// JWT `exp` of the access token; counted from when the request was sent (the token cannot be
/// older), so it expires here no later than at the IdP.
fn parse_token_response(
    body: &[u8],
    sent_at_ms: u64,
    refresh_at: f64,
    secret: &str,
) -> Result<Held, String> {
    if body.len() > MAX_RESPONSE_BYTES {
        return Err("token response is too large".into());
    }
    let doc: Value =
        serde_json::from_slice(body).map_err(|_| "token response is not JSON".to_string())?;
    let token = doc
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("token response has no access_token")?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "access_token is larger than {MAX_TOKEN_BYTES} bytes"
        ));
    }
    // RFC 6750 b64token: nothing that could end or split a header value.
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
    {
        return Err("access_token has characters a Bearer token cannot have".into());
    }
    match doc.get("token_type") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(Value::String(t)) => {
            return Err(format!("token_type {:?} is not Bearer", clean(t, secret)))
        }
        Some(_) => return Err("token_type is not a string".into()),
    }
    let expires_at_ms = match doc.get("expires_in") {
        Some(v) => {
            let secs = match v {
                Value::Number(n) => n
                    .as_u64()
                    .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
                // Some servers send it as a string.
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            }
            .ok_or("expires_in is not a number of seconds")?;
            let lifetime = secs.saturating_mul(1000).min(MAX_LIFETIME_MS);
            sent_at_ms.saturating_add(lifetime)
        }
        None => {
            let exp = jwt_exp(token).ok_or(
                "token response has no expires_in and the access token is not a JWT with exp",
            )?;
            exp.saturating_mul(1000)
        }
    };
    let lifetime = expires_at_ms.saturating_sub(sent_at_ms);
    if lifetime == 0 {
        return Err("the token is already expired".into());
    }
    Ok(Held {
        authorization: Rc::from(format!("Bearer {token}")),
        expires_at_ms,
        refresh_at_ms: sent_at_ms.saturating_add((lifetime as f64 * refresh_at) as u64),
    })
}

/// The `exp` claim of a compact JWS (unverified: it only schedules the refresh).
fn jwt_exp(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let payload = parts.nth(1)?;
    let bytes = crate::jwt::b64url_decode(payload)?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    exp.as_u64()
        .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// ` <error>: <error_description>` of an RFC 6749 §5.2 error body, or `: <first line>` of a short
/// text body (Envoy's own answers: `upstream request timeout`), bounded and printable.
fn oauth_error(body: &[u8], secret: &str) -> String {
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        return match std::str::from_utf8(body).map(|t| t.lines().next().unwrap_or("").trim()) {
            Ok(line) if !line.is_empty() && line.len() <= MAX_ERROR_TEXT => {
                format!(": {}", clean(line, secret))
            }
            _ => String::new(),
        };
    };
    let field = |k: &str| doc.get(k).and_then(Value::as_str).map(|v| clean(v, secret));
    match (field("error"), field("error_description")) {
        (Some(e), Some(d)) => format!(" {e}: {d}"),
        (Some(e), None) => format!(" {e}"),
        _ => String::new(),
    }
}

/// An IdP's text for a log line or a reply: printable, the secret redacted, bounded.
fn clean(s: &str, secret: &str) -> String {
    crate::idp_text::sanitize(s, secret, |c| !c.is_control(), MAX_ERROR_TEXT)
}

fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, crate::idp_text::REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::config::{compile, EgressTargetConfig};
    use serde_json::json;

    const T0: u64 = 1_800_000_000_000;

    fn store(extra: Value) -> TokenStore {
        let mut t = json!({"name": "backend", "hosts": ["backend"], "clientId": "frontend",
            "clientSecret": "frontend-secret",
            "tokenEndpoint": "http://kc.local/realms/r/protocol/openid-connect/token",
            "refreshAt": 0.8, "timeout": "5s"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                t.as_object_mut().unwrap().remove(k);
            } else {
                t[k] = v.clone();
            }
        }
        let cfg: Vec<EgressTargetConfig> = serde_json::from_value(json!([t])).unwrap();
        TokenStore::new(&compile(&cfg, "egress", &|_| None).unwrap())
    }

    fn id(c: &HttpCall) -> FetchId {
        match c.id {
            CallId::Egress(f) => f,
            other => panic!("{other:?}"),
        }
    }

    fn ok(token: &str, expires_in: u64) -> Vec<u8> {
        json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in})
            .to_string()
            .into_bytes()
    }

    fn header<'a>(c: &'a HttpCall, name: &str) -> Option<&'a str> {
        c.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn single_flight_then_ready() {
        let mut s = store(json!({}));
        let TokenLookup::Wait(Some(call)) = s.lookup(0, T0) else {
            panic!("first lookup starts the fetch")
        };
        assert_eq!(call.cluster, "outbound|80||kc.local");
        assert_eq!(header(&call, ":method"), Some("POST"));
        assert_eq!(
            header(&call, ":path"),
            Some("/realms/r/protocol/openid-connect/token")
        );
        assert_eq!(
            header(&call, "content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            header(&call, "authorization"),
            Some("Basic ZnJvbnRlbmQ6ZnJvbnRlbmQtc2VjcmV0")
        );
        assert_eq!(
            call.body.as_deref(),
            Some(&b"grant_type=client_credentials"[..])
        );
        assert_eq!(header(&call, "content-length"), Some("29"));
        for _ in 0..100 {
            assert_eq!(
                s.lookup(0, T0 + 1),
                TokenLookup::Wait(None),
                "one fetch for all"
            );
        }
        assert!(
            s.due_fetches(T0 + 2).is_empty(),
            "nor does the tick start another"
        );
        let out = s.on_response(id(&call), Some(200), &ok("abc.def.ghi", 300), T0 + 50);
        assert_eq!(out.obtained_lifetime_ms, Some(300_000));
        assert_eq!(
            s.lookup(0, T0 + 60),
            TokenLookup::Ready(Rc::from("Bearer abc.def.ghi"))
        );
    }

    #[test]
    fn refresh_at_fraction_without_pausing_and_never_past_expiry() {
        let mut s = store(json!({"refreshAt": 0.5}));
        let due = s.due_fetches(T0);
        assert_eq!(due.len(), 1, "fetched at configure time");
        s.on_response(id(&due[0]), Some(200), &ok("t1", 100), T0 + 400);
        // Lifetime counts from the send time: refresh at T0 + 50 s, expiry at T0 + 100 s.
        assert!(s.due_fetches(T0 + 49_999).is_empty());
        let due = s.due_fetches(T0 + 50_000);
        assert_eq!(due.len(), 1, "refresh due at 50 %");
        // While the refresh is in flight, requests keep the current token.
        assert_eq!(
            s.lookup(0, T0 + 50_001),
            TokenLookup::Ready(Rc::from("Bearer t1"))
        );
        // The refresh fails; the old token is still used until it expires, and not after.
        let out = s.on_response(id(&due[0]), None, b"", T0 + 55_000);
        assert!(out.failed.is_some());
        assert_eq!(
            s.lookup(0, T0 + 99_999),
            TokenLookup::Ready(Rc::from("Bearer t1"))
        );
        // Retries meanwhile follow the backoff (1 s, then 2 s).
        assert!(s.due_fetches(T0 + 55_999).is_empty());
        let due = s.due_fetches(T0 + 56_000);
        assert_eq!(due.len(), 1);
        s.on_response(id(&due[0]), Some(503), b"", T0 + 56_100);
        assert!(s.due_fetches(T0 + 58_099).is_empty());
        let due = s.due_fetches(T0 + 58_100);
        assert_eq!(due.len(), 1);
        s.on_response(id(&due[0]), Some(503), b"", T0 + 58_200);
        let due = s.due_fetches(T0 + 97_000);
        assert_eq!(due.len(), 1);
        // The expiry passes while that retry is in flight: requests wait, never get t1.
        assert_eq!(s.lookup(0, T0 + 100_000), TokenLookup::Wait(None));
        s.on_response(id(&due[0]), Some(200), &ok("t2", 100), T0 + 100_500);
        assert_eq!(
            s.lookup(0, T0 + 100_600),
            TokenLookup::Ready(Rc::from("Bearer t2"))
        );
    }

    #[test]
    fn expired_token_with_failing_endpoint_is_unavailable() {
        let mut s = store(json!({}));
        let due = s.due_fetches(T0);
        s.on_response(id(&due[0]), Some(200), &ok("t1", 10), T0);
        let due = s.due_fetches(T0 + 8_000);
        s.on_response(id(&due[0]), Some(500), b"", T0 + 8_000);
        let due = s.due_fetches(T0 + 9_000);
        s.on_response(id(&due[0]), Some(500), b"", T0 + 9_000);
        assert_eq!(
            s.lookup(0, T0 + 10_000),
            TokenLookup::Unavailable,
            "expired, in backoff"
        );
        assert_eq!(
            s.last_failure(0).map(|f| f.reason.as_str()),
            Some("token endpoint answered HTTP 500")
        );
    }

    #[test]
    fn backoff_doubles_up_to_30s_and_resets_on_success() {
        let mut s = store(json!({}));
        let mut now = T0;
        let mut call = s.due_fetches(now).remove(0);
        let mut waits = Vec::new();
        for _ in 0..8 {
            s.on_response(id(&call), None, b"", now);
            assert_eq!(
                s.lookup(0, now + 1),
                TokenLookup::Unavailable,
                "fail fast in backoff"
            );
            let mut t = now;
            let mut next = loop {
                t += 100;
                let d = s.due_fetches(t);
                if !d.is_empty() {
                    break d;
                }
            };
            waits.push(t - now);
            now = t;
            call = next.remove(0);
        }
        assert_eq!(
            waits,
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
        s.on_response(id(&call), Some(200), &ok("t", 10), now);
        let due = s.due_fetches(now + 8_000);
        s.on_response(id(&due[0]), None, b"", now + 8_000);
        assert!(s.due_fetches(now + 8_999).is_empty());
        assert_eq!(
            s.due_fetches(now + 9_000).len(),
            1,
            "back to 1 s after a success"
        );
    }

    #[test]
    fn rejected_credentials_are_reported_without_the_secret() {
        let mut s = store(json!({"clientAuth": "post"}));
        let due = s.due_fetches(T0);
        let body = json!({"error": "unauthorized_client",
            "error_description": "Invalid client or Invalid client credentials: frontend-secret"});
        let out = s.on_response(id(&due[0]), Some(401), body.to_string().as_bytes(), T0);
        let f = out.failed.unwrap();
        assert!(f.rejected);
        assert_eq!(
            f.reason,
            "token endpoint answered HTTP 401 unauthorized_client: Invalid client or Invalid client credentials: <redacted>"
        );
        assert_eq!(s.lookup(0, T0 + 1), TokenLookup::Unavailable);
        let due = s.due_fetches(T0 + 1_000);
        assert_eq!(
            due.len(),
            1,
            "retried after the backoff: the secret may be fixed meanwhile"
        );
    }

    #[test]
    fn an_echoed_secret_is_redacted_before_the_text_is_cut() {
        // Found while writing the fuzz target token_response: the error text was cut to 200 characters and
        // then scrubbed, so a secret across the cut left its first characters in the reason (a
        // log line and the 503 body); and control characters were dropped after the scrub, so a
        // secret split by one came out whole.
        let secret = "frontend-secret";
        for (status, body) in [
            (
                401,
                json!({"error": "invalid_client", "error_description": format!("{}{secret}", "x".repeat(190))}),
            ),
            (
                401,
                json!({"error": format!("{}{secret}", "y".repeat(195)), "error_description": "z"}),
            ),
            (
                400,
                json!({"error": "invalid_client", "error_description": "front\u{1}end-secret"}),
            ),
            (
                200,
                json!({"access_token": "t", "token_type": format!("{}{secret}", "w".repeat(190))}),
            ),
            (
                200,
                json!({"access_token": "t", "token_type": "frontend\u{7}-secret"}),
            ),
        ] {
            let mut s = store(json!({}));
            let due = s.due_fetches(T0);
            let out = s.on_response(id(&due[0]), Some(status), body.to_string().as_bytes(), T0);
            let reason = out.failed.unwrap().reason;
            for window in secret.as_bytes().windows(6) {
                let part = std::str::from_utf8(window).unwrap();
                assert!(
                    !reason.contains(part),
                    "{part:?} of the secret in {reason:?}"
                );
            }
            assert!(!reason.chars().any(char::is_control), "{reason:?}");
        }
        // A text body (Envoy's own answers) is redacted too.
        let mut s = store(json!({}));
        let due = s.due_fetches(T0);
        let out = s.on_response(
            id(&due[0]),
            Some(503),
            b"no healthy upstream frontend-secret",
            T0,
        );
        assert_eq!(
            out.failed.unwrap().reason,
            "token endpoint answered HTTP 503: no healthy upstream <redacted>"
        );
    }

    #[test]
    fn a_discovery_document_cannot_put_the_secret_or_a_megabyte_in_the_reason() {
        // Found by the fuzz target token_response: the discovered token_endpoint was quoted in
        // the failure reason whole (unbounded, and with an echoed secret in it).
        let mut s = store(json!({"tokenEndpoint": null, "issuer": "http://kc/realms/r"}));
        let due = s.due_fetches(T0);
        let doc = json!({"token_endpoint": format!("ftp://kc/{}frontend-secret{}", "a".repeat(20), "b".repeat(30_000))});
        let out = s.on_response(id(&due[0]), Some(200), doc.to_string().as_bytes(), T0);
        let reason = out.failed.unwrap().reason;
        let start = format!(
            "discovery token_endpoint: \"ftp://kc/{}<redacted>bbb",
            "a".repeat(20)
        );
        assert!(reason.starts_with(&start), "{reason}");
        assert_eq!(reason.chars().count(), 200);
    }

    #[test]
    fn stuck_call_is_abandoned_and_late_answer_ignored() {
        let mut s = store(json!({"timeout": "2s"}));
        let TokenLookup::Wait(Some(call)) = s.lookup(0, T0) else {
            panic!()
        };
        assert_eq!(s.lookup(0, T0 + 4_000), TokenLookup::Wait(None));
        assert_eq!(
            s.lookup(0, T0 + 4_001),
            TokenLookup::Unavailable,
            "2 s + 2 s grace"
        );
        let out = s.on_response(id(&call), Some(200), &ok("late", 300), T0 + 4_002);
        assert_eq!(out, FetchOutcome::default());
        assert_eq!(s.lookup(0, T0 + 4_003), TokenLookup::Unavailable);
    }

    #[test]
    fn bad_token_responses_fail() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"<html>".to_vec(), "token response is not JSON"),
            (
                json!({"token_type": "Bearer", "expires_in": 60})
                    .to_string()
                    .into_bytes(),
                "token response has no access_token",
            ),
            (
                json!({"access_token": "a\r\nx-evil: 1", "expires_in": 60})
                    .to_string()
                    .into_bytes(),
                "access_token has characters a Bearer token cannot have",
            ),
            (
                json!({"access_token": "abc", "token_type": "DPoP", "expires_in": 60})
                    .to_string()
                    .into_bytes(),
                "token_type \"DPoP\" is not Bearer",
            ),
            (
                json!({"access_token": "abc"}).to_string().into_bytes(),
                "token response has no expires_in and the access token is not a JWT with exp",
            ),
            (
                json!({"access_token": "abc", "expires_in": "soon"})
                    .to_string()
                    .into_bytes(),
                "expires_in is not a number of seconds",
            ),
            (
                json!({"access_token": "abc", "expires_in": 0})
                    .to_string()
                    .into_bytes(),
                "the token is already expired",
            ),
            (
                json!({"access_token": "a".repeat(MAX_TOKEN_BYTES + 1), "expires_in": 60})
                    .to_string()
                    .into_bytes(),
                "access_token is larger than 16384 bytes",
            ),
        ];
        for (body, want) in cases {
            let mut s = store(json!({}));
            let due = s.due_fetches(T0);
            let out = s.on_response(id(&due[0]), Some(200), &body, T0);
            assert_eq!(out.failed.map(|f| f.reason), Some(want.to_string()));
            assert_eq!(s.lookup(0, T0 + 1), TokenLookup::Unavailable);
        }
    }

    #[test]
    fn lifetime_from_jwt_exp_when_no_expires_in() {
        let payload =
            crate::jwt::b64url_encode(json!({"exp": (T0 + 60_000) / 1000}).to_string().as_bytes());
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln");
        let mut s = store(json!({"refreshAt": 0.5}));
        let due = s.due_fetches(T0);
        let body = json!({"access_token": token, "token_type": "bearer"}).to_string();
        let out = s.on_response(id(&due[0]), Some(200), body.as_bytes(), T0 + 10);
        assert_eq!(out.obtained_lifetime_ms, Some(60_000));
        assert!(s.due_fetches(T0 + 29_999).is_empty());
        let due = s.due_fetches(T0 + 30_000);
        assert_eq!(due.len(), 1);
        s.on_response(id(&due[0]), None, b"", T0 + 30_000);
        assert_eq!(s.due_fetches(T0 + 58_000).len(), 1);
        assert!(matches!(s.lookup(0, T0 + 59_999), TokenLookup::Ready(_)));
        assert_eq!(
            s.lookup(0, T0 + 60_000),
            TokenLookup::Wait(None),
            "expired; refresh in flight"
        );
        // expires_in as a string (some servers) is accepted too.
        let mut s = store(json!({}));
        let due = s.due_fetches(T0);
        let body = json!({"access_token": "x", "expires_in": "120"}).to_string();
        let out = s.on_response(id(&due[0]), Some(200), body.as_bytes(), T0);
        assert_eq!(out.obtained_lifetime_ms, Some(120_000));
    }

    #[test]
    fn discovery_then_token_and_rediscovery_after_failure() {
        let mut s = store(json!({"tokenEndpoint": null, "issuer": "http://kc.local/realms/r"}));
        let due = s.due_fetches(T0);
        assert_eq!(id(&due[0]).phase, Phase::Discovery);
        assert_eq!(header(&due[0], ":method"), Some("GET"));
        assert_eq!(
            header(&due[0], ":path"),
            Some("/realms/r/.well-known/openid-configuration")
        );
        assert_eq!(due[0].body, None);
        let doc = json!({"token_endpoint": "http://kc.local:8080/realms/r/protocol/openid-connect/token"});
        let out = s.on_response(id(&due[0]), Some(200), doc.to_string().as_bytes(), T0 + 5);
        let next = out.next.unwrap();
        assert_eq!(id(&next).phase, Phase::Token);
        assert_eq!(next.cluster, "outbound|8080||kc.local");
        assert_eq!(header(&next, ":authority"), Some("kc.local:8080"));
        assert_eq!(
            s.lookup(0, T0 + 6),
            TokenLookup::Wait(None),
            "discovery alone gives no token"
        );
        // A network failure of the token call: discover again next time.
        s.on_response(id(&next), None, b"", T0 + 10);
        let due = s.due_fetches(T0 + 1_010);
        assert_eq!(id(&due[0]).phase, Phase::Discovery);
        let out = s.on_response(
            id(&due[0]),
            Some(200),
            doc.to_string().as_bytes(),
            T0 + 1_011,
        );
        // An OAuth refusal proves the endpoint: no new discovery.
        s.on_response(id(&out.next.unwrap()), Some(401), b"{}", T0 + 1_012);
        assert!(
            s.due_fetches(T0 + 3_011).is_empty(),
            "second failure: 2 s backoff"
        );
        let due = s.due_fetches(T0 + 3_012);
        assert_eq!(id(&due[0]).phase, Phase::Token);
        let out = s.on_response(id(&due[0]), Some(200), &ok("t", 60), T0 + 3_013);
        assert!(out.failed.is_none());
        // A discovery document without token_endpoint fails.
        let mut s = store(json!({"tokenEndpoint": null, "issuer": "http://kc.local/realms/r"}));
        let due = s.due_fetches(T0);
        let out = s.on_response(id(&due[0]), Some(200), b"{\"issuer\":\"x\"}", T0);
        assert_eq!(
            out.failed.unwrap().reason,
            "discovery document has no token_endpoint"
        );
    }
}
