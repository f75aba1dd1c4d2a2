"""Render Istio objects into a static Envoy bootstrap, the way istiod + istio-agent deliver them to a sidecar.

What istiod does for a WasmPlugin (istio/istio pilot/pkg/model/extensions.go, extensionfilter.go) and what
istio-agent then does (pkg/wasm/convert.go), collapsed into one static config:

* HTTP filter named `extensions.istio.io/wasmplugin/<ns>.<name>`, typed_config
  `envoy.extensions.filters.http.wasm.v3.Wasm` with PluginConfig
  {name: "<ns>.<name>", root_id: spec.pluginName,
   configuration: Any(google.protobuf.StringValue{value: <spec.pluginConfig as JSON>}) (absent when empty),
   vm_config: {runtime: envoy.wasm.runtime.v8, code: {local: {filename}}, environment_variables},
   failure_policy: FAIL_CLOSED | FAIL_OPEN | FAIL_RELOAD}.
  istiod sends it through ECDS and the agent rewrites the remote OCI/HTTP code source into
  `local.filename`; here it is inlined and points at the built module directly. No vm_id (istiod sets none).
  istiod's internal env vars (ISTIO_META_WASM_*) are stripped by the agent, so only spec.vmConfig.env
  reaches Envoy: INLINE -> key_values, HOST -> host_env_keys.
* failStrategy: FAIL_CLOSE (the proto default) -> FAIL_CLOSED, FAIL_OPEN -> FAIL_OPEN,
  FAIL_RELOAD -> FAIL_RELOAD (Envoy >= 1.31 PluginConfig.failure_policy; the older bool `fail_open` is
  deprecated and what istiod sends to proxies < 1.25).
* Filter order (listener_builder.go): WasmPlugin AUTHN -> jwt_authn -> WasmPlugin AUTHZ -> RBAC ->
  WasmPlugin STATS -> WasmPlugin UNSPECIFIED_PHASE -> router; within a phase by priority (descending),
  ties by namespace/name.

The listener imitates a sidecar's inbound HTTP chain on one port: HCM stat_prefix `inbound`,
use_remote_address false (the sidecar does not overwrite XFF), normalize_path true (Istio's BASE path
normalization), route to cluster `inbound|8080||` (the backend), upstream clusters named as Istio names them
(e.g. `outbound|80||keycloak.keycloak.svc.cluster.local`), each a STATIC cluster to 127.0.0.1:<port>.

`render_bootstrap()` is the lower-level builder; give it any http_filters list (another helper renders the
native jwt_authn + RBAC chain with it). `assemble_http_filters()` places WasmPlugins and native filters
in Istio's order.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
ROUTER_FILTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
INBOUND_CLUSTER = "inbound|8080||"
KEYCLOAK_CLUSTER = "outbound|80||keycloak.keycloak.svc.cluster.local"

FAIL_STRATEGY_TO_POLICY = {
    None: "FAIL_CLOSED",
    "": "FAIL_CLOSED",
    "FAIL_CLOSE": "FAIL_CLOSED",
    "FAIL_OPEN": "FAIL_OPEN",
    "FAIL_RELOAD": "FAIL_RELOAD",
}
PHASES = ("AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE")


def plugin_config_json(plugin_config: Mapping[str, Any] | None) -> str:
    """spec.pluginConfig as istiod serialises it (protomarshal.ToJSON of a Struct: compact JSON with sorted
    keys; Struct numbers are doubles, integral ones print without a fraction).

    Note: Go's protojson randomly inserts a space after some separators to stop byte-exact reliance; a
    plugin must parse the value as JSON, never compare bytes."""
    return json.dumps(_struct_numbers(plugin_config or {}), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def _struct_numbers(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        f = float(v)
        return int(f) if f.is_integer() and abs(f) < 2**63 else f
    if isinstance(v, Mapping):
        return {str(k): _struct_numbers(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_struct_numbers(x) for x in v]
    raise TypeError(f"pluginConfig value of type {type(v).__name__} is not representable in a Struct")


def wasm_http_filter(wasmplugin: Mapping[str, Any], wasm_path: str) -> dict:
    """The HTTP filter istiod + istio-agent hand to Envoy for one WasmPlugin object (a k8s-style dict)."""
    meta = wasmplugin.get("metadata", {}) or {}
    spec = wasmplugin.get("spec", {}) or {}
    name = meta["name"]
    namespace = meta.get("namespace") or "default"
    resource = f"{namespace}.{name}"
    if spec.get("type", "HTTP") not in ("HTTP", "UNSPECIFIED_PLUGIN_TYPE"):
        raise ValueError("only HTTP WasmPlugins are rendered")
    strategy = spec.get("failStrategy")
    if strategy not in FAIL_STRATEGY_TO_POLICY:
        raise ValueError(f"unknown failStrategy {strategy!r}")

    vm_config: dict[str, Any] = {
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": str(wasm_path)}},
    }
    key_values: dict[str, str] = {}
    host_keys: list[str] = []
    for env in (spec.get("vmConfig", {}) or {}).get("env", []) or []:
        source = env.get("valueFrom", "INLINE")
        if source == "HOST":
            host_keys.append(env["name"])
        elif source == "INLINE":
            key_values[env["name"]] = str(env.get("value", ""))
        else:
            raise ValueError(f"unknown env valueFrom {source!r}")
    if key_values or host_keys:
        ev: dict[str, Any] = {}
        if key_values:
            ev["key_values"] = key_values
        if host_keys:
            ev["host_env_keys"] = host_keys
        vm_config["environment_variables"] = ev

    plugin: dict[str, Any] = {"name": resource}
    if spec.get("pluginName"):
        plugin["root_id"] = spec["pluginName"]
    if spec.get("pluginConfig"):
        plugin["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": plugin_config_json(spec["pluginConfig"]),
        }
    plugin["vm_config"] = vm_config
    plugin["failure_policy"] = FAIL_STRATEGY_TO_POLICY[strategy]
    return {
        "name": f"extensions.istio.io/wasmplugin/{resource}",
        "typed_config": {"@type": WASM_FILTER_TYPE, "config": plugin},
    }


def _phase(wp: Mapping[str, Any]) -> str:
    phase = (wp.get("spec", {}) or {}).get("phase") or "UNSPECIFIED_PHASE"
    if phase not in PHASES:
        raise ValueError(f"unknown WasmPlugin phase {phase!r}")
    return phase


# Listener classes (istio pilot/pkg/networking ListenerClass) and the WasmPlugin `match.mode` that selects
# each (pilot/pkg/model/extensions.go workloadModeForListenerClass): gateway listeners count as CLIENT.
LISTENER_CLASS_MODE = {"SIDECAR_INBOUND": "SERVER", "SIDECAR_OUTBOUND": "CLIENT", "GATEWAY": "CLIENT"}


def selects(wasmplugin: Mapping[str, Any], listener_class: str) -> bool:
    """Whether istiod puts this WasmPlugin on a listener of `listener_class` (extensions.go matchMode; ports
    are not modelled): no `match` selects every listener; else some entry's mode must be CLIENT_AND_SERVER,
    UNDEFINED or the class's mode."""
    matches = (wasmplugin.get("spec", {}) or {}).get("match") or []
    if not matches:
        return True
    want = LISTENER_CLASS_MODE[listener_class]
    return any((m.get("mode") or "CLIENT_AND_SERVER") in ("CLIENT_AND_SERVER", "UNDEFINED", want) for m in matches)


