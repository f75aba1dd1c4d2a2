//! Token parsing through jwt-compact: `UntrustedToken` splits and decodes the compact JWS (RFC
//! 7515 §7.1: exactly three segments, base64url without padding) and types the header (`alg`,
//! `kid`, `crit`, ...) and the time claims (`exp`, `nbf`, `iat`).
//!
//! What Envoy's jwt_authn needs and jwt-compact does not do is kept around the library: the size
//! cap before any decoding, Envoy's checks of the other registered claims (`iss`, `sub`, `jti`,
//! `aud` types; NumericDate ranges), and Envoy's rejection reasons in Envoy's order. jwt-compact
//! reports one error per stage (a bad base64 segment, a header it cannot type) where Envoy names
//! the field; when it refuses a token, `envoy_reason` finds Envoy's reason by running Envoy's
//! checks in Envoy's order (header, alg, kid, payload, claims, signature) on that error path only.
//!
//! Stricter than Envoy, on purpose (RFC 7515 compact serialization, listed by vector id in
//! tests/conformance.rs): `=` padding and empty segments are malformed, a `crit` header is
//! refused (§4.1.11: meshgate understands no extension), a `cty` other than JSON is refused, and
//! header members jwt-compact types (`typ`, `jku`, `x5u`: strings; `x5t`, `x5t#S256`: base64url
//! thumbprints) must have their type.
//!
//! Like Envoy: a member name repeated anywhere in the header or the payload (at any depth)
//! makes it invalid JSON (src/jwt/unique_json.rs), so a claim has exactly one value for
//! meshgate, its policies and every backend.

use super::unique_json::UniqueObject;
use super::Alg;
use crate::error::AuthnError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_compact::{ParseError, UntrustedToken};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Header members meshgate reads beyond jwt-compact's `Header`. Every member jwt-compact does
/// not type lands here, so this is also where repeated names among them (at any depth) are
/// refused (src/jwt/unique_json.rs); jwt-compact refuses repeated typed members itself.
#[derive(Debug, Clone, Default)]
pub struct HeaderExtensions {
    /// RFC 7515 §4.1.11: extensions the recipient must understand, or reject the token.
    /// meshgate understands none, so any (non-null) `crit` rejects.
    crit: bool,
}

impl<'de> Deserialize<'de> for HeaderExtensions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let UniqueObject(members) = UniqueObject::deserialize(d)?;
        Ok(HeaderExtensions {
            crit: members.get("crit").is_some_and(|c| !c.is_null()),
        })
    }
}

/// The registered claims meshgate checks, type-checked the way Envoy does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StdClaims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub azp: Option<String>,
    /// Keycloak's token type claim (`Bearer`, `ID`, `Refresh`), not type-checked (Envoy ignores it).
    pub typ: Option<String>,
}

/// A parsed but not yet verified token.
#[derive(Debug, Clone)]
pub struct UntrustedJwt<'a> {
    pub alg: Alg,
    /// jwt-compact's token: the signing input, the signature and the typed header.
    pub token: UntrustedToken<'a, HeaderExtensions>,
    /// Every claim of the payload (policies and `outputClaimToHeaders` may read any of them).
    pub payload: Map<String, Value>,
    /// The base64url payload segment as received (for `outputPayloadToHeader`).
    pub payload_b64: &'a str,
    /// `header.payload`: what the signature covers (jwt-compact's signed data).
    pub signing_input: &'a str,
    pub claims: StdClaims,
}

impl UntrustedJwt<'_> {
    pub fn kid(&self) -> Option<&str> {
        self.token.header().key_id.as_deref()
    }
}

