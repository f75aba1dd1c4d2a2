"""Issue "keycloak": meshgate in Envoy against a real Keycloak (keycloak.py; one per pytest session).

The session Keycloak imported istio/keycloak/realm-myrealm.json with `--import-realm`, so these tests check
the realm export itself (clients, mappers, roles, users) as well as the filter: token claims as the README
and istio/README.md describe them, Keycloak's JWKS (RSA-OAEP `enc` key first) accepted, the reference
WasmPlugin of istio/meshgate/ end to end, key rotation through the Admin REST API without restarting Envoy,
kidRefetchCooldown against a real server, the gateway client's authorization code + PKCE flow, and that the
dev IdP (tests/e2e/idp.py, used where faults must be injected) issues tokens of the same shape.

Tests that change keys work in their own realm (a copy of the export created through the Admin API), so
the session realm `myrealm` keeps its keys for every other test.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt as pyjwt
import pytest
import requests
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

import harness
import keycloak as kc

ISSUER = harness.ISSUER
AUD = "my-backend-client"
RBAC_DENIED = "RBAC: access denied"
KID_MISS = "Jwks doesn't have key to match kid or alg from Jwt"
AUD_DENIED = "Audiences in Jwt are not allowed"
REPO = harness.REPO
EXPORT = json.loads(harness.REALM_FILE.read_text())
USER_IDS = {u["username"]: u["id"] for u in EXPORT["users"]}
ALICE_ROLES = {"default-roles-myrealm", "offline_access", "uma_authorization", "user"}
ACCOUNT_ROLES = {"manage-account", "manage-account-links", "view-profile"}
FETCH_OK = "wasmcustom.meshgate.jwks_fetch.ok"


def claims(token: str) -> dict:
    return pyjwt.decode(token, options={"verify_signature": False})


def header(token: str) -> dict:
    return pyjwt.get_unverified_header(token)


def assert_401(resp, body: str) -> None:
    assert (resp.status_code, resp.text) == (401, body)
    assert resp.headers["www-authenticate"].endswith('error="invalid_token"'), resp.headers


def assert_403(resp, body: str = RBAC_DENIED) -> None:
    assert (resp.status_code, resp.text) == (403, body)


def rule(issuer: str, **extra) -> dict:
    return {"issuer": issuer, "jwksUri": issuer + "/protocol/openid-connect/certs", "audiences": [AUD], **extra}


AUTHENTICATED = [{"name": "authenticated", "action": "ALLOW",
                  "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}]


def fetches(env: harness.EnvoyProcess) -> int:
    return env.stats(FETCH_OK).get(FETCH_OK, 0)


def forged_unknown_kid_token(issuer: str = ISSUER) -> str:
    """A well-formed RS256 token for `issuer` whose kid no JWKS has (signed with a throwaway key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return pyjwt.encode({"iss": issuer, "aud": AUD, "sub": str(uuid.uuid4()), "iat": now, "exp": now + 300},
                        key, algorithm="RS256", headers={"kid": secrets.token_urlsafe(32)})


def backend_wasmplugin() -> dict:
    return yaml.safe_load((REPO / "istio" / "meshgate" / "wasmplugin-backend.yaml").read_text())


# ----------------------------------------------------------------------------------------------------------
# the distribution and the realm export
# ----------------------------------------------------------------------------------------------------------
def test_pinned_version_and_hostname_match_the_manifests():
    """The tests run the Keycloak the manifests deploy: same version, same frontend URL."""
    dep = yaml.safe_load((REPO / "istio" / "keycloak" / "deployment.yaml").read_text())
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"quay.io/keycloak/keycloak:{kc.VERSION}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KC_HOSTNAME"] == kc.HOSTNAME_URL
    assert container["args"] == ["start-dev", "--import-realm"]
    assert harness.ISSUER == f"{kc.HOSTNAME_URL}/realms/{kc.REALM}" and harness.KEYCLOAK_CLUSTER == kc.KEYCLOAK_CLUSTER


def test_missing_installation_fails_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHGATE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(kc.KeycloakError, match=r"Keycloak 26\.5\.5 is not installed in .*: run `make setup`"):
        kc.launch(tmp_path / "wd")


