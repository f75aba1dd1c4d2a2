//! Errors: configuration errors (with a field path) and request denials, mapped to HTTP in one place.

use std::fmt;

/// A configuration error: which field (`jwtRules[0].jwksUri`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Declares `AuthnError` and `AuthnError::ALL` from one list, so `ALL` is every variant in
/// declaration order (metrics index counters by `variant as usize`).
macro_rules! authn_errors {
    ($($(#[$attr:meta])* $name:ident,)*) => {
        /// Why a token (or the absence of one) was rejected. The `Display` strings are Envoy's
        /// jwt_verify_lib status strings where Envoy has one, so runbooks and alerts keep working.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AuthnError {
            $($(#[$attr])* $name,)*
        }

        impl AuthnError {
            /// Every variant, in declaration order.
            pub const ALL: [AuthnError; [$(stringify!($name)),*].len()] = [$(AuthnError::$name),*];
        }
    };
}

authn_errors! {
    Missing,
    TooLarge,
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    UnsupportedAlg,
    /// HS256/384/512: Envoy knows them, but a JWKS-driven verifier never accepts them; the
    /// client sees Envoy's answer for a token no published key can match.
    SymmetricAlg,
    HeaderBadKid,
    /// A `crit` header (RFC 7515 §4.1.11): meshgate understands no extension. Envoy ignores
    /// `crit`; the body is meshgate's.
    CritUnsupported,
    /// A `cty` other than JSON (e.g. a nested JWT): jwt-compact refuses it; Envoy ignores `cty`.
    UnsupportedContentType,
    PayloadBadBase64,
    PayloadBadJson,
    IssNotString,
    SubNotString,
    JtiNotString,
    AudNotString,
    IatNotInteger,
    IatOutOfRange,
    NbfNotInteger,
    NbfOutOfRange,
    ExpNotInteger,
    ExpOutOfRange,
    SignatureBadBase64,
    UnknownIssuer,
    Expired,
    NotYetValid,
    AudienceNotAllowed,
    /// `accessTokensOnly`: the `typ` claim is not `Bearer` (a Keycloak ID or refresh token).
    NotAccessToken,
    KidAlgMismatch,
    NoValidKeys,
    VerificationFails,
    JwksFetchFailed,
}

impl AuthnError {
    /// Envoy 1.40's status string (source/common/jwt/status.cc), also the response body.
    pub fn message(self) -> &'static str {
        use AuthnError::*;
        match self {
            Missing => "Jwt is missing",
            TooLarge => "Jwt exceeds the maximum token size",
            BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            HeaderBadJson => "Jwt header is an invalid JSON",
            HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            UnsupportedAlg => "Jwt header [alg] is not supported",
            SymmetricAlg | KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            HeaderBadKid => "Jwt header [kid] field is not a string",
            CritUnsupported => "Jwt header [crit] lists an unsupported extension",
            UnsupportedContentType => "Jwt header [cty] is not supported",
            PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            PayloadBadJson => "Jwt payload is an invalid JSON",
            IssNotString => "Jwt payload [iss] field is not a string",
            SubNotString => "Jwt payload [sub] field is not a string",
            JtiNotString => "Jwt payload [jti] field is not a string",
            AudNotString => "Jwt payload [aud] field is not a string or string list",
            IatNotInteger => "Jwt payload [iat] field is not an integer",
            IatOutOfRange => "Jwt payload [iat] field is not a positive 64 bit integer",
            NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            NbfOutOfRange => "Jwt payload [nbf] field is not a positive 64 bit integer",
            ExpNotInteger => "Jwt payload [exp] field is not an integer",
            ExpOutOfRange => "Jwt payload [exp] field is not a positive 64 bit integer",
            SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            UnknownIssuer => "Jwt issuer is not configured",
            Expired => "Jwt is expired",
            NotYetValid => "Jwt not yet valid",
            AudienceNotAllowed => "Audiences in Jwt are not allowed",
            NotAccessToken => "Jwt is not an access token ([typ] is not Bearer)",
            NoValidKeys => "Jwks doesn't have any valid public key",
            VerificationFails => "Jwt verification fails",
            JwksFetchFailed => "Jwks remote fetch is failed",
        }
    }

    /// Short stable name used in metric names and logs.
    pub fn metric_name(self) -> &'static str {
        use AuthnError::*;
        match self {
            Missing => "missing",
            TooLarge => "too_large",
            BadFormat
            | HeaderBadBase64
            | HeaderBadJson
            | HeaderBadAlg
            | HeaderBadKid
            | CritUnsupported
            | UnsupportedContentType
            | PayloadBadBase64
            | PayloadBadJson
            | SignatureBadBase64 => "malformed",
            IssNotString | SubNotString | JtiNotString | AudNotString | IatNotInteger
            | IatOutOfRange | NbfNotInteger | NbfOutOfRange | ExpNotInteger | ExpOutOfRange => {
                "bad_claim"
            }
            UnsupportedAlg | SymmetricAlg => "unsupported_alg",
            UnknownIssuer => "unknown_issuer",
            Expired => "expired",
            NotYetValid => "not_yet_valid",
            AudienceNotAllowed => "audience",
            NotAccessToken => "not_access_token",
            KidAlgMismatch => "unknown_kid",
            NoValidKeys => "no_valid_keys",
            VerificationFails => "bad_signature",
            JwksFetchFailed => "jwks_unavailable",
        }
    }
}

impl fmt::Display for AuthnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A local reply the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Envoy response-code-details style reason, e.g. `jwt_authn_access_denied{Jwt_is_expired}`.
    pub details: String,
}

