"""Issue "istio" (converter): `meshgate convert` output behaves like the Istio objects it was made from.

For each scenario under tests/converter/ (the reference RequestAuthentication + AuthorizationPolicy for
app: backend, and the DENY/ALLOW/AUDIT/dry-run set):

* native   - the ORIGINAL objects as istiod renders them: istiod_native.render_jwt_authn(jwtRules,
             jwks_mode="remote") + istiod_native.render_rbac(AuthorizationPolicies), sidecar style
             (clear_route_cache off), in a real Envoy;
* meshgate - the WasmPlugin the built CLI writes for input.yaml (`meshgate convert -o json`), rendered by
             render.py as istiod + istio-agent deliver it (start_meshgate(wasmplugin=...)) on the sidecar's
             inbound listener, where its `match: [{mode: SERVER}]` puts it (test_server_mode.py checks that
             placement and the key fetches from there).

Both verify tokens from the dev IdP (the same token string to both sides). Every request must get the same
status, the same denial body, the same WWW-Authenticate challenge and, when it reaches the backend, the same
claim headers (outputClaimToHeaders) and token forwarding.

The native side reads tests/converter/<scenario>/input.json, the JSON twin of input.yaml (no YAML parser
here; tests/converter.rs checks the twin equals the YAML), so the CLI's YAML reading is exercised only on the
meshgate side, as in real use.

Also: every WasmPlugin the CLI writes for the golden cases (and the scenario inputs) passes the Istio CRD
schemas (istio/tools/schema-validation via test_istio_manifests.istio_schema_validator).

The CLI: $MESHGATE_CLI if set, else `cargo build --release --locked --features cli --bin meshgate`
(`make cli`; a no-op when up to date) and target/release/meshgate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

import harness
import istiod_native
import render
from test_istio_manifests import istio_schema_validator  # noqa: F401  (session fixture: Istio CRD schemas)

CONVERTER_DIR = harness.REPO / "tests" / "converter"
RBAC_DENIED = istiod_native.rbac_deny_body()


@dataclass
class Req:
    id: str
    method: str = "GET"
    path: str = "/data"
    token: Any = None  # None: no token; dict: idp.mint(**spec); str: a literal token
    headers: dict[str, str] = field(default_factory=dict)
    query_token: bool = False
    want: int = 200  # what Istio does (checked on the native side too)


SCENARIOS: dict[str, list[Req]] = {
    # ALLOW GET when iss, aud and email = user@example.com (alice); jwtRules with outputClaimToHeaders x-email.
    "reference": [
        Req("alice GET", token={"user": "alice"}, want=200),
        Req("alice GET token in ?access_token", token={"user": "alice"}, query_token=True, want=200),
        Req("alice POST", method="POST", token={"user": "alice"}, want=403),
        Req("alice HEAD", method="HEAD", token={"user": "alice"}, want=403),
        Req("no token", want=403),
        Req("expired", token={"user": "alice", "exp_in": -3600}, want=401),
        Req("not yet valid", token={"user": "alice", "nbf_in": 3600}, want=401),
        Req("wrong audience", token={"user": "alice", "audience": "someone-else"}, want=403),
        Req("bob (other email)", token={"user": "bob"}, want=403),
        Req("email in other case", token={"user": "alice", "claims": {"email": "USER@example.com"}}, want=403),
        Req("other realm (issuer not configured)", token={"realm": "otherrealm", "user": "alice"}, want=401),
        Req("unpublished signing key", token={"user": "alice", "sign_with": "unpublished"}, want=401),
        Req("unknown kid", token={"user": "alice", "kid": "no-such-kid"}, want=401),
        Req("alg none", token={"user": "alice", "alg": "none"}, want=401),
        # (base64url that is not canonical, like "not.a.jwt", is an intended divergence of the token layer:
        # tests/conformance.rs lists it; here both sides must give the same answer)
        Req("garbage token", token="garbage", want=401),
        Req("header not JSON", token="bm9wZQ.e30.c2ln", want=401),
        Req("service account (no email)", token={"service_account": True}, want=403),
        Req("spoofed x-email header without token", headers={"x-email": "user@example.com"}, want=403),
        Req("spoofed x-email header with bob", token={"user": "bob"}, headers={"x-email": "user@example.com"},
            want=403),
    ],
    # REQUIRED token; DENY /admin* unless realm role admin; ALLOW GET (any principal, not /internal/*) and
    # /healthz; AUDIT writes; dry-run ALLOW POST and DENY bob; DENY remote 203.0.113.0/24 (annotation "yes").
    "actions": [
        Req("alice GET /data", token={"user": "alice"}, want=200),
        Req("no token /healthz (presence REQUIRED)", path="/healthz", want=401),
        Req("alice GET /healthz", path="/healthz", token={"user": "alice"}, want=200),
        Req("alice GET /internal/x", path="/internal/x", token={"user": "alice"}, want=403),
        Req("alice GET /admin (no admin role)", path="/admin", token={"user": "alice"}, want=403),
        Req("alice GET /administrators", path="/administrators", token={"user": "alice"}, want=403),
        Req("bob GET /admin (admin role)", path="/admin", token={"user": "bob"}, want=200),
        Req("alice POST (audit only, dry-run allow)", method="POST", token={"user": "alice"}, want=403),
        Req("alice DELETE", method="DELETE", token={"user": "alice"}, want=403),
        Req("bob GET (dry-run deny)", token={"user": "bob"}, want=200),
        Req("expired", token={"user": "alice", "exp_in": -60 * 60 * 24}, want=401),
        Req("wrong audience", token={"user": "alice", "audience": "someone-else"}, want=403),
        Req("alice GET via blocked client 203.0.113.7", token={"user": "alice"},
            headers={"x-forwarded-for": "203.0.113.7"}, want=403),
        Req("alice GET via other client 198.51.100.7", token={"user": "alice"},
            headers={"x-forwarded-for": "198.51.100.7"}, want=200),
    ],
}


# ----------------------------------------------------------------------------------------------------------
# the CLI
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def meshgate_cli() -> str:
    explicit = os.environ.get("MESHGATE_CLI")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"MESHGATE_CLI={explicit} is not an executable", pytrace=False)
        return explicit
    cargo = os.environ.get("CARGO") or shutil.which("cargo")
    if not cargo:
        pytest.fail("no cargo to build the meshgate CLI (run `make cli` and set MESHGATE_CLI)", pytrace=False)
    try:
        subprocess.run([cargo, "build", "--release", "--locked", "--features", "cli", "--bin", "meshgate"],
                       cwd=harness.REPO, check=True, timeout=900, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"building the meshgate CLI failed:\n{e.stderr[-4000:]}", pytrace=False)
    path = harness.REPO / "target" / "release" / "meshgate"
    if not path.exists():
        pytest.fail(f"{path} missing after the build", pytrace=False)
    return str(path)


def convert(cli: str, scenario: str) -> list[dict]:
    """The WasmPlugins `meshgate convert -o json` writes for tests/converter/<scenario>/input.yaml."""
    proc = subprocess.run([cli, "convert", "-o", "json", "input.yaml"], cwd=CONVERTER_DIR / scenario,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"meshgate convert failed ({proc.returncode}):\n{proc.stderr}"
    assert "error:" not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout)
    return out["items"] if out.get("kind") == "List" else [out]


def originals(scenario: str) -> tuple[list[dict], list[dict]]:
    """(jwtRules of every RequestAuthentication, every AuthorizationPolicy object) of input.json."""
    objects = json.loads((CONVERTER_DIR / scenario / "input.json").read_text())
    rules = [r for o in objects if o["kind"] == "RequestAuthentication" for r in o["spec"].get("jwtRules") or []]
    policies = [o for o in objects if o["kind"] == "AuthorizationPolicy"]
    return rules, policies


# ----------------------------------------------------------------------------------------------------------
# requests
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    status: int
    body: str
    challenge: str | None
    upstream: dict[str, str] | None  # headers the backend saw (200 only)

    def brief(self) -> str:
        return f"{self.status} {self.body[:60]!r}" if self.status != 200 else "200"


def send(env: harness.EnvoyProcess, req: Req, token: str | None) -> Outcome:
    headers = dict(req.headers)
    path = req.path
    if token is not None:
        if req.query_token:
            path += ("&" if "?" in path else "?") + "access_token=" + token
        else:
            headers["Authorization"] = f"Bearer {token}"
    r = env.request(req.method, path, headers=headers)
    challenge = r.headers.get("www-authenticate")
    if challenge:
        challenge = challenge.replace(f"127.0.0.1:{env.listen_port}", "<listener>")
    upstream = None
    if r.status_code == 200 and req.method != "HEAD":
        upstream = r.json().get("headers", {})
    return Outcome(r.status_code, r.text, challenge, upstream)


def realm_without_query(challenge: str | None) -> str | None:
    """Envoy's realm repeats the request query (with ?access_token= the token itself); meshgate's realm
    omits it (an intended difference, see test_authz_differential.py). Compare without it."""
    if challenge is None:
        return None
    head, sep, rest = challenge.partition('realm="')
    if not sep:
        return challenge
    realm, _, tail = rest.partition('"')
    return f'{head}realm="{realm.split("?", 1)[0]}"{tail}'


# ----------------------------------------------------------------------------------------------------------
# the pair of Envoys per scenario
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Pair:
    native: harness.EnvoyProcess
    meshgate: harness.EnvoyProcess
    plugin: dict


@pytest.fixture(scope="module")
def pairs(meshgate_cli, module_envoy_factory, module_start_meshgate, echo, keycloak_clusters):
    """pairs(scenario) -> Pair, started once per scenario for the module."""
    started: dict[str, Pair] = {}

    def get(scenario: str) -> Pair:
        if scenario in started:
            return started[scenario]
        plugins = convert(meshgate_cli, scenario)
        assert len(plugins) == 1, f"{scenario}: one workload, one WasmPlugin: {plugins}"
        jwt_rules, policies = originals(scenario)
        warnings: list[str] = []
        jwt = istiod_native.render_jwt_authn(jwt_rules, jwks_mode="remote", clear_route_cache=False,
                                             warnings=warnings)
        assert jwt is not None
        rbac = istiod_native.render_rbac(policies, warnings=warnings)
        # expected: the "yes" dry-run annotation of the actions set (istiod enforces; so does the converter)
        unexpected = [w for w in warnings if "istio.io/dry-run" not in w]
        assert not unexpected, f"istiod would skip or change something in {scenario}: {unexpected}"
        for p in policies:
            assert istiod_native.validate_authorization_policy(p) == [], p["metadata"]["name"]
        native = module_envoy_factory(render.render_bootstrap([jwt] + rbac, 0, 0, echo.port, keycloak_clusters))
        meshgate = module_start_meshgate(wasmplugin=plugins[0])
        started[scenario] = Pair(native, meshgate, plugins[0])
        return started[scenario]

    return get


@pytest.fixture(scope="module")
def tokens(idp):
    """tokens(spec) -> the same token string for both sides (minted once per spec)."""
    cache: dict[str, str] = {}

    def get(spec: Any) -> str | None:
        if spec is None or isinstance(spec, str):
            return spec
        key = json.dumps(spec, sort_keys=True)
        if key not in cache:
            cache[key] = idp.mint(**spec)
        return cache[key]

    return get


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_converted_plugin(pairs, scenario):
    """The WasmPlugin as the issue asks for it, with the objects' rules verbatim."""
    plugin = pairs(scenario).plugin
    spec = plugin["spec"]
    assert plugin["apiVersion"] == "extensions.istio.io/v1alpha1" and plugin["kind"] == "WasmPlugin"
    assert (spec["phase"], spec["failStrategy"], spec["pluginName"]) == ("AUTHN", "FAIL_CLOSE", "meshgate")
    # a workload selector: inbound requests only, where Istio applies RequestAuthentication/AuthorizationPolicy
    assert "matchLabels" in spec["selector"] and spec["match"] == [{"mode": "SERVER"}]
    jwt_rules, policies = originals(scenario)
    assert spec["pluginConfig"]["jwtRules"] == jwt_rules
    assert [p["name"] for p in spec["pluginConfig"]["policies"]] == [p["metadata"]["name"] for p in policies]
    for got, obj in zip(spec["pluginConfig"]["policies"], policies):
        assert got["rules"] == obj["spec"]["rules"]
        assert got["action"] == obj["spec"].get("action", "ALLOW")
        dry = (obj["metadata"].get("annotations") or {}).get("istio.io/dry-run") in ("true", "True")
        assert got.get("dryRun", False) == dry


