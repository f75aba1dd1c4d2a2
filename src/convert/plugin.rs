//! One group -> one WasmPlugin: its pluginConfig checked by the filter's parser (errors mapped back to the
//! objects they came from), the notes about where it applies and which clusters it needs, the object.

use super::group::Group;
use super::shapes::{MatchOut, PluginMeta, PluginSpec, SelectorOut, WasmPlugin};
use super::translate::{
    policy_path, rewrite_refs, strip_json_position, validate, DocRef, Kind, Target,
};
use super::{Converter, MatchMode};
use crate::http_target::http_target;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One generated WasmPlugin.
pub(super) struct Plugin {
    /// The objects it was generated from (comment lines in YAML output).
    pub(super) sources: Vec<DocRef>,
    pub(super) object: WasmPlugin,
    pub(super) version: &'static str,
    pub(super) placement: Placement,
}

/// What a WasmPlugin selects, as far as `spec.match` is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Placement {
    /// A workload selector: sidecars.
    Sidecars,
    /// A selector with this gateway label (`istio=ingressgateway`).
    Gateway(String),
    /// No selector: every workload of the namespace (or mesh), gateways included.
    NoSelector,
    /// targetRefs: gateways (Gateway API) or waypoints.
    TargetRefs,
}

impl Placement {
    fn of(target: &Target) -> Placement {
        match target {
            Target::Selector(labels) => match gateway_label(labels) {
                Some(l) => Placement::Gateway(l),
                None => Placement::Sidecars,
            },
            Target::Namespace => Placement::NoSelector,
            Target::Refs(_) => Placement::TargetRefs,
        }
    }

    /// `spec.match` for this placement under `--match-mode`.
    fn mode(&self, mode: &MatchMode) -> Option<String> {
        match (mode, self) {
            (MatchMode::Auto, Placement::Sidecars) => Some("SERVER".into()),
            (MatchMode::Auto | MatchMode::None, _) => None,
            (MatchMode::Every(m), _) => Some(m.clone()),
        }
    }
}

/// The label that makes a selector select gateway pods rather than sidecars: Istio's gateway
/// deployments carry `istio: <name>` (ingressgateway, egressgateway, or the gateway chart's name),
/// Gateway API deployments `gateway.networking.k8s.io/gateway-name` (earlier `istio.io/gateway-name`),
/// and gateway apps are named like `istio-ingressgateway`. Errs on the gateway side on purpose: a
/// gateway taken for sidecars would get SERVER and then run no filter at all, while sidecars taken
/// for a gateway only keep the filter on their outbound requests too.
pub(super) fn gateway_label(labels: &BTreeMap<String, String>) -> Option<String> {
    labels
        .iter()
        .find(|(k, v)| match k.as_str() {
            "istio" | "gateway.networking.k8s.io/gateway-name" | "istio.io/gateway-name" => true,
            "app" | "app.kubernetes.io/name" => v.contains("gateway"),
            _ => false,
        })
        .map(|(k, v)| format!("{k}={v}"))
}

