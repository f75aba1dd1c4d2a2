//! Token-endpoint responses (RFC 6749 §5.1/§5.2, OpenID Connect Core §3.1.3.3): what a code
//! exchange or a refresh returned, or why it failed.

use crate::config::MAX_TOKEN_BYTES;
use serde_json::Value;

/// Largest token response body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Access-token lifetime assumed when the provider states none.
const DEFAULT_EXPIRES_IN: u64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access_token: String,
    /// Unix seconds.
    pub access_exp: u64,
    pub refresh_token: Option<String>,
    /// Unix seconds; 0 when the provider gave none.
    pub refresh_exp: u64,
    pub id_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOutcome {
    Ok(Tokens),
    /// The provider refused the grant (HTTP 400/401 with an OAuth `error`): a code that is
    /// invalid or used, a refresh token of an ended session. `error` is the provider's code,
    /// reduced to safe characters.
    Rejected {
        error: String,
    },
    /// No usable answer: no response, timeout, 5xx, or a body that is not a token response.
    Unavailable(String),
}

/// An OAuth error code as shown to the user and in logs: `[A-Za-z0-9_.-]`, the client secret
/// (reduced to those characters) replaced by `<redacted>`, at most 64 characters (RFC 6749 allows
/// more; nothing else is ever echoed).
pub fn safe_error_code(code: &str, client_secret: &str) -> String {
    let cleaned = crate::idp_text::sanitize(
        code,
        client_secret,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        64,
    );
    if cleaned.is_empty() {
        "unknown_error".into()
    } else {
        cleaned
    }
}

fn lifetime(v: Option<f64>) -> Option<u64> {
    v.filter(|s| s.is_finite() && *s >= 0.0).map(|s| s as u64)
}

/// Interprets a token-endpoint response received at `now` (Unix seconds) to a call that sent
/// `client_secret` ("" for a public client): an error code that echoes it is redacted.
pub fn parse(status: Option<u32>, body: &[u8], now: u64, client_secret: &str) -> TokenOutcome {
    let Some(status) = status else {
        return TokenOutcome::Unavailable("no response (timeout or connection failure)".into());
    };
    if body.len() > MAX_BODY_BYTES {
        return TokenOutcome::Unavailable(format!(
            "HTTP status {status} with a body over {MAX_BODY_BYTES} bytes"
        ));
    }
    // serde_json's Value (already in the module for JWT payloads) instead of derived types: smaller.
    let doc: Option<Value> = serde_json::from_slice(body).ok();
    let str_field = |name: &str| -> Option<String> {
        doc.as_ref()?
            .get(name)?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let num_field = |name: &str| doc.as_ref()?.get(name)?.as_f64();
    if status != 200 {
        if matches!(status, 400 | 401) {
            if let Some(e) = str_field("error") {
                return TokenOutcome::Rejected {
                    error: safe_error_code(&e, client_secret),
                };
            }
        }
        return TokenOutcome::Unavailable(format!("HTTP status {status}"));
    }
    if !doc.as_ref().is_some_and(Value::is_object) {
        return TokenOutcome::Unavailable("token response is not JSON".into());
    }
    let Some(access_token) = str_field("access_token") else {
        return TokenOutcome::Unavailable("token response has no access_token".into());
    };
    if str_field("token_type").is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
        return TokenOutcome::Unavailable("token_type is not Bearer".into());
    }
    let refresh_token = str_field("refresh_token");
    let id_token = str_field("id_token");
    let too_big = |t: &Option<String>| t.as_ref().is_some_and(|t| t.len() > MAX_TOKEN_BYTES);
    if access_token.len() > MAX_TOKEN_BYTES || too_big(&refresh_token) || too_big(&id_token) {
        return TokenOutcome::Unavailable(format!("a token is over {MAX_TOKEN_BYTES} bytes"));
    }
    let access_exp =
        now.saturating_add(lifetime(num_field("expires_in")).unwrap_or(DEFAULT_EXPIRES_IN));
    // The access token's own `exp`, when readable, is what jwtRules will hold it to.
    let access_exp = jwt_exp(&access_token).map_or(access_exp, |e| e.min(access_exp));
    let refresh_exp = match lifetime(num_field("refresh_expires_in")) {
        // Keycloak: 0 for offline tokens (no fixed expiry).
        Some(0) | None => 0,
        Some(s) => now.saturating_add(s),
    };
    TokenOutcome::Ok(Tokens {
        access_token,
        access_exp,
        refresh_token,
        refresh_exp,
        id_token,
    })
}

