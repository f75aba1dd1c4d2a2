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

/// Declares `SsoError` and `SsoError::ALL` from one list (metrics index counters by
/// `variant as usize`, like `AuthnError`).
macro_rules! sso_errors {
    ($($(#[$attr:meta])* $name:ident,)*) => {
        /// Why single sign-on answered a request itself instead of letting it through (issue
        /// "sso"). Redirects (to the login page, after the callback, after logout) are not errors.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SsoError {
            $($(#[$attr])* $name,)*
        }

        impl SsoError {
            /// Every variant, in declaration order.
            pub const ALL: [SsoError; [$(stringify!($name)),*].len()] = [$(SsoError::$name),*];
        }
    };
}

sso_errors! {
    /// A request without a session that is not a browser navigation (XHR, API, non-GET).
    LoginRequired,
    /// The callback lacks `state` or `code`, or names another issuer (`iss`, RFC 9207).
    BadCallback,
    /// No pending login for this `state` in this browser: no cookie, a tampered or foreign one,
    /// or one older than the login timeout.
    NoPendingLogin,
    /// This `state` was already used for a code exchange.
    Replayed,
    /// The provider answered the authorization request with `error=`.
    ProviderError,
    /// The token endpoint refused the authorization code (`invalid_grant`, ...).
    TokenRejected,
    /// The ID token failed verification (signature, `iss`, `aud`, `nonce`, `exp`).
    IdTokenInvalid,
    /// Discovery or the token endpoint failed, timed out or answered garbage.
    ProviderUnavailable,
    /// The tokens do not fit in the session cookies.
    SessionTooLarge,
    /// The host gave no random bytes for `state`, `nonce` and the PKCE verifier.
    NoRandomness,
}

impl SsoError {
    pub fn status(self) -> u32 {
        use SsoError::*;
        match self {
            ProviderUnavailable | SessionTooLarge | NoRandomness => 502,
            LoginRequired | BadCallback | NoPendingLogin | Replayed | ProviderError
            | TokenRejected | IdTokenInvalid => 401,
        }
    }

    pub fn message(self) -> &'static str {
        use SsoError::*;
        match self {
            LoginRequired => "Authentication required: sign in with a browser or send a bearer token",
            BadCallback => "Login failed: invalid callback",
            NoPendingLogin => "Login failed: no login in progress for this state in this browser (expired, or started elsewhere); open the page again to sign in",
            Replayed => "Login failed: this login response was already used",
            ProviderError => "Login failed at the identity provider",
            TokenRejected => "Login failed: the identity provider rejected the authorization code",
            IdTokenInvalid => "Login failed: invalid ID token",
            ProviderUnavailable => "Identity provider unavailable; try again later",
            SessionTooLarge => "Login failed: the session does not fit in cookies",
            NoRandomness => "Login unavailable: no random source",
        }
    }

    /// Short stable name used in metric names and logs.
    pub fn metric_name(self) -> &'static str {
        use SsoError::*;
        match self {
            LoginRequired => "login_required",
            BadCallback => "bad_callback",
            NoPendingLogin => "no_pending_login",
            Replayed => "replayed",
            ProviderError => "provider_error",
            TokenRejected => "token_rejected",
            IdTokenInvalid => "id_token_invalid",
            ProviderUnavailable => "provider_unavailable",
            SessionTooLarge => "session_too_large",
            NoRandomness => "no_randomness",
        }
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
    /// Single sign-on answered the request (issue "sso"); `detail` is a short, non-secret
    /// addition to the message (the provider's error code, which ID token check failed).
    Sso {
        error: SsoError,
        detail: Option<String>,
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
            Denial::Sso { error, detail } => {
                let status = error.status();
                let mut headers = Vec::with_capacity(3);
                if status == 401 {
                    let realm = truncate_chars(request_uri, 256).replace('"', "%22");
                    headers.push((
                        "www-authenticate".into(),
                        format!("Bearer realm=\"{realm}\""),
                    ));
                }
                headers.push(("content-type".into(), "text/plain".into()));
                headers.push(("cache-control".into(), "no-store".into()));
                let body = match detail {
                    Some(d) => format!("{}: {d}", error.message()),
                    None => error.message().to_string(),
                };
                Reply {
                    status,
                    headers,
                    body,
                    details: format!("sso_{}", error.metric_name()),
                }
            }
        }
    }
}

impl Reply {
    /// A `302 Found` to `location` (a path on this host, or the provider's URL) that sets or
    /// clears these cookies (`Set-Cookie` values). Never cached: it carries one-time state.
    pub fn redirect(location: String, set_cookies: Vec<String>) -> Reply {
        let mut headers = Vec::with_capacity(2 + set_cookies.len());
        headers.push(("location".to_string(), location));
        headers.push(("cache-control".to_string(), "no-store".to_string()));
        headers.extend(
            set_cookies
                .into_iter()
                .map(|c| ("set-cookie".to_string(), c)),
        );
        Reply {
            status: 302,
            headers,
            body: String::new(),
            details: "sso_redirect".into(),
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
    fn sso_denials() {
        let r = Denial::Sso {
            error: SsoError::LoginRequired,
            detail: None,
        }
        .to_reply("http://h/p", &ReplyOptions::default());
        assert_eq!(r.status, 401);
        assert_eq!(
            r.headers[0],
            (
                "www-authenticate".into(),
                "Bearer realm=\"http://h/p\"".into()
            )
        );
        assert_eq!(
            r.body,
            "Authentication required: sign in with a browser or send a bearer token"
        );
        assert_eq!(r.details, "sso_login_required");
        let r = Denial::Sso {
            error: SsoError::ProviderError,
            detail: Some("access_denied".into()),
        }
        .to_reply("u", &ReplyOptions::default());
        assert_eq!(
            (r.status, r.body.as_str()),
            (401, "Login failed at the identity provider: access_denied")
        );
        let r = Denial::Sso {
            error: SsoError::ProviderUnavailable,
            detail: None,
        }
        .to_reply("u", &ReplyOptions::default());
        assert_eq!(r.status, 502);
        assert!(r.headers.iter().all(|(n, _)| n != "www-authenticate"));
        let names: std::collections::BTreeSet<_> =
            SsoError::ALL.iter().map(|e| e.metric_name()).collect();
        assert_eq!(names.len(), SsoError::ALL.len());
    }

    #[test]
    fn redirect_sets_every_cookie() {
        let r = Reply::redirect("/after".into(), vec!["a=1".into(), "b=2".into()]);
        assert_eq!(r.status, 302);
        assert_eq!(r.headers[0], ("location".into(), "/after".into()));
        assert_eq!(
            r.headers.iter().filter(|(n, _)| n == "set-cookie").count(),
            2
        );
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
