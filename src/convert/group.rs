//! Sources -> groups, one per WasmPlugin: where Istio applies each object (namespace and selector or
//! targetRefs), `--merge-inherited`, WasmPlugin names, and WasmPlugins that would run on the same workload.

use super::plugin::Plugin;
use super::translate::Target;
use super::Converter;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overlap {
    /// Every workload of one also runs the other (an error).
    Certain,
    /// Only workloads that carry both label sets (a note).
    Possible,
}

#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) namespace: String,
    pub(super) target: Target,
    /// Indices into `sources`: own objects, then (with --merge-inherited) inherited ones.
    pub(super) own: Vec<usize>,
    pub(super) inherited: Vec<usize>,
    pub(super) name: String,
}

impl Group {
    pub(super) fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.inherited.iter().chain(self.own.iter()).copied()
    }
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

    pub(super) fn build(&mut self) -> Vec<Plugin> {
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
}

pub(super) fn labels_text(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `base-suffix` as a DNS subdomain (lower-case, [a-z0-9-.], at most 253, alphanumeric ends).
pub(super) fn join_name(base: &str, suffix: &str) -> String {
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

pub(super) fn name_suffix_of<'a>(base: &str, name: &'a str) -> &'a str {
    name.strip_prefix(base)
        .map(|s| s.trim_start_matches('-'))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{options, run, texts};
    use super::super::Level;
    use super::*;
    use crate::convert::shapes::TargetRef;

    fn labels(l: &[(&str, &str)]) -> Target {
        Target::Selector(
            l.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn group(namespace: &str, target: Target) -> Group {
        Group {
            namespace: namespace.into(),
            target,
            own: Vec::new(),
            inherited: Vec::new(),
            name: String::new(),
        }
    }

    #[test]
    fn names_are_dns_subdomains() {
        assert_eq!(join_name("meshgate", "Backend_v2"), "meshgate-backend-v2");
        assert_eq!(join_name("meshgate", "--"), "meshgate-2");
        let long = join_name("m", &"x".repeat(300));
        assert_eq!(long.len(), 253);
        assert_eq!(join_name("m", &format!("{}-y", "x".repeat(250))).len(), 252);
        assert_eq!(name_suffix_of("meshgate", "meshgate-a-2"), "a-2");
    }

    #[test]
    fn one_name_per_namespace_suffixed_by_what_is_selected() {
        let opts = options();
        let cx = Converter::new(&opts);
        let gw = TargetRef {
            group: None,
            kind: "Gateway".into(),
            name: "gw".into(),
            namespace: None,
        };
        let mut groups = vec![
            group("a", labels(&[("app", "backend")])),
            group("a", Target::Namespace),
            group("a", Target::Refs(vec![gw])),
            group("a", labels(&[("app", "x"), ("tier", "y")])),
            group("a", labels(&[("app", "x-y")])),
            group("b", labels(&[("app", "backend")])),
        ];
        cx.assign_names(&mut groups);
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "meshgate-backend",
                "meshgate",
                "meshgate-gw",
                "meshgate-x-y",
                "meshgate-x-y-2",
                "meshgate"
            ]
        );
    }

    #[test]
    fn which_workloads_two_groups_share() {
        let opts = options();
        let cx = Converter::new(&opts);
        let overlap = |a: Group, b: Group| cx.overlap(&a, &b);
        let ns = |n: &str, t: Target| group(n, t);
        assert_eq!(
            overlap(
                ns("a", labels(&[("app", "x")])),
                ns("a", labels(&[("app", "y")]))
            ),
            None
        );
        assert_eq!(
            overlap(
                ns("a", labels(&[("app", "x")])),
                ns("a", labels(&[("app", "x"), ("v", "1")]))
            ),
            Some((
                Overlap::Certain,
                "workloads labelled app=x,v=1 in a".to_string()
            ))
        );
        assert_eq!(
            overlap(
                ns("a", labels(&[("app", "x")])),
                ns("a", labels(&[("tier", "t")]))
            ),
            Some((
                Overlap::Possible,
                "workloads labelled app=x,tier=t in a".to_string()
            ))
        );
        assert_eq!(
            overlap(
                ns("a", labels(&[("app", "x")])),
                ns("b", labels(&[("app", "x")]))
            ),
            None
        );
        assert_eq!(
            overlap(
                ns("istio-system", labels(&[("istio", "ingressgateway")])),
                ns("billing", Target::Namespace)
            ),
            Some((
                Overlap::Possible,
                "workloads labelled istio=ingressgateway in billing".to_string()
            ))
        );
        assert_eq!(
            overlap(
                ns("istio-system", Target::Namespace),
                ns("b", labels(&[("app", "x")]))
            ),
            Some((
                Overlap::Certain,
                "workloads labelled app=x in b".to_string()
            ))
        );
    }

    const LAYERS: &str = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: istio-system}
spec: {action: DENY, rules: [{to: [{operation: {paths: [/debug]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-audit, namespace: apps}
spec: {action: AUDIT, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: own, namespace: apps}
spec: {selector: {matchLabels: {app: x}}, rules: [{}]}
";

    #[test]
    fn overlapping_layers_are_an_error_unless_merged() {
        let out = run(LAYERS, &options());
        let errors = texts(&out, Level::Error);
        // every pair: mesh-wide + namespace-wide, mesh-wide + app=x, namespace-wide + app=x
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("would both run on every workload in namespace apps"));
        assert!(errors[2].ends_with("pass --merge-inherited to copy namespace-wide and mesh-wide policies into the WasmPlugins of the more specific selectors"));
        assert_eq!(out.stdout, "");

        let mut opts = options();
        opts.merge_inherited = true;
        opts.output = crate::convert::OutputFormat::Json;
        let out = run(LAYERS, &opts);
        assert_eq!(texts(&out, Level::Error), Vec::<String>::new());
        let plugin: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(plugin["metadata"]["name"], "meshgate");
        assert_eq!(plugin["metadata"]["namespace"], "apps");
        let names: Vec<&str> = plugin["spec"]["pluginConfig"]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        // inherited first (mesh-wide, namespace-wide), then the workload's own
        assert_eq!(names, ["mesh-deny", "ns-audit", "own"]);
    }
}
