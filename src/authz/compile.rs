//! `PolicyConfig` -> compiled `Policy`, with every validation Istio applies (admission webhook
//! and istiod's builder). Where Istio would silently skip an invalid rule we refuse to load.

use super::config::{
    Action, ConditionConfig, OperationConfig, PolicyConfig, RuleConfig, SourceConfig,
};
use super::matchers::{Cidr, HeaderMatch, NamespaceGlob, PathTemplate, StrMatch};
use super::rule::{Cond, HeaderKey, Pred, Rule};
use super::{Policy, NO_ALLOW_MATCH};
use crate::error::ConfigError;
use std::collections::HashMap;
use std::rc::Rc;

/// Istio's `spiffe.URIPrefix`, prepended to `principals` values.
const SPIFFE: &str = "spiffe://";

/// The attribute one value list is matched against.
#[derive(Debug, Clone, PartialEq)]
enum Attr {
    Host,
    Method,
    Path,
    Port,
    Header(HeaderKey),
    RemoteIp,
    DestIp,
    SourcePrincipal,
    SourceNamespace,
    RequestPrincipal,
    Claim(Vec<String>),
    Sni,
}

/// A `x` / `notX` field pair: values, negated values, both names, and the attribute they match.
/// `from` / `to` of a rule: its key, the key of its items, and the message for an empty list.
struct Clause {
    name: &'static str,
    key: &'static str,
    empty_message: &'static str,
}

impl Clause {
    const FROM: Clause = Clause {
        name: "from",
        key: "source",
        empty_message: "`from` must not be empty (omit it to match any source)",
    };
    const TO: Clause = Clause {
        name: "to",
        key: "operation",
        empty_message: "`to` must not be empty (omit it to match any operation)",
    };
}

type FieldSpec<'a> = (&'a [String], &'a [String], &'static str, &'static str, Attr);

pub(crate) fn compile_policies(
    configs: &[PolicyConfig],
    base: &str,
) -> Result<Vec<Policy>, Vec<ConfigError>> {
    let mut c = Compiler::default();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(configs.len());
    for (i, cfg) in configs.iter().enumerate() {
        let path = format!("{base}[{i}]");
        if cfg.name.is_empty() {
            c.err(format!("{path}.name"), "policy name must not be empty");
        } else if cfg.name == NO_ALLOW_MATCH {
            c.err(
                format!("{path}.name"),
                format!("{NO_ALLOW_MATCH:?} is reserved"),
            );
        } else if let Some(first) = seen.insert(&cfg.name, i) {
            c.err(
                format!("{path}.name"),
                format!(
                    "duplicate policy name {:?} (also {base}[{first}])",
                    cfg.name
                ),
            );
        }
        if let Some(p) = c.policy(cfg, &path) {
            out.push(p);
        }
    }
    if c.errors.is_empty() {
        Ok(out)
    } else {
        Err(c.errors)
    }
}

#[derive(Default)]
struct Compiler {
    errors: Vec<ConfigError>,
}

