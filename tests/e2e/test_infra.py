"""Proves the e2e infrastructure itself, without the meshgate filter:

* the dev IdP speaks Keycloak (discovery, JWKS, token endpoint grants and errors, authorization-code flow
  with PKCE, refresh, userinfo, logout, test-control endpoints) and its tokens verify with PyJWT;
* the same tokens verify in real Envoy 1.40 with the native `envoy.filters.http.jwt_authn` filter, fetching
  the JWKS through the Istio-named cluster `outbound|80||keycloak.keycloak.svc.cluster.local`;
* render.py's WasmPlugin rendering loads in Envoy (with a tiny hand-assembled proxy-wasm probe module),
  delivers pluginConfig to the VM and maps failStrategy to failure_policy.

Run: /tmp/venvprobe/bin/python -m pytest tests/e2e/test_infra.py -q   (or .venv/bin/python after make setup)
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

import harness
import render
from conftest import make_wasmplugin
from probe_wasm import write_probe_wasm

ISSUER = harness.ISSUER
OIDC = "/protocol/openid-connect"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def verify_with_pyjwt(idp: harness.IdPProcess, token: str, audience: str | None = harness.AUDIENCE,
                      realm: str = harness.REALM) -> dict:
    header = jwt.get_unverified_header(token)
    jwk = next(k for k in idp.jwks(realm)["keys"] if k["kid"] == header["kid"])
    key = jwt.PyJWK(jwk).key
    return jwt.decode(token, key, algorithms=[header["alg"]], audience=audience, issuer=idp.issuer(realm))


# ==========================================================================================================
# dev IdP (no Envoy)
# ==========================================================================================================
def test_realm_file_is_a_keycloak_export():
    realm = json.loads(harness.REALM_FILE.read_text())
    assert realm["realm"] == "myrealm" and realm["enabled"] is True
    assert {r["name"] for r in realm["roles"]["realm"]} >= {"user", "admin"}
    clients = {c["clientId"]: c for c in realm["clients"]}
    assert set(clients) >= {"my-backend-client", "frontend", "meshgate-gateway", "demo-cli"}
    assert clients["frontend"]["serviceAccountsEnabled"] and clients["frontend"]["secret"] == "frontend-secret"
    assert clients["demo-cli"]["publicClient"] and clients["demo-cli"]["directAccessGrantsEnabled"]
    gw = clients["meshgate-gateway"]
    assert gw["standardFlowEnabled"] and gw["secret"] == "gateway-secret"
    assert gw["attributes"]["pkce.code.challenge.method"] == "S256"
    # Keycloak only knows a trailing '*' wildcard; loopback redirect URIs match any port when registered
    # without one (RFC 8252), so no URI here contains '*'.
    assert all("*" not in u for u in gw["redirectUris"])
    for cid in ("frontend", "meshgate-gateway", "demo-cli"):
        mappers = [m for m in clients[cid]["protocolMappers"] if m["protocolMapper"] == "oidc-audience-mapper"]
        assert mappers and mappers[0]["config"]["included.client.audience"] == "my-backend-client"
        assert mappers[0]["config"]["access.token.claim"] == "true"
    users = {u["username"]: u for u in realm["users"]}
    assert users["alice"]["email"] == "user@example.com" and users["alice"]["emailVerified"] is True
    assert users["alice"]["credentials"][0] == {"type": "password", "value": "alice", "temporary": False}
    assert "admin" in users["bob"]["realmRoles"] and "admin" not in users["alice"]["realmRoles"]


def test_discovery_document(idp_clean):
    r = requests.get(idp_clean.local_url(path="/.well-known/openid-configuration"), timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    d = r.json()
    assert d["issuer"] == ISSUER
    assert d["jwks_uri"] == f"{ISSUER}{OIDC}/certs"
    assert d["token_endpoint"] == f"{ISSUER}{OIDC}/token"
    assert d["authorization_endpoint"] == f"{ISSUER}{OIDC}/auth"
    assert d["end_session_endpoint"] == f"{ISSUER}{OIDC}/logout"
    assert d["userinfo_endpoint"] == f"{ISSUER}{OIDC}/userinfo"
    assert "S256" in d["code_challenge_methods_supported"]
    assert {"client_credentials", "password", "authorization_code", "refresh_token"} <= set(d["grant_types_supported"])
    assert "RS256" in d["id_token_signing_alg_values_supported"]
    assert idp_clean.stats()["discovery_fetches"]["myrealm"] == 1


def test_jwks_looks_like_keycloak(idp_clean):
    r = requests.get(idp_clean.local_url(path=f"{OIDC}/certs"), timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    keys = r.json()["keys"]
    enc = [k for k in keys if k.get("use") == "enc"]
    assert len(enc) == 1 and enc[0]["alg"] == "RSA-OAEP" and enc[0]["kty"] == "RSA"
    assert keys[0]["use"] == "enc", "normal mode lists the enc key first (the hard case for JWKS parsers)"
    by_alg = {k["alg"]: k for k in keys if k["use"] == "sig"}
    assert set(by_alg) == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
    rs = by_alg["RS256"]
    assert rs["e"] == "AQAB" and len(base64.urlsafe_b64decode(rs["n"] + "==")) == 256
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", rs["kid"])
    cert = base64.b64decode(rs["x5c"][0])
    assert rs["x5t#S256"] == b64u(hashlib.sha256(cert).digest())
    assert [by_alg[a]["crv"] for a in ("ES256", "ES384", "ES512")] == ["P-256", "P-384", "P-521"]
    assert len(base64.urlsafe_b64decode(by_alg["ES512"]["x"] + "==")) == 66
    assert by_alg["EdDSA"] == {**by_alg["EdDSA"], "kty": "OKP", "crv": "Ed25519"}
    assert idp_clean.stats()["jwks_fetches"]["myrealm"] == 1


def test_client_credentials_token_shape(idp_clean):
    r = idp_clean.token(auth=("frontend", "frontend-secret"), grant_type="client_credentials")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300 and "refresh_token" not in body
    assert body["not-before-policy"] == 0
    token = body["access_token"]
    raw_header = base64.urlsafe_b64decode(token.split(".")[0] + "==").decode()
    assert raw_header.startswith('{"alg":"RS256","typ" : "JWT","kid" : "'), raw_header
    c = verify_with_pyjwt(idp_clean, token)
    assert c["azp"] == "frontend" and c["client_id"] == "frontend"
    assert c["preferred_username"] == "service-account-frontend" and "email" not in c
    assert c["aud"] == ["my-backend-client", "account"]
    assert "default-roles-myrealm" in c["realm_access"]["roles"]
    assert c["typ"] == "Bearer" and c["exp"] - c["iat"] == 300
    # client_secret_post works too
    r2 = idp_clean.token(grant_type="client_credentials", client_id="frontend", client_secret="frontend-secret")
    assert r2.status_code == 200


def test_password_grant_token_shape(idp_clean):
    r = idp_clean.token(grant_type="password", client_id="demo-cli", username="alice", password="alice",
                        scope="openid")
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"access_token", "refresh_token", "id_token", "session_state", "refresh_expires_in"} <= set(body)
    c = verify_with_pyjwt(idp_clean, body["access_token"])
    assert c["sub"] == "9030bd46-21fe-4285-9014-7d3dc7ffaafb"
    assert c["email"] == "user@example.com" and c["email_verified"] is True
    assert c["preferred_username"] == "alice" and c["name"] == "Alice Example"
    assert c["given_name"] == "Alice" and c["family_name"] == "Example"
    assert c["scope"] == "openid email profile"
    assert c["acr"] == "1" and c["sid"] == body["session_state"]
    assert set(c["realm_access"]["roles"]) == {"default-roles-myrealm", "offline_access", "uma_authorization", "user"}
    assert c["resource_access"]["account"]["roles"] == ["manage-account", "manage-account-links", "view-profile"]
    idt = verify_with_pyjwt(idp_clean, body["id_token"], audience="demo-cli")
    assert idt["typ"] == "ID" and idt["at_hash"] == b64u(hashlib.sha256(body["access_token"].encode()).digest()[:16])
    bob = claims_of(idp_clean.password_token("bob"))
    assert "admin" in bob["realm_access"]["roles"]
    assert bob["resource_access"]["my-backend-client"]["roles"] == ["reader", "writer"]
    # refresh
    r = idp_clean.token(grant_type="refresh_token", client_id="demo-cli", refresh_token=body["refresh_token"])
    assert r.status_code == 200 and claims_of(r.json()["access_token"])["sid"] == c["sid"]


@pytest.mark.parametrize(
    "auth,form,status,error",
    [
        (("frontend", "wrong"), {"grant_type": "client_credentials"}, 401, "unauthorized_client"),
        (("nosuchclient", "x"), {"grant_type": "client_credentials"}, 401, "invalid_client"),
        (None, {"grant_type": "password", "client_id": "demo-cli", "username": "alice", "password": "nope"}, 401,
         "invalid_grant"),
        (None, {"grant_type": "password", "client_id": "demo-cli", "username": "mallory", "password": "x"}, 401,
         "invalid_grant"),
        (None, {"grant_type": "client_credentials", "client_id": "demo-cli"}, 401, "unauthorized_client"),
        (("frontend", "frontend-secret"), {"grant_type": "password", "username": "alice", "password": "alice"}, 400,
         "unauthorized_client"),
        (("my-backend-client", "backend-secret"), {"grant_type": "client_credentials"}, 401, "unauthorized_client"),
        (("frontend", "frontend-secret"), {"grant_type": "urn:ietf:params:oauth:grant-type:device_code"}, 400,
         "invalid_grant"),
        (("frontend", "frontend-secret"), {"grant_type": "urn:example:unknown"}, 400, "unsupported_grant_type"),
        (("frontend", "frontend-secret"), {}, 400, "invalid_request"),
        (None, {"grant_type": "password", "client_id": "demo-cli", "username": "alice", "password": "alice",
                "scope": "openid nosuchscope"}, 400, "invalid_scope"),
    ],
)
def test_token_endpoint_errors(idp_clean, auth, form, status, error):
    r = idp_clean.token(auth=auth, **form)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error


ALL_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_mint_verifies_with_pyjwt(idp_clean, alg):
    out = idp_clean.mint_full(alg=alg)
    assert out["header"]["alg"] == alg
    c = verify_with_pyjwt(idp_clean, out["token"])
    assert c["preferred_username"] == "alice"


def test_mint_options(idp_clean):
    # claim overrides and removals, audience override, kid omission, expiry, nbf
    t = idp_clean.mint(claims={"email": None, "groups": ["/dev"]}, audience="other", kid=None, exp_in=-30, nbf_in=10)
    h = jwt.get_unverified_header(t)
    c = claims_of(t)
    assert "kid" not in h and "email" not in c and c["groups"] == ["/dev"] and c["aud"] == "other"
    assert c["exp"] < time.time() and c["nbf"] > time.time()
    # service account shape via mint
    sa = claims_of(idp_clean.mint(service_account=True))
    assert sa["azp"] == "frontend" and sa["preferred_username"] == "service-account-frontend"
    # unpublished key: kid of the published key, signature does not verify
    bad = idp_clean.mint(sign_with="unpublished")
    with pytest.raises(jwt.InvalidSignatureError):
        verify_with_pyjwt(idp_clean, bad)
    # alg none: empty signature
    none = idp_clean.mint(alg="none")
    assert none.endswith(".") and jwt.get_unverified_header(none)["alg"] == "none"
    # alg confusion: HS256 keyed with the RSA public key PEM
    confused = idp_clean.mint_full(alg="HS256-with-rsa-public-key")
    rs = next(k for k in idp_clean.jwks()["keys"] if k["alg"] == "RS256")
    assert confused["header"] == {"alg": "HS256", "typ": "JWT", "kid": rs["kid"]}
    # header overrides
    t2 = idp_clean.mint(header={"typ": "at+jwt", "jku": "http://evil/"})
    assert jwt.get_unverified_header(t2)["jku"] == "http://evil/"
    # other realm: different issuer and keys
    other = idp_clean.mint(realm="otherrealm")
    assert claims_of(other)["iss"] == idp_clean.issuer("otherrealm") != ISSUER
    verify_with_pyjwt(idp_clean, other, realm="otherrealm")


def test_rotation_and_publishing(idp_clean):
    before = {k["kid"] for k in idp_clean.jwks()["keys"] if k["alg"] == "RS256"}
    new_kid = idp_clean.rotate()
    after = {k["kid"] for k in idp_clean.jwks()["keys"] if k["alg"] == "RS256"}
    assert after == before | {new_kid}
    assert jwt.get_unverified_header(idp_clean.mint())["kid"] == new_kid
    hidden = idp_clean.rotate(publish=False)
    assert hidden not in {k["kid"] for k in idp_clean.jwks()["keys"]}
    assert jwt.get_unverified_header(idp_clean.mint())["kid"] == hidden
    idp_clean.publish(hidden)
    assert hidden in {k["kid"] for k in idp_clean.jwks()["keys"]}
    only = idp_clean.rotate(drop_old=True)
    assert [k["kid"] for k in idp_clean.jwks()["keys"] if k["alg"] == "RS256"] == [only]


def test_jwks_modes(idp_clean):
    url = idp_clean.local_url(path=f"{OIDC}/certs")
    idp_clean.jwks_mode("error500")
    assert requests.get(url, timeout=5).status_code == 500
    idp_clean.jwks_mode("garbage")
    r = requests.get(url, timeout=5)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    idp_clean.jwks_mode("empty")
    assert requests.get(url, timeout=5).json() == {"keys": []}
    idp_clean.jwks_mode("keycloak_default")
    assert [(k["alg"], k["use"]) for k in requests.get(url, timeout=5).json()["keys"]] == [("RSA-OAEP", "enc"),
                                                                                        ("RS256", "sig")]
    idp_clean.jwks_mode("slow", delay=0.5)
    t0 = time.monotonic()
    assert requests.get(url, timeout=5).status_code == 200
    assert time.monotonic() - t0 >= 0.45
    assert idp_clean.stats()["jwks_fetches"]["myrealm"] == 5
    idp_clean.reset_stats()
    assert idp_clean.stats()["jwks_fetches"]["myrealm"] == 0


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, b64u(hashlib.sha256(verifier.encode()).digest())


def _login(sess: requests.Session, idp, redirect_uri: str, challenge: str | None, state: str = "st-1",
           user: str = "alice", password: str = "alice") -> requests.Response:
    params = {"client_id": "meshgate-gateway", "response_type": "code", "scope": "openid",
              "redirect_uri": redirect_uri, "state": state, "nonce": "n-1"}
    if challenge:
        params.update({"code_challenge": challenge, "code_challenge_method": "S256"})
    r = sess.get(idp.local_url(path=f"{OIDC}/auth"), params=params, allow_redirects=False, timeout=5)
    if r.status_code != 200:
        return r
    action = re.search(r'action="([^"]+)"', r.text).group(1).replace("&amp;", "&")
    assert 'id="kc-form-login"' in r.text and 'id="kc-login"' in r.text
    return sess.post(idp.base_url + action, data={"username": user, "password": password}, allow_redirects=False,
                     timeout=5)


def test_authorization_code_flow_with_pkce(idp_clean):
    sess = requests.Session()
    redirect_uri = "http://127.0.0.1:18080/oauth2/callback"  # loopback: any port matches the registration
    verifier, challenge = _pkce()

    bad = _login(sess, idp_clean, redirect_uri, challenge, password="wrong")
    assert bad.status_code == 200 and "Invalid username or password." in bad.text

    r = _login(sess, idp_clean, redirect_uri, challenge)
    assert r.status_code == 302, r.text
    loc = urlsplit(r.headers["Location"])
    q = parse_qs(loc.query)
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == redirect_uri
    assert q["state"] == ["st-1"] and q["iss"] == [ISSUER] and "code" in q
    code = q["code"][0]
    gw = ("meshgate-gateway", "gateway-secret")
    wrong = idp_clean.token(auth=gw, grant_type="authorization_code", code=code, redirect_uri=redirect_uri,
                            code_verifier=_pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # codes are single-use: the failed attempt consumed it; log in again (SSO cookie: no form this time)
    r = sess.get(idp_clean.local_url(path=f"{OIDC}/auth"), allow_redirects=False, timeout=5,
                 params={"client_id": "meshgate-gateway", "response_type": "code", "scope": "openid",
                         "redirect_uri": redirect_uri, "state": "st-2", "nonce": "n-2", "code_challenge": challenge,
                         "code_challenge_method": "S256"})
    assert r.status_code == 302
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    ok = idp_clean.token(auth=gw, grant_type="authorization_code", code=code, redirect_uri=redirect_uri,
                         code_verifier=verifier)
    assert ok.status_code == 200, ok.text
    tokens = ok.json()
    at = verify_with_pyjwt(idp_clean, tokens["access_token"])
    assert at["azp"] == "meshgate-gateway" and at["preferred_username"] == "alice"
    assert at["allowed-origins"]  # webOrigins "+"
    idt = verify_with_pyjwt(idp_clean, tokens["id_token"], audience="meshgate-gateway")
    assert idt["nonce"] == "n-2" and idt["acr"] == "0"  # SSO re-authentication: acr 0, like Keycloak
    again = idp_clean.token(auth=gw, grant_type="authorization_code", code=code, redirect_uri=redirect_uri,
                            code_verifier=verifier)
    assert again.status_code == 400

    ui = requests.get(idp_clean.local_url(path=f"{OIDC}/userinfo"), timeout=5,
                      headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert ui.status_code == 200 and ui.json()["email"] == "user@example.com"
    assert requests.get(idp_clean.local_url(path=f"{OIDC}/userinfo"), timeout=5,
                        headers={"Authorization": "Bearer x.y.z"}).status_code == 401

    out = sess.get(idp_clean.local_url(path=f"{OIDC}/logout"), allow_redirects=False, timeout=5,
                   params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": redirect_uri,
                           "state": "bye"})
    assert out.status_code == 302 and out.headers["Location"] == redirect_uri + "?state=bye"
    sess.cookies.clear()
    r = sess.get(idp_clean.local_url(path=f"{OIDC}/auth"), allow_redirects=False, timeout=5,
                 params={"client_id": "meshgate-gateway", "response_type": "code", "redirect_uri": redirect_uri,
                         "code_challenge": challenge, "code_challenge_method": "S256"})
    assert r.status_code == 200  # login form again


@pytest.mark.parametrize(
    "redirect_uri,challenge,expect",
    [
        ("https://evil.example.com/oauth2/callback", True, 400),
        ("http://127.0.0.1:9999/other", True, 400),
        ("https://meshgate.example.com/oauth2/callback", False, "invalid_request"),  # PKCE required
        ("https://meshgate.example.com/oauth2/callback", True, 200),
        ("http://localhost:5555/oauth2/callback", True, 200),
    ],
)
def test_authorization_endpoint_checks(idp_clean, redirect_uri, challenge, expect):
    params = {"client_id": "meshgate-gateway", "response_type": "code", "redirect_uri": redirect_uri}
    if challenge:
        params.update({"code_challenge": _pkce()[1], "code_challenge_method": "S256"})
    r = requests.get(idp_clean.local_url(path=f"{OIDC}/auth"), params=params, allow_redirects=False, timeout=5)
    if isinstance(expect, int):
        assert r.status_code == expect
    else:
        assert r.status_code == 302
        assert parse_qs(urlsplit(r.headers["Location"]).query)["error"] == [expect]


def test_idp_log_has_no_secrets(idp_clean):
    token = idp_clean.client_credentials_token()
    idp_clean.password_token("alice")
    requests.get(idp_clean.local_url(path=f"{OIDC}/userinfo"), headers={"Authorization": f"Bearer {token}"},
                 timeout=5)
    requests.get(idp_clean.local_url(path=f"{OIDC}/certs"), params={"access_token": token}, timeout=5)
    log = idp_clean.log()
    assert "frontend-secret" not in log and token not in log and token.split(".")[1] not in log
    assert "password=" not in log and "access_token=" not in log
    assert '"GET /realms/myrealm/protocol/openid-connect/certs?access_token"' in log


def test_echo_backend(echo):
    r = requests.post(f"{echo.base_url}/a/b?x=1", data=b"hello", headers={"X-Test": "1"}, timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["method"] == "POST" and body["path"] == "/a/b?x=1" and body["headers"]["x-test"] == "1"
    assert body["body"] == "hello"


def test_meshgate_wasm_missing_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MESHGATE_WASM", str(tmp_path / "nope.wasm"))
    with pytest.raises(harness.HarnessError, match="not found"):
        harness.require_meshgate_wasm()


# ==========================================================================================================
# native Envoy jwt_authn against the dev IdP
# ==========================================================================================================
@pytest.fixture(scope="module")
def native_envoy(module_envoy_factory, idp, echo, keycloak_clusters):
    idp.reset()
    cfg = render.render_bootstrap([harness.native_jwt_authn_filter()], 0, 0, echo.port, keycloak_clusters,
                                  access_log_path=str(module_envoy_factory.workdir / "access.log"))
    return module_envoy_factory(cfg)


def start_native(envoy_factory, echo, idp, **provider_fields) -> harness.EnvoyProcess:
    cfg = render.render_bootstrap([harness.native_jwt_authn_filter(**provider_fields)], 0, 0, echo.port,
                                  idp.clusters())
    return envoy_factory(cfg)


def test_native_valid_token_reaches_echo(native_envoy, idp):
    token = idp.mint()
    r = native_envoy.get("/api/things?x=1", token=token)
    assert r.status_code == 200, (r.status_code, r.text, native_envoy.log()[-2000:])
    echoed = r.json()
    assert echoed["path"] == "/api/things?x=1"
    assert echoed["headers"]["authorization"] == f"Bearer {token}"
    assert native_envoy.stats("http.inbound.jwt_authn.")["http.inbound.jwt_authn.jwks_fetch_success"] == 1
    # the JWKS went through the Istio-named cluster
    name = f"cluster.{harness.KEYCLOAK_CLUSTER}.upstream_rq_completed"
    assert native_envoy.stats(name)[name] == 1


def test_native_expired_token(native_envoy, idp):
    r = native_envoy.get("/x", token=idp.mint(exp_in=-120))
    assert r.status_code == 401
    assert r.text == "Jwt is expired"
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="{native_envoy.url("/x")}", error="invalid_token"'


def test_native_missing_token(native_envoy):
    r = native_envoy.get("/x")
    assert r.status_code == 401 and r.text == "Jwt is missing"
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="{native_envoy.url("/x")}"'


def test_native_client_credentials_token(native_envoy, idp):
    assert native_envoy.get("/x", token=idp.client_credentials_token()).status_code == 200


def test_native_password_grant_token(native_envoy, idp):
    assert native_envoy.get("/x", token=idp.password_token("bob")).status_code == 200


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_native_verifies_every_published_alg(native_envoy, idp, alg):
    r = native_envoy.get("/x", token=idp.mint(alg=alg))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "spec,status,body",
    [
        ({"audience": "someone-else"}, 403, "Audiences in Jwt are not allowed"),
        ({"sign_with": "unpublished"}, 401, "Jwt verification fails"),
        ({"kid": "no-such-kid"}, 401, "Jwks doesn't have key to match kid or alg from Jwt"),
        # Envoy 1.40's wording (longer than older jwt_verify_lib's "Jwt is not in the form of
        # Header.Payload.Signature"): an empty signature segment counts as malformed.
        ({"alg": "none"}, 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
        ({"alg": "HS256-with-rsa-public-key"}, 401, "Jwks doesn't have key to match kid or alg from Jwt"),
        ({"alg": "HS256", "hmac_secret": "s3cret"}, 401, "Jwks doesn't have key to match kid or alg from Jwt"),
        # token alg RS512, kid of the RS256 JWK (whose "alg" is RS256): Envoy requires the JWK alg to match
        ({"alg": "RS512", "signing_key": "RS256"}, 401, "Jwks doesn't have key to match kid or alg from Jwt"),
        ({"claims": {"padding": "x" * 17000}}, 200, None),  # jwt_authn has no token size limit
        ({"realm": "otherrealm"}, 401, "Jwt issuer is not configured"),
        ({"nbf_in": 600}, 401, "Jwt not yet valid"),
    ],
)
def test_native_rejections(native_envoy, idp, spec, status, body):
    r = native_envoy.get("/x", token=idp.mint(**spec))
    assert r.status_code == status, r.text
    if body is not None:
        assert r.text == body


@pytest.mark.parametrize("mode", ["normal", "sig_first", "keycloak_default"])
def test_native_jwks_with_rsa_oaep_enc_key(envoy_factory, echo, idp_clean, mode):
    """Keycloak publishes a `use: enc`, `alg: RSA-OAEP` RSA key next to the signing key. Envoy 1.40's
    jwt_verify_lib skips it (also when it is the FIRST key) instead of rejecting the whole set."""
    idp_clean.jwks_mode(mode)
    env = start_native(envoy_factory, echo, idp_clean)
    assert env.get("/x", token=idp_clean.mint()).status_code == 200
    assert idp_clean.stats()["jwks_fetches"]["myrealm"] == 1


def test_native_jwks_outage(envoy_factory, echo, idp_clean):
    idp_clean.jwks_mode("error500")
    env = start_native(envoy_factory, echo, idp_clean)
    r = env.get("/x", token=idp_clean.mint())
    assert r.status_code == 401 and r.text == "Jwks remote fetch is failed"
    assert env.stats("http.inbound.jwt_authn.")["http.inbound.jwt_authn.jwks_fetch_failed"] >= 1


@pytest.mark.parametrize("token,body", [
    ("abc.def", "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
    ("eyJhbGciOiJSUzI1NiJ9.!!!.sig", "Jwt payload is an invalid Base64url encoded"),
])
def test_native_malformed_tokens(native_envoy, token, body):
    r = native_envoy.get("/x", token=token)
    assert r.status_code == 401 and r.text == body


def test_native_rotation_needs_refetch(envoy_factory, echo, idp_clean):
    """Envoy does not refetch on an unknown kid: a token signed by a freshly rotated key fails until the
    cached JWKS expires (here: never within the test)."""
    env = start_native(envoy_factory, echo, idp_clean)
    assert env.get("/x", token=idp_clean.mint()).status_code == 200
    idp_clean.rotate()
    r = env.get("/x", token=idp_clean.mint())
    assert r.status_code == 401 and r.text == "Jwks doesn't have key to match kid or alg from Jwt"
    assert idp_clean.stats()["jwks_fetches"]["myrealm"] == 1


# ==========================================================================================================
# WasmPlugin rendering (probe module instead of the meshgate filter)
# ==========================================================================================================
@pytest.fixture(scope="module")
def probe_wasm(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("probe")
    return {
        "ok": write_probe_wasm(str(d / "probe.wasm")),
        "trap": write_probe_wasm(str(d / "trap.wasm"), trap_on_request=True),
        "configure_fails": write_probe_wasm(str(d / "cfgfail.wasm"), configure_ok=False),
    }


def test_render_wasmplugin_shape():
    wp = make_wasmplugin({"issuers": [{"issuer": ISSUER, "n": 2.0}], "a": True}, phase="AUTHN",
                         fail_strategy="FAIL_OPEN",
                         env=[{"name": "MODE", "value": "strict"}, {"name": "POD_IP", "valueFrom": "HOST"}])
    cfg = render.render_wasmplugin_envoy(wp, "/m.wasm", 1, 2, 3, {harness.KEYCLOAK_CLUSTER: ("127.0.0.1", 4)},
                                         jwt_authn=[harness.native_jwt_authn_filter()])
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["extensions.istio.io/wasmplugin/istio-system.meshgate", "envoy.filters.http.jwt_authn",
                     "envoy.filters.http.router"]
    pc = hcm["http_filters"][0]["typed_config"]["config"]
    assert hcm["http_filters"][0]["typed_config"]["@type"] == render.WASM_FILTER_TYPE
    assert pc["name"] == "istio-system.meshgate" and pc["root_id"] == "meshgate"
    assert pc["configuration"] == {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                   "value": '{"a":true,"issuers":[{"issuer":"%s","n":2}]}' % ISSUER}
    assert pc["vm_config"] == {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": "/m.wasm"}},
                               "environment_variables": {"key_values": {"MODE": "strict"},
                                                         "host_env_keys": ["POD_IP"]}}
    assert pc["failure_policy"] == "FAIL_OPEN" and "vm_id" not in pc["vm_config"]
    assert hcm["stat_prefix"] == "inbound" and hcm["use_remote_address"] is False
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    assert set(clusters) == {"inbound|8080||", harness.KEYCLOAK_CLUSTER}
    # phases: AUTHZ goes after jwt_authn, UNSPECIFIED last; default failStrategy -> FAIL_CLOSED
    filters = render.assemble_http_filters(
        [make_wasmplugin({}, name="z", phase="UNSPECIFIED_PHASE"), make_wasmplugin({}, name="b", phase="AUTHZ"),
         make_wasmplugin({}, name="a", phase="AUTHN", priority=1), make_wasmplugin({}, name="c", phase="AUTHN",
                                                                                 priority=10)],
        "/m.wasm", jwt_authn=[{"name": "jwt"}], rbac=[{"name": "rbac"}])
    assert [f["name"].rsplit(".", 1)[-1] for f in filters] == ["c", "a", "jwt", "b", "rbac", "z", "router"]
    assert filters[0]["typed_config"]["config"]["failure_policy"] == "FAIL_CLOSED"
    assert "configuration" not in filters[0]["typed_config"]["config"]  # empty pluginConfig -> no Any


def test_render_validates_with_envoy(probe_wasm, tmp_path):
    cfg = render.render_wasmplugin_envoy(make_wasmplugin({"x": 1}), probe_wasm["ok"], 0, 0, 9,
                                         {harness.KEYCLOAK_CLUSTER: ("127.0.0.1", 9)})
    ok, out = harness.validate_envoy_config(cfg, workdir=tmp_path)
    assert ok, out
    # validate mode instantiates the VM: a module that is not proxy-wasm fails validation
    (tmp_path / "empty.wasm").write_bytes(b"\0asm\x01\0\0\0")
    cfg = render.render_wasmplugin_envoy(make_wasmplugin({"x": 1}), str(tmp_path / "empty.wasm"), 0, 0, 9, {})
    ok, out = harness.validate_envoy_config(cfg, workdir=tmp_path)
    assert not ok and "Missing or unknown Proxy-Wasm ABI version" in out


def test_wasmplugin_config_reaches_vm(envoy_factory, echo, probe_wasm):
    plugin_config = {"issuers": [{"issuer": ISSUER, "jwks_cluster": harness.KEYCLOAK_CLUSTER}], "ttl": 300}
    cfg = render.render_wasmplugin_envoy(make_wasmplugin(plugin_config), probe_wasm["ok"], 0, 0, echo.port, {})
    env = envoy_factory(cfg)
    r = env.get("/hello")
    assert r.status_code == 200
    assert json.loads(r.json()["headers"]["x-probe-config"]) == plugin_config
    env.get("/hello")
    # metrics defined by a plugin appear under the `wasmcustom.` prefix
    assert env.stats("wasmcustom.") == {"wasmcustom.probe_requests": 2}


@pytest.mark.parametrize("strategy,expect", [("FAIL_CLOSE", [503, 503, 503]), ("FAIL_OPEN", [503, 200, 200])])
def test_failure_policy_on_vm_crash(envoy_factory, echo, probe_wasm, strategy, expect):
    """A trap in on_request_headers: FAIL_CLOSED answers 503 from then on; FAIL_OPEN answers 503 for the
    request that crashed the VM and then bypasses the filter."""
    cfg = render.render_wasmplugin_envoy(make_wasmplugin({"a": 1}, fail_strategy=strategy), probe_wasm["trap"], 0, 0,
                                         echo.port, {})
    env = envoy_factory(cfg)
    assert [env.get("/x").status_code for _ in expect] == expect


def test_fail_reload_recreates_vm(envoy_factory, echo, probe_wasm):
    """FAIL_RELOAD: the crashed VM is recreated (with backoff) on later requests; this module traps again."""
    cfg = render.render_wasmplugin_envoy(make_wasmplugin({"a": 1}, fail_strategy="FAIL_RELOAD"), probe_wasm["trap"],
                                         0, 0, echo.port, {})
    env = envoy_factory(cfg)
    stat = "wasm.istio-system.meshgate.vm_reload_success"

    def reloaded() -> bool:
        assert env.get("/x").status_code == 503
        return env.stats(stat)[stat] >= 1

    harness.wait_until(reloaded, timeout=10, interval=0.3, desc="a VM reload")


@pytest.mark.parametrize("strategy", ["FAIL_CLOSE", "FAIL_OPEN"])
def test_on_configure_failure_is_fatal_for_static_config(envoy_factory, probe_wasm, strategy):
    """on_configure returning false makes Envoy reject the config at startup, whatever failure_policy says."""
    cfg = render.render_wasmplugin_envoy(make_wasmplugin({"a": 1}, fail_strategy=strategy),
                                         probe_wasm["configure_fails"], 0, 0, 9, {})
    with pytest.raises(harness.HarnessError, match="Unable to create Wasm plugin istio-system.meshgate"):
        envoy_factory(cfg, timeout=15)


def test_envoy_start_failure_reports_log_tail(envoy_factory, tmp_path):
    cfg = render.render_bootstrap([], 0, 0, 9, {})
    cfg["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    with pytest.raises(harness.HarnessError, match="envoy exited"):
        envoy_factory(cfg, timeout=15)


def test_find_envoy_prefers_env(monkeypatch):
    real = harness.find_envoy()
    monkeypatch.setenv("ENVOY_BIN", real)
    assert harness.find_envoy() == real
    monkeypatch.setenv("ENVOY_BIN", str(Path("/nonexistent/envoy")))
    with pytest.raises(harness.HarnessError):
        harness.find_envoy()
