//! Metric names. The core reports events through `MetricSink`; the adapter maps names to
//! proxy-wasm counters (Envoy shows them as `wasmcustom.meshgate.*`).

use crate::error::AuthnError;
use std::borrow::Cow;

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
