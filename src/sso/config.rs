//! The `oidc` block of pluginConfig: parsed strictly (unknown fields are errors with their path,
//! like the rest of the configuration) and compiled once into [`OidcSettings`]. Secrets may come
//! from the Wasm VM's environment (`vmConfig.env`), read here at configure time through an
//! injected lookup.

use super::session::CookieKeys;
use crate::authz::matchers::StrMatch;
use crate::config::{http_target, HttpTarget, JwtRule, JwtRuleConfig};
use crate::duration;
use crate::error::ConfigError;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

pub const DEFAULT_CALLBACK_PATH: &str = "/oauth2/callback";
pub const DEFAULT_LOGOUT_PATH: &str = "/oauth2/logout";
pub const DEFAULT_COOKIE_NAME: &str = "meshgate_session";
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(60);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Cookie keys accepted at once (rotation: the first encrypts, all decrypt).
pub const MAX_COOKIE_KEYS: usize = 8;
const MAX_COOKIE_NAME: usize = 64;

/// Looks up an environment variable of the Wasm VM (`vmConfig.env`); shared with `egress`.
pub use crate::egress::config::EnvLookup;

// ---------------------------------------------------------------------------------------------
// The wire format.

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcConfig {
    #[serde(default)]
    pub issuer: String,
    pub cluster: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_auth_method: Option<ClientAuthMethod>,
    pub scopes: Option<Vec<String>>,
    pub callback_path: Option<String>,
    pub logout_path: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub cookie_name: Option<String>,
    pub cookie_secret: Option<OneOrMany>,
    pub cookie_secret_env: Option<OneOrMany>,
    pub cookie_secure: Option<bool>,
    pub session_lifetime: Option<String>,
    pub refresh_before: Option<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub pass_through_paths: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret (RFC 6749 §2.3.1; Keycloak's default).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the POST body.
    ClientSecretPost,
}

/// A string or a list of strings (`cookieSecret: "k"` or `cookieSecret: ["new", "old"]`). Written by
/// hand: serde's `untagged` buffers the input and adds ~20 KB of .wasm.
#[derive(Debug)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The compiled form.

/// A secret that never shows up in `Debug` output (configuration dumps, logs).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Where the provider's endpoints come from: configured, or found by discovery.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Browser-facing; absolute http(s) URL.
    pub authorization: Option<String>,
    /// Back channel, through `cluster`.
    pub token: Option<HttpTarget>,
    /// Browser-facing; absolute http(s) URL.
    pub end_session: Option<String>,
}

#[derive(Debug)]
pub struct OidcSettings {
    pub issuer: String,
    /// Index of the jwtRule with this issuer: its keys verify the ID token, and it verifies the
    /// session's access token on every request.
    pub rule: usize,
    pub clock_skew_secs: u64,
    /// That rule's `timeout`: how long a callback may wait for its keys.
    pub keys_timeout: Duration,
    /// Envoy cluster of every back-channel call (discovery, token endpoint).
    pub cluster: String,
    /// Fetched when one of the endpoints is not configured.
    pub discovery: Option<HttpTarget>,
    pub configured: Endpoints,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub client_auth: ClientAuthMethod,
    /// Space-separated, always with `openid`.
    pub scope: String,
    pub callback_path: String,
    pub logout_path: String,
    /// Absolute URL, or a path on the request's host.
    pub post_logout_redirect: String,
    pub cookie_name: String,
    pub cookie_keys: CookieKeys,
    pub cookie_secure: bool,
    pub session_lifetime_secs: u64,
    pub refresh_before_secs: u64,
    /// Back-channel call timeout; also bounds how long a request waits for one.
    pub timeout: Duration,
    pub(crate) pass_through: Vec<StrMatch>,
}

impl OidcSettings {
    pub fn passes_through(&self, path: &str) -> bool {
        self.pass_through.iter().any(|m| m.matches(path))
    }
}

// ---------------------------------------------------------------------------------------------

