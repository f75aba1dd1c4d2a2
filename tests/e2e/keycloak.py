#!/usr/bin/env python3
"""A real Keycloak for meshgate's end-to-end tests and `make run`: install, start, stop, admin helpers.

    python tests/e2e/keycloak.py install     # `make setup`: fetch, verify, unpack, prime (idempotent)
    python tests/e2e/keycloak.py run         # start one on loopback, print its addresses, Ctrl-C stops it
    python tests/e2e/keycloak.py info        # version, JDK, cache directory, whether it is installed

Install. The server distribution `org.keycloak:keycloak-quarkus-dist:VERSION:tar.gz` comes from Maven
Central through `mvn dependency:get` (strict checksums) into a Maven repository under the cache directory;
its SHA-256 and SHA-1 must equal the values pinned below, and Central's own `.sha1` file must agree. It is
unpacked into `<cache>/keycloak-VERSION/` and started once with the build options the tests use
(BUILD_OPTIONS), so the one-time Quarkus augmentation ("Updating the configuration ...", ~20-50 s here)
happens during install and not in every test session. A stamp file records the primed build options.
Cache directory: $MESHGATE_CACHE, else $XDG_CACHE_HOME/meshgate, else ~/.cache/meshgate (never the repo).

Start. Every instance gets its own home directory (`workdir`): `bin/kc.sh` copied, `lib`, `conf`, `themes`
and `providers` linked to the cached distribution, and its own `data/` with `data/import/<realm export>`.
It runs `kc.sh start-dev --import-realm` (the manifests' command) with the in-memory H2 database
(`--db=dev-mem`: every instance starts empty and imports `istio/keycloak/realm-myrealm.json`), HTTP and the
management interface (health) on 127.0.0.1 with port 0 (the kernel picks free ports, read back from the
log), and `--hostname=http://keycloak.keycloak.svc.cluster.local` with `--hostname-backchannel-dynamic=true`:
every token carries `iss = http://keycloak.keycloak.svc.cluster.local/realms/<realm>` whatever address the
client used, exactly as the manifests and tests configure, while back-channel endpoints (token, JWKS,
admin REST) answer on the loopback address the caller used. The JVM runs C1-only
(`-XX:TieredStopAtLevel=1`: about half the start time, enough speed for tests) at nice 19, the lowest
priority, so tests that run while it starts keep their timing. The bootstrap admin of the master realm
gets a random password per instance (KC_BOOTSTRAP_ADMIN_USERNAME/PASSWORD). `stop()` terminates the process by its PID (kc.sh
forwards SIGTERM to Java), then kills its process group if it lingers.

Login page for a browser. Front-channel URLs (the authorization endpoint, the login form's action,
redirects) use the hostname, e.g.
    http://keycloak.keycloak.svc.cluster.local/realms/myrealm/protocol/openid-connect/auth?client_id=...
and nothing resolves that name here. A browser reaches it when the name is mapped to the instance:
Chromium `--host-resolver-rules="MAP keycloak.keycloak.svc.cluster.local 127.0.0.1:<port>"` (see
`KeycloakProcess.chromium_host_rule()`), or through a forward proxy that sends that host to
127.0.0.1:<port>. A test without a browser sends the request to `http://127.0.0.1:<port>/...` with
`Host: keycloak.keycloak.svc.cluster.local` (`KeycloakProcess.front_get/front_post`).

JDK: $MESHGATE_KEYCLOAK_JAVA_HOME, else the first of JAVA_CANDIDATES that exists (Keycloak 26 supports
OpenJDK 17, 21 and 25; 26.5.5 was checked here on Debian's 17.0.15 and Temurin 25). JAVA_HOME is always
set explicitly for kc.sh.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlencode

import requests

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parents[1]
REALM_FILE = REPO / "istio" / "keycloak" / "realm-myrealm.json"

# Same version as the image in istio/keycloak/deployment.yaml (test_keycloak_real checks they agree).
VERSION = "26.5.5"
ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{VERSION}:tar.gz"
# Computed once from the file Maven Central served (164,334,945 bytes); its .sha1 agreed.
DIST_SHA256 = "38beab474f1d69dcbe537c9cc81d1fe49aa28d4e3b9dd99308d17910e218d734"
DIST_SHA1 = "6ad80748198d2ae20146891ea079ade6dfab6dca"
DIST_SIZE = 164_334_945

HOSTNAME_URL = "http://keycloak.keycloak.svc.cluster.local"
HOSTNAME = "keycloak.keycloak.svc.cluster.local"
KEYCLOAK_CLUSTER = "outbound|80||keycloak.keycloak.svc.cluster.local"
REALM = "myrealm"
ADMIN_USER = "admin"
# Build-time options: the install primes the distribution with exactly these; start() passes them again,
# so start-dev finds the distribution already built and skips the augmentation.
BUILD_OPTIONS = ("--db=dev-mem", "--health-enabled=true")
JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
JAVA_CANDIDATES = ("/usr/lib/jvm/temurin-25-jdk-amd64", "/usr/lib/jvm/java-21-openjdk-amd64",
                   "/usr/lib/jvm/java-17-openjdk-amd64")
START_TIMEOUT = float(os.environ.get("MESHGATE_KEYCLOAK_START_TIMEOUT", "300"))
STOP_TIMEOUT = 20.0
NICE = 19

_LISTENING = re.compile(r"Listening on: http://127\.0\.0\.1:(\d+)\. Management interface listening on "
                        r"http://127\.0\.0\.1:(\d+)")


class KeycloakError(RuntimeError):
    """Keycloak could not be installed, started or asked something; the message says what and how to fix."""


# ----------------------------------------------------------------------------------------------------------
# install
# ----------------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """$MESHGATE_CACHE, else $XDG_CACHE_HOME/meshgate, else ~/.cache/meshgate."""
    if os.environ.get("MESHGATE_CACHE"):
        return Path(os.environ["MESHGATE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshgate"


def dist_dir() -> Path:
    return cache_dir() / f"keycloak-{VERSION}"


def _stamp() -> Path:
    return dist_dir() / ".meshgate-primed"


def _install_error_file() -> Path:
    """Why the last `install` failed (read by launch(), so failing tests say it)."""
    return cache_dir() / f"keycloak-{VERSION}-install-error.txt"


def _stamp_text() -> str:
    return json.dumps({"version": VERSION, "sha256": DIST_SHA256, "build_options": list(BUILD_OPTIONS)})


def installed() -> bool:
    """True when the distribution is unpacked and primed with BUILD_OPTIONS."""
    try:
        return _stamp().read_text() == _stamp_text()
    except OSError:
        return False


def java_home() -> str:
    """The JDK Keycloak runs on: $MESHGATE_KEYCLOAK_JAVA_HOME, else the first JAVA_CANDIDATES that exists."""
    env = os.environ.get("MESHGATE_KEYCLOAK_JAVA_HOME")
    candidates = [env] if env else list(JAVA_CANDIDATES)
    for c in candidates:
        if c and os.access(os.path.join(c, "bin", "java"), os.X_OK):
            return c
    raise KeycloakError(f"no JDK for Keycloak {VERSION} (it needs OpenJDK 17, 21 or 25): looked for "
                        f"{', '.join(candidates)}; install one (apt-get install openjdk-17-jre-headless) or set "
                        "MESHGATE_KEYCLOAK_JAVA_HOME")


def java_version(home: str) -> str:
    """JAVA_VERSION from the JDK's `release` file (e.g. "25.0.1"), or "?"."""
    try:
        for line in Path(home, "release").read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "?"


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _m2_file(suffix: str = "") -> Path:
    return (cache_dir() / "m2" / "org" / "keycloak" / "keycloak-quarkus-dist" / VERSION /
            f"keycloak-quarkus-dist-{VERSION}.tar.gz{suffix}")


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[keycloak] {msg}", flush=True)


