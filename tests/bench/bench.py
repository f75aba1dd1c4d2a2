#!/usr/bin/env python3
"""meshgate throughput/latency benchmark against the native Istio filter chain (`make bench`).

One run, one machine, configurations interleaved:

  Envoy 1.40, one worker (--concurrency 1), every Envoy thread pinned to core 0; wrk (1 thread,
  32 connections) pinned to core 1; the route is an Envoy direct_response (no upstream), identical
  in every configuration. Each configuration is its own Envoy process, started once; per round the
  configurations run in a different (rotated) order so slow drifts of the machine hit all of them.

  1 none            no HTTP filter but the router
  2 native          jwt_authn + RBAC exactly as istiod renders RequestAuthentication +
                    AuthorizationPolicy for a sidecar (inline JWKS, no JWT cache)   unique tokens
  3 native_cache    the same plus jwt_cache_config (jwt_cache_size 1024)            same token
  4 meshgate_same   meshgate (crypto auto -> host verify_signature), token cache      same token
  5 meshgate_unique meshgate (crypto auto), every request a cache miss              unique tokens
  6 meshgate_wasm   meshgate with crypto: wasm (RS256 verified inside the Wasm VM)  unique tokens
  7 wasm_floor      reference: a do-nothing proxy-wasm module (tests/bench/floor: raw ABI exports, every
                    callback returns at once, no host call), the fixed cost of any Wasm filter
  8 egress_meshgate outbound (a sidecar's OUTBOUND listener): meshgate `egress` injects a cached
                    client-credentials token (client `frontend`, from the dev IdP)        no token sent
  9 egress_native   the same with Envoy's credential_injector + OAuth2 client-credentials source
                    (envoy.http.injected_credentials.oauth2) against the same IdP          no token sent
  (the ratio egress_meshgate / egress_native; `none` is the no-filter row for both)
 10 native_oauth2   browser SSO the native way: Envoy's oauth2 filter (session cookies, forward_bearer_token)
                    + jwt_authn (jwt_cache_config) + RBAC                           session cookie
 11 meshgate_session browser SSO in meshgate (oidc block): the session cookie is opened (remembered per VM
                    after the first request), its access token forwarded and checked by the same jwtRules
                    and policies                                                    session cookie

The two SSO configurations log alice in once through the dev IdP (tests/e2e/idp.py, its tokens RS256,
Keycloak-shaped, the gateway client's lifespan set to a day in a copy of the realm) with the real browser
flow over HTTP, and every measured request then carries the cookies that login produced (about 4 kB),
the same on both sides; the IdP is never called while measuring.

Policy (both sides): jwtRules issuer + audience my-backend-client; ALLOW GET when
request.auth.claims[iss|aud|email] match (istio/meshgate/wasmplugin-backend.yaml). Tokens are RS256
(2048-bit key generated here, its JWKS given inline to both sides), Keycloak-shaped, ~1 kB. The
unique pool has >= 20,000 distinct tokens, cycled in order (the LRU holds 1,024), and the meshgate
token-cache counters prove every measured request missed.

Before measuring, each configuration must answer a valid token 200, a tampered one 401, a POST 403
and another user's token 403; during measurement every response must be 2xx and the filter's
"allowed" counter must grow by at least the number of requests. A run that fails this is marked
invalid (exit code 1): a broken configuration cannot produce a fast number. There are no timing
assertions: ratios and goals are reported, not enforced.

Usage: bench.py [--rounds 3] [--duration 10] [--warmup 3] [--pool 20000] [--out dist/bench.json]
                [--only native,meshgate_same ...] [--wasm PATH] [--variant NAME=PATH ...]

--variant adds the meshgate configurations once more for another build of the module (e.g. another
[profile.release]), named <config>@NAME, in the same interleaved run.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import harness  # noqa: E402
import istiod_native  # noqa: E402
import render  # noqa: E402

ISSUER = harness.ISSUER
AUDIENCE = harness.AUDIENCE
EMAIL = "user@example.com"
PATH = "/data"
KID = "bench-rs256"
NATIVE_JWT_CACHE_SIZE = 1024

REFERENCE_POLICY = {
    "name": "reference-policy",
    "namespace": "demo",
    "action": "ALLOW",
    "rules": [{
        "to": [{"operation": {"methods": ["GET"]}}],
        "when": [
            {"key": "request.auth.claims[iss]", "values": [ISSUER]},
            {"key": "request.auth.claims[aud]", "values": [AUDIENCE]},
            {"key": "request.auth.claims[email]", "values": [EMAIL]},
        ],
    }],
}

DIRECT_RESPONSE_ROUTES = {
    "name": "bench",
    "virtual_hosts": [{
        "name": "bench",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}],
    }],
}

CONFIGS = {
    # name: (description, token pool, matching native config for the ratio)
    "none": ("no filter (router only)", "same", None),
    "native": ("native jwt_authn + RBAC as istiod renders it (no JWT cache)", "unique", None),
    "native_cache": ("native jwt_authn (jwt_cache_config) + RBAC", "same", None),
    "meshgate_same": ("meshgate, crypto auto (host), same token (cache hits)", "same", "native_cache"),
    "meshgate_unique": ("meshgate, crypto auto (host), unique tokens (cache misses)", "unique", "native"),
    "meshgate_wasm": ("meshgate, crypto wasm, unique tokens (in-wasm RS256)", "unique", "native"),
    "wasm_floor": ("do-nothing proxy-wasm module (tests/bench/floor), no authentication", "same", None),
    "egress_meshgate": ("meshgate egress, outbound, cached client-credentials token injected", "none",
                        "egress_native"),
    "egress_native": ("Envoy credential_injector (OAuth2 client credentials), outbound, token injected", "none",
                      None),
    "native_oauth2": ("native oauth2 filter + jwt_authn (jwt_cache_config) + RBAC, session cookies", "oauth2", None),
    "meshgate_session": ("meshgate SSO, session cookie (open + forward + jwtRules/policies)", "session",
                         "native_oauth2"),
}

EGRESS_CONFIGS = ("egress_meshgate", "egress_native")
TOKEN_URL = f"{ISSUER}/protocol/openid-connect/token"
ECHO_CLUSTER = "outbound|80||echo.bench.svc.cluster.local"
# Outbound requests: the route answers itself, except /__headers, which goes to the echo backend so the
# precheck can see the Authorization header the proxy injected.
EGRESS_ROUTES = {
    "name": "80",
    "virtual_hosts": [{
        "name": "bench",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/__headers"}, "route": {"cluster": ECHO_CLUSTER, "timeout": "0s"}},
                   {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}],
    }],
}
SSO_CONFIGS = ("native_oauth2", "meshgate_session")
SSO_HMAC_SECRET = "bench-oauth2-hmac-secret-0123456789"
SSO_COOKIE_KEY = base64.b64encode(bytes(range(40, 72))).decode()
GATEWAY_CLIENT = ("meshgate-gateway", "gateway-secret")


def spec(name: str) -> tuple:
    """CONFIGS entry of a configuration name (`meshgate_same@variant` -> `meshgate_same`)."""
    return CONFIGS[name.split("@")[0]]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# key, JWKS, tokens
# --------------------------------------------------------------------------------------------------
def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _claims(i: int, now: int, email: str = EMAIL, user: str = "alice") -> dict:
    """A Keycloak-shaped access token payload (password grant of demo-cli for the backend)."""
    return {
        "exp": now + 7 * 24 * 3600, "iat": now, "auth_time": now, "jti": str(uuid.UUID(int=i + 1)),
        "iss": ISSUER, "aud": AUDIENCE, "sub": "6f1c3b1e-8d1a-4f57-9a1c-2b7f9d0e4a11", "typ": "Bearer",
        "azp": "demo-cli", "sid": "0b9a6c2e-6a2d-4c1b-8f0e-5d3c2b1a0f9e", "acr": "1",
        "allowed-origins": ["http://localhost:8080"],
        "realm_access": {"roles": ["default-roles-myrealm", "offline_access", "uma_authorization", "user"]},
        "resource_access": {"account": {"roles": ["manage-account", "manage-account-links", "view-profile"]}},
        "scope": "openid email profile", "email_verified": True, "name": "Alice Liddell",
        "preferred_username": user, "given_name": "Alice", "family_name": "Liddell", "email": email,
    }


def _sign_chunk(args: tuple[bytes, list[dict]]) -> list[str]:
    import jwt
    from cryptography.hazmat.primitives import serialization

    pem, payloads = args
    key = serialization.load_pem_private_key(pem, password=None)
    return [jwt.encode(p, key, algorithm="RS256", headers={"kid": KID, "typ": "JWT"}) for p in payloads]


def make_material(cache_dir: Path, pool_size: int) -> dict:
    """RSA key + JWKS + token pool. Cached in cache_dir (re-minted when the tokens have less than
    a day left or the pool is too small): minting 20k RS256 tokens costs ~20 s of CPU."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / "material.json"
    now = int(time.time())
    if cache.exists():
        try:
            m = json.loads(cache.read_text())
            if m["exp"] - now > 24 * 3600 and len(m["pool"]) >= pool_size and m.get("issuer") == ISSUER:
                m["pool"] = m["pool"][:pool_size]
                log(f"token pool: {len(m['pool'])} cached tokens ({cache})")
                return m
        except (ValueError, KeyError):
            pass
    log(f"minting {pool_size} RS256 tokens (2048-bit key) ...")
    t0 = time.monotonic()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
           "n": b64u(pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")), "e": b64u(pub.e.to_bytes(3, "big"))}
    payloads = [_claims(i, now) for i in range(pool_size)]
    workers = max(1, os.cpu_count() or 1)
    chunks = [payloads[k::workers] for k in range(workers)]
    with cf.ProcessPoolExecutor(workers) as ex:
        parts = list(ex.map(_sign_chunk, [(pem, c) for c in chunks]))
    pool = [t for part in parts for t in part]
    other = _sign_chunk((pem, [_claims(10**7, now, email="mallory@example.com", user="mallory")]))[0]
    m = {"exp": now + 7 * 24 * 3600, "issuer": ISSUER, "jwks": json.dumps({"keys": [jwk]}),
         "pool": pool, "other_user": other, "minted_s": round(time.monotonic() - t0, 1)}
    assert len(set(pool)) == pool_size
    cache.write_text(json.dumps(m))
    log(f"minted in {m['minted_s']} s")
    return m


def tamper_cookie(header: str) -> str:
    """The Cookie header with one character changed in the middle of every long value (the native oauth2
    filter answers a session that fails its HMAC check by refreshing with the RefreshToken cookie)."""
    parts = [p.split("=", 1) for p in header.split("; ")]
    for p in parts:
        if len(p[1]) > 20:
            mid = len(p[1]) // 2
            p[1] = p[1][:mid] + ("A" if p[1][mid] != "A" else "B") + p[1][mid + 1:]
    return "; ".join(f"{n}={x}" for n, x in parts)


def tamper(token: str) -> str:
    h, p, s = token.split(".")
    sig = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    sig[len(sig) // 2] ^= 0x01
    return f"{h}.{p}.{b64u(bytes(sig))}"


# --------------------------------------------------------------------------------------------------
# Envoy configurations
# --------------------------------------------------------------------------------------------------
def egress_bootstrap(name: str, wasm: str, idp_port: int, echo_port: int) -> dict:
    """A sidecar's outbound listener (traffic_direction OUTBOUND) with token injection for every request."""
    clusters = {harness.KEYCLOAK_CLUSTER: ("127.0.0.1", idp_port), ECHO_CLUSTER: ("127.0.0.1", echo_port)}
    extra: dict = {}
    if name == "egress_meshgate":
        cfg = {"egress": [{"name": "bench", "hosts": ["127.0.0.1"], "tokenEndpoint": TOKEN_URL,
                           "clientId": "frontend", "clientSecret": "frontend-secret"}]}
        plugins = [{"metadata": {"name": "meshgate", "namespace": "demo"},
                    "spec": {"pluginName": "meshgate", "phase": "AUTHN", "failStrategy": "FAIL_CLOSE",
                             "match": [{"mode": "CLIENT"}], "pluginConfig": cfg}}]
        filters = render.assemble_http_filters(plugins, wasm, listener_class="SIDECAR_OUTBOUND")
    else:
        filters = [{
            "name": "envoy.filters.http.credential_injector",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
                "overwrite": False,
                "credential": {
                    "name": "envoy.http.injected_credentials.oauth2",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.oauth2.v3.OAuth2",
                        "token_endpoint": {"uri": TOKEN_URL, "cluster": harness.KEYCLOAK_CLUSTER, "timeout": "5s"},
                        "client_credentials": {"client_id": "frontend", "client_secret": {"name": "frontend-secret"}},
                    },
                },
            },
        }]
        extra = {"secrets": [{"name": "frontend-secret",
                              "generic_secret": {"secret": {"inline_string": "frontend-secret"}}}]}
    cfg = render.render_bootstrap(filters, 0, 0, 9, clusters, traffic_direction="OUTBOUND",
                                  listener_name="0.0.0.0_80",
                                  node_id="sidecar~127.0.0.1~frontend-0.demo~demo.svc.cluster.local",
                                  hcm_overrides={"stat_prefix": "outbound_0.0.0.0_80", "route_config": EGRESS_ROUTES})
    cfg["static_resources"].update(extra)
    return cfg


