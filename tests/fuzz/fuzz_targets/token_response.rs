//! The egress token endpoint's answers (`meshgate::egress`): any status and body for the token
//! call, and for the OIDC discovery call before it, through the per-target token store. The first
//! input byte picks the status (or no response), the second the call, the rest is the body.
//! Beyond "no panic": a failure's reason (logged, and the 503 body) is printable, bounded and never
//! holds a piece of the client secret the body did not bring itself; a token handed out is `Bearer <b64token>` and is not handed
//! out at or after its expiry; a discovered token endpoint is a well-formed call.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;
use meshgate::calls::CallId;
use meshgate::egress::{config::compile, EgressTargetConfig, TokenLookup, TokenStore};
use serde_json::{json, Value};

const SECRET: &str = "s3cr3t-Fr0nt3nd";

fn store(discovery: bool) -> TokenStore {
    let mut t = json!({"name": "backend", "hosts": ["backend"], "clientId": "frontend",
        "clientSecret": SECRET, "timeout": "5s", "refreshAt": 0.8});
    if discovery {
        t["issuer"] = json!("http://keycloak.keycloak.svc.cluster.local/realms/myrealm");
    } else {
        t["tokenEndpoint"] =
            json!("http://keycloak.keycloak.svc.cluster.local/realms/myrealm/protocol/openid-connect/token");
    }
    let Ok(cfg) = serde_json::from_value::<Vec<EgressTargetConfig>>(json!([t])) else {
        panic!("fixture target does not deserialize");
    };
    let Ok(targets) = compile(&cfg, "egress", &|_| None) else {
        panic!("fixture target refused");
    };
    TokenStore::new(&targets)
}

/// The texts of a body as meshgate reads them (each JSON string, or each line of the raw text),
/// each with its control characters dropped and every whole occurrence of the secret removed: a
/// piece of the secret found here came with the body itself, not from the secret.
fn independent_text(body: &[u8]) -> String {
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            Value::Object(m) => m.iter().for_each(|(k, i)| {
                out.push(k.clone());
                strings(i, out);
            }),
            _ => {}
        }
    }
    let mut texts: Vec<String> = String::from_utf8_lossy(body)
        .lines()
        .map(str::to_string)
        .collect();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        strings(&v, &mut texts);
    }
    texts
        .iter()
        .map(|t| {
            let printable: String = t.chars().filter(|c| !c.is_control()).collect();
            printable.replace(SECRET, "\n")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A failure's reason: printable, bounded, and no piece of the secret that the body did not bring.
fn check_reason(reason: &str, body: &[u8]) {
    assert!(!reason.chars().any(char::is_control), "{reason:?}");
    assert!(reason.chars().count() <= 600, "{reason:?}");
    assert!(!reason.contains(SECRET), "{reason:?}");
    let independent = independent_text(body);
    for part in SECRET.as_bytes().windows(6) {
        let part = std::str::from_utf8(part).unwrap_or_default();
        assert!(
            !reason.contains(part) || independent.contains(part),
            "{part:?} of the secret in {reason:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let (Some(&s), Some(&phase), body) = (data.first(), data.get(1), data.get(2..).unwrap_or(&[]))
    else {
        return;
    };
    let status = shared::token_status(s);
    let discovery = phase & 1 == 1;
    let now = shared::NOW_MS;
    let mut tokens = store(discovery);
    let due = tokens.due_fetches(now);
    let [call] = due.as_slice() else {
        panic!("one fetch at start: {due:?}");
    };
    let CallId::Egress(id) = call.id else {
        panic!("{call:?}");
    };
    let out = tokens.on_response(id, status, body, now);
    if let Some(f) = &out.failed {
        check_reason(&f.reason, body);
        assert_eq!(tokens.lookup(0, now + 1), TokenLookup::Unavailable);
        return;
    }
    if discovery {
        // The token request to the discovered endpoint follows.
        let Some(next) = &out.next else {
            panic!("discovery succeeded without a token call: {out:?}");
        };
        let header = |n: &str| {
            next.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header(":method"), Some("POST"));
        assert!(
            header(":path").is_some_and(|p| p.starts_with('/')),
            "{next:?}"
        );
        assert!(!next.cluster.is_empty());
        return;
    }
    let Some(lifetime) = out.obtained_lifetime_ms else {
        panic!("a 200 token response neither failed nor gave a token: {out:?}");
    };
    assert!(lifetime > 0);
    match tokens.lookup(0, now) {
        TokenLookup::Ready(v) => {
            let token = v.strip_prefix("Bearer ").unwrap_or_else(|| panic!("{v:?}"));
            assert!(!token.is_empty());
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)),
                "{v:?}"
            );
        }
        other => panic!("a token was obtained but not handed out: {other:?}"),
    }
    assert!(
        !matches!(
            tokens.lookup(0, now.saturating_add(lifetime)),
            TokenLookup::Ready(_)
        ),
        "handed out at its expiry"
    );
});
