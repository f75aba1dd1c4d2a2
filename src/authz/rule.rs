//! Compiled rules and their evaluation against one request.

use super::matchers::{Cidr, HeaderMatch, NamespaceGlob, PathTemplate, StrMatch};
use crate::identity::Identity;
use crate::request::RequestAttrs;
use serde_json::Value;
use std::borrow::Cow;

/// What a request is matched against: the request plus the verified JWT, if any.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub req: &'a RequestAttrs,
    pub id: Option<&'a Identity>,
    /// The policy set evaluating (see [`crate::identity::PolicyMemo`]).
    pub owner: u64,
}

/// A compiled Istio rule: ANY `from` AND ANY `to` AND ALL `when` (an empty list matches).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub from: Vec<Vec<Cond>>,
    pub to: Vec<Vec<Cond>>,
    pub when: Vec<Cond>,
}

/// Connection attributes (host properties, not headers) a policy set reads. The adapter fetches
/// only these: each property is a host call on the request path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionNeeds {
    /// `remoteIpBlocks`, `remote.ip`.
    pub remote_ip: bool,
    /// `destination.ip`, `ports`, `destination.port`.
    pub destination: bool,
    /// `principals`, `namespaces`, `source.principal`, `source.namespace`.
    pub source_principal: bool,
    /// `connection.sni`.
    pub sni: bool,
}

impl ConnectionNeeds {
    pub(crate) fn add_rule(&mut self, rule: &Rule) {
        let conds = rule.from.iter().chain(&rule.to).flatten().chain(&rule.when);
        for pred in conds.flat_map(|c| c.any_of.iter().chain(&c.none_of)) {
            match pred {
                Pred::RemoteIp(_) => self.remote_ip = true,
                Pred::Port(_) | Pred::DestIp(_) => self.destination = true,
                Pred::Principal(_) | Pred::Namespace(_) => self.source_principal = true,
                Pred::Sni(_) => self.sni = true,
                Pred::Header(..)
                | Pred::Host(_)
                | Pred::Path(_)
                | Pred::PathTemplate(_)
                | Pred::RequestPrincipal { .. }
                | Pred::Claim { .. } => {}
            }
        }
    }
}

impl Rule {
    pub(crate) fn matches(&self, ctx: Ctx<'_>) -> bool {
        let any = |alts: &[Vec<Cond>]| alts.is_empty() || alts.iter().any(|conds| all(conds, ctx));
        any(&self.from) && any(&self.to) && all(&self.when, ctx)
    }
}

fn all(conds: &[Cond], ctx: Ctx<'_>) -> bool {
    conds.iter().all(|c| c.matches(ctx))
}

/// One field (`paths`/`notPaths`) or one `when` (`values`/`notValues`): matches when some value
/// matches (or there are none) and no negative value matches. Envoy builds exactly this:
/// `and(or(values), not(or(notValues)))`, so a missing attribute satisfies the `not` half.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cond {
    pub any_of: Vec<Pred>,
    pub none_of: Vec<Pred>,
    /// Its slot in the identity's [`crate::identity::PolicyMemo`], when it reads only the token.
    pub memo: Option<u8>,
}

impl Cond {
    fn matches(&self, ctx: Ctx<'_>) -> bool {
        match (self.memo, ctx.id) {
            (Some(slot), Some(id)) => id.memo.get_or(ctx.owner, slot, || self.evaluate(ctx)),
            _ => self.evaluate(ctx),
        }
    }

    fn evaluate(&self, ctx: Ctx<'_>) -> bool {
        (self.any_of.is_empty() || self.any_of.iter().any(|p| p.matches(ctx)))
            && !self.none_of.iter().any(|p| p.matches(ctx))
    }

    /// Whether its outcome depends on the verified token alone.
    pub(crate) fn reads_only_the_token(&self) -> bool {
        self.any_of
            .iter()
            .chain(&self.none_of)
            .all(|p| matches!(p, Pred::Claim { .. } | Pred::RequestPrincipal { .. }))
    }
}

/// Request header a condition reads. Pseudo-headers map to the request fields because the
/// adapter keeps them out of `headers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderKey {
    Authority,
    Method,
    Path,
    Scheme,
    /// Lower-cased name.
    Named(String),
}

