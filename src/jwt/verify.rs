//! Claim checks and signature verification in Envoy's order: issuer, time, audience, signature.
//! Time is checked with jwt-compact's claim validation and an injected clock; signatures through
//! meshgate's jwt-compact `Algorithm`s (src/jwt/algorithms.rs), while the choice of keys to try
//! (kid, JWK `alg`, key type) stays meshgate's, as in Envoy.

use super::algorithms::{Ecdsa, EdDsa, JwsSignature, RsaPkcs1, RsaPss};
use super::crypto::SignatureBackend;
use super::jwk::{KeyMaterial, KeySet, PublicKey};
use super::UntrustedJwt;
use crate::error::AuthnError;
use chrono::{DateTime, TimeDelta, Utc};
use jwt_compact::{Algorithm, AlgorithmSignature, Claims, Empty, TimeOptions};

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
    /// Only Keycloak access tokens: the `typ` claim must be `Bearer` (`accessTokensOnly`).
    pub access_tokens_only: bool,
}

/// Leeways beyond this (about 31,700 years) are clamped, so `nbf - leeway` stays within
/// chrono's range (jwt-compact subtracts without a check).
const MAX_LEEWAY_SECS: u64 = 1_000_000_000_000;

fn timestamp(secs: u64) -> DateTime<Utc> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// exp/nbf with skew, in jwt_verify_lib's order (`verifyTimeConstraint`: nbf, then exp), through
/// jwt-compact's `validate_maturity`/`validate_expiration` with the clock injected. A missing
/// claim is not checked (Envoy allows tokens without `exp`).
pub fn check_time(
    exp: Option<u64>,
    nbf: Option<u64>,
    now: u64,
    skew: u64,
) -> Result<(), AuthnError> {
    let leeway = TimeDelta::try_seconds(skew.min(MAX_LEEWAY_SECS) as i64).unwrap_or_default();
    let now = timestamp(now);
    let options = TimeOptions::new(leeway, move || now);
    let mut claims = Claims::new(Empty {});
    claims.not_before = nbf.map(timestamp);
    claims.expiration = exp.map(timestamp);
    if claims.not_before.is_some() {
        claims
            .validate_maturity(&options)
            .map_err(|_| AuthnError::NotYetValid)?;
    }
    if claims.expiration.is_some() {
        claims
            .validate_expiration(&options)
            .map_err(|_| AuthnError::Expired)?;
    }
    Ok(())
}

/// [`check_time`]'s window as two integers, for tokens already verified: a cache hit checks the
/// time on every request, and jwt-compact's check converts each instant to a calendar date
/// (~10 % of the engine's work on a hit). Tested equal to [`check_time`] for any `now` before
/// the year 4000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    not_before: u64,
    expires_after: u64,
}

impl TimeWindow {
    pub fn new(exp: Option<u64>, nbf: Option<u64>, skew: u64) -> TimeWindow {
        let skew = skew.min(MAX_LEEWAY_SECS);
        TimeWindow {
            not_before: nbf.map_or(0, |n| n.saturating_sub(skew)),
            expires_after: exp.map_or(u64::MAX, |e| e.saturating_add(skew)),
        }
    }

    pub fn check(&self, now: u64) -> Result<(), AuthnError> {
        if now < self.not_before {
            Err(AuthnError::NotYetValid)
        } else if now > self.expires_after {
            Err(AuthnError::Expired)
        } else {
            Ok(())
        }
    }
}

/// Issuer, time, audience and token-type checks (everything but the signature).
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
    // Keycloak writes `typ` into every token it issues: `Bearer` (access), `ID`, `Refresh`.
    if rules.access_tokens_only && jwt.claims.typ.as_deref() != Some("Bearer") {
        return Err(AuthnError::NotAccessToken);
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
        if let (Some(want), Some(have)) = (jwt.kid(), &key.kid) {
            if want != have {
                continue;
            }
        }
        if key.alg.is_some_and(|a| a != jwt.alg) || !key.fits(jwt.alg) {
            continue;
        }
        candidate_seen = true;
        if signature_verifies(jwt, key, backend) {
            return Ok(key);
        }
    }
    Err(if candidate_seen {
        AuthnError::VerificationFails
    } else {
        AuthnError::KidAlgMismatch
    })
}

/// The token's algorithm family, with this key's type: a key only reaches an algorithm of its
/// own family (the `VerifyingKey` types differ).
fn signature_verifies(
    jwt: &UntrustedJwt<'_>,
    key: &PublicKey,
    backend: &dyn SignatureBackend,
) -> bool {
    let alg = jwt.alg;
    match &key.material {
        KeyMaterial::Rsa(k) => RsaPkcs1::new(alg, backend)
            .map(|a| verifies(&a, k, jwt))
            .or_else(|| RsaPss::new(alg, backend).map(|a| verifies(&a, k, jwt))),
        KeyMaterial::Ec(k) => Ecdsa::new(alg, backend).map(|a| verifies(&a, k, jwt)),
        KeyMaterial::Ed25519(k) => EdDsa::new(alg, backend).map(|a| verifies(&a, k, jwt)),
    }
    .unwrap_or(false)
}

/// The integrity check jwt-compact's `Validator` makes, without its claim parse: the algorithm
/// is built from the token's own `alg` (the validator's name check holds by construction) and
/// the claims were parsed and checked already — re-parsing them for every key tried (a token
/// without `kid` is tried against every key) would cost µs per attempt and repeat no check.
fn verifies<A: Algorithm<Signature = JwsSignature>>(
    alg: &A,
    key: &A::VerifyingKey,
    jwt: &UntrustedJwt<'_>,
) -> bool {
    JwsSignature::try_from_slice(jwt.token.signature_bytes())
        .is_ok_and(|sig| alg.verify_signature(&sig, key, jwt.signing_input.as_bytes()))
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

    #[test]
    fn time_window_agrees_with_check_time() {
        // Instants up to chrono's range and past it, and every `now` around each bound.
        let chrono_max = DateTime::<Utc>::MAX_UTC.timestamp() as u64;
        let instants = [
            0,
            1,
            59,
            60,
            61,
            100,
            1_800_000_000,
            chrono_max - 1,
            chrono_max,
            chrono_max + 1,
            i64::MAX as u64,
            u64::MAX,
        ];
        let skews = [
            0,
            1,
            60,
            MAX_LEEWAY_SECS - 1,
            MAX_LEEWAY_SECS,
            MAX_LEEWAY_SECS + 1,
            u64::MAX,
        ];
        let claims = std::iter::once(None).chain(instants.iter().copied().map(Some));
        let year_4000 = 64_060_588_800;
        let mut compared = 0;
        for exp in claims.clone() {
            for nbf in claims.clone() {
                for skew in skews {
                    let window = TimeWindow::new(exp, nbf, skew);
                    let bounds = [exp, nbf, Some(0), Some(1_800_000_000)]
                        .into_iter()
                        .flatten();
                    for b in bounds {
                        for d in [0, 1, skew, skew.saturating_add(1), skew.saturating_sub(1)] {
                            for now in [b.saturating_sub(d), b.saturating_add(d)] {
                                if now < year_4000 {
                                    assert_eq!(
                                        window.check(now),
                                        check_time(exp, nbf, now, skew),
                                        "exp {exp:?} nbf {nbf:?} skew {skew} now {now}"
                                    );
                                    compared += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(compared > 10_000, "{compared}");
    }
}
