//! Per-issuer key state: one in-flight fetch per issuer, refresh before expiry, last-good keys
//! kept through outages, exponential backoff after failures, and an unknown-`kid` refetch limited
//! to once per cooldown so random kids cannot amplify traffic to the IdP. Pure: time is an input,
//! fetches are returned as [`HttpCall`]s for the adapter to dispatch.

use crate::calls::{CallId, HttpCall};
use crate::config::{HttpTarget, KeySource, Settings};
use crate::http_target::discovered_endpoint;
use crate::jwt::jwk::{parse_jwks, KeySet};
use std::rc::Rc;
use std::time::Duration;

/// First retry delay after a failed fetch; doubles per failure up to `MAX_BACKOFF_MS`.
const MIN_BACKOFF_MS: u64 = 1_000;
const MAX_BACKOFF_MS: u64 = 10_000;
/// A fetch whose response never arrived (the host lost it) is considered failed this long after
/// its own timeout: a safety net, since every dispatched call ends with a response or a timeout.
const STUCK_GRACE_MS: u64 = 2_000;
/// Largest discovery document accepted.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Discovery,
    Jwks,
}

/// Identifies a fetch: at most one per rule is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchId {
    pub rule: usize,
    pub phase: Phase,
}

/// What a request verifying a token with this rule can do now.
#[derive(Debug, Clone)]
pub enum KeyLookup {
    Ready(Rc<KeySet>),
    /// No keys yet; a fetch is in flight (the request should wait for it). The fetch to
    /// dispatch is returned when this call started it.
    Wait(Option<HttpCall>),
    /// No keys, and the last fetch failed recently (backoff): fail closed now.
    Unavailable,
}

/// Result of handling a fetch response.
#[derive(Debug, Default)]
pub struct FetchOutcome {
    /// A follow-up fetch to dispatch (JWKS after discovery).
    pub next: Option<HttpCall>,
    /// Set when new keys replaced the old ones: (rule, new keys).
    pub updated: Option<(usize, Rc<KeySet>)>,
    /// Set when this fetch failed, with the reason (for logs and metrics).
    pub failed: Option<String>,
    /// Keys skipped in the new JWKS (for a debug log).
    pub skipped: Vec<String>,
    /// Signature keys of this JWKS that were refused (`KeySet::rejected`), usable keys or not.
    pub rejected_keys: usize,
}

#[derive(Debug, Clone)]
struct IssuerState {
    keys: Option<Rc<KeySet>>,
    /// Fixed (inline `jwks`): never fetched.
    inline: bool,
    /// `jwksUri`, or the `jwks_uri` learned from discovery.
    jwks_target: Option<HttpTarget>,
    discovery: Option<(HttpTarget, Option<String>)>,
    refresh_at_ms: u64,
    in_flight: Option<(Phase, u64)>,
    failures: u32,
    retry_at_ms: u64,
    last_kid_refetch_ms: Option<u64>,
    timeout: Duration,
    cache_duration: Duration,
    kid_refetch_cooldown: Duration,
}

#[derive(Debug)]
pub struct KeyStore {
    issuers: Vec<IssuerState>,
}

impl KeyStore {
    pub fn new(settings: &Settings) -> KeyStore {
        let issuers = settings
            .rules
            .iter()
            .map(|r| {
                let (keys, inline, jwks_target, discovery) = match &r.keys {
                    KeySource::Inline(k) => (Some(k.clone()), true, None, None),
                    KeySource::Remote(t) => (None, false, Some(t.clone()), None),
                    KeySource::Discovery {
                        discovery,
                        cluster_override,
                    } => (
                        None,
                        false,
                        None,
                        Some((discovery.clone(), cluster_override.clone())),
                    ),
                };
                IssuerState {
                    keys,
                    inline,
                    jwks_target,
                    discovery,
                    refresh_at_ms: 0,
                    in_flight: None,
                    failures: 0,
                    retry_at_ms: 0,
                    last_kid_refetch_ms: None,
                    timeout: r.timeout,
                    cache_duration: r.cache_duration,
                    kid_refetch_cooldown: r.kid_refetch_cooldown,
                }
            })
            .collect();
        KeyStore { issuers }
    }

    /// Keys for verifying a token of `rule`, starting a fetch when there are none.
    pub fn lookup(&mut self, rule: usize, now_ms: u64) -> KeyLookup {
        self.unstick(rule, now_ms);
        let Some(st) = self.issuers.get(rule) else {
            return KeyLookup::Unavailable;
        };
        if let Some(k) = &st.keys {
            return KeyLookup::Ready(k.clone());
        }
        if st.in_flight.is_some() {
            return KeyLookup::Wait(None);
        }
        if now_ms < st.retry_at_ms {
            return KeyLookup::Unavailable;
        }
        KeyLookup::Wait(self.start(rule, now_ms))
    }