/// `exp` of a JWT, read without verification (timing only; jwtRules verify the token).
fn jwt_exp(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = crate::jwt::b64url_decode(payload)?;
    let doc: Value = serde_json::from_slice(&bytes).ok()?;
    lifetime(doc.get("exp")?.as_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: u64) -> String {
        let p = crate::jwt::b64url_encode(format!(r#"{{"exp":{exp}}}"#).as_bytes());
        format!("e30.{p}.c2ln")
    }

    #[test]
    fn keycloak_shaped_response() {
        let body = format!(
            r#"{{"access_token":"{}","expires_in":300,"refresh_expires_in":1800,"refresh_token":"r","token_type":"Bearer","id_token":"i","not-before-policy":0,"session_state":"s","scope":"openid"}}"#,
            jwt(1_250)
        );
        assert_eq!(
            parse(Some(200), body.as_bytes(), 1_000, ""),
            TokenOutcome::Ok(Tokens {
                access_token: jwt(1_250),
                access_exp: 1_250,
                refresh_token: Some("r".into()),
                refresh_exp: 2_800,
                id_token: Some("i".into()),
            })
        );
        // Opaque access token: expires_in only; absent: the default.
        let TokenOutcome::Ok(t) = parse(
            Some(200),
            br#"{"access_token":"opaque","expires_in":60}"#,
            10,
            "",
        ) else {
            panic!()
        };
        assert_eq!(
            (t.access_exp, t.refresh_exp, t.refresh_token),
            (70, 0, None)
        );
        let TokenOutcome::Ok(t) = parse(Some(200), br#"{"access_token":"opaque"}"#, 10, "") else {
            panic!()
        };
        assert_eq!(t.access_exp, 310);
    }

    #[test]
    fn errors_and_garbage() {
        assert_eq!(
            parse(
                Some(400),
                br#"{"error":"invalid_grant","error_description":"Code not valid"}"#,
                0,
                "s3cret"
            ),
            TokenOutcome::Rejected {
                error: "invalid_grant".into()
            }
        );
        assert_eq!(
            parse(Some(401), br#"{"error":"<script>x"}"#, 0, "s3cret"),
            TokenOutcome::Rejected {
                error: "scriptx".into()
            }
        );
        for (status, body, why) in [
            (
                None,
                &b""[..],
                "no response (timeout or connection failure)",
            ),
            (Some(503), b"", "HTTP status 503"),
            (Some(400), b"<html>", "HTTP status 400"),
            (
                Some(200),
                b"{\"access_token\": [",
                "token response is not JSON",
            ),
            (Some(200), b"{}", "token response has no access_token"),
            (
                Some(200),
                br#"{"access_token":"a","token_type":"mac"}"#,
                "token_type is not Bearer",
            ),
        ] {
            assert_eq!(
                parse(status, body, 0, "s3cret"),
                TokenOutcome::Unavailable(why.into()),
                "{status:?}"
            );
        }
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(
            parse(Some(200), &huge, 0, ""),
            TokenOutcome::Unavailable(_)
        ));
        assert_eq!(safe_error_code("", "s3cret"), "unknown_error");
    }

    #[test]
    fn an_echoed_client_secret_is_redacted_before_the_code_is_cut() {
        // The error code is logged and shown on the login-failed page. A provider that echoes
        // the client secret in it must not make meshgate show it, whole or in part: the code
        // was cut to 64 characters and never scrubbed, and characters outside [A-Za-z0-9_.-]
        // inside the secret were dropped, so no scrub of the raw secret would have matched.
        let secret = "Fr0nt/end+S3cret";
        for (error, want) in [
            (
                format!("invalid_client:{secret}"),
                "invalid_client<redacted>".to_string(),
            ),
            (
                format!("{}{secret}", "x".repeat(60)),
                format!("{}<red", "x".repeat(60)),
            ),
            (
                "bad Fr0nt end S3cret!".to_string(),
                "bad<redacted>".to_string(),
            ),
        ] {
            let body = serde_json::json!({ "error": error }).to_string();
            assert_eq!(
                parse(Some(401), body.as_bytes(), 0, secret),
                TokenOutcome::Rejected { error: want }
            );
        }
        // The callback's `error` parameter goes through the same function.
        assert_eq!(safe_error_code("Fr0ntendS3cret", secret), "<redacted>");
    }
}
