"""Issue "egress": a frontend calls a backend that requires a Keycloak token, with no authentication code.

Two Envoys on loopback, rendered as istiod renders them:

    client (requests, like `curl http://backend/data` in the frontend pod)
      -> frontend sidecar, outbound listener 0.0.0.0_80 (traffic_direction OUTBOUND), WasmPlugin
         `match: [{mode: CLIENT}]` with an `egress` target for the backend: client-credentials token from
         the IdP (client `frontend`, secret from the VM environment), `Authorization: Bearer` injected
      -> backend sidecar, inbound listener (traffic_direction INBOUND), WasmPlugin `match: [{mode: SERVER}]`
         with jwtRules + a policy on the service account's claims (azp, aud, client_id)
      -> echo backend (answers with the headers it received)

Against the dev IdP (tests/e2e/idp.py), whose token endpoint counts requests and fails on demand
(`/_admin/token-mode`): one token fetch for many requests, a refresh before expiry with no failed request,
IdP down -> 503 (onError deny) or forwarded without a token (allow), recovery by itself, a wrong secret in a
metric and a log line without the secret, requests waiting for the first token, and the direction rule
(egress only on a sidecar's OUTBOUND listener; jwtRules keep running on inbound and gateway listeners).
The same scenario against a real Keycloak is tests/e2e/test_egress_keycloak.py.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import time
from typing import Any

import pytest
import requests

import harness
import render
from conftest import make_wasmplugin

BACKEND_HOST = "backend.demo.svc.cluster.local"
OTHER_HOST = "other.demo.svc.cluster.local"
TOKEN_ENDPOINT = f"{harness.ISSUER}/protocol/openid-connect/token"
SECRET_ENV = "FRONTEND_CLIENT_SECRET"
SECRET = "frontend-secret"
PREFIX = "wasmcustom.meshgate.egress.backend."


def backend_plugin() -> dict:
    """The backend's WasmPlugin: Keycloak tokens required by a policy on the service account's claims."""
    wp = make_wasmplugin({
        "jwtRules": [{"issuer": harness.ISSUER, "jwksUri": harness.JWKS_URI, "audiences": [harness.AUDIENCE],
                      "forwardOriginalToken": True, "outputPayloadToHeader": "x-jwt-payload"}],
        "policies": [{"name": "frontend-only", "action": "ALLOW", "rules": [{
            "to": [{"operation": {"methods": ["GET"]}}],
            "when": [{"key": "request.auth.claims[azp]", "values": ["frontend"]},
                     {"key": "request.auth.claims[aud]", "values": [harness.AUDIENCE]},
                     {"key": "request.auth.claims[client_id]", "values": ["frontend"]}]}]}],
    }, name="backend-auth", namespace="demo")
    wp["spec"]["match"] = [{"mode": "SERVER"}]
    return wp


def egress_target(**extra: Any) -> dict:
    t = {"name": "backend", "hosts": ["backend", BACKEND_HOST], "tokenEndpoint": TOKEN_ENDPOINT,
         "clientId": "frontend", "clientSecretEnv": SECRET_ENV}
    t.update(extra)
    return t


def frontend_plugin(config: dict | None = None, secret: str = SECRET, **target: Any) -> dict:
    wp = make_wasmplugin(config or {"egress": [egress_target(**target)]}, name="frontend-egress",
                         namespace="demo", env=[{"name": SECRET_ENV, "value": secret}])
    wp["spec"]["match"] = [{"mode": "CLIENT"}]
    return wp


@pytest.fixture()
def idp_tokens(idp: harness.IdPProcess):
    """The session IdP with its token endpoint back to normal and counters zeroed, before and after."""
    def mode(m: str = "normal", **params: Any) -> None:
        idp._admin("POST", "token-mode", params={"realm": harness.REALM, "mode": m, **params})

    mode("normal", lifespan=0)
    idp.reset()
    yield mode
    mode("normal", lifespan=0)
    idp.reset()


def token_requests(idp: harness.IdPProcess) -> int:
    return idp.stats()["token_requests"][harness.REALM]


@pytest.fixture()
def mesh(envoy_factory, meshgate_wasm, echo, idp, keycloak_clusters, tmp_path):
    """start(frontend_wp) -> (frontend Envoy, backend Envoy). The backend sidecar is started once per test."""
    backend_cfg = render.render_wasmplugin_envoy(backend_plugin(), meshgate_wasm, 0, 0, echo.port, keycloak_clusters,
                                                 access_log_path=str(tmp_path / "backend-access.log"))
    backend = envoy_factory(backend_cfg)

    def start(wp: dict, **kw: Any) -> harness.EnvoyProcess:
        cfg = render.render_sidecar_outbound(
            [wp, backend_plugin()], meshgate_wasm, 0, 0,
            {BACKEND_HOST: (80, ("127.0.0.1", backend.listen_port)), OTHER_HOST: (80, ("127.0.0.1", echo.port))},
            keycloak_clusters, access_log_path=str(tmp_path / "frontend-access.log"))
        return envoy_factory(cfg, **kw)

    start.backend = backend  # type: ignore[attr-defined]
    return start


def get(env: harness.EnvoyProcess, host: str = "backend", path: str = "/data", **headers: str) -> requests.Response:
    """What `curl http://<host><path>` in the frontend pod does: iptables sends it to the outbound listener."""
    return requests.get(env.url(path), headers={"Host": host, **headers}, timeout=15)


def seen_by_backend(r: requests.Response) -> dict:
    """The echo's view of the request the backend received: headers, and the verified token's claims."""
    body = r.json()
    h = body["headers"]
    claims = None
    if "x-jwt-payload" in h:
        p = h["x-jwt-payload"]
        claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    return {"headers": h, "claims": claims}


def counters(env: harness.EnvoyProcess) -> dict[str, int]:
    """The target's counters (summed over the Envoy's Wasm VMs: the main thread's and the worker's)."""
    return {k[len(PREFIX):]: v for k, v in env.stats(PREFIX).items()}


def configured_vms(env: harness.EnvoyProcess) -> int:
    """Wasm VMs that configured the frontend plugin (each holds its own token; Envoy also configures one for
    the main thread and one it discards after validating the config)."""
    return sum("egress targets" in line and "configured" in line for line in env.log().splitlines())


def test_frontend_reaches_backend_with_no_token_in_its_code(mesh, idp, idp_tokens):
    """The reference scenario: `curl http://backend/data` from the frontend pod gets 200, with the frontend
    service account's token injected by its sidecar; one token for many requests."""
    front = mesh(frontend_plugin())
    # The backend itself refuses a caller without a token (the policy needs the service account).
    direct = requests.get(mesh.backend.url("/data"), headers={"Host": "backend"}, timeout=10)
    assert (direct.status_code, direct.text) == (403, "RBAC: access denied")

    # Both VMs that run the plugin (the main thread's and the worker's) fetch their token at configure time;
    # once they have it no request waits (under load the first request could otherwise beat the fetch).
    harness.wait_until(lambda: counters(front).get("fetch_ok", 0) >= 2, timeout=10, desc="configure-time tokens")
    harness.wait_until(lambda: get(front).status_code == 200, timeout=10, desc="first 200")
    fetches = token_requests(idp)
    assert 1 <= fetches <= configured_vms(front), "tokens fetched at configure time, one per VM"
    tokens = set()
    for host in ("backend", "backend:80", BACKEND_HOST, f"{BACKEND_HOST}:80") * 5:
        r = get(front, host)
        assert r.status_code == 200, (host, r.status_code, r.text)
        seen = seen_by_backend(r)
        claims = seen["claims"]
        assert claims["azp"] == "frontend" and claims["client_id"] == "frontend", claims
        assert claims["aud"] == harness.AUDIENCE or harness.AUDIENCE in claims["aud"], claims
        assert claims["iss"] == harness.ISSUER and claims["preferred_username"] == "service-account-frontend"
        tokens.add(seen["headers"]["authorization"])
    assert len(tokens) == 1, "one token for every request"
    assert token_requests(idp) == fetches, "no token fetch for 20 more requests"
    c = counters(front)
    assert (c["injected"], c["waited"], c["denied"], c["fetch_failed"]) == (21, 0, 0, 0), c
    assert c["fetch_ok"] == fetches

    # Not an egress target: forwarded untouched. `backend.demo` reaches the backend too (istiod's domains),
    # but only the listed hosts get the token.
    r = get(front, OTHER_HOST)
    assert r.status_code == 200 and "authorization" not in r.json()["headers"]
    r = get(front, "backend.demo")
    assert (r.status_code, r.text) == (403, "RBAC: access denied")
    assert counters(front)["injected"] == 21
    # The application's own Authorization is kept (no `override`): the backend sees alice's token, whose
    # azp is demo-cli, and its policy says no.
    alice = idp.password_token()
    r = get(front, "backend", Authorization=f"Bearer {alice}")
    assert (r.status_code, r.text) == (403, "RBAC: access denied")
    assert counters(front)["kept"] == 1
    # The frontend sidecar's backend plugin (SERVER mode) is not on the outbound listener.
    assert "backend-auth" not in json.dumps(json.loads(front.config_path.read_text())["static_resources"]["listeners"])