/// Parses a compact JWS with jwt-compact, with the size cap applied before any decoding and
/// rejections carrying Envoy's reasons (see the module documentation).
pub fn parse(token: &str, max_len: usize) -> Result<UntrustedJwt<'_>, AuthnError> {
    if token.len() > max_len {
        return Err(AuthnError::TooLarge);
    }
    // An empty signature segment (`h.p.`, e.g. an unsecured `alg: none` token): jwt-compact
    // would parse it; Envoy sees two segments. Envoy's answer is kept.
    if token.ends_with('.') {
        return Err(AuthnError::BadFormat);
    }
    let untrusted = UntrustedToken::<HeaderExtensions>::try_from(token)
        .map_err(|e| envoy_reason(token, parse_error_fallback(&e)))?;
    let alg = supported_alg(untrusted.algorithm())?;
    if untrusted.header().other_fields.crit {
        return Err(AuthnError::CritUnsupported);
    }
    let claims = untrusted
        .deserialize_claims_unchecked::<UniqueObject>()
        .map_err(|_| envoy_reason(token, AuthnError::PayloadBadJson))?;
    // jwt-compact takes the time claims out of the map; policies and claim headers see them too.
    let UniqueObject(mut payload) = claims.custom;
    for (name, time) in [
        ("iat", claims.issued_at),
        ("nbf", claims.not_before),
        ("exp", claims.expiration),
    ] {
        if let Some(t) = time {
            payload.insert(name.into(), Value::from(t.timestamp()));
        }
    }
    let std = std_claims(&payload)?;
    // jwt-compact accepted exactly three segments.
    let signing_input = token.rsplit_once('.').map_or(token, |(input, _)| input);
    Ok(UntrustedJwt {
        alg,
        token: untrusted,
        payload,
        payload_b64: signing_input.split_once('.').map_or("", |(_, p)| p),
        signing_input,
        claims: std,
    })
}

/// The algorithms meshgate verifies; HS* (which Envoy knows) and anything else are refused.
fn supported_alg(name: &str) -> Result<Alg, AuthnError> {
    match Alg::from_name(name) {
        Some(alg) => Ok(alg),
        None if matches!(name, "HS256" | "HS384" | "HS512") => Err(AuthnError::SymmetricAlg),
        None => Err(AuthnError::UnsupportedAlg),
    }
}

/// The answer for a jwt-compact parse error that none of Envoy's checks explains.
fn parse_error_fallback(e: &ParseError) -> AuthnError {
    match e {
        ParseError::MalformedHeader(_) => AuthnError::HeaderBadJson,
        ParseError::UnsupportedContentType(_) => AuthnError::UnsupportedContentType,
        _ => AuthnError::BadFormat,
    }
}

/// Envoy's reason for a token jwt-compact refused: the first of Envoy's checks, in Envoy's
/// order, that fails — or `fallback` (jwt-compact's own reason, e.g. a `typ` that is not a
/// string) when all of them pass. Runs on the error path only.
fn envoy_reason(token: &str, fallback: AuthnError) -> AuthnError {
    envoy_checks(token).err().unwrap_or(fallback)
}

fn envoy_checks(token: &str) -> Result<(), AuthnError> {
    use AuthnError::*;
    let mut segments = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(BadFormat);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(BadFormat);
    }
    let header_bytes = URL_SAFE_NO_PAD.decode(h).map_err(|_| HeaderBadBase64)?;
    let UniqueObject(header) = serde_json::from_slice(&header_bytes).map_err(|_| HeaderBadJson)?;
    match header.get("alg") {
        Some(Value::String(a)) => supported_alg(a)?,
        _ => return Err(HeaderBadAlg),
    };
    if header
        .get("kid")
        .is_some_and(|k| !k.is_string() && !k.is_null())
    {
        return Err(HeaderBadKid);
    }
    if header.get("crit").is_some_and(|c| !c.is_null()) {
        return Err(CritUnsupported);
    }
    match header.get("cty") {
        None | Some(Value::Null) => {}
        Some(Value::String(c)) if c.eq_ignore_ascii_case("json") => {}
        Some(Value::String(_)) => return Err(UnsupportedContentType),
        Some(_) => return Err(HeaderBadJson),
    }
    let payload_bytes = URL_SAFE_NO_PAD.decode(p).map_err(|_| PayloadBadBase64)?;
    let UniqueObject(payload) =
        serde_json::from_slice(&payload_bytes).map_err(|_| PayloadBadJson)?;
    std_claims(&payload)?;
    URL_SAFE_NO_PAD.decode(s).map_err(|_| SignatureBadBase64)?;
    Ok(())
}

/// The largest NumericDate accepted: Envoy reads them as integers below 2^63, jwt-compact as
/// chrono timestamps (up to the end of year 262142); the smaller bound wins.
fn max_numeric_date() -> u64 {
    u64::try_from(chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp()).unwrap_or(0)
}

