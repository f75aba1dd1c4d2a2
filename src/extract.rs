//! Token extraction from the configured locations (Envoy jwt_authn extractor semantics).

use crate::config::{Location, LocationKind};
use crate::request::RequestAttrs;
use std::borrow::Cow;

/// A token found in the request (borrowed from it unless the query string had to be decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted<'a> {
    pub token: Cow<'a, str>,
    /// Index into `Settings::locations`.
    pub location: usize,
}

/// Characters that start a token: base64url and the dot (Envoy's `ConstantBase64UrlEncodingCharsPlusDot`).
fn is_jwt_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Envoy's `extractJWT` (jwt_authn extractor.cc, 1.40): after the prefix, skip to the first
/// base64url character or dot; the token is the REST of the value, so trailing characters stay
/// and make it malformed (`Bearer <jwt>,x` is refused, not read as `<jwt>`). When nothing after the
/// prefix can start a token, the whole value is the token (Envoy's backwards compatibility): an
/// `Authorization: Bearer !!!` is a malformed token (401), not a request without one.
fn after_prefix<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        return Some(value.trim());
    }
    // The usual case without building a substring searcher (the first match is at 0 either way).
    let start = if value.starts_with(prefix) {
        prefix.len()
    } else {
        value.find(prefix)? + prefix.len()
    };
    Some(match value[start..].find(is_jwt_char) {
        Some(i) => &value[start + i..],
        None => value,
    })
}

/// Every token present in the request, in location order. Every value of a repeated header is
/// considered: a request cannot hide a second token behind the first.
pub fn extract<'a>(req: &'a RequestAttrs, locations: &[Location]) -> Vec<Extracted<'a>> {
    let mut out = Vec::new();
    let mut params: Option<Vec<(String, String)>> = None;
    for (i, loc) in locations.iter().enumerate() {
        match &loc.kind {
            LocationKind::Header { name, prefix } => {
                for (_, v) in req.headers.iter().filter(|(n, _)| n == name) {
                    if let Some(t) = after_prefix(v, prefix) {
                        if !t.is_empty() || prefix.is_empty() {
                            out.push(Extracted {
                                token: Cow::Borrowed(t),
                                location: i,
                            });
                        }
                    }
                }
            }
            LocationKind::Param(name) => {
                let params = params.get_or_insert_with(|| parse_query(req.query()));
                if let Some((_, v)) = params.iter().find(|(k, _)| k == name) {
                    out.push(Extracted {
                        token: Cow::Owned(v.clone()),
                        location: i,
                    });
                }
            }
            LocationKind::Cookie(name) => {
                if let Some(v) = cookie(req, name) {
                    out.push(Extracted {
                        token: Cow::Borrowed(v),
                        location: i,
                    });
                }
            }
        }
    }
    out
}

/// The value of a cookie by exact name (all `cookie` headers are searched).
pub fn cookie<'a>(req: &'a RequestAttrs, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Splits and percent-decodes a query string (`+` is a space, as in form encoding).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)], path: &str) -> RequestAttrs {
        RequestAttrs {
            path: path.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn locs() -> Vec<Location> {
        vec![
            Location {
                kind: LocationKind::Header {
                    name: "authorization".into(),
                    prefix: "Bearer ".into(),
                },
                rules: vec![0],
            },
            Location {
                kind: LocationKind::Param("access_token".into()),
                rules: vec![0],
            },
            Location {
                kind: LocationKind::Cookie("session".into()),
                rules: vec![0],
            },
            Location {
                kind: LocationKind::Header {
                    name: "x-jwt".into(),
                    prefix: String::new(),
                },
                rules: vec![0],
            },
        ]
    }

    #[test]
    fn finds_tokens_everywhere() {
        let r = req(
            &[
                ("authorization", "Bearer aaa.bbb.ccc"),
                ("cookie", "a=1; session=ddd.eee.fff"),
                ("x-jwt", "ggg"),
            ],
            "/p?x=1&access_token=hh%2Eii.jj",
        );
        let got: Vec<_> = extract(&r, &locs())
            .into_iter()
            .map(|e| (e.token, e.location))
            .collect();
        assert_eq!(
            got,
            vec![
                ("aaa.bbb.ccc".into(), 0),
                ("hh.ii.jj".into(), 1),
                ("ddd.eee.fff".into(), 2),
                ("ggg".into(), 3)
            ]
        );
    }

    #[test]
    fn prefix_must_be_present() {
        let r = req(&[("authorization", "Basic dXNlcjpwYXNz")], "/");
        assert!(extract(&r, &locs()).is_empty());
        let r = req(&[("authorization", "bearer abc")], "/");
        assert!(
            extract(&r, &locs()).is_empty(),
            "prefix match is case-sensitive, as in Envoy"
        );
    }

    #[test]
    fn token_is_the_rest_of_the_value_from_its_first_jwt_character() {
        // Envoy 1.40 (tests/e2e/test_attacks.py compares both): leading non-JWT characters are
        // skipped, trailing ones stay in the token and make it malformed.
        assert_eq!(
            after_prefix("Bearer   abc.def.ghi", "Bearer "),
            Some("abc.def.ghi")
        );
        assert_eq!(
            after_prefix("Bearer abc.def.ghi,x", "Bearer "),
            Some("abc.def.ghi,x")
        );
        assert_eq!(
            after_prefix("Bearer abc.def.ghi trailing", "Bearer "),
            Some("abc.def.ghi trailing")
        );
        assert_eq!(
            after_prefix("Bearer =abc.def.ghi", "Bearer "),
            Some("abc.def.ghi")
        );
        assert_eq!(
            after_prefix(r#"{"jwt": "abc.def"}"#, r#""jwt":"#),
            Some(r#"abc.def"}"#)
        );
        // Nothing that can start a token: the whole value, which then does not parse.
        assert_eq!(after_prefix("Bearer !!!", "Bearer "), Some("Bearer !!!"));
        assert_eq!(after_prefix("Bearer ", "Bearer "), Some("Bearer "));
        assert_eq!(after_prefix("Basic abc", "Bearer "), None);
    }

    #[test]
    fn repeated_headers_yield_every_token() {
        let r = req(
            &[
                ("authorization", "Bearer one"),
                ("authorization", "Bearer two"),
            ],
            "/",
        );
        assert_eq!(extract(&r, &locs()).len(), 2);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Bb+c%zz%"), "a+b c%zz%");
        assert_eq!(
            parse_query("a=1&&b&c=%41"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), "A".into())
            ]
        );
    }
}