def test_override_replaces_the_applications_authorization(mesh, idp, idp_tokens):
    front = mesh(frontend_plugin(override=True))
    alice = idp.password_token()
    r = harness.wait_until(lambda: (x := get(front, "backend", Authorization=f"Bearer {alice}")).status_code == 200
                           and x, timeout=10, desc="200 with the injected token")
    assert seen_by_backend(r)["claims"]["azp"] == "frontend"


def test_refresh_before_expiry_without_a_failed_request(mesh, idp, idp_tokens):
    idp_tokens("normal", lifespan=4)
    front = mesh(frontend_plugin(refreshAt=0.5))
    harness.wait_until(lambda: get(front).status_code == 200, timeout=10, desc="first 200")
    before = counters(front)  # a first request may have waited for the configure-time fetch
    statuses, tokens, late = [], set(), []
    t_end = time.time() + 9
    while time.time() < t_end:
        r = get(front)
        statuses.append(r.status_code)
        if r.status_code == 200:
            seen = seen_by_backend(r)
            tokens.add(seen["headers"]["authorization"])
            if seen["claims"]["exp"] <= int(time.time()) - 1:
                late.append(seen["claims"]["exp"])
        time.sleep(0.05)
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert not late, "a token was sent after its expiry"
    # 4 s tokens refreshed at 2 s: over ~9 s the worker's VM used 4 to 6 tokens, each fetched before the
    # previous one expired (no request waited, none was refused).
    c = counters(front)
    assert c["waited"] == before["waited"] and c["denied"] == 0 and c["fetch_failed"] == 0, (before, c)
    assert 4 <= len(tokens) <= 6, len(tokens)
    assert c["fetch_ok"] >= len(tokens)