/// Envoy's type checks of the registered claims, in Envoy's order (iss, sub, iat, nbf, exp, jti,
/// aud).
fn std_claims(payload: &Map<String, Value>) -> Result<StdClaims, AuthnError> {
    use AuthnError::*;
    let string = |name: &str, err: AuthnError| -> Result<Option<String>, AuthnError> {
        match payload.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(err),
        }
    };
    // NumericDate: a JSON number, not negative, within `max_numeric_date`.
    let max = max_numeric_date();
    let time = |name: &str, not_int: AuthnError, range: AuthnError| match payload.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) if u <= max => Ok(Some(u)),
            (None, Some(f)) if (0.0..=max as f64).contains(&f) => Ok(Some(f as u64)),
            _ => Err(range),
        },
        Some(_) => Err(not_int),
    };
    let iss = string("iss", IssNotString)?;
    let sub = string("sub", SubNotString)?;
    time("iat", IatNotInteger, IatOutOfRange)?;
    let nbf = time("nbf", NbfNotInteger, NbfOutOfRange)?;
    let exp = time("exp", ExpNotInteger, ExpOutOfRange)?;
    string("jti", JtiNotString)?;
    let aud = match payload.get("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(AudNotString))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(AudNotString),
    };
    let text = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_owned);
    Ok(StdClaims {
        iss,
        sub,
        aud,
        exp,
        nbf,
        azp: text("azp"),
        typ: text("typ"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::b64url_encode;

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
            r#"{"iss":"i","aud":["a","b"],"exp":10,"nbf":1.5,"typ":"Bearer","x":{"y":1}}"#,
            "c2ln",
        );
        let jwt = parse(&t, 16384).unwrap();
        assert_eq!(jwt.alg, Alg::RS256);
        assert_eq!(jwt.kid(), Some("k1"));
        assert_eq!(jwt.claims.aud, vec!["a", "b"]);
        assert_eq!(jwt.claims.exp, Some(10));
        assert_eq!(jwt.claims.nbf, Some(1));
        assert_eq!(jwt.claims.typ.as_deref(), Some("Bearer"));
        assert_eq!(jwt.token.signature_bytes(), b"sig");
        assert_eq!(jwt.payload_b64, t.split('.').nth(1).unwrap());
        assert_eq!(jwt.signing_input, t.rsplit_once('.').unwrap().0);
        // Every claim reaches the policies, the time claims included.
        // (sorted: with the `cli` feature serde_json keeps insertion order)
        let mut keys: Vec<_> = jwt.payload.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["aud", "exp", "iss", "nbf", "typ", "x"]);
        assert_eq!(jwt.payload["exp"], 10);
        assert_eq!(jwt.payload["x"]["y"], 1);
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
    fn too_large_is_decided_before_any_decoding() {
        let t = tok(
            r#"{"alg":"RS256"}"#,
            &format!(r#"{{"p":"{}"}}"#, "x".repeat(100)),
            "c2ln",
        );
        assert_eq!(parse(&t, t.len()).map(|j| j.alg), Ok(Alg::RS256));
        assert_eq!(parse(&t, t.len() - 1).unwrap_err(), AuthnError::TooLarge);
        assert_eq!(parse("!!!", 2).unwrap_err(), AuthnError::TooLarge);
    }

    #[test]
    fn an_empty_signature_is_envoys_bad_format() {
        let t = tok(r#"{"alg":"none"}"#, r#"{"iss":"i"}"#, "");
        assert_eq!(parse(&t, 16384).unwrap_err(), AuthnError::BadFormat);
        let t = tok(r#"{"alg":"RS256"}"#, r#"{"iss":"i"}"#, "");
        assert_eq!(parse(&t, 16384).unwrap_err(), AuthnError::BadFormat);
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
        let t = tok(r#"{"alg":"ES256","kid":7}"#, r#"{}"#, "c2ln");
        assert_eq!(parse(&t, 16384).unwrap_err(), AuthnError::HeaderBadKid);
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
            (r#"{"exp":null}"#, ExpNotInteger),
            (r#"{"nbf":-1}"#, NbfOutOfRange),
            (r#"{"iat":1e300}"#, IatOutOfRange),
            (r#"{"exp":18446744073709551615}"#, ExpOutOfRange),
            // After the end of year 262142: jwt-compact's (chrono's) bound, below Envoy's 2^63.
            (r#"{"exp":9000000000000}"#, ExpOutOfRange),
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
    fn envoy_order_when_a_token_has_several_defects() {
        use AuthnError::*;
        // jwt-compact decodes all three segments before reading the header; Envoy reads the
        // header, alg and kid first, then the payload and its claims, then the signature.
        let cases = [
            (tok(r#"{"alg":"HS256"}"#, "{}", "!!"), SymmetricAlg),
            (tok(r#"{"alg":"foo"}"#, "{}", "!!"), UnsupportedAlg),
            (
                format!("{}.!!.!!", b64url_encode(br#"{"alg":"RS256","kid":1}"#)),
                HeaderBadKid,
            ),
            (
                tok(r#"{"alg":"RS256"}"#, r#"{"exp":"x","iss":5}"#, "!!"),
                IssNotString,
            ),
            (
                tok(r#"{"alg":"RS256"}"#, r#"{"aud":5}"#, "!!"),
                AudNotString,
            ),
            (
                tok(r#"{"alg":"RS256"}"#, r#"{"iss":"i"}"#, "!!"),
                SignatureBadBase64,
            ),
            (tok("not json", "{}", "!!"), HeaderBadJson),
        ];
        for (t, want) in cases {
            assert_eq!(parse(&t, 16384).unwrap_err(), want, "{t}");
        }
    }

    #[test]
    fn rfc7515_strictness_padding_and_empty_segments() {
        // RFC 7515 §2/§7.1: base64url without padding, exactly three segments. Envoy accepts
        // both; meshgate keeps jwt-compact's strictness.
        let t = tok(r#"{"alg":"RS256"}"#, r#"{"iss":"i"}"#, "c2ln");
        assert!(parse(&t, 16384).is_ok());
        for variant in [format!("{t}."), format!(".{t}"), t.replacen('.', "..", 1)] {
            assert_eq!(
                parse(&variant, 16384).unwrap_err(),
                AuthnError::BadFormat,
                "{variant}"
            );
        }
        let padded_sig = format!("{}.c2lnbg==", t.rsplit_once('.').unwrap().0);
        assert_eq!(
            parse(&padded_sig, 16384).unwrap_err(),
            AuthnError::SignatureBadBase64
        );
        let header = b64url_encode(br#"{"alg":"RS256","kid":"k"}"#); // 34 chars: 2 pad chars
        let padded_header = format!("{header}==.e30.c2ln");
        assert_eq!(
            parse(&padded_header, 16384).unwrap_err(),
            AuthnError::HeaderBadBase64
        );
    }

    #[test]
    fn crit_is_refused() {
        // RFC 7515 §4.1.11: a recipient that does not understand a listed extension MUST reject
        // the token; meshgate understands none (Envoy ignores `crit`).
        let crit = "Jwt header [crit] lists an unsupported extension";
        for header in [
            r#"{"alg":"RS256","crit":["exp"],"exp":1}"#,
            r#"{"alg":"RS256","crit":["b64"],"b64":false}"#,
            r#"{"alg":"RS256","crit":[]}"#,
        ] {
            let t = tok(header, "{}", "c2ln");
            assert_eq!(
                parse(&t, 16384).map(|_| ()).map_err(|e| e.message()),
                Err(crit),
                "{header}"
            );
        }
        // A header problem, reported before the payload's and the signature's.
        let t = tok(r#"{"alg":"RS256","crit":["x"]}"#, r#"{"iss":5}"#, "!!");
        assert_eq!(
            parse(&t, 16384).map(|_| ()).map_err(|e| e.message()),
            Err(crit)
        );
    }

    #[test]
    fn cty_other_than_json_is_refused() {
        let t = tok(r#"{"alg":"RS256","cty":"JWT"}"#, "{}", "c2ln");
        assert_eq!(
            parse(&t, 16384).unwrap_err(),
            AuthnError::UnsupportedContentType
        );
        let t = tok(r#"{"alg":"RS256","cty":"json"}"#, "{}", "c2ln");
        assert!(parse(&t, 16384).is_ok());
        let t = tok(r#"{"alg":"RS256","typ":5}"#, "{}", "c2ln");
        assert_eq!(parse(&t, 16384).unwrap_err(), AuthnError::HeaderBadJson);
    }

    #[test]
    fn repeated_member_names_are_invalid_json_at_any_depth() {
        use AuthnError::*;
        for (header, payload, want) in [
            (
                r#"{"alg":"RS256"}"#,
                r#"{"iss":"a","iss":"b"}"#,
                PayloadBadJson,
            ),
            (r#"{"alg":"RS256"}"#, r#"{"exp":1,"exp":2}"#, PayloadBadJson),
            (
                r#"{"alg":"RS256"}"#,
                r#"{"realm_access":{"roles":["user"],"roles":["admin"]}}"#,
                PayloadBadJson,
            ),
            (
                r#"{"alg":"RS256"}"#,
                r#"{"a":[{"b":1,"b":1}]}"#,
                PayloadBadJson,
            ),
            (r#"{"alg":"RS256","alg":"none"}"#, "{}", HeaderBadJson),
            (r#"{"alg":"none","alg":"RS256"}"#, "{}", HeaderBadJson),
            (
                r#"{"alg":"RS256","kid":"a","kid":"b"}"#,
                "{}",
                HeaderBadJson,
            ),
            (r#"{"alg":"RS256","x":1,"x":2}"#, "{}", HeaderBadJson),
            (
                r#"{"alg":"RS256","crit":["a"],"crit":null}"#,
                "{}",
                HeaderBadJson,
            ),
            (
                r#"{"alg":"RS256","jwk":{"kty":"RSA","kty":"EC"}}"#,
                "{}",
                HeaderBadJson,
            ),
            // The header is read first (Envoy's order).
            (
                r#"{"alg":"RS256","x":1,"x":2}"#,
                r#"{"a":1,"a":1}"#,
                HeaderBadJson,
            ),
        ] {
            let t = tok(header, payload, "c2ln");
            assert_eq!(parse(&t, 16384).unwrap_err(), want, "{header} {payload}");
        }
        // The same name in different objects is not a repetition.
        let t = tok(
            r#"{"alg":"RS256","jwk":{"alg":"RS256"}}"#,
            r#"{"a":{"iss":1},"iss":"i"}"#,
            "c2ln",
        );
        assert_eq!(parse(&t, 16384).unwrap().claims.iss.as_deref(), Some("i"));
    }

    #[test]
    fn nesting_is_bounded_by_serde_json_without_overflowing_the_stack() {
        let nested = |n: usize| format!(r#"{{"a":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
        let ok = tok(r#"{"alg":"RS256"}"#, &nested(120), "c2ln");
        assert!(parse(&ok, 16384).is_ok());
        let deep = tok(r#"{"alg":"RS256"}"#, &nested(5000), "c2ln");
        assert_eq!(
            parse(&deep, 1 << 20).unwrap_err(),
            AuthnError::PayloadBadJson
        );
        let header = format!(
            r#"{{"alg":"RS256","x":{}1{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        let deep = tok(&header, "{}", "c2ln");
        assert_eq!(
            parse(&deep, 1 << 20).unwrap_err(),
            AuthnError::HeaderBadJson
        );
    }

    #[test]
    fn non_utf8_json_and_jwe_are_refused() {
        let b64 = |b: &[u8]| b64url_encode(b);
        let t = format!(
            "{}.{}.c2ln",
            b64(br#"{"alg":"RS256"}"#),
            b64(b"{\"iss\":\"\xff\"}")
        );
        assert_eq!(parse(&t, 16384).unwrap_err(), AuthnError::PayloadBadJson);
        let t = format!(
            "{}.{}.c2ln",
            b64(b"{\"alg\":\"RS256\",\"kid\":\"\xc3\"}"),
            b64(b"{}")
        );
        assert_eq!(parse(&t, 16384).unwrap_err(), AuthnError::HeaderBadJson);
        // A UTF-8 byte order mark is not JSON whitespace (RFC 8259 §8.1).
        let t = format!(
            "{}.{}.c2ln",
            b64(b"\xef\xbb\xbf{\"alg\":\"RS256\"}"),
            b64(b"{}")
        );
        assert_eq!(parse(&t, 16384).unwrap_err(), AuthnError::HeaderBadJson);
        // JWE compact serialization: five segments.
        let jwe = format!("{}.a.b.c.d", b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#));
        assert_eq!(parse(&jwe, 16384).unwrap_err(), AuthnError::BadFormat);
        // A JWE header on three segments: its alg is no signature algorithm.
        let t = tok(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#, "{}", "c2ln");
        assert_eq!(parse(&t, 16384).unwrap_err(), AuthnError::UnsupportedAlg);
    }
}
