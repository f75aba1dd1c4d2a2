"""pytest fixtures for meshgate's end-to-end tests (see harness.py for the process management).

Session scope:  idp (dev Keycloak: realms myrealm + otherrealm), echo (backend), keycloak_clusters,
                meshgate_wasm (path of the built filter; FAILS the test - never skips - when missing),
                e2e_workdir.
Function scope: envoy_factory (start any Envoy bootstrap; stopped at teardown), start_meshgate (render a
                WasmPlugin for the meshgate module exactly as Istio would and start Envoy), idp_clean
                (the session IdP with JWKS modes reset and counters zeroed).
Module scope:   module_envoy_factory (same as envoy_factory, torn down after the module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pytest

import harness
import render


@pytest.fixture(scope="session")
def e2e_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("meshgate-e2e")


@pytest.fixture(scope="session")
def idp(e2e_workdir: Path) -> Iterator[harness.IdPProcess]:
    proc = harness.start_idp(workdir=e2e_workdir / "idp")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture()
def idp_clean(idp: harness.IdPProcess) -> Iterator[harness.IdPProcess]:
    """The session IdP, with every realm's JWKS mode back to normal and counters zeroed, before and after."""
    idp.reset()
    yield idp
    idp.reset()


@pytest.fixture(scope="session")
def echo(e2e_workdir: Path) -> Iterator[harness.EchoProcess]:
    proc = harness.start_echo(workdir=e2e_workdir / "echo")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def keycloak_clusters(idp: harness.IdPProcess) -> dict[str, tuple[str, int]]:
    """{"outbound|80||keycloak.keycloak.svc.cluster.local": ("127.0.0.1", idp.port)}"""
    return idp.clusters()


@pytest.fixture(scope="session")
def meshgate_wasm() -> str:
    try:
        return harness.require_meshgate_wasm()
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)


class EnvoyFactory:
    """Callable: factory(config_dict, **start_envoy_kwargs) -> EnvoyProcess. Stops everything on close()."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started: list[harness.EnvoyProcess] = []

    def __call__(self, config: dict, **kwargs: Any) -> harness.EnvoyProcess:
        kwargs.setdefault("workdir", self.workdir)
        env = harness.start_envoy(config, **kwargs)
        self.started.append(env)
        return env

    def close(self) -> None:
        while self.started:
            self.started.pop().stop()


@pytest.fixture()
def envoy_factory(tmp_path: Path) -> Iterator[EnvoyFactory]:
    f = EnvoyFactory(tmp_path)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(scope="module")
def module_envoy_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyFactory]:
    f = EnvoyFactory(tmp_path_factory.mktemp("envoy-module"))
    try:
        yield f
    finally:
        f.close()


def make_wasmplugin(
    plugin_config: Mapping[str, Any] | None,
    *,
    name: str = "meshgate",
    namespace: str = "istio-system",
    plugin_name: str = "meshgate",
    phase: str = "AUTHN",
    fail_strategy: str | None = None,
    env: Sequence[Mapping[str, str]] = (),
    priority: int | None = None,
) -> dict:
    """A WasmPlugin object (extensions.istio.io/v1alpha1) as a dict."""
    spec: dict[str, Any] = {"url": "oci://registry.local/meshgate:dev", "pluginName": plugin_name, "phase": phase}
    if plugin_config:
        spec["pluginConfig"] = dict(plugin_config)
    if fail_strategy:
        spec["failStrategy"] = fail_strategy
    if env:
        spec["vmConfig"] = {"env": [dict(e) for e in env]}
    if priority is not None:
        spec["priority"] = priority
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _meshgate_starter(factory: EnvoyFactory, wasm: str, echo: harness.EchoProcess,
                      clusters: Mapping[str, tuple[str, int]]) -> Callable[..., harness.EnvoyProcess]:
    def start(plugin_config: Mapping[str, Any] | None = None, *, wasmplugin: Mapping[str, Any] | None = None,
              extra_clusters: Mapping[str, tuple[str, int]] | None = None, jwt_authn: Sequence[dict] = (),
              rbac: Sequence[dict] = (), log_level: str = "info", wasm_path: str | None = None,
              access_log: bool = True, **wasmplugin_kwargs: Any) -> harness.EnvoyProcess:
        wp = wasmplugin or make_wasmplugin(plugin_config, **wasmplugin_kwargs)
        all_clusters = dict(clusters)
        all_clusters.update(extra_clusters or {})
        access_log_path = str(factory.workdir / f"access-{len(factory.started)}.log") if access_log else None
        cfg = render.render_wasmplugin_envoy(wp, wasm_path or wasm, 0, 0, echo.port, all_clusters,
                                             jwt_authn=jwt_authn, rbac=rbac, access_log_path=access_log_path)
        return factory(cfg, log_level=log_level)

    return start


@pytest.fixture()
def start_meshgate(envoy_factory: EnvoyFactory, meshgate_wasm: str, echo: harness.EchoProcess,
                   keycloak_clusters: dict) -> Callable[..., harness.EnvoyProcess]:
    """start_meshgate(plugin_config, *, phase="AUTHN", fail_strategy=None, env=(), name="meshgate",
    namespace="istio-system", plugin_name="meshgate", wasmplugin=None, extra_clusters=None, jwt_authn=(),
    rbac=(), log_level="info", wasm_path=None) -> EnvoyProcess listening on a loopback port, routing to the
    echo backend, with the Keycloak cluster pointing at the dev IdP."""
    return _meshgate_starter(envoy_factory, meshgate_wasm, echo, keycloak_clusters)


@pytest.fixture(scope="module")
def module_start_meshgate(module_envoy_factory: EnvoyFactory, meshgate_wasm: str, echo: harness.EchoProcess,
                          keycloak_clusters: dict) -> Callable[..., harness.EnvoyProcess]:
    """Module-scoped start_meshgate (Envoy stays up for the whole test module)."""
    return _meshgate_starter(module_envoy_factory, meshgate_wasm, echo, keycloak_clusters)