impl Compiler {
    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.errors.push(ConfigError::new(path, msg));
    }

    fn policy(&mut self, cfg: &PolicyConfig, path: &str) -> Option<Policy> {
        if cfg.action == Action::Custom {
            self.err(
                format!("{path}.action"),
                "CUSTOM (external authorization) is not supported in-proxy; use Istio's CUSTOM policy outside this filter",
            );
            return None;
        }
        if cfg.provider.is_some() {
            self.err(
                format!("{path}.provider"),
                "`provider` is only valid with the CUSTOM action",
            );
        }
        let rules = cfg.rules.as_deref().unwrap_or_default();
        if rules.is_empty() && cfg.action == Action::Deny {
            // Istio's webhook rejects this too: it would never deny anything.
            self.err(
                format!("{path}.rules"),
                "a DENY policy without rules never matches; use `rules: [{}]` to deny every request",
            );
        }
        let rules = rules
            .iter()
            .enumerate()
            .map(|(j, r)| self.rule(r, &format!("{path}.rules[{j}]")))
            .collect();
        Some(Policy {
            name: Rc::from(cfg.name.as_str()),
            action: cfg.action,
            dry_run: cfg.dry_run,
            rules,
        })
    }

    fn rule(&mut self, r: &RuleConfig, path: &str) -> Rule {
        let from = self.clauses(r.from.as_deref(), path, Clause::FROM, |c, f, p| {
            f.source.as_ref().map(|s| c.source(s, p))
        });
        let to = self.clauses(r.to.as_deref(), path, Clause::TO, |c, t, p| {
            t.operation.as_ref().map(|o| c.operation(o, p))
        });
        let when = (r.when.iter().enumerate())
            .filter_map(|(k, w)| self.condition(w, &format!("{path}.when[{k}]")))
            .collect();
        Rule { from, to, when }
    }

    fn source(&mut self, s: &SourceConfig, path: &str) -> Vec<Cond> {
        for (values, name) in [
            (&s.ip_blocks, "ipBlocks"),
            (&s.not_ip_blocks, "notIpBlocks"),
        ] {
            if !values.is_empty() {
                self.err(format!("{path}.{name}"), DIRECT_PEER_UNAVAILABLE);
            }
        }
        let fields: [FieldSpec<'_>; 4] = [
            (
                &s.principals,
                &s.not_principals,
                "principals",
                "notPrincipals",
                Attr::SourcePrincipal,
            ),
            (
                &s.request_principals,
                &s.not_request_principals,
                "requestPrincipals",
                "notRequestPrincipals",
                Attr::RequestPrincipal,
            ),
            (
                &s.namespaces,
                &s.not_namespaces,
                "namespaces",
                "notNamespaces",
                Attr::SourceNamespace,
            ),
            (
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
                "remoteIpBlocks",
                "notRemoteIpBlocks",
                Attr::RemoteIp,
            ),
        ];
        let conds = self.fields(fields, path);
        let has_ip_blocks = !s.ip_blocks.is_empty() || !s.not_ip_blocks.is_empty();
        if conds.is_empty() && !has_ip_blocks {
            self.err(path, "`source` must not be empty");
        }
        conds
    }

    fn operation(&mut self, o: &OperationConfig, path: &str) -> Vec<Cond> {
        let fields: [FieldSpec<'_>; 4] = [
            (&o.hosts, &o.not_hosts, "hosts", "notHosts", Attr::Host),
            (&o.ports, &o.not_ports, "ports", "notPorts", Attr::Port),
            (
                &o.methods,
                &o.not_methods,
                "methods",
                "notMethods",
                Attr::Method,
            ),
            (&o.paths, &o.not_paths, "paths", "notPaths", Attr::Path),
        ];
        let conds = self.fields(fields, path);
        if conds.is_empty() {
            self.err(path, "`operation` must not be empty");
        }
        conds
    }

    fn condition(&mut self, w: &ConditionConfig, path: &str) -> Option<Cond> {
        let attr = match parse_key(&w.key) {
            Ok(a) => a,
            Err(msg) => {
                self.err(format!("{path}.key"), msg);
                return None;
            }
        };
        if w.values.is_empty() && w.not_values.is_empty() {
            self.err(
                path,
                format!(
                    "at least one of `values` or `notValues` must be set for key {:?}",
                    w.key
                ),
            );
            return None;
        }
        let names = (format!("{path}.values"), format!("{path}.notValues"));
        self.field(&attr, &names, &w.values, &w.not_values)
    }

    /// Compiles one `x` / `notX` pair into a `Cond` (nothing when both are empty).
    /// `from` or `to`: a list that must not be empty, whose items must set their one key.
    fn clauses<T>(
        &mut self,
        list: Option<&[T]>,
        path: &str,
        clause: Clause,
        compile: impl Fn(&mut Self, &T, &str) -> Option<Vec<Cond>>,
    ) -> Vec<Vec<Cond>> {
        let Some(list) = list else {
            return Vec::new();
        };
        let (name, key) = (clause.name, clause.key);
        if list.is_empty() {
            self.err(format!("{path}.{name}"), clause.empty_message);
        }
        let mut out = Vec::new();
        for (k, item) in list.iter().enumerate() {
            let p = format!("{path}.{name}[{k}].{key}");
            match compile(self, item, &p) {
                Some(conds) => out.push(conds),
                None => self.err(p, format!("`{key}` must be set")),
            }
        }
        out
    }

    /// The conditions of the fields that are set (each a values/notValues pair).
    fn fields(&mut self, fields: [FieldSpec<'_>; 4], path: &str) -> Vec<Cond> {
        fields
            .into_iter()
            .filter_map(|(values, not_values, name, not_name, attr)| {
                let names = (format!("{path}.{name}"), format!("{path}.{not_name}"));
                self.field(&attr, &names, values, not_values)
            })
            .collect()
    }

    fn field(
        &mut self,
        attr: &Attr,
        names: &(String, String),
        values: &[String],
        not_values: &[String],
    ) -> Option<Cond> {
        if values.is_empty() && not_values.is_empty() {
            return None;
        }
        let any_of = self.values(attr, &names.0, values);
        let none_of = self.values(attr, &names.1, not_values);
        Some(Cond {
            any_of,
            none_of,
            memo: None,
        })
    }

    fn values(&mut self, attr: &Attr, path: &str, values: &[String]) -> Vec<Pred> {
        let mut preds = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let res = if v.is_empty() {
                Err("empty value not allowed".to_string())
            } else {
                pred(attr, v)
            };
            match res {
                Ok(p) => preds.push(p),
                Err(msg) => self.err(format!("{path}[{i}]"), msg),
            }
        }
        preds
    }
}

