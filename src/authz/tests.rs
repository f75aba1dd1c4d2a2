//! Table-driven Istio AuthorizationPolicy semantics. Every row states one behaviour and its exact
//! outcome (decision and deciding policy/rule, or the error path), so a wrong engine fails it.

use super::*;
use serde_json::{Map, Value};

/// A Keycloak access token payload.
const TOKEN: &str = r#"{
  "iss": "http://keycloak.keycloak.svc.cluster.local/realms/myrealm",
  "sub": "user-1",
  "aud": "my-backend-client",
  "azp": "web-app",
  "email": "user@example.com",
  "scope": "openid orders:read",
  "permission": "read write",
  "title": "head of ops",
  "realm_access": {"roles": ["admin", "user"]},
  "resource_access": {"my-client": {"roles": ["reader"]}},
  "groups": ["/eng", "/ops"],
  "foo.com/tier": "gold",
  "age": 42,
  "email_verified": true,
  "org": {"name": "acme"},
  "nickname": ""
}"#;

const TOKEN_AUD_LIST: &str = r#"{"iss": "http://keycloak.keycloak.svc.cluster.local/realms/myrealm", "sub": "user-1",
  "aud": ["account", "my-backend-client"], "email": "user@example.com"}"#;
const TOKEN_AUD_OTHER: &str = r#"{"iss": "http://keycloak.keycloak.svc.cluster.local/realms/myrealm", "sub": "user-1",
  "aud": ["account"], "email": "user@example.com"}"#;
const TOKEN_WRONG_EMAIL: &str = r#"{"iss": "http://keycloak.keycloak.svc.cluster.local/realms/myrealm", "sub": "user-1",
  "aud": "my-backend-client", "email": "mallory@example.com"}"#;
const TOKEN_NO_SUB: &str =
    r#"{"iss": "http://keycloak.keycloak.svc.cluster.local/realms/myrealm"}"#;
const TOKEN_NO_ROLES: &str = r#"{"iss": "http://keycloak.keycloak.svc.cluster.local/realms/myrealm", "sub": "u",
  "realm_access": {"roles": ["user"]}}"#;

/// The reference policy from the task: GET + iss + aud + email.
const REFERENCE: &str = r#"[{"name": "require-jwt", "action": "ALLOW", "rules": [{
  "to": [{"operation": {"methods": ["GET"]}}],
  "when": [
    {"key": "request.auth.claims[iss]", "values": ["http://keycloak.keycloak.svc.cluster.local/realms/myrealm"]},
    {"key": "request.auth.claims[aud]", "values": ["my-backend-client"]},
    {"key": "request.auth.claims[email]", "values": ["user@example.com"]}
  ]}]}]"#;

fn base_request() -> RequestAttrs {
    RequestAttrs {
        method: "GET".into(),
        path: "/api/orders?page=2".into(),
        host: "api.example.com".into(),
        scheme: "https".into(),
        headers: vec![
            ("user-agent".into(), "curl/8.0".into()),
            ("x-tenant".into(), "acme".into()),
            ("x-empty".into(), String::new()),
        ],
        remote_ip: Some("203.0.113.7".parse().unwrap()),
        destination_ip: Some("10.0.1.10".parse().unwrap()),
        destination_port: Some(8080),
        source_principal: Some("spiffe://cluster.local/ns/frontend/sa/web".into()),
        sni: Some("api.example.com".into()),
        outbound: false,
    }
}

fn identity(claims: &str) -> Identity {
    let claims: Map<String, Value> = serde_json::from_str(claims).unwrap();
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
    let audiences = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Identity {
        issuer: text("iss").unwrap_or_default(),
        subject: text("sub").unwrap_or_default(),
        audiences,
        presenter: text("azp"),
        space_delimited_claims: Rc::from(vec!["scope".to_string(), "permission".to_string()]),
        claims: Rc::new(claims),
        memo: PolicyMemo::default(),
    }
}

