//! Field paths of configuration parse errors. `Settings::from_json` parses with plain serde_json and
//! recovers the path from the error position (`json_path`); before, it deserialized through
//! serde_path_to_error. The "before" column below was produced by running that implementation
//! (commit b10f5d4) on every input once; `differential` compares with it on many more inputs.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate::config::{PluginConfig, Settings};

/// The new path is the old one.
const SAME: &str = "\u{1}same";
/// serde_path_to_error's entry point did not check for trailing characters: the input was accepted.
const ACCEPTED: &str = "\u{1}accepted";

/// (case, pluginConfig, path before, path now, message); the message keeps the error kind and the
/// position, `…` stands for serde's "expected ..." list.
#[rustfmt::skip]
const CASES: &[(&str, &str, &str, &str, &str)] = &[
    ("unknown field, root", r#"{"jwtRule":[]}"#, "jwtRule", SAME, "unknown field `jwtRule`… at line 1 column 10"),
    ("unknown field, rule", r#"{"jwtRules":[{"issuer":"http://i","jwksUri":"http://i/c","bogus":1}]}"#, "jwtRules[0].bogus", SAME, "unknown field `bogus`… at line 1 column 64"),
    ("unknown field, second rule", r#"{"jwtRules":[{"issuer":"x"},{"bogus":1}]}"#, "jwtRules[1].bogus", SAME, "unknown field `bogus`… at line 1 column 36"),
    ("unknown field, fromHeaders[1]", r#"{"jwtRules":[{"issuer":"http://i","fromHeaders":[{"name":"a"},{"name":"x","prefx":"B"}]}]}"#, "jwtRules[0].fromHeaders[1].prefx", SAME, "unknown field `prefx`… at line 1 column 81"),
    ("unknown field, policy operation", r#"{"policies":[{"name":"p","rules":[{"to":[{"operation":{"method":["GET"]}}]}]}]}"#, "policies[0].rules[0].to[0].operation.method", SAME, "unknown field `method`… at line 1 column 63"),
    ("unknown field, pretty-printed, space before colon", "{\n  \"jwtRules\": [\n    {\n      \"issuer\": \"x\",\n      \"bogus\" : 1\n    }\n  ]\n}\n", "jwtRules[0].bogus", SAME, "unknown field `bogus`… at line 5 column 14"),
    ("unknown field, CRLF lines", "{\r\n\"jwtRules\": [\r\n{\"issuer\": \"x\",\r\n\"bogus\": 1}]}", "jwtRules[0].bogus", SAME, "unknown field `bogus`… at line 4 column 7"),
    ("unknown field with escaped quote", r#"{"jwtRules":[{"iss\"uer":"x"}]}"#, "jwtRules[0].iss\"uer", SAME, "unknown field `iss\"uer`… at line 1 column 24"),
    ("unknown field after escaped quotes in a value", r#"{"jwtRules":[{"issuer":"a\"b\\","x\\y":1}]}"#, "jwtRules[0].x\\y", SAME, "unknown field `x\\y`… at line 1 column 38"),
    ("unknown field with dot, multi-byte text before", r#"{"jwtRules":[{"issuer":"é✓","a.ß":1}]}"#, "jwtRules[0].a.ß", SAME, "unknown field `a.ß`… at line 1 column 37"),
    ("unicode-escaped known key, wrong type", r#"{"jwtRules":[{"is\u0073uer":5}]}"#, "jwtRules[0].issuer", SAME, "invalid type: integer `5`… at line 1 column 29"),
    ("surrogate-pair key", r#"{"jwtRules":[{"\ud83d\ude00":5}]}"#, "jwtRules[0].😀", SAME, "unknown field `😀`… at line 1 column 28"),
    ("wrong type: number for string", r#"{"jwtRules":[{"issuer":5}]}"#, "jwtRules[0].issuer", SAME, "invalid type: integer `5`… at line 1 column 24"),
    ("wrong type: string for list", r#"{"jwtRules":[{"issuer":"http://i","audiences":"a"}]}"#, "jwtRules[0].audiences", SAME, "invalid type: string \"a\"… at line 1 column 49"),
    ("wrong type: object for list", r#"{"jwtRules":{}}"#, "jwtRules", SAME, "invalid type: map… at line 1 column 12"),
    ("wrong type: number for Option<String>", r#"{"jwtRules":[{"issuer":"http://i","timeout":5}]}"#, "jwtRules[0].timeout", SAME, "invalid type: integer `5`… at line 1 column 45"),
    ("wrong type: number for Option<Vec>", r#"{"policies":[{"name":"p","rules":5}]}"#, "policies[0].rules", SAME, "invalid type: integer `5`… at line 1 column 34"),
    ("wrong type: negative usize", r#"{"tokenCacheSize":-1}"#, "tokenCacheSize", SAME, "invalid value: integer `-1`… at line 1 column 20"),
    ("wrong type: string for usize", r#"{"tokenCacheSize":"10"}"#, "tokenCacheSize", SAME, "invalid type: string \"10\"… at line 1 column 22"),
    ("wrong type: string for bool", r#"{"debugHeaders":"yes"}"#, "debugHeaders", SAME, "invalid type: string \"yes\"… at line 1 column 21"),
    ("wrong type: null for bool", r#"{"jwtRules":[{"issuer":"http://i","forwardOriginalToken":null}]}"#, "jwtRules[0].forwardOriginalToken", SAME, "invalid type: null… at line 1 column 61"),
    ("wrong type: integer port", r#"{"policies":[{"name":"p","rules":[{"to":[{"operation":{"ports":[8080]}}]}]}]}"#, "policies[0].rules[0].to[0].operation.ports[0]", SAME, "invalid type: integer `8080`… at line 1 column 68"),
    ("wrong type: object as list element 1", r#"{"policies":[{"name":"p","rules":[{"to":[{"operation":{"ports":["80",{"x":1}]}}]}]}]}"#, "policies[0].rules[0].to[0].operation.ports[1]", SAME, "invalid type: map… at line 1 column 69"),
    ("wrong type: list element 2", r#"{"policies":[{"name":"p","rules":[{"from":[{"source":{"principals":["a","b",3]}}]}]}]}"#, "policies[0].rules[0].from[0].source.principals[2]", SAME, "invalid type: integer `3`… at line 1 column 77"),
    ("wrong type: second rule, list element", r#"{"jwtRules":[{"issuer":"x"},{"issuer":"y","fromCookies":[1]}]}"#, "jwtRules[1].fromCookies[0]", SAME, "invalid type: integer `1`… at line 1 column 58"),
    ("wrong type: number then junk", r#"{"jwtRules":[{"issuer":1x}]}"#, "jwtRules[0].issuer", SAME, "invalid type: integer `1`… at line 1 column 24"),
    ("wrong type: root list", r#"[]"#, "", SAME, "invalid length 3… at line 1 column 2"),
    ("wrong type: root string", r#""x""#, "", SAME, "invalid type: string \"x\"… at line 1 column 3"),
    ("missing field: policy name", r#"{"policies":[{"action":"DENY"}]}"#, "policies[0]", SAME, "missing field `name` at line 1 column 30"),
    ("missing field: when key, pretty", "{\"policies\": [{\"name\": \"p\", \"rules\": [{\"when\": [\n  {\"values\": [\"x\"]}\n]}]}]}", "policies[0].rules[0].when[0]", SAME, "missing field `key` at line 2 column 19"),
    ("bad enum value, root", r#"{"crypto":"fast"}"#, "crypto", SAME, "unknown variant `fast`… at line 1 column 16"),
    ("bad enum value, rule", r#"{"jwtRules":[{"issuer":"http://i","presence":"MAYBE"}]}"#, "jwtRules[0].presence", SAME, "unknown variant `MAYBE`… at line 1 column 52"),
    ("bad enum value, policy", r#"{"policies":[{"name":"p","action":"REJECT"}]}"#, "policies[0].action", SAME, "unknown variant `REJECT`… at line 1 column 42"),
    ("enum as object, known variant", r#"{"crypto":{"host":1}}"#, "crypto.host", SAME, "invalid type: integer `1`… at line 1 column 19"),
    ("enum as object, unknown variant", r#"{"crypto":{"x":1}}"#, "crypto", "crypto.x", "unknown variant `x`… at line 1 column 14"),
    ("enum as empty object", r#"{"crypto":{}}"#, "crypto", "crypto.?", "expected value at line 1 column 12"),
    ("duplicate field", r#"{"jwtRules":[{"issuer":"x","issuer":"y"}]}"#, "jwtRules[0]", "jwtRules[0].issuer", "duplicate field `issuer` at line 1 column 35"),
    ("trailing garbage", r#"{"jwtRules":[]} x"#, ACCEPTED, "", "trailing characters at line 1 column 17"),
    ("trailing brace", r#"{"jwtRules":[]}}"#, ACCEPTED, "", "trailing characters at line 1 column 16"),
    ("syntax: trailing comma in object", r#"{"jwtRules":[{"issuer":"http://i",}]}"#, "jwtRules[0].?", SAME, "trailing comma at line 1 column 35"),
    ("syntax: trailing comma in list", r#"{"jwtRules":[{"fromParams":["a",]}]}"#, "jwtRules[0].fromParams", SAME, "trailing comma at line 1 column 33"),
    ("syntax: trailing comma in list of objects", r#"{"jwtRules":[{"issuer":"x"},]}"#, "jwtRules", SAME, "trailing comma at line 1 column 29"),
    ("syntax: missing colon", r#"{"jwtRules":[{"issuer" "x"}]}"#, "jwtRules[0]", SAME, "expected `:` at line 1 column 24"),
    ("syntax: missing comma in object", r#"{"jwtRules":[{"issuer":"x" "jwks":"y"}]}"#, "jwtRules[0].?", SAME, "expected `,` or `}` at line 1 column 28"),
    ("syntax: missing comma in list", r#"{"jwtRules":[{"fromParams":["a" "b"]}]}"#, "jwtRules[0].fromParams", SAME, "expected `,` or `]` at line 1 column 33"),
    ("syntax: missing comma after list", r#"{"jwtRules":[{"issuer":"x"}] "policies":[]}"#, "?", SAME, "expected `,` or `}` at line 1 column 30"),
    ("syntax: bad literal", r#"{"jwtRules":[{"issuer":tru}]}"#, "jwtRules[0].issuer", SAME, "expected ident at line 1 column 27"),
    ("syntax: missing value", r#"{"jwtRules":[{"issuer": }]}"#, "jwtRules[0].issuer", SAME, "expected value at line 1 column 25"),
    ("syntax: missing list element", r#"{"jwtRules":[{"fromParams":[,"a"]}]}"#, "jwtRules[0].fromParams[0]", SAME, "expected value at line 1 column 29"),
    ("syntax: key not a string", r#"{"jwtRules":[{1:2}]}"#, "jwtRules[0].?", SAME, "key must be a string at line 1 column 15"),
    ("syntax: invalid escape in value", r#"{"jwtRules":[{"issuer":"\q"}]}"#, "jwtRules[0].issuer", SAME, "invalid escape at line 1 column 26"),
    ("syntax: invalid escape in key", r#"{"jwtRules":[{"iss\quer":"x"}]}"#, "jwtRules[0].?", SAME, "invalid escape at line 1 column 20"),
    ("syntax: control character in key", "{\"jwtRules\":[{\"iss\tuer\":\"x\"}]}", "jwtRules[0].?", SAME, "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 19"),
    ("syntax: in free-form provider value", r#"{"policies":[{"name":"p","provider":{"a":[1,{"b":{"c":[true, x]}}]}}]}"#, "policies[0].provider.a[1].b.c[1]", SAME, "expected value at line 1 column 62"),
    ("syntax: junk after number in provider", r#"{"policies":[{"name":"p","provider":{"a":1x}}]}"#, "policies[0].provider.?", SAME, "expected `,` or `}` at line 1 column 43"),
    ("syntax: leading zero", r#"{"policies":[{"name":"p","provider":[01]}]}"#, "policies[0].provider[0]", SAME, "invalid number at line 1 column 39"),
    ("eof: inside rule", r#"{"jwtRules":[{"issuer":"http://i","jwksUri":"http://i/c"}"#, "jwtRules", SAME, "EOF while parsing a list at line 1 column 57"),
    ("eof: after [", r#"{"jwtRules":["#, "jwtRules", SAME, "EOF while parsing a list at line 1 column 13"),
    ("eof: after comma in list", r#"{"jwtRules":[{"issuer":"x"},"#, "jwtRules", SAME, "EOF while parsing a value at line 1 column 28"),
    ("eof: after comma in object", r#"{"jwtRules":[{"issuer":"x","#, "jwtRules[0].?", SAME, "EOF while parsing a value at line 1 column 27"),
    ("eof: after colon", r#"{"jwtRules":[{"issuer":"#, "jwtRules[0].issuer", SAME, "EOF while parsing a value at line 1 column 23"),
    ("eof: inside string value", r#"{"jwtRules":[{"issuer":"ab"#, "jwtRules[0].issuer", SAME, "EOF while parsing a string at line 1 column 26"),
    ("eof: inside key", r#"{"jwtRules":[{"iss"#, "jwtRules[0].?", SAME, "EOF while parsing a string at line 1 column 18"),
    ("unknown field then }", r#"{"jwtRules":[{"bogus"}]}"#, "jwtRules[0].bogus", SAME, "unknown field `bogus`… at line 1 column 22"),
];

fn new_error(json: &str) -> (String, String) {
    match Settings::from_json(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => {
            assert_eq!(e.len(), 1, "{json}: {e:?}");
            (e[0].path.clone(), e[0].message.clone())
        }
    }
}

/// What `Settings::from_json` reported before: the path of the first parse error, or `None` when
/// serde_path_to_error accepted the input.
fn old_path(json: &str) -> Option<String> {
    let de = &mut serde_json::Deserializer::from_str(json);
    match serde_path_to_error::deserialize::<_, PluginConfig>(de) {
        Ok(_) => None,
        Err(e) => {
            let path = e.path().to_string();
            Some(if path == "." { String::new() } else { path })
        }
    }
}

fn message_matches(got: &str, want: &str) -> bool {
    match want.split_once('…') {
        Some((head, tail)) => {
            got.starts_with(head)
                && got.ends_with(tail)
                && got[head.len()..].starts_with(", expected")
        }
        None => got == want,
    }
}

/// Nested arrays deeper than serde_json's recursion limit inside the free-form `provider`.
fn deep() -> String {
    format!(
        r#"{{"policies":[{{"name":"p","provider":{}{}}}]}}"#,
        "[".repeat(200),
        "]".repeat(200)
    )
}

#[test]
fn paths_match_the_previous_implementation() {
    let mut failures = Vec::new();
    for &(case, json, before, now, message) in CASES {
        let want = if now == SAME { before } else { now };
        let (path, msg) = new_error(json);
        if path != want || !message_matches(&msg, message) {
            failures.push(format!(
                "{case}: got {path:?} / {msg:?}, want {want:?} / {message:?}"
            ));
        }
        // The table's "before" column is still what serde_path_to_error says.
        let old = old_path(json);
        let before = (before != ACCEPTED).then(|| before.to_string());
        if old != before {
            failures.push(format!(
                "{case}: serde_path_to_error now says {old:?}, table {before:?}"
            ));
        }
    }
    let (path, msg) = new_error(&deep());
    let want = format!("policies[0].provider{}", "[0]".repeat(124));
    if path != want || msg != "recursion limit exceeded at line 1 column 161" {
        failures.push(format!("deep nesting: got {path:?} / {msg:?}"));
    }
    assert_eq!(old_path(&deep()).as_deref(), Some(want.as_str()));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Fields of an enum type (a string; an object names the variant, which serde_path_to_error
/// reported at the field itself).
const ENUM_FIELDS: &[&str] = &["crypto", "presence", "action"];

/// Valid configurations touching every part of the schema, compact and pretty-printed.
fn valid_configs() -> Vec<String> {
    let compact = r#"{"jwtRules":[{"issuer":"http://kc/realms/a","audiences":["api"],"jwksUri":"http://kc/certs","fromHeaders":[{"name":"x-jwt","prefix":"Bearer "}],"fromParams":["t"],"fromCookies":["c"],"outputPayloadToHeader":"x-p","outputClaimToHeaders":[{"header":"x-sub","claim":"sub"}],"forwardOriginalToken":true,"timeout":"5s","spaceDelimitedClaims":["scp"],"presence":"REQUIRED","cacheDuration":"1m","clockSkew":"30s","kidRefetchCooldown":"10s"},{"issuer":"http://kc/realms/b","jwks":"{\"keys\":[]}"}],"policies":[{"name":"p","action":"DENY","rules":[{"from":[{"source":{"principals":["a"],"notRequestPrincipals":["*"]}}],"to":[{"operation":{"methods":["GET"],"paths":["/x"],"ports":["80"]}}],"when":[{"key":"request.auth.claims[iss]","values":["a\"b"],"notValues":["\u00e9"]}]}],"dryRun":false,"provider":{"name":"x","n":[1,-2.5e3,true,null,{}]}}],"crypto":"host","tokenCacheSize":10,"insufficientScopeChallenge":true,"debugHeaders":false}"#;
    let value: serde_json::Value = serde_json::from_str(compact).unwrap();
    vec![
        compact.to_string(),
        serde_json::to_string_pretty(&value).unwrap(),
    ]
}

/// Every single-byte deletion, insertion and replacement (from a set of JSON-significant bytes) of
/// the valid configurations: the path must be serde_path_to_error's, except for the documented
/// differences: `duplicate field` names the key, and so does an error inside an object given for an
/// enum field (the variant's key, or `?`); trailing characters were accepted before.
#[test]
fn differential() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for base in valid_configs() {
        let bytes = base.as_bytes();
        let mut inputs = Vec::new();
        for i in 0..=bytes.len() {
            if i < bytes.len() {
                inputs.push([&bytes[..i], &bytes[i + 1..]].concat());
            }
            for b in *br#"",:{}[]1x \"# {
                inputs.push([&bytes[..i], &[b], &bytes[i..]].concat());
                if i < bytes.len() {
                    inputs.push([&bytes[..i], &[b], &bytes[i + 1..]].concat());
                }
            }
        }
        for input in inputs {
            let Ok(json) = String::from_utf8(input) else {
                continue;
            };
            let new = match serde_json::from_str::<PluginConfig>(&json) {
                Ok(_) => None,
                Err(_) => Some(new_error(&json)),
            };
            let old = old_path(&json);
            checked += 1;
            match (&old, &new) {
                (None, None) => {}
                (Some(old), Some((new, _))) if old == new => {}
                (Some(old), Some((new, msg)))
                    if new.starts_with(&format!("{old}."))
                        && (msg.starts_with("duplicate field")
                            || ENUM_FIELDS.contains(&old.rsplit('.').next().unwrap_or(old))) => {}
                (None, Some((new, msg)))
                    if new.is_empty() && msg.starts_with("trailing characters") => {}
                _ => failures.push(format!("{json}\n  before {old:?}, now {new:?}")),
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
    assert!(
        failures.is_empty(),
        "{} of {checked}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
