"""Case table for test_authz_differential.py: Istio-shaped policy sets and the requests sent through them.

Every `PolicySet` becomes one listener in the native Envoy (jwt_authn + RBAC as istiod renders
RequestAuthentication + AuthorizationPolicy) and one listener in the meshgate Envoy (the same jwtRules and
policies as WasmPlugin pluginConfig). Each `Req` is sent to both; the statuses (and denial bodies) must be
equal. `want` is what Istio does (checked against the native side, so a wrong table row is caught too).

Placeholders, substituted in every string of `policies` / `jwt_rules` before rendering (str.replace, so the
`{*}`/`{**}` path templates are left alone):
  {ISS}  {ISS_OTHER}  issuers of realms myrealm / otherrealm
  {ALICE_SUB} {BOB_SUB}  the dev IdP's stable user ids
  {PORT}  the listener port of THIS side (native and meshgate listen on different ports); a set that
          uses it gets a pre-picked port (harness.free_port) and the test checks Envoy bound it.

Token specs: None (no Authorization header), a dict for idp.mint(**spec) (one token per spec, the SAME
token to both sides), or Raw("...") for a literal string.

Dev IdP users (realm export): alice (email user@example.com, realm role user), bob (email bob@example.com,
realm roles user + admin, client roles my-backend-client: reader, writer); default client demo-cli (azp),
aud ["my-backend-client", "account"], scope "openid email profile"; {"service_account": True} is the
client_credentials token of `frontend` (azp frontend, no email).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ISS = "{ISS}"
AUD = "my-backend-client"
RBAC_DENIED = "RBAC: access denied"


@dataclass(frozen=True)
class Raw:
    token: str


@dataclass
class Req:
    id: str
    method: str = "GET"
    path: str = "/data"
    host: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    token: Any = None
    want: int = 200
    token_in_query: bool = False  # ?access_token=<token> instead of Authorization: Bearer
    want_body: str | None = None  # default: RBAC_DENIED for 403; 401 rows must name the jwt_authn string

    def expected_body(self) -> str | None:
        if self.want_body is not None:
            return self.want_body
        if self.want == 403:
            return RBAC_DENIED
        return None


@dataclass
class PolicySet:
    name: str
    policies: list[dict]
    requests: list[Req]
    jwt_rules: list[dict] | None = None  # None: [DEFAULT_RULE]
    doc: str = ""


@dataclass
class InvalidSet:
    """A config Istio accepts at build time (skipping or widening the bad part) and meshgate refuses."""
    name: str
    policies: list[dict]
    requests: list[Req]  # sent to the NATIVE side only; `want` documents what Istio does
    error_path: str  # must appear in meshgate's load error
    reason: str
    # False: Istio's webhook rejects it too (istiod would skip/widen it if it got through).
    # True: valid Istio that meshgate cannot enforce faithfully in Wasm, so it refuses to load.
    istio_valid: bool = False


def rule(realm_iss: str = ISS, **extra: Any) -> dict:
    r = {"issuer": realm_iss, "audiences": [AUD], "jwksUri": realm_iss + "/protocol/openid-connect/certs"}
    r.update(extra)
    return r


DEFAULT_RULE = rule()

ALICE = {"user": "alice"}
BOB = {"user": "bob"}
SA = {"service_account": True}
EXPIRED = {"user": "alice", "exp_in": -3600}
OTHER_REALM = {"realm": "otherrealm", "user": "alice"}


def paths_rule(paths: list[str], **rest: Any) -> dict:
    r = {"to": [{"operation": {"paths": paths}}]}
    r.update(rest)
    return r


def when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict:
    c: dict[str, Any] = {"key": key}
    if values is not None:
        c["values"] = values
    if not_values is not None:
        c["notValues"] = not_values
    return c


REFERENCE_POLICY = {
    "name": "require-jwt", "action": "ALLOW",
    "rules": [{
        "to": [{"operation": {"methods": ["GET"]}}],
        "when": [
            when("request.auth.claims[iss]", ["http://keycloak.keycloak.svc.cluster.local/realms/myrealm"]),
            when("request.auth.claims[aud]", [AUD]),
            when("request.auth.claims[email]", ["user@example.com"]),
        ],
    }],
}

CORS = {"Origin": "http://app.example.com", "Access-Control-Request-Method": "GET"}

POLICY_SETS: list[PolicySet] = [
    PolicySet("reference", [REFERENCE_POLICY], [
        Req("GET valid alice", token=ALICE),
        Req("POST valid alice", method="POST", token=ALICE, want=403),
        Req("GET no token", want=403),
        Req("GET wrong email (bob)", token=BOB, want=403),
        Req("GET email claim overridden", token={"user": "alice", "claims": {"email": "mallory@example.com"}}, want=403),
        Req("GET expired", token=EXPIRED, want=401, want_body="Jwt is expired"),
        Req("GET wrong aud (jwtRule audiences)", token={"user": "alice", "audience": "someone-else"}, want=403,
            want_body="Audiences in Jwt are not allowed"),
        Req("GET other issuer", token=OTHER_REALM, want=401, want_body="Jwt issuer is not configured"),
        Req("GET bad signature", token={"user": "alice", "sign_with": "unpublished"}, want=401,
            want_body="Jwt verification fails"),
        Req("GET malformed token", token=Raw("abc.def"), want=401,
            want_body="Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
        Req("GET not yet valid", token={"user": "alice", "nbf_in": 3600}, want=401, want_body="Jwt not yet valid"),
        Req("GET token in access_token param", token=ALICE, token_in_query=True),
        Req("GET expired token in access_token param", token=EXPIRED, token_in_query=True, want=401,
            want_body="Jwt is expired"),
        Req("CORS preflight no token", method="OPTIONS", headers=CORS, want=403),
    ], doc="the issue's reference policy: GET only, iss + aud + email claims"),

    PolicySet("reference-no-rule-aud", [REFERENCE_POLICY], [
        Req("GET aud someone-else (policy decides)", token={"user": "alice", "audience": "someone-else"}, want=403),
        Req("GET aud list incl. client", token={"user": "alice", "audience": ["account", AUD]}),
        Req("GET aud string", token={"user": "alice", "audience": AUD}),
        Req("GET aud claim removed", token={"user": "alice", "audience": None}, want=403),
    ], jwt_rules=[rule(audiences=[])], doc="jwtRule without audiences: only the policy's claims[aud] checks it"),

    PolicySet("deny-before-allow", [
        {"name": "need-jwt", "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]},
        {"name": "no-admin", "action": "DENY", "rules": [paths_rule(["/admin/*"])]},
        {"name": "no-alice-mail", "action": "DENY",
         "rules": [paths_rule(["/mail"], when=[when("request.auth.claims[email]", ["user@example.com"])])]},
    ], [
        Req("GET /data alice", token=ALICE),
        Req("GET /admin/x alice", path="/admin/x", token=ALICE, want=403),
        Req("GET /data no token", want=403),
        Req("GET /admin/x no token", path="/admin/x", want=403),
        Req("GET /mail bob", path="/mail", token=BOB),
        Req("GET /mail alice", path="/mail", token=ALICE, want=403),
    ]),

    PolicySet("deny-all-beats-allow-all", [
        {"name": "all", "rules": [{}]},
        {"name": "nothing-gets-in", "action": "DENY", "rules": [{}]},
    ], [
        Req("GET alice", token=ALICE, want=403),
        Req("GET no token", want=403),
    ]),

    PolicySet("no-allow-policy", [
        {"name": "no-delete", "action": "DENY", "rules": [{"to": [{"operation": {"methods": ["DELETE"]}}]}]},
    ], [
        Req("GET no token"),
        Req("POST alice", method="POST", token=ALICE),
        Req("DELETE no token", method="DELETE", want=403),
    ], doc="only a DENY policy: everything it does not match is allowed"),

    PolicySet("allow-nothing", [{"name": "allow-nothing", "action": "ALLOW"}], [
        Req("GET no token", want=403),
        Req("GET alice", token=ALICE, want=403),
    ], doc="ALLOW without rules"),

    PolicySet("allow-all", [{"name": "allow-all", "rules": [{}]}], [
        Req("GET no token"),
        Req("POST alice", method="POST", token=ALICE),
        Req("GET expired (authn still applies)", token=EXPIRED, want=401, want_body="Jwt is expired"),
        Req("CORS preflight with expired token", method="OPTIONS", headers=CORS, token=EXPIRED),
    ], doc="rules: [{}]"),

    PolicySet("request-principals", [
        {"name": "principals", "rules": [
            paths_rule(["/exact"], **{"from": [{"source": {"requestPrincipals": ["{ISS}/{ALICE_SUB}"]}}]}),
            paths_rule(["/iss-any"], **{"from": [{"source": {"requestPrincipals": ["{ISS}/*"]}}]}),
            paths_rule(["/any"], **{"from": [{"source": {"requestPrincipals": ["*"]}}]}),
            paths_rule(["/sub-any-iss"], **{"from": [{"source": {"requestPrincipals": ["*/{BOB_SUB}"]}}]}),
            paths_rule(["/other-iss"], **{"from": [{"source": {"requestPrincipals": ["{ISS_OTHER}/*"]}}]}),
            paths_rule(["/when-principal"], when=[when("request.auth.principal", ["{ISS}/{ALICE_SUB}"])]),
            paths_rule(["/slash-sub"], **{"from": [{"source": {"requestPrincipals": ["{ISS}/a/b"]}}]}),
        ]},
    ], [
        Req("/exact alice", path="/exact", token=ALICE),
        Req("/exact bob", path="/exact", token=BOB, want=403),
        Req("/iss-any bob", path="/iss-any", token=BOB),
        Req("/iss-any service account", path="/iss-any", token=SA),
        Req("/iss-any no token", path="/iss-any", want=403),
        Req("/any alice", path="/any", token=ALICE),
        Req("/any no token", path="/any", want=403),
        Req("/any token without sub", path="/any", token={"user": "alice", "claims": {"sub": None}}, want=403),
        Req("/slash-sub sub 'a/b' (split at the last '/')", path="/slash-sub",
            token={"user": "alice", "claims": {"sub": "a/b"}}, want=403),
        Req("/sub-any-iss bob", path="/sub-any-iss", token=BOB),
        Req("/sub-any-iss alice", path="/sub-any-iss", token=ALICE, want=403),
        Req("/other-iss alice (myrealm)", path="/other-iss", token=ALICE, want=403),
        Req("/when-principal alice", path="/when-principal", token=ALICE),
        Req("/when-principal bob", path="/when-principal", token=BOB, want=403),
    ]),

    PolicySet("not-request-principals", [
        {"name": "require-jwt", "action": "DENY",
         "rules": [{"from": [{"source": {"notRequestPrincipals": ["*"]}}],
                    "to": [{"operation": {"notPaths": ["/healthz"]}}]}]},
    ], [
        Req("/healthz no token", path="/healthz"),
        Req("/data no token", want=403),
        Req("/data alice", token=ALICE),
        Req("/data service account", token=SA),
    ], doc="the usual 'require a JWT except for health checks' DENY policy"),

    PolicySet("multi-issuer", [
        {"name": "other-realm-only", "rules": [{"from": [{"source": {"requestPrincipals": ["{ISS_OTHER}/*"]}}]}]},
    ], [
        Req("otherrealm token", token=OTHER_REALM),
        Req("myrealm token", token=ALICE, want=403),
        Req("no token", want=403),
        Req("otherrealm expired", token={"realm": "otherrealm", "exp_in": -3600}, want=401, want_body="Jwt is expired"),
    ], jwt_rules=[rule(), rule("{ISS_OTHER}")]),

    PolicySet("nested-claims", [
        {"name": "roles", "rules": [
            paths_rule(["/admin"], when=[when("request.auth.claims[realm_access][roles]", ["admin"])]),
            paths_rule(["/write"], when=[when("request.auth.claims[resource_access][my-backend-client][roles]", ["writer"])]),
            paths_rule(["/adm-prefix"], when=[when("request.auth.claims[realm_access][roles]", ["adm*"])]),
            paths_rule(["/account"], when=[when("request.auth.claims[resource_access][account][roles]", ["view-profile"])]),
        ]},
    ], [
        Req("/admin bob (realm role admin)", path="/admin", token=BOB),
        Req("/admin alice", path="/admin", token=ALICE, want=403),
        Req("/admin no token", path="/admin", want=403),
        Req("/write bob (client role writer)", path="/write", token=BOB),
        Req("/write alice", path="/write", token=ALICE, want=403),
        Req("/adm-prefix bob", path="/adm-prefix", token=BOB),
        Req("/account alice", path="/account", token=ALICE),
    ]),

    PolicySet("scope-splitting", [
        {"name": "scopes", "rules": [
            paths_rule(["/email"], when=[when("request.auth.claims[scope]", ["email"])]),
            paths_rule(["/whole"], when=[when("request.auth.claims[scope]", ["openid email profile"])]),
            paths_rule(["/custom"], when=[when("request.auth.claims[custom]", ["b"])]),
            paths_rule(["/unsplit"], when=[when("request.auth.claims[unsplit]", ["b"])]),
        ]},
    ], [
        Req("/email scope 'openid email profile'", path="/email", token=ALICE),
        Req("/email scope 'openid profile'", path="/email", token={"user": "alice", "claims": {"scope": "openid profile"}},
            want=403),
        Req("/whole (split value no longer matches)", path="/whole", token=ALICE, want=403),
        Req("/custom spaceDelimitedClaims", path="/custom", token={"user": "alice", "claims": {"custom": "a b"}}),
        Req("/unsplit not split", path="/unsplit", token={"user": "alice", "claims": {"unsplit": "a b"}}, want=403),
    ], jwt_rules=[rule(spaceDelimitedClaims=["custom"])]),

    PolicySet("audiences-presenter", [
        {"name": "aud-azp", "rules": [
            paths_rule(["/aud-account"], when=[when("request.auth.audiences", ["account"])]),
            paths_rule(["/aud-x"], when=[when("request.auth.audiences", ["x-client"])]),
            paths_rule(["/azp-cli"], when=[when("request.auth.presenter", ["demo-cli"])]),
            paths_rule(["/azp-frontend"], when=[when("request.auth.presenter", ["frontend"])]),
        ]},
    ], [
        Req("/aud-account alice", path="/aud-account", token=ALICE),
        Req("/aud-x alice", path="/aud-x", token=ALICE, want=403),
        Req("/azp-cli alice", path="/azp-cli", token=ALICE),
        Req("/azp-cli service account", path="/azp-cli", token=SA, want=403),
        Req("/azp-frontend service account", path="/azp-frontend", token=SA),
        Req("/azp-cli no token", path="/azp-cli", want=403),
    ]),

    PolicySet("paths", [
        {"name": "paths", "rules": [paths_rule(
            ["/exact", "/pre/*", "*/suf", "/t1/{*}/x", "/t2/{**}", "/t3/{**}/", "/star-infix*x"])]},
    ], [
        Req("/exact", path="/exact"),
        Req("/exact?q=1 (query ignored)", path="/exact?q=1"),
        Req("/exact/", path="/exact/", want=403),
        Req("/exactly", path="/exactly", want=403),
        Req("/pre/a/b", path="/pre/a/b"),
        Req("/pre", path="/pre", want=403),
        Req("/a/b/suf", path="/a/b/suf"),
        Req("/t1/a/x", path="/t1/a/x"),
        Req("/t1/a/b/x", path="/t1/a/b/x", want=403),
        # Envoy 1.40's uri_template glob class is [a-zA-Z0-9-._~%!$&'()+,;:@=*] (string in the binary), so
        # '=' and '*' match inside {*} / {**}; normalize_path %-encodes most other characters first.
        Req("/t1/a=b/x ('=' in a {*} segment)", path="/t1/a=b/x"),
        Req("/t2/a=b/c ('=' in a {**} tail)", path="/t2/a=b/c"),
        Req("/t1/a*b/x ('*' in a {*} segment)", path="/t1/a*b/x"),
        Req("/t1/a%20b/x (pct-encoded)", path="/t1/a%20b/x"),
        Req("/ex%61ct (normalize_path decodes unreserved)", path="/ex%61ct"),
        Req("/t2/", path="/t2/"),
        Req("/t2/a/b/c", path="/t2/a/b/c"),
        Req("/t2", path="/t2", want=403),
        Req("/t3/a/", path="/t3/a/"),
        Req("/t3//", path="/t3//"),
        Req("/t3/a/b.txt", path="/t3/a/b.txt", want=403),
        Req("/star-infixAx (an infix * is a literal)", path="/star-infixAx", want=403),
        Req("/star-infix*x (literal match)", path="/star-infix*x"),
        Req("/other", path="/other", want=403),
    ]),

    PolicySet("deny-templates", [
        {"name": "no-admin", "action": "DENY", "rules": [paths_rule(["/admin/{*}", "/files/{**}"])]},
    ], [
        Req("/admin/x", path="/admin/x", want=403),
        Req("/admin/a=b ('=' in the segment)", path="/admin/a=b", want=403),
        Req("/admin/a*b ('*' in the segment)", path="/admin/a*b", want=403),
        Req("/files/k=v/doc", path="/files/k=v/doc", want=403),
        Req("/admin/x/y (two segments)", path="/admin/x/y"),
        Req("/other", path="/other"),
    ], doc="a DENY policy with path templates: every segment Envoy's glob matches must be denied"),

    PolicySet("any-path", [{"name": "any-path", "rules": [paths_rule(["*"])]}], [
        Req("/anything", path="/anything"),
        Req("/", path="/"),
    ]),

    PolicySet("not-paths-methods", [
        {"name": "np", "rules": [{"to": [{"operation": {"notPaths": ["/private/*"], "notMethods": ["DELETE"]}}]}]},
    ], [
        Req("GET /public", path="/public"),
        Req("POST /public", method="POST", path="/public"),
        Req("GET /private/x", path="/private/x", want=403),
        Req("DELETE /public", method="DELETE", path="/public", want=403),
    ]),

    PolicySet("hosts", [
        {"name": "hosts", "rules": [
            {"to": [{"operation": {"paths": ["/h"], "hosts": ["api.example.com", "*.example.org", "Admin.Example.NET"]}}]},
            {"to": [{"operation": {"paths": ["/nh"], "notHosts": ["*.blocked.com"]}}]},
            {"to": [{"operation": {"paths": ["/hp"], "hosts": ["api.example.com:*"]}}]},
        ]},
    ], [
        Req("api.example.com", path="/h", host="api.example.com"),
        Req("API.EXAMPLE.COM", path="/h", host="API.EXAMPLE.COM"),
        Req("api.example.com:8080 (port is part of the host)", path="/h", host="api.example.com:8080", want=403),
        Req("x.example.org", path="/h", host="x.example.org"),
        Req("X.Example.Org", path="/h", host="X.Example.Org"),
        Req("admin.example.net", path="/h", host="admin.example.net"),
        Req("evil.com", path="/h", host="evil.com", want=403),
        Req("notHosts a.blocked.com", path="/nh", host="a.blocked.com", want=403),
        Req("notHosts A.BLOCKED.COM", path="/nh", host="A.BLOCKED.COM", want=403),
        Req("notHosts ok.com", path="/nh", host="ok.com"),
        Req("api.example.com:* with :8080", path="/hp", host="api.example.com:8080"),
    ]),

    PolicySet("request-headers", [
        {"name": "hdr", "rules": [
            paths_rule(["/h"], when=[when("request.headers[x-foo]", ["bar", "baz*"])]),
            paths_rule(["/present"], when=[when("request.headers[x-foo]", ["*"])]),
            paths_rule(["/not"], when=[when("request.headers[x-foo]", not_values=["evil"])]),
            paths_rule(["/name-case"], when=[when("request.headers[X-Foo]", ["bar"])]),
        ]},
    ], [
        Req("/h x-foo: bar", path="/h", headers={"x-foo": "bar"}),
        Req("/h x-foo: bazooka", path="/h", headers={"x-foo": "bazooka"}),
        Req("/h x-foo: Bar (values case-sensitive)", path="/h", headers={"x-foo": "Bar"}, want=403),
        Req("/h no header", path="/h", want=403),
        Req("/present x-foo: ''", path="/present", headers={"x-foo": ""}),
        Req("/present no header", path="/present", want=403),
        Req("/not no header", path="/not"),
        Req("/not x-foo: evil", path="/not", headers={"x-foo": "evil"}, want=403),
        Req("/name-case X-FOO: bar", path="/name-case", headers={"X-FOO": "bar"}),
    ]),

    PolicySet("ports", [
        {"name": "ports", "rules": [
            {"to": [{"operation": {"paths": ["/p"], "ports": ["{PORT}"]}}]},
            {"to": [{"operation": {"paths": ["/wrong"], "ports": ["1"]}}]},
            {"to": [{"operation": {"paths": ["/not"], "notPorts": ["{PORT}"]}}]},
            paths_rule(["/when"], when=[when("destination.port", ["{PORT}"])]),
            paths_rule(["/when-not"], when=[when("destination.port", not_values=["{PORT}"])]),
        ]},
    ], [
        Req("/p listener port", path="/p"),
        Req("/wrong port 1", path="/wrong", want=403),
        Req("/not notPorts listener port", path="/not", want=403),
        Req("/when destination.port", path="/when"),
        Req("/when-not destination.port notValues", path="/when-not", want=403),
    ]),

    PolicySet("remote-ip-blocks", [
        {"name": "ips", "rules": [
            paths_rule(["/remote-lo"], **{"from": [{"source": {"remoteIpBlocks": ["127.0.0.1/32"]}}]}),
            paths_rule(["/remote-10"], **{"from": [{"source": {"remoteIpBlocks": ["10.0.0.0/8"]}}]}),
            paths_rule(["/not-remote-10"], **{"from": [{"source": {"notRemoteIpBlocks": ["10.0.0.0/8"]}}]}),
            paths_rule(["/when-remote-10"], when=[when("remote.ip", ["10.0.0.0/8"])]),
        ]},
    ], [
        Req("/remote-lo", path="/remote-lo"),
        Req("/remote-10", path="/remote-10", want=403),
        Req("/not-remote-10", path="/not-remote-10"),
        Req("/when-remote-10", path="/when-remote-10", want=403),
        # use_remote_address=false (sidecar inbound): Envoy takes the remote address (remote.ip,
        # remoteIpBlocks, and the `source.address` attribute) from XFF.
        Req("/remote-10 XFF 10.1.2.3", path="/remote-10", headers={"x-forwarded-for": "10.1.2.3"}),
        Req("/remote-lo XFF 10.1.2.3", path="/remote-lo", headers={"x-forwarded-for": "10.1.2.3"}, want=403),
        Req("/not-remote-10 XFF 10.1.2.3", path="/not-remote-10", headers={"x-forwarded-for": "10.1.2.3"}, want=403),
        Req("/when-remote-10 XFF 10.1.2.3", path="/when-remote-10", headers={"x-forwarded-for": "10.1.2.3"}),
    ]),

    PolicySet("audit", [
        {"name": "audit-everything", "action": "AUDIT", "rules": [{}]},
        {"name": "audit-posts", "action": "AUDIT", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]},
        {"name": "get-only", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]},
    ], [
        Req("GET", ),
        Req("POST", method="POST", want=403),
    ], doc="AUDIT policies never change the verdict"),

    PolicySet("audit-only", [{"name": "audit-everything", "action": "AUDIT", "rules": [{}]}], [
        Req("GET"),
        Req("DELETE", method="DELETE"),
    ], doc="AUDIT does not count as an ALLOW policy"),

    PolicySet("dry-run-only", [
        {"name": "deny-all-dry", "action": "DENY", "dryRun": True, "rules": [{}]},
        {"name": "post-only-dry", "action": "ALLOW", "dryRun": True,
         "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]},
    ], [
        Req("GET no token"),
        Req("DELETE alice", method="DELETE", token=ALICE),
    ], doc="dry-run policies never deny, and a dry-run ALLOW does not make an ALLOW policy exist"),

    PolicySet("dry-run-with-enforced", [
        {"name": "deny-all-dry", "action": "DENY", "dryRun": True, "rules": [{}]},
        {"name": "get-only", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]},
    ], [
        Req("GET"),
        Req("POST", method="POST", want=403),
    ]),

    PolicySet("presence-required", [], [
        Req("no token", want=401, want_body="Jwt is missing"),
        Req("alice", token=ALICE),
        Req("expired", token=EXPIRED, want=401, want_body="Jwt is expired"),
        Req("CORS preflight no token", method="OPTIONS", headers=CORS),
    ], jwt_rules=[rule(presence="REQUIRED")], doc="JWTRule presence REQUIRED, no policies"),

    PolicySet("non-string-claims", [
        {"name": "typed", "rules": [
            paths_rule(["/num"], when=[when("request.auth.claims[num]", ["42"])]),
            paths_rule(["/num-any"], when=[when("request.auth.claims[num]", ["*"])]),
            paths_rule(["/bool"], when=[when("request.auth.claims[email_verified]", ["true"])]),
            paths_rule(["/obj"], when=[when("request.auth.claims[realm_access]", ["*"])]),
        ]},
    ], [
        Req("/num 42 (number)", path="/num", token={"user": "alice", "claims": {"num": 42}}, want=403),
        Req("/num '42' (string)", path="/num", token={"user": "alice", "claims": {"num": "42"}}),
        Req("/num [42] (list of numbers)", path="/num", token={"user": "alice", "claims": {"num": [42]}}, want=403),
        Req("/num-any 42 (number)", path="/num-any", token={"user": "alice", "claims": {"num": 42}}, want=403),
        Req("/bool email_verified true", path="/bool", token=ALICE, want=403),
        Req("/obj realm_access object", path="/obj", token=ALICE, want=403),
    ], doc="numbers/bools/objects are not string values in Envoy's metadata matcher"),

    PolicySet("claim-not-values", [
        {"name": "example-only", "action": "DENY",
         "rules": [{"when": [when("request.auth.claims[email]", not_values=["*@example.com"])]}]},
    ], [
        Req("alice user@example.com", token=ALICE),
        Req("mallory@evil.test", token={"user": "alice", "claims": {"email": "mallory@evil.test"}}, want=403),
        Req("no token (notValues matches a missing claim)", want=403),
        Req("service account (no email claim)", token=SA, want=403),
    ]),
]


# Policies Istio accepts (its webhook passes them, istiod renders them, Envoy 1.40 loads them): meshgate
# must load them too. Each is started on its own (a refused config would take the shared Envoy down).
ISTIO_VALID_SETS: list[PolicySet] = [
    PolicySet("template-literal-with-equals", [
        {"name": "kv", "rules": [paths_rule(["/k=v/{*}"])]},
    ], [
        Req("/k=v/x", path="/k=v/x"),
        Req("/k=w/x", path="/k=w/x", want=403),
    ], doc="'=' in a path-template literal: Istio's CheckValidPathTemplate and Envoy's kLiteral allow it"),
]


INVALID_SETS: list[InvalidSet] = [
    InvalidSet(
        "deny-rule-with-typo-key",
        [{"name": "block-alice", "action": "DENY",
          "rules": [{"when": [when("request.auth.claim[email]", ["user@example.com"])]}]}],
        [Req("alice (the DENY was meant for her)", token=ALICE, want=200),
         Req("no token", want=200)],
        "policies[0].rules[0].when[0].key",
        "unknown `when` key: istiod skips the whole rule, so the DENY silently denies nothing (fail open)",
    ),
    InvalidSet(
        "deny-rule-with-bad-ip",
        [{"name": "block-posts-from-net", "action": "DENY",
          "rules": [{"from": [{"source": {"remoteIpBlocks": ["10.0.0.256"]}}], "to": [{"operation": {"methods": ["POST"]}}]}]}],
        [Req("POST from 127.0.0.1 (not in the intended block)", method="POST", want=403),
         Req("GET", want=200)],
        "policies[0].rules[0].from[0].source.remoteIpBlocks[0]",
        "bad IP in a DENY rule: istiod drops the value, widening the DENY to every source",
    ),
    InvalidSet(
        "ip-blocks-direct-peer",
        [{"name": "only-from-net", "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]}],
        [Req("from 127.0.0.1", want=403),
         Req("from 127.0.0.1 claiming XFF 10.1.2.3 (native checks the TCP peer)",
             headers={"x-forwarded-for": "10.1.2.3"}, want=403)],
        "policies[0].rules[0].from[0].source.ipBlocks",
        "ipBlocks/source.ip need the direct TCP peer, which Envoy does not expose to Wasm; the only address "
        "it does expose is XFF-derived, so matching it would let clients spoof their IP: meshgate refuses",
        istio_valid=True,
    ),
    InvalidSet(
        "allow-rule-with-bad-port",
        [{"name": "api", "rules": [{"to": [{"operation": {"ports": ["80a"], "methods": ["POST"]}}]},
                                   {"to": [{"operation": {"methods": ["GET"]}}]}]}],
        [Req("GET (second rule)", want=200),
         Req("POST (first rule silently skipped)", method="POST", want=403)],
        "policies[0].rules[0].to[0].operation.ports[0]",
        "bad port in an ALLOW rule: istiod skips that rule only, the rest of the policy still applies",
    ),
    InvalidSet(
        "deny-without-rules",
        [{"name": "deny-nothing", "action": "DENY"}],
        [Req("GET", want=200)],
        "policies[0].rules",
        "DENY without rules never matches (istiod's webhook rejects it; the builder renders match-never)",
    ),
]
