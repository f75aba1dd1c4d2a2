#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/) and the fixed
JWKS the token target verifies against (tests/fuzz/fixtures/jwks.json), from real inputs in this
repository only:

  token_verify   every token of tests/conformance/jwt-vectors, and Keycloak-shaped tokens of the dev IdP's
                 realm (tests/e2e/idp.py over istio/keycloak/realm-myrealm.json), one per signing alg
  jwks_parse     every JWKS of the conformance vectors, and the realm's JWKS as the dev IdP serves it
                 (normal, keycloak_default, weak_rsa)
  plugin_config  the pluginConfig of every WasmPlugin in istio/, the e2e authorization cases
                 (tests/e2e/authz_cases.py) and the benchmark's configuration
  convert_yaml   the converter's test inputs (tests/converter/*/input*) and istio/**/*.yaml
  host_protocol  VerifySignatureArguments/Result messages for the realm's keys
  token_response the egress token endpoint's answers as Keycloak gives them (client_credentials success,
                 OAuth errors, Envoy's own text answers) and the realm's discovery document, each behind
                 the target's two selector bytes (status, call)
  sso_session    Cookie headers with sessions (one cookie and chunked) and a pending login sealed under the
                 target's fixed key (XChaCha20-Poly1305 from HChaCha20 in tests/e2e/test_sso_envoy.py and
                 `cryptography`'s ChaCha20-Poly1305, the format as README.md documents it), and session /
                 pending-login payloads of realm tokens for the seal modes
  sso_token_response  the code-exchange and refresh answers as Keycloak gives them (tokens, invalid_grant,
                 unauthorized_client, 5xx) behind the status selector byte

fixtures/tokens.json: the realm tokens (valid against fixtures/jwks.json at the targets' fixed time).
fixtures/jwks.json: the realm's JWKS plus the 12 conformance keys used by the most valid vectors, so
those vectors' tokens verify (tokens of other keys still exercise everything up to the signature). The realm's keys are generated here (fresh private keys that are thrown away): running this again
changes every realm seed and the JWKS together. Keycloak-shaped tokens expire in 2100.

    .venv/bin/python tests/fuzz/make_corpus.py [TARGET...]   (default: all; needs the e2e requirements)
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import yaml  # noqa: E402

import idp  # noqa: E402

CORPUS = HERE / "corpus"
FIXTURES = HERE / "fixtures"
EXTRA_KEYS = 12
FAR_FUTURE = 4102444800  # 2100-01-01


ONLY = set(sys.argv[1:])


def write_seeds(target: str, items: list[bytes]) -> int:
    if ONLY and target not in ONLY:
        return 0
    d = CORPUS / target
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    seen = set()
    for data in items:
        h = hashlib.sha1(data).hexdigest()
        if h not in seen:
            seen.add(h)
            (d / h).write_bytes(data)
    return len(seen)


def vectors() -> list[dict]:
    out = []
    for f in sorted(glob.glob(str(REPO / "tests/conformance/jwt-vectors/*.json"))):
        data = json.loads(Path(f).read_text())
        if isinstance(data, list):
            out.extend(data)
    return out


def usable(jwk: dict) -> bool:
    """A rough pre-filter (meshgate decides at load): signature keys of the families it verifies."""
    if jwk.get("use") not in (None, "sig"):
        return False
    kty = jwk.get("kty")
    if kty == "RSA":
        n = jwk.get("n", "")
        return len(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))) >= 256
    if kty == "EC":
        return jwk.get("crv", "P-256") in ("P-256", "P-384", "P-521")
    return kty == "OKP" and jwk.get("crv") == "Ed25519"


def varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def field(num: int, data: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(data)) + data


