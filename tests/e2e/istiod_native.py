"""Native Envoy equivalent of what istiod generates for RequestAuthentication +
AuthorizationPolicy, used as the reference side of meshgate's differential tests.

This is an independent Python re-implementation of istiod's *behaviour* (no code
copied).  Each function names the istio/istio file it mirrors.  Reference
snapshot: istio/istio 86c9f01 (2026-08), plus the JWTRule `presence` rendering
from the istio/istio PR #60830 commit 0fcc0d6d2fd (API: istio/api PR #3737).

Output dicts use Envoy v3 *proto field names* (snake_case) and follow protojson
conventions, exactly like istiod's config dump: proto3 default values (false,
0, "", empty lists/maps, RBAC action ALLOW) are omitted; oneof members (e.g.
`exact: ""`) are always present.

Public API
----------
render_jwt_authn(jwt_rules, jwks_mode="remote", resolved_jwks=None, ...) -> dict | None
render_rbac(policies, ...) -> list[dict]
validate_authorization_policy(policy) -> list[str]   (istiod admission webhook)
rbac_deny_body() -> str
jwks_clusters(jwt_filter) -> list[dict]               (helper for a bootstrap)
build_bootstrap(http_filters, ...) -> dict            (minimal Envoy bootstrap)

Stdlib only.
"""

from __future__ import annotations

import ipaddress
import logging
import re

log = logging.getLogger("istiod_native")

JWT_FILTER_NAME = "envoy.filters.http.jwt_authn"  # pilot/pkg/xds/filters/filters.go EnvoyJwtFilterName
JWT_PAYLOAD_KEY = "payload"  # filters.go EnvoyJwtFilterPayload
RBAC_FILTER_NAME = "envoy.filters.http.rbac"  # pkg/wellknown HTTPRoleBasedAccessControl
ROUTER_FILTER_NAME = "envoy.filters.http.router"

JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
URI_TEMPLATE_TYPE = "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

# authz/model/model.go constants
SHADOW_ALLOW_STAT_PREFIX = "istio_dry_run_allow_"
SHADOW_DENY_STAT_PREFIX = "istio_dry_run_deny_"

# Fail-closed JWKS used when istiod could not fetch a JWKS (jwks_resolver.go
# BuildLocalJwks -> PublicOnlyJwks).  Istio ships an RSA public key whose private
# half was discarded; this is our own key generated the same way (private key
# never stored), so every token fails verification just like in istiod.
FAIL_CLOSED_JWKS = (
    '{"keys":[{"kty":"RSA","e":"AQAB","n":"'
    "pWO1thm2FNdUJykXp0ajS2kyHWGbJ9QXpVcj5ONV5hX45JwF4YmTCCFkLwzvD8sXqG_xfeZDCTk0yP2P"
    "jYJRmfxpVu6eE1VYN6LCWLojxWDtLVzoJxcLLwvrBX6YYQqSYvuvDWMbIHdKXgCzlu9MP0DBxbyiwTfl"
    "3HxS-k9Z-Y3FXq_SbZuFi9un3QEV-3G1D-n8e4sDeb7m3H53SrF-nmB9vzzU-WGSTzGREgzeT5HLT-bG"
    "crQb00tdH_HbKVIsrGUFuB194zggBL-_dsuC6KGBzP_p3TEt2wYE4lzX7ZbFtgsi0iGhbb6nAKw_i6UD"
    'Y3Y3WTGTrUcM66bwCV-Zqw"}]}'
)


def rbac_deny_body() -> str:
    """Body of Envoy's RBAC 403 (source/extensions/filters/http/rbac/rbac_filter.cc)."""
    return "RBAC: access denied"


def _warn(warnings: list | None, msg: str) -> None:
    log.info(msg)
    if warnings is not None:
        warnings.append(msg)


def _get(d: dict, camel: str, default=None):
    """Read an Istio CRD field given in camelCase (also accepts snake_case)."""
    if camel in d:
        return d[camel]
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
    return d.get(snake, default)


# ---------------------------------------------------------------------------
# Durations (google.protobuf.Duration, protojson text form)
# ---------------------------------------------------------------------------

_GO_UNITS = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "µs": 10**3, "ns": 1}


