//! HTTP calls the filter makes through Envoy clusters (`dispatch_http_call`), and what a paused
//! request waits for. Core modules return calls; the adapter sends them and hands each response
//! back to the engine under the call's [`CallId`].

use crate::jwks::FetchId;
use std::time::Duration;

/// Who asked for a call, so its response reaches the state machine that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallId {
    /// Discovery or JWKS fetch of a JWT rule's keys.
    Keys(FetchId),
}

impl CallId {
    /// The resource a response to this call settles (or moves on).
    pub fn resource(self) -> WaitKey {
        match self {
            CallId::Keys(f) => WaitKey::Keys(f.rule),
        }
    }
}

/// A request to another service: method, path and authority are in `headers` (`:method`,
/// `:path`, `:authority`, `:scheme`), as `dispatch_http_call` expects.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}
