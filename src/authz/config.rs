//! Configuration DTOs: Istio `AuthorizationPolicy` spec shapes, accepted verbatim (as JSON), plus
//! a `name` and a `dryRun` flag (Istio's `istio.io/dry-run` annotation).

use serde::Deserialize;

/// One authorization policy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique, non-empty; reported as the deciding policy.
    pub name: String,
    #[serde(default)]
    pub action: Action,
    /// Absent, `null` or `[]`: no rules (an ALLOW policy then matches nothing).
    #[serde(default)]
    pub rules: Option<Vec<RuleConfig>>,
    /// Evaluate and report, never enforce.
    #[serde(default)]
    pub dry_run: bool,
    /// Istio's CUSTOM `provider`; accepted only so that CUSTOM policies get a clear error.
    #[serde(default)]
    pub provider: Option<serde_json::Value>,
}

/// Policy action. `CUSTOM` parses, but `compile` rejects it (ext_authz is not done in-proxy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

/// `rules[]`: matches when any `from`, any `to` and every `when` match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    /// `Some([])` is an error, as in Istio validation; omit the field to match any source.
    #[serde(default)]
    pub from: Option<Vec<FromConfig>>,
    #[serde(default)]
    pub to: Option<Vec<ToConfig>>,
    #[serde(default)]
    pub when: Vec<ConditionConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromConfig {
    #[serde(default)]
    pub source: Option<SourceConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToConfig {
    #[serde(default)]
    pub operation: Option<OperationConfig>,
}

/// `from[].source`: fields ANDed, values of one field ORed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceConfig {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

/// `to[].operation`: fields ANDed, values of one field ORed. Ports are strings, as in Istio.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationConfig {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub not_ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `when[]`: at least one of `values` / `notValues` must be set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConditionConfig {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}