def test_realm_imported_with_issuer_and_keycloak_jwks(keycloak):
    d = keycloak.discovery()
    assert d["issuer"] == ISSUER
    # Front channel on the hostname, back channel on the address the caller used (backchannel-dynamic).
    assert d["authorization_endpoint"] == ISSUER + "/protocol/openid-connect/auth"
    assert d["jwks_uri"] == keycloak.local_url(path="/protocol/openid-connect/certs")
    assert "S256" in d["code_challenge_methods_supported"]
    jwks = keycloak.jwks()
    # A fresh realm publishes an RSA-OAEP encryption key beside the RS256 signing key, in either order
    # (seen both ways here; the dev IdP serves both orders on demand for the filter tests).
    by_use = {k["use"]: k for k in jwks["keys"]}
    assert len(jwks["keys"]) == 2 and {u: (k["kty"], k["alg"]) for u, k in by_use.items()} == {
        "enc": ("RSA", "RSA-OAEP"), "sig": ("RSA", "RS256")}
    keys = keycloak.realm_keys()
    assert by_use["sig"]["kid"] == keys["active"]["RS256"]
    assert by_use["enc"]["kid"] == keys["active"]["RSA-OAEP"]


def test_password_grant_claims_as_documented(keycloak):
    t = keycloak.token_response(grant_type="password", client_id="demo-cli", username="alice", password="alice",
                                scope="openid")
    # expires_in counts from the response, not from iat: 300, or 299 when a second boundary passed between.
    assert t["token_type"] == "Bearer" and t["expires_in"] in (299, 300)
    assert set(t["scope"].split()) == {"openid", "profile", "email"}  # Keycloak's order varies
    tok = t["access_token"]
    assert header(tok) == {"alg": "RS256", "typ": "JWT", "kid": keycloak.realm_keys()["active"]["RS256"]}
    c = claims(tok)
    assert c["iss"] == ISSUER
    assert c["aud"] == [AUD, "account"]  # audience mapper, then Keycloak's audience resolve (account roles)
    assert c["azp"] == "demo-cli" and c["typ"] == "Bearer" and c["sub"] == USER_IDS["alice"]
    assert c["email"] == "user@example.com" and c["email_verified"] is True
    assert c["preferred_username"] == "alice" and c["name"] == "Alice Example"
    assert set(c["realm_access"]["roles"]) == ALICE_ROLES
    assert {k: set(v["roles"]) for k, v in c["resource_access"].items()} == {"account": ACCOUNT_ROLES}
    assert c["exp"] - c["iat"] == EXPORT["accessTokenLifespan"] == 300

    b = claims(keycloak.password_token("bob"))
    assert b["email"] == "bob@example.com" and b["sub"] == USER_IDS["bob"]
    assert set(b["realm_access"]["roles"]) == ALICE_ROLES | {"admin"}
    assert {k: set(v["roles"]) for k, v in b["resource_access"].items()} == {
        AUD: {"reader", "writer"}, "account": ACCOUNT_ROLES}
    assert b["aud"] == [AUD, "account"]


def test_client_credentials_claims_as_documented(keycloak):
    c = claims(keycloak.client_credentials_token())
    assert c["iss"] == ISSUER and c["aud"] == [AUD, "account"] and c["azp"] == "frontend"
    assert c["client_id"] == "frontend"  # the service_account client scope (listed in the export)
    assert c["sub"] == USER_IDS["service-account-frontend"]
    assert c["preferred_username"] == "service-account-frontend" and "email" not in c
    assert set(c["realm_access"]["roles"]) == {"default-roles-myrealm", "offline_access", "uma_authorization"}
    assert c["exp"] - c["iat"] == 300  # the client's access.token.lifespan attribute
    bad = keycloak.token(auth=("frontend", "wrong"), grant_type="client_credentials")
    assert (bad.status_code, bad.json()["error"]) == (401, "unauthorized_client")


def test_client_lifespan_lowered_through_the_admin_api(keycloak):
    try:
        keycloak.set_client_attribute("frontend", "access.token.lifespan", "120")
        assert keycloak.get_client("frontend")["attributes"]["access.token.lifespan"] == "120"
        c = claims(keycloak.client_credentials_token())
        assert c["exp"] - c["iat"] == 120
    finally:
        keycloak.set_client_attribute("frontend", "access.token.lifespan", "300")
    c = claims(keycloak.client_credentials_token())
    assert c["exp"] - c["iat"] == 300


