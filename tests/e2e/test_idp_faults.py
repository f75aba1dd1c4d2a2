"""Issue "hardening": Keycloak misbehaving, in a real Envoy. Every fault gives bounded, clear 401s, no crash
(Envoy alive, the Wasm VM never reloaded), bounded memory, and recovery by itself when the IdP heals.
Faults are made on demand by the dev IdP (tests/e2e/idp.py `jwks_mode`)."""

from __future__ import annotations

import time

import pytest

import harness

AUD = "my-backend-client"
JWKS_FAILED = "Jwks remote fetch is failed"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"


def rule(idp, **extra):
    r = {"issuer": idp.issuer(), "audiences": [AUD], "jwksUri": idp.jwks_uri(), "timeout": "2s"}
    r.update(extra)
    return r


def rss_kb(env) -> int:
    for line in open(f"/proc/{env.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def no_vm_reload(env) -> None:
    reloads = {k: v for k, v in env.stats("wasm.").items() if "reload" in k and v}
    assert reloads == {}, reloads


# mode, delay, what the log must say about the failed fetch
FAULTS = [
    ("error500", None, "HTTP status 500"),
    ("notfound", None, "HTTP status 404"),
    ("garbage", None, "JWKS is not JSON"),
    ("empty", None, "JWKS has no usable signing key"),
    ("huge", None, "JWKS is larger than 262144 bytes"),
    ("reset", None, "HTTP status 503"),  # Envoy answers a reset upstream with its own 503
    ("slow", 8, "HTTP status 504"),  # Envoy answers a call past its timeout with its own 504
]


@pytest.mark.parametrize("mode,delay,logged", FAULTS, ids=[f[0] for f in FAULTS])
def test_jwks_fault_fails_closed_with_a_reason_and_recovers(start_meshgate, idp_clean, mode, delay, logged):
    idp_clean.jwks_mode(mode, delay=delay)
    env = start_meshgate({"jwtRules": [rule(idp_clean)]}, log_level="info")
    tok = idp_clean.mint()
    started = time.monotonic()
    resp = env.get("/data", token=tok, timeout=30)
    elapsed = time.monotonic() - started
    assert (resp.status_code, resp.text) == (401, JWKS_FAILED)
    assert resp.headers["www-authenticate"].endswith('error="invalid_token"')
    assert elapsed < 4, f"bounded by the 2 s timeout ({elapsed:.1f} s)"
    harness.wait_until(lambda: logged in env.log(), timeout=10, desc=f"log line {logged!r}")
    assert "fetch for issuer " + idp_clean.issuer() in env.log()
    assert tok not in env.log()
    stats = env.stats("wasmcustom.meshgate")
    assert stats["wasmcustom.meshgate.jwks_fetch.failed"] >= 1
    assert stats["wasmcustom.meshgate.jwks_fetch.ok"] == 0
    assert stats["wasmcustom.meshgate.denied.jwks_unavailable"] >= 1
    # The IdP heals: the next retry (backoff 1 s ... 10 s) fetches the keys, with no restart.
    idp_clean.jwks_mode("normal")
    resp = harness.wait_until(lambda: (r := env.get("/data", token=tok)).status_code == 200 and r,
                              timeout=30, desc="recovery")
    assert resp.json()["path"] == "/data"
    assert env.alive()
    no_vm_reload(env)


def test_thousand_keys_are_bounded(start_meshgate, idp_clean):
    """1,000 keys: the first 64 are used (the rest skipped with a log line), so a token whose key is among
    them verifies and one whose key comes after them is rejected, not waited for."""
    idp_clean.jwks_mode("many_keys")
    env = start_meshgate({"jwtRules": [rule(idp_clean)]}, log_level="debug")
    tok = idp_clean.mint(alg="ES256")
    assert env.get("/data", token=tok).status_code == 200
    harness.wait_until(lambda: "more than 64 keys" in env.log(), timeout=10, desc="skipped-keys log line")
    idp_clean.jwks_mode("many_keys_last")
    env2 = start_meshgate({"jwtRules": [rule(idp_clean)]})
    resp = env2.get("/data", token=tok, timeout=30)
    assert (resp.status_code, resp.text) == (401, NO_KEY)
    assert env.alive() and env2.alive()


def test_repeated_10mb_responses_keep_memory_bounded(start_meshgate, idp_clean):
    idp_clean.jwks_mode("huge")
    env = start_meshgate({"jwtRules": [rule(idp_clean)]})

    def failed() -> int:
        return env.stats("wasmcustom.meshgate").get("wasmcustom.meshgate.jwks_fetch.failed", 0)

    # Both Wasm VMs (main thread and worker) fetch at start, then retry with backoff 1, 2, 4 s.
    harness.wait_until(lambda: failed() >= 2, timeout=15, desc="first failures")
    before = rss_kb(env)
    harness.wait_until(lambda: failed() >= 6, timeout=30, desc="four more 10 MB responses")
    after = rss_kb(env)
    assert after - before < 32 * 1024, f"RSS grew {before} -> {after} kB over four 10 MB responses"
    assert env.alive()
    no_vm_reload(env)


def test_unknown_cluster_is_logged_by_name_and_fails_closed(start_meshgate, idp_clean):
    env = start_meshgate({"jwtRules": [rule(idp_clean, jwksCluster="outbound|80||no-such-service.local")]})
    resp = env.get("/data", token=idp_clean.mint(), timeout=10)
    assert (resp.status_code, resp.text) == (401, JWKS_FAILED)
    harness.wait_until(
        lambda: 'dispatch_http_call to cluster "outbound|80||no-such-service.local" failed' in env.log(),
        timeout=10, desc="log line naming the cluster")
    assert env.alive()