/// One value of one attribute, as Istio's generators (`model/generator.go`) turn it into Envoy
/// matchers.
fn pred(attr: &Attr, v: &str) -> Result<Pred, String> {
    Ok(match attr {
        Attr::Host => Pred::Host(HeaderMatch::istio(v)),
        Attr::Method => Pred::Header(HeaderKey::Method, HeaderMatch::istio(v)),
        Attr::Header(k) => Pred::Header(k.clone(), HeaderMatch::istio(v)),
        Attr::Path if PathTemplate::is_template(v) => Pred::PathTemplate(PathTemplate::parse(v)?),
        Attr::Path if v.contains(['{', '}']) => {
            return Err(format!(
                "invalid path {v:?}: '{{' or '}}' outside a {{*}} or {{**}} template segment"
            ));
        }
        Attr::Path => Pred::Path(StrMatch::istio(v, "")),
        Attr::Port => Pred::Port(parse_port(v)?),
        Attr::RemoteIp => Pred::RemoteIp(Cidr::parse(v)?),
        Attr::DestIp => Pred::DestIp(Cidr::parse(v)?),
        Attr::SourcePrincipal => Pred::Principal(StrMatch::istio(v, SPIFFE)),
        Attr::SourceNamespace => Pred::Namespace(NamespaceGlob::new(v)),
        Attr::RequestPrincipal => request_principal(v),
        Attr::Claim(path) => Pred::Claim {
            path: path.clone(),
            m: StrMatch::istio(v, ""),
        },
        Attr::Sni => Pred::Sni(StrMatch::istio(v, "")),
    })
}

/// Istio's `convertToPort`: decimal, at most 65535.
fn parse_port(v: &str) -> Result<u16, String> {
    if v.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(p) = v.parse::<u64>() {
            if let Ok(p) = u16::try_from(p) {
                return Ok(p);
            }
        }
    }
    Err(format!("bad port {v:?}: expected a number in 0..=65535"))
}