def test_dev_idp_tokens_have_keycloaks_shape(keycloak, idp):
    """tests/e2e/idp.py stands in for Keycloak in the fault-injection tests: its tokens for the same grants
    carry the same header fields, the same claim names and the same values (ids and times aside)."""
    same_values = ("iss", "aud", "sub", "typ", "azp", "acr", "email", "email_verified", "preferred_username",
                   "name", "given_name", "family_name", "client_id")

    def shape(tok: str) -> dict:
        c = claims(tok)
        out = {k: c.get(k) for k in same_values}
        out.update(header=sorted(header(tok)), claim_names=sorted(c), lifetime=c["exp"] - c["iat"],
                   realm_roles=sorted(c.get("realm_access", {}).get("roles", [])),
                   client_roles={k: sorted(v["roles"]) for k, v in c.get("resource_access", {}).items()},
                   scope=sorted(c["scope"].split()))
        return out

    for grant in ("alice", "bob", "frontend"):
        if grant == "frontend":
            real, dev = keycloak.client_credentials_token(), idp.client_credentials_token()
        else:
            real, dev = keycloak.password_token(grant), idp.password_token(grant)
        assert shape(dev) == shape(real), grant


# ----------------------------------------------------------------------------------------------------------
# meshgate in Envoy against the real Keycloak
# ----------------------------------------------------------------------------------------------------------
def test_reference_wasmplugin_with_real_tokens(keycloak, start_meshgate_keycloak):
    """istio/meshgate/wasmplugin-backend.yaml, unchanged, in Envoy; keys fetched from Keycloak through
    outbound|80||keycloak.keycloak.svc.cluster.local. The table of istio/README.md, with real tokens."""
    assert "enc" in {k["use"] for k in keycloak.jwks()["keys"]}  # what meshgate has to skip
    env = start_meshgate_keycloak(wasmplugin=backend_wasmplugin())
    alice = keycloak.password_token("alice")
    r = env.get("/data", token=alice)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/data" and "authorization" not in r.json()["headers"]
    assert_403(env.get("/data"))
    assert_403(env.request("POST", "/data", token=alice))
    assert_403(env.get("/data", token=keycloak.password_token("bob")))
    assert_403(env.get("/data", token=keycloak.client_credentials_token()))  # no email: the policy says no
    # admin-cli of the realm: a valid token without the audience mapper (no `aud` at all).
    other = keycloak.token_response(grant_type="password", client_id="admin-cli", username="alice",
                                    password="alice")["access_token"]
    assert "aud" not in claims(other)
    assert_403(env.get("/data", token=other), AUD_DENIED)
    h, p, s = alice.split(".")
    assert_401(env.get("/data", token=f"{h}.{p}.{s[:-4]}{'AAAA' if s[-4:] != 'AAAA' else 'BBBB'}"),
               "Jwt verification fails")
    stats = env.stats("wasmcustom.meshgate")
    assert stats[FETCH_OK] >= 1 and stats.get("wasmcustom.meshgate.jwks_fetch.failed", 0) == 0
    assert stats.get("wasmcustom.meshgate.denied.no_valid_keys", 0) == 0
    assert stats["wasmcustom.meshgate.allowed"] == 1


def test_client_credentials_token_passes_a_service_policy(keycloak, start_meshgate_keycloak):
    """The frontend's service-account token authenticates; a policy on azp/client_id lets it through and
    keeps alice's token out."""
    policy = [{"name": "frontend-only", "action": "ALLOW", "rules": [{"when": [
        {"key": "request.auth.claims[azp]", "values": ["frontend"]},
        {"key": "request.auth.claims[client_id]", "values": ["frontend"]},
        {"key": "request.auth.audiences", "values": [AUD]}]}]}]
    env = start_meshgate_keycloak({"jwtRules": [rule(ISSUER, outputClaimToHeaders=[
        {"header": "x-client-id", "claim": "client_id"}])], "policies": policy})
    r = env.get("/data", token=keycloak.client_credentials_token())
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["x-client-id"] == "frontend"
    assert_403(env.get("/data", token=keycloak.password_token("alice")))


