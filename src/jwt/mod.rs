//! JWS compact tokens: parsing (untrusted), keys, signature backends and verification.

pub mod crypto;
pub mod ec;
pub mod host_sig;
pub mod jwk;
pub mod rsa;
pub mod verify;

use crate::error::AuthnError;
use base64::engine::general_purpose::{GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose};
use base64::Engine as _;
use serde_json::{Map, Value};

/// Asymmetric JWS algorithms we verify. `none` and HS* are deliberately absent: a JWKS-driven
/// verifier must never accept them (RFC 8725 §3.1, §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
}

impl Alg {
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "ES512" => Alg::ES512,
            "EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// Hash function name as Envoy's `verify_signature` foreign function expects it.
    pub fn hash_name(self) -> &'static str {
        match self {
            Alg::RS256 | Alg::PS256 | Alg::ES256 => "sha256",
            Alg::RS384 | Alg::PS384 | Alg::ES384 => "sha384",
            Alg::RS512 | Alg::PS512 | Alg::ES512 | Alg::EdDSA => "sha512",
        }
    }
}

/// Base64url decoding that accepts padded and unpadded input (Envoy accepts `=` padding).
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    B64URL_LENIENT.decode(s).ok()
}

pub fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The registered claims we check, already type-checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StdClaims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub azp: Option<String>,
}

/// A parsed but not yet verified token.
#[derive(Debug, Clone)]
pub struct UntrustedJwt<'a> {
    pub alg: Alg,
    pub kid: Option<String>,
    /// `header.payload`: the bytes the signature covers.
    pub signing_input: String,
    pub signature: Vec<u8>,
    pub payload: Map<String, Value>,
    /// The base64url payload segment as received (for `outputPayloadToHeader`).
    pub payload_b64: &'a str,
    pub claims: StdClaims,
}

/// Parses a compact JWS the way jwt_verify_lib does (empty segments are skipped, padding is
/// tolerated, `crit` is ignored), with a size cap applied before any decoding.
pub fn parse(token: &str, max_len: usize) -> Result<UntrustedJwt<'_>, AuthnError> {
    if token.len() > max_len {
        return Err(AuthnError::TooLarge);
    }
    let mut parts = token.split('.').filter(|p| !p.is_empty());
    let (h, p, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => (h, p, s),
        _ => return Err(AuthnError::BadFormat),
    };
    // Like jwt_verify_lib, the signing input is rebuilt from the non-empty segments, so stray
    // empty segments (`.a.b.c`, `a..b.c`) change nothing the signature covers.
    let signing_input = format!("{h}.{p}");
    let header_bytes = b64url_decode(h).ok_or(AuthnError::HeaderBadBase64)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header_bytes).map_err(|_| AuthnError::HeaderBadJson)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => match Alg::from_name(a) {
            Some(alg) => alg,
            None if matches!(a.as_str(), "HS256" | "HS384" | "HS512") => {
                return Err(AuthnError::SymmetricAlg)
            }
            None => return Err(AuthnError::UnsupportedAlg),
        },
        _ => return Err(AuthnError::HeaderBadAlg),
    };
    let kid = match header.get("kid") {
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthnError::HeaderBadKid),
        None => None,
    };
    let payload_bytes = b64url_decode(p).ok_or(AuthnError::PayloadBadBase64)?;
    let payload: Map<String, Value> =
        serde_json::from_slice(&payload_bytes).map_err(|_| AuthnError::PayloadBadJson)?;
    let signature = b64url_decode(s).ok_or(AuthnError::SignatureBadBase64)?;
    let claims = std_claims(&payload)?;
    Ok(UntrustedJwt {
        alg,
        kid,
        signing_input,
        signature,
        payload,
        payload_b64: p,
        claims,
    })
}