def fetch(quiet: bool = False) -> Path:
    """Download the pinned distribution with Maven (if not already cached) and verify it. Returns the path."""
    tarball = _m2_file()
    if not (tarball.is_file() and tarball.stat().st_size == DIST_SIZE):
        mvn = shutil.which("mvn")
        if not mvn:
            raise KeycloakError("Maven (`mvn`) is needed to fetch Keycloak from Maven Central: apt-get install maven")
        _log(f"fetching {ARTIFACT} from Maven Central ({DIST_SIZE / 1e6:.0f} MB) with mvn ...", quiet)
        t0 = time.monotonic()
        cmd = [mvn, "-B", "-q", "-C", f"-Dmaven.repo.local={cache_dir() / 'm2'}",
               "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:get", f"-Dartifact={ARTIFACT}",
               "-Dtransitive=false"]
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0 or not tarball.is_file():
            raise KeycloakError(f"`{' '.join(cmd)}` failed (exit {r.returncode}); Keycloak {VERSION} could not be "
                                f"fetched from Maven Central:\n{(r.stdout + r.stderr)[-3000:]}")
        _log(f"fetched in {time.monotonic() - t0:.0f} s", quiet)
    sha256, sha1 = _digest(tarball, "sha256"), _digest(tarball, "sha1")
    central_sha1 = ""
    with contextlib.suppress(OSError):
        central_sha1 = _m2_file(".sha1").read_text().split()[0].strip().lower()
    if sha256 != DIST_SHA256 or sha1 != DIST_SHA1 or central_sha1 != DIST_SHA1:
        bad = tarball.with_suffix(".gz.rejected")
        tarball.replace(bad)
        raise KeycloakError(f"{tarball.name} failed verification (moved to {bad}): sha256 {sha256} (pinned "
                            f"{DIST_SHA256}), sha1 {sha1} (pinned {DIST_SHA1}), Maven Central's .sha1 "
                            f"{central_sha1 or 'missing'}")
    return tarball


