//! Browser single sign-on at the gateway (issue "sso"): OpenID Connect authorization code flow
//! with PKCE, an encrypted session cookie, refresh, and RP-initiated logout. Host-independent like
//! the rest of the core: time, randomness and call responses are inputs; calls are returned.
//!
//! The engine runs it as a stage before `jwtRules`: it answers login, callback and logout itself,
//! and for a request with a session it hands the engine the session's access token, which the
//! `jwtRules` and `policies` then check exactly as they check an API client's bearer token.

pub mod config;
mod flow;
pub mod pkce;
pub mod random;
pub mod session;
pub mod session_cache;
pub mod token_response;

pub use flow::{is_browser_navigation, Continuation, Ctx, SessionPass, Sso, Step};

/// A call single sign-on sent, so its response reaches the right flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SsoCall {
    /// `<issuer>/.well-known/openid-configuration`.
    Discovery,
    /// Token endpoint: code exchange or refresh of flow `n`.
    Token(u64),
}