/// Compiles the `oidc` block. `rules`/`rule_configs` are the compiled and wire jwtRules (same
/// order): the issuer must be one of them, and that rule must read `Authorization: Bearer`.
pub fn compile(
    cfg: &OidcConfig,
    rules: &[JwtRule],
    rule_configs: &[JwtRuleConfig],
    env: EnvLookup<'_>,
) -> Result<OidcSettings, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let err = |errors: &mut Vec<ConfigError>, field: &str, msg: String| {
        errors.push(ConfigError::new(format!("oidc.{field}"), msg));
    };

    // Issuer: one of the jwtRules, which must accept the token where the session puts it.
    let mut rule = None;
    if cfg.issuer.is_empty() {
        err(&mut errors, "issuer", "is required".into());
    } else {
        match rules.iter().position(|r| r.issuer == cfg.issuer) {
            None => err(
                &mut errors,
                "issuer",
                format!(
                    "{:?} must equal the issuer of one of jwtRules (that rule verifies the ID token and every session's access token)",
                    cfg.issuer
                ),
            ),
            Some(i) => {
                if !reads_authorization_bearer(&rule_configs[i]) {
                    err(
                        &mut errors,
                        "issuer",
                        format!("jwtRules[{i}] (issuer {:?}) must accept tokens from the Authorization header with prefix \"Bearer \" (where the session's access token is put)", cfg.issuer),
                    );
                }
                rule = Some(i);
            }
        }
    }

    // Back channel.
    let cluster_override = match &cfg.cluster {
        Some(c) if c.is_empty() => {
            err(&mut errors, "cluster", "must not be empty".into());
            None
        }
        other => other.as_deref(),
    };
    let issuer_target = if cfg.issuer.is_empty() {
        None
    } else {
        let uri = format!(
            "{}/.well-known/openid-configuration",
            cfg.issuer.trim_end_matches('/')
        );
        http_target(&uri, cluster_override).ok()
    };
    let cluster = cluster_override
        .map(str::to_owned)
        .or_else(|| issuer_target.as_ref().map(|t| t.cluster.clone()))
        .unwrap_or_default();
    let authorization = browser_url(
        &cfg.authorization_endpoint,
        "authorizationEndpoint",
        &mut errors,
    );
    let end_session = browser_url(&cfg.end_session_endpoint, "endSessionEndpoint", &mut errors);
    let token = match &cfg.token_endpoint {
        None => None,
        Some(u) => match http_target(u, Some(&cluster)) {
            Ok(t) => Some(t),
            Err(e) => {
                err(&mut errors, "tokenEndpoint", e);
                None
            }
        },
    };
    let needs_discovery =
        authorization.is_none() || token.is_none() || cfg.end_session_endpoint.is_none();
    let discovery = if needs_discovery {
        if issuer_target.is_none() && !cfg.issuer.is_empty() {
            err(
                &mut errors,
                "issuer",
                "must be an http(s) URL for OIDC discovery unless authorizationEndpoint, tokenEndpoint and endSessionEndpoint are all set".into(),
            );
        }
        issuer_target
    } else {
        None
    };
    if cluster.is_empty() && !cfg.issuer.is_empty() && errors.is_empty() {
        err(
            &mut errors,
            "cluster",
            "is required when the issuer is not an http(s) URL".into(),
        );
    }

    // Client.
    if cfg.client_id.is_empty() {
        err(&mut errors, "clientId", "is required".into());
    }
    let client_secret = match (&cfg.client_secret, &cfg.client_secret_env) {
        (Some(_), Some(_)) => {
            err(
                &mut errors,
                "clientSecretEnv",
                "clientSecret and clientSecretEnv are mutually exclusive".into(),
            );
            None
        }
        (Some(s), None) if s.is_empty() => {
            err(&mut errors, "clientSecret", "must not be empty".into());
            None
        }
        (Some(s), None) => Some(Secret(s.clone())),
        (None, Some(name)) => match env(name).filter(|v| !v.is_empty()) {
            Some(v) => Some(Secret(v)),
            None => {
                err(
                    &mut errors,
                    "clientSecretEnv",
                    format!("environment variable {name:?} of the Wasm VM is not set or empty (WasmPlugin vmConfig.env)"),
                );
                None
            }
        },
        (None, None) => None,
    };
    if cfg.client_auth_method.is_some() && client_secret.is_none() && errors.is_empty() {
        err(
            &mut errors,
            "clientAuthMethod",
            "needs clientSecret or clientSecretEnv (a public client sends no secret)".into(),
        );
    }

    // Scopes.
    let scopes: Vec<String> = cfg
        .scopes
        .clone()
        .unwrap_or_else(|| vec!["openid".to_string()]);
    for (i, s) in scopes.iter().enumerate() {
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            err(
                &mut errors,
                &format!("scopes[{i}]"),
                "must be a scope token (printable ASCII, no spaces, quotes or backslashes)".into(),
            );
        }
    }
    if !scopes.iter().any(|s| s == "openid") {
        err(
            &mut errors,
            "scopes",
            "must contain \"openid\" (the ID token proves the login)".into(),
        );
    }

    // Paths.
    let callback_path = local_path(
        &cfg.callback_path,
        DEFAULT_CALLBACK_PATH,
        "callbackPath",
        &mut errors,
    );
    let logout_path = local_path(
        &cfg.logout_path,
        DEFAULT_LOGOUT_PATH,
        "logoutPath",
        &mut errors,
    );
    if callback_path == logout_path {
        err(
            &mut errors,
            "logoutPath",
            "must differ from callbackPath".into(),
        );
    }
    let post_logout_redirect = match &cfg.post_logout_redirect_uri {
        None => "/".to_string(),
        Some(u) if is_local_path(u) => u.clone(),
        Some(u) if http_target(u, None).is_ok() => u.clone(),
        Some(u) => {
            err(
                &mut errors,
                "postLogoutRedirectUri",
                format!(
                    "{u:?} must be an absolute http(s) URL or a path starting with a single '/'"
                ),
            );
            String::new()
        }
    };
    let mut pass_through = Vec::new();
    for (i, p) in cfg.pass_through_paths.iter().enumerate() {
        if p.is_empty() {
            err(
                &mut errors,
                &format!("passThroughPaths[{i}]"),
                "must not be empty".into(),
            );
        } else {
            pass_through.push(StrMatch::istio(p, ""));
        }
    }
    for (field, path) in [
        ("callbackPath", &callback_path),
        ("logoutPath", &logout_path),
    ] {
        if pass_through.iter().any(|m| m.matches(path)) {
            err(
                &mut errors,
                "passThroughPaths",
                format!("matches {field} {path:?}, which single sign-on must handle"),
            );
        }
    }

    // Cookies.
    let cookie_name = cfg
        .cookie_name
        .clone()
        .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_string());
    if cookie_name.is_empty()
        || cookie_name.len() > MAX_COOKIE_NAME
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        err(
            &mut errors,
            "cookieName",
            format!("must be 1 to {MAX_COOKIE_NAME} characters of [A-Za-z0-9_-]"),
        );
    }
    let keys = cookie_keys(cfg, env, &mut errors);

    let session_lifetime = duration_field(
        &cfg.session_lifetime,
        DEFAULT_SESSION_LIFETIME,
        "sessionLifetime",
        &mut errors,
    );
    if session_lifetime < Duration::from_secs(60) {
        err(&mut errors, "sessionLifetime", "must be at least 1m".into());
    }
    let refresh_before = duration_field(
        &cfg.refresh_before,
        DEFAULT_REFRESH_BEFORE,
        "refreshBefore",
        &mut errors,
    );
    let timeout = duration_field(&cfg.timeout, DEFAULT_TIMEOUT, "timeout", &mut errors);
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        err(&mut errors, "timeout", "must be between 1ms and 60s".into());
    }

    match (rule, keys, errors.is_empty()) {
        (Some(rule), Some(cookie_keys), true) => Ok(OidcSettings {
            issuer: cfg.issuer.clone(),
            rule,
            clock_skew_secs: rules[rule].clock_skew_secs,
            keys_timeout: rules[rule].timeout,
            cluster,
            discovery,
            configured: Endpoints {
                authorization,
                token,
                end_session,
            },
            client_id: cfg.client_id.clone(),
            client_secret,
            client_auth: cfg.client_auth_method.unwrap_or_default(),
            scope: scopes.join(" "),
            callback_path,
            logout_path,
            post_logout_redirect,
            cookie_name,
            cookie_keys,
            cookie_secure: cfg.cookie_secure.unwrap_or(true),
            session_lifetime_secs: session_lifetime.as_secs(),
            refresh_before_secs: refresh_before.as_secs(),
            timeout,
            pass_through,
        }),
        _ => Err(errors),
    }
}

