//! pluginConfig: the JSON istiod hands the plugin (WasmPlugin.spec.pluginConfig), parsed strictly
//! and compiled once into immutable `Settings`. Any unknown or invalid field is an error with its
//! path: the plugin refuses to load rather than run with a config it does not understand.

use crate::authz::{self, Policies, PolicyConfig};
use crate::duration;
use crate::error::{ConfigError, ReplyOptions};
use crate::json_path;
use crate::jwt::jwk::{parse_jwks, KeySet};
use crate::jwt::verify::normalize_audience;
use serde::Deserialize;
use std::rc::Rc;
use std::time::Duration;

// Where keys are fetched from; re-exported because the JWKS state machine names it through `config`.
pub use crate::http_target::{http_target, HttpTarget};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CACHE_DURATION: Duration = Duration::from_secs(300);
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
pub const DEFAULT_KID_REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = 1024;
/// Tokens larger than this are rejected before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
pub const MAX_TOKEN_CACHE_SIZE: usize = 100_000;

// ---------------------------------------------------------------------------------------------
// The wire format (Istio field names, verbatim).

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    #[serde(default)]
    pub jwt_rules: Vec<JwtRuleConfig>,
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// Signature backend: `auto` (host when available, else in-wasm), `host`, `wasm`.
    #[serde(default)]
    pub crypto: CryptoMode,
    /// Verified-token cache entries per Wasm VM (0 disables the cache).
    pub token_cache_size: Option<usize>,
    /// Add `WWW-Authenticate: Bearer error="insufficient_scope"` to policy denials of requests
    /// that carried a valid token (RFC 6750 §3.1).
    #[serde(default)]
    pub insufficient_scope_challenge: bool,
    /// Add a response header naming the policy that denied a request (debugging only).
    #[serde(default)]
    pub debug_headers: bool,
    /// Outbound targets that get a client-credentials token (see `egress`).
    #[serde(default)]
    pub egress: Vec<crate::egress::EgressTargetConfig>,
    /// Browser single sign-on (`src/sso/`).
    pub oidc: Option<crate::sso::config::OidcConfig>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CryptoMode {
    #[default]
    Auto,
    Host,
    Wasm,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Presence {
    #[default]
    Optional,
    Required,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRuleConfig {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeaderConfig>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeaderConfig>,
    #[serde(default)]
    pub forward_original_token: bool,
    pub timeout: Option<String>,
    #[serde(default)]
    pub space_delimited_claims: Vec<String>,
    // meshgate additions
    pub jwks_cluster: Option<String>,
    pub cache_duration: Option<String>,
    pub clock_skew: Option<String>,
    #[serde(default)]
    pub presence: Presence,
    pub kid_refetch_cooldown: Option<String>,
    /// Only Keycloak access tokens (`typ` claim `Bearer`), never ID or refresh tokens.
    #[serde(default)]
    pub access_tokens_only: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeaderConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeaderConfig {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

// ---------------------------------------------------------------------------------------------
// The compiled form.

#[derive(Debug, Clone)]
pub enum KeySource {
    /// `jwks`: inline keys, never fetched.
    Inline(Rc<KeySet>),
    /// `jwksUri`.
    Remote(HttpTarget),
    /// Neither: OIDC discovery at `<issuer>/.well-known/openid-configuration`, like istiod.
    /// `cluster_override` is `jwksCluster` (used for both calls when set).
    Discovery {
        discovery: HttpTarget,
        cluster_override: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    /// Lower-case header name.
    pub header: String,
    /// Claim path: `realm_access.roles` → ["realm_access", "roles"].
    pub claim: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct JwtRule {
    pub issuer: String,
    /// Normalized (see `normalize_audience`); empty = not checked.
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub timeout: Duration,
    pub cache_duration: Duration,
    pub clock_skew_secs: u64,
    pub presence: Presence,
    pub kid_refetch_cooldown: Duration,
    pub claim_headers: Vec<ClaimHeader>,
    pub payload_header: Option<String>,
    pub forward: bool,
    pub space_delimited: Rc<[String]>,
    /// `accessTokensOnly`: the token's `typ` claim must be `Bearer`.
    pub access_tokens_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationKind {
    /// Lower-case header name and the exact value prefix ("Bearer ").
    Header {
        name: String,
        prefix: String,
    },
    Param(String),
    Cookie(String),
}

/// Where tokens are looked for, and which rules (by index) may issue a token found there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub kind: LocationKind,
    pub rules: Vec<usize>,
}

#[derive(Debug)]
pub struct Settings {
    pub rules: Vec<JwtRule>,
    pub locations: Vec<Location>,
    /// Headers this filter sets: client-sent copies are always removed.
    pub sanitize_headers: Vec<String>,
    pub policies: Policies,
    pub crypto: CryptoMode,
    pub token_cache_size: usize,
    pub reply: ReplyOptions,
    pub any_required: bool,
    /// Compiled `egress` targets (empty: no outbound stage).
    pub egress: Vec<crate::egress::EgressTarget>,
    pub oidc: Option<Rc<crate::sso::config::OidcSettings>>,
}

impl Settings {
    /// Parses and compiles the plugin configuration bytes. An empty configuration is valid
    /// (no rules, no policies: every request passes) — the same as an empty Istio policy set.
    pub fn from_json(bytes: &[u8]) -> Result<Settings, Vec<ConfigError>> {
        Settings::from_json_with_env(bytes, &|name| std::env::var(name).ok())
    }

    /// [`Settings::from_json`] with the environment lookup for `*Env` fields (the Wasm VM's
    /// `vmConfig.env`; tests pass their own).
    pub fn from_json_with_env(
        bytes: &[u8],
        env: crate::egress::config::EnvLookup<'_>,
    ) -> Result<Settings, Vec<ConfigError>> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| vec![ConfigError::new("", "configuration is not UTF-8")])?;
        let config: PluginConfig = if text.trim().is_empty() {
            PluginConfig::default()
        } else {
            serde_json::from_str(text).map_err(|e| {
                vec![ConfigError::new(
                    json_path::error_path(text, &e),
                    e.to_string(),
                )]
            })?
        };
        compile_with_env(&config, env)
    }
}

pub fn compile(config: &PluginConfig) -> Result<Settings, Vec<ConfigError>> {
    compile_with_env(config, &|name| std::env::var(name).ok())
}

pub fn compile_with_env(
    config: &PluginConfig,
    env: crate::egress::config::EnvLookup<'_>,
) -> Result<Settings, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    for (i, rule) in config.jwt_rules.iter().enumerate() {
        let path = format!("jwtRules[{i}]");
        match compile_rule(rule, &path) {
            Ok(r) => {
                if let Some(j) = rules.iter().position(|o: &JwtRule| o.issuer == r.issuer) {
                    errors.push(ConfigError::new(
                        format!("{path}.issuer"),
                        format!(
                            "issuer {:?} is already configured in jwtRules[{j}]",
                            r.issuer
                        ),
                    ));
                }
                rules.push(r)
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    let policies = match authz::compile(&config.policies, "policies") {
        Ok(p) => Some(p),
        Err(mut e) => {
            errors.append(&mut e);
            None
        }
    };
    let egress =
        crate::egress::config::compile(&config.egress, "egress", env).unwrap_or_else(|mut e| {
            errors.append(&mut e);
            Vec::new()
        });
    let token_cache_size = config.token_cache_size.unwrap_or(DEFAULT_TOKEN_CACHE_SIZE);
    if token_cache_size > MAX_TOKEN_CACHE_SIZE {
        errors.push(ConfigError::new(
            "tokenCacheSize",
            format!("must be at most {MAX_TOKEN_CACHE_SIZE}"),
        ));
    }
    let oidc = match &config.oidc {
        Some(o) if errors.is_empty() => {
            match crate::sso::config::compile(o, &rules, &config.jwt_rules, env) {
                Ok(s) => Some(Rc::new(s)),
                Err(mut e) => {
                    errors.append(&mut e);
                    None
                }
            }
        }
        _ => None,
    };
    let (Some(policies), true) = (policies, errors.is_empty()) else {
        return Err(errors);
    };
    let locations = locations(&config.jwt_rules);
    let mut sanitize_headers: Vec<String> = Vec::new();
    for rule in &rules {
        for h in rule
            .claim_headers
            .iter()
            .map(|c| &c.header)
            .chain(rule.payload_header.iter())
        {
            if !sanitize_headers.contains(h) {
                sanitize_headers.push(h.clone());
            }
        }
    }
    Ok(Settings {
        any_required: rules.iter().any(|r| r.presence == Presence::Required),
        rules,
        locations,
        sanitize_headers,
        policies,
        crypto: config.crypto,
        token_cache_size,
        reply: ReplyOptions {
            insufficient_scope_challenge: config.insufficient_scope_challenge,
            debug_headers: config.debug_headers,
        },
        egress,
        oidc,
    })
}

fn duration_field(
    value: &Option<String>,
    default: Duration,
    path: String,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match value {
        None => default,
        Some(s) => duration::parse(s).unwrap_or_else(|e| {
            errors.push(ConfigError::new(path, e));
            default
        }),
    }
}

fn valid_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One JWTRule, checked field by field; every error is reported, in field order.
fn compile_rule(rule: &JwtRuleConfig, path: &str) -> Result<JwtRule, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if rule.issuer.is_empty() {
        errors.push(ConfigError::new(format!("{path}.issuer"), "is required"));
    }
    let times = rule_times(rule, path, &mut errors);
    let keys = key_source(rule, path, &mut errors);
    check_token_locations(rule, path, &mut errors);
    let outputs = rule_outputs(rule, path, &mut errors);
    let space_delimited = space_delimited_claims(rule, path, &mut errors);
    match (keys, errors.is_empty()) {
        (Some(keys), true) => Ok(JwtRule {
            issuer: rule.issuer.clone(),
            audiences: rule
                .audiences
                .iter()
                .map(|a| normalize_audience(a).to_string())
                .collect(),
            keys,
            timeout: times.timeout,
            cache_duration: times.cache_duration,
            clock_skew_secs: times.clock_skew.as_secs(),
            presence: rule.presence,
            kid_refetch_cooldown: times.kid_refetch_cooldown,
            claim_headers: outputs.claim_headers,
            payload_header: outputs.payload_header,
            forward: rule.forward_original_token,
            space_delimited: space_delimited.into(),
            access_tokens_only: rule.access_tokens_only,
        }),
        _ => Err(errors),
    }
}

/// The rule's durations (defaults where absent).
struct RuleTimes {
    timeout: Duration,
    cache_duration: Duration,
    clock_skew: Duration,
    kid_refetch_cooldown: Duration,
}

fn rule_times(rule: &JwtRuleConfig, path: &str, errors: &mut Vec<ConfigError>) -> RuleTimes {
    let timeout = duration_field(
        &rule.timeout,
        DEFAULT_TIMEOUT,
        format!("{path}.timeout"),
        errors,
    );
    if timeout.is_zero() {
        errors.push(ConfigError::new(
            format!("{path}.timeout"),
            "must be greater than 0",
        ));
    }
    let cache_duration = duration_field(
        &rule.cache_duration,
        DEFAULT_CACHE_DURATION,
        format!("{path}.cacheDuration"),
        errors,
    );
    if cache_duration < Duration::from_secs(1) {
        errors.push(ConfigError::new(
            format!("{path}.cacheDuration"),
            "must be at least 1s",
        ));
    }
    let clock_skew = duration_field(
        &rule.clock_skew,
        DEFAULT_CLOCK_SKEW,
        format!("{path}.clockSkew"),
        errors,
    );
    let kid_refetch_cooldown = duration_field(
        &rule.kid_refetch_cooldown,
        DEFAULT_KID_REFETCH_COOLDOWN,
        format!("{path}.kidRefetchCooldown"),
        errors,
    );
    RuleTimes {
        timeout,
        cache_duration,
        clock_skew,
        kid_refetch_cooldown,
    }
}

/// Where the keys come from: inline `jwks`, `jwksUri`, or OIDC discovery from the issuer; `None`
/// when that cannot be decided (the error says why).
fn key_source(
    rule: &JwtRuleConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<KeySource> {
    if let Some(c) = &rule.jwks_cluster {
        if c.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.jwksCluster"),
                "must not be empty",
            ));
        }
    }
    match (&rule.jwks_uri, &rule.jwks) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                format!("{path}.jwks"),
                "jwks and jwksUri are mutually exclusive",
            ));
            None
        }
        (None, Some(inline)) => match parse_jwks(inline.as_bytes()) {
            Ok(set) if set.keys.is_empty() => {
                errors.push(ConfigError::new(
                    format!("{path}.jwks"),
                    format!("no usable signing key ({})", set.skipped.join("; ")),
                ));
                None
            }
            Ok(set) => Some(KeySource::Inline(Rc::new(set))),
            Err(e) => {
                errors.push(ConfigError::new(format!("{path}.jwks"), e));
                None
            }
        },
        (Some(uri), None) => match http_target(uri, rule.jwks_cluster.as_deref()) {
            Ok(t) => Some(KeySource::Remote(t)),
            Err(e) => {
                errors.push(ConfigError::new(format!("{path}.jwksUri"), e));
                None
            }
        },
        (None, None) => {
            let uri = format!(
                "{}/.well-known/openid-configuration",
                rule.issuer.trim_end_matches('/')
            );
            match http_target(&uri, rule.jwks_cluster.as_deref()) {
                Ok(t) => Some(KeySource::Discovery {
                    discovery: t,
                    cluster_override: rule.jwks_cluster.clone(),
                }),
                Err(e) => {
                    if !rule.issuer.is_empty() {
                        errors.push(ConfigError::new(
                            format!("{path}.issuer"),
                            format!("without jwksUri or jwks the issuer must be an http(s) URL for OIDC discovery: {e}"),
                        ));
                    }
                    None
                }
            }
        }
    }
}

