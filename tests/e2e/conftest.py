"""pytest fixtures for meshgate's end-to-end tests (see harness.py for the process management).

Session scope:  idp (dev Keycloak: realms myrealm + otherrealm), echo (backend), keycloak_clusters (the
                Keycloak cluster -> dev IdP), meshgate_wasm (path of the built filter; FAILS the test - never
                skips - when missing), e2e_workdir,
                keycloak (a real Keycloak, see keycloak.py: launched in the background as soon as collection
                shows a test that uses it, waited for on first use, stopped at session end; FAILS the tests
                that need it with the reason when it cannot be installed or started),
                real_keycloak_clusters (the Keycloak cluster -> the real Keycloak).
Function scope: envoy_factory (start any Envoy bootstrap; stopped at teardown), start_meshgate (render a
                WasmPlugin for the meshgate module exactly as Istio would and start Envoy), idp_clean
                (the session IdP with JWKS modes reset and counters zeroed), start_meshgate_keycloak
                (start_meshgate with the Keycloak cluster pointing at the real Keycloak).
Module scope:   module_envoy_factory (same as envoy_factory, torn down after the module).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pytest

import harness
import keycloak as kc
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


# ----------------------------------------------------------------------------------------------------------
# real Keycloak: one per session, launched early in the background (it needs tens of seconds)
# ----------------------------------------------------------------------------------------------------------
_KEYCLOAK: dict[str, Any] = {}  # "proc": KeycloakProcess | "error": str | "stats": str


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    if config.option.collectonly or not any("keycloak" in getattr(item, "fixturenames", ()) for item in items):
        return
    try:
        factory = getattr(config, "_tmp_path_factory", None)
        workdir = factory.mktemp("keycloak") if factory else None
        _KEYCLOAK["proc"] = kc.launch(workdir)
    except kc.KeycloakError as e:
        _KEYCLOAK["error"] = str(e)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    proc = _KEYCLOAK.pop("proc", None)
    if proc is not None:
        if proc.ready_after is not None:
            _KEYCLOAK["stats"] = (f"Keycloak {kc.VERSION} (JDK {kc.java_version(proc.java_home)}): started in "
                                  f"{proc.started_in() or float('nan'):.1f} s, the first test that needed it waited "
                                  f"{_KEYCLOAK.get('waited', 0.0):.1f} s, RSS {proc.rss_bytes() / 2**20:.0f} MiB at "
                                  "the end of the session")
        proc.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if "stats" in _KEYCLOAK:
        terminalreporter.write_line(_KEYCLOAK["stats"])


@pytest.fixture(scope="session")
def keycloak() -> kc.KeycloakProcess:
    """The session's real Keycloak (realm myrealm imported, issuer harness.ISSUER), ready. Never skips: a
    Keycloak that cannot be installed or started fails the test with the reason."""
    if "error" in _KEYCLOAK:
        pytest.fail(f"real Keycloak unavailable: {_KEYCLOAK['error']}", pytrace=False)
    proc = _KEYCLOAK.get("proc")
    if proc is None:
        pytest.fail("real Keycloak was not launched (no collected test asked for it?)", pytrace=False)
    try:
        t0 = time.monotonic()
        proc.wait_ready()
        _KEYCLOAK["waited"] = time.monotonic() - t0
        return proc
    except kc.KeycloakError as e:
        _KEYCLOAK["error"] = str(e)
        pytest.fail(f"real Keycloak did not start: {e}", pytrace=False)


@pytest.fixture(scope="session")
def real_keycloak_clusters(keycloak: kc.KeycloakProcess) -> dict[str, tuple[str, int]]:
    """{"outbound|80||keycloak.keycloak.svc.cluster.local": ("127.0.0.1", keycloak.port)}"""
    return keycloak.clusters()


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


@pytest.fixture()
def start_meshgate_keycloak(envoy_factory: EnvoyFactory, meshgate_wasm: str, echo: harness.EchoProcess,
                            real_keycloak_clusters: dict) -> Callable[..., harness.EnvoyProcess]:
    """start_meshgate, with the Keycloak cluster pointing at the session's real Keycloak."""
    return _meshgate_starter(envoy_factory, meshgate_wasm, echo, real_keycloak_clusters)
