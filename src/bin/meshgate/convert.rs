//! RequestAuthentication / AuthorizationPolicy objects -> meshgate WasmPlugins.
//!
//! Pure: inputs and options in, the text for stdout plus diagnostics out. Every generated pluginConfig
//! is checked with `meshgate::config::Settings::from_json`, the code the filter runs in `on_configure`,
//! and its error paths are mapped back to the object and field they came from.
//!
//! Grouping follows where Istio applies a policy: one WasmPlugin per (namespace, selector) or
//! (namespace, targetRefs), namespace-wide objects (no selector) give a WasmPlugin without selector,
//! and objects in the root namespace without selector a mesh-wide one. Istio merges every policy that
//! applies to a workload into one decision, but two meshgate filters on one workload decide separately
//! (and the first removes the token), so WasmPlugins that could select the same workload are an error,
//! unless `--merge-inherited` copies the namespace-wide and mesh-wide policies into the more specific
//! WasmPlugins.

use crate::yamldoc;
use meshgate::config::Settings;
use meshgate::error::ConfigError;
use meshgate::http_target::http_target;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

const ISTIO_SECURITY_VERSIONS: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];
const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Istio's JWTRule fields (istio/api security/v1beta1/request_authentication.proto, plus `presence`
/// from istio/api#3737). meshgate accepts all of them.
const ISTIO_JWT_FIELDS: [&str; 13] = [
    "issuer",
    "audiences",
    "jwksUri",
    "jwks",
    "fromHeaders",
    "fromParams",
    "fromCookies",
    "outputPayloadToHeader",
    "outputClaimToHeaders",
    "forwardOriginalToken",
    "timeout",
    "spaceDelimitedClaims",
    "presence",
];
/// meshgate's own JWT rule settings: valid in pluginConfig, not in a RequestAuthentication.
const MESHGATE_JWT_FIELDS: [&str; 4] = [
    "jwksCluster",
    "cacheDuration",
    "clockSkew",
    "kidRefetchCooldown",
];

/// Istio `Source` fields meshgate does not implement, with what to write instead.
const UNSUPPORTED_SOURCE_FIELDS: [(&str, &str); 4] = [
    (
        "serviceAccounts",
        "write the peer identity as principals: [\"<trust-domain>/ns/<namespace>/sa/<name>\"]",
    ),
    (
        "notServiceAccounts",
        "write the peer identity as notPrincipals: [\"<trust-domain>/ns/<namespace>/sa/<name>\"]",
    ),
    ("trustDomains", "write principals: [\"<trust-domain>/*\"]"),
    (
        "notTrustDomains",
        "write notPrincipals: [\"<trust-domain>/*\"]",
    ),
];

// -------------------------------------------------------------------------------------------------
// Public interface

pub struct Input {
    /// File name as given, or `<stdin>`.
    pub label: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub version: &'static str,
    pub name: String,
    pub default_namespace: String,
    pub root_namespace: String,
    pub url: Option<String>,
    pub sha256: Option<String>,
    pub match_mode: Option<String>,
    pub merge_inherited: bool,
    pub keep_going: bool,
    pub output: OutputFormat,
}

impl Options {
    pub fn new(version: &'static str) -> Options {
        Options {
            version,
            name: "meshgate".into(),
            default_namespace: "default".into(),
            root_namespace: "istio-system".into(),
            url: None,
            sha256: None,
            match_mode: None,
            merge_inherited: false,
            keep_going: false,
            output: OutputFormat::Yaml,
        }
    }

    /// Checks and normalizes the options; the message is for a usage error.
    pub fn validate(&mut self) -> Result<(), String> {
        if !is_dns_subdomain(&self.name) {
            return Err(format!(
                "--name {:?}: must be a lower-case DNS subdomain (a-z, 0-9, '-', '.')",
                self.name
            ));
        }
        for (flag, ns) in [
            ("--namespace", &self.default_namespace),
            ("--root-namespace", &self.root_namespace),
        ] {
            if !is_dns_label(ns) {
                return Err(format!(
                    "{flag} {ns:?}: must be a DNS label (a-z, 0-9, '-', at most 63)"
                ));
            }
        }
        if let Some(h) = &self.sha256 {
            let h = h.to_ascii_lowercase();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("--sha256 {h:?}: must be 64 hex digits"));
            }
            self.sha256 = Some(h);
        }
        if let Some(url) = &self.url {
            if let Some((scheme, rest)) = url.split_once("://") {
                if !["oci", "http", "https", "file"].contains(&scheme) || rest.is_empty() {
                    return Err(format!(
                        "--url {url:?}: scheme must be oci://, https://, http:// or file://"
                    ));
                }
            } else if url.is_empty() {
                return Err("--url must not be empty".into());
            }
            if let (Some((_, digest)), Some(sha)) = (url.split_once("@sha256:"), &self.sha256) {
                if !digest.eq_ignore_ascii_case(sha) {
                    return Err(format!(
                        "--sha256 differs from the digest in --url {url:?} (Istio rejects that)"
                    ));
                }
            }
        }
        if let Some(m) = &self.match_mode {
            let m = m.to_ascii_uppercase();
            if !["SERVER", "CLIENT", "CLIENT_AND_SERVER"].contains(&m.as_str()) {
                return Err(format!(
                    "--match-mode {m:?}: must be SERVER, CLIENT or CLIENT_AND_SERVER"
                ));
            }
            self.match_mode = Some(m);
        }
        Ok(())
    }

    fn url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("oci://registry.local/meshgate:{}", self.version))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Note,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub level: Level,
    pub text: String,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            Level::Error => write!(f, "error: {}", self.text),
            Level::Note => write!(f, "note: {}", self.text),
        }
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Everything for standard output (empty when nothing may be written).
    pub stdout: String,
    pub messages: Vec<Message>,
    pub errors: usize,
}

