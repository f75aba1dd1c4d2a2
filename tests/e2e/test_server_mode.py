"""`match: [{mode: SERVER}]` (the converter's default for workload selectors): the filter runs only on the
sidecar's inbound listener, and its key fetches still reach Keycloak through `outbound|80||keycloak...`.

istio/istio#53612 (also #53613, istio/api#3341) reports that a SERVER-mode WasmPlugin cannot make
`proxy_http_call`s. What the code says:

* istiod (pilot/pkg/model/wasm.go: matchTrafficSelectors -> matchMode -> workloadModeForListenerClass) uses
  `match.mode` only to choose the listeners whose HTTP filter chain gets the plugin's filter: SERVER <->
  SIDECAR_INBOUND, CLIENT <-> SIDECAR_OUTBOUND and GATEWAY. Clusters come from CDS (Services, ServiceEntries,
  the Sidecar resource's egress hosts), never from WasmPlugins.
* Envoy's Wasm `httpCall` (source/extensions/common/wasm/context.cc) looks the cluster up in the server-wide
  cluster manager (`clusterManager().getThreadLocalCluster(name)`), not in anything of the listener the
  filter sits on; an unknown name is BadArgument.

So the mode cannot make a cluster unreachable; a missing cluster can (e.g. a Sidecar resource whose egress
hosts leave Keycloak out). This module shows both in Envoy 1.40: a sidecar with an inbound listener (the
plugin, placed by Istio's rule for its `match`) and an outbound listener (no plugin), the plugin written by
`meshgate convert` for tests/converter/reference.
"""

from __future__ import annotations

import pytest
import requests

import harness
import render
from test_converter_differential import convert, meshgate_cli  # noqa: F401  (session fixture: the CLI)

KEYCLOAK_CLUSTER = render.KEYCLOAK_CLUSTER
BACKEND_CLUSTER = "outbound|80||backend.backend.svc.cluster.local"
FILTER_NAME = "extensions.istio.io/wasmplugin/backend.meshgate"
RBAC_DENIED = "RBAC: access denied"

# Istio's listener classes and the WorkloadMode each one matches (pilot/pkg/model/wasm.go).
LISTENER_MODE = {"SIDECAR_INBOUND": "SERVER", "SIDECAR_OUTBOUND": "CLIENT", "GATEWAY": "CLIENT"}


def selects(wasmplugin: dict, listener_class: str) -> bool:
    """Does istiod put this WasmPlugin's filter on a listener of this class? (matchTrafficSelectors, without
    port selectors: none are used here.) No match, CLIENT_AND_SERVER or UNDEFINED: every listener."""
    selectors = (wasmplugin.get("spec") or {}).get("match") or []
    assert all("ports" not in m for m in selectors), "port selectors are not modelled here"
    if not selectors:
        return True
    return any(m.get("mode", "UNDEFINED") in ("UNDEFINED", "CLIENT_AND_SERVER")
               or m["mode"] == LISTENER_MODE[listener_class] for m in selectors)


def sidecar_bootstrap(wasmplugins: list[dict], wasm: str, echo_port: int,
                      clusters: dict[str, tuple[str, int]]) -> dict:
    """One sidecar: `virtualInbound` (-> inbound|8080|| -> echo) and an outbound listener for
    backend.backend.svc.cluster.local:80 (-> BACKEND_CLUSTER -> echo), each with the WasmPlugins Istio
    places on that listener class. Both listen on loopback ports chosen by Envoy."""
    inbound = render.assemble_http_filters([w for w in wasmplugins if selects(w, "SIDECAR_INBOUND")], wasm)
    outbound = render.assemble_http_filters([w for w in wasmplugins if selects(w, "SIDECAR_OUTBOUND")], wasm)
    cfg = render.render_bootstrap(inbound, 0, 0, echo_port, clusters)
    listener = render.render_bootstrap(outbound, 0, 0, echo_port)["static_resources"]["listeners"][0]
    listener["name"] = "0.0.0.0_80"
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["stat_prefix"] = "outbound_0.0.0.0_80"
    hcm["route_config"] = {"name": "80", "validate_clusters": False, "virtual_hosts": [{
        "name": "backend.backend.svc.cluster.local:80", "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": BACKEND_CLUSTER, "timeout": "0s"}}]}]}
    cfg["static_resources"]["listeners"].append(listener)
    return cfg