def bootstrap(name: str, jwks: str, wasm: str, floor_wasm: str = "", idp_port: int = 0, echo_port: int = 0) -> dict:
    if name.split("@")[0] in EGRESS_CONFIGS:
        return egress_bootstrap(name.split("@")[0], wasm, idp_port, echo_port)
    jwt_authn: list[dict] = []
    rbac: list[dict] = []
    plugins: list[dict] = []
    rule = {"issuer": ISSUER, "jwks": jwks, "audiences": [AUDIENCE]}
    name = name.split("@")[0]
    if name in SSO_CONFIGS:
        return sso_bootstrap(name, jwks, wasm, idp_port)
    if name in ("native", "native_cache"):
        f = istiod_native.render_jwt_authn(
            [rule], jwks_mode="istiod", clear_route_cache=False,  # sidecar: istiod passes False
            jwt_cache_size=NATIVE_JWT_CACHE_SIZE if name == "native_cache" else None)
        jwt_authn = [f]
        rbac = istiod_native.render_rbac([REFERENCE_POLICY])
    elif name.startswith("meshgate"):
        cfg = {"jwtRules": [rule], "policies": [{k: v for k, v in REFERENCE_POLICY.items() if k != "namespace"}]}
        if name == "meshgate_wasm":
            cfg["crypto"] = "wasm"
        plugins = [{"metadata": {"name": "meshgate", "namespace": "demo"},
                    "spec": {"pluginName": "meshgate", "phase": "AUTHN", "failStrategy": "FAIL_CLOSE",
                             "pluginConfig": cfg}}]
    elif name == "wasm_floor":
        plugins = [{"metadata": {"name": "floor", "namespace": "demo"},
                    "spec": {"pluginName": "floor", "phase": "AUTHN", "pluginConfig": {}}}]
        wasm = floor_wasm
    filters = render.assemble_http_filters(plugins, wasm, jwt_authn=jwt_authn, rbac=rbac)
    return render.render_bootstrap(filters, 0, 0, 9, hcm_overrides={"route_config": DIRECT_RESPONSE_ROUTES})