/// One compiled value of one attribute.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Pred {
    /// `methods`, `request.headers[..]`: case-sensitive header match.
    Header(HeaderKey, HeaderMatch),
    /// `hosts`: `:authority`, ASCII case-insensitive (Istio `HostMatcher`); the port is part of it.
    Host(HeaderMatch),
    /// `paths`: string match on the path without query.
    Path(StrMatch),
    PathTemplate(PathTemplate),
    /// `ports`, `destination.port`.
    Port(u16),
    /// `ipBlocks`, `source.ip` (Envoy `direct_remote_ip`).
    /// `remoteIpBlocks`, `remote.ip` (Envoy `remote_ip`).
    RemoteIp(Cidr),
    /// `destination.ip`.
    DestIp(Cidr),
    /// `principals`, `source.principal`: the peer URI SAN (value carries `spiffe://`).
    Principal(StrMatch),
    /// `namespaces`, `source.namespace`.
    Namespace(NamespaceGlob),
    /// `requestPrincipals`, `request.auth.principal`: `iss` AND `sub` claim matchers.
    RequestPrincipal {
        iss: StrMatch,
        sub: StrMatch,
    },
    /// `request.auth.claims[..]`, `.audiences` (`aud`), `.presenter` (`azp`).
    Claim {
        path: Vec<String>,
        m: StrMatch,
    },
    /// `connection.sni`.
    Sni(StrMatch),
}

impl Pred {
    fn matches(&self, ctx: Ctx<'_>) -> bool {
        let req = ctx.req;
        match self {
            Pred::Header(key, m) => m.matches(header(req, key).as_deref(), false),
            Pred::Host(m) => m.matches(header(req, &HeaderKey::Authority).as_deref(), true),
            Pred::Path(m) => m.matches(req.path_only()),
            Pred::PathTemplate(t) => t.matches(req.path_only()),
            Pred::Port(p) => req.destination_port == Some(*p),
            Pred::RemoteIp(c) => req.remote_ip.is_some_and(|ip| c.contains(ip)),
            Pred::DestIp(c) => req.destination_ip.is_some_and(|ip| c.contains(ip)),
            Pred::Principal(m) => req
                .source_principal
                .as_deref()
                .is_some_and(|p| m.matches(p)),
            Pred::Namespace(g) => req
                .source_principal
                .as_deref()
                .is_some_and(|p| g.matches_principal(p)),
            Pred::RequestPrincipal { iss, sub } => ctx.id.is_some_and(|id| {
                let claim = |name: &str| id.claims.get(name).and_then(Value::as_str);
                claim("iss").is_some_and(|v| iss.matches(v))
                    && claim("sub").is_some_and(|v| sub.matches(v))
            }),
            Pred::Claim { path, m } => ctx.id.is_some_and(|id| claim_matches(id, path, m)),
            Pred::Sni(m) => req.sni.as_deref().is_some_and(|s| m.matches(s)),
        }
    }
}

/// Envoy's header lookup: all values of a repeated header joined with `,`; an empty
/// `:authority` counts as absent.
fn header<'a>(req: &'a RequestAttrs, key: &HeaderKey) -> Option<Cow<'a, str>> {
    let non_empty = |s: &'a str| (!s.is_empty()).then_some(Cow::Borrowed(s));
    match key {
        HeaderKey::Authority => non_empty(&req.host),
        HeaderKey::Method => non_empty(&req.method),
        HeaderKey::Path => non_empty(&req.path),
        HeaderKey::Scheme => non_empty(&req.scheme),
        HeaderKey::Named(name) => {
            let mut values = req
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str());
            let first = values.next()?;
            match values.next() {
                None => Some(Cow::Borrowed(first)),
                Some(second) => {
                    let mut joined = format!("{first},{second}");
                    for v in values {
                        joined.push(',');
                        joined.push_str(v);
                    }
                    Some(Cow::Owned(joined))
                }
            }
        }
    }
}

/// Istio's `MetadataListValueMatcherForJWTClaims`: the claim matches if it is a string that
/// matches, or a list with a string element that matches. Top-level space-delimited claims
/// (`scope`, ...) are a list after Envoy's payload normalisation. Numbers, booleans and
/// objects never match a string matcher.
fn claim_matches(id: &Identity, path: &[String], m: &StrMatch) -> bool {
    match id.claim(path) {
        Some(Value::String(s)) => match path {
            [top] if id.is_space_delimited(top) => {
                s.split(' ').filter(|p| !p.is_empty()).any(|p| m.matches(p))
            }
            _ => m.matches(s),
        },
        Some(Value::Array(items)) => items
            .iter()
            .any(|v| v.as_str().is_some_and(|s| m.matches(s))),
        _ => false,
    }
}