def test_access_tokens_only_refuses_keycloaks_id_token(keycloak, start_meshgate_keycloak):
    """A real Keycloak ID token (typ ID, aud = the client) is refused by accessTokensOnly even where its
    audience is accepted; the access token of the same login passes."""
    t = keycloak.token_response(grant_type="password", client_id="demo-cli", username="alice", password="alice",
                                scope="openid")
    id_claims = claims(t["id_token"])
    assert (id_claims["typ"], id_claims["aud"], id_claims["iss"]) == ("ID", "demo-cli", ISSUER)
    env = start_meshgate_keycloak({"jwtRules": [rule(ISSUER, audiences=["demo-cli", AUD], accessTokensOnly=True)],
                                   "policies": AUTHENTICATED})
    assert_401(env.get("/data", token=t["id_token"]), "Jwt is not an access token ([typ] is not Bearer)")
    r = env.get("/data", token=t["access_token"])
    assert r.status_code == 200, r.text


def test_logout_does_not_revoke_issued_access_tokens(keycloak, start_meshgate_keycloak):
    """Documented limit (README): meshgate verifies stateless JWTs; ending the Keycloak session (logout,
    revocation) does not stop an access token that was already issued until it expires."""
    env = start_meshgate_keycloak(wasmplugin=backend_wasmplugin())
    t = keycloak.token_response(grant_type="password", client_id="demo-cli", username="alice", password="alice",
                                scope="openid")
    assert env.get("/data", token=t["access_token"]).status_code == 200
    out = keycloak.session.post(keycloak.local_url(path="/protocol/openid-connect/logout"), timeout=10,
                                data={"client_id": "demo-cli", "refresh_token": t["refresh_token"]})
    assert out.status_code == 204, out.text
    intro = keycloak.session.post(keycloak.local_url(path="/protocol/openid-connect/token/introspect"), timeout=10,
                                  data={"token": t["access_token"]}, auth=("frontend", "frontend-secret"))
    assert intro.status_code == 200 and intro.json() == {"active": False}
    refreshed = keycloak.token(grant_type="refresh_token", client_id="demo-cli", refresh_token=t["refresh_token"])
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    r = env.get("/data", token=t["access_token"])
    assert r.status_code == 200, r.text


def test_key_rotation_through_the_admin_api_without_restart(keycloak, start_meshgate_keycloak):
    realm = "rotation"
    issuer = keycloak.create_realm(realm)
    try:
        k1 = keycloak.realm_keys(realm)["active"]["RS256"]
        env = start_meshgate_keycloak({"jwtRules": [rule(issuer, cacheDuration="10m", kidRefetchCooldown="1s")],
                                       "policies": AUTHENTICATED})
        started, pid = time.monotonic(), env.proc.pid
        old = keycloak.password_token(realm=realm)
        assert header(old)["kid"] == k1
        assert env.get("/data", token=old).status_code == 200
        f0 = fetches(env)  # one per Wasm VM (main thread and worker)

        # 1. A new RSA key provider with a higher priority: Keycloak signs with it, publishes both keys.
        new_provider = keycloak.add_rsa_key_provider("rotated", priority=200, realm=realm)
        k2 = keycloak.realm_keys(realm)["active"]["RS256"]
        assert k2 != k1
        assert {k["kid"] for k in keycloak.jwks(realm)["keys"] if k["use"] == "sig"} == {k1, k2}
        new = keycloak.password_token(realm=realm)
        assert header(new)["kid"] == k2
        time.sleep(max(0.0, 1.2 - (time.monotonic() - started)))  # past kidRefetchCooldown
        r = env.get("/data", token=new)
        assert r.status_code == 200, r.text  # kid miss -> one refetch -> verified, same Envoy
        assert fetches(env) == f0 + 1 and env.proc.pid == pid and env.alive()
        assert env.get("/data", token=old).status_code == 200  # k1 is still published

        # 2. The old provider disabled: k1 leaves the JWKS. meshgate learns it at its next fetch (here a kid
        #    miss after the cooldown); tokens signed with k1 then fail, k2 tokens pass.
        (old_provider,) = [c["id"] for c in keycloak.key_providers(realm) if c["name"] == "rsa-generated"]
        keycloak.set_key_provider(old_provider, realm, enabled=False)
        assert {k["kid"] for k in keycloak.jwks(realm)["keys"] if k["use"] == "sig"} == {k2}
        time.sleep(1.2)
        assert_401(env.get("/data", token=forged_unknown_kid_token(issuer)), KID_MISS)
        assert fetches(env) == f0 + 2
        assert_401(env.get("/data", token=old), KID_MISS)
        assert env.get("/data", token=new).status_code == 200

        # 3. Deleted: gone from the realm's keys too; nothing changes for meshgate.
        keycloak.delete_component(old_provider, realm)
        assert k1 not in {k["kid"] for k in keycloak.realm_keys(realm)["keys"]}
        assert_401(env.get("/data", token=old), KID_MISS)
        assert env.get("/data", token=keycloak.password_token(realm=realm)).status_code == 200
        assert new_provider in {c["id"] for c in keycloak.key_providers(realm)}
        assert env.proc.pid == pid and env.alive()
    finally:
        keycloak.delete_realm(realm)


