"""Issue "sso" with real parts: headless Chromium (Debian `chromium`, driven by npm playwright-core) opens the app
through Envoy acting as the ingress gateway with the gateway WasmPlugin of istio/ (rendered as istiod renders
it, secrets from the proxy's environment), logs in on the identity provider's own login page, and lands on
the app; the echo backend shows what the app receives.

Providers: the real Keycloak of tests/e2e/keycloak.py (the session fixture `keycloak` of issue "keycloak"),
and the dev IdP (tests/e2e/idp.py), which serves a login form with Keycloak's element ids; the same flow
runs against both. The browser reaches the provider
under its in-cluster name `keycloak.keycloak.svc.cluster.local` (port 80, as in the issuer) through
Chromium's --host-resolver-rules, and the app at http://127.0.0.1:<gateway port> (see browser.py).

Screenshots of the login page and the app page are kept as artifacts in dist/.
"""

from __future__ import annotations

import base64
import copy
import json
import time

import pytest

import harness
import render
from browser import Chromium
from test_istio_manifests import find, kustomize_build

HOST = "keycloak.keycloak.svc.cluster.local"
ISSUER = f"http://{HOST}/realms/myrealm"
ARTIFACTS = harness.REPO / "dist"
GATEWAY_ENV = {"MESHGATE_SSO_CLIENT_SECRET": "gateway-secret",
               "MESHGATE_SSO_COOKIE_SECRET": base64.b64encode(bytes(range(7, 39))).decode()}
SESSION = "meshgate_session"


