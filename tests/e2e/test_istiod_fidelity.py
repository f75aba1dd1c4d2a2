"""Issue "istio": the WasmPlugins in istio/ as istiod would deliver them, end to end.

Each WasmPlugin of `kustomize build istio/` is rendered the way istiod + istio-agent render it (render.py:
HTTP filter `extensions.istio.io/wasmplugin/<ns>.<name>`, configuration = StringValue of the pluginConfig
JSON, root_id = pluginName, failStrategy -> failure_policy, AUTHN placement before the router) and run in the
pip Envoy with the built meshgate.wasm. Envoy gets the clusters Istio creates for the Services (and, for the
external-Keycloak overlay, ServiceEntries) in the manifests, named from those manifests
(`outbound|<port>||<host>`), pointing at loopback stand-ins: the dev IdP for Keycloak, the echo server for
the demo apps. Nothing names the Keycloak cluster by hand: if the Service and the jwtRules disagree, the
filter calls a cluster Envoy does not have and the scenario fails.

Topology of the reference scenario:
    client --> backend sidecar (WasmPlugin demo/meshgate) --> inbound|8080|| --> echo          ("frontend calls
                                                                                               backend's /data")
    client --> ingress gateway (WasmPlugin istio-system/meshgate-gateway, routes from the VirtualService)
               --> outbound|80||backend.demo.svc.cluster.local --> backend sidecar --> echo
               --> outbound|80||frontend.demo.svc.cluster.local --> echo
"""

from __future__ import annotations

import json

import jwt as pyjwt
import pytest

import harness
import render
from test_istio_manifests import (ISTIO_DIR, OVERLAYS, find, jwks_cluster, kustomize_build, service_clusters)