fn std_claims(payload: &Map<String, Value>) -> Result<StdClaims, AuthnError> {
    let string = |name: &str, err: AuthnError| -> Result<Option<String>, AuthnError> {
        match payload.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(err),
        }
    };
    let aud = match payload.get("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(AuthnError::AudNotString)
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(AuthnError::AudNotString),
    };
    // NumericDate as jwt_verify_lib reads it: a JSON number, not negative, below 2^63.
    let time =
        |name: &str, not_int: AuthnError, range: AuthnError| -> Result<Option<u64>, AuthnError> {
            match payload.get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
                    (Some(u), _) if u <= i64::MAX as u64 => Ok(Some(u)),
                    (None, Some(f)) if (0.0..9.2e18).contains(&f) => Ok(Some(f as u64)),
                    _ => Err(range),
                },
                Some(_) => Err(not_int),
            }
        };
    string("jti", AuthnError::JtiNotString)?;
    time("iat", AuthnError::IatNotInteger, AuthnError::IatOutOfRange)?;
    Ok(StdClaims {
        iss: string("iss", AuthnError::IssNotString)?,
        sub: string("sub", AuthnError::SubNotString)?,
        aud,
        exp: time("exp", AuthnError::ExpNotInteger, AuthnError::ExpOutOfRange)?,
        nbf: time("nbf", AuthnError::NbfNotInteger, AuthnError::NbfOutOfRange)?,
        azp: payload
            .get("azp")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Reads the unverified `iss` of a token cheaply (to pick the rule before verifying).
pub fn peek_issuer<'a>(jwt: &'a UntrustedJwt<'_>) -> Option<&'a str> {
    jwt.claims.iss.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(header: &str, payload: &str, sig: &str) -> String {
        format!(
            "{}.{}.{}",
            b64url_encode(header.as_bytes()),
            b64url_encode(payload.as_bytes()),
            sig
        )
    }

    #[test]
    fn parses_a_well_formed_token() {
        let t = tok(
            r#"{"alg":"RS256","kid":"k1"}"#,
            r#"{"iss":"i","aud":["a","b"],"exp":10}"#,
            "c2ln",
        );
        let jwt = parse(&t, 16384).unwrap();
        assert_eq!(jwt.alg, Alg::RS256);
        assert_eq!(jwt.kid.as_deref(), Some("k1"));
        assert_eq!(jwt.claims.aud, vec!["a", "b"]);
        assert_eq!(jwt.claims.exp, Some(10));
        assert_eq!(jwt.signature, b"sig");
        assert_eq!(jwt.signing_input, t.rsplit_once('.').unwrap().0);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(parse("abc", 100).unwrap_err(), AuthnError::BadFormat);
        assert_eq!(parse("a.b.c.d", 100).unwrap_err(), AuthnError::BadFormat);
        assert_eq!(parse("", 100).unwrap_err(), AuthnError::BadFormat);
        let long = "a".repeat(200);
        assert_eq!(parse(&long, 100).unwrap_err(), AuthnError::TooLarge);
    }

    #[test]
    fn rejects_none_and_hmac_algs() {
        for alg in ["none", "RS1", "ES256K"] {
            let t = tok(&format!(r#"{{"alg":"{alg}"}}"#), r#"{"iss":"i"}"#, "c2ln");
            assert_eq!(
                parse(&t, 16384).unwrap_err(),
                AuthnError::UnsupportedAlg,
                "{alg}"
            );
        }
        for alg in ["HS256", "HS384", "HS512"] {
            let t = tok(&format!(r#"{{"alg":"{alg}"}}"#), r#"{"iss":"i"}"#, "c2ln");
            assert_eq!(
                parse(&t, 16384).unwrap_err(),
                AuthnError::SymmetricAlg,
                "{alg}"
            );
        }
        let t = tok(r#"{"alg":5}"#, r#"{}"#, "c2ln");
        assert_eq!(parse(&t, 16384).unwrap_err(), AuthnError::HeaderBadAlg);
        let t = tok(r#"{"typ":"JWT"}"#, r#"{}"#, "c2ln");
        assert_eq!(parse(&t, 16384).unwrap_err(), AuthnError::HeaderBadAlg);
    }

    #[test]
    fn claim_types_are_checked() {
        use AuthnError::*;
        for (payload, err) in [
            (r#"{"iss":5}"#, IssNotString),
            (r#"{"sub":[]}"#, SubNotString),
            (r#"{"jti":1}"#, JtiNotString),
            (r#"{"aud":[1]}"#, AudNotString),
            (r#"{"exp":"1"}"#, ExpNotInteger),
            (r#"{"nbf":-1}"#, NbfOutOfRange),
            (r#"{"iat":1e300}"#, IatOutOfRange),
            (r#"{"exp":18446744073709551615}"#, ExpOutOfRange),
        ] {
            let t = tok(r#"{"alg":"ES256"}"#, payload, "c2ln");
            assert_eq!(parse(&t, 16384).unwrap_err(), err, "{payload}");
        }
        let t = tok(r#"{"alg":"ES256"}"#, "[]", "c2ln");
        assert_eq!(parse(&t, 16384).unwrap_err(), PayloadBadJson);
        let t = format!("{}.!!.c2ln", b64url_encode(br#"{"alg":"ES256"}"#));
        assert_eq!(parse(&t, 16384).unwrap_err(), PayloadBadBase64);
        assert_eq!(parse("!!.e30.c2ln", 16384).unwrap_err(), HeaderBadBase64);
    }

    #[test]
    fn empty_segments_and_padding_are_tolerated() {
        let t = tok(r#"{"alg":"RS256"}"#, r#"{"iss":"i"}"#, "c2ln");
        let want = parse(&t, 16384).unwrap().signing_input;
        for variant in [format!("{t}."), format!(".{t}"), t.replacen('.', "..", 1)] {
            assert_eq!(
                parse(&variant, 16384).unwrap().signing_input,
                want,
                "{variant}"
            );
        }
        let padded = format!(
            "{}.{}.c2lnbg==",
            b64url_encode(br#"{"alg":"RS256"}"#),
            b64url_encode(b"{}")
        );
        assert_eq!(parse(&padded, 16384).unwrap().signature, b"sign");
    }
}