@pytest.mark.parametrize("fault,reason", [
    ("error500", "token endpoint answered HTTP 500 unknown_error"),
    ("reset", "token endpoint answered HTTP 503: upstream connect error or disconnect/reset before headers. "
              "reset reason: connection termination"),
    ("garbage", "token response is not JSON"),
])
def test_idp_down_503_then_recovers_by_itself(mesh, idp, idp_tokens, fault, reason):
    idp_tokens(fault)
    front = mesh(frontend_plugin())
    harness.wait_until(lambda: counters(front).get("fetch_failed", 0) >= 1, timeout=10, desc="failed fetch")
    r = get(front)
    assert r.status_code == 503
    assert r.text == f'meshgate egress: no access token for target "backend": {reason}'
    assert counters(front)["denied"] >= 1
    idp_tokens("normal")
    r = harness.wait_until(lambda: (x := get(front)).status_code == 200 and x, timeout=40, interval=0.5,
                           desc="200 again once the IdP is back")
    assert seen_by_backend(r)["claims"]["azp"] == "frontend"


def test_on_error_allow_forwards_without_a_token(mesh, idp, idp_tokens):
    idp_tokens("error500")
    front = mesh(frontend_plugin(onError="allow"))
    harness.wait_until(lambda: counters(front).get("fetch_failed", 0) >= 1, timeout=10, desc="failed fetch")
    # Forwarded without a token: the backend's own policy answers.
    r = get(front)
    assert (r.status_code, r.text) == (403, "RBAC: access denied")
    r = get(front, OTHER_HOST)
    assert r.status_code == 200
    c = counters(front)
    assert c["no_token"] >= 1 and c["denied"] == 0, c


