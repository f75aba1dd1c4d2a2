//! The verified identity a valid token yields: what the authorization engine matches on.

use serde_json::{Map, Value};
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
