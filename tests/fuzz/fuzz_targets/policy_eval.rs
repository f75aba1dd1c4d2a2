//! AuthorizationPolicy compile + evaluation on structured input (`arbitrary`): policies built from
//! a vocabulary that makes matches likely (plus raw strings), a request and an optional verified
//! identity. Beyond "no panic": evaluation is deterministic, dry-run copies of the policies never
//! change the decision or the audit matches, and a catch-all DENY always denies.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use meshgate::authz::{
    compile, Action, AuthzDecision, ConditionConfig, FromConfig, OperationConfig, PolicyConfig,
    RuleConfig, SourceConfig, ToConfig,
};
use meshgate::identity::{Identity, PolicyMemo};
use meshgate::request::RequestAttrs;
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

const WORDS: &[&str] = &[
    "GET",
    "POST",
    "DELETE",
    "/data",
    "/api/v1/items",
    "/api",
    "/a/{*}/c",
    "/{**}",
    "/a/b/c",
    "backend",
    "backend:8080",
    "example.com",
    "alice",
    "bob",
    "user",
    "admin",
    "reader",
    "my-backend-client",
    "account",
    "demo-cli",
    "https://kc/realms/r",
    "https://kc/realms/r/u-1",
    "u-1",
    "ns1",
    "cluster.local/ns/ns1/sa/sa1",
    "spiffe://cluster.local/ns/ns1/sa/sa1",
    "10.0.0.1",
    "10.0.0.0/8",
    "192.168.1.7",
    "8080",
    "80",
    "x-role",
    "x-user",
    "realm_access",
    "roles",
    "scope",
    "openid email",
    "email",
    "a@b.c",
    "",
    "*",
];

#[derive(Arbitrary, Debug)]
enum Val {
    Word(u8),
    Prefix(u8),
    Suffix(u8),
    Star,
    Raw(String),
}

impl Val {
    fn text(&self) -> String {
        let w = |i: &u8| WORDS[*i as usize % WORDS.len()];
        match self {
            Val::Word(i) => w(i).to_string(),
            Val::Prefix(i) => format!("{}*", w(i)),
            Val::Suffix(i) => format!("*{}", w(i)),
            Val::Star => "*".into(),
            Val::Raw(s) => s.clone(),
        }
    }
}

fn texts(vals: &[Val]) -> Vec<String> {
    vals.iter().take(4).map(Val::text).collect()
}

#[derive(Arbitrary, Debug)]
struct Source {
    principals: Vec<Val>,
    not_principals: Vec<Val>,
    request_principals: Vec<Val>,
    not_request_principals: Vec<Val>,
    namespaces: Vec<Val>,
    not_namespaces: Vec<Val>,
    remote_ip_blocks: Vec<Val>,
    not_remote_ip_blocks: Vec<Val>,
}

#[derive(Arbitrary, Debug)]
struct Operation {
    hosts: Vec<Val>,
    not_hosts: Vec<Val>,
    ports: Vec<Val>,
    not_ports: Vec<Val>,
    methods: Vec<Val>,
    not_methods: Vec<Val>,
    paths: Vec<Val>,
    not_paths: Vec<Val>,
}

#[derive(Arbitrary, Debug)]
enum Key {
    Header(Val),
    Claim(Vec<Val>),
    Principal,
    Audiences,
    Presenter,
    SourceNamespace,
    SourcePrincipal,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    Sni,
    Raw(String),
}