/// Converts every input. Never panics on any input.
pub fn convert(inputs: &[Input], opts: &Options) -> Outcome {
    let mut cx = Converter {
        opts,
        out: Outcome::default(),
        sources: Vec::new(),
        seen: HashMap::new(),
    };
    for input in inputs {
        match yamldoc::parse_stream(&input.text) {
            Err(e) => cx.error(format!("{}: invalid YAML: {e}", input.label)),
            Ok(docs) => {
                for d in docs {
                    let doc = DocRef {
                        file: input.label.clone(),
                        number: d.number,
                        items: Vec::new(),
                        what: None,
                    };
                    cx.object(doc, &d.value);
                }
            }
        }
    }
    let plugins = cx.build();
    let mut out = cx.out;
    if out.errors > 0 && !opts.keep_going {
        out.messages.push(Message {
            level: Level::Note,
            text: format!(
                "{} error(s): nothing written (--keep-going converts the rest)",
                out.errors
            ),
        });
        return out;
    }
    if !plugins.is_empty() && opts.url.is_none() {
        out.messages.push(Message {
            level: Level::Note,
            text: format!(
                "spec.url is a placeholder ({}): pass --url with the image you publish",
                opts.url()
            ),
        });
    }
    if opts.match_mode.is_none() && plugins.iter().any(|p| p.object.spec.target_refs.is_empty()) {
        out.messages.push(Message {
            level: Level::Note,
            text: "no --match-mode: the WasmPlugins also apply to outbound requests of the selected sidecars \
                   (Istio applies these policies to inbound requests only); --match-mode SERVER restricts them to \
                   inbound requests of sidecars (gateways are CLIENT: never use SERVER for a gateway)"
                .into(),
        });
    }
    if out.errors > 0 {
        out.messages.push(Message {
            level: Level::Note,
            text: format!(
                "{} error(s): --keep-going wrote the {} WasmPlugin(s) without errors",
                out.errors,
                plugins.len()
            ),
        });
    } else if plugins.is_empty() {
        out.messages.push(Message {
            level: Level::Note,
            text: "no RequestAuthentication or AuthorizationPolicy to convert: nothing written"
                .into(),
        });
    }
    match render(&plugins, opts.output) {
        Ok(text) => out.stdout = text,
        Err(e) => {
            out.errors += 1;
            out.messages.push(Message {
                level: Level::Error,
                text: format!("writing the output: {e}"),
            });
        }
    }
    out
}

// -------------------------------------------------------------------------------------------------
// Istio objects (only what is read; spec fields are checked strictly)

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Object<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default = "Option::default")]
    spec: Option<S>,
    #[allow(dead_code)]
    #[serde(default)]
    status: Option<IgnoredAny>,
}

