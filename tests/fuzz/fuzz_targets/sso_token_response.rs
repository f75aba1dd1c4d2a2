//! Single sign-on's token-endpoint answers (`meshgate::sso::token_response::parse`): a code
//! exchange's or a refresh's response with any status and body. The first input byte picks the
//! status (or no response), the rest is the body.
//!
//! Beyond "no panic": a refusal is only a 400/401 with an OAuth `error`, whose code (logged and
//! shown on the login-failed page) is `[A-Za-z0-9_.-]` or `<redacted>`, at most 64 characters, and
//! holds no piece (6 bytes) of the client secret that the body did not bring itself; every other
//! failure is a fixed text with nothing of the body; a success is a 200 whose tokens are exactly the
//! body's strings, within the token size cap, and whose expiries are never later than the provider
//! stated (`expires_in`, default 300 s; the access token's own `exp`).
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;
use meshgate::config::MAX_TOKEN_BYTES;
use meshgate::sso::token_response::{parse, TokenOutcome};
use serde_json::Value;

const SECRET: &str = "Fr0ntend-S3cr3t.gw";
const REASONS: [&str; 6] = [
    "no response (timeout or connection failure)",
    "token response is not JSON",
    "token response has no access_token",
    "token_type is not Bearer",
    "a token is over 16384 bytes",
    "HTTP status ",
];

fn safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The body's `error` as meshgate reduces it, with every whole (reduced) secret removed: a piece
/// of the secret found here came with the body itself.
fn independent(error: &str) -> String {
    let reduced: String = error.chars().filter(|&c| safe(c)).collect();
    reduced.replace(SECRET, " ")
}

fn string_field(doc: &Option<Value>, name: &str) -> Option<String> {
    doc.as_ref()?
        .get(name)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn number_field(doc: &Option<Value>, name: &str) -> Option<f64> {
    doc.as_ref()?.get(name)?.as_f64()
}

fuzz_target!(|data: &[u8]| {
    let Some((&s, body)) = data.split_first() else {
        return;
    };
    let status = shared::token_status(s);
    let now = shared::NOW;
    let outcome = parse(status, body, now, SECRET);
    assert_eq!(
        parse(status, body, now, SECRET),
        outcome,
        "not deterministic"
    );
    let doc: Option<Value> = serde_json::from_slice(body).ok();
    match outcome {
        TokenOutcome::Rejected { error } => {
            assert!(matches!(status, Some(400 | 401)), "{status:?}");
            let Some(sent) = string_field(&doc, "error") else {
                panic!("rejected without an error: {body:?}");
            };
            assert!(
                !error.is_empty() && error.chars().count() <= 64,
                "{error:?}"
            );
            let without_marker = error.replace("<redacted>", "");
            // The marker itself may be cut at 64 characters.
            let tail_ok = |e: &str| {
                e.chars().all(safe)
                    || e.rfind('<').is_some_and(|i| {
                        e[..i].chars().all(safe) && "<redacted>".starts_with(&e[i..])
                    })
            };
            assert!(tail_ok(&without_marker), "{error:?}");
            let independent = independent(&sent);
            for part in SECRET.as_bytes().windows(6) {
                let part = std::str::from_utf8(part).unwrap_or_default();
                assert!(
                    !error.contains(part) || independent.contains(part),
                    "{part:?} of the secret in {error:?}"
                );
            }
        }
        TokenOutcome::Unavailable(why) => {
            assert!(
                REASONS.iter().any(|r| why.starts_with(r))
                    || why.starts_with("HTTP status ") && why.len() < 80,
                "{why:?}"
            );
            assert!(!why.contains(SECRET));
            if let Some(st) = status {
                if st == 200 && body.len() <= 64 * 1024 {
                    assert!(!why.starts_with("HTTP status"), "{why:?}");
                }
            }
        }
        TokenOutcome::Ok(t) => {
            assert_eq!(status, Some(200));
            assert_eq!(
                Some(&t.access_token),
                string_field(&doc, "access_token").as_ref()
            );
            assert_eq!(t.refresh_token, string_field(&doc, "refresh_token"));
            assert_eq!(t.id_token, string_field(&doc, "id_token"));
            for tok in [
                Some(&t.access_token),
                t.refresh_token.as_ref(),
                t.id_token.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                assert!(tok.len() <= MAX_TOKEN_BYTES);
            }
            if let Some(tt) = string_field(&doc, "token_type") {
                assert!(tt.eq_ignore_ascii_case("bearer"), "{tt:?}");
            }
            let stated = number_field(&doc, "expires_in")
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map_or(300, |s| s as u64);
            assert!(t.access_exp <= now.saturating_add(stated), "{t:?}");
            match number_field(&doc, "refresh_expires_in").filter(|s| s.is_finite() && *s > 0.0) {
                Some(r) if r as u64 > 0 => {
                    assert_eq!(t.refresh_exp, now.saturating_add(r as u64))
                }
                _ => assert_eq!(t.refresh_exp, 0),
            }
        }
    }
});
