"""Issue "hardening", the token layer in a real Envoy: weak RSA keys refused at JWKS load (counted and
logged), a `crit` header refused (RFC 7515 §4.1.11), `accessTokensOnly` refusing Keycloak ID tokens, and
jwt-compact's RFC 7515 strictness (an empty segment) where Envoy's own jwt_authn is lenient."""

from __future__ import annotations

import harness

AUD = "my-backend-client"


def rule(idp, **extra):
    r = {"issuer": idp.issuer(), "audiences": [AUD], "jwksUri": idp.jwks_uri()}
    r.update(extra)
    return r


def assert_401(resp, body):
    assert (resp.status_code, resp.text) == (401, body)
    assert resp.headers["www-authenticate"].endswith(', error="invalid_token"'), resp.headers


def meshgate_stats(env) -> dict[str, int]:
    return {k.removeprefix("wasmcustom.meshgate."): v for k, v in env.stats("wasmcustom.meshgate").items() if v}


def test_weak_rsa_keys_are_refused_counted_and_logged(start_meshgate, idp_clean):
    # The realm's keys plus a 1024-bit RSA key and one with e = 2^33+1: the JWKS still loads, the two
    # are refused (RFC 7518 §3.3; BoringSSL's exponent cap), counted and named in a warning.
    idp_clean.jwks_mode("weak_rsa")
    env = start_meshgate({"jwtRules": [rule(idp_clean)]})
    assert env.get("/data", token=idp_clean.mint()).status_code == 200
    stats = meshgate_stats(env)
    # Each Wasm VM (one per worker, plus the main thread's) fetches and counts on its own.
    assert stats.get("jwks_fetch.ok", 0) >= 1, stats
    assert stats.get("jwks_key_rejected") == 2 * stats["jwks_fetch.ok"], stats
    harness.wait_until(lambda: "2 signature key(s) refused" in env.log(), timeout=10,
                       desc="refused-keys warning (Envoy flushes logs late)")
    log = env.log()
    assert "RSA modulus of 1024 bits" in log
    assert "RSA exponent 8589934593 is not an odd number from 3 to 2^33-1" in log


def test_crit_header_is_refused(start_meshgate, idp_clean):
    env = start_meshgate({"jwtRules": [rule(idp_clean)]})
    assert env.get("/data", token=idp_clean.mint()).status_code == 200
    for header in [{"crit": ["exp"], "exp": 1}, {"crit": ["https://example.invalid/ext"]}]:
        tok = idp_clean.mint(header=header)
        assert_401(env.get("/data", token=tok), "Jwt header [crit] lists an unsupported extension")
    assert meshgate_stats(env).get("denied.malformed") == 2


def test_access_tokens_only_refuses_an_id_token_with_a_matching_audience(start_meshgate, idp_clean):
    id_token = idp_clean.mint(claims={"typ": "ID"})
    access_token = idp_clean.mint()
    strict = start_meshgate({"jwtRules": [rule(idp_clean, accessTokensOnly=True)]})
    assert strict.get("/data", token=access_token).status_code == 200
    assert_401(strict.get("/data", token=id_token), "Jwt is not an access token ([typ] is not Bearer)")
    assert meshgate_stats(strict).get("denied.not_access_token") == 1
    # Off by default (Istio semantics): the same ID token passes.
    lenient = start_meshgate({"jwtRules": [rule(idp_clean)]})
    assert lenient.get("/data", token=id_token).status_code == 200


def test_empty_segments_are_malformed(start_meshgate, idp_clean):
    # RFC 7515 §7.1: exactly three segments. Envoy's jwt_authn drops empty ones and accepts these.
    env = start_meshgate({"jwtRules": [rule(idp_clean)]})
    tok = idp_clean.mint()
    bad_format = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    for variant in [tok + ".", "." + tok, tok.replace(".", "..", 1)]:
        assert_401(env.get("/data", token=variant), bad_format)
