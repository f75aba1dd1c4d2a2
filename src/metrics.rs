//! Metric names. The core reports events through `MetricSink`; the adapter maps names to
//! proxy-wasm counters (Envoy shows them as `wasmcustom.meshgate.*`).

use crate::error::{AuthnError, SsoError};
use std::borrow::Cow;

/// Declares `SsoEvent`, `SsoEvent::ALL` and the metric names from one list.
macro_rules! sso_events {
    ($($(#[$attr:meta])* $name:ident => $metric:literal,)*) => {
        /// Single sign-on events that are not denials (those are [`Metric::SsoDenied`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SsoEvent {
            $($(#[$attr])* $name,)*
        }

        impl SsoEvent {
            /// Every variant, in declaration order.
            pub const ALL: [SsoEvent; [$(stringify!($name)),*].len()] = [$(SsoEvent::$name),*];

            pub fn metric_name(self) -> &'static str {
                match self {
                    $(SsoEvent::$name => $metric,)*
                }
            }
        }
    };
}

sso_events! {
    /// A browser without a session was sent to the provider's login page.
    LoginStarted => "meshgate.sso.login_started",
    /// A callback ended in a session (cookie set, redirect to the original path).
    CallbackOk => "meshgate.sso.callback_ok",
    /// A request carried session cookies that did not open (tampered, foreign key, expired).
    SessionInvalid => "meshgate.sso.session_invalid",
    /// A request was forwarded with the access token of its session.
    SessionForwarded => "meshgate.sso.session_forwarded",
    RefreshOk => "meshgate.sso.refresh_ok",
    /// The provider refused the refresh token (session ended at the provider).
    RefreshRejected => "meshgate.sso.refresh_rejected",
    /// The token endpoint failed, timed out or answered garbage during a refresh.
    RefreshFailed => "meshgate.sso.refresh_failed",
    Logout => "meshgate.sso.logout",
    DiscoveryOk => "meshgate.sso.discovery_ok",
    DiscoveryFailed => "meshgate.sso.discovery_failed",
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric<'a> {
    /// Request forwarded.
    Allowed,
    /// Rejected by the token checks, by reason.
    Denied(AuthnError),
    /// An ALLOW policy matched (the request was allowed by it).
    PolicyAllowed(&'a str),
    /// A policy denied the request (a DENY policy matched, or no ALLOW policy did).
    PolicyDenied(&'a str),
    /// A dry-run policy would have denied.
    DryRunWouldDeny(&'a str),
    /// A dry-run policy would have allowed.
    DryRunWouldAllow(&'a str),
    /// An AUDIT policy matched.
    AuditMatched(&'a str),
    JwksFetchOk,
    JwksFetchFailed,
    TokenCacheHit,
    TokenCacheMiss,
    /// A fetched JWKS offered a signature key meshgate refuses (RSA under 2048 bits, exponent
    /// above 2^33-1, invalid point, unsupported kty or curve); counted once per key and fetch.
    JwksKeyRejected,
    /// Per egress target (`egress[].name`).
    Egress(&'a str, EgressEvent),
    /// Single sign-on event.
    Sso(SsoEvent),
    /// Single sign-on answered a request with an error, by reason.
    SsoDenied(SsoError),
}

/// What happened for an egress target: `meshgate.egress.<target>.<event>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressEvent {
    /// A token was obtained.
    FetchOk,
    /// A token or discovery call failed (any reason, including `FetchRejected`).
    FetchFailed,
    /// The token endpoint refused the request (HTTP 400/401/403: wrong secret or client set-up).
    FetchRejected,
    /// A request was forwarded with the target's token.
    Injected,
    /// A request kept the `Authorization` the application set (no `override`).
    Kept,
    /// A request was paused for the target's token.
    Waited,
    /// A request was answered 503: no token (`onError: deny`).
    Denied,
    /// A request was forwarded without a token (`onError: allow`).
    NoToken,
}

impl EgressEvent {
    pub const ALL: [EgressEvent; 8] = [
        EgressEvent::FetchOk,
        EgressEvent::FetchFailed,
        EgressEvent::FetchRejected,
        EgressEvent::Injected,
        EgressEvent::Kept,
        EgressEvent::Waited,
        EgressEvent::Denied,
        EgressEvent::NoToken,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EgressEvent::FetchOk => "fetch_ok",
            EgressEvent::FetchFailed => "fetch_failed",
            EgressEvent::FetchRejected => "fetch_rejected",
            EgressEvent::Injected => "injected",
            EgressEvent::Kept => "kept",
            EgressEvent::Waited => "waited",
            EgressEvent::Denied => "denied",
            EgressEvent::NoToken => "no_token",
        }
    }
}

/// A policy name as one stat-name segment: Envoy splits stat names on '.', and Kubernetes names
/// may contain dots.
fn segment(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Metric<'_> {
    pub fn name(&self) -> Cow<'static, str> {
        match self {
            Metric::Allowed => "meshgate.allowed".into(),
            Metric::Denied(e) => format!("meshgate.denied.{}", e.metric_name()).into(),
            // "No ALLOW policy matched" is not a policy of its own.
            Metric::PolicyDenied(p) if *p == crate::authz::NO_ALLOW_MATCH => {
                "meshgate.denied.rbac_no_allow_match".into()
            }
            Metric::PolicyAllowed(p) => format!("meshgate.policy.{}.allowed", segment(p)).into(),
            Metric::PolicyDenied(p) => format!("meshgate.policy.{}.denied", segment(p)).into(),
            Metric::DryRunWouldDeny(p) => {
                format!("meshgate.policy.{}.dry_run_would_deny", segment(p)).into()
            }
            Metric::DryRunWouldAllow(p) => {
                format!("meshgate.policy.{}.dry_run_would_allow", segment(p)).into()
            }
            Metric::AuditMatched(p) => format!("meshgate.policy.{}.audit", segment(p)).into(),
            Metric::JwksFetchOk => "meshgate.jwks_fetch.ok".into(),
            Metric::JwksFetchFailed => "meshgate.jwks_fetch.failed".into(),
            Metric::TokenCacheHit => "meshgate.token_cache.hit".into(),
            Metric::TokenCacheMiss => "meshgate.token_cache.miss".into(),
            Metric::JwksKeyRejected => "meshgate.jwks_key_rejected".into(),
            Metric::Egress(t, e) => format!("meshgate.egress.{}.{}", segment(t), e.name()).into(),
            Metric::Sso(e) => e.metric_name().into(),
            Metric::SsoDenied(e) => format!("meshgate.sso.denied.{}", e.metric_name()).into(),
        }
    }
}

/// Counters that exist once per VM: `Allowed`, the fetch, cache and key counters, one per
/// [`AuthnError`], [`SsoEvent`] and [`SsoError`]. Hosts index them by [`Metric::slot`] instead of
/// hashing names per request.
pub const FIXED_SLOTS: usize =
    6 + AuthnError::ALL.len() + SsoEvent::ALL.len() + SsoError::ALL.len();
const SSO_EVENT_SLOTS: usize = 6 + AuthnError::ALL.len();
const SSO_DENIED_SLOTS: usize = SSO_EVENT_SLOTS + SsoEvent::ALL.len();
/// Per-policy counter kinds.
pub const POLICY_KINDS: usize = 5;
/// Per-egress-target counter kinds.
pub const EGRESS_KINDS: usize = EgressEvent::ALL.len();

/// Where a host keeps a metric's id: a fixed slot, or (policy name, kind) for per-policy counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<'a> {
    Fixed(usize),
    Policy(&'a str, usize),
    /// (egress target name, [`EgressEvent`] as index).
    Egress(&'a str, usize),
}

impl<'a> Metric<'a> {
    pub fn slot(&self) -> Slot<'a> {
        match *self {
            Metric::Allowed => Slot::Fixed(0),
            Metric::JwksFetchOk => Slot::Fixed(1),
            Metric::JwksFetchFailed => Slot::Fixed(2),
            Metric::TokenCacheHit => Slot::Fixed(3),
            Metric::TokenCacheMiss => Slot::Fixed(4),
            Metric::JwksKeyRejected => Slot::Fixed(5),
            Metric::Denied(e) => Slot::Fixed(6 + e as usize),
            Metric::Sso(e) => Slot::Fixed(SSO_EVENT_SLOTS + e as usize),
            Metric::SsoDenied(e) => Slot::Fixed(SSO_DENIED_SLOTS + e as usize),
            // Counted as `meshgate.denied.rbac_no_allow_match`: give it the last fixed slot.
            Metric::PolicyDenied(p) if p == crate::authz::NO_ALLOW_MATCH => {
                Slot::Fixed(FIXED_SLOTS)
            }
            Metric::PolicyAllowed(p) => Slot::Policy(p, 0),
            Metric::PolicyDenied(p) => Slot::Policy(p, 1),
            Metric::DryRunWouldDeny(p) => Slot::Policy(p, 2),
            Metric::DryRunWouldAllow(p) => Slot::Policy(p, 3),
            Metric::AuditMatched(p) => Slot::Policy(p, 4),
            Metric::Egress(t, e) => Slot::Egress(t, e as usize),
        }
    }
}

pub trait MetricSink {
    fn increment(&mut self, metric: Metric<'_>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_per_name() {
        let mut fixed = vec![
            Metric::Allowed,
            Metric::JwksFetchOk,
            Metric::JwksFetchFailed,
            Metric::TokenCacheHit,
            Metric::TokenCacheMiss,
            Metric::JwksKeyRejected,
            Metric::PolicyDenied(crate::authz::NO_ALLOW_MATCH),
        ];
        fixed.extend(AuthnError::ALL.into_iter().map(Metric::Denied));
        fixed.extend(SsoEvent::ALL.into_iter().map(Metric::Sso));
        fixed.extend(SsoError::ALL.into_iter().map(Metric::SsoDenied));
        let mut seen = std::collections::BTreeMap::new();
        for m in fixed {
            let Slot::Fixed(i) = m.slot() else {
                panic!("{m:?} must have a fixed slot")
            };
            assert!(i <= FIXED_SLOTS);
            assert_eq!(seen.insert(i, m.name()), None, "slot {i} reused by {m:?}");
        }
        assert_eq!(seen.len(), FIXED_SLOTS + 1);
        let kinds = [
            Metric::PolicyAllowed("p"),
            Metric::PolicyDenied("p"),
            Metric::DryRunWouldDeny("p"),
            Metric::DryRunWouldAllow("p"),
            Metric::AuditMatched("p"),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for m in kinds {
            let Slot::Policy("p", k) = m.slot() else {
                panic!("{m:?} must be per policy")
            };
            assert!(k < POLICY_KINDS && seen.insert(k));
        }
        let mut seen = std::collections::BTreeSet::new();
        for e in EgressEvent::ALL {
            let Slot::Egress("t", k) = Metric::Egress("t", e).slot() else {
                panic!("{e:?} must be per target")
            };
            assert!(k < EGRESS_KINDS && seen.insert(k));
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            Metric::PolicyDenied("ns.deny-all").name(),
            "meshgate.policy.ns_deny-all.denied"
        );
        assert_eq!(
            Metric::PolicyDenied(crate::authz::NO_ALLOW_MATCH).name(),
            "meshgate.denied.rbac_no_allow_match"
        );
        assert_eq!(
            Metric::Denied(AuthnError::Expired).name(),
            "meshgate.denied.expired"
        );
        assert_eq!(
            Metric::Egress("backend", EgressEvent::FetchRejected).name(),
            "meshgate.egress.backend.fetch_rejected"
        );
        assert_eq!(
            Metric::SsoDenied(SsoError::NoPendingLogin).name(),
            "meshgate.sso.denied.no_pending_login"
        );
        assert_eq!(
            Metric::Sso(SsoEvent::RefreshOk).name(),
            "meshgate.sso.refresh_ok"
        );
    }
}

/// Counts in memory (tests, and anything that wants totals).
#[derive(Debug, Default)]
pub struct CountingSink {
    pub counts: std::collections::BTreeMap<String, u64>,
}

impl CountingSink {
    pub fn get(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
}

impl MetricSink for CountingSink {
    fn increment(&mut self, metric: Metric<'_>) {
        *self.counts.entry(metric.name().into_owned()).or_default() += 1;
    }
}
