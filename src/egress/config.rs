//! The `egress` block of pluginConfig: outbound targets that get a client-credentials token,
//! parsed strictly and compiled once. Errors carry their field path (`egress[0].clientSecretEnv`).

use super::matching::{HostPattern, PathPattern};
use crate::config::{http_target, HttpTarget};
use crate::duration;
use crate::error::ConfigError;
use base64::Engine as _;
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_REFRESH_AT: f64 = 0.8;
/// Targets per configuration: each one is a token fetched and refreshed per Wasm VM.
pub const MAX_TARGETS: usize = 64;
const MAX_NAME_LEN: usize = 64;

/// A secret string (client secret, or a request part that carries it). `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// `client_id` and `client_secret` as form fields.
    Post,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// 503 with a body naming the target.
    #[default]
    Deny,
    /// Forward the request without a token.
    Allow,
}

/// One entry of `egress` as written in pluginConfig.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressTargetConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    pub token_endpoint: Option<String>,
    pub issuer: Option<String>,
    pub cluster: Option<String>,
    #[serde(default)]
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub refresh_at: Option<f64>,
    #[serde(default, rename = "override")]
    pub override_authorization: bool,
    #[serde(default)]
    pub on_error: OnError,
    pub timeout: Option<String>,
}

/// Where the token endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `tokenEndpoint`.
    Token(HttpTarget),
    /// `issuer`: the `token_endpoint` of `<issuer>/.well-known/openid-configuration`.
    /// `cluster_override` (`cluster`) is used for both calls when set.
    Discovery {
        discovery: HttpTarget,
        cluster_override: Option<String>,
    },
}

/// What a token request sends besides the endpoint: the form body and, for `basic`, the
/// `Authorization` header. Both may hold the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub body: Secret,
    pub authorization: Option<Secret>,
    /// The client secret itself, only to scrub it from error texts an IdP might echo.
    pub secret: Secret,
}

/// A compiled target.
#[derive(Debug, Clone)]
pub struct EgressTarget {
    pub name: String,
    pub(super) hosts: Vec<HostPattern>,
    /// Empty: every path.
    pub(super) paths: Vec<PathPattern>,
    pub endpoint: Endpoint,
    pub client_id: String,
    pub request: TokenRequest,
    pub refresh_at: f64,
    pub override_authorization: bool,
    pub on_error: OnError,
    pub timeout: Duration,
}

