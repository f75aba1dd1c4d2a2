//! Claim checks and signature verification in Envoy's order: issuer, time, audience, signature.

use super::crypto::SignatureBackend;
use super::jwk::{KeySet, PublicKey};
use super::UntrustedJwt;
use crate::error::AuthnError;

/// Audience comparison as jwt_verify_lib does it: scheme and trailing slash are ignored,
/// so `https://svc/` and `svc` are the same audience.
pub fn normalize_audience(aud: &str) -> &str {
    let a = aud
        .strip_prefix("http://")
        .or_else(|| aud.strip_prefix("https://"))
        .unwrap_or(aud);
    a.strip_suffix('/').unwrap_or(a)
}

/// What a rule requires of a token's claims.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRules<'a> {
    /// Required `iss` (None: not checked).
    pub issuer: Option<&'a str>,
    /// Allowed audiences, already normalized (empty: not checked).
    pub audiences: &'a [String],
    pub clock_skew_secs: u64,
}

/// exp/nbf with skew (jwt_verify_lib `verifyTimeConstraint`).
pub fn check_time(
    exp: Option<u64>,
    nbf: Option<u64>,
    now: u64,
    skew: u64,
) -> Result<(), AuthnError> {
    if let Some(nbf) = nbf {
        if nbf > now.saturating_add(skew) {
            return Err(AuthnError::NotYetValid);
        }
    }
    if let Some(exp) = exp {
        if exp.saturating_add(skew) < now {
            return Err(AuthnError::Expired);
        }
    }
    Ok(())
}

/// Issuer, time and audience checks (everything but the signature).
pub fn check_claims(
    jwt: &UntrustedJwt<'_>,
    rules: &ClaimRules<'_>,
    now: u64,
) -> Result<(), AuthnError> {
    if let Some(required) = rules.issuer {
        if jwt.claims.iss.as_deref() != Some(required) {
            return Err(AuthnError::UnknownIssuer);
        }
    }
    check_time(jwt.claims.exp, jwt.claims.nbf, now, rules.clock_skew_secs)?;
    if !rules.audiences.is_empty()
        && !jwt.claims.aud.iter().any(|a| {
            rules
                .audiences
                .iter()
                .any(|allowed| allowed == normalize_audience(a))
        })
    {
        return Err(AuthnError::AudienceNotAllowed);
    }
    Ok(())
}

/// Selects keys the way jwt_verify_lib does (kid must match when both sides have one; the JWK's
/// `alg`, when set, must equal the token's; kty/crv must fit the alg) and tries each candidate.
/// Returns the key that verified, `KidAlgMismatch` when no key was a candidate, or
/// `VerificationFails` when candidates existed but none verified.
pub fn verify_signature<'k>(
    jwt: &UntrustedJwt<'_>,
    keys: &'k KeySet,
    backend: &dyn SignatureBackend,
) -> Result<&'k PublicKey, AuthnError> {
    if keys.keys.is_empty() {
        return Err(AuthnError::NoValidKeys);
    }
    let mut candidate_seen = false;
    for key in &keys.keys {
        if let (Some(want), Some(have)) = (&jwt.kid, &key.kid) {
            if want != have {
                continue;
            }
        }
        if key.alg.is_some_and(|a| a != jwt.alg) || !key.fits(jwt.alg) {
            continue;
        }
        candidate_seen = true;
        if backend.verify(jwt.alg, key, jwt.signing_input.as_bytes(), &jwt.signature) {
            return Ok(key);
        }
    }
    Err(if candidate_seen {
        AuthnError::VerificationFails
    } else {
        AuthnError::KidAlgMismatch
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_normalization() {
        assert_eq!(normalize_audience("https://svc/"), "svc");
        assert_eq!(normalize_audience("http://svc"), "svc");
        assert_eq!(normalize_audience("svc"), "svc");
        assert_eq!(normalize_audience("ftp://svc/"), "ftp://svc");
    }

    #[test]
    fn time_window_with_skew() {
        assert_eq!(check_time(Some(100), None, 160, 60), Ok(()));
        assert_eq!(
            check_time(Some(100), None, 161, 60),
            Err(AuthnError::Expired)
        );
        assert_eq!(check_time(None, Some(200), 140, 60), Ok(()));
        assert_eq!(
            check_time(None, Some(200), 139, 60),
            Err(AuthnError::NotYetValid)
        );
        assert_eq!(check_time(Some(u64::MAX), Some(0), 5, u64::MAX), Ok(()));
    }
}