/// Whether a jwtRule finds tokens in `Authorization: Bearer <token>` (the default locations, or
/// an explicit `fromHeaders` entry).
fn reads_authorization_bearer(rule: &JwtRuleConfig) -> bool {
    let default =
        rule.from_headers.is_empty() && rule.from_params.is_empty() && rule.from_cookies.is_empty();
    default
        || rule
            .from_headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("authorization") && h.prefix == "Bearer ")
}

fn browser_url(v: &Option<String>, field: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    let u = v.as_ref()?;
    match http_target(u, None) {
        Ok(_) if u.contains('#') => {
            errors.push(ConfigError::new(
                format!("oidc.{field}"),
                format!("{u:?} must not contain a fragment"),
            ));
            None
        }
        Ok(_) => Some(u.clone()),
        Err(e) => {
            errors.push(ConfigError::new(format!("oidc.{field}"), e));
            None
        }
    }
}

/// A path on this host: starts with one '/', not '//' or '/\' (which browsers read as another
/// host), no query, no control characters or backslashes.
pub fn is_local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.contains('\\')
        && !p.bytes().any(|b| b.is_ascii_control() || b == b' ')
}

fn local_path(
    v: &Option<String>,
    default: &str,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> String {
    let p = v.clone().unwrap_or_else(|| default.to_string());
    if !is_local_path(&p) || p.contains(['?', '#']) {
        errors.push(ConfigError::new(
            format!("oidc.{field}"),
            format!("{p:?} must be a path starting with a single '/', without query or fragment"),
        ));
    }
    p
}

fn duration_field(
    value: &Option<String>,
    default: Duration,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match value {
        None => default,
        Some(s) => duration::parse(s).unwrap_or_else(|e| {
            errors.push(ConfigError::new(format!("oidc.{field}"), e));
            default
        }),
    }
}

/// Standard or URL-safe alphabet, padded or not (Kubernetes Secrets and `openssl rand -base64 32`
/// give the standard one).
fn decode_key(s: &str) -> Option<[u8; 32]> {
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let s = s.trim();
    let bytes = GeneralPurpose::new(&base64::alphabet::STANDARD, lenient)
        .decode(s)
        .or_else(|_| GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient).decode(s))
        .or_else(|_| STANDARD.decode(s))
        .or_else(|_| URL_SAFE.decode(s))
        .ok()?;
    bytes.try_into().ok()
}