def _to_nanos(value) -> int:
    """Accept protojson ("1.5s"), Go-style ("1m30s", "500ms") or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")
    if isinstance(value, (int, float)):
        return round(value * 10**9)
    text = str(value).strip()
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"bad duration {value!r}")
    total = 0
    for num, unit in parts:
        whole, _, frac = num.partition(".")
        scale = _GO_UNITS[unit]
        total += int(whole or "0") * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
    return total


def _duration(nanos: int) -> str:
    """protojson Duration: seconds with 0, 3, 6 or 9 fractional digits, suffix 's'."""
    sign = "-" if nanos < 0 else ""
    secs, frac = divmod(abs(nanos), 10**9)
    if frac == 0:
        return f"{sign}{secs}s"
    if frac % 10**6 == 0:
        return f"{sign}{secs}.{frac // 10**6:03d}s"
    if frac % 10**3 == 0:
        return f"{sign}{secs}.{frac // 10**3:06d}s"
    return f"{sign}{secs}.{frac:09d}s"


# ---------------------------------------------------------------------------
# RequestAuthentication -> envoy.filters.http.jwt_authn
# mirrors pilot/pkg/security/authn/policy_applier.go convertToEnvoyJwtConfig
# ---------------------------------------------------------------------------


def parse_jwks_uri(uri: str) -> tuple[str, int, str]:
    """(hostname, port, scheme) like pkg/config/security/security.go ParseJwksURI.

    Only http/https; default port 80/443; Go's url.Hostname() (no lower-casing,
    IPv6 brackets stripped).  Raises ValueError otherwise.
    """
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", uri)
    scheme = m.group(1).lower() if m else ""
    if scheme not in ("http", "https"):
        raise ValueError(f"URI scheme {scheme!r} is not supported")
    rest = m.group(2)
    netloc = rest[2:].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0] if rest.startswith("//") else ""
    hostport = netloc.rsplit("@", 1)[-1]
    port_text = ""
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        if tail.startswith(":"):
            port_text = tail[1:]
    elif ":" in hostport:
        host, port_text = hostport.rsplit(":", 1)
    else:
        host = hostport
    port = 80 if scheme == "http" else 443
    if port_text:
        if not port_text.isdigit():
            raise ValueError(f"invalid port {port_text!r}")
        port = int(port_text)
    return host, port, scheme


def _outbound_cluster(host: str, port: int) -> str:
    """pilot/pkg/model/service.go BuildSubsetKey(outbound, "", host, port)."""
    return f"outbound|{port}||{host}"


def _space_delimited_claims(extra) -> list[str]:
    """policy_applier.go buildSpaceDelimitedClaims: scope+permission always; sorted union."""
    defaults = ["permission", "scope"]
    if not extra:  # a nil/empty repeated field in Go
        return defaults
    return sorted(set(extra) | set(defaults))


def _is_required(rule: dict) -> bool:
    """JWTRule.presence (istio/api #3737): REQUIRED | OPTIONAL (default)."""
    presence = _get(rule, "presence", "OPTIONAL")
    return presence in ("REQUIRED", 1)


def render_jwt_authn(
    jwt_rules: list[dict],
    jwks_mode: str = "remote",
    resolved_jwks: dict[str, str] | None = None,
    *,
    jwt_cache_size: int | None = None,
    clear_route_cache: bool = True,
    mesh_services: dict[str, str] | None = None,
    warnings: list[str] | None = None,
) -> dict | None:
    """Render the jwt_authn HTTP filter istiod builds from merged JWTRules.

    jwt_rules: Istio JWTRule dicts (issuer, audiences, jwksUri, jwks, fromHeaders,
      fromParams, fromCookies, outputPayloadToHeader, forwardOriginalToken,
      outputClaimToHeaders, timeout, spaceDelimitedClaims, presence).
    jwks_mode: "remote" (= PILOT_JWT_ENABLE_REMOTE_JWKS=envoy; Envoy fetches
      jwksUri through cluster outbound|<port>||<host>) or "istiod" (default
      istiod mode: istiod fetched the JWKS and inlines it; taken from
      resolved_jwks[issuer] (or [jwksUri]); missing -> fail-closed key), or
      "hybrid" (PILOT_JWT_ENABLE_REMOTE_JWKS=hybrid): remote only when the
      jwksUri host is a mesh service (a key of mesh_services), else inline.
      Rules without jwksUri are always inlined (jwks, or istiod's OIDC
      discovery result in resolved_jwks).
    clear_route_cache: istiod passes `proxy.Type != SidecarProxy`, i.e. True
      for gateways, False for sidecars (plugin/authn/authentication.go).
    mesh_services: jwksUri host -> registry hostname, i.e. hosts for which
      istiod's model.LookupCluster succeeds; the cluster name then uses the
      registry hostname (telemetry_logging.go LookupCluster).
    jwt_cache_size: not produced by istiod; adds jwt_cache_config to every
      provider (benchmark knob).
    Returns None when there are no rules (istiod then adds no filter).
    """
    if not jwt_rules:
        return None
    # pkg/jwt ConvertToJwksFetchMode names plus "remote" for envoy
    mode = {"remote": "envoy", "envoy": "envoy", "hybrid": "hybrid", "true": "hybrid",
            "istiod": "istiod", "false": "istiod"}.get(jwks_mode)
    if mode is None:
        raise ValueError(f"unsupported jwks_mode {jwks_mode!r} (use 'remote', 'hybrid' or 'istiod')")
    resolved_jwks = resolved_jwks or {}
    mesh_services = mesh_services or {}

    # newPolicyApplier: rules of all policies merged and sorted by issuer (Go's
    # SortFunc is insertion sort - i.e. stable - for <= 12 elements).
    rules = sorted(jwt_rules, key=lambda r: _get(r, "issuer", "") or "")

    providers: dict[str, dict] = {}
    inner_and: list[dict] = []  # per provider: P (REQUIRED) or any{P, allow_missing}
    outer_or: list[dict] = []  # optional providers only
    has_required = False

    for i, rule in enumerate(rules):
        issuer = _get(rule, "issuer", "") or ""
        jwks_uri = _get(rule, "jwksUri", "") or ""
        inline_jwks = _get(rule, "jwks", "") or ""
        provider: dict = {}
        if issuer:
            provider["issuer"] = issuer
        if _get(rule, "audiences"):
            provider["audiences"] = list(_get(rule, "audiences"))

        timeout_ns = 5 * 10**9 if _get(rule, "timeout") is None else _to_nanos(_get(rule, "timeout"))
        local_key = inline_jwks
        if mode != "istiod" and jwks_uri:
            # Envoy/hybrid mode: remote_jwks via an outbound cluster.  An
            # unparsable URI leaves host="" port=0 (the lookup then fails).
            try:
                host, port, _ = parse_jwks_uri(jwks_uri)
            except ValueError as err:
                _warn(warnings, f"jwt rule {issuer!r}: failed to parse jwks uri: {err}")
                host, port = "", 0
            if host in mesh_services:
                cluster = _outbound_cluster(mesh_services[host], port)
            elif mode == "envoy":
                # lookup failed: istiod still emits remote_jwks, cluster named from the URI
                cluster = _outbound_cluster(host, port)
            else:
                cluster, local_key = None, ""  # hybrid fallback: istiod fetches (inline jwks ignored)
            if cluster is not None:
                provider["remote_jwks"] = {
                    "http_uri": {"uri": jwks_uri, "cluster": cluster, "timeout": _duration(timeout_ns)},
                    "cache_duration": "300s",
                }
        if "remote_jwks" not in provider:
            # jwks_resolver.go BuildLocalJwks: inline jwks, else what istiod fetched
            # (jwksUri or OIDC discovery of issuer), else the fail-closed key.
            key = local_key or resolved_jwks.get(issuer) or resolved_jwks.get(jwks_uri)
            if not key:
                _warn(warnings, f"jwt rule {issuer!r}: no JWKS resolved; using fail-closed public-only JWKS")
                key = FAIL_CLOSED_JWKS
            provider["local_jwks"] = {"inline_string": key}

        if _get(rule, "forwardOriginalToken"):
            provider["forward"] = True
        from_headers = []
        for loc in _get(rule, "fromHeaders") or []:
            h = {"name": loc.get("name", "")}
            if loc.get("prefix"):
                h["value_prefix"] = loc["prefix"]
            from_headers.append(h)
        if from_headers:
            provider["from_headers"] = from_headers
        if _get(rule, "fromParams"):
            provider["from_params"] = list(_get(rule, "fromParams"))
        if _get(rule, "outputPayloadToHeader"):
            provider["forward_payload_header"] = _get(rule, "outputPayloadToHeader")
        if _get(rule, "fromCookies"):
            provider["from_cookies"] = list(_get(rule, "fromCookies"))
        provider["payload_in_metadata"] = JWT_PAYLOAD_KEY
        claim_to_headers = [
            {"header_name": c.get("header", ""), "claim_name": c.get("claim", "")}
            for c in (_get(rule, "outputClaimToHeaders") or [])
        ]
        if claim_to_headers:
            provider["claim_to_headers"] = claim_to_headers
        if clear_route_cache:
            provider["clear_route_cache"] = True
        provider["normalize_payload_in_metadata"] = {
            "space_delimited_claims": _space_delimited_claims(_get(rule, "spaceDelimitedClaims"))
        }
        if jwt_cache_size is not None:
            provider["jwt_cache_config"] = {"jwt_cache_size": jwt_cache_size}

        name = f"origins-{i}"
        providers[name] = provider
        # presence handling: istio/istio PR #60830 (commit 0fcc0d6d2fd)
        if _is_required(rule):
            has_required = True
            inner_and.append({"provider_name": name})
        else:
            inner_and.append({"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}})
            outer_or.append({"provider_name": name})

    if len(inner_and) == 1:
        requires = inner_and[0]
    else:
        # any{P1..Pn, all{any{P1,missing}..}}: the inner AND enforces "every token
        # present is valid"; the outer OR covers providers sharing a location.
        # With a REQUIRED provider the outer OR is dropped (PR #60830).
        and_req = {"requires_all": {"requirements": inner_and}}
        if has_required or not outer_or:
            requires = and_req
        else:
            requires = {"requires_any": {"requirements": outer_or + [and_req]}}

    return {
        "name": JWT_FILTER_NAME,
        "typed_config": {
            "@type": JWT_AUTHN_TYPE,
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": requires}],
            "bypass_cors_preflight": True,
        },
    }


# ---------------------------------------------------------------------------
# Matchers: pilot/pkg/security/authz/matcher/{string,header,metadata,template}.go
# ---------------------------------------------------------------------------

_GO_REGEX_SPECIAL = set("\\.+*?()|[]{}^$")


def _quote_meta(s: str) -> str:
    """Go regexp.QuoteMeta (escapes fewer characters than Python's re.escape)."""
    return "".join("\\" + c if c in _GO_REGEX_SPECIAL else c for c in s)


def _sm_exact(v: str, ignore_case: bool = False) -> dict:
    return {"exact": v, "ignore_case": True} if ignore_case else {"exact": v}


def _sm_prefix(v: str, ignore_case: bool = False) -> dict:
    return {"prefix": v, "ignore_case": True} if ignore_case else {"prefix": v}


def _sm_suffix(v: str, ignore_case: bool = False) -> dict:
    return {"suffix": v, "ignore_case": True} if ignore_case else {"suffix": v}


def _sm_regex(r: str) -> dict:
    return {"safe_regex": {"regex": r}}


def _string_matcher(v: str, prefix: str = "") -> dict:
    """string.go StringMatcherWithPrefix: '*' -> regex '.+', '*x' suffix, 'x*' prefix."""
    if v == "*":
        return _sm_regex(".+")
    if v.startswith("*"):
        if prefix == "":
            return _sm_suffix(v[1:])
        return _sm_regex(prefix + ".*" + _quote_meta(v[1:]))
    if v.endswith("*"):
        return _sm_prefix(prefix + v[:-1])
    return _sm_exact(prefix + v)


def _or_value_matcher(matchers: list[dict]) -> dict:
    """string.go OrMatcher: a single matcher is returned unwrapped."""
    if len(matchers) == 1:
        return matchers[0]
    return {"or_match": {"value_matchers": matchers}}


def _string_or_matcher(values: list[str]) -> dict:
    return _or_value_matcher([{"string_match": _string_matcher(v)} for v in values])


def _header_matcher(name: str, v: str, ignore_case: bool = False) -> dict:
    """header.go HeaderMatcher / HostMatcher (HostMatcher = ignore_case)."""
    if v == "*":
        return {"name": name, "present_match": True}
    if v.startswith("*"):
        return {"name": name, "string_match": _sm_suffix(v[1:], ignore_case)}
    if v.endswith("*"):
        return {"name": name, "string_match": _sm_prefix(v[:-1], ignore_case)}
    return {"name": name, "string_match": _sm_exact(v, ignore_case)}


def _metadata_matcher(filter_name: str, keys: list[str], value: dict) -> dict:
    return {"filter": filter_name, "path": [{"key": k} for k in keys], "value": value}


def _metadata_list_value_matcher(filter_name: str, keys: list[str], value: dict) -> dict:
    """metadata.go MetadataListValueMatcher with useExtendedJwt=true:
    or{ list_match.one_of(value), value } -> matches a list containing a match
    OR a plain string that matches."""
    return _metadata_matcher(
        filter_name, keys, {"or_match": {"value_matchers": [{"list_match": {"one_of": value}}, value]}}
    )


def _jwt_claim_string_matcher(claim: str, sm: dict) -> dict:
    """model/util.go MetadataStringMatcherForJWTClaim (payload.<claim>, string only)."""
    return _metadata_matcher(JWT_FILTER_NAME, [JWT_PAYLOAD_KEY, claim], {"string_match": sm})


def _jwt_claims_list_matcher(claims: list[str], value: dict) -> dict:
    """model/util.go MetadataListValueMatcherForJWTClaims."""
    return _metadata_list_value_matcher(JWT_FILTER_NAME, [JWT_PAYLOAD_KEY] + list(claims), value)


def _contains_path_template(v: str) -> bool:
    """pkg/config/security ContainsPathTemplate."""
    return "{*}" in v or "{**}" in v


def _path_template(v: str) -> str:
    """template.go sanitizePathTemplate: {**} -> **, {*} -> *."""
    return v.replace("{**}", "**").replace("{*}", "*")


# ---------------------------------------------------------------------------
# Envoy RBAC Permission / Principal builders (model/permission.go, principal.go)
# ---------------------------------------------------------------------------


def _perm_and(rules):
    return {"and_rules": {"rules": rules}}


def _perm_or(rules):
    return {"or_rules": {"rules": rules}}


def _perm_not(rule):
    return {"not_rule": rule}


def _prin_and(ids):
    return {"and_ids": {"ids": ids}}


def _prin_or(ids):
    return {"or_ids": {"ids": ids}}


def _prin_not(pid):
    return {"not_id": pid}


def _match_never_policy() -> dict:
    """builder.go rbacPolicyMatchNever (used for a policy without rules)."""
    return {"permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}


class _GenError(ValueError):
    pass


def _cidr(addr: str) -> dict:
    """networking/util AddrStrToCidrRange (Go netip semantics; the address is
    NOT masked: '10.0.0.1/16' stays address 10.0.0.1, prefix_len 16)."""
    if not addr:
        raise _GenError("empty address")
    if "/" in addr:
        ip_text, bits_text = addr.rsplit("/", 1)
        if "%" in ip_text:
            raise _GenError(f"netip.ParsePrefix({addr!r}): IPv6 zones cannot be present in a prefix")
        if not bits_text.isdigit() or (len(bits_text) > 1 and bits_text[0] == "0"):
            raise _GenError(f"netip.ParsePrefix({addr!r}): bad bits")
        ip = _parse_ip(ip_text)
        bits = int(bits_text)
        if bits > ip.max_prefixlen:
            raise _GenError(f"netip.ParsePrefix({addr!r}): prefix length out of range")
    else:
        # netip.ParseAddr accepts an IPv6 zone ("fe80::1%eth0"); PrefixFrom drops it
        ip_text, has_zone, zone = addr.partition("%")
        ip = _parse_ip(ip_text)
        if has_zone and (not zone or ip.version == 4):
            raise _GenError(f"ParseAddr({addr!r}): invalid zone")
        bits = ip.max_prefixlen
    text = str(ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        text = f"::ffff:{ip.ipv4_mapped}"  # Go prints the embedded IPv4 dotted
    return {"address_prefix": text, "prefix_len": bits}


def _parse_ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError as err:
        raise _GenError(f"ParseAddr({text!r}): {err}") from None


def _port(v: str) -> int:
    """model/util.go convertToPort: decimal, <= 65535."""
    v = str(v)  # Istio ports are strings; ints accepted for convenience
    if not re.fullmatch(r"[0-9]+", v) or int(v) > 65535:
        raise _GenError(f"invalid port {v}")
    return int(v)


def _name_in_brackets(s: str) -> str:
    """model/util.go extractNameInBrackets."""
    if not (s.startswith("[") and s.endswith("]")):
        raise _GenError(f"expecting format [<NAME>], but found {s}")
    return s[1:-1]


def _names_in_nested_brackets(s: str) -> list[str]:
    """model/util.go extractNameInNestedBrackets: "[a][b]" -> [a, b]; "[a.b]" -> [a.b];
    "" -> [] (so `request.auth.claims` alone matches on the payload itself)."""
    claims = []
    begin = 0
    while begin < len(s):
        end = -1
        if s[begin] == "[":
            for i in range(begin + 1, len(s)):
                if s[i] == "[":
                    break
                if s[i] == "]":
                    end = i
                    break
        if end == -1:
            return [_name_in_brackets(s)]
        claims.append(s[begin + 1 : end])
        begin = end + 1
    return claims


# ---------------------------------------------------------------------------
# Generators (model/generator.go).  "simple" generators turn ONE value into one
# permission/principal (values are OR-ed by the caller); "extended" generators
# turn the whole value list into one matcher.
# ---------------------------------------------------------------------------


def _gen_dest_ip(key, v):
    return {"destination_ip": _cidr(v)}


def _gen_dest_port(key, v):
    return {"destination_port": _port(v)}


def _gen_conn_sni(key, v):
    return {"requested_server_name": _string_matcher(v)}


def _gen_src_ip(key, v):
    return {"direct_remote_ip": _cidr(v)}


def _gen_remote_ip(key, v):
    return {"remote_ip": _cidr(v)}


def _authenticated(sm: dict) -> dict:
    # principal.go principalAuthenticated with useAuthenticated=true (sidecars and
    # gateways; only ambient waypoints use the filter-state variant)
    return {"authenticated": {"principal_name": sm}}


def _gen_src_namespace(key, v):
    regex_ns = ".*".join(_quote_meta(p) for p in v.split("*"))
    return _authenticated(_sm_regex(f".*/ns/{regex_ns}/.*"))


def _service_account_regex(default_ns: str, v: str) -> str:
    ns, sep, sa = v.partition("/")
    if not sep:
        ns, sa = default_ns, v
    return f"spiffe://.+/ns/{_quote_meta(ns)}/(.+/|)sa/{_quote_meta(sa)}(/.+)?"


def _gen_src_service_account(policy_ns: str):
    """srcServiceAccountGenerator: 'sa' or 'ns/sa'; namespace defaults to the policy's."""
    return lambda key, v: _authenticated(_sm_regex(_service_account_regex(policy_ns, v)))


def _gen_src_trust_domain(key, v):
    if v == "*":
        return _authenticated(_sm_prefix("spiffe://"))
    if "*" not in v:
        return _authenticated(_sm_prefix("spiffe://" + v + "/"))
    before, after = v.split("*", 1)
    return _authenticated(_sm_regex(f"spiffe://{_quote_meta(before)}[^/]*{_quote_meta(after)}/.*"))


def _gen_src_principal(key, v):
    return _authenticated(_string_matcher(v, "spiffe://"))


def _gen_request_header(key, v):
    header = _name_in_brackets(key[len("request.headers") :])
    return {"header": _header_matcher(header, v)}


def _gen_host(key, v):
    return {"header": _header_matcher(":authority", v, ignore_case=True)}


def _gen_method(key, v):
    return {"header": _header_matcher(":method", v)}


def _gen_path(key, v):
    if _contains_path_template(v):
        return {
            "uri_template": {
                "name": "uri-template",
                "typed_config": {"@type": URI_TEMPLATE_TYPE, "path_template": _path_template(v)},
            }
        }
    return {"url_path": {"path": _string_matcher(v)}}



def _xgen_request_principal(key, values):
    """requestPrincipalGenerator: '<iss>/<sub>' split at the LAST '/' into
    payload.iss and payload.sub string matchers."""
    ors = []
    for value in values:
        idx = value.rfind("/")
        found = idx >= 0
        iss, sub = (value[:idx], value[idx + 1 :]) if found else (value, "")
        if value == "*":
            m_iss, m_sub = _sm_regex(".+"), _sm_regex(".+")
        elif value.startswith("*"):
            if found:
                m_iss = _sm_regex(".+") if iss == "*" else _sm_suffix(iss[1:])
                m_sub = _sm_exact(sub)
            else:
                m_iss, m_sub = _sm_regex(".+"), _sm_suffix(value[1:])
        elif value.endswith("*"):
            if found:
                m_iss = _sm_exact(iss)
                m_sub = _sm_regex(".+") if sub == "*" else _sm_prefix(sub[:-1])
            else:
                m_iss, m_sub = _sm_prefix(value[:-1]), _sm_regex(".+")
        else:
            m_iss, m_sub = _sm_exact(iss), _sm_exact(sub)
        ors.append(
            _prin_and(
                [
                    {"metadata": _jwt_claim_string_matcher("iss", m_iss)},
                    {"metadata": _jwt_claim_string_matcher("sub", m_sub)},
                ]
            )
        )
    if len(ors) == 1:
        return ors[0]
    return _prin_or(ors) if ors else None


def _xgen_request_audiences(key, values):
    return {"metadata": _jwt_claims_list_matcher(["aud"], _string_or_matcher(values))}


def _xgen_request_presenter(key, values):
    return {"metadata": _jwt_claims_list_matcher(["azp"], _string_or_matcher(values))}


def _xgen_request_claims(key, values):
    claims = _names_in_nested_brackets(key[len("request.auth.claims") :])
    return {"metadata": _jwt_claims_list_matcher(claims, _string_or_matcher(values))}


def _xgen_envoy_filter(key, values):
    """experimental.envoy.filters.<f>[<k>]: permission-side metadata matcher;
    a value written as "[v]" is a list match, otherwise a string match."""
    body = key[len("experimental.") :] if key.startswith("experimental.") else key
    if body.endswith("]"):
        body = body[:-1]
    parts = body.split("[", 1)
    if len(parts) != 2:
        raise _GenError(f"invalid key: {key}")
    matchers = []
    for v in values:
        if v.startswith("[") and v.endswith("]"):
            inner = v.strip("[]")
            matchers.append({"list_match": {"one_of": {"string_match": _string_matcher(inner)}}})
        else:
            matchers.append({"string_match": _string_matcher(v)})
    return {"metadata": _metadata_matcher(parts[0], [parts[1]], _or_value_matcher(matchers))}


class _Rule:
    """model.go `rule`: one attribute with values / notValues."""

    __slots__ = ("key", "values", "not_values", "gen", "extended")

    def __init__(self, key, values, not_values, gen, extended):
        self.key, self.values, self.not_values = key, list(values or []), list(not_values or [])
        self.gen, self.extended = gen, extended


def _append_last(lst, gen, key, values, not_values, extended=False):
    if values or not_values:
        lst.append(_Rule(key, values, not_values, gen, extended))


def _insert_front(lst, gen, key, values, not_values, extended=False):
    if values or not_values:
        lst.insert(0, _Rule(key, values, not_values, gen, extended))


def _when_target(key: str, policy_ns: str):
    """model.go New(): which generator / side handles a `when` key.
    Returns (side, generator, extended) or raises _GenError('unknown attribute')."""
    if key == "destination.ip":
        return "perm", _gen_dest_ip, False
    if key == "destination.port":
        return "perm", _gen_dest_port, False
    if key == "connection.sni":
        return "perm", _gen_conn_sni, False
    if key.startswith("experimental.envoy.filters."):
        return "perm", _xgen_envoy_filter, True
    if key == "source.ip":
        return "prin", _gen_src_ip, False
    if key == "remote.ip":
        return "prin", _gen_remote_ip, False
    if key == "source.namespace":
        return "prin", _gen_src_namespace, False
    if key == "source.trustDomain":
        return "prin", _gen_src_trust_domain, False
    if key == "source.serviceAccount":
        return "prin", _gen_src_service_account(policy_ns), False
    if key == "source.principal":
        return "prin", _gen_src_principal, False
    if key == "request.auth.principal":
        return "prin", _xgen_request_principal, True
    if key == "request.auth.audiences":
        return "prin", _xgen_request_audiences, True
    if key == "request.auth.presenter":
        return "prin", _xgen_request_presenter, True
    if key.startswith("request.headers"):
        return "prin", _gen_request_header, False
    if key.startswith("request.auth.claims"):
        return "prin", _xgen_request_claims, True
    raise _GenError(f"unknown attribute {key}")


# ---------------------------------------------------------------------------
# Trust domain aliases (pilot/pkg/security/trustdomain/bundle.go)
# ---------------------------------------------------------------------------


def _td_prefix_match(a: str, pattern: str) -> bool:
    return pattern.endswith("*") and a.startswith(pattern[:-1])


def _td_suffix_match(a: str, pattern: str) -> bool:
    return pattern.startswith("*") and a.endswith(pattern[1:])


def _td_string_match(a: str, lst: list[str]) -> bool:
    return any(
        a == s or s == "*" or _td_prefix_match(a, s) or _td_prefix_match(s, a) or _td_suffix_match(a, s) or _td_suffix_match(s, a)
        for s in lst
    )


def _replace_trust_domain_aliases(trust_domains: list[str], principals: list[str]) -> list[str]:
    out = []
    for p in principals:
        parts = p.split("/")
        if len(parts) != 5 or parts[0] == "*":  # trust domain not enforced
            out.append(p)
            continue
        td = parts[0]
        if _td_string_match(td, trust_domains) or td == "cluster.local":
            aliases = []
            for cand in trust_domains:
                new = p if _td_suffix_match(cand, td) else "/".join([cand] + parts[1:])
                if new not in aliases:
                    aliases.append(new)
            out.extend(aliases)
        else:
            out.append(p)
    return out


def _expand_trust_domain_aliases(trust_domains: list[str], values: list[str]) -> list[str]:
    result = []
    for v in values:
        result.extend(trust_domains if v in trust_domains else [v])
    seen, out = set(), []
    for v in result:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


# ---------------------------------------------------------------------------
# AuthorizationPolicy rule -> RBAC Policy (model/model.go New + Generate)
# ---------------------------------------------------------------------------


def _build_model(rule: dict, policy_ns: str) -> tuple[list[list[_Rule]], list[list[_Rule]]]:
    """Returns (permissions, principals) as lists of AND-ed _Rule lists."""
    base_perm: list[_Rule] = []
    base_prin: list[_Rule] = []
    for cond in rule.get("when") or []:
        cond = cond or {}
        key = cond.get("key", "")
        side, gen, ext = _when_target(key, policy_ns)
        _append_last(base_perm if side == "perm" else base_prin, gen, key, cond.get("values"), _get(cond, "notValues"), ext)

    principals = []
    for frm in rule.get("from") or []:
        merged = list(base_prin)  # shallow copy: _Rule objects are shared, as in Go
        src = (frm or {}).get("source")
        if src is not None:
            _insert_front(merged, _gen_src_ip, "source.ip", _get(src, "ipBlocks"), _get(src, "notIpBlocks"))
            _insert_front(merged, _gen_remote_ip, "remote.ip", _get(src, "remoteIpBlocks"), _get(src, "notRemoteIpBlocks"))
            _insert_front(merged, _gen_src_namespace, "source.namespace", _get(src, "namespaces"), _get(src, "notNamespaces"))
            _insert_front(merged, _gen_src_trust_domain, "source.trustDomain", _get(src, "trustDomains"), _get(src, "notTrustDomains"))
            _insert_front(merged, _gen_src_service_account(policy_ns), "source.serviceAccount", _get(src, "serviceAccounts"), _get(src, "notServiceAccounts"))
            _insert_front(
                merged, _xgen_request_principal, "request.auth.principal",
                _get(src, "requestPrincipals"), _get(src, "notRequestPrincipals"), extended=True,
            )
            _insert_front(merged, _gen_src_principal, "source.principal", _get(src, "principals"), _get(src, "notPrincipals"))
        principals.append(merged)
    if not rule.get("from"):
        principals.append(base_prin)

    permissions = []
    for to in rule.get("to") or []:
        merged = list(base_perm)
        op = (to or {}).get("operation")
        if op is not None:
            _insert_front(merged, _gen_dest_port, "destination.port", op.get("ports"), _get(op, "notPorts"))
            _insert_front(merged, _gen_path, "path-matcher", op.get("paths"), _get(op, "notPaths"))
            _insert_front(merged, _gen_method, ":method", op.get("methods"), _get(op, "notMethods"))
            _insert_front(merged, _gen_host, ":authority", op.get("hosts"), _get(op, "notHosts"))
        permissions.append(merged)
    if not rule.get("to"):
        permissions.append(base_perm)
    return permissions, principals


def _migrate_trust_domain(principals: list[list[_Rule]], trust_domains: list[str]) -> None:
    """model.go MigrateTrustDomain (mutates shared _Rule objects, like Go)."""
    for rl in principals:
        for r in rl:
            if r.key == "source.principal":
                r.values = _replace_trust_domain_aliases(trust_domains, r.values) if r.values else r.values
                r.not_values = _replace_trust_domain_aliases(trust_domains, r.not_values) if r.not_values else r.not_values
            elif r.key == "source.trustDomain":
                r.values = _expand_trust_domain_aliases(trust_domains, r.values) if r.values else r.values
                r.not_values = _expand_trust_domain_aliases(trust_domains, r.not_values) if r.not_values else r.not_values


def _generate_rule(r: _Rule, side: str, action: str, notes: list[str]) -> list[dict]:
    """model.go rule.permission / rule.principal: values -> or{...} (or the one
    extended matcher), notValues -> not(or{...}).  For ALLOW an invalid value
    aborts the whole rule (raise); for DENY/AUDIT the value is dropped, which
    widens the policy (model.go checkError)."""
    mk_or, mk_not = (_perm_or, _perm_not) if side == "perm" else (_prin_or, _prin_not)

    def call(arg):
        try:
            return r.gen(r.key, arg)
        except _GenError as err:
            if action == "ALLOW":
                raise
            notes.append(f"ignored invalid {r.key} value(s) {arg!r}: {err}")
            return None

    out = []
    if r.extended:
        if r.values and (p := call(r.values)) is not None:
            out.append(p)
        if r.not_values and (p := call(r.not_values)) is not None:
            out.append(mk_not(p))
    else:
        ors = [p for v in r.values if (p := call(v)) is not None]
        if ors:
            out.append(mk_or(ors))
        nots = [p for v in r.not_values if (p := call(v)) is not None]
        if nots:
            out.append(mk_not(mk_or(nots)))
    return out


def _generate_policy(rule: dict, policy_ns: str, action: str, trust_domains: list[str], notes: list[str]) -> dict:
    """model.go New -> MigrateTrustDomain -> Generate(forTCP=false, useAuthenticated=true)."""
    permissions_model, principals_model = _build_model(rule, policy_ns)
    _migrate_trust_domain(principals_model, trust_domains)
    permissions = []
    for rl in permissions_model:
        ands = []
        for r in rl:
            ands.extend(_generate_rule(r, "perm", action, notes))
        permissions.append(_perm_and(ands or [{"any": True}]))
    principals = []
    for rl in principals_model:
        ands = []
        for r in rl:
            ands.extend(_generate_rule(r, "prin", action, notes))
        principals.append(_prin_and(ands or [{"any": True}]))
    return {"permissions": permissions, "principals": principals}


def _parse_bool(val) -> bool:
    """Go strconv.ParseBool (istio.io/dry-run annotation)."""
    if isinstance(val, bool):
        return val
    s = str(val)
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{s}": invalid syntax')


def _normalize_policy(p: dict) -> dict:
    """Accept the flat {"name","namespace","action","rules","dryRun"} shape or a
    Kubernetes object {"metadata": {...,"annotations"}, "spec": {...}}."""
    if "spec" in p or "metadata" in p:
        meta = p.get("metadata") or {}
        spec = p.get("spec") or {}
        ann = meta.get("annotations") or {}
        flat = {
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", "default"),
            "action": spec.get("action", "ALLOW"),
            "rules": spec.get("rules"),
        }
        if "istio.io/dry-run" in ann:
            flat["dryRun"] = ann["istio.io/dry-run"]
        return flat
    return p


def render_rbac(
    policies: list[dict],
    *,
    trust_domain: str = "cluster.local",
    trust_domain_aliases: list[str] | tuple = (),
    warnings: list[str] | None = None,
) -> list[dict]:
    """RBAC HTTP filters istiod builds for one workload (authz/builder/builder.go).

    Order: AUDIT (action LOG) filter, DENY filter, ALLOW filter - one filter per
    action present.  Each policy's rules land in `rules` or, when dry-run, in
    `shadow_rules`; policy names are `ns[<ns>]-policy[<name>]-rule[<i>]`.
    A policy without rules yields a never-matching policy (ALLOW => allow-nothing).
    Invalid rules are skipped (ALLOW) or have their invalid values dropped
    (DENY/AUDIT), exactly as istiod; every such event is appended to `warnings`.
    CUSTOM policies are not rendered (warning).
    """
    trust_domains = [trust_domain] + list(trust_domain_aliases)
    by_action: dict[str, list[dict]] = {"AUDIT": [], "DENY": [], "ALLOW": []}
    for raw in policies:
        p = _normalize_policy(raw)
        action = (p.get("action") or "ALLOW").upper()
        if action not in by_action:
            _warn(warnings, f"policy {p.get('namespace', 'default')}/{p.get('name')}: action {action} not rendered")
            continue
        by_action[action].append(p)

    filters = []
    for action, rbac_action in (("AUDIT", "LOG"), ("DENY", "DENY"), ("ALLOW", "ALLOW")):
        pols = by_action[action]
        if not pols:
            continue
        enforce: dict[str, dict] = {}
        shadow: dict[str, dict] = {}
        has_enforce = has_shadow = False
        for p in pols:
            ns = p.get("namespace") or "default"
            name = p.get("name", "")
            try:
                dry = _parse_bool(p.get("dryRun", p.get("dry_run", False)))
            except ValueError as err:  # builder.go isDryRun: error logged, enforced
                _warn(warnings, f"failed to parse the value of istio.io/dry-run: {err}")
                dry = False
            target = shadow if dry else enforce
            if dry:
                has_shadow = True
            else:
                has_enforce = True
            rules = p.get("rules") or []
            for i, rule in enumerate(rules):
                pname = f"ns[{ns}]-policy[{name}]-rule[{i}]"
                if rule is None:
                    _warn(warnings, f"skipped nil rule {pname}")
                    continue
                notes: list[str] = []
                try:
                    target[pname] = _generate_policy(rule, ns, action, trust_domains, notes)
                except _GenError as err:
                    # builder.go: "skipped invalid rule" (model.New) or, for an
                    # ALLOW value error, the whole rule is dropped.
                    _warn(warnings, f"skipped invalid rule {pname}: {err}")
                    continue
                for n in notes:
                    _warn(warnings, f"{pname}: {n} ({action} policy widened, as istiod does)")
            if not rules:
                target[f"ns[{ns}]-policy[{name}]-rule[0]"] = _match_never_policy()

        def rbac(policies_map):
            out = {}
            if rbac_action != "ALLOW":
                out["action"] = rbac_action
            if policies_map:
                out["policies"] = policies_map
            return out

        cfg: dict = {"@type": RBAC_TYPE}
        if has_enforce:
            cfg["rules"] = rbac(enforce)
        if has_shadow:
            cfg["shadow_rules"] = rbac(shadow)
        # builder.go shadowRuleStatPrefix(shadowRules): a nil shadow RBAC reads as
        # action ALLOW, so the allow prefix is set even without shadow rules;
        # AUDIT (LOG) shadow rules get "".
        prefix = {"ALLOW": SHADOW_ALLOW_STAT_PREFIX, "DENY": SHADOW_DENY_STAT_PREFIX}.get(
            rbac_action if has_shadow else "ALLOW", ""
        )
        if prefix:
            cfg["shadow_rules_stat_prefix"] = prefix
        filters.append({"name": RBAC_FILTER_NAME, "typed_config": cfg})
    return filters


# ---------------------------------------------------------------------------
# Admission validation (pkg/config/validation/validation.go
# ValidateAuthorizationPolicy, rule part).  istiod never sees a policy that fails
# this; builder-time skipping (render_rbac warnings) only matters when the
# webhook is bypassed.
# ---------------------------------------------------------------------------


def _v_ips(ips) -> list[str]:
    errs = []
    for v in ips or []:
        try:
            _cidr(v)
        except _GenError:
            errs.append(f"bad CIDR range ({v})" if "/" in v else f"bad IP address ({v})")
    return errs


def _v_ports(ports) -> list[str]:
    return [f"bad port ({p})" for p in map(str, ports or []) if not re.fullmatch(r"[0-9]+", p) or int(p) > 65535]


def _v_empty(key, values) -> list[str]:
    return [f"empty value not allowed, found in {key}"] if any(v == "" for v in values or []) else []


def _v_wildcards(key, values) -> list[str]:
    errs = _v_empty(key, values)
    if errs:
        return errs
    for v in values or []:
        n = v.count("*")
        if n > 1:
            return [f"at most one wildcard is allowed, found in {key}: {v!r}"]
        if n == 1 and v != "*" and not v.startswith("*") and not v.endswith("*"):
            return [f"wildcard is only allowed at the start or end, found in {key}: {v!r}"]
    return []


def _v_trust_domains(key, values) -> list[str]:
    errs = _v_wildcards(key, values)
    if errs:
        return errs
    return [f"trust domain must not contain '/', found in {key}: {v!r}" for v in values or [] if "/" in v][:1]


def _v_service_accounts(key, values) -> list[str]:
    values = values or []
    if len(values) > 16:
        return ["may not have more than 16 values"]
    for v in values:
        if v == "":
            return [f"empty value not allowed, found in {key}"]
        if "*" in v:
            return [f"wildcard not allowed, found in {key}"]
        if v.count("/") not in (0, 1):
            return [f"expected format 'serviceAccount' or 'namespace/serviceAccount', found {v!r} in {key}"]
        if len(v) > 320:
            return [f"value cannot exceed 320 characters, found {v!r} in {key}"]
        ns, sep, sa = v.partition("/")
        if sep and (not ns or not sa):
            return [f"expected format 'serviceAccount' or 'namespace/serviceAccount', found {v!r} in {key}"]
    return []


_VALID_LITERAL = re.compile(r"^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$")


def _v_path_templates(key, paths) -> list[str]:
    for path in paths or []:
        has_tmpl = _contains_path_template(path)
        found_any = False
        trimmed = path.strip("/")
        for glob in trimmed.split("/"):
            if glob == "{*}" and not found_any:
                continue
            if glob == "{**}" and not found_any:
                found_any = True
                continue
            if glob in ("{*}", "{**}") and found_any:
                return [f"invalid or unsupported path {trimmed}, found in {key}. {{**}} is not the last operator"]
            if "{" in glob or "}" in glob:
                return [f"invalid or unsupported path {trimmed}, found in {key}. Contains '{{' or '}}' beyond a supported path template"]
            if has_tmpl and not _VALID_LITERAL.match(glob):
                return [f"invalid or unsupported path {trimmed}, found in {key}. Contains segment {glob} with invalid string literal"]
    return []


def _v_map_key(key) -> list[str]:
    open_ = key.find("[")
    if key.endswith("]") and 0 < open_ < len(key) - 2:
        return []
    return [f"bad key ({key}): should have format a[b]"]


def _v_attribute(key, values) -> list[str]:
    """pkg/config/security ValidateAttribute."""
    errs = _v_empty(key, values)
    if errs:
        return errs
    if key.startswith("request.headers") or key.startswith("request.auth.claims") or key.startswith("experimental.envoy.filters."):
        return _v_map_key(key)
    if key in ("source.ip", "remote.ip", "destination.ip"):
        return _v_ips(values)
    if key == "source.serviceAccount":
        return _v_service_accounts(key, values)
    if key == "source.trustDomain":
        return _v_wildcards(key, values)
    if key == "destination.port":
        return _v_ports(values)
    if key in ("source.namespace", "source.principal", "request.auth.principal", "request.auth.audiences",
               "request.auth.presenter", "connection.sni"):
        return []
    if key == "destination.namespace":
        return [f"attribute {key} is replaced by the metadata.namespace"]
    if key.startswith("destination.labels"):
        return [f"attribute {key} is replaced by the workload selector"]
    if key in ("destination.name", "destination.user"):
        return [f"deprecated attribute {key}: only supported in v1alpha1"]
    return [f"unknown attribute: {key}"]


def validate_authorization_policy(policy: dict) -> list[str]:
    """Errors istiod's admission webhook would reject this policy with (rule
    checks of ValidateAuthorizationPolicy; selector/targetRef/CUSTOM checks
    are out of scope).  Empty list == accepted."""
    p = _normalize_policy(policy)
    errs: list[str] = []
    action = (p.get("action") or "ALLOW").upper()
    rules = p.get("rules")
    if action == "DENY" and not rules:
        errs.append("DENY action without `rules` is meaningless as it will never be triggered, "
                    "add an empty rule `{}` if you want it be triggered for every request")
    for i, rule in enumerate(rules or []):
        if rule is None:
            errs.append(f"`rule` must not be nil, found at rule {i}")
            continue
        for frm in rule.get("from") or []:
            src = (frm or {}).get("source")
            if src is None:
                errs.append(f"`from.source` must not be nil, found at rule {i}")
                continue
            g = lambda f: _get(src, f) or []  # noqa: E731
            if (g("principals") or g("notPrincipals") or g("namespaces") or g("notNamespaces")) and (
                g("serviceAccounts") or g("notServiceAccounts")
            ):
                errs.append(f"cannot set serviceAccounts with namespaces or principals, found at rule {i}")
            fields = ["principals", "requestPrincipals", "namespaces", "ipBlocks", "remoteIpBlocks", "serviceAccounts", "trustDomains"]
            if not any(g(f) or g("not" + f[0].upper() + f[1:]) for f in fields):
                errs.append(f"`from.source` must not be empty, found at rule {i}")
            for f in ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"):
                errs += _v_ips(g(f))
            for f in ("principals", "requestPrincipals", "namespaces", "ipBlocks", "remoteIpBlocks",
                      "notPrincipals", "notRequestPrincipals", "notNamespaces", "notIpBlocks", "notRemoteIpBlocks"):
                errs += _v_empty(f[0].upper() + f[1:], g(f))
            errs += _v_service_accounts("ServiceAccounts", g("serviceAccounts"))
            errs += _v_service_accounts("NotServiceAccounts", g("notServiceAccounts"))
            errs += _v_trust_domains("TrustDomains", g("trustDomains"))
            errs += _v_trust_domains("NotTrustDomains", g("notTrustDomains"))
        for to in rule.get("to") or []:
            op = (to or {}).get("operation")
            if op is None:
                errs.append(f"`to.operation` must not be nil, found at rule {i}")
                continue
            g = lambda f: _get(op, f) or []  # noqa: E731
            names = ["ports", "methods", "paths", "hosts"]
            if not any(g(f) or g("not" + f.capitalize()) for f in names):
                errs.append(f"`to.operation` must not be empty, found at rule {i}")
            errs += _v_ports(g("ports")) + _v_ports(g("notPorts"))
            for f in names:
                errs += _v_empty(f.capitalize(), g(f)) + _v_empty("Not" + f.capitalize(), g("not" + f.capitalize()))
            errs += _v_path_templates("Paths", g("paths")) + _v_path_templates("NotPaths", g("notPaths"))
        for cond in rule.get("when") or []:
            key = (cond or {}).get("key", "")
            values, not_values = (cond or {}).get("values") or [], _get(cond or {}, "notValues") or []
            if not key:
                errs.append("`key` must not be empty")
            elif not values and not not_values:
                errs.append(f"at least one of `values` or `notValues` must be set for key {key}")
            else:
                errs += [f"invalid `value` for `key` {key}: {e}" for e in _v_attribute(key, values)]
                errs += [f"invalid `notValue` for `key` {key}: {e}" for e in _v_attribute(key, not_values)]
    return errs


# ---------------------------------------------------------------------------
# Bootstrap helpers (not istiod output; for `envoy --mode validate` and e2e)
# ---------------------------------------------------------------------------


def _cluster(name: str, host: str, port: int, tls_sni: str | None = None) -> dict:
    c = {
        "name": name,
        "type": "STRICT_DNS" if not _is_ip(host) else "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}],
        },
    }
    if tls_sni is not None:
        c["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": tls_sni,
            },
        }
    return c


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def jwks_clusters(jwt_filter: dict | None, connect_to: dict[str, tuple[str, int]] | None = None) -> list[dict]:
    """Envoy clusters for every remote_jwks http_uri.cluster in a jwt_authn filter
    (in a mesh these are istiod's outbound clusters).  connect_to maps a cluster
    name to the (host, port) actually dialled, e.g. a local test IdP."""
    out, seen = [], set()
    if not jwt_filter:
        return out
    for prov in jwt_filter["typed_config"]["providers"].values():
        http_uri = prov.get("remote_jwks", {}).get("http_uri")
        if not http_uri or http_uri["cluster"] in seen:
            continue
        seen.add(http_uri["cluster"])
        host, port, scheme = parse_jwks_uri(http_uri["uri"])
        dial_host, dial_port = (connect_to or {}).get(http_uri["cluster"], (host, port))
        out.append(_cluster(http_uri["cluster"], dial_host, dial_port, tls_sni=host if scheme == "https" else None))
    return out


def build_bootstrap(
    http_filters: list[dict],
    *,
    listen_address: str = "127.0.0.1",
    listen_port: int = 10000,
    upstream: tuple[str, int] = ("127.0.0.1", 8080),
    extra_clusters: list[dict] | tuple = (),
    admin_port: int | None = None,
) -> dict:
    """Minimal static bootstrap: one HTTP listener whose chain is
    `http_filters` + router, routing everything to cluster "backend".
    Istio's filter order is jwt_authn, then RBAC (AUDIT, DENY, ALLOW)
    (networking/core/listener_builder.go)."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "inbound",
        "route_config": {
            "name": "local",
            "virtual_hosts": [
                {"name": "backend", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}
            ],
        },
        "http_filters": [f for f in http_filters if f] + [{"name": ROUTER_FILTER_NAME, "typed_config": {"@type": ROUTER_TYPE}}],
    }
    boot = {
        "static_resources": {
            "listeners": [
                {
                    "name": "inbound",
                    "address": {"socket_address": {"address": listen_address, "port_value": listen_port}},
                    "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
                }
            ],
            "clusters": [_cluster("backend", upstream[0], upstream[1])] + list(extra_clusters),
        }
    }
    if admin_port is not None:
        boot["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
    return boot
