//! The verified identity a valid token yields: what the authorization engine matches on.

use serde_json::{Map, Value};
use std::cell::Cell;
use std::rc::Rc;

/// One verified JWT. Cheap to clone (claims are shared).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// `iss` claim (equals the matching jwtRule's issuer).
    pub issuer: String,
    /// `sub` claim ("" when absent).
    pub subject: String,
    /// `aud` claim as a list (a string `aud` becomes one element).
    pub audiences: Vec<String>,
    /// `azp` claim (Keycloak puts the client id there).
    pub presenter: Option<String>,
    /// The whole payload.
    pub claims: Rc<Map<String, Value>>,
    /// Top-level claims that are split on spaces when matched (`scope`, `permission`,
    /// plus the rule's `spaceDelimitedClaims`).
    pub space_delimited_claims: Rc<[String]>,
    /// Outcomes of the policy conditions that read only the token.
    pub memo: PolicyMemo,
}

/// Outcomes of the policy conditions that read only the token (claims, `requestPrincipals`), kept
/// with the identity: a cached token's are evaluated on its first request, then read from here
/// (claim lookups and string matches were ~13 % of a cache hit in V8). Conditions are numbered by
/// the compiled policy set that evaluates them (`owner`); another set starts afresh.
#[derive(Debug, Clone, Default)]
pub struct PolicyMemo {
    owner: Cell<u64>,
    known: Cell<u64>,
    value: Cell<u64>,
}

/// Not part of who the identity is.
impl PartialEq for PolicyMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl PolicyMemo {
    /// Conditions one policy set can number (the rest are evaluated every time).
    pub const SLOTS: u8 = 64;

    /// The outcome of condition `slot` of policy set `owner` (never 0), evaluated once.
    pub(crate) fn get_or(&self, owner: u64, slot: u8, evaluate: impl FnOnce() -> bool) -> bool {
        if self.owner.get() != owner {
            self.owner.set(owner);
            self.known.set(0);
            self.value.set(0);
        }
        let bit = 1u64 << (slot % Self::SLOTS);
        if self.known.get() & bit != 0 {
            return self.value.get() & bit != 0;
        }
        let outcome = evaluate();
        self.known.set(self.known.get() | bit);
        if outcome {
            self.value.set(self.value.get() | bit);
        }
        outcome
    }

    /// How many conditions have a kept outcome.
    pub fn known(&self) -> u32 {
        self.known.get().count_ones()
    }
}

impl Identity {
    /// Istio's `request.auth.principal`: `<iss>/<sub>`.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }

    /// Looks up a claim by path (`["realm_access", "roles"]`).
    pub fn claim(&self, path: &[String]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.claims.get(first.as_str())?;
        for segment in rest {
            value = value.as_object()?.get(segment.as_str())?;
        }
        Some(value)
    }

    /// Whether a top-level claim is split on spaces when matched.
    pub fn is_space_delimited(&self, name: &str) -> bool {
        self.space_delimited_claims.iter().any(|c| c == name)
    }
}
