#!/usr/bin/env python3
"""Soak test (`make soak`): SOAK_SECONDS (default 600) of mixed traffic through one Envoy worker with meshgate,
every response checked, memory sampled.

Set-up: Envoy 1.40 (--concurrency 1, direct_response route), meshgate with two jwtRules — the dev IdP's realm
(JWKS fetched from the IdP, kidRefetchCooldown 1s) and a "lab" issuer whose ES256 key is made here (JWKS
inline) — and one ALLOW policy: GET with a request principal. Traffic, from --connections keep-alive
connections, each request picked at random (fixed seed) from these classes, each with its exact expected
status and body:

  cached        the same valid lab token every time            200 ok
  unique        a pool of --unique valid lab tokens, cycled     200 ok (the pool outgrows the token cache)
  realm         tokens the IdP signed with its current RS256 key 200 ok (valid for the whole run)
  expired       lab tokens expired an hour ago                   401 Jwt is expired
  bad_signature lab tokens with one signature byte flipped       401 Jwt verification fails
  unknown_kid   realm-issuer tokens with a kid nobody published  401 Jwks doesn't have key to match kid or alg ...
  removed_key   realm tokens whose key the IdP stopped publishing 401 Jwks doesn't have key to match kid or alg ...
  missing       no token                                          403 RBAC: access denied
  post          a valid token on POST (the policy allows GET)     403 RBAC: access denied

JWKS rotations: every --rotate-every seconds the IdP makes a new RS256 key the active one (/_admin/rotate);
every second rotation also unpublishes the older RS256 keys. Realm tokens of the new key join the traffic
--grace seconds later (by then meshgate has refetched the JWKS: unknown kids make it refetch at most once per
cooldown); after a rotation that unpublished keys, the tokens of those keys move from `realm` to
`removed_key` at the same moment.

Memory: Envoy's RSS and every Wasm VM's linear memory (from /proc/PID/smaps, see bench.py) every 10 s.
Flat means: between the first sample after --warmup seconds and the last, RSS grows by at most
--rss-slack-mb (default 16) and no VM's linear memory by more than --linear-slack-kb (default 1024).

Exit status 0 only with 0 unexpected responses, 0 transport errors, meshgate's counters matching the
traffic, and flat memory. A JSON report goes to --out (default dist/soak.json).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
import harness  # noqa: E402
import render  # noqa: E402

AUD = harness.AUDIENCE
LAB_ISS = "https://soak-lab.example"
LAB_KID = "soak-lab"
OK = "ok\n"
EXPIRED = "Jwt is expired"
VERIFY_FAILS = "Jwt verification fails"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
RBAC = "RBAC: access denied"
POLICY = {"name": "get-with-jwt", "action": "ALLOW",
          "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}], "to": [{"operation": {"methods": ["GET"]}}]}]}
WEIGHTS = {"cached": 25, "unique": 20, "realm": 15, "expired": 8, "bad_signature": 8, "unknown_kid": 6,
           "removed_key": 5, "missing": 8, "post": 5}
EXPECTED = {"cached": (200, OK), "unique": (200, OK), "realm": (200, OK), "expired": (401, EXPIRED),
            "bad_signature": (401, VERIFY_FAILS), "unknown_kid": (401, NO_KEY), "removed_key": (401, NO_KEY),
            "missing": (403, RBAC), "post": (403, RBAC)}
# The meshgate counter each class must move, one per request.
COUNTERS = {"expired": "denied.expired", "bad_signature": "denied.bad_signature",
            "unknown_kid": "denied.unknown_kid", "removed_key": "denied.unknown_kid",
            "missing": "denied.rbac_no_allow_match", "post": "denied.rbac_no_allow_match"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mint(args: tuple[bytes, str, int, int, int, str | None]) -> list[str]:
    """ES256 tokens start..end for issuer `iss` with exp `exp`; kid None: the lab kid."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    pem, iss, start, end, exp, kid = args
    key = serialization.load_pem_private_key(pem, password=None)
    out = []
    for i in range(start, end):
        header = {"alg": "ES256", "typ": "JWT", "kid": kid.format(i) if kid else LAB_KID}
        claims = {"iss": iss, "sub": f"soak-{i}", "aud": AUD, "exp": exp, "iat": exp - 7200, "jti": f"soak-{i}"}
        signing_input = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        out.append(signing_input + "." + b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big")))
    return out


class Traffic:
    """The token pools, shared between the senders and the rotation thread."""

    def __init__(self, idp: harness.IdPProcess, unique: int, lifetime: int):
        import concurrent.futures as cf

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        nums = key.public_key().public_numbers()
        self.lab_jwks = json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
                                              "kid": LAB_KID, "x": b64u(nums.x.to_bytes(32, "big")),
                                              "y": b64u(nums.y.to_bytes(32, "big"))}]})
        stranger = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        now = int(time.time())
        workers = max(1, os.cpu_count() or 1)
        step = -(-unique // workers)
        jobs = [(pem, LAB_ISS, k, min(unique, k + step), now + 6 * 3600, None) for k in range(0, unique, step)]
        t0 = time.monotonic()
        with cf.ProcessPoolExecutor(workers) as ex:
            self.unique = [t for part in ex.map(_mint, jobs) for t in part]
        log(f"minted {len(self.unique)} lab tokens in {time.monotonic() - t0:.0f} s")
        self.cached = _mint((pem, LAB_ISS, 10**8, 10**8 + 1, now + 6 * 3600, None))[0]
        self.expired = _mint((pem, LAB_ISS, 0, 100, now - 3600, None))
        self.bad_signature = [tamper(t) for t in self.unique[:100]]
        self.unknown_kid = _mint((stranger, idp.issuer(), 0, 100, now + 6 * 3600, "soak-unknown-{}"))
        self.idp = idp
        # Realm tokens outlive the run (Keycloak's default is 300 s): an expired token is refused before
        # its key is looked up, so it would not test a removed key.
        self.lifetime = lifetime
        self.lock = threading.Lock()
        self.realm = self.mint_realm()
        self.removed: list[str] = []

    def mint_realm(self, n: int = 20) -> list[str]:
        return [self.idp.mint(user=random.choice(["alice", "bob"]), exp_in=self.lifetime) for _ in range(n)]

    def rotate(self, drop_old: bool, grace: float) -> None:
        """Rotation: the new key's tokens join after `grace`; with drop_old the old tokens expect 401 then."""
        if drop_old:
            with self.lock:
                old, self.realm = self.realm, []  # no realm tokens while their key may be in transit
        self.idp.rotate(drop_old=drop_old)
        fresh = self.mint_realm()
        time.sleep(grace)
        with self.lock:
            if drop_old:
                self.removed = (self.removed + old)[-200:]
                self.realm = fresh
            else:
                self.realm = (self.realm + fresh)[-200:]

    def pick(self, rng: random.Random, cls: str, n: int) -> tuple[str, str | None] | None:
        """(method, token) for one request of class `cls`, or None when its pool is empty now."""
        with self.lock:
            pools = {"cached": [self.cached], "unique": self.unique, "realm": self.realm, "expired": self.expired,
                     "bad_signature": self.bad_signature, "unknown_kid": self.unknown_kid,
                     "removed_key": self.removed}
            if cls == "missing":
                return "GET", None
            if cls == "post":
                return "POST", self.cached
            pool = pools[cls]
            if not pool:
                return None
            return "GET", pool[n % len(pool)] if cls == "unique" else rng.choice(pool)


def tamper(token: str) -> str:
    head, sig = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 1
    return head + "." + b64u(bytes(raw))


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str,
               token: str | None) -> tuple[int, str]:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    length = "Content-Length: 0\r\n" if method == "POST" else ""
    writer.write(f"{method} /data HTTP/1.1\r\nHost: backend\r\n{auth}{length}\r\n".encode())
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    clen = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            clen = int(value)
    body = (await reader.readexactly(clen)).decode("latin-1")
    return status, body