#[derive(Debug)]
enum Want {
    /// Allowed by `(policy, rule)`, or `None` when no ALLOW policy is enforced.
    Allow(Option<(&'static str, usize)>),
    /// Denied by a DENY policy's rule.
    Deny(&'static str, usize),
    /// ALLOW policies exist and none matched.
    NoMatch,
    /// Compile error: exactly one, at this path, message containing the fragment.
    Invalid(&'static str, &'static str),
    /// The JSON does not even deserialize (message fragment).
    Parse(&'static str),
}
use Want::*;

struct Row {
    name: &'static str,
    policies: String,
    req: fn(&mut RequestAttrs),
    token: Option<&'static str>,
    want: Want,
}

fn row(
    name: &'static str,
    policies: impl Into<String>,
    req: fn(&mut RequestAttrs),
    token: Option<&'static str>,
    want: Want,
) -> Row {
    Row {
        name,
        policies: policies.into(),
        req,
        token,
        want,
    }
}

/// One ALLOW policy named `p` with the given rules (JSON list items).
fn allow(rules: &str) -> String {
    format!(r#"[{{"name": "p", "rules": [{rules}]}}]"#)
}

/// One DENY policy named `d`.
fn deny(rules: &str) -> String {
    format!(r#"[{{"name": "d", "action": "DENY", "rules": [{rules}]}}]"#)
}

/// An ALLOW rule with one `when` condition.
fn when(key: &str, values: &str) -> String {
    allow(&format!(
        r#"{{"when": [{{"key": "{key}", "values": {values}}}]}}"#
    ))
}

fn when_not(key: &str, not_values: &str) -> String {
    allow(&format!(
        r#"{{"when": [{{"key": "{key}", "notValues": {not_values}}}]}}"#
    ))
}

/// An ALLOW rule with one `to.operation`.
fn op(operation: &str) -> String {
    allow(&format!(r#"{{"to": [{{"operation": {operation}}}]}}"#))
}

/// An ALLOW rule with one `from.source`.
fn src(source: &str) -> String {
    allow(&format!(r#"{{"from": [{{"source": {source}}}]}}"#))
}

const SAME: fn(&mut RequestAttrs) = |_| {};
const T: Option<&str> = Some(TOKEN);
const P0: Want = Allow(Some(("p", 0)));

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        // --- policy-level semantics -------------------------------------------------------------
        row("no policies allow", "[]", SAME, None, Allow(None)),
        row("non-matching DENY alone allows", deny(r#"{"to": [{"operation": {"methods": ["POST"]}}]}"#), SAME, None, Allow(None)),
        row("matching DENY denies", deny(r#"{"to": [{"operation": {"methods": ["GET"]}}]}"#), SAME, None, Deny("d", 0)),
        row("DENY wins over a matching ALLOW",
            r#"[{"name": "p", "rules": [{}]}, {"name": "d", "action": "DENY", "rules": [{}]}]"#, SAME, None, Deny("d", 0)),
        row("ALLOW matches when DENY does not",
            r#"[{"name": "d", "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}, {"name": "p", "rules": [{}]}]"#,
            SAME, None, P0),
        row("ALLOW without rules allows nothing", r#"[{"name": "p"}]"#, SAME, T, NoMatch),
        row("ALLOW with rules: [] allows nothing", r#"[{"name": "p", "rules": []}]"#, SAME, T, NoMatch),
        row("ALLOW with rules: null allows nothing", r#"[{"name": "p", "rules": null}]"#, SAME, T, NoMatch),
        row("ALLOW rules [{}] allows everything", allow("{}"), SAME, None, P0),
        row("action defaults to ALLOW", r#"[{"name": "p", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}]"#, SAME, None, NoMatch),
        row("second ALLOW policy matches",
            r#"[{"name": "a", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}, {"name": "b", "rules": [{}]}]"#,
            SAME, None, Allow(Some(("b", 0)))),
        row("matching rule index is reported",
            allow(r#"{"to": [{"operation": {"methods": ["POST"]}}]}, {"to": [{"operation": {"methods": ["GET"]}}]}"#),
            SAME, None, Allow(Some(("p", 1)))),
        row("allow-nothing next to a matching ALLOW",
            r#"[{"name": "nothing"}, {"name": "p", "rules": [{}]}]"#, SAME, None, P0),
        row("AUDIT never changes the decision", r#"[{"name": "a", "action": "AUDIT", "rules": [{}]}]"#, SAME, None, Allow(None)),
        row("AUDIT does not count as an ALLOW policy",
            r#"[{"name": "a", "action": "AUDIT", "rules": [{}]}, {"name": "p", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}]"#,
            SAME, None, NoMatch),
        row("dry-run DENY does not deny", r#"[{"name": "d", "action": "DENY", "dryRun": true, "rules": [{}]}]"#, SAME, None, Allow(None)),
        row("dry-run ALLOW does not make an ALLOW policy exist",
            r#"[{"name": "p", "dryRun": true, "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}]"#, SAME, None, Allow(None)),
        row("dry-run ALLOW next to an enforced ALLOW",
            r#"[{"name": "dry", "dryRun": true, "rules": [{}]}, {"name": "p", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}]"#,
            SAME, None, NoMatch),
        row("first matching DENY policy is reported",
            r#"[{"name": "d1", "action": "DENY", "rules": [{}]}, {"name": "d2", "action": "DENY", "rules": [{}]}]"#, SAME, None, Deny("d1", 0)),
        row("DENY rule index is reported",
            deny(r#"{"to": [{"operation": {"methods": ["POST"]}}]}, {"to": [{"operation": {"ports": ["8080"]}}]}"#), SAME, None, Deny("d", 1)),

        // --- rule structure -------------------------------------------------------------------------
        row("from entries are ORed",
            allow(r#"{"from": [{"source": {"namespaces": ["other"]}}, {"source": {"namespaces": ["frontend"]}}]}"#), SAME, None, P0),
        row("no from entry matches",
            allow(r#"{"from": [{"source": {"namespaces": ["other"]}}, {"source": {"remoteIpBlocks": ["192.168.0.0/16"]}}]}"#), SAME, None, NoMatch),
        row("to entries are ORed",
            allow(r#"{"to": [{"operation": {"methods": ["POST"]}}, {"operation": {"paths": ["/api/orders"]}}]}"#), SAME, None, P0),
        row("from AND to: to fails",
            allow(r#"{"from": [{"source": {"namespaces": ["frontend"]}}], "to": [{"operation": {"methods": ["POST"]}}]}"#), SAME, None, NoMatch),
        row("from AND to: both match",
            allow(r#"{"from": [{"source": {"namespaces": ["frontend"]}}], "to": [{"operation": {"methods": ["GET"]}}]}"#), SAME, None, P0),
        row("when conditions are ANDed: all match",
            allow(r#"{"when": [{"key": "source.namespace", "values": ["frontend"]}, {"key": "destination.port", "values": ["8080"]}]}"#),
            SAME, None, P0),
        row("when conditions are ANDed: one fails",
            allow(r#"{"when": [{"key": "source.namespace", "values": ["frontend"]}, {"key": "destination.port", "values": ["9090"]}]}"#),
            SAME, None, NoMatch),
        row("source fields are ANDed", src(r#"{"namespaces": ["frontend"], "remoteIpBlocks": ["192.168.0.0/16"]}"#), SAME, None, NoMatch),
        row("values within a field are ORed", op(r#"{"methods": ["POST", "GET"]}"#), SAME, None, P0),
        row("operation fields are ANDed", op(r#"{"methods": ["GET"], "paths": ["/admin"]}"#), SAME, None, NoMatch),
        row("value and notValue of one field: excluded", op(r#"{"paths": ["/api/*"], "notPaths": ["/api/orders"]}"#), SAME, None, NoMatch),
        row("value and notValue of one field: included", op(r#"{"paths": ["/api/*"], "notPaths": ["/api/admin*"]}"#), SAME, None, P0),
        row("when with values and notValues", allow(r#"{"when": [{"key": "request.headers[x-tenant]", "values": ["a*"], "notValues": ["acme"]}]}"#),
            SAME, None, NoMatch),

        // --- methods ----------------------------------------------------------------------------
        row("method exact", op(r#"{"methods": ["GET"]}"#), SAME, None, P0),
        row("method is case-sensitive", op(r#"{"methods": ["get"]}"#), SAME, None, NoMatch),
        row("notMethods excludes", op(r#"{"notMethods": ["GET"]}"#), SAME, None, NoMatch),
        row("notMethods lets others through", op(r#"{"notMethods": ["POST", "PUT"]}"#), SAME, None, P0),
        row("method * is presence", op(r#"{"methods": ["*"]}"#), SAME, None, P0),
        row("method prefix", op(r#"{"methods": ["PO*"]}"#), |r| r.method = "POST".into(), None, P0),

        // --- paths ------------------------------------------------------------------------------
        row("path exact ignores the query", op(r#"{"paths": ["/api/orders"]}"#), SAME, None, P0),
        row("path exact ignores a fragment", op(r#"{"paths": ["/api/orders"]}"#), |r| r.path = "/api/orders#top".into(), None, P0),
        row("path exact mismatch", op(r#"{"paths": ["/api/order"]}"#), SAME, None, NoMatch),
        row("path is case-sensitive", op(r#"{"paths": ["/API/orders"]}"#), SAME, None, NoMatch),
        row("path prefix", op(r#"{"paths": ["/api/*"]}"#), SAME, None, P0),
        row("path suffix", op(r#"{"paths": ["*/orders"]}"#), SAME, None, P0),
        row("path * is presence", op(r#"{"paths": ["*"]}"#), SAME, None, P0),
        row("query is not part of a prefix match", op(r#"{"paths": ["*page=2"]}"#), SAME, None, NoMatch),
        row("template {*} one segment", op(r#"{"paths": ["/api/{*}"]}"#), SAME, None, P0),
        row("template {*} not two segments", op(r#"{"paths": ["/api/{*}"]}"#), |r| r.path = "/api/orders/1".into(), None, NoMatch),
        row("template {*} not an empty segment", op(r#"{"paths": ["/api/{*}/x"]}"#), |r| r.path = "/api//x".into(), None, NoMatch),
        row("template {*} matches '=' and '*' (Envoy 1.40 glob set)", op(r#"{"paths": ["/api/{*}"]}"#), |r| r.path = "/api/a=b*c".into(), None, P0),
        row("template {*} does not match other characters", op(r#"{"paths": ["/api/{*}"]}"#), |r| r.path = "/api/a\"b".into(), None, NoMatch),
        row("template literal may contain '='", op(r#"{"paths": ["/k=v/{*}"]}"#), |r| r.path = "/k=v/x".into(), None, P0),
        row("template {*} first segment", op(r#"{"paths": ["/{*}/orders"]}"#), SAME, None, P0),
        row("template {**} many segments", op(r#"{"paths": ["/api/{**}"]}"#), |r| r.path = "/api/orders/1/items".into(), None, P0),
        row("template {**} zero segments", op(r#"{"paths": ["/api/{**}"]}"#), |r| r.path = "/api/".into(), None, P0),
        row("template {**} keeps the slash before it", op(r#"{"paths": ["/api/{**}"]}"#), |r| r.path = "/api".into(), None, NoMatch),
        row("template /foo/{**}/ matches /foo/bar/", op(r#"{"paths": ["/foo/{**}/"]}"#), |r| r.path = "/foo/bar/".into(), None, P0),
        row("template /foo/{**}/ matches /foo//", op(r#"{"paths": ["/foo/{**}/"]}"#), |r| r.path = "/foo//".into(), None, P0),
        row("template /foo/{**}/ needs the trailing slash", op(r#"{"paths": ["/foo/{**}/"]}"#), |r| r.path = "/foo/bar/baz.txt".into(), None, NoMatch),
        row("template {*} then {**}: /foo/buzz/bar/", op(r#"{"paths": ["/foo/{*}/bar/{**}"]}"#), |r| r.path = "/foo/buzz/bar/".into(), None, P0),
        row("template {*} then {**}: /foo/buzz/bar/baz", op(r#"{"paths": ["/foo/{*}/bar/{**}"]}"#), |r| r.path = "/foo/buzz/bar/baz".into(), None, P0),
        row("template {**} then literal", op(r#"{"paths": ["/a/{**}/edit"]}"#), |r| r.path = "/a/b/c/edit".into(), None, P0),
        row("notPaths template", op(r#"{"notPaths": ["/api/{*}"]}"#), SAME, None, NoMatch),

        // --- hosts ------------------------------------------------------------------------------
        row("host exact", op(r#"{"hosts": ["api.example.com"]}"#), SAME, None, P0),
        row("host is case-insensitive", op(r#"{"hosts": ["API.Example.COM"]}"#), SAME, None, P0),
        row("host with a port does not match the bare name", op(r#"{"hosts": ["api.example.com"]}"#),
            |r| r.host = "api.example.com:8443".into(), None, NoMatch),
        row("host:* matches a host with a port", op(r#"{"hosts": ["api.example.com:*"]}"#),
            |r| r.host = "api.example.com:8443".into(), None, P0),
        row("host suffix", op(r#"{"hosts": ["*.example.com"]}"#), SAME, None, P0),
        row("host suffix is case-insensitive", op(r#"{"hosts": ["*.EXAMPLE.com"]}"#), SAME, None, P0),
        row("notHosts excludes", op(r#"{"notHosts": ["api.example.com"]}"#), SAME, None, NoMatch),
        row("host * needs a host", op(r#"{"hosts": ["*"]}"#), |r| r.host.clear(), None, NoMatch),

        // --- ports ------------------------------------------------------------------------------
        row("port match", op(r#"{"ports": ["8080"]}"#), SAME, None, P0),
        row("port mismatch", op(r#"{"ports": ["9090"]}"#), SAME, None, NoMatch),
        row("notPorts excludes", op(r#"{"notPorts": ["8080"]}"#), SAME, None, NoMatch),
        row("port without a destination port", op(r#"{"ports": ["8080"]}"#), |r| r.destination_port = None, None, NoMatch),
        row("destination.port condition", when("destination.port", r#"["80", "8080"]"#), SAME, None, P0),

        // --- peer principals and namespaces -----------------------------------------------------
        row("principal exact (spiffe:// is added)", src(r#"{"principals": ["cluster.local/ns/frontend/sa/web"]}"#), SAME, None, P0),
        row("principal written with spiffe:// does not match", src(r#"{"principals": ["spiffe://cluster.local/ns/frontend/sa/web"]}"#),
            SAME, None, NoMatch),
        row("principal * with mTLS", src(r#"{"principals": ["*"]}"#), SAME, None, P0),
        row("principal * without mTLS", src(r#"{"principals": ["*"]}"#), |r| r.source_principal = None, None, NoMatch),
        row("principal prefix", src(r#"{"principals": ["cluster.local/ns/frontend/*"]}"#), SAME, None, P0),
        row("principal suffix", src(r#"{"principals": ["*/sa/web"]}"#), SAME, None, P0),
        row("principal suffix mismatch", src(r#"{"principals": ["*/sa/api"]}"#), SAME, None, NoMatch),
        row("notPrincipals * without mTLS matches", src(r#"{"notPrincipals": ["*"]}"#), |r| r.source_principal = None, None, P0),
        row("source.principal condition", when("source.principal", r#"["cluster.local/ns/frontend/sa/web"]"#), SAME, None, P0),
        row("namespace exact", src(r#"{"namespaces": ["frontend"]}"#), SAME, None, P0),
        row("namespace is not a prefix match", src(r#"{"namespaces": ["front"]}"#), SAME, None, NoMatch),
        row("namespace prefix", src(r#"{"namespaces": ["front*"]}"#), SAME, None, P0),
        row("namespace suffix", src(r#"{"namespaces": ["*end"]}"#), SAME, None, P0),
        row("namespace infix wildcard", src(r#"{"namespaces": ["f*d"]}"#), SAME, None, P0),
        row("namespace without mTLS", src(r#"{"namespaces": ["frontend"]}"#), |r| r.source_principal = None, None, NoMatch),
        row("notNamespaces excludes", src(r#"{"notNamespaces": ["frontend"]}"#), SAME, None, NoMatch),
        row("source.namespace condition", when("source.namespace", r#"["backend", "frontend"]"#), SAME, None, P0),

        // --- IP blocks --------------------------------------------------------------------------
        row("remoteIpBlocks CIDR", src(r#"{"remoteIpBlocks": ["203.0.113.0/24"]}"#), SAME, None, P0),
        row("remoteIpBlocks single IP", src(r#"{"remoteIpBlocks": ["203.0.113.7"]}"#), SAME, None, P0),
        row("remoteIpBlocks other CIDR", src(r#"{"remoteIpBlocks": ["203.0.114.0/24"]}"#), SAME, None, NoMatch),
        row("remoteIpBlocks host bits are masked", src(r#"{"remoteIpBlocks": ["203.0.113.77/24"]}"#), SAME, None, P0),
        row("remoteIpBlocks 0.0.0.0/0", src(r#"{"remoteIpBlocks": ["0.0.0.0/0"]}"#), SAME, None, P0),
        row("remoteIpBlocks IPv6", src(r#"{"remoteIpBlocks": ["2001:db8::/32"]}"#), |r| r.remote_ip = "2001:db8::1".parse().ok(), None, P0),
        row("IPv4 block never matches IPv6", src(r#"{"remoteIpBlocks": ["0.0.0.0/0"]}"#), |r| r.remote_ip = "2001:db8::1".parse().ok(), None, NoMatch),
        row("notRemoteIpBlocks excludes", src(r#"{"notRemoteIpBlocks": ["203.0.0.0/8"]}"#), SAME, None, NoMatch),
        row("remoteIpBlocks other network", src(r#"{"remoteIpBlocks": ["10.0.0.0/8"]}"#), SAME, None, NoMatch),
        row("no remote address matches no block", src(r#"{"remoteIpBlocks": ["0.0.0.0/0"]}"#), |r| r.remote_ip = None, None, NoMatch),
        row("ipBlocks refused (direct peer not exposed to Wasm)", src(r#"{"ipBlocks": ["10.0.0.0/24"]}"#), SAME, None,
            Invalid("policies[0].rules[0].from[0].source.ipBlocks", "direct peer address")),
        row("notIpBlocks refused", src(r#"{"notIpBlocks": ["10.0.0.0/8"]}"#), SAME, None,
            Invalid("policies[0].rules[0].from[0].source.notIpBlocks", "direct peer address")),
        row("source.ip refused", when("source.ip", r#"["10.0.0.5"]"#), SAME, None,
            Invalid("policies[0].rules[0].when[0].key", "direct peer address")),
        row("remote.ip condition", when("remote.ip", r#"["203.0.113.0/24"]"#), SAME, None, P0),
        row("remote.ip notValues", when_not("remote.ip", r#"["203.0.113.7"]"#), SAME, None, NoMatch),
        row("destination.ip condition", when("destination.ip", r#"["10.0.1.0/28"]"#), SAME, None, P0),

        // --- request principals ----------------------------------------------------------------
        row("requestPrincipals * with a JWT", src(r#"{"requestPrincipals": ["*"]}"#), SAME, T, P0),
        row("requestPrincipals * without a JWT", src(r#"{"requestPrincipals": ["*"]}"#), SAME, None, NoMatch),
        row("requestPrincipals * needs a sub", src(r#"{"requestPrincipals": ["*"]}"#), SAME, Some(TOKEN_NO_SUB), NoMatch),
        row("requestPrincipals exact iss/sub (split at the last /)",
            src(r#"{"requestPrincipals": ["http://keycloak.keycloak.svc.cluster.local/realms/myrealm/user-1"]}"#), SAME, T, P0),
        row("requestPrincipals wrong sub", src(r#"{"requestPrincipals": ["http://keycloak.keycloak.svc.cluster.local/realms/myrealm/user-2"]}"#),
            SAME, T, NoMatch),
        row("requestPrincipals iss/*", src(r#"{"requestPrincipals": ["http://keycloak.keycloak.svc.cluster.local/realms/myrealm/*"]}"#), SAME, T, P0),
        row("requestPrincipals */sub", src(r#"{"requestPrincipals": ["*/user-1"]}"#), SAME, T, P0),
        row("requestPrincipals *issuer-suffix/sub", src(r#"{"requestPrincipals": ["*/realms/myrealm/user-1"]}"#), SAME, T, P0),
        row("requestPrincipals iss/sub-prefix*", src(r#"{"requestPrincipals": ["http://keycloak.keycloak.svc.cluster.local/realms/myrealm/user*"]}"#),
            SAME, T, P0),
        row("requestPrincipals *sub-suffix without /", src(r#"{"requestPrincipals": ["*user-1"]}"#), SAME, T, P0),
        row("requestPrincipals iss-prefix* without /", src(r#"{"requestPrincipals": ["http:*"]}"#), SAME, T, P0),
        row("requestPrincipals other realm", src(r#"{"requestPrincipals": ["http://keycloak.keycloak.svc.cluster.local/realms/other/*"]}"#),
            SAME, T, NoMatch),
        row("DENY notRequestPrincipals * denies a request without JWT",
            deny(r#"{"from": [{"source": {"notRequestPrincipals": ["*"]}}]}"#), SAME, None, Deny("d", 0)),
        row("DENY notRequestPrincipals * lets a JWT through",
            deny(r#"{"from": [{"source": {"notRequestPrincipals": ["*"]}}]}"#), SAME, T, Allow(None)),
        row("request.auth.principal is split like requestPrincipals",
            when("request.auth.principal", r#"["http://keycloak.keycloak.svc.cluster.local/realms/myrealm/user-1"]"#), SAME, T, P0),
        row("request.auth.principal * needs a JWT", when("request.auth.principal", r#"["*"]"#), SAME, None, NoMatch),

        // --- the reference policy ---------------------------------------------------------------
        row("reference: GET with the good token", REFERENCE, SAME, T, Allow(Some(("require-jwt", 0)))),
        row("reference: POST is denied", REFERENCE, |r| r.method = "POST".into(), T, NoMatch),
        row("reference: no token is denied", REFERENCE, SAME, None, NoMatch),
        row("reference: wrong email is denied", REFERENCE, SAME, Some(TOKEN_WRONG_EMAIL), NoMatch),
        row("reference: aud list containing the client", REFERENCE, SAME, Some(TOKEN_AUD_LIST), Allow(Some(("require-jwt", 0)))),
        row("reference: aud list without the client", REFERENCE, SAME, Some(TOKEN_AUD_OTHER), NoMatch),

        // --- claims -----------------------------------------------------------------------------
        row("Keycloak realm role", when("request.auth.claims[realm_access][roles]", r#"["admin"]"#), SAME, T, P0),
        row("Keycloak realm role missing", when("request.auth.claims[realm_access][roles]", r#"["admin"]"#), SAME, Some(TOKEN_NO_ROLES), NoMatch),
        row("Keycloak client role", when("request.auth.claims[resource_access][my-client][roles]", r#"["reader"]"#), SAME, T, P0),
        row("Keycloak client role of another client", when("request.auth.claims[resource_access][other][roles]", r#"["reader"]"#), SAME, T, NoMatch),
        row("claim name with dots and slashes", when("request.auth.claims[foo.com/tier]", r#"["gold"]"#), SAME, T, P0),
        row("scope is split on spaces", when("request.auth.claims[scope]", r#"["orders:read"]"#), SAME, T, P0),
        row("split scope no longer matches the whole string", when("request.auth.claims[scope]", r#"["openid orders:read"]"#), SAME, T, NoMatch),
        row("permission is split on spaces", when("request.auth.claims[permission]", r#"["write"]"#), SAME, T, P0),
        row("other string claims are not split", when("request.auth.claims[title]", r#"["ops"]"#), SAME, T, NoMatch),
        row("list claim element", when("request.auth.claims[groups]", r#"["/ops"]"#), SAME, T, P0),
        row("list claim element prefix", when("request.auth.claims[realm_access][roles]", r#"["adm*"]"#), SAME, T, P0),
        row("number claim never matches", when("request.auth.claims[age]", r#"["42"]"#), SAME, T, NoMatch),
        row("bool claim never matches", when("request.auth.claims[email_verified]", r#"["true"]"#), SAME, T, NoMatch),
        row("object claim never matches *", when("request.auth.claims[org]", r#"["*"]"#), SAME, T, NoMatch),
        row("claim prefix", when("request.auth.claims[email]", r#"["user@*"]"#), SAME, T, P0),
        row("claim suffix", when("request.auth.claims[email]", r#"["*@example.com"]"#), SAME, T, P0),
        row("claim * present", when("request.auth.claims[email]", r#"["*"]"#), SAME, T, P0),
        row("claim * absent", when("request.auth.claims[phone]", r#"["*"]"#), SAME, T, NoMatch),
        row("claim * empty string", when("request.auth.claims[nickname]", r#"["*"]"#), SAME, T, NoMatch),
        row("claim path through a string", when("request.auth.claims[email][domain]", r#"["*"]"#), SAME, T, NoMatch),
        row("claim notValues without JWT match", when_not("request.auth.claims[email]", r#"["user@example.com"]"#), SAME, None, P0),
        row("claim notValues excludes", when_not("request.auth.claims[email]", r#"["user@example.com"]"#), SAME, T, NoMatch),
        row("claim values without JWT", when("request.auth.claims[email]", r#"["*"]"#), SAME, None, NoMatch),
        row("audiences string", when("request.auth.audiences", r#"["my-backend-client"]"#), SAME, T, P0),
        row("audiences list element", when("request.auth.audiences", r#"["my-backend-client"]"#), SAME, Some(TOKEN_AUD_LIST), P0),
        row("audiences mismatch", when("request.auth.audiences", r#"["my-backend-client"]"#), SAME, Some(TOKEN_AUD_OTHER), NoMatch),
        row("presenter is azp", when("request.auth.presenter", r#"["web-app"]"#), SAME, T, P0),
        row("presenter mismatch", when("request.auth.presenter", r#"["my-backend-client"]"#), SAME, T, NoMatch),

        // --- headers and SNI --------------------------------------------------------------------
        row("header name is case-insensitive", when("request.headers[User-Agent]", r#"["curl*"]"#), SAME, None, P0),
        row("header value is case-sensitive", when("request.headers[x-tenant]", r#"["ACME"]"#), SAME, None, NoMatch),
        row("missing header", when("request.headers[x-missing]", r#"["*"]"#), SAME, None, NoMatch),
        row("missing header satisfies notValues", when_not("request.headers[x-missing]", r#"["x"]"#), SAME, None, P0),
        row("header * is presence, empty value included", when("request.headers[x-empty]", r#"["*"]"#), SAME, None, P0),
        row("repeated header values are joined with ,", when("request.headers[x-forwarded-for]", r#"["1.1.1.1,2.2.2.2"]"#),
            |r| r.headers.extend([("x-forwarded-for".into(), "1.1.1.1".into()), ("x-forwarded-for".into(), "2.2.2.2".into())]), None, P0),
        row("pseudo-header :method", when("request.headers[:method]", r#"["GET"]"#), SAME, None, P0),
        row("connection.sni exact", when("connection.sni", r#"["api.example.com"]"#), SAME, None, P0),
        row("connection.sni suffix", when("connection.sni", r#"["*.example.com"]"#), SAME, None, P0),
        row("connection.sni without TLS", when("connection.sni", r#"["*"]"#), |r| r.sni = None, None, NoMatch),

        // --- compile errors (stricter than Istio: refuse instead of skipping) -------------------
        row("unknown when key", when("request.foo", r#"["x"]"#), SAME, None,
            Invalid("policies[0].rules[0].when[0].key", "unknown condition key \"request.foo\"")),
        row("unsupported Istio key", when("source.serviceAccount", r#"["ns/sa"]"#), SAME, None,
            Invalid("policies[0].rules[0].when[0].key", "not supported")),
        row("empty when key", when("", r#"["x"]"#), SAME, None, Invalid("policies[0].rules[0].when[0].key", "must not be empty")),
        row("claims key without brackets", when("request.auth.claims", r#"["x"]"#), SAME, None,
            Invalid("policies[0].rules[0].when[0].key", "bad condition key")),
        row("claims key with an empty name", when("request.auth.claims[]", r#"["x"]"#), SAME, None,
            Invalid("policies[0].rules[0].when[0].key", "bad condition key")),
        row("claims key with trailing junk", when("request.auth.claims[a]b", r#"["x"]"#), SAME, None,
            Invalid("policies[0].rules[0].when[0].key", "bad condition key")),
        row("header key with two names", when("request.headers[a][b]", r#"["x"]"#), SAME, None,
            Invalid("policies[0].rules[0].when[0].key", "bad condition key")),
        row("when without values", allow(r#"{"when": [{"key": "remote.ip"}]}"#), SAME, None,
            Invalid("policies[0].rules[0].when[0]", "at least one of `values` or `notValues`")),
        row("error paths carry rule and condition indexes",
            allow(r#"{}, {"when": [{"key": "remote.ip", "values": ["10.0.0.1"]}, {"key": "request.nope", "values": ["x"]}]}"#), SAME, None,
            Invalid("policies[0].rules[1].when[1].key", "unknown condition key")),
        row("bad CIDR", src(r#"{"remoteIpBlocks": ["10.0.0.0/33"]}"#), SAME, None,
            Invalid("policies[0].rules[0].from[0].source.remoteIpBlocks[0]", "prefix length")),
        row("bad IP", src(r#"{"notRemoteIpBlocks": ["10.0.0.0/8", "10.0.0.256"]}"#), SAME, None,
            Invalid("policies[0].rules[0].from[0].source.notRemoteIpBlocks[1]", "bad IP address")),
        row("bad IP in a condition", when("remote.ip", r#"["not-an-ip"]"#), SAME, None,
            Invalid("policies[0].rules[0].when[0].values[0]", "bad IP address")),
        row("bad port", op(r#"{"ports": ["80a"]}"#), SAME, None, Invalid("policies[0].rules[0].to[0].operation.ports[0]", "bad port")),
        row("port out of range", op(r#"{"notPorts": ["70000"]}"#), SAME, None, Invalid("policies[0].rules[0].to[0].operation.notPorts[0]", "bad port")),
        row("signed port", when("destination.port", r#"["+80"]"#), SAME, None, Invalid("policies[0].rules[0].when[0].values[0]", "bad port")),
        row("{**} not last", op(r#"{"paths": ["/a/{**}/{*}"]}"#), SAME, None,
            Invalid("policies[0].rules[0].to[0].operation.paths[0]", "must be the last operator")),
        row("template with extra characters in the segment", op(r#"{"paths": ["/foo/{*}.txt"]}"#), SAME, None,
            Invalid("policies[0].rules[0].to[0].operation.paths[0]", "outside a {*} or {**}")),
        row("template with a bare *", op(r#"{"paths": ["/*/baz/{*}"]}"#), SAME, None,
            Invalid("policies[0].rules[0].to[0].operation.paths[0]", "not a valid literal")),
        row("template with '*' in a literal", op(r#"{"notPaths": ["/a*b/{*}"]}"#), SAME, None,
            Invalid("policies[0].rules[0].to[0].operation.notPaths[0]", "not a valid literal")),
        row("template without leading /", op(r#"{"paths": ["api/{*}"]}"#), SAME, None,
            Invalid("policies[0].rules[0].to[0].operation.paths[0]", "must start with '/'")),
        row("braces outside a template", op(r#"{"paths": ["/users/{id}"]}"#), SAME, None,
            Invalid("policies[0].rules[0].to[0].operation.paths[0]", "outside a {*} or {**}")),
        row("empty value", op(r#"{"methods": ["GET", ""]}"#), SAME, None,
            Invalid("policies[0].rules[0].to[0].operation.methods[1]", "empty value")),
        row("empty policy name", r#"[{"name": "", "rules": [{}]}]"#, SAME, None, Invalid("policies[0].name", "must not be empty")),
        row("duplicate policy name", r#"[{"name": "x", "rules": [{}]}, {"name": "x", "action": "DENY", "rules": [{}]}]"#, SAME, None,
            Invalid("policies[1].name", "duplicate policy name \"x\" (also policies[0])")),
        row("reserved policy name", r#"[{"name": "<no-allow-match>", "rules": [{}]}]"#, SAME, None, Invalid("policies[0].name", "reserved")),
        row("CUSTOM action", r#"[{"name": "c", "action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]}]"#, SAME, None,
            Invalid("policies[0].action", "CUSTOM")),
        row("provider without CUSTOM", r#"[{"name": "p", "provider": {"name": "ext"}, "rules": [{}]}]"#, SAME, None,
            Invalid("policies[0].provider", "only valid with the CUSTOM action")),
        row("DENY without rules", r#"[{"name": "d", "action": "DENY"}]"#, SAME, None, Invalid("policies[0].rules", "never matches")),
        row("empty from list", allow(r#"{"from": []}"#), SAME, None, Invalid("policies[0].rules[0].from", "must not be empty")),
        row("from without source", allow(r#"{"from": [{}]}"#), SAME, None, Invalid("policies[0].rules[0].from[0].source", "must be set")),
        row("empty source", allow(r#"{"from": [{"source": {}}]}"#), SAME, None, Invalid("policies[0].rules[0].from[0].source", "must not be empty")),
        row("empty to list", allow(r#"{"to": []}"#), SAME, None, Invalid("policies[0].rules[0].to", "must not be empty")),
        row("to without operation", allow(r#"{"to": [{}]}"#), SAME, None, Invalid("policies[0].rules[0].to[0].operation", "must be set")),
        row("empty operation", allow(r#"{"to": [{"operation": {"notHosts": []}}]}"#), SAME, None,
            Invalid("policies[0].rules[0].to[0].operation", "must not be empty")),
        row("errors in a later policy", r#"[{"name": "a", "rules": [{}]}, {"name": "b", "rules": [{"to": [{"operation": {"ports": ["x"]}}]}]}]"#,
            SAME, None, Invalid("policies[1].rules[0].to[0].operation.ports[0]", "bad port")),
        row("unknown field is rejected", allow(r#"{"from": [{"source": {"principal": ["x"]}}]}"#), SAME, None, Parse("unknown field `principal`")),
        row("unknown action is rejected", r#"[{"name": "p", "action": "REJECT"}]"#, SAME, None, Parse("unknown variant `REJECT`")),
        row("integer ports are rejected like the Istio CRD", op(r#"{"ports": [8080]}"#), SAME, None, Parse("invalid type")),
    ]
}

fn check(row: &Row) -> Result<(), String> {
    let configs: Vec<PolicyConfig> = match serde_json::from_str(&row.policies) {
        Ok(c) => c,
        Err(e) => {
            return match row.want {
                Parse(frag) if e.to_string().contains(frag) => Ok(()),
                _ => Err(format!("parse error {e}")),
            };
        }
    };
    let policies = match (compile(&configs, "policies"), &row.want) {
        (Err(errs), Invalid(path, frag)) => {
            return match errs.as_slice() {
                [e] if e.path == *path && e.message.contains(frag) => Ok(()),
                _ => Err(format!("errors {errs:?}")),
            };
        }
        (Err(errs), _) => return Err(format!("errors {errs:?}")),
        (Ok(p), _) => p,
    };
    let mut req = base_request();
    (row.req)(&mut req);
    let id = row.token.map(identity);
    let got = policies.evaluate(&req, id.as_ref()).decision;
    // The adapter reads only the connection properties the policies need; a request without the
    // others must decide the same. (This second evaluation also reads the token-only outcomes
    // the first one kept in the identity's memo.)
    let needs = policies.connection_needs();
    let mut lazy = req.clone();
    if !needs.remote_ip {
        lazy.remote_ip = None;
    }
    if !needs.destination {
        (lazy.destination_ip, lazy.destination_port) = (None, None);
    }
    if !needs.source_principal {
        lazy.source_principal = None;
    }
    if !needs.sni {
        lazy.sni = None;
    }
    let lazy_got = policies.evaluate(&lazy, id.as_ref()).decision;
    if lazy_got != got {
        return Err(format!(
            "without unneeded properties {lazy_got:?}, with {got:?}"
        ));
    }
    let rule_ref = |p: &str, r: Option<usize>| RuleRef {
        policy: Rc::from(p),
        rule: r,
    };
    let want = match row.want {
        Allow(None) => AuthzDecision::Allow { by: None },
        Allow(Some((p, r))) => AuthzDecision::Allow {
            by: Some(rule_ref(p, Some(r))),
        },
        Deny(p, r) => AuthzDecision::Deny {
            by: rule_ref(p, Some(r)),
        },
        NoMatch => AuthzDecision::Deny {
            by: rule_ref(NO_ALLOW_MATCH, None),
        },
        Invalid(..) | Parse(..) => return Err(format!("compiled, decided {got:?}")),
    };
    if got == want {
        Ok(())
    } else {
        Err(format!("got {got:?}, want {want:?}"))
    }
}

#[test]
fn semantics_table() {
    let rows = rows();
    assert!(rows.len() >= 100, "only {} rows", rows.len());
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|r| check(r).err().map(|e| format!("{}: {e}", r.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn token_only_conditions_are_evaluated_once_per_identity_and_policy_set() {
    let policies = compiled(&allow(
        r#"{"to": [{"operation": {"methods": ["GET"]}}],
            "when": [{"key": "request.auth.claims[email]", "values": ["user@example.com"]},
                     {"key": "request.auth.principal", "values": ["http://keycloak.keycloak.svc.cluster.local/realms/myrealm/user-1"]}]}"#,
    ));
    let id = identity(TOKEN);
    let mut post = base_request();
    post.method = "POST".into();
    assert_eq!(
        policies.evaluate(&base_request(), Some(&id)).decision,
        AuthzDecision::Allow {
            by: Some(RuleRef {
                policy: Rc::from("p"),
                rule: Some(0)
            })
        }
    );
    assert_eq!(
        id.memo.known(),
        2,
        "the two token-only conditions, not the method"
    );
    assert!(
        matches!(
            policies.evaluate(&post, Some(&id)).decision,
            AuthzDecision::Deny { .. }
        ),
        "the method is evaluated for every request"
    );
    assert!(matches!(
        policies.evaluate(&base_request(), Some(&id)).decision,
        AuthzDecision::Allow { .. }
    ));

    // Another set numbers its conditions from 0 too: its outcomes are not read from the first's.
    let other = compiled(&when(
        "request.auth.claims[email]",
        r#"["someone@else.com"]"#,
    ));
    assert!(matches!(
        other.evaluate(&base_request(), Some(&id)).decision,
        AuthzDecision::Deny { .. }
    ));
    assert_eq!(id.memo.known(), 1);
    assert!(matches!(
        policies.evaluate(&base_request(), Some(&id)).decision,
        AuthzDecision::Allow { .. }
    ));
}

#[test]
fn token_only_conditions_past_the_memo_slots_are_evaluated_each_time() {
    // 70 `when` conditions that read only the token; the last one does not match.
    let mut conds: Vec<String> = (0..69)
        .map(|_| r#"{"key": "request.auth.claims[sub]", "values": ["user-1"]}"#.to_string())
        .collect();
    conds.push(r#"{"key": "request.auth.claims[sub]", "values": ["user-2"]}"#.to_string());
    let policies = compiled(&allow(&format!(r#"{{"when": [{}]}}"#, conds.join(","))));
    let id = identity(TOKEN);
    for _ in 0..2 {
        assert!(matches!(
            policies.evaluate(&base_request(), Some(&id)).decision,
            AuthzDecision::Deny { .. }
        ));
    }
    assert_eq!(id.memo.known(), u32::from(PolicyMemo::SLOTS));
}

#[test]
fn connection_needs_follow_the_rules() {
    let needs = |json: &str| compiled(json).connection_needs();
    assert_eq!(
        needs(REFERENCE),
        ConnectionNeeds::default(),
        "JWT/header rules need no property"
    );
    assert!(needs(&src(r#"{"remoteIpBlocks": ["10.0.0.0/8"]}"#)).remote_ip);
    assert!(needs(&src(r#"{"notPrincipals": ["cluster.local/ns/a/sa/b"]}"#)).source_principal);
    assert!(needs(&src(r#"{"namespaces": ["a"]}"#)).source_principal);
    assert!(needs(&op(r#"{"ports": ["8080"]}"#)).destination);
    assert!(needs(&when_not("destination.ip", r#"["10.0.0.1"]"#)).destination);
    assert!(needs(&when("connection.sni", r#"["a.example.com"]"#)).sni);
    let dry = r#"[{"name": "p", "dryRun": true, "rules": [{"when": [{"key": "remote.ip", "values": ["10.0.0.1"]}]}]}]"#;
    assert!(needs(dry).remote_ip, "dry-run policies are evaluated too");
}

#[test]
fn row_names_are_unique() {
    let rows = rows();
    let mut names: Vec<&str> = rows.iter().map(|r| r.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len());
}

fn compiled(json: &str) -> Policies {
    compile(
        &serde_json::from_str::<Vec<PolicyConfig>>(json).unwrap(),
        "policies",
    )
    .unwrap()
}

#[test]
fn audit_matches_are_reported_without_changing_the_decision() {
    let p = compiled(
        r#"[{"name": "a1", "action": "AUDIT", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}, {}]},
            {"name": "a2", "action": "AUDIT", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]},
            {"name": "d", "action": "DENY", "rules": [{}]}]"#,
    );
    let res = p.evaluate(&base_request(), None);
    assert_eq!(
        res.decision,
        AuthzDecision::Deny {
            by: RuleRef {
                policy: Rc::from("d"),
                rule: Some(0)
            }
        }
    );
    assert_eq!(
        res.audit_matches,
        vec![RuleRef {
            policy: Rc::from("a1"),
            rule: Some(1)
        }]
    );
    assert!(res.dry_run.is_empty());
}

#[test]
fn dry_run_policies_are_reported() {
    let p = compiled(
        r#"[{"name": "dd", "action": "DENY", "dryRun": true, "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}, {}]},
            {"name": "da", "dryRun": true, "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]},
            {"name": "p", "rules": [{}]}]"#,
    );
    let res = p.evaluate(&base_request(), None);
    assert!(res.is_allowed());
    assert_eq!(
        res.dry_run,
        vec![
            DryRunOutcome {
                policy: Rc::from("dd"),
                action: Action::Deny,
                matched: true,
                rule: Some(1)
            },
            DryRunOutcome {
                policy: Rc::from("da"),
                action: Action::Allow,
                matched: false,
                rule: None
            },
        ]
    );
    assert!(res.audit_matches.is_empty());
}

#[test]
fn names_and_emptiness() {
    assert!(compiled("[]").is_empty());
    let p = compiled(r#"[{"name": "b", "dryRun": true, "rules": [{}]}, {"name": "a"}]"#);
    assert!(!p.is_empty());
    assert_eq!(p.names().collect::<Vec<_>>(), ["b", "a"]);
}

#[test]
fn all_errors_are_reported() {
    let configs: Vec<PolicyConfig> = serde_json::from_str(
        r#"[{"name": "", "action": "CUSTOM"},
            {"name": "p", "rules": [{"when": [{"key": "a.b", "values": ["x"]}], "to": [{"operation": {"ports": ["-1"]}}]}]}]"#,
    )
    .unwrap();
    let errs = compile(&configs, "cfg.policies").unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "cfg.policies[0].name",
            "cfg.policies[0].action",
            "cfg.policies[1].rules[0].to[0].operation.ports[0]",
            "cfg.policies[1].rules[0].when[0].key"
        ]
    );
    assert_eq!(
        errs[3].to_string(),
        "cfg.policies[1].rules[0].when[0].key: unknown condition key \"a.b\""
    );
}

/// The reference policy as users write it: the YAML of the shipped WasmPlugin
/// (istio/meshgate/wasmplugin-backend.yaml), read with the converter's YAML reader (Kubernetes' scalar
/// resolution), is the JSON `REFERENCE` the table rows use, and decides the same. Needs the YAML reader:
/// `cargo test --features cli --lib` (`make test` runs it).
#[cfg(feature = "cli")]
#[test]
fn reference_policy_yaml_shape_round_trips() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/istio/meshgate/wasmplugin-backend.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let docs = crate::convert::yaml::parse_stream(&text).unwrap();
    let [doc] = docs.as_slice() else {
        panic!(
            "{path}: one WasmPlugin expected, found {} documents",
            docs.len()
        )
    };
    let policies = doc.value["spec"]["pluginConfig"]["policies"].clone();
    let from_yaml = Value::Array(vec![policies[0].clone()]);
    let mut want: Value = serde_json::from_str(REFERENCE).unwrap();
    want[0]["name"] = Value::from("reference-policy");
    assert_eq!(from_yaml, want);
    // The second ALLOW policy admits only the frontend's service account from the frontend's workload
    // (issue "egress"); the decisions below are those of both policies together.
    assert_eq!(policies[1]["name"], "frontend-service-account");
    assert_eq!(policies.as_array().map(Vec::len), Some(2));
    // the issuer the policy requires is the one the plugin's jwtRule verifies
    assert_eq!(
        doc.value["spec"]["pluginConfig"]["jwtRules"][0]["issuer"],
        want[0]["rules"][0]["when"][0]["values"][0]
    );

    let yaml = compile(
        &serde_json::from_value::<Vec<PolicyConfig>>(policies).unwrap(),
        "policies",
    )
    .unwrap();
    let json = compiled(REFERENCE);
    for (method, token, allowed) in [
        ("GET", Some(TOKEN), true),
        ("GET", Some(TOKEN_AUD_LIST), true),
        ("POST", Some(TOKEN), false),
        ("GET", None, false),
        ("GET", Some(TOKEN_WRONG_EMAIL), false),
        ("GET", Some(TOKEN_AUD_OTHER), false),
    ] {
        let mut req = base_request();
        req.method = method.into();
        let id = token.map(identity);
        let (y, j) = (
            yaml.evaluate(&req, id.as_ref()).decision,
            json.evaluate(&req, id.as_ref()).decision,
        );
        let case = format!("{method} {token:?}");
        if allowed {
            let by = |policy: &str| AuthzDecision::Allow {
                by: Some(RuleRef {
                    policy: Rc::from(policy),
                    rule: Some(0),
                }),
            };
            assert_eq!(y, by("reference-policy"), "{case}");
            assert_eq!(j, by("require-jwt"), "{case}");
        } else {
            let none = AuthzDecision::Deny {
                by: RuleRef {
                    policy: Rc::from(NO_ALLOW_MATCH),
                    rule: None,
                },
            };
            assert_eq!((&y, &j), (&none, &none), "{case}");
        }
    }
}
