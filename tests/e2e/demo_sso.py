"""The single sign-on part of `make run` (demo.py): a second Envoy playing the Istio ingress gateway, with the
gateway WasmPlugin of istio/meshgate/ as it is shipped (the `oidc` block, the web-app-users policy; secrets
in the proxy's environment, as the manifests' `vmConfig.env: HOST` expects). It prints the URL to open in a
browser and the users, then checks the flow itself over HTTP (the login page, alice's session, bob's 403,
a fetch without a session) and prints one line per check.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import yaml

import harness
import render
from sso_http import HttpBrowser

GATEWAY_PLUGIN = harness.REPO / "istio" / "meshgate" / "wasmplugin-gateway.yaml"
KEYCLOAK_HOST = "keycloak.keycloak.svc.cluster.local"


def gateway_plugin(issuer: str) -> dict:
    """The shipped gateway WasmPlugin, with `issuer` when the provider writes another one."""
    wp = yaml.safe_load(GATEWAY_PLUGIN.read_text())
    cfg = wp["spec"]["pluginConfig"]
    shipped = cfg["oidc"]["issuer"]
    if issuer != shipped:
        for rule in cfg["jwtRules"]:
            if rule["issuer"] == shipped:
                rule["issuer"] = issuer
                rule["jwksUri"] = rule["jwksUri"].replace(shipped, issuer)
        cfg["oidc"]["issuer"] = issuer
    return wp


def start_gateway(wasm: str, work: Path, issuer: str, cluster: str, provider: tuple[str, int],
                  echo: harness.EchoProcess, port: int = 0) -> harness.EnvoyProcess:
    env = {"MESHGATE_SSO_CLIENT_SECRET": "gateway-secret",  # the realm export's demo value
           "MESHGATE_SSO_COOKIE_SECRET": base64.b64encode(os.urandom(32)).decode()}
    cfg = render.render_wasmplugin_envoy(gateway_plugin(issuer), wasm, port, 0, echo.port, {cluster: provider})
    return harness.start_envoy(cfg, workdir=work / "gateway", env=env)


def show_and_check(gw: harness.EnvoyProcess, issuer: str, provider: tuple[str, int]) -> bool:
    """Prints how to use the SSO demo and checks it; True when every check passed."""
    app = f"http://localhost:{gw.listen_port}/"
    host = urlsplit(issuer).hostname or KEYCLOAK_HOST
    rule = f"MAP {host} {provider[0]}:{provider[1]}"
    print(f"\nBrowser single sign-on at the gateway: Envoy on {gw.base_url} plays the Istio ingress gateway "
          f"with istio/meshgate/wasmplugin-gateway.yaml (admin http://127.0.0.1:{gw.admin_port}).")
    print(f"  Open {app} in a browser and sign in on Keycloak's login page:")
    print("    alice / alice  -> the app (the echo backend shows the request with alice's access token)")
    print("    bob / bob      -> 403 RBAC: access denied (policy web-app-users: email user@example.com only)")
    print(f"    {app}oauth2/logout ends both sessions (the gateway's and the provider's).")
    print(f"  The login page is served under the issuer's host {host}; a browser reaches it with that name "
          f"mapped to {provider[0]}:{provider[1]}, e.g.")
    print(f"    chromium --user-data-dir=$(mktemp -d) {shlex.quote('--host-resolver-rules=' + rule)} {app}")
    print(f"  (or /etc/hosts: 127.0.0.1 {host}, with the provider on port 80). Session cookies are Secure: "
          "browsers accept them on http://localhost.")
    ok = True

    def check(what: str, good: bool, detail: str = "") -> None:
        nonlocal ok
        ok &= good
        print(f"# {what}\n  -> {detail}  [{'sso ok' if good else 'SSO UNEXPECTED'}]")

    b = HttpBrowser(gw.base_url, f"http://{provider[0]}:{provider[1]}")
    r = b.get("/")
    check("page load without a session: to the login page", r.status_code == 302
          and r.headers.get("Location", "").startswith(f"{issuer}/protocol/openid-connect/auth?"),
          f"{r.status_code} Location: {r.headers.get('Location', '')[:70]}...")
    seen = b.login("/app", "alice")
    token = seen.json()["headers"].get("authorization", "") if seen.status_code == 200 else ""
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==")) if token.count(".") == 2 else {}
    check("alice signs in: the app gets her access token, not the session cookie", seen.status_code == 200
          and payload.get("preferred_username") == "alice" and "cookie" not in seen.json()["headers"],
          f"{seen.status_code}, Authorization: Bearer <token of {payload.get('preferred_username')}>")
    denied = HttpBrowser(gw.base_url, f"http://{provider[0]}:{provider[1]}").login("/app", "bob")
    check("bob signs in: the gateway's policy says no", denied.status_code == 403,
          f"{denied.status_code} {denied.text[:40]!r}")
    xhr = HttpBrowser(gw.base_url, "").get("/api/data", accept="application/json")
    check("fetch/XHR without a session: 401, never a redirect", xhr.status_code == 401
          and "Location" not in xhr.headers, f"{xhr.status_code} {xhr.text[:60]!r}")
    out = b.get("/oauth2/logout")
    check("logout: session cookies cleared, on to the provider's end-session endpoint", out.status_code == 302
          and not [n for n in b.jar if "_login_" not in n]  # (the unfinished first login's cookie may stay)
          and "/protocol/openid-connect/logout?" in out.headers.get("Location", ""),
          f"{out.status_code} Location: {out.headers.get('Location', '')[:70]}...")
    stats = {k.removeprefix("wasmcustom.meshgate."): v for k, v in gw.stats("wasmcustom.meshgate.sso").items() if v}
    print(f"single sign-on counters: {json.dumps(stats)}")
    return ok
