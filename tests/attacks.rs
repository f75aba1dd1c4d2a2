//! The attack suite, natively: hostile tokens through the whole request engine (extraction, parse,
//! claims, key selection, signature, policy) against a JWKS fetched from the configured URI, with
//! both signature backends (in-wasm, and the host protocol through the software stand-in for
//! Envoy's `verify_signature`). Every case asserts the exact status, body and challenge, and which
//! calls the engine asked for: a token never makes meshgate fetch anything but the configured JWKS
//! (a kid-miss refetch at most once per cooldown), whatever `jku`, `x5u`, `jwk` or `kid` say.
//!
//! The same cases in a real Envoy (and next to Envoy's own jwt_authn): tests/e2e/test_attacks.py.
//! Signature-level attack vectors (alg none spellings, RS→HS with three key encodings, embedded
//! jwk/x5c, ECDSA zero and r=s=n, DER signatures, high-s) are also checked by vector id against the
//! verifier in tests/conformance.rs (tests/conformance/jwt-vectors/constructed_attacks.json).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use meshgate::calls::HttpCall;
use meshgate::config::Settings;
use meshgate::engine::{Decision, Engine};
use meshgate::error::Reply;
use meshgate::jwt::b64url_encode;
use meshgate::jwt::crypto::{SignatureBackend, WasmCrypto};
use meshgate::jwt::host_sig::HostCrypto;
use meshgate::jwt::jwk::{parse_jwks, KeyMaterial};
use meshgate::metrics::CountingSink;
use meshgate::request::RequestAttrs;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::rc::Rc;

mod common;
use common::keys::Key;
use common::software_host;

const ISS: &str = "http://keycloak.keycloak.svc.cluster.local/realms/myrealm";
const CLUSTER: &str = "outbound|80||keycloak.keycloak.svc.cluster.local";
const JWKS_PATH: &str = "/realms/myrealm/protocol/openid-connect/certs";
const T0: u64 = 1_800_000_000_000;
const CHALLENGE: &str = r#"Bearer realm="http://backend/data", error="invalid_token""#;
/// P-256 group order n.
const P256_N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

const BAD_FORMAT: &str =
    "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections";
const NO_KEY: &str = "Jwks doesn't have key to match kid or alg from Jwt";
const VERIFY_FAILS: &str = "Jwt verification fails";
const UNSUPPORTED_ALG: &str = "Jwt header [alg] is not supported";
const HEADER_JSON: &str = "Jwt header is an invalid JSON";
const PAYLOAD_JSON: &str = "Jwt payload is an invalid JSON";
const SIG_B64: &str = "Jwt signature is an invalid Base64url encoded";
const TOO_LARGE: &str = "Jwt exceeds the maximum token size";
const RBAC: &str = "RBAC: access denied";

/// The realm's RSA signing key (Envoy's RS256 test key, from the conformance vectors).
fn rsa_jwk() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/jwt-vectors/constructed_attacks.json"
    );
    let vectors: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let v = vectors
        .iter()
        .find(|v| v["id"] == "attack-keyconfusion-hs256-spki-pem")
        .unwrap();
    let mut jwk = v["jwks"]["keys"][0].clone();
    jwk["kid"] = json!("rsa1");
    jwk
}

fn realm_key() -> Key {
    Key::new("k1", 1)
}

/// The JWKS the IdP serves: the realm's ES256 key `k1` and RSA key `rsa1`.
fn jwks() -> Vec<u8> {
    json!({"keys": [realm_key().jwk(), rsa_jwk()]})
        .to_string()
        .into_bytes()
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "u-1", "aud": "my-backend-client", "exp": T0 / 1000 + 300,
           "iat": T0 / 1000, "realm_access": {"roles": ["user"]}})
}

fn header(kid: &str) -> Vec<u8> {
    json!({"alg": "ES256", "typ": "JWT", "kid": kid})
        .to_string()
        .into_bytes()
}

/// A token the realm really issued.
fn valid() -> String {
    realm_key().sign_bytes(&header("k1"), claims().to_string().as_bytes())
}

fn with_signature(token: &str, sig: &[u8]) -> String {
    format!(
        "{}.{}",
        token.rsplit_once('.').unwrap().0,
        b64url_encode(sig)
    )
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| block.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let inner = Sha256::digest([pad(0x36), msg.to_vec()].concat());
    Sha256::digest([pad(0x5c), inner.to_vec()].concat()).to_vec()
}

