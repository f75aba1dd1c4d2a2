//! Outbound token injection (`egress`): for requests a workload sends, the sidecar obtains a
//! service-account token with the OAuth2 client-credentials grant and sets
//! `Authorization: Bearer <token>`, so the workload needs no authentication code.
//!
//! - [`config`]: the `egress` block (targets, credentials), compiled once.
//! - `matching`: which requests a target covers (`hosts`, `paths`; first matching target wins).
//! - [`token`]: per-target token state machine (single flight, refresh at `refreshAt`, never past
//!   expiry, backoff, discovery), time as an input.
//!
//! The engine runs [`stage`] instead of authentication and policies for a request on an outbound
//! listener (see `RequestAttrs::outbound`).

pub mod config;
mod matching;
pub mod token;

pub use config::{EgressTarget, EgressTargetConfig, OnError};
pub use token::{FetchId, TokenLookup, TokenStore};

use crate::calls::HttpCall;
use crate::metrics::{EgressEvent, Metric, MetricSink};
use crate::request::RequestAttrs;
use std::rc::Rc;

/// What the egress stage decided for an outbound request.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Forward as it is: no target covers it, the application set its own `Authorization`
    /// (without `override`), or no token could be had and the target says `onError: allow`.
    Untouched,
    /// Forward with this `Authorization` value (`Bearer <token>`).
    Inject(Rc<str>),
    /// Pause until the target's token fetch settles (`call`: started by this request).
    Wait {
        target: usize,
        call: Option<HttpCall>,
        timeout_ms: u64,
    },
    /// No token and `onError: deny`: answer 503.
    Deny { target: usize, reason: String },
}

/// The first target (in configuration order) whose `hosts` and `paths` cover the request.
pub fn match_target(targets: &[EgressTarget], req: &RequestAttrs) -> Option<usize> {
    targets.iter().position(|t| {
        t.hosts.iter().any(|h| h.matches(&req.host))
            && (t.paths.is_empty() || {
                let path = req.path_only();
                t.paths.iter().any(|p| p.matches(path))
            })
    })
}

/// The egress stage for one outbound request.
pub fn stage(
    targets: &[EgressTarget],
    tokens: &mut TokenStore,
    req: &RequestAttrs,
    now_ms: u64,
    metrics: &mut dyn MetricSink,
) -> Step {
    let Some(i) = match_target(targets, req) else {
        return Step::Untouched;
    };
    let t = &targets[i];
    if !t.override_authorization && req.header("authorization").is_some() {
        metrics.increment(Metric::Egress(&t.name, EgressEvent::Kept));
        return Step::Untouched;
    }
    match tokens.lookup(i, now_ms) {
        TokenLookup::Ready(v) => {
            metrics.increment(Metric::Egress(&t.name, EgressEvent::Injected));
            Step::Inject(v)
        }
        TokenLookup::Wait(call) => {
            metrics.increment(Metric::Egress(&t.name, EgressEvent::Waited));
            Step::Wait {
                target: i,
                call,
                timeout_ms: t.timeout.as_millis() as u64,
            }
        }
        TokenLookup::Unavailable => give_up(targets, tokens, i, metrics),
    }
}

/// No token for target `i` (its fetch failed, or the wait ran out): what `onError` says.
pub fn give_up(
    targets: &[EgressTarget],
    tokens: &TokenStore,
    i: usize,
    metrics: &mut dyn MetricSink,
) -> Step {
    let Some(t) = targets.get(i) else {
        return Step::Untouched;
    };
    match t.on_error {
        OnError::Allow => {
            metrics.increment(Metric::Egress(&t.name, EgressEvent::NoToken));
            log::debug!(
                "egress target {}: no token; forwarded without one (onError: allow)",
                t.name
            );
            Step::Untouched
        }
        OnError::Deny => {
            metrics.increment(Metric::Egress(&t.name, EgressEvent::Denied));
            let reason = if tokens.in_flight(i) {
                format!(
                    "the token endpoint did not answer within {} ms",
                    t.timeout.as_millis() as u64
                )
            } else {
                tokens
                    .last_failure(i)
                    .map_or_else(|| "no token yet".to_string(), |f| f.reason.clone())
            };
            log::debug!(
                "egress target {}: no token; answered 503 ({reason})",
                t.name
            );
            Step::Deny { target: i, reason }
        }
    }
}
