//! Compiled value matchers: what one Istio value string becomes at load time, so a request is
//! matched with plain comparisons (no parsing, no regex engine) on the hot path.

use std::net::IpAddr;

/// An Envoy `StringMatcher` as Istio generates it (`matcher/string.go` `StringMatcherWithPrefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: Istio emits the regex `.+`, i.e. "present and non-empty".
    NonEmpty,
    /// `*suffix` with an extra prefix (principals): Istio emits the regex `spiffe://.*suffix`.
    PrefixSuffix(String, String),
}

impl StrMatch {
    /// Istio's `StringMatcherWithPrefix(v, prefix)`: only a leading or trailing `*` is special;
    /// the prefix is not added to `*`.
    pub(crate) fn istio(v: &str, prefix: &str) -> Self {
        if v == "*" {
            StrMatch::NonEmpty
        } else if let Some(suffix) = v.strip_prefix('*') {
            if prefix.is_empty() {
                StrMatch::Suffix(suffix.to_string())
            } else {
                StrMatch::PrefixSuffix(prefix.to_string(), suffix.to_string())
            }
        } else if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix(format!("{prefix}{p}"))
        } else {
            StrMatch::Exact(format!("{prefix}{v}"))
        }
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        self.matches_case(s, false)
    }

    /// `ignore_case` is Envoy's ASCII-only `ignore_case` (used for `hosts`).
    pub(crate) fn matches_case(&self, s: &str, ignore_case: bool) -> bool {
        let (s, eq) = (s.as_bytes(), |a: &[u8], b: &[u8]| {
            if ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        });
        let starts = |p: &[u8]| s.len() >= p.len() && eq(&s[..p.len()], p);
        let ends = |x: &[u8]| s.len() >= x.len() && eq(&s[s.len() - x.len()..], x);
        match self {
            StrMatch::Exact(v) => eq(s, v.as_bytes()),
            StrMatch::Prefix(p) => starts(p.as_bytes()),
            StrMatch::Suffix(x) => ends(x.as_bytes()),
            StrMatch::NonEmpty => !s.is_empty(),
            // `prefix.*suffix` as a full match: both must fit without overlapping.
            StrMatch::PrefixSuffix(p, x) => {
                s.len() >= p.len() + x.len() && starts(p.as_bytes()) && ends(x.as_bytes())
            }
        }
    }
}

/// An Envoy `HeaderMatcher` as Istio generates it (`matcher/header.go`): `*` becomes
/// `present_match` (an empty header value counts), everything else a string match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderMatch {
    Present,
    Str(StrMatch),
}

impl HeaderMatch {
    pub(crate) fn istio(v: &str) -> Self {
        if v == "*" {
            HeaderMatch::Present
        } else {
            HeaderMatch::Str(StrMatch::istio(v, ""))
        }
    }

    pub(crate) fn matches(&self, value: Option<&str>, ignore_case: bool) -> bool {
        match (self, value) {
            (_, None) => false,
            (HeaderMatch::Present, Some(_)) => true,
            (HeaderMatch::Str(m), Some(v)) => m.matches_case(v, ignore_case),
        }
    }
}

/// An IP block: a single address (`/32`, `/128`) or a CIDR. Host bits are masked off, as Envoy's
/// `CidrRange` does, so `10.1.2.3/16` means `10.1.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// Accepts what Istio's `AddrStrToPrefix` (Go `netip`) accepts: `ip` or `ip/len`, decimal
    /// length without sign or leading zeros, no IPv6 zone.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("bad IP address {addr:?}"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => {
                let plain = !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_digit())
                    && (l == "0" || !l.starts_with('0'));
                match l.parse::<u8>() {
                    Ok(n) if plain && n <= max => n,
                    _ => return Err(format!("bad CIDR prefix length {l:?} in {s:?}")),
                }
            }
        };
        Ok(Cidr {
            net: mask(ip, len),
            len,
        })
    }

    /// Envoy compares only within one address family.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.len) == self.net
            }
            _ => false,
        }
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// A `source.namespace` / `namespaces` value. Istio emits the regex `.*/ns/<v>/.*` against the
/// peer principal, with every `*` in `<v>` turned into `.*` (so infix wildcards work too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamespaceGlob {
    /// The literal pieces between `*`s (at least one).
    parts: Vec<String>,
}

impl NamespaceGlob {
    pub(crate) fn new(v: &str) -> Self {
        NamespaceGlob {
            parts: v.split('*').map(str::to_string).collect(),
        }
    }

    /// Full-match semantics of `.*/ns/<glob>/.*` on the whole principal.
    pub(crate) fn matches_principal(&self, principal: &str) -> bool {
        principal.match_indices("/ns/").any(|(i, _)| {
            let rest = &principal[i + 4..];
            rest.match_indices('/')
                .any(|(j, _)| self.matches(&rest[..j]))
        })
    }