def claims(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def gateway_plugin() -> dict:
    """The ingress gateway's WasmPlugin exactly as istio/ ships it, but refreshing only once the access token
    has expired (the manifest refreshes 10 s early), so this test sees an expired token being replaced."""
    wp = copy.deepcopy(find(kustomize_build(), "WasmPlugin", "meshgate-gateway", "istio-system"))
    wp["spec"]["pluginConfig"]["oidc"]["refreshBefore"] = "0s"
    return wp


@pytest.fixture()
def dev_provider(idp_clean):
    return idp_clean


def start_gateway(envoy_factory, meshgate_wasm, echo, provider) -> harness.EnvoyProcess:
    cfg = render.render_wasmplugin_envoy(gateway_plugin(), meshgate_wasm, 0, 0, echo.port, provider.clusters())
    return envoy_factory(cfg, env=GATEWAY_ENV)


def keycloak_calls(gw: harness.EnvoyProcess) -> int:
    name = "cluster.outbound|80||keycloak.keycloak.svc.cluster.local.upstream_rq_total"
    return gw.stats(name).get(name, 0)


def echoed(page_state: dict) -> dict:
    assert page_state["status"] == 200, page_state
    return json.loads(page_state["text"])


def login(page, app_url: str, user: str) -> dict:
    at_login = page.goto(app_url)
    assert at_login["url"].startswith(f"{ISSUER}/protocol/openid-connect/auth?"), at_login["url"]
    assert page.exists("#kc-form-login") and page.exists("#kc-login"), at_login["text"][:500]
    page.fill("#username", user)
    page.fill("#password", user)
    return page.submit("#kc-login")


def browser_flow(provider, gw: harness.EnvoyProcess, tmp_path, label: str) -> None:
    app = f"{gw.base_url}/app/dashboard?tab=1"
    with Chromium(host_rules={HOST: provider.port}, workdir=tmp_path / "chromium") as chrome:
        alice = chrome.context("alice")

        # 1. No session: Keycloak's own login page, then the app as alice.
        at_login = alice.goto(app)
        assert at_login["status"] == 200 and at_login["title"] == "Sign in to meshgate demo realm", at_login
        alice.screenshot(ARTIFACTS / f"sso-{label}-login-page.png")
        alice.fill("#username", "alice")
        alice.fill("#password", "alice")
        landed = alice.submit("#kc-login")
        assert landed["url"] == app, landed["url"]
        seen = echoed(landed)
        alice.screenshot(ARTIFACTS / f"sso-{label}-app-page.png")
        assert seen["path"] == "/app/dashboard?tab=1"
        token = seen["headers"]["authorization"].split(" ", 1)[1]
        c = claims(token)
        assert (c["iss"], c["azp"], c["preferred_username"], c["email"]) == (
            ISSUER, "meshgate-gateway", "alice", "user@example.com")
        assert "cookie" not in seen["headers"], "the session cookie never reaches the app"
        cookies = {k["name"]: k for k in alice.cookies() if k["domain"] == "127.0.0.1"}
        assert cookies and all(n == SESSION or n.startswith(f"{SESSION}.") for n in cookies), list(cookies)
        for k in cookies.values():
            assert (k["httpOnly"], k["secure"], k["sameSite"], k["path"]) == (True, True, "Lax", "/"), k

        # 2. Reload: the session, no round trip to the provider.
        calls = keycloak_calls(gw)
        assert echoed(alice.reload())["headers"]["authorization"] == f"Bearer {token}"
        assert keycloak_calls(gw) == calls

        # 3. fetch() from the page: with the session it is forwarded with the token; without a session it
        #    gets 401 (never a redirect a script could not follow).
        got = alice.evaluate("fetch('/api/items', {headers: {accept: 'application/json'}})"
                             ".then(async r => ({status: r.status, body: await r.text()}))")
        assert got["status"] == 200 and json.loads(got["body"])["headers"]["authorization"] == f"Bearer {token}"
        saved = alice.cookies()
        alice.set_cookies([], clear=True)
        got = alice.evaluate("fetch('/api/items').then(async r => ({status: r.status, redirected: r.redirected, "
                             "auth: r.headers.get('www-authenticate'), body: await r.text()}))")
        assert got == {"status": 401, "redirected": False, "auth": f'Bearer realm="{gw.base_url}/api/items"',
                       "body": "Authentication required: sign in with a browser or send a bearer token"}, got
        alice.set_cookies(saved)

        # 4. A tampered session cookie is no session: back to the login page.
        tampered = chrome.context("tampered")
        forged = copy.deepcopy([k for k in saved if k["domain"] == "127.0.0.1"])
        v = forged[0]["value"]
        forged[0]["value"] = v[:20] + ("A" if v[20] != "A" else "B") + v[21:]
        tampered.set_cookies(forged)
        page = tampered.goto(app)
        assert page["url"].startswith(f"{ISSUER}/protocol/openid-connect/auth?") and tampered.exists("#kc-form-login")
        assert not [k for k in tampered.cookies() if k["name"].startswith(SESSION) and k["domain"] == "127.0.0.1"
                    and not k["name"].startswith(f"{SESSION}_login_")], "the forged cookie was cleared"
        tampered.close()

        # 5. bob logs in fine, and the gateway's policy says no.
        bob = chrome.context("bob")
        denied = login(bob, app, "bob")
        assert (denied["url"], denied["status"], denied["text"]) == (app, 403, "RBAC: access denied")
        bob.close()

        # 6. The access token expires: the next request refreshes it and still succeeds.
        time.sleep(max(0.0, c["exp"] + 1 - time.time()))
        before = {k["name"]: k["value"] for k in alice.cookies() if k["domain"] == "127.0.0.1"}
        renewed = echoed(alice.reload())["headers"]["authorization"].split(" ", 1)[1]
        assert renewed != token and claims(renewed)["exp"] > c["exp"]
        assert claims(renewed)["preferred_username"] == "alice"
        after = {k["name"]: k["value"] for k in alice.cookies() if k["domain"] == "127.0.0.1"}
        assert after != before, "the refreshed session is in the cookie"
        stats = gw.stats("wasmcustom.meshgate.sso.")
        assert stats["wasmcustom.meshgate.sso.refresh_ok"] == 1, stats

        # 7. Logout ends the gateway session and the provider's: the next visit asks for the password again.
        out = alice.goto(f"{gw.base_url}/oauth2/logout")
        assert out["url"].startswith(f"{ISSUER}/protocol/openid-connect/auth?"), out["url"]
        assert alice.exists("#kc-form-login"), "the provider's session ended too: no silent login"
        assert not [k for k in alice.cookies() if k["domain"] == "127.0.0.1" and k["name"].startswith(SESSION)
                    and "_login_" not in k["name"]]
        assert stats["wasmcustom.meshgate.sso.callback_ok"] == 2  # alice, bob
        assert gw.stats("wasmcustom.meshgate.sso.logout")["wasmcustom.meshgate.sso.logout"] == 1


def test_browser_sso_with_the_dev_idp(dev_provider, envoy_factory, meshgate_wasm, echo, tmp_path):
    gw = start_gateway(envoy_factory, meshgate_wasm, echo, dev_provider)
    browser_flow(dev_provider, gw, tmp_path, "dev-idp")


def test_browser_sso_with_keycloak(keycloak, envoy_factory, meshgate_wasm, echo, tmp_path):
    """The real Keycloak 26 of tests/e2e/keycloak.py (session fixture `keycloak`, realm export imported,
    hostname keycloak.keycloak.svc.cluster.local): its own login page, its sessions, its refresh and logout."""
    gw = start_gateway(envoy_factory, meshgate_wasm, echo, keycloak)
    browser_flow(keycloak, gw, tmp_path, "keycloak")