/// `metadata`: uid, labels, managedFields, ... of an exported object are ignored.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    name: Option<String>,
    /// Read from the raw object; typed here so that a non-string is an error with its path.
    #[allow(dead_code)]
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RequestAuthenticationSpec {
    #[serde(default)]
    selector: Option<Selector>,
    #[serde(default)]
    target_ref: Option<TargetRef>,
    #[serde(default)]
    target_refs: Option<Vec<TargetRef>>,
    #[serde(default)]
    jwt_rules: Option<Vec<Value>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuthorizationPolicySpec {
    #[serde(default)]
    selector: Option<Selector>,
    #[serde(default)]
    target_ref: Option<TargetRef>,
    #[serde(default)]
    target_refs: Option<Vec<TargetRef>>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    rules: Option<Value>,
    #[serde(default)]
    provider: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Selector {
    #[serde(default)]
    match_labels: Option<BTreeMap<String, String>>,
}

/// Istio `PolicyTargetReference`, carried over to the WasmPlugin as is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    kind: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

// -------------------------------------------------------------------------------------------------
// Where things came from

#[derive(Debug, Clone, PartialEq, Eq)]
struct DocRef {
    file: String,
    /// 1-based document number in the file.
    number: usize,
    /// Positions inside `kind: List` documents (nested lists: several).
    items: Vec<usize>,
    /// `AuthorizationPolicy default/ext`, once known.
    what: Option<String>,
}

impl fmt::Display for DocRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: doc {}", self.file, self.number)?;
        for i in &self.items {
            write!(f, " items[{i}]")?;
        }
        if let Some(w) = &self.what {
            write!(f, " ({w})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    RequestAuthentication,
    AuthorizationPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// No selector: every workload of the namespace (mesh-wide in the root namespace).
    Namespace,
    Selector(BTreeMap<String, String>),
    Refs(Vec<TargetRef>),
}

/// A converted object: its jwtRules (RequestAuthentication) or its one policy (AuthorizationPolicy).
#[derive(Debug, Clone)]
struct Source {
    doc: DocRef,
    kind: Kind,
    namespace: String,
    target: Target,
    /// Verbatim Istio JWTRules, or `[policy]`.
    items: Vec<Value>,
    /// The deprecated singular `targetRef` was used.
    singular_target_ref: bool,
}

// -------------------------------------------------------------------------------------------------
// Objects

struct Converter<'a> {
    opts: &'a Options,
    out: Outcome,
    sources: Vec<Source>,
    seen: HashMap<(Kind, String, String), DocRef>,
}

impl Converter<'_> {
    fn error(&mut self, text: String) {
        let m = Message {
            level: Level::Error,
            text,
        };
        if !self.out.messages.contains(&m) {
            self.out.errors += 1;
            self.out.messages.push(m);
        }
    }

    fn note(&mut self, text: String) {
        let m = Message {
            level: Level::Note,
            text,
        };
        if !self.out.messages.contains(&m) {
            self.out.messages.push(m);
        }
    }

    /// One document (or `kind: List` item).
    fn object(&mut self, mut doc: DocRef, value: &Value) {
        let Value::Object(map) = value else {
            self.error(format!(
                "{doc}: not a Kubernetes object (expected a mapping with apiVersion and kind, found {})",
                type_name(value)
            ));
            return;
        };
        let str_field = |k: &str| map.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let (api_version, kind) = (str_field("apiVersion"), str_field("kind"));
        let meta = map.get("metadata").and_then(Value::as_object);
        let meta_str = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let namespace = meta_str("namespace")
            .unwrap_or(&self.opts.default_namespace)
            .to_string();
        if let (Some(kind), Some(name)) = (kind, meta_str("name")) {
            doc.what = Some(format!("{kind} {namespace}/{name}"));
        }
        match (api_version, kind) {
            (_, None) => self.error(format!("{doc}: kind: missing (not a Kubernetes object)")),
            (None, _) => self.error(format!(
                "{doc}: apiVersion: missing (not a Kubernetes object)"
            )),
            (Some("v1"), Some("List")) => match map.get("items") {
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let mut d = doc.clone();
                        d.items.push(i);
                        d.what = None;
                        self.object(d, item);
                    }
                }
                None | Some(Value::Null) => {}
                Some(other) => self.error(format!(
                    "{doc}: items: expected a list, found {}",
                    type_name(other)
                )),
            },
            (Some(api), Some(k @ ("RequestAuthentication" | "AuthorizationPolicy"))) => {
                if !ISTIO_SECURITY_VERSIONS.contains(&api) {
                    self.error(format!(
                        "{doc}: apiVersion: {api:?} is not supported for {k} (use security.istio.io/v1 or v1beta1)"
                    ));
                } else if k == "RequestAuthentication" {
                    self.request_authentication(doc, value, namespace);
                } else {
                    self.authorization_policy(doc, value, namespace);
                }
            }
            (Some(api), Some(k)) => self.note(format!(
                "{doc}: ignored: {k} ({api}) is not a RequestAuthentication or AuthorizationPolicy"
            )),
        }
    }

    /// Strict typed view of an object; errors carry the field path.
    fn typed<T: DeserializeOwned>(&mut self, doc: &DocRef, value: &Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." {
                    String::new()
                } else {
                    format!("{path}: ")
                };
                self.error(format!("{doc}: {path}{}", e.into_inner()));
                None
            }
        }
    }

    /// Name (required) and duplicate check.
    fn identity(
        &mut self,
        doc: &DocRef,
        kind: Kind,
        meta: &Metadata,
        namespace: &str,
    ) -> Option<String> {
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            self.error(format!("{doc}: metadata.name: missing"));
            return None;
        };
        let key = (kind, namespace.to_string(), name.clone());
        if let Some(first) = self.seen.get(&key) {
            self.error(format!("{doc}: duplicate object: also {first}"));
            return None;
        }
        self.seen.insert(key, doc.clone());
        Some(name)
    }

    /// selector / targetRef / targetRefs -> where the WasmPlugin goes.
    fn target(
        &mut self,
        doc: &DocRef,
        selector: Option<Selector>,
        target_ref: Option<TargetRef>,
        target_refs: Option<Vec<TargetRef>>,
    ) -> Option<(Target, bool)> {
        let labels = selector.and_then(|s| s.match_labels).unwrap_or_default();
        let mut refs = target_refs.unwrap_or_default();
        let singular = target_ref.is_some();
        if let Some(r) = target_ref {
            if !refs.is_empty() {
                self.error(format!(
                    "{doc}: spec.targetRef: targetRef and targetRefs are mutually exclusive"
                ));
                return None;
            }
            refs.push(r);
        }
        if !labels.is_empty() && !refs.is_empty() {
            self.error(format!(
                "{doc}: spec.selector: selector and targetRef(s) are mutually exclusive (Istio rejects this object)"
            ));
            return None;
        }
        if !refs.is_empty() {
            refs.sort();
            refs.dedup();
            return Some((Target::Refs(refs), singular));
        }
        if labels.is_empty() {
            Some((Target::Namespace, false))
        } else {
            Some((Target::Selector(labels), false))
        }
    }

    fn request_authentication(&mut self, doc: DocRef, value: &Value, namespace: String) {
        let Some(obj) = self.typed::<Object<RequestAuthenticationSpec>>(&doc, value) else {
            return;
        };
        let Some(_name) =
            self.identity(&doc, Kind::RequestAuthentication, &obj.metadata, &namespace)
        else {
            return;
        };
        let spec = obj.spec.unwrap_or_default();
        let Some((target, singular)) =
            self.target(&doc, spec.selector, spec.target_ref, spec.target_refs)
        else {
            return;
        };
        let rules = spec.jwt_rules.unwrap_or_default();
        if rules.is_empty() {
            self.note(format!("{doc}: no jwtRules: nothing to convert"));
            return;
        }
        // Each rule alone first (all errors of all rules), then together (duplicate issuers).
        let mut ok = true;
        for (j, rule) in rules.iter().enumerate() {
            let mut rule = rule.clone();
            if let Value::Object(fields) = &mut rule {
                let unknown: Vec<String> = fields
                    .keys()
                    .filter(|k| !ISTIO_JWT_FIELDS.contains(&k.as_str()))
                    .cloned()
                    .collect();
                for key in unknown {
                    ok = false;
                    fields.remove(&key);
                    if MESHGATE_JWT_FIELDS.contains(&key.as_str()) {
                        self.error(format!(
                            "{doc}: spec.jwtRules[{j}].{key}: a meshgate setting, not an Istio JWTRule field \
                             (set it in the generated WasmPlugin's pluginConfig)"
                        ));
                    } else {
                        self.error(format!(
                            "{doc}: spec.jwtRules[{j}].{key}: unknown field `{key}` (not a field of Istio's JWTRule)"
                        ));
                    }
                }
            }
            let config = single("jwtRules", rule);
            ok &= self.check(&doc, &config, |path| {
                let rest = path.strip_prefix("jwtRules[0]").unwrap_or(path);
                format!("spec.jwtRules[{j}]{rest}")
            });
        }
        if !ok {
            return;
        }
        let config = single_list("jwtRules", rules.clone());
        if !self.check(&doc, &config, |path| {
            if path.is_empty() {
                "spec".into()
            } else {
                format!("spec.{path}")
            }
        }) {
            return;
        }
        self.sources.push(Source {
            doc,
            kind: Kind::RequestAuthentication,
            namespace,
            target,
            items: rules,
            singular_target_ref: singular,
        });
    }

    fn authorization_policy(&mut self, doc: DocRef, value: &Value, namespace: String) {
        let Some(obj) = self.typed::<Object<AuthorizationPolicySpec>>(&doc, value) else {
            return;
        };
        let Some(name) = self.identity(&doc, Kind::AuthorizationPolicy, &obj.metadata, &namespace)
        else {
            return;
        };
        let spec = obj.spec.unwrap_or_default();
        let Some((target, singular)) =
            self.target(&doc, spec.selector, spec.target_ref, spec.target_refs)
        else {
            return;
        };
        let action = spec.action.unwrap_or_else(|| "ALLOW".into());
        if action == "CUSTOM" {
            self.error(format!(
                "{doc}: spec.action: CUSTOM providers are not supported in-proxy \
                 (keep this AuthorizationPolicy in Istio: its ext_authz filter runs before the WasmPlugin)"
            ));
            return;
        }
        let mut dry_run = false;
        if let Some(v) = obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DRY_RUN_ANNOTATION))
        {
            let path = format!("metadata.annotations[{DRY_RUN_ANNOTATION}]");
            match v {
                Value::String(s) => match parse_go_bool(s) {
                    Some(b) => dry_run = b,
                    None => self.note(format!(
                        "{doc}: {path}: {s:?} is not a boolean: istiod logs an error and enforces the policy, \
                         so it is converted as enforced"
                    )),
                },
                other => {
                    self.error(format!(
                        "{doc}: {path}: must be a string (write \"true\"), found {}",
                        type_name(other)
                    ));
                    return;
                }
            }
        }
        let mut policy = Map::new();
        policy.insert("name".into(), Value::String(name));
        policy.insert("action".into(), Value::String(action));
        if dry_run {
            policy.insert("dryRun".into(), Value::Bool(true));
        }
        if let Some(p) = spec.provider {
            policy.insert("provider".into(), p);
        }
        // Each rule alone first (all errors of all rules), then the whole policy.
        let mut ok = true;
        if let Some(Value::Array(rules)) = &spec.rules {
            for (i, rule) in rules.iter().enumerate() {
                let mut rule = rule.clone();
                let mut drop_from = false;
                let froms = rule
                    .get("from")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for (k, from) in froms.iter().enumerate() {
                    let Some(source) = from.get("source").and_then(Value::as_object) else {
                        continue;
                    };
                    for (field, instead) in UNSUPPORTED_SOURCE_FIELDS {
                        if source.contains_key(field) {
                            ok = false;
                            drop_from = true;
                            self.error(format!(
                                "{doc}: spec.rules[{i}].from[{k}].source.{field}: not supported by meshgate ({instead})"
                            ));
                        }
                    }
                }
                if let (true, Value::Object(r)) = (drop_from, &mut rule) {
                    r.remove("from"); // reported above; still check `to` and `when`
                }
                let mut one = policy.clone();
                one.insert("rules".into(), Value::Array(vec![rule]));
                ok &= self.check(&doc, &single("policies", Value::Object(one)), |path| {
                    let rest = path.strip_prefix("policies[0]").unwrap_or(path);
                    match rest.strip_prefix(".rules[0]") {
                        Some(r) => format!("spec.rules[{i}]{r}"),
                        None => policy_path(rest),
                    }
                });
            }
        }
        if !ok {
            return;
        }
        if let Some(rules) = spec.rules {
            policy.insert("rules".into(), rules);
        }
        // `rules` keeps its place after `action` in the output
        let policy = reorder(policy, &["name", "action", "rules", "dryRun", "provider"]);
        let config = single("policies", policy.clone());
        if !self.check(&doc, &config, |path| {
            policy_path(path.strip_prefix("policies[0]").unwrap_or(path))
        }) {
            return;
        }
        self.sources.push(Source {
            doc,
            kind: Kind::AuthorizationPolicy,
            namespace,
            target,
            items: vec![policy],
            singular_target_ref: singular,
        });
    }
}

