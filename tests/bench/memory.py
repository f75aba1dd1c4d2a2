#!/usr/bin/env python3
"""Memory under a stream of distinct valid tokens (`make memtest`): does the Wasm VM stay bounded?

One Envoy 1.40 worker (--concurrency 1) with meshgate (inline ES256 JWKS, the reference policy, host
signature verification), a direct_response route, and N distinct valid tokens (default 1,000,000), each sent
once by wrk (1 thread, 32 connections, tests/bench/pool.lua) in rounds of a few seconds (the pool has a
margin, so it never wraps around: every request carries a token never sent before). After every round
the script samples every Wasm VM's linear memory (its size and resident part, from /proc/PID/smaps: Envoy
1.40 has no Wasm memory statistic), Envoy's RSS and tcmalloc's view, and checks that every response was 2xx
and that meshgate counted every request as allowed and as a token-cache miss.

Bounded means: from the moment the cache is full (tokenCacheSize entries, or 8 MiB of token text) the
linear memory of every VM stops growing. The assertion: no VM's linear memory grows by more than
--linear-slack-kb (default 1024: 16 Wasm pages) between the sample taken after --settle tokens and the
last one, and Envoy's RSS by no more than --rss-slack-mb (default 16). Exit status 1 otherwise, or on any
non-2xx response or counter mismatch. A JSON report goes to --out (default dist/memtest.json).

Tokens are Keycloak-shaped ES256 tokens (~0.9 kB), minted once into target/memtest/ with a process pool
(cryptography) and reused while they have more than a day left.

Usage: memory.py [--tokens 1000000] [--cache-size 1024] [--round 20] [--settle 100000] [--wasm PATH]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
import harness  # noqa: E402
import render  # noqa: E402

KID = "memtest-es256"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _mint_chunk(args: tuple[bytes, int, int, int, str]) -> int:
    """Signs tokens start..end (Keycloak-shaped claims, jti = the index) into `path`."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    pem, start, end, now, path = args
    key = serialization.load_pem_private_key(pem, password=None)
    header = bench.b64u(json.dumps({"alg": "ES256", "typ": "JWT", "kid": KID}, separators=(",", ":")).encode())
    with open(path, "w") as out:
        for i in range(start, end):
            claims = bench._claims(i, now)
            claims["jti"] = str(uuid.UUID(int=i + 1))
            signing_input = header + "." + bench.b64u(json.dumps(claims, separators=(",", ":")).encode())
            r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
            out.write(signing_input + "." + bench.b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big")) + "\n")
    return end - start


def material(cache_dir: Path, count: int) -> tuple[str, Path]:
    """(JWKS JSON, token file) for `count` distinct tokens, minted or reused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path, tokens = cache_dir / "material.json", cache_dir / "tokens.txt"
    now = int(time.time())
    if meta_path.exists() and tokens.exists():
        meta = json.loads(meta_path.read_text())
        if meta["exp"] - now > 24 * 3600 and meta["count"] >= count:
            log(f"reusing {meta['count']} tokens ({tokens})")
            if meta["count"] > count:
                head = cache_dir / f"tokens-{count}.txt"
                with open(tokens) as src, open(head, "w") as dst:
                    for _, line in zip(range(count), src):
                        dst.write(line)
                tokens = head
            return meta["jwks"], tokens
    log(f"minting {count} ES256 tokens ...")
    t0 = time.monotonic()
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    nums = key.public_key().public_numbers()
    jwks = json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID,
                                 "x": bench.b64u(nums.x.to_bytes(32, "big")),
                                 "y": bench.b64u(nums.y.to_bytes(32, "big"))}]})
    workers = max(1, os.cpu_count() or 1)
    step = -(-count // workers)
    parts = [(pem, k, min(count, k + step), now, str(cache_dir / f"part-{k}.txt")) for k in range(0, count, step)]
    with cf.ProcessPoolExecutor(workers) as ex:
        assert sum(ex.map(_mint_chunk, parts)) == count
    with open(tokens, "w") as out:
        for p in parts:
            with open(p[4]) as src:
                shutil.copyfileobj(src, out)
            os.unlink(p[4])
    meta_path.write_text(json.dumps({"exp": now + 7 * 24 * 3600, "count": count, "jwks": jwks}))
    log(f"minted in {time.monotonic() - t0:.0f} s")
    return jwks, tokens


def bootstrap(jwks: str, wasm: str, cache_size: int) -> dict:
    """The benchmark's meshgate configuration (reference policy, direct_response) with this JWKS."""
    policy = {k: v for k, v in bench.REFERENCE_POLICY.items() if k != "namespace"}
    config = {"jwtRules": [{"issuer": bench.ISSUER, "jwks": jwks, "audiences": [bench.AUDIENCE]}],
              "policies": [policy], "tokenCacheSize": cache_size}
    plugin = {"metadata": {"name": "meshgate", "namespace": "demo"},
              "spec": {"pluginName": "meshgate", "phase": "AUTHN", "failStrategy": "FAIL_CLOSE",
                       "pluginConfig": config}}
    filters = render.assemble_http_filters([plugin], wasm)
    return render.render_bootstrap(filters, 0, 0, 9, hcm_overrides={"route_config": bench.DIRECT_RESPONSE_ROUTES})


def sample(env: harness.EnvoyProcess, sent: int) -> dict:
    mem = bench.memory_report(env)
    c = bench.filter_counters("meshgate", env)
    return {"tokens_sent": sent, "t": round(time.monotonic(), 1), "rss_kB": mem.get("VmRSS_kB"),
            "linear_kB": [x["size_kB"] for x in mem["wasm_linear_memory"]],
            "linear_rss_kB": [x["rss_kB"] for x in mem["wasm_linear_memory"]],
            "tcmalloc_allocated": mem.get("tcmalloc_allocated"), "counters": c}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--cache-size", type=int, default=1024, help="meshgate tokenCacheSize")
    ap.add_argument("--round", type=float, default=20.0, help="seconds of load between samples")
    ap.add_argument("--settle", type=int, default=100_000, help="tokens after which memory must stay flat")
    ap.add_argument("--linear-slack-kb", type=int, default=1024)
    ap.add_argument("--rss-slack-mb", type=int, default=16)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--wasm", default=str(harness.meshgate_wasm_path()))
    ap.add_argument("--out", default=str(REPO / "dist" / "memtest.json"))
    ap.add_argument("--cache-dir", default=str(REPO / "target" / "memtest"))
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        log("wrk not found (Debian: apt-get install -y wrk; `make memtest` installs it)")
        return 2
    wasm = Path(args.wasm).resolve()
    if not wasm.is_file():
        log(f"{wasm} missing: run `make build`")
        return 2

    # A margin over --tokens: the rounds skip the few tokens in flight when wrk stops, and the pool must
    # never wrap around, so that every request carries a token never sent before.
    pool = args.tokens + max(20_000, args.tokens // 20)
    jwks, token_file = material(Path(args.cache_dir), pool)
    cfg = bootstrap(jwks, str(wasm), args.cache_size)

    work = Path(args.cache_dir) / f"run-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    env = harness.start_envoy(cfg, log_level="warning", component_log_level=None, workdir=work, timeout=120)
    rc = 0
    samples: list[dict] = []
    problems: list[str] = []
    try:
        first = Path(token_file).open().readline().strip()
        r = env.get(bench.PATH, token=first)
        if r.status_code != 200:
            raise SystemExit(f"a valid token got {r.status_code} {r.text!r}")
        samples.append(sample(env, 0))
        sent, offset, t0 = 0, 1, time.monotonic()
        while sent < args.tokens:
            before = bench.filter_counters("meshgate", env)
            # The last round is cut to what is left, at the last rate (wrk runs whole seconds).
            rate = samples[-1].get("rps") or 0
            duration = min(args.round, (args.tokens - sent) / rate) if rate else args.round
            res = bench.run_wrk(env, Path(token_file), offset, max(1.0, duration), args.connections, None)
            after = bench.filter_counters("meshgate", env)
            # pool.lua sends token offset+1, offset+2, ... in order; a connection that is still writing
            # when wrk stops may have sent one more than it counted.
            offset += res["requests"] + 2 * args.connections
            sent += res["requests"]
            if offset > pool:
                problems.append(f"the token pool wrapped around after {sent} requests")
            d = {k: after[k] - before.get(k, 0) for k in after}
            if res["err_status"] or res["err_connect"] or res["err_read"] or res["err_timeout"]:
                problems.append(f"round at {sent}: wrk errors {res}")
            if d["allowed"] < res["requests"]:
                problems.append(f"round at {sent}: allowed {d['allowed']} < {res['requests']} requests")
            if d["token_cache.hit"]:
                problems.append(f"round at {sent}: {d['token_cache.hit']} cache hits on distinct tokens")
            s = sample(env, sent)
            s["rps"] = round(res["rps"])
            samples.append(s)
            log(f"  {sent:>9} tokens  {res['rps']:7.0f} req/s  Wasm linear "
                f"{'+'.join(str(x // 1024) for x in s['linear_kB'])} MiB (resident "
                f"{'+'.join(str(x // 1024) for x in s['linear_rss_kB'])} MiB)  Envoy RSS {s['rss_kB'] // 1024} MiB")
        elapsed = time.monotonic() - t0
    finally:
        env.stop()
        shutil.rmtree(work, ignore_errors=True)

    settled = next((s for s in samples if s["tokens_sent"] >= args.settle), samples[-1])
    last = samples[-1]
    growth = [b - a for a, b in zip(settled["linear_kB"], last["linear_kB"])]
    rss_growth = (last["rss_kB"] - settled["rss_kB"]) / 1024
    if len(settled["linear_kB"]) != len(last["linear_kB"]):
        problems.append("the number of Wasm VMs changed")
    if any(g > args.linear_slack_kb for g in growth):
        problems.append(f"Wasm linear memory grew {growth} kB after {settled['tokens_sent']} tokens")
    if rss_growth > args.rss_slack_mb:
        problems.append(f"Envoy RSS grew {rss_growth:.1f} MiB after {settled['tokens_sent']} tokens")
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "distinct_tokens": last["tokens_sent"],
        "seconds": round(elapsed),
        "cache_size": args.cache_size, "token_bytes": len(first), "wasm": str(wasm),
        "settled_at": settled["tokens_sent"], "linear_kB_settled": settled["linear_kB"],
        "linear_kB_end": last["linear_kB"], "linear_growth_kB": growth,
        "rss_kB_start": samples[0]["rss_kB"], "rss_kB_settled": settled["rss_kB"], "rss_kB_end": last["rss_kB"],
        "cpus": os.cpu_count(), "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
        "samples": samples, "problems": problems, "valid": not problems,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"{last['tokens_sent']} distinct valid tokens in {elapsed:.0f} s through one worker, one request each "
          f"(tokenCacheSize {args.cache_size}, {len(first)}-byte tokens)")
    print(f"Wasm linear memory per VM: {settled['linear_kB']} kB after {settled['tokens_sent']} tokens, "
          f"{last['linear_kB']} kB at the end (growth {growth} kB)")
    print(f"Envoy RSS: {samples[0]['rss_kB'] // 1024} MiB at start, {settled['rss_kB'] // 1024} MiB after "
          f"{settled['tokens_sent']} tokens, {last['rss_kB'] // 1024} MiB at the end")
    for p in problems:
        print(f"PROBLEM: {p}")
        rc = 1
    print(f"report: {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