def sso_bootstrap(name: str, jwks: str, wasm: str, idp_port: int) -> dict:
    """The browser-SSO configurations: the IdP is reached through Istio's Keycloak cluster (only at login)."""
    rule = {"issuer": ISSUER, "jwks": jwks, "audiences": [AUDIENCE]}
    policy = {k: v for k, v in REFERENCE_POLICY.items() if k != "namespace"}
    clusters = {harness.KEYCLOAK_CLUSTER: ("127.0.0.1", idp_port)}
    oidc = f"{ISSUER}/protocol/openid-connect"
    secrets: list[dict] = []
    if name == "meshgate_session":
        cfg = {"jwtRules": [rule], "policies": [policy],
               "oidc": {"issuer": ISSUER, "clientId": GATEWAY_CLIENT[0], "clientSecret": GATEWAY_CLIENT[1],
                        "cookieSecret": SSO_COOKIE_KEY, "scopes": ["openid", "email", "profile"],
                        "authorizationEndpoint": f"{oidc}/auth", "tokenEndpoint": f"{oidc}/token",
                        "endSessionEndpoint": f"{oidc}/logout"}}
        plugins = [{"metadata": {"name": "meshgate", "namespace": "demo"},
                    "spec": {"pluginName": "meshgate", "phase": "AUTHN", "failStrategy": "FAIL_CLOSE",
                             "pluginConfig": cfg}}]
        filters = render.assemble_http_filters(plugins, wasm)
    else:
        oauth2 = {"name": "envoy.filters.http.oauth2", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2",
            "config": {
                "token_endpoint": {"cluster": harness.KEYCLOAK_CLUSTER, "uri": f"{oidc}/token", "timeout": "5s"},
                "authorization_endpoint": f"{oidc}/auth",
                "redirect_uri": "%REQ(x-forwarded-proto)%://%REQ(:authority)%/oauth2/callback",
                "redirect_path_matcher": {"path": {"exact": "/oauth2/callback"}},
                "signout_path": {"path": {"exact": "/oauth2/logout"}},
                "credentials": {"client_id": GATEWAY_CLIENT[0], "token_secret": {"name": "oauth2-token"},
                                "hmac_secret": {"name": "oauth2-hmac"}},
                "auth_scopes": ["openid", "email", "profile"],
                "forward_bearer_token": True,
                "use_refresh_token": True,
            }}}
        secrets = [{"name": "oauth2-token", "generic_secret": {"secret": {"inline_string": GATEWAY_CLIENT[1]}}},
                   {"name": "oauth2-hmac", "generic_secret": {"secret": {"inline_string": SSO_HMAC_SECRET}}}]
        jwt = istiod_native.render_jwt_authn([rule], jwks_mode="istiod", clear_route_cache=True,
                                             jwt_cache_size=NATIVE_JWT_CACHE_SIZE)
        filters = [oauth2] + render.assemble_http_filters([], wasm, jwt_authn=[jwt],
                                                          rbac=istiod_native.render_rbac([REFERENCE_POLICY]))
    cfg = render.render_bootstrap(filters, 0, 0, 9, clusters, hcm_overrides={"route_config": DIRECT_RESPONSE_ROUTES})
    if secrets:
        cfg["static_resources"]["secrets"] = secrets
    return cfg