impl Converter<'_> {
    /// Runs the filter's configuration parser on `config`; reports its errors against `doc`, with
    /// `map_path` turning pluginConfig paths into paths of the object.
    fn check(&mut self, doc: &DocRef, config: &Value, map_path: impl Fn(&str) -> String) -> bool {
        let Err(errors) = validate(config) else {
            return true;
        };
        for e in errors {
            let msg = rewrite_refs(&strip_json_position(&e.message), |list, i| {
                (list == "jwtRules").then(|| format!("spec.jwtRules[{i}]"))
            });
            self.error(format!("{doc}: {}: {msg}", map_path(&e.path)));
        }
        false
    }
}

/// `{"<key>": [item]}`
fn single(key: &str, item: Value) -> Value {
    single_list(key, vec![item])
}

fn single_list(key: &str, items: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert(key.into(), Value::Array(items));
    Value::Object(m)
}

/// The keys in `order` first (in that order), then the rest.
fn reorder(mut m: Map<String, Value>, order: &[&str]) -> Value {
    let mut out = Map::new();
    for k in order {
        if let Some(v) = m.remove(*k) {
            out.insert((*k).to_string(), v);
        }
    }
    out.extend(m);
    Value::Object(out)
}

/// serde_json appends "at line 1 column 45" of the generated JSON: meaningless to the reader.
fn strip_json_position(msg: &str) -> String {
    if let Some(i) = msg.rfind(" at line ") {
        let tail = &msg[i + " at line ".len()..];
        let mut parts = tail.splitn(3, ' ');
        if let (Some(l), Some("column"), Some(c)) = (parts.next(), parts.next(), parts.next()) {
            if l.bytes().all(|b| b.is_ascii_digit()) && c.bytes().all(|b| b.is_ascii_digit()) {
                return msg[..i].to_string();
            }
        }
    }
    msg.to_string()
}