/// `<iss>/<sub>` split at the LAST `/` (issuers are URLs), each side matched on its own claim,
/// mirroring `requestPrincipalGenerator` case by case.
fn request_principal(v: &str) -> Pred {
    let any = StrMatch::NonEmpty;
    let (iss, sub) = match v.rfind('/') {
        Some(i) => (Some(&v[..i]), &v[i + 1..]),
        None => (None, ""),
    };
    let (iss, sub) = if v == "*" {
        (any.clone(), any)
    } else if let Some(rest) = v.strip_prefix('*') {
        match iss {
            Some("*") => (any, StrMatch::Exact(sub.into())),
            Some(i) => (StrMatch::Suffix(i[1..].into()), StrMatch::Exact(sub.into())),
            None => (any, StrMatch::Suffix(rest.into())),
        }
    } else if let Some(rest) = v.strip_suffix('*') {
        match iss {
            Some(i) if sub == "*" => (StrMatch::Exact(i.into()), any),
            Some(i) => (
                StrMatch::Exact(i.into()),
                StrMatch::Prefix(sub[..sub.len() - 1].into()),
            ),
            None => (StrMatch::Prefix(rest.into()), any),
        }
    } else {
        (
            StrMatch::Exact(iss.unwrap_or(v).into()),
            StrMatch::Exact(sub.into()),
        )
    };
    Pred::RequestPrincipal { iss, sub }
}

/// Why `ipBlocks`, `notIpBlocks` and `source.ip` are refused: enforcing them with the address Envoy
/// does expose would let any client choose its own IP.
const DIRECT_PEER_UNAVAILABLE: &str = "needs the connection's direct peer address, which Envoy does not expose to \
Wasm filters (source.address is the X-Forwarded-For-derived remote address, so matching it would let clients \
spoof their IP); use remoteIpBlocks / remote.ip, or keep this rule in a native AuthorizationPolicy";

/// The `when` keys we support (Istio `model.go`), parsed once.
fn parse_key(key: &str) -> Result<Attr, String> {
    Ok(match key {
        "" => return Err("`key` must not be empty".into()),
        "source.ip" => return Err(DIRECT_PEER_UNAVAILABLE.into()),
        "remote.ip" => Attr::RemoteIp,
        "source.namespace" => Attr::SourceNamespace,
        "source.principal" => Attr::SourcePrincipal,
        "request.auth.principal" => Attr::RequestPrincipal,
        "request.auth.audiences" => Attr::Claim(vec!["aud".into()]),
        "request.auth.presenter" => Attr::Claim(vec!["azp".into()]),
        "destination.ip" => Attr::DestIp,
        "destination.port" => Attr::Port,
        "connection.sni" => Attr::Sni,
        "source.serviceAccount" | "source.trustDomain" => {
            return Err(format!(
                "condition key {key:?} is not supported by this filter"
            ));
        }
        k if k.starts_with("experimental.envoy.filters.") => {
            return Err(format!(
                "condition key {key:?} is not supported by this filter"
            ));
        }
        k => {
            if let Some(rest) = k.strip_prefix("request.headers") {
                let mut names =
                    bracketed(rest).ok_or_else(|| bad_key(k, "request.headers[<name>]"))?;
                let name = match (names.pop(), names.is_empty()) {
                    (Some(n), true) => n.to_ascii_lowercase(),
                    _ => return Err(bad_key(k, "request.headers[<name>]")),
                };
                Attr::Header(match name.as_str() {
                    ":authority" => HeaderKey::Authority,
                    ":method" => HeaderKey::Method,
                    ":path" => HeaderKey::Path,
                    ":scheme" => HeaderKey::Scheme,
                    _ => HeaderKey::Named(name),
                })
            } else if let Some(rest) = k.strip_prefix("request.auth.claims") {
                Attr::Claim(
                    bracketed(rest)
                        .ok_or_else(|| bad_key(k, "request.auth.claims[<name>][<nested>]..."))?,
                )
            } else {
                return Err(format!("unknown condition key {key:?}"));
            }
        }
    })
}

fn bad_key(key: &str, want: &str) -> String {
    format!("bad condition key {key:?}: expected {want} with non-empty names")
}

/// `[a][b.c][d/e]` -> `["a", "b.c", "d/e"]`: dots and slashes are part of a name; names are
/// non-empty and contain no brackets.
fn bracketed(s: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = &inner[..end];
        if name.is_empty() || name.contains('[') {
            return None;
        }
        names.push(name.to_string());
        rest = &inner[end + 1..];
    }
    (!names.is_empty()).then_some(names)
}