    /// A token's `kid` (or alg) matched no key: refetch once per cooldown. Returns
    /// `Some(fetch)` when the request should wait (fetch started now, or `None` inside when one
    /// is already in flight), `None` when no refetch is allowed and the token must be rejected.
    pub fn kid_miss(&mut self, rule: usize, now_ms: u64) -> Option<Option<HttpCall>> {
        self.unstick(rule, now_ms);
        let st = self.issuers.get_mut(rule)?;
        if st.inline {
            return None;
        }
        if st.in_flight.is_some() {
            return Some(None);
        }
        let cooldown_ms = st.kid_refetch_cooldown.as_millis() as u64;
        if st
            .last_kid_refetch_ms
            .is_some_and(|t| now_ms < t.saturating_add(cooldown_ms))
            || now_ms < st.retry_at_ms
        {
            return None;
        }
        st.last_kid_refetch_ms = Some(now_ms);
        Some(self.start(rule, now_ms))
    }

    /// Periodic work (root context tick, and once at configure): fetch keys never fetched,
    /// refresh keys before they go stale, retry after backoff.
    pub fn due_fetches(&mut self, now_ms: u64) -> Vec<HttpCall> {
        let mut out = Vec::new();
        for rule in 0..self.issuers.len() {
            self.unstick(rule, now_ms);
            let st = &self.issuers[rule];
            if st.inline || st.in_flight.is_some() || now_ms < st.retry_at_ms {
                continue;
            }
            if st.keys.is_none() || now_ms >= st.refresh_at_ms {
                if let Some(f) = self.start(rule, now_ms) {
                    out.push(f);
                }
            }
        }
        out
    }

    /// Whether any request could be waiting on a fetch of this rule.
    pub fn in_flight(&self, rule: usize) -> bool {
        self.issuers
            .get(rule)
            .is_some_and(|s| s.in_flight.is_some())
    }

    /// The dispatch itself failed (unknown cluster, bad argument): a failed fetch.
    pub fn on_dispatch_failed(&mut self, id: FetchId, now_ms: u64) {
        self.fail(id.rule, now_ms);
    }

    /// Handles a fetch response (`status` None: timeout/reset, no HTTP response).
    pub fn on_response(
        &mut self,
        id: FetchId,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
    ) -> FetchOutcome {
        let mut outcome = FetchOutcome::default();
        let Some(st) = self.issuers.get_mut(id.rule) else {
            return outcome;
        };
        if st.in_flight.map(|(p, _)| p) != Some(id.phase) {
            // A late response for a fetch already given up on: ignore it.
            return outcome;
        }
        st.in_flight = None;
        let failure = match status {
            None => Some("no response (timeout or connection failure)".to_string()),
            Some(200) => None,
            Some(s) => Some(format!("HTTP status {s}")),
        };
        if let Some(why) = failure {
            outcome.failed = Some(why);
            self.fail(id.rule, now_ms);
            return outcome;
        }
        match id.phase {
            Phase::Discovery => match discovered_endpoint(
                body,
                "jwks_uri",
                st.discovery.as_ref().and_then(|d| d.1.as_deref()),
            ) {
                Ok(target) => {
                    st.jwks_target = Some(target);
                    outcome.next = self.start(id.rule, now_ms);
                }
                Err(why) => {
                    outcome.failed = Some(why);
                    self.fail(id.rule, now_ms);
                }
            },
            Phase::Jwks => match parse_jwks(body) {
                Ok(set) if !set.keys.is_empty() => {
                    outcome.rejected_keys = set.rejected;
                    let set = Rc::new(set);
                    outcome.skipped = set.skipped.clone();
                    st.keys = Some(set.clone());
                    st.failures = 0;
                    st.retry_at_ms = 0;
                    st.refresh_at_ms = now_ms.saturating_add(refresh_delay_ms(st.cache_duration));
                    outcome.updated = Some((id.rule, set));
                }
                Ok(set) => {
                    outcome.rejected_keys = set.rejected;
                    outcome.failed = Some(format!(
                        "JWKS has no usable signing key ({})",
                        set.skipped.join("; ")
                    ));
                    self.fail(id.rule, now_ms);
                }
                Err(why) => {
                    outcome.failed = Some(why);
                    self.fail(id.rule, now_ms);
                }
            },
        }
        outcome
    }

    fn start(&mut self, rule: usize, now_ms: u64) -> Option<HttpCall> {
        let st = self.issuers.get_mut(rule)?;
        let (phase, target) = match (&st.jwks_target, &st.discovery) {
            (Some(t), _) => (Phase::Jwks, t),
            (None, Some((d, _))) => (Phase::Discovery, d),
            (None, None) => return None,
        };
        let call = HttpCall {
            id: CallId::Keys(FetchId { rule, phase }),
            cluster: target.cluster.clone(),
            headers: target.request_headers("GET"),
            body: None,
            timeout: st.timeout,
        };
        st.in_flight = Some((phase, now_ms));
        Some(call)
    }