/// Why the request is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Token checks failed (issue "core").
    Authn(AuthnError),
    /// An authorization policy denied the request.
    Authz {
        policy: String,
        rule: Option<usize>,
        /// The request carried a valid token (for the optional RFC 6750 insufficient_scope challenge).
        had_valid_token: bool,
    },
    /// An outbound request to an egress target could not get a token (`onError: deny`).
    EgressNoToken {
        target: String,
        /// Why, in one line (never a secret or a token).
        reason: String,
    },
}

/// Options that change how denials are rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyOptions {
    pub insufficient_scope_challenge: bool,
    pub debug_headers: bool,
}

/// Header naming the deciding policy when `debugHeaders` is on.
pub const DEBUG_POLICY_HEADER: &str = "x-meshgate-denied-by";

impl Denial {
    /// The one place where a denial becomes an HTTP reply.
    /// `request_uri` is the original URI (scheme://host/path) used as the Bearer realm, as Envoy does.
    pub fn to_reply(&self, request_uri: &str, opts: &ReplyOptions) -> Reply {
        match self {
            Denial::Authn(err) => {
                let status = if *err == AuthnError::AudienceNotAllowed {
                    403
                } else {
                    401
                };
                let realm = truncate_chars(request_uri, 256).replace('"', "%22");
                let challenge = if *err == AuthnError::Missing {
                    format!("Bearer realm=\"{realm}\"")
                } else {
                    format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
                };
                Reply {
                    status,
                    headers: vec![
                        ("www-authenticate".into(), challenge),
                        ("content-type".into(), "text/plain".into()),
                    ],
                    body: err.message().to_string(),
                    details: format!(
                        "jwt_authn_access_denied{{{}}}",
                        err.message().replace(' ', "_")
                    ),
                }
            }
            Denial::Authz {
                policy,
                rule,
                had_valid_token,
            } => {
                let mut headers = vec![("content-type".to_string(), "text/plain".to_string())];
                if opts.insufficient_scope_challenge && *had_valid_token {
                    headers.push((
                        "www-authenticate".into(),
                        "Bearer error=\"insufficient_scope\"".into(),
                    ));
                }
                if opts.debug_headers {
                    let which = match rule {
                        Some(r) => format!("{policy}[rules][{r}]"),
                        None => policy.clone(),
                    };
                    headers.push((DEBUG_POLICY_HEADER.into(), which));
                }
                Reply {
                    status: 403,
                    headers,
                    body: "RBAC: access denied".into(),
                    details: "rbac_access_denied_matched_policy[meshgate]".into(),
                }
            }
            // The caller is the local workload: 503 like any unavailable upstream dependency,
            // and a body that says which target and why.
            Denial::EgressNoToken { target, reason } => Reply {
                status: 503,
                headers: vec![("content-type".into(), "text/plain".into())],
                body: format!("meshgate egress: no access token for target {target:?}: {reason}"),
                details: format!("meshgate_egress_no_token{{{target}}}"),
            },
        }
    }
}

fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_challenge_has_no_error() {
        let r = Denial::Authn(AuthnError::Missing).to_reply("http://h/p", &ReplyOptions::default());
        assert_eq!(r.status, 401);
        assert_eq!(r.headers[0].1, "Bearer realm=\"http://h/p\"");
        assert_eq!(r.body, "Jwt is missing");
    }

    #[test]
    fn invalid_token_is_401_with_invalid_token() {
        let r = Denial::Authn(AuthnError::Expired).to_reply("http://h/p", &ReplyOptions::default());
        assert_eq!(r.status, 401);
        assert_eq!(
            r.headers[0].1,
            "Bearer realm=\"http://h/p\", error=\"invalid_token\""
        );
        assert_eq!(r.details, "jwt_authn_access_denied{Jwt_is_expired}");
    }

    #[test]
    fn audience_is_403() {
        let r =
            Denial::Authn(AuthnError::AudienceNotAllowed).to_reply("u", &ReplyOptions::default());
        assert_eq!(r.status, 403);
        assert_eq!(r.body, "Audiences in Jwt are not allowed");
    }

    #[test]
    fn realm_is_capped_at_256_chars() {
        let uri = "x".repeat(400);
        let r = Denial::Authn(AuthnError::Expired).to_reply(&uri, &ReplyOptions::default());
        assert!(r.headers[0].1.contains(&"x".repeat(256)));
        assert!(!r.headers[0].1.contains(&"x".repeat(257)));
    }

    #[test]
    fn egress_without_token_is_503_naming_the_target() {
        let r = Denial::EgressNoToken {
            target: "backend".into(),
            reason: "token endpoint answered HTTP 401 unauthorized_client".into(),
        }
        .to_reply("u", &ReplyOptions::default());
        assert_eq!(r.status, 503);
        assert_eq!(
            r.body,
            "meshgate egress: no access token for target \"backend\": token endpoint answered HTTP 401 unauthorized_client"
        );
        assert!(r.headers.iter().all(|(n, _)| n != "www-authenticate"));
    }

    #[test]
    fn rbac_denial_and_options() {
        let d = Denial::Authz {
            policy: "p".into(),
            rule: Some(1),
            had_valid_token: true,
        };
        let plain = d.to_reply("u", &ReplyOptions::default());
        assert_eq!(
            (plain.status, plain.body.as_str()),
            (403, "RBAC: access denied")
        );
        assert!(plain.headers.iter().all(|(n, _)| n != "www-authenticate"));
        let opts = ReplyOptions {
            insufficient_scope_challenge: true,
            debug_headers: true,
        };
        let rich = d.to_reply("u", &opts);
        assert!(rich.headers.contains(&(
            "www-authenticate".into(),
            "Bearer error=\"insufficient_scope\"".into()
        )));
        assert!(rich
            .headers
            .contains(&(DEBUG_POLICY_HEADER.into(), "p[rules][1]".into())));
    }
}