def test_wrong_secret_is_a_metric_and_a_log_line_without_the_secret(mesh, idp, idp_tokens):
    wrong = "wrong-secret-7f3a9c"
    front = mesh(frontend_plugin(secret=wrong))
    harness.wait_until(lambda: counters(front).get("fetch_rejected", 0) >= 1, timeout=10, desc="rejected fetch")
    r = get(front)
    assert r.status_code == 503
    assert r.text == ('meshgate egress: no access token for target "backend": token endpoint answered HTTP 401 '
                      'unauthorized_client: Invalid client or Invalid client credentials')
    log = harness.wait_until(lambda: (t := front.log()) and "refused client" in t and t, timeout=5, desc="log line")
    line = next(x for x in log.splitlines() if "refused client" in x)
    assert 'egress target backend: the token endpoint refused client "frontend"' in line, line
    basic = base64.b64encode(f"frontend:{wrong}".encode()).decode()
    for leak in (wrong, basic):
        assert leak not in log, "the secret (or its Basic encoding) is in Envoy's log"
        assert leak not in r.text
    c = counters(front)
    assert c["fetch_failed"] >= c["fetch_rejected"] >= 1 and c["fetch_ok"] == 0, c


def test_first_requests_wait_for_one_fetch_then_time_out_when_too_slow(mesh, idp, idp_tokens):
    idp_tokens("slow", delay=1.5)
    front = mesh(frontend_plugin())
    with cf.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: get(front), range(8)))
    assert [r.status_code for r in results] == [200] * 8
    assert len({seen_by_backend(r)["headers"]["authorization"] for r in results}) == 1
    assert token_requests(idp) <= configured_vms(front), "single flight: one fetch per VM, not per request"
    assert counters(front)["waited"] >= 1

    idp_tokens("slow", delay=4)
    slow = mesh(frontend_plugin(timeout="1s"))
    t0 = time.monotonic()
    r = get(slow)
    waited = time.monotonic() - t0
    assert r.status_code == 503
    # The wait and the call end after the same 1 s: either answer names the timeout.
    assert r.text in ('meshgate egress: no access token for target "backend": the token endpoint did not answer '
                      'within 1000 ms',
                      'meshgate egress: no access token for target "backend": token endpoint answered HTTP 504: '
                      'upstream request timeout'), r.text
    assert waited < 3.5, f"a request waits at most about the target's timeout, waited {waited:.1f} s"


# ---- which requests take the egress stage -----------------------------------------------------------------
def both_plugin() -> dict:
    """One plugin that verifies inbound tokens (presence REQUIRED) and carries an egress target."""
    return make_wasmplugin({
        "jwtRules": [{"issuer": harness.ISSUER, "jwksUri": harness.JWKS_URI, "presence": "REQUIRED"}],
        "egress": [egress_target()],
    }, env=[{"name": SECRET_ENV, "value": SECRET}])


