"""Issue "core" end to end: the built meshgate.wasm in a real Envoy, configured exactly as istiod renders a
WasmPlugin, verifying tokens minted by the dev IdP (PyJWT/cryptography, independent of the Rust verifier)
and fetched through the cluster Istio would create for the jwksUri host."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

import harness

AUD = "my-backend-client"


def rule(idp, realm="myrealm", **extra):
    r = {"issuer": idp.issuer(realm), "audiences": [AUD], "jwksUri": idp.jwks_uri(realm)}
    r.update(extra)
    return r


def reference_rule(idp):
    return rule(idp,
                outputClaimToHeaders=[{"header": "x-email", "claim": "email"},
                                      {"header": "x-roles", "claim": "realm_access.roles"},
                                      {"header": "x-verified", "claim": "email_verified"}],
                outputPayloadToHeader="x-jwt-payload")


def assert_401(resp, body, error=True):
    assert resp.status_code == 401, (resp.status_code, resp.text)
    assert resp.text == body
    challenge = resp.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="http://')
    assert challenge.endswith(', error="invalid_token"') == error, challenge


@pytest.fixture(scope="module")
def gw(module_start_meshgate, idp):
    """One Envoy for the read-only cases: the reference rule plus a second issuer."""
    return module_start_meshgate({"jwtRules": [reference_rule(idp), rule(idp, "otherrealm")]})


def test_reference_token_reaches_backend_with_claim_and_payload_headers(gw, idp):
    minted = idp.mint_full(user="alice", client="demo-cli")
    assert minted["claims"]["email"] == "user@example.com"
    resp = gw.get("/data", token=minted["token"])
    assert resp.status_code == 200, resp.text
    seen = resp.json()["headers"]
    assert seen["x-email"] == "user@example.com"
    assert seen["x-verified"] == "true"
    assert "user" in seen["x-roles"].split(",")
    payload = json.loads(base64.urlsafe_b64decode(seen["x-jwt-payload"] + "=="))
    assert payload["iss"] == idp.issuer() and payload["sub"] == minted["claims"]["sub"]
    assert "authorization" not in seen, "forwardOriginalToken defaults to false: the token is removed"


def test_client_credentials_token_from_token_endpoint(gw, idp):
    tok = idp.client_credentials_token()
    assert gw.get("/data", token=tok).status_code == 200


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "ES256", "EdDSA"])
def test_every_keycloak_signature_algorithm(gw, idp, alg):
    assert gw.get("/data", token=idp.mint(alg=alg)).status_code == 200, alg


@pytest.mark.parametrize("spec,body", [
    ({"exp_in": -3600}, "Jwt is expired"),
    ({"nbf_in": 3600}, "Jwt not yet valid"),
    ({"sign_with": "unpublished"}, "Jwt verification fails"),
    ({"alg": "none"}, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
    ({"alg": "HS256-with-rsa-public-key"}, "Jwks doesn't have key to match kid or alg from Jwt"),
    ({"realm": "myrealm", "claims": {"iss": "http://keycloak.example.com/realms/myrealm"}},
     "Jwt issuer is not configured"),
])
def test_invalid_tokens_are_401_with_reason(gw, idp, spec, body):
    assert_401(gw.get("/data", token=idp.mint(**spec)), body)


def test_unknown_kid_is_401_after_one_refetch(gw, idp):
    resp = gw.get("/data", token=idp.mint(kid="no-such-kid"))
    assert_401(resp, "Jwks doesn't have key to match kid or alg from Jwt")


def test_malformed_and_oversized_tokens(gw, idp):
    assert_401(gw.get("/data", token="abc.def"),
               "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
    assert_401(gw.get("/data", token="eyJhbGciOiJSUzI1NiJ9.e.c2ln"), "Jwt payload is an invalid Base64url encoded")
    none_with_sig = idp.mint(alg="none").rstrip(".") + ".c2ln"
    assert_401(gw.get("/data", token=none_with_sig), "Jwt header [alg] is not supported")
    big = idp.mint(claims={"padding": "x" * 17000})
    assert_401(gw.get("/data", token=big), "Jwt exceeds the maximum token size")


def test_wrong_audience_is_403(gw, idp):
    resp = gw.get("/data", token=idp.mint(audience="someone-else"))
    assert resp.status_code == 403
    assert resp.text == "Audiences in Jwt are not allowed"
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]


def test_missing_token_is_optional_by_default(gw):
    assert gw.get("/data").status_code == 200


def test_token_in_query_parameter(gw, idp):
    tok = idp.mint()
    assert gw.get(f"/data?access_token={tok}").status_code == 200
    assert_401(gw.get(f"/data?access_token={idp.mint(exp_in=-3600)}"), "Jwt is expired")


def test_two_issuers(gw, idp):
    assert gw.get("/data", token=idp.mint(realm="otherrealm")).status_code == 200
    assert gw.get("/data", token=idp.mint(realm="myrealm")).status_code == 200


def test_every_token_must_verify(gw, idp):
    good, bad = idp.mint(), idp.mint(exp_in=-3600)
    assert gw.request("GET", f"/data?access_token={bad}", token=good).status_code == 401


def test_spoofed_identity_headers_are_stripped(gw, idp):
    resp = gw.get("/data", headers={"x-email": "admin@evil", "x-jwt-payload": "e30", "x-roles": "admin"})
    assert resp.status_code == 200
    seen = resp.json()["headers"]
    assert "x-email" not in seen and "x-jwt-payload" not in seen and "x-roles" not in seen
    resp = gw.get("/data", token=idp.mint(user="bob"), headers={"x-email": "admin@evil"})
    assert resp.json()["headers"]["x-email"] == "bob@example.com"


def test_jwks_with_rsa_oaep_enc_key(start_meshgate, idp_clean):
    idp_clean.jwks_mode("keycloak_default")
    keys = idp_clean.jwks()["keys"]
    assert any(k.get("use") == "enc" and k.get("alg") == "RSA-OAEP" for k in keys)
    env = start_meshgate({"jwtRules": [rule(idp_clean)]})
    assert env.get("/data", token=idp_clean.mint()).status_code == 200
    assert_401(env.get("/data", token=idp_clean.mint(kid=next(k["kid"] for k in keys if k.get("use") == "enc"))),
               "Jwks doesn't have key to match kid or alg from Jwt")


def test_key_rotation_new_kid_accepted_after_refetch(start_meshgate, idp_clean):
    env = start_meshgate({"jwtRules": [rule(idp_clean)]})
    assert env.get("/data", token=idp_clean.mint()).status_code == 200
    before = idp_clean.stats()["jwks_fetches"]["myrealm"]
    idp_clean.rotate()
    assert env.get("/data", token=idp_clean.mint()).status_code == 200
    assert idp_clean.stats()["jwks_fetches"]["myrealm"] == before + 1
    stats = env.stats("wasmcustom.meshgate.jwks_fetch")
    assert stats["wasmcustom.meshgate.jwks_fetch.ok"] >= 2


def test_random_kids_do_not_amplify_jwks_traffic(start_meshgate, idp_clean):
    env = start_meshgate({"jwtRules": [rule(idp_clean)]})
    assert env.get("/data", token=idp_clean.mint()).status_code == 200
    before = idp_clean.stats()["jwks_fetches"]["myrealm"]
    for i in range(20):
        assert env.get("/data", token=idp_clean.mint(kid=f"random-{i}")).status_code == 401
    assert idp_clean.stats()["jwks_fetches"]["myrealm"] - before <= 1


def test_hundred_requests_one_token_at_most_two_fetches(start_meshgate, idp_clean):
    env = start_meshgate({"jwtRules": [rule(idp_clean)]})
    tok = idp_clean.mint()
    for _ in range(100):
        assert env.get("/data", token=tok).status_code == 200
    assert idp_clean.stats()["jwks_fetches"]["myrealm"] <= 2
    stats = env.stats("wasmcustom.meshgate")
    assert stats["wasmcustom.meshgate.token_cache.hit"] >= 99
    assert stats["wasmcustom.meshgate.allowed"] == 100


def test_discovery_without_jwks_uri(start_meshgate, idp_clean):
    env = start_meshgate({"jwtRules": [{"issuer": idp_clean.issuer(), "audiences": [AUD]}]})
    assert env.get("/data", token=idp_clean.mint()).status_code == 200
    assert idp_clean.stats()["discovery_fetches"]["myrealm"] >= 1


def test_presence_required(start_meshgate, idp_clean):
    env = start_meshgate({"jwtRules": [rule(idp_clean, presence="REQUIRED")]})
    assert_401(env.get("/data"), "Jwt is missing", error=False)
    assert env.get("/data", token=idp_clean.mint()).status_code == 200


def test_forward_original_token_and_custom_header_location(start_meshgate, idp_clean):
    env = start_meshgate({"jwtRules": [rule(idp_clean, forwardOriginalToken=True,
                                            fromHeaders=[{"name": "x-token", "prefix": ""}])]})
    tok = idp_clean.mint()
    resp = env.get("/data", headers={"x-token": tok})
    assert resp.status_code == 200 and resp.json()["headers"]["x-token"] == tok
    assert env.get("/data", token=tok).status_code == 200, "Authorization is not a location of this rule"


def test_idp_down_at_start_fails_closed_then_recovers(start_meshgate, tmp_path):
    port = harness.free_port()
    cluster = {"outbound|80||keycloak.keycloak.svc.cluster.local": ("127.0.0.1", port)}
    iss = "http://keycloak.keycloak.svc.cluster.local/realms/myrealm"
    env = start_meshgate({"jwtRules": [{"issuer": iss, "audiences": [AUD], "jwksUri": iss + "/protocol/openid-connect/certs"}]},
                         extra_clusters=cluster)
    late = None
    try:
        # No IdP yet: a token cannot be verified, so the request is refused (fail closed).
        fake = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJpc3MiOiJodHRwOi8va2V5Y2xvYWsua2V5Y2xvYWsuc3ZjLmNsdXN0ZXIubG9jYWwvcmVhbG1zL215cmVhbG0iLCJhdWQiOiJteS1iYWNrZW5kLWNsaWVudCJ9.c2ln"
        assert_401(env.get("/data", token=fake), "Jwks remote fetch is failed")
        late = harness.start_idp(workdir=tmp_path / "late-idp", port=port)
        tok = late.mint()
        resp = harness.wait_until(lambda: (r := env.get("/data", token=tok)).status_code == 200 and r,
                                  timeout=30, desc="recovery after the IdP came up")
        assert resp.status_code == 200
        assert env.alive(), "no restart"
    finally:
        if late:
            late.stop()


def test_invalid_config_refuses_to_load_and_names_the_field(envoy_factory, meshgate_wasm, echo, idp):
    import render
    from conftest import make_wasmplugin
    wp = make_wasmplugin({"jwtRules": [{"issuer": idp.issuer(), "jwksUri": "ftp://nope", "bogus": 1}]})
    cfg = render.render_wasmplugin_envoy(wp, meshgate_wasm, 0, 0, echo.port, idp.clusters())
    with pytest.raises(harness.HarnessError) as err:
        envoy_factory(cfg)
    assert "jwtRules[0]" in str(err.value) and "bogus" in str(err.value), str(err.value)[-2000:]


def test_requests_wait_for_a_slow_jwks_fetch_and_share_it(start_meshgate, idp_clean):
    import concurrent.futures
    import time
    idp_clean.jwks_mode("slow", delay=2)
    env = start_meshgate({"jwtRules": [rule(idp_clean, cacheDuration="1h")]})
    tok = idp_clean.mint()
    idp_clean.reset_stats()
    # Both VMs fetched at configure time; force a refetch through a rotation so requests must wait.
    idp_clean.rotate()
    fresh = idp_clean.mint()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: env.get("/data", token=fresh).status_code, range(8)))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 8, statuses
    assert elapsed >= 1.5, "the requests were paused until the keys arrived"
    assert idp_clean.stats()["jwks_fetches"]["myrealm"] <= 2, "one fetch shared by the waiting requests"
    assert env.get("/data", token=tok).status_code == 200


def test_jwks_fetch_timeout_fails_closed(start_meshgate, idp_clean):
    import time
    idp_clean.jwks_mode("slow", delay=8)
    env = start_meshgate({"jwtRules": [rule(idp_clean, timeout="1s")]})
    started = time.monotonic()
    resp = env.get("/data", token=idp_clean.mint(), timeout=20)
    assert_401(resp, "Jwks remote fetch is failed")
    assert time.monotonic() - started < 6, "bounded by the rule's timeout, not the IdP"
    idp_clean.jwks_mode("normal")
    ok = harness.wait_until(lambda: env.get("/data", token=idp_clean.mint()).status_code == 200, timeout=30,
                            desc="recovery after the IdP answers again")
    assert ok


@pytest.mark.parametrize("crypto", ["host", "wasm"])
def test_both_signature_backends_in_envoy(start_meshgate, idp, crypto):
    env = start_meshgate({"crypto": crypto, "tokenCacheSize": 0, "jwtRules": [rule(idp)]})
    marker = f"signature verification: {'host (BoringSSL)' if crypto == 'host' else 'in-wasm'}"
    assert harness.wait_until(lambda: marker in env.log(), timeout=20, desc="backend log line (Envoy flushes logs late)")
    for alg in ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]:
        assert env.get("/data", token=idp.mint(alg=alg)).status_code == 200, (crypto, alg)
        bad = idp.mint(alg=alg, sign_with="unpublished")
        assert_401(env.get("/data", token=bad), "Jwt verification fails")


def test_counters_per_reason_and_per_policy(start_meshgate, idp_clean):
    """Counter ids are cached per slot (fixed counters) and per policy name and kind; every kind must
    still land on its own stat, named as documented."""
    when_path = lambda p: [{"key": "request.headers[:path]", "values": [p]}]  # noqa: E731
    env = start_meshgate({
        "jwtRules": [rule(idp_clean)],
        "policies": [
            {"name": "ns.audit-all", "action": "AUDIT", "rules": [{}]},
            {"name": "block-admin", "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]},
            {"name": "require-jwt", "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]},
            {"name": "would-deny-ping", "action": "DENY", "dryRun": True, "rules": [{"when": when_path("/ping")}]},
        ],
    })
    tok = idp_clean.mint()
    assert env.get("/data", token=tok).status_code == 200
    assert env.get("/ping", token=tok).status_code == 200
    assert env.get("/admin", token=tok).status_code == 403
    assert env.get("/data").status_code == 403
    assert env.get("/data", token=idp_clean.mint(exp_in=-3600)).status_code == 401
    stats = {k.removeprefix("wasmcustom.meshgate."): v for k, v in env.stats("wasmcustom.meshgate").items() if v}
    assert stats.pop("jwks_fetch.ok", 0) >= 1
    assert stats == {
        "allowed": 2,
        "token_cache.miss": 2,
        "token_cache.hit": 2,
        "policy.ns_audit-all.audit": 4,
        "policy.require-jwt.allowed": 2,
        "policy.block-admin.denied": 1,
        "denied.rbac_no_allow_match": 1,
        "denied.expired": 1,
        "policy.would-deny-ping.dry_run_would_deny": 1,
        "policy.would-deny-ping.dry_run_would_allow": 3,
    }, stats


def test_slow_issuer_request_waits_for_its_own_keys_only(start_meshgate, tmp_path):
    """Issue "wakeup": six issuers found by discovery; five JWKS answer after ~1 s, the sixth after ~2.5 s
    (its timeout is 5 s). A token of the sixth issuer sent right after Envoy is ready gets 200, as native
    jwt_authn answers: the other issuers' discovery and JWKS responses must not use up its wait."""
    import time
    realms = ["myrealm", "r1", "r2", "r3", "r4", "r5"]
    idp = harness.start_idp(workdir=tmp_path / "idp6", extra_realms=realms[1:])
    try:
        for r in realms[:5]:
            idp.jwks_mode("slow", realm=r, delay=1)
        idp.jwks_mode("slow", realm="r5", delay=2.5)
        tok = idp.mint(realm="r5")
        env = start_meshgate({"jwtRules": [{"issuer": idp.issuer(r)} for r in realms]},
                             extra_clusters=idp.clusters())
        started = time.monotonic()
        resp = env.get("/data", token=tok, timeout=20)
        elapsed = time.monotonic() - started
        assert resp.status_code == 200, (resp.status_code, resp.text)
        assert elapsed < 5, f"answered within the rule's timeout ({elapsed:.1f} s)"
        stats = env.stats("wasmcustom.meshgate")
        assert stats["wasmcustom.meshgate.denied.jwks_unavailable"] == 0
        assert stats["wasmcustom.meshgate.allowed"] == 1
    finally:
        idp.stop()


def test_paused_request_is_answered_at_once_when_its_fetch_fails(start_meshgate, idp_clean):
    """A request waiting for keys is answered as soon as its issuer's fetch fails (not at its deadline),
    and the answer is counted as `denied.jwks_unavailable`."""
    import time
    idp_clean.jwks_mode("slow_error500", delay=4)
    env = start_meshgate({"jwtRules": [rule(idp_clean, timeout="10s")]})
    started = time.monotonic()
    resp = env.get("/data", token=idp_clean.mint(), timeout=30)
    elapsed = time.monotonic() - started
    assert_401(resp, "Jwks remote fetch is failed")
    assert 1.5 < elapsed < 7, f"waited for the configure-time fetch, answered when it failed ({elapsed:.1f} s)"
    stats = env.stats("wasmcustom.meshgate")
    assert stats["wasmcustom.meshgate.denied.jwks_unavailable"] == 1