def test_kid_refetch_cooldown_with_a_real_keycloak(keycloak, start_meshgate_keycloak):
    """20 tokens with unknown kids inside one kidRefetchCooldown: every one 401, at most one JWKS fetch,
    counted by meshgate and by Envoy's cluster stats for the Keycloak cluster."""
    env = start_meshgate_keycloak({"jwtRules": [rule(ISSUER, kidRefetchCooldown="60s")], "policies": AUTHENTICATED})
    upstream = f"cluster.{kc.KEYCLOAK_CLUSTER}.upstream_rq_total"
    assert env.get("/data", token=keycloak.password_token()).status_code == 200
    f0, u0 = fetches(env), env.stats(upstream)[upstream]
    assert f0 == u0 >= 1  # every fetch meshgate counts is a request to Keycloak Envoy counts
    for _ in range(20):
        assert_401(env.get("/data", token=forged_unknown_kid_token()), KID_MISS)
    f1, u1 = fetches(env), env.stats(upstream)[upstream]
    assert f1 - f0 <= 1 and u1 - u0 == f1 - f0, (f0, f1, u0, u1)
    assert env.stats("wasmcustom.meshgate.denied.unknown_kid")["wasmcustom.meshgate.denied.unknown_kid"] == 20
    assert env.get("/data", token=keycloak.password_token()).status_code == 200


# ----------------------------------------------------------------------------------------------------------
# the gateway client (authorization code + PKCE), ready for the SSO work
# ----------------------------------------------------------------------------------------------------------
def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _login(keycloak, redirect_uri: str, challenge: str | None, state: str = "st-1") -> str:
    """Log alice in on Keycloak's login page (no browser: Host header; a fresh cookie jar, so no SSO
    session); returns the redirect Location."""
    browser = requests.Session()
    page = keycloak.front_get(keycloak.login_page_url("meshgate-gateway", redirect_uri, state=state,
                                                      code_challenge=challenge), browser)
    assert page.status_code == 200, page.text[:500]
    m = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text) or \
        re.search(r'<form[^>]*action="([^"]+)"[^>]*id="kc-form-login"', page.text)
    assert m, page.text[:2000]
    action = html.unescape(m.group(1))
    assert action.startswith(ISSUER + "/login-actions/authenticate?")
    done = keycloak.front_post(action, browser, data={"username": "alice", "password": "alice", "credentialId": ""})
    assert done.status_code == 302, done.text[:500]
    return done.headers["location"]


def test_gateway_client_authorization_code_with_pkce(keycloak, start_meshgate_keycloak):
    redirect_uri = "http://127.0.0.1:18443/oauth2/callback"  # loopback: any port matches (RFC 8252)
    verifier, challenge = _pkce()
    loc = _login(keycloak, redirect_uri, challenge)
    assert loc.startswith(redirect_uri + "?")
    q = {k: v[0] for k, v in parse_qs(urlsplit(loc).query).items()}
    assert q["state"] == "st-1" and q["iss"] == ISSUER and q["code"]

    wrong = keycloak.token(auth=("meshgate-gateway", "gateway-secret"), grant_type="authorization_code",
                           code=q["code"], redirect_uri=redirect_uri, code_verifier=_pkce()[0])
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    # A code is single use even after a failed redemption; log in again for the real exchange.
    loc = _login(keycloak, redirect_uri, challenge, state="st-2")
    code = parse_qs(urlsplit(loc).query)["code"][0]
    t = keycloak.token_response(auth=("meshgate-gateway", "gateway-secret"), grant_type="authorization_code",
                                code=code, redirect_uri=redirect_uri, code_verifier=verifier)
    c = claims(t["access_token"])
    assert c["azp"] == "meshgate-gateway" and c["aud"] == [AUD, "account"] and c["email"] == "user@example.com"
    assert claims(t["id_token"])["aud"] == "meshgate-gateway"
    env = start_meshgate_keycloak(wasmplugin=backend_wasmplugin())
    assert env.get("/data", token=t["access_token"]).status_code == 200