ISSUER = "http://keycloak.keycloak.svc.cluster.local/realms/myrealm"
AUD = "my-backend-client"
RBAC_DENIED = "RBAC: access denied"
MALFORMED = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
GATEWAY_NODE = "router~127.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local"
# The gateway's SSO secrets, as the patched istio-proxy container has them (istio/meshgate/gateway-sso-env-patch.yaml).
GATEWAY_ENV = {"MESHGATE_SSO_CLIENT_SECRET": "gateway-secret",
               "MESHGATE_SSO_COOKIE_SECRET": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
LOGIN_REQUIRED = "Authentication required: sign in with a browser or send a bearer token"


def claims(token: str) -> dict:
    return pyjwt.decode(token, options={"verify_signature": False})


def assert_401(resp, body):
    assert resp.status_code == 401, (resp.status_code, resp.text)
    assert resp.text == body
    assert resp.headers["www-authenticate"].endswith('error="invalid_token"'), resp.headers


def assert_rbac_403(resp):
    assert resp.status_code == 403, (resp.status_code, resp.text)
    assert resp.text == RBAC_DENIED
    assert "www-authenticate" not in resp.headers


def stand_ins(clusters: dict[str, dict], ports: dict[tuple[str, str], int]) -> dict[str, tuple[str, int]]:
    """Istio's clusters for the manifests' Services -> loopback (host, port) of the process standing in for
    each Service (ports: {(namespace, service name): port}). Every cluster gets one."""
    out = {}
    for name, target in clusters.items():
        port = ports.get((target["namespace"], target["name"]))
        assert port, f"no stand-in for {name} ({target['kind']} {target['namespace']}/{target['name']})"
        out[name] = ("127.0.0.1", port)
    return out


def virtualservice_route_config(vs: dict, clusters: dict[str, dict]) -> dict:
    """The gateway's route_config for one VirtualService, as istiod builds it for the subset used here
    (uri prefix/exact matches, a catch-all route, rewrite.uri on prefix matches, one destination)."""
    ns = vs["metadata"]["namespace"]
    routes = []
    for http in vs["spec"]["http"]:
        (dest,) = http["route"]
        d = dest["destination"]
        host = d["host"] if "." in d["host"] else f"{d['host']}.{ns}.svc.cluster.local"
        cluster = f"outbound|{d['port']['number']}||{host}"
        assert cluster in clusters, f"VirtualService {vs['metadata']['name']} routes to unknown {cluster}"
        for m in http.get("match") or [{}]:
            uri = m.get("uri") or {}
            assert set(m) <= {"uri"} and set(uri) <= {"prefix", "exact"}, f"unsupported match {m}"
            match = {"path": uri["exact"]} if "exact" in uri else {"prefix": uri.get("prefix", "/")}
            action = {"cluster": cluster, "timeout": "0s"}
            if "uri" in (http.get("rewrite") or {}):
                assert "prefix" in match, "rewrite.uri is rendered as prefix_rewrite for prefix matches"
                action["prefix_rewrite"] = http["rewrite"]["uri"]
            routes.append({"name": http.get("name", ""), "match": match, "route": action})
    return {"name": "http.8080", "validate_clusters": False,
            "virtual_hosts": [{"name": "*:80", "domains": ["*"], "routes": routes}]}


# ----------------------------------------------------------------------------------------------------------
# fixtures: one backend sidecar and one ingress gateway for the module
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return kustomize_build(ISTIO_DIR)


@pytest.fixture(scope="module")
def clusters(manifests) -> dict[str, dict]:
    return service_clusters(manifests)


@pytest.fixture(scope="module")
def backend(module_envoy_factory, manifests, clusters, meshgate_wasm, idp, echo) -> harness.EnvoyProcess:
    """The backend's sidecar: WasmPlugin demo/meshgate on the inbound chain, clusters from the Services."""
    wp = find(manifests, "WasmPlugin", "meshgate", "demo")
    svc = find(manifests, "Service", "backend", "demo")
    assert render.INBOUND_CLUSTER == f"inbound|{svc['spec']['ports'][0]['targetPort']}||"
    upstreams = stand_ins(clusters, {("keycloak", "keycloak"): idp.port, ("demo", "backend"): echo.port,
                                     ("demo", "frontend"): echo.port})
    cfg = render.render_wasmplugin_envoy(wp, meshgate_wasm, 0, 0, echo.port, upstreams,
                                         access_log_path=str(module_envoy_factory.workdir / "backend-access.log"))
    return module_envoy_factory(cfg)


@pytest.fixture(scope="module")
def gateway(module_envoy_factory, manifests, clusters, meshgate_wasm, idp, echo, backend) -> harness.EnvoyProcess:
    """The ingress gateway: WasmPlugin istio-system/meshgate-gateway, routes from VirtualService demo/demo,
    `outbound|80||backend.demo...` -> the backend sidecar above."""
    wp = find(manifests, "WasmPlugin", "meshgate-gateway", "istio-system")
    vs = find(manifests, "VirtualService", "demo", "demo")
    upstreams = stand_ins(clusters, {("keycloak", "keycloak"): idp.port, ("demo", "backend"): backend.listen_port,
                                     ("demo", "frontend"): echo.port})
    cfg = render.render_wasmplugin_envoy(
        wp, meshgate_wasm, 0, 0, echo.port, upstreams, node_id=GATEWAY_NODE,
        access_log_path=str(module_envoy_factory.workdir / "gateway-access.log"),
        hcm_overrides={"route_config": virtualservice_route_config(vs, clusters),
                       "stat_prefix": "outbound_0.0.0.0_8080", "use_remote_address": True})
    return module_envoy_factory(cfg, env=GATEWAY_ENV)


def backend_requests(backend: harness.EnvoyProcess) -> int:
    return backend.stats("http.inbound.downstream_rq_total").get("http.inbound.downstream_rq_total", 0)


# ----------------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ns,name", [("demo", "meshgate"), ("istio-system", "meshgate-gateway")])
def test_rendered_like_istiod(manifests, ns, name):
    wp = find(manifests, "WasmPlugin", name, ns)
    filters = render.assemble_http_filters([wp], "/m.wasm")
    assert [f["name"] for f in filters] == [f"extensions.istio.io/wasmplugin/{ns}.{name}", "envoy.filters.http.router"]
    cfg = filters[0]["typed_config"]["config"]
    assert cfg["name"] == f"{ns}.{name}" and cfg["root_id"] == wp["spec"]["pluginName"] == "meshgate"
    assert cfg["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    assert json.loads(cfg["configuration"]["value"]) == wp["spec"]["pluginConfig"]
    assert cfg["failure_policy"] == "FAIL_CLOSED" and "vm_id" not in cfg
    assert cfg["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"


def test_clusters_come_from_the_service_manifests(manifests, clusters):
    assert set(clusters) == {"outbound|80||keycloak.keycloak.svc.cluster.local",
                             "outbound|80||backend.demo.svc.cluster.local",
                             "outbound|80||frontend.demo.svc.cluster.local"}
    for wp in (find(manifests, "WasmPlugin", "meshgate", "demo"),
               find(manifests, "WasmPlugin", "meshgate-gateway", "istio-system")):
        for rule in wp["spec"]["pluginConfig"]["jwtRules"]:
            assert jwks_cluster(rule) == "outbound|80||keycloak.keycloak.svc.cluster.local"
            assert "jwksCluster" not in rule, "derived from jwksUri, as Istio names it"


# ----------------------------------------------------------------------------------------------------------
# reference scenario: frontend calls the backend's /data through the backend's sidecar
# ----------------------------------------------------------------------------------------------------------
def test_alice_gets_data(backend, idp):
    token = idp.password_token("alice", client="demo-cli")
    c = claims(token)
    assert c["iss"] == ISSUER and c["email"] == "user@example.com"
    assert AUD in ([c["aud"]] if isinstance(c["aud"], str) else c["aud"])
    resp = backend.get("/data", token=token)
    assert resp.status_code == 200, resp.text
    seen = resp.json()
    assert (seen["method"], seen["path"]) == ("GET", "/data")
    assert "authorization" not in seen["headers"], "forwardOriginalToken is off on the backend"


def test_keys_were_fetched_through_the_keycloak_service_cluster(backend, idp):
    assert backend.get("/data", token=idp.password_token("alice")).status_code == 200
    stats = backend.stats("cluster.outbound|80||keycloak.keycloak.svc.cluster.local.upstream_rq_")
    assert stats.get("cluster.outbound|80||keycloak.keycloak.svc.cluster.local.upstream_rq_200", 0) >= 1, stats
    assert idp.stats()["jwks_fetches"]["myrealm"] >= 1


def test_no_token_is_403_rbac(backend):
    assert_rbac_403(backend.get("/data"))


@pytest.mark.parametrize("token", ["garbage", "a.b", "eyJhbGciOiJSUzI1NiJ9.e30"])
def test_garbage_token_is_401(backend, token):
    assert_401(backend.get("/data", token=token), MALFORMED)


def test_expired_token_is_401(backend, idp):
    assert_401(backend.get("/data", token=idp.mint(user="alice", client="demo-cli", exp_in=-3600)), "Jwt is expired")


def test_badly_signed_token_is_401(backend, idp):
    assert_401(backend.get("/data", token=idp.mint(user="alice", sign_with="unpublished")), "Jwt verification fails")


def test_post_is_403(backend, idp):
    token = idp.password_token("alice")
    assert_rbac_403(backend.request("POST", "/data", token=token, data=b"{}"))
    assert backend.get("/data", token=token).status_code == 200


def test_token_for_another_audience_is_403(backend, idp):
    resp = backend.get("/data", token=idp.mint(user="alice", client="demo-cli", audience="someone-else"))
    assert resp.status_code == 403 and resp.text == "Audiences in Jwt are not allowed", resp.text


def test_frontend_service_account_has_no_email_so_403(backend, idp):
    token = idp.client_credentials_token("frontend", "frontend-secret")
    c = claims(token)
    assert AUD in ([c["aud"]] if isinstance(c["aud"], str) else c["aud"]) and c["azp"] == "frontend"
    assert c.get("email") is None, "the service account has no email: the reference policy denies it"
    assert_rbac_403(backend.get("/data", token=token))


def test_another_user_is_403(backend, idp):
    token = idp.password_token("bob")
    assert claims(token)["email"] == "bob@example.com"
    assert_rbac_403(backend.get("/data", token=token))


def test_token_from_another_issuer_is_401(backend, idp):
    assert_401(backend.get("/data", token=idp.mint(realm="otherrealm")), "Jwt issuer is not configured")


# ----------------------------------------------------------------------------------------------------------
# ingress gateway: tokens required for /api at the edge, checked again by the backend; browser single sign-on
# for the web app (the browser flow itself: test_sso_envoy.py, test_sso_browser.py)
# ----------------------------------------------------------------------------------------------------------
def test_gateway_api_with_alice_reaches_backend_data(gateway, backend, idp):
    before = backend_requests(backend)
    resp = gateway.get("/api/data", token=idp.password_token("alice"))
    assert resp.status_code == 200, resp.text
    seen = resp.json()
    assert (seen["method"], seen["path"]) == ("GET", "/data"), "VirtualService rewrite /api/ -> /"
    assert "authorization" not in seen["headers"]
    assert backend_requests(backend) == before + 1, "went through the backend sidecar"


@pytest.mark.parametrize("path", ["/api/data", "/api", "/api/", "/api/x/y?z=1"])
def test_gateway_api_without_token_is_401_at_the_edge(gateway, backend, path):
    before = backend_requests(backend)
    resp = gateway.get(path)
    assert (resp.status_code, resp.text) == (401, LOGIN_REQUIRED), "no session, not a page load: never a redirect"
    assert resp.headers["www-authenticate"].startswith('Bearer realm="http://')
    assert backend_requests(backend) == before, "denied by the gateway, the backend never saw it"


def test_gateway_web_pages_need_a_session(gateway):
    page = gateway.get("/index.html", headers={"Accept": "text/html"})
    assert page.status_code == 302
    assert page.headers["location"].startswith(f"{ISSUER}/protocol/openid-connect/auth?response_type=code&client_id=meshgate-gateway&")
    assert gateway.get("/apiary").status_code == 401, "/api/* does not match /apiary: a web page"


def test_gateway_web_pages_are_for_the_web_app_users(gateway, idp):
    """The web-app-users policy, checked with bearer tokens (a session's token is checked the same way)."""
    resp = gateway.get("/index.html", token=idp.password_token("alice"))
    assert resp.status_code == 200 and resp.json()["path"] == "/index.html"
    assert_rbac_403(gateway.get("/index.html", token=idp.password_token("bob")))
    assert_rbac_403(gateway.get("/index.html", token=idp.client_credentials_token()))


def test_gateway_rejects_invalid_tokens_everywhere(gateway, backend, idp):
    before = backend_requests(backend)
    assert_401(gateway.get("/index.html", token="garbage"), MALFORMED)
    assert_401(gateway.get("/api/data", token=idp.mint(exp_in=-3600)), "Jwt is expired")
    resp = gateway.get("/api/data", token=idp.mint(audience="someone-else"))
    assert resp.status_code == 403 and resp.text == "Audiences in Jwt are not allowed"
    assert backend_requests(backend) == before


def test_gateway_passes_what_the_backend_then_denies(gateway, backend, idp):
    """The edge only requires a valid token; the backend's finer policy (GET, email) still applies."""
    before = backend_requests(backend)
    assert_rbac_403(gateway.request("POST", "/api/data", token=idp.password_token("alice"), data=b"{}"))
    assert_rbac_403(gateway.get("/api/data", token=idp.client_credentials_token()))
    assert_rbac_403(gateway.get("/api/data", token=idp.password_token("bob")))
    assert backend_requests(backend) == before + 3


# ----------------------------------------------------------------------------------------------------------
# overlays/external-keycloak: the key server behind a ServiceEntry + TLS-originating cluster
# ----------------------------------------------------------------------------------------------------------
def test_external_keycloak_overlay_end_to_end(envoy_factory, meshgate_wasm, echo, tmp_path):
    docs = kustomize_build(OVERLAYS / "external-keycloak")
    wp = find(docs, "WasmPlugin", "meshgate", "demo")
    (rule,) = wp["spec"]["pluginConfig"]["jwtRules"]
    clusters = service_clusters(docs)
    assert jwks_cluster(rule) == "outbound|80||keycloak.example.com" and jwks_cluster(rule) in clusters
    ext = harness.start_idp(issuer_base="https://keycloak.example.com", extra_realms=(), workdir=tmp_path / "idp")
    try:
        dead = harness.free_port()  # the TLS port is never called with plain HTTP
        upstreams = {name: ("127.0.0.1", ext.port if t["port"] == 80 else dead) for name, t in clusters.items()
                     if t["kind"] == "ServiceEntry"}
        upstreams.update({name: ("127.0.0.1", echo.port) for name, t in clusters.items() if t["kind"] == "Service"})
        env = envoy_factory(render.render_wasmplugin_envoy(wp, meshgate_wasm, 0, 0, echo.port, upstreams))
        token = ext.password_token("alice")
        assert claims(token)["iss"] == rule["issuer"] == "https://keycloak.example.com/realms/myrealm"
        assert env.get("/data", token=token).status_code == 200
        assert_rbac_403(env.get("/data"))
        assert ext.stats()["jwks_fetches"]["myrealm"] >= 1
        assert env.stats("cluster.outbound|80||keycloak.example.com.upstream_rq_200")[
            "cluster.outbound|80||keycloak.example.com.upstream_rq_200"] >= 1
        assert env.stats("cluster.outbound|443||keycloak.example.com.upstream_rq_total").get(
            "cluster.outbound|443||keycloak.example.com.upstream_rq_total", 0) == 0
    finally:
        ext.stop()