def assemble_http_filters(
    wasmplugins: Iterable[Mapping[str, Any]] = (),
    wasm_path: str | Mapping[str, str] = "",
    jwt_authn: Sequence[dict] = (),
    rbac: Sequence[dict] = (),
    listener_class: str | None = None,
) -> list[dict]:
    """Istio's HTTP filter order for an inbound sidecar chain.

    wasm_path: one module path for all plugins, or {"<ns>.<name>": path}. jwt_authn / rbac: native filter
    dicts (as rendered for RequestAuthentication / AuthorizationPolicy) placed where istiod puts them.
    listener_class ("SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"): keep only the WasmPlugins whose
    `match` selects it (None: all, as before)."""
    by_phase: dict[str, list[Mapping[str, Any]]] = {p: [] for p in PHASES}
    for wp in wasmplugins:
        if listener_class is None or selects(wp, listener_class):
            by_phase[_phase(wp)].append(wp)

    def ordered(phase: str) -> list[dict]:
        items = sorted(
            by_phase[phase],
            key=lambda w: (-int((w.get("spec", {}) or {}).get("priority") or 0),
                           (w.get("metadata", {}) or {}).get("namespace") or "default",
                           w["metadata"]["name"]),
        )
        out = []
        for w in items:
            key = f"{(w['metadata'].get('namespace') or 'default')}.{w['metadata']['name']}"
            path = wasm_path[key] if isinstance(wasm_path, Mapping) else wasm_path
            out.append(wasm_http_filter(w, path))
        return out

    return (ordered("AUTHN") + list(jwt_authn) + ordered("AUTHZ") + list(rbac) + ordered("STATS")
            + ordered("UNSPECIFIED_PHASE") + [ROUTER_FILTER])