def _unpack(tarball: Path, quiet: bool) -> None:
    target = dist_dir()
    tmp = Path(tempfile.mkdtemp(prefix=f".keycloak-{VERSION}-", dir=cache_dir()))
    try:
        _log(f"unpacking into {target}", quiet)
        with tarfile.open(tarball) as tf:
            tf.extractall(tmp, filter="data")
        top = tmp / f"keycloak-{VERSION}"
        if not (top / "bin" / "kc.sh").is_file():
            raise KeycloakError(f"{tarball} has no keycloak-{VERSION}/bin/kc.sh")
        if target.exists():
            shutil.rmtree(target)
        top.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / "keycloak.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def install(quiet: bool = False) -> Path:
    """Fetch, verify, unpack and prime the pinned Keycloak (idempotent; a stamp marks a finished install).
    Priming = one start-dev with BUILD_OPTIONS, so later starts skip the Quarkus augmentation."""
    with _install_lock():
        if installed():
            _log(f"Keycloak {VERSION} ready in {dist_dir()}", quiet)
            return dist_dir()
        jdk = java_home()
        tarball = fetch(quiet)
        _unpack(tarball, quiet)
        _log(f"first start (Quarkus build for {' '.join(BUILD_OPTIONS)}; JDK {java_version(jdk)} at {jdk}) ...",
             quiet)
        with tempfile.TemporaryDirectory(prefix="meshgate-keycloak-prime-") as wd:
            t0 = time.monotonic()
            kc = start(workdir=wd, java=jdk, require_installed=False, nice=0)
            try:
                if "augmentation completed" not in kc.log():
                    raise KeycloakError(f"priming start did not build the distribution:\n{tail(kc.log_path)}")
                _log(f"built and started in {time.monotonic() - t0:.0f} s (cold start); "
                     f"RSS {kc.rss_bytes() / 2**20:.0f} MiB", quiet)
            finally:
                kc.stop()
        _stamp().write_text(_stamp_text())
        return dist_dir()


def info() -> dict:
    jdk = None
    with contextlib.suppress(KeycloakError):
        jdk = java_home()
    return {"version": VERSION, "artifact": ARTIFACT, "cache": str(cache_dir()), "dist": str(dist_dir()),
            "installed": installed(), "java_home": jdk, "java_version": java_version(jdk) if jdk else None}