/// fromHeaders / fromParams / fromCookies: only checked here; `locations` merges them across rules.
fn check_token_locations(rule: &JwtRuleConfig, path: &str, errors: &mut Vec<ConfigError>) {
    for (j, h) in rule.from_headers.iter().enumerate() {
        if !valid_header_name(&h.name) {
            errors.push(ConfigError::new(
                format!("{path}.fromHeaders[{j}].name"),
                "must be a header name ([-_A-Za-z0-9]+)",
            ));
        }
    }
    for (j, p) in rule.from_params.iter().enumerate() {
        if p.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.fromParams[{j}]"),
                "must not be empty",
            ));
        }
    }
    for (j, c) in rule.from_cookies.iter().enumerate() {
        if c.is_empty() || c.contains([';', '=', ' ', ',']) {
            errors.push(ConfigError::new(
                format!("{path}.fromCookies[{j}]"),
                "must be a cookie name",
            ));
        }
    }
}

/// Headers the rule writes upstream from a verified token.
struct RuleOutputs {
    claim_headers: Vec<ClaimHeader>,
    payload_header: Option<String>,
}

fn rule_outputs(rule: &JwtRuleConfig, path: &str, errors: &mut Vec<ConfigError>) -> RuleOutputs {
    let mut claim_headers = Vec::new();
    for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
        if !valid_header_name(&c.header) {
            errors.push(ConfigError::new(
                format!("{path}.outputClaimToHeaders[{j}].header"),
                "must match ^[-_A-Za-z0-9]+$",
            ));
        }
        if c.claim.is_empty() || c.claim.split('.').any(str::is_empty) {
            errors.push(ConfigError::new(
                format!("{path}.outputClaimToHeaders[{j}].claim"),
                "must be a claim name (nested: a.b)",
            ));
        }
        claim_headers.push(ClaimHeader {
            header: c.header.to_ascii_lowercase(),
            claim: c.claim.split('.').map(str::to_owned).collect(),
        });
    }
    if let Some(h) = &rule.output_payload_to_header {
        if !valid_header_name(h) {
            errors.push(ConfigError::new(
                format!("{path}.outputPayloadToHeader"),
                "must match ^[-_A-Za-z0-9]+$",
            ));
        }
    }
    RuleOutputs {
        claim_headers,
        payload_header: rule
            .output_payload_to_header
            .as_ref()
            .map(|h| h.to_ascii_lowercase()),
    }
}

