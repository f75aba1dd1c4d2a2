"""Issue "sso" in a real Envoy with the dev IdP: the browser single sign-on flow at HTTP level (login page,
callback, session cookie, refresh, logout), what the upstream receives, every rejection, and the provider
faults a real Keycloak cannot be made to produce on demand (token endpoint down, slow, garbage). The
secrets reach the Wasm VM as WasmPlugin `vmConfig.env`, like the ingress-gateway manifest.

The "browser" here is `requests` plus a cookie jar kept by hand (sso_http.py), so every Set-Cookie attribute
is checked as sent. test_sso_browser.py drives real Chromium.
"""

from __future__ import annotations

import base64
import json
import re
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

import harness
from sso_http import HTML, HttpBrowser, set_cookies

AUD = "my-backend-client"
CLIENT = "meshgate-gateway"
CLIENT_SECRET = "gateway-secret"
COOKIE_KEY = base64.b64encode(bytes(range(1, 33))).decode()
OTHER_KEY = base64.b64encode(bytes(range(101, 133))).decode()
SESSION = "meshgate_session"
ENV = [{"name": "MESHGATE_SSO_CLIENT_SECRET", "value": CLIENT_SECRET},
       {"name": "MESHGATE_SSO_COOKIE_SECRET", "value": COOKIE_KEY}]
UNAVAILABLE = "Identity provider unavailable; try again later"
NO_PENDING = ("Login failed: no login in progress for this state in this browser (expired, or started elsewhere); "
              "open the page again to sign in")


def sso_config(idp, **oidc) -> dict:
    cfg = {
        "jwtRules": [{"issuer": idp.issuer(), "jwksUri": idp.jwks_uri(), "audiences": [AUD],
                      "forwardOriginalToken": True}],
        "policies": [{"name": "web-app-users", "action": "ALLOW", "rules": [{"when": [
            {"key": "request.auth.claims[realm_access][roles]", "values": ["user"]},
            {"key": "request.auth.claims[email]", "values": ["user@example.com"]}]}]}],
        "oidc": {"issuer": idp.issuer(), "clientId": CLIENT, "clientSecretEnv": "MESHGATE_SSO_CLIENT_SECRET",
                 "cookieSecretEnv": "MESHGATE_SSO_COOKIE_SECRET", "scopes": ["openid", "email", "profile"],
                 "passThroughPaths": ["/healthz"], "timeout": "2s", "refreshBefore": "10s"},
    }
    cfg["oidc"].update(oidc)
    return cfg