def test_gateway_client_requires_pkce_and_a_registered_redirect(keycloak):
    redirect_uri = "http://localhost:9/oauth2/callback"
    page = keycloak.front_get(keycloak.login_page_url("meshgate-gateway", redirect_uri, state="x"))
    assert page.status_code == 302
    q = parse_qs(urlsplit(page.headers["location"]).query)
    assert page.headers["location"].startswith(redirect_uri + "?")
    assert (q["error"], q["error_description"]) == (["invalid_request"], ["Missing parameter: code_challenge_method"])
    for bad in ("http://127.0.0.1:18443/other", "https://evil.example.com/oauth2/callback"):
        page = keycloak.front_get(keycloak.login_page_url("meshgate-gateway", bad, code_challenge=_pkce()[1]))
        assert page.status_code == 400 and "Invalid parameter: redirect_uri" in page.text, bad
    cfg = keycloak.get_client("meshgate-gateway")
    assert cfg["attributes"]["pkce.code.challenge.method"] == "S256" and cfg["publicClient"] is False
    # After logout Keycloak sends the browser back only to the gateway's own pages (postLogoutRedirectUri
    # `/` and the demo's loopback hosts), plus the redirect URIs ("+").
    assert cfg["attributes"]["post.logout.redirect.uris"] == (
        "+##https://meshgate.example.com/*##http://127.0.0.1/*##http://localhost/*")


def test_chromium_rule_names_the_hostname_and_port(keycloak):
    assert keycloak.chromium_host_rule() == (f"--host-resolver-rules=MAP keycloak.keycloak.svc.cluster.local "
                                             f"127.0.0.1:{keycloak.port}")
    url = keycloak.login_page_url("meshgate-gateway", "http://127.0.0.1:1/oauth2/callback", code_challenge="c")
    assert url.startswith(ISSUER + "/protocol/openid-connect/auth?client_id=meshgate-gateway&")
    assert keycloak.front_url_to_local(url).startswith(f"http://127.0.0.1:{keycloak.port}/realms/myrealm/")


# ----------------------------------------------------------------------------------------------------------
# the dev IdP answers like Keycloak where tests rely on it
# ----------------------------------------------------------------------------------------------------------
TOKEN_ERRORS = [
    (("frontend", "wrong"), {"grant_type": "client_credentials"}),
    (("nosuchclient", "x"), {"grant_type": "client_credentials"}),
    (None, {"grant_type": "password", "client_id": "demo-cli", "username": "alice", "password": "nope"}),
    (None, {"grant_type": "password", "client_id": "demo-cli", "username": "mallory", "password": "x"}),
    (None, {"grant_type": "client_credentials", "client_id": "demo-cli"}),
    (("frontend", "frontend-secret"), {"grant_type": "password", "username": "alice", "password": "alice"}),
    (("my-backend-client", "backend-secret"), {"grant_type": "client_credentials"}),
    (("frontend", "frontend-secret"), {"grant_type": "urn:ietf:params:oauth:grant-type:device_code"}),
    (("frontend", "frontend-secret"), {"grant_type": "urn:example:unknown"}),
    (("frontend", "frontend-secret"), {}),
    (None, {"grant_type": "password", "client_id": "demo-cli", "username": "alice", "password": "alice",
            "scope": "openid nosuchscope"}),
]


@pytest.mark.parametrize("auth,form", TOKEN_ERRORS, ids=[f"{a[0] if a else f.get('client_id')}-{f.get('grant_type')}"
                                                         for a, f in TOKEN_ERRORS])
def test_dev_idp_token_errors_match_keycloak(keycloak, idp, auth, form):
    """The token-endpoint errors test_infra.py expects from the dev IdP are Keycloak's."""
    real, dev = keycloak.token(auth=auth, **form), idp.token(auth=auth, **form)
    assert (dev.status_code, dev.json()["error"]) == (real.status_code, real.json()["error"]), (real.text, dev.text)