/// The notes that say where the WasmPlugins run, once for all of them.
pub(super) fn match_notes(plugins: &[Plugin], mode: &MatchMode) -> Vec<String> {
    let ids = |keep: &dyn Fn(&Placement) -> bool| -> String {
        plugins
            .iter()
            .filter(|p| keep(&p.placement))
            .map(|p| {
                let id = format!("{}/{}", p.object.metadata.namespace, p.object.metadata.name);
                match &p.placement {
                    Placement::Gateway(label) => format!("{id} ({label})"),
                    _ => id,
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut notes = Vec::new();
    match mode {
        MatchMode::Auto => {
            let sidecars = ids(&|p| *p == Placement::Sidecars);
            if !sidecars.is_empty() {
                notes.push(format!(
                    "match [{{mode: SERVER}}] on WasmPlugin(s) {sidecars}: they run on the requests the selected \
                     sidecars receive, where Istio applies RequestAuthentication and AuthorizationPolicy, not on \
                     the requests they send; a SERVER plugin never runs on a gateway: if one of these selectors \
                     selects a gateway, pass --match-mode none"
                ));
            }
            let gateways = ids(&|p| matches!(p, Placement::Gateway(_)));
            if !gateways.is_empty() {
                notes.push(format!(
                    "no match on WasmPlugin(s) {gateways}: the selector is a gateway's, and Istio \
                     classifies gateway listeners as CLIENT (SERVER would never run there)"
                ));
            }
            let everywhere = ids(&|p| *p == Placement::NoSelector);
            if !everywhere.is_empty() {
                notes.push(format!(
                    "no match on WasmPlugin(s) {everywhere}: without a selector they also select the gateways \
                     there, which SERVER would leave without the filter, so they also run on the requests sidecars \
                     send (Istio applies these policies to requests received only); pass --match-mode SERVER if no \
                     gateway runs there"
                ));
            }
        }
        MatchMode::None => {
            let sidecars = ids(&|p| matches!(p, Placement::Sidecars | Placement::NoSelector));
            if !sidecars.is_empty() {
                notes.push(format!(
                    "--match-mode none: WasmPlugin(s) {sidecars} also run on the requests their sidecars send \
                     (Istio applies these policies to requests received only)"
                ));
            }
        }
        MatchMode::Every(m) if m == "SERVER" => {
            let gateways = ids(&|p| matches!(p, Placement::Gateway(_) | Placement::TargetRefs));
            if !gateways.is_empty() {
                notes.push(format!(
                    "--match-mode SERVER on WasmPlugin(s) {gateways}: they select gateways, whose listeners \
                     Istio classifies as CLIENT: the filter will not run there"
                ));
            }
        }
        MatchMode::Every(_) => {}
    }
    notes
}

impl Converter<'_> {
    /// Builds and checks one pluginConfig; objects whose part fails are dropped (and reported).
    pub(super) fn plugin(&mut self, g: &Group) -> Option<Plugin> {
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
        let placement = Placement::of(&g.target);
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
                match_: placement
                    .mode(&self.opts.match_mode)
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
            placement,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{options, run, texts};
    use super::super::{Level, MatchMode, OutputFormat};
    use super::{gateway_label, Placement};
    use std::collections::BTreeMap;

    fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn gateway_selectors_are_recognised() {
        for (l, want) in [
            (
                vec![("istio", "ingressgateway")],
                Some("istio=ingressgateway"),
            ),
            (
                vec![("app", "x"), ("istio", "ingress")],
                Some("istio=ingress"),
            ),
            (
                vec![("gateway.networking.k8s.io/gateway-name", "gw")],
                Some("gateway.networking.k8s.io/gateway-name=gw"),
            ),
            (
                vec![("istio.io/gateway-name", "gw")],
                Some("istio.io/gateway-name=gw"),
            ),
            (
                vec![("app", "istio-egressgateway")],
                Some("app=istio-egressgateway"),
            ),
            (
                vec![("app.kubernetes.io/name", "edge-gateway")],
                Some("app.kubernetes.io/name=edge-gateway"),
            ),
            (vec![("app", "backend"), ("version", "gateway")], None),
            (vec![("team", "istio")], None),
        ] {
            assert_eq!(gateway_label(&labels(&l)).as_deref(), want, "{l:?}");
        }
    }

    #[test]
    fn match_by_placement_and_mode() {
        let server = Some("SERVER".to_string());
        let gw = Placement::Gateway("istio=ingressgateway".into());
        let all = [
            Placement::Sidecars,
            gw.clone(),
            Placement::NoSelector,
            Placement::TargetRefs,
        ];
        let modes = |m: MatchMode| all.iter().map(|p| p.mode(&m)).collect::<Vec<_>>();
        assert_eq!(modes(MatchMode::Auto), [server.clone(), None, None, None]);
        assert_eq!(modes(MatchMode::None), [None, None, None, None]);
        assert_eq!(
            modes(MatchMode::Every("CLIENT".into())),
            vec![Some("CLIENT".to_string()); 4]
        );
        assert_eq!(
            MatchMode::parse("server"),
            Ok(MatchMode::Every("SERVER".into()))
        );
        assert_eq!(MatchMode::parse("None"), Ok(MatchMode::None));
        assert_eq!(
            MatchMode::parse("INBOUND"),
            Err(
                "--match-mode \"INBOUND\": must be auto, none, SERVER, CLIENT or CLIENT_AND_SERVER"
                    .into()
            )
        );
    }

    const TWO_ISSUERS: &str = "\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: a, namespace: ns}
spec:
  selector: {matchLabels: {app: x}}
  jwtRules: [{issuer: \"http://kc/realms/r\"}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: b, namespace: ns}
spec:
  selector: {matchLabels: {app: x}}
  jwtRules:
  - {issuer: \"https://idp.example.com:8443/r\", jwksUri: \"https://keys.example.com/certs\"}
  - {issuer: \"http://inline\", jwks: '{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}'}
";

    #[test]
    fn notes_name_the_clusters_the_proxy_fetches_keys_through() {
        let out = run(TWO_ISSUERS, &options());
        assert_eq!(texts(&out, Level::Error), Vec::<String>::new());
        assert!(texts(&out, Level::Note).contains(
            &"WasmPlugin ns/meshgate: the proxy fetches keys itself through Envoy cluster(s) outbound|80||kc, \
              outbound|443||keys.example.com (istiod fetched them in its default mode): the workloads must reach \
              these hosts (Service or ServiceEntry, Sidecar egress)"
                .to_string()
        ));
    }

    #[test]
    fn an_error_of_the_merged_config_points_at_its_object() {
        let dup = TWO_ISSUERS.replace("https://idp.example.com:8443/r", "http://kc/realms/r");
        let out = run(&dup, &options());
        assert_eq!(
            texts(&out, Level::Error),
            vec![
                "in.yaml: doc 2 (RequestAuthentication ns/b): spec.jwtRules[0].issuer: issuer \
                 \"http://kc/realms/r\" is already configured in in.yaml: doc 1 (RequestAuthentication ns/a) \
                 spec.jwtRules[0] (in WasmPlugin ns/meshgate)"
            ]
        );
        assert_eq!(out.stdout, "");
        // --keep-going: the object in error is left out, the rest is written
        let mut opts = options();
        opts.keep_going = true;
        opts.output = OutputFormat::Json;
        let out = run(&dup, &opts);
        let p: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            p["spec"]["pluginConfig"]["jwtRules"],
            serde_json::json!([{"issuer": "http://kc/realms/r"}])
        );
    }

    #[test]
    fn the_object_istio_expects() {
        let mut opts = options();
        opts.output = OutputFormat::Json;
        opts.sha256 = Some("ab".repeat(32));
        let out = run(TWO_ISSUERS, &opts);
        let p: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let spec = &p["spec"];
        assert_eq!(
            (&p["apiVersion"], &p["kind"]),
            (
                &serde_json::json!("extensions.istio.io/v1alpha1"),
                &serde_json::json!("WasmPlugin")
            )
        );
        assert_eq!(
            spec["selector"],
            serde_json::json!({"matchLabels": {"app": "x"}})
        );
        assert_eq!(spec["url"], "oci://registry.test/meshgate:9.9.9");
        assert_eq!(spec["sha256"], "ab".repeat(32));
        assert_eq!(
            (&spec["phase"], &spec["failStrategy"], &spec["pluginName"]),
            (
                &serde_json::json!("AUTHN"),
                &serde_json::json!("FAIL_CLOSE"),
                &serde_json::json!("meshgate")
            )
        );
        assert_eq!(
            spec["pluginConfig"]["jwtRules"].as_array().map(Vec::len),
            Some(3)
        );
    }
}