    fn matches(&self, s: &str) -> bool {
        let Some((first, rest)) = self.parts.split_first() else {
            return s.is_empty();
        };
        let Some(mut s) = s.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return s.is_empty();
        };
        // Leftmost placement of each middle piece is optimal for `*`-only globs.
        for piece in middle {
            match s.find(piece.as_str()) {
                Some(at) => s = &s[at + piece.len()..],
                None => return false,
            }
        }
        s.ends_with(last.as_str())
    }
}

/// An Envoy `uri_template` path matcher, built from an Istio path with `{*}` / `{**}`.
/// Envoy compiles `/a/{*}/b/{**}` to the regex `/a/[pchar]+/b/[pchar/]*`; this is the same
/// language without a regex engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathTemplate {
    toks: Vec<Tok>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(String),
    /// `{*}`: one or more pchars (one non-empty segment).
    One,
    /// `{**}`: zero or more pchars or `/` (zero or more segments).
    Any,
}

/// Characters a template literal may contain: RFC 3986 pchar without `*` (Istio's validator
/// accepts `=`, and Envoy 1.40 serves such templates).
fn is_literal_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b)
}

/// Characters `{*}` and `{**}` match: Envoy 1.40's glob set `a-zA-Z0-9-._~%!$&'()+,;:@=*`
/// (verified against the Envoy binary by the differential test).
fn is_glob_char(b: u8) -> bool {
    is_literal_char(b) || b == b'*'
}

impl PathTemplate {
    /// Whether Istio treats the path as a template (`security.ContainsPathTemplate`).
    pub(crate) fn is_template(path: &str) -> bool {
        path.contains("{*}") || path.contains("{**}")
    }

    /// Validates like Istio (`CheckValidPathTemplate`) and Envoy (`parseURLPatternSyntax`):
    /// every segment is exactly `{*}`, `{**}` or a pchar literal; nothing after `{**}` but
    /// literals; only a single trailing `/` may leave an empty segment.
    pub(crate) fn parse(path: &str) -> Result<Self, String> {
        let body = path
            .strip_prefix('/')
            .ok_or_else(|| format!("path template {path:?} must start with '/'"))?;
        let segments: Vec<&str> = body.split('/').collect();
        let mut toks = vec![Tok::Lit("/".to_string())];
        let mut seen_any = false;
        for (i, seg) in segments.iter().enumerate() {
            if i > 0 {
                push_lit(&mut toks, "/");
            }
            match *seg {
                "{*}" | "{**}" if seen_any => {
                    return Err(format!(
                        "invalid path template {path:?}: {{**}} must be the last operator"
                    ));
                }
                "{*}" => toks.push(Tok::One),
                "{**}" => {
                    seen_any = true;
                    toks.push(Tok::Any);
                }
                "" if i + 1 == segments.len() && i > 0 => {}
                s if s.contains(['{', '}']) => {
                    return Err(format!(
                        "invalid path template {path:?}: '{{' or '}}' outside a {{*}} or {{**}} segment"
                    ));
                }
                s if !s.is_empty() && s.bytes().all(is_literal_char) => push_lit(&mut toks, s),
                s => {
                    return Err(format!(
                        "invalid path template {path:?}: segment {s:?} is not a valid literal"
                    ));
                }
            }
        }
        Ok(PathTemplate { toks })
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match_toks(&self.toks, path)
    }
}

fn push_lit(toks: &mut Vec<Tok>, s: &str) {
    match toks.last_mut() {
        Some(Tok::Lit(l)) => l.push_str(s),
        _ => toks.push(Tok::Lit(s.to_string())),
    }
}

fn match_toks(toks: &[Tok], s: &str) -> bool {
    match toks.split_first() {
        None => s.is_empty(),
        Some((Tok::Lit(l), rest)) => s
            .strip_prefix(l.as_str())
            .is_some_and(|r| match_toks(rest, r)),
        // A `{*}` segment is always followed by `/` or the end, so it takes the whole segment.
        Some((Tok::One, rest)) => {
            let end = s.find('/').unwrap_or(s.len());
            end > 0
                && s.as_bytes()[..end].iter().all(|&b| is_glob_char(b))
                && match_toks(rest, &s[end..])
        }
        // Only literals follow `{**}` (validated), so trying each cut is cheap.
        Some((Tok::Any, rest)) => {
            let limit = s
                .bytes()
                .position(|b| b != b'/' && !is_glob_char(b))
                .unwrap_or(s.len());
            // Bytes before `limit` are ASCII, so every cut is a char boundary.
            (0..=limit).any(|cut| match_toks(rest, &s[cut..]))
        }
    }
}