async def sender(port: int, traffic: Traffic, seed: int, deadline: float, counts: Counter, bad: list,
                 classes: list[str], weights: list[int]) -> None:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = seed * 1_000_003
    try:
        while time.monotonic() < deadline:
            cls = rng.choices(classes, weights)[0]
            req = traffic.pick(rng, cls, n)
            n += 1
            if req is None:
                continue
            try:
                got = await asyncio.wait_for(http(reader, writer, *req), timeout=10)
            except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError,
                    IndexError) as e:
                counts["transport_errors"] += 1
                bad.append({"class": cls, "error": repr(e)})
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            counts[cls] += 1
            if got != EXPECTED[cls]:
                counts["unexpected"] += 1
                counts[f"unexpected.{cls}"] += 1
                if len(bad) < 50:
                    bad.append({"class": cls, "want": EXPECTED[cls], "got": got, "t": round(time.monotonic(), 1)})
    finally:
        writer.close()


def memory(env: harness.EnvoyProcess) -> dict:
    m = bench.memory_report(env)
    return {"t": round(time.monotonic(), 1), "rss_kB": m.get("VmRSS_kB"),
            "linear_kB": [x["size_kB"] for x in m["wasm_linear_memory"]],
            "linear_rss_kB": [x["rss_kB"] for x in m["wasm_linear_memory"]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--unique", type=int, default=50_000, help="distinct valid lab tokens, cycled")
    ap.add_argument("--rotate-every", type=float, default=60)
    ap.add_argument("--grace", type=float, default=4)
    ap.add_argument("--warmup", type=float, default=30, help="seconds before the start memory sample")
    ap.add_argument("--rss-slack-mb", type=float, default=16)
    ap.add_argument("--linear-slack-kb", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--wasm", default=str(harness.meshgate_wasm_path()))
    ap.add_argument("--out", default=str(REPO / "dist" / "soak.json"))
    args = ap.parse_args()
    wasm = Path(args.wasm).resolve()
    if not wasm.is_file():
        log(f"{wasm} missing: run `make build`")
        return 2
    random.seed(args.seed)
    work = REPO / "target" / "soak" / f"run-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    idp = harness.start_idp(workdir=work / "idp")
    env = None
    stop = threading.Event()
    try:
        traffic = Traffic(idp, args.unique, int(args.seconds) + 3600)
        realm_rule = {"issuer": idp.issuer(), "jwksUri": idp.jwks_uri(), "audiences": [AUD],
                      "kidRefetchCooldown": "1s"}
        config = {"jwtRules": [realm_rule, {"issuer": LAB_ISS, "jwks": traffic.lab_jwks, "audiences": [AUD]}],
                  "policies": [POLICY]}
        plugin = {"metadata": {"name": "meshgate", "namespace": "demo"},
                  "spec": {"pluginName": "meshgate", "phase": "AUTHN", "failStrategy": "FAIL_CLOSE",
                           "pluginConfig": config}}
        filters = render.assemble_http_filters([plugin], str(wasm))
        cfg = render.render_bootstrap(filters, 0, 0, 9, idp.clusters(),
                                      hcm_overrides={"route_config": bench.DIRECT_RESPONSE_ROUTES})
        env = harness.start_envoy(cfg, log_level="warning", component_log_level=None, workdir=work, timeout=120)
        harness.wait_until(lambda: env.get("/data", token=traffic.realm[0]).status_code == 200, timeout=20,
                           desc="realm keys fetched")

        samples = [memory(env)]
        rotations: list[dict] = []

        def rotator() -> None:
            k = 0
            while not stop.wait(args.rotate_every):
                k += 1
                drop = k % 2 == 0
                t = time.monotonic()
                traffic.rotate(drop_old=drop, grace=args.grace)
                rotations.append({"t": round(t, 1), "drop_old": drop})
                log(f"  rotation {k}{' (older keys unpublished)' if drop else ''}")

        def sampler() -> None:
            while not stop.wait(10):
                samples.append(memory(env))

        threads = [threading.Thread(target=rotator, daemon=True), threading.Thread(target=sampler, daemon=True)]
        for th in threads:
            th.start()
        counts: Counter = Counter()
        bad: list = []
        start = time.monotonic()
        deadline = start + args.seconds
        classes, weights = list(WEIGHTS), list(WEIGHTS.values())
        before = env.stats("wasmcustom.meshgate.")

        async def run() -> None:
            await asyncio.gather(*(sender(env.listen_port, traffic, args.seed * 1000 + c, deadline, counts, bad,
                                          classes, weights) for c in range(args.connections)))

        log(f"soak: {args.seconds:.0f} s, {args.connections} connections")
        asyncio.run(run())
        elapsed = time.monotonic() - start
        stop.set()
        for th in threads:
            th.join(timeout=args.rotate_every + args.grace + 30)
        samples.append(memory(env))
        after = env.stats("wasmcustom.meshgate.")
    finally:
        stop.set()
        if env is not None:
            env.stop()
        idp.stop()

    delta = {k.removeprefix("wasmcustom.meshgate."): after.get(k, 0) - before.get(k, 0) for k in after}
    problems = []
    if counts["unexpected"]:
        by_class = {c: counts[f"unexpected.{c}"] for c in WEIGHTS if counts[f"unexpected.{c}"]}
        problems.append(f"{counts['unexpected']} unexpected responses {by_class}")
    if counts["transport_errors"]:
        problems.append(f"{counts['transport_errors']} transport errors")
    ok = counts["cached"] + counts["unique"] + counts["realm"]
    if delta.get("allowed", 0) != ok:
        problems.append(f"meshgate allowed {delta.get('allowed', 0)}, 200s sent {ok}")
    for counter in sorted(set(COUNTERS.values())):
        sent = sum(counts[c] for c, name in COUNTERS.items() if name == counter)
        if delta.get(counter, 0) != sent:
            problems.append(f"meshgate {counter} {delta.get(counter, 0)}, requests of its classes {sent}")
    start_sample = next((s for s in samples if s["t"] >= samples[0]["t"] + args.warmup), samples[-1])
    end_sample = samples[-1]
    rss_growth = (end_sample["rss_kB"] - start_sample["rss_kB"]) / 1024
    lin_growth = [b - a for a, b in zip(start_sample["linear_kB"], end_sample["linear_kB"])]
    if rss_growth > args.rss_slack_mb:
        problems.append(f"Envoy RSS grew {rss_growth:.1f} MiB")
    if any(g > args.linear_slack_kb for g in lin_growth):
        problems.append(f"Wasm linear memory grew {lin_growth} kB")
    total = sum(counts[c] for c in WEIGHTS)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(elapsed), "requests": total,
        "rps": round(total / elapsed), "counts": dict(counts), "unexpected": counts["unexpected"],
        "examples": bad, "rotations": rotations, "meshgate_counters": delta,
        "rss_kB_start": start_sample["rss_kB"], "rss_kB_end": end_sample["rss_kB"],
        "linear_kB_start": start_sample["linear_kB"], "linear_kB_end": end_sample["linear_kB"],
        "samples": samples, "cpus": os.cpu_count(), "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
        "problems": problems, "valid": not problems,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"{total} requests in {elapsed:.0f} s ({total / elapsed:.0f}/s), {len(rotations)} JWKS rotations, "
          f"{counts['unexpected']} unexpected, {counts['transport_errors']} transport errors")
    print("  " + ", ".join(f"{c} {counts[c]}" for c in WEIGHTS))
    print(f"Envoy RSS {start_sample['rss_kB'] / 1024:.1f} MiB after {args.warmup:.0f} s, "
          f"{end_sample['rss_kB'] / 1024:.1f} MiB at the end ({rss_growth:+.1f} MiB); Wasm linear memory "
          f"{start_sample['linear_kB']} -> {end_sample['linear_kB']} kB")
    for p in problems:
        print(f"PROBLEM: {p}")
    for b in bad[:10]:
        print(f"  e.g. {b}")
    print(f"report: {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