/// RS256 → HS256 key confusion: HMAC keyed with the realm's public RSA key (`form` of it).
fn key_confusion(form: &str) -> String {
    let set = parse_jwks(&jwks()).unwrap();
    let spki = set
        .keys
        .iter()
        .find_map(|k| match &k.material {
            KeyMaterial::Rsa(r) => Some(r.spki_der.clone()),
            _ => None,
        })
        .unwrap();
    let pem = {
        let b64 = STANDARD.encode(&spki);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    };
    let secret = match form {
        "pem" => pem.into_bytes(),
        "der" => spki,
        _ => rsa_jwk()["n"].as_str().unwrap().as_bytes().to_vec(),
    };
    let h = json!({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}).to_string();
    let input = format!(
        "{}.{}",
        b64url_encode(h.as_bytes()),
        b64url_encode(claims().to_string().as_bytes())
    );
    let sig = hmac_sha256(&secret, input.as_bytes());
    format!("{input}.{}", b64url_encode(&sig))
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Forwarded,
    Replied(u32, String, Option<String>),
}

/// One meshgate VM: the realm's rule with its JWKS URI and audience, and a policy that admits
/// any request principal (so a request without a valid token gets 403).
struct Gate {
    engine: Engine,
    backend: Box<dyn SignatureBackend>,
    /// Every call the engine asked for after the configure-time fetch.
    calls: Vec<HttpCall>,
    metrics: CountingSink,
}