def claims(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


class Browser(HttpBrowser):
    """The HTTP-level browser (sso_http.py) between this test's gateway and the dev IdP."""

    def __init__(self, gw: harness.EnvoyProcess, idp: harness.IdPProcess):
        super().__init__(gw.base_url, idp.base_url)
        self.gw = gw
        self.idp = idp

    def to_idp(self, location: str, user: str, password: str | None = None) -> requests.Response:
        return self.to_provider(location, user, password)


@pytest.fixture()
def idp_sso(idp_clean):
    """The session IdP with the token endpoint's fault mode reset after the test."""
    try:
        yield idp_clean
    finally:
        idp_clean._admin("POST", "token-mode", params={"mode": "normal"})


def token_mode(idp, mode: str, delay: float | None = None) -> None:
    params = {"mode": mode}
    if delay is not None:
        params["delay"] = delay
    idp._admin("POST", "token-mode", params=params)


@pytest.fixture()
def gw(start_meshgate, idp_sso):
    return start_meshgate(sso_config(idp_sso), env=ENV)


def sso_stats(gw) -> dict[str, int]:
    return {k[len("wasmcustom.meshgate.sso."):]: v for k, v in gw.stats("wasmcustom.meshgate.sso.").items()}


# ----------------------------------------------------------------------------------------------------------
def test_login_session_and_what_the_upstream_receives(gw, idp_sso):
    b = Browser(gw, idp_sso)
    r = b.get("/app/page?tab=2")
    assert r.status_code == 302
    assert r.headers["Cache-Control"] == "no-store"
    loc = urlsplit(r.headers["Location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == f"{idp_sso.issuer()}/protocol/openid-connect/auth"
    q = {k: v[0] for k, v in parse_qs(loc.query).items()}
    assert q["client_id"] == CLIENT and q["response_type"] == "code"
    assert q["redirect_uri"] == f"{gw.base_url}/oauth2/callback"
    assert q["scope"] == "openid email profile" and q["code_challenge_method"] == "S256"
    assert all(len(q[k]) == 43 for k in ("state", "nonce", "code_challenge"))
    (pending,) = set_cookies(r)
    assert re.fullmatch(rf"{SESSION}_login_{re.escape(q['state'][:16])}=[A-Za-z0-9_-]+; Path=/oauth2/callback; "
                        r"Max-Age=600; HttpOnly; SameSite=Lax; Secure", pending), pending

    back = b.callback(b.to_idp(r.headers["Location"], "alice"))
    assert back.status_code == 302 and back.headers["Location"] == "/app/page?tab=2"
    cookies = set_cookies(back)
    assert cookies[0].startswith(f"{SESSION}_login_{q['state'][:16]}=; Path=/oauth2/callback; Max-Age=0")
    session = [c for c in cookies[1:] if c.startswith(SESSION)]
    assert session and all(len(c) < 4000 for c in session), [len(c) for c in session]
    assert all(c.endswith("; Path=/; Max-Age=28800; HttpOnly; SameSite=Lax; Secure") for c in session)
    assert list(b.jar) == [c.split("=")[0] for c in session], "only the session cookie(s) remain"

    tokens_before = idp_sso.stats()["token_requests"]["myrealm"]
    seen = b.get("/app/page?tab=2", extra_cookies="theme=dark")
    assert seen.status_code == 200, seen.text
    echoed = seen.json()
    assert echoed["path"] == "/app/page?tab=2"
    auth = echoed["headers"]["authorization"]
    assert auth.startswith("Bearer ")
    c = claims(auth[len("Bearer "):])
    assert (c["iss"], c["azp"], c["preferred_username"], c["email"]) == (
        idp_sso.issuer(), CLIENT, "alice", "user@example.com")
    assert echoed["headers"]["cookie"] == "theme=dark", "the session cookie never reaches the upstream"
    # Reloads use the session: no call to the IdP.
    for _ in range(3):
        assert b.get("/app/page?tab=2").json()["headers"]["authorization"] == auth
    assert idp_sso.stats()["token_requests"]["myrealm"] == tokens_before
    st = sso_stats(gw)
    assert (st["login_started"], st["callback_ok"], st["session_forwarded"]) == (1, 1, 4), st
    assert gw.stats("wasmcustom.meshgate.allowed")["wasmcustom.meshgate.allowed"] == 4


def test_the_policy_denies_bob(gw, idp_sso):
    r = Browser(gw, idp_sso).login("/", user="bob")
    assert (r.status_code, r.text) == (403, "RBAC: access denied")


def test_api_clients_xhr_and_pass_through(gw, idp_sso):
    b = Browser(gw, idp_sso)
    for method, accept in [("GET", "application/json"), ("GET", "*/*"), ("POST", HTML)]:
        r = b.get("/api/data", accept=accept, method=method)
        assert r.status_code == 401, (method, accept, r.status_code)
        assert r.text == "Authentication required: sign in with a browser or send a bearer token"
        assert r.headers["WWW-Authenticate"] == f'Bearer realm="{gw.base_url}/api/data"'
        assert "Location" not in r.headers
    # An API client with its own token never meets single sign-on.
    token = idp_sso.password_token("alice")
    r = gw.get("/api/data", token=token, headers={"Accept": HTML})
    assert r.status_code == 200 and r.json()["headers"]["authorization"] == f"Bearer {token}"
    r = gw.get("/api/data", token="garbage")
    assert r.status_code == 401 and r.text.startswith("Jwt is not in the form")
    # Pass-through: no login; the policies decide (no token: 403).
    assert (gw.get("/healthz", headers={"Accept": HTML}).status_code, sso_stats(gw)["login_started"]) == (403, 0)
    assert sso_stats(gw)["denied.login_required"] == 3


def test_refresh_ok_failed_and_rejected(start_meshgate, idp_sso):
    """The gateway client's tokens live 30 s (realm export); a refresh comes at most half a token's life early,
    so three browsers logged in together all need one 15 s into their session."""
    gw = start_meshgate(sso_config(idp_sso, refreshBefore="20s"), env=ENV)
    ok, failing, ended = (Browser(gw, idp_sso) for _ in range(3))
    first = {b: b.login("/").json()["headers"]["authorization"] for b in (ok, failing, ended)}
    c = claims(first[ok].split()[1])
    assert c["exp"] - c["iat"] == 30
    # `ended` logs out at the IdP directly (another tab, another app): its refresh token dies with it.
    r = ended.provider_get(f"{idp_sso.issuer()}/protocol/openid-connect/logout")
    assert r.status_code == 200 and "You are logged out" in r.text
    assert ok.get("/").json()["headers"]["authorization"] == first[ok], "no refresh before half the life"
    # Each browser's refresh is due half its own token's life after that token was issued.
    due = max(claims(t.split()[1])["iat"] for t in first.values()) + 15.2
    time.sleep(max(0.0, due - time.time()))

    # 1. Refresh: the request carries the new token and the response sets the new session cookie.
    old_jar = dict(ok.jar)
    r = ok.get("/")
    assert r.status_code == 200
    second = r.json()["headers"]["authorization"]
    assert second != first[ok] and claims(second.split()[1])["exp"] > c["exp"]
    renewed = set_cookies(r)
    assert renewed and all(x.startswith(SESSION) and "; Max-Age=0;" not in x for x in renewed), renewed
    assert ok.jar != old_jar
    assert ok.get("/").json()["headers"]["authorization"] == second, "the new cookie holds the new token"

    # 2. Token endpoint failing while the access token is still valid: the request goes through with it.
    token_mode(idp_sso, "error500")
    r = failing.get("/")
    assert (r.status_code, r.json()["headers"]["authorization"]) == (200, first[failing])
    assert set_cookies(r) == []
    token_mode(idp_sso, "normal")

    # 3. The refresh is refused (IdP session over): the gateway session ends too, even with time left.
    r = ended.get("/")
    assert r.status_code == 302 and "/protocol/openid-connect/auth?" in r.headers["Location"]
    assert any(x.startswith(SESSION) and "; Max-Age=0;" in x for x in set_cookies(r))
    assert ended.get("/api", accept="application/json").status_code == 401
    st = sso_stats(gw)
    assert (st["refresh_ok"], st["refresh_failed"], st["refresh_rejected"]) == (1, 1, 1), st


def test_logout_ends_both_sessions(gw, idp_sso):
    b = Browser(gw, idp_sso)
    b.login("/")
    r = b.get("/oauth2/logout")
    assert r.status_code == 302
    loc = urlsplit(r.headers["Location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == f"{idp_sso.issuer()}/protocol/openid-connect/logout"
    q = {k: v[0] for k, v in parse_qs(loc.query).items()}
    assert q["post_logout_redirect_uri"] == f"{gw.base_url}/" and q["client_id"] == CLIENT
    assert claims(q["id_token_hint"])["aud"] == CLIENT
    assert b.jar == {}, "every session cookie cleared"
    at_idp = b.provider_get(r.headers["Location"])
    assert at_idp.status_code == 302 and at_idp.headers["Location"] == f"{gw.base_url}/"
    # Next visit: a new login, and the IdP asks for the password again (its session ended too).
    again = b.get("/")
    assert again.status_code == 302
    form = b.provider_get(again.headers["Location"])
    assert form.status_code == 200 and 'id="kc-form-login"' in form.text
    assert sso_stats(gw)["logout"] == 1


def test_tampered_and_foreign_cookies_lead_back_to_login(gw, idp_sso, start_meshgate):
    b = Browser(gw, idp_sso)
    b.login("/")
    name, (value, path) = next(iter(b.jar.items()))
    flipped = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
    other_gw = start_meshgate(sso_config(idp_sso), env=[ENV[0], {"name": ENV[1]["name"], "value": OTHER_KEY}])
    foreign = Browser(other_gw, idp_sso)
    foreign.login("/")
    for bad in (flipped, value[:-5], "garbage", next(iter(foreign.jar.values()))[0]):
        t = Browser(gw, idp_sso)
        t.jar = {name: (bad, path)}
        r = t.get("/")
        assert r.status_code == 302 and "/protocol/openid-connect/auth?" in r.headers["Location"]
        assert f"{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure" in set_cookies(r)
        assert t.get("/api", accept="application/json").status_code == 401
    assert sso_stats(gw)["session_invalid"] >= 4
    assert b.get("/").status_code == 200, "the untouched cookie still works"


def test_callback_rejections(gw, idp_sso):
    b = Browser(gw, idp_sso)
    r = b.get("/")
    idp_redirect = b.to_idp(r.headers["Location"], "alice")
    callback = urlsplit(idp_redirect.headers["Location"])
    path = f"{callback.path}?{callback.query}"
    pending = dict(b.jar)
    # Another browser (no pending-login cookie) with this callback URL.
    stranger = Browser(gw, idp_sso)
    r = stranger.get(path)
    assert (r.status_code, r.text) == (401, NO_PENDING)
    # This browser: the login completes; replaying the same callback with the old cookie is refused.
    assert b.get(path).status_code == 302
    replay = Browser(gw, idp_sso)
    replay.jar = pending
    r = replay.get(path)
    assert (r.status_code, r.text) == (401, "Login failed: this login response was already used")
    # The provider's error is shown by its code only.
    b2 = Browser(gw, idp_sso)
    state = parse_qs(urlsplit(b2.get("/").headers["Location"]).query)["state"][0]
    r = b2.get("/oauth2/callback?" + urlencode({"error": "access_denied", "error_description": "<b>no</b>",
                                                  "state": state}))
    assert (r.status_code, r.text) == (401, "Login failed at the identity provider: access_denied")
    assert b2.jar == {}, "the pending login is cleared"
    st = sso_stats(gw)
    assert (st["denied.no_pending_login"], st["denied.replayed"], st["denied.provider_error"]) == (1, 1, 1), st


@pytest.mark.parametrize("mode,delay", [("error500", None), ("garbage", None), ("reset", None), ("slow", 3.5)])
def test_token_endpoint_faults_are_502_and_bounded(gw, idp_sso, mode, delay):
    b = Browser(gw, idp_sso)
    r = b.get("/")
    idp_redirect = b.to_idp(r.headers["Location"], "alice")
    token_mode(idp_sso, mode, delay)
    t0 = time.monotonic()
    r = b.callback(idp_redirect)
    elapsed = time.monotonic() - t0
    assert (r.status_code, r.text) == (502, UNAVAILABLE)
    assert elapsed < 2 + 1 + 1.5, f"bounded by timeout (2 s) + grace: {elapsed:.1f} s"
    assert not [c for c in set_cookies(r) if c.startswith(f"{SESSION}=")], "no session"
    assert sso_stats(gw)["denied.provider_unavailable"] == 1
    harness.wait_until(lambda: "token endpoint code exchange failed" in gw.log(), timeout=5, desc="the failure logged")
    # The provider recovers: a new login works.
    token_mode(idp_sso, "normal")
    assert Browser(gw, idp_sso).login("/").status_code == 200


def test_nothing_secret_in_the_log(gw, idp_sso):
    b = Browser(gw, idp_sso)
    r = b.get("/")
    idp_redirect = b.to_idp(r.headers["Location"], "alice")
    code = parse_qs(urlsplit(idp_redirect.headers["Location"]).query)["code"][0]
    b.callback(idp_redirect)
    seen = b.get("/").json()["headers"]
    b.get("/oauth2/logout")
    log = gw.log()
    assert "single sign-on for client \"meshgate-gateway\"" in log
    token = seen["authorization"].split()[1]
    secrets_ = [code, token, token.split(".")[2], CLIENT_SECRET, COOKIE_KEY] + [v for v, _ in b.jar.values()]
    for s in secrets_:
        assert s not in log
    for c in set_cookies(r):
        assert c.split(";")[0].split("=", 1)[1] not in log


def test_secrets_from_the_environment_must_exist(envoy_factory, idp, echo, meshgate_wasm):
    from conftest import make_wasmplugin
    import render

    wp = make_wasmplugin(sso_config(idp), env=[ENV[0]])  # the cookie key variable is missing
    cfg = render.render_wasmplugin_envoy(wp, meshgate_wasm, 0, 0, echo.port, idp.clusters())
    with pytest.raises(harness.HarnessError) as e:
        envoy_factory(cfg, timeout=15)
    assert ('invalid configuration: oidc.cookieSecretEnv: environment variable "MESHGATE_SSO_COOKIE_SECRET" of '
            "the Wasm VM is not set or empty") in str(e.value)


# ----------------------------------------------------------------------------------------------------------
# The session cookie format, written by an independent implementation (HChaCha20 here + `cryptography`'s
# ChaCha20-Poly1305 = XChaCha20-Poly1305), as README.md documents it.
def _hchacha20(key: bytes, nonce16: bytes) -> bytes:
    import struct

    def rotl(v: int, n: int) -> int:
        return ((v << n) & 0xFFFFFFFF) | (v >> (32 - n))

    s = list(struct.unpack("<4I", b"expand 32-byte k")) + list(struct.unpack("<8I", key)) + \
        list(struct.unpack("<4I", nonce16))

    def qr(a: int, b: int, c: int, d: int) -> None:
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 16)  # noqa: E702
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 12)  # noqa: E702
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 8)  # noqa: E702
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 7)  # noqa: E702

    for _ in range(10):
        qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)  # noqa: E702
        qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)  # noqa: E702
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def seal_session(key_b64: str, access: str, *, version: int = 1, cookie_name: str = SESSION,
                 refresh: str = "", id_token: str = "") -> str:
    import os
    import struct
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    now = int(time.time())
    lp = lambda b: struct.pack(">H", len(b)) + b  # noqa: E731
    plain = (b"S" + struct.pack(">QQQQ", now, now, claims(access)["exp"], 0)
             + lp(access.encode()) + lp(refresh.encode()) + lp(id_token.encode()))
    nonce = os.urandom(24)
    aad = b"meshgate\0" + bytes([version]) + b"session\0" + cookie_name.encode()
    sub = _hchacha20(base64.b64decode(key_b64), nonce[:16])
    ct = ChaCha20Poly1305(sub).encrypt(b"\0\0\0\0" + nonce[16:], plain, aad)
    return base64.urlsafe_b64encode(bytes([version]) + nonce + ct).rstrip(b"=").decode()


def test_hchacha20_matches_the_draft_vector():
    # draft-irtf-cfrg-xchacha-03 §2.2.1
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    assert _hchacha20(key, nonce).hex() == "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"


def test_a_session_sealed_by_another_implementation_of_the_format_is_accepted(gw, idp_sso):
    access = idp_sso.mint(user="alice", client=CLIENT, scope="openid email profile")
    good = seal_session(COOKIE_KEY, access)
    r = gw.get("/app", headers={"Cookie": f"{SESSION}={good}", "Accept": HTML})
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["authorization"] == f"Bearer {access}"
    # Another version byte, another cookie name in the additional data, another key: no session.
    for bad in (seal_session(COOKIE_KEY, access, version=2), seal_session(COOKIE_KEY, access, cookie_name="x"),
                seal_session(OTHER_KEY, access)):
        r = gw.get("/app", headers={"Cookie": f"{SESSION}={bad}", "Accept": HTML})
        assert r.status_code == 302 and "/protocol/openid-connect/auth?" in r.headers["Location"]