def static_cluster(name: str, host: str, port: int, connect_timeout: str = "10s") -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": int(port)}}}}]}],
        },
    }


ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '"%UPSTREAM_HOST%" %UPSTREAM_CLUSTER%\n'
)


def render_bootstrap(
    http_filters: Sequence[dict],
    listen_port: int,
    admin_port: int,
    backend_port: int,
    clusters: Mapping[str, tuple[str, int]] | None = None,
    *,
    access_log_path: str | None = None,
    listen_address: str = "127.0.0.1",
    route_timeout: str = "0s",
    extra_clusters: Sequence[dict] = (),
    node_id: str = "sidecar~127.0.0.1~echo-0.default~default.svc.cluster.local",
    hcm_overrides: Mapping[str, Any] | None = None,
    traffic_direction: str = "INBOUND",
    listener_name: str = "virtualInbound",
) -> dict:
    """A complete static Envoy bootstrap: admin on 127.0.0.1:admin_port, one listener on
    listen_address:listen_port with the given HTTP filters (the router must be last; it is appended if
    missing), route everything to `inbound|8080||` -> 127.0.0.1:backend_port, plus one STATIC cluster per
    `clusters` entry (name -> (host, port)). The listener carries `traffic_direction` as istiod sets it
    (INBOUND on a sidecar's inbound listeners, OUTBOUND on its outbound listeners and on gateways)."""
    filters = list(http_filters)
    if not filters or filters[-1].get("name") != "envoy.filters.http.router":
        filters.append(ROUTER_FILTER)
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "inbound",
        "codec_type": "AUTO",
        "use_remote_address": False,
        "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "forward_client_cert_details": "APPEND_FORWARD",
        "server_header_transformation": "PASS_THROUGH",
        "route_config": {
            "name": "inbound|8080||",
            "validate_clusters": False,
            "virtual_hosts": [{
                "name": "inbound|http|8080",
                "domains": ["*"],
                "routes": [{
                    "name": "default",
                    "match": {"prefix": "/"},
                    "route": {"cluster": INBOUND_CLUSTER, "timeout": route_timeout},
                }],
            }],
        },
        "http_filters": filters,
    }
    if access_log_path:
        hcm["access_log"] = [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": access_log_path,
                "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
            },
        }]
    if hcm_overrides:
        hcm.update(hcm_overrides)

    all_clusters = [static_cluster(INBOUND_CLUSTER, "127.0.0.1", backend_port)]
    for name, (host, port) in (clusters or {}).items():
        all_clusters.append(static_cluster(name, host, port))
    all_clusters.extend(extra_clusters)

    return {
        "node": {"id": node_id, "cluster": "echo.default"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": int(admin_port)}}},
        "static_resources": {
            "listeners": [{
                "name": listener_name,
                "address": {"socket_address": {"address": listen_address, "port_value": int(listen_port)}},
                "traffic_direction": traffic_direction,
                "filter_chains": [{
                    "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
                }],
            }],
            "clusters": all_clusters,
        },
    }


def render_wasmplugin_envoy(
    wasmplugin: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    wasm_path: str | Mapping[str, str],
    listen_port: int,
    admin_port: int,
    backend_port: int,
    clusters: Mapping[str, tuple[str, int]] | None = None,
    *,
    jwt_authn: Sequence[dict] = (),
    rbac: Sequence[dict] = (),
    **bootstrap_kwargs: Any,
) -> dict:
    """Envoy bootstrap for one WasmPlugin (or a list of them) as an Istio sidecar would run it.

    `clusters` maps Istio cluster names (e.g. `outbound|80||keycloak.keycloak.svc.cluster.local`) to the
    loopback (host, port) that stands in for the service. jwt_authn / rbac optionally add native filters
    at Istio's positions (to test a WasmPlugin next to RequestAuthentication / AuthorizationPolicy)."""
    plugins = [wasmplugin] if isinstance(wasmplugin, Mapping) else list(wasmplugin)
    filters = assemble_http_filters(plugins, wasm_path, jwt_authn=jwt_authn, rbac=rbac)
    return render_bootstrap(filters, listen_port, admin_port, backend_port, clusters, **bootstrap_kwargs)


def outbound_domains(hostname: str, port: int) -> list[str]:
    """The domains istiod gives a Service's outbound virtual host for a caller in the same namespace
    (`backend`, `backend.demo`, `backend.demo.svc`, the FQDN; each also with `:port`)."""
    parts = hostname.split(".")
    names = [hostname]
    if len(parts) >= 5 and parts[2] == "svc":  # name.ns.svc.cluster.local
        names += [parts[0], ".".join(parts[:2]), ".".join(parts[:3])]
    out = []
    for n in names:
        out += [n, f"{n}:{port}"]
    return out


def render_sidecar_outbound(
    wasmplugins: Sequence[Mapping[str, Any]],
    wasm_path: str | Mapping[str, str],
    listen_port: int,
    admin_port: int,
    services: Mapping[str, tuple[int, tuple[str, int]]],
    clusters: Mapping[str, tuple[str, int]] | None = None,
    *,
    service_port: int = 80,
    node_id: str = "sidecar~127.0.0.1~frontend-0.demo~demo.svc.cluster.local",
    node_cluster: str = "frontend.demo",
    access_log_path: str | None = None,
) -> dict:
    """A sidecar's outbound HTTP listener as istiod renders it for port `service_port` (name
    `0.0.0.0_<port>`, traffic_direction OUTBOUND, HCM stat_prefix `outbound_0.0.0.0_<port>`, route
    config `<port>` with one virtual host per Service), with the WasmPlugins that select CLIENT mode.

    services: {"backend.demo.svc.cluster.local": (80, ("127.0.0.1", backend_sidecar_port))} -> virtual
    host with `outbound_domains`, routed to cluster `outbound|80||backend.demo.svc.cluster.local`, a STATIC
    cluster to the given address (the backend's sidecar on loopback). Other hosts get Envoy's 404."""
    filters = assemble_http_filters(wasmplugins, wasm_path, listener_class="SIDECAR_OUTBOUND")
    vhosts = []
    all_clusters = dict(clusters or {})
    for hostname, (port, addr) in services.items():
        cluster = f"outbound|{port}||{hostname}"
        all_clusters[cluster] = addr
        vhosts.append({"name": f"{hostname}:{port}", "domains": outbound_domains(hostname, port),
                       "routes": [{"name": "default", "match": {"prefix": "/"},
                                   "route": {"cluster": cluster, "timeout": "0s"}}]})
    route_config = {"name": str(service_port), "validate_clusters": False, "virtual_hosts": vhosts}
    cfg = render_bootstrap(filters, listen_port, admin_port, 9, all_clusters, access_log_path=access_log_path,
                           node_id=node_id, traffic_direction="OUTBOUND", listener_name=f"0.0.0.0_{service_port}",
                           hcm_overrides={"stat_prefix": f"outbound_0.0.0.0_{service_port}",
                                          "route_config": route_config})
    # No inbound cluster on an outbound-only proxy.
    cfg["static_resources"]["clusters"] = [c for c in cfg["static_resources"]["clusters"]
                                           if c["name"] != INBOUND_CLUSTER]
    cfg["node"]["cluster"] = node_cluster
    return cfg


def render_gateway(
    wasmplugins: Sequence[Mapping[str, Any]],
    wasm_path: str | Mapping[str, str],
    listen_port: int,
    admin_port: int,
    backend_port: int,
    clusters: Mapping[str, tuple[str, int]] | None = None,
    *,
    node_id: str = "router~127.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local",
    access_log_path: str | None = None,
) -> dict:
    """An ingress gateway's HTTP listener as istiod renders it (gateway.go buildGatewayListener):
    traffic_direction OUTBOUND, node type `router`, the WasmPlugins that select the GATEWAY class (CLIENT
    mode), use_remote_address true; routes everything to the backend."""
    filters = assemble_http_filters(wasmplugins, wasm_path, listener_class="GATEWAY")
    return render_bootstrap(filters, listen_port, admin_port, backend_port, clusters, access_log_path=access_log_path,
                            node_id=node_id, traffic_direction="OUTBOUND", listener_name="0.0.0.0_8080",
                            hcm_overrides={"stat_prefix": "outbound_0.0.0.0_8080", "use_remote_address": True})