/// Reads a Wasm VM environment variable (WasmPlugin `vmConfig.env`); injected for tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment: on wasm32-wasip1 these are the VM's variables, which Envoy sets from
/// `vm_config.environment_variables` (Istio: `spec.vmConfig.env`).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Compiles `egress` (field path `path`, e.g. "egress").
pub fn compile(
    targets: &[EgressTargetConfig],
    path: &str,
    env: EnvLookup<'_>,
) -> Result<Vec<EgressTarget>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if targets.len() > MAX_TARGETS {
        errors.push(ConfigError::new(
            path,
            format!("at most {MAX_TARGETS} targets"),
        ));
    }
    let mut out: Vec<EgressTarget> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match compile_target(t, &p, env) {
            Ok(c) => {
                if let Some(j) = out.iter().position(|o| o.name == c.name) {
                    errors.push(ConfigError::new(
                        format!("{p}.name"),
                        format!("{:?} is already the name of {path}[{j}]", c.name),
                    ));
                }
                out.push(c);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn compile_target(
    t: &EgressTargetConfig,
    path: &str,
    env: EnvLookup<'_>,
) -> Result<EgressTarget, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut err = |field: &str, msg: String| {
        errors.push(ConfigError::new(format!("{path}.{field}"), msg));
    };
    if t.name.is_empty() {
        err("name", "is required".into());
    } else if t.name.len() > MAX_NAME_LEN
        || !t
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        err(
            "name",
            format!(
                "{:?}: must be 1-{MAX_NAME_LEN} characters of [A-Za-z0-9_-] (it names metrics)",
                t.name
            ),
        );
    }
    if t.hosts.is_empty() {
        err("hosts", "at least one host is required".into());
    }
    let mut hosts = Vec::new();
    for (j, h) in t.hosts.iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(p) => hosts.push(p),
            Err(e) => err(&format!("hosts[{j}]"), e),
        }
    }
    let mut paths = Vec::new();
    for (j, p) in t.paths.iter().enumerate() {
        match PathPattern::parse(p) {
            Ok(p) => paths.push(p),
            Err(e) => err(&format!("paths[{j}]"), e),
        }
    }
    if let Some(c) = &t.cluster {
        if c.is_empty() {
            err("cluster", "must not be empty".into());
        }
    }
    let cluster = t.cluster.as_deref().filter(|c| !c.is_empty());
    let endpoint = match (&t.token_endpoint, &t.issuer) {
        (Some(_), Some(_)) => {
            err(
                "tokenEndpoint",
                "tokenEndpoint and issuer are mutually exclusive".into(),
            );
            None
        }
        (None, None) => {
            err(
                "tokenEndpoint",
                "one of tokenEndpoint or issuer is required".into(),
            );
            None
        }
        (Some(uri), None) => match http_target(uri, cluster) {
            Ok(t) => Some(Endpoint::Token(t)),
            Err(e) => {
                err("tokenEndpoint", e);
                None
            }
        },
        (None, Some(issuer)) => {
            let uri = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            match http_target(&uri, cluster) {
                Ok(d) => Some(Endpoint::Discovery {
                    discovery: d,
                    cluster_override: cluster.map(str::to_owned),
                }),
                Err(e) => {
                    err(
                        "issuer",
                        format!("must be an http(s) URL for OIDC discovery: {e}"),
                    );
                    None
                }
            }
        }
    };
    if t.client_id.is_empty() {
        err("clientId", "is required".into());
    }
    let secret = match (&t.client_secret, &t.client_secret_env) {
        (Some(_), Some(_)) => {
            err(
                "clientSecret",
                "clientSecret and clientSecretEnv are mutually exclusive".into(),
            );
            None
        }
        (None, None) => {
            err(
                "clientSecret",
                "one of clientSecret or clientSecretEnv is required".into(),
            );
            None
        }
        (Some(s), None) if s.expose().is_empty() => {
            err("clientSecret", "must not be empty".into());
            None
        }
        (Some(s), None) => Some(s.clone()),
        (None, Some(name)) if name.is_empty() => {
            err(
                "clientSecretEnv",
                "must name an environment variable".into(),
            );
            None
        }
        (None, Some(name)) => match env(name) {
            Some(v) if !v.is_empty() => Some(Secret(v)),
            Some(_) => {
                err(
                    "clientSecretEnv",
                    format!("environment variable {name:?} is empty in the Wasm VM"),
                );
                None
            }
            None => {
                err(
                    "clientSecretEnv",
                    format!("environment variable {name:?} is not set in the Wasm VM (WasmPlugin spec.vmConfig.env)"),
                );
                None
            }
        },
    };
    for (j, s) in t.scopes.iter().enumerate() {
        if s.is_empty() || s.contains(' ') {
            err(
                &format!("scopes[{j}]"),
                "must be one non-empty scope without spaces".into(),
            );
        }
    }
    if let Some(a) = &t.audience {
        if a.is_empty() {
            err("audience", "must not be empty".into());
        }
    }
    let refresh_at = t.refresh_at.unwrap_or(DEFAULT_REFRESH_AT);
    if !(refresh_at > 0.0 && refresh_at < 1.0) {
        err(
            "refreshAt",
            "must be a fraction of the token lifetime, greater than 0 and less than 1".into(),
        );
    }
    let timeout = match &t.timeout {
        None => DEFAULT_TIMEOUT,
        Some(s) => match duration::parse(s) {
            Ok(d) if d.is_zero() => {
                err("timeout", "must be greater than 0".into());
                DEFAULT_TIMEOUT
            }
            Ok(d) => d,
            Err(e) => {
                err("timeout", e);
                DEFAULT_TIMEOUT
            }
        },
    };
    match (endpoint, secret, errors.is_empty()) {
        (Some(endpoint), Some(secret), true) => Ok(EgressTarget {
            name: t.name.clone(),
            hosts,
            paths,
            endpoint,
            client_id: t.client_id.clone(),
            request: token_request(t, secret),
            refresh_at,
            override_authorization: t.override_authorization,
            on_error: t.on_error,
            timeout,
        }),
        _ => Err(errors),
    }
}

