//! The Istio objects `meshgate convert` reads (RequestAuthentication, AuthorizationPolicy: only what is
//! read, spec fields checked strictly) and writes (WasmPlugin), as serde types, with Istio's field lists.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

pub(super) const ISTIO_SECURITY_VERSIONS: [&str; 2] =
    ["security.istio.io/v1", "security.istio.io/v1beta1"];
pub(super) const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Istio's JWTRule fields (istio/api security/v1beta1/request_authentication.proto, plus `presence`
/// from istio/api#3737). meshgate accepts all of them.
pub(super) const ISTIO_JWT_FIELDS: [&str; 13] = [
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
pub(super) const MESHGATE_JWT_FIELDS: [&str; 5] = [
    "jwksCluster",
    "cacheDuration",
    "clockSkew",
    "kidRefetchCooldown",
    "accessTokensOnly",
];

/// Istio `Source` fields meshgate does not implement, with what to write instead.
pub(super) const UNSUPPORTED_SOURCE_FIELDS: [(&str, &str); 4] = [
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Object<S> {
    #[allow(dead_code)]
    pub(super) api_version: String,
    #[allow(dead_code)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) metadata: Metadata,
    #[serde(default = "Option::default")]
    pub(super) spec: Option<S>,
    #[allow(dead_code)]
    #[serde(default)]
    pub(super) status: Option<IgnoredAny>,
}

/// `metadata`: uid, labels, managedFields, ... of an exported object are ignored.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Metadata {
    #[serde(default)]
    pub(super) name: Option<String>,
    /// Read from the raw object; typed here so that a non-string is an error with its path.
    #[allow(dead_code)]
    #[serde(default)]
    pub(super) namespace: Option<String>,
    #[serde(default)]
    pub(super) annotations: Option<BTreeMap<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RequestAuthenticationSpec {
    #[serde(default)]
    pub(super) selector: Option<Selector>,
    #[serde(default)]
    pub(super) target_ref: Option<TargetRef>,
    #[serde(default)]
    pub(super) target_refs: Option<Vec<TargetRef>>,
    #[serde(default)]
    pub(super) jwt_rules: Option<Vec<Value>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct AuthorizationPolicySpec {
    #[serde(default)]
    pub(super) selector: Option<Selector>,
    #[serde(default)]
    pub(super) target_ref: Option<TargetRef>,
    #[serde(default)]
    pub(super) target_refs: Option<Vec<TargetRef>>,
    #[serde(default)]
    pub(super) action: Option<String>,
    #[serde(default)]
    pub(super) rules: Option<Value>,
    #[serde(default)]
    pub(super) provider: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Selector {
    #[serde(default)]
    pub(super) match_labels: Option<BTreeMap<String, String>>,
}

/// Istio `PolicyTargetReference`, carried over to the WasmPlugin as is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct TargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) group: Option<String>,
    pub(super) kind: String,
    pub(super) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) namespace: Option<String>,
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

// The WasmPlugin written.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WasmPlugin {
    pub(super) api_version: &'static str,
    pub(super) kind: &'static str,
    pub(super) metadata: PluginMeta,
    pub(super) spec: PluginSpec,
}

#[derive(Serialize)]
pub(super) struct PluginMeta {
    pub(super) name: String,
    pub(super) namespace: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PluginSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) selector: Option<SelectorOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) target_refs: Vec<TargetRef>,
    pub(super) url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sha256: Option<String>,
    pub(super) phase: &'static str,
    pub(super) fail_strategy: &'static str,
    pub(super) plugin_name: &'static str,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub(super) match_: Option<Vec<MatchOut>>,
    pub(super) plugin_config: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SelectorOut {
    pub(super) match_labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
pub(super) struct MatchOut {
    pub(super) mode: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_fields_are_strict_metadata_is_not() {
        let ok: Object<AuthorizationPolicySpec> = serde_json::from_value(json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "uid": "u-1", "labels": {"a": "b"}, "annotations": {"istio.io/dry-run": "true"}},
            "spec": {"action": "DENY", "rules": [{}]},
            "status": {"anything": [1, 2]}
        }))
        .unwrap();
        assert_eq!(ok.metadata.name.as_deref(), Some("p"));
        assert_eq!(ok.spec.unwrap().action.as_deref(), Some("DENY"));
        let e = serde_json::from_value::<Object<RequestAuthenticationSpec>>(json!({
            "apiVersion": "v", "kind": "k", "spec": {"jwtRule": []}
        }))
        .err()
        .unwrap()
        .to_string();
        assert!(e.starts_with("unknown field `jwtRule`"), "{e}");
    }

    #[test]
    fn target_refs_round_trip_as_written() {
        let r: TargetRef = serde_json::from_value(
            json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}),
        )
        .unwrap();
        assert_eq!(r.to_string(), "Gateway/gw");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"})
        );
        assert!(serde_json::from_value::<TargetRef>(json!({"kind": "Gateway"})).is_err());
    }

    #[test]
    fn wasmplugin_field_names_are_istios() {
        let p = WasmPlugin {
            api_version: "extensions.istio.io/v1alpha1",
            kind: "WasmPlugin",
            metadata: PluginMeta {
                name: "n".into(),
                namespace: "ns".into(),
            },
            spec: PluginSpec {
                selector: Some(SelectorOut {
                    match_labels: BTreeMap::from([("app".into(), "x".into())]),
                }),
                target_refs: Vec::new(),
                url: "oci://r/m:1".into(),
                sha256: None,
                phase: "AUTHN",
                fail_strategy: "FAIL_CLOSE",
                plugin_name: "meshgate",
                match_: Some(vec![MatchOut {
                    mode: "SERVER".into(),
                }]),
                plugin_config: json!({}),
            },
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                   "metadata": {"name": "n", "namespace": "ns"},
                   "spec": {"selector": {"matchLabels": {"app": "x"}}, "url": "oci://r/m:1", "phase": "AUTHN",
                            "failStrategy": "FAIL_CLOSE", "pluginName": "meshgate",
                            "match": [{"mode": "SERVER"}], "pluginConfig": {}}})
        );
    }
}