/// Field of one converted policy -> field of the AuthorizationPolicy it came from.
fn policy_path(rest: &str) -> String {
    if rest.starts_with(".name") {
        "metadata.name".into()
    } else if rest.starts_with(".dryRun") {
        format!("metadata.annotations[{DRY_RUN_ANNOTATION}]")
    } else {
        format!("spec{rest}")
    }
}

/// Go's strconv.ParseBool (istiod reads the dry-run annotation with it).
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn validate(config: &Value) -> Result<(), Vec<ConfigError>> {
    let bytes =
        serde_json::to_vec(config).map_err(|e| vec![ConfigError::new("", e.to_string())])?;
    Settings::from_json(&bytes).map(|_| ())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Replaces `jwtRules[3]` / `policies[3]` references in a message.
fn rewrite_refs(msg: &str, f: impl Fn(&str, usize) -> Option<String>) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    'scan: while !rest.is_empty() {
        for list in ["jwtRules", "policies"] {
            if let Some(after) = rest.strip_prefix(list).and_then(|r| r.strip_prefix('[')) {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 && after[digits..].starts_with(']') {
                    if let Some(replacement) = after[..digits].parse().ok().and_then(|i| f(list, i))
                    {
                        out.push_str(&replacement);
                        rest = &after[digits + 1..];
                        continue 'scan;
                    }
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

// -------------------------------------------------------------------------------------------------
// Grouping into WasmPlugins

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overlap {
    /// Every workload of one also runs the other (an error).
    Certain,
    /// Only workloads that carry both label sets (a note).
    Possible,
}

#[derive(Debug, Clone)]
struct Group {
    namespace: String,
    target: Target,
    /// Indices into `sources`: own objects, then (with --merge-inherited) inherited ones.
    own: Vec<usize>,
    inherited: Vec<usize>,
    name: String,
}

impl Group {
    fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.inherited.iter().chain(self.own.iter()).copied()
    }
}

/// One generated WasmPlugin.
struct Plugin {
    /// The objects it was generated from (comment lines in YAML output).
    sources: Vec<DocRef>,
    object: WasmPlugin,
    version: &'static str,
}

impl Converter<'_> {
    fn is_mesh_wide(&self, g: &Group) -> bool {
        g.namespace == self.opts.root_namespace && g.target == Target::Namespace
    }

    fn describe(&self, g: &Group) -> String {
        let what = match &g.target {
            Target::Namespace if g.namespace == self.opts.root_namespace => "mesh-wide".to_string(),
            Target::Namespace => format!("namespace-wide in {}", g.namespace),
            Target::Selector(l) if g.namespace == self.opts.root_namespace => {
                format!("{} in every namespace", labels_text(l))
            }
            Target::Selector(l) => labels_text(l),
            Target::Refs(r) => r
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        };
        let from: Vec<String> = g
            .own
            .iter()
            .map(|&i| self.sources[i].doc.to_string())
            .collect();
        format!(
            "WasmPlugin {}/{} ({what}; from {})",
            g.namespace,
            g.name,
            from.join("; ")
        )
    }

    fn build(&mut self) -> Vec<Plugin> {
        // 1. group by where Istio applies the object, in order of first appearance
        let mut groups: Vec<Group> = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            match groups
                .iter_mut()
                .find(|g| g.namespace == s.namespace && g.target == s.target)
            {
                Some(g) => g.own.push(i),
                None => groups.push(Group {
                    namespace: s.namespace.clone(),
                    target: s.target.clone(),
                    own: vec![i],
                    inherited: Vec::new(),
                    name: String::new(),
                }),
            }
        }
        if self.opts.merge_inherited {
            groups = self.merge_inherited(groups);
        }
        self.assign_names(&mut groups);

        // 2. two WasmPlugins on one workload cannot reproduce Istio's merged decision
        let mut overlapping = BTreeSet::new();
        for a in 0..groups.len() {
            for b in a + 1..groups.len() {
                let Some((overlap, whom)) = self.overlap(&groups[a], &groups[b]) else {
                    continue;
                };
                let general =
                    groups[a].target == Target::Namespace || groups[b].target == Target::Namespace;
                let hint = if general && !self.opts.merge_inherited {
                    "merge the policies by hand, or pass --merge-inherited to copy namespace-wide and mesh-wide \
                     policies into the WasmPlugins of the more specific selectors"
                } else {
                    "give all policies of a workload the same selector"
                };
                let why = "Istio merges all policies of a workload into one decision, but two meshgate filters \
                           decide separately (and the first one removes the token)";
                let (a_text, b_text) = (self.describe(&groups[a]), self.describe(&groups[b]));
                match overlap {
                    Overlap::Certain => {
                        self.error(format!(
                            "{a_text} and {b_text} would both run on {whom}: {why}; {hint}"
                        ));
                        overlapping.insert(a);
                        overlapping.insert(b);
                    }
                    Overlap::Possible => {
                        let (a, b) = (&groups[a], &groups[b]);
                        self.note(format!(
                            "WasmPlugins {}/{} and {}/{} would both run on {whom}, if there are any: {why}; make sure \
                             no workload is selected by both",
                            a.namespace, a.name, b.namespace, b.name
                        ))
                    }
                }
            }
        }

        // 3. one pluginConfig per group, checked by the filter's own parser
        let mut plugins = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            if overlapping.contains(&gi) {
                continue;
            }
            if let Some(p) = self.plugin(g) {
                plugins.push(p);
            }
        }
        plugins
    }

    /// `--merge-inherited`: specific WasmPlugins also get the namespace-wide and mesh-wide objects
    /// Istio would apply to their workloads; the general WasmPlugins they were copied into are dropped.
    fn merge_inherited(&mut self, groups: Vec<Group>) -> Vec<Group> {
        let root = self.opts.root_namespace.clone();
        let mesh = groups
            .iter()
            .position(|g| g.namespace == root && g.target == Target::Namespace);
        let ns_wide = |ns: &str| {
            groups
                .iter()
                .position(|g| g.namespace == ns && g.target == Target::Namespace)
        };
        let mut out = groups.clone();
        let mut absorbed_by: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
        for (i, g) in groups.iter().enumerate() {
            let mut from = Vec::new();
            if let Some(m) = mesh.filter(|&m| m != i) {
                from.push(m);
            }
            if g.target != Target::Namespace {
                if let Some(n) = ns_wide(&g.namespace).filter(|&n| n != i && Some(n) != mesh) {
                    from.push(n);
                }
            }
            for f in from {
                for &s in &groups[f].own {
                    if !out[i].inherited.contains(&s) {
                        out[i].inherited.push(s);
                    }
                }
                absorbed_by[f].push(i);
            }
        }
        let mut keep = Vec::new();
        for (i, g) in out.into_iter().enumerate() {
            let into = &absorbed_by[i];
            // (a namespace-wide WasmPlugin that got the mesh-wide objects may itself be merged away)
            if into.is_empty() {
                keep.push(g);
                continue;
            }
            let whom = if Some(i) == mesh {
                "workloads that no other WasmPlugin selects".to_string()
            } else {
                format!("workloads in {} that no selector matches", g.namespace)
            };
            let docs: Vec<String> = g
                .own
                .iter()
                .map(|&s| self.sources[s].doc.to_string())
                .collect();
            let targets: Vec<String> = into
                .iter()
                .filter(|&&t| absorbed_by[t].is_empty())
                .map(|&t| match &groups[t].target {
                    Target::Namespace => format!("namespace {}", groups[t].namespace),
                    Target::Selector(l) => format!("{} in {}", labels_text(l), groups[t].namespace),
                    Target::Refs(r) => r
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                })
                .collect();
            self.note(format!(
                "--merge-inherited: {} merged into the WasmPlugins for {}; {whom} are no longer covered by them",
                docs.join("; "),
                targets.join(", ")
            ));
        }
        keep
    }

    fn assign_names(&self, groups: &mut [Group]) {
        let mut per_ns: HashMap<String, usize> = HashMap::new();
        for g in groups.iter() {
            *per_ns.entry(g.namespace.clone()).or_default() += 1;
        }
        let mut taken: BTreeSet<(String, String)> = BTreeSet::new();
        // namespace-wide first: it keeps the plain name
        let mut order: Vec<usize> = (0..groups.len()).collect();
        order.sort_by_key(|&i| groups[i].target != Target::Namespace);
        for i in order {
            let g = &groups[i];
            let base = &self.opts.name;
            let mut name = if per_ns.get(&g.namespace).copied().unwrap_or(0) <= 1
                || g.target == Target::Namespace
            {
                base.clone()
            } else {
                let suffix = match &g.target {
                    Target::Namespace => String::new(),
                    Target::Selector(l) => l.values().cloned().collect::<Vec<_>>().join("-"),
                    Target::Refs(r) => r
                        .iter()
                        .map(|r| r.name.clone())
                        .collect::<Vec<_>>()
                        .join("-"),
                };
                join_name(base, &suffix)
            };
            let mut n = 2;
            while taken.contains(&(g.namespace.clone(), name.clone())) {
                name = join_name(base, &format!("{}-{n}", name_suffix_of(base, &name)));
                n += 1;
            }
            taken.insert((g.namespace.clone(), name.clone()));
            groups[i].name = name;
        }
    }

    /// Could two WasmPlugins select the same workload? Returns how sure that is, and which workloads.
    fn overlap(&self, a: &Group, b: &Group) -> Option<(Overlap, String)> {
        let root = &self.opts.root_namespace;
        if self.is_mesh_wide(a) || self.is_mesh_wide(b) {
            let other = if self.is_mesh_wide(a) { b } else { a };
            return Some((Overlap::Certain, self.workloads_of(other)));
        }
        let same_ns = a.namespace == b.namespace;
        // a root-namespace selector applies in every namespace
        let crosses = (a.namespace == *root && matches!(a.target, Target::Selector(_)))
            || (b.namespace == *root && matches!(b.target, Target::Selector(_)));
        if !same_ns && !crosses {
            return None;
        }
        match (&a.target, &b.target) {
            (Target::Namespace, Target::Namespace) => None, // different namespaces here
            (Target::Namespace, other) | (other, Target::Namespace) => {
                let (general, specific) = if a.target == Target::Namespace {
                    (a, b)
                } else {
                    (b, a)
                };
                match other {
                    Target::Selector(_) if same_ns => {
                        Some((Overlap::Certain, self.workloads_of(specific)))
                    }
                    Target::Selector(l) => Some((
                        Overlap::Possible,
                        format!(
                            "workloads labelled {} in {}",
                            labels_text(l),
                            general.namespace
                        ),
                    )),
                    _ => Some((Overlap::Possible, self.workloads_of(specific))),
                }
            }
            (Target::Selector(x), Target::Selector(y)) => {
                if x.iter().any(|(k, v)| y.get(k).is_some_and(|w| w != v)) {
                    return None; // one label with two values: disjoint
                }
                let subset = |p: &BTreeMap<String, String>, q: &BTreeMap<String, String>| {
                    p.iter().all(|(k, v)| q.get(k) == Some(v))
                };
                let sure = if subset(x, y) || subset(y, x) {
                    Overlap::Certain
                } else {
                    Overlap::Possible
                };
                let mut both = x.clone();
                both.extend(y.iter().map(|(k, v)| (k.clone(), v.clone())));
                let ns = if same_ns {
                    format!(" in {}", a.namespace)
                } else {
                    String::new()
                };
                Some((
                    sure,
                    format!("workloads labelled {}{ns}", labels_text(&both)),
                ))
            }
            (Target::Refs(x), Target::Refs(y)) if same_ns => {
                let shared: Vec<String> = x
                    .iter()
                    .filter(|r| y.contains(r))
                    .map(ToString::to_string)
                    .collect();
                (!shared.is_empty()).then(|| (Overlap::Certain, shared.join(", ")))
            }
            _ => None,
        }
    }

    fn workloads_of(&self, g: &Group) -> String {
        match &g.target {
            Target::Namespace => format!("every workload in namespace {}", g.namespace),
            Target::Selector(l) if g.namespace == self.opts.root_namespace => {
                format!("workloads labelled {}", labels_text(l))
            }
            Target::Selector(l) => {
                format!("workloads labelled {} in {}", labels_text(l), g.namespace)
            }
            Target::Refs(r) => r
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Builds and checks one pluginConfig; objects whose part fails are dropped (and reported).
    fn plugin(&mut self, g: &Group) -> Option<Plugin> {
        let mut members: Vec<usize> = g.members().collect();
        loop {
            // (source, index inside the source) of every jwtRules / policies entry
            let mut jwt_origin = Vec::new();
            let mut policy_origin = Vec::new();
            let mut jwt_rules = Vec::new();
            let mut policies = Vec::new();
            for &s in &members {
                let src = &self.sources[s];
                for (j, item) in src.items.iter().enumerate() {
                    match src.kind {
                        Kind::RequestAuthentication => {
                            jwt_origin.push((s, j));
                            jwt_rules.push(item.clone());
                        }
                        Kind::AuthorizationPolicy => {
                            policy_origin.push((s, j));
                            policies.push(item.clone());
                        }
                    }
                }
            }
            let mut config = Map::new();
            if !jwt_rules.is_empty() {
                config.insert("jwtRules".into(), Value::Array(jwt_rules));
            }
            if !policies.is_empty() {
                config.insert("policies".into(), Value::Array(policies));
            }
            let config = Value::Object(config);
            let errors = match validate(&config) {
                Ok(()) => return Some(self.finish(g, &members, config)),
                Err(e) => e,
            };
            // map each error to its object; an error of no object fails the whole WasmPlugin
            let describe = |list: &str, i: usize| -> Option<(usize, String)> {
                let (origin, field) = match list {
                    "jwtRules" => (jwt_origin.get(i)?, "spec.jwtRules"),
                    _ => (policy_origin.get(i)?, "spec"),
                };
                let src = &self.sources[origin.0];
                let at = if field == "spec" {
                    String::new()
                } else {
                    format!(" {field}[{}]", origin.1)
                };
                Some((origin.0, format!("{}{at}", src.doc)))
            };
            let mut failed = BTreeSet::new();
            let mut texts = Vec::new();
            for e in errors {
                let msg = rewrite_refs(&strip_json_position(&e.message), |list, i| {
                    describe(list, i).map(|(_, d)| d)
                });
                let located = ["jwtRules", "policies"].iter().find_map(|list| {
                    let rest = e.path.strip_prefix(list)?.strip_prefix('[')?;
                    let end = rest.find(']')?;
                    let i: usize = rest[..end].parse().ok()?;
                    let rest = &rest[end + 1..];
                    let (s, j) = if *list == "jwtRules" {
                        *jwt_origin.get(i)?
                    } else {
                        *policy_origin.get(i)?
                    };
                    let path = if *list == "jwtRules" {
                        format!("spec.jwtRules[{j}]{rest}")
                    } else {
                        policy_path(rest)
                    };
                    Some((s, path))
                });
                match located {
                    Some((s, path)) => {
                        failed.insert(s);
                        texts.push(format!(
                            "{}: {path}: {msg} (in WasmPlugin {}/{})",
                            self.sources[s].doc, g.namespace, g.name
                        ));
                    }
                    None => {
                        failed.extend(members.iter().copied());
                        texts.push(format!(
                            "WasmPlugin {}/{}: {}: {msg}",
                            g.namespace, g.name, e
                        ));
                    }
                }
            }
            for t in texts {
                self.error(t);
            }
            members.retain(|m| !failed.contains(m));
            if failed.is_empty() || !members.iter().any(|m| g.own.contains(m)) {
                return None;
            }
        }
    }

    fn finish(&mut self, g: &Group, members: &[usize], config: Value) -> Plugin {
        let id = format!("WasmPlugin {}/{}", g.namespace, g.name);
        match &g.target {
            Target::Namespace if g.namespace == self.opts.root_namespace => self.note(format!(
                "{id} is mesh-wide (root namespace {}, no selector): it applies to every workload in the mesh",
                g.namespace
            )),
            Target::Selector(_) if g.namespace == self.opts.root_namespace => self.note(format!(
                "{id} is in the root namespace {}: its selector applies in every namespace",
                g.namespace
            )),
            Target::Refs(_) => {
                let singular = members.iter().any(|&m| self.sources[m].singular_target_ref);
                let from = if singular { " (from the deprecated targetRef)" } else { "" };
                self.note(format!(
                    "{id}: targetRefs carried over as is{from}; check that your Istio version supports WasmPlugin \
                     targetRefs for these kinds"
                ));
            }
            _ => {}
        }
        // where the proxy fetches keys: istiod fetched them itself in its default mode
        let mut clusters: Vec<String> = Vec::new();
        if let Some(Value::Array(rules)) = config.get("jwtRules") {
            for r in rules {
                if r.get("jwks").is_some() {
                    continue;
                }
                let uri = match (
                    r.get("jwksUri").and_then(Value::as_str),
                    r.get("issuer").and_then(Value::as_str),
                ) {
                    (Some(u), _) => u.to_string(),
                    (None, Some(iss)) => format!(
                        "{}/.well-known/openid-configuration",
                        iss.trim_end_matches('/')
                    ),
                    (None, None) => continue,
                };
                if let Ok(t) = http_target(&uri, None) {
                    if !clusters.contains(&t.cluster) {
                        clusters.push(t.cluster);
                    }
                }
            }
        }
        if !clusters.is_empty() {
            self.note(format!(
                "{id}: the proxy fetches keys itself through Envoy cluster(s) {} (istiod fetched them in its default \
                 mode): the workloads must reach these hosts (Service or ServiceEntry, Sidecar egress)",
                clusters.join(", ")
            ));
        }
        let object = WasmPlugin {
            api_version: "extensions.istio.io/v1alpha1",
            kind: "WasmPlugin",
            metadata: PluginMeta {
                name: g.name.clone(),
                namespace: g.namespace.clone(),
            },
            spec: PluginSpec {
                selector: match &g.target {
                    Target::Selector(l) => Some(SelectorOut {
                        match_labels: l.clone(),
                    }),
                    _ => None,
                },
                target_refs: match &g.target {
                    Target::Refs(r) => r.clone(),
                    _ => Vec::new(),
                },
                url: self.opts.url(),
                sha256: self.opts.sha256.clone(),
                phase: "AUTHN",
                fail_strategy: "FAIL_CLOSE",
                plugin_name: "meshgate",
                match_: self
                    .opts
                    .match_mode
                    .clone()
                    .map(|mode| vec![MatchOut { mode }]),
                plugin_config: config,
            },
        };
        Plugin {
            sources: members
                .iter()
                .map(|&m| self.sources[m].doc.clone())
                .collect(),
            object,
            version: self.opts.version,
        }
    }
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `base-suffix` as a DNS subdomain (lower-case, [a-z0-9-.], at most 253, alphanumeric ends).
fn join_name(base: &str, suffix: &str) -> String {
    let mut s = String::new();
    let mut dash = false;
    for c in suffix.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '.' {
            if dash && !s.is_empty() {
                s.push('-');
            }
            s.push(c);
            dash = false;
        } else {
            dash = true;
        }
    }
    let s = s.trim_matches('.');
    if s.is_empty() {
        return format!("{base}-2");
    }
    let mut name = format!("{base}-{s}");
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_string()
}

fn name_suffix_of<'a>(base: &str, name: &'a str) -> &'a str {
    name.strip_prefix(base)
        .map(|s| s.trim_start_matches('-'))
        .unwrap_or(name)
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

// -------------------------------------------------------------------------------------------------
// Output

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmPlugin {
    api_version: &'static str,
    kind: &'static str,
    metadata: PluginMeta,
    spec: PluginSpec,
}

#[derive(Serialize)]
struct PluginMeta {
    name: String,
    namespace: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PluginSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<SelectorOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    target_refs: Vec<TargetRef>,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    phase: &'static str,
    fail_strategy: &'static str,
    plugin_name: &'static str,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    match_: Option<Vec<MatchOut>>,
    plugin_config: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SelectorOut {
    match_labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct MatchOut {
    mode: String,
}

fn render(plugins: &[Plugin], format: OutputFormat) -> Result<String, String> {
    let objects: Vec<(&Plugin, Value)> = plugins
        .iter()
        .map(|p| {
            serde_json::to_value(&p.object)
                .map(|v| (p, v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    match format {
        OutputFormat::Json => {
            let value = match objects.as_slice() {
                [] => return Ok(String::new()),
                [(_, one)] => one.clone(),
                many => serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": many.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
                }),
            };
            serde_json::to_string_pretty(&value)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string())
        }
        OutputFormat::Yaml => {
            let mut out = String::new();
            for (i, (p, _)) in objects.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&format!(
                    "# generated by meshgate convert {} from:\n",
                    p.version
                ));
                for d in &p.sources {
                    out.push_str(&format!("#   {d}\n"));
                }
                // plain or quoted scalars only: a long jwksUri stays on one line
                let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
                out.push_str(
                    &serde_saphyr::to_string_with_options(&p.object, options)
                        .map_err(|e| e.to_string())?,
                );
            }
            Ok(out)
        }
    }
}