# ----------------------------------------------------------------------------------------------------------
# a running instance
# ----------------------------------------------------------------------------------------------------------
def tail(path: Path | str, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


@dataclass
class KeycloakProcess:
    """A Keycloak started by `launch()`/`start()`. Call `wait_ready()` (start() does) before using it."""

    proc: subprocess.Popen
    home: Path
    log_path: Path
    java_home: str
    admin_password: str
    launched_at: float
    port: int = 0
    management_port: int = 0
    ready_after: float | None = None
    realm: str = REALM
    session: requests.Session = field(default_factory=requests.Session, repr=False)
    _admin_token: tuple[str, float] | None = field(default=None, repr=False)

    # --- lifecycle ---------------------------------------------------------------------------------------
    def wait_ready(self, timeout: float = START_TIMEOUT) -> "KeycloakProcess":
        """Bounded wait: the log line with both ports, then management /health/ready UP, then the realm's
        discovery document with the expected issuer. Raises KeycloakError (process stopped) on failure."""
        if self.ready_after is not None:
            return self
        deadline = self.launched_at + timeout
        try:
            while not self.port:
                if self.proc.poll() is not None:
                    raise KeycloakError(f"Keycloak exited with code {self.proc.returncode} during startup "
                                        f"(log {self.log_path}):\n{tail(self.log_path)}")
                m = _LISTENING.search(self.log())
                if m:
                    self.port, self.management_port = int(m.group(1)), int(m.group(2))
                    break
                if time.monotonic() > deadline:
                    raise KeycloakError(f"Keycloak did not start listening within {timeout:.0f} s "
                                        f"(log {self.log_path}):\n{tail(self.log_path)}")
                time.sleep(0.25)
            last = ""
            while True:
                try:
                    h = self.session.get(f"http://127.0.0.1:{self.management_port}/health/ready", timeout=2)
                    d = self.session.get(self.local_url(self.realm, "/.well-known/openid-configuration"), timeout=5)
                    if h.status_code == 200 and h.json().get("status") == "UP" and d.status_code == 200:
                        if d.json().get("issuer") != self.issuer(self.realm):
                            raise KeycloakError(f"issuer {d.json().get('issuer')!r}, expected "
                                                f"{self.issuer(self.realm)!r}")
                        break
                    last = f"health {h.status_code} {h.text[:200]}, discovery {d.status_code}"
                except requests.RequestException as e:
                    last = str(e)
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise KeycloakError(f"Keycloak not ready within {timeout:.0f} s ({last}; log {self.log_path}):"
                                        f"\n{tail(self.log_path)}")
                time.sleep(0.25)
        except BaseException:
            self.stop()
            raise
        self.ready_after = time.monotonic() - self.launched_at
        return self

    def alive(self) -> bool:
        return self.proc.poll() is None

    def started_in(self) -> float | None:
        """Keycloak's own start time from its log ("... started in 24.1s"), from JVM start to ready."""
        m = re.search(r"\) started in ([0-9.]+)s\.", self.log())
        return float(m.group(1)) if m else None

    def stop(self) -> int | None:
        """SIGTERM to kc.sh (it forwards to Java), bounded wait, then SIGKILL of its process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5)
        # kc.sh may have exited first while its Java child lingers: the group is ours (start_new_session).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.session.close()
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def rss_bytes(self) -> int:
        """Resident memory of the instance (kc.sh and its Java process), from /proc."""
        total = 0
        pids = [self.proc.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            pids += [int(c) for c in children]
        for pid in pids:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    # --- addresses ---------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """Loopback URL (back channel: tokens, JWKS, admin REST)."""
        return f"http://127.0.0.1:{self.port}"

    def issuer(self, realm: str = REALM) -> str:
        return f"{HOSTNAME_URL}/realms/{realm}"

    def jwks_uri(self, realm: str = REALM) -> str:
        """The JWKS URI as Envoy/meshgate see it (the hostname; reached through KEYCLOAK_CLUSTER)."""
        return f"{self.issuer(realm)}/protocol/openid-connect/certs"

    def local_url(self, realm: str = REALM, path: str = "") -> str:
        return f"{self.base_url}/realms/{realm}{path}"

    def token_url(self, realm: str = REALM) -> str:
        return self.local_url(realm, "/protocol/openid-connect/token")

    def clusters(self, name: str = KEYCLOAK_CLUSTER) -> dict[str, tuple[str, int]]:
        """{Envoy cluster name: (host, port)} for render.render_wasmplugin_envoy."""
        return {name: ("127.0.0.1", self.port)}

    def chromium_host_rule(self) -> str:
        """Chromium flag that sends the hostname (front channel: login page, redirects) to this instance."""
        return f"--host-resolver-rules=MAP {HOSTNAME} 127.0.0.1:{self.port}"

    def login_page_url(self, client_id: str, redirect_uri: str, *, realm: str = REALM, scope: str = "openid",
                       state: str = "", code_challenge: str | None = None, **extra: str) -> str:
        """Authorization endpoint URL as a browser sees it (hostname; see the module docstring)."""
        q = {"client_id": client_id, "response_type": "code", "scope": scope, "redirect_uri": redirect_uri}
        if state:
            q["state"] = state
        if code_challenge:
            q.update(code_challenge=code_challenge, code_challenge_method="S256")
        q.update(extra)
        return f"{self.issuer(realm)}/protocol/openid-connect/auth?{urlencode(q)}"

    def front_url_to_local(self, url: str) -> str:
        """A hostname URL (login page, form action) rewritten to this instance's loopback address."""
        if not url.startswith(HOSTNAME_URL + "/"):
            raise KeycloakError(f"not a front-channel URL of this Keycloak: {url}")
        return self.base_url + url[len(HOSTNAME_URL):]

    def front_get(self, url: str, browser: requests.Session | None = None, **kw: Any) -> requests.Response:
        """GET a hostname URL without a browser: sent to loopback with `Host: <hostname>`, no redirects.
        `browser` keeps Keycloak's cookies (login session, SSO) between calls; default: a fresh one."""
        return self.front_request("GET", url, browser, **kw)

    def front_post(self, url: str, browser: requests.Session | None = None, **kw: Any) -> requests.Response:
        return self.front_request("POST", url, browser, **kw)

    def front_request(self, method: str, url: str, browser: requests.Session | None = None,
                      **kw: Any) -> requests.Response:
        s = browser or requests.Session()
        return s.request(method, self.front_url_to_local(url), headers={"Host": HOSTNAME, **kw.pop("headers", {})},
                         allow_redirects=False, timeout=kw.pop("timeout", 10), **kw)

    # --- OpenID Connect ----------------------------------------------------------------------------------
    def discovery(self, realm: str = REALM) -> dict:
        return self._json("GET", self.local_url(realm, "/.well-known/openid-configuration"))

    def jwks(self, realm: str = REALM) -> dict:
        return self._json("GET", self.local_url(realm, "/protocol/openid-connect/certs"))

    def token(self, realm: str = REALM, auth: tuple[str, str] | None = None, **form: str) -> requests.Response:
        """POST to the token endpoint; the raw response (tests assert error bodies too)."""
        return self.session.post(self.token_url(realm), data=form, auth=auth, timeout=30)

    def token_response(self, realm: str = REALM, auth: tuple[str, str] | None = None, **form: str) -> dict:
        r = self.token(realm, auth=auth, **form)
        if r.status_code != 200:
            raise KeycloakError(f"token request ({form.get('grant_type')}) -> {r.status_code}: {r.text[:300]}")
        return r.json()

    def password_token(self, user: str = "alice", password: str | None = None, client: str = "demo-cli",
                       realm: str = REALM, scope: str = "openid", secret: str | None = None) -> str:
        """Resource-owner password grant (demo-cli is public; pass `secret` for a confidential client)."""
        form = {"grant_type": "password", "username": user, "password": password if password is not None else user,
                "scope": scope}
        if not secret:
            form["client_id"] = client
        return self.token_response(realm, auth=(client, secret) if secret else None, **form)["access_token"]

    def client_credentials_token(self, client: str = "frontend", secret: str = "frontend-secret",
                                 realm: str = REALM) -> str:
        return self.token_response(realm, auth=(client, secret), grant_type="client_credentials")["access_token"]

    # --- Admin REST API ----------------------------------------------------------------------------------
    def admin_token(self) -> str:
        """Master-realm admin token (admin-cli password grant with the bootstrap admin), cached until 30 s
        before it expires."""
        now = time.monotonic()
        if self._admin_token and self._admin_token[1] > now:
            return self._admin_token[0]
        t = self.token_response("master", grant_type="password", client_id="admin-cli", username=ADMIN_USER,
                                password=self.admin_password)
        self._admin_token = (t["access_token"], now + max(0, int(t.get("expires_in", 60)) - 30))
        return t["access_token"]

    def admin(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Admin REST call: `path` below /admin/realms (e.g. "/myrealm/clients"). Raw response."""
        headers = {"Authorization": f"Bearer {self.admin_token()}", **kw.pop("headers", {})}
        return self.session.request(method, f"{self.base_url}/admin/realms{path}", headers=headers,
                                    timeout=kw.pop("timeout", 60), **kw)

    def _admin_ok(self, method: str, path: str, **kw: Any) -> requests.Response:
        r = self.admin(method, path, **kw)
        if r.status_code >= 300:
            raise KeycloakError(f"admin {method} {path} -> {r.status_code}: {r.text[:300]}")
        return r

    def create_realm(self, name: str, export: Path | str | dict = REALM_FILE) -> str:
        """Import the realm export under another name (own keys, issuer <hostname>/realms/<name>, other user
        ids) through POST /admin/realms. Returns the issuer."""
        data = export if isinstance(export, dict) else json.loads(Path(export).read_text())
        old = data["realm"]
        rep = json.loads(json.dumps(data).replace(f"default-roles-{old}", f"default-roles-{name}"))
        rep["realm"] = name
        for u in rep.get("users", []):
            if "id" in u:
                u["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{u['id']}"))
        self._admin_ok("POST", "", json=rep)
        return self.issuer(name)

    def delete_realm(self, name: str) -> None:
        self._admin_ok("DELETE", f"/{name}")

    def realm_keys(self, realm: str = REALM) -> dict:
        """GET /admin/realms/{realm}/keys: {"active": {alg: kid}, "keys": [{kid, algorithm, use, status,
        providerId, providerPriority, ...}]}."""
        return self._admin_ok("GET", f"/{realm}/keys").json()

    def get_client(self, client_id: str, realm: str = REALM) -> dict:
        """The client representation (with its internal `id`) for a clientId."""
        found = self._admin_ok("GET", f"/{realm}/clients", params={"clientId": client_id}).json()
        if len(found) != 1:
            raise KeycloakError(f"client {client_id!r} in realm {realm}: {len(found)} matches")
        return found[0]

    def update_client(self, client_id: str, changes: dict, realm: str = REALM) -> dict:
        """Merge `changes` into the client (`attributes` merged key by key) and PUT it. Returns the new one."""
        rep = self.get_client(client_id, realm)
        for k, v in changes.items():
            if k == "attributes":
                rep.setdefault("attributes", {}).update(v)
            else:
                rep[k] = v
        self._admin_ok("PUT", f"/{realm}/clients/{rep['id']}", json=rep)
        return self.get_client(client_id, realm)

    def set_client_attribute(self, client_id: str, name: str, value: str, realm: str = REALM) -> None:
        """E.g. set_client_attribute("frontend", "access.token.lifespan", "60")."""
        self.update_client(client_id, {"attributes": {name: value}}, realm)

    def key_providers(self, realm: str = REALM) -> list[dict]:
        """The realm's key provider components (rsa-generated, rsa-enc-generated, hmac-generated, ...)."""
        realm_id = self._admin_ok("GET", f"/{realm}").json()["id"]
        comps = self._admin_ok("GET", f"/{realm}/components",
                               params={"parent": realm_id, "type": "org.keycloak.keys.KeyProvider"}).json()
        return comps

    def add_rsa_key_provider(self, name: str, priority: int, realm: str = REALM, algorithm: str = "RS256",
                             key_size: int = 2048, provider_id: str = "rsa-generated") -> str:
        """Add a generated RSA signing key provider; the highest-priority active key signs new tokens.
        Returns the component id."""
        realm_id = self._admin_ok("GET", f"/{realm}").json()["id"]
        comp = {"name": name, "providerId": provider_id, "providerType": "org.keycloak.keys.KeyProvider",
                "parentId": realm_id,
                "config": {"priority": [str(priority)], "enabled": ["true"], "active": ["true"],
                           "algorithm": [algorithm], "keySize": [str(key_size)]}}
        r = self._admin_ok("POST", f"/{realm}/components", json=comp)
        return r.headers["Location"].rstrip("/").rsplit("/", 1)[1]

    def set_key_provider(self, component_id: str, realm: str = REALM, *, enabled: bool | None = None,
                         active: bool | None = None) -> None:
        """enabled=False: the key is neither used nor published in the JWKS. active=False: published (old
        tokens verify) but no longer used to sign."""
        comp = self._admin_ok("GET", f"/{realm}/components/{component_id}").json()
        if enabled is not None:
            comp["config"]["enabled"] = [str(enabled).lower()]
        if active is not None:
            comp["config"]["active"] = [str(active).lower()]
        self._admin_ok("PUT", f"/{realm}/components/{component_id}", json=comp)

    def delete_component(self, component_id: str, realm: str = REALM) -> None:
        self._admin_ok("DELETE", f"/{realm}/components/{component_id}")

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        r = self.session.request(method, url, timeout=kw.pop("timeout", 30), **kw)
        if r.status_code != 200:
            raise KeycloakError(f"{method} {url} -> {r.status_code}: {r.text[:300]}")
        return r.json()


def _make_home(workdir: Path, realm_files: Sequence[Path | str]) -> Path:
    home = workdir / "keycloak-home"
    if home.exists():
        shutil.rmtree(home)
    (home / "bin").mkdir(parents=True)
    shutil.copy2(dist_dir() / "bin" / "kc.sh", home / "bin" / "kc.sh")
    for name in ("lib", "conf", "themes", "providers", "version.txt"):
        (home / name).symlink_to(dist_dir() / name)
    imp = home / "data" / "import"
    imp.mkdir(parents=True)
    for f in realm_files:
        shutil.copy2(f, imp / Path(f).name)
    return home


def launch(workdir: Path | str | None = None, *, realm_files: Sequence[Path | str] = (REALM_FILE,),
           java: str | None = None, require_installed: bool = True, nice: int = NICE,
           extra_args: Sequence[str] = ()) -> KeycloakProcess:
    """Start Keycloak and return at once (it takes tens of seconds to be ready: call `wait_ready()`)."""
    if require_installed and not installed():
        why = ""
        with contextlib.suppress(OSError):
            why = "; the last install failed: " + _install_error_file().read_text().strip()
        raise KeycloakError(f"Keycloak {VERSION} is not installed in {dist_dir()}: run `make setup` "
                            f"(or `python tests/e2e/keycloak.py install`){why}")
    jdk = java or java_home()
    wd = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="meshgate-keycloak-"))
    wd.mkdir(parents=True, exist_ok=True)
    home = _make_home(wd, realm_files)
    password = secrets.token_urlsafe(18)
    env = dict(os.environ, JAVA_HOME=jdk, JAVA_OPTS_APPEND=JVM_OPTIONS, KC_BOOTSTRAP_ADMIN_USERNAME=ADMIN_USER,
               KC_BOOTSTRAP_ADMIN_PASSWORD=password)
    for k in list(env):  # settings of another Keycloak in the caller's environment must not leak in
        if k.startswith("KC_") and not k.startswith("KC_BOOTSTRAP_ADMIN_"):
            del env[k]
    cmd = ["nice", "-n", str(nice)] if nice else []
    cmd += [str(home / "bin" / "kc.sh"), "start-dev", *BUILD_OPTIONS, "--import-realm",
            "--http-host=127.0.0.1", "--http-port=0", "--http-management-port=0",
            f"--hostname={HOSTNAME_URL}", "--hostname-backchannel-dynamic=true", *extra_args]
    log_path = wd / "keycloak.log"
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=str(home),
                                env=env, start_new_session=True)
    return KeycloakProcess(proc=proc, home=home, log_path=log_path, java_home=jdk, admin_password=password,
                           launched_at=time.monotonic())


def start(workdir: Path | str | None = None, timeout: float = START_TIMEOUT, **kw: Any) -> KeycloakProcess:
    """launch() + wait_ready()."""
    return launch(workdir, **kw).wait_ready(timeout)


# ----------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("install", "run", "info"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.command == "info":
            print(json.dumps(info(), indent=1))
        elif args.command == "install":
            try:
                install(quiet=args.quiet)
                _install_error_file().unlink(missing_ok=True)
            except KeycloakError as e:
                with contextlib.suppress(OSError):
                    cache_dir().mkdir(parents=True, exist_ok=True)
                    _install_error_file().write_text(str(e) + "\n")
                raise
        else:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwind through kc.stop()
            kc = launch()
            try:
                kc.wait_ready()
                print(f"Keycloak {VERSION} ready in {kc.ready_after:.0f} s: {kc.base_url} (health "
                      f"http://127.0.0.1:{kc.management_port}/health), issuer {kc.issuer()}, admin "
                      f"{ADMIN_USER}/{kc.admin_password}, log {kc.log_path}. Ctrl-C stops it.", flush=True)
                while kc.alive():
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
            finally:
                kc.stop()
    except KeycloakError as e:
        print(f"keycloak: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