def http_filter_names(cfg: dict, listener: str) -> list[str]:
    (lst,) = [x for x in cfg["static_resources"]["listeners"] if x["name"] == listener]
    return [f["name"] for f in lst["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]]


def listener_ports(env: harness.EnvoyProcess) -> dict[str, int]:
    data = requests.get(f"{env.admin_url}/listeners?format=json", timeout=5).json()
    return {s["name"]: int(s["local_address"]["socket_address"]["port_value"]) for s in data["listener_statuses"]}


@pytest.fixture(scope="module")
def plugin(meshgate_cli) -> dict:  # noqa: F811
    (wp,) = convert(meshgate_cli, "reference")
    return wp


def test_the_converter_writes_server_for_a_workload_selector(plugin):
    assert plugin["spec"]["selector"] == {"matchLabels": {"app": "backend"}}
    assert plugin["spec"]["match"] == [{"mode": "SERVER"}]
    # where istiod puts it: the sidecar's inbound listener only; never a gateway's listener
    assert [selects(plugin, c) for c in LISTENER_MODE] == [True, False, False]


def test_a_server_mode_plugin_fetches_keys_through_the_keycloak_cluster(plugin, meshgate_wasm, echo, idp_clean,
                                                                         envoy_factory):
    idp = idp_clean
    cfg = sidecar_bootstrap([plugin], meshgate_wasm, echo.port,
                            {KEYCLOAK_CLUSTER: ("127.0.0.1", idp.port), BACKEND_CLUSTER: ("127.0.0.1", echo.port)})
    assert http_filter_names(cfg, "virtualInbound") == [FILTER_NAME, "envoy.filters.http.router"]
    assert http_filter_names(cfg, "0.0.0.0_80") == ["envoy.filters.http.router"]
    env = envoy_factory(cfg)
    ports = listener_ports(env)
    assert ports["virtualInbound"] == env.listen_port and ports["0.0.0.0_80"] not in (0, env.listen_port)

    # the filter exists only on the inbound listener, and fetches the keys (at configure time, before any
    # request) through the outbound cluster of the Keycloak Service
    ok = f"cluster.{KEYCLOAK_CLUSTER}.upstream_rq_200"
    harness.wait_until(lambda: env.stats(ok).get(ok, 0) >= 1, timeout=15, desc=f"{ok} >= 1")
    assert idp.stats()["jwks_fetches"]["myrealm"] >= 1

    alice = env.get("/data", token=idp.password_token("alice"))
    assert alice.status_code == 200, alice.text
    assert alice.json()["path"] == "/data"
    bob = env.get("/data", token=idp.password_token("bob"))
    assert (bob.status_code, bob.text) == (403, RBAC_DENIED)
    forged = env.get("/data", token=idp.mint(user="alice", sign_with="unpublished"))
    assert (forged.status_code, forged.text) == (401, "Jwt verification fails")
    anonymous = env.get("/data")
    assert (anonymous.status_code, anonymous.text) == (403, RBAC_DENIED)

    # requests the workload sends leave through the outbound listener, which has no meshgate filter
    out = requests.get(f"http://127.0.0.1:{ports['0.0.0.0_80']}/data", timeout=10)
    assert out.status_code == 200, out.text
    assert out.json()["path"] == "/data"
    stats = env.stats("wasmcustom.meshgate.allowed")
    assert stats.get("wasmcustom.meshgate.allowed") == 1, stats


def test_what_fails_is_a_missing_cluster_not_the_mode(plugin, meshgate_wasm, echo, idp_clean, envoy_factory):
    """Without `outbound|80||keycloak...` in the proxy (what a Sidecar resource that leaves Keycloak out of
    its egress hosts does) the same plugin fails closed, in any mode."""
    idp = idp_clean
    cfg = sidecar_bootstrap([plugin], meshgate_wasm, echo.port, {BACKEND_CLUSTER: ("127.0.0.1", echo.port)})
    env = envoy_factory(cfg)
    resp = env.get("/data", token=idp.password_token("alice"))
    assert (resp.status_code, resp.text) == (401, "Jwks remote fetch is failed")
    want = f'dispatch_http_call to cluster "{KEYCLOAK_CLUSTER}" failed (BadArgument)'
    harness.wait_until(lambda: want in env.log(), timeout=5, desc="the BadArgument log line")
    assert idp.stats()["jwks_fetches"].get("myrealm", 0) == 0
