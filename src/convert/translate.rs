//! One Kubernetes object -> a `Source`: the jwtRules of a RequestAuthentication or the one policy of an
//! AuthorizationPolicy, each checked with the filter's own configuration parser, errors reported with
//! the file, document and field path they came from.

use super::shapes::{
    AuthorizationPolicySpec, Metadata, Object, RequestAuthenticationSpec, Selector, TargetRef,
    DRY_RUN_ANNOTATION, ISTIO_JWT_FIELDS, ISTIO_SECURITY_VERSIONS, MESHGATE_JWT_FIELDS,
    UNSUPPORTED_SOURCE_FIELDS,
};
use super::Converter;
use crate::config::Settings;
use crate::error::ConfigError;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DocRef {
    pub(super) file: String,
    /// 1-based document number in the file.
    pub(super) number: usize,
    /// Positions inside `kind: List` documents (nested lists: several).
    pub(super) items: Vec<usize>,
    /// `AuthorizationPolicy default/ext`, once known.
    pub(super) what: Option<String>,
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
pub(super) enum Kind {
    RequestAuthentication,
    AuthorizationPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Target {
    /// No selector: every workload of the namespace (mesh-wide in the root namespace).
    Namespace,
    Selector(BTreeMap<String, String>),
    Refs(Vec<TargetRef>),
}

/// A converted object: its jwtRules (RequestAuthentication) or its one policy (AuthorizationPolicy).
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub(super) doc: DocRef,
    pub(super) kind: Kind,
    pub(super) namespace: String,
    pub(super) target: Target,
    /// Verbatim Istio JWTRules, or `[policy]`.
    pub(super) items: Vec<Value>,
    /// The deprecated singular `targetRef` was used.
    pub(super) singular_target_ref: bool,
}

impl Converter<'_> {
    /// One document (or `kind: List` item).
    pub(super) fn object(&mut self, mut doc: DocRef, value: &Value) {
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
pub(super) fn strip_json_position(msg: &str) -> String {
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
pub(super) fn policy_path(rest: &str) -> String {
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

pub(super) fn validate(config: &Value) -> Result<(), Vec<ConfigError>> {
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
pub(super) fn rewrite_refs(msg: &str, f: impl Fn(&str, usize) -> Option<String>) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{options, read, run, texts};
    use super::super::Level;
    use super::*;
    use serde_json::json;

    #[test]
    fn where_a_message_points() {
        let d = DocRef {
            file: "f.yaml".into(),
            number: 3,
            items: vec![1, 0],
            what: Some("AuthorizationPolicy ns/p".into()),
        };
        assert_eq!(
            d.to_string(),
            "f.yaml: doc 3 items[1] items[0] (AuthorizationPolicy ns/p)"
        );
    }

    #[test]
    fn paths_and_messages_of_the_filter_become_the_objects() {
        assert_eq!(policy_path(".name"), "metadata.name");
        assert_eq!(
            policy_path(".dryRun"),
            "metadata.annotations[istio.io/dry-run]"
        );
        assert_eq!(policy_path(".rules[0].when"), "spec.rules[0].when");
        assert_eq!(
            strip_json_position("unknown field `x` at line 1 column 45"),
            "unknown field `x`"
        );
        assert_eq!(
            strip_json_position("value at line one column 2"),
            "value at line one column 2"
        );
        assert_eq!(
            rewrite_refs(
                "issuer in jwtRules[12], not policies[x] or jwtRules[]",
                |l, i| { (l == "jwtRules").then(|| format!("<{i}>")) }
            ),
            "issuer in <12>, not policies[x] or jwtRules[]"
        );
    }

    #[test]
    fn dry_run_annotation_reads_like_istiod() {
        for (s, want) in [("True", Some(true)), ("0", Some(false)), ("yes", None)] {
            assert_eq!(parse_go_bool(s), want, "{s}");
        }
    }

    const POLICY: &str = "\
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: p
  namespace: apps
  annotations: {istio.io/dry-run: \"true\"}
spec:
  rules: [{to: [{operation: {methods: [GET]}}]}]
  selector: {matchLabels: {app: x}}
";

    #[test]
    fn an_authorization_policy_becomes_one_policy() {
        let opts = options();
        let cx = read(POLICY, &opts);
        assert_eq!(cx.out.messages, vec![]);
        let [s] = cx.sources.as_slice() else {
            panic!("{:?}", cx.sources)
        };
        assert_eq!(
            (s.kind, s.namespace.as_str()),
            (Kind::AuthorizationPolicy, "apps")
        );
        assert_eq!(
            s.target,
            Target::Selector(BTreeMap::from([("app".into(), "x".into())]))
        );
        assert_eq!(
            serde_json::to_string(&s.items[0]).unwrap(),
            r#"{"name":"p","action":"ALLOW","rules":[{"to":[{"operation":{"methods":["GET"]}}]}],"dryRun":true}"#
        );
        assert_eq!(
            s.doc.to_string(),
            "in.yaml: doc 1 (AuthorizationPolicy apps/p)"
        );
    }

    #[test]
    fn errors_name_the_object_and_field() {
        let yaml = "\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: r}
spec:
  jwtRules: [{issuer: \"http://i\", clockSkew: 5s}, {issuer: \"http://i\", jwksUri: \"gopher://x\"}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: r}
---
apiVersion: v2
kind: AuthorizationPolicy
metadata: {name: q}
";
        let out = run(yaml, &options());
        assert_eq!(
            texts(&out, Level::Error),
            vec![
                "in.yaml: doc 1 (RequestAuthentication default/r): spec.jwtRules[0].clockSkew: a meshgate setting, \
                 not an Istio JWTRule field (set it in the generated WasmPlugin's pluginConfig)",
                "in.yaml: doc 1 (RequestAuthentication default/r): spec.jwtRules[1].jwksUri: \"gopher://x\": scheme \
                 must be http or https",
                "in.yaml: doc 2 (RequestAuthentication default/r): duplicate object: also in.yaml: doc 1 \
                 (RequestAuthentication default/r)",
                "in.yaml: doc 3 (AuthorizationPolicy default/q): apiVersion: \"v2\" is not supported for \
                 AuthorizationPolicy (use security.istio.io/v1 or v1beta1)",
            ]
        );
        assert_eq!(out.stdout, "");
    }

    #[test]
    fn every_meshgate_jwt_setting_is_named_as_such() {
        // each is a field of the filter's JWTRule and not of Istio's
        for field in MESHGATE_JWT_FIELDS {
            assert!(!ISTIO_JWT_FIELDS.contains(&field));
            let yaml = format!(
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: r}}\n\
                 spec: {{jwtRules: [{{issuer: \"http://i\", {field}: x}}]}}\n"
            );
            assert_eq!(
                texts(&run(&yaml, &options()), Level::Error),
                vec![format!(
                    "in.yaml: doc 1 (RequestAuthentication default/r): spec.jwtRules[0].{field}: a meshgate \
                     setting, not an Istio JWTRule field (set it in the generated WasmPlugin's pluginConfig)"
                )]
            );
            let mut config = Map::new();
            config.insert("issuer".into(), Value::from("http://i"));
            config.insert(field.into(), Value::Bool(true));
            // known to the filter: a value of the wrong type, perhaps, but never an unknown field
            let errors = validate(&single("jwtRules", Value::Object(config))).err();
            assert!(
                !errors
                    .iter()
                    .flatten()
                    .any(|e| e.message.contains("unknown field")),
                "{field} is not a field of the filter's JWTRule: {errors:?}"
            );
        }
    }

    #[test]
    fn lists_are_read_item_by_item() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
            7
        ]});
        let out = run(&list.to_string(), &options());
        assert_eq!(
            texts(&out, Level::Error),
            vec!["in.yaml: doc 1 items[1]: not a Kubernetes object (expected a mapping with apiVersion and kind, \
                  found a number)"]
        );
        assert!(texts(&out, Level::Note).contains(
            &"in.yaml: doc 1 items[0] (ConfigMap default/c): ignored: ConfigMap (v1) is not a \
              RequestAuthentication or AuthorizationPolicy"
                .to_string()
        ));
    }
}