impl Key {
    fn text(&self) -> String {
        match self {
            Key::Header(v) => format!("request.headers[{}]", v.text()),
            Key::Claim(path) => {
                let mut k = "request.auth.claims".to_string();
                for v in path.iter().take(3) {
                    k.push_str(&format!("[{}]", v.text()));
                }
                k
            }
            Key::Principal => "request.auth.principal".into(),
            Key::Audiences => "request.auth.audiences".into(),
            Key::Presenter => "request.auth.presenter".into(),
            Key::SourceNamespace => "source.namespace".into(),
            Key::SourcePrincipal => "source.principal".into(),
            Key::RemoteIp => "remote.ip".into(),
            Key::DestinationIp => "destination.ip".into(),
            Key::DestinationPort => "destination.port".into(),
            Key::Sni => "connection.sni".into(),
            Key::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Condition {
    key: Key,
    values: Vec<Val>,
    not_values: Vec<Val>,
}

#[derive(Arbitrary, Debug)]
struct Rule {
    from: Option<Vec<Source>>,
    to: Option<Vec<Operation>>,
    when: Vec<Condition>,
}

#[derive(Arbitrary, Debug)]
struct Policy {
    action: u8,
    dry_run: bool,
    rules: Option<Vec<Rule>>,
}

#[derive(Arbitrary, Debug)]
enum Claim {
    Str(Val),
    List(Vec<Val>),
    Num(i64),
    Bool(bool),
    Object(Vec<(Val, Val)>),
}

impl Claim {
    fn value(&self) -> Value {
        match self {
            Claim::Str(v) => Value::String(v.text()),
            Claim::List(vs) => Value::Array(texts(vs).into_iter().map(Value::String).collect()),
            Claim::Num(n) => Value::from(*n),
            Claim::Bool(b) => Value::Bool(*b),
            Claim::Object(members) => Value::Object(
                members
                    .iter()
                    .take(4)
                    .map(|(k, v)| (k.text(), Value::Array(vec![Value::String(v.text())])))
                    .collect(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Token {
    iss: Val,
    sub: Val,
    aud: Vec<Val>,
    azp: Option<Val>,
    claims: Vec<(Val, Claim)>,
}

#[derive(Arbitrary, Debug)]
struct Request {
    method: Val,
    path: Val,
    query: Option<Val>,
    host: Val,
    headers: Vec<(Val, Val)>,
    remote_ip: Option<[u8; 4]>,
    destination_ip: Option<[u8; 4]>,
    destination_port: Option<u16>,
    source_principal: Option<Val>,
    sni: Option<Val>,
    token: Option<Token>,
}

#[derive(Arbitrary, Debug)]
struct Case {
    policies: Vec<Policy>,
    request: Request,
}

fn source(s: &Source) -> SourceConfig {
    SourceConfig {
        principals: texts(&s.principals),
        not_principals: texts(&s.not_principals),
        request_principals: texts(&s.request_principals),
        not_request_principals: texts(&s.not_request_principals),
        namespaces: texts(&s.namespaces),
        not_namespaces: texts(&s.not_namespaces),
        remote_ip_blocks: texts(&s.remote_ip_blocks),
        not_remote_ip_blocks: texts(&s.not_remote_ip_blocks),
        ..SourceConfig::default()
    }
}

fn operation(o: &Operation) -> OperationConfig {
    OperationConfig {
        hosts: texts(&o.hosts),
        not_hosts: texts(&o.not_hosts),
        ports: texts(&o.ports),
        not_ports: texts(&o.not_ports),
        methods: texts(&o.methods),
        not_methods: texts(&o.not_methods),
        paths: texts(&o.paths),
        not_paths: texts(&o.not_paths),
    }
}

fn rule(r: &Rule) -> RuleConfig {
    RuleConfig {
        from: r.from.as_ref().map(|f| {
            f.iter()
                .take(3)
                .map(|s| FromConfig {
                    source: Some(source(s)),
                })
                .collect()
        }),
        to: r.to.as_ref().map(|t| {
            t.iter()
                .take(3)
                .map(|o| ToConfig {
                    operation: Some(operation(o)),
                })
                .collect()
        }),
        when: r
            .when
            .iter()
            .take(4)
            .map(|c| ConditionConfig {
                key: c.key.text(),
                values: texts(&c.values),
                not_values: texts(&c.not_values),
            })
            .collect(),
    }
}

fn policy(i: usize, p: &Policy, name: &str, dry_run: bool) -> PolicyConfig {
    PolicyConfig {
        name: format!("{name}{i}"),
        action: match p.action % 3 {
            0 => Action::Allow,
            1 => Action::Deny,
            _ => Action::Audit,
        },
        rules: p
            .rules
            .as_ref()
            .map(|rs| rs.iter().take(4).map(rule).collect()),
        dry_run,
        provider: None,
    }
}

fn request(r: &Request) -> RequestAttrs {
    let ip = |b: &Option<[u8; 4]>| b.map(|b| IpAddr::V4(Ipv4Addr::from(b)));
    let mut path = r.path.text();
    if let Some(q) = &r.query {
        path = format!("{path}?{}", q.text());
    }
    RequestAttrs {
        method: r.method.text(),
        path,
        host: r.host.text(),
        scheme: "http".into(),
        headers: r
            .headers
            .iter()
            .take(6)
            .map(|(k, v)| (k.text().to_ascii_lowercase(), v.text()))
            .collect(),
        remote_ip: ip(&r.remote_ip),
        destination_ip: ip(&r.destination_ip),
        destination_port: r.destination_port,
        source_principal: r.source_principal.as_ref().map(Val::text),
        sni: r.sni.as_ref().map(Val::text),
        // Policies judge the requests a workload receives.
        outbound: false,
    }
}

fn identity(t: &Token) -> Identity {
    let mut claims = Map::new();
    for (k, v) in t.claims.iter().take(6) {
        claims.insert(k.text(), v.value());
    }
    let aud = texts(&t.aud);
    claims.insert("iss".into(), Value::String(t.iss.text()));
    claims.insert("sub".into(), Value::String(t.sub.text()));
    claims.insert(
        "aud".into(),
        Value::Array(aud.iter().cloned().map(Value::String).collect()),
    );
    Identity {
        issuer: t.iss.text(),
        subject: t.sub.text(),
        audiences: aud,
        presenter: t.azp.as_ref().map(Val::text),
        claims: Rc::new(claims),
        space_delimited_claims: Rc::from(vec!["scope".to_string(), "permission".to_string()]),
        memo: PolicyMemo::default(),
    }
}

fuzz_target!(|case: Case| {
    let configs: Vec<PolicyConfig> = case
        .policies
        .iter()
        .take(6)
        .enumerate()
        .map(|(i, p)| policy(i, p, "p", p.dry_run))
        .collect();
    let Ok(policies) = compile(&configs, "policies") else {
        return;
    };
    let req = request(&case.request);
    let id = case.request.token.as_ref().map(identity);
    let result = policies.evaluate(&req, id.as_ref());
    assert_eq!(
        result,
        policies.evaluate(&req, id.as_ref()),
        "not deterministic"
    );

    // Dry-run copies are reported, never enforced.
    let mut shadowed = configs.clone();
    shadowed.extend(
        case.policies
            .iter()
            .take(6)
            .enumerate()
            .map(|(i, p)| policy(i, p, "shadow", true)),
    );
    let shadowed = compile(&shadowed, "policies").unwrap_or_else(|e| {
        panic!("dry-run copies of valid policies refused: {e:?}");
    });
    let with_shadows = shadowed.evaluate(&req, id.as_ref());
    assert_eq!(with_shadows.decision, result.decision);
    assert_eq!(with_shadows.audit_matches, result.audit_matches);

    // A DENY that matches everything denies everything.
    let mut denied = configs;
    denied.push(PolicyConfig {
        name: "deny-all".into(),
        action: Action::Deny,
        rules: Some(vec![RuleConfig::default()]),
        dry_run: false,
        provider: None,
    });
    let denied = compile(&denied, "policies").unwrap_or_else(|e| {
        panic!("a catch-all DENY next to valid policies refused: {e:?}");
    });
    assert!(matches!(
        denied.evaluate(&req, id.as_ref()).decision,
        AuthzDecision::Deny { .. }
    ));
});