    fn fail(&mut self, rule: usize, now_ms: u64) {
        let Some(st) = self.issuers.get_mut(rule) else {
            return;
        };
        st.in_flight = None;
        st.failures = st.failures.saturating_add(1);
        let backoff = MIN_BACKOFF_MS
            .saturating_mul(1 << st.failures.saturating_sub(1).min(16))
            .min(MAX_BACKOFF_MS);
        st.retry_at_ms = now_ms.saturating_add(backoff);
        // A discovered jwks_uri may be what broke: discover again next time.
        if st.discovery.is_some() {
            st.jwks_target = None;
        }
    }

    fn unstick(&mut self, rule: usize, now_ms: u64) {
        let stuck = self.issuers.get(rule).is_some_and(|st| {
            st.in_flight.is_some_and(|(_, since)| {
                now_ms
                    > since
                        .saturating_add(st.timeout.as_millis() as u64)
                        .saturating_add(STUCK_GRACE_MS)
            })
        });
        if stuck {
            self.fail(rule, now_ms);
        }
    }
}

/// Refresh at 90% of the cache duration so fresh keys are in place before the old ones expire.
fn refresh_delay_ms(cache_duration: Duration) -> u64 {
    (cache_duration.as_millis() as u64).saturating_mul(9) / 10
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: &HttpCall) -> FetchId {
        match c.id {
            CallId::Keys(f) => f,
            other => panic!("{other:?}"),
        }
    }

    const N: &str = "up97uqrF9MWOPaPkwSaBeuAPLOr9FKcaWGdVEGzQ4f3Zq5WKVZowx9TCBxmImNJ1qmUi13pB8otwM_l5lfY1AFBMxVbQCUXntLovhDaiSvYp4wGDjFzQiYA-pUq8h6MUZBnhleYrkU7XlCBwNVyN8qNMkpLA7KFZYz-486GnV2NIJJx_4BGa3HdKwQGxi2tjuQsQvao5W4xmSVaaEWopBwMy2QmlhSFQuPUpTaywTqUcUq_6SfAHhZ4IDa_FxEd2c2z8gFGtfst9cY3lRYf-c_ZdboY3mqN9Su3-j3z5r2SHWlhB_LNAjyWlBGsvbGPlTqDziYQwZN4aGsqVKQb9Vw";

    fn jwks(kid: &str) -> Vec<u8> {
        format!(r#"{{"keys":[{{"kid":"{kid}","kty":"RSA","alg":"RS256","use":"sig","n":"{N}","e":"AQAB"}}]}}"#).into_bytes()
    }

    fn store(rule_json: &str) -> KeyStore {
        let s = Settings::from_json(format!(r#"{{"jwtRules":[{rule_json}]}}"#).as_bytes()).unwrap();
        KeyStore::new(&s)
    }

    fn remote() -> KeyStore {
        store(
            r#"{"issuer":"http://kc/realms/r","jwksUri":"http://kc/realms/r/certs","cacheDuration":"100s","kidRefetchCooldown":"30s"}"#,
        )
    }

    #[test]
    fn first_lookup_starts_one_fetch_and_others_wait() {
        let mut ks = remote();
        let KeyLookup::Wait(Some(f)) = ks.lookup(0, 0) else {
            panic!()
        };
        assert_eq!(f.cluster, "outbound|80||kc");
        assert!(f
            .headers
            .contains(&(":path".into(), "/realms/r/certs".into())));
        assert!(f.headers.contains(&(":authority".into(), "kc".into())));
        assert!(
            matches!(ks.lookup(0, 1), KeyLookup::Wait(None)),
            "coalesced"
        );
        let out = ks.on_response(id(&f), Some(200), &jwks("a"), 2);
        assert!(out.updated.is_some() && out.failed.is_none());
        assert!(matches!(ks.lookup(0, 3), KeyLookup::Ready(_)));
    }

    #[test]
    fn failure_backs_off_then_recovers() {
        let mut ks = remote();
        let KeyLookup::Wait(Some(f)) = ks.lookup(0, 0) else {
            panic!()
        };
        assert!(ks.on_response(id(&f), None, b"", 10).failed.is_some());
        assert!(
            matches!(ks.lookup(0, 20), KeyLookup::Unavailable),
            "fail closed during backoff"
        );
        assert!(ks.due_fetches(500).is_empty());
        let due = ks.due_fetches(1_010);
        assert_eq!(due.len(), 1);
        assert!(ks
            .on_response(id(&due[0]), Some(503), b"", 1_020)
            .failed
            .is_some());
        assert!(ks.due_fetches(2_500).is_empty(), "second backoff is 2s");
        let due = ks.due_fetches(3_100);
        ks.on_response(id(&due[0]), Some(200), &jwks("a"), 3_200);
        assert!(matches!(ks.lookup(0, 3_300), KeyLookup::Ready(_)));
    }

    #[test]
    fn stale_keys_are_served_while_refresh_fails() {
        let mut ks = remote();
        let KeyLookup::Wait(Some(f)) = ks.lookup(0, 0) else {
            panic!()
        };
        ks.on_response(id(&f), Some(200), &jwks("a"), 0);
        assert!(ks.due_fetches(89_000).is_empty(), "refresh at 90% of 100s");
        let due = ks.due_fetches(90_000);
        assert_eq!(due.len(), 1);
        ks.on_response(id(&due[0]), Some(500), b"", 90_001);
        assert!(
            matches!(ks.lookup(0, 200_000), KeyLookup::Ready(_)),
            "last-good keys kept"
        );
    }

    #[test]
    fn bad_jwks_bodies_do_not_replace_keys() {
        let mut ks = remote();
        let KeyLookup::Wait(Some(f)) = ks.lookup(0, 0) else {
            panic!()
        };
        ks.on_response(id(&f), Some(200), &jwks("a"), 0);
        for body in [
            &b"<html>"[..],
            br#"{"keys":[]}"#,
            br#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}"#,
        ] {
            let due = ks.due_fetches(1_000_000);
            let out = ks.on_response(id(&due[0]), Some(200), body, 1_000_000);
            assert!(out.failed.is_some());
            let KeyLookup::Ready(k) = ks.lookup(0, 1_000_001) else {
                panic!()
            };
            assert_eq!(k.keys[0].kid.as_deref(), Some("a"));
            ks.issuers[0].retry_at_ms = 0;
        }
    }

    #[test]
    fn kid_miss_refetches_at_most_once_per_cooldown() {
        let mut ks = remote();
        let KeyLookup::Wait(Some(f)) = ks.lookup(0, 0) else {
            panic!()
        };
        ks.on_response(id(&f), Some(200), &jwks("a"), 0);
        let Some(Some(f)) = ks.kid_miss(0, 1_000) else {
            panic!()
        };
        assert!(
            matches!(ks.kid_miss(0, 1_001), Some(None)),
            "waits on the in-flight refetch"
        );
        ks.on_response(id(&f), Some(200), &jwks("b"), 1_100);
        assert!(ks.kid_miss(0, 2_000).is_none(), "cooldown");
        assert!(ks.kid_miss(0, 30_999).is_none());
        assert!(matches!(ks.kid_miss(0, 31_000), Some(Some(_))));
    }

    #[test]
    fn discovery_then_jwks() {
        let mut ks = store(r#"{"issuer":"http://kc.local/realms/r"}"#);
        let due = ks.due_fetches(0);
        assert_eq!(id(&due[0]).phase, Phase::Discovery);
        assert!(due[0].headers.contains(&(
            ":path".into(),
            "/realms/r/.well-known/openid-configuration".into()
        )));
        let out = ks.on_response(
            id(&due[0]),
            Some(200),
            br#"{"issuer":"http://kc.local/realms/r","jwks_uri":"http://kc.local:8080/realms/r/protocol/openid-connect/certs"}"#,
            5,
        );
        let next = out.next.unwrap();
        assert_eq!(id(&next).phase, Phase::Jwks);
        assert_eq!(next.cluster, "outbound|8080||kc.local");
        ks.on_response(id(&next), Some(200), &jwks("a"), 6);
        assert!(matches!(ks.lookup(0, 7), KeyLookup::Ready(_)));
    }

    #[test]
    fn stuck_fetch_is_abandoned_after_timeout() {
        let mut ks = remote();
        let KeyLookup::Wait(Some(f)) = ks.lookup(0, 0) else {
            panic!()
        };
        assert!(matches!(ks.lookup(0, 6_000), KeyLookup::Wait(None)));
        assert!(
            matches!(ks.lookup(0, 7_001), KeyLookup::Unavailable),
            "5s timeout + 2s grace"
        );
        assert!(
            ks.on_response(id(&f), Some(200), &jwks("a"), 7_002)
                .updated
                .is_none(),
            "late response ignored"
        );
    }

    #[test]
    fn inline_keys_never_fetch() {
        let mut ks = store(&format!(
            r#"{{"issuer":"i","jwks":{}}}"#,
            serde_json::to_string(&String::from_utf8(jwks("a")).unwrap()).unwrap()
        ));
        assert!(ks.due_fetches(0).is_empty());
        assert!(matches!(ks.lookup(0, 0), KeyLookup::Ready(_)));
        assert!(ks.kid_miss(0, 0).is_none());
    }
}