def bench_realm(work: Path) -> Path:
    """The repository's realm export with the gateway client's access tokens living a day (its 30 s would
    make every benchmark run refresh), written to the run's work directory."""
    realm = json.loads(harness.REALM_FILE.read_text())
    for c in realm["clients"]:
        if c["clientId"] == GATEWAY_CLIENT[0]:
            c.setdefault("attributes", {})["access.token.lifespan"] = "86400"
    out = work / "realm-bench.json"
    out.write_text(json.dumps(realm))
    return out


def sso_login(env: harness.EnvoyProcess, idp: harness.IdPProcess, user: str, want: int) -> str:
    """Logs `user` in through `env`'s SSO (meshgate or native oauth2) the way a browser does, over HTTP:
    page -> IdP login form -> callback -> cookies. Returns the Cookie header the browser then sends."""
    import requests
    from urllib.parse import urlsplit

    jar: dict[str, str] = {}

    def keep(resp) -> None:
        for c in resp.raw.headers.getlist("Set-Cookie"):
            name, value = c.split(";", 1)[0].split("=", 1)
            low = c.lower()
            if "max-age=0" in low or "expires=thu, 01 jan 1970" in low or value in ("", "deleted"):
                jar.pop(name, None)
            else:
                jar[name] = value

    def app(path: str):
        h = {"Accept": "text/html"}
        if jar:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        r = env.request("GET", path, headers=h)
        keep(r)
        return r

    r = app("/")
    if r.status_code != 302:
        raise RuntimeError(f"no redirect to the login page: {r.status_code} {r.text[:200]}")
    idp_session = requests.Session()
    loc = urlsplit(r.headers["Location"])
    form = idp_session.get(f"{idp.base_url}{loc.path}?{loc.query}", timeout=10)
    m = re.search(r'action="([^"]+)"', form.text)
    if form.status_code != 200 or not m:
        raise RuntimeError(f"no login form: {form.status_code} {form.text[:300]}")
    done = idp_session.post(idp.base_url + m.group(1).replace("&amp;", "&"), allow_redirects=False, timeout=10,
                            data={"username": user, "password": user})
    back = urlsplit(done.headers.get("Location", ""))
    if done.status_code != 302 or back.path != "/oauth2/callback":
        raise RuntimeError(f"the IdP did not redirect to the callback: {done.status_code} {done.text[:300]}")
    r = app(f"{back.path}?{back.query}")
    if r.status_code != 302 or not jar:
        raise RuntimeError(f"callback failed: {r.status_code} {r.text[:300]}")
    r = app("/")
    if r.status_code != want:
        raise RuntimeError(f"{user}'s session: want {want}, got {r.status_code} {r.text[:300]}")
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of pid (and, by inheritance, threads it creates later) to one CPU."""
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True, stdout=subprocess.DEVNULL)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_report(env: harness.EnvoyProcess) -> dict:
    """What the process uses: RSS, tcmalloc's view (admin /memory) and the Wasm VMs' linear memory.

    Envoy 1.40 exposes no Wasm heap statistic (only VM counts: wasm.wasm_vm_count,
    wasm.envoy.wasm.runtime.v8.active). V8 reserves each Wasm memory as an ~8 GiB guard-paged
    region whose accessible head (rw-p, memory.size long) is directly followed by the PROT_NONE
    rest, so /proc/PID/smaps shows every VM's linear memory: its current size and resident pages."""
    out: dict = {}
    status = Path(f"/proc/{env.proc.pid}/status").read_text()
    for key in ("VmRSS", "RssAnon"):
        m = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
        if m:
            out[f"{key}_kB"] = int(m.group(1))
    maps: list[dict] = []
    for line in Path(f"/proc/{env.proc.pid}/smaps").read_text().splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
        if m:
            maps.append({"start": int(m.group(1), 16), "end": int(m.group(2), 16), "perms": m.group(3), "rss": 0})
        elif line.startswith("Rss:") and maps:
            maps[-1]["rss"] = int(line.split()[1])
    linear = []
    for prev, cur in zip(maps, maps[1:]):
        if (cur["end"] - cur["start"] >= 4 << 30 and cur["perms"].startswith("---") and prev["end"] == cur["start"]
                and prev["perms"].startswith("rw")):
            linear.append({"size_kB": (prev["end"] - prev["start"]) // 1024, "rss_kB": prev["rss"]})
    out["wasm_linear_memory"] = linear
    try:
        mem = harness.requests.get(env.admin_url + "/memory", timeout=5).json()
        out["tcmalloc_allocated"] = int(mem.get("allocated", 0))
        out["tcmalloc_heap_size"] = int(mem.get("heap_size", 0))
    except Exception:  # noqa: BLE001 - informational
        pass
    st = env.stats("wasm.")
    out["wasm_vm_count"] = st.get("wasm.wasm_vm_count")
    return out


# --------------------------------------------------------------------------------------------------
# checks and runs
# --------------------------------------------------------------------------------------------------
def precheck(name: str, env: harness.EnvoyProcess, mat: dict) -> list[str]:
    """Problems found (empty: the configuration behaves as the policy says)."""
    problems = []
    pool = mat["pool"]

    def expect(desc: str, want: int, method: str = "GET", token: str | None = None) -> None:
        r = env.request(method, PATH, token=token)
        if r.status_code != want:
            problems.append(f"{desc}: want {want}, got {r.status_code} {r.text[:120]!r}")

    if name.split("@")[0] in EGRESS_CONFIGS:
        # The injected token is the frontend service account's, as the IdP issued it.
        try:
            r = harness.wait_until(lambda: (x := env.request("GET", "/__headers")).status_code == 200 and x,
                                   timeout=15, desc="a token injected")
        except TimeoutError as e:
            return [f"no 200 with an injected token: {e}"]
        auth = r.json()["headers"].get("authorization", "")
        try:
            payload = json.loads(base64.urlsafe_b64decode(auth.split(".")[1] + "=="))
        except (IndexError, ValueError):
            return [f"injected Authorization is not a Bearer JWT: {auth[:20]!r}"]
        if not auth.startswith("Bearer ") or payload.get("azp") != "frontend":
            problems.append(f"injected token: azp {payload.get('azp')!r}")
        expect("no token sent", 200)
        return problems
    if name.split("@")[0] in SSO_CONFIGS:
        sso = mat["sso"][name.split("@")[0]]

        def send(desc: str, want: set[int], cookie: str | None, method: str = "GET") -> None:
            r = env.request(method, PATH, headers={"Cookie": cookie} if cookie else {})
            if r.status_code not in want:
                problems.append(f"{desc}: want {sorted(want)}, got {r.status_code} {r.text[:120]!r}")

        send("alice's session", {200}, sso["alice"])
        send("alice's session, POST", {403}, sso["alice"], "POST")
        send("bob's session", {403}, sso["bob"])
        send("no session", {302, 401}, None)
        send("tampered session", {302, 401}, tamper_cookie(sso["alice"]))
        return problems
    for t in (pool[0], pool[len(pool) // 2], pool[-1]):
        expect("valid token", 200, token=t)
    if name in ("none", "wasm_floor"):
        return problems
    expect("tampered signature", 401, token=tamper(pool[0]))
    expect("POST with a valid token", 403, method="POST", token=pool[0])
    expect("token of another user", 403, token=mat["other_user"])
    expect("no token", 403)
    return problems


def filter_counters(name: str, env: harness.EnvoyProcess) -> dict:
    s = env.stats()
    if name.startswith("meshgate"):
        return {k: s.get(f"wasmcustom.meshgate.{k}", 0) for k in ("allowed", "token_cache.hit", "token_cache.miss")}
    if name.startswith("native_oauth2"):
        return {"allowed": s.get("http.inbound.rbac.allowed", 0),
                "jwt_allowed": s.get("http.inbound.jwt_authn.allowed", 0),
                "oauth2_success": s.get("http.inbound.oauth_success", 0)}
    if name.startswith("native"):
        return {"allowed": s.get("http.inbound.rbac.allowed", 0),
                "jwt_allowed": s.get("http.inbound.jwt_authn.allowed", 0)}
    if name.startswith("egress_meshgate"):
        return {"allowed": s.get("wasmcustom.meshgate.egress.bench.injected", 0)}
    if name.startswith("egress_native"):
        return {"allowed": s.get("http.outbound_0.0.0.0_80.credential_injector.injected", 0)}
    return {"allowed": s.get("http.inbound.downstream_rq_2xx", 0)}


def run_wrk(env: harness.EnvoyProcess, token_file: Path, offset: int, duration: float, conns: int,
            wrk_cpu: int | None) -> dict:
    # Token pools go in `Authorization: Bearer`; session pools are whole Cookie headers.
    header = ["Cookie", ""] if token_file.stem in ("session", "oauth2") else []
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--timeout", "5s", "-s", str(HERE / "pool.lua"),
           env.url(PATH), "--", str(token_file), str(offset)] + header
    if wrk_cpu is not None:
        cmd = ["taskset", "-c", str(wrk_cpu)] + cmd
    cpu0 = proc_cpu_seconds(env.proc.pid)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    wall = time.monotonic() - t0
    cpu = proc_cpu_seconds(env.proc.pid) - cpu0
    m = re.search(r"^WRKJSON (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    res = json.loads(m.group(1))
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["envoy_cpu_s"] = round(cpu, 3)
    res["envoy_cpu_util"] = round(cpu / wall, 3)
    res["envoy_cpu_us_per_req"] = round(cpu * 1e6 / max(1, res["requests"]), 2)
    return res


def build_floor_wasm() -> str:
    """The do-nothing module of `wasm_floor`, built from tests/bench/floor (a few raw ABI exports)."""
    target_dir = REPO / "target" / "bench-floor"
    subprocess.run(["cargo", "build", "--quiet", "--release", "--locked", "--target", "wasm32-wasip1",
                    "--manifest-path", str(HERE / "floor" / "Cargo.toml"), "--target-dir", str(target_dir)],
                   check=True)
    return str(target_dir / "wasm32-wasip1" / "release" / "wasm_floor.wasm")


def settled_counters(name: str, env: harness.EnvoyProcess) -> dict:
    """The filter's counters once every increment reached Envoy: meshgate counts per worker and flushes
    on its tick (at most ~0.5 s late), so read until two reads a tick apart agree (bounded: 4 s)."""
    last = filter_counters(name, env)
    if not name.startswith(("meshgate", "egress_meshgate")):
        return last
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        time.sleep(0.6)
        now = filter_counters(name, env)
        if now == last:
            return now
        last = now
    return last


def pool_file(files: dict[str, Path], name: str) -> Path:
    base = name.split("@")[0]
    return files[base] if base in SSO_CONFIGS else files[spec(name)[1]]


def parse_variant(v: str) -> tuple[str, Path]:
    """`--variant NAME=PATH` → (NAME, absolute PATH); ValueError when malformed."""
    name, _, path = v.partition("=")
    if not name or not path or "@" in name:
        raise ValueError(f"--variant wants NAME=PATH, got {v!r}")
    return name, Path(path).resolve()


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def host_rsa_verify_us(mat: dict) -> float:
    """RS256 verify with OpenSSL through Python's cryptography (an upper bound for BoringSSL's cost
    behind verify_signature; Python call overhead included)."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    jwk = json.loads(mat["jwks"])["keys"][0]
    key = pyjwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
    tok = mat["pool"][0]
    h, p, s = tok.split(".")
    sig = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    msg = f"{h}.{p}".encode()
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        key.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
    return (time.perf_counter() - t0) * 1e6 / n


# --------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load per config")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--pool", type=int, default=20000, help="distinct tokens for the unique-token runs")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--wasm", default=str(harness.meshgate_wasm_path()))
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                    help="also run the meshgate configs with this module (repeatable)")
    ap.add_argument("--out", default=str(REPO / "dist" / "bench.json"))
    ap.add_argument("--no-counter-check", action="store_true",
                    help="do not require the filter's allowed counter to match (for ablation builds without metrics)")
    ap.add_argument("--cache-dir", default=str(REPO / "target" / "bench"))
    args = ap.parse_args()

    names = [n for n in CONFIGS if not args.only or n in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - set(CONFIGS)
    if unknown:
        ap.error(f"unknown configs: {sorted(unknown)}")
    if shutil.which("wrk") is None:
        log("wrk not found (Debian: apt-get install -y wrk; `make bench` installs it)")
        return 2
    wasm = Path(args.wasm).resolve()  # Envoy runs in its own work directory
    wasm_of = {n: wasm for n in names}
    for v in args.variant:
        try:
            vname, vpath = parse_variant(v)
        except ValueError as e:
            ap.error(str(e))
        for n in [n for n in names if "@" not in n and n.startswith("meshgate")]:
            names.append(f"{n}@{vname}")
            wasm_of[f"{n}@{vname}"] = vpath
    for n in names:
        if n.startswith(("meshgate", "egress_meshgate")) and not wasm_of[n].is_file():
            log(f"{wasm_of[n]} missing: run `make build`")
            return 2
    ncpu = os.cpu_count() or 1
    envoy_cpu, wrk_cpu = (0, 1) if ncpu >= 2 else (None, None)
    if envoy_cpu is None:
        log("warning: fewer than 2 CPUs; not pinning (Envoy and wrk share the CPU)")

    mat = make_material(Path(args.cache_dir), args.pool)
    work = Path(args.cache_dir) / f"run-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    files = {"same": work / "same.txt", "unique": work / "unique.txt", "none": work / "none.txt"}
    files["same"].write_text(mat["pool"][0] + "\n")
    files["unique"].write_text("\n".join(mat["pool"]) + "\n")
    files["none"].write_text("-\n")
    floor = build_floor_wasm() if "wasm_floor" in names else ""

    envs: dict[str, harness.EnvoyProcess] = {}
    helpers: list = []
    idp = None
    idp_port = echo_port = 0
    rc = 0
    try:
        sso_jwks = mat["jwks"]
        if any(n.split("@")[0] in EGRESS_CONFIGS + SSO_CONFIGS for n in names):
            # The dev IdP: the egress token endpoint, and the SSO login (its realm copy gives the gateway
            # client day-long tokens, so nothing refreshes while measuring).
            idp = harness.start_idp(realm_file=bench_realm(work), extra_realms=(), workdir=work / "idp")
            helpers.append(idp)
            idp_port = idp.port
            sso_jwks = json.dumps(idp.jwks())
        if any(n.split("@")[0] in EGRESS_CONFIGS for n in names):
            # The echo backend the egress prechecks read headers from.
            helpers.append(harness.start_echo(workdir=work / "echo"))
            echo_port = helpers[-1].port
        log(f"starting {len(names)} Envoys ...")
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(len(names)) as ex:
            futs = {n: ex.submit(harness.start_envoy,
                                 bootstrap(n, sso_jwks if n.split("@")[0] in SSO_CONFIGS else mat["jwks"],
                                           str(wasm_of[n]), floor, idp_port, echo_port), log_level="info",
                                 component_log_level=None, workdir=work, timeout=180) for n in names}
            failed = None
            for n, f in futs.items():
                try:
                    envs[n] = f.result()  # every Envoy that came up lands in envs and is stopped below
                except Exception as e:  # noqa: BLE001 - re-raised after the others are collected
                    failed = failed or e
            if failed:
                raise failed
        log(f"  up in {time.monotonic() - t0:.1f} s")
        for n in names:
            if envoy_cpu is not None:
                pin(envs[n].proc.pid, envoy_cpu)
        crypto_mode = {}
        for n in names:
            if n.startswith("meshgate"):
                m = re.search(r"signature verification: ([^\n]+)", envs[n].log())
                crypto_mode[n] = m.group(1).strip() if m else "?"

        results: dict[str, dict] = {n: {"description": spec(n)[0], "pool": spec(n)[1], "runs": []}
                                    for n in names}
        for n in names:
            if n.startswith("meshgate"):
                results[n]["wasm"] = {"path": str(wasm_of[n]), "bytes": wasm_of[n].stat().st_size}
        if idp is not None:
            mat["sso"] = {}
            for n in names:
                base = n.split("@")[0]
                if base in SSO_CONFIGS and base not in mat["sso"]:
                    mat["sso"][base] = {u: sso_login(envs[n], idp, u, want) for u, want in (("alice", 200), ("bob", 403))}
                    files[base] = work / f"{'oauth2' if base == 'native_oauth2' else 'session'}.txt"
                    files[base].write_text(mat["sso"][base]["alice"] + "\n")
                    log(f"  {base}: alice's cookies {len(mat['sso'][base]['alice'])} bytes")
        for n in names:
            problems = precheck(n, envs[n], mat)
            results[n]["precheck"] = problems or "ok"
            if problems:
                rc = 1
                log(f"PRECHECK FAILED {n}: {problems}")
        if rc:
            raise SystemExit(rc)
        if "meshgate_same" in crypto_mode and "host" not in crypto_mode["meshgate_same"]:
            log(f"warning: meshgate crypto auto resolved to {crypto_mode['meshgate_same']!r}, not the host")

        offsets = {n: 0 for n in names}
        log(f"warm-up {args.warmup:.0f} s per config ...")
        for n in names:
            w = run_wrk(envs[n], pool_file(files, n), offsets[n], args.warmup, args.connections, wrk_cpu)
            offsets[n] += w["requests"] + 2 * args.connections
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                before = settled_counters(n, envs[n])
                res = run_wrk(envs[n], pool_file(files, n), offsets[n], args.duration, args.connections, wrk_cpu)
                after = settled_counters(n, envs[n])
                offsets[n] += res["requests"] + 2 * args.connections
                res["round"] = r + 1
                res["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
                res["counters"] = {k: after[k] - before.get(k, 0) for k in after}
                bad = []
                if res["err_status"] or res["err_connect"] or res["err_read"] or res["err_timeout"]:
                    bad.append("errors or non-2xx responses")
                if res["counters"]["allowed"] < res["requests"] and not args.no_counter_check:
                    bad.append(f"filter allowed {res['counters']['allowed']} < {res['requests']} requests")
                if spec(n)[1] == "unique" and res["counters"].get("token_cache.hit", 0):
                    bad.append(f"{res['counters']['token_cache.hit']} token-cache hits in a unique-token run")
                res["valid"] = not bad
                if bad:
                    rc = 1
                    res["problems"] = bad
                results[n]["runs"].append(res)
                log(f"  round {r + 1} {n:16s} {res['rps']:9.0f} req/s  p50 {res['lat_p50_us'] / 1000:6.2f} ms  "
                    f"p99 {res['lat_p99_us'] / 1000:6.2f} ms  cpu/req {res['envoy_cpu_us_per_req']:7.1f} us  "
                    f"util {res['envoy_cpu_util']:.2f}" + (f"  INVALID: {bad}" if bad else ""))
        for n in names:
            results[n]["memory"] = memory_report(envs[n])
            if n in crypto_mode:
                results[n]["signature_verification"] = crypto_mode[n]
    finally:
        for e in envs.values():
            e.stop()
        for h in helpers:
            h.stop()

    # ---- summary -------------------------------------------------------------------------------
    for n in names:
        runs = [x for x in results[n]["runs"] if x.get("valid")]
        results[n]["median"] = {k: median([x[k] for x in runs]) for k in
                                ("rps", "lat_p50_us", "lat_p99_us", "envoy_cpu_us_per_req", "envoy_cpu_util")}
    # req/s ratios, and the same comparison by Envoy CPU time per request (reference CPU / this
    # CPU): equal to the req/s ratio on a quiet machine, and still right when another process took
    # part of core 0 away from Envoy during some runs.
    ratios, cpu_ratios = {}, {}
    for n in names:
        ref = spec(n)[2]
        if ref and ref in results and results[n]["median"]["rps"] and results[ref]["median"]["rps"]:
            ratios[f"{n}/{ref}"] = results[n]["median"]["rps"] / results[ref]["median"]["rps"]
            cpu_ratios[f"{n}/{ref}"] = (results[ref]["median"]["envoy_cpu_us_per_req"]
                                        / results[n]["median"]["envoy_cpu_us_per_req"])
    # Envoy CPU per request above the do-nothing Wasm module: what a filter costs beyond the fixed
    # price of being a Wasm filter at all.
    floor_cpu = results.get("wasm_floor", {}).get("median", {}).get("envoy_cpu_us_per_req")
    above_floor = {n: round(results[n]["median"]["envoy_cpu_us_per_req"] - floor_cpu, 2) for n in names
                   if floor_cpu is not None and results[n]["median"]["envoy_cpu_us_per_req"] is not None}
    contended = sorted(n for n in names if (results[n]["median"]["envoy_cpu_util"] or 0) < 0.85)
    size = wasm.stat().st_size if wasm.is_file() else None
    base_rss = results.get("none", {}).get("memory", {}).get("VmRSS_kB")

    # In-wasm RS256: per-request Envoy CPU of config 6 minus config 5 (the same requests verified by
    # BoringSSL through verify_signature), plus that host verification itself (bounded above by
    # OpenSSL measured here).
    ests: dict[str, dict] = {}
    hv = None
    for suffix in [""] + [f"@{v.partition('=')[0]}" for v in args.variant]:
        w6, w5 = f"meshgate_wasm{suffix}", f"meshgate_unique{suffix}"
        if {w6, w5} <= set(names):
            c6 = results[w6]["median"]["envoy_cpu_us_per_req"]
            c5 = results[w5]["median"]["envoy_cpu_us_per_req"]
            if c6 and c5:
                hv = hv if hv is not None else host_rsa_verify_us(mat)
                ests[w6] = {"cpu_us_per_req_wasm": c6, "cpu_us_per_req_host": c5, "delta_us": round(c6 - c5, 1),
                            "host_verify_us_openssl": round(hv, 1), "in_wasm_rs256_us": round(c6 - c5 + hv, 1)}
    est = ests.get("meshgate_wasm")
    goals = {}
    if "meshgate_same" in above_floor:
        goals["same_token_cpu_above_wasm_floor<=4us"] = above_floor["meshgate_same"] <= 4.0
    if "meshgate_same/native_cache" in cpu_ratios:
        goals["same_token_vs_native_cache_by_cpu>1.0"] = cpu_ratios["meshgate_same/native_cache"] > 1.0
    if "meshgate_session/native_oauth2" in cpu_ratios:
        goals["session_vs_native_oauth2_by_cpu>=1.0"] = cpu_ratios["meshgate_session/native_oauth2"] >= 1.0
    if "meshgate_unique/native" in cpu_ratios:
        goals["unique_vs_native_by_cpu>=1.0"] = cpu_ratios["meshgate_unique/native"] >= 1.0
    if est:
        goals["in_wasm_rs256<=300us"] = est["in_wasm_rs256_us"] <= 300
    if size:
        goals["wasm_size<=400KB"] = size <= 400 * 1000

    env_info = {
        "cpus": ncpu, "cpu_model": _cpu_model(), "kernel": platform.release(),
        "envoy": _first_line([harness.find_envoy(), "--version"]), "wrk": _first_line(["wrk", "--version"]),
        "pinning": {"envoy": envoy_cpu, "wrk": wrk_cpu}, "loadavg_end": Path("/proc/loadavg").read_text().strip(),
    }
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                   "wrk_threads": 1, "connections": args.connections, "pool": len(mat["pool"]),
                   "token_bytes": len(mat["pool"][0]), "native_jwt_cache_size": NATIVE_JWT_CACHE_SIZE,
                   "backend": "direct_response"},
        "environment": env_info,
        "wasm": {"path": str(wasm), "bytes": size,
                 "sha256": hashlib.sha256(wasm.read_bytes()).hexdigest() if size else None},
        "configs": results, "ratios": ratios, "cpu_ratios": cpu_ratios,
        "cpu_us_per_req_above_wasm_floor": above_floor, "contended": contended, "in_wasm_rs256_estimate": est, "in_wasm_rs256_by_module": ests, "goals": goals,
        "valid": rc == 0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))

    print()
    width = max(17, *(len(n) for n in names))
    # Headline: Envoy CPU per request (and above the Wasm floor), ratios by CPU; req/s beside them.
    print(f"{'config':{width}s} {'cpu us/req':>11s} {'+floor us':>10s} {'ratio by CPU':>26s}  {'req/s':>9s} "
          f"{'p50 ms':>8s} {'p99 ms':>8s} {'(by req/s)':>10s}  {'RSS MB':>7s} {'Wasm memory MB':>15s}")
    for n in names:
        md = results[n]["median"]
        ref = spec(n)[2]
        ratio = ratios.get(f"{n}/{ref}")
        cpu_ratio = f"{cpu_ratios[f'{n}/{ref}']:.2f}x {ref}" if ratio else ""
        mem = results[n].get("memory", {})
        lin = "+".join(f"{x['size_kB'] / 1024:.1f}" for x in mem.get("wasm_linear_memory") or []) or "-"
        print(f"{n:{width}s} {_f(md['envoy_cpu_us_per_req'], 11, 1)} {_f(above_floor.get(n), 10, 1)} "
              f"{cpu_ratio:>26s}  {_f(md['rps'], 9, 0)} {_f(md['lat_p50_us'] and md['lat_p50_us'] / 1000, 8, 2)} "
              f"{_f(md['lat_p99_us'] and md['lat_p99_us'] / 1000, 8, 2)} "
              f"{(f'{ratio:.2f}x' if ratio else ''):>10s}  {_f(mem.get('VmRSS_kB', 0) / 1024, 7, 1)} "
              f"{lin:>15s}")
    print()
    if size:
        print(f"meshgate.wasm: {size} bytes ({size / 1000:.0f} KB)")
    if base_rss:
        for n in names:
            if n.startswith("meshgate"):
                print(f"{n}: Envoy RSS +{(results[n]['memory'].get('VmRSS_kB', 0) - base_rss) / 1024:.1f} MB over "
                      f"no filter ({results[n]['memory'].get('wasm_vm_count')} Wasm VMs; "
                      f"signature verification: {results[n].get('signature_verification')})")
    for n, e in ests.items():
        print(f"in-wasm RS256 ({n}) ~ {e['in_wasm_rs256_us']:.0f} us  (Envoy CPU/req crypto wasm "
              f"{e['cpu_us_per_req_wasm']:.0f} - crypto host {e['cpu_us_per_req_host']:.0f} "
              f"+ RS256 verify in OpenSSL {e['host_verify_us_openssl']:.0f})")
    for n in names:
        if "@" in n:
            print(f"{n}: module {results[n]['wasm']['bytes']} bytes")
    if contended:
        print(f"warning: Envoy got less than 85% of core 0 in {', '.join(contended)} (another process competed "
              "for the CPU): req/s ratios are unreliable there; the by-CPU ratios still hold")
    for g, ok in goals.items():
        print(f"goal {g}: {'met' if ok else 'MISSED'}")
    print(f"results: {out}" + ("" if rc == 0 else "   (INVALID runs: see 'problems')"))
    shutil.rmtree(work, ignore_errors=True)
    return rc


def _f(v, w: int, d: int) -> str:
    return f"{v:{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}s}"


def _first_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def _cpu_model() -> str:
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        return m.group(1) if m else "?"
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