impl Gate {
    fn new(backend: Box<dyn SignatureBackend>) -> Gate {
        let config = json!({
            "jwtRules": [{"issuer": ISS, "jwksUri": format!("http://keycloak.keycloak.svc.cluster.local{JWKS_PATH}"),
                          "audiences": ["my-backend-client"]}],
            "policies": [{"name": "require-jwt", "action": "ALLOW",
                          "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}]
        });
        let settings = Settings::from_json(config.to_string().as_bytes()).unwrap();
        let mut gate = Gate {
            engine: Engine::new(Rc::new(settings)),
            backend,
            calls: Vec::new(),
            metrics: CountingSink::default(),
        };
        let first = gate.engine.on_tick(T0);
        assert_eq!(first.len(), 1, "one JWKS fetch at configure time");
        gate.answer(&first);
        gate
    }

    /// The IdP answers every call with its JWKS.
    fn answer(&mut self, calls: &[HttpCall]) {
        for c in calls {
            let s = self
                .engine
                .on_call_response(c.id, Some(200), &jwks(), T0, &mut self.metrics);
            assert!(s.calls.is_empty());
        }
    }

    fn send_headers(&mut self, headers: Vec<(String, String)>) -> Outcome {
        let req = RequestAttrs {
            method: "GET".into(),
            path: "/data".into(),
            host: "backend".into(),
            scheme: "http".into(),
            headers,
            ..RequestAttrs::default()
        };
        for _ in 0..3 {
            match self
                .engine
                .on_request(&req, T0, self.backend.as_ref(), &mut self.metrics)
            {
                Decision::Forward(_) => return Outcome::Forwarded,
                Decision::Respond(Reply {
                    status,
                    body,
                    headers,
                    ..
                }) => {
                    let challenge = headers
                        .iter()
                        .find(|(k, _)| k == "www-authenticate")
                        .map(|(_, v)| v.clone());
                    return Outcome::Replied(status, body, challenge);
                }
                Decision::Wait(w) => {
                    self.calls.extend(w.calls.iter().cloned());
                    self.answer(&w.calls);
                }
            }
        }
        panic!("still waiting after three rounds");
    }

    fn send(&mut self, token: &str) -> Outcome {
        self.send_headers(vec![("authorization".into(), format!("Bearer {token}"))])
    }

    /// Every call went to the configured JWKS URI through the configured cluster.
    fn only_configured_calls(&self) {
        for c in &self.calls {
            assert_eq!(c.cluster, CLUSTER, "{c:?}");
            let path = c.headers.iter().find(|(k, _)| k == ":path").unwrap();
            assert_eq!(path.1, JWKS_PATH, "{c:?}");
        }
    }
}

fn gates() -> Vec<(&'static str, Gate)> {
    vec![
        ("in-wasm", Gate::new(Box::new(WasmCrypto))),
        (
            "host protocol",
            Gate::new(Box::new(HostCrypto {
                call: software_host,
            })),
        ),
    ]
}

fn denied(body: &str) -> Outcome {
    Outcome::Replied(401, body.into(), Some(CHALLENGE.into()))
}

fn rbac() -> Outcome {
    Outcome::Replied(403, RBAC.into(), None)
}

/// Runs `cases` through both backends: the outcome is the expected one, and no call was made.
fn no_fetch_cases(cases: &[(&str, String, Outcome)]) {
    for (backend, mut gate) in gates() {
        assert_eq!(
            gate.send(&valid()),
            Outcome::Forwarded,
            "{backend}: baseline"
        );
        for (name, token, want) in cases {
            assert_eq!(&gate.send(token), want, "{backend}: {name}");
        }
        assert!(gate.calls.is_empty(), "{backend}: fetched {:?}", gate.calls);
    }
}

#[test]
fn alg_none_in_any_spelling() {
    let mut cases = Vec::new();
    for alg in ["none", "None", "nOnE", "NONE"] {
        let h = json!({"alg": alg, "typ": "JWT"}).to_string();
        let unsigned = format!(
            "{}.{}.",
            b64url_encode(h.as_bytes()),
            b64url_encode(claims().to_string().as_bytes())
        );
        cases.push((alg, unsigned.clone(), denied(BAD_FORMAT)));
        // With a signature segment (the realm's real ES256 signature of another header).
        let signed = format!("{unsigned}{}", valid().rsplit_once('.').unwrap().1);
        cases.push((alg, signed, denied(UNSUPPORTED_ALG)));
    }
    no_fetch_cases(&cases);
}

#[test]
fn rs256_to_hs256_key_confusion() {
    let cases: Vec<_> = ["pem", "der", "jwk-n"]
        .iter()
        .map(|form| (*form, key_confusion(form), denied(NO_KEY)))
        .collect();
    no_fetch_cases(&cases);
}

#[test]
fn psychic_and_malformed_ecdsa_signatures() {
    let good = valid();
    let sig = meshgate::jwt::b64url_decode(good.rsplit_once('.').unwrap().1).unwrap();
    let n: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&P256_N[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let der = {
        // The same (r, s) DER-encoded, as a JWS must not carry it.
        let int = |b: &[u8]| {
            let mut v = b.to_vec();
            if v[0] & 0x80 != 0 {
                v.insert(0, 0);
            }
            [vec![0x02, v.len() as u8], v].concat()
        };
        let body = [int(&sig[..32]), int(&sig[32..])].concat();
        [vec![0x30, body.len() as u8], body].concat()
    };
    let cases = vec![
        (
            "r = s = 0",
            with_signature(&good, &[0u8; 64]),
            denied(VERIFY_FAILS),
        ),
        (
            "r = s = n",
            with_signature(&good, &[n.clone(), n.clone()].concat()),
            denied(VERIFY_FAILS),
        ),
        (
            "r = 0, s valid",
            with_signature(&good, &[&[0u8; 32], &sig[32..]].concat()),
            denied(VERIFY_FAILS),
        ),
        (
            "r valid, s = n",
            with_signature(&good, &[&sig[..32], &n[..]].concat()),
            denied(VERIFY_FAILS),
        ),
        ("DER", with_signature(&good, &der), denied(VERIFY_FAILS)),
        (
            "empty",
            format!("{}.", good.rsplit_once('.').unwrap().0),
            denied(BAD_FORMAT),
        ),
        (
            "one byte",
            with_signature(&good, &[1]),
            denied(VERIFY_FAILS),
        ),
    ];
    no_fetch_cases(&cases);
}

#[test]
fn key_url_and_embedded_key_headers_are_never_fetched_nor_trusted() {
    let attacker = Key::new("k1", 7); // the realm's kid, another key
    let stranger = Key::new("evil", 9);
    let payload = claims().to_string();
    let with = |key: &Key, extra: Value| {
        let mut h = json!({"alg": "ES256", "typ": "JWT"});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        key.sign_bytes(h.to_string().as_bytes(), payload.as_bytes())
    };
    let jku = "http://attacker.example/jwks.json";
    let x5u = "http://attacker.example/cert.pem";
    let mut jwk = attacker.jwk();
    jwk.as_object_mut().unwrap().remove("kid");
    let known_kid = vec![
        (
            "jku, realm kid",
            with(&attacker, json!({"kid": "k1", "jku": jku})),
            denied(VERIFY_FAILS),
        ),
        (
            "x5u, realm kid",
            with(&attacker, json!({"kid": "k1", "x5u": x5u})),
            denied(VERIFY_FAILS),
        ),
        (
            "embedded jwk, no kid",
            with(&attacker, json!({"jwk": jwk})),
            denied(VERIFY_FAILS),
        ),
        (
            "embedded jwk, realm kid",
            with(&attacker, json!({"kid": "k1", "jwk": attacker.jwk()})),
            denied(VERIFY_FAILS),
        ),
        (
            "x5c, realm kid",
            with(
                &attacker,
                json!({"kid": "k1", "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}),
            ),
            denied(VERIFY_FAILS),
        ),
    ];
    no_fetch_cases(&known_kid);

    // An unknown kid may refetch the configured JWKS, once per cooldown — never the URL the token names.
    for (backend, mut gate) in gates() {
        let t = with(
            &stranger,
            json!({"kid": "evil", "jku": jku, "x5u": x5u, "jwk": stranger.jwk()}),
        );
        assert_eq!(gate.send(&t), denied(NO_KEY), "{backend}");
        assert_eq!(gate.calls.len(), 1, "{backend}: one refetch");
        assert_eq!(gate.send(&t), denied(NO_KEY), "{backend}");
        assert_eq!(gate.calls.len(), 1, "{backend}: none within the cooldown");
        gate.only_configured_calls();
        assert_eq!(gate.metrics.get("meshgate.denied.unknown_kid"), 2);
    }
}

#[test]
fn kid_path_traversal_and_injection_text() {
    let stranger = Key::new("evil", 9);
    let payload = claims().to_string();
    let kids = [
        "../../../../../../etc/passwd".to_string(),
        "/dev/null".into(),
        "k1/../k1".into(),
        "' OR '1'='1' --".into(),
        "k1\" UNION SELECT 'AAAA".into(),
        "$(curl attacker.example)".into(),
        "k1\r\nx-injected: 1".into(),
        "k1\u{0000}".into(),
        "{{7*7}}".into(),
        "k1".repeat(2048),
    ];
    for (backend, mut gate) in gates() {
        for kid in &kids {
            let h = json!({"alg": "ES256", "typ": "JWT", "kid": kid}).to_string();
            let t = stranger.sign_bytes(h.as_bytes(), payload.as_bytes());
            let out = gate.send(&t);
            assert_eq!(out, denied(NO_KEY), "{backend}: kid {kid:?}");
        }
        assert_eq!(
            gate.calls.len(),
            1,
            "{backend}: one refetch for all of them"
        );
        gate.only_configured_calls();
        // The realm's own key is still there (the kid text selected nothing else).
        assert_eq!(gate.send(&valid()), Outcome::Forwarded);
    }
}

#[test]
fn oversized_tokens_are_refused_before_any_decoding() {
    // Validly signed tokens around the 16 KiB cap: exactly 16,384 bytes pass, one more does not.
    let sized = |len: usize| {
        // Grow a padding claim; one character adds one or two base64 characters, so a header
        // member of 0..3 characters closes the last gap. An ES256 signature is 86 characters.
        let b64 = |n: usize| (n * 4).div_ceil(3);
        for extra in 0..4 {
            let mut h: Value = serde_json::from_slice(&header("k1")).unwrap();
            h["x"] = json!("y".repeat(extra));
            let h = h.to_string();
            let mut c = claims();
            c["pad"] = json!("");
            let base = c.to_string().len();
            for pad in 0..len {
                if b64(h.len()) + 1 + b64(base + pad) + 1 + 86 == len {
                    c["pad"] = json!("x".repeat(pad));
                    let t = realm_key().sign_bytes(h.as_bytes(), c.to_string().as_bytes());
                    assert_eq!(t.len(), len);
                    return t;
                }
            }
        }
        panic!("no token of {len} bytes");
    };
    let at_cap = sized(16 * 1024);
    let over = sized(16 * 1024 + 1);
    let cases = vec![
        ("16,384 bytes", at_cap, Outcome::Forwarded),
        ("16,385 bytes", over, denied(TOO_LARGE)),
        ("1 MiB of garbage", "A".repeat(1 << 20), denied(TOO_LARGE)),
    ];
    no_fetch_cases(&cases);
}

#[test]
fn deeply_nested_json_is_invalid_without_overflowing_the_stack() {
    let key = realm_key();
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let payload = |depth: usize| {
        let mut c = claims().to_string();
        c.pop();
        format!(r#"{c},"deep":{}}}"#, nested(depth))
    };
    let deep_header = format!(r#"{{"alg":"ES256","kid":"k1","x":{}}}"#, nested(4000));
    let cases = vec![
        (
            "payload depth 100",
            key.sign_bytes(&header("k1"), payload(100).as_bytes()),
            Outcome::Forwarded,
        ),
        (
            "payload depth 5000",
            key.sign_bytes(&header("k1"), payload(5000).as_bytes()),
            denied(PAYLOAD_JSON),
        ),
        (
            "header depth 4000",
            key.sign_bytes(deep_header.as_bytes(), claims().to_string().as_bytes()),
            denied(HEADER_JSON),
        ),
    ];
    no_fetch_cases(&cases);
}

#[test]
fn duplicate_member_names_are_invalid_json() {
    // RFC 7519 §4 allows rejecting or last-wins; Envoy rejects (google/jwt_verify_lib#63), and so
    // does meshgate: a first-wins backend would otherwise see another identity than the one checked.
    let key = realm_key();
    let exp = T0 / 1000 + 300;
    let p = |s: String| key.sign_bytes(&header("k1"), s.as_bytes());
    let cases = vec![
        (
            "iss twice",
            p(format!(
                r#"{{"iss":"https://evil.example","iss":"{ISS}","aud":"my-backend-client","exp":{exp}}}"#
            )),
            denied(PAYLOAD_JSON),
        ),
        (
            "sub twice",
            p(format!(
                r#"{{"iss":"{ISS}","sub":"admin","sub":"u-1","aud":"my-backend-client","exp":{exp}}}"#
            )),
            denied(PAYLOAD_JSON),
        ),
        (
            "exp twice",
            p(format!(
                r#"{{"iss":"{ISS}","aud":"my-backend-client","exp":1,"exp":{exp}}}"#
            )),
            denied(PAYLOAD_JSON),
        ),
        (
            "nested roles twice",
            p(format!(
                r#"{{"iss":"{ISS}","aud":"my-backend-client","exp":{exp},"realm_access":{{"roles":["admin"],"roles":["user"]}}}}"#
            )),
            denied(PAYLOAD_JSON),
        ),
        (
            "kid twice",
            key.sign_bytes(
                br#"{"alg":"ES256","kid":"k1","kid":"k1"}"#,
                claims().to_string().as_bytes(),
            ),
            denied(HEADER_JSON),
        ),
        (
            "alg twice",
            key.sign_bytes(
                br#"{"alg":"none","alg":"ES256","kid":"k1"}"#,
                claims().to_string().as_bytes(),
            ),
            denied(HEADER_JSON),
        ),
    ];
    no_fetch_cases(&cases);
}

#[test]
fn payloads_that_are_not_utf8() {
    let key = realm_key();
    let exp = T0 / 1000 + 300;
    let raw = |middle: &[u8]| {
        [
            format!(
                r#"{{"iss":"{ISS}","sub":"u-1","aud":"my-backend-client","exp":{exp},"name":""#
            )
            .as_bytes(),
            middle,
            br#""}"#,
        ]
        .concat()
    };
    let cases = vec![
        (
            "0xff in a claim",
            key.sign_bytes(&header("k1"), &raw(b"\xff\xfe")),
            denied(PAYLOAD_JSON),
        ),
        (
            "overlong '/'",
            key.sign_bytes(&header("k1"), &raw(b"\xc0\xaf")),
            denied(PAYLOAD_JSON),
        ),
        (
            "truncated sequence",
            key.sign_bytes(&header("k1"), &raw(b"\xe2\x82")),
            denied(PAYLOAD_JSON),
        ),
        (
            "lone surrogate escape",
            key.sign_bytes(&header("k1"), &raw(br"\ud800")),
            denied(PAYLOAD_JSON),
        ),
        (
            "UTF-16 payload",
            key.sign_bytes(
                &header("k1"),
                &claims()
                    .to_string()
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect::<Vec<u8>>(),
            ),
            denied(PAYLOAD_JSON),
        ),
        (
            "0xff in the header",
            key.sign_bytes(
                b"{\"alg\":\"ES256\",\"kid\":\"k1\xff\"}",
                claims().to_string().as_bytes(),
            ),
            denied(HEADER_JSON),
        ),
        // Valid UTF-8 beyond ASCII is fine.
        (
            "UTF-8 claim",
            key.sign_bytes(&header("k1"), &raw("Zoë ✓ 😀".as_bytes())),
            Outcome::Forwarded,
        ),
    ];
    no_fetch_cases(&cases);
}

#[test]
fn whitespace_and_padding_games() {
    let t = valid();
    let (input, sig) = t.rsplit_once('.').unwrap();
    let spaced = realm_key().sign_bytes(
        b" {\n \"alg\" : \"ES256\" ,\t\"kid\":\"k1\" }\r\n",
        format!(" {} ", claims()).as_bytes(),
    );
    let auth = |v: String| vec![("authorization".to_string(), v)];
    for (backend, mut gate) in gates() {
        type Case = (&'static str, Vec<(String, String)>, Outcome);
        let cases: Vec<Case> = vec![
            (
                "two spaces after Bearer",
                auth(format!("Bearer  {t}")),
                Outcome::Forwarded,
            ),
            // As Envoy 1.40's extractor: the token runs from its first base64url character to the
            // end of the value, so trailing characters make it malformed instead of being dropped.
            // (Envoy's codec strips trailing whitespace before any filter sees the value.)
            (
                "trailing comma and text",
                auth(format!("Bearer {t},other")),
                denied(SIG_B64),
            ),
            (
                "trailing space and text",
                auth(format!("Bearer {t} other")),
                denied(SIG_B64),
            ),
            // A header value that was not UTF-8 reaches the engine with U+FFFD (src/filter/host.rs).
            (
                "trailing U+FFFD",
                auth(format!("Bearer {t}\u{FFFD}")),
                denied(SIG_B64),
            ),
            (
                "leading U+FFFD",
                auth(format!("Bearer \u{FFFD}{t}")),
                Outcome::Forwarded,
            ),
            // Nothing after the prefix can start a token: the whole value is the token, malformed.
            (
                "Bearer and punctuation",
                auth("Bearer !!!".into()),
                denied(BAD_FORMAT),
            ),
            (
                "JSON whitespace inside the segments",
                auth(format!("Bearer {spaced}")),
                Outcome::Forwarded,
            ),
            // The prefix is case-sensitive and ends with one space: no token, so the policy decides.
            ("lower-case bearer", auth(format!("bearer {t}")), rbac()),
            ("tab instead of space", auth(format!("Bearer\t{t}")), rbac()),
            // RFC 7515 §2: base64url without padding (Envoy tolerates it; an intended divergence).
            (
                "= after the signature",
                auth(format!("Bearer {t}=")),
                denied(SIG_B64),
            ),
            (
                "== after the signature",
                auth(format!("Bearer {t}==")),
                denied(SIG_B64),
            ),
            (
                "= inside the payload",
                auth(format!("Bearer {}=.{sig}", input)),
                denied("Jwt payload is an invalid Base64url encoded"),
            ),
            (
                "line break in the token",
                auth(format!("Bearer {input}.\n{sig}")),
                denied(SIG_B64),
            ),
            // Every presented token must verify: a good one cannot carry a bad one past.
            (
                "good and bad token",
                vec![
                    ("authorization".into(), format!("Bearer {t}")),
                    (
                        "authorization".into(),
                        format!("Bearer {}", with_signature(&t, &[0; 64])),
                    ),
                ],
                denied(VERIFY_FAILS),
            ),
        ];
        for (name, headers, want) in cases {
            assert_eq!(gate.send_headers(headers), want, "{backend}: {name}");
        }
        assert!(gate.calls.is_empty(), "{backend}");
    }
}

#[test]
fn a_jwe_is_not_a_jws() {
    let enc_header = b64url_encode(br#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"k1"}"#);
    let cases = vec![
        (
            "five segments",
            format!("{enc_header}.ZW5jcnlwdGVkLWtleQ.aXY.Y2lwaGVydGV4dA.dGFn"),
            denied(BAD_FORMAT),
        ),
        (
            "JWE header on three segments",
            format!("{enc_header}.e30.c2ln"),
            denied(UNSUPPORTED_ALG),
        ),
    ];
    no_fetch_cases(&cases);
}