ROWS = [(s, r) for s in sorted(SCENARIOS) for r in SCENARIOS[s]]


@pytest.mark.parametrize("scenario,req", ROWS, ids=[f"{s}: {r.id}" for s, r in ROWS])
def test_same_answer_as_istio(pairs, tokens, scenario, req):
    pair = pairs(scenario)
    token = tokens(req.token)
    native = send(pair.native, req, token)
    mesh = send(pair.meshgate, req, token)
    where = f"{scenario} / {req.id}: native {native.brief()} vs meshgate {mesh.brief()}"
    assert native.status == req.want, f"Istio itself answers differently than the table says: {where}"
    assert mesh.status == native.status, where
    if native.status != 200:
        assert mesh.body == native.body, where
        assert realm_without_query(mesh.challenge) == realm_without_query(native.challenge), \
            f"{where}: challenge {native.challenge!r} vs {mesh.challenge!r}"
    elif native.upstream is not None:
        assert mesh.upstream is not None, where
        for h in ("x-email", "authorization"):
            assert mesh.upstream.get(h) == native.upstream.get(h), f"{where}: upstream header {h}"


def test_output_and_inputs_match_the_istio_crd_schemas(meshgate_cli, istio_schema_validator):  # noqa: F811
    """WasmPlugins of every golden case that converts (tests/converter/*/args, exit 0) and the scenario
    inputs are valid Istio objects: field names, enums (phase, failStrategy, match.mode), targetRefs."""
    docs: list[dict] = []
    for case in sorted(p.parent for p in CONVERTER_DIR.glob("*/args")):
        if (case / "expected.exit").read_text().strip() != "0":
            continue
        args = [a for a in (case / "args").read_text().splitlines() if a]
        stdin = (case / "stdin").read_bytes() if (case / "stdin").exists() else b""
        proc = subprocess.run([meshgate_cli, "convert", "-o", "json", *args], cwd=case, input=stdin,
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, f"{case.name}: {proc.stderr.decode()}"
        out = json.loads(proc.stdout)
        docs += out["items"] if out.get("kind") == "List" else [out]
    n_plugins = len(docs)
    for scenario in SCENARIOS:
        docs += json.loads((CONVERTER_DIR / scenario / "input.json").read_text())
    report = istio_schema_validator(docs)
    results = report["results"]
    assert len(results) == len(docs)
    bad = [(docs[r["index"]]["kind"], docs[r["index"]]["metadata"]["name"], r["errors"])
           for r in results if r["status"] != "ok"]
    # JWTRule.presence (istio/api#3737, 2026-07) is newer than the CRDs in the npm package: the actions input
    # uses it on purpose (meshgate and istiod_native implement it). Nothing else may fail.
    bad = [b for b in bad if not (b[:2] == ("RequestAuthentication", "api-jwt") and len(b[2]) == 1
                                  and '"presence"' in b[2][0])]
    assert not bad, (report.get("istioCrdSource"), bad)
    assert n_plugins >= 10