def test_direction_outbound_sidecar_runs_only_egress(mesh, idp, idp_tokens):
    front = mesh(both_plugin())
    r = harness.wait_until(lambda: (x := get(front)).status_code == 200 and x, timeout=10, desc="200")
    assert seen_by_backend(r)["claims"]["azp"] == "frontend"
    assert front.stats("wasmcustom.meshgate.denied.missing").get("wasmcustom.meshgate.denied.missing") == 0


def test_direction_inbound_listener_runs_jwt_rules(start_meshgate, idp, idp_tokens):
    env = start_meshgate(wasmplugin=both_plugin())
    cfg = json.loads(env.config_path.read_text())
    assert cfg["static_resources"]["listeners"][0]["traffic_direction"] == "INBOUND"
    r = requests.get(env.url("/data"), headers={"Host": "backend"}, timeout=10)
    assert (r.status_code, r.text) == (401, "Jwt is missing")
    assert env.stats(PREFIX).get(PREFIX + "injected") == 0


def test_direction_gateway_listener_runs_jwt_rules(envoy_factory, meshgate_wasm, echo, idp, idp_tokens,
                                                  keycloak_clusters):
    """Gateway listeners are OUTBOUND in Istio (gateway.go buildGatewayListener) and CLIENT for WasmPlugin
    `match`; meshgate tells them from a sidecar by the node type (`router~`), so jwtRules keep running."""
    wp = both_plugin()
    wp["spec"]["match"] = [{"mode": "CLIENT"}]
    env = envoy_factory(render.render_gateway([wp], meshgate_wasm, 0, 0, echo.port, keycloak_clusters))
    cfg = json.loads(env.config_path.read_text())
    assert cfg["static_resources"]["listeners"][0]["traffic_direction"] == "OUTBOUND"
    r = requests.get(env.url("/data"), headers={"Host": "backend"}, timeout=10)
    assert (r.status_code, r.text) == (401, "Jwt is missing")
    token = idp.password_token()
    r = requests.get(env.url("/data"), headers={"Host": "backend", "Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200
    assert "authorization" not in r.json()["headers"], "the gateway verified (and removed) alice's token"
    assert env.stats(PREFIX).get(PREFIX + "injected") == 0
    assert "egress is configured but this proxy is an Istio gateway" in env.log()


def test_direction_unspecified_listener_is_not_outbound(envoy_factory, meshgate_wasm, echo, idp, idp_tokens,
                                                       keycloak_clusters):
    """A listener without traffic_direction (plain Envoy, not Istio) never turns verification off."""
    filters = render.assemble_http_filters([both_plugin()], meshgate_wasm)
    cfg = render.render_bootstrap(filters, 0, 0, echo.port, keycloak_clusters, traffic_direction="UNSPECIFIED")
    env = envoy_factory(cfg)
    r = requests.get(env.url("/data"), headers={"Host": "backend"}, timeout=10)
    assert (r.status_code, r.text) == (401, "Jwt is missing")


def test_missing_secret_env_refuses_to_load(envoy_factory, meshgate_wasm, idp, keycloak_clusters):
    wp = make_wasmplugin({"egress": [egress_target()]}, name="frontend-egress", namespace="demo")
    wp["spec"]["match"] = [{"mode": "CLIENT"}]
    cfg = render.render_sidecar_outbound([wp], meshgate_wasm, 0, 0, {}, keycloak_clusters)
    with pytest.raises(harness.HarnessError) as e:
        envoy_factory(cfg, timeout=20)
    assert ('invalid configuration: egress[0].clientSecretEnv: environment variable "FRONTEND_CLIENT_SECRET" is not '
            'set in the Wasm VM (WasmPlugin spec.vmConfig.env)') in str(e.value)


# ---- the WasmPlugins of istio/, verbatim, frontend sidecar -> backend sidecar over Istio-style mTLS --------
def _mtls_material(tmp_path) -> dict[str, str]:
    """A mesh CA and SPIFFE workload certificates as istiod issues them (URI SAN spiffe://<td>/ns/<ns>/sa/<sa>)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
    out = {"ca": pem(ca)}
    for sa in ("backend", "frontend", "other"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://cluster.local/ns/demo/sa/{sa}")]), critical=True)
                .sign(ca_key, hashes.SHA256()))
        out[sa] = pem(cert)
        out[f"{sa}-key"] = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode()
    return out


def _tls_context(m: dict, sa: str) -> dict:
    return {"tls_certificates": [{"certificate_chain": {"inline_string": m[sa]},
                                  "private_key": {"inline_string": m[f"{sa}-key"]}}],
            "validation_context": {"trusted_ca": {"inline_string": m["ca"]}}}


def test_istio_manifests_frontend_calls_backend_over_mtls(envoy_factory, meshgate_wasm, echo, idp, idp_tokens,
                                                         keycloak_clusters, tmp_path):
    """istio/'s WasmPlugins verbatim: demo/frontend-egress on the frontend's outbound listener (client secret
    from the VM environment, as vmConfig.env valueFrom HOST passes it), demo/meshgate on the backend's inbound
    listener, Istio mTLS between them. The backend's policy frontend-service-account needs the token's azp and
    client_id and the caller's SPIFFE identity: the frontend gets 200 with no token of its own; the same token
    from another workload identity gets 403."""
    from test_istio_manifests import find, kustomize_build

    docs = kustomize_build()
    frontend_wp = find(docs, "WasmPlugin", "frontend-egress", "demo")
    backend_wp = find(docs, "WasmPlugin", "meshgate", "demo")
    env_var = frontend_wp["spec"]["vmConfig"]["env"][0]
    assert env_var == {"name": SECRET_ENV, "valueFrom": "HOST"}
    m = _mtls_material(tmp_path)

    backend_cfg = render.render_wasmplugin_envoy(backend_wp, meshgate_wasm, 0, 0, echo.port, keycloak_clusters)
    chain = backend_cfg["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True, "common_tls_context": _tls_context(m, "backend")}}
    backend = envoy_factory(backend_cfg)

    def frontend(sa: str) -> harness.EnvoyProcess:
        cfg = render.render_sidecar_outbound([frontend_wp, backend_wp], meshgate_wasm, 0, 0,
                                             {BACKEND_HOST: (80, ("127.0.0.1", backend.listen_port))},
                                             keycloak_clusters)
        cluster = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == f"outbound|80||{BACKEND_HOST}")
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": f"outbound_.80_._.{BACKEND_HOST}", "common_tls_context": _tls_context(m, sa)}}
        vm_env = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
            "http_filters"][0]["typed_config"]["config"]["vm_config"]["environment_variables"]
        assert vm_env == {"host_env_keys": [SECRET_ENV]}
        return envoy_factory(cfg, env={SECRET_ENV: SECRET})

    front = frontend("frontend")
    r = harness.wait_until(lambda: (x := get(front)).status_code == 200 and x, timeout=15, desc="200 over mTLS")
    seen = r.json()["headers"]
    assert "authorization" not in seen, "the backend's jwtRule consumes the token (forwardOriginalToken false)"
    assert seen["x-forwarded-client-cert"].startswith("By=spiffe://cluster.local/ns/demo/sa/backend;Hash="), seen
    allowed = "wasmcustom.meshgate.policy.frontend-service-account.allowed"
    assert backend.stats(allowed)[allowed] >= 1, "allowed by the frontend's policy (azp, client_id, principal)"
    assert counters(front)["injected"] >= 1
    # The same kind of token from another workload identity: the policy's principal does not match.
    other = frontend("other")
    # (a 403 Response is falsy: wait for a list holding it)
    (r,) = harness.wait_until(lambda: (x := get(other)).status_code != 503 and [x], timeout=15, desc="an answer")
    assert (r.status_code, r.text) == (403, "RBAC: access denied")