/// The form body of the client-credentials request, and the Basic header for `basic`.
fn token_request(t: &EgressTargetConfig, secret: Secret) -> TokenRequest {
    let mut body = String::from("grant_type=client_credentials");
    if !t.scopes.is_empty() {
        body.push_str("&scope=");
        form_encode(&t.scopes.join(" "), &mut body);
    }
    if let Some(a) = &t.audience {
        body.push_str("&audience=");
        form_encode(a, &mut body);
    }
    let authorization = match t.client_auth {
        ClientAuth::Post => {
            body.push_str("&client_id=");
            form_encode(&t.client_id, &mut body);
            body.push_str("&client_secret=");
            form_encode(secret.expose(), &mut body);
            None
        }
        ClientAuth::Basic => {
            // RFC 6749 §2.3.1: id and secret are form-urlencoded, then joined and base64'd.
            let mut user_pass = String::new();
            form_encode(&t.client_id, &mut user_pass);
            user_pass.push(':');
            form_encode(secret.expose(), &mut user_pass);
            Some(Secret(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(user_pass)
            )))
        }
    };
    TokenRequest {
        body: Secret(body),
        authorization,
        secret,
    }
}

/// `application/x-www-form-urlencoded` (WHATWG URL "urlencoded serializer"): alphanumerics and
/// `*-._` as is, space as `+`, every other byte as `%XX`.
pub fn form_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn compile_json(
        v: serde_json::Value,
        env: EnvLookup<'_>,
    ) -> Result<Vec<EgressTarget>, Vec<String>> {
        let cfg: Vec<EgressTargetConfig> =
            serde_json::from_value(v).map_err(|e| vec![e.to_string()])?;
        compile(&cfg, "egress", env).map_err(|e| e.iter().map(|e| e.to_string()).collect())
    }

    fn base() -> serde_json::Value {
        json!({"name": "backend", "hosts": ["backend"], "clientId": "frontend",
               "clientSecret": "frontend-secret",
               "tokenEndpoint": "http://keycloak.keycloak.svc.cluster.local/realms/myrealm/protocol/openid-connect/token"})
    }

    fn with(extra: serde_json::Value) -> serde_json::Value {
        let mut b = base();
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        json!([b])
    }

    #[test]
    fn defaults() {
        let t = &compile_json(json!([base()]), &no_env).unwrap()[0];
        assert_eq!(t.refresh_at, 0.8);
        assert_eq!(t.timeout, Duration::from_secs(5));
        assert_eq!(t.on_error, OnError::Deny);
        assert!(!t.override_authorization);
        match &t.endpoint {
            Endpoint::Token(e) => {
                assert_eq!(
                    e.cluster,
                    "outbound|80||keycloak.keycloak.svc.cluster.local"
                );
                assert_eq!(e.path, "/realms/myrealm/protocol/openid-connect/token");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.request.body.expose(), "grant_type=client_credentials");
        // base64("frontend:frontend-secret")
        assert_eq!(
            t.request.authorization.as_ref().unwrap().expose(),
            "Basic ZnJvbnRlbmQ6ZnJvbnRlbmQtc2VjcmV0"
        );
    }

    #[test]
    fn post_auth_scopes_audience_are_form_encoded() {
        let t = &compile_json(
            with(
                json!({"clientAuth": "post", "clientId": "my app", "clientSecret": "s&=+é",
                        "scopes": ["openid", "read:data"], "audience": "my-backend-client"}),
            ),
            &no_env,
        )
        .unwrap()[0];
        assert_eq!(t.request.authorization, None);
        assert_eq!(
            t.request.body.expose(),
            "grant_type=client_credentials&scope=openid+read%3Adata&audience=my-backend-client\
             &client_id=my+app&client_secret=s%26%3D%2B%C3%A9"
        );
    }

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let t = &compile_json(
            with(json!({"clientId": "a:b", "clientSecret": "p w%"})),
            &no_env,
        )
        .unwrap()[0];
        let b64 = t.request.authorization.as_ref().unwrap().expose();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(raw, b"a%3Ab:p+w%25");
    }

    #[test]
    fn secret_from_env_and_never_in_debug() {
        let env = |n: &str| (n == "FRONTEND_SECRET").then(|| "from-env-secret".to_string());
        let t = &compile_json(
            with(json!({"clientSecret": null, "clientSecretEnv": "FRONTEND_SECRET", "clientAuth": "post"})),
            &env,
        )
        .unwrap()[0];
        assert!(t
            .request
            .body
            .expose()
            .ends_with("client_secret=from-env-secret"));
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("from-env-secret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        let e = compile_json(
            with(json!({"clientSecret": null, "clientSecretEnv": "MISSING"})),
            &env,
        )
        .unwrap_err();
        assert_eq!(
            e,
            vec!["egress[0].clientSecretEnv: environment variable \"MISSING\" is not set in the Wasm VM (WasmPlugin spec.vmConfig.env)"]
        );
    }

    #[test]
    fn invalid_values_name_their_field() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (json!({"name": null}), "egress[0].name: is required"),
            (json!({"name": "a.b"}), "egress[0].name: \"a.b\": must be"),
            (json!({"hosts": []}), "egress[0].hosts: at least one host"),
            (json!({"hosts": ["*"]}), "egress[0].hosts[0]: "),
            (
                json!({"hosts": ["backend", "http://x"]}),
                "egress[0].hosts[1]: ",
            ),
            (json!({"paths": ["/a*b"]}), "egress[0].paths[0]: "),
            (
                json!({"tokenEndpoint": null}),
                "egress[0].tokenEndpoint: one of tokenEndpoint or issuer",
            ),
            (
                json!({"issuer": "http://kc/realms/r"}),
                "egress[0].tokenEndpoint: tokenEndpoint and issuer are mutually exclusive",
            ),
            (
                json!({"tokenEndpoint": "ftp://x/t"}),
                "egress[0].tokenEndpoint: \"ftp://x/t\": scheme",
            ),
            (json!({"clientId": ""}), "egress[0].clientId: is required"),
            (
                json!({"clientSecret": null}),
                "egress[0].clientSecret: one of clientSecret or clientSecretEnv",
            ),
            (
                json!({"clientSecret": ""}),
                "egress[0].clientSecret: must not be empty",
            ),
            (
                json!({"clientSecretEnv": "X"}),
                "egress[0].clientSecret: clientSecret and clientSecretEnv are mutually exclusive",
            ),
            (
                json!({"refreshAt": 1.0}),
                "egress[0].refreshAt: must be a fraction",
            ),
            (
                json!({"refreshAt": 0}),
                "egress[0].refreshAt: must be a fraction",
            ),
            (
                json!({"timeout": "0s"}),
                "egress[0].timeout: must be greater than 0",
            ),
            (
                json!({"timeout": "5"}),
                "egress[0].timeout: invalid duration",
            ),
            (json!({"scopes": ["a b"]}), "egress[0].scopes[0]: "),
            (
                json!({"cluster": ""}),
                "egress[0].cluster: must not be empty",
            ),
        ];
        for (extra, want) in cases {
            let e = compile_json(with(extra.clone()), &no_env).unwrap_err();
            assert!(
                e.iter().any(|e| e.starts_with(want)),
                "{extra}: want {want:?}, got {e:?}"
            );
        }
        let e = compile_json(json!([base(), base()]), &no_env).unwrap_err();
        assert_eq!(
            e,
            vec!["egress[1].name: \"backend\" is already the name of egress[0]"]
        );
    }

    #[test]
    fn issuer_means_discovery_with_optional_cluster() {
        let t = &compile_json(
            with(json!({"tokenEndpoint": null, "issuer": "http://kc.local/realms/r/", "cluster": "my-kc"})),
            &no_env,
        )
        .unwrap()[0];
        assert_eq!(
            t.endpoint,
            Endpoint::Discovery {
                discovery: http_target(
                    "http://kc.local/realms/r/.well-known/openid-configuration",
                    Some("my-kc")
                )
                .unwrap(),
                cluster_override: Some("my-kc".into()),
            }
        );
    }
}