fn cookie_keys(
    cfg: &OidcConfig,
    env: EnvLookup<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<CookieKeys> {
    // (field path, value) of every key, in order.
    let mut raw: Vec<(String, String)> = Vec::new();
    match (&cfg.cookie_secret, &cfg.cookie_secret_env) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                "oidc.cookieSecretEnv",
                "cookieSecret and cookieSecretEnv are mutually exclusive",
            ));
            return None;
        }
        (None, None) => {
            errors.push(ConfigError::new(
                "oidc.cookieSecret",
                "cookieSecret or cookieSecretEnv is required (32 random bytes, base64: openssl rand -base64 32)",
            ));
            return None;
        }
        (Some(s), None) => {
            let many = matches!(s, OneOrMany::Many(_));
            for (i, v) in s.items().into_iter().enumerate() {
                let path = if many {
                    format!("oidc.cookieSecret[{i}]")
                } else {
                    "oidc.cookieSecret".to_string()
                };
                raw.push((path, v.to_string()));
            }
        }
        (None, Some(names)) => {
            let many = matches!(names, OneOrMany::Many(_));
            for (i, name) in names.items().into_iter().enumerate() {
                let path = if many {
                    format!("oidc.cookieSecretEnv[{i}]")
                } else {
                    "oidc.cookieSecretEnv".to_string()
                };
                match env(name).filter(|v| !v.trim().is_empty()) {
                    // One variable may hold several keys (rotation), separated by commas or
                    // whitespace, the first one encrypting.
                    Some(v) => {
                        for k in v.split([',', ' ', '\n', '\t']).filter(|k| !k.is_empty()) {
                            raw.push((format!("{path} (${name})"), k.to_string()));
                        }
                    }
                    None => errors.push(ConfigError::new(
                        path,
                        format!("environment variable {name:?} of the Wasm VM is not set or empty (WasmPlugin vmConfig.env)"),
                    )),
                }
            }
        }
    }
    if raw.is_empty() {
        if errors.is_empty() {
            errors.push(ConfigError::new(
                "oidc.cookieSecret",
                "needs at least one key",
            ));
        }
        return None;
    }
    if raw.len() > MAX_COOKIE_KEYS {
        errors.push(ConfigError::new(
            "oidc.cookieSecret",
            format!("at most {MAX_COOKIE_KEYS} keys"),
        ));
        return None;
    }
    let mut keys = Vec::new();
    for (path, v) in raw {
        match decode_key(&v) {
            Some(k) => keys.push(k),
            // The value is a secret: never echo it.
            None => errors.push(ConfigError::new(
                path,
                "must be 32 bytes in base64 (openssl rand -base64 32)",
            )),
        }
    }
    CookieKeys::new(&keys)
}