def main() -> int:
    exports = idp.load_exports(str(REPO / "istio/keycloak/realm-myrealm.json"), [])
    server = idp.IdP(exports, idp.DEFAULT_ISSUER_BASE, idp.DEFAULT_ISSUER_BASE)
    realm = server.realms[server.default_realm]
    realm_jwks = realm.jwks("normal")

    # Keycloak-shaped tokens, one per alg the realm signs with, plus a service-account token.
    realm_tokens = []
    for alg in idp.SIGNING_ALGS:
        spec = {"alg": alg, "claims": {"exp": FAR_FUTURE, "iat": 1700000000}}
        realm_tokens.append(idp.mint(server, spec, "127.0.0.1")["token"])
    realm_tokens.append(idp.mint(server, {"service_account": True, "claims": {"exp": FAR_FUTURE}},
                                 "127.0.0.1")["token"])

    vs = vectors()
    keys = list(realm_jwks["keys"])
    # The conformance keys that the most valid vectors use: every token is tried against every key
    # without a kid, so a large set would slow the target down tenfold (measured: 65 keys 220
    # executions/s, the realm's 11 keys 3,900/s).
    uses: dict[str, int] = {}
    for v in vs:
        if v.get("expect") == "valid":
            for k in v["jwks"].get("keys", []):
                if usable(k):
                    s = json.dumps(k, sort_keys=True)
                    uses[s] = uses.get(s, 0) + 1
    ranked = sorted(uses, key=lambda s: (-uses[s], s))
    keys += [json.loads(s) for s in ranked[:EXTRA_KEYS]]
    if not ONLY or "token_verify" in ONLY:
        FIXTURES.mkdir(exist_ok=True)
        (FIXTURES / "jwks.json").write_text(json.dumps({"keys": keys}, indent=1) + "\n")
        # One valid token per alg (and the service-account one), for the JWKS target's verification.
        (FIXTURES / "tokens.json").write_text(json.dumps(realm_tokens, indent=1) + "\n")

    n = write_seeds("token_verify", [v["token"].encode() for v in vs] + [t.encode() for t in realm_tokens])
    print(f"token_verify: {n} seeds; fixtures/jwks.json: {len(keys)} keys")

    jwks_docs = [json.dumps(v["jwks"]).encode() for v in vs]
    for mode in ("normal", "keycloak_default"):
        jwks_docs.append(json.dumps(realm.jwks(mode)).encode())
    rs = next(k for k in realm_jwks["keys"] if k.get("alg") == "RS256")
    weak = [dict(rs, kid="weak-1024", n=idp.b64u(bytes([0xC7]) * 128)),
            dict(rs, kid="weak-big-e", e=idp.b64u(((1 << 33) + 1).to_bytes(5, "big")))]
    jwks_docs.append(json.dumps({"keys": realm_jwks["keys"] + weak}).encode())
    print(f"jwks_parse: {write_seeds('jwks_parse', jwks_docs)} seeds")

    configs = []
    yamls = []
    for f in sorted(glob.glob(str(REPO / "istio/**/*.yaml"), recursive=True)):
        text = Path(f).read_text()
        yamls.append(text.encode())
        for doc in yaml.safe_load_all(text):
            if isinstance(doc, dict) and doc.get("kind") == "WasmPlugin":
                configs.append(json.dumps(doc.get("spec", {}).get("pluginConfig", {})).encode())
    import authz_cases

    iss = realm.issuer
    for s in authz_cases.POLICY_SETS + authz_cases.ISTIO_VALID_SETS + authz_cases.INVALID_SETS:
        rules = getattr(s, "jwt_rules", None) or [authz_cases.DEFAULT_RULE]
        text = json.dumps({"jwtRules": rules, "policies": s.policies})
        text = text.replace("{ISS}", iss).replace("{ISS_OTHER}", iss.replace("myrealm", "otherrealm"))
        text = text.replace("{PORT}", "8080").replace("{ALICE_SUB}", "a-1").replace("{BOB_SUB}", "b-2")
        configs.append(text.encode())
    sys.path.insert(0, str(REPO / "tests" / "bench"))
    import bench

    configs.append(json.dumps({"jwtRules": [{"issuer": iss, "jwks": json.dumps(realm_jwks),
                                             "audiences": ["my-backend-client"]}],
                               "policies": [{k: v for k, v in bench.REFERENCE_POLICY.items() if k != "namespace"}],
                               "tokenCacheSize": 10}).encode())
    print(f"plugin_config: {write_seeds('plugin_config', configs)} seeds")

    for f in sorted(glob.glob(str(REPO / "tests/converter/*/input*"))):
        yamls.append(Path(f).read_bytes())
    print(f"convert_yaml: {write_seeds('convert_yaml', yamls)} seeds")

    msgs = []
    token = realm_tokens[0]
    signing_input, _, sig = token.rpartition(".")
    for k in realm.keys:
        if k.use == "sig":
            msgs.append(field(1, b"sha256") + field(2, k.spki_der) + field(3, idp.b64u_decode(sig))
                        + field(4, signing_input.encode()))
    msgs += [b"\x08\x01", b"\x12\x08mismatch", b""]
    print(f"host_protocol: {write_seeds('host_protocol', msgs)} seeds")

    # token_response: byte 0 picks the status (0: none, 1-3: 200, 4: 400, 5: 401, 7: 500, 8: 503),
    # byte 1 the call (0: token, 1: discovery).
    access = realm_tokens[-1]  # the service-account token
    ok = {"access_token": access, "expires_in": 300, "refresh_expires_in": 0, "token_type": "Bearer",
          "not-before-policy": 0, "scope": "profile email"}
    answers = [
        (1, 0, ok), (1, 0, {k: v for k, v in ok.items() if k != "expires_in"}),
        (1, 0, dict(ok, expires_in="300")), (1, 0, dict(ok, token_type="DPoP")),
        (5, 0, {"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"}),
        (4, 0, {"error": "invalid_scope", "error_description": "Invalid scopes: openid backend"}),
        (7, 0, {"error": "unknown_error"}),
        (1, 1, idp.discovery(realm)), (1, 1, {"issuer": realm.issuer}),
    ]
    seeds = [bytes([st, ph]) + json.dumps(body).encode() for st, ph, body in answers]
    seeds += [bytes([8, 0]) + b"no healthy upstream", bytes([0, 0]), bytes([8, 1]) + b"upstream request timeout"]
    print(f"token_response: {write_seeds('token_response', seeds)} seeds")

    # sso_session: byte 0 picks the mode (0: raw Cookie header lines, 1: seal a session, 2: seal a
    # pending login; 1 and 2 read 64 control bytes before the payload). The key, name and state
    # are the target's constants.
    from test_sso_envoy import _hchacha20
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    key, name = b"meshgate-fuzz-cookie-key-0000001", "meshgate_session"
    state = "c3RhdGUtb2YtdGhlLWZ1enotc2VlZC1sb2dpbi0wMDA"

    def seal(purpose: bytes, plain: bytes, nonce: bytes) -> str:
        aad = b"meshgate\0\x01" + purpose
        ct = ChaCha20Poly1305(_hchacha20(key, nonce[:16])).encrypt(b"\0" * 4 + nonce[16:], plain, aad)
        return base64.urlsafe_b64encode(b"\x01" + nonce + ct).rstrip(b"=").decode()

    lp8 = lambda b: bytes([len(b)]) + b  # noqa: E731
    lp16 = lambda b: len(b).to_bytes(2, "big") + b  # noqa: E731

    def session(access: str, refresh: str = "", id_token: str = "") -> bytes:
        t = 1_800_000_000
        return (b"S" + b"".join(v.to_bytes(8, "big") for v in (t, t, t + 300, t + 1800))
                + lp16(access.encode()) + lp16(refresh.encode()) + lp16(id_token.encode()))

    login = (b"L" + (1_800_000_000).to_bytes(8, "big") + lp8(state.encode())
             + lp8(b"dmVyaWZpZXItb2YtdGhlLWZ1enotc2VlZC1sb2dpbi0wMDAwMDAwMDA") + lp8(b"bm9uY2UtMDAw")
             + lp16(b"/app/page?x=1"))
    small = session(realm_tokens[0])
    big = session(realm_tokens[1], realm_tokens[2], realm_tokens[3])  # over one cookie: chunked
    small_v = seal(b"session\0" + name.encode(), small, bytes(range(24)))
    big_v = seal(b"session\0" + name.encode(), big, bytes(range(1, 25)))
    login_v = seal(b"login\0" + state.encode(), login, bytes(range(2, 26)))
    room = 3925  # MAX_SET_COOKIE_BYTES minus the chunk name and attributes
    chunks = [big_v[i:i + room] for i in range(0, len(big_v), room)]
    assert len(chunks) >= 2, len(big_v)
    chunked = "; ".join(f"{name}.{i}={c}" for i, c in enumerate(chunks))
    raw = [
        f"{name}={small_v}",
        f"theme=dark; {chunked}; lang=en",
        "\n".join(f"{name}.{i}={c}" for i, c in reversed(list(enumerate(chunks)))),
        f"{name}_login_{state[:16]}={login_v}; {name}={small_v}",
        f"{name}={small_v[:-5]}AAAAA",
        f"{name}=; {name}.0=; other={name}",
    ]
    control = bytes(range(64))
    seeds = [b"\0" + r.encode() for r in raw]
    seeds += [b"\1" + control + small, b"\1" + control + big, b"\1" + bytes(64) + b"",
              b"\2" + control + login, b"\2" + bytes(64)]
    print(f"sso_session: {write_seeds('sso_session', seeds)} seeds ({len(chunks)} chunks)")

    # sso_token_response: byte 0 picks the status as in token_response.
    user = realm_tokens[0]
    exchange = {"access_token": user, "expires_in": 30, "refresh_expires_in": 1800, "refresh_token": realm_tokens[1],
                "token_type": "Bearer", "id_token": realm_tokens[2], "not-before-policy": 0,
                "session_state": "5f2c0e55-1c9e-4d0f-9a1c-0d4b1f3f2d11", "scope": "openid email profile"}
    answers = [
        (1, exchange), (1, dict(exchange, refresh_expires_in=0)), (1, {"access_token": "opaque"}),
        (1, dict(exchange, expires_in="30")), (1, dict(exchange, token_type="DPoP")),
        (4, {"error": "invalid_grant", "error_description": "Code not valid"}),
        (4, {"error": "invalid_grant", "error_description": "Token is not active"}),
        (5, {"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"}),
        (7, {"error": "unknown_error"}),
    ]
    seeds = [bytes([st]) + json.dumps(body).encode() for st, body in answers]
    seeds += [bytes([8]) + b"no healthy upstream", bytes([0]), bytes([1]) + b"<html>"]
    print(f"sso_token_response: {write_seeds('sso_token_response', seeds)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