/// Claims split on spaces for policy matching: `scope` and `permission` always, then the rule's own.
fn space_delimited_claims(
    rule: &JwtRuleConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<String> {
    let mut space_delimited = vec!["scope".to_string(), "permission".to_string()];
    for (j, c) in rule.space_delimited_claims.iter().enumerate() {
        if c.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.spaceDelimitedClaims[{j}]"),
                "must not be empty",
            ));
        } else if !space_delimited.contains(c) {
            space_delimited.push(c.clone());
        }
    }
    space_delimited
}

/// Token locations, merged across rules (Envoy extractor): a rule without any fromHeaders,
/// fromParams or fromCookies uses `Authorization: Bearer` and the `access_token` parameter.
fn locations(rules: &[JwtRuleConfig]) -> Vec<Location> {
    let mut out: Vec<Location> = Vec::new();
    let mut add = |kind: LocationKind, rule: usize| match out.iter_mut().find(|l| l.kind == kind) {
        Some(l) => {
            if !l.rules.contains(&rule) {
                l.rules.push(rule)
            }
        }
        None => out.push(Location {
            kind,
            rules: vec![rule],
        }),
    };
    for (i, r) in rules.iter().enumerate() {
        if r.from_headers.is_empty() && r.from_params.is_empty() && r.from_cookies.is_empty() {
            add(
                LocationKind::Header {
                    name: "authorization".into(),
                    prefix: "Bearer ".into(),
                },
                i,
            );
            add(LocationKind::Param("access_token".into()), i);
        }
        for h in &r.from_headers {
            add(
                LocationKind::Header {
                    name: h.name.to_ascii_lowercase(),
                    prefix: h.prefix.clone(),
                },
                i,
            );
        }
        for p in &r.from_params {
            add(LocationKind::Param(p.clone()), i);
        }
        for c in &r.from_cookies {
            add(LocationKind::Cookie(c.clone()), i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(json: &str) -> Vec<String> {
        match Settings::from_json(json.as_bytes()) {
            Ok(_) => vec![],
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn empty_config_is_valid() {
        let s = Settings::from_json(b"").unwrap();
        assert!(s.rules.is_empty());
        let s = Settings::from_json(b"{}").unwrap();
        assert!(s.locations.is_empty());
    }

    #[test]
    fn unknown_fields_are_rejected_with_path() {
        assert_eq!(
            errs(r#"{"jwtRules":[{"issuer":"http://i","jwksUri":"http://i/c","bogus":1}]}"#).len(),
            1
        );
        let e = errs(r#"{"jwtRules":[{"issuer":"http://i","jwksUri":"http://i/c","bogus":1}]}"#);
        assert!(e[0].starts_with("jwtRules[0]"), "{e:?}");
        assert!(e[0].contains("bogus"), "{e:?}");
        let e = errs(r#"{"jwtRule":[]}"#);
        assert!(e[0].contains("jwtRule"), "{e:?}");
    }

    #[test]
    fn invalid_values_are_rejected_with_path() {
        let e =
            errs(r#"{"jwtRules":[{"issuer":"http://i","jwksUri":"gopher://x","timeout":"5"}]}"#);
        assert!(
            e.iter().any(|e| e.starts_with("jwtRules[0].timeout")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|e| e.starts_with("jwtRules[0].jwksUri")),
            "{e:?}"
        );
        let e = errs(r#"{"jwtRules":[{"issuer":"http://i","jwks":"{\"keys\":[]}"}]}"#);
        assert!(e[0].starts_with("jwtRules[0].jwks"), "{e:?}");
        let e = errs(
            r#"{"jwtRules":[{"issuer":"http://i","outputClaimToHeaders":[{"header":"x y","claim":"sub"}]}]}"#,
        );
        assert!(
            e[0].starts_with("jwtRules[0].outputClaimToHeaders[0].header"),
            "{e:?}"
        );
        let e = errs(r#"{"jwtRules":[{"jwksUri":"http://i/c"}]}"#);
        assert!(e[0].starts_with("jwtRules[0].issuer"), "{e:?}");
        let e = errs(r#"{"jwtRules":[{"issuer":"http://i"},{"issuer":"http://i"}]}"#);
        assert!(e[0].starts_with("jwtRules[1].issuer"), "{e:?}");
        let e = errs(r#"{"jwtRules":[{"issuer":"http://i","presence":"MAYBE"}]}"#);
        assert!(e[0].starts_with("jwtRules[0].presence"), "{e:?}");
        let e = errs(r#"{"crypto":"fast"}"#);
        assert!(e[0].starts_with("crypto"), "{e:?}");
    }

    #[test]
    fn defaults_and_discovery() {
        let s = Settings::from_json(br#"{"jwtRules":[{"issuer":"http://kc.local/realms/r/","audiences":["https://api/"]}]}"#).unwrap();
        let r = &s.rules[0];
        assert_eq!(r.timeout, DEFAULT_TIMEOUT);
        assert_eq!(r.cache_duration, DEFAULT_CACHE_DURATION);
        assert_eq!(r.clock_skew_secs, 60);
        assert_eq!(r.audiences, vec!["api"]);
        assert_eq!(r.presence, Presence::Optional);
        match &r.keys {
            KeySource::Discovery { discovery, .. } => {
                assert_eq!(discovery.path, "/realms/r/.well-known/openid-configuration");
                assert_eq!(discovery.cluster, "outbound|80||kc.local");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.locations,
            vec![
                Location {
                    kind: LocationKind::Header {
                        name: "authorization".into(),
                        prefix: "Bearer ".into()
                    },
                    rules: vec![0]
                },
                Location {
                    kind: LocationKind::Param("access_token".into()),
                    rules: vec![0]
                },
            ]
        );
    }

    #[test]
    fn locations_merge_and_sanitize_list() {
        let s = Settings::from_json(
            br#"{"jwtRules":[
              {"issuer":"http://a","jwksUri":"http://a/c","outputPayloadToHeader":"X-Payload",
               "outputClaimToHeaders":[{"header":"X-Sub","claim":"sub"}]},
              {"issuer":"http://b","jwksUri":"http://b/c","fromHeaders":[{"name":"Authorization","prefix":"Bearer "}],
               "fromCookies":["session"],"outputClaimToHeaders":[{"header":"x-sub","claim":"sub"}]}]}"#,
        )
        .unwrap();
        assert_eq!(s.locations[0].rules, vec![0, 1]);
        assert_eq!(
            s.locations[2],
            Location {
                kind: LocationKind::Cookie("session".into()),
                rules: vec![1]
            }
        );
        assert_eq!(s.sanitize_headers, vec!["x-sub", "x-payload"]);
    }
}
