//! HTTP calls the filter makes through Envoy clusters (`dispatch_http_call`), and what a paused
//! request waits for. Core modules return calls; the adapter sends them and hands each response
//! back to the engine under the call's [`CallId`].

use crate::jwks::FetchId;
use crate::sso::SsoCall;
use std::fmt;
use std::time::Duration;

/// Who asked for a call, so its response reaches the state machine that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallId {
    /// Discovery or JWKS fetch of a JWT rule's keys.
    Keys(FetchId),
    /// Discovery or token call of an egress target.
    Egress(crate::egress::FetchId),
    /// Single sign-on: the provider's discovery document, or a token-endpoint call (code
    /// exchange or refresh) of one login/refresh flow.
    Sso(SsoCall),
}

impl CallId {
    /// The resource a response to this call settles (or moves on).
    pub fn resource(self) -> WaitKey {
        match self {
            CallId::Keys(f) => WaitKey::Keys(f.rule),
            CallId::Egress(f) => WaitKey::EgressToken(f.target),
            CallId::Sso(SsoCall::Discovery) => WaitKey::SsoDiscovery,
            CallId::Sso(SsoCall::Token(flow)) => WaitKey::SsoFlow(flow),
        }
    }
}

/// A request to another service: method, path and authority are in `headers` (`:method`,
/// `:path`, `:authority`, `:scheme`), as `dispatch_http_call` expects.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub id: CallId,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// Something a paused request waits for. A request is re-run only when one of its keys settles
/// (the resource became usable, or failed for good), so other issuers' fetches never wake it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitKey {
    /// The keys of JWT rule `n` (discovery, then JWKS; also a kid-miss refetch).
    Keys(usize),
    /// The token of egress target `n` (discovery, then the token call).
    EgressToken(usize),
    /// The single sign-on provider's endpoints (OIDC discovery).
    SsoDiscovery,
    /// A token-endpoint call of one SSO flow: a code exchange, or a refresh that requests
    /// carrying the same session share.
    SsoFlow(u64),
}

/// Token calls carry the client secret (Basic header or form body): `Debug` shows neither.
impl fmt::Debug for HttpCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if k.eq_ignore_ascii_case("authorization") {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("HttpCall")
            .field("id", &self.id)
            .field("cluster", &self.cluster)
            .field("headers", &headers)
            .field("body_bytes", &self.body.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}
